//! The event ABI: every record a ksight kernel backend emits.
//!
//! Rules (the C header `kmod-c/ksight_abi.h` follows them and a test checks it
//! against these definitions field by field):
//! - `#[repr(C)]`, fixed-width integers only, explicit padding fields (the `zerocopy`
//!   derives refuse to compile a record with implicit padding), every record a multiple
//!   of 8 bytes, and a compile-time size assertion each;
//! - every record starts with [`EventHeader`];
//! - a change that moves or resizes a field bumps [`ABI_VERSION_MAJOR`]; adding a
//!   record kind or giving meaning to a padding field bumps the minor version.
#![no_std]

use core::mem::size_of;

pub mod kinds;
pub use kinds::{KINDS, KindDef, SIGNALS, Signal};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The zero-copy traits every record derives (`IntoBytes` proves at compile time that a
/// record has no implicit padding), re-exported so readers use the same version.
pub use zerocopy;

pub const ABI_VERSION_MAJOR: u16 = 1;
pub const ABI_VERSION_MINOR: u16 = 1;
/// Both halves in one word, as backends report it: `major << 16 | minor`.
pub const ABI_VERSION: u32 = ((ABI_VERSION_MAJOR as u32) << 16) | ABI_VERSION_MINOR as u32;

/// Record kinds, the `kind` field of [`EventHeader`].
pub mod kind {
    pub const EXEC: u16 = 1;
    pub const FORK: u16 = 2;
    pub const EXIT: u16 = 3;
    pub const TCP_STATE: u16 = 4;
    pub const TCP_RETRANSMIT: u16 = 5;
    pub const TCP_RESET_SENT: u16 = 6;
    pub const TCP_RESET_RECEIVED: u16 = 7;
    pub const BLOCK_QUEUE: u16 = 8;
    pub const BLOCK_ISSUE: u16 = 9;
    pub const BLOCK_COMPLETE: u16 = 10;
    /// A completed send or receive call on a TCP or UDP socket (ABI 1.1).
    pub const SOCK_IO: u16 = 11;
    /// One past the largest kind; kinds are dense from 1.
    pub const END: u16 = 12;
}

/// The header every record starts with.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct EventHeader {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns()` / `ktime_get_ns()`).
    pub ts_ns: u64,
    /// cgroup v2 id (kernfs node id) of the current task.
    pub cgroup_id: u64,
    /// Process id (tgid) of the current task.
    pub pid: u32,
    /// Thread id of the current task.
    pub tid: u32,
    /// CPU the event was recorded on.
    pub cpu: u32,
    /// One of [`kind`].
    pub kind: u16,
    /// Size in bytes of the whole record, header included.
    pub size: u16,
}

pub const COMM_LEN: usize = 16;
pub const FILENAME_LEN: usize = 256;

/// `sched:sched_process_exec`. Header pid/tid are the task after exec.
#[repr(C)]
#[derive(Clone, Copy, Debug, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// tgid of the real parent.
    pub ppid: u32,
    /// Bytes of `filename` used, NUL excluded.
    pub filename_len: u32,
    pub comm: [u8; COMM_LEN],
    /// Path as passed to execve, NUL-terminated, truncated to fit.
    pub filename: [u8; FILENAME_LEN],
}

/// `sched:sched_process_fork`: a new task (thread or process). The header is the parent's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub parent_pid: u32,
    pub parent_tgid: u32,
    pub child_pid: u32,
    /// Equal to `parent_tgid` for a new thread, to `child_pid` for a new process.
    pub child_tgid: u32,
}

/// `sched:sched_process_exit`, for every exiting thread. The header is the exiting task's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The task's `exit_code`, in wait(2) status encoding (`code << 8 | signal`).
    pub exit_status: u32,
    /// 1 when this was the last live thread of the process (the process exited).
    pub group_dead: u32,
    pub comm: [u8; COMM_LEN],
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A TCP 4-tuple. IPv4 addresses use the first 4 bytes of each address array.
/// Ports are in host byte order.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, IntoBytes, FromBytes, Immutable, KnownLayout,
)]
pub struct TcpTuple {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Kernel TCP states (`include/net/tcp_states.h`), as carried in records.
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;
    pub const NEW_SYN_RECV: u32 = 12;
}

