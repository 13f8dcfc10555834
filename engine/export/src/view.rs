//! From the engine's cumulative snapshots to what a scrape encodes.
//!
//! The agent's engine never resets its counters; each tick it takes a snapshot, hands it
//! to [`Exporter::update`], and forgets the processes and connections that snapshot listed
//! as finished ([`ksight_engine::Engine::forget_finished`]). The exporter then:
//!
//! - keeps series by cgroup, never by pid, and drops those of cgroups that no longer exist
//!   once they have been gone for the grace period (and tells the caller, so the engine
//!   forgets them too);
//! - keeps the N largest connections that closed within a sliding window, so per-connection
//!   series stay bounded;
//! - applies the signals and filters of the configuration, which a reload may change at
//!   any time without touching the aggregates.

use event_abi::kinds;
pub use ksight_attribution::cgroups::CgroupTree;
use ksight_engine::signals::{Family, Mode, Signal, SignalStatus};
use ksight_engine::snapshot::{CgroupRow, ConnectionRow, DeviceRow, Snapshot};
use std::collections::HashMap;

/// Which signals are captured and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// exec, fork, exit.
    pub process: bool,
    /// TCP lifecycle, bytes, retransmits and resets.
    pub tcp: bool,
    /// Block I/O.
    pub block: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            process: true,
            tcp: true,
            block: true,
        }
    }
}

impl Signals {
    pub fn all(&self) -> bool {
        self.process && self.tcp && self.block
    }

    /// Whether the configuration switch of this family is on.
    pub fn wants_family(&self, family: Family) -> bool {
        match family {
            Family::Process => self.process,
            Family::Tcp => self.tcp,
            Family::Block => self.block,
        }
    }

    /// Whether this signal is enabled (its family's switch, from the table of kinds).
    pub fn wants(&self, signal: Signal) -> bool {
        self.wants_family(signal.family())
    }

    /// Each signal's mode under a configuration: the backend's fidelity, or
    /// [`Mode::Disabled`] when the configuration turns the signal off. Every signal of the
    /// table is listed, in report order; one the backend did not report is unavailable.
    pub fn modes(&self, statuses: &[SignalStatus]) -> Vec<(Signal, Mode)> {
        Signal::ALL
            .iter()
            .map(|&signal| {
                let mode = if !self.wants(signal) {
                    Mode::Disabled
                } else {
                    statuses
                        .iter()
                        .find(|s| s.signal == signal)
                        .map_or(Mode::Unavailable, |s| s.status.mode())
                };
                (signal, mode)
            })
            .collect()
    }

    /// Whether records of this event-abi kind belong to an enabled signal (the kind's row
    /// in `event_abi::kinds::KINDS` says which). Unknown kinds pass, so the engine still
    /// counts them as malformed.
    pub fn wants_kind(&self, k: u16) -> bool {
        kinds::signal(k).is_none_or(|s| self.wants(s))
    }

    /// Whether the signal of this name (as fidelity reports name them: "process", "tcp",
    /// "tcp_close_stats", "tcp_retransmits", "tcp_resets", "block") is enabled. Names not in
    /// the table pass.
    pub fn wants_signal(&self, signal: &str) -> bool {
        Signal::from_name(signal).is_none_or(|s| self.wants(s))
    }
}

/// What to export; every field may change on a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    pub signals: Signals,
    /// cgroup paths (relative to the cgroup v2 mount, starting with `/`) whose series are
    /// exported, with everything below them; empty: all cgroups.
    pub include_cgroups: Vec<String>,
    /// cgroup paths not exported, with everything below them.
    pub exclude_cgroups: Vec<String>,
    /// Block devices whose name starts with one of these are not exported ("loop", "ram").
    pub exclude_devices: Vec<String>,
    /// How many per-connection series: the largest connections (bytes sent + received)
    /// that closed within `connection_window_ms`.
    pub top_connections: usize,
    pub connection_window_ms: u64,
    /// How long a cgroup's series outlive the cgroup.
    pub cgroup_grace_ms: u64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            signals: Signals::default(),
            include_cgroups: Vec::new(),
            exclude_cgroups: Vec::new(),
            exclude_devices: Vec::new(),
            top_connections: 10,
            connection_window_ms: 60_000,
            cgroup_grace_ms: 300_000,
        }
    }
}

