//! The table registry: every Delta table of the lake, described once — its name, schema,
//! partitioning, key, who keeps it, and which of its columns hold personal data.
//!
//! Compaction, optimize, the writer ([`crate::write`]) and the query service read a table's facts
//! from its [`TableDescriptor`] rather than switching on its name. A new table is a descriptor
//! here (and its name constant in `shoplake_events::lake`), added to [`ALL`]; the tests below
//! check that the two lists agree and that every column a descriptor names is in its schema.
//!
//! ## Personal data
//! [`TableDescriptor::personal_columns`] lists the columns that identify a shopper or can carry
//! what identifies one. The query service is to hide them from roles that may not see personal
//! data (marketing), and erasure is to find a person through them. A column is personal when it:
//! - is an identifier the storefront gives to one shopper, their browser or device, a visit, a
//!   cart, a checkout or an order (`user_id`, `anonymous_id`, `device_id`, `session_id`,
//!   `cart_id`, `checkout_id`, `order_id` — an order id names a customer in the shop's order
//!   system), or to their payment card (`card_fingerprint`) or ad click (`gclid`, `fbclid`,
//!   `msclkid`);
//! - locates or fingerprints them on the network (`ip`, `user_agent`);
//! - holds free text or raw input that can carry anything, e-mail addresses included: identify
//!   traits, extra properties, URLs with their query strings (`page_url`, `page_referrer`,
//!   `referrer`), search queries, a bad row's original bytes and its message (which can quote the
//!   input).
//!
//! Ids of messages rather than of people (`event_id`, `bad_row_id`, `linked_by_event_id`), coarse
//! places (countries), products, campaigns and amounts are not personal on their own.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use shoplake_events::fields::{
    ANONYMOUS_ID, BAD_ROW_ID, CARD_FINGERPRINT, CART_ID, CHECKOUT_ID, DEVICE_ID, EVENT_DATE,
    EVENT_ID, EXTRA_PROPERTIES, FBCLID, GCLID, IP, MESSAGE, MSCLKID, ORDER_ID, PAGE_REFERRER,
    PAGE_URL, PRODUCT_ID, RAW, RELATED_PRODUCT_ID, RELATION, SEARCH_QUERY, SESSION_ID, TRAITS,
    USER_AGENT, USER_ID,
};
use shoplake_events::lake::{
    BAD_ROWS_TABLE, CAMPAIGN_SPEND_TABLE, ERASURES_TABLE, EVENTS_TABLE, FRAUD_DECISIONS_TABLE,
    IDENTITIES_TABLE, ORDERS_TABLE, PRODUCT_AFFINITY_TABLE, ROLLUP_PRODUCTS_TABLE,
    ROLLUP_PROMOTIONS_TABLE, ROLLUP_SEARCH_TABLE, STAGING_BAD_ROWS, STAGING_EVENTS,
    STAGING_FRAUD_DECISIONS, VISITS_TABLE,
};
use shoplake_events::schema::{money, timestamp};

use crate::{Error, Result};

/// Who keeps a table's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maintainer {
    /// Compaction appends the rows staged under `staging`, skipping keys the table already holds.
    Compaction { staging: &'static str },
    /// Compaction derives the rows from `events` with the SQL file `sql` and merges them into the
    /// table on its key, for the keys each round touched (filled whole when missing).
    Derived { sql: &'static str },
    /// Compaction computes the rows of each day a round's events fall on again from the lake with
    /// the SQL file `sql`, and replaces that day's rows ([`crate::rollup`]).
    Rollup { sql: &'static str },
    /// A batch job rewrites the whole table: `command`, which `shoplake up` also runs on a
    /// schedule.
    Job { command: &'static str },
    /// Loaded from files the store exports elsewhere, merged on the key: `command`.
    Loaded { command: &'static str },
}

/// One Delta table of the lake.
#[derive(Debug)]
pub struct TableDescriptor {
    /// The table's name, and its folder under the lake root.
    pub name: &'static str,
    /// What a row is, in one line.
    pub description: &'static str,
    schema: fn() -> SchemaRef,
    /// The partition columns (Hive-style folders, `event_date=2026-03-01/`).
    pub partition_columns: &'static [&'static str],
    /// The columns that identify a row: compaction de-duplicates appends on them, and merges
    /// derived rows on them.
    pub key: &'static [&'static str],
    pub maintainer: Maintainer,
    /// The columns holding personal data (see the module docs for what counts).
    pub personal_columns: &'static [&'static str],
    /// The columns written with a bloom filter in every row group: ids that a lookup names and
    /// that min/max statistics cannot skip (see the crate docs' *Layout*).
    pub bloom_filter_columns: &'static [&'static str],
}

