//! Socket I/O records against a workload whose every call is known: `kmod-vm sockio`.
//!
//! The workload (`kmod-vm sockio-workload`, run as a child so that its records are told
//! apart by pid) makes TCP and UDP calls over IPv4 and IPv6 loopback with every traced
//! system call, plus file and pipe I/O that must produce nothing, and writes the record
//! each socket call must produce as one canonical line. The checker reads the records of
//! that pid from one or both backends and compares them line for line; with both
//! backends, the two record sets must also be byte-identical but for `ts_ns` and
//! `duration_ns`.

use anyhow::{Context, Result, anyhow, bail, ensure};
use event_abi::zerocopy::FromBytes;
use event_abi::{
    AF_INET, EventHeader, MAX_MMSG, SockIoEvent, TcpStateEvent, kind, sock_call, sock_dir,
    sock_flags,
};
use ksight_backend_ebpf::{EbpfOptions, EbpfSource};
use ksight_backend_kmod::{KmodOptions, KmodSource, uapi};
use ksight_engine::{EventSource, RawBatch};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::mem::{offset_of, size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

const FIXED: usize = size_of::<SockIoEvent>();

// ---------------------------------------------------------------------------------------
// The canonical line of one record
// ---------------------------------------------------------------------------------------

/// Everything a record says but its time, its socket's address and its header.
#[derive(Clone, Debug)]
struct Want {
    call: u16,
    dir: u8,
    proto: u8,
    family: u16,
    fd: i32,
    local: (Vec<u8>, u16),
    peer: (Vec<u8>, u16),
    bytes: u64,
    payload: Vec<u8>,
    flags: u16,
    msg_index: u16,
    unreported: u32,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Want {
    fn line(&self) -> String {
        format!(
            "call={} dir={} proto={} family={} fd={} local={}:{} peer={}:{} bytes={} \
             payload_len={} flags={} msg_index={} unreported={} payload={}",
            self.call,
            self.dir,
            self.proto,
            self.family,
            self.fd,
            hex(&self.local.0),
            self.local.1,
            hex(&self.peer.0),
            self.peer.1,
            self.bytes,
            self.payload.len(),
            self.flags,
            self.msg_index,
            self.unreported,
            hex(&self.payload),
        )
    }
}

/// A record's line; the payload as it follows the fixed part.
fn record_line(ev: &SockIoEvent, rec: &[u8]) -> String {
    let t = &ev.tuple;
    let n = if t.family == AF_INET { 4 } else { 16 };
    let payload = rec
        .get(FIXED..FIXED + usize::from(ev.payload_len))
        .unwrap_or(&[]);
    Want {
        call: ev.call,
        dir: ev.direction,
        proto: ev.protocol,
        family: t.family,
        fd: ev.fd as i32,
        local: (t.saddr[..n].to_vec(), t.sport),
        peer: (t.daddr[..n].to_vec(), t.dport),
        bytes: ev.bytes,
        payload: payload.to_vec(),
        flags: ev.flags,
        msg_index: ev.msg_index,
        unreported: ev.unreported_msgs,
    }
    .line()
}

// ---------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------

/// Distinct, recognisable bytes for each call.
fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

fn check(rc: isize, what: &str) -> Result<usize> {
    if rc < 0 {
        Err(std::io::Error::last_os_error()).with_context(|| what.to_string())
    } else {
        Ok(rc as usize)
    }
}

fn socket(family: i32, ty: i32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    check(fd as isize, "socket")?;
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket address of either family, as the kernel takes and returns it.
#[derive(Clone, Copy)]
struct Addr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl Addr {
    fn loopback(family: i32) -> Self {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = if family == libc::AF_INET {
            let sin = &mut storage as *mut _ as *mut libc::sockaddr_in;
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe {
                (*sin).sin_family = libc::AF_INET as u16;
                (*sin).sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            }
            size_of::<libc::sockaddr_in>()
        } else {
            let sin6 = &mut storage as *mut _ as *mut libc::sockaddr_in6;
            // SAFETY: as above.
            unsafe {
                (*sin6).sin6_family = libc::AF_INET6 as u16;
                (*sin6).sin6_addr.s6_addr[15] = 1;
            }
            size_of::<libc::sockaddr_in6>()
        };
        Self {
            storage,
            len: len as libc::socklen_t,
        }
    }

    fn ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    /// (address bytes, port) as a record's tuple carries them; zeros when unset.
    fn tuple(&self, family: i32) -> (Vec<u8>, u16) {
        let raw = &self.storage as *const _ as *const u8;
        // SAFETY: the storage is 128 readable bytes.
        let b = unsafe { std::slice::from_raw_parts(raw, size_of::<libc::sockaddr_storage>()) };
        let port = u16::from_be_bytes([b[2], b[3]]);
        if family == libc::AF_INET {
            (b[4..8].to_vec(), port)
        } else {
            (b[8..24].to_vec(), port)
        }
    }
}

fn sockname(fd: RawFd, peer: bool) -> Addr {
    // SAFETY: zeroed storage, its length passed in.
    let mut a = Addr {
        storage: unsafe { zeroed() },
        len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
    };
    let p = &mut a.storage as *mut _ as *mut libc::sockaddr;
    // SAFETY: valid buffer and length; on failure (not connected) it stays zero.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut a.len)
        } else {
            libc::getsockname(fd, p, &mut a.len)
        }
    };
    if rc < 0 {
        // SAFETY: as above.
        a.storage = unsafe { zeroed() };
    }
    a
}

/// Waits until a TCP socket holds `n` unread bytes, so one call reads them all.
fn wait_bytes(fd: RawFd, n: usize) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let mut avail: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        check(
            unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) } as isize,
            "FIONREAD",
        )?;
        if avail as usize >= n {
            return Ok(());
        }
        ensure!(Instant::now() < end, "{n} bytes never arrived on fd {fd}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Workload {
    want: Vec<Want>,
    snaplen: usize,
}