/// Whether `path` is `prefix` or lies below it.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
}

impl ExportSettings {
    /// Whether a cgroup (with its path, if known) passes the filters.
    pub fn wants_cgroup(&self, path: Option<&str>) -> bool {
        let included = self.include_cgroups.is_empty()
            || path.is_some_and(|p| self.include_cgroups.iter().any(|i| under(p, i)));
        let excluded = path.is_some_and(|p| self.exclude_cgroups.iter().any(|e| under(p, e)));
        included && !excluded
    }

    pub fn wants_device(&self, d: &DeviceRow) -> bool {
        let name = if d.name.is_empty() { &d.dev } else { &d.name };
        !self
            .exclude_devices
            .iter()
            .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
    }
}

/// Facts about the agent itself, exported next to the aggregates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentMeta {
    pub version: String,
    /// "ebpf" or "kmod".
    pub backend: String,
    /// Why that backend (the auto-detection's verdict, or "configured").
    pub backend_reason: String,
    /// Each signal's mode (full, degraded, unavailable, or disabled by the configuration),
    /// from the backend's typed fidelity ([`Signals::modes`]).
    pub signals: Vec<(Signal, Mode)>,
    /// Unix time the agent started, in seconds.
    pub start_time_s: f64,
    /// Records decoded since start.
    pub events: u64,
    /// Records decoded per second over the last tick.
    pub events_per_second: f64,
    /// Records that arrived after the reorder window had passed them.
    pub late_events: u64,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// Kubernetes metadata, when the agent watches the API server.
    pub kubernetes: Option<MetadataStatus>,
    /// Exported cgroups of Kubernetes pods whose metadata has not arrived.
    pub pending_cgroups: u64,
    /// cgroups currently ignored (filters, `ksight.io/ignore`), and events dropped for them
    /// by the kernel and by the engine.
    pub ignored_cgroups: u64,
    pub ignored_events_kernel: u64,
    pub ignored_events_engine: u64,
}

/// The state of the Kubernetes metadata watch: what makes a metadata gap visible.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataStatus {
    /// The last request to the API server succeeded and the watch is open.
    pub connected: bool,
    /// The first list of this node's pods completed.
    pub synced: bool,
    pub pods: u64,
    pub errors: u64,
    pub relists: u64,
    /// Unix time of the last event or list received.
    pub last_event_unix_s: Option<f64>,
}

/// One exported cgroup: its counters and, when the cgroup still exists, its path.
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupSeries {
    pub row: CgroupRow,
    pub path: Option<String>,
}

/// Everything one scrape encodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportView {
    pub meta: AgentMeta,
    pub signals: Signals,
    /// The snapshot's host-wide figures (its lists are emptied: see the fields below).
    pub totals: Snapshot,
    pub cgroups: Vec<CgroupSeries>,
    pub devices: Vec<DeviceRow>,
    /// The top-N connections, largest first.
    pub connections: Vec<ConnectionRow>,
}

/// State kept between ticks: when cgroups disappeared, recently closed connections.
#[derive(Debug, Default)]
pub struct Exporter {
    gone_since_ms: HashMap<u64, u64>,
    /// Closed connections that may still make the top N: (tick time, connection).
    recent: Vec<(u64, ConnectionRow)>,
}

fn connection_bytes(c: &ConnectionRow) -> u64 {
    c.bytes_sent
        .unwrap_or(0)
        .saturating_add(c.bytes_received.unwrap_or(0))
}

