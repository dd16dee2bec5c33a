//! What the recommendation engine does: the `[recs]` table of the pipeline config file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a co-occurrence count `c_ij` of products `i` and `j` becomes a score, given how often each
/// occurs (`c_i`, `c_j`, in sessions or orders) and the total `n` of sessions or orders. Every
/// count is decayed by event time with the same half-life, so the scores are scale-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// `c_ij / sqrt(c_i · c_j)`: the geometric mean of both conditional probabilities.
    Cosine,
    /// `c_ij · n / (c_i · c_j)`: how much more often than chance the two occur together.
    Lift,
    /// `ln(lift)`, floored at 0: lift on a log scale.
    Pmi,
    /// `c_ij` unchanged: popular products dominate every list (kept for comparison).
    Raw,
}

impl Normalization {
    /// Every normalisation, for evaluations.
    pub const ALL: &'static [Normalization] = &[
        Normalization::Cosine,
        Normalization::Lift,
        Normalization::Pmi,
        Normalization::Raw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Normalization::Cosine => "cosine",
            Normalization::Lift => "lift",
            Normalization::Pmi => "pmi",
            Normalization::Raw => "raw",
        }
    }
}

/// Settings of the recommendation engine. Every field has a default; a config file sets only what
/// it changes. Memory is bounded by `max_products` × (2 × `neighbours` + `serve_neighbours` +
/// `trending_buckets`) small entries and `max_shoppers` × (`recently_viewed` +
/// `purchases_per_shopper` + `session_window`) entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecsConfig {
    /// How co-occurrence counts become scores. Cosine is the default: of the normalised scores it
    /// did best on the simulator's held-out purchases (figures in the `recs` module docs).
    pub normalization: Normalization,
    /// Half-life of every decayed count (co-occurrences, products' session and order counts,
    /// popularity), in event time (`"14days"`).
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// Evidence shrinkage: a pair seen `c` times (decayed) keeps `c / (c + shrinkage)` of its
    /// normalised score, so that one chance co-occurrence of two rare products does not win.
    pub shrinkage: f64,
    /// Neighbours kept per product and kind (viewed together, bought together). Up to twice as
    /// many are collected; then the strongest `neighbours` by score are kept and the rest dropped.
    pub neighbours: usize,
    /// Neighbours per product and kind precomputed (sorted, normalised) for serving.
    pub serve_neighbours: usize,
    /// A product viewed in a session pairs with at most this many of the session's latest
    /// distinct products.
    pub session_window: usize,
    /// An order pairs at most this many of its distinct products.
    pub order_pair_limit: usize,
    /// Recently viewed products kept per shopper.
    pub recently_viewed: usize,
    /// Products bought kept per shopper (for exclusions and buy again); the oldest go first.
    pub purchases_per_shopper: usize,
    /// Ids (anonymous ids and user id) kept per shopper; the oldest anonymous id goes first.
    pub ids_per_shopper: usize,
    /// A shopper not seen for this long (event time) is forgotten.
    #[serde(with = "humantime_serde")]
    pub shopper_ttl: Duration,
    /// Most shoppers kept; the least recently seen goes first.
    pub max_shoppers: usize,
    /// Most products kept. A product first seen while the engine holds this many is ignored until
    /// `expire` makes room (it evicts the least recently seen tenth once the cap is reached).
    pub max_products: usize,
    /// A product without events for this long (event time) is forgotten.
    #[serde(with = "humantime_serde")]
    pub product_ttl: Duration,
    /// Most distinct categories; products of further categories count as uncategorised.
    pub max_categories: usize,
    /// Width of one trending bucket, in event time (`"1h"`; whole seconds).
    #[serde(with = "humantime_serde")]
    pub trending_bucket: Duration,
    /// Buckets in the trending window (window = buckets × bucket width).
    pub trending_buckets: usize,
    /// Trending and popular products precomputed per category and overall.
    pub list_len: usize,
    /// How often (in event time) `observe` refreshes the precomputed serving lists; `expire`
    /// refreshes them too.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// A product the shopper bought within this long is not recommended, unless it is a
    /// buy-again product that is due.
    #[serde(with = "humantime_serde")]
    pub exclude_bought: Duration,
    /// A product is a buy-again product when its estimated repurchase rate (share of its buyers
    /// who bought it again, shrunk toward its category's and then the store's rate) is at least
    /// this many times the store's rate.
    pub buy_again_min_lift: f64,
    /// Pseudo-count of that shrinkage (and of the shrinkage of repurchase intervals).
    pub buy_again_prior: f64,
    /// A buy-again product is due once this share of its typical repurchase interval (geometric
    /// mean of observed intervals, shrunk like the rate) has passed since the shopper last bought it.
    pub buy_again_due_fraction: f64,
    /// Recently viewed products used as seeds for their neighbours.
    pub seeds: usize,
    /// Weights of the signals when they are combined into one score.
    pub weights: Weights,
}

