//! Metric maths for the TUI: pure functions, saturating arithmetic, and no division by a
//! zero interval. Everything the views show per second goes through here.

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
    fn huge_counts_stay_finite() {
        let r = per_second(u64::MAX, Duration::from_nanos(1)).unwrap();
        assert!(r.is_finite() && r > 0.0);
    }
}
