-- Conversion by marketing channel.
SELECT channel, count(*) AS sessions, count(*) FILTER (WHERE orders > 0) AS converted,
       round(1.0 * count(*) FILTER (WHERE orders > 0) / count(*), 4) AS conversion_rate
FROM sessions
WHERE NOT is_bot
GROUP BY channel
ORDER BY sessions DESC, channel
