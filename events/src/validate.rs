//! Validation: every input becomes either a [`ValidEvent`] or a [`Rejection`] with a typed reason.
//!
//! The rules, per field and per event type, are listed on [`decode`]. Each rule has a test in this
//! module that checks the reason and field it reports.

use std::fmt;

use chrono::DateTime;
use serde::Serialize;

use crate::EventName;
use crate::codes::{is_country, is_currency};
use crate::wire::keys::GROUP_ID;
use crate::wire::{Context, Event, Product, Properties, Str};

/// The contract version this code writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Limits applied to every input. [`Limits::default`] holds the documented values.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted event, in bytes of JSON (Segment's limit is 32 KiB).
    pub max_event_bytes: usize,
    /// Longest id (event, user, anonymous, session, order, product …).
    pub max_id_len: usize,
    /// Longest free text (urls, titles, user agents, search queries).
    pub max_text_len: usize,
    /// Most products in one event.
    pub max_products: usize,
    /// Largest amount in major units.
    pub max_amount: f64,
    /// Largest quantity of one product.
    pub max_quantity: i64,
    /// How late an event may arrive (corrected event time before received_at), in microseconds.
    pub max_lateness_micros: i64,
    /// How far after received_at the corrected event time may be, in microseconds.
    pub max_future_micros: i64,
    /// How far a payload's own `received_at` may be after the time the record reached the
    /// stream, in microseconds (clock skew between a collector and the stream). The stage's
    /// de-duplication window and sessions expire by the latest received_at: one record stamped
    /// in 2099 would otherwise empty them, and keep doing so after every restart.
    pub max_received_ahead_micros: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 32 * 1024,
            max_id_len: 128,
            max_text_len: 4096,
            max_products: 250,
            max_amount: 10_000_000_000.0,
            max_quantity: 10_000,
            max_lateness_micros: 30 * MICROS_PER_DAY,
            max_future_micros: MICROS_PER_DAY,
            max_received_ahead_micros: 5 * 60 * 1_000_000,
        }
    }
}

/// Why an input was rejected. The string form is stored in `bad_rows.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// Not JSON, or not UTF-8.
    MalformedJson,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field the event type requires is absent.
    MissingField,
    /// `event_name` is not in the contract.
    UnknownEvent,
    /// `schema_version` is not one this build reads.
    UnsupportedSchemaVersion,
    /// An id is empty, too long, holds a control or bidirectional character, or (event_id) is
    /// not a UUID.
    InvalidId,
    /// Not an ISO 4217 currency code.
    InvalidCurrency,
    /// Not an ISO 3166-1 alpha-2 country code.
    InvalidCountry,
    /// A number outside its range (amounts, quantities, ratings, steps).
    OutOfRange,
    /// A timestamp that does not parse as RFC 3339.
    InvalidTimestamp,
    /// A timestamp absurdly far in the past or future.
    TimestampOutOfRange,
    /// The event, a string or a list is larger than its limit.
    TooLarge,
    /// A staged object compaction cannot read (truncated or corrupt Parquet or gzip). It is
    /// moved under `_quarantine/`, and its bad row names it and says why.
    UnreadableFile,
    /// Decoding or validating the record panicked (a bug of ours, not of the input's sender).
    /// The record is kept with its bytes, so it can be replayed once the bug is fixed, and the
    /// stage goes on instead of crash-looping at its checkpoint.
    Internal,
    /// An event id admitted before with a different payload (another name, person, time or
    /// properties): the first copy is the event, this one is kept with its bytes rather than
    /// silently dropped. A sender reusing ids, or a bug in one, shows here.
    ConflictingDuplicate,
}

