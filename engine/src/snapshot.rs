//! The aggregates as users and scripts see them. Field names here are the `--json`
//! contract documented in the README: rename nothing without a major version bump.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Upper bounds (inclusive) of the block latency buckets in [`DeviceRow::latency_buckets`]:
/// 10 µs to 10 s, in the 1-2.5-5 steps Prometheus histograms use.
pub const LATENCY_BUCKETS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Which backend produced the events ("ebpf", "kmod"; a replay reports the recorded one).
    pub backend: String,
    /// Span of event time covered, in seconds.
    pub duration_s: f64,
    /// Records received and decoded (for `top`, in this interval).
    pub events: u64,
    /// Events the kernel side could not deliver (buffers full). Never silently zero: a
    /// backend that cannot count losses reports that in `signals`.
    pub lost_events: u64,
    /// `lost_events` by CPU.
    pub lost_events_per_cpu: Vec<u64>,
    /// Records that failed validation (bad kind or size) and were skipped.
    pub malformed_records: u64,
    /// Records that arrived after newer ones had been aggregated (see the README's
    /// "Order of events"); aggregated anyway, counted here.
    #[serde(default)]
    pub late_events: u64,
    pub process: ProcessSummary,
    pub tcp: TcpSummary,
    /// UDP traffic, from the socket I/O signal.
    #[serde(default)]
    pub udp: UdpSummary,
    /// DNS queries and answers parsed from socket I/O payload.
    #[serde(default)]
    pub dns: DnsSummary,
    /// Health of the socket I/O signal itself.
    #[serde(default)]
    pub socket_io: SocketIoSummary,
    /// Requests parsed from socket payload (HTTP/1, HTTP/2, gRPC), per row of
    /// (protocol, role, method, route, status, peer, host, cgroup).
    #[serde(default)]
    pub http: HttpSummary,
    #[serde(default)]
    pub redis: RedisSummary,
    #[serde(default)]
    pub mysql: QuerySummary,
    #[serde(default)]
    pub postgres: QuerySummary,
    /// Connections and bytes per detected protocol, and the parsers' health.
    #[serde(default)]
    pub protocols: ProtocolsSummary,
    /// The service map: client cgroup → server address (and its cgroup when on this host).
    #[serde(default)]
    pub edges: Vec<EdgeRow>,
    pub block: BlockSummary,
    pub cgroups: Vec<CgroupRow>,
    /// `cgroups` summed by owner (container, pod, unit or path) once attributed; empty
    /// until then. Each row's `cgroup_id` is the owner's outermost cgroup.
    #[serde(default)]
    pub containers: Vec<CgroupRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub execs: u64,
    /// New processes (fork/clone without CLONE_THREAD).
    pub forks: u64,
    /// New threads.
    pub threads: u64,
    /// Processes whose last thread exited.
    pub exits: u64,
    /// Exit code → processes. A process killed by signal N counts as 128+N, as shells report.
    pub exit_codes: BTreeMap<String, u64>,
    pub processes: Vec<ProcessRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    pub filename: Option<String>,
    pub cgroup_id: u64,
    pub execs: u64,
    pub forks: u64,
    pub exit_code: Option<i32>,
    pub tcp_bytes_sent: u64,
    pub tcp_bytes_received: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpSummary {
    /// Active opens that reached ESTABLISHED.
    pub connects: u64,
    /// Active opens that closed before ESTABLISHED (refused, timed out).
    pub connect_failures: u64,
    /// Passive opens that reached ESTABLISHED.
    pub accepts: u64,
    /// Established connections that reached CLOSE.
    pub closes: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Payload bytes sent: with socket I/O, as the calls return (live), topped up at close
    /// to the kernel's count where that is larger; without it, the kernel's count at close.
    pub bytes_sent: u64,
    /// Payload bytes received, counted the same way.
    pub bytes_received: u64,
    /// Closed connections, seen from their start, whose kernel byte counters differ from
    /// the sum of their calls (the rows show both).
    #[serde(default)]
    pub byte_mismatches: u64,
    pub connections: Vec<ConnectionRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    /// "active" (connect) or "passive" (accept).
    pub role: String,
    /// Owning process; 0 when it never acted on the socket in process context while captured.
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// Last state seen; "CLOSE" for closed connections.
    pub state: String,
    /// Payload bytes: the kernel's counters once closed; while open, the sum of the
    /// socket calls so far (null without the socket I/O signal).
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    /// Sums of the socket calls seen on this connection (null without socket I/O).
    #[serde(default)]
    pub call_bytes_sent: Option<u64>,
    #[serde(default)]
    pub call_bytes_received: Option<u64>,
    /// The connection was open before capture started: call sums count since then.
    #[serde(default)]
    pub since_start: bool,
    pub segs_in: Option<u32>,
    pub segs_out: Option<u32>,
    pub duration_us: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub srtt_us: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpSummary {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// One row per (local address, peer, process, cgroup), busiest first.
    pub flows: Vec<UdpFlowRow>,
    /// Datagrams of flows beyond the aggregator's bound, counted in the totals only.
    #[serde(default)]
    pub unlisted_datagrams: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpFlowRow {
    /// Local address and port.
    pub saddr: String,
    pub sport: u16,
    /// Peer address and port (from the call's address argument on unconnected sockets).
    pub daddr: String,
    pub dport: u16,
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsSummary {
    /// One row per (role, server, qname, qtype, rcode, cgroup).
    pub queries: Vec<DnsRow>,
    /// Packets on a DNS port, or that looked like DNS, that failed to parse.
    #[serde(default)]
    pub malformed: u64,
    /// Queries whose qname was folded into "other" (the per-interval bound on qnames).
    #[serde(default)]
    pub other_qnames: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsRow {
    /// "client" (this host asked) or "server" (this host answered).
    pub role: String,
    /// The server, "addr:port".
    pub server: String,
    pub qname: String,
    /// "A", "AAAA", … or "TYPE<n>".
    pub qtype: String,
    /// "NOERROR", "NXDOMAIN", "SERVFAIL", … ; "TIMEOUT" for queries never answered.
    pub rcode: String,
    /// Queries in this row (answered with `rcode`, or timed out).
    pub count: u64,
    /// Query-to-answer latency of the answered ones.
    pub latency_us: Latency,
    /// Queries that got no answer in time (their row's rcode is "TIMEOUT").
    pub timeouts: u64,
    /// The asking (client) or answering (server) task's cgroup.
    #[serde(default)]
    pub cgroup_id: u64,
    /// Exact sum of the latencies, ns, and answers per [`LATENCY_BUCKETS_NS`] bucket, as in
    /// [`DeviceRow`].
    #[serde(default)]
    pub latency_sum_ns: u64,
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
}

/// The socket I/O signal's own health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketIoSummary {
    /// Socket I/O records aggregated.
    pub calls: u64,
    /// Payload bytes the records carried (at most the snaplen each).
    pub payload_bytes: u64,
    /// Messages of `sendmmsg`/`recvmmsg` calls beyond the per-call record bound: their
    /// bytes are missing from the live counts.
    pub unreported_msgs: u64,
    /// Calls whose payload could not be read from user memory.
    pub payload_faults: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpSummary {
    pub requests: Vec<HttpRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRow {
    /// "http" (HTTP/1.x), "http2" or "grpc".
    pub protocol: String,
    /// "client" (this host sent the request) or "server" (it received it).
    pub role: String,
    /// GET, POST, … ("OTHER" outside the known set).
    pub method: String,
    /// The request path, normalised (query dropped, ids as `*`); "other" past the bound on
    /// routes per service.
    pub route: String,
    /// The response's status (0 for a gRPC call or an HTTP/2 stream reset with none).
    pub status: u16,
    /// gRPC calls: the `grpc-status` of the response.
    pub grpc_status: Option<String>,
    pub count: u64,
    /// Responses with status ≥ 500 or a non-zero `grpc-status`.
    pub errors: u64,
    /// Request-to-response latency.
    pub latency_us: Latency,
    /// Client rows: the server, "addr:port". Server rows: none.
    pub peer: Option<String>,
    /// `Host` or `:authority` as sent, lowercase.
    pub host: Option<String>,
    /// The socket's cgroup.
    pub cgroup_id: u64,
    /// As in [`DeviceRow`].
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RedisSummary {
    pub commands: Vec<CommandRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuerySummary {
    pub queries: Vec<CommandRow>,
}

/// Redis commands, MySQL and PostgreSQL statements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandRow {
    pub role: String,
    /// The Redis command, or the statement's verb (`SELECT`, `INSERT`, …; `PREPARE` for a
    /// MySQL binary-protocol prepare; an executed prepared statement under its verb).
    pub command: String,
    pub count: u64,
    pub errors: u64,
    /// Errors by code: the Redis error's first word, the MySQL error number, the SQLSTATE.
    pub error_codes: BTreeMap<String, u64>,
    pub latency_us: Latency,
    pub peer: Option<String>,
    pub cgroup_id: u64,
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolsSummary {
    pub connections: Vec<ProtocolConnectionRow>,
    /// Streams found malformed and skipped.
    pub malformed: u64,
    /// Streams whose framing was hidden in bytes past the snaplen (e.g. a result set of
    /// many small rows), picked up again at a later call.
    #[serde(default)]
    pub framing_gaps: u64,
    /// Messages of connections met mid-stream that could not be parsed, counted instead.
    pub mid_stream: u64,
    /// Responses with no request waiting.
    pub unmatched_responses: u64,
    /// Requests left without a response (at close, or past the bound on pipelining).
    pub unanswered: u64,
    /// Requests whose route was folded into "other" (the per-service bound on routes).
    pub other_routes: u64,
    /// Requests past the bound on rows, counted only here.
    pub unlisted_requests: u64,
    /// Connections not parsed because the bound on tracked connections was reached.
    pub untracked_connections: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolConnectionRow {
    pub protocol: String,
    pub role: String,
    pub cgroup_id: u64,
    /// Connections on which the protocol was detected in this interval.
    pub connections: u64,
    /// Bytes of their socket calls from detection on.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    pub client_cgroup_id: u64,
    /// "addr:port" as the client connected to it (a Kubernetes Service's ClusterIP before
    /// DNAT).
    pub server: String,
    /// The server socket's cgroup when it is on this host.
    pub server_cgroup_id: Option<u64>,
    pub protocol: Option<String>,
    /// Connections established in this interval.
    pub connections: u64,
    pub requests: u64,
    pub errors: u64,
    /// Seen from the client.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub latency_us: Latency,
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockSummary {
    pub devices: Vec<DeviceRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceRow {
    /// "major:minor".
    pub dev: String,
    pub name: String,
    pub reads: u64,
    pub writes: u64,
    /// Flushes, discards and other requests.
    pub other: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub errors: u64,
    /// Queue-to-completion latency of completed requests.
    pub latency_us: Latency,
    /// Exact sum of those latencies, in nanoseconds.
    #[serde(default)]
    pub latency_sum_ns: u64,
    /// Requests per latency bucket (not cumulative): entry i counts latencies in
    /// (`LATENCY_BUCKETS_NS[i-1]`, `LATENCY_BUCKETS_NS[i]`]; the last entry those above
    /// the last bound. `LATENCY_BUCKETS_NS.len() + 1` entries; they sum to `latency_us.count`.
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupRow {
    pub cgroup_id: u64,
    pub execs: u64,
    pub forks: u64,
    pub exits: u64,
    pub tcp_connections: u64,
    pub tcp_bytes_sent: u64,
    pub tcp_bytes_received: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Exit code → processes of this cgroup that exited with it (as `process.exit_codes`).
    #[serde(default)]
    pub exit_codes: BTreeMap<String, u64>,
    /// The TCP counters of sockets created in this cgroup (as in `tcp`).
    #[serde(default)]
    pub tcp_connects: u64,
    #[serde(default)]
    pub tcp_connect_failures: u64,
    #[serde(default)]
    pub tcp_accepts: u64,
    #[serde(default)]
    pub tcp_retransmits: u64,
    #[serde(default)]
    pub tcp_resets_sent: u64,
    #[serde(default)]
    pub tcp_resets_received: u64,
    /// Completed block reads and writes this cgroup's tasks queued.
    #[serde(default)]
    pub block_reads: u64,
    #[serde(default)]
    pub block_writes: u64,
    /// UDP payload and datagrams this cgroup's tasks sent and received.
    #[serde(default)]
    pub udp_bytes_sent: u64,
    #[serde(default)]
    pub udp_bytes_received: u64,
    #[serde(default)]
    pub udp_datagrams_sent: u64,
    #[serde(default)]
    pub udp_datagrams_received: u64,
    /// Who the cgroup belongs to (container, pod, unit, path), when resolved.
    #[serde(default)]
    pub attribution: Option<CgroupLabels>,
}

impl CgroupRow {
    /// Adds another row's counters (not its id or attribution).
    pub fn add(&mut self, o: &CgroupRow) {
        self.execs += o.execs;
        self.forks += o.forks;
        self.exits += o.exits;
        self.tcp_connections += o.tcp_connections;
        self.tcp_bytes_sent += o.tcp_bytes_sent;
        self.tcp_bytes_received += o.tcp_bytes_received;
        self.block_read_bytes += o.block_read_bytes;
        self.block_write_bytes += o.block_write_bytes;
        for (code, n) in &o.exit_codes {
            *self.exit_codes.entry(code.clone()).or_default() += n;
        }
        self.tcp_connects += o.tcp_connects;
        self.tcp_connect_failures += o.tcp_connect_failures;
        self.tcp_accepts += o.tcp_accepts;
        self.tcp_retransmits += o.tcp_retransmits;
        self.tcp_resets_sent += o.tcp_resets_sent;
        self.tcp_resets_received += o.tcp_resets_received;
        self.block_reads += o.block_reads;
        self.block_writes += o.block_writes;
        self.udp_bytes_sent += o.udp_bytes_sent;
        self.udp_bytes_received += o.udp_bytes_received;
        self.udp_datagrams_sent += o.udp_datagrams_sent;
        self.udp_datagrams_received += o.udp_datagrams_received;
    }

    /// What this row counted since `earlier`, a cumulative row of the same cgroup
    /// (saturating: a counter that went back counted nothing). Keeps this row's id and
    /// attribution.
    pub fn since(&self, earlier: &CgroupRow) -> CgroupRow {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        CgroupRow {
            cgroup_id: self.cgroup_id,
            execs: d(self.execs, earlier.execs),
            forks: d(self.forks, earlier.forks),
            exits: d(self.exits, earlier.exits),
            tcp_connections: d(self.tcp_connections, earlier.tcp_connections),
            tcp_bytes_sent: d(self.tcp_bytes_sent, earlier.tcp_bytes_sent),
            tcp_bytes_received: d(self.tcp_bytes_received, earlier.tcp_bytes_received),
            block_read_bytes: d(self.block_read_bytes, earlier.block_read_bytes),
            block_write_bytes: d(self.block_write_bytes, earlier.block_write_bytes),
            exit_codes: counts_since(&self.exit_codes, &earlier.exit_codes),
            tcp_connects: d(self.tcp_connects, earlier.tcp_connects),
            tcp_connect_failures: d(self.tcp_connect_failures, earlier.tcp_connect_failures),
            tcp_accepts: d(self.tcp_accepts, earlier.tcp_accepts),
            tcp_retransmits: d(self.tcp_retransmits, earlier.tcp_retransmits),
            tcp_resets_sent: d(self.tcp_resets_sent, earlier.tcp_resets_sent),
            tcp_resets_received: d(self.tcp_resets_received, earlier.tcp_resets_received),
            block_reads: d(self.block_reads, earlier.block_reads),
            block_writes: d(self.block_writes, earlier.block_writes),
            udp_bytes_sent: d(self.udp_bytes_sent, earlier.udp_bytes_sent),
            udp_bytes_received: d(self.udp_bytes_received, earlier.udp_bytes_received),
            udp_datagrams_sent: d(self.udp_datagrams_sent, earlier.udp_datagrams_sent),
            udp_datagrams_received: d(self.udp_datagrams_received, earlier.udp_datagrams_received),
            attribution: self.attribution.clone(),
        }
    }

    /// Whether every counter is zero.
    pub fn is_quiet(&self) -> bool {
        *self
            == CgroupRow {
                cgroup_id: self.cgroup_id,
                attribution: self.attribution.clone(),
                ..CgroupRow::default()
            }
    }
}

/// The growth of each count of a map of counts (exit code → processes) since `earlier`;
/// codes that did not grow are left out.
pub fn counts_since(
    now: &BTreeMap<String, u64>,
    earlier: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, &n)| {
            (
                k.clone(),
                n.saturating_sub(earlier.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Who a cgroup belongs to. Empty strings are unknown or not applicable. Defined here,
/// with the rows that carry it; `ksight-attribution` resolves it (and re-exports it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLabels {
    /// Path under the cgroup v2 mount; empty when the cgroup was gone before it was seen.
    #[serde(default)]
    pub path: String,
    /// "docker", "containerd", "cri-o", "podman".
    #[serde(default)]
    pub runtime: String,
    #[serde(default)]
    pub container_id: String,
    /// Innermost systemd unit ("nginx.service", "session-3.scope").
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub pod_uid: String,
    /// Container name in the pod spec; empty for the pod's own cgroup and its sandbox.
    #[serde(default)]
    pub container: String,
    /// "Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob", "ReplicaSet".
    #[serde(default)]
    pub workload_kind: String,
    #[serde(default)]
    pub workload: String,
    /// Dropped by the filters or the `ksight.io/ignore` annotation.
    #[serde(default)]
    pub ignored: bool,
    /// A Kubernetes pod by its cgroup path, whose metadata has not arrived (yet).
    #[serde(default)]
    pub pending: bool,
}

impl CgroupLabels {
    /// The most specific name there is: `namespace/pod/container`, `runtime:id`, the
    /// systemd unit, or the path.
    pub fn display_name(&self) -> String {
        if !self.pod.is_empty() {
            let mut name = format!("{}/{}", self.namespace, self.pod);
            if !self.container.is_empty() {
                name.push('/');
                name.push_str(&self.container);
            }
            name
        } else if !self.container_id.is_empty() {
            let short: String = self.container_id.chars().take(12).collect();
            if self.pod_uid.is_empty() {
                format!("{}:{short}", self.runtime)
            } else {
                format!("pod {}:{}:{short}", self.pod_uid, self.runtime)
            }
        } else if !self.pod_uid.is_empty() {
            format!("pod {}", self.pod_uid)
        } else if !self.unit.is_empty() {
            self.unit.clone()
        } else if !self.path.is_empty() {
            self.path.clone()
        } else {
            "(unknown cgroup)".to_string()
        }
    }
}
