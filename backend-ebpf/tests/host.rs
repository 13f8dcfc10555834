//! Host integration tests: the real programs on the running kernel, with real workloads.
//!
//! They need root (or CAP_BPF + CAP_PERFMON) and a build that embeds the eBPF programs
//! (bpf-linker and nightly rust-src present). Where that is missing they FAIL with the
//! reason; they never skip.

use std::{
    alloc::{Layout, alloc_zeroed, dealloc},
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use event_abi::zerocopy::FromBytes;
use event_abi::{
    AF_INET, BlockEvent, EventHeader, ExecEvent, ExitEvent, ForkEvent, TcpEvent, TcpStateEvent,
    block_op, kind, size_ok, tcp_state, tcp_stats,
};
use ksight_backend_ebpf::{
    EbpfOptions, EbpfSource, Fidelity, Transport, detect, enable_run_time_stats,
};
use ksight_source::{EventSource, RawBatch};
use ksight_testkit::own_cgroup_id;

const WAIT: Duration = Duration::from_secs(2);

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn open(transport: Transport) -> EbpfSource {
    let source = EbpfSource::open(EbpfOptions {
        transport,
        ..EbpfOptions::default()
    })
    .unwrap_or_else(|e| {
        panic!(
            "cannot open the eBPF source; host tests need root and a build with the eBPF \
             programs: {}",
            error_chain(&e)
        )
    });
    assert_eq!(source.transport(), transport);
    source
}

/// A decoded record.
#[derive(Debug)]
enum Rec {
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    TcpState(TcpStateEvent),
    Tcp(TcpEvent),
    Block(BlockEvent),
    SockIo,
}

fn read<T: FromBytes>(bytes: &[u8]) -> T {
    T::read_from_bytes(bytes).expect("a record of its kind's size")
}

/// Decodes one record, checking that it arrived whole and alone.
fn decode(bytes: &[u8]) -> Rec {
    assert!(
        bytes.len() >= size_of::<EventHeader>(),
        "short record: {} bytes",
        bytes.len()
    );
    let h: EventHeader = read(&bytes[..size_of::<EventHeader>()]);
    assert_eq!(
        usize::from(h.size),
        bytes.len(),
        "header size vs record length: {h:?}"
    );
    assert!(size_ok(h.kind, bytes.len()), "size of kind {}", h.kind);
    match h.kind {
        kind::EXEC => Rec::Exec(read(bytes)),
        kind::FORK => Rec::Fork(read(bytes)),
        kind::EXIT => Rec::Exit(read(bytes)),
        kind::TCP_STATE => Rec::TcpState(read(bytes)),
        kind::TCP_RETRANSMIT | kind::TCP_RESET_SENT | kind::TCP_RESET_RECEIVED => {
            Rec::Tcp(read(bytes))
        }
        kind::BLOCK_QUEUE | kind::BLOCK_ISSUE | kind::BLOCK_COMPLETE => Rec::Block(read(bytes)),
        // Checked by tests/sockio.rs.
        kind::SOCK_IO => Rec::SockIo,
        k => panic!("unknown kind {k}"),
    }
}

/// Polls for up to [`WAIT`], until `done` is satisfied by everything seen so far.
fn collect(source: &mut EbpfSource, mut done: impl FnMut(&[Rec]) -> bool) -> Vec<Rec> {
    let start = Instant::now();
    let mut recs = Vec::new();
    let mut batch = RawBatch::new();
    while start.elapsed() < WAIT {
        batch.clear();
        let before = Instant::now();
        source
            .poll(&mut batch, Duration::from_millis(50))
            .expect("poll");
        assert!(
            before.elapsed() < Duration::from_millis(500),
            "poll overran its timeout"
        );
        recs.extend(batch.iter().map(decode));
        if done(&recs) {
            break;
        }
    }
    recs
}

fn c_str(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

fn process_lifecycle(transport: Transport) {
    let mut source = open(transport);
    let me = std::process::id();
    let cgroup = own_cgroup_id();

    let mut child = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    let status = child.wait().expect("wait sh");
    assert_eq!(status.code(), Some(7));

    let is_exec = |r: &Rec| matches!(r, Rec::Exec(e) if e.header.pid == pid);
    let is_fork = |r: &Rec| matches!(r, Rec::Fork(f) if f.child_pid == pid);
    let is_exit = |r: &Rec| matches!(r, Rec::Exit(e) if e.header.tid == pid);
    let recs = collect(&mut source, |rs| {
        rs.iter().any(is_exec) && rs.iter().any(is_fork) && rs.iter().any(is_exit)
    });

    let exec = recs.iter().find_map(|r| match r {
        Rec::Exec(e) if e.header.pid == pid => Some(e),
        _ => None,
    });
    let exec =
        exec.unwrap_or_else(|| panic!("no ExecEvent for pid {pid} ({} records)", recs.len()));
    assert_eq!(c_str(&exec.filename), b"/bin/sh");
    assert_eq!(exec.filename_len, 7);
    assert_eq!(c_str(&exec.comm), b"sh");
    assert_eq!(exec.ppid, me, "exec ppid");
    assert_eq!(exec.header.tid, pid);
    assert_eq!(exec.header.kind, kind::EXEC);
    assert_eq!(exec.header.cgroup_id, cgroup, "child's cgroup id");
    assert_ne!(exec.header.ts_ns, 0);

    let fork = recs.iter().find_map(|r| match r {
        Rec::Fork(f) if f.child_pid == pid => Some(f),
        _ => None,
    });
    let fork = fork.unwrap_or_else(|| panic!("no ForkEvent for child {pid}"));
    assert_eq!(
        fork.child_tgid, pid,
        "a new process is its own thread group"
    );
    assert_eq!(fork.parent_tgid, me);
    assert_eq!(fork.header.pid, me);
    assert_eq!(fork.header.tid, fork.parent_pid);

    let exit = recs.iter().find_map(|r| match r {
        Rec::Exit(e) if e.header.tid == pid => Some(e),
        _ => None,
    });
    let exit = exit.unwrap_or_else(|| panic!("no ExitEvent for pid {pid}"));
    assert_eq!(exit.header.pid, pid);
    assert_eq!(exit.group_dead, 1);
    assert_eq!(exit.exit_status, 7 << 8, "wait(2) status of `exit 7`");
    assert_eq!(c_str(&exit.comm), b"sh");

    assert!(fork.header.ts_ns <= exec.header.ts_ns && exec.header.ts_ns <= exit.header.ts_ns);
    assert!(
        source
            .emitted_per_kind()
            .iter()
            .any(|&(k, n)| k == kind::EXEC && n > 0)
    );
}

#[test]
fn process_lifecycle_ringbuf() {
    process_lifecycle(Transport::RingBuf);
}

#[test]
fn process_lifecycle_perf_array() {
    process_lifecycle(Transport::PerfArray);
}

#[test]
fn tcp_close_counters_and_cgroup() {
    const SENT: usize = 10_000;
    const REPLY: usize = 3_000;
    let mut source = open(Transport::RingBuf);
    let cgroup = own_cgroup_id();

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let server_addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; SENT];
        conn.read_exact(&mut buf).expect("server read");
        conn.write_all(&[7u8; REPLY]).expect("server write");
        // Wait for the client's FIN before closing, so neither side has unread data.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).expect("server read to end");
        assert!(rest.is_empty());
    });
    let mut client = TcpStream::connect(server_addr).expect("connect");
    let client_addr = client.local_addr().unwrap();
    client.write_all(&[1u8; SENT]).expect("client write");
    let mut reply = vec![0u8; REPLY];
    client.read_exact(&mut reply).expect("client read");
    drop(client);
    server.join().expect("server thread");

    let port = |a: SocketAddr| a.port();
    let (cport, sport) = (port(client_addr), port(server_addr));
    let close_of = |r: &Rec, local: u16, remote: u16| match r {
        Rec::TcpState(e)
            if e.new_state == tcp_state::CLOSE
                && e.tuple.sport == local
                && e.tuple.dport == remote =>
        {
            Some(*e)
        }
        _ => None,
    };
    let recs = collect(&mut source, |rs| {
        rs.iter().any(|r| close_of(r, cport, sport).is_some())
            && rs.iter().any(|r| close_of(r, sport, cport).is_some())
    });
    let client_close = recs.iter().find_map(|r| close_of(r, cport, sport));
    let server_close = recs.iter().find_map(|r| close_of(r, sport, cport));
    let client_close = client_close.expect("no CLOSE TcpStateEvent for the client socket");
    let server_close = server_close.expect("no CLOSE TcpStateEvent for the server socket");

    // The kernel's counters (RFC 4898) count sequence space, not payload, and the records
    // carry them as the kernel has them:
    // - bytes_acked includes our FIN once acked, and our SYN only on the connecting side
    //   (an accepted socket starts with its SYN-ACK already counted as acknowledged);
    // - bytes_received includes the peer's FIN, never its SYN.
    // Both closes here are clean: the client's CLOSE comes after its FIN was acked and the
    // server's FIN arrived, the server's when the ACK of its FIN arrived.
    for (who, e, sent, received, own_syn) in [
        ("client", client_close, SENT, REPLY, 1),
        ("server", server_close, REPLY, SENT, 0),
    ] {
        let (fin, peer_fin) = (1, 1);
        assert_eq!(e.stats_valid, tcp_stats::ALL, "{who}: {e:?}");
        assert_eq!(
            e.bytes_acked,
            sent as u64 + own_syn + fin,
            "{who} bytes_acked: {e:?}"
        );
        assert_eq!(
            e.bytes_received,
            received as u64 + peer_fin,
            "{who} bytes_received: {e:?}"
        );
        assert_eq!(e.sock_cgroup_id, cgroup, "{who} socket cgroup");
        assert_eq!(e.tuple.family, AF_INET);
        assert_eq!(e.tuple.saddr[..4], [127, 0, 0, 1]);
        assert_eq!(e.tuple.daddr[..4], [127, 0, 0, 1]);
        assert_ne!(e.sock_id, 0);
        assert!(e.segs_in > 0 && e.segs_out > 0, "{who}: {e:?}");
    }

    // The client socket's whole life: SYN_SENT, ESTABLISHED, ..., CLOSE.
    let client_sock = client_close.sock_id;
    let states: Vec<(u32, u32)> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::TcpState(e) if e.sock_id == client_sock => Some((e.old_state, e.new_state)),
            _ => None,
        })
        .collect();
    assert!(
        states.contains(&(tcp_state::CLOSE, tcp_state::SYN_SENT)),
        "{states:?}"
    );
    assert!(
        states.contains(&(tcp_state::SYN_SENT, tcp_state::ESTABLISHED)),
        "{states:?}"
    );
}

