-- title: Orders, shipping and returns
-- description: Per shipping country (`(none)` when missing), the orders placed in the period (the
--   UTC day of `placed_at`, from the `orders` table): how many, how many are cancelled (status or
--   cancelled_at), have the status payment_failed, shipped, delivered, refunded (their timestamps or status) and returned (a
--   return_requested event for the order at any time); the cancellation, return and refund rates
--   (over orders); the average hours from placing to payment (the order's first
--   payment_authorized event), to shipping and to delivery, over the orders that got there; and
--   the refunded amount (order_refunded events' total × fx_rate, reporting currency).
-- role: marketing
-- param: from date = today-29 : First day orders were placed (UTC), inclusive.
-- param: to date = today : Last day orders were placed (UTC), inclusive.
-- param: country text = null : Only orders shipped to this country.
WITH o AS (
    SELECT order_id, status, placed_at, shipped_at, delivered_at, cancelled_at, refunded_at,
           coalesce(shipping_country, '(none)') AS country
    FROM orders
    WHERE order_date BETWEEN $from AND $to
      AND ($country IS NULL OR shipping_country = $country)
),
life AS (
    SELECT order_id,
           min(event_time) FILTER (WHERE event_name = 'payment_authorized')                     AS paid_at,
           count(*) FILTER (WHERE event_name = 'return_requested') > 0                         AS returned,
           sum(CAST(total AS DOUBLE) * CAST(coalesce(fx_rate, 1) AS DOUBLE))
               FILTER (WHERE event_name = 'order_refunded')                                     AS refunded_amount
    FROM events
    WHERE event_name IN ('payment_authorized', 'return_requested', 'order_refunded')
      AND order_id IN (SELECT order_id FROM o)
    GROUP BY order_id
)
SELECT
    o.country,
    count(*)                                                                   AS orders,
    count(*) FILTER (WHERE o.status = 'cancelled' OR o.cancelled_at IS NOT NULL) AS cancelled,
    count(*) FILTER (WHERE o.status = 'payment_failed')                        AS payment_failed,
    count(*) FILTER (WHERE o.shipped_at IS NOT NULL)                           AS shipped,
    count(*) FILTER (WHERE o.delivered_at IS NOT NULL)                         AS delivered,
    count(*) FILTER (WHERE o.refunded_at IS NOT NULL)                          AS refunded,
    count(*) FILTER (WHERE l.returned)                                         AS returned,
    CAST(count(*) FILTER (WHERE o.status = 'cancelled' OR o.cancelled_at IS NOT NULL) AS DOUBLE) / count(*) AS cancellation_rate,
    CAST(count(*) FILTER (WHERE l.returned) AS DOUBLE) / count(*)              AS return_rate,
    CAST(count(*) FILTER (WHERE o.refunded_at IS NOT NULL) AS DOUBLE) / count(*) AS refund_rate,
    avg((date_part('epoch', l.paid_at) - date_part('epoch', o.placed_at)) / 3600.0)      AS hours_to_pay,
    avg((date_part('epoch', o.shipped_at) - date_part('epoch', o.placed_at)) / 3600.0)   AS hours_to_ship,
    avg((date_part('epoch', o.delivered_at) - date_part('epoch', o.placed_at)) / 3600.0) AS hours_to_deliver,
    coalesce(sum(l.refunded_amount), 0)                                        AS refunded_amount
FROM o
LEFT JOIN life l ON l.order_id = o.order_id
GROUP BY o.country
ORDER BY orders DESC, o.country
