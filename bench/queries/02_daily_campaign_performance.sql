-- Dashboard view: campaigns per day, best first.
SELECT * FROM daily_campaign_performance ORDER BY revenue DESC NULLS LAST, day, utm_campaign LIMIT 50
