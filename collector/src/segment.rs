//! Messages of the Segment tracking API → events of the contract, as wire JSON.
//!
//! The mapping re-keys the client's JSON; it does not re-type it. Every value the contract has a
//! place for is copied as the client sent it (`"total": "abc"` stays a string), so that the
//! streaming stage's validation judges it and names the field in the bad row, exactly as it does
//! for any emitter. The collector only computes what the request itself knows: the event id (from
//! `messageId`), `received_at`, the source of the write key, and the edge enrichment.
//!
//! | Segment | contract |
//! |---|---|
//! | `track` "Order Completed", "Product Viewed", … (names of the e-commerce spec v2, any case, spaces or underscores) | that [`EventName`] (`order_completed`, …); "Product Added to Wishlist" → `wishlist_product_added`, "Signed In" → `logged_in` |
//! | any other `track` | `custom`, the name in `custom_event_name` |
//! | `page` / `screen` | `page_viewed` / `screen_viewed`; `properties.url, path, referrer, title` → `context.page` (a screen's `name` is its title) |
//! | `identify` | `identify`, `traits` kept as JSON |
//! | `alias` | `alias`: `previousId` → `anonymous_id`, `userId` → `user_id` |
//! | `group` | `group`: `groupId` → `properties.group_id`, `traits` kept |
//! | `messageId` | `event_id`: the UUID itself, or a UUID v5 of the write key and the id (the id kept as `properties.message_id`); without one, a UUID v5 of the key and the message's bytes, so a retried message keeps its id |
//! | `originalTimestamp` (else `timestamp`, else `sentAt`) / `sentAt` (the message's, else the batch's) | `occurred_at` / `sent_at`; `received_at` is the server's clock |
//! | a batch's own `context` (analytics-ios and others send the shared part once) | under each message's `context`, key by key (the message's wins) |
//! | `anonymousId`, `userId` (numbers become strings) | `anonymous_id`, `user_id` |
//! | `context.page`, `context.campaign` (or the page URL's `utm_*`), `gclid` / `fbclid` / `msclkid` of the page URL, `userAgent`, `ip` (else the client's address), `locale`, `device.id`, `sessionId` | `context.page`, `context.campaign`, `context.click_ids`, `user_agent`, `ip`, `locale`, `device_id`, `session_id` |
//! | single-product events: `product_id` (or `id`), `sku`, `name`, `category`, `brand`, `variant`, `price`, `quantity`, `position`, `coupon` | `products[0]` |
//! | `step`; `value` (when there is no `total`); a promotion's `name`; `coupon_id` of Coupon Applied; a page's `category` | `checkout_step`; `total`; `promotion_name`; `coupon`; `page_category` |
//! | other properties | kept: typed where the contract has the property, the rest in `extra_properties` |
//!
//! Products keep the contract's fields (`id` becomes `product_id`); other product fields (`url`,
//! `image_url`) are not part of the contract and are not kept. Currency codes are upper-cased.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use shoplake_events::EventName;
use shoplake_events::fields::{
    ANONYMOUS_ID, BRAND, BROWSER, CATEGORY, CHECKOUT_STEP, COUNTRY, COUPON, CURRENCY,
    CUSTOM_EVENT_NAME, DEVICE_ID, DEVICE_TYPE, EVENT_ID, EVENT_NAME, FBCLID, GCLID, IP, LOCALE,
    MSCLKID, OCCURRED_AT, OS, POSITION, PRICE, PRODUCT_ID, PRODUCT_NAME, PRODUCTS, PROMOTION_NAME,
    QUANTITY, RECEIVED_AT, SENT_AT, SESSION_ID, SKU, SOURCE, TOTAL, TRAITS, USER_AGENT, USER_ID,
    VARIANT,
};
use shoplake_events::wire::keys;
use shoplake_ingest::MAX_PARTITION_KEY_CHARS;
use uuid::Uuid;

use super::enrich::{GeoIp, Scrub, may_hold_email, parse_user_agent, truncate_ip};

/// The namespace of event ids derived from messages (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_2a1e_8b7d_4c39_9e61_2d4b_7a8c_1f03);

