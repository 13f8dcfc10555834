//! cgroup id → cgroup path. Events carry the cgroup v2 id, which is the inode number of the
//! cgroup's directory; the path is what says what the cgroup is (see `container`). The map
//! comes from walking the hierarchy, again whenever an unknown id shows up, but rate-limited
//! so a burst of new or bogus ids costs one walk, not one per event.

use rustc_hash::FxHashMap;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mount point of the cgroup v2 hierarchy, from /proc/self/mountinfo. Also finds it in the
/// hybrid layout (v1 controllers at /sys/fs/cgroup/*, v2 at /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_from_mountinfo(&text)
}

/// A mount of the hierarchy's root ("/" in field 4) is preferred: a bind mount of a
/// sub-cgroup would make every path relative to that sub-cgroup.
fn mount_from_mountinfo(text: &str) -> Option<PathBuf> {
    let mut fallback = None;
    for line in text.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> ..."
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let mut fields = left.split_whitespace().skip(3);
        let (Some(root), Some(point)) = (fields.next(), fields.next()) else {
            continue;
        };
        let point = PathBuf::from(unescape_mountinfo(point));
        if root == "/" {
            return Some(point);
        }
        fallback.get_or_insert(point);
    }
    fallback
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes ("\040").
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks that `path` is the root of a cgroup v2 hierarchy (a configured `cgroup_root`).
pub fn check_cgroup2_root(path: &Path) -> Result<(), String> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} is not a valid path", path.display()))?;
    // SAFETY: a valid C string and a zeroed statfs buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "{}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(format!(
            "{} is not a cgroup v2 hierarchy (filesystem type {:#x})",
            path.display(),
            st.f_type
        ));
    }
    Ok(())
}

/// Makes `cmd`'s process join the cgroup at `cgroup_dir` between fork and exec, so
/// everything it runs, from its first instruction, is attributed to that cgroup.
pub fn join_before_exec(cmd: &mut std::process::Command, cgroup_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let procs = std::ffi::CString::new(cgroup_dir.join("cgroup.procs").as_os_str().as_bytes())?;
    // SAFETY: only async-signal-safe calls between fork and exec: open, write, close.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    Ok(())
}

/// The cgroups that exist: id (the inode number of the cgroup v2 directory, which is what
/// events carry) → path relative to the mount.
#[derive(Clone, Debug, Default)]
pub struct CgroupTree {
    pub paths: FxHashMap<u64, String>,
    /// False when the hierarchy could not be read: then no cgroup counts as gone.
    pub complete: bool,
}

/// Cache of cgroup id → path relative to the hierarchy root ("/" for the root itself,
/// "/system.slice/docker-<id>.scope" below it).
#[derive(Debug)]
pub struct CgroupPaths {
    mount: Option<PathBuf>,
    tree: CgroupTree,
    walks: u64,
    last_walk: Option<Instant>,
    min_rewalk: Duration,
}

impl CgroupPaths {
    pub const DEFAULT_MIN_REWALK: Duration = Duration::from_secs(2);

    /// Walks `mount` once. `None` (no cgroup v2 hierarchy) gives an empty, incomplete map.
    pub fn new(mount: Option<PathBuf>) -> Self {
        let mut this = Self {
            mount,
            tree: CgroupTree::default(),
            walks: 0,
            last_walk: None,
            min_rewalk: Self::DEFAULT_MIN_REWALK,
        };
        this.refresh();
        this
    }

    /// The host's cgroup v2 hierarchy.
    pub fn host() -> Self {
        Self::new(cgroup2_mount())
    }

    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// Minimum time between two walks triggered by unknown ids (`refresh` ignores it).
    pub fn set_min_rewalk(&mut self, min: Duration) {
        self.min_rewalk = min;
    }

