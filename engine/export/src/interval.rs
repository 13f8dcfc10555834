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
    CgroupRow, CommandRow, ConnectionRow, DeviceRow, DnsRow, EdgeRow, HttpRow, LATENCY_BUCKETS_NS,
    Latency, ProcessRow, ProtocolConnectionRow, ProtocolsSummary, Snapshot, SocketIoSummary,
    UdpFlowRow, counts_since,
};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
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
    t.byte_mismatches = delta(pt.byte_mismatches, ct.byte_mismatches);
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

    udp_between(prev, cur, &mut out);
    dns_between(prev, cur, &mut out);
    requests_between(prev, cur, &mut out);
    let (ps, cs) = (&prev.socket_io, &cur.socket_io);
    out.socket_io = SocketIoSummary {
        calls: delta(ps.calls, cs.calls),
        payload_bytes: delta(ps.payload_bytes, cs.payload_bytes),
        unreported_msgs: delta(ps.unreported_msgs, cs.unreported_msgs),
        payload_faults: delta(ps.payload_faults, cs.payload_faults),
    };

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

type FlowKey<'a> = (&'a str, u16, &'a str, u16, u32, u64);

fn flow_key(f: &UdpFlowRow) -> FlowKey<'_> {
    (&f.saddr, f.sport, &f.daddr, f.dport, f.pid, f.cgroup_id)
}

/// UDP totals and flows: each flow's traffic in the interval; quiet flows left out.
fn udp_between(prev: &Snapshot, cur: &Snapshot, out: &mut Snapshot) {
    let (pu, cu) = (&prev.udp, &cur.udp);
    let u = &mut out.udp;
    u.bytes_sent = delta(pu.bytes_sent, cu.bytes_sent);
    u.bytes_received = delta(pu.bytes_received, cu.bytes_received);
    u.datagrams_sent = delta(pu.datagrams_sent, cu.datagrams_sent);
    u.datagrams_received = delta(pu.datagrams_received, cu.datagrams_received);
    u.unlisted_datagrams = delta(pu.unlisted_datagrams, cu.unlisted_datagrams);
    let before: HashMap<FlowKey, &UdpFlowRow> = pu.flows.iter().map(|f| (flow_key(f), f)).collect();
    u.flows = cu
        .flows
        .iter()
        .map(|f| match before.get(&flow_key(f)) {
            Some(old) => UdpFlowRow {
                bytes_sent: delta(old.bytes_sent, f.bytes_sent),
                bytes_received: delta(old.bytes_received, f.bytes_received),
                datagrams_sent: delta(old.datagrams_sent, f.datagrams_sent),
                datagrams_received: delta(old.datagrams_received, f.datagrams_received),
                ..f.clone()
            },
            None => f.clone(),
        })
        .filter(|f| f.datagrams_sent + f.datagrams_received > 0)
        .collect();
}

type DnsRowKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, u64);

fn dns_key(r: &DnsRow) -> DnsRowKey<'_> {
    (
        &r.role,
        &r.server,
        &r.qname,
        &r.qtype,
        &r.rcode,
        r.cgroup_id,
    )
}

/// DNS counters and rows: each row's queries in the interval, latency percentiles from its
/// bucket differences; rows with no query in the interval left out.
fn dns_between(prev: &Snapshot, cur: &Snapshot, out: &mut Snapshot) {
    let (pd, cd) = (&prev.dns, &cur.dns);
    out.dns.malformed = delta(pd.malformed, cd.malformed);
    out.dns.other_qnames = delta(pd.other_qnames, cd.other_qnames);
    let before: HashMap<DnsRowKey, &DnsRow> = pd.queries.iter().map(|r| (dns_key(r), r)).collect();
    out.dns.queries = cd
        .queries
        .iter()
        .map(|r| match before.get(&dns_key(r)) {
            Some(old) => dns_delta(old, r),
            None => r.clone(),
        })
        .filter(|r| r.count > 0)
        .collect();
}

