//! ksight's eBPF backend: loads the tracepoint programs of `programs/` with aya, hands
//! them the field offsets of the running kernel, and reads their event-abi records from a
//! BPF ring buffer (Linux 5.8+) or a per-CPU perf event array.
//!
//! ```no_run
//! use std::time::Duration;
//! use ksight_backend_ebpf::{EbpfOptions, EbpfSource};
//! use ksight_source::{EventSource, RawBatch};
//!
//! let mut source = EbpfSource::open(EbpfOptions::default())?;
//! for signal in source.fidelity() {
//!     println!("{}: {:?}", signal.signal, signal.status);
//! }
//! let mut batch = RawBatch::new();
//! source.poll(&mut batch, Duration::from_millis(100))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Offsets: classic tracepoint fields come from `/sys/kernel/tracing/events/*/*/format`,
//! kernel struct members from `/sys/kernel/btf/vmlinux`; both are resolved at
//! [`EbpfSource::open`] and passed to the programs as read-only globals. Whatever cannot
//! be resolved is reported per signal by [`EbpfSource::fidelity`], never guessed.

mod btf;
mod detect;
mod error;
mod fidelity;
mod filter;
#[path = "../programs/src/layout.rs"]
#[allow(dead_code, reason = "shared with the programs, which use other parts")]
mod layout;
mod reader;
mod resolve;
mod tracefs;

use std::{
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, MapType, PerCpuArray, PerfEventArray, ProgramArray, RingBuf},
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use event_abi::{counter, kind};
use ksight_source::{CgroupFilter, EventSource, Poll, RawBatch, SourceCounters, SourceError};

pub use detect::{BtfFieldReport, DetectReport, TracepointReport, detect};
pub use error::EbpfError;
pub use ksight_source::signals::{Fidelity, Signal, SignalStatus};

use crate::{
    error::{is_permission_error, permission_denied},
    reader::{PerfReader, Reader},
    resolve::{Attach, BtfOffsets, TpDef, TpResolution},
};

/// The object built by `build.rs` (empty when it was built without the BPF toolchain).
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ksight-ebpf-programs"))
}

/// The ABI version the object says it emits (its `ksight_abi` section).
fn object_abi_version(object: &[u8]) -> Option<u32> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(object).ok()?;
    let data = file.section_by_name("ksight_abi")?.data().ok()?;
    Some(u32::from_le_bytes(data.get(..4)?.try_into().ok()?))
}

/// Ok when this binary carries the eBPF programs, built for this ABI major.
fn programs_built() -> Result<(), EbpfError> {
    if cfg!(ksight_no_ebpf) || object().is_empty() {
        return Err(EbpfError::NotBuilt {
            reason: option_env!("KSIGHT_EBPF_SKIPPED").unwrap_or("empty eBPF object"),
        });
    }
    match object_abi_version(object()) {
        Some(v) if v >> 16 == u32::from(event_abi::ABI_VERSION_MAJOR) => Ok(()),
        found => Err(EbpfError::AbiMismatch {
            found,
            expected: event_abi::ABI_VERSION,
        }),
    }
}

/// How records travel from the programs to the reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Transport {
    /// The ring buffer where the kernel has one (5.8+), else the perf array.
    #[default]
    Auto,
    /// One BPF ring buffer shared by all CPUs (Linux 5.8+).
    RingBuf,
    /// One perf buffer per CPU (Linux 4.3+).
    PerfArray,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbpfOptions {
    pub transport: Transport,
    /// Ring buffer size in bytes: a power of two multiple of the page size.
    pub ring_bytes: u32,
    /// Pages per CPU for the perf array: a power of two.
    pub perf_pages: usize,
    /// Record kinds to capture: bit `1 << kind` (`event_abi::kind`); `None` for all. The
    /// programs of the others are not attached, so they cost nothing.
    pub kinds: Option<u32>,
    /// Payload bytes copied per socket call: 1 ..= `event_abi::MAX_SNAPLEN`.
    pub snaplen: u32,
}

impl Default for EbpfOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Auto,
            ring_bytes: layout::DEFAULT_RING_BYTES,
            perf_pages: 64,
            kinds: None,
            snaplen: event_abi::DEFAULT_SNAPLEN as u32,
        }
    }
}