    /// Path of cgroup `id`. An unknown id re-walks the hierarchy unless a walk happened less
    /// than `min_rewalk` ago: the cgroup may be newer than the last walk.
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.tree.paths.contains_key(&id) && self.rewalk_allowed() {
            self.refresh();
        }
        self.cached(id)
    }

    /// Path of cgroup `id` as of the last walk, without walking.
    pub fn cached(&self, id: u64) -> Option<&str> {
        self.tree.paths.get(&id).map(String::as_str)
    }

    fn rewalk_allowed(&self) -> bool {
        self.last_walk
            .is_none_or(|at| at.elapsed() >= self.min_rewalk)
    }

    /// Walks the hierarchy now.
    pub fn refresh(&mut self) {
        self.walks += 1;
        self.last_walk = Some(Instant::now());
        let (mut paths, complete) = match &self.mount {
            Some(mount) => walk(mount),
            None => (FxHashMap::default(), false),
        };
        if !complete {
            // Part of the tree could not be read: what we knew from there may still exist.
            for (id, path) in self.tree.paths.drain() {
                paths.entry(id).or_insert(path);
            }
        }
        self.tree = CgroupTree { paths, complete };
    }

    /// The tree as of the last walk.
    pub fn tree(&self) -> &CgroupTree {
        &self.tree
    }

    pub fn paths(&self) -> &FxHashMap<u64, String> {
        &self.tree.paths
    }

    /// False when the last walk could not read the whole hierarchy: then an id missing from
    /// `paths` does not mean its cgroup is gone.
    pub fn complete(&self) -> bool {
        self.tree.complete
    }

    /// Number of walks so far, construction included.
    pub fn walks(&self) -> u64 {
        self.walks
    }
}