fn dns_delta(old: &DnsRow, r: &DnsRow) -> DnsRow {
    let (latency_us, latency_buckets) =
        latency_delta(&old.latency_buckets, &r.latency_buckets, &r.latency_us);
    DnsRow {
        count: delta(old.count, r.count),
        timeouts: delta(old.timeouts, r.timeouts),
        latency_us,
        latency_sum_ns: delta(old.latency_sum_ns, r.latency_sum_ns),
        latency_buckets,
        ..r.clone()
    }
}

/// Bucket differences and the percentiles they give; without buckets, the cumulative
/// percentiles are the best there is.
fn latency_delta(old: &[u64], new: &[u64], cumulative: &Latency) -> (Latency, Vec<u64>) {
    let buckets: Vec<u64> = new
        .iter()
        .enumerate()
        .map(|(i, &n)| delta(old.get(i).copied().unwrap_or(0), n))
        .collect();
    let latency = if buckets.len() == LATENCY_BUCKETS_NS.len() + 1 {
        latency_from_buckets(&buckets)
    } else {
        cumulative.clone()
    };
    (latency, buckets)
}

/// Each row of `cur` as the growth since its row of the same identity in `prev` (a new
/// row: all of it); rows with nothing in the interval left out.
fn rows_between<'a, T: Clone, K: Eq + Hash>(
    prev: &'a [T],
    cur: &'a [T],
    key: impl Fn(&'a T) -> K,
    delta: impl Fn(&T, &T) -> T,
    active: impl Fn(&T) -> bool,
) -> Vec<T> {
    let before: HashMap<K, &T> = prev.iter().map(|r| (key(r), r)).collect();
    cur.iter()
        .map(|r| match before.get(&key(r)) {
            Some(old) => delta(old, r),
            None => r.clone(),
        })
        .filter(active)
        .collect()
}

/// Request, command, protocol and edge rows, and the parsers' counters: differences, as
/// DNS rows'. Edges are told apart as the engine tells them, by client cgroup and server
/// address: their server cgroup and protocol may be learnt after their first bytes.
fn requests_between(prev: &Snapshot, cur: &Snapshot, out: &mut Snapshot) {
    out.http.requests = rows_between(
        &prev.http.requests,
        &cur.http.requests,
        |r: &HttpRow| {
            (
                (&r.protocol, &r.role, &r.method, &r.route, r.status),
                (&r.grpc_status, &r.peer, &r.host, r.cgroup_id),
            )
        },
        http_delta,
        |r| r.count > 0,
    );
    let commands = |p: &[CommandRow], c: &[CommandRow]| {
        rows_between(
            p,
            c,
            |r: &CommandRow| (&r.role, &r.command, &r.peer, r.cgroup_id),
            command_delta,
            |r| r.count > 0,
        )
    };
    out.redis.commands = commands(&prev.redis.commands, &cur.redis.commands);
    out.mysql.queries = commands(&prev.mysql.queries, &cur.mysql.queries);
    out.postgres.queries = commands(&prev.postgres.queries, &cur.postgres.queries);
    let (pp, cp) = (&prev.protocols, &cur.protocols);
    out.protocols = ProtocolsSummary {
        connections: rows_between(
            &pp.connections,
            &cp.connections,
            |r: &ProtocolConnectionRow| (&r.protocol, &r.role, r.cgroup_id),
            |old, r| ProtocolConnectionRow {
                connections: delta(old.connections, r.connections),
                bytes_sent: delta(old.bytes_sent, r.bytes_sent),
                bytes_received: delta(old.bytes_received, r.bytes_received),
                ..r.clone()
            },
            |r| r.connections + r.bytes_sent + r.bytes_received > 0,
        ),
        malformed: delta(pp.malformed, cp.malformed),
        framing_gaps: delta(pp.framing_gaps, cp.framing_gaps),
        mid_stream: delta(pp.mid_stream, cp.mid_stream),
        unmatched_responses: delta(pp.unmatched_responses, cp.unmatched_responses),
        unanswered: delta(pp.unanswered, cp.unanswered),
        other_routes: delta(pp.other_routes, cp.other_routes),
        unlisted_requests: delta(pp.unlisted_requests, cp.unlisted_requests),
        untracked_connections: delta(pp.untracked_connections, cp.untracked_connections),
    };
    out.edges = rows_between(
        &prev.edges,
        &cur.edges,
        |r: &EdgeRow| (r.client_cgroup_id, &r.server),
        edge_delta,
        |r| r.connections + r.requests + r.bytes_sent + r.bytes_received > 0,
    );
}

