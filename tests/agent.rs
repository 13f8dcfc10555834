//! `ksight agent` for real: eBPF on this kernel, the ground-truth workload in a cgroup of
//! its own, `/metrics` scraped over loopback (and by a real Prometheus server), reloads,
//! the snapshot socket with misbehaving clients, clean shutdown, and `ksight install`.
//! Needs root and fails (never skips) without it. Every wait is bounded and every process
//! started here is killed on the way out.

use ksight_integration_tests::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SENT: u64 = 100_000;
const RECEIVED: u64 = 30_000;

/// One agent at a time: they compete for two cores, and the probe checks count programs.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some, at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Http {
    status: u16,
    content_type: String,
    body: String,
}

/// A GET over loopback, with a timeout.
fn http_get(port: u16, path: &str, accept: &str) -> std::io::Result<Http> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    Ok(Http {
        status,
        content_type,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    })
}

/// A chunked body put back together (a large scrape comes in chunks whose boundaries fall
/// anywhere, inside a line too).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("chunk end");
    }
    body
}

/// Labels every per-cgroup series may carry besides the ones a test names.
const OWNER_LABELS: [&str; 6] = [
    "namespace",
    "pod",
    "container",
    "workload",
    "workload_kind",
    "unit",
];

/// `name{a="b",...}` → (name, labels); values are taken as written (no escapes in tests).
fn parse_series(series: &str) -> (&str, Vec<(&str, &str)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, Vec::new());
    };
    let labels = rest
        .trim_end_matches('}')
        .split("\",")
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once("=\"")?;
            Some((k, v.trim_end_matches('"')))
        })
        .collect();
    (name, labels)
}

/// The value of the sample `name{labels}`: a series with exactly these labels, plus any of
/// the cgroup owner labels (which depend on where the test runs) when not named.
fn sample(text: &str, series: &str) -> Option<f64> {
    let (name, want) = parse_series(series);
    text.lines().find_map(|l| {
        let (s, value) = l.rsplit_once(' ')?;
        let (n, have) = parse_series(s);
        let matches = n == name
            && want.iter().all(|w| have.contains(w))
            && have
                .iter()
                .all(|h| want.contains(h) || OWNER_LABELS.contains(&h.0));
        matches.then(|| value.parse().ok()).flatten()
    })
}

/// A running agent, killed (if still alive) and reaped when dropped.
struct Agent {
    child: Child,
    dir: TempDir,
    port: u16,
    socket: PathBuf,
}

impl Agent {
    fn config(port: u16, socket: &Path, extra: &str) -> String {
        format!(
            "backend = \"ebpf\"\n{extra}\n[prometheus]\nlisten = \"127.0.0.1:{port}\"\n\
             cgroup_grace_period = \"2s\"\n[socket]\npath = \"{}\"\n",
            socket.display()
        )
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path.join("ksight.toml")
    }

    /// Starts an agent with `config` (already written in `dir`).
    fn spawn(dir: TempDir, port: u16, socket: PathBuf) -> Self {
        let log = std::fs::File::create(dir.path.join("agent.log")).unwrap();
        let child = Command::new(ksight_bin())
            .args(["agent", "--config"])
            .arg(dir.path.join("ksight.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ksight agent");
        Self {
            child,
            dir,
            port,
            socket,
        }
    }

    fn start(extra: &str) -> Self {
        let dir = TempDir::new("agent");
        let port = free_port();
        let socket = dir.path.join("run/ksight.sock");
        std::fs::write(
            dir.path.join("ksight.toml"),
            Self::config(port, &socket, extra),
        )
        .unwrap();
        let mut agent = Self::spawn(dir, port, socket);
        agent.wait_ready();
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path.join("agent.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        self.wait_serving("ebpf");
    }

    /// Waits until the agent serves /metrics captured with `backend`; fails if it exits.
    fn wait_serving(&mut self, backend: &str) {
        let port = self.port;
        let mut exited = None;
        let info = format!("ksight_backend_info{{backend=\"{backend}\"");
        wait_for(
            &format!("the agent to serve /metrics from {backend}"),
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    exited = Some(status);
                    return Some(());
                }
                let r = http_get(port, "/metrics", "*/*").ok()?;
                (r.status == 200 && r.body.contains(&info)).then_some(())
            },
        );
        assert!(
            exited.is_none(),
            "the agent exited ({exited:?}):\n{}",
            self.log()
        );
    }

