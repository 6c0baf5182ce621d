//! The duration histogram every layer records into: lock-free buckets from 100 µs to 60 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of every duration histogram, in seconds: 100 µs to 60 s.
const BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0];

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
