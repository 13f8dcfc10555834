//! The Kubernetes metadata watcher (`ksight_attribution::kube`) against a fake API server
//! on 127.0.0.1: list then watch, workload resolution, ignore annotations, Services and
//! EndpointSlices naming addresses, relists after 410 Gone, and an API server that is
//! down, slow or answers garbage. No root, no cluster.

use ksight_attribution::kube::{self, Endpoint, KubeMetadata, KubeSettings, Workload};
use ksight_integration_tests::fake_apiserver::{
    FakeApiServer, Fault, On, PodBuilder, container_id, endpoint_slice, namespace, owned_object,
    service, unused_port, wait_for,
};
use std::net::IpAddr;
use std::time::Duration;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);

fn settings(url: String, resync_s: u64) -> KubeSettings {
    let mut s = KubeSettings::new(NODE);
    s.api_server = Some(url);
    s.resync = Duration::from_secs(resync_s);
    s
}

fn workload(kind: &str, name: &str) -> Option<Workload> {
    Some(Workload {
        kind: kind.into(),
        name: name.into(),
    })
}

fn wait_synced(k: &KubeMetadata) {
    wait_for(WAIT, "initial pod list", || k.health().synced.then_some(()));
}

/// Every pod request carried the node's field selector (and there were some).
fn assert_field_selector_everywhere(server: &FakeApiServer) {
    let pods: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .collect();
    assert!(!pods.is_empty(), "no pod requests at all");
    for r in &pods {
        assert_eq!(
            r.param("fieldSelector"),
            Some(format!("spec.nodeName={NODE}").as_str()),
            "pod request without the node's field selector: {r:?}"
        );
    }
}

fn lists(server: &FakeApiServer, path: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.path == path && !r.is_watch())
        .count()
}