/// A call of the tracking API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Track,
    Page,
    Screen,
    Identify,
    Alias,
    Group,
}

impl Call {
    /// The call of a batch element's `type`.
    pub fn from_type(t: &str) -> Option<Call> {
        Some(match t {
            "track" => Call::Track,
            "page" => Call::Page,
            "screen" => Call::Screen,
            "identify" => Call::Identify,
            "alias" => Call::Alias,
            "group" => Call::Group,
            _ => return None,
        })
    }
}

/// The contract's event for a Segment track event name, when it is one of the spec's.
pub fn contract_name(segment: &str) -> Option<EventName> {
    let mut norm = String::with_capacity(segment.len());
    for c in segment.trim().chars() {
        let c = if c == ' ' || c == '-' {
            '_'
        } else {
            c.to_ascii_lowercase()
        };
        if !(c == '_' && (norm.is_empty() || norm.ends_with('_'))) {
            norm.push(c);
        }
    }
    let name = match norm.trim_end_matches('_') {
        "product_added_to_wishlist" => EventName::WishlistProductAdded,
        "signed_in" => EventName::LoggedIn,
        other => other.parse().ok()?,
    };
    // These come from their own calls, with fields a track event does not have.
    match name {
        EventName::Identify | EventName::Alias | EventName::Group | EventName::Custom => None,
        n => Some(n),
    }
}

/// A message, every field as the client's JSON (unknown fields such as `integrations` ignored).
#[derive(Default, Deserialize)]
struct Message<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "messageId")]
    message_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "anonymousId")]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "previousId")]
    previous_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "groupId")]
    group_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    category: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "originalTimestamp")]
    original_timestamp: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
struct SegContext<'a> {
    #[serde(borrow, default)]
    ip: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "userAgent")]
    user_agent: Option<&'a RawValue>,
    #[serde(borrow, default)]
    locale: Option<&'a RawValue>,
    #[serde(borrow, default)]
    page: Option<&'a RawValue>,
    #[serde(borrow, default)]
    campaign: Option<&'a RawValue>,
    #[serde(borrow, default)]
    device: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "sessionId")]
    session_id: Option<&'a RawValue>,
}

/// A batch's own `context`, read once per request and applied under each of its messages'.
#[derive(Clone, Copy, Debug)]
pub struct SharedContext<'a>(SegContext<'a>);

impl<'a> SharedContext<'a> {
    /// The batch's context, when it is a JSON object (anything else is not applied).
    pub fn parse(raw: &'a RawValue) -> Option<Self> {
        object::<SegContext<'_>>(raw).map(SharedContext)
    }
}

impl<'a> SegContext<'a> {
    /// This context with `under`'s values where it has none.
    fn over(self, under: SegContext<'a>) -> SegContext<'a> {
        SegContext {
            ip: self.ip.or(under.ip),
            user_agent: self.user_agent.or(under.user_agent),
            locale: self.locale.or(under.locale),
            page: self.page.or(under.page),
            campaign: self.campaign.or(under.campaign),
            device: self.device.or(under.device),
            session_id: self.session_id.or(under.session_id),
        }
    }
}

#[derive(Default, Deserialize)]
struct SegPage<'a> {
    #[serde(borrow, default)]
    url: Option<&'a RawValue>,
    #[serde(borrow, default)]
    path: Option<&'a RawValue>,
    #[serde(borrow, default)]
    referrer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    title: Option<&'a RawValue>,
    #[serde(borrow, default)]
    search: Option<&'a RawValue>,
}

#[derive(Default, Deserialize)]
struct SegCampaign<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    medium: Option<&'a RawValue>,
    #[serde(borrow, default)]
    term: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Default, Deserialize)]
struct SegDevice<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
}

