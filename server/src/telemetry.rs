//! One metrics registry per process, one exporter.
//!
//! A component keeps its figures where its hot path can bump them for the price of an atomic add
//! (a struct of `AtomicU64`s), and implements [`Collector`] to describe them: on each scrape the
//! registry asks every collector to encode its current values. The helpers below are the only
//! ways a collector writes a metric, so every family has a `# HELP` and a `# TYPE` line and
//! counters get the `_total` suffix from the encoder (name a counter without it).
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use prometheus_client::collector::Collector;
//! use prometheus_client::encoding::DescriptorEncoder;
//! use shoplake_server::telemetry::{self, Telemetry};
//!
//! #[derive(Debug, Default)]
//! struct Jobs { done: AtomicU64 }
//!
//! const JOBS_DONE: &str = "shoplake_jobs_done";
//!
//! impl Collector for Jobs {
//!     fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
//!         telemetry::counter(&mut enc, JOBS_DONE, "Jobs finished.", self.done.load(Ordering::Relaxed))
//!     }
//! }
//!
//! let jobs = std::sync::Arc::new(Jobs::default());
//! jobs.done.fetch_add(3, Ordering::Relaxed);
//! let mut t = Telemetry::new();
//! t.register(jobs.clone());
//! assert!(t.render().contains("shoplake_jobs_done_total 3\n"));
//! ```

use std::borrow::Cow;
use std::fmt::Result;
use std::sync::Arc;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The metrics of one process.
#[derive(Debug, Default)]
pub struct Telemetry {
    registry: Registry,
}

/// The content type of [`Telemetry::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a component's metrics.
    pub fn register(&mut self, source: impl Collector) {
        self.registry.register_collector(Box::new(source));
    }

    /// Adds a component's metrics with a label on every sample (which stream, which delivery
    /// stream), for components that run once per resource.
    pub fn register_labelled(
        &mut self,
        label: &'static str,
        value: impl Into<String>,
        source: impl Collector,
    ) {
        self.registry
            .sub_registry_with_label((Cow::Borrowed(label), Cow::Owned(value.into())))
            .register_collector(Box::new(source));
    }

    /// Every metric in the OpenMetrics text format, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail, and the collectors only write.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Shared, for the `/metrics` route.
    pub fn shared(self) -> Arc<Telemetry> {
        Arc::new(self)
    }
}

/// One component's metrics alone, in the text format (tests and one-shot commands).
pub fn render(source: impl Collector) -> String {
    let mut t = Telemetry::new();
    t.register(source);
    t.render()
}

/// A counter without labels. `name` has no `_total`: the encoder adds it.
pub fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A counter of seconds (kept as microseconds or nanoseconds, exported as a float).
pub fn seconds_counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    seconds: f64,
) -> Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&seconds, None)
}

/// A counter with one label: one sample per `(label value, count)`.
pub fn counter_by<'v>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'v str, u64)>,
) -> Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        family
            .encode_family(&[(label, value)])?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    Ok(())
}

/// A gauge without labels.
pub fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A gauge with one label: one sample per `(label value, value)`.
pub fn gauge_by<'v>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'v str, i64)>,
) -> Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, v) in values {
        family.encode_family(&[(label, value)])?.encode_gauge(&v)?;
    }
    Ok(())
}

/// A histogram from its buckets: `(upper bound, observations in this bucket alone)`, the last
/// bound `f64::INFINITY`; the encoder makes the counts cumulative.
pub fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> Result {
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result {
            counter_by(
                &mut enc,
                "x_requests",
                "Requests.",
                "reason",
                [("a", 1), ("b", 2)],
            )?;
            gauge(&mut enc, "x_up", "Up.", 1i64)?;
            histogram(
                &mut enc,
                "x_seconds",
                "Time.",
                0.5,
                3,
                &[(0.1, 2), (1.0, 1), (f64::INFINITY, 0)],
            )
        }
    }

    #[test]
    fn families_render_with_labels_and_cumulative_buckets() {
        let mut t = Telemetry::new();
        t.register_labelled("stream", "orders", Fixed);
        let text = t.render();
        for line in [
            "# TYPE x_requests counter",
            "x_requests_total{stream=\"orders\",reason=\"a\"} 1",
            "x_requests_total{stream=\"orders\",reason=\"b\"} 2",
            "x_up{stream=\"orders\"} 1",
            "x_seconds_bucket{stream=\"orders\",le=\"1.0\"} 3",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
