//! The `visits` table: one row per session (its time span, counts, funnel flags, first-touch
//! source), derived from the session's events by `sql/batch/visits.sql` and kept by compaction
//! ([`crate::derived`]). The `sessions` view of the query service is this table with the user
//! filled in from `identities`, so dashboards read one row per visit instead of grouping every
//! event again (10 million events, 530,000 visits: see BENCHMARKS.md).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use shoplake_events::schema::{money, timestamp};

/// The SQL that derives visits from events.
pub const VISITS_SQL: &str = include_str!("../../sql/batch/visits.sql");

static VISITS: LazyLock<SchemaRef> = LazyLock::new(|| {
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

/// Schema of the `visits` table.
pub fn visits_schema() -> SchemaRef {
    VISITS.clone()
}
