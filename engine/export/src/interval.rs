//! The agent serves cumulative snapshots (counters since it started); `top` works in
//! intervals, like a capture of its own that resets its counters each interval.
//! [`interval_between`] turns two successive cumulative snapshots into the snapshot of the
//! interval between them: counters become differences (saturating, so an agent that
//! restarted reads as a quiet interval, never as a huge one); cgroups and devices with
//! nothing in the interval are left out, as a resetting capture leaves them out; and what
//! the agent lists as finished is reported once even when two requests fall in one agent
//! tick. [`Intervals`] keeps the previous snapshot for the next difference.

use ksight_attribution::group_by_owner;
use ksight_engine::snapshot::{
    CgroupRow, ConnectionRow, DeviceRow, LATENCY_BUCKETS_NS, Latency, ProcessRow, Snapshot,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A counter's growth; a counter that went back (the agent restarted) grew by nothing.
fn delta(previous: u64, current: u64) -> u64 {
    current.saturating_sub(previous)
}

/// Successive cumulative snapshots in, intervals out. The first snapshot (and the first
/// after [`Intervals::reset`], e.g. once the agent was lost) only primes the next one.
#[derive(Debug, Default)]
pub struct Intervals {
    previous: Option<(Instant, Snapshot)>,
}

impl Intervals {
    /// The interval from the previous snapshot to `cumulative`, taken at `at`: how long it
    /// lasted and what happened in it. None for the first.
    pub fn push(&mut self, at: Instant, cumulative: Snapshot) -> Option<(Duration, Snapshot)> {
        let interval = self.previous.as_ref().map(|(then, before)| {
            (
                at.saturating_duration_since(*then),
                interval_between(before, &cumulative),
            )
        });
        self.previous = Some((at, cumulative));
        interval
    }

    /// Forgets the previous snapshot: the next one primes again.
    pub fn reset(&mut self) {
        self.previous = None;
    }
}

type ConnKey<'a> = (
    &'a str,
    u16,
    &'a str,
    u16,
    &'a str,
    u64,
    Option<u64>,
    Option<u64>,
);

fn conn_key(c: &ConnectionRow) -> ConnKey<'_> {
    (
        &c.saddr,
        c.sport,
        &c.daddr,
        c.dport,
        &c.role,
        c.duration_us,
        c.bytes_sent,
        c.bytes_received,
    )
}

pub fn interval_between(prev: &Snapshot, cur: &Snapshot) -> Snapshot {
    let mut out = Snapshot {
        backend: cur.backend.clone(),
        duration_s: (cur.duration_s - prev.duration_s).max(0.0),
        events: delta(prev.events, cur.events),
        lost_events: delta(prev.lost_events, cur.lost_events),
        lost_events_per_cpu: cur
            .lost_events_per_cpu
            .iter()
            .enumerate()
            .map(|(i, &n)| delta(prev.lost_events_per_cpu.get(i).copied().unwrap_or(0), n))
            .collect(),
        malformed_records: delta(prev.malformed_records, cur.malformed_records),
        late_events: delta(prev.late_events, cur.late_events),
        ..Snapshot::default()
    };

    let (pp, cp) = (&prev.process, &cur.process);
    let p = &mut out.process;
    p.execs = delta(pp.execs, cp.execs);
    p.forks = delta(pp.forks, cp.forks);
    p.threads = delta(pp.threads, cp.threads);
    p.exits = delta(pp.exits, cp.exits);
    p.exit_codes = ksight_engine::snapshot::counts_since(&cp.exit_codes, &pp.exit_codes);
    let before: HashMap<u32, &ProcessRow> = pp.processes.iter().map(|r| (r.pid, r)).collect();
    p.processes = cp
        .processes
        .iter()
        .filter_map(|row| match before.get(&row.pid) {
            // Listed as exited last time too: already reported.
            Some(old) if old.exit_code.is_some() && row.exit_code.is_some() => None,
            Some(old) if old.exit_code.is_none() => Some(ProcessRow {
                execs: delta(old.execs, row.execs),
                forks: delta(old.forks, row.forks),
                tcp_bytes_sent: delta(old.tcp_bytes_sent, row.tcp_bytes_sent),
                tcp_bytes_received: delta(old.tcp_bytes_received, row.tcp_bytes_received),
                block_read_bytes: delta(old.block_read_bytes, row.block_read_bytes),
                block_write_bytes: delta(old.block_write_bytes, row.block_write_bytes),
                ..row.clone()
            }),
            // New since the last request (or a reused pid): all its counts are recent.
            _ => Some(row.clone()),
        })
        .collect();

    let (pt, ct) = (&prev.tcp, &cur.tcp);
    let t = &mut out.tcp;
    t.connects = delta(pt.connects, ct.connects);
    t.connect_failures = delta(pt.connect_failures, ct.connect_failures);
    t.accepts = delta(pt.accepts, ct.accepts);
    t.closes = delta(pt.closes, ct.closes);
    t.retransmits = delta(pt.retransmits, ct.retransmits);
    t.resets_sent = delta(pt.resets_sent, ct.resets_sent);
    t.resets_received = delta(pt.resets_received, ct.resets_received);
    t.bytes_sent = delta(pt.bytes_sent, ct.bytes_sent);
    t.bytes_received = delta(pt.bytes_received, ct.bytes_received);
    let closed_before: HashSet<ConnKey> = pt
        .connections
        .iter()
        .filter(|c| c.state == "CLOSE")
        .map(conn_key)
        .collect();
    t.connections = ct
        .connections
        .iter()
        .filter(|c| c.state != "CLOSE" || !closed_before.contains(&conn_key(c)))
        .cloned()
        .collect();

    let devices_before: HashMap<&str, &DeviceRow> = prev
        .block
        .devices
        .iter()
        .map(|d| (d.dev.as_str(), d))
        .collect();
    out.block.devices = cur
        .block
        .devices
        .iter()
        .map(|d| match devices_before.get(d.dev.as_str()) {
            Some(old) => device_delta(old, d),
            None => d.clone(),
        })
        .filter(|d| d.reads + d.writes + d.other + d.errors + d.latency_us.count > 0)
        .collect();

    let cgroups_before: HashMap<u64, &CgroupRow> =
        prev.cgroups.iter().map(|c| (c.cgroup_id, c)).collect();
    out.cgroups = cur
        .cgroups
        .iter()
        .map(|c| match cgroups_before.get(&c.cgroup_id) {
            Some(old) => c.since(old),
            None => c.clone(),
        })
        .filter(|c| !c.is_quiet())
        .collect();
    if !cur.containers.is_empty() {
        // The agent attributed its rows: group this interval's the same way.
        out.containers = group_by_owner(&out.cgroups);
    }
    out
}

