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
//! `ksight-workload requests`: application requests whose every byte is known, both ends
//!   in this process (a server thread per protocol, the client on the main thread), one
//!   loopback connection per protocol, one protocol after the other:
//!   - HTTP/1.1 keep-alive ([`HTTP_EXCHANGES`], `Host:` [`HTTP_HOST`]): each request
//!     answered before the next is sent, but for the last two, pipelined: both requests
//!     in one `write`, both responses in one `write`. A 3000-byte response body and a
//!     700-byte request body (past the default snaplen), a chunked response in 3 writes
//!     of one chunk each, statuses 200, 201, 404, 500;
//!   - Redis (RESP2, [`REDIS_COMMANDS`]: SET, GET, LPUSH on the string key answered
//!     `-WRONGTYPE …`), then [`REDIS_PIPELINED_INCRS`] `INCR`s in one `write`, answered
//!     in one `write`;
//!   - PostgreSQL, simple query protocol: startup (AuthenticationOk, ParameterStatus,
//!     BackendKeyData, ReadyForQuery), the [`POSTGRES_QUERIES`] (a `SELECT` with a row,
//!     an `INSERT`, a `SELECT` answered by an `ErrorResponse` with SQLSTATE 42P01), each
//!     ended by ReadyForQuery, then Terminate;
//!
//!   Every server reads each request whole (by its framing) and every client each
//!   response; [`requests_bytes`] is what each client sent and received.

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
    let threads = thread_count();
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
    wait_threads(threads);
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
    let threads = thread_count();
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
    wait_threads(threads);
}

// ---------------------------------------------------------------------------------------
// `requests`: HTTP/1.1, Redis and PostgreSQL exchanges, both ends in this process.

/// One HTTP/1.1 exchange of the `requests` workload.
#[derive(Clone, Copy, Debug)]
pub struct HttpExchange {
    pub method: &'static str,
    /// The request target as sent.
    pub target: &'static str,
    /// The route ksight reports for it: the query dropped, ids as `*`.
    pub route: &'static str,
    /// Bytes of the request body (`Content-Length`; no body when 0).
    pub request_body: usize,
    pub status: u16,
    /// The response body: one `Content-Length` body of that size, or with `chunked` the
    /// size of each chunk, each chunk in a `write` of its own (the first with the head,
    /// the last with the last-chunk).
    pub response_body: &'static [usize],
    pub chunked: bool,
    /// The exchanges marked so (the last ones) are pipelined: their requests sent in one
    /// `write`, their responses in one `write`.
    pub pipelined: bool,
}

/// The `Host` header of every HTTP request.
pub const HTTP_HOST: &str = "svc.test";

/// The HTTP/1.1 exchanges, in order, on one keep-alive connection.
pub const HTTP_EXCHANGES: [HttpExchange; 7] = {
    const fn x(
        method: &'static str,
        target: &'static str,
        route: &'static str,
        request_body: usize,
        status: u16,
        response_body: &'static [usize],
    ) -> HttpExchange {
        HttpExchange {
            method,
            target,
            route,
            request_body,
            status,
            response_body,
            chunked: false,
            pipelined: false,
        }
    }
    [
        // A body well past the default snaplen (512): skipped by its length.
        x("GET", "/items/123?x=1", "/items/*", 0, 200, &[3000]),
        x("GET", "/missing", "/missing", 0, 404, &[9]),
        x("POST", "/api/v1/orders", "/api/v1/orders", 700, 201, &[20]),
        x("GET", "/fail", "/fail", 0, 500, &[5]),
        // The whole chunked response fits in the snaplen however the client's reads
        // split or join its writes.
        HttpExchange {
            chunked: true,
            ..x("GET", "/chunked", "/chunked", 0, 200, &[64, 128, 32])
        },
        HttpExchange {
            pipelined: true,
            ..x("GET", "/a", "/a", 0, 200, &[10])
        },
        HttpExchange {
            pipelined: true,
            ..x("GET", "/b", "/b", 0, 200, &[20])
        },
    ]
};

