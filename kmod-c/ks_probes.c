// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The tracepoint probes: the same tracepoints as the eBPF programs
 * (backend-ebpf/programs/src/programs.rs), the same values in the same records.
 *
 * A probe receives the tracepoint's TP_PROTO arguments and computes each field
 * the way the tracepoint's TP_fast_assign computes the field the eBPF program
 * reads, so both backends agree byte for byte on the payload (the header's
 * timestamp and CPU differ only by when and where each backend runs).
 *
 * Prototypes differ between kernels. Each probe is chosen by kernel version
 * where mainline changed the prototype, and then *checked* at compile time
 * against the tracepoint's own register_trace_<name>() declaration (its type
 * names the exact probe type), so a kernel whose prototype differs (a
 * backport, a newer kernel) fails to build instead of calling a probe with the
 * wrong arguments.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/binfmts.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/blktrace_api.h>
#include <linux/cgroup.h>
#include <linux/compat.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/socket.h>
#include <linux/string.h>
#include <linux/tcp.h>
#include <linux/timekeeping.h>
#include <linux/tracepoint.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/version.h>
#include <net/inet_sock.h>
#include <net/ipv6.h>
#include <net/sock.h>
#include <asm/syscall.h>
#include <asm/unistd.h>

#include <trace/events/block.h>
#include <trace/events/sched.h>
#include <trace/events/sock.h>
#include <trace/events/syscalls.h>
#include <trace/events/tcp.h>

#include "ks_internal.h"

