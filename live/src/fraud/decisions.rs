//! Fraud decisions as rows of the `fraud_decisions` table: the stage stages them beside the
//! events it flushes, and compaction appends them to the Delta table (one row per scored
//! order_completed event, de-duplicated by `event_id` like the events).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Float64Builder, ListBuilder, MapArray, RecordBatch,
    StringArray, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use shoplake_events::schema::{MAP_ENTRIES, MONEY_PRECISION, MONEY_SCALE, features_type};

use crate::Result;
use crate::fraud::Decision;

/// Decisions of one flush, with the received time of the event each was made on.
#[derive(Default)]
pub struct DecisionRows {
    rows: Vec<(Decision, i64)>,
}

impl DecisionRows {
    pub fn push(&mut self, decision: Decision, received_at: i64) {
        self.rows.push((decision, received_at));
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The rows as a batch of the `fraud_decisions` schema, decided at `decided_at` (UTC micros);
    /// the buffer is left empty.
    pub fn finish(&mut self, decided_at: i64) -> Result<RecordBatch> {
        let rows = std::mem::take(&mut self.rows);
        let n = rows.len();
        let mut event_id = StringBuilder::with_capacity(n, n * 36);
        let mut order_id = StringBuilder::new();
        let mut user_id = StringBuilder::new();
        let mut anonymous_id = StringBuilder::new();
        let mut event_time = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut total = Decimal128Builder::with_capacity(n)
            .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)?;
        let mut currency = StringBuilder::new();
        let mut score = Float64Builder::with_capacity(n);
        let mut decision = StringBuilder::new();
        let mut reasons = ListBuilder::new(StringBuilder::new()).with_field(Field::new(
            shoplake_events::schema::LIST_ELEMENT,
            DataType::Utf8,
            true,
        ));
        let mut shadow = ListBuilder::new(StringBuilder::new()).with_field(Field::new(
            shoplake_events::schema::LIST_ELEMENT,
            DataType::Utf8,
            true,
        ));
        let mut rules_version = StringBuilder::new();
        let mut decided = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut event_date = Date32Builder::with_capacity(n);
        // The features map, built as its entries (names, values) and offsets.
        let mut names: Vec<&str> = Vec::new();
        let mut values = Float64Builder::new();
        let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
        offsets.push(0);

        for (d, received_at) in &rows {
            event_id.append_value(&d.event_id);
            // An order scored before it had an id has none.
            order_id.append_option((!d.order_id.is_empty()).then_some(d.order_id.as_str()));
            user_id.append_option(d.user_id.as_deref());
            anonymous_id.append_option(d.anonymous_id.as_deref());
            event_time.append_value(d.event_time);
            received.append_value(*received_at);
            // Money in the lake is decimal: the total's cents.
            total.append_option(
                d.total
                    .filter(|t| t.is_finite())
                    .map(shoplake_events::to_minor_units),
            );
            currency.append_option(d.currency.as_deref());
            score.append_value(d.score);
            decision.append_value(d.verdict.as_str());
            for r in &d.reasons {
                reasons.values().append_value(r);
            }
            reasons.append(true);
            for r in &d.shadow_reasons {
                shadow.values().append_value(r);
            }
            shadow.append(true);
            for (name, v) in &d.features {
                names.push(name);
                values.append_value(*v);
            }
            offsets.push(names.len() as i32);
            rules_version.append_value(&d.rules_version);
            decided.append_value(decided_at);
            event_date.append_value(shoplake_events::codec::date_of(d.event_time));
        }

        let DataType::Map(entries_field, _) = features_type() else {
            unreachable!("features_type() is a map")
        };
        let DataType::Struct(entry_fields) = entries_field.data_type().clone() else {
            unreachable!("a map's entries are a struct")
        };
        debug_assert_eq!(entries_field.name(), MAP_ENTRIES);
        let entries = StructArray::try_new(
            entry_fields,
            vec![
                Arc::new(StringArray::from(names)) as ArrayRef,
                Arc::new(values.finish()),
            ],
            None,
        )?;
        let features = MapArray::try_new(
            entries_field,
            OffsetBuffer::new(offsets.into()),
            entries,
            None,
            false,
        )?;

        let columns: Vec<ArrayRef> = vec![
            Arc::new(event_id.finish()),
            Arc::new(order_id.finish()),
            Arc::new(user_id.finish()),
            Arc::new(anonymous_id.finish()),
            Arc::new(event_time.finish()),
            Arc::new(received.finish()),
            Arc::new(total.finish()),
            Arc::new(currency.finish()),
            Arc::new(score.finish()),
            Arc::new(decision.finish()),
            Arc::new(reasons.finish()),
            Arc::new(shadow.finish()),
            Arc::new(features),
            Arc::new(rules_version.finish()),
            Arc::new(decided.finish()),
            Arc::new(event_date.finish()),
        ];
        Ok(RecordBatch::try_new(
            shoplake_events::fraud_decisions_schema(),
            columns,
        )?)
    }
}
