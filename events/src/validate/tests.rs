use super::*;
use serde_json::{Value, json};

const RECEIVED: &str = "2026-03-01T12:00:00Z";

fn received() -> i64 {
    parse_timestamp(RECEIVED).unwrap()
}

fn base(name: &str) -> Value {
    json!({
        "event_id": "0b8f4a4e-6d0c-4b7e-9d43-2f1a8f6c1c11",
        "event_name": name,
        "schema_version": 1,
        "occurred_at": "2026-03-01T11:59:59Z",
        "sent_at": "2026-03-01T11:59:59.500Z",
        "anonymous_id": "anon-1",
        "context": {"page": {"url": "https://shop.example/p/1", "path": "/p/1"}, "country": "DE"},
        "properties": {}
    })
}

fn order() -> Value {
    let mut e = base("order_completed");
    e["properties"] = json!({
        "order_id": "o-1", "total": 59.9, "revenue": 50.0, "tax": 4.9, "shipping": 5.0, "currency": "EUR",
        "products": [{"product_id": "p-1", "price": 25.0, "quantity": 2}]
    });
    e
}

fn run(v: &Value) -> Result<ValidEvent<'static>, Rejection> {
    let bytes: &'static [u8] = Box::leak(serde_json::to_vec(v).unwrap().into_boxed_slice());
    decode(bytes, received(), &Limits::default())
}

#[track_caller]
fn rejected(v: &Value, reason: Reason, field: Option<&str>) -> Rejection {
    let r = run(v).expect_err("should be rejected");
    assert_eq!(r.reason, reason, "{r}");
    assert_eq!(r.field.as_deref(), field, "{r}");
    assert!(!r.message.is_empty());
    r
}

#[test]
fn a_valid_order_passes_with_corrected_time() {
    let v = run(&order()).unwrap();
    assert_eq!(v.name, EventName::OrderCompleted);
    // Device says the event happened 0.5 s before it was sent: event time is 0.5 s before receipt.
    assert_eq!(v.event_time, received() - 500_000);
    assert_eq!(v.clock_skew_ms, -500);
}

#[test]
fn a_skewed_device_clock_is_corrected() {
    let mut e = base("page_viewed");
    e["occurred_at"] = json!("2026-03-01T14:00:00Z"); // device is 2 h ahead
    e["sent_at"] = json!("2026-03-01T14:00:02Z");
    let v = run(&e).unwrap();
    assert_eq!(v.event_time, received() - 2_000_000);
    assert_eq!(v.clock_skew_ms, 2 * 3_600_000 + 2_000);
}

#[test]
fn too_large() {
    let bytes = vec![b' '; 40 * 1024];
    let r = decode(&bytes, received(), &Limits::default()).unwrap_err();
    assert_eq!(r.reason, Reason::TooLarge);
    assert!(r.message.contains("40960 bytes"), "{}", r.message);
}

