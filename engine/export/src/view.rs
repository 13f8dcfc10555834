//! From the engine's cumulative snapshots to what a scrape encodes.
//!
//! The agent's engine never resets its counters; each tick it takes a snapshot, hands it
//! to [`Exporter::update`], and forgets the processes and connections that snapshot listed
//! as finished ([`ksight_engine::Engine::forget_finished`]). The exporter then:
//!
//! - keeps series by cgroup, never by pid, and drops those of cgroups that no longer exist
//!   once they have been gone for the grace period (and tells the caller, so the engine
//!   forgets them too);
//! - keeps the N largest connections that closed within a sliding window, so per-connection
//!   series stay bounded;
//! - keeps DNS series for the N qnames with the most queries and sums the rest under
//!   qname "other", accumulating each series from the growth of the engine's rows so
//!   every counter only grows as qnames enter and leave the top N;
//! - accumulates the request, command, protocol and service-map (edge) series the same
//!   way, from the growth of the engine's rows: an edge's server may get a name (its
//!   cgroup, or Kubernetes names from [`ClusterNames`]) only after its first requests, and
//!   its series then moves under that name; a pod's server-role request and command series
//!   carry the names of the Services it backs (`service`), and move the same way when they
//!   change. Their number is bounded by the engine's bounds on rows, routes, hosts and
//!   edges (`ksight_engine::requests`);
//! - applies the signals and filters of the configuration, which a reload may change at
//!   any time without touching the aggregates.

use event_abi::kinds;
pub use ksight_attribution::cgroups::CgroupTree;
use ksight_engine::signals::{Family, Mode, Signal, SignalStatus};
use ksight_engine::snapshot::{
    CgroupLabels, CgroupRow, CommandRow, ConnectionRow, DeviceRow, DnsRow, EdgeRow, HttpRow,
    LATENCY_BUCKETS_NS, ProtocolConnectionRow, Snapshot, counts_since,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

/// Which signals are captured and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// exec, fork, exit.
    pub process: bool,
    /// TCP lifecycle, bytes, retransmits and resets.
    pub tcp: bool,
    /// Block I/O.
    pub block: bool,
    /// Socket send/receive calls: live TCP bytes, UDP flows, DNS.
    pub socket_io: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            process: true,
            tcp: true,
            block: true,
            socket_io: true,
        }
    }
}

impl Signals {
    pub fn all(&self) -> bool {
        self.process && self.tcp && self.block && self.socket_io
    }

    /// Whether the configuration switch of this family is on.
    pub fn wants_family(&self, family: Family) -> bool {
        match family {
            Family::Process => self.process,
            Family::Tcp => self.tcp,
            Family::Block => self.block,
            Family::SocketIo => self.socket_io,
        }
    }

    /// The record kinds of the enabled signals as a backend mask (bit `1 << kind`), from
    /// the table of kinds; None when every signal is on (the backends' "all").
    pub fn kinds_mask(&self) -> Option<u32> {
        (!self.all()).then(|| {
            kinds::KINDS
                .iter()
                .filter(|k| self.wants(k.signal))
                .fold(0u32, |mask, k| mask | 1 << k.kind)
        })
    }

    /// Whether this signal is enabled (its family's switch, from the table of kinds).
    pub fn wants(&self, signal: Signal) -> bool {
        self.wants_family(signal.family())
    }

    /// Each signal's mode under a configuration: the backend's fidelity, or
    /// [`Mode::Disabled`] when the configuration turns the signal off. Every signal of the
    /// table is listed, in report order; one the backend did not report is unavailable.
    pub fn modes(&self, statuses: &[SignalStatus]) -> Vec<(Signal, Mode)> {
        Signal::ALL
            .iter()
            .map(|&signal| {
                let mode = if !self.wants(signal) {
                    Mode::Disabled
                } else {
                    statuses
                        .iter()
                        .find(|s| s.signal == signal)
                        .map_or(Mode::Unavailable, |s| s.status.mode())
                };
                (signal, mode)
            })
            .collect()
    }

    /// Whether records of this event-abi kind belong to an enabled signal (the kind's row
    /// in `event_abi::kinds::KINDS` says which). Unknown kinds pass, so the engine still
    /// counts them as malformed.
    pub fn wants_kind(&self, k: u16) -> bool {
        kinds::signal(k).is_none_or(|s| self.wants(s))
    }

    /// Whether the signal of this name (as fidelity reports name them: "process", "tcp",
    /// "tcp_close_stats", "tcp_retransmits", "tcp_resets", "block") is enabled. Names not in
    /// the table pass.
    pub fn wants_signal(&self, signal: &str) -> bool {
        Signal::from_name(signal).is_none_or(|s| self.wants(s))
    }
}

/// What to export; every field may change on a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    pub signals: Signals,
    /// cgroup paths (relative to the cgroup v2 mount, starting with `/`) whose series are
    /// exported, with everything below them; empty: all cgroups.
    pub include_cgroups: Vec<String>,
    /// cgroup paths not exported, with everything below them.
    pub exclude_cgroups: Vec<String>,
    /// Block devices whose name starts with one of these are not exported ("loop", "ram").
    pub exclude_devices: Vec<String>,
    /// How many per-connection series: the largest connections (bytes sent + received)
    /// that closed within `connection_window_ms`.
    pub top_connections: usize,
    pub connection_window_ms: u64,
    /// How long a cgroup's series outlive the cgroup.
    pub cgroup_grace_ms: u64,
    /// DNS series carry the qnames with the most queries, at most this many; the others
    /// are summed under qname "other".
    pub dns_max_qnames: usize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            signals: Signals::default(),
            include_cgroups: Vec::new(),
            exclude_cgroups: Vec::new(),
            exclude_devices: Vec::new(),
            top_connections: 10,
            connection_window_ms: 60_000,
            cgroup_grace_ms: 300_000,
            dns_max_qnames: 100,
        }
    }
}

/// Whether `path` is `prefix` or lies below it.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
}

impl ExportSettings {
    /// Whether a cgroup (with its path, if known) passes the filters.
    pub fn wants_cgroup(&self, path: Option<&str>) -> bool {
        let included = self.include_cgroups.is_empty()
            || path.is_some_and(|p| self.include_cgroups.iter().any(|i| under(p, i)));
        let excluded = path.is_some_and(|p| self.exclude_cgroups.iter().any(|e| under(p, e)));
        included && !excluded
    }

    pub fn wants_device(&self, d: &DeviceRow) -> bool {
        let name = if d.name.is_empty() { &d.dev } else { &d.name };
        !self
            .exclude_devices
            .iter()
            .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
    }
}

