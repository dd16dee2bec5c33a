//! The features rules are written over: their names, types and meaning, and how they are computed
//! for an order from the engine's state.
//!
//! Every feature has a fixed type, which is how a rule's condition sees it: counts are integers,
//! amounts, ages and ratios are floats, flags are booleans (`new_device && amount > 500`).
//! Window counts are over event time and *include the order being scored* (a shopper's first
//! order has `user_orders_10m == 1`); failed payments count only earlier failures; distinct counts
//! (`device_accounts_1d`, `device_cards_1d`, …) include the order's own account and card.
//!
//! Entities: the **account** is the user id, or the anonymous id of a guest checkout; the
//! **device** is `context.device_id`, else the anonymous id (one browser or app install); the
//! **card** is `properties.card_fingerprint`; the **IP** is `context.ip`; the **shipping address**
//! is the extra property [`SHIPPING_ADDRESS`] when the storefront sends one (a hash of the
//! normalised address; the event contract has no address field yet). Accounts are counted per
//! device, IP, card and address by user id only (a guest has none), so a shopper who signs up
//! mid-session is one account, not two.
//!
//! The IP country is `context.country` (what the collector's GeoIP database says of the client's
//! IP) and, when the event has none, the region of `context.locale` (`de-AT` → `AT`), which is the
//! shopper's language setting rather than where they are: weaker, but the only hint left.

use evalexpr::error::EvalexprResultValue;
use evalexpr::{Context, EvalexprError, EvalexprResult, Value};
use shoplake_events::wire::Str;
use shoplake_events::{EventName, ValidEvent};

use super::state::{Activity, Entity, Key, Kind, Store};
use super::windows::{DAY, HOUR, TEN_MINUTES, Window};
use shoplake_transform::enrich::fx::FxRates;

/// Extra property holding a hash of the normalised shipping address (not yet in the contract).
pub const SHIPPING_ADDRESS: &str = "shipping_address";

/// How a feature reads in a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureType {
    /// An integer.
    Count,
    /// A float.
    Number,
    /// A boolean.
    Flag,
}

macro_rules! features {
    ($( $variant:ident = $name:literal, $ty:ident, $doc:literal; )+) => {
        /// Every feature, in the order [`super::Decision::features`] lists them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Feature { $( #[doc = $doc] $variant ),+ }

        impl Feature {
            pub const ALL: &'static [Feature] = &[$(Feature::$variant),+];

            /// The name rules use.
            pub fn name(self) -> &'static str {
                match self { $(Feature::$variant => $name),+ }
            }

            pub fn feature_type(self) -> FeatureType {
                match self { $(Feature::$variant => FeatureType::$ty),+ }
            }

            /// What it measures, for docs and error messages.
            pub fn description(self) -> &'static str {
                match self { $(Feature::$variant => $doc),+ }
            }

            pub fn from_name(name: &str) -> Option<Feature> {
                match name { $($name => Some(Feature::$variant),)+ _ => None }
            }
        }
    };
}