#[test]
fn malformed_json() {
    let r = decode(
        br#"{"event_id": "x", "event_name": "#,
        received(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(r.reason, Reason::MalformedJson);
    let r = decode(b"\xff\xfe", received(), &Limits::default()).unwrap_err();
    assert_eq!(r.reason, Reason::MalformedJson);
}

#[test]
fn wrong_type_names_the_field() {
    let mut e = order();
    e["properties"]["total"] = json!("59.90");
    let r = rejected(&e, Reason::WrongType, Some("properties.total"));
    assert!(r.message.contains("invalid type"), "{}", r.message);
    let mut e = order();
    e["properties"]["products"][0]["quantity"] = json!("two");
    rejected(
        &e,
        Reason::WrongType,
        Some("properties.products[0].quantity"),
    );
    rejected(&json!([1, 2]), Reason::WrongType, None);
}

#[test]
fn missing_envelope_fields() {
    for field in ["event_id", "event_name", "occurred_at"] {
        let mut e = base("page_viewed");
        e.as_object_mut().unwrap().remove(field);
        rejected(&e, Reason::MissingField, Some(field));
    }
    let mut e = base("page_viewed");
    e.as_object_mut().unwrap().remove("anonymous_id");
    rejected(&e, Reason::MissingField, Some("anonymous_id"));
}

#[test]
fn ids() {
    let mut e = base("page_viewed");
    e["event_id"] = json!("not-a-uuid");
    let r = rejected(&e, Reason::InvalidId, Some("event_id"));
    assert!(r.message.contains("not-a-uuid"));
    let mut e = base("page_viewed");
    e["user_id"] = json!("u".repeat(200));
    rejected(&e, Reason::InvalidId, Some("user_id"));
    let mut e = base("page_viewed");
    e["anonymous_id"] = json!("");
    rejected(&e, Reason::InvalidId, Some("anonymous_id"));
}

#[test]
fn ids_with_control_or_bidirectional_characters_are_invalid() {
    // NUL, a newline, DEL, a C1 control, a right-to-left override and an isolate.
    for (field, value, code, at) in [
        ("anonymous_id", "anon\u{0}1", "U+0000", 5),
        ("user_id", "user\n2", "U+000A", 5),
        ("session_id", "s\u{7f}", "U+007F", 2),
        ("user_id", "\u{85}u", "U+0085", 1),
        ("user_id", "evil\u{202E}gpj.exe", "U+202E", 5),
        ("anonymous_id", "a\u{2066}b", "U+2066", 2),
    ] {
        let mut e = base("page_viewed");
        e[field] = json!(value);
        let r = rejected(&e, Reason::InvalidId, Some(field));
        assert!(
            r.message.contains(code) && r.message.contains(&format!("at character {at}")),
            "{r}"
        );
    }
    let mut e = order();
    e["properties"]["order_id"] = json!("o\u{0}1");
    rejected(&e, Reason::InvalidId, Some("properties.order_id"));
    let mut e = order();
    e["properties"]["products"][0]["product_id"] = json!("p\u{202D}1");
    rejected(
        &e,
        Reason::InvalidId,
        Some("properties.products[0].product_id"),
    );
    // Letters of any script, emoji and spaces are ids like any other.
    let mut e = base("page_viewed");
    e["user_id"] = json!("Zoë 山田 مريم 🛒");
    run(&e).unwrap();
}

#[test]
fn a_received_at_after_the_servers_arrival_is_out_of_range() {
    // A replay's or a collector's received_at before the stream's arrival is honoured.
    let mut e = base("page_viewed");
    e["received_at"] = json!("2026-03-01T11:59:59.800Z");
    e["sent_at"] = json!("2026-03-01T11:59:59.700Z");
    assert_eq!(run(&e).unwrap().received_at, received() - 200_000);
    // A few minutes of clock skew between a collector and the stream is tolerated.
    e["received_at"] = json!("2026-03-01T12:04:00Z");
    run(&e).unwrap();
    // One stamped in 2099 would expire the stage's whole de-duplication window and sessions.
    for (stamp, seen) in [
        ("2099-01-01T00:00:00Z", "2099-01-01"),
        ("2026-03-01T12:06:00Z", "12:06"),
    ] {
        let mut e = base("page_viewed");
        e["received_at"] = json!(stamp);
        let r = rejected(&e, Reason::TimestampOutOfRange, Some("received_at"));
        assert!(
            r.message.contains(seen) && r.message.contains("300 s"),
            "{r}"
        );
    }
}

#[test]
fn unknown_event_and_version() {
    let r = rejected(
        &base("Order Completed"),
        Reason::UnknownEvent,
        Some("event_name"),
    );
    assert_eq!(r.event_name.as_deref(), Some("Order Completed"));
    assert_eq!(
        r.event_id.as_deref(),
        Some("0b8f4a4e-6d0c-4b7e-9d43-2f1a8f6c1c11")
    );
    let mut e = base("page_viewed");
    e["schema_version"] = json!(7);
    rejected(&e, Reason::UnsupportedSchemaVersion, Some("schema_version"));
}

#[test]
fn timestamps() {
    let mut e = base("page_viewed");
    e["occurred_at"] = json!("yesterday");
    rejected(&e, Reason::InvalidTimestamp, Some("occurred_at"));
    // Sent before it happened.
    let mut e = base("page_viewed");
    e["sent_at"] = json!("2026-03-01T11:00:00Z");
    rejected(&e, Reason::TimestampOutOfRange, Some("sent_at"));
    // No sent_at and a device year in the past.
    let mut e = base("page_viewed");
    e.as_object_mut().unwrap().remove("sent_at");
    e["occurred_at"] = json!("2019-03-01T11:00:00Z");
    rejected(&e, Reason::TimestampOutOfRange, Some("occurred_at"));
    // Late but within 30 days is fine.
    let mut e = base("page_viewed");
    e.as_object_mut().unwrap().remove("sent_at");
    e["occurred_at"] = json!("2026-02-10T11:00:00Z");
    assert!(run(&e).is_ok());
    // Received far in the future of the sent event (held 40 days on the device).
    let mut e = base("page_viewed");
    e["occurred_at"] = json!("2026-01-01T00:00:00Z");
    e["sent_at"] = json!("2026-02-15T00:00:00Z");
    rejected(&e, Reason::TimestampOutOfRange, Some("sent_at"));
}

#[test]
fn currency_and_country() {
    let mut e = order();
    e["properties"]["currency"] = json!("EURO");
    let r = rejected(&e, Reason::InvalidCurrency, Some("properties.currency"));
    assert!(r.message.contains("EURO"));
    let mut e = order();
    e["properties"].as_object_mut().unwrap().remove("currency");
    rejected(&e, Reason::MissingField, Some("properties.currency"));
    let mut e = order();
    e["properties"]["shipping_country"] = json!("UK");
    rejected(
        &e,
        Reason::InvalidCountry,
        Some("properties.shipping_country"),
    );
    let mut e = base("page_viewed");
    e["context"]["country"] = json!("germany");
    rejected(&e, Reason::InvalidCountry, Some("context.country"));
}

#[test]
fn ranges() {
    let mut e = order();
    e["properties"]["total"] = json!(-1.0);
    rejected(&e, Reason::OutOfRange, Some("properties.total"));
    let mut e = order();
    e["properties"]["products"][0]["price"] = json!(1e12);
    rejected(&e, Reason::OutOfRange, Some("properties.products[0].price"));
    let mut e = order();
    let second = json!({"product_id": "p2", "price": 5.0, "quantity": 1, "sku": ""});
    if let Some(products) = e["properties"]["products"].as_array_mut() {
        products.push(second);
    }
    let r = rejected(&e, Reason::InvalidId, Some("properties.products[1].sku"));
    assert!(
        r.message
            .starts_with("properties.products[1].sku must have 1 to "),
        "{}",
        r.message
    );
    let mut e = order();
    e["properties"]["products"][0]["quantity"] = json!(0);
    rejected(
        &e,
        Reason::OutOfRange,
        Some("properties.products[0].quantity"),
    );
    let mut e = base("product_reviewed");
    e["properties"] = json!({"products": [{"product_id": "p"}], "rating": 6});
    rejected(&e, Reason::OutOfRange, Some("properties.rating"));
    let mut e = base("checkout_step_completed");
    e["properties"] = json!({"checkout_step": 0});
    rejected(&e, Reason::OutOfRange, Some("properties.checkout_step"));
}

#[test]
fn size_limits_on_fields_and_lists() {
    let mut e = base("page_viewed");
    e["context"]["page"]["url"] = json!(format!("https://x/{}", "a".repeat(5000)));
    rejected(&e, Reason::TooLarge, Some("context.page.url"));
    let mut e = order();
    let products: Vec<Value> = (0..300)
        .map(|i| json!({"product_id": format!("p{i}")}))
        .collect();
    e["properties"]["products"] = json!(products);
    rejected(&e, Reason::TooLarge, Some("properties.products"));
}

#[test]
fn per_event_type_requirements() {
    let cases: &[(&str, Value, &str)] = &[
        ("product_viewed", json!({}), "properties.products"),
        (
            "product_viewed",
            json!({"products": [{"sku": "s"}]}),
            "properties.products[0].product_id",
        ),
        (
            "product_added",
            json!({"products": [{"product_id": "p"}]}),
            "properties.products[0].quantity",
        ),
        ("products_searched", json!({}), "properties.query"),
        ("product_list_viewed", json!({}), "properties.list_id"),
        (
            "checkout_started",
            json!({"total": 1.0, "currency": "EUR"}),
            "properties.products",
        ),
        (
            "order_completed",
            json!({"order_id": "o", "currency": "EUR", "products": [{"product_id": "p"}]}),
            "properties.total",
        ),
        (
            "checkout_step_completed",
            json!({}),
            "properties.checkout_step",
        ),
        (
            "payment_info_entered",
            json!({}),
            "properties.payment_method",
        ),
        ("order_refunded", json!({}), "properties.order_id"),
        ("order_shipped", json!({}), "properties.order_id"),
        ("payment_failed", json!({}), "properties.order_id"),
        ("coupon_applied", json!({}), "properties.coupon"),
        ("promotion_clicked", json!({}), "properties.promotion_id"),
        (
            "product_reviewed",
            json!({"products": [{"product_id": "p"}]}),
            "properties.rating",
        ),
    ];
    for (name, props, field) in cases {
        let mut e = base(name);
        e["properties"] = props.clone();
        let r = rejected(&e, Reason::MissingField, Some(field));
        assert!(
            r.message.contains(name) || r.message.contains("product"),
            "{name}: {}",
            r.message
        );
    }
    let mut e = base("page_viewed");
    e["context"] = json!({});
    rejected(&e, Reason::MissingField, Some("context.page.url"));
    let e = base("signed_up");
    rejected(&e, Reason::MissingField, Some("user_id"));
}

#[test]
fn every_reason_has_a_distinct_code() {
    let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
}

#[test]
fn tracking_api_calls_and_custom_events() {
    // alias links an earlier id (anonymous_id) to user_id: both are required.
    let mut e = base("alias");
    rejected(&e, Reason::MissingField, Some("user_id"));
    e["user_id"] = json!("u-1");
    assert_eq!(run(&e).unwrap().name, EventName::Alias);
    e.as_object_mut().unwrap().remove("anonymous_id");
    rejected(&e, Reason::MissingField, Some("anonymous_id"));

    // group needs a string group id among the properties outside the contract.
    let mut e = base("group");
    rejected(&e, Reason::MissingField, Some("properties.group_id"));
    e["properties"] = json!({"group_id": 42});
    rejected(&e, Reason::MissingField, Some("properties.group_id"));
    e["properties"] = json!({"group_id": "acme"});
    assert_eq!(run(&e).unwrap().name, EventName::Group);

    // custom keeps the emitter's own name, which it needs.
    let mut e = base("custom");
    let r = rejected(&e, Reason::MissingField, Some("custom_event_name"));
    assert_eq!(r.message, "custom_event_name is required on custom");
    e["custom_event_name"] = json!("");
    rejected(&e, Reason::InvalidId, Some("custom_event_name"));
    e["custom_event_name"] = json!("Newsletter Subscribed");
    let v = run(&e).unwrap();
    assert_eq!(v.name, EventName::Custom);
    assert_eq!(
        v.event.custom_event_name.as_deref(),
        Some("Newsletter Subscribed")
    );

    // screen_viewed needs nothing beyond the envelope; browser and os are bounded text.
    let mut e = base("screen_viewed");
    e["context"] = json!({"browser": "Chrome", "os": "Android"});
    assert_eq!(run(&e).unwrap().name, EventName::ScreenViewed);
    e["context"]["os"] = json!("x".repeat(5000));
    rejected(&e, Reason::TooLarge, Some("context.os"));
}

#[test]
fn a_custom_event_may_carry_stock_levels() {
    // "Inventory Updated": 0 units means out of stock; stock levels go past an order's limit.
    let mut e = base("custom");
    e["custom_event_name"] = json!("Inventory Updated");
    e["properties"] = json!({"products": [{"product_id": "p-1", "quantity": 0},
                                          {"product_id": "p-2", "quantity": 250_000}]});
    let v = run(&e).unwrap();
    assert_eq!(v.name, EventName::Custom);
    e["properties"]["products"][0]["quantity"] = json!(-1);
    rejected(
        &e,
        Reason::OutOfRange,
        Some("properties.products[0].quantity"),
    );
}
