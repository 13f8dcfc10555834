//! Kubernetes metadata for attribution: the pods on this node, the owners of their
//! ReplicaSets and Jobs, and the namespaces' annotations, kept current by list+watch
//! against the API server on a thread of its own.
//!
//! Readers ([`KubeMetadata::container`], [`KubeMetadata::pod`]) take a read lock for a
//! few hash lookups and clone the answer: they never wait on the network. The watcher
//! thread holds the write lock only to swap in an already-converted entry.
//!
//! Workload resolution follows the pod's controller ownerReference:
//! - ReplicaSet → the ReplicaSet's own controller (a Deployment) once the ReplicaSet's
//!   metadata is known; until then, or if it has no controller, the ReplicaSet itself.
//! - Job → its controller (a CronJob) once the Job's metadata is known, else the Job.
//! - Any other controller kind (DaemonSet, StatefulSet, Node for static pods, a custom
//!   controller) is reported as it is.
//! - A pod with no controller ownerReference has no workload (`None`): nothing is
//!   invented for bare pods.
//!
//! A pod is `ignored` when it or its namespace carries the annotation
//! `ksight.io/ignore: "true"`.
//!
//! The API server being down, slow or answering garbage stops nothing: the error is
//! counted in [`KubeHealth`], `connected` goes false, and kube-runtime's watcher retries
//! with its default backoff, relisting when its resourceVersion has expired (410 Gone).
//! A relist replaces the store, so a pod deleted while we were away disappears.
//!
//! Permissions needed (ClusterRole): `list`/`watch` on `pods`, `namespaces`,
//! `replicasets.apps` and `jobs.batch`.

#[cfg(feature = "kubernetes")]
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[cfg_attr(not(feature = "kubernetes"), allow(unused_imports))]
use super::labels::IGNORE_ANNOTATION;

/// Where and what to watch.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// API server URL, e.g. `"http://127.0.0.1:8001"` (a `kubectl proxy`, or a test
    /// server). `None`: `kube::Config::infer()` — in-cluster service account, else the
    /// kubeconfig.
    pub api_server: Option<String>,
    /// This node's name: pods are watched with the field selector `spec.nodeName=<node>`.
    pub node_name: String,
    /// The watch timeout (`timeoutSeconds`): each watch call ends after it and is resumed
    /// from the last resourceVersion (no relist). A watch silent for `resync` + 5 s is
    /// taken as dead, and so is a list or watch response stalled for as long.
    /// Default 290 s, as client-go and kube-runtime use.
    pub resync: Duration,
}

impl KubeSettings {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            api_server: None,
            node_name: node_name.into(),
            resync: Duration::from_secs(290),
        }
    }
}

/// Why the watcher could not start. Trouble with the API server after the start is no
/// error: it shows in [`KubeMetadata::health`].
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable cluster configuration: a bad `api_server` URL, or neither an in-cluster
    /// service account nor a kubeconfig.
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    /// The watcher thread or its runtime could not be started.
    #[error("kubernetes watcher thread: {0}")]
    Runtime(#[from] std::io::Error),
    /// This build has no Kubernetes support (the engine's `kubernetes` feature is off).
    #[error("this build of ksight has no Kubernetes support")]
    Disabled,
}

/// What a pod's containers belong to: the controller at the top of its owner chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// "Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob", "ReplicaSet", "Node"
    /// (static pods), or whatever custom controller owns the pod.
    pub kind: String,
    pub name: String,
}

/// A pod on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `None` for a pod without a controller ownerReference.
    pub workload: Option<Workload>,
    /// `ksight.io/ignore: "true"` on the pod or on its namespace.
    pub ignored: bool,
    /// (name, container id without the runtime prefix, runtime prefix) for the init,
    /// regular and ephemeral containers, in that order. The id is `None` (and the runtime
    /// empty) until the kubelet reports the container started.
    pub containers: Vec<(String, Option<String>, String)>,
}

/// A container of a pod on this node, found by its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The container's name in the pod spec.
    pub container: String,
    /// The runtime prefix of the status containerID: "containerd", "cri-o", "docker".
    pub runtime: String,
    pub workload: Option<Workload>,
    pub ignored: bool,
}

