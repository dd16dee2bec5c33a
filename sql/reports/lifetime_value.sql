-- title: Lifetime value by first channel
-- description: Shoppers first seen in the period (their first non-bot session ever, in the
--   `sessions` view, started on a day between `from` and `to`; a shopper is the user, else the
--   anonymous id), grouped by that first session's channel (`(none)` when missing): shoppers,
--   buyers (an order in any of their non-bot sessions so far), repeat buyers (two orders or more),
--   the repeat purchase rate (repeat buyers / buyers), their orders and revenue so far (all their
--   sessions in the lake, also after `to`; reporting currency), and the lifetime value per shopper (revenue / shoppers).
-- role: marketing
-- param: from date = today-364 : First day of first sessions (UTC), inclusive.
-- param: to date = today : Last day of first sessions (UTC), inclusive.
WITH s AS (
    SELECT coalesce(user_id, anonymous_id) AS shopper, session_id, started_at, session_date,
           coalesce(channel, '(none)') AS channel, orders, revenue
    FROM sessions
    WHERE NOT is_bot
),
firsts AS (
    SELECT shopper,
           first_value(channel ORDER BY started_at, session_id) AS first_channel,
           min(session_date) AS first_day,
           sum(orders) AS orders,
           sum(revenue) AS revenue
    FROM s
    GROUP BY shopper
)
SELECT
    first_channel                                                    AS channel,
    count(*)                                                         AS shoppers,
    count(*) FILTER (WHERE orders > 0)                               AS buyers,
    count(*) FILTER (WHERE orders > 1)                               AS repeat_buyers,
    CAST(count(*) FILTER (WHERE orders > 1) AS DOUBLE)
        / nullif(count(*) FILTER (WHERE orders > 0), 0)              AS repeat_purchase_rate,
    sum(orders)                                                      AS orders,
    sum(revenue)                                                     AS revenue,
    CAST(sum(revenue) AS DOUBLE) / count(*)                          AS lifetime_value
FROM firsts
WHERE first_day BETWEEN $from AND $to
GROUP BY first_channel
ORDER BY revenue DESC, channel