#[test]
fn list_then_watch_resolves_workloads_and_applies_events() {
    let server = FakeApiServer::start();
    server.apply("namespaces", namespace("shop", &[]));
    server.apply(
        "namespaces",
        namespace("noisy", &[("ksight.io/ignore", "true")]),
    );
    server.apply(
        "replicasets",
        owned_object("shop", "web-5d4f", Some(("apps/v1", "Deployment", "web"))),
    );
    server.apply(
        "jobs",
        owned_object(
            "shop",
            "nightly-2900",
            Some(("batch/v1", "CronJob", "nightly")),
        ),
    );
    server.apply("jobs", owned_object("shop", "migrate", None));
    let pods = [
        PodBuilder::new("shop", "web-5d4f-abcde", "uid-web", NODE)
            .owner("apps/v1", "ReplicaSet", "web-5d4f")
            .init_container("setup", &container_id(1))
            .container("app", Some(&container_id(2)))
            .container("sidecar", Some(&container_id(3)))
            .ephemeral_container("debugger", &container_id(4))
            .build(),
        PodBuilder::new("shop", "agent-xyz12", "uid-agent", NODE)
            .owner("apps/v1", "DaemonSet", "agent")
            .container("agent", Some(&container_id(5)))
            .build(),
        PodBuilder::new("shop", "db-0", "uid-db", NODE)
            .owner("apps/v1", "StatefulSet", "db")
            .container("postgres", Some(&container_id(6)))
            .build(),
        PodBuilder::new("shop", "nightly-2900-q7x", "uid-nightly", NODE)
            .owner("batch/v1", "Job", "nightly-2900")
            .container("backup", Some(&container_id(7)))
            .build(),
        PodBuilder::new("shop", "migrate-k2p", "uid-migrate", NODE)
            .owner("batch/v1", "Job", "migrate")
            .container("migrate", Some(&container_id(8)))
            .build(),
        PodBuilder::new("shop", "scratch", "uid-bare", NODE)
            .container("shell", Some(&container_id(9)))
            .build(),
        PodBuilder::new("shop", "quiet", "uid-quiet", NODE)
            .annotation("ksight.io/ignore", "true")
            .container("q", Some(&container_id(10)))
            .build(),
        PodBuilder::new("noisy", "chatty", "uid-chatty", NODE)
            .container("c", Some(&container_id(11)))
            .build(),
        PodBuilder::new("shop", "elsewhere", "uid-other-node", "node-b")
            .container("x", Some(&container_id(12)))
            .build(),
    ];
    for p in pods {
        server.apply("pods", p);
    }

    let k = kube::spawn(settings(server.url(), 30)).expect("spawn watcher");
    wait_synced(&k);
    // The ReplicaSet and Job lists may land after the pods': wait for the resolution.
    let web = wait_for(WAIT, "web resolved to its Deployment", || {
        k.container(&container_id(2))
            .filter(|c| c.workload == workload("Deployment", "web"))
    });
    assert_eq!(
        (
            web.namespace.as_str(),
            web.pod.as_str(),
            web.pod_uid.as_str()
        ),
        ("shop", "web-5d4f-abcde", "uid-web")
    );
    assert_eq!(
        (web.container.as_str(), web.runtime.as_str()),
        ("app", "containerd")
    );
    assert!(!web.ignored);
    assert_eq!(k.container(&container_id(1)).unwrap().container, "setup");
    assert_eq!(k.container(&container_id(3)).unwrap().container, "sidecar");
    assert_eq!(k.container(&container_id(4)).unwrap().container, "debugger");
    assert_eq!(
        k.container(&container_id(5)).unwrap().workload,
        workload("DaemonSet", "agent")
    );
    assert_eq!(
        k.container(&container_id(6)).unwrap().workload,
        workload("StatefulSet", "db")
    );
    wait_for(WAIT, "job pod resolved to its CronJob", || {
        (k.container(&container_id(7))?.workload == workload("CronJob", "nightly")).then_some(())
    });
    assert_eq!(
        k.container(&container_id(8)).unwrap().workload,
        workload("Job", "migrate")
    );
    assert_eq!(
        k.container(&container_id(9)).unwrap().workload,
        None,
        "bare pod"
    );
    assert!(
        k.container(&container_id(10)).unwrap().ignored,
        "pod annotation"
    );
    wait_for(WAIT, "namespace annotation", || {
        k.container(&container_id(11))?.ignored.then_some(())
    });
    assert!(
        k.container(&container_id(12)).is_none(),
        "pod of another node"
    );
    assert!(k.pod("uid-other-node").is_none());
    let pod = k.pod("uid-web").unwrap();
    let names: Vec<_> = pod.containers.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["setup", "app", "sidecar", "debugger"]);
    assert_eq!(
        pod.containers[1].1.as_deref(),
        Some(container_id(2).as_str())
    );
    assert_eq!(pod.containers[1].2, "containerd");
    wait_for(WAIT, "connected", || k.health().connected.then_some(()));
    let h = k.health();
    assert_eq!(h.pods, 8);
    assert_eq!(h.errors_total, 0, "{h:?}");
    assert!(h.last_event_unix_s.is_some());

    // The watch: ADDED, with its ReplicaSet arriving later.
    let g0 = k.generation();
    server.bookmark("pods");
    server.apply(
        "pods",
        PodBuilder::new("shop", "api-7c9-zz", "uid-api", NODE)
            .owner("apps/v1", "ReplicaSet", "api-7c9")
            .container("api", None)
            .build(),
    );
    wait_for(WAIT, "ADDED pod", || k.pod("uid-api"));
    assert!(k.generation() > g0);
    assert_eq!(
        k.pod("uid-api").unwrap().workload,
        workload("ReplicaSet", "api-7c9")
    );
    assert_eq!(
        k.pod("uid-api").unwrap().containers[0].1,
        None,
        "not started"
    );
    let g1 = k.generation();
    server.apply(
        "replicasets",
        owned_object("shop", "api-7c9", Some(("apps/v1", "Deployment", "api"))),
    );
    wait_for(WAIT, "late ReplicaSet resolves the Deployment", || {
        (k.pod("uid-api")?.workload == workload("Deployment", "api")).then_some(())
    });
    assert!(k.generation() > g1);

    // MODIFIED: the container started.
    server.apply(
        "pods",
        PodBuilder::new("shop", "api-7c9-zz", "uid-api", NODE)
            .owner("apps/v1", "ReplicaSet", "api-7c9")
            .container("api", Some(&container_id(20)))
            .build(),
    );
    let api = wait_for(WAIT, "MODIFIED pod", || k.container(&container_id(20)));
    assert_eq!(
        (api.pod.as_str(), api.container.as_str()),
        ("api-7c9-zz", "api")
    );

    // Namespace annotation set on the watch.
    server.apply(
        "namespaces",
        namespace("shop", &[("ksight.io/ignore", "true")]),
    );
    wait_for(WAIT, "namespace now ignored", || {
        k.container(&container_id(20))?.ignored.then_some(())
    });

    // DELETED.
    server.delete("pods", "shop", "api-7c9-zz");
    wait_for(WAIT, "DELETED pod", || {
        k.pod("uid-api").is_none().then_some(())
    });
    assert!(k.container(&container_id(20)).is_none());
    server.bookmark("pods");
    server.bookmark("replicasets");

    // What the server saw: watches with bookmarks, metadata-only for the owners.
    let h = k.health();
    assert_eq!(h.errors_total, 0, "{h:?}");
    assert_eq!(h.relists_total, 0, "{h:?}");
    let requests = server.requests();
    let watches: Vec<_> = requests.iter().filter(|r| r.is_watch()).collect();
    for path in [
        "/api/v1/pods",
        "/apis/apps/v1/replicasets",
        "/api/v1/namespaces",
        "/apis/batch/v1/jobs",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        let w: Vec<_> = watches.iter().filter(|r| r.path == path).collect();
        assert!(!w.is_empty(), "no watch of {path}");
        for r in w {
            assert_eq!(r.param("allowWatchBookmarks"), Some("true"), "{r:?}");
            assert!(
                r.param("resourceVersion").is_some_and(|v| !v.is_empty()),
                "{r:?}"
            );
        }
    }
    let full = [
        "/api/v1/pods",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ];
    for r in &requests {
        assert_eq!(
            r.accept.contains("as=PartialObjectMetadata"),
            !full.contains(&r.path.as_str()),
            "metadata-only is for owners and namespaces: {r:?}"
        );
    }
    assert_field_selector_everywhere(&server);
}

