-- visits: one row per session, from the storefront's own events (back-office events are not
-- visits), kept by compaction: the sessions a round's events belong to are derived again from all
-- their events in the lake and merged on session_id (shoplake_batch::derived). The `sessions` view
-- (sql/views/sessions.sql) adds the user its anonymous id is linked to; dashboards read this table
-- instead of grouping every event again.
--
-- A session's user is any user id seen in it. Its traffic source is first touch, all of it (channel,
-- utm_source, utm_medium, utm_campaign, referrer) from one event: the earliest event carrying any
-- UTM parameter, else the earliest carrying a referrer, else the session's first event (ties by
-- event id). Its landing page, anonymous id, day, device and country are those of its first event.
-- Its orders are the distinct orders completed in it, and its revenue theirs, each order once (an
-- order_completed sent twice under two message ids is one order): the revenue of the order's
-- latest order_completed event in the session that carries one, in the reporting currency.
WITH completed AS (
    SELECT session_id,
           order_id,
           last_value(revenue_reporting ORDER BY event_time, event_id) FILTER (WHERE revenue_reporting IS NOT NULL) AS revenue
    FROM events
    WHERE event_name = 'order_completed'
      AND session_id IS NOT NULL
      AND order_id IS NOT NULL
      AND (source IS NULL OR source <> 'backend')
    GROUP BY session_id, order_id
),
session_revenue AS (
    SELECT session_id, sum(revenue) AS revenue FROM completed GROUP BY session_id
),
touched AS (
SELECT
    session_id,
    max(user_id)                                                             AS user_id,
    first_value(anonymous_id ORDER BY event_time, event_id)                  AS anonymous_id,
    first_value(event_date ORDER BY event_time, event_id)                    AS session_date,
    min(event_time)                                                          AS started_at,
    max(event_time)                                                          AS ended_at,
    extract(epoch FROM max(event_time)) - extract(epoch FROM min(event_time)) AS duration_seconds,
    count(*)                                                                 AS events,
    count(*) FILTER (WHERE event_name = 'page_viewed')                       AS page_views,
    count(*) FILTER (WHERE event_name = 'product_viewed')                    AS product_views,
    count(*) FILTER (WHERE event_name = 'product_added') > 0                 AS added_to_cart,
    count(*) FILTER (WHERE event_name = 'checkout_started') > 0              AS started_checkout,
    count(DISTINCT order_id) FILTER (WHERE event_name = 'order_completed')   AS orders,
    first_value(channel ORDER BY no_utm, page_referrer IS NULL, event_time, event_id)       AS channel,
    first_value(utm_source ORDER BY no_utm, page_referrer IS NULL, event_time, event_id)    AS utm_source,
    first_value(utm_medium ORDER BY no_utm, page_referrer IS NULL, event_time, event_id)    AS utm_medium,
    first_value(utm_campaign ORDER BY no_utm, page_referrer IS NULL, event_time, event_id)  AS utm_campaign,
    first_value(page_referrer ORDER BY no_utm, page_referrer IS NULL, event_time, event_id) AS referrer,
    first_value(page_path ORDER BY event_time, event_id)                     AS landing_path,
    first_value(device_type ORDER BY event_time, event_id)                   AS device_type,
    first_value(country ORDER BY event_time, event_id)                       AS country,
    bool_or(is_bot)                                                          AS is_bot,
    bool_or(session_inferred)                                                AS session_inferred
FROM (
    SELECT *, utm_source IS NULL AND utm_medium IS NULL AND utm_campaign IS NULL
              AND utm_term IS NULL AND utm_content IS NULL AS no_utm
    FROM events
) e
WHERE session_id IS NOT NULL
  AND (source IS NULL OR source <> 'backend')
GROUP BY session_id
)
SELECT
    t.session_id, t.user_id, t.anonymous_id, t.session_date, t.started_at, t.ended_at,
    t.duration_seconds, t.events, t.page_views, t.product_views, t.added_to_cart,
    t.started_checkout, t.orders, coalesce(r.revenue, 0) AS revenue, t.channel, t.utm_source,
    t.utm_medium, t.utm_campaign, t.referrer, t.landing_path, t.device_type, t.country, t.is_bot,
    t.session_inferred
FROM touched t
LEFT JOIN session_revenue r ON r.session_id = t.session_id
