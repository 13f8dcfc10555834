//! cgroup v2 ids → paths, for display. An id is the inode number of the cgroup's
//! directory, so one walk of the hierarchy names every cgroup that exists.

use ksight_engine::Snapshot;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Unknown ids trigger a new walk at most this often.
const REWALK: Duration = Duration::from_secs(5);
/// Deep enough for Kubernetes (kubepods/burstable/pod…/container…) with room to spare.
const MAX_DEPTH: usize = 12;

pub struct CgroupNames {
    mount: Option<PathBuf>,
    paths: HashMap<u64, String>,
    reported: HashSet<u64>,
    last_walk: Option<Instant>,
}

impl CgroupNames {
    pub fn new() -> Self {
        Self {
            mount: crate::cgroup::cgroup2_mount(),
            paths: HashMap::new(),
            reported: HashSet::new(),
            last_walk: None,
        }
    }

    /// Names of the ids in `snapshot` not named before.
    pub fn new_names(&mut self, snapshot: &Snapshot) -> Vec<(u64, String)> {
        let ids: HashSet<u64> = snapshot
            .cgroups
            .iter()
            .map(|c| c.cgroup_id)
            .chain(snapshot.process.processes.iter().map(|p| p.cgroup_id))
            .chain(snapshot.tcp.connections.iter().map(|c| c.cgroup_id))
            .filter(|id| !self.reported.contains(id))
            .collect();
        if ids.iter().any(|id| !self.paths.contains_key(id))
            && self.last_walk.is_none_or(|t| t.elapsed() >= REWALK)
        {
            self.last_walk = Some(Instant::now());
            if let Some(mount) = &self.mount {
                self.paths.clear();
                walk(mount, mount, 0, &mut self.paths);
            }
        }
        let mut named: Vec<(u64, String)> = ids
            .into_iter()
            .filter_map(|id| Some((id, self.paths.get(&id)?.clone())))
            .collect();
        named.sort();
        self.reported.extend(named.iter().map(|(id, _)| *id));
        named
    }
}

fn walk(mount: &Path, dir: &Path, depth: usize, out: &mut HashMap<u64, String>) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let relative = dir.strip_prefix(mount).unwrap_or(dir);
    out.insert(meta.ino(), format!("/{}", relative.display()));
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(mount, &entry.path(), depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_a_directory_tree_by_inode() {
        let root = std::env::temp_dir().join(format!("ksight-cg-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let mut out = HashMap::new();
        walk(&root, &root, 0, &mut out);
        let ino = std::fs::metadata(root.join("a/b")).unwrap().ino();
        assert_eq!(out.get(&ino).map(String::as_str), Some("/a/b"));
        let ino = std::fs::metadata(&root).unwrap().ino();
        assert_eq!(out.get(&ino).map(String::as_str), Some("/"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
