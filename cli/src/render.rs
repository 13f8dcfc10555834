//! Human-readable output. Scripts use `--json`; this text may change.

use crate::tui::fmt::{latency_bound, latency_us};
use crate::tui::rates::{Merged, merged_latency};
use crate::tui::requests::{mix, parts, protocol_rank};
use ksight_backend_ebpf::{DetectReport, Fidelity, SignalStatus};
use ksight_engine::Snapshot;
use ksight_engine::snapshot::Latency;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn snapshot(s: &Snapshot, notes: &[String]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ksight ({} backend, {:.3} s of events)",
        s.backend, s.duration_s
    );
    let p = &s.process;
    let codes: Vec<String> = p
        .exit_codes
        .iter()
        .map(|(code, n)| format!("{code}×{n}"))
        .collect();
    let _ = writeln!(
        o,
        "\n  processes  execs {:>8}  forks {:>8}  threads {:>6}  exits {:>8}  exit codes {}",
        p.execs,
        p.forks,
        p.threads,
        p.exits,
        if codes.is_empty() {
            "-".into()
        } else {
            codes.join(" ")
        }
    );
    let t = &s.tcp;
    let _ = writeln!(
        o,
        "  tcp        connects {:>5}  accepts {:>6}  closes {:>6}  failed connects {}",
        t.connects, t.accepts, t.closes, t.connect_failures
    );
    let _ = writeln!(
        o,
        "             sent {:>12}  received {:>12}  retransmits {}  resets sent {}  received {}",
        bytes(t.bytes_sent),
        bytes(t.bytes_received),
        t.retransmits,
        t.resets_sent,
        t.resets_received
    );
    if t.byte_mismatches > 0 {
        let _ = writeln!(
            o,
            "             byte mismatches {} (closed connections whose kernel counters differ from their calls)",
            t.byte_mismatches
        );
    }
    udp_summary(&mut o, s);
    connections(&mut o, s);
    udp_flows(&mut o, s);
    dns(&mut o, s);
    requests(&mut o, s);
    protocol_connections(&mut o, s);
    edges(&mut o, s);
    if !s.block.devices.is_empty() {
        let _ = writeln!(
            o,
            "\n  {:<10} {:<10} {:>8} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10}",
            "device", "name", "reads", "writes", "read", "written", "p50 us", "p99 us", "max us"
        );
        for d in &s.block.devices {
            let _ = writeln!(
                o,
                "  {:<10} {:<10} {:>8} {:>8} {:>12} {:>12} {:>10.1} {:>10.1} {:>10.1}",
                d.dev,
                d.name,
                d.reads,
                d.writes,
                bytes(d.read_bytes),
                bytes(d.write_bytes),
                d.latency_us.p50,
                d.latency_us.p99,
                d.latency_us.max
            );
        }
    }
    if !s.containers.is_empty() {
        let _ = writeln!(
            o,
            "\n  {:<44} {:<24} {:>6} {:>6} {:>6} {:>5} {:>10} {:>10} {:>10} {:>10}",
            "owner (namespace/pod/container, unit, path)",
            "workload",
            "execs",
            "forks",
            "exits",
            "conns",
            "tcp sent",
            "tcp recv",
            "blk read",
            "blk write"
        );
        for c in s.containers.iter().take(40) {
            let name = c
                .attribution
                .as_ref()
                .map_or_else(|| format!("cgroup {}", c.cgroup_id), |a| a.display_name());
            let workload = c
                .attribution
                .as_ref()
                .filter(|a| !a.workload.is_empty())
                .map_or_else(
                    || "-".to_string(),
                    |a| format!("{}/{}", a.workload_kind, a.workload),
                );
            let _ = writeln!(
                o,
                "  {:<44} {:<24} {:>6} {:>6} {:>6} {:>5} {:>10} {:>10} {:>10} {:>10}",
                name,
                workload,
                c.execs,
                c.forks,
                c.exits,
                c.tcp_connections,
                bytes(c.tcp_bytes_sent),
                bytes(c.tcp_bytes_received),
                bytes(c.block_read_bytes),
                bytes(c.block_write_bytes)
            );
        }
    }
    let _ = writeln!(
        o,
        "\n  lost events {}  malformed records {}  late events {}",
        s.lost_events, s.malformed_records, s.late_events
    );
    let io = &s.socket_io;
    if io.calls + io.unreported_msgs + io.payload_faults + s.dns.malformed > 0 {
        let _ = writeln!(
            o,
            "  socket calls {}  payload {}  unreported mmsg messages {}  payload faults {}  malformed DNS {}",
            io.calls,
            bytes(io.payload_bytes),
            io.unreported_msgs,
            io.payload_faults,
            s.dns.malformed
        );
    }
    parser_health(&mut o, s);
    for note in notes {
        let _ = writeln!(o, "  note: {note}");
    }
    o
}

