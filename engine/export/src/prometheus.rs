//! An [`ExportView`] in the OpenMetrics text format (which Prometheus scrapes; it is the
//! Prometheus text exposition format plus `# UNIT` lines and a closing `# EOF`), encoded
//! with the Prometheus project's own `prometheus-client` crate.
//!
//! Naming follows Prometheus conventions: `ksight_` prefix, base units (`_seconds`,
//! `_bytes`), `_total` on counters. Cardinality is bounded: series are labelled by cgroup
//! (`cgroup_id`, with its owner's `namespace`, `pod`, `container`, `workload`,
//! `workload_kind` and systemd `unit` where known; `ksight_cgroup_info` adds path, runtime
//! and container id), device, exit code, CPU — never by pid — and per-connection series are limited to the configured top N.
//! Request, command and service-map (edge) series are bounded by the engine, which folds
//! routes and hosts beyond a bound per service into "other" and lists at most a bounded
//! number of rows and edges ([`ksight_engine::requests::MAX_ROUTES`],
//! [`ksight_engine::requests::MAX_HOSTS`], [`ksight_engine::requests::MAX_ROWS`],
//! [`ksight_engine::requests::MAX_EDGES`]; what is beyond them is counted by
//! `ksight_requests_other_routes_total` and `ksight_requests_unlisted_total`).

use super::view::{
    AgentMeta, CgroupSeries, CommandSeries, DnsSeries, EdgeSeries, EdgeServer, ExportView,
    HttpSeries, MetadataStatus, RequestCounts,
};
use ksight_engine::snapshot::{
    CgroupLabels, CgroupRow, ConnectionRow, DeviceRow, LATENCY_BUCKETS_NS,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::Arc;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The agent's own resource usage, read at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OwnUsage {
    /// User plus system CPU time since start.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// The `Content-Type` of [`to_text_format`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an HTTP `Accept` header asks for OpenMetrics (Prometheus does by default);
/// everyone else gets the classic text format.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.contains("application/openmetrics-text")
}

/// Rewrites [`encode`]'s OpenMetrics exposition in the classic Prometheus text format
/// (0.0.4) for scrapers that do not ask for OpenMetrics: type and help lines name the
/// samples (`x_total` for counters, `x_info` for info metrics, which become gauges), and
/// the `# UNIT` and `# EOF` lines go.
pub fn to_text_format(openmetrics: &str) -> String {
    // Family name → (suffix its samples carry, classic type).
    let families: std::collections::HashMap<&str, (&str, &str)> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .map(|(name, kind)| {
            let classic = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            (name, classic)
        })
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let meta = ["# TYPE ", "# HELP "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?.split_once(' ')?)));
        match meta {
            Some((prefix, (name, rest))) => {
                let (suffix, classic) = families.get(name).copied().unwrap_or(("", "untyped"));
                let rest = if prefix == "# TYPE " { classic } else { rest };
                out.push_str(&format!("{prefix}{name}{suffix} {rest}\n"));
            }
            None if line.starts_with("# UNIT ") || line == "# EOF" => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Encodes the view, with the agent's usage, as one complete exposition.
pub fn encode(view: Arc<ExportView>, usage: OwnUsage) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ViewCollector { view, usage }));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct ViewCollector {
    view: Arc<ExportView>,
    usage: OwnUsage,
}

