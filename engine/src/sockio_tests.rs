//! Socket I/O aggregation on synthetic records with known ground truth: live TCP bytes,
//! UDP flows, DNS.

use super::*;
use crate::Engine;
use crate::dns::build;
use crate::names::NoNames;
use crate::snapshot::{ConnectionRow, DnsRow, Snapshot};
use crate::synthetic::Synth;
use event_abi::{SockIoEvent, sock_call, sock_dir, sock_flags, tcp_state};

const SEND: u8 = sock_dir::SEND;
const RECV: u8 = sock_dir::RECV;

/// Aggregates what `s` produced since the last call, and snapshots.
fn run(e: &mut Engine, s: &mut Synth) -> Snapshot {
    e.ingest(&std::mem::take(&mut s.batch));
    e.flush();
    e.snapshot(&NoNames)
}

fn conn(snap: &Snapshot, sport: u16) -> &ConnectionRow {
    snap.tcp
        .connections
        .iter()
        .find(|c| c.sport == sport)
        .unwrap_or_else(|| {
            panic!(
                "no connection from port {sport}: {:?}",
                snap.tcp.connections
            )
        })
}

fn bytes(c: &ConnectionRow) -> (Option<u64>, Option<u64>, Option<u64>, Option<u64>) {
    (
        c.bytes_sent,
        c.bytes_received,
        c.call_bytes_sent,
        c.call_bytes_received,
    )
}

fn cgroup_tcp(snap: &Snapshot, id: u64) -> (u64, u64) {
    let c = snap
        .cgroups
        .iter()
        .find(|c| c.cgroup_id == id)
        .expect("cgroup");
    (c.tcp_bytes_sent, c.tcp_bytes_received)
}

fn process_tcp(snap: &Snapshot, pid: u32) -> (u64, u64) {
    let p = snap
        .process
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("process");
    (p.tcp_bytes_sent, p.tcp_bytes_received)
}

const CG: u64 = 7;

#[test]
fn an_open_connection_shows_its_bytes_in_every_interval_and_the_kernel_agrees_at_close() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let (c, srv) = (Synth::tuple(40000, 8080), Synth::tuple(8080, 40000));
    s.tcp_open(100, CG, 0xa, 0xb, 40000);
    // Phase 1: 1000 bytes client → server, read in two calls.
    s.tcp_call(100, CG, 0xa, c, SEND, 1000, &[b'x'; 64]);
    s.tcp_call(200, CG, 0xb, srv, RECV, 600, &[b'x'; 64]);
    s.tcp_call(200, CG, 0xb, srv, RECV, 400, &[]);
    let snap = run(&mut e, &mut s);
    assert_eq!(
        bytes(conn(&snap, 40000)),
        (Some(1000), Some(0), Some(1000), Some(0))
    );
    assert_eq!(
        bytes(conn(&snap, 8080)),
        (Some(0), Some(1000), Some(0), Some(1000))
    );
    assert_eq!(
        conn(&snap, 8080).pid,
        200,
        "the caller owns an accepted connection"
    );
    assert_eq!(
        (
            conn(&snap, 40000).state.as_str(),
            conn(&snap, 40000).since_start
        ),
        ("ESTABLISHED", false)
    );
    assert_eq!((snap.tcp.bytes_sent, snap.tcp.bytes_received), (1000, 1000));
    assert_eq!(cgroup_tcp(&snap, CG), (1000, 1000));
    assert_eq!(
        (process_tcp(&snap, 100), process_tcp(&snap, 200)),
        ((1000, 0), (0, 1000))
    );
    assert_eq!(
        (snap.socket_io.calls, snap.socket_io.payload_bytes),
        (3, 128)
    );

    // Phase 2: 5000 bytes back; rows are cumulative, counters per interval.
    e.reset_interval();
    s.tcp_call(200, CG, 0xb, srv, SEND, 5000, &[b'y'; 512]);
    s.tcp_call(100, CG, 0xa, c, RECV, 4096, &[b'y'; 512]);
    s.tcp_call(100, CG, 0xa, c, RECV, 904, &[b'y'; 512]);
    let snap = run(&mut e, &mut s);
    assert_eq!(
        bytes(conn(&snap, 40000)),
        (Some(1000), Some(5000), Some(1000), Some(5000))
    );
    assert_eq!(
        bytes(conn(&snap, 8080)),
        (Some(5000), Some(1000), Some(5000), Some(1000))
    );
    assert_eq!((snap.tcp.bytes_sent, snap.tcp.bytes_received), (5000, 5000));
    assert_eq!(cgroup_tcp(&snap, CG), (5000, 5000));
    assert_eq!(
        (process_tcp(&snap, 100), process_tcp(&snap, 200)),
        ((0, 5000), (5000, 0))
    );

    // Close: the kernel's counters equal the calls; nothing more is added.
    e.reset_interval();
    s.tcp_close(100, 200, CG, 0xa, 0xb, 40000, 1000, 5000);
    let snap = run(&mut e, &mut s);
    assert_eq!((snap.tcp.closes, snap.tcp.byte_mismatches), (2, 0));
    assert_eq!((snap.tcp.bytes_sent, snap.tcp.bytes_received), (0, 0));
    assert_eq!(
        bytes(conn(&snap, 40000)),
        (Some(1000), Some(5000), Some(1000), Some(5000))
    );
    assert_eq!(
        bytes(conn(&snap, 8080)),
        (Some(5000), Some(1000), Some(5000), Some(1000))
    );
    assert_eq!(conn(&snap, 40000).state, "CLOSE");
}

