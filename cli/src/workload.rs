//! A workload whose kernel-visible activity is exactly what its arguments say, so ksight's
//! numbers can be compared with the truth: `ksight verify` runs it under both backends,
//! and the tests run it as `ksight-workload` (tests/support/workload_main.rs).
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
use std::process::{Command, exit};

fn procs() {
    let runs: [(&str, &[&str], i32); 6] = [
        ("/bin/true", &[], 0),
        ("/bin/true", &[], 0),
        ("/bin/true", &[], 0),
        ("/bin/false", &[], 1),
        ("/bin/sh", &["-c", "exit 3"], 3),
        ("/bin/sh", &["-c", "exit 3"], 3),
    ];
    for (program, args, expected) in runs {
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
    let mut offset = 0;
    for _ in 0..4 {
        io(&mut offset, 65536, true);
    }
    for _ in 0..3 {
        io(&mut offset, 4096, true);
    }
    let mut offset = 0;
    for _ in 0..2 {
        io(&mut offset, 131072, false);
    }
    for _ in 0..5 {
        io(&mut offset, 512, false);
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

/// Runs the workload that `args` (without the program name) describe.
pub fn run(args: &[String]) {
    let num = |i: usize| -> usize {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("procs") => procs(),
        Some("tcp") => tcp(num(1), num(2)),
        Some("connect-loop") => connect_loop(num(1)),
        Some("procs-tcp") => {
            procs();
            tcp(num(1), num(2));
        }
        Some("block") => block(args.get(1).unwrap_or_else(|| usage())),
        Some("all") => {
            procs();
            tcp(num(1), num(2));
            block(args.get(3).unwrap_or_else(|| usage()));
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: ksight-workload procs | tcp SENT RECEIVED | block DEVICE | all SENT RECEIVED DEVICE | procs-tcp SENT RECEIVED | connect-loop N"
    );
    exit(2)
}