/// 410 Gone inside a watch stream: the watcher relists, and a pod deleted during the gap
/// (no DELETED event ever sent) is gone afterwards.
#[test]
fn gone_inside_watch_relists_and_drops_vanished_pods() {
    let server = FakeApiServer::start();
    for (name, seed) in [("a", 1), ("b", 2)] {
        server.apply(
            "pods",
            PodBuilder::new("shop", name, &format!("uid-{name}"), NODE)
                .container("c", Some(&container_id(seed)))
                .build(),
        );
    }
    let k = kube::spawn(settings(server.url(), 30)).expect("spawn watcher");
    wait_synced(&k);
    wait_for(WAIT, "both pods", || (k.health().pods == 2).then_some(()));
    wait_for(WAIT, "pod watch open", || {
        server
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/pods" && r.is_watch())
            .then_some(())
    });
    let lists_before = lists(&server, "/api/v1/pods");

    server.delete_silently("pods", "shop", "b");
    server.apply_silently(
        "pods",
        PodBuilder::new("shop", "c", "uid-c", NODE)
            .container("c", Some(&container_id(3)))
            .build(),
    );
    server.inject_gone("pods");

    wait_for(WAIT, "relist after 410", || {
        (k.pod("uid-c").is_some() && k.pod("uid-b").is_none()).then_some(())
    });
    assert!(
        k.container(&container_id(2)).is_none(),
        "vanished pod still resolves"
    );
    assert!(k.container(&container_id(1)).is_some());
    let h = k.health();
    assert!(h.relists_total >= 1, "{h:?}");
    assert!(h.errors_total >= 1, "the 410 is counted: {h:?}");
    assert!(
        h.last_error.as_deref().unwrap_or("").contains("pods"),
        "{h:?}"
    );
    assert!(lists(&server, "/api/v1/pods") > lists_before);
    wait_for(WAIT, "connected again", || {
        k.health().connected.then_some(())
    });
    assert_field_selector_everywhere(&server);
}

