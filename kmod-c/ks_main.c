// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * ksight.ko: the device (/dev/ksight), its per-CPU rings and their writer.
 *
 * One ring per possible CPU id. A ring is ring_bytes of pages mapped twice back
 * to back, in the kernel (vmap) and in the reader (mmap, read-only), so no
 * record is ever split at the end of the ring; next to it an info page holds
 * head, tail and counters (ksight_dev.h has the protocol). A probe writes its
 * record with interrupts off on its own CPU's ring: the ring has exactly one
 * writer at a time, no lock, and the reader is never waited for: a full ring
 * counts the record lost.
 *
 * One reader at a time: a second open() fails with EBUSY. The probes are
 * registered only between KSIGHT_IOC_START and KSIGHT_IOC_STOP (or close), so
 * the module costs nothing while nobody reads. An open file holds a reference
 * on the module (fops.owner), so it cannot be unloaded under a reader.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/cgroup.h>
#include <linux/fs.h>
#include <linux/irq_work.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>

#include "ks_internal.h"

static unsigned int ring_bytes = KSIGHT_RING_BYTES_DEFAULT;

static int ks_check_ring_bytes(unsigned int bytes)
{
	if (bytes < KSIGHT_RING_BYTES_MIN || bytes > KSIGHT_RING_BYTES_MAX ||
	    !is_power_of_2(bytes) || bytes < PAGE_SIZE) {
		pr_err("ring_bytes=%u is invalid: it must be a power of two from %lu to %u\n",
		       bytes, max_t(unsigned long, KSIGHT_RING_BYTES_MIN, PAGE_SIZE),
		       KSIGHT_RING_BYTES_MAX);
		return -EINVAL;
	}
	return 0;
}

static int ks_set_ring_bytes(const char *val, const struct kernel_param *kp)
{
	unsigned int bytes;
	int err;

	err = kstrtouint(val, 0, &bytes);
	if (err) {
		pr_err("ring_bytes=%s is not a number\n", val);
		return err;
	}
	err = ks_check_ring_bytes(bytes);
	if (err)
		return err;
	*(unsigned int *)kp->arg = bytes;
	return 0;
}

static const struct kernel_param_ops ks_ring_bytes_ops = {
	.set = ks_set_ring_bytes,
	.get = param_get_uint,
};
module_param_cb(ring_bytes, &ks_ring_bytes_ops, &ring_bytes, 0444);
MODULE_PARM_DESC(ring_bytes,
		 "Bytes of each per-CPU ring: a power of two, at least one page (default 1 MiB)");

static bool probe_timing;
module_param(probe_timing, bool, 0644);
MODULE_PARM_DESC(probe_timing,
		 "Time every probe run for KSIGHT_IOC_STATS (costs two clock reads per event)");

u32 ks_enabled_kinds;
u32 ks_snaplen = KSIGHT_DEFAULT_SNAPLEN;

static struct ks_ring *ks_rings;
static unsigned int ks_nr_rings;
static u64 ks_ring_mask;

static DEFINE_MUTEX(ks_lock);		/* open/close, start/stop */
static unsigned long ks_in_use;		/* bit 0: a reader has the device open */
static bool ks_capturing;		/* under ks_lock */
static u32 ks_attached;			/* under ks_lock */
static u32 ks_watermark;
static int ks_armed;			/* a poller waits: wake it at the watermark */
static DECLARE_WAIT_QUEUE_HEAD(ks_wait);

static void ks_wakeup(struct irq_work *work)
{
	wake_up_interruptible(&ks_wait);
}

/* Probes may run where waking a task is not allowed: wake from an irq_work. */
static struct irq_work ks_wakeup_work;

/* ---------------------------------------------------------------------------
 * The cgroup ignore set
 * ------------------------------------------------------------------------- */

/* Sorted, without duplicates; replaced whole, never changed in place. */
struct ks_ignored {
	size_t count;
	u64 ids[];
};

