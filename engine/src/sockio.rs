//! What the socket I/O signal adds besides live TCP bytes (those are in `aggregate`):
//! UDP flows, DNS queries parsed from payload, and the signal's own health counters.
//!
//! DNS is recognised on UDP and TCP when either port is 53 (a message that fails to parse
//! there is counted in `dns.malformed`); on other UDP ports only when a whole datagram
//! passes [`dns::strict`] (what fails it there is simply not DNS, and not counted). TCP on
//! other ports is not looked at: its payload would need stream state on every socket.
//! Over TCP each message has a 2-byte length prefix; a message split across calls on one
//! socket is put together (up to [`MAX_TCP_MESSAGE`] bytes, enough for the header and the
//! question), and the rest of a message longer than what was seen is skipped by count.

use crate::dns;
use crate::latency::LatencyStats;
use crate::snapshot::{DnsRow, UdpFlowRow};
use event_abi::{SockIoEvent, TcpTuple, sock_dir};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// UDP flows listed (per interval; in the agent, for its life): datagrams of flows beyond
/// are counted in the totals and `unlisted_datagrams`.
pub const MAX_UDP_FLOWS: usize = 16_384;
/// Distinct query names (per interval; in the agent, for its life); further names are
/// listed as "other".
pub const MAX_QNAMES: usize = 1000;
/// DNS rows (each holds a latency histogram of about 10 KiB); beyond it a new row folds
/// its name into "other", and past a second margin into one row per role and rcode.
pub const MAX_DNS_ROWS: usize = 4096;
/// A query with no answer after this much event time is a timeout.
pub const DNS_TIMEOUT_NS: u64 = 5_000_000_000;
/// Queries waiting for their answer; past it new queries are not waited for (their answer
/// still counts, without a latency).
pub const MAX_PENDING_QUERIES: usize = 65_536;
/// TCP DNS streams (socket and direction) with a partial message held.
pub const MAX_TCP_STREAMS: usize = 4096;
/// Most bytes of one TCP DNS message held while waiting for the rest.
pub const MAX_TCP_MESSAGE: usize = 2 + event_abi::MAX_SNAPLEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsRole {
    Client,
    Server,
}

/// An address and port as the record has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Endpoint {
    pub family: u16,
    pub addr: [u8; 16],
    pub port: u16,
}

impl Endpoint {
    pub fn local(t: &TcpTuple) -> Self {
        Self::new(t.family, t.saddr, t.sport)
    }

    pub fn peer(t: &TcpTuple) -> Self {
        Self::new(t.family, t.daddr, t.dport)
    }

    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket talking IPv4) is
    /// the IPv4 address it is, so both ends of one connection name it alike.
    fn new(family: u16, addr: [u8; 16], port: u16) -> Self {
        let v4_mapped = addr[..10] == [0; 10] && addr[10..12] == [0xff, 0xff];
        if family == event_abi::AF_INET6 && v4_mapped {
            let mut v4 = [0; 16];
            v4[..4].copy_from_slice(&addr[12..]);
            return Self {
                family: event_abi::AF_INET,
                addr: v4,
                port,
            };
        }
        Self { family, addr, port }
    }

    pub fn ip(&self) -> IpAddr {
        if self.family == event_abi::AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        } else {
            let a = &self.addr;
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        }
    }

    /// "addr:port", IPv6 as "[addr]:port".
    pub fn to_text(self) -> String {
        SocketAddr::new(self.ip(), self.port).to_string()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    local: Endpoint,
    peer: Endpoint,
    pid: u32,
    cgroup_id: u64,
}

#[derive(Clone, Copy, Default)]
struct Flow {
    bytes_sent: u64,
    bytes_received: u64,
    datagrams_sent: u64,
    datagrams_received: u64,
}

#[derive(Default)]
pub struct Udp {
    flows: FxHashMap<FlowKey, Flow>,
    totals: Flow,
    unlisted_datagrams: u64,
}