#[test]
fn every_signal_is_fully_observed_on_this_host() {
    let source = open(Transport::RingBuf);
    let fidelity = source.fidelity();
    let names: Vec<_> = fidelity.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "process",
            "tcp",
            "tcp_close_stats",
            "tcp_retransmits",
            "tcp_resets",
            "block",
            "socket_io"
        ]
    );
    for s in &fidelity {
        assert_eq!(
            s.status,
            Fidelity::Full,
            "{}: {:?}",
            s.signal,
            s.tracepoints
        );
    }
    // detect() predicts the same without loading anything.
    let report = detect();
    assert!(report.programs_built && report.btf_present && report.bpf_allowed);
    assert!(report.ringbuf_supported);
    assert!(report.tracefs.is_some());
    assert!(
        report.btf_fields.iter().all(|f| f.offset.is_some()),
        "{:?}",
        report.btf_fields
    );
    assert!(
        report
            .tracepoints
            .iter()
            .all(|t| t.format_ok && t.unusable.is_empty())
    );
    assert_eq!(report.signals, fidelity);
}

#[test]
fn poll_respects_its_timeout_and_counts_no_losses() {
    let mut source = open(Transport::PerfArray);
    // Every program also passes the verifier with the perf output path.
    for s in source.fidelity() {
        assert_eq!(
            s.status,
            Fidelity::Full,
            "{}: {:?}",
            s.signal,
            s.tracepoints
        );
    }
    let mut batch = RawBatch::new();
    for timeout in [
        Duration::ZERO,
        Duration::from_micros(300),
        Duration::from_millis(20),
    ] {
        let start = Instant::now();
        source.poll(&mut batch, timeout).expect("poll");
        assert!(
            start.elapsed() < timeout + Duration::from_millis(100),
            "{timeout:?}"
        );
    }
    let counters = source.counters();
    assert!(!counters.lost_per_cpu.is_empty());
    assert_eq!(counters.lost_total(), 0);
}

