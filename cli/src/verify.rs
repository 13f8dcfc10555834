//! `ksight verify`: runs a built-in workload while both backends capture at once, and
//! reports whether they agree — record by record, and metric by metric.

use crate::args::TransportChoice;
use crate::backend;
use crate::cgroup::{StatCgroup, spawn_in};
use anyhow::{Context, Result, ensure};
use ksight_engine::names::HostNames;
use ksight_engine::parity::{RecordLog, compare_logs, compare_snapshots};
use ksight_engine::{Engine, EventSource, RawBatch, Scope, monotonic_ns};
use std::path::Path;
use std::time::{Duration, Instant};

/// Records this close to the start or end of the capture may be seen by one backend only.
const EDGE_NS: u64 = 50_000_000;

pub fn verify(device: Option<&Path>, json: bool) -> Result<u8> {
    // eBPF first: from the moment the module starts, both see everything.
    let ebpf = backend::open_ebpf(TransportChoice::Auto)
        .context("ksight verify needs the eBPF backend")?;
    let kmod = backend::open_kmod().context("ksight verify needs the kernel-module backend")?;
    let names = ("kmod", "ebpf");
    let mut sources: Vec<Box<dyn EventSource>> = vec![kmod.source, ebpf.source];
    let started = monotonic_ns();

    let cgroup = StatCgroup::create().context("verify runs its workload in a cgroup of its own")?;
    let exe = std::env::current_exe().context("locating the ksight binary")?;
    let mut command = vec![exe.to_string_lossy().into_owned(), "workload".into()];
    match device {
        Some(dev) => command.extend([
            "all".into(),
            "100000".into(),
            "30000".into(),
            dev.to_string_lossy().into_owned(),
        ]),
        None => command.extend(["procs-tcp".into(), "100000".into(), "30000".into()]),
    }
    let mut child = spawn_in(&command, Some(&cgroup))?;
    let mut scope = Scope::default();
    scope.cgroups.insert(cgroup.id);
    scope.pids.insert(child.id());
    let mut engines = [
        Engine::new(names.0, Some(scope.clone())),
        Engine::new(names.1, Some(scope)),
    ];
    let mut logs = [RecordLog::default(), RecordLog::default()];
    let mut batch = RawBatch::new();
    let mut pump = |timeout: Duration| -> Result<usize> {
        let mut n = 0;
        for (i, source) in sources.iter_mut().enumerate() {
            batch.clear();
            source.poll(&mut batch, timeout)?;
            n += batch.len();
            logs[i].add(&batch, started);
            engines[i].ingest(&batch);
            engines[i].set_counters(source.counters());
            engines[i].advance(Some(monotonic_ns()));
        }
        Ok(n)
    };
    let status = loop {
        pump(Duration::from_millis(5))?;
        if let Some(status) = child.try_wait()? {
            break status;
        }
    };
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        pump(Duration::from_millis(5))?;
    }
    let stopped = monotonic_ns();
    while pump(Duration::ZERO)? > 0 {}
    if let Err(e) = cgroup.remove() {
        eprintln!("ksight: warning: {e:#}");
    }
    ensure!(status.success(), "the built-in workload failed ({status})");

    let records = compare_logs(
        &logs[0],
        &logs[1],
        names,
        started + EDGE_NS,
        stopped.saturating_sub(EDGE_NS),
    );
    let snapshots: Vec<serde_json::Value> = engines
        .iter_mut()
        .map(|e| {
            e.flush();
            serde_json::to_value(e.snapshot(&HostNames { live: true }))
        })
        .collect::<Result<_, _>>()?;
    let metrics = compare_snapshots(&snapshots[0], &snapshots[1], names, records.skew_ns);
    let agree = metrics.different.is_empty() && records.only_a == 0 && records.only_b == 0;
    if json {
        let report = serde_json::json!({
            "agree": agree,
            "records": {
                "matched": records.matched,
                "only_kmod": records.only_a,
                "only_ebpf": records.only_b,
                "skew_us": records.skew_ns as f64 / 1000.0,
                "unmatched": records.unmatched,
            },
            "metrics": {
                "compared": metrics.compared,
                "exact": metrics.exact,
                "within_tolerance": metrics.tolerated,
                "different": metrics.different,
            },
            "kmod": snapshots[0],
            "ebpf": snapshots[1],
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", metrics.table);
        println!(
            "\nrecords: {} byte-identical but for the timestamp, {} only from kmod, {} only from ebpf; \
             timestamps differ by at most {:.1} us",
            records.matched,
            records.only_a,
            records.only_b,
            records.skew_ns as f64 / 1000.0
        );
        for line in &records.unmatched {
            println!("  unmatched: {line}");
        }
        println!(
            "metrics: {} compared, {} exact, {} within timestamp tolerance, {} different",
            metrics.compared,
            metrics.exact,
            metrics.tolerated,
            metrics.different.len()
        );
        for d in &metrics.different {
            println!("  DIFFERENT {d}");
        }
        println!(
            "{}",
            if agree {
                "backends agree"
            } else {
                "backends DISAGREE"
            }
        );
    }
    Ok(if agree { 0 } else { 1 })
}
