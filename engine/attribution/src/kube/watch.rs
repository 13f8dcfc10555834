//! The watcher thread: kube-runtime watchers for pods (this node's, full objects),
//! ReplicaSets and Jobs (metadata only, for their controllers), namespaces (metadata
//! only, for the ignore annotation), and Services and EndpointSlices (full objects, for
//! their addresses; converted to compact records at once), each feeding the shared store.
//! Metadata-only watches go through `Api<PartialObjectMeta<K>>`, kube 5's replacement for
//! `metadata_watcher`: it asks for `PartialObjectMetadata(List)` in the Accept header.

use super::{
    ContainerRecord, EndpointPort, EndpointSliceMeta, IGNORE_ANNOTATION, KubeError, KubeMetadata,
    KubeSettings, Owner, PodRecord, Protocol, Resource, SERVICE_NAME_LABEL, ServiceIndex,
    ServiceMeta, ServicePort, ServiceRecord, Shared, SliceEndpoint, SliceIndex, SliceRecord,
    StopOnDrop, Store, is_true,
};
use futures_util::{StreamExt, stream::BoxStream};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) fn spawn(settings: KubeSettings) -> Result<KubeMetadata, KubeError> {
    // kube-client builds its rustls config with the process-wide provider: make it ring,
    // whatever else the binary links (an error means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut config = match &settings.api_server {
        Some(url) => kube::Config::new(
            url.parse()
                .map_err(|e| KubeError::Config(format!("API server URL {url:?}: {e}")))?,
        ),
        None => rt
            .block_on(kube::Config::infer())
            .map_err(|e| KubeError::Config(error_chain(&e)))?,
    };
    // A stalled response (list, or watch between events) fails after as long as a watch
    // may stay silent; the watcher then retries.
    config.read_timeout = Some(settings.resync + Duration::from_secs(5));
    config.reset_reader_on_write = true;
    let shared = Arc::new(Shared::default());
    let client = {
        let _guard = rt.enter();
        kube::client::ClientBuilder::try_from(config)
            .map_err(|e| KubeError::Config(error_chain(&e)))?
            .with_layer(&ObserveLayer(shared.clone()))
            .build()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("ksight-kube".into())
        .spawn(move || {
            rt.block_on(async move {
                let work = std::pin::pin!(run(client, settings, &thread_shared));
                // Ends when every KubeMetadata handle is gone (the sender is dropped).
                futures_util::future::select(work, stop_rx).await;
            });
        })?;
    Ok(KubeMetadata {
        shared,
        _stop: Arc::new(StopOnDrop(Mutex::new(Some(Box::new(stop_tx))))),
    })
}

