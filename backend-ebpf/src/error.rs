use std::{io, path::PathBuf};

/// Everything that can stop the eBPF backend from starting or reading.
///
/// A single program that fails to load or attach is not an error: the source starts
/// without it and [`crate::EbpfSource::fidelity`] says which signal is affected.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this ksight was built without eBPF programs ({reason}): install bpf-linker and \
         nightly rust-src, see README"
    )]
    NotBuilt { reason: &'static str },
    #[error(
        "the embedded eBPF object reports event ABI {}, this ksight reads ABI {}.{}",
        found.map_or("none".to_string(), |v| format!("{}.{}", v >> 16, v & 0xffff)),
        expected >> 16,
        expected & 0xffff
    )]
    AbiMismatch { found: Option<u32>, expected: u32 },

    #[error(
        "{what}: permission denied; loading eBPF programs needs root or CAP_BPF + CAP_PERFMON \
         (CAP_SYS_ADMIN on kernels before 5.8)"
    )]
    PermissionDenied {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing")]
    NoTracefs,

    #[error("mounting tracefs at {path}")]
    MountTracefs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the kernel has no BPF ring buffer (Linux 5.8+); use the perf array transport")]
    RingBufUnsupported,

    #[error("ring buffer size {bytes} is not a power of two multiple of the page size")]
    InvalidRingSize { bytes: u32 },

    #[error("perf buffer page count {pages} is not a power of two")]
    InvalidPerfPages { pages: usize },

    #[error("snaplen {bytes} is outside 1..={max}", max = event_abi::MAX_SNAPLEN)]
    InvalidSnaplen { bytes: u32 },

    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),

    #[error("the eBPF object has no program `{name}`")]
    MissingProgram { name: &'static str },

    #[error("the eBPF object has no map `{name}`")]
    MissingMap { name: &'static str },

    #[error("map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("opening the perf buffer of CPU {cpu}")]
    PerfBuffer {
        cpu: u32,
        #[source]
        source: aya::maps::perf::PerfBufferError,
    },

    #[error("reading {path}")]
    Cpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("no eBPF program could be attached: {details}")]
    NothingAttached { details: String },

    #[error("waiting for events")]
    Poll(#[source] io::Error),

    #[error("enabling BPF run-time statistics")]
    EnableStats(#[source] aya::sys::SyscallError),
}

/// True when `err` or one of its causes is EPERM/EACCES from the kernel.
pub(crate) fn is_permission_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        if let Some(sys) = e.downcast_ref::<aya::sys::SyscallError>()
            && matches!(
                sys.io_error.raw_os_error(),
                Some(libc::EPERM | libc::EACCES)
            )
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The io::Error at the root of `err`, for [`EbpfError::PermissionDenied`].
pub(crate) fn permission_denied(
    what: impl Into<String>,
    err: &(dyn std::error::Error + 'static),
) -> EbpfError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut code = libc::EPERM;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(c) = io.raw_os_error()
        {
            code = c;
        }
        cur = e.source();
    }
    EbpfError::PermissionDenied {
        what: what.into(),
        source: io::Error::from_raw_os_error(code),
    }
}
