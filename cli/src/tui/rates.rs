//! Metric maths for the TUI: pure functions, saturating arithmetic, and no division by a
//! zero interval. Everything the views show per second goes through here.

use ksight_engine::snapshot::{LATENCY_BUCKETS_NS, Latency};
use std::time::Duration;

/// Events per second over `interval`. `None` for a zero interval: a rate over no time is
/// unknown, not infinite (and not zero).
pub fn per_second(count: u64, interval: Duration) -> Option<f64> {
    let secs = interval.as_secs_f64();
    (secs > 0.0).then(|| count as f64 / secs)
}

/// Average throughput of a connection over its lifetime: `bytes` over `duration_us`.
/// `None` when either is unknown or the duration is zero.
pub fn bytes_per_second_over(bytes: Option<u64>, duration_us: u64) -> Option<f64> {
    let bytes = bytes?;
    per_second(bytes, Duration::from_micros(duration_us))
}

/// A running total that never wraps.
pub fn accumulate(total: u64, more: u64) -> u64 {
    total.saturating_add(more)
}

/// Adds per-CPU counts into per-CPU totals, growing the totals when more CPUs report.
pub fn accumulate_per_cpu(totals: &mut Vec<u64>, more: &[u64]) {
    if totals.len() < more.len() {
        totals.resize(more.len(), 0);
    }
    for (total, n) in totals.iter_mut().zip(more) {
        *total = accumulate(*total, *n);
    }
}

/// Time between two readings on one clock; zero if they arrive out of order.
pub fn elapsed(earlier: Duration, later: Duration) -> Duration {
    later.saturating_sub(earlier)
}

/// Errors as a percentage of requests. `None` for no requests: no error rate, not 0 %.
pub fn error_percent(errors: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| errors.min(requests) as f64 * 100.0 / requests as f64)
}

/// The latency of several rows of exchanges taken together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    pub latency: Latency,
    /// False when the quantiles are upper bounds (several rows summed), not exact.
    pub exact: bool,
}

/// Merges rows' latencies, each with its per-bucket counts ([`LATENCY_BUCKETS_NS`]). One
/// answered row: its own quantiles. Several: quantiles of different rows do not combine,
/// so each is bounded from above by the lower of the largest of the rows' own (at most 1 %
/// of each row is above its p99, so at most 1 % of all) and the upper bound of the bucket
/// it falls in among the summed buckets (when every row carries buckets). The maximum is
/// exact. `None` when no row was answered.
pub fn merged_latency<'a>(
    rows: impl IntoIterator<Item = (&'a Latency, &'a [u64])>,
) -> Option<Merged> {
    let rows: Vec<(&Latency, &[u64])> = rows.into_iter().filter(|(l, _)| l.count > 0).collect();
    if let [(only, _)] = rows[..] {
        return Some(Merged {
            latency: only.clone(),
            exact: true,
        });
    }
    if rows.is_empty() {
        return None;
    }
    let count = rows
        .iter()
        .fold(0u64, |n, (l, _)| n.saturating_add(l.count));
    let mut buckets = vec![0u64; LATENCY_BUCKETS_NS.len() + 1];
    for (_, b) in &rows {
        for (sum, &n) in buckets.iter_mut().zip(*b) {
            *sum = sum.saturating_add(n);
        }
    }
    let counted = buckets.iter().fold(0u64, |n, &b| n.saturating_add(b));
    let largest = |f: fn(&Latency) -> f64| rows.iter().map(|(l, _)| f(l)).fold(0.0, f64::max);
    let bound = |q: f64, own: f64| match bucket_bound_us(&buckets, q) {
        Some(b) if counted == count => own.min(b),
        _ => own,
    };
    Some(Merged {
        latency: Latency {
            count,
            p50: bound(0.5, largest(|l| l.p50)),
            p99: bound(0.99, largest(|l| l.p99)),
            max: largest(|l| l.max),
        },
        exact: false,
    })
}

