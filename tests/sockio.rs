//! Socket I/O end to end on this host's kernel (real eBPF), through the `ksight` binary:
//! live bytes of open connections in every `top --batch --json` interval, a connection
//! opened before capture, and DNS against Debian's dnsmasq started here on loopback.
//!
//! Root and the eBPF build are required; without them these tests fail, never skip.
//! `top` watches the whole host: rows are picked by the ports and names these tests own.

use ksight_integration_tests::*;
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// `ksight top --batch --json --delay 1` and its snapshots as they come.
struct Top {
    child: Child,
    snapshots: Receiver<Value>,
}

impl Top {
    fn start() -> Self {
        let mut child = Command::new(ksight_bin())
            .args([
                "top",
                "--batch",
                "--json",
                "--backend",
                "ebpf",
                "--delay",
                "1",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ksight top");
        let stdout = child.stdout.take().unwrap();
        let (tx, snapshots) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let snap: Value = serde_json::from_str(&line).expect("one JSON snapshot per line");
                if tx.send(snap).is_err() {
                    break;
                }
            }
        });
        let top = Top { child, snapshots };
        // Capturing once the first interval is out.
        top.next();
        top
    }

    fn next(&self) -> Value {
        self.snapshots
            .recv_timeout(Duration::from_secs(15))
            .expect("a snapshot from ksight top within 15 s")
    }

    /// A snapshot of an interval that began after this call: everything done before it
    /// has been aggregated (the interval in progress may hold part of it).
    fn settled(&self) -> Value {
        self.next();
        self.next()
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback connection made in this process: (client, server).
fn connection() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Client sends `up` bytes, server answers `down`; both read all of it.
fn exchange(client: &mut TcpStream, server: &mut TcpStream, up: usize, down: usize) {
    client.write_all(&vec![b'u'; up]).unwrap();
    server.read_exact(&mut vec![0; up]).unwrap();
    server.write_all(&vec![b'd'; down]).unwrap();
    client.read_exact(&mut vec![0; down]).unwrap();
}

/// The row of the connection whose local end is `s` and remote end is `peer`.
fn row<'a>(snap: &'a Value, s: &TcpStream) -> &'a Value {
    let (local, peer) = (
        s.local_addr().unwrap().port(),
        s.peer_addr().unwrap().port(),
    );
    let rows: Vec<&Value> = snap["tcp"]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["sport"] == local && c["dport"] == peer)
        .collect();
    assert_eq!(rows.len(), 1, "one row for :{local} -> :{peer}: {rows:#?}");
    rows[0]
}

fn bytes(c: &Value) -> [Value; 2] {
    [c["bytes_sent"].clone(), c["bytes_received"].clone()]
}

#[test]
fn open_connections_show_their_exact_bytes_every_interval() {
    require_root();
    // Opened and used before capture starts: its bytes count from the start.
    let (mut old_c, mut old_s) = connection();
    exchange(&mut old_c, &mut old_s, 1111, 2222);
    let top = Top::start();
    exchange(&mut old_c, &mut old_s, 333, 444);

    let (mut c, mut s) = connection();
    let (mut up, mut down) = (0u64, 0u64);
    for (u, d) in [(1000, 5000), (20000, 300), (7, 7)] {
        exchange(&mut c, &mut s, u, d);
        up += u as u64;
        down += d as u64;
        let snap = top.settled();
        let (cr, sr) = (row(&snap, &c), row(&snap, &s));
        assert_eq!(bytes(cr), [up, down], "client so far: {cr}");
        assert_eq!(bytes(sr), [down, up], "server so far: {sr}");
        for r in [cr, sr] {
            assert_eq!(r["state"], "ESTABLISHED", "{r}");
            assert_eq!(r["since_start"], false, "{r}");
        }
        let old = row(&snap, &old_c);
        assert_eq!(
            bytes(old),
            [333, 444],
            "the older connection, since start: {old}"
        );
        assert_eq!(old["since_start"], true, "{old}");
    }

    // Closed in order: the kernel's counters decide and equal the sums of the calls; the
    // older connection's kernel counters include what it moved before capture.
    let ports = |x: &TcpStream| {
        (
            x.local_addr().unwrap().port(),
            x.peer_addr().unwrap().port(),
        )
    };
    let (cp, sp, oc, os) = (ports(&c), ports(&s), ports(&old_c), ports(&old_s));
    drop(c);
    drop(old_c);
    assert_eq!(s.read(&mut [0; 1]).unwrap(), 0);
    assert_eq!(old_s.read(&mut [0; 1]).unwrap(), 0);
    drop(s);
    drop(old_s);
    // A closed connection is listed in the interval it closed in: one of the next two.
    let snaps = [top.next(), top.next()];
    let closed = |(local, peer): (u16, u16)| -> Value {
        let rows: Vec<&Value> = snaps
            .iter()
            .flat_map(|s| s["tcp"]["connections"].as_array().unwrap())
            .filter(|c| c["sport"] == local && c["dport"] == peer && c["state"] == "CLOSE")
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "one closed row for :{local} -> :{peer}: {snaps:?}"
        );
        rows[0].clone()
    };
    for (p, sent, received) in [(cp, up, down), (sp, down, up)] {
        let r = closed(p);
        assert_eq!(bytes(&r), [sent, received], "kernel counters: {r}");
        assert_eq!(
            [
                r["call_bytes_sent"].clone(),
                r["call_bytes_received"].clone()
            ],
            [sent, received],
            "sums of the calls: {r}"
        );
    }
    for (p, sent, received, calls_sent, calls_received) in
        [(oc, 1444, 2666, 333, 444), (os, 2666, 1444, 444, 333)]
    {
        let r = closed(p);
        // Who opened a connection made before capture is unknown, and the kernel counts
        // the connecting side's SYN as a byte sent: the client may show one more.
        let got_sent = r["bytes_sent"].as_u64().unwrap();
        let syn = if p == oc { 1 } else { 0 };
        assert!(got_sent == sent || got_sent == sent + syn, "{r}");
        assert_eq!(r["bytes_received"], received, "{r}");
        assert_eq!(
            [
                r["call_bytes_sent"].clone(),
                r["call_bytes_received"].clone()
            ],
            [calls_sent, calls_received],
            "{r}"
        );
        assert_eq!(r["since_start"], true, "{r}");
    }
    // (`tcp.byte_mismatches` is host-wide here; these rows' own sums are checked above.)
    for snap in &snaps {
        assert_eq!(snap["lost_events"], 0);
    }
}