/// 410 as an HTTP response to a resumed watch (the version expired while the watch was
/// down): the watcher starts over with a list instead of retrying the dead version.
#[test]
fn gone_as_http_response_to_watch_relists() {
    let server = FakeApiServer::start();
    server.set_gone_as_http(true);
    server.apply(
        "pods",
        PodBuilder::new("shop", "a", "uid-a", NODE)
            .container("c", Some(&container_id(1)))
            .build(),
    );
    let k = kube::spawn(settings(server.url(), 30)).expect("spawn watcher");
    wait_synced(&k);
    wait_for(WAIT, "pod watch open", || {
        server
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/pods" && r.is_watch())
            .then_some(())
    });
    let relists = k.health().relists_total;
    server.delete_silently("pods", "shop", "a");
    server.end_watches();
    wait_for(WAIT, "relist after HTTP 410", || {
        k.pod("uid-a").is_none().then_some(())
    });
    assert!(k.health().relists_total > relists);
    // The sequence: list, watch (ended), watch at the expired version (410), list.
    let pods: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .map(|r| r.is_watch())
        .collect();
    assert!(
        pods.len() >= 4 && pods[..4] == [false, true, true, false],
        "{pods:?}"
    );
    assert!(
        k.health()
            .last_error
            .unwrap_or_default()
            .contains("too old resource version"),
        "{:?}",
        k.health()
    );
    assert_field_selector_everywhere(&server);
}

/// Nothing listening at first, then the server comes up: errors counted and
/// disconnected, then the store fills.
#[test]
fn server_down_at_start_then_up() {
    let port = unused_port();
    let k = kube::spawn(settings(format!("http://127.0.0.1:{port}"), 30)).expect("spawn watcher");
    let h = wait_for(WAIT, "connection errors", || {
        let h = k.health();
        (h.errors_total >= 4).then_some(h)
    });
    assert!(!h.connected && !h.synced, "{h:?}");
    assert!(h.last_error.is_some(), "{h:?}");
    assert_eq!(k.container(&container_id(1)), None);

    let server = FakeApiServer::start_on(port);
    server.apply(
        "pods",
        PodBuilder::new("shop", "a", "uid-a", NODE)
            .container("c", Some(&container_id(1)))
            .build(),
    );
    wait_for(WAIT, "store filled once up", || {
        k.container(&container_id(1))
    });
    wait_for(WAIT, "connected", || k.health().connected.then_some(()));
    assert!(k.health().synced);
    assert_field_selector_everywhere(&server);
}

/// HTTP 500 and a non-JSON body on the list, and a garbage line inside a watch: each is
/// counted, and the watcher recovers.
#[test]
fn http_500_and_garbage_are_counted_and_survived() {
    let server = FakeApiServer::start();
    server.fail_next("pods", On::List, Fault::Status(500));
    server.fail_next("pods", On::List, Fault::Garbage);
    server.apply(
        "pods",
        PodBuilder::new("shop", "a", "uid-a", NODE)
            .container("c", Some(&container_id(1)))
            .build(),
    );
    let k = kube::spawn(settings(server.url(), 30)).expect("spawn watcher");
    wait_for(WAIT, "list after two failures", || {
        k.container(&container_id(1))
    });
    let h = k.health();
    assert!(h.errors_total >= 2, "{h:?}");
    assert_eq!(server.pending_faults(), 0);
    assert!(lists(&server, "/api/v1/pods") >= 3);

    // Garbage inside the open watch, then a real event.
    wait_for(WAIT, "pod watch open", || {
        server
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/pods" && r.is_watch())
            .then_some(())
    });
    let errors = k.health().errors_total;
    server.inject_line("pods", "}{ not json at all");
    wait_for(WAIT, "garbage line counted", || {
        (k.health().errors_total > errors).then_some(())
    });
    server.apply(
        "pods",
        PodBuilder::new("shop", "b", "uid-b", NODE)
            .container("c", Some(&container_id(2)))
            .build(),
    );
    wait_for(WAIT, "events after garbage", || {
        k.container(&container_id(2))
    });
    wait_for(WAIT, "connected again", || {
        k.health().connected.then_some(())
    });

    // A 500 on a watch request: the server ends the watch, the re-watch fails once.
    let errors = k.health().errors_total;
    server.fail_next("pods", On::Watch, Fault::Status(500));
    server.end_watches();
    wait_for(WAIT, "watch 500 counted", || {
        (k.health().errors_total > errors).then_some(())
    });
    server.apply(
        "pods",
        PodBuilder::new("shop", "c", "uid-c", NODE)
            .container("c", Some(&container_id(3)))
            .build(),
    );
    wait_for(WAIT, "events after watch 500", || {
        k.container(&container_id(3))
    });
    assert_field_selector_everywhere(&server);
}