#[test]
fn program_stats_count_runs_while_enabled() {
    let stats_guard = enable_run_time_stats().expect("enable BPF run-time stats");
    let mut source = open(Transport::RingBuf);
    let status = Command::new("/bin/true").status().expect("run true");
    assert!(status.success());
    let mut batch = RawBatch::new();
    source
        .poll(&mut batch, Duration::from_millis(100))
        .expect("poll");
    let stats = source.program_stats();
    // One program per kind, and socket I/O's entry program.
    assert_eq!(stats.len(), event_abi::KINDS.len() + 1, "{stats:?}");
    let exec = stats
        .iter()
        .find(|s| s.name == "ks_exec")
        .expect("ks_exec stats");
    assert_eq!(exec.tracepoint, "sched:sched_process_exec");
    assert!(exec.run_count > 0 && exec.run_time_ns > 0, "{exec:?}");
    drop(stats_guard);
}

#[test]
fn block_direct_write_is_queued_issued_and_completed() {
    const LEN: usize = 64 * 1024;
    let mut source = open(Transport::RingBuf);
    let me = std::process::id();

    // O_DIRECT, so the write reaches the device now and in this process's context.
    let path = std::env::temp_dir().join(format!("ksight-ebpf-block-{me}"));
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap_or_else(|e| panic!("O_DIRECT open of {}: {e}", path.display()));
    let layout = Layout::from_size_align(LEN, 4096).unwrap();
    // SAFETY: non-zero size; freed below with the same layout.
    let buf = unsafe { alloc_zeroed(layout) };
    assert!(!buf.is_null());
    // SAFETY: `buf` holds LEN initialised bytes.
    let data = unsafe { std::slice::from_raw_parts(buf, LEN) };
    let written = file.write_all(data).and_then(|()| file.sync_all());
    // SAFETY: allocated above with `layout`.
    unsafe { dealloc(buf, layout) };
    let dev = file.metadata().expect("stat").dev();
    drop(file);
    let _ = fs::remove_file(&path);
    written.expect("O_DIRECT write");
    // The records carry the kernel-internal encoding.
    let kdev = (libc::major(dev) << 20) | libc::minor(dev);

    let mine = |r: &Rec| match r {
        Rec::Block(b)
            if b.header.kind == kind::BLOCK_QUEUE
                && b.header.pid == me
                && b.op == block_op::WRITE =>
        {
            Some(*b)
        }
        _ => None,
    };
    let seen = |rs: &[Rec], k: u16, sector: u64| {
        rs.iter()
            .any(|r| matches!(r, Rec::Block(b) if b.header.kind == k && b.sector == sector))
    };
    let recs = collect(&mut source, |rs| {
        rs.iter().filter_map(mine).any(|q| {
            seen(rs, kind::BLOCK_ISSUE, q.sector) && seen(rs, kind::BLOCK_COMPLETE, q.sector)
        })
    });
    let queued: Vec<BlockEvent> = recs.iter().filter_map(mine).collect();
    assert!(!queued.is_empty(), "no BLOCK_QUEUE write from this process");
    let bytes: u64 = queued
        .iter()
        .filter(|q| q.dev == kdev)
        .map(|q| u64::from(q.bytes))
        .sum();
    assert!(
        bytes >= LEN as u64,
        "queued {bytes} bytes on dev {kdev:#x}: {queued:?}"
    );
    assert!(queued.iter().all(|q| q.error == 0));

    let q = queued
        .iter()
        .find(|q| {
            seen(&recs, kind::BLOCK_ISSUE, q.sector) && seen(&recs, kind::BLOCK_COMPLETE, q.sector)
        })
        .expect("no issue + completion for any queued write");
    let complete = recs.iter().find_map(|r| match r {
        Rec::Block(b) if b.header.kind == kind::BLOCK_COMPLETE && b.sector == q.sector => Some(*b),
        _ => None,
    });
    let complete = complete.unwrap();
    assert_eq!(complete.op, block_op::WRITE);
    assert_eq!(complete.error, 0);
    assert!(complete.bytes > 0);
}

