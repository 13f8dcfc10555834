//! Real eBPF on this machine's kernel, real workloads, exact ground truth. Needs root and
//! fails (never skips) without it.

use ksight_integration_tests::*;
use serde_json::Value;

const SENT: u64 = 100_000;
const RECEIVED: u64 = 30_000;

/// The workload's truth, as `ksight stat --json` must report it (the test kit's, which
/// the VM guest tool checks too). `retrans_segs`: segments the kernel retransmitted
/// (host-wide) while the workload ran.
fn assert_ground_truth(m: &Value, device: &LoopDevice, retrans_segs: u64) {
    let failures = truth::check(
        m,
        &Truth {
            sent: SENT,
            received: RECEIVED,
            device: &device.device,
            kernel_retrans_segs: retrans_segs,
            other_devices: OtherDevices::Unwritten,
        },
    );
    assert!(
        failures.is_empty(),
        "not the ground truth:\n  {}",
        failures.join("\n  ")
    );
}

fn stat_ground_truth(transport: &str) -> Value {
    require_root();
    let device = LoopDevice::new(16 << 20);
    let workload = workload_bin();
    let retrans_before = tcp_retrans_segs().expect("/proc/net/snmp");
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
    let retrans_segs = tcp_retrans_segs().expect("/proc/net/snmp") - retrans_before;
    assert_ground_truth(&metrics, &device, retrans_segs);
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
    let cg = TestCgroup::new("replay");
    let status = cg
        .command(&workload, &["all", "5000", "7000", &device.device])
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

    // The same records with one CPU's stream held back to the end of the file — seconds
    // of event time behind the others, with no completeness marks to vouch for it: the
    // per-CPU merge must still match every connect with its close, every queue with its
    // completion, and give the same aggregates.
    let delayed = dir.path.join("delayed.ksc");
    let (cpu, moved) = delay_one_cpu(&file, &delayed);
    assert!(
        moved.get(&event_abi::kind::TCP_STATE).copied().unwrap_or(0) > 0,
        "CPU {cpu}'s delayed stream has TCP transitions: {moved:?}"
    );
    let replay = ksight(&["replay", "--json", delayed.to_str().unwrap()]);
    assert!(replay.status.success());
    let replayed_late: Value = serde_json::from_slice(&replay.stdout).expect("replay JSON");
    assert_eq!(replayed_late, live, "CPU {cpu} delayed ({moved:?} records)");
    let ours = |m: &Value| -> Vec<Value> {
        m["cgroups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["cgroup_id"] == cg.id)
            .cloned()
            .collect()
    };
    let ours = ours(&replayed_late);
    assert_eq!(
        ours.len(),
        1,
        "the workload's cgroup {}: {}",
        cg.id,
        replayed_late["cgroups"]
    );
    assert_eq!(ours[0]["tcp_bytes_sent"], 12_000);
    assert_eq!(ours[0]["execs"], 7);
}

/// Copies a capture file, moving every record of the CPU with the most TCP transitions
/// to the end and dropping completeness marks. Returns that CPU and its records by kind.
fn delay_one_cpu(
    from: &std::path::Path,
    to: &std::path::Path,
) -> (u32, std::collections::BTreeMap<u16, u64>) {
    use ksight_engine::RawBatch;
    use ksight_engine::capture::{CaptureWriter, Frame, ReplaySource};
    use std::collections::BTreeMap;
    let header_field = |r: &[u8], at: usize, len: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(&r[at..at + len]);
        u64::from_ne_bytes(b)
    };
    let cpu_at = std::mem::offset_of!(event_abi::EventHeader, cpu);
    let kind_at = std::mem::offset_of!(event_abi::EventHeader, kind);
    let read_all = || {
        let mut source = ReplaySource::open(from).expect("capture");
        let mut frames = vec![];
        while let Some(f) = source.next_frame().expect("frame") {
            frames.push(f);
        }
        (source.header().clone(), frames)
    };
    let (header, frames) = read_all();
    let mut tcp_per_cpu: BTreeMap<u32, u64> = BTreeMap::new();
    for f in &frames {
        if let Frame::Records { bytes, ends } = f {
            let batch = RawBatch::from_parts(bytes.clone(), ends.clone()).unwrap();
            for r in batch.iter() {
                if header_field(r, kind_at, 2) == u64::from(event_abi::kind::TCP_STATE) {
                    *tcp_per_cpu
                        .entry(header_field(r, cpu_at, 4) as u32)
                        .or_default() += 1;
                }
            }
        }
    }
    let cpu = *tcp_per_cpu
        .iter()
        .max_by_key(|(_, n)| **n)
        .expect("TCP records")
        .0;
    let mut writer = CaptureWriter::create(to, header).expect("write capture");
    let mut held = RawBatch::new();
    let mut moved = BTreeMap::new();
    for f in frames {
        match f {
            Frame::Records { bytes, ends } => {
                let batch = RawBatch::from_parts(bytes, ends).unwrap();
                let mut kept = RawBatch::new();
                for r in batch.iter() {
                    if header_field(r, cpu_at, 4) as u32 == cpu {
                        held.push(r);
                        *moved.entry(header_field(r, kind_at, 2) as u16).or_default() += 1;
                    } else {
                        kept.push(r);
                    }
                }
                writer.write_batch(&kept).unwrap();
            }
            Frame::Counters(c) => writer.write_counters(&c).unwrap(),
            // A mark would vouch for the held CPU too: that is exactly what is not so now.
            Frame::Complete(_) => {}
        }
    }
    writer.write_batch(&held).unwrap();
    writer.finish().unwrap();
    (cpu, moved)
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
    // Its own cgroup: top watches the whole host, where other tests run workloads too.
    let cg = TestCgroup::new("top-batch");
    assert!(
        cg.command(workload_bin(), &["tcp", "4000", "6000"])
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
    // connection appear once across the three snapshots, not once per snapshot, and the
    // cgroup's bytes add up to the workload's exactly.
    let ours: Vec<&Value> = lines
        .iter()
        .flat_map(|l| l["tcp"]["connections"].as_array().unwrap())
        .filter(|c| {
            c["cgroup_id"] == cg.id
                && c["state"] == "CLOSE"
                && c["bytes_sent"].as_u64().unwrap_or(0) > 0
        })
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    let cgroup_total = |field: &str| -> u64 {
        lines
            .iter()
            .flat_map(|l| l["cgroups"].as_array().unwrap())
            .filter(|c| c["cgroup_id"] == cg.id)
            .map(|c| c[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(cgroup_total("tcp_bytes_sent"), 10_000);
    assert_eq!(cgroup_total("tcp_bytes_received"), 10_000);
    for l in &lines {
        assert_eq!(l["backend"], "ebpf");
        assert_eq!(l["lost_events"], 0);
    }
}

/// `ksight-workload requests` (HTTP/1.1, Redis and PostgreSQL exchanges, both ends in the
/// workload): every request reported once per end, exactly, with its connection's every
/// byte and nothing malformed — the test kit's `truth::check_requests`, which the VM guest
/// tool runs on the module's capture too.
#[test]
fn stat_reports_the_requests_of_the_requests_workload() {
    require_root();
    let workload = workload_bin();
    let (metrics, code) = stat_json(
        &["--backend", "ebpf"],
        &[workload.to_str().unwrap(), "requests"],
    );
    assert_eq!(code, Some(0));
    assert_eq!(metrics["backend"], "ebpf");
    let failures = truth::check_requests(&metrics);
    assert!(
        failures.is_empty(),
        "not the requests' truth:\n  {}\nhttp: {:#}\nredis: {:#}\npostgres: {:#}\nprotocols: {:#}\nedges: {:#}",
        failures.join("\n  "),
        metrics["http"],
        metrics["redis"],
        metrics["postgres"],
        metrics["protocols"],
        metrics["edges"]
    );
}
