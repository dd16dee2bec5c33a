//! Arrow schemas of the lake tables owned by the contract: `events`, `bad_rows` and
//! `fraud_decisions`.
//!
//! Money is `Decimal128(18, 2)` in the event's currency, with the currency code beside it; times are
//! UTC microsecond timestamps; `event_date` (the date of the corrected event time) partitions the
//! table.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::fields::*;

/// Precision and scale of every money column.
pub const MONEY_PRECISION: u8 = 18;
pub const MONEY_SCALE: i8 = 2;
/// Scale of `fx_rate` (units of reporting currency per unit of the event's currency).
pub const FX_SCALE: i8 = 8;

/// The money type: `Decimal128(18, 2)`.
pub fn money() -> DataType {
    DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE)
}

/// The timestamp type of every time column: microseconds, UTC.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Name of the list element field (the Parquet / Delta convention).
pub const LIST_ELEMENT: &str = "element";

/// The fields of one product in the `products` list.
pub fn product_fields() -> Fields {
    Fields::from(vec![
        Field::new(PRODUCT_ID, DataType::Utf8, true),
        Field::new(SKU, DataType::Utf8, true),
        Field::new(PRODUCT_NAME, DataType::Utf8, true),
        Field::new(CATEGORY, DataType::Utf8, true),
        Field::new(BRAND, DataType::Utf8, true),
        Field::new(VARIANT, DataType::Utf8, true),
        Field::new(PRICE, money(), true),
        Field::new(QUANTITY, DataType::Int32, true),
        Field::new(POSITION, DataType::Int32, true),
        Field::new(COUPON, DataType::Utf8, true),
    ])
}

/// The `products` column type.
pub fn products_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        LIST_ELEMENT,
        DataType::Struct(product_fields()),
        true,
    )))
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, true);
    let m = |name: &str| Field::new(name, money(), true);
    Arc::new(Schema::new(vec![
        Field::new(EVENT_ID, DataType::Utf8, false),
        Field::new(EVENT_NAME, DataType::Utf8, false),
        utf8(CUSTOM_EVENT_NAME),
        Field::new(SCHEMA_VERSION, DataType::Int32, false),
        Field::new(EVENT_TIME, timestamp(), false),
        Field::new(OCCURRED_AT, timestamp(), false),
        Field::new(SENT_AT, timestamp(), true),
        Field::new(RECEIVED_AT, timestamp(), false),
        Field::new(CLOCK_SKEW_MS, DataType::Int64, false),
        utf8(ANONYMOUS_ID),
        utf8(USER_ID),
        Field::new(SESSION_ID, DataType::Utf8, false),
        Field::new(SESSION_INFERRED, DataType::Boolean, false),
        utf8(PAGE_URL),
        utf8(PAGE_PATH),
        utf8(PAGE_REFERRER),
        utf8(PAGE_TITLE),
        utf8(UTM_SOURCE),
        utf8(UTM_MEDIUM),
        utf8(UTM_CAMPAIGN),
        utf8(UTM_TERM),
        utf8(UTM_CONTENT),
        utf8(GCLID),
        utf8(FBCLID),
        utf8(MSCLKID),
        Field::new(CHANNEL, DataType::Utf8, false),
        utf8(USER_AGENT),
        utf8(IP),
        utf8(LOCALE),
        utf8(COUNTRY),
        utf8(DEVICE_TYPE),
        utf8(BROWSER),
        utf8(OS),
        utf8(DEVICE_ID),
        utf8(SOURCE),
        Field::new(IS_BOT, DataType::Boolean, false),
        Field::new(PRODUCTS, products_type(), true),
        utf8(PRODUCT_ID),
        utf8(ORDER_ID),
        utf8(CART_ID),
        utf8(CHECKOUT_ID),
        Field::new(CHECKOUT_STEP, DataType::Int32, true),
        m(TOTAL),
        m(REVENUE),
        m(TAX),
        m(SHIPPING),
        m(DISCOUNT),
        utf8(CURRENCY),
        Field::new(REPORTING_CURRENCY, DataType::Utf8, false),
        Field::new(FX_RATE, DataType::Decimal128(18, FX_SCALE), true),
        m(TOTAL_REPORTING),
        m(REVENUE_REPORTING),
        utf8(COUPON),
        utf8(PAYMENT_METHOD),
        utf8(CARD_FINGERPRINT),
        utf8(BILLING_COUNTRY),
        utf8(SHIPPING_COUNTRY),
        utf8(SEARCH_QUERY),
        utf8(LIST_ID),
        utf8(LIST_CATEGORY),
        utf8(PROMOTION_ID),
        utf8(PROMOTION_NAME),
        utf8(CREATIVE),
        Field::new(RATING, DataType::Int32, true),
        utf8(REASON),
        utf8(CARRIER),
        utf8(TRAITS),
        utf8(EXTRA_PROPERTIES),
        Field::new(STREAM_SHARD, DataType::Utf8, false),
        Field::new(STREAM_SEQUENCE, DataType::Utf8, false),
        Field::new(EVENT_DATE, DataType::Date32, false),
    ]))
});

