//! Sessions, orders and fraud scenarios: how the simulated shoppers behave.

use rand::Rng;
use shoplake_events::wire::{Campaign, ClickIds, Context, Event, Page, Product, Properties, Str};
use shoplake_events::{EventName, format_timestamp};

use super::world::{self, Device, MARKETS, User, card, hex_id, new_device, pick_weighted, uuid};
use super::{FraudLabel, RecordKind, SimRecord, Simulator};

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const SHOP: &str = "https://shop.example.com";

/// Who is acting in a session.
#[derive(Clone)]
struct Visit {
    anonymous_id: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    device: Device,
    market: usize,
    /// The landing page's campaign, click id and referrer; sent once, on the landing page.
    landing: Option<usize>,
}

/// A line of a cart or order.
#[derive(Clone, Copy)]
struct Line {
    product: usize,
    quantity: i64,
}

/// An order's amounts, in the shopper's currency.
struct Amounts {
    subtotal: f64,
    discount: f64,
    shipping: f64,
    tax: f64,
    total: f64,
}

fn round_money(x: f64, currency: &str) -> f64 {
    if currency == "JPY" {
        x.round()
    } else {
        (x * 100.0).round() / 100.0
    }
}

fn s(v: impl Into<String>) -> Option<Str<'static>> {
    Some(Str::from(v.into()))
}

impl Simulator {
    pub(super) fn seed_users(&mut self) {
        let n = self.config.users;
        for _ in 0..n {
            let mut user = self.new_shopper();
            user.user_id = Some(hex_id(&mut self.rng, "u-"));
            user.signed_up_at =
                Some(self.config.start_micros - self.rng.random_range(DAY..400 * DAY));
            self.users.push(user);
        }
    }

    /// A shopper with a device, cards and interests of their own (fraud scenarios start here).
    fn new_user(&mut self) -> User {
        let market = pick_weighted(&mut self.rng, MARKETS, |m| m.4);
        let device = new_device(&mut self.rng, market, self.config.skewed_device_share);
        let categories = self.catalog.categories();
        // 1 card, sometimes 2 or more (each further one at 35%).
        let most = self.config.confounders.cards_per_shopper.max(1);
        let mut cards = vec![card(&mut self.rng)];
        while cards.len() < most && self.rng.random_bool(0.35) {
            cards.push(card(&mut self.rng));
        }
        User {
            user_id: None,
            market,
            device,
            cards,
            signed_up_at: None,
            bought: Vec::new(),
            interests: [
                self.rng.random_range(0..categories),
                self.rng.random_range(0..categories),
            ],
        }
    }

    /// An honest new shopper: maybe living with an earlier one (same device and home IP, maybe
    /// a shared card), maybe behind a carrier's NAT or an office IP ([`super::Confounders`]).
    fn new_shopper(&mut self) -> User {
        let mut user = self.new_user();
        let c = &self.config.confounders;
        let (household, shared_ip, shared_ips) = (c.household, c.shared_ip, c.shared_ips.max(1));
        if !self.users.is_empty() && self.rng.random_bool(household.clamp(0.0, 1.0)) {
            let mate = &self.users[self.rng.random_range(0..self.users.len())];
            user.market = mate.market;
            user.device = Device {
                // Their own browser profile on the same machine.
                anonymous_id: uuid(&mut self.rng),
                ..mate.device.clone()
            };
            if self.rng.random_bool(1.0 / 3.0) {
                user.cards[0] = mate.cards[0].clone();
            }
        } else if self.rng.random_bool(shared_ip.clamp(0.0, 1.0)) {
            user.device.ip = world::shared_ip(user.market, self.rng.random_range(0..shared_ips));
        }
        user
    }

    /// The card an order is paid with: the usual one mostly, another one of the shopper's now
    /// and then.
    fn pay_card(&mut self, user: &User) -> String {
        let i = if user.cards.len() > 1 && self.rng.random_bool(0.25) {
            self.rng.random_range(1..user.cards.len())
        } else {
            0
        };
        user.cards.get(i).cloned().unwrap_or_default()
    }

    fn price(&self, product: usize, market: usize) -> f64 {
        let (_, currency, fx, ..) = MARKETS[market];
        round_money(self.catalog.products[product].price_usd * fx, currency)
    }

