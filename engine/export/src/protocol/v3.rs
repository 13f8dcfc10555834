//! Version 3 of the socket's snapshot payload: version 2's layout plus the socket I/O
//! signal — live connection bytes, UDP, DNS, the signal's own counters — and the late
//! events count. Frozen with its version as [`super::v2`] is; the types version 2 already
//! had are reused from it (frozen there), the rest are defined here in wire order.
//! `testdata/agent-snapshot-v3.bin` pins the bytes.

use super::v2;
use ksight_engine::snapshot;
use serde::{Deserialize, Serialize};

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
    pub late_events: u64,
    pub process: v2::ProcessSummary,
    pub tcp: TcpSummary,
    pub udp: UdpSummary,
    pub dns: DnsSummary,
    pub socket_io: SocketIoSummary,
    pub block: v2::BlockSummary,
    pub cgroups: Vec<CgroupRow>,
    pub containers: Vec<CgroupRow>,
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
    pub byte_mismatches: u64,
    pub connections: Vec<ConnectionRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub base: v2::ConnectionRow,
    pub call_bytes_sent: Option<u64>,
    pub call_bytes_received: Option<u64>,
    pub since_start: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpSummary {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub flows: Vec<UdpFlowRow>,
    pub unlisted_datagrams: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpFlowRow {
    pub saddr: String,
    pub sport: u16,
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
    pub queries: Vec<DnsRow>,
    pub malformed: u64,
    pub other_qnames: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsRow {
    pub role: String,
    pub server: String,
    pub qname: String,
    pub qtype: String,
    pub rcode: String,
    pub count: u64,
    pub latency_us: v2::Latency,
    pub timeouts: u64,
    pub cgroup_id: u64,
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SocketIoSummary {
    pub calls: u64,
    pub payload_bytes: u64,
    pub unreported_msgs: u64,
    pub payload_faults: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupRow {
    pub base: v2::CgroupRow,
    pub udp_bytes_sent: u64,
    pub udp_bytes_received: u64,
    pub udp_datagrams_sent: u64,
    pub udp_datagrams_received: u64,
}

// From the JSON contract to the wire: every wire field named; fields the contract has
// beyond version 3 are left behind.

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
        // Version 2's parts as version 2 writes them.
        let base = v2::Snapshot::from(s);
        let t = &s.tcp;
        Self {
            backend: base.backend,
            duration_s: base.duration_s,
            events: base.events,
            lost_events: base.lost_events,
            lost_events_per_cpu: base.lost_events_per_cpu,
            malformed_records: base.malformed_records,
            late_events: s.late_events,
            process: base.process,
            tcp: TcpSummary {
                connects: t.connects,
                connect_failures: t.connect_failures,
                accepts: t.accepts,
                closes: t.closes,
                retransmits: t.retransmits,
                resets_sent: t.resets_sent,
                resets_received: t.resets_received,
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
                byte_mismatches: t.byte_mismatches,
                connections: t
                    .connections
                    .iter()
                    .map(|c| ConnectionRow {
                        base: c.into(),
                        call_bytes_sent: c.call_bytes_sent,
                        call_bytes_received: c.call_bytes_received,
                        since_start: c.since_start,
                    })
                    .collect(),
            },
            udp: UdpSummary {
                bytes_sent: s.udp.bytes_sent,
                bytes_received: s.udp.bytes_received,
                datagrams_sent: s.udp.datagrams_sent,
                datagrams_received: s.udp.datagrams_received,
                flows: s
                    .udp
                    .flows
                    .iter()
                    .map(|f| UdpFlowRow {
                        saddr: f.saddr.clone(),
                        sport: f.sport,
                        daddr: f.daddr.clone(),
                        dport: f.dport,
                        pid: f.pid,
                        comm: f.comm.clone(),
                        cgroup_id: f.cgroup_id,
                        bytes_sent: f.bytes_sent,
                        bytes_received: f.bytes_received,
                        datagrams_sent: f.datagrams_sent,
                        datagrams_received: f.datagrams_received,
                    })
                    .collect(),
                unlisted_datagrams: s.udp.unlisted_datagrams,
            },
            dns: DnsSummary {
                queries: s
                    .dns
                    .queries
                    .iter()
                    .map(|r| DnsRow {
                        role: r.role.clone(),
                        server: r.server.clone(),
                        qname: r.qname.clone(),
                        qtype: r.qtype.clone(),
                        rcode: r.rcode.clone(),
                        count: r.count,
                        latency_us: v2::Latency {
                            count: r.latency_us.count,
                            p50: r.latency_us.p50,
                            p99: r.latency_us.p99,
                            max: r.latency_us.max,
                        },
                        timeouts: r.timeouts,
                        cgroup_id: r.cgroup_id,
                        latency_sum_ns: r.latency_sum_ns,
                        latency_buckets: r.latency_buckets.clone(),
                    })
                    .collect(),
                malformed: s.dns.malformed,
                other_qnames: s.dns.other_qnames,
            },
            socket_io: SocketIoSummary {
                calls: s.socket_io.calls,
                payload_bytes: s.socket_io.payload_bytes,
                unreported_msgs: s.socket_io.unreported_msgs,
                payload_faults: s.socket_io.payload_faults,
            },
            block: base.block,
            cgroups: s.cgroups.iter().map(Into::into).collect(),
            containers: s.containers.iter().map(Into::into).collect(),
        }
    }
}

impl From<&snapshot::CgroupRow> for CgroupRow {
    fn from(c: &snapshot::CgroupRow) -> Self {
        Self {
            base: c.into(),
            udp_bytes_sent: c.udp_bytes_sent,
            udp_bytes_received: c.udp_bytes_received,
            udp_datagrams_sent: c.udp_datagrams_sent,
            udp_datagrams_received: c.udp_datagrams_received,
        }
    }
}

// From the wire to the JSON contract: fields the contract gains after version 3 take their
// defaults.

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
        let t = s.tcp;
        // Version 2's parts through version 2's conversion, then what version 3 adds.
        let mut out: snapshot::Snapshot = v2::Snapshot {
            backend: s.backend,
            duration_s: s.duration_s,
            events: s.events,
            lost_events: s.lost_events,
            lost_events_per_cpu: s.lost_events_per_cpu,
            malformed_records: s.malformed_records,
            process: s.process,
            tcp: v2::TcpSummary {
                connects: t.connects,
                connect_failures: t.connect_failures,
                accepts: t.accepts,
                closes: t.closes,
                retransmits: t.retransmits,
                resets_sent: t.resets_sent,
                resets_received: t.resets_received,
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
                connections: Vec::new(),
            },
            block: s.block,
            cgroups: Vec::new(),
            containers: Vec::new(),
        }
        .into();
        out.late_events = s.late_events;
        out.tcp.byte_mismatches = t.byte_mismatches;
        out.tcp.connections = t
            .connections
            .into_iter()
            .map(|c| snapshot::ConnectionRow {
                call_bytes_sent: c.call_bytes_sent,
                call_bytes_received: c.call_bytes_received,
                since_start: c.since_start,
                ..c.base.into()
            })
            .collect();
        out.udp = snapshot::UdpSummary {
            bytes_sent: s.udp.bytes_sent,
            bytes_received: s.udp.bytes_received,
            datagrams_sent: s.udp.datagrams_sent,
            datagrams_received: s.udp.datagrams_received,
            flows: s
                .udp
                .flows
                .into_iter()
                .map(|f| snapshot::UdpFlowRow {
                    saddr: f.saddr,
                    sport: f.sport,
                    daddr: f.daddr,
                    dport: f.dport,
                    pid: f.pid,
                    comm: f.comm,
                    cgroup_id: f.cgroup_id,
                    bytes_sent: f.bytes_sent,
                    bytes_received: f.bytes_received,
                    datagrams_sent: f.datagrams_sent,
                    datagrams_received: f.datagrams_received,
                    ..Default::default()
                })
                .collect(),
            unlisted_datagrams: s.udp.unlisted_datagrams,
            ..Default::default()
        };
        out.dns = snapshot::DnsSummary {
            queries: s
                .dns
                .queries
                .into_iter()
                .map(|r| snapshot::DnsRow {
                    role: r.role,
                    server: r.server,
                    qname: r.qname,
                    qtype: r.qtype,
                    rcode: r.rcode,
                    count: r.count,
                    latency_us: snapshot::Latency {
                        count: r.latency_us.count,
                        p50: r.latency_us.p50,
                        p99: r.latency_us.p99,
                        max: r.latency_us.max,
                        ..Default::default()
                    },
                    timeouts: r.timeouts,
                    cgroup_id: r.cgroup_id,
                    latency_sum_ns: r.latency_sum_ns,
                    latency_buckets: r.latency_buckets,
                    ..Default::default()
                })
                .collect(),
            malformed: s.dns.malformed,
            other_qnames: s.dns.other_qnames,
            ..Default::default()
        };
        out.socket_io = snapshot::SocketIoSummary {
            calls: s.socket_io.calls,
            payload_bytes: s.socket_io.payload_bytes,
            unreported_msgs: s.socket_io.unreported_msgs,
            payload_faults: s.socket_io.payload_faults,
            ..Default::default()
        };
        out.cgroups = s.cgroups.into_iter().map(Into::into).collect();
        out.containers = s.containers.into_iter().map(Into::into).collect();
        out
    }
}

#[allow(clippy::needless_update)]
impl From<CgroupRow> for snapshot::CgroupRow {
    fn from(c: CgroupRow) -> Self {
        Self {
            udp_bytes_sent: c.udp_bytes_sent,
            udp_bytes_received: c.udp_bytes_received,
            udp_datagrams_sent: c.udp_datagrams_sent,
            udp_datagrams_received: c.udp_datagrams_received,
            ..c.base.into()
        }
    }
}
