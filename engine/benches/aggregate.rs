//! Engine throughput: records per second from raw batches (as a replay delivers them)
//! through decode, reorder and the full aggregation, on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ksight_engine::Engine;
use ksight_engine::names::NoNames;
use ksight_engine::synthetic::Synth;
use std::hint::black_box;

fn full_aggregation(c: &mut Criterion) {
    // 4000 rounds × 26 records: process lifecycles, TCP connections, block I/O.
    bench_mix(c, "engine", &Synth::host_mix(4000));
    // 4000 rounds × 21 records, 8 of them socket I/O with payload (200 and 512 bytes of
    // TCP, DNS over UDP at both ends): live TCP bytes, UDP flows, DNS parsing.
    bench_mix(c, "engine_socket_io", &Synth::socket_mix(4000));
}

/// A mix of raw records through the engine: to the aggregates, and to a finished snapshot.
fn bench_mix(c: &mut Criterion, name: &str, batch: &ksight_engine::RawBatch) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("replay_to_aggregates", |b| {
        b.iter(|| {
            let mut engine = Engine::new("bench", None);
            engine.ingest(black_box(batch));
            engine.advance();
            engine.flush();
            black_box(engine.records)
        })
    });
    group.bench_function("replay_to_snapshot", |b| {
        b.iter(|| {
            let mut engine = Engine::new("bench", None);
            engine.ingest(black_box(batch));
            engine.flush();
            black_box(engine.snapshot(&NoNames))
        })
    });
    group.finish();
}

criterion_group!(benches, full_aggregation);
criterion_main!(benches);