/* The probe `fn` has exactly the type tracepoint `tp` calls its probes with. */
#define KS_CHECK_PROBE(tp, fn)                                                       \
	static_assert(__builtin_types_compatible_p(typeof(register_trace_##tp),      \
						   int(typeof(&fn), void *)),        \
		      #fn " does not match the TP_PROTO of " #tp " on this kernel")

/* ---------------------------------------------------------------------------
 * Process lifecycle
 * ------------------------------------------------------------------------- */

static void ks_probe_exec(void *data, struct task_struct *p, pid_t old_pid,
			  struct linux_binprm *bprm)
{
	struct ksight_exec_event *ev;
	struct ks_slot slot;
	ssize_t len;

	ev = ks_reserve(&slot, KSIGHT_KIND_EXEC, sizeof(*ev), 0);
	if (!ev)
		return;
	rcu_read_lock();
	ev->ppid = rcu_dereference(current->real_parent)->tgid;
	rcu_read_unlock();
	strscpy((char *)ev->comm, current->comm, sizeof(ev->comm));
	/* The tracepoint's filename field is bprm->filename; truncated like a str read. */
	len = strscpy((char *)ev->filename, bprm->filename, sizeof(ev->filename));
	ev->filename_len = len < 0 ? sizeof(ev->filename) - 1 : len;
	ks_commit(&slot);
}
KS_CHECK_PROBE(sched_process_exec, ks_probe_exec);

static void ks_probe_fork(void *data, struct task_struct *parent, struct task_struct *child)
{
	struct ksight_fork_event *ev;
	struct ks_slot slot;

	ev = ks_reserve(&slot, KSIGHT_KIND_FORK, sizeof(*ev), 0);
	if (!ev)
		return;
	ev->parent_pid = parent->pid;
	ev->parent_tgid = parent->tgid;
	ev->child_pid = child->pid;
	ev->child_tgid = child->tgid;
	ks_commit(&slot);
}
KS_CHECK_PROBE(sched_process_fork, ks_probe_fork);

static void ks_exit_event(struct task_struct *p, bool group_dead)
{
	struct ksight_exit_event *ev;
	struct ks_slot slot;

	ev = ks_reserve(&slot, KSIGHT_KIND_EXIT, sizeof(*ev), 0);
	if (!ev)
		return;
	/* do_exit() stored the wait(2)-style status before the tracepoint. */
	ev->exit_status = p->exit_code;
	ev->group_dead = group_dead;
	strscpy((char *)ev->comm, current->comm, sizeof(ev->comm));
	ks_commit(&slot);
}

/*
 * Newer kernels pass group_dead to sched_process_exit (and put it in the format,
 * where eBPF reads it). Which prototype this kernel has is read off the type of
 * its register_trace_sched_process_exit(): no version number involved.
 */
#define KS_EXIT_HAS_GROUP_DEAD                                                  \
	__builtin_types_compatible_p(typeof(register_trace_sched_process_exit),   \
				     int(void (*)(void *, struct task_struct *, bool), void *))

static void __maybe_unused ks_probe_exit_group_dead(void *data, struct task_struct *p,
						    bool group_dead)
{
	ks_exit_event(p, group_dead);
}

static void __maybe_unused ks_probe_exit_live(void *data, struct task_struct *p)
{
	/* do_exit() decremented signal->live before the tracepoint: the last thread sees 0. */
	ks_exit_event(p, atomic_read(&p->signal->live) == 0);
}

#define ks_probe_exit                                                           \
	__builtin_choose_expr(KS_EXIT_HAS_GROUP_DEAD, ks_probe_exit_group_dead,   \
			      ks_probe_exit_live)
KS_CHECK_PROBE(sched_process_exit, ks_probe_exit);

/* ---------------------------------------------------------------------------
 * TCP
 * ------------------------------------------------------------------------- */

/* sk->sk_cgrp_data's cgroup v2 id, as eBPF reads it; 0 when there is none. */
static u64 ks_sock_cgroup_id(const struct sock *sk)
{
#ifdef CONFIG_SOCK_CGROUP_DATA
	struct cgroup *cgrp;

	/* Only a full socket has sk_cgrp_data. */
	if (!sk || !sk_fullsock(sk))
		return 0;
	cgrp = sock_cgroup_ptr((struct sock_cgroup_data *)&sk->sk_cgrp_data);
	return cgrp ? cgroup_id(cgrp) : 0;
#else
	return 0;
#endif
}

/*
 * The tuple of tracepoints with sport/dport/family/saddr[4]/daddr[4]/saddr_v6/
 * daddr_v6 fields (inet_sock_set_state, tcp_event_sk_skb, tcp_event_sk): the
 * fields' values, picked by family as the eBPF program picks them.
 */
static void ks_tuple_from_sk(struct ksight_tcp_tuple *t, const struct sock *sk)
{
	const struct inet_sock *inet = inet_sk(sk);

	t->family = sk->sk_family;
	t->sport = ntohs(inet->inet_sport);
	t->dport = ntohs(inet->inet_dport);
	if (t->family == AF_INET) {
		memcpy(t->saddr, &inet->inet_saddr, 4);
		memcpy(t->daddr, &inet->inet_daddr, 4);
	}
#if IS_ENABLED(CONFIG_IPV6)
	else if (t->family == AF_INET6) {
		memcpy(t->saddr, &sk->sk_v6_rcv_saddr, 16);
		memcpy(t->daddr, &sk->sk_v6_daddr, 16);
	}
#endif
}

static void ks_probe_sock_set_state(void *data, const struct sock *sk, const int oldstate,
				    const int newstate)
{
	struct ksight_tcp_state_event *ev;
	struct ks_slot slot;
	u64 sock_cgroup;

	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	/* The socket's cgroup decides whether the record is ignored. */
	sock_cgroup = ks_sock_cgroup_id(sk);
	ev = ks_reserve(&slot, KSIGHT_KIND_TCP_STATE, sizeof(*ev), sock_cgroup);
	if (!ev)
		return;
	ev->sock_id = (unsigned long)sk;
	ev->sock_cgroup_id = sock_cgroup;
	ks_tuple_from_sk(&ev->tuple, sk);
	ev->old_state = oldstate;
	ev->new_state = newstate;
	if (newstate == TCP_CLOSE) {
		const struct tcp_sock *tp = tcp_sk(sk);

		ev->bytes_acked = tp->bytes_acked;
		ev->bytes_received = tp->bytes_received;
		ev->segs_in = tp->segs_in;
		ev->segs_out = tp->segs_out;
		ev->total_retrans = tp->total_retrans;
		/* The kernel keeps srtt scaled by 8. */
		ev->srtt_us = tp->srtt_us >> 3;
		ev->stats_valid = KSIGHT_TCP_STATS_ALL;
	}
	ks_commit(&slot);
}
KS_CHECK_PROBE(inet_sock_set_state, ks_probe_sock_set_state);

/* The records of tcp_retransmit_skb, tcp_send_reset and tcp_receive_reset. */
static struct ksight_tcp_event *ks_tcp_reserve(struct ks_slot *slot, u16 kind,
					       const struct sock *sk, int state)
{
	/* The socket's cgroup decides whether the record is ignored. */
	u64 sock_cgroup = ks_sock_cgroup_id(sk);
	struct ksight_tcp_event *ev = ks_reserve(slot, kind, sizeof(*ev), sock_cgroup);

	if (ev) {
		ev->sock_id = (unsigned long)sk;
		ev->sock_cgroup_id = sock_cgroup;
		ev->state = state;
	}
	return ev;
}

static void ks_tcp_event_sk(u16 kind, const struct sock *sk)
{
	struct ksight_tcp_event *ev;
	struct ks_slot slot;

	if (!sk)
		return;
	ev = ks_tcp_reserve(&slot, kind, sk, sk->sk_state);
	if (!ev)
		return;
	ks_tuple_from_sk(&ev->tuple, sk);
	ks_commit(&slot);
}

static void ks_probe_tcp_retransmit(void *data, const struct sock *sk, const struct sk_buff *skb)
{
	ks_tcp_event_sk(KSIGHT_KIND_TCP_RETRANSMIT, sk);
}
KS_CHECK_PROBE(tcp_retransmit_skb, ks_probe_tcp_retransmit);

static void ks_probe_tcp_receive_reset(void *data, struct sock *sk)
{
	ks_tcp_event_sk(KSIGHT_KIND_TCP_RESET_RECEIVED, sk);
}
KS_CHECK_PROBE(tcp_receive_reset, ks_probe_tcp_receive_reset);

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
/*
 * Since 6.10 tcp_send_reset has a reason, a possibly NULL or non-full socket,
 * and stores struct sockaddr_in6-sized saddr/daddr: from the socket when it is
 * a full one, else reversed from the segment being answered. The kernel's own
 * TP_STORE_ADDR_PORTS* macros fill them here exactly as in the tracepoint; the
 * tuple is then read out of the sockaddrs as eBPF reads it.
 */
struct ks_sockaddr_pair {
	u8 saddr[sizeof(struct sockaddr_in6)];
	u8 daddr[sizeof(struct sockaddr_in6)];
};

static void ks_tuple_from_sockaddr(struct ksight_tcp_tuple *t, const struct ks_sockaddr_pair *a)
{
	u16 family;
	__be16 port;

	memcpy(&family, a->saddr, 2);
	t->family = family;
	memcpy(&port, a->saddr + 2, 2);
	t->sport = ntohs(port);
	memcpy(&port, a->daddr + 2, 2);
	t->dport = ntohs(port);
	if (family == AF_INET) {
		memcpy(t->saddr, a->saddr + 4, 4);
		memcpy(t->daddr, a->daddr + 4, 4);
	} else if (family == AF_INET6) {
		memcpy(t->saddr, a->saddr + 8, 16);
		memcpy(t->daddr, a->daddr + 8, 16);
	}
}

static void ks_probe_tcp_send_reset(void *data, const struct sock *sk,
				    const struct sk_buff *skb, const enum sk_rst_reason reason)
{
	struct ks_sockaddr_pair addrs = {};
	struct ksight_tcp_event *ev;
	struct ks_slot slot;

	if (sk && sk_fullsock(sk)) {
		const struct inet_sock *inet = inet_sk(sk);
		struct ks_sockaddr_pair *__entry = &addrs;

		TP_STORE_ADDR_PORTS(__entry, inet, sk);
	} else if (skb) {
		const struct tcphdr *th = (const struct tcphdr *)skb->data;

		TP_STORE_ADDR_PORTS_SKB(skb, th, addrs.daddr, addrs.saddr);
	}
	/* "Zero means unknown state." */
	ev = ks_tcp_reserve(&slot, KSIGHT_KIND_TCP_RESET_SENT, sk, sk ? sk->sk_state : 0);
	if (!ev)
		return;
	ks_tuple_from_sockaddr(&ev->tuple, &addrs);
	ks_commit(&slot);
}
#else
/* Before 6.10: the tcp_event_sk_skb class, always with a socket. */
static void ks_probe_tcp_send_reset(void *data, const struct sock *sk, const struct sk_buff *skb)
{
	ks_tcp_event_sk(KSIGHT_KIND_TCP_RESET_SENT, sk);
}
#endif
KS_CHECK_PROBE(tcp_send_reset, ks_probe_tcp_send_reset);

/* ---------------------------------------------------------------------------
 * Block I/O
 * ------------------------------------------------------------------------- */

/* The eBPF programs' decoding of the tracepoint's rwbs string. */
static u32 ks_rwbs_op(const char *rwbs, size_t len)
{
	bool discard = false, write = false, read = false;
	size_t i;

	for (i = 0; i < len && rwbs[i]; i++) {
		switch (rwbs[i]) {
		case 'D':
		case 'E':
			discard = true;
			break;
		case 'W':
			write = true;
			break;
		case 'R':
			read = true;
			break;
		}
	}
	if (discard)
		return KSIGHT_BLOCK_OP_DISCARD;
	if (write)
		return KSIGHT_BLOCK_OP_WRITE;
	if (read)
		return KSIGHT_BLOCK_OP_READ;
	if (rwbs[0] == 'F')
		return KSIGHT_BLOCK_OP_FLUSH;
	return KSIGHT_BLOCK_OP_OTHER;
}

static void ks_block_event(u16 kind, dev_t dev, sector_t sector, unsigned int nr_sector,
			   blk_opf_t opf, int error)
{
	struct ksight_block_event *ev;
	struct ks_slot slot;
	char rwbs[RWBS_LEN] = {};

	ev = ks_reserve(&slot, kind, sizeof(*ev), 0);
	if (!ev)
		return;
	blk_fill_rwbs(rwbs, opf);
	ev->sector = sector;
	ev->dev = dev;
	ev->bytes = nr_sector << 9;
	ev->op = ks_rwbs_op(rwbs, sizeof(rwbs));
	ev->error = error;
	ks_commit(&slot);
}

static dev_t ks_rq_dev(struct request *rq)
{
	return rq->q->disk ? disk_devt(rq->q->disk) : 0;
}

static void ks_probe_bio_queue(void *data, struct bio *bio)
{
	ks_block_event(KSIGHT_KIND_BLOCK_QUEUE, bio_dev(bio), bio->bi_iter.bi_sector,
		       bio_sectors(bio), bio->bi_opf, 0);
}
KS_CHECK_PROBE(block_bio_queue, ks_probe_bio_queue);

static void ks_probe_rq_issue(void *data, struct request *rq)
{
	ks_block_event(KSIGHT_KIND_BLOCK_ISSUE, ks_rq_dev(rq), blk_rq_trace_sector(rq),
		       blk_rq_trace_nr_sectors(rq), rq->cmd_flags, 0);
}
KS_CHECK_PROBE(block_rq_issue, ks_probe_rq_issue);

static void ks_probe_rq_complete(void *data, struct request *rq, blk_status_t error,
				 unsigned int nr_bytes)
{
	ks_block_event(KSIGHT_KIND_BLOCK_COMPLETE, ks_rq_dev(rq), blk_rq_pos(rq), nr_bytes >> 9,
		       rq->cmd_flags, blk_status_to_errno(error));
}
KS_CHECK_PROBE(block_rq_complete, ks_probe_rq_complete);


/* ---------------------------------------------------------------------------
 * Socket I/O
 *
 * raw_syscalls:sys_enter stamps the entry of the calls below per thread;
 * raw_syscalls:sys_exit finds the socket (sockfd_lookup(), the socket's own
 * fields, never a call that may take the socket lock) and copies the first
 * bytes of the payload from the caller's buffer. The eBPF programs do the same
 * on the same tracepoints; the semantics are in event-abi's SockIoEvent.
 * ------------------------------------------------------------------------- */

/*
 * Entry stamps: one slot per tid modulo the table size, tagged with the tid.
 * Two threads sharing a slot overwrite each other: the exit then finds no
 * entry (KSIGHT_SOCK_FLAG_NO_ENTRY) and nothing else is lost.
 */
#define KS_ENTRY_SLOTS 16384

struct ks_entry {
	u64 ts;
	u32 tid;
	u32 _pad;
};

static struct ks_entry *ks_entries;

/*
 * Per CPU, a page the payload is copied into before it goes into the ring:
 * hardened usercopy checks a vmalloc'd destination (the ring) under a global
 * lock, a plain page for free.
 */
static void **ks_scratch;

/* What a system call is to the socket I/O record; false for the calls not traced. */
static __always_inline bool ks_sock_call(long nr, u16 *call, u8 *dir)
{
	switch (nr) {
	case __NR_read:
		*call = KSIGHT_SOCK_CALL_READ;
		*dir = KSIGHT_SOCK_DIR_RECV;
		return true;
	case __NR_write:
		*call = KSIGHT_SOCK_CALL_WRITE;
		*dir = KSIGHT_SOCK_DIR_SEND;
		return true;
	case __NR_readv:
		*call = KSIGHT_SOCK_CALL_READV;
		*dir = KSIGHT_SOCK_DIR_RECV;
		return true;
	case __NR_writev:
		*call = KSIGHT_SOCK_CALL_WRITEV;
		*dir = KSIGHT_SOCK_DIR_SEND;
		return true;
	case __NR_sendto:
		*call = KSIGHT_SOCK_CALL_SENDTO;
		*dir = KSIGHT_SOCK_DIR_SEND;
		return true;
	case __NR_recvfrom:
		*call = KSIGHT_SOCK_CALL_RECVFROM;
		*dir = KSIGHT_SOCK_DIR_RECV;
		return true;
	case __NR_sendmsg:
		*call = KSIGHT_SOCK_CALL_SENDMSG;
		*dir = KSIGHT_SOCK_DIR_SEND;
		return true;
	case __NR_recvmsg:
		*call = KSIGHT_SOCK_CALL_RECVMSG;
		*dir = KSIGHT_SOCK_DIR_RECV;
		return true;
	case __NR_sendmmsg:
		*call = KSIGHT_SOCK_CALL_SENDMMSG;
		*dir = KSIGHT_SOCK_DIR_SEND;
		return true;
	case __NR_recvmmsg:
		*call = KSIGHT_SOCK_CALL_RECVMMSG;
		*dir = KSIGHT_SOCK_DIR_RECV;
		return true;
	case __NR_sendfile:
		*call = KSIGHT_SOCK_CALL_SENDFILE;
		*dir = KSIGHT_SOCK_DIR_SEND;
		return true;
	case __NR_splice:
		/* The direction depends on which end is the socket. */
		*call = KSIGHT_SOCK_CALL_SPLICE;
		*dir = KSIGHT_SOCK_DIR_SEND;
		return true;
	default:
		return false;
	}
}

static void ks_probe_sys_enter(void *data, struct pt_regs *regs, long id)
{
	struct ks_entry *e;
	u16 call;
	u8 dir;
	u32 tid;

	/* Compat system calls have other numbers: those are not the calls above. */
	if (!ks_sock_call(id, &call, &dir) || in_compat_syscall())
		return;
	tid = current->pid;
	e = &ks_entries[tid & (KS_ENTRY_SLOTS - 1)];
	WRITE_ONCE(e->tid, 0);
	WRITE_ONCE(e->ts, ktime_get_ns());
	/* The stamp is visible before the tag that vouches for it. */
	smp_store_release(&e->tid, tid);
}
KS_CHECK_PROBE(sys_enter, ks_probe_sys_enter);

/* The call's duration, or 0 with *flags |= NO_ENTRY when its entry was not stamped. */
static u64 ks_take_entry(u64 now, u16 *flags)
{
	u32 tid = current->pid;
	struct ks_entry *e = &ks_entries[tid & (KS_ENTRY_SLOTS - 1)];
	u64 ts;

	if (smp_load_acquire(&e->tid) != tid) {
		*flags |= KSIGHT_SOCK_FLAG_NO_ENTRY;
		return 0;
	}
	ts = READ_ONCE(e->ts);
	WRITE_ONCE(e->tid, 0);
	/* Re-stamped by a thread sharing the slot between the two reads. */
	if (ts > now) {
		*flags |= KSIGHT_SOCK_FLAG_NO_ENTRY;
		return 0;
	}
	return now - ts;
}

/* The socket's part of every record of one call. */
struct ks_sock_info {
	u64 sock_id;
	struct ksight_tcp_tuple tuple;
	u32 fd;
	u8 protocol;
};

/*
 * Fills `si` when `fd` is an IPv4/IPv6 TCP stream or UDP datagram socket.
 * `*is_socket` says whether `fd` was a socket at all (splice tries both ends).
 */
static bool ks_sock_lookup(unsigned long fd, struct ks_sock_info *si, bool *is_socket)
{
	const struct inet_sock *inet;
	struct socket *sock;
	struct sock *sk;
	bool ok = false;
	int err;

	*is_socket = false;
	if (fd > INT_MAX)
		return false;
	sock = sockfd_lookup(fd, &err);
	if (!sock)
		return false;
	*is_socket = true;
	sk = sock->sk;
	if (!sk || (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		goto out;
	if (sk->sk_protocol == IPPROTO_TCP && sk->sk_type == SOCK_STREAM)
		si->protocol = IPPROTO_TCP;
	else if (sk->sk_protocol == IPPROTO_UDP && sk->sk_type == SOCK_DGRAM)
		si->protocol = IPPROTO_UDP;
	else
		goto out;
	inet = inet_sk(sk);
	memset(&si->tuple, 0, sizeof(si->tuple));
	si->sock_id = (unsigned long)sk;
	si->fd = fd;
	si->tuple.family = sk->sk_family;
	si->tuple.sport = inet->inet_num;
	si->tuple.dport = ntohs(sk->sk_dport);
	if (sk->sk_family == AF_INET) {
		memcpy(si->tuple.saddr, &inet->inet_rcv_saddr, 4);
		memcpy(si->tuple.daddr, &sk->sk_daddr, 4);
	}
#if IS_ENABLED(CONFIG_IPV6)
	else {
		memcpy(si->tuple.saddr, &sk->sk_v6_rcv_saddr, 16);
		memcpy(si->tuple.daddr, &sk->sk_v6_daddr, 16);
	}
#endif
	ok = true;
out:
	sockfd_put(sock);
	return ok;
}

/*
 * The peer from a call's address argument: used when it is non-NULL, long
 * enough for its family (what the kernel itself requires: a sockaddr_in, or
 * SIN6_LEN_RFC2133 bytes of a sockaddr_in6) and of the socket's family.
 */
static void ks_peer_from_call(struct ksight_tcp_tuple *t, u8 protocol, const void __user *addr,
			      long len, u16 *flags)
{
	u8 sa[SIN6_LEN_RFC2133];
	size_t need = t->family == AF_INET ? sizeof(struct sockaddr_in) : SIN6_LEN_RFC2133;
	__be16 port;
	u16 family;

	/* A TCP socket ignores an address (it is connected): only UDP takes it. */
	if (protocol != IPPROTO_UDP)
		return;
	if (!addr || len < (long)need)
		return;
	/* Family, port and address: the first 8 (IPv4) or 24 (IPv6) bytes. */
	if (copy_from_user_nofault(sa, addr, t->family == AF_INET ? 8 : SIN6_LEN_RFC2133))
		return;
	memcpy(&family, sa, 2);
	if (family != t->family)
		return;
	memcpy(&port, sa + 2, 2);
	t->dport = ntohs(port);
	memset(t->daddr, 0, sizeof(t->daddr));
	if (family == AF_INET)
		memcpy(t->daddr, sa + 4, 4);
	else
		memcpy(t->daddr, sa + 8, 16);
	*flags |= KSIGHT_SOCK_FLAG_PEER_FROM_CALL;
}

/* One record in the making: what differs between the records of one call. */
struct ks_sock_rec {
	struct ksight_tcp_tuple tuple;
	u64 bytes;
	/* A single buffer, or an iovec array walked as payload is gathered (up to
	 * KSIGHT_MAX_IOV buffers, until the snaplen is filled). */
	const void __user *buf;
	u64 len;
	const struct iovec __user *iov;
	unsigned long iovcnt;
	u16 flags;
	u16 msg_index;
	u32 unreported_msgs;
};

/* Gathers up to `want` payload bytes into `dst`; -EFAULT when a buffer or an iovec that
 * was needed could not be read. A null buffer gives nothing and is no fault. */
static int ks_gather(void *dst, const struct ks_sock_rec *rec, u64 want, u64 *got)
{
	unsigned long n = rec->iov ? min_t(unsigned long, rec->iovcnt, KSIGHT_MAX_IOV) : 1, i;
	u64 payload = 0;

	for (i = 0; i < n && payload < want; i++) {
		const void __user *base = rec->buf;
		u64 len = rec->len, take;
		struct iovec v;

		if (rec->iov) {
			if (copy_from_user_nofault(&v, rec->iov + i, sizeof(v)))
				return -EFAULT;
			base = v.iov_base;
			len = v.iov_len;
		}
		take = min(len, want - payload);
		if (!take || !base)
			continue;
		if (copy_from_user_nofault(dst + payload, base, take))
			return -EFAULT;
		payload += take;
	}
	*got = payload;
	return 0;
}

static void ks_sock_emit(const struct ks_sock_info *si, const struct ks_sock_rec *rec,
			 u64 duration, u16 call, u8 dir, u32 snaplen)
{
	struct ksight_sock_io_event *ev;
	struct ks_slot slot;
	u64 want = min(rec->bytes, (u64)snaplen), payload = 0;
	u16 flags = rec->flags;
	void *scratch;

	/* The scratch page is this CPU's until the record is committed. */
	preempt_disable();
	scratch = ks_scratch[smp_processor_id()];
	if (!(flags & KSIGHT_SOCK_FLAG_PAYLOAD_FAULT) && ks_gather(scratch, rec, want, &payload)) {
		payload = 0;
		flags |= KSIGHT_SOCK_FLAG_PAYLOAD_FAULT;
	}
	ev = ks_reserve(&slot, KSIGHT_KIND_SOCK_IO, KSIGHT_SOCK_IO_SIZE(payload), 0);
	if (!ev)
		goto out;
	memcpy(ev + 1, scratch, payload);
	ev->sock_id = si->sock_id;
	ev->bytes = rec->bytes;
	ev->duration_ns = duration;
	ev->tuple = rec->tuple;
	ev->fd = si->fd;
	ev->call = call;
	ev->direction = dir;
	ev->protocol = si->protocol;
	ev->flags = flags;
	ev->payload_len = payload;
	ev->msg_index = rec->msg_index;
	ev->unreported_msgs = rec->unreported_msgs;
	ks_commit(&slot);
out:
	preempt_enable();
}

/* sendmmsg/recvmmsg: one record per message, at most KSIGHT_MAX_MMSG. */
static void ks_sock_mmsg(const struct ks_sock_info *si, const struct mmsghdr __user *vec,
			 long ret, u64 duration, u16 flags, u16 call, u8 dir, u32 snaplen)
{
	long n = min_t(long, ret, KSIGHT_MAX_MMSG);
	struct ks_sock_rec rec;
	struct mmsghdr m;
	long i;

	for (i = 0; i < n; i++) {
		memset(&rec, 0, sizeof(rec));
		rec.tuple = si->tuple;
		rec.flags = flags;
		rec.msg_index = i;
		if (i == n - 1 && ret > KSIGHT_MAX_MMSG)
			rec.unreported_msgs = ret - KSIGHT_MAX_MMSG;
		if (copy_from_user_nofault(&m, vec + i, sizeof(m))) {
			/* Neither its length nor its payload: the message still counts. */
			rec.flags |= KSIGHT_SOCK_FLAG_PAYLOAD_FAULT;
		} else {
			rec.bytes = m.msg_len;
			ks_peer_from_call(&rec.tuple, si->protocol, m.msg_hdr.msg_name,
					  m.msg_hdr.msg_namelen,
					  &rec.flags);
			rec.iov = m.msg_hdr.msg_iov;
			rec.iovcnt = m.msg_hdr.msg_iovlen;
		}
		ks_sock_emit(si, &rec, duration, call, dir, snaplen);
	}
}

static void ks_sys_exit(struct pt_regs *regs, long ret)
{
	unsigned long args[6];
	struct ks_sock_info si;
	struct ks_sock_rec rec;
	struct user_msghdr msg;
	u64 now, duration;
	u16 call, flags = 0;
	bool is_socket;
	u32 snaplen;
	u8 dir;

	if (!ks_sock_call(syscall_get_nr(current, regs), &call, &dir) || in_compat_syscall())
		return;
	now = ktime_get_ns();
	duration = ks_take_entry(now, &flags);
	if (ret < 0)
		return;
	/* The argument registers are as the call found them. */
	syscall_get_arguments(current, regs, args);
	/* A peek leaves the data queued for the receive that takes it. */
	if (((call == KSIGHT_SOCK_CALL_RECVFROM || call == KSIGHT_SOCK_CALL_RECVMMSG) &&
	     (args[3] & MSG_PEEK)) ||
	    (call == KSIGHT_SOCK_CALL_RECVMSG && (args[2] & MSG_PEEK)))
		return;
	/* Descriptors are 32-bit: the kernel ignores the register's upper half. */
	switch (call) {
	case KSIGHT_SOCK_CALL_SPLICE:
		/* Into a socket (fd_out) is a send, out of one (fd_in) a receive. */
		if (ks_sock_lookup((unsigned int)args[2], &si, &is_socket))
			break;
		if (is_socket)
			return;
		dir = KSIGHT_SOCK_DIR_RECV;
		if (!ks_sock_lookup((unsigned int)args[0], &si, &is_socket))
			return;
		break;
	default:
		/* sendfile's socket is its out_fd, arg0 like everyone else's. */
		if (!ks_sock_lookup((unsigned int)args[0], &si, &is_socket))
			return;
	}
	/* A TCP read of 0 bytes is the end of the stream; a UDP one an empty datagram. */
	if (ret == 0 && si.protocol == IPPROTO_TCP)
		return;
	/*
	 * Once the call is known to make a record, before its payload is copied: the
	 * filtered count is exactly the calls not recorded (as in the eBPF programs).
	 */
	if (ks_current_ignored(KSIGHT_KIND_SOCK_IO))
		return;
	snaplen = READ_ONCE(ks_snaplen);
	if (call == KSIGHT_SOCK_CALL_SENDMMSG || call == KSIGHT_SOCK_CALL_RECVMMSG) {
		ks_sock_mmsg(&si, (const struct mmsghdr __user *)args[1], ret, duration, flags,
			     call, dir, snaplen);
		return;
	}

	memset(&rec, 0, sizeof(rec));
	rec.tuple = si.tuple;
	rec.bytes = ret;
	rec.flags = flags;
	switch (call) {
	case KSIGHT_SOCK_CALL_READ:
	case KSIGHT_SOCK_CALL_WRITE:
		rec.buf = (const void __user *)args[1];
		rec.len = args[2];
		break;
	case KSIGHT_SOCK_CALL_SENDTO:
		rec.buf = (const void __user *)args[1];
		rec.len = args[2];
		ks_peer_from_call(&rec.tuple, si.protocol, (const void __user *)args[4], (int)args[5],
				  &rec.flags);
		break;
	case KSIGHT_SOCK_CALL_RECVFROM: {
		int addrlen;

		rec.buf = (const void __user *)args[1];
		rec.len = args[2];
		/* The length the call wrote back. */
		if (args[4] && args[5] &&
		    !copy_from_user_nofault(&addrlen, (const void __user *)args[5], sizeof(addrlen)))
			ks_peer_from_call(&rec.tuple, si.protocol, (const void __user *)args[4], addrlen,
					  &rec.flags);
		break;
	}
	case KSIGHT_SOCK_CALL_READV:
	case KSIGHT_SOCK_CALL_WRITEV:
		rec.iov = (const struct iovec __user *)args[1];
		rec.iovcnt = args[2];
		break;
	case KSIGHT_SOCK_CALL_SENDMSG:
	case KSIGHT_SOCK_CALL_RECVMSG:
		if (copy_from_user_nofault(&msg, (const void __user *)args[1], sizeof(msg))) {
			rec.flags |= KSIGHT_SOCK_FLAG_PAYLOAD_FAULT;
			break;
		}
		/* recvmsg wrote the peer's length back into msg_namelen. */
		ks_peer_from_call(&rec.tuple, si.protocol, msg.msg_name, msg.msg_namelen, &rec.flags);
		rec.iov = msg.msg_iov;
		rec.iovcnt = msg.msg_iovlen;
		break;
	default:
		/* sendfile and splice: the bytes come from a file or a pipe, not a buffer. */
		break;
	}
	ks_sock_emit(&si, &rec, duration, call, dir, snaplen);
}

static void ks_probe_sys_exit(void *data, struct pt_regs *regs, long ret)
{
	u64 start = ks_time_start();

	ks_sys_exit(regs, ret);
	ks_time_end(KSIGHT_KIND_SOCK_IO, start);
}
KS_CHECK_PROBE(sys_exit, ks_probe_sys_exit);

static void ks_entries_clear(void)
{
	memset(ks_entries, 0, KS_ENTRY_SLOTS * sizeof(*ks_entries));
}

/* ---------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------- */

struct ks_tracepoint {
	const char *name;
	u16 kind;
	void *probe;
	/* Found at load time; NULL when this kernel lacks the tracepoint. */
	struct tracepoint *tp;
	bool registered;
};

/*
 * One row per record kind of event-abi's table (event_abi::kinds::KINDS: tracepoint,
 * kind, probe), and one per entry hook (KindDef::entry) with its kind, before the
 * kind's own row so that it is registered first; event-abi/tests/kinds_c.rs compiles
 * these rows against ksight_abi.h and fails when they differ from it. A kind is
 * available when all its rows' tracepoints exist, and hooked when all are registered.
 */
static struct ks_tracepoint ks_tracepoints[] = {
	{ "sched_process_exec", KSIGHT_KIND_EXEC, ks_probe_exec },
	{ "sched_process_fork", KSIGHT_KIND_FORK, ks_probe_fork },
	{ "sched_process_exit", KSIGHT_KIND_EXIT, ks_probe_exit },
	{ "inet_sock_set_state", KSIGHT_KIND_TCP_STATE, ks_probe_sock_set_state },
	{ "tcp_retransmit_skb", KSIGHT_KIND_TCP_RETRANSMIT, ks_probe_tcp_retransmit },
	{ "tcp_send_reset", KSIGHT_KIND_TCP_RESET_SENT, ks_probe_tcp_send_reset },
	{ "tcp_receive_reset", KSIGHT_KIND_TCP_RESET_RECEIVED, ks_probe_tcp_receive_reset },
	{ "block_bio_queue", KSIGHT_KIND_BLOCK_QUEUE, ks_probe_bio_queue },
	{ "block_rq_issue", KSIGHT_KIND_BLOCK_ISSUE, ks_probe_rq_issue },
	{ "block_rq_complete", KSIGHT_KIND_BLOCK_COMPLETE, ks_probe_rq_complete },
	{ "sys_enter", KSIGHT_KIND_SOCK_IO, ks_probe_sys_enter },
	{ "sys_exit", KSIGHT_KIND_SOCK_IO, ks_probe_sys_exit },
};

static void ks_find_tracepoint(struct tracepoint *tp, void *priv)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		if (!ks_tracepoints[i].tp && strcmp(tp->name, ks_tracepoints[i].name) == 0)
			ks_tracepoints[i].tp = tp;
	}
}

int ks_probes_init(void)
{
	unsigned int cpu;
	size_t i;
	int err = 0;

	ks_entries = kvcalloc(KS_ENTRY_SLOTS, sizeof(*ks_entries), GFP_KERNEL);
	ks_scratch = kcalloc(nr_cpu_ids, sizeof(*ks_scratch), GFP_KERNEL);
	if (!ks_entries || !ks_scratch)
		goto nomem;
	for_each_possible_cpu(cpu) {
		ks_scratch[cpu] = (void *)__get_free_pages(GFP_KERNEL, get_order(KSIGHT_MAX_SNAPLEN));
		if (!ks_scratch[cpu])
			goto nomem;
	}
	for_each_kernel_tracepoint(ks_find_tracepoint, NULL);
	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		if (!ks_tracepoints[i].tp)
			pr_warn("tracepoint %s not found: its records will be missing\n",
				ks_tracepoints[i].name);
	}
	if (!ks_probes_available()) {
		pr_err("none of the tracepoints ksight hooks exists on this kernel\n");
		err = -ENOENT;
		ks_probes_exit();
	}
	return err;

nomem:
	pr_err("cannot allocate the socket I/O tables\n");
	ks_probes_exit();
	return -ENOMEM;
}

void ks_probes_exit(void)
{
	unsigned int cpu;

	if (ks_scratch) {
		for_each_possible_cpu(cpu)
			free_pages((unsigned long)ks_scratch[cpu], get_order(KSIGHT_MAX_SNAPLEN));
		kfree(ks_scratch);
		ks_scratch = NULL;
	}
	kvfree(ks_entries);
	ks_entries = NULL;
}

u32 ks_probes_available(void)
{
	u32 found = 0, missing = 0;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		if (ks_tracepoints[i].tp)
			found |= BIT(ks_tracepoints[i].kind);
		else
			missing |= BIT(ks_tracepoints[i].kind);
	}
	return found & ~missing;
}

