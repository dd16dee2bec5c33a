-- title: Overview
-- description: The store's headline figures for a period, beside the same figures for the period
--   of the same length just before it (the `_previous` columns): sessions, shoppers, orders,
--   conversion rate (sessions with an order / sessions), revenue and average order value
--   (revenue / orders). From the `sessions` view: bots are left out; a session belongs to the
--   UTC day it started; a shopper is the session's user (stitched through identities) or else its
--   anonymous id; orders and revenue are the orders completed in the sessions, revenue in the
--   reporting currency.
-- role: marketing
-- param: from date = today-29 : First day of the period (UTC), inclusive.
-- param: to date = today : Last day of the period (UTC), inclusive.
-- param: channel text = null : Only sessions of this channel (first touch).
-- param: campaign text = null : Only sessions of this utm_campaign.
-- param: device text = null : Only sessions on this device type (desktop, mobile, tablet).
-- param: country text = null : Only sessions from this country (ISO code).
WITH s AS (
    SELECT session_date >= $from AS current, orders, revenue, coalesce(user_id, anonymous_id) AS shopper
    FROM sessions
    WHERE NOT is_bot
      AND session_date BETWEEN $previous_from AND $to
      AND ($channel IS NULL OR channel = $channel)
      AND ($campaign IS NULL OR utm_campaign = $campaign)
      AND ($device IS NULL OR device_type = $device)
      AND ($country IS NULL OR country = $country)
)
SELECT
    count(*) FILTER (WHERE current)                                          AS sessions,
    count(DISTINCT shopper) FILTER (WHERE current)                           AS shoppers,
    coalesce(sum(orders) FILTER (WHERE current), 0)                          AS orders,
    CAST(count(*) FILTER (WHERE current AND orders > 0) AS DOUBLE)
        / nullif(count(*) FILTER (WHERE current), 0)                         AS conversion_rate,
    coalesce(sum(revenue) FILTER (WHERE current), 0)                         AS revenue,
    CAST(sum(revenue) FILTER (WHERE current) AS DOUBLE)
        / nullif(sum(orders) FILTER (WHERE current), 0)                      AS average_order_value,
    count(*) FILTER (WHERE NOT current)                                      AS sessions_previous,
    count(DISTINCT shopper) FILTER (WHERE NOT current)                       AS shoppers_previous,
    coalesce(sum(orders) FILTER (WHERE NOT current), 0)                      AS orders_previous,
    CAST(count(*) FILTER (WHERE NOT current AND orders > 0) AS DOUBLE)
        / nullif(count(*) FILTER (WHERE NOT current), 0)                     AS conversion_rate_previous,
    coalesce(sum(revenue) FILTER (WHERE NOT current), 0)                     AS revenue_previous,
    CAST(sum(revenue) FILTER (WHERE NOT current) AS DOUBLE)
        / nullif(sum(orders) FILTER (WHERE NOT current), 0)                  AS average_order_value_previous
FROM s
