-- title: Products
-- description: Per product, category or brand over the period's events (by their UTC day): views
--   (product_viewed events), adds to cart (product_added events), the add-to-cart rate (adds /
--   views), orders (completed orders that listed it), units and revenue (price × quantity × the
--   order's fx_rate, in the reporting currency) from the order_completed events' line items, the
--   purchase rate (orders / views), returns (of those orders, the ones with a return_requested
--   event at any time) and the return rate (returns / orders), reviews (product_reviewed events)
--   and their average rating. Bots are left out. A product's category and brand are those of its
--   latest event in the period. A row is a product (or category, brand) with at least one of those events
--   in the period; rows are sorted by revenue, then views, both descending.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: by text = product in (product, category, brand) : What a row is.
-- param: category text = null : Only products of this category.
-- The days' figures come from rollup_products (sql/batch/rollup_products.sql, kept by compaction):
-- a few thousand rows a day instead of the period's events.
WITH days AS (
    SELECT * FROM rollup_products WHERE event_date BETWEEN $from AND $to
),
-- Each product's own figures first (a few thousand rows), then its orders.
per_product AS (
    SELECT product_id,
           last_value(category ORDER BY last_seen) AS category,
           last_value(brand ORDER BY last_seen)    AS brand,
           sum(views)                              AS views,
           sum(adds)                               AS adds,
           sum(reviews)                            AS reviews,
           sum(rated)                              AS rated,
           sum(rating_sum)                         AS rating_sum
    FROM days
    WHERE order_id IS NULL
    GROUP BY product_id
),
keyed AS (
    SELECT
        CASE $by
            WHEN 'category' THEN coalesce(category, '(none)')
            WHEN 'brand'    THEN coalesce(brand, '(none)')
            ELSE product_id
        END AS dimension,
        *
    FROM per_product
    WHERE $category IS NULL OR category = $category
),
order_lines AS (
    SELECT product_id, order_id, sum(units) AS units, sum(revenue) AS revenue
    FROM days
    WHERE order_id IS NOT NULL
    GROUP BY product_id, order_id
),
returned AS (
    SELECT order_id FROM orders WHERE return_requested_at IS NOT NULL
),
sold AS (
    SELECT k.dimension, l.order_id, sum(l.units) AS units, sum(l.revenue) AS revenue,
           bool_or(r.order_id IS NOT NULL) AS was_returned
    FROM order_lines l
    JOIN keyed k ON k.product_id = l.product_id
    LEFT JOIN returned r ON r.order_id = l.order_id
    GROUP BY k.dimension, l.order_id
),
sold_by AS (
    SELECT dimension,
           count(order_id)                             AS orders,
           sum(units)                                  AS units,
           sum(revenue)                                AS revenue,
           count(order_id) FILTER (WHERE was_returned) AS returns
    FROM sold
    GROUP BY dimension
),
seen_by AS (
    SELECT dimension, sum(views) AS views, sum(adds) AS adds, sum(reviews) AS reviews,
           sum(rated) AS rated, sum(rating_sum) AS rating_sum
    FROM keyed
    GROUP BY dimension
)
SELECT
    s.dimension,
    s.views,
    s.adds                                                        AS adds_to_cart,
    CAST(s.adds AS DOUBLE) / nullif(s.views, 0)                   AS add_to_cart_rate,
    coalesce(o.orders, 0)                                         AS orders,
    coalesce(o.units, 0)                                          AS units,
    coalesce(o.revenue, 0)                                        AS revenue,
    CAST(coalesce(o.orders, 0) AS DOUBLE) / nullif(s.views, 0)    AS purchase_rate,
    coalesce(o.returns, 0)                                        AS returns,
    CAST(o.returns AS DOUBLE) / nullif(o.orders, 0)               AS return_rate,
    s.reviews,
    CAST(s.rating_sum AS DOUBLE) / nullif(s.rated, 0)             AS average_rating
FROM seen_by s
LEFT JOIN sold_by o ON o.dimension = s.dimension
ORDER BY revenue DESC, s.views DESC, s.dimension
