//! # shoplake-storefront-emitter: what a storefront embeds, and a storefront to test with
//!
//! Two parts:
//!
//! - [`emitter`]: the library a Rust storefront (or service) embeds to put events on the stream —
//!   batching by count, bytes and linger time, back-pressure when the sink falls behind, retries
//!   with exponential backoff and jitter for errors that say a retry can help, and ordering kept per
//!   partition key. Events enter with [`emitter::Emitter::emit`] and leave through a
//!   [`emitter::Sink`] (the binary plugs the events stream in).
//! - [`simulator`]: a seeded, deterministic online store (`shoplake emit`): a catalog with
//!   affinity groups, users, marketing campaigns, sessions walking a funnel, orders with payments,
//!   shipments, cancellations and returns, injected fraud with ground-truth labels, and a
//!   configurable share of bad input. It counts what it emits ([`simulator::SimStats`]) so the
//!   lake can be checked against it.
//!
//! Why these dependencies: `rand` / `rand_chacha` for a seeded generator that is the same on every
//! platform; `uuid` for event ids; `shoplake-events` so that every event is built with the wire
//! types of the contract (and checked against its validator in tests); `tokio` for the emitter's
//! lanes and timers; `bytes` for payloads shared without copies.

pub mod emitter;
pub mod simulator;
