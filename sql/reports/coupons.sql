-- title: Coupons
-- description: Per coupon (`(no coupon)` for orders without one), over the orders placed in the
--   period (the UTC day of `placed_at`, from the `orders` table) except those whose current status
--   is cancelled or payment_failed: orders, revenue (reporting currency), the discount given in the
--   reporting currency (discount × total_reporting / total), and the average order value
--   (revenue / orders), so AOV with and without a coupon sit side by side.
-- role: marketing
-- param: from date = today-29 : First day orders were placed (UTC), inclusive.
-- param: to date = today : Last day orders were placed (UTC), inclusive.
SELECT
    coalesce(coupon, '(no coupon)')                                                   AS coupon,
    count(*)                                                                          AS orders,
    coalesce(sum(revenue_reporting), 0)                                               AS revenue,
    coalesce(sum(CAST(discount AS DOUBLE) * CAST(total_reporting AS DOUBLE) / nullif(CAST(total AS DOUBLE), 0)), 0) AS discount,
    CAST(sum(revenue_reporting) AS DOUBLE) / count(*)                                 AS average_order_value
FROM orders
WHERE order_date BETWEEN $from AND $to
  AND status NOT IN ('cancelled', 'payment_failed')
GROUP BY 1
ORDER BY orders DESC, coupon
