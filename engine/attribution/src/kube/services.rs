//! Services and EndpointSlices, cluster-wide, to name the peer of a connection: a
//! ClusterIP names its Service, an endpoint address its pod and the Service of its slice.
//! Only what the lookups use is kept, indexed by address as objects arrive, so a lookup
//! is a few hash hits.
//!
//! Memory (64-bit; record sizes checked by `record_sizes` below), hash tables' spare
//! slots not counted:
//! - a Service: 56 bytes in its table (Arc key + record) + the key `namespace/name` with
//!   16 bytes of counts + 17 per ClusterIP + 32 per port and its name + 64 per ClusterIP
//!   in the address index: ≈ 250 bytes for a one-IP, two-port Service;
//! - an EndpointSlice: 64 bytes in its table + its key + 32 per port, and per endpoint
//!   32 bytes + 17 per address + the pod's name, 64 per address in the address index and
//!   ≈ 80 + `namespace/pod` in the pod index: ≈ 250 bytes per endpoint, so ≈ 2.5 MB
//!   for 10 000 pods behind Services.
//!
//! Full objects are deserialized a list page (≤ 500) or an event at a time and dropped
//! after conversion: status, selectors, topology and conditions are never stored.

// Without the watcher only complete lists (fixed stores) come in.
#![cfg_attr(not(feature = "kubernetes"), allow(dead_code))]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A port's protocol (`TCP` when unset, as the API server defaults it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `None` for a value the API does not allow.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// A port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty when the Service has a single unnamed port.
    pub name: String,
    pub port: u16,
    /// `None` when the targetPort names a container port (resolved per pod in the
    /// EndpointSlices' ports).
    pub target_port: Option<u16>,
    pub protocol: Protocol,
}

/// A Service, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceMeta {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIPs` (or `clusterIP`); empty for headless and ExternalName Services.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `ksight.io/ignore: "true"` on the Service itself (its namespace's annotation is
    /// applied by the lookups).
    pub ignored: bool,
}

/// A port of an EndpointSlice: the port the endpoints listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: String,
    /// `None`: every port (the API's "unrestricted").
    pub port: Option<u16>,
    pub protocol: Protocol,
}

/// An endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    /// The pod of a `targetRef` of kind Pod in the slice's namespace.
    pub pod: Option<String>,
}

/// An EndpointSlice, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSliceMeta {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<String>,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// What an address (and port) is, for the service map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    pub service: Option<String>,
    pub pod: Option<String>,
    /// `ksight.io/ignore: "true"` on the Service, on the pod (known for pods of this node
    /// only) or on their namespace.
    pub ignored: bool,
}

/// A Service without its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ServiceRecord {
    pub(super) cluster_ips: Box<[IpAddr]>,
    pub(super) ports: Box<[ServicePort]>,
    pub(super) ignored: bool,
}

impl ServiceRecord {
    pub(super) fn from_meta(s: ServiceMeta) -> (String, Self) {
        let key = format!("{}/{}", s.namespace, s.name);
        let record = ServiceRecord {
            cluster_ips: s.cluster_ips.into(),
            ports: s.ports.into(),
            ignored: s.ignored,
        };
        (key, record)
    }

    fn has_port(&self, port: u16) -> bool {
        self.ports.iter().any(|p| p.port == port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EndpointRecord {
    addresses: Box<[IpAddr]>,
    pod: Option<Box<str>>,
}

/// An EndpointSlice without its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SliceRecord {
    service: Option<Box<str>>,
    ports: Box<[EndpointPort]>,
    endpoints: Box<[EndpointRecord]>,
}

impl SliceRecord {
    pub(super) fn from_meta(s: EndpointSliceMeta) -> (String, Self) {
        let key = format!("{}/{}", s.namespace, s.name);
        let record = SliceRecord {
            service: s.service.map(Into::into),
            ports: s.ports.into(),
            endpoints: s
                .endpoints
                .into_iter()
                .filter(|e| !e.addresses.is_empty())
                .map(|e| EndpointRecord {
                    addresses: e.addresses.into(),
                    pod: e.pod.map(Into::into),
                })
                .collect(),
        };
        (key, record)
    }

    /// No ports, or an unrestricted one, admit any port.
    fn has_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|p| p.port.is_none_or(|p| p == port))
    }
}

fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn name_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, name)| name)
}

/// Adds `key` to the sorted list at `at`.
fn index_add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<Arc<str>>>, at: K, key: &Arc<str>) {
    let list = map.entry(at).or_default();
    if let Err(i) = list.binary_search(key) {
        list.insert(i, key.clone());
    }
}

