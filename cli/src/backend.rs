//! Choosing and opening a kernel backend.

use crate::args::{BackendChoice, CaptureArgs, TransportChoice};
use anyhow::{Context, Result, anyhow, bail};
use ksight_backend_ebpf::{EbpfOptions, EbpfSource, Transport};
use ksight_backend_kmod::{KmodOptions, KmodSource};
use ksight_engine::EventSource;
use ksight_engine::signals::{Fidelity, SignalStatus};

pub struct Opened {
    pub source: Box<dyn EventSource>,
    /// Why this backend runs: asked for, or what the automatic choice found (the other
    /// backend's failure included).
    pub reason: String,
    /// Each signal of `event_abi::kinds::SIGNALS`, as the backend that runs observes it.
    pub signals: Vec<SignalStatus>,
    /// For people: one line per signal that is not fully observed (rendered from
    /// `signals`; read the typed `signals` instead of parsing these).
    pub fidelity_notes: Vec<String>,
}

impl Opened {
    fn new(source: Box<dyn EventSource>, reason: String, signals: Vec<SignalStatus>) -> Self {
        Self {
            source,
            reason,
            fidelity_notes: fidelity_notes(&signals),
            signals,
        }
    }
}

/// One line per signal that is not fully observed.
pub fn fidelity_notes(signals: &[SignalStatus]) -> Vec<String> {
    signals
        .iter()
        .filter(|s| s.status != Fidelity::Full)
        .map(crate::render::signal_line)
        .collect()
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
        BackendChoice::Ebpf => {
            open_ebpf(args.transport).map(|o| o.because("asked for with --backend ebpf".into()))
        }
        BackendChoice::Kmod => {
            open_kmod().map(|o| o.because("asked for with --backend kmod".into()))
        }
        BackendChoice::Auto => match open_ebpf(args.transport) {
            Ok(opened) => Ok(opened
                .because("chosen automatically: the eBPF programs load and attach here".into())),
            Err(ebpf) => match open_kmod() {
                Ok(opened) => Ok(opened.because(fallback_reason(&ebpf))),
                Err(kmod) => Err(anyhow!(
                    "no kernel backend can run here:\n  ebpf: {ebpf:#}\n  kmod: {kmod:#}"
                )),
            },
        },
    }
}

/// Why the module runs after eBPF could not.
fn fallback_reason(ebpf: &anyhow::Error) -> String {
    format!(
        "chosen automatically: the eBPF backend cannot run here ({ebpf:#}); the ksight module is loaded"
    )
}

impl Opened {
    fn because(mut self, reason: String) -> Self {
        self.reason = reason;
        self
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
    let signals = source.fidelity();
    Ok(Opened::new(
        Box::new(source),
        "the eBPF programs load and attach here".into(),
        signals,
    ))
}

pub fn open_kmod() -> Result<Opened> {
    let source =
        KmodSource::open(KmodOptions::default()).context("opening the kernel-module backend")?;
    // Per signal, from the probes the module registered (its per-kind bits).
    let signals = source.fidelity();
    Ok(Opened::new(
        Box::new(source),
        "the ksight module is loaded".into(),
        signals,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_engine::signals::Signal;

    #[test]
    fn notes_are_rendered_from_the_typed_statuses() {
        let s = |signal, status| SignalStatus {
            signal,
            tracepoints: vec![],
            status,
        };
        let notes = fidelity_notes(&[
            s(Signal::Process, Fidelity::Full),
            s(Signal::Block, Fidelity::Unavailable("gone".into())),
        ]);
        assert_eq!(notes, ["block            unavailable: gone"]);
    }

    #[test]
    fn a_fallback_says_why_ebpf_could_not_run() {
        let e = anyhow!("permission denied").context("loading the eBPF backend");
        let r = fallback_reason(&e);
        assert!(
            r.contains("loading the eBPF backend: permission denied")
                && r.contains("ksight module is loaded"),
            "{r}"
        );
    }
}
