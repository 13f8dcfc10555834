//! Render tests: the screen as plain text, compared with files in `cli/src/tui/snapshots/`.
//! After an intended change of the layout, regenerate them with
//! `KSIGHT_UPDATE_SNAPSHOTS=1 cargo test -p ksight tui::canvas` and review the diff.

use super::draw;
use crate::tui::app::{Action, App, Mode, View};
use crate::tui::event::{Event, Sample, SourceStatus};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ksight_attribution::CgroupLabels;
use ksight_engine::Snapshot;
use ksight_engine::signals::{Fidelity, Signal, SignalStatus};
use ksight_engine::snapshot::{
    CgroupRow, CommandRow, ConnectionRow, DeviceRow, DnsRow, HttpRow, LATENCY_BUCKETS_NS, Latency,
    ProcessRow, UdpFlowRow,
};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const UPDATE_ENV: &str = "KSIGHT_UPDATE_SNAPSHOTS";

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..height {
        let line: String = (0..width)
            .map(|x| buffer[(x, y)].symbol().to_string())
            .collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/tui/snapshots")
        .join(format!("{name}.txt"))
}

/// Compares `screen` with the stored snapshot `name`, or stores it when asked to.
fn check(name: &str, screen: &str) {
    let path = snapshot_path(name);
    if std::env::var_os(UPDATE_ENV).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, screen).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; run with {UPDATE_ENV}=1 to create it. Screen:\n{screen}",
            path.display()
        )
    });
    assert!(
        expected == screen,
        "screen differs from {} (rerun with {UPDATE_ENV}=1 if intended)\n--- expected\n{expected}\n--- got\n{screen}",
        path.display()
    );
}

fn process(pid: u32, ppid: Option<u32>, comm: &str, filename: Option<&str>) -> ProcessRow {
    ProcessRow {
        pid,
        ppid,
        comm: comm.into(),
        filename: filename.map(String::from),
        cgroup_id: 5120,
        ..Default::default()
    }
}

/// A connection of the workload (pid 4242).
fn connection(
    (saddr, sport): (&str, u16),
    (daddr, dport): (&str, u16),
    state: &str,
    bytes: Option<(u64, u64)>,
    duration_us: u64,
) -> ConnectionRow {
    ConnectionRow {
        saddr: saddr.into(),
        sport,
        daddr: daddr.into(),
        dport,
        role: "active".into(),
        pid: 4242,
        comm: "ksight-workload".into(),
        cgroup_id: 5120,
        state: state.into(),
        bytes_sent: bytes.map(|b| b.0),
        bytes_received: bytes.map(|b| b.1),
        duration_us,
        ..Default::default()
    }
}

