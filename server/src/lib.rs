//! # shoplake-server: what every part of shoplake that serves HTTP or keeps counters shares
//!
//! - [`telemetry`]: one metrics registry per process and one exporter. Each component keeps its
//!   counters as plain atomics on its hot path and describes them to the registry as a
//!   [`prometheus_client::collector::Collector`]; `/metrics` encodes them all in one pass, in the
//!   OpenMetrics text format Prometheus scrapes. Metric names are constants of the crate that
//!   owns them.
//! - [`ApiError`]: the one error answer of every API (collector, live endpoints, query service):
//!   a status and `{"error": code, "detail": sentence}`.
//! - [`faults`]: the named places where the fault campaign kills a process.
//! - [`ops`]: `/metrics`, `/health` and `/ready`, merged into each long-running command's router.
//! - [`auth`]: users with roles, API tokens, and the guard every route sits behind; routes are
//!   declared with their rule ([`auth::Routes`]) so none exists without one.
//!
//! Dependencies: `axum` (the HTTP server of every command), `prometheus-client` (the Prometheus
//! project's own Rust client: the OpenMetrics encoder, so that no crate writes exposition text
//! by hand), `serde_json` (the error body). For [`auth`]: `redb` (the users and tokens file, as
//! the collector's write keys), `sha2` (tokens are stored as their SHA-256), `rand` (secrets),
//! `ring` (PBKDF2: the SCRAM-SHA-256 verifier of a password, what Postgres clients log in with),
//! `base64` (Basic credentials), `parking_lot`, `chrono` and `humantime-serde` (expiries, the
//! refresh interval). `fail` (TiKV's fail points, [`faults`]).

pub mod api;
pub mod auth;
pub mod faults;
pub mod ops;
pub mod telemetry;

pub use api::ApiError;
pub use telemetry::Telemetry;
