//! The one table of record kinds: for each [`kind`](crate::kind), its record type, the
//! signal it belongs to, the tracepoint both backends hook, how each backend hooks it and
//! the kernel that has it. The eBPF loader, the kernel module (checked by
//! `event-abi/tests/kinds_c.rs`), the engine, `detect` and the agent read these rows
//! instead of keeping their own copies.
//!
//! Adding a record kind: a constant in [`kind`](crate::kind) and its record (with
//! [`record_size`](crate::record_size)), one row in [`KINDS`]; then its producers (the eBPF
//! program named in the row, the module probe named in the row and listed in
//! `kmod-c/ks_probes.c` `ks_tracepoints[]`) and its aggregation. A new signal is also one
//! row in [`SIGNALS`] and a variant of [`Signal`].

use core::fmt;
use core::mem::size_of;

use crate::{
    BlockEvent, ExecEvent, ExitEvent, ForkEvent, SockIoEvent, TcpEvent, TcpStateEvent, kind,
};

/// What ksight reports on, as fidelity reports, `ksight_signal_status` and the JSON name
/// them ([`Signal::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// exec, fork, exit.
    Process,
    /// TCP lifecycle: connect, accept, close, duration.
    Tcp,
    /// Per-connection counters read at close (bytes, segments, retransmits, RTT); carried
    /// by the TCP state records, so it has no kind of its own.
    TcpCloseStats,
    TcpRetransmits,
    TcpResets,
    /// Block I/O: count, bytes, latency.
    Block,
    /// Completed send/receive calls on TCP and UDP sockets, with payload: live TCP bytes,
    /// UDP flows, DNS.
    SocketIo,
}

/// The configuration switch (`signals.process`, `signals.tcp`, `signals.block`) that
/// turns a signal on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Process,
    Tcp,
    Block,
    SocketIo,
}

/// A kernel version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kernel {
    pub major: u16,
    pub minor: u16,
}

impl Kernel {
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// The later of two versions.
    pub const fn max(self, other: Kernel) -> Kernel {
        if self.major > other.major || (self.major == other.major && self.minor >= other.minor) {
            self
        } else {
            other
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// How the eBPF backend attaches its program to the tracepoint. (The module always
/// registers a probe with `tracepoint_probe_register`, which receives `TP_PROTO`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attach {
    /// A classic tracepoint program: reads the record at offsets from the tracepoint's
    /// tracefs format file.
    Classic,
    /// A raw tracepoint program: reads the `TP_PROTO` arguments.
    Raw,
}

impl Attach {
    /// The first kernel with this program type.
    pub const fn min_kernel(self) -> Kernel {
        match self {
            Attach::Classic => Kernel::new(4, 7),
            Attach::Raw => Kernel::new(4, 17),
        }
    }

    /// As `ksight detect` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Attach::Classic => "tracepoint",
            Attach::Raw => "raw_tracepoint",
        }
    }
}

/// A kernel tracepoint, `category:name` (its tracefs directory is
/// `events/<category>/<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tracepoint {
    pub category: &'static str,
    pub name: &'static str,
}

impl fmt::Display for Tracepoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.category, self.name)
    }
}

/// A second hook a kind needs besides the one that emits its records: the entry of the
/// system call whose exit emits them (to time it). It records nothing itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHook {
    pub tracepoint: Tracepoint,
    pub ebpf_program: &'static str,
    pub ebpf_attach: Attach,
    pub kmod_probe: &'static str,
}

