//! Which kernel backend to run, decided from probes of what this host allows — never from
//! version numbers. The decision is a pure function of the probes' answers: the probes are
//! a trait, so every branch is tested with injected answers, and the host implementation
//! (`probe.rs`) only gathers facts and opens backends.
//!
//! `auto`, in order:
//! 1. eBPF, unless this build lacks the programs or `bpf()` is refused — by missing
//!    capabilities, a seccomp filter or kernel lockdown, each named in the reason;
//! 2. without BTF eBPF runs degraded (no TCP byte counters at close), so the module, which
//!    is compiled against the running kernel, is preferred when it is loaded or
//!    `modprobe ksight` works;
//! 3. the programs are loaded and attached (ring buffer where the kernel has one, else the
//!    perf event array); a load or attach failure is a reason;
//! 4. otherwise the module: already loaded, or loaded now with `modprobe ksight`;
//! 5. otherwise an error listing every reason.

use crate::args::{BackendChoice, TransportChoice};
use std::fmt;

/// `lockdown` mode names as `/sys/kernel/security/lockdown` shows them.
pub const LOCKDOWN_CONFIDENTIALITY: &str = "confidentiality";

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const ENOSYS: i32 = 38;

/// Why a trivial `bpf()` call (creating a one-entry array map) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfCallError {
    pub errno: i32,
    pub message: String,
}

/// What the host says about eBPF, learned without loading any program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbpfFacts {
    /// This binary carries the compiled eBPF programs.
    pub programs_built: bool,
    /// A trivial `bpf()` call succeeded, or how it failed.
    pub bpf_call: Result<(), BpfCallError>,
    /// CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, are in the effective set.
    pub capabilities: bool,
    /// A seccomp filter is installed on this process (`Seccomp: 2`).
    pub seccomp_filter: bool,
    /// Kernel lockdown mode ("none", "integrity", "confidentiality"), if the kernel has it.
    pub lockdown: Option<String>,
    /// The kernel has BPF ring buffers (5.8+).
    pub ringbuf: bool,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// `kernel.perf_event_paranoid` is 3 or more and CAP_SYS_ADMIN is not effective: the
    /// Debian and Ubuntu kernels' patch then refuses perf events (how tracepoints are
    /// attached) with EACCES, whatever CAP_PERFMON says.
    pub perf_paranoid_denies: bool,
}

/// The probes `choose` consults, in the order it needs them; each is called at most once.
pub trait Probe {
    /// What an opened backend is (the host: a boxed event source).
    type Source;
    fn ebpf_facts(&mut self) -> EbpfFacts;
    /// Loads and attaches the programs.
    fn open_ebpf(&mut self, transport: TransportChoice) -> Result<Self::Source, String>;
    /// The module's device exists.
    fn kmod_loaded(&mut self) -> bool;
    /// `modprobe ksight`.
    fn modprobe(&mut self) -> Result<(), String>;
    fn open_kmod(&mut self) -> Result<Self::Source, String>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Ebpf,
    Kmod,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ebpf => "ebpf",
            Backend::Kmod => "kmod",
        }
    }
}

/// The backend that runs, and why.
pub struct Chosen<S> {
    pub source: S,
    pub backend: Backend,
    /// The eBPF transport, when eBPF runs.
    pub transport: Option<TransportChoice>,
    /// One sentence: why this backend.
    pub reason: String,
    /// What is degraded and why (missing BTF, perf array instead of ring buffer, …).
    pub notes: Vec<String>,
}

/// No backend can run: one reason per backend tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoBackend {
    pub reasons: Vec<String>,
}