/// How the watch is doing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KubeHealth {
    /// Every watched resource's last list/watch request succeeded and its stream has
    /// reported no error since.
    pub connected: bool,
    /// The first complete list of this node's pods is in.
    pub synced: bool,
    /// Pods in the store.
    pub pods: usize,
    /// Errors from the API server or the connection to it (each retried).
    pub errors_total: u64,
    /// Complete lists after the first, per resource: after a 410 Gone, an expired
    /// resourceVersion, or an error that made the watcher start over.
    pub relists_total: u64,
    /// The most recent error, prefixed with the resource it concerned.
    pub last_error: Option<String>,
    /// When the last object or list arrived (Unix seconds).
    pub last_event_unix_s: Option<f64>,
}

/// Handle to the Kubernetes metadata; cheap to clone and to share between threads. The
/// watcher thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct KubeMetadata {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for KubeMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeMetadata")
            .field("generation", &self.generation())
            .field("health", &self.health())
            .finish()
    }
}

/// Starts watching on a thread of its own (a current-thread tokio runtime) and returns at
/// once: the store fills as the lists arrive. Fails only when there is no usable client
/// configuration or the thread cannot be started.
pub fn spawn(settings: KubeSettings) -> Result<KubeMetadata, KubeError> {
    #[cfg(feature = "kubernetes")]
    {
        watch::spawn(settings)
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = settings;
        Err(KubeError::Disabled)
    }
}

impl KubeMetadata {
    /// A store with these pods and no watcher, marked synced: for tests, and for replaying
    /// metadata recorded elsewhere.
    pub fn fixed(pods: impl IntoIterator<Item = PodMeta>) -> Self {
        let this = Self {
            shared: Arc::new(Shared::default()),
            _stop: Arc::new(StopOnDrop(Mutex::new(None))),
        };
        this.shared
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .synced = true;
        this.replace_fixed(pods);
        this
    }

    /// Replaces the pods of a [`Self::fixed`] store (as a relist would), bumping the
    /// generation.
    pub fn replace_fixed(&self, pods: impl IntoIterator<Item = PodMeta>) {
        let records = pods
            .into_iter()
            .map(|p| {
                let record = PodRecord {
                    uid: p.uid.clone(),
                    namespace: p.namespace,
                    name: p.name,
                    owner: p.workload.map(|w| Owner {
                        kind: w.kind,
                        name: w.name,
                    }),
                    ignore_annotation: p.ignored,
                    containers: p
                        .containers
                        .into_iter()
                        .map(|(name, id, runtime)| ContainerRecord { name, id, runtime })
                        .collect(),
                    previous_ids: Vec::new(),
                };
                (p.uid, record)
            })
            .collect();
        self.shared
            .store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace_pods(records);
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// The container with this id (full hex, no runtime prefix), if it belongs to a pod on
    /// this node. Init and ephemeral containers included, and the previous instance of a
    /// restarted container.
    pub fn container(&self, container_id: &str) -> Option<ContainerMeta> {
        let store = self.shared.read();
        let uid = store.by_container.get(container_id)?;
        let pod = store.pods.get(uid)?;
        let (name, runtime) = pod
            .containers
            .iter()
            .find(|c| c.id.as_deref() == Some(container_id))
            .map(|c| (c.name.clone(), c.runtime.clone()))
            .or_else(|| {
                pod.previous_ids
                    .iter()
                    .find(|(id, _, _)| id == container_id)
                    .map(|(_, name, runtime)| (name.clone(), runtime.clone()))
            })?;
        Some(ContainerMeta {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: name,
            runtime,
            workload: store.workload(pod),
            ignored: store.ignored(pod),
        })
    }

    /// The pod with this uid, if it is on this node.
    pub fn pod(&self, pod_uid: &str) -> Option<PodMeta> {
        let store = self.shared.read();
        let pod = store.pods.get(pod_uid)?;
        Some(PodMeta {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            workload: store.workload(pod),
            ignored: store.ignored(pod),
            containers: pod
                .containers
                .iter()
                .map(|c| (c.name.clone(), c.id.clone(), c.runtime.clone()))
                .collect(),
        })
    }

    /// Every pod in the store, in no particular order.
    pub fn pods(&self) -> Vec<PodMeta> {
        let uids: Vec<String> = self.shared.read().pods.keys().cloned().collect();
        uids.iter().filter_map(|u| self.pod(u)).collect()
    }

    /// Bumped on every change to the store: labels resolved at an older generation may be
    /// stale.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    pub fn health(&self) -> KubeHealth {
        let pods = self.shared.read().pods.len();
        let h = self.shared.health.lock().unwrap_or_else(|e| e.into_inner());
        KubeHealth {
            connected: h.connected.iter().all(|&c| c),
            synced: h.synced,
            pods,
            errors_total: h.errors_total,
            relists_total: h.relists_total,
            last_error: h.last_error.clone(),
            last_event_unix_s: h.last_event_unix_s,
        }
    }
}