#[test]
fn refused_connection_shows_both_resets() {
    let mut source = open(Transport::RingBuf);
    let cgroup = own_cgroup_id();
    // A port nobody listens on: take a free one and let it go.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect_err("connect must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    let find = |rs: &[Rec], k: u16| {
        rs.iter().find_map(|r| match r {
            Rec::Tcp(e)
                if e.header.kind == k && (e.tuple.sport == port || e.tuple.dport == port) =>
            {
                Some(*e)
            }
            _ => None,
        })
    };
    let recs = collect(&mut source, |rs| {
        find(rs, kind::TCP_RESET_SENT).is_some() && find(rs, kind::TCP_RESET_RECEIVED).is_some()
    });
    let sent = find(&recs, kind::TCP_RESET_SENT).expect("no TCP_RESET_SENT");
    let received = find(&recs, kind::TCP_RESET_RECEIVED).expect("no TCP_RESET_RECEIVED");

    // The kernel answers the SYN with no socket: the tuple is the reset's own direction.
    assert_eq!(sent.sock_id, 0, "{sent:?}");
    assert_eq!(sent.sock_cgroup_id, 0);
    assert_eq!(sent.state, 0, "no socket, no state: {sent:?}");
    assert_eq!(sent.tuple.family, AF_INET);
    assert_eq!(sent.tuple.sport, port);
    assert_eq!(sent.tuple.saddr[..4], [127, 0, 0, 1]);
    assert_eq!(sent.tuple.daddr[..4], [127, 0, 0, 1]);

    // The connecting socket receives it while still in SYN_SENT (a state this
    // tracepoint's format lacks, read from the socket through BTF).
    assert_ne!(received.sock_id, 0);
    assert_eq!(received.sock_cgroup_id, cgroup);
    assert_eq!(received.state, tcp_state::SYN_SENT, "{received:?}");
    assert_eq!(received.tuple.family, AF_INET);
    assert_eq!(received.tuple.dport, port);
    assert_eq!(received.tuple.sport, sent.tuple.dport);
    assert_eq!(received.tuple.saddr[..4], [127, 0, 0, 1]);
}
