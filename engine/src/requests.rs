//! Requests: each TCP connection's payload goes through the parser of the protocol detected
//! on it (`ksight-protocols`), and every request paired with its response becomes a row of
//! rate, errors and latency per cgroup, role, protocol, method, route and status. Beside
//! them: connections and bytes per protocol, and the service map's edges (client cgroup →
//! server address, with the server's cgroup when it is on this host).
//!
//! Bounds: connections parsed at once ([`MAX_CONNS`]), rows ([`MAX_ROWS`]), routes and
//! hosts per service ([`MAX_ROUTES`], [`MAX_HOSTS`]; beyond them "other", counted), edges
//! ([`MAX_EDGES`]). Rows restart every interval; a connection's parser state lives until
//! its close.

use crate::latency::LatencyStats;
use crate::snapshot::{
    CommandRow, EdgeRow, HttpRow, HttpSummary, ProtocolConnectionRow, ProtocolsSummary,
    QuerySummary, RedisSummary,
};
use crate::sockio::Endpoint;
use event_abi::{SockIoEvent, TcpTuple, sock_dir, sock_flags};
use ksight_protocols::{Conn, Counters, Dir, Exchange, Protocol, Role};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;

/// Connections whose payload is parsed at once; past it the idler half is forgotten
/// (counted in `untracked_connections`).
pub const MAX_CONNS: usize = 65_536;
/// Request rows (each holds a latency histogram of about 10 KiB).
pub const MAX_ROWS: usize = 4096;
/// Distinct routes per service (cgroup, role, protocol) per interval; further ones are
/// "other".
pub const MAX_ROUTES: usize = 100;
/// Distinct hosts per service per interval; further ones are "other".
pub const MAX_HOSTS: usize = 16;
/// Error codes listed per row; further ones are "other".
const MAX_CODES: usize = 16;
/// Edges of the service map per interval.
pub const MAX_EDGES: usize = 4096;
/// Local server sockets indexed by their tuple, for naming an edge's server cgroup.
const MAX_SERVERS: usize = 1 << 16;

const OTHER_NAME: &str = "other";

