//! The VM tests' tool inside the guest, `kmod-vm` (`cargo xtask vm` builds it, copies it
//! into the guest and boots it; tests/vm/guest-init.sh runs it).
//!
//! ```text
//! kmod-vm stat --backend kmod|ebpf|both [--costs] [-o FILE] -- CMD ARGS...
//!     Captures CMD (in a cgroup of its own, like `ksight stat`) with one or both
//!     backends at once; writes the snapshot(s) as JSON. With `both`: prints the
//!     parity table (every exact aggregate equal, time-derived ones within the
//!     measured timestamp skew plus histogram bucket precision) and the record-level
//!     comparison (records byte-identical but for the timestamp); exits 1 on any
//!     difference. `--costs` also prints per-kind kernel-side cost of each backend.
//! kmod-vm truth FILE DEVICE SENT RECEIVED [RETRANSMITTED_SEGMENTS]
//!     Checks a snapshot against the ground-truth workload's exact values: the test
//!     kit's `truth::check`, which tests/host_ebpf.rs runs too (here no block device
//!     but DEVICE may appear). The kernel's retransmitted segments come from FILE
//!     (`kernel_tcp_retrans_segs`, written by `stat`) or the last argument.
//! kmod-vm requests-truth FILE
//!     Checks the snapshot(s) in FILE (one backend's, or `stat --backend both`'s pair,
//!     each checked) against `ksight-workload requests`: the test kit's
//!     `truth::check_requests`, which tests/host_ebpf.rs runs too (every HTTP, Redis and
//!     PostgreSQL request once per end, exactly; every byte of each connection; nothing
//!     malformed, unmatched or unanswered; the edges).
//! kmod-vm flood [SECONDS]
//!     With the module loaded with tiny rings: floods it without reading, then drains;
//!     checks lost > 0, delivered == emitted per ring, no malformed record, timestamps
//!     in order within each ring.
//! kmod-vm hold SECONDS
//!     Opens the device and reads (discarding) for SECONDS.
//! kmod-vm busy
//!     Opens the device, checks that a second open fails with Busy.
//! kmod-vm filter SENT RECEIVED
//!     Both backends at once, the same cgroup ignore set pushed into each: cgroups A and
//!     B run `ksight-workload procs-tcp SENT RECEIVED`; unfiltered first (A's records
//!     counted), then with A ignored (no record of A from either backend, B's counts
//!     equal A's, each kernel's filtered counter equal to A's records, the two record
//!     logs byte-identical but for timestamps), then with the set cleared at run time
//!     (A's records back). Then the module's own checks, raw ioctls on the device:
//!     16384 ids accepted; 16385 ids and `_pad` != 0 EINVAL, a bad `ids_ptr` EFAULT,
//!     each leaving the installed set filtering A; count 0 clears. Closing the device
//!     with A ignored clears the set (the reopened reader gets A's records, filters
//!     nothing). `KSIGHT_IOC_STATS_V1` answers the first 1056 bytes of
//!     `KSIGHT_IOC_STATS` and writes nothing past them. Exits 1 on any difference.
//! kmod-vm sockio --backend kmod|both [--snaplen N]
//!     Runs `kmod-vm sockio-workload` (TCP and UDP over IPv4 and IPv6 with every traced
//!     call, sendmmsg/recvmmsg past MAX_MMSG, sendfile, splice; file and pipe I/O that
//!     must record nothing) and compares the socket I/O records of its pid with the
//!     records its calls must produce, exactly (bytes, payload, tuple, flags, message
//!     index); every TCP socket's id is that of its TCP state records. With `both`, the
//!     two backends' records are byte-identical but for `ts_ns` and `duration_ns`. Then,
//!     with socket I/O not selected, its probes are not registered and nothing is
//!     recorded; selected during the capture, they are registered at once.
//! kmod-vm sockio-workload FILE SNAPLEN
//!     The workload: makes the calls and writes the expected records to FILE.
//! ```