/// The upper bound, in µs, of the bucket quantile `q` falls in; `None` for no counts or
/// the open-ended last bucket.
fn bucket_bound_us(buckets: &[u64], q: f64) -> Option<f64> {
    let total = buckets.iter().fold(0u64, |n, &b| n.saturating_add(b));
    if total == 0 {
        return None;
    }
    let target = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    let i = buckets.iter().position(|&n| {
        seen = seen.saturating_add(n);
        seen >= target
    })?;
    LATENCY_BUCKETS_NS.get(i).map(|&ns| ns as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_interval_has_no_rate() {
        assert_eq!(per_second(10, Duration::ZERO), None);
        assert_eq!(bytes_per_second_over(Some(100), 0), None);
    }

    #[test]
    fn rates_divide_by_the_interval() {
        assert_eq!(per_second(10, Duration::from_secs(2)), Some(5.0));
        assert_eq!(per_second(0, Duration::from_millis(500)), Some(0.0));
        assert_eq!(per_second(3, Duration::from_millis(250)), Some(12.0));
        assert_eq!(per_second(60, Duration::from_secs(3)), Some(20.0));
        assert_eq!(bytes_per_second_over(Some(4000), 2_000_000), Some(2000.0));
        assert_eq!(bytes_per_second_over(None, 2_000_000), None);
    }

    #[test]
    fn counters_going_backwards_do_not_wrap() {
        assert_eq!(
            elapsed(Duration::from_secs(5), Duration::from_secs(2)),
            Duration::ZERO
        );
    }

    #[test]
    fn totals_saturate() {
        assert_eq!(accumulate(u64::MAX - 1, 5), u64::MAX);
        assert_eq!(accumulate(1, 2), 3);
        let mut per_cpu = vec![1];
        accumulate_per_cpu(&mut per_cpu, &[2, 3]);
        assert_eq!(per_cpu, [3, 3]);
        accumulate_per_cpu(&mut per_cpu, &[u64::MAX]);
        assert_eq!(per_cpu, [u64::MAX, 3]);
    }

    #[test]
    fn error_rates_need_requests() {
        assert_eq!(error_percent(0, 0), None);
        assert_eq!(error_percent(3, 0), None);
        assert_eq!(error_percent(1, 4), Some(25.0));
        assert_eq!(error_percent(0, 7), Some(0.0));
        assert_eq!(error_percent(9, 4), Some(100.0), "never above 100 %");
    }

    fn lat(count: u64, p50: f64, p99: f64, max: f64) -> Latency {
        Latency {
            count,
            p50,
            p99,
            max,
        }
    }

    /// Buckets with `n` latencies in the bucket whose upper bound is `ns`.
    fn buckets(entries: &[(u64, u64)]) -> Vec<u64> {
        let mut b = vec![0; LATENCY_BUCKETS_NS.len() + 1];
        for &(ns, n) in entries {
            b[LATENCY_BUCKETS_NS.iter().position(|&x| x == ns).unwrap()] += n;
        }
        b
    }

    #[test]
    fn one_row_keeps_its_exact_latency() {
        let a = lat(3, 120.0, 900.0, 950.0);
        let quiet = lat(0, 0.0, 0.0, 0.0);
        let m = merged_latency([(&a, &[][..]), (&quiet, &[][..])]).unwrap();
        assert_eq!(
            m,
            Merged {
                latency: a,
                exact: true
            }
        );
        assert_eq!(merged_latency([(&quiet, &[][..])]), None);
        assert_eq!(merged_latency(std::iter::empty()), None);
    }

    #[test]
    fn several_rows_bound_their_quantiles_from_above() {
        // 99 fast requests and one slow: the slow row's own p99 would say 2 s.
        let fast = lat(99, 80.0, 95.0, 97.0);
        let slow = lat(1, 2e6, 2e6, 2e6);
        let (bf, bs) = (buckets(&[(100_000, 99)]), buckets(&[(2_500_000_000, 1)]));
        let m = merged_latency([(&fast, &bf[..]), (&slow, &bs[..])]).unwrap();
        assert!(!m.exact);
        assert_eq!(m.latency, lat(100, 100.0, 100.0, 2e6));
        // Without buckets: the largest of each.
        let m = merged_latency([(&fast, &[][..]), (&slow, &[][..])]).unwrap();
        assert_eq!(m.latency, lat(100, 2e6, 2e6, 2e6));
        // The rows' own quantiles when they are lower than the bucket's bound.
        let a = lat(10, 30.0, 40.0, 41.0);
        let b = lat(10, 35.0, 45.0, 46.0);
        let (ba, bb) = (buckets(&[(50_000, 10)]), buckets(&[(50_000, 10)]));
        let m = merged_latency([(&a, &ba[..]), (&b, &bb[..])]).unwrap();
        assert_eq!(m.latency, lat(20, 35.0, 45.0, 46.0));
        // The open last bucket bounds nothing.
        let mut over = vec![0; LATENCY_BUCKETS_NS.len() + 1];
        *over.last_mut().unwrap() = 10;
        let (c, d) = (lat(5, 2e7, 2e7, 2e7), lat(5, 3e7, 3e7, 3e7));
        let m = merged_latency([(&c, &over[..]), (&d, &[][..])]).unwrap();
        assert_eq!(m.latency.p99, 3e7);
    }

    #[test]
    fn huge_counts_stay_finite() {
        let r = per_second(u64::MAX, Duration::from_nanos(1)).unwrap();
        assert!(r.is_finite() && r > 0.0);
    }
}
