-- title: Cart and checkout abandonment
-- description: Of the period's non-bot sessions (the `sessions` view, by the UTC day they
--   started) that added to cart (stage `cart`) or started checkout (stage `checkout`): how many
--   ended without an order (abandoned), the abandonment rate, the value left behind (the products
--   added to cart in the abandoned sessions: price × quantity × the event's fx_rate, in the
--   reporting currency), and how many abandoned sessions were recovered: the same shopper (user,
--   else anonymous id) started a non-bot session with an order after the abandoned one started and
--   at most 7 days after it ended (that session may fall after the period), and the recovery rate
--   (recovered / abandoned). A session that added to cart and started checkout counts in both stages.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: channel text = null : Only sessions of this channel.
-- param: campaign text = null : Only sessions of this utm_campaign.
-- param: device text = null : Only sessions on this device type.
-- param: country text = null : Only sessions from this country.
WITH s AS (
    SELECT session_id, coalesce(user_id, anonymous_id) AS shopper, started_at, ended_at,
           added_to_cart, started_checkout, orders
    FROM sessions
    WHERE NOT is_bot
      AND session_date BETWEEN $from AND $to
      AND (added_to_cart OR started_checkout)
      AND ($channel IS NULL OR channel = $channel)
      AND ($campaign IS NULL OR utm_campaign = $campaign)
      AND ($device IS NULL OR device_type = $device)
      AND ($country IS NULL OR country = $country)
),
added AS (
    SELECT session_id, unnest(products) AS p, fx_rate
    FROM events
    WHERE event_name = 'product_added'
      AND event_date BETWEEN CAST($from AS DATE) - INTERVAL '1 day' AND CAST($to AS DATE) + INTERVAL '1 day'
),
cart_value AS (
    SELECT session_id,
           sum(CAST(p['price'] AS DOUBLE) * coalesce(p['quantity'], 1) * CAST(coalesce(fx_rate, 1) AS DOUBLE)) AS value
    FROM added
    GROUP BY session_id
),
buyers AS (
    SELECT coalesce(user_id, anonymous_id) AS shopper, started_at
    FROM sessions
    WHERE NOT is_bot AND orders > 0
),
recovery AS (
    SELECT DISTINCT s.session_id
    FROM s
    JOIN buyers b
      ON b.shopper = s.shopper
     AND b.started_at > s.started_at
     AND date_part('epoch', b.started_at) <= date_part('epoch', s.ended_at) + 7 * 86400
    WHERE s.orders = 0
),
judged AS (
    SELECT s.*, coalesce(v.value, 0) AS value, r.session_id IS NOT NULL AS recovered
    FROM s
    LEFT JOIN cart_value v ON v.session_id = s.session_id
    LEFT JOIN recovery r ON r.session_id = s.session_id
),
stages AS (
    SELECT 'cart' AS stage, * FROM judged WHERE added_to_cart
    UNION ALL
    SELECT 'checkout' AS stage, * FROM judged WHERE started_checkout
)
SELECT
    stage,
    count(*)                                                        AS sessions,
    count(*) FILTER (WHERE orders = 0)                              AS abandoned,
    CAST(count(*) FILTER (WHERE orders = 0) AS DOUBLE) / count(*)   AS abandonment_rate,
    coalesce(sum(value) FILTER (WHERE orders = 0), 0)               AS value_left,
    count(*) FILTER (WHERE recovered)                               AS recovered,
    CAST(count(*) FILTER (WHERE recovered) AS DOUBLE)
        / nullif(count(*) FILTER (WHERE orders = 0), 0)             AS recovery_rate
FROM stages
GROUP BY stage
ORDER BY stage
