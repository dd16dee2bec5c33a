//! Bad input, as storefronts really send it: each kind of fault and the reason validation gives.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use shoplake_events::Reason;

use super::world::{hex_id, pick_weighted};

/// The faults injected, with their share among bad inputs.
const FAULTS: &[(Reason, f64)] = &[
    (Reason::MalformedJson, 0.20),
    (Reason::WrongType, 0.15),
    (Reason::MissingField, 0.15),
    (Reason::UnknownEvent, 0.08),
    (Reason::InvalidId, 0.08),
    (Reason::InvalidCurrency, 0.06),
    (Reason::InvalidCountry, 0.06),
    (Reason::OutOfRange, 0.08),
    (Reason::InvalidTimestamp, 0.05),
    (Reason::TimestampOutOfRange, 0.05),
    (Reason::UnsupportedSchemaVersion, 0.02),
    (Reason::TooLarge, 0.02),
];

/// Spoils a valid event (as JSON) in one way; returns the bytes and the reason validation reports.
pub(crate) fn corrupt(
    rng: &mut ChaCha8Rng,
    event: &[u8],
    received_micros: i64,
) -> (Vec<u8>, Reason) {
    let reason = FAULTS[pick_weighted(rng, FAULTS, |f| f.1)].0;
    if reason == Reason::MalformedJson {
        let cut = rng.random_range(1..event.len().max(2));
        return (event[..cut.min(event.len())].to_vec(), reason);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(event) else {
        return (event[..event.len() / 2].to_vec(), Reason::MalformedJson);
    };
    let has_products = v["properties"]["products"].is_array();
    match reason {
        Reason::WrongType => {
            if has_products {
                // A price sent as a string, the commonest tracking-plan mistake.
                let price = v["properties"]["products"][0]["price"].clone();
                v["properties"]["products"][0]["price"] = json!(price.to_string());
            } else {
                v["occurred_at"] = json!(received_micros / 1_000_000);
            }
        }
        Reason::MissingField => match v["event_name"].as_str() {
            Some("products_searched") => remove(&mut v["properties"], "query"),
            Some("order_completed") | Some("checkout_started") => {
                remove(&mut v["properties"], "currency")
            }
            _ => remove(&mut v, "occurred_at"),
        },
        Reason::UnknownEvent => {
            v["event_name"] =
                json!(["product_zoomed", "Product Viewed", "add_to_cart"][rng.random_range(0..3)])
        }
        Reason::InvalidId => v["event_id"] = json!(hex_id(rng, "evt_")),
        Reason::InvalidCurrency => {
            properties(&mut v)["currency"] = json!(["EURO", "usd$", "XYZ1"][rng.random_range(0..3)])
        }
        Reason::InvalidCountry => {
            if v["context"].is_object() {
                v["context"]["country"] = json!("UK");
            } else {
                properties(&mut v)["shipping_country"] = json!("UK");
            }
        }
        Reason::OutOfRange => {
            if has_products {
                v["properties"]["products"][0]["quantity"] = json!(0);
            } else {
                let p = properties(&mut v);
                p["total"] = json!(-12.5);
                if !p["currency"].is_string() {
                    p["currency"] = json!("USD");
                }
            }
        }
        Reason::InvalidTimestamp => v["occurred_at"] = json!("2026-13-45T25:61:00Z"),
        Reason::TimestampOutOfRange => {
            // A device whose clock was reset: the event claims to be 400 days old, with no sent_at
            // to correct it by.
            remove(&mut v, "sent_at");
            v["occurred_at"] = json!(shoplake_events::format_timestamp(
                received_micros - 400 * 86_400_000_000
            ));
        }
        Reason::UnsupportedSchemaVersion => v["schema_version"] = json!(7),
        Reason::TooLarge => properties(&mut v)["debug_dump"] = json!("x".repeat(33 * 1024)),
        _ => {}
    }
    (serde_json::to_vec(&v).unwrap_or_default(), reason)
}

fn remove(v: &mut Value, key: &str) {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
}

fn properties(v: &mut Value) -> &mut Value {
    if !v["properties"].is_object() {
        v["properties"] = json!({});
    }
    &mut v["properties"]
}
