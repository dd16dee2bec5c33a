-- Revenue by country and device type.
SELECT country, device_type, count(*) AS orders, sum(revenue_reporting) AS revenue
FROM events
WHERE event_name = 'order_completed'
GROUP BY 1, 2
ORDER BY revenue DESC NULLS LAST, country, device_type
LIMIT 20