impl TableDescriptor {
    /// The table's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        (self.schema)()
    }

    /// The key column of a table keyed by one column: every table compaction appends to or
    /// derives by one key. (For the composite keys of `identities` and `product_affinity`, their
    /// first column; the jobs that keep those tables use [`key`](Self::key).) Every descriptor has
    /// a key, which the tests check, so the index is in bounds.
    pub fn key_column(&self) -> &'static str {
        self.key[0]
    }

    /// Whether `column` holds personal data.
    pub fn is_personal(&self, column: &str) -> bool {
        self.personal_columns.contains(&column)
    }
}

/// The ids every table that has them gets bloom filters on.
const SHOPPER_AND_ORDER_IDS: &[&str] = &[ANONYMOUS_ID, USER_ID, ORDER_ID];

/// `events`: the enriched events, one row per valid event.
pub const EVENTS: TableDescriptor = TableDescriptor {
    name: EVENTS_TABLE,
    description: "Every valid storefront and back-office event, enriched (event time, session, \
                  channel, currency), one row per event.",
    schema: shoplake_events::events_schema,
    partition_columns: &[EVENT_DATE],
    key: &[EVENT_ID],
    maintainer: Maintainer::Compaction {
        staging: STAGING_EVENTS,
    },
    personal_columns: &[
        ANONYMOUS_ID,
        USER_ID,
        SESSION_ID,
        DEVICE_ID,
        IP,
        USER_AGENT,
        PAGE_URL,
        PAGE_REFERRER,
        GCLID,
        FBCLID,
        MSCLKID,
        SEARCH_QUERY,
        ORDER_ID,
        CART_ID,
        CHECKOUT_ID,
        CARD_FINGERPRINT,
        TRAITS,
        EXTRA_PROPERTIES,
    ],
    bloom_filter_columns: SHOPPER_AND_ORDER_IDS,
};

/// `bad_rows`: every input that failed, with its reason and original bytes.
pub const BAD_ROWS: TableDescriptor = TableDescriptor {
    name: BAD_ROWS_TABLE,
    description: "Every input that was refused, with a typed reason and its original bytes, one \
                  row per input.",
    schema: shoplake_events::bad_rows_schema,
    partition_columns: &[EVENT_DATE],
    key: &[BAD_ROW_ID],
    maintainer: Maintainer::Compaction {
        staging: STAGING_BAD_ROWS,
    },
    personal_columns: &[RAW, MESSAGE],
    bloom_filter_columns: &[],
};

/// `orders`: one row per order, from its lifecycle events.
pub const ORDERS: TableDescriptor = TableDescriptor {
    name: ORDERS_TABLE,
    description: "One row per order: its latest status and amounts, from its lifecycle events.",
    schema: || ORDERS_SCHEMA.clone(),
    partition_columns: &[],
    key: &[ORDER_ID],
    maintainer: Maintainer::Derived {
        sql: "sql/batch/orders.sql",
    },
    personal_columns: &[
        ORDER_ID,
        USER_ID,
        ANONYMOUS_ID,
        SESSION_ID,
        CARD_FINGERPRINT,
    ],
    bloom_filter_columns: SHOPPER_AND_ORDER_IDS,
};