impl Workload {
    /// The record of a call on socket `(fd, protocol, family)` that moved `bytes`, the
    /// first of them from or into `data` (a vectored call's buffers gathered in order).
    fn expect(
        &mut self,
        call: u16,
        dir: u8,
        (fd, proto, family): (RawFd, u8, i32),
        bytes: usize,
        data: &[u8],
    ) -> &mut Want {
        let local = sockname(fd, false).tuple(family);
        let peer = sockname(fd, true).tuple(family);
        let n = bytes.min(self.snaplen).min(data.len());
        self.want.push(Want {
            call,
            dir,
            proto,
            family: family as u16,
            fd,
            local,
            peer,
            bytes: bytes as u64,
            payload: data[..n].to_vec(),
            flags: 0,
            msg_index: 0,
            unreported: 0,
        });
        self.want.last_mut().unwrap()
    }
}

fn write_all(fd: RawFd, b: &[u8]) -> Result<()> {
    // SAFETY: a valid buffer.
    let n = check(
        unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) },
        "write",
    )?;
    ensure!(n == b.len(), "short write {n} of {}", b.len());
    Ok(())
}

fn iov(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut _,
        iov_len: b.len(),
    }
}

fn iov_mut(b: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    }
}

/// A connected TCP pair over loopback: (client, accepted server side).
fn tcp_pair(family: i32) -> Result<(OwnedFd, OwnedFd)> {
    let l = socket(family, libc::SOCK_STREAM)?;
    let a = Addr::loopback(family);
    // SAFETY: a valid address of its length.
    check(
        unsafe { libc::bind(l.as_raw_fd(), a.ptr(), a.len) } as isize,
        "bind",
    )?;
    // SAFETY: plain listen.
    check(unsafe { libc::listen(l.as_raw_fd(), 4) } as isize, "listen")?;
    let bound = sockname(l.as_raw_fd(), false);
    let c = socket(family, libc::SOCK_STREAM)?;
    // SAFETY: a valid address of its length.
    check(
        unsafe { libc::connect(c.as_raw_fd(), bound.ptr(), bound.len) } as isize,
        "connect",
    )?;
    // SAFETY: no peer address wanted.
    let s = unsafe {
        libc::accept4(
            l.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    check(s as isize, "accept")?;
    // SAFETY: a fresh descriptor.
    Ok((c, unsafe { OwnedFd::from_raw_fd(s) }))
}

fn udp_bound(family: i32) -> Result<OwnedFd> {
    let u = socket(family, libc::SOCK_DGRAM)?;
    let a = Addr::loopback(family);
    // SAFETY: a valid address of its length.
    check(
        unsafe { libc::bind(u.as_raw_fd(), a.ptr(), a.len) } as isize,
        "bind",
    )?;
    Ok(u)
}

const TCP: u8 = libc::IPPROTO_TCP as u8;
const UDP: u8 = libc::IPPROTO_UDP as u8;
const SEND: u8 = sock_dir::SEND;
const RECV: u8 = sock_dir::RECV;

fn tcp_calls(w: &mut Workload, family: i32, seed: u8) -> Result<()> {
    let (c, s) = tcp_pair(family)?;
    let (cf, sf) = (c.as_raw_fd(), s.as_raw_fd());
    let mut buf = vec![0u8; 8192];

    // write / read
    let p = pattern(seed, 100);
    write_all(cf, &p)?;
    w.expect(sock_call::WRITE, SEND, (cf, TCP, family), 100, &p);
    wait_bytes(sf, 100)?;
    // SAFETY: a valid buffer.
    let n = check(
        unsafe { libc::read(sf, buf.as_mut_ptr().cast(), 100) },
        "read",
    )?;
    w.expect(sock_call::READ, RECV, (sf, TCP, family), n, &p);
    if family == libc::AF_INET6 {
        return Ok(());
    }

    // writev / readv: the payload is gathered from both buffers.
    let (a, b) = (pattern(seed + 1, 300), pattern(seed + 2, 200));
    let ab = [a.clone(), b.clone()].concat();
    let v = [iov(&a), iov(&b)];
    // SAFETY: two valid iovecs.
    let n = check(unsafe { libc::writev(cf, v.as_ptr(), 2) }, "writev")?;
    w.expect(sock_call::WRITEV, SEND, (cf, TCP, family), n, &ab);
    wait_bytes(sf, 500)?;
    let (mut r1, mut r2) = (vec![0u8; 250], vec![0u8; 250]);
    let v = [iov_mut(&mut r1), iov_mut(&mut r2)];
    // SAFETY: two valid iovecs.
    let n = check(unsafe { libc::readv(sf, v.as_ptr(), 2) }, "readv")?;
    w.expect(sock_call::READV, RECV, (sf, TCP, family), n, &ab);

    // writev of more buffers than are gathered: the payload stops after MAX_IOV of them.
    let parts: Vec<Vec<u8>> = (0..event_abi::MAX_IOV as u8 + 8)
        .map(|i| pattern(seed.wrapping_add(10).wrapping_add(i), 3))
        .collect();
    let v: Vec<libc::iovec> = parts.iter().map(|p| iov(p)).collect();
    // SAFETY: valid iovecs.
    let n = check(
        unsafe { libc::writev(cf, v.as_ptr(), v.len() as i32) },
        "writev",
    )?;
    w.expect(
        sock_call::WRITEV,
        SEND,
        (cf, TCP, family),
        n,
        &parts[..event_abi::MAX_IOV].concat(),
    );
    wait_bytes(sf, n)?;
    // SAFETY: a valid buffer.
    let m = check(
        unsafe { libc::read(sf, buf.as_mut_ptr().cast(), n) },
        "read",
    )?;
    w.expect(sock_call::READ, RECV, (sf, TCP, family), m, &parts.concat());

    // sendto / recvfrom without addresses, beyond the snaplen.
    let p = pattern(seed + 3, 1000);
    // SAFETY: a valid buffer, no address.
    let n = check(
        unsafe { libc::sendto(cf, p.as_ptr().cast(), p.len(), 0, std::ptr::null(), 0) },
        "sendto",
    )?;
    w.expect(sock_call::SENDTO, SEND, (cf, TCP, family), n, &p);
    wait_bytes(sf, 1000)?;
    // SAFETY: a valid buffer, no address.
    let n = check(
        unsafe {
            libc::recvfrom(
                sf,
                buf.as_mut_ptr().cast(),
                1000,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        },
        "recvfrom",
    )?;
    w.expect(sock_call::RECVFROM, RECV, (sf, TCP, family), n, &p);

    // sendmsg / recvmsg: buffers of 700 + 50 and 40 + 710 bytes, gathered.
    let (a, b) = (pattern(seed + 4, 700), pattern(seed + 5, 50));
    let ab = [a.clone(), b.clone()].concat();
    let v = [iov(&a), iov(&b)];
    // SAFETY: all-zero is a valid msghdr.
    let mut m: libc::msghdr = unsafe { zeroed() };
    m.msg_iov = v.as_ptr() as *mut _;
    m.msg_iovlen = 2;
    // SAFETY: a valid msghdr.
    let n = check(unsafe { libc::sendmsg(cf, &m, 0) }, "sendmsg")?;
    w.expect(sock_call::SENDMSG, SEND, (cf, TCP, family), n, &ab);
    wait_bytes(sf, 750)?;
    let (mut r1, mut r2) = (vec![0u8; 40], vec![0u8; 710]);
    let v = [iov_mut(&mut r1), iov_mut(&mut r2)];
    // SAFETY: all-zero is a valid msghdr.
    let mut m: libc::msghdr = unsafe { zeroed() };
    m.msg_iov = v.as_ptr() as *mut _;
    m.msg_iovlen = 2;
    // SAFETY: a valid msghdr.
    let n = check(unsafe { libc::recvmsg(sf, &mut m, 0) }, "recvmsg")?;
    w.expect(sock_call::RECVMSG, RECV, (sf, TCP, family), n, &ab);

    // The other way: recv() is recvfrom.
    let p = pattern(seed + 6, 30);
    write_all(sf, &p)?;
    w.expect(sock_call::WRITE, SEND, (sf, TCP, family), 30, &p);
    wait_bytes(cf, 30)?;
    // SAFETY: a valid buffer.
    let n = check(
        unsafe { libc::recv(cf, buf.as_mut_ptr().cast(), 30, 0) },
        "recv",
    )?;
    w.expect(sock_call::RECVFROM, RECV, (cf, TCP, family), n, &p);

    // sendfile from a file: bytes, no payload; the file's own read and write record
    // nothing.
    let path = std::env::temp_dir().join(format!("kmod-vm-sockio-{}", std::process::id()));
    let content = pattern(seed + 7, 3000);
    std::fs::write(&path, &content)?;
    let file = std::fs::File::open(&path)?;
    let _ = std::fs::remove_file(&path);
    // SAFETY: two valid descriptors.
    let n = check(
        unsafe { libc::sendfile(cf, file.as_raw_fd(), std::ptr::null_mut(), 3000) },
        "sendfile",
    )?;
    ensure!(n == 3000, "sendfile sent {n}");
    w.expect(sock_call::SENDFILE, SEND, (cf, TCP, family), n, &[]);
    wait_bytes(sf, 3000)?;
    // SAFETY: a valid buffer.
    let n = check(
        unsafe { libc::read(sf, buf.as_mut_ptr().cast(), 3000) },
        "read",
    )?;
    w.expect(sock_call::READ, RECV, (sf, TCP, family), n, &content);

    // splice through a pipe, into the socket and out of the other end.
    let mut pipe = [0; 2];
    // SAFETY: two ints.
    check(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } as isize,
        "pipe",
    )?;
    // SAFETY: fresh descriptors.
    let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let p = pattern(seed + 8, 400);
    write_all(pw.as_raw_fd(), &p)?;
    // SAFETY: valid descriptors, no offsets.
    let n = check(
        unsafe {
            libc::splice(
                pr.as_raw_fd(),
                std::ptr::null_mut(),
                cf,
                std::ptr::null_mut(),
                400,
                0,
            )
        },
        "splice into the socket",
    )?;
    w.expect(sock_call::SPLICE, SEND, (cf, TCP, family), n, &[]);
    wait_bytes(sf, 400)?;
    // SAFETY: as above.
    let n = check(
        unsafe {
            libc::splice(
                sf,
                std::ptr::null_mut(),
                pw.as_raw_fd(),
                std::ptr::null_mut(),
                400,
                0,
            )
        },
        "splice out of the socket",
    )?;
    w.expect(sock_call::SPLICE, RECV, (sf, TCP, family), n, &[]);
    // SAFETY: a valid buffer.
    check(
        unsafe { libc::read(pr.as_raw_fd(), buf.as_mut_ptr().cast(), 400) },
        "pipe read",
    )?;

    // The end of the stream reads 0 bytes: no record.
    drop(c);
    // SAFETY: a valid buffer.
    let n = check(
        unsafe { libc::read(sf, buf.as_mut_ptr().cast(), 100) },
        "read",
    )?;
    ensure!(n == 0, "read {n} after the peer closed");
    Ok(())
}

fn sendto(fd: RawFd, b: &[u8], to: &Addr) -> Result<usize> {
    // SAFETY: a valid buffer and address.
    check(
        unsafe { libc::sendto(fd, b.as_ptr().cast(), b.len(), 0, to.ptr(), to.len) },
        "sendto",
    )
}

/// recvfrom with a source address: (bytes, the sender).
fn recvfrom(fd: RawFd, buf: &mut [u8]) -> Result<(usize, Addr)> {
    // SAFETY: zeroed storage of its length.
    let mut from = Addr {
        storage: unsafe { zeroed() },
        len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
    };
    // SAFETY: valid buffers.
    let n = check(
        unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                &mut from.storage as *mut _ as *mut libc::sockaddr,
                &mut from.len,
            )
        },
        "recvfrom",
    )?;
    Ok((n, from))
}