features! {
    Amount = "amount", Number, "Order total in the reporting currency (0 when its currency has no rate).";
    Items = "items", Count, "Units ordered (sum of the products' quantities).";
    Coupon = "coupon", Flag, "The order uses a coupon.";
    CardPayment = "card_payment", Flag, "Paid by card (the order carries a card fingerprint).";
    UnknownCurrency = "unknown_currency", Flag, "The order's currency has no FX rate (amount is 0).";
    BillingShippingMismatch = "billing_shipping_mismatch", Flag, "Billing and shipping countries are both known and differ.";
    IpCountryMismatch = "ip_country_mismatch", Flag, "The IP country (context.country, else the locale's region) differs from the billing country (the shipping country when there is no billing country).";
    AccountAgeHours = "account_age_hours", Number, "Hours since the account signed up or was first seen, whichever is earlier (0 when first seen now).";
    PriorOrders = "prior_orders", Count, "Earlier orders of the account the engine remembers.";
    FirstOrder = "first_order", Flag, "The account has no earlier order.";
    AmountVsAvg = "amount_vs_avg", Number, "Amount divided by the account's mean earlier order amount (0 without earlier orders).";
    NewDevice = "new_device", Flag, "The device was first seen with the account less than a day ago, and the account used another device before.";
    NewShipCountry = "new_ship_country", Flag, "The account ordered before, never to this shipping country.";
    UserOrders10m = "user_orders_10m", Count, "Orders of the account in the last 10 minutes, this one included.";
    UserOrders1h = "user_orders_1h", Count, "Orders of the account in the last hour, this one included.";
    UserOrders1d = "user_orders_1d", Count, "Orders of the account in the last day, this one included.";
    UserAttempts10m = "user_attempts_10m", Count, "Payment attempts (payment_info_entered) of the account in the last 10 minutes.";
    UserAttempts1h = "user_attempts_1h", Count, "Payment attempts of the account in the last hour.";
    UserAttempts1d = "user_attempts_1d", Count, "Payment attempts of the account in the last day.";
    UserFailed10m = "user_failed_10m", Count, "Failed payments (payment_failed) of the account's orders in the last 10 minutes.";
    UserFailed1h = "user_failed_1h", Count, "Failed payments of the account's orders in the last hour.";
    UserFailed1d = "user_failed_1d", Count, "Failed payments of the account's orders in the last day.";
    UserAmount1d = "user_amount_1d", Number, "Amount of the account's orders in the last day, this one included (reporting currency).";
    CardOrders10m = "card_orders_10m", Count, "Orders paid with the card in the last 10 minutes, this one included.";
    CardOrders1h = "card_orders_1h", Count, "Orders paid with the card in the last hour, this one included.";
    CardOrders1d = "card_orders_1d", Count, "Orders paid with the card in the last day, this one included.";
    CardFailed10m = "card_failed_10m", Count, "Failed payments with the card in the last 10 minutes.";
    CardFailed1h = "card_failed_1h", Count, "Failed payments with the card in the last hour.";
    CardFailed1d = "card_failed_1d", Count, "Failed payments with the card in the last day.";
    CardAmount1d = "card_amount_1d", Number, "Amount of the orders paid with the card in the last day, this one included.";
    CardAccounts1d = "card_accounts_1d", Count, "Accounts that used the card in the last day, this one included.";
    DeviceOrders10m = "device_orders_10m", Count, "Orders from the device in the last 10 minutes, this one included.";
    DeviceOrders1h = "device_orders_1h", Count, "Orders from the device in the last hour, this one included.";
    DeviceOrders1d = "device_orders_1d", Count, "Orders from the device in the last day, this one included.";
    DeviceAttempts10m = "device_attempts_10m", Count, "Payment attempts from the device in the last 10 minutes.";
    DeviceAttempts1h = "device_attempts_1h", Count, "Payment attempts from the device in the last hour.";
    DeviceAttempts1d = "device_attempts_1d", Count, "Payment attempts from the device in the last day.";
    DeviceFailed10m = "device_failed_10m", Count, "Failed payments of orders from the device in the last 10 minutes.";
    DeviceFailed1h = "device_failed_1h", Count, "Failed payments of orders from the device in the last hour.";
    DeviceFailed1d = "device_failed_1d", Count, "Failed payments of orders from the device in the last day.";
    DeviceAmount1d = "device_amount_1d", Number, "Amount of the orders from the device in the last day, this one included.";
    DeviceAccounts1d = "device_accounts_1d", Count, "Accounts seen on the device (sign-up, login, order) in the last day, this one included.";
    DeviceCards1d = "device_cards_1d", Count, "Cards used on the device in the last day, this order's included.";
    DeviceViews1h = "device_views_1h", Count, "Products viewed (product_viewed) on the device in the last hour.";
    IpOrders10m = "ip_orders_10m", Count, "Orders from the IP in the last 10 minutes, this one included.";
    IpOrders1h = "ip_orders_1h", Count, "Orders from the IP in the last hour, this one included.";
    IpOrders1d = "ip_orders_1d", Count, "Orders from the IP in the last day, this one included.";
    IpAttempts10m = "ip_attempts_10m", Count, "Payment attempts from the IP in the last 10 minutes.";
    IpAttempts1h = "ip_attempts_1h", Count, "Payment attempts from the IP in the last hour.";
    IpAttempts1d = "ip_attempts_1d", Count, "Payment attempts from the IP in the last day.";
    IpFailed10m = "ip_failed_10m", Count, "Failed payments of orders from the IP in the last 10 minutes.";
    IpFailed1h = "ip_failed_1h", Count, "Failed payments of orders from the IP in the last hour.";
    IpFailed1d = "ip_failed_1d", Count, "Failed payments of orders from the IP in the last day.";
    IpAmount1d = "ip_amount_1d", Number, "Amount of the orders from the IP in the last day, this one included.";
    IpAccounts1d = "ip_accounts_1d", Count, "Accounts seen on the IP in the last day, this one included.";
    IpCards1d = "ip_cards_1d", Count, "Cards used from the IP in the last day, this order's included.";
    AddressOrders10m = "address_orders_10m", Count, "Orders to the shipping address in the last 10 minutes, this one included.";
    AddressOrders1h = "address_orders_1h", Count, "Orders to the shipping address in the last hour, this one included.";
    AddressOrders1d = "address_orders_1d", Count, "Orders to the shipping address in the last day, this one included.";
    AddressFailed1d = "address_failed_1d", Count, "Failed payments of orders to the shipping address in the last day.";
    AddressAccounts1d = "address_accounts_1d", Count, "Accounts that shipped to the address in the last day, this one included.";
    ModelScore = "model_score", Number, "The learned model's fraud probability, 0–1 (0 when the rules file has no [model]); computed from every other feature.";
}