type Labels = Vec<(&'static str, String)>;
type CgroupCounter = fn(&CgroupRow) -> u64;

/// One metric family at a time.
struct Families<'a, 'b> {
    enc: &'a mut DescriptorEncoder<'b>,
}

impl Families<'_, '_> {
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) -> fmt::Result {
        let mut m = self
            .enc
            .encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        for (labels, value) in series {
            if labels.is_empty() {
                m.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            } else {
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        Ok(())
    }

    fn counter_f64(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        value: f64,
    ) -> fmt::Result {
        self.enc
            .encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> fmt::Result {
        let mut m = self
            .enc
            .encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
        for (labels, value) in series {
            if labels.is_empty() {
                m.encode_gauge(&value)?;
            } else {
                m.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }
        Ok(())
    }

    /// An info metric: `<name>_info{labels} 1` per label set.
    fn info(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = Labels>,
    ) -> fmt::Result {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Info)?;
        for labels in series {
            m.encode_info(&labels)?;
        }
        Ok(())
    }
}

/// Label sets are plain vectors; this keeps the call sites short.
fn l<const N: usize>(pairs: [(&'static str, String); N]) -> Labels {
    pairs.to_vec()
}

/// The labels of every per-cgroup series: the id, and who owns the cgroup, so PromQL can
/// sum by pod, container or workload. Unknown or inapplicable labels are left out (which
/// Prometheus reads as empty).
fn owner(c: &CgroupSeries) -> Labels {
    owner_of(c.row.cgroup_id, c.row.attribution.as_ref())
}

fn owner_of(cgroup_id: u64, attribution: Option<&CgroupLabels>) -> Labels {
    owner_named(OWNER, cgroup_id, attribution)
}

/// The names of the owner labels: a series' own cgroup, and an edge's server cgroup.
const OWNER: [&str; 7] = [
    "cgroup_id",
    "namespace",
    "pod",
    "container",
    "workload",
    "workload_kind",
    "unit",
];
const SERVER_OWNER: [&str; 7] = [
    "server_cgroup_id",
    "server_namespace",
    "server_pod",
    "server_container",
    "server_workload",
    "server_workload_kind",
    "server_unit",
];

fn owner_named(
    names: [&'static str; 7],
    cgroup_id: u64,
    attribution: Option<&CgroupLabels>,
) -> Labels {
    let a = attribution.cloned().unwrap_or_default();
    let values = [
        cgroup_id.to_string(),
        a.namespace,
        a.pod,
        a.container,
        a.workload,
        a.workload_kind,
        a.unit,
    ];
    names
        .into_iter()
        .zip(values)
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Adds a label only when its value is known (absent reads as empty in Prometheus).
fn push_known(labels: &mut Labels, name: &'static str, value: Option<&String>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        labels.push((name, v.clone()));
    }
}

/// A family of one series without labels.
fn one<V>(value: V) -> [(Labels, V); 1] {
    [(Labels::new(), value)]
}

/// One series per cgroup, labelled by its owner.
fn by_cgroup(
    cgroups: &[CgroupSeries],
    get: CgroupCounter,
) -> impl Iterator<Item = (Labels, u64)> + '_ {
    cgroups.iter().map(move |c| (owner(c), get(&c.row)))
}

/// Two series per cgroup, told apart by one more label (`op`: read and write;
/// `direction`: sent and received).
fn by_cgroup_split<'a>(
    cgroups: &'a [CgroupSeries],
    label: &'static str,
    values: [&'static str; 2],
    get: fn(&CgroupRow) -> [u64; 2],
) -> impl Iterator<Item = (Labels, u64)> + 'a {
    cgroups.iter().flat_map(move |c| {
        values
            .into_iter()
            .zip(get(&c.row))
            .map(move |(value, n)| (with(owner(c), (label, value.into())), n))
    })
}

fn with(mut labels: Labels, pair: (&'static str, String)) -> Labels {
    labels.push(pair);
    labels
}

/// `ksight_cgroup_info`: everything known about a cgroup, one series per cgroup.
fn cgroup_info(c: &CgroupSeries, path: &str) -> Labels {
    let a = c.row.attribution.clone().unwrap_or_default();
    let mut labels = owner(c);
    labels.extend([
        ("path", path.to_string()),
        ("runtime", a.runtime),
        ("container_id", a.container_id),
        ("pod_uid", a.pod_uid),
    ]);
    labels.retain(|(_, v)| !v.is_empty());
    labels
}

fn device_labels(d: &DeviceRow) -> Labels {
    let name = if d.name.is_empty() {
        d.dev.clone()
    } else {
        d.name.clone()
    };
    l([("device", name), ("dev", d.dev.clone())])
}

impl Collector for ViewCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let v = &*self.view;
        let mut f = Families { enc: &mut enc };
        agent(&mut f, &v.meta, self.usage)?;
        pipeline(&mut f, v)?;
        if let Some(k) = &v.meta.kubernetes {
            kubernetes(&mut f, k)?;
        }
        attribution(&mut f, v)?;
        if v.signals.process {
            process(&mut f, v)?;
        }
        if v.signals.tcp {
            tcp_by_cgroup(&mut f, &v.cgroups)?;
            tcp_top_connections(&mut f, &v.connections)?;
        }
        if v.signals.block {
            block_by_device(&mut f, &v.devices)?;
            block_by_cgroup(&mut f, &v.cgroups)?;
        }
        if v.signals.socket_io {
            socket_io(&mut f, v)?;
            udp_by_cgroup(&mut f, &v.cgroups)?;
            dns(&mut f, v)?;
            http(&mut f, &v.http)?;
            commands(&mut f, &v.commands)?;
            protocols(&mut f, v)?;
            edges(&mut f, &v.edges)?;
        }
        Ok(())
    }
}

/// The agent itself: backend, build, signal modes, its own usage, reloads.
fn agent(f: &mut Families, meta: &AgentMeta, usage: OwnUsage) -> fmt::Result {
    f.info(
        "ksight_backend",
        "The kernel backend the agent captures with, and why it was chosen",
        [l([
            ("backend", meta.backend.clone()),
            ("reason", meta.backend_reason.clone()),
        ])],
    )?;
    f.info(
        "ksight_build",
        "The ksight version",
        [l([("version", meta.version.clone())])],
    )?;
    f.gauge(
        "ksight_signal_status",
        "How completely each signal is observed on this kernel (mode: full, degraded, unavailable, disabled); always 1",
        None,
        meta.signals.iter().map(|(s, m)| {
            let labels = l([("signal", s.name().to_string()), ("mode", m.to_string())]);
            (labels, 1u64)
        }),
    )?;
    f.gauge(
        "ksight_agent_start_time",
        "Unix time the agent started",
        Some(Unit::Seconds),
        one(meta.start_time_s),
    )?;
    f.counter_f64(
        "ksight_agent_cpu",
        "CPU time (user and system) the agent has used",
        Some(Unit::Seconds),
        usage.cpu_seconds,
    )?;
    f.gauge(
        "ksight_agent_resident_memory",
        "Resident memory of the agent",
        Some(Unit::Bytes),
        one(usage.resident_bytes),
    )?;
    f.gauge(
        "ksight_agent_events_per_second",
        "Records decoded per second over the last tick",
        None,
        one(meta.events_per_second),
    )?;
    f.counter(
        "ksight_agent_config_reloads",
        "Configuration reloads (SIGHUP) by result",
        None,
        [
            (l([("result", "success".into())]), meta.reloads_succeeded),
            (l([("result", "failure".into())]), meta.reloads_failed),
        ],
    )
}

/// The pipeline: records decoded, lost, malformed, late.
fn pipeline(f: &mut Families, v: &ExportView) -> fmt::Result {
    f.counter(
        "ksight_events",
        "Records decoded since the agent started",
        None,
        one(v.meta.events),
    )?;
    f.counter(
        "ksight_lost_events",
        "Records the kernel side dropped because its buffers were full, by CPU",
        None,
        v.totals
            .lost_events_per_cpu
            .iter()
            .enumerate()
            .map(|(cpu, &n)| (l([("cpu", cpu.to_string())]), n)),
    )?;
    f.counter(
        "ksight_malformed_records",
        "Records that failed validation and were skipped",
        None,
        one(v.totals.malformed_records),
    )?;
    f.counter(
        "ksight_late_events",
        "Records that arrived after the reorder window had passed them",
        None,
        one(v.meta.late_events),
    )
}

/// The Kubernetes metadata watch, when the agent runs one.
fn kubernetes(f: &mut Families, k: &MetadataStatus) -> fmt::Result {
    f.gauge(
        "ksight_kubernetes_metadata_up",
        "1 while the watch of this node's pods on the Kubernetes API server is healthy",
        None,
        one(u64::from(k.connected)),
    )?;
    f.gauge(
        "ksight_kubernetes_metadata_synced",
        "1 once the first list of this node's pods has completed",
        None,
        one(u64::from(k.synced)),
    )?;
    f.gauge(
        "ksight_kubernetes_pods",
        "Pods of this node known from the Kubernetes API",
        None,
        one(k.pods),
    )?;
    f.counter(
        "ksight_kubernetes_metadata_errors",
        "Failed requests and broken watches to the Kubernetes API server",
        None,
        one(k.errors),
    )?;
    f.counter(
        "ksight_kubernetes_relists",
        "Full relists of watched resources (after a restart or 410 Gone)",
        None,
        one(k.relists),
    )?;
    if let Some(t) = k.last_event_unix_s {
        f.gauge(
            "ksight_kubernetes_metadata_last_event",
            "Unix time of the last list or watch event received",
            Some(Unit::Seconds),
            one(t),
        )?;
    }
    Ok(())
}

/// Attribution: pending and ignored cgroups, and who each exported cgroup belongs to.
fn attribution(f: &mut Families, v: &ExportView) -> fmt::Result {
    f.gauge(
        "ksight_attribution_pending_cgroups",
        "Exported cgroups of Kubernetes pods whose metadata has not arrived (labelled by cgroup only until it does)",
        None,
        one(v.meta.pending_cgroups),
    )?;
    f.gauge(
        "ksight_ignored_cgroups",
        "cgroups ignored by the filters or the ksight.io/ignore annotation",
        None,
        one(v.meta.ignored_cgroups),
    )?;
    f.counter(
        "ksight_ignored_events",
        "Events of ignored cgroups dropped, in the kernel (never delivered) or in the engine",
        None,
        [
            (
                l([("where", "kernel".into())]),
                v.meta.ignored_events_kernel,
            ),
            (
                l([("where", "engine".into())]),
                v.meta.ignored_events_engine,
            ),
        ],
    )?;
    f.info(
        "ksight_cgroup",
        "Each exported cgroup: its owner, path (under the cgroup v2 mount), container runtime and id",
        v.cgroups
            .iter()
            .filter_map(|c| c.path.as_ref().map(|p| cgroup_info(c, p))),
    )
}

/// exec, fork, exit by cgroup; threads host-wide.
fn process(f: &mut Families, v: &ExportView) -> fmt::Result {
    f.counter(
        "ksight_process_execs",
        "Successful execve calls, by cgroup",
        None,
        by_cgroup(&v.cgroups, |r| r.execs),
    )?;
    f.counter(
        "ksight_process_forks",
        "New processes (fork/clone without CLONE_THREAD), by cgroup of the parent",
        None,
        by_cgroup(&v.cgroups, |r| r.forks),
    )?;
    f.counter(
        "ksight_process_threads",
        "New threads, host-wide",
        None,
        one(v.totals.process.threads),
    )?;
    f.counter(
        "ksight_process_exits",
        "Processes whose last thread exited, by cgroup and exit code (128+N: killed by signal N)",
        None,
        v.cgroups.iter().flat_map(|c| {
            c.row
                .exit_codes
                .iter()
                .map(move |(code, &n)| (with(owner(c), ("code", code.clone())), n))
        }),
    )
}

/// TCP opens, closes, retransmits, resets and bytes by cgroup of the socket.
fn tcp_by_cgroup(f: &mut Families, cgroups: &[CgroupSeries]) -> fmt::Result {
    let per_cgroup: [(&str, &str, CgroupCounter); 5] = [
        (
            "ksight_tcp_connects",
            "Active TCP opens that reached ESTABLISHED, by cgroup of the socket",
            |r| r.tcp_connects,
        ),
        (
            "ksight_tcp_connect_failures",
            "Active TCP opens that closed before ESTABLISHED, by cgroup of the socket",
            |r| r.tcp_connect_failures,
        ),
        (
            "ksight_tcp_accepts",
            "Passive TCP opens that reached ESTABLISHED, by cgroup of the socket",
            |r| r.tcp_accepts,
        ),
        (
            "ksight_tcp_closes",
            "Established TCP connections that closed, by cgroup of the socket",
            |r| r.tcp_connections,
        ),
        (
            "ksight_tcp_retransmits",
            "TCP segments retransmitted, by cgroup of the socket",
            |r| r.tcp_retransmits,
        ),
    ];
    for (name, help, get) in per_cgroup {
        f.counter(name, help, None, by_cgroup(cgroups, get))?;
    }
    f.counter(
        "ksight_tcp_resets",
        "TCP resets sent and received, by cgroup of the socket",
        None,
        by_cgroup_split(cgroups, "direction", ["sent", "received"], |r| {
            [r.tcp_resets_sent, r.tcp_resets_received]
        }),
    )?;
    f.counter(
        "ksight_tcp_sent",
        "TCP payload bytes sent, by cgroup of the socket: as the send calls return (socket I/O signal), topped up at close to the kernel's acknowledged count",
        Some(Unit::Bytes),
        by_cgroup(cgroups, |r| r.tcp_bytes_sent),
    )?;
    f.counter(
        "ksight_tcp_received",
        "TCP payload bytes received, by cgroup of the socket: as the receive calls return (socket I/O signal), topped up at close to the kernel's count",
        Some(Unit::Bytes),
        by_cgroup(cgroups, |r| r.tcp_bytes_received),
    )
}

/// The largest recently closed connections, labelled by their tuple (never by pid).
fn tcp_top_connections(f: &mut Families, connections: &[ConnectionRow]) -> fmt::Result {
    fn labels(c: &ConnectionRow) -> Labels {
        l([
            ("cgroup_id", c.cgroup_id.to_string()),
            ("role", c.role.clone()),
            ("comm", c.comm.clone()),
            ("saddr", c.saddr.clone()),
            ("sport", c.sport.to_string()),
            ("daddr", c.daddr.clone()),
            ("dport", c.dport.to_string()),
        ])
    }
    f.gauge(
        "ksight_tcp_connection_sent",
        "Payload bytes sent by each of the largest recently closed connections (top N)",
        Some(Unit::Bytes),
        connections
            .iter()
            .map(|c| (labels(c), c.bytes_sent.unwrap_or(0))),
    )?;
    f.gauge(
        "ksight_tcp_connection_received",
        "Payload bytes received by each of the largest recently closed connections (top N)",
        Some(Unit::Bytes),
        connections
            .iter()
            .map(|c| (labels(c), c.bytes_received.unwrap_or(0))),
    )?;
    f.gauge(
        "ksight_tcp_connection_duration",
        "Lifetime of each of the largest recently closed connections (top N)",
        Some(Unit::Seconds),
        connections
            .iter()
            .map(|c| (labels(c), c.duration_us as f64 / 1e6)),
    )
}

/// Block requests, bytes, errors and latency by device.
fn block_by_device(f: &mut Families, devices: &[DeviceRow]) -> fmt::Result {
    let by_op = |get: fn(&DeviceRow) -> Vec<(&'static str, u64)>| {
        devices.iter().flat_map(move |d| {
            get(d)
                .into_iter()
                .map(|(op, n)| (with(device_labels(d), ("op", op.into())), n))
        })
    };
    f.counter(
        "ksight_block_ops",
        "Completed block requests, by device and operation",
        None,
        by_op(|d| vec![("read", d.reads), ("write", d.writes), ("other", d.other)]),
    )?;
    f.counter(
        "ksight_block",
        "Bytes of completed block requests, by device and operation",
        Some(Unit::Bytes),
        by_op(|d| vec![("read", d.read_bytes), ("write", d.write_bytes)]),
    )?;
    f.counter(
        "ksight_block_errors",
        "Block requests that completed with an error, by device",
        None,
        devices.iter().map(|d| (device_labels(d), d.errors)),
    )?;
    f.block_latency(devices)
}

/// Block bytes and requests by cgroup of the task that queued them.
fn block_by_cgroup(f: &mut Families, cgroups: &[CgroupSeries]) -> fmt::Result {
    f.counter(
        "ksight_block_cgroup",
        "Bytes of completed block requests, by cgroup of the task that queued them and operation",
        Some(Unit::Bytes),
        by_cgroup_split(cgroups, "op", ["read", "write"], |r| {
            [r.block_read_bytes, r.block_write_bytes]
        }),
    )?;
    f.counter(
        "ksight_block_cgroup_ops",
        "Completed block requests, by cgroup of the task that queued them and operation",
        None,
        by_cgroup_split(cgroups, "op", ["read", "write"], |r| {
            [r.block_reads, r.block_writes]
        }),
    )
}

/// The socket I/O signal's own health, and TCP connections whose kernel byte counters
/// disagreed with the sum of their calls.
fn socket_io(f: &mut Families, v: &ExportView) -> fmt::Result {
    let s = &v.totals.socket_io;
    f.counter(
        "ksight_socket_io_calls",
        "Completed send and receive calls on TCP and UDP sockets",
        None,
        one(s.calls),
    )?;
    f.counter(
        "ksight_socket_io_unreported_messages",
        "Messages of sendmmsg/recvmmsg calls beyond the per-call record bound, whose bytes are missing from the live counts",
        None,
        one(s.unreported_msgs),
    )?;
    f.counter(
        "ksight_socket_io_payload_faults",
        "Socket calls whose payload could not be read from user memory",
        None,
        one(s.payload_faults),
    )?;
    f.counter(
        "ksight_tcp_byte_mismatches",
        "Closed TCP connections, seen from their start, whose kernel byte counters differ from the sum of their calls",
        None,
        one(v.totals.tcp.byte_mismatches),
    )
}

/// UDP payload bytes and datagrams by cgroup of the task that sent or received them.
fn udp_by_cgroup(f: &mut Families, cgroups: &[CgroupSeries]) -> fmt::Result {
    let families: [(&str, &str, Option<Unit>, CgroupCounter); 4] = [
        (
            "ksight_udp_sent",
            "UDP payload bytes sent, by cgroup of the sending task",
            Some(Unit::Bytes),
            |r| r.udp_bytes_sent,
        ),
        (
            "ksight_udp_received",
            "UDP payload bytes received, by cgroup of the receiving task",
            Some(Unit::Bytes),
            |r| r.udp_bytes_received,
        ),
        (
            "ksight_udp_sent_datagrams",
            "UDP datagrams sent, by cgroup of the sending task",
            None,
            |r| r.udp_datagrams_sent,
        ),
        (
            "ksight_udp_received_datagrams",
            "UDP datagrams received, by cgroup of the receiving task",
            None,
            |r| r.udp_datagrams_received,
        ),
    ];
    for (name, help, unit, get) in families {
        f.counter(name, help, unit, by_cgroup(cgroups, get))?;
    }
    Ok(())
}

/// The labels of a DNS series: its cgroup's owner, then what the query was.
fn dns_labels(d: &DnsSeries) -> Labels {
    let k = &d.key;
    let mut labels = owner_of(k.cgroup_id, d.attribution.as_ref());
    labels.extend([
        ("role", k.role.clone()),
        ("server", k.server.clone()),
        ("qname", k.qname.clone()),
        ("qtype", k.qtype.clone()),
        ("rcode", k.rcode.clone()),
    ]);
    labels
}

/// DNS queries by owner, role, server, qname (top N, then "other"), type and answer; their
/// latency; packets that failed to parse.
fn dns(f: &mut Families, v: &ExportView) -> fmt::Result {
    f.counter(
        "ksight_dns_requests",
        "DNS queries by cgroup of the asking (client) or answering (server) task, server, qname, type and response code (rcode \"TIMEOUT\": never answered)",
        None,
        v.dns.iter().map(|d| (dns_labels(d), d.counts.count)),
    )?;
    f.dns_latency(&v.dns)?;
    f.counter(
        "ksight_dns_other_qname_requests",
        "DNS queries counted under qname \"other\": beyond the qnames with the most queries ([dns] max_qnames)",
        None,
        one(v.dns_other_requests),
    )?;
    f.counter(
        "ksight_dns_malformed_packets",
        "Packets on a DNS port, or that looked like DNS, that failed to parse and were skipped",
        None,
        one(v.totals.dns.malformed),
    )
}

impl Families<'_, '_> {
    /// `ksight_dns_request_duration`: query-to-answer latency of answered queries, per DNS
    /// series, on the block histogram's buckets.
    fn dns_latency(&mut self, series: &[DnsSeries]) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(
            "ksight_dns_request_duration",
            "DNS query-to-answer latency of answered queries",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        // Series with no answer (timeouts) have no latency to show.
        for d in series.iter().filter(|d| d.counts.answered() > 0) {
            let labels = dns_labels(d);
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                d.counts.latency_sum_ns as f64 / 1e9,
                d.counts.answered(),
                &buckets(&d.counts.latency_buckets),
                None,
            )?;
        }
        Ok(())
    }
}

impl Families<'_, '_> {
    /// A latency histogram in seconds, one per series that has timed requests.
    fn latency<'s>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, &'s RequestCounts)>,
    ) -> fmt::Result {
        let mut m =
            self.enc
                .encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        for (labels, c) in series.into_iter().filter(|(_, c)| c.timed() > 0) {
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                c.latency_sum_ns as f64 / 1e9,
                c.timed(),
                &buckets(&c.latency_buckets),
                None,
            )?;
        }
        Ok(())
    }
}

