-- funnel_steps: per day, how many sessions reached each step of the purchase funnel, and the share
-- that went on from the step before and from the start; and how many shoppers did (a shopper is
-- the session's user — which `sessions` attributes from `identities` when the visit itself did
-- not log in — or else its anonymous id), so a shopper who browsed anonymously and bought after
-- logging in counts once. Bots are left out.
CREATE OR REPLACE VIEW funnel_steps AS
WITH visits AS (
    SELECT *, coalesce(user_id, anonymous_id) AS shopper
    FROM sessions
    WHERE NOT is_bot
),
daily AS (
    SELECT
        session_date AS day,
        count(*)                                                    AS s1,
        count(*) FILTER (WHERE product_views > 0)                   AS s2,
        count(*) FILTER (WHERE added_to_cart)                       AS s3,
        count(*) FILTER (WHERE started_checkout)                    AS s4,
        count(*) FILTER (WHERE orders > 0)                          AS s5,
        count(DISTINCT shopper)                                     AS u1,
        count(DISTINCT shopper) FILTER (WHERE product_views > 0)    AS u2,
        count(DISTINCT shopper) FILTER (WHERE added_to_cart)        AS u3,
        count(DISTINCT shopper) FILTER (WHERE started_checkout)     AS u4,
        count(DISTINCT shopper) FILTER (WHERE orders > 0)           AS u5
    FROM visits
    GROUP BY session_date
),
steps AS (
              SELECT day, 1 AS step, 'session_started'  AS step_name, s1 AS sessions, s1 AS previous, s1 AS first, u1 AS shoppers, u1 AS first_shoppers FROM daily
    UNION ALL SELECT day, 2 AS step, 'product_viewed'   AS step_name, s2 AS sessions, s1 AS previous, s1 AS first, u2 AS shoppers, u1 AS first_shoppers FROM daily
    UNION ALL SELECT day, 3 AS step, 'product_added'    AS step_name, s3 AS sessions, s2 AS previous, s1 AS first, u3 AS shoppers, u1 AS first_shoppers FROM daily
    UNION ALL SELECT day, 4 AS step, 'checkout_started' AS step_name, s4 AS sessions, s3 AS previous, s1 AS first, u4 AS shoppers, u1 AS first_shoppers FROM daily
    UNION ALL SELECT day, 5 AS step, 'order_completed'  AS step_name, s5 AS sessions, s4 AS previous, s1 AS first, u5 AS shoppers, u1 AS first_shoppers FROM daily
)
SELECT
    day,
    step,
    step_name,
    sessions,
    CAST(sessions AS DOUBLE) / nullif(previous, 0)        AS conversion_from_previous,
    CAST(sessions AS DOUBLE) / nullif(first, 0)           AS conversion_from_start,
    shoppers,
    CAST(shoppers AS DOUBLE) / nullif(first_shoppers, 0)  AS shopper_conversion_from_start
FROM steps;