/* Unregisters the probes of the kinds not in `keep`; true if it unregistered any. */
static bool ks_probes_drop(u32 keep)
{
	bool dropped = false;
	size_t i;
	int err;

	for (i = ARRAY_SIZE(ks_tracepoints); i-- > 0;) {
		struct ks_tracepoint *t = &ks_tracepoints[i];

		if (!t->registered || (keep & BIT(t->kind)))
			continue;
		err = tracepoint_probe_unregister(t->tp, t->probe, NULL);
		if (err)
			pr_err("cannot unregister the probe of %s: %d\n", t->name, err);
		t->registered = false;
		dropped = true;
	}
	return dropped;
}

void ks_probes_unregister(void)
{
	ks_probes_drop(0);
	/* No probe runs any more once this returns: the rings are quiet. */
	tracepoint_synchronize_unregister();
}

int ks_probes_register(u32 kinds, u32 *attached)
{
	u32 hooked = 0, unhooked = 0;
	size_t i;
	int err = 0;

	kinds &= ks_probes_available();
	/* Probes of kinds no longer wanted are gone before any state they use is reset. */
	if (ks_probes_drop(kinds))
		tracepoint_synchronize_unregister();
	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		struct ks_tracepoint *t = &ks_tracepoints[i];

		if (t->registered || !(kinds & BIT(t->kind)))
			continue;
		/* Neither socket I/O probe runs: stamps of an earlier capture go. */
		if (t->probe == (void *)ks_probe_sys_enter)
			ks_entries_clear();
		err = tracepoint_probe_register(t->tp, t->probe, NULL);
		if (err) {
			pr_err("cannot register the probe of %s: %d\n", t->name, err);
			goto fail;
		}
		t->registered = true;
	}
	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		if (ks_tracepoints[i].registered)
			hooked |= BIT(ks_tracepoints[i].kind);
		else
			unhooked |= BIT(ks_tracepoints[i].kind);
	}
	*attached = hooked & ~unhooked;
	goto out;

fail:
	ks_probes_unregister();
	*attached = 0;
out:
	return err;
}
