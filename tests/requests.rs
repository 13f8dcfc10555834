//! Requests parsed from socket payload, end to end on this host's kernel (real eBPF),
//! through `ksight stat --json`, against real servers: nginx (HTTP/1.1, cleartext HTTP/2),
//! a grpcio server, redis-server, MariaDB and PostgreSQL (see `support/servers.rs`).
//!
//! Each server runs inside the captured `sh -c` script, so both ends of every exchange are
//! in scope: every test checks the client rows AND the server rows, exactly. The ground
//! truth is what the script does (each client is told exactly what to send, and checks
//! what it gets back), cross-checked with the server's own accounting: nginx's access log,
//! redis' `INFO commandstats`/`errorstats`, MariaDB's general log, PostgreSQL's
//! `log_statement=all`.
//!
//! Rows are per cgroup; `ksight stat` puts the command in a cgroup of its own, so every
//! row, both ends, carries that one cgroup, and every edge has it on both sides.
//!
//! Root, the eBPF build and the servers' Debian packages are required (`cargo xtask test`
//! installs them); without them these tests fail, never skip.

use ksight_integration_tests::servers::*;
use ksight_integration_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// Capture and rows

/// Runs `script` under `ksight stat --json --backend ebpf [--snaplen N]`; it must exit 0.
fn capture(snaplen: Option<u32>, script: &str) -> Value {
    let snaplen = snaplen.map(|n| n.to_string());
    let mut extra = vec!["--backend", "ebpf"];
    if let Some(n) = &snaplen {
        extra.extend(["--snaplen", n]);
    }
    let start = Instant::now();
    let (m, code) = stat_json(&extra, &["/bin/sh", "-c", script]);
    eprintln!("captured in {:.1?}", start.elapsed());
    assert_eq!(
        code,
        Some(0),
        "the workload script failed (its output is above):\n{script}"
    );
    m
}

fn list<'a>(m: &'a Value, section: &str, name: &str) -> &'a [Value] {
    m[section][name].as_array().unwrap_or_else(|| {
        panic!(
            "no {section}.{name} array in the stat JSON; {section} is {}",
            m[section]
        )
    })
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A JSON value as a key: strings as they are, `null` as "null", numbers as digits.
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pretty(rows: &[Value]) -> String {
    serde_json::to_string_pretty(rows).unwrap()
}

/// (count, errors) per key, summed over the rows `key` picks (rows it maps to None are
/// left out).
type Tally = BTreeMap<Vec<String>, (u64, u64)>;

fn tally(rows: &[Value], key: impl Fn(&Value) -> Option<Vec<String>>) -> Tally {
    let mut t = Tally::new();
    for r in rows {
        if let Some(k) = key(r) {
            let e = t.entry(k).or_default();
            e.0 += n(&r["count"]);
            e.1 += n(&r["errors"]);
        }
    }
    t
}

fn keyed<const K: usize>(items: &[([&str; K], u64, u64)]) -> Tally {
    let mut t = Tally::new();
    for (k, count, errors) in items {
        let e = t
            .entry(k.iter().map(|s| s.to_string()).collect())
            .or_default();
        e.0 += count;
        e.1 += errors;
    }
    t
}

fn assert_tally(m: &Value, what: &str, got: &Tally, want: &Tally, rows: &[Value]) {
    assert!(
        got == want,
        "{what}: (count, errors) per key differ\n want: {want:#?}\n  got: {got:#?}\n\
         parsers' health: {}\nrows: {}",
        health(m),
        pretty(rows)
    );
}

/// The parsers' counters and the capture's losses, for failure messages.
fn health(m: &Value) -> String {
    let mut p = m["protocols"].clone();
    if let Some(p) = p.as_object_mut() {
        p.remove("connections");
    }
    format!(
        "protocols {p}; lost_events {}; socket_io {}",
        m["lost_events"], m["socket_io"]
    )
}

/// The cgroup every row of this capture carries: `ksight stat`'s own for the command.
fn the_cgroup(m: &Value, rows: &[&[Value]]) -> u64 {
    let ids: BTreeSet<u64> = rows
        .iter()
        .flat_map(|r| r.iter())
        .map(|r| n(&r["cgroup_id"]))
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every row is of the command's one cgroup: {ids:?}; cgroups: {}",
        m["cgroups"]
    );
    let id = *ids.iter().next().unwrap();
    assert_ne!(id, 0, "a row without its cgroup");
    id
}

/// What holds for every row of a request or command table: the latency histogram counts
/// every exchange, its quantiles are ordered, the row is of `cgroup`, a client row names its
/// server and a server row names none.
fn check_rows(rows: &[Value], cgroup: u64, client_peer: impl Fn(&Value) -> String) {
    for r in rows {
        let lat = &r["latency_us"];
        assert_eq!(
            lat["count"], r["count"],
            "latency counts every exchange: {r}"
        );
        let q = |k: &str| {
            lat[k]
                .as_f64()
                .unwrap_or_else(|| panic!("latency_us.{k} is a number: {r}"))
        };
        assert!(
            q("p50") <= q("p99") && q("p99") <= q("max") && q("max") > 0.0,
            "latency quantiles: {r}"
        );
        assert!(n(&r["errors"]) <= n(&r["count"]), "{r}");
        assert_eq!(n(&r["cgroup_id"]), cgroup, "{r}");
        match r["role"].as_str() {
            Some("client") => assert_eq!(s(&r["peer"]), client_peer(r), "client row's peer: {r}"),
            Some("server") => assert!(r["peer"].is_null(), "a server row has no peer: {r}"),
            _ => panic!("role is client or server: {r}"),
        }
    }
}

/// The parsers' health: nothing malformed, met mid-stream, unmatched or unanswered, no
/// route folded. Messages that by protocol get no answer (MySQL COM_QUIT and
/// COM_STMT_CLOSE, PostgreSQL Terminate) are no requests waiting for one.
fn check_health(m: &Value) {
    let p = &m["protocols"];
    for k in [
        "malformed",
        "mid_stream",
        "framing_gaps",
        "unmatched_responses",
        "unanswered",
        "other_routes",
        "unlisted_requests",
        "untracked_connections",
    ] {
        assert_eq!(p[k], 0, "protocols.{k}: {}", health(m));
    }
    assert_eq!(m["lost_events"], 0, "{}", health(m));
}

/// `protocols.connections`: connections per (protocol, role), summed over cgroups.
fn connections(m: &Value) -> BTreeMap<(String, String), u64> {
    let mut by = BTreeMap::new();
    for r in list(m, "protocols", "connections") {
        *by.entry((s(&r["protocol"]), s(&r["role"]))).or_default() += n(&r["connections"]);
    }
    by
}

/// The one `protocols.connections` row of (protocol, role).
fn connection_row<'a>(m: &'a Value, protocol: &str, role: &str) -> &'a Value {
    let rows: Vec<&Value> = list(m, "protocols", "connections")
        .iter()
        .filter(|r| r["protocol"] == protocol && r["role"] == role)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "one protocols.connections row of {protocol} {role}: {:#}",
        m["protocols"]
    );
    rows[0]
}

