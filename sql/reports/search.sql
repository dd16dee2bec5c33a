-- title: Site search
-- description: Per search query (products_searched events of non-bot traffic in the period, by
--   their UTC day; the query as typed, lower-cased and trimmed): searches, the searches followed by
--   a click (a product_clicked or product_viewed event in the same session after the search and
--   before the session's next search, both strictly, on the search's UTC day or the next), the
--   searches without one, the click rate, the searches whose session completed an order after the
--   search on the search's UTC day or the next (the click and the order may fall after the
--   period) (search-to-purchase conversion), the revenue
--   of those orders (each order counted once per query, in the reporting currency) and revenue per
--   search. Sorted by searches; `no_click_only` keeps the queries with at least one search
--   without a click.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: no_click_only bool = false : Only queries that had searches without a click.
-- The days' figures come from rollup_search (sql/batch/rollup_search.sql, kept by compaction),
-- whose day's searches are judged by the events of that day and the next.
WITH days AS (
    SELECT * FROM rollup_search WHERE event_date BETWEEN $from AND $to
),
per_query AS (
    SELECT query,
           sum(searches)      AS searches,
           sum(clicked)       AS clicked,
           sum(without_click) AS without_click,
           sum(converted)     AS converted
    FROM days
    WHERE order_id IS NULL
    GROUP BY query
),
revenue AS (
    SELECT DISTINCT query, order_id, revenue FROM days WHERE order_id IS NOT NULL
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
