//! Latency of a row of exchanges (DNS queries, requests): a histogram for quantiles, the
//! exact sum, and Prometheus-style buckets.

use crate::snapshot::{LATENCY_BUCKETS_NS, Latency};
use hdrhistogram::Histogram;

pub struct LatencyStats {
    /// µs, 1 µs .. 1 min, 2 significant digits: about 10 KiB, where the devices'
    /// nanosecond histograms take 256 KiB.
    hist: Histogram<u32>,
    pub sum_ns: u64,
    pub buckets: [u64; LATENCY_BUCKETS_NS.len() + 1],
}

impl Default for LatencyStats {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
            sum_ns: 0,
            buckets: [0; LATENCY_BUCKETS_NS.len() + 1],
        }
    }
}

impl LatencyStats {
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.div_ceil(1000).max(1));
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.buckets[LATENCY_BUCKETS_NS.partition_point(|&b| b < ns)] += 1;
    }

    pub fn summary(&self) -> Latency {
        let h = &self.hist;
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            max: h.max() as f64,
        }
    }
}
