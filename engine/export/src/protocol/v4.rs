//! Version 4 of the socket's snapshot payload: version 3's layout plus the requests parsed
//! from socket payload — HTTP/gRPC rows, Redis, MySQL and PostgreSQL rows, connections per
//! protocol with the parsers' health, and the service map's edges. Frozen with its version
//! as [`super::v3`] is; the types earlier versions had are reused from them (frozen there),
//! the rest are defined here in wire order. `testdata/agent-snapshot-v4.bin` pins the bytes.

use super::{v2, v3};
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
    pub late_events: u64,
    pub process: v2::ProcessSummary,
    pub tcp: v3::TcpSummary,
    pub udp: v3::UdpSummary,
    pub dns: v3::DnsSummary,
    pub socket_io: v3::SocketIoSummary,
    pub http: Vec<HttpRow>,
    pub redis: Vec<CommandRow>,
    pub mysql: Vec<CommandRow>,
    pub postgres: Vec<CommandRow>,
    pub protocols: ProtocolsSummary,
    pub edges: Vec<EdgeRow>,
    pub block: v2::BlockSummary,
    pub cgroups: Vec<v3::CgroupRow>,
    pub containers: Vec<v3::CgroupRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRow {
    pub protocol: String,
    pub role: String,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub grpc_status: Option<String>,
    pub count: u64,
    pub errors: u64,
    pub latency_us: v2::Latency,
    pub peer: Option<String>,
    pub host: Option<String>,
    pub cgroup_id: u64,
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandRow {
    pub role: String,
    pub command: String,
    pub count: u64,
    pub errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub latency_us: v2::Latency,
    pub peer: Option<String>,
    pub cgroup_id: u64,
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolsSummary {
    pub connections: Vec<ProtocolConnectionRow>,
    pub malformed: u64,
    pub framing_gaps: u64,
    pub mid_stream: u64,
    pub unmatched_responses: u64,
    pub unanswered: u64,
    pub other_routes: u64,
    pub unlisted_requests: u64,
    pub untracked_connections: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolConnectionRow {
    pub protocol: String,
    pub role: String,
    pub cgroup_id: u64,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    pub client_cgroup_id: u64,
    pub server: String,
    pub server_cgroup_id: Option<u64>,
    pub protocol: Option<String>,
    pub connections: u64,
    pub requests: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub latency_us: v2::Latency,
    pub latency_sum_ns: u64,
    pub latency_buckets: Vec<u64>,
}

fn latency_to_wire(l: &snapshot::Latency) -> v2::Latency {
    v2::Latency {
        count: l.count,
        p50: l.p50,
        p99: l.p99,
        max: l.max,
    }
}

#[allow(clippy::needless_update)]
fn latency_from_wire(l: v2::Latency) -> snapshot::Latency {
    snapshot::Latency {
        count: l.count,
        p50: l.p50,
        p99: l.p99,
        max: l.max,
        ..Default::default()
    }
}

// From the JSON contract to the wire: every wire field named; fields the contract has
// beyond version 4 are left behind.

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
        // Version 3's parts as version 3 writes them.
        let base = v3::Snapshot::from(s);
        let p = &s.protocols;
        Self {
            backend: base.backend,
            duration_s: base.duration_s,
            events: base.events,
            lost_events: base.lost_events,
            lost_events_per_cpu: base.lost_events_per_cpu,
            malformed_records: base.malformed_records,
            late_events: base.late_events,
            process: base.process,
            tcp: base.tcp,
            udp: base.udp,
            dns: base.dns,
            socket_io: base.socket_io,
            http: s.http.requests.iter().map(Into::into).collect(),
            redis: s.redis.commands.iter().map(Into::into).collect(),
            mysql: s.mysql.queries.iter().map(Into::into).collect(),
            postgres: s.postgres.queries.iter().map(Into::into).collect(),
            protocols: ProtocolsSummary {
                connections: p
                    .connections
                    .iter()
                    .map(|c| ProtocolConnectionRow {
                        protocol: c.protocol.clone(),
                        role: c.role.clone(),
                        cgroup_id: c.cgroup_id,
                        connections: c.connections,
                        bytes_sent: c.bytes_sent,
                        bytes_received: c.bytes_received,
                    })
                    .collect(),
                malformed: p.malformed,
                framing_gaps: p.framing_gaps,
                mid_stream: p.mid_stream,
                unmatched_responses: p.unmatched_responses,
                unanswered: p.unanswered,
                other_routes: p.other_routes,
                unlisted_requests: p.unlisted_requests,
                untracked_connections: p.untracked_connections,
            },
            edges: s
                .edges
                .iter()
                .map(|e| EdgeRow {
                    client_cgroup_id: e.client_cgroup_id,
                    server: e.server.clone(),
                    server_cgroup_id: e.server_cgroup_id,
                    protocol: e.protocol.clone(),
                    connections: e.connections,
                    requests: e.requests,
                    errors: e.errors,
                    bytes_sent: e.bytes_sent,
                    bytes_received: e.bytes_received,
                    latency_us: latency_to_wire(&e.latency_us),
                    latency_sum_ns: e.latency_sum_ns,
                    latency_buckets: e.latency_buckets.clone(),
                })
                .collect(),
            block: base.block,
            cgroups: base.cgroups,
            containers: base.containers,
        }
    }
}

impl From<&snapshot::HttpRow> for HttpRow {
    fn from(r: &snapshot::HttpRow) -> Self {
        Self {
            protocol: r.protocol.clone(),
            role: r.role.clone(),
            method: r.method.clone(),
            route: r.route.clone(),
            status: r.status,
            grpc_status: r.grpc_status.clone(),
            count: r.count,
            errors: r.errors,
            latency_us: latency_to_wire(&r.latency_us),
            peer: r.peer.clone(),
            host: r.host.clone(),
            cgroup_id: r.cgroup_id,
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets.clone(),
        }
    }
}

impl From<&snapshot::CommandRow> for CommandRow {
    fn from(r: &snapshot::CommandRow) -> Self {
        Self {
            role: r.role.clone(),
            command: r.command.clone(),
            count: r.count,
            errors: r.errors,
            error_codes: r.error_codes.clone(),
            latency_us: latency_to_wire(&r.latency_us),
            peer: r.peer.clone(),
            cgroup_id: r.cgroup_id,
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets.clone(),
        }
    }
}

// From the wire to the JSON contract: fields the contract gains after version 4 take their
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
        // Version 3's parts through version 3's conversion, then what version 4 adds.
        let mut out: snapshot::Snapshot = v3::Snapshot {
            backend: s.backend,
            duration_s: s.duration_s,
            events: s.events,
            lost_events: s.lost_events,
            lost_events_per_cpu: s.lost_events_per_cpu,
            malformed_records: s.malformed_records,
            late_events: s.late_events,
            process: s.process,
            tcp: s.tcp,
            udp: s.udp,
            dns: s.dns,
            socket_io: s.socket_io,
            block: s.block,
            cgroups: s.cgroups,
            containers: s.containers,
        }
        .into();
        out.http = snapshot::HttpSummary {
            requests: s.http.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        out.redis = snapshot::RedisSummary {
            commands: s.redis.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        out.mysql = snapshot::QuerySummary {
            queries: s.mysql.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        out.postgres = snapshot::QuerySummary {
            queries: s.postgres.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        let p = s.protocols;
        out.protocols = snapshot::ProtocolsSummary {
            connections: p
                .connections
                .into_iter()
                .map(|c| snapshot::ProtocolConnectionRow {
                    protocol: c.protocol,
                    role: c.role,
                    cgroup_id: c.cgroup_id,
                    connections: c.connections,
                    bytes_sent: c.bytes_sent,
                    bytes_received: c.bytes_received,
                    ..Default::default()
                })
                .collect(),
            malformed: p.malformed,
            framing_gaps: p.framing_gaps,
            mid_stream: p.mid_stream,
            unmatched_responses: p.unmatched_responses,
            unanswered: p.unanswered,
            other_routes: p.other_routes,
            unlisted_requests: p.unlisted_requests,
            untracked_connections: p.untracked_connections,
            ..Default::default()
        };
        out.edges = s
            .edges
            .into_iter()
            .map(|e| snapshot::EdgeRow {
                client_cgroup_id: e.client_cgroup_id,
                server: e.server,
                server_cgroup_id: e.server_cgroup_id,
                protocol: e.protocol,
                connections: e.connections,
                requests: e.requests,
                errors: e.errors,
                bytes_sent: e.bytes_sent,
                bytes_received: e.bytes_received,
                latency_us: latency_from_wire(e.latency_us),
                latency_sum_ns: e.latency_sum_ns,
                latency_buckets: e.latency_buckets,
                ..Default::default()
            })
            .collect();
        out
    }
}

#[allow(clippy::needless_update)]
impl From<HttpRow> for snapshot::HttpRow {
    fn from(r: HttpRow) -> Self {
        Self {
            protocol: r.protocol,
            role: r.role,
            method: r.method,
            route: r.route,
            status: r.status,
            grpc_status: r.grpc_status,
            count: r.count,
            errors: r.errors,
            latency_us: latency_from_wire(r.latency_us),
            peer: r.peer,
            host: r.host,
            cgroup_id: r.cgroup_id,
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets,
            ..Default::default()
        }
    }
}

#[allow(clippy::needless_update)]
impl From<CommandRow> for snapshot::CommandRow {
    fn from(r: CommandRow) -> Self {
        Self {
            role: r.role,
            command: r.command,
            count: r.count,
            errors: r.errors,
            error_codes: r.error_codes,
            latency_us: latency_from_wire(r.latency_us),
            peer: r.peer,
            cgroup_id: r.cgroup_id,
            latency_sum_ns: r.latency_sum_ns,
            latency_buckets: r.latency_buckets,
            ..Default::default()
        }
    }
}
