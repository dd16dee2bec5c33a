-- The most viewed products in one hour.
SELECT item['product_id'] AS product_id, count(*) AS views
FROM (SELECT unnest(products) AS item
      FROM events
      WHERE event_name = 'product_viewed'
        AND event_time >= '{hour_start}' AND event_time < '{hour_end}') viewed
GROUP BY 1
ORDER BY views DESC, product_id
LIMIT 10
