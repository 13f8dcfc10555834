//! Choosing and opening a kernel backend.

use crate::args::{BackendChoice, CaptureArgs, TransportChoice};
use anyhow::{Context, Result, anyhow, bail};
use ksight_backend_ebpf::{EbpfOptions, EbpfSource, Fidelity, Transport};
use ksight_backend_kmod::{KmodOptions, KmodSource};
use ksight_engine::EventSource;

pub struct Opened {
    pub source: Box<dyn EventSource>,
    /// One line per signal that is not fully available.
    pub fidelity_notes: Vec<String>,
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether this process may load and attach tracepoint programs.
fn has_bpf_capabilities() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

pub fn open(args: &CaptureArgs) -> Result<Opened> {
    match args.backend {
        BackendChoice::Ebpf => open_ebpf(args.transport),
        BackendChoice::Kmod => open_kmod(),
        BackendChoice::Auto => match open_ebpf(args.transport) {
            Ok(opened) => Ok(opened),
            Err(ebpf) => open_kmod().map_err(|kmod| {
                anyhow!("no kernel backend can run here:\n  ebpf: {ebpf:#}\n  kmod: {kmod:#}")
            }),
        },
    }
}

pub fn open_ebpf(transport: TransportChoice) -> Result<Opened> {
    if !has_bpf_capabilities() {
        bail!(
            "the eBPF backend needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8), \
             to load tracepoint programs"
        );
    }
    let options = EbpfOptions {
        transport: match transport {
            TransportChoice::Auto => Transport::Auto,
            TransportChoice::Ringbuf => Transport::RingBuf,
            TransportChoice::Perf => Transport::PerfArray,
        },
        ..EbpfOptions::default()
    };
    let source = EbpfSource::open(options).context("loading the eBPF backend")?;
    let fidelity_notes = source
        .fidelity()
        .iter()
        .filter(|s| s.status != Fidelity::Full)
        .map(crate::render::signal_line)
        .collect();
    Ok(Opened {
        source: Box::new(source),
        fidelity_notes,
    })
}

pub fn open_kmod() -> Result<Opened> {
    let source =
        KmodSource::open(KmodOptions::default()).context("opening the kernel-module backend")?;
    let stats = source
        .stats()
        .context("reading the kernel module's statistics")?;
    // The module reports, per record kind, whether this kernel has the tracepoint.
    let fidelity_notes = (1..event_abi::kind::END)
        .filter(|k| stats.available & (1u32 << k) == 0)
        .map(|k| format!("record kind {k}: the module found no tracepoint for it on this kernel"))
        .collect();
    Ok(Opened {
        source: Box::new(source),
        fidelity_notes,
    })
}