/// A list response that never comes: the read times out (resync + 5 s), it is counted,
/// and the next list fills the store.
#[test]
fn stalled_list_times_out_and_recovers() {
    let server = FakeApiServer::start();
    server.fail_next("pods", On::List, Fault::Stall(Duration::from_secs(60)));
    server.apply(
        "pods",
        PodBuilder::new("shop", "a", "uid-a", NODE)
            .container("c", Some(&container_id(1)))
            .build(),
    );
    let k = kube::spawn(settings(server.url(), 1)).expect("spawn watcher");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!k.health().synced, "list stalled yet synced");
    wait_for(WAIT, "store filled after the stall", || {
        k.container(&container_id(1))
    });
    let h = k.health();
    assert!(h.errors_total >= 1, "{h:?}");
    assert_field_selector_everywhere(&server);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn endpoint(namespace: &str, service: Option<&str>, pod: Option<&str>, ignored: bool) -> Endpoint {
    Endpoint {
        namespace: namespace.into(),
        service: service.map(Into::into),
        pod: pod.map(Into::into),
        ignored,
    }
}

fn watch_open(server: &FakeApiServer, path: &str) {
    wait_for(WAIT, &format!("watch of {path} open"), || {
        server
            .requests()
            .iter()
            .any(|r| r.path == path && r.is_watch())
            .then_some(())
    });
}

