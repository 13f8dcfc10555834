//! Version 2 of the socket's snapshot payload: its own types, frozen with the version.
//!
//! These mirror the `--json` contract types ([`ksight_engine::snapshot`]) as they were when version
//! 2 was defined, field for field and in that order (bincode is not self-describing: the
//! order *is* the layout). They never change: a field the JSON contract gains later is not
//! carried by version 2 and reads as its default on the client; carrying it is a new
//! version (a `v3` module beside this one, served to clients that ask for it).
//! `testdata/agent-snapshot-v2.bin` pins the bytes.

use ksight_engine::snapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub agent_version: String,
    pub backend: String,
    pub backend_reason: String,
    pub fidelity_notes: Vec<String>,
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub backend: String,
    pub duration_s: f64,
    pub events: u64,
    pub lost_events: u64,
    pub lost_events_per_cpu: Vec<u64>,
    pub malformed_records: u64,
    pub process: ProcessSummary,
    pub tcp: TcpSummary,
    pub block: BlockSummary,
    pub cgroups: Vec<CgroupRow>,
    pub containers: Vec<CgroupRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub execs: u64,
    pub forks: u64,
    pub threads: u64,
    pub exits: u64,
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
    pub connects: u64,
    pub connect_failures: u64,
    pub accepts: u64,
    pub closes: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub connections: Vec<ConnectionRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub role: String,
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub state: String,
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
    pub dev: String,
    pub name: String,
    pub reads: u64,
    pub writes: u64,
    pub other: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub errors: u64,
    pub latency_us: Latency,
    pub latency_sum_ns: u64,
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
    pub exit_codes: BTreeMap<String, u64>,
    pub tcp_connects: u64,
    pub tcp_connect_failures: u64,
    pub tcp_accepts: u64,
    pub tcp_retransmits: u64,
    pub tcp_resets_sent: u64,
    pub tcp_resets_received: u64,
    pub block_reads: u64,
    pub block_writes: u64,
    pub attribution: Option<CgroupLabels>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupLabels {
    pub path: String,
    pub runtime: String,
    pub container_id: String,
    pub unit: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub workload_kind: String,
    pub workload: String,
    pub ignored: bool,
    pub pending: bool,
}

// From the JSON contract to the wire: every wire field named (the compiler checks this
// side); fields the contract has beyond version 2 are left behind.

impl From<&super::AgentSnapshot> for AgentSnapshot {
    fn from(a: &super::AgentSnapshot) -> Self {
        Self {
            agent_version: a.agent_version.clone(),
            backend: a.backend.clone(),
            backend_reason: a.backend_reason.clone(),
            fidelity_notes: a.fidelity_notes.clone(),
            snapshot: (&a.snapshot).into(),
        }
    }
}

impl From<&snapshot::Snapshot> for Snapshot {
    fn from(s: &snapshot::Snapshot) -> Self {
        Self {
            backend: s.backend.clone(),
            duration_s: s.duration_s,
            events: s.events,
            lost_events: s.lost_events,
            lost_events_per_cpu: s.lost_events_per_cpu.clone(),
            malformed_records: s.malformed_records,
            process: ProcessSummary {
                execs: s.process.execs,
                forks: s.process.forks,
                threads: s.process.threads,
                exits: s.process.exits,
                exit_codes: s.process.exit_codes.clone(),
                processes: s.process.processes.iter().map(Into::into).collect(),
            },
            tcp: TcpSummary {
                connects: s.tcp.connects,
                connect_failures: s.tcp.connect_failures,
                accepts: s.tcp.accepts,
                closes: s.tcp.closes,
                retransmits: s.tcp.retransmits,
                resets_sent: s.tcp.resets_sent,
                resets_received: s.tcp.resets_received,
                bytes_sent: s.tcp.bytes_sent,
                bytes_received: s.tcp.bytes_received,
                connections: s.tcp.connections.iter().map(Into::into).collect(),
            },
            block: BlockSummary {
                devices: s.block.devices.iter().map(Into::into).collect(),
            },
            cgroups: s.cgroups.iter().map(Into::into).collect(),
            containers: s.containers.iter().map(Into::into).collect(),
        }
    }
}