impl Udp {
    /// One datagram (a record of a UDP socket).
    pub fn record(&mut self, e: &SockIoEvent) {
        let key = FlowKey {
            local: Endpoint::local(&e.tuple),
            peer: Endpoint::peer(&e.tuple),
            pid: e.header.pid,
            cgroup_id: e.header.cgroup_id,
        };
        let send = e.direction == sock_dir::SEND;
        let add = |f: &mut Flow| {
            if send {
                f.bytes_sent = f.bytes_sent.saturating_add(e.bytes);
                f.datagrams_sent += 1;
            } else {
                f.bytes_received = f.bytes_received.saturating_add(e.bytes);
                f.datagrams_received += 1;
            }
        };
        add(&mut self.totals);
        let full = self.flows.len() >= MAX_UDP_FLOWS;
        match self.flows.entry(key) {
            Entry::Occupied(mut f) => add(f.get_mut()),
            Entry::Vacant(_) if full => self.unlisted_datagrams += 1,
            Entry::Vacant(slot) => add(slot.insert(Flow::default())),
        }
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    pub fn summary(&self, comm_of: &dyn Fn(u32) -> String) -> crate::snapshot::UdpSummary {
        let mut rows: Vec<(&FlowKey, &Flow)> = self.flows.iter().collect();
        // Busiest first; ties by the flow's identity, so the order is deterministic.
        rows.sort_by(|(ka, a), (kb, b)| {
            let bytes = |f: &Flow| f.bytes_sent + f.bytes_received;
            let dgrams = |f: &Flow| f.datagrams_sent + f.datagrams_received;
            (bytes(b), dgrams(b))
                .cmp(&(bytes(a), dgrams(a)))
                .then_with(|| {
                    (ka.local, ka.peer, ka.pid, ka.cgroup_id).cmp(&(
                        kb.local,
                        kb.peer,
                        kb.pid,
                        kb.cgroup_id,
                    ))
                })
        });
        let t = &self.totals;
        crate::snapshot::UdpSummary {
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
            datagrams_sent: t.datagrams_sent,
            datagrams_received: t.datagrams_received,
            unlisted_datagrams: self.unlisted_datagrams,
            flows: rows
                .into_iter()
                .map(|(k, f)| UdpFlowRow {
                    saddr: k.local.ip().to_string(),
                    sport: k.local.port,
                    daddr: k.peer.ip().to_string(),
                    dport: k.peer.port,
                    pid: k.pid,
                    comm: comm_of(k.pid),
                    cgroup_id: k.cgroup_id,
                    bytes_sent: f.bytes_sent,
                    bytes_received: f.bytes_received,
                    datagrams_sent: f.datagrams_sent,
                    datagrams_received: f.datagrams_received,
                })
                .collect(),
        }
    }
}

/// The rcode of rows of queries that were never answered.
const TIMEOUT: u16 = u16::MAX;

/// The row name of queries past the bound on names.
const OTHER: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RowKey {
    role: DnsRole,
    server: Endpoint,
    /// Index in [`Dns::names`], or [`OTHER`].
    qname: u32,
    qtype: u16,
    rcode: u16,
    cgroup_id: u64,
}

#[derive(Default)]
struct Row {
    count: u64,
    timeouts: u64,
    latency: LatencyStats,
}

/// A query waits for its answer on the same socket, from the same peer, with the same id,
/// name (by a 64-bit hash of it) and type.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PendingKey {
    role: DnsRole,
    sock_id: u64,
    peer: Endpoint,
    id: u16,
    qtype: u16,
    qname_hash: u64,
}

fn name_hash(name: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(name)
}

struct Pending {
    qname: Box<str>,
    ts: u64,
    /// The server: the peer for a client, the local address for a server.
    server: Endpoint,
    /// The asking task's cgroup (client), the one that received the query (server).
    cgroup_id: u64,
    seq: u64,
}

/// One direction of a TCP connection carrying DNS.
#[derive(Default)]
struct TcpStream {
    /// The start of a message (length prefix included) not yet parsed.
    buf: Vec<u8>,
    /// Stream bytes still to skip: the rest of a message already counted.
    skip: u64,
}