/* NULL while nothing is ignored: the probes' whole cost is then one load. */
static struct ks_ignored __rcu *ks_ignored;
static DEFINE_MUTEX(ks_ignored_lock);	/* writers of ks_ignored */

static bool ks_cgroup_ignored(u64 id)
{
	const struct ks_ignored *set;
	size_t lo, hi;
	bool hit = false;

	if (likely(!rcu_access_pointer(ks_ignored)))
		return false;
	/*
	 * Tracepoint probes run with preemption disabled, which is an RCU read-side
	 * section to synchronize_rcu() since 4.20's consolidation; the explicit
	 * lock makes that independent of the tracepoint implementation and keeps
	 * lockdep's rcu_dereference() checking happy.
	 */
	rcu_read_lock();
	set = rcu_dereference(ks_ignored);
	if (set) {
		lo = 0;
		hi = set->count;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (set->ids[mid] == id) {
				hit = true;
				break;
			}
			if (set->ids[mid] < id)
				lo = mid + 1;
			else
				hi = mid;
		}
	}
	rcu_read_unlock();
	return hit;
}

static int ks_cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

/* Publishes `set` (NULL: nothing ignored) and frees the one it replaces. */
static void ks_publish_ignored(struct ks_ignored *set)
{
	struct ks_ignored *old;

	mutex_lock(&ks_ignored_lock);
	old = rcu_replace_pointer(ks_ignored, set, lockdep_is_held(&ks_ignored_lock));
	mutex_unlock(&ks_ignored_lock);
	if (old) {
		/* No probe still reads it once every read-side section ended. */
		synchronize_rcu();
		kvfree(old);
	}
}

long ks_set_ignored(const void __user *uarg)
{
	struct ksight_ignored_cgroups req;
	struct ks_ignored *set = NULL;
	size_t i, n;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req._pad)
		return -EINVAL;
	if (req.count > KSIGHT_IGNORED_CGROUPS_MAX) {
		pr_info_ratelimited("%u cgroup ids to ignore refused: at most %u\n", req.count,
				    KSIGHT_IGNORED_CGROUPS_MAX);
		return -EINVAL;
	}
	if (req.count) {
		set = kvmalloc(struct_size(set, ids, req.count), GFP_KERNEL);
		if (!set)
			return -ENOMEM;
		if (copy_from_user(set->ids, u64_to_user_ptr(req.ids_ptr),
				   array_size(req.count, sizeof(u64)))) {
			kvfree(set);
			return -EFAULT;
		}
		sort(set->ids, req.count, sizeof(u64), ks_cmp_u64, NULL);
		for (i = 1, n = 1; i < req.count; i++) {
			if (set->ids[i] != set->ids[n - 1])
				set->ids[n++] = set->ids[i];
		}
		set->count = n;
	}
	ks_publish_ignored(set);
	return 0;
}

void ks_clear_ignored(void)
{
	ks_publish_ignored(NULL);
}

/* Which cgroup id decides whether a record of `kind` is dropped; false: none. */
static __always_inline bool ks_filter_key(u16 kind, u64 header_cgroup, u64 sock_cgroup, u64 *key)
{
	switch (kind) {
	case KSIGHT_KIND_EXEC:
	case KSIGHT_KIND_FORK:
	case KSIGHT_KIND_EXIT:
	case KSIGHT_KIND_BLOCK_QUEUE:
		*key = header_cgroup;
		return true;
	case KSIGHT_KIND_SOCK_IO:
		/* Checked by its probe once the call is known to make a record (ks_current_ignored()). */
		return false;
	case KSIGHT_KIND_TCP_STATE:
	case KSIGHT_KIND_TCP_RETRANSMIT:
	case KSIGHT_KIND_TCP_RESET_SENT:
	case KSIGHT_KIND_TCP_RESET_RECEIVED:
		*key = sock_cgroup;
		return true;
	default:
		/* Block issue and complete run in irq or other tasks' context. */
		return false;
	}
}

