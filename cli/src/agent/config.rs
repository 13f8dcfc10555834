//! The agent's configuration file (TOML). Every key is optional; unknown keys, wrong types
//! and out-of-range values are refused with the file, line, column and dotted key.
//! `packaging/ksight.toml` is the documented default.

use crate::args::{BackendChoice, TransportChoice};
use ksight_export::{ExportSettings, Signals};
use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/ksight/ksight.toml";
/// The packaged default, shipped as /etc/ksight/ksight.toml and used by `ksight install`
/// when there is no configuration yet.
pub const DEFAULT_TOML: &str = include_str!("../../../packaging/ksight.toml");

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// "auto", "ebpf" or "kmod". Takes effect at start.
    #[serde(default = "auto_backend", deserialize_with = "backend")]
    pub backend: BackendChoice,
    /// eBPF transport: "auto", "ringbuf" or "perf". Takes effect at start.
    #[serde(default = "auto_transport", deserialize_with = "transport")]
    pub transport: TransportChoice,
    #[serde(default)]
    pub log_level: LogLevel,
    /// Where the host's cgroup v2 hierarchy is mounted; None: found in /proc/self/mountinfo.
    /// In a container, the host's must be mounted in (the DaemonSet uses
    /// /host/sys/fs/cgroup). Takes effect at start.
    #[serde(default)]
    pub cgroup_root: Option<AbsolutePath>,
    /// Payload bytes copied from each socket send/receive call, 1..=4096. Takes effect at
    /// start.
    #[serde(default)]
    pub snaplen: Snaplen,
    #[serde(default)]
    pub signals: SignalsConfig,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub prometheus: Prometheus,
    #[serde(default)]
    pub socket: Socket,
    #[serde(default)]
    pub kubernetes: Kubernetes,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            transport: TransportChoice::Auto,
            log_level: LogLevel::default(),
            cgroup_root: None,
            snaplen: Snaplen::default(),
            signals: SignalsConfig::default(),
            dns: Dns::default(),
            filters: Filters::default(),
            prometheus: Prometheus::default(),
            socket: Socket::default(),
            kubernetes: Kubernetes::default(),
        }
    }
}

fn auto_backend() -> BackendChoice {
    BackendChoice::Auto
}

fn auto_transport() -> TransportChoice {
    TransportChoice::Auto
}

fn backend<'de, D: Deserializer<'de>>(d: D) -> Result<BackendChoice, D::Error> {
    match String::deserialize(d)?.as_str() {
        "auto" => Ok(BackendChoice::Auto),
        "ebpf" => Ok(BackendChoice::Ebpf),
        "kmod" => Ok(BackendChoice::Kmod),
        other => Err(de::Error::invalid_value(
            de::Unexpected::Str(other),
            &r#""auto", "ebpf" or "kmod""#,
        )),
    }
}

fn transport<'de, D: Deserializer<'de>>(d: D) -> Result<TransportChoice, D::Error> {
    match String::deserialize(d)?.as_str() {
        "auto" => Ok(TransportChoice::Auto),
        "ringbuf" => Ok(TransportChoice::Ringbuf),
        "perf" => Ok(TransportChoice::Perf),
        other => Err(de::Error::invalid_value(
            de::Unexpected::Str(other),
            &r#""auto", "ringbuf" or "perf""#,
        )),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

/// Which signals are captured (records of a disabled signal are dropped before the engine)
/// and exported. Changes apply on reload; aggregates are kept.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    #[serde(default = "yes")]
    pub process: bool,
    #[serde(default = "yes")]
    pub tcp: bool,
    #[serde(default = "yes")]
    pub block: bool,
    #[serde(default = "yes")]
    pub socket_io: bool,
}

fn yes() -> bool {
    true
}

impl Default for SignalsConfig {
    fn default() -> Self {
        Self {
            process: true,
            tcp: true,
            block: true,
            socket_io: true,
        }
    }
}

/// `snaplen`: checked as `--snaplen` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snaplen(pub u32);

impl Default for Snaplen {
    fn default() -> Self {
        Self(crate::args::DEFAULT_SNAPLEN)
    }
}

impl<'de> Deserialize<'de> for Snaplen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match crate::args::snaplen_error(n) {
            Some(e) => Err(de::Error::custom(e)),
            None => Ok(Self(n as u32)),
        }
    }
}