#[derive(Default)]
pub struct Dns {
    rows: FxHashMap<RowKey, Row>,
    /// This interval's query names, and their index by name.
    names: Vec<Box<str>>,
    name_ids: FxHashMap<Box<str>, u32>,
    other_qnames: u64,
    malformed: u64,
    pending: FxHashMap<PendingKey, Pending>,
    /// Pending queries by deadline (insertion order is event-time order); an entry whose
    /// query was answered is skipped when it comes up.
    deadlines: VecDeque<(u64, u64, PendingKey)>,
    seq: u64,
    streams: FxHashMap<(u64, u8), TcpStream>,
    /// Reused for every parse.
    name: String,
}

/// Whether a record might carry DNS: a port 53 on either side.
pub fn dns_port(t: &TcpTuple) -> bool {
    t.sport == 53 || t.dport == 53
}

impl Dns {
    /// The event time past which the oldest pending query times out.
    #[inline]
    pub fn next_deadline(&self) -> u64 {
        self.deadlines.front().map_or(u64::MAX, |d| d.0)
    }

    /// Queries whose deadline is before `now` (event time) become timeouts.
    pub fn expire(&mut self, now: u64) {
        while let Some((deadline, seq, _)) = self.deadlines.front()
            && *deadline < now
        {
            let seq = *seq;
            let (_, _, key) = self.deadlines.pop_front().expect("front");
            if self.pending.get(&key).is_some_and(|p| p.seq == seq) {
                let p = self.pending.remove(&key).expect("present");
                let row = self.row(
                    key.role,
                    p.server,
                    &p.qname,
                    key.qtype,
                    TIMEOUT,
                    p.cgroup_id,
                );
                row.count += 1;
                row.timeouts += 1;
            }
        }
    }

    /// A socket I/O record: UDP or TCP, with its payload.
    pub fn record(&mut self, e: &SockIoEvent, payload: &[u8]) {
        let on_port = dns_port(&e.tuple);
        match e.protocol {
            // Nothing copied (a fault, or an empty datagram): nothing to parse.
            IPPROTO_UDP if payload.is_empty() => {}
            IPPROTO_UDP => {
                if on_port {
                    self.message(e, payload, true);
                } else if payload.len() as u64 == e.bytes && plausible(payload) {
                    self.message(e, payload, false);
                }
            }
            IPPROTO_TCP if on_port => self.tcp(e, payload),
            _ => {}
        }
    }

    /// The connection closed: its partial messages go.
    pub fn closed(&mut self, sock_id: u64) {
        if !self.streams.is_empty() {
            self.streams.remove(&(sock_id, sock_dir::SEND));
            self.streams.remove(&(sock_id, sock_dir::RECV));
        }
    }

    fn tcp(&mut self, e: &SockIoEvent, payload: &[u8]) {
        let key = (e.sock_id, e.direction);
        if !self.streams.contains_key(&key) && self.streams.len() >= MAX_TCP_STREAMS {
            // Connections that never finished their message: start over.
            self.streams.clear();
        }
        let mut stream = self.streams.remove(&key).unwrap_or_default();
        let mut data = payload;
        // Bytes the call moved that the record does not carry (past the snaplen).
        let mut unseen = e.bytes.saturating_sub(payload.len() as u64);
        let skip = stream.skip.min(data.len() as u64) as usize;
        data = &data[skip..];
        stream.skip -= skip as u64;
        if stream.skip > 0 {
            let s = stream.skip.min(unseen);
            stream.skip -= s;
            unseen -= s;
        }
        let room = MAX_TCP_MESSAGE - stream.buf.len().min(MAX_TCP_MESSAGE);
        stream.buf.extend_from_slice(&data[..data.len().min(room)]);
        let mut at = 0;
        loop {
            let buf = &stream.buf[at..];
            if buf.len() < 2 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            let whole = buf.len() >= 2 + len;
            let msg = &buf[2..2 + len.min(buf.len() - 2)];
            let mut name = std::mem::take(&mut self.name);
            let parsed = dns::parse(msg, &mut name);
            match parsed {
                Ok(p) => {
                    let held = buf.len();
                    self.parsed(e, &p, &name);
                    self.name = name;
                    if whole {
                        at += 2 + len;
                        continue;
                    }
                    // The rest of this message is still to come: skip it.
                    stream.skip = (2 + len - held) as u64;
                    at = stream.buf.len();
                    let s = stream.skip.min(unseen);
                    stream.skip -= s;
                    unseen -= s;
                    break;
                }
                Err(dns::Error::Truncated) if !whole && stream.buf.len() < MAX_TCP_MESSAGE => {
                    self.name = name;
                    break;
                }
                Err(_) => {
                    self.name = name;
                    self.malformed += 1;
                    if !whole {
                        stream.skip = (2 + len - buf.len()) as u64;
                        let s = stream.skip.min(unseen);
                        stream.skip -= s;
                        unseen -= s;
                    }
                    at = stream.buf.len();
                    break;
                }
            }
        }
        stream.buf.drain(..at);
        if unseen > 0 {
            // The call carried more than the record: where the next message starts is
            // unknown. Resynchronise at the next call.
            stream.buf.clear();
            stream.skip = 0;
        }
        if !stream.buf.is_empty() || stream.skip > 0 {
            self.streams.insert(key, stream);
        }
    }

