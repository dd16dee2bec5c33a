-- title: Bad rows by reason
-- description: Per reason and stage (and the field at fault, `(none)` when the reason names none)
--   of the inputs refused in the period (by the UTC day they were received): how many, and when
--   the first and the last of them arrived. What an operator checks when a count looks wrong;
--   the inputs themselves are in the analysts' bad_row_examples.
-- role: marketing
-- param: from date = today-6 : First day received (UTC), inclusive.
-- param: to date = today : Last day received (UTC), inclusive.
SELECT
    reason,
    stage,
    coalesce(field, '(none)') AS field,
    count(*)                  AS rows,
    min(received_at)          AS first_seen,
    max(received_at)          AS last_seen
FROM bad_rows
WHERE event_date BETWEEN $from AND $to
GROUP BY 1, 2, 3
ORDER BY rows DESC, reason, stage, field
