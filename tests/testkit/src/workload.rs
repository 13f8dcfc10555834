//! A workload whose kernel-visible activity is exactly what its arguments say, so ksight's
//! numbers can be compared with the truth ([`crate::truth`] derives its expected values
//! from the constants below): `ksight verify` runs it under both backends as
//! `ksight workload`, and the tests run it as `ksight-workload`
//! (tests/support/workload_main.rs) or in a re-executed test binary.
//!
//! `ksight-workload procs`: runs /bin/true ×3, /bin/false ×1, `/bin/sh -c "exit 3"` ×2.
//! `ksight-workload tcp SENT RECEIVED`: one loopback connection; the client sends SENT
//!   bytes, the server answers RECEIVED bytes, both close in order; then a second
//!   connection the client aborts (SO_LINGER 0), sending one reset. One server thread.
//! `ksight-workload block DEVICE`: O_DIRECT on DEVICE: writes 4×64 KiB and 3×4 KiB, then
//!   reads 2×128 KiB and 5×512 B, each synchronous.
//! `ksight-workload udp`: loopback UDP with exact datagrams ([`UDP_TO_B`], [`UDP_TO_A`],
//!   [`UDP_V6`]): A → B unconnected with `sendto`/`recvfrom`, then with one `sendmmsg`
//!   and one `recvmmsg`; B connected to A with `send`, A receiving with `recvfrom`; C → D
//!   over IPv6.
//! `ksight-workload all SENT RECEIVED DEVICE`: procs, tcp, udp and block, in that order.
//! `ksight-workload tcp-phases N...`: one loopback connection held open; for each N the
//!   client sends N bytes, the server reads them all, the workload prints the phase's
//!   number and waits for a line on standard input; then both ends close.
//! `ksight-workload procs-tcp SENT RECEIVED`: procs, then tcp.
//! `ksight-workload procs-net SENT RECEIVED`: procs, tcp, then udp.
//! `ksight-workload connect-loop N`: N loopback connections, one after the other, each a
//!   one-byte request and response, closed by both ends (benchmarks).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::process::Command;

/// What `procs` runs, one after the other: program, arguments, exit code.
pub const PROC_RUNS: [(&str, &[&str], i32); 6] = [
    ("/bin/true", &[], 0),
    ("/bin/true", &[], 0),
    ("/bin/true", &[], 0),
    ("/bin/false", &[], 1),
    ("/bin/sh", &["-c", "exit 3"], 3),
    ("/bin/sh", &["-c", "exit 3"], 3),
];

/// What `block` writes, then reads, from offset 0 on: (how many, bytes each), in order.
pub const BLOCK_WRITES: [(usize, usize); 2] = [(4, 65536), (3, 4096)];
pub const BLOCK_READS: [(usize, usize); 2] = [(2, 131072), (5, 512)];

fn tcp_phases(sizes: &[usize]) {
    use std::io::BufRead;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let mut stdin = std::io::stdin().lock();
    for (i, &n) in sizes.iter().enumerate() {
        client.write_all(&vec![b'p'; n]).expect("client write");
        server.read_exact(&mut vec![0; n]).expect("server read");
        println!("{}", i + 1);
        std::io::stdout().flush().expect("stdout");
        stdin.read_line(&mut String::new()).expect("stdin");
    }
    drop(client);
    assert_eq!(server.read(&mut [0; 1]).expect("server read"), 0);
}

/// `udp`: datagram sizes A sends B with `sendto`, then with one `sendmmsg`.
pub const UDP_TO_B: [usize; 3] = [100, 200, 300];
pub const UDP_MMSG_TO_B: [usize; 4] = [10, 20, 30, 40];
/// Datagram sizes B, connected to A, sends with `send`.
pub const UDP_TO_A: [usize; 2] = [1000, 1500];
/// Datagram sizes C sends D over IPv6.
pub const UDP_V6: [usize; 2] = [50, 50];

