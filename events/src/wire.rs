//! The wire format: an event as JSON, exactly as emitters and the collector put it on the stream.
//!
//! Keys outside this format are ignored, with one use: the collector adds [`keys::ORIGINAL`] (the
//! client's message exactly as it was sent) to an event that fails validation at the edge, so
//! that its bad row keeps what the client sent as well as what the collector made of it.
//!
//! Every field is optional at this level so that a missing field becomes a bad row naming the field
//! (see [`crate::validate`]) rather than an opaque parse error. Strings borrow from the input buffer
//! when they hold no escapes ([`Str`]), so decoding allocates only for lists and escaped text.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A string that borrows from the input when it can.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Str<'_> {
    /// Detaches the string from the input buffer.
    pub fn into_owned(self) -> Str<'static> {
        Str(Cow::Owned(self.0.into_owned()))
    }
}

impl Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Str<'static> {
    fn from(s: String) -> Self {
        Str(Cow::Owned(s))
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Str(Cow::Borrowed(s))
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

/// One event on the wire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event<'a> {
    /// Client-assigned UUID; the key for de-duplication.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Str<'a>>,
    /// One of [`crate::EventName`], snake_case.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<Str<'a>>,
    /// The emitter's own name of a `custom` event ("Newsletter Subscribed"); absent on the others.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub custom_event_name: Option<Str<'a>>,
    /// Version of this contract the emitter wrote; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// RFC 3339 time on the device when the event happened (device clock).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Str<'a>>,
    /// RFC 3339 time on the device when the event was sent (device clock).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Str<'a>>,
    /// RFC 3339 time the server received the event; the stream's arrival time when absent.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties<'a>>,
    /// User traits of identify / signed_up events, kept as JSON text.
    #[serde(
        borrow,
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "raw_json",
        serialize_with = "write_raw_json"
    )]
    pub traits: Option<Str<'a>>,
}

/// Where the event came from: page, campaign, device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Campaign<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub click_ids: Option<ClickIds<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Str<'a>>,
    /// ISO 3166-1 alpha-2.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Str<'a>>,
    /// desktop, mobile, tablet, bot, server.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<Str<'a>>,
    /// Browser family from the user agent ("Chrome", "Safari"), set by the collector.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<Str<'a>>,
    /// Operating system from the user agent ("iOS", "Windows 10"), set by the collector.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Str<'a>>,
    /// The emitting source (web, ios, android, backend), set by the collector from the write key.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Str<'a>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Page<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Str<'a>>,
}

/// UTM parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Campaign<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Str<'a>>,
}

/// Ad-network click identifiers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClickIds<'a> {
    /// Google Ads.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub gclid: Option<Str<'a>>,
    /// Meta.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub fbclid: Option<Str<'a>>,
    /// Microsoft Ads.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub msclkid: Option<Str<'a>>,
}

/// A product as it appears in product, cart, checkout and order events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Product<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Str<'a>>,
    /// Unit price in the event's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<Str<'a>>,
}

macro_rules! properties {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty ),+ $(,)?) => {
        /// Typed properties of the contract, plus whatever else the emitter sent (`extra`).
        #[derive(Clone, Debug, Default)]
        pub struct Properties<'a> {
            $( $(#[$doc])* pub $field: Option<$ty>, )+
            /// Properties outside the contract, in arrival order, kept as JSON.
            pub extra: Vec<(Str<'a>, Box<RawValue>)>,
        }

        impl PartialEq for Properties<'_> {
            fn eq(&self, other: &Self) -> bool {
                $( self.$field == other.$field && )+
                self.extra.len() == other.extra.len()
                    && self.extra.iter().zip(&other.extra).all(|((k1, v1), (k2, v2))| k1 == k2 && v1.get() == v2.get())
            }
        }

        impl Serialize for Properties<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                $( if let Some(v) = &self.$field { map.serialize_entry(stringify!($field), v)?; } )+
                for (k, v) in &self.extra {
                    map.serialize_entry(&**k, v)?;
                }
                map.end()
            }
        }

        impl<'de: 'a, 'a> Deserialize<'de> for Properties<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct PropertiesVisitor<'a>(std::marker::PhantomData<&'a ()>);
                impl<'de: 'a, 'a> Visitor<'de> for PropertiesVisitor<'a> {
                    type Value = Properties<'a>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("an object of event properties")
                    }
                    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                        let mut p = Properties::default();
                        while let Some(key) = map.next_key::<Str<'de>>()? {
                            match &*key {
                                $( stringify!($field) => p.$field = map.next_value()?, )+
                                _ => {
                                    let value: Box<RawValue> = map.next_value()?;
                                    p.extra.push((key, value));
                                }
                            }
                        }
                        Ok(p)
                    }
                }
                d.deserialize_map(PropertiesVisitor(std::marker::PhantomData))
            }
        }
    };
}

