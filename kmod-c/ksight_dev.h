/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * ksight device interface: how a reader talks to /dev/ksight.
 *
 * The records themselves are in ksight_abi.h (event-abi). This file is the
 * interface of the character device that carries them: the ioctls, the shape
 * of the per-CPU rings and the info page mapped next to each. Its Rust mirror is
 * backend-kmod/src/uapi.rs; event-abi/tests/c_layout.rs compiles this header and
 * compares every struct, field and constant with that mirror.
 *
 * Rules: fixed-width integers, explicit padding, sizes multiple of 8. A change
 * that moves or resizes a field, renumbers an ioctl or changes the mmap layout
 * bumps KSIGHT_DEV_VERSION_MAJOR; a new ioctl bumps the minor. A reader refuses
 * a module whose record ABI major (KSIGHT_ABI_VERSION_MAJOR) or device major
 * differs from its own.
 *
 * Protocol, one ring per possible CPU id (0 .. nr_rings - 1):
 *
 *   mmap offset ring * ring_stride              : struct ksight_ring_info, one
 *                                                 page, MAP_SHARED, read-write
 *                                                 (the reader writes `tail`).
 *   mmap offset ring * ring_stride + data_offset: the data area, 2 * ring_bytes,
 *                                                 read-only: the ring_bytes of
 *                                                 data mapped twice back to back,
 *                                                 so a record that wraps is
 *                                                 still contiguous.
 *
 *   head and tail are free-running byte counts; the unread records are the
 *   bytes [tail, head), at data + (tail & (ring_bytes - 1)). Records are
 *   8-byte aligned and never split.
 *
 *   Kernel (one writer per ring, interrupts off): if ring_bytes - (head - tail)
 *   < size, count the record lost; else write it at head, then publish
 *   head + size with a release store (smp_wmb before the store of head).
 *   Reader: load head with acquire, read records up to it, then store tail
 *   with release, so the kernel never overwrites bytes still being read.
 */
#ifndef KSIGHT_DEV_H
#define KSIGHT_DEV_H

#include "ksight_abi.h"
#include <linux/ioctl.h>

/* Version of this interface: major << 16 | minor. */
#define KSIGHT_DEV_VERSION_MAJOR 1
#define KSIGHT_DEV_VERSION_MINOR 2
#define KSIGHT_DEV_VERSION ((KSIGHT_DEV_VERSION_MAJOR << 16) | KSIGHT_DEV_VERSION_MINOR)

/* Per-kind statistics slots: indexed by KSIGHT_KIND_*, room for future kinds. */
#define KSIGHT_STATS_SLOTS 32

/* Most cgroup ids KSIGHT_IOC_SET_IGNORED_CGROUPS accepts (event_abi::filter). */
#define KSIGHT_IGNORED_CGROUPS_MAX 16384

/* Bounds of the ring_bytes module parameter (per CPU, a power of two). */
#define KSIGHT_RING_BYTES_MIN 4096
#define KSIGHT_RING_BYTES_MAX (1 << 28)
#define KSIGHT_RING_BYTES_DEFAULT (1 << 20)

/*
 * The first page of each ring's mapping. The kernel writes head, lost,
 * emitted and filtered (mirrors of counters it keeps privately; a reader that scribbles on
 * them fools only itself); the reader writes tail. Writer and reader fields sit
 * on separate cache lines.
 */
struct ksight_ring_info {
	/* Bytes ever published (free-running). Written by the kernel, release. */
	ksight_u64 head;
	/* Records dropped because the ring was full. */
	ksight_u64 lost;
	/* Records written into the ring. */
	ksight_u64 emitted;
	/* Records dropped because their cgroup is ignored (interface 1.1; 0 before). */
	ksight_u64 filtered;
	ksight_u64 _pad0[4];
	/* Bytes ever consumed (free-running). Written by the reader, release. */
	ksight_u64 tail;
	ksight_u64 _pad1[7];
};

/* KSIGHT_IOC_VERSION */
struct ksight_version {
	/* KSIGHT_ABI_VERSION of the records the module writes. */
	ksight_u32 abi_version;
	/* KSIGHT_DEV_VERSION of this interface. */
	ksight_u32 dev_version;
};

/* KSIGHT_IOC_GEOMETRY: where the rings are. */
struct ksight_geometry {
	/* One ring per possible CPU id. */
	ksight_u32 nr_rings;
	/* Data bytes per ring (power of two); the data mapping is twice this. */
	ksight_u32 ring_bytes;
	/* The kernel's page size: the info mapping is one page. */
	ksight_u32 page_size;
	ksight_u32 _pad;
	/* mmap offset of ring n's info page: n * ring_stride. */
	ksight_u64 ring_stride;
	/* mmap offset of a ring's data area, from its info page's offset. */
	ksight_u64 data_offset;
};

