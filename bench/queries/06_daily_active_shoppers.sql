-- Daily active shoppers (bots excluded).
SELECT event_date, count(DISTINCT coalesce(user_id, anonymous_id)) AS active_shoppers
FROM events
WHERE NOT is_bot
GROUP BY event_date
ORDER BY event_date
