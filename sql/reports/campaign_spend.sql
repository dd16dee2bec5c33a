-- title: Campaign spend and cost per session
-- description: Per campaign (utm_campaign) with spend loaded in `campaign_spend` for the period
--   (the UTC days of `spend_date`): the sources it was bought on (comma-separated, in order),
--   spend in the reporting currency (each day's spend × its fx_rate), clicks and impressions as
--   the platforms reported them (null when none reported), the non-bot sessions of the period
--   whose first touch was that campaign and one of those sources (the `sessions` view), cost per
--   session (spend / sessions) and cost per click (spend / clicks). ROAS and cost per order per
--   attribution model: the `attribution` report by campaign, which carries this spend.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
WITH spend AS (
    SELECT
        campaign,
        string_agg(DISTINCT source, ',' ORDER BY source)                    AS sources,
        sum(CAST(spend AS DOUBLE) * CAST(coalesce(fx_rate, 0) AS DOUBLE))    AS spend,
        sum(clicks)                                                         AS clicks,
        sum(impressions)                                                    AS impressions
    FROM campaign_spend
    WHERE spend_date BETWEEN $from AND $to
    GROUP BY campaign
),
paid AS (
    SELECT s.utm_campaign AS campaign, count(*) AS sessions
    FROM sessions s
    WHERE NOT s.is_bot
      AND s.session_date BETWEEN $from AND $to
      AND EXISTS (
          SELECT 1 FROM campaign_spend c
          WHERE c.campaign = s.utm_campaign AND c.source = s.utm_source
      )
    GROUP BY s.utm_campaign
)
SELECT
    spend.campaign,
    spend.sources,
    spend.spend,
    spend.clicks,
    spend.impressions,
    coalesce(paid.sessions, 0)                          AS sessions,
    spend.spend / nullif(paid.sessions, 0)              AS cost_per_session,
    spend.spend / nullif(spend.clicks, 0)               AS cost_per_click
FROM spend
LEFT JOIN paid ON paid.campaign = spend.campaign
ORDER BY spend.spend DESC, spend.campaign
