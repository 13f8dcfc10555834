//! What the TUI knows, accumulated from successive snapshots. Each snapshot covers one
//! interval (the engine resets its counters between them), so rates are that interval's
//! counts over its wall time, and totals are sums since `ksight top` started.

use crate::tui::event::Sample;
use crate::tui::rates::{
    Merged, accumulate, accumulate_per_cpu, elapsed, error_percent, merged_latency, per_second,
};
use crate::tui::requests::{Part, parts};
use ksight_attribution::CgroupLabels;
use ksight_engine::snapshot::{ConnectionRow, DnsRow, Latency, UdpFlowRow};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Exited processes stay listed this long, so short-lived ones can be read.
pub const EXITED_KEEP: Duration = Duration::from_secs(60);
/// At most this many exited processes are kept (the oldest go first): a fork storm must
/// not make every frame sort a million rows.
pub const EXITED_MAX: usize = 5000;
/// Closed connections kept for the TCP view (the oldest go first).
pub const CLOSED_KEEP: usize = 2000;
/// UDP flows, DNS and request rows stay listed this long after their last traffic.
pub const QUIET_KEEP: Duration = Duration::from_secs(60);
/// At most this many UDP flows, DNS and request rows are kept each (the longest quiet go
/// first).
pub const ROWS_MAX: usize = 5000;

#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Time of the latest sample, on the TUI's clock.
    pub now: Duration,
    /// Wall time the latest sample covers.
    pub interval: Duration,
    pub samples: u64,
    pub backend: String,
    pub host: HostRates,
    pub exit_codes: BTreeMap<i32, u64>,
    pub processes: BTreeMap<u32, Proc>,
    pub cgroups: BTreeMap<u64, Cgroup>,
    /// Connections open at the latest sample (bytes so far with the socket I/O signal).
    pub open: Vec<Conn>,
    /// Connections seen closing, oldest first.
    pub closed: VecDeque<Conn>,
    pub devices: BTreeMap<String, Device>,
    pub udp: BTreeMap<FlowKey, Flow>,
    pub dns: BTreeMap<DnsKey, Dns>,
    pub requests: BTreeMap<ReqKey, Req>,
    /// Who owns each cgroup seen, by id; the latest labels collection sent.
    pub cgroup_owners: HashMap<u64, Owner>,
}

/// Who a cgroup belongs to: its labels, and the names drawn from them once (not per
/// frame).
#[derive(Clone, Debug)]
pub struct Owner {
    pub labels: Arc<CgroupLabels>,
    /// `labels.display_name()`: `namespace/pod/container`, `runtime:id`, the unit, the path.
    pub name: String,
    /// The Kubernetes workload as `Kind/name` (`Deployment/web`); empty when none.
    pub workload: String,
}