/* KSIGHT_IOC_STATS: counters summed over all rings, per record kind. */
struct ksight_stats {
	/* Records written, per kind. */
	ksight_u64 emitted[KSIGHT_STATS_SLOTS];
	/* Records dropped because a ring was full, per kind. */
	ksight_u64 lost[KSIGHT_STATS_SLOTS];
	/* Probe runs timed while the probe_timing parameter was 1, per kind. */
	ksight_u64 timed_runs[KSIGHT_STATS_SLOTS];
	/* Nanoseconds spent in those runs, per kind. */
	ksight_u64 timed_ns[KSIGHT_STATS_SLOTS];
	/*
	 * Bit 1 << kind: the kind's probes are registered now (all of them: socket
	 * I/O's sys_exit and its sys_enter). Only enabled kinds are registered.
	 */
	ksight_u32 attached;
	/* Bit 1 << kind: every tracepoint of the kind exists on this kernel. */
	ksight_u32 available;
	/* Bit 1 << kind: kinds enabled (KSIGHT_IOC_SET_KINDS). */
	ksight_u32 enabled;
	/* 1 between KSIGHT_IOC_START and KSIGHT_IOC_STOP. */
	ksight_u32 capturing;
	/* Records dropped because a probe nested inside another on one CPU. */
	ksight_u64 nested;
	/* Times the reader's tail was found beyond head (treated as a full ring). */
	ksight_u64 bad_tail;
	/*
	 * Interface 1.1: records dropped because their cgroup is ignored, per kind.
	 * A 1.0 reader's KSIGHT_IOC_STATS_V1 gets the struct without it.
	 */
	ksight_u64 filtered[KSIGHT_STATS_SLOTS];
};

/*
 * KSIGHT_IOC_SET_IGNORED_CGROUPS: replaces the set of cgroup v2 ids whose
 * records the probes drop before reserving them (counted in `filtered`): exec,
 * fork, exit, block queue and socket I/O records by the header's cgroup id (the
 * current task's; for socket I/O checked once the call is known to make a
 * record, before its payload is copied, so exactly the calls not recorded count), TCP
 * state, retransmit and reset records by their sock_cgroup_id; block issue and
 * complete never. count 0 clears the set (no filtering).
 * EINVAL when count > KSIGHT_IGNORED_CGROUPS_MAX or _pad != 0; EFAULT for a
 * bad ids_ptr. The set is the reader's: closing the device clears it.
 */
struct ksight_ignored_cgroups {
	/* Number of ids at ids_ptr (duplicates allowed). */
	ksight_u32 count;
	ksight_u32 _pad;
	/* User address of count ksight_u64 cgroup ids. */
	ksight_u64 ids_ptr;
};

#define KSIGHT_IOC_MAGIC 0xB7
/* Versions: fails never; the reader compares. */
#define KSIGHT_IOC_VERSION _IOR(KSIGHT_IOC_MAGIC, 1, struct ksight_version)
/* Ring geometry for mmap. */
#define KSIGHT_IOC_GEOMETRY _IOR(KSIGHT_IOC_MAGIC, 2, struct ksight_geometry)
/*
 * Kinds to record: a ksight_u32 mask of 1 << KSIGHT_KIND_*; EINVAL for others.
 * Only the probes of enabled kinds are registered (during a capture, the change
 * registers and unregisters them at once): a disabled kind costs nothing.
 */
#define KSIGHT_IOC_SET_KINDS _IOW(KSIGHT_IOC_MAGIC, 3, ksight_u32)
/* Register the probes; records flow until KSIGHT_IOC_STOP or close. */
#define KSIGHT_IOC_START _IO(KSIGHT_IOC_MAGIC, 4)
/* Unregister the probes and wait until none runs: every record is published. */
#define KSIGHT_IOC_STOP _IO(KSIGHT_IOC_MAGIC, 5)
/* Counters, struct ksight_stats. */
#define KSIGHT_IOC_STATS _IOR(KSIGHT_IOC_MAGIC, 6, struct ksight_stats)
/* poll() reports readable once a ring holds this many bytes (1 .. ring_bytes). */
#define KSIGHT_IOC_SET_WATERMARK _IOW(KSIGHT_IOC_MAGIC, 7, ksight_u32)
/* Interface 1.1: the cgroup ignore set, struct ksight_ignored_cgroups. */
#define KSIGHT_IOC_SET_IGNORED_CGROUPS _IOW(KSIGHT_IOC_MAGIC, 8, struct ksight_ignored_cgroups)
/*
 * Interface 1.2: payload bytes copied per socket I/O record, a ksight_u32 from 1
 * to KSIGHT_MAX_SNAPLEN (EINVAL otherwise). Each open starts at KSIGHT_DEFAULT_SNAPLEN.
 */
#define KSIGHT_IOC_SET_SNAPLEN _IOW(KSIGHT_IOC_MAGIC, 9, ksight_u32)
/*
 * KSIGHT_IOC_STATS as interface 1.0 numbered it (the size is part of the
 * number): still answered, with the first KSIGHT_STATS_V1_SIZE bytes.
 */
#define KSIGHT_STATS_V1_SIZE 1056
#define KSIGHT_IOC_STATS_V1 _IOC(_IOC_READ, KSIGHT_IOC_MAGIC, 6, KSIGHT_STATS_V1_SIZE)

_Static_assert(sizeof(struct ksight_ring_info) == 128, "ksight_ring_info size");
_Static_assert(sizeof(struct ksight_version) == 8, "ksight_version size");
_Static_assert(sizeof(struct ksight_geometry) == 32, "ksight_geometry size");
_Static_assert(sizeof(struct ksight_stats) == 1312, "ksight_stats size");
_Static_assert(__builtin_offsetof(struct ksight_stats, filtered) == KSIGHT_STATS_V1_SIZE,
	       "ksight_stats grew only by appending");
_Static_assert(sizeof(struct ksight_ignored_cgroups) == 16, "ksight_ignored_cgroups size");

#endif /* KSIGHT_DEV_H */