/* ---------------------------------------------------------------------------
 * The writer
 * ------------------------------------------------------------------------- */

bool ks_current_ignored(u16 kind)
{
	unsigned long flags;
	struct ks_ring *r;
	u64 cgroup;

	if (likely(!rcu_access_pointer(ks_ignored)))
		return false;
	rcu_read_lock();
	cgroup = cgroup_id(task_dfl_cgroup(current));
	rcu_read_unlock();
	if (!ks_cgroup_ignored(cgroup))
		return false;
	local_irq_save(flags);
	r = &ks_rings[smp_processor_id()];
	r->filtered[kind]++;
	r->filtered_total++;
	WRITE_ONCE(r->info->filtered, r->filtered_total);
	local_irq_restore(flags);
	return true;
}

u64 ks_time_start(void)
{
	return READ_ONCE(probe_timing) ? ktime_get_mono_fast_ns() : 0;
}

void ks_time_end(u16 kind, u64 start)
{
	unsigned long flags;
	struct ks_ring *r;

	if (!start)
		return;
	local_irq_save(flags);
	r = &ks_rings[smp_processor_id()];
	r->timed_runs[kind]++;
	r->timed_ns[kind] += ktime_get_mono_fast_ns() - start;
	local_irq_restore(flags);
}

void *ks_reserve(struct ks_slot *slot, u16 kind, u16 size, u64 sock_cgroup)
{
	struct ksight_event_header *h;
	struct task_struct *task = current;
	struct ks_ring *r;
	u64 tail, used, cgroup, key;
	u8 *rec;
	int cpu;

	if (!(READ_ONCE(ks_enabled_kinds) & BIT(kind)))
		return NULL;
	local_irq_save(slot->flags);
	/* Socket I/O times its whole probe (the socket lookup and copies are most of it). */
	slot->start_ns = READ_ONCE(probe_timing) && kind != KSIGHT_KIND_SOCK_IO ?
		ktime_get_mono_fast_ns() : 0;
	cpu = smp_processor_id();
	r = &ks_rings[cpu];
	/* As bpf_get_current_cgroup_id(): the task's cgroup v2 id. */
	rcu_read_lock();
	cgroup = cgroup_id(task_dfl_cgroup(task));
	rcu_read_unlock();
	/* Before anything is reserved: an ignored record is neither written nor lost. */
	if (ks_filter_key(kind, cgroup, sock_cgroup, &key) && unlikely(ks_cgroup_ignored(key))) {
		r->filtered[kind]++;
		r->filtered_total++;
		WRITE_ONCE(r->info->filtered, r->filtered_total);
		goto done;
	}
	if (unlikely(r->busy)) {
		/* Interrupts are off while a record is written, so only an NMI gets here. */
		r->nested++;
		goto lost;
	}
	/* Pairs with the reader's release of tail: it is done with those bytes. */
	tail = smp_load_acquire(&r->info->tail);
	used = r->head - tail;
	if (unlikely(used > ring_bytes)) {
		/* The reader wrote a tail beyond head: trust nothing, write nothing. */
		r->bad_tail++;
		goto lost;
	}
	if (ring_bytes - used < size)
		goto lost;

	r->busy = 1;
	rec = r->data + (r->head & ks_ring_mask);
	/* Every byte, padding included, is defined: the records match eBPF's byte for byte. */
	memset(rec, 0, size);
	h = (struct ksight_event_header *)rec;
	/* bpf_ktime_get_ns() reads this clock too. */
	h->ts_ns = ktime_get_mono_fast_ns();
	h->cgroup_id = cgroup;
	h->pid = task->tgid;
	h->tid = task->pid;
	h->cpu = cpu;
	h->kind = kind;
	h->size = size;
	slot->ring = r;
	slot->kind = kind;
	slot->size = size;
	return rec;

lost:
	r->lost[kind]++;
	r->lost_total++;
	WRITE_ONCE(r->info->lost, r->lost_total);
done:
	if (slot->start_ns) {
		r->timed_runs[kind]++;
		r->timed_ns[kind] += ktime_get_mono_fast_ns() - slot->start_ns;
	}
	local_irq_restore(slot->flags);
	return NULL;
}