/// One record kind: a row of [`KINDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindDef {
    /// The [`kind`](crate::kind) constant.
    pub kind: u16,
    /// Short name, as tools print it ("exec", "tcp_reset_sent").
    pub name: &'static str,
    /// The record type's name in this crate.
    pub record: &'static str,
    /// `size_of` the record (checked against [`crate::record_size`] at compile time).
    pub size: usize,
    /// The signal the kind's records make (the TCP state records also carry
    /// [`Signal::TcpCloseStats`], see [`SignalDef::records_of`]).
    pub signal: Signal,
    /// The tracepoint both backends hook for this kind.
    pub tracepoint: Tracepoint,
    /// The eBPF program (function name in the object, under 16 bytes).
    pub ebpf_program: &'static str,
    /// How the eBPF program is attached.
    pub ebpf_attach: Attach,
    /// The module's probe function (`kmod-c/ks_probes.c`).
    pub kmod_probe: &'static str,
    /// The first kernel with the tracepoint (the design's floor for the signal).
    pub min_kernel: Kernel,
    /// The hook at the start of what the record completes, if any.
    pub entry: Option<EntryHook>,
}

impl KindDef {
    /// With an entry hook: tracepoint (category, name), eBPF program and attach, the
    /// module's probe.
    const fn with_entry(
        mut self,
        tracepoint: (&'static str, &'static str),
        ebpf: (&'static str, Attach),
        kmod_probe: &'static str,
    ) -> Self {
        self.entry = Some(EntryHook {
            tracepoint: Tracepoint {
                category: tracepoint.0,
                name: tracepoint.1,
            },
            ebpf_program: ebpf.0,
            ebpf_attach: ebpf.1,
            kmod_probe,
        });
        self
    }

    /// The first kernel the eBPF program can run on: the tracepoint's and its program
    /// type's floor (the object as a whole may need more, e.g. for its helpers).
    pub const fn ebpf_min_kernel(&self) -> Kernel {
        self.min_kernel.max(self.ebpf_attach.min_kernel())
    }
}

/// A row of [`KINDS`], its columns in the order the table lists them.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per column keeps KINDS readable as a table"
)]
const fn row(
    kind: u16,
    name: &'static str,
    record: &'static str,
    size: usize,
    signal: Signal,
    tracepoint: (&'static str, &'static str),
    ebpf: (&'static str, Attach),
    kmod_probe: &'static str,
    min_kernel: (u16, u16),
) -> KindDef {
    KindDef {
        kind,
        name,
        record,
        size,
        signal,
        tracepoint: Tracepoint {
            category: tracepoint.0,
            name: tracepoint.1,
        },
        ebpf_program: ebpf.0,
        ebpf_attach: ebpf.1,
        kmod_probe,
        min_kernel: Kernel::new(min_kernel.0, min_kernel.1),
        entry: None,
    }
}

/// Number of record kinds (kinds are dense: 1 ..= COUNT).
pub const COUNT: usize = kind::END as usize - 1;

/// Every record kind, in kind order (`KINDS[k - 1].kind == k`).
///
/// Columns: kind, name, record type and size, signal, tracepoint (category, name),
/// eBPF program and how it attaches, the module's probe, the first kernel with the
/// tracepoint.
#[rustfmt::skip]
pub const KINDS: [KindDef; COUNT] = {
    use Attach::{Classic, Raw};
    use Signal::*;
    [
        row(kind::EXEC, "exec", "ExecEvent", size_of::<ExecEvent>(), Process,
            ("sched", "sched_process_exec"), ("ks_exec", Classic), "ks_probe_exec", (4, 14)),
        row(kind::FORK, "fork", "ForkEvent", size_of::<ForkEvent>(), Process,
            ("sched", "sched_process_fork"), ("ks_fork", Raw), "ks_probe_fork", (4, 14)),
        row(kind::EXIT, "exit", "ExitEvent", size_of::<ExitEvent>(), Process,
            ("sched", "sched_process_exit"), ("ks_exit", Classic), "ks_probe_exit", (4, 14)),
        row(kind::TCP_STATE, "tcp_state", "TcpStateEvent", size_of::<TcpStateEvent>(), Tcp,
            ("sock", "inet_sock_set_state"), ("ks_tcp_state", Classic),
            "ks_probe_sock_set_state", (4, 16)),
        row(kind::TCP_RETRANSMIT, "tcp_retransmit", "TcpEvent", size_of::<TcpEvent>(),
            TcpRetransmits, ("tcp", "tcp_retransmit_skb"), ("ks_tcp_retrans", Classic),
            "ks_probe_tcp_retransmit", (4, 15)),
        row(kind::TCP_RESET_SENT, "tcp_reset_sent", "TcpEvent", size_of::<TcpEvent>(),
            TcpResets, ("tcp", "tcp_send_reset"), ("ks_tcp_rst_send", Classic),
            "ks_probe_tcp_send_reset", (4, 15)),
        row(kind::TCP_RESET_RECEIVED, "tcp_reset_received", "TcpEvent", size_of::<TcpEvent>(),
            TcpResets, ("tcp", "tcp_receive_reset"), ("ks_tcp_rst_recv", Classic),
            "ks_probe_tcp_receive_reset", (4, 15)),
        row(kind::BLOCK_QUEUE, "block_queue", "BlockEvent", size_of::<BlockEvent>(), Block,
            ("block", "block_bio_queue"), ("ks_blk_queue", Classic), "ks_probe_bio_queue",
            (4, 14)),
        row(kind::BLOCK_ISSUE, "block_issue", "BlockEvent", size_of::<BlockEvent>(), Block,
            ("block", "block_rq_issue"), ("ks_blk_issue", Classic), "ks_probe_rq_issue",
            (4, 14)),
        row(kind::BLOCK_COMPLETE, "block_complete", "BlockEvent", size_of::<BlockEvent>(),
            Block, ("block", "block_rq_complete"), ("ks_blk_complete", Classic),
            "ks_probe_rq_complete", (4, 14)),
        row(kind::SOCK_IO, "sock_io", "SockIoEvent", size_of::<SockIoEvent>(), SocketIo,
            ("raw_syscalls", "sys_exit"), ("ks_sys_exit", Raw), "ks_probe_sys_exit", (4, 17))
            .with_entry(("raw_syscalls", "sys_enter"), ("ks_sys_enter", Raw),
                "ks_probe_sys_enter"),
    ]
};

/// One signal: a row of [`SIGNALS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalDef {
    pub signal: Signal,
    /// As reports name it: JSON, `ksight_signal_status{signal=...}`, `detect`.
    pub name: &'static str,
    /// The configuration switch that turns it on or off.
    pub family: Family,
    /// The signal whose records carry this one: itself, except for
    /// [`Signal::TcpCloseStats`] (counters in [`Signal::Tcp`]'s close records).
    pub records_of: Signal,
}