/// The edges to `server` ("ip:port"): each from the command's cgroup to a server in it.
fn edges_to<'a>(m: &'a Value, server: &str, cgroup: u64) -> Vec<&'a Value> {
    let edges: Vec<&Value> = m["edges"]
        .as_array()
        .expect("edges array")
        .iter()
        .filter(|e| e["server"] == server)
        .collect();
    assert!(!edges.is_empty(), "an edge to {server}: {:#}", m["edges"]);
    for e in &edges {
        assert_eq!(n(&e["client_cgroup_id"]), cgroup, "{e}");
        assert_eq!(
            e["server_cgroup_id"].as_u64(),
            Some(cgroup),
            "the server is on this host, in the same cgroup: {e}"
        );
    }
    edges
}

fn edge_sum(edges: &[&Value], field: &str) -> u64 {
    edges.iter().map(|e| n(&e[field])).sum()
}

/// Edges with requests go only to `servers`, and carry `total` requests in all.
fn check_edge_totals(m: &Value, servers: &[&str], total: u64) {
    let edges = m["edges"].as_array().expect("edges array");
    let with_requests: Vec<&Value> = edges.iter().filter(|e| n(&e["requests"]) > 0).collect();
    for e in &with_requests {
        assert!(
            servers.contains(&s(&e["server"]).as_str()),
            "an edge with requests to a server the test did not use: {e}"
        );
    }
    assert_eq!(
        edge_sum(&with_requests, "requests"),
        total,
        "requests over all edges: {edges:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 and HTTP/2 against nginx

/// One request the workload sends and what nginx answers.
struct Req {
    method: &'static str,
    /// As sent (query included).
    path: String,
    /// As ksight reports it: query dropped, ids as `*`.
    route: &'static str,
    status: u16,
    /// The length of the body sent with it. nginx's `$request_length` leaves out a body
    /// it discards (`return 200` reads it after logging): the tests add it back.
    body: u64,
}

fn req(method: &'static str, path: &str, route: &'static str, status: u16) -> Req {
    Req {
        method,
        path: path.to_string(),
        route,
        status,
        body: 0,
    }
}

/// The body curl POSTs.
const POST_BODY: &str = "name=ksight";

fn post(path: &str, route: &'static str, body: &str) -> Req {
    Req {
        body: body.len() as u64,
        ..req("POST", path, route, 200)
    }
}

/// The requests of one client connection.
struct HttpConn {
    port: u16,
    /// A Host header sent instead of curl's own ("127.0.0.1:port").
    host: Option<&'static str>,
    reqs: Vec<Req>,
}

impl HttpConn {
    /// The Host (or :authority) ksight reports: as sent, lowercase.
    fn reported_host(&self) -> String {
        self.host
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port))
    }

    /// One curl invocation for all of them: curl keeps the connection between the URLs
    /// (`--next` resets options, not connections) and writes `num_connects http_code` per
    /// request to `out`.
    fn curl(&self, out: &str, http2: bool) -> String {
        let mut cmd = String::from("curl");
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                cmd.push_str(" --next");
            }
            cmd.push_str(" -sS --max-time 20 -o /dev/null -w '%{num_connects} %{http_code}\\n'");
            if http2 {
                cmd.push_str(" --http2-prior-knowledge");
            }
            match r.method {
                "GET" => {}
                "HEAD" => cmd.push_str(" -I"),
                "POST" => cmd.push_str(&format!(" --data-raw {POST_BODY}")),
                m => panic!("no curl flag for {m}"),
            }
            if let Some(h) = self.host {
                cmd.push_str(&format!(" -H 'Host: {h}'"));
            }
            cmd.push_str(&format!(" 'http://127.0.0.1:{}{}'", self.port, r.path));
        }
        format!("{cmd} >>{out}")
    }

    /// What curl's `-w` writes for this connection.
    fn curl_lines(&self) -> Vec<String> {
        self.reqs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{} {}", u8::from(i == 0), r.status))
            .collect()
    }
}

/// The HTTP rows ksight must report for `conns`, both roles: client rows by (peer,
/// method, route, status), server rows by (method, route, status); errors are the
/// responses ≥ 500.
fn http_expected(conns: &[HttpConn]) -> (Tally, Tally) {
    let (mut client, mut server) = (Tally::new(), Tally::new());
    for c in conns {
        for r in &c.reqs {
            let errors = u64::from(r.status >= 500);
            let peer = format!("127.0.0.1:{}", c.port);
            let status = r.status.to_string();
            for (t, k) in [
                (
                    &mut client,
                    vec![peer, r.method.into(), r.route.into(), status.clone()],
                ),
                (&mut server, vec![r.method.into(), r.route.into(), status]),
            ] {
                let e = t.entry(k).or_default();
                e.0 += 1;
                e.1 += errors;
            }
        }
    }
    (client, server)
}

/// Requests (and errors) per (role, host): client and server alike see the Host as sent.
fn hosts_expected(conns: &[HttpConn]) -> Tally {
    let mut t = Tally::new();
    for c in conns {
        let errors = c.reqs.iter().filter(|r| r.status >= 500).count() as u64;
        for role in ["client", "server"] {
            let e = t.entry(vec![role.into(), c.reported_host()]).or_default();
            e.0 += c.reqs.len() as u64;
            e.1 += errors;
        }
    }
    t
}

/// nginx's access log holds exactly the requests of `conns` (port, method, URI as sent,
/// status, Host as sent), on as many connections.
fn check_access_log(ngx: &Nginx, conns: &[HttpConn]) -> Vec<AccessLine> {
    let log = ngx.access_log();
    let mut got: Vec<(u16, String, String, u16, String)> = log
        .iter()
        .map(|l| {
            (
                l.port,
                l.method.clone(),
                l.uri.clone(),
                l.status,
                l.host.clone(),
            )
        })
        .collect();
    let mut want: Vec<(u16, String, String, u16, String)> = conns
        .iter()
        .flat_map(|c| {
            c.reqs.iter().map(move |r| {
                let host = c
                    .host
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("127.0.0.1:{}", c.port));
                (c.port, r.method.to_string(), r.path.clone(), r.status, host)
            })
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "nginx's access log: the requests the test sent");
    let connections: BTreeSet<(u16, u64)> = log.iter().map(|l| (l.port, l.connection)).collect();
    assert_eq!(
        connections.len(),
        conns.len(),
        "nginx saw one connection per client connection: {log:#?}"
    );
    log
}

