//! `ksight verify`: runs a built-in workload while both backends capture at once, and
//! reports whether they agree — record by record, and metric by metric.

use crate::args::TransportChoice;
use crate::backend;
use crate::cgroup::{StatCgroup, spawn_in};
use anyhow::{Context, Result, ensure};
use ksight_engine::names::HostNames;
use ksight_engine::parity::{RecordLog, compare_logs, compare_snapshots};
use ksight_engine::{Capture, Engine, EventSource, Scope, monotonic_ns};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn verify(device: Option<&Path>, json: bool) -> Result<u8> {
    // eBPF first: from the moment the module starts, both see everything.
    let ebpf = backend::open_ebpf(TransportChoice::Auto)
        .context("ksight verify needs the eBPF backend")?;
    let kmod = backend::open_kmod().context("ksight verify needs the kernel-module backend")?;
    let names = ("kmod", "ebpf");
    let sources: Vec<Box<dyn EventSource>> = vec![kmod.source, ebpf.source];
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
        None => command.extend(["procs-net".into(), "100000".into(), "30000".into()]),
    }
    let mut child = spawn_in(&command, Some(&cgroup))?;
    let mut scope = Scope::default();
    scope.cgroups.insert(cgroup.id);
    scope.pids.insert(child.id());
    let engines = vec![
        Engine::new(names.0, Some(scope.clone())),
        Engine::new(names.1, Some(scope)),
    ];
    let logs = Arc::new(Mutex::new([RecordLog::default(), RecordLog::default()]));
    let tap_logs = logs.clone();
    let mut capture = Capture::start(sources, engines).tapped(Box::new(move |i, batch| {
        // Everything is logged; the window is applied to pairs when comparing.
        tap_logs.lock().expect("record log")[i].add(batch, 0);
    }));
    let status = capture
        .pump_while_running(&mut child)?
        .expect("no stop flag: verify waits for its workload");
    // What the kernel finishes after the workload exits (softirq TCP transitions,
    // completions) belongs to the comparison too.
    capture.pump(Instant::now() + Duration::from_millis(500))?;
    // Both backends deliver everything stamped before the stop: the comparison window
    // is exact, from the moment both were attached to the stop.
    let done = capture.finish()?;
    ensure!(
        done.drained,
        "a backend did not deliver its records within the drain timeout"
    );
    let stopped = done.stopped_at_ns;
    if let Err(e) = cgroup.remove() {
        eprintln!("ksight: warning: {e:#}");
    }
    ensure!(status.success(), "the built-in workload failed ({status})");
    let logs = logs.lock().expect("record log");

    let records = compare_logs(&logs[0], &logs[1], names, started, stopped);
    let snapshots: Vec<serde_json::Value> = done
        .engines
        .iter()
        .map(|e| serde_json::to_value(e.snapshot(&HostNames { live: true })))
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