/// Every signal, in report order.
pub const SIGNALS: [SignalDef; 7] = [
    SignalDef {
        signal: Signal::Process,
        name: "process",
        family: Family::Process,
        records_of: Signal::Process,
    },
    SignalDef {
        signal: Signal::Tcp,
        name: "tcp",
        family: Family::Tcp,
        records_of: Signal::Tcp,
    },
    SignalDef {
        signal: Signal::TcpCloseStats,
        name: "tcp_close_stats",
        family: Family::Tcp,
        records_of: Signal::Tcp,
    },
    SignalDef {
        signal: Signal::TcpRetransmits,
        name: "tcp_retransmits",
        family: Family::Tcp,
        records_of: Signal::TcpRetransmits,
    },
    SignalDef {
        signal: Signal::TcpResets,
        name: "tcp_resets",
        family: Family::Tcp,
        records_of: Signal::TcpResets,
    },
    SignalDef {
        signal: Signal::Block,
        name: "block",
        family: Family::Block,
        records_of: Signal::Block,
    },
    SignalDef {
        signal: Signal::SocketIo,
        name: "socket_io",
        family: Family::SocketIo,
        records_of: Signal::SocketIo,
    },
];

impl Signal {
    /// Every signal, in report order.
    pub const ALL: [Signal; SIGNALS.len()] = {
        let mut all = [Signal::Process; SIGNALS.len()];
        let mut i = 0;
        while i < SIGNALS.len() {
            all[i] = SIGNALS[i].signal;
            i += 1;
        }
        all
    };