/// Kernel-side cost of one program, from its BPF prog info. Only counted while
/// run-time statistics are enabled (see [`enable_run_time_stats`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProgramStats {
    /// Program name in the object, e.g. `ks_exec`.
    pub name: &'static str,
    /// `category:name`.
    pub tracepoint: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Keeps BPF run-time statistics enabled system-wide while it lives (the kernel counts
/// them while any such fd is open, or while `kernel.bpf_stats_enabled=1`).
#[derive(Debug)]
pub struct RunTimeStats {
    _fd: OwnedFd,
}

/// Enables BPF run-time statistics (Linux 5.8+) until the guard is dropped.
pub fn enable_run_time_stats() -> Result<RunTimeStats, EbpfError> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Ok(RunTimeStats { _fd: fd }),
        Err(e) if is_permission_error(&e) => Err(permission_denied("enabling BPF statistics", &e)),
        Err(e) => Err(EbpfError::EnableStats(e)),
    }
}

/// The eBPF backend as an [`EventSource`]. Dropping it detaches every program.
pub struct EbpfSource {
    // Fields drop in order: the reader's maps first, the programs (and their links) last.
    reader: Reader,
    counters: PerCpuArray<MapData, u64>,
    /// The ignore filter's maps, shared with the handles [`EventSource::cgroup_filter`]
    /// gives out (they hold it weakly: dropping the source ends them).
    filter: Arc<Mutex<filter::FilterMaps>>,
    ebpf: Ebpf,
    transport: Transport,
    /// Programs attached, in `resolve::TRACEPOINTS` (kind) order.
    attached: Vec<&'static TpDef>,
    fidelity: Vec<SignalStatus>,
}