    /// A whole message (UDP), or its first part up to the snaplen.
    fn message(&mut self, e: &SockIoEvent, payload: &[u8], on_port: bool) {
        let mut name = std::mem::take(&mut self.name);
        match dns::parse(payload, &mut name) {
            Ok(p) if on_port || dns::strict(payload, &p) => self.parsed(e, &p, &name),
            Ok(_) => {}
            Err(_) if on_port => self.malformed += 1,
            Err(_) => {}
        }
        self.name = name;
    }

    fn parsed(&mut self, e: &SockIoEvent, p: &dns::Parsed, qname: &str) {
        if p.opcode != 0 {
            // Only standard queries have answers to match (NOTIFY, UPDATE are not lookups).
            return;
        }
        let send = e.direction == sock_dir::SEND;
        let h = &e.header;
        let (local, peer) = (Endpoint::local(&e.tuple), Endpoint::peer(&e.tuple));
        // This host sent a query or received an answer: a client. Received a query or
        // sent an answer: a server.
        let role = if send != p.response {
            DnsRole::Client
        } else {
            DnsRole::Server
        };
        let server = match role {
            DnsRole::Client => peer,
            DnsRole::Server => local,
        };
        let key = PendingKey {
            role,
            sock_id: e.sock_id,
            peer,
            id: p.id,
            qtype: p.qtype,
            qname_hash: name_hash(qname),
        };
        if !p.response {
            // A repeat of a query still waiting keeps the first one's time.
            if self.pending.contains_key(&key) || self.pending.len() >= MAX_PENDING_QUERIES {
                return;
            }
            self.seq += 1;
            let deadline = h.ts_ns.saturating_add(DNS_TIMEOUT_NS);
            // Answered queries leave their deadline behind until it passes: drop those
            // before the queue outgrows the queries actually waiting.
            if self.deadlines.len() >= 2 * MAX_PENDING_QUERIES {
                let pending = &self.pending;
                self.deadlines
                    .retain(|(_, seq, key)| pending.get(key).is_some_and(|p| p.seq == *seq));
            }
            self.deadlines.push_back((deadline, self.seq, key));
            self.pending.insert(
                key,
                Pending {
                    qname: qname.into(),
                    ts: h.ts_ns,
                    server,
                    cgroup_id: h.cgroup_id,
                    seq: self.seq,
                },
            );
            return;
        }
        let query = self.pending.remove(&key);
        // The asking task's cgroup for a client, the answering one's for a server.
        let cgroup_id = match (&query, role) {
            (Some(q), DnsRole::Client) => q.cgroup_id,
            _ => h.cgroup_id,
        };
        let row = self.row(role, server, qname, p.qtype, u16::from(p.rcode), cgroup_id);
        row.count += 1;
        if let Some(q) = query {
            row.latency.record(h.ts_ns.saturating_sub(q.ts));
        }
    }