/// Number of features.
pub const COUNT: usize = Feature::ALL.len();

/// One value per feature, typed as conditions see them.
#[derive(Clone, Debug)]
pub struct FeatureValues {
    values: [Value; COUNT],
}

impl Default for FeatureValues {
    /// Zero, 0.0 and false.
    fn default() -> Self {
        FeatureValues {
            values: std::array::from_fn(|i| match Feature::ALL[i].feature_type() {
                FeatureType::Count => Value::Int(0),
                FeatureType::Number => Value::Float(0.0),
                FeatureType::Flag => Value::Boolean(false),
            }),
        }
    }
}

impl FeatureValues {
    /// Sets a feature; the value is converted to the feature's type.
    pub fn set(&mut self, feature: Feature, v: f64) {
        self.values[feature as usize] = match feature.feature_type() {
            FeatureType::Count => Value::Int(v as i64),
            FeatureType::Number => Value::Float(v),
            FeatureType::Flag => Value::Boolean(v != 0.0),
        };
    }

    fn set_count(&mut self, feature: Feature, v: u32) {
        self.values[feature as usize] = Value::Int(i64::from(v));
    }

    fn set_flag(&mut self, feature: Feature, v: bool) {
        self.values[feature as usize] = Value::Boolean(v);
    }

    fn set_number(&mut self, feature: Feature, v: f64) {
        self.values[feature as usize] = Value::Float(v);
    }

    /// A feature as a number (flags are 0 or 1).
    pub fn get(&self, feature: Feature) -> f64 {
        match &self.values[feature as usize] {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Boolean(b) => f64::from(u8::from(*b)),
            _ => 0.0,
        }
    }

    /// Every feature by name, in [`Feature::ALL`] order.
    pub fn to_vec(&self) -> Vec<(&'static str, f64)> {
        Feature::ALL
            .iter()
            .map(|&f| (f.name(), self.get(f)))
            .collect()
    }
}

impl Context for FeatureValues {
    type NumericTypes = evalexpr::DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&Value> {
        Feature::from_name(identifier).map(|f| &self.values[f as usize])
    }

    fn call_function(&self, identifier: &str, _argument: &Value) -> EvalexprResultValue {
        Err(EvalexprError::FunctionIdentifierNotFound(
            identifier.to_owned(),
        ))
    }

    /// Builtins (`min`, `max`, `floor`, `math::ln` …) are allowed.
    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, disabled: bool) -> EvalexprResult<()> {
        if disabled {
            Err(EvalexprError::CustomMessage(
                "builtin functions cannot be disabled in fraud rules".to_owned(),
            ))
        } else {
            Ok(())
        }
    }
}

