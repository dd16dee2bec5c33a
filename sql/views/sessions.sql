-- sessions: one row per visit, from the storefront's own events (back-office events are not visits):
-- the `visits` table that compaction keeps (sql/batch/visits.sql), with the user filled in.
--
-- A session's user is any user id seen in it, so activity before a login or sign-up in the same
-- visit is attributed to the user. A visit that carried no user id at all — browsing before the
-- shopper first logged in on that device, or a later visit that never logged in — is attributed
-- to the user its anonymous id is linked to in `identities` (sql/batch/identities.sql): the
-- current link, so on a shared device the user of the latest login wins. `user_from_identity`
-- says which sessions got their user that way.
--
-- Its traffic source is first touch (see visits.sql).
CREATE OR REPLACE VIEW sessions AS
SELECT
    v.session_id,
    coalesce(v.user_id, i.user_id)                    AS user_id,
    v.anonymous_id,
    v.session_date,
    v.started_at,
    v.ended_at,
    v.duration_seconds,
    v.events,
    v.page_views,
    v.product_views,
    v.added_to_cart,
    v.started_checkout,
    v.orders,
    v.revenue,
    v.channel,
    v.utm_source,
    v.utm_medium,
    v.utm_campaign,
    v.referrer,
    v.landing_path,
    v.device_type,
    v.country,
    v.is_bot,
    v.session_inferred,
    v.user_id IS NULL AND i.user_id IS NOT NULL       AS user_from_identity
FROM visits v
LEFT JOIN identities i
       ON i.anonymous_id = v.anonymous_id
      AND i.is_current;