/// Checks the `http.requests` rows of `protocol` against `conns` (and that there are no
/// others), and returns the cgroup.
fn check_http_rows(m: &Value, protocol: &str, conns: &[HttpConn]) -> u64 {
    let rows = list(m, "http", "requests");
    let (client_want, server_want) = http_expected(conns);
    let client = tally(rows, |r| {
        (r["role"] == "client").then(|| {
            vec![
                s(&r["peer"]),
                s(&r["method"]),
                s(&r["route"]),
                s(&r["status"]),
            ]
        })
    });
    let server = tally(rows, |r| {
        (r["role"] == "server").then(|| vec![s(&r["method"]), s(&r["route"]), s(&r["status"])])
    });
    assert_tally(m, "client requests", &client, &client_want, rows);
    let hosts_want = hosts_expected(conns);
    let hosts = tally(rows, |r| Some(vec![s(&r["role"]), s(&r["host"])]));
    assert_tally(m, "server requests", &server, &server_want, rows);
    assert_tally(m, "requests per Host", &hosts, &hosts_want, rows);
    for r in rows {
        assert_eq!(r["protocol"], protocol, "{r}");
        assert!(r["grpc_status"].is_null(), "not gRPC: {r}");
        let errors = if n(&r["status"]) >= 500 {
            n(&r["count"])
        } else {
            0
        };
        assert_eq!(
            n(&r["errors"]),
            errors,
            "errors are the responses ≥ 500: {r}"
        );
    }
    // Client rows' peers are part of the client tally's key.
    let cgroup = the_cgroup(m, &[rows]);
    check_rows(rows, cgroup, |r| s(&r["peer"]));
    cgroup
}

/// The bytes on the wire of the connections to `port` (all ports: None), from nginx's
/// log: (requests: `$request_length` and the discarded bodies, responses: `$bytes_sent`).
fn wire_bytes(log: &[AccessLine], conns: &[HttpConn], port: Option<u16>) -> (u64, u64) {
    let at = |p: u16| port.is_none_or(|port| port == p);
    let logged: u64 = log
        .iter()
        .filter(|l| at(l.port))
        .map(|l| l.request_length)
        .sum();
    let bodies: u64 = conns
        .iter()
        .filter(|c| at(c.port))
        .flat_map(|c| &c.reqs)
        .map(|r| r.body)
        .sum();
    let sent = log
        .iter()
        .filter(|l| at(l.port))
        .map(|l| l.bytes_sent)
        .sum();
    (logged + bodies, sent)
}

fn ids() -> [&'static str; 3] {
    [
        "/items/12345?x=1",
        "/items/123e4567-e89b-12d3-a456-426614174000",
        "/items/0123456789abcdef0123456789abcdef01234567",
    ]
}

/// HTTP/1.1 through curl at the default snaplen (512): keep-alive connections of several
/// requests, 404s, a 502 from a proxy to a closed port, a 1 MiB body followed by another
/// request on the same connection (bodies written by nginx, and sent by `sendfile`), a HEAD
/// followed by a GET (a HEAD's Content-Length has no body behind it), a POST with a body,
/// routes with ids and queries, and a Host header of mixed case.
#[test]
fn http1_against_nginx() {
    require_root();
    require_program("curl", "curl");
    let ngx = Nginx::prepare();
    let (a, b) = (ngx.plain, ngx.sendfile);
    let hello = || req("GET", "/hello.txt", "/hello.txt", 200);
    let missing = || req("GET", "/missing.txt", "/missing.txt", 404);
    let conn = |port, reqs| HttpConn {
        port,
        host: None,
        reqs,
    };
    let [id_num, id_uuid, id_hex] = ids();
    let conns = vec![
        conn(a, (0..5).map(|_| hello()).collect()),
        conn(a, vec![missing(), missing()]),
        conn(a, vec![req("GET", "/up", "/up", 502), hello()]),
        conn(a, vec![req("GET", "/big.bin", "/big.bin", 200), hello()]),
        conn(
            a,
            vec![
                req("GET", id_num, "/items/*", 200),
                req("GET", id_uuid, "/items/*", 200),
                req("GET", id_hex, "/items/*", 200),
            ],
        ),
        conn(a, vec![post("/items/99", "/items/*", POST_BODY)]),
        conn(
            a,
            vec![req("HEAD", "/hello.txt", "/hello.txt", 200), hello()],
        ),
        HttpConn {
            port: a,
            host: Some("WWW.Example.COM"),
            reqs: vec![hello()],
        },
        // sendfile on: file bodies leave the server by sendfile, not a write call.
        conn(b, vec![req("GET", "/big.bin", "/big.bin", 200), hello()]),
        conn(b, vec![hello(), missing()]),
    ];
    let out = format!("{}/curl.out", ngx.dir.path.display());
    let mut steps = vec![ngx.start()];
    steps.extend(conns.iter().map(|c| c.curl(&out, false)));
    steps.push(ngx.stop());
    let m = capture(
        None,
        &script(&steps.iter().map(String::as_str).collect::<Vec<_>>()),
    );

    // Ground truth: curl got these statuses on one connection per invocation, and nginx
    // logged exactly these requests on as many connections.
    let curl_out = std::fs::read_to_string(&out).unwrap();
    let want_curl: Vec<String> = conns.iter().flat_map(HttpConn::curl_lines).collect();
    assert_eq!(
        curl_out.lines().collect::<Vec<_>>(),
        want_curl,
        "curl's `num_connects http_code` per request"
    );
    let log = check_access_log(&ngx, &conns);

    let cgroup = check_http_rows(&m, "http", &conns);
    check_health(&m);

    // Connections and their exact bytes: what nginx read and wrote per request, headers
    // and bodies (sendfile's included), and nothing else on these connections.
    let total: u64 = conns.iter().map(|c| c.reqs.len() as u64).sum();
    let (req_bytes, resp_bytes) = wire_bytes(&log, &conns, None);
    assert!(resp_bytes > 2 * BIG_FILE as u64, "{log:#?}");
    let conns_at = |port| conns.iter().filter(|c| c.port == port).count() as u64;
    assert_eq!(
        connections(&m),
        BTreeMap::from([
            (("http".into(), "client".into()), conns.len() as u64),
            (("http".into(), "server".into()), conns.len() as u64),
        ]),
        "protocols.connections: {:#}",
        m["protocols"]
    );
    let client = connection_row(&m, "http", "client");
    let server = connection_row(&m, "http", "server");
    assert_eq!(
        (n(&client["bytes_sent"]), n(&client["bytes_received"])),
        (req_bytes, resp_bytes),
        "client bytes = what nginx read and wrote: {client}"
    );
    assert_eq!(
        (n(&server["bytes_sent"]), n(&server["bytes_received"])),
        (resp_bytes, req_bytes),
        "server bytes: {server}"
    );

    // The service map: one edge per server port, from and to the command's cgroup.
    for port in [a, b] {
        let edges = edges_to(&m, &format!("127.0.0.1:{port}"), cgroup);
        let reqs: u64 = conns
            .iter()
            .filter(|c| c.port == port)
            .map(|c| c.reqs.len() as u64)
            .sum();
        let errors = conns
            .iter()
            .filter(|c| c.port == port)
            .flat_map(|c| &c.reqs)
            .filter(|r| r.status >= 500)
            .count() as u64;
        for e in &edges {
            assert_eq!(e["protocol"], "http", "{e}");
        }
        assert_eq!(
            [
                edge_sum(&edges, "connections"),
                edge_sum(&edges, "requests"),
                edge_sum(&edges, "errors"),
                edge_sum(&edges, "bytes_sent"),
                edge_sum(&edges, "bytes_received"),
            ],
            {
                let (sent, received) = wire_bytes(&log, &conns, Some(port));
                [conns_at(port), reqs, errors, sent, received]
            },
            "edge to :{port} (connections, requests, errors, bytes sent, received): {edges:#?}"
        );
        assert_eq!(
            edges
                .iter()
                .map(|e| n(&e["latency_us"]["count"]))
                .sum::<u64>(),
            reqs,
            "{edges:#?}"
        );
    }
    check_edge_totals(
        &m,
        &[&format!("127.0.0.1:{a}"), &format!("127.0.0.1:{b}")],
        total,
    );
}