/// A ClusterIP names its Service; an endpoint address its pod (of this node or another)
/// and Service; a pod of this node outside any slice itself; watch events and the ignore
/// annotation change the answers.
#[test]
fn services_and_endpoint_slices_name_addresses() {
    let server = FakeApiServer::start();
    server.apply("namespaces", namespace("shop", &[]));
    server.apply(
        "services",
        service("shop", "web", "10.96.0.10", &[("http", 80, 8080)], &[]),
    );
    server.apply(
        "endpointslices",
        endpoint_slice(
            "shop",
            "web-7xk2p",
            "web",
            &[("http", 8080)],
            &[
                ("10.244.0.5", "web-1", NODE),
                ("10.244.1.7", "web-2", "node-b"),
            ],
        ),
    );
    server.apply(
        "services",
        service(
            "shop",
            "legacy",
            "10.96.0.20",
            &[("http", 80, 80)],
            &[("ksight.io/ignore", "true")],
        ),
    );
    server.apply(
        "services",
        service("shop", "db", "None", &[("pg", 5432, 5432)], &[]),
    );
    server.apply(
        "endpointslices",
        endpoint_slice(
            "shop",
            "db-q9w",
            "db",
            &[("pg", 5432)],
            &[("10.244.2.3", "db-0", "node-c")],
        ),
    );
    server.apply(
        "pods",
        PodBuilder::new("shop", "web-1", "uid-web-1", NODE)
            .ip("10.244.0.5")
            .container("app", Some(&container_id(1)))
            .build(),
    );
    server.apply(
        "pods",
        PodBuilder::new("shop", "lonely", "uid-lonely", NODE)
            .ip("10.244.0.9")
            .container("app", Some(&container_id(2)))
            .build(),
    );

    let k = kube::spawn(settings(server.url(), 30)).expect("spawn watcher");
    wait_synced(&k);
    let h = wait_for(WAIT, "services and slices listed", || {
        let h = k.health();
        h.services_synced.then_some(h)
    });
    assert_eq!((h.services, h.endpoint_slices), (3, 2), "{h:?}");

    let web = Some(endpoint("shop", Some("web"), None, false));
    assert_eq!(k.endpoint(ip("10.96.0.10"), 80), web);
    assert_eq!(k.endpoint(ip("10.96.0.10"), 8443), web, "port not exposed");
    assert_eq!(
        k.endpoint(ip("10.244.0.5"), 8080),
        Some(endpoint("shop", Some("web"), Some("web-1"), false))
    );
    assert_eq!(
        k.endpoint(ip("10.244.1.7"), 8080),
        Some(endpoint("shop", Some("web"), Some("web-2"), false)),
        "pod of another node"
    );
    assert_eq!(
        k.endpoint(ip("10.244.2.3"), 5432),
        Some(endpoint("shop", Some("db"), Some("db-0"), false)),
        "headless Service"
    );
    assert_eq!(
        k.endpoint(ip("10.96.0.20"), 80),
        Some(endpoint("shop", Some("legacy"), None, true)),
        "ignored Service"
    );
    assert_eq!(
        k.endpoint(ip("10.244.0.9"), 22),
        Some(endpoint("shop", None, Some("lonely"), false)),
        "pod of this node in no slice"
    );
    assert_eq!(k.endpoint(ip("192.0.2.1"), 80), None);
    assert_eq!(k.services_of_pod("shop", "web-1"), ["web"]);
    assert_eq!(k.services_of_pod("shop", "web-2"), ["web"]);
    assert!(k.services_of_pod("shop", "lonely").is_empty());
    let svc = k.service("shop", "web").unwrap();
    assert_eq!(svc.cluster_ips, [ip("10.96.0.10")]);
    assert_eq!(
        (
            svc.ports[0].name.as_str(),
            svc.ports[0].port,
            svc.ports[0].target_port
        ),
        ("http", 80, Some(8080))
    );

    // A second Service selecting web-1, on another port.
    let g = k.generation();
    server.apply(
        "services",
        service(
            "shop",
            "web-admin",
            "10.96.0.30",
            &[("admin", 9090, 9090)],
            &[],
        ),
    );
    server.apply(
        "endpointslices",
        endpoint_slice(
            "shop",
            "web-admin-p2k",
            "web-admin",
            &[("admin", 9090)],
            &[("10.244.0.5", "web-1", NODE)],
        ),
    );
    wait_for(WAIT, "second Service of web-1", || {
        (k.services_of_pod("shop", "web-1") == ["web", "web-admin"]).then_some(())
    });
    assert!(k.generation() > g);
    assert_eq!(
        k.endpoint(ip("10.244.0.5"), 9090),
        Some(endpoint("shop", Some("web-admin"), Some("web-1"), false))
    );
    assert_eq!(
        k.endpoint(ip("10.244.0.5"), 8080),
        Some(endpoint("shop", Some("web"), Some("web-1"), false))
    );

    // The ignore annotation set on a watched Service: its ClusterIP and its pods.
    server.apply(
        "services",
        service(
            "shop",
            "web",
            "10.96.0.10",
            &[("http", 80, 8080)],
            &[("ksight.io/ignore", "true")],
        ),
    );
    wait_for(WAIT, "Service now ignored", || {
        k.endpoint(ip("10.96.0.10"), 80)?.ignored.then_some(())
    });
    assert_eq!(
        k.endpoint(ip("10.244.1.7"), 8080),
        Some(endpoint("shop", Some("web"), Some("web-2"), true))
    );
    assert_eq!(
        k.endpoint(ip("10.244.0.5"), 9090),
        Some(endpoint("shop", Some("web-admin"), Some("web-1"), false)),
        "the other Service is not ignored"
    );

    // A namespace's annotation covers its Services.
    server.apply(
        "namespaces",
        namespace("shop", &[("ksight.io/ignore", "true")]),
    );
    wait_for(WAIT, "namespace now ignored", || {
        k.endpoint(ip("10.96.0.30"), 9090)?.ignored.then_some(())
    });

    // web-2 leaves the slice; the db slice is deleted.
    let g = k.generation();
    server.apply(
        "endpointslices",
        endpoint_slice(
            "shop",
            "web-7xk2p",
            "web",
            &[("http", 8080)],
            &[("10.244.0.5", "web-1", NODE)],
        ),
    );
    server.delete("endpointslices", "shop", "db-q9w");
    wait_for(WAIT, "slice events applied", || {
        (k.endpoint(ip("10.244.1.7"), 8080).is_none()
            && k.endpoint(ip("10.244.2.3"), 5432).is_none())
        .then_some(())
    });
    assert!(k.generation() > g);
    assert!(k.services_of_pod("shop", "web-2").is_empty());
    assert!(k.services_of_pod("shop", "db-0").is_empty());

    // A change of a Service's status changes no answer: no new generation. (Events of
    // one watch are applied in order: the marker Service's arrival follows it.)
    let g = k.generation();
    let mut db = service("shop", "db", "None", &[("pg", 5432, 5432)], &[]);
    db["status"]["conditions"] = serde_json::json!([]);
    server.apply("services", db);
    server.apply(
        "services",
        service("shop", "marker", "10.96.0.40", &[("x", 1, 1)], &[]),
    );
    wait_for(WAIT, "marker Service", || k.service("shop", "marker"));
    assert_eq!(k.generation(), g + 1, "only the marker Service bumped it");

    let h = k.health();
    assert_eq!((h.errors_total, h.relists_total), (0, 0), "{h:?}");
    assert_eq!((h.services, h.endpoint_slices), (5, 2), "{h:?}");
    for path in [
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        for r in server.requests().iter().filter(|r| r.path == path) {
            assert_eq!(r.param("fieldSelector"), None, "cluster-wide: {r:?}");
            if r.is_watch() {
                assert_eq!(r.param("allowWatchBookmarks"), Some("true"), "{r:?}");
            }
        }
    }
}

