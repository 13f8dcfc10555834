//! cgroup id → labels. Resolution runs once per cgroup and again when the Kubernetes
//! metadata or the filters change, never per event.

use super::cgroups::CgroupPaths;
use super::container::{CgroupInfo, Runtime, classify};
use super::kube::KubeMetadata;
use super::labels::{CgroupLabels, Filters, group_by_owner};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Resolves cgroup ids to labels, caching per id. When the Kubernetes metadata or the
/// filters change, cached labels are resolved again — except for cgroups that are gone,
/// and for a pod that was named once and whose metadata is now deleted: their series keep
/// their names until they expire, rather than turn into new, unnamed series.
pub struct Attributor {
    paths: CgroupPaths,
    kube: Option<KubeMetadata>,
    filters: Filters,
    cache: FxHashMap<u64, Cached>,
    /// Ids no walk found (removed before they were seen, or not cgroup v2 ids).
    missed: FxHashMap<u64, Missed>,
    kube_generation: u64,
    /// Bumped when the metadata or the filters change: cached labels of an older epoch
    /// are resolved again.
    epoch: u64,
}

struct Cached {
    labels: Arc<CgroupLabels>,
    epoch: u64,
    /// Asked for since the last [`Attributor::sweep`].
    used: bool,
}

struct Missed {
    /// [`CgroupPaths::walks`] when the id was first missed.
    walks: u64,
    /// A walk since then was tried for it: the id waits for the periodic refresh.
    retried: bool,
    used: bool,
}

impl Attributor {
    pub fn new(paths: CgroupPaths, kube: Option<KubeMetadata>, filters: Filters) -> Self {
        Self {
            paths,
            kube,
            filters,
            cache: FxHashMap::default(),
            missed: FxHashMap::default(),
            kube_generation: 0,
            epoch: 0,
        }
    }

    /// This host's cgroup tree, no Kubernetes metadata, no filters: what `stat` and a
    /// stand-alone `top` name cgroups with.
    pub fn host() -> Self {
        Self::new(CgroupPaths::host(), None, Filters::default())
    }

    pub fn set_filters(&mut self, filters: Filters) {
        self.filters = filters;
        self.epoch += 1;
    }

    pub fn kube(&self) -> Option<&KubeMetadata> {
        self.kube.as_ref()
    }

    pub fn paths(&mut self) -> &mut CgroupPaths {
        &mut self.paths
    }

    /// The cgroup tree as of the last walk.
    pub fn tree(&self) -> &super::cgroups::CgroupTree {
        self.paths.tree()
    }

    /// Changes whenever the cgroup tree was re-read, the metadata or the filters changed:
    /// then the ignore set must be recomputed.
    pub fn version(&mut self) -> u64 {
        self.sync_generation();
        self.epoch + self.paths.walks()
    }

    fn sync_generation(&mut self) {
        if let Some(k) = &self.kube {
            let generation = k.generation();
            if generation != self.kube_generation {
                self.kube_generation = generation;
                self.epoch += 1;
            }
        }
    }

    pub fn labels(&mut self, id: u64) -> Arc<CgroupLabels> {
        self.sync_generation();
        let epoch = self.epoch;
        if let Some(c) = self.cache.get_mut(&id) {
            c.used = true;
            if c.epoch == epoch {
                return c.labels.clone();
            }
            c.epoch = epoch;
            let old = c.labels.clone();
            let Some(path) = self.paths.cached(id).map(str::to_string) else {
                return old;
            };
            let new = self.resolve(path);
            let unnamed = !old.pod.is_empty() && new.pod.is_empty();
            let labels = if unnamed { old } else { Arc::new(new) };
            if let Some(c) = self.cache.get_mut(&id) {
                c.labels = labels.clone();
            }
            return labels;
        }
        let path = match self.missed.get_mut(&id) {
            Some(m) => {
                m.used = true;
                match self.paths.cached(id) {
                    Some(p) => Some(p.to_string()),
                    // New since the last walk, which ran too recently to walk again for it
                    // when it was first seen: one more walk, when allowed.
                    None if !m.retried && self.paths.walks() == m.walks => {
                        let path = self.paths.path(id).map(str::to_string);
                        let walked = self.paths.walks() != m.walks;
                        if let Some(m) = self.missed.get_mut(&id) {
                            m.retried = walked;
                        }
                        path
                    }
                    None => None,
                }
            }
            None => {
                let before = self.paths.walks();
                let path = self.paths.path(id).map(str::to_string);
                if path.is_none() {
                    self.missed.insert(
                        id,
                        Missed {
                            walks: before,
                            retried: self.paths.walks() != before,
                            used: true,
                        },
                    );
                }
                path
            }
        };
        let Some(path) = path else {
            return Arc::new(CgroupLabels::default());
        };
        self.missed.remove(&id);
        let labels = Arc::new(self.resolve(path));
        self.cache.insert(
            id,
            Cached {
                labels: labels.clone(),
                epoch,
                used: true,
            },
        );
        labels
    }