#[test]
fn a_difference_at_close_is_counted_and_counters_never_go_down() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    // The kernel says 150 went each way where the calls saw 100.
    s.tcp_open(100, CG, 0xa, 0xb, 40000);
    s.tcp_call(100, CG, 0xa, Synth::tuple(40000, 8080), SEND, 100, &[]);
    s.tcp_call(200, CG, 0xb, Synth::tuple(8080, 40000), RECV, 100, &[]);
    s.tcp_close(100, 200, CG, 0xa, 0xb, 40000, 150, 0);
    // Here the kernel says 80 where the calls saw 100: counters keep the 100.
    s.tcp_open(101, CG, 0xc, 0xd, 40001);
    s.tcp_call(101, CG, 0xc, Synth::tuple(40001, 8080), SEND, 100, &[]);
    s.tcp_call(201, CG, 0xd, Synth::tuple(8080, 40001), RECV, 100, &[]);
    s.tcp_close(101, 201, CG, 0xc, 0xd, 40001, 80, 0);
    let snap = run(&mut e, &mut s);
    assert_eq!(snap.tcp.byte_mismatches, 4);
    assert_eq!(
        (snap.tcp.bytes_sent, snap.tcp.bytes_received),
        (150 + 100, 150 + 100)
    );
    assert_eq!(
        bytes(conn(&snap, 40000)),
        (Some(150), Some(0), Some(100), Some(0))
    );
    assert_eq!(
        bytes(conn(&snap, 40001)),
        (Some(80), Some(0), Some(100), Some(0))
    );
    assert_eq!(cgroup_tcp(&snap, CG), (250, 250));
    // The top-up goes to the connection's owner (the closer), the calls to the callers.
    assert_eq!(process_tcp(&snap, 100), (150, 0));
}

#[test]
fn without_socket_io_nothing_changes() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    s.tcp_open(100, CG, 0xa, 0xb, 40000);
    let snap = run(&mut e, &mut s);
    assert_eq!(bytes(conn(&snap, 40000)), (None, None, None, None));
    s.tcp_close(100, 200, CG, 0xa, 0xb, 40000, 150, 20);
    let snap = run(&mut e, &mut s);
    assert_eq!(bytes(conn(&snap, 40000)), (Some(150), Some(20), None, None));
    assert_eq!((snap.tcp.bytes_sent, snap.tcp.byte_mismatches), (170, 0));
    assert_eq!(snap.socket_io.calls, 0);
}