/// A UDP flow of one interval.
fn udp_flow(
    (saddr, sport): (&str, u16),
    (daddr, dport): (&str, u16),
    pid: u32,
    (sent, received): (u64, u64),
    (out, r#in): (u64, u64),
) -> UdpFlowRow {
    UdpFlowRow {
        saddr: saddr.into(),
        sport,
        daddr: daddr.into(),
        dport,
        pid,
        comm: if pid == 0 {
            String::new()
        } else {
            "ksight-workload".into()
        },
        cgroup_id: 5120,
        bytes_sent: sent,
        bytes_received: received,
        datagrams_sent: out,
        datagrams_received: r#in,
    }
}

/// DNS queries of one interval, answered with these p50/p99 (µs) or never.
fn dns_query(qname: &str, qtype: &str, rcode: &str, count: u64, p: Option<(f64, f64)>) -> DnsRow {
    DnsRow {
        role: "client".into(),
        server: "10.0.0.2:53".into(),
        qname: qname.into(),
        qtype: qtype.into(),
        rcode: rcode.into(),
        count,
        latency_us: p.map_or(Latency::default(), |(p50, p99)| Latency {
            count,
            p50,
            p99,
            max: p99,
        }),
        timeouts: if p.is_none() { count } else { 0 },
        cgroup_id: 5120,
        ..Default::default()
    }
}

/// Requests of one interval of cgroup 5120, answered with these p50/p99 (µs): all but one
/// in the bucket of the p50, one in that of the p99.
fn request(
    (protocol, role): (&str, &str),
    (method, route): (&str, &str),
    status: u16,
    (count, errors): (u64, u64),
    (p50, p99): (f64, f64),
) -> HttpRow {
    HttpRow {
        protocol: protocol.into(),
        role: role.into(),
        method: method.into(),
        route: route.into(),
        status,
        grpc_status: (protocol == "grpc").then(|| if errors > 0 { "14" } else { "0" }.into()),
        count,
        errors,
        latency_us: Latency {
            count,
            p50,
            p99,
            max: p99,
        },
        cgroup_id: 5120,
        latency_buckets: {
            let bucket = |us: f64| LATENCY_BUCKETS_NS.partition_point(|&b| (b as f64) < us * 1e3);
            let mut b = vec![0; LATENCY_BUCKETS_NS.len() + 1];
            b[bucket(p50)] += count - 1;
            b[bucket(p99)] += 1;
            b
        },
        ..Default::default()
    }
}

/// Two intervals of a small, known host.
fn fixture() -> App {
    let mut app = App::new(Mode::Live, Duration::from_secs(1));
    app.signals = [
        (
            "process",
            "sched:sched_process_exec sched:sched_process_fork sched:sched_process_exit",
        ),
        ("tcp", "sock:inet_sock_set_state"),
        ("tcp_close_stats", "sock:inet_sock_set_state"),
        ("tcp_retransmits", "tcp:tcp_retransmit_skb"),
        ("tcp_resets", "tcp:tcp_send_reset tcp:tcp_receive_reset"),
        (
            "block",
            "block:block_bio_queue block:block_rq_issue block:block_rq_complete",
        ),
        ("socket_io", "raw_syscalls:sys_exit"),
    ]
    .iter()
    .map(|(name, tps)| SignalStatus {
        signal: Signal::from_name(name).unwrap(),
        tracepoints: tps.split(' ').map(String::from).collect(),
        status: Fidelity::Full,
    })
    .collect();
    app.backend_reason = "chosen automatically: the eBPF programs load and attach here".into();

    let mut s = Snapshot {
        backend: "ebpf".into(),
        events: 1234,
        lost_events_per_cpu: vec![0, 0],
        ..Default::default()
    };
    let workload = "/work/main/target/debug/ksight-workload";
    s.process.execs = 4;
    s.process.forks = 5;
    s.process.exits = 3;
    s.process.exit_codes = [("0".to_string(), 2), ("3".to_string(), 1)].into();
    s.process.processes = vec![
        ProcessRow {
            execs: 1,
            tcp_bytes_sent: 10_000,
            tcp_bytes_received: 10_000,
            exit_code: Some(0),
            ..process(4242, Some(4200), "ksight-workload", Some(workload))
        },
        ProcessRow {
            execs: 1,
            ..process(4300, Some(4200), "sleep", Some("/usr/bin/sleep"))
        },
        ProcessRow {
            execs: 1,
            exit_code: Some(3),
            ..process(4301, Some(4200), "sh", Some("/bin/sh"))
        },
        ProcessRow {
            forks: 2,
            ..process(4200, None, "bash", None)
        },
        ProcessRow {
            cgroup_id: 77,
            block_write_bytes: 65536,
            ..process(812, None, "systemd-journal", None)
        },
    ];
    s.tcp.connects = 2;
    s.tcp.accepts = 2;
    s.tcp.closes = 3;
    s.tcp.resets_sent = 1;
    s.tcp.bytes_sent = 10_000;
    s.tcp.bytes_received = 10_000;
    s.tcp.connections = vec![
        connection(
            ("127.0.0.1", 40112),
            ("127.0.0.1", 35001),
            "CLOSE",
            Some((4000, 6000)),
            1500,
        ),
        ConnectionRow {
            role: "passive".into(),
            ..connection(
                ("127.0.0.1", 35001),
                ("127.0.0.1", 40112),
                "CLOSE",
                Some((6000, 4000)),
                1400,
            )
        },
        ConnectionRow {
            resets_sent: 1,
            ..connection(
                ("127.0.0.1", 40114),
                ("127.0.0.1", 35001),
                "CLOSE",
                Some((0, 0)),
                52_000,
            )
        },
        ConnectionRow {
            role: "passive".into(),
            pid: 0,
            comm: String::new(),
            // Open before capture started: bytes since then, from the socket calls.
            since_start: true,
            ..connection(
                ("10.0.0.5", 22),
                ("10.0.0.9", 51234),
                "ESTABLISHED",
                Some((2000, 48_000)),
                3_000_000,
            )
        },
    ];
    s.udp.flows = vec![
        udp_flow(
            ("10.0.0.5", 40053),
            ("10.0.0.2", 53),
            4242,
            (300, 900),
            (3, 3),
        ),
        udp_flow(("10.0.0.5", 123), ("10.0.0.3", 123), 0, (48, 48), (1, 1)),
    ];
    s.udp.bytes_sent = 348;
    s.udp.bytes_received = 948;
    s.dns.queries = vec![
        dns_query("api.shop.test", "A", "NOERROR", 2, Some((850.0, 1900.0))),
        dns_query("nope.test", "AAAA", "NXDOMAIN", 1, Some((400.0, 400.0))),
    ];
    s.socket_io.calls = 40;
    s.http.requests = vec![
        request(
            ("http", "server"),
            ("GET", "/api/items/*"),
            200,
            (40, 0),
            (850.0, 1900.0),
        ),
        request(
            ("http", "server"),
            ("POST", "/api/orders"),
            503,
            (2, 2),
            (12_000.0, 15_000.0),
        ),
        request(
            ("grpc", "client"),
            ("POST", "/shop.Cart/Add"),
            200,
            (5, 0),
            (2100.0, 2600.0),
        ),
    ];
    s.redis.commands = vec![CommandRow {
        role: "client".into(),
        command: "GET".into(),
        count: 30,
        latency_us: Latency {
            count: 30,
            p50: 90.0,
            p99: 240.0,
            max: 300.0,
        },
        cgroup_id: 5120,
        ..Default::default()
    }];
    s.block.devices = vec![
        DeviceRow {
            dev: "259:0".into(),
            name: "nvme0n1".into(),
            reads: 120,
            writes: 30,
            read_bytes: 120 * 4096,
            write_bytes: 65536 + 30 * 4096,
            latency_us: Latency {
                count: 150,
                p50: 87.0,
                p99: 1234.0,
                max: 5100.0,
            },
            ..Default::default()
        },
        DeviceRow {
            dev: "7:0".into(),
            name: "loop0".into(),
            writes: 7,
            write_bytes: 4 * 65536 + 3 * 4096,
            latency_us: Latency {
                count: 7,
                p50: 40.0,
                p99: 300.0,
                max: 310.0,
            },
            ..Default::default()
        },
    ];
    s.cgroups = vec![
        CgroupRow {
            cgroup_id: 5120,
            execs: 4,
            forks: 5,
            exits: 3,
            tcp_connections: 3,
            tcp_bytes_sent: 10_000,
            tcp_bytes_received: 10_000,
            ..Default::default()
        },
        CgroupRow {
            cgroup_id: 77,
            block_write_bytes: 65536,
            ..Default::default()
        },
    ];
    let first = Sample {
        snapshot: s.clone(),
        interval: Duration::from_secs(1),
        at: Duration::from_secs(1),
        cgroup_labels: vec![
            (5120, unit("/user.slice/user-1000.slice/session-1.scope")),
            (77, unit("/system.slice/systemd-journald.service")),
        ],
    };
    app.handle(Event::Sample(Box::new(first)));

    // Second interval: the sleep lives on, the journal writes again.
    let mut s2 = Snapshot {
        backend: "ebpf".into(),
        events: 310,
        lost_events_per_cpu: vec![0, 0],
        ..Default::default()
    };
    s2.process.processes = vec![
        process(4300, Some(4200), "sleep", Some("/usr/bin/sleep")),
        process(4200, None, "bash", None),
        ProcessRow {
            cgroup_id: 77,
            block_write_bytes: 8192,
            ..process(812, None, "systemd-journal", None)
        },
    ];
    s2.cgroups = vec![CgroupRow {
        cgroup_id: 77,
        block_write_bytes: 8192,
        ..Default::default()
    }];
    s2.tcp.connections = vec![ConnectionRow {
        bytes_sent: Some(3000),
        bytes_received: Some(96_000),
        duration_us: 4_000_000,
        ..s.tcp.connections[3].clone()
    }];
    s2.udp.flows = vec![udp_flow(
        ("10.0.0.5", 40053),
        ("10.0.0.2", 53),
        4242,
        (100, 300),
        (1, 1),
    )];
    s2.udp.bytes_sent = 100;
    s2.udp.bytes_received = 300;
    s2.dns.queries = vec![dns_query("slow.test", "A", "TIMEOUT", 1, None)];
    s2.dns.malformed = 1;
    s2.socket_io.calls = 12;
    // Two statuses of one route: one row, its quantiles bounded.
    s2.http.requests = vec![
        request(
            ("http", "server"),
            ("GET", "/api/items/*"),
            200,
            (19, 0),
            (800.0, 1500.0),
        ),
        request(
            ("http", "server"),
            ("GET", "/api/items/*"),
            500,
            (1, 1),
            (30_000.0, 30_000.0),
        ),
    ];
    s2.protocols.unanswered = 1;
    s2.socket_io.payload_faults = 1;
    s2.block.devices = vec![DeviceRow {
        dev: "259:0".into(),
        name: "nvme0n1".into(),
        writes: 2,
        write_bytes: 8192,
        latency_us: Latency {
            count: 2,
            p50: 95.0,
            p99: 120.0,
            max: 120.0,
        },
        ..Default::default()
    }];
    app.handle(Event::Sample(Box::new(Sample {
        snapshot: s2,
        interval: Duration::from_secs(1),
        at: Duration::from_secs(2),
        cgroup_labels: vec![],
    })));
    app
}

fn press(app: &mut App, code: KeyCode) -> Action {
    app.handle(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn view(app: &mut App, v: View) {
    let key = View::ALL.iter().position(|&x| x == v).unwrap() as u8 + b'1';
    press(app, KeyCode::Char(key as char));
}

#[test]
fn processes_80x24() {
    let app = fixture();
    check("processes_80x24", &render(&app, 80, 24));
}

#[test]
fn processes_wide() {
    let app = fixture();
    check("processes_160x16", &render(&app, 160, 16));
}

#[test]
fn processes_sorted_by_command_and_filtered() {
    let mut app = fixture();
    for _ in 0..1 {
        press(&mut app, KeyCode::Char('<'));
    }
    press(&mut app, KeyCode::Char('/'));
    for c in "sh".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    check("processes_filter_editing", &render(&app, 80, 12));
    press(&mut app, KeyCode::Enter);
    check("processes_sorted_filtered", &render(&app, 80, 12));
}

#[test]
fn containers_80x24() {
    let mut app = fixture();
    view(&mut app, View::Cgroups);
    check("containers_80x24", &render(&app, 80, 24));
}

#[test]
fn tcp_80x24_and_wide() {
    let mut app = fixture();
    view(&mut app, View::Tcp);
    check("tcp_80x24", &render(&app, 80, 24));
    check("tcp_160x14", &render(&app, 160, 14));
}

#[test]
fn udp_and_dns_80x24() {
    let mut app = fixture();
    view(&mut app, View::Udp);
    let screen = render(&app, 80, 24);
    check("udp_80x24", &screen);
    // This interval's rates; totals since start.
    let wide = render(&app, 160, 12);
    check("udp_160x12", &wide);
    let flow = rows_with(&wide, "10.0.0.2:53");
    assert_eq!(flow.len(), 1, "{wide}");
    assert!(
        flow[0].contains("100B") && flow[0].contains("400B"),
        "{wide}"
    );
    view(&mut app, View::Dns);
    let screen = render(&app, 80, 24);
    check("dns_80x24", &screen);
    assert!(
        rows_with(&screen, "slow.test")[0].contains("TIMEOUT"),
        "{screen}"
    );
    check("dns_160x12", &render(&app, 160, 12));
}

#[test]
fn requests_80x24_and_wide() {
    let mut app = fixture();
    view(&mut app, View::Requests);
    let screen = render(&app, 80, 24);
    check("requests_80x24", &screen);
    // This interval: 20 requests, 1 failed; the quiet rows keep their last latency.
    let items = rows_with(&screen, "/api/items/*");
    assert_eq!(items.len(), 1, "{screen}");
    assert!(
        items[0].contains(" 20 ")
            && items[0].contains("5.0")
            && items[0].contains("≤1.0ms   ≤30ms"),
        "{screen}"
    );
    let wide = render(&app, 160, 12);
    check("requests_160x12", &wide);
    let items = rows_with(&wide, "/api/items/*");
    assert!(items[0].contains("200×59 500×1"), "{wide}");
    let redis = rows_with(&wide, "redis");
    assert!(
        redis[0].contains("240µs") && redis[0].contains(" 30 "),
        "{wide}"
    );
}

#[test]
fn open_connections_show_bytes_so_far_and_their_rate() {
    let mut app = fixture();
    view(&mut app, View::Tcp);
    let screen = render(&app, 160, 14);
    let ssh = rows_with(&screen, "10.0.0.9:51234");
    assert_eq!(ssh.len(), 1, "{screen}");
    // ~: open before capture started; 1000 B/s and 48000 B/s over the last interval.
    assert!(
        ssh[0].contains("~2.9K") && ssh[0].contains("~94K"),
        "{screen}"
    );
    assert!(
        ssh[0].contains("1.0K") && ssh[0].contains("47K"),
        "{screen}"
    );
}

#[test]
fn health_shows_socket_io_counters() {
    let mut app = fixture();
    view(&mut app, View::Health);
    let screen = render(&app, 160, 30);
    let io = rows_with(&screen, "socket I/O");
    assert!(
        io[0].contains("payload faults 1") && io[0].contains("DNS malformed 1"),
        "{screen}"
    );
    assert!(!rows_with(&screen, "socket_io").is_empty(), "{screen}");
}

#[test]
fn disks_80x24() {
    let mut app = fixture();
    view(&mut app, View::Disks);
    check("disks_80x24", &render(&app, 80, 24));
}

#[test]
fn health_80x24() {
    let mut app = fixture();
    view(&mut app, View::Health);
    check("health_80x24", &render(&app, 80, 24));
}

/// After a fallback to the module, Health shows the module's own report and the real
/// reason, not eBPF's.
#[test]
fn health_shows_the_backend_that_runs() {
    let mut app = fixture();
    app.backend_reason = "chosen automatically: the eBPF backend cannot run here \
                          (permission denied); the ksight module is loaded"
        .into();
    app.signals = ksight_backend_kmod::signal_status(&ksight_backend_kmod::KmodStats {
        available: 0b111_1111_1110 & !(1 << event_abi::kind::BLOCK_ISSUE),
        attached: 0b111_1111_1110 & !(1 << event_abi::kind::BLOCK_ISSUE),
        enabled: 0b111_1111_1110,
        capturing: 1,
        ..Default::default()
    });
    app.handle(Event::Sample(Box::new(Sample {
        snapshot: Snapshot {
            backend: "kmod".into(),
            ..Default::default()
        },
        interval: Duration::from_secs(1),
        at: Duration::from_secs(3),
        cgroup_labels: vec![],
    })));
    view(&mut app, View::Health);
    let screen = render(&app, 160, 40);
    assert!(
        screen.contains("live capture by this process, kmod backend"),
        "{screen}"
    );
    assert!(
        screen.contains("the eBPF backend cannot run here (permission denied)"),
        "{screen}"
    );
    let block = rows_with(&screen, "block ");
    assert!(
        block
            .iter()
            .any(|r| r
                .contains("degraded: block:block_rq_issue: the module found no such tracepoint")),
        "{screen}"
    );
    assert!(
        !screen.contains("the eBPF programs load and attach here"),
        "{screen}"
    );
}

#[test]
fn help_overlay() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char('?'));
    check("help_80x24", &render(&app, 80, 24));
}

#[test]
fn too_small() {
    let app = fixture();
    check("too_small_50x10", &render(&app, 50, 10));
    // Tiny sizes draw nothing garbled and do not panic.
    for (w, h) in [(1, 1), (10, 3), (59, 30), (200, 11), (0, 0)] {
        let _ = render(&app, w, h);
    }
}

#[test]
fn every_view_survives_every_size() {
    let mut app = fixture();
    for v in View::ALL {
        view(&mut app, v);
        for (w, h) in [(60, 12), (61, 13), (80, 24), (100, 40), (250, 60)] {
            let _ = render(&app, w, h);
        }
    }
    press(&mut app, KeyCode::Char('?'));
    let _ = render(&app, 60, 12);
}

#[test]
fn attached_and_reconnecting() {
    let mut app = App::new(
        Mode::Attached(PathBuf::from("/run/ksight/agent.sock")),
        Duration::from_secs(2),
    );
    app.handle(Event::Source(SourceStatus::Reconnecting {
        error: "socket I/O: Connection refused (os error 111)".into(),
        attempt: 3,
        retry_in: Duration::from_secs(1),
    }));
    check("attached_reconnecting_80x24", &render(&app, 80, 24));
}

#[test]
fn paused_and_collection_failed() {
    let mut app = fixture();
    press(&mut app, KeyCode::Char(' '));
    app.handle(Event::Source(SourceStatus::Failed(
        "reading the ring buffer: Bad file descriptor".into(),
    )));
    check("paused_failed_80x12", &render(&app, 80, 12));
}

/// Labels of a systemd unit's cgroup at `path`.
fn unit(path: &str) -> Arc<CgroupLabels> {
    Arc::new(CgroupLabels {
        path: path.into(),
        unit: path.rsplit('/').next().unwrap().into(),
        ..CgroupLabels::default()
    })
}

/// Labels of (a cgroup of) Docker container `0123456789ab…`.
fn docker(path: &str) -> Arc<CgroupLabels> {
    Arc::new(CgroupLabels {
        path: path.into(),
        runtime: "docker".into(),
        container_id: "0123456789abcdef0123456789abcdef".into(),
        ..CgroupLabels::default()
    })
}

/// Labels of container `container` of pod `web-7d9f8b6c5-<suffix>` of Deployment `web`, in
/// namespace `shop`.
fn web_pod(suffix: &str, container: &str) -> Arc<CgroupLabels> {
    let uid = format!("0f1c6a3e-{suffix}");
    Arc::new(CgroupLabels {
        path: format!("/kubepods/pod{uid}/{container}"),
        runtime: "containerd".into(),
        container_id: format!("{container}-{suffix}"),
        namespace: "shop".into(),
        pod: format!("web-7d9f8b6c5-{suffix}"),
        pod_uid: uid,
        container: container.into(),
        workload_kind: "Deployment".into(),
        workload: "web".into(),
        ..CgroupLabels::default()
    })
}

/// The fixture, and a third interval with a Docker container in two cgroups (its scope and
/// the scope's `init.scope`) and a pod of Deployment `web` with two containers, all
/// labelled.
fn fixture_with_owners() -> App {
    let mut app = fixture();
    let docker_scope = "/system.slice/docker-0123456789abcdef0123456789abcdef.scope";
    let cgroup = |cgroup_id, execs, tcp_bytes_sent| CgroupRow {
        cgroup_id,
        execs,
        tcp_bytes_sent,
        ..Default::default()
    };
    let mut s = Snapshot {
        backend: "ebpf".into(),
        ..Default::default()
    };
    s.cgroups = vec![
        cgroup(900, 2, 1000),
        cgroup(901, 3, 2000),
        cgroup(910, 1, 0),
        cgroup(911, 4, 0),
    ];
    s.process.processes = vec![
        ProcessRow {
            cgroup_id: 901,
            ..process(5000, None, "nginx", None)
        },
        ProcessRow {
            cgroup_id: 911,
            ..process(5001, None, "envoy", None)
        },
    ];
    app.handle(Event::Sample(Box::new(Sample {
        snapshot: s,
        interval: Duration::from_secs(1),
        at: Duration::from_secs(3),
        cgroup_labels: vec![
            (900, docker(docker_scope)),
            (901, docker(&format!("{docker_scope}/init.scope"))),
            (910, web_pod("x2x4k", "nginx")),
            (911, web_pod("x2x4k", "envoy-sidecar")),
        ],
    })));
    view(&mut app, View::Cgroups);
    app
}

/// Table lines (below the header) that contain `text`.
fn rows_with<'a>(screen: &'a str, text: &str) -> Vec<&'a str> {
    screen
        .lines()
        .skip(4)
        .filter(|l| l.contains(text))
        .collect()
}

