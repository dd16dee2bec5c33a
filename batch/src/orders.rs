//! The `orders` table: its schema, and its rebuild from the events table.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use shoplake_events::schema::{money, timestamp};

/// The SQL that derives orders from events.
pub const ORDERS_SQL: &str = include_str!("../../sql/batch/orders.sql");

static ORDERS: LazyLock<SchemaRef> = LazyLock::new(|| {
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
    ]))
});

/// Schema of the `orders` table.
pub fn orders_schema() -> SchemaRef {
    ORDERS.clone()
}