/// Schema of `orders` (derived by `sql/batch/orders.sql`).
static ORDERS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
    let ts = |n: &str| Field::new(n, timestamp(), true);
    let m = |n: &str| Field::new(n, money(), true);
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Utf8, false),
        utf8("user_id"),
        utf8("anonymous_id"),
        utf8("session_id"),
        Field::new("status", DataType::Utf8, false),
        ts("placed_at"),
        ts("updated_at"),
        utf8("currency"),
        m("total"),
        m("revenue"),
        m("tax"),
        m("shipping"),
        m("discount"),
        utf8("reporting_currency"),
        m("total_reporting"),
        m("revenue_reporting"),
        Field::new("item_count", DataType::Int64, true),
        utf8("coupon"),
        utf8("payment_method"),
        utf8("card_fingerprint"),
        utf8("billing_country"),
        utf8("shipping_country"),
        utf8("utm_source"),
        utf8("utm_medium"),
        utf8("utm_campaign"),
        utf8("channel"),
        ts("shipped_at"),
        ts("delivered_at"),
        ts("cancelled_at"),
        ts("refunded_at"),
        Field::new("order_date", DataType::Date32, true),
        ts("return_requested_at"),
    ]))
});

/// `visits`: one row per session.
pub const VISITS: TableDescriptor = TableDescriptor {
    name: VISITS_TABLE,
    description: "One row per session: its time span, counts, funnel steps and first-touch \
                  source.",
    schema: || VISITS_SCHEMA.clone(),
    partition_columns: &[],
    key: &[SESSION_ID],
    maintainer: Maintainer::Derived {
        sql: "sql/batch/visits.sql",
    },
    personal_columns: &[SESSION_ID, USER_ID, ANONYMOUS_ID, "referrer"],
    bloom_filter_columns: &[ANONYMOUS_ID, USER_ID],
};

/// Schema of `visits` (derived by `sql/batch/visits.sql`).
static VISITS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
    let count = |n: &str| Field::new(n, DataType::Int64, true);
    let flag = |n: &str| Field::new(n, DataType::Boolean, true);
    Arc::new(Schema::new(vec![
        Field::new("session_id", DataType::Utf8, false),
        utf8("user_id"),
        utf8("anonymous_id"),
        Field::new("session_date", DataType::Date32, true),
        Field::new("started_at", timestamp(), true),
        Field::new("ended_at", timestamp(), true),
        Field::new("duration_seconds", DataType::Float64, true),
        count("events"),
        count("page_views"),
        count("product_views"),
        flag("added_to_cart"),
        flag("started_checkout"),
        count("orders"),
        Field::new("revenue", money(), true),
        utf8("channel"),
        utf8("utm_source"),
        utf8("utm_medium"),
        utf8("utm_campaign"),
        utf8("referrer"),
        utf8("landing_path"),
        utf8("device_type"),
        utf8("country"),
        flag("is_bot"),
        flag("session_inferred"),
    ]))
});

/// `identities`: one row per link of an anonymous id to a user id.
pub const IDENTITIES: TableDescriptor = TableDescriptor {
    name: IDENTITIES_TABLE,
    description: "One row per link of an anonymous id (a browser, a device) to a user id, with \
                  which link is current.",
    schema: || IDENTITIES_SCHEMA.clone(),
    partition_columns: &[],
    key: &[ANONYMOUS_ID, USER_ID],
    maintainer: Maintainer::Derived {
        sql: "sql/batch/identities.sql",
    },
    personal_columns: &[ANONYMOUS_ID, USER_ID],
    bloom_filter_columns: &[ANONYMOUS_ID, USER_ID],
};

