//! Aggregation against synthetic streams whose ground truth the test sets.

use event_abi::{block_op, kind};
use ksight_engine::names::NoNames;
use ksight_engine::synthetic::Synth;
use ksight_engine::{Engine, RawBatch, Scope, Snapshot};

const CG: u64 = 77;
const OTHER_CG: u64 = 5;

fn run(batch: &RawBatch, scope: Option<Scope>) -> Snapshot {
    let mut engine = Engine::new("test", scope);
    engine.ingest(batch);
    engine.flush();
    engine.snapshot(&NoNames)
}

fn scope() -> Scope {
    let mut s = Scope::default();
    s.cgroups.insert(CG);
    s
}

/// The workload in scope, interleaved with the same activity from another cgroup.
fn workload() -> RawBatch {
    let mut s = Synth::new();
    s.exec(100, 1, CG, "/bin/sh");
    s.exec(900, 1, OTHER_CG, "/bin/other");
    s.fork(100, 101, CG, false);
    s.fork(100, 150, CG, true);
    s.exec(101, 100, CG, "/bin/false");
    s.exit(101, CG, "false", 1 << 8);
    s.fork(100, 102, CG, false);
    s.exit(102, CG, "sh", 9); // SIGKILL
    s.tcp_connection(100, 100, CG, 0xa0, 0xb0, 40000, 10_000, 3_000);
    s.tcp_connection(900, 900, OTHER_CG, 0xc0, 0xd0, 40001, 1, 1);
    s.tcp_event(kind::TCP_RESET_SENT, 100, CG, 0, 0);
    s.tcp_event(kind::TCP_RESET_RECEIVED, 0, 0, 0xe0, CG);
    s.tcp_event(kind::TCP_RETRANSMIT, 0, 0, 0xf0, OTHER_CG);
    let loop0 = 7 << 20;
    s.block_io(100, CG, loop0, 0, 4096, block_op::WRITE, 100_000);
    s.block_io(100, CG, loop0, 8, 65536, block_op::READ, 300_000);
    s.block_io(900, OTHER_CG, loop0, 512, 4096, block_op::WRITE, 1);
    s.exit(100, CG, "sh", 3 << 8);
    s.batch
}

#[test]
fn scoped_aggregates_equal_the_ground_truth() {
    let snap = run(&workload(), Some(scope()));
    let p = &snap.process;
    assert_eq!((p.execs, p.forks, p.threads, p.exits), (2, 2, 1, 3));
    let codes: Vec<(&str, u64)> = p.exit_codes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(codes, [("1", 1), ("137", 1), ("3", 1)]);
    let t = &snap.tcp;
    assert_eq!((t.connects, t.accepts, t.closes), (1, 1, 2));
    assert_eq!((t.bytes_sent, t.bytes_received), (13_000, 13_000));
    assert_eq!((t.resets_sent, t.resets_received, t.retransmits), (1, 1, 0));
    assert_eq!(t.connections.len(), 2);
    let client = t.connections.iter().find(|c| c.role == "active").unwrap();
    assert_eq!((client.sport, client.dport, client.pid), (40000, 8080, 100));
    assert_eq!(
        (client.bytes_sent, client.bytes_received),
        (Some(10_000), Some(3_000))
    );
    assert_eq!(client.comm, "sh");
    let server = t.connections.iter().find(|c| c.role == "passive").unwrap();
    // The server's owner is known from its close(), not from the softirq handshake.
    assert_eq!(
        (server.pid, server.bytes_sent, server.bytes_received),
        (100, Some(3_000), Some(10_000))
    );
    let d = &snap.block.devices;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].dev, "7:0");
    assert_eq!(
        (d[0].reads, d[0].writes, d[0].read_bytes, d[0].write_bytes),
        (1, 1, 65536, 4096)
    );
    assert_eq!(d[0].latency_us.count, 2);
    // 300 µs of device time plus the 1 µs the synthetic clock adds per record (issue,
    // complete), within hdrhistogram's 3 significant digits.
    assert!(
        (d[0].latency_us.max - 302.0).abs() < 0.5,
        "{:?}",
        d[0].latency_us
    );
    assert!(
        (d[0].latency_us.p50 - 102.0).abs() < 0.5,
        "{:?}",
        d[0].latency_us
    );
}

#[test]
fn host_wide_counts_everything() {
    let snap = run(&workload(), None);
    assert_eq!(snap.process.execs, 3);
    assert_eq!(snap.tcp.connects, 2);
    assert_eq!(snap.tcp.retransmits, 1);
    assert_eq!(snap.block.devices[0].writes, 2);
}

#[test]
fn pid_scope_follows_forks() {
    let mut scope = Scope::default();
    scope.pids.insert(100);
    let snap = run(&workload(), Some(scope));
    assert_eq!(
        (snap.process.execs, snap.process.forks, snap.process.exits),
        (2, 2, 3)
    );
}

