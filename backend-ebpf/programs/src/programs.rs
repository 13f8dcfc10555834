//! The programs themselves; see the crate docs. Only compiled for the BPF target.

use core::{
    ffi::c_void,
    mem::size_of,
    ptr::{self, addr_of},
};

use crate::layout::{
    MAX_SYSCALLS_IN_FLIGHT, MISSING, OUTPUT_PERF, REGS_COPY_LEN, RWBS_MAX, SOCK_HEAD_LEN,
    TP_COPY_LEN, btf, sys_nr, tp_block, tp_exec, tp_exit, tp_tcp, tuple_layout,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        generated as gen_helpers,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerfEventByteArray, ProgramArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use event_abi::{
    AF_INET, AF_INET6, BlockEvent, COMM_LEN, EventHeader, ExecEvent, ExitEvent, ForkEvent, MAX_IOV,
    MAX_MMSG, MAX_RECORD_SIZE, MAX_SNAPLEN, SockIoEvent, TcpEvent, TcpStateEvent, TcpTuple,
    block_op, counter, kind, sock_call, sock_dir, sock_flags, tcp_state, tcp_stats,
};

/// The event ABI these programs emit, in a section of its own that the loader reads and
/// checks before loading anything.
#[unsafe(no_mangle)]
#[unsafe(link_section = "ksight_abi")]
#[used]
static KSIGHT_ABI_VERSION: u32 = event_abi::ABI_VERSION;

// The helpers `bpf_probe_read_kernel*` are GPL-only; "Dual MIT/GPL" is a license string
// the kernel accepts as GPL-compatible.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// `BPF_F_CURRENT_CPU`: the perf buffer of the CPU the program runs on.
const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;

// ---------------------------------------------------------------------------------------
// Maps
// ---------------------------------------------------------------------------------------

/// Record transport on kernels with BPF ring buffers (5.8+). Resized by the loader.
#[map(name = "RING")]
static RING: RingBuf = RingBuf::with_byte_size(crate::layout::DEFAULT_RING_BYTES, 0);

/// Record transport on older kernels: one perf buffer per CPU.
#[map(name = "PERF")]
static PERF: PerfEventByteArray = PerfEventByteArray::new(0);

/// `kind * counter::COUNT + slot` -> count, per CPU.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(kind::END as u32 * counter::COUNT, 0);

/// cgroup v2 ids whose records are dropped (see `event_abi::filter`); the value is unused.
/// Written by the loader at run time, only read here.
#[map(name = "IGNORED_CGROUPS")]
static IGNORED_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(event_abi::filter::MAX_IGNORED_CGROUPS as u32, 0);

/// Slot 0: non-zero while `IGNORED_CGROUPS` may hold ids. With nothing to ignore the
/// filter costs one array load (inlined by the verifier) and a branch, no hash lookup.
#[map(name = "FILTER_ON")]
static FILTER_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Where a record is assembled (the BPF stack is only 512 bytes), plus room for the copy
/// of the tracepoint record it is built from.
#[repr(C)]
struct Scratch {
    /// `u64` words so that records (8-byte aligned) can be written in place. Socket I/O
    /// payload is gathered from several buffers, each copy at an offset the verifier knows
    /// to be at most MAX_SNAPLEN and of a length it knows to be below 2 * MAX_SNAPLEN:
    /// room for that past the record's end.
    record: [u64; (MAX_RECORD_SIZE + 2 * MAX_SNAPLEN) / 8],
    tp: [u8; TP_COPY_LEN],
}

/// One slot per record kind.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(kind::END as u32, 0);

const _: () = assert!(MAX_RECORD_SIZE.is_multiple_of(8));

// ---------------------------------------------------------------------------------------
// Globals set by the loader (read-only, so the verifier sees them as constants)
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
static OUTPUT_MODE: u32 = crate::layout::OUTPUT_RINGBUF;
/// Waking the reader for every record costs more than writing it; below this much
/// pending data the reader finds records on its next timed poll instead.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;
#[unsafe(no_mangle)]
static BTF_OFF: [u32; btf::LEN] = [MISSING; btf::LEN];
#[unsafe(no_mangle)]
static TP_EXEC: [u32; tp_exec::LEN] = [MISSING; tp_exec::LEN];
#[unsafe(no_mangle)]
static TP_EXIT: [u32; tp_exit::LEN] = [MISSING; tp_exit::LEN];
#[unsafe(no_mangle)]
static TP_SOCK_STATE: [u32; tp_tcp::LEN] = [MISSING; tp_tcp::LEN];
#[unsafe(no_mangle)]
static TP_TCP_RETRANSMIT: [u32; tp_tcp::LEN] = [MISSING; tp_tcp::LEN];
#[unsafe(no_mangle)]
static TP_TCP_SEND_RESET: [u32; tp_tcp::LEN] = [MISSING; tp_tcp::LEN];
#[unsafe(no_mangle)]
static TP_TCP_RECEIVE_RESET: [u32; tp_tcp::LEN] = [MISSING; tp_tcp::LEN];
#[unsafe(no_mangle)]
static TP_BLOCK_BIO_QUEUE: [u32; tp_block::LEN] = [MISSING; tp_block::LEN];
#[unsafe(no_mangle)]
static TP_BLOCK_RQ_ISSUE: [u32; tp_block::LEN] = [MISSING; tp_block::LEN];
#[unsafe(no_mangle)]
static TP_BLOCK_RQ_COMPLETE: [u32; tp_block::LEN] = [MISSING; tp_block::LEN];

/// Reads slot `i` of a global. Volatile: the compiler must not fold the build-time
/// default, the loader patches the value into the object.
#[inline(always)]
fn g<const N: usize>(global: &'static [u32; N], i: usize) -> u32 {
    // SAFETY: `i` is always one of the `layout` slot constants, `< N`.
    unsafe { ptr::read_volatile(global.as_ptr().add(i)) }
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the programs
// ---------------------------------------------------------------------------------------

/// Why a program gave up without emitting.
enum Skip {
    /// Nothing to record (e.g. a non-TCP socket, or an ignored cgroup).
    Filtered,
    /// A map lookup or the copy of the tracepoint record failed.
    Failed,
}

/// A program's return value: 1 when it failed to record an event it should have.
#[inline(always)]
fn verdict(result: Result<(), Skip>) -> u32 {
    match result {
        Ok(()) | Err(Skip::Filtered) => 0,
        Err(Skip::Failed) => 1,
    }
}

#[inline(always)]
fn count(kind: u16, slot: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(u32::from(kind) * counter::COUNT + slot) {
        // SAFETY: per-CPU slot; a program nested on this CPU may race one increment,
        // which is acceptable for statistics.
        unsafe { *c += 1 };
    }
}

/// True (and the record counted as filtered) when `cgroup` is in the ignore set.
#[inline(always)]
fn ignored(kind: u16, cgroup: u64) -> bool {
    let Some(on) = FILTER_ON.get_ptr(0) else {
        return false;
    };
    // SAFETY: a valid map value pointer; volatile so the load is not hoisted or merged.
    if unsafe { ptr::read_volatile(on) } == 0 {
        return false;
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { IGNORED_CGROUPS.get(&cgroup) }.is_none() {
        return false;
    }
    count(kind, counter::FILTERED);
    true
}

/// The current task's cgroup v2 id, unless it is ignored (then the record is counted
/// filtered and the program stops before building anything).
#[inline(always)]
fn current_cgroup_unless_ignored(kind: u16) -> Result<u64, Skip> {
    // SAFETY: a helper without arguments.
    let cgroup = unsafe { gen_helpers::bpf_get_current_cgroup_id() };
    if ignored(kind, cgroup) {
        return Err(Skip::Filtered);
    }
    Ok(cgroup)
}

/// The zeroed scratch slot for `kind`, as a record of type `T`.
#[inline(always)]
fn scratch<T>(kind: u16) -> Result<(*mut T, *mut u8), Skip> {
    const { assert!(size_of::<T>() <= MAX_RECORD_SIZE && size_of::<T>().is_multiple_of(8)) };
    let s = SCRATCH.get_ptr_mut(u32::from(kind)).ok_or(Skip::Failed)?;
    // SAFETY: `s` is a valid map value pointer for this CPU.
    unsafe {
        let record = addr_of!((*s).record).cast::<u64>().cast_mut();
        // Zero the whole record: no field (or padding) keeps a previous event's bytes.
        // Word by word and volatile, because LLVM's BPF backend would otherwise emit a
        // call to a byte-at-a-time `memset`.
        let mut i = 0;
        while i < size_of::<T>() / 8 {
            ptr::write_volatile(record.add(i), 0);
            i += 1;
        }
        Ok((record.cast(), addr_of!((*s).tp).cast::<u8>().cast_mut()))
    }
}

/// Copies the current task's comm straight into the record (the aya wrapper would go
/// through a zeroed stack buffer).
#[inline(always)]
fn current_comm(kind: u16, comm: *mut [u8; COMM_LEN]) {
    // SAFETY: `comm` points into a scratch record.
    let ret = unsafe { gen_helpers::bpf_get_current_comm(comm.cast(), COMM_LEN as u32) };
    if ret != 0 {
        count(kind, counter::READ_ERRORS);
    }
}

/// Fills the common header from the current task, whose cgroup id the caller read.
#[inline(always)]
fn fill_header(h: *mut EventHeader, kind: u16, size: usize, cgroup: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `h` points into a scratch record.
    unsafe {
        (*h).ts_ns = gen_helpers::bpf_ktime_get_ns();
        (*h).cgroup_id = cgroup;
        (*h).pid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        (*h).cpu = gen_helpers::bpf_get_smp_processor_id();
        (*h).kind = kind;
        (*h).size = size as u16;
    }
}

/// Sends the finished record to the selected map and counts the outcome.
#[inline(always)]
fn emit<C: EbpfContext, T>(ctx: &C, kind: u16, record: *const T) {
    emit_sized(ctx, kind, record, size_of::<T>() as u64);
}

/// [`emit`] for a variable-size record: the first `size` bytes at `record`.
#[inline(always)]
fn emit_sized<C: EbpfContext, T>(ctx: &C, kind: u16, record: *const T, size: u64) {
    let data = record.cast_mut().cast::<c_void>();
    // SAFETY: the map pointers are the map definitions in this object; `data` is a map
    // value of at least `size` bytes.
    let ret = unsafe {
        if ptr::read_volatile(&OUTPUT_MODE) == OUTPUT_PERF {
            gen_helpers::bpf_perf_event_output(
                ctx.as_ptr(),
                addr_of!(PERF).cast_mut().cast(),
                BPF_F_CURRENT_CPU,
                data,
                size,
            )
        } else {
            let ring = addr_of!(RING).cast_mut().cast();
            let pending = gen_helpers::bpf_ringbuf_query(ring, u64::from(BPF_RB_AVAIL_DATA));
            let wakeup = if pending >= ptr::read_volatile(&WAKEUP_BYTES) {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            gen_helpers::bpf_ringbuf_output(ring, data, size, u64::from(wakeup))
        }
    };
    count(
        kind,
        if ret == 0 {
            counter::EMITTED
        } else {
            counter::LOST
        },
    );
}

/// Reads a `T` at `base + off` in kernel memory. `None` without counting an error when
/// the offset is unresolved or the pointer is null; `None` and a READ_ERRORS count when
/// the read itself fails.
#[inline(always)]
fn kread<T>(kind: u16, base: u64, off: u32) -> Option<T> {
    if off == MISSING || base == 0 {
        return None;
    }
    let src = base.wrapping_add(u64::from(off)) as *const T;
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    match unsafe { bpf_probe_read_kernel(src) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(kind, counter::READ_ERRORS);
            None
        }
    }
}

/// Offset of a kernel struct member resolved from BTF.
#[inline(always)]
fn btf_off(slot: usize) -> u32 {
    g(&BTF_OFF, slot)
}

/// Copies the start of a classic tracepoint record into `tp` (one helper call instead of
/// one per field).
#[inline(always)]
fn copy_tp(ctx: &TracePointContext, kind: u16, tp: *mut u8) -> Result<(), Skip> {
    // SAFETY: `tp` is the scratch slot's `TP_COPY_LEN`-byte area; the tracepoint record
    // sits in a per-CPU buffer far larger than TP_COPY_LEN, and the helper tolerates
    // unreadable memory anyway.
    let ret =
        unsafe { gen_helpers::bpf_probe_read_kernel(tp.cast(), TP_COPY_LEN as u32, ctx.as_ptr()) };
    if ret != 0 {
        count(kind, counter::READ_ERRORS);
        return Err(Skip::Failed);
    }
    Ok(())
}

/// A field of the copied tracepoint record; `None` when the offset is unresolved.
#[inline(always)]
fn tp_field<T>(tp: *const u8, off: u32) -> Option<T> {
    let off = off as usize;
    if off == MISSING as usize || off + size_of::<T>() > TP_COPY_LEN {
        return None;
    }
    // SAFETY: in bounds of the TP_COPY_LEN-byte copy; fields may be unaligned.
    Some(unsafe { ptr::read_unaligned(tp.add(off).cast::<T>()) })
}

/// The cgroup v2 id a socket the `tcp:` tracepoints pass was charged to; 0 for a
/// TIME_WAIT or request socket, a smaller object without `sk_cgrp_data` (the kernel's
/// `sk_fullsock()`, which the module uses). `state`: the socket's state when the
/// tracepoint gives it; else it is read.
#[inline(always)]
fn sock_cgroup_id(kind: u16, sk: u64, state: Option<u32>) -> u64 {
    let state = state.or_else(|| kread::<u8>(kind, sk, btf_off(btf::SOCK_STATE)).map(u32::from));
    if matches!(state, Some(tcp_state::TIME_WAIT | tcp_state::NEW_SYN_RECV)) {
        return 0;
    }
    full_sock_cgroup_id(kind, sk)
}

/// `sk->sk_cgrp_data.cgroup->kn->id` of a full socket.
#[inline(always)]
fn full_sock_cgroup_id(kind: u16, sk: u64) -> u64 {
    let Some(cgroup) = kread::<u64>(kind, sk, btf_off(btf::SOCK_CGROUP)) else {
        return 0;
    };
    let Some(kn) = kread::<u64>(kind, cgroup, btf_off(btf::CGROUP_KN)) else {
        return 0;
    };
    kread::<u64>(kind, kn, btf_off(btf::KERNFS_NODE_ID)).unwrap_or(0)
}

/// Fills `out` from the tracepoint's address fields, laid out as the loader found them.
#[inline(always)]
fn read_tuple(tp: *const u8, cfg: &'static [u32; tp_tcp::LEN], out: *mut TcpTuple) {
    // SAFETY: `out` points into a zeroed scratch record.
    unsafe {
        match g(cfg, tp_tcp::TUPLE_LAYOUT) {
            tuple_layout::FIELDS => {
                let family = tp_field::<u16>(tp, g(cfg, tp_tcp::FAMILY)).unwrap_or(0);
                (*out).family = family;
                // These tracepoints store ports already converted to host order.
                (*out).sport = tp_field::<u16>(tp, g(cfg, tp_tcp::SPORT)).unwrap_or(0);
                (*out).dport = tp_field::<u16>(tp, g(cfg, tp_tcp::DPORT)).unwrap_or(0);
                if family == AF_INET {
                    if let Some(a) = tp_field::<[u8; 4]>(tp, g(cfg, tp_tcp::SADDR)) {
                        ptr::write_unaligned((*out).saddr.as_mut_ptr().cast::<[u8; 4]>(), a);
                    }
                    if let Some(a) = tp_field::<[u8; 4]>(tp, g(cfg, tp_tcp::DADDR)) {
                        ptr::write_unaligned((*out).daddr.as_mut_ptr().cast::<[u8; 4]>(), a);
                    }
                } else if family == AF_INET6 {
                    if let Some(a) = tp_field::<[u8; 16]>(tp, g(cfg, tp_tcp::SADDR6)) {
                        (*out).saddr = a;
                    }
                    if let Some(a) = tp_field::<[u8; 16]>(tp, g(cfg, tp_tcp::DADDR6)) {
                        (*out).daddr = a;
                    }
                }
            }
            tuple_layout::SOCKADDR => {
                let s = g(cfg, tp_tcp::SADDR);
                let d = g(cfg, tp_tcp::DADDR);
                if s == MISSING || d == MISSING {
                    return;
                }
                let family = tp_field::<u16>(tp, s).unwrap_or(0);
                (*out).family = family;
                // sockaddr ports are in network byte order.
                (*out).sport = u16::from_be(tp_field::<u16>(tp, s + 2).unwrap_or(0));
                (*out).dport = u16::from_be(tp_field::<u16>(tp, d + 2).unwrap_or(0));
                if family == AF_INET {
                    if let Some(a) = tp_field::<[u8; 4]>(tp, s + 4) {
                        ptr::write_unaligned((*out).saddr.as_mut_ptr().cast::<[u8; 4]>(), a);
                    }
                    if let Some(a) = tp_field::<[u8; 4]>(tp, d + 4) {
                        ptr::write_unaligned((*out).daddr.as_mut_ptr().cast::<[u8; 4]>(), a);
                    }
                } else if family == AF_INET6 {
                    if let Some(a) = tp_field::<[u8; 16]>(tp, s + 8) {
                        (*out).saddr = a;
                    }
                    if let Some(a) = tp_field::<[u8; 16]>(tp, d + 8) {
                        (*out).daddr = a;
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Process lifecycle
// ---------------------------------------------------------------------------------------

/// `sched:sched_process_exec` (4.14).
#[tracepoint(category = "sched", name = "sched_process_exec")]
fn ks_exec(ctx: TracePointContext) -> u32 {
    verdict(try_exec(&ctx))
}

fn try_exec(ctx: &TracePointContext) -> Result<(), Skip> {
    const KIND: u16 = kind::EXEC;
    let cgroup = current_cgroup_unless_ignored(KIND)?;
    let (ev, _) = scratch::<ExecEvent>(KIND)?;
    fill_header(ev.cast(), KIND, size_of::<ExecEvent>(), cgroup);
    // SAFETY: `ev` points to a zeroed scratch record.
    unsafe {
        current_comm(KIND, addr_of!((*ev).comm).cast_mut());
        // `__data_loc char[] filename`: a u32 whose low 16 bits are the string's offset
        // from the start of the record (the high 16 bits are its length).
        let loc_off = g(&TP_EXEC, tp_exec::FILENAME);
        if loc_off != MISSING {
            match ctx.read_at::<u32>(loc_off as usize) {
                Ok(loc) => {
                    let src = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
                    match bpf_probe_read_kernel_str_bytes(src, &mut (*ev).filename) {
                        Ok(name) => (*ev).filename_len = name.len() as u32,
                        Err(_) => count(KIND, counter::READ_ERRORS),
                    }
                }
                Err(_) => count(KIND, counter::READ_ERRORS),
            }
        }
        let task = gen_helpers::bpf_get_current_task();
        if let Some(parent) = kread::<u64>(KIND, task, btf_off(btf::TASK_REAL_PARENT))
            && let Some(ppid) = kread::<u32>(KIND, parent, btf_off(btf::TASK_TGID))
        {
            (*ev).ppid = ppid;
        }
    }
    emit(ctx, KIND, ev);
    Ok(())
}

/// `sched_process_fork` as a raw tracepoint (4.17): the classic one lacks the child's
/// tgid. `args[0]` is the parent `task_struct *`, `args[1]` the child's.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
fn ks_fork(ctx: RawTracePointContext) -> u32 {
    verdict(try_fork(&ctx))
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), Skip> {
    const KIND: u16 = kind::FORK;
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let cgroup = current_cgroup_unless_ignored(KIND)?;
    let (ev, _) = scratch::<ForkEvent>(KIND)?;
    fill_header(ev.cast(), KIND, size_of::<ForkEvent>(), cgroup);
    let (pid, tgid) = (btf_off(btf::TASK_PID), btf_off(btf::TASK_TGID));
    // SAFETY: `ev` points to a zeroed scratch record.
    unsafe {
        (*ev).parent_pid = kread::<u32>(KIND, parent, pid).unwrap_or(0);
        (*ev).parent_tgid = kread::<u32>(KIND, parent, tgid).unwrap_or(0);
        (*ev).child_pid = kread::<u32>(KIND, child, pid).unwrap_or(0);
        (*ev).child_tgid = kread::<u32>(KIND, child, tgid).unwrap_or(0);
    }
    emit(ctx, KIND, ev);
    Ok(())
}

/// `sched:sched_process_exit` (4.14), for every exiting thread.
#[tracepoint(category = "sched", name = "sched_process_exit")]
fn ks_exit(ctx: TracePointContext) -> u32 {
    verdict(try_exit(&ctx))
}

fn try_exit(ctx: &TracePointContext) -> Result<(), Skip> {
    const KIND: u16 = kind::EXIT;
    let cgroup = current_cgroup_unless_ignored(KIND)?;
    let (ev, _) = scratch::<ExitEvent>(KIND)?;
    fill_header(ev.cast(), KIND, size_of::<ExitEvent>(), cgroup);
    let task = unsafe { gen_helpers::bpf_get_current_task() };
    // SAFETY: `ev` points to a zeroed scratch record.
    unsafe {
        current_comm(KIND, addr_of!((*ev).comm).cast_mut());
        // do_exit() stores the wait(2)-style code before this tracepoint fires.
        (*ev).exit_status = kread::<u32>(KIND, task, btf_off(btf::TASK_EXIT_CODE)).unwrap_or(0);
        let field = g(&TP_EXIT, tp_exit::GROUP_DEAD);
        (*ev).group_dead = if field != MISSING {
            match ctx.read_at::<u8>(field as usize) {
                Ok(dead) => u32::from(dead != 0),
                Err(_) => {
                    count(KIND, counter::READ_ERRORS);
                    0
                }
            }
        } else {
            // Older kernels: do_exit() decrements signal->live before the tracepoint, so
            // the last thread out sees 0.
            let signal = kread::<u64>(KIND, task, btf_off(btf::TASK_SIGNAL));
            match signal.and_then(|s| kread::<i32>(KIND, s, btf_off(btf::SIGNAL_LIVE))) {
                Some(live) => u32::from(live == 0),
                None => 0,
            }
        };
    }
    emit(ctx, KIND, ev);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------------------

const IPPROTO_TCP: u16 = 6;

/// `sock:inet_sock_set_state` (4.16), TCP sockets only.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
fn ks_tcp_state(ctx: TracePointContext) -> u32 {
    verdict(try_tcp_state(&ctx))
}

fn try_tcp_state(ctx: &TracePointContext) -> Result<(), Skip> {
    const KIND: u16 = kind::TCP_STATE;
    let cfg = &TP_SOCK_STATE;
    let (ev, tp) = scratch::<TcpStateEvent>(KIND)?;
    copy_tp(ctx, KIND, tp)?;
    // The loader only attaches this program when `protocol` resolved.
    if tp_field::<u16>(tp, g(cfg, tp_tcp::PROTOCOL)) != Some(IPPROTO_TCP) {
        return Err(Skip::Filtered);
    }
    // The socket's cgroup decides, not the current task's (this may be softirq). Only full
    // sockets change state through this tracepoint.
    let sk = tp_field::<u64>(tp, g(cfg, tp_tcp::SKADDR)).unwrap_or(0);
    let sock_cgroup = full_sock_cgroup_id(KIND, sk);
    if ignored(KIND, sock_cgroup) {
        return Err(Skip::Filtered);
    }
    // SAFETY: a helper without arguments.
    let cgroup = unsafe { gen_helpers::bpf_get_current_cgroup_id() };
    fill_header(ev.cast(), KIND, size_of::<TcpStateEvent>(), cgroup);
    // SAFETY: `ev` points to a zeroed scratch record.
    unsafe {
        (*ev).sock_id = sk;
        (*ev).sock_cgroup_id = sock_cgroup;
        read_tuple(tp, cfg, addr_of!((*ev).tuple).cast_mut());
        (*ev).old_state = tp_field::<i32>(tp, g(cfg, tp_tcp::OLDSTATE)).unwrap_or(0) as u32;
        let new_state = tp_field::<i32>(tp, g(cfg, tp_tcp::NEWSTATE)).unwrap_or(0) as u32;
        (*ev).new_state = new_state;
        if new_state == event_abi::tcp_state::CLOSE {
            // A tcp_sock starts with its struct sock, so `sk` is the tcp_sock address.
            let mut valid = 0;
            if let Some(v) = kread::<u64>(KIND, sk, btf_off(btf::TCP_BYTES_ACKED)) {
                (*ev).bytes_acked = v;
                valid |= tcp_stats::BYTES_ACKED;
            }
            if let Some(v) = kread::<u64>(KIND, sk, btf_off(btf::TCP_BYTES_RECEIVED)) {
                (*ev).bytes_received = v;
                valid |= tcp_stats::BYTES_RECEIVED;
            }
            if let Some(v) = kread::<u32>(KIND, sk, btf_off(btf::TCP_SEGS_IN)) {
                (*ev).segs_in = v;
                valid |= tcp_stats::SEGS_IN;
            }
            if let Some(v) = kread::<u32>(KIND, sk, btf_off(btf::TCP_SEGS_OUT)) {
                (*ev).segs_out = v;
                valid |= tcp_stats::SEGS_OUT;
            }
            if let Some(v) = kread::<u32>(KIND, sk, btf_off(btf::TCP_TOTAL_RETRANS)) {
                (*ev).total_retrans = v;
                valid |= tcp_stats::TOTAL_RETRANS;
            }
            if let Some(v) = kread::<u32>(KIND, sk, btf_off(btf::TCP_SRTT_US)) {
                // The kernel keeps srtt scaled by 8.
                (*ev).srtt_us = v >> 3;
                valid |= tcp_stats::SRTT;
            }
            (*ev).stats_valid = valid;
        }
    }
    emit(ctx, KIND, ev);
    Ok(())
}

/// The three `tcp:` events share one record shape.
#[inline(always)]
fn try_tcp_event(
    ctx: &TracePointContext,
    kind: u16,
    cfg: &'static [u32; tp_tcp::LEN],
) -> Result<(), Skip> {
    let (ev, tp) = scratch::<TcpEvent>(kind)?;
    copy_tp(ctx, kind, tp)?;
    // 0 when the kernel had no socket (a reset answering a stray segment).
    let sk = tp_field::<u64>(tp, g(cfg, tp_tcp::SKADDR)).unwrap_or(0);
    let state_off = g(cfg, tp_tcp::STATE);
    let tp_state = (state_off != MISSING)
        .then(|| tp_field::<i32>(tp, state_off).map(|s| s as u32))
        .flatten();
    // The socket's cgroup decides, not the current task's (this may be softirq).
    let sock_cgroup = sock_cgroup_id(kind, sk, tp_state);
    if ignored(kind, sock_cgroup) {
        return Err(Skip::Filtered);
    }
    // SAFETY: a helper without arguments.
    let cgroup = unsafe { gen_helpers::bpf_get_current_cgroup_id() };
    fill_header(ev.cast(), kind, size_of::<TcpEvent>(), cgroup);
    // SAFETY: `ev` points to a zeroed scratch record.
    unsafe {
        (*ev).sock_id = sk;
        (*ev).sock_cgroup_id = sock_cgroup;
        read_tuple(tp, cfg, addr_of!((*ev).tuple).cast_mut());
        (*ev).state = if state_off != MISSING {
            tp_state.unwrap_or(0)
        } else {
            // No `state` field in this kernel's format: read sk->__sk_common.skc_state.
            u32::from(kread::<u8>(kind, sk, btf_off(btf::SOCK_STATE)).unwrap_or(0))
        };
    }
    emit(ctx, kind, ev);
    Ok(())
}

/// `tcp:tcp_retransmit_skb` (4.15).
#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
fn ks_tcp_retrans(ctx: TracePointContext) -> u32 {
    verdict(try_tcp_event(
        &ctx,
        kind::TCP_RETRANSMIT,
        &TP_TCP_RETRANSMIT,
    ))
}

/// `tcp:tcp_send_reset` (4.15).
#[tracepoint(category = "tcp", name = "tcp_send_reset")]
fn ks_tcp_rst_send(ctx: TracePointContext) -> u32 {
    verdict(try_tcp_event(
        &ctx,
        kind::TCP_RESET_SENT,
        &TP_TCP_SEND_RESET,
    ))
}

/// `tcp:tcp_receive_reset` (4.15).
#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
fn ks_tcp_rst_recv(ctx: TracePointContext) -> u32 {
    verdict(try_tcp_event(
        &ctx,
        kind::TCP_RESET_RECEIVED,
        &TP_TCP_RECEIVE_RESET,
    ))
}

// ---------------------------------------------------------------------------------------
// Block I/O
// ---------------------------------------------------------------------------------------

/// Decodes the kernel's `rwbs` string (see `blk_fill_rwbs`).
#[inline(always)]
fn rwbs_op(tp: *const u8, off: u32, len: u32) -> u32 {
    let (mut discard, mut write, mut read) = (false, false, false);
    let first = tp_field::<u8>(tp, off).unwrap_or(0);
    let mut i = 0;
    while i < RWBS_MAX {
        if i as u32 >= len {
            break;
        }
        match tp_field::<u8>(tp, off.wrapping_add(i as u32)).unwrap_or(0) {
            0 => break,
            b'D' | b'E' => discard = true,
            b'W' => write = true,
            b'R' => read = true,
            _ => {}
        }
        i += 1;
    }
    if discard {
        block_op::DISCARD
    } else if write {
        block_op::WRITE
    } else if read {
        block_op::READ
    } else if first == b'F' {
        block_op::FLUSH
    } else {
        block_op::OTHER
    }
}

#[inline(always)]
fn try_block(
    ctx: &TracePointContext,
    kind: u16,
    cfg: &'static [u32; tp_block::LEN],
) -> Result<(), Skip> {
    // Only the queue runs in the submitter's context; issue and complete are never
    // filtered (they run in irq or other tasks' context).
    let cgroup = if kind == kind::BLOCK_QUEUE {
        current_cgroup_unless_ignored(kind)?
    } else {
        // SAFETY: a helper without arguments.
        unsafe { gen_helpers::bpf_get_current_cgroup_id() }
    };
    let (ev, tp) = scratch::<BlockEvent>(kind)?;
    copy_tp(ctx, kind, tp)?;
    fill_header(ev.cast(), kind, size_of::<BlockEvent>(), cgroup);
    // SAFETY: `ev` points to a zeroed scratch record.
    unsafe {
        (*ev).dev = tp_field::<u32>(tp, g(cfg, tp_block::DEV)).unwrap_or(0);
        (*ev).sector = tp_field::<u64>(tp, g(cfg, tp_block::SECTOR)).unwrap_or(0);
        let nr_sector = tp_field::<u32>(tp, g(cfg, tp_block::NR_SECTOR)).unwrap_or(0);
        (*ev).bytes = nr_sector << 9;
        let rwbs = g(cfg, tp_block::RWBS);
        if rwbs != MISSING {
            (*ev).op = rwbs_op(tp, rwbs, g(cfg, tp_block::RWBS_LEN));
        }
        (*ev).error = tp_field::<i32>(tp, g(cfg, tp_block::ERROR)).unwrap_or(0);
    }
    emit(ctx, kind, ev);
    Ok(())
}

/// `block:block_bio_queue` (4.14), in the submitter's context.
#[tracepoint(category = "block", name = "block_bio_queue")]
fn ks_blk_queue(ctx: TracePointContext) -> u32 {
    verdict(try_block(&ctx, kind::BLOCK_QUEUE, &TP_BLOCK_BIO_QUEUE))
}

/// `block:block_rq_issue` (4.14).
#[tracepoint(category = "block", name = "block_rq_issue")]
fn ks_blk_issue(ctx: TracePointContext) -> u32 {
    verdict(try_block(&ctx, kind::BLOCK_ISSUE, &TP_BLOCK_RQ_ISSUE))
}

/// `block:block_rq_complete` (4.14).
#[tracepoint(category = "block", name = "block_rq_complete")]
fn ks_blk_complete(ctx: TracePointContext) -> u32 {
    verdict(try_block(&ctx, kind::BLOCK_COMPLETE, &TP_BLOCK_RQ_COMPLETE))
}

// ---------------------------------------------------------------------------------------
// Socket I/O
// ---------------------------------------------------------------------------------------

const IPPROTO_UDP: u16 = 17;
const SOCK_STREAM: u16 = 1;
const SOCK_DGRAM: u16 = 2;
/// `MSG_PEEK`: a receive that leaves the data queued; the read that takes it is recorded.
const MSG_PEEK: u64 = 2;
/// x86-64's `__USER32_CS`: a system call from 32-bit code (numbered and laid out
/// differently), which is not recorded.
const USER32_CS: u16 = 0x23;
const S_IFMT: u16 = 0o170_000;
const S_IFSOCK: u16 = 0o140_000;

/// Payload bytes copied per call; the loader sets it (1 ..= MAX_SNAPLEN).
#[unsafe(no_mangle)]
static SNAPLEN: u32 = event_abi::DEFAULT_SNAPLEN as u32;

/// When a thread entered the system call it is in, and which call.
#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallEntry {
    ts: u64,
    nr: u64,
}

/// Thread id -> its socket-capable system call in flight. LRU: a thread killed inside a
/// call never exits it, and its slot is reused rather than leaked.
#[map(name = "SYSCALL_ENTRY")]
static SYSCALL_ENTRY: LruHashMap<u32, SyscallEntry> =
    LruHashMap::with_max_entries(MAX_SYSCALLS_IN_FLIGHT, 0);

/// What the exit program knows of the call it is recording, built once per call and
/// read for each of its messages (the BPF stack is too small to carry it around).
#[repr(C)]
struct SockCall {
    /// Copy of the exiting call's `pt_regs`.
    regs: [u64; REGS_COPY_LEN / 8],
    /// The socket's tuple (local, peer); each message may replace the peer.
    tuple: TcpTuple,
    /// Copy of the head of the socket's `struct sock` (its `sock_common` fields).
    sock_head: [u64; SOCK_HEAD_LEN / 8],
    cgroup: u64,
    sk: u64,
    duration: u64,
    /// `sock_flags::NO_ENTRY` or 0.
    flags: u16,
    call: u16,
    direction: u8,
    protocol: u8,
    _pad: u16,
    fd: u32,
    /// Messages of a `sendmmsg`/`recvmmsg` past MAX_MMSG.
    unreported: u32,
    /// `sendmmsg`/`recvmmsg`: the `struct mmsghdr` array, how many messages to record and
    /// the next one to record.
    mmsg_vec: u64,
    mmsg_count: u32,
    mmsg_next: u32,
}

/// Slot 0: `ks_sys_mmsg`, which records one message of a `sendmmsg`/`recvmmsg` and calls
/// itself for the next. One program per message instead of a loop keeps the verifier's
/// work to one message (a loop of MAX_MMSG messages took it over a second).
#[map(name = "SOCK_MMSG")]
static SOCK_MMSG: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map(name = "SOCK_CALL")]
static SOCK_CALL: PerCpuArray<SockCall> = PerCpuArray::with_max_entries(1, 0);

/// The `sock_call` a system call number completes, if it can move socket data.
#[inline(always)]
fn sock_call_of(nr: u64) -> Option<u16> {
    Some(match nr {
        sys_nr::READ => sock_call::READ,
        sys_nr::WRITE => sock_call::WRITE,
        sys_nr::READV => sock_call::READV,
        sys_nr::WRITEV => sock_call::WRITEV,
        sys_nr::SENDTO => sock_call::SENDTO,
        sys_nr::RECVFROM => sock_call::RECVFROM,
        sys_nr::SENDMSG => sock_call::SENDMSG,
        sys_nr::RECVMSG => sock_call::RECVMSG,
        sys_nr::SENDMMSG => sock_call::SENDMMSG,
        sys_nr::RECVMMSG => sock_call::RECVMMSG,
        sys_nr::SENDFILE => sock_call::SENDFILE,
        sys_nr::SPLICE => sock_call::SPLICE,
        _ => return None,
    })
}

/// `raw_syscalls:sys_enter` (4.17 as a raw tracepoint): notes when a thread enters a
/// call that may move socket data, so its exit can tell the call's duration. `args[1]`
/// is the system call number.
#[raw_tracepoint(tracepoint = "sys_enter")]
fn ks_sys_enter(ctx: RawTracePointContext) -> u32 {
    let nr: u64 = ctx.arg(1);
    if sock_call_of(nr).is_none() {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let entry = SyscallEntry {
        // SAFETY: a helper without arguments.
        ts: unsafe { gen_helpers::bpf_ktime_get_ns() },
        nr,
    };
    // A full map evicts the least recently used entry; nothing to count here, the exit
    // flags a call whose entry it cannot find.
    let _ = SYSCALL_ENTRY.insert(&tid, &entry, 0);
    0
}

/// Reads a `T` from user memory.
#[inline(always)]
fn uread<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T) }.ok()
}

/// The `struct sock` behind file descriptor `fd` of the current task, if it is a socket:
/// `current->files->fdt->fd[fd]`, a socket inode, `file->private_data->sk`.
#[inline(always)]
fn fd_sock(fd: u64) -> Option<u64> {
    const KIND: u16 = kind::SOCK_IO;
    // SAFETY: a helper without arguments.
    let task = unsafe { gen_helpers::bpf_get_current_task() };
    let files = kread::<u64>(KIND, task, btf_off(btf::TASK_FILES))?;
    let fdt = kread::<u64>(KIND, files, btf_off(btf::FILES_FDT))?;
    let max_fds = kread::<u32>(KIND, fdt, btf_off(btf::FDT_MAX_FDS))?;
    if fd >= u64::from(max_fds) {
        return None;
    }
    let fds = kread::<u64>(KIND, fdt, btf_off(btf::FDT_FD))?;
    let file = kread::<u64>(KIND, fds.wrapping_add(fd * 8), 0)?;
    let inode = kread::<u64>(KIND, file, btf_off(btf::FILE_INODE))?;
    let mode = kread::<u16>(KIND, inode, btf_off(btf::INODE_MODE))?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket = kread::<u64>(KIND, file, btf_off(btf::FILE_PRIVATE))?;
    kread::<u64>(KIND, socket, btf_off(btf::SOCKET_SK))
}

/// A field of the copied head of a `struct sock` (the loader checks that it lies inside).
#[inline(always)]
fn head_field<T: Copy>(head: *const u8, slot: usize) -> Option<T> {
    let off = btf_off(slot) as usize;
    if off + size_of::<T>() > SOCK_HEAD_LEN {
        return None;
    }
    // SAFETY: in bounds of the SOCK_HEAD_LEN-byte copy; fields may be unaligned.
    Some(unsafe { ptr::read_unaligned(head.add(off).cast::<T>()) })
}

/// The protocol and tuple (local as source, peer as destination) of a TCP stream or UDP
/// datagram socket, into `c`; `None` for any other socket. Two reads: the head of
/// `sock_common` (family, ports, addresses), and `sk_type` with `sk_protocol`.
#[inline(always)]
fn sock_tuple(sk: u64, c: *mut SockCall) -> Option<u16> {
    const KIND: u16 = kind::SOCK_IO;
    // SAFETY: `c` is this CPU's slot; SOCK_HEAD_LEN bytes fit its `sock_head`.
    let head = unsafe { addr_of!((*c).sock_head).cast::<u8>() };
    let ret = unsafe {
        gen_helpers::bpf_probe_read_kernel(
            head.cast_mut().cast(),
            SOCK_HEAD_LEN as u32,
            sk as *const _,
        )
    };
    if ret != 0 {
        count(KIND, counter::READ_ERRORS);
        return None;
    }
    let family = head_field::<u16>(head, btf::SOCK_FAMILY)?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    // Adjacent u16s, in either order (newer kernels put sk_protocol first).
    let (type_off, protocol_off) = (btf_off(btf::SOCK_TYPE), btf_off(btf::SOCK_PROTOCOL));
    let pair = kread::<[u16; 2]>(KIND, sk, type_off.min(protocol_off))?;
    let (sk_type, protocol) = if type_off < protocol_off {
        (pair[0], pair[1])
    } else {
        (pair[1], pair[0])
    };
    // A TCP stream or a UDP datagram socket (not, say, a raw socket of protocol 17).
    if !(protocol == IPPROTO_TCP && sk_type == SOCK_STREAM
        || protocol == IPPROTO_UDP && sk_type == SOCK_DGRAM)
    {
        return None;
    }
    // SAFETY: `c` is this CPU's slot.
    let out = unsafe { &mut (*c).tuple };
    // The slot is reused: an IPv4 tuple must not keep an earlier IPv6 one's bytes.
    *out = TcpTuple::default();
    out.family = family;
    out.sport = head_field::<u16>(head, btf::SOCK_NUM).unwrap_or(0);
    out.dport = u16::from_be(head_field::<u16>(head, btf::SOCK_DPORT).unwrap_or(0));
    if family == AF_INET {
        let s = head_field::<[u8; 4]>(head, btf::SOCK_RCV_SADDR).unwrap_or([0; 4]);
        let d = head_field::<[u8; 4]>(head, btf::SOCK_DADDR).unwrap_or([0; 4]);
        out.saddr[..4].copy_from_slice(&s);
        out.daddr[..4].copy_from_slice(&d);
    } else {
        out.saddr = head_field::<[u8; 16]>(head, btf::SOCK_V6_RCV_SADDR).unwrap_or([0; 16]);
        out.daddr = head_field::<[u8; 16]>(head, btf::SOCK_V6_DADDR).unwrap_or([0; 16]);
    }
    Some(protocol)
}

/// Replaces the peer with the call's address argument when there is one of the socket's
/// family and as long as the kernel itself requires (a `sockaddr_in`, or the 24 bytes of
/// a `sockaddr_in6` without its scope id). True when it did.
#[inline(always)]
fn peer_from_call(tuple: &mut TcpTuple, addr: u64, len: i32) -> bool {
    if addr == 0 {
        return false;
    }
    if tuple.family == AF_INET {
        // struct sockaddr_in: family, port (network order), address.
        if len < 16 {
            return false;
        }
        let Some(sa) = uread::<[u8; 8]>(addr) else {
            return false;
        };
        if u16::from_ne_bytes([sa[0], sa[1]]) != AF_INET {
            return false;
        }
        tuple.dport = u16::from_be_bytes([sa[2], sa[3]]);
        tuple.daddr = [0; 16];
        tuple.daddr[..4].copy_from_slice(&sa[4..8]);
    } else {
        // struct sockaddr_in6: family, port, flowinfo, address.
        if len < 24 {
            return false;
        }
        let Some(sa) = uread::<[u8; 24]>(addr) else {
            return false;
        };
        if u16::from_ne_bytes([sa[0], sa[1]]) != AF_INET6 {
            return false;
        }
        tuple.dport = u16::from_be_bytes([sa[2], sa[3]]);
        tuple.daddr.copy_from_slice(&sa[8..24]);
    }
    true
}

/// Where one message's data and peer are: `iovcnt` buffers described by the iovec array
/// at `iov` (or, with `iov` 0, the single buffer `buf`), and an optional address argument
/// (`name`, `namelen`).
#[derive(Clone, Copy)]
struct Message {
    bytes: u64,
    buf: u64,
    /// The single buffer's length as the call was given it.
    buf_len: u64,
    iov: u64,
    iovcnt: u64,
    name: u64,
    namelen: i32,
    /// The message header could not be read: no payload, the socket's peer.
    fault: bool,
}

/// A message from the first words of a user `struct msghdr` (x86-64 layout: name,
/// namelen, iov, iovlen, …); `None` when they could not be read.
#[inline(always)]
fn message(h: Option<[u64; 4]>, bytes: u64) -> Message {
    match h {
        Some(h) => Message {
            bytes,
            buf: 0,
            buf_len: 0,
            iov: h[2],
            iovcnt: h[3],
            name: h[0],
            namelen: h[1] as u32 as i32,
            fault: false,
        },
        None => Message {
            bytes,
            buf: 0,
            buf_len: 0,
            iov: 0,
            iovcnt: 0,
            name: 0,
            namelen: 0,
            fault: true,
        },
    }
}

/// Copies up to `want` bytes of the message's buffers, in order, to `payload`; the
/// number copied, or `None` when user memory could not be read.
#[inline(always)]
fn gather(payload: *mut u8, msg: &Message, want: u64) -> Option<u64> {
    let mut off = 0u64;
    let mut i = 0;
    // Buffers are read one at a time as they are needed (no arrays: the stack is small),
    // until `want` bytes are in.
    while i < MAX_IOV {
        if off >= want || off > MAX_SNAPLEN as u64 {
            break;
        }
        let (base, len) = if msg.iov == 0 {
            if i > 0 {
                break;
            }
            (msg.buf, msg.buf_len)
        } else {
            if i as u64 >= msg.iovcnt {
                break;
            }
            let v = uread::<[u64; 2]>(msg.iov.wrapping_add(i as u64 * 16))?;
            (v[0], v[1])
        };
        let left = want - off;
        let mut take = if len < left { len } else { left };
        if take > MAX_SNAPLEN as u64 {
            take = MAX_SNAPLEN as u64;
        }
        // A null buffer gives nothing and is no fault (as in the module).
        if take > 0 && base != 0 {
            // The compiler knows `take <= MAX_SNAPLEN` and would drop a mask; read back
            // through a volatile load, the mask stays and gives older verifiers (6.1) a
            // bound they otherwise lose in `want - off`.
            // SAFETY: a local.
            let take = unsafe { ptr::read_volatile(&take) } & (2 * MAX_SNAPLEN as u64 - 1);
            // SAFETY: `payload` has MAX_SNAPLEN bytes plus MAX_SNAPLEN of slack,
            // `off <= MAX_SNAPLEN` and `take < 2 * MAX_SNAPLEN`: inside the slot.
            let ret = unsafe {
                gen_helpers::bpf_probe_read_user(
                    payload.add(off as usize).cast(),
                    take as u32,
                    base as *const _,
                )
            };
            if ret != 0 {
                return None;
            }
            off += take;
        }
        i += 1;
    }
    // The record's padding after the payload must be zero, not a previous record's bytes:
    // clear the rest of the word holding the payload's end.
    let keep = off & 7;
    if keep != 0 {
        // Masked like `take` above: a multiple of 8 below 2 * MAX_SNAPLEN.
        let word = off & (2 * MAX_SNAPLEN as u64 - 8);
        // SAFETY: inside the slot (see above); the word is 8-byte aligned.
        unsafe {
            let p = payload.add(word as usize).cast::<u64>();
            let mask = (1u64 << (keep * 8)) - 1;
            ptr::write_volatile(p, ptr::read_volatile(p) & mask);
        }
    }
    Some(off)
}

/// Fills and sends the socket I/O record of one message of the call in `c`. A function
/// of its own (not inlined) so that the messages of `sendmmsg`/`recvmmsg` share one copy.
#[inline(never)]
fn emit_sock_io(ctx: &RawTracePointContext, c: *const SockCall, msg: &Message, msg_index: u32) {
    const KIND: u16 = kind::SOCK_IO;
    let Ok((ev, _)) = scratch::<SockIoEvent>(KIND) else {
        return;
    };
    // SAFETY: `c` is this CPU's SOCK_CALL slot, `ev` its scratch record (fixed part
    // zeroed; `gather` zeroes the payload's padding) with room for MAX_SNAPLEN bytes of
    // payload and as much slack.
    unsafe {
        let mut flags = (*c).flags;
        if msg.fault {
            flags |= sock_flags::PAYLOAD_FAULT;
        }
        (*ev).tuple = (*c).tuple;
        // A TCP socket ignores an address (it is connected): only UDP takes it.
        if u16::from((*c).protocol) == IPPROTO_UDP
            && peer_from_call(&mut (*ev).tuple, msg.name, msg.namelen)
        {
            flags |= sock_flags::PEER_FROM_CALL;
        }
        let snaplen = u64::from(ptr::read_volatile(&SNAPLEN));
        let mut want = msg.bytes;
        if snaplen < want {
            want = snaplen;
        }
        if want > MAX_SNAPLEN as u64 {
            want = MAX_SNAPLEN as u64;
        }
        let payload = ev.cast::<u8>().add(size_of::<SockIoEvent>());
        let len = match gather(payload, msg, want) {
            Some(n) => n,
            None => {
                flags |= sock_flags::PAYLOAD_FAULT;
                0
            }
        };
        let len = if len > MAX_SNAPLEN as u64 {
            MAX_SNAPLEN as u64
        } else {
            len
        };
        let size = size_of::<SockIoEvent>() as u64 + ((len + 7) & !7);
        fill_header(ev.cast(), KIND, size as usize, (*c).cgroup);
        (*ev).sock_id = (*c).sk;
        (*ev).bytes = msg.bytes;
        (*ev).duration_ns = (*c).duration;
        (*ev).fd = (*c).fd;
        (*ev).call = (*c).call;
        (*ev).direction = (*c).direction;
        (*ev).protocol = (*c).protocol;
        (*ev).flags = flags;
        (*ev).payload_len = len as u16;
        (*ev).msg_index = msg_index as u16;
        let last = msg_index + 1 == MAX_MMSG as u32;
        (*ev).unreported_msgs = if last { (*c).unreported } else { 0 };
        emit_sized(ctx, KIND, ev, size);
    }
}

/// `raw_syscalls:sys_exit` (4.17 as a raw tracepoint): a completed call that moved data
/// on a TCP or UDP socket becomes a socket I/O record (one per message for
/// `sendmmsg`/`recvmmsg`). `args[0]` is the `pt_regs` (whose argument registers still
/// hold the call's arguments), `args[1]` the return value.
#[raw_tracepoint(tracepoint = "sys_exit")]
fn ks_sys_exit(ctx: RawTracePointContext) -> u32 {
    verdict(try_sys_exit(&ctx))
}

/// Argument register `slot` (a `btf::REGS_*` slot) of the copied `pt_regs`.
#[inline(always)]
fn reg(c: *const SockCall, slot: usize) -> u64 {
    let off = btf_off(slot) as usize;
    if off + 8 > REGS_COPY_LEN {
        return 0;
    }
    // SAFETY: in bounds of the copy (checked above).
    unsafe { ptr::read_unaligned(addr_of!((*c).regs).cast::<u8>().add(off).cast::<u64>()) }
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), Skip> {
    const KIND: u16 = kind::SOCK_IO;
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return Err(Skip::Filtered);
    }
    let regs_ptr: u64 = ctx.arg(0);
    let nr = kread::<u64>(KIND, regs_ptr, btf_off(btf::REGS_ORIG_AX)).ok_or(Skip::Filtered)?;
    let call = sock_call_of(nr).ok_or(Skip::Filtered)?;

    let c = SOCK_CALL.get_ptr_mut(0).ok_or(Skip::Failed)?;
    // SAFETY: `c` is this CPU's slot; REGS_COPY_LEN bytes of `pt_regs` fit its `regs`.
    let copied = unsafe {
        gen_helpers::bpf_probe_read_kernel(
            addr_of!((*c).regs).cast_mut().cast(),
            REGS_COPY_LEN as u32,
            regs_ptr as *const _,
        )
    };
    if copied != 0 {
        count(KIND, counter::READ_ERRORS);
        return Err(Skip::Failed);
    }
    let a0 = reg(c, btf::REGS_DI);
    let a1 = reg(c, btf::REGS_SI);
    // A 32-bit call's number meant another call, its arguments other registers.
    // SAFETY: `c` is this CPU's slot; the loader checked REGS_CS + 8 <= REGS_COPY_LEN.
    let cs = unsafe {
        ptr::read_unaligned(
            addr_of!((*c).regs)
                .cast::<u8>()
                .add((btf_off(btf::REGS_CS) as usize).min(REGS_COPY_LEN - 2))
                .cast::<u16>(),
        )
    };
    if cs == USER32_CS {
        return Err(Skip::Filtered);
    }
    // A peek leaves the data queued for the receive that takes it.
    let flags = match call {
        sock_call::RECVFROM | sock_call::RECVMMSG => reg(c, btf::REGS_R10),
        sock_call::RECVMSG => reg(c, btf::REGS_DX),
        _ => 0,
    };
    if flags & MSG_PEEK != 0 {
        return Err(Skip::Filtered);
    }

    // Which descriptor is the socket, and which way the data went.
    let (fd, direction, sk) = if call == sock_call::SPLICE {
        let fd_out = reg(c, btf::REGS_DX) as u32;
        match fd_sock(u64::from(fd_out)) {
            Some(sk) => (fd_out, sock_dir::SEND, sk),
            None => {
                let fd_in = a0 as u32;
                let sk = fd_sock(u64::from(fd_in)).ok_or(Skip::Filtered)?;
                (fd_in, sock_dir::RECV, sk)
            }
        }
    } else {
        let fd = a0 as u32;
        let direction = match call {
            sock_call::WRITE
            | sock_call::WRITEV
            | sock_call::SENDTO
            | sock_call::SENDMSG
            | sock_call::SENDMMSG
            | sock_call::SENDFILE => sock_dir::SEND,
            _ => sock_dir::RECV,
        };
        (fd, direction, fd_sock(u64::from(fd)).ok_or(Skip::Filtered)?)
    };
    // SAFETY: `c` is this CPU's slot.
    let protocol = sock_tuple(sk, c).ok_or(Skip::Filtered)?;
    // A TCP read of 0 bytes is end of file; a UDP datagram may be empty.
    if ret == 0 && protocol == IPPROTO_TCP {
        return Err(Skip::Filtered);
    }
    // Once the call is known to be a socket call that makes a record, before anything is
    // copied from it: so the filtered count is exactly the calls not recorded.
    let cgroup = current_cgroup_unless_ignored(KIND)?;

    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: a helper without arguments.
    let now = unsafe { gen_helpers::bpf_ktime_get_ns() };
    let bytes = ret as u64;
    // SAFETY: `c` is this CPU's slot; the entry is copied out at once.
    unsafe {
        match SYSCALL_ENTRY.get(&tid) {
            Some(e) if e.nr == nr && e.ts <= now => {
                (*c).duration = now - e.ts;
                (*c).flags = 0;
            }
            _ => {
                (*c).duration = 0;
                (*c).flags = sock_flags::NO_ENTRY;
            }
        }
        (*c).cgroup = cgroup;
        (*c).sk = sk;
        (*c).fd = fd;
        (*c).call = call;
        (*c).direction = direction;
        (*c).protocol = protocol as u8;
        (*c).unreported = 0;
    }

    let mut msg = Message {
        bytes,
        buf: 0,
        buf_len: reg(c, btf::REGS_DX),
        iov: 0,
        iovcnt: 0,
        name: 0,
        namelen: 0,
        fault: false,
    };
    match call {
        sock_call::READ | sock_call::WRITE => msg.buf = a1,
        sock_call::READV | sock_call::WRITEV => {
            msg.iov = a1;
            msg.iovcnt = reg(c, btf::REGS_DX);
        }
        sock_call::SENDTO => {
            msg.buf = a1;
            msg.name = reg(c, btf::REGS_R8);
            msg.namelen = reg(c, btf::REGS_R9) as u32 as i32;
        }
        sock_call::RECVFROM => {
            msg.buf = a1;
            msg.name = reg(c, btf::REGS_R8);
            // The kernel wrote the address's real length back through `addrlen`.
            if msg.name != 0 {
                msg.namelen = uread::<i32>(reg(c, btf::REGS_R9)).unwrap_or(0);
            }
        }
        sock_call::SENDMSG | sock_call::RECVMSG => msg = message(uread::<[u64; 4]>(a1), bytes),
        sock_call::SENDMMSG | sock_call::RECVMMSG => {
            // `ret` messages of `struct mmsghdr` (a msghdr and its `msg_len`, 64 bytes),
            // each recorded by `ks_sys_mmsg`.
            // SAFETY: `c` is this CPU's slot.
            unsafe {
                if bytes > MAX_MMSG as u64 {
                    (*c).unreported = (bytes - MAX_MMSG as u64) as u32;
                }
                (*c).mmsg_vec = a1;
                (*c).mmsg_count = if bytes > MAX_MMSG as u64 {
                    MAX_MMSG as u32
                } else {
                    bytes as u32
                };
                (*c).mmsg_next = 0;
                SOCK_MMSG.tail_call(ctx, 0);
            }
            // Only reached when the tail call failed (the loader could not set it up).
            count(KIND, counter::READ_ERRORS);
            return Err(Skip::Failed);
        }
        // sendfile and splice: the data comes from a file or a pipe, never copied.
        _ => {}
    }
    emit_sock_io(ctx, c, &msg, 0);
    Ok(())
}

/// One message of the `sendmmsg`/`recvmmsg` that `ks_sys_exit` found (its state in
/// `SOCK_CALL`), then itself again for the next: never attached, only reached by tail
/// calls from `ks_sys_exit` on the same CPU.
#[raw_tracepoint(tracepoint = "sys_exit")]
fn ks_sys_mmsg(ctx: RawTracePointContext) -> u32 {
    let Some(c) = SOCK_CALL.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: `c` is this CPU's slot, filled by the caller of this chain.
    unsafe {
        let i = (*c).mmsg_next;
        if i >= (*c).mmsg_count || i >= MAX_MMSG as u32 {
            return 0;
        }
        // One read of the whole `struct mmsghdr`: its msghdr, then `msg_len` (word 7).
        let h = uread::<[u64; 8]>((*c).mmsg_vec.wrapping_add(u64::from(i) * 64));
        let msg_len = h.map_or(0, |h| h[7] as u32);
        let m = message(h.map(|h| [h[0], h[1], h[2], h[3]]), u64::from(msg_len));
        emit_sock_io(&ctx, c, &m, i);
        (*c).mmsg_next = i + 1;
        if i + 1 < (*c).mmsg_count {
            SOCK_MMSG.tail_call(&ctx, 0);
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}