    /// Forgets the labels of ids not asked for since the last sweep whose cgroup is gone,
    /// so a host that churns through containers does not grow the cache for ever. Call it
    /// once per publication.
    pub fn sweep(&mut self) {
        let paths = self.paths.paths();
        self.cache
            .retain(|id, c| std::mem::take(&mut c.used) || paths.contains_key(id));
        self.missed.retain(|_, m| std::mem::take(&mut m.used));
    }

    fn resolve(&self, path: String) -> CgroupLabels {
        let info: CgroupInfo = classify(&path);
        let mut l = CgroupLabels {
            unit: info.unit.clone().unwrap_or_default(),
            pod_uid: info.pod_uid.clone().unwrap_or_default(),
            path,
            ..CgroupLabels::default()
        };
        if let Some(c) = &info.container {
            if c.runtime != Runtime::Unknown {
                l.runtime = c.runtime.as_str().to_string();
            }
            l.container_id = c.id.clone();
        }
        let Some(kube) = &self.kube else {
            return l;
        };
        let in_pod = !l.pod_uid.is_empty();
        if let Some(meta) = info
            .container
            .as_ref()
            .filter(|_| !info.conmon)
            .and_then(|c| kube.container(&c.id))
        {
            l.namespace = meta.namespace;
            l.pod = meta.pod;
            l.pod_uid = meta.pod_uid;
            l.container = meta.container;
            if !meta.runtime.is_empty() {
                l.runtime = meta.runtime;
            }
            if let Some(w) = meta.workload {
                l.workload_kind = w.kind;
                l.workload = w.name;
            }
            l.ignored = meta.ignored;
        } else if let Some(pod) = in_pod.then(|| kube.pod(&l.pod_uid)).flatten() {
            // The pod's own cgroup, its sandbox, a runtime monitor, or a container whose
            // status has not been reported yet.
            l.namespace = pod.namespace;
            l.pod = pod.name;
            if let Some(w) = pod.workload {
                l.workload_kind = w.kind;
                l.workload = w.name;
            }
            l.ignored = pod.ignored;
        } else if in_pod || (info.container.is_some() && !kube.health().synced) {
            l.pending = true;
        }
        l.ignored |= !self.filters.wants(&l);
        l
    }

    /// Number of cached labels (for tests and footprint checks).
    pub fn cached(&self) -> usize {
        self.cache.len() + self.missed.len()
    }

    /// Every known cgroup that is ignored, sub-cgroups of ignored containers included.
    pub fn ignored_ids(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.paths.paths().keys().copied().collect();
        let mut out: Vec<u64> = ids
            .into_iter()
            .filter(|&id| self.labels(id).ignored)
            .collect();
        out.sort_unstable();
        out
    }
}

