//! The ground truth: what a capture of `ksight-workload all SENT RECEIVED DEVICE` must
//! report, value by value, checked on the JSON snapshot (`ksight stat --json`, the VM
//! guest tool's `stat -o`). One function for every backend and every place it runs: the
//! host tests panic with its failures, the VM guest tool prints them.

use crate::workload::{
    BLOCK_READS, BLOCK_WRITES, PROC_RUNS, UDP_MMSG_TO_B, UDP_TO_A, UDP_TO_B, UDP_V6,
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
