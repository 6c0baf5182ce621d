//! The duration histogram every layer records into: lock-free buckets from 100 µs to 60 s and
//! `+Inf`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of every duration histogram, in seconds: 100 µs to 60 s, then `+Inf` (the
/// encoder's name for `f64::MAX`), which holds every observation: `histogram_quantile` answers
/// NaN for a histogram without it, so an alert on a quantile could never fire.
const BUCKETS: [f64; 18] = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    30.0,
    60.0,
    f64::MAX,
];

/// A duration histogram whose recording is lock-free (prometheus-client's own takes a write
/// lock per observation). Clones share the counts, so a layer can keep its handle.
#[derive(Debug, Clone, Default)]
pub struct DurationHistogram(Arc<HistogramCounts>);

/// A family of duration histograms by label set.
pub(super) type Histograms<L> = Family<L, DurationHistogram>;

#[derive(Debug)]
struct HistogramCounts {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for HistogramCounts {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl DurationHistogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let counts = &self.0;
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        counts.count.fetch_add(1, Ordering::Relaxed);
        counts.sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let buckets: Vec<(f64, u64)> =
            BUCKETS.iter().zip(&counts.buckets).map(|(bound, n)| (*bound, n.load(Ordering::Relaxed))).collect();
        let sum = counts.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.count.load(Ordering::Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every observation lands in a bucket, the last one `+Inf` (Prometheus needs it), and the
    /// buckets are cumulative as exported.
    #[test]
    fn an_observation_past_the_last_bound_is_in_the_inf_bucket() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_secs(90));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("d", "durations", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("d_bucket{le=\"60.0\"} 1\n"), "{text}");
        assert!(text.contains("d_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("d_count 2\n"), "{text}");
    }
}