#[test]
fn a_connection_open_before_capture_counts_since_start_and_says_so() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let t = Synth::tuple(50000, 443);
    s.tcp_call(300, 9, 0xc, t, SEND, 700, b"hello");
    s.tcp_call(300, 9, 0xc, t, RECV, 1200, &[]);
    let snap = run(&mut e, &mut s);
    let row = conn(&snap, 50000);
    assert_eq!(
        (row.role.as_str(), row.since_start, row.pid, row.cgroup_id),
        ("unknown", true, 300, 9)
    );
    assert_eq!(
        (row.state.as_str(), bytes(row)),
        (
            "ESTABLISHED",
            (Some(700), Some(1200), Some(700), Some(1200))
        )
    );
    assert_eq!((snap.tcp.connects, snap.tcp.accepts), (0, 0));
    assert_eq!((snap.tcp.bytes_sent, snap.tcp.bytes_received), (700, 1200));
    assert_eq!(cgroup_tcp(&snap, 9), (700, 1200));

    // It closes: 300 bytes went out before capture started; they arrive now, and it is
    // no mismatch (the calls were not all seen).
    e.reset_interval();
    use tcp_state::*;
    s.state(300, 9, 0xc, 9, t, ESTABLISHED, FIN_WAIT1, None);
    s.state(0, 0, 0xc, 9, t, FIN_WAIT1, FIN_WAIT2, None);
    s.state(
        0,
        0,
        0xc,
        9,
        t,
        FIN_WAIT2,
        CLOSE,
        Some((1000 + 1, 1200 + 1)),
    );
    // A call completing after the close (data the kernel had received, read late): no new
    // connection, no bytes in the totals (the close counted them), only in the row's sums.
    s.tcp_call(300, 9, 0xc, t, RECV, 10, &[]);
    let snap = run(&mut e, &mut s);
    assert_eq!((snap.tcp.closes, snap.tcp.byte_mismatches), (1, 0));
    assert_eq!((snap.tcp.bytes_sent, snap.tcp.bytes_received), (300, 0));
    assert_eq!(snap.tcp.connections.len(), 1);
    let row = conn(&snap, 50000);
    assert_eq!(
        (row.since_start, bytes(row)),
        (true, (Some(1000), Some(1200), Some(700), Some(1210)))
    );
    assert_eq!(snap.socket_io.calls, 1);
}

/// A UDP record with its `sendmmsg`/`recvmmsg` fields.
#[allow(clippy::too_many_arguments)]
fn datagram(
    s: &mut Synth,
    pid: u32,
    cg: u64,
    sock: u64,
    tuple: TcpTuple,
    direction: u8,
    call: u16,
    bytes: usize,
    msg_index: u16,
    unreported: u32,
    flags: u16,
) {
    let ev = SockIoEvent {
        sock_id: sock,
        bytes: bytes as u64,
        tuple,
        call,
        direction,
        protocol: IPPROTO_UDP,
        flags,
        msg_index,
        unreported_msgs: unreported,
        ..Default::default()
    };
    s.sock_io(pid, cg, ev, &vec![b'u'; bytes]);
}