/// Fills each cgroup row's attribution and the owner grouping of `snapshot`, and the
/// cgroup of each process and connection is unchanged (ids join them to the rows).
pub fn attribute(snapshot: &mut ksight_engine::Snapshot, attributor: &mut Attributor) {
    for row in &mut snapshot.cgroups {
        row.attribution = Some((*attributor.labels(row.cgroup_id)).clone());
    }
    snapshot.containers = group_by_owner(&snapshot.cgroups);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::{PodMeta, Workload};
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    const UID: &str = "0f1c6a3e-5a2b-4c1d-9e8f-123456789abc";
    const WEB: &str = "3f4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829";
    const SIDECAR: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const DOCKER: &str = "9e8f7d6c5b4a39281706f5e4d3c2b1a09e8f7d6c5b4a39281706f5e4d3c2b1a0";

    /// A directory tree shaped like a node's cgroup hierarchy (systemd driver).
    struct Tree(PathBuf);

    impl Tree {
        fn new(dirs: &[&str]) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root =
                std::env::temp_dir().join(format!("ksight-attributor-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for d in dirs {
                std::fs::create_dir_all(root.join(d.trim_start_matches('/'))).unwrap();
            }
            Self(root)
        }

        fn id(&self, dir: &str) -> u64 {
            std::fs::metadata(self.0.join(dir.trim_start_matches('/')))
                .unwrap()
                .ino()
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pod_slice() -> String {
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        )
    }

    fn web_pod(ignored: bool) -> PodMeta {
        PodMeta {
            uid: UID.into(),
            namespace: "shop".into(),
            name: "web-7d9f8-x2k4q".into(),
            workload: Some(Workload {
                kind: "Deployment".into(),
                name: "web".into(),
            }),
            ignored,
            containers: vec![
                ("web".into(), Some(WEB.into()), "containerd".into()),
                ("sidecar".into(), Some(SIDECAR.into()), "containerd".into()),
            ],
        }
    }

    #[test]
    fn containers_pods_units_and_paths_are_named() {
        let pod = pod_slice();
        let web = format!("{pod}/cri-containerd-{WEB}.scope");
        let web_sub = format!("{web}/init.scope");
        let unknown = format!("{pod}/cri-containerd-{SIDECAR}.scope");
        let docker = format!("/system.slice/docker-{DOCKER}.scope");
        let tree = Tree::new(&[
            &web_sub,
            &unknown,
            &docker,
            "/system.slice/nginx.service",
            "/custom/thing",
        ]);
        let kube = KubeMetadata::fixed([PodMeta {
            containers: vec![("web".into(), Some(WEB.into()), "containerd".into())],
            ..web_pod(false)
        }]);
        let mut a = Attributor::new(
            CgroupPaths::new(Some(tree.path().to_path_buf())),
            Some(kube),
            Filters::default(),
        );
        let l = a.labels(tree.id(&web));
        assert_eq!(
            (l.namespace.as_str(), l.pod.as_str(), l.container.as_str()),
            ("shop", "web-7d9f8-x2k4q", "web")
        );
        assert_eq!(
            (l.workload_kind.as_str(), l.workload.as_str()),
            ("Deployment", "web")
        );
        assert_eq!(
            (l.runtime.as_str(), l.container_id.as_str()),
            ("containerd", WEB)
        );
        assert_eq!(l.pod_uid, UID);
        assert!(!l.pending && !l.ignored);
        // A sub-cgroup of the container is the container.
        assert_eq!(
            a.labels(tree.id(&web_sub)).display_name(),
            "shop/web-7d9f8-x2k4q/web"
        );
        // A container the pod's status does not list (yet): the pod is known.
        let l = a.labels(tree.id(&unknown));
        assert_eq!(l.display_name(), "shop/web-7d9f8-x2k4q");
        assert_eq!(l.container_id, SIDECAR);
        // The pod's own cgroup.
        assert_eq!(
            a.labels(tree.id(&pod)).display_name(),
            "shop/web-7d9f8-x2k4q"
        );
        // Not Kubernetes: runtime and id, unit, path.
        let l = a.labels(tree.id(&docker));
        assert_eq!(l.display_name(), "docker:9e8f7d6c5b4a");
        assert!(
            !l.pending,
            "a docker container outside any pod waits for no metadata"
        );
        assert_eq!(
            a.labels(tree.id("/system.slice/nginx.service"))
                .display_name(),
            "nginx.service"
        );
        assert_eq!(
            a.labels(tree.id("/custom/thing")).display_name(),
            "/custom/thing"
        );
        assert_eq!(a.labels(u64::MAX).display_name(), "(unknown cgroup)");
    }

    #[test]
    fn pods_without_metadata_are_pending_and_named_when_it_arrives() {
        let pod = pod_slice();
        let web = format!("{pod}/cri-containerd-{WEB}.scope");
        let tree = Tree::new(&[&web, "/a"]);
        let mut a = Attributor::new(
            CgroupPaths::new(Some(tree.path().to_path_buf())),
            Some(KubeMetadata::fixed([])),
            Filters::default(),
        );
        let l = a.labels(tree.id(&web));
        assert!(l.pending);
        assert_eq!(
            l.display_name(),
            format!("pod {UID}:containerd:3f4b5c6d7e8f")
        );
        // No Kubernetes at all: nothing is pending.
        let mut bare = Attributor::new(
            CgroupPaths::new(Some(tree.path().to_path_buf())),
            None,
            Filters::default(),
        );
        assert!(!bare.labels(tree.id(&web)).pending);
    }

    #[test]
    fn ignored_pods_and_filtered_containers_with_their_sub_cgroups() {
        let pod = pod_slice();
        let web = format!("{pod}/cri-containerd-{WEB}.scope");
        let web_sub = format!("{web}/init.scope");
        let sidecar = format!("{pod}/cri-containerd-{SIDECAR}.scope");
        let tree = Tree::new(&[&web_sub, &sidecar, "/system.slice/nginx.service", "/x/y/z"]);
        let paths = || CgroupPaths::new(Some(tree.path().to_path_buf()));
        // Annotated pod: the pod, its containers and their sub-cgroups; nothing else.
        let mut a = Attributor::new(
            paths(),
            Some(KubeMetadata::fixed([web_pod(true)])),
            Filters::default(),
        );
        let mut expect = vec![
            tree.id(&pod),
            tree.id(&web),
            tree.id(&web_sub),
            tree.id(&sidecar),
        ];
        expect.sort_unstable();
        assert_eq!(a.ignored_ids(), expect);
        // Exclude by regex: only the sidecar.
        let filters = Filters::new(&[], &[".*/.*/sidecar".into()]).unwrap();
        let mut a = Attributor::new(
            paths(),
            Some(KubeMetadata::fixed([web_pod(false)])),
            filters,
        );
        assert_eq!(a.ignored_ids(), vec![tree.id(&sidecar)]);
        let before = a.version();
        a.set_filters(Filters::default());
        assert_ne!(
            a.version(),
            before,
            "a filter change recomputes the ignore set"
        );
        assert_eq!(a.ignored_ids(), Vec::<u64>::new());
    }

    #[test]
    fn names_survive_metadata_changes_once_the_cgroup_or_the_pod_is_gone() {
        let pod = pod_slice();
        let web = format!("{pod}/cri-containerd-{WEB}.scope");
        let sidecar = format!("{pod}/cri-containerd-{SIDECAR}.scope");
        let tree = Tree::new(&[&web, &sidecar]);
        let kube = KubeMetadata::fixed([web_pod(false)]);
        let mut a = Attributor::new(
            CgroupPaths::new(Some(tree.path().to_path_buf())),
            Some(kube.clone()),
            Filters::default(),
        );
        let (web_id, sidecar_id) = (tree.id(&web), tree.id(&sidecar));
        assert_eq!(a.labels(web_id).display_name(), "shop/web-7d9f8-x2k4q/web");
        assert_eq!(a.labels(sidecar_id).container, "sidecar");
        // The sidecar's cgroup goes; then the metadata changes (the pod's workload).
        std::fs::remove_dir(tree.path().join(sidecar.trim_start_matches('/'))).unwrap();
        a.paths().refresh();
        let mut moved = web_pod(false);
        moved.workload = Some(Workload {
            kind: "StatefulSet".into(),
            name: "web".into(),
        });
        kube.replace_fixed([moved]);
        let l = a.labels(web_id);
        assert_eq!(
            l.workload_kind, "StatefulSet",
            "a live cgroup is resolved again"
        );
        let l = a.labels(sidecar_id);
        assert_eq!(
            (l.container.as_str(), l.workload_kind.as_str()),
            ("sidecar", "Deployment"),
            "a gone cgroup keeps its labels until its series expire"
        );
        // The pod's metadata is deleted while its cgroup still exists: it stays named.
        kube.replace_fixed([]);
        let l = a.labels(web_id);
        assert_eq!(l.display_name(), "shop/web-7d9f8-x2k4q/web");
        assert!(!l.pending);
    }

    #[test]
    fn a_new_id_seen_right_after_a_walk_gets_one_walk_of_its_own() {
        let tree = Tree::new(&["/a"]);
        let mut paths = CgroupPaths::new(Some(tree.path().to_path_buf()));
        paths.set_min_rewalk(std::time::Duration::from_millis(200));
        let mut a = Attributor::new(paths, None, Filters::default());
        // Created after the construction's walk; asked for before a walk is allowed.
        std::fs::create_dir(tree.path().join("b")).unwrap();
        let b = tree.id("/b");
        let walks = a.paths().walks();
        assert_eq!(a.labels(b).path, "", "too soon to walk");
        assert_eq!(a.paths().walks(), walks);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(a.labels(b).path, "/b", "walked for it once allowed");
        assert_eq!(a.paths().walks(), walks + 1);
    }

    #[test]
    fn unknown_ids_walk_once_and_the_cache_forgets_removed_cgroups() {
        let tree = Tree::new(&["/a", "/b"]);
        let mut paths = CgroupPaths::new(Some(tree.path().to_path_buf()));
        paths.set_min_rewalk(std::time::Duration::ZERO);
        let mut a = Attributor::new(paths, None, Filters::default());
        let walks = a.paths().walks();
        assert_eq!(a.labels(12345678).path, "");
        assert_eq!(a.paths().walks(), walks + 1, "a new id walks the tree");
        assert_eq!(a.labels(12345678).path, "");
        assert_eq!(a.paths().walks(), walks + 1, "a known miss does not");
        let b = tree.id("/b");
        assert_eq!(a.labels(b).path, "/b");
        std::fs::remove_dir(tree.path().join("b")).unwrap();
        a.paths().refresh();
        a.sweep();
        assert_eq!(
            a.labels(b).path,
            "/b",
            "asked for since the last sweep: kept"
        );
        a.sweep();
        a.sweep();
        assert_eq!(a.cached(), 0, "removed and not asked for: forgotten");
    }
}
