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
            open_ebpf_with(args).map(|o| o.because("asked for with --backend ebpf".into()))
        }
        BackendChoice::Kmod => {
            open_kmod_with(args).map(|o| o.because("asked for with --backend kmod".into()))
        }
        BackendChoice::Auto => match open_ebpf_with(args) {
            Ok(opened) => Ok(opened
                .because("chosen automatically: the eBPF programs load and attach here".into())),
            Err(ebpf) => match open_kmod_with(args) {
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

/// The eBPF backend with `transport` and every other setting at its default.
pub fn open_ebpf(transport: TransportChoice) -> Result<Opened> {
    open_ebpf_with(&CaptureArgs::new(BackendChoice::Ebpf, transport))
}

/// The backends' options from the capture settings: the snaplen, and the record kinds of
/// the enabled signals (the programs and probes of the others are not attached).
fn ebpf_options(args: &CaptureArgs) -> EbpfOptions {
    EbpfOptions {
        transport: match args.transport {
            TransportChoice::Auto => Transport::Auto,
            TransportChoice::Ringbuf => Transport::RingBuf,
            TransportChoice::Perf => Transport::PerfArray,
        },
        snaplen: args.snaplen,
        kinds: args.kinds,
        ..EbpfOptions::default()
    }
}

fn kmod_options(args: &CaptureArgs) -> KmodOptions {
    KmodOptions {
        kinds: args.kinds,
        snaplen: Some(args.snaplen),
        ..KmodOptions::default()
    }
}

pub fn open_ebpf_with(args: &CaptureArgs) -> Result<Opened> {
    if !has_bpf_capabilities() {
        bail!(
            "the eBPF backend needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8), \
             to load tracepoint programs"
        );
    }
    let source = EbpfSource::open(ebpf_options(args)).context("loading the eBPF backend")?;
    let signals = source.fidelity();
    Ok(Opened::new(
        Box::new(source),
        "the eBPF programs load and attach here".into(),
        signals,
    ))
}

/// The module's backend with every setting at its default.
pub fn open_kmod() -> Result<Opened> {
    open_kmod_with(&CaptureArgs::new(
        BackendChoice::Kmod,
        TransportChoice::Auto,
    ))
}

pub fn open_kmod_with(args: &CaptureArgs) -> Result<Opened> {
    let source =
        KmodSource::open(kmod_options(args)).context("opening the kernel-module backend")?;
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
    fn capture_settings_reach_both_backends() {
        let mut args = CaptureArgs::new(BackendChoice::Auto, TransportChoice::Perf);
        args.snaplen = 128;
        args.kinds = Some(1 << event_abi::kind::EXEC);
        let e = ebpf_options(&args);
        assert_eq!(
            (e.snaplen, e.kinds),
            (128, Some(1 << event_abi::kind::EXEC))
        );
        assert!(matches!(e.transport, Transport::PerfArray));
        let k = kmod_options(&args);
        assert_eq!(
            (k.snaplen, k.kinds),
            (Some(128), Some(1 << event_abi::kind::EXEC))
        );
        let d = CaptureArgs::new(BackendChoice::Auto, TransportChoice::Auto);
        assert_eq!(
            (d.snaplen, d.kinds),
            (event_abi::DEFAULT_SNAPLEN as u32, None)
        );
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
