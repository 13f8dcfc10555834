//! What the agent reads about the host and itself: the cgroup v2 tree (which cgroups
//! exist, and their paths) and its own CPU time and resident memory.

use ksight_engine::export::CgroupTree;
use ksight_engine::export::prometheus::OwnUsage;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Every cgroup under the cgroup v2 mount: directory inode (the id events carry) → path
/// from the root. Incomplete when there is no cgroup v2 hierarchy or its root is unreadable.
pub fn cgroup_tree() -> CgroupTree {
    match crate::cgroup::cgroup2_mount() {
        Some(mount) => walk(&mount),
        None => CgroupTree::default(),
    }
}

pub fn walk(mount: &Path) -> CgroupTree {
    let mut tree = CgroupTree::default();
    let Ok(root) = std::fs::metadata(mount) else {
        return tree;
    };
    tree.paths.insert(root.ino(), "/".to_string());
    tree.complete = true;
    let mut stack: Vec<(PathBuf, String)> = vec![(mount.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        // Cgroups vanish while we walk; what cannot be read is simply not there.
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let path = format!("{rel}/{}", entry.file_name().to_string_lossy());
            tree.paths.insert(meta.ino(), path.clone());
            stack.push((entry.path(), path));
        }
    }
    tree
}

/// CPU seconds (user + system) and resident bytes of this process.
pub fn own_usage() -> OwnUsage {
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let cpu_ticks = field(14) + field(15);
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    OwnUsage {
        cpu_seconds: cpu_ticks as f64 / ticks.max(1) as f64,
        resident_bytes: resident_pages * page.max(1) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_a_tree_by_inode() {
        let root = std::env::temp_dir().join(format!("ksight-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a.slice/b.service")).unwrap();
        std::fs::write(root.join("a.slice/cgroup.procs"), "").unwrap();
        let tree = walk(&root);
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        assert!(tree.complete);
        assert_eq!(tree.paths.len(), 3);
        assert_eq!(tree.paths[&std::fs::metadata(&root).unwrap().ino()], "/");
        assert_eq!(tree.paths[&ino("a.slice")], "/a.slice");
        assert_eq!(tree.paths[&ino("a.slice/b.service")], "/a.slice/b.service");
        std::fs::remove_dir_all(&root).unwrap();
        assert!(!walk(&root).complete);
    }

    #[test]
    fn own_usage_is_plausible() {
        let u = own_usage();
        assert!(u.resident_bytes > 100_000, "{u:?}");
        assert!(u.cpu_seconds >= 0.0 && u.cpu_seconds < 1e6, "{u:?}");
    }
}