impl Reason {
    /// The stable code stored in the lake.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::WrongType => "wrong_type",
            Reason::MissingField => "missing_field",
            Reason::UnknownEvent => "unknown_event",
            Reason::UnsupportedSchemaVersion => "unsupported_schema_version",
            Reason::InvalidId => "invalid_id",
            Reason::InvalidCurrency => "invalid_currency",
            Reason::InvalidCountry => "invalid_country",
            Reason::OutOfRange => "out_of_range",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::TimestampOutOfRange => "timestamp_out_of_range",
            Reason::TooLarge => "too_large",
            Reason::UnreadableFile => "unreadable_file",
            Reason::Internal => "internal",
            Reason::ConflictingDuplicate => "conflicting_duplicate",
        }
    }

    /// Every reason, for metrics and docs.
    pub const ALL: &'static [Reason] = &[
        Reason::MalformedJson,
        Reason::WrongType,
        Reason::MissingField,
        Reason::UnknownEvent,
        Reason::UnsupportedSchemaVersion,
        Reason::InvalidId,
        Reason::InvalidCurrency,
        Reason::InvalidCountry,
        Reason::OutOfRange,
        Reason::InvalidTimestamp,
        Reason::TimestampOutOfRange,
        Reason::TooLarge,
        Reason::UnreadableFile,
        Reason::Internal,
        Reason::ConflictingDuplicate,
    ];
}

/// Characters an id may not hold: control characters (C0 with NUL, DEL, C1) and the Unicode
/// bidirectional formatting characters (marks, embeddings, overrides, isolates).
fn unprintable_in_id(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An input that is not a valid event: what is wrong, where, and what could be read of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// Dotted path of the offending field (`properties.products[0].price`), when there is one.
    pub field: Option<String>,
    /// A sentence for the person reading `bad_rows`, with the offending value.
    pub message: String,
    /// The event's id and name, when they could be read.
    pub event_id: Option<String>,
    pub event_name: Option<String>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} at {}: {}", self.reason, field, self.message),
            None => write!(f, "{}: {}", self.reason, self.message),
        }
    }
}

/// A decoded event that passed every rule, with its parsed times.
#[derive(Clone, Debug)]
pub struct ValidEvent<'a> {
    pub event: Event<'a>,
    pub name: EventName,
    pub schema_version: i32,
    /// Device time of the event, UTC micros.
    pub occurred_at: i64,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    /// `received_at − (sent_at − occurred_at)`: the event time on the server's clock; `occurred_at`
    /// when the device did not say when it sent the event.
    pub event_time: i64,
    /// Device clock minus server clock (`sent_at − received_at`), in milliseconds; 0 without sent_at.
    pub clock_skew_ms: i64,
}

impl ValidEvent<'_> {
    /// The event id (validated present).
    pub fn event_id(&self) -> &str {
        self.event.event_id.as_deref().unwrap_or_default()
    }

    /// A 64-bit hash of what the event says: its name, who (user, anonymous and session ids),
    /// when it happened on the device, its properties and traits. Not how it travelled: `sent_at`,
    /// `received_at` and the context (IP address, user agent, library) may change when a client
    /// retries through another network or proxy, so a retry keeps its fingerprint and a different
    /// event under a reused id does not. Never 0 (0 stands for "not known").
    pub fn fingerprint(&self) -> u64 {
        let e = &self.event;
        let mut hasher = HashWriter(twox_hash::XxHash64::with_seed(0));
        // Serializing into a hasher cannot fail (the writer never does, every field is a string,
        // number or JSON already checked); a failure would only weaken the hash, not lose data.
        let _ = serde_json::to_writer(
            &mut hasher,
            &(
                &e.event_name,
                &e.custom_event_name,
                self.occurred_at,
                &e.anonymous_id,
                &e.user_id,
                &e.session_id,
                &e.properties,
                &e.traits,
            ),
        );
        std::hash::Hasher::finish(&hasher.0).max(1)
    }
}

/// Feeds serialized bytes to a hasher without building the string.
struct HashWriter(twox_hash::XxHash64);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::hash::Hasher::write(&mut self.0, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses an RFC 3339 timestamp into UTC microseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Formats UTC microseconds as RFC 3339 with microsecond precision and a `Z`.
pub fn format_timestamp(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        None => micros.to_string(),
    }
}

/// Converts an amount in major units to minor units (cents) of a `Decimal128(18, 2)`.
pub fn to_minor_units(amount: f64) -> i128 {
    (amount * 100.0).round() as i128
}