/// Pipelined HTTP/1.1: six requests written by ONE send call (a POST with its body among
/// them, and a HEAD), the responses read back in 4 KiB receives; against both nginx ports
/// (on `sendfile`, file bodies between the responses are sent without payload). The
/// snaplen (4096) covers every call, so all of it can be parsed.
#[test]
fn http1_pipelined_against_nginx() {
    require_root();
    let ngx = Nginx::prepare();
    require_program(PYTHON, "python3");
    let client = write_file(&ngx.dir.path, "pipeline.py", HTTP_PIPELINE_CLIENT);
    let pipelined = |port| HttpConn {
        port,
        host: Some("Pipe.Test"),
        reqs: vec![
            req("GET", "/hello.txt", "/hello.txt", 200),
            req("GET", "/missing.txt", "/missing.txt", 404),
            post("/items/8", "/items/*", "hello"),
            req("HEAD", "/hello.txt", "/hello.txt", 200),
            req("GET", "/items/5?z=1", "/items/*", 200),
            req("GET", "/hello.txt", "/hello.txt", 200),
        ],
    };
    let conns = vec![pipelined(ngx.plain), pipelined(ngx.sendfile)];
    let steps = [
        ngx.start(),
        format!("{PYTHON} {client} {}", ngx.plain),
        format!("{PYTHON} {client} {}", ngx.sendfile),
        ngx.stop(),
    ];
    let m = capture(
        Some(4096),
        &script(&steps.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let log = check_access_log(&ngx, &conns);
    let cgroup = check_http_rows(&m, "http", &conns);
    check_health(&m);
    let (req_bytes, resp_bytes) = wire_bytes(&log, &conns, None);
    let client = connection_row(&m, "http", "client");
    let server = connection_row(&m, "http", "server");
    assert_eq!(
        [
            n(&client["connections"]),
            n(&client["bytes_sent"]),
            n(&client["bytes_received"])
        ],
        [2, req_bytes, resp_bytes],
        "client: {client}"
    );
    assert_eq!(
        [
            n(&server["connections"]),
            n(&server["bytes_sent"]),
            n(&server["bytes_received"])
        ],
        [2, resp_bytes, req_bytes],
        "server: {server}"
    );
    for port in [ngx.plain, ngx.sendfile] {
        let edges = edges_to(&m, &format!("127.0.0.1:{port}"), cgroup);
        assert_eq!(
            [
                edge_sum(&edges, "connections"),
                edge_sum(&edges, "requests"),
                edge_sum(&edges, "errors")
            ],
            [1, 6, 0],
            "{edges:#?}"
        );
    }
}

/// Writes the six requests of [`http1_pipelined_against_nginx`] in one send call and
/// reads the six responses (4 KiB receives), checking their statuses.
const HTTP_PIPELINE_CLIENT: &str = r#"import socket, sys
port = int(sys.argv[1])
reqs = [("GET", "/hello.txt", b"", 200), ("GET", "/missing.txt", b"", 404),
        ("POST", "/items/8", b"hello", 200), ("HEAD", "/hello.txt", b"", 200),
        ("GET", "/items/5?z=1", b"", 200), ("GET", "/hello.txt", b"", 200)]
batch = b""
for method, path, body, _ in reqs:
    batch += ("%s %s HTTP/1.1\r\nHost: Pipe.Test\r\nUser-Agent: ksight-test\r\n" % (method, path)).encode()
    if body:
        batch += b"Content-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    batch += b"\r\n" + body
assert len(batch) <= 4096, len(batch)
s = socket.create_connection(("127.0.0.1", port))
assert s.send(batch) == len(batch), "one send call"
buf = b""
def more():
    global buf
    chunk = s.recv(4096)
    if not chunk:
        raise SystemExit("nginx closed the connection early")
    buf += chunk
for method, path, _, want in reqs:
    while b"\r\n\r\n" not in buf:
        more()
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    assert status == want, (method, path, lines)
    length = 0
    for line in lines[1:]:
        name, value = line.split(b":", 1)
        if name.strip().lower() == b"content-length":
            length = int(value)
        assert name.strip().lower() != b"transfer-encoding", lines
    if method == "HEAD":
        length = 0
    while len(buf) < length:
        more()
    buf = buf[length:]
assert buf == b"", buf
s.close()
"#;

/// Cleartext HTTP/2 (prior knowledge) against nginx, snaplen 4096: nghttp sends five
/// requests at once on one connection (streams 13, 15, … after PRIORITY frames on the idle
/// streams 3–11 it uses as anchors), HPACK with Huffman and the dynamic table; curl one
/// more on a connection of its own. (curl 7.88.1, Debian 12's, cannot reuse a
/// prior-knowledge connection: curl#10634.)
///
/// Both roles exact: nginx sends its first response on a connection with ONE `writev` of
/// several buffers (SETTINGS, WINDOW_UPDATE, SETTINGS ACK, HEADERS, DATA, …), all within
/// the 32 a vectored send is gathered from.
#[test]
fn http2_against_nginx() {
    require_root();
    require_program("curl", "curl");
    let nghttp = require_program("nghttp", "nghttp2-client");
    let ngx = Nginx::prepare();
    let h2 = ngx.h2;
    let conns = vec![
        HttpConn {
            port: h2,
            host: None,
            // nghttp drops a URI it was given already: the queries tell them apart.
            reqs: vec![
                req("GET", "/hello.txt?n=1", "/hello.txt", 200),
                req("GET", "/hello.txt?n=2", "/hello.txt", 200),
                req("GET", "/hello.txt?n=3", "/hello.txt", 200),
                req("GET", "/nope", "/nope", 404),
                req("GET", "/items/42", "/items/*", 200),
            ],
        },
        HttpConn {
            port: h2,
            host: None,
            reqs: vec![req("GET", "/hello.txt", "/hello.txt", 200)],
        },
    ];
    let out = format!("{}/curl.out", ngx.dir.path.display());
    let uris: Vec<String> = conns[0]
        .reqs
        .iter()
        .map(|r| format!("'{}'", ngx.url(h2, &r.path)))
        .collect();
    let steps = [
        ngx.start(),
        format!("{} -n {}", nghttp.display(), uris.join(" ")),
        conns[1].curl(&out, true),
        ngx.stop(),
    ];
    let m = capture(
        Some(4096),
        &script(&steps.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "1 200\n");
    let log = check_access_log(&ngx, &conns);
    let on_nghttp = log.iter().filter(|l| l.connection_requests > 1).count();
    assert_eq!(
        on_nghttp, 4,
        "nghttp's five requests on one connection: {log:#?}"
    );

    let cgroup = check_http_rows(&m, "http2", &conns);
    check_health(&m);
    assert_eq!(
        connections(&m),
        BTreeMap::from([
            (("http2".into(), "client".into()), 2),
            (("http2".into(), "server".into()), 2),
        ]),
        "{:#}",
        m["protocols"]
    );
    let edges = edges_to(&m, &format!("127.0.0.1:{h2}"), cgroup);
    for e in &edges {
        assert_eq!(e["protocol"], "http2", "{e}");
    }
    assert_eq!(
        [
            edge_sum(&edges, "connections"),
            edge_sum(&edges, "requests"),
            edge_sum(&edges, "errors")
        ],
        [2, 6, 0],
        "{edges:#?}"
    );
    check_edge_totals(&m, &[&format!("127.0.0.1:{h2}")], 6);
}

// ---------------------------------------------------------------------------------------
// gRPC

/// What nghttp's `-v` output (of one or more runs, one after the other) says it received:
/// calls per (:path sent, grpc-status received).
fn nghttp_grpc_statuses(out: &str) -> BTreeMap<(String, String), u64> {
    let mut got = BTreeMap::new();
    // Per connection: stream id → :path, from the HEADERS frames nghttp sent.
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    let mut sending: Option<String> = None;
    for line in out.lines() {
        let line = line.trim();
        if line.ends_with("] Connected") {
            paths.clear();
        }
        if line.contains("] send HEADERS frame ") {
            sending = line
                .split("stream_id=")
                .nth(1)
                .map(|id| id.trim_end_matches('>').to_string());
        } else if line.contains("] ") {
            // Any other frame or event ends a sent header block's listing.
            if !line.starts_with(':') {
                sending = None;
            }
        }
        if let (Some(id), Some(path)) = (&sending, line.strip_prefix(":path: ")) {
            paths.insert(id.clone(), path.to_string());
        }
        if let Some(rest) = line.split("] recv (stream_id=").nth(1) {
            let (id, header) = rest.split_once(") ").expect("recv (stream_id=N) header");
            if let Some(status) = header.strip_prefix("grpc-status: ") {
                let path = paths
                    .get(id)
                    .unwrap_or_else(|| panic!("a :path sent on stream {id}:\n{out}"));
                *got.entry((path.clone(), status.to_string())).or_default() += 1;
            }
        }
    }
    got
}

/// nghttp calls `/ksight.Test/Ok` 3 times and `/ksight.Test/Fail` 2 times (NOT_FOUND, a
/// Trailers-Only response) against a grpcio server, snaplen 4096, on 3 connections (Ok and
/// Fail, Ok and Fail, Ok: nghttp drops a URI it was given already, and grpcio's method
/// names take no query to tell them apart). Each call POSTs one length-prefixed message.
/// nghttp's own output is the ground truth: the grpc-status it received per call. The
/// server listens on an IPv6 socket bound to ::ffff:127.0.0.1 (v4-mapped addresses), which
/// ksight reports as the IPv4 address they are.
///
/// Both roles exact: grpcio sends each batch of frames with ONE `sendmsg` of a dozen or two
/// small buffers (frame headers, HPACK pieces, message prefixes), within the 32 a vectored
/// send is gathered from.
#[test]
fn grpc_against_grpcio() {
    require_root();
    let nghttp = require_program("nghttp", "nghttp2-client");
    let grpc = GrpcServer::prepare();
    let port = grpc.port;
    let (ok, fail) = ("/ksight.Test/Ok", "/ksight.Test/Fail");
    let out = format!("{}/nghttp.out", grpc.dir.path.display());
    let steps = [
        grpc.start(),
        grpc.nghttp(&nghttp, &[ok, fail], &out),
        grpc.nghttp(&nghttp, &[ok, fail], &out),
        grpc.nghttp(&nghttp, &[ok], &out),
        grpc.stop(),
    ];
    let m = capture(
        Some(4096),
        &script(&steps.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let said = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        nghttp_grpc_statuses(&said),
        BTreeMap::from([
            ((ok.to_string(), "0".to_string()), 3),
            ((fail.to_string(), "5".to_string()), 2),
        ]),
        "the grpc-status nghttp received per call:\n{said}"
    );

    let rows = list(&m, "http", "requests");
    let key = |role: &'static str| {
        move |r: &Value| {
            (r["role"] == role).then(|| {
                vec![
                    s(&r["protocol"]),
                    s(&r["method"]),
                    s(&r["route"]),
                    s(&r["status"]),
                    s(&r["grpc_status"]),
                ]
            })
        }
    };
    let want = keyed(&[
        (["grpc", "POST", ok, "200", "0"], 3, 0),
        (["grpc", "POST", fail, "200", "5"], 2, 2),
    ]);
    assert_tally(&m, "client calls", &tally(rows, key("client")), &want, rows);
    assert_tally(&m, "server calls", &tally(rows, key("server")), &want, rows);
    check_health(&m);
    let cgroup = the_cgroup(&m, &[rows]);
    let authority = format!("127.0.0.1:{port}");
    for r in rows {
        assert_eq!(r["host"], authority.as_str(), ":authority as sent: {r}");
    }
    check_rows(rows, cgroup, |_| authority.clone());
    // The connections are HTTP/2; their calls are gRPC. Either name may label them.
    let conns = connections(&m);
    for role in ["client", "server"] {
        let got: u64 = conns
            .iter()
            .filter(|((p, r), _)| (p == "http2" || p == "grpc") && r == role)
            .map(|(_, c)| c)
            .sum();
        assert_eq!(got, 3, "three {role} connections: {:#}", m["protocols"]);
    }
    let edges = edges_to(&m, &authority, cgroup);
    assert_eq!(
        [
            edge_sum(&edges, "connections"),
            edge_sum(&edges, "requests"),
            edge_sum(&edges, "errors")
        ],
        [3, 5, 2],
        "{edges:#?}"
    );
    check_edge_totals(&m, &[&authority], 5);
}

/// What a Redis, MySQL or PostgreSQL test expects, the same at both ends.
struct Commands<'a> {
    protocol: &'a str,
    /// Where the rows are: (section, list).
    list: (&'a str, &'a str),
    /// (command, count, errors).
    want: &'a [(&'a str, u64, u64)],
    /// Error codes per command.
    codes: &'a [(&'a str, &'a [(&'a str, u64)])],
    /// The server's port on 127.0.0.1.
    port: u16,
    /// Connections, one row per role.
    connections: u64,
}