/// The entities an event names, as keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keys {
    /// The account: user id, else anonymous id.
    pub user: Option<Key>,
    /// The user id alone (as counted in `*_accounts_1d`), hashed.
    pub account: Option<u64>,
    pub device: Option<Key>,
    pub ip: Option<Key>,
    pub card: Option<Key>,
    pub address: Option<Key>,
    pub order: Option<Key>,
}

fn present<'a>(s: Option<&'a Str<'_>>) -> Option<&'a str> {
    s.map(|s| &**s).filter(|s| !s.is_empty())
}

impl Keys {
    /// The device alone (`context.device_id`, else the anonymous id).
    pub fn device_of(event: &ValidEvent<'_>) -> Option<Key> {
        let e = &event.event;
        present(e.context.as_ref().and_then(|c| c.device_id.as_ref()))
            .map(|d| Key::of(Kind::Device, "d", d))
            .or_else(|| present(e.anonymous_id.as_ref()).map(|a| Key::of(Kind::Device, "a", a)))
    }

    pub fn of(event: &ValidEvent<'_>) -> Keys {
        let e = &event.event;
        let ctx = e.context.as_ref();
        let props = e.properties.as_ref();
        let user_id = present(e.user_id.as_ref());
        let anonymous_id = present(e.anonymous_id.as_ref());
        let user = match (user_id, anonymous_id) {
            (Some(u), _) => Some(Key::of(Kind::User, "u", u)),
            (None, Some(a)) => Some(Key::of(Kind::User, "a", a)),
            (None, None) => None,
        };
        Keys {
            user,
            account: user.filter(|_| user_id.is_some()).map(|k| k.id),
            device: Self::device_of(event),
            ip: present(ctx.and_then(|c| c.ip.as_ref())).map(|ip| Key::of(Kind::Ip, "", ip)),
            card: present(props.and_then(|p| p.card_fingerprint.as_ref()))
                .map(|c| Key::of(Kind::Card, "", c)),
            address: shipping_address(event).map(|a| Key::of(Kind::Address, "", a)),
            order: present(props.and_then(|p| p.order_id.as_ref()))
                .map(|o| Key::of(Kind::Order, "", o)),
        }
    }
}

/// The shipping address hash of an order, from its extra properties.
fn shipping_address<'e>(event: &'e ValidEvent<'_>) -> Option<&'e str> {
    if event.name != EventName::OrderCompleted {
        return None;
    }
    let props = event.event.properties.as_ref()?;
    let (_, raw) = props.extra.iter().find(|(k, _)| &**k == SHIPPING_ADDRESS)?;
    // A JSON string without escapes: its text between the quotes.
    let text = raw.get().strip_prefix('"')?.strip_suffix('"')?;
    (!text.is_empty() && !text.contains('\\')).then_some(text)
}

/// What an order says about itself.
#[derive(Clone, Debug)]
pub struct OrderFacts<'e> {
    pub time: i64,
    pub keys: Keys,
    /// Total in the reporting currency; None when the currency has no rate.
    pub amount: Option<f64>,
    pub items: u32,
    pub coupon: bool,
    pub billing_country: Option<&'e str>,
    pub shipping_country: Option<&'e str>,
    /// `context.country`, else the locale's region.
    pub ip_country: Option<&'e str>,
}