fn http_delta(old: &HttpRow, r: &HttpRow) -> HttpRow {
    let (latency_us, latency_buckets) =
        latency_delta(&old.latency_buckets, &r.latency_buckets, &r.latency_us);
    HttpRow {
        count: delta(old.count, r.count),
        errors: delta(old.errors, r.errors),
        latency_us,
        latency_sum_ns: delta(old.latency_sum_ns, r.latency_sum_ns),
        latency_buckets,
        ..r.clone()
    }
}

fn command_delta(old: &CommandRow, r: &CommandRow) -> CommandRow {
    let (latency_us, latency_buckets) =
        latency_delta(&old.latency_buckets, &r.latency_buckets, &r.latency_us);
    CommandRow {
        count: delta(old.count, r.count),
        errors: delta(old.errors, r.errors),
        error_codes: counts_since(&r.error_codes, &old.error_codes),
        latency_us,
        latency_sum_ns: delta(old.latency_sum_ns, r.latency_sum_ns),
        latency_buckets,
        ..r.clone()
    }
}

fn edge_delta(old: &EdgeRow, r: &EdgeRow) -> EdgeRow {
    let (latency_us, latency_buckets) =
        latency_delta(&old.latency_buckets, &r.latency_buckets, &r.latency_us);
    EdgeRow {
        connections: delta(old.connections, r.connections),
        requests: delta(old.requests, r.requests),
        errors: delta(old.errors, r.errors),
        bytes_sent: delta(old.bytes_sent, r.bytes_sent),
        bytes_received: delta(old.bytes_received, r.bytes_received),
        latency_us,
        latency_sum_ns: delta(old.latency_sum_ns, r.latency_sum_ns),
        latency_buckets,
        ..r.clone()
    }
}