struct Tracked {
    conn: Conn,
    /// The socket's cgroup (the calling task's until a state record gives the socket's).
    cgroup_id: u64,
    local: Endpoint,
    peer: Endpoint,
    /// From the TCP lifecycle: this socket connected (client) or was accepted (server).
    tcp_role: Option<Role>,
    /// Bytes seen before the protocol was known, added to its row at detection.
    early_sent: u64,
    early_received: u64,
    /// Event time of its last call.
    last_ts: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct HttpKey {
    protocol: Protocol,
    role: Role,
    cgroup_id: u64,
    method: &'static str,
    route: Box<str>,
    status: u16,
    grpc_status: Option<Box<str>>,
    peer: Option<Endpoint>,
    host: Option<Box<str>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CommandKey {
    protocol: Protocol,
    role: Role,
    cgroup_id: u64,
    command: &'static str,
    peer: Option<Endpoint>,
}

#[derive(Default)]
struct Row {
    count: u64,
    errors: u64,
    codes: BTreeMap<Box<str>, u64>,
    latency: LatencyStats,
}

impl Row {
    fn add(&mut self, x: &Exchange) {
        self.count += 1;
        if x.error {
            self.errors += 1;
            if let Some(code) = &x.code {
                let code = if self.codes.len() < MAX_CODES || self.codes.contains_key(code) {
                    code.clone()
                } else {
                    OTHER_NAME.into()
                };
                *self.codes.entry(code).or_default() += 1;
            }
        }
        self.latency.record(x.latency_ns);
    }
}

#[derive(Default)]
struct ConnRow {
    connections: u64,
    bytes_sent: u64,
    bytes_received: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct EdgeKey {
    client_cgroup: u64,
    server: Endpoint,
}

#[derive(Default)]
struct Edge {
    server_cgroup: Option<u64>,
    protocol: Option<Protocol>,
    connections: u64,
    requests: u64,
    errors: u64,
    bytes_sent: u64,
    bytes_received: u64,
    latency: LatencyStats,
}

/// The routes and hosts seen per service in this interval.
#[derive(Default)]
struct Names {
    routes: FxHashSet<Box<str>>,
    hosts: FxHashSet<Box<str>>,
}

#[derive(Default)]
pub struct Requests {
    conns: FxHashMap<u64, Tracked>,
    http: FxHashMap<HttpKey, Row>,
    commands: FxHashMap<CommandKey, Row>,
    conn_rows: FxHashMap<(Protocol, Role, u64), ConnRow>,
    edges: FxHashMap<EdgeKey, Edge>,
    names: FxHashMap<(u64, Role, Protocol), Names>,
    /// Local server sockets by (local, peer): an edge's server cgroup.
    servers: FxHashMap<(Endpoint, Endpoint), u64>,
    counters: Counters,
    other_routes: u64,
    unlisted_requests: u64,
    untracked_connections: u64,
    /// Reused for every call's exchanges.
    done: Vec<Exchange>,
}

impl Requests {
    /// A TCP connection was established: `role` is whether this socket connected or
    /// accepted; `cgroup_id` the socket's.
    pub fn established(&mut self, tuple: &TcpTuple, role: Role, cgroup_id: u64) {
        let (local, peer) = (Endpoint::local(tuple), Endpoint::peer(tuple));
        match role {
            Role::Server => {
                if self.servers.len() < MAX_SERVERS {
                    self.servers.insert((local, peer), cgroup_id);
                }
            }
            Role::Client => {
                if let Some(edge) = self.edge(cgroup_id, peer, local) {
                    edge.connections += 1;
                }
            }
        }
    }

    /// The connection closed: its parser and index entries go.
    pub fn closed(&mut self, sock_id: u64, tuple: &TcpTuple) {
        if let Some(mut t) = self.conns.remove(&sock_id) {
            t.conn.close(&mut self.counters);
        }
        if !self.servers.is_empty() {
            self.servers
                .remove(&(Endpoint::local(tuple), Endpoint::peer(tuple)));
        }
    }

    /// One socket call of a TCP connection; `cgroup_id` is the socket's, `tcp_role` what the
    /// lifecycle says of it (none for a connection open before capture).
    pub fn record(
        &mut self,
        e: &SockIoEvent,
        payload: &[u8],
        cgroup_id: u64,
        tcp_role: Option<Role>,
    ) {
        if self.conns.len() >= MAX_CONNS && !self.conns.contains_key(&e.sock_id) {
            self.evict_idle();
        }
        let room = self.conns.len() < MAX_CONNS;
        let t = match self.conns.entry(e.sock_id) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(_) if !room => {
                self.untracked_connections += 1;
                return;
            }
            Entry::Vacant(slot) => slot.insert(Tracked {
                conn: Conn::new(),
                cgroup_id,
                local: Endpoint::local(&e.tuple),
                peer: Endpoint::peer(&e.tuple),
                tcp_role,
                early_sent: 0,
                early_received: 0,
                last_ts: 0,
            }),
        };
        t.cgroup_id = cgroup_id;
        t.last_ts = e.header.ts_ns;
        if t.tcp_role.is_none() {
            t.tcp_role = tcp_role;
        }
        let dir = if e.direction == sock_dir::SEND {
            Dir::Send
        } else {
            Dir::Recv
        };
        // A faulted copy carries nothing: all of the call's bytes are unseen.
        let data = if e.flags & sock_flags::PAYLOAD_FAULT != 0 {
            &payload[..0]
        } else {
            payload
        };
        let unseen = e.bytes.saturating_sub(data.len() as u64);
        let detecting = t.conn.detecting();
        t.conn.feed(
            e.header.ts_ns,
            dir,
            data,
            unseen,
            &mut self.done,
            &mut self.counters,
        );
        let (sent, received) = match dir {
            Dir::Send => (e.bytes, 0),
            Dir::Recv => (0, e.bytes),
        };
        let protocol = t.conn.protocol();
        let (protocol, role) = match protocol {
            Some(p) => p,
            None => {
                t.early_sent = t.early_sent.saturating_add(sent);
                t.early_received = t.early_received.saturating_add(received);
                if let Some(Role::Client) = t.tcp_role {
                    let (cg, peer, local) = (t.cgroup_id, t.peer, t.local);
                    if let Some(edge) = self.edge(cg, peer, local) {
                        edge.bytes_sent = edge.bytes_sent.saturating_add(sent);
                        edge.bytes_received = edge.bytes_received.saturating_add(received);
                    }
                }
                return;
            }
        };
        let row = self
            .conn_rows
            .entry((protocol, role, t.cgroup_id))
            .or_default();
        if detecting {
            row.connections += 1;
            row.bytes_sent = row.bytes_sent.saturating_add(t.early_sent);
            row.bytes_received = row.bytes_received.saturating_add(t.early_received);
        }
        row.bytes_sent = row.bytes_sent.saturating_add(sent);
        row.bytes_received = row.bytes_received.saturating_add(received);
        let (cg, peer, local, tcp_role) = (t.cgroup_id, t.peer, t.local, t.tcp_role);
        let mut done = std::mem::take(&mut self.done);
        if role == Role::Client
            && let Some(edge) = self.edge(cg, peer, local)
        {
            edge.protocol.get_or_insert(protocol);
            if tcp_role.is_none() && detecting {
                // Open before capture: its first sight stands for its connect.
                edge.connections += 1;
            }
            edge.bytes_sent = edge.bytes_sent.saturating_add(sent);
            edge.bytes_received = edge.bytes_received.saturating_add(received);
            for x in &done {
                edge.requests += 1;
                edge.errors += u64::from(x.error);
                edge.latency.record(x.latency_ns);
            }
        }
        for x in done.drain(..) {
            self.exchange(x, cg, (role == Role::Client).then_some(peer));
        }
        self.done = done;
    }

    /// The table is full: connections whose close never came (lost records, the TCP
    /// signal off) would keep new ones out for good. The idler half goes, counted as
    /// untracked.
    fn evict_idle(&mut self) {
        let mut times: Vec<u64> = self.conns.values().map(|t| t.last_ts).collect();
        let half = times.len() / 2;
        let (_, &mut median, _) = times.select_nth_unstable(half);
        let before = self.conns.len();
        let counters = &mut self.counters;
        self.conns.retain(|_, t| {
            let keep = t.last_ts > median;
            if !keep {
                t.conn.close(counters);
            }
            keep
        });
        self.untracked_connections += (before - self.conns.len()) as u64;
    }

    /// The edge from a client cgroup to a server, with the server's cgroup once a local
    /// server socket on the same connection is known.
    fn edge(&mut self, client_cgroup: u64, server: Endpoint, local: Endpoint) -> Option<&mut Edge> {
        let key = EdgeKey {
            client_cgroup,
            server,
        };
        let full = self.edges.len() >= MAX_EDGES;
        let edge = match self.edges.entry(key) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(_) if full => return None,
            Entry::Vacant(slot) => slot.insert(Edge::default()),
        };
        if edge.server_cgroup.is_none() {
            edge.server_cgroup = self.servers.get(&(server, local)).copied();
        }
        Some(edge)
    }

    fn exchange(&mut self, mut x: Exchange, cgroup_id: u64, peer: Option<Endpoint>) {
        let row = match x.protocol {
            Protocol::Http1 | Protocol::Http2 | Protocol::Grpc => {
                let names = self
                    .names
                    .entry((cgroup_id, x.role, x.protocol))
                    .or_default();
                // Parsers hand over the route already normalised.
                let route = x.path.take().unwrap_or_default();
                let route: Box<str> =
                    bounded(&mut names.routes, route, MAX_ROUTES).unwrap_or_else(|| {
                        self.other_routes += 1;
                        OTHER_NAME.into()
                    });
                let host = x.host.as_ref().map(|h| {
                    bounded(&mut names.hosts, h.clone(), MAX_HOSTS)
                        .unwrap_or_else(|| OTHER_NAME.into())
                });
                let key = HttpKey {
                    protocol: x.protocol,
                    role: x.role,
                    cgroup_id,
                    method: x.method,
                    route,
                    status: x.status,
                    grpc_status: if x.protocol == Protocol::Grpc {
                        x.code.clone()
                    } else {
                        None
                    },
                    peer,
                    host,
                };
                let room = self.http.len() + self.commands.len() < MAX_ROWS;
                match self.http.entry(key) {
                    Entry::Occupied(slot) => slot.into_mut(),
                    Entry::Vacant(slot) if room => slot.insert(Row::default()),
                    Entry::Vacant(_) => {
                        self.unlisted_requests += 1;
                        return;
                    }
                }
            }
            Protocol::Redis | Protocol::Mysql | Protocol::Postgres | Protocol::Tls => {
                let key = CommandKey {
                    protocol: x.protocol,
                    role: x.role,
                    cgroup_id,
                    command: x.method,
                    peer,
                };
                let room = self.http.len() + self.commands.len() < MAX_ROWS;
                match self.commands.entry(key) {
                    Entry::Occupied(slot) => slot.into_mut(),
                    Entry::Vacant(slot) if room => slot.insert(Row::default()),
                    Entry::Vacant(_) => {
                        self.unlisted_requests += 1;
                        return;
                    }
                }
            }
        };
        row.add(&x);
    }

    /// A new interval: rows, edges and counters restart; connections keep their parsers.
    pub fn reset(&mut self) {
        self.http.clear();
        self.commands.clear();
        self.conn_rows.clear();
        self.edges.clear();
        self.names.clear();
        self.counters = Counters::default();
        self.other_routes = 0;
        self.unlisted_requests = 0;
        self.untracked_connections = 0;
    }

    /// Rows of cgroups that are gone (their series have expired).
    pub fn forget_cgroups(&mut self, ids: &[u64]) {
        let gone: FxHashSet<u64> = ids.iter().copied().collect();
        self.http.retain(|k, _| !gone.contains(&k.cgroup_id));
        self.commands.retain(|k, _| !gone.contains(&k.cgroup_id));
        self.conn_rows.retain(|k, _| !gone.contains(&k.2));
        self.edges.retain(|k, _| !gone.contains(&k.client_cgroup));
        self.names.retain(|k, _| !gone.contains(&k.0));
    }

    /// Forgets the connections of ignored cgroups.
    pub fn retain_cgroups(&mut self, keep: impl Fn(u64) -> bool) {
        self.conns.retain(|_, t| keep(t.cgroup_id));
        self.servers.retain(|_, cg| keep(*cg));
    }

    pub fn http_summary(&self) -> HttpSummary {
        let mut rows: Vec<HttpRow> = self
            .http
            .iter()
            .map(|(k, r)| HttpRow {
                protocol: k.protocol.name().into(),
                role: k.role.name().into(),
                method: k.method.into(),
                route: k.route.to_string(),
                status: k.status,
                grpc_status: k.grpc_status.as_deref().map(str::to_string),
                count: r.count,
                errors: r.errors,
                latency_us: r.latency.summary(),
                peer: k.peer.map(Endpoint::to_text),
                host: k.host.as_deref().map(str::to_string),
                cgroup_id: k.cgroup_id,
                latency_sum_ns: r.latency.sum_ns,
                latency_buckets: r.latency.buckets.to_vec(),
            })
            .collect();
        // Busiest first; ties in a fixed order, so output is deterministic.
        rows.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (
                    &a.protocol,
                    &a.role,
                    a.cgroup_id,
                    &a.method,
                    &a.route,
                    a.status,
                    &a.grpc_status,
                    &a.peer,
                    &a.host,
                )
                    .cmp(&(
                        &b.protocol,
                        &b.role,
                        b.cgroup_id,
                        &b.method,
                        &b.route,
                        b.status,
                        &b.grpc_status,
                        &b.peer,
                        &b.host,
                    ))
            })
        });
        HttpSummary { requests: rows }
    }

    fn command_rows(&self, protocol: Protocol) -> Vec<CommandRow> {
        let mut rows: Vec<CommandRow> = self
            .commands
            .iter()
            .filter(|(k, _)| k.protocol == protocol)
            .map(|(k, r)| CommandRow {
                role: k.role.name().into(),
                command: k.command.into(),
                count: r.count,
                errors: r.errors,
                error_codes: r.codes.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
                latency_us: r.latency.summary(),
                peer: k.peer.map(Endpoint::to_text),
                cgroup_id: k.cgroup_id,
                latency_sum_ns: r.latency.sum_ns,
                latency_buckets: r.latency.buckets.to_vec(),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (&a.role, a.cgroup_id, &a.command, &a.peer).cmp(&(
                    &b.role,
                    b.cgroup_id,
                    &b.command,
                    &b.peer,
                ))
            })
        });
        rows
    }

    pub fn redis_summary(&self) -> RedisSummary {
        RedisSummary {
            commands: self.command_rows(Protocol::Redis),
        }
    }

    pub fn query_summary(&self, protocol: Protocol) -> QuerySummary {
        QuerySummary {
            queries: self.command_rows(protocol),
        }
    }

    pub fn protocols_summary(&self) -> ProtocolsSummary {
        let mut connections: Vec<ProtocolConnectionRow> = self
            .conn_rows
            .iter()
            .map(|(&(p, role, cgroup_id), r)| ProtocolConnectionRow {
                protocol: p.name().into(),
                role: role.name().into(),
                cgroup_id,
                connections: r.connections,
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
            })
            .collect();
        connections.sort_by(|a, b| {
            (&a.protocol, &a.role, a.cgroup_id).cmp(&(&b.protocol, &b.role, b.cgroup_id))
        });
        let c = &self.counters;
        ProtocolsSummary {
            connections,
            malformed: c.malformed,
            framing_gaps: c.gaps,
            mid_stream: c.mid_stream,
            unmatched_responses: c.unmatched_responses,
            unanswered: c.unanswered,
            other_routes: self.other_routes,
            unlisted_requests: self.unlisted_requests,
            untracked_connections: self.untracked_connections,
        }
    }

    pub fn edges(&self) -> Vec<EdgeRow> {
        let mut rows: Vec<EdgeRow> = self
            .edges
            .iter()
            .map(|(k, e)| EdgeRow {
                client_cgroup_id: k.client_cgroup,
                server: k.server.to_text(),
                server_cgroup_id: e.server_cgroup,
                protocol: e.protocol.map(|p| p.name().to_string()),
                connections: e.connections,
                requests: e.requests,
                errors: e.errors,
                bytes_sent: e.bytes_sent,
                bytes_received: e.bytes_received,
                latency_us: e.latency.summary(),
                latency_sum_ns: e.latency.sum_ns,
                latency_buckets: e.latency.buckets.to_vec(),
            })
            .collect();
        rows.sort_by(|a, b| (a.client_cgroup_id, &a.server).cmp(&(b.client_cgroup_id, &b.server)));
        rows
    }
}

/// `name` if it is in `set` or there is room for it there.
fn bounded(set: &mut FxHashSet<Box<str>>, name: Box<str>, max: usize) -> Option<Box<str>> {
    if set.contains(&name) {
        return Some(name);
    }
    if set.len() >= max {
        return None;
    }
    set.insert(name.clone());
    Some(name)
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