fn index_remove<K, Q>(map: &mut HashMap<K, Vec<Arc<str>>>, at: &Q, key: &str)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(list) = map.get_mut(at) {
        list.retain(|k| &**k != key);
        if list.is_empty() {
            map.remove(at);
        }
    }
}

/// Services by `namespace/name`, and by ClusterIP.
#[derive(Default)]
pub(super) struct ServiceIndex {
    services: HashMap<Arc<str>, ServiceRecord>,
    /// Sorted keys: a ClusterIP has one Service, two only while one replaces another
    /// (the old one's deletion not yet seen).
    by_cluster_ip: HashMap<IpAddr, Vec<Arc<str>>>,
}

impl ServiceIndex {
    /// Indexes a complete list (outside the store's lock).
    pub(super) fn build(all: HashMap<String, ServiceRecord>) -> Self {
        let mut index = Self::default();
        for (key, record) in all {
            index.insert(key.into(), record);
        }
        index
    }

    fn insert(&mut self, key: Arc<str>, record: ServiceRecord) {
        for ip in &record.cluster_ips {
            index_add(&mut self.by_cluster_ip, *ip, &key);
        }
        self.services.insert(key, record);
    }

    /// False when nothing changed.
    pub(super) fn upsert(&mut self, key: String, record: ServiceRecord) -> bool {
        if self.services.get(key.as_str()) == Some(&record) {
            return false;
        }
        self.remove(&key);
        self.insert(key.into(), record);
        true
    }

    pub(super) fn remove(&mut self, key: &str) -> bool {
        let Some(old) = self.services.remove(key) else {
            return false;
        };
        for ip in &old.cluster_ips {
            index_remove(&mut self.by_cluster_ip, ip, key);
        }
        true
    }

    /// Takes a complete list's index; false when it holds the same Services.
    pub(super) fn replace(&mut self, new: ServiceIndex) -> bool {
        if self.services == new.services {
            return false;
        }
        *self = new;
        true
    }

    pub(super) fn len(&self) -> usize {
        self.services.len()
    }

    pub(super) fn get(&self, namespace: &str, name: &str) -> Option<&ServiceRecord> {
        self.services.get(format!("{namespace}/{name}").as_str())
    }

    /// (namespace, name, record) of the Service with this ClusterIP: of several, the
    /// first with this port, else the first.
    pub(super) fn by_cluster_ip(
        &self,
        ip: IpAddr,
        port: u16,
    ) -> Option<(&str, &str, &ServiceRecord)> {
        let keys = self.by_cluster_ip.get(&ip)?;
        let found = keys
            .iter()
            .filter_map(|k| Some((k, self.services.get(k)?)))
            .min_by_key(|(k, r)| (!r.has_port(port), *k))?;
        Some((namespace_of(found.0), name_of(found.0), found.1))
    }
}

/// One address's place in an EndpointSlice.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SliceHit<'a> {
    pub(super) namespace: &'a str,
    pub(super) service: Option<&'a str>,
    pub(super) pod: Option<&'a str>,
}

/// EndpointSlices by `namespace/name`, by endpoint address and by pod.
#[derive(Default)]
pub(super) struct SliceIndex {
    slices: HashMap<Arc<str>, SliceRecord>,
    by_address: HashMap<IpAddr, Vec<Arc<str>>>,
    /// `namespace/pod` → the slices listing it.
    by_pod: HashMap<Box<str>, Vec<Arc<str>>>,
}

impl SliceIndex {
    /// Indexes a complete list (outside the store's lock).
    pub(super) fn build(all: HashMap<String, SliceRecord>) -> Self {
        let mut index = Self::default();
        for (key, record) in all {
            index.insert(key.into(), record);
        }
        index
    }

    fn insert(&mut self, key: Arc<str>, record: SliceRecord) {
        let namespace = namespace_of(&key);
        for e in &record.endpoints {
            for ip in &e.addresses {
                index_add(&mut self.by_address, *ip, &key);
            }
            if let Some(pod) = &e.pod {
                index_add(&mut self.by_pod, format!("{namespace}/{pod}").into(), &key);
            }
        }
        self.slices.insert(key, record);
    }

    /// False when nothing changed.
    pub(super) fn upsert(&mut self, key: String, record: SliceRecord) -> bool {
        if self.slices.get(key.as_str()) == Some(&record) {
            return false;
        }
        self.remove(&key);
        self.insert(key.into(), record);
        true
    }

    pub(super) fn remove(&mut self, key: &str) -> bool {
        let Some(old) = self.slices.remove(key) else {
            return false;
        };
        let namespace = namespace_of(key);
        for e in old.endpoints.iter() {
            for ip in &e.addresses {
                index_remove(&mut self.by_address, ip, key);
            }
            if let Some(pod) = &e.pod {
                index_remove(&mut self.by_pod, format!("{namespace}/{pod}").as_str(), key);
            }
        }
        true
    }