async fn run(client: kube::Client, settings: KubeSettings, shared: &Shared) {
    let resync = u32::try_from(settings.resync.as_secs().max(1)).unwrap_or(u32::MAX);
    // Bookmarks are on by default (allowWatchBookmarks=true); lists are paged (limit=500).
    let config = watcher::Config::default().timeout(resync);
    let pod_config = config
        .clone()
        .fields(&format!("spec.nodeName={}", settings.node_name));

    let pods_api: Api<Pod> = Api::all(client.clone());
    let pods = drive(
        shared,
        Resource::Pods,
        move || {
            watcher(pods_api.clone(), pod_config.clone())
                .default_backoff()
                .boxed()
        },
        pod_record,
        Ops {
            upsert: Store::upsert_pod,
            remove: Store::remove_pod,
            index: |all| all,
            replace: Store::replace_pods,
        },
    );

    let rs_api: Api<PartialObjectMeta<ReplicaSet>> = Api::all(client.clone());
    let rs_config = config.clone();
    let replicasets = drive(
        shared,
        Resource::ReplicaSets,
        move || {
            watcher(rs_api.clone(), rs_config.clone())
                .default_backoff()
                .boxed()
        },
        owner_entry::<ReplicaSet>,
        Ops {
            upsert: |s, k, e| {
                upsert(&mut s.replicasets, k.clone(), e) && s.owns_local_pod("ReplicaSet", &k)
            },
            remove: |s, k| s.replicasets.remove(k).is_some() && s.owns_local_pod("ReplicaSet", k),
            index: |all| all,
            replace: |s, all| replace(&mut s.replicasets, all),
        },
    );

    let jobs_api: Api<PartialObjectMeta<Job>> = Api::all(client.clone());
    let jobs_config = config.clone();
    let jobs = drive(
        shared,
        Resource::Jobs,
        move || {
            watcher(jobs_api.clone(), jobs_config.clone())
                .default_backoff()
                .boxed()
        },
        owner_entry::<Job>,
        Ops {
            upsert: |s, k, e| upsert(&mut s.jobs, k.clone(), e) && s.owns_local_pod("Job", &k),
            remove: |s, k| s.jobs.remove(k).is_some() && s.owns_local_pod("Job", k),
            index: |all| all,
            replace: |s, all| replace(&mut s.jobs, all),
        },
    );

    let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let ns_config = config.clone();
    let namespaces = drive(
        shared,
        Resource::Namespaces,
        move || {
            watcher(ns_api.clone(), ns_config.clone())
                .default_backoff()
                .boxed()
        },
        namespace_entry,
        Ops {
            // Services anywhere resolve through their namespace's flag: any flip counts.
            // A namespace absent and one present but not ignored answer alike.
            upsert: |s, k, e| s.namespaces.insert(k, e).unwrap_or(false) != e,
            remove: |s, k| s.namespaces.remove(k).unwrap_or(false),
            index: |all| all,
            replace: |s, all| replace(&mut s.namespaces, all),
        },
    );

    let svc_api: Api<Service> = Api::all(client.clone());
    let svc_config = config.clone();
    let services = drive(
        shared,
        Resource::Services,
        move || {
            watcher(svc_api.clone(), svc_config.clone())
                .default_backoff()
                .boxed()
        },
        |s| service_meta(s).map(ServiceRecord::from_meta),
        Ops {
            upsert: |s, k, e| s.services.upsert(k, e),
            remove: |s, k| s.services.remove(k),
            index: ServiceIndex::build,
            replace: |s, new| s.services.replace(new),
        },
    );

    let slice_api: Api<EndpointSlice> = Api::all(client);
    let slices = drive(
        shared,
        Resource::EndpointSlices,
        move || {
            watcher(slice_api.clone(), config.clone())
                .default_backoff()
                .boxed()
        },
        |s| slice_meta(s).map(SliceRecord::from_meta),
        Ops {
            upsert: |s, k, e| s.slices.upsert(k, e),
            remove: |s, k| s.slices.remove(k),
            index: SliceIndex::build,
            replace: |s, new| s.slices.replace(new),
        },
    );

    futures_util::future::join(
        futures_util::future::join3(pods, replicasets, jobs),
        futures_util::future::join3(namespaces, services, slices),
    )
    .await;
}

/// How one resource's entries go into the store; each returns whether anything changed
/// that a lookup resolves through (ReplicaSets and Jobs are watched cluster-wide: a
/// change elsewhere must not invalidate every label here). A complete list is `index`ed
/// before the store is locked, then `replace`s the resource's part of the store.
struct Ops<E, L> {
    upsert: fn(&mut Store, String, E) -> bool,
    remove: fn(&mut Store, &str) -> bool,
    index: fn(HashMap<String, E>) -> L,
    replace: fn(&mut Store, L) -> bool,
}

fn upsert<E: PartialEq>(map: &mut HashMap<String, E>, key: String, entry: E) -> bool {
    if map.get(&key) == Some(&entry) {
        return false;
    }
    map.insert(key, entry);
    true
}

fn replace<E: PartialEq>(map: &mut HashMap<String, E>, all: HashMap<String, E>) -> bool {
    if *map == all {
        return false;
    }
    *map = all;
    true
}

type WatchStream<O> = BoxStream<'static, Result<Event<O>, watcher::Error>>;