/// The command rows of both roles, their error codes, health, connections per protocol and
/// the edges to the server, exactly.
fn check_commands(m: &Value, c: Commands) {
    let rows = list(m, c.list.0, c.list.1);
    let mut want = Tally::new();
    for role in ["client", "server"] {
        for &(command, count, errors) in c.want {
            want.insert(vec![role.to_string(), command.to_string()], (count, errors));
        }
    }
    assert_tally(
        m,
        &format!("{} commands", c.protocol),
        &tally(rows, |r| Some(vec![s(&r["role"]), s(&r["command"])])),
        &want,
        rows,
    );
    check_error_codes(rows, c.codes);
    let cgroup = the_cgroup(m, &[rows]);
    let server = format!("127.0.0.1:{}", c.port);
    check_rows(rows, cgroup, |_| server.clone());
    check_health(m);
    assert_eq!(
        connections(m),
        BTreeMap::from([
            ((c.protocol.into(), "client".into()), c.connections),
            ((c.protocol.into(), "server".into()), c.connections),
        ]),
        "{:#}",
        m["protocols"]
    );
    let requests: u64 = c.want.iter().map(|w| w.1).sum();
    let errors: u64 = c.want.iter().map(|w| w.2).sum();
    let edges = edges_to(m, &server, cgroup);
    assert_eq!(
        [
            edge_sum(&edges, "connections"),
            edge_sum(&edges, "requests"),
            edge_sum(&edges, "errors")
        ],
        [c.connections, requests, errors],
        "{edges:#?}"
    );
    check_edge_totals(m, &[&server], requests);
}

