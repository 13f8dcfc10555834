//! `ksight detect`: what this kernel offers the eBPF backend, without loading anything.

use std::path::Path;

use aya::maps::MapType;

use ksight_source::signals::SignalStatus;

use crate::{
    fidelity,
    resolve::{self, BTF_FIELDS, BtfOffsets, btf_field_name},
    tracefs,
};

#[derive(Clone, Debug, serde::Serialize)]
pub struct DetectReport {
    /// `uname -r`.
    pub kernel_release: String,
    /// Whether this binary carries the eBPF programs (see the build script).
    pub programs_built: bool,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf_present: bool,
    /// Where tracefs is mounted, if it is.
    pub tracefs: Option<String>,
    /// A trivial BPF map could be created (privileges, kernel support).
    pub bpf_allowed: bool,
    pub bpf_error: Option<String>,
    /// A BPF ring buffer map could be created (Linux 5.8+).
    pub ringbuf_supported: bool,
    pub tracepoints: Vec<TracepointReport>,
    pub btf_fields: Vec<BtfFieldReport>,
    /// The fidelity `EbpfSource::open` would report if every usable program attached.
    pub signals: Vec<SignalStatus>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TracepointReport {
    /// `category:name`.
    pub tracepoint: String,
    /// "tracepoint" or "raw_tracepoint".
    pub attach: &'static str,
    /// The format file exists and parses.
    pub format_ok: bool,
    pub format_error: Option<String>,
    /// Why the program could not be attached, if it could not.
    pub unusable: Vec<String>,
    /// Record fields that would read 0 on this kernel.
    pub degraded: Vec<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BtfFieldReport {
    /// `struct.member[.member]`.
    pub field: String,
    pub offset: Option<u32>,
    pub error: Option<String>,
}

/// Probes the kernel. Never mounts anything and never fails: what cannot be probed is
/// reported as absent, with the reason where there is one.
pub fn detect() -> DetectReport {
    let tracefs_root = tracefs::find();
    let btf = BtfOffsets::resolve();
    let resolutions = resolve::resolve_all(tracefs_root.as_deref(), &btf);

    let (bpf_allowed, bpf_error) = match aya::sys::is_map_supported(MapType::Array) {
        Ok(true) => (true, None),
        Ok(false) => (false, Some("the kernel refused a BPF array map".to_owned())),
        Err(e) => (false, Some(format!("{e}: {}", e.io_error))),
    };
    let ringbuf_supported =
        bpf_allowed && aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(false);

    let tracepoints = resolutions
        .iter()
        .map(|r| TracepointReport {
            tracepoint: r.def.full_name(),
            attach: r.def.attach().name(),
            format_ok: r.format.is_ok(),
            format_error: r.format.as_ref().err().map(ToString::to_string),
            unusable: r.blocking.clone(),
            degraded: r.degraded.clone(),
        })
        .collect();

    let btf_fields = BTF_FIELDS
        .iter()
        .map(|&(slot, ..)| BtfFieldReport {
            field: btf_field_name(slot),
            offset: btf.ok(slot).then_some(btf.offsets[slot]),
            error: btf.errors[slot].clone(),
        })
        .collect();

    let outcomes: Vec<_> = resolutions
        .iter()
        .map(|r| {
            let would_attach = if r.blocking.is_empty() {
                Ok(())
            } else {
                Err(r.blocking.join(", "))
            };
            (r, would_attach)
        })
        .collect();

    DetectReport {
        kernel_release: kernel_release(),
        programs_built: crate::programs_built().is_ok(),
        btf_present: Path::new(crate::btf::VMLINUX_BTF).exists(),
        tracefs: tracefs_root.map(|p| p.display().to_string()),
        bpf_allowed,
        bpf_error,
        ringbuf_supported,
        tracepoints,
        btf_fields,
        signals: fidelity::compute(&outcomes, &btf),
    }
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; release is NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}