/// Rows shown per table; `--json` has them all.
const ROWS: usize = 20;

fn more(o: &mut String, total: usize, what: &str) {
    if total > ROWS {
        let _ = writeln!(o, "  … {} more {what} (see --json)", total - ROWS);
    }
}

fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// TCP connections: bytes so far while open (from the socket calls), the kernel's count
/// once closed; `*` marks connections open before capture started (bytes since then).
fn connections(o: &mut String, s: &Snapshot) {
    let t = &s.tcp;
    if t.connections.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n  {:<22} {:<22} {:>7} {:<15} {:<11} {:>11} {:>11} {:>10} {:>6} {:>5}",
        "local", "remote", "pid", "comm", "state", "sent", "received", "duration", "srtt", "retx"
    );
    for c in t.connections.iter().take(ROWS) {
        let mark = if c.since_start { "*" } else { " " };
        let opt = |v: Option<u64>| v.map_or("-".to_string(), bytes) + mark;
        let _ = writeln!(
            o,
            "  {:<22} {:<22} {:>7} {:<15} {:<11} {:>11} {:>11} {:>8}ms {:>4}us {:>5}",
            endpoint(&c.saddr, c.sport),
            endpoint(&c.daddr, c.dport),
            c.pid,
            c.comm,
            c.state,
            opt(c.bytes_sent),
            opt(c.bytes_received),
            c.duration_us / 1000,
            c.srtt_us.map_or("-".into(), |v| v.to_string()),
            c.retransmits
        );
    }
    more(o, t.connections.len(), "connections");
    if t.connections.iter().any(|c| c.since_start) {
        let _ = writeln!(o, "  * open before capture started: bytes since then");
    }
}

fn udp_summary(o: &mut String, s: &Snapshot) {
    let u = &s.udp;
    if u.datagrams_sent + u.datagrams_received == 0 && u.flows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "  udp        sent {:>12} in {} datagrams  received {:>12} in {} datagrams{}",
        bytes(u.bytes_sent),
        u.datagrams_sent,
        bytes(u.bytes_received),
        u.datagrams_received,
        if u.unlisted_datagrams > 0 {
            format!("  ({} datagrams of unlisted flows)", u.unlisted_datagrams)
        } else {
            String::new()
        }
    );
}

fn udp_flows(o: &mut String, s: &Snapshot) {
    let u = &s.udp;
    if u.flows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n  {:<22} {:<22} {:>7} {:<15} {:>11} {:>11} {:>8} {:>8}",
        "local", "remote", "pid", "comm", "sent", "received", "dgr out", "dgr in"
    );
    for f in u.flows.iter().take(ROWS) {
        let _ = writeln!(
            o,
            "  {:<22} {:<22} {:>7} {:<15} {:>11} {:>11} {:>8} {:>8}",
            endpoint(&f.saddr, f.sport),
            endpoint(&f.daddr, f.dport),
            f.pid,
            f.comm,
            bytes(f.bytes_sent),
            bytes(f.bytes_received),
            f.datagrams_sent,
            f.datagrams_received
        );
    }
    more(o, u.flows.len(), "UDP flows");
}