void ks_commit(struct ks_slot *slot)
{
	struct ks_ring *r = slot->ring;
	u64 head = r->head + slot->size;

	r->head = head;
	/*
	 * The record's bytes are visible before the head that covers them (an
	 * smp_wmb() and the store, in one): pairs with the reader's acquire of head.
	 */
	smp_store_release(&r->info->head, head);
	r->emitted[slot->kind]++;
	r->emitted_total++;
	WRITE_ONCE(r->info->emitted, r->emitted_total);
	r->busy = 0;
	if (slot->start_ns) {
		r->timed_runs[slot->kind]++;
		r->timed_ns[slot->kind] += ktime_get_mono_fast_ns() - slot->start_ns;
	}
	local_irq_restore(slot->flags);

	/* Wake a sleeping poller once this ring holds a watermark's worth. */
	if (head - READ_ONCE(r->info->tail) < READ_ONCE(ks_watermark))
		return;
	/* Pairs with ks_poll(): either it sees our head or we see it armed. */
	smp_mb();
	if (READ_ONCE(ks_armed) && xchg(&ks_armed, 0))
		irq_work_queue(&ks_wakeup_work);
}

/* ---------------------------------------------------------------------------
 * Rings
 * ------------------------------------------------------------------------- */

static void ks_ring_free(struct ks_ring *r)
{
	unsigned int i, n = ring_bytes >> PAGE_SHIFT;

	if (r->data)
		vunmap(r->data);
	if (r->pages) {
		for (i = 0; i < n && r->pages[i]; i++)
			__free_page(r->pages[i]);
		kvfree(r->pages);
	}
	if (r->info_page)
		__free_page(r->info_page);
	memset(r, 0, sizeof(*r));
}

static int ks_ring_alloc(struct ks_ring *r, int node)
{
	unsigned int i, n = ring_bytes >> PAGE_SHIFT;
	int err = -ENOMEM;

	r->info_page = alloc_pages_node(node, GFP_KERNEL | __GFP_ZERO, 0);
	if (!r->info_page)
		goto out;
	r->info = page_address(r->info_page);
	r->pages = kvcalloc(2 * n, sizeof(*r->pages), GFP_KERNEL);
	if (!r->pages)
		goto out;
	for (i = 0; i < n; i++) {
		r->pages[i] = alloc_pages_node(node, GFP_KERNEL | __GFP_ZERO, 0);
		if (!r->pages[i])
			goto out;
	}
	/* The same pages twice: a record that crosses the end continues at the start. */
	for (i = 0; i < n; i++)
		r->pages[n + i] = r->pages[i];
	r->data = vmap(r->pages, 2 * n, VM_MAP, PAGE_KERNEL);
	if (!r->data)
		goto out;
	err = 0;
out:
	return err;
}

static void ks_rings_free(void)
{
	unsigned int cpu;

	if (!ks_rings)
		return;
	for (cpu = 0; cpu < ks_nr_rings; cpu++)
		ks_ring_free(&ks_rings[cpu]);
	kfree(ks_rings);
	ks_rings = NULL;
}

static int ks_rings_alloc(void)
{
	unsigned int cpu;
	int err = -ENOMEM;

	/* Every CPU id below nr_cpu_ids gets a ring: hotplug needs no bookkeeping. */
	ks_nr_rings = nr_cpu_ids;
	ks_ring_mask = ring_bytes - 1;
	ks_rings = kcalloc(ks_nr_rings, sizeof(*ks_rings), GFP_KERNEL);
	if (!ks_rings) {
		pr_err("cannot allocate %u ring descriptors\n", ks_nr_rings);
		goto out;
	}
	for (cpu = 0; cpu < ks_nr_rings; cpu++) {
		err = ks_ring_alloc(&ks_rings[cpu],
				    cpu_possible(cpu) ? cpu_to_node(cpu) : NUMA_NO_NODE);
		if (err) {
			pr_err("cannot allocate the %u-byte ring of CPU %u\n", ring_bytes, cpu);
			ks_rings_free();
			goto out;
		}
	}
	err = 0;
out:
	return err;
}