/// Schema of `identities` (derived by `sql/batch/identities.sql`).
static IDENTITIES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(ANONYMOUS_ID, DataType::Utf8, false),
        Field::new(USER_ID, DataType::Utf8, false),
        Field::new("first_seen", timestamp(), false),
        Field::new("last_seen", timestamp(), false),
        Field::new("linked_by_event_id", DataType::Utf8, false),
        Field::new("linked_by", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, true),
        Field::new("link_events", DataType::Int64, false),
        Field::new("users_linked", DataType::Int64, false),
        Field::new("is_current", DataType::Boolean, false),
    ]))
});

/// `fraud_decisions`: the streaming stage's decision on every completed order.
pub const FRAUD_DECISIONS: TableDescriptor = TableDescriptor {
    name: FRAUD_DECISIONS_TABLE,
    description: "One row per order_completed event the stage scored: score, decision, reasons, \
                  features and rules version.",
    schema: shoplake_events::fraud_decisions_schema,
    partition_columns: &[EVENT_DATE],
    key: &[EVENT_ID],
    maintainer: Maintainer::Compaction {
        staging: STAGING_FRAUD_DECISIONS,
    },
    personal_columns: &[ORDER_ID, USER_ID, ANONYMOUS_ID],
    bloom_filter_columns: SHOPPER_AND_ORDER_IDS,
};

/// `rollup_products`: per day and product, what the `products` report sums.
pub const ROLLUP_PRODUCTS: TableDescriptor = TableDescriptor {
    name: ROLLUP_PRODUCTS_TABLE,
    description: "Per day and product, non-bot traffic: views, adds to cart, reviews and ratings, \
                  the latest category and brand (rows without order_id); the units and revenue \
                  of each order's lines (rows with order_id).",
    schema: || ROLLUP_PRODUCTS_SCHEMA.clone(),
    partition_columns: &[EVENT_DATE],
    // The grain; a day's rows are replaced together, never merged on a key.
    key: &[EVENT_DATE, PRODUCT_ID],
    maintainer: Maintainer::Rollup {
        sql: "sql/batch/rollup_products.sql",
    },
    personal_columns: &[ORDER_ID],
    bloom_filter_columns: &[],
};

static ROLLUP_PRODUCTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let count = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new(EVENT_DATE, DataType::Date32, false),
        Field::new(PRODUCT_ID, DataType::Utf8, false),
        Field::new(ORDER_ID, DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("brand", DataType::Utf8, true),
        Field::new("last_seen", timestamp(), true),
        count("views"),
        count("adds"),
        count("reviews"),
        count("rated"),
        count("rating_sum"),
        count("units"),
        Field::new("revenue", DataType::Float64, true),
    ]))
});

/// `rollup_search`: per day and search query, what the `search` report sums.
pub const ROLLUP_SEARCH: TableDescriptor = TableDescriptor {
    name: ROLLUP_SEARCH_TABLE,
    description: "Per day and search query, non-bot traffic: searches, with and without a click, \
                  converted (rows without order_id); each order completed after one of them, \
                  with its revenue (rows with order_id).",
    schema: || ROLLUP_SEARCH_SCHEMA.clone(),
    partition_columns: &[EVENT_DATE],
    key: &[EVENT_DATE, "query"],
    maintainer: Maintainer::Rollup {
        sql: "sql/batch/rollup_search.sql",
    },
    // What shoppers typed can carry anything, e-mail addresses included.
    personal_columns: &["query", ORDER_ID],
    bloom_filter_columns: &[],
};

static ROLLUP_SEARCH_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let count = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new(EVENT_DATE, DataType::Date32, false),
        Field::new("query", DataType::Utf8, false),
        Field::new(ORDER_ID, DataType::Utf8, true),
        count("searches"),
        count("clicked"),
        count("without_click"),
        count("converted"),
        Field::new("revenue", money(), true),
    ]))
});