fn udp_calls(w: &mut Workload, family: i32, seed: u8) -> Result<()> {
    let (u1, u2) = (udp_bound(family)?, udp_bound(family)?);
    let (f1, f2) = (u1.as_raw_fd(), u2.as_raw_fd());
    let a2 = sockname(f2, false);
    let mut buf = vec![0u8; 4096];
    let peer = |w: &mut Want, a: &Addr| {
        w.peer = a.tuple(family);
        w.flags |= sock_flags::PEER_FROM_CALL;
    };

    // Unconnected: the peer comes from the call's address.
    let p = pattern(seed, 64);
    let n = sendto(f1, &p, &a2)?;
    peer(
        w.expect(sock_call::SENDTO, SEND, (f1, UDP, family), n, &p),
        &a2,
    );
    let (n, from) = recvfrom(f2, &mut buf)?;
    peer(
        w.expect(sock_call::RECVFROM, RECV, (f2, UDP, family), n, &p),
        &from,
    );
    // An empty datagram is a record of 0 bytes.
    let n = sendto(f1, &[], &a2)?;
    peer(
        w.expect(sock_call::SENDTO, SEND, (f1, UDP, family), n, &[]),
        &a2,
    );
    let (n, from) = recvfrom(f2, &mut buf)?;
    ensure!(n == 0, "an empty datagram read {n} bytes");
    peer(
        w.expect(sock_call::RECVFROM, RECV, (f2, UDP, family), n, &[]),
        &from,
    );
    if family == libc::AF_INET6 {
        return Ok(());
    }

    // sendmsg / recvmsg with msg_name.
    let p = pattern(seed + 1, 90);
    let v = [iov(&p)];
    // SAFETY: all-zero is a valid msghdr.
    let mut m: libc::msghdr = unsafe { zeroed() };
    m.msg_name = a2.ptr() as *mut _;
    m.msg_namelen = a2.len;
    m.msg_iov = v.as_ptr() as *mut _;
    m.msg_iovlen = 1;
    // SAFETY: a valid msghdr.
    let n = check(unsafe { libc::sendmsg(f1, &m, 0) }, "sendmsg")?;
    peer(
        w.expect(sock_call::SENDMSG, SEND, (f1, UDP, family), n, &p),
        &a2,
    );
    // SAFETY: zeroed storage.
    let mut from: libc::sockaddr_storage = unsafe { zeroed() };
    let v = [iov_mut(&mut buf)];
    // SAFETY: all-zero is a valid msghdr.
    let mut m: libc::msghdr = unsafe { zeroed() };
    m.msg_name = &mut from as *mut _ as *mut _;
    m.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
    m.msg_iov = v.as_ptr() as *mut _;
    m.msg_iovlen = 1;
    // SAFETY: a valid msghdr.
    let n = check(unsafe { libc::recvmsg(f2, &mut m, 0) }, "recvmsg")?;
    let from = Addr {
        storage: from,
        len: m.msg_namelen,
    };
    peer(
        w.expect(sock_call::RECVMSG, RECV, (f2, UDP, family), n, &p),
        &from,
    );

    // sendmmsg / recvmmsg of 20 datagrams: 16 records each, the last one counting 4 more.
    const N: usize = 20;
    let datagrams: Vec<Vec<u8>> = (0..N)
        .map(|i| pattern(seed + 2 + i as u8, 10 + i))
        .collect();
    let iovs: Vec<libc::iovec> = datagrams.iter().map(|d| iov(d)).collect();
    // SAFETY: all-zero is a valid mmsghdr.
    let mut out: Vec<libc::mmsghdr> = (0..N).map(|_| unsafe { zeroed() }).collect();
    for (i, m) in out.iter_mut().enumerate() {
        m.msg_hdr.msg_name = a2.ptr() as *mut _;
        m.msg_hdr.msg_namelen = a2.len;
        m.msg_hdr.msg_iov = &iovs[i] as *const _ as *mut _;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: N valid mmsghdrs.
    let sent = check(
        unsafe { libc::sendmmsg(f1, out.as_mut_ptr(), N as u32, 0) } as isize,
        "sendmmsg",
    )?;
    ensure!(sent == N, "sendmmsg sent {sent} of {N}");
    for (i, d) in datagrams.iter().enumerate().take(MAX_MMSG) {
        let e = w.expect(sock_call::SENDMMSG, SEND, (f1, UDP, family), d.len(), d);
        peer(e, &a2);
        e.msg_index = i as u16;
        if i == MAX_MMSG - 1 {
            e.unreported = (N - MAX_MMSG) as u32;
        }
    }
    let mut bufs: Vec<Vec<u8>> = (0..N).map(|_| vec![0u8; 64]).collect();
    let iovs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iov_mut(b)).collect();
    // SAFETY: zeroed storage.
    let mut froms: Vec<libc::sockaddr_storage> = (0..N).map(|_| unsafe { zeroed() }).collect();
    // SAFETY: all-zero is a valid mmsghdr.
    let mut inb: Vec<libc::mmsghdr> = (0..N).map(|_| unsafe { zeroed() }).collect();
    for (i, m) in inb.iter_mut().enumerate() {
        m.msg_hdr.msg_name = &mut froms[i] as *mut _ as *mut _;
        m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        m.msg_hdr.msg_iov = &iovs[i] as *const _ as *mut _;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: N valid mmsghdrs; no timeout: all N are queued already.
    let got = check(
        unsafe { libc::recvmmsg(f2, inb.as_mut_ptr(), N as u32, 0, std::ptr::null_mut()) } as isize,
        "recvmmsg",
    )?;
    ensure!(got == N, "recvmmsg received {got} of {N}");
    for (i, d) in datagrams.iter().enumerate().take(MAX_MMSG) {
        let from = Addr {
            storage: froms[i],
            len: inb[i].msg_hdr.msg_namelen,
        };
        let e = w.expect(
            sock_call::RECVMMSG,
            RECV,
            (f2, UDP, family),
            inb[i].msg_len as usize,
            d,
        );
        peer(e, &from);
        e.msg_index = i as u16;
        if i == MAX_MMSG - 1 {
            e.unreported = (N - MAX_MMSG) as u32;
        }
    }

    // Connected: the peer is the socket's own; read() on UDP.
    let u3 = udp_bound(family)?;
    let f3 = u3.as_raw_fd();
    // SAFETY: a valid address.
    check(
        unsafe { libc::connect(f3, a2.ptr(), a2.len) } as isize,
        "connect",
    )?;
    let p = pattern(seed + 40, 33);
    // SAFETY: a valid buffer.
    let n = check(
        unsafe { libc::send(f3, p.as_ptr().cast(), p.len(), 0) },
        "send",
    )?;
    w.expect(sock_call::SENDTO, SEND, (f3, UDP, family), n, &p);
    // SAFETY: a valid buffer.
    let n = check(
        unsafe { libc::read(f2, buf.as_mut_ptr().cast(), buf.len()) },
        "read",
    )?;
    w.expect(sock_call::READ, RECV, (f2, UDP, family), n, &p);
    Ok(())
}

/// File and pipe I/O: must not produce a single record.
fn not_sockets() -> Result<()> {
    let path = std::env::temp_dir().join(format!("kmod-vm-file-{}", std::process::id()));
    let p = pattern(99, 700);
    std::fs::write(&path, &p)?;
    ensure!(std::fs::read(&path)? == p, "file read back differs");
    let _ = std::fs::remove_file(&path);
    let mut pipe = [0; 2];
    // SAFETY: two ints.
    check(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } as isize,
        "pipe",
    )?;
    // SAFETY: fresh descriptors.
    let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    write_all(pw.as_raw_fd(), &p[..300])?;
    let mut buf = [0u8; 300];
    // SAFETY: a valid buffer.
    check(
        unsafe { libc::read(pr.as_raw_fd(), buf.as_mut_ptr().cast(), 300) },
        "pipe read",
    )?;
    Ok(())
}

