//! The simulated store's world: catalog, affinity groups, campaigns and the user base.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Countries shoppers come from: code, currency, FX rate from USD, locale, share of traffic.
pub(crate) const MARKETS: &[(&str, &str, f64, &str, f64)] = &[
    ("US", "USD", 1.0, "en-US", 0.42),
    ("GB", "GBP", 0.79, "en-GB", 0.12),
    ("DE", "EUR", 0.93, "de-DE", 0.11),
    ("FR", "EUR", 0.93, "fr-FR", 0.08),
    ("CA", "CAD", 1.35, "en-CA", 0.07),
    ("AU", "AUD", 1.52, "en-AU", 0.05),
    ("JP", "JPY", 149.0, "ja-JP", 0.05),
    ("SE", "SEK", 10.5, "sv-SE", 0.04),
    ("BR", "BRL", 5.0, "pt-BR", 0.03),
    ("PL", "PLN", 4.0, "pl-PL", 0.03),
];

/// A category: name, brands, USD price range, whether shoppers buy it again and again.
type CategorySpec = (&'static str, &'static [&'static str], (f64, f64), bool);

/// The categories of the catalog.
const CATEGORIES: &[CategorySpec] = &[
    (
        "shoes",
        &["Strider", "Okapi", "Nordwalk"],
        (40.0, 180.0),
        false,
    ),
    (
        "apparel",
        &["Linnea", "Harbor & Co", "Fieldnote"],
        (15.0, 120.0),
        false,
    ),
    (
        "electronics",
        &["Voltix", "Kairo", "Lumen"],
        (25.0, 1200.0),
        false,
    ),
    ("home", &["Casa Alta", "Birchwood"], (10.0, 400.0), false),
    ("beauty", &["Petal", "Aurum"], (8.0, 60.0), true),
    (
        "grocery",
        &["Green Valley", "Mill & Stone"],
        (2.0, 25.0),
        true,
    ),
    ("pet", &["Pawly", "Barkhouse"], (5.0, 80.0), true),
    ("sports", &["Apex", "Tidal"], (12.0, 300.0), false),
    ("toys", &["Bricko", "Wonderbox"], (8.0, 90.0), false),
    (
        "books",
        &["Inkwell Press", "Northern Pages"],
        (6.0, 45.0),
        false,
    ),
];

#[derive(Clone, Debug)]
pub(crate) struct Product {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub category: &'static str,
    pub brand: &'static str,
    pub price_usd: f64,
    pub consumable: bool,
    /// Index of the product's affinity group in [`Catalog::groups`].
    pub group: usize,
    /// Popularity weight (a few products sell most).
    pub weight: f64,
}

#[derive(Debug)]
pub(crate) struct Catalog {
    pub products: Vec<Product>,
    /// Products bought together: each group mixes a few categories (shoes + socks + insoles).
    pub groups: Vec<Vec<usize>>,
    /// Per category, product indices and a cumulative popularity for weighted picks.
    pub by_category: Vec<(&'static str, Vec<usize>, Vec<f64>)>,
    /// The most expensive 5% of the products (at least 5): big-ticket baskets, honest or not.
    pub expensive: Vec<usize>,
}

impl Catalog {
    pub fn generate(rng: &mut ChaCha8Rng, n: usize) -> Self {
        let n = n.max(CATEGORIES.len() * 4);
        let mut products = Vec::with_capacity(n);
        for i in 0..n {
            let (category, brands, (lo, hi), consumable) = CATEGORIES[i % CATEGORIES.len()];
            let brand = brands[rng.random_range(0..brands.len())];
            // Log-uniform prices: many cheap items, a few expensive ones.
            let price = (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp();
            let price = (price * 100.0).round() / 100.0 - 0.01;
            let rank = (i / CATEGORIES.len()) as f64 + 1.0;
            products.push(Product {
                id: format!("p-{i:05}"),
                sku: format!("{}-{:05}", &category[..3].to_ascii_uppercase(), i),
                name: format!("{brand} {category} {}", i / CATEGORIES.len() + 1),
                category,
                brand,
                price_usd: price.max(0.99),
                consumable,
                group: 0,
                weight: 1.0 / rank.powf(0.8),
            });
        }
        // Affinity groups of 3..=5 products drawn from two or three neighbouring categories.
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut groups = Vec::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let size = rng.random_range(3..=5).min(rest.len());
            groups.push(rest[..size].to_vec());
            rest = &rest[size..];
        }
        for (g, members) in groups.iter().enumerate() {
            for &p in members {
                products[p].group = g;
            }
        }
        let by_category = CATEGORIES
            .iter()
            .map(|(name, ..)| {
                let ids: Vec<usize> = (0..n).filter(|&i| products[i].category == *name).collect();
                let mut acc = 0.0;
                let cumulative = ids
                    .iter()
                    .map(|&i| {
                        acc += products[i].weight;
                        acc
                    })
                    .collect();
                (*name, ids, cumulative)
            })
            .collect();
        let mut expensive: Vec<usize> = (0..n).collect();
        expensive.sort_by(|a, b| products[*b].price_usd.total_cmp(&products[*a].price_usd));
        expensive.truncate((n / 20).max(5));
        Catalog {
            products,
            groups,
            by_category,
            expensive,
        }
    }

    /// A product of the category, by popularity.
    pub fn pick_in(&self, rng: &mut ChaCha8Rng, category: usize) -> usize {
        let (_, ids, cumulative) = &self.by_category[category];
        let total = cumulative.last().copied().unwrap_or(1.0);
        let x = rng.random::<f64>() * total;
        let at = cumulative.partition_point(|&c| c < x).min(ids.len() - 1);
        ids[at]
    }

    /// Another member of the product's affinity group.
    pub fn companion(&self, rng: &mut ChaCha8Rng, product: usize) -> Option<usize> {
        let group = &self.groups[self.products[product].group];
        let others: Vec<usize> = group.iter().copied().filter(|&p| p != product).collect();
        (!others.is_empty()).then(|| others[rng.random_range(0..others.len())])
    }

    pub fn categories(&self) -> usize {
        self.by_category.len()
    }
}

/// How a session arrived: UTM parameters, click id, referrer, and how well it converts.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub utm: Option<(&'static str, &'static str, &'static str)>,
    pub click_id: Option<&'static str>,
    pub referrer: Option<&'static str>,
    /// Multiplies the funnel's step probabilities.
    pub conversion: f64,
    /// Share of sessions.
    pub weight: f64,
}

pub(crate) fn sources() -> Vec<Source> {
    let s = |utm, click_id, referrer, conversion, weight| Source {
        utm,
        click_id,
        referrer,
        conversion,
        weight,
    };
    vec![
        s(None, None, None, 1.1, 0.22),
        s(None, None, Some("https://www.google.com/"), 1.0, 0.20),
        s(
            Some(("google", "cpc", "brand_search")),
            Some("gclid"),
            Some("https://www.google.com/"),
            1.6,
            0.08,
        ),
        s(
            Some(("google", "cpc", "generic_shoes")),
            Some("gclid"),
            Some("https://www.google.com/"),
            0.9,
            0.07,
        ),
        s(
            Some(("facebook", "paid_social", "spring_sale")),
            Some("fbclid"),
            Some("https://m.facebook.com/"),
            0.7,
            0.10,
        ),
        s(
            Some(("instagram", "paid_social", "influencer_q2")),
            None,
            Some("https://www.instagram.com/"),
            0.6,
            0.06,
        ),
        s(
            Some(("newsletter", "email", "weekly_picks")),
            None,
            None,
            1.8,
            0.08,
        ),
        s(
            Some(("bing", "cpc", "brand_search")),
            Some("msclkid"),
            Some("https://www.bing.com/"),
            1.3,
            0.03,
        ),
        s(
            Some(("dealhub", "affiliate", "cashback")),
            None,
            Some("https://www.dealhub.example/"),
            1.2,
            0.06,
        ),
        s(None, None, Some("https://www.reddit.com/"), 0.8, 0.05),
        s(None, None, Some("https://duckduckgo.com/"), 1.0, 0.05),
    ]
}

/// What a device looks like: user agent and device type.
pub(crate) const DEVICES: &[(&str, &str, f64)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        0.30,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        "desktop",
        0.12,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "mobile",
        0.28,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "mobile",
        0.22,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "tablet",
        0.08,
    ),
];

pub(crate) const BOTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
];

