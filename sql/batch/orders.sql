-- orders: one row per order, its current status and amounts, rebuilt by compaction from the
-- order lifecycle events of the `events` table.
--
-- Each amount and attribute is the latest value an order_completed / order_updated event gave it,
-- field by field: an update that carries `total` but not `revenue` keeps the revenue the order had
-- (latest = greatest event_time, then smallest event_id, as for every "latest" in the lake). The
-- line items come from the latest such event that lists products. The status is the furthest
-- milestone reached (refunded > cancelled > return requested > delivered > shipped > paid >
-- payment failed > placed); each milestone's time is its first event's (the last for paid and
-- payment failed), return_requested_at that of the first return request, whatever the status. Only
-- orders whose order_completed event is in the lake appear.
WITH lifecycle AS (
    SELECT *
    FROM events
    WHERE order_id IS NOT NULL
      AND event_name IN ('order_completed', 'order_updated', 'order_cancelled', 'order_refunded',
                         'payment_authorized', 'payment_failed', 'order_shipped', 'order_delivered',
                         'return_requested')
),
amount_events AS (
    SELECT *
    FROM lifecycle
    WHERE event_name IN ('order_completed', 'order_updated')
),
latest_amounts AS (
    SELECT order_id,
           last_value(user_id ORDER BY event_time, event_id DESC) FILTER (WHERE user_id IS NOT NULL) AS user_id,
           last_value(anonymous_id ORDER BY event_time, event_id DESC) FILTER (WHERE anonymous_id IS NOT NULL) AS anonymous_id,
           last_value(session_id ORDER BY event_time, event_id DESC) FILTER (WHERE session_id IS NOT NULL) AS session_id,
           last_value(currency ORDER BY event_time, event_id DESC) FILTER (WHERE currency IS NOT NULL) AS currency,
           last_value(total ORDER BY event_time, event_id DESC) FILTER (WHERE total IS NOT NULL) AS total,
           last_value(revenue ORDER BY event_time, event_id DESC) FILTER (WHERE revenue IS NOT NULL) AS revenue,
           last_value(tax ORDER BY event_time, event_id DESC) FILTER (WHERE tax IS NOT NULL) AS tax,
           last_value(shipping ORDER BY event_time, event_id DESC) FILTER (WHERE shipping IS NOT NULL) AS shipping,
           last_value(discount ORDER BY event_time, event_id DESC) FILTER (WHERE discount IS NOT NULL) AS discount,
           last_value(reporting_currency ORDER BY event_time, event_id DESC) FILTER (WHERE reporting_currency IS NOT NULL) AS reporting_currency,
           last_value(total_reporting ORDER BY event_time, event_id DESC) FILTER (WHERE total_reporting IS NOT NULL) AS total_reporting,
           last_value(revenue_reporting ORDER BY event_time, event_id DESC) FILTER (WHERE revenue_reporting IS NOT NULL) AS revenue_reporting,
           last_value(coupon ORDER BY event_time, event_id DESC) FILTER (WHERE coupon IS NOT NULL) AS coupon,
           last_value(payment_method ORDER BY event_time, event_id DESC) FILTER (WHERE payment_method IS NOT NULL) AS payment_method,
           last_value(card_fingerprint ORDER BY event_time, event_id DESC) FILTER (WHERE card_fingerprint IS NOT NULL) AS card_fingerprint,
           last_value(billing_country ORDER BY event_time, event_id DESC) FILTER (WHERE billing_country IS NOT NULL) AS billing_country,
           last_value(shipping_country ORDER BY event_time, event_id DESC) FILTER (WHERE shipping_country IS NOT NULL) AS shipping_country,
           last_value(utm_source ORDER BY event_time, event_id DESC) FILTER (WHERE utm_source IS NOT NULL) AS utm_source,
           last_value(utm_medium ORDER BY event_time, event_id DESC) FILTER (WHERE utm_medium IS NOT NULL) AS utm_medium,
           last_value(utm_campaign ORDER BY event_time, event_id DESC) FILTER (WHERE utm_campaign IS NOT NULL) AS utm_campaign,
           last_value(channel ORDER BY event_time, event_id DESC) FILTER (WHERE channel IS NOT NULL) AS channel
    FROM amount_events
    GROUP BY order_id
),
latest_products AS (
    SELECT order_id, products
    FROM (
        SELECT order_id, products,
               row_number() OVER (PARTITION BY order_id ORDER BY event_time DESC, event_id) AS rn
        FROM amount_events
        WHERE products IS NOT NULL AND cardinality(products) > 0
    ) ranked
    WHERE rn = 1
),
items AS (
    SELECT order_id, sum(coalesce(item['quantity'], 1)) AS item_count
    FROM (SELECT order_id, unnest(products) AS item FROM latest_products) line_items
    GROUP BY order_id
),
milestones AS (
    SELECT order_id,
           min(CASE WHEN event_name = 'order_completed' THEN event_time END)    AS placed_at,
           max(event_time)                                                      AS updated_at,
           max(CASE WHEN event_name = 'payment_authorized' THEN event_time END) AS paid_at,
           max(CASE WHEN event_name = 'payment_failed' THEN event_time END)     AS payment_failed_at,
           min(CASE WHEN event_name = 'order_shipped' THEN event_time END)      AS shipped_at,
           min(CASE WHEN event_name = 'order_delivered' THEN event_time END)    AS delivered_at,
           min(CASE WHEN event_name = 'return_requested' THEN event_time END)   AS return_requested_at,
           min(CASE WHEN event_name = 'order_cancelled' THEN event_time END)    AS cancelled_at,
           min(CASE WHEN event_name = 'order_refunded' THEN event_time END)     AS refunded_at,
           max(user_id)                                                         AS any_user_id
    FROM lifecycle
    GROUP BY order_id
)
SELECT a.order_id,
       coalesce(a.user_id, m.any_user_id) AS user_id,
       a.anonymous_id,
       a.session_id,
       CASE
           WHEN m.refunded_at IS NOT NULL THEN 'refunded'
           WHEN m.cancelled_at IS NOT NULL THEN 'cancelled'
           WHEN m.return_requested_at IS NOT NULL THEN 'return_requested'
           WHEN m.delivered_at IS NOT NULL THEN 'delivered'
           WHEN m.shipped_at IS NOT NULL THEN 'shipped'
           WHEN m.paid_at IS NOT NULL
                AND (m.payment_failed_at IS NULL OR m.paid_at >= m.payment_failed_at) THEN 'paid'
           WHEN m.payment_failed_at IS NOT NULL THEN 'payment_failed'
           ELSE 'placed'
       END AS status,
       m.placed_at,
       m.updated_at,
       a.currency,
       a.total,
       a.revenue,
       a.tax,
       a.shipping,
       a.discount,
       a.reporting_currency,
       a.total_reporting,
       a.revenue_reporting,
       coalesce(i.item_count, 0) AS item_count,
       a.coupon,
       a.payment_method,
       a.card_fingerprint,
       a.billing_country,
       a.shipping_country,
       a.utm_source,
       a.utm_medium,
       a.utm_campaign,
       a.channel,
       m.shipped_at,
       m.delivered_at,
       m.cancelled_at,
       m.refunded_at,
       CAST(m.placed_at AS DATE) AS order_date,
       m.return_requested_at
FROM latest_amounts a
JOIN milestones m ON m.order_id = a.order_id
LEFT JOIN items i ON i.order_id = a.order_id
WHERE m.placed_at IS NOT NULL