properties! {
    /// Products the event is about; exactly one for single-product events.
    products: Vec<Product<'a>>,
    order_id: Str<'a>,
    cart_id: Str<'a>,
    checkout_id: Str<'a>,
    checkout_step: i64,
    /// Order total after discounts, with tax and shipping.
    total: f64,
    /// Revenue attributed to the order (total minus tax and shipping).
    revenue: f64,
    tax: f64,
    shipping: f64,
    discount: f64,
    /// ISO 4217 code of every amount in the event.
    currency: Str<'a>,
    coupon: Str<'a>,
    payment_method: Str<'a>,
    /// A hash of the card number, never the number.
    card_fingerprint: Str<'a>,
    billing_country: Str<'a>,
    shipping_country: Str<'a>,
    /// Search query of products_searched.
    query: Str<'a>,
    list_id: Str<'a>,
    category: Str<'a>,
    promotion_id: Str<'a>,
    promotion_name: Str<'a>,
    creative: Str<'a>,
    /// Review rating, 1 to 5.
    rating: i64,
    /// Why a payment failed, an order was cancelled, refunded or returned.
    reason: Str<'a>,
    carrier: Str<'a>,
}

/// JSON keys of the wire format that are not column names (those are in [`crate::fields`]), for
/// code that writes the format without these structs (the collector writes it straight from the
/// client's JSON).
pub mod keys {
    pub const CONTEXT: &str = "context";
    pub const PROPERTIES: &str = "properties";
    pub const PAGE: &str = "page";
    pub const CAMPAIGN: &str = "campaign";
    pub const CLICK_IDS: &str = "click_ids";
    /// Keys of `context.page`.
    pub const URL: &str = "url";
    pub const PATH: &str = "path";
    pub const REFERRER: &str = "referrer";
    pub const TITLE: &str = "title";
    /// Keys of `context.campaign`.
    pub const CAMPAIGN_SOURCE: &str = "source";
    pub const CAMPAIGN_MEDIUM: &str = "medium";
    pub const CAMPAIGN_NAME: &str = "name";
    pub const CAMPAIGN_TERM: &str = "term";
    pub const CAMPAIGN_CONTENT: &str = "content";
    /// The search query of products_searched (column `search_query`).
    pub const QUERY: &str = "query";
    /// The list category of product_list_viewed (column `list_category`).
    pub const LIST_CATEGORY: &str = "category";
    /// The group of a `group` event, kept in `extra_properties`.
    pub const GROUP_ID: &str = "group_id";
    /// A client's message id that is not a UUID (the event id is derived from it), kept in
    /// `extra_properties`.
    pub const MESSAGE_ID: &str = "message_id";
    /// The client's message as sent, on events that failed validation at the collector.
    pub const ORIGINAL: &str = "original";
}

fn raw_json<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Str<'a>>, D::Error> {
    let raw: Option<&'de RawValue> = Option::deserialize(d)?;
    Ok(raw.map(|r| Str(Cow::Borrowed(r.get()))))
}

fn write_raw_json<S: Serializer>(v: &Option<Str<'_>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(text) => {
            let raw = RawValue::from_string(text.to_string()).map_err(serde::ser::Error::custom)?;
            raw.serialize(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_and_extras_are_kept() {
        let json = br#"{"event_id":"a","properties":{"order_id":"o-1","total":10.5,"gift_wrap":{"color":"red"},"note":"hi\n"},"traits":{"email":"x@y.z"}}"#;
        let e: Event<'_> = serde_json::from_slice(json).unwrap();
        assert!(matches!(e.event_id.as_ref().unwrap().0, Cow::Borrowed(_)));
        let p = e.properties.as_ref().unwrap();
        assert_eq!(p.order_id.as_deref(), Some("o-1"));
        assert_eq!(p.total, Some(10.5));
        assert_eq!(p.extra.len(), 2);
        assert_eq!(p.extra[0].1.get(), r#"{"color":"red"}"#);
        assert_eq!(e.traits.as_deref(), Some(r#"{"email":"x@y.z"}"#));
        let back = serde_json::to_string(&e).unwrap();
        let again: Event<'_> = serde_json::from_str(&back).unwrap();
        assert_eq!(again, e);
    }
}