/// Runs one resource's watcher forever, applying its events to the store. The watcher
/// relists on its own (410 Gone inside a watch, expired continue tokens) and backs off
/// after errors; a watcher is started afresh only when a watch request itself is answered
/// 410 Gone, which kube-runtime would otherwise retry with the same expired version.
async fn drive<O, E, L>(
    shared: &Shared,
    resource: Resource,
    make_stream: impl Fn() -> WatchStream<O>,
    convert: fn(O) -> Option<(String, E)>,
    ops: Ops<E, L>,
) {
    const FIRST_RESTART_DELAY: Duration = Duration::from_millis(500);
    let mut restart_delay = FIRST_RESTART_DELAY;
    loop {
        let mut stream = make_stream();
        // Objects of a list in progress: the store keeps the previous list until it is
        // complete, then is replaced whole, so objects deleted meanwhile disappear.
        let mut listing: Option<HashMap<String, E>> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Init) => listing = Some(HashMap::new()),
                Ok(Event::InitApply(obj)) => {
                    if let Some((key, entry)) = convert(obj) {
                        listing.get_or_insert_default().insert(key, entry);
                    }
                }
                Ok(Event::InitDone) => {
                    let all = (ops.index)(listing.take().unwrap_or_default());
                    shared.change(|s| (ops.replace)(s, all));
                    shared.listed(resource);
                }
                Ok(Event::Apply(obj)) => {
                    if let Some((key, entry)) = convert(obj) {
                        shared.change(|s| (ops.upsert)(s, key, entry));
                    }
                    shared.event(resource);
                    restart_delay = FIRST_RESTART_DELAY;
                }
                Ok(Event::Delete(obj)) => {
                    if let Some((key, _)) = convert(obj) {
                        shared.change(|s| (ops.remove)(s, &key));
                    }
                    shared.event(resource);
                    restart_delay = FIRST_RESTART_DELAY;
                }
                Err(e) => {
                    let gone = matches!(
                        &e,
                        watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410
                    );
                    shared.error(resource, &e);
                    if gone {
                        break;
                    }
                }
            }
        }
        // Only a 410 on a watch request gets here (a watcher's stream never ends).
        tokio::time::sleep(restart_delay).await;
        restart_delay = (restart_delay * 2).min(Duration::from_secs(30));
    }
}

impl Shared {
    /// Applies a change under the write lock; bumps the generation if it changed anything.
    fn change(&self, f: impl FnOnce(&mut Store) -> bool) {
        let changed = {
            let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
            f(&mut store)
        };
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, super::HealthState> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connected(&self, resource: Resource) {
        self.health().connected[resource as usize] = true;
    }

    fn event(&self, resource: Resource) {
        let mut h = self.health();
        h.connected[resource as usize] = true;
        h.last_event_unix_s = Some(now_unix_s());
    }

    fn listed(&self, resource: Resource) {
        let mut h = self.health();
        let i = resource as usize;
        h.connected[i] = true;
        h.lists[i] += 1;
        if h.lists[i] > 1 {
            h.relists_total += 1;
        }
        if resource == Resource::Pods && !h.synced {
            h.synced = true;
            // Labels resolved before the first list ("pending") must be resolved again,
            // even when that list changed nothing in the store.
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        h.services_synced = h.lists[Resource::Services as usize] > 0
            && h.lists[Resource::EndpointSlices as usize] > 0;
        h.last_event_unix_s = Some(now_unix_s());
    }

    fn error(&self, resource: Resource, error: &watcher::Error) {
        let mut h = self.health();
        h.connected[resource as usize] = false;
        h.errors_total += 1;
        h.last_error = Some(format!("{}: {}", resource.name(), error_chain(error)));
    }
}

fn now_unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An error with its sources, skipping those its message already includes.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        source = s.source();
    }
    text
}

fn controller(refs: Option<&[OwnerReference]>) -> Option<Owner> {
    refs?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
}

/// "containerd://<id>" → ("containerd", "<id>"); empty (not started yet) → None.
fn split_container_id(raw: Option<&str>) -> Option<(String, String)> {
    let raw = raw?.trim();
    if raw.is_empty() {
        return None;
    }
    let (runtime, id) = raw.split_once("://").unwrap_or(("", raw));
    (!id.is_empty()).then(|| (runtime.to_string(), id.to_string()))
}

