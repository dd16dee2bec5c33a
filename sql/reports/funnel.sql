-- title: Funnel
-- description: The purchase funnel step by step: of the period's non-bot sessions (the `sessions`
--   view, by the UTC day they started), how many started (1 session_started), viewed a product
--   (2 product_viewed), added to cart (3 product_added), started checkout (4 checkout_started) and
--   completed an order (5 order_completed); the sessions lost since the step before (drop_off),
--   the share that went on from the step before and from the start; optionally split by channel
--   or device (`(none)` when missing; `(all)` with `by=none`). A session counts at a step when it
--   did that step, whether or not it did the ones before. Step 1 has drop_off 0 and
--   conversion_from_previous 1; a ratio over zero sessions is null; a period without sessions has
--   no rows.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: by text = none in (none, channel, device) : What splits the funnel.
-- param: channel text = null : Only sessions of this channel.
-- param: campaign text = null : Only sessions of this utm_campaign.
-- param: device text = null : Only sessions on this device type.
-- param: country text = null : Only sessions from this country.
WITH counts AS (
    SELECT
        CASE $by
            WHEN 'channel' THEN coalesce(channel, '(none)')
            WHEN 'device'  THEN coalesce(device_type, '(none)')
            ELSE '(all)'
        END                                            AS dimension,
        count(*)                                       AS s1,
        count(*) FILTER (WHERE product_views > 0)      AS s2,
        count(*) FILTER (WHERE added_to_cart)          AS s3,
        count(*) FILTER (WHERE started_checkout)       AS s4,
        count(*) FILTER (WHERE orders > 0)             AS s5
    FROM sessions
    WHERE NOT is_bot
      AND session_date BETWEEN $from AND $to
      AND ($channel IS NULL OR channel = $channel)
      AND ($campaign IS NULL OR utm_campaign = $campaign)
      AND ($device IS NULL OR device_type = $device)
      AND ($country IS NULL OR country = $country)
    GROUP BY 1
),
steps AS (
              SELECT dimension, 1 AS step, 'session_started'  AS step_name, s1 AS sessions, s1 AS previous, s1 AS first FROM counts
    UNION ALL SELECT dimension, 2 AS step, 'product_viewed'   AS step_name, s2 AS sessions, s1 AS previous, s1 AS first FROM counts
    UNION ALL SELECT dimension, 3 AS step, 'product_added'    AS step_name, s3 AS sessions, s2 AS previous, s1 AS first FROM counts
    UNION ALL SELECT dimension, 4 AS step, 'checkout_started' AS step_name, s4 AS sessions, s3 AS previous, s1 AS first FROM counts
    UNION ALL SELECT dimension, 5 AS step, 'order_completed'  AS step_name, s5 AS sessions, s4 AS previous, s1 AS first FROM counts
)
SELECT
    dimension,
    step,
    step_name,
    sessions,
    previous - sessions                                AS drop_off,
    CAST(sessions AS DOUBLE) / nullif(previous, 0)     AS conversion_from_previous,
    CAST(sessions AS DOUBLE) / nullif(first, 0)        AS conversion_from_start
FROM steps
ORDER BY dimension, step