/// dnsmasq on 127.0.0.2:53 with local data only.
const DNSMASQ: &str = "dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --no-poll --listen-address=127.0.0.2 --bind-interfaces --port=53 --pid-file= --user=root \
    --group=root --local=/ksight.test/ --address=/a.ksight.test/10.0.0.1 \
    --host-record=b.ksight.test,10.0.0.2,fd00::2";

#[test]
fn dns_queries_against_a_real_resolver() {
    require_root();
    // Nothing ever answers here: the query to it times out.
    let silent = UdpSocket::bind("127.0.0.3:53").expect("bind 127.0.0.3:53");
    let dig = "dig +tries=1 +time=2 @127.0.0.2";
    let script = format!(
        "{DNSMASQ} & d=$!; \
         for _ in $(seq 50); do dig +tries=1 +time=1 @127.0.0.2 a.ksight.test A >/dev/null && break; sleep 0.1; done; \
         {dig} a.ksight.test A >/dev/null; {dig} a.ksight.test A >/dev/null; \
         {dig} b.ksight.test AAAA >/dev/null; {dig} nx.ksight.test A >/dev/null; \
         {dig} +tcp b.ksight.test A >/dev/null; {dig} +tcp nx.ksight.test MX >/dev/null; \
         dig +tries=1 +time=1 @127.0.0.3 t.ksight.test A >/dev/null; \
         kill $d; wait $d; sleep 6; /bin/true"
    );
    let (m, code) = stat_json(&["--backend", "ebpf"], &["/bin/sh", "-c", &script]);
    assert_eq!(code, Some(0));
    drop(silent);
    let rows = m["dns"]["queries"].as_array().expect("dns.queries");
    let count = |role: &str, qname: &str, qtype: &str, rcode: &str| -> u64 {
        rows.iter()
            .filter(|r| {
                r["role"] == role
                    && r["qname"] == qname
                    && r["qtype"] == qtype
                    && r["rcode"] == rcode
            })
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    // The readiness loop asked for a.ksight.test at least once more.
    let ready = count("client", "a.ksight.test", "A", "NOERROR") - 2;
    assert!(ready >= 1, "{rows:#?}");
    for role in ["client", "server"] {
        assert_eq!(
            count(role, "a.ksight.test", "A", "NOERROR"),
            2 + ready,
            "{role}: {rows:#?}"
        );
        assert_eq!(
            count(role, "b.ksight.test", "AAAA", "NOERROR"),
            1,
            "{role}: {rows:#?}"
        );
        assert_eq!(
            count(role, "nx.ksight.test", "A", "NXDOMAIN"),
            1,
            "{role}: {rows:#?}"
        );
        // Over TCP.
        assert_eq!(
            count(role, "b.ksight.test", "A", "NOERROR"),
            1,
            "{role}: {rows:#?}"
        );
        assert_eq!(
            count(role, "nx.ksight.test", "MX", "NXDOMAIN"),
            1,
            "{role}: {rows:#?}"
        );
    }
    let timeouts: Vec<&Value> = rows
        .iter()
        .filter(|r| r["qname"] == "t.ksight.test")
        .collect();
    assert_eq!(timeouts.len(), 1, "{timeouts:#?}");
    let t = timeouts[0];
    assert_eq!(
        (
            &t["role"],
            &t["rcode"],
            &t["count"],
            &t["timeouts"],
            &t["server"]
        ),
        (
            &"client".into(),
            &"TIMEOUT".into(),
            &1.into(),
            &1.into(),
            &"127.0.0.3:53".into()
        ),
        "{t}"
    );
    for r in rows.iter().filter(|r| r["rcode"] != "TIMEOUT") {
        assert_eq!(r["server"], "127.0.0.2:53", "{r}");
        let lat = &r["latency_us"];
        assert_eq!(lat["count"], r["count"], "{r}");
        assert!(lat["p50"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(m["dns"]["malformed"], 0);
}
