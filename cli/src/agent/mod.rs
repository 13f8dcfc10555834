//! `ksight agent`: the long-running daemon.
//!
//! One engine, fed by the reader threads of the chosen backend, keeps cumulative
//! aggregates for the agent's whole life: counters never reset, not even on reload. Once
//! a tick the main loop takes a snapshot, publishes it — as the Prometheus view and as the
//! socket's snapshot — and lets the engine forget the processes and connections that
//! snapshot showed finished, so memory stays bounded. The HTTP and socket threads only read
//! the last publication.
//!
//! Signals: SIGHUP reloads the configuration (an invalid file is refused and the running
//! configuration kept); SIGTERM and SIGINT stop the readers, drop the backend (which
//! detaches every probe) and exit 0.

pub mod choose;
pub mod client;
pub mod config;
#[cfg(test)]
mod daemonset;
mod host;
mod http;
mod log;
pub mod probe;
mod socket;

use anyhow::{Result, anyhow};
use config::Config;
use ksight_attribution::cgroups::{CgroupPaths, cgroup2_mount, check_cgroup2_root};
use ksight_attribution::kube::{self, KubeMetadata, KubeSettings};
use ksight_attribution::{Attributor, attribute};
use ksight_engine::names::HostNames;
use ksight_engine::source::CgroupFilter;
use ksight_engine::{Capture, Engine, Pumped};
use ksight_export::protocol::AgentSnapshot;
use ksight_export::{
    AgentMeta, ClusterNames, ExportSettings, ExportView, Exporter, MetadataStatus, ServerName,
};
use log::{debug, error, info, warning};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// `ksight agent [--config PATH]`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Configuration file (TOML; see packaging/ksight.toml for every key). Without it:
    /// /etc/ksight/ksight.toml when it exists, else the built-in defaults (the values of
    /// packaging/ksight.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// How often aggregates are published to scrapes and socket clients.
const TICK: Duration = Duration::from_secs(1);
/// Until the first events are published (at most `EAGER_FOR` after start), ticks come
/// this often, so the first events show within milliseconds of the backend attaching.
const EAGER_TICK: Duration = Duration::from_millis(50);
const EAGER_FOR: Duration = Duration::from_secs(3);
/// How often the cgroup tree is re-read (sooner when unknown cgroups show up).
const CGROUP_REFRESH: Duration = Duration::from_secs(10);

/// What the HTTP and socket threads serve: replaced whole at each tick.
#[derive(Clone, Default)]
pub struct Published {
    pub view: Arc<ExportView>,
    pub agent: Arc<AgentSnapshot>,
}

#[derive(Default)]
pub struct Shared {
    published: Mutex<Published>,
}

impl Shared {
    pub fn published(&self) -> Published {
        self.published.lock().expect("publisher panicked").clone()
    }

    fn publish(&self, p: Published) {
        *self.published.lock().expect("publisher panicked") = p;
    }
}

/// SIGHUP asks for a reload (SIGINT and SIGTERM stop the capture: [`Capture::stop_on_signals`]).
fn reload_on_hup() -> Result<Arc<AtomicBool>> {
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;
    Ok(reload)
}

/// Tells systemd (`Type=notify`) about our state; nothing when not started by it.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        debug!("sd_notify {state:?}: {e}");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd 253 and later expect beside it.
fn notify_reloading() {
    use sd_notify::NotifyState;
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The engine's record filter for the enabled signals: records of disabled ones are
/// dropped before they are decoded.
fn kind_filter(signals: ksight_export::Signals) -> Option<Box<dyn Fn(u16) -> bool + Send>> {
    (!signals.all()).then(|| Box::new(move |kind| signals.wants_kind(kind)) as Box<_>)
}

/// The switches `wanted` turns on whose probes were not attached at start.
fn unattached_signals(
    attached: ksight_export::Signals,
    wanted: ksight_export::Signals,
) -> Vec<&'static str> {
    event_abi::SIGNALS
        .iter()
        .filter(|s| s.signal == s.records_of)
        .filter(|s| wanted.wants(s.signal) && !attached.wants(s.signal))
        .map(|s| s.name)
        .collect()
}