/// Facts about the agent itself, exported next to the aggregates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentMeta {
    pub version: String,
    /// "ebpf" or "kmod".
    pub backend: String,
    /// Why that backend (the auto-detection's verdict, or "configured").
    pub backend_reason: String,
    /// Each signal's mode (full, degraded, unavailable, or disabled by the configuration),
    /// from the backend's typed fidelity ([`Signals::modes`]).
    pub signals: Vec<(Signal, Mode)>,
    /// Unix time the agent started, in seconds.
    pub start_time_s: f64,
    /// Records decoded since start.
    pub events: u64,
    /// Records decoded per second over the last tick.
    pub events_per_second: f64,
    /// Records that arrived after the reorder window had passed them.
    pub late_events: u64,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// Kubernetes metadata, when the agent watches the API server.
    pub kubernetes: Option<MetadataStatus>,
    /// Exported cgroups of Kubernetes pods whose metadata has not arrived.
    pub pending_cgroups: u64,
    /// cgroups currently ignored (filters, `ksight.io/ignore`), and events dropped for them
    /// by the kernel and by the engine.
    pub ignored_cgroups: u64,
    pub ignored_events_kernel: u64,
    pub ignored_events_engine: u64,
}

/// The state of the Kubernetes metadata watch: what makes a metadata gap visible.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataStatus {
    /// The last request to the API server succeeded and the watch is open.
    pub connected: bool,
    /// The first list of this node's pods completed.
    pub synced: bool,
    pub pods: u64,
    pub errors: u64,
    pub relists: u64,
    /// Unix time of the last event or list received.
    pub last_event_unix_s: Option<f64>,
}

/// One exported cgroup: its counters and, when the cgroup still exists, its path.
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupSeries {
    pub row: CgroupRow,
    pub path: Option<String>,
}

/// Everything one scrape encodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportView {
    pub meta: AgentMeta,
    pub signals: Signals,
    /// The snapshot's host-wide figures (its lists are emptied: see the fields below).
    pub totals: Snapshot,
    pub cgroups: Vec<CgroupSeries>,
    pub devices: Vec<DeviceRow>,
    /// The top-N connections, largest first.
    pub connections: Vec<ConnectionRow>,
    /// DNS series of exported cgroups, in key order.
    pub dns: Vec<DnsSeries>,
    /// Queries counted under qname "other" since the agent started.
    pub dns_other_requests: u64,
    /// HTTP/1, HTTP/2 and gRPC series of exported cgroups, in key order.
    pub http: Vec<HttpSeries>,
    /// Redis, MySQL and PostgreSQL series of exported cgroups, in key order.
    pub commands: Vec<CommandSeries>,
    /// Connections and bytes per detected protocol, of exported cgroups.
    pub protocols: Vec<ProtocolSeries>,
    /// The service map: edges of exported client cgroups, in key order.
    pub edges: Vec<EdgeSeries>,
}

/// Kubernetes names of a server address (a Service's ClusterIP, or a pod's IP).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName {
    pub namespace: String,
    pub service: Option<String>,
    pub pod: Option<String>,
}

/// What the cluster's metadata tells the exporter (the agent implements it over its
/// Kubernetes watch; without one, nothing is named).
pub trait ClusterNames {
    /// Names a server address and port (a Service's ClusterIP, a pod's IP), when it can.
    fn server(&self, ip: IpAddr, port: u16) -> Option<ServerName>;
    /// The names of the Services the pod backs (listed in their EndpointSlices), sorted.
    fn services_of_pod(&self, namespace: &str, pod: &str) -> Vec<String>;
}

/// What one HTTP/1, HTTP/2 or gRPC series is told apart by: its engine row's identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpKey {
    pub cgroup_id: u64,
    pub protocol: String,
    pub role: String,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub grpc_status: Option<String>,
    pub host: Option<String>,
    pub peer: Option<String>,
    /// Server rows of a pod's cgroup: the Services the pod backs, joined with ",".
    pub service: Option<String>,
}

impl HttpKey {
    fn of(r: &HttpRow) -> Self {
        Self {
            cgroup_id: r.cgroup_id,
            protocol: r.protocol.clone(),
            role: r.role.clone(),
            method: r.method.clone(),
            route: r.route.clone(),
            status: r.status,
            grpc_status: r.grpc_status.clone(),
            host: r.host.clone(),
            peer: r.peer.clone(),
            service: None,
        }
    }
}

/// What one Redis command or SQL statement series is told apart by.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandKey {
    pub cgroup_id: u64,
    /// "redis", "mysql" or "postgres".
    pub protocol: String,
    pub role: String,
    pub command: String,
    pub peer: Option<String>,
    /// Server rows of a pod's cgroup: the Services the pod backs, joined with ",".
    pub service: Option<String>,
}

impl CommandKey {
    fn of(protocol: &str, r: &CommandRow) -> Self {
        Self {
            cgroup_id: r.cgroup_id,
            protocol: protocol.to_string(),
            role: r.role.clone(),
            command: r.command.clone(),
            peer: r.peer.clone(),
            service: None,
        }
    }
}

/// What one per-protocol connection series is told apart by.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolKey {
    pub cgroup_id: u64,
    pub protocol: String,
    pub role: String,
}

/// An edge's server as exported.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeServer {
    /// An exported cgroup of this host (its owner labels, prefixed `server_`).
    Local(u64),
    /// Named by the resolver.
    Named(ServerName),
    /// "addr:port" as the client connected to it.
    Address(String),
}

/// What one edge series is told apart by: rows of the engine that end up with the same
/// labels (a Service's ClusterIP and its pods' IPs, say) add up in one series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub client_cgroup_id: u64,
    pub server: EdgeServer,
    /// Empty until a protocol was detected on the edge.
    pub protocol: String,
}