fn pod_record(pod: Pod) -> Option<(String, PodRecord)> {
    let meta = pod.metadata;
    let uid = meta.uid.filter(|u| !u.is_empty())?;
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let ips: Vec<String> = match status.pod_ips.as_deref().filter(|ips| !ips.is_empty()) {
        Some(ips) => ips.iter().map(|i| i.ip.clone()).collect(),
        None => status.pod_ip.iter().cloned().collect(),
    };
    let ips = pod_ips(spec.host_network, status.phase.as_deref(), &ips);
    let mut containers = Vec::new();
    let mut previous_ids = Vec::new();
    let groups: [(Vec<String>, Vec<ContainerStatus>); 3] = [
        (
            spec.init_containers
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name)
                .collect(),
            status.init_container_statuses.unwrap_or_default(),
        ),
        (
            spec.containers.into_iter().map(|c| c.name).collect(),
            status.container_statuses.unwrap_or_default(),
        ),
        (
            spec.ephemeral_containers
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name)
                .collect(),
            status.ephemeral_container_statuses.unwrap_or_default(),
        ),
    ];
    for (mut names, statuses) in groups {
        for s in &statuses {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
        for name in names {
            let status = statuses.iter().find(|s| s.name == name);
            let current = status.and_then(|s| split_container_id(s.container_id.as_deref()));
            let previous = status
                .and_then(|s| s.last_state.as_ref())
                .and_then(|l| l.terminated.as_ref())
                .and_then(|t| split_container_id(t.container_id.as_deref()));
            if let Some((runtime, id)) = previous
                && current.as_ref().is_none_or(|(_, cur)| *cur != id)
            {
                previous_ids.push((id, name.clone(), runtime));
            }
            let (runtime, id) = match current {
                Some((runtime, id)) => (runtime, Some(id)),
                None => (String::new(), None),
            };
            containers.push(ContainerRecord { name, id, runtime });
        }
    }
    let record = PodRecord {
        uid: uid.clone(),
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        owner: controller(meta.owner_references.as_deref()),
        ignore_annotation: is_true(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(IGNORE_ANNOTATION)),
        ),
        containers,
        previous_ids,
        ips,
    };
    Some((uid, record))
}

/// The pod's IPs, unless they are the node's (host network) or may be another pod's by
/// now (a finished pod keeps its status).
fn pod_ips(host_network: Option<bool>, phase: Option<&str>, ips: &[String]) -> Vec<IpAddr> {
    if host_network == Some(true) || matches!(phase, Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    parse_ips(ips)
}

fn parse_ips<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = ips.into_iter().filter_map(|ip| ip.parse().ok()).collect();
    out.dedup();
    out
}

fn port_u16(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|&p| p != 0)
}

/// A Service's addresses and ports. "None" (headless) does not parse as an IP.
fn service_meta(service: Service) -> Option<ServiceMeta> {
    let meta = service.metadata;
    let spec = service.spec.unwrap_or_default();
    let cluster_ips = match spec.cluster_ips.filter(|ips| !ips.is_empty()) {
        Some(ips) => parse_ips(&ips),
        None => parse_ips(spec.cluster_ip.as_ref()),
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let port = port_u16(p.port)?;
            Some(ServicePort {
                port,
                // Unset means the same port (the API server fills it in so); a name is
                // resolved per pod, in the EndpointSlices.
                target_port: match p.target_port {
                    None => Some(port),
                    Some(IntOrString::Int(t)) => port_u16(t),
                    Some(IntOrString::String(_)) => None,
                },
                protocol: Protocol::parse(p.protocol.as_deref())?,
                name: p.name.unwrap_or_default(),
            })
        })
        .collect();
    Some(ServiceMeta {
        ignored: is_true(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(IGNORE_ANNOTATION)),
        ),
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name?,
        cluster_ips,
        ports,
    })
}