/// A JSON object's entries in order, values raw (keys borrowed unless escaped).
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<shoplake_events::Str<'de>>()? {
                    out.push((k.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn is_object(json: &str) -> bool {
    json.trim_start().starts_with('{')
}

/// Parses a raw value as `T` when it is a JSON object.
fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    if !is_object(raw.get()) {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The string in a raw value, when it is one.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// An id as the contract wants it: strings as they are, numbers as their text; anything else is
/// left to validation.
enum Id<'a> {
    Text(Cow<'a, str>),
    Other(&'a RawValue),
}

fn id(raw: &RawValue) -> Id<'_> {
    if let Some(s) = string(raw) {
        return Id::Text(s);
    }
    let text = raw.get();
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Id::Text(Cow::Borrowed(text));
    }
    Id::Other(raw)
}

/// Minimal JSON writer: objects, keys, strings and raw values.
struct Json {
    out: Vec<u8>,
    first: Vec<bool>,
}

impl Json {
    fn new(capacity: usize) -> Self {
        Json {
            out: Vec::with_capacity(capacity),
            first: Vec::with_capacity(4),
        }
    }

    fn open(&mut self) {
        self.out.push(b'{');
        self.first.push(true);
    }

    fn close(&mut self) {
        self.out.push(b'}');
        self.first.pop();
    }

    fn key(&mut self, k: &str) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(b',');
            }
            *first = false;
        }
        escape(&mut self.out, k);
        self.out.push(b':');
    }

    fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.extend_from_slice(v.as_bytes());
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape(&mut self.out, v);
    }

    fn obj(&mut self, k: &str) {
        self.key(k);
        self.open();
    }
}

fn escape(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// What the HTTP request adds to each of its messages.
#[derive(Clone, Debug)]
pub struct RequestContext<'r> {
    /// Server time, RFC 3339, and as UTC micros.
    pub received_at: &'r str,
    pub received_micros: i64,
    /// The batch's `sentAt`, for messages without their own.
    pub batch_sent_at: Option<&'r RawValue>,
    /// The batch's `context`, under each message's own (a message's key wins).
    pub batch_context: Option<SharedContext<'r>>,
    /// The write key's source and id.
    pub source: &'r str,
    pub key_id: &'r str,
    /// The client's address (peer, or X-Forwarded-For behind a trusted proxy).
    pub client_ip: Option<IpAddr>,
}

/// The edge's enrichment and privacy settings.
#[derive(Debug, Default)]
pub struct Edge {
    pub geo: Option<GeoIp>,
    pub scrub: Scrub,
}

/// One message made into a stream record.
#[derive(Clone, Debug)]
pub struct Mapped {
    /// Wire JSON of the event (or, for a message that is not an object, the message as sent).
    pub data: Vec<u8>,
    pub partition_key: String,
    pub event_id: String,
}

/// The event id of a message, and the client's id when it is not a UUID (kept in properties).
fn event_id<'a>(
    message_id: Option<&'a RawValue>,
    key_id: &str,
    raw: &str,
) -> (String, Option<&'a RawValue>) {
    let derive = |bytes: &[u8]| {
        let mut name = Vec::with_capacity(key_id.len() + 1 + bytes.len());
        name.extend_from_slice(key_id.as_bytes());
        name.push(b'\n');
        name.extend_from_slice(bytes);
        Uuid::new_v5(&NAMESPACE, &name).to_string()
    };
    match message_id.map(id) {
        Some(Id::Text(s)) => match Uuid::try_parse(&s) {
            Ok(u) => (u.to_string(), None),
            Err(_) => (derive(s.as_bytes()), message_id),
        },
        Some(Id::Other(v)) => (derive(v.get().as_bytes()), message_id),
        None => (derive(raw.as_bytes()), None),
    }
}

fn partition_key(candidates: &[Option<&str>], fallback: &str) -> String {
    let key = candidates
        .iter()
        .flatten()
        .find(|k| !k.is_empty())
        .copied()
        .unwrap_or(fallback);
    match key.char_indices().nth(MAX_PARTITION_KEY_CHARS) {
        Some((i, _)) => key[..i].to_owned(),
        None => key.to_owned(),
    }
}