/// Wide enough for every column of the Containers view and whole owner names.
const WIDE: u16 = 140;

#[test]
fn containers_show_owners_and_group_by_them() {
    let mut app = fixture_with_owners();
    let screen = render(&app, WIDE, 24);
    let header = screen.lines().nth(3).unwrap();
    assert!(header.trim_end().ends_with("OWNER"), "{screen}");
    assert!(!screen.contains("PATH"), "{screen}");
    assert!(!screen.contains("grouped by"), "{screen}");
    assert!(screen.contains("o group"), "the key is hinted:\n{screen}");
    // Not grouped: the container's two cgroups are two rows.
    let docker = rows_with(&screen, "docker:0123456789ab");
    assert_eq!(docker.len(), 2, "{screen}");
    assert!(docker.iter().any(|r| r.trim_start().starts_with("900 ")));
    assert!(docker.iter().any(|r| r.trim_start().starts_with("901 ")));

    // `o`: by owner. One row, the lowest id and the one more cgroup it sums; rates
    // (2 + 3 execs/s), totals (1000 + 2000 bytes) and processes added up.
    press(&mut app, KeyCode::Char('o'));
    let screen = render(&app, WIDE, 24);
    assert!(screen.contains("grouped by owner"), "{screen}");
    assert!(screen.contains("owners 5 (6 cgroups)"), "{screen}");
    let docker = rows_with(&screen, "docker:0123456789ab");
    assert_eq!(docker.len(), 1, "{screen}");
    let cells: Vec<&str> = docker[0].split_whitespace().collect();
    // CGROUP PROCS EXEC/s FORK/s EXIT/s CONNS TCP TX TCP RX DISK R DISK W WORKLOAD OWNER
    // (a Docker container has no workload: empty)
    assert_eq!(
        cells,
        [
            "900+1",
            "1",
            "5.0",
            "0",
            "0",
            "0",
            "2.9K",
            "0",
            "0",
            "0",
            "docker:0123456789ab"
        ],
        "{screen}"
    );
    assert_eq!(rows_with(&screen, "shop/web").len(), 2, "{screen}");
    // Sorted by EXEC/s, highest first: the container (5/s) above the sidecar (4/s).
    let at = |text: &str| screen.find(text).unwrap();
    assert!(at("docker:0123456789ab") < at("envoy-sidecar"), "{screen}");

    // The filter applies to the groups.
    press(&mut app, KeyCode::Char('/'));
    for c in "docker".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    press(&mut app, KeyCode::Enter);
    let screen = render(&app, WIDE, 24);
    assert!(screen.contains("owners 1 (2 cgroups)"), "{screen}");
    press(&mut app, KeyCode::Esc);

    // By pod: the pod's two containers are one row; by workload and by namespace, the
    // same here.
    press(&mut app, KeyCode::Char('o'));
    let screen = render(&app, WIDE, 24);
    assert!(screen.contains("grouped by pod"), "{screen}");
    let pod = rows_with(&screen, "shop/web-7d9f8b6c5-x2x4k");
    assert_eq!(pod.len(), 1, "{screen}");
    assert!(pod[0].trim_start().starts_with("910+1 "), "{screen}");
    assert!(!screen.contains("nginx"), "{screen}");
    // By workload: the Deployment (its one pod here; see
    // `containers_group_a_deployments_pods_by_workload`).
    press(&mut app, KeyCode::Char('o'));
    let screen = render(&app, WIDE, 24);
    assert!(screen.contains("grouped by workload"), "{screen}");
    let workload = rows_with(&screen, "shop/Deployment/web");
    assert_eq!(workload.len(), 1, "{screen}");
    assert!(workload[0].trim_start().starts_with("910+1 "), "{screen}");
    press(&mut app, KeyCode::Char('o'));
    let screen = render(&app, WIDE, 24);
    assert!(screen.contains("grouped by namespace"), "{screen}");
    let namespace = rows_with(&screen, " shop");
    assert_eq!(namespace.len(), 1, "{screen}");
    assert!(namespace[0].trim_end().ends_with(" shop"), "{screen}");

    // And back to one row per cgroup.
    press(&mut app, KeyCode::Char('o'));
    let screen = render(&app, WIDE, 24);
    assert!(!screen.contains("grouped by"), "{screen}");
    assert_eq!(rows_with(&screen, "docker:0123456789ab").len(), 2);
}

