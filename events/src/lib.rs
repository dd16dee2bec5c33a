//! # shoplake-events: the event contract
//!
//! Everything else in shoplake depends on this crate, and it depends on nothing of ours. It owns:
//!
//! - [`EventName`]: the events of an online store, after the Segment e-commerce spec v2, in
//!   snake_case, plus identity and back-office order lifecycle events;
//! - [`wire`]: the JSON an emitter puts on the stream (a common envelope, context and typed
//!   properties; properties outside the contract are kept as JSON);
//! - [`validate`]: the rules that turn each input into a [`ValidEvent`] or a [`Rejection`] with a
//!   typed [`Reason`], the field and a message;
//! - [`schema`] and [`fields`]: the Arrow schemas of the `events` and `bad_rows` tables, and their
//!   column names as constants;
//! - [`codec`]: validated events appended straight into Arrow builders, and batches back into wire
//!   events.
//!
//! Data enters as bytes (one JSON event) and leaves as Arrow `RecordBatch`es.
//!
//! Why these dependencies: `arrow` for the batches; `serde` / `serde_json` (with `raw_value`, to keep
//! unknown properties without re-encoding them) for the wire format; `serde_path_to_error` to name
//! the field of a type error; `chrono` to parse RFC 3339; `uuid` to check event ids.
//!
//! ```
//! use shoplake_events::{decode, Limits, Reason};
//!
//! let raw = br#"{"event_id":"5b0e6f4e-3c1d-4e55-9a70-8f8f7f0a1b2c","event_name":"products_searched",
//!   "occurred_at":"2026-03-01T10:00:00Z","anonymous_id":"a-1","properties":{"query":"red shoes"}}"#;
//! let received = shoplake_events::parse_timestamp("2026-03-01T10:00:01Z").unwrap();
//! let event = decode(raw, received, &Limits::default()).unwrap();
//! assert_eq!(event.name.as_str(), "products_searched");
//!
//! let bad = decode(br#"{"event_id":"5b0e6f4e-3c1d-4e55-9a70-8f8f7f0a1b2c","event_name":"products_searched",
//!   "occurred_at":"2026-03-01T10:00:00Z","anonymous_id":"a-1"}"#, received, &Limits::default()).unwrap_err();
//! assert_eq!(bad.reason, Reason::MissingField);
//! assert_eq!(bad.field.as_deref(), Some("properties.query"));
//! ```

pub mod codec;
pub mod codes;
pub mod erasure;
pub mod fields;
pub mod lake;
mod names;
pub mod schema;
pub mod validate;
pub mod wire;

pub use codec::{BadRow, BadRowBatchBuilder, Enrichment, EventBatchBuilder, events_from_batch};
pub use codes::Currency;
pub use names::EventName;
pub use schema::{bad_rows_schema, events_schema, fraud_decisions_schema, product_affinity_schema};
pub use validate::{
    Limits, Reason, Rejection, SCHEMA_VERSION, ValidEvent, decode, format_timestamp,
    parse_timestamp, to_minor_units,
};
pub use wire::{Event, Str};
