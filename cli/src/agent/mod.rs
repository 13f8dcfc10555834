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

use anyhow::{Result, anyhow, bail};
use config::Config;
use crossbeam_channel::RecvTimeoutError;
use event_abi::EventHeader;
use ksight_engine::attribution::cgroups::{CgroupPaths, cgroup2_mount, check_cgroup2_root};
use ksight_engine::attribution::kube::{self, KubeMetadata, KubeSettings};
use ksight_engine::attribution::{Attributor, attribute};
use ksight_engine::export::protocol::AgentSnapshot;
use ksight_engine::export::{AgentMeta, ExportSettings, ExportView, Exporter, MetadataStatus};
use ksight_engine::names::HostNames;
use ksight_engine::pipeline::{Message, Readers};
use ksight_engine::source::CgroupFilter;
use ksight_engine::{Engine, RawBatch, monotonic_ns};
use log::{debug, error, info, warning};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// `ksight agent [--config PATH]`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Configuration file (TOML; see packaging/ksight.toml for every key).
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
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

static RELOAD: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    }
}

/// Tells systemd (`Type=notify`) about our state; nothing when not started by it.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        debug!("sd_notify {state}: {e}");
    }
}

/// Drops the records of disabled signals before the engine sees them.
fn filter_batch(batch: &RawBatch, signals: &ksight_engine::export::Signals) -> RawBatch {
    const KIND: usize = std::mem::offset_of!(EventHeader, kind);
    let mut out = RawBatch::new();
    for record in batch.iter() {
        let keep = record
            .get(KIND..KIND + 2)
            .is_none_or(|k| signals.wants_kind(u16::from_le_bytes([k[0], k[1]])));
        if keep {
            out.push(record);
        }
    }
    out
}

struct Agent {
    config_path: PathBuf,
    config: Config,
    settings: ExportSettings,
    shared: Arc<Shared>,
    http: Option<http::HttpServer>,
    socket: Option<socket::SocketServer>,
    engine: Engine,
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
    started_unix_s: f64,
    started: Instant,
    last_tick: Instant,
    next_tick: Instant,
    records_at_tick: u64,
    reloads_succeeded: u64,
    reloads_failed: u64,
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

pub fn run(config_path: &Path) -> Result<u8> {
    let config = config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    if let Some(root) = &config.cgroup_root {
        check_cgroup2_root(&root.0)
            .map_err(|e| anyhow!("{}: key `cgroup_root`: {e}", config_path.display()))?;
    }
    log::set_level(config.log_level);
    install_signal_handlers();
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    info!(
        "ksight {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        config_path.display()
    );

    // Listeners first: a port in use fails the start before any probe is loaded.
    let shared = Arc::new(Shared::default());
    let http = start_http(&config, &shared)?;
    let socket = start_socket(&config, &shared)?;

    let chosen = choose::choose(config.backend, config.transport, &mut probe::HostProbe)
        .map_err(|e| anyhow!("{e}"))?;
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
    let readers = Readers::spawn(vec![opened.source]);
    let settings = config.export_settings();
    let mut agent = Agent {
        config_path: config_path.to_path_buf(),
        settings,
        shared,
        http,
        socket,
        engine: Engine::new(&backend, None),
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
    notify("READY=1");
    info!(
        "running; backend attached {} ms after start",
        started.elapsed().as_millis()
    );

    let rx = readers.receiver().clone();
    let mut failure = None;
    while !STOP.load(Ordering::SeqCst) {
        if RELOAD.swap(false, Ordering::SeqCst) {
            notify("RELOADING=1");
            agent.reload();
            notify("READY=1");
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => {
                if let Err(e) = agent.handle(m) {
                    failure = Some(e);
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                failure = Some(anyhow!("the event readers stopped"));
                break;
            }
        }
        agent.engine.advance(Some(monotonic_ns()));
        if Instant::now() >= agent.next_tick {
            agent.tick();
        }
    }
    notify("STOPPING=1");
    info!("stopping: detaching the probes");
    // Dropping the sources detaches every program (eBPF) or closes the device (module).
    let sources = readers.stop(|m| {
        let _ = agent.handle(m);
    });
    drop(sources);
    drop(agent.http.take());
    drop(agent.socket.take());
    if let Some(e) = failure {
        error!("{e:#}");
        return Err(e);
    }
    info!("stopped");
    Ok(0)
}

impl Agent {
    fn handle(&mut self, m: Message) -> Result<()> {
        match m {
            Message::Batch { batch, .. } => {
                if self.settings.signals.all() {
                    self.engine.ingest(&batch);
                } else {
                    self.engine
                        .ingest(&filter_batch(&batch, &self.settings.signals));
                }
            }
            Message::Counters { counters, .. } => self.engine.set_counters(counters),
            Message::Finished { .. } => {
                bail!("the {} backend stopped delivering events", self.backend)
            }
            Message::Failed { error, .. } => return Err(error.into()),
        }
        Ok(())
    }

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
        self.engine.set_ignored_cgroups(ids.iter().copied());
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
        let eager = self.engine.records == 0 && self.started.elapsed() < EAGER_FOR;
        self.next_tick = self.last_tick + if eager { EAGER_TICK } else { TICK };
        let mut snapshot = self.engine.snapshot(&self.names);
        self.engine.forget_finished();
        self.refresh_tree();
        attribute(&mut snapshot, &mut self.attributor);
        self.attributor.sweep();
        self.update_ignore_set();
        let pending_cgroups = snapshot
            .cgroups
            .iter()
            .filter(|c| c.attribution.as_ref().is_some_and(|a| a.pending))
            .count() as u64;
        let records = self.engine.records;
        let meta = AgentMeta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            backend: self.backend.clone(),
            backend_reason: self.backend_reason.clone(),
            signals: probe::signal_modes(
                &probe::SIGNALS,
                &self.fidelity_notes,
                &self.settings.signals,
            ),
            start_time_s: self.started_unix_s,
            events: records,
            events_per_second: if elapsed > 0.0 {
                records.saturating_sub(self.records_at_tick) as f64 / elapsed
            } else {
                0.0
            },
            late_events: self.engine.late_events(),
            reloads_succeeded: self.reloads_succeeded,
            reloads_failed: self.reloads_failed,
            kubernetes: self.metadata_status(),
            pending_cgroups,
            ignored_cgroups: self.ignored.len() as u64,
            ignored_events_kernel: self.engine.counters().filtered,
            ignored_events_engine: self.engine.ignored_events(),
        };
        self.records_at_tick = records;
        let now_ms = self.started.elapsed().as_millis() as u64;
        let (view, expired) = self.exporter.update(
            &snapshot,
            self.attributor.tree(),
            now_ms,
            &self.settings,
            meta,
        );
        if !expired.is_empty() {
            debug!(
                "forgetting {} cgroups gone for the grace period",
                expired.len()
            );
            self.engine.forget_cgroups(&expired);
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
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
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
        self.config = new;
        if applied {
            self.reloads_succeeded += 1;
            info!("configuration reloaded from {}", self.config_path.display());
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
    use ksight_engine::export::Signals;
    use ksight_engine::synthetic::Synth;

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
        };
        let out = filter_batch(&s.batch, &only_tcp);
        // The retransmit, and the short garbage record (left for the engine to count).
        assert_eq!(out.len(), 2);
        assert_eq!(
            filter_batch(&s.batch, &Signals::default()).len(),
            s.batch.len()
        );
    }
}