#[test]
fn containers_show_the_workload_when_wide() {
    let app = fixture_with_owners();
    let screen = render(&app, WIDE, 24);
    let header = screen.lines().nth(3).unwrap();
    assert!(header.contains(" WORKLOAD "), "{screen}");
    assert!(header.trim_end().ends_with("OWNER"), "{screen}");
    let nginx = rows_with(&screen, "shop/web-7d9f8b6c5-x2x4k/nginx");
    assert_eq!(nginx.len(), 1, "{screen}");
    assert!(
        nginx[0].contains(" Deployment/web   shop/web-7d9f8b6c5-x2x4k/nginx"),
        "{screen}"
    );
    // Empty for a cgroup outside Kubernetes.
    let journal = rows_with(&screen, "systemd-journald.service")[0];
    let column = |title: &str| header[..header.find(title).unwrap()].chars().count();
    let (workload_at, owner_at) = (column("WORKLOAD"), column("OWNER"));
    let cell: String = journal
        .chars()
        .skip(workload_at)
        .take(owner_at - workload_at)
        .collect();
    assert_eq!(cell.trim(), "", "{screen}");
    // The filter matches it.
    let mut app = app;
    press(&mut app, KeyCode::Char('/'));
    for c in "deployment/".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    press(&mut app, KeyCode::Enter);
    let screen = render(&app, WIDE, 24);
    assert!(screen.contains("cgroups 2 "), "{screen}");
    // Narrow terminals drop it first.
    let screen = render(&app, 100, 24);
    assert!(!screen.contains("WORKLOAD"), "{screen}");
    assert!(screen.contains("CONNS"), "{screen}");
}

