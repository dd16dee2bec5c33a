use super::*;
use serde_json::{Value, json};
use shoplake_events::{Limits, Reason, decode, parse_timestamp};

const RECEIVED: &str = "2026-03-01T12:00:00.000000Z";

/// The server's arrival time of the mapped events: the request's.
fn received() -> i64 {
    parse_timestamp(RECEIVED).unwrap()
}

fn request(source: &'static str) -> RequestContext<'static> {
    RequestContext {
        received_at: RECEIVED,
        received_micros: parse_timestamp(RECEIVED).unwrap(),
        batch_sent_at: None,
        batch_context: None,
        source,
        key_id: "0123456789abcdef",
        client_ip: Some("81.2.69.160".parse().unwrap()),
    }
}

/// Maps a message through an endpoint and returns the wire JSON.
fn mapped(call: Option<Call>, msg: Value, edge: &Edge) -> (Mapped, Value) {
    let text = msg.to_string();
    let raw: Box<RawValue> = RawValue::from_string(text).unwrap();
    let m = map(&raw, call, &request("web"), edge);
    let v: Value = serde_json::from_slice(&m.data).unwrap();
    (m, v)
}

/// The mapped event passes the contract; returns it.
#[track_caller]
fn valid(call: Option<Call>, msg: Value) -> Value {
    let (m, v) = mapped(call, msg, &Edge::default());
    if let Err(r) = decode(
        &m.data,
        parse_timestamp(RECEIVED).unwrap(),
        &Limits::default(),
    ) {
        panic!("{r}: {v}");
    }
    v
}

fn track(event: &str, properties: Value) -> Value {
    json!({
        "type": "track", "event": event, "messageId": "7d0c5e2a-6f55-4b8e-a3a4-1b2c3d4e5f60",
        "anonymousId": "anon-1", "userId": "user-1",
        "timestamp": "2026-03-01T11:59:58Z", "sentAt": "2026-03-01T11:59:59Z",
        "context": {"userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                    "page": {"url": "https://shop.example/p/1?utm_source=google&utm_medium=cpc&gclid=abc", "path": "/p/1", "referrer": "https://www.google.com/"},
                    "locale": "de-DE"},
        "properties": properties,
        "integrations": {"All": true}
    })
}

#[test]
fn spec_names_map_to_the_contract() {
    for (segment, contract) in [
        ("Product Viewed", Some(EventName::ProductViewed)),
        ("Order Completed", Some(EventName::OrderCompleted)),
        (
            "Checkout Step Completed",
            Some(EventName::CheckoutStepCompleted),
        ),
        ("Products Searched", Some(EventName::ProductsSearched)),
        ("Product List Viewed", Some(EventName::ProductListViewed)),
        ("product_added", Some(EventName::ProductAdded)),
        ("  order  refunded ", Some(EventName::OrderRefunded)),
        (
            "Product Added to Wishlist",
            Some(EventName::WishlistProductAdded),
        ),
        ("Signed In", Some(EventName::LoggedIn)),
        ("Signed Up", Some(EventName::SignedUp)),
        ("Promotion Clicked", Some(EventName::PromotionClicked)),
        ("Newsletter Subscribed", None),
        ("Checkout Step Viewed", None),
        ("Identify", None),
        ("custom", None),
    ] {
        assert_eq!(contract_name(segment), contract, "{segment}");
    }
}

#[test]
fn order_completed_keeps_every_field() {
    let v = valid(
        None,
        track(
            "Order Completed",
            json!({
                "checkout_id": "c-9", "order_id": "o-1", "affiliation": "web", "total": 59.9,
                "subtotal": 50.0, "revenue": 50.0, "shipping": 5.0, "tax": 4.9, "discount": 2.5,
                "coupon": "SPRING", "currency": "eur",
                "products": [{"id": "p-1", "sku": "S-1", "name": "Shoe", "price": 25.0, "quantity": 2, "category": "shoes", "url": "https://shop.example/p/1"}]
            }),
        ),
    );
    assert_eq!(v["event_id"], "7d0c5e2a-6f55-4b8e-a3a4-1b2c3d4e5f60");
    assert_eq!(v["event_name"], "order_completed");
    assert_eq!(v["occurred_at"], "2026-03-01T11:59:58Z");
    assert_eq!(v["sent_at"], "2026-03-01T11:59:59Z");
    assert_eq!(v["received_at"], RECEIVED);
    assert_eq!(v["anonymous_id"], "anon-1");
    assert_eq!(v["user_id"], "user-1");
    let p = &v["properties"];
    assert_eq!(p["order_id"], "o-1");
    assert_eq!(p["checkout_id"], "c-9");
    assert_eq!(p["total"], 59.9);
    assert_eq!(p["revenue"], 50.0);
    assert_eq!(p["discount"], 2.5);
    assert_eq!(p["currency"], "EUR", "currency codes are upper-cased");
    assert_eq!(p["affiliation"], "web");
    assert_eq!(p["subtotal"], 50.0);
    assert_eq!(
        p["products"][0]["product_id"], "p-1",
        "id becomes product_id"
    );
    assert_eq!(p["products"][0]["price"], 25.0);
    assert_eq!(p["products"][0]["quantity"], 2);
    // Through the contract: typed where it has columns, the rest kept as extra properties.
    let raw = serde_json::to_vec(&v).unwrap();
    let e = decode(&raw, received(), &Limits::default()).unwrap();
    let props = e.event.properties.as_ref().unwrap();
    assert_eq!(props.total, Some(59.9));
    assert_eq!(
        props.products.as_ref().unwrap()[0].sku.as_deref(),
        Some("S-1")
    );
    let extra: Vec<&str> = props.extra.iter().map(|(k, _)| &**k).collect();
    assert_eq!(extra, ["affiliation", "subtotal"]);
}

#[test]
fn context_and_edge_enrichment() {
    let v = valid(
        None,
        track(
            "Order Completed",
            json!({"order_id": "o-1", "total": 1.0, "currency": "EUR", "products": [{"product_id": "p"}]}),
        ),
    );
    let c = &v["context"];
    assert_eq!(
        c["page"]["url"],
        "https://shop.example/p/1?utm_source=google&utm_medium=cpc&gclid=abc"
    );
    assert_eq!(c["page"]["path"], "/p/1");
    assert_eq!(c["page"]["referrer"], "https://www.google.com/");
    assert_eq!(
        c["campaign"],
        json!({"source": "google", "medium": "cpc"}),
        "utm_* of the page URL"
    );
    assert_eq!(c["click_ids"], json!({"gclid": "abc"}));
    assert_eq!(c["locale"], "de-DE");
    assert_eq!(c["browser"], "Chrome");
    assert_eq!(c["os"], "Windows 10");
    assert_eq!(c["device_type"], "desktop");
    assert_eq!(
        c["ip"], "81.2.69.160",
        "the client's address when the context has none"
    );
    assert_eq!(c["source"], "web");

    // A context campaign wins over the URL; a bot is marked.
    let mut msg = track("Product Viewed", json!({"product_id": "p-1"}));
    msg["context"]["campaign"] =
        json!({"name": "spring", "source": "newsletter", "medium": "email"});
    msg["context"]["userAgent"] =
        json!("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
    msg["context"]["ip"] = json!("2001:db8::1");
    let v = valid(None, msg);
    assert_eq!(
        v["context"]["campaign"],
        json!({"source": "newsletter", "medium": "email", "name": "spring"})
    );
    assert_eq!(v["context"]["device_type"], "bot");
    assert_eq!(v["context"]["ip"], "2001:db8::1");
}

#[test]
fn single_product_events_gather_the_product() {
    let v = valid(
        Some(Call::Track),
        track(
            "Product Added",
            json!({"cart_id": "cart-1", "product_id": "p-7", "sku": "S-7", "name": "Hat", "brand": "Acme",
                   "variant": "red", "price": 19.99, "quantity": 1, "coupon": "HAT", "position": 3,
                   "category": "hats", "url": "https://shop.example/p/7", "image_url": "https://cdn/p7.jpg", "currency": "USD"}),
        ),
    );
    let p = &v["properties"];
    assert_eq!(
        p["products"],
        json!([{"product_id": "p-7", "sku": "S-7", "name": "Hat", "brand": "Acme", "variant": "red",
                "price": 19.99, "quantity": 1, "coupon": "HAT", "position": 3, "category": "hats"}])
    );
    assert_eq!(p["cart_id"], "cart-1");
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["url"], "https://shop.example/p/7");
    assert_eq!(p["image_url"], "https://cdn/p7.jpg");
    assert!(
        p.get("category").is_none(),
        "the product's category is not the list category"
    );
}

#[test]
fn renamed_spec_properties() {
    let v = valid(
        None,
        track(
            "Checkout Step Completed",
            json!({"checkout_id": "c", "step": 2, "shipping_method": "DHL"}),
        ),
    );
    assert_eq!(v["properties"]["checkout_step"], 2);
    assert_eq!(v["properties"]["shipping_method"], "DHL");
    let v = valid(
        None,
        track(
            "Checkout Started",
            json!({"order_id": "o", "value": 30.0, "currency": "EUR", "products": [{"product_id": "p", "price": 30.0, "quantity": 1}]}),
        ),
    );
    assert_eq!(v["properties"]["total"], 30.0);
    let v = valid(
        None,
        track(
            "Promotion Viewed",
            json!({"promotion_id": "promo-1", "creative": "banner", "name": "Spring", "position": "top"}),
        ),
    );
    assert_eq!(v["properties"]["promotion_name"], "Spring");
    assert_eq!(v["properties"]["position"], "top");
    let v = valid(
        None,
        track(
            "Coupon Applied",
            json!({"order_id": "o", "coupon_id": "SPRING10", "coupon_name": "Spring", "discount": 3.0, "currency": "EUR"}),
        ),
    );
    assert_eq!(v["properties"]["coupon"], "SPRING10");
    assert_eq!(v["properties"]["coupon_name"], "Spring");
    let v = valid(
        None,
        track("Products Searched", json!({"query": "red shoes"})),
    );
    assert_eq!(v["properties"]["query"], "red shoes");
}

#[test]
fn other_track_events_are_custom() {
    let v = valid(
        Some(Call::Track),
        track(
            "Newsletter Subscribed",
            json!({"list": "weekly", "coupon": "WELCOME"}),
        ),
    );
    assert_eq!(v["event_name"], "custom");
    assert_eq!(v["custom_event_name"], "Newsletter Subscribed");
    assert_eq!(
        v["properties"],
        json!({"list": "weekly", "coupon": "WELCOME"})
    );
    // Without a name, the contract says what is missing.
    let mut msg = track("x", json!({}));
    msg.as_object_mut().unwrap().remove("event");
    let (m, _) = mapped(Some(Call::Track), msg, &Edge::default());
    let r = decode(&m.data, received(), &Limits::default()).unwrap_err();
    assert_eq!(
        (r.reason, r.field.as_deref()),
        (Reason::MissingField, Some("custom_event_name"))
    );
}

#[test]
fn page_screen_identify_alias_group() {
    let v = valid(
        Some(Call::Page),
        json!({"anonymousId": "a", "name": "Home", "category": "landing",
               "properties": {"title": "Shop", "url": "https://shop.example/?fbclid=F1", "path": "/", "search": "?fbclid=F1"},
               "timestamp": "2026-03-01T11:59:00Z"}),
    );
    assert_eq!(v["event_name"], "page_viewed");
    assert_eq!(
        v["context"]["page"],
        json!({"url": "https://shop.example/?fbclid=F1", "path": "/", "title": "Shop"})
    );
    assert_eq!(v["context"]["click_ids"], json!({"fbclid": "F1"}));
    assert_eq!(
        v["properties"],
        json!({"search": "?fbclid=F1", "name": "Home", "page_category": "landing"})
    );
    assert!(v.get("sent_at").is_none());

    let v = valid(
        Some(Call::Screen),
        json!({"userId": 42, "name": "Checkout", "context": {"device": {"id": "dev-1", "type": "ios", "model": "iPhone15,2"}}}),
    );
    assert_eq!(v["event_name"], "screen_viewed");
    assert_eq!(v["user_id"], "42", "numeric ids become strings");
    assert_eq!(v["context"]["page"]["title"], "Checkout");
    assert_eq!(v["context"]["device_type"], "mobile");
    assert_eq!(v["context"]["device_id"], "dev-1");
    assert_eq!(
        v["occurred_at"], RECEIVED,
        "no time from the client: the server's"
    );

    let v = valid(
        Some(Call::Identify),
        json!({"userId": "u-1", "anonymousId": "a-1", "traits": {"email": "Jane@Shop.example", "plan": "gold"}}),
    );
    assert_eq!(v["event_name"], "identify");
    assert_eq!(
        v["traits"],
        json!({"email": "Jane@Shop.example", "plan": "gold"})
    );

    let v = valid(
        Some(Call::Alias),
        json!({"previousId": "anon-9", "userId": "u-1"}),
    );
    assert_eq!(
        (
            v["event_name"].as_str(),
            v["anonymous_id"].as_str(),
            v["user_id"].as_str()
        ),
        (Some("alias"), Some("anon-9"), Some("u-1"))
    );

    let v = valid(
        Some(Call::Group),
        json!({"userId": "u-1", "groupId": 7, "traits": {"name": "Acme"}}),
    );
    assert_eq!(v["event_name"], "group");
    assert_eq!(v["properties"]["group_id"], "7");
    assert_eq!(v["traits"], json!({"name": "Acme"}));
}

#[test]
fn event_ids_are_deterministic() {
    let msg = |id: Value| json!({"type": "track", "event": "Order Shipped", "messageId": id, "userId": "u", "properties": {"order_id": "o"}});
    let a = valid(None, msg(json!("ajs-next-1700000000000-abc")));
    let b = valid(None, msg(json!("ajs-next-1700000000000-abc")));
    assert_eq!(
        a["event_id"], b["event_id"],
        "the same message id, the same event id"
    );
    assert!(Uuid::try_parse(a["event_id"].as_str().unwrap()).is_ok());
    assert_eq!(
        a["properties"]["message_id"], "ajs-next-1700000000000-abc",
        "the client's id is kept"
    );
    let c = valid(None, msg(json!("ajs-next-other")));
    assert_ne!(a["event_id"], c["event_id"]);
    // Upper-case UUIDs are the same UUID.
    let d = valid(None, msg(json!("7D0C5E2A-6F55-4B8E-A3A4-1B2C3D4E5F60")));
    assert_eq!(d["event_id"], "7d0c5e2a-6f55-4b8e-a3a4-1b2c3d4e5f60");
    assert!(d["properties"].get("message_id").is_none());
    // Without a message id: derived from the bytes, so a retried message keeps its id.
    let e1 = valid(
        None,
        json!({"type": "track", "event": "Order Shipped", "userId": "u", "properties": {"order_id": "o"}}),
    );
    let e2 = valid(
        None,
        json!({"type": "track", "event": "Order Shipped", "userId": "u", "properties": {"order_id": "o"}}),
    );
    assert_eq!(e1["event_id"], e2["event_id"]);
}

#[test]
fn bad_values_are_left_for_validation() {
    // Wrong types reach the contract as sent, which names the field.
    let (m, v) = mapped(
        None,
        track(
            "Order Completed",
            json!({"order_id": "o", "total": "lots", "currency": "EUR", "products": [{"product_id": "p"}]}),
        ),
        &Edge::default(),
    );
    assert_eq!(v["properties"]["total"], "lots");
    let r = decode(&m.data, received(), &Limits::default()).unwrap_err();
    assert_eq!(
        (r.reason, r.field.as_deref()),
        (Reason::WrongType, Some("properties.total"))
    );
    let (m, _) = mapped(
        None,
        json!({"type": "track", "event": "Order Shipped", "userId": {"id": 1}, "properties": {"order_id": "o"}}),
        &Edge::default(),
    );
    let r = decode(&m.data, received(), &Limits::default()).unwrap_err();
    assert_eq!(
        (r.reason, r.field.as_deref()),
        (Reason::WrongType, Some("user_id"))
    );
    // An unknown call type is an unknown event; a missing one a missing name.
    let (m, _) = mapped(
        None,
        json!({"type": "purchase", "userId": "u"}),
        &Edge::default(),
    );
    let r = decode(&m.data, received(), &Limits::default()).unwrap_err();
    assert_eq!(
        (r.reason, r.event_name.as_deref()),
        (Reason::UnknownEvent, Some("purchase"))
    );
    let (m, _) = mapped(None, json!({"userId": "u"}), &Edge::default());
    let r = decode(&m.data, received(), &Limits::default()).unwrap_err();
    assert_eq!(
        (r.reason, r.field.as_deref()),
        (Reason::MissingField, Some("event_name"))
    );
    // Not an object: as it was sent.
    let raw = RawValue::from_string("[1,2]".to_owned()).unwrap();
    let m = map(&raw, None, &request("web"), &Edge::default());
    assert_eq!(m.data, b"[1,2]");
    // The original message rides along on an event that failed.
    let mut m = m;
    m.data = br#"{"event_id":"x"}"#.to_vec();
    with_original(&mut m, r#"{"type":"x"}"#, Scrub::default());
    assert_eq!(m.data, br#"{"event_id":"x","original":{"type":"x"}}"#);
}

#[test]
fn privacy_options_apply_before_storage() {
    let edge = Edge {
        geo: None,
        scrub: Scrub {
            hash_emails: true,
            truncate_ips: true,
        },
    };
    let (m, v) = mapped(
        Some(Call::Identify),
        json!({"userId": "Jane@Shop.example", "traits": {"email": "jane@shop.example", "friends": ["bob@shop.example"], "age": 30},
               "context": {"ip": "81.2.69.160"}}),
        &edge,
    );
    let hashed = super::super::enrich::hash_email("jane@shop.example");
    assert_eq!(v["user_id"], Value::from(hashed.clone()));
    assert_eq!(v["traits"]["email"], Value::from(hashed));
    assert_eq!(
        v["traits"]["friends"][0],
        Value::from(super::super::enrich::hash_email("bob@shop.example"))
    );
    assert_eq!(v["traits"]["age"], 30);
    assert_eq!(v["context"]["ip"], "81.2.69.0");
    let text = String::from_utf8(m.data).unwrap();
    assert!(!text.contains('@') && !text.contains("69.160"), "{text}");
    // The partition key is the stored (hashed) id.
    assert_eq!(m.partition_key, v["user_id"].as_str().unwrap());

    // An address in the page URL (a newsletter link) is hashed too, percent-encoded or not.
    let (m, v) = mapped(
        Some(Call::Page),
        json!({"anonymousId": "a-1", "properties": {"url": "https://shop.example/welcome?email=jane%40shop.example&utm_source=newsletter",
               "referrer": "https://mail.example/?to=jane@shop.example"}}),
        &edge,
    );
    let hashed = super::super::enrich::hash_email("jane@shop.example");
    assert_eq!(
        v["context"]["page"]["url"],
        format!("https://shop.example/welcome?email={hashed}&utm_source=newsletter")
    );
    assert_eq!(
        v["context"]["page"]["referrer"],
        format!("https://mail.example/?to={hashed}")
    );
    assert_eq!(v["context"]["campaign"]["source"], "newsletter");
    let text = String::from_utf8(m.data).unwrap();
    assert!(!text.contains("jane"), "{text}");
}

#[test]
fn a_batch_context_applies_under_each_message_context() {
    let shared: Box<RawValue> = RawValue::from_string(
        json!({"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
               "locale": "fr-FR", "ip": "81.2.69.160", "library": {"name": "analytics-ios"}})
        .to_string(),
    )
    .unwrap();
    let mut req = request("ios");
    req.batch_context = SharedContext::parse(&shared);
    let map_one = |msg: Value| {
        let raw: Box<RawValue> = RawValue::from_string(msg.to_string()).unwrap();
        let m = map(&raw, None, &req, &Edge::default());
        serde_json::from_slice::<Value>(&m.data).unwrap()
    };
    // No context of its own: the batch's.
    let v = map_one(json!({"type": "track", "event": "Cart Viewed", "anonymousId": "a-1"}));
    assert_eq!(v["context"]["locale"], "fr-FR");
    assert_eq!(v["context"]["ip"], "81.2.69.160");
    assert_eq!(v["context"]["os"], "iPhone");
    // Its own locale wins; the rest comes from the batch.
    let v = map_one(
        json!({"type": "track", "event": "Cart Viewed", "anonymousId": "a-1",
                           "context": {"locale": "de-DE"}}),
    );
    assert_eq!(v["context"]["locale"], "de-DE");
    assert_eq!(v["context"]["os"], "iPhone");
}

#[test]
fn backend_sources_are_servers_without_the_peer_address() {
    let raw = RawValue::from_string(
        json!({"type": "track", "event": "Order Shipped", "userId": "u", "properties": {"order_id": "o"}}).to_string(),
    )
    .unwrap();
    let m = map(&raw, None, &request("backend"), &Edge::default());
    let v: Value = serde_json::from_slice(&m.data).unwrap();
    assert_eq!(
        v["context"],
        json!({"device_type": "server", "source": "backend"})
    );
    assert_eq!(m.partition_key, "u");
}