impl EbpfSource {
    /// Loads the programs, hands them this kernel's offsets, attaches every program whose
    /// tracepoint exists and whose essential fields resolved, and starts buffering
    /// records. Fails only when nothing can be observed at all (or on setup errors).
    pub fn open(opts: EbpfOptions) -> Result<Self, EbpfError> {
        programs_built()?;
        let page = page_size();
        if !opts.ring_bytes.is_power_of_two() || opts.ring_bytes < page {
            return Err(EbpfError::InvalidRingSize {
                bytes: opts.ring_bytes,
            });
        }
        if !opts.perf_pages.is_power_of_two() {
            return Err(EbpfError::InvalidPerfPages {
                pages: opts.perf_pages,
            });
        }
        if opts.snaplen == 0 || opts.snaplen as usize > event_abi::MAX_SNAPLEN {
            return Err(EbpfError::InvalidSnaplen {
                bytes: opts.snaplen,
            });
        }
        raise_memlock_limit();
        // Creating a map first tells us early (and clearly) when bpf() is not allowed.
        let ringbuf = ringbuf_supported()?;

        let tracefs = tracefs::find_or_mount()?;
        let btf = BtfOffsets::resolve();
        let resolutions = resolve::resolve_all(Some(&tracefs), &btf);

        let transport = match (opts.transport, ringbuf) {
            (Transport::RingBuf, false) => return Err(EbpfError::RingBufUnsupported),
            (Transport::RingBuf, true) | (Transport::Auto, true) => Transport::RingBuf,
            (Transport::PerfArray, _) | (Transport::Auto, false) => Transport::PerfArray,
        };

        let output_mode = match transport {
            Transport::PerfArray => layout::OUTPUT_PERF,
            _ => layout::OUTPUT_RINGBUF,
        };
        // A quarter full wakes the reader early; otherwise it reads on its poll timeout.
        let wakeup_bytes = u64::from(opts.ring_bytes / 4);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(layout::G_OUTPUT_MODE, &output_mode, true)
            .override_global(layout::G_WAKEUP_BYTES, &wakeup_bytes, true)
            .override_global(layout::G_BTF, &btf.offsets, true)
            .override_global(layout::G_SNAPLEN, &opts.snaplen, true)
            // The unused transport keeps a minimal ring.
            .map_max_entries(
                layout::maps::RING,
                if transport == Transport::RingBuf {
                    opts.ring_bytes
                } else {
                    page
                },
            );
        for r in &resolutions {
            if !r.def.global.is_empty() {
                loader.override_global(r.def.global, r.global.as_slice(), true);
            }
        }
        let mut ebpf = match loader.load(object()) {
            Ok(ebpf) => ebpf,
            Err(e) if is_permission_error(&e) => {
                return Err(permission_denied("loading the eBPF object", &e));
            }
            Err(e) => return Err(EbpfError::Load(e)),
        };

        // Readers before programs: a record emitted before its perf buffer exists would
        // be counted lost.
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, layout::maps::COUNTERS)?)
            .map_err(|source| EbpfError::Map {
                name: layout::maps::COUNTERS,
                source,
            })?;
        let filter = Arc::new(Mutex::new(filter::FilterMaps::take(&mut ebpf)?));
        let reader = match transport {
            Transport::PerfArray => Reader::Perf(open_perf(&mut ebpf, opts.perf_pages)?),
            _ => Reader::Ring(
                RingBuf::try_from(take_map(&mut ebpf, layout::maps::RING)?).map_err(|source| {
                    EbpfError::Map {
                        name: layout::maps::RING,
                        source,
                    }
                })?,
            ),
        };

        let mut outcomes: Vec<(&TpResolution, Result<(), String>)> = Vec::new();
        let mut attached = Vec::new();
        let wanted = |k: u16| opts.kinds.is_none_or(|mask| mask & (1 << k) != 0);
        for r in &resolutions {
            if !wanted(r.def.kind()) {
                outcomes.push((r, Err("not requested (signal disabled)".into())));
                continue;
            }
            // An entry hook only times what its kind's main hook records.
            let main_attached = r.def.entry.is_none()
                || attached
                    .iter()
                    .any(|d: &&TpDef| d.kind() == r.def.kind() && d.entry.is_none());
            let outcome = if !r.blocking.is_empty() {
                Err(r.blocking.join(", "))
            } else if !main_attached {
                Err("the hook that emits its records is not attached".into())
            } else {
                attach(&mut ebpf, r.def)?
            };
            if outcome.is_ok() {
                attached.push(r.def);
            }
            outcomes.push((r, outcome));
        }
        if attached.is_empty() {
            let details = outcomes
                .iter()
                .filter_map(|(r, o)| {
                    o.as_ref()
                        .err()
                        .map(|e| format!("{}: {e}", r.def.full_name()))
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(EbpfError::NothingAttached { details });
        }
        let fidelity = fidelity::compute(&outcomes, &btf);

        Ok(Self {
            reader,
            counters,
            filter,
            ebpf,
            transport,
            attached,
            fidelity,
        })
    }

    /// Per signal: which tracepoints feed it and how completely it is observed.
    pub fn fidelity(&self) -> Vec<SignalStatus> {
        self.fidelity.clone()
    }

    /// The transport in use (never [`Transport::Auto`]).
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Run count and time of every attached program. Programs whose info cannot be read
    /// are left out.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.attached
            .iter()
            .filter_map(|def| {
                let info = self.ebpf.program(def.program())?.info().ok()?;
                Some(ProgramStats {
                    name: def.program(),
                    tracepoint: def.full_name(),
                    run_count: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }

    /// Records emitted by the programs, per record kind, summed over CPUs.
    pub fn emitted_per_kind(&self) -> Vec<(u16, u64)> {
        self.per_kind(counter::EMITTED)
    }

    /// Failed kernel reads (records sent with those fields zeroed), per record kind.
    pub fn read_errors_per_kind(&self) -> Vec<(u16, u64)> {
        self.per_kind(counter::READ_ERRORS)
    }

    /// Records the programs dropped because their cgroup is ignored, per record kind.
    pub fn filtered_per_kind(&self) -> Vec<(u16, u64)> {
        self.per_kind(counter::FILTERED)
    }

    /// Records dropped because their cgroup is ignored, per CPU (all kinds).
    pub fn filtered_per_cpu(&self) -> Vec<u64> {
        let mut per_cpu: Vec<u64> = Vec::new();
        for k in 1..kind::END {
            for (cpu, n) in self
                .counter_per_cpu(k, counter::FILTERED)
                .into_iter()
                .enumerate()
            {
                if per_cpu.len() <= cpu {
                    per_cpu.resize(cpu + 1, 0);
                }
                per_cpu[cpu] = per_cpu[cpu].saturating_add(n);
            }
        }
        per_cpu
    }

    fn per_kind(&self, slot: u32) -> Vec<(u16, u64)> {
        (1..kind::END)
            .map(|k| {
                let total = self
                    .counter_per_cpu(k, slot)
                    .iter()
                    .fold(0u64, |a, &b| a.saturating_add(b));
                (k, total)
            })
            .collect()
    }

    fn counter_per_cpu(&self, k: u16, slot: u32) -> Vec<u64> {
        let index = u32::from(k) * counter::COUNT + slot;
        self.counters
            .get(&index, 0)
            .map(|values| values.iter().copied().collect())
            .unwrap_or_default()
    }

    fn lost_per_cpu(&self) -> Vec<u64> {
        let mut lost: Vec<u64> = Vec::new();
        let mut add = |cpu: usize, n: u64| {
            if lost.len() <= cpu {
                lost.resize(cpu + 1, 0);
            }
            lost[cpu] = lost[cpu].saturating_add(n);
        };
        for k in 1..kind::END {
            for (cpu, n) in self
                .counter_per_cpu(k, counter::LOST)
                .into_iter()
                .enumerate()
            {
                add(cpu, n);
            }
        }
        for (cpu, &n) in self.reader.perf_lost().iter().enumerate() {
            add(cpu, n);
        }
        lost
    }
}

impl EventSource for EbpfSource {
    fn name(&self) -> &str {
        "ebpf"
    }

    fn poll(&mut self, out: &mut RawBatch, timeout: Duration) -> Result<Poll, SourceError> {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86400));
        // Whatever is already buffered is returned without waiting.
        if self.reader.drain(out, deadline) == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            self.reader.wait(left).map_err(|e| SourceError {
                source_name: "ebpf".into(),
                message: "waiting for events".into(),
                cause: Some(Box::new(EbpfError::Poll(e))),
            })?;
            self.reader.drain(out, deadline);
        }
        Ok(Poll::Ready)
    }

    fn counters(&self) -> SourceCounters {
        SourceCounters {
            lost_per_cpu: self.lost_per_cpu(),
            // Ring buffer and perf samples arrive whole; the engine validates them.
            malformed: 0,
            filtered: self
                .filtered_per_cpu()
                .iter()
                .fold(0u64, |a, &b| a.saturating_add(b)),
        }
    }

    fn cgroup_filter(&mut self) -> Option<Arc<dyn CgroupFilter>> {
        Some(Arc::new(filter::EbpfCgroupFilter {
            maps: Arc::downgrade(&self.filter),
        }))
    }
}

