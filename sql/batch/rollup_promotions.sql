-- rollup_promotions: per UTC day and promotion, what the `promotions` report sums over a period
-- (sql/reports/promotions.sql), kept by compaction (shoplake_batch::rollup). An order credited to
-- a click can complete on the next day: a day's rows are computed from the events of that day and
-- the next, and a round's events change the rows of their own days and of the days before them.
--
-- Non-bot events only. Per day and promotion, a row without order_id: its latest name of the day
-- (of its promotion_viewed, promotion_clicked or order_completed events carrying its id, with that
-- event's time as last_seen), promotion_viewed events (views) and promotion_clicked events
-- (clicks). Per day, promotion and order, a row with order_id: an order completed in a session
-- after one of the day's clicks on the promotion in it, on that day or the next, with its revenue
-- in the reporting currency (0 when missing); one row per distinct revenue.
WITH e AS (
    SELECT session_id, event_name, event_time, event_date, promotion_id, promotion_name, order_id, revenue_reporting
    FROM events
    WHERE NOT is_bot
      AND event_name IN ('promotion_viewed', 'promotion_clicked', 'order_completed')
)
SELECT event_date, promotion_id, CAST(NULL AS VARCHAR) AS order_id,
       last_value(promotion_name ORDER BY event_time)           AS promotion_name,
       max(event_time)                                          AS last_seen,
       count(*) FILTER (WHERE event_name = 'promotion_viewed')  AS views,
       count(*) FILTER (WHERE event_name = 'promotion_clicked') AS clicks,
       CAST(NULL AS DECIMAL(18, 2)) AS revenue
FROM e
WHERE promotion_id IS NOT NULL
GROUP BY event_date, promotion_id
UNION ALL
SELECT DISTINCT c.event_date, c.promotion_id, o.order_id,
       CAST(NULL AS VARCHAR), CAST(NULL AS TIMESTAMP), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       coalesce(o.revenue_reporting, 0) AS revenue
FROM e c
JOIN e o
  ON o.session_id = c.session_id AND o.event_name = 'order_completed' AND o.event_time > c.event_time
 AND o.event_date <= c.event_date + INTERVAL '1 day'
WHERE c.event_name = 'promotion_clicked' AND c.promotion_id IS NOT NULL AND o.order_id IS NOT NULL