    fn row(
        &mut self,
        role: DnsRole,
        server: Endpoint,
        qname: &str,
        qtype: u16,
        rcode: u16,
        cgroup_id: u64,
    ) -> &mut Row {
        let id = match self.name_ids.get(qname) {
            Some(&id) => id,
            None if self.names.len() < MAX_QNAMES => {
                let id = self.names.len() as u32;
                self.names.push(qname.into());
                self.name_ids.insert(qname.into(), id);
                id
            }
            None => OTHER,
        };
        let mut key = RowKey {
            role,
            server,
            qname: id,
            qtype,
            rcode,
            cgroup_id,
        };
        if key.qname != OTHER && self.rows.len() >= MAX_DNS_ROWS && !self.rows.contains_key(&key) {
            key.qname = OTHER;
        }
        // "other" rows still differ by server, type and cgroup: past a margin, one row per
        // role and rcode takes every further one, so the rows stay bounded.
        if self.rows.len() >= MAX_DNS_ROWS + MAX_DNS_ROWS / 4 && !self.rows.contains_key(&key) {
            key = RowKey {
                role,
                server: Endpoint::default(),
                qname: OTHER,
                qtype: 0,
                rcode,
                cgroup_id: 0,
            };
        }
        if key.qname == OTHER {
            self.other_qnames += 1;
        }
        self.rows.entry(key).or_default()
    }

    /// A new interval: rows and counters restart; queries still waiting keep waiting.
    pub fn reset(&mut self) {
        self.rows.clear();
        self.names.clear();
        self.name_ids.clear();
        self.other_qnames = 0;
        self.malformed = 0;
    }

    /// Forgets what the ignored cgroups were waiting for.
    pub fn retain_cgroups(&mut self, keep: impl Fn(u64) -> bool) {
        self.pending.retain(|_, p| keep(p.cgroup_id));
    }

    pub fn summary(&self) -> crate::snapshot::DnsSummary {
        let name = |id: u32| self.names.get(id as usize).map_or("other", |n| &**n);
        let mut rows: Vec<(&RowKey, &Row)> = self.rows.iter().collect();
        rows.sort_by(|(ka, a), (kb, b)| {
            b.count.cmp(&a.count).then_with(|| {
                (
                    ka.role,
                    ka.server,
                    name(ka.qname),
                    ka.qtype,
                    ka.rcode,
                    ka.cgroup_id,
                )
                    .cmp(&(
                        kb.role,
                        kb.server,
                        name(kb.qname),
                        kb.qtype,
                        kb.rcode,
                        kb.cgroup_id,
                    ))
            })
        });
        crate::snapshot::DnsSummary {
            malformed: self.malformed,
            other_qnames: self.other_qnames,
            queries: rows
                .into_iter()
                .map(|(k, r)| DnsRow {
                    role: match k.role {
                        DnsRole::Client => "client",
                        DnsRole::Server => "server",
                    }
                    .into(),
                    server: k.server.to_text(),
                    qname: name(k.qname).to_string(),
                    qtype: dns::qtype_name(k.qtype),
                    rcode: if k.rcode == TIMEOUT {
                        "TIMEOUT".into()
                    } else {
                        dns::rcode_name(k.rcode as u8)
                    },
                    count: r.count,
                    latency_us: r.latency.summary(),
                    timeouts: r.timeouts,
                    cgroup_id: k.cgroup_id,
                    latency_sum_ns: r.latency.sum_ns,
                    latency_buckets: r.latency.buckets.to_vec(),
                })
                .collect(),
        }
    }
}

/// A cheap first look before the strict check, for payload on ports other than 53:
/// long enough, opcode 0, one question.
#[inline]
fn plausible(m: &[u8]) -> bool {
    m.len() >= dns::HEADER_LEN + 5 && m[2] & 0x78 == 0 && m[4] == 0 && m[5] == 1
}

/// The signal's health counters, per interval.
#[derive(Default)]
pub struct Health {
    pub calls: u64,
    pub payload_bytes: u64,
    pub unreported_msgs: u64,
    pub payload_faults: u64,
}

#[cfg(test)]
#[path = "sockio_tests.rs"]
mod tests;
