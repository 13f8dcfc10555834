//! Real eBPF on this machine's kernel, real workloads, exact ground truth. Needs root and
//! fails (never skips) without it.

use ksight_integration_tests::*;
use serde_json::Value;

const SENT: u64 = 100_000;
const RECEIVED: u64 = 30_000;

/// The workload's truth, as `ksight stat --json` must report it.
fn assert_ground_truth(m: &Value, device: &LoopDevice) {
    let p = &m["process"];
    // The workload itself, 3× true, false, 2× sh; six children; seven processes exit.
    assert_eq!(p["execs"], 7, "execs: {p}");
    assert_eq!(p["forks"], 6, "forks: {p}");
    assert_eq!(p["exits"], 7, "exits: {p}");
    assert_eq!(p["exit_codes"], serde_json::json!({"0": 4, "1": 1, "3": 2}));
    // One server thread.
    assert_eq!(p["threads"], 1);

    let t = &m["tcp"];
    // An orderly connection and an aborted one, each seen from both ends.
    assert_eq!(t["connects"], 2, "tcp: {t}");
    assert_eq!(t["accepts"], 2, "tcp: {t}");
    assert_eq!(t["closes"], 4, "tcp: {t}");
    assert_eq!(t["bytes_sent"], SENT + RECEIVED);
    assert_eq!(t["bytes_received"], SENT + RECEIVED);
    assert_eq!(t["resets_sent"], 1);
    assert_eq!(t["resets_received"], 1);
    assert_eq!(t["retransmits"], 0);
    let conns = t["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 4);
    let orderly: Vec<&Value> = conns
        .iter()
        .filter(|c| c["bytes_sent"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert_eq!(orderly.len(), 2, "{conns:?}");
    let client = orderly
        .iter()
        .find(|c| c["role"] == "active")
        .expect("client side");
    let server = orderly
        .iter()
        .find(|c| c["role"] == "passive")
        .expect("server side");
    assert_eq!(
        (
            client["bytes_sent"].as_u64(),
            client["bytes_received"].as_u64()
        ),
        (Some(SENT), Some(RECEIVED))
    );
    assert_eq!(
        (
            server["bytes_sent"].as_u64(),
            server["bytes_received"].as_u64()
        ),
        (Some(RECEIVED), Some(SENT))
    );
    assert_eq!(client["daddr"], "127.0.0.1");
    assert_eq!(client["dport"], server["sport"]);
    assert_eq!(client["sport"], server["dport"]);
    for c in [client, server] {
        assert_eq!(c["comm"], "ksight-workload", "{c}");
        assert!(c["pid"].as_u64().unwrap() > 0);
        assert!(c["srtt_us"].as_u64().is_some());
    }

    let devices = m["block"]["devices"].as_array().unwrap();
    let loop_dev = devices
        .iter()
        .find(|d| d["dev"] == device.dev())
        .unwrap_or_else(|| panic!("no {} in {devices:?}", device.dev()));
    assert_eq!(loop_dev["name"], device.device.trim_start_matches("/dev/"));
    assert_eq!(loop_dev["writes"], 7);
    assert_eq!(loop_dev["write_bytes"], 4 * 65536 + 3 * 4096);
    assert_eq!(loop_dev["reads"], 7);
    assert_eq!(loop_dev["read_bytes"], 2 * 131072 + 5 * 512);
    let lat = &loop_dev["latency_us"];
    assert_eq!(lat["count"], 14);
    assert!(lat["p50"].as_f64().unwrap() > 0.0 && lat["p50"].as_f64() <= lat["p99"].as_f64());
    assert!(lat["p99"].as_f64() <= lat["max"].as_f64());
    // Nothing else of the host: the workload writes nowhere but the loop device. Its
    // execs may page binaries in from other disks (reads, attributed to it rightly), while
    // the rest of the host — builds, logs — writes all the time and must not show up.
    for other in devices.iter().filter(|d| d["dev"] != device.dev()) {
        assert_eq!(
            other["writes"], 0,
            "another device written in scope: {other}"
        );
        assert_eq!(other["write_bytes"], 0, "{other}");
    }
    assert_eq!(m["lost_events"], 0);
    assert_eq!(m["malformed_records"], 0);
}

fn stat_ground_truth(transport: &str) -> Value {
    require_root();
    let device = LoopDevice::new(16 << 20);
    let workload = workload_bin();
    let (metrics, code) = stat_json(
        &["--backend", "ebpf", "--transport", transport],
        &[
            workload.to_str().unwrap(),
            "all",
            &SENT.to_string(),
            &RECEIVED.to_string(),
            &device.device,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(metrics["backend"], "ebpf");
    assert_ground_truth(&metrics, &device);
    assert_stat_owner(&metrics);
    metrics
}

/// The command ran in a cgroup of `stat`'s own; grouped by owner, that cgroup is the one
/// row, named by its path, with the command's counts.
fn assert_stat_owner(metrics: &Value) {
    let owners = metrics["containers"].as_array().expect("containers");
    let own: Vec<&Value> = owners
        .iter()
        .filter(|o| {
            o["attribution"]["path"]
                .as_str()
                .is_some_and(|p| p.rsplit('/').next().unwrap().starts_with("ksight-stat-"))
        })
        .collect();
    assert_eq!(own.len(), 1, "{owners:#?}");
    let own = own[0];
    assert_eq!(own["execs"], 7, "{own:#}");
    assert_eq!(own["exits"], 7);
    assert_eq!(own["tcp_bytes_sent"], SENT + RECEIVED);
    let id = own["cgroup_id"].as_u64().unwrap();
    let row = metrics["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cgroup_id"] == id)
        .expect("the stat cgroup's row");
    assert_eq!(row["attribution"], own["attribution"]);
    assert_eq!(row["execs"], own["execs"]);
}

#[test]
fn stat_reports_the_ground_truth_over_the_ring_buffer() {
    stat_ground_truth("ringbuf");
}

#[test]
fn stat_reports_the_ground_truth_over_the_perf_array() {
    stat_ground_truth("perf");
}

#[test]
fn stat_exits_with_the_command_status() {
    require_root();
    let (metrics, code) = stat_json(&["--backend", "ebpf"], &["/bin/sh", "-c", "exit 42"]);
    assert_eq!(code, Some(42));
    assert_eq!(
        metrics["process"]["exit_codes"],
        serde_json::json!({"42": 1})
    );
    assert_eq!(metrics["process"]["execs"], 1);
    let (metrics, code) = stat_json(&["--backend", "ebpf"], &["/bin/sh", "-c", "kill -TERM $$"]);
    assert_eq!(code, Some(128 + 15));
    assert_eq!(
        metrics["process"]["exit_codes"],
        serde_json::json!({"143": 1})
    );
}

#[test]
fn replay_gives_the_aggregates_of_the_live_run() {
    require_root();
    let device = LoopDevice::new(16 << 20);
    let dir = TempDir::new("record");
    let file = dir.path.join("capture.ksc");
    let workload = workload_bin();
    let recorder = std::process::Command::new(ksight_bin())
        .args([
            "record",
            "--backend",
            "ebpf",
            "--json",
            "--duration",
            "4s",
            "-o",
            file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ksight record");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new(&workload)
        .args(["all", "5000", "7000", &device.device])
        .status()
        .unwrap();
    assert!(status.success());
    let out = recorder.wait_with_output().unwrap();
    assert!(out.status.success());
    let live: Value = serde_json::from_slice(&out.stdout).expect("record JSON");
    let replay = ksight(&["replay", "--json", file.to_str().unwrap()]);
    assert!(replay.status.success());
    let replayed: Value = serde_json::from_slice(&replay.stdout).expect("replay JSON");
    // The whole host was recorded, so at least the workload is in there.
    assert!(
        live["process"]["execs"].as_u64().unwrap() >= 7,
        "{}",
        live["process"]
    );
    assert!(live["tcp"]["bytes_sent"].as_u64().unwrap() >= 12_000);
    assert_eq!(replayed, live);
}

#[test]
fn top_batch_prints_one_snapshot_per_interval() {
    require_root();
    let top = std::process::Command::new(ksight_bin())
        .args([
            "top",
            "--batch",
            "--json",
            "--backend",
            "ebpf",
            "-n",
            "3",
            "--delay",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ksight top");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let workload = workload_bin();
    assert!(
        std::process::Command::new(&workload)
            .args(["tcp", "4000", "6000"])
            .status()
            .unwrap()
            .success()
    );
    let out = top.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON snapshot per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    // Each interval reports only what closed in it: both ends of the workload's orderly
    // connection appear once across the three snapshots, not once per snapshot.
    let received: u64 = lines
        .iter()
        .map(|l| l["tcp"]["bytes_received"].as_u64().unwrap())
        .sum();
    let ours: Vec<&Value> = lines
        .iter()
        .flat_map(|l| l["tcp"]["connections"].as_array().unwrap())
        .filter(|c| c["comm"] == "ksight-workload" && c["bytes_sent"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(received >= 10_000);
    for l in &lines {
        assert_eq!(l["backend"], "ebpf");
        assert_eq!(l["lost_events"], 0);
    }
}
