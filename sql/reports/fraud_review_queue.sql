-- title: Fraud review queue
-- description: The orders whose latest fraud decision (`fraud_decisions`, latest `decided_at`, ties
--   broken by the higher event id) is
--   `review`, scored in the period (the UTC day of the scored event): the order, the user and
--   anonymous ids the decision was made for, when it was scored, the score and the enforced rules that fired (comma-separated), its total in
--   the reporting currency, its status now and whether it was refunded since; highest score first.
--   Holds personal data: analysts and admins only.
-- role: analyst
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
WITH latest AS (
    SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY decided_at DESC, event_id DESC) AS n
    FROM fraud_decisions
    WHERE event_date BETWEEN $from AND $to
)
SELECT
    l.order_id,
    l.user_id,
    l.anonymous_id,
    l.event_time                             AS scored_at,
    l.score,
    array_to_string(l.reasons, ', ')         AS rules,
    o.total_reporting                        AS total,
    o.status,
    o.refunded_at IS NOT NULL                AS refunded
FROM latest l
LEFT JOIN orders o ON o.order_id = l.order_id
WHERE l.n = 1 AND l.decision = 'review'
ORDER BY l.score DESC, l.order_id