    /// Takes a complete list's index; false when it holds the same slices.
    pub(super) fn replace(&mut self, new: SliceIndex) -> bool {
        if self.slices == new.slices {
            return false;
        }
        *self = new;
        true
    }

    pub(super) fn len(&self) -> usize {
        self.slices.len()
    }

    /// The endpoint with this address. Slices listing `port` are preferred (the pod is
    /// the same whatever the port, but an address may back several Services on different
    /// ports); then a slice with a Service; then the lexicographically first
    /// (namespace, Service, pod).
    pub(super) fn by_address(&self, ip: IpAddr, port: u16) -> Option<SliceHit<'_>> {
        let keys = self.by_address.get(&ip)?;
        keys.iter()
            .filter_map(|key| {
                let slice = self.slices.get(key)?;
                // Several endpoints of one slice share an address only for host-network
                // pods: take the first pod by name.
                let pod = slice
                    .endpoints
                    .iter()
                    .filter(|e| e.addresses.contains(&ip))
                    .map(|e| e.pod.as_deref())
                    .min_by_key(|p| (p.is_none(), *p))?;
                let hit = SliceHit {
                    namespace: namespace_of(key),
                    service: slice.service.as_deref(),
                    pod,
                };
                let rank = (
                    !slice.has_port(port),
                    hit.service.is_none(),
                    hit.namespace,
                    hit.service,
                    hit.pod,
                );
                Some((rank, hit))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, hit)| hit)
    }

    /// The Services whose slices list this pod, sorted and without repeats.
    pub(super) fn services_of_pod(&self, namespace: &str, pod: &str) -> Vec<String> {
        let Some(keys) = self.by_pod.get(format!("{namespace}/{pod}").as_str()) else {
            return Vec::new();
        };
        let mut services: Vec<String> = keys
            .iter()
            .filter_map(|k| self.slices.get(k)?.service.as_deref())
            .map(str::to_string)
            .collect();
        services.sort_unstable();
        services.dedup();
        services
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn service(ns: &str, name: &str, ips: &[&str], ports: &[u16]) -> (String, ServiceRecord) {
        ServiceRecord::from_meta(ServiceMeta {
            namespace: ns.into(),
            name: name.into(),
            cluster_ips: ips.iter().map(|s| ip(s)).collect(),
            ports: ports
                .iter()
                .map(|&port| ServicePort {
                    name: String::new(),
                    port,
                    target_port: Some(port + 8000),
                    protocol: Protocol::Tcp,
                })
                .collect(),
            ignored: false,
        })
    }

    fn slice(
        ns: &str,
        name: &str,
        svc: Option<&str>,
        ports: &[u16],
        endpoints: &[(&str, Option<&str>)],
    ) -> (String, SliceRecord) {
        SliceRecord::from_meta(EndpointSliceMeta {
            namespace: ns.into(),
            name: name.into(),
            service: svc.map(Into::into),
            ports: ports
                .iter()
                .map(|&p| EndpointPort {
                    name: String::new(),
                    port: Some(p),
                    protocol: Protocol::Tcp,
                })
                .collect(),
            endpoints: endpoints
                .iter()
                .map(|(a, pod)| SliceEndpoint {
                    addresses: vec![ip(a)],
                    pod: pod.map(Into::into),
                })
                .collect(),
        })
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn record_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<IpAddr>(), 17);
        assert_eq!(size_of::<ServiceRecord>(), 40);
        assert_eq!(size_of::<ServicePort>(), 32);
        assert_eq!(size_of::<EndpointPort>(), 32);
        assert_eq!(size_of::<SliceRecord>(), 48);
        assert_eq!(size_of::<EndpointRecord>(), 32);
    }

    #[test]
    fn service_index_follows_upserts_deletes_and_replaces() {
        let mut x = ServiceIndex::default();
        let (k, r) = service("shop", "web", &["10.96.0.10", "fd00::10"], &[80]);
        assert!(x.upsert(k.clone(), r.clone()));
        assert!(!x.upsert(k, r), "same record: no change");
        let (ns, name, _) = x.by_cluster_ip(ip("fd00::10"), 80).unwrap();
        assert_eq!((ns, name), ("shop", "web"));
        // A new ClusterIP: the old one is unindexed.
        let (k, r) = service("shop", "web", &["10.96.0.11"], &[80]);
        assert!(x.upsert(k, r));
        assert!(x.by_cluster_ip(ip("10.96.0.10"), 80).is_none());
        assert_eq!(
            x.by_cluster_ip(ip("10.96.0.11"), 443).unwrap().1,
            "web",
            "any port"
        );
        // Two Services on one IP for a moment: the one with the port wins, else the first.
        let (k, r) = service("shop", "api", &["10.96.0.11"], &[8080]);
        assert!(x.upsert(k, r));
        assert_eq!(x.by_cluster_ip(ip("10.96.0.11"), 80).unwrap().1, "web");
        assert_eq!(x.by_cluster_ip(ip("10.96.0.11"), 8080).unwrap().1, "api");
        assert_eq!(x.by_cluster_ip(ip("10.96.0.11"), 1).unwrap().1, "api");
        assert!(x.remove("shop/api"));
        assert!(!x.remove("shop/api"));
        assert_eq!(x.by_cluster_ip(ip("10.96.0.11"), 8080).unwrap().1, "web");
        // A relist without "web".
        let fresh = ServiceIndex::build([service("shop", "db", &["10.96.0.12"], &[5432])].into());
        assert!(x.replace(fresh));
        assert!(x.by_cluster_ip(ip("10.96.0.11"), 80).is_none());
        assert_eq!(x.by_cluster_ip(ip("10.96.0.12"), 5432).unwrap().1, "db");
        let same = ServiceIndex::build([service("shop", "db", &["10.96.0.12"], &[5432])].into());
        assert!(!x.replace(same));
        assert!(x.remove("shop/db"));
        assert!(x.by_cluster_ip.is_empty() && x.services.is_empty());
    }

    #[test]
    fn slice_index_follows_upserts_deletes_and_replaces() {
        let mut x = SliceIndex::default();
        let (k, r) = slice(
            "shop",
            "web-abc",
            Some("web"),
            &[8080],
            &[("10.244.0.5", Some("web-1")), ("10.244.1.7", Some("web-2"))],
        );
        assert!(x.upsert(k.clone(), r.clone()));
        assert!(!x.upsert(k, r));
        let hit = x.by_address(ip("10.244.1.7"), 8080).unwrap();
        assert_eq!(
            hit,
            SliceHit {
                namespace: "shop",
                service: Some("web"),
                pod: Some("web-2")
            }
        );
        assert_eq!(x.services_of_pod("shop", "web-1"), ["web"]);
        // The same pod behind a second Service, on another port.
        let (k, r) = slice(
            "shop",
            "admin-x",
            Some("admin"),
            &[9090],
            &[("10.244.0.5", Some("web-1"))],
        );
        assert!(x.upsert(k, r));
        assert_eq!(x.services_of_pod("shop", "web-1"), ["admin", "web"]);
        assert_eq!(
            x.by_address(ip("10.244.0.5"), 8080).unwrap().service,
            Some("web")
        );
        assert_eq!(
            x.by_address(ip("10.244.0.5"), 9090).unwrap().service,
            Some("admin")
        );
        assert_eq!(
            x.by_address(ip("10.244.0.5"), 1).unwrap().service,
            Some("admin"),
            "no port matches: the first Service"
        );
        // web-2 leaves the slice.
        let (k, r) = slice(
            "shop",
            "web-abc",
            Some("web"),
            &[8080],
            &[("10.244.0.5", Some("web-1"))],
        );
        assert!(x.upsert(k, r));
        assert!(x.by_address(ip("10.244.1.7"), 8080).is_none());
        assert!(x.services_of_pod("shop", "web-2").is_empty());
        assert!(x.remove("shop/admin-x"));
        assert_eq!(x.services_of_pod("shop", "web-1"), ["web"]);
        // A relist: only a slice without pods (targetRef-less endpoints) remains.
        let fresh = SliceIndex::build(
            [slice(
                "default",
                "kubernetes",
                Some("kubernetes"),
                &[6443],
                &[("10.0.0.1", None)],
            )]
            .into(),
        );
        assert!(x.replace(fresh));
        assert!(x.services_of_pod("shop", "web-1").is_empty());
        assert!(x.by_address(ip("10.244.0.5"), 8080).is_none());
        let hit = x.by_address(ip("10.0.0.1"), 6443).unwrap();
        assert_eq!(
            (hit.namespace, hit.service, hit.pod),
            ("default", Some("kubernetes"), None)
        );
        assert!(x.remove("default/kubernetes"));
        assert!(x.by_address.is_empty() && x.by_pod.is_empty() && x.slices.is_empty());
    }

    #[test]
    fn unrestricted_slice_ports_admit_any_port() {
        let (_, none) = slice("a", "s", None, &[], &[]);
        assert!(none.has_port(1));
        let (_, mut r) = slice("a", "s", None, &[80], &[]);
        assert!(r.has_port(80) && !r.has_port(81));
        r.ports = vec![EndpointPort {
            name: String::new(),
            port: None,
            protocol: Protocol::Udp,
        }]
        .into();
        assert!(r.has_port(81));
    }
}
