-- One shopper's visits (what support looks at).
SELECT session_id, min(event_time) AS started_at, count(*) AS events,
       count(*) FILTER (WHERE event_name = 'order_completed') AS orders
FROM events
WHERE anonymous_id = '{shopper}'
GROUP BY session_id
ORDER BY started_at, session_id
