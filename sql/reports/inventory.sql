-- title: Inventory
-- description: Per product, from the warehouse's stock levels and the storefront's demand. A stock
--   update is a `custom` event named "Inventory Updated" or "inventory_updated" (any case); each
--   product it lists (with a quantity) has, from the update's event time on, the stock level that
--   quantity gives, 0 being out of stock (a product listed twice in one update takes the lower
--   level; updates at the same instant apply in event id order). The period runs from its first
--   day's midnight (UTC) to the end of its last day, or to now if that is earlier. Per product: its
--   category and brand and its stock level at the period's end (all three from its latest update
--   up to then), whether it is out of stock then, its stock-outs (updates in the period that set
--   its level to 0 when its update before had a level above 0, or that are its first update), the
--   hours it was out of stock within the period (a level of 0 set before the period counts from
--   the period's start), the product_viewed and product_added events of non-bot traffic in the
--   period (by their UTC day) on it while it was out of stock (its latest update at or before the
--   event's time had set 0), its units sold (the quantities, 1 when missing, of its lines in the
--   period's order_completed events, bots included), its sales per day (units sold / days in the
--   period) and its days of cover (stock level / sales per day; empty without sales). A row is a
--   product with at least one update before the period's end; rows are sorted by hours out of
--   stock (descending), then days of cover (ascending, empty last), then product id.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: category text = null : Only products of this category (their latest update's).
-- param: out_of_stock_only bool = false : Only products out of stock at some time in the period.
WITH bounds AS (
    SELECT date_part('epoch', CAST($from AS TIMESTAMP))                     AS lo,
           least(date_part('epoch', CAST($to AS TIMESTAMP)) + 86400,
                 date_part('epoch', now()))                                AS hi,
           (date_part('epoch', CAST($to AS TIMESTAMP))
            - date_part('epoch', CAST($from AS TIMESTAMP))) / 86400 + 1    AS days
),
listed AS (
    SELECT event_id, date_part('epoch', event_time) AS seen_at, unnest(products) AS p
    FROM events
    WHERE event_name = 'custom'
      AND lower(custom_event_name) IN ('inventory updated', 'inventory_updated')
      AND event_date <= $to
),
updates AS (
    SELECT l.p['product_id'] AS product_id, l.event_id, l.seen_at,
           min(l.p['quantity']) AS level,
           max(l.p['category']) AS category,
           max(l.p['brand'])    AS brand
    FROM listed l CROSS JOIN bounds b
    WHERE l.p['product_id'] IS NOT NULL AND l.p['quantity'] IS NOT NULL AND l.seen_at < b.hi
    GROUP BY 1, 2, 3
),
timeline AS (
    SELECT product_id, seen_at, level,
           lag(level) OVER (PARTITION BY product_id ORDER BY seen_at, event_id) AS previous,
           lead(seen_at) OVER (PARTITION BY product_id ORDER BY seen_at, event_id)   AS until
    FROM updates
),
latest AS (
    SELECT product_id,
           last_value(level ORDER BY seen_at, event_id)    AS stock_level,
           last_value(category ORDER BY seen_at, event_id) AS category,
           last_value(brand ORDER BY seen_at, event_id)    AS brand
    FROM updates
    GROUP BY product_id
),
outs AS (
    SELECT t.product_id,
           count(*) FILTER (WHERE t.seen_at >= b.lo AND (t.previous IS NULL OR t.previous > 0)) AS stock_outs,
           sum(greatest(0, least(coalesce(t.until, b.hi), b.hi) - greatest(t.seen_at, b.lo))) / 3600.0 AS hours
    FROM timeline t CROSS JOIN bounds b
    WHERE t.level = 0
    GROUP BY t.product_id
),
demand AS (
    SELECT event_name, date_part('epoch', event_time) AS seen_at, is_bot, unnest(products) AS p
    FROM events
    WHERE event_date BETWEEN $from AND $to
      AND event_name IN ('product_viewed', 'product_added', 'order_completed')
),
missed AS (
    SELECT t.product_id,
           count(*) FILTER (WHERE d.event_name = 'product_viewed') AS views,
           count(*) FILTER (WHERE d.event_name = 'product_added')  AS adds
    FROM demand d
    JOIN timeline t
      ON t.product_id = d.p['product_id']
     AND d.seen_at >= t.seen_at
     AND (t.until IS NULL OR d.seen_at < t.until)
    WHERE t.level = 0 AND NOT d.is_bot AND d.event_name <> 'order_completed'
    GROUP BY t.product_id
),
sold AS (
    SELECT p['product_id'] AS product_id, sum(coalesce(p['quantity'], 1)) AS units
    FROM demand
    WHERE event_name = 'order_completed'
    GROUP BY 1
),
per_product AS (
    SELECT l.product_id, l.category, l.brand, l.stock_level,
           l.stock_level = 0                              AS out_of_stock,
           coalesce(o.stock_outs, 0)                      AS stock_outs,
           coalesce(o.hours, 0)                           AS hours_out_of_stock,
           coalesce(m.views, 0)                           AS views_out_of_stock,
           coalesce(m.adds, 0)                            AS adds_out_of_stock,
           coalesce(s.units, 0)                           AS units_sold,
           coalesce(s.units, 0) / b.days                  AS sales_per_day
    FROM latest l
    CROSS JOIN bounds b
    LEFT JOIN outs o   ON o.product_id = l.product_id
    LEFT JOIN missed m ON m.product_id = l.product_id
    LEFT JOIN sold s   ON s.product_id = l.product_id
    WHERE $category IS NULL OR l.category = $category
)
SELECT product_id, category, brand, stock_level, out_of_stock, stock_outs, hours_out_of_stock,
       views_out_of_stock, adds_out_of_stock, units_sold, sales_per_day,
       stock_level / nullif(sales_per_day, 0) AS days_of_cover
FROM per_product
WHERE NOT $out_of_stock_only OR hours_out_of_stock > 0
ORDER BY hours_out_of_stock DESC, days_of_cover ASC NULLS LAST, product_id