impl fmt::Display for NoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no kernel backend can run here:")?;
        for r in &self.reasons {
            write!(f, "\n  - {r}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NoBackend {}

/// Why eBPF cannot even be tried, from the facts alone.
pub fn ebpf_blocker(f: &EbpfFacts) -> Option<String> {
    if !f.programs_built {
        return Some("this ksight was built without its eBPF programs".into());
    }
    let Err(e) = &f.bpf_call else {
        return None;
    };
    let detail = format!("{} (errno {})", e.message, e.errno);
    let denied = matches!(e.errno, EPERM | EACCES | ENOSYS);
    Some(if !f.capabilities {
        format!(
            "bpf() is denied: this process lacks CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): {detail}"
        )
    } else if f.seccomp_filter && denied {
        format!("bpf() is denied by a seccomp filter: {detail}")
    } else if f.lockdown.as_deref() == Some(LOCKDOWN_CONFIDENTIALITY) && denied {
        format!("bpf() is denied by kernel lockdown (confidentiality): {detail}")
    } else if e.errno == ENOSYS {
        format!("the kernel has no bpf() system call (CONFIG_BPF_SYSCALL): {detail}")
    } else {
        format!("bpf() fails: {detail}")
    })
}

fn transport_for(
    wanted: TransportChoice,
    f: &EbpfFacts,
    notes: &mut Vec<String>,
) -> Result<TransportChoice, String> {
    match (wanted, f.ringbuf) {
        (TransportChoice::Ringbuf, false) => Err(
            "transport = \"ringbuf\", but the kernel has no BPF ring buffer (Linux 5.8+)".into(),
        ),
        (TransportChoice::Auto | TransportChoice::Ringbuf, true) => Ok(TransportChoice::Ringbuf),
        (TransportChoice::Auto, false) => {
            notes.push(
                "no BPF ring buffer on this kernel: using the per-CPU perf event array".into(),
            );
            Ok(TransportChoice::Perf)
        }
        (TransportChoice::Perf, _) => Ok(TransportChoice::Perf),
    }
}

const NO_BTF: &str =
    "no BTF (/sys/kernel/btf/vmlinux): TCP byte counters at close are unavailable with eBPF";

fn load_failure(f: &EbpfFacts, error: &str) -> String {
    if f.perf_paranoid_denies {
        format!(
            "the eBPF programs cannot attach: kernel.perf_event_paranoid is 3 or more, with which \
             this kernel opens perf events (tracepoints) only for CAP_SYS_ADMIN: {error}"
        )
    } else if f.lockdown.as_deref() == Some(LOCKDOWN_CONFIDENTIALITY) {
        format!(
            "the eBPF programs fail to load under kernel lockdown (confidentiality forbids reading kernel memory from BPF): {error}"
        )
    } else {
        format!("the eBPF programs fail to load or attach: {error}")
    }
}

/// The module: loaded already, or through `modprobe ksight`. `Err` is the reason it
/// cannot run.
fn try_kmod<P: Probe>(probe: &mut P) -> Result<(P::Source, &'static str), String> {
    let how = if probe.kmod_loaded() {
        "the ksight module is loaded"
    } else {
        probe.modprobe().map_err(|e| {
            format!("kmod: the ksight module is not loaded and `modprobe ksight` failed: {e}")
        })?;
        "the ksight module was loaded with modprobe"
    };
    probe
        .open_kmod()
        .map(|s| (s, how))
        .map_err(|e| format!("kmod: {how}, but cannot be opened: {e}"))
}

pub fn choose<P: Probe>(
    wanted: BackendChoice,
    transport: TransportChoice,
    probe: &mut P,
) -> Result<Chosen<P::Source>, NoBackend> {
    let kmod_chosen = |source, reason: String, notes| Chosen {
        source,
        backend: Backend::Kmod,
        transport: None,
        reason,
        notes,
    };
    if wanted == BackendChoice::Kmod {
        return try_kmod(probe)
            .map(|(source, how)| {
                kmod_chosen(
                    source,
                    format!("configured (backend = \"kmod\"); {how}"),
                    vec![],
                )
            })
            .map_err(|reason| NoBackend {
                reasons: vec![reason],
            });
    }

    let facts = probe.ebpf_facts();
    let mut notes = Vec::new();
    let mut reasons = Vec::new();
    let mut kmod_tried = None;
    let ebpf_ok = match ebpf_blocker(&facts) {
        Some(why) => Err(why),
        None => transport_for(transport, &facts, &mut notes),
    };
    match ebpf_ok {
        Err(why) => reasons.push(format!("ebpf: {why}")),
        Ok(t) => {
            if wanted == BackendChoice::Auto && !facts.btf {
                // Full fidelity from the module beats degraded eBPF.
                match try_kmod(probe) {
                    Ok((source, how)) => {
                        return Ok(kmod_chosen(
                            source,
                            format!(
                                "eBPF would run without BTF (TCP byte counters at close unavailable); {how}"
                            ),
                            vec![],
                        ));
                    }
                    Err(why) => kmod_tried = Some(why),
                }
            }
            match probe.open_ebpf(t) {
                Ok(source) => {
                    if !facts.btf {
                        notes.push(NO_BTF.into());
                    }
                    let via = if t == TransportChoice::Perf {
                        "perf event array"
                    } else {
                        "BPF ring buffer"
                    };
                    let reason = match (wanted, &kmod_tried) {
                        (BackendChoice::Ebpf, _) => {
                            format!(
                                "configured (backend = \"ebpf\"); the programs load and attach ({via})"
                            )
                        }
                        (_, Some(kmod)) => format!(
                            "eBPF programs load and attach ({via}), without BTF; the module is not available ({kmod})"
                        ),
                        _ => format!("eBPF programs load and attach ({via})"),
                    };
                    return Ok(Chosen {
                        source,
                        backend: Backend::Ebpf,
                        transport: Some(t),
                        reason,
                        notes,
                    });
                }
                Err(e) => reasons.push(format!("ebpf: {}", load_failure(&facts, &e))),
            }
        }
    }
    if wanted == BackendChoice::Ebpf {
        return Err(NoBackend { reasons });
    }
    let kmod = match kmod_tried {
        Some(why) => Err(why),
        None => try_kmod(probe),
    };
    match kmod {
        Ok((source, how)) => {
            let ebpf = reasons.join("; ");
            Ok(kmod_chosen(
                source,
                format!("eBPF cannot run ({ebpf}); {how}"),
                vec![],
            ))
        }
        Err(why) => {
            reasons.push(why);
            Err(NoBackend { reasons })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Injected answers; records which probes ran.
    struct Fake {
        facts: EbpfFacts,
        open_ebpf: Result<(), String>,
        kmod_loaded: bool,
        modprobe: Result<(), String>,
        open_kmod: Result<(), String>,
        calls: Vec<String>,
    }

    impl Fake {
        /// A host where everything works.
        fn good() -> Self {
            Self {
                facts: EbpfFacts {
                    programs_built: true,
                    bpf_call: Ok(()),
                    capabilities: true,
                    seccomp_filter: false,
                    lockdown: Some("none".into()),
                    ringbuf: true,
                    btf: true,
                    perf_paranoid_denies: false,
                },
                open_ebpf: Ok(()),
                kmod_loaded: false,
                modprobe: Err("modprobe: FATAL: Module ksight not found".into()),
                open_kmod: Ok(()),
                calls: Vec::new(),
            }
        }

        fn denied(mut self, errno: i32) -> Self {
            self.facts.bpf_call = Err(BpfCallError {
                errno,
                message: "Operation not permitted".into(),
            });
            self
        }

        fn run(&mut self, wanted: BackendChoice) -> Result<Chosen<&'static str>, NoBackend> {
            choose(wanted, TransportChoice::Auto, self)
        }
    }

    impl Probe for Fake {
        type Source = &'static str;
        fn ebpf_facts(&mut self) -> EbpfFacts {
            self.calls.push("facts".into());
            self.facts.clone()
        }
        fn open_ebpf(&mut self, t: TransportChoice) -> Result<&'static str, String> {
            self.calls.push(format!("open_ebpf {t:?}"));
            self.open_ebpf.clone().map(|()| "ebpf source")
        }
        fn kmod_loaded(&mut self) -> bool {
            self.calls.push("kmod_loaded".into());
            self.kmod_loaded
        }
        fn modprobe(&mut self) -> Result<(), String> {
            self.calls.push("modprobe".into());
            self.modprobe.clone()
        }
        fn open_kmod(&mut self) -> Result<&'static str, String> {
            self.calls.push("open_kmod".into());
            self.open_kmod.clone().map(|()| "kmod source")
        }
    }

    fn chosen(r: Result<Chosen<&'static str>, NoBackend>) -> Chosen<&'static str> {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn auto_takes_ebpf_with_the_ring_buffer_and_never_touches_the_module() {
        let mut p = Fake::good();
        let c = chosen(p.run(BackendChoice::Auto));
        assert_eq!((c.backend, c.source), (Backend::Ebpf, "ebpf source"));
        assert_eq!(c.transport, Some(TransportChoice::Ringbuf));
        assert_eq!(c.reason, "eBPF programs load and attach (BPF ring buffer)");
        assert!(c.notes.is_empty());
        assert_eq!(p.calls, ["facts", "open_ebpf Ringbuf"]);
    }

    #[test]
    fn auto_without_ring_buffer_uses_the_perf_array() {
        let mut p = Fake::good();
        p.facts.ringbuf = false;
        let c = chosen(p.run(BackendChoice::Auto));
        assert_eq!(c.transport, Some(TransportChoice::Perf));
        assert!(c.reason.contains("perf event array"), "{}", c.reason);
        assert!(c.notes[0].contains("no BPF ring buffer"), "{:?}", c.notes);
        assert_eq!(p.calls, ["facts", "open_ebpf Perf"]);
    }

    #[test]
    fn a_ring_buffer_asked_for_but_missing_is_a_reason() {
        let mut p = Fake::good();
        p.facts.ringbuf = false;
        let e = choose(BackendChoice::Ebpf, TransportChoice::Ringbuf, &mut p)
            .err()
            .unwrap();
        assert!(e.reasons[0].contains("no BPF ring buffer"), "{e}");
        assert_eq!(p.calls, ["facts"]);
        let mut p = Fake::good();
        let c = chosen(choose(BackendChoice::Auto, TransportChoice::Perf, &mut p));
        assert_eq!(c.transport, Some(TransportChoice::Perf));
    }

    #[test]
    fn bpf_denied_by_seccomp_falls_back_to_the_loaded_module() {
        let mut p = Fake::good().denied(EPERM);
        p.facts.seccomp_filter = true;
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Auto));
        assert_eq!((c.backend, c.source), (Backend::Kmod, "kmod source"));
        assert!(
            c.reason.contains("denied by a seccomp filter"),
            "{}",
            c.reason
        );
        assert!(
            c.reason.contains("the ksight module is loaded"),
            "{}",
            c.reason
        );
        assert_eq!(p.calls, ["facts", "kmod_loaded", "open_kmod"]);
    }

    #[test]
    fn bpf_denied_by_lockdown_or_capabilities_is_named() {
        let mut p = Fake::good().denied(EPERM);
        p.facts.lockdown = Some(LOCKDOWN_CONFIDENTIALITY.into());
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Auto));
        assert!(
            c.reason.contains("kernel lockdown (confidentiality)"),
            "{}",
            c.reason
        );

        let mut p = Fake::good().denied(EPERM);
        p.facts.capabilities = false;
        p.facts.seccomp_filter = true;
        p.modprobe = Ok(());
        let c = chosen(p.run(BackendChoice::Auto));
        assert_eq!(c.backend, Backend::Kmod);
        assert!(c.reason.contains("lacks CAP_BPF"), "{}", c.reason);
        assert!(c.reason.contains("loaded with modprobe"), "{}", c.reason);
        assert_eq!(p.calls, ["facts", "kmod_loaded", "modprobe", "open_kmod"]);

        let p = Fake::good().denied(ENOSYS);
        assert!(
            ebpf_blocker(&p.facts)
                .unwrap()
                .contains("no bpf() system call")
        );
        let p = Fake::good().denied(22);
        assert!(ebpf_blocker(&p.facts).unwrap().starts_with("bpf() fails: "));
    }

    #[test]
    fn programs_missing_from_the_build_are_a_reason() {
        let mut p = Fake::good();
        p.facts.programs_built = false;
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Auto));
        assert!(
            c.reason.contains("built without its eBPF programs"),
            "{}",
            c.reason
        );
        assert!(!p.calls.iter().any(|c| c.starts_with("open_ebpf")));
    }

    #[test]
    fn programs_that_fail_to_load_fall_back_to_modprobe() {
        let mut p = Fake::good();
        p.open_ebpf = Err("verifier rejected ks_exec".into());
        p.modprobe = Ok(());
        let c = chosen(p.run(BackendChoice::Auto));
        assert_eq!(c.backend, Backend::Kmod);
        assert!(
            c.reason
                .contains("fail to load or attach: verifier rejected ks_exec"),
            "{}",
            c.reason
        );
        // Debian's perf_event_paranoid = 3 without CAP_SYS_ADMIN is named.
        let mut p = Fake::good();
        p.facts.perf_paranoid_denies = true;
        p.open_ebpf = Err("attaching ks_exec: Permission denied (os error 13)".into());
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Auto));
        assert!(c.reason.contains("perf_event_paranoid"), "{}", c.reason);
        // Under lockdown the failure is attributed to it.
        let mut p = Fake::good();
        p.facts.lockdown = Some(LOCKDOWN_CONFIDENTIALITY.into());
        p.open_ebpf = Err("EPERM".into());
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Auto));
        assert!(c.reason.contains("under kernel lockdown"), "{}", c.reason);
    }

    #[test]
    fn without_btf_the_module_is_preferred_when_available() {
        let mut p = Fake::good();
        p.facts.btf = false;
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Auto));
        assert_eq!(c.backend, Backend::Kmod);
        assert!(c.reason.contains("without BTF"), "{}", c.reason);
        assert_eq!(p.calls, ["facts", "kmod_loaded", "open_kmod"]);
    }

    #[test]
    fn without_btf_and_module_ebpf_runs_degraded() {
        let mut p = Fake::good();
        p.facts.btf = false;
        let c = chosen(p.run(BackendChoice::Auto));
        assert_eq!(c.backend, Backend::Ebpf);
        assert!(
            c.notes.iter().any(|n| n.contains("no BTF")),
            "{:?}",
            c.notes
        );
        assert!(
            c.reason.contains("the module is not available"),
            "{}",
            c.reason
        );
        // The module's failure is not retried.
        assert_eq!(
            p.calls,
            ["facts", "kmod_loaded", "modprobe", "open_ebpf Ringbuf"]
        );
        // Configured eBPF never consults the module.
        let mut p = Fake::good();
        p.facts.btf = false;
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Ebpf));
        assert_eq!(c.backend, Backend::Ebpf);
        assert!(c.reason.starts_with("configured"), "{}", c.reason);
        assert_eq!(p.calls, ["facts", "open_ebpf Ringbuf"]);
    }

    #[test]
    fn nothing_works_lists_every_reason() {
        let mut p = Fake::good().denied(EPERM);
        p.facts.seccomp_filter = true;
        let e = p.run(BackendChoice::Auto).err().unwrap();
        assert_eq!(e.reasons.len(), 2, "{e}");
        assert!(
            e.reasons[0].starts_with("ebpf: bpf() is denied by a seccomp filter"),
            "{e}"
        );
        assert!(
            e.reasons[1].contains("`modprobe ksight` failed: modprobe: FATAL"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("no kernel backend can run here:\n  - ebpf:")
        );

        // No BTF, module unavailable and the programs fail: the module is tried once.
        let mut p = Fake::good();
        p.facts.btf = false;
        p.open_ebpf = Err("attach failed".into());
        let e = p.run(BackendChoice::Auto).err().unwrap();
        assert_eq!(e.reasons.len(), 2, "{e}");
        assert_eq!(p.calls.iter().filter(|c| *c == "modprobe").count(), 1);
    }

    #[test]
    fn configured_ebpf_fails_without_trying_the_module() {
        let mut p = Fake::good();
        p.open_ebpf = Err("attach failed".into());
        p.kmod_loaded = true;
        let e = p.run(BackendChoice::Ebpf).err().unwrap();
        assert_eq!(
            e.reasons,
            ["ebpf: the eBPF programs fail to load or attach: attach failed"]
        );
        assert!(
            !p.calls
                .iter()
                .any(|c| c.contains("kmod") || c == "modprobe")
        );
    }

    #[test]
    fn configured_kmod_loads_the_module_or_says_why_not() {
        let mut p = Fake::good();
        p.kmod_loaded = true;
        let c = chosen(p.run(BackendChoice::Kmod));
        assert_eq!(c.backend, Backend::Kmod);
        assert_eq!(
            c.reason,
            "configured (backend = \"kmod\"); the ksight module is loaded"
        );
        assert_eq!(p.calls, ["kmod_loaded", "open_kmod"]);

        let mut p = Fake::good();
        p.modprobe = Ok(());
        let c = chosen(p.run(BackendChoice::Kmod));
        assert!(c.reason.contains("loaded with modprobe"));

        let mut p = Fake::good();
        let e = p.run(BackendChoice::Kmod).err().unwrap();
        assert!(
            e.reasons[0].contains("not loaded and `modprobe ksight` failed"),
            "{e}"
        );

        let mut p = Fake::good();
        p.kmod_loaded = true;
        p.open_kmod = Err("ABI major 2, this ksight reads 1".into());
        let e = p.run(BackendChoice::Kmod).err().unwrap();
        assert_eq!(
            e.reasons,
            [
                "kmod: the ksight module is loaded, but cannot be opened: ABI major 2, this ksight reads 1"
            ]
        );
    }
}
