//! Reader of the ksight kernel module (`/dev/ksight`, `kmod-c/`).
//!
//! The module writes event-abi records — the same bytes the eBPF programs emit — into one
//! ring per CPU. [`KmodSource::open`] checks the module's versions, maps every ring (an
//! info page read-write for the tail, the data read-only and twice back to back, so no
//! record is split) and starts the capture; [`KmodSource`] is then an
//! [`EventSource`] like any other.
//!
//! ```no_run
//! use std::time::Duration;
//! use ksight_backend_kmod::{KmodOptions, KmodSource};
//! use ksight_source::{EventSource, RawBatch};
//!
//! let mut source = KmodSource::open(KmodOptions::default())?;
//! let mut batch = RawBatch::new();
//! source.poll(&mut batch, Duration::from_millis(100))?;
//! println!("{} records, {} lost", batch.len(), source.counters().lost_total());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! One reader at a time: the module refuses a second `open` with `EBUSY`
//! ([`KmodError::Busy`]).

pub mod ring;
pub mod uapi;

use ksight_source::CgroupFilter;
use ksight_source::signals::{self, Hooked, Signal, SignalStatus};
use ksight_source::{EventSource, Poll, RawBatch, SourceCounters, SourceError};
use ring::{Ring, RingMemory};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub const DEVICE: &str = "/dev/ksight";

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("{} does not exist: the ksight kernel module is not loaded (modprobe ksight)", .path.display())]
    NotLoaded { path: PathBuf },
    #[error("opening {}: permission denied (the device is root-only, mode 0600)", .path.display())]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is busy: another ksight reader has it open (the module serves one reader at a time)", .path.display())]
    Busy { path: PathBuf },
    #[error(
        "the ksight module writes records of ABI {}.{}, this ksight reads ABI {}.{}: \
         install the module that came with this ksight",
        .module >> 16, .module & 0xffff, .reader >> 16, .reader & 0xffff
    )]
    AbiMismatch { module: u32, reader: u32 },
    #[error(
        "the ksight module's device interface is {}.{}, this ksight speaks {}.{}: \
         install the module that came with this ksight",
        .module >> 16, .module & 0xffff, .reader >> 16, .reader & 0xffff
    )]
    DeviceMismatch { module: u32, reader: u32 },
    #[error("the ksight module reports an unusable ring geometry: {0}")]
    Geometry(String),
    #[error("{what} on {}", .path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid option: {0}")]
    Option(String),
}

/// How to open the module's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmodOptions {
    pub device: PathBuf,
    /// Record kinds to capture: bit `1 << kind` (`event_abi::kind`); `None` for all.
    pub kinds: Option<u32>,
    /// `poll` wakes up once a ring holds this many bytes; `None` keeps the module's
    /// default (a quarter of a ring). The reader also wakes at every poll timeout.
    pub watermark_bytes: Option<u32>,
    /// Payload bytes copied per socket I/O record, 1 ..= `event_abi::MAX_SNAPLEN` (as the
    /// eBPF backend takes it); `None` keeps the module's default
    /// (`event_abi::DEFAULT_SNAPLEN`).
    pub snaplen: Option<u32>,
}

impl Default for KmodOptions {
    fn default() -> Self {
        Self {
            device: PathBuf::from(DEVICE),
            kinds: None,
            watermark_bytes: None,
            snaplen: None,
        }
    }
}

/// A snaplen both backends accept: 1 ..= `event_abi::MAX_SNAPLEN`.
fn check_snaplen(bytes: u32) -> Result<u32, KmodError> {
    if bytes == 0 || bytes as usize > event_abi::MAX_SNAPLEN {
        return Err(KmodError::Option(format!(
            "snaplen {bytes}: payload bytes per socket call must be 1 to {}",
            event_abi::MAX_SNAPLEN
        )));
    }
    Ok(bytes)
}

/// Per ring: what the kernel wrote and dropped, and what this reader took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingCounters {
    pub emitted: u64,
    pub lost: u64,
    /// Dropped because their cgroup is ignored.
    pub filtered: u64,
    pub delivered: u64,
    pub malformed: u64,
}