#[test]
fn udp_flows_connected_unconnected_ipv6_and_mmsg() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let client = Synth::tuple_of(("10.0.0.1", 5000), ("10.0.0.2", 9000));
    for i in 0..3 {
        datagram(
            &mut s,
            400,
            11,
            0x10,
            client,
            SEND,
            sock_call::SENDMMSG,
            100,
            i,
            0,
            0,
        );
    }
    datagram(
        &mut s,
        400,
        11,
        0x10,
        client,
        RECV,
        sock_call::RECVMMSG,
        50,
        0,
        0,
        0,
    );
    datagram(
        &mut s,
        400,
        11,
        0x10,
        client,
        RECV,
        sock_call::RECVMMSG,
        50,
        1,
        4,
        0,
    );
    let from = |addr: &str, port| Synth::tuple_of(("0.0.0.0", 9000), (addr, port));
    let peer = sock_flags::PEER_FROM_CALL;
    datagram(
        &mut s,
        500,
        12,
        0x11,
        from("10.0.0.1", 5000),
        RECV,
        sock_call::RECVFROM,
        100,
        0,
        0,
        peer,
    );
    datagram(
        &mut s,
        500,
        12,
        0x11,
        from("10.0.0.3", 6000),
        RECV,
        sock_call::RECVFROM,
        30,
        0,
        0,
        peer,
    );
    datagram(
        &mut s,
        500,
        12,
        0x11,
        from("10.0.0.3", 6000),
        SEND,
        sock_call::SENDTO,
        20,
        0,
        0,
        peer,
    );
    let v6 = Synth::tuple_of(("::1", 7000), ("::1", 8125));
    datagram(
        &mut s,
        600,
        11,
        0x12,
        v6,
        SEND,
        sock_call::SENDMSG,
        10,
        0,
        0,
        0,
    );
    let snap = run(&mut e, &mut s);
    let u = &snap.udp;
    assert_eq!(
        (
            u.bytes_sent,
            u.bytes_received,
            u.datagrams_sent,
            u.datagrams_received
        ),
        (330, 230, 5, 4)
    );
    let rows: Vec<_> = u
        .flows
        .iter()
        .map(|f| {
            (
                f.saddr.as_str(),
                f.sport,
                f.daddr.as_str(),
                f.dport,
                f.pid,
                f.cgroup_id,
                f.bytes_sent,
                f.bytes_received,
                f.datagrams_sent,
                f.datagrams_received,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("10.0.0.1", 5000, "10.0.0.2", 9000, 400, 11, 300, 100, 3, 2),
            ("0.0.0.0", 9000, "10.0.0.1", 5000, 500, 12, 0, 100, 0, 1),
            ("0.0.0.0", 9000, "10.0.0.3", 6000, 500, 12, 20, 30, 1, 1),
            ("::1", 7000, "::1", 8125, 600, 11, 10, 0, 1, 0),
        ]
    );
    let cg = |id| {
        let c = snap.cgroups.iter().find(|c| c.cgroup_id == id).unwrap();
        (
            c.udp_bytes_sent,
            c.udp_bytes_received,
            c.udp_datagrams_sent,
            c.udp_datagrams_received,
        )
    };
    assert_eq!((cg(11), cg(12)), ((310, 100, 4, 2), (20, 130, 1, 2)));
    assert_eq!(snap.socket_io.unreported_msgs, 4);
    assert_eq!(
        (snap.socket_io.calls, snap.socket_io.payload_bytes),
        (9, 560)
    );
    assert_eq!((snap.tcp.bytes_sent, snap.dns.malformed), (0, 0));
    // Per interval.
    e.reset_interval();
    let snap = run(&mut e, &mut s);
    assert!(snap.udp.flows.is_empty() && snap.udp.datagrams_sent == 0);
}

#[test]
fn udp_flows_are_bounded() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let t = Synth::tuple_of(("10.0.0.1", 5000), ("10.0.0.2", 9000));
    for pid in 0..(MAX_UDP_FLOWS as u32 + 3) {
        datagram(
            &mut s,
            10_000 + pid,
            1,
            0x10,
            t,
            SEND,
            sock_call::SENDTO,
            1,
            0,
            0,
            0,
        );
    }
    let snap = run(&mut e, &mut s);
    assert_eq!(snap.udp.flows.len(), MAX_UDP_FLOWS);
    assert_eq!(
        (snap.udp.unlisted_datagrams, snap.udp.datagrams_sent),
        (3, MAX_UDP_FLOWS as u64 + 3)
    );
    // Equal flows in a fixed order.
    assert!(snap.udp.flows.windows(2).all(|w| w[0].pid < w[1].pid));
}

