-- title: Acquisition
-- description: Where shoppers came from: per value of a dimension of the session's traffic (its
--   first touch), the sessions, shoppers, new and returning shoppers, orders, conversion rate
--   (sessions with an order / sessions), revenue and average order value (revenue / orders), and
--   the sessions, orders and revenue of the period of the same length just before (`_previous`).
--   Non-bot sessions of the `sessions` view by the UTC day they started; a shopper is the user
--   (stitched) or else the anonymous id; a shopper is new in a row when their first non-bot
--   session ever (any channel, all history) started in the period, returning otherwise. Source /
--   medium is `utm_source / utm_medium`; a missing value shows as `(none)`. A dimension value seen
--   only in the previous period has a row with zero sessions.
-- role: marketing
-- param: from date = today-29 : First day of the period (UTC), inclusive.
-- param: to date = today : Last day of the period (UTC), inclusive.
-- param: by text = channel in (channel, source_medium, campaign, landing_page, device, country) : What a row is.
-- param: channel text = null : Only sessions of this channel.
-- param: campaign text = null : Only sessions of this utm_campaign.
-- param: device text = null : Only sessions on this device type.
-- param: country text = null : Only sessions from this country.
WITH firsts AS (
    SELECT coalesce(user_id, anonymous_id) AS shopper, min(session_date) AS first_day
    FROM sessions
    WHERE NOT is_bot
    GROUP BY 1
),
s AS (
    SELECT
        CASE $by
            WHEN 'channel'       THEN coalesce(channel, '(none)')
            WHEN 'source_medium' THEN coalesce(utm_source, '(none)') || ' / ' || coalesce(utm_medium, '(none)')
            WHEN 'campaign'      THEN coalesce(utm_campaign, '(none)')
            WHEN 'landing_page'  THEN coalesce(landing_path, '(none)')
            WHEN 'device'        THEN coalesce(device_type, '(none)')
            WHEN 'country'       THEN coalesce(country, '(none)')
        END                                     AS dimension,
        session_date >= $from                   AS current,
        coalesce(user_id, anonymous_id)         AS shopper,
        orders,
        revenue
    FROM sessions
    WHERE NOT is_bot
      AND session_date BETWEEN $previous_from AND $to
      AND ($channel IS NULL OR channel = $channel)
      AND ($campaign IS NULL OR utm_campaign = $campaign)
      AND ($device IS NULL OR device_type = $device)
      AND ($country IS NULL OR country = $country)
)
SELECT
    s.dimension,
    count(*) FILTER (WHERE current)                                          AS sessions,
    count(DISTINCT s.shopper) FILTER (WHERE current)                         AS shoppers,
    count(DISTINCT s.shopper) FILTER (WHERE current AND f.first_day >= $from) AS new_shoppers,
    count(DISTINCT s.shopper) FILTER (WHERE current AND f.first_day < $from)  AS returning_shoppers,
    coalesce(sum(orders) FILTER (WHERE current), 0)                          AS orders,
    CAST(count(*) FILTER (WHERE current AND orders > 0) AS DOUBLE)
        / nullif(count(*) FILTER (WHERE current), 0)                         AS conversion_rate,
    coalesce(sum(revenue) FILTER (WHERE current), 0)                         AS revenue,
    CAST(sum(revenue) FILTER (WHERE current) AS DOUBLE)
        / nullif(sum(orders) FILTER (WHERE current), 0)                      AS average_order_value,
    count(*) FILTER (WHERE NOT current)                                      AS sessions_previous,
    coalesce(sum(orders) FILTER (WHERE NOT current), 0)                      AS orders_previous,
    coalesce(sum(revenue) FILTER (WHERE NOT current), 0)                     AS revenue_previous
FROM s
JOIN firsts f ON f.shopper = s.shopper
GROUP BY s.dimension
ORDER BY revenue DESC, sessions DESC, s.dimension
