//! Deterministic aggregation of an ordered event stream: the same stream gives the same
//! aggregates, whichever backend produced it. That is what makes backends comparable.

use crate::decode::{Event, SockIo, c_str};
use crate::names::Names;
use crate::snapshot::*;
use crate::sockio::{self, IPPROTO_TCP, IPPROTO_UDP};
use event_abi::{
    BlockEvent, ExecEvent, ExitEvent, ForkEvent, TcpEvent, TcpStateEvent, TcpTuple, block_op, kind,
    sock_dir, sock_flags, tcp_state, tcp_stats,
};
use hdrhistogram::Histogram;
use ksight_protocols::Role as ProtoRole;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What to count. `None` in the aggregator means the whole host.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// cgroup ids whose tasks and sockets are in scope.
    pub cgroups: FxHashSet<u64>,
    /// Process ids in scope; grows with every process they fork.
    pub pids: FxHashSet<u32>,
}

impl Scope {
    fn contains(&self, pid: u32, cgroup_id: u64) -> bool {
        self.cgroups.contains(&cgroup_id) || self.pids.contains(&pid)
    }
}

/// Block requests waiting for completion before this many are dropped as unmatched.
const MAX_PENDING_BIOS: usize = 1 << 16;
/// Closed connections kept for listing between resets.
const MAX_CLOSED_CONNECTIONS: usize = 4096;
/// Open connections tracked at once (the host's own limit is in the millions; this keeps
/// the engine bounded when their close records never come).
const MAX_OPEN_CONNECTIONS: usize = 1 << 18;
/// Sockets remembered as closed, so that a call completing after the kernel's close is
/// not taken for a connection opened before capture.
const MAX_RECENTLY_CLOSED: usize = 1 << 16;

#[derive(Default)]
struct Process {
    ppid: Option<u32>,
    comm: String,
    filename: Option<String>,
    cgroup_id: u64,
    execs: u64,
    forks: u64,
    exit_code: Option<i32>,
    tcp_bytes_sent: u64,
    tcp_bytes_received: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
}

#[derive(Default)]
struct Cgroup {
    execs: u64,
    forks: u64,
    exits: u64,
    tcp_connections: u64,
    tcp_bytes_sent: u64,
    tcp_bytes_received: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
    exit_codes: BTreeMap<i32, u64>,
    tcp_connects: u64,
    tcp_connect_failures: u64,
    tcp_accepts: u64,
    tcp_retransmits: u64,
    tcp_resets_sent: u64,
    tcp_resets_received: u64,
    block_reads: u64,
    block_writes: u64,
    udp_bytes_sent: u64,
    udp_bytes_received: u64,
    udp_datagrams_sent: u64,
    udp_datagrams_received: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Active,
    Passive,
    /// Open before capture started: only its socket calls were seen.
    Unknown,
}

struct Connection {
    tuple: TcpTuple,
    role: Role,
    first_ts: u64,
    last_ts: u64,
    established: bool,
    state: u32,
    owner_pid: u32,
    sock_cgroup_id: u64,
    retransmits: u64,
    resets_sent: u64,
    resets_received: u64,
    /// Our FIN was acknowledged / the peer's FIN arrived: the kernel's byte counters count
    /// each as one sequence number, which is not payload.
    fin_acked: bool,
    fin_received: bool,
    /// Counters read at close.
    closed: Option<CloseStats>,
    /// Payload bytes of the socket calls seen on it.
    call_sent: u64,
    call_received: u64,
    /// Open before capture started: first seen by a socket call.
    since_start: bool,
    /// The socket's kernel address (the key of `open` while it is open).
    sock_id: u64,
}

impl Connection {
    fn new(e: &TcpStateEvent, role: Role) -> Self {
        Self {
            tuple: e.tuple,
            role,
            first_ts: e.header.ts_ns,
            last_ts: e.header.ts_ns,
            established: false,
            state: e.new_state,
            owner_pid: 0,
            sock_cgroup_id: e.sock_cgroup_id,
            retransmits: 0,
            resets_sent: 0,
            resets_received: 0,
            fin_acked: false,
            fin_received: false,
            closed: None,
            call_sent: 0,
            call_received: 0,
            since_start: false,
            sock_id: e.sock_id,
        }
    }

    /// A connection first seen by a socket call on it: open before capture started.
    fn since_start(e: &event_abi::SockIoEvent) -> Self {
        let h = &e.header;
        Self {
            tuple: e.tuple,
            role: Role::Unknown,
            first_ts: h.ts_ns,
            last_ts: h.ts_ns,
            established: true,
            state: tcp_state::ESTABLISHED,
            owner_pid: h.pid,
            sock_cgroup_id: h.cgroup_id,
            retransmits: 0,
            resets_sent: 0,
            resets_received: 0,
            fin_acked: false,
            fin_received: false,
            closed: None,
            call_sent: 0,
            call_received: 0,
            since_start: true,
            sock_id: e.sock_id,
        }
    }

