//! `ksight-workload`: the ground-truth workload (`ksight_testkit::workload`, which
//! `ksight workload` runs too) as a binary of its own, so tests can run it under any
//! tracer. Cargo builds it for this package's tests (`workload_bin()`).
//!
//! One test-only mode besides the workload's: `ksight-workload deny-bpf CMD [ARGS]` runs
//! CMD with a seccomp filter that fails `bpf()` (the VM tests' fallback check).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("deny-bpf") && args.len() > 1 {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&args[1]);
        cmd.args(&args[2..]);
        ksight_integration_tests::deny_bpf(&mut cmd);
        let err = cmd.exec();
        eprintln!("ksight-workload deny-bpf: cannot run {}: {err}", args[1]);
        std::process::exit(127);
    }
    if let Err(usage) = ksight_testkit::workload::run(&args) {
        eprintln!("{usage}");
        std::process::exit(2);
    }
}