fn udp() {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a");
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind b");
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let mut buf = vec![0u8; 2048];
    let expect_from = |s: &UdpSocket, buf: &mut [u8], len: usize, from: SocketAddr| {
        let (n, peer) = s.recv_from(buf).expect("recv_from");
        assert_eq!((n, peer), (len, from));
    };
    for len in UDP_TO_B {
        a.send_to(&vec![b'u'; len], b_addr).expect("send_to");
        expect_from(&b, &mut buf, len, a_addr);
    }
    mmsg(&a, &b, b_addr, &UDP_MMSG_TO_B);
    b.connect(a_addr).expect("connect");
    for len in UDP_TO_A {
        b.send(&vec![b'v'; len]).expect("send");
        expect_from(&a, &mut buf, len, b_addr);
    }
    let c = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind c");
    let d = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind d");
    let (c_addr, d_addr) = (c.local_addr().unwrap(), d.local_addr().unwrap());
    for len in UDP_V6 {
        c.send_to(&vec![b'w'; len], d_addr).expect("send_to v6");
        expect_from(&d, &mut buf, len, c_addr);
    }
}

/// One `sendmmsg` of `sizes` from `from` to `to_addr`, then `recvmmsg` on `to` until all
/// arrived, each message's sender asked for.
fn mmsg(from: &UdpSocket, to: &UdpSocket, to_addr: SocketAddr, sizes: &[usize]) {
    let datas: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![b'm'; n]).collect();
    assert_eq!(send_mmsg(from, Some(to_addr), &datas), sizes.len());
    assert_eq!(recv_mmsg(to, sizes.len()), sizes);
}

/// One `sendmmsg` of `datas` from `from`, addressed to `to` (IPv4) or, without, to the
/// socket's peer; the number of messages sent.
pub fn send_mmsg(from: &UdpSocket, to: Option<SocketAddr>, datas: &[Vec<u8>]) -> usize {
    use std::mem::{size_of, zeroed};
    // SAFETY: every header points into `datas`, `name` or `iovs`, which outlive the call.
    unsafe {
        let mut name: libc::sockaddr_in = zeroed();
        if let Some(to) = to {
            let SocketAddr::V4(v4) = to else {
                panic!("send_mmsg: IPv4 only");
            };
            name.sin_family = libc::AF_INET as u16;
            name.sin_port = v4.port().to_be();
            name.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        }
        let mut iovs: Vec<libc::iovec> = datas
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut _,
                iov_len: d.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut h: libc::mmsghdr = zeroed();
                if to.is_some() {
                    h.msg_hdr.msg_name = (&raw mut name).cast();
                    h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                }
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let sent = libc::sendmmsg(from.as_raw_fd(), hdrs.as_mut_ptr(), datas.len() as u32, 0);
        assert!(sent >= 0, "sendmmsg: {}", std::io::Error::last_os_error());
        sent as usize
    }
}

