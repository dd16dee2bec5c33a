//! Enrichment of valid events: marketing channel, inferred sessions, reporting currency, bots.
//! (Event time corrected for device clock skew is computed by `shoplake_events::validate`, since
//! the validity of a timestamp depends on it.)

pub mod bots;
pub mod channel;
pub mod fx;
pub mod sessions;
