//! The ground truth: what a capture of `ksight-workload all SENT RECEIVED DEVICE` must
//! report, value by value, checked on the JSON snapshot (`ksight stat --json`, the VM
//! guest tool's `stat -o`). One function for every backend and every place it runs: the
//! host tests panic with its failures, the VM guest tool prints them.
//!
//! [`check_requests`]: the same for `ksight-workload requests` (requests parsed from
//! socket payload).

use crate::workload::{
    BLOCK_READS, BLOCK_WRITES, HTTP_EXCHANGES, HTTP_HOST, POSTGRES_QUERIES, PROC_RUNS,
    REDIS_COMMANDS, REDIS_PIPELINED_INCRS, UDP_MMSG_TO_B, UDP_TO_A, UDP_TO_B, UDP_V6,
    requests_bytes,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Block devices other than the workload's in the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherDevices {
    /// None at all (a VM guest whose only disk is the loop device).
    Absent,
    /// Possibly read (the workload's execs page binaries in, rightly attributed to it),
    /// never written: the workload writes nowhere else, while the rest of the host —
    /// builds, logs — writes all the time and must not show up.
    Unwritten,
}

/// The run being checked.
#[derive(Clone, Copy, Debug)]
pub struct Truth<'a> {
    /// SENT and RECEIVED, the workload's arguments.
    pub sent: u64,
    pub received: u64,
    /// The block device the workload did O_DIRECT I/O on (e.g. `/dev/loop0`).
    pub device: &'a str,
    /// TCP segments the kernel retransmitted while the workload ran (the `RetransSegs`
    /// delta of [`tcp_retrans_segs`]; see [`check_retransmits`]).
    pub kernel_retrans_segs: u64,
    pub other_devices: OtherDevices,
}