/// DNS series in the metrics; applies on reload.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Series carry the qnames with the most queries, at most this many; the others are
    /// summed under qname "other".
    #[serde(default = "default_max_qnames")]
    pub max_qnames: Bounded<0, 10_000>,
}

fn default_max_qnames() -> Bounded<0, 10_000> {
    Bounded(100)
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            max_qnames: default_max_qnames(),
        }
    }
}

/// What is exported; applies on reload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// cgroup paths (under the cgroup v2 mount) whose series are exported, with their
    /// descendants; empty: all.
    #[serde(default)]
    pub cgroups: Vec<CgroupPath>,
    #[serde(default)]
    pub exclude_cgroups: Vec<CgroupPath>,
    /// Device name prefixes not exported, e.g. ["loop", "ram"].
    #[serde(default)]
    pub exclude_devices: Vec<String>,
    /// Kubernetes containers kept, as regexes over `namespace/pod/container` matched
    /// whole; empty: all. Others are ignored: dropped in the kernel where the backend can.
    #[serde(default)]
    pub containers: Vec<Pattern>,
    /// Kubernetes containers ignored, as above.
    #[serde(default)]
    pub exclude_containers: Vec<Pattern>,
}

impl Filters {
    /// The container filters, compiled (validated when the file was parsed).
    pub fn containers(&self) -> ksight_attribution::Filters {
        let strings = |v: &[Pattern]| v.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        ksight_attribution::Filters::new(
            &strings(&self.containers),
            &strings(&self.exclude_containers),
        )
        .expect("patterns are validated when the configuration is parsed")
    }
}

/// A regex over `namespace/pod/container`, checked when the file is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(pub String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ksight_attribution::Filters::new(std::slice::from_ref(&text), &[])
            .map_err(de::Error::custom)?;
        Ok(Self(text))
    }
}

/// Whether and how to name pods from the Kubernetes API. Takes effect at start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    #[serde(default)]
    pub enabled: KubernetesMode,
    /// This node's name; empty: `$NODE_NAME` (the DaemonSet sets it from `spec.nodeName`),
    /// else the host name.
    #[serde(default)]
    pub node_name: String,
    /// API server URL; empty: the pod's service account (in-cluster), else kubeconfig.
    #[serde(default)]
    pub api_server: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMode {
    /// On when running in a pod (`KUBERNETES_SERVICE_HOST` is set) or `api_server` is set.
    #[default]
    Auto,
    On,
    Off,
}

impl Kubernetes {
    /// Whether to watch the API server, given the environment's `KUBERNETES_SERVICE_HOST`.
    pub fn wanted(&self, in_cluster: bool) -> bool {
        match self.enabled {
            KubernetesMode::On => true,
            KubernetesMode::Off => false,
            KubernetesMode::Auto => in_cluster || !self.api_server.is_empty(),
        }
    }

    /// The node name to watch pods of.
    pub fn node(&self) -> Option<String> {
        if !self.node_name.is_empty() {
            return Some(self.node_name.clone());
        }
        if let Some(n) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
            return Some(n);
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: Listen,
    /// Per-connection series: the N largest connections closed within `connection_window`.
    #[serde(default = "default_top")]
    pub top_connections: Bounded<0, 1000>,
    #[serde(default = "default_window")]
    pub connection_window: DurationIn<1_000, 86_400_000>,
    /// How long the series of a cgroup that no longer exists are still exported.
    #[serde(default = "default_grace")]
    pub cgroup_grace_period: DurationIn<0, 604_800_000>,
}

fn default_listen() -> Listen {
    Listen("127.0.0.1:9464".parse().expect("valid address"))
}

fn default_top() -> Bounded<0, 1000> {
    Bounded(10)
}

fn default_window() -> DurationIn<1_000, 86_400_000> {
    DurationIn(Duration::from_secs(60))
}

fn default_grace() -> DurationIn<0, 604_800_000> {
    DurationIn(Duration::from_secs(300))
}

impl Default for Prometheus {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_listen(),
            top_connections: default_top(),
            connection_window: default_window(),
            cgroup_grace_period: default_grace(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Socket {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_socket")]
    pub path: AbsolutePath,
}

fn default_socket() -> AbsolutePath {
    AbsolutePath(PathBuf::from("/run/ksight/ksight.sock"))
}

impl Default for Socket {
    fn default() -> Self {
        Self {
            enabled: true,
            path: default_socket(),
        }
    }
}

/// A TCP listen address with a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let addr: SocketAddr = text.parse().map_err(|_| {
            de::Error::custom(format!(
                "\"{text}\" is not an address with a port, like \"127.0.0.1:9464\" or \"[::1]:9464\""
            ))
        })?;
        if addr.port() == 0 {
            return Err(de::Error::custom("port 0 is out of range 1..=65535"));
        }
        Ok(Self(addr))
    }
}