/// Decodes and validates one input.
///
/// `received_fallback` (UTC micros) is used as `received_at` when the input has none (the stream's
/// arrival time). Rules:
/// - size ≤ `max_event_bytes` (`too_large`); valid UTF-8 JSON object (`malformed_json`); JSON types
///   as in [`crate::wire`] (`wrong_type`, with the field path);
/// - `event_id` present and a UUID; `event_name` in the contract; `schema_version` absent or 1;
///   `occurred_at` present; `anonymous_id` or `user_id` present; ids ≤ `max_id_len` characters;
/// - timestamps RFC 3339; `sent_at` not before `occurred_at` (1 s tolerance) nor more than
///   `max_lateness` after it; the corrected event time within [received − max_lateness,
///   received + max_future];
/// - currency ISO 4217 (and required when an amount is present), countries ISO 3166-1 alpha-2;
///   amounts and prices finite, ≥ 0, ≤ `max_amount`; quantity 1..=max_quantity (0..2^31 on
///   `custom` events, where it may be a stock level); rating 1..=5;
///   checkout_step 1..=100; ≤ `max_products` products;
/// - per event type: single-product events need one product with `product_id`; product_added /
///   removed need a quantity; products_searched needs `query`; product_list_viewed needs `list_id`
///   or `category`; checkout_started and order_completed need products, `total` and `currency`;
///   checkout_step_completed needs `checkout_step`; payment_info_entered needs `payment_method`;
///   order lifecycle events need `order_id`; coupon_applied needs `coupon`; promotion events need
///   `promotion_id`; product_reviewed needs `rating`; signed_up, logged_in and identify need
///   `user_id`; page_viewed needs a page url or path; alias needs `user_id` and `anonymous_id`;
///   group needs a string `properties.group_id`; custom needs `custom_event_name` (1 to
///   `max_id_len` characters).
pub fn decode<'a>(
    raw: &'a [u8],
    received_fallback: i64,
    limits: &Limits,
) -> Result<ValidEvent<'a>, Rejection> {
    if raw.len() > limits.max_event_bytes {
        return Err(Rejection {
            reason: Reason::TooLarge,
            field: None,
            message: format!(
                "event is {} bytes, the limit is {} bytes",
                raw.len(),
                limits.max_event_bytes
            ),
            event_id: None,
            event_name: None,
        });
    }
    // Derived deserializers also accept a JSON array (fields by position): only objects are events.
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let reason = match serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
            Ok(_) => Reason::WrongType,
            Err(_) => Reason::MalformedJson,
        };
        return Err(Rejection {
            reason,
            field: None,
            message: "an event must be a JSON object".to_owned(),
            event_id: None,
            event_name: None,
        });
    }
    // One UTF-8 check of the whole event is cheaper than serde_json's check of each string it
    // borrows; bytes that are not UTF-8 take the checked path, which says where they are.
    let parsed = match std::str::from_utf8(raw) {
        Ok(text) => serde_json::from_str::<Event<'a>>(text),
        Err(_) => serde_json::from_slice::<Event<'a>>(raw),
    };
    let event = match parsed {
        Ok(event) => event,
        Err(_) => return Err(explain_parse_error(raw)),
    };
    Checker {
        limits,
        event_id: None,
        event_name: None,
    }
    .check(event, received_fallback)
}

/// Re-parses a failed input while tracking the path, to say which field is wrong.
fn explain_parse_error(raw: &[u8]) -> Rejection {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let result: Result<Event<'_>, _> = serde_path_to_error::deserialize(&mut de);
    let (reason, field, message) = match result {
        Ok(_) => (
            Reason::MalformedJson,
            None,
            "trailing characters after the event".to_owned(),
        ),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let reason = match inner.classify() {
                serde_json::error::Category::Data => Reason::WrongType,
                _ => Reason::MalformedJson,
            };
            let field = (reason == Reason::WrongType && path != ".").then_some(path);
            (reason, field, inner.to_string())
        }
    };
    Rejection {
        reason,
        field,
        message,
        event_id: None,
        event_name: None,
    }
}

/// `properties.products[i].name`, as a rejection names it.
struct ProductField {
    i: usize,
    name: &'static str,
}

impl fmt::Display for ProductField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "properties.products[{}].{}", self.i, self.name)
    }
}

struct Checker<'l> {
    limits: &'l Limits,
    event_id: Option<String>,
    event_name: Option<String>,
}