/// A Service and an EndpointSlice deleted while the watches were away (no DELETED event,
/// the history compacted) are gone after the relist; a slice added meanwhile is there.
#[test]
fn services_and_slices_relist_after_gone() {
    let server = FakeApiServer::start();
    server.apply(
        "services",
        service("shop", "web", "10.96.0.10", &[("http", 80, 8080)], &[]),
    );
    server.apply(
        "endpointslices",
        endpoint_slice(
            "shop",
            "web-7xk2p",
            "web",
            &[("http", 8080)],
            &[("10.244.0.5", "web-1", NODE)],
        ),
    );
    server.apply(
        "pods",
        PodBuilder::new("shop", "web-1", "uid-web-1", NODE)
            .ip("10.244.0.5")
            .container("app", Some(&container_id(1)))
            .build(),
    );
    let k = kube::spawn(settings(server.url(), 30)).expect("spawn watcher");
    wait_synced(&k);
    wait_for(WAIT, "Service listed", || k.endpoint(ip("10.96.0.10"), 80));
    wait_for(WAIT, "slice listed", || {
        k.endpoint(ip("10.244.0.5"), 8080)?.service
    });
    watch_open(&server, "/api/v1/services");
    watch_open(&server, "/apis/discovery.k8s.io/v1/endpointslices");
    let relists = k.health().relists_total;
    let service_lists = lists(&server, "/api/v1/services");

    // Every watch ends; the Service goes meanwhile, so resuming it needs a relist.
    server.delete_silently("services", "shop", "web");
    server.end_watches();
    wait_for(WAIT, "Service gone after relist", || {
        k.endpoint(ip("10.96.0.10"), 80).is_none().then_some(())
    });
    assert!(lists(&server, "/api/v1/services") > service_lists);

    // A 410 inside the slices' watch, after the slice was replaced silently.
    let slice_lists = lists(&server, "/apis/discovery.k8s.io/v1/endpointslices");
    server.delete_silently("endpointslices", "shop", "web-7xk2p");
    server.apply_silently(
        "endpointslices",
        endpoint_slice(
            "shop",
            "api-m3n",
            "api",
            &[("grpc", 9000)],
            &[("10.244.0.5", "web-1", NODE)],
        ),
    );
    server.inject_gone("endpointslices");
    wait_for(WAIT, "slice replaced after relist", || {
        (k.services_of_pod("shop", "web-1") == ["api"]).then_some(())
    });
    assert_eq!(
        k.endpoint(ip("10.244.0.5"), 9000),
        Some(endpoint("shop", Some("api"), Some("web-1"), false))
    );
    assert!(lists(&server, "/apis/discovery.k8s.io/v1/endpointslices") > slice_lists);
    let h = k.health();
    assert!(h.relists_total >= relists + 2, "{h:?}");
    assert_eq!((h.services, h.endpoint_slices), (0, 1), "{h:?}");
    assert!(
        h.last_error
            .as_deref()
            .unwrap_or("")
            .contains("endpointslices"),
        "{h:?}"
    );
    wait_for(WAIT, "connected again", || {
        k.health().connected.then_some(())
    });
}