/// Loads and attaches one program. `Ok(Err(reason))` when this program cannot run here
/// (the others still can); `Err` only for what stops the whole backend.
fn attach(ebpf: &mut Ebpf, def: &'static TpDef) -> Result<Result<(), String>, EbpfError> {
    // Socket I/O's exit program hands each message of sendmmsg/recvmmsg to the program in
    // its program array: that must be in place before it runs.
    if def.kind() == kind::SOCK_IO && def.entry.is_none() {
        if ebpf.program(layout::SOCK_MMSG_PROGRAM).is_none() {
            return Err(EbpfError::MissingProgram {
                name: layout::SOCK_MMSG_PROGRAM,
            });
        }
        let loaded = load_mmsg_program(ebpf);
        match outcome(loaded, || format!("loading {}", layout::SOCK_MMSG_PROGRAM))? {
            Ok(()) => {}
            Err(why) => {
                return Ok(Err(format!(
                    "{} (records sendmmsg/recvmmsg messages): {why}",
                    layout::SOCK_MMSG_PROGRAM
                )));
            }
        }
    }
    let program = ebpf
        .program_mut(def.program())
        .ok_or(EbpfError::MissingProgram {
            name: def.program(),
        })?;
    let res: Result<(), ProgramError> = match def.attach() {
        Attach::Classic => <&mut TracePoint>::try_from(program).and_then(|p| {
            p.load()?;
            p.attach(def.category(), def.name()).map(drop)
        }),
        Attach::Raw => <&mut RawTracePoint>::try_from(program).and_then(|p| {
            p.load()?;
            p.attach(def.name()).map(drop)
        }),
    };
    outcome(res, || {
        format!("attaching {} to {}", def.program(), def.full_name())
    })
}

/// What loading or attaching a program came to: done, refused by the verifier or another
/// reason this kernel gives (the program stays out, its signal says why), or refused for
/// lack of privilege (no program can load: an error for the whole backend).
fn outcome(
    res: Result<(), ProgramError>,
    what: impl FnOnce() -> String,
) -> Result<Result<(), String>, EbpfError> {
    match res {
        Ok(()) => Ok(Ok(())),
        // Before the permission check: the verifier refuses with EACCES too, and its log
        // says why.
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) if !verifier_log.to_string().trim().is_empty() => {
            // The end of the verifier log says why.
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Ok(Err(format!(
                "verifier rejected the program ({io_error}): {}",
                tail.join(" | ")
            )))
        }
        Err(e) if is_permission_error(&e) => Err(permission_denied(what(), &e)),
        Err(e) => Ok(Err(error_chain(&e))),
    }
}