/// The labels of an HTTP or gRPC series: its cgroup's owner (and, serving in a pod, the
/// pod's Services), then what the request was. gRPC series have `grpc_status` instead of
/// `status`, and no `protocol` (their family says it).
fn http_labels(s: &HttpSeries) -> Labels {
    let k = &s.key;
    let grpc = k.protocol == "grpc";
    let mut labels = owner_of(k.cgroup_id, s.attribution.as_ref());
    push_known(&mut labels, "service", k.service.as_ref());
    if !grpc {
        labels.push(("protocol", k.protocol.clone()));
    }
    labels.extend([
        ("role", k.role.clone()),
        ("method", k.method.clone()),
        ("route", k.route.clone()),
    ]);
    if grpc {
        push_known(&mut labels, "grpc_status", k.grpc_status.as_ref());
    } else {
        labels.push(("status", k.status.to_string()));
    }
    push_known(&mut labels, "host", k.host.as_ref());
    push_known(&mut labels, "peer", k.peer.as_ref());
    labels
}

/// HTTP/1 and HTTP/2 requests, and gRPC calls, with their latency. The histograms carry
/// the counters' labels, status included, so the latency of errors shows on its own.
fn http(f: &mut Families, series: &[HttpSeries]) -> fmt::Result {
    let (grpc, http): (Vec<&HttpSeries>, Vec<&HttpSeries>) =
        series.iter().partition(|s| s.key.protocol == "grpc");
    f.counter(
        "ksight_http_requests",
        "HTTP/1 and HTTP/2 requests answered, by cgroup of the socket, protocol, role, method, route (normalised; \"other\" past the bound per service), status (0: stream reset without one), host, for clients peer and, for servers in a pod, service (the pod's Services, comma-separated)",
        None,
        http.iter().map(|s| (http_labels(s), s.counts.count)),
    )?;
    f.latency(
        "ksight_http_request_duration",
        "HTTP request-to-response latency, with the labels of ksight_http_requests_total (status included)",
        http.iter().map(|s| (http_labels(s), &s.counts)),
    )?;
    f.counter(
        "ksight_grpc_requests",
        "gRPC calls answered, by cgroup of the socket, role, method, route (/package.Service/Method), grpc_status, host, for clients peer and, for servers in a pod, service (the pod's Services, comma-separated)",
        None,
        grpc.iter().map(|s| (http_labels(s), s.counts.count)),
    )?;
    f.latency(
        "ksight_grpc_request_duration",
        "gRPC call latency, with the labels of ksight_grpc_requests_total (grpc_status included)",
        grpc.iter().map(|s| (http_labels(s), &s.counts)),
    )
}

/// The labels of a command or statement series: as [`http_labels`], its cgroup's owner
/// (and, serving in a pod, the pod's Services), then what the command was.
fn command_labels(s: &CommandSeries) -> Labels {
    let k = &s.key;
    let mut labels = owner_of(k.cgroup_id, s.attribution.as_ref());
    push_known(&mut labels, "service", k.service.as_ref());
    labels.extend([("role", k.role.clone()), ("command", k.command.clone())]);
    push_known(&mut labels, "peer", k.peer.as_ref());
    labels
}