/// The counters of a request, command, protocol or edge series, accumulated by the
/// exporter from the growth of the engine's rows (each kind uses the fields it has).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Requests (commands, queries).
    pub count: u64,
    pub errors: u64,
    /// Errors by code (Redis error prefix, MySQL error number, SQLSTATE).
    pub error_codes: BTreeMap<String, u64>,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Sum of the latencies, ns, and requests per [`LATENCY_BUCKETS_NS`] bucket (one more
    /// for those above).
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

impl RequestCounts {
    fn of_http(r: &HttpRow) -> Self {
        Self {
            count: r.count,
            errors: r.errors,
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets.clone(),
            ..Default::default()
        }
    }

    fn of_command(r: &CommandRow) -> Self {
        Self {
            count: r.count,
            errors: r.errors,
            error_codes: r.error_codes.clone(),
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets.clone(),
            ..Default::default()
        }
    }

    fn of_protocol(r: &ProtocolConnectionRow) -> Self {
        Self {
            connections: r.connections,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            ..Default::default()
        }
    }

    fn of_edge(r: &EdgeRow) -> Self {
        Self {
            count: r.requests,
            errors: r.errors,
            connections: r.connections,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets.clone(),
            ..Default::default()
        }
    }

    /// What `self` counted beyond `before` (a row that went back was started over).
    fn since(&self, before: &RequestCounts) -> RequestCounts {
        let went_back = self.count < before.count
            || self.connections < before.connections
            || self.bytes_sent < before.bytes_sent
            || self.bytes_received < before.bytes_received
            || self.latency_sum_ns < before.latency_sum_ns;
        if went_back {
            return self.clone();
        }
        let d = |a: u64, b: u64| a.saturating_sub(b);
        RequestCounts {
            count: d(self.count, before.count),
            errors: d(self.errors, before.errors),
            error_codes: counts_since(&self.error_codes, &before.error_codes),
            connections: d(self.connections, before.connections),
            bytes_sent: d(self.bytes_sent, before.bytes_sent),
            bytes_received: d(self.bytes_received, before.bytes_received),
            latency_sum_ns: d(self.latency_sum_ns, before.latency_sum_ns),
            latency_buckets: self
                .latency_buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| d(n, before.latency_buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    fn add(&mut self, o: &RequestCounts) {
        self.count = self.count.saturating_add(o.count);
        self.errors = self.errors.saturating_add(o.errors);
        for (code, &n) in &o.error_codes {
            let c = self.error_codes.entry(code.clone()).or_default();
            *c = c.saturating_add(n);
        }
        self.connections = self.connections.saturating_add(o.connections);
        self.bytes_sent = self.bytes_sent.saturating_add(o.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(o.bytes_received);
        self.latency_sum_ns = self.latency_sum_ns.saturating_add(o.latency_sum_ns);
        let n = LATENCY_BUCKETS_NS.len() + 1;
        self.latency_buckets.resize(n, 0);
        for (i, &b) in o.latency_buckets.iter().take(n).enumerate() {
            self.latency_buckets[i] = self.latency_buckets[i].saturating_add(b);
        }
    }

    /// Requests with a latency: the histogram's count.
    pub fn timed(&self) -> u64 {
        self.latency_buckets
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
    }
}

/// One exported per-cgroup series of requests, commands or protocol connections, with its
/// cgroup's owner.
#[derive(Clone, Debug, PartialEq)]
pub struct Series<K> {
    pub key: K,
    pub attribution: Option<CgroupLabels>,
    pub counts: RequestCounts,
}

pub type HttpSeries = Series<HttpKey>;
pub type CommandSeries = Series<CommandKey>;
pub type ProtocolSeries = Series<ProtocolKey>;

/// One exported edge: its client cgroup's owner and, for a local server, the server
/// cgroup's.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeSeries {
    pub key: EdgeKey,
    pub client: Option<CgroupLabels>,
    pub server: Option<CgroupLabels>,
    pub counts: RequestCounts,
}

/// Series accumulated from the growth of the engine's rows, each row (identity `S`) adding
/// to the series (`K`) it maps to at this tick. A series no row maps to any more goes (as
/// a DNS qname's that leaves the top N), so state is bounded by the engine's rows.
#[derive(Debug)]
struct Accumulated<S, K> {
    seen: HashMap<S, RequestCounts>,
    series: BTreeMap<K, RequestCounts>,
}

impl<S, K> Default for Accumulated<S, K> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
            series: BTreeMap::new(),
        }
    }
}

impl<S: Eq + Hash, K: Ord + Clone> Accumulated<S, K> {
    fn update(
        &mut self,
        rows: impl IntoIterator<Item = (S, K, RequestCounts)>,
        expired: &[u64],
        cgroup_of: impl Fn(&K) -> u64,
    ) {
        let mut seen = HashMap::new();
        let mut mapped = BTreeSet::new();
        for (source, target, now) in rows {
            let grew = match self.seen.get(&source) {
                Some(before) => now.since(before),
                None => now.clone(),
            };
            self.series.entry(target.clone()).or_default().add(&grew);
            mapped.insert(target);
            seen.insert(source, now);
        }
        self.seen = seen;
        self.series
            .retain(|k, _| mapped.contains(k) && !expired.contains(&cgroup_of(k)));
    }

    /// The series of exported cgroups, with their owners.
    fn exported(&self, exported: &HashMap<u64, &CgroupSeries>) -> Vec<Series<K>>
    where
        K: HasCgroup,
    {
        self.series
            .iter()
            .filter_map(|(key, counts)| {
                let c = exported.get(&key.cgroup_id())?;
                Some(Series {
                    key: key.clone(),
                    attribution: c.row.attribution.clone(),
                    counts: counts.clone(),
                })
            })
            .collect()
    }
}

trait HasCgroup {
    fn cgroup_id(&self) -> u64;
}

impl HasCgroup for HttpKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

impl HasCgroup for CommandKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

impl HasCgroup for ProtocolKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

/// The qname DNS queries beyond the bound are counted under.
pub const OTHER_QNAME: &str = "other";

/// What one DNS series is told apart by.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsKey {
    pub cgroup_id: u64,
    pub role: String,
    pub server: String,
    pub qname: String,
    pub qtype: String,
    pub rcode: String,
}

impl DnsKey {
    fn of(r: &DnsRow) -> Self {
        Self {
            cgroup_id: r.cgroup_id,
            role: r.role.clone(),
            server: r.server.clone(),
            qname: r.qname.clone(),
            qtype: r.qtype.clone(),
            rcode: r.rcode.clone(),
        }
    }
}

/// A DNS series' counters, accumulated by the exporter from the growth of the engine's
/// rows, so they only ever grow even as qnames enter and leave the top N.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsCounts {
    /// Queries (answered or timed out).
    pub count: u64,
    /// Queries that got no answer in time.
    pub timeouts: u64,
    /// Sum of the answered queries' latencies, ns.
    pub latency_sum_ns: u64,
    /// Answered queries per [`LATENCY_BUCKETS_NS`] bucket (one more for those above).
    pub latency_buckets: Vec<u64>,
}

impl DnsCounts {
    fn of(r: &DnsRow) -> Self {
        Self {
            count: r.count,
            timeouts: r.timeouts,
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets.clone(),
        }
    }

