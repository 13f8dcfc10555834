//! Requests through the whole engine on synthetic records: both ends of a loopback
//! connection, rows per role, connections per protocol, the service map's edge.

use crate::Engine;
use crate::names::NoNames;
use crate::snapshot::Snapshot;
use crate::synthetic::Synth;
use event_abi::sock_dir;

const SEND: u8 = sock_dir::SEND;
const RECV: u8 = sock_dir::RECV;
const CG: u64 = 7;

fn run(e: &mut Engine, s: &mut Synth) -> Snapshot {
    e.ingest(&std::mem::take(&mut s.batch));
    e.flush();
    e.snapshot(&NoNames)
}

#[test]
fn http_exchanges_are_rows_for_both_ends_and_an_edge() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let (c, srv) = (Synth::tuple(40000, 8080), Synth::tuple(8080, 40000));
    s.tcp_open(100, CG, 0xa, 0xb, 40000);
    let req = b"GET /items/42?x=1 HTTP/1.1\r\nHost: Svc.Test\r\n\r\n";
    let body = vec![b'b'; 3000];
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n".to_vec();
    resp.extend_from_slice(&body);
    let fail = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
    // Two exchanges; the 3000-byte body is copied only up to a 512-byte snaplen.
    s.tcp_call(100, CG, 0xa, c, SEND, req.len() as u64, req);
    s.tcp_call(200, CG, 0xb, srv, RECV, req.len() as u64, req);
    s.tcp_call(200, CG, 0xb, srv, SEND, resp.len() as u64, &resp[..512]);
    s.tcp_call(100, CG, 0xa, c, RECV, resp.len() as u64, &resp[..512]);
    s.tcp_call(100, CG, 0xa, c, SEND, req.len() as u64, req);
    s.tcp_call(200, CG, 0xb, srv, RECV, req.len() as u64, req);
    s.tcp_call(200, CG, 0xb, srv, SEND, fail.len() as u64, fail);
    s.tcp_call(100, CG, 0xa, c, RECV, fail.len() as u64, fail);
    let snap = run(&mut e, &mut s);
    let rows = &snap.http.requests;
    for role in ["client", "server"] {
        let get = |status: u16| {
            rows.iter()
                .find(|r| r.role == role && r.status == status)
                .unwrap_or_else(|| panic!("{role} {status}: {rows:#?}"))
        };
        let (ok, busy) = (get(200), get(503));
        assert_eq!(
            (ok.method.as_str(), ok.route.as_str(), ok.count, ok.errors),
            ("GET", "/items/*", 1, 0)
        );
        assert_eq!((busy.count, busy.errors), (1, 1));
        assert_eq!(ok.host.as_deref(), Some("svc.test"));
        assert_eq!(ok.latency_us.count, 1);
        let peer = if role == "client" {
            Some("127.0.0.1:8080")
        } else {
            None
        };
        assert_eq!(ok.peer.as_deref(), peer);
        assert_eq!(ok.protocol, "http");
    }
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let conns = &snap.protocols.connections;
    assert_eq!(conns.len(), 2, "{conns:#?}");
    let sent: u64 = 2 * req.len() as u64;
    let received = (resp.len() + fail.len()) as u64;
    for r in conns {
        assert_eq!((r.protocol.as_str(), r.connections), ("http", 1));
        let (s, rcv) = if r.role == "client" {
            (sent, received)
        } else {
            (received, sent)
        };
        assert_eq!((r.bytes_sent, r.bytes_received), (s, rcv), "{r:?}");
    }
    let p = &snap.protocols;
    assert_eq!(
        (p.malformed, p.unmatched_responses, p.unanswered),
        (0, 0, 0)
    );
    let [edge] = &snap.edges[..] else {
        panic!("{:#?}", snap.edges)
    };
    assert_eq!(
        (
            edge.client_cgroup_id,
            edge.server.as_str(),
            edge.server_cgroup_id,
            edge.protocol.as_deref(),
            edge.connections,
            edge.requests,
            edge.errors,
            edge.bytes_sent,
            edge.bytes_received,
        ),
        (
            CG,
            "127.0.0.1:8080",
            Some(CG),
            Some("http"),
            1,
            2,
            1,
            sent,
            received
        )
    );
}

#[test]
fn a_full_table_forgets_its_idlest_connections_not_the_new_ones() {
    use crate::requests::{MAX_CONNS, Requests};
    let mut r = Requests::default();
    let mut e = event_abi::SockIoEvent {
        direction: SEND,
        bytes: 1,
        ..Default::default()
    };
    // Connections whose close never comes, one call each, then one more.
    for i in 0..=MAX_CONNS as u64 {
        e.sock_id = i + 1;
        e.header.ts_ns = i;
        r.record(&e, b"x", CG, None);
    }
    let p = r.protocols_summary();
    assert_eq!(p.untracked_connections, MAX_CONNS as u64 / 2 + 1);
    // The newest connection is parsed: its request shows once it is answered.
    let last = MAX_CONNS as u64 + 2;
    e.sock_id = last;
    let req = b"GET / HTTP/1.1\r\n\r\n";
    e.bytes = req.len() as u64;
    r.record(&e, req, CG, Some(ksight_protocols::Role::Client));
    e.direction = RECV;
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    e.bytes = resp.len() as u64;
    r.record(&e, resp, CG, Some(ksight_protocols::Role::Client));
    assert_eq!(r.http_summary().requests.len(), 1);
    assert_eq!(
        r.protocols_summary().untracked_connections,
        p.untracked_connections
    );
}