/// Schema of the `events` table (and of the staged Parquet files it is compacted from).
pub fn events_schema() -> SchemaRef {
    EVENTS.clone()
}

static BAD_ROWS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(BAD_ROW_ID, DataType::Utf8, false),
        Field::new(RECEIVED_AT, timestamp(), false),
        Field::new(STAGE, DataType::Utf8, false),
        Field::new(REASON, DataType::Utf8, false),
        Field::new(FIELD, DataType::Utf8, true),
        Field::new(MESSAGE, DataType::Utf8, false),
        Field::new(EVENT_ID, DataType::Utf8, true),
        Field::new(EVENT_NAME, DataType::Utf8, true),
        Field::new(RAW, DataType::Binary, false),
        Field::new(STREAM_SHARD, DataType::Utf8, false),
        Field::new(STREAM_SEQUENCE, DataType::Utf8, false),
        Field::new(EVENT_DATE, DataType::Date32, false),
    ]))
});

/// Schema of the `bad_rows` table: each input that failed, with its reason and original bytes.
pub fn bad_rows_schema() -> SchemaRef {
    BAD_ROWS.clone()
}

/// Names of a map column's entries, as Parquet and Delta write them (`key_value`, `key`, `value`).
pub const MAP_ENTRIES: &str = "key_value";
pub const MAP_KEY: &str = "key";
pub const MAP_VALUE: &str = "value";

/// The type of `features`: feature name → value.
pub fn features_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            MAP_ENTRIES,
            DataType::Struct(Fields::from(vec![
                Field::new(MAP_KEY, DataType::Utf8, false),
                Field::new(MAP_VALUE, DataType::Float64, true),
            ])),
            false,
        )),
        false,
    )
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new(LIST_ELEMENT, DataType::Utf8, true)))
}

static FRAUD_DECISIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // The order_completed event decided on (the key: one decision per event).
        Field::new(EVENT_ID, DataType::Utf8, false),
        Field::new(ORDER_ID, DataType::Utf8, true),
        Field::new(USER_ID, DataType::Utf8, true),
        Field::new(ANONYMOUS_ID, DataType::Utf8, true),
        Field::new(EVENT_TIME, timestamp(), false),
        Field::new(RECEIVED_AT, timestamp(), false),
        Field::new(TOTAL, money(), true),
        Field::new(CURRENCY, DataType::Utf8, true),
        Field::new(SCORE, DataType::Float64, false),
        // allow | review | block
        Field::new(DECISION, DataType::Utf8, false),
        Field::new(REASONS, text_list(), false),
        Field::new(SHADOW_REASONS, text_list(), false),
        Field::new(FEATURES, features_type(), false),
        Field::new(RULES_VERSION, DataType::Utf8, false),
        // When the stage decided (processing time).
        Field::new(DECIDED_AT, timestamp(), false),
        Field::new(EVENT_DATE, DataType::Date32, false),
    ]))
});

/// Schema of the `fraud_decisions` table: the streaming stage's decision on every order, with the
/// score, the reasons, every feature's value and the version of the rules that decided.
pub fn fraud_decisions_schema() -> SchemaRef {
    FRAUD_DECISIONS.clone()
}

static PRODUCT_AFFINITY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(PRODUCT_ID, DataType::Utf8, false),
        Field::new(RELATED_PRODUCT_ID, DataType::Utf8, false),
        // viewed_together | bought_together (the live recommendations' reasons)
        Field::new(RELATION, DataType::Utf8, false),
        // Sessions (viewed) or orders (bought) with both products, decayed to `as_of`.
        Field::new(TOGETHER, DataType::Float64, false),
        // Sessions or orders with the product, with the related product, and in all; decayed.
        Field::new(PRODUCT_COUNT, DataType::Float64, false),
        Field::new(RELATED_COUNT, DataType::Float64, false),
        Field::new(RELATION_TOTAL, DataType::Float64, false),
        // together / sqrt(product_count · related_count), shrunk by evidence.
        Field::new(SCORE, DataType::Float64, false),
        // 1 = the product's strongest neighbour of this relation.
        Field::new(RANK, DataType::Int32, false),
        // The latest event time counted, the half-life of the decay, and when the job ran.
        Field::new(AS_OF, timestamp(), false),
        Field::new(HALF_LIFE_HOURS, DataType::Float64, false),
        Field::new(COMPUTED_AT, timestamp(), false),
    ]))
});

/// Schema of the `product_affinity` table: per product, its strongest neighbours viewed together
/// in a session and bought together in an order over the lake's whole history, with the decayed
/// counts behind each score (written by `shoplake_batch::affinity`; seeds the live
/// recommendations on a cold start).
pub fn product_affinity_schema() -> SchemaRef {
    PRODUCT_AFFINITY.clone()
}