    /// What `now` counted beyond `before` (a row that went back was started over).
    fn since(&self, before: &DnsCounts) -> DnsCounts {
        if self.count < before.count || self.latency_sum_ns < before.latency_sum_ns {
            return self.clone();
        }
        let d = |a: u64, b: u64| a.saturating_sub(b);
        DnsCounts {
            count: d(self.count, before.count),
            timeouts: d(self.timeouts, before.timeouts),
            latency_sum_ns: d(self.latency_sum_ns, before.latency_sum_ns),
            latency_buckets: self
                .latency_buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| d(n, before.latency_buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    fn add(&mut self, o: &DnsCounts) {
        self.count = self.count.saturating_add(o.count);
        self.timeouts = self.timeouts.saturating_add(o.timeouts);
        self.latency_sum_ns = self.latency_sum_ns.saturating_add(o.latency_sum_ns);
        let n = LATENCY_BUCKETS_NS.len() + 1;
        self.latency_buckets.resize(n, 0);
        for (i, &b) in o.latency_buckets.iter().take(n).enumerate() {
            self.latency_buckets[i] = self.latency_buckets[i].saturating_add(b);
        }
    }

    /// Answered queries: the histogram's count.
    pub fn answered(&self) -> u64 {
        self.latency_buckets
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
    }
}

/// One exported DNS series, with its cgroup's owner.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSeries {
    pub key: DnsKey,
    pub attribution: Option<CgroupLabels>,
    pub counts: DnsCounts,
}

/// State kept between ticks: when cgroups disappeared, recently closed connections, DNS
/// series.
#[derive(Debug, Default)]
pub struct Exporter {
    gone_since_ms: HashMap<u64, u64>,
    /// Closed connections that may still make the top N: (tick time, connection).
    recent: Vec<(u64, ConnectionRow)>,
    /// The engine's DNS rows as last seen (cumulative), to take their growth.
    dns_seen: HashMap<DnsKey, DnsCounts>,
    /// Exported DNS series: qnames of the top N, and "other".
    dns_series: BTreeMap<DnsKey, DnsCounts>,
    dns_other_requests: u64,
    http: Accumulated<HttpKey, HttpKey>,
    commands: Accumulated<CommandKey, CommandKey>,
    protocols: Accumulated<ProtocolKey, ProtocolKey>,
    /// Engine edges by (client cgroup, server address), to the labels they map to now.
    edges: Accumulated<(u64, String), EdgeKey>,
}

fn connection_bytes(c: &ConnectionRow) -> u64 {
    c.bytes_sent
        .unwrap_or(0)
        .saturating_add(c.bytes_received.unwrap_or(0))
}

impl Exporter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the view of `snapshot` (cumulative, from an engine that forgets finished
    /// processes and connections after each snapshot) at time `now_ms` (any monotonic
    /// clock). Returns the view and the cgroups gone for longer than the grace period,
    /// which the engine should forget. Edge servers that are not exported cgroups of this
    /// host are labelled by address: [`Exporter::update_resolving`] names them.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        tree: &CgroupTree,
        now_ms: u64,
        settings: &ExportSettings,
        meta: AgentMeta,
    ) -> (ExportView, Vec<u64>) {
        self.update_resolving(snapshot, tree, now_ms, settings, meta, None)
    }

    /// [`Exporter::update`], naming with `cluster`: edge servers that are not exported
    /// cgroups of this host (Kubernetes Services and pods by address and port), and the
    /// Services whose pods serve the server-role request and command series
    /// ([`Exporter::update_requests`]).
    pub fn update_resolving(
        &mut self,
        snapshot: &Snapshot,
        tree: &CgroupTree,
        now_ms: u64,
        settings: &ExportSettings,
        meta: AgentMeta,
        cluster: Option<&dyn ClusterNames>,
    ) -> (ExportView, Vec<u64>) {
        // Cgroups that disappeared: hidden, and forgotten, once past the grace period.
        let mut expired = Vec::new();
        let mut cgroups = Vec::new();
        for row in &snapshot.cgroups {
            let id = row.cgroup_id;
            let path = tree.paths.get(&id).cloned();
            // Id 0 is what records carry when no cgroup applies; it never disappears.
            if path.is_none() && tree.complete && id != 0 {
                let since = *self.gone_since_ms.entry(id).or_insert(now_ms);
                if now_ms.saturating_sub(since) >= settings.cgroup_grace_ms {
                    expired.push(id);
                    continue;
                }
            } else {
                self.gone_since_ms.remove(&id);
            }
            // Ignored cgroups: events from before the ignore set reached the kernel.
            let ignored = row.attribution.as_ref().is_some_and(|a| a.ignored);
            if settings.wants_cgroup(path.as_deref()) && !ignored {
                cgroups.push(CgroupSeries {
                    row: row.clone(),
                    path,
                });
            }
        }
        for id in &expired {
            self.gone_since_ms.remove(id);
        }
        if !expired.is_empty() {
            self.recent.retain(|(_, c)| !expired.contains(&c.cgroup_id));
        }
        // Cgroups the engine no longer reports need no tracking.
        if self.gone_since_ms.len() > snapshot.cgroups.len() {
            let listed: std::collections::HashSet<u64> =
                snapshot.cgroups.iter().map(|c| c.cgroup_id).collect();
            self.gone_since_ms.retain(|id, _| listed.contains(id));
        }

        let devices = snapshot
            .block
            .devices
            .iter()
            .filter(|d| settings.wants_device(d))
            .cloned()
            .collect();

        let connections = self.top_connections(snapshot, tree, now_ms, settings);
        self.update_dns(snapshot, &expired, settings.dns_max_qnames);
        let exported: HashMap<u64, &CgroupSeries> =
            cgroups.iter().map(|c| (c.row.cgroup_id, c)).collect();
        let dns = self
            .dns_series
            .iter()
            .filter_map(|(key, counts)| {
                let c = exported.get(&key.cgroup_id)?;
                Some(DnsSeries {
                    key: key.clone(),
                    attribution: c.row.attribution.clone(),
                    counts: counts.clone(),
                })
            })
            .collect();
        self.update_requests(snapshot, &expired, &exported, cluster);
        let edges = self
            .edges
            .series
            .iter()
            .filter_map(|(key, counts)| {
                let client = exported.get(&key.client_cgroup_id)?;
                let server = match key.server {
                    EdgeServer::Local(id) => exported.get(&id)?.row.attribution.clone(),
                    _ => None,
                };
                Some(EdgeSeries {
                    key: key.clone(),
                    client: client.row.attribution.clone(),
                    server,
                    counts: counts.clone(),
                })
            })
            .collect();
        let http = self.http.exported(&exported);
        let commands = self.commands.exported(&exported);
        let protocols = self.protocols.exported(&exported);

        let mut totals = snapshot.clone();
        totals.process.processes = Vec::new();
        totals.tcp.connections = Vec::new();
        totals.block.devices = Vec::new();
        totals.cgroups = Vec::new();
        totals.udp.flows = Vec::new();
        totals.dns.queries = Vec::new();
        totals.http.requests = Vec::new();
        totals.redis.commands = Vec::new();
        totals.mysql.queries = Vec::new();
        totals.postgres.queries = Vec::new();
        totals.protocols.connections = Vec::new();
        totals.edges = Vec::new();

        let view = ExportView {
            meta,
            signals: settings.signals,
            totals,
            cgroups,
            devices,
            connections,
            dns,
            dns_other_requests: self.dns_other_requests,
            http,
            commands,
            protocols,
            edges,
        };
        (view, expired)
    }

    /// Adds the growth of the engine's request, command, protocol and edge rows to the
    /// exported series. An edge's server is the server cgroup when that is exported, else
    /// what `cluster` names its address, else the address.
    ///
    /// A server-role request or command row of a pod's cgroup goes to the series of the
    /// Services the pod backs (`service`, resolved once per cgroup and tick from the
    /// cgroup's owner labels). When they change (the pod joins or leaves a Service), the
    /// row's growth goes to the new series from then on and the old one goes, as an edge's
    /// does when its server's name changes; every series still only grows.
    fn update_requests(
        &mut self,
        snapshot: &Snapshot,
        expired: &[u64],
        exported: &HashMap<u64, &CgroupSeries>,
        cluster: Option<&dyn ClusterNames>,
    ) {
        let services = RefCell::new(HashMap::<u64, Option<String>>::new());
        // Owner labels of every cgroup the engine reports (exported or not yet), so that a
        // series' key does not depend on the filters.
        let owners: HashMap<u64, &CgroupLabels> = snapshot
            .cgroups
            .iter()
            .filter_map(|c| Some((c.cgroup_id, c.attribution.as_ref()?)))
            .collect();
        let service_of = |cgroup_id: u64, role: &str| -> Option<String> {
            if role != "server" {
                return None;
            }
            let cluster = cluster?;
            services
                .borrow_mut()
                .entry(cgroup_id)
                .or_insert_with(|| {
                    let a = owners.get(&cgroup_id)?;
                    if a.namespace.is_empty() || a.pod.is_empty() {
                        return None;
                    }
                    let names = cluster.services_of_pod(&a.namespace, &a.pod);
                    (!names.is_empty()).then(|| names.join(","))
                })
                .clone()
        };
        let service_of = &service_of;
        let http = snapshot.http.requests.iter().map(|r| {
            let key = HttpKey::of(r);
            let target = HttpKey {
                service: service_of(r.cgroup_id, &r.role),
                ..key.clone()
            };
            (key, target, RequestCounts::of_http(r))
        });
        self.http.update(http, expired, |k| k.cgroup_id);
        let commands = [
            ("redis", &snapshot.redis.commands),
            ("mysql", &snapshot.mysql.queries),
            ("postgres", &snapshot.postgres.queries),
        ]
        .into_iter()
        .flat_map(|(protocol, rows)| {
            rows.iter().map(move |r| {
                let key = CommandKey::of(protocol, r);
                let target = CommandKey {
                    service: service_of(r.cgroup_id, &r.role),
                    ..key.clone()
                };
                (key, target, RequestCounts::of_command(r))
            })
        });
        self.commands.update(commands, expired, |k| k.cgroup_id);
        let protocols = snapshot.protocols.connections.iter().map(|r| {
            let key = ProtocolKey {
                cgroup_id: r.cgroup_id,
                protocol: r.protocol.clone(),
                role: r.role.clone(),
            };
            (key.clone(), key, RequestCounts::of_protocol(r))
        });
        self.protocols.update(protocols, expired, |k| k.cgroup_id);
        let edges = snapshot.edges.iter().map(|r| {
            let server = match r.server_cgroup_id {
                Some(id) if exported.contains_key(&id) => EdgeServer::Local(id),
                _ => r
                    .server
                    .parse::<SocketAddr>()
                    .ok()
                    .and_then(|a| cluster.and_then(|c| c.server(a.ip(), a.port())))
                    .map_or_else(|| EdgeServer::Address(r.server.clone()), EdgeServer::Named),
            };
            let key = EdgeKey {
                client_cgroup_id: r.client_cgroup_id,
                server,
                protocol: r.protocol.clone().unwrap_or_default(),
            };
            (
                (r.client_cgroup_id, r.server.clone()),
                key,
                RequestCounts::of_edge(r),
            )
        });
        self.edges.update(edges, expired, |k| k.client_cgroup_id);
    }

    /// Adds the growth of the engine's DNS rows to the exported series: rows of the
    /// `max_qnames` qnames with the most queries (ties by name) to their own, the others to
    /// qname "other". A qname that leaves the top N loses its series (its later queries
    /// count under "other"); one that enters starts a series from zero. Every series only
    /// grows, and their sum is every query once. State is bounded by the engine's rows
    /// plus N qnames' series.
    fn update_dns(&mut self, snapshot: &Snapshot, expired: &[u64], max_qnames: usize) {
        let rows = &snapshot.dns.queries;
        let mut per_qname: HashMap<&str, u64> = HashMap::new();
        for r in rows.iter().filter(|r| r.qname != OTHER_QNAME) {
            let n = per_qname.entry(r.qname.as_str()).or_default();
            *n = n.saturating_add(r.count);
        }
        let mut ranked: Vec<(&str, u64)> = per_qname.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top: HashSet<&str> = ranked.iter().take(max_qnames).map(|&(q, _)| q).collect();
        let mut seen = HashMap::with_capacity(rows.len());
        for r in rows {
            let key = DnsKey::of(r);
            let now = DnsCounts::of(r);
            let grew = match self.dns_seen.get(&key) {
                Some(before) => now.since(before),
                None => now.clone(),
            };
            let mut target = key.clone();
            if !top.contains(r.qname.as_str()) {
                target.qname = OTHER_QNAME.to_string();
                self.dns_other_requests = self.dns_other_requests.saturating_add(grew.count);
            }
            self.dns_series.entry(target).or_default().add(&grew);
            seen.insert(key, now);
        }
        self.dns_seen = seen;
        self.dns_series.retain(|k, _| {
            (k.qname == OTHER_QNAME || top.contains(k.qname.as_str()))
                && !expired.contains(&k.cgroup_id)
        });
    }

    fn top_connections(
        &mut self,
        snapshot: &Snapshot,
        tree: &CgroupTree,
        now_ms: u64,
        settings: &ExportSettings,
    ) -> Vec<ConnectionRow> {
        let n = settings.top_connections;
        let by_size = |a: &(u64, ConnectionRow), b: &(u64, ConnectionRow)| {
            connection_bytes(&b.1)
                .cmp(&connection_bytes(&a.1))
                .then(b.0.cmp(&a.0))
        };
        // This tick's closed connections: only its N largest can ever make the top N.
        let mut fresh: Vec<(u64, ConnectionRow)> = snapshot
            .tcp
            .connections
            .iter()
            .filter(|c| c.state == "CLOSE" && connection_bytes(c) > 0)
            .map(|c| (now_ms, c.clone()))
            .collect();
        fresh.sort_by(by_size);
        fresh.truncate(n);
        self.recent.extend(fresh);
        self.recent
            .retain(|(t, _)| now_ms.saturating_sub(*t) <= settings.connection_window_ms);
        self.recent.sort_by(by_size);
        // Keep a connection only while fewer than N larger ones expire no earlier than it:
        // otherwise it can never be in the top N again.
        let mut kept: Vec<(u64, ConnectionRow)> = Vec::new();
        for entry in std::mem::take(&mut self.recent) {
            let outlasting = kept.iter().filter(|(t, _)| *t >= entry.0).count();
            if outlasting < n {
                kept.push(entry);
            }
        }
        self.recent = kept;
        self.recent
            .iter()
            .map(|(_, c)| c)
            .filter(|c| settings.wants_cgroup(tree.paths.get(&c.cgroup_id).map(String::as_str)))
            .take(n)
            .cloned()
            .collect()
    }
}

/// A [`ClusterNames`] for tests: servers by "ip:port", Services by "namespace/pod".
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestCluster {
    pub servers: HashMap<String, ServerName>,
    pub services: HashMap<String, Vec<String>>,
}

#[cfg(test)]
impl TestCluster {
    pub fn serving(servers: &[(&str, &ServerName)]) -> Self {
        Self {
            servers: servers
                .iter()
                .map(|(a, n)| (a.to_string(), (*n).clone()))
                .collect(),
            ..Default::default()
        }
    }

