//! The collector's counters, exported through `shoplake_server::telemetry`. Labels are bounded: the
//! endpoint (a fixed list), the reason of a rejection (a fixed list) and the contract's reasons.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use shoplake_events::Reason;
use shoplake_server::telemetry::{self, Collector, DescriptorEncoder};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// No write key, or an unknown or revoked one (401).
    Unauthorized,
    /// Not JSON, not gzip, or not the shape of the API (400).
    Malformed,
    /// A single event over the event limit (400).
    EventTooLarge,
    /// A request over the batch limit (413).
    TooLarge,
    /// The key's rate limit (429).
    RateLimited,
    /// The stream did not take the events (503).
    StreamUnavailable,
    /// A failure of the collector itself (500).
    Internal,
}

impl RejectReason {
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::Unauthorized,
        RejectReason::Malformed,
        RejectReason::EventTooLarge,
        RejectReason::TooLarge,
        RejectReason::RateLimited,
        RejectReason::StreamUnavailable,
        RejectReason::Internal,
    ];

    /// The stable code used in error bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Malformed => "malformed",
            RejectReason::EventTooLarge => "event_too_large",
            RejectReason::TooLarge => "too_large",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::StreamUnavailable => "stream_unavailable",
            RejectReason::Internal => "internal",
        }
    }
}

/// The endpoints, for labels.
pub const ENDPOINTS: &[&str] = &[
    "track", "page", "screen", "identify", "alias", "group", "batch",
];

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Counters of the collector, readable while it runs.
#[derive(Debug, Default)]
pub struct CollectorMetrics {
    /// Requests answered 200, by endpoint.
    pub requests_ok: [AtomicU64; 7],
    /// Events answered 200 (durable in the stream).
    pub events_accepted: AtomicU64,
    /// Requests refused, by [`RejectReason`].
    pub requests_rejected: [AtomicU64; 7],
    /// Events in refused requests, by [`RejectReason`] (0 when the body could not be read).
    pub events_rejected: [AtomicU64; 7],
    /// Accepted events that fail the contract at the edge, by the contract's reason: the
    /// streaming stage turns them into bad rows.
    pub events_invalid: [AtomicU64; 16],
    /// Latency histogram of every request: counts per bucket, then +Inf.
    latency_buckets: [AtomicU64; 14],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    /// UTC micros of the last failed write to the stream; 0 when the last write succeeded.
    pub stream_failed_at: AtomicI64,
}

impl CollectorMetrics {
    pub fn ok(&self, endpoint: usize, events: usize) {
        self.requests_ok[endpoint].fetch_add(1, Ordering::Relaxed);
        self.events_accepted
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: RejectReason, events: usize) {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.requests_rejected[i].fetch_add(1, Ordering::Relaxed);
        self.events_rejected[i].fetch_add(events as u64, Ordering::Relaxed);
    }

    pub fn invalid(&self, reason: Reason) {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.events_invalid[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Metric names (counters without `_total`, which the encoder adds).
pub mod names {
    pub const REQUESTS: &str = "shoplake_collector_requests";
    pub const EVENTS_ACCEPTED: &str = "shoplake_collector_events_accepted";
    pub const REQUESTS_REJECTED: &str = "shoplake_collector_requests_rejected";
    pub const EVENTS_REJECTED: &str = "shoplake_collector_events_rejected";
    pub const EVENTS_INVALID: &str = "shoplake_collector_events_invalid";
    pub const REQUEST_DURATION: &str = "shoplake_collector_request_duration_seconds";
    pub const STREAM_UP: &str = "shoplake_collector_stream_up";
}

impl Collector for CollectorMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by_reject = |counts: &'_ [AtomicU64; 7]| {
            RejectReason::ALL
                .iter()
                .zip(counts.iter())
                .map(|(r, n)| (r.as_str(), load(n)))
                .collect::<Vec<_>>()
        };
        telemetry::counter_by(
            &mut enc,
            names::REQUESTS,
            "Requests answered 200, by endpoint.",
            "endpoint",
            ENDPOINTS
                .iter()
                .zip(&self.requests_ok)
                .map(|(e, n)| (*e, load(n))),
        )?;
        telemetry::counter(
            &mut enc,
            names::EVENTS_ACCEPTED,
            "Events durable in the stream and answered 200.",
            load(&self.events_accepted),
        )?;
        telemetry::counter_by(
            &mut enc,
            names::REQUESTS_REJECTED,
            "Requests refused, by reason.",
            "reason",
            by_reject(&self.requests_rejected),
        )?;
        telemetry::counter_by(
            &mut enc,
            names::EVENTS_REJECTED,
            "Events in refused requests, by reason.",
            "reason",
            by_reject(&self.events_rejected),
        )?;
        telemetry::counter_by(
            &mut enc,
            names::EVENTS_INVALID,
            "Accepted events that fail the contract (they become bad rows), by reason.",
            "reason",
            Reason::ALL
                .iter()
                .zip(&self.events_invalid)
                .map(|(r, n)| (r.as_str(), load(n))),
        )?;
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.latency_buckets.iter().map(load))
            .collect();
        telemetry::histogram(
            &mut enc,
            names::REQUEST_DURATION,
            "Time to answer a request.",
            load(&self.latency_sum_micros) as f64 / 1e6,
            load(&self.latency_count),
            &buckets,
        )?;
        telemetry::gauge(
            &mut enc,
            names::STREAM_UP,
            "Whether the last write to the stream succeeded.",
            i64::from(self.stream_failed_at.load(Ordering::Relaxed) == 0),
        )
    }
}