    fn metrics(&self) -> String {
        let r = http_get(self.port, "/metrics", "*/*").expect("scrape");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for("the agent to exit", limit, || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The workload's truth, per cgroup, as the agent must export it.
/// `retrans_segs`: segments the kernel retransmitted (host-wide) while the workload ran.
fn assert_workload_metrics(m: &str, cg: u64, device: &LoopDevice, retrans_segs: u64) {
    let c = format!("cgroup_id=\"{cg}\"");
    let v = |name: &str, extra: &str| sample(m, &format!("{name}{{{c}{extra}}}"));
    // The workload itself, 3× true, false, 2× sh; six children; seven exits.
    assert_eq!(v("ksight_process_execs_total", ""), Some(7.0), "{m}");
    assert_eq!(v("ksight_process_forks_total", ""), Some(6.0));
    assert_eq!(v("ksight_process_exits_total", ",code=\"0\""), Some(4.0));
    assert_eq!(v("ksight_process_exits_total", ",code=\"1\""), Some(1.0));
    assert_eq!(v("ksight_process_exits_total", ",code=\"3\""), Some(2.0));
    // An orderly connection and an aborted one, both ends in the cgroup.
    assert_eq!(v("ksight_tcp_connects_total", ""), Some(2.0));
    assert_eq!(v("ksight_tcp_accepts_total", ""), Some(2.0));
    assert_eq!(v("ksight_tcp_closes_total", ""), Some(4.0));
    assert_eq!(v("ksight_tcp_connect_failures_total", ""), Some(0.0));
    assert_eq!(
        v("ksight_tcp_sent_bytes_total", ""),
        Some((SENT + RECEIVED) as f64)
    );
    assert_eq!(
        v("ksight_tcp_received_bytes_total", ""),
        Some((SENT + RECEIVED) as f64)
    );
    assert_eq!(
        v("ksight_tcp_resets_total", ",direction=\"sent\""),
        Some(1.0)
    );
    assert_eq!(
        v("ksight_tcp_resets_total", ",direction=\"received\""),
        Some(1.0)
    );
    let retransmits = v("ksight_tcp_retransmits_total", "").expect("retransmits") as u64;
    if let Err(e) = check_retransmits(retransmits, retrans_segs) {
        panic!("{e}");
    }
    // The UDP phase: every datagram sent and received inside the cgroup, both ways.
    let (datagrams, bytes) = udp_truth();
    for dir in ["sent", "received"] {
        assert_eq!(
            v(&format!("ksight_udp_{dir}_datagrams_total"), ""),
            Some(datagrams as f64),
            "{m}"
        );
        assert_eq!(
            v(&format!("ksight_udp_{dir}_bytes_total"), ""),
            Some(bytes as f64)
        );
    }
    // O_DIRECT on the loop device. The cgroup's reads also include whatever its execs
    // read from disk (binaries not in the page cache); it writes nothing else.
    let (w, r) = ((4 * 65536 + 3 * 4096) as f64, (2 * 131072 + 5 * 512) as f64);
    assert_eq!(
        v("ksight_block_cgroup_bytes_total", ",op=\"write\""),
        Some(w)
    );
    assert_eq!(
        v("ksight_block_cgroup_ops_total", ",op=\"write\""),
        Some(7.0)
    );
    assert!(v("ksight_block_cgroup_bytes_total", ",op=\"read\"").unwrap() >= r);
    assert!(v("ksight_block_cgroup_ops_total", ",op=\"read\"").unwrap() >= 7.0);
    // Device counters are host-wide: only the workload writes to the fresh loop device,
    // but the kernel may read it too (partition scans).
    let name = device.device.trim_start_matches("/dev/");
    let d = format!("device=\"{name}\",dev=\"{}\"", device.dev());
    let dev = |series: &str| {
        sample(m, &format!("{series}{{{d}}}"))
            .unwrap_or_else(|| panic!("no {series}{{{d}}} in\n{m}"))
    };
    assert_eq!(
        sample(m, &format!("ksight_block_ops_total{{{d},op=\"write\"}}")),
        Some(7.0)
    );
    assert_eq!(
        sample(m, &format!("ksight_block_bytes_total{{{d},op=\"write\"}}")),
        Some(w)
    );
    assert!(sample(m, &format!("ksight_block_bytes_total{{{d},op=\"read\"}}")).unwrap() >= r);
    let count = dev("ksight_block_latency_seconds_count");
    assert!(count >= 14.0, "{count}");
    assert_eq!(
        sample(
            m,
            &format!("ksight_block_latency_seconds_bucket{{le=\"+Inf\",{d}}}")
        ),
        Some(count)
    );
    assert!(dev("ksight_block_latency_seconds_sum") > 0.0);
    let info = m
        .lines()
        .find(|l| l.starts_with(&format!("ksight_cgroup_info{{{c},")))
        .unwrap_or_else(|| panic!("no ksight_cgroup_info for {c} in\n{m}"));
    assert!(info.contains(",path=\"/"), "{info}");
}

/// Datagrams and bytes the workload's UDP phase sends (and receives, all on loopback).
fn udp_truth() -> (usize, usize) {
    use ksight_integration_tests::workload::{UDP_MMSG_TO_B, UDP_TO_A, UDP_TO_B, UDP_V6};
    let all = [&UDP_TO_B[..], &UDP_MMSG_TO_B, &UDP_TO_A, &UDP_V6];
    (
        all.iter().map(|s| s.len()).sum(),
        all.iter().map(|s| s.iter().sum::<usize>()).sum(),
    )
}

/// Runs the ground-truth workload in `cgroup`; the agent's metrics once it has all of
/// it, and the segments the kernel retransmitted meanwhile.
fn run_workload(agent: &Agent, cgroup: &TestCgroup, device: &LoopDevice) -> (String, u64) {
    let retrans_before = tcp_retrans_segs().expect("/proc/net/snmp");
    cgroup.run(
        &workload_bin(),
        &[
            "all",
            &SENT.to_string(),
            &RECEIVED.to_string(),
            &device.device,
        ],
    );
    let c = format!("cgroup_id=\"{}\"", cgroup.id);
    let exits = format!("ksight_process_exits_total{{{c},code=\"0\"}}");
    let writes = format!("ksight_block_cgroup_ops_total{{{c},op=\"write\"}}");
    let closes = format!("ksight_tcp_closes_total{{{c}}}");
    let retrans_segs = tcp_retrans_segs().expect("/proc/net/snmp") - retrans_before;
    let m = wait_for("the workload's metrics", Duration::from_secs(15), || {
        let m = agent.metrics();
        // The cgroup is named once the agent has walked the tree for it (the counters
        // may come first: nothing waits for names).
        let complete = sample(&m, &exits) == Some(4.0)
            && sample(&m, &writes) == Some(7.0)
            && sample(&m, &closes) == Some(4.0)
            && m.contains(&format!("\nksight_cgroup_info{{{c},"));
        complete.then_some(m)
    });
    (m, retrans_segs)
}

#[test]
fn the_agent_exports_the_workload_ground_truth_by_cgroup() {
    require_root();
    let _serial = serial();
    let agent = Agent::start("");
    let device = LoopDevice::new(16 << 20);
    let cgroup = TestCgroup::new("agent-truth");
    let (m, retrans_segs) = run_workload(&agent, &cgroup, &device);
    assert_workload_metrics(&m, cgroup.id, &device, retrans_segs);
    // The agent's own figures.
    assert!(
        m.contains("ksight_backend_info{backend=\"ebpf\",reason=\"configured"),
        "{m}"
    );
    assert!(m.contains("ksight_signal_status{signal=\"process\",mode=\"full\"} 1"));
    let rss = sample(&m, "ksight_agent_resident_memory_bytes").unwrap();
    assert!(rss > 1e6 && rss < 500e6, "{rss}");
    assert!(sample(&m, "ksight_agent_cpu_seconds_total").unwrap() > 0.0);
    assert!(sample(&m, "ksight_events_total").unwrap() > 0.0);
    assert_eq!(sample(&m, "ksight_malformed_records_total"), Some(0.0));
    assert_eq!(sample(&m, "ksight_lost_events_total{cpu=\"0\"}"), Some(0.0));
    // Never labelled by pid.
    assert!(!m.contains("pid="), "{m}");

    // A cgroup that is gone disappears once the grace period (2 s) is over.
    cgroup.remove();
    let id = format!("cgroup_id=\"{}\"", cgroup.id);
    wait_for(
        "the removed cgroup's series to go",
        Duration::from_secs(20),
        || (!agent.metrics().contains(&id)).then_some(()),
    );
}

#[test]
fn tcp_bytes_grow_while_the_connection_is_open() {
    require_root();
    let _serial = serial();
    let agent = Agent::start("");
    let cg = TestCgroup::new("agent-live");
    let mut child = cg
        .command(workload_bin(), &["tcp-phases", "10000", "5000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the workload");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let c = format!("cgroup_id=\"{}\"", cg.id);
    let series = |what: &str| format!("ksight_tcp_{what}_bytes_total{{{c}}}");
    // Client and server are both in the cgroup: what one sends, the other receives.
    for (phase, so_far) in [(1, 10000.0), (2, 15000.0)] {
        assert_eq!(lines.next().unwrap().unwrap(), phase.to_string());
        let m = wait_for(
            "the open connection's bytes",
            Duration::from_secs(15),
            || {
                let m = agent.metrics();
                (sample(&m, &series("sent")) == Some(so_far)).then_some(m)
            },
        );
        assert_eq!(sample(&m, &series("received")), Some(so_far), "{m}");
        assert_eq!(
            sample(&m, &format!("ksight_tcp_closes_total{{{c}}}")),
            Some(0.0),
            "{m}"
        );
        std::io::Write::write_all(&mut stdin, b"\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    // Closed: the kernel's counters agree, nothing is added twice.
    let m = wait_for("the closes", Duration::from_secs(15), || {
        let m = agent.metrics();
        (sample(&m, &format!("ksight_tcp_closes_total{{{c}}}")) == Some(2.0)).then_some(m)
    });
    assert_eq!(sample(&m, &series("sent")), Some(15000.0), "{m}");
    assert_eq!(sample(&m, &series("received")), Some(15000.0), "{m}");
    // (`ksight_tcp_byte_mismatches_total` is host-wide: other connections on the host may
    // rightly differ, e.g. one reset with data its application never read.)
}

#[test]
fn prometheus_formats_both_parse_and_promtool_accepts_the_classic_one() {
    require_root();
    let _serial = serial();
    let agent = Agent::start("");
    let classic = http_get(agent.port, "/metrics", "*/*").unwrap();
    assert_eq!(
        classic.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let om = http_get(
        agent.port,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .unwrap();
    assert!(om.content_type.starts_with("application/openmetrics-text"));
    assert!(om.body.ends_with("# EOF\n"));
    assert_eq!(http_get(agent.port, "/nope", "*/*").unwrap().status, 404);
    ensure_prometheus();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(classic.body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's Prometheus server, installed when missing.
fn ensure_prometheus() {
    let present = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !present("prometheus") || !present("promtool") {
        let status = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "prometheus",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get");
        assert!(
            status.success(),
            "installing Debian's prometheus package failed"
        );
    }
}

/// A Prometheus server scraping the agent every second, killed on drop.
struct PrometheusServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    fn start(target_port: u16) -> Self {
        let dir = TempDir::new("prometheus");
        let port = free_port();
        let config = dir.path.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: ksight\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// The value of an instant query, when it has exactly one result.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let r = http_get(self.port, &format!("/api/v1/query?query={encoded}"), "*/*").ok()?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_server_scrapes_the_agent() {
    require_root();
    let _serial = serial();
    ensure_prometheus();
    let agent = Agent::start("");
    let device = LoopDevice::new(16 << 20);
    let cgroup = TestCgroup::new("agent-prom");
    let prometheus = PrometheusServer::start(agent.port);
    run_workload(&agent, &cgroup, &device);
    let execs = format!("ksight_process_execs_total{{cgroup_id=\"{}\"}}", cgroup.id);
    let sent = format!("ksight_tcp_sent_bytes_total{{cgroup_id=\"{}\"}}", cgroup.id);
    let value = wait_for(
        "Prometheus to have scraped the workload",
        Duration::from_secs(60),
        || prometheus.query(&execs).filter(|&v| v == 7.0),
    );
    assert_eq!(value, 7.0);
    assert_eq!(prometheus.query(&sent), Some((SENT + RECEIVED) as f64));
    assert_eq!(prometheus.query("up{job=\"ksight\"}"), Some(1.0));
    assert_eq!(
        prometheus.query("ksight_backend_info{backend=\"ebpf\"}"),
        Some(1.0)
    );
}

#[test]
fn reloads_keep_the_aggregates_and_refuse_bad_configurations() {
    require_root();
    let _serial = serial();
    let agent = Agent::start("");
    let device = LoopDevice::new(16 << 20);
    let cgroup = TestCgroup::new("agent-reload");
    let (_, retrans_segs) = run_workload(&agent, &cgroup, &device);
    let execs = format!("ksight_process_execs_total{{cgroup_id=\"{}\"}}", cgroup.id);

    // An unknown key: refused with key and line, the running configuration stays.
    let good = std::fs::read_to_string(agent.config_path()).unwrap();
    std::fs::write(agent.config_path(), format!("{good}\nlsiten = 1\n")).unwrap();
    agent.signal(libc::SIGHUP);
    // Scrapes keep being answered while the reload happens.
    let m = wait_for("the refused reload", Duration::from_secs(10), || {
        let m = agent.metrics();
        (sample(&m, "ksight_agent_config_reloads_total{result=\"failure\"}") == Some(1.0))
            .then_some(m)
    });
    assert_eq!(sample(&m, &execs), Some(7.0));
    let log = agent.log();
    assert!(
        log.contains("reload refused")
            && log.contains("key `socket.lsiten`: unknown field `lsiten`"),
        "{log}"
    );

    // A snaplen out of range: refused the same way, naming the key and the range.
    std::fs::write(agent.config_path(), format!("snaplen = 0\n{good}")).unwrap();
    agent.signal(libc::SIGHUP);
    wait_for("the second refused reload", Duration::from_secs(10), || {
        let m = agent.metrics();
        (sample(&m, "ksight_agent_config_reloads_total{result=\"failure\"}") == Some(2.0))
            .then_some(())
    });
    let log = agent.log();
    assert!(
        log.contains("key `snaplen`: 0 is out of range 1..=4096"),
        "{log}"
    );
    let line = good.lines().count() + 2;
    assert!(
        log.contains(&format!("ksight.toml:{line}:1:")),
        "line {line}: {log}"
    );

    // A valid one: block I/O off, aggregates kept.
    std::fs::write(
        agent.config_path(),
        good.replace(
            "backend = \"ebpf\"\n",
            "backend = \"ebpf\"\n[signals]\nblock = false\n",
        ),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let m = wait_for("the reload", Duration::from_secs(10), || {
        let m = agent.metrics();
        (sample(&m, "ksight_agent_config_reloads_total{result=\"success\"}") == Some(1.0))
            .then_some(m)
    });
    assert_eq!(sample(&m, &execs), Some(7.0), "aggregates survive a reload");
    assert!(!m.contains("ksight_block_"), "block metrics are off:\n{m}");
    assert!(m.contains("ksight_signal_status{signal=\"block\",mode=\"disabled\"} 1"));
    // And back on: the block counters were kept, not reset.
    std::fs::write(agent.config_path(), &good).unwrap();
    agent.signal(libc::SIGHUP);
    let m = wait_for("the second reload", Duration::from_secs(10), || {
        let m = agent.metrics();
        (sample(&m, "ksight_agent_config_reloads_total{result=\"success\"}") == Some(2.0))
            .then_some(m)
    });
    assert_workload_metrics(&m, cgroup.id, &device, retrans_segs);

    // Scrapes during a burst of reloads are all answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (stop, port) = (stop.clone(), agent.port);
        std::thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = http_get(port, "/metrics", "*/*").expect("a scrape during reloads");
                assert_eq!(r.status, 200);
                answered += 1;
            }
            answered
        })
    };
    for i in 0..10 {
        let text = if i % 2 == 0 {
            format!("{good}\nbogus = 1\n")
        } else {
            good.clone()
        };
        std::fs::write(agent.config_path(), text).unwrap();
        agent.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answered = scraper.join().expect("every scrape answered");
    assert!(answered >= 5, "{answered} scrapes");

    // A new listen address: the new port answers, the old one is closed.
    let new_port = free_port();
    std::fs::write(
        agent.config_path(),
        good.replace(
            &format!("127.0.0.1:{}", agent.port),
            &format!("127.0.0.1:{new_port}"),
        ),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let m = wait_for("the new listen address", Duration::from_secs(10), || {
        let r = http_get(new_port, "/metrics", "*/*").ok()?;
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(sample(&m, &execs), Some(7.0));
    wait_for("the old listener to close", Duration::from_secs(5), || {
        http_get(agent.port, "/metrics", "*/*")
            .is_err()
            .then_some(())
    });
    assert!(
        agent
            .log()
            .contains(&format!("http://127.0.0.1:{new_port}/metrics"))
    );
}

/// Program ids the process holds open (`prog_id:` in its fds' fdinfo).
fn bpf_programs_of(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids.sort();
    ids.dedup();
    ids
}

fn program_exists(id: u64) -> bool {
    // `cargo xtask test` installs bpftool (its setup refreshes the package lists first).
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .expect("bpftool (installed by `cargo xtask setup`)");
    out.status.success()
}

#[test]
fn sigterm_exits_zero_and_detaches_every_program() {
    require_root();
    let _serial = serial();
    let mut agent = Agent::start("");
    let programs = bpf_programs_of(agent.child.id());
    assert!(
        programs.len() >= 8,
        "the agent's programs: {programs:?}\n{}",
        agent.log()
    );
    assert!(programs.iter().all(|&id| program_exists(id)));
    assert!(agent.socket.exists());
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    let gone = programs.iter().filter(|&&id| !program_exists(id)).count();
    assert_eq!(
        gone,
        programs.len(),
        "programs still loaded after exit: {programs:?}"
    );
    assert!(!agent.socket.exists(), "the socket is removed");
    assert!(
        agent.log().contains("detaching the probes"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_port_in_use_is_a_clear_error_at_start() {
    require_root();
    let _serial = serial();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("agent-port");
    let socket = dir.path.join("k.sock");
    std::fs::write(
        dir.path.join("ksight.toml"),
        Agent::config(port, &socket, ""),
    )
    .unwrap();
    let mut agent = Agent::spawn(dir, port, socket);
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let log = agent.log();
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{port}")) && log.contains("in use"),
        "{log}"
    );
    // It failed before loading anything.
    assert!(!log.contains("backend ebpf"), "{log}");
}

#[test]
fn an_invalid_configuration_is_refused_at_start_with_key_and_line() {
    require_root();
    let dir = TempDir::new("agent-bad");
    let config = dir.path.join("ksight.toml");
    std::fs::write(
        &config,
        "backend = \"ebpf\"\n[prometheus]\ntop_connections = 100000\n",
    )
    .unwrap();
    let out = ksight(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:19: key `prometheus.top_connections`: 100000 is out of range 0..=1000",
            config.display()
        )),
        "{err}"
    );
    // A cgroup_root that is no cgroup v2 hierarchy: refused before any probe is loaded.
    std::fs::write(&config, "backend = \"ebpf\"\ncgroup_root = \"/tmp\"\n").unwrap();
    let out = ksight(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: key `cgroup_root`: /tmp is not a cgroup v2 hierarchy",
            config.display()
        )),
        "{err}"
    );
}

/// `ksight agent` with no `--config` and no /etc/ksight/ksight.toml runs on the built-in
/// defaults (Prometheus on 127.0.0.1:9464, the socket at /run/ksight/ksight.sock) and says
/// so. The agent runs in a mount namespace of its own where /etc/ksight, if the host has
/// one, is hidden under an empty tmpfs.
#[test]
fn without_a_configuration_the_agent_runs_on_the_built_in_defaults() {
    require_root();
    let _serial = serial();
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("agent-defaults");
    let log = std::fs::File::create(dir.path.join("agent.log")).unwrap();
    let mut cmd = Command::new(ksight_bin());
    cmd.arg("agent").stdout(Stdio::null()).stderr(log);
    let hide = Path::new("/etc/ksight").exists();
    let had_run_dir = Path::new("/run/ksight").exists();
    // SAFETY: only unshare and mount (system calls) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let none = std::ptr::null();
            if libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ) != 0
            {
                return fail();
            }
            if hide
                && libc::mount(
                    c"none".as_ptr(),
                    c"/etc/ksight".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    none.cast(),
                ) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start ksight agent");
    let mut agent = Agent {
        child,
        dir,
        port: 9464,
        socket: PathBuf::from("/run/ksight/ksight.sock"),
    };
    agent.wait_ready();
    let log = agent.log();
    assert!(
        log.contains(
            "starting with the built-in defaults (no --config given and no /etc/ksight/ksight.toml)"
        ),
        "{log}"
    );
    assert!(agent.socket.exists(), "{log}");
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(!agent.socket.exists(), "the socket is removed");
    if !had_run_dir {
        let _ = std::fs::remove_dir("/run/ksight");
    }
}

/// A file named with `--config` that does not exist is an error naming it.
#[test]
fn a_missing_configuration_named_with_config_is_an_error() {
    let dir = TempDir::new("agent-missing");
    let missing = dir.path.join("nowhere.toml");
    let out = ksight(&["agent", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: cannot read the configuration: No such file or directory",
            missing.display()
        )),
        "{err}"
    );
}

/// Connects to the snapshot socket and misbehaves in `how`.
fn misbehave(socket: &Path, how: &str) -> Option<std::os::unix::net::UnixStream> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    match how {
        "garbage" => {
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage");
            None
        }
        "half header" => {
            let _ = s.write_all(b"KSGT\x01");
            None
        }
        "huge length" => {
            let _ = s.write_all(b"KSGT\x01\x00\x01\x00\xff\xff\xff\xff");
            None
        }
        // Says nothing and keeps the connection open.
        _ => Some(s),
    }
}

#[test]
fn the_socket_serves_top_and_shrugs_off_bad_clients() {
    require_root();
    let _serial = serial();
    let agent = Agent::start("");
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "root only");
    let device = LoopDevice::new(16 << 20);
    let cgroup = TestCgroup::new("agent-socket");
    run_workload(&agent, &cgroup, &device);

    for how in ["garbage", "half header", "huge length"] {
        for _ in 0..5 {
            misbehave(&agent.socket, how);
        }
    }
    // More silent clients than the agent serves at once, for longer than its timeout.
    let held: Vec<_> = (0..12)
        .filter_map(|_| misbehave(&agent.socket, "silent"))
        .collect();
    assert!(!held.is_empty());
    // Scrapes go on meanwhile.
    assert!(agent.metrics().contains("ksight_backend_info"));
    std::thread::sleep(Duration::from_millis(2500));
    drop(held);

    let out = wait_for("top --connect to answer", Duration::from_secs(10), || {
        let out = Command::new(ksight_bin())
            .args([
                "top",
                "--batch",
                "--json",
                "-n",
                "2",
                "--delay",
                "0.2",
                "--connect",
            ])
            .arg(&agent.socket)
            .output()
            .ok()?;
        out.status.success().then_some(out)
    });
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON snapshot per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["backend"], "ebpf");
    // Intervals, not totals: the workload ran before `top` started.
    for l in &lines {
        assert!(
            !l["cgroups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["cgroup_id"] == cgroup.id),
            "{l}"
        );
    }
    // The text view too.
    let text = ksight(&[
        "top",
        "--batch",
        "-n",
        "1",
        "--connect",
        agent.socket.to_str().unwrap(),
    ]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("ebpf backend"));
    // A socket that is not an agent's.
    let bad = ksight(&[
        "top",
        "--batch",
        "-n",
        "1",
        "--connect",
        "/nonexistent.sock",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.sock"));
}

/// Every file under `dir` with its content, for before/after comparisons.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_dry_run_changes_nothing_and_install_writes_the_decision() {
    require_root();
    let _serial = serial();
    let root = TempDir::new("install-root");
    let etc = root.path.join("etc/ksight");
    std::fs::create_dir_all(&etc).unwrap();
    let original = "# my comment\nbackend = \"auto\"\n[prometheus]\nlisten = \"127.0.0.1:9999\"\n";
    std::fs::write(etc.join("ksight.toml"), original).unwrap();
    // What the real host has, which no dry run may touch either.
    let host_paths = [
        "/etc/ksight",
        "/etc/systemd/system/ksight.service.d",
        "/etc/modules-load.d",
    ];
    let host_before: Vec<_> = host_paths.iter().map(|p| tree(Path::new(p))).collect();
    let before = tree(&root.path);

    let out = ksight(&[
        "install",
        "--dry-run",
        "--auto",
        "--root",
        root.path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("backend ebpf: eBPF programs load and attach"),
        "{plan}"
    );
    assert!(
        plan.contains("would write /etc/ksight/ksight.toml"),
        "{plan}"
    );
    assert!(
        plan.contains("would write /etc/systemd/system/ksight.service.d/backend.conf"),
        "{plan}"
    );
    assert!(plan.contains("nothing changed"), "{plan}");
    assert_eq!(tree(&root.path), before, "a dry run changed files");
    let host_after: Vec<_> = host_paths.iter().map(|p| tree(Path::new(p))).collect();
    assert_eq!(host_after, host_before, "a dry run changed the host");

    // For real, into the staging root.
    let out = ksight(&[
        "install",
        "--auto",
        "--no-start",
        "--root",
        root.path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let config = std::fs::read_to_string(etc.join("ksight.toml")).unwrap();
    assert_eq!(
        config,
        original.replace("\"auto\"", "\"ebpf\""),
        "only the backend changes"
    );
    let dropin = std::fs::read_to_string(
        root.path
            .join("etc/systemd/system/ksight.service.d/backend.conf"),
    )
    .unwrap();
    assert!(
        dropin.contains("CapabilityBoundingSet=CAP_BPF CAP_PERFMON"),
        "{dropin}"
    );
    assert!(!root.path.join("etc/modules-load.d/ksight.conf").exists());
    // Installing again changes nothing more.
    let again = tree(&root.path);
    let out = ksight(&[
        "install",
        "--auto",
        "--no-start",
        "--root",
        root.path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(tree(&root.path), again);
    // A usage error without a decision mode.
    assert_eq!(ksight(&["install"]).status.code(), Some(1));
}

/// `backend = "auto"` with bpf() denied by a seccomp filter: the filter is named. Where the
/// ksight module is loaded (or `modprobe ksight` would load it) the agent falls back to it,
/// says why, serves, and stops cleanly; where it is not — the build and CI machines, which
/// cannot load modules — the agent exits 1 within a bound, naming both reasons.
#[test]
fn auto_names_a_seccomp_filter_that_denies_bpf() {
    require_root();
    let _serial = serial();
    let dir = TempDir::new("agent-seccomp");
    let port = free_port();
    let socket = dir.path.join("k.sock");
    let config =
        Agent::config(port, &socket, "").replace("backend = \"ebpf\"", "backend = \"auto\"");
    std::fs::write(dir.path.join("ksight.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path.join("agent.log")).unwrap();
    let mut cmd = Command::new(ksight_bin());
    cmd.args(["agent", "--config"])
        .arg(dir.path.join("ksight.toml"))
        .stdout(Stdio::null())
        .stderr(log);
    deny_bpf(&mut cmd);
    let child = cmd.spawn().expect("start ksight agent under seccomp");
    // Killed and reaped on the way out, whatever happens.
    let mut agent = Agent {
        child,
        dir,
        port,
        socket,
    };
    let module = Path::new("/dev/ksight").exists()
        || Command::new("modprobe")
            .args(["--dry-run", "--quiet", "ksight"])
            .status()
            .is_ok_and(|s| s.success());
    if module {
        agent.wait_serving("kmod");
        let log = agent.log();
        assert!(
            log.contains("backend kmod") && log.contains("bpf() is denied by a seccomp filter"),
            "{log}"
        );
        agent.signal(libc::SIGTERM);
        let status = agent.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{}", agent.log());
        return;
    }
    let status = agent.wait_exit(Duration::from_secs(30));
    let err = agent.log();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no kernel backend can run here"), "{err}");
    assert!(
        err.contains(
            "ebpf: bpf() is denied by a seccomp filter: Operation not permitted (errno 1)"
        ),
        "{err}"
    );
    assert!(
        err.contains("kmod: the ksight module is not loaded and `modprobe ksight` failed"),
        "{err}"
    );
    assert!(!err.contains("running; backend attached"), "{err}");
}

// ---- Containers and pods: names from a Kubernetes API server on loopback ----

use ksight_integration_tests::fake_apiserver::{
    FakeApiServer, PodBuilder, container_id, namespace, owned_object, unused_port,
};

const NODE: &str = "node-1";
const WEB_UID: &str = "6b1a0c52-3d4e-4f60-8a9b-0c1d2e3f4a5b";
const NOISY_UID: &str = "9c8b7a69-5e4d-4c3b-a2a1-0f9e8d7c6b5a";
const WEB_POD: &str = "web-7d9f8-x2k4q";

/// cgroups shaped like a Kubernetes node's (systemd driver, containerd), made for real
/// under a cgroup of ours; removed on drop, deepest first.
struct NodeTree {
    root: PathBuf,
    made: Vec<PathBuf>,
}

impl NodeTree {
    fn new() -> Self {
        let root = own_cgroup_dir().join(format!("ksight-node-{}", std::process::id()));
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Self {
            made: vec![root.clone()],
            root,
        }
    }

    /// Makes `rel` (and its parents) below the root; returns its directory and cgroup id.
    fn cgroup(&mut self, rel: &str) -> (PathBuf, u64) {
        let mut dir = self.root.clone();
        for part in rel.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.made.push(dir.clone());
            }
        }
        let id = std::fs::metadata(&dir).unwrap().ino();
        (dir, id)
    }

    /// Removes `dir` and everything below it that we made.
    fn remove(&mut self, dir: &Path) {
        let (gone, kept): (Vec<PathBuf>, Vec<PathBuf>) =
            self.made.drain(..).partition(|d| d.starts_with(dir));
        self.made = kept;
        for d in gone.iter().rev() {
            wait_for("the cgroup to empty", Duration::from_secs(10), || {
                std::fs::remove_dir(d).ok()
            });
        }
    }
}

impl Drop for NodeTree {
    fn drop(&mut self) {
        for d in self.made.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn pod_container_cgroup(uid: &str, id: &str) -> String {
    let uid = uid.replace('-', "_");
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{id}.scope"
    )
}

/// Namespace `shop`, Deployment `web`'s ReplicaSet, and its pod whose container `web` has
/// id `id`.
fn serve_web_pod(api: &FakeApiServer, id: &str) {
    api.apply("namespaces", namespace("shop", &[]));
    api.apply(
        "replicasets",
        owned_object("shop", "web-7d9f8", Some(("apps/v1", "Deployment", "web"))),
    );
    api.apply(
        "pods",
        PodBuilder::new("shop", WEB_POD, WEB_UID, NODE)
            .owner("apps/v1", "ReplicaSet", "web-7d9f8")
            .container("web", Some(id))
            .build(),
    );
}

fn kube_config(url: &str) -> String {
    format!("[kubernetes]\nenabled = \"on\"\napi_server = \"{url}\"\nnode_name = \"{NODE}\"\n")
}

fn web_labels(cg: u64) -> String {
    format!(
        "cgroup_id=\"{cg}\",namespace=\"shop\",pod=\"{WEB_POD}\",container=\"web\",workload=\"web\",workload_kind=\"Deployment\""
    )
}

#[test]
fn pods_are_named_from_the_api_server_and_ignored_pods_cost_nothing() {
    require_root();
    let _serial = serial();
    let (web_id, noisy_id, docker_id) = (
        container_id(0x5eb),
        container_id(0x401),
        container_id(0xd0c),
    );
    let api = FakeApiServer::start();
    serve_web_pod(&api, &web_id);
    api.apply(
        "pods",
        PodBuilder::new("shop", "noisy-0", NOISY_UID, NODE)
            .owner("apps/v1", "StatefulSet", "noisy")
            .annotation("ksight.io/ignore", "true")
            .container("noisy", Some(&noisy_id))
            .build(),
    );
    let mut tree = NodeTree::new();
    let (web_dir, web_cg) = tree.cgroup(&pod_container_cgroup(WEB_UID, &web_id));
    let (noisy_dir, _) = tree.cgroup(&pod_container_cgroup(NOISY_UID, &noisy_id));
    let (docker_dir, docker_cg) = tree.cgroup(&format!("system.slice/docker-{docker_id}.scope"));
    let (unit_dir, unit_cg) = tree.cgroup("system.slice/ksight-e2e.service");
    let (plain_dir, plain_cg) = tree.cgroup("custom/thing");

    let agent = Agent::start(&kube_config(&api.url()));
    // The ignore set (the noisy pod's slice and container) reaches the kernel once the
    // pods are listed.
    wait_for(
        "the noisy pod to be ignored",
        Duration::from_secs(20),
        || {
            let m = agent.metrics();
            (sample(&m, "ksight_kubernetes_metadata_synced") == Some(1.0)
                && sample(&m, "ksight_ignored_cgroups") == Some(2.0))
            .then_some(())
        },
    );

    // Warm the page cache first, so the ignored pod's run reads nothing from disk.
    let w = workload_bin();
    run_in_cgroup(&unit_dir, &w, &["procs"]);
    run_in_cgroup(
        &web_dir,
        &w,
        &["procs-tcp", &SENT.to_string(), &RECEIVED.to_string()],
    );
    run_in_cgroup(&noisy_dir, &w, &["procs"]);
    run_in_cgroup(&docker_dir, &w, &["procs"]);
    run_in_cgroup(&plain_dir, &w, &["procs"]);

    let web = web_labels(web_cg);
    let m = wait_for("the workloads' exits", Duration::from_secs(20), || {
        let m = agent.metrics();
        [web_cg, docker_cg, unit_cg, plain_cg]
            .iter()
            .all(|cg| {
                sample(
                    &m,
                    &format!("ksight_process_exits_total{{cgroup_id=\"{cg}\",code=\"0\"}}"),
                ) == Some(4.0)
            })
            .then_some(m)
    });
    // The pod's container, by namespace/pod/container/workload.
    let v = |name: &str, extra: &str| sample(&m, &format!("{name}{{{web}{extra}}}"));
    assert_eq!(v("ksight_process_execs_total", ""), Some(7.0), "{m}");
    assert_eq!(v("ksight_process_forks_total", ""), Some(6.0));
    assert_eq!(v("ksight_tcp_connects_total", ""), Some(2.0));
    assert_eq!(
        v("ksight_tcp_sent_bytes_total", ""),
        Some((SENT + RECEIVED) as f64)
    );
    assert_eq!(
        v("ksight_tcp_received_bytes_total", ""),
        Some((SENT + RECEIVED) as f64)
    );
    let web_path = web_dir
        .strip_prefix(cgroup_mount())
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        sample(
            &m,
            &format!(
                "ksight_cgroup_info{{{web},path=\"/{web_path}\",runtime=\"containerd\",container_id=\"{web_id}\",pod_uid=\"{WEB_UID}\"}}"
            )
        ),
        Some(1.0),
        "{m}"
    );
    // Without Kubernetes names: a docker container by runtime and id, a systemd unit, a
    // path that matches nothing (attributed to itself, never dropped).
    let docker_path = docker_dir
        .strip_prefix(cgroup_mount())
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        sample(
            &m,
            &format!(
                "ksight_cgroup_info{{cgroup_id=\"{docker_cg}\",path=\"/{docker_path}\",runtime=\"docker\",container_id=\"{docker_id}\"}}"
            )
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("ksight_process_execs_total{{cgroup_id=\"{docker_cg}\"}}")
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!(
                "ksight_process_execs_total{{cgroup_id=\"{unit_cg}\",unit=\"ksight-e2e.service\"}}"
            )
        ),
        Some(7.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("ksight_process_execs_total{{cgroup_id=\"{plain_cg}\"}}")
        ),
        Some(7.0)
    );
    // The ignored pod: no series at all; its 7 execs, 6 forks and 7 exits were dropped in
    // the kernel, none reached the engine.
    assert!(!m.contains("noisy"), "{m}");
    assert_eq!(
        sample(&m, "ksight_ignored_events_total{where=\"kernel\"}"),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "ksight_ignored_events_total{where=\"engine\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&m, "ksight_attribution_pending_cgroups"), Some(0.0));
    assert_eq!(sample(&m, "ksight_kubernetes_metadata_up"), Some(1.0));

    // The pod is deleted: its cgroups go, and its series after the grace period.
    api.delete("pods", "shop", WEB_POD);
    let pod_dir = web_dir.parent().unwrap().to_path_buf();
    tree.remove(&pod_dir);
    wait_for(
        "the deleted pod's series to go",
        Duration::from_secs(40),
        || {
            let m = agent.metrics();
            (!m.contains(&format!("cgroup_id=\"{web_cg}\"")) && !m.contains(WEB_POD)).then_some(())
        },
    );
}

#[test]
fn an_unreachable_api_server_leaves_capture_running_and_shows_the_gap() {
    require_root();
    let _serial = serial();
    let web_id = container_id(0x5eb2);
    let port = unused_port();
    let mut tree = NodeTree::new();
    let (web_dir, web_cg) = tree.cgroup(&pod_container_cgroup(WEB_UID, &web_id));
    let agent = Agent::start(&kube_config(&format!("http://127.0.0.1:{port}")));
    run_in_cgroup(&web_dir, &workload_bin(), &["procs"]);
    let unnamed = format!("ksight_process_execs_total{{cgroup_id=\"{web_cg}\"}}");
    let m = wait_for("the workload, unnamed", Duration::from_secs(20), || {
        let m = agent.metrics();
        (sample(&m, &unnamed) == Some(7.0)
            && sample(&m, "ksight_kubernetes_metadata_errors_total").is_some_and(|e| e >= 1.0))
        .then_some(m)
    });
    assert_eq!(
        sample(&m, "ksight_kubernetes_metadata_up"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(sample(&m, "ksight_kubernetes_metadata_synced"), Some(0.0));
    assert_eq!(
        sample(&m, "ksight_attribution_pending_cgroups"),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains(&format!("pod=\"{WEB_POD}\"")), "{m}");

    // The API server comes up: the same counters, now with names.
    let api = FakeApiServer::start_on(port);
    serve_web_pod(&api, &web_id);
    let named = format!("ksight_process_execs_total{{{}}}", web_labels(web_cg));
    // Names come with the pods' watch; `metadata_up` needs every watched resource to
    // have answered since its last error, which its own retry may take a little longer.
    let m = wait_for(
        "the pod's names and metadata up",
        Duration::from_secs(60),
        || {
            let m = agent.metrics();
            (sample(&m, &named) == Some(7.0)
                && sample(&m, "ksight_kubernetes_metadata_up") == Some(1.0))
            .then_some(m)
        },
    );
    assert_eq!(sample(&m, "ksight_attribution_pending_cgroups"), Some(0.0));
}

/// `top --batch --connect` prints intervals, as `top --batch` does on its own: a workload
/// run in its own cgroup between two intervals shows, whole, in the next one, and in none
/// after it (the agent's snapshots are cumulative; the client takes differences).
#[test]
fn top_batch_connect_prints_each_interval_once() {
    use std::io::{BufRead, BufReader};
    require_root();
    let _serial = serial();
    let agent = Agent::start("");
    let device = LoopDevice::new(16 << 20);
    let cgroup = TestCgroup::new("agent-intervals");
    // Intervals of 4 s against the agent's 1 s tick: a workload that starts right after
    // an interval ends is published by the agent well before the next one ends.
    let mut top = Command::new(ksight_bin())
        .args([
            "top",
            "--batch",
            "--json",
            "-n",
            "4",
            "--delay",
            "4",
            "--connect",
        ])
        .arg(&agent.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ksight top");
    let mut out = BufReader::new(top.stdout.take().unwrap());
    let mut next_interval = |top: &mut Child| -> Value {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            top.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("top ended early ({:?}): {err}", top.wait());
        }
        serde_json::from_str(&line).expect("one JSON snapshot per line")
    };
    let mut intervals = vec![next_interval(&mut top)];
    cgroup.run(
        &workload_bin(),
        &[
            "all",
            &SENT.to_string(),
            &RECEIVED.to_string(),
            &device.device,
        ],
    );
    for _ in 0..3 {
        intervals.push(next_interval(&mut top));
    }
    assert!(top.wait().unwrap().success());
    let ours: Vec<Option<&Value>> = intervals
        .iter()
        .map(|i| {
            i["cgroups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["cgroup_id"] == cgroup.id)
        })
        .collect();
    let listed: Vec<bool> = ours.iter().map(Option::is_some).collect();
    assert_eq!(
        listed,
        [false, true, false, false],
        "the cgroup in exactly the interval it ran in: {intervals:#?}"
    );
    let row = ours[1].unwrap();
    assert_eq!(row["execs"], 7, "{row}");
    assert_eq!(row["exits"], 7, "{row}");
    assert_eq!(row["exit_codes"]["0"], 4, "{row}");
    assert_eq!(row["tcp_connections"], 4, "{row}");
    assert_eq!(row["tcp_bytes_sent"], SENT + RECEIVED, "{row}");
    assert_eq!(row["block_writes"], 7, "{row}");
    // Host-wide counts are per interval too, and the agent itself still counts from its
    // start.
    let execs = |i: &Value| i["process"]["execs"].as_u64().unwrap();
    assert!(execs(&intervals[1]) >= 7, "{:#}", intervals[1]["process"]);
    let cumulative = agent.metrics();
    let c = format!("cgroup_id=\"{}\"", cgroup.id);
    assert_eq!(
        sample(&cumulative, &format!("ksight_process_execs_total{{{c}}}")),
        Some(7.0)
    );
    assert_eq!(intervals[0]["backend"], "ebpf");
}

// ---- Request parsing and the service map, end to end ----

const SHOP_WEB_UID: &str = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const SHOP_CLIENT_UID: &str = "2a1b3c4d-5e6f-4a0b-9c8d-7e6f5a4b3c2d";
const WEB_CLUSTER_IP: &str = "127.0.0.9";

/// A tiny HTTP/1.1 keep-alive server: 200 for `/items/…`, 404 otherwise.
const PY_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code = 200 if self.path.startswith("/items/") else 404
        body = b"ok\n" if code == 200 else b"missing\n"
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("ready", flush=True)
s.serve_forever()
"#;

/// Five keep-alive GETs `/items/1..5` and one `/missing` on one connection, then close.
const PY_CLIENT: &str = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
got = []
for p in ["/items/1", "/items/2", "/items/3", "/items/4", "/items/5", "/missing"]:
    c.request("GET", p)
    r = c.getresponse()
    r.read()
    got.append(r.status)
c.close()
assert got == [200] * 5 + [404], got
"#;

/// `python3 -c CODE ARGS…` started inside the cgroup `dir` (it joins before exec, so
/// every socket it makes is the cgroup's).
fn python_in_cgroup(dir: &Path, code: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo $$ > \"$0/cgroup.procs\" && exec python3 -c \"$@\"")
        .arg(dir)
        .arg(code)
        .args(args);
    cmd
}

/// The one sample of `name` whose labels include every pair of `want` (others may be
/// there too): its line and value. Panics if none or several match.
fn the_sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<(String, f64)> {
    let hits: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let (s, value) = l.rsplit_once(' ')?;
            let (n, have) = parse_series(s);
            (n == name && want.iter().all(|w| have.contains(w)))
                .then(|| Some((l.to_string(), value.parse().ok()?)))
                .flatten()
        })
        .collect();
    assert!(
        hits.len() <= 1,
        "several series match {name} {want:?}: {hits:#?}"
    );
    hits.into_iter().next()
}

/// `who`'s labels and an HTTP request series' own.
fn request_labels<'a>(
    who: &[(&'a str, &'a str)],
    cgroup_id: &'a str,
    role: &'a str,
    route: &'a str,
    status: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut w = who.to_vec();
    w.extend([
        ("cgroup_id", cgroup_id),
        ("protocol", "http"),
        ("role", role),
        ("method", "GET"),
        ("route", route),
        ("status", status),
    ]);
    w
}

/// Namespace `shop`; pod `web-1` (container `nginx`, pod IP 10.244.0.7) backing Service
/// `web` (ClusterIP 127.0.0.9, port `port`; its EndpointSlice lists web-1 at its pod IP);
/// pod `client-1` (container `curl`). A python HTTP server listens on 127.0.0.9:`port` in
/// web-1's container cgroup; a python client in client-1's makes 5 keep-alive GETs
/// `/items/N` and one `/missing` (404) on one connection. The client connects to the
/// ClusterIP, so when the server's cgroup is not exported the edge is named by the
/// ClusterIP lookup (the one the agent makes first): `server_service="web"`, no pod.
fn service_map_run(exclude_server: bool) {
    require_root();
    let _serial = serial();
    let (web_id, client_id) = (container_id(0x5e7b), container_id(0xc11e));
    let port = free_port();
    let api = FakeApiServer::start();
    api.apply("namespaces", namespace("shop", &[]));
    api.apply(
        "pods",
        PodBuilder::new("shop", "web-1", SHOP_WEB_UID, NODE)
            .ip("10.244.0.7")
            .container("nginx", Some(&web_id))
            .build(),
    );
    api.apply(
        "pods",
        PodBuilder::new("shop", "client-1", SHOP_CLIENT_UID, NODE)
            .ip("10.244.0.8")
            .container("curl", Some(&client_id))
            .build(),
    );
    api.apply(
        "services",
        ksight_integration_tests::fake_apiserver::service(
            "shop",
            "web",
            WEB_CLUSTER_IP,
            &[("http", port, port)],
            &[],
        ),
    );
    api.apply(
        "endpointslices",
        ksight_integration_tests::fake_apiserver::endpoint_slice(
            "shop",
            "web-abcde",
            "web",
            &[("http", port)],
            &[("10.244.0.7", "web-1", NODE)],
        ),
    );
    let mut tree = NodeTree::new();
    let (web_dir, web_cg) = tree.cgroup(&pod_container_cgroup(SHOP_WEB_UID, &web_id));
    let (client_dir, client_cg) = tree.cgroup(&pod_container_cgroup(SHOP_CLIENT_UID, &client_id));

    let mut config = kube_config(&api.url());
    if exclude_server {
        config.push_str("[filters]\nexclude_containers = [\"shop/web-1/.*\"]\n");
    }
    let agent = Agent::start(&config);
    wait_for("the metadata to sync", Duration::from_secs(20), || {
        let m = agent.metrics();
        (sample(&m, "ksight_kubernetes_metadata_synced") == Some(1.0)
            && (!exclude_server || sample(&m, "ksight_ignored_cgroups") == Some(2.0)))
        .then_some(())
    });

    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Kill(
        python_in_cgroup(&web_dir, PY_SERVER, &[WEB_CLUSTER_IP, &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the python server"),
    );
    let mut ready = String::new();
    {
        use std::io::{BufRead, BufReader};
        BufReader::new(server.0.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
    }
    assert_eq!(ready.trim(), "ready", "the server did not start");
    let status = python_in_cgroup(&client_dir, PY_CLIENT, &[WEB_CLUSTER_IP, &port.to_string()])
        .status()
        .expect("run the python client");
    assert!(status.success(), "the client: {status}");

    let web = [
        ("namespace", "shop"),
        ("pod", "web-1"),
        ("container", "nginx"),
    ];
    let client = [
        ("namespace", "shop"),
        ("pod", "client-1"),
        ("container", "curl"),
    ];
    let (web_cg_s, client_cg_s) = (web_cg.to_string(), client_cg.to_string());
    let (web_cg_s, client_cg_s) = (web_cg_s.as_str(), client_cg_s.as_str());
    let req = request_labels;
    let mut edge: Vec<(&str, &str)> = client.to_vec();
    edge.push(("cgroup_id", client_cg_s));
    if exclude_server {
        edge.extend([("server_namespace", "shop"), ("server_service", "web")]);
    } else {
        edge.extend([
            ("server_cgroup_id", web_cg_s),
            ("server_namespace", "shop"),
            ("server_pod", "web-1"),
            ("server_container", "nginx"),
        ]);
    }
    let client_ok = req(&client, client_cg_s, "client", "/items/*", "200");
    let client_404 = req(&client, client_cg_s, "client", "/missing", "404");
    let mut server_ok = req(&web, web_cg_s, "server", "/items/*", "200");
    server_ok.push(("service", "web"));
    let mut server_404 = req(&web, web_cg_s, "server", "/missing", "404");
    server_404.push(("service", "web"));

    // What http.client sends: request line, Host, Accept-Encoding; `/items/N` and
    // `/missing` are the same length.
    let sent_bytes = 6 * format!(
        "GET /missing HTTP/1.1\r\nHost: {WEB_CLUSTER_IP}:{port}\r\nAccept-Encoding: identity\r\n\r\n"
    )
    .len();
    let value = |m: &str, name: &str, want: &[(&str, &str)]| the_sample(m, name, want).map(|s| s.1);
    let m = wait_for("the requests and the edge", Duration::from_secs(30), || {
        let m = agent.metrics();
        let done = value(&m, "ksight_http_requests_total", &client_ok) == Some(5.0)
            && value(&m, "ksight_http_requests_total", &client_404) == Some(1.0)
            && value(&m, "ksight_edge_requests_total", &edge) == Some(6.0)
            && value(&m, "ksight_edge_connections_total", &edge) == Some(1.0)
            && (exclude_server
                || (value(&m, "ksight_http_requests_total", &server_ok) == Some(5.0)
                    && value(&m, "ksight_http_requests_total", &server_404) == Some(1.0)));
        done.then_some(m)
    });
    // Settle one more tick: nothing is counted twice.
    std::thread::sleep(Duration::from_secs(2));
    let m2 = agent.metrics();
    let relevant: Vec<&str> = m2
        .lines()
        .filter(|l| {
            (l.starts_with("ksight_http_requests_total") || l.starts_with("ksight_edge_"))
                && !l.contains("_bucket")
                && (l.contains("web-1") || l.contains("client-1"))
        })
        .collect();
    eprintln!("relevant series:\n{}", relevant.join("\n"));
    for m in [&m, &m2] {
        assert_eq!(
            value(m, "ksight_http_requests_total", &client_ok),
            Some(5.0),
            "{relevant:#?}"
        );
        assert_eq!(
            value(m, "ksight_http_requests_total", &client_404),
            Some(1.0),
            "{relevant:#?}"
        );
        assert_eq!(
            value(m, "ksight_edge_requests_total", &edge),
            Some(6.0),
            "{relevant:#?}"
        );
        assert_eq!(
            value(m, "ksight_edge_connections_total", &edge),
            Some(1.0),
            "{relevant:#?}"
        );
        // A 404 is no error (5xx are); every request's latency is recorded; the client
        // sent the six requests http.client writes, byte for byte.
        assert_eq!(
            value(m, "ksight_edge_request_errors_total", &edge),
            Some(0.0),
            "{relevant:#?}"
        );
        assert_eq!(
            value(m, "ksight_edge_request_duration_seconds_count", &edge),
            Some(6.0),
            "{relevant:#?}"
        );
        let mut sent_edge = edge.clone();
        sent_edge.push(("direction", "sent"));
        assert_eq!(
            value(m, "ksight_edge_bytes_total", &sent_edge),
            Some(sent_bytes as f64),
            "{relevant:#?}"
        );
        if exclude_server {
            // The server's cgroup is not exported: no series of its own, and the edge has
            // no server pod or cgroup.
            assert!(
                !m.lines()
                    .any(|l| !l.starts_with('#') && l.contains("pod=\"web-1\"")),
                "{relevant:#?}"
            );
            let (line, _) = the_sample(m, "ksight_edge_requests_total", &edge).unwrap();
            assert!(
                !line.contains("server_pod") && !line.contains("server_cgroup_id"),
                "{line}"
            );
        } else {
            assert_eq!(
                value(m, "ksight_http_requests_total", &server_ok),
                Some(5.0),
                "{relevant:#?}"
            );
            assert_eq!(
                value(m, "ksight_http_requests_total", &server_404),
                Some(1.0),
                "{relevant:#?}"
            );
            // Client series carry no service label.
            assert!(
                !the_sample(m, "ksight_http_requests_total", &client_ok)
                    .unwrap()
                    .0
                    .contains("service=")
            );
        }
        // No series of the client's requests goes elsewhere (e.g. server_address).
        let client_requests: f64 = m
            .lines()
            .filter(|l| {
                l.starts_with("ksight_edge_requests_total{") && l.contains("pod=\"client-1\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert_eq!(client_requests, 6.0, "{relevant:#?}");
    }
    drop(server);
}

#[test]
fn http_requests_and_the_service_map_name_a_local_server_pod() {
    service_map_run(false);
}

#[test]
fn the_service_map_names_an_unexported_server_by_its_cluster_ip() {
    service_map_run(true);
}