/* Empties every ring and zeroes its counters. No probe may be registered. */
static void ks_rings_reset(void)
{
	unsigned int cpu;

	for (cpu = 0; cpu < ks_nr_rings; cpu++) {
		struct ks_ring *r = &ks_rings[cpu];

		r->head = 0;
		r->emitted_total = 0;
		r->lost_total = 0;
		r->filtered_total = 0;
		r->busy = 0;
		r->nested = 0;
		r->bad_tail = 0;
		memset(r->emitted, 0, sizeof(r->emitted));
		memset(r->lost, 0, sizeof(r->lost));
		memset(r->filtered, 0, sizeof(r->filtered));
		memset(r->timed_runs, 0, sizeof(r->timed_runs));
		memset(r->timed_ns, 0, sizeof(r->timed_ns));
		memset(r->info, 0, sizeof(*r->info));
	}
}

static bool ks_any_ready(u32 watermark)
{
	unsigned int cpu;

	for (cpu = 0; cpu < ks_nr_rings; cpu++) {
		struct ks_ring *r = &ks_rings[cpu];

		if (READ_ONCE(r->info->head) - READ_ONCE(r->info->tail) >= watermark)
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------------------
 * Capture control
 * ------------------------------------------------------------------------- */

static int ks_start_locked(void)
{
	int err = 0;

	if (ks_capturing)
		goto out;
	err = ks_probes_register(READ_ONCE(ks_enabled_kinds), &ks_attached);
	if (err)
		goto out;
	ks_capturing = true;
out:
	return err;
}

static void ks_stop_locked(void)
{
	if (!ks_capturing)
		return;
	ks_probes_unregister();
	ks_attached = 0;
	ks_capturing = false;
	/* The last probes may have queued a wake-up. */
	irq_work_sync(&ks_wakeup_work);
	wake_up_interruptible(&ks_wait);
}

static void ks_fill_stats(struct ksight_stats *st)
{
	unsigned int cpu, k;

	memset(st, 0, sizeof(*st));
	for (cpu = 0; cpu < ks_nr_rings; cpu++) {
		struct ks_ring *r = &ks_rings[cpu];

		for (k = 0; k < KSIGHT_STATS_SLOTS; k++) {
			st->emitted[k] += READ_ONCE(r->emitted[k]);
			st->lost[k] += READ_ONCE(r->lost[k]);
			st->filtered[k] += READ_ONCE(r->filtered[k]);
			st->timed_runs[k] += READ_ONCE(r->timed_runs[k]);
			st->timed_ns[k] += READ_ONCE(r->timed_ns[k]);
		}
		st->nested += READ_ONCE(r->nested);
		st->bad_tail += READ_ONCE(r->bad_tail);
	}
	st->attached = ks_attached;
	st->available = ks_probes_available();
	st->enabled = READ_ONCE(ks_enabled_kinds);
	st->capturing = ks_capturing;
}

/* ---------------------------------------------------------------------------
 * File operations
 * ------------------------------------------------------------------------- */

static int ks_open(struct inode *inode, struct file *file)
{
	if (test_and_set_bit_lock(0, &ks_in_use))
		return -EBUSY;
	mutex_lock(&ks_lock);
	ks_rings_reset();
	WRITE_ONCE(ks_enabled_kinds, ks_probes_available());
	WRITE_ONCE(ks_watermark, ring_bytes / 4);
	WRITE_ONCE(ks_snaplen, KSIGHT_DEFAULT_SNAPLEN);
	WRITE_ONCE(ks_armed, 0);
	mutex_unlock(&ks_lock);
	return 0;
}

static int ks_release(struct inode *inode, struct file *file)
{
	mutex_lock(&ks_lock);
	ks_stop_locked();
	mutex_unlock(&ks_lock);
	/* The ignore set is this reader's: the next one starts without. */
	ks_clear_ignored();
	clear_bit_unlock(0, &ks_in_use);
	return 0;
}

static long ks_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	long err = 0;

	switch (cmd) {
	case KSIGHT_IOC_VERSION: {
		struct ksight_version v = {
			.abi_version = KSIGHT_ABI_VERSION,
			.dev_version = KSIGHT_DEV_VERSION,
		};

		if (copy_to_user(uarg, &v, sizeof(v)))
			err = -EFAULT;
		break;
	}
	case KSIGHT_IOC_GEOMETRY: {
		struct ksight_geometry g = {
			.nr_rings = ks_nr_rings,
			.ring_bytes = ring_bytes,
			.page_size = PAGE_SIZE,
			.ring_stride = PAGE_SIZE + 2 * (u64)ring_bytes,
			.data_offset = PAGE_SIZE,
		};

		if (copy_to_user(uarg, &g, sizeof(g)))
			err = -EFAULT;
		break;
	}
	case KSIGHT_IOC_SET_KINDS: {
		u32 kinds;

		if (get_user(kinds, (u32 __user *)uarg)) {
			err = -EFAULT;
			break;
		}
		if (kinds & ~(u32)(GENMASK(KSIGHT_KIND_END - 1, 1))) {
			err = -EINVAL;
			break;
		}
		mutex_lock(&ks_lock);
		WRITE_ONCE(ks_enabled_kinds, kinds);
		/* A running capture hooks exactly the enabled kinds too. */
		if (ks_capturing)
			err = ks_probes_register(kinds, &ks_attached);
		mutex_unlock(&ks_lock);
		break;
	}
	case KSIGHT_IOC_SET_SNAPLEN: {
		u32 snaplen;

		if (get_user(snaplen, (u32 __user *)uarg)) {
			err = -EFAULT;
			break;
		}
		if (!snaplen || snaplen > KSIGHT_MAX_SNAPLEN) {
			err = -EINVAL;
			break;
		}
		WRITE_ONCE(ks_snaplen, snaplen);
		break;
	}
	case KSIGHT_IOC_START:
		mutex_lock(&ks_lock);
		err = ks_start_locked();
		mutex_unlock(&ks_lock);
		break;
	case KSIGHT_IOC_STOP:
		mutex_lock(&ks_lock);
		ks_stop_locked();
		mutex_unlock(&ks_lock);
		break;
	case KSIGHT_IOC_STATS:
	case KSIGHT_IOC_STATS_V1: {
		struct ksight_stats *st = kmalloc(sizeof(*st), GFP_KERNEL);

		if (!st) {
			err = -ENOMEM;
			break;
		}
		mutex_lock(&ks_lock);
		ks_fill_stats(st);
		mutex_unlock(&ks_lock);
		/* A 1.0 reader's struct ends before `filtered`. */
		if (copy_to_user(uarg, st, _IOC_SIZE(cmd)))
			err = -EFAULT;
		kfree(st);
		break;
	}
	case KSIGHT_IOC_SET_IGNORED_CGROUPS:
		err = ks_set_ignored(uarg);
		break;
	case KSIGHT_IOC_SET_WATERMARK: {
		u32 bytes;

		if (get_user(bytes, (u32 __user *)uarg)) {
			err = -EFAULT;
			break;
		}
		if (bytes == 0 || bytes > ring_bytes) {
			err = -EINVAL;
			break;
		}
		WRITE_ONCE(ks_watermark, bytes);
		break;
	}
	default:
		err = -ENOTTY;
	}
	return err;
}

static __poll_t ks_poll(struct file *file, poll_table *wait)
{
	poll_wait(file, &ks_wait, wait);
	WRITE_ONCE(ks_armed, 1);
	/* Pairs with ks_commit(): either we see its head or it sees us armed. */
	smp_mb();
	if (ks_any_ready(READ_ONCE(ks_watermark)))
		return EPOLLIN | EPOLLRDNORM;
	return 0;
}

static void ks_vma_set(struct vm_area_struct *vma, unsigned long set, unsigned long clear)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_mod(vma, set, clear);
#else
	vma->vm_flags = (vma->vm_flags | set) & ~clear;
#endif
}