use anyhow::{Context, Result, anyhow, bail, ensure};
use event_abi::{EventHeader, kind};
use ksight_backend_ebpf::{EbpfOptions, EbpfSource};
use ksight_backend_kmod::{KmodError, KmodOptions, KmodSource, uapi};
use ksight_engine::decode::decode;
use ksight_engine::names::HostNames;
use ksight_engine::parity::{RecordComparison, RecordLog, compare_logs, compare_snapshots};
use ksight_engine::{Engine, EventSource, RawBatch, Scope, Snapshot, monotonic_ns};
use ksight_testkit::TestCgroup;
use ksight_testkit::truth::{self, OtherDevices, Truth, tcp_retrans_segs};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod sockio;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kmod-vm: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<i32> {
    match args.first().map(String::as_str) {
        Some("stat") => stat(&args[1..]),
        Some("truth") => {
            ensure!(
                args.len() == 5 || args.len() == 6,
                "usage: kmod-vm truth FILE DEVICE SENT RECEIVED [RETRANSMITTED_SEGMENTS]"
            );
            truth(
                Path::new(&args[1]),
                &args[2],
                args[3].parse()?,
                args[4].parse()?,
                args.get(5).map(|n| n.parse()).transpose()?,
            )
        }
        Some("requests-truth") => {
            ensure!(args.len() == 2, "usage: kmod-vm requests-truth FILE");
            requests_truth(Path::new(&args[1]))
        }
        Some("flood") => flood(args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2.0)),
        Some("hold") => hold(args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1.0)),
        Some("busy") => busy(),
        Some("filter") => {
            ensure!(args.len() == 3, "usage: kmod-vm filter SENT RECEIVED");
            filter(&args[1], &args[2])
        }
        Some("sockio") => sockio::sockio(&args[1..]),
        Some("sockio-workload") => sockio::workload(&args[1..]),
        _ => bail!(
            "usage: kmod-vm stat|truth|requests-truth|flood|hold|busy|filter|sockio|sockio-workload \
             (see the source)"
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------

enum Source {
    Kmod(KmodSource),
    Ebpf(Box<EbpfSource>),
}

impl Source {
    fn get(&mut self) -> &mut dyn EventSource {
        match self {
            Source::Kmod(s) => s,
            Source::Ebpf(s) => s.as_mut(),
        }
    }
}

struct Capture {
    names: Vec<&'static str>,
    snapshots: Vec<Snapshot>,
    logs: Vec<RecordLog>,
    window: (u64, u64),
    status: std::process::ExitStatus,
    costs: Vec<String>,
}

fn stat(args: &[String]) -> Result<i32> {
    let mut backend = "kmod".to_string();
    let mut output = None;
    let mut costs = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--backend" => {
                backend = args
                    .get(i + 1)
                    .cloned()
                    .ok_or_else(|| anyhow!("--backend what?"))?;
                i += 2;
            }
            "-o" => {
                output = Some(PathBuf::from(
                    args.get(i + 1).ok_or_else(|| anyhow!("-o what?"))?,
                ));
                i += 2;
            }
            "--costs" => {
                costs = true;
                i += 1;
            }
            "--" => {
                i += 1;
                break;
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let command = &args[i..];
    ensure!(!command.is_empty(), "no command after --");
    let retrans_before = tcp_retrans_segs().context("/proc/net/snmp")?;
    let cap = capture(&backend, costs, command)?;
    let value = if cap.snapshots.len() == 1 {
        let mut v = serde_json::to_value(&cap.snapshots[0])?;
        // The kernel's own count, for `truth`: nothing else uses TCP in the guest.
        v["kernel_tcp_retrans_segs"] =
            json!(tcp_retrans_segs().context("/proc/net/snmp")? - retrans_before);
        v
    } else {
        json!({ cap.names[0]: cap.snapshots[0], cap.names[1]: cap.snapshots[1] })
    };
    if let Some(path) = &output {
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")?;
    }
    for c in &cap.costs {
        println!("{c}");
    }
    let mut code = cap.status.code().unwrap_or(1);
    if cap.snapshots.len() == 2 {
        let RecordComparison {
            matched,
            only_a: only_k,
            only_b: only_e,
            skew_ns: skew,
            unmatched,
        } = compare_logs(
            &cap.logs[0],
            &cap.logs[1],
            ("kmod", "ebpf"),
            cap.window.0,
            cap.window.1,
        );
        println!(
            "records: {matched} byte-identical but for the timestamp, {only_k} only from kmod, \
             {only_e} only from ebpf; timestamp skew between backends at most {:.1} us",
            skew as f64 / 1000.0
        );
        for u in unmatched.iter().take(20) {
            println!("  unmatched: {u}");
        }
        let a = serde_json::to_value(&cap.snapshots[0])?;
        let b = serde_json::to_value(&cap.snapshots[1])?;
        let report = compare_snapshots(&a, &b, ("kmod", "ebpf"), skew);
        print!("{}", report.table);
        println!(
            "parity: {} values compared, {} exact, {} within tolerance, {} different",
            report.compared,
            report.exact,
            report.tolerated,
            report.different.len()
        );
        for d in &report.different {
            println!("  DIFFERENT {d}");
        }
        if !report.different.is_empty() || only_k > 0 || only_e > 0 {
            code = 1;
        }
    }
    Ok(code)
}

fn capture(backend: &str, costs: bool, command: &[String]) -> Result<Capture> {
    let names: Vec<&'static str> = match backend {
        "kmod" => vec!["kmod"],
        "ebpf" => vec!["ebpf"],
        "both" => vec!["kmod", "ebpf"],
        other => bail!("--backend {other}: kmod, ebpf or both"),
    };
    let _bpf_stats = if costs && names.contains(&"ebpf") {
        Some(ksight_backend_ebpf::enable_run_time_stats().context("enabling BPF statistics")?)
    } else {
        None
    };
    // eBPF first: its programs are attached before the module's probes start, so from
    // the module's start on both see everything.
    let mut shared: Vec<Arc<Mutex<Source>>> = Vec::new();
    for name in names.iter().rev() {
        shared.push(Arc::new(Mutex::new(match *name {
            "kmod" => Source::Kmod(
                KmodSource::open(KmodOptions::default()).context("opening the kmod backend")?,
            ),
            _ => Source::Ebpf(Box::new(
                EbpfSource::open(EbpfOptions::default()).context("opening the eBPF backend")?,
            )),
        })));
    }
    shared.reverse();
    let started = monotonic_ns();

    // The command's cgroup: attribution as `ksight stat` does it.
    let cgroup = TestCgroup::create("kmod-vm").ok();
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    let mut cmd = match &cgroup {
        Some(cg) => cg.command(&command[0], &args),
        None => {
            let mut cmd = std::process::Command::new(&command[0]);
            cmd.args(&args);
            cmd
        }
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", command[0]))?;
    let mut scope = Scope::default();
    scope.pids.insert(child.id());
    if let Some(cg) = &cgroup {
        scope.cgroups.insert(cg.id);
    }
    let engines: Vec<Engine> = names
        .iter()
        .map(|n| Engine::new(n, Some(scope.clone())))
        .collect();
    let logs = Arc::new(Mutex::new(
        names
            .iter()
            .map(|_| RecordLog::default())
            .collect::<Vec<_>>(),
    ));
    let tap_logs = logs.clone();
    let sources = shared
        .iter()
        .map(|s| Box::new(Shared(s.clone())) as Box<dyn EventSource>)
        .collect();
    // The same capture driver as `ksight stat` and `verify`.
    let mut capture =
        ksight_engine::Capture::start(sources, engines).tapped(Box::new(move |i, batch| {
            tap_logs.lock().expect("record log")[i].add(batch, 0)
        }));
    let status = loop {
        capture.pump(Instant::now() + Duration::from_millis(20))?;
        if let Some(status) = child.try_wait()? {
            break status;
        }
    };
    // What the kernel finishes after the command exits (softirq TCP transitions,
    // completions) is part of the comparison too.
    capture.pump(Instant::now() + Duration::from_millis(500))?;
    let done = capture.finish()?;
    ensure!(
        done.drained,
        "a backend did not deliver its records within the drain timeout"
    );
    drop(done.sources);

    let mut cost_lines = Vec::new();
    if costs {
        let sources: Vec<_> = shared.iter().map(|s| s.lock().expect("source")).collect();
        cost_lines = cost_table(&sources)?;
    }
    let snapshots = done
        .engines
        .iter()
        .map(|e| e.snapshot(&HostNames { live: true }))
        .collect();
    let logs = std::mem::take(&mut *logs.lock().expect("record log"));
    Ok(Capture {
        names,
        snapshots,
        logs,
        // Exact: both attached at `started`; both drained past the stop.
        window: (started, done.stopped_at_ns),
        status,
        costs: cost_lines,
    })
}

/// A source the capture driver reads while this tool keeps a handle to it (for the cost
/// table after the capture).
struct Shared(Arc<Mutex<Source>>);

impl EventSource for Shared {
    fn name(&self) -> &str {
        match &*self.0.lock().expect("source") {
            Source::Kmod(_) => "kmod",
            Source::Ebpf(_) => "ebpf",
        }
    }

    fn poll(
        &mut self,
        out: &mut RawBatch,
        timeout: Duration,
    ) -> Result<ksight_engine::Poll, ksight_engine::SourceError> {
        self.0.lock().expect("source").get().poll(out, timeout)
    }

    fn counters(&self) -> ksight_engine::SourceCounters {
        self.0.lock().expect("source").get().counters()
    }
}

/// Per kind: the module's timed probe runs and the BPF programs' run-time statistics.
fn cost_table(sources: &[std::sync::MutexGuard<'_, Source>]) -> Result<Vec<String>> {
    let mut kmod = None;
    let mut ebpf = None;
    for s in sources {
        match &**s {
            Source::Kmod(k) => kmod = Some(k.stats()?),
            Source::Ebpf(e) => ebpf = Some(e.program_stats()),
        }
    }
    let (Some(kmod), Some(ebpf)) = (kmod, ebpf) else {
        return Ok(vec!["costs: need both backends".into()]);
    };
    let mut lines = vec![format!(
        "COST {:<20} {:>9} {:>12} {:>9} {:>12} {:>7}",
        "kind", "kmod runs", "kmod ns/run", "ebpf runs", "ebpf ns/run", "ratio"
    )];
    let (mut kt, mut kn, mut et, mut en) = (0u64, 0u64, 0u64, 0u64);
    for (k, name, tp) in event_abi::KINDS
        .iter()
        .map(|d| (d.kind, d.name, d.tracepoint.name))
    {
        let (kr, kns) = (kmod.timed_runs[k as usize], kmod.timed_ns[k as usize]);
        let (er, ens) = ebpf
            .iter()
            .find(|p| p.tracepoint.ends_with(&format!(":{tp}")) || p.tracepoint == tp)
            .map_or((0, 0), |p| (p.run_count, p.run_time_ns));
        if kr == 0 && er == 0 {
            continue;
        }
        let per = |ns: u64, runs: u64| {
            if runs == 0 {
                0.0
            } else {
                ns as f64 / runs as f64
            }
        };
        let (kp, ep) = (per(kns, kr), per(ens, er));
        lines.push(format!(
            "COST {name:<20} {kr:>9} {kp:>12.0} {er:>9} {ep:>12.0} {:>7.2}",
            if ep > 0.0 { kp / ep } else { 0.0 }
        ));
        (kt, kn, et, en) = (kt + kr, kn + kns, et + er, en + ens);
    }
    let per = |ns: u64, runs: u64| {
        if runs == 0 {
            0.0
        } else {
            ns as f64 / runs as f64
        }
    };
    lines.push(format!(
        "COST {:<20} {kt:>9} {:>12.0} {et:>9} {:>12.0} {:>7.2}",
        "all",
        per(kn, kt),
        per(en, et),
        if per(en, et) > 0.0 {
            per(kn, kt) / per(en, et)
        } else {
            0.0
        }
    ));
    Ok(lines)
}

// ---------------------------------------------------------------------------------------
// Ground truth (the test kit's, which tests/host_ebpf.rs checks too)
// ---------------------------------------------------------------------------------------

/// `retrans_segs`: the kernel's count while the workload ran, when FILE (written by
/// `ksight stat`) does not carry it (`kmod-vm stat` writes it as `kernel_tcp_retrans_segs`).
fn truth(
    file: &Path,
    device: &str,
    sent: u64,
    received: u64,
    retrans_segs: Option<u64>,
) -> Result<i32> {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    let kernel_retrans_segs = retrans_segs
        .or_else(|| m["kernel_tcp_retrans_segs"].as_u64())
        .ok_or_else(|| {
            anyhow!(
                "{}: no kernel_tcp_retrans_segs, and none given",
                file.display()
            )
        })?;
    let failures = truth::check(
        &m,
        &Truth {
            sent,
            received,
            device,
            kernel_retrans_segs,
            // The guest's only disk is the loop device.
            other_devices: OtherDevices::Absent,
        },
    );
    if failures.is_empty() {
        println!("truth: all ground-truth values exact ({})", m["backend"]);
        Ok(0)
    } else {
        for f in &failures {
            println!("truth: MISMATCH {f}");
        }
        Ok(1)
    }
}

/// `requests-truth FILE`: each snapshot in FILE (`stat`'s one, or the `kmod` and `ebpf`
/// of `stat --backend both`) against the requests workload's truth.
fn requests_truth(file: &Path) -> Result<i32> {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    let snapshots: Vec<(String, &Value)> = if m.get("kmod").is_some() && m.get("ebpf").is_some() {
        vec![("kmod".into(), &m["kmod"]), ("ebpf".into(), &m["ebpf"])]
    } else {
        vec![(m["backend"].as_str().unwrap_or("?").to_string(), &m)]
    };
    let mut code = 0;
    for (backend, snapshot) in snapshots {
        let failures = truth::check_requests(snapshot);
        if failures.is_empty() {
            println!("requests truth: every request, byte and edge exact ({backend})");
        } else {
            for f in &failures {
                println!("requests truth: MISMATCH ({backend}) {f}");
            }
            code = 1;
        }
    }
    Ok(code)
}

// ---------------------------------------------------------------------------------------
// The cgroup ignore filter, both backends at once
// ---------------------------------------------------------------------------------------

/// Starts `command` with its first process moved into `cg` before exec.
fn run_in(cg: &TestCgroup, command: &[&str]) -> Result<std::process::Child> {
    cg.command(command[0], &command[1..])
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", command[0]))
}

/// Per kind, the records of `batch` whose filter key (event_abi::filter) is `id`.
fn keyed(recs: &[Vec<u8>], id: u64) -> std::collections::BTreeMap<u16, u64> {
    use event_abi::filter::{FilterKey, key};
    let mut out = std::collections::BTreeMap::new();
    for r in recs {
        let Ok(e) = decode(r) else { continue };
        let h = *e.header();
        let k = match key(h.kind) {
            FilterKey::HeaderCgroup => Some(h.cgroup_id),
            FilterKey::SockCgroup => {
                const AT: usize = std::mem::offset_of!(event_abi::TcpEvent, sock_cgroup_id);
                const _: () =
                    assert!(AT == std::mem::offset_of!(event_abi::TcpStateEvent, sock_cgroup_id));
                Some(u64::from_ne_bytes(r[AT..AT + 8].try_into().unwrap()))
            }
            FilterKey::None => None,
        };
        if k == Some(id) {
            *out.entry(h.kind).or_insert(0u64) += 1;
        }
    }
    out
}

fn show(c: &std::collections::BTreeMap<u16, u64>) -> String {
    c.iter()
        .map(|(k, n)| {
            let name = event_abi::kinds::name(*k).unwrap_or("?");
            format!("{name}={n}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What two runs of one workload must agree on. Block queue counts depend on the page
/// cache (binaries paged in), socket I/O counts on how TCP split the stream into reads:
/// both are compared elsewhere, within one run.
fn comparable(c: &std::collections::BTreeMap<u16, u64>) -> String {
    let mut c = c.clone();
    c.remove(&kind::BLOCK_QUEUE);
    c.remove(&kind::SOCK_IO);
    show(&c)
}

/// What both backends must agree on for one run: everything but block queue counts.
fn same_run(c: &std::collections::BTreeMap<u16, u64>) -> String {
    let mut c = c.clone();
    c.remove(&kind::BLOCK_QUEUE);
    show(&c)
}

/// A record with its socket I/O duration zeroed: each backend times the call itself.
fn untimed(r: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const AT: usize = std::mem::offset_of!(event_abi::SockIoEvent, duration_ns);
    match ksight_engine::decode::record_kind(r) {
        Some(kind::SOCK_IO) if r.len() >= AT + 8 => {
            let mut v = r.to_vec();
            v[AT..AT + 8].fill(0);
            std::borrow::Cow::Owned(v)
        }
        _ => std::borrow::Cow::Borrowed(r),
    }
}

/// Per kind, `after - before` (kinds that did not move left out).
fn delta(
    after: &std::collections::BTreeMap<u16, u64>,
    before: &std::collections::BTreeMap<u16, u64>,
) -> std::collections::BTreeMap<u16, u64> {
    after
        .iter()
        .map(|(k, n)| (*k, n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The descriptor of the device this process has open: the kmod source's (the module
/// serves one reader, so there is exactly one).
fn kmod_fd() -> Result<libc::c_int> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")? {
        let e = e?;
        if std::fs::read_link(e.path()).is_ok_and(|p| p == Path::new(ksight_backend_kmod::DEVICE)) {
            found.push(e.file_name().to_string_lossy().parse::<libc::c_int>()?);
        }
    }
    ensure!(
        found.len() == 1,
        "{} descriptors of {} open: {found:?}",
        found.len(),
        ksight_backend_kmod::DEVICE
    );
    Ok(found[0])
}

/// `KSIGHT_IOC_SET_IGNORED_CGROUPS` straight to the module: Ok or the errno.
fn set_ignored_raw(fd: libc::c_int, count: u32, pad: u32, ids_ptr: u64) -> Result<(), i32> {
    let mut req = uapi::IgnoredCgroups {
        count,
        _pad: pad,
        ids_ptr,
    };
    // SAFETY: `req` is the struct the request encodes; the module copies the ids from
    // `ids_ptr` with copy_from_user, so a bad address is its EFAULT, not our fault.
    let rc = unsafe { libc::ioctl(fd, uapi::IOC_SET_IGNORED_CGROUPS as _, &mut req) };
    if rc < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn errno_name(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(libc::EINVAL) => "EINVAL".into(),
        Err(libc::EFAULT) => "EFAULT".into(),
        Err(e) => format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
    }
}

/// What a stats buffer holds before the ioctl: bytes it did not write keep it.
const STATS_FILL: u8 = 0xA5;

/// `KSIGHT_IOC_STATS` or `KSIGHT_IOC_STATS_V1` into a buffer of the full struct's size,
/// pre-filled with [`STATS_FILL`].
fn stats_raw(fd: libc::c_int, request: u32) -> Result<Vec<u8>> {
    let mut buf = vec![STATS_FILL; std::mem::size_of::<uapi::Stats>()];
    // SAFETY: the buffer is as large as the largest size either request encodes.
    let rc = unsafe { libc::ioctl(fd, request as _, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("stats ioctl {request:#x}"));
    }
    Ok(buf)
}

fn filter(sent: &str, received: &str) -> Result<i32> {
    let mut ebpf = EbpfSource::open(EbpfOptions::default()).context("opening the eBPF backend")?;
    let mut kmod = KmodSource::open(KmodOptions::default()).context("opening the kmod backend")?;
    let ebpf_filter = ebpf
        .cgroup_filter()
        .ok_or_else(|| anyhow!("the eBPF source has no cgroup filter"))?;
    let kmod_filter = kmod
        .cgroup_filter()
        .ok_or_else(|| anyhow!("the module has no cgroup filter (device interface < 1.1)"))?;
    let mut sources = [Source::Kmod(kmod), Source::Ebpf(Box::new(ebpf))];
    let a = TestCgroup::create("kmod-vm-filter-a")?;
    let b = TestCgroup::create("kmod-vm-filter-b")?;
    let workload = ["ksight-workload", "procs-tcp", sent, received];
    let mut failures: Vec<String> = Vec::new();
    let mut batch = RawBatch::new();

    // Runs `command` in each cgroup in turn while both sources are read; returns each
    // backend's records (kmod, ebpf).
    let mut phase = |sources: &mut [Source; 2],
                     cgroups: &[&TestCgroup],
                     command: &[&str]|
     -> Result<[Vec<Vec<u8>>; 2]> {
        let mut recs: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let mut pump = |sources: &mut [Source; 2], recs: &mut [Vec<Vec<u8>>; 2]| -> Result<()> {
            for (i, s) in sources.iter_mut().enumerate() {
                batch.clear();
                s.get().poll(&mut batch, Duration::from_millis(5))?;
                recs[i].extend(batch.iter().map(<[u8]>::to_vec));
            }
            Ok(())
        };
        for cg in cgroups {
            let mut child = run_in(cg, command)?;
            let status = loop {
                pump(sources, &mut recs)?;
                if let Some(status) = child.try_wait()? {
                    break status;
                }
            };
            ensure!(
                status.success(),
                "workload in {}: {status}",
                cg.path.display()
            );
        }
        let deadline = Instant::now() + Duration::from_millis(800);
        while Instant::now() < deadline {
            pump(sources, &mut recs)?;
        }
        Ok(recs)
    };
    let filtered =
        |sources: &[Source; 2]| -> Result<[(std::collections::BTreeMap<u16, u64>, u64); 2]> {
            let mut out: [(std::collections::BTreeMap<u16, u64>, u64); 2] = Default::default();
            for (i, s) in sources.iter().enumerate() {
                let per_kind = match s {
                    Source::Kmod(k) => k.filtered_per_kind()?,
                    Source::Ebpf(e) => e.filtered_per_kind(),
                };
                let total = match s {
                    Source::Kmod(k) => k.counters().filtered,
                    Source::Ebpf(e) => e.counters().filtered,
                };
                out[i] = (
                    per_kind.into_iter().filter(|(_, n)| *n > 0).collect(),
                    total,
                );
            }
            Ok(out)
        };
    let names = ["kmod", "ebpf"];

    // 1. Nothing ignored: what A's workload produces, by each backend.
    let recs = phase(&mut sources, &[&a], &workload)?;
    let truth = keyed(&recs[0], a.id);
    for (i, r) in recs.iter().enumerate() {
        let got = keyed(r, a.id);
        println!("filter: unfiltered A, {}: {}", names[i], show(&got));
        if same_run(&got) != same_run(&truth) {
            failures.push(format!(
                "unfiltered A differs between backends: {} vs {}",
                show(&truth),
                show(&got)
            ));
        }
    }
    if truth.get(&kind::EXEC).copied().unwrap_or(0) < 6
        || truth.get(&kind::TCP_STATE).copied().unwrap_or(0) < 8
    {
        failures.push(format!(
            "A's workload produced too little: {}",
            show(&truth)
        ));
    }
    let before = filtered(&sources)?;

    // 2. A ignored in both kernels at once.
    ebpf_filter
        .set_ignored(&[a.id])
        .context("eBPF set_ignored")?;
    kmod_filter
        .set_ignored(&[a.id])
        .context("kmod set_ignored")?;
    let started = monotonic_ns();
    let recs = phase(&mut sources, &[&a, &b], &workload)?;
    let stopped = monotonic_ns();
    let after = filtered(&sources)?;
    for i in 0..2 {
        let of_a = keyed(&recs[i], a.id);
        let of_b = keyed(&recs[i], b.id);
        let mut delta = after[i].0.clone();
        for (k, n) in delta.iter_mut() {
            *n -= before[i].0.get(k).copied().unwrap_or(0);
        }
        delta.retain(|_, n| *n > 0);
        let total = after[i].1 - before[i].1;
        println!(
            "filter: A ignored, {}: A {} | B {} | kernel filtered {} (total {total})",
            names[i],
            show(&of_a),
            show(&of_b),
            show(&delta)
        );
        if !of_a.is_empty() {
            failures.push(format!(
                "{}: records of ignored A arrived: {}",
                names[i],
                show(&of_a)
            ));
        }
        if comparable(&of_b) != comparable(&truth) {
            failures.push(format!(
                "{}: B {} != A's truth {}",
                names[i],
                show(&of_b),
                show(&truth)
            ));
        }
        if comparable(&delta) != comparable(&truth) {
            failures.push(format!(
                "{}: filtered {} != A's truth {}",
                names[i],
                show(&delta),
                show(&truth)
            ));
        }
        if truth.contains_key(&kind::SOCK_IO) && !delta.contains_key(&kind::SOCK_IO) {
            failures.push(format!("{}: A's socket calls were not filtered", names[i]));
        }
        if total != delta.values().sum::<u64>() {
            failures.push(format!(
                "{}: counters().filtered {total} != per-kind sum",
                names[i]
            ));
        }
    }
    // Record-level parity of the filtered run: same records from both, but for timestamps.
    let mut logs = [RecordLog::default(), RecordLog::default()];
    for i in 0..2 {
        let mut b = RawBatch::new();
        for r in &recs[i] {
            b.push(&untimed(r));
        }
        logs[i].add(&b, started);
    }
    let cmp = compare_logs(
        &logs[0],
        &logs[1],
        ("kmod", "ebpf"),
        started + 50_000_000,
        stopped.saturating_sub(50_000_000),
    );
    println!(
        "filter: records with A ignored: {} byte-identical but for the timestamp, {} only from kmod, {} only from ebpf",
        cmp.matched, cmp.only_a, cmp.only_b
    );
    for u in cmp.unmatched.iter().take(20) {
        println!("  unmatched: {u}");
    }
    if cmp.only_a > 0 || cmp.only_b > 0 || cmp.matched == 0 {
        failures.push("the backends' records differ with the same ignore set".into());
    }

    // 3. Cleared at run time: A is back in both, nothing more filtered.
    ebpf_filter
        .set_ignored(&[])
        .context("eBPF set_ignored([])")?;
    kmod_filter
        .set_ignored(&[])
        .context("kmod set_ignored([])")?;
    let recs = phase(&mut sources, &[&a], &workload)?;
    let cleared = filtered(&sources)?;
    for i in 0..2 {
        let back = keyed(&recs[i], a.id);
        println!("filter: cleared, {}: A {}", names[i], show(&back));
        if comparable(&back) != comparable(&truth) {
            failures.push(format!(
                "{}: after clearing, A {} != {}",
                names[i],
                show(&back),
                show(&truth)
            ));
        }
        if cleared[i] != after[i] {
            failures.push(format!(
                "{}: filtered moved after clearing the set",
                names[i]
            ));
        }
    }
    // The module refuses more than its limit, naming it.
    let too_many: Vec<u64> = (1..=16385).collect();
    match kmod_filter.set_ignored(&too_many) {
        Err(e) if e.to_string().contains("at most 16384") => {
            println!("filter: 16385 ids refused: {e}")
        }
        other => failures.push(format!("16385 ids: {other:?}")),
    }

    // 4. The module's own checks, raw ioctls on the source's descriptor (the reader above
    //    refuses 16385 ids before any ioctl). Each refused call must leave the set in
    //    place: a short process in A right after it is still filtered, none of its
    //    records arrive.
    let fd = kmod_fd()?;
    let light = ["/bin/sh", "-c", ":"];
    let max = u64::from(uapi::IGNORED_CGROUPS_MAX);
    // The largest set the module keeps, A among ids no cgroup has.
    let mut largest: Vec<u64> = (0..max - 1).map(|i| (1 << 40) + i).collect();
    largest.push(a.id);
    // One more than that, without A: accepted, it would let A's records through.
    let over: Vec<u64> = (0..=max).map(|i| (1 << 40) + i).collect();
    let only_b = [b.id];
    let ptr = |v: &[u64]| v.as_ptr() as u64;
    // One raw call each, and whether A's records are dropped after it.
    struct Case {
        what: &'static str,
        count: u32,
        pad: u32,
        ids_ptr: u64,
        want: Result<(), i32>,
        ignored: bool,
    }
    let case = |what, count, pad, ids_ptr, want, ignored| Case {
        what,
        count,
        pad,
        ids_ptr,
        want,
        ignored,
    };
    let cases = [
        case(
            "16384 ids, A among them",
            max as u32,
            0,
            ptr(&largest),
            Ok(()),
            true,
        ),
        case(
            "16385 ids",
            over.len() as u32,
            0,
            ptr(&over),
            Err(libc::EINVAL),
            true,
        ),
        case(
            "_pad = 1 (ids {B})",
            1,
            1,
            ptr(&only_b),
            Err(libc::EINVAL),
            true,
        ),
        case("ids_ptr = 1", 1, 0, 1, Err(libc::EFAULT), true),
        case(
            "ids_ptr = a kernel address",
            1,
            0,
            0xffff_8880_0000_0000,
            Err(libc::EFAULT),
            true,
        ),
        case("count = 0, ids_ptr = 0 (clears)", 0, 0, 0, Ok(()), false),
    ];
    for Case {
        what,
        count,
        pad,
        ids_ptr,
        want,
        ignored,
    } in cases
    {
        let got = set_ignored_raw(fd, count, pad, ids_ptr);
        let f0 = filtered(&sources)?[0].0.clone();
        let recs = phase(&mut sources, &[&a], &light)?;
        let d = delta(&filtered(&sources)?[0].0, &f0);
        let of_a = keyed(&recs[0], a.id);
        println!(
            "filter: raw ioctl, {what}: {} (want {}); then A {} | kernel filtered {}",
            errno_name(got),
            errno_name(want),
            show(&of_a),
            show(&d)
        );
        if got != want {
            failures.push(format!(
                "raw KSIGHT_IOC_SET_IGNORED_CGROUPS, {what}: {} instead of {}",
                errno_name(got),
                errno_name(want)
            ));
        }
        let exec_exit = |c: &std::collections::BTreeMap<u16, u64>| {
            c.get(&kind::EXEC).copied().unwrap_or(0) >= 1
                && c.get(&kind::EXIT).copied().unwrap_or(0) >= 1
        };
        if ignored && (!of_a.is_empty() || !exec_exit(&d)) {
            failures.push(format!(
                "after {what}: A is no longer filtered (A {}, filtered {})",
                show(&of_a),
                show(&d)
            ));
        }
        if !ignored && (!exec_exit(&of_a) || !d.is_empty()) {
            failures.push(format!(
                "after {what}: A is not back (A {}, filtered {})",
                show(&of_a),
                show(&d)
            ));
        }
    }

    // 5. Closing the device with a set installed clears it: the next reader gets A's
    //    records, and filters nothing. (Opening zeroes the counters anyway; A's records
    //    arriving is what shows the set is gone.)
    kmod_filter
        .set_ignored(&[a.id])
        .context("kmod set_ignored before closing")?;
    let f0 = filtered(&sources)?[0].0.clone();
    let recs = phase(&mut sources, &[&a], &light)?;
    let d = delta(&filtered(&sources)?[0].0, &f0);
    if !keyed(&recs[0], a.id).is_empty() || d.is_empty() {
        failures.push(format!(
            "A ignored before closing: not filtered (filtered {})",
            show(&d)
        ));
    }
    let [kmod, ebpf] = sources;
    drop(kmod);
    if kmod_filter.set_ignored(&[a.id]).is_ok() {
        failures.push("the kmod filter handle still works after its source closed".into());
    }
    let kmod = KmodSource::open(KmodOptions::default()).context("reopening the kmod backend")?;
    let mut sources = [Source::Kmod(kmod), ebpf];
    let recs = phase(&mut sources, &[&a], &workload)?;
    let reopened = filtered(&sources)?;
    let back = keyed(&recs[0], a.id);
    println!(
        "filter: closed with A ignored, reopened: A {} | kernel filtered {} (total {})",
        show(&back),
        show(&reopened[0].0),
        reopened[0].1
    );
    if comparable(&back) != comparable(&truth) {
        failures.push(format!(
            "reopened after closing with A ignored: A {} != {}",
            show(&back),
            show(&truth)
        ));
    }
    if !reopened[0].0.is_empty() || reopened[0].1 != 0 {
        failures.push(format!(
            "reopened: the module filtered {} (total {})",
            show(&reopened[0].0),
            reopened[0].1
        ));
    }

    // 6. KSIGHT_IOC_STATS_V1 (interface 1.0's number) answers the first 1056 bytes of
    //    KSIGHT_IOC_STATS and writes nothing beyond. While capturing only the
    //    configuration words (attached, available, enabled, capturing) cannot move
    //    between the two calls; once stopped, nothing can, and all 1056 must be equal.
    let fd = kmod_fd()?;
    let v1_size = uapi::STATS_V1_SIZE;
    let config =
        std::mem::offset_of!(uapi::Stats, attached)..std::mem::offset_of!(uapi::Stats, nested);
    let v1 = stats_raw(fd, uapi::IOC_STATS_V1)?;
    let full = stats_raw(fd, uapi::IOC_STATS)?;
    let untouched = |b: &[u8]| b[v1_size..].iter().all(|&x| x == STATS_FILL);
    if v1[config.clone()] != full[config.clone()] || !untouched(&v1) {
        failures.push(format!(
            "capturing: KSIGHT_IOC_STATS_V1 configuration words {:?} != KSIGHT_IOC_STATS {:?}, or it wrote past {v1_size} bytes",
            &v1[config.clone()],
            &full[config.clone()]
        ));
    }
    let Source::Kmod(k) = &mut sources[0] else {
        unreachable!()
    };
    k.stop()?;
    let v1 = stats_raw(fd, uapi::IOC_STATS_V1)?;
    let full = stats_raw(fd, uapi::IOC_STATS)?;
    let emitted: u64 = full[..std::mem::size_of::<[u64; uapi::STATS_SLOTS]>()]
        .chunks(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .sum();
    let differing = (0..v1_size).filter(|&i| v1[i] != full[i]).count();
    println!(
        "filter: KSIGHT_IOC_STATS_V1 after stop: {differing} of its {v1_size} bytes differ from KSIGHT_IOC_STATS (emitted {emitted}); bytes past {v1_size} untouched: {}",
        untouched(&v1)
    );
    if differing > 0 || !untouched(&v1) || emitted == 0 {
        failures.push(format!(
            "stopped: KSIGHT_IOC_STATS_V1 is not the first {v1_size} bytes of KSIGHT_IOC_STATS ({differing} differ, emitted {emitted}, tail untouched {})",
            untouched(&v1)
        ));
    }

    if failures.is_empty() {
        println!("filter: PASS");
        Ok(0)
    } else {
        for f in &failures {
            println!("filter: FAIL {f}");
        }
        Ok(1)
    }
}

// ---------------------------------------------------------------------------------------
// Flood, hold, busy
// ---------------------------------------------------------------------------------------

/// Events without end: forks, execs and exits of /bin/true.
fn spawn_load(n: usize) -> Vec<std::process::Child> {
    (0..n)
        .filter_map(|_| {
            std::process::Command::new("/bin/sh")
                .args(["-c", "while :; do /bin/true; done"])
                .spawn()
                .ok()
        })
        .collect()
}

fn flood(seconds: f64) -> Result<i32> {
    let mut source = KmodSource::open(KmodOptions::default())?;
    let g = source.geometry();
    println!("flood: {} rings of {} bytes", g.nr_rings, g.ring_bytes);
    let mut load = spawn_load(2);
    // Not reading: the rings fill and the module counts what it drops.
    std::thread::sleep(Duration::from_secs_f64(seconds / 2.0));
    let mut batch = RawBatch::new();
    let mut all = RawBatch::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds / 2.0);
    while Instant::now() < end {
        batch.clear();
        source.poll(&mut batch, Duration::from_millis(5))?;
        for r in batch.iter() {
            all.push(r);
        }
    }
    for c in load.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    source.stop()?;
    loop {
        batch.clear();
        source.poll(&mut batch, Duration::ZERO)?;
        if batch.is_empty() {
            break;
        }
        for r in batch.iter() {
            all.push(r);
        }
    }
    let mut failures = Vec::new();
    // Every record valid; within a ring (= the CPU in its header), time never goes back.
    let mut last_ts: HashMap<u32, u64> = HashMap::new();
    let mut per_cpu: HashMap<u32, u64> = HashMap::new();
    let mut bad = 0u64;
    for r in all.iter() {
        match decode(r) {
            Ok(e) => {
                let h: &EventHeader = e.header();
                *per_cpu.entry(h.cpu).or_default() += 1;
                let last = last_ts.entry(h.cpu).or_default();
                if h.ts_ns < *last {
                    failures.push(format!(
                        "cpu {}: timestamp {} after {}",
                        h.cpu, h.ts_ns, last
                    ));
                }
                *last = h.ts_ns;
            }
            Err(e) => {
                bad += 1;
                if bad < 5 {
                    failures.push(format!("malformed record: {e}"));
                }
            }
        }
    }
    let rings = source.ring_counters();
    let stats = source.stats()?;
    let (mut emitted, mut lost, mut delivered) = (0u64, 0u64, 0u64);
    for (cpu, r) in rings.iter().enumerate() {
        println!(
            "flood: ring {cpu}: emitted {} lost {} delivered {} malformed {} (records with cpu {cpu}: {})",
            r.emitted,
            r.lost,
            r.delivered,
            r.malformed,
            per_cpu.get(&(cpu as u32)).copied().unwrap_or(0)
        );
        if r.delivered != r.emitted {
            failures.push(format!(
                "ring {cpu}: delivered {} != emitted {}",
                r.delivered, r.emitted
            ));
        }
        if r.malformed != 0 {
            failures.push(format!("ring {cpu}: {} malformed", r.malformed));
        }
        if per_cpu.get(&(cpu as u32)).copied().unwrap_or(0) != r.delivered {
            failures.push(format!("ring {cpu}: records carry another CPU"));
        }
        emitted += r.emitted;
        lost += r.lost;
        delivered += r.delivered;
    }
    let (se, sl): (u64, u64) = (stats.emitted.iter().sum(), stats.lost.iter().sum());
    println!(
        "flood: probes produced {} records: delivered {delivered} + lost {lost}; kernel says \
         written {se}, lost {sl}; nested {}, bad tail {}",
        delivered + lost,
        stats.nested,
        stats.bad_tail
    );
    if se != emitted || sl != lost {
        failures.push(format!(
            "KSIGHT_IOC_STATS ({se}, {sl}) disagrees with the info pages ({emitted}, {lost})"
        ));
    }
    if lost == 0 {
        failures.push("nothing was lost: the flood did not fill the rings".into());
    }
    if delivered == 0 {
        failures.push("nothing was delivered".into());
    }
    if failures.is_empty() {
        println!(
            "flood: PASS lost {lost} > 0, delivered {delivered} == written {emitted}, no malformed record, per-ring order kept"
        );
        Ok(0)
    } else {
        for f in &failures {
            println!("flood: FAIL {f}");
        }
        Ok(1)
    }
}

fn hold(seconds: f64) -> Result<i32> {
    let mut source = KmodSource::open(KmodOptions::default())?;
    let mut batch = RawBatch::new();
    let mut records = 0;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        batch.clear();
        source.poll(&mut batch, Duration::from_millis(20))?;
        records += batch.len();
    }
    println!(
        "hold: {records} records, lost {}",
        source.counters().lost_total()
    );
    Ok(0)
}

fn busy() -> Result<i32> {
    let _first = KmodSource::open(KmodOptions::default())?;
    match KmodSource::open(KmodOptions::default()) {
        Err(KmodError::Busy { .. }) => {
            println!(
                "busy: a second reader is refused with EBUSY: {}",
                KmodError::Busy {
                    path: ksight_backend_kmod::DEVICE.into()
                }
            );
            Ok(0)
        }
        Err(e) => {
            println!("busy: FAIL second open: unexpected error {e}");
            Ok(1)
        }
        Ok(_) => {
            println!("busy: FAIL a second reader was accepted");
            Ok(1)
        }
    }
}
