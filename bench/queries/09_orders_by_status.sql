-- Orders and revenue by status and currency.
SELECT status, currency, count(*) AS orders, sum(total_reporting) AS total_reporting
FROM orders
GROUP BY 1, 2
ORDER BY orders DESC, status, currency