static int ks_mmap(struct file *file, struct vm_area_struct *vma)
{
	unsigned long len = vma->vm_end - vma->vm_start;
	u64 stride = PAGE_SIZE + 2 * (u64)ring_bytes;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 ring = div64_u64(off, stride);
	u64 within = off - ring * stride;
	unsigned int i, n = ring_bytes >> PAGE_SHIFT;
	struct ks_ring *r;
	int err = -EINVAL;

	if (!(vma->vm_flags & VM_SHARED) || ring >= ks_nr_rings)
		goto out;
	r = &ks_rings[ring];
	/* Not inherited by a child the reader forks: the device stays with the reader. */
	ks_vma_set(vma, VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY, 0);
	if (within == 0) {
		if (len != PAGE_SIZE)
			goto out;
		err = vm_insert_page(vma, vma->vm_start, r->info_page);
	} else if (within == PAGE_SIZE) {
		if (len != 2 * (u64)ring_bytes)
			goto out;
		if (vma->vm_flags & VM_WRITE) {
			err = -EPERM;
			goto out;
		}
		/* Read-only for good: mprotect() cannot make it writable. */
		ks_vma_set(vma, 0, VM_MAYWRITE);
		for (i = 0; i < 2 * n; i++) {
			err = vm_insert_page(vma, vma->vm_start + (unsigned long)i * PAGE_SIZE,
					     r->pages[i % n]);
			if (err)
				goto out;
		}
	}
out:
	return err;
}

