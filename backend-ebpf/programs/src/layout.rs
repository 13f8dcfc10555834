//! Constants shared by the eBPF programs and their loader.
//!
//! This one file is compiled into both crates (the loader includes it with
//! `#[path]`), so the two sides cannot drift apart: change it and both rebuild.
//! Only plain constants belong here; it must build for `no_std` and `std`.

/// Value of an offset global the loader could not resolve (tracepoint field absent from
/// the format file, or kernel struct member absent from BTF). Programs then leave the
/// record field at 0 instead of reading a guessed offset.
pub const MISSING: u32 = u32::MAX;

/// `OUTPUT_MODE` values: which map the programs write records to.
pub const OUTPUT_RINGBUF: u32 = 0;
pub const OUTPUT_PERF: u32 = 1;

/// Bytes of a classic tracepoint record that the programs copy (with one helper call)
/// before picking fields out of the copy. The loader reports any field that ends past
/// this as unavailable.
pub const TP_COPY_LEN: usize = 128;

/// Longest `rwbs` string the block programs scan.
pub const RWBS_MAX: usize = 10;

/// Tuple layouts of TCP tracepoints (slot [`tp_tcp::TUPLE_LAYOUT`]).
pub mod tuple_layout {
    /// Unknown layout: the tuple is left zeroed.
    pub const NONE: u32 = 0;
    /// `sport`, `dport` (host order), `family`, `saddr[4]`, `daddr[4]`, `saddr_v6[16]`,
    /// `daddr_v6[16]` fields.
    pub const FIELDS: u32 = 1;
    /// `saddr[28]`/`daddr[28]` each holding a `struct sockaddr_in` or `sockaddr_in6`
    /// (family at 0, network-order port at 2, IPv4 address at 4, IPv6 address at 8).
    pub const SOCKADDR: u32 = 2;
}

// Offsets are handed to the programs as a few `[u32; LEN]` globals rather than dozens of
// scalars: one per tracepoint (offsets into its record, from its tracefs format file) and
// one for kernel struct members (from BTF). The modules below name the slots.

/// Global holding kernel struct member offsets resolved from BTF.
pub const G_BTF: &str = "BTF_OFF";
/// Slots of [`G_BTF`]: byte offset of a member inside its struct, or [`MISSING`].
pub mod btf {
    /// `task_struct.pid`
    pub const TASK_PID: usize = 0;
    /// `task_struct.tgid`
    pub const TASK_TGID: usize = 1;
    /// `task_struct.real_parent`
    pub const TASK_REAL_PARENT: usize = 2;
    /// `task_struct.exit_code`
    pub const TASK_EXIT_CODE: usize = 3;
    /// `task_struct.signal`
    pub const TASK_SIGNAL: usize = 4;
    /// `signal_struct.live.counter`
    pub const SIGNAL_LIVE: usize = 5;
    /// `sock.sk_cgrp_data.cgroup`
    pub const SOCK_CGROUP: usize = 6;
    /// `cgroup.kn`
    pub const CGROUP_KN: usize = 7;
    /// `kernfs_node.id`
    pub const KERNFS_NODE_ID: usize = 8;
    /// `sock.__sk_common.skc_state`
    pub const SOCK_STATE: usize = 9;
    /// `tcp_sock.bytes_acked`
    pub const TCP_BYTES_ACKED: usize = 10;
    /// `tcp_sock.bytes_received`
    pub const TCP_BYTES_RECEIVED: usize = 11;
    /// `tcp_sock.segs_in`
    pub const TCP_SEGS_IN: usize = 12;
    /// `tcp_sock.segs_out`
    pub const TCP_SEGS_OUT: usize = 13;
    /// `tcp_sock.total_retrans`
    pub const TCP_TOTAL_RETRANS: usize = 14;
    /// `tcp_sock.srtt_us`
    pub const TCP_SRTT_US: usize = 15;
    /// `task_struct.files`
    pub const TASK_FILES: usize = 16;
    /// `files_struct.fdt`
    pub const FILES_FDT: usize = 17;
    /// `fdtable.max_fds`
    pub const FDT_MAX_FDS: usize = 18;
    /// `fdtable.fd`
    pub const FDT_FD: usize = 19;
    /// `file.f_inode`
    pub const FILE_INODE: usize = 20;
    /// `inode.i_mode`
    pub const INODE_MODE: usize = 21;
    /// `file.private_data` (a socket file's `struct socket`)
    pub const FILE_PRIVATE: usize = 22;
    /// `socket.sk`
    pub const SOCKET_SK: usize = 23;
    /// `sock.__sk_common.skc_family`
    pub const SOCK_FAMILY: usize = 24;
    /// `sock.__sk_common.skc_num` (local port, host order)
    pub const SOCK_NUM: usize = 25;
    /// `sock.__sk_common.skc_dport` (peer port, network order)
    pub const SOCK_DPORT: usize = 26;
    /// `sock.__sk_common.skc_rcv_saddr`
    pub const SOCK_RCV_SADDR: usize = 27;
    /// `sock.__sk_common.skc_daddr`
    pub const SOCK_DADDR: usize = 28;
    /// `sock.__sk_common.skc_v6_rcv_saddr`
    pub const SOCK_V6_RCV_SADDR: usize = 29;
    /// `sock.__sk_common.skc_v6_daddr`
    pub const SOCK_V6_DADDR: usize = 30;
    /// `sock.sk_protocol`
    pub const SOCK_PROTOCOL: usize = 31;
    /// `pt_regs` members holding a system call's number and arguments (x86-64 names);
    /// the loader fills them only on x86-64.
    pub const REGS_ORIG_AX: usize = 32;
    pub const REGS_DI: usize = 33;
    pub const REGS_SI: usize = 34;
    pub const REGS_DX: usize = 35;
    pub const REGS_R10: usize = 36;
    pub const REGS_R8: usize = 37;
    pub const REGS_R9: usize = 38;
    /// `sock.sk_type`
    pub const SOCK_TYPE: usize = 39;
    /// `pt_regs.cs` (an unsigned long before Linux 6.9, a u16 in a union since): the
    /// code segment the call came from, to tell 32-bit calls apart.
    pub const REGS_CS: usize = 40;
    pub const LEN: usize = 41;
}