impl<'e> OrderFacts<'e> {
    pub fn of(event: &'e ValidEvent<'_>, fx: &FxRates) -> OrderFacts<'e> {
        let e = &event.event;
        let ctx = e.context.as_ref();
        let props = e.properties.as_ref();
        let total = props.and_then(|p| p.total);
        let rate = present(props.and_then(|p| p.currency.as_ref())).and_then(|c| fx.rate(c));
        let amount = match (total, rate) {
            (Some(t), Some(r)) => Some(t * r as f64 / 1e8),
            (None, _) => Some(0.0),
            (Some(_), None) => None,
        };
        let items = props
            .and_then(|p| p.products.as_ref())
            .map_or(0, |ps| {
                ps.iter()
                    .map(|p| p.quantity.unwrap_or(1).max(0))
                    .sum::<i64>()
            })
            .clamp(0, i64::from(u32::MAX)) as u32;
        let ip_country = present(ctx.and_then(|c| c.country.as_ref())).or_else(|| {
            present(ctx.and_then(|c| c.locale.as_ref())).and_then(|l| {
                let region = l.rsplit(['-', '_']).next()?;
                (region.len() == 2 && l.len() > 2 && region.bytes().all(|b| b.is_ascii_uppercase()))
                    .then_some(region)
            })
        });
        OrderFacts {
            time: event.event_time,
            keys: Keys::of(event),
            amount,
            items,
            coupon: present(props.and_then(|p| p.coupon.as_ref())).is_some(),
            billing_country: present(props.and_then(|p| p.billing_country.as_ref())),
            shipping_country: present(props.and_then(|p| p.shipping_country.as_ref())),
            ip_country,
        }
    }
}

/// The three window lengths of order, attempt and failure counts.
const WINDOWS: [i64; 3] = [TEN_MINUTES, HOUR, DAY];