/// A message that cannot be mapped (not a JSON object): it goes onto the stream as it was sent
/// (after the privacy options), and the stage makes it a bad row with its reason.
pub fn as_is(raw: &str, request: &RequestContext<'_>, edge: &Edge) -> Mapped {
    let (event_id, _) = event_id(None, request.key_id, raw);
    Mapped {
        data: edge.scrub.json(raw).into_owned().into_bytes(),
        partition_key: event_id.clone(),
        event_id,
    }
}

/// Where a property goes.
enum Dest {
    /// Into `products[0]`, under this key.
    Product(&'static str),
    /// Into `context.page`, under this key.
    Page(&'static str),
    /// Into properties under another key.
    Rename(&'static str),
    /// Into properties as it is.
    Keep,
}

const PRODUCT_KEYS: &[&str] = &[
    PRODUCT_ID,
    SKU,
    PRODUCT_NAME,
    CATEGORY,
    BRAND,
    VARIANT,
    PRICE,
    QUANTITY,
    POSITION,
    COUPON,
];

/// `page_category`: a page's or screen's category (the contract's `category` is a list's).
const PAGE_CATEGORY: &str = "page_category";

fn route(name: Option<EventName>, gather_product: bool, key: &str) -> Dest {
    use EventName as N;
    let Some(n) = name else { return Dest::Keep };
    if n == N::Custom {
        return Dest::Keep;
    }
    if gather_product {
        if let Some(k) = PRODUCT_KEYS.iter().find(|k| **k == key) {
            return Dest::Product(k);
        }
        if key == "id" {
            return Dest::Product(PRODUCT_ID);
        }
    }
    if matches!(n, N::PageViewed | N::ScreenViewed) {
        match key {
            keys::URL => return Dest::Page(keys::URL),
            keys::PATH => return Dest::Page(keys::PATH),
            keys::REFERRER => return Dest::Page(keys::REFERRER),
            keys::TITLE => return Dest::Page(keys::TITLE),
            keys::LIST_CATEGORY => return Dest::Rename(PAGE_CATEGORY),
            _ => {}
        }
    }
    match key {
        "step" => Dest::Rename(CHECKOUT_STEP),
        "value" => Dest::Rename(TOTAL),
        "name" if matches!(n, N::PromotionViewed | N::PromotionClicked) => {
            Dest::Rename(PROMOTION_NAME)
        }
        "coupon_id" if n == N::CouponApplied => Dest::Rename(COUPON),
        _ => Dest::Keep,
    }
}

/// A currency code upper-cased, when it is a three-letter string.
fn currency(raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    if text.len() == 5
        && text.starts_with('"')
        && text.ends_with('"')
        && text[1..4].bytes().all(|b| b.is_ascii_alphabetic())
        && text[1..4].bytes().any(|b| b.is_ascii_lowercase())
    {
        return Cow::Owned(text.to_ascii_uppercase());
    }
    Cow::Borrowed(text)
}

/// A property's value as written: currencies upper-cased, products' ids renamed.
fn property<'v>(key: &str, v: &'v RawValue) -> Cow<'v, str> {
    match key {
        CURRENCY => currency(v),
        PRODUCTS => products(v),
        _ => Cow::Borrowed(v.get()),
    }
}

/// Products with `id` renamed to `product_id` (when they have no `product_id`).
fn products(raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    if !text.contains("\"id\"") {
        return Cow::Borrowed(text);
    }
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return Cow::Borrowed(text);
    };
    let mut j = Json::new(text.len() + 16);
    j.out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            j.out.push(b',');
        }
        match object::<Entries<'_>>(item) {
            Some(Entries(entries)) => {
                let has_product_id = entries.iter().any(|(k, _)| k == PRODUCT_ID);
                j.open();
                for (k, v) in &entries {
                    let k = if k == "id" && !has_product_id {
                        PRODUCT_ID
                    } else {
                        k
                    };
                    j.raw(k, v.get());
                }
                j.close();
            }
            None => j.out.extend_from_slice(item.get().as_bytes()),
        }
    }
    j.out.push(b']');
    // The writer only wrote valid UTF-8 (keys and raw JSON text).
    Cow::Owned(String::from_utf8(j.out).unwrap_or_else(|_| text.to_owned()))
}

