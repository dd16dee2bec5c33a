-- title: Returns and refunds by reason
-- description: Per reason given (`(none)` when missing), over the period's events (by their UTC
--   day): return requests (return_requested events), refunds (order_refunded events), the
--   refunded amount (their total × fx_rate, in the reporting currency) and the orders concerned
--   (distinct orders with either event).
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
SELECT
    coalesce(reason, '(none)')                                                   AS reason,
    count(*) FILTER (WHERE event_name = 'return_requested')                      AS return_requests,
    count(*) FILTER (WHERE event_name = 'order_refunded')                        AS refunds,
    coalesce(sum(CAST(total AS DOUBLE) * CAST(coalesce(fx_rate, 1) AS DOUBLE))
        FILTER (WHERE event_name = 'order_refunded'), 0)                         AS refunded_amount,
    count(DISTINCT order_id)                                                     AS orders
FROM events
WHERE event_date BETWEEN $from AND $to
  AND event_name IN ('return_requested', 'order_refunded')
GROUP BY 1
ORDER BY return_requests + refunds DESC, reason