fn device_delta(old: &DeviceRow, d: &DeviceRow) -> DeviceRow {
    let (latency, buckets) = latency_delta(&old.latency_buckets, &d.latency_buckets, &d.latency_us);
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
            udp_bytes_sent: n,
            udp_bytes_received: n,
            udp_datagrams_sent: n,
            udp_datagrams_received: n,
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

    fn flow(sport: u16, sent: u64, datagrams: u64) -> UdpFlowRow {
        UdpFlowRow {
            saddr: "127.0.0.1".into(),
            sport,
            daddr: "127.0.0.53".into(),
            dport: 53,
            pid: 7,
            comm: "dig".into(),
            cgroup_id: 5,
            bytes_sent: sent,
            bytes_received: 2 * sent,
            datagrams_sent: datagrams,
            datagrams_received: datagrams,
        }
    }

    fn dns(qname: &str, count: u64, buckets: Vec<u64>) -> DnsRow {
        DnsRow {
            role: "client".into(),
            server: "127.0.0.53:53".into(),
            qname: qname.into(),
            qtype: "A".into(),
            rcode: "NOERROR".into(),
            count,
            cgroup_id: 5,
            latency_sum_ns: count * 1000,
            latency_buckets: buckets,
            ..Default::default()
        }
    }

    #[test]
    fn udp_flows_dns_rows_and_socket_counters_are_differences() {
        let n = LATENCY_BUCKETS_NS.len() + 1;
        let mut a = Snapshot::default();
        a.udp.bytes_sent = 100;
        a.udp.datagrams_sent = 4;
        a.udp.flows = vec![flow(1000, 100, 4), flow(1001, 10, 1)];
        let mut b1 = vec![0; n];
        b1[0] = 3;
        a.dns.queries = vec![dns("a.test", 3, b1.clone()), dns("b.test", 1, vec![1; 0])];
        a.dns.malformed = 2;
        a.socket_io.calls = 10;
        a.tcp.byte_mismatches = 1;
        let mut b = a.clone();
        b.udp.bytes_sent = 160;
        b.udp.datagrams_sent = 7;
        b.udp.flows = vec![flow(1000, 160, 7), flow(1001, 10, 1), flow(1002, 5, 1)];
        let mut b2 = b1.clone();
        b2[6] = 2;
        b.dns.queries[0] = dns("a.test", 5, b2);
        b.dns.malformed = 3;
        b.socket_io.calls = 25;
        b.socket_io.payload_faults = 1;
        b.tcp.byte_mismatches = 1;
        let d = interval_between(&a, &b);
        assert_eq!((d.udp.bytes_sent, d.udp.datagrams_sent), (60, 3));
        let flows: Vec<(u16, u64, u64, u64)> = d
            .udp
            .flows
            .iter()
            .map(|f| (f.sport, f.bytes_sent, f.bytes_received, f.datagrams_sent))
            .collect();
        assert_eq!(
            flows,
            [(1000, 60, 120, 3), (1002, 5, 10, 1)],
            "quiet flow left out"
        );
        assert_eq!(
            d.dns.queries.len(),
            1,
            "b.test had no query in the interval"
        );
        let q = &d.dns.queries[0];
        assert_eq!(
            (q.qname.as_str(), q.count, q.latency_sum_ns),
            ("a.test", 2, 2000)
        );
        assert_eq!(
            (q.latency_us.count, q.latency_us.p50, q.latency_us.max),
            (2, 1000.0, 1000.0)
        );
        assert_eq!(d.dns.malformed, 1);
        assert_eq!((d.socket_io.calls, d.socket_io.payload_faults), (15, 1));
        assert_eq!(d.tcp.byte_mismatches, 0);
        // The agent restarted: nothing negative, nothing huge.
        let back = interval_between(&b, &a);
        assert_eq!((back.udp.bytes_sent, back.socket_io.calls), (0, 0));
        assert!(back.udp.flows.iter().all(|f| f.bytes_sent <= 100));
    }

    #[test]
    fn open_connections_keep_their_bytes_so_far() {
        let open = |sent| ConnectionRow {
            state: "ESTABLISHED".into(),
            sport: 40000,
            bytes_sent: Some(sent),
            bytes_received: Some(7),
            call_bytes_sent: Some(sent),
            call_bytes_received: Some(7),
            since_start: true,
            ..Default::default()
        };
        let mut a = Snapshot::default();
        a.tcp.connections = vec![open(100)];
        let mut b = Snapshot::default();
        b.tcp.connections = vec![open(250)];
        let d = interval_between(&a, &b);
        assert_eq!(d.tcp.connections, [open(250)]);
    }

    #[test]
    fn request_command_protocol_and_edge_rows_are_differences() {
        use ksight_engine::snapshot::{CommandRow, EdgeRow, HttpRow, ProtocolConnectionRow};
        let n = LATENCY_BUCKETS_NS.len() + 1;
        let with_buckets = |fast: u64, slow: u64| {
            let mut b = vec![0u64; n];
            (b[0], b[6]) = (fast, slow);
            b
        };
        let http = |route: &str, status, count, buckets: Vec<u64>| HttpRow {
            protocol: "http".into(),
            role: "server".into(),
            method: "GET".into(),
            route: route.into(),
            status,
            count,
            errors: if status >= 500 { count } else { 0 },
            cgroup_id: 5,
            latency_sum_ns: 1000 * count,
            latency_buckets: buckets,
            ..Default::default()
        };
        let redis = |count, codes: &[(&str, u64)]| CommandRow {
            role: "client".into(),
            command: "GET".into(),
            count,
            errors: codes.iter().map(|c| c.1).sum(),
            error_codes: codes.iter().map(|&(c, n)| (c.to_string(), n)).collect(),
            cgroup_id: 5,
            ..Default::default()
        };
        let edge = |server_cgroup_id, protocol: Option<&str>, requests, bytes| EdgeRow {
            client_cgroup_id: 5,
            server: "10.0.0.6:80".into(),
            server_cgroup_id,
            protocol: protocol.map(Into::into),
            connections: 1,
            requests,
            bytes_sent: bytes,
            ..Default::default()
        };
        let mut a = Snapshot::default();
        a.http.requests = vec![
            http("/a", 200, 3, with_buckets(3, 0)),
            http("/a", 503, 1, with_buckets(1, 0)),
        ];
        a.redis.commands = vec![redis(4, &[("ERR", 1)])];
        a.mysql.queries = vec![redis(2, &[])];
        a.protocols.connections = vec![ProtocolConnectionRow {
            protocol: "tls".into(),
            role: "client".into(),
            cgroup_id: 5,
            connections: 1,
            bytes_sent: 100,
            bytes_received: 1000,
        }];
        a.protocols.malformed = 1;
        a.protocols.framing_gaps = 5;
        a.protocols.unanswered = 2;
        a.edges = vec![edge(None, None, 0, 50)];
        let mut b = a.clone();
        b.http.requests[0] = http("/a", 200, 5, with_buckets(3, 2));
        b.http.requests.push(http("/b", 200, 1, with_buckets(1, 0)));
        b.redis.commands = vec![redis(7, &[("ERR", 2), ("WRONGTYPE", 1)])];
        b.protocols.connections[0].bytes_received = 1500;
        b.protocols.malformed = 4;
        b.protocols.framing_gaps = 6;
        // The edge's server cgroup and protocol became known: still the same edge.
        b.edges = vec![edge(Some(6), Some("http"), 3, 80)];
        let d = interval_between(&a, &b);
        let rows: Vec<(&str, u16, u64)> = d
            .http
            .requests
            .iter()
            .map(|r| (r.route.as_str(), r.status, r.count))
            .collect();
        assert_eq!(rows, [("/a", 200, 2), ("/b", 200, 1)], "the 503s had none");
        let r = &d.http.requests[0];
        assert_eq!(r.latency_sum_ns, 2000);
        assert_eq!((r.latency_us.count, r.latency_us.p50), (2, 1000.0));
        let c = &d.redis.commands[0];
        assert_eq!((c.count, c.errors), (3, 2));
        assert_eq!(
            c.error_codes,
            [("ERR".into(), 1), ("WRONGTYPE".into(), 1)].into()
        );
        assert!(d.mysql.queries.is_empty() && d.postgres.queries.is_empty());
        let p = &d.protocols;
        assert_eq!(
            (p.connections.len(), p.connections[0].bytes_received),
            (1, 500)
        );
        assert_eq!((p.malformed, p.framing_gaps, p.unanswered), (3, 1, 0));
        let e = &d.edges[..];
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].connections, e[0].requests, e[0].bytes_sent),
            (0, 3, 30)
        );
        assert_eq!(
            (e[0].server_cgroup_id, e[0].protocol.as_deref()),
            (Some(6), Some("http"))
        );
        // The agent restarted: nothing negative, nothing huge.
        let back = interval_between(&b, &a);
        assert!(back.http.requests.is_empty() && back.edges.is_empty());
        assert_eq!(back.protocols.malformed, 0);
    }
}
