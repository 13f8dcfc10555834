//! A cgroup of its own for `ksight stat`'s command: every descendant lands in it, and
//! socket events the kernel runs in softirq still carry it, so attribution needs no
//! guessing from whichever task happened to be running.

use anyhow::{Context, Result, anyhow};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

pub struct StatCgroup {
    pub path: PathBuf,
    /// The cgroup v2 id events carry: the inode number of the directory.
    pub id: u64,
}

pub use ksight_attribution::cgroups::cgroup2_mount;

/// This process's cgroup v2 path, relative to the mount.
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/').to_string())
}

impl StatCgroup {
    /// Creates `<own cgroup>/ksight-stat-<pid>`; a child of our own keeps the command under
    /// the limits we run under.
    pub fn create() -> Result<Self> {
        let mount = cgroup2_mount().ok_or_else(|| anyhow!("no cgroup v2 hierarchy is mounted"))?;
        let own =
            own_cgroup().ok_or_else(|| anyhow!("/proc/self/cgroup has no cgroup v2 entry"))?;
        let path = mount
            .join(own)
            .join(format!("ksight-stat-{}", std::process::id()));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        let id = std::fs::metadata(&path)
            .with_context(|| format!("reading cgroup {}", path.display()))?
            .ino();
        Ok(Self { path, id })
    }

    /// Removes the cgroup once its processes are gone; a straggler keeps it (and we say so).
    pub fn remove(&self) -> Result<()> {
        remove_dir_retrying(&self.path)
    }
}

fn remove_dir_retrying(path: &Path) -> Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(last.expect("tried")).with_context(|| {
        format!(
            "removing cgroup {} (processes still in it?)",
            path.display()
        )
    })
}

/// Starts `command` inside `cgroup` (when there is one). Like time(1), this process
/// ignores Ctrl-C from then on: it is for the command, and we report once it is gone.
pub fn spawn_in(command: &[String], cgroup: Option<&StatCgroup>) -> Result<std::process::Child> {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(cg) = cgroup {
        ksight_attribution::cgroups::join_before_exec(&mut cmd, &cg.path)?;
    }
    // SAFETY: between fork and exec only async-signal-safe calls: signal.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    // SAFETY: setting a disposition to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    cmd.spawn()
        .with_context(|| format!("cannot run {}", command[0]))
}