/// Which [`TcpStateEvent`] counters a backend could read; a counter whose bit is clear is
/// unavailable on this kernel, not zero.
pub mod tcp_stats {
    pub const BYTES_ACKED: u32 = 1 << 0;
    pub const BYTES_RECEIVED: u32 = 1 << 1;
    pub const SEGS_IN: u32 = 1 << 2;
    pub const SEGS_OUT: u32 = 1 << 3;
    pub const TOTAL_RETRANS: u32 = 1 << 4;
    pub const SRTT: u32 = 1 << 5;
    pub const ALL: u32 = (1 << 6) - 1;
}

/// `sock:inet_sock_set_state` for IPPROTO_TCP. The header is whatever task the kernel ran
/// the transition in (possibly softirq); `sock_cgroup_id` is the socket's owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct TcpStateEvent {
    pub header: EventHeader,
    /// Kernel address of the socket: stable for the connection's lifetime.
    pub sock_id: u64,
    /// cgroup v2 id the socket was charged to at creation (0 if unavailable).
    pub sock_cgroup_id: u64,
    pub tuple: TcpTuple,
    pub old_state: u32,
    pub new_state: u32,
    /// Set only when `new_state` is CLOSE: bits of [`tcp_stats`] that are valid.
    pub stats_valid: u32,
    pub _pad: u32,
    /// `tcp_sock.bytes_acked` as the kernel keeps it: bytes sent and acknowledged, counting
    /// an acknowledged SYN (active opener) and FIN as one each. The engine derives payload.
    pub bytes_acked: u64,
    /// `tcp_sock.bytes_received` as the kernel keeps it: a received FIN counts as one.
    pub bytes_received: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    pub total_retrans: u32,
    /// Smoothed RTT in microseconds.
    pub srtt_us: u32,
}

/// `tcp:tcp_retransmit_skb`, `tcp:tcp_send_reset`, `tcp:tcp_receive_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct TcpEvent {
    pub header: EventHeader,
    /// 0 when the kernel had no socket (a reset answering a segment for no socket).
    pub sock_id: u64,
    pub sock_cgroup_id: u64,
    pub tuple: TcpTuple,
    pub state: u32,
    pub _pad: u32,
}

/// Block request operation, decoded from the kernel's rwbs string / request op.
pub mod block_op {
    pub const OTHER: u32 = 0;
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const FLUSH: u32 = 3;
    pub const DISCARD: u32 = 4;
}

/// `block:block_bio_queue` (submitter context), `block:block_rq_issue`,
/// `block:block_rq_complete`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct BlockEvent {
    pub header: EventHeader,
    pub sector: u64,
    /// Kernel-internal dev_t: `major << 20 | minor`.
    pub dev: u32,
    pub bytes: u32,
    /// One of [`block_op`].
    pub op: u32,
    /// Completion status (negative errno), 0 for queue and issue.
    pub error: i32,
}

/// Socket I/O direction ([`SockIoEvent::direction`]).
pub mod sock_dir {
    pub const SEND: u8 = 1;
    pub const RECV: u8 = 2;
}

/// The system call a [`SockIoEvent`] completes ([`SockIoEvent::call`]). `send`/`recv`
/// are library calls over `sendto`/`recvfrom` on the kernels ksight supports.
pub mod sock_call {
    pub const READ: u16 = 1;
    pub const WRITE: u16 = 2;
    pub const READV: u16 = 3;
    pub const WRITEV: u16 = 4;
    pub const SENDTO: u16 = 5;
    pub const RECVFROM: u16 = 6;
    pub const SENDMSG: u16 = 7;
    pub const RECVMSG: u16 = 8;
    pub const SENDMMSG: u16 = 9;
    pub const RECVMMSG: u16 = 10;
    /// `sendfile` into a socket: bytes only, the payload comes from a file.
    pub const SENDFILE: u16 = 11;
    /// `splice` to or from a socket: bytes only, the other end is a pipe.
    pub const SPLICE: u16 = 12;
}