/// Every directory under `root` by inode. An explicit stack keeps deep trees off the call
/// stack; a cgroup removed while we walk (NotFound) is simply skipped. Any other error makes
/// the walk incomplete.
fn walk(root: &Path) -> (FxHashMap<u64, String>, bool) {
    let mut paths = FxHashMap::default();
    let Ok(meta) = std::fs::metadata(root) else {
        return (paths, false);
    };
    paths.insert(meta.ino(), "/".to_string());
    let mut complete = true;
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                complete &= e.kind() == ErrorKind::NotFound && !rel.is_empty();
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    complete &= e.kind() == ErrorKind::NotFound;
                    continue;
                }
            };
            // d_type from readdir: no stat for the many plain files of each cgroup.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) => {
                    complete &= e.kind() == ErrorKind::NotFound;
                    continue;
                }
            };
            let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
            paths.insert(meta.ino(), child.clone());
            stack.push((entry.path(), child));
        }
    }
    (paths, complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A scratch directory removed on drop (also when the test panics).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ksight-cgroups-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn mkdir(&self, rel: &str) -> u64 {
            let p = self.0.join(rel);
            fs::create_dir_all(&p).unwrap();
            fs::metadata(&p).unwrap().ino()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn walks_a_tree_once_at_construction() {
        let s = Scratch::new("tree");
        let a = s.mkdir("system.slice/docker-abc.scope");
        let b = s.mkdir("system.slice/docker-abc.scope/init.scope");
        let c = s.mkdir("user.slice");
        fs::write(s.0.join("system.slice/cgroup.procs"), "").unwrap();
        let mut p = CgroupPaths::new(Some(s.0.clone()));
        assert_eq!(p.walks(), 1);
        assert!(p.complete());
        let root = fs::metadata(&s.0).unwrap().ino();
        assert_eq!(p.path(root), Some("/"));
        assert_eq!(p.path(a), Some("/system.slice/docker-abc.scope"));
        assert_eq!(p.path(b), Some("/system.slice/docker-abc.scope/init.scope"));
        assert_eq!(p.path(c), Some("/user.slice"));
        // root, system.slice, the scope, init.scope, user.slice; files are not cgroups.
        assert_eq!(p.paths().len(), 5);
        assert_eq!(p.walks(), 1, "known ids never walk");
    }

    #[test]
    fn misses_rewalk_at_most_once_per_interval() {
        let s = Scratch::new("rate");
        let mut p = CgroupPaths::new(Some(s.0.clone()));
        let late = s.mkdir("late.scope");
        // A flood of unknown ids right after the walk: no walk at all within the interval.
        for id in 1_000_000..1_010_000u64 {
            let _ = p.path(id);
        }
        assert_eq!(
            p.path(late),
            None,
            "created after the walk, interval not over"
        );
        assert_eq!(p.walks(), 1);

        p.set_min_rewalk(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(p.path(late), Some("/late.scope"));
        assert_eq!(p.walks(), 2);
        for id in 1_000_000..1_010_000u64 {
            let _ = p.path(id);
        }
        assert_eq!(p.walks(), 2, "the flood right after a walk costs nothing");
        std::thread::sleep(Duration::from_millis(60));
        let _ = p.path(42_424_242);
        assert_eq!(p.walks(), 3);
    }

    #[test]
    fn refresh_forgets_removed_cgroups() {
        let s = Scratch::new("gone");
        let gone = s.mkdir("a/b");
        let mut p = CgroupPaths::new(Some(s.0.clone()));
        assert_eq!(p.cached(gone), Some("/a/b"));
        fs::remove_dir(s.0.join("a/b")).unwrap();
        p.refresh();
        assert!(p.complete());
        assert_eq!(p.cached(gone), None);
        assert_eq!(p.walks(), 2);
    }

    #[test]
    fn deep_tree_needs_no_recursion() {
        let s = Scratch::new("deep");
        // 300 levels: far deeper than real hierarchies, still under PATH_MAX.
        let mut dir = s.0.clone();
        let mut last = 0;
        for _ in 0..300 {
            dir.push("d123456789");
            fs::create_dir(&dir).unwrap();
            last = fs::metadata(&dir).unwrap().ino();
        }
        let mut p = CgroupPaths::new(Some(s.0.clone()));
        assert!(p.complete());
        let path = p.path(last).unwrap();
        assert_eq!(path.matches('/').count(), 300);
    }

    #[test]
    fn unreadable_or_missing_hierarchy_is_incomplete() {
        let mut none = CgroupPaths::new(None);
        assert!(!none.complete());
        assert_eq!(none.path(1), None);

        let s = Scratch::new("missing");
        let known = s.mkdir("kept.scope");
        let mut p = CgroupPaths::new(Some(s.0.clone()));
        assert!(p.complete());
        fs::remove_dir_all(&s.0).unwrap();
        p.refresh();
        assert!(!p.complete(), "the root itself vanished");
        assert_eq!(
            p.cached(known),
            Some("/kept.scope"),
            "kept while incomplete"
        );
    }

    #[test]
    fn mountinfo_parsing() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_from_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            mount_from_mountinfo(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // A bind mount of a sub-cgroup comes first; the root mount wins.
        let both = "50 23 0:26 /kubepods /var/lib/x rw - cgroup2 cgroup2 rw\n\
            51 23 0:26 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_from_mountinfo(both),
            Some(PathBuf::from("/sys/fs/my cgroup"))
        );
        assert_eq!(mount_from_mountinfo("garbage\n - \n"), None);
        assert_eq!(unescape_mountinfo("a\\134b\\0"), "a\\b\\0");
    }

    /// The real hierarchy: a cgroup made here must resolve, after a miss-triggered rewalk, to
    /// its path. Needs root and cgroup v2; anything else is a failure, never a skip.
    #[test]
    fn host_hierarchy_resolves_a_new_cgroup() {
        let mount = cgroup2_mount().expect(
            "no cgroup2 mount in /proc/self/mountinfo: this test needs a cgroup v2 hierarchy",
        );
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test creates a cgroup under {} and must run as root",
            mount.display()
        );
        let mut p = CgroupPaths::host();
        assert_eq!(p.mount(), Some(mount.as_path()));
        assert!(p.complete(), "could not walk {}", mount.display());
        assert_eq!(
            p.paths()
                .get(&fs::metadata(&mount).unwrap().ino())
                .map(String::as_str),
            Some("/")
        );

        let name = format!("ksight-test-{}", std::process::id());
        let dir = mount.join(&name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        struct Rmdir(PathBuf);
        impl Drop for Rmdir {
            fn drop(&mut self) {
                let _ = fs::remove_dir(&self.0);
            }
        }
        let guard = Rmdir(dir.clone());
        let id = fs::metadata(&dir).unwrap().ino();
        assert!(
            fs::metadata(dir.join("cgroup.procs")).is_ok(),
            "not a cgroup v2 directory"
        );

        assert_eq!(p.cached(id), None, "made after the walk");
        p.set_min_rewalk(Duration::ZERO);
        let walks = p.walks();
        assert_eq!(p.path(id), Some(format!("/{name}").as_str()));
        assert_eq!(p.walks(), walks + 1, "the miss walked once");

        drop(guard);
        assert!(!dir.exists(), "could not remove {}", dir.display());
        p.refresh();
        assert!(p.complete());
        assert_eq!(p.cached(id), None);
    }
}