fn dns(o: &mut String, s: &Snapshot) {
    let d = &s.dns;
    if d.queries.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n  {:<6} {:<22} {:<32} {:<6} {:<9} {:>6} {:>8} {:>8} {:>8}",
        "dns", "server", "qname", "qtype", "rcode", "count", "p50 ms", "p99 ms", "timeouts"
    );
    let ms = |us: f64| format!("{:.3}", us / 1000.0);
    for q in d.queries.iter().take(ROWS) {
        let answered = q.latency_us.count > 0;
        let _ = writeln!(
            o,
            "  {:<6} {:<22} {:<32} {:<6} {:<9} {:>6} {:>8} {:>8} {:>8}",
            q.role,
            q.server,
            q.qname,
            q.qtype,
            q.rcode,
            q.count,
            if answered {
                ms(q.latency_us.p50)
            } else {
                "-".into()
            },
            if answered {
                ms(q.latency_us.p99)
            } else {
                "-".into()
            },
            q.timeouts
        );
    }
    more(o, d.queries.len(), "DNS rows");
}

/// Requests of every protocol, one line per (protocol, role, method, route or command,
/// status) summed over cgroups and peers: HTTP first, then gRPC, Redis, MySQL, PostgreSQL,
/// each busiest first. A command's status is its error codes.
fn requests(o: &mut String, s: &Snapshot) {
    type Key<'a> = (u8, &'a str, &'a str, &'a str, &'a str, String);
    #[derive(Default)]
    struct Sum<'a> {
        count: u64,
        errors: u64,
        codes: BTreeMap<String, u64>,
        latencies: Vec<(&'a Latency, &'a [u64])>,
    }
    let mut lines: BTreeMap<Key, Sum> = BTreeMap::new();
    for p in parts(s) {
        let key = (
            protocol_rank(p.protocol),
            p.protocol,
            p.role,
            p.method,
            p.name,
            p.status,
        );
        let sum = lines.entry(key).or_default();
        sum.count = sum.count.saturating_add(p.count);
        sum.errors = sum.errors.saturating_add(p.errors);
        for (code, n) in p.error_codes.into_iter().flatten() {
            *sum.codes.entry(code.clone()).or_default() += n;
        }
        sum.latencies.push((p.latency, p.buckets));
    }
    if lines.is_empty() {
        return;
    }
    let mut lines: Vec<(Key, Sum)> = lines.into_iter().collect();
    // Each protocol family together, busiest first (stable: ties stay in key order).
    lines.sort_by_key(|(key, sum)| (key.0, std::cmp::Reverse(sum.count)));
    let _ = writeln!(
        o,
        "\n  {:<8} {:<6} {:<7} {:<32} {:<12} {:>7} {:>6} {:>8} {:>8}",
        "proto", "role", "method", "route/command", "status", "count", "err", "p50", "p99"
    );
    let mut bounded = false;
    for ((_, protocol, role, method, name, status), sum) in lines.iter().take(ROWS) {
        let latency = merged_latency(sum.latencies.iter().copied());
        bounded |= latency.as_ref().is_some_and(|m| !m.exact);
        let q = |f: fn(&Latency) -> f64| {
            latency.as_ref().map_or("-".into(), |m: &Merged| {
                latency_bound(f(&m.latency), m.exact)
            })
        };
        let status = match (status.as_str(), mix(&sum.codes)) {
            ("", codes) if codes.is_empty() => "-".to_string(),
            ("", codes) => codes,
            (status, _) => status.to_string(),
        };
        let _ = writeln!(
            o,
            "  {:<8} {:<6} {:<7} {:<32} {:<12} {:>7} {:>6} {:>8} {:>8}",
            protocol,
            role,
            if method.is_empty() { "-" } else { method },
            name,
            status,
            sum.count,
            sum.errors,
            q(|l| l.p50),
            q(|l| l.p99)
        );
    }
    more(o, lines.len(), "request lines");
    if bounded {
        let _ = writeln!(
            o,
            "  ≤ upper bound: the line sums rows whose quantiles do not add up"
        );
    }
}