/// An integer in `MIN..=MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounded<const MIN: u64, const MAX: u64>(pub u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u64::try_from(n) {
            Ok(v) if (MIN..=MAX).contains(&v) => Ok(Self(v)),
            _ => Err(de::Error::custom(format!(
                "{n} is out of range {MIN}..={MAX}"
            ))),
        }
    }
}

/// A duration in `MIN_MS..=MAX_MS`, written in the CLI's grammar (`crate::args::parse_duration`):
/// "500ms", "30s", "5m", "1h30m", "7d", or a bare number of seconds — as a string or a
/// TOML number (`connection_window = 90`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationIn<const MIN_MS: u64, const MAX_MS: u64>(pub Duration);

fn show_ms(ms: u64) -> String {
    match ms {
        0 => "0s".into(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// The text of a duration, a string or a TOML number of seconds.
struct DurationText;

impl de::Visitor<'_> for DurationText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a duration like "500ms", "30s", "5m", "1h" or "7d", or a number of seconds"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de> for DurationIn<MIN_MS, MAX_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_any(DurationText)?;
        let duration = crate::args::parse_duration(&text).map_err(de::Error::custom)?;
        let ms = duration.as_millis();
        if ms < u128::from(MIN_MS) || ms > u128::from(MAX_MS) || (duration.is_zero() && MIN_MS > 0)
        {
            return Err(de::Error::custom(format!(
                "\"{text}\" is out of range {}..={}",
                show_ms(MIN_MS),
                show_ms(MAX_MS)
            )));
        }
        Ok(Self(duration))
    }
}

/// A cgroup path under the cgroup v2 mount: starts with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupPath(pub String);

impl<'de> Deserialize<'de> for CgroupPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if !text.starts_with('/') {
            return Err(de::Error::custom(format!(
                "\"{text}\" is not a cgroup path: write it from the cgroup v2 root, like \"/system.slice\""
            )));
        }
        Ok(Self(text))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsolutePath(pub PathBuf);

impl<'de> Deserialize<'de> for AbsolutePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let path = PathBuf::from(&text);
        if !path.is_absolute() || path.file_name().is_none() {
            return Err(de::Error::custom(format!(
                "\"{text}\" is not an absolute file path"
            )));
        }
        Ok(Self(path))
    }
}

/// A configuration that cannot be used, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the error has no location (e.g. the file cannot be read).
    pub line: usize,
    pub column: usize,
    /// Dotted key, e.g. `prometheus.listen`; empty when the error is not about a key.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses a configuration; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let locate = |span: Option<std::ops::Range<usize>>, key: String, message: &str| {
        let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
        ConfigError {
            path: path.to_path_buf(),
            line,
            column,
            key,
            message: message.to_string(),
        }
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| locate(e.span(), String::new(), e.message()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        locate(e.inner().span(), key, e.inner().message())
    })
}

/// Reads and parses the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read the configuration: {e}"),
    })?;
    parse(&text, path)
}

/// Where the running configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    /// No `--config` and no file at the default path: `Config::default()`, the values of
    /// packaging/ksight.toml.
    BuiltIn,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::BuiltIn => write!(
                f,
                "the built-in defaults (no --config given and no {DEFAULT_PATH})"
            ),
        }
    }
}