    /// Payload bytes sent and received, from the kernel's `bytes_acked`/`bytes_received`,
    /// which also count the SYN an active opener had acknowledged and the FINs.
    fn payload(&self) -> Option<(Option<u64>, Option<u64>)> {
        let s = self.closed?;
        let syn = u64::from(self.role == Role::Active && self.established);
        let sent = (s.valid & tcp_stats::BYTES_ACKED != 0).then(|| {
            s.bytes_acked
                .saturating_sub(syn + u64::from(self.fin_acked))
        });
        let received = (s.valid & tcp_stats::BYTES_RECEIVED != 0).then(|| {
            s.bytes_received
                .saturating_sub(u64::from(self.fin_received))
        });
        Some((sent, received))
    }

    /// Closed, seen from its start in a run with socket I/O, and the kernel's byte
    /// counters differ from the sums of its calls.
    fn bytes_mismatch(&self, sock_io_seen: bool) -> bool {
        if !sock_io_seen || self.since_start || !self.established {
            return false;
        }
        let Some((sent, received)) = self.payload() else {
            return false;
        };
        sent.is_some_and(|k| k != self.call_sent)
            || received.is_some_and(|k| k != self.call_received)
    }
}

#[derive(Clone, Copy)]
struct CloseStats {
    valid: u32,
    bytes_acked: u64,
    bytes_received: u64,
    segs_in: u32,
    segs_out: u32,
    srtt_us: u32,
}

struct Device {
    reads: u64,
    writes: u64,
    other: u64,
    read_bytes: u64,
    write_bytes: u64,
    errors: u64,
    latency_ns: Histogram<u64>,
    /// Exact sum of the latencies recorded in `latency_ns`.
    latency_sum_ns: u64,
    /// Requests per bucket of [`LATENCY_BUCKETS_NS`], the last one past its end.
    latency_buckets: [u64; LATENCY_BUCKETS_NS.len() + 1],
}

impl Default for Device {
    fn default() -> Self {
        Self {
            reads: 0,
            writes: 0,
            other: 0,
            read_bytes: 0,
            write_bytes: 0,
            errors: 0,
            latency_sum_ns: 0,
            latency_buckets: [0; LATENCY_BUCKETS_NS.len() + 1],
            // 1 ns .. 1 h, 3 significant digits; values above saturate.
            latency_ns: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
        }
    }
}

#[derive(Clone, Copy)]
struct PendingBio {
    ts: u64,
    pid: u32,
    cgroup_id: u64,
}

#[derive(Default)]
struct Totals {
    execs: u64,
    forks: u64,
    threads: u64,
    exits: u64,
    exit_codes: BTreeMap<i32, u64>,
    connects: u64,
    connect_failures: u64,
    accepts: u64,
    closes: u64,
    retransmits: u64,
    resets_sent: u64,
    resets_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    byte_mismatches: u64,
}

#[derive(Default)]
pub struct Aggregator {
    scope: Option<Scope>,
    /// cgroups whose events are dropped (ignored containers); see [`Event::owner_cgroup`].
    ignored: FxHashSet<u64>,
    /// Events dropped because their cgroup is ignored.
    pub ignored_events: u64,
    totals: Totals,
    processes: FxHashMap<u32, Process>,
    cgroups: FxHashMap<u64, Cgroup>,
    open: FxHashMap<u64, Connection>,
    closed: Vec<Connection>,
    devices: BTreeMap<u32, Device>,
    /// Per device: sector → queued bio, for matching completions (merged requests cover a
    /// range of sectors).
    pending: FxHashMap<u32, BTreeMap<u64, PendingBio>>,
    first_ts: Option<u64>,
    last_ts: u64,
    /// Completions whose queue event was not seen (queued before capture, or out of scope on
    /// a host-wide run they still count toward the device).
    pub unmatched_completions: u64,
    /// A socket I/O record has been aggregated: open connections' bytes are known.
    sock_io_seen: bool,
    /// Sockets whose connection closed, with the close's time (see [`MAX_RECENTLY_CLOSED`]).
    recently_closed: FxHashMap<u64, u64>,
    udp: sockio::Udp,
    dns: sockio::Dns,
    /// Event time at which the oldest pending DNS query times out.
    dns_deadline: u64,
    sock_health: sockio::Health,
    requests: crate::requests::Requests,
}

/// Exit status in wait(2) encoding → the code a shell reports.
pub fn exit_code(status: u32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        128 + signal as i32
    }
}

impl Aggregator {
    /// Aggregates the whole host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Aggregates only what `scope` covers (and what its processes fork).
    pub fn scoped(scope: Scope) -> Self {
        Self {
            scope: Some(scope),
            ..Self::default()
        }
    }