/// `kmod-vm sockio-workload FILE SNAPLEN`: the calls, and their lines into FILE.
pub fn workload(args: &[String]) -> Result<i32> {
    ensure!(
        args.len() == 2,
        "usage: kmod-vm sockio-workload FILE SNAPLEN"
    );
    let mut w = Workload {
        want: Vec::new(),
        snaplen: args[1].parse()?,
    };
    not_sockets()?;
    tcp_calls(&mut w, libc::AF_INET, 1)?;
    tcp_calls(&mut w, libc::AF_INET6, 11)?;
    udp_calls(&mut w, libc::AF_INET, 21)?;
    udp_calls(&mut w, libc::AF_INET6, 91)?;
    let text: String = w.want.iter().map(|x| x.line() + "\n").collect();
    std::fs::write(&args[0], text)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------

fn header(rec: &[u8]) -> Option<EventHeader> {
    EventHeader::read_from_prefix(rec).ok().map(|(h, _)| h)
}

/// The bytes both backends must agree on: all but `ts_ns` and `duration_ns`.
fn comparable(rec: &[u8]) -> Vec<u8> {
    let mut k = rec.to_vec();
    k[..8].fill(0);
    let d = offset_of!(SockIoEvent, duration_ns);
    k[d..d + 8].fill(0);
    k
}

struct Seen {
    lines: Vec<String>,
    records: Vec<Vec<u8>>,
    tcp_state_socks: HashSet<u64>,
    problems: Vec<String>,
}

/// The socket I/O records of `pid` in `recs`, checked one by one.
fn examine(name: &str, recs: &[Vec<u8>], pid: u32) -> Seen {
    let mut seen = Seen {
        lines: Vec::new(),
        records: Vec::new(),
        tcp_state_socks: Default::default(),
        problems: Vec::new(),
    };
    for r in recs {
        let Some(h) = header(r) else { continue };
        if h.kind == kind::TCP_STATE
            && let Ok((t, _)) = TcpStateEvent::read_from_prefix(r)
        {
            seen.tcp_state_socks.insert(t.sock_id);
        }
        if h.kind != kind::SOCK_IO || h.pid != pid {
            continue;
        }
        let Ok((ev, _)) = SockIoEvent::read_from_prefix(r) else {
            seen.problems
                .push(format!("{name}: a socket I/O record of {} bytes", r.len()));
            continue;
        };
        let size = event_abi::sock_io_size(usize::from(ev.payload_len));
        if usize::from(h.size) != size || r.len() != size {
            seen.problems.push(format!(
                "{name}: size {} (frame {}) for payload {}",
                h.size,
                r.len(),
                ev.payload_len
            ));
        }
        if r[FIXED + usize::from(ev.payload_len)..]
            .iter()
            .any(|b| *b != 0)
            || ev._pad != 0
            || ev._pad2 != 0
            || ev.tuple._pad != 0
        {
            seen.problems.push(format!(
                "{name}: padding not zero in {}",
                record_line(&ev, r)
            ));
        }
        if ev.flags & sock_flags::NO_ENTRY != 0 || ev.duration_ns == 0 {
            seen.problems.push(format!(
                "{name}: no duration ({} ns, flags {})",
                ev.duration_ns, ev.flags
            ));
        }
        if ev.sock_id == 0 {
            seen.problems.push(format!("{name}: sock_id 0"));
        }
        if h.tid != pid || h.cgroup_id == 0 {
            seen.problems.push(format!(
                "{name}: header tid {} cgroup {}",
                h.tid, h.cgroup_id
            ));
        }
        seen.lines.push(record_line(&ev, r));
        seen.records.push(r.clone());
    }
    seen
}

/// The fields where two records differ, each with both values.
fn differing_fields(a: &[u8], b: &[u8]) -> Vec<(&'static str, String)> {
    const FIELDS: [(&str, usize, usize); 19] = [
        ("header.cgroup_id", offset_of!(SockIoEvent, header) + 8, 8),
        ("header.pid", offset_of!(SockIoEvent, header) + 16, 4),
        ("header.tid", offset_of!(SockIoEvent, header) + 20, 4),
        ("header.cpu", offset_of!(SockIoEvent, header) + 24, 4),
        ("header.kind+size", offset_of!(SockIoEvent, header) + 28, 4),
        ("sock_id", offset_of!(SockIoEvent, sock_id), 8),
        ("bytes", offset_of!(SockIoEvent, bytes), 8),
        ("tuple.family+ports+pad", offset_of!(SockIoEvent, tuple), 8),
        ("tuple.saddr", offset_of!(SockIoEvent, tuple) + 8, 16),
        ("tuple.daddr", offset_of!(SockIoEvent, tuple) + 24, 16),
        ("fd", offset_of!(SockIoEvent, fd), 4),
        ("call+direction+protocol", offset_of!(SockIoEvent, call), 4),
        ("flags", offset_of!(SockIoEvent, flags), 2),
        ("payload_len", offset_of!(SockIoEvent, payload_len), 2),
        ("msg_index", offset_of!(SockIoEvent, msg_index), 2),
        ("_pad", offset_of!(SockIoEvent, _pad), 2),
        (
            "unreported_msgs",
            offset_of!(SockIoEvent, unreported_msgs),
            4,
        ),
        ("_pad2", offset_of!(SockIoEvent, _pad2), 4),
        ("payload and its padding", FIXED, usize::MAX),
    ];
    if a.len() != b.len() {
        return vec![("size", format!("kmod {}, ebpf {}", a.len(), b.len()))];
    }
    let mut out = Vec::new();
    for (name, at, len) in FIELDS {
        let end = at.saturating_add(len).min(a.len());
        if at < end && a[at..end] != b[at..end] {
            out.push((
                name,
                format!(
                    "kmod {}, ebpf {}",
                    hex(&a[at..end.min(at + 16)]),
                    hex(&b[at..end.min(at + 16)])
                ),
            ));
        }
    }
    out
}

/// Multiset difference, as lines for the report.
fn diff(want: &[String], got: &[String]) -> (Vec<String>, Vec<String>) {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for w in want {
        *count.entry(w).or_default() += 1;
    }
    for g in got {
        *count.entry(g).or_default() -= 1;
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    for (l, n) in count {
        for _ in 0..n.max(0) {
            missing.push(l.to_string());
        }
        for _ in 0..(-n).max(0) {
            extra.push(l.to_string());
        }
    }
    (missing, extra)
}

fn short(l: &str) -> &str {
    &l[..l.len().min(230)]
}

enum Src {
    Kmod(KmodSource),
    Ebpf(Box<EbpfSource>),
}

impl Src {
    fn get(&mut self) -> &mut dyn EventSource {
        match self {
            Src::Kmod(s) => s,
            Src::Ebpf(s) => s.as_mut(),
        }
    }
}

/// `kmod-vm sockio --backend kmod|both [--snaplen N]`.
pub fn sockio(args: &[String]) -> Result<i32> {
    let mut backend = "kmod".to_string();
    let mut snaplen: Option<u32> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--backend" => backend = args.get(i + 1).cloned().ok_or(anyhow!("--backend?"))?,
            "--snaplen" => snaplen = Some(args.get(i + 1).ok_or(anyhow!("--snaplen?"))?.parse()?),
            other => bail!("unknown argument {other}"),
        }
        i += 2;
    }
    let names: Vec<&str> = match backend.as_str() {
        "kmod" => vec!["kmod"],
        "both" => vec!["kmod", "ebpf"],
        other => bail!("--backend {other}: kmod or both"),
    };
    // eBPF first, so that from the module's start both see everything.
    let mut sources: Vec<Src> = Vec::new();
    if names.contains(&"ebpf") {
        let mut o = EbpfOptions::default();
        if let Some(n) = snaplen {
            o.snaplen = n;
        }
        sources.push(Src::Ebpf(Box::new(
            EbpfSource::open(o).context("opening the eBPF backend")?,
        )));
    }
    let kmod = KmodSource::open(KmodOptions {
        snaplen,
        ..KmodOptions::default()
    })
    .context("opening the kmod backend")?;
    let mut failures = Vec::new();
    let status = kmod
        .fidelity()
        .into_iter()
        .find(|s| s.name() == "socket_io")
        .ok_or(anyhow!("no socket_io signal"))?;
    println!("sockio: module fidelity {:?}", status.status);
    if status.status != ksight_engine::signals::Fidelity::Full {
        failures.push(format!("socket_io from the module: {:?}", status.status));
    }
    sources.insert(0, Src::Kmod(kmod));

    let expect = std::env::temp_dir().join("kmod-vm-sockio-expected.txt");
    let snap = snaplen.unwrap_or(event_abi::DEFAULT_SNAPLEN as u32);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "sockio-workload",
            &expect.to_string_lossy(),
            &snap.to_string(),
        ])
        .spawn()
        .context("starting the workload")?;
    let pid = child.id();
    let mut recs: Vec<Vec<Vec<u8>>> = vec![Vec::new(); sources.len()];
    let mut batch = RawBatch::new();
    let mut pump = |sources: &mut Vec<Src>, recs: &mut Vec<Vec<Vec<u8>>>| -> Result<()> {
        for (i, s) in sources.iter_mut().enumerate() {
            batch.clear();
            s.get().poll(&mut batch, Duration::from_millis(5))?;
            recs[i].extend(batch.iter().map(<[u8]>::to_vec));
        }
        Ok(())
    };
    let status = loop {
        pump(&mut sources, &mut recs)?;
        if let Some(status) = child.try_wait()? {
            break status;
        }
    };
    ensure!(status.success(), "the workload failed: {status}");
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        pump(&mut sources, &mut recs)?;
    }
    let want: Vec<String> = std::fs::read_to_string(&expect)?
        .lines()
        .map(str::to_string)
        .collect();

    let mut seen = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let s = examine(name, &recs[i], pid);
        let (missing, extra) = diff(&want, &s.lines);
        println!(
            "sockio: {name}: {} socket records of the workload, {} expected, {} missing, {} unexpected",
            s.lines.len(),
            want.len(),
            missing.len(),
            extra.len()
        );
        for m in missing.iter().take(8) {
            failures.push(format!("{name}: missing  {}", short(m)));
        }
        for e in extra.iter().take(8) {
            failures.push(format!("{name}: unexpected {}", short(e)));
        }
        failures.extend(s.problems.iter().take(8).cloned());
        // The TCP sockets' ids are those of their state records.
        let tcp: BTreeSet<u64> = s
            .records
            .iter()
            .filter_map(|r| SockIoEvent::read_from_prefix(r).ok().map(|(e, _)| e))
            .filter(|e| e.protocol == TCP)
            .map(|e| e.sock_id)
            .collect();
        let unknown = tcp
            .iter()
            .filter(|id| !s.tcp_state_socks.contains(id))
            .count();
        println!(
            "sockio: {name}: {} TCP sockets, {} without a TCP state record of the same sock_id",
            tcp.len(),
            unknown
        );
        // Client and server of the IPv4 and the IPv6 connection.
        if unknown > 0 || tcp.len() != 4 {
            failures.push(format!(
                "{name}: {} TCP sockets (want 4), {unknown} of them unknown to the TCP state records",
                tcp.len()
            ));
        }
        seen.push(s);
    }
    if seen.len() == 2 {
        let a: Vec<Vec<u8>> = seen[0].records.iter().map(|r| comparable(r)).collect();
        let b: Vec<Vec<u8>> = seen[1].records.iter().map(|r| comparable(r)).collect();
        let (ha, hb): (Vec<String>, Vec<String>) = (
            a.iter().map(|r| hex(r)).collect(),
            b.iter().map(|r| hex(r)).collect(),
        );
        let (only_k, only_e) = diff(&ha, &hb);
        println!(
            "sockio: records byte-identical but for ts_ns and duration_ns: {} of {} (kmod) / {} (ebpf)",
            a.len() - only_k.len(),
            a.len(),
            b.len()
        );
        if !only_k.is_empty() || !only_e.is_empty() {
            failures.push(format!(
                "{} records only from kmod, {} only from ebpf (bytes differ beyond ts_ns and duration_ns)",
                only_k.len(),
                only_e.len()
            ));
            // Where they differ: records paired by their line, fields that disagree.
            let mut fields: BTreeMap<&str, (u64, String)> = BTreeMap::new();
            let mut by_line: HashMap<&str, Vec<&[u8]>> = HashMap::new();
            for (l, r) in seen[1].lines.iter().zip(&b) {
                by_line.entry(l).or_default().push(r);
            }
            for (l, r) in seen[0].lines.iter().zip(&a) {
                let Some(other) = by_line.get_mut(l.as_str()).and_then(|v| v.pop()) else {
                    continue;
                };
                for (f, example) in differing_fields(r, other) {
                    fields.entry(f).or_insert((0, example)).0 += 1;
                }
            }
            for (f, (n, example)) in &fields {
                failures.push(format!("{n} records differ in {f}, e.g. {example}"));
            }
        }
    }
    let kmod = match &sources[0] {
        Src::Kmod(k) => k,
        Src::Ebpf(_) => unreachable!("the module is first"),
    };
    let st = kmod.stats()?;
    let k = usize::from(kind::SOCK_IO);
    println!(
        "sockio: module socket_io records emitted {} lost {} (all processes)",
        st.emitted[k], st.lost[k]
    );
    if st.lost[k] != 0 {
        failures.push(format!("{} socket records lost", st.lost[k]));
    }
    drop(sources);
    failures.extend(disabled_costs_nothing()?);
    if failures.is_empty() {
        println!("sockio: PASS every socket call exact, files and pipes silent");
        Ok(0)
    } else {
        for f in &failures {
            println!("sockio: FAIL {f}");
        }
        Ok(1)
    }
}