impl Checker<'_> {
    fn reject(
        &self,
        reason: Reason,
        field: &(impl fmt::Display + ?Sized),
        message: String,
    ) -> Rejection {
        Rejection {
            reason,
            field: Some(field.to_string()),
            message,
            event_id: self.event_id.clone(),
            event_name: self.event_name.clone(),
        }
    }

    fn missing(&self, field: &str, why: &str) -> Rejection {
        self.reject(
            Reason::MissingField,
            field,
            format!("{field} is required {why}"),
        )
    }

    fn id(
        &self,
        field: &(impl fmt::Display + ?Sized),
        value: Option<&Str<'_>>,
    ) -> Result<(), Rejection> {
        if let Some(v) = value
            && (v.is_empty() || v.chars().count() > self.limits.max_id_len)
        {
            return Err(self.reject(
                Reason::InvalidId,
                field,
                format!(
                    "{field} must have 1 to {} characters, got {}",
                    self.limits.max_id_len,
                    v.chars().count()
                ),
            ));
        }
        // An id is joined on, grouped by and shown in reports and terminals: a NUL, a newline or
        // a bidirectional override in it would split one shopper in two or disguise what a page
        // or a log line shows.
        if let Some(v) = value
            && let Some((at, c)) = v.chars().enumerate().find(|(_, c)| unprintable_in_id(*c))
        {
            return Err(self.reject(
                Reason::InvalidId,
                field,
                format!(
                    "{field} holds the control or bidirectional character U+{:04X} at character {}",
                    u32::from(c),
                    at + 1
                ),
            ));
        }
        Ok(())
    }

    fn text(
        &self,
        field: &(impl fmt::Display + ?Sized),
        value: Option<&Str<'_>>,
    ) -> Result<(), Rejection> {
        if let Some(v) = value
            && v.len() > self.limits.max_text_len
        {
            return Err(self.reject(
                Reason::TooLarge,
                field,
                format!(
                    "{field} is {} bytes, the limit is {}",
                    v.len(),
                    self.limits.max_text_len
                ),
            ));
        }
        Ok(())
    }

    fn timestamp(&self, field: &str, value: &str) -> Result<i64, Rejection> {
        parse_timestamp(value).ok_or_else(|| {
            self.reject(
                Reason::InvalidTimestamp,
                field,
                format!("{field} {value:?} is not an RFC 3339 timestamp"),
            )
        })
    }

    fn amount(
        &self,
        field: &(impl fmt::Display + ?Sized),
        value: Option<f64>,
    ) -> Result<(), Rejection> {
        if let Some(v) = value
            && (!v.is_finite() || v < 0.0 || v > self.limits.max_amount)
        {
            return Err(self.reject(
                Reason::OutOfRange,
                field,
                format!(
                    "{field} must be between 0 and {}, got {v}",
                    self.limits.max_amount
                ),
            ));
        }
        Ok(())
    }

    fn range(
        &self,
        field: &(impl fmt::Display + ?Sized),
        value: Option<i64>,
        min: i64,
        max: i64,
    ) -> Result<(), Rejection> {
        if let Some(v) = value
            && (v < min || v > max)
        {
            return Err(self.reject(
                Reason::OutOfRange,
                field,
                format!("{field} must be between {min} and {max}, got {v}"),
            ));
        }
        Ok(())
    }

    fn country(&self, field: &str, value: Option<&Str<'_>>) -> Result<(), Rejection> {
        if let Some(v) = value
            && !is_country(v)
        {
            return Err(self.reject(
                Reason::InvalidCountry,
                field,
                format!(
                    "{field} {:?} is not an ISO 3166-1 alpha-2 code such as \"DE\"",
                    &**v
                ),
            ));
        }
        Ok(())
    }

    /// One product. On a `custom` event a quantity may be a stock level (an "Inventory Updated"
    /// event that says a product ran out): 0 and up to 2^31 − 1 are accepted there.
    fn product(&self, i: usize, p: &Product<'_>, custom: bool) -> Result<(), Rejection> {
        // The path is formatted only into a rejection.
        let f = |name| ProductField { i, name };
        self.id(&f("product_id"), p.product_id.as_ref())?;
        self.id(&f("sku"), p.sku.as_ref())?;
        for (name, v) in [
            ("name", &p.name),
            ("category", &p.category),
            ("brand", &p.brand),
            ("variant", &p.variant),
            ("coupon", &p.coupon),
        ] {
            self.text(&f(name), v.as_ref())?;
        }
        self.amount(&f("price"), p.price)?;
        let (least, most) = if custom {
            (0, i64::from(i32::MAX))
        } else {
            (1, self.limits.max_quantity)
        };
        self.range(&f("quantity"), p.quantity, least, most)?;
        self.range(&f("position"), p.position, 0, 1_000_000)?;
        Ok(())
    }

    fn check<'a>(
        mut self,
        event: Event<'a>,
        received_fallback: i64,
    ) -> Result<ValidEvent<'a>, Rejection> {
        self.event_id = event.event_id.as_ref().map(|s| s.to_string());
        self.event_name = event.event_name.as_ref().map(|s| s.to_string());
        let (name, schema_version) = self.envelope(&event)?;
        let times = self.times(&event, received_fallback)?;
        self.context(event.context.as_ref())?;
        let empty = Default::default();
        let p = event.properties.as_ref().unwrap_or(&empty);
        let products = p.products.as_deref().unwrap_or_default();
        self.properties(name, p, products)?;
        self.per_event_type(name, &event, p, products)?;
        Ok(ValidEvent {
            event,
            name,
            schema_version,
            occurred_at: times.occurred_at,
            sent_at: times.sent_at,
            received_at: times.received_at,
            event_time: times.event_time,
            clock_skew_ms: times.clock_skew_ms,
        })
    }

    /// The envelope: id, name, schema version, who (anonymous id / user id) and the ids the
    /// event's name requires.
    fn envelope(&self, event: &Event<'_>) -> Result<(EventName, i32), Rejection> {
        let Some(event_id) = &event.event_id else {
            return Err(self.missing("event_id", "on every event"));
        };
        if uuid::Uuid::try_parse(event_id).is_err() {
            return Err(self.reject(
                Reason::InvalidId,
                "event_id",
                format!("event_id {:?} is not a UUID", truncate(event_id)),
            ));
        }
        let Some(name) = &event.event_name else {
            return Err(self.missing("event_name", "on every event"));
        };
        let Ok(name) = name.parse::<EventName>() else {
            return Err(self.reject(
                Reason::UnknownEvent,
                "event_name",
                format!(
                    "event_name {:?} is not an event of the contract",
                    truncate(name)
                ),
            ));
        };
        let schema_version = match event.schema_version {
            None => SCHEMA_VERSION,
            Some(v) if v == i64::from(SCHEMA_VERSION) => SCHEMA_VERSION,
            Some(v) => {
                return Err(self.reject(
                    Reason::UnsupportedSchemaVersion,
                    "schema_version",
                    format!(
                        "schema_version {v} is not supported; this build reads {SCHEMA_VERSION}"
                    ),
                ));
            }
        };
        if event.anonymous_id.is_none() && event.user_id.is_none() {
            return Err(self.missing("anonymous_id", "when user_id is absent"));
        }
        self.id("anonymous_id", event.anonymous_id.as_ref())?;
        self.id("user_id", event.user_id.as_ref())?;
        self.id("session_id", event.session_id.as_ref())?;
        if name.requires_user_id() && event.user_id.is_none() {
            return Err(self.missing("user_id", &format!("on {name}")));
        }
        if name == EventName::Alias && event.anonymous_id.is_none() {
            return Err(self.missing("anonymous_id", "on alias (the id being linked to user_id)"));
        }
        if name == EventName::Custom {
            let Some(custom) = &event.custom_event_name else {
                return Err(self.missing("custom_event_name", "on custom"));
            };
            self.id("custom_event_name", Some(custom))?;
        }

        Ok((name, schema_version))
    }

    /// The times: occurred_at, sent_at and received_at read, and the event time on the server's
    /// clock (corrected by the device's clock skew) within the lateness rules.
    fn times(&self, event: &Event<'_>, received_fallback: i64) -> Result<Times, Rejection> {
        let Some(occurred) = &event.occurred_at else {
            return Err(self.missing("occurred_at", "on every event"));
        };
        let occurred_at = self.timestamp("occurred_at", occurred)?;
        let sent_at = event
            .sent_at
            .as_ref()
            .map(|s| self.timestamp("sent_at", s))
            .transpose()?;
        let received_at = match &event.received_at {
            Some(s) => self.timestamp("received_at", s)?,
            None => received_fallback,
        };
        // A payload's received_at is an earlier stamp of the same arrival (the collector's, or a
        // replay's): it may be long before the stream got the record, never much after.
        if received_at > received_fallback.saturating_add(self.limits.max_received_ahead_micros) {
            return Err(self.reject(
                Reason::TimestampOutOfRange,
                "received_at",
                format!(
                    "received_at {} is after the server received the event ({}); at most {} s \
                     of clock skew is allowed",
                    format_timestamp(received_at),
                    format_timestamp(received_fallback),
                    self.limits.max_received_ahead_micros / 1_000_000
                ),
            ));
        }
        let (event_time, clock_skew_ms) = match sent_at {
            Some(sent) => {
                let delay = sent - occurred_at;
                if delay < -1_000_000 || delay > self.limits.max_lateness_micros {
                    return Err(self.reject(
                        Reason::TimestampOutOfRange,
                        "sent_at",
                        format!(
                            "sent_at {} is {} s after occurred_at {}; it must be between -1 s and {} days",
                            &**event.sent_at.as_ref().map_or(&Str::default(), |s| s),
                            delay / 1_000_000,
                            &**occurred,
                            self.limits.max_lateness_micros / MICROS_PER_DAY
                        ),
                    ));
                }
                (received_at - delay.max(0), (sent - received_at) / 1000)
            }
            None => (occurred_at, 0),
        };
        if event_time < received_at - self.limits.max_lateness_micros
            || event_time > received_at + self.limits.max_future_micros
        {
            return Err(self.reject(
                Reason::TimestampOutOfRange,
                "occurred_at",
                format!(
                    "event time {} is too far from received_at {} (allowed: {} days before, {} hours after)",
                    format_timestamp(event_time),
                    format_timestamp(received_at),
                    self.limits.max_lateness_micros / MICROS_PER_DAY,
                    self.limits.max_future_micros / 3_600_000_000
                ),
            ));
        }

        Ok(Times {
            occurred_at,
            sent_at,
            received_at,
            event_time,
            clock_skew_ms,
        })
    }

    /// The context: page, campaign, device and place fields within their limits.
    fn context(&self, context: Option<&Context<'_>>) -> Result<(), Rejection> {
        if let Some(ctx) = context {
            if let Some(page) = &ctx.page {
                self.text("context.page.url", page.url.as_ref())?;
                self.text("context.page.path", page.path.as_ref())?;
                self.text("context.page.referrer", page.referrer.as_ref())?;
                self.text("context.page.title", page.title.as_ref())?;
            }
            if let Some(c) = &ctx.campaign {
                for (f, v) in [
                    ("context.campaign.source", &c.source),
                    ("context.campaign.medium", &c.medium),
                    ("context.campaign.name", &c.name),
                    ("context.campaign.term", &c.term),
                    ("context.campaign.content", &c.content),
                ] {
                    self.text(f, v.as_ref())?;
                }
            }
            self.text("context.user_agent", ctx.user_agent.as_ref())?;
            self.text("context.browser", ctx.browser.as_ref())?;
            self.text("context.os", ctx.os.as_ref())?;
            self.id("context.ip", ctx.ip.as_ref())?;
            self.id("context.locale", ctx.locale.as_ref())?;
            self.id("context.device_id", ctx.device_id.as_ref())?;
            self.country("context.country", ctx.country.as_ref())?;
        }

        Ok(())
    }

    /// The properties: products, ids, texts, amounts with their currency, countries, ranges.
    fn properties(
        &self,
        name: EventName,
        p: &Properties<'_>,
        products: &[Product<'_>],
    ) -> Result<(), Rejection> {
        if products.len() > self.limits.max_products {
            return Err(self.reject(
                Reason::TooLarge,
                "properties.products",
                format!(
                    "{} products, the limit is {}",
                    products.len(),
                    self.limits.max_products
                ),
            ));
        }
        for (i, product) in products.iter().enumerate() {
            self.product(i, product, name == EventName::Custom)?;
        }
        for (f, v) in [
            ("properties.order_id", &p.order_id),
            ("properties.cart_id", &p.cart_id),
            ("properties.checkout_id", &p.checkout_id),
            ("properties.list_id", &p.list_id),
            ("properties.promotion_id", &p.promotion_id),
            ("properties.card_fingerprint", &p.card_fingerprint),
        ] {
            self.id(f, v.as_ref())?;
        }
        for (f, v) in [
            ("properties.coupon", &p.coupon),
            ("properties.payment_method", &p.payment_method),
            ("properties.query", &p.query),
            ("properties.category", &p.category),
            ("properties.promotion_name", &p.promotion_name),
            ("properties.creative", &p.creative),
            ("properties.reason", &p.reason),
            ("properties.carrier", &p.carrier),
        ] {
            self.text(f, v.as_ref())?;
        }
        let amounts = [
            ("properties.total", p.total),
            ("properties.revenue", p.revenue),
            ("properties.tax", p.tax),
            ("properties.shipping", p.shipping),
            ("properties.discount", p.discount),
        ];
        for (f, v) in amounts {
            self.amount(f, v)?;
        }
        let has_money =
            amounts.iter().any(|(_, v)| v.is_some()) || products.iter().any(|p| p.price.is_some());
        match &p.currency {
            Some(c) if !is_currency(c) => {
                return Err(self.reject(
                    Reason::InvalidCurrency,
                    "properties.currency",
                    format!(
                        "currency {:?} is not an ISO 4217 code such as \"EUR\"",
                        truncate(c)
                    ),
                ));
            }
            None if has_money => {
                return Err(
                    self.missing("properties.currency", "when an amount or price is present")
                );
            }
            _ => {}
        }
        self.country("properties.billing_country", p.billing_country.as_ref())?;
        self.country("properties.shipping_country", p.shipping_country.as_ref())?;
        self.range("properties.rating", p.rating, 1, 5)?;
        self.range("properties.checkout_step", p.checkout_step, 1, 100)?;

        Ok(())
    }

    /// What each event type requires of its properties and context.
    fn per_event_type(
        &self,
        name: EventName,
        event: &Event<'_>,
        p: &Properties<'_>,
        products: &[Product<'_>],
    ) -> Result<(), Rejection> {
        use EventName as N;
        if name.is_single_product() {
            if products.len() != 1 {
                return Err(self.reject(
                    Reason::MissingField,
                    "properties.products",
                    format!("{name} needs exactly one product, got {}", products.len()),
                ));
            }
            if products[0].product_id.is_none() {
                return Err(
                    self.missing("properties.products[0].product_id", &format!("on {name}"))
                );
            }
        }
        if matches!(name, N::ProductAdded | N::ProductRemoved)
            && products.first().is_some_and(|p| p.quantity.is_none())
        {
            return Err(self.missing("properties.products[0].quantity", &format!("on {name}")));
        }
        if matches!(name, N::CheckoutStarted | N::OrderCompleted) {
            if products.is_empty() {
                return Err(self.missing("properties.products", &format!("on {name}")));
            }
            if p.total.is_none() {
                return Err(self.missing("properties.total", &format!("on {name}")));
            }
        }
        let required: Option<(&str, bool)> = match name {
            N::ProductsSearched => Some(("properties.query", p.query.is_some())),
            N::ProductListViewed => Some((
                "properties.list_id",
                p.list_id.is_some() || p.category.is_some(),
            )),
            N::CheckoutStepCompleted => {
                Some(("properties.checkout_step", p.checkout_step.is_some()))
            }
            N::PaymentInfoEntered => {
                Some(("properties.payment_method", p.payment_method.is_some()))
            }
            N::CouponApplied => Some(("properties.coupon", p.coupon.is_some())),
            N::PromotionViewed | N::PromotionClicked => {
                Some(("properties.promotion_id", p.promotion_id.is_some()))
            }
            N::ProductReviewed => Some(("properties.rating", p.rating.is_some())),
            N::PageViewed => Some((
                "context.page.url",
                event
                    .context
                    .as_ref()
                    .and_then(|c| c.page.as_ref())
                    .is_some_and(|pg| pg.url.is_some() || pg.path.is_some()),
            )),
            n if n.is_order_lifecycle() => Some(("properties.order_id", p.order_id.is_some())),
            _ => None,
        };
        if let Some((field, false)) = required {
            return Err(self.missing(field, &format!("on {name}")));
        }
        if name == N::Group
            && !p
                .extra
                .iter()
                .any(|(k, v)| &**k == GROUP_ID && v.get().starts_with('"'))
        {
            return Err(self.missing("properties.group_id", "(a string) on group"));
        }

        Ok(())
    }
}

/// The times of an event, read and corrected.
struct Times {
    occurred_at: i64,
    sent_at: Option<i64>,
    received_at: i64,
    event_time: i64,
    clock_skew_ms: i64,
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
