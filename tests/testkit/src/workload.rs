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
//! `ksight-workload all SENT RECEIVED DEVICE`: the three in that order.
//! `ksight-workload procs-tcp SENT RECEIVED`: procs, then tcp.
//! `ksight-workload connect-loop N`: N loopback connections, one after the other, each a
//!   one-byte request and response, closed by both ends (benchmarks).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
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
pub const USAGE: &str = "usage: ksight-workload procs | tcp SENT RECEIVED | block DEVICE | all SENT RECEIVED DEVICE | procs-tcp SENT RECEIVED | connect-loop N";

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
        Some("connect-loop") => connect_loop(num(1)?),
        Some("procs-tcp") => {
            let (sent, received) = (num(1)?, num(2)?);
            procs();
            tcp(sent, received);
        }
        Some("block") => block(arg(1)?),
        Some("all") => {
            let (sent, received, device) = (num(1)?, num(2)?, arg(3)?);
            procs();
            tcp(sent, received);
            block(device);
        }
        _ => return Err(USAGE),
    }
    Ok(())
}