    fn product(&self, line: Line, market: usize, position: Option<i64>) -> Product<'static> {
        let p = &self.catalog.products[line.product];
        Product {
            product_id: s(p.id.clone()),
            sku: s(p.sku.clone()),
            name: s(p.name.clone()),
            category: s(p.category),
            brand: s(p.brand),
            price: Some(self.price(line.product, market)),
            quantity: Some(line.quantity),
            position,
            ..Product::default()
        }
    }

    fn amounts(&self, lines: &[Line], market: usize, coupon: bool) -> Amounts {
        let (_, currency, fx, ..) = MARKETS[market];
        let subtotal: f64 = lines
            .iter()
            .map(|l| self.price(l.product, market) * l.quantity as f64)
            .sum();
        let subtotal = round_money(subtotal, currency);
        let discount = if coupon {
            round_money(subtotal * 0.1, currency)
        } else {
            0.0
        };
        let shipping = if subtotal >= 50.0 * fx {
            0.0
        } else {
            round_money(4.99 * fx, currency)
        };
        let tax = round_money((subtotal - discount) * 0.08, currency);
        Amounts {
            subtotal,
            discount,
            shipping,
            tax,
            total: round_money(subtotal - discount + shipping + tax, currency),
        }
    }

    /// An event of the visit at true time `t`, without properties.
    fn event(&mut self, name: EventName, v: &Visit, path: &str, landing: bool) -> Event<'static> {
        // The country is where the device is (what GeoIP on its IP says); the locale is the shopper's.
        let country = MARKETS[v.device.market].0;
        let locale = MARKETS[v.market].3;
        let source = landing
            .then_some(v.landing)
            .flatten()
            .map(|i| self.sources[i].clone());
        let campaign = source
            .as_ref()
            .and_then(|s| s.utm)
            .map(|(source, medium, name)| Campaign {
                source: s(source),
                medium: s(medium),
                name: s(name),
                ..Campaign::default()
            });
        let click_ids = source.as_ref().and_then(|s| s.click_id).map(|kind| {
            let id = hex_id(&mut self.rng, "");
            match kind {
                "gclid" => ClickIds {
                    gclid: s(id),
                    ..ClickIds::default()
                },
                "fbclid" => ClickIds {
                    fbclid: s(id),
                    ..ClickIds::default()
                },
                _ => ClickIds {
                    msclkid: s(id),
                    ..ClickIds::default()
                },
            }
        });
        let mut url = format!("{SHOP}{path}");
        if let Some(c) = source.as_ref().and_then(|s| s.utm) {
            url.push_str(&format!(
                "?utm_source={}&utm_medium={}&utm_campaign={}",
                c.0, c.1, c.2
            ));
        }
        let app = v.device.device_type == "mobile" && v.device.user_agent.contains("Android");
        Event {
            event_id: s(uuid(&mut self.rng)),
            event_name: s(name.as_str()),
            schema_version: Some(1),
            anonymous_id: v.anonymous_id.clone().map(Str::from),
            user_id: v.user_id.clone().map(Str::from),
            session_id: v.session_id.clone().map(Str::from),
            context: Some(Context {
                page: Some(Page {
                    url: s(url),
                    path: s(path),
                    referrer: source.as_ref().and_then(|s| s.referrer).map(Str::from),
                    title: None,
                }),
                campaign,
                click_ids,
                user_agent: s(v.device.user_agent),
                ip: s(v.device.ip.clone()),
                locale: s(locale),
                country: s(country),
                device_type: s(v.device.device_type),
                device_id: s(v.device.device_id.clone()),
                source: s(if app { "android" } else { "web" }),
                ..Context::default()
            }),
            ..Event::default()
        }
    }

    /// A back-office event about an order (payment service, warehouse, support desk).
    fn backend_event(&mut self, name: EventName, order: &OrderRef) -> Event<'static> {
        Event {
            event_id: s(uuid(&mut self.rng)),
            event_name: s(name.as_str()),
            schema_version: Some(1),
            anonymous_id: order.anonymous_id.clone().map(Str::from),
            user_id: order.user_id.clone().map(Str::from),
            context: Some(Context {
                source: s("backend"),
                ..Context::default()
            }),
            properties: Some(Properties {
                order_id: s(order.order_id.clone()),
                ..Properties::default()
            }),
            ..Event::default()
        }
    }

    /// Stamps times on an event that truly happened at `t`, applies the configured faults and
    /// queues it.
    fn send(
        &mut self,
        mut event: Event<'static>,
        t: i64,
        device: Option<&Device>,
        label: Option<FraudLabel>,
    ) {
        let key = event
            .user_id
            .as_deref()
            .filter(|_| device.is_none())
            .or(event.anonymous_id.as_deref())
            .or(event.user_id.as_deref())
            .unwrap_or("unknown")
            .to_owned();
        let (occurred, sent, received) = match device {
            None => (t, t, t + self.rng.random_range(5_000..50_000)),
            Some(d) => {
                let mut delay = self.rng.random_range(0..3 * SECOND);
                if self.rng.random_bool(self.config.late_share.clamp(0.0, 1.0)) {
                    // Offline for ten minutes to a day and a half, then the app sends its queue.
                    delay += (self
                        .rng
                        .random_range((10.0 * 60.0f64).ln()..(36.0 * 3600.0f64).ln()))
                    .exp() as i64
                        * SECOND;
                }
                let network = self.rng.random_range(20_000..400_000);
                (
                    t + d.skew_micros,
                    t + d.skew_micros + delay,
                    t + delay + network,
                )
            }
        };
        // Prices are in the shopper's currency, which every event with products states.
        let locale = event
            .context
            .as_ref()
            .and_then(|c| c.locale.as_deref())
            .unwrap_or("en-US");
        let currency = MARKETS
            .iter()
            .find(|m| m.3 == locale)
            .map_or("USD", |m| m.1);
        if let Some(p) = event.properties.as_mut()
            && p.products.is_some()
            && p.currency.is_none()
        {
            p.currency = s(currency);
        }
        event.occurred_at = s(format_timestamp(occurred));
        event.sent_at = s(format_timestamp(sent));
        event.received_at = s(format_timestamp(received));
        let name = event
            .event_name
            .as_deref()
            .and_then(|n| n.parse::<EventName>().ok())
            .unwrap_or(EventName::PageViewed);
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        if self.rng.random_bool(self.config.bad_share.clamp(0.0, 1.0)) {
            let (payload, reason) = super::faults::corrupt(&mut self.rng, &payload, received);
            let record = SimRecord {
                partition_key: key,
                payload,
                kind: RecordKind::Bad(reason),
                server_time_micros: received,
            };
            self.enqueue(record, None);
            return;
        }
        if self
            .rng
            .random_bool(self.config.duplicate_share.clamp(0.0, 1.0))
        {
            // The client timed out waiting for the answer and sent the same event again.
            let later = received + self.rng.random_range(SECOND..60 * SECOND);
            let record = SimRecord {
                partition_key: key.clone(),
                payload: payload.clone(),
                kind: RecordKind::Duplicate,
                server_time_micros: later,
            };
            self.enqueue(record, None);
        }
        let record = SimRecord {
            partition_key: key,
            payload,
            kind: RecordKind::Valid(name),
            server_time_micros: received,
        };
        self.enqueue(record, label);
    }

    /// Generates one session starting at `start`.
    pub(super) fn session(&mut self, start: i64) {
        let r: f64 = self.rng.random();
        if r < self.config.bot_share {
            return self.bot_session(start);
        }
        // Fraud orders behind their share of the orders so far: maybe a fraud scenario now (not
        // always at once, so that scenarios fall among honest sessions at random).
        let behind =
            self.config.fraud_share * self.orders_generated as f64 - self.fraud_generated as f64;
        if behind > 0.5 && self.rng.random_bool(0.1) {
            let mix = &self.config.fraud_mix;
            // Each pattern's weight over the orders one scenario of it places on average, so that
            // fraud orders (not scenarios) come out in the mix's proportions.
            let weights = [
                mix.card_testing / 7.5,
                mix.account_takeover,
                mix.multi_account / 5.0,
            ];
            return match pick_weighted(&mut self.rng, &weights, |w| w.max(0.0)) {
                0 => self.card_testing(start),
                1 => self.account_takeover(start),
                _ => self.multi_account(start),
            };
        }
        self.shopping_session(start);
    }

    fn visit_of(&mut self, user: &User) -> Visit {
        let client_sessions = self.rng.random_bool(0.7);
        Visit {
            anonymous_id: Some(user.device.anonymous_id.clone()),
            user_id: user.user_id.clone(),
            session_id: client_sessions.then(|| uuid(&mut self.rng)),
            device: user.device.clone(),
            market: user.market,
            landing: Some(pick_weighted(&mut self.rng, &self.sources, |s| s.weight)),
        }
    }

    fn bot_session(&mut self, start: i64) {
        let ua = world::BOTS[self.rng.random_range(0..world::BOTS.len())];
        let market = 0;
        let device = Device {
            anonymous_id: uuid(&mut self.rng),
            device_id: hex_id(&mut self.rng, "d-"),
            user_agent: ua,
            device_type: "desktop",
            ip: world::ip(&mut self.rng, market),
            market,
            skew_micros: 0,
        };
        let visit = Visit {
            anonymous_id: Some(device.anonymous_id.clone()),
            user_id: None,
            session_id: None,
            device,
            market,
            landing: None,
        };
        let mut t = start;
        for _ in 0..self.rng.random_range(3..15) {
            let p = self.rng.random_range(0..self.catalog.products.len());
            let path = format!("/p/{}", self.catalog.products[p].id);
            let e = self.event(EventName::PageViewed, &visit, &path, false);
            let device = visit.device.clone();
            self.send(e, t, Some(&device), None);
            t += self.rng.random_range(SECOND / 2..3 * SECOND);
        }
    }

    /// A shopper walking the funnel: landing → lists / search → product views → cart → checkout →
    /// order, with drop-off at each step scaled by the traffic source's conversion.
    fn shopping_session(&mut self, start: i64) {
        let returning = !self.users.is_empty() && self.rng.random_bool(0.55);
        let (slot, mut user) = if returning {
            let i = self.rng.random_range(0..self.users.len());
            (Some(i), self.users[i].clone())
        } else {
            (None, self.new_shopper())
        };
        let c = self.config.confounders.clone();
        if returning && self.rng.random_bool(c.new_device.clamp(0.0, 1.0)) {
            // A new phone or browser, on the same home network; kept from now on.
            let ip = user.device.ip.clone();
            user.device = new_device(&mut self.rng, user.market, self.config.skewed_device_share);
            user.device.ip = ip;
        }
        let mut visit = self.visit_of(&user);
        if returning && self.rng.random_bool(c.travel.clamp(0.0, 1.0)) {
            // Abroad: a hotel's or a local carrier's IP; the locale, cards and address stay.
            let abroad = (user.market + self.rng.random_range(1..MARKETS.len())) % MARKETS.len();
            visit.device.market = abroad;
            visit.device.ip = world::ip(&mut self.rng, abroad);
        }
        if let Some(source) = visit.landing.and_then(|i| self.sources.get(i)) {
            self.spend.landed(start, source);
        }
        let conversion = self.sources[visit.landing.unwrap_or(0)].conversion;
        let dev = visit.device.clone();
        let mut t = start;
        let step =
            |sim: &mut Simulator, t: &mut i64| *t += sim.rng.random_range(5 * SECOND..90 * SECOND);

        let first_cat = user.interests[0];
        let landing_path = format!("/c/{}", self.catalog.by_category[first_cat].0);
        let mut e = self.event(EventName::PageViewed, &visit, &landing_path, true);
        if let Some(p) = e.context.as_mut().and_then(|c| c.page.as_mut()) {
            p.title = s("Shop");
        }
        self.send(e, t, Some(&dev), None);

        if user.user_id.is_some() && self.rng.random_bool(0.3) {
            step(self, &mut t);
            let e = self.event(EventName::LoggedIn, &visit, "/login", false);
            self.send(e, t, Some(&dev), None);
        }
        if self.rng.random_bool(0.2) {
            step(self, &mut t);
            let mut e = self.event(EventName::PromotionViewed, &visit, "/", false);
            e.properties = Some(Properties {
                promotion_id: s("promo-spring"),
                promotion_name: s("Spring sale"),
                creative: s("hero_banner"),
                ..Properties::default()
            });
            self.send(e, t, Some(&dev), None);
            if self.rng.random_bool(0.3) {
                step(self, &mut t);
                let mut e = self.event(EventName::PromotionClicked, &visit, "/", false);
                e.properties = Some(Properties {
                    promotion_id: s("promo-spring"),
                    promotion_name: s("Spring sale"),
                    creative: s("hero_banner"),
                    ..Properties::default()
                });
                self.send(e, t, Some(&dev), None);
            }
        }

        let mut cart: Vec<Line> = Vec::new();
        if returning
            && user.user_id.is_some()
            && !user.bought.is_empty()
            && self.rng.random_bool(c.buy_again.clamp(0.0, 1.0))
        {
            // Reorder from the order history: into the cart and through checkout, no product
            // page on the way.
            for _ in 0..self.rng.random_range(1..=2) {
                let product = user.bought[self.rng.random_range(0..user.bought.len())];
                step(self, &mut t);
                let line = Line {
                    product,
                    quantity: 1,
                };
                let mut e = self.event(EventName::ProductAdded, &visit, "/account/orders", false);
                e.properties = Some(Properties {
                    cart_id: s(format!("cart-{}", visit.device.device_id)),
                    products: Some(vec![self.product(line, visit.market, None)]),
                    ..Properties::default()
                });
                self.send(e, t, Some(&dev), None);
                cart.push(line);
            }
            self.place_order(&mut user, &visit, &cart, true, &mut t);
            return self.keep_user(slot, user);
        }
        if self.rng.random_bool(c.big_ticket.clamp(0.0, 1.0)) {
            // A big purchase, planned: straight to the product.
            let p = self.catalog.expensive[self.rng.random_range(0..self.catalog.expensive.len())];
            step(self, &mut t);
            self.view_and_add(&visit, p, &mut cart, true, &mut t);
        }
        // Buy again: a returning shopper restocks a consumable.
        let consumables: Vec<usize> = user
            .bought
            .iter()
            .copied()
            .filter(|&p| self.catalog.products[p].consumable)
            .collect();
        if !consumables.is_empty() && self.rng.random_bool(0.3) {
            let p = consumables[self.rng.random_range(0..consumables.len())];
            step(self, &mut t);
            self.view_and_add(&visit, p, &mut cart, true, &mut t);
        }
        let views = 1 + (self.rng.random::<f64>().ln() / 0.78f64.ln()) as usize;
        let mut last: Option<usize> = None;
        for _ in 0..views.min(30) {
            step(self, &mut t);
            let product = match last {
                Some(p) if self.rng.random_bool(0.45) => {
                    self.catalog.companion(&mut self.rng, p).unwrap_or(p)
                }
                _ => self.discover(&visit, &user, &dev, &mut t),
            };
            last = Some(product);
            let add = self.rng.random_bool((0.13 * conversion).min(0.9));
            self.view_and_add(&visit, product, &mut cart, add, &mut t);
            if add
                && self.rng.random_bool(0.35)
                && let Some(c) = self.catalog.companion(&mut self.rng, product)
            {
                step(self, &mut t);
                self.view_and_add(&visit, c, &mut cart, true, &mut t);
            }
            if self.rng.random_bool(0.03) {
                let mut e = self.event(EventName::WishlistProductAdded, &visit, "/wishlist", false);
                e.properties = Some(Properties {
                    products: Some(vec![self.product(
                        Line {
                            product,
                            quantity: 1,
                        },
                        visit.market,
                        None,
                    )]),
                    ..Properties::default()
                });
                self.send(e, t, Some(&dev), None);
            }
        }
        if user.user_id.is_some() && !user.bought.is_empty() && self.rng.random_bool(0.08) {
            step(self, &mut t);
            let p = user.bought[self.rng.random_range(0..user.bought.len())];
            let mut e = self.event(
                EventName::ProductReviewed,
                &visit,
                &format!("/p/{}", self.catalog.products[p].id),
                false,
            );
            let rating = [5, 5, 4, 4, 3, 2, 1][self.rng.random_range(0..7)];
            e.properties = Some(Properties {
                products: Some(vec![self.product(
                    Line {
                        product: p,
                        quantity: 1,
                    },
                    visit.market,
                    None,
                )]),
                rating: Some(rating),
                ..Properties::default()
            });
            self.send(e, t, Some(&dev), None);
        }
        if !cart.is_empty() {
            self.cart_and_checkout(&mut user, &mut visit, &mut cart, conversion, &dev, &mut t);
        }
        self.keep_user(slot, user);
    }

    /// The shopper joins (or updates) the returning-shopper base.
    fn keep_user(&mut self, slot: Option<usize>, user: User) {
        match slot {
            Some(i) => self.users[i] = user,
            None if self.users.len() < self.config.users.max(1) * 2 => self.users.push(user),
            None => {
                let i = self.rng.random_range(0..self.users.len());
                self.users[i] = user;
            }
        }
    }

    /// How a shopper finds the next product outside the companions of the last one: a search or
    /// a category list (of one of their two interests, or any category), then a click on a
    /// product of it. Returns the product.
    fn discover(&mut self, visit: &Visit, user: &User, dev: &Device, t: &mut i64) -> usize {
        let cats = self.catalog.categories();
        let cat = if self.rng.random_bool(0.75) {
            user.interests[self.rng.random_range(0..2)]
        } else {
            self.rng.random_range(0..cats)
        };
        let (name, _, _) = &self.catalog.by_category[cat];
        let name = *name;
        if self.rng.random_bool(0.25) {
            let brand = self.catalog.products[self.catalog.pick_in(&mut self.rng, cat)].brand;
            let mut e = self.event(EventName::ProductsSearched, visit, "/search", false);
            e.properties = Some(Properties {
                query: s(format!("{} {}", brand.to_lowercase(), name)),
                ..Properties::default()
            });
            self.send(e, *t, Some(dev), None);
        } else {
            let mut e = self.event(
                EventName::ProductListViewed,
                visit,
                &format!("/c/{name}"),
                false,
            );
            e.properties = Some(Properties {
                list_id: s(format!("list-{name}")),
                category: s(name),
                ..Properties::default()
            });
            self.send(e, *t, Some(dev), None);
        }
        *t += self.rng.random_range(2 * SECOND..20 * SECOND);
        let p = self.catalog.pick_in(&mut self.rng, cat);
        let position = self.rng.random_range(1..25);
        let mut e = self.event(
            EventName::ProductClicked,
            visit,
            &format!("/c/{name}"),
            false,
        );
        e.properties = Some(Properties {
            products: Some(vec![self.product(
                Line {
                    product: p,
                    quantity: 1,
                },
                visit.market,
                Some(position),
            )]),
            ..Properties::default()
        });
        self.send(e, *t, Some(dev), None);
        p
    }

    /// The end of a session with a cart: maybe viewed, maybe a product removed, maybe a checkout
    /// (with a sign-up first, for some guests), which may complete into an order and its
    /// lifecycle; what was bought joins the shopper's purchases.
    fn cart_and_checkout(
        &mut self,
        user: &mut User,
        visit: &mut Visit,
        cart: &mut Vec<Line>,
        conversion: f64,
        dev: &Device,
        t: &mut i64,
    ) {
        if self.rng.random_bool(0.6) {
            *t += self.rng.random_range(5 * SECOND..90 * SECOND);
            let mut e = self.event(EventName::CartViewed, visit, "/cart", false);
            e.properties = Some(Properties {
                cart_id: s(format!("cart-{}", visit.device.device_id)),
                products: Some(
                    cart.iter()
                        .map(|l| self.product(*l, visit.market, None))
                        .collect(),
                ),
                ..Properties::default()
            });
            self.send(e, *t, Some(dev), None);
        }
        if cart.len() > 1 && self.rng.random_bool(0.1) {
            *t += self.rng.random_range(5 * SECOND..90 * SECOND);
            let line = cart.remove(self.rng.random_range(0..cart.len()));
            let mut e = self.event(EventName::ProductRemoved, visit, "/cart", false);
            e.properties = Some(Properties {
                products: Some(vec![self.product(line, visit.market, None)]),
                ..Properties::default()
            });
            self.send(e, *t, Some(dev), None);
        }
        if self.rng.random_bool((0.5 * conversion).min(0.95)) {
            let completes = self.rng.random_bool(0.72);
            if user.user_id.is_none() && completes && self.rng.random_bool(0.7) {
                *t += self.rng.random_range(5 * SECOND..90 * SECOND);
                self.sign_up(user, visit, *t);
            }
            self.place_order(user, visit, cart, completes, t);
        }
    }

    /// An honest checkout of `cart` (an order when `completes`) with one of the shopper's cards,
    /// shipped home or, now and then, abroad as a gift; what was bought joins the shopper's
    /// purchases.
    fn place_order(
        &mut self,
        user: &mut User,
        visit: &Visit,
        cart: &[Line],
        completes: bool,
        t: &mut i64,
    ) {
        let card = self.pay_card(user);
        let home = MARKETS[user.market].0;
        let gift = self.config.confounders.gift_abroad.clamp(0.0, 1.0);
        let ship_to = if self.rng.random_bool(gift) {
            MARKETS[self.rng.random_range(0..MARKETS.len())].0
        } else {
            home
        };
        let coupon = self.rng.random_bool(0.15).then_some("SPRING10");
        if let Some(order) = self.checkout(
            visit, cart, t, coupon, &card, home, ship_to, completes, None,
        ) {
            self.lifecycle(&order, *t, 0.96, false);
            user.bought.extend(cart.iter().map(|l| l.product));
            if user.bought.len() > 50 {
                user.bought.drain(..user.bought.len() - 50);
            }
        }
    }

    fn view_and_add(
        &mut self,
        visit: &Visit,
        product: usize,
        cart: &mut Vec<Line>,
        add: bool,
        t: &mut i64,
    ) {
        let dev = visit.device.clone();
        let path = format!("/p/{}", self.catalog.products[product].id);
        if self.rng.random_bool(0.5) {
            let e = self.event(EventName::PageViewed, visit, &path, false);
            self.send(e, *t, Some(&dev), None);
        }
        let mut e = self.event(EventName::ProductViewed, visit, &path, false);
        e.properties = Some(Properties {
            products: Some(vec![self.product(
                Line {
                    product,
                    quantity: 1,
                },
                visit.market,
                None,
            )]),
            ..Properties::default()
        });
        self.send(e, *t, Some(&dev), None);
        if add {
            *t += self.rng.random_range(5 * SECOND..60 * SECOND);
            let quantity = if self.catalog.products[product].consumable {
                self.rng.random_range(1..4)
            } else {
                1
            };
            let line = Line { product, quantity };
            let mut e = self.event(EventName::ProductAdded, visit, &path, false);
            e.properties = Some(Properties {
                cart_id: s(format!("cart-{}", visit.device.device_id)),
                products: Some(vec![self.product(line, visit.market, None)]),
                ..Properties::default()
            });
            self.send(e, *t, Some(&dev), None);
            cart.push(line);
        }
    }

    fn sign_up(&mut self, user: &mut User, visit: &mut Visit, t: i64) {
        let user_id = hex_id(&mut self.rng, "u-");
        user.user_id = Some(user_id.clone());
        user.signed_up_at = Some(t);
        visit.user_id = Some(user_id);
        let dev = visit.device.clone();
        let mut e = self.event(EventName::SignedUp, visit, "/signup", false);
        e.traits = s(format!(
            r#"{{"country":"{}","created_at":"{}"}}"#,
            MARKETS[user.market].0,
            format_timestamp(t)
        ));
        self.send(e, t, Some(&dev), None);
        let mut e = self.event(EventName::Identify, visit, "/signup", false);
        e.traits = s(format!(
            r#"{{"country":"{}","locale":"{}"}}"#,
            MARKETS[user.market].0, MARKETS[user.market].3
        ));
        self.send(e, t + SECOND, Some(&dev), None);
    }

    /// Checkout steps and, when `completes`, the order; returns the order placed.
    #[allow(clippy::too_many_arguments)]
    fn checkout(
        &mut self,
        visit: &Visit,
        cart: &[Line],
        t: &mut i64,
        coupon: Option<&str>,
        card: &str,
        billing: &str,
        ship_to: &str,
        completes: bool,
        label: Option<&str>,
    ) -> Option<OrderRef> {
        let dev = visit.device.clone();
        let (_, currency, ..) = MARKETS[visit.market];
        let products: Vec<Product<'static>> = cart
            .iter()
            .map(|l| self.product(*l, visit.market, None))
            .collect();
        let checkout_id = hex_id(&mut self.rng, "chk-");
        let a = self.amounts(cart, visit.market, coupon.is_some());
        *t += self.rng.random_range(10 * SECOND..60 * SECOND);
        let mut e = self.event(EventName::CheckoutStarted, visit, "/checkout", false);
        e.properties = Some(Properties {
            checkout_id: s(checkout_id.clone()),
            products: Some(products.clone()),
            total: Some(a.total),
            revenue: Some(a.subtotal - a.discount),
            currency: s(currency),
            ..Properties::default()
        });
        self.send(e, *t, Some(&dev), None);
        if let Some(code) = coupon {
            *t += self.rng.random_range(5 * SECOND..30 * SECOND);
            let mut e = self.event(EventName::CouponApplied, visit, "/checkout", false);
            e.properties = Some(Properties {
                checkout_id: s(checkout_id.clone()),
                coupon: s(code),
                discount: Some(a.discount),
                currency: s(currency),
                ..Properties::default()
            });
            self.send(e, *t, Some(&dev), None);
        }
        let steps = if completes {
            3
        } else {
            self.rng.random_range(0..3)
        };
        for step in 1..=steps {
            *t += self.rng.random_range(10 * SECOND..90 * SECOND);
            let mut e = self.event(EventName::CheckoutStepCompleted, visit, "/checkout", false);
            e.properties = Some(Properties {
                checkout_id: s(checkout_id.clone()),
                checkout_step: Some(step),
                ..Properties::default()
            });
            self.send(e, *t, Some(&dev), None);
        }
        if !completes {
            return None;
        }
        self.orders_generated += 1;
        self.fraud_generated += u64::from(label.is_some());
        // Card testers test cards.
        let method = if label == Some("card_testing") || self.rng.random_bool(0.8) {
            "card"
        } else {
            "paypal"
        };
        *t += self.rng.random_range(5 * SECOND..40 * SECOND);
        let mut e = self.event(
            EventName::PaymentInfoEntered,
            visit,
            "/checkout/payment",
            false,
        );
        e.properties = Some(Properties {
            checkout_id: s(checkout_id.clone()),
            payment_method: s(method),
            ..Properties::default()
        });
        self.send(e, *t, Some(&dev), None);
        *t += self.rng.random_range(2 * SECOND..10 * SECOND);
        let order_id = hex_id(&mut self.rng, "o-");
        let mut e = self.event(
            EventName::OrderCompleted,
            visit,
            "/checkout/complete",
            false,
        );
        e.properties = Some(Properties {
            order_id: s(order_id.clone()),
            checkout_id: s(checkout_id),
            products: Some(products),
            total: Some(a.total),
            revenue: Some(round_money(a.subtotal - a.discount, currency)),
            tax: Some(a.tax),
            shipping: Some(a.shipping),
            discount: Some(a.discount),
            currency: s(currency),
            coupon: coupon.map(|c| Str::from(c.to_owned())),
            payment_method: s(method),
            card_fingerprint: (method == "card").then(|| Str::from(card.to_owned())),
            billing_country: s(billing),
            shipping_country: s(ship_to),
            ..Properties::default()
        });
        let order = OrderRef {
            order_id,
            user_id: visit.user_id.clone(),
            anonymous_id: visit.anonymous_id.clone(),
            total: a.total,
            currency,
        };
        let label = label.map(|pattern| FraudLabel {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            anonymous_id: order.anonymous_id.clone(),
            pattern: pattern.to_owned(),
            occurred_at: format_timestamp(*t),
        });
        self.send(e, *t, Some(&dev), label);
        if self.stock.is_some() {
            // Applied to the levels when the order's time comes, not now: sessions are generated
            // whole when they start, and a later session's order can come first.
            let lines: Vec<(usize, i64)> = cart.iter().map(|l| (l.product, l.quantity)).collect();
            self.enqueue(super::stock::sale_marker(&lines, *t), None);
        }
        Some(order)
    }

    /// What happens to an order after it is placed, from the back office. A fraudulent order
    /// that is paid is usually charged back by the card's owner weeks later: the store's label,
    /// late (`order_refunded`, reason `fraud_chargeback`).
    fn lifecycle(&mut self, order: &OrderRef, placed: i64, payment_ok: f64, fraud: bool) {
        let mut t = placed + self.rng.random_range(SECOND..5 * SECOND);
        let chargeback = fraud && self.rng.random_bool(0.8);
        if !self.rng.random_bool(payment_ok.clamp(0.0, 1.0)) {
            let mut e = self.backend_event(EventName::PaymentFailed, order);
            props(&mut e).reason = s(["card_declined", "insufficient_funds", "do_not_honor"]
                [self.rng.random_range(0..3)]);
            self.send(e, t, None, None);
            t += self.rng.random_range(MINUTE..30 * MINUTE);
            let mut e = self.backend_event(EventName::OrderCancelled, order);
            props(&mut e).reason = s("payment_failed");
            return self.send(e, t, None, None);
        }
        let e = self.backend_event(EventName::PaymentAuthorized, order);
        self.send(e, t, None, None);
        if self.rng.random_bool(0.03) {
            t += self.rng.random_range(10 * MINUTE..HOUR);
            let mut e = self.backend_event(EventName::OrderUpdated, order);
            let p = props(&mut e);
            p.total = Some(order.total);
            p.currency = s(order.currency);
            p.reason = s("address_changed");
            self.send(e, t, None, None);
        }
        if self.rng.random_bool(0.02) {
            t += self.rng.random_range(10 * MINUTE..3 * HOUR);
            let mut e = self.backend_event(EventName::OrderCancelled, order);
            props(&mut e).reason = s("customer_request");
            return self.send(e, t, None, None);
        }
        t += self.rng.random_range(2 * HOUR..30 * HOUR);
        let mut e = self.backend_event(EventName::OrderShipped, order);
        props(&mut e).carrier =
            s(["ups", "dhl", "royal_mail", "usps"][self.rng.random_range(0..4)]);
        self.send(e, t, None, None);
        t += self.rng.random_range(DAY..4 * DAY);
        let e = self.backend_event(EventName::OrderDelivered, order);
        self.send(e, t, None, None);
        if chargeback {
            let t = placed + self.rng.random_range(14 * DAY..60 * DAY);
            let mut e = self.backend_event(EventName::OrderRefunded, order);
            let p = props(&mut e);
            p.total = Some(order.total);
            p.currency = s(order.currency);
            p.reason = s("fraud_chargeback");
            return self.send(e, t, None, None);
        }
        if self.rng.random_bool(0.06) {
            t += self.rng.random_range(DAY..10 * DAY);
            let mut e = self.backend_event(EventName::ReturnRequested, order);
            props(&mut e).reason =
                s(["wrong_size", "damaged", "not_as_described"][self.rng.random_range(0..3)]);
            self.send(e, t, None, None);
            t += self.rng.random_range(DAY..5 * DAY);
            let mut e = self.backend_event(EventName::OrderRefunded, order);
            let p = props(&mut e);
            p.total = Some(order.total);
            p.currency = s(order.currency);
            p.reason = s("returned");
            self.send(e, t, None, None);
        }
    }

    /// Card testing: a fresh device tries many cards on small orders in a burst. Some testers
    /// browse a little first; some switch browser profile or emulator now and then (a new device,
    /// the same network).
    fn card_testing(&mut self, start: i64) {
        let mut user = self.new_user();
        user.device.skew_micros = 0;
        let mut visit = self.visit_of(&user);
        visit.landing = Some(0);
        let mut t = start;
        if self.rng.random_bool(0.5) {
            self.sign_up(&mut user, &mut visit, t);
        }
        let browses = self.rng.random_bool(0.4);
        let rotates = self.rng.random_bool(0.3);
        let cheap: Vec<usize> = (0..self.catalog.products.len())
            .filter(|&p| self.catalog.products[p].price_usd < 15.0)
            .collect();
        let attempts = self.rng.random_range(3..13);
        for attempt in 0..attempts {
            if rotates && attempt > 0 && self.rng.random_bool(0.3) {
                let ip = visit.device.ip.clone();
                visit.device = new_device(&mut self.rng, visit.market, 0.0);
                visit.device.ip = ip;
                visit.anonymous_id = Some(visit.device.anonymous_id.clone());
            }
            let product = cheap
                .get(self.rng.random_range(0..cheap.len().max(1)))
                .copied()
                .unwrap_or(0);
            if browses && self.rng.random_bool(0.6) {
                t += self.rng.random_range(5 * SECOND..40 * SECOND);
                self.view_and_add(&visit, product, &mut Vec::new(), false, &mut t);
            }
            let cart = vec![Line {
                product,
                quantity: 1,
            }];
            let card = card(&mut self.rng);
            let country = MARKETS[visit.market].0;
            t += self.rng.random_range(10 * SECOND..60 * SECOND);
            let e = {
                let mut e = self.event(EventName::ProductAdded, &visit, "/cart", false);
                e.properties = Some(Properties {
                    products: Some(vec![self.product(cart[0], visit.market, None)]),
                    ..Properties::default()
                });
                e
            };
            let dev = visit.device.clone();
            self.send(e, t, Some(&dev), None);
            if let Some(order) = self.checkout(
                &visit,
                &cart,
                &mut t,
                None,
                &card,
                country,
                country,
                true,
                Some("card_testing"),
            ) {
                self.lifecycle(&order, t, 0.15, true);
            }
        }
    }

    /// Account takeover: someone else in a known account. Mostly from a new device, often in
    /// another country and shipping there; but a quarter come from the owner's own device
    /// (malware, a shared computer) and a third of the rest from the home country (a
    /// residential proxy), shipping home to a reshipper. An expensive basket after a little
    /// browsing, on the owner's stored card or a stolen one.
    fn account_takeover(&mut self, start: i64) {
        let candidates: Vec<usize> = (0..self.users.len())
            .filter(|&i| self.users[i].user_id.is_some())
            .collect();
        let Some(&victim) = candidates.get(self.rng.random_range(0..candidates.len().max(1)))
        else {
            return self.card_testing(start);
        };
        let owner = self.users[victim].clone();
        let known_device = self.rng.random_bool(0.25);
        let at_home = known_device || self.rng.random_bool(0.35);
        let attacker_market = if at_home {
            owner.market
        } else {
            (owner.market + self.rng.random_range(1..MARKETS.len())) % MARKETS.len()
        };
        let device = if known_device {
            owner.device.clone()
        } else {
            new_device(&mut self.rng, attacker_market, 0.0)
        };
        let visit = Visit {
            anonymous_id: Some(device.anonymous_id.clone()),
            user_id: owner.user_id.clone(),
            session_id: Some(uuid(&mut self.rng)),
            device: device.clone(),
            market: owner.market,
            landing: Some(0),
        };
        let mut t = start;
        let e = self.event(EventName::LoggedIn, &visit, "/login", true);
        self.send(e, t, Some(&device), None);
        let mut cart = Vec::new();
        for _ in 0..self.rng.random_range(1..4) {
            let expensive = &self.catalog.expensive;
            let p = expensive[self.rng.random_range(0..expensive.len())];
            t += self.rng.random_range(5 * SECOND..60 * SECOND);
            let add = cart.is_empty() || self.rng.random_bool(0.6);
            let mut lines = Vec::new();
            self.view_and_add(&visit, p, &mut lines, add, &mut t);
            cart.extend(lines.into_iter().map(|l| Line {
                quantity: self.rng.random_range(1..3),
                ..l
            }));
        }
        let card = if self.rng.random_bool(0.6) {
            owner.cards[0].clone()
        } else {
            card(&mut self.rng)
        };
        let billing = MARKETS[owner.market].0;
        let ship_to = if !at_home && self.rng.random_bool(0.7) {
            MARKETS[attacker_market].0
        } else if at_home && self.rng.random_bool(0.5) {
            MARKETS[(owner.market + self.rng.random_range(1..MARKETS.len())) % MARKETS.len()].0
        } else {
            billing
        };
        if let Some(order) = self.checkout(
            &visit,
            &cart,
            &mut t,
            None,
            &card,
            billing,
            ship_to,
            true,
            Some("account_takeover"),
        ) {
            self.lifecycle(&order, t, 0.9, true);
        }
    }

    /// Many new accounts, each placing an order with a newcomer's coupon: usually from one
    /// device (a fingerprint that survives new browser profiles), otherwise from new devices on
    /// one IP; some farms change IP every account (mobile data). A few product views each, one
    /// coupon code or several.
    fn multi_account(&mut self, start: i64) {
        let base = self.new_user();
        let same_device = self.rng.random_bool(0.6);
        let same_ip = !same_device || self.rng.random_bool(0.6);
        let codes = ["WELCOME20", "FIRST15", "REFER10"];
        let one_code = self
            .rng
            .random_bool(0.5)
            .then(|| codes[self.rng.random_range(0..3)]);
        let mut t = start;
        for _ in 0..self.rng.random_range(3..8) {
            let mut user = base.clone();
            if same_device {
                user.device.anonymous_id = uuid(&mut self.rng);
            } else {
                user.device = new_device(&mut self.rng, base.market, 0.0);
                user.device.ip = base.device.ip.clone();
            }
            if !same_ip {
                user.device.ip = world::ip(&mut self.rng, base.market);
            }
            user.cards = vec![card(&mut self.rng)];
            let mut visit = self.visit_of(&user);
            visit.landing = Some(6);
            let dev = visit.device.clone();
            t += self.rng.random_range(2 * MINUTE..15 * MINUTE);
            let e = self.event(EventName::PageViewed, &visit, "/", true);
            self.send(e, t, Some(&dev), None);
            t += self.rng.random_range(10 * SECOND..60 * SECOND);
            self.sign_up(&mut user, &mut visit, t);
            let mut cart = Vec::new();
            let views = self.rng.random_range(1..5);
            for i in 0..views {
                let cat = self.rng.random_range(0..self.catalog.categories());
                let p = self.catalog.pick_in(&mut self.rng, cat);
                t += self.rng.random_range(2 * SECOND..40 * SECOND);
                self.view_and_add(&visit, p, &mut cart, i + 1 == views, &mut t);
            }
            let country = MARKETS[user.market].0;
            let card = user.cards[0].clone();
            let code = one_code.unwrap_or_else(|| codes[self.rng.random_range(0..3)]);
            if let Some(order) = self.checkout(
                &visit,
                &cart,
                &mut t,
                Some(code),
                &card,
                country,
                country,
                true,
                Some("multi_account"),
            ) {
                self.lifecycle(&order, t, 0.9, true);
            }
        }
    }
}

fn props<'e>(e: &'e mut Event<'static>) -> &'e mut Properties<'static> {
    e.properties.get_or_insert_with(Properties::default)
}

/// An order placed, for its back-office events.
struct OrderRef {
    order_id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    total: f64,
    currency: &'static str,
}