/// Redis commands, MySQL and PostgreSQL statements: counts, errors by code, latency.
fn commands(f: &mut Families, series: &[CommandSeries]) -> fmt::Result {
    let families = [
        (
            "redis",
            "ksight_redis_commands",
            "Redis commands answered, by cgroup of the socket, role, command, for clients peer and, for servers in a pod, service (the pod's Services, comma-separated)",
            "ksight_redis_command_errors",
            "Redis commands answered with an error, by the error's first word (code \"unknown\": none)",
            "ksight_redis_command_duration",
            "Redis command latency, with the labels of ksight_redis_commands_total",
        ),
        (
            "mysql",
            "ksight_mysql_queries",
            "MySQL statements answered, by cgroup of the socket, role, command (the statement's verb), for clients peer and, for servers in a pod, service (the pod's Services, comma-separated)",
            "ksight_mysql_query_errors",
            "MySQL statements answered with an error, by error number (code \"unknown\": none)",
            "ksight_mysql_query_duration",
            "MySQL statement latency, with the labels of ksight_mysql_queries_total",
        ),
        (
            "postgres",
            "ksight_postgres_queries",
            "PostgreSQL statements answered, by cgroup of the socket, role, command (the statement's verb), for clients peer and, for servers in a pod, service (the pod's Services, comma-separated)",
            "ksight_postgres_query_errors",
            "PostgreSQL statements answered with an error, by SQLSTATE (code \"unknown\": none)",
            "ksight_postgres_query_duration",
            "PostgreSQL statement latency, with the labels of ksight_postgres_queries_total",
        ),
    ];
    for (protocol, total, total_help, errors, errors_help, duration, duration_help) in families {
        let of = || series.iter().filter(move |s| s.key.protocol == protocol);
        f.counter(
            total,
            total_help,
            None,
            of().map(|s| (command_labels(s), s.counts.count)),
        )?;
        f.counter(errors, errors_help, None, of().flat_map(error_series))?;
        f.latency(
            duration,
            duration_help,
            of().map(|s| (command_labels(s), &s.counts)),
        )?;
    }
    Ok(())
}

/// A series' errors by code; those without a code under "unknown", so they sum to all
/// its errors.
fn error_series(s: &CommandSeries) -> Vec<(Labels, u64)> {
    let c = &s.counts;
    let coded = c
        .error_codes
        .values()
        .fold(0u64, |a, &n| a.saturating_add(n));
    c.error_codes
        .iter()
        .map(|(code, &n)| (code.as_str(), n))
        .chain((c.errors > coded).then_some(("unknown", c.errors - coded)))
        .map(|(code, n)| (with(command_labels(s), ("code", code.to_string())), n))
        .collect()
}

/// Connections and bytes per detected protocol (TLS included), and the parsers' health.
fn protocols(f: &mut Families, v: &ExportView) -> fmt::Result {
    let labels = |s: &crate::view::ProtocolSeries| {
        let mut labels = owner_of(s.key.cgroup_id, s.attribution.as_ref());
        labels.extend([
            ("protocol", s.key.protocol.clone()),
            ("role", s.key.role.clone()),
        ]);
        labels
    };
    f.counter(
        "ksight_protocol_connections",
        "TCP connections on which a protocol (http, http2, grpc, redis, mysql, postgres, tls) was detected, by cgroup of the socket and role",
        None,
        v.protocols
            .iter()
            .map(|s| (labels(s), s.counts.connections)),
    )?;
    f.counter(
        "ksight_protocol",
        "Payload bytes of connections by detected protocol (tls included), cgroup of the socket, role and direction",
        Some(Unit::Bytes),
        v.protocols.iter().flat_map(|s| {
            [
                ("sent", s.counts.bytes_sent),
                ("received", s.counts.bytes_received),
            ]
            .map(|(d, n)| (with(labels(s), ("direction", d.into())), n))
        }),
    )?;
    let p = &v.totals.protocols;
    let health = [
        (
            "ksight_protocol_malformed_streams",
            "Connection streams found malformed by their protocol's parser and no longer parsed",
            p.malformed,
        ),
        (
            "ksight_protocol_framing_gaps",
            "Streams whose framing was hidden in bytes past the snaplen, picked up again at a later call",
            p.framing_gaps,
        ),
        (
            "ksight_protocol_mid_stream_messages",
            "Messages of connections met mid-stream that could not be parsed, counted instead",
            p.mid_stream,
        ),
        (
            "ksight_requests_unmatched_responses",
            "Responses with no request waiting for them",
            p.unmatched_responses,
        ),
        (
            "ksight_requests_unanswered",
            "Requests left without a response (at close, or past the bound on pipelining)",
            p.unanswered,
        ),
        (
            "ksight_requests_other_routes",
            "Requests counted under route \"other\": beyond the bound on routes per service",
            p.other_routes,
        ),
        (
            "ksight_requests_unlisted",
            "Requests past the engine's bound on request rows, counted only here",
            p.unlisted_requests,
        ),
        (
            "ksight_protocol_untracked_connections",
            "Connections not parsed because the bound on tracked connections was reached",
            p.untracked_connections,
        ),
    ];
    for (name, help, n) in health {
        f.counter(name, help, None, one(n))?;
    }
    Ok(())
}

/// An edge's labels: the client cgroup's owner, the server (its cgroup's owner prefixed
/// `server_`, its Kubernetes names, or its address), the protocol when detected.
fn edge_labels(e: &EdgeSeries) -> Labels {
    let k = &e.key;
    let mut labels = owner_of(k.client_cgroup_id, e.client.as_ref());
    match &k.server {
        EdgeServer::Local(id) => labels.extend(owner_named(SERVER_OWNER, *id, e.server.as_ref())),
        EdgeServer::Named(n) => {
            push_known(&mut labels, "server_namespace", Some(&n.namespace));
            push_known(&mut labels, "server_service", n.service.as_ref());
            push_known(&mut labels, "server_pod", n.pod.as_ref());
        }
        EdgeServer::Address(a) => labels.push(("server_address", a.clone())),
    }
    push_known(&mut labels, "protocol", Some(&k.protocol));
    labels
}

/// The service map: client cgroup → server, with connections, requests, errors, bytes and
/// latency.
fn edges(f: &mut Families, edges: &[EdgeSeries]) -> fmt::Result {
    type Count = fn(&RequestCounts) -> u64;
    let counters: [(&str, &str, Count); 3] = [
        (
            "ksight_edge_connections",
            "TCP connections established from a client cgroup to a server (a local cgroup, Kubernetes names, or an address)",
            |c| c.connections,
        ),
        (
            "ksight_edge_requests",
            "Requests answered on the connections from a client cgroup to a server",
            |c| c.count,
        ),
        (
            "ksight_edge_request_errors",
            "Requests answered with an error (HTTP status >= 500, non-zero grpc-status, error replies) from a client cgroup to a server",
            |c| c.errors,
        ),
    ];
    for (name, help, get) in counters {
        f.counter(
            name,
            help,
            None,
            edges.iter().map(|e| (edge_labels(e), get(&e.counts))),
        )?;
    }
    f.counter(
        "ksight_edge",
        "Payload bytes from a client cgroup to a server (sent) and back (received), seen from the client",
        Some(Unit::Bytes),
        edges.iter().flat_map(|e| {
            [
                ("sent", e.counts.bytes_sent),
                ("received", e.counts.bytes_received),
            ]
            .map(|(d, n)| (with(edge_labels(e), ("direction", d.into())), n))
        }),
    )?;
    f.latency(
        "ksight_edge_request_duration",
        "Request latency from a client cgroup to a server, seen from the client",
        edges.iter().map(|e| (edge_labels(e), &e.counts)),
    )
}

/// Upper bounds in seconds with the count of each bucket (not cumulative: the encoder sums).
fn buckets(counts: &[u64]) -> Vec<(f64, u64)> {
    LATENCY_BUCKETS_NS
        .iter()
        .map(|&ns| ns as f64 / 1e9)
        .chain([f64::INFINITY])
        .zip(counts.iter().copied().chain(std::iter::repeat(0)))
        .collect()
}