/// The `udp` workload's flows, both ends of each, and the totals.
fn check_udp(udp: &Value, f: &mut Failures) {
    let sum = |sizes: &[usize]| sizes.iter().sum::<usize>() as u64;
    let n = |sizes: &[usize]| sizes.len() as u64;
    let (to_b, to_b_bytes) = (
        n(&UDP_TO_B) + n(&UDP_MMSG_TO_B),
        sum(&UDP_TO_B) + sum(&UDP_MMSG_TO_B),
    );
    let (to_a, to_a_bytes) = (n(&UDP_TO_A), sum(&UDP_TO_A));
    let (v6, v6_bytes) = (n(&UDP_V6), sum(&UDP_V6));
    f.eq(
        "udp totals (datagrams sent, received, bytes sent, received)",
        &json!([
            udp["datagrams_sent"],
            udp["datagrams_received"],
            udp["bytes_sent"],
            udp["bytes_received"]
        ]),
        json!([
            to_b + to_a + v6,
            to_b + to_a + v6,
            to_b_bytes + to_a_bytes + v6_bytes,
            to_b_bytes + to_a_bytes + v6_bytes
        ]),
    );
    let empty = Vec::new();
    let flows = udp["flows"].as_array().unwrap_or(&empty);
    // Each flow as (datagrams sent, bytes sent, datagrams received, bytes received).
    let mut got: Vec<(String, [u64; 4])> = flows
        .iter()
        .map(|fl| {
            let v = |k: &str| fl[k].as_u64().unwrap_or(u64::MAX);
            let family = if fl["saddr"].as_str().unwrap_or("").contains(':') {
                "v6"
            } else {
                "v4"
            };
            (
                family.to_string(),
                [
                    v("datagrams_sent"),
                    v("bytes_sent"),
                    v("datagrams_received"),
                    v("bytes_received"),
                ],
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        ("v4".to_string(), [to_b, to_b_bytes, to_a, to_a_bytes]),
        ("v4".to_string(), [to_a, to_a_bytes, to_b, to_b_bytes]),
        ("v6".to_string(), [v6, v6_bytes, 0, 0]),
        ("v6".to_string(), [0, 0, v6, v6_bytes]),
    ];
    want.sort();
    f.eq("udp flows", &json!(got), json!(want));
    for fl in flows {
        if fl["pid"].as_u64().unwrap_or(0) == 0 || fl["sport"] == 0 || fl["dport"] == 0 {
            f.push(format!("udp flow without pid or ports: {fl}"));
        }
    }
}

/// Every way `m`, a JSON snapshot, differs from the truth of the run `t` describes; empty
/// when it reports exactly that run.
pub fn check(m: &Value, t: &Truth) -> Vec<String> {
    let mut f = Failures::default();

    // The workload itself and each child it runs: one exec and one exit each, a fork per
    // child; the workload exits 0.
    let p = &m["process"];
    let children = PROC_RUNS.len() as u64;
    let mut exit_codes = BTreeMap::from([(0, 1u64)]);
    for (_, _, code) in PROC_RUNS {
        *exit_codes.entry(code).or_default() += 1;
    }
    let exit_codes: serde_json::Map<String, Value> = exit_codes
        .into_iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();
    f.eq("execs", &p["execs"], json!(children + 1));
    f.eq("forks", &p["forks"], json!(children));
    f.eq("exits", &p["exits"], json!(children + 1));
    f.eq("exit_codes", &p["exit_codes"], Value::Object(exit_codes));
    // One server thread.
    f.eq("threads", &p["threads"], json!(1));

    // An orderly connection and an aborted one, each seen from both ends.
    let (sent, received) = (t.sent, t.received);
    let tcp = &m["tcp"];
    f.eq("tcp connects", &tcp["connects"], json!(2));
    f.eq("tcp accepts", &tcp["accepts"], json!(2));
    f.eq("tcp closes", &tcp["closes"], json!(4));
    f.eq("tcp bytes_sent", &tcp["bytes_sent"], json!(sent + received));
    f.eq(
        "tcp bytes_received",
        &tcp["bytes_received"],
        json!(sent + received),
    );
    f.eq("tcp resets_sent", &tcp["resets_sent"], json!(1));
    f.eq("tcp resets_received", &tcp["resets_received"], json!(1));
    match tcp["retransmits"].as_u64() {
        Some(n) => f.result(check_retransmits(n, t.kernel_retrans_segs)),
        None => f.push(format!("tcp retransmits: got {}", tcp["retransmits"])),
    }
    let empty = Vec::new();
    let conns = tcp["connections"].as_array().unwrap_or(&empty);
    f.eq("tcp connections", &json!(conns.len()), json!(4));
    let orderly: Vec<&Value> = conns
        .iter()
        .filter(|c| c["bytes_sent"].as_u64().unwrap_or(0) > 0)
        .collect();
    f.eq("orderly connections", &json!(orderly.len()), json!(2));
    let client = orderly.iter().find(|c| c["role"] == "active");
    let server = orderly.iter().find(|c| c["role"] == "passive");
    match (client, server) {
        (Some(c), Some(s)) => {
            f.eq(
                "client bytes (sent, received)",
                &json!([c["bytes_sent"], c["bytes_received"]]),
                json!([sent, received]),
            );
            f.eq(
                "server bytes (sent, received)",
                &json!([s["bytes_sent"], s["bytes_received"]]),
                json!([received, sent]),
            );
            f.eq("client daddr", &c["daddr"], json!("127.0.0.1"));
            f.eq(
                "client ports (dport, sport)",
                &json!([c["dport"], c["sport"]]),
                json!([s["sport"], s["dport"]]),
            );
            for x in [c, s] {
                f.eq("connection comm", &x["comm"], json!("ksight-workload"));
                if x["pid"].as_u64().unwrap_or(0) == 0 {
                    f.push(format!("connection without a pid: {x}"));
                }
                if x["srtt_us"].as_u64().is_none() {
                    f.push(format!("connection without srtt_us: {x}"));
                }
            }
        }
        _ => f.push(format!("no client/server pair in {conns:?}")),
    }
    // Socket I/O: each closed connection's calls add up to the kernel's counters.
    f.eq("tcp byte_mismatches", &tcp["byte_mismatches"], json!(0));
    for c in conns {
        f.eq(
            "connection calls vs kernel (sent, received)",
            &json!([c["call_bytes_sent"], c["call_bytes_received"]]),
            json!([c["bytes_sent"], c["bytes_received"]]),
        );
    }
    check_udp(&m["udp"], &mut f);

    let devices = m["block"]["devices"].as_array().unwrap_or(&empty);
    match block_dev(t.device) {
        Ok(dev) => {
            let ops = |list: &[(usize, usize)]| -> (u64, u64) {
                list.iter().fold((0, 0), |(n, bytes), (k, len)| {
                    (n + *k as u64, bytes + (k * len) as u64)
                })
            };
            let ((writes, write_bytes), (reads, read_bytes)) =
                (ops(&BLOCK_WRITES), ops(&BLOCK_READS));
            match devices.iter().find(|d| d["dev"] == dev.as_str()) {
                Some(d) => {
                    let name = t.device.trim_start_matches("/dev/");
                    f.eq("device name", &d["name"], json!(name));
                    f.eq("device writes", &d["writes"], json!(writes));
                    f.eq("device write_bytes", &d["write_bytes"], json!(write_bytes));
                    f.eq("device reads", &d["reads"], json!(reads));
                    f.eq("device read_bytes", &d["read_bytes"], json!(read_bytes));
                    let lat = &d["latency_us"];
                    f.eq("device latency count", &lat["count"], json!(reads + writes));
                    let q = |k: &str| lat[k].as_f64().unwrap_or(0.0);
                    if !(q("p50") > 0.0 && q("p50") <= q("p99") && q("p99") <= q("max")) {
                        f.push(format!("device latency percentiles out of order: {lat}"));
                    }
                }
                None => f.push(format!("no device {dev} in {devices:?}")),
            }
            let others: Vec<&Value> = devices
                .iter()
                .filter(|d| d["dev"] != dev.as_str())
                .collect();
            match t.other_devices {
                OtherDevices::Absent => f.eq("other devices", &json!(others), json!([])),
                OtherDevices::Unwritten => {
                    for other in others {
                        f.eq(
                            &format!("writes in scope to another device ({other})"),
                            &json!([other["writes"], other["write_bytes"]]),
                            json!([0, 0]),
                        );
                    }
                }
            }
        }
        Err(e) => f.push(format!("{}: {e}", t.device)),
    }
    f.eq("lost_events", &m["lost_events"], json!(0));
    f.eq("malformed_records", &m["malformed_records"], json!(0));
    f.0
}

/// Values summed per key, each key's values by name: what a capture reports summed over
/// the rows (and cgroups) that share the key, or what it must report.
type Tally = BTreeMap<String, BTreeMap<String, u64>>;

fn tally(t: &mut Tally, key: String, values: &[(&str, u64)]) {
    let e = t.entry(key).or_default();
    for (name, v) in values {
        let sum = e.entry(name.to_string()).or_default();
        *sum = sum.saturating_add(*v);
    }
}

/// A count in a row; a missing one (`u64::MAX`) cannot equal any truth.
fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// A value of a row as part of a key: strings as they are, others as JSON.
fn key_part(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Each key whose values differ, or that only one side has.
fn compare_tallies(what: &str, got: &Tally, want: &Tally, f: &mut Failures) {
    let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    for k in keys {
        let (g, w) = (got.get(k), want.get(k));
        if g != w {
            f.push(format!("{what} [{k}]: got {}, want {}", json!(g), json!(w)));
        }
    }
}

/// A command or query row's values: count, errors, errors by code, latency count.
fn command_values(r: &Value) -> Vec<(String, u64)> {
    let mut v = vec![
        ("count".to_string(), count(&r["count"])),
        ("errors".to_string(), count(&r["errors"])),
        (
            "latency count".to_string(),
            count(&r["latency_us"]["count"]),
        ),
    ];
    if let Some(codes) = r["error_codes"].as_object() {
        for (code, n) in codes {
            v.push((format!("error {code}"), count(n)));
        }
    } else {
        v.push(("error_codes".to_string(), u64::MAX));
    }
    v
}

fn tally_owned(t: &mut Tally, key: String, values: &[(String, u64)]) {
    let values: Vec<(&str, u64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    tally(t, key, &values);
}

/// Every way `m`, a JSON snapshot of `ksight-workload requests` (and nothing else), differs
/// from what that workload did; empty when it reports exactly that. Both ends of every
/// exchange are in the capture: each request is reported once as a client row and once as
/// a server row. Rows are summed over cgroups (and peers); keys:
///
/// - `http.requests`: (role, protocol "http", method, route, status, host "svc.test") →
///   count, errors (status ≥ 500), latency count (= count); client rows name the server
///   as peer, server rows none; no `grpc_status`;
/// - `redis.commands`: (role, command) → count, errors, errors by code (`WRONGTYPE`),
///   latency count; `postgres.queries` likewise (SQLSTATE `42P01`); no MySQL query;
/// - `protocols`: one connection per (protocol, role) for http, redis and postgres, with
///   every byte of it ([`requests_bytes`]); nothing malformed, met mid-stream, unmatched
///   or unanswered;
/// - `edges`: one per protocol from the clients' cgroup to the server the client rows
///   name, the server's cgroup that same one: one connection, the client's requests,
///   errors and bytes.
pub fn check_requests(m: &Value) -> Vec<String> {
    let mut f = Failures::default();
    let empty = Vec::new();
    let rows = |section: &str, name: &str| m[section][name].as_array().unwrap_or(&empty);
    let roles = ["client", "server"];

    // The servers the client rows name, per protocol.
    let mut peers: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut check_peer = |protocol: &'static str, r: &Value, f: &mut Failures| match (
        r["role"].as_str(),
        &r["peer"],
    ) {
        (Some("client"), Value::String(p)) => {
            peers.entry(protocol).or_default().insert(p.clone());
        }
        (Some("server"), Value::Null) => {}
        _ => f.push(format!(
            "{protocol} row with role {} and peer {}",
            r["role"], r["peer"]
        )),
    };

    // HTTP.
    let key = |role: &str, method: &str, route: &str, status: &str, host: &str| {
        format!("{role} http {method} {route} {status} host={host}")
    };
    let mut want = Tally::new();
    for role in roles {
        for x in &HTTP_EXCHANGES {
            tally(
                &mut want,
                key(role, x.method, x.route, &x.status.to_string(), HTTP_HOST),
                &[
                    ("count", 1),
                    ("errors", u64::from(x.status >= 500)),
                    ("latency count", 1),
                ],
            );
        }
    }
    let mut got = Tally::new();
    for r in rows("http", "requests") {
        let role = key_part(&r["role"]);
        tally(
            &mut got,
            format!(
                "{role} {} {} {} {} host={}",
                key_part(&r["protocol"]),
                key_part(&r["method"]),
                key_part(&r["route"]),
                key_part(&r["status"]),
                key_part(&r["host"])
            ),
            &[
                ("count", count(&r["count"])),
                ("errors", count(&r["errors"])),
                ("latency count", count(&r["latency_us"]["count"])),
            ],
        );
        check_peer("http", r, &mut f);
        if !r["grpc_status"].is_null() {
            f.push(format!("http row with a grpc_status: {r}"));
        }
    }
    compare_tallies("http.requests", &got, &want, &mut f);

    // Redis: the commands one at a time, then the pipelined INCRs.
    let mut want = Tally::new();
    for role in roles {
        for (args, reply) in REDIS_COMMANDS {
            let mut values = vec![("count".to_string(), 1), ("latency count".to_string(), 1)];
            match reply.strip_prefix('-') {
                Some(error) => {
                    let code = error.split_whitespace().next().unwrap_or("");
                    values.push(("errors".to_string(), 1));
                    values.push((format!("error {code}"), 1));
                }
                None => values.push(("errors".to_string(), 0)),
            }
            tally_owned(
                &mut want,
                format!("{role} {}", args[0].to_ascii_uppercase()),
                &values,
            );
        }
        tally(
            &mut want,
            format!("{role} INCR"),
            &[
                ("count", REDIS_PIPELINED_INCRS),
                ("errors", 0),
                ("latency count", REDIS_PIPELINED_INCRS),
            ],
        );
    }
    let mut got = Tally::new();
    for r in rows("redis", "commands") {
        let k = format!("{} {}", key_part(&r["role"]), key_part(&r["command"]));
        tally_owned(&mut got, k, &command_values(r));
        check_peer("redis", r, &mut f);
    }
    compare_tallies("redis.commands", &got, &want, &mut f);

    // PostgreSQL: by statement verb.
    let mut want = Tally::new();
    for role in roles {
        for (sql, outcome) in POSTGRES_QUERIES {
            let verb = sql
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let mut values = vec![
                ("count".to_string(), 1),
                ("latency count".to_string(), 1),
                ("errors".to_string(), u64::from(outcome.is_err())),
            ];
            if let Err(code) = outcome {
                values.push((format!("error {code}"), 1));
            }
            tally_owned(&mut want, format!("{role} {verb}"), &values);
        }
    }
    let mut got = Tally::new();
    for r in rows("postgres", "queries") {
        let k = format!("{} {}", key_part(&r["role"]), key_part(&r["command"]));
        tally_owned(&mut got, k, &command_values(r));
        check_peer("postgres", r, &mut f);
    }
    compare_tallies("postgres.queries", &got, &want, &mut f);
    f.eq("mysql.queries", &json!(rows("mysql", "queries")), json!([]));

    // Connections per protocol, every byte of each; the parsers' health.
    let bytes = requests_bytes();
    let mut want = Tally::new();
    for (protocol, sent, received) in bytes {
        for (role, s, r) in [("client", sent, received), ("server", received, sent)] {
            tally(
                &mut want,
                format!("{protocol} {role}"),
                &[("connections", 1), ("bytes_sent", s), ("bytes_received", r)],
            );
        }
    }
    let mut got = Tally::new();
    for c in rows("protocols", "connections") {
        tally(
            &mut got,
            format!("{} {}", key_part(&c["protocol"]), key_part(&c["role"])),
            &[
                ("connections", count(&c["connections"])),
                ("bytes_sent", count(&c["bytes_sent"])),
                ("bytes_received", count(&c["bytes_received"])),
            ],
        );
    }
    compare_tallies("protocols.connections", &got, &want, &mut f);
    let p = &m["protocols"];
    for counter in [
        "malformed",
        "mid_stream",
        "unmatched_responses",
        "unanswered",
    ] {
        f.eq(&format!("protocols.{counter}"), &p[counter], json!(0));
    }

    // The service map: per protocol, the client's requests to the one server its rows name.
    let mut client_totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (section, name, protocol) in [
        ("http", "requests", "http"),
        ("redis", "commands", "redis"),
        ("postgres", "queries", "postgres"),
    ] {
        let t = client_totals.entry(protocol).or_default();
        for r in rows(section, name).iter().filter(|r| r["role"] == "client") {
            t.0 = t.0.saturating_add(count(&r["count"]));
            t.1 = t.1.saturating_add(count(&r["errors"]));
        }
    }
    let mut want = Tally::new();
    for (protocol, sent, received) in bytes {
        let server = match peers.get(protocol).map(|s| s.iter().collect::<Vec<_>>()) {
            Some(servers) if servers.len() == 1 => servers[0].clone(),
            other => {
                f.push(format!(
                    "{protocol} client rows name servers {other:?}, want one"
                ));
                continue;
            }
        };
        let (requests, errors) = client_totals[protocol];
        tally(
            &mut want,
            format!("{protocol} -> {server}"),
            &[
                ("connections", 1),
                ("requests", requests),
                ("errors", errors),
                ("latency count", requests),
                ("bytes_sent", sent),
                ("bytes_received", received),
            ],
        );
    }
    let mut got = Tally::new();
    for e in m["edges"].as_array().unwrap_or(&empty) {
        tally(
            &mut got,
            format!("{} -> {}", key_part(&e["protocol"]), key_part(&e["server"])),
            &[
                ("connections", count(&e["connections"])),
                ("requests", count(&e["requests"])),
                ("errors", count(&e["errors"])),
                ("latency count", count(&e["latency_us"]["count"])),
                ("bytes_sent", count(&e["bytes_sent"])),
                ("bytes_received", count(&e["bytes_received"])),
            ],
        );
        if e["server_cgroup_id"] != e["client_cgroup_id"] {
            f.push(format!(
                "edge whose server is not in the client's cgroup (both ends are one process): {e}"
            ));
        }
    }
    compare_tallies("edges", &got, &want, &mut f);
    f.0
}

#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn eq(&mut self, what: &str, got: &Value, want: Value) {
        if *got != want {
            self.0.push(format!("{what}: got {got}, want {want}"));
        }
    }

    fn push(&mut self, failure: String) {
        self.0.push(failure);
    }

    fn result(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.0.push(e);
        }
    }
}