/// `rollup_promotions`: per day and promotion, what the `promotions` report sums.
pub const ROLLUP_PROMOTIONS: TableDescriptor = TableDescriptor {
    name: ROLLUP_PROMOTIONS_TABLE,
    description: "Per day and promotion, non-bot traffic: views, clicks and the latest name \
                  (rows without order_id); each order completed in a session after a click on \
                  it, with its revenue (rows with order_id).",
    schema: || ROLLUP_PROMOTIONS_SCHEMA.clone(),
    partition_columns: &[EVENT_DATE],
    key: &[EVENT_DATE, "promotion_id"],
    maintainer: Maintainer::Rollup {
        sql: "sql/batch/rollup_promotions.sql",
    },
    personal_columns: &[ORDER_ID],
    bloom_filter_columns: &[],
};

static ROLLUP_PROMOTIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let count = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new(EVENT_DATE, DataType::Date32, false),
        Field::new("promotion_id", DataType::Utf8, false),
        Field::new(ORDER_ID, DataType::Utf8, true),
        Field::new("promotion_name", DataType::Utf8, true),
        Field::new("last_seen", timestamp(), true),
        count("views"),
        count("clicks"),
        Field::new("revenue", money(), true),
    ]))
});

/// `product_affinity`: per product, its strongest neighbours over the whole history.
pub const PRODUCT_AFFINITY: TableDescriptor = TableDescriptor {
    name: PRODUCT_AFFINITY_TABLE,
    description: "Per product and relation (viewed or bought together), its strongest \
                  neighbours over the whole history, with the decayed counts behind each score.",
    schema: shoplake_events::product_affinity_schema,
    partition_columns: &[],
    // Rewritten whole, never merged: the key is what makes a row unique.
    key: &[PRODUCT_ID, RELATION, RELATED_PRODUCT_ID],
    maintainer: Maintainer::Job {
        command: "shoplake batch affinity",
    },
    personal_columns: &[],
    bloom_filter_columns: &[],
};

/// `campaign_spend`: what each campaign cost per day ([`crate::spend`]).
pub const CAMPAIGN_SPEND: TableDescriptor = TableDescriptor {
    name: CAMPAIGN_SPEND_TABLE,
    description: "What each campaign cost per day, in its currency and at the rate to the \
                  reporting currency when loaded, as the ad platforms export it.",
    schema: || CAMPAIGN_SPEND_SCHEMA.clone(),
    partition_columns: &[],
    key: &["spend_date", "source", "campaign"],
    maintainer: Maintainer::Loaded {
        command: "shoplake load spend FILE",
    },
    personal_columns: &[],
    bloom_filter_columns: &[],
};

static CAMPAIGN_SPEND_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("spend_date", DataType::Date32, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("medium", DataType::Utf8, true),
        Field::new("campaign", DataType::Utf8, false),
        Field::new("spend", money(), false),
        Field::new("currency", DataType::Utf8, false),
        Field::new(
            shoplake_events::fields::FX_RATE,
            DataType::Decimal128(18, shoplake_events::schema::FX_SCALE),
            true,
        ),
        Field::new("impressions", DataType::Int64, true),
        Field::new("clicks", DataType::Int64, true),
        Field::new("loaded_at", timestamp(), false),
    ]))
});

/// `erasures`: one row per erasure request, once its bytes left storage ([`crate::erase`]).
pub const ERASURES: TableDescriptor = TableDescriptor {
    name: ERASURES_TABLE,
    description: "One row per erasure request (a person's right to be forgotten): when it was \
                  made, what it removed where, and when the person's bytes left storage. It \
                  never holds the person's ids.",
    schema: || ERASURES_SCHEMA.clone(),
    partition_columns: &[],
    key: &["request_id"],
    maintainer: Maintainer::Job {
        command: "shoplake erase",
    },
    personal_columns: &[],
    bloom_filter_columns: &[],
};