/// `recvmmsg` on `to` (IPv4, each message's sender asked for) until `n` messages arrived;
/// their lengths, in order.
pub fn recv_mmsg(to: &UdpSocket, n: usize) -> Vec<usize> {
    use std::mem::{size_of, zeroed};
    // SAFETY: every header points into `bufs`, `names` or `riovs`, which outlive the calls.
    unsafe {
        let mut bufs = vec![[0u8; 2048]; n];
        let mut names: Vec<libc::sockaddr_in> = vec![zeroed(); n];
        let mut riovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut rhdrs: Vec<libc::mmsghdr> = riovs
            .iter_mut()
            .zip(names.iter_mut())
            .map(|(iov, nm)| {
                let mut h: libc::mmsghdr = zeroed();
                h.msg_hdr.msg_name = (nm as *mut libc::sockaddr_in).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let mut got = 0;
        while got < n {
            let r = libc::recvmmsg(
                to.as_raw_fd(),
                rhdrs[got..].as_mut_ptr(),
                (n - got) as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            );
            assert!(r > 0, "recvmmsg: {}", std::io::Error::last_os_error());
            got += r as usize;
        }
        rhdrs.iter().map(|h| h.msg_len as usize).collect()
    }
}

fn procs() {
    for (program, args, expected) in PROC_RUNS {
        let status = Command::new(program).args(args).status().expect("spawn");
        assert_eq!(status.code(), Some(expected), "{program}");
    }
}

fn tcp(sent: usize, received: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        // Orderly connection: read everything, answer, close.
        let (mut conn, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("server read");
        assert_eq!(got.len(), sent);
        conn.write_all(&vec![b's'; received]).expect("server write");
        drop(conn);
        // Aborted connection: the client resets it.
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 16];
        let err = conn.read(&mut buf);
        assert!(matches!(err, Ok(0) | Err(_)), "{err:?}");
    });
    let mut client = TcpStream::connect(addr).expect("connect");
    client.write_all(&vec![b'c'; sent]).expect("client write");
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("client read");
    assert_eq!(got.len(), received);
    drop(client);

    let abort = TcpStream::connect(addr).expect("connect");
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket and option struct.
    let rc = unsafe {
        libc::setsockopt(
            abort.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
    // Let the server accept before the reset.
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(abort);
    server.join().expect("server thread");
}

/// A page-aligned buffer, as O_DIRECT needs.
fn aligned(len: usize) -> &'static mut [u8] {
    let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
    // SAFETY: non-zero size; leaked on purpose, the process is short-lived.
    unsafe { std::slice::from_raw_parts_mut(std::alloc::alloc_zeroed(layout), len) }
}

fn block(device: &str) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(device)
        .unwrap_or_else(|e| panic!("open {device}: {e}"));
    let fd = file.as_raw_fd();
    let io = |offset: &mut i64, len: usize, write: bool| {
        let at = *offset;
        let buf = aligned(len);
        // SAFETY: buf is valid for len bytes.
        let n = unsafe {
            if write {
                libc::pwrite(fd, buf.as_ptr().cast(), len, at)
            } else {
                libc::pread(fd, buf.as_mut_ptr().cast(), len, at)
            }
        };
        assert_eq!(
            n,
            len as isize,
            "{} of {len} at {at}: {}",
            if write { "write" } else { "read" },
            std::io::Error::last_os_error()
        );
        *offset += len as i64;
    };
    for (ops, write) in [(BLOCK_WRITES, true), (BLOCK_READS, false)] {
        let mut offset = 0;
        for (n, len) in ops {
            for _ in 0..n {
                io(&mut offset, len, write);
            }
        }
    }
}

fn connect_loop(n: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1];
            conn.read_exact(&mut buf).expect("read");
            conn.write_all(&buf).expect("write");
        }
    });
    // Request/response in lock step, so the accept backlog never overflows (a dropped SYN
    // would cost a one-second retransmit and measure the backlog, not the tracer).
    for _ in 0..n {
        let mut conn = TcpStream::connect(addr).expect("connect");
        conn.write_all(b"x").expect("write");
        let mut buf = [0u8; 1];
        conn.read_exact(&mut buf).expect("read");
    }
    server.join().expect("server thread");
}

/// What [`run`] answers to arguments that describe no workload; callers print it and
/// exit with status 2.
pub const USAGE: &str = "usage: ksight-workload procs | tcp SENT RECEIVED | udp | block DEVICE | all SENT RECEIVED DEVICE | procs-tcp SENT RECEIVED | procs-net SENT RECEIVED | tcp-phases N... | connect-loop N";

/// Runs the workload that `args` (without the program name) describe, or answers
/// [`USAGE`]. A workload that does not go as specified (a spawn, a connection or an I/O
/// failing) panics: the process running it exits non-zero.
pub fn run(args: &[String]) -> Result<(), &'static str> {
    let num = |i: usize| -> Result<usize, &'static str> {
        args.get(i).and_then(|s| s.parse().ok()).ok_or(USAGE)
    };
    let arg = |i: usize| args.get(i).ok_or(USAGE);
    match args.first().map(String::as_str) {
        Some("procs") => procs(),
        Some("tcp") => tcp(num(1)?, num(2)?),
        Some("udp") => udp(),
        Some("tcp-phases") => {
            let sizes = (1..args.len()).map(num).collect::<Result<Vec<_>, _>>()?;
            tcp_phases(&sizes);
        }
        Some("connect-loop") => connect_loop(num(1)?),
        Some("procs-tcp") => {
            let (sent, received) = (num(1)?, num(2)?);
            procs();
            tcp(sent, received);
        }
        Some("procs-net") => {
            let (sent, received) = (num(1)?, num(2)?);
            procs();
            tcp(sent, received);
            udp();
        }
        Some("block") => block(arg(1)?),
        Some("all") => {
            let (sent, received, device) = (num(1)?, num(2)?, arg(3)?);
            procs();
            tcp(sent, received);
            udp();
            block(device);
        }
        _ => return Err(USAGE),
    }
    Ok(())
}
