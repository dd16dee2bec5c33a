-- title: RFM segments
-- description: Buyers by recency, frequency and monetary value, as of `to`: over the orders placed
--   between `from` and `to` (the `orders` table, by the UTC day of `placed_at`) except those whose
--   current status is cancelled or payment_failed, per buyer (the order's user, else the user its anonymous
--   id is linked to now, else its anonymous id): recency (days from the last order's day to `to`),
--   frequency (orders) and monetary value (revenue, reporting currency). Segments, first match
--   wins: `champions` recency ≤ 30 and frequency ≥ 3; `loyal` frequency ≥ 3; `new` one order,
--   recency ≤ 30; `promising` recency ≤ 30; `at_risk` recency > 90 and frequency ≥ 2;
--   `hibernating` the rest. Per segment: buyers, orders, revenue, and the buyers' average
--   recency, frequency and monetary value.
-- role: marketing
-- param: from date = today-364 : First day orders were placed (UTC), inclusive.
-- param: to date = today : The day the figures are as of (UTC), inclusive.
WITH o AS (
    SELECT coalesce(o.user_id, i.user_id, o.anonymous_id) AS buyer, o.order_date,
           coalesce(o.revenue_reporting, 0) AS revenue
    FROM orders o
    LEFT JOIN identities i ON i.anonymous_id = o.anonymous_id AND i.is_current
    WHERE o.order_date BETWEEN $from AND $to
      AND o.status NOT IN ('cancelled', 'payment_failed')
),
buyers AS (
    SELECT buyer,
           CAST(date_part('epoch', CAST($to AS TIMESTAMP)) - date_part('epoch', CAST(max(order_date) AS TIMESTAMP)) AS BIGINT) / 86400 AS recency,
           count(*) AS frequency,
           sum(revenue) AS monetary
    FROM o
    GROUP BY buyer
),
segmented AS (
    SELECT *,
           CASE
               WHEN recency <= 30 AND frequency >= 3 THEN 'champions'
               WHEN frequency >= 3 THEN 'loyal'
               WHEN frequency = 1 AND recency <= 30 THEN 'new'
               WHEN recency <= 30 THEN 'promising'
               WHEN recency > 90 AND frequency >= 2 THEN 'at_risk'
               ELSE 'hibernating'
           END AS segment
    FROM buyers
)
SELECT
    segment,
    count(*)                          AS buyers,
    sum(frequency)                    AS orders,
    sum(monetary)                     AS revenue,
    avg(CAST(recency AS DOUBLE))      AS average_recency_days,
    avg(CAST(frequency AS DOUBLE))    AS average_frequency,
    avg(CAST(monetary AS DOUBLE))     AS average_monetary
FROM segmented
GROUP BY segment
ORDER BY revenue DESC, segment