fn dns_row<'a>(snap: &'a Snapshot, role: &str, qname: &str, qtype: &str) -> &'a DnsRow {
    snap.dns
        .queries
        .iter()
        .find(|r| r.role == role && r.qname == qname && r.qtype == qtype)
        .unwrap_or_else(|| panic!("no {role} {qname} {qtype}: {:#?}", snap.dns.queries))
}

fn summary(r: &DnsRow) -> (&str, &str, u64, u64, u64, u64, u64) {
    (
        r.server.as_str(),
        r.rcode.as_str(),
        r.count,
        r.timeouts,
        r.latency_us.count,
        r.latency_sum_ns,
        r.cgroup_id,
    )
}

#[test]
fn dns_over_udp_client_and_server_with_a_timeout() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let client = Synth::tuple_of(("127.0.0.1", 40001), ("127.0.0.53", 53));
    let server = Synth::tuple_of(("127.0.0.53", 53), ("127.0.0.1", 40001));
    let (qa, qaaaa) = (
        build::query(0x1111, "Example.com", 1),
        build::query(0x2222, "Example.com", 28),
    );
    let (aa, aaaaa) = (
        build::answer(0x1111, "Example.com", 1, 0),
        build::answer(0x2222, "Example.com", 28, 3),
    );
    // glibc: both queries with one sendmmsg, the answers with recvfrom.
    s.udp_datagram(700, 20, 0x20, client, SEND, sock_call::SENDMMSG, false, &qa);
    s.udp_datagram(
        700,
        20,
        0x20,
        client,
        SEND,
        sock_call::SENDMMSG,
        false,
        &qaaaa,
    );
    s.udp_datagram(800, 21, 0x21, server, RECV, sock_call::RECVFROM, true, &qa);
    s.udp_datagram(
        800,
        21,
        0x21,
        server,
        RECV,
        sock_call::RECVFROM,
        true,
        &qaaaa,
    );
    s.udp_datagram(800, 21, 0x21, server, SEND, sock_call::SENDTO, true, &aa);
    s.udp_datagram(800, 21, 0x21, server, SEND, sock_call::SENDTO, true, &aaaaa);
    s.udp_datagram(700, 20, 0x20, client, RECV, sock_call::RECVFROM, true, &aa);
    s.udp_datagram(
        700,
        20,
        0x20,
        client,
        RECV,
        sock_call::RECVFROM,
        true,
        &aaaaa,
    );
    let snap = run(&mut e, &mut s);
    assert_eq!(snap.dns.queries.len(), 4);
    // Records are 1 µs apart.
    let c = dns_row(&snap, "client", "example.com", "A");
    assert_eq!(summary(c), ("127.0.0.53:53", "NOERROR", 1, 0, 1, 6000, 20));
    assert_eq!((c.latency_us.p50, c.latency_us.max), (6.0, 6.0));
    assert_eq!(c.latency_buckets.iter().sum::<u64>(), 1);
    assert_eq!(
        summary(dns_row(&snap, "client", "example.com", "AAAA")),
        ("127.0.0.53:53", "NXDOMAIN", 1, 0, 1, 6000, 20)
    );
    assert_eq!(
        summary(dns_row(&snap, "server", "example.com", "A")),
        ("127.0.0.53:53", "NOERROR", 1, 0, 1, 2000, 21)
    );
    assert_eq!(
        summary(dns_row(&snap, "server", "example.com", "AAAA")),
        ("127.0.0.53:53", "NXDOMAIN", 1, 0, 1, 2000, 21)
    );
    assert_eq!(
        (snap.udp.datagrams_sent, snap.udp.datagrams_received),
        (4, 4)
    );

    // A query never answered: a timeout once event time is 5 s past it, not before.
    e.reset_interval();
    s.udp_datagram(
        700,
        20,
        0x20,
        client,
        SEND,
        sock_call::SENDTO,
        false,
        &build::query(3, "slow.example", 1),
    );
    s.ts += DNS_TIMEOUT_NS - 1000;
    s.exec(1, 0, 1, "/bin/true"); // exactly 5 s later
    let snap = run(&mut e, &mut s);
    assert!(snap.dns.queries.is_empty());
    s.exec(1, 0, 1, "/bin/true");
    let snap = run(&mut e, &mut s);
    assert_eq!(
        summary(dns_row(&snap, "client", "slow.example", "A")),
        ("127.0.0.53:53", "TIMEOUT", 1, 1, 0, 0, 20)
    );

    // A query waits across an interval reset.
    s.udp_datagram(
        700,
        20,
        0x20,
        client,
        SEND,
        sock_call::SENDTO,
        false,
        &build::query(4, "later.example", 1),
    );
    run(&mut e, &mut s);
    e.reset_interval();
    s.udp_datagram(
        700,
        20,
        0x20,
        client,
        RECV,
        sock_call::RECVFROM,
        true,
        &build::answer(4, "later.example", 1, 2),
    );
    let snap = run(&mut e, &mut s);
    assert_eq!(
        summary(dns_row(&snap, "client", "later.example", "A")),
        ("127.0.0.53:53", "SERVFAIL", 1, 0, 1, 1000, 20)
    );
    assert_eq!(snap.dns.queries.len(), 1);
}

