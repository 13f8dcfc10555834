/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * ksight module internals shared by ks_main.c (device, rings) and ks_probes.c
 * (tracepoint probes).
 */
#ifndef KS_INTERNAL_H
#define KS_INTERNAL_H

#include <linux/types.h>
#include <linux/irq_work.h>
#include <linux/mm_types.h>
#include "ksight_dev.h"

/* One per possible CPU id. Only its own CPU writes it, with interrupts off. */
struct ks_ring {
	/* Shared with the reader (struct ksight_ring_info, one page). */
	struct ksight_ring_info *info;
	struct page *info_page;
	/* The data pages, and their kernel mapping twice back to back. */
	struct page **pages;
	u8 *data;
	/* Authoritative head: the shared copy is only a mirror. */
	u64 head;
	u64 emitted_total;
	u64 lost_total;
	u64 filtered_total;
	/* 1 while a probe writes this ring: a nested probe drops its record. */
	int busy;
	u64 nested;
	u64 bad_tail;
	u64 emitted[KSIGHT_STATS_SLOTS];
	u64 lost[KSIGHT_STATS_SLOTS];
	u64 filtered[KSIGHT_STATS_SLOTS];
	u64 timed_runs[KSIGHT_STATS_SLOTS];
	u64 timed_ns[KSIGHT_STATS_SLOTS];
} ____cacheline_aligned_in_smp;

/* A record being written: from ks_reserve() to ks_commit() or ks_cancel(). */
struct ks_slot {
	struct ks_ring *ring;
	unsigned long flags;
	u64 start_ns;
	u16 kind;
	u16 size;
};

/* Kinds the reader wants (1 << kind); read by every probe. */
extern u32 ks_enabled_kinds;
/* Payload bytes a socket I/O record carries at most (KSIGHT_IOC_SET_SNAPLEN). */
extern u32 ks_snaplen;

/*
 * Reserves `size` bytes (a multiple of 8) for a record of `kind` in this CPU's
 * ring, zeroes them and fills the common header from the current task. Returns
 * NULL when the kind is disabled, when the record's cgroup is ignored (counted
 * filtered; see ksight_dev.h: the header's cgroup for exec, fork, exit and
 * block queue records, `sock_cgroup` for TCP records, none for block issue and
 * complete; socket I/O is checked by its probe with ks_current_ignored() once
 * the call is known to make a record, before its payload is copied), or when the ring is full (counted lost). On success
 * interrupts stay off until ks_commit(). `sock_cgroup` is only read for TCP
 * kinds.
 */
void *ks_reserve(struct ks_slot *slot, u16 kind, u16 size, u64 sock_cgroup);
/* Publishes the record reserved by ks_reserve(). */
void ks_commit(struct ks_slot *slot);

/* True (and counted filtered for `kind`) when the current task's cgroup is ignored. */
bool ks_current_ignored(u16 kind);

/*
 * Timing of a whole probe run (probe_timing=1), for probes that do much before
 * they reserve: ks_time_start() returns 0 when timing is off.
 */
u64 ks_time_start(void);
void ks_time_end(u16 kind, u64 start);

/* The cgroup ignore set (ks_main.c). */
long ks_set_ignored(const void __user *uarg);
void ks_clear_ignored(void);

/* ks_probes.c: the tracepoint table. */
int ks_probes_init(void);
void ks_probes_exit(void);
/* Registers the probes of `kinds` and unregisters the others; `attached` gets the kinds hooked. */
int ks_probes_register(u32 kinds, u32 *attached);
void ks_probes_unregister(void);
u32 ks_probes_available(void);

#endif /* KS_INTERNAL_H */
