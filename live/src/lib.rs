//! # shoplake-live: fraud scoring and recommendations, served while events arrive
//!
//! The serving engines of the platform, with their own lifecycle beside the streaming stage
//! (`shoplake-transform`): the stage feeds them through its [`Observer`] trait, the storefront asks
//! them over HTTP, and evaluations measure them offline.
//!
//! ```text
//!  stage (transform) ──Observer::observe(admitted event, session)──► Live ─┬─ FraudEngine (fraud/)
//!        │  flush: take_rows ─► _staging/fraud_decisions/  (fraud/decisions) └─ RecsEngine  (recs/)
//!        │  flush: take_dirty ─► the stage's redb state, with the checkpoint
//!        └  open:  warm::attach ─► saved state, or product_affinity + the lake's last hours
//!
//!  storefront ──HTTP──► http::router: POST /v1/fraud/score, GET /v1/recommendations/{shopper},
//!                                     GET /v1/products/{id}/related
//!  dashboards ──HTTP──► GET /v1/live/pulse (pulse: the last hour, minute by minute)
//!  shoplake eval ─► fraud::eval, recs::eval, probe::Probed (the engines' answers just before an order)
//! ```
//!
//! - [`engines`]: [`Live`], both engines behind one handle (a `RwLock` each), its counters and the
//!   [`Observer`] implementation the stage calls;
//! - [`fraud`]: features over event-time windows, rules from a TOML file (reloaded when it
//!   changes), a decision per order, and the rows of the `fraud_decisions` table;
//! - [`recs`]: item-to-item, trending, popular, buy-again and recently viewed recommendations;
//! - [`config`]: `[stage.fraud]`, `[stage.recommendations]`, `stage.live_rebuild`;
//! - [`http`]: the storefront's endpoints and the dashboards' pulse;
//! - [`pulse`]: the stream's last hour minute by minute (events, sessions, orders, revenue, top
//!   and trending products), which the dashboards' Live page reads;
//! - [`warm`]: attaching the engines to a stage, rebuilding their state from the lake when no
//!   saved copy exists;
//! - [`probe`]: an observer that shows an evaluation each event and the engines just before they
//!   see it.
//!
//! Why these dependencies: `shoplake-transform` for the [`Observer`] trait, admission (the
//! evaluations replay streams as the stage admits them) and the reporting currency's rates;
//! `shoplake-batch` for the warm start, which reads `product_affinity` and recent events back
//! from the lake (a real need: a new worker has no other copy of the history); `evalexpr` parses
//! and evaluates the fraud rules' conditions (a small, well-kept expression language, so rules are
//! data, not code) and `toml` reads the rules files; `parking_lot` gives the engines read-write
//! locks that the stage and the HTTP handlers share without poisoning; `axum` serves the
//! endpoints and `shoplake-server` gives them their error body and exports the engines' counters;
//! `humantime-serde` reads the config's durations with units (`"72h"`).

pub mod config;
pub mod engines;
pub mod fraud;
pub mod http;
pub mod probe;
pub mod pulse;
pub mod recs;
pub mod warm;

pub use config::{FraudConfig, LiveConfig, RecommendationsConfig};
pub use engines::{Live, LiveMetrics};
pub use shoplake_transform::Observer;

/// Result of the live engines.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the live engines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fraud rules file does not load (a user's mistake: its line and reason are given).
    #[error("fraud rules {}: {source}", path.display())]
    Rules {
        path: std::path::PathBuf,
        #[source]
        source: fraud::RuleError,
    },
    /// An entity saved with the stage's checkpoints does not load (written by an incompatible
    /// version, or damaged): not retryable.
    #[error("saved live state {key} does not load: {reason}")]
    SavedState { key: String, reason: String },
    /// The reporting currency's rates, or the stage the engines were attached to.
    #[error(transparent)]
    Stage(#[from] shoplake_transform::Error),
    /// Reading the lake's history for a warm start.
    #[error(transparent)]
    Lake(#[from] shoplake_batch::Error),
    /// Reading the lake's events back for a warm start failed midway.
    #[error("reading the lake's events to rebuild the live state: {source}")]
    History {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Recs(#[from] recs::RecsError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