/// ksight counts one retransmit per retransmitted packet (`tcp:tcp_retransmit_skb`); the
/// kernel counts segments, host-wide: with no segment retransmitted on the host there is
/// none to report, and otherwise no more than the kernel's count. (Under emulation a
/// loopback segment can really be retransmitted: the kernel's count is the truth, not 0.)
pub fn check_retransmits(reported: u64, kernel_segments: u64) -> Result<(), String> {
    if (kernel_segments == 0 && reported == 0)
        || (reported <= kernel_segments && kernel_segments > 0)
    {
        Ok(())
    } else {
        Err(format!(
            "retransmits: ksight reports {reported}, the kernel retransmitted {kernel_segments} segments meanwhile"
        ))
    }
}

/// The kernel's count of retransmitted TCP segments, host-wide (`/proc/net/snmp`,
/// `Tcp: RetransSegs`).
pub fn tcp_retrans_segs() -> std::io::Result<u64> {
    let bad = |what: &str| std::io::Error::other(format!("/proc/net/snmp: {what}"));
    let text = std::fs::read_to_string("/proc/net/snmp")?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return Err(bad("no Tcp lines"));
    };
    let at = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .ok_or_else(|| bad("no RetransSegs"))?;
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no RetransSegs value"))
}

/// "major:minor" of the block device at `path`, as ksight reports devices.
pub fn block_dev(path: &str) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.file_type().is_block_device() {
        return Err(std::io::Error::other(format!(
            "{path} is not a block device"
        )));
    }
    let rdev = meta.rdev();
    Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of exactly the workload's run, as far as no block device is involved.
    fn exact(sent: u64, received: u64) -> Value {
        let conn = |role: &str, bytes: (u64, u64), ports: (u16, u16)| {
            json!({
                "role": role, "bytes_sent": bytes.0, "bytes_received": bytes.1,
                "call_bytes_sent": bytes.0, "call_bytes_received": bytes.1,
                "daddr": "127.0.0.1", "sport": ports.0, "dport": ports.1,
                "comm": "ksight-workload", "pid": 42, "srtt_us": 10,
            })
        };
        let sum = |sizes: &[usize]| sizes.iter().sum::<usize>() as u64;
        let n = |sizes: &[usize]| sizes.len() as u64;
        let (to_b, to_b_bytes) = (
            n(&UDP_TO_B) + n(&UDP_MMSG_TO_B),
            sum(&UDP_TO_B) + sum(&UDP_MMSG_TO_B),
        );
        let (to_a, to_a_bytes) = (n(&UDP_TO_A), sum(&UDP_TO_A));
        let (v6, v6_bytes) = (n(&UDP_V6), sum(&UDP_V6));
        let flow = |saddr: &str, counts: [u64; 4]| {
            json!({
                "saddr": saddr, "sport": 30000, "dport": 30001, "pid": 42,
                "datagrams_sent": counts[0], "bytes_sent": counts[1],
                "datagrams_received": counts[2], "bytes_received": counts[3],
            })
        };
        let (dgrams, bytes) = (to_b + to_a + v6, to_b_bytes + to_a_bytes + v6_bytes);
        json!({
            "process": {
                "execs": 7, "forks": 6, "exits": 7, "threads": 1,
                "exit_codes": {"0": 4, "1": 1, "3": 2},
            },
            "tcp": {
                "connects": 2, "accepts": 2, "closes": 4,
                "bytes_sent": sent + received, "bytes_received": sent + received,
                "resets_sent": 1, "resets_received": 1, "retransmits": 0,
                "connections": [
                    conn("active", (sent, received), (40000, 5000)),
                    conn("passive", (received, sent), (5000, 40000)),
                    conn("active", (0, 0), (40001, 5000)),
                    conn("passive", (0, 0), (5000, 40001)),
                ],
                "byte_mismatches": 0,
            },
            "udp": {
                "datagrams_sent": dgrams, "datagrams_received": dgrams,
                "bytes_sent": bytes, "bytes_received": bytes,
                "flows": [
                    flow("127.0.0.1", [to_b, to_b_bytes, to_a, to_a_bytes]),
                    flow("127.0.0.1", [to_a, to_a_bytes, to_b, to_b_bytes]),
                    flow("::1", [v6, v6_bytes, 0, 0]),
                    flow("::1", [0, 0, v6, v6_bytes]),
                ],
            },
            "block": {"devices": []},
            "lost_events": 0,
            "malformed_records": 0,
        })
    }

    fn truth(kernel_retrans_segs: u64) -> Truth<'static> {
        Truth {
            sent: 100,
            received: 30,
            // Not a block device: its failure is the only one an exact snapshot gets.
            device: "/dev/null",
            kernel_retrans_segs,
            other_devices: OtherDevices::Absent,
        }
    }

    #[test]
    fn the_exact_run_fails_only_on_the_missing_device() {
        let failures = check(&exact(100, 30), &truth(0));
        assert_eq!(
            failures,
            ["/dev/null: /dev/null is not a block device"],
            "{failures:#?}"
        );
    }

    #[test]
    fn each_difference_is_named() {
        let mut m = exact(100, 30);
        m["process"]["execs"] = json!(8);
        m["process"]["exit_codes"]["3"] = json!(1);
        m["tcp"]["connections"][1]["sport"] = json!(5001);
        m["tcp"]["retransmits"] = json!(1);
        m["lost_events"] = json!(3);
        m["udp"]["flows"][0]["datagrams_sent"] = json!(6);
        let failures = check(&m, &truth(0));
        for want in [
            "execs: got 8, want 7",
            r#"exit_codes: got {"0":4,"1":1,"3":1}, want {"0":4,"1":1,"3":2}"#,
            "client ports (dport, sport): got [5000,40000], want [5001,40000]",
            "retransmits: ksight reports 1, the kernel retransmitted 0 segments meanwhile",
            "lost_events: got 3, want 0",
        ] {
            assert!(
                failures.iter().any(|f| f == want),
                "{want} in {failures:#?}"
            );
        }
        assert!(
            failures.iter().any(|f| f.starts_with("udp flows: got")),
            "{failures:#?}"
        );
        assert_eq!(failures.len(), 7, "{failures:#?}");
    }

    /// The bytes of each `requests` connection, counted by hand from the workload's
    /// messages (see tests below).
    #[test]
    fn the_requests_workload_moves_these_bytes() {
        assert_eq!(
            requests_bytes(),
            [
                // 89 + 83 + 843 + 80 + 83 + 154 (two pipelined in one write);
                // 3092 + 105 + 115 + 113 + (168 + 134 + 43, chunked) + 210 (pipelined).
                ("http", 1332, 3980),
                // 38 + 27 + 36 + 10 × 24; 5 + 11 + 68 + 41.
                ("redis", 341, 125),
                // startup 37, queries 14 + 30 + 27, Terminate 5; startup reply 53, answers
                // 66 + 22 + 68.
                ("postgres", 113, 209),
            ]
        );
    }

    /// A snapshot of exactly `ksight-workload requests`, by hand: some rows split over two
    /// cgroups (summed), the server 10.0.0.1 for clients in cgroup 7.
    fn exact_requests() -> Value {
        let lat = |n: u64| json!({"count": n, "p50": 40.0, "p99": 90.0, "max": 95.0});
        let mut http = Vec::new();
        for role in ["client", "server"] {
            let peer = if role == "client" {
                json!("127.0.0.1:8080")
            } else {
                Value::Null
            };
            for (method, route, status, count, errors) in [
                ("GET", "/items/*", 200, 1, 0),
                ("GET", "/missing", 404, 1, 0),
                ("POST", "/api/v1/orders", 201, 1, 0),
                ("GET", "/fail", 500, 1, 1),
                ("GET", "/chunked", 200, 1, 0),
                ("GET", "/a", 200, 1, 0),
                ("GET", "/b", 200, 1, 0),
            ] {
                http.push(json!({
                    "protocol": "http", "role": role, "method": method, "route": route,
                    "status": status, "grpc_status": null, "count": count, "errors": errors,
                    "latency_us": lat(count), "peer": peer, "host": "svc.test",
                    "cgroup_id": 7, "latency_sum_ns": 1000, "latency_buckets": [],
                }));
            }
        }
        let command = |role: &str, command: &str, count: u64, codes: Value, cg: u64, peer: &str| {
            let errors: u64 = codes
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum();
            json!({
                "role": role, "command": command, "count": count, "errors": errors,
                "error_codes": codes, "latency_us": lat(count),
                "peer": if role == "client" { json!(peer) } else { Value::Null },
                "cgroup_id": cg, "latency_sum_ns": 1000, "latency_buckets": [],
            })
        };
        let mut redis = Vec::new();
        let mut postgres = Vec::new();
        for role in ["client", "server"] {
            let r = "127.0.0.1:6379";
            redis.push(command(role, "SET", 1, json!({}), 7, r));
            redis.push(command(role, "GET", 1, json!({}), 7, r));
            redis.push(command(role, "LPUSH", 1, json!({"WRONGTYPE": 1}), 7, r));
            redis.push(command(role, "INCR", 6, json!({}), 7, r));
            redis.push(command(role, "INCR", 4, json!({}), 8, r));
            let p = "127.0.0.1:5432";
            postgres.push(command(role, "SELECT", 1, json!({}), 7, p));
            postgres.push(command(role, "SELECT", 1, json!({"42P01": 1}), 8, p));
            postgres.push(command(role, "INSERT", 1, json!({}), 7, p));
        }
        let mut connections = Vec::new();
        for (protocol, sent, received) in [
            ("http", 1332, 3980),
            ("redis", 341, 125),
            ("postgres", 113, 209),
        ] {
            connections.push(
                json!({"protocol": protocol, "role": "client", "cgroup_id": 7,
                "connections": 1, "bytes_sent": sent, "bytes_received": received}),
            );
            connections.push(
                json!({"protocol": protocol, "role": "server", "cgroup_id": 7,
                "connections": 1, "bytes_sent": received, "bytes_received": sent}),
            );
        }
        let edge = |protocol: &str, server: &str, requests: u64, errors: u64, bytes: (u64, u64)| {
            json!({
                "client_cgroup_id": 7, "server": server, "server_cgroup_id": 7,
                "protocol": protocol, "connections": 1, "requests": requests,
                "errors": errors, "bytes_sent": bytes.0, "bytes_received": bytes.1,
                "latency_us": lat(requests), "latency_sum_ns": 1, "latency_buckets": [],
            })
        };
        json!({
            "http": {"requests": http},
            "redis": {"commands": redis},
            "mysql": {"queries": []},
            "postgres": {"queries": postgres},
            "protocols": {
                "connections": connections, "malformed": 0, "mid_stream": 0,
                "unmatched_responses": 0, "unanswered": 0, "other_routes": 0,
                "unlisted_requests": 0, "untracked_connections": 0,
            },
            "edges": [
                edge("http", "127.0.0.1:8080", 7, 1, (1332, 3980)),
                edge("redis", "127.0.0.1:6379", 13, 1, (341, 125)),
                edge("postgres", "127.0.0.1:5432", 3, 1, (113, 209)),
            ],
        })
    }

    #[test]
    fn the_exact_requests_pass() {
        let failures = check_requests(&exact_requests());
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn each_request_difference_is_named() {
        let mut m = exact_requests();
        // A client INCR lost (one row of the two), a server route not normalised, the
        // error code of the failed SELECT missing on the server side, a malformed stream,
        // an edge to a server in another cgroup.
        m["redis"]["commands"][4]["count"] = json!(3);
        m["redis"]["commands"][4]["latency_us"]["count"] = json!(3);
        m["http"]["requests"][7]["route"] = json!("/items/123");
        m["postgres"]["queries"][4]["error_codes"] = json!({});
        m["postgres"]["queries"][4]["errors"] = json!(0);
        m["protocols"]["malformed"] = json!(1);
        m["edges"][1]["server_cgroup_id"] = json!(9);
        let failures = check_requests(&m);
        for want in [
            r#"redis.commands [client INCR]: got {"count":9,"errors":0,"latency count":9}, want {"count":10,"errors":0,"latency count":10}"#,
            r#"http.requests [server http GET /items/* 200 host=svc.test]: got null, want {"count":1,"errors":0,"latency count":1}"#,
            r#"http.requests [server http GET /items/123 200 host=svc.test]: got {"count":1,"errors":0,"latency count":1}, want null"#,
            r#"postgres.queries [server SELECT]: got {"count":2,"errors":0,"latency count":2}, want {"count":2,"error 42P01":1,"errors":1,"latency count":2}"#,
            "protocols.malformed: got 1, want 0",
        ] {
            assert!(
                failures.iter().any(|f| f == want),
                "{want} in {failures:#?}"
            );
        }
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("edge whose server is not in the client's cgroup")),
            "{failures:#?}"
        );
        // The edge's requests no longer match the clients' (INCR lost).
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("edges [redis -> 127.0.0.1:6379]")),
            "{failures:#?}"
        );
        assert_eq!(failures.len(), 7, "{failures:#?}");

        // Nothing at all: every row, connection and edge is missing.
        let failures = check_requests(&json!({}));
        assert!(failures.len() > 20, "{failures:#?}");
    }

    #[test]
    fn retransmits_are_checked_against_the_kernels_segments() {
        assert!(check_retransmits(0, 0).is_ok());
        assert!(check_retransmits(1, 0).is_err());
        assert!(check_retransmits(0, 3).is_ok());
        assert!(check_retransmits(3, 3).is_ok());
        assert!(check_retransmits(4, 3).is_err());
        let mut m = exact(100, 30);
        m["tcp"]["retransmits"] = json!(1);
        let failures = check(&m, &truth(2));
        assert_eq!(failures.len(), 1, "{failures:#?}");
        m["tcp"]["retransmits"] = Value::Null;
        assert!(
            check(&m, &truth(2))
                .iter()
                .any(|f| f == "tcp retransmits: got null"),
        );
    }
}
