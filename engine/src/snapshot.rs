//! The aggregates as users and scripts see them. Field names here are the `--json`
//! contract documented in the README: rename nothing without a major version bump.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    pub process: ProcessSummary,
    pub tcp: TcpSummary,
    pub block: BlockSummary,
    pub cgroups: Vec<CgroupRow>,
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
    /// Sum over closed connections of bytes sent and acknowledged.
    pub bytes_sent: u64,
    /// Sum over closed connections of bytes received.
    pub bytes_received: u64,
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
    /// Counters read at close; null for connections still open (they are read only then).
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub segs_in: Option<u32>,
    pub segs_out: Option<u32>,
    pub duration_us: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub srtt_us: Option<u32>,
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
}
