-- Revenue by campaign and hour.
SELECT utm_campaign, date_trunc('hour', event_time) AS hour, count(*) AS orders,
       sum(revenue_reporting) AS revenue
FROM events
WHERE event_name = 'order_completed'
GROUP BY 1, 2
ORDER BY revenue DESC NULLS LAST, hour, utm_campaign
LIMIT 50