/// Query parameters of a URL that the contract keeps (campaign and click ids).
#[derive(Default)]
struct UrlParams {
    utm: [Option<String>; 5],
    click_ids: [Option<String>; 3],
}

fn url_params(page_url: Option<&str>, search: Option<&str>) -> UrlParams {
    let mut p = UrlParams::default();
    let query = match (page_url, search) {
        (Some(u), _) if u.contains('?') => u.split_once('?').map(|(_, q)| q),
        (_, Some(s)) => Some(s.trim_start_matches('?')),
        _ => None,
    };
    let Some(query) = query else { return p };
    let query = query.split('#').next().unwrap_or_default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*k {
            "utm_source" => &mut p.utm[0],
            "utm_medium" => &mut p.utm[1],
            "utm_campaign" => &mut p.utm[2],
            "utm_term" => &mut p.utm[3],
            "utm_content" => &mut p.utm[4],
            "gclid" => &mut p.click_ids[0],
            "fbclid" => &mut p.click_ids[1],
            "msclkid" => &mut p.click_ids[2],
            _ => continue,
        };
        if slot.is_none() && !v.is_empty() {
            *slot = Some(v.into_owned());
        }
    }
    p
}

/// Maps one message. `call` is the endpoint's call, or None for a batch element (its `type`
/// says). A message that is not a JSON object goes on [`as_is`].
pub fn map(
    raw: &RawValue,
    call: Option<Call>,
    request: &RequestContext<'_>,
    edge: &Edge,
) -> Mapped {
    let text = raw.get();
    let Some(msg) = object::<Message<'_>>(raw) else {
        return as_is(text, request, edge);
    };
    let scrub = edge.scrub;

    // Which call, hence which event.
    enum Kind<'a> {
        Known(Call),
        Unknown(&'a RawValue),
        Missing,
    }
    let kind = match call {
        Some(c) => Kind::Known(c),
        None => match msg.kind {
            None => Kind::Missing,
            Some(t) => match string(t).as_deref().and_then(Call::from_type) {
                Some(c) => Kind::Known(c),
                None => Kind::Unknown(t),
            },
        },
    };
    let mut custom_name: Option<&RawValue> = None;
    let name: Option<EventName> = match kind {
        Kind::Known(Call::Track) => {
            match msg.event.and_then(string).and_then(|e| contract_name(&e)) {
                Some(n) => Some(n),
                None => {
                    custom_name = msg.event;
                    Some(EventName::Custom)
                }
            }
        }
        Kind::Known(Call::Page) => Some(EventName::PageViewed),
        Kind::Known(Call::Screen) => Some(EventName::ScreenViewed),
        Kind::Known(Call::Identify) => Some(EventName::Identify),
        Kind::Known(Call::Alias) => Some(EventName::Alias),
        Kind::Known(Call::Group) => Some(EventName::Group),
        Kind::Unknown(_) | Kind::Missing => None,
    };

    let (event_id, kept_message_id) = event_id(msg.message_id, request.key_id, text);

    // Properties, routed.
    let props: Option<Result<Entries<'_>, &RawValue>> =
        msg.properties.map(|p| object::<Entries<'_>>(p).ok_or(p));
    let entries: &[(Cow<'_, str>, &RawValue)] = match &props {
        Some(Ok(e)) => &e.0,
        _ => &[],
    };
    let has = |k: &str| entries.iter().any(|(key, _)| key.as_ref() == k);
    let gather = name.is_some_and(|n| n.is_single_product()) && !has(PRODUCTS);
    let mut product: Vec<(&'static str, &RawValue)> = Vec::new();
    let mut page_props: Vec<(&'static str, &RawValue)> = Vec::new();
    let mut out_props: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(entries.len() + 2);
    for (k, v) in entries {
        match route(name, gather, k) {
            Dest::Product(to) if k.as_ref() == to || !has(to) => product.push((to, v)),
            Dest::Page(to) => page_props.push((to, v)),
            Dest::Rename(to) if !has(to) => out_props.push((to, property(to, v))),
            _ => out_props.push((k.as_ref(), property(k, v))),
        }
    }
    let mut extra: Vec<(&'static str, Cow<'_, str>)> = Vec::new();
    if let Some(m) = kept_message_id
        && !has(keys::MESSAGE_ID)
    {
        extra.push((keys::MESSAGE_ID, Cow::Borrowed(m.get())));
    }
    if name == Some(EventName::Group)
        && let Some(g) = msg.group_id
        && !has(keys::GROUP_ID)
    {
        let value = match id(g) {
            Id::Text(s) => {
                let mut buf = Vec::with_capacity(s.len() + 2);
                escape(&mut buf, &s);
                Cow::Owned(String::from_utf8(buf).unwrap_or_default())
            }
            Id::Other(v) => Cow::Borrowed(v.get()),
        };
        extra.push((keys::GROUP_ID, value));
    }
    if name == Some(EventName::PageViewed)
        && let Some(n) = msg.name
        && !has(PRODUCT_NAME)
    {
        extra.push((PRODUCT_NAME, Cow::Borrowed(n.get())));
    }
    if matches!(name, Some(EventName::PageViewed | EventName::ScreenViewed))
        && let Some(c) = msg.category
        && !has(PAGE_CATEGORY)
        && !has(keys::LIST_CATEGORY)
    {
        extra.push((PAGE_CATEGORY, Cow::Borrowed(c.get())));
    }

    let mut j = Json::new(text.len() + 256);
    j.open();
    j.str(EVENT_ID, &event_id);
    match (name, &kind) {
        (Some(n), _) => j.str(EVENT_NAME, n.as_str()),
        (None, Kind::Unknown(t)) => j.raw(EVENT_NAME, t.get()),
        _ => {}
    }
    if let Some(c) = custom_name {
        j.raw(CUSTOM_EVENT_NAME, c.get());
    }

    // Times.
    let occurred = msg
        .original_timestamp
        .or(msg.timestamp)
        .or(msg.sent_at)
        .or(request.batch_sent_at);
    match occurred {
        Some(t) => j.raw(OCCURRED_AT, t.get()),
        None => j.str(OCCURRED_AT, request.received_at),
    }
    if let Some(t) = msg.sent_at.or(request.batch_sent_at) {
        j.raw(SENT_AT, t.get());
    }
    j.str(RECEIVED_AT, request.received_at);

    // Identities (alias: the previous id is the one linked to the user).
    let anonymous = if name == Some(EventName::Alias) {
        msg.previous_id
    } else {
        msg.anonymous_id
    };
    let mut ids: [Option<String>; 2] = [None, None];
    for (i, (field, value)) in [(ANONYMOUS_ID, anonymous), (USER_ID, msg.user_id)]
        .into_iter()
        .enumerate()
    {
        match value.map(id) {
            Some(Id::Text(s)) => {
                let s = scrub.string(&s).into_owned();
                j.str(field, &s);
                ids[i] = Some(s);
            }
            Some(Id::Other(v)) => j.raw(field, v.get()),
            None => {}
        }
    }

    // Context: the message's, over the batch's key by key.
    let ctx: Option<Result<SegContext<'_>, &RawValue>> = match (msg.context, request.batch_context)
    {
        (Some(c), shared) => Some(match object::<SegContext<'_>>(c) {
            Some(own) => Ok(match shared {
                Some(SharedContext(shared)) => own.over(shared),
                None => own,
            }),
            None => Err(c),
        }),
        (None, shared) => shared.map(|SharedContext(c)| Ok(c)),
    };
    let empty = SegContext::default();
    let c = match &ctx {
        Some(Err(raw)) => {
            j.raw(keys::CONTEXT, raw.get());
            None
        }
        Some(Ok(c)) => Some(c),
        None => Some(&empty),
    };
    if let Some(c) = c {
        if let Some(s) = c.session_id {
            match id(s) {
                Id::Text(t) => j.str(SESSION_ID, &t),
                Id::Other(v) => j.raw(SESSION_ID, v.get()),
            }
        }
        j.obj(keys::CONTEXT);
        // Page: the context's, with a page call's own properties over it.
        let page: Option<Result<SegPage<'_>, &RawValue>> =
            c.page.map(|p| object::<SegPage<'_>>(p).ok_or(p));
        let mut url_for_params: Option<Cow<'_, str>> = None;
        let mut search: Option<Cow<'_, str>> = None;
        match &page {
            Some(Err(raw)) if page_props.is_empty() => j.raw(keys::PAGE, raw.get()),
            _ => {
                let p = match &page {
                    Some(Ok(p)) => Some(p),
                    _ => None,
                };
                let from_props = |k: &str| page_props.iter().find(|(pk, _)| *pk == k).map(|x| x.1);
                let screen_title = (name == Some(EventName::ScreenViewed))
                    .then_some(msg.name)
                    .flatten();
                let fields = [
                    (keys::URL, from_props(keys::URL).or(p.and_then(|p| p.url))),
                    (
                        keys::PATH,
                        from_props(keys::PATH).or(p.and_then(|p| p.path)),
                    ),
                    (
                        keys::REFERRER,
                        from_props(keys::REFERRER).or(p.and_then(|p| p.referrer)),
                    ),
                    (
                        keys::TITLE,
                        from_props(keys::TITLE)
                            .or(screen_title)
                            .or(p.and_then(|p| p.title)),
                    ),
                ];
                if fields.iter().any(|(_, v)| v.is_some()) {
                    j.obj(keys::PAGE);
                    for (k, v) in fields {
                        if let Some(v) = v {
                            match string(v) {
                                Some(s) if scrub.hash_emails && may_hold_email(&s) => {
                                    j.str(k, &scrub.string(&s))
                                }
                                _ => j.raw(k, v.get()),
                            }
                        }
                    }
                    j.close();
                }
                url_for_params = fields[0].1.and_then(string);
                search = p.and_then(|p| p.search).and_then(string);
            }
        }
        let params = url_params(url_for_params.as_deref(), search.as_deref());
        // Campaign: the context's, else the page URL's utm_* parameters.
        match c.campaign.map(|cp| object::<SegCampaign<'_>>(cp).ok_or(cp)) {
            Some(Ok(cp)) => {
                j.obj(keys::CAMPAIGN);
                for (k, v) in [
                    (keys::CAMPAIGN_SOURCE, cp.source),
                    (keys::CAMPAIGN_MEDIUM, cp.medium),
                    (keys::CAMPAIGN_NAME, cp.name),
                    (keys::CAMPAIGN_TERM, cp.term),
                    (keys::CAMPAIGN_CONTENT, cp.content),
                ] {
                    if let Some(v) = v {
                        j.raw(k, v.get());
                    }
                }
                j.close();
            }
            Some(Err(raw)) => j.raw(keys::CAMPAIGN, raw.get()),
            None if params.utm.iter().any(Option::is_some) => {
                j.obj(keys::CAMPAIGN);
                for (k, v) in [
                    keys::CAMPAIGN_SOURCE,
                    keys::CAMPAIGN_MEDIUM,
                    keys::CAMPAIGN_NAME,
                    keys::CAMPAIGN_TERM,
                    keys::CAMPAIGN_CONTENT,
                ]
                .into_iter()
                .zip(&params.utm)
                {
                    if let Some(v) = v {
                        j.str(k, v);
                    }
                }
                j.close();
            }
            None => {}
        }
        if params.click_ids.iter().any(Option::is_some) {
            j.obj(keys::CLICK_IDS);
            for (k, v) in [GCLID, FBCLID, MSCLKID].into_iter().zip(&params.click_ids) {
                if let Some(v) = v {
                    j.str(k, v);
                }
            }
            j.close();
        }

        // User agent → browser, OS, device type.
        let mut device_type: Option<&str> = None;
        let (mut browser, mut os) = (None, None);
        if let Some(ua) = c.user_agent {
            j.raw(USER_AGENT, ua.get());
            if let Some(ua) = string(ua) {
                let agent = parse_user_agent(&ua);
                (browser, os, device_type) = (agent.browser, agent.os, agent.device_type);
            }
        }
        let device: Option<SegDevice<'_>> = c.device.and_then(object);
        if device_type.is_none()
            && let Some(d) = &device
            && let Some(kind) = d.kind.and_then(string)
            && matches!(&*kind.to_ascii_lowercase(), "ios" | "android")
        {
            let tablet = d
                .model
                .and_then(string)
                .is_some_and(|m| m.contains("iPad") || m.to_ascii_lowercase().contains("tab"));
            device_type = Some(if tablet { "tablet" } else { "mobile" });
        }
        if device_type.is_none() && request.source == "backend" {
            device_type = Some("server");
        }

        // IP → country, then the privacy option.
        let (ip_value, ip_addr): (Option<Cow<'_, str>>, Option<IpAddr>) = match c.ip {
            Some(raw_ip) => match string(raw_ip) {
                Some(s) => {
                    let addr = s.trim().parse::<IpAddr>().ok();
                    (Some(s), addr)
                }
                None => {
                    j.raw(IP, raw_ip.get());
                    (None, None)
                }
            },
            None if request.source != "backend" => (None, request.client_ip),
            None => (None, None),
        };
        match (ip_addr, ip_value) {
            (Some(addr), _) => {
                let stored = if scrub.truncate_ips {
                    truncate_ip(addr)
                } else {
                    addr
                };
                j.str(IP, &stored.to_string());
                if let Some(country) = edge.geo.as_ref().and_then(|g| g.country(addr)) {
                    j.str(COUNTRY, &country);
                }
            }
            // Not an address: kept as sent, unless addresses are to be truncated.
            (None, Some(s)) if !scrub.truncate_ips => j.str(IP, &s),
            _ => {}
        }
        if let Some(l) = c.locale {
            j.raw(LOCALE, l.get());
        }
        if let Some(t) = device_type {
            j.str(DEVICE_TYPE, t);
        }
        if let Some(b) = browser {
            j.str(BROWSER, b);
        }
        if let Some(o) = os {
            j.str(OS, o);
        }
        if let Some(d) = device.as_ref().and_then(|d| d.id) {
            match id(d) {
                Id::Text(t) => j.str(DEVICE_ID, &t),
                Id::Other(v) => j.raw(DEVICE_ID, v.get()),
            }
        }
        j.str(SOURCE, request.source);
        j.close();
    }

    // Properties.
    match &props {
        Some(Err(raw)) => j.raw(keys::PROPERTIES, raw.get()),
        _ if product.is_empty() && out_props.is_empty() && extra.is_empty() => {}
        _ => {
            j.obj(keys::PROPERTIES);
            if !product.is_empty() {
                j.key(PRODUCTS);
                j.out.push(b'[');
                j.open();
                for (k, v) in &product {
                    j.raw(k, &scrub.json(v.get()));
                }
                j.close();
                j.out.push(b']');
            }
            for (k, v) in out_props.iter().chain(&extra) {
                j.raw(k, &scrub.json(v));
            }
            j.close();
        }
    }

    // Traits of identify and group.
    if matches!(name, Some(EventName::Identify | EventName::Group))
        && let Some(t) = msg.traits
    {
        j.raw(TRAITS, &scrub.json(t.get()));
    }
    j.close();

    let partition_key = partition_key(&[ids[0].as_deref(), ids[1].as_deref()], &event_id);
    Mapped {
        data: j.out,
        partition_key,
        event_id,
    }
}

/// Appends the client's message to a mapped event that failed validation at the edge, as
/// [`keys::ORIGINAL`], so that its bad row keeps what the client sent.
pub fn with_original(mapped: &mut Mapped, raw: &str, scrub: Scrub) {
    if mapped.data.last() != Some(&b'}') || !mapped.data.starts_with(b"{") {
        return;
    }
    mapped.data.pop();
    mapped.data.push(b',');
    escape(&mut mapped.data, keys::ORIGINAL);
    mapped.data.push(b':');
    mapped.data.extend_from_slice(scrub.json(raw).as_bytes());
    mapped.data.push(b'}');
}

#[cfg(test)]
mod tests;