impl Owner {
    pub fn new(labels: Arc<CgroupLabels>) -> Self {
        let workload = match (labels.workload_kind.as_str(), labels.workload.as_str()) {
            (_, "") => String::new(),
            ("", name) => name.to_string(),
            (kind, name) => format!("{kind}/{name}"),
        };
        Self {
            name: labels.display_name(),
            workload,
            labels,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct HostRates {
    pub events: Option<f64>,
    pub events_total: u64,
    pub lost: Option<f64>,
    pub lost_total: u64,
    pub lost_per_cpu: Vec<u64>,
    pub malformed: Option<f64>,
    pub malformed_total: u64,
    pub execs: Option<f64>,
    pub forks: Option<f64>,
    pub threads: Option<f64>,
    pub exits: Option<f64>,
    pub connects: Option<f64>,
    pub accepts: Option<f64>,
    pub closes: Option<f64>,
    pub connect_failures_total: u64,
    pub retransmits: Option<f64>,
    pub retransmits_total: u64,
    pub resets_total: u64,
    pub tcp_tx_total: u64,
    pub tcp_rx_total: u64,
    pub byte_mismatches_total: u64,
    pub udp_tx: Option<f64>,
    pub udp_rx: Option<f64>,
    pub udp_tx_total: u64,
    pub udp_rx_total: u64,
    pub dns_queries: Option<f64>,
    pub socket_calls: Option<f64>,
    pub socket_calls_total: u64,
    pub unreported_msgs_total: u64,
    pub payload_faults_total: u64,
    pub dns_malformed_total: u64,
    /// Requests of every protocol: this interval's rate and error percentage.
    pub requests: Option<f64>,
    pub request_errors: Option<f64>,
    pub requests_total: u64,
    /// The protocol parsers' troubles (`ProtocolsSummary`), since start.
    pub parser_malformed_total: u64,
    pub parser_mid_stream_total: u64,
    pub parser_unmatched_total: u64,
    pub parser_unanswered_total: u64,
    pub parser_unlisted_total: u64,
    pub parser_untracked_total: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Proc {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    pub filename: Option<String>,
    pub cgroup_id: u64,
    pub exec_rate: Option<f64>,
    pub fork_rate: Option<f64>,
    pub execs: u64,
    pub forks: u64,
    pub exit_code: Option<i32>,
    /// Sample time it was first listed, and whether its fork or exec was seen then (only
    /// then is its lifetime known).
    pub first_seen: Duration,
    pub birth_seen: bool,
    pub exited_at: Option<Duration>,
    pub last_seen: Duration,
    pub tcp_tx: u64,
    pub tcp_rx: u64,
    pub disk_read: u64,
    pub disk_write: u64,
    pub disk_read_rate: Option<f64>,
    pub disk_write_rate: Option<f64>,
}

/// How long a process lived (or has lived), to the resolution of the sampling interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lifetime {
    /// Forked and exited within one interval: shorter than this.
    Under(Duration),
    About(Duration),
}

impl Proc {
    pub fn lifetime(&self, now: Duration, interval: Duration) -> Option<Lifetime> {
        if !self.birth_seen {
            return None;
        }
        let end = self.exited_at.unwrap_or(now);
        let lived = elapsed(self.first_seen, end);
        Some(if lived.is_zero() {
            Lifetime::Under(interval)
        } else {
            Lifetime::About(lived)
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct Cgroup {
    pub id: u64,
    pub exec_rate: Option<f64>,
    pub fork_rate: Option<f64>,
    pub exit_rate: Option<f64>,
    pub execs: u64,
    pub forks: u64,
    pub exits: u64,
    pub tcp_connections: u64,
    pub tcp_tx: u64,
    pub tcp_rx: u64,
    pub disk_read: u64,
    pub disk_write: u64,
    pub disk_read_rate: Option<f64>,
    pub disk_write_rate: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Conn {
    pub row: ConnectionRow,
    /// Sample time it was seen closed; `None` while open.
    pub closed_at: Option<Duration>,
    /// Bytes per second over the latest interval, from the change of the connection's
    /// bytes since the previous sample; None when not known (first seen with bytes from
    /// before, or no socket I/O).
    pub tx_rate: Option<f64>,
    pub rx_rate: Option<f64>,
}

/// A connection across samples: its tuple and role.
type ConnKey = (String, u16, String, u16, String);

fn conn_key(r: &ConnectionRow) -> ConnKey {
    (
        r.saddr.clone(),
        r.sport,
        r.daddr.clone(),
        r.dport,
        r.role.clone(),
    )
}

/// A UDP flow: local and peer endpoints, pid, cgroup.
pub type FlowKey = (String, u16, String, u16, u32, u64);

/// A UDP flow: its latest row with totals since `ksight top` started, and this interval's
/// rates.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub row: UdpFlowRow,
    pub tx_rate: Option<f64>,
    pub rx_rate: Option<f64>,
    pub out_rate: Option<f64>,
    pub in_rate: Option<f64>,
    pub last_seen: Duration,
}

/// A DNS row: role, server, qname, qtype, rcode, cgroup.
pub type DnsKey = (String, String, String, String, String, u64);

#[derive(Clone, Debug, Default)]
pub struct Dns {
    /// The latest row; `count` and `timeouts` are totals since `ksight top` started.
    pub row: DnsRow,
    pub rate: Option<f64>,
    /// Latency of the latest interval with answers.
    pub latency: Option<Latency>,
    pub last_seen: Duration,
}

/// A request row: cgroup, protocol, role, and route (HTTP) or command. An interval's rows
/// of other methods, statuses, peers and hosts are summed into it.
pub type ReqKey = (u64, String, String, String);

#[derive(Clone, Debug, Default)]
pub struct Req {
    pub rate: Option<f64>,
    /// Totals since `ksight top` started.
    pub count: u64,
    pub errors: u64,
    /// Error percentage of the latest interval with requests (so a quiet interval does not
    /// blank it, as latency is not blanked).
    pub error_pct: Option<f64>,
    /// Latency of the latest interval with responses.
    pub latency: Option<Merged>,
    /// HTTP methods, and statuses (HTTP, gRPC) or error codes (commands), by count since
    /// start.
    pub methods: BTreeMap<String, u64>,
    pub statuses: BTreeMap<String, u64>,
    pub last_seen: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct Device {
    pub dev: String,
    pub name: String,
    pub iops: Option<f64>,
    pub read_rate: Option<f64>,
    pub write_rate: Option<f64>,
    /// Latency of the latest interval with completions on this device.
    pub latency: Option<Latency>,
    pub errors: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

impl Model {
    pub fn ingest(&mut self, sample: &Sample) {
        let s = &sample.snapshot;
        let iv = sample.interval;
        let rate = |n: u64| per_second(n, iv);
        self.now = sample.at;
        self.interval = iv;
        self.samples += 1;
        self.backend.clone_from(&s.backend);
        for (id, labels) in &sample.cgroup_labels {
            self.cgroup_owners.insert(*id, Owner::new(labels.clone()));
        }

        let h = &mut self.host;
        h.events = rate(s.events);
        h.events_total = accumulate(h.events_total, s.events);
        h.lost = rate(s.lost_events);
        h.lost_total = accumulate(h.lost_total, s.lost_events);
        accumulate_per_cpu(&mut h.lost_per_cpu, &s.lost_events_per_cpu);
        h.malformed = rate(s.malformed_records);
        h.malformed_total = accumulate(h.malformed_total, s.malformed_records);
        let p = &s.process;
        h.execs = rate(p.execs);
        h.forks = rate(p.forks);
        h.threads = rate(p.threads);
        h.exits = rate(p.exits);
        let t = &s.tcp;
        h.connects = rate(t.connects);
        h.accepts = rate(t.accepts);
        h.closes = rate(t.closes);
        h.connect_failures_total = accumulate(h.connect_failures_total, t.connect_failures);
        h.retransmits = rate(t.retransmits);
        h.retransmits_total = accumulate(h.retransmits_total, t.retransmits);
        h.resets_total = accumulate(
            h.resets_total,
            t.resets_sent.saturating_add(t.resets_received),
        );
        h.tcp_tx_total = accumulate(h.tcp_tx_total, t.bytes_sent);
        h.tcp_rx_total = accumulate(h.tcp_rx_total, t.bytes_received);
        h.byte_mismatches_total = accumulate(h.byte_mismatches_total, t.byte_mismatches);
        h.udp_tx = rate(s.udp.bytes_sent);
        h.udp_rx = rate(s.udp.bytes_received);
        h.udp_tx_total = accumulate(h.udp_tx_total, s.udp.bytes_sent);
        h.udp_rx_total = accumulate(h.udp_rx_total, s.udp.bytes_received);
        h.dns_queries = rate(s.dns.queries.iter().map(|q| q.count).sum());
        let io = &s.socket_io;
        h.socket_calls = rate(io.calls);
        h.socket_calls_total = accumulate(h.socket_calls_total, io.calls);
        h.unreported_msgs_total = accumulate(h.unreported_msgs_total, io.unreported_msgs);
        h.payload_faults_total = accumulate(h.payload_faults_total, io.payload_faults);
        h.dns_malformed_total = accumulate(h.dns_malformed_total, s.dns.malformed);
        let (requests, errors) = parts(s).fold((0u64, 0u64), |(n, e), p| {
            (n.saturating_add(p.count), e.saturating_add(p.errors))
        });
        h.requests = rate(requests);
        h.request_errors = error_percent(errors, requests);
        h.requests_total = accumulate(h.requests_total, requests);
        let pr = &s.protocols;
        for (total, n) in [
            (&mut h.parser_malformed_total, pr.malformed),
            (&mut h.parser_mid_stream_total, pr.mid_stream),
            (&mut h.parser_unmatched_total, pr.unmatched_responses),
            (&mut h.parser_unanswered_total, pr.unanswered),
            (&mut h.parser_unlisted_total, pr.unlisted_requests),
            (&mut h.parser_untracked_total, pr.untracked_connections),
        ] {
            *total = accumulate(*total, n);
        }
        for (code, n) in &p.exit_codes {
            if let Ok(code) = code.parse() {
                let total = self.exit_codes.entry(code).or_default();
                *total = accumulate(*total, *n);
            }
        }

        self.ingest_processes(sample);
        self.ingest_cgroups(sample);
        self.ingest_connections(sample);
        self.ingest_devices(sample);
        self.ingest_udp(sample);
        self.ingest_dns(sample);
        self.ingest_requests(sample);
    }

    fn ingest_processes(&mut self, sample: &Sample) {
        let (now, iv) = (sample.at, sample.interval);
        for proc in self.processes.values_mut() {
            proc.exec_rate = Some(0.0);
            proc.fork_rate = Some(0.0);
            proc.disk_read_rate = Some(0.0);
            proc.disk_write_rate = Some(0.0);
        }
        for row in &sample.snapshot.process.processes {
            let fresh = || Proc {
                pid: row.pid,
                first_seen: now,
                birth_seen: row.ppid.is_some(),
                ..Proc::default()
            };
            let proc = self.processes.entry(row.pid).or_insert_with(fresh);
            // The engine forgets exited processes at the next interval: a pid listed again
            // after its exit is a new process that reused the number.
            if proc.exited_at.is_some_and(|t| t < now) {
                *proc = fresh();
            }
            proc.ppid = row.ppid.or(proc.ppid);
            if !row.comm.is_empty() {
                proc.comm.clone_from(&row.comm);
            }
            if row.filename.is_some() {
                proc.filename.clone_from(&row.filename);
            }
            proc.cgroup_id = row.cgroup_id;
            proc.exec_rate = per_second(row.execs, iv);
            proc.fork_rate = per_second(row.forks, iv);
            proc.execs = accumulate(proc.execs, row.execs);
            proc.forks = accumulate(proc.forks, row.forks);
            if let Some(code) = row.exit_code {
                proc.exit_code = Some(code);
                proc.exited_at.get_or_insert(now);
            }
            proc.last_seen = now;
            proc.tcp_tx = accumulate(proc.tcp_tx, row.tcp_bytes_sent);
            proc.tcp_rx = accumulate(proc.tcp_rx, row.tcp_bytes_received);
            proc.disk_read = accumulate(proc.disk_read, row.block_read_bytes);
            proc.disk_write = accumulate(proc.disk_write, row.block_write_bytes);
            proc.disk_read_rate = per_second(row.block_read_bytes, iv);
            proc.disk_write_rate = per_second(row.block_write_bytes, iv);
        }
        // Exited processes linger a while; processes the source stopped listing without an
        // exit (an agent restarted, say) go after the same delay.
        self.processes.retain(|_, p| {
            let since = p.exited_at.unwrap_or(p.last_seen);
            elapsed(since, now) <= EXITED_KEEP
        });
        let mut exited: Vec<(Duration, u32)> = self
            .processes
            .values()
            .filter_map(|p| Some((p.exited_at?, p.pid)))
            .collect();
        if exited.len() > EXITED_MAX {
            exited.sort_unstable();
            for (_, pid) in &exited[..exited.len() - EXITED_MAX] {
                self.processes.remove(pid);
            }
        }
    }

    fn ingest_cgroups(&mut self, sample: &Sample) {
        let iv = sample.interval;
        for cg in self.cgroups.values_mut() {
            cg.exec_rate = Some(0.0);
            cg.fork_rate = Some(0.0);
            cg.exit_rate = Some(0.0);
            cg.disk_read_rate = Some(0.0);
            cg.disk_write_rate = Some(0.0);
        }
        for row in &sample.snapshot.cgroups {
            let cg = self.cgroups.entry(row.cgroup_id).or_insert_with(|| Cgroup {
                id: row.cgroup_id,
                ..Cgroup::default()
            });
            cg.exec_rate = per_second(row.execs, iv);
            cg.fork_rate = per_second(row.forks, iv);
            cg.exit_rate = per_second(row.exits, iv);
            cg.execs = accumulate(cg.execs, row.execs);
            cg.forks = accumulate(cg.forks, row.forks);
            cg.exits = accumulate(cg.exits, row.exits);
            cg.tcp_connections = accumulate(cg.tcp_connections, row.tcp_connections);
            cg.tcp_tx = accumulate(cg.tcp_tx, row.tcp_bytes_sent);
            cg.tcp_rx = accumulate(cg.tcp_rx, row.tcp_bytes_received);
            cg.disk_read = accumulate(cg.disk_read, row.block_read_bytes);
            cg.disk_write = accumulate(cg.disk_write, row.block_write_bytes);
            cg.disk_read_rate = per_second(row.block_read_bytes, iv);
            cg.disk_write_rate = per_second(row.block_write_bytes, iv);
        }
    }

    fn ingest_connections(&mut self, sample: &Sample) {
        let iv = sample.interval;
        let before: HashMap<ConnKey, (Option<u64>, Option<u64>)> = self
            .open
            .drain(..)
            .map(|c| (conn_key(&c.row), (c.row.bytes_sent, c.row.bytes_received)))
            .collect();
        for row in &sample.snapshot.tcp.connections {
            // Bytes in this interval: the change since the previous sample, or all of them
            // for a connection that started within it.
            let new_within = !row.since_start && row.duration_us <= iv.as_micros() as u64;
            let prev = before.get(&conn_key(row));
            let rate = |now: Option<u64>, then: Option<Option<u64>>| match (now, then) {
                (Some(n), Some(Some(t))) => per_second(n.saturating_sub(t), iv),
                (Some(n), _) if new_within => per_second(n, iv),
                _ => None,
            };
            let conn = Conn {
                row: row.clone(),
                closed_at: (row.state == "CLOSE").then_some(sample.at),
                tx_rate: rate(row.bytes_sent, prev.map(|p| p.0)),
                rx_rate: rate(row.bytes_received, prev.map(|p| p.1)),
            };
            if row.state == "CLOSE" {
                if self.closed.len() >= CLOSED_KEEP {
                    self.closed.pop_front();
                }
                self.closed.push_back(conn);
            } else {
                self.open.push(conn);
            }
        }
    }

    fn ingest_udp(&mut self, sample: &Sample) {
        let (now, iv) = (sample.at, sample.interval);
        for f in self.udp.values_mut() {
            (f.tx_rate, f.rx_rate, f.out_rate, f.in_rate) =
                (Some(0.0), Some(0.0), Some(0.0), Some(0.0));
        }
        for row in &sample.snapshot.udp.flows {
            let key = (
                row.saddr.clone(),
                row.sport,
                row.daddr.clone(),
                row.dport,
                row.pid,
                row.cgroup_id,
            );
            let f = self.udp.entry(key).or_default();
            let totals = (
                accumulate(f.row.bytes_sent, row.bytes_sent),
                accumulate(f.row.bytes_received, row.bytes_received),
                accumulate(f.row.datagrams_sent, row.datagrams_sent),
                accumulate(f.row.datagrams_received, row.datagrams_received),
            );
            f.row = row.clone();
            (
                f.row.bytes_sent,
                f.row.bytes_received,
                f.row.datagrams_sent,
                f.row.datagrams_received,
            ) = totals;
            f.tx_rate = per_second(row.bytes_sent, iv);
            f.rx_rate = per_second(row.bytes_received, iv);
            f.out_rate = per_second(row.datagrams_sent, iv);
            f.in_rate = per_second(row.datagrams_received, iv);
            f.last_seen = now;
        }
        forget_quiet(&mut self.udp, now, |f| f.last_seen);
    }

    fn ingest_dns(&mut self, sample: &Sample) {
        let (now, iv) = (sample.at, sample.interval);
        for d in self.dns.values_mut() {
            d.rate = Some(0.0);
        }
        for row in &sample.snapshot.dns.queries {
            let key = (
                row.role.clone(),
                row.server.clone(),
                row.qname.clone(),
                row.qtype.clone(),
                row.rcode.clone(),
                row.cgroup_id,
            );
            let d = self.dns.entry(key).or_default();
            let (count, timeouts) = (
                accumulate(d.row.count, row.count),
                accumulate(d.row.timeouts, row.timeouts),
            );
            d.row = row.clone();
            (d.row.count, d.row.timeouts) = (count, timeouts);
            d.rate = per_second(row.count, iv);
            if row.latency_us.count > 0 {
                d.latency = Some(row.latency_us.clone());
            }
            d.last_seen = now;
        }
        forget_quiet(&mut self.dns, now, |d| d.last_seen);
    }

    fn ingest_requests(&mut self, sample: &Sample) {
        let (now, iv) = (sample.at, sample.interval);
        for r in self.requests.values_mut() {
            r.rate = Some(0.0);
        }
        let mut interval: BTreeMap<ReqKey, Vec<Part>> = BTreeMap::new();
        for p in parts(&sample.snapshot) {
            let key = (
                p.cgroup_id,
                p.protocol.to_string(),
                p.role.to_string(),
                p.name.to_string(),
            );
            interval.entry(key).or_default().push(p);
        }
        let add = |counts: &mut BTreeMap<String, u64>, key: &str, n: u64| {
            let total = counts.entry(key.to_string()).or_default();
            *total = accumulate(*total, n);
        };
        for (key, parts) in interval {
            let r = self.requests.entry(key).or_default();
            let (count, errors) = parts.iter().fold((0u64, 0u64), |(n, e), p| {
                (n.saturating_add(p.count), e.saturating_add(p.errors))
            });
            r.rate = per_second(count, iv);
            r.count = accumulate(r.count, count);
            r.errors = accumulate(r.errors, errors);
            if count > 0 {
                r.error_pct = error_percent(errors, count);
            }
            if let Some(m) = merged_latency(parts.iter().map(|p| (p.latency, p.buckets))) {
                r.latency = Some(m);
            }
            for p in &parts {
                if !p.method.is_empty() {
                    add(&mut r.methods, p.method, p.count);
                }
                match p.error_codes {
                    Some(codes) => codes.iter().for_each(|(c, &n)| add(&mut r.statuses, c, n)),
                    None => add(&mut r.statuses, &p.status, p.count),
                }
            }
            r.last_seen = now;
        }
        forget_quiet(&mut self.requests, now, |r| r.last_seen);
    }

    fn ingest_devices(&mut self, sample: &Sample) {
        let iv = sample.interval;
        for d in self.devices.values_mut() {
            d.iops = Some(0.0);
            d.read_rate = Some(0.0);
            d.write_rate = Some(0.0);
        }
        for row in &sample.snapshot.block.devices {
            let d = self.devices.entry(row.dev.clone()).or_default();
            d.dev.clone_from(&row.dev);
            if !row.name.is_empty() {
                d.name.clone_from(&row.name);
            }
            let ios = row
                .reads
                .saturating_add(row.writes)
                .saturating_add(row.other);
            d.iops = per_second(ios, iv);
            d.read_rate = per_second(row.read_bytes, iv);
            d.write_rate = per_second(row.write_bytes, iv);
            if row.latency_us.count > 0 {
                d.latency = Some(row.latency_us.clone());
            }
            d.errors = accumulate(d.errors, row.errors);
            d.read_bytes = accumulate(d.read_bytes, row.read_bytes);
            d.write_bytes = accumulate(d.write_bytes, row.write_bytes);
        }
    }

    pub fn cgroup_owner(&self, id: u64) -> Option<&Owner> {
        self.cgroup_owners.get(&id)
    }

    pub fn cgroup_name(&self, id: u64) -> Option<&str> {
        self.cgroup_owner(id).map(|o| o.name.as_str())
    }
}

/// Drops rows quiet for longer than [`QUIET_KEEP`], and the longest quiet beyond
/// [`ROWS_MAX`].
fn forget_quiet<K: Ord + Clone, V>(
    rows: &mut BTreeMap<K, V>,
    now: Duration,
    last_seen: impl Fn(&V) -> Duration,
) {
    rows.retain(|_, v| elapsed(last_seen(v), now) <= QUIET_KEEP);
    if rows.len() > ROWS_MAX {
        let mut by_age: Vec<(Duration, K)> = rows
            .iter()
            .map(|(k, v)| (last_seen(v), k.clone()))
            .collect();
        by_age.sort_by_key(|a| a.0);
        for (_, k) in &by_age[..rows.len() - ROWS_MAX] {
            rows.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_engine::snapshot::{CgroupRow, CommandRow, HttpRow, ProcessRow};

    fn sample(at: u64, build: impl FnOnce(&mut ksight_engine::Snapshot)) -> Sample {
        let mut snapshot = ksight_engine::Snapshot::default();
        build(&mut snapshot);
        Sample {
            snapshot,
            interval: Duration::from_secs(1),
            at: Duration::from_secs(at),
            cgroup_labels: vec![],
        }
    }

    #[test]
    fn rates_are_per_interval_and_totals_accumulate() {
        let mut m = Model::default();
        m.ingest(&sample(1, |s| {
            s.events = 10;
            s.cgroups.push(CgroupRow {
                cgroup_id: 7,
                execs: 4,
                tcp_bytes_sent: 100,
                ..Default::default()
            });
        }));
        m.ingest(&sample(2, |s| {
            s.events = 4;
            s.cgroups.push(CgroupRow {
                cgroup_id: 7,
                execs: 2,
                tcp_bytes_sent: 50,
                ..Default::default()
            });
        }));
        assert_eq!(m.host.events, Some(4.0));
        assert_eq!(m.host.events_total, 14);
        let cg = &m.cgroups[&7];
        assert_eq!(cg.exec_rate, Some(2.0));
        assert_eq!((cg.execs, cg.tcp_tx), (6, 150));
        m.ingest(&sample(3, |_| {}));
        assert_eq!(
            m.cgroups[&7].exec_rate,
            Some(0.0),
            "a quiet interval rates zero"
        );
    }

    #[test]
    fn lifetimes_exits_and_pid_reuse() {
        let mut m = Model::default();
        let row = |pid, ppid, exit_code| ProcessRow {
            pid,
            ppid,
            comm: "sleep".into(),
            exit_code,
            ..Default::default()
        };
        m.ingest(&sample(1, |s| {
            s.process.processes = vec![row(10, Some(1), None), row(11, None, None)];
        }));
        m.ingest(&sample(4, |s| {
            s.process.processes = vec![row(10, Some(1), Some(0)), row(11, None, None)];
        }));
        let iv = Duration::from_secs(1);
        let p = &m.processes[&10];
        assert_eq!(
            p.lifetime(m.now, iv),
            Some(Lifetime::About(Duration::from_secs(3)))
        );
        assert_eq!(
            m.processes[&11].lifetime(m.now, iv),
            None,
            "born before capture"
        );
        // Reused pid: a new life.
        m.ingest(&sample(5, |s| {
            s.process.processes = vec![row(10, Some(2), Some(1))];
        }));
        let p = &m.processes[&10];
        assert_eq!(p.ppid, Some(2));
        assert_eq!(p.lifetime(m.now, iv), Some(Lifetime::Under(iv)));
        // At most EXITED_MAX exited processes, the most recent.
        let many = Sample {
            snapshot: ksight_engine::Snapshot {
                process: ksight_engine::snapshot::ProcessSummary {
                    processes: (0..EXITED_MAX as u32 + 10)
                        .map(|pid| row(1000 + pid, Some(1), Some(0)))
                        .collect(),
                    ..Default::default()
                },
                ..Default::default()
            },
            interval: Duration::from_secs(1),
            at: Duration::from_secs(6),
            cgroup_labels: vec![],
        };
        m.ingest(&many);
        assert_eq!(
            m.processes
                .values()
                .filter(|p| p.exited_at.is_some())
                .count(),
            EXITED_MAX
        );
        // Exited processes go after EXITED_KEEP.
        m.ingest(&sample(6 + EXITED_KEEP.as_secs() + 1, |_| {}));
        assert!(m.processes.is_empty());
    }

    #[test]
    fn closed_connections_are_kept_open_ones_replaced() {
        let mut m = Model::default();
        let conn = |state: &str| ConnectionRow {
            state: state.into(),
            ..Default::default()
        };
        m.ingest(&sample(1, |s| {
            s.tcp.connections = vec![conn("CLOSE"), conn("ESTABLISHED")];
        }));
        m.ingest(&sample(2, |s| s.tcp.connections = vec![conn("CLOSE")]));
        assert_eq!(m.closed.len(), 2);
        assert!(m.open.is_empty());
        for _ in 0..CLOSED_KEEP {
            m.ingest(&sample(3, |s| s.tcp.connections = vec![conn("CLOSE")]));
        }
        assert_eq!(m.closed.len(), CLOSED_KEEP);
    }

    #[test]
    fn open_connection_rates_come_from_the_change_of_their_bytes() {
        let mut m = Model::default();
        let conn = |sent: u64, received: u64, duration_s: u64| ConnectionRow {
            state: "ESTABLISHED".into(),
            sport: 40000,
            bytes_sent: Some(sent),
            bytes_received: Some(received),
            duration_us: duration_s * 1_000_000,
            ..Default::default()
        };
        m.ingest(&sample(1, |s| s.tcp.connections = vec![conn(1000, 10, 1)]));
        assert_eq!(
            (m.open[0].tx_rate, m.open[0].rx_rate),
            (Some(1000.0), Some(10.0))
        );
        m.ingest(&sample(2, |s| s.tcp.connections = vec![conn(5000, 10, 2)]));
        assert_eq!(
            (m.open[0].tx_rate, m.open[0].rx_rate),
            (Some(4000.0), Some(0.0))
        );
        // Open before: bytes since start, and no rate until a second sample.
        let mut m = Model::default();
        let mut old = conn(700, 0, 100);
        old.since_start = true;
        m.ingest(&sample(1, |s| s.tcp.connections = vec![old.clone()]));
        assert_eq!(m.open[0].tx_rate, None);
        let mut closed = conn(900, 0, 101);
        closed.state = "CLOSE".into();
        m.ingest(&sample(2, |s| s.tcp.connections = vec![closed]));
        assert_eq!(m.closed[0].tx_rate, Some(200.0));
    }

    #[test]
    fn udp_flows_and_dns_rows_rate_per_interval_and_total() {
        let mut m = Model::default();
        let flow = |sent| UdpFlowRow {
            saddr: "10.0.0.1".into(),
            sport: 5000,
            daddr: "10.0.0.2".into(),
            dport: 53,
            bytes_sent: sent,
            datagrams_sent: sent / 100,
            ..Default::default()
        };
        let query = |count| DnsRow {
            qname: "a.test".into(),
            count,
            latency_us: Latency {
                count,
                p50: 100.0,
                p99: 200.0,
                max: 300.0,
            },
            ..Default::default()
        };
        m.ingest(&sample(1, |s| {
            s.udp.flows = vec![flow(300)];
            s.udp.bytes_sent = 300;
            s.dns.queries = vec![query(3)];
            s.socket_io.payload_faults = 2;
        }));
        m.ingest(&sample(2, |s| s.udp.flows = vec![flow(100)]));
        let f = m.udp.values().next().unwrap();
        assert_eq!(
            (f.tx_rate, f.out_rate, f.row.bytes_sent),
            (Some(100.0), Some(1.0), 400)
        );
        let d = m.dns.values().next().unwrap();
        assert_eq!((d.rate, d.row.count), (Some(0.0), 3), "quiet this interval");
        assert_eq!(d.latency.as_ref().map(|l| l.p99), Some(200.0));
        assert_eq!((m.host.udp_tx_total, m.host.payload_faults_total), (300, 2));
        m.ingest(&sample(2 + QUIET_KEEP.as_secs() + 1, |_| {}));
        assert!(m.udp.is_empty() && m.dns.is_empty());
    }

    fn get(count: u64, errors: u64, status: u16, p99: f64) -> HttpRow {
        HttpRow {
            protocol: "http".into(),
            role: "server".into(),
            method: "GET".into(),
            route: "/api/*".into(),
            status,
            count,
            errors,
            latency_us: Latency {
                count,
                p50: p99 / 2.0,
                p99,
                max: p99,
            },
            cgroup_id: 7,
            ..Default::default()
        }
    }

    #[test]
    fn requests_of_one_route_are_one_row_rated_per_interval() {
        let mut m = Model::default();
        m.ingest(&sample(1, |s| {
            s.http.requests = vec![get(6, 0, 200, 800.0), get(2, 2, 503, 900.0)];
            s.redis.commands = vec![CommandRow {
                role: "client".into(),
                command: "SET".into(),
                count: 4,
                errors: 1,
                error_codes: [("WRONGTYPE".to_string(), 1)].into(),
                cgroup_id: 7,
                ..Default::default()
            }];
            s.protocols.unanswered = 3;
        }));
        assert_eq!(m.requests.len(), 2);
        let key = |proto: &str, name: &str| {
            (7, proto.to_string(), "server".to_string(), name.to_string())
        };
        let r = &m.requests[&key("http", "/api/*")];
        assert_eq!((r.rate, r.count, r.errors), (Some(8.0), 8, 2));
        assert_eq!(r.error_pct, Some(25.0));
        let lat = r.latency.as_ref().unwrap();
        assert_eq!(
            (lat.latency.p99, lat.exact),
            (900.0, false),
            "two rows: a bound"
        );
        assert_eq!(r.methods, [("GET".to_string(), 8)].into());
        assert_eq!(
            r.statuses,
            [("200".to_string(), 6), ("503".to_string(), 2)].into()
        );
        let set = &m.requests[&(7, "redis".into(), "client".into(), "SET".into())];
        assert_eq!(set.statuses, [("WRONGTYPE".to_string(), 1)].into());
        assert_eq!(
            (
                m.host.requests,
                m.host.request_errors,
                m.host.requests_total
            ),
            (Some(12.0), Some(25.0), 12)
        );
        assert_eq!(m.host.parser_unanswered_total, 3);
        // A quiet interval: no rate, but the last error rate and latency stay.
        m.ingest(&sample(2, |_| {}));
        let r = &m.requests[&key("http", "/api/*")];
        assert_eq!((r.rate, r.error_pct, r.count), (Some(0.0), Some(25.0), 8));
        assert!(r.latency.is_some());
        assert_eq!(m.host.request_errors, None, "no requests: no error rate");
        // A zero interval has no rate; totals still add up.
        let mut zero = sample(3, |s| s.http.requests = vec![get(1, 0, 200, 100.0)]);
        zero.interval = Duration::ZERO;
        m.ingest(&zero);
        let r = &m.requests[&key("http", "/api/*")];
        assert_eq!((r.rate, r.count, r.error_pct), (None, 9, Some(0.0)));
        let lat = r.latency.as_ref().unwrap();
        assert_eq!((lat.latency.p99, lat.exact), (100.0, true));
        assert_eq!(m.host.requests, None);
        m.ingest(&sample(3 + QUIET_KEEP.as_secs() + 1, |_| {}));
        assert!(m.requests.is_empty());
    }
}
