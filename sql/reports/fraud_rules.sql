-- title: Fraud rules
-- description: Per rule, over the decisions of the period (`fraud_decisions`, by the UTC day of the
--   scored event): how often it fired (`mode` enforced: it counted towards the verdict; shadow: it
--   is being tried out and did not count), in decisions that blocked, sent to review or allowed
--   the order, the distinct orders it fired on and how many of them were later refunded
--   (`orders.refunded_at` set).
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
WITH hits AS (
    SELECT 'enforced' AS mode, order_id, decision, unnest(reasons) AS rule
    FROM fraud_decisions
    WHERE event_date BETWEEN $from AND $to
    UNION ALL
    SELECT 'shadow' AS mode, order_id, decision, unnest(shadow_reasons) AS rule
    FROM fraud_decisions
    WHERE event_date BETWEEN $from AND $to
)
SELECT
    h.rule,
    h.mode,
    count(*)                                                   AS hits,
    count(*) FILTER (WHERE h.decision = 'block')               AS blocked,
    count(*) FILTER (WHERE h.decision = 'review')              AS reviewed,
    count(*) FILTER (WHERE h.decision = 'allow')               AS allowed,
    count(DISTINCT h.order_id)                                 AS orders,
    count(DISTINCT h.order_id) FILTER (WHERE o.refunded_at IS NOT NULL) AS later_refunded
FROM hits h
LEFT JOIN orders o ON o.order_id = h.order_id
GROUP BY h.rule, h.mode
ORDER BY hits DESC, h.rule, h.mode
