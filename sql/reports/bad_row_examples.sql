-- title: Bad rows: the latest input of each reason
-- description: Per reason and stage, the latest input refused in the period (by the UTC day it
--   was received; ties go to the greatest bad_row_id): when it arrived, the field at fault, the
--   message, and the first 500 characters of the input as it was received (`(not UTF-8)` when
--   its bytes are not UTF-8 text), with how many inputs had that reason and stage.
-- role: analyst
-- param: from date = today-6 : First day received (UTC), inclusive.
-- param: to date = today : Last day received (UTC), inclusive.
WITH ranked AS (
    SELECT
        reason, stage, received_at, field, message, raw, bad_row_id,
        count(*) OVER (PARTITION BY reason, stage) AS rows,
        row_number() OVER (PARTITION BY reason, stage ORDER BY received_at DESC, bad_row_id DESC) AS n
    FROM bad_rows
    WHERE event_date BETWEEN $from AND $to
)
SELECT
    reason,
    stage,
    rows,
    received_at,
    field,
    message,
    coalesce(substr(TRY_CAST(raw AS VARCHAR), 1, 500), '(not UTF-8)') AS example
FROM ranked
WHERE n = 1
ORDER BY rows DESC, reason, stage