impl From<&snapshot::ProcessRow> for ProcessRow {
    fn from(r: &snapshot::ProcessRow) -> Self {
        Self {
            pid: r.pid,
            ppid: r.ppid,
            comm: r.comm.clone(),
            filename: r.filename.clone(),
            cgroup_id: r.cgroup_id,
            execs: r.execs,
            forks: r.forks,
            exit_code: r.exit_code,
            tcp_bytes_sent: r.tcp_bytes_sent,
            tcp_bytes_received: r.tcp_bytes_received,
            block_read_bytes: r.block_read_bytes,
            block_write_bytes: r.block_write_bytes,
        }
    }
}

impl From<&snapshot::ConnectionRow> for ConnectionRow {
    fn from(c: &snapshot::ConnectionRow) -> Self {
        Self {
            saddr: c.saddr.clone(),
            sport: c.sport,
            daddr: c.daddr.clone(),
            dport: c.dport,
            role: c.role.clone(),
            pid: c.pid,
            comm: c.comm.clone(),
            cgroup_id: c.cgroup_id,
            state: c.state.clone(),
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            segs_in: c.segs_in,
            segs_out: c.segs_out,
            duration_us: c.duration_us,
            retransmits: c.retransmits,
            resets_sent: c.resets_sent,
            resets_received: c.resets_received,
            srtt_us: c.srtt_us,
        }
    }
}

impl From<&snapshot::DeviceRow> for DeviceRow {
    fn from(d: &snapshot::DeviceRow) -> Self {
        Self {
            dev: d.dev.clone(),
            name: d.name.clone(),
            reads: d.reads,
            writes: d.writes,
            other: d.other,
            read_bytes: d.read_bytes,
            write_bytes: d.write_bytes,
            errors: d.errors,
            latency_us: Latency {
                count: d.latency_us.count,
                p50: d.latency_us.p50,
                p99: d.latency_us.p99,
                max: d.latency_us.max,
            },
            latency_sum_ns: d.latency_sum_ns,
            latency_buckets: d.latency_buckets.clone(),
        }
    }
}

impl From<&snapshot::CgroupRow> for CgroupRow {
    fn from(c: &snapshot::CgroupRow) -> Self {
        Self {
            cgroup_id: c.cgroup_id,
            execs: c.execs,
            forks: c.forks,
            exits: c.exits,
            tcp_connections: c.tcp_connections,
            tcp_bytes_sent: c.tcp_bytes_sent,
            tcp_bytes_received: c.tcp_bytes_received,
            block_read_bytes: c.block_read_bytes,
            block_write_bytes: c.block_write_bytes,
            exit_codes: c.exit_codes.clone(),
            tcp_connects: c.tcp_connects,
            tcp_connect_failures: c.tcp_connect_failures,
            tcp_accepts: c.tcp_accepts,
            tcp_retransmits: c.tcp_retransmits,
            tcp_resets_sent: c.tcp_resets_sent,
            tcp_resets_received: c.tcp_resets_received,
            block_reads: c.block_reads,
            block_writes: c.block_writes,
            attribution: c.attribution.as_ref().map(|a| CgroupLabels {
                path: a.path.clone(),
                runtime: a.runtime.clone(),
                container_id: a.container_id.clone(),
                unit: a.unit.clone(),
                namespace: a.namespace.clone(),
                pod: a.pod.clone(),
                pod_uid: a.pod_uid.clone(),
                container: a.container.clone(),
                workload_kind: a.workload_kind.clone(),
                workload: a.workload.clone(),
                ignored: a.ignored,
                pending: a.pending,
            }),
        }
    }
}

// From the wire to the JSON contract: fields the contract gained after version 2 take
// their defaults (hence `..Default::default()` even where nothing is left over today).

#[allow(clippy::needless_update)]
impl From<AgentSnapshot> for super::AgentSnapshot {
    fn from(a: AgentSnapshot) -> Self {
        Self {
            agent_version: a.agent_version,
            backend: a.backend,
            backend_reason: a.backend_reason,
            fidelity_notes: a.fidelity_notes,
            snapshot: a.snapshot.into(),
            ..Default::default()
        }
    }
}

