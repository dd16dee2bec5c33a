-- identities: one row per link of an anonymous id (a device, a browser) to a user id, derived by
-- compaction from the identity events of the `events` table (batch/src/identities.rs).
--
-- `link_events` is `events` narrowed to the events that identify a user — signed_up, logged_in,
-- identify, and alias (whose anonymous_id is the alias's previousId) — that carry both ids, when
-- the two differ. An anonymous id and a user id are linked by any such event carrying both.
--
-- Conflicts are kept, not resolved away: an anonymous id linked to two users (a shared device, a
-- family computer, a shop's kiosk) has one row per user, `users_linked` says how many, and exactly
-- one of its rows is `is_current`: the user of its latest link event (ties: the later first link,
-- then the smallest user id). Views attribute anonymous activity to the current user only.
WITH pairs AS (
    SELECT anonymous_id,
           user_id,
           min(event_time)                                        AS first_seen,
           max(event_time)                                        AS last_seen,
           first_value(event_id ORDER BY event_time, event_id)    AS linked_by_event_id,
           first_value(event_name ORDER BY event_time, event_id)  AS linked_by,
           first_value(source ORDER BY event_time, event_id)      AS source,
           count(*)                                               AS link_events
    FROM link_events
    GROUP BY anonymous_id, user_id
)
SELECT anonymous_id,
       user_id,
       first_seen,
       last_seen,
       linked_by_event_id,
       linked_by,
       source,
       link_events,
       count(*) OVER (PARTITION BY anonymous_id) AS users_linked,
       row_number() OVER (PARTITION BY anonymous_id
                          ORDER BY last_seen DESC, first_seen DESC, user_id) = 1 AS is_current
FROM pairs