/// The module's counters (`KSIGHT_IOC_STATS`).
pub type KmodStats = uapi::Stats;

/// A mapping that is unmapped on drop.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: a plain address range; the rings synchronise through atomics.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: addr/len came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// The kernel-module backend as an [`EventSource`]. Dropping it stops the capture.
pub struct KmodSource {
    // Rings before mappings before the fd: rings point into the mappings.
    rings: Vec<Ring>,
    _mappings: Vec<Mapping>,
    /// Shared (weakly) with the [`CgroupFilter`] handles: the device stays open, and so
    /// busy for the next reader, no longer than this source.
    fd: Arc<OwnedFd>,
    path: PathBuf,
    geometry: uapi::Geometry,
    version: uapi::Version,
    /// Per signal, from the probes the module registered when the capture started.
    fidelity: Vec<SignalStatus>,
}

fn io_err(what: impl Into<String>, path: &Path, source: io::Error) -> KmodError {
    KmodError::Io {
        what: what.into(),
        path: path.to_path_buf(),
        source,
    }
}

fn open_device(path: &Path) -> Result<OwnedFd, KmodError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| KmodError::Option(format!("device path {} has a NUL byte", path.display())))?;
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let path = path.to_path_buf();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                KmodError::NotLoaded { path }
            }
            Some(libc::EACCES) | Some(libc::EPERM) => {
                KmodError::PermissionDenied { path, source: e }
            }
            Some(libc::EBUSY) => KmodError::Busy { path },
            _ => io_err("opening the device", &path, e),
        });
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl` with a pointer argument.
fn ioctl_ptr<T>(fd: &OwnedFd, request: u32, arg: *mut T) -> io::Result<()> {
    // SAFETY: `arg` points to a T of the size encoded in `request`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_none(fd: &OwnedFd, request: u32) -> io::Result<()> {
    // SAFETY: an ioctl without argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads and checks the module's versions.
fn check_version(fd: &OwnedFd, path: &Path) -> Result<uapi::Version, KmodError> {
    let mut v = uapi::Version::default();
    ioctl_ptr(fd, uapi::IOC_VERSION, &mut v).map_err(|e| {
        io_err(
            "reading the module's ABI version (KSIGHT_IOC_VERSION)",
            path,
            e,
        )
    })?;
    if v.abi_version >> 16 != u32::from(event_abi::ABI_VERSION_MAJOR) {
        return Err(KmodError::AbiMismatch {
            module: v.abi_version,
            reader: event_abi::ABI_VERSION,
        });
    }
    if v.dev_version >> 16 != u32::from(uapi::DEV_VERSION_MAJOR) {
        return Err(KmodError::DeviceMismatch {
            module: v.dev_version,
            reader: uapi::DEV_VERSION,
        });
    }
    Ok(v)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

fn map(
    fd: &OwnedFd,
    path: &Path,
    offset: u64,
    len: usize,
    prot: libc::c_int,
) -> Result<Mapping, KmodError> {
    let off = libc::off_t::try_from(offset)
        .map_err(|_| KmodError::Geometry(format!("mmap offset {offset} out of range")))?;
    // SAFETY: a fresh shared mapping of the device; the kernel checks offset and length.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            off,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io_err(
            format!("mapping {len} bytes at offset {offset:#x}"),
            path,
            io::Error::last_os_error(),
        ));
    }
    Ok(Mapping { addr, len })
}

/// Whether the module backend can run here: the device exists, opens, and speaks this
/// reader's ABI. (`ksight detect` uses it.)
pub fn probe() -> Result<(), KmodError> {
    let path = Path::new(DEVICE);
    if !path.exists() {
        return Err(KmodError::NotLoaded {
            path: path.to_path_buf(),
        });
    }
    let fd = open_device(path)?;
    check_version(&fd, path).map(drop)
}

impl KmodSource {
    /// Opens the device, checks its versions, maps every ring and starts the capture.
    pub fn open(options: KmodOptions) -> Result<Self, KmodError> {
        let snaplen = options.snaplen.map(check_snaplen).transpose()?;
        let path = options.device.clone();
        let fd = open_device(&path)?;
        let version = check_version(&fd, &path)?;

        let mut g = uapi::Geometry::default();
        ioctl_ptr(&fd, uapi::IOC_GEOMETRY, &mut g)
            .map_err(|e| io_err("reading the ring geometry (KSIGHT_IOC_GEOMETRY)", &path, e))?;
        let page = page_size();
        if !g.ring_bytes.is_power_of_two()
            || u64::from(g.ring_bytes) < page
            || u64::from(g.page_size) != page
            || g.nr_rings == 0
            || g.data_offset != page
            || g.ring_stride != page + 2 * u64::from(g.ring_bytes)
        {
            return Err(KmodError::Geometry(format!("{g:?} (page size {page})")));
        }

        if let Some(kinds) = options.kinds {
            let mut k = kinds;
            ioctl_ptr(&fd, uapi::IOC_SET_KINDS, &mut k).map_err(|e| {
                io_err(
                    format!("selecting record kinds {kinds:#x} (KSIGHT_IOC_SET_KINDS)"),
                    &path,
                    e,
                )
            })?;
        }
        if let Some(mut n) = snaplen {
            // A module older than interface 1.2 writes no socket I/O records at all.
            if version.dev_version & 0xffff >= u32::from(uapi::DEV_VERSION_MINOR_SNAPLEN) {
                ioctl_ptr(&fd, uapi::IOC_SET_SNAPLEN, &mut n).map_err(|e| {
                    io_err(
                        format!("setting the snaplen to {n} bytes (KSIGHT_IOC_SET_SNAPLEN)"),
                        &path,
                        e,
                    )
                })?;
            }
        }
        if let Some(bytes) = options.watermark_bytes {
            let mut b = bytes;
            ioctl_ptr(&fd, uapi::IOC_SET_WATERMARK, &mut b)
                .map_err(|e| io_err(format!("setting the watermark to {bytes} bytes"), &path, e))?;
        }

        let data_len = 2 * g.ring_bytes as usize;
        let mut mappings = Vec::with_capacity(2 * g.nr_rings as usize);
        let mut rings = Vec::with_capacity(g.nr_rings as usize);
        for n in 0..u64::from(g.nr_rings) {
            let base = n * g.ring_stride;
            let info = map(
                &fd,
                &path,
                base,
                page as usize,
                libc::PROT_READ | libc::PROT_WRITE,
            )?;
            let data = map(&fd, &path, base + g.data_offset, data_len, libc::PROT_READ)?;
            let mem = RingMemory {
                info: info.addr.cast(),
                data: data.addr.cast_const().cast(),
                ring_bytes: u64::from(g.ring_bytes),
            };
            mappings.push(info);
            mappings.push(data);
            // SAFETY: the mappings live in `self` as long as the rings.
            rings.push(unsafe { Ring::new(mem) });
        }

        ioctl_none(&fd, uapi::IOC_START)
            .map_err(|e| io_err("starting the capture (KSIGHT_IOC_START)", &path, e))?;
        let mut source = Self {
            rings,
            _mappings: mappings,
            fd: Arc::new(fd),
            path,
            geometry: g,
            version,
            fidelity: Vec::new(),
        };
        // Which probes START registered: the module's per-kind bits.
        source.fidelity = signal_status(&source.stats()?);
        Ok(source)
    }

    /// Per signal: which tracepoints feed it and whether the module's probes on them are
    /// registered (read when the capture started).
    pub fn fidelity(&self) -> Vec<SignalStatus> {
        self.fidelity.clone()
    }

    pub fn geometry(&self) -> uapi::Geometry {
        self.geometry
    }

    pub fn version(&self) -> uapi::Version {
        self.version
    }

    /// Whether the module has the cgroup ignore filter (device interface 1.1+).
    pub fn has_cgroup_filter(&self) -> bool {
        self.version.dev_version & 0xffff >= u32::from(uapi::DEV_VERSION_MINOR_FILTER)
    }

    /// The module's counters (`filtered` all 0 from a module without the filter).
    pub fn stats(&self) -> Result<KmodStats, KmodError> {
        let mut st = KmodStats::default();
        // A 1.0 module knows the ioctl by its shorter size and writes only that much.
        let request = if self.has_cgroup_filter() {
            uapi::IOC_STATS
        } else {
            uapi::IOC_STATS_V1
        };
        ioctl_ptr(&self.fd, request, &mut st)
            .map_err(|e| io_err("reading statistics (KSIGHT_IOC_STATS)", &self.path, e))?;
        Ok(st)
    }

    /// Records dropped because their cgroup is ignored, per record kind (from
    /// `KSIGHT_IOC_STATS`), for the kinds of `event_abi::kind`.
    pub fn filtered_per_kind(&self) -> Result<Vec<(u16, u64)>, KmodError> {
        let st = self.stats()?;
        Ok((1..event_abi::kind::END)
            .map(|k| (k, st.filtered[usize::from(k)]))
            .collect())
    }

    /// Unregisters the probes and waits until none runs: after this, every record the
    /// module will ever write for this capture is in the rings.
    pub fn stop(&mut self) -> Result<(), KmodError> {
        ioctl_none(&self.fd, uapi::IOC_STOP)
            .map_err(|e| io_err("stopping the capture (KSIGHT_IOC_STOP)", &self.path, e))
    }

    /// Per ring: emitted, lost (kernel side) and delivered, malformed (this reader).
    pub fn ring_counters(&self) -> Vec<RingCounters> {
        self.rings
            .iter()
            .map(|r| RingCounters {
                emitted: r.emitted(),
                lost: r.lost(),
                filtered: r.filtered(),
                delivered: r.delivered,
                malformed: r.malformed,
            })
            .collect()
    }

    /// Stretches of ring data that failed validation (each also reaches the engine as one
    /// undecodable record).
    pub fn malformed(&self) -> u64 {
        self.rings.iter().map(|r| r.malformed).sum()
    }

    /// Moves what every ring holds into `out`; returns the records moved.
    fn drain(&mut self, out: &mut RawBatch) -> u64 {
        // Bound one batch: a ring's worth per ring, at most 4 MiB in all.
        let budget = (4u64 << 20) / self.rings.len().max(1) as u64;
        let budget = budget.max(u64::from(self.geometry.ring_bytes));
        // Read before any ring's head: a record stamped earlier was published before
        // its ring's head was read (but for one still being written), so if every ring
        // drains to that head, everything stamped before `started` is in `out`.
        let started = ksight_source::monotonic_ns();
        let mut complete = true;
        let n = self
            .rings
            .iter_mut()
            .map(|r| {
                let d = r.drain(out, budget);
                complete &= d.complete;
                d.records + d.malformed
            })
            .sum();
        if complete {
            out.mark_complete(started);
        }
        n
    }

    fn wait(&self, timeout: Duration) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl EventSource for KmodSource {
    fn name(&self) -> &str {
        "kmod"
    }

    fn poll(&mut self, out: &mut RawBatch, timeout: Duration) -> Result<Poll, SourceError> {
        if self.drain(out) == 0 && !timeout.is_zero() {
            self.wait(timeout).map_err(|e| SourceError {
                source_name: "kmod".into(),
                message: format!("waiting on {}", self.path.display()),
                cause: Some(Box::new(e)),
            })?;
            self.drain(out);
        }
        Ok(Poll::Ready)
    }

    fn counters(&self) -> SourceCounters {
        SourceCounters {
            lost_per_cpu: self.rings.iter().map(Ring::lost).collect(),
            malformed: self.malformed(),
            filtered: self
                .rings
                .iter()
                .fold(0u64, |a, r| a.saturating_add(r.filtered())),
        }
    }

    /// `None` from a module older than device interface 1.1 (no filter there).
    fn cgroup_filter(&mut self) -> Option<Arc<dyn CgroupFilter>> {
        self.has_cgroup_filter().then(|| {
            Arc::new(KmodCgroupFilter {
                fd: Arc::downgrade(&self.fd),
                path: self.path.clone(),
            }) as Arc<dyn CgroupFilter>
        })
    }
}

/// Each signal's fidelity from the module's per-kind probe bits (`KSIGHT_IOC_STATS`
/// `available`, `enabled`, `attached`): a signal is full when the probes on all its
/// tracepoints are registered, degraded when some are, unavailable when none is. The
/// module reads every record field itself, so a registered probe misses nothing. A kind's
/// entry hook (socket I/O's `raw_syscalls:sys_enter`) shares the kind's bit: the module
/// registers both or neither.
pub fn signal_status(stats: &KmodStats) -> Vec<SignalStatus> {
    let bit = |mask: u32, k: u16| mask & (1u32 << k) != 0;
    Signal::ALL
        .iter()
        .map(|&signal| {
            signals::combine(
                signal,
                signal.kinds().flat_map(|row| {
                    let k = row.kind;
                    let hooked = if bit(stats.attached, k) {
                        Hooked::Attached { notes: Vec::new() }
                    } else if !bit(stats.available, k) {
                        Hooked::Missing("the module found no such tracepoint on this kernel".into())
                    } else if !bit(stats.enabled, k) {
                        Hooked::Missing("not selected (KSIGHT_IOC_SET_KINDS)".into())
                    } else if stats.capturing == 0 {
                        Hooked::Missing("the capture is not running".into())
                    } else {
                        Hooked::Missing("the module did not register its probe".into())
                    };
                    let entry = row
                        .entry
                        .map(|e| (e.tracepoint.to_string(), hooked.clone()));
                    std::iter::once((row.tracepoint.to_string(), hooked)).chain(entry)
                }),
            )
        })
        .collect()
}

/// The ids `KSIGHT_IOC_SET_IGNORED_CGROUPS` is given: sorted, without duplicates, and no
/// more than the module keeps.
fn ignore_request(ids: &[u64]) -> Result<Vec<u64>, String> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let max = uapi::IGNORED_CGROUPS_MAX as usize;
    if ids.len() > max {
        return Err(format!(
            "{} distinct cgroup ids to ignore: the module keeps at most {max}",
            ids.len()
        ));
    }
    Ok(ids)
}

/// [`CgroupFilter`] of a [`KmodSource`]: one ioctl on the source's descriptor (ioctls
/// may run concurrently with the reader's). Fails once the source is dropped.
struct KmodCgroupFilter {
    fd: Weak<OwnedFd>,
    path: PathBuf,
}

impl CgroupFilter for KmodCgroupFilter {
    fn set_ignored(&self, ids: &[u64]) -> Result<(), SourceError> {
        let err = |message: String, cause: Option<io::Error>| SourceError {
            source_name: "kmod".into(),
            message,
            cause: cause.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
        };
        let ids =
            ignore_request(ids).map_err(|m| err(format!("setting ignored cgroups: {m}"), None))?;
        let fd = self.fd.upgrade().ok_or_else(|| {
            err(
                "setting ignored cgroups: the kmod source is closed".into(),
                None,
            )
        })?;
        let mut req = uapi::IgnoredCgroups {
            count: ids.len() as u32,
            _pad: 0,
            ids_ptr: ids.as_ptr() as u64,
        };
        ioctl_ptr(&fd, uapi::IOC_SET_IGNORED_CGROUPS, &mut req).map_err(|e| {
            err(
                format!(
                    "setting {} ignored cgroups (KSIGHT_IOC_SET_IGNORED_CGROUPS) on {}",
                    ids.len(),
                    self.path.display()
                ),
                Some(e),
            )
        })
    }
}

impl Drop for KmodSource {
    fn drop(&mut self) {
        // Closing the device stops the capture too; stopping first keeps the probes from
        // writing into rings that are being unmapped.
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_means_the_module_is_not_loaded() {
        let options = KmodOptions {
            device: PathBuf::from("/nonexistent/ksight"),
            ..KmodOptions::default()
        };
        let err = KmodSource::open(options).err().expect("no device");
        assert!(matches!(err, KmodError::NotLoaded { .. }), "{err:?}");
        assert!(err.to_string().contains("not loaded"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_the_device_is_an_io_error_not_a_crash() {
        // /dev/null opens but knows none of our ioctls.
        let options = KmodOptions {
            device: PathBuf::from("/dev/null"),
            ..KmodOptions::default()
        };
        let err = KmodSource::open(options).err().expect("not the device");
        assert!(matches!(err, KmodError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("KSIGHT_IOC_VERSION"), "{err}");
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = KmodError::AbiMismatch {
            module: 2 << 16 | 1,
            reader: event_abi::ABI_VERSION,
        };
        assert_eq!(
            e.to_string(),
            format!(
                "the ksight module writes records of ABI 2.1, this ksight reads ABI {}.{}: \
                 install the module that came with this ksight",
                event_abi::ABI_VERSION_MAJOR,
                event_abi::ABI_VERSION_MINOR
            )
        );
        let busy = KmodError::Busy {
            path: PathBuf::from(DEVICE),
        };
        assert!(busy.to_string().contains("one reader at a time"));
    }

    #[test]
    fn the_ignore_request_is_sorted_deduplicated_and_bounded() {
        assert_eq!(ignore_request(&[9, 3, 9, 1, 3]), Ok(vec![1, 3, 9]));
        assert_eq!(ignore_request(&[]), Ok(vec![]));
        let max = uapi::IGNORED_CGROUPS_MAX as u64;
        // Duplicates do not count against the limit.
        let mut many: Vec<u64> = (0..max).collect();
        many.extend(0..max);
        assert_eq!(ignore_request(&many).map(|v| v.len()), Ok(max as usize));
        let too_many: Vec<u64> = (0..=max).collect();
        assert_eq!(
            ignore_request(&too_many),
            Err(format!(
                "{} distinct cgroup ids to ignore: the module keeps at most 16384",
                max + 1
            ))
        );
        assert_eq!(
            uapi::IGNORED_CGROUPS_MAX as usize,
            event_abi::filter::MAX_IGNORED_CGROUPS
        );
        assert_eq!(
            uapi::IGNORED_CGROUPS_MAX as usize,
            ksight_source::MAX_IGNORED_CGROUPS
        );
    }

    #[test]
    fn a_filter_handle_outliving_its_source_fails_cleanly() {
        let fd = Arc::new(open_device(Path::new("/dev/null")).unwrap());
        let filter = KmodCgroupFilter {
            fd: Arc::downgrade(&fd),
            path: PathBuf::from("/dev/null"),
        };
        // /dev/null knows no ioctl: the error names the request and the device.
        let e = filter.set_ignored(&[1, 2]).unwrap_err();
        assert_eq!(e.source_name, "kmod");
        assert!(
            e.message.contains(
                "setting 2 ignored cgroups (KSIGHT_IOC_SET_IGNORED_CGROUPS) on /dev/null"
            ),
            "{e}"
        );
        assert!(e.cause.is_some());
        drop(fd);
        let e = filter.set_ignored(&[]).unwrap_err();
        assert!(e.message.contains("the kmod source is closed"), "{e}");
        // Too many ids fail before any ioctl, naming the limit.
        let too_many: Vec<u64> = (0..=u64::from(uapi::IGNORED_CGROUPS_MAX)).collect();
        let e = filter.set_ignored(&too_many).unwrap_err();
        assert!(e.message.contains("at most 16384"), "{e}");
    }

    #[test]
    fn the_stats_ioctl_of_interface_1_0_keeps_its_number() {
        // 1.0 readers ask with the 1056-byte size; the module answers both numbers.
        assert_eq!(uapi::IOC_STATS_V1, 0x8420_b706);
        assert_eq!(uapi::IOC_STATS, 0x8520_b706);
        // _IOW(0xB7, 8, 16 bytes)
        assert_eq!(uapi::IOC_SET_IGNORED_CGROUPS, 0x4010_b708);
    }

    #[test]
    fn signal_status_reflects_each_probe_the_module_registered() {
        use event_abi::kind;
        use ksight_source::signals::Fidelity;
        let all: u32 = (1..kind::END).map(|k| 1u32 << k).sum();
        let mut st = KmodStats {
            available: all & !(1 << kind::TCP_RESET_RECEIVED),
            enabled: all,
            capturing: 1,
            ..KmodStats::default()
        };
        st.attached = st.available & !(1 << kind::BLOCK_ISSUE) & !(1 << kind::TCP_RETRANSMIT);
        let got = signal_status(&st);
        let by = |name: &str| {
            got.iter()
                .find(|s| s.name() == name)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(got.len(), Signal::ALL.len());
        assert_eq!(by("process"), Fidelity::Full);
        assert_eq!(by("tcp"), Fidelity::Full);
        assert_eq!(by("tcp_close_stats"), Fidelity::Full);
        assert_eq!(
            by("tcp_resets"),
            Fidelity::Degraded(
                "tcp:tcp_receive_reset: the module found no such tracepoint on this kernel".into()
            )
        );
        assert_eq!(
            by("tcp_retransmits"),
            Fidelity::Unavailable(
                "tcp:tcp_retransmit_skb: the module did not register its probe".into()
            )
        );
        assert_eq!(
            by("block"),
            Fidelity::Degraded(
                "block:block_rq_issue: the module did not register its probe".into()
            )
        );
        assert_eq!(by("socket_io"), Fidelity::Full);
        // Kinds left out by the reader's selection.
        st.enabled = 1 << kind::EXEC;
        st.attached = 1 << kind::EXEC;
        let got = signal_status(&st);
        assert!(matches!(&got[5].status, Fidelity::Unavailable(w) if w.contains("not selected")));
        assert!(matches!(&got[0].status, Fidelity::Degraded(_)));
        // Socket I/O names both of its hooks: the exit that records and the entry that times.
        assert_eq!(
            by_name(&got, "socket_io"),
            Fidelity::Unavailable(
                "raw_syscalls:sys_exit: not selected (KSIGHT_IOC_SET_KINDS); \
                 raw_syscalls:sys_enter: not selected (KSIGHT_IOC_SET_KINDS)"
                    .into()
            )
        );
        st.available &= !(1 << kind::SOCK_IO);
        let got = signal_status(&st);
        assert!(matches!(
            &by_name(&got, "socket_io"),
            Fidelity::Unavailable(w) if w.contains("raw_syscalls:sys_enter: the module found no such")
        ));
    }

    fn by_name(got: &[SignalStatus], name: &str) -> ksight_source::signals::Fidelity {
        got.iter()
            .find(|s| s.name() == name)
            .unwrap()
            .status
            .clone()
    }

    #[test]
    fn the_snaplen_is_checked_before_the_device_is_touched() {
        assert_eq!(check_snaplen(1).unwrap(), 1);
        assert_eq!(check_snaplen(4096).unwrap(), 4096);
        for bad in [0, 4097, u32::MAX] {
            let options = KmodOptions {
                device: PathBuf::from("/nonexistent/ksight"),
                snaplen: Some(bad),
                ..KmodOptions::default()
            };
            // Refused before the (here missing) device is opened.
            let e = KmodSource::open(options).err().expect("a bad snaplen");
            assert!(matches!(e, KmodError::Option(_)), "{e:?}");
            assert!(e.to_string().contains("must be 1 to 4096"), "{e}");
        }
        // _IOW(0xB7, 9, 4 bytes)
        assert_eq!(uapi::IOC_SET_SNAPLEN, 0x4004_b709);
    }

    #[test]
    fn ioctl_numbers_are_the_kernel_encoding() {
        // _IOR(0xB7, 1, 8 bytes) = 2 << 30 | 8 << 16 | 0xB7 << 8 | 1
        assert_eq!(uapi::IOC_VERSION, 0x8008_b701);
        assert_eq!(uapi::IOC_START, 0x0000_b704);
        assert_eq!(uapi::IOC_SET_KINDS, 0x4004_b703);
    }
}
