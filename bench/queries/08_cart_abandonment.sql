-- Cart abandonment per day.
SELECT session_date, count(*) FILTER (WHERE added_to_cart) AS carts,
       count(*) FILTER (WHERE added_to_cart AND orders = 0) AS abandoned
FROM sessions
GROUP BY session_date
ORDER BY session_date