/// A device a shopper uses: its anonymous id, user agent, IP and clock error.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub anonymous_id: String,
    pub device_id: String,
    pub user_agent: &'static str,
    pub device_type: &'static str,
    pub ip: String,
    /// Where the device is (index into [`MARKETS`]).
    pub market: usize,
    /// Device clock minus true time, microseconds.
    pub skew_micros: i64,
}

#[derive(Clone, Debug)]
pub(crate) struct User {
    /// Set once the shopper has an account.
    pub user_id: Option<String>,
    pub market: usize,
    pub device: Device,
    /// Payment cards (fingerprints), the usual one first.
    pub cards: Vec<String>,
    pub signed_up_at: Option<i64>,
    /// Products bought, for reviews and buy-again.
    pub bought: Vec<usize>,
    /// Categories the shopper likes (index into the catalog's categories).
    pub interests: [usize; 2],
}

pub(crate) fn pick_weighted<T>(
    rng: &mut ChaCha8Rng,
    items: &[T],
    weight: impl Fn(&T) -> f64,
) -> usize {
    let total: f64 = items.iter().map(&weight).sum();
    let mut x = rng.random::<f64>() * total;
    for (i, item) in items.iter().enumerate() {
        x -= weight(item);
        if x <= 0.0 {
            return i;
        }
    }
    items.len() - 1
}

