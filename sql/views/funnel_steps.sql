-- funnel_steps: per day, how many sessions reached each step of the purchase funnel, and the share
-- that went on from the step before and from the start. Bots are left out.
CREATE OR REPLACE VIEW funnel_steps AS
WITH daily AS (
    SELECT
        session_date AS day,
        count(*)                                        AS s1,
        count(*) FILTER (WHERE product_views > 0)       AS s2,
        count(*) FILTER (WHERE added_to_cart)           AS s3,
        count(*) FILTER (WHERE started_checkout)        AS s4,
        count(*) FILTER (WHERE orders > 0)              AS s5
    FROM sessions
    WHERE NOT is_bot
    GROUP BY session_date
),
steps AS (
              SELECT day, 1 AS step, 'session_started'  AS step_name, s1 AS sessions, s1 AS previous, s1 AS first FROM daily
    UNION ALL SELECT day, 2 AS step, 'product_viewed'   AS step_name, s2 AS sessions, s1 AS previous, s1 AS first FROM daily
    UNION ALL SELECT day, 3 AS step, 'product_added'    AS step_name, s3 AS sessions, s2 AS previous, s1 AS first FROM daily
    UNION ALL SELECT day, 4 AS step, 'checkout_started' AS step_name, s4 AS sessions, s3 AS previous, s1 AS first FROM daily
    UNION ALL SELECT day, 5 AS step, 'order_completed'  AS step_name, s5 AS sessions, s4 AS previous, s1 AS first FROM daily
)
SELECT
    day,
    step,
    step_name,
    sessions,
    CAST(sessions AS DOUBLE) / nullif(previous, 0) AS conversion_from_previous,
    CAST(sessions AS DOUBLE) / nullif(first, 0)    AS conversion_from_start
FROM steps;
