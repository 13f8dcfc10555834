//! Test cgroups: a cgroup v2 child of the test's own cgroup, removed on drop. What a test
//! runs in it is told apart from everything else on the host (other tests included) by
//! the cgroup's id, which records carry.

use ksight_attribution::cgroups::{cgroup2_mount, join_before_exec};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The cgroup v2 mount (cgroup paths ksight reports are relative to it). Panics without
/// one: tests that attribute by cgroup cannot run.
pub fn cgroup_mount() -> PathBuf {
    cgroup2_mount().expect("a cgroup v2 hierarchy (tests that watch the host run in one)")
}

/// This process's own cgroup v2 directory.
pub fn own_cgroup_dir() -> PathBuf {
    own_dir().unwrap_or_else(|e| panic!("{e}"))
}

/// The id of this process's cgroup (the inode number of its directory).
pub fn own_cgroup_id() -> u64 {
    let dir = own_cgroup_dir();
    std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}

fn own_dir() -> std::io::Result<PathBuf> {
    let mount =
        cgroup2_mount().ok_or_else(|| other("no cgroup v2 mount in /proc/self/mountinfo"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| other("no cgroup v2 entry in /proc/self/cgroup"))?;
    Ok(mount.join(own.trim_start_matches('/')))
}

fn other(what: &str) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

/// Runs `program args` inside the cgroup at `dir` to completion; panics when it fails or
/// takes longer than a minute.
pub fn run_in_cgroup(dir: &Path, program: &Path, args: &[&str]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    join_before_exec(&mut cmd, dir).expect("a cgroup path without NUL");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let limit = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the workload") {
            break status;
        }
        if Instant::now() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} still runs after 60 s", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{} {args:?}: {status}", program.display());
}

/// A cgroup v2 child of this process's own cgroup, `ksight-test-<tag>-<pid>`, removed on
/// drop.
pub struct TestCgroup {
    pub path: PathBuf,
    /// The cgroup id records carry (the directory's inode number).
    pub id: u64,
}

impl TestCgroup {
    /// Makes the cgroup; panics when it cannot (tests need root and cgroup v2).
    pub fn new(tag: &str) -> Self {
        Self::create(tag).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Makes the cgroup, or says why it cannot.
    pub fn create(tag: &str) -> std::io::Result<Self> {
        let path = own_dir()?.join(format!("ksight-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        let id = std::fs::metadata(&path)?.ino();
        Ok(Self { path, id })
    }

    /// `program args`, to be started inside this cgroup (it joins between fork and exec,
    /// so everything it does is attributed to the cgroup).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        join_before_exec(&mut cmd, &self.path).expect("a cgroup path without NUL");
        cmd
    }

    /// Runs `program args` in this cgroup to completion (see [`run_in_cgroup`]).
    pub fn run(&self, program: &Path, args: &[&str]) {
        run_in_cgroup(&self.path, program, args);
    }

    /// Removes the cgroup now, waiting up to 10 s for its last processes to leave;
    /// panics when it cannot.
    pub fn remove(&self) {
        if let Err(e) = self.try_remove(Duration::from_secs(10)) {
            panic!("removing {}: {e}", self.path.display());
        }
    }

    fn try_remove(&self, limit: Duration) -> std::io::Result<()> {
        let until = Instant::now() + limit;
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // The last exits may still be leaving the cgroup.
                Err(e) if Instant::now() > until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.try_remove(Duration::from_secs(5));
    }
}