#[test]
fn dns_malformed_and_other_ports() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let to53 = Synth::tuple_of(("10.0.0.1", 40002), ("10.0.0.9", 53));
    let to5353 = Synth::tuple_of(("10.0.0.1", 40003), ("10.0.0.9", 5353));
    let to9999 = Synth::tuple_of(("10.0.0.1", 40004), ("10.0.0.9", 9999));
    let q = build::query(5, "printer.local", 12);
    // On port 53: garbage and a cut-off question are malformed.
    s.udp_datagram(
        1,
        1,
        0x40,
        to53,
        SEND,
        sock_call::SENDTO,
        false,
        b"not dns at all, surely",
    );
    s.udp_datagram(
        1,
        1,
        0x40,
        to53,
        SEND,
        sock_call::SENDTO,
        false,
        &q[..q.len() - 3],
    );
    // Elsewhere: garbage is just not DNS; a message passing the strict check is.
    s.udp_datagram(
        1,
        1,
        0x41,
        to9999,
        SEND,
        sock_call::SENDTO,
        false,
        b"not dns at all, surely",
    );
    s.udp_datagram(
        1,
        1,
        0x41,
        to9999,
        SEND,
        sock_call::SENDTO,
        false,
        &q[..q.len() - 3],
    );
    s.udp_datagram(1, 1, 0x42, to5353, SEND, sock_call::SENDTO, false, &q);
    s.udp_datagram(
        1,
        1,
        0x42,
        to5353,
        RECV,
        sock_call::RECVFROM,
        true,
        &build::answer(5, "printer.local", 12, 0),
    );
    let snap = run(&mut e, &mut s);
    assert_eq!(snap.dns.malformed, 2);
    assert_eq!(snap.dns.queries.len(), 1);
    assert_eq!(
        summary(dns_row(&snap, "client", "printer.local", "PTR")),
        ("10.0.0.9:5353", "NOERROR", 1, 0, 1, 1000, 1)
    );
}

