//! Kubernetes metadata for attribution: the pods on this node, the owners of their
//! ReplicaSets and Jobs, the namespaces' annotations, and cluster-wide the Services and
//! EndpointSlices (to name the peers of connections), kept current by list+watch against
//! the API server on a thread of its own.
//!
//! Readers ([`KubeMetadata::container`], [`KubeMetadata::pod`],
//! [`KubeMetadata::endpoint`], [`KubeMetadata::services_of_pod`]) take a read lock for a
//! few hash lookups and clone the answer: they never wait on the network. The watcher
//! thread holds the write lock only to swap in an already-converted entry (or a complete
//! list, indexed beforehand).
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
//! Addresses ([`KubeMetadata::endpoint`]) resolve, first match wins:
//! - a ClusterIP → its Service, whatever the port (a port the Service does not expose is
//!   unusual — a misconfigured client or a port just removed — and the IP is still the
//!   Service's);
//! - an address of an EndpointSlice → the pod of its targetRef and the slice's Service
//!   (`kubernetes.io/service-name`); slices listing the port first, then, of several
//!   Services, the lexicographically first (namespace, name) — an address backing
//!   several Services on one port cannot be told apart from the address alone;
//! - an IP of a pod on this node (`status.podIPs`; not host-network pods, whose IP is the
//!   node's, nor finished ones, whose IP may be reused) → that pod, and the first of its
//!   Services.
//!
//! Permissions needed (ClusterRole): `list`/`watch` on `pods`, `namespaces`, `services`,
//! `replicasets.apps`, `jobs.batch` and `endpointslices.discovery.k8s.io`.

mod services;
#[cfg(feature = "kubernetes")]
mod watch;

pub use services::{
    Endpoint, EndpointPort, EndpointSliceMeta, Protocol, SERVICE_NAME_LABEL, ServiceMeta,
    ServicePort, SliceEndpoint,
};
use services::{ServiceIndex, ServiceRecord, SliceIndex, SliceRecord};

