//! Command-line behaviour on bad input.

use ksight_integration_tests::*;

#[test]
fn stat_without_a_command_is_a_usage_error() {
    let out = ksight(&["stat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CMD"));
}

#[test]
fn a_corrupt_capture_names_the_file_and_offset() {
    let dir = TempDir::new("corrupt");
    let path = dir.path.join("bad.ksc");
    std::fs::write(&path, b"KSIGHTCP\x01\x00\x00\x00\xff\xff").unwrap();
    let out = ksight(&["replay", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(
        err.contains("offset 12") || err.contains("byte 12"),
        "{err}"
    );
}

#[test]
fn without_privileges_the_error_names_the_capabilities() {
    require_root();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(ksight_bin())
        .args(["stat", "--backend", "ebpf", "--", "/bin/true"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
}

/// Each signal with its tracepoints and its fidelity. On the build and CI machines (6.18,
/// BTF, tracefs, every tracepoint present, bpf() allowed for root) every signal is full.
#[test]
fn detect_reports_each_signal() {
    require_root();
    let out = ksight(&["detect", "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "ebpf", "{report}");
    let want: [(&str, &[&str]); 7] = [
        (
            "process",
            &[
                "sched:sched_process_exec",
                "sched:sched_process_fork",
                "sched:sched_process_exit",
            ],
        ),
        ("tcp", &["sock:inet_sock_set_state"]),
        ("tcp_close_stats", &["sock:inet_sock_set_state"]),
        ("tcp_retransmits", &["tcp:tcp_retransmit_skb"]),
        (
            "tcp_resets",
            &["tcp:tcp_send_reset", "tcp:tcp_receive_reset"],
        ),
        (
            "block",
            &[
                "block:block_bio_queue",
                "block:block_rq_issue",
                "block:block_rq_complete",
            ],
        ),
        // The system call's entry times it; it records nothing itself.
        (
            "socket_io",
            &["raw_syscalls:sys_exit", "raw_syscalls:sys_enter"],
        ),
    ];
    let signals = report["ebpf"]["signals"]
        .as_array()
        .unwrap_or_else(|| panic!("no ebpf.signals: {report}"));
    let names: Vec<&str> = signals
        .iter()
        .map(|s| s["signal"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        want.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "{report}"
    );
    for (signal, (name, tracepoints)) in signals.iter().zip(want) {
        let status = signal["status"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no status: {signal}"));
        assert!(status.eq_ignore_ascii_case("full"), "{name}: {signal}");
        let have: Vec<&str> = signal["tracepoints"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no tracepoints: {signal}"))
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        if name == "socket_io" {
            // Whether the entry hook is listed with the signal is the backend's report.
            assert_eq!(have.first(), tracepoints.first(), "{name}");
            assert!(
                have.iter().all(|t| tracepoints.contains(t)),
                "{name}: {have:?}"
            );
        } else {
            assert_eq!(have, tracepoints, "{name}");
        }
    }
    // And each of those tracepoints has a readable format here.
    let formats = report["ebpf"]["tracepoints"].as_array().unwrap();
    for (_, tracepoints) in want {
        for tp in tracepoints
            .iter()
            .filter(|t| **t != "raw_syscalls:sys_enter")
        {
            let entry = formats
                .iter()
                .find(|t| t["tracepoint"] == *tp)
                .unwrap_or_else(|| panic!("{tp} not in ebpf.tracepoints: {report}"));
            assert_eq!(entry["format_ok"], true, "{entry}");
        }
    }
}