#[test]
fn dns_over_tcp_split_and_cut_off_messages() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let client = Synth::tuple_of(("::1", 41000), ("::1", 53));
    let server = Synth::tuple_of(("::1", 53), ("::1", 41000));
    let framed = |m: &[u8]| {
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(m);
        f
    };
    let q = build::query(7, "tcp.example", 16);
    let a = build::message(7, 0x8180, "tcp.example", 16, 40);
    // The client writes the length alone, then the message.
    s.tcp_call(900, 30, 0x30, client, SEND, 2, &framed(&q)[..2]);
    s.tcp_call(900, 30, 0x30, client, SEND, q.len() as u64, &q);
    // The server reads it in one call.
    s.tcp_call(901, 31, 0x31, server, RECV, q.len() as u64 + 2, &framed(&q));
    // The answer is longer than the snaplen: the record carries its start only.
    let fa = framed(&a);
    s.tcp_call(
        901,
        31,
        0x31,
        server,
        SEND,
        fa.len() as u64,
        &fa[..q.len() + 10],
    );
    // The client reads it in two calls.
    s.tcp_call(900, 30, 0x30, client, RECV, 10, &fa[..10]);
    s.tcp_call(900, 30, 0x30, client, RECV, fa.len() as u64 - 10, &fa[10..]);
    // A second exchange on the same connection: the stream is still in step.
    let q2 = build::query(8, "two.example", 1);
    s.tcp_call(
        900,
        30,
        0x30,
        client,
        SEND,
        q2.len() as u64 + 2,
        &framed(&q2),
    );
    s.tcp_call(
        900,
        30,
        0x30,
        client,
        RECV,
        q2.len() as u64 + 2 + 16,
        &framed(&build::answer(8, "two.example", 1, 0)),
    );
    let snap = run(&mut e, &mut s);
    assert_eq!(snap.dns.malformed, 0, "{:#?}", snap.dns);
    assert_eq!(
        summary(dns_row(&snap, "client", "tcp.example", "TXT")),
        ("[::1]:53", "NOERROR", 1, 0, 1, 4000, 30)
    );
    assert_eq!(
        summary(dns_row(&snap, "server", "tcp.example", "TXT")),
        ("[::1]:53", "NOERROR", 1, 0, 1, 1000, 31)
    );
    assert_eq!(
        summary(dns_row(&snap, "client", "two.example", "A")),
        ("[::1]:53", "NOERROR", 1, 0, 1, 1000, 30)
    );
    assert_eq!(snap.dns.queries.len(), 3);
    // The TCP bytes count as live bytes all the same.
    assert_eq!(
        bytes(conn(&snap, 41000)).0,
        Some(2 + q.len() as u64 + q2.len() as u64 + 2)
    );
}

#[test]
fn qnames_are_bounded_per_interval() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let server = Synth::tuple_of(("10.0.0.53", 53), ("10.0.0.1", 40000));
    // Answers whose queries were not seen still count (without a latency).
    for i in 0..(MAX_QNAMES + 3) {
        let a = build::answer(i as u16, &format!("host{i}.example"), 1, 0);
        s.udp_datagram(2, 3, 0x50, server, SEND, sock_call::SENDTO, true, &a);
    }
    let snap = run(&mut e, &mut s);
    assert_eq!(snap.dns.queries.len(), MAX_QNAMES + 1);
    assert_eq!(snap.dns.other_qnames, 3);
    let other = dns_row(&snap, "server", "other", "A");
    assert_eq!((other.count, other.latency_us.count), (3, 0));
    e.reset_interval();
    s.udp_datagram(
        2,
        3,
        0x50,
        server,
        SEND,
        sock_call::SENDTO,
        true,
        &build::answer(1, "new.example", 1, 0),
    );
    let snap = run(&mut e, &mut s);
    assert_eq!((snap.dns.queries.len(), snap.dns.other_qnames), (1, 0));
}