    /// Its row of [`SIGNALS`] (rows follow the enum's order: checked at compile time).
    pub const fn def(self) -> &'static SignalDef {
        let all: &'static [SignalDef; SIGNALS.len()] = &SIGNALS;
        &all[self as usize]
    }

    /// "process", "tcp", "tcp_close_stats", "tcp_retransmits", "tcp_resets", "block",
    /// "socket_io".
    pub const fn name(self) -> &'static str {
        self.def().name
    }

    pub const fn family(self) -> Family {
        self.def().family
    }

    /// The signal named so, if any.
    pub fn from_name(name: &str) -> Option<Signal> {
        SIGNALS.iter().find(|s| s.name == name).map(|s| s.signal)
    }

    /// The record kinds this signal is made from (for [`Signal::TcpCloseStats`], the TCP
    /// state records), in kind order.
    pub fn kinds(self) -> impl Iterator<Item = &'static KindDef> + Clone {
        let records_of = self.def().records_of;
        let all: &'static [KindDef; COUNT] = &KINDS;
        all.iter().filter(move |k| k.signal == records_of)
    }
}

impl fmt::Display for Signal {
    /// The name; width and alignment apply (`{:<16}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The row of a record kind; `None` for an unknown kind.
pub const fn def(k: u16) -> Option<&'static KindDef> {
    let all: &'static [KindDef; COUNT] = &KINDS;
    if k == 0 || k as usize > COUNT {
        return None;
    }
    Some(&all[k as usize - 1])
}

/// The short name of a record kind ("exec", "tcp_reset_sent"); `None` for an unknown kind.
pub const fn name(k: u16) -> Option<&'static str> {
    match def(k) {
        Some(d) => Some(d.name),
        None => None,
    }
}

/// The signal a record kind belongs to; `None` for an unknown kind.
pub const fn signal(k: u16) -> Option<Signal> {
    match def(k) {
        Some(d) => Some(d.signal),
        None => None,
    }
}

/// The kind whose tracepoint is `category:name` (or just `name`), if any.
pub fn by_tracepoint(tracepoint: &str) -> Option<&'static KindDef> {
    let all: &'static [KindDef; COUNT] = &KINDS;
    all.iter().find(|k| {
        let tp = k.tracepoint;
        tracepoint == tp.name
            || tracepoint
                .split_once(':')
                .is_some_and(|(c, n)| c == tp.category && n == tp.name)
    })
}

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// The table is dense, in kind order, sized as `record_size` says, and names signals that
// have rows; program names fit BPF_OBJ_NAME_LEN (16 with the NUL).
const _: () = {
    assert!(KINDS.len() == kind::END as usize - 1);
    let mut i = 0;
    while i < KINDS.len() {
        let k = &KINDS[i];
        assert!(k.kind as usize == i + 1, "KINDS must be in kind order");
        match crate::record_size(k.kind) {
            Some(size) => assert!(size == k.size, "KINDS size differs from record_size"),
            None => panic!("a KINDS row has no record_size"),
        }
        assert!(k.ebpf_program.len() < 16, "eBPF program name too long");
        if let Some(e) = k.entry {
            assert!(e.ebpf_program.len() < 16, "eBPF program name too long");
        }
        let mut j = 0;
        while j < i {
            assert!(!same_str(KINDS[j].name, k.name), "two kinds with one name");
            assert!(
                !same_str(KINDS[j].ebpf_program, k.ebpf_program),
                "two kinds with one eBPF program"
            );
            j += 1;
        }
        i += 1;
    }
    let mut s = 0;
    while s < SIGNALS.len() {
        let d = &SIGNALS[s];
        assert!(
            d.signal as usize == s,
            "SIGNALS must follow the Signal enum"
        );
        assert!(d.records_of.def().records_of as u8 == d.records_of as u8);
        s += 1;
    }
};