impl Exporter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the view of `snapshot` (cumulative, from an engine that forgets finished
    /// processes and connections after each snapshot) at time `now_ms` (any monotonic
    /// clock). Returns the view and the cgroups gone for longer than the grace period,
    /// which the engine should forget.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        tree: &CgroupTree,
        now_ms: u64,
        settings: &ExportSettings,
        meta: AgentMeta,
    ) -> (ExportView, Vec<u64>) {
        // Cgroups that disappeared: hidden, and forgotten, once past the grace period.
        let mut expired = Vec::new();
        let mut cgroups = Vec::new();
        for row in &snapshot.cgroups {
            let id = row.cgroup_id;
            let path = tree.paths.get(&id).cloned();
            // Id 0 is what records carry when no cgroup applies; it never disappears.
            if path.is_none() && tree.complete && id != 0 {
                let since = *self.gone_since_ms.entry(id).or_insert(now_ms);
                if now_ms.saturating_sub(since) >= settings.cgroup_grace_ms {
                    expired.push(id);
                    continue;
                }
            } else {
                self.gone_since_ms.remove(&id);
            }
            // Ignored cgroups: events from before the ignore set reached the kernel.
            let ignored = row.attribution.as_ref().is_some_and(|a| a.ignored);
            if settings.wants_cgroup(path.as_deref()) && !ignored {
                cgroups.push(CgroupSeries {
                    row: row.clone(),
                    path,
                });
            }
        }
        for id in &expired {
            self.gone_since_ms.remove(id);
        }
        if !expired.is_empty() {
            self.recent.retain(|(_, c)| !expired.contains(&c.cgroup_id));
        }
        // Cgroups the engine no longer reports need no tracking.
        if self.gone_since_ms.len() > snapshot.cgroups.len() {
            let listed: std::collections::HashSet<u64> =
                snapshot.cgroups.iter().map(|c| c.cgroup_id).collect();
            self.gone_since_ms.retain(|id, _| listed.contains(id));
        }

        let devices = snapshot
            .block
            .devices
            .iter()
            .filter(|d| settings.wants_device(d))
            .cloned()
            .collect();

        let connections = self.top_connections(snapshot, tree, now_ms, settings);

        let mut totals = snapshot.clone();
        totals.process.processes = Vec::new();
        totals.tcp.connections = Vec::new();
        totals.block.devices = Vec::new();
        totals.cgroups = Vec::new();

        let view = ExportView {
            meta,
            signals: settings.signals,
            totals,
            cgroups,
            devices,
            connections,
        };
        (view, expired)
    }

    fn top_connections(
        &mut self,
        snapshot: &Snapshot,
        tree: &CgroupTree,
        now_ms: u64,
        settings: &ExportSettings,
    ) -> Vec<ConnectionRow> {
        let n = settings.top_connections;
        let by_size = |a: &(u64, ConnectionRow), b: &(u64, ConnectionRow)| {
            connection_bytes(&b.1)
                .cmp(&connection_bytes(&a.1))
                .then(b.0.cmp(&a.0))
        };
        // This tick's closed connections: only its N largest can ever make the top N.
        let mut fresh: Vec<(u64, ConnectionRow)> = snapshot
            .tcp
            .connections
            .iter()
            .filter(|c| c.state == "CLOSE" && connection_bytes(c) > 0)
            .map(|c| (now_ms, c.clone()))
            .collect();
        fresh.sort_by(by_size);
        fresh.truncate(n);
        self.recent.extend(fresh);
        self.recent
            .retain(|(t, _)| now_ms.saturating_sub(*t) <= settings.connection_window_ms);
        self.recent.sort_by(by_size);
        // Keep a connection only while fewer than N larger ones expire no earlier than it:
        // otherwise it can never be in the top N again.
        let mut kept: Vec<(u64, ConnectionRow)> = Vec::new();
        for entry in std::mem::take(&mut self.recent) {
            let outlasting = kept.iter().filter(|(t, _)| *t >= entry.0).count();
            if outlasting < n {
                kept.push(entry);
            }
        }
        self.recent = kept;
        self.recent
            .iter()
            .map(|(_, c)| c)
            .filter(|c| settings.wants_cgroup(tree.paths.get(&c.cgroup_id).map(String::as_str)))
            .take(n)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_abi::kind;

    fn tree(ids: &[(u64, &str)]) -> CgroupTree {
        CgroupTree {
            paths: ids.iter().map(|&(i, p)| (i, p.to_string())).collect(),
            complete: true,
        }
    }

    fn snapshot(cgroups: &[u64]) -> Snapshot {
        Snapshot {
            cgroups: cgroups
                .iter()
                .map(|&id| CgroupRow {
                    cgroup_id: id,
                    execs: id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ids(view: &ExportView) -> Vec<u64> {
        view.cgroups.iter().map(|c| c.row.cgroup_id).collect()
    }

    #[test]
    fn gone_cgroups_stay_for_the_grace_period_then_are_forgotten() {
        let settings = ExportSettings {
            cgroup_grace_ms: 1000,
            ..Default::default()
        };
        let mut ex = Exporter::new();
        let mut snap = snapshot(&[0, 5, 6]);
        let both = tree(&[(5, "/a"), (6, "/b")]);
        snap.tcp.connections = vec![ConnectionRow {
            cgroup_id: 6,
            state: "CLOSE".into(),
            bytes_sent: Some(10),
            ..Default::default()
        }];
        let (view, forget) = ex.update(&snap, &both, 0, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
        assert_eq!(view.connections.len(), 1);
        snap.tcp.connections.clear();
        assert_eq!(view.cgroups[1].path.as_deref(), Some("/a"));
        // 6 disappears at t=100: kept with no path until t=1100.
        let only5 = tree(&[(5, "/a")]);
        let (view, forget) = ex.update(&snap, &only5, 100, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
        assert_eq!(view.cgroups[2].path, None);
        let (view, forget) = ex.update(&snap, &only5, 1099, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
        let (view, forget) = ex.update(&snap, &only5, 1100, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5], vec![6]));
        assert!(view.connections.is_empty(), "its connections go with it");
        // A cgroup that comes back (or an id reused) within the grace period starts over.
        let (_, _) = ex.update(&snap, &only5, 1200, &settings, AgentMeta::default());
        let (view, forget) = ex.update(&snap, &both, 1300, &settings, AgentMeta::default());
        assert_eq!((ids(&view), forget), (vec![0, 5, 6], vec![]));
    }

    #[test]
    fn nothing_is_gone_when_the_tree_could_not_be_read() {
        let settings = ExportSettings {
            cgroup_grace_ms: 0,
            ..Default::default()
        };
        let mut ex = Exporter::new();
        let unknown = CgroupTree::default();
        let (view, forget) = ex.update(
            &snapshot(&[5]),
            &unknown,
            10,
            &settings,
            AgentMeta::default(),
        );
        assert_eq!((ids(&view), forget), (vec![5], vec![]));
    }

    #[test]
    fn filters_by_cgroup_path_and_device_name() {
        let settings = ExportSettings {
            include_cgroups: vec!["/system.slice".into()],
            exclude_cgroups: vec!["/system.slice/noisy.service/".into()],
            exclude_devices: vec!["loop".into()],
            ..Default::default()
        };
        assert!(settings.wants_cgroup(Some("/system.slice")));
        assert!(settings.wants_cgroup(Some("/system.slice/a.service")));
        assert!(!settings.wants_cgroup(Some("/system.slicex")));
        assert!(!settings.wants_cgroup(Some("/system.slice/noisy.service")));
        assert!(!settings.wants_cgroup(Some("/system.slice/noisy.service/x")));
        assert!(!settings.wants_cgroup(None));
        let all = ExportSettings::default();
        assert!(all.wants_cgroup(None) && all.wants_cgroup(Some("/")));
        let dev = |name: &str| DeviceRow {
            dev: "7:0".into(),
            name: name.into(),
            ..Default::default()
        };
        assert!(!settings.wants_device(&dev("loop0")));
        assert!(settings.wants_device(&dev("sda")));
        assert!(settings.wants_device(&dev("")));
    }

    fn conn(sport: u16, bytes: u64) -> ConnectionRow {
        ConnectionRow {
            sport,
            state: "CLOSE".into(),
            bytes_sent: Some(bytes),
            bytes_received: Some(0),
            ..Default::default()
        }
    }

    fn with_conns(conns: Vec<ConnectionRow>) -> Snapshot {
        let mut s = Snapshot::default();
        s.tcp.connections = conns;
        s
    }

    fn ports(view: &ExportView) -> Vec<u16> {
        view.connections.iter().map(|c| c.sport).collect()
    }

    #[test]
    fn top_connections_over_a_sliding_window() {
        let settings = ExportSettings {
            top_connections: 2,
            connection_window_ms: 1000,
            ..Default::default()
        };
        let t = CgroupTree::default();
        let mut ex = Exporter::new();
        let m = AgentMeta::default;
        // Open connections and zero-byte ones never count.
        let mut open = conn(9, 1 << 40);
        open.state = "ESTABLISHED".into();
        open.bytes_sent = None;
        let s = with_conns(vec![
            conn(1, 100),
            conn(2, 300),
            conn(3, 200),
            open,
            conn(4, 0),
        ]);
        let (v, _) = ex.update(&s, &t, 0, &settings, m());
        assert_eq!(ports(&v), [2, 3]);
        // Later, smaller connections wait behind the larger ones until those expire.
        let (v, _) = ex.update(
            &with_conns(vec![conn(5, 50), conn(6, 60)]),
            &t,
            500,
            &settings,
            m(),
        );
        assert_eq!(ports(&v), [2, 3]);
        let (v, _) = ex.update(&with_conns(vec![]), &t, 1001, &settings, m());
        assert_eq!(ports(&v), [6, 5]);
        let (v, _) = ex.update(&with_conns(vec![conn(7, 55)]), &t, 1200, &settings, m());
        assert_eq!(ports(&v), [6, 7]);
        let (v, _) = ex.update(&with_conns(vec![]), &t, 5000, &settings, m());
        assert!(v.connections.is_empty());
        // Memory stays bounded whatever the churn.
        for tick in 0..100u64 {
            let burst = (0..500)
                .map(|i| conn(i as u16, 1 + (i * 7919) % 1000))
                .collect();
            ex.update(&with_conns(burst), &t, 10_000 + tick * 10, &settings, m());
        }
        assert!(ex.recent.len() <= 2 * 101, "{}", ex.recent.len());
    }

    #[test]
    fn signals_select_record_kinds_and_fidelity_names() {
        let s = Signals {
            process: false,
            tcp: true,
            block: false,
        };
        assert!(!s.wants_kind(kind::EXEC) && !s.wants_kind(kind::EXIT));
        assert!(s.wants_kind(kind::TCP_STATE) && s.wants_kind(kind::TCP_RESET_RECEIVED));
        assert!(!s.wants_kind(kind::BLOCK_COMPLETE));
        assert!(s.wants_kind(999));
        assert!(s.wants_signal("tcp_close_stats") && !s.wants_signal("block"));
        assert!(s.wants_signal("tcp_resets") && !s.wants_signal("process"));
        assert!(s.wants_signal("sched"));
        // Every kind of the table belongs to exactly the family its signal names.
        for k in &event_abi::KINDS {
            assert_eq!(s.wants_kind(k.kind), s.wants(k.signal), "{}", k.name);
        }
        assert!(!s.all() && Signals::default().all());
    }

    #[test]
    fn modes_list_every_signal_and_the_disabled_ones() {
        let statuses = [SignalStatus {
            signal: Signal::Block,
            tracepoints: vec![],
            status: ksight_engine::signals::Fidelity::Degraded("x".into()),
        }];
        let off = Signals {
            tcp: false,
            ..Signals::default()
        };
        let m = off.modes(&statuses);
        assert_eq!(m.len(), Signal::ALL.len());
        assert_eq!(m[0], (Signal::Process, Mode::Unavailable));
        assert!(
            m.iter()
                .filter(|(s, _)| s.family() == Family::Tcp)
                .all(|(_, m)| *m == Mode::Disabled)
        );
        assert_eq!(m.last(), Some(&(Signal::Block, Mode::Degraded)));
    }
}