pub(crate) fn hex_id(rng: &mut ChaCha8Rng, prefix: &str) -> String {
    format!("{prefix}{:016x}", rng.random::<u64>())
}

pub(crate) fn ip(rng: &mut ChaCha8Rng, market: usize) -> String {
    // A first octet per market, so IPs of one country look alike (as GeoIP would see them).
    let first = [24, 81, 91, 90, 99, 101, 126, 83, 177, 89][market % 10];
    format!(
        "{first}.{}.{}.{}",
        rng.random_range(0..=255),
        rng.random_range(0..=255),
        rng.random_range(1..=254)
    )
}

/// One of the few IPs a carrier's NAT or an office puts many shoppers of a country behind.
pub(crate) fn shared_ip(market: usize, index: usize) -> String {
    let first = [24, 81, 91, 90, 99, 101, 126, 83, 177, 89][market % 10];
    format!("{first}.250.{}.{}", index / 250, 1 + index % 250)
}

pub(crate) fn new_device(rng: &mut ChaCha8Rng, market: usize, skewed_share: f64) -> Device {
    let d = pick_weighted(rng, DEVICES, |d| d.2);
    let skew_micros = if rng.random_bool(skewed_share.clamp(0.0, 1.0)) {
        // Clocks off by a few minutes to three days, either way.
        let magnitude = (rng.random_range(5.0f64.ln()..(3.0 * 24.0 * 60.0f64).ln())).exp();
        let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        (sign * magnitude * 60_000_000.0) as i64
    } else {
        rng.random_range(-2_000_000..2_000_000)
    };
    Device {
        anonymous_id: uuid(rng),
        device_id: hex_id(rng, "d-"),
        user_agent: DEVICES[d].0,
        device_type: DEVICES[d].1,
        ip: ip(rng, market),
        market,
        skew_micros,
    }
}

pub(crate) fn uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

pub(crate) fn card(rng: &mut ChaCha8Rng) -> String {
    hex_id(rng, "fp_")
}
