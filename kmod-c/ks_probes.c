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
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/string.h>
#include <linux/tcp.h>
#include <linux/tracepoint.h>
#include <linux/version.h>
#include <net/inet_sock.h>
#include <net/ipv6.h>
#include <net/sock.h>

#include <trace/events/block.h>
#include <trace/events/sched.h>
#include <trace/events/sock.h>
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
 * kind, probe); event-abi/tests/kinds_c.rs compiles these rows against ksight_abi.h
 * and fails when they differ from it.
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
	size_t i;
	int err = 0;

	for_each_kernel_tracepoint(ks_find_tracepoint, NULL);
	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		if (!ks_tracepoints[i].tp)
			pr_warn("tracepoint %s not found: its records will be missing\n",
				ks_tracepoints[i].name);
	}
	if (!ks_probes_available()) {
		pr_err("none of the tracepoints ksight hooks exists on this kernel\n");
		err = -ENOENT;
	}
	return err;
}

u32 ks_probes_available(void)
{
	u32 mask = 0;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		if (ks_tracepoints[i].tp)
			mask |= BIT(ks_tracepoints[i].kind);
	}
	return mask;
}

void ks_probes_unregister(void)
{
	size_t i;
	int err;

	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		struct ks_tracepoint *t = &ks_tracepoints[i];

		if (!t->registered)
			continue;
		err = tracepoint_probe_unregister(t->tp, t->probe, NULL);
		if (err)
			pr_err("cannot unregister the probe of %s: %d\n", t->name, err);
		t->registered = false;
	}
	/* No probe runs any more once this returns: the rings are quiet. */
	tracepoint_synchronize_unregister();
}

int ks_probes_register(u32 *attached)
{
	size_t i;
	int err = 0;

	*attached = 0;
	for (i = 0; i < ARRAY_SIZE(ks_tracepoints); i++) {
		struct ks_tracepoint *t = &ks_tracepoints[i];

		if (!t->tp)
			continue;
		err = tracepoint_probe_register(t->tp, t->probe, NULL);
		if (err) {
			pr_err("cannot register the probe of %s: %d\n", t->name, err);
			goto fail;
		}
		t->registered = true;
		*attached |= BIT(t->kind);
	}
	goto out;

fail:
	ks_probes_unregister();
	*attached = 0;
out:
	return err;
}
