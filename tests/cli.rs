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

#[test]
fn detect_reports_each_signal() {
    require_root();
    let out = ksight(&["detect", "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "ebpf", "{report}");
}