/// x86-64 system call numbers of the calls socket I/O completes (`asm/unistd_64.h`).
pub mod sys_nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const SENDFILE: u64 = 40;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const SPLICE: u64 = 275;
    pub const RECVMMSG: u64 = 299;
    pub const SENDMMSG: u64 = 307;
}

/// Bytes of `pt_regs` the exit program copies at once (x86-64's is 168); the loader
/// reports socket I/O unavailable when a register it needs lies past this.
pub const REGS_COPY_LEN: usize = 168;

/// Bytes at the start of a `struct sock` the socket I/O program copies at once: its
/// `sock_common` family, ports and IPv4/IPv6 addresses lie there (offsets 0..88 on
/// x86-64 since 4.x); the loader reports socket I/O unavailable if one does not.
pub const SOCK_HEAD_LEN: usize = 96;

/// Global: payload bytes copied per socket call (1..=`event_abi::MAX_SNAPLEN`).
pub const G_SNAPLEN: &str = "SNAPLEN";

/// System calls in flight whose entry time the entry program keeps (per thread).
pub const MAX_SYSCALLS_IN_FLIGHT: u32 = 65536;

/// Globals holding tracepoint field offsets, one per classic tracepoint.
pub const G_TP_EXEC: &str = "TP_EXEC";
pub const G_TP_EXIT: &str = "TP_EXIT";
pub const G_TP_SOCK_STATE: &str = "TP_SOCK_STATE";
pub const G_TP_TCP_RETRANSMIT: &str = "TP_TCP_RETRANSMIT";
pub const G_TP_TCP_SEND_RESET: &str = "TP_TCP_SEND_RESET";
pub const G_TP_TCP_RECEIVE_RESET: &str = "TP_TCP_RECEIVE_RESET";
pub const G_TP_BLOCK_BIO_QUEUE: &str = "TP_BLOCK_BIO_QUEUE";
pub const G_TP_BLOCK_RQ_ISSUE: &str = "TP_BLOCK_RQ_ISSUE";
pub const G_TP_BLOCK_RQ_COMPLETE: &str = "TP_BLOCK_RQ_COMPLETE";

/// Slots of `TP_EXEC`.
pub mod tp_exec {
    /// `__data_loc char[] filename`: offset of the u32 location word.
    pub const FILENAME: usize = 0;
    pub const LEN: usize = 1;
}

/// Slots of `TP_EXIT`.
pub mod tp_exit {
    /// `bool group_dead`, present on newer kernels; exact where the BTF fallback
    /// (`signal->live == 0`) can race with sibling threads exiting at the same time.
    pub const GROUP_DEAD: usize = 0;
    pub const LEN: usize = 1;
}

/// Slots of the four TCP globals (`sock:inet_sock_set_state` and the `tcp:` events);
/// slots a tracepoint does not have stay [`MISSING`].
pub mod tp_tcp {
    pub const SKADDR: usize = 0;
    pub const OLDSTATE: usize = 1;
    pub const NEWSTATE: usize = 2;
    pub const STATE: usize = 3;
    pub const PROTOCOL: usize = 4;
    /// A [`super::tuple_layout`] value, not an offset.
    pub const TUPLE_LAYOUT: usize = 5;
    pub const SPORT: usize = 6;
    pub const DPORT: usize = 7;
    pub const FAMILY: usize = 8;
    /// `saddr[4]`, or the `saddr[28]` sockaddr with [`super::tuple_layout::SOCKADDR`].
    pub const SADDR: usize = 9;
    pub const DADDR: usize = 10;
    pub const SADDR6: usize = 11;
    pub const DADDR6: usize = 12;
    pub const LEN: usize = 13;
}

/// Slots of the three block globals.
pub mod tp_block {
    pub const DEV: usize = 0;
    pub const SECTOR: usize = 1;
    pub const NR_SECTOR: usize = 2;
    pub const RWBS: usize = 3;
    /// Size of the `rwbs` array (a length, not an offset).
    pub const RWBS_LEN: usize = 4;
    /// `block_rq_complete` only.
    pub const ERROR: usize = 5;
    pub const LEN: usize = 6;
}

/// Global selecting the output map: [`OUTPUT_RINGBUF`] or [`OUTPUT_PERF`].
pub const G_OUTPUT_MODE: &str = "OUTPUT_MODE";
/// Global: bytes waiting in the ring buffer above which a record wakes the reader.
pub const G_WAKEUP_BYTES: &str = "WAKEUP_BYTES";

/// Map names in the object.
pub mod maps {
    pub const RING: &str = "RING";
    pub const PERF: &str = "PERF";
    pub const COUNTERS: &str = "COUNTERS";
    pub const IGNORED_CGROUPS: &str = "IGNORED_CGROUPS";
    pub const FILTER_ON: &str = "FILTER_ON";
    pub const SYSCALL_ENTRY: &str = "SYSCALL_ENTRY";
    pub const SOCK_MMSG: &str = "SOCK_MMSG";
}

/// The program that records the messages of a `sendmmsg`/`recvmmsg`, one per tail call
/// from the socket I/O exit program (never attached itself).
pub const SOCK_MMSG_PROGRAM: &str = "ks_sys_mmsg";

/// Default ring buffer size in the object (the loader overrides it).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
