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
WITH lines AS (
    SELECT event_name, event_time, order_id, fx_rate, rating, unnest(products) AS p
    FROM events
    WHERE event_date BETWEEN $from AND $to
      AND NOT is_bot
      AND event_name IN ('product_viewed', 'product_added', 'order_completed', 'product_reviewed')
),
flat AS (
    SELECT event_name, event_time, order_id, fx_rate, rating,
           p['product_id'] AS product_id, p['category'] AS category, p['brand'] AS brand,
           CAST(p['price'] AS DOUBLE) AS price, coalesce(p['quantity'], 1) AS quantity
    FROM lines
),
latest AS (
    SELECT product_id,
           last_value(category ORDER BY event_time) AS category,
           last_value(brand ORDER BY event_time) AS brand
    FROM flat
    GROUP BY product_id
),
returned AS (
    SELECT DISTINCT order_id FROM events WHERE event_name = 'return_requested'
),
keyed AS (
    SELECT
        CASE $by
            WHEN 'category' THEN coalesce(l.category, '(none)')
            WHEN 'brand'    THEN coalesce(l.brand, '(none)')
            ELSE f.product_id
        END AS dimension,
        f.*,
        r.order_id IS NOT NULL AS was_returned
    FROM flat f
    JOIN latest l ON l.product_id = f.product_id
    LEFT JOIN returned r ON r.order_id = f.order_id AND f.event_name = 'order_completed'
    WHERE $category IS NULL OR l.category = $category
)
SELECT
    dimension,
    count(*) FILTER (WHERE event_name = 'product_viewed')                              AS views,
    count(*) FILTER (WHERE event_name = 'product_added')                               AS adds_to_cart,
    CAST(count(*) FILTER (WHERE event_name = 'product_added') AS DOUBLE)
        / nullif(count(*) FILTER (WHERE event_name = 'product_viewed'), 0)             AS add_to_cart_rate,
    count(DISTINCT order_id) FILTER (WHERE event_name = 'order_completed')             AS orders,
    coalesce(sum(quantity) FILTER (WHERE event_name = 'order_completed'), 0)           AS units,
    coalesce(sum(price * quantity * CAST(fx_rate AS DOUBLE)) FILTER (WHERE event_name = 'order_completed'), 0) AS revenue,
    CAST(count(DISTINCT order_id) FILTER (WHERE event_name = 'order_completed') AS DOUBLE)
        / nullif(count(*) FILTER (WHERE event_name = 'product_viewed'), 0)             AS purchase_rate,
    count(DISTINCT order_id) FILTER (WHERE was_returned)                               AS returns,
    CAST(count(DISTINCT order_id) FILTER (WHERE was_returned) AS DOUBLE)
        / nullif(count(DISTINCT order_id) FILTER (WHERE event_name = 'order_completed'), 0) AS return_rate,
    count(*) FILTER (WHERE event_name = 'product_reviewed')                            AS reviews,
    avg(rating) FILTER (WHERE event_name = 'product_reviewed')                         AS average_rating
FROM keyed
GROUP BY dimension
ORDER BY revenue DESC, views DESC, dimension