/// Connections and bytes per detected protocol and role, summed over cgroups.
fn protocol_connections(o: &mut String, s: &Snapshot) {
    let mut sums: BTreeMap<(u8, &str, &str), (u64, u64, u64)> = BTreeMap::new();
    for c in &s.protocols.connections {
        let sum = sums
            .entry((protocol_rank(&c.protocol), &c.protocol, &c.role))
            .or_default();
        sum.0 = sum.0.saturating_add(c.connections);
        sum.1 = sum.1.saturating_add(c.bytes_sent);
        sum.2 = sum.2.saturating_add(c.bytes_received);
    }
    if sums.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n  {:<8} {:<6} {:>6} {:>12} {:>12}",
        "protocol", "role", "conns", "sent", "received"
    );
    for ((_, protocol, role), (conns, sent, received)) in &sums {
        let _ = writeln!(
            o,
            "  {:<8} {:<6} {:>6} {:>12} {:>12}",
            protocol,
            role,
            conns,
            bytes(*sent),
            bytes(*received)
        );
    }
}

/// The service map: who (client cgroup's owner) called what (the server's owner when it
/// is on this host, else its address), busiest first.
fn edges(o: &mut String, s: &Snapshot) {
    if s.edges.is_empty() {
        return;
    }
    let names: HashMap<u64, String> = s
        .cgroups
        .iter()
        .chain(&s.containers)
        .filter_map(|c| Some((c.cgroup_id, c.attribution.as_ref()?.display_name())))
        .collect();
    let name = |id: u64| {
        names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup {id}"))
    };
    let mut edges: Vec<_> = s.edges.iter().collect();
    edges.sort_by(|a, b| {
        (b.requests, b.connections)
            .cmp(&(a.requests, a.connections))
            .then((a.client_cgroup_id, &a.server).cmp(&(b.client_cgroup_id, &b.server)))
    });
    let _ = writeln!(
        o,
        "\n  {:<32}   {:<32} {:<8} {:>6} {:>7} {:>6} {:>8}",
        "client", "server", "proto", "conns", "reqs", "err", "p99"
    );
    for e in edges.iter().take(ROWS) {
        let _ = writeln!(
            o,
            "  {:<32} → {:<32} {:<8} {:>6} {:>7} {:>6} {:>8}",
            name(e.client_cgroup_id),
            e.server_cgroup_id
                .and_then(|id| names.get(&id).cloned())
                .unwrap_or_else(|| e.server.clone()),
            e.protocol.as_deref().unwrap_or("-"),
            e.connections,
            e.requests,
            e.errors,
            if e.latency_us.count > 0 {
                latency_us(e.latency_us.p99)
            } else {
                "-".into()
            }
        );
    }
    more(o, edges.len(), "edges");
}

