-- title: Site search
-- description: Per search query (products_searched events of non-bot traffic in the period, by
--   their UTC day; the query as typed, lower-cased and trimmed): searches, the searches followed by
--   a click (a product_clicked or product_viewed event in the same session after the search and
--   before the session's next search; both strictly), the searches without one, the click rate, the searches
--   whose session completed an order after the search (the click and the order may fall
--   after the period) (search-to-purchase conversion), the revenue
--   of those orders (each order counted once per query, in the reporting currency) and revenue per
--   search. Sorted by searches; `no_click_only` keeps the queries with at least one search
--   without a click.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: no_click_only bool = false : Only queries that had searches without a click.
WITH e AS (
    SELECT session_id, event_id, event_name, event_time, event_date, order_id, revenue_reporting,
           lower(trim(search_query)) AS query
    FROM events
    WHERE NOT is_bot
      AND event_date BETWEEN CAST($from AS DATE) - INTERVAL '1 day' AND CAST($to AS DATE) + INTERVAL '1 day'
      AND event_name IN ('products_searched', 'product_clicked', 'product_viewed', 'order_completed')
),
searches AS (
    SELECT session_id, event_id, event_time, event_date, query,
           lead(event_time) OVER (PARTITION BY session_id ORDER BY event_time, event_id) AS next_search
    FROM e
    WHERE event_name = 'products_searched'
),
clicks AS (
    SELECT DISTINCT s.event_id
    FROM searches s
    JOIN e c
      ON c.session_id = s.session_id
     AND c.event_name IN ('product_clicked', 'product_viewed')
     AND c.event_time > s.event_time
     AND (s.next_search IS NULL OR c.event_time < s.next_search)
),
conversions AS (
    SELECT DISTINCT s.event_id
    FROM searches s
    JOIN e o ON o.session_id = s.session_id AND o.event_name = 'order_completed' AND o.event_time > s.event_time
),
judged AS (
    SELECT s.query, s.event_id, k.event_id IS NOT NULL AS clicked, c.event_id IS NOT NULL AS converted
    FROM searches s
    LEFT JOIN clicks k ON k.event_id = s.event_id
    LEFT JOIN conversions c ON c.event_id = s.event_id
    WHERE s.event_date BETWEEN $from AND $to
),
revenue AS (
    SELECT DISTINCT s.query, o.order_id, coalesce(o.revenue_reporting, 0) AS revenue
    FROM searches s
    JOIN e o ON o.session_id = s.session_id AND o.event_name = 'order_completed' AND o.event_time > s.event_time
    WHERE s.event_date BETWEEN $from AND $to
),
per_query AS (
    SELECT
        query,
        count(*)                                         AS searches,
        count(*) FILTER (WHERE clicked)                  AS clicked,
        count(*) FILTER (WHERE NOT clicked)              AS without_click,
        count(*) FILTER (WHERE converted)                AS converted
    FROM judged
    GROUP BY query
)
SELECT
    q.query,
    q.searches,
    q.clicked,
    q.without_click,
    CAST(q.clicked AS DOUBLE) / q.searches                     AS click_rate,
    q.converted,
    CAST(q.converted AS DOUBLE) / q.searches                   AS conversion_rate,
    coalesce(r.revenue, 0)                                     AS revenue,
    CAST(coalesce(r.revenue, 0) AS DOUBLE) / q.searches        AS revenue_per_search
FROM per_query q
LEFT JOIN (SELECT query, sum(revenue) AS revenue FROM revenue GROUP BY query) r ON r.query = q.query
WHERE NOT $no_click_only OR q.without_click > 0
ORDER BY q.searches DESC, q.query