/// The bytes of `x`'s request, as the client writes them.
pub fn http_request(x: &HttpExchange) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {HTTP_HOST}\r\nUser-Agent: ksight-workload\r\nAccept: */*\r\n",
        x.method, x.target
    );
    if x.request_body > 0 {
        head += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            x.request_body
        );
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    bytes.resize(bytes.len() + x.request_body, b'q');
    bytes
}

/// The writes of `x`'s response, as the server makes them (one unless chunked).
pub fn http_response(x: &HttpExchange) -> Vec<Vec<u8>> {
    let reason = match x.status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        500 => "Internal Server Error",
        other => panic!("no reason phrase for {other}"),
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nServer: ksight-workload\r\nContent-Type: text/plain\r\n",
        x.status
    );
    if !x.chunked {
        let [len] = x.response_body else {
            panic!("{x:?}: one body unless chunked");
        };
        head += &format!("Content-Length: {len}\r\n\r\n");
        let mut bytes = head.into_bytes();
        bytes.resize(bytes.len() + len, b'r');
        return vec![bytes];
    }
    head += "Transfer-Encoding: chunked\r\n\r\n";
    let last = x.response_body.len() - 1;
    x.response_body
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut bytes = if i == 0 {
                head.clone().into_bytes()
            } else {
                Vec::new()
            };
            bytes.extend(format!("{len:x}\r\n").as_bytes());
            bytes.resize(bytes.len() + len, b'c');
            bytes.extend(b"\r\n");
            if i == last {
                bytes.extend(b"0\r\n\r\n");
            }
            bytes
        })
        .collect()
}

/// Redis commands sent one at a time on one connection, each with the exact reply the
/// workload's server gives it.
pub const REDIS_COMMANDS: [(&[&str], &str); 3] = [
    (&["SET", "greeting", "hello"], "+OK\r\n"),
    (&["GET", "greeting"], "$5\r\nhello\r\n"),
    (
        &["LPUSH", "greeting", "x"],
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    ),
];

/// After [`REDIS_COMMANDS`], on the same connection: this many `INCR` of one key in one
/// `write`, answered `:1` … `:n` in one `write`.
pub const REDIS_PIPELINED_INCRS: u64 = 10;
pub const REDIS_INCR_KEY: &str = "hits";

/// A RESP array of bulk strings.
pub fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        bytes.extend(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    bytes
}

/// The pipelined `INCR`s' replies, in one buffer.
fn redis_incr_replies() -> Vec<u8> {
    (1..=REDIS_PIPELINED_INCRS)
        .flat_map(|i| format!(":{i}\r\n").into_bytes())
        .collect()
}

/// PostgreSQL simple queries, in order, each with its CommandComplete tag (`Ok`; a
/// `SELECT` gets a RowDescription and one DataRow first) or the SQLSTATE of its
/// ErrorResponse (`Err`); each answer ends with ReadyForQuery.
pub const POSTGRES_QUERIES: [(&str, Result<&str, &str>); 3] = [
    ("SELECT 1", Ok("SELECT 1")),
    ("INSERT INTO t VALUES (1)", Ok("INSERT 0 1")),
    ("SELECT * FROM missing", Err("42P01")),
];

/// The StartupMessage's user and database.
pub const POSTGRES_USER: &str = "ksight";
pub const POSTGRES_DATABASE: &str = "ksight";
const POSTGRES_PROTOCOL: u32 = 196_608;

/// A typed PostgreSQL message: type byte, length (counting itself), body.
fn pg_msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![ty];
    bytes.extend((body.len() as u32 + 4).to_be_bytes());
    bytes.extend(body);
    bytes
}

fn pg_startup() -> Vec<u8> {
    let mut body = POSTGRES_PROTOCOL.to_be_bytes().to_vec();
    for s in ["user", POSTGRES_USER, "database", POSTGRES_DATABASE, ""] {
        body.extend(s.as_bytes());
        body.push(0);
    }
    let mut bytes = (body.len() as u32 + 4).to_be_bytes().to_vec();
    bytes.extend(body);
    bytes
}

fn pg_ready() -> Vec<u8> {
    pg_msg(b'Z', b"I")
}

/// AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery: one write.
fn pg_startup_reply() -> Vec<u8> {
    let mut bytes = pg_msg(b'R', &0u32.to_be_bytes());
    bytes.extend(pg_msg(b'S', b"server_version\x0016.0\x00"));
    let mut key = 4242u32.to_be_bytes().to_vec();
    key.extend(0x5eed_u32.to_be_bytes());
    bytes.extend(pg_msg(b'K', &key));
    bytes.extend(pg_ready());
    bytes
}

fn pg_query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    pg_msg(b'Q', &body)
}

/// The answer to a query of [`POSTGRES_QUERIES`]: one write.
fn pg_answer(outcome: Result<&str, &str>) -> Vec<u8> {
    let mut bytes = Vec::new();
    match outcome {
        Ok(tag) => {
            if tag.starts_with("SELECT") {
                // One int4 column "?column?", one row "1".
                let mut t = 1u16.to_be_bytes().to_vec();
                t.extend(b"?column?\x00");
                t.extend(0u32.to_be_bytes()); // table
                t.extend(0u16.to_be_bytes()); // attribute
                t.extend(23u32.to_be_bytes()); // int4
                t.extend(4i16.to_be_bytes());
                t.extend((-1i32).to_be_bytes());
                t.extend(0u16.to_be_bytes()); // text
                bytes.extend(pg_msg(b'T', &t));
                let mut d = 1u16.to_be_bytes().to_vec();
                d.extend(1u32.to_be_bytes());
                d.extend(b"1");
                bytes.extend(pg_msg(b'D', &d));
            }
            let mut c = tag.as_bytes().to_vec();
            c.push(0);
            bytes.extend(pg_msg(b'C', &c));
        }
        Err(code) => {
            let mut e = Vec::new();
            for (field, value) in [
                (b'S', "ERROR"),
                (b'V', "ERROR"),
                (b'C', code),
                (b'M', "relation \"missing\" does not exist"),
            ] {
                e.push(field);
                e.extend(value.as_bytes());
                e.push(0);
            }
            e.push(0);
            bytes.extend(pg_msg(b'E', &e));
        }
    }
    bytes.extend(pg_ready());
    bytes
}

fn pg_terminate() -> Vec<u8> {
    pg_msg(b'X', b"")
}

/// Per protocol ("http", "redis", "postgres"): the bytes its client sends and receives
/// (the server's the other way round), every byte of the connection.
pub fn requests_bytes() -> [(&'static str, u64, u64); 3] {
    let len = |v: &[u8]| v.len() as u64;
    let http = HTTP_EXCHANGES.iter().fold((0, 0), |(s, r), x| {
        (
            s + len(&http_request(x)),
            r + http_response(x).iter().map(|w| len(w)).sum::<u64>(),
        )
    });
    let incr = resp_command(&["INCR", REDIS_INCR_KEY]);
    let redis = REDIS_COMMANDS.iter().fold(
        (
            len(&incr) * REDIS_PIPELINED_INCRS,
            len(&redis_incr_replies()),
        ),
        |(s, r), (args, reply)| (s + len(&resp_command(args)), r + reply.len() as u64),
    );
    let postgres = POSTGRES_QUERIES.iter().fold(
        (
            len(&pg_startup()) + len(&pg_terminate()),
            len(&pg_startup_reply()),
        ),
        |(s, r), (sql, outcome)| (s + len(&pg_query(sql)), r + len(&pg_answer(*outcome))),
    );
    [
        ("http", http.0, http.1),
        ("redis", redis.0, redis.1),
        ("postgres", postgres.0, postgres.1),
    ]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads more of `conn` into `buf`; false at end of stream.
fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    let n = conn.read(&mut chunk).expect("read");
    buf.extend_from_slice(&chunk[..n]);
    n > 0
}

/// Reads until `buf` holds at least `n` bytes; panics at end of stream.
fn fill_to(conn: &mut TcpStream, buf: &mut Vec<u8>, n: usize) {
    while buf.len() < n {
        assert!(
            fill(conn, buf),
            "end of stream with {} of {n} bytes",
            buf.len()
        );
    }
}

/// One whole request at the start of `buf`: its length, method and target.
fn http_parse_request(buf: &[u8]) -> Option<(usize, String, String)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).expect("request head");
    let mut lines = head.split("\r\n");
    let mut line = lines.next().unwrap().split(' ');
    let (method, target) = (line.next().unwrap(), line.next().unwrap());
    let mut body = 0;
    let mut host = None;
    for l in lines.filter(|l| !l.is_empty()) {
        let (name, value) = l.split_once(": ").expect("header");
        match name.to_ascii_lowercase().as_str() {
            "content-length" => body = value.parse().expect("content-length"),
            "host" => host = Some(value),
            _ => {}
        }
    }
    assert_eq!(host, Some(HTTP_HOST));
    (buf.len() >= head_end + body).then(|| (head_end + body, method.into(), target.into()))
}

/// One whole response: its status and body length; consumed from `buf`.
fn http_read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<usize>) {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        assert!(fill(conn, buf), "end of stream in a response head");
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .expect("response head")
        .to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let (mut length, mut chunked) = (None, false);
    for l in lines.filter(|l| !l.is_empty()) {
        let (name, value) = l.split_once(": ").expect("header");
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<usize>().unwrap()),
            "transfer-encoding" => chunked = value == "chunked",
            _ => {}
        }
    }
    let mut at = head_end;
    let mut body = Vec::new();
    if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[at..], b"\r\n") {
                    break at + i;
                }
                assert!(fill(conn, buf), "end of stream in a chunk size");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[at..line_end]).unwrap(), 16)
                .expect("chunk size");
            at = line_end + 2;
            fill_to(conn, buf, at + size + 2);
            assert_eq!(&buf[at + size..at + size + 2], b"\r\n");
            at += size + 2;
            if size == 0 {
                break;
            }
            body.push(size);
        }
    } else {
        let len = length.expect("content-length");
        fill_to(conn, buf, at + len);
        at += len;
        body.push(len);
    }
    buf.drain(..at);
    (status, body)
}

fn http_server(listener: TcpListener) {
    let (mut conn, _) = listener.accept().expect("accept");
    let mut buf = Vec::new();
    loop {
        // Every whole request read so far gets its response; several at once (pipelined)
        // are answered in one write.
        let mut answers = Vec::new();
        while let Some((len, method, target)) = http_parse_request(&buf) {
            buf.drain(..len);
            let x = HTTP_EXCHANGES
                .iter()
                .find(|x| x.method == method && x.target == target)
                .unwrap_or_else(|| panic!("unexpected request {method} {target}"));
            answers.push(http_response(x));
        }
        match answers.len() {
            0 => {}
            1 => {
                for w in &answers[0] {
                    conn.write_all(w).expect("http write");
                }
            }
            _ => conn
                .write_all(&answers.concat().concat())
                .expect("http write"),
        }
        if !fill(&mut conn, &mut buf) {
            assert!(buf.is_empty(), "a partial request at the end");
            return;
        }
    }
}

fn http_client(addr: SocketAddr) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    let mut buf = Vec::new();
    let (single, pipelined): (Vec<&HttpExchange>, Vec<&HttpExchange>) =
        HTTP_EXCHANGES.iter().partition(|x| !x.pipelined);
    for x in single {
        conn.write_all(&http_request(x)).expect("http write");
        assert_eq!(
            http_read_response(&mut conn, &mut buf),
            (x.status, x.response_body.to_vec()),
            "{x:?}"
        );
    }
    let requests: Vec<u8> = pipelined.iter().flat_map(|x| http_request(x)).collect();
    conn.write_all(&requests).expect("http write");
    for x in pipelined {
        assert_eq!(
            http_read_response(&mut conn, &mut buf),
            (x.status, x.response_body.to_vec()),
            "{x:?}"
        );
    }
    assert!(buf.is_empty());
}

/// One whole RESP array of bulk strings at the start of `buf`: its length and elements.
fn resp_parse(buf: &[u8]) -> Option<(usize, Vec<String>)> {
    let line = |at: usize| -> Option<(usize, &str)> {
        let end = at + find(&buf[at..], b"\r\n")?;
        Some((
            end + 2,
            std::str::from_utf8(&buf[at..end]).expect("RESP line"),
        ))
    };
    let (mut at, header) = line(0)?;
    let n: usize = header
        .strip_prefix('*')
        .expect("a RESP array")
        .parse()
        .unwrap();
    let mut args = Vec::new();
    for _ in 0..n {
        let (next, header) = line(at)?;
        let len: usize = header
            .strip_prefix('$')
            .expect("a bulk string")
            .parse()
            .unwrap();
        if buf.len() < next + len + 2 {
            return None;
        }
        args.push(String::from_utf8(buf[next..next + len].to_vec()).unwrap());
        at = next + len + 2;
    }
    Some((at, args))
}

fn redis_server(listener: TcpListener) {
    let (mut conn, _) = listener.accept().expect("accept");
    let mut strings: std::collections::HashMap<String, String> = Default::default();
    let mut buf = Vec::new();
    loop {
        // Every whole command read so far is answered, all in one write.
        let mut replies = String::new();
        while let Some((len, args)) = resp_parse(&buf) {
            buf.drain(..len);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            replies += &match a.as_slice() {
                ["SET", k, v] => {
                    strings.insert(k.to_string(), v.to_string());
                    "+OK\r\n".to_string()
                }
                ["GET", k] => match strings.get(*k) {
                    Some(v) => format!("${}\r\n{v}\r\n", v.len()),
                    None => "$-1\r\n".to_string(),
                },
                ["LPUSH", k, ..] if strings.contains_key(*k) => {
                    "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
                        .to_string()
                }
                ["INCR", k] => {
                    let v = strings.entry(k.to_string()).or_insert_with(|| "0".into());
                    let n = v.parse::<i64>().expect("an integer") + 1;
                    *v = n.to_string();
                    format!(":{n}\r\n")
                }
                other => panic!("unexpected Redis command {other:?}"),
            };
        }
        if !replies.is_empty() {
            conn.write_all(replies.as_bytes()).expect("redis write");
        }
        if !fill(&mut conn, &mut buf) {
            assert!(buf.is_empty(), "a partial command at the end");
            return;
        }
    }
}

fn redis_client(addr: SocketAddr) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    for (args, reply) in REDIS_COMMANDS {
        conn.write_all(&resp_command(args)).expect("redis write");
        let mut got = vec![0; reply.len()];
        conn.read_exact(&mut got).expect("redis read");
        assert_eq!(String::from_utf8_lossy(&got), reply, "{args:?}");
    }
    let incr = resp_command(&["INCR", REDIS_INCR_KEY]);
    let pipelined = incr.repeat(REDIS_PIPELINED_INCRS as usize);
    conn.write_all(&pipelined).expect("redis write");
    let want = redis_incr_replies();
    let mut got = vec![0; want.len()];
    conn.read_exact(&mut got).expect("redis read");
    assert_eq!(got, want);
}

fn postgres_server(listener: TcpListener) {
    let (mut conn, _) = listener.accept().expect("accept");
    let mut buf = Vec::new();
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    fill_to(&mut conn, &mut buf, 4);
    let len = be32(&buf);
    fill_to(&mut conn, &mut buf, len);
    assert_eq!(buf[..len], pg_startup(), "StartupMessage");
    buf.drain(..len);
    conn.write_all(&pg_startup_reply()).expect("postgres write");
    loop {
        fill_to(&mut conn, &mut buf, 5);
        let len = 1 + be32(&buf[1..]);
        fill_to(&mut conn, &mut buf, len);
        let msg: Vec<u8> = buf.drain(..len).collect();
        match msg[0] {
            b'Q' => {
                let sql = std::str::from_utf8(&msg[5..len - 1]).expect("query text");
                let (_, outcome) = POSTGRES_QUERIES
                    .iter()
                    .find(|(q, _)| *q == sql)
                    .unwrap_or_else(|| panic!("unexpected query {sql:?}"));
                conn.write_all(&pg_answer(*outcome))
                    .expect("postgres write");
            }
            b'X' => break,
            other => panic!("unexpected message type {:?}", other as char),
        }
    }
    assert!(buf.is_empty(), "bytes after Terminate");
}

fn postgres_client(addr: SocketAddr) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    let expect = |conn: &mut TcpStream, want: Vec<u8>| {
        let mut got = vec![0; want.len()];
        conn.read_exact(&mut got).expect("postgres read");
        assert_eq!(got, want);
    };
    conn.write_all(&pg_startup()).expect("postgres write");
    expect(&mut conn, pg_startup_reply());
    for (sql, outcome) in POSTGRES_QUERIES {
        conn.write_all(&pg_query(sql)).expect("postgres write");
        expect(&mut conn, pg_answer(outcome));
    }
    conn.write_all(&pg_terminate()).expect("postgres write");
    // The server closes first, having read everything.
    assert_eq!(conn.read(&mut [0; 1]).expect("postgres read"), 0);
}

/// `requests`: each protocol on a connection of its own, one after the other; the
/// client closes first (HTTP, Redis) or the server, after Terminate (PostgreSQL).
fn requests() {
    type Server = fn(TcpListener);
    type Client = fn(SocketAddr);
    let protocols: [(Server, Client); 3] = [
        (http_server, http_client),
        (redis_server, redis_client),
        (postgres_server, postgres_client),
    ];
    for (server, client) in protocols {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let threads = thread_count();
        let server = std::thread::spawn(move || server(listener));
        client(addr);
        server.join().expect("server thread");
        wait_threads(threads);
    }
}

/// What [`run`] answers to arguments that describe no workload; callers print it and
/// exit with status 2.
pub const USAGE: &str = "usage: ksight-workload procs | tcp SENT RECEIVED | udp | block DEVICE | all SENT RECEIVED DEVICE | procs-tcp SENT RECEIVED | procs-net SENT RECEIVED | tcp-phases N... | connect-loop N | requests";

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
        Some("requests") => requests(),
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

/// Threads of this process.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Waits until this process is down to `threads` threads again. `join` returns as soon as
/// a thread has let go of its memory, before it reaches `sched_process_exit`; a sibling
/// exiting in that window would race it, and whether each was the last thread out (read
/// from the thread group's live count where the tracepoint does not pass it) would depend
/// on timing. A thread's `/proc/self/task` entry goes once it is released, after its exit
/// record.
fn wait_threads(threads: usize) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while thread_count() > threads {
        assert!(
            std::time::Instant::now() < end,
            "a joined thread was not released in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
