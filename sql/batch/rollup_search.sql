-- rollup_search: per UTC day and search query, what the `search` report sums over a period
-- (sql/reports/search.sql), kept by compaction (shoplake_batch::rollup). A search is judged by the
-- session's events after it, which can fall on the next day: a day's rows are computed from the
-- events of that day and the next, and a round's events change the rows of their own days and of
-- the days before them.
--
-- Non-bot events only; the query is the search as typed, lower-cased and trimmed. Per day and
-- query, a row without order_id: the day's products_searched events (searches), those followed by
-- a click (a product_clicked or product_viewed event in the same session after the search and
-- before the session's next search, both strictly), those without one, and those whose session
-- completed an order after the search (converted). Per day, query and order, a row with order_id:
-- an order completed in the session after one of the day's searches for the query, with its
-- revenue in the reporting currency (0 when missing); one row per distinct revenue. Clicks and
-- orders are followed into the search's day and the next only, so that a day's rows depend on
-- those two days' events alone, however many days a round reads.
WITH e AS (
    SELECT session_id, event_id, event_name, event_time, event_date, order_id, revenue_reporting,
           lower(trim(search_query)) AS query
    FROM events
    WHERE NOT is_bot
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
     AND c.event_date <= s.event_date + INTERVAL '1 day'
),
conversions AS (
    SELECT DISTINCT s.event_id
    FROM searches s
    JOIN e o
      ON o.session_id = s.session_id AND o.event_name = 'order_completed' AND o.event_time > s.event_time
     AND o.event_date <= s.event_date + INTERVAL '1 day'
),
judged AS (
    SELECT s.event_date, s.query, k.event_id IS NOT NULL AS clicked, c.event_id IS NOT NULL AS converted
    FROM searches s
    LEFT JOIN clicks k ON k.event_id = s.event_id
    LEFT JOIN conversions c ON c.event_id = s.event_id
)
SELECT event_date, query, CAST(NULL AS VARCHAR) AS order_id,
       count(*)                            AS searches,
       count(*) FILTER (WHERE clicked)     AS clicked,
       count(*) FILTER (WHERE NOT clicked) AS without_click,
       count(*) FILTER (WHERE converted)   AS converted,
       CAST(NULL AS DECIMAL(18, 2)) AS revenue
FROM judged
GROUP BY event_date, query
UNION ALL
SELECT DISTINCT s.event_date, s.query, o.order_id,
       CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       coalesce(o.revenue_reporting, 0) AS revenue
FROM searches s
JOIN e o
  ON o.session_id = s.session_id AND o.event_name = 'order_completed' AND o.event_time > s.event_time
 AND o.event_date <= s.event_date + INTERVAL '1 day'
WHERE o.order_id IS NOT NULL