static ERASURES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let count = |n: &str| Field::new(n, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("requested_at", timestamp(), false),
        // `user_id`, `anonymous_id` or both: what the request named.
        Field::new("subject", DataType::Utf8, false),
        count("ids_found"),
        // Per table, the rows deleted (a JSON object).
        Field::new("rows_deleted", DataType::Utf8, false),
        count("staged_rows_dropped"),
        count("raw_archive_records"),
        count("quarantine_objects_deleted"),
        count("stream_records"),
        count("state_entries"),
        count("files_removed"),
        count("bytes_rewritten"),
        // Empty until the request's VACUUM has deleted the person's files.
        Field::new("bytes_gone_at", timestamp(), true),
    ]))
});

/// Every table, in the order of `shoplake_events::lake::TABLES`: those compaction writes, then
/// the batch jobs' own.
pub const ALL: [&TableDescriptor; 12] = [
    &EVENTS,
    &BAD_ROWS,
    &ORDERS,
    &VISITS,
    &IDENTITIES,
    &FRAUD_DECISIONS,
    &ROLLUP_PRODUCTS,
    &ROLLUP_SEARCH,
    &ROLLUP_PROMOTIONS,
    &PRODUCT_AFFINITY,
    &CAMPAIGN_SPEND,
    &ERASURES,
];

/// The table named `name`; an error naming it when the lake has no such table.
pub fn get(name: &str) -> Result<&'static TableDescriptor> {
    ALL.into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::UnknownTable {
            table: name.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_holds_every_table_name_once_in_the_contracts_order() {
        let names: Vec<&str> = ALL.iter().map(|t| t.name).collect();
        assert_eq!(names, shoplake_events::lake::TABLES);
        for name in shoplake_events::lake::TABLES {
            assert_eq!(get(name).unwrap().name, *name);
        }
        let e = get("customers").unwrap_err();
        assert!(
            matches!(&e, Error::UnknownTable { table } if table == "customers"),
            "{e}"
        );
        assert!(e.to_string().contains("customers"), "{e}");
    }

    #[test]
    fn every_column_a_descriptor_names_is_in_its_schema() {
        for table in ALL {
            let schema = table.schema();
            let named = [
                ("partition", table.partition_columns),
                ("key", table.key),
                ("personal", table.personal_columns),
                ("bloom filter", table.bloom_filter_columns),
            ];
            for (kind, columns) in named {
                for column in columns {
                    assert!(
                        schema.column_with_name(column).is_some(),
                        "{kind} column {column} is not in {}'s schema",
                        table.name
                    );
                }
            }
            assert!(!table.key.is_empty(), "{} has no key", table.name);
            if matches!(table.maintainer, Maintainer::Compaction { .. })
                || table.name != IDENTITIES_TABLE
                    && matches!(table.maintainer, Maintainer::Derived { .. })
            {
                assert_eq!(
                    table.key.len(),
                    1,
                    "{} is kept by one key column",
                    table.name
                );
            }
            for column in table.key.iter().chain(table.partition_columns) {
                assert!(
                    !schema.field_with_name(column).unwrap().is_nullable(),
                    "{}.{column} is a key or partition column and may be null",
                    table.name
                );
            }
        }
    }

    #[test]
    fn compaction_tables_are_the_staged_ones_and_partitioned_by_day() {
        for table in ALL {
            if let Maintainer::Compaction { staging } = table.maintainer {
                assert!(staging.starts_with("_staging/"), "{staging}");
                assert_eq!(table.partition_columns, [EVENT_DATE], "{}", table.name);
            }
        }
    }

    #[test]
    fn shopper_ids_are_personal_wherever_they_are() {
        for table in ALL {
            for field in table.schema().fields() {
                let name = field.name().as_str();
                if [ANONYMOUS_ID, USER_ID, IP, USER_AGENT, RAW].contains(&name) {
                    assert!(table.is_personal(name), "{}.{name}", table.name);
                }
            }
        }
    }
}
