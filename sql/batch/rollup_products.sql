-- rollup_products: per UTC day and product, what the `products` report sums over a period
-- (sql/reports/products.sql), kept by compaction for the days each round's events fall on
-- (shoplake_batch::rollup): the day's rows are computed again from all of that day's events and
-- replace the old ones. Exact: a period's figures are sums of its days'.
--
-- Non-bot events only. Per day and product, a row without order_id: its category and brand (those
-- of its latest event of the day: product_viewed, product_added, order_completed or
-- product_reviewed, with that event's time as last_seen), product_viewed events (views),
-- product_added events (adds), product_reviewed events (reviews), those with a rating (rated) and
-- the ratings' sum. Per day, product and order, a row with order_id: the units (quantity, 1 when
-- missing) and revenue (price × quantity × the event's fx_rate) of the product's lines in that
-- order's order_completed events of the day.
WITH lines AS (
    SELECT event_date, event_name, event_time, order_id, fx_rate, rating, unnest(products) AS p
    FROM events
    WHERE NOT is_bot
      AND event_name IN ('product_viewed', 'product_added', 'order_completed', 'product_reviewed')
),
flat AS (
    SELECT event_date, event_name, event_time, order_id, fx_rate, rating,
           p['product_id'] AS product_id, p['category'] AS category, p['brand'] AS brand,
           CAST(p['price'] AS DOUBLE) AS price, coalesce(p['quantity'], 1) AS quantity
    FROM lines
    WHERE p['product_id'] IS NOT NULL
)
SELECT event_date, product_id, CAST(NULL AS VARCHAR) AS order_id,
       last_value(category ORDER BY event_time) AS category,
       last_value(brand ORDER BY event_time)    AS brand,
       max(event_time)                          AS last_seen,
       count(*) FILTER (WHERE event_name = 'product_viewed')        AS views,
       count(*) FILTER (WHERE event_name = 'product_added')         AS adds,
       count(*) FILTER (WHERE event_name = 'product_reviewed')      AS reviews,
       count(rating) FILTER (WHERE event_name = 'product_reviewed') AS rated,
       sum(rating) FILTER (WHERE event_name = 'product_reviewed')   AS rating_sum,
       CAST(NULL AS BIGINT)                     AS units,
       CAST(NULL AS DOUBLE)                     AS revenue
FROM flat
GROUP BY event_date, product_id
UNION ALL
SELECT event_date, product_id, order_id,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       sum(quantity)                                   AS units,
       sum(price * quantity * CAST(fx_rate AS DOUBLE)) AS revenue
FROM flat
WHERE event_name = 'order_completed' AND order_id IS NOT NULL
GROUP BY event_date, product_id, order_id
