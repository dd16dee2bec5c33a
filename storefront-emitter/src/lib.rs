//! # shoplake-storefront-emitter: what a storefront embeds to put events on the stream
//!
//! [`emitter`]: the library a Rust storefront (or service) embeds to put events on the stream —
//! batching by count, bytes and linger time, back-pressure when the sink falls behind, retries
//! with exponential backoff and jitter for errors that say a retry can help, and ordering kept per
//! partition key. Events enter with [`emitter::Emitter::emit`] as a partition key and bytes, and
//! leave through an [`emitter::Sink`] (the binary plugs the events stream in). The emitter does not
//! look inside an event. The storefront simulator that tests the pipeline is its own crate
//! (`shoplake-simulator`), so that a storefront does not compile it.
//!
//! Why these dependencies: `tokio` for the emitter's lanes and timers; `async-trait` for the
//! [`emitter::Sink`] trait; `bytes` for payloads shared without copies; `rand` for the jitter of
//! retries; `thiserror` for its errors; `tracing` to log a batch that is retried.

pub mod emitter;
