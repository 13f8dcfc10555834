//! What an ignored cgroup costs in the kernel: the same workload in a cgroup of its own,
//! captured and then ignored (the cgroup-id filter pushed into the programs), in
//! alternating rounds; BPF run-time statistics give ns per program run for each. Run as
//! root through `cargo xtask bench filter`.
//!
//! usage: filter-cost KSIGHT_BIN [ROUNDS] [EXECS] [CONNECTS]

use ksight_backend_ebpf::{EbpfOptions, EbpfSource, ProgramStats, enable_run_time_stats};
use ksight_source::{EventSource, RawBatch};
use ksight_testkit::TestCgroup;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (runs, ns) per program.
type Costs = BTreeMap<String, (u64, u64)>;

fn snapshot(source: &Mutex<EbpfSource>) -> Costs {
    source
        .lock()
        .unwrap()
        .program_stats()
        .into_iter()
        .map(
            |ProgramStats {
                 tracepoint,
                 run_count,
                 run_time_ns,
                 ..
             }| { (tracepoint, (run_count, run_time_ns)) },
        )
        .collect()
}

fn add(total: &mut Costs, before: &Costs, after: &Costs) {
    for (tp, (runs, ns)) in after {
        let (r0, n0) = before.get(tp).copied().unwrap_or((0, 0));
        let t = total.entry(tp.clone()).or_default();
        t.0 += runs - r0;
        t.1 += ns - n0;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ksight = args
        .first()
        .expect("usage: filter-cost KSIGHT_BIN [ROUNDS] [EXECS] [CONNECTS]");
    let num = |i: usize, default: u32| {
        args.get(i)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let (rounds, execs, connects) = (num(1, 5), num(2, 500), num(3, 1000));

    let cgroup = TestCgroup::new("filter-cost");
    let id = cgroup.id;

    let _stats = enable_run_time_stats().expect("BPF run-time statistics");
    let mut source = EbpfSource::open(EbpfOptions::default()).expect("the eBPF backend");
    let filter = source.cgroup_filter().expect("a cgroup filter");
    let source = Arc::new(Mutex::new(source));
    let stop = Arc::new(AtomicBool::new(false));
    // Drain as the agent would, so the captured rounds pay for delivery too.
    let reader = {
        let (source, stop) = (source.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut batch = RawBatch::new();
            while !stop.load(Ordering::Relaxed) {
                batch.clear();
                let _ = source
                    .lock()
                    .unwrap()
                    .poll(&mut batch, Duration::from_millis(20));
            }
        })
    };
    let workload = || {
        let script = format!(
            "i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done; {ksight} workload connect-loop {connects}"
        );
        let mut cmd = cgroup.command("/bin/sh", &["-c", &script]);
        assert!(cmd.status().expect("the workload").success());
    };

    let (mut captured, mut ignored) = (Costs::new(), Costs::new());
    for _ in 0..rounds {
        for (ids, total) in [(&[][..], &mut captured), (&[id][..], &mut ignored)] {
            filter.set_ignored(ids).expect("set_ignored");
            let before = snapshot(&source);
            workload();
            std::thread::sleep(Duration::from_millis(200));
            add(total, &before, &snapshot(&source));
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let filtered = source.lock().unwrap().counters().filtered;

    println!(
        "{rounds} rounds × ({execs} execs + {connects} loopback connections) in one cgroup; ns per program run"
    );
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>8}",
        "tracepoint", "runs", "captured", "ignored", "ratio"
    );
    for (tp, &(runs, ns)) in &captured {
        let (iruns, ins) = ignored.get(tp).copied().unwrap_or((0, 0));
        // The workload does no block I/O: block runs are the rest of the machine's.
        if runs == 0 || iruns == 0 || tp.starts_with("block:") {
            continue;
        }
        let (c, i) = (ns as f64 / runs as f64, ins as f64 / iruns as f64);
        println!("{tp:<32} {runs:>10} {c:>10.0} {i:>10.0} {:>8.2}", i / c);
    }
    println!("records filtered in the kernel: {filtered}");
    drop(source);
}
