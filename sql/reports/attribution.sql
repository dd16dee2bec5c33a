-- title: Attribution
-- description: Orders and revenue credited to channels or campaigns by six models side by side.
--   The orders are those placed in the period (the UTC day of `placed_at`), except those whose
--   current status is cancelled or payment_failed; revenue is the order's revenue in the reporting currency. An
--   order's shopper is its user, else the user its anonymous id is linked to now (identities),
--   else its anonymous id. Its touches are that shopper's non-bot sessions (the `sessions` view,
--   each with its first-touch channel and campaign, `(none)` when missing) that started at most
--   `lookback_days` days before the order was placed and not after it, in the order they
--   started (ties by session id), both bounds inclusive. Credit per touch: first touch 1 to the first; last touch 1 to the last; last
--   non-direct 1 to the last touch whose channel is not `direct` (`(none)` is not direct) (the last touch when all are
--   direct); linear 1/n each; position-based 1 for a single touch, 0.5 each for two, else 0.4 to
--   the first and the last and 0.2/(n-2) to each between; time decay in proportion to
--   0.5^(hours from the session's start to the order / (24 × half_life_days)). An order without a
--   touch is credited to `(no touch)` in every model. Each model's orders add up to the orders
--   counted and its revenue to their revenue. By campaign, `spend` is what `campaign_spend` holds
--   for that campaign over the period's days (each day's spend × its fx_rate, summed over
--   sources; null without spend, and always null by channel), so that ROAS is a model's revenue /
--   spend and cost per order its spend / orders. `new_customers_<model>` is the credit given for
--   the orders that were their shopper's first: the earliest placed_at (ties by order_id) of all
--   the shopper's orders in the lake whose status is not cancelled or payment_failed; so a
--   model's customer acquisition cost is spend / new_customers.
-- role: marketing
-- param: from date = today-29 : First day orders were placed (UTC), inclusive.
-- param: to date = today : Last day orders were placed (UTC), inclusive.
-- param: by text = channel in (channel, campaign) : What gets the credit.
-- param: lookback_days int = 30 : How far back a session counts as a touch.
-- param: half_life_days float = 7 : Half-life of the time-decay model.
WITH sales AS (
    SELECT o.order_id, o.placed_at, o.order_date, coalesce(o.revenue_reporting, 0) AS revenue,
           coalesce(o.user_id, i.user_id, o.anonymous_id) AS shopper
    FROM orders o
    LEFT JOIN identities i ON i.anonymous_id = o.anonymous_id AND i.is_current
    WHERE o.status NOT IN ('cancelled', 'payment_failed')
),
o AS (
    SELECT order_id, placed_at, order_date, revenue, shopper,
           CASE WHEN row_number() OVER (PARTITION BY shopper ORDER BY placed_at, order_id) = 1
                THEN 1.0 ELSE 0.0 END AS first_order
    FROM sales
),
o_period AS (
    SELECT * FROM o WHERE order_date BETWEEN $from AND $to
),
-- The touches' strings are copied into plain Utf8 (arrow_cast): the join's output views would
-- otherwise point into the whole scanned string buffers, which the window sorts below count as
-- held memory (tens of MB per batch): one run in six ran out of the statement's 1 GiB
-- ("ExternalSorterMerge asked for 28706282 more") on the 10M-event lake, and every run spilled.
touch AS (
    SELECT
        arrow_cast(o.order_id, 'Utf8') AS order_id,
        o.revenue,
        o.first_order,
        arrow_cast(s.session_id, 'Utf8') AS session_id,
        s.started_at,
        coalesce(s.channel, '(none)') = 'direct' AS direct,
        arrow_cast(CASE $by WHEN 'campaign' THEN coalesce(s.utm_campaign, '(none)') ELSE coalesce(s.channel, '(none)') END, 'Utf8') AS dimension,
        power(0.5, (date_part('epoch', o.placed_at) - date_part('epoch', s.started_at)) / (86400.0 * $half_life_days)) AS decay
    FROM o_period o
    JOIN sessions s
      ON coalesce(s.user_id, s.anonymous_id) = o.shopper
     AND NOT s.is_bot
     AND s.started_at <= o.placed_at
     AND date_part('epoch', s.started_at) >= date_part('epoch', o.placed_at) - 86400.0 * $lookback_days
),
ranked AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY order_id ORDER BY started_at, session_id)               AS n,
        count(*) OVER (PARTITION BY order_id)                                                   AS touches,
        row_number() OVER (PARTITION BY order_id ORDER BY direct, started_at DESC, session_id DESC) AS non_direct_rank,
        sum(decay) OVER (PARTITION BY order_id)                                                 AS decay_total
    FROM touch
),
credit AS (
    SELECT
        dimension,
        revenue,
        first_order,
        CASE WHEN n = 1 THEN 1.0 ELSE 0.0 END                   AS first_touch,
        CASE WHEN n = touches THEN 1.0 ELSE 0.0 END             AS last_touch,
        CASE WHEN non_direct_rank = 1 THEN 1.0 ELSE 0.0 END     AS last_non_direct,
        1.0 / touches                                           AS linear,
        CASE
            WHEN touches = 1 THEN 1.0
            WHEN touches = 2 THEN 0.5
            WHEN n = 1 OR n = touches THEN 0.4
            ELSE 0.2 / (touches - 2)
        END                                                     AS position_based,
        decay / decay_total                                     AS time_decay
    FROM ranked
    UNION ALL
    SELECT '(no touch)', o.revenue, o.first_order, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0
    FROM o_period o
    WHERE o.order_id NOT IN (SELECT order_id FROM touch)
),
credited AS (
SELECT
    dimension,
    sum(first_touch)                                AS orders_first_touch,
    sum(first_touch * CAST(revenue AS DOUBLE))      AS revenue_first_touch,
    sum(last_touch)                                 AS orders_last_touch,
    sum(last_touch * CAST(revenue AS DOUBLE))       AS revenue_last_touch,
    sum(last_non_direct)                            AS orders_last_non_direct,
    sum(last_non_direct * CAST(revenue AS DOUBLE))  AS revenue_last_non_direct,
    sum(linear)                                     AS orders_linear,
    sum(linear * CAST(revenue AS DOUBLE))           AS revenue_linear,
    sum(position_based)                             AS orders_position_based,
    sum(position_based * CAST(revenue AS DOUBLE))   AS revenue_position_based,
    sum(time_decay)                                 AS orders_time_decay,
    sum(time_decay * CAST(revenue AS DOUBLE))       AS revenue_time_decay,
    sum(first_touch * first_order)                  AS new_customers_first_touch,
    sum(last_touch * first_order)                   AS new_customers_last_touch,
    sum(last_non_direct * first_order)              AS new_customers_last_non_direct,
    sum(linear * first_order)                       AS new_customers_linear,
    sum(position_based * first_order)               AS new_customers_position_based,
    sum(time_decay * first_order)                   AS new_customers_time_decay
FROM credit
GROUP BY dimension
),
spend AS (
    SELECT campaign AS dimension,
           sum(CAST(spend AS DOUBLE) * CAST(coalesce(fx_rate, 0) AS DOUBLE)) AS spend
    FROM campaign_spend
    WHERE spend_date BETWEEN $from AND $to AND $by = 'campaign'
    GROUP BY campaign
)
SELECT credited.*, spend.spend
FROM credited
LEFT JOIN spend USING (dimension)
ORDER BY revenue_last_touch DESC, dimension
