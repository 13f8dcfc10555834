/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * ksight event ABI: the records the ksight kernel module emits, byte for byte
 * the same as the eBPF backend's.
 *
 * This file is the C mirror of the Rust crate `event-abi` (event-abi/src/lib.rs),
 * which is the single source of truth. Do not change a record here alone:
 * change event-abi first, then this file to match. The test
 * event-abi/tests/c_layout.rs compiles this header and compares the size,
 * alignment, and offset, size and type of every field of every struct, and the
 * value of every constant, with the Rust definitions; `cargo test -p event-abi`
 * fails on any difference.
 *
 * Rules (the same as event-abi's):
 * - fixed-width integers only, explicit padding fields, every record a multiple
 *   of 8 bytes, a compile-time size assertion each;
 * - every record starts with struct ksight_event_header;
 * - a change that moves or resizes a field bumps KSIGHT_ABI_VERSION_MAJOR;
 *   adding a record kind or giving meaning to a padding field bumps the minor.
 *
 * The header builds in the kernel (__KERNEL__: <linux/types.h>) and in user
 * space (<stdint.h>).
 */
#ifndef KSIGHT_ABI_H
#define KSIGHT_ABI_H

#ifdef __KERNEL__
#include <linux/types.h>
typedef u8 ksight_u8;
typedef u16 ksight_u16;
typedef u32 ksight_u32;
typedef u64 ksight_u64;
typedef s32 ksight_s32;
#else
#include <stdint.h>
typedef uint8_t ksight_u8;
typedef uint16_t ksight_u16;
typedef uint32_t ksight_u32;
typedef uint64_t ksight_u64;
typedef int32_t ksight_s32;
#endif

/* ABI version (event_abi::ABI_VERSION_MAJOR / _MINOR / ABI_VERSION). */
#define KSIGHT_ABI_VERSION_MAJOR 1
#define KSIGHT_ABI_VERSION_MINOR 1
/* Both halves in one word, as backends report it: major << 16 | minor. */
#define KSIGHT_ABI_VERSION ((KSIGHT_ABI_VERSION_MAJOR << 16) | KSIGHT_ABI_VERSION_MINOR)

/* Record kinds, the `kind` field of struct ksight_event_header (event_abi::kind). */
#define KSIGHT_KIND_EXEC 1
#define KSIGHT_KIND_FORK 2
#define KSIGHT_KIND_EXIT 3
#define KSIGHT_KIND_TCP_STATE 4
#define KSIGHT_KIND_TCP_RETRANSMIT 5
#define KSIGHT_KIND_TCP_RESET_SENT 6
#define KSIGHT_KIND_TCP_RESET_RECEIVED 7
#define KSIGHT_KIND_BLOCK_QUEUE 8
#define KSIGHT_KIND_BLOCK_ISSUE 9
#define KSIGHT_KIND_BLOCK_COMPLETE 10
/* A completed send or receive call on a TCP or UDP socket (ABI 1.1). */
#define KSIGHT_KIND_SOCK_IO 11
/* One past the largest kind; kinds are dense from 1. */
#define KSIGHT_KIND_END 12

/* The header every record starts with (event_abi::EventHeader). */
struct ksight_event_header {
	/* CLOCK_MONOTONIC nanoseconds (ktime_get_ns()). */
	ksight_u64 ts_ns;
	/* cgroup v2 id (kernfs node id) of the current task. */
	ksight_u64 cgroup_id;
	/* Process id (tgid) of the current task. */
	ksight_u32 pid;
	/* Thread id of the current task. */
	ksight_u32 tid;
	/* CPU the event was recorded on. */
	ksight_u32 cpu;
	/* One of KSIGHT_KIND_*. */
	ksight_u16 kind;
	/* Size in bytes of the whole record, header included. */
	ksight_u16 size;
};

#define KSIGHT_COMM_LEN 16
#define KSIGHT_FILENAME_LEN 256

/* sched:sched_process_exec. Header pid/tid are the task after exec (event_abi::ExecEvent). */
struct ksight_exec_event {
	struct ksight_event_header header;
	/* tgid of the real parent. */
	ksight_u32 ppid;
	/* Bytes of `filename` used, NUL excluded. */
	ksight_u32 filename_len;
	ksight_u8 comm[KSIGHT_COMM_LEN];
	/* Path as passed to execve, NUL-terminated, truncated to fit. */
	ksight_u8 filename[KSIGHT_FILENAME_LEN];
};

/* sched:sched_process_fork: a new task. The header is the parent's (event_abi::ForkEvent). */
struct ksight_fork_event {
	struct ksight_event_header header;
	ksight_u32 parent_pid;
	ksight_u32 parent_tgid;
	ksight_u32 child_pid;
	/* Equal to parent_tgid for a new thread, to child_pid for a new process. */
	ksight_u32 child_tgid;
};

/* sched:sched_process_exit, for every exiting thread (event_abi::ExitEvent). */
struct ksight_exit_event {
	struct ksight_event_header header;
	/* The task's exit_code, in wait(2) status encoding (code << 8 | signal). */
	ksight_u32 exit_status;
	/* 1 when this was the last live thread of the process. */
	ksight_u32 group_dead;
	ksight_u8 comm[KSIGHT_COMM_LEN];
};

#define KSIGHT_AF_INET 2
#define KSIGHT_AF_INET6 10

/*
 * A TCP 4-tuple (event_abi::TcpTuple). IPv4 addresses use the first 4 bytes of
 * each address array. Ports are in host byte order.
 */
struct ksight_tcp_tuple {
	ksight_u16 family;
	ksight_u16 sport;
	ksight_u16 dport;
	ksight_u16 _pad;
	ksight_u8 saddr[16];
	ksight_u8 daddr[16];
};

/* Kernel TCP states (include/net/tcp_states.h), as carried in records (event_abi::tcp_state). */
#define KSIGHT_TCP_STATE_ESTABLISHED 1
#define KSIGHT_TCP_STATE_SYN_SENT 2
#define KSIGHT_TCP_STATE_SYN_RECV 3
#define KSIGHT_TCP_STATE_FIN_WAIT1 4
#define KSIGHT_TCP_STATE_FIN_WAIT2 5
#define KSIGHT_TCP_STATE_TIME_WAIT 6
#define KSIGHT_TCP_STATE_CLOSE 7
#define KSIGHT_TCP_STATE_CLOSE_WAIT 8
#define KSIGHT_TCP_STATE_LAST_ACK 9
#define KSIGHT_TCP_STATE_LISTEN 10
#define KSIGHT_TCP_STATE_CLOSING 11
#define KSIGHT_TCP_STATE_NEW_SYN_RECV 12

/*
 * Which struct ksight_tcp_state_event counters a backend could read
 * (event_abi::tcp_stats); a counter whose bit is clear is unavailable on this
 * kernel, not zero.
 */
#define KSIGHT_TCP_STATS_BYTES_ACKED (1U << 0)
#define KSIGHT_TCP_STATS_BYTES_RECEIVED (1U << 1)
#define KSIGHT_TCP_STATS_SEGS_IN (1U << 2)
#define KSIGHT_TCP_STATS_SEGS_OUT (1U << 3)
#define KSIGHT_TCP_STATS_TOTAL_RETRANS (1U << 4)
#define KSIGHT_TCP_STATS_SRTT (1U << 5)
#define KSIGHT_TCP_STATS_ALL ((1U << 6) - 1)

/*
 * sock:inet_sock_set_state for IPPROTO_TCP (event_abi::TcpStateEvent). The
 * header is whatever task the kernel ran the transition in (possibly softirq);
 * sock_cgroup_id is the socket's owner.
 */
struct ksight_tcp_state_event {
	struct ksight_event_header header;
	/* Kernel address of the socket: stable for the connection's lifetime. */
	ksight_u64 sock_id;
	/* cgroup v2 id the socket was charged to at creation (0 if unavailable). */
	ksight_u64 sock_cgroup_id;
	struct ksight_tcp_tuple tuple;
	ksight_u32 old_state;
	ksight_u32 new_state;
	/* Set only when new_state is CLOSE: KSIGHT_TCP_STATS_* bits that are valid. */
	ksight_u32 stats_valid;
	ksight_u32 _pad;
	/* tcp_sock.bytes_acked: bytes sent and acknowledged. */
	ksight_u64 bytes_acked;
	/* tcp_sock.bytes_received. */
	ksight_u64 bytes_received;
	ksight_u32 segs_in;
	ksight_u32 segs_out;
	ksight_u32 total_retrans;
	/* Smoothed RTT in microseconds. */
	ksight_u32 srtt_us;
};

/* tcp:tcp_retransmit_skb, tcp:tcp_send_reset, tcp:tcp_receive_reset (event_abi::TcpEvent). */
struct ksight_tcp_event {
	struct ksight_event_header header;
	/* 0 when the kernel had no socket (a reset answering a segment for no socket). */
	ksight_u64 sock_id;
	ksight_u64 sock_cgroup_id;
	struct ksight_tcp_tuple tuple;
	ksight_u32 state;
	ksight_u32 _pad;
};

/* Block request operation, from the kernel's rwbs string / request op (event_abi::block_op). */
#define KSIGHT_BLOCK_OP_OTHER 0
#define KSIGHT_BLOCK_OP_READ 1
#define KSIGHT_BLOCK_OP_WRITE 2
#define KSIGHT_BLOCK_OP_FLUSH 3
#define KSIGHT_BLOCK_OP_DISCARD 4

/*
 * block:block_bio_queue (submitter context), block:block_rq_issue,
 * block:block_rq_complete (event_abi::BlockEvent).
 */
struct ksight_block_event {
	struct ksight_event_header header;
	ksight_u64 sector;
	/* Kernel-internal dev_t: major << 20 | minor. */
	ksight_u32 dev;
	ksight_u32 bytes;
	/* One of KSIGHT_BLOCK_OP_*. */
	ksight_u32 op;
	/* Completion status (negative errno), 0 for queue and issue. */
	ksight_s32 error;
};

/* Socket I/O direction (event_abi::sock_dir). */
#define KSIGHT_SOCK_DIR_SEND 1
#define KSIGHT_SOCK_DIR_RECV 2

/* The system call a socket I/O record completes (event_abi::sock_call). */
#define KSIGHT_SOCK_CALL_READ 1
#define KSIGHT_SOCK_CALL_WRITE 2
#define KSIGHT_SOCK_CALL_READV 3
#define KSIGHT_SOCK_CALL_WRITEV 4
#define KSIGHT_SOCK_CALL_SENDTO 5
#define KSIGHT_SOCK_CALL_RECVFROM 6
#define KSIGHT_SOCK_CALL_SENDMSG 7
#define KSIGHT_SOCK_CALL_RECVMSG 8
#define KSIGHT_SOCK_CALL_SENDMMSG 9
#define KSIGHT_SOCK_CALL_RECVMMSG 10
/* sendfile into a socket: bytes only. */
#define KSIGHT_SOCK_CALL_SENDFILE 11
/* splice to or from a socket: bytes only. */
#define KSIGHT_SOCK_CALL_SPLICE 12

/* Bits of struct ksight_sock_io_event.flags (event_abi::sock_flags). */
/* The peer comes from the call's address argument, not from the socket. */
#define KSIGHT_SOCK_FLAG_PEER_FROM_CALL (1U << 0)
/* The call's entry was not seen: duration_ns is 0. */
#define KSIGHT_SOCK_FLAG_NO_ENTRY (1U << 1)
/* Reading the payload from user memory failed: payload_len is 0. */
#define KSIGHT_SOCK_FLAG_PAYLOAD_FAULT (1U << 2)

/* Payload bounds (event_abi::MAX_SNAPLEN, DEFAULT_SNAPLEN, MAX_MMSG). */
#define KSIGHT_MAX_SNAPLEN 4096
#define KSIGHT_DEFAULT_SNAPLEN 512
/* Messages of one sendmmsg/recvmmsg reported as records of their own. */
#define KSIGHT_MAX_MMSG 16
/* Buffers of a vectored call that payload is gathered from, in order, until the snaplen is
 * filled (HTTP/2 senders gather a frame's header fields from dozens of small buffers). */
#define KSIGHT_MAX_IOV 32

/*
 * raw_syscalls:sys_exit of read, write, readv, writev, sendto, recvfrom,
 * sendmsg, recvmsg, sendmmsg/recvmmsg (one record per message), sendfile or
 * splice on a TCP or UDP socket, timed from raw_syscalls:sys_enter
 * (event_abi::SockIoEvent). The header is the calling task's.
 *
 * Variable size: payload_len bytes of payload follow the fixed part, zero-padded
 * to a multiple of 8; header.size is the whole record (KSIGHT_SOCK_IO_SIZE).
 */
struct ksight_sock_io_event {
	struct ksight_event_header header;
	/* Kernel address of the struct sock, as ksight_tcp_state_event.sock_id. */
	ksight_u64 sock_id;
	/* Bytes the call returned (for mmsg, this message's msg_len). */
	ksight_u64 bytes;
	/* Entry to exit of the call, ns; 0 with KSIGHT_SOCK_FLAG_NO_ENTRY. */
	ksight_u64 duration_ns;
	/* Local address and port as saddr/sport, the peer as daddr/dport. */
	struct ksight_tcp_tuple tuple;
	/* The socket's file descriptor. */
	ksight_u32 fd;
	/* One of KSIGHT_SOCK_CALL_*. */
	ksight_u16 call;
	/* One of KSIGHT_SOCK_DIR_*. */
	ksight_u8 direction;
	/* IPPROTO_TCP (6) or IPPROTO_UDP (17). */
	ksight_u8 protocol;
	/* KSIGHT_SOCK_FLAG_* bits. */
	ksight_u16 flags;
	/* Payload bytes after the fixed part: min(bytes, snaplen), gathered from the
	 * first KSIGHT_MAX_IOV buffers of a vectored call (at most their lengths). */
	ksight_u16 payload_len;
	/* Index of the message within a sendmmsg/recvmmsg, else 0. */
	ksight_u16 msg_index;
	ksight_u16 _pad;
	/* Messages past KSIGHT_MAX_MMSG without a record (on the call's last record). */
	ksight_u32 unreported_msgs;
	ksight_u32 _pad2;
};

/* The size of a socket I/O record with `payload_len` bytes of payload (event_abi::sock_io_size). */
#define KSIGHT_SOCK_IO_SIZE(payload_len) \
	(sizeof(struct ksight_sock_io_event) + ((payload_len) + 7) / 8 * 8)

/* Largest record; scratch buffers are sized from it (event_abi::MAX_RECORD_SIZE). */
#define KSIGHT_MAX_RECORD_SIZE 4216

/*
 * Per-program counters kept per CPU, indexed by these slots (event_abi::counter).
 */
/* Records that could not be written because the buffer was full. */
#define KSIGHT_COUNTER_LOST 0
/* Records emitted. */
#define KSIGHT_COUNTER_EMITTED 1
/* Kernel reads that failed (record sent with the affected fields zeroed). */
#define KSIGHT_COUNTER_READ_ERRORS 2
/* Records dropped before being written because their cgroup is ignored. */
#define KSIGHT_COUNTER_FILTERED 3
#define KSIGHT_COUNTER_COUNT 4

_Static_assert(sizeof(struct ksight_event_header) == 32, "ksight_event_header size");
_Static_assert(sizeof(struct ksight_exec_event) == 312, "ksight_exec_event size");
_Static_assert(sizeof(struct ksight_fork_event) == 48, "ksight_fork_event size");
_Static_assert(sizeof(struct ksight_exit_event) == 56, "ksight_exit_event size");
_Static_assert(sizeof(struct ksight_tcp_tuple) == 40, "ksight_tcp_tuple size");
_Static_assert(sizeof(struct ksight_tcp_state_event) == 136, "ksight_tcp_state_event size");
_Static_assert(sizeof(struct ksight_tcp_event) == 96, "ksight_tcp_event size");
_Static_assert(sizeof(struct ksight_block_event) == 56, "ksight_block_event size");
_Static_assert(sizeof(struct ksight_sock_io_event) == 120, "ksight_sock_io_event size");
_Static_assert(KSIGHT_SOCK_IO_SIZE(KSIGHT_MAX_SNAPLEN) == KSIGHT_MAX_RECORD_SIZE,
	       "KSIGHT_MAX_RECORD_SIZE is the largest record");

#endif /* KSIGHT_ABI_H */
