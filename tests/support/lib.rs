//! Helpers for ksight's integration tests: the binaries under test, root checks that fail
//! loudly, and a loop device for block I/O with known sizes. What they share with other
//! crates' tests and the VM guest tool (the workload, its ground truth, test cgroups) is
//! the test kit, re-exported here.

pub mod fake_apiserver;
pub mod servers;

pub use ksight_testkit::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `ksight` binary under test: `$KSIGHT_BIN`, else the workspace's debug build.
/// `cargo xtask test` builds it and sets the variable.
pub fn ksight_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KSIGHT_BIN") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/ksight");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p ksight`), or run `cargo xtask test`",
        path.display()
    );
    path
}

/// The ground-truth workload binary, which cargo builds next to the test executables
/// (`target/<profile>/deps/<test>` → `target/<profile>/ksight-workload`).
pub fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("ksight-workload");
    assert!(
        path.exists(),
        "{} is missing; cargo builds it for this package's tests",
        path.display()
    );
    path
}

/// These tests need root to load eBPF programs and make loop devices. Where they cannot
/// run they fail: a privileged test that skips hides a broken CI.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (eBPF programs, loop devices); run it as root, e.g. via `cargo xtask test`"
    );
}

pub fn ksight(args: &[&str]) -> Output {
    let out = Command::new(ksight_bin())
        .args(args)
        .output()
        .expect("run ksight");
    eprintln!(
        "ksight {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `ksight stat --json` on `command`; returns the parsed metrics and the exit status.
pub fn stat_json(extra: &[&str], command: &[&str]) -> (serde_json::Value, Option<i32>) {
    let dir = TempDir::new("stat");
    let out_file = dir.path.join("stat.json");
    let mut args = vec!["stat", "--json", "-o", out_file.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    let out = ksight(&args);
    let text = std::fs::read_to_string(&out_file).unwrap_or_else(|e| {
        panic!(
            "ksight stat wrote no {}: {e}; status {}",
            out_file.display(),
            out.status
        )
    });
    (
        serde_json::from_str(&text).expect("stat JSON"),
        out.status.code(),
    )
}

pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("ksight-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loop device over a sparse file, detached on drop.
pub struct LoopDevice {
    pub device: String,
    _dir: TempDir,
}

impl LoopDevice {
    pub fn new(bytes: u64) -> Self {
        let dir = TempDir::new("loop");
        let backing = dir.path.join("disk.img");
        std::fs::File::create(&backing)
            .and_then(|f| f.set_len(bytes))
            .expect("backing file");
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup (util-linux) must be installed");
        assert!(
            out.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Self { device, _dir: dir }
    }

    /// "major:minor" of the device, as ksight reports it.
    pub fn dev(&self) -> String {
        block_dev(&self.device).expect("stat loop device")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Installs, between fork and exec, a seccomp filter that fails `bpf()` with EPERM, on
/// every architecture: the number is this target's `SYS_bpf`. The filter does not look at
/// `seccomp_data.arch`: the child is a native binary, and a call of another ABI that
/// happens to carry the same number failing too is harmless in a test.
pub fn deny_bpf(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    const NR_BPF: u32 = libc::SYS_bpf as u32;
    // SAFETY: only prctl between fork and exec; the filter outlives the call (it is copied
    // into the kernel).
    unsafe {
        cmd.pre_exec(|| {
            let ld = |k: u32| libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k,
            };
            let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt,
                jf,
                k,
            };
            let ret = |k: u32| libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k,
            };
            // seccomp_data: nr at 0.
            let filter = [
                ld(0),
                jeq(NR_BPF, 0, 1),
                ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
                ret(libc::SECCOMP_RET_ALLOW),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
