-- daily_campaign_performance: what each campaign brought, per day of the session's start.
-- Bots are left out. Revenue is in the reporting currency; AOV = revenue / orders.
CREATE OR REPLACE VIEW daily_campaign_performance AS
SELECT
    session_date                                                     AS day,
    coalesce(utm_campaign, '(none)')                                 AS utm_campaign,
    coalesce(utm_source, '(none)')                                   AS utm_source,
    coalesce(utm_medium, '(none)')                                   AS utm_medium,
    count(*)                                                         AS sessions,
    count(DISTINCT coalesce(user_id, anonymous_id))                  AS shoppers,
    sum(orders)                                                      AS orders,
    CAST(count(*) FILTER (WHERE orders > 0) AS DOUBLE) / count(*)    AS conversion_rate,
    sum(revenue)                                                     AS revenue,
    sum(revenue) / nullif(sum(orders), 0)                            AS average_order_value
FROM sessions
WHERE NOT is_bot
GROUP BY 1, 2, 3, 4;
