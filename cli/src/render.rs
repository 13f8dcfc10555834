//! Human-readable output. Scripts use `--json`; this text may change.

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
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

pub fn snapshot(s: &Snapshot, notes: &[String]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "ksight ({} backend, {:.3} s of events)", s.backend, s.duration_s);
    let p = &s.process;
    let codes: Vec<String> = p.exit_codes.iter().map(|(code, n)| format!("{code}×{n}")).collect();
    let _ = writeln!(o, "\n  processes  execs {:>8}  forks {:>8}  threads {:>6}  exits {:>8}  exit codes {}",
        p.execs, p.forks, p.threads, p.exits, if codes.is_empty() { "-".into() } else { codes.join(" ") });
    let t = &s.tcp;
    let _ = writeln!(o, "  tcp        connects {:>5}  accepts {:>6}  closes {:>6}  failed connects {}",
        t.connects, t.accepts, t.closes, t.connect_failures);
    let _ = writeln!(o, "             sent {:>12}  received {:>12}  retransmits {}  resets sent {}  received {}",
        bytes(t.bytes_sent), bytes(t.bytes_received), t.retransmits, t.resets_sent, t.resets_received);
    if !t.connections.is_empty() {
        let _ = writeln!(o, "\n  {:<22} {:<22} {:>7} {:<15} {:>10} {:>10} {:>10} {:>6} {:>5}",
            "local", "remote", "pid", "comm", "sent", "received", "duration", "srtt", "retx");
        for c in t.connections.iter().take(20) {
            let opt = |v: Option<u64>| v.map_or("-".into(), bytes);
            let _ = writeln!(o, "  {:<22} {:<22} {:>7} {:<15} {:>10} {:>10} {:>8}ms {:>4}us {:>5}",
                format!("{}:{}", c.saddr, c.sport), format!("{}:{}", c.daddr, c.dport), c.pid, c.comm,
                opt(c.bytes_sent), opt(c.bytes_received), c.duration_us / 1000,
                c.srtt_us.map_or("-".into(), |v| v.to_string()), c.retransmits);
        }
        if t.connections.len() > 20 {
            let _ = writeln!(o, "  … {} more connections (see --json)", t.connections.len() - 20);
        }
    }
    if !s.block.devices.is_empty() {
        let _ = writeln!(o, "\n  {:<10} {:<10} {:>8} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10}",
            "device", "name", "reads", "writes", "read", "written", "p50 us", "p99 us", "max us");
        for d in &s.block.devices {
            let _ = writeln!(o, "  {:<10} {:<10} {:>8} {:>8} {:>12} {:>12} {:>10.1} {:>10.1} {:>10.1}",
                d.dev, d.name, d.reads, d.writes, bytes(d.read_bytes), bytes(d.write_bytes),
                d.latency_us.p50, d.latency_us.p99, d.latency_us.max);
        }
    }
    let _ = writeln!(o, "\n  lost events {}  malformed records {}", s.lost_events, s.malformed_records);
    for note in notes {
        let _ = writeln!(o, "  note: {note}");
    }
    o
}