    pub fn backing(services: &[(&str, &[&str])]) -> Self {
        Self {
            services: services
                .iter()
                .map(|(p, s)| (p.to_string(), s.iter().map(|s| s.to_string()).collect()))
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
impl ClusterNames for TestCluster {
    fn server(&self, ip: IpAddr, port: u16) -> Option<ServerName> {
        self.servers
            .get(&SocketAddr::new(ip, port).to_string())
            .cloned()
    }

    fn services_of_pod(&self, namespace: &str, pod: &str) -> Vec<String> {
        let mut names = self
            .services
            .get(&format!("{namespace}/{pod}"))
            .cloned()
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_abi::kind;

    fn tree(ids: &[(u64, &str)]) -> CgroupTree {
        CgroupTree {
            paths: ids.iter().map(|&(i, p)| (i, p.to_string())).collect(),
            complete: true,
        }
    }

    fn snapshot(cgroups: &[u64]) -> Snapshot {
        Snapshot {
            cgroups: cgroups
                .iter()
                .map(|&id| CgroupRow {
                    cgroup_id: id,
                    execs: id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ids(view: &ExportView) -> Vec<u64> {
        view.cgroups.iter().map(|c| c.row.cgroup_id).collect()
    }

    #[test]
    fn gone_cgroups_stay_for_the_grace_period_then_are_forgotten() {
        let settings = ExportSettings {
            cgroup_grace_ms: 1000,
            ..Default::default()
        };
        let mut ex = Exporter::new();
        let mut snap = snapshot(&[0, 5, 6]);
        let both = tree(&[(5, "/a"), (6, "/b")]);
        snap.tcp.connections = vec![ConnectionRow {
            cgroup_id: 6,
            state: "CLOSE".into(),
            bytes_sent: Some(10),
            ..Default::default()
        }];
        let (view, forget) = ex.update(&snap, &both, 0, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
        assert_eq!(view.connections.len(), 1);
        snap.tcp.connections.clear();
        assert_eq!(view.cgroups[1].path.as_deref(), Some("/a"));
        // 6 disappears at t=100: kept with no path until t=1100.
        let only5 = tree(&[(5, "/a")]);
        let (view, forget) = ex.update(&snap, &only5, 100, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
        assert_eq!(view.cgroups[2].path, None);
        let (view, forget) = ex.update(&snap, &only5, 1099, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
        let (view, forget) = ex.update(&snap, &only5, 1100, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5], vec![6]));
        assert!(view.connections.is_empty(), "its connections go with it");
        // A cgroup that comes back (or an id reused) within the grace period starts over.
        let (_, _) = ex.update(&snap, &only5, 1200, &settings, AgentMeta::default());
        let (view, forget) = ex.update(&snap, &both, 1300, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
    }

    #[test]
    fn nothing_is_gone_when_the_tree_could_not_be_read() {
        let settings = ExportSettings {
            cgroup_grace_ms: 0,
            ..Default::default()
        };
        let mut ex = Exporter::new();
        let unknown = CgroupTree::default();
        let (view, forget) = ex.update(
            &snapshot(&[5]),
            &unknown,
            10,
            &settings,
            AgentMeta::default(),
        );
        assert_eq!((ids(&view), forget), (vec![5], vec![]));
    }

    #[test]
    fn filters_by_cgroup_path_and_device_name() {
        let settings = ExportSettings {
            include_cgroups: vec!["/system.slice".into()],
            exclude_cgroups: vec!["/system.slice/noisy.service/".into()],
            exclude_devices: vec!["loop".into()],
            ..Default::default()
        };
        assert!(settings.wants_cgroup(Some("/system.slice")));
        assert!(settings.wants_cgroup(Some("/system.slice/a.service")));
        assert!(!settings.wants_cgroup(Some("/system.slicex")));
        assert!(!settings.wants_cgroup(Some("/system.slice/noisy.service")));
        assert!(!settings.wants_cgroup(Some("/system.slice/noisy.service/x")));
        assert!(!settings.wants_cgroup(None));
        let all = ExportSettings::default();
        assert!(all.wants_cgroup(None) && all.wants_cgroup(Some("/")));
        let dev = |name: &str| DeviceRow {
            dev: "7:0".into(),
            name: name.into(),
            ..Default::default()
        };
        assert!(!settings.wants_device(&dev("loop0")));
        assert!(settings.wants_device(&dev("sda")));
        assert!(settings.wants_device(&dev("")));
    }

    fn conn(sport: u16, bytes: u64) -> ConnectionRow {
        ConnectionRow {
            sport,
            state: "CLOSE".into(),
            bytes_sent: Some(bytes),
            bytes_received: Some(0),
            ..Default::default()
        }
    }

    fn with_conns(conns: Vec<ConnectionRow>) -> Snapshot {
        let mut s = Snapshot::default();
        s.tcp.connections = conns;
        s
    }

    fn ports(view: &ExportView) -> Vec<u16> {
        view.connections.iter().map(|c| c.sport).collect()
    }

    #[test]
    fn top_connections_over_a_sliding_window() {
        let settings = ExportSettings {
            top_connections: 2,
            connection_window_ms: 1000,
            ..Default::default()
        };
        let t = CgroupTree::default();
        let mut ex = Exporter::new();
        let m = AgentMeta::default;
        // Open connections and zero-byte ones never count.
        let mut open = conn(9, 1 << 40);
        open.state = "ESTABLISHED".into();
        open.bytes_sent = None;
        let s = with_conns(vec![
            conn(1, 100),
            conn(2, 300),
            conn(3, 200),
            open,
            conn(4, 0),
        ]);
        let (v, _) = ex.update(&s, &t, 0, &settings, m());
        assert_eq!(ports(&v), [2, 3]);
        // Later, smaller connections wait behind the larger ones until those expire.
        let (v, _) = ex.update(
            &with_conns(vec![conn(5, 50), conn(6, 60)]),
            &t,
            500,
            &settings,
            m(),
        );
        assert_eq!(ports(&v), [2, 3]);
        let (v, _) = ex.update(&with_conns(vec![]), &t, 1001, &settings, m());
        assert_eq!(ports(&v), [6, 5]);
        let (v, _) = ex.update(&with_conns(vec![conn(7, 55)]), &t, 1200, &settings, m());
        assert_eq!(ports(&v), [6, 7]);
        let (v, _) = ex.update(&with_conns(vec![]), &t, 5000, &settings, m());
        assert!(v.connections.is_empty());
        // Memory stays bounded whatever the churn.
        for tick in 0..100u64 {
            let burst = (0..500)
                .map(|i| conn(i as u16, 1 + (i * 7919) % 1000))
                .collect();
            ex.update(&with_conns(burst), &t, 10_000 + tick * 10, &settings, m());
        }
        assert!(ex.recent.len() <= 2 * 101, "{}", ex.recent.len());
    }

    #[test]
    fn signals_select_record_kinds_and_fidelity_names() {
        let s = Signals {
            process: false,
            tcp: true,
            block: false,
            socket_io: false,
        };
        assert!(!s.wants_kind(kind::EXEC) && !s.wants_kind(kind::EXIT));
        assert!(s.wants_kind(kind::TCP_STATE) && s.wants_kind(kind::TCP_RESET_RECEIVED));
        assert!(!s.wants_kind(kind::BLOCK_COMPLETE));
        assert!(s.wants_kind(999));
        assert!(s.wants_signal("tcp_close_stats") && !s.wants_signal("block"));
        assert!(s.wants_signal("tcp_resets") && !s.wants_signal("process"));
        assert!(s.wants_signal("sched"));
        // Every kind of the table belongs to exactly the family its signal names.
        for k in &event_abi::KINDS {
            assert_eq!(s.wants_kind(k.kind), s.wants(k.signal), "{}", k.name);
        }
        assert!(!s.wants_kind(kind::SOCK_IO) && !s.wants_signal("socket_io"));
        assert!(!s.all() && Signals::default().all());
    }

    #[test]
    fn disabled_signals_make_the_backends_kinds_mask() {
        assert_eq!(Signals::default().kinds_mask(), None);
        let no_sockets = Signals {
            socket_io: false,
            ..Signals::default()
        };
        let mask = no_sockets.kinds_mask().unwrap();
        assert_eq!(mask & (1 << kind::SOCK_IO), 0);
        for k in &event_abi::KINDS {
            assert_eq!(
                mask & (1 << k.kind) != 0,
                k.kind != kind::SOCK_IO,
                "{}",
                k.name
            );
        }
        let only_block = Signals {
            process: false,
            tcp: false,
            block: true,
            socket_io: false,
        };
        assert_eq!(
            only_block.kinds_mask(),
            Some(1 << kind::BLOCK_QUEUE | 1 << kind::BLOCK_ISSUE | 1 << kind::BLOCK_COMPLETE)
        );
    }

    fn dns_row(cgroup_id: u64, qname: &str, count: u64) -> DnsRow {
        let mut buckets = vec![0; LATENCY_BUCKETS_NS.len() + 1];
        buckets[2] = count;
        DnsRow {
            role: "client".into(),
            server: "10.0.0.2:53".into(),
            qname: qname.into(),
            qtype: "A".into(),
            rcode: "NOERROR".into(),
            count,
            cgroup_id,
            latency_sum_ns: count * 40_000,
            latency_buckets: buckets,
            ..Default::default()
        }
    }

    fn dns_view(view: &ExportView) -> Vec<(String, u64, u64)> {
        view.dns
            .iter()
            .map(|s| (s.key.qname.clone(), s.counts.count, s.counts.answered()))
            .collect()
    }

    #[test]
    fn dns_qnames_are_bounded_and_every_series_only_grows() {
        let settings = ExportSettings {
            dns_max_qnames: 2,
            ..Default::default()
        };
        let t = tree(&[(5, "/a")]);
        let m = AgentMeta::default;
        let mut ex = Exporter::new();
        let mut s = snapshot(&[5]);
        s.dns.queries = vec![dns_row(5, "a", 5), dns_row(5, "b", 3), dns_row(5, "c", 1)];
        let (v, _) = ex.update(&s, &t, 0, &settings, m());
        let row = |q: &str, n, a| (q.to_string(), n, a);
        assert_eq!(
            dns_view(&v),
            [row("a", 5, 5), row("b", 3, 3), row("other", 1, 1)]
        );
        assert_eq!(v.dns_other_requests, 1);
        // c overtakes b: b's series goes, c's starts from zero, b's later queries (and
        // none of its earlier ones) count under "other", which never goes back.
        s.dns.queries = vec![dns_row(5, "a", 5), dns_row(5, "b", 4), dns_row(5, "c", 9)];
        let (v, _) = ex.update(&s, &t, 1, &settings, m());
        assert_eq!(
            dns_view(&v),
            [row("a", 5, 5), row("c", 8, 8), row("other", 2, 2)]
        );
        assert_eq!(v.dns_other_requests, 2);
        // Every query once: b's first 3 went with its series, c's first 1 is in "other".
        let total: u64 = v.dns.iter().map(|d| d.counts.count).sum();
        assert_eq!(total + 3, 5 + 4 + 9);
        // Series of cgroups not exported are left out; of expired ones, forgotten.
        let hidden = ExportSettings {
            exclude_cgroups: vec!["/a".into()],
            ..settings.clone()
        };
        let (v, _) = ex.update(&s, &t, 2, &hidden, m());
        assert!(v.dns.is_empty());
        let gone = ExportSettings {
            cgroup_grace_ms: 0,
            ..settings.clone()
        };
        let (_, forget) = ex.update(&s, &tree(&[]), 3, &gone, m());
        assert_eq!(forget, [5]);
        assert!(ex.dns_series.is_empty());
        // The engine forgot its rows: state follows.
        ex.update(&snapshot(&[]), &t, 4, &settings, m());
        assert!(ex.dns_seen.is_empty() && ex.dns_series.is_empty());
    }

    #[test]
    fn modes_list_every_signal_and_the_disabled_ones() {
        let statuses = [SignalStatus {
            signal: Signal::Block,
            tracepoints: vec![],
            status: ksight_engine::signals::Fidelity::Degraded("x".into()),
        }];
        let off = Signals {
            tcp: false,
            socket_io: false,
            ..Signals::default()
        };
        let m = off.modes(&statuses);
        assert_eq!(m.len(), Signal::ALL.len());
        assert_eq!(m[0], (Signal::Process, Mode::Unavailable));
        assert!(
            m.iter()
                .filter(|(s, _)| s.family() == Family::Tcp)
                .all(|(_, m)| *m == Mode::Disabled)
        );
        assert!(m.contains(&(Signal::Block, Mode::Degraded)));
        assert_eq!(m.last(), Some(&(Signal::SocketIo, Mode::Disabled)));
    }

    fn http_row(cgroup_id: u64, route: &str, count: u64) -> HttpRow {
        let mut buckets = vec![0; LATENCY_BUCKETS_NS.len() + 1];
        buckets[4] = count;
        HttpRow {
            protocol: "http".into(),
            role: "server".into(),
            method: "GET".into(),
            route: route.into(),
            status: 200,
            count,
            cgroup_id,
            latency_sum_ns: count * 200_000,
            latency_buckets: buckets,
            ..Default::default()
        }
    }

    fn redis_row(count: u64, codes: &[(&str, u64)]) -> CommandRow {
        CommandRow {
            role: "client".into(),
            command: "GET".into(),
            count,
            errors: codes.iter().map(|c| c.1).sum(),
            error_codes: codes.iter().map(|&(c, n)| (c.to_string(), n)).collect(),
            peer: Some("10.0.0.5:6379".into()),
            cgroup_id: 5,
            ..Default::default()
        }
    }

    #[test]
    fn request_series_only_grow_and_leave_with_their_cgroup() {
        let settings = ExportSettings {
            cgroup_grace_ms: 0,
            ..Default::default()
        };
        let t = tree(&[(5, "/a"), (6, "/b")]);
        let m = AgentMeta::default;
        let mut ex = Exporter::new();
        let mut s = snapshot(&[5, 6]);
        s.cgroups[1].attribution = Some(CgroupLabels {
            ignored: true,
            ..Default::default()
        });
        s.http.requests = vec![http_row(5, "/a", 3), http_row(6, "/b", 2)];
        s.redis.commands = vec![redis_row(4, &[("ERR", 1)])];
        s.protocols.connections = vec![ProtocolConnectionRow {
            protocol: "redis".into(),
            role: "client".into(),
            cgroup_id: 5,
            connections: 1,
            bytes_sent: 10,
            bytes_received: 20,
        }];
        let (v, _) = ex.update(&s, &t, 0, &settings, m());
        // The ignored cgroup's requests are not exported.
        let http: Vec<(&str, u64, u64)> = v
            .http
            .iter()
            .map(|h| (h.key.route.as_str(), h.counts.count, h.counts.timed()))
            .collect();
        assert_eq!(http, [("/a", 3, 3)]);
        assert_eq!(v.commands[0].key.protocol, "redis");
        assert_eq!(v.commands[0].counts.error_codes, [("ERR".into(), 1)].into());
        assert_eq!(v.protocols[0].counts.bytes_received, 20);
        assert!(v.totals.http.requests.is_empty() && v.totals.redis.commands.is_empty());
        // Growth adds up; a row that went back (the engine started it over) adds all of it.
        s.http.requests[0] = http_row(5, "/a", 5);
        s.redis.commands = vec![redis_row(6, &[("ERR", 2), ("WRONGTYPE", 1)])];
        let (v, _) = ex.update(&s, &t, 1, &settings, m());
        assert_eq!(
            (v.http[0].counts.count, v.http[0].counts.latency_sum_ns),
            (5, 1_000_000)
        );
        let codes = &v.commands[0].counts.error_codes;
        assert_eq!(codes, &[("ERR".into(), 2), ("WRONGTYPE".into(), 1)].into());
        s.http.requests[0] = http_row(5, "/a", 1);
        let (v, _) = ex.update(&s, &t, 2, &settings, m());
        assert_eq!(v.http[0].counts.count, 6);
        // The cgroup is gone: its series go with it.
        let (_, forget) = ex.update(&s, &tree(&[(6, "/b")]), 3, &settings, m());
        assert_eq!(forget, [5]);
        assert!(ex.http.series.keys().all(|k| k.cgroup_id != 5));
        assert!(ex.commands.series.is_empty() && ex.protocols.series.is_empty());
    }

    #[test]
    fn edges_are_named_by_server_cgroup_resolver_or_address() {
        let t = tree(&[(5, "/a"), (6, "/b")]);
        let m = AgentMeta::default;
        let mut ex = Exporter::new();
        let mut s = snapshot(&[5, 6]);
        let edge = |server: &str, server_cgroup_id, requests| EdgeRow {
            client_cgroup_id: 5,
            server: server.into(),
            server_cgroup_id,
            protocol: Some("http".into()),
            requests,
            ..Default::default()
        };
        s.edges = vec![
            edge("10.1.0.6:80", Some(6), 1),
            edge("10.96.0.10:80", None, 2),
            edge("10.1.0.9:80", None, 3),
        ];
        let edges = |v: &ExportView| -> Vec<(EdgeServer, u64)> {
            v.edges
                .iter()
                .map(|e| (e.key.server.clone(), e.counts.count))
                .collect()
        };
        let addr = |a: &str| EdgeServer::Address(a.into());
        // No resolver: addresses, but the local server cgroup by its cgroup.
        let (v, _) = ex.update(&s, &t, 0, &ExportSettings::default(), m());
        assert_eq!(
            edges(&v),
            [
                (EdgeServer::Local(6), 1),
                (addr("10.1.0.9:80"), 3),
                (addr("10.96.0.10:80"), 2)
            ]
        );
        // The Service and one of its pods get names: both in one series, from their
        // growth on (the address series go).
        let api = ServerName {
            namespace: "shop".into(),
            service: Some("api".into()),
            pod: None,
        };
        let names = TestCluster::serving(&[("10.96.0.10:80", &api), ("10.1.0.9:80", &api)]);
        s.edges[1].requests = 4;
        s.edges[2].requests = 7;
        // The server cgroup filtered out: it is not named after it.
        let hide_b = ExportSettings {
            exclude_cgroups: vec!["/b".into()],
            ..Default::default()
        };
        let (v, _) = ex.update_resolving(&s, &t, 1, &hide_b, m(), Some(&names));
        assert_eq!(
            edges(&v),
            [
                (EdgeServer::Named(api.clone()), 6),
                (addr("10.1.0.6:80"), 0)
            ]
        );
        assert!(v.edges.iter().all(|e| e.server.is_none()));
        assert!(v.totals.edges.is_empty());
        // Edges of a client cgroup that is not exported are left out.
        let hide_a = ExportSettings {
            exclude_cgroups: vec!["/a".into()],
            ..Default::default()
        };
        let (v, _) = ex.update_resolving(&s, &t, 2, &hide_a, m(), Some(&names));
        assert!(v.edges.is_empty());
    }

    #[test]
    fn server_series_of_a_pod_carry_its_services_and_move_when_they_change() {
        let t = tree(&[(5, "/a")]);
        let m = AgentMeta::default;
        let settings = ExportSettings::default();
        let mut ex = Exporter::new();
        let mut s = snapshot(&[5]);
        s.cgroups[0].attribution = Some(CgroupLabels {
            namespace: "shop".into(),
            pod: "web-1".into(),
            ..Default::default()
        });
        let mut client = http_row(5, "/c", 1);
        client.role = "client".into();
        s.http.requests = vec![http_row(5, "/a", 3), client];
        let mut server_cmd = redis_row(2, &[]);
        server_cmd.role = "server".into();
        s.redis.commands = vec![server_cmd];
        let http = |v: &ExportView| -> Vec<(String, Option<String>, u64)> {
            v.http
                .iter()
                .map(|h| (h.key.route.clone(), h.key.service.clone(), h.counts.count))
                .collect()
        };
        let web = TestCluster::backing(&[("shop/web-1", &["web"])]);
        let (v, _) = ex.update_resolving(&s, &t, 0, &settings, m(), Some(&web));
        assert_eq!(
            http(&v),
            [("/c".into(), None, 1), ("/a".into(), Some("web".into()), 3)]
        );
        assert_eq!(v.commands[0].key.service.as_deref(), Some("web"));
        // The pod joins a second Service: its series move, from their growth on.
        s.http.requests[0] = http_row(5, "/a", 5);
        let both = TestCluster::backing(&[("shop/web-1", &["web", "api"])]);
        let (v, _) = ex.update_resolving(&s, &t, 1, &settings, m(), Some(&both));
        assert_eq!(
            http(&v),
            [
                ("/c".into(), None, 1),
                ("/a".into(), Some("api,web".into()), 2)
            ]
        );
        // Without cluster names, no Service.
        let (v, _) = ex.update(&s, &t, 2, &settings, m());
        assert!(v.http.iter().all(|h| h.key.service.is_none()));
    }
}