#[test]
fn order_of_arrival_does_not_change_aggregates() {
    let batch = Synth::host_mix(200);
    let in_order = run(&batch, None);
    // Reverse every run of 7 records: what two CPUs' streams interleaved look like.
    let records: Vec<&[u8]> = batch.iter().collect();
    let mut shuffled = RawBatch::new();
    for chunk in records.chunks(7) {
        for r in chunk.iter().rev() {
            shuffled.push(r);
        }
    }
    assert_eq!(run(&shuffled, None), in_order);
    assert_eq!(in_order.process.execs, 200);
    assert_eq!(in_order.tcp.closes, 400);
}

#[test]
fn malformed_records_are_counted_and_skipped() {
    let good = Synth::host_mix(1);
    let mut batch = RawBatch::new();
    for (i, r) in good.iter().enumerate() {
        batch.push(r);
        if i == 3 {
            batch.push(&r[..r.len() - 1]); // truncated
            let mut bad_kind = r.to_vec();
            bad_kind[28] = 0xee; // low byte of the kind field
            batch.push(&bad_kind);
        }
    }
    let snap = run(&batch, None);
    assert_eq!(snap.malformed_records, 2);
    assert_eq!(
        snap,
        Snapshot {
            malformed_records: 2,
            ..run(&good, None)
        }
    );
}

#[test]
fn a_merged_request_completes_every_bio_it_covers() {
    let mut s = Synth::new();
    let dev = (8 << 20) | 16;
    s.block_event(kind::BLOCK_QUEUE, 1, CG, dev, 100, 4096, block_op::WRITE);
    s.block_event(kind::BLOCK_QUEUE, 1, CG, dev, 108, 4096, block_op::WRITE);
    s.block_event(kind::BLOCK_ISSUE, 0, 0, dev, 100, 8192, block_op::WRITE);
    s.block_event(kind::BLOCK_COMPLETE, 0, 0, dev, 100, 8192, block_op::WRITE);
    // A later request at the second bio's sector must not match the already merged bio.
    s.block_event(kind::BLOCK_COMPLETE, 0, 0, dev, 108, 4096, block_op::WRITE);
    let snap = run(&s.batch, Some(scope()));
    let d = &snap.block.devices[0];
    assert_eq!((d.writes, d.write_bytes, d.latency_us.count), (1, 8192, 1));
}

#[test]
fn ignored_cgroups_drop_their_events_by_owner_cgroup() {
    let mut engine = Engine::new("test", None);
    engine.set_ignored_cgroups([OTHER_CG]);
    engine.ingest(&workload());
    engine.flush();
    let snap = engine.snapshot(&NoNames);
    // The other cgroup's exec, its connection's 10 state changes (by socket cgroup), its
    // retransmit and its queued block request; never block issue/complete records.
    assert_eq!(engine.ignored_events(), 1 + 10 + 1 + 1);
    assert!(
        snap.cgroups.iter().all(|c| c.cgroup_id != OTHER_CG),
        "{:?}",
        snap.cgroups
    );
    let scoped = run(&workload(), Some(scope()));
    assert_eq!(snap.process.execs, scoped.process.execs);
    assert_eq!(snap.process.exit_codes, scoped.process.exit_codes);
    assert_eq!(
        (
            snap.tcp.connects,
            snap.tcp.closes,
            snap.tcp.bytes_sent,
            snap.tcp.retransmits
        ),
        (1, 2, 13_000, 0)
    );
    // The device saw all three requests; only two are attributed to a queueing cgroup.
    let dev = &snap.block.devices[0];
    assert_eq!((dev.reads, dev.writes), (1, 2));
    let cg = snap.cgroups.iter().find(|c| c.cgroup_id == CG).unwrap();
    assert_eq!((cg.block_reads, cg.block_writes), (1, 1));
    // An empty set turns the filter off.
    let mut engine = Engine::new("test", None);
    engine.set_ignored_cgroups([OTHER_CG]);
    engine.set_ignored_cgroups([]);
    engine.ingest(&workload());
    engine.flush();
    assert_eq!(engine.ignored_events(), 0);
    assert!(
        engine
            .snapshot(&NoNames)
            .cgroups
            .iter()
            .any(|c| c.cgroup_id == OTHER_CG)
    );
}

#[test]
fn ignoring_a_cgroup_forgets_what_it_had_going() {
    // A process and a connection of OTHER_CG start; then OTHER_CG is ignored, so their
    // exit and close never come: nothing of it may stay behind.
    let mut s = Synth::new();
    s.exec(900, 1, OTHER_CG, "/bin/other");
    s.exec(100, 1, CG, "/bin/sh");
    let mut engine = Engine::new("test", None);
    engine.ingest(&s.batch);
    engine.flush();
    let before = engine.snapshot(&NoNames);
    assert_eq!(before.process.processes.len(), 2);
    engine.set_ignored_cgroups([OTHER_CG]);
    engine.forget_finished();
    let after = engine.snapshot(&NoNames);
    let pids: Vec<u32> = after.process.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [100]);
    assert!(after.cgroups.iter().all(|c| c.cgroup_id != OTHER_CG));
}
