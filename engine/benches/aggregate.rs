//! Engine throughput: records per second from raw batches (as a replay delivers them)
//! through decode, reorder and the full aggregation, on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use event_abi::sock_dir;
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
    // 20 connections × 500 HTTP/1.1 keep-alive exchanges seen at both ends (4 records an
    // exchange): requests parsed, paired and counted; 20 000 requests.
    let (batch, requests) = http_mix();
    check_requests(&batch, requests);
    bench_mix(c, "engine_requests", &batch);
}

const CONNS: u32 = 20;
const PER_CONN: usize = 500;

/// Socket I/O records of HTTP/1.1 exchanges with browser-like headers, copied up to the
/// default snaplen; the requests it holds, counted at both ends.
fn http_mix() -> (ksight_engine::RawBatch, u64) {
    let mut s = Synth::new();
    let cg = 42;
    let paths = [
        "/api/v1/users/{}/profile",
        "/api/v1/items/{}",
        "/static/js/{}/app.js",
    ];
    let snap = |b: &[u8]| b[..b.len().min(512)].to_vec();
    for c in 0..CONNS {
        let (client, server) = (2000 + c, 1000);
        let sock = 0xffff_0000_0000 + u64::from(c) * 2;
        let port = 40_000 + c as u16;
        let (ct, st) = (Synth::tuple(port, 8080), Synth::tuple(8080, port));
        s.tcp_open(client, cg, sock, sock + 1, port);
        let (mut sent, mut received) = (0, 0);
        for k in 0..PER_CONN {
            let path = paths[k % paths.len()].replace("{}", &(10_000 + k * 7).to_string());
            let request = format!(
                "GET {path}?fields=name,email HTTP/1.1\r\n\
                 Host: shop.example.com\r\n\
                 User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
                 Accept: application/json, text/plain, */*\r\n\
                 Accept-Language: en-US,en;q=0.5\r\n\
                 Accept-Encoding: gzip, deflate, br\r\n\
                 Referer: https://shop.example.com/cart\r\n\
                 Cookie: session=4f9c2a7be81d4c3f9a1b6e2d\r\n\
                 Connection: keep-alive\r\n\r\n"
            );
            let body = format!(
                "{{\"id\":{},\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\"}}\n",
                10_000 + k * 7
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                body.len()
            );
            let (q, r) = (request.as_bytes(), response.as_bytes());
            let (ql, rl) = (q.len() as u64, r.len() as u64);
            s.tcp_call(client, cg, sock, ct, sock_dir::SEND, ql, &snap(q));
            s.tcp_call(server, cg, sock + 1, st, sock_dir::RECV, ql, &snap(q));
            s.tcp_call(server, cg, sock + 1, st, sock_dir::SEND, rl, &snap(r));
            s.tcp_call(client, cg, sock, ct, sock_dir::RECV, rl, &snap(r));
            sent += ql;
            received += rl;
        }
        s.tcp_close(client, server, cg, sock, sock + 1, port, sent, received);
    }
    (s.batch, 2 * u64::from(CONNS) * PER_CONN as u64)
}

/// A broken parser must not look fast: every request is counted, at both ends.
fn check_requests(batch: &ksight_engine::RawBatch, requests: u64) {
    let mut engine = Engine::new("bench", None);
    engine.ingest(batch);
    engine.flush();
    let snap = engine.snapshot(&NoNames);
    let counted: u64 = snap.http.requests.iter().map(|r| r.count).sum();
    assert_eq!(counted, requests, "{:?}", snap.protocols);
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