/// Drops the sender that keeps the watcher thread alive.
struct StopOnDrop(Mutex<Option<Box<dyn Send>>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The resources watched, indexing [`HealthState::connected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
enum Resource {
    Pods = 0,
    ReplicaSets = 1,
    Jobs = 2,
    Namespaces = 3,
}

#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
impl Resource {
    const COUNT: usize = 4;

    fn name(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::ReplicaSets => "replicasets",
            Resource::Jobs => "jobs",
            Resource::Namespaces => "namespaces",
        }
    }
}

#[derive(Default)]
struct Shared {
    store: RwLock<Store>,
    generation: AtomicU64,
    health: Mutex<HealthState>,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
struct HealthState {
    connected: [bool; Resource::COUNT],
    synced: bool,
    /// Complete lists seen per resource.
    lists: [u64; Resource::COUNT],
    errors_total: u64,
    relists_total: u64,
    last_error: Option<String>,
    last_event_unix_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    kind: String,
    name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ContainerRecord {
    name: String,
    id: Option<String>,
    runtime: String,
}

/// A pod as stored: what attribution needs, nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodRecord {
    uid: String,
    namespace: String,
    name: String,
    /// The controller ownerReference.
    owner: Option<Owner>,
    ignore_annotation: bool,
    containers: Vec<ContainerRecord>,
    /// (id, container name, runtime) of the previous instances of restarted containers
    /// (status `lastState.terminated.containerID`): their last events still find the pod.
    previous_ids: Vec<(String, String, String)>,
}

impl PodRecord {
    fn ids(&self) -> impl Iterator<Item = &str> {
        self.containers
            .iter()
            .filter_map(|c| c.id.as_deref())
            .chain(self.previous_ids.iter().map(|(id, _, _)| id.as_str()))
    }
}

/// The metadata as stored; keys of the owner maps are `namespace/name`.
#[derive(Default)]
struct Store {
    /// By pod uid.
    pods: HashMap<String, PodRecord>,
    /// Container id → pod uid.
    by_container: HashMap<String, String>,
    /// ReplicaSet → its controller.
    replicasets: HashMap<String, Option<Owner>>,
    /// Job → its controller.
    jobs: HashMap<String, Option<Owner>>,
    /// Namespace → ignored.
    namespaces: HashMap<String, bool>,
}

#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
impl Store {
    fn workload(&self, pod: &PodRecord) -> Option<Workload> {
        let owner = pod.owner.as_ref()?;
        let parents = match owner.kind.as_str() {
            "ReplicaSet" => Some(&self.replicasets),
            "Job" => Some(&self.jobs),
            _ => None,
        };
        let top = parents
            .and_then(|map| map.get(&format!("{}/{}", pod.namespace, owner.name)))
            .and_then(Option::as_ref)
            .unwrap_or(owner);
        Some(Workload {
            kind: top.kind.clone(),
            name: top.name.clone(),
        })
    }

    /// Whether a pod on this node has the `kind` controller `namespace/name` (`key`).
    fn owns_local_pod(&self, kind: &str, key: &str) -> bool {
        let Some((namespace, name)) = key.split_once('/') else {
            return false;
        };
        self.pods.values().any(|p| {
            p.namespace == namespace
                && p.owner
                    .as_ref()
                    .is_some_and(|o| o.kind == kind && o.name == name)
        })
    }

    fn has_local_pod_in(&self, namespace: &str) -> bool {
        self.pods.values().any(|p| p.namespace == namespace)
    }

    fn ignored(&self, pod: &PodRecord) -> bool {
        pod.ignore_annotation
            || self
                .namespaces
                .get(&pod.namespace)
                .copied()
                .unwrap_or(false)
    }

    fn unindex(&mut self, record: &PodRecord) {
        for id in record.ids() {
            if self.by_container.get(id) == Some(&record.uid) {
                self.by_container.remove(id);
            }
        }
    }

    /// Inserts or replaces a pod; false when nothing changed.
    fn upsert_pod(&mut self, uid: String, record: PodRecord) -> bool {
        if self.pods.get(&uid) == Some(&record) {
            return false;
        }
        if let Some(old) = self.pods.remove(&uid) {
            self.unindex(&old);
        }
        for id in record.ids() {
            self.by_container.insert(id.to_string(), uid.clone());
        }
        self.pods.insert(uid, record);
        true
    }

    fn remove_pod(&mut self, uid: &str) -> bool {
        match self.pods.remove(uid) {
            Some(old) => {
                self.unindex(&old);
                true
            }
            None => false,
        }
    }

    /// Replaces every pod (after a complete list); false when nothing changed.
    fn replace_pods(&mut self, pods: HashMap<String, PodRecord>) -> bool {
        if self.pods == pods {
            return false;
        }
        self.by_container = pods
            .iter()
            .flat_map(|(uid, p)| p.ids().map(move |id| (id.to_string(), uid.clone())))
            .collect();
        self.pods = pods;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str, owner: Option<(&str, &str)>, ids: &[&str]) -> PodRecord {
        PodRecord {
            uid: uid.into(),
            namespace: "shop".into(),
            name: format!("pod-{uid}"),
            owner: owner.map(|(k, n)| Owner {
                kind: k.into(),
                name: n.into(),
            }),
            ignore_annotation: false,
            containers: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ContainerRecord {
                    name: format!("c{i}"),
                    id: Some(id.to_string()),
                    runtime: "containerd".into(),
                })
                .collect(),
            previous_ids: vec![],
        }
    }

    #[test]
    fn workload_follows_replicaset_and_job_owners() {
        let mut s = Store::default();
        let rs = record("u1", Some(("ReplicaSet", "web-5d4f")), &["a"]);
        assert_eq!(
            s.workload(&rs),
            Some(Workload {
                kind: "ReplicaSet".into(),
                name: "web-5d4f".into()
            })
        );
        s.replicasets.insert(
            "shop/web-5d4f".into(),
            Some(Owner {
                kind: "Deployment".into(),
                name: "web".into(),
            }),
        );
        assert_eq!(s.workload(&rs).unwrap().kind, "Deployment");
        let job = record("u2", Some(("Job", "nightly-123")), &["b"]);
        assert_eq!(s.workload(&job).unwrap().kind, "Job");
        s.jobs.insert(
            "shop/nightly-123".into(),
            Some(Owner {
                kind: "CronJob".into(),
                name: "nightly".into(),
            }),
        );
        assert_eq!(s.workload(&job).unwrap().name, "nightly");
        // An orphaned ReplicaSet is its own workload; a bare pod has none.
        s.replicasets.insert("shop/orphan".into(), None);
        let orphan = record("u3", Some(("ReplicaSet", "orphan")), &[]);
        assert_eq!(s.workload(&orphan).unwrap().name, "orphan");
        assert_eq!(s.workload(&record("u4", None, &[])), None);
    }

    #[test]
    fn index_follows_upserts_deletes_and_replaces() {
        let mut s = Store::default();
        assert!(s.upsert_pod("u1".into(), record("u1", None, &["a", "b"])));
        assert!(!s.upsert_pod("u1".into(), record("u1", None, &["a", "b"])));
        assert!(s.upsert_pod("u1".into(), record("u1", None, &["a", "c"])));
        assert_eq!(s.by_container.get("a").map(String::as_str), Some("u1"));
        assert!(!s.by_container.contains_key("b"));
        assert!(s.upsert_pod("u2".into(), record("u2", None, &["d"])));
        let mut fresh = HashMap::new();
        fresh.insert("u2".to_string(), record("u2", None, &["d"]));
        assert!(s.replace_pods(fresh));
        assert!(!s.by_container.contains_key("a"));
        assert!(s.remove_pod("u2"));
        assert!(s.by_container.is_empty());
    }

    #[test]
    fn fixed_store_answers_lookups() {
        let k = KubeMetadata::fixed([PodMeta {
            uid: "u1".into(),
            namespace: "shop".into(),
            name: "web-1".into(),
            workload: Some(Workload {
                kind: "StatefulSet".into(),
                name: "web".into(),
            }),
            ignored: true,
            containers: vec![("app".into(), Some("abc".into()), "containerd".into())],
        }]);
        let c = k.container("abc").unwrap();
        assert_eq!((c.pod.as_str(), c.container.as_str()), ("web-1", "app"));
        assert!(c.ignored);
        assert_eq!(k.pod("u1").unwrap().workload.unwrap().kind, "StatefulSet");
        assert!(k.health().synced);
        assert!(k.container("nope").is_none());
    }
}