    fn in_scope(&self, pid: u32, cgroup_id: u64) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|s| s.contains(pid, cgroup_id))
    }

    fn conn_in_scope(&self, c: &Connection) -> bool {
        self.scope.as_ref().is_none_or(|s| {
            s.cgroups.contains(&c.sock_cgroup_id)
                || (c.owner_pid != 0 && s.pids.contains(&c.owner_pid))
        })
    }

    /// Replaces the set of ignored cgroups, and forgets what they had going: their exits,
    /// closes and completions will not arrive to finish it.
    pub fn set_ignored(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.ignored = ids.into_iter().collect();
        if self.ignored.is_empty() {
            return;
        }
        let ignored = &self.ignored;
        self.processes
            .retain(|_, p| !ignored.contains(&p.cgroup_id));
        self.open
            .retain(|_, c| !ignored.contains(&c.sock_cgroup_id));
        for bios in self.pending.values_mut() {
            bios.retain(|_, b| !ignored.contains(&b.cgroup_id));
        }
        self.dns.retain_cgroups(|id| !ignored.contains(&id));
        self.requests.retain_cgroups(|id| !ignored.contains(&id));
        self.dns_deadline = self.dns.next_deadline();
        self.cgroups.retain(|id, _| !ignored.contains(id));
    }

    pub fn apply(&mut self, event: &Event) {
        if !self.ignored.is_empty()
            && event
                .owner_cgroup()
                .is_some_and(|id| self.ignored.contains(&id))
        {
            self.ignored_events += 1;
            return;
        }
        let ts = event.ts_ns();
        self.first_ts.get_or_insert(ts);
        self.last_ts = self.last_ts.max(ts);
        if self.last_ts > self.dns_deadline {
            self.dns.expire(self.last_ts);
            self.dns_deadline = self.dns.next_deadline();
        }
        match event {
            Event::Exec(e) => self.exec(e),
            Event::Fork(e) => self.fork(e),
            Event::Exit(e) => self.exit(e),
            Event::TcpState(e) => self.tcp_state(e),
            Event::Tcp(e) => self.tcp_event(e),
            Event::Block(e) => self.block(e),
            Event::SockIo(e) => self.sock_io(e),
        }
    }

    fn exec(&mut self, e: &ExecEvent) {
        let h = &e.header;
        if !self.in_scope(h.pid, h.cgroup_id) {
            return;
        }
        self.totals.execs += 1;
        self.cgroups.entry(h.cgroup_id).or_default().execs += 1;
        let p = self.processes.entry(h.pid).or_default();
        p.execs += 1;
        p.ppid = Some(e.ppid);
        p.comm = c_str(&e.comm);
        let len = (e.filename_len as usize).min(e.filename.len());
        p.filename = Some(c_str(&e.filename[..len]));
        p.cgroup_id = h.cgroup_id;
    }

    fn fork(&mut self, e: &ForkEvent) {
        let h = &e.header;
        if !self.in_scope(e.parent_tgid, h.cgroup_id) {
            return;
        }
        if e.child_tgid == e.parent_tgid {
            self.totals.threads += 1;
            return;
        }
        if let Some(scope) = &mut self.scope {
            scope.pids.insert(e.child_tgid);
        }
        self.totals.forks += 1;
        self.cgroups.entry(h.cgroup_id).or_default().forks += 1;
        let parent_comm = self.processes.get(&e.parent_tgid).map(|p| p.comm.clone());
        if let Some(parent) = self.processes.get_mut(&e.parent_tgid) {
            parent.forks += 1;
        } else {
            self.processes.insert(
                e.parent_tgid,
                Process {
                    forks: 1,
                    cgroup_id: h.cgroup_id,
                    ..Default::default()
                },
            );
        }
        let child = self.processes.entry(e.child_tgid).or_default();
        child.ppid = Some(e.parent_tgid);
        child.cgroup_id = h.cgroup_id;
        if let Some(comm) = parent_comm {
            child.comm = comm;
        }
    }

    fn exit(&mut self, e: &ExitEvent) {
        let h = &e.header;
        if e.group_dead == 0 || !self.in_scope(h.pid, h.cgroup_id) {
            return;
        }
        let code = exit_code(e.exit_status);
        self.totals.exits += 1;
        *self.totals.exit_codes.entry(code).or_default() += 1;
        let cg = self.cgroups.entry(h.cgroup_id).or_default();
        cg.exits += 1;
        *cg.exit_codes.entry(code).or_default() += 1;
        let p = self.processes.entry(h.pid).or_default();
        p.exit_code = Some(code);
        // The last thread to exit may be a named worker thread: keep the exec'd name.
        if p.comm.is_empty() {
            p.comm = c_str(&e.comm);
        }
        p.cgroup_id = h.cgroup_id;
    }

    fn tcp_state(&mut self, e: &TcpStateEvent) {
        use tcp_state::*;
        let h = &e.header;
        let (old, new) = (e.old_state, e.new_state);
        let conn = match self.open.entry(e.sock_id) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => {
                let role = match new {
                    SYN_SENT => Role::Active,
                    SYN_RECV | ESTABLISHED => Role::Passive,
                    // Listeners and transitions of sockets opened before capture started.
                    _ => return,
                };
                if !self.recently_closed.is_empty() {
                    self.recently_closed.remove(&e.sock_id);
                }
                slot.insert(Connection::new(e, role))
            }
        };
        if conn.since_start && e.sock_cgroup_id != 0 {
            // The socket's own cgroup, now that a record carries it.
            conn.sock_cgroup_id = e.sock_cgroup_id;
        }
        conn.state = new;
        conn.last_ts = h.ts_ns;
        conn.tuple = e.tuple;
        // Transitions a syscall drives (connect, close) run in the owner's context; the
        // others may run in softirq on behalf of anyone, so they never set the owner.
        let owner_context = matches!(
            (old, new),
            (CLOSE, SYN_SENT) | (ESTABLISHED, FIN_WAIT1) | (CLOSE_WAIT, LAST_ACK)
        );
        if owner_context && conn.owner_pid == 0 {
            conn.owner_pid = h.pid;
        }
        conn.fin_acked |= matches!(
            (old, new),
            (FIN_WAIT1, FIN_WAIT2) | (CLOSING, TIME_WAIT | CLOSE) | (LAST_ACK, CLOSE)
        );
        // FIN_WAIT2 → CLOSE is also how an orphan's FIN_WAIT2 timeout ends; transitions
        // cannot tell the two apart, and the peer's FIN is by far the common case.
        conn.fin_received |= matches!(
            (old, new),
            (ESTABLISHED, CLOSE_WAIT)
                | (FIN_WAIT1, CLOSING | TIME_WAIT)
                | (FIN_WAIT2, TIME_WAIT | CLOSE)
        );
        let newly_established = new == ESTABLISHED && !conn.established;
        conn.established |= new == ESTABLISHED;
        let role = conn.role;
        let sock_cgroup_id = conn.sock_cgroup_id;
        let closing = new == CLOSE;
        if closing {
            conn.closed = Some(CloseStats {
                valid: e.stats_valid,
                bytes_acked: e.bytes_acked,
                bytes_received: e.bytes_received,
                segs_in: e.segs_in,
                segs_out: e.segs_out,
                srtt_us: e.srtt_us,
            });
        }
        let in_scope = self.conn_in_scope(&self.open[&e.sock_id]);
        if in_scope && newly_established {
            let cg = self.cgroups.entry(sock_cgroup_id).or_default();
            match role {
                Role::Active => {
                    self.totals.connects += 1;
                    cg.tcp_connects += 1;
                    self.requests
                        .established(&e.tuple, ProtoRole::Client, sock_cgroup_id);
                }
                Role::Passive => {
                    self.totals.accepts += 1;
                    cg.tcp_accepts += 1;
                    self.requests
                        .established(&e.tuple, ProtoRole::Server, sock_cgroup_id);
                }
                // Established before capture: no open was seen.
                Role::Unknown => {}
            }
        }
        if closing {
            let conn = self.open.remove(&e.sock_id).expect("present");
            if self.sock_io_seen {
                if self.recently_closed.len() >= MAX_RECENTLY_CLOSED {
                    // Keep the newer half: late calls come within moments of the close.
                    let mut times: Vec<u64> = self.recently_closed.values().copied().collect();
                    let (_, &mut median, _) = times.select_nth_unstable(MAX_RECENTLY_CLOSED / 2);
                    self.recently_closed.retain(|_, &mut t| t > median);
                }
                self.recently_closed.insert(e.sock_id, h.ts_ns);
                self.dns.closed(e.sock_id);
                self.requests.closed(e.sock_id, &e.tuple);
            }
            if in_scope {
                self.close(conn);
            }
        }
    }

    fn close(&mut self, conn: Connection) {
        if !conn.established {
            if conn.role == Role::Active {
                self.totals.connect_failures += 1;
                self.cgroups
                    .entry(conn.sock_cgroup_id)
                    .or_default()
                    .tcp_connect_failures += 1;
            }
        } else {
            self.totals.closes += 1;
            let (kernel_sent, kernel_received) =
                conn.payload().expect("closing connections carry stats");
            // Seen from its start, every call should be there: a difference is counted —
            // once the row is reported (see `byte_mismatches`), as data the kernel received
            // before it closed the socket may still be read after; a row that cannot be
            // kept is judged now.
            if self.closed.len() >= MAX_CLOSED_CONNECTIONS && conn.bytes_mismatch(self.sock_io_seen)
            {
                self.totals.byte_mismatches += 1;
            }
            // The calls were counted as they happened; the kernel's count adds what they
            // did not see (all of it without socket I/O; bytes from before capture for a
            // connection opened earlier), and never takes any back.
            let sent = kernel_sent.unwrap_or(0).saturating_sub(conn.call_sent);
            let received = kernel_received
                .unwrap_or(0)
                .saturating_sub(conn.call_received);
            self.totals.bytes_sent += sent;
            self.totals.bytes_received += received;
            let cg = self.cgroups.entry(conn.sock_cgroup_id).or_default();
            cg.tcp_connections += 1;
            cg.tcp_bytes_sent += sent;
            cg.tcp_bytes_received += received;
            if conn.owner_pid != 0 {
                let p = self.processes.entry(conn.owner_pid).or_default();
                p.tcp_bytes_sent += sent;
                p.tcp_bytes_received += received;
            }
        }
        if self.closed.len() < MAX_CLOSED_CONNECTIONS {
            self.closed.push(conn);
        }
    }

    fn tcp_event(&mut self, e: &TcpEvent) {
        let h = &e.header;
        let in_scope = match self.open.get(&e.sock_id) {
            Some(conn) if e.sock_id != 0 => self.conn_in_scope(conn),
            _ => {
                self.in_scope(h.pid, h.cgroup_id)
                    || (e.sock_cgroup_id != 0 && self.in_scope(0, e.sock_cgroup_id))
            }
        };
        if !in_scope {
            return;
        }
        let conn = if e.sock_id != 0 {
            self.open.get_mut(&e.sock_id)
        } else {
            None
        };
        // The socket's cgroup, as for the connection's other counters; the task's when the
        // event carries none.
        let cgroup_id = match &conn {
            Some(c) => c.sock_cgroup_id,
            None if e.sock_cgroup_id != 0 => e.sock_cgroup_id,
            None => h.cgroup_id,
        };
        let cg = self.cgroups.entry(cgroup_id).or_default();
        match h.kind {
            kind::TCP_RETRANSMIT => {
                self.totals.retransmits += 1;
                cg.tcp_retransmits += 1;
                if let Some(c) = conn {
                    c.retransmits += 1;
                }
            }
            kind::TCP_RESET_SENT => {
                self.totals.resets_sent += 1;
                cg.tcp_resets_sent += 1;
                if let Some(c) = conn {
                    c.resets_sent += 1;
                }
            }
            _ => {
                self.totals.resets_received += 1;
                cg.tcp_resets_received += 1;
                if let Some(c) = conn {
                    c.resets_received += 1;
                }
            }
        }
    }

    fn sock_io(&mut self, r: &SockIo) {
        let e = &r.event;
        let h = &e.header;
        let in_scope = match self.open.get(&e.sock_id) {
            Some(c) if e.protocol == IPPROTO_TCP => {
                self.conn_in_scope(c) || self.in_scope(h.pid, h.cgroup_id)
            }
            _ => self.in_scope(h.pid, h.cgroup_id),
        };
        if !in_scope {
            return;
        }
        self.sock_io_seen = true;
        let health = &mut self.sock_health;
        health.calls += 1;
        health.payload_bytes += u64::from(e.payload_len);
        health.unreported_msgs += u64::from(e.unreported_msgs);
        health.payload_faults += u64::from(e.flags & sock_flags::PAYLOAD_FAULT != 0);
        match e.protocol {
            IPPROTO_TCP => self.tcp_io(e, &r.payload),
            IPPROTO_UDP => self.udp_io(e),
            _ => {}
        }
        self.dns.record(e, &r.payload);
        self.dns_deadline = self.dns.next_deadline();
    }

    /// Live TCP bytes: the call's bytes go to its connection, the totals, the cgroup of
    /// the socket and the calling process as they happen.
    fn tcp_io(&mut self, e: &event_abi::SockIoEvent, payload: &[u8]) {
        let h = &e.header;
        // Connections first seen by a call are only forgotten at their close; without
        // their state records (the TCP signal off) none would ever close: bounded.
        let room = self.open.len() < MAX_OPEN_CONNECTIONS;
        let conn = match self.open.entry(e.sock_id) {
            Entry::Occupied(slot) => Some(slot.into_mut()),
            Entry::Vacant(slot) => {
                if self.recently_closed.contains_key(&e.sock_id) {
                    // A call that completed after the kernel closed the connection (data
                    // it had received, read late): its bytes are in the counters read at
                    // close, and count only toward the row's call sums.
                    if let Some(c) = self
                        .closed
                        .iter_mut()
                        .rev()
                        .find(|c| c.sock_id == e.sock_id)
                    {
                        if e.direction == sock_dir::SEND {
                            c.call_sent = c.call_sent.saturating_add(e.bytes);
                        } else {
                            c.call_received = c.call_received.saturating_add(e.bytes);
                        }
                    }
                    return;
                }
                room.then(|| slot.insert(Connection::since_start(e)))
            }
        };
        let mut cgroup_id = h.cgroup_id;
        let mut tcp_role = None;
        if let Some(conn) = conn {
            tcp_role = match conn.role {
                Role::Active => Some(ProtoRole::Client),
                Role::Passive => Some(ProtoRole::Server),
                Role::Unknown => None,
            };
            if conn.owner_pid == 0 {
                conn.owner_pid = h.pid;
            }
            conn.last_ts = conn.last_ts.max(h.ts_ns);
            if conn.sock_cgroup_id != 0 {
                cgroup_id = conn.sock_cgroup_id;
            }
            if e.direction == sock_dir::SEND {
                conn.call_sent = conn.call_sent.saturating_add(e.bytes);
            } else {
                conn.call_received = conn.call_received.saturating_add(e.bytes);
            }
        }
        let cg = self.cgroups.entry(cgroup_id).or_default();
        let p = self.processes.entry(h.pid).or_default();
        if p.cgroup_id == 0 {
            p.cgroup_id = h.cgroup_id;
        }
        if e.direction == sock_dir::SEND {
            self.totals.bytes_sent = self.totals.bytes_sent.saturating_add(e.bytes);
            cg.tcp_bytes_sent = cg.tcp_bytes_sent.saturating_add(e.bytes);
            p.tcp_bytes_sent = p.tcp_bytes_sent.saturating_add(e.bytes);
        } else {
            self.totals.bytes_received = self.totals.bytes_received.saturating_add(e.bytes);
            cg.tcp_bytes_received = cg.tcp_bytes_received.saturating_add(e.bytes);
            p.tcp_bytes_received = p.tcp_bytes_received.saturating_add(e.bytes);
        }
        self.requests.record(e, payload, cgroup_id, tcp_role);
    }

    fn udp_io(&mut self, e: &event_abi::SockIoEvent) {
        let cg = self.cgroups.entry(e.header.cgroup_id).or_default();
        if e.direction == sock_dir::SEND {
            cg.udp_bytes_sent = cg.udp_bytes_sent.saturating_add(e.bytes);
            cg.udp_datagrams_sent += 1;
        } else {
            cg.udp_bytes_received = cg.udp_bytes_received.saturating_add(e.bytes);
            cg.udp_datagrams_received += 1;
        }
        self.udp.record(e);
    }

    fn block(&mut self, e: &BlockEvent) {
        let h = &e.header;
        match h.kind {
            kind::BLOCK_QUEUE => {
                if !self.in_scope(h.pid, h.cgroup_id) {
                    return;
                }
                let pending = self.pending.entry(e.dev).or_default();
                if pending.len() >= MAX_PENDING_BIOS {
                    // Completions were lost; start over rather than grow without bound.
                    self.unmatched_completions += pending.len() as u64;
                    pending.clear();
                }
                pending.insert(
                    e.sector,
                    PendingBio {
                        ts: h.ts_ns,
                        pid: h.pid,
                        cgroup_id: h.cgroup_id,
                    },
                );
            }
            kind::BLOCK_COMPLETE => self.block_complete(e),
            // Issue marks the hand-over to the driver; latency is measured queue → complete.
            _ => {}
        }
    }

    fn block_complete(&mut self, e: &BlockEvent) {
        let sectors = u64::from(e.bytes >> 9).max(1);
        let mut submitter = None;
        if let Some(pending) = self.pending.get_mut(&e.dev) {
            // A merged request completes every bio queued inside its sector range.
            let covered: Vec<u64> = pending
                .range(e.sector..e.sector.saturating_add(sectors))
                .map(|(&s, _)| s)
                .collect();
            for sector in covered {
                let bio = pending.remove(&sector).expect("listed");
                submitter.get_or_insert(bio);
            }
        }
        if submitter.is_none() {
            if self.scope.is_some() {
                return;
            }
            self.unmatched_completions += 1;
        }
        let dev = self.devices.entry(e.dev).or_default();
        let bytes = u64::from(e.bytes);
        let (mut read, mut written) = (0, 0);
        match e.op {
            block_op::READ => {
                dev.reads += 1;
                dev.read_bytes += bytes;
                read = bytes;
            }
            block_op::WRITE => {
                dev.writes += 1;
                dev.write_bytes += bytes;
                written = bytes;
            }
            _ => dev.other += 1,
        }
        if e.error != 0 {
            dev.errors += 1;
        }
        if let Some(bio) = submitter {
            let latency = e.header.ts_ns.saturating_sub(bio.ts).max(1);
            dev.latency_ns.saturating_record(latency);
            dev.latency_sum_ns = dev.latency_sum_ns.saturating_add(latency);
            dev.latency_buckets[LATENCY_BUCKETS_NS.partition_point(|&b| b < latency)] += 1;
            let p = self.processes.entry(bio.pid).or_default();
            p.block_read_bytes += read;
            p.block_write_bytes += written;
            let cg = self.cgroups.entry(bio.cgroup_id).or_default();
            cg.block_read_bytes += read;
            cg.block_write_bytes += written;
            match e.op {
                block_op::READ => cg.block_reads += 1,
                block_op::WRITE => cg.block_writes += 1,
                _ => {}
            }
        }
    }

    /// For a long-running consumer that never resets (the agent): forgets what was already
    /// reported once and only lists — processes that exited and connections that closed —
    /// so memory stays bounded. Every counter (totals, cgroups, devices) is kept.
    pub fn forget_finished(&mut self) {
        self.processes.retain(|_, p| p.exit_code.is_none());
        // The rows go; what they said about mismatches stays in the counter.
        self.totals.byte_mismatches += self.listed_mismatches();
        self.closed.clear();
    }

    /// Closed connections listed now whose calls and kernel counters differ.
    fn listed_mismatches(&self) -> u64 {
        let seen = self.sock_io_seen;
        self.closed
            .iter()
            .filter(|c| c.bytes_mismatch(seen))
            .count() as u64
    }

    /// Drops the counters of cgroups that no longer exist (the agent, after a grace period).
    pub fn forget_cgroups(&mut self, ids: &[u64]) {
        for id in ids {
            self.cgroups.remove(id);
        }
        self.requests.forget_cgroups(ids);
    }

    /// Starts a new interval: counters go back to zero; what is still live (open
    /// connections, queued I/O, known processes) is kept so the next interval matches it.
    pub fn reset_interval(&mut self) {
        self.totals = Totals::default();
        self.cgroups.clear();
        self.closed.clear();
        self.devices.clear();
        self.udp.reset();
        self.dns.reset();
        self.requests.reset();
        self.sock_health = sockio::Health::default();
        self.processes.retain(|_, p| p.exit_code.is_none());
        for p in self.processes.values_mut() {
            let comm = std::mem::take(&mut p.comm);
            *p = Process {
                ppid: p.ppid,
                comm,
                filename: p.filename.take(),
                cgroup_id: p.cgroup_id,
                ..Default::default()
            };
        }
        self.first_ts = None;
    }

    pub fn snapshot(
        &self,
        backend: &str,
        lost_events: u64,
        malformed: u64,
        names: &dyn Names,
    ) -> Snapshot {
        let comm_of = |pid: u32| -> String {
            self.processes
                .get(&pid)
                .map(|p| p.comm.clone())
                .filter(|c| !c.is_empty())
                .or_else(|| names.comm(pid))
                .unwrap_or_default()
        };
        let t = &self.totals;
        let mut processes: Vec<ProcessRow> = self
            .processes
            .iter()
            .map(|(&pid, p)| ProcessRow {
                pid,
                ppid: p.ppid,
                comm: if p.comm.is_empty() {
                    comm_of(pid)
                } else {
                    p.comm.clone()
                },
                filename: p.filename.clone(),
                cgroup_id: p.cgroup_id,
                execs: p.execs,
                forks: p.forks,
                exit_code: p.exit_code,
                tcp_bytes_sent: p.tcp_bytes_sent,
                tcp_bytes_received: p.tcp_bytes_received,
                block_read_bytes: p.block_read_bytes,
                block_write_bytes: p.block_write_bytes,
            })
            .collect();
        processes.sort_by_key(|p| p.pid);

        let mut conns: Vec<&Connection> = self.closed.iter().collect();
        let mut open: Vec<&Connection> = self
            .open
            .values()
            .filter(|c| self.conn_in_scope(c))
            .collect();
        open.sort_by_key(|c| (c.first_ts, c.tuple.sport, c.tuple.dport));
        conns.extend(open);
        let connections = conns
            .into_iter()
            .map(|c| {
                let stat = |bit: u32| c.closed.filter(|s| s.valid & bit != 0);
                // Closed: the kernel's counters. Open: the calls so far, when calls are seen.
                let live = self.sock_io_seen.then_some((c.call_sent, c.call_received));
                let (bytes_sent, bytes_received) = c
                    .payload()
                    .unwrap_or_else(|| (live.map(|l| l.0), live.map(|l| l.1)));
                ConnectionRow {
                    saddr: addr(c.tuple.family, &c.tuple.saddr),
                    sport: c.tuple.sport,
                    daddr: addr(c.tuple.family, &c.tuple.daddr),
                    dport: c.tuple.dport,
                    role: match c.role {
                        Role::Active => "active",
                        Role::Passive => "passive",
                        Role::Unknown => "unknown",
                    }
                    .into(),
                    pid: c.owner_pid,
                    comm: if c.owner_pid == 0 {
                        String::new()
                    } else {
                        comm_of(c.owner_pid)
                    },
                    cgroup_id: c.sock_cgroup_id,
                    state: state_name(c.state).into(),
                    bytes_sent,
                    bytes_received,
                    segs_in: stat(tcp_stats::SEGS_IN).map(|s| s.segs_in),
                    segs_out: stat(tcp_stats::SEGS_OUT).map(|s| s.segs_out),
                    duration_us: c.last_ts.saturating_sub(c.first_ts) / 1000,
                    retransmits: c.retransmits,
                    resets_sent: c.resets_sent,
                    resets_received: c.resets_received,
                    srtt_us: stat(tcp_stats::SRTT).map(|s| s.srtt_us),
                    call_bytes_sent: live.map(|l| l.0),
                    call_bytes_received: live.map(|l| l.1),
                    since_start: c.since_start,
                }
            })
            .collect();

        let devices = self
            .devices
            .iter()
            .map(|(&dev, d)| {
                let (major, minor) = (dev >> 20, dev & 0xf_ffff);
                let us = |ns: u64| ns as f64 / 1000.0;
                DeviceRow {
                    dev: format!("{major}:{minor}"),
                    name: names.device(major, minor).unwrap_or_default(),
                    reads: d.reads,
                    writes: d.writes,
                    other: d.other,
                    read_bytes: d.read_bytes,
                    write_bytes: d.write_bytes,
                    errors: d.errors,
                    latency_us: Latency {
                        count: d.latency_ns.len(),
                        p50: us(d.latency_ns.value_at_quantile(0.5)),
                        p99: us(d.latency_ns.value_at_quantile(0.99)),
                        max: us(d.latency_ns.max()),
                    },
                    latency_sum_ns: d.latency_sum_ns,
                    latency_buckets: d.latency_buckets.to_vec(),
                }
            })
            .collect();

        let mut cgroups: Vec<CgroupRow> = self
            .cgroups
            .iter()
            .map(|(&id, c)| CgroupRow {
                cgroup_id: id,
                execs: c.execs,
                forks: c.forks,
                exits: c.exits,
                tcp_connections: c.tcp_connections,
                tcp_bytes_sent: c.tcp_bytes_sent,
                tcp_bytes_received: c.tcp_bytes_received,
                block_read_bytes: c.block_read_bytes,
                block_write_bytes: c.block_write_bytes,
                exit_codes: c
                    .exit_codes
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                tcp_connects: c.tcp_connects,
                tcp_connect_failures: c.tcp_connect_failures,
                tcp_accepts: c.tcp_accepts,
                tcp_retransmits: c.tcp_retransmits,
                tcp_resets_sent: c.tcp_resets_sent,
                tcp_resets_received: c.tcp_resets_received,
                block_reads: c.block_reads,
                block_writes: c.block_writes,
                udp_bytes_sent: c.udp_bytes_sent,
                udp_bytes_received: c.udp_bytes_received,
                udp_datagrams_sent: c.udp_datagrams_sent,
                udp_datagrams_received: c.udp_datagrams_received,
                attribution: None,
            })
            .collect();
        cgroups.sort_by_key(|c| c.cgroup_id);

        Snapshot {
            backend: backend.to_string(),
            duration_s: self
                .first_ts
                .map_or(0.0, |f| self.last_ts.saturating_sub(f) as f64 / 1e9),
            events: 0,
            lost_events,
            lost_events_per_cpu: Vec::new(),
            malformed_records: malformed,
            late_events: 0,
            process: ProcessSummary {
                execs: t.execs,
                forks: t.forks,
                threads: t.threads,
                exits: t.exits,
                exit_codes: t
                    .exit_codes
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                processes,
            },
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
                byte_mismatches: t.byte_mismatches + self.listed_mismatches(),
                connections,
            },
            udp: self.udp.summary(&comm_of),
            dns: self.dns.summary(),
            http: self.requests.http_summary(),
            redis: self.requests.redis_summary(),
            mysql: self
                .requests
                .query_summary(ksight_protocols::Protocol::Mysql),
            postgres: self
                .requests
                .query_summary(ksight_protocols::Protocol::Postgres),
            protocols: self.requests.protocols_summary(),
            edges: self.requests.edges(),
            socket_io: SocketIoSummary {
                calls: self.sock_health.calls,
                payload_bytes: self.sock_health.payload_bytes,
                unreported_msgs: self.sock_health.unreported_msgs,
                payload_faults: self.sock_health.payload_faults,
            },
            block: BlockSummary { devices },
            cgroups,
            containers: Vec::new(),
        }
    }
}

fn addr(family: u16, bytes: &[u8; 16]) -> String {
    if family == event_abi::AF_INET6 {
        Ipv6Addr::from(*bytes).to_string()
    } else {
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
    }
}

pub fn state_name(state: u32) -> &'static str {
    match state {
        tcp_state::ESTABLISHED => "ESTABLISHED",
        tcp_state::SYN_SENT => "SYN_SENT",
        tcp_state::SYN_RECV => "SYN_RECV",
        tcp_state::FIN_WAIT1 => "FIN_WAIT1",
        tcp_state::FIN_WAIT2 => "FIN_WAIT2",
        tcp_state::TIME_WAIT => "TIME_WAIT",
        tcp_state::CLOSE => "CLOSE",
        tcp_state::CLOSE_WAIT => "CLOSE_WAIT",
        tcp_state::LAST_ACK => "LAST_ACK",
        tcp_state::LISTEN => "LISTEN",
        tcp_state::CLOSING => "CLOSING",
        tcp_state::NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}
