//! The lake layout shared by the stage that writes staging files and the jobs that compact them:
//! table names and staging prefixes, relative to the lake root.

/// The `events` Delta table, partitioned by `event_date`.
pub const EVENTS_TABLE: &str = "events";
/// The `orders` Delta table: one row per order.
pub const ORDERS_TABLE: &str = "orders";
/// The `visits` Delta table: one row per session (maintained by compaction; the `sessions` view
/// adds the user from `identities`).
pub const VISITS_TABLE: &str = "visits";
/// The `identities` Delta table: one row per link of an anonymous id to a user id (maintained by
/// compaction from the identity events; see `shoplake_batch::identities`).
pub const IDENTITIES_TABLE: &str = "identities";
/// The `bad_rows` Delta table, partitioned by `event_date` (the date received).
pub const BAD_ROWS_TABLE: &str = "bad_rows";
/// The `fraud_decisions` Delta table, partitioned by `event_date`: one row per order_completed
/// event the stage scored.
pub const FRAUD_DECISIONS_TABLE: &str = "fraud_decisions";
/// The `product_affinity` Delta table: per product, its strongest neighbours viewed and bought
/// together over the lake's history (rewritten whole by `shoplake batch affinity`).
pub const PRODUCT_AFFINITY_TABLE: &str = "product_affinity";
/// The `campaign_spend` Delta table: what each campaign cost per day, loaded from the ad
/// platforms' exports (`shoplake load spend`).
pub const CAMPAIGN_SPEND_TABLE: &str = "campaign_spend";
/// The `erasures` Delta table: one row per erasure request (`shoplake erase`), without the
/// person's ids.
pub const ERASURES_TABLE: &str = "erasures";
/// The `rollup_products` Delta table, partitioned by `event_date`: per day and product, what the
/// `products` report sums (kept by compaction; see `shoplake_batch::rollup`).
pub const ROLLUP_PRODUCTS_TABLE: &str = "rollup_products";
/// The `rollup_search` Delta table, partitioned by `event_date`: per day and search query, what
/// the `search` report sums.
pub const ROLLUP_SEARCH_TABLE: &str = "rollup_search";
/// The `rollup_promotions` Delta table, partitioned by `event_date`: per day and promotion, what
/// the `promotions` report sums.
pub const ROLLUP_PROMOTIONS_TABLE: &str = "rollup_promotions";
/// Fraud decisions waiting for compaction (Parquet files).
pub const STAGING_FRAUD_DECISIONS: &str = "_staging/fraud_decisions";
/// Enriched events waiting for compaction (Parquet files).
pub const STAGING_EVENTS: &str = "_staging/events";
/// Bad rows waiting for compaction (Parquet files).
pub const STAGING_BAD_ROWS: &str = "_staging/bad_rows";
/// Staged objects compaction could not read, moved here under their staging path (each is named
/// by a bad row `unreadable_file`), so that one corrupt file never stops compaction.
pub const QUARANTINE: &str = "_quarantine";
/// Every table: those compaction writes, in its order, then the batch jobs' own.
pub const TABLES: &[&str] = &[
    EVENTS_TABLE,
    BAD_ROWS_TABLE,
    ORDERS_TABLE,
    VISITS_TABLE,
    IDENTITIES_TABLE,
    FRAUD_DECISIONS_TABLE,
    ROLLUP_PRODUCTS_TABLE,
    ROLLUP_SEARCH_TABLE,
    ROLLUP_PROMOTIONS_TABLE,
    PRODUCT_AFFINITY_TABLE,
    CAMPAIGN_SPEND_TABLE,
    ERASURES_TABLE,
];