struct Agent {
    /// `--config`; None: the default path or the built-in defaults, decided at each load.
    config_path: Option<PathBuf>,
    /// The signals whose programs or probes were attached at start.
    attached: ksight_export::Signals,
    config: Config,
    settings: ExportSettings,
    shared: Arc<Shared>,
    http: Option<http::HttpServer>,
    socket: Option<socket::SocketServer>,
    capture: Capture,
    exporter: Exporter,
    names: HostNames,
    attributor: Attributor,
    /// Whether Kubernetes names were asked for (a watcher that failed to start is a gap).
    kube_wanted: bool,
    tree_read: Instant,
    /// Pushes the ignore set into the kernel, when the backend can.
    kernel_filter: Option<Arc<dyn CgroupFilter>>,
    /// `Attributor::version` the ignore set was computed at, and the set (sorted).
    ignore_version: Option<u64>,
    ignored: Vec<u64>,
    backend: String,
    backend_reason: String,
    fidelity_notes: Vec<String>,
    signals: Vec<ksight_engine::signals::SignalStatus>,
    started_unix_s: f64,
    started: Instant,
    last_tick: Instant,
    next_tick: Instant,
    records_at_tick: u64,
    reloads_succeeded: u64,
    reloads_failed: u64,
}

/// The exporter's view of the Kubernetes metadata, when the agent watches it (without it,
/// nothing is named).
struct Cluster<'a>(Option<&'a KubeMetadata>);

impl ClusterNames for Cluster<'_> {
    fn server(&self, ip: std::net::IpAddr, port: u16) -> Option<ServerName> {
        let e = self.0?.endpoint(ip, port)?;
        (!e.ignored).then_some(ServerName {
            namespace: e.namespace,
            service: e.service,
            pod: e.pod,
        })
    }

    fn services_of_pod(&self, namespace: &str, pod: &str) -> Vec<String> {
        self.0
            .map(|k| k.services_of_pod(namespace, pod))
            .unwrap_or_default()
    }
}

/// Starts watching this node's pods. Trouble reaching the API server later is no error:
/// it shows in the metadata metrics while capture goes on.
fn start_kube(c: &config::Kubernetes) -> Option<KubeMetadata> {
    let Some(node) = c.node() else {
        error!(
            "kubernetes: no node name (set NODE_NAME or kubernetes.node_name); pods are not named"
        );
        return None;
    };
    let mut settings = KubeSettings::new(node.clone());
    settings.api_server = (!c.api_server.is_empty()).then(|| c.api_server.clone());
    match kube::spawn(settings) {
        Ok(k) => {
            info!("kubernetes: watching the pods of node {node}");
            Some(k)
        }
        Err(e) => {
            error!("{e}; pods are not named");
            None
        }
    }
}

/// Starts the exporters a configuration asks for.
fn start_http(c: &Config, shared: &Arc<Shared>) -> Result<Option<http::HttpServer>> {
    c.prometheus
        .enabled
        .then(|| http::HttpServer::start(c.prometheus.listen.0, shared.clone()))
        .transpose()
}

fn start_socket(c: &Config, shared: &Arc<Shared>) -> Result<Option<socket::SocketServer>> {
    c.socket
        .enabled
        .then(|| socket::SocketServer::start(&c.socket.path.0, shared.clone()))
        .transpose()
}

