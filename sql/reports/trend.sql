-- title: Trend
-- description: Day by day: sessions, shoppers, orders and revenue, split by a dimension (or not:
--   `by=none` gives one row per day with dimension `(all)`). Same definitions as the overview
--   (non-bot sessions of the `sessions` view by the UTC day they started; revenue in the
--   reporting currency); a missing dimension value shows as `(none)`. Days without sessions have
--   no row.
-- role: marketing
-- param: from date = today-29 : First day (UTC), inclusive.
-- param: to date = today : Last day (UTC), inclusive.
-- param: by text = channel in (none, channel, device, country, campaign) : What splits each day.
-- param: channel text = null : Only sessions of this channel (first touch).
-- param: campaign text = null : Only sessions of this utm_campaign.
-- param: device text = null : Only sessions on this device type.
-- param: country text = null : Only sessions from this country.
SELECT
    session_date                                           AS day,
    CASE $by
        WHEN 'channel'  THEN coalesce(channel, '(none)')
        WHEN 'device'   THEN coalesce(device_type, '(none)')
        WHEN 'country'  THEN coalesce(country, '(none)')
        WHEN 'campaign' THEN coalesce(utm_campaign, '(none)')
        ELSE '(all)'
    END                                                    AS dimension,
    count(*)                                               AS sessions,
    count(DISTINCT coalesce(user_id, anonymous_id))        AS shoppers,
    sum(orders)                                            AS orders,
    sum(revenue)                                           AS revenue
FROM sessions
WHERE NOT is_bot
  AND session_date BETWEEN $from AND $to
  AND ($channel IS NULL OR channel = $channel)
  AND ($campaign IS NULL OR utm_campaign = $campaign)
  AND ($device IS NULL OR device_type = $device)
  AND ($country IS NULL OR country = $country)
GROUP BY 1, 2
ORDER BY 1, 2
