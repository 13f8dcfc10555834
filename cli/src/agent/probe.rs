//! The host's answers to `choose`'s probes: facts from /proc and /sys and one trivial
//! `bpf()` call, and backends opened through `crate::backend::open`.

use super::choose::{BpfCallError, EbpfFacts, Probe};
use crate::args::{BackendChoice, CaptureArgs, TransportChoice};
use crate::backend::Opened;
use ksight_engine::signals::{Mode, Signal, SignalStatus};
use ksight_export::Signals;
use std::process::Command;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Probes this host. Cheap on purpose: `ksight_backend_ebpf::detect()` would parse BTF
/// and every tracepoint format (~200 ms) only for `open` to do it again.
/// Backends it opens capture with `capture`'s snaplen and record kinds.
pub struct HostProbe {
    pub capture: CaptureArgs,
}

impl Default for HostProbe {
    fn default() -> Self {
        Self {
            capture: CaptureArgs::new(BackendChoice::Auto, TransportChoice::Auto),
        }
    }
}

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

impl HostProbe {
    fn capture_args(&self, backend: BackendChoice, transport: TransportChoice) -> CaptureArgs {
        CaptureArgs {
            backend,
            transport,
            ..self.capture.clone()
        }
    }
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
        let opened = crate::backend::open(&self.capture_args(BackendChoice::Ebpf, transport))
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
        crate::backend::open(&self.capture_args(BackendChoice::Kmod, TransportChoice::Auto))
            .map_err(|e| format!("{e:#}"))
    }
}

/// Each signal's mode (full, degraded, unavailable, or disabled by the configuration),
/// from the typed statuses of the backend that runs (`backend::Opened::signals`).
pub fn modes(statuses: &[SignalStatus], enabled: &Signals) -> Vec<(Signal, Mode)> {
    enabled.modes(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_engine::signals::Fidelity;

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

    fn status(signal: Signal, status: Fidelity) -> SignalStatus {
        SignalStatus {
            signal,
            tracepoints: vec![],
            status,
        }
    }

    #[test]
    fn modes_come_from_the_typed_statuses() {
        let statuses = [
            status(Signal::Process, Fidelity::Full),
            status(Signal::Tcp, Fidelity::Full),
            status(Signal::TcpCloseStats, Fidelity::Degraded("no BTF".into())),
            status(Signal::TcpRetransmits, Fidelity::Full),
            status(Signal::TcpResets, Fidelity::Full),
            status(Signal::Block, Fidelity::Unavailable("gone".into())),
            status(Signal::SocketIo, Fidelity::Full),
        ];
        let got = modes(&statuses, &Signals::default());
        let got: Vec<(&str, &str)> = got.iter().map(|(s, m)| (s.name(), m.as_str())).collect();
        assert_eq!(
            got,
            [
                ("process", "full"),
                ("tcp", "full"),
                ("tcp_close_stats", "degraded"),
                ("tcp_retransmits", "full"),
                ("tcp_resets", "full"),
                ("block", "unavailable"),
                ("socket_io", "full")
            ]
        );
        let off = Signals {
            tcp: false,
            ..Default::default()
        };
        let got = modes(&statuses, &off);
        assert_eq!(got[1].1, Mode::Disabled);
        assert_eq!(got[2].1, Mode::Disabled);
    }

    #[test]
    fn the_signal_list_is_the_backends() {
        let names: Vec<&str> = ksight_backend_ebpf::detect()
            .signals
            .iter()
            .map(|s| s.name())
            .collect();
        let table: Vec<&str> = event_abi::SIGNALS.iter().map(|s| s.name).collect();
        assert_eq!(names, table);
        assert_eq!(
            table,
            [
                "process",
                "tcp",
                "tcp_close_stats",
                "tcp_retransmits",
                "tcp_resets",
                "block",
                "socket_io"
            ]
        );
    }

    /// With CAP_BPF or CAP_SYS_ADMIN (the tests run as root) the probe succeeds; without,
    /// it is EPERM unless the host lets unprivileged users create maps. And a thread under
    /// a seccomp filter that denies bpf() gets EPERM (filters are per thread).
    #[test]
    fn the_bpf_probe_answers_here() {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let caps = u64::from_str_radix(&status_field(&status, "CapEff:").unwrap(), 16).unwrap();
        let privileged = caps & (1 << 39 | 1 << 21) != 0; // CAP_BPF, CAP_SYS_ADMIN
        let unprivileged_ok = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .is_ok_and(|v| v.trim() == "0");
        match bpf_call() {
            Ok(()) => assert!(
                privileged || unprivileged_ok,
                "bpf() allowed without CAP_BPF"
            ),
            Err(e) => {
                assert!(!privileged, "bpf() fails with CAP_BPF: {e:?}");
                assert_eq!(e.errno, libc::EPERM, "{e:?}");
            }
        }
        let denied = std::thread::spawn(|| {
            let stmt = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
                code: code as u16,
                jt,
                jf,
                k,
            };
            // seccomp_data.nr at offset 0; bpf() → EPERM, everything else allowed.
            let filter = [
                stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
                stmt(
                    libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                    libc::SYS_bpf as u32,
                    0,
                    1,
                ),
                stmt(
                    libc::BPF_RET | libc::BPF_K,
                    libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                    0,
                    0,
                ),
                stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            // SAFETY: both calls affect this thread only (no SECCOMP_FILTER_FLAG_TSYNC);
            // the kernel copies the filter.
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
                assert_eq!(
                    libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog),
                    0
                );
            }
            bpf_call()
        })
        .join()
        .unwrap();
        let e = denied.expect_err("bpf() under a seccomp filter denying it");
        assert_eq!(
            (e.errno, e.message.as_str()),
            (libc::EPERM, "Operation not permitted")
        );
    }
}