use std::collections::HashMap;
use std::net::IpAddr;
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
    /// The first complete lists of Services and EndpointSlices are in: until then an
    /// unknown address may be one not listed yet.
    pub services_synced: bool,
    /// Pods in the store.
    pub pods: usize,
    /// Services in the store (cluster-wide).
    pub services: usize,
    /// EndpointSlices in the store (cluster-wide).
    pub endpoint_slices: usize,
    /// Errors from the API server or the connection to it (each retried).
    pub errors_total: u64,
    /// Complete lists after the first, of any resource: after a 410 Gone, an expired
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
        {
            let mut h = this.shared.health.lock().unwrap_or_else(|e| e.into_inner());
            h.synced = true;
            h.services_synced = true;
        }
        this.replace_fixed(pods);
        this
    }

    /// A [`Self::fixed`] store with these Services and EndpointSlices as well.
    pub fn fixed_with_services(
        pods: impl IntoIterator<Item = PodMeta>,
        services: impl IntoIterator<Item = ServiceMeta>,
        slices: impl IntoIterator<Item = EndpointSliceMeta>,
    ) -> Self {
        let this = Self::fixed(pods);
        this.replace_fixed_services(services, slices);
        this
    }

    /// Replaces the Services and EndpointSlices of a [`Self::fixed`] store (as relists
    /// would), bumping the generation.
    pub fn replace_fixed_services(
        &self,
        services: impl IntoIterator<Item = ServiceMeta>,
        slices: impl IntoIterator<Item = EndpointSliceMeta>,
    ) {
        let services =
            ServiceIndex::build(services.into_iter().map(ServiceRecord::from_meta).collect());
        let slices = SliceIndex::build(slices.into_iter().map(SliceRecord::from_meta).collect());
        {
            let mut store = self.shared.store.write().unwrap_or_else(|e| e.into_inner());
            store.services = services;
            store.slices = slices;
        }
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Sets the IPs of a pod of a [`Self::fixed`] store (until the next
    /// [`Self::replace_fixed`]); false when there is no such pod.
    pub fn set_fixed_pod_ips(&self, pod_uid: &str, ips: impl IntoIterator<Item = IpAddr>) -> bool {
        let mut store = self.shared.store.write().unwrap_or_else(|e| e.into_inner());
        let Some(mut record) = store.pods.get(pod_uid).cloned() else {
            return false;
        };
        record.ips = ips.into_iter().collect();
        if store.upsert_pod(pod_uid.to_string(), record) {
            self.shared.generation.fetch_add(1, Ordering::Release);
        }
        true
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
                    ips: Vec::new(),
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

    /// What `ip` is, for a connection to (or from) `ip:port`: a Service's ClusterIP, a
    /// pod behind a Service, or a pod of this node (see the module's documentation for
    /// the order and the ties). `None` for an address unknown to the cluster.
    pub fn endpoint(&self, ip: IpAddr, port: u16) -> Option<Endpoint> {
        let store = self.shared.read();
        if let Some((namespace, name, service)) = store.services.by_cluster_ip(ip, port) {
            return Some(Endpoint {
                namespace: namespace.to_string(),
                service: Some(name.to_string()),
                pod: None,
                ignored: service.ignored || store.namespace_ignored(namespace),
            });
        }
        let local = store.by_pod_ip.get(&ip).and_then(|uid| store.pods.get(uid));
        if let Some(hit) = store.slices.by_address(ip, port) {
            // A pod of this node adds its own annotation (and its name to a slice
            // endpoint without targetRef).
            let local = local.filter(|p| {
                p.namespace == hit.namespace && hit.pod.is_none_or(|name| name == p.name)
            });
            let service_ignored = hit
                .service
                .and_then(|s| store.services.get(hit.namespace, s))
                .is_some_and(|s| s.ignored);
            return Some(Endpoint {
                namespace: hit.namespace.to_string(),
                service: hit.service.map(str::to_string),
                pod: hit
                    .pod
                    .or(local.map(|p| p.name.as_str()))
                    .map(str::to_string),
                ignored: service_ignored
                    || local.is_some_and(|p| p.ignore_annotation)
                    || store.namespace_ignored(hit.namespace),
            });
        }
        let pod = local?;
        let service = store
            .slices
            .services_of_pod(&pod.namespace, &pod.name)
            .into_iter()
            .next();
        let service_ignored = service
            .as_deref()
            .and_then(|s| store.services.get(&pod.namespace, s))
            .is_some_and(|s| s.ignored);
        Some(Endpoint {
            namespace: pod.namespace.clone(),
            service,
            pod: Some(pod.name.clone()),
            ignored: service_ignored || store.ignored(pod),
        })
    }

    /// The Services whose EndpointSlices list this pod (any node's), sorted.
    pub fn services_of_pod(&self, namespace: &str, pod: &str) -> Vec<String> {
        let store = self.shared.read();
        let mut names = store.slices.services_of_pod(namespace, pod);
        // A Service marked `ksight.io/ignore` is never named.
        names.retain(|name| {
            store
                .services
                .get(namespace, name)
                .is_none_or(|s| !s.ignored)
        });
        names
    }

    /// A Service by namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<ServiceMeta> {
        let store = self.shared.read();
        let s = store.services.get(namespace, name)?;
        Some(ServiceMeta {
            namespace: namespace.to_string(),
            name: name.to_string(),
            cluster_ips: s.cluster_ips.to_vec(),
            ports: s.ports.to_vec(),
            ignored: s.ignored,
        })
    }

    /// Every pod in the store, in no particular order.
    pub fn pods(&self) -> Vec<PodMeta> {
        let uids: Vec<String> = self.shared.read().pods.keys().cloned().collect();
        uids.iter().filter_map(|u| self.pod(u)).collect()
    }

    /// Bumped on every change to the store that changes an answer, Services and
    /// EndpointSlices anywhere in the cluster included: labels resolved at an older
    /// generation may be stale.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    pub fn health(&self) -> KubeHealth {
        let (pods, services, endpoint_slices) = {
            let store = self.shared.read();
            (store.pods.len(), store.services.len(), store.slices.len())
        };
        let h = self.shared.health.lock().unwrap_or_else(|e| e.into_inner());
        KubeHealth {
            connected: h.connected.iter().all(|&c| c),
            synced: h.synced,
            services_synced: h.services_synced,
            pods,
            services,
            endpoint_slices,
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
    Services = 4,
    EndpointSlices = 5,
}

#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
impl Resource {
    const COUNT: usize = 6;

    fn name(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::ReplicaSets => "replicasets",
            Resource::Jobs => "jobs",
            Resource::Namespaces => "namespaces",
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
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
    services_synced: bool,
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
    /// `status.podIPs`; empty for host-network and finished pods.
    ips: Vec<IpAddr>,
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
    /// Pod IP → uid, of this node's pods.
    by_pod_ip: HashMap<IpAddr, String>,
    /// Cluster-wide.
    services: ServiceIndex,
    slices: SliceIndex,
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

    fn namespace_ignored(&self, namespace: &str) -> bool {
        self.namespaces.get(namespace).copied().unwrap_or(false)
    }

    fn ignored(&self, pod: &PodRecord) -> bool {
        pod.ignore_annotation || self.namespace_ignored(&pod.namespace)
    }

    fn unindex(&mut self, record: &PodRecord) {
        for id in record.ids() {
            if self.by_container.get(id) == Some(&record.uid) {
                self.by_container.remove(id);
            }
        }
        for ip in &record.ips {
            if self.by_pod_ip.get(ip) == Some(&record.uid) {
                self.by_pod_ip.remove(ip);
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
        for ip in &record.ips {
            self.by_pod_ip.insert(*ip, uid.clone());
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
        self.by_pod_ip = pods
            .iter()
            .flat_map(|(uid, p)| p.ips.iter().map(move |ip| (*ip, uid.clone())))
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
            ips: vec![],
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
    fn pod_ip_index_follows_upserts_deletes_and_replaces() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let with_ips = |uid: &str, ips: &[&str]| PodRecord {
            ips: ips.iter().map(|s| ip(s)).collect(),
            ..record(uid, None, &[])
        };
        let mut s = Store::default();
        assert!(s.upsert_pod("u1".into(), with_ips("u1", &["10.244.0.5", "fd00::5"])));
        assert_eq!(
            s.by_pod_ip.get(&ip("fd00::5")).map(String::as_str),
            Some("u1")
        );
        assert!(s.upsert_pod("u1".into(), with_ips("u1", &["10.244.0.6"])));
        assert!(!s.by_pod_ip.contains_key(&ip("10.244.0.5")));
        // The IP reused by a new pod: deleting the old one leaves the new one's entry.
        assert!(s.upsert_pod("u2".into(), with_ips("u2", &["10.244.0.6"])));
        assert!(s.remove_pod("u1"));
        assert_eq!(
            s.by_pod_ip.get(&ip("10.244.0.6")).map(String::as_str),
            Some("u2")
        );
        let fresh = HashMap::from([("u3".to_string(), with_ips("u3", &["10.244.0.7"]))]);
        assert!(s.replace_pods(fresh));
        assert_eq!(s.by_pod_ip.len(), 1);
        assert!(s.remove_pod("u3"));
        assert!(s.by_pod_ip.is_empty());
    }

    fn pod_meta(uid: &str, namespace: &str, name: &str, ignored: bool) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
            workload: None,
            ignored,
            containers: vec![],
        }
    }

    fn web_service(ignored: bool) -> ServiceMeta {
        ServiceMeta {
            namespace: "shop".into(),
            name: "web".into(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: Some(8080),
                protocol: Protocol::Tcp,
            }],
            ignored,
        }
    }

    fn web_slice(pods: &[(&str, &str)]) -> EndpointSliceMeta {
        EndpointSliceMeta {
            namespace: "shop".into(),
            name: "web-x1".into(),
            service: Some("web".into()),
            ports: vec![EndpointPort {
                name: "http".into(),
                port: Some(8080),
                protocol: Protocol::Tcp,
            }],
            endpoints: pods
                .iter()
                .map(|(ip, pod)| SliceEndpoint {
                    addresses: vec![ip.parse().unwrap()],
                    pod: Some(pod.to_string()),
                })
                .collect(),
        }
    }

    fn endpoint(service: Option<&str>, pod: Option<&str>, ignored: bool) -> Option<Endpoint> {
        Some(Endpoint {
            namespace: "shop".into(),
            service: service.map(Into::into),
            pod: pod.map(Into::into),
            ignored,
        })
    }

    #[test]
    fn fixed_store_answers_endpoint_lookups() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let k = KubeMetadata::fixed_with_services(
            [
                pod_meta("u1", "shop", "web-1", false),
                pod_meta("u3", "shop", "lonely", false),
                pod_meta("u4", "shop", "quiet", true),
            ],
            [web_service(false)],
            [web_slice(&[
                ("10.244.0.5", "web-1"),
                ("10.244.1.9", "web-2"),
            ])],
        );
        assert!(k.set_fixed_pod_ips("u1", [ip("10.244.0.5")]));
        assert!(k.set_fixed_pod_ips("u3", [ip("10.244.0.7")]));
        assert!(k.set_fixed_pod_ips("u4", [ip("10.244.0.8")]));
        assert!(!k.set_fixed_pod_ips("nope", [ip("10.244.0.9")]));
        assert_eq!(
            k.endpoint(ip("10.96.0.10"), 80),
            endpoint(Some("web"), None, false)
        );
        assert_eq!(
            k.endpoint(ip("10.96.0.10"), 81),
            endpoint(Some("web"), None, false),
            "port mismatch"
        );
        assert_eq!(
            k.endpoint(ip("10.244.0.5"), 8080),
            endpoint(Some("web"), Some("web-1"), false)
        );
        // A pod of another node: known from the slice alone.
        assert_eq!(
            k.endpoint(ip("10.244.1.9"), 8080),
            endpoint(Some("web"), Some("web-2"), false)
        );
        assert_eq!(
            k.endpoint(ip("10.244.0.7"), 22),
            endpoint(None, Some("lonely"), false)
        );
        assert_eq!(
            k.endpoint(ip("10.244.0.8"), 22),
            endpoint(None, Some("quiet"), true)
        );
        assert_eq!(k.endpoint(ip("192.0.2.1"), 80), None);
        assert_eq!(k.services_of_pod("shop", "web-2"), ["web"]);
        assert!(k.services_of_pod("shop", "lonely").is_empty());
        assert_eq!(k.service("shop", "web"), Some(web_service(false)));
        let h = k.health();
        assert_eq!(
            (h.services, h.endpoint_slices, h.services_synced),
            (1, 1, true)
        );

        // The Service ignored; web-2 gone from the slice.
        let g = k.generation();
        k.replace_fixed_services([web_service(true)], [web_slice(&[("10.244.0.5", "web-1")])]);
        assert!(k.generation() > g);
        assert_eq!(
            k.endpoint(ip("10.96.0.10"), 80),
            endpoint(Some("web"), None, true)
        );
        assert_eq!(
            k.endpoint(ip("10.244.0.5"), 8080),
            endpoint(Some("web"), Some("web-1"), true)
        );
        assert_eq!(k.endpoint(ip("10.244.1.9"), 8080), None);
        assert!(k.services_of_pod("shop", "web-2").is_empty());
        // web-1 is still listed, but an ignored Service is never named.
        assert!(k.services_of_pod("shop", "web-1").is_empty());
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