/// Bits of [`SockIoEvent::flags`].
pub mod sock_flags {
    /// The peer in the tuple comes from the call's address argument (`sendto`'s
    /// `dest_addr`, `recvfrom`'s `src_addr`, `msg_name`), not from the socket.
    pub const PEER_FROM_CALL: u16 = 1 << 0;
    /// The call's entry was not seen (it started before capture, or the entry table
    /// was full): `duration_ns` is 0.
    pub const NO_ENTRY: u16 = 1 << 1;
    /// Reading the payload from user memory failed: `payload_len` is 0.
    pub const PAYLOAD_FAULT: u16 = 1 << 2;
}

/// Longest payload a [`SockIoEvent`] carries (the ceiling of the configurable snaplen).
pub const MAX_SNAPLEN: usize = 4096;
/// Payload bytes copied per call unless configured otherwise: a whole classic DNS message
/// over UDP (RFC 1035's 512 bytes) and the request line and usual headers of HTTP.
pub const DEFAULT_SNAPLEN: usize = 512;
/// Buffers of a vectored call (`readv`, `writev`, `sendmsg`, `recvmsg`, each message of
/// `sendmmsg`/`recvmmsg`) that payload is gathered from, in order, until the snaplen is
/// filled: HTTP/2 senders gather one frame's header fields from dozens of small buffers.
pub const MAX_IOV: usize = 32;
/// Most messages of one `sendmmsg`/`recvmmsg` reported as records of their own; the rest
/// are counted in the last record's `unreported_msgs`.
pub const MAX_MMSG: usize = 16;

/// A completed `read`, `write`, `readv`, `writev`, `sendto`, `recvfrom`, `sendmsg`,
/// `recvmsg`, `sendmmsg`/`recvmmsg` (one record per message), `sendfile` or `splice` on a
/// TCP or UDP socket (IPv4 or IPv6) that moved at least one byte (UDP: any datagram).
/// Hooked at `raw_syscalls:sys_exit`, timed from `raw_syscalls:sys_enter`; the header is
/// the calling task's.
///
/// Variable size: `payload_len` bytes of payload follow the fixed part, zero-padded to a
/// multiple of 8; `header.size` is the whole record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct SockIoEvent {
    pub header: EventHeader,
    /// Kernel address of the `struct sock`, as [`TcpStateEvent::sock_id`].
    pub sock_id: u64,
    /// Bytes the call returned (for `sendmmsg`/`recvmmsg`, this message's `msg_len`).
    pub bytes: u64,
    /// Entry to exit of the call, ns; 0 with [`sock_flags::NO_ENTRY`].
    pub duration_ns: u64,
    /// Local address and port as `saddr`/`sport`, the peer as `daddr`/`dport`.
    pub tuple: TcpTuple,
    /// The file descriptor the call used (for `splice`, the socket's).
    pub fd: u32,
    /// One of [`sock_call`].
    pub call: u16,
    /// One of [`sock_dir`].
    pub direction: u8,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub protocol: u8,
    /// Bits of [`sock_flags`].
    pub flags: u16,
    /// Payload bytes that follow the fixed part: `min(bytes, snaplen)`, gathered in order
    /// from the first [`MAX_IOV`] buffers of a vectored call (so at most the sum of their
    /// lengths); 0 for `sendfile` and `splice`.
    pub payload_len: u16,
    /// Index of the message within a `sendmmsg`/`recvmmsg`, else 0.
    pub msg_index: u16,
    pub _pad: u16,
    /// Messages of this `sendmmsg`/`recvmmsg` past [`MAX_MMSG`] that have no record (set
    /// on the last record of the call).
    pub unreported_msgs: u32,
    pub _pad2: u32,
}

/// The size of a socket I/O record with `payload_len` bytes of payload.
pub const fn sock_io_size(payload_len: usize) -> usize {
    size_of::<SockIoEvent>() + payload_len.next_multiple_of(8)
}

/// Largest record; backends size their scratch buffers from it.
pub const MAX_RECORD_SIZE: usize = sock_io_size(MAX_SNAPLEN);
const _: () = assert!(MAX_RECORD_SIZE >= size_of::<ExecEvent>());
const _: () = assert!(MAX_RECORD_SIZE <= u16::MAX as usize);

