-- title: Acquisition cohorts
-- description: Monthly cohorts of shoppers by the UTC month of their first non-bot session ever
--   (the `sessions` view; a shopper is the user, else the anonymous id), for the shoppers first
--   seen between `from` and `to`: per cohort and month since it (0 = the cohort's own month, up to
--   the latest month with sessions), the cohort's size, the shoppers active that month (a non-bot
--   session), the retention (active / size), and that month's orders and revenue (reporting
--   currency) from the cohort's sessions. Months in which no member of the cohort had a session have
--   no row.
-- role: marketing
-- param: from date = today-364 : First day of first sessions (UTC), inclusive.
-- param: to date = today : Last day of first sessions (UTC), inclusive.
WITH s AS (
    SELECT coalesce(user_id, anonymous_id) AS shopper,
           session_date,
           date_trunc('month', CAST(session_date AS TIMESTAMP)) AS month,
           orders,
           revenue
    FROM sessions
    WHERE NOT is_bot
),
firsts AS (
    SELECT shopper, min(session_date) AS first_day, min(month) AS cohort
    FROM s
    GROUP BY shopper
),
members AS (
    SELECT * FROM firsts WHERE first_day BETWEEN $from AND $to
),
sizes AS (
    SELECT cohort, count(*) AS size FROM members GROUP BY cohort
),
activity AS (
    SELECT
        m.cohort,
        CAST((date_part('year', s.month) - date_part('year', m.cohort)) * 12
             + date_part('month', s.month) - date_part('month', m.cohort) AS BIGINT) AS month_number,
        count(DISTINCT s.shopper)  AS active,
        sum(s.orders)              AS orders,
        sum(s.revenue)             AS revenue
    FROM members m
    JOIN s ON s.shopper = m.shopper
    GROUP BY 1, 2
)
SELECT
    CAST(a.cohort AS DATE)                       AS cohort,
    a.month_number,
    z.size                                       AS shoppers,
    a.active,
    CAST(a.active AS DOUBLE) / z.size            AS retention,
    a.orders,
    a.revenue
FROM activity a
JOIN sizes z ON z.cohort = a.cohort
ORDER BY cohort, month_number