/// The configuration `ksight agent` runs on: the file named with `--config` (an error when
/// it is missing), else /etc/ksight/ksight.toml when it exists, else the built-in defaults.
pub fn load_agent(explicit: Option<&Path>) -> Result<(Config, Origin), ConfigError> {
    load_or_default(explicit, Path::new(DEFAULT_PATH))
}

fn load_or_default(
    explicit: Option<&Path>,
    default: &Path,
) -> Result<(Config, Origin), ConfigError> {
    let path = explicit.unwrap_or(default);
    match load(path) {
        Ok(config) => Ok((config, Origin::File(path.to_path_buf()))),
        Err(_)
            if explicit.is_none()
                && default
                    .symlink_metadata()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            Ok((Config::default(), Origin::BuiltIn))
        }
        Err(e) => Err(e),
    }
}

impl Config {
    pub fn export_settings(&self) -> ExportSettings {
        ExportSettings {
            signals: Signals {
                process: self.signals.process,
                tcp: self.signals.tcp,
                block: self.signals.block,
                socket_io: self.signals.socket_io,
            },
            include_cgroups: self.filters.cgroups.iter().map(|c| c.0.clone()).collect(),
            exclude_cgroups: self
                .filters
                .exclude_cgroups
                .iter()
                .map(|c| c.0.clone())
                .collect(),
            exclude_devices: self.filters.exclude_devices.clone(),
            top_connections: self.prometheus.top_connections.0 as usize,
            connection_window_ms: self.prometheus.connection_window.0.as_millis() as u64,
            cgroup_grace_ms: self.prometheus.cgroup_grace_period.0.as_millis() as u64,
            dns_max_qnames: self.dns.max_qnames.0 as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse(text, Path::new("/etc/ksight/ksight.toml")).unwrap_err()
    }

    fn ok(text: &str) -> Config {
        parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// packaging/ksight.toml spells out every key (but `cgroup_root`, unset by default)
    /// with the built-in default's value.
    #[test]
    fn the_packaged_default_is_the_built_in_default() {
        assert_eq!(ok(DEFAULT_TOML), Config::default());
        assert_eq!(ok(""), Config::default());
        let table: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        let keys = |t: &toml::Table| {
            let mut k = t.keys().cloned().collect::<Vec<_>>();
            k.sort();
            k
        };
        assert_eq!(
            keys(&table),
            [
                "backend",
                "dns",
                "filters",
                "kubernetes",
                "log_level",
                "prometheus",
                "signals",
                "snaplen",
                "socket",
                "transport"
            ]
        );
        let section = |name: &str| keys(table[name].as_table().unwrap());
        assert_eq!(section("signals"), ["block", "process", "socket_io", "tcp"]);
        assert_eq!(section("dns"), ["max_qnames"]);
        assert_eq!(
            section("filters"),
            [
                "cgroups",
                "containers",
                "exclude_cgroups",
                "exclude_containers",
                "exclude_devices"
            ]
        );
        assert_eq!(
            section("prometheus"),
            [
                "cgroup_grace_period",
                "connection_window",
                "enabled",
                "listen",
                "top_connections"
            ]
        );
        assert_eq!(
            section("kubernetes"),
            ["api_server", "enabled", "node_name"]
        );
        assert_eq!(section("socket"), ["enabled", "path"]);
    }

    #[test]
    fn a_full_configuration() {
        let c = ok(r#"
backend = "ebpf"
transport = "perf"
log_level = "debug"
[signals]
block = false
[filters]
cgroups = ["/system.slice"]
exclude_cgroups = ["/system.slice/noisy.service"]
exclude_devices = ["loop", "ram"]
[prometheus]
listen = "[::1]:9100"
top_connections = 0
connection_window = "30s"
cgroup_grace_period = "0s"
[socket]
enabled = false
path = "/tmp/k.sock"
"#);
        assert_eq!(c.backend, BackendChoice::Ebpf);
        assert_eq!(c.transport, TransportChoice::Perf);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert!(!c.signals.block && c.signals.tcp);
        assert_eq!(c.prometheus.listen.0, "[::1]:9100".parse().unwrap());
        let s = c.export_settings();
        assert_eq!(s.top_connections, 0);
        assert_eq!(s.connection_window_ms, 30_000);
        assert_eq!(s.cgroup_grace_ms, 0);
        assert_eq!(s.include_cgroups, ["/system.slice"]);
        assert!(!s.signals.block);
        assert!(!c.socket.enabled);
    }

    #[test]
    fn container_filters_and_kubernetes_settings() {
        let c = ok(r#"
cgroup_root = "/host/sys/fs/cgroup"
[filters]
containers = ["shop/.*"]
exclude_containers = ["kube-system/.*", ".*/.*/istio-proxy"]
[kubernetes]
enabled = "on"
node_name = "node-1"
api_server = "https://10.0.0.1:6443"
"#);
        assert_eq!(
            c.cgroup_root.unwrap().0,
            PathBuf::from("/host/sys/fs/cgroup")
        );
        assert_eq!(c.kubernetes.node().as_deref(), Some("node-1"));
        assert!(c.kubernetes.wanted(false));
        let f = c.filters.containers();
        let labels = |ns: &str, pod: &str, container: &str| ksight_attribution::CgroupLabels {
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
            ..Default::default()
        };
        assert!(f.wants(&labels("shop", "web-1", "web")));
        assert!(!f.wants(&labels("shop", "web-1", "istio-proxy")));
        assert!(!f.wants(&labels("kube-system", "dns", "coredns")));
        // "auto": on in a pod or with an explicit server; off on bare metal.
        let auto = ok("");
        assert!(auto.kubernetes.wanted(true));
        assert!(!auto.kubernetes.wanted(false));
        assert!(
            ok("[kubernetes]\napi_server = \"http://127.0.0.1:8001\"\n")
                .kubernetes
                .wanted(false)
        );
        assert!(
            !ok("[kubernetes]\nenabled = \"off\"\n")
                .kubernetes
                .wanted(true)
        );
    }

    #[test]
    fn a_bad_container_pattern_is_refused_with_key_line_and_pattern() {
        let e = err("[filters]\nexclude_containers = [\"ok\", \"kube-(system\"]\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (2, "filters.exclude_containers[1]"),
            "{e}"
        );
        assert!(
            e.message.contains("\"kube-(system\" is not a valid regex"),
            "{e}"
        );
        let e = err("[kubernetes]\nenabled = \"maybe\"\n");
        assert_eq!((e.line, e.key.as_str()), (2, "kubernetes.enabled"), "{e}");
        let e = err("cgroup_root = \"relative/path\"\n");
        assert_eq!(e.key, "cgroup_root", "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_key_and_line() {
        let e = err(
            "backend = \"auto\"\n\n[prometheus]\nlisten = \"127.0.0.1:9464\"\nlsiten = \"x\"\n",
        );
        assert_eq!((e.line, e.column), (5, 1), "{e}");
        assert_eq!(e.key, "prometheus.lsiten");
        assert!(e.message.contains("unknown field `lsiten`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("/etc/ksight/ksight.toml:5:1: key `prometheus.lsiten`: unknown field"),
            "{e}"
        );
        let e = err("colour = 3\n");
        assert_eq!((e.line, e.key.as_str()), (1, "colour"), "{e}");
        let e = err("[metrics]\n");
        assert_eq!((e.line, e.key.as_str()), (1, "metrics"), "{e}");
    }

    #[test]
    fn wrong_types_are_refused_with_key_and_line() {
        let e = err("\n[signals]\ntcp = \"yes\"\n");
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (3, 7, "signals.tcp"),
            "{e}"
        );
        assert!(e.message.contains("expected a boolean"), "{e}");
        let e = err("[prometheus]\ntop_connections = \"ten\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (2, "prometheus.top_connections"),
            "{e}"
        );
        let e = err("backend = 1\n");
        assert_eq!((e.line, e.key.as_str()), (1, "backend"), "{e}");
        let e = err("[filters]\ncgroups = \"/a\"\n");
        assert_eq!((e.line, e.key.as_str()), (2, "filters.cgroups"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused_with_key_and_line() {
        let e = err("[prometheus]\ntop_connections = 5000\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (2, "prometheus.top_connections"),
            "{e}"
        );
        assert!(e.message.contains("5000 is out of range 0..=1000"), "{e}");
        let e = err("[prometheus]\ntop_connections = -1\n");
        assert!(e.message.contains("-1 is out of range"), "{e}");
        let e = err("[prometheus]\n\nlisten = \"127.0.0.1:0\"\n");
        assert_eq!((e.line, e.key.as_str()), (3, "prometheus.listen"), "{e}");
        assert!(e.message.contains("port 0"), "{e}");
        let e = err("[prometheus]\nlisten = \"localhost\"\n");
        assert!(e.message.contains("not an address with a port"), "{e}");
        let e = err("[prometheus]\nconnection_window = \"10ms\"\n");
        assert_eq!(e.key, "prometheus.connection_window");
        assert!(e.message.contains("out of range 1s..=1d"), "{e}");
        let e = err("[prometheus]\ncgroup_grace_period = \"8d\"\n");
        assert!(e.message.contains("out of range 0s..=7d"), "{e}");
        let e = err("[prometheus]\ncgroup_grace_period = \"5 fortnights\"\n");
        assert!(e.message.contains("is not a duration"), "{e}");
        let e = err("backend = \"bpf\"\n");
        assert_eq!(e.key, "backend");
        assert!(e.message.contains(r#""auto", "ebpf" or "kmod""#), "{e}");
        let e = err("[socket]\npath = \"ksight.sock\"\n");
        assert_eq!((e.line, e.key.as_str()), (2, "socket.path"), "{e}");
        let e = err("[filters]\nexclude_cgroups = [\"/a\", \"system.slice\"]\n");
        assert_eq!(e.key, "filters.exclude_cgroups[1]", "{e}");
        let e = err("log_level = \"loud\"\n");
        assert_eq!(e.key, "log_level");
    }

    #[test]
    fn snaplen_socket_io_and_dns_settings() {
        let c = ok("snaplen = 1500\n[signals]\nsocket_io = false\n[dns]\nmax_qnames = 7\n");
        assert_eq!(c.snaplen, Snaplen(1500));
        let s = c.export_settings();
        assert!(!s.signals.socket_io && s.signals.tcp);
        assert_eq!(s.dns_max_qnames, 7);
        let d = ok("");
        assert_eq!((d.snaplen.0, d.signals.socket_io), (512, true));
        assert_eq!(d.export_settings().dns_max_qnames, 100);
        for bad in ["0", "4097", "-5"] {
            let e = err(&format!("log_level = \"info\"\nsnaplen = {bad}\n"));
            assert_eq!((e.line, e.key.as_str()), (2, "snaplen"), "{e}");
            assert!(e.message.contains("out of range 1..=4096"), "{e}");
        }
        let e = err("snaplen = \"big\"\n");
        assert_eq!(e.key, "snaplen", "{e}");
        let e = err("[dns]\nmax_qnames = 20000\n");
        assert_eq!((e.line, e.key.as_str()), (2, "dns.max_qnames"), "{e}");
        let e = err("[dns]\nqnames = 2\n");
        assert_eq!(e.key, "dns.qnames", "{e}");
        let e = err("[signals]\nsocket_io = 1\n");
        assert_eq!(e.key, "signals.socket_io", "{e}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = err("backend = \"auto\"\n[prometheus\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.key.is_empty());
        let e = err("backend = \"auto\"\nbackend = \"ebpf\"\n");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn an_unreadable_file_says_so() {
        let e = load(Path::new("/nonexistent/ksight.toml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    /// One grammar for `ksight record --duration`, `ksight top --delay` and the file's
    /// durations: what one accepts the other accepts, with the same value.
    #[test]
    fn durations_read_the_same_in_the_file_and_on_the_command_line() {
        use crate::args::{Args, Command};
        use clap::Parser;
        let cli = |text: &str| match Args::try_parse_from([
            "ksight",
            "record",
            "-o",
            "x.ksc",
            "--duration",
            text,
        ]) {
            Ok(Args {
                command: Command::Record { duration, .. },
            }) => Some(duration.expect("given")),
            Ok(other) => panic!("{other:?}"),
            Err(_) => None,
        };
        let delay = |text: &str| match Args::try_parse_from(["ksight", "top", "--delay", text]) {
            Ok(Args {
                command: Command::Top { delay, .. },
            }) => Some(Duration::from_secs_f64(delay)),
            Ok(other) => panic!("{other:?}"),
            Err(_) => None,
        };
        let file = |value: &str| {
            parse(
                &format!("[prometheus]\ncgroup_grace_period = {value}\n"),
                Path::new("t.toml"),
            )
            .ok()
            .map(|c| c.prometheus.cgroup_grace_period.0)
        };
        let accepted = [
            ("10", 10_000),
            ("1.5", 1_500),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1h 30m", 5_400_000),
            ("1m30s", 90_000),
            ("2d", 172_800_000),
            (" 7s ", 7_000),
        ];
        for (text, ms) in accepted {
            let want = Some(Duration::from_millis(ms));
            assert_eq!(cli(text), want, "--duration {text:?}");
            assert_eq!(delay(text), want, "--delay {text:?}");
            assert_eq!(file(&format!("\"{text}\"")), want, "\"{text}\" in the file");
        }
        // A TOML number is a number of seconds too.
        assert_eq!(file("10"), Some(Duration::from_secs(10)));
        assert_eq!(file("1.5"), Some(Duration::from_millis(1500)));
        for text in [
            "",
            "s",
            "ms",
            "ten",
            "5 fortnights",
            "-3",
            "-3s",
            "1.2.3",
            "10x",
            "s10",
        ] {
            assert_eq!(cli(text), None, "--duration {text:?}");
            assert_eq!(delay(text), None, "--delay {text:?}");
            assert_eq!(file(&format!("\"{text}\"")), None, "\"{text}\" in the file");
        }
        assert_eq!(file("-3"), None);
        // Zero is grammatical; whether it is allowed is the setting's range.
        assert_eq!(file("\"0s\""), Some(Duration::ZERO));
        assert_eq!(file("0"), Some(Duration::ZERO));
        assert_eq!(cli("0s"), None, "a recording of no time");
        let e = err("[prometheus]\nconnection_window = 0\n");
        assert!(e.message.contains("out of range 1s..=1d"), "{e}");
        let e = err("[prometheus]\ncgroup_grace_period = \"5 fortnights\"\n");
        assert_eq!(e.key, "prometheus.cgroup_grace_period");
        assert!(
            e.message.contains("\"5 fortnights\" is not a duration"),
            "{e}"
        );
        let e = err("[prometheus]\ncgroup_grace_period = true\n");
        assert!(e.message.contains("a number of seconds"), "{e}");
    }

    /// No `--config` and nothing at the default path: the built-in defaults. A missing
    /// file named with `--config` is an error naming it; so is a default path that exists
    /// but cannot be read as a configuration.
    #[test]
    fn without_a_file_the_agent_runs_on_the_built_in_defaults() {
        let dir = std::env::temp_dir().join(format!("ksight-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let default = dir.join("ksight.toml");
        let _ = std::fs::remove_file(&default);
        assert_eq!(
            load_or_default(None, &default).unwrap(),
            (Config::default(), Origin::BuiltIn)
        );
        assert!(Origin::BuiltIn.to_string().contains("built-in defaults"));
        let missing = dir.join("missing.toml");
        let e = load_or_default(Some(&missing), &default).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(
            e.to_string().starts_with(&format!(
                "{}: cannot read the configuration",
                missing.display()
            )),
            "{e}"
        );
        std::fs::write(&default, "backend = \"kmod\"\n").unwrap();
        let (c, origin) = load_or_default(None, &default).unwrap();
        assert_eq!(
            (c.backend, origin),
            (BackendChoice::Kmod, Origin::File(default.clone()))
        );
        std::fs::write(&default, "backend = 3\n").unwrap();
        assert_eq!(load_or_default(None, &default).unwrap_err().key, "backend");
        std::fs::remove_file(&default).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), &default).unwrap();
        assert!(
            load_or_default(None, &default).is_err(),
            "a dangling link is no absence"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