/// An EndpointSlice's Service, ports, and endpoints with IP addresses (an FQDN slice has
/// none). A targetRef names a pod only in the slice's own namespace, the only one a
/// Service selects from.
fn slice_meta(slice: EndpointSlice) -> Option<EndpointSliceMeta> {
    let meta = slice.metadata;
    let namespace = meta.namespace.unwrap_or_default();
    let ports = slice
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(EndpointPort {
                port: match p.port {
                    None => None,
                    Some(port) => Some(port_u16(port)?),
                },
                protocol: Protocol::parse(p.protocol.as_deref())?,
                name: p.name.unwrap_or_default(),
            })
        })
        .collect();
    let endpoints = slice
        .endpoints
        .into_iter()
        .map(|e| SliceEndpoint {
            addresses: parse_ips(&e.addresses),
            pod: e.target_ref.and_then(|r| {
                let same_namespace = r.namespace.as_deref().is_none_or(|ns| ns == namespace);
                (r.kind.as_deref() == Some("Pod") && same_namespace)
                    .then_some(r.name)
                    .flatten()
            }),
        })
        .filter(|e| !e.addresses.is_empty())
        .collect();
    Some(EndpointSliceMeta {
        service: meta
            .labels
            .and_then(|mut l| l.remove(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty()),
        name: meta.name?,
        namespace,
        ports,
        endpoints,
    })
}

/// A ReplicaSet or Job: `namespace/name` → its controller.
fn owner_entry<K>(obj: PartialObjectMeta<K>) -> Option<(String, Option<Owner>)> {
    let meta = obj.metadata;
    let key = format!("{}/{}", meta.namespace.unwrap_or_default(), meta.name?);
    Some((key, controller(meta.owner_references.as_deref())))
}

/// A namespace: its name → whether it is ignored.
fn namespace_entry(obj: PartialObjectMeta<Namespace>) -> Option<(String, bool)> {
    let meta = obj.metadata;
    let ignored = is_true(
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(IGNORE_ANNOTATION)),
    );
    Some((meta.name?, ignored))
}

/// Marks a resource connected when a request for it gets a successful response: a watch
/// that starts fine and then stays quiet emits no event for the watcher to report.
#[derive(Clone)]
struct ObserveLayer(Arc<Shared>);

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: self.0.clone(),
        }
    }
}

struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