#[allow(clippy::needless_update)]
impl From<Snapshot> for snapshot::Snapshot {
    fn from(s: Snapshot) -> Self {
        let (p, t) = (s.process, s.tcp);
        Self {
            backend: s.backend,
            duration_s: s.duration_s,
            events: s.events,
            lost_events: s.lost_events,
            lost_events_per_cpu: s.lost_events_per_cpu,
            malformed_records: s.malformed_records,
            process: snapshot::ProcessSummary {
                execs: p.execs,
                forks: p.forks,
                threads: p.threads,
                exits: p.exits,
                exit_codes: p.exit_codes,
                processes: p.processes.into_iter().map(Into::into).collect(),
                ..Default::default()
            },
            tcp: snapshot::TcpSummary {
                connects: t.connects,
                connect_failures: t.connect_failures,
                accepts: t.accepts,
                closes: t.closes,
                retransmits: t.retransmits,
                resets_sent: t.resets_sent,
                resets_received: t.resets_received,
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
                connections: t.connections.into_iter().map(Into::into).collect(),
                ..Default::default()
            },
            block: snapshot::BlockSummary {
                devices: s.block.devices.into_iter().map(Into::into).collect(),
                ..Default::default()
            },
            cgroups: s.cgroups.into_iter().map(Into::into).collect(),
            containers: s.containers.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

#[allow(clippy::needless_update)]
impl From<ProcessRow> for snapshot::ProcessRow {
    fn from(r: ProcessRow) -> Self {
        Self {
            pid: r.pid,
            ppid: r.ppid,
            comm: r.comm,
            filename: r.filename,
            cgroup_id: r.cgroup_id,
            execs: r.execs,
            forks: r.forks,
            exit_code: r.exit_code,
            tcp_bytes_sent: r.tcp_bytes_sent,
            tcp_bytes_received: r.tcp_bytes_received,
            block_read_bytes: r.block_read_bytes,
            block_write_bytes: r.block_write_bytes,
            ..Default::default()
        }
    }
}

#[allow(clippy::needless_update)]
impl From<ConnectionRow> for snapshot::ConnectionRow {
    fn from(c: ConnectionRow) -> Self {
        Self {
            saddr: c.saddr,
            sport: c.sport,
            daddr: c.daddr,
            dport: c.dport,
            role: c.role,
            pid: c.pid,
            comm: c.comm,
            cgroup_id: c.cgroup_id,
            state: c.state,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            segs_in: c.segs_in,
            segs_out: c.segs_out,
            duration_us: c.duration_us,
            retransmits: c.retransmits,
            resets_sent: c.resets_sent,
            resets_received: c.resets_received,
            srtt_us: c.srtt_us,
            ..Default::default()
        }
    }
}

#[allow(clippy::needless_update)]
impl From<DeviceRow> for snapshot::DeviceRow {
    fn from(d: DeviceRow) -> Self {
        Self {
            dev: d.dev,
            name: d.name,
            reads: d.reads,
            writes: d.writes,
            other: d.other,
            read_bytes: d.read_bytes,
            write_bytes: d.write_bytes,
            errors: d.errors,
            latency_us: snapshot::Latency {
                count: d.latency_us.count,
                p50: d.latency_us.p50,
                p99: d.latency_us.p99,
                max: d.latency_us.max,
                ..Default::default()
            },
            latency_sum_ns: d.latency_sum_ns,
            latency_buckets: d.latency_buckets,
            ..Default::default()
        }
    }
}

#[allow(clippy::needless_update)]
impl From<CgroupRow> for snapshot::CgroupRow {
    fn from(c: CgroupRow) -> Self {
        Self {
            cgroup_id: c.cgroup_id,
            execs: c.execs,
            forks: c.forks,
            exits: c.exits,
            tcp_connections: c.tcp_connections,
            tcp_bytes_sent: c.tcp_bytes_sent,
            tcp_bytes_received: c.tcp_bytes_received,
            block_read_bytes: c.block_read_bytes,
            block_write_bytes: c.block_write_bytes,
            exit_codes: c.exit_codes,
            tcp_connects: c.tcp_connects,
            tcp_connect_failures: c.tcp_connect_failures,
            tcp_accepts: c.tcp_accepts,
            tcp_retransmits: c.tcp_retransmits,
            tcp_resets_sent: c.tcp_resets_sent,
            tcp_resets_received: c.tcp_resets_received,
            block_reads: c.block_reads,
            block_writes: c.block_writes,
            attribution: c.attribution.map(|a| snapshot::CgroupLabels {
                path: a.path,
                runtime: a.runtime,
                container_id: a.container_id,
                unit: a.unit,
                namespace: a.namespace,
                pod: a.pod,
                pod_uid: a.pod_uid,
                container: a.container,
                workload_kind: a.workload_kind,
                workload: a.workload,
                ignored: a.ignored,
                pending: a.pending,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