/// With socket I/O not selected, its probes are not registered; selecting it during the
/// capture registers both, and they record.
fn disabled_costs_nothing() -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let all: u32 = (1..kind::END).map(|k| 1u32 << k).sum();
    let without = all & !(1 << kind::SOCK_IO);
    let mut kmod = KmodSource::open(KmodOptions {
        kinds: Some(without),
        ..KmodOptions::default()
    })?;
    let st = kmod.stats()?;
    let sock = 1u32 << kind::SOCK_IO;
    if st.attached & sock != 0 || st.attached != (without & st.available) {
        failures.push(format!(
            "socket I/O not selected, yet attached {:#x} (available {:#x})",
            st.attached, st.available
        ));
    }
    let mut batch = RawBatch::new();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    udp.send_to(b"nothing", udp.local_addr()?)?;
    kmod.poll(&mut batch, Duration::from_millis(50))?;
    let n = batch
        .iter()
        .filter(|r| header(r).is_some_and(|h| h.kind == kind::SOCK_IO))
        .count();
    if n > 0 || kmod.stats()?.emitted[usize::from(kind::SOCK_IO)] > 0 {
        failures.push(format!("{n} socket records with socket I/O not selected"));
    }
    // Selected during the capture: registered at once.
    let fd = crate::kmod_fd()?;
    let mut k = all;
    // SAFETY: the request takes one u32.
    let rc = unsafe { libc::ioctl(fd, uapi::IOC_SET_KINDS as _, &mut k) };
    ensure!(
        rc == 0,
        "KSIGHT_IOC_SET_KINDS: {}",
        std::io::Error::last_os_error()
    );
    let st = kmod.stats()?;
    if st.attached & sock == 0 {
        failures.push(format!(
            "socket I/O selected during the capture, not attached: {:#x}",
            st.attached
        ));
    }
    udp.send_to(b"something", udp.local_addr()?)?;
    let mut buf = [0u8; 16];
    let _ = udp.recv_from(&mut buf)?;
    let mut got = 0;
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        batch.clear();
        kmod.poll(&mut batch, Duration::from_millis(20))?;
        got += batch
            .iter()
            .filter(|r| {
                header(r).is_some_and(|h| h.kind == kind::SOCK_IO && h.pid == std::process::id())
            })
            .count();
    }
    println!(
        "sockio: not selected: attached {:#x}, 0 socket records; selected during the capture: attached {:#x}, {got} records",
        without & st.available,
        st.attached
    );
    // The first sendto may belong to the old selection; the recvfrom cannot.
    if got == 0 {
        failures.push("no socket record after selecting socket I/O during the capture".into());
    }
    Ok(failures)
}