static const struct file_operations ks_fops = {
	.owner = THIS_MODULE,
	.open = ks_open,
	.release = ks_release,
	.unlocked_ioctl = ks_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.poll = ks_poll,
	.mmap = ks_mmap,
	.llseek = noop_llseek,
};

static struct miscdevice ks_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ksight",
	.fops = &ks_fops,
	.mode = 0600,
};

/* ---------------------------------------------------------------------------
 * Module
 * ------------------------------------------------------------------------- */

static int __init ks_init(void)
{
	int err;

	init_irq_work(&ks_wakeup_work, ks_wakeup);
	err = ks_check_ring_bytes(ring_bytes);
	if (err)
		goto out;
	err = ks_probes_init();
	if (err)
		goto out;
	err = ks_rings_alloc();
	if (err)
		goto out_probes;
	err = misc_register(&ks_misc);
	if (err) {
		pr_err("cannot register /dev/ksight: %d\n", err);
		goto out_rings;
	}
	pr_info("ready: %u rings of %u bytes, record ABI %u.%u, tracepoints 0x%x\n",
		ks_nr_rings, ring_bytes, KSIGHT_ABI_VERSION_MAJOR, KSIGHT_ABI_VERSION_MINOR,
		ks_probes_available());
	goto out;

out_rings:
	ks_rings_free();
out_probes:
	ks_probes_exit();
out:
	return err;
}

static void __exit ks_exit(void)
{
	misc_deregister(&ks_misc);
	/* No file is open (each holds a module reference), so no probe is registered. */
	mutex_lock(&ks_lock);
	ks_stop_locked();
	mutex_unlock(&ks_lock);
	irq_work_sync(&ks_wakeup_work);
	ks_clear_ignored();
	ks_rings_free();
	ks_probes_exit();
}

module_init(ks_init);
module_exit(ks_exit);

MODULE_LICENSE("Dual MIT/GPL");
MODULE_AUTHOR("ksight authors");
MODULE_DESCRIPTION("ksight: tracepoint events in per-CPU rings mapped to user space");
MODULE_VERSION("0.1.0");
