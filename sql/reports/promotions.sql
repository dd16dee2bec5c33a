-- title: Promotions
-- description: Per promotion (its id, and its latest name in the period), over non-bot events of
--   the period (by their UTC day): views (promotion_viewed events), clicks (promotion_clicked
--   events), the click-through rate (clicks / views), the orders completed in a session after a
--   click on the promotion in it (distinct orders; the click is in the period, the order may
--   complete after it), and their revenue (reporting currency).
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
WITH e AS (
    SELECT session_id, event_name, event_time, event_date, promotion_id, promotion_name, order_id, revenue_reporting
    FROM events
    WHERE NOT is_bot
      AND event_date BETWEEN $from AND CAST($to AS DATE) + INTERVAL '1 day'
      AND event_name IN ('promotion_viewed', 'promotion_clicked', 'order_completed')
),
promos AS (
    SELECT promotion_id,
           last_value(promotion_name ORDER BY event_time) AS promotion_name,
           count(*) FILTER (WHERE event_name = 'promotion_viewed')  AS views,
           count(*) FILTER (WHERE event_name = 'promotion_clicked') AS clicks
    FROM e
    WHERE promotion_id IS NOT NULL AND event_date <= $to
    GROUP BY promotion_id
),
bought AS (
    SELECT DISTINCT c.promotion_id, o.order_id, coalesce(o.revenue_reporting, 0) AS revenue
    FROM e c
    JOIN e o ON o.session_id = c.session_id AND o.event_name = 'order_completed' AND o.event_time > c.event_time
    WHERE c.event_name = 'promotion_clicked' AND c.event_date <= $to
)
SELECT
    p.promotion_id,
    p.promotion_name,
    p.views,
    p.clicks,
    CAST(p.clicks AS DOUBLE) / nullif(p.views, 0)        AS click_rate,
    count(b.order_id)                                    AS orders,
    coalesce(sum(b.revenue), 0)                          AS revenue
FROM promos p
LEFT JOIN bought b ON b.promotion_id = p.promotion_id
GROUP BY p.promotion_id, p.promotion_name, p.views, p.clicks
ORDER BY p.views DESC, p.promotion_id