/// `config_path`: the file named with `--config`; without it, the default path when that
/// file exists, else the built-in defaults.
pub fn run(config_path: &Option<PathBuf>) -> Result<u8> {
    let (config, origin) =
        config::load_agent(config_path.as_deref()).map_err(|e| anyhow!("{e}"))?;
    if let Some(root) = &config.cgroup_root {
        check_cgroup2_root(&root.0).map_err(|e| anyhow!("{origin}: key `cgroup_root`: {e}"))?;
    }
    log::set_level(config.log_level);
    let reload = reload_on_hup()?;
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    info!(
        "ksight {} starting with {origin}",
        env!("CARGO_PKG_VERSION")
    );

    // Listeners first: a port in use fails the start before any probe is loaded.
    let shared = Arc::new(Shared::default());
    let http = start_http(&config, &shared)?;
    let socket = start_socket(&config, &shared)?;

    // Disabled signals' programs and probes are not attached at all.
    let attached = config.export_settings().signals;
    let mut host = probe::HostProbe::default();
    host.capture.snaplen = config.snaplen.0;
    host.capture.kinds = attached.kinds_mask();
    let chosen =
        choose::choose(config.backend, config.transport, &mut host).map_err(|e| anyhow!("{e}"))?;
    let transport = match chosen.transport {
        Some(crate::args::TransportChoice::Perf) => " over the perf event array",
        Some(_) => " over the BPF ring buffer",
        None => "",
    };
    info!(
        "backend {}{transport}: {}",
        chosen.backend.name(),
        chosen.reason
    );
    for note in &chosen.notes {
        info!("note: {note}");
    }
    let mut opened = chosen.source;
    let kernel_filter = opened.source.cgroup_filter();
    let cgroup_root = config
        .cgroup_root
        .as_ref()
        .map(|p| p.0.clone())
        .or_else(cgroup2_mount);
    match &cgroup_root {
        Some(root) => info!("cgroup hierarchy at {}", root.display()),
        None => warning!("no cgroup v2 hierarchy found: cgroups are labelled by id only"),
    }
    let kube_wanted = config
        .kubernetes
        .wanted(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some());
    let kube = kube_wanted
        .then(|| start_kube(&config.kubernetes))
        .flatten();
    let mut paths = CgroupPaths::new(cgroup_root);
    // A cgroup's events usually arrive right after it was made: name it within a tick or
    // two (a walk of a node's tree takes milliseconds), yet never walk more than twice a
    // second however many new ids show up.
    paths.set_min_rewalk(Duration::from_millis(500));
    let attributor = Attributor::new(paths, kube, config.filters.containers());
    // Opening parsed the kernel's BTF and the programs' object: tens of MiB, freed but
    // still held by the allocator. Give them back before settling down for days.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    for note in &opened.fidelity_notes {
        info!("signal {note}");
    }
    let backend = opened.source.name().to_string();
    let settings = config.export_settings();
    let mut engine = Engine::new(&backend, None);
    engine.keep_kinds(kind_filter(settings.signals));
    let capture = Capture::single(opened.source, engine).stop_on_signals()?;
    let mut agent = Agent {
        config_path: config_path.clone(),
        attached,
        settings,
        shared,
        http,
        socket,
        capture,
        exporter: Exporter::new(),
        names: HostNames { live: true },
        attributor,
        kube_wanted,
        tree_read: Instant::now(),
        kernel_filter,
        ignore_version: None,
        ignored: Vec::new(),
        backend,
        backend_reason: chosen.reason,
        signals: opened.signals.clone(),
        fidelity_notes: opened
            .fidelity_notes
            .iter()
            .chain(&chosen.notes)
            .cloned()
            .collect(),
        started_unix_s,
        started,
        last_tick: Instant::now(),
        next_tick: Instant::now(),
        records_at_tick: 0,
        reloads_succeeded: 0,
        reloads_failed: 0,
        config,
    };
    agent.tick();
    if let Some(h) = &agent.http {
        info!("serving Prometheus metrics on http://{}/metrics", h.addr);
    }
    if let Some(s) = &agent.socket {
        info!("serving snapshots on {}", s.path.display());
    }
    notify(&[sd_notify::NotifyState::Ready]);
    info!(
        "running; backend attached {} ms after start",
        started.elapsed().as_millis()
    );

    let mut failure = None;
    loop {
        if reload.swap(false, Ordering::SeqCst) {
            notify_reloading();
            agent.reload();
            notify(&[sd_notify::NotifyState::Ready]);
        }
        let until = agent
            .next_tick
            .min(Instant::now() + Duration::from_millis(50));
        match agent.capture.pump(until) {
            Ok(Pumped::Deadline) => {}
            Ok(Pumped::Stopped) => break,
            Ok(Pumped::Finished) => {
                failure = Some(anyhow!(
                    "the {} backend stopped delivering events",
                    agent.backend
                ));
                break;
            }
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
        if Instant::now() >= agent.next_tick {
            agent.tick();
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    info!("stopping: detaching the probes");
    // Dropping the capture stops the readers and drops the sources, which detaches every
    // program (eBPF) or closes the device (module); then the listeners close.
    drop(agent);
    if let Some(e) = failure {
        error!("{e:#}");
        return Err(e);
    }
    info!("stopped");
    Ok(0)
}

impl Agent {
    /// Re-reads the cgroup tree now and then, so removed cgroups are noticed (new ones are
    /// read on the first event that names them).
    fn refresh_tree(&mut self) {
        if self.tree_read.elapsed() >= CGROUP_REFRESH {
            self.attributor.paths().refresh();
            self.tree_read = Instant::now();
        }
    }

    /// Recomputes the ignored cgroups when the tree, the metadata or the filters changed,
    /// and hands them to the engine and the kernel.
    fn update_ignore_set(&mut self) {
        let version = self.attributor.version();
        if self.ignore_version == Some(version) {
            return;
        }
        self.ignore_version = Some(version);
        let ids = self.attributor.ignored_ids();
        if ids == self.ignored {
            return;
        }
        debug!("{} cgroups ignored", ids.len());
        self.capture
            .engine_mut()
            .set_ignored_cgroups(ids.iter().copied());
        if let Some(filter) = &self.kernel_filter
            && let Err(e) = filter.set_ignored(&ids)
        {
            warning!(
                "cannot filter ignored cgroups in the kernel, dropping them in the engine: {e}"
            );
        }
        self.ignored = ids;
    }

    fn metadata_status(&self) -> Option<MetadataStatus> {
        if !self.kube_wanted {
            return None;
        }
        let h = self
            .attributor
            .kube()
            .map(KubeMetadata::health)
            .unwrap_or_default();
        Some(MetadataStatus {
            connected: h.connected,
            synced: h.synced,
            pods: h.pods as u64,
            errors: h.errors_total,
            relists: h.relists_total,
            last_event_unix_s: h.last_event_unix_s,
        })
    }

    /// Snapshot, publish, forget what finished.
    fn tick(&mut self) {
        let elapsed = self.last_tick.elapsed().as_secs_f64();
        self.last_tick = Instant::now();
        let eager = self.capture.engine().records == 0 && self.started.elapsed() < EAGER_FOR;
        self.next_tick = self.last_tick + if eager { EAGER_TICK } else { TICK };
        let mut snapshot = self.capture.engine_mut().snapshot(&self.names);
        self.capture.engine_mut().forget_finished();
        self.refresh_tree();
        attribute(&mut snapshot, &mut self.attributor);
        self.attributor.sweep();
        self.update_ignore_set();
        let pending_cgroups = snapshot
            .cgroups
            .iter()
            .filter(|c| c.attribution.as_ref().is_some_and(|a| a.pending))
            .count() as u64;
        let records = self.capture.engine().records;
        let meta = AgentMeta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            backend: self.backend.clone(),
            backend_reason: self.backend_reason.clone(),
            signals: probe::modes(&self.signals, &self.settings.signals),
            start_time_s: self.started_unix_s,
            events: records,
            events_per_second: if elapsed > 0.0 {
                records.saturating_sub(self.records_at_tick) as f64 / elapsed
            } else {
                0.0
            },
            late_events: self.capture.engine().late_events(),
            reloads_succeeded: self.reloads_succeeded,
            reloads_failed: self.reloads_failed,
            kubernetes: self.metadata_status(),
            pending_cgroups,
            ignored_cgroups: self.ignored.len() as u64,
            ignored_events_kernel: self.capture.engine().counters().filtered,
            ignored_events_engine: self.capture.engine().ignored_events(),
        };
        self.records_at_tick = records;
        let now_ms = self.started.elapsed().as_millis() as u64;
        // Remote ends of the service map named by the cluster's Services and pods, and
        // pods' server-side request series by the Services they back.
        let cluster = Cluster(self.attributor.kube());
        let (view, expired) = self.exporter.update_resolving(
            &snapshot,
            self.attributor.tree(),
            now_ms,
            &self.settings,
            meta,
            Some(&cluster),
        );
        if !expired.is_empty() {
            debug!(
                "forgetting {} cgroups gone for the grace period",
                expired.len()
            );
            self.capture.engine_mut().forget_cgroups(&expired);
        }
        let agent = AgentSnapshot {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            backend: self.backend.clone(),
            backend_reason: self.backend_reason.clone(),
            fidelity_notes: self.fidelity_notes.clone(),
            snapshot,
        };
        self.shared.publish(Published {
            view: Arc::new(view),
            agent: Arc::new(agent),
        });
    }

    /// SIGHUP: a valid configuration replaces the running one (listeners restarted only
    /// when their address changed); an invalid one is refused and the old one kept.
    fn reload(&mut self) {
        let (new, origin) = match config::load_agent(self.config_path.as_deref()) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.reloads_failed += 1;
                error!("reload refused, the running configuration stays: {e}");
                self.tick();
                return;
            }
        };
        let mut new = new;
        let mut applied = true;
        if (new.backend, new.transport) != (self.config.backend, self.config.transport) {
            warning!(
                "backend and transport changes take effect at restart; still running {}",
                self.backend
            );
            new.backend = self.config.backend;
            new.transport = self.config.transport;
        }
        if new.snaplen != self.config.snaplen {
            warning!(
                "snaplen changes take effect at restart; still copying {} bytes per socket call",
                self.config.snaplen.0
            );
            new.snaplen = self.config.snaplen;
        }
        let unattached = unattached_signals(self.attached, new.export_settings().signals);
        if !unattached.is_empty() {
            warning!(
                "signals {} were disabled at start: their probes attach at restart",
                unattached.join(", ")
            );
        }
        if new.prometheus.enabled != self.config.prometheus.enabled
            || new.prometheus.listen != self.config.prometheus.listen
        {
            match start_http(&new, &self.shared) {
                Ok(server) => {
                    self.http = server;
                    match &self.http {
                        Some(h) => info!("serving Prometheus metrics on http://{}/metrics", h.addr),
                        None => info!("Prometheus endpoint disabled"),
                    }
                }
                Err(e) => {
                    error!("{e:#}; keeping the running endpoint");
                    new.prometheus.enabled = self.config.prometheus.enabled;
                    new.prometheus.listen = self.config.prometheus.listen;
                    applied = false;
                }
            }
        }
        if new.socket != self.config.socket {
            // The old socket goes first when the path is the same one.
            if new.socket.path == self.config.socket.path {
                self.socket = None;
            }
            match start_socket(&new, &self.shared) {
                Ok(server) => {
                    self.socket = server;
                    match &self.socket {
                        Some(s) => info!("serving snapshots on {}", s.path.display()),
                        None => info!("snapshot socket disabled"),
                    }
                }
                Err(e) => {
                    error!("{e:#}; the snapshot socket stays as it was");
                    new.socket = self.config.socket.clone();
                    applied = false;
                }
            }
        }
        log::set_level(new.log_level);
        if new.filters != self.config.filters {
            self.attributor.set_filters(new.filters.containers());
        }
        if new.kubernetes != self.config.kubernetes || new.cgroup_root != self.config.cgroup_root {
            warning!("kubernetes and cgroup_root changes take effect at restart");
            // What runs stays what is compared with, so the next reload warns again.
            new.kubernetes = self.config.kubernetes.clone();
            new.cgroup_root = self.config.cgroup_root.clone();
        }
        self.settings = new.export_settings();
        self.capture
            .engine_mut()
            .keep_kinds(kind_filter(self.settings.signals));
        self.config = new;
        if applied {
            self.reloads_succeeded += 1;
            info!("configuration reloaded from {origin}");
        } else {
            self.reloads_failed += 1;
        }
        self.tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_abi::kind;
    use ksight_engine::synthetic::Synth;
    use ksight_export::Signals;

    #[test]
    fn disabled_signals_are_filtered_before_the_engine() {
        let mut s = Synth::new();
        s.exec(1, 0, 5, "/bin/true");
        s.tcp_event(kind::TCP_RETRANSMIT, 1, 5, 0, 5);
        s.block_io(1, 5, 7 << 20, 0, 512, event_abi::block_op::READ, 10);
        s.batch.push(&[1, 2, 3]);
        let only_tcp = Signals {
            process: false,
            tcp: true,
            block: false,
            socket_io: false,
        };
        let mut engine = Engine::new("test", None);
        engine.keep_kinds(kind_filter(only_tcp));
        engine.ingest(&s.batch);
        // The retransmit, and the short garbage record (counted as malformed).
        assert_eq!((engine.records, engine.malformed), (1, 1));
        assert!(kind_filter(Signals::default()).is_none());
    }

    #[test]
    fn signals_turned_on_after_start_are_named() {
        let off = Signals {
            socket_io: false,
            block: false,
            ..Signals::default()
        };
        assert_eq!(
            unattached_signals(off, Signals::default()),
            ["block", "socket_io"]
        );
        assert!(unattached_signals(Signals::default(), off).is_empty());
    }
}