#[test]
fn payload_faults_and_the_mix_aggregate_exactly() {
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let ev = SockIoEvent {
        sock_id: 0x60,
        bytes: 64,
        tuple: Synth::tuple_of(("10.0.0.1", 1), ("10.0.0.2", 53)),
        direction: SEND,
        protocol: IPPROTO_UDP,
        flags: sock_flags::PAYLOAD_FAULT,
        ..Default::default()
    };
    s.sock_io(1, 1, ev, &[]);
    let snap = run(&mut e, &mut s);
    assert_eq!(
        (snap.socket_io.payload_faults, snap.socket_io.calls),
        (1, 1)
    );
    // Nothing to parse is not a malformed message.
    assert_eq!(snap.dns.malformed, 0);

    let mut e = Engine::new("t", None);
    e.ingest(&Synth::socket_mix(100));
    e.flush();
    let snap = e.snapshot(&NoNames);
    assert_eq!(e.malformed, 0);
    assert_eq!(
        (
            snap.tcp.bytes_sent,
            snap.tcp.bytes_received,
            snap.tcp.byte_mismatches
        ),
        (1700 * 100, 1700 * 100, 0)
    );
    assert_eq!((snap.udp.datagrams_sent, snap.dns.malformed), (200, 0));
    let answered: u64 = snap.dns.queries.iter().map(|r| r.latency_us.count).sum();
    assert_eq!(answered, 200);
}

#[test]
fn aggregates_do_not_depend_on_how_cpu_streams_interleave() {
    let batch = Synth::socket_mix(300);
    let snapshot = |records: Vec<&[u8]>| {
        let mut b = crate::source::RawBatch::new();
        for r in records {
            b.push(r);
        }
        let mut e = Engine::new("t", None);
        e.ingest(&b);
        e.flush();
        serde_json::to_value(e.snapshot(&NoNames)).unwrap()
    };
    let in_order: Vec<&[u8]> = batch.iter().collect();
    // CPU 1's whole stream after CPU 0's.
    let cpu = |r: &[u8]| u32::from_ne_bytes(r[24..28].try_into().unwrap());
    let mut moved: Vec<&[u8]> = batch.iter().filter(|r| cpu(r) == 0).collect();
    moved.extend(batch.iter().filter(|r| cpu(r) == 1));
    assert_eq!(snapshot(in_order), snapshot(moved));
}

#[test]
fn data_read_after_the_kernel_closed_the_socket_is_no_mismatch() {
    // The client half-closed, the server's answer and FIN arrived: the kernel moves the
    // client's socket to CLOSE (TIME_WAIT) while the answer still waits in its receive
    // queue, and the application reads it afterwards.
    let (mut s, mut e) = (Synth::new(), Engine::new("t", None));
    let (c, srv) = (Synth::tuple(41000, 8080), Synth::tuple(8080, 41000));
    s.tcp_open(100, CG, 0xa, 0xb, 41000);
    s.tcp_call(100, CG, 0xa, c, SEND, 100, &[]);
    s.tcp_call(200, CG, 0xb, srv, RECV, 100, &[]);
    s.tcp_call(200, CG, 0xb, srv, SEND, 3000, &[]);
    s.tcp_call(100, CG, 0xa, c, RECV, 64, &[]);
    s.tcp_close(100, 200, CG, 0xa, 0xb, 41000, 100, 3000);
    s.tcp_call(100, CG, 0xa, c, RECV, 2936, &[]);
    let snap = run(&mut e, &mut s);
    assert_eq!(snap.tcp.byte_mismatches, 0);
    assert_eq!(
        bytes(conn(&snap, 41000)),
        (Some(100), Some(3000), Some(100), Some(3000))
    );
    // The totals count each byte once: 64 live, the rest at close.
    assert_eq!((snap.tcp.bytes_sent, snap.tcp.bytes_received), (3100, 3100));

    // A real difference still shows.
    let mut e = Engine::new("t", None);
    s.tcp_open(100, CG, 0xc, 0xd, 42000);
    s.tcp_call(100, CG, 0xc, Synth::tuple(42000, 8080), SEND, 10, &[]);
    s.tcp_close(100, 200, CG, 0xc, 0xd, 42000, 20, 0);
    let snap = run(&mut e, &mut s);
    assert_eq!(
        snap.tcp.byte_mismatches, 2,
        "the calls add up to the kernel's count at neither end"
    );
}
