//! Human-readable output. Scripts use `--json`; this text may change.

use ksight_backend_ebpf::{DetectReport, Fidelity, SignalStatus};
use ksight_engine::Snapshot;
use std::fmt::Write;

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn snapshot(s: &Snapshot, notes: &[String]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ksight ({} backend, {:.3} s of events)",
        s.backend, s.duration_s
    );
    let p = &s.process;
    let codes: Vec<String> = p
        .exit_codes
        .iter()
        .map(|(code, n)| format!("{code}×{n}"))
        .collect();
    let _ = writeln!(
        o,
        "\n  processes  execs {:>8}  forks {:>8}  threads {:>6}  exits {:>8}  exit codes {}",
        p.execs,
        p.forks,
        p.threads,
        p.exits,
        if codes.is_empty() {
            "-".into()
        } else {
            codes.join(" ")
        }
    );
    let t = &s.tcp;
    let _ = writeln!(
        o,
        "  tcp        connects {:>5}  accepts {:>6}  closes {:>6}  failed connects {}",
        t.connects, t.accepts, t.closes, t.connect_failures
    );
    let _ = writeln!(
        o,
        "             sent {:>12}  received {:>12}  retransmits {}  resets sent {}  received {}",
        bytes(t.bytes_sent),
        bytes(t.bytes_received),
        t.retransmits,
        t.resets_sent,
        t.resets_received
    );
    if !t.connections.is_empty() {
        let _ = writeln!(
            o,
            "\n  {:<22} {:<22} {:>7} {:<15} {:>10} {:>10} {:>10} {:>6} {:>5}",
            "local", "remote", "pid", "comm", "sent", "received", "duration", "srtt", "retx"
        );
        for c in t.connections.iter().take(20) {
            let opt = |v: Option<u64>| v.map_or("-".into(), bytes);
            let _ = writeln!(
                o,
                "  {:<22} {:<22} {:>7} {:<15} {:>10} {:>10} {:>8}ms {:>4}us {:>5}",
                format!("{}:{}", c.saddr, c.sport),
                format!("{}:{}", c.daddr, c.dport),
                c.pid,
                c.comm,
                opt(c.bytes_sent),
                opt(c.bytes_received),
                c.duration_us / 1000,
                c.srtt_us.map_or("-".into(), |v| v.to_string()),
                c.retransmits
            );
        }
        if t.connections.len() > 20 {
            let _ = writeln!(
                o,
                "  … {} more connections (see --json)",
                t.connections.len() - 20
            );
        }
    }
    if !s.block.devices.is_empty() {
        let _ = writeln!(
            o,
            "\n  {:<10} {:<10} {:>8} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10}",
            "device", "name", "reads", "writes", "read", "written", "p50 us", "p99 us", "max us"
        );
        for d in &s.block.devices {
            let _ = writeln!(
                o,
                "  {:<10} {:<10} {:>8} {:>8} {:>12} {:>12} {:>10.1} {:>10.1} {:>10.1}",
                d.dev,
                d.name,
                d.reads,
                d.writes,
                bytes(d.read_bytes),
                bytes(d.write_bytes),
                d.latency_us.p50,
                d.latency_us.p99,
                d.latency_us.max
            );
        }
    }
    if !s.containers.is_empty() {
        let _ = writeln!(
            o,
            "\n  {:<44} {:<24} {:>6} {:>6} {:>6} {:>5} {:>10} {:>10} {:>10} {:>10}",
            "owner (namespace/pod/container, unit, path)",
            "workload",
            "execs",
            "forks",
            "exits",
            "conns",
            "tcp sent",
            "tcp recv",
            "blk read",
            "blk write"
        );
        for c in s.containers.iter().take(40) {
            let name = c
                .attribution
                .as_ref()
                .map_or_else(|| format!("cgroup {}", c.cgroup_id), |a| a.display_name());
            let workload = c
                .attribution
                .as_ref()
                .filter(|a| !a.workload.is_empty())
                .map_or_else(
                    || "-".to_string(),
                    |a| format!("{}/{}", a.workload_kind, a.workload),
                );
            let _ = writeln!(
                o,
                "  {:<44} {:<24} {:>6} {:>6} {:>6} {:>5} {:>10} {:>10} {:>10} {:>10}",
                name,
                workload,
                c.execs,
                c.forks,
                c.exits,
                c.tcp_connections,
                bytes(c.tcp_bytes_sent),
                bytes(c.tcp_bytes_received),
                bytes(c.block_read_bytes),
                bytes(c.block_write_bytes)
            );
        }
    }
    let _ = writeln!(
        o,
        "\n  lost events {}  malformed records {}  late events {}",
        s.lost_events, s.malformed_records, s.late_events
    );
    for note in notes {
        let _ = writeln!(o, "  note: {note}");
    }
    o
}

/// Why the eBPF backend cannot run here, if it cannot.
pub fn ebpf_blocker(r: &DetectReport) -> Option<String> {
    if !r.programs_built {
        return Some("this ksight was built without its eBPF programs".into());
    }
    if !r.bpf_allowed {
        return Some(format!(
            "bpf() is not allowed: {}",
            r.bpf_error.as_deref().unwrap_or("unknown reason")
        ));
    }
    if !r.ringbuf_supported {
        return Some(
            "the kernel has no BPF ring buffer (Linux 5.8+), which the programs' object needs"
                .into(),
        );
    }
    if r.signals
        .iter()
        .all(|s| matches!(s.status, Fidelity::Unavailable(_)))
    {
        return Some("no tracepoint program can attach".into());
    }
    None
}

/// `tcp_close_stats  degraded: why`: for people only (scripts read the typed statuses or
/// `--json`).
pub fn signal_line(s: &SignalStatus) -> String {
    s.line()
}

pub fn detect(r: &DetectReport, backend: &str, reason: &str, kmod: Option<&str>) -> String {
    let mut o = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(o, "kernel          {}", r.kernel_release);
    let _ = writeln!(o, "BTF             {}", yes(r.btf_present));
    let _ = writeln!(
        o,
        "tracefs         {}",
        r.tracefs.as_deref().unwrap_or("not mounted")
    );
    let _ = writeln!(
        o,
        "bpf() allowed   {}{}",
        yes(r.bpf_allowed),
        r.bpf_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "transport       {}",
        if r.ringbuf_supported {
            "BPF ring buffer (perf event array as option)"
        } else {
            "perf event array"
        }
    );
    let _ = writeln!(
        o,
        "eBPF programs   {}",
        if r.programs_built {
            "built in"
        } else {
            "not built into this binary"
        }
    );
    let _ = writeln!(o, "kernel module   {}", kmod.unwrap_or("loaded"));
    let _ = writeln!(o, "\nbackend         {backend}: {reason}");
    let _ = writeln!(o, "\ntracepoints");
    for tp in &r.tracepoints {
        let state = if !tp.unusable.is_empty() {
            format!("cannot attach: {}", tp.unusable.join("; "))
        } else if !tp.degraded.is_empty() {
            format!("attaches, degraded: {}", tp.degraded.join("; "))
        } else {
            "attaches".to_string()
        };
        let _ = writeln!(o, "  {:<34} {:<15} {state}", tp.tracepoint, tp.attach);
    }
    let _ = writeln!(o, "\nsignals");
    for s in &r.signals {
        let _ = writeln!(o, "  {}", signal_line(s));
    }
    o
}