impl Families<'_, '_> {
    /// `ksight_block_latency`: a histogram in seconds per device, from the fixed buckets.
    fn block_latency(&mut self, devices: &[DeviceRow]) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(
            "ksight_block_latency",
            "Block request latency from queueing to completion, by device",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for d in devices {
            let labels = device_labels(d);
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                d.latency_sum_ns as f64 / 1e9,
                d.latency_us.count,
                &buckets(&d.latency_buckets),
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{AgentMeta, CgroupTree, ExportSettings, Exporter, Signals};
    use event_abi::{block_op, kind};
    use ksight_engine::names::NoNames;
    use ksight_engine::signals::{Mode, Signal};
    use ksight_engine::synthetic::Synth;
    use ksight_engine::{Engine, RawBatch};

    const CG: u64 = 77;
    const OTHER: u64 = 5;
    const LOOP0: u32 = 7 << 20;

    fn workload() -> RawBatch {
        let mut s = Synth::new();
        s.exec(100, 1, CG, "/bin/sh");
        s.fork(100, 101, CG, false);
        s.exec(101, 100, CG, "/bin/false");
        s.exit(101, CG, "false", 1 << 8);
        s.fork(100, 102, CG, false);
        s.exit(102, CG, "sh", 9);
        s.tcp_connection(100, 100, CG, 0xa0, 0xb0, 40000, 10_000, 3_000);
        s.tcp_connection(900, 900, OTHER, 0xc0, 0xd0, 40001, 1, 1);
        s.tcp_event(kind::TCP_RESET_SENT, 100, CG, 0, 0);
        s.tcp_event(kind::TCP_RESET_RECEIVED, 0, 0, 0xe0, CG);
        s.tcp_event(kind::TCP_RETRANSMIT, 0, 0, 0xf0, OTHER);
        s.block_io(100, CG, LOOP0, 0, 4096, block_op::WRITE, 20_000);
        s.block_io(100, CG, LOOP0, 8, 65536, block_op::READ, 300_000);
        s.block_io(
            900,
            OTHER,
            LOOP0,
            512,
            4096,
            block_op::WRITE,
            20_000_000_000,
        );
        s.exit(100, CG, "sh", 3 << 8);
        s.batch
    }

    /// What the socket I/O signal adds to the workload's snapshot: UDP traffic of CG, DNS
    /// queries (three qnames, one of them timed out), the signal's counters.
    fn with_sockets(snapshot: &mut ksight_engine::Snapshot) {
        use ksight_engine::snapshot::{DnsRow, Latency};
        for row in &mut snapshot.cgroups {
            if row.cgroup_id == CG {
                row.udp_bytes_sent = 300;
                row.udp_bytes_received = 900;
                row.udp_datagrams_sent = 3;
                row.udp_datagrams_received = 2;
            }
        }
        let query = |qname: &str, qtype: &str, rcode: &str, count: u64, latencies_ns: &[u64]| {
            let mut buckets = vec![0u64; LATENCY_BUCKETS_NS.len() + 1];
            for &ns in latencies_ns {
                buckets[LATENCY_BUCKETS_NS.partition_point(|&b| b < ns)] += 1;
            }
            DnsRow {
                role: "client".into(),
                server: "10.0.0.2:53".into(),
                qname: qname.into(),
                qtype: qtype.into(),
                rcode: rcode.into(),
                count,
                latency_us: Latency::default(),
                timeouts: if rcode == "TIMEOUT" { count } else { 0 },
                cgroup_id: CG,
                latency_sum_ns: latencies_ns.iter().sum(),
                latency_buckets: buckets,
            }
        };
        snapshot.dns.queries = vec![
            query(
                "api.shop.test",
                "A",
                "NOERROR",
                3,
                &[20_000, 30_000, 2_000_000],
            ),
            query("api.shop.test", "AAAA", "NOERROR", 1, &[40_000]),
            query("nope.test", "A", "NXDOMAIN", 2, &[100_000, 100_000]),
            query("slow.test", "A", "TIMEOUT", 1, &[]),
        ];
        snapshot.dns.malformed = 2;
        snapshot.socket_io = ksight_engine::snapshot::SocketIoSummary {
            calls: 40,
            payload_bytes: 4000,
            unreported_msgs: 3,
            payload_faults: 1,
        };
        snapshot.tcp.byte_mismatches = 1;
        with_requests(snapshot);
    }

    /// Latency buckets (per [`LATENCY_BUCKETS_NS`]) and their sum.
    fn timed(latencies_ns: &[u64]) -> (Vec<u64>, u64) {
        let mut buckets = vec![0u64; LATENCY_BUCKETS_NS.len() + 1];
        for &ns in latencies_ns {
            buckets[LATENCY_BUCKETS_NS.partition_point(|&b| b < ns)] += 1;
        }
        (buckets, latencies_ns.iter().sum())
    }

    /// Requests parsed from CG's socket payload: HTTP (one route with a quote and a
    /// backslash), gRPC, Redis, MySQL and PostgreSQL rows with error codes, connections by
    /// protocol, the parsers' counters, and edges to a local server (OTHER), to a Service's
    /// ClusterIP (named by [`resolver`]) and to an unnamed address.
    fn with_requests(snapshot: &mut ksight_engine::Snapshot) {
        use ksight_engine::snapshot::{
            CommandRow, EdgeRow, HttpRow, ProtocolConnectionRow, ProtocolsSummary,
        };
        let http = |protocol: &str, role: &str, method: &str, route: &str, status: u16| HttpRow {
            protocol: protocol.into(),
            role: role.into(),
            method: method.into(),
            route: route.into(),
            status,
            cgroup_id: CG,
            ..Default::default()
        };
        let with_latency = |mut r: HttpRow, latencies: &[u64]| {
            (r.latency_buckets, r.latency_sum_ns) = timed(latencies);
            r.count = latencies.len() as u64;
            r
        };
        snapshot.http.requests = vec![
            with_latency(
                HttpRow {
                    host: Some("shop.test".into()),
                    ..http("http", "server", "GET", "/api/items/*", 200)
                },
                &[20_000, 30_000, 2_000_000],
            ),
            with_latency(
                HttpRow {
                    errors: 1,
                    peer: Some("10.0.0.3:8080".into()),
                    ..http("http2", "client", "POST", r#"/say "hi"\back"#, 503)
                },
                &[300_000_000],
            ),
            with_latency(
                HttpRow {
                    grpc_status: Some("14".into()),
                    errors: 2,
                    peer: Some("10.0.0.4:50051".into()),
                    host: Some("cart:50051".into()),
                    ..http("grpc", "client", "POST", "/shop.Cart/Add", 200)
                },
                &[1_000_000, 4_000_000],
            ),
        ];
        let command = |role: &str,
                       command: &str,
                       count: u64,
                       codes: &[(&str, u64)],
                       errors: u64,
                       peer: Option<&str>| {
            let (latency_buckets, latency_sum_ns) = timed(&vec![40_000; count as usize]);
            CommandRow {
                role: role.into(),
                command: command.into(),
                count,
                errors,
                error_codes: codes.iter().map(|&(c, n)| (c.to_string(), n)).collect(),
                peer: peer.map(str::to_string),
                cgroup_id: CG,
                latency_sum_ns,
                latency_buckets,
                ..Default::default()
            }
        };
        snapshot.redis.commands = vec![command(
            "client",
            "GET",
            5,
            &[("WRONGTYPE", 1)],
            2,
            Some("10.0.0.5:6379"),
        )];
        snapshot.mysql.queries = vec![command(
            "client",
            "SELECT",
            4,
            &[("1146", 1)],
            1,
            Some("10.0.0.6:3306"),
        )];
        snapshot.postgres.queries = vec![command("server", "INSERT", 2, &[("23505", 1)], 1, None)];
        snapshot.protocols = ProtocolsSummary {
            connections: vec![ProtocolConnectionRow {
                protocol: "tls".into(),
                role: "client".into(),
                cgroup_id: CG,
                connections: 2,
                bytes_sent: 100,
                bytes_received: 5000,
            }],
            malformed: 1,
            framing_gaps: 8,
            mid_stream: 2,
            unmatched_responses: 3,
            unanswered: 4,
            other_routes: 5,
            unlisted_requests: 6,
            untracked_connections: 7,
        };
        let edge = |server: &str, server_cgroup_id, requests: u64, latencies: &[u64]| {
            let (latency_buckets, latency_sum_ns) = timed(latencies);
            EdgeRow {
                client_cgroup_id: CG,
                server: server.into(),
                server_cgroup_id,
                protocol: Some("http".into()),
                connections: 1,
                requests,
                errors: requests / 2,
                bytes_sent: 10 * requests,
                bytes_received: 100 * requests,
                latency_sum_ns,
                latency_buckets,
                ..Default::default()
            }
        };
        snapshot.edges = vec![
            edge("10.0.0.7:80", Some(OTHER), 2, &[50_000, 50_000]),
            edge("10.96.0.10:80", None, 4, &[1_000_000; 4]),
            EdgeRow {
                protocol: None,
                ..edge("[2001:db8::1]:443", None, 0, &[])
            },
        ];
    }

    /// Names the Service at 10.96.0.10:80, nothing else.
    fn resolver() -> crate::view::TestCluster {
        crate::view::TestCluster::serving(&[(
            "10.96.0.10:80",
            &crate::view::ServerName {
                namespace: "shop".into(),
                service: Some("api".into()),
                pod: None,
            },
        )])
    }

    fn exposition(settings: &ExportSettings) -> String {
        let mut engine = Engine::new("ebpf", None);
        engine.ingest(&workload());
        engine.flush();
        let mut snapshot = engine.snapshot(&NoNames);
        with_sockets(&mut snapshot);
        let tree = CgroupTree {
            paths: [
                (CG, "/test.slice/w".to_string()),
                (OTHER, "/other".to_string()),
            ]
            .into_iter()
            .collect(),
            complete: true,
        };
        let meta = AgentMeta {
            version: "0.1.0".into(),
            backend: "ebpf".into(),
            backend_reason: "bpf \"works\"".into(),
            signals: vec![
                (Signal::Process, Mode::Full),
                (Signal::Block, Mode::Degraded),
            ],
            events: engine.records,
            ..Default::default()
        };
        let names = resolver();
        let (view, _) =
            Exporter::new().update_resolving(&snapshot, &tree, 0, settings, meta, Some(&names));
        encode(
            Arc::new(view),
            OwnUsage {
                cpu_seconds: 1.5,
                resident_bytes: 4096,
            },
        )
    }

    /// Every family, label and line of a full exposition (all signals, Kubernetes
    /// metadata, an attributed and an unattributed cgroup, top connections), pinned byte
    /// for byte: refactors of the encoder must not change a scrape. To re-pin after a
    /// deliberate change: `KSIGHT_PIN_EXPOSITION=1 cargo test -p ksight-export pinned`.
    #[test]
    fn the_full_exposition_is_pinned() {
        let mut engine = Engine::new("ebpf", None);
        engine.ingest(&workload());
        engine.flush();
        let mut snapshot = engine.snapshot(&NoNames);
        with_sockets(&mut snapshot);
        for row in &mut snapshot.cgroups {
            if row.cgroup_id == CG {
                row.attribution = Some(ksight_attribution::CgroupLabels {
                    path: "/kubepods/pod1/c".into(),
                    runtime: "containerd".into(),
                    container_id: "ab".repeat(32),
                    unit: "cri-containerd-ab.scope".into(),
                    namespace: "shop".into(),
                    pod: "web-1".into(),
                    pod_uid: "0f1c6a3e".into(),
                    container: "web".into(),
                    workload_kind: "Deployment".into(),
                    workload: "web".into(),
                    ..Default::default()
                });
            }
        }
        let tree = CgroupTree {
            paths: [(CG, "/kubepods/pod1/c".to_string())].into_iter().collect(),
            complete: false,
        };
        let meta = AgentMeta {
            version: "0.1.0".into(),
            backend: "kmod".into(),
            backend_reason: "configured".into(),
            signals: vec![
                (Signal::Process, Mode::Full),
                (Signal::Block, Mode::Degraded),
            ],
            start_time_s: 1_700_000_000.25,
            events: engine.records,
            events_per_second: 12.5,
            late_events: 4,
            reloads_succeeded: 2,
            reloads_failed: 1,
            kubernetes: Some(crate::MetadataStatus {
                connected: true,
                synced: false,
                pods: 3,
                errors: 6,
                relists: 7,
                last_event_unix_s: Some(1_700_000_100.5),
            }),
            pending_cgroups: 8,
            ignored_cgroups: 9,
            ignored_events_kernel: 10,
            ignored_events_engine: 11,
        };
        snapshot.lost_events_per_cpu = vec![0, 5];
        let settings = ExportSettings {
            top_connections: 5,
            dns_max_qnames: 2,
            ..Default::default()
        };
        let names = resolver();
        let (view, _) =
            Exporter::new().update_resolving(&snapshot, &tree, 0, &settings, meta, Some(&names));
        let text = encode(
            Arc::new(view),
            OwnUsage {
                cpu_seconds: 0.75,
                resident_bytes: 8192,
            },
        );
        let pinned = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/exposition.txt");
        if std::env::var_os("KSIGHT_PIN_EXPOSITION").is_some() {
            std::fs::write(pinned, &text).unwrap();
        }
        let want = std::fs::read_to_string(pinned).unwrap();
        for (i, (got, want)) in text.lines().zip(want.lines()).enumerate() {
            assert_eq!(got, want, "line {} of the exposition differs", i + 1);
        }
        assert_eq!(text, want);
    }

    /// The sample lines (no comments) of the exposition.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn has(text: &str, line: &str) {
        assert!(samples(text).contains(&line), "missing `{line}` in\n{text}");
    }

    #[test]
    fn owner_labels_on_every_cgroup_series_and_odd_paths_escaped() {
        let mut engine = Engine::new("ebpf", None);
        engine.ingest(&workload());
        engine.flush();
        let mut snapshot = engine.snapshot(&NoNames);
        let odd = "/odd \"quoted\" \\ back\nslash";
        for row in &mut snapshot.cgroups {
            row.attribution = Some(if row.cgroup_id == CG {
                ksight_attribution::CgroupLabels {
                    path: "/kubepods/pod1/c".into(),
                    runtime: "containerd".into(),
                    container_id: "ab".repeat(32),
                    namespace: "shop".into(),
                    pod: "web-1".into(),
                    pod_uid: "0f1c6a3e-5a2b-4c1d-9e8f-123456789abc".into(),
                    container: "web".into(),
                    workload_kind: "Deployment".into(),
                    workload: "web".into(),
                    ..Default::default()
                }
            } else {
                ksight_attribution::CgroupLabels {
                    path: odd.into(),
                    ..Default::default()
                }
            });
        }
        let tree = CgroupTree {
            paths: [
                (CG, "/kubepods/pod1/c".to_string()),
                (OTHER, odd.to_string()),
            ]
            .into_iter()
            .collect(),
            complete: true,
        };
        let (view, _) = Exporter::new().update(
            &snapshot,
            &tree,
            0,
            &ExportSettings::default(),
            AgentMeta::default(),
        );
        let view = Arc::new(view);
        let text = encode(view.clone(), OwnUsage::default());
        let owner = r#"cgroup_id="77",namespace="shop",pod="web-1",container="web",workload="web",workload_kind="Deployment""#;
        has(&text, &format!("ksight_process_execs_total{{{owner}}} 2"));
        has(
            &text,
            &format!("ksight_tcp_sent_bytes_total{{{owner}}} 13000"),
        );
        has(
            &text,
            &format!(r#"ksight_block_cgroup_bytes_total{{{owner},op="read"}} 65536"#),
        );
        has(
            &text,
            &format!(
                r#"ksight_cgroup_info{{{owner},path="/kubepods/pod1/c",runtime="containerd",container_id="{}",pod_uid="0f1c6a3e-5a2b-4c1d-9e8f-123456789abc"}} 1"#,
                "ab".repeat(32)
            ),
        );
        // Quotes, backslashes and newlines in a path are escaped, in both formats.
        has(
            &text,
            r#"ksight_cgroup_info{cgroup_id="5",path="/odd \"quoted\" \\ back\nslash"} 1"#,
        );
        let classic = to_text_format(&encode(view, OwnUsage::default()));
        assert!(
            classic.contains(r#"path="/odd \"quoted\" \\ back\nslash""#),
            "{classic}"
        );
        assert_eq!(
            classic.lines().filter(|l| l.contains("slash")).count(),
            1,
            "one line per series"
        );
    }

    #[test]
    fn counters_by_cgroup_equal_the_ground_truth() {
        let text = exposition(&ExportSettings::default());
        has(&text, r#"ksight_process_execs_total{cgroup_id="77"} 2"#);
        has(&text, r#"ksight_process_forks_total{cgroup_id="77"} 2"#);
        has(
            &text,
            r#"ksight_process_exits_total{cgroup_id="77",code="1"} 1"#,
        );
        has(
            &text,
            r#"ksight_process_exits_total{cgroup_id="77",code="137"} 1"#,
        );
        has(
            &text,
            r#"ksight_process_exits_total{cgroup_id="77",code="3"} 1"#,
        );
        has(&text, r#"ksight_tcp_connects_total{cgroup_id="77"} 1"#);
        has(&text, r#"ksight_tcp_accepts_total{cgroup_id="77"} 1"#);
        has(&text, r#"ksight_tcp_closes_total{cgroup_id="77"} 2"#);
        has(&text, r#"ksight_tcp_closes_total{cgroup_id="5"} 2"#);
        has(
            &text,
            r#"ksight_tcp_sent_bytes_total{cgroup_id="77"} 13000"#,
        );
        has(
            &text,
            r#"ksight_tcp_received_bytes_total{cgroup_id="77"} 13000"#,
        );
        has(
            &text,
            r#"ksight_tcp_resets_total{cgroup_id="77",direction="sent"} 1"#,
        );
        has(
            &text,
            r#"ksight_tcp_resets_total{cgroup_id="77",direction="received"} 1"#,
        );
        has(&text, r#"ksight_tcp_retransmits_total{cgroup_id="5"} 1"#);
        has(&text, r#"ksight_tcp_retransmits_total{cgroup_id="77"} 0"#);
        has(
            &text,
            r#"ksight_block_cgroup_bytes_total{cgroup_id="77",op="read"} 65536"#,
        );
        has(
            &text,
            r#"ksight_block_cgroup_bytes_total{cgroup_id="77",op="write"} 4096"#,
        );
        has(
            &text,
            r#"ksight_block_cgroup_ops_total{cgroup_id="5",op="write"} 1"#,
        );
        has(
            &text,
            r#"ksight_cgroup_info{cgroup_id="77",path="/test.slice/w"} 1"#,
        );
    }

    #[test]
    fn block_latency_is_a_histogram_in_seconds() {
        let text = exposition(&ExportSettings::default());
        let dev = r#"device="7:0",dev="7:0""#;
        has(
            &text,
            &format!("ksight_block_ops_total{{{dev},op=\"read\"}} 1"),
        );
        has(
            &text,
            &format!("ksight_block_ops_total{{{dev},op=\"write\"}} 2"),
        );
        has(
            &text,
            &format!("ksight_block_bytes_total{{{dev},op=\"read\"}} 65536"),
        );
        has(
            &text,
            &format!("ksight_block_bytes_total{{{dev},op=\"write\"}} 8192"),
        );
        has(
            &text,
            &format!("ksight_block_latency_seconds_count{{{dev}}} 3"),
        );
        // Synth puts 1 µs between queue, issue and completion: 22 µs, 302 µs, 20.000002 s.
        has(
            &text,
            &format!("ksight_block_latency_seconds_sum{{{dev}}} 20.000326"),
        );
        // Buckets are cumulative; 20 s lands only in +Inf.
        has(
            &text,
            &format!("ksight_block_latency_seconds_bucket{{le=\"0.00001\",{dev}}} 0"),
        );
        has(
            &text,
            &format!("ksight_block_latency_seconds_bucket{{le=\"0.000025\",{dev}}} 1"),
        );
        has(
            &text,
            &format!("ksight_block_latency_seconds_bucket{{le=\"0.00025\",{dev}}} 1"),
        );
        has(
            &text,
            &format!("ksight_block_latency_seconds_bucket{{le=\"0.0005\",{dev}}} 2"),
        );
        has(
            &text,
            &format!("ksight_block_latency_seconds_bucket{{le=\"10.0\",{dev}}} 2"),
        );
        has(
            &text,
            &format!("ksight_block_latency_seconds_bucket{{le=\"+Inf\",{dev}}} 3"),
        );
        assert!(text.contains("# TYPE ksight_block_latency_seconds histogram"));
        assert!(text.contains("# UNIT ksight_block_latency_seconds seconds"));
    }

    #[test]
    fn agent_metrics_and_well_formed_text() {
        let text = exposition(&ExportSettings::default());
        has(
            &text,
            r#"ksight_backend_info{backend="ebpf",reason="bpf \"works\""} 1"#,
        );
        has(
            &text,
            r#"ksight_signal_status{signal="block",mode="degraded"} 1"#,
        );
        has(&text, "ksight_agent_cpu_seconds_total 1.5");
        has(&text, "ksight_agent_resident_memory_bytes 4096");
        has(
            &text,
            r#"ksight_agent_config_reloads_total{result="failure"} 0"#,
        );
        has(&text, "ksight_malformed_records_total 0");
        assert!(text.ends_with("# EOF\n"));
        // Every sample: a name, optional labels, one value; every name typed before use.
        let mut typed: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            assert!(
                typed.iter().any(|t| name.starts_with(t)),
                "{name} has no TYPE line"
            );
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }
    }

    #[test]
    fn the_classic_text_format_names_the_samples() {
        let om = exposition(&ExportSettings::default());
        let text = to_text_format(&om);
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert!(
            text.contains("# TYPE ksight_process_execs_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP ksight_process_execs_total Successful"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ksight_backend_info gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ksight_block_latency_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ksight_agent_resident_memory_bytes gauge\n"),
            "{text}"
        );
        // Samples are the same in both formats.
        assert_eq!(samples(&text), samples(&om));
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        ));
        assert!(!wants_openmetrics("*/*"));
    }

    #[test]
    fn disabled_signals_and_filtered_cgroups_are_not_exported() {
        let settings = ExportSettings {
            signals: Signals {
                process: true,
                tcp: false,
                block: false,
                socket_io: false,
            },
            exclude_cgroups: vec!["/other".into()],
            ..Default::default()
        };
        let text = exposition(&settings);
        assert!(!text.contains("ksight_tcp_"), "{text}");
        assert!(!text.contains("ksight_block_"), "{text}");
        for family in [
            "ksight_udp_",
            "ksight_dns_",
            "ksight_socket_io_",
            "ksight_http_",
            "ksight_grpc_",
            "ksight_redis_",
            "ksight_mysql_",
            "ksight_postgres_",
            "ksight_protocol_",
            "ksight_requests_",
            "ksight_edge_",
        ] {
            assert!(!text.contains(family), "{family} in {text}");
        }
        assert!(!text.contains(r#"cgroup_id="5""#), "{text}");
        has(&text, r#"ksight_process_execs_total{cgroup_id="77"} 2"#);
    }

    #[test]
    fn top_connections_are_labelled_by_tuple_not_pid() {
        let settings = ExportSettings {
            top_connections: 1,
            ..Default::default()
        };
        let text = exposition(&settings);
        let lines: Vec<&str> = samples(&text)
            .into_iter()
            .filter(|l| l.starts_with("ksight_tcp_connection_sent_bytes"))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(r#"sport="40000""#) && lines[0].ends_with(" 10000"),
            "{lines:?}"
        );
        assert!(!text.contains("pid="));
    }

    #[test]
    fn udp_and_socket_io_counters() {
        let text = exposition(&ExportSettings::default());
        has(&text, r#"ksight_udp_sent_bytes_total{cgroup_id="77"} 300"#);
        has(
            &text,
            r#"ksight_udp_received_bytes_total{cgroup_id="77"} 900"#,
        );
        has(
            &text,
            r#"ksight_udp_sent_datagrams_total{cgroup_id="77"} 3"#,
        );
        has(
            &text,
            r#"ksight_udp_received_datagrams_total{cgroup_id="77"} 2"#,
        );
        has(&text, r#"ksight_udp_sent_bytes_total{cgroup_id="5"} 0"#);
        has(&text, "ksight_socket_io_calls_total 40");
        has(&text, "ksight_socket_io_unreported_messages_total 3");
        has(&text, "ksight_socket_io_payload_faults_total 1");
        has(&text, "ksight_tcp_byte_mismatches_total 1");
        has(&text, "ksight_dns_malformed_packets_total 2");
        assert!(
            text.contains("# UNIT ksight_udp_sent_bytes bytes"),
            "{text}"
        );
    }

    #[test]
    fn dns_requests_latency_and_the_qname_bound() {
        let settings = ExportSettings {
            dns_max_qnames: 2,
            ..Default::default()
        };
        let text = exposition(&settings);
        let q = |qname: &str, qtype: &str, rcode: &str| {
            format!(
                r#"cgroup_id="77",role="client",server="10.0.0.2:53",qname="{qname}",qtype="{qtype}",rcode="{rcode}""#
            )
        };
        has(
            &text,
            &format!(
                "ksight_dns_requests_total{{{}}} 3",
                q("api.shop.test", "A", "NOERROR")
            ),
        );
        has(
            &text,
            &format!(
                "ksight_dns_requests_total{{{}}} 1",
                q("api.shop.test", "AAAA", "NOERROR")
            ),
        );
        has(
            &text,
            &format!(
                "ksight_dns_requests_total{{{}}} 2",
                q("nope.test", "A", "NXDOMAIN")
            ),
        );
        // The third qname by count is beyond the bound of 2: counted under "other".
        has(
            &text,
            &format!(
                "ksight_dns_requests_total{{{}}} 1",
                q("other", "A", "TIMEOUT")
            ),
        );
        assert!(!text.contains("slow.test"), "{text}");
        has(&text, "ksight_dns_other_qname_requests_total 1");
        // Answered queries only, in seconds on the block buckets: 20 µs, 30 µs, 2 ms.
        let l = q("api.shop.test", "A", "NOERROR");
        has(
            &text,
            &format!("ksight_dns_request_duration_seconds_count{{{l}}} 3"),
        );
        has(
            &text,
            &format!("ksight_dns_request_duration_seconds_sum{{{l}}} 0.00205"),
        );
        has(
            &text,
            &format!("ksight_dns_request_duration_seconds_bucket{{le=\"0.000025\",{l}}} 1"),
        );
        has(
            &text,
            &format!("ksight_dns_request_duration_seconds_bucket{{le=\"0.00005\",{l}}} 2"),
        );
        has(
            &text,
            &format!("ksight_dns_request_duration_seconds_bucket{{le=\"0.0025\",{l}}} 3"),
        );
        has(
            &text,
            &format!("ksight_dns_request_duration_seconds_bucket{{le=\"+Inf\",{l}}} 3"),
        );
        assert!(
            !samples(&text)
                .iter()
                .any(|l| l.starts_with("ksight_dns_request_duration") && l.contains("TIMEOUT")),
            "no latency series for queries never answered"
        );
        assert!(text.contains("# TYPE ksight_dns_request_duration_seconds histogram"));
    }

    #[test]
    fn http_and_grpc_requests_with_their_latency() {
        let text = exposition(&ExportSettings::default());
        let get = r#"cgroup_id="77",protocol="http",role="server",method="GET",route="/api/items/*",status="200",host="shop.test""#;
        has(&text, &format!("ksight_http_requests_total{{{get}}} 3"));
        has(
            &text,
            &format!("ksight_http_request_duration_seconds_count{{{get}}} 3"),
        );
        has(
            &text,
            &format!("ksight_http_request_duration_seconds_sum{{{get}}} 0.00205"),
        );
        has(
            &text,
            &format!("ksight_http_request_duration_seconds_bucket{{le=\"0.00005\",{get}}} 2"),
        );
        has(
            &text,
            &format!("ksight_http_request_duration_seconds_bucket{{le=\"+Inf\",{get}}} 3"),
        );
        // A route with a quote and a backslash, escaped; errors keep their status, and
        // their latency its own series.
        let post = r#"cgroup_id="77",protocol="http2",role="client",method="POST",route="/say \"hi\"\\back",status="503",peer="10.0.0.3:8080""#;
        has(&text, &format!("ksight_http_requests_total{{{post}}} 1"));
        has(
            &text,
            &format!("ksight_http_request_duration_seconds_bucket{{le=\"0.25\",{post}}} 0"),
        );
        has(
            &text,
            &format!("ksight_http_request_duration_seconds_bucket{{le=\"0.5\",{post}}} 1"),
        );
        let call = r#"cgroup_id="77",role="client",method="POST",route="/shop.Cart/Add",grpc_status="14",host="cart:50051",peer="10.0.0.4:50051""#;
        has(&text, &format!("ksight_grpc_requests_total{{{call}}} 2"));
        has(
            &text,
            &format!("ksight_grpc_request_duration_seconds_sum{{{call}}} 0.005"),
        );
        assert!(
            !samples(&text)
                .iter()
                .any(|l| l.starts_with("ksight_http_") && l.contains("grpc")),
            "gRPC calls only in the gRPC families"
        );
        assert!(text.contains("# TYPE ksight_grpc_request_duration_seconds histogram"));
    }

    #[test]
    fn redis_mysql_and_postgres_with_error_codes() {
        let text = exposition(&ExportSettings::default());
        let redis = r#"cgroup_id="77",role="client",command="GET",peer="10.0.0.5:6379""#;
        has(&text, &format!("ksight_redis_commands_total{{{redis}}} 5"));
        // Errors by code; the one without a code under "unknown".
        has(
            &text,
            &format!(r#"ksight_redis_command_errors_total{{{redis},code="WRONGTYPE"}} 1"#),
        );
        has(
            &text,
            &format!(r#"ksight_redis_command_errors_total{{{redis},code="unknown"}} 1"#),
        );
        has(
            &text,
            &format!("ksight_redis_command_duration_seconds_count{{{redis}}} 5"),
        );
        has(
            &text,
            &format!("ksight_redis_command_duration_seconds_sum{{{redis}}} 0.0002"),
        );
        let mysql = r#"cgroup_id="77",role="client",command="SELECT",peer="10.0.0.6:3306""#;
        has(&text, &format!("ksight_mysql_queries_total{{{mysql}}} 4"));
        has(
            &text,
            &format!(r#"ksight_mysql_query_errors_total{{{mysql},code="1146"}} 1"#),
        );
        has(
            &text,
            &format!("ksight_mysql_query_duration_seconds_bucket{{le=\"0.00005\",{mysql}}} 4"),
        );
        let pg = r#"cgroup_id="77",role="server",command="INSERT""#;
        has(&text, &format!("ksight_postgres_queries_total{{{pg}}} 2"));
        has(
            &text,
            &format!(r#"ksight_postgres_query_errors_total{{{pg},code="23505"}} 1"#),
        );
        has(
            &text,
            &format!("ksight_postgres_query_duration_seconds_count{{{pg}}} 2"),
        );
        assert_eq!(
            samples(&text)
                .iter()
                .filter(|l| l.contains("_errors_total{") && l.contains("unknown"))
                .count(),
            1,
            "MySQL and PostgreSQL errors all had codes"
        );
    }

    #[test]
    fn protocol_connections_bytes_and_parser_health() {
        let text = exposition(&ExportSettings::default());
        let tls = r#"cgroup_id="77",protocol="tls",role="client""#;
        has(
            &text,
            &format!("ksight_protocol_connections_total{{{tls}}} 2"),
        );
        has(
            &text,
            &format!(r#"ksight_protocol_bytes_total{{{tls},direction="sent"}} 100"#),
        );
        has(
            &text,
            &format!(r#"ksight_protocol_bytes_total{{{tls},direction="received"}} 5000"#),
        );
        assert!(
            text.contains("# UNIT ksight_protocol_bytes bytes"),
            "{text}"
        );
        for line in [
            "ksight_protocol_malformed_streams_total 1",
            "ksight_protocol_framing_gaps_total 8",
            "ksight_protocol_mid_stream_messages_total 2",
            "ksight_requests_unmatched_responses_total 3",
            "ksight_requests_unanswered_total 4",
            "ksight_requests_other_routes_total 5",
            "ksight_requests_unlisted_total 6",
            "ksight_protocol_untracked_connections_total 7",
        ] {
            has(&text, line);
        }
    }

    #[test]
    fn edges_by_server_cgroup_kubernetes_names_or_address() {
        let text = exposition(&ExportSettings::default());
        // A server cgroup of this host: its owner labels, prefixed.
        let local = r#"cgroup_id="77",server_cgroup_id="5",protocol="http""#;
        has(
            &text,
            &format!("ksight_edge_connections_total{{{local}}} 1"),
        );
        has(&text, &format!("ksight_edge_requests_total{{{local}}} 2"));
        has(
            &text,
            &format!("ksight_edge_request_errors_total{{{local}}} 1"),
        );
        has(
            &text,
            &format!(r#"ksight_edge_bytes_total{{{local},direction="sent"}} 20"#),
        );
        has(
            &text,
            &format!(r#"ksight_edge_bytes_total{{{local},direction="received"}} 200"#),
        );
        has(
            &text,
            &format!("ksight_edge_request_duration_seconds_sum{{{local}}} 0.0001"),
        );
        // A Service's ClusterIP, named by the resolver.
        let named =
            r#"cgroup_id="77",server_namespace="shop",server_service="api",protocol="http""#;
        has(&text, &format!("ksight_edge_requests_total{{{named}}} 4"));
        has(
            &text,
            &format!("ksight_edge_request_duration_seconds_count{{{named}}} 4"),
        );
        // Unnamed, no protocol detected: the address; no latency without requests.
        let unnamed = r#"cgroup_id="77",server_address="[2001:db8::1]:443""#;
        has(
            &text,
            &format!("ksight_edge_connections_total{{{unnamed}}} 1"),
        );
        assert!(
            !samples(&text)
                .iter()
                .any(|l| l.starts_with("ksight_edge_request_duration") && l.contains("2001")),
            "{text}"
        );
    }

    /// Server owner labels come from the server cgroup's attribution; edges that end up
    /// with the same labels (two addresses of one Service) are one series; an ignored
    /// server cgroup is not named.
    #[test]
    fn edges_with_the_same_labels_add_up() {
        use crate::view::ServerName;
        use ksight_engine::snapshot::EdgeRow;
        let owner = |pod: &str, ignored| ksight_attribution::CgroupLabels {
            namespace: "shop".into(),
            pod: pod.into(),
            container: "main".into(),
            workload: pod.trim_end_matches("-1").into(),
            workload_kind: "Deployment".into(),
            ignored,
            ..Default::default()
        };
        let cgroup = |id, labels| CgroupRow {
            cgroup_id: id,
            attribution: Some(labels),
            ..Default::default()
        };
        let edge = |server: &str, server_cgroup_id, requests| EdgeRow {
            client_cgroup_id: 1,
            server: server.into(),
            server_cgroup_id,
            protocol: Some("grpc".into()),
            requests,
            ..Default::default()
        };
        let snapshot = ksight_engine::Snapshot {
            cgroups: vec![
                cgroup(1, owner("web-1", false)),
                cgroup(2, owner("cart-1", false)),
                cgroup(3, owner("secret-1", true)),
            ],
            edges: vec![
                edge("10.1.0.2:9000", Some(2), 1),
                edge("10.96.0.20:9000", None, 2),
                edge("10.1.0.30:9000", None, 3),
                edge("10.1.0.31:9000", None, 4),
                edge("10.1.0.3:9000", Some(3), 5),
            ],
            ..Default::default()
        };
        let payments = ServerName {
            namespace: "shop".into(),
            service: Some("payments".into()),
            pod: None,
        };
        let names = crate::view::TestCluster::serving(&[
            ("10.1.0.30:9000", &payments),
            ("10.1.0.31:9000", &payments),
        ]);
        let (view, _) = Exporter::new().update_resolving(
            &snapshot,
            &CgroupTree::default(),
            0,
            &ExportSettings::default(),
            AgentMeta::default(),
            Some(&names),
        );
        let text = encode(Arc::new(view), OwnUsage::default());
        let client = r#"cgroup_id="1",namespace="shop",pod="web-1",container="main",workload="web",workload_kind="Deployment""#;
        has(
            &text,
            &format!(
                r#"ksight_edge_requests_total{{{client},server_cgroup_id="2",server_namespace="shop",server_pod="cart-1",server_container="main",server_workload="cart",server_workload_kind="Deployment",protocol="grpc"}} 1"#
            ),
        );
        has(
            &text,
            &format!(
                r#"ksight_edge_requests_total{{{client},server_namespace="shop",server_service="payments",protocol="grpc"}} 7"#
            ),
        );
        has(
            &text,
            &format!(
                r#"ksight_edge_requests_total{{{client},server_address="10.96.0.20:9000",protocol="grpc"}} 2"#
            ),
        );
        has(
            &text,
            &format!(
                r#"ksight_edge_requests_total{{{client},server_address="10.1.0.3:9000",protocol="grpc"}} 5"#
            ),
        );
        assert!(!text.contains("secret"), "{text}");
    }

    /// Server-role request and command series of a pod carry the Services it backs
    /// (sorted, comma-separated), with their errors and latency; client-role series and
    /// cgroups without a pod do not.
    #[test]
    fn server_series_of_a_pod_carry_its_services() {
        use ksight_engine::snapshot::{CommandRow, HttpRow};
        let pod = |pod: &str| ksight_attribution::CgroupLabels {
            namespace: "shop".into(),
            pod: pod.into(),
            ..Default::default()
        };
        let cgroup = |id, labels| CgroupRow {
            cgroup_id: id,
            attribution: Some(labels),
            ..Default::default()
        };
        let request = |cgroup_id, role: &str| HttpRow {
            protocol: "http".into(),
            role: role.into(),
            method: "GET".into(),
            route: "/".into(),
            status: 200,
            count: 1,
            cgroup_id,
            latency_sum_ns: 1_000,
            latency_buckets: vec![1],
            ..Default::default()
        };
        let snapshot = ksight_engine::Snapshot {
            cgroups: vec![
                cgroup(1, pod("web-1")),
                cgroup(2, pod("both-1")),
                cgroup(
                    3,
                    ksight_attribution::CgroupLabels {
                        unit: "nginx.service".into(),
                        ..Default::default()
                    },
                ),
            ],
            http: ksight_engine::snapshot::HttpSummary {
                requests: vec![
                    request(1, "server"),
                    request(1, "client"),
                    request(2, "server"),
                    request(3, "server"),
                ],
            },
            redis: ksight_engine::snapshot::RedisSummary {
                commands: vec![CommandRow {
                    role: "server".into(),
                    command: "GET".into(),
                    count: 2,
                    errors: 1,
                    error_codes: [("ERR".to_string(), 1)].into(),
                    cgroup_id: 2,
                    latency_buckets: vec![2],
                    ..Default::default()
                }],
            },
            ..Default::default()
        };
        let names = crate::view::TestCluster::backing(&[
            ("shop/web-1", &["web"]),
            ("shop/both-1", &["web", "api"]),
        ]);
        let (view, _) = Exporter::new().update_resolving(
            &snapshot,
            &CgroupTree::default(),
            0,
            &ExportSettings::default(),
            AgentMeta::default(),
            Some(&names),
        );
        let text = encode(Arc::new(view), OwnUsage::default());
        let get = r#"method="GET",route="/",status="200""#;
        let web = r#"cgroup_id="1",namespace="shop",pod="web-1",service="web""#;
        has(
            &text,
            &format!(
                r#"ksight_http_requests_total{{{web},protocol="http",role="server",{get}}} 1"#
            ),
        );
        has(
            &text,
            &format!(
                r#"ksight_http_request_duration_seconds_count{{{web},protocol="http",role="server",{get}}} 1"#
            ),
        );
        has(
            &text,
            &format!(
                r#"ksight_http_requests_total{{cgroup_id="1",namespace="shop",pod="web-1",protocol="http",role="client",{get}}} 1"#
            ),
        );
        let both = r#"cgroup_id="2",namespace="shop",pod="both-1",service="api,web""#;
        has(
            &text,
            &format!(
                r#"ksight_http_requests_total{{{both},protocol="http",role="server",{get}}} 1"#
            ),
        );
        has(
            &text,
            &format!(
                r#"ksight_http_requests_total{{cgroup_id="3",unit="nginx.service",protocol="http",role="server",{get}}} 1"#
            ),
        );
        has(
            &text,
            &format!(r#"ksight_redis_commands_total{{{both},role="server",command="GET"}} 2"#),
        );
        has(
            &text,
            &format!(
                r#"ksight_redis_command_errors_total{{{both},role="server",command="GET",code="ERR"}} 1"#
            ),
        );
        has(
            &text,
            &format!(
                r#"ksight_redis_command_duration_seconds_count{{{both},role="server",command="GET"}} 2"#
            ),
        );
        for line in samples(&text) {
            let client_or_no_pod =
                line.contains(r#"role="client""#) || line.contains(r#"cgroup_id="3""#);
            assert!(!(client_or_no_pod && line.contains("service=")), "{line}");
        }
    }
}