/// Weights of the signals. Neighbour scores are normalised per seed (the best neighbour scores 1)
/// before weighting, so the weights compare signals, not scales.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Seed weight of the product on the page (`context_product`).
    pub context: f64,
    /// Seed weight of the most recently viewed product; each older seed gets `seed_decay` times
    /// the weight of the one before, and every seed halves per `recency_half_life` since it was
    /// viewed.
    pub recent_seed: f64,
    pub seed_decay: f64,
    /// Half-life of the shopper's own views as seeds and as candidates, in event time since the
    /// view (time, not list position: the ongoing session's products all count nearly fully,
    /// last week's little).
    #[serde(with = "humantime_serde")]
    pub recency_half_life: Duration,
    /// Seed weight of each of the shopper's three latest purchases (their bought-together
    /// neighbours only: complements of what they own).
    pub purchase_seed: f64,
    /// Weight of bought-together neighbours.
    pub bought_together: f64,
    /// Weight of viewed-together neighbours.
    pub viewed_together: f64,
    /// Weight of a product the shopper has just viewed, itself a candidate (halving per
    /// `recency_half_life` since the view).
    pub recently_viewed: f64,
    /// Factor of a recently viewed product that is in the cart.
    pub cart_factor: f64,
    /// Weight of a due buy-again product with the highest repurchase rate of the shopper's.
    pub buy_again: f64,
    /// Weight of the top trending product of the shopper's favourite category.
    pub trending: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            context: 2.0,
            recent_seed: 1.0,
            seed_decay: 0.7,
            recency_half_life: Duration::from_secs(24 * HOUR),
            purchase_seed: 0.4,
            bought_together: 1.0,
            viewed_together: 0.6,
            recently_viewed: 0.5,
            cart_factor: 1.5,
            buy_again: 1.0,
            trending: 0.6,
        }
    }
}

impl Default for RecsConfig {
    fn default() -> Self {
        RecsConfig {
            normalization: Normalization::Cosine,
            half_life: Duration::from_secs(14 * DAY),
            shrinkage: 1.0,
            neighbours: 30,
            serve_neighbours: 20,
            session_window: 10,
            order_pair_limit: 20,
            recently_viewed: 20,
            purchases_per_shopper: 50,
            ids_per_shopper: 8,
            shopper_ttl: Duration::from_secs(90 * DAY),
            max_shoppers: 200_000,
            max_products: 100_000,
            product_ttl: Duration::from_secs(180 * DAY),
            max_categories: 4_096,
            trending_bucket: Duration::from_secs(HOUR),
            trending_buckets: 24,
            list_len: 100,
            refresh: Duration::from_secs(60),
            exclude_bought: Duration::from_secs(30 * DAY),
            buy_again_min_lift: 2.0,
            buy_again_prior: 5.0,
            buy_again_due_fraction: 0.5,
            seeds: 5,
            weights: Weights::default(),
        }
    }
}

const HOUR: u64 = 3_600;
const DAY: u64 = 24 * HOUR;

impl RecsConfig {
    /// [`RecsConfig::half_life`] in hours (the unit of the decay arithmetic and of the
    /// `product_affinity` table's `half_life_hours`).
    pub fn half_life_hours(&self) -> f64 {
        self.half_life.as_secs_f64() / 3_600.0
    }

    /// The config with sizes raised to their smallest workable values (a zero cap would make the
    /// engine keep nothing).
    pub(super) fn sanitized(mut self) -> Self {
        self.neighbours = self.neighbours.max(1);
        self.serve_neighbours = self.serve_neighbours.max(1);
        self.session_window = self.session_window.max(1);
        self.order_pair_limit = self.order_pair_limit.max(2);
        self.recently_viewed = self.recently_viewed.max(1);
        self.purchases_per_shopper = self.purchases_per_shopper.max(1);
        self.ids_per_shopper = self.ids_per_shopper.max(2);
        self.max_shoppers = self.max_shoppers.max(1);
        self.max_products = self.max_products.max(1);
        self.max_categories = self.max_categories.clamp(1, usize::from(u16::MAX));
        self.trending_bucket = self.trending_bucket.max(Duration::from_secs(1));
        self.trending_buckets = self.trending_buckets.max(1);
        self.list_len = self.list_len.max(1);
        if self.half_life.is_zero() {
            self.half_life = RecsConfig::default().half_life;
        }
        if self.weights.recency_half_life.is_zero() {
            self.weights.recency_half_life = Weights::default().recency_half_life;
        }
        self.shrinkage = self.shrinkage.max(0.0);
        self.buy_again_prior = self.buy_again_prior.max(0.0);
        self
    }
}
