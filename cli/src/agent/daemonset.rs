//! Checks of the shipped DaemonSet manifest (packaging/kubernetes/ksight.yaml): it parses
//! as the Kubernetes objects it claims to be, grants exactly what the agent needs, and its
//! ConfigMap is a valid agent configuration.

use super::config;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde::Deserialize;
use std::collections::BTreeSet;

const MANIFEST: &str = include_str!("../../../packaging/kubernetes/ksight.yaml");

fn documents() -> Vec<serde_norway::Value> {
    serde_norway::Deserializer::from_str(MANIFEST)
        .map(|d| serde_norway::Value::deserialize(d).expect("valid YAML"))
        .collect()
}

fn object<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = documents()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifest"));
    serde_norway::from_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn every_document_is_a_known_kind() {
    let kinds: Vec<String> = documents()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
}

#[test]
fn rbac_is_read_only_on_what_the_watcher_reads() {
    let role: ClusterRole = object("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        assert_eq!(rule.verbs, ["get", "list", "watch"], "read-only");
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.clone().unwrap() {
                granted.insert(format!("{resource}.{group}"));
            }
        }
    }
    let want: BTreeSet<String> = [
        "pods.",
        "namespaces.",
        "replicasets.apps",
        "jobs.batch",
        // The service map names Services by ClusterIP and pods behind them.
        "services.",
        "endpointslices.discovery.k8s.io",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(granted, want);
}

#[test]
fn the_daemonset_has_host_pids_node_name_capabilities_and_mounts() {
    let ds: DaemonSet = object("DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("ksight"));
    let c = &pod.containers[0];
    let node = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    let field = node
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    let sc = c.security_context.as_ref().unwrap();
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.as_deref().unwrap(),
        ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_ADMIN"]
    );
    assert_ne!(sc.privileged, Some(true));
    let mounts: Vec<(&str, bool)> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/etc/ksight", true),
            ("/sys/kernel/tracing", true),
            ("/host/sys/fs/cgroup", true),
            ("/run/ksight", false)
        ]
    );
    let host_paths: Vec<String> = pod
        .volumes
        .unwrap()
        .iter()
        .filter_map(|v| Some(v.host_path.as_ref()?.path.clone()))
        .collect();
    assert_eq!(
        host_paths,
        ["/sys/kernel/tracing", "/sys/fs/cgroup", "/run/ksight"]
    );
    // The pod ignores itself.
    let annotations = ds_annotations();
    assert_eq!(
        annotations.get("ksight.io/ignore").map(String::as_str),
        Some("true")
    );
}

fn ds_annotations() -> std::collections::BTreeMap<String, String> {
    let ds: DaemonSet = object("DaemonSet");
    ds.spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()
}

#[test]
fn the_configmap_is_a_valid_agent_configuration() {
    let cm: ConfigMap = object("ConfigMap");
    let text = &cm.data.unwrap()["ksight.toml"];
    let c = config::parse(text, std::path::Path::new("ConfigMap ksight/ksight.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.cgroup_root.as_ref().map(|p| p.0.as_path()),
        Some(std::path::Path::new("/host/sys/fs/cgroup"))
    );
    assert_eq!(c.kubernetes.enabled, config::KubernetesMode::On);
    assert_eq!(c.prometheus.listen.0.to_string(), "0.0.0.0:9464");
    // The socket is where the DaemonSet mounts the host's /run/ksight.
    assert_eq!(
        c.socket.path.0,
        std::path::Path::new("/run/ksight/ksight.sock")
    );
}
