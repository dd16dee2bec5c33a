-- title: Fraud decisions by day
-- description: Per UTC day of the scored event and verdict (allow, review, block), from
--   `fraud_decisions`: decisions, distinct orders, their amount (each distinct order's total in
--   the reporting currency, from `orders`, counted once however many decisions it had that day
--   with that verdict), the average score of the decisions, and how many of those orders were
--   later refunded (`orders.refunded_at` set) — what a flagged or allowed order turned out to be.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: decision text = null in (allow, review, block) : Only this verdict.
WITH d AS (
    SELECT event_date AS day, decision, order_id, score
    FROM fraud_decisions
    WHERE event_date BETWEEN $from AND $to
      AND ($decision IS NULL OR decision = $decision)
),
scored AS (
    SELECT day, decision, count(*) AS decisions, count(DISTINCT order_id) AS orders, avg(score) AS average_score
    FROM d
    GROUP BY day, decision
),
amounts AS (
    SELECT k.day, k.decision,
           coalesce(sum(o.total_reporting), 0)                 AS amount,
           count(*) FILTER (WHERE o.refunded_at IS NOT NULL)   AS later_refunded
    FROM (SELECT DISTINCT day, decision, order_id FROM d) k
    LEFT JOIN orders o ON o.order_id = k.order_id
    GROUP BY k.day, k.decision
)
SELECT s.day, s.decision, s.decisions, s.orders, a.amount, s.average_score, a.later_refunded
FROM scored s
JOIN amounts a ON a.day = s.day AND a.decision = s.decision
ORDER BY s.day, s.decision