fn resource_of(path: &str) -> Option<Resource> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    match last {
        "pods" => Some(Resource::Pods),
        "replicasets" => Some(Resource::ReplicaSets),
        "jobs" => Some(Resource::Jobs),
        "namespaces" => Some(Resource::Namespaces),
        "services" => Some(Resource::Services),
        "endpointslices" => Some(Resource::EndpointSlices),
        _ => None,
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Observe<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let resource = resource_of(request.uri().path());
        let shared = self.shared.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            if let (Some(resource), Ok(r)) = (resource, &response)
                && r.status().is_success()
            {
                shared.connected(resource);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_lose_their_runtime_prefix() {
        assert_eq!(
            split_container_id(Some("containerd://abc")),
            Some(("containerd".into(), "abc".into()))
        );
        assert_eq!(
            split_container_id(Some("cri-o://def")),
            Some(("cri-o".into(), "def".into()))
        );
        assert_eq!(split_container_id(Some("")), None);
        assert_eq!(split_container_id(None), None);
        assert_eq!(split_container_id(Some("docker://")), None);
    }

    #[test]
    fn request_paths_name_their_resource() {
        assert_eq!(resource_of("/api/v1/pods"), Some(Resource::Pods));
        assert_eq!(
            resource_of("/apis/apps/v1/replicasets"),
            Some(Resource::ReplicaSets)
        );
        assert_eq!(resource_of("/apis/batch/v1/jobs"), Some(Resource::Jobs));
        assert_eq!(
            resource_of("/api/v1/namespaces"),
            Some(Resource::Namespaces)
        );
        assert_eq!(resource_of("/api/v1/services"), Some(Resource::Services));
        assert_eq!(
            resource_of("/apis/discovery.k8s.io/v1/endpointslices"),
            Some(Resource::EndpointSlices)
        );
        assert_eq!(resource_of("/version"), None);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn services_convert_to_addresses_and_ports() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop",
                         "annotations": {"ksight.io/ignore": "true"}},
            "spec": {
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                    {"port": 9000},
                    {"port": 1, "protocol": "QUIC"}
                ]
            }
        }))
        .unwrap();
        let s = service_meta(svc).unwrap();
        assert_eq!((s.namespace.as_str(), s.name.as_str()), ("shop", "web"));
        assert!(s.ignored);
        assert_eq!(s.cluster_ips, [ip("10.96.0.10"), ip("fd00::10")]);
        let ports: Vec<_> = s
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.target_port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                ("http", 80, Some(8080), Protocol::Tcp),
                ("dns", 53, None, Protocol::Udp),
                ("", 9000, Some(9000), Protocol::Tcp),
            ]
        );
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}
        }))
        .unwrap();
        let h = service_meta(headless).unwrap();
        assert!(h.cluster_ips.is_empty() && !h.ignored);
    }

    #[test]
    fn endpoint_slices_convert_to_pods_and_ports() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-x1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "any"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1"}},
                {"addresses": ["10.244.0.6"],
                 "targetRef": {"kind": "Pod", "namespace": "elsewhere", "name": "x"}},
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Node", "name": "node-a"}},
                {"addresses": ["db.example.com"]}
            ]
        }))
        .unwrap();
        let s = slice_meta(slice).unwrap();
        assert_eq!(s.service.as_deref(), Some("web"));
        assert_eq!(
            s.ports,
            [
                EndpointPort {
                    name: "http".into(),
                    port: Some(8080),
                    protocol: Protocol::Tcp
                },
                EndpointPort {
                    name: "any".into(),
                    port: None,
                    protocol: Protocol::Tcp
                }
            ]
        );
        let endpoints: Vec<_> = s
            .endpoints
            .iter()
            .map(|e| (e.addresses.clone(), e.pod.as_deref()))
            .collect();
        assert_eq!(
            endpoints,
            [
                (vec![ip("10.244.0.5")], Some("web-1")),
                (vec![ip("10.244.0.6")], None),
                (vec![ip("10.0.0.1")], None),
            ]
        );
    }

    #[test]
    fn pod_ips_skip_host_network_and_finished_pods() {
        let ips = ["10.244.0.5".to_string(), "fd00::5".to_string()];
        assert_eq!(
            pod_ips(None, Some("Running"), &ips),
            [ip("10.244.0.5"), ip("fd00::5")]
        );
        assert!(pod_ips(Some(true), Some("Running"), &ips).is_empty());
        assert!(pod_ips(Some(false), Some("Succeeded"), &ips).is_empty());
        assert!(pod_ips(None, Some("Failed"), &ips).is_empty());
    }

    #[test]
    fn pods_convert_with_all_container_kinds() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u1",
                "annotations": {"ksight.io/ignore": "true"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "o1"},
                    {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "o2", "controller": true}
                ]
            },
            "spec": {
                "initContainers": [{"name": "init"}],
                "containers": [{"name": "app"}, {"name": "side"}],
                "ephemeralContainers": [{"name": "debug"}]
            },
            "status": {
                "initContainerStatuses": [{"name": "init", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "containerID": "containerd://aa"}],
                "containerStatuses": [
                    {"name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 1, "containerID": "containerd://bb",
                     "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://b0"}}},
                    {"name": "side", "image": "i", "imageID": "", "ready": false, "restartCount": 0}
                ],
                "ephemeralContainerStatuses": [{"name": "debug", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "containerID": "containerd://dd"}]
            }
        }))
        .unwrap();
        let (uid, r) = pod_record(pod).unwrap();
        assert_eq!(uid, "u1");
        assert!(r.ignore_annotation);
        assert_eq!(
            r.owner,
            Some(Owner {
                kind: "StatefulSet".into(),
                name: "web".into()
            })
        );
        let names: Vec<_> = r.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["init", "app", "side", "debug"]);
        assert_eq!(r.containers[2].id, None);
        assert_eq!(
            r.previous_ids,
            [("b0".into(), "app".into(), "containerd".into())]
        );
        let ids: Vec<_> = r.ids().collect();
        assert_eq!(ids, ["aa", "bb", "dd", "b0"]);
    }
}