#[test]
fn containers_group_a_deployments_pods_by_workload() {
    let mut app = fixture_with_owners();
    // A second pod of the Deployment, and its labels.
    let mut s = Snapshot {
        backend: "ebpf".into(),
        ..Default::default()
    };
    s.cgroups = vec![CgroupRow {
        cgroup_id: 920,
        execs: 6,
        tcp_bytes_sent: 3000,
        ..Default::default()
    }];
    app.handle(Event::Sample(Box::new(Sample {
        snapshot: s,
        interval: Duration::from_secs(1),
        at: Duration::from_secs(4),
        cgroup_labels: vec![(920, web_pod("q8r7t", "nginx"))],
    })));
    for _ in 0..3 {
        press(&mut app, KeyCode::Char('o'));
    }
    assert_eq!(app.grouping.label(), Some("workload"));
    let screen = render(&app, WIDE, 24);
    assert!(screen.contains("grouped by workload"), "{screen}");
    let rows = rows_with(&screen, "Deployment/web");
    assert_eq!(rows.len(), 1, "{screen}");
    let cells: Vec<&str> = rows[0].split_whitespace().collect();
    // 910 and 911 (the first pod: the envoy process, no bytes) and 920 (the second pod:
    // 3000 bytes); rates of this interval (0, 0 and 6 execs/s).
    assert_eq!(
        cells,
        [
            "910+2",
            "1",
            "6.0",
            "0",
            "0",
            "0",
            "2.9K",
            "0",
            "0",
            "0",
            "Deployment/web",
            "shop/Deployment/web"
        ],
        "{screen}"
    );
}

#[test]
fn long_owner_names_keep_both_ends() {
    let app = fixture_with_owners();
    // 80 columns: OWNER is 15 wide.
    let screen = render(&app, 80, 24);
    assert!(screen.contains("shop/we…k/nginx"), "{screen}");
    assert!(screen.contains("shop/we…sidecar"), "{screen}");
    // Container ids are known by their prefix.
    assert!(screen.contains("docker:0123456…"), "{screen}");
}

#[test]
fn processes_show_their_cgroups_owner_when_wide() {
    let app = {
        let mut app = fixture_with_owners();
        view(&mut app, View::Processes);
        app
    };
    let screen = render(&app, 160, 16);
    assert!(screen.lines().nth(3).unwrap().contains("OWNER"), "{screen}");
    let nginx = screen.lines().find(|l| l.contains(" nginx ")).unwrap();
    assert!(nginx.contains("docker:0123456789ab"), "{screen}");
    let envoy = screen.lines().find(|l| l.contains(" envoy ")).unwrap();
    assert!(envoy.contains("shop/web-…oy-sidecar"), "{screen}");
}