// ---------------------------------------------------------------------------------------
// Redis

/// Writes N SETs with an LPUSH on a string key in the middle, in ONE send call, and reads
/// every reply.
const REDIS_PIPELINE_CLIENT: &str = r#"import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
commands = [command("SET", "p:%03d" % i, "v%d" % i) for i in range(n)]
commands.insert(n // 2, command("LPUSH", "k", "y"))
batch = b"".join(commands)
assert len(batch) <= 4096, len(batch)
s = socket.create_connection(("127.0.0.1", port))
assert s.send(batch) == len(batch), "one send call"
replies, buf = [], b""
while len(replies) < len(commands):
    while b"\r\n" in buf and len(replies) < len(commands):
        line, buf = buf.split(b"\r\n", 1)
        replies.append(line)
    if len(replies) < len(commands):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("redis closed the connection early")
        buf += chunk
assert buf == b"", buf
want = [b"+OK"] * n
assert replies[n // 2].startswith(b"-WRONGTYPE "), replies[n // 2]
del replies[n // 2]
assert replies == want, replies
s.close()
"#;

/// `INFO commandstats`: command → (calls, failed_calls, rejected_calls).
fn commandstats(text: &str) -> BTreeMap<String, (u64, u64, u64)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_"))
        .map(|l| {
            let (name, fields) = l.split_once(':').unwrap();
            let field = |k: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .unwrap_or_else(|| panic!("{k} in {l}"))
                    .parse()
                    .unwrap()
            };
            (
                name.to_uppercase(),
                (
                    field("calls"),
                    field("failed_calls"),
                    field("rejected_calls"),
                ),
            )
        })
        .collect()
}

/// redis-cli commands (one connection each) with a WRONGTYPE and an ERR, then 100 SETs
/// with an LPUSH on a string key written by one send call (snaplen 4096 covers it), then
/// redis' own accounting read by two more redis-cli calls.
#[test]
fn redis_against_redis_server() {
    require_root();
    require_program(PYTHON, "python3");
    let redis = Redis::prepare();
    let d = redis.dir.path.display().to_string();
    let pipeline = write_file(&redis.dir.path, "pipeline.py", REDIS_PIPELINE_CLIENT);
    let expect = |cmd: &str, out: &str| {
        format!(
            "[ \"$({})\" = '{out}' ] || {{ echo 'redis-cli {cmd}: not {out}' >&2; exit 1; }}",
            redis.cli(cmd)
        )
    };
    let steps = [
        redis.start(),
        expect("SET k v", "OK"),
        expect("GET k", "v"),
        expect("GET nothing", ""),
        // One connection, three INCRs.
        format!(
            "[ \"$({} | tr '\\n' ' ')\" = '1 2 3 ' ]",
            redis.cli("-r 3 INCR n")
        ),
        expect(
            "LPUSH k x",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        expect("INCR k", "ERR value is not an integer or out of range"),
        format!("{PYTHON} {pipeline} {} 100", redis.port),
        format!("{} >{d}/commandstats.txt", redis.cli("INFO commandstats")),
        format!("{} >{d}/errorstats.txt", redis.cli("INFO errorstats")),
        redis.stop(),
    ];
    let m = capture(
        Some(4096),
        &script(&steps.iter().map(String::as_str).collect::<Vec<_>>()),
    );

    // Redis' accounting: exactly these commands (redis-cli 7.0 adds none of its own in
    // non-interactive mode), before the two INFO calls (the first sees neither).
    let stats = commandstats(&std::fs::read_to_string(format!("{d}/commandstats.txt")).unwrap());
    assert_eq!(
        stats,
        BTreeMap::from([
            ("SET".to_string(), (101, 0, 0)),
            ("GET".to_string(), (2, 0, 0)),
            ("INCR".to_string(), (4, 1, 0)),
            ("LPUSH".to_string(), (2, 2, 0)),
        ]),
        "INFO commandstats: (calls, failed_calls, rejected_calls)"
    );
    let errorstats = std::fs::read_to_string(format!("{d}/errorstats.txt")).unwrap();
    let mut errorstats: Vec<&str> = errorstats
        .lines()
        .filter(|l| l.starts_with("errorstat_"))
        .map(str::trim)
        .collect();
    errorstats.sort();
    assert_eq!(
        errorstats,
        ["errorstat_ERR:count=1", "errorstat_WRONGTYPE:count=2"]
    );

    // redis-cli: SET, GET, GET, INCR ×3, LPUSH, INCR, INFO, INFO (8); the pipeline (1).
    check_commands(
        &m,
        Commands {
            protocol: "redis",
            list: ("redis", "commands"),
            // SET 101, GET 2, INCR 4 (ERR 1), LPUSH 2 (WRONGTYPE 2), INFO 2.
            want: &[
                ("SET", 101, 0),
                ("GET", 2, 0),
                ("INCR", 4, 1),
                ("LPUSH", 2, 2),
                ("INFO", 2, 0),
            ],
            codes: &[("INCR", &[("ERR", 1)]), ("LPUSH", &[("WRONGTYPE", 2)])],
            port: redis.port,
            connections: 9,
        },
    );
}

/// `error_codes` summed per command, both roles alike; commands not listed have none.
fn check_error_codes(rows: &[Value], want: &[(&str, &[(&str, u64)])]) {
    for role in ["client", "server"] {
        let mut got: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r["role"] == role) {
            let codes = r["error_codes"]
                .as_object()
                .unwrap_or_else(|| panic!("error_codes is an object: {r}"));
            for (code, count) in codes {
                *got.entry(s(&r["command"]))
                    .or_default()
                    .entry(code.clone())
                    .or_default() += n(count);
            }
            let sum: u64 = codes.values().map(n).sum();
            assert_eq!(sum, n(&r["errors"]), "every error has its code: {r}");
        }
        let want: BTreeMap<String, BTreeMap<String, u64>> = want
            .iter()
            .map(|(cmd, codes)| {
                (
                    cmd.to_string(),
                    codes.iter().map(|(c, k)| (c.to_string(), *k)).collect(),
                )
            })
            .collect();
        assert_eq!(got, want, "{role} error codes: {}", pretty(rows));
    }
}

// ---------------------------------------------------------------------------------------
// MariaDB

/// A client of MySQL's binary protocol on the bare socket (Debian has no Python client
/// of it): COM_STMT_PREPARE, COM_STMT_EXECUTE twice, COM_STMT_CLOSE (no response), a
/// prepare that fails (1146), COM_PING, a COM_QUERY, COM_QUIT (no response).
const MYSQL_BINARY_CLIENT: &str = r#"import socket, struct, sys

def read_packet(s):
    def exactly(k):
        data = b""
        while len(data) < k:
            chunk = s.recv(k - len(data))
            if not chunk:
                raise SystemExit("mariadb closed the connection")
            data += chunk
        return data
    head = exactly(4)
    return exactly(head[0] | head[1] << 8 | head[2] << 16)

def send_packet(s, seq, payload):
    s.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload)