const _: () = assert!(size_of::<EventHeader>() == 32);
const _: () = assert!(size_of::<ExecEvent>() == 312);
const _: () = assert!(size_of::<ForkEvent>() == 48);
const _: () = assert!(size_of::<ExitEvent>() == 56);
const _: () = assert!(size_of::<TcpTuple>() == 40);
const _: () = assert!(size_of::<TcpStateEvent>() == 136);
const _: () = assert!(size_of::<TcpEvent>() == 96);
const _: () = assert!(size_of::<BlockEvent>() == 56);
const _: () = assert!(size_of::<SockIoEvent>() == 120);

/// The fixed size of a kind's record (for the variable-size socket I/O record, without
/// payload); `None` for an unknown kind. [`size_ok`] says whether a record's size fits.
pub const fn record_size(kind: u16) -> Option<usize> {
    Some(match kind {
        kind::EXEC => size_of::<ExecEvent>(),
        kind::FORK => size_of::<ForkEvent>(),
        kind::EXIT => size_of::<ExitEvent>(),
        kind::TCP_STATE => size_of::<TcpStateEvent>(),
        kind::TCP_RETRANSMIT | kind::TCP_RESET_SENT | kind::TCP_RESET_RECEIVED => {
            size_of::<TcpEvent>()
        }
        kind::BLOCK_QUEUE | kind::BLOCK_ISSUE | kind::BLOCK_COMPLETE => size_of::<BlockEvent>(),
        kind::SOCK_IO => size_of::<SockIoEvent>(),
        _ => return None,
    })
}

/// True when a record of `kind` may be `size` bytes: its fixed size, or for the
/// variable-size kinds any multiple of 8 from the fixed size to the largest payload.
pub const fn size_ok(kind: u16, size: usize) -> bool {
    match record_size(kind) {
        None => false,
        Some(fixed) if kind == kind::SOCK_IO => {
            size >= fixed && size <= sock_io_size(MAX_SNAPLEN) && size.is_multiple_of(8)
        }
        Some(fixed) => size == fixed,
    }
}

/// Per-program counters kept in a per-CPU BPF array (and per-CPU in the module), indexed by
/// these slots.
pub mod counter {
    /// Records that could not be written because the buffer was full.
    pub const LOST: u32 = 0;
    /// Records emitted.
    pub const EMITTED: u32 = 1;
    /// Kernel reads that failed (record sent with the affected fields zeroed).
    pub const READ_ERRORS: u32 = 2;
    /// Records dropped on purpose, before anything was reserved, because their cgroup is
    /// in the ignore set (see [`super::filter`]).
    pub const FILTERED: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// The in-kernel cgroup ignore filter, the same in both backends.
///
/// Which cgroup id a record kind is checked against:
/// - exec, fork, exit, block queue, socket I/O: the header's `cgroup_id` (the current
///   task's cgroup v2 id), checked before the record is built (for socket I/O, once the
///   descriptor is found to be a TCP or UDP socket and the call to make a record, before
///   any payload is copied; a filtered call counts once, whatever its records);
/// - TCP state, retransmit and resets: the record's `sock_cgroup_id` (they may run in
///   softirq, where the current task is unrelated);
/// - block issue and complete: never filtered (irq or other tasks' context).
///
/// A filtered record is counted in [`counter::FILTERED`] and never reserved nor written.
/// An empty set filters nothing.
pub mod filter {
    use super::kind;

    /// Most cgroup ids the kernel keeps in the set.
    pub const MAX_IGNORED_CGROUPS: usize = 16384;

    /// Which id of a record the filter looks at.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum FilterKey {
        /// The header's `cgroup_id`.
        HeaderCgroup,
        /// The record's `sock_cgroup_id`.
        SockCgroup,
        /// Never filtered.
        None,
    }

    /// The id the filter checks for records of `k`.
    pub const fn key(k: u16) -> FilterKey {
        match k {
            kind::EXEC | kind::FORK | kind::EXIT | kind::BLOCK_QUEUE | kind::SOCK_IO => {
                FilterKey::HeaderCgroup
            }
            kind::TCP_STATE
            | kind::TCP_RETRANSMIT
            | kind::TCP_RESET_SENT
            | kind::TCP_RESET_RECEIVED => FilterKey::SockCgroup,
            _ => FilterKey::None,
        }
    }
}
