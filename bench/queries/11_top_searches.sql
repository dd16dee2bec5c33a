-- What shoppers search for.
SELECT search_query, count(*) AS searches, count(DISTINCT session_id) AS sessions
FROM events
WHERE event_name = 'products_searched'
GROUP BY 1
ORDER BY searches DESC, search_query
LIMIT 20