/// The protocol parsers' troubles, only those that happened.
fn parser_health(o: &mut String, s: &Snapshot) {
    let p = &s.protocols;
    let counts: Vec<String> = [
        ("malformed", p.malformed),
        ("framing gaps", p.framing_gaps),
        ("mid-stream", p.mid_stream),
        ("unmatched responses", p.unmatched_responses),
        ("unanswered", p.unanswered),
        ("routes folded into other", p.other_routes),
        ("unlisted requests", p.unlisted_requests),
        ("untracked connections", p.untracked_connections),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{what} {n}"))
    .collect();
    if !counts.is_empty() {
        let _ = writeln!(o, "  protocol parsers: {}", counts.join("  "));
    }
}

/// Why the eBPF backend cannot run here, if it cannot.
pub fn ebpf_blocker(r: &DetectReport) -> Option<String> {
    if !r.programs_built {
        return Some("this ksight was built without its eBPF programs".into());
    }
    if !r.bpf_allowed {
        return Some(format!(
            "bpf() is not allowed: {}",
            r.bpf_error.as_deref().unwrap_or("unknown reason")
        ));
    }
    if !r.ringbuf_supported {
        return Some(
            "the kernel has no BPF ring buffer (Linux 5.8+), which the programs' object needs"
                .into(),
        );
    }
    if r.signals
        .iter()
        .all(|s| matches!(s.status, Fidelity::Unavailable(_)))
    {
        return Some("no tracepoint program can attach".into());
    }
    None
}

/// `tcp_close_stats  degraded: why`: for people only (scripts read the typed statuses or
/// `--json`).
pub fn signal_line(s: &SignalStatus) -> String {
    s.line()
}

pub fn detect(r: &DetectReport, backend: &str, reason: &str, kmod: Option<&str>) -> String {
    let mut o = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(o, "kernel          {}", r.kernel_release);
    let _ = writeln!(o, "BTF             {}", yes(r.btf_present));
    let _ = writeln!(
        o,
        "tracefs         {}",
        r.tracefs.as_deref().unwrap_or("not mounted")
    );
    let _ = writeln!(
        o,
        "bpf() allowed   {}{}",
        yes(r.bpf_allowed),
        r.bpf_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "transport       {}",
        if r.ringbuf_supported {
            "BPF ring buffer (perf event array as option)"
        } else {
            "perf event array"
        }
    );
    let _ = writeln!(
        o,
        "eBPF programs   {}",
        if r.programs_built {
            "built in"
        } else {
            "not built into this binary"
        }
    );
    let _ = writeln!(o, "kernel module   {}", kmod.unwrap_or("loaded"));
    let _ = writeln!(o, "\nbackend         {backend}: {reason}");
    let _ = writeln!(o, "\ntracepoints");
    for tp in &r.tracepoints {
        let state = if !tp.unusable.is_empty() {
            format!("cannot attach: {}", tp.unusable.join("; "))
        } else if !tp.degraded.is_empty() {
            format!("attaches, degraded: {}", tp.degraded.join("; "))
        } else {
            "attaches".to_string()
        };
        let _ = writeln!(o, "  {:<34} {:<15} {state}", tp.tracepoint, tp.attach);
    }
    let _ = writeln!(o, "\nsignals");
    for s in &r.signals {
        let _ = writeln!(o, "  {}", signal_line(s));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_engine::snapshot::{
        CgroupLabels, CgroupRow, CommandRow, ConnectionRow, DnsRow, EdgeRow, HttpRow,
        LATENCY_BUCKETS_NS, ProtocolConnectionRow, UdpFlowRow,
    };

    fn socket_snapshot() -> Snapshot {
        let mut s = Snapshot {
            backend: "ebpf".into(),
            duration_s: 1.5,
            ..Default::default()
        };
        s.tcp.bytes_sent = 3000;
        s.tcp.bytes_received = 120;
        s.tcp.byte_mismatches = 1;
        s.tcp.connections = vec![
            ConnectionRow {
                saddr: "127.0.0.1".into(),
                sport: 40000,
                daddr: "127.0.0.1".into(),
                dport: 8080,
                pid: 42,
                comm: "curl".into(),
                state: "ESTABLISHED".into(),
                bytes_sent: Some(3000),
                bytes_received: Some(120),
                duration_us: 2_000_000,
                ..Default::default()
            },
            ConnectionRow {
                saddr: "::1".into(),
                sport: 22,
                daddr: "::1".into(),
                dport: 50000,
                state: "ESTABLISHED".into(),
                bytes_sent: Some(64),
                bytes_received: Some(0),
                since_start: true,
                ..Default::default()
            },
        ];
        s.udp.bytes_sent = 60;
        s.udp.bytes_received = 200;
        s.udp.datagrams_sent = 2;
        s.udp.datagrams_received = 2;
        s.udp.flows = vec![UdpFlowRow {
            saddr: "127.0.0.1".into(),
            sport: 5353,
            daddr: "127.0.0.53".into(),
            dport: 53,
            pid: 7,
            comm: "dig".into(),
            bytes_sent: 60,
            bytes_received: 200,
            datagrams_sent: 2,
            datagrams_received: 2,
            ..Default::default()
        }];
        s.dns.queries = vec![
            DnsRow {
                role: "client".into(),
                server: "127.0.0.53:53".into(),
                qname: "example.test".into(),
                qtype: "A".into(),
                rcode: "NOERROR".into(),
                count: 2,
                latency_us: Latency {
                    count: 2,
                    p50: 250.0,
                    p99: 1500.0,
                    max: 1500.0,
                },
                ..Default::default()
            },
            DnsRow {
                role: "client".into(),
                server: "127.0.0.53:53".into(),
                qname: "slow.test".into(),
                qtype: "AAAA".into(),
                rcode: "TIMEOUT".into(),
                count: 1,
                timeouts: 1,
                ..Default::default()
            },
        ];
        s.dns.malformed = 1;
        s.socket_io.calls = 9;
        s.socket_io.payload_bytes = 300;
        s
    }

    #[test]
    fn stat_shows_live_bytes_udp_flows_and_dns() {
        let text = snapshot(&socket_snapshot(), &[]);
        let want = "\
ksight (ebpf backend, 1.500 s of events)

  processes  execs        0  forks        0  threads      0  exits        0  exit codes -
  tcp        connects     0  accepts      0  closes      0  failed connects 0
             sent      2.9 KiB  received        120 B  retransmits 0  resets sent 0  received 0
             byte mismatches 1 (closed connections whose kernel counters differ from their calls)
  udp        sent         60 B in 2 datagrams  received        200 B in 2 datagrams

  local                  remote                     pid comm            state              sent    received   duration   srtt  retx
  127.0.0.1:40000        127.0.0.1:8080              42 curl            ESTABLISHED    2.9 KiB       120 B      2000ms    -us     0
  [::1]:22               [::1]:50000                  0                 ESTABLISHED       64 B*        0 B*        0ms    -us     0
  * open before capture started: bytes since then

  local                  remote                     pid comm                   sent    received  dgr out   dgr in
  127.0.0.1:5353         127.0.0.53:53                7 dig                    60 B       200 B        2        2

  dns    server                 qname                            qtype  rcode      count   p50 ms   p99 ms timeouts
  client 127.0.0.53:53          example.test                     A      NOERROR        2    0.250    1.500        0
  client 127.0.0.53:53          slow.test                        AAAA   TIMEOUT        1        -        -        1

  lost events 0  malformed records 0  late events 0
  socket calls 9  payload 300 B  unreported mmsg messages 0  payload faults 0  malformed DNS 1
";
        for (i, (got, want)) in text.lines().zip(want.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 1);
        }
        assert_eq!(text, want);
    }

    #[test]
    fn without_socket_io_nothing_new_is_printed() {
        let text = snapshot(
            &Snapshot {
                backend: "kmod".into(),
                ..Default::default()
            },
            &["socket_io        unavailable: x".into()],
        );
        for absent in [
            "udp",
            "dns",
            "socket calls",
            "byte mismatches",
            "proto",
            "client",
            "parsers",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        assert!(
            text.ends_with("  note: socket_io        unavailable: x\n"),
            "{text}"
        );
    }

    fn lat(count: u64, p50: f64, p99: f64) -> Latency {
        Latency {
            count,
            p50,
            p99,
            max: p99,
        }
    }

    /// `n` latencies in the bucket whose upper bound is `ns`.
    fn buckets(ns: u64, n: u64) -> Vec<u64> {
        let mut b = vec![0; LATENCY_BUCKETS_NS.len() + 1];
        b[LATENCY_BUCKETS_NS.iter().position(|&x| x == ns).unwrap()] = n;
        b
    }

    fn http(protocol: &str, role: &str, method: &str, route: &str, status: u16) -> HttpRow {
        HttpRow {
            protocol: protocol.into(),
            role: role.into(),
            method: method.into(),
            route: route.into(),
            status,
            cgroup_id: 10,
            ..Default::default()
        }
    }

    fn cmd(role: &str, command: &str, count: u64, p50: f64, p99: f64) -> CommandRow {
        CommandRow {
            role: role.into(),
            command: command.into(),
            count,
            latency_us: lat(count, p50, p99),
            peer: Some("10.96.0.10:6379".into()),
            cgroup_id: 10,
            ..Default::default()
        }
    }

    fn named(id: u64, unit: &str) -> CgroupRow {
        CgroupRow {
            cgroup_id: id,
            attribution: Some(CgroupLabels {
                unit: unit.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A web service (cgroup 10, 11 its second replica) calling Redis, MySQL, PostgreSQL
    /// and a gRPC cart service (cgroup 12) on this host.
    fn request_snapshot() -> Snapshot {
        let mut s = Snapshot {
            backend: "ebpf".into(),
            duration_s: 2.0,
            ..Default::default()
        };
        s.http.requests = vec![
            // One route in two cgroups: one line, its quantiles bounded.
            HttpRow {
                count: 5,
                latency_us: lat(5, 800.0, 1900.0),
                latency_buckets: buckets(1_000_000, 4)
                    .iter()
                    .zip(buckets(2_500_000, 1))
                    .map(|(a, b)| a + b)
                    .collect(),
                peer: None,
                ..http("http", "server", "GET", "/api/users/*", 200)
            },
            HttpRow {
                count: 3,
                latency_us: lat(3, 700.0, 900.0),
                latency_buckets: buckets(1_000_000, 3),
                cgroup_id: 11,
                ..http("http", "server", "GET", "/api/users/*", 200)
            },
            HttpRow {
                count: 2,
                errors: 2,
                latency_us: lat(2, 12_000.0, 15_000.0),
                ..http("http", "server", "POST", "/api/orders", 503)
            },
            HttpRow {
                count: 9,
                latency_us: lat(9, 150.0, 300.0),
                ..http("http2", "server", "GET", "/static/*", 200)
            },
            HttpRow {
                count: 4,
                grpc_status: Some("0".into()),
                latency_us: lat(4, 2100.0, 2600.0),
                peer: Some("10.0.0.7:50051".into()),
                ..http("grpc", "client", "POST", "/shop.Cart/Add", 200)
            },
            HttpRow {
                count: 1,
                errors: 1,
                grpc_status: Some("14".into()),
                peer: Some("10.0.0.7:50051".into()),
                ..http("grpc", "client", "POST", "/shop.Cart/Add", 200)
            },
        ];
        s.redis.commands = vec![
            cmd("client", "GET", 10, 90.0, 240.0),
            CommandRow {
                errors: 1,
                error_codes: [("WRONGTYPE".to_string(), 1)].into(),
                ..cmd("client", "SET", 2, 110.0, 130.0)
            },
        ];
        s.mysql.queries = vec![cmd("client", "SELECT", 3, 1500.0, 4200.0)];
        s.postgres.queries = vec![CommandRow {
            errors: 1,
            error_codes: [("23505".to_string(), 1)].into(),
            ..cmd("client", "INSERT", 1, 2500.0, 2500.0)
        }];
        let conns = |protocol: &str, role: &str, cgroup_id, connections, sent, received| {
            ProtocolConnectionRow {
                protocol: protocol.into(),
                role: role.into(),
                cgroup_id,
                connections,
                bytes_sent: sent,
                bytes_received: received,
            }
        };
        s.protocols.connections = vec![
            conns("http", "server", 10, 2, 40_000, 3000),
            conns("http", "server", 11, 1, 20_000, 1000),
            conns("redis", "client", 10, 1, 600, 900),
            conns("grpc", "client", 10, 1, 500, 400),
        ];
        s.protocols.malformed = 1;
        s.protocols.unanswered = 2;
        s.edges = vec![
            EdgeRow {
                client_cgroup_id: 10,
                server: "10.96.0.10:6379".into(),
                protocol: Some("redis".into()),
                connections: 1,
                requests: 12,
                errors: 1,
                latency_us: lat(12, 95.0, 240.0),
                ..Default::default()
            },
            EdgeRow {
                client_cgroup_id: 10,
                server: "10.0.0.7:50051".into(),
                server_cgroup_id: Some(12),
                protocol: Some("grpc".into()),
                connections: 1,
                requests: 5,
                errors: 1,
                latency_us: lat(4, 2100.0, 2600.0),
                ..Default::default()
            },
            EdgeRow {
                client_cgroup_id: 13,
                server: "10.0.0.9:443".into(),
                connections: 2,
                ..Default::default()
            },
        ];
        s.cgroups = vec![
            named(10, "web.service"),
            named(11, "web@2.service"),
            named(12, "cart.service"),
        ];
        s
    }

    #[test]
    fn stat_shows_requests_connections_edges_and_parser_troubles() {
        let text = snapshot(&request_snapshot(), &[]);
        let start = text.find("\n  proto ").expect(&text);
        let end = text.find("\n  lost events").expect(&text);
        let want = "
  proto    role   method  route/command                    status         count    err      p50      p99
  http2    server GET     /static/*                        200                9      0    150µs    300µs
  http     server GET     /api/users/*                     200                8      0   ≤800µs   ≤1.9ms
  http     server POST    /api/orders                      503                2      2     12ms     15ms
  grpc     client POST    /shop.Cart/Add                   0                  4      0    2.1ms    2.6ms
  grpc     client POST    /shop.Cart/Add                   14                 1      1        -        -
  redis    client -       GET                              -                 10      0     90µs    240µs
  redis    client -       SET                              WRONGTYPE×1        2      1    110µs    130µs
  mysql    client -       SELECT                           -                  3      0    1.5ms    4.2ms
  postgres client -       INSERT                           23505×1            1      1    2.5ms    2.5ms
  ≤ upper bound: the line sums rows whose quantiles do not add up

  protocol role    conns         sent     received
  http     server      3     58.6 KiB      3.9 KiB
  grpc     client      1        500 B        400 B
  redis    client      1        600 B        900 B

  client                             server                           proto     conns    reqs    err      p99
  web.service                      → 10.96.0.10:6379                  redis         1      12      1    240µs
  web.service                      → cart.service                     grpc          1       5      1    2.6ms
  cgroup 13                        → 10.0.0.9:443                     -             2       0      0        -
";
        let got = &text[start..end];
        for (i, (got, want)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 1);
        }
        assert_eq!(got, want);
        assert!(
            text.ends_with("  protocol parsers: malformed 1  unanswered 2\n"),
            "{text}"
        );
    }

    #[test]
    fn long_request_tables_are_bounded() {
        let mut s = Snapshot::default();
        s.http.requests = (0..ROWS as u16 + 3)
            .map(|i| HttpRow {
                count: 100 - u64::from(i),
                ..http("http", "server", "GET", &format!("/r{i}"), 200)
            })
            .collect();
        let text = snapshot(&s, &[]);
        assert!(text.contains("  http     server GET     /r19 "), "{text}");
        assert!(!text.contains("/r20"), "busiest first: {text}");
        assert!(
            text.contains("\n  … 3 more request lines (see --json)\n"),
            "{text}"
        );
        assert!(!text.contains("≤"), "{text}");
    }

    #[test]
    fn top_batch_json_carries_every_new_field() {
        let v = serde_json::to_value(socket_snapshot()).unwrap();
        assert_eq!(v["udp"]["flows"][0]["datagrams_sent"], 2);
        assert_eq!(v["udp"]["flows"][0]["comm"], "dig");
        assert_eq!(v["dns"]["queries"][0]["latency_us"]["p99"], 1500.0);
        assert_eq!(v["dns"]["queries"][1]["timeouts"], 1);
        assert_eq!(v["dns"]["malformed"], 1);
        assert_eq!(v["socket_io"]["calls"], 9);
        assert_eq!(v["tcp"]["byte_mismatches"], 1);
        assert_eq!(v["tcp"]["connections"][0]["bytes_sent"], 3000);
        assert_eq!(v["tcp"]["connections"][1]["since_start"], true);
    }
}