def is_eof(p):
    return p[0] == 0xFE and len(p) < 9

def error(p):
    return struct.unpack("<H", p[1:3])[0]

def command(s, payload):
    send_packet(s, 0, payload)
    return read_packet(s)

def prepare(s, sql):
    p = command(s, b"\x16" + sql)
    if p[0] == 0xFF:
        return None, error(p)
    stmt, cols, params = struct.unpack("<IHH", p[1:9])
    for _ in range((params + 1 if params else 0) + (cols + 1 if cols else 0)):
        read_packet(s)
    return stmt, 0

def result(s, p):
    """(rows, error code) of the response that starts with packet p."""
    if p[0] == 0x00:
        return 0, 0
    if p[0] == 0xFF:
        return 0, error(p)
    for _ in range(p[0]):
        read_packet(s)
    assert is_eof(read_packet(s))
    rows = 0
    while True:
        p = read_packet(s)
        if is_eof(p):
            return rows, 0
        if p[0] == 0xFF:
            return rows, error(p)
        rows += 1

def execute(s, stmt, value):
    # No cursor, one iteration, one LONGLONG parameter, bound now.
    payload = b"\x17" + struct.pack("<IBI", stmt, 0, 1) + b"\x00\x01\x08\x00" + struct.pack("<q", value)
    return result(s, command(s, payload))

s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
assert read_packet(s)[0] == 10, "a v10 greeting"
# LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH; no SSL.
caps = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000
login = struct.pack("<IIB", caps, 1 << 24, 33) + b"\x00" * 23 + b"root\x00" + b"\x00" + b"mysql_native_password\x00"
send_packet(s, 1, login)
ok = read_packet(s)
assert ok[0] == 0x00, "login: %r" % ok
stmt, err = prepare(s, b"SELECT v FROM ks.t WHERE id = ?")
assert stmt is not None, err
assert execute(s, stmt, 1) == (1, 0)
assert execute(s, stmt, 3) == (1, 0)
send_packet(s, 0, b"\x19" + struct.pack("<I", stmt))  # COM_STMT_CLOSE: no response
missing, err = prepare(s, b"SELECT v FROM ks.nope WHERE id = ?")
assert missing is None and err == 1146, (missing, err)
assert command(s, b"\x0e")[0] == 0x00  # COM_PING
assert result(s, command(s, b"\x03SELECT COUNT(*) FROM ks.t")) == (1, 0)
send_packet(s, 0, b"\x01")  # COM_QUIT: no response
s.close()
"#;

/// The `mariadb` client (text protocol, one COM_QUERY per statement): CREATE ×2,
/// INSERT ×3, SELECT; a SELECT of a missing table (1146); SQL `PREPARE` and two `EXECUTE`s;
/// then the binary protocol (see [`MYSQL_BINARY_CLIENT`]). Default snaplen.
#[test]
fn mysql_against_mariadb() {
    require_root();
    require_program(PYTHON, "python3");
    let db = Mariadb::prepare();
    let binary = write_file(&db.dir.path, "binary.py", MYSQL_BINARY_CLIENT);
    let setup = "CREATE DATABASE ks; CREATE TABLE ks.t (id INT PRIMARY KEY, v VARCHAR(20)); \
                 INSERT INTO ks.t VALUES (1,'a'); INSERT INTO ks.t VALUES (2,'b'); \
                 INSERT INTO ks.t VALUES (3,'c'); SELECT v FROM ks.t ORDER BY id";
    let steps = [
        db.start(),
        format!("[ \"$({} | tr '\\n' ' ')\" = 'a b c ' ]", db.client(&format!("-N -e \"{setup}\""))),
        format!(
            "if {} 2>{}/missing.err; then echo 'SELECT of a missing table succeeded' >&2; exit 1; fi",
            db.client("-e 'SELECT * FROM ks.missing'"),
            db.dir.path.display()
        ),
        format!("grep -q '^ERROR 1146 ' {}/missing.err", db.dir.path.display()),
        format!(
            "[ \"$({} | tr '\\n' ' ')\" = 'a b ' ]",
            db.client("-N ks -e \"PREPARE s FROM 'SELECT v FROM t WHERE id = ?'; EXECUTE s USING 1; EXECUTE s USING 2\"")
        ),
        format!("{PYTHON} {binary} {}", db.port),
        db.stop(),
    ];
    let m = capture(
        None,
        &script(&steps.iter().map(String::as_str).collect::<Vec<_>>()),
    );

    // The server's log: four connections, these statements and nothing the clients added
    // (the failed prepare and COM_PING are not logged; a SQL PREPARE/EXECUTE logs its
    // Query and then its Prepare/Execute).
    let log = db.general_log();
    let of = |command: &str| -> Vec<String> {
        log.iter()
            .filter(|(_, c, _)| c == command)
            .map(|(_, _, a)| a.clone())
            .collect()
    };
    assert_eq!(
        of("Query"),
        [
            "CREATE DATABASE ks",
            "CREATE TABLE ks.t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO ks.t VALUES (1,'a')",
            "INSERT INTO ks.t VALUES (2,'b')",
            "INSERT INTO ks.t VALUES (3,'c')",
            "SELECT v FROM ks.t ORDER BY id",
            "SELECT * FROM ks.missing",
            "PREPARE s FROM 'SELECT v FROM t WHERE id = ?'",
            "EXECUTE s USING 1",
            "EXECUTE s USING 2",
            "SELECT COUNT(*) FROM ks.t",
        ],
        "general log: {log:#?}"
    );
    assert_eq!(
        of("Prepare"),
        [
            "SELECT v FROM t WHERE id = ?",
            "SELECT v FROM ks.t WHERE id = ?"
        ],
        "{log:#?}"
    );
    assert_eq!(of("Execute").len(), 4, "{log:#?}");
    assert_eq!(of("Connect").len(), 4, "{log:#?}");
    assert_eq!(of("Quit").len(), 4, "{log:#?}");
    assert_eq!(of("Close stmt").len(), 1, "{log:#?}");
    let logged: BTreeSet<&str> = log.iter().map(|(_, c, _)| c.as_str()).collect();
    assert_eq!(
        logged,
        BTreeSet::from([
            "Connect",
            "Query",
            "Prepare",
            "Execute",
            "Close stmt",
            "Quit"
        ]),
        "{log:#?}"
    );

    check_commands(
        &m,
        Commands {
            protocol: "mysql",
            list: ("mysql", "queries"),
            want: &[
                ("CREATE", 2, 0),
                ("INSERT", 3, 0),
                // Text 1 + missing 1 + binary executes 2 + COUNT 1.
                ("SELECT", 5, 1),
                // SQL PREPARE 1 + COM_STMT_PREPARE 2 (one failing).
                ("PREPARE", 3, 1),
                ("EXECUTE", 2, 0),
                ("PING", 1, 0),
            ],
            codes: &[("SELECT", &[("1146", 1)]), ("PREPARE", &[("1146", 1)])],
            port: db.port,
            connections: 4,
        },
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// A client of PostgreSQL's extended query protocol on the bare socket (startup, trust):
/// Parse of a named statement + Bind/Describe/Execute/Sync; Bind/Execute/Sync of it again;
/// the unnamed statement Parse/Bind/Execute/Sync (INSERT); a Parse that fails (42P01), its
/// Bind/Execute skipped by the server up to Sync; Terminate. Each group in one send.
const PG_EXTENDED_CLIENT: &str = r#"import socket, struct, sys

def msg(tag, body):
    return tag + struct.pack("!I", len(body) + 4) + body

def cstr(s):
    return s.encode() + b"\x00"

def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(types)) + b"".join(struct.pack("!I", t) for t in types))

