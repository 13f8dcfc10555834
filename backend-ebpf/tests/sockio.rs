//! Socket I/O on the running kernel: exact records for a workload this test controls —
//! TCP both ways, UDP connected and unconnected (IPv4 and IPv6), `sendmmsg`/`recvmmsg`,
//! `sendfile` and `splice` — and none for files and pipes.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) and a build with the eBPF programs; fails, never
//! skips, without them. One test in this binary, so that every socket call of this
//! process is the workload's.

use std::{
    fs,
    io::{Read as _, Write as _},
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use event_abi::zerocopy::FromBytes;
use event_abi::{
    AF_INET, AF_INET6, DEFAULT_SNAPLEN, EventHeader, SockIoEvent, kind, size_ok, sock_call,
    sock_dir, sock_flags,
};
use ksight_backend_ebpf::{EbpfOptions, EbpfSource};
use ksight_source::{EventSource, RawBatch};
use ksight_testkit::workload::{recv_mmsg, send_mmsg};

/// A socket I/O record and its payload.
#[derive(Debug, Clone)]
struct Io {
    ev: SockIoEvent,
    payload: Vec<u8>,
}

fn decode(bytes: &[u8]) -> Option<Io> {
    let h = EventHeader::read_from_prefix(bytes).expect("a header").0;
    assert_eq!(
        usize::from(h.size),
        bytes.len(),
        "header size vs frame: {h:?}"
    );
    assert!(
        size_ok(h.kind, bytes.len()),
        "size of kind {}: {}",
        h.kind,
        bytes.len()
    );
    if h.kind != kind::SOCK_IO {
        return None;
    }
    let ev = SockIoEvent::read_from_prefix(bytes)
        .expect("a socket record")
        .0;
    let start = size_of::<SockIoEvent>();
    let len = usize::from(ev.payload_len);
    assert!(
        start + len <= bytes.len(),
        "payload past the record: {ev:?}"
    );
    assert!(
        bytes[start + len..].iter().all(|&b| b == 0),
        "padding after the payload is not zero: {ev:?}"
    );
    Some(Io {
        ev,
        payload: bytes[start..start + len].to_vec(),
    })
}

/// Polls until `done` holds for this process's records, or fails after 5 s.
fn collect(source: &mut EbpfSource, done: impl Fn(&[Io]) -> bool) -> Vec<Io> {
    let me = std::process::id();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut batch = RawBatch::new();
    while start.elapsed() < Duration::from_secs(5) {
        batch.clear();
        source
            .poll(&mut batch, Duration::from_millis(50))
            .expect("poll");
        out.extend(
            batch
                .iter()
                .filter_map(decode)
                .filter(|r| r.ev.header.pid == me),
        );
        if done(&out) {
            return out;
        }
    }
    panic!(
        "records still missing after 5 s; emitted per kind {:?}, read errors {:?}; have: {out:#?}",
        source.emitted_per_kind(),
        source.read_errors_per_kind()
    );
}

fn port(a: &SocketAddr) -> u16 {
    a.port()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[test]
fn socket_calls_become_exact_records() {
    let mut source = EbpfSource::open(EbpfOptions {
        kinds: Some(1 << kind::SOCK_IO),
        ..EbpfOptions::default()
    })
    .unwrap_or_else(|e| {
        panic!("cannot open the eBPF source (root and the eBPF build needed): {e}")
    });
    let socket_io = source
        .fidelity()
        .into_iter()
        .find(|s| s.signal == ksight_source::signals::Signal::SocketIo)
        .expect("socket_io in the fidelity report");
    assert_eq!(
        socket_io.status,
        ksight_source::signals::Fidelity::Full,
        "{socket_io:?}"
    );

    // --- TCP over IPv4: 1000 bytes one way (write), 3000 the other (send), 0 at EOF.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let up = pattern(1000, 1);
    let down = pattern(3000, 7);
    client.write_all(&up).unwrap();
    let mut got = vec![0; up.len()];
    server.read_exact(&mut got).unwrap();
    server.write_all(&down).unwrap();
    let mut got = vec![0; down.len()];
    client.read_exact(&mut got).unwrap();
    let (c_local, s_local) = (client.local_addr().unwrap(), server.local_addr().unwrap());
    let (cfd, sfd) = (client.as_raw_fd() as u32, server.as_raw_fd() as u32);
    drop(client);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // --- A file and a pipe: never recorded.
    let dir = std::env::temp_dir().join(format!("ksight-sockio-{}", std::process::id()));
    fs::write(&dir, vec![1u8; 4096]).unwrap();
    let _ = fs::read(&dir).unwrap();
    fs::remove_file(&dir).unwrap();
    let mut pipe = [0i32; 2];
    // SAFETY: plain system calls on descriptors this test owns.
    unsafe {
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        assert_eq!(libc::write(pipe[1], b"xyz".as_ptr().cast(), 3), 3);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }

    let sum = |recs: &[Io], fd: u32, dir: u8| -> u64 {
        recs.iter()
            .filter(|r| r.ev.protocol == 6 && r.ev.fd == fd && r.ev.direction == dir)
            .filter(|r| r.ev.tuple.sport == port(&c_local) || r.ev.tuple.sport == port(&s_local))
            .map(|r| r.ev.bytes)
            .sum()
    };
    let recs = collect(&mut source, |r| {
        sum(r, cfd, sock_dir::SEND) >= 1000 && sum(r, cfd, sock_dir::RECV) >= 3000
    });
    assert_eq!(sum(&recs, cfd, sock_dir::SEND), 1000);
    assert_eq!(sum(&recs, sfd, sock_dir::RECV), 1000);
    assert_eq!(sum(&recs, sfd, sock_dir::SEND), 3000);
    assert_eq!(sum(&recs, cfd, sock_dir::RECV), 3000);
    let first_up = recs
        .iter()
        .find(|r| {
            r.ev.fd == cfd && r.ev.direction == sock_dir::SEND && r.ev.tuple.sport == port(&c_local)
        })
        .unwrap();
    assert_eq!(first_up.ev.tuple.family, AF_INET);
    assert_eq!(first_up.ev.tuple.dport, port(&s_local));
    assert_eq!(&first_up.ev.tuple.saddr[..4], &[127, 0, 0, 1]);
    // std writes to a socket with send(2), i.e. sendto without an address.
    assert_eq!(first_up.ev.call, sock_call::SENDTO);
    assert_eq!(first_up.ev.flags & sock_flags::PEER_FROM_CALL, 0);
    assert_eq!(first_up.payload, up[..first_up.payload.len()]);
    assert_eq!(
        first_up.payload.len(),
        (first_up.ev.bytes as usize).min(DEFAULT_SNAPLEN)
    );
    assert_eq!(first_up.ev.flags & sock_flags::NO_ENTRY, 0, "{first_up:?}");
    assert!(first_up.ev.duration_ns > 0);
    assert_ne!(first_up.ev.sock_id, 0);
    assert!(
        recs.iter()
            .all(|r| r.ev.protocol == 6 || r.ev.protocol == 17)
    );
    // The pipe and the file: no records on their descriptors' calls (none is a socket).
    assert!(
        recs.iter()
            .all(|r| r.ev.tuple.family == AF_INET || r.ev.tuple.family == AF_INET6),
        "{recs:#?}"
    );

    // --- UDP: unconnected sendto/recvfrom, connected send/recv, IPv6, sendmmsg/recvmmsg.
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    a.send_to(b"hello", b_addr).unwrap();
    let mut buf = [0u8; 64];
    // A peek is not recorded: only the receive that takes the datagram.
    assert_eq!(b.peek_from(&mut buf).unwrap(), (5, a_addr));
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!((n, from), (5, a_addr));
    b.connect(a_addr).unwrap();
    b.send(&[9u8; 700]).unwrap();
    let mut big = [0u8; 2048];
    assert_eq!(a.recv(&mut big).unwrap(), 700);

    let v6a = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let v6b = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    v6a.send_to(b"six", v6b.local_addr().unwrap()).unwrap();
    assert_eq!(v6b.recv_from(&mut buf).unwrap().0, 3);

    // Three datagrams in one sendmmsg to b (unconnected a → b); b, connected to a, takes
    // them with recvmmsg.
    let sizes = [10usize, 20, 30];
    let datas: Vec<Vec<u8>> = sizes.iter().map(|&n| pattern(n, n as u8)).collect();
    assert_eq!(send_mmsg(&a, Some(b_addr), &datas), 3);
    assert_eq!(recv_mmsg(&b, 3), sizes);

    let udp = |r: &Io| r.ev.protocol == 17;
    let recs = collect(&mut source, |r| {
        r.iter()
            .filter(|r| udp(r) && r.ev.call == sock_call::RECVMMSG)
            .count()
            >= 3
    });
    let udp_recs: Vec<&Io> = recs.iter().filter(|r| udp(r)).collect();
    let find = |call: u16, fd: i32| -> Vec<&Io> {
        udp_recs
            .iter()
            .copied()
            .filter(|r| r.ev.call == call && r.ev.fd == fd as u32)
            .collect()
    };
    // sendto on an unconnected socket: the peer from the call.
    let st = find(sock_call::SENDTO, a.as_raw_fd());
    assert!(!st.is_empty());
    let hello = st
        .iter()
        .find(|r| r.ev.bytes == 5)
        .expect("the 5-byte sendto");
    assert_eq!(hello.payload, b"hello");
    assert_eq!(hello.ev.direction, sock_dir::SEND);
    assert_ne!(hello.ev.flags & sock_flags::PEER_FROM_CALL, 0);
    assert_eq!(hello.ev.tuple.dport, b_addr.port());
    assert_eq!(hello.ev.tuple.sport, a_addr.port());
    // recvfrom: the sender from src_addr.
    let rf = find(sock_call::RECVFROM, b.as_raw_fd());
    let hellos: Vec<&&Io> = rf.iter().filter(|r| r.ev.bytes == 5).collect();
    assert_eq!(hellos.len(), 1, "the peek made no record: {hellos:#?}");
    let hello_in = hellos[0];
    assert_eq!(hello_in.ev.tuple.dport, a_addr.port());
    assert_ne!(hello_in.ev.flags & sock_flags::PEER_FROM_CALL, 0);
    // The connected send of 700: its payload is the whole datagram (under the snaplen).
    let c700: Vec<&&Io> = udp_recs.iter().filter(|r| r.ev.bytes == 700).collect();
    assert_eq!(c700.len(), 2, "one send, one recv of 700 bytes: {c700:#?}");
    assert!(
        c700.iter()
            .all(|r| r.payload == vec![9u8; 700][..r.payload.len()] && r.payload.len() == 512)
    );
    // IPv6.
    let six: Vec<&&Io> = udp_recs
        .iter()
        .filter(|r| r.ev.tuple.family == AF_INET6)
        .collect();
    assert_eq!(six.len(), 2, "{six:#?}");
    assert!(six.iter().all(|r| r.ev.bytes == 3 && r.payload == b"six"));
    assert_eq!(six[0].ev.tuple.saddr, Ipv6Addr::LOCALHOST.octets());
    // sendmmsg/recvmmsg: one record per datagram, in order, with its own payload.
    let mm = find(sock_call::SENDMMSG, a.as_raw_fd());
    assert_eq!(
        mm.iter()
            .map(|r| (r.ev.msg_index, r.ev.bytes))
            .collect::<Vec<_>>(),
        [(0, 10), (1, 20), (2, 30)]
    );
    for (r, d) in mm.iter().zip(&datas) {
        assert_eq!(&r.payload, d);
        assert_eq!(r.ev.tuple.dport, b_addr.port());
        assert_eq!(r.ev.unreported_msgs, 0);
    }
    let rm = find(sock_call::RECVMMSG, b.as_raw_fd());
    assert_eq!(rm.iter().map(|r| r.ev.bytes).sum::<u64>(), 60);
    assert_eq!(rm.len(), 3);

    // --- The other calls on one TCP connection: writev/readv, sendmsg/recvmsg, read/write,
    // sendfile from a file and splice from a pipe; and a sendmmsg past MAX_MMSG.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let (cfd, sfd) = (client.as_raw_fd(), server.as_raw_fd());
    let file = std::env::temp_dir().join(format!("ksight-sockio-sf-{}", std::process::id()));
    fs::write(&file, pattern(777, 3)).unwrap();
    let many: Vec<Vec<u8>> = (0..20).map(|i| pattern(5 + i, i as u8)).collect();
    // SAFETY: plain system calls on descriptors and buffers this test owns.
    unsafe {
        // More buffers than are gathered (MAX_IOV): two large ones, then small ones.
        let parts = writev_parts();
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        let total: usize = parts.iter().map(Vec::len).sum();
        assert_eq!(
            libc::writev(cfd, iov.as_ptr(), iov.len() as i32),
            total as isize
        );
        let mut r = vec![0u8; total];
        let riov = [libc::iovec {
            iov_base: r.as_mut_ptr().cast(),
            iov_len: total,
        }];
        let mut got = 0;
        while got < total {
            let n = libc::readv(sfd, riov.as_ptr(), 1);
            assert!(n > 0);
            got += n as usize;
            if got < total {
                panic!("readv returned a short read ({n}); the test expects one call");
            }
        }
        let m = pattern(64, 9);
        let mut miov = libc::iovec {
            iov_base: m.as_ptr() as *mut _,
            iov_len: m.len(),
        };
        let mut h: libc::msghdr = zeroed();
        h.msg_iov = &mut miov;
        h.msg_iovlen = 1;
        assert_eq!(libc::sendmsg(cfd, &h, 0), 64);
        let mut rb = [0u8; 64];
        let mut riov = libc::iovec {
            iov_base: rb.as_mut_ptr().cast(),
            iov_len: 64,
        };
        let mut rh: libc::msghdr = zeroed();
        rh.msg_iov = &mut riov;
        rh.msg_iovlen = 1;
        assert_eq!(libc::recvmsg(sfd, &mut rh, libc::MSG_WAITALL), 64);
        assert_eq!(libc::write(sfd, b"pong".as_ptr().cast(), 4), 4);
        assert_eq!(libc::read(cfd, rb.as_mut_ptr().cast(), 4), 4);
        let f = fs::File::open(&file).unwrap();
        assert_eq!(
            libc::sendfile(cfd, f.as_raw_fd(), std::ptr::null_mut(), 777),
            777
        );
        let mut sink = vec![0u8; 777];
        (&server).read_exact(&mut sink).unwrap();
        let mut pipe = [0i32; 2];
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        assert_eq!(libc::write(pipe[1], [5u8; 33].as_ptr().cast(), 33), 33);
        assert_eq!(
            libc::splice(
                pipe[0],
                std::ptr::null_mut(),
                cfd,
                std::ptr::null_mut(),
                33,
                0
            ),
            33
        );
        (&server).read_exact(&mut sink[..33]).unwrap();
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    // b is connected to a: 20 datagrams to a, past MAX_MMSG.
    assert_eq!(send_mmsg(&b, None, &many), 20);
    fs::remove_file(&file).unwrap();
    let tcp_of = |recs: &[Io], fd: i32, call: u16| -> Vec<Io> {
        recs.iter()
            .filter(|r| r.ev.protocol == 6 && r.ev.fd == fd as u32 && r.ev.call == call)
            .filter(|r| {
                r.ev.tuple.sport == client.local_addr().unwrap().port()
                    || r.ev.tuple.sport == server.local_addr().unwrap().port()
            })
            .cloned()
            .collect()
    };
    let recs = collect(&mut source, |r| {
        !tcp_of(r, cfd, sock_call::SPLICE).is_empty()
            && r.iter()
                .filter(|r| r.ev.call == sock_call::SENDMMSG && r.ev.fd == b.as_raw_fd() as u32)
                .count()
                >= 16
    });
    let one = |fd: i32, call: u16| -> Io {
        let v = tcp_of(&recs, fd, call);
        assert_eq!(v.len(), 1, "one {call} on fd {fd}: {v:#?}");
        v[0].clone()
    };
    let wv = one(cfd, sock_call::WRITEV);
    let parts = writev_parts();
    let total: usize = parts.iter().map(Vec::len).sum();
    assert_eq!(
        (wv.ev.bytes as usize, wv.payload.clone()),
        (total, parts[..event_abi::MAX_IOV].concat()),
        "writev: gathered from the first MAX_IOV buffers"
    );
    let rv = one(sfd, sock_call::READV);
    assert_eq!(
        (rv.ev.bytes as usize, rv.ev.direction, rv.payload.len()),
        (total, sock_dir::RECV, total)
    );
    let sm = one(cfd, sock_call::SENDMSG);
    assert_eq!((sm.ev.bytes, sm.payload.clone()), (64, pattern(64, 9)));
    let rm = one(sfd, sock_call::RECVMSG);
    assert_eq!(
        (
            rm.ev.bytes,
            rm.payload.clone(),
            rm.ev.flags & sock_flags::PEER_FROM_CALL
        ),
        (64, pattern(64, 9), 0)
    );
    let w = one(sfd, sock_call::WRITE);
    assert_eq!((w.ev.bytes, w.payload.clone()), (4, b"pong".to_vec()));
    let r = one(cfd, sock_call::READ);
    assert_eq!((r.ev.bytes, r.payload.clone()), (4, b"pong".to_vec()));
    let sf = one(cfd, sock_call::SENDFILE);
    assert_eq!(
        (sf.ev.bytes, sf.ev.direction, sf.ev.payload_len),
        (777, sock_dir::SEND, 0)
    );
    let sp = one(cfd, sock_call::SPLICE);
    assert_eq!(
        (sp.ev.bytes, sp.ev.direction, sp.ev.payload_len),
        (33, sock_dir::SEND, 0)
    );
    let mm: Vec<&Io> = recs
        .iter()
        .filter(|r| r.ev.call == sock_call::SENDMMSG && r.ev.fd == b.as_raw_fd() as u32)
        .collect();
    assert_eq!(mm.len(), event_abi::MAX_MMSG);
    for (i, r) in mm.iter().enumerate() {
        assert_eq!(
            (usize::from(r.ev.msg_index), r.ev.bytes as usize),
            (i, 5 + i)
        );
        assert_eq!(r.payload, many[i]);
        let unreported = if i + 1 == event_abi::MAX_MMSG { 4 } else { 0 };
        assert_eq!(r.ev.unreported_msgs, unreported);
    }
}

/// The writev of the call test: 100 and 50 bytes, then small buffers past MAX_IOV.
fn writev_parts() -> Vec<Vec<u8>> {
    let mut parts = vec![pattern(100, 1), pattern(50, 2)];
    parts.extend((0..event_abi::MAX_IOV as u8 + 6).map(|i| pattern(3, 20 + i)));
    parts
}
