//! The host's answers to `choose`'s probes: facts from /proc and /sys and one trivial
//! `bpf()` call, and backends opened through `crate::backend::open`.

use super::choose::{BpfCallError, EbpfFacts, Probe};
use crate::args::{BackendChoice, CaptureArgs, TransportChoice};
use crate::backend::Opened;
use std::process::Command;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Probes this host. Cheap on purpose: `ksight_backend_ebpf::detect()` would parse BTF
/// and every tracepoint format (~200 ms) only for `open` to do it again.
#[derive(Default)]
pub struct HostProbe;

/// The signals the backends report fidelity for (`ksight_backend_ebpf`'s list).
pub const SIGNALS: [&str; 6] = [
    "process",
    "tcp",
    "tcp_close_stats",
    "tcp_retransmits",
    "tcp_resets",
    "block",
];

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

fn status_field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
}

/// The mode in brackets in `/sys/kernel/security/lockdown`: "none [integrity] confidentiality".
pub fn lockdown_mode(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// Creates (and closes) a one-entry BPF array map: the cheapest question `bpf()` answers.
fn bpf_call() -> Result<(), BpfCallError> {
    map_create(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
}

/// Whether the kernel creates a BPF ring buffer (Linux 5.8+).
fn ringbuf_supported() -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, page).is_ok()
}

fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<(), BpfCallError> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    // map_type, key_size, value_size, max_entries; the rest of bpf_attr zeroed.
    let mut attr = [0u32; 16];
    attr[..4].copy_from_slice(&[map_type, key_size, value_size, max_entries]);
    // SAFETY: attr is a valid, zero-padded bpf_attr prefix of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let text = e.to_string();
        return Err(BpfCallError {
            errno: e.raw_os_error().unwrap_or(0),
            // "Operation not permitted (os error 1)": the errno is reported on its own.
            message: text.split(" (os error").next().unwrap_or(&text).to_string(),
        });
    }
    // SAFETY: fd is the map we just created and own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn capture_args(backend: BackendChoice, transport: TransportChoice) -> CaptureArgs {
    CaptureArgs { backend, transport }
}

impl Probe for HostProbe {
    type Source = Opened;

    fn ebpf_facts(&mut self) -> EbpfFacts {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let caps = status_field(&status, "CapEff:")
            .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
            .unwrap_or(0);
        let has = |cap: u32| caps & (1u64 << cap) != 0;
        let bpf_call = bpf_call();
        EbpfFacts {
            // A build without the programs is refused by the first step of opening the
            // backend, with that reason; asking earlier would cost a full `detect()`.
            programs_built: true,
            ringbuf: bpf_call.is_ok() && ringbuf_supported(),
            bpf_call,
            capabilities: has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)),
            seccomp_filter: status_field(&status, "Seccomp:").as_deref() == Some("2"),
            lockdown: std::fs::read_to_string("/sys/kernel/security/lockdown")
                .ok()
                .and_then(|t| lockdown_mode(&t)),
            btf: std::path::Path::new(VMLINUX_BTF).exists(),
            perf_paranoid_denies: !has(CAP_SYS_ADMIN)
                && std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .is_some_and(|p| p >= 3),
        }
    }

    fn open_ebpf(&mut self, transport: TransportChoice) -> Result<Opened, String> {
        let started = std::time::Instant::now();
        let opened = crate::backend::open(&capture_args(BackendChoice::Ebpf, transport))
            .map_err(|e| format!("{e:#}"));
        super::log::debug!(
            "eBPF backend opened in {} ms",
            started.elapsed().as_millis()
        );
        opened
    }

    fn kmod_loaded(&mut self) -> bool {
        std::path::Path::new(ksight_backend_kmod::DEVICE).exists()
    }

    fn modprobe(&mut self) -> Result<(), String> {
        let out = Command::new("modprobe")
            .arg("ksight")
            .output()
            .map_err(|e| format!("cannot run modprobe: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn open_kmod(&mut self) -> Result<Opened, String> {
        crate::backend::open(&capture_args(BackendChoice::Kmod, TransportChoice::Auto))
            .map_err(|e| format!("{e:#}"))
    }
}

/// Each signal's mode ("full", "degraded", "unavailable", or "disabled" by the
/// configuration), from the notes `backend::open` returns — one `render::signal_line` per
/// signal that is not full; a signal named there but missing from `names` is added.
pub fn signal_modes(
    names: &[&str],
    notes: &[String],
    enabled: &ksight_engine::export::Signals,
) -> Vec<(String, String)> {
    let mut all: Vec<&str> = names.to_vec();
    for note in notes {
        if let Some(name) = note.split_whitespace().next()
            && !all.contains(&name)
            && note
                .split_whitespace()
                .nth(1)
                .is_some_and(|m| m == "degraded:" || m == "unavailable:")
        {
            all.push(name);
        }
    }
    all.iter()
        .map(|&name| {
            let mode = if !enabled.wants_signal(name) {
                "disabled"
            } else {
                notes
                    .iter()
                    .find_map(|n| {
                        let mut words = n.split_whitespace();
                        (words.next() == Some(name))
                            .then(|| words.next().unwrap_or("").trim_end_matches(':'))
                    })
                    .filter(|m| ["degraded", "unavailable"].contains(m))
                    .unwrap_or("full")
            };
            (name.to_string(), mode.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_backend_ebpf::{Fidelity, SignalStatus};
    use ksight_engine::export::Signals;

    #[test]
    fn lockdown_modes() {
        assert_eq!(
            lockdown_mode("[none] integrity confidentiality\n").as_deref(),
            Some("none")
        );
        assert_eq!(
            lockdown_mode("none integrity [confidentiality]\n").as_deref(),
            Some("confidentiality")
        );
        assert_eq!(lockdown_mode(""), None);
    }

    #[test]
    fn signal_modes_read_the_notes_render_writes() {
        let status = |signal, status| SignalStatus {
            signal,
            tracepoints: vec![],
            status,
        };
        let notes = vec![
            crate::render::signal_line(&status(
                "tcp_close_stats",
                Fidelity::Degraded("no BTF".into()),
            )),
            crate::render::signal_line(&status("block", Fidelity::Unavailable("gone".into()))),
        ];
        let names = ["process", "tcp", "tcp_close_stats", "block"];
        let modes = signal_modes(&names, &notes, &Signals::default());
        let modes: Vec<(&str, &str)> = modes
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            modes,
            [
                ("process", "full"),
                ("tcp", "full"),
                ("tcp_close_stats", "degraded"),
                ("block", "unavailable")
            ]
        );
        let off = Signals {
            tcp: false,
            ..Default::default()
        };
        let modes = signal_modes(&names, &notes, &off);
        assert_eq!(modes[1].1, "disabled");
        assert_eq!(modes[2].1, "disabled");
    }

    #[test]
    fn the_signal_list_is_the_backends() {
        let names: Vec<&str> = ksight_backend_ebpf::detect()
            .signals
            .iter()
            .map(|s| s.signal)
            .collect();
        assert_eq!(names, SIGNALS);
        // A signal only the notes know of is still reported.
        let notes = vec!["sched            unavailable: no tracepoint".to_string()];
        let modes = signal_modes(&SIGNALS, &notes, &Signals::default());
        assert_eq!(
            modes.last().unwrap(),
            &("sched".to_string(), "unavailable".to_string())
        );
    }

    #[test]
    fn the_bpf_probe_answers_here() {
        // Root or not, the call returns: success or an errno, never a crash.
        match bpf_call() {
            Ok(()) => {}
            Err(e) => assert!(e.errno > 0, "{e:?}"),
        }
    }
}
