//! Property tests of the codec: decode(encode(x)) == x, and no input makes the decoder panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use proptest::prelude::*;
use shoplake_events::wire::{Campaign, ClickIds, Context, Page, Product, Properties};
use shoplake_events::{
    Enrichment, Event, EventBatchBuilder, Limits, Str, decode, events_from_batch, format_timestamp,
};

const BASE: i64 = 1_772_366_400_000_000; // 2026-03-01T12:00:00Z

fn text() -> impl Strategy<Value = Str<'static>> {
    "[a-zA-Z0-9 _\\-/.:é\"\\\\]{1,24}".prop_map(Str::from)
}

fn opt_text() -> impl Strategy<Value = Option<Str<'static>>> {
    proptest::option::of(text())
}

fn cents() -> impl Strategy<Value = f64> {
    (0i64..10_000_000).prop_map(|c| c as f64 / 100.0)
}

fn product() -> impl Strategy<Value = Product<'static>> {
    (
        text(),
        opt_text(),
        opt_text(),
        opt_text(),
        proptest::option::of(cents()),
        proptest::option::of(1i64..50),
    )
        .prop_map(|(id, sku, category, brand, price, quantity)| Product {
            product_id: Some(id),
            sku,
            category,
            brand,
            price,
            quantity,
            ..Default::default()
        })
}

prop_compose! {
    fn event()(
        uuid in any::<u128>(),
        occurred_ms in 0i64..3_600_000,
        delay_ms in 0i64..60_000,
        anonymous_id in text(),
        user_id in opt_text(),
        session_id in opt_text(),
        url in opt_text(),
        utm in opt_text(),
        gclid in opt_text(),
        country in proptest::option::of(prop_oneof![Just("DE"), Just("US"), Just("JP")]),
        products in proptest::collection::vec(product(), 1..5),
        total in cents(),
        tax in proptest::option::of(cents()),
        currency in prop_oneof![Just("EUR"), Just("USD"), Just("JPY")],
        coupon in opt_text(),
        extra in proptest::option::of((0i64..1000, text())),
        traits in proptest::option::of(text()),
        browser in opt_text(),
    ) -> Event<'static> {
        let occurred = BASE - 3_600_000_000 + occurred_ms * 1000;
        let sent = occurred + delay_ms * 1000;
        Event {
            event_id: Some(Str::from(uuid::Uuid::from_u128(uuid).to_string())),
            event_name: Some(Str::from("order_completed")),
            custom_event_name: None,
            schema_version: Some(1),
            occurred_at: Some(Str::from(format_timestamp(occurred))),
            sent_at: Some(Str::from(format_timestamp(sent))),
            received_at: Some(Str::from(format_timestamp(BASE))),
            anonymous_id: Some(anonymous_id),
            user_id,
            session_id,
            context: Some(Context {
                page: url.map(|u| Page { url: Some(u), ..Default::default() }),
                campaign: utm.map(|u| Campaign { source: Some(u.clone()), name: Some(u), ..Default::default() }),
                click_ids: gclid.map(|g| ClickIds { gclid: Some(g), ..Default::default() }),
                country: country.map(Str::from),
                browser: browser.clone(),
                os: browser.map(|b| Str::from(format!("{b} OS"))),
                ..Default::default()
            }).filter(|c| *c != Context::default()),
            properties: Some(Properties {
                order_id: Some(Str::from(format!("o-{uuid}"))),
                products: Some(products),
                total: Some(total),
                tax,
                currency: Some(Str::from(currency)),
                coupon,
                extra: extra
                    .map(|(n, s)| {
                        vec![
                            (Str::from("gift_wrap"), serde_json::value::RawValue::from_string(n.to_string()).unwrap()),
                            (Str::from("note"), serde_json::value::RawValue::from_string(serde_json::to_string(&*s).unwrap()).unwrap()),
                        ]
                    })
                    .unwrap_or_default(),
                ..Default::default()
            }),
            traits: traits.map(|t| Str::from(serde_json::json!({"name": &*t}).to_string())),
        }
    }
}

fn enrichment<'a>(session: &'a str, inferred: bool) -> Enrichment<'a> {
    Enrichment {
        session_id: session,
        session_inferred: inferred,
        channel: "direct",
        reporting_currency: "EUR",
        fx_rate: Some(100_000_000),
        is_bot: false,
        stream_shard: "shardId-000000000000",
        stream_sequence: "00000000000000000001",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn decode_encode_round_trip(events in proptest::collection::vec(event(), 1..20)) {
        let raws: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        let mut builder = EventBatchBuilder::with_capacity(events.len());
        for raw in &raws {
            let valid = decode(raw, BASE, &Limits::default()).map_err(|r| TestCaseError::fail(r.to_string()))?;
            let session = valid.event.session_id.as_deref().unwrap_or("inferred-session").to_owned();
            let inferred = valid.event.session_id.is_none();
            builder.append(&valid, &enrichment(&session, inferred));
        }
        let batch = builder.finish().unwrap();
        prop_assert_eq!(batch.num_rows(), events.len());
        let back = events_from_batch(&batch).unwrap();
        prop_assert_eq!(back, events);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, BASE, &Limits::default());
    }

    #[test]
    fn corrupted_events_never_panic(e in event(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut raw = serde_json::to_vec(&e).unwrap();
        let i = at.index(raw.len());
        raw[i] = byte;
        if let Err(r) = decode(&raw, BASE, &Limits::default()) {
            prop_assert!(!r.message.is_empty());
        }
        // Any strict prefix of an object is incomplete JSON.
        raw.truncate(i);
        prop_assert!(decode(&raw, BASE, &Limits::default()).is_err());
    }
}

#[test]
fn the_batch_has_the_events_schema() {
    let e = serde_json::to_vec(&serde_json::json!({
        "event_id": "0b8f4a4e-6d0c-4b7e-9d43-2f1a8f6c1c11", "event_name": "product_viewed",
        "occurred_at": "2026-03-01T11:59:59Z", "anonymous_id": "a",
        "properties": {"products": [{"product_id": "p-9", "price": 12.5}], "currency": "USD", "total": 12.5}
    }))
    .unwrap();
    let v = decode(&e, BASE, &Limits::default()).unwrap();
    let mut b = EventBatchBuilder::with_capacity(1);
    let mut x = enrichment("s", true);
    x.fx_rate = Some(92_000_000); // 0.92 EUR per USD
    b.append(&v, &x);
    let batch = b.finish().unwrap();
    assert_eq!(batch.schema(), shoplake_events::events_schema());
    let col = |n: &str| batch.column_by_name(n).unwrap().clone();
    let product_id = col("product_id");
    assert_eq!(
        arrow::array::AsArray::as_string::<i32>(&product_id).value(0),
        "p-9"
    );
    let total = col("total_reporting");
    // 12.50 USD × 0.92 = 11.50 EUR
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Decimal128Type>(&total).value(0),
        1150
    );
    let date = col("event_date");
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Date32Type>(&date).value(0),
        20513
    );
}
