//! `cargo xtask setup | run -- ARGS | test | bench`
//!
//! Each command first installs what is missing on a fresh Debian machine (as root): the
//! nightly toolchain with rust-src and bpf-linker for the eBPF programs, and the Debian
//! packages the tests and benchmarks use. Everything else is plain cargo.

mod package;
mod vm;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<String> = args
        .iter()
        .skip(1)
        .skip_while(|a| *a == "--")
        .cloned()
        .collect();
    match args.first().map(String::as_str) {
        Some("setup") => setup(&[]),
        Some("run") => {
            setup(&[])?;
            cargo(&["build", "--release", "-p", "ksight"])?;
            let bin = workspace().join("target/release/ksight");
            let status = Command::new(&bin)
                .args(&rest)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Some("test") => test(),
        Some("bench") => bench(&rest),
        Some("package") => package::package().map(drop),
        Some("package-vm") => package::install_vm(),
        Some("vm") => vm::vm(&rest),
        _ => {
            bail!(
                "usage: cargo xtask setup | run -- ARGS | test | bench [engine|kernel|flood|slowdown|sockio|requests|filter] | package | package-vm"
            )
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(workspace()),
    )
}

/// `target/release/ksight` and `target/release/ksight-workload`, for benchmarks and guests.
fn build_release_binaries() -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "ksight",
        "-p",
        "ksight-integration-tests",
    ])
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cargo_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    home.join("bin")
}

/// Debian packages, by the command each provides.
fn apt_install(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn setup(extra_packages: &[(&str, &str)]) -> Result<()> {
    let mut packages = vec![
        ("losetup", "util-linux"),
        ("setpriv", "util-linux"),
        ("cc", "gcc"),
        ("tmux", "tmux"),
        // The agent tests check that stopping detaches every program.
        ("bpftool", "bpftool"),
    ];
    packages.extend_from_slice(extra_packages);
    apt_install(&packages)?;

    // Nightly with rust-src: the eBPF programs build core for bpfel-unknown-none.
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    if !sysroot.as_ref().is_ok_and(|o| o.status.success()) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    // bpf-linker, built against the nightly toolchain's own LLVM (no LLVM dev packages).
    let linker = cargo_bin().join("bpf-linker");
    if !linker.exists() && !have("bpf-linker") {
        let lib = sysroot.join("lib");
        let llvm = std::fs::read_dir(&lib)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
            .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;
        let major = llvm
            .trim_start_matches("libLLVM.so.")
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let prefix = std::env::temp_dir().join("ksight-llvm-prefix");
        std::fs::create_dir_all(prefix.join("lib"))?;
        let link = prefix.join("lib/libLLVM.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&llvm), &link)?;
        run(Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix))?;
    }
    if !have("bpf-linker") {
        // aya-build finds it on PATH.
        let path = std::env::var("PATH").unwrap_or_default();
        // SAFETY: single-threaded at this point.
        unsafe { std::env::set_var("PATH", format!("{}:{path}", cargo_bin().display())) };
    }
    Ok(())
}

fn test() -> Result<()> {
    // The DNS tests' resolver and client.
    setup(&[
        ("dnsmasq", "dnsmasq-base"),
        ("dig", "bind9-dnsutils"),
        // The request tests' servers and clients (tests/support/servers.rs). `have` runs
        // `command -v`, which takes a path (a glob too) for what is not on PATH.
        ("nginx", "nginx"),
        ("curl", "curl"),
        ("nghttp", "nghttp2-client"),
        ("redis-server", "redis-server"),
        ("redis-cli", "redis-tools"),
        ("mariadbd", "mariadb-server"),
        ("mariadb", "mariadb-client"),
        ("/usr/lib/postgresql/*/bin/postgres", "postgresql"),
        ("/usr/bin/python3", "python3"),
        (
            "/usr/lib/python3/dist-packages/grpc/__init__.py",
            "python3-grpcio",
        ),
    ])?;
    // SAFETY: getuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the test suite loads eBPF programs and makes loop devices: run it as root");
    }
    cargo(&["build", "-p", "ksight"])?;
    let bin = workspace().join("target/debug/ksight");
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--workspace",
            "--exclude",
            "ksight-ebpf-programs",
            "--no-fail-fast",
        ])
        .env("KSIGHT_BIN", &bin)
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Pass the output through and add up every test binary's result line.
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in
        std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().expect("piped")))
    {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim().strip_suffix(word).map(|n| {
                            n.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .parse::<u64>()
                                .unwrap_or(0)
                        })
                    })
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait()?;
    // The kernel module on Debian's 6.1 and 6.12 kernels, in qemu guests.
    println!("\nxtask: VM tests (kernel module backend)");
    let vm = vm::vm(&[]);
    match &vm {
        Ok(()) => passed += 1,
        Err(e) => {
            println!("VM tests FAILED: {e:#}");
            failed += 1;
        }
    }
    println!("\ntests: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 || passed == 0 {
        bail!("tests failed (cargo test: {status})");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn bench(which: &[String]) -> Result<()> {
    let all = which.is_empty();
    let wants = |name: &str| all || which.iter().any(|w| w == name);
    let mut packages = vec![
        ("bpftrace", "bpftrace"),
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-tools"),
    ];
    if wants("requests") {
        packages.extend([("nginx", "nginx"), ("wrk", "wrk")]);
    }
    setup(&packages)?;
    if wants("engine") {
        cargo(&["bench", "-p", "ksight-engine", "--bench", "aggregate"])?;
    }
    if wants("kernel") || wants("flood") || wants("slowdown") {
        build_release_binaries()?;
        let mut cmd = Command::new("bash");
        cmd.arg(workspace().join("tests/bench/kernel.sh"))
            .current_dir(workspace());
        for w in which
            .iter()
            .filter(|w| !matches!(w.as_str(), "filter" | "sockio" | "requests"))
        {
            cmd.arg(w);
        }
        run(&mut cmd)?;
    }
    if wants("sockio") {
        // Socket I/O next to bpftrace on the same tracepoints, on a redis load.
        build_release_binaries()?;
        run(Command::new("bash")
            .arg(workspace().join("tests/bench/sockio.sh"))
            .current_dir(workspace()))?;
    }
    if wants("requests") {
        // Parser throughput on one core, then requests parsed live (nginx + wrk, redis)
        // next to bpftrace reading the same calls' first bytes.
        cargo(&["bench", "-p", "ksight-protocols", "--bench", "parsers"])?;
        build_release_binaries()?;
        run(Command::new("bash")
            .arg(workspace().join("tests/bench/requests.sh"))
            .current_dir(workspace()))?;
    }
    if wants("filter") {
        // What an ignored cgroup costs in the kernel, next to capturing it.
        build_release_binaries()?;
        cargo(&[
            "build",
            "--release",
            "-p",
            "ksight-backend-ebpf",
            "--example",
            "filter-cost",
        ])?;
        let root = workspace();
        run(
            Command::new(root.join("target/release/examples/filter-cost"))
                .arg(root.join("target/release/ksight"))
                .args(["5", "500", "1000"]),
        )?;
    }
    Ok(())
}
