-- visits: one row per session, from the storefront's own events (back-office events are not
-- visits), kept by compaction: the sessions a round's events belong to are derived again from all
-- their events in the lake and merged on session_id (shoplake_batch::derived). The `sessions` view
-- (sql/views/sessions.sql) adds the user its anonymous id is linked to; dashboards read this table
-- instead of grouping every event again.
--
-- A session's user is any user id seen in it. Its traffic source is first touch: the earliest
-- event carrying UTM parameters, a referrer or a channel (nulls sort last), which is the landing
-- page.
SELECT
    session_id,
    max(user_id)                                                             AS user_id,
    first_value(anonymous_id ORDER BY event_time)                            AS anonymous_id,
    first_value(event_date ORDER BY event_time)                              AS session_date,
    min(event_time)                                                          AS started_at,
    max(event_time)                                                          AS ended_at,
    extract(epoch FROM max(event_time)) - extract(epoch FROM min(event_time)) AS duration_seconds,
    count(*)                                                                 AS events,
    count(*) FILTER (WHERE event_name = 'page_viewed')                       AS page_views,
    count(*) FILTER (WHERE event_name = 'product_viewed')                    AS product_views,
    count(*) FILTER (WHERE event_name = 'product_added') > 0                 AS added_to_cart,
    count(*) FILTER (WHERE event_name = 'checkout_started') > 0              AS started_checkout,
    count(DISTINCT order_id) FILTER (WHERE event_name = 'order_completed')   AS orders,
    coalesce(sum(revenue_reporting) FILTER (WHERE event_name = 'order_completed'), 0) AS revenue,
    first_value(channel ORDER BY utm_source IS NULL, page_referrer IS NULL, event_time) AS channel,
    first_value(utm_source ORDER BY utm_source IS NULL, event_time)          AS utm_source,
    first_value(utm_medium ORDER BY utm_medium IS NULL, event_time)          AS utm_medium,
    first_value(utm_campaign ORDER BY utm_campaign IS NULL, event_time)      AS utm_campaign,
    first_value(page_referrer ORDER BY page_referrer IS NULL, event_time)    AS referrer,
    first_value(page_path ORDER BY event_time)                               AS landing_path,
    first_value(device_type ORDER BY event_time)                             AS device_type,
    first_value(country ORDER BY event_time)                                 AS country,
    bool_or(is_bot)                                                          AS is_bot,
    bool_or(session_inferred)                                                AS session_inferred
FROM events
WHERE session_id IS NOT NULL
  AND (source IS NULL OR source <> 'backend')
GROUP BY session_id
