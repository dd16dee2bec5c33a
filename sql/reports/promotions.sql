-- title: Promotions
-- description: Per promotion (its id, and its latest name in the period), over non-bot events of
--   the period (by their UTC day): views (promotion_viewed events), clicks (promotion_clicked
--   events), the click-through rate (clicks / views), the orders completed in a session after a
--   click on the promotion in it, on the click's UTC day or the next (distinct orders; the click
--   is in the period, the order may complete after it), and their revenue (reporting currency).
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- The days' figures come from rollup_promotions (sql/batch/rollup_promotions.sql, kept by
-- compaction), whose day's clicks are followed into the orders of that day and the next.
WITH days AS (
    SELECT * FROM rollup_promotions WHERE event_date BETWEEN $from AND $to
),
promos AS (
    SELECT promotion_id,
           last_value(promotion_name ORDER BY last_seen) AS promotion_name,
           sum(views)                                    AS views,
           sum(clicks)                                   AS clicks
    FROM days
    WHERE order_id IS NULL
    GROUP BY promotion_id
),
bought AS (
    SELECT DISTINCT promotion_id, order_id, revenue FROM days WHERE order_id IS NOT NULL
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