def bind(stmt, params):
    body = cstr("") + cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p.encode()
    return msg(b"B", body + struct.pack("!H", 0))

DESCRIBE_PORTAL = msg(b"D", b"P\x00")
EXECUTE = msg(b"E", cstr("") + struct.pack("!I", 0))
SYNC = msg(b"S", b"")

class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        params = cstr("user") + cstr("postgres") + cstr("database") + cstr("postgres") + b"\x00"
        body = struct.pack("!I", 196608) + params
        self.s.sendall(struct.pack("!I", len(body) + 4) + body)
        got = self.until_ready()
        assert got[0] == (b"R", b"\x00\x00\x00\x00"), got[0]

    def read(self):
        while True:
            if len(self.buf) >= 5:
                k = struct.unpack("!I", self.buf[1:5])[0]
                if len(self.buf) >= 1 + k:
                    tag, body, self.buf = self.buf[:1], self.buf[5:1 + k], self.buf[1 + k:]
                    return tag, body
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("postgres closed the connection")
            self.buf += chunk

    def until_ready(self):
        got = []
        while True:
            tag, body = self.read()
            got.append((tag, body))
            if tag == b"Z":
                return got

    def run(self, *messages):
        """Sends the messages in one call; the response tags up to ReadyForQuery, and the
        SQLSTATE of an ErrorResponse."""
        self.s.sendall(b"".join(messages))
        got = self.until_ready()
        code = None
        for tag, body in got:
            if tag == b"E":
                fields = dict((f[:1], f[1:]) for f in body.split(b"\x00") if f)
                code = fields[b"C"].decode()
        return b"".join(t for t, _ in got), code

c = Conn(int(sys.argv[1]))
assert c.run(parse("s1", "SELECT v FROM t WHERE id = $1", [23]), bind("s1", ["1"]), DESCRIBE_PORTAL, EXECUTE, SYNC) == (b"12TDCZ", None)
assert c.run(bind("s1", ["3"]), EXECUTE, SYNC) == (b"2DCZ", None)
assert c.run(parse("", "INSERT INTO t VALUES ($1, $2)"), bind("", ["4", "d"]), EXECUTE, SYNC) == (b"12CZ", None)
assert c.run(parse("", "SELECT v FROM missing WHERE id = $1"), bind("", ["1"]), EXECUTE, SYNC) == (b"EZ", "42P01")
c.s.sendall(msg(b"X", b""))
c.s.close()
"#;

/// psql over TCP (simple query protocol, one statement per Query; libpq's default
/// sslmode=prefer first sends an SSLRequest, answered `N`): CREATE, INSERT ×3, SELECT; a
/// SELECT of a missing table (42P01); then the extended protocol (see
/// [`PG_EXTENDED_CLIENT`]): SELECT ×2 of a named statement, INSERT, a failing SELECT.
/// Default snaplen.
#[test]
fn postgres_against_postgresql() {
    require_root();
    require_program(PYTHON, "python3");
    let pg = Postgres::prepare();
    let extended = write_file(&pg.dir.path, "extended.py", PG_EXTENDED_CLIENT);
    let d = pg.dir.path.display();
    let steps = [
        pg.start(),
        format!(
            "[ \"$({} | tr '\\n' ' ')\" = 'a b c ' ]",
            pg.psql(
                "-t -A -c 'CREATE TABLE t (id int PRIMARY KEY, v text)' \
                 -c \"INSERT INTO t VALUES (1, 'a')\" -c \"INSERT INTO t VALUES (2, 'b')\" \
                 -c \"INSERT INTO t VALUES (3, 'c')\" -c 'SELECT v FROM t ORDER BY id'"
            )
        ),
        format!(
            "if {} 2>{d}/missing.err; then echo 'SELECT of a missing table succeeded' >&2; exit 1; fi",
            pg.psql("-c 'SELECT * FROM missing'")
        ),
        format!("grep -q 'relation \"missing\" does not exist' {d}/missing.err"),
        format!("{PYTHON} {extended} {}", pg.port),
        pg.stop(),
    ];
    let m = capture(
        None,
        &script(&steps.iter().map(String::as_str).collect::<Vec<_>>()),
    );

    // The server's log: these statements and executions, nothing else (psql sends no
    // query of its own).
    let log = pg.log();
    let logged: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" LOG:  ").map(|(_, m)| m))
        .filter(|m| m.starts_with("statement: ") || m.starts_with("execute "))
        .collect();
    assert_eq!(
        logged,
        [
            "statement: CREATE TABLE t (id int PRIMARY KEY, v text)",
            "statement: INSERT INTO t VALUES (1, 'a')",
            "statement: INSERT INTO t VALUES (2, 'b')",
            "statement: INSERT INTO t VALUES (3, 'c')",
            "statement: SELECT v FROM t ORDER BY id",
            "statement: SELECT * FROM missing",
            "execute s1: SELECT v FROM t WHERE id = $1",
            "execute s1: SELECT v FROM t WHERE id = $1",
            "execute <unnamed>: INSERT INTO t VALUES ($1, $2)",
        ],
        "server log:\n{log}"
    );
    let errors = log
        .lines()
        .filter(|l| l.contains(" ERROR:  relation \"missing\" does not exist"))
        .count();
    assert_eq!(errors, 2, "server log:\n{log}");

    // 3 connections: the SSLRequest and its `N` are no TLS.
    check_commands(
        &m,
        Commands {
            protocol: "postgres",
            list: ("postgres", "queries"),
            want: &[
                ("CREATE", 1, 0),
                // psql 3 + extended 1.
                ("INSERT", 4, 0),
                // psql 1 + missing 1 + s1 twice + the failing Parse 1.
                ("SELECT", 5, 2),
            ],
            codes: &[("SELECT", &[("42P01", 2)])],
            port: pg.port,
            connections: 3,
        },
    );
}
