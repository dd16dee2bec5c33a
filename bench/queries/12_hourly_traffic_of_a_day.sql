-- Events and visits per hour of one day (one partition).
SELECT date_trunc('hour', event_time) AS hour, count(*) AS events, count(DISTINCT session_id) AS sessions
FROM events
WHERE event_date = DATE '{day}'
GROUP BY 1
ORDER BY 1