/// Computes every feature of an order as if it were placed now, from the state before it.
pub fn compute(store: &Store, order: &OrderFacts<'_>) -> FeatureValues {
    use Feature::*;
    let mut f = FeatureValues::default();
    let t = order.time;
    let k = &order.keys;
    // An order already recorded (the same order_id sent again) is in the counts already.
    let this = u32::from(store.get(k.order).is_none());

    let amount = order.amount.unwrap_or(0.0);
    f.set_number(Amount, amount);
    f.set_count(Items, order.items);
    f.set_flag(Coupon, order.coupon);
    f.set_flag(CardPayment, k.card.is_some());
    f.set_flag(UnknownCurrency, order.amount.is_none());
    f.set_flag(
        BillingShippingMismatch,
        matches!((order.billing_country, order.shipping_country), (Some(b), Some(s)) if b != s),
    );
    let paid_from = order.billing_country.or(order.shipping_country);
    f.set_flag(
        IpCountryMismatch,
        matches!((order.ip_country, paid_from), (Some(i), Some(b)) if i != b),
    );

    let user = store.get(k.user);
    let profile = user.and_then(|u| u.profile.as_deref());
    let since = user.map_or(t, |u| {
        profile
            .and_then(|p| p.signed_up)
            .map_or(u.first_seen, |s| s.min(u.first_seen))
    });
    f.set_number(AccountAgeHours, ((t - since).max(0)) as f64 / HOUR as f64);
    let prior = profile.map_or(0, |p| p.orders.saturating_sub(1 - this));
    f.set_count(PriorOrders, prior);
    f.set_flag(FirstOrder, prior == 0);
    if let Some(p) = profile.filter(|p| p.orders > 0 && p.amount_sum > 0.0) {
        f.set_number(AmountVsAvg, amount / (p.amount_sum / f64::from(p.orders)));
    }
    if let (Some(p), Some(device)) = (profile, k.device) {
        f.set_flag(NewDevice, p.is_new_device(device.id, t, DAY));
    }
    if let (Some(p), Some(country)) = (profile, order.shipping_country) {
        f.set_flag(
            NewShipCountry,
            p.orders > 0 && !p.ship_countries.iter().any(|c| c == country),
        );
    }

    // Per entity the order names: (key, orders, attempts, failures, amount); a family the entity
    // does not have is None. An entity the order does not name leaves its features at 0.
    let own_amount = if this == 1 { amount } else { 0.0 };
    let families = [
        (
            k.user,
            Some([UserOrders10m, UserOrders1h, UserOrders1d]),
            Some([UserAttempts10m, UserAttempts1h, UserAttempts1d]),
            [UserFailed10m, UserFailed1h, UserFailed1d],
            UserAmount1d,
        ),
        (
            k.card,
            Some([CardOrders10m, CardOrders1h, CardOrders1d]),
            None,
            [CardFailed10m, CardFailed1h, CardFailed1d],
            CardAmount1d,
        ),
        (
            k.device,
            Some([DeviceOrders10m, DeviceOrders1h, DeviceOrders1d]),
            Some([DeviceAttempts10m, DeviceAttempts1h, DeviceAttempts1d]),
            [DeviceFailed10m, DeviceFailed1h, DeviceFailed1d],
            DeviceAmount1d,
        ),
        (
            k.ip,
            Some([IpOrders10m, IpOrders1h, IpOrders1d]),
            Some([IpAttempts10m, IpAttempts1h, IpAttempts1d]),
            [IpFailed10m, IpFailed1h, IpFailed1d],
            IpAmount1d,
        ),
    ];
    for (key, orders, attempts, failed, amount_1d) in families {
        if key.is_none() {
            continue;
        }
        let activity = store.get(key).map(Entity::activity);
        let count = |w: fn(&Activity) -> &Window, len| activity.map_or(0, |a| w(a).count(t, len));
        for (i, len) in WINDOWS.into_iter().enumerate() {
            if let Some(fs) = orders {
                f.set_count(fs[i], count(|a| &a.orders, len) + this);
            }
            if let Some(fs) = attempts {
                f.set_count(fs[i], count(|a| &a.attempts, len));
            }
            f.set_count(failed[i], count(|a| &a.failed, len));
        }
        let earlier = activity.map_or(0.0, |a| a.orders.sum(t, DAY));
        f.set_number(amount_1d, earlier + own_amount);
    }
    if k.address.is_some() {
        let address = store.get(k.address);
        for (feature, len) in [
            (AddressOrders10m, TEN_MINUTES),
            (AddressOrders1h, HOUR),
            (AddressOrders1d, DAY),
        ] {
            f.set_count(
                feature,
                address.map_or(0, |e| e.activity().orders.count(t, len)) + this,
            );
        }
        f.set_count(
            AddressFailed1d,
            address.map_or(0, |e| e.activity().failed.count(t, DAY)),
        );
    }

    // Distinct accounts and cards, the order's own included.
    let distinct = |e: Option<&Entity>, cards: bool, value: Option<u64>| -> u32 {
        let set = e.map(|e| {
            let a = e.activity();
            if cards { &a.cards } else { &a.accounts }
        });
        let n = set.map_or(0, |s| s.count(t, DAY));
        let own = value.is_some_and(|v| !set.is_some_and(|s| s.contains(v, t, DAY)));
        n + u32::from(own)
    };
    let card_id = k.card.map(|c| c.id);
    let card = store.get(k.card);
    let device = store.get(k.device);
    let ip = store.get(k.ip);
    if k.card.is_some() {
        f.set_count(CardAccounts1d, distinct(card, false, k.account));
    }
    if k.device.is_some() {
        f.set_count(DeviceAccounts1d, distinct(device, false, k.account));
        f.set_count(DeviceCards1d, distinct(device, true, card_id));
        f.set_count(DeviceViews1h, device.map_or(0, |d| d.views.count(t, HOUR)));
    }
    if k.ip.is_some() {
        f.set_count(IpAccounts1d, distinct(ip, false, k.account));
        f.set_count(IpCards1d, distinct(ip, true, card_id));
    }
    if k.address.is_some() {
        f.set_count(
            AddressAccounts1d,
            distinct(store.get(k.address), false, k.account),
        );
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_typed() {
        let mut seen = std::collections::HashSet::new();
        for &f in Feature::ALL {
            assert!(seen.insert(f.name()), "{} twice", f.name());
            assert_eq!(Feature::from_name(f.name()), Some(f));
            assert!(
                f.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                f.name()
            );
            assert!(!f.description().is_empty());
        }
        assert_eq!(Feature::from_name("amount_usd"), None);
        let mut v = FeatureValues::default();
        v.set(Feature::NewDevice, 1.0);
        v.set(Feature::DeviceOrders1h, 3.0);
        assert_eq!(v.get_value("new_device"), Some(&Value::Boolean(true)));
        assert_eq!(v.get_value("device_orders_1h"), Some(&Value::Int(3)));
        assert_eq!(v.get_value("nope"), None);
        assert_eq!(v.to_vec().len(), COUNT);
    }
}