fn device_delta(old: &DeviceRow, d: &DeviceRow) -> DeviceRow {
    let buckets: Vec<u64> = d
        .latency_buckets
        .iter()
        .enumerate()
        .map(|(i, &n)| delta(old.latency_buckets.get(i).copied().unwrap_or(0), n))
        .collect();
    let latency = if buckets.len() == LATENCY_BUCKETS_NS.len() + 1 {
        latency_from_buckets(&buckets)
    } else {
        // No buckets: percentiles since the agent started are the best there is.
        d.latency_us.clone()
    };
    DeviceRow {
        reads: delta(old.reads, d.reads),
        writes: delta(old.writes, d.writes),
        other: delta(old.other, d.other),
        read_bytes: delta(old.read_bytes, d.read_bytes),
        write_bytes: delta(old.write_bytes, d.write_bytes),
        errors: delta(old.errors, d.errors),
        latency_us: latency,
        latency_sum_ns: delta(old.latency_sum_ns, d.latency_sum_ns),
        latency_buckets: buckets,
        ..d.clone()
    }
}

/// Percentiles from per-bucket counts, as the upper bound of the bucket each falls in
/// (the last bucket, past the largest bound, reads as that bound).
pub fn latency_from_buckets(buckets: &[u64]) -> Latency {
    let count: u64 = buckets.iter().fold(0, |a, &b| a.saturating_add(b));
    let bound_us =
        |i: usize| LATENCY_BUCKETS_NS[i.min(LATENCY_BUCKETS_NS.len() - 1)] as f64 / 1000.0;
    let quantile = |q: f64| {
        let target = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &n) in buckets.iter().enumerate() {
            seen = seen.saturating_add(n);
            if seen >= target {
                return bound_us(i);
            }
        }
        0.0
    };
    if count == 0 {
        return Latency::default();
    }
    let max = buckets.iter().rposition(|&n| n > 0).map_or(0.0, bound_us);
    Latency {
        count,
        p50: quantile(0.5),
        p99: quantile(0.99),
        max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, execs: u64, exit_code: Option<i32>) -> ProcessRow {
        ProcessRow {
            pid,
            execs,
            exit_code,
            ..Default::default()
        }
    }

    #[test]
    fn counters_become_differences_and_never_wrap() {
        let mut a = Snapshot {
            events: 100,
            lost_events: 5,
            lost_events_per_cpu: vec![2, 3],
            ..Default::default()
        };
        a.process.exit_codes.insert("0".into(), 3);
        let mut b = Snapshot {
            events: 160,
            lost_events: 5,
            lost_events_per_cpu: vec![2, 3],
            ..Default::default()
        };
        b.process.exit_codes.insert("0".into(), 5);
        b.process.exit_codes.insert("1".into(), 1);
        let d = interval_between(&a, &b);
        assert_eq!((d.events, d.lost_events), (60, 0));
        assert_eq!(d.lost_events_per_cpu, [0, 0]);
        assert_eq!(d.process.exit_codes.get("0"), Some(&2));
        assert_eq!(d.process.exit_codes.get("1"), Some(&1));
        // The agent restarted: counters went back; a quiet interval, not 2^64.
        let back = interval_between(&b, &a);
        assert_eq!(back.events, 0);
        assert!(back.process.exit_codes.is_empty());
    }

    #[test]
    fn finished_processes_and_connections_count_once() {
        let mut a = Snapshot::default();
        a.process.processes = vec![proc(1, 2, None), proc(2, 1, Some(0))];
        let closed = ConnectionRow {
            state: "CLOSE".into(),
            sport: 40000,
            bytes_sent: Some(4000),
            ..Default::default()
        };
        a.tcp.connections = vec![closed.clone()];
        let mut b = a.clone();
        b.process.processes = vec![proc(1, 5, Some(0)), proc(2, 1, Some(0)), proc(3, 1, None)];
        let d = interval_between(&a, &b);
        let rows: Vec<(u32, u64)> = d
            .process
            .processes
            .iter()
            .map(|p| (p.pid, p.execs))
            .collect();
        assert_eq!(rows, [(1, 3), (3, 1)], "pid 2's exit was already reported");
        assert!(
            d.tcp.connections.is_empty(),
            "same closed connection, same tick"
        );
        b.tcp.connections.push(ConnectionRow {
            sport: 40001,
            ..closed
        });
        assert_eq!(interval_between(&a, &b).tcp.connections.len(), 1);
    }

    #[test]
    fn latency_percentiles_from_bucket_deltas() {
        let n = LATENCY_BUCKETS_NS.len() + 1;
        let mut buckets = vec![0u64; n];
        buckets[0] = 98; // ≤ 10 µs
        buckets[3] = 1; // ≤ 100 µs
        buckets[6] = 1; // ≤ 1 ms
        let l = latency_from_buckets(&buckets);
        assert_eq!(l.count, 100);
        assert_eq!((l.p50, l.p99, l.max), (10.0, 100.0, 1000.0));
        assert_eq!(latency_from_buckets(&vec![0; n]), Latency::default());
        let mut slow = vec![0u64; n];
        slow[n - 1] = 1;
        assert_eq!(latency_from_buckets(&slow).max, 10_000_000.0);

        let old = DeviceRow {
            dev: "7:0".into(),
            reads: 10,
            latency_buckets: vec![5; n],
            ..Default::default()
        };
        let mut new = old.clone();
        new.reads = 12;
        new.latency_buckets[2] += 2;
        let d = device_delta(&old, &new);
        assert_eq!(d.reads, 2);
        assert_eq!(d.latency_us.count, 2);
        assert_eq!(d.latency_us.p99, 50.0);
    }

    #[test]
    fn intervals_prime_then_difference_and_reset() {
        let at = Instant::now();
        let snap = |events| Snapshot {
            events,
            ..Default::default()
        };
        let mut i = Intervals::default();
        assert!(i.push(at, snap(10)).is_none(), "the first only primes");
        let (took, d) = i.push(at + Duration::from_secs(2), snap(25)).unwrap();
        assert_eq!((took, d.events), (Duration::from_secs(2), 15));
        i.reset();
        assert!(i.push(at + Duration::from_secs(3), snap(40)).is_none());
        assert_eq!(
            i.push(at + Duration::from_secs(4), snap(41))
                .unwrap()
                .1
                .events,
            1
        );
    }

    #[test]
    fn every_cgroup_counter_is_a_difference_and_quiet_rows_go() {
        use ksight_engine::snapshot::CgroupLabels;
        let labels = CgroupLabels {
            unit: "w.service".into(),
            path: "/system.slice/w.service".into(),
            ..Default::default()
        };
        let row = |id: u64, n: u64| CgroupRow {
            cgroup_id: id,
            execs: n,
            forks: n,
            exits: n,
            tcp_connections: n,
            tcp_bytes_sent: n,
            tcp_bytes_received: n,
            block_read_bytes: n,
            block_write_bytes: n,
            exit_codes: [("0".to_string(), n)].into(),
            tcp_connects: n,
            tcp_connect_failures: n,
            tcp_accepts: n,
            tcp_retransmits: n,
            tcp_resets_sent: n,
            tcp_resets_received: n,
            block_reads: n,
            block_writes: n,
            attribution: Some(labels.clone()),
        };
        let device = |reads| DeviceRow {
            dev: "7:0".into(),
            reads,
            ..Default::default()
        };
        let a = Snapshot {
            cgroups: vec![row(1, 3), row(2, 5)],
            containers: vec![row(1, 8)],
            block: ksight_engine::snapshot::BlockSummary {
                devices: vec![device(4)],
            },
            ..Default::default()
        };
        let b = Snapshot {
            cgroups: vec![row(1, 3), row(2, 7), row(3, 1)],
            containers: vec![row(1, 11)],
            block: ksight_engine::snapshot::BlockSummary {
                devices: vec![device(4)],
            },
            ..Default::default()
        };
        let d = interval_between(&a, &b);
        // cgroup 1 did nothing: gone, as from a capture that resets each interval.
        assert_eq!(d.cgroups, [row(2, 2), row(3, 1)]);
        assert!(d.block.devices.is_empty());
        // Grouped again from the interval's rows (both are the same owner here).
        assert_eq!(d.containers.len(), 1);
        assert_eq!(d.containers[0].execs, 3);
        assert_eq!(d.containers[0].exit_codes["0"], 3);
        // Nothing attributed, nothing grouped.
        let plain = Snapshot {
            containers: vec![],
            ..b.clone()
        };
        assert!(interval_between(&a, &plain).containers.is_empty());
    }
}