/// Loads `ks_sys_mmsg` (present: checked by the caller) and puts it in slot 0 of
/// `SOCK_MMSG`.
fn load_mmsg_program(ebpf: &mut Ebpf) -> Result<(), ProgramError> {
    let program = ebpf
        .program_mut(layout::SOCK_MMSG_PROGRAM)
        .ok_or(ProgramError::UnexpectedProgramType)?;
    let program = <&mut RawTracePoint>::try_from(program)?;
    program.load()?;
    let fd = program.fd()?.try_clone().map_err(|io_error| {
        ProgramError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error,
        })
    })?;
    let map = ebpf
        .map_mut(layout::maps::SOCK_MMSG)
        .ok_or(ProgramError::UnexpectedProgramType)?;
    let mut array = ProgramArray::try_from(map).map_err(ProgramError::MapError)?;
    array.set(0, &fd, 0).map_err(ProgramError::MapError)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let part = c.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    s
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or(EbpfError::MissingMap { name })
}

fn open_perf(ebpf: &mut Ebpf, pages: usize) -> Result<PerfReader, EbpfError> {
    let mut array =
        PerfEventArray::try_from(take_map(ebpf, layout::maps::PERF)?).map_err(|source| {
            EbpfError::Map {
                name: layout::maps::PERF,
                source,
            }
        })?;
    let cpus =
        aya::util::online_cpus().map_err(|(path, source)| EbpfError::Cpus { path, source })?;
    let mut bufs = Vec::with_capacity(cpus.len());
    for cpu in cpus {
        match array.open(cpu, Some(pages)) {
            Ok(buf) => bufs.push((cpu, buf)),
            Err(e) if is_permission_error(&e) => {
                return Err(permission_denied(
                    format!("opening the perf buffer of CPU {cpu}"),
                    &e,
                ));
            }
            Err(source) => return Err(EbpfError::PerfBuffer { cpu, source }),
        }
    }
    let ncpu = bufs.iter().map(|(c, _)| *c as usize + 1).max().unwrap_or(0);
    Ok(PerfReader {
        bufs,
        lost: vec![0; ncpu],
        wrapped: Vec::new(),
    })
}

fn ringbuf_supported() -> Result<bool, EbpfError> {
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(ok) => Ok(ok),
        Err(e) if is_permission_error(&e) => Err(permission_denied("creating a BPF map", &e)),
        // Cannot tell: let the load report the real problem.
        Err(_) => Ok(false),
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).unwrap_or(4096)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it where we may.
/// Best effort: newer kernels ignore it, and failure shows up as a load error.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a rlimit struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn source_is_send() {
        assert_send::<EbpfSource>();
    }

    #[test]
    fn program_names_fit_the_kernel_limit() {
        // BPF_OBJ_NAME_LEN is 16 including the NUL; longer names get truncated and
        // `program_stats` could not tell programs apart.
        for def in resolve::TRACEPOINTS.iter() {
            assert!(def.program().len() < 16, "{}", def.program());
        }
    }
}

/// These check the embedded object: built without it (`AYA_BUILD_SKIP`, no bpf-linker),
/// they fail and say so rather than vanish.
#[cfg(test)]
mod abi_tests {
    fn require_object() {
        assert!(
            !cfg!(ksight_no_ebpf),
            "built without the eBPF object (AYA_BUILD_SKIP set, or no bpf-linker): `cargo xtask setup` installs what it needs"
        );
    }

    #[test]
    fn the_embedded_object_reports_this_abi() {
        require_object();
        assert_eq!(
            super::object_abi_version(super::object()),
            Some(event_abi::ABI_VERSION)
        );
        assert!(super::programs_built().is_ok());
    }

    /// Every row of the table of kinds has its program in the object, of the program type
    /// and on the tracepoint the row names (the loader attaches by the row).
    #[test]
    fn the_object_has_a_program_for_every_kind() {
        require_object();
        use event_abi::kinds::{Attach, KINDS};
        use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
        let file = object::File::parse(super::object()).unwrap();
        for row in &KINDS {
            let sym = file
                .symbols()
                .find(|s| s.name() == Ok(row.ebpf_program))
                .unwrap_or_else(|| panic!("no program {} in the object", row.ebpf_program));
            let section = sym
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .and_then(|s| s.name().ok().map(str::to_owned))
                .unwrap_or_default();
            let tp = row.tracepoint;
            let want = match row.ebpf_attach {
                Attach::Classic => format!("tracepoint/{}/{}", tp.category, tp.name),
                Attach::Raw => format!("raw_tp/{}", tp.name),
            };
            assert_eq!(section, want, "program {}", row.ebpf_program);
        }
    }
}
