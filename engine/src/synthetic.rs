//! Synthetic event streams with known ground truth, shaped like what the backends emit.
//! Used by unit tests, the benchmark and replay tests; never by a live capture.

use crate::decode::{encode, encode_sock_io};
use crate::source::RawBatch;
use core::mem::size_of;
use event_abi::*;

pub struct Synth {
    pub ts: u64,
    pub cpu: u32,
    pub batch: RawBatch,
}

impl Default for Synth {
    fn default() -> Self {
        Self {
            ts: 1_000_000,
            cpu: 0,
            batch: RawBatch::new(),
        }
    }
}

fn fixed<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = text.len().min(N - 1);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

impl Synth {
    pub fn new() -> Self {
        Self::default()
    }

    /// Next header: time moves 1 µs per record.
    pub fn header<T>(&mut self, kind: u16, pid: u32, cgroup_id: u64) -> EventHeader {
        self.ts += 1000;
        EventHeader {
            ts_ns: self.ts,
            cgroup_id,
            pid,
            tid: pid,
            cpu: self.cpu,
            kind,
            size: size_of::<T>() as u16,
        }
    }

    pub fn exec(&mut self, pid: u32, ppid: u32, cgroup_id: u64, filename: &str) {
        let comm = filename.rsplit('/').next().unwrap_or(filename);
        let rec = ExecEvent {
            header: self.header::<ExecEvent>(kind::EXEC, pid, cgroup_id),
            ppid,
            filename_len: filename.len().min(FILENAME_LEN - 1) as u32,
            comm: fixed(comm),
            filename: fixed(filename),
        };
        self.batch.push(encode(&rec));
    }

    pub fn fork(&mut self, parent: u32, child: u32, cgroup_id: u64, thread: bool) {
        let rec = ForkEvent {
            header: self.header::<ForkEvent>(kind::FORK, parent, cgroup_id),
            parent_pid: parent,
            parent_tgid: parent,
            child_pid: child,
            child_tgid: if thread { parent } else { child },
        };
        self.batch.push(encode(&rec));
    }

    pub fn exit(&mut self, pid: u32, cgroup_id: u64, comm: &str, exit_status: u32) {
        let rec = ExitEvent {
            header: self.header::<ExitEvent>(kind::EXIT, pid, cgroup_id),
            exit_status,
            group_dead: 1,
            comm: fixed(comm),
        };
        self.batch.push(encode(&rec));
    }

    #[allow(clippy::too_many_arguments)]
    pub fn state(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        sock: u64,
        sock_cg: u64,
        tuple: TcpTuple,
        old: u32,
        new: u32,
        stats: Option<(u64, u64)>,
    ) {
        let mut rec = TcpStateEvent {
            header: self.header::<TcpStateEvent>(kind::TCP_STATE, pid, cgroup_id),
            sock_id: sock,
            sock_cgroup_id: sock_cg,
            tuple,
            old_state: old,
            new_state: new,
            ..Default::default()
        };
        if let Some((sent, received)) = stats {
            rec.stats_valid = tcp_stats::ALL;
            rec.bytes_acked = sent;
            rec.bytes_received = received;
            rec.segs_in = 3;
            rec.segs_out = 4;
            rec.srtt_us = 42;
        }
        self.batch.push(encode(&rec));
    }

    pub fn tuple(sport: u16, dport: u16) -> TcpTuple {
        let mut t = TcpTuple {
            family: AF_INET,
            sport,
            dport,
            ..Default::default()
        };
        t.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        t.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        t
    }

    /// A loopback connection, client side `client_sock` (owned by `client`) and server side
    /// `server_sock` (owned by `server`), with `sent` bytes client→server and `received` back.
    /// Softirq-side transitions carry pid 0 and cgroup 0, as the kernel would show them.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_connection(
        &mut self,
        client: u32,
        server: u32,
        cgroup_id: u64,
        client_sock: u64,
        server_sock: u64,
        port: u16,
        sent: u64,
        received: u64,
    ) {
        self.tcp_open(client, cgroup_id, client_sock, server_sock, port);
        self.tcp_close(
            client,
            server,
            cgroup_id,
            client_sock,
            server_sock,
            port,
            sent,
            received,
        );
    }

    /// The opening half of [`Self::tcp_connection`]: both ends ESTABLISHED.
    pub fn tcp_open(
        &mut self,
        client: u32,
        cgroup_id: u64,
        client_sock: u64,
        server_sock: u64,
        port: u16,
    ) {
        use tcp_state::*;
        let (c, s) = (Self::tuple(port, 8080), Self::tuple(8080, port));
        self.state(
            client,
            cgroup_id,
            client_sock,
            cgroup_id,
            c,
            CLOSE,
            SYN_SENT,
            None,
        );
        self.state(0, 0, server_sock, cgroup_id, s, LISTEN, SYN_RECV, None);
        self.state(0, 0, client_sock, cgroup_id, c, SYN_SENT, ESTABLISHED, None);
        self.state(0, 0, server_sock, cgroup_id, s, SYN_RECV, ESTABLISHED, None);
    }

    /// The closing half of [`Self::tcp_connection`]: the client closes first; the kernel's
    /// counters at close say `sent` bytes went client→server and `received` back.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_close(
        &mut self,
        client: u32,
        server: u32,
        cgroup_id: u64,
        client_sock: u64,
        server_sock: u64,
        port: u16,
        sent: u64,
        received: u64,
    ) {
        use tcp_state::*;
        let (c, s) = (Self::tuple(port, 8080), Self::tuple(8080, port));
        self.state(
            client,
            cgroup_id,
            client_sock,
            cgroup_id,
            c,
            ESTABLISHED,
            FIN_WAIT1,
            None,
        );
        self.state(
            0,
            0,
            server_sock,
            cgroup_id,
            s,
            ESTABLISHED,
            CLOSE_WAIT,
            None,
        );
        self.state(0, 0, client_sock, cgroup_id, c, FIN_WAIT1, FIN_WAIT2, None);
        self.state(
            server,
            cgroup_id,
            server_sock,
            cgroup_id,
            s,
            CLOSE_WAIT,
            LAST_ACK,
            None,
        );
        // The kernel counts the active opener's SYN and each acknowledged or received FIN.
        self.state(
            0,
            0,
            client_sock,
            cgroup_id,
            c,
            FIN_WAIT2,
            CLOSE,
            Some((sent + 2, received + 1)),
        );
        self.state(
            0,
            0,
            server_sock,
            cgroup_id,
            s,
            LAST_ACK,
            CLOSE,
            Some((received + 1, sent + 1)),
        );
    }

    /// A completed socket call: `ev`'s header is filled in (the caller's pid and cgroup),
    /// `payload` (at most [`MAX_SNAPLEN`]) follows it.
    pub fn sock_io(&mut self, pid: u32, cgroup_id: u64, mut ev: SockIoEvent, payload: &[u8]) {
        ev.header = self.header::<SockIoEvent>(kind::SOCK_IO, pid, cgroup_id);
        self.batch.push(&encode_sock_io(&ev, payload));
    }

    /// A call on a TCP socket moving `bytes`, of which the record carries the first
    /// `payload.len()`.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_call(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        sock: u64,
        tuple: TcpTuple,
        direction: u8,
        bytes: u64,
        payload: &[u8],
    ) {
        let ev = SockIoEvent {
            sock_id: sock,
            bytes,
            duration_ns: 2000,
            tuple,
            fd: 5,
            call: if direction == sock_dir::SEND {
                sock_call::WRITE
            } else {
                sock_call::READ
            },
            direction,
            protocol: 6,
            ..Default::default()
        };
        self.sock_io(pid, cgroup_id, ev, payload);
    }

    /// One UDP datagram of `payload` (carried whole), through `call`; `peer_from_call`
    /// for an unconnected socket's address argument.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_datagram(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        sock: u64,
        tuple: TcpTuple,
        direction: u8,
        call: u16,
        peer_from_call: bool,
        payload: &[u8],
    ) {
        let ev = SockIoEvent {
            sock_id: sock,
            bytes: payload.len() as u64,
            duration_ns: 1500,
            tuple,
            fd: 6,
            call,
            direction,
            protocol: 17,
            flags: if peer_from_call {
                sock_flags::PEER_FROM_CALL
            } else {
                0
            },
            ..Default::default()
        };
        self.sock_io(pid, cgroup_id, ev, payload);
    }

    /// A tuple from "a.b.c.d" or IPv6 text addresses.
    pub fn tuple_of(local: (&str, u16), peer: (&str, u16)) -> TcpTuple {
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let bytes = |a: IpAddr| match a {
            IpAddr::V4(v) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v.octets());
                b
            }
            IpAddr::V6(v) => v.octets(),
        };
        let (l, p) = (ip(local.0), ip(peer.0));
        TcpTuple {
            family: if l.is_ipv6() { AF_INET6 } else { AF_INET },
            sport: local.1,
            dport: peer.1,
            _pad: 0,
            saddr: bytes(l),
            daddr: bytes(p),
        }
    }

    pub fn tcp_event(&mut self, kind: u16, pid: u32, cgroup_id: u64, sock: u64, sock_cg: u64) {
        let rec = TcpEvent {
            header: self.header::<TcpEvent>(kind, pid, cgroup_id),
            sock_id: sock,
            sock_cgroup_id: sock_cg,
            tuple: Self::tuple(1, 2),
            ..Default::default()
        };
        self.batch.push(encode(&rec));
    }

    #[allow(clippy::too_many_arguments)]
    pub fn block_event(
        &mut self,
        kind: u16,
        pid: u32,
        cgroup_id: u64,
        dev: u32,
        sector: u64,
        bytes: u32,
        op: u32,
    ) {
        let rec = BlockEvent {
            header: self.header::<BlockEvent>(kind, pid, cgroup_id),
            sector,
            dev,
            bytes,
            op,
            error: 0,
        };
        self.batch.push(encode(&rec));
    }

    /// One request: queued by `pid`, issued and completed `latency_ns` later.
    #[allow(clippy::too_many_arguments)]
    pub fn block_io(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        dev: u32,
        sector: u64,
        bytes: u32,
        op: u32,
        latency_ns: u64,
    ) {
        self.block_event(kind::BLOCK_QUEUE, pid, cgroup_id, dev, sector, bytes, op);
        self.block_event(kind::BLOCK_ISSUE, 0, 0, dev, sector, bytes, op);
        self.ts += latency_ns;
        self.block_event(kind::BLOCK_COMPLETE, 0, 0, dev, sector, bytes, op);
    }

    /// A busy host's mix, `rounds` times: a process lifecycle, a TCP connection with a
    /// retransmit, and four block requests — 26 records a round.
    pub fn host_mix(rounds: u32) -> RawBatch {
        let mut s = Synth::new();
        for i in 0..rounds {
            let pid = 1000 + (i % 30_000);
            let cg = 10 + u64::from(i % 16);
            s.cpu = i % 2;
            s.fork(1, pid, cg, false);
            s.exec(pid, 1, cg, "/usr/bin/curl");
            let sock = 0xffff_0000_0000 + u64::from(i) * 2;
            s.tcp_connection(
                pid,
                1,
                cg,
                sock,
                sock + 1,
                40_000 + (i % 20_000) as u16,
                1000 + u64::from(i),
                500,
            );
            s.tcp_event(kind::TCP_RETRANSMIT, 0, 0, sock, cg);
            for k in 0..4u64 {
                s.block_io(
                    pid,
                    cg,
                    (7 << 20) | (i % 4),
                    u64::from(i) * 64 + k * 8,
                    4096,
                    if k % 2 == 0 {
                        block_op::READ
                    } else {
                        block_op::WRITE
                    },
                    50_000 + k * 1000,
                );
            }
            s.exit(pid, cg, "curl", 0);
        }
        s.batch
    }

    /// A busy host's mix with socket I/O, `rounds` times: a process lifecycle, a TCP
    /// connection carrying a request and its response (four calls with payload), and a
    /// DNS lookup over UDP seen at both ends (four datagrams) — 21 records a round, 8 of
    /// them with payload.
    pub fn socket_mix(rounds: u32) -> RawBatch {
        let mut s = Synth::new();
        let request = {
            let mut r = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n".to_vec();
            r.resize(200, b'x');
            r
        };
        let response = vec![b'y'; 512];
        let names = [
            "example.com",
            "api.internal",
            "db.internal",
            "cache.internal",
        ];
        for i in 0..rounds {
            let pid = 1000 + (i % 30_000);
            let cg = 10 + u64::from(i % 16);
            s.cpu = i % 2;
            s.fork(1, pid, cg, false);
            s.exec(pid, 1, cg, "/usr/bin/curl");
            let sock = 0xffff_0000_0000 + u64::from(i) * 4;
            let port = 40_000 + (i % 20_000) as u16;
            let (c, srv) = (Self::tuple(port, 8080), Self::tuple(8080, port));
            s.tcp_open(pid, cg, sock, sock + 1, port);
            s.tcp_call(pid, cg, sock, c, sock_dir::SEND, 200, &request);
            s.tcp_call(1, cg, sock + 1, srv, sock_dir::RECV, 200, &request);
            s.tcp_call(1, cg, sock + 1, srv, sock_dir::SEND, 1500, &response);
            s.tcp_call(pid, cg, sock, c, sock_dir::RECV, 1500, &response);
            s.tcp_close(pid, 1, cg, sock, sock + 1, port, 200, 1500);
            let id = i as u16;
            let name = names[i as usize % names.len()];
            let (q, a) = (
                crate::dns::build::query(id, name, 1),
                crate::dns::build::answer(id, name, 1, 0),
            );
            let client = Self::tuple_of(("127.0.0.1", port), ("127.0.0.53", 53));
            let server = Self::tuple_of(("127.0.0.53", 53), ("127.0.0.1", port));
            s.udp_datagram(
                pid,
                cg,
                sock + 2,
                client,
                sock_dir::SEND,
                sock_call::SENDMMSG,
                false,
                &q,
            );
            s.udp_datagram(
                2,
                3,
                sock + 3,
                server,
                sock_dir::RECV,
                sock_call::RECVFROM,
                true,
                &q,
            );
            s.udp_datagram(
                2,
                3,
                sock + 3,
                server,
                sock_dir::SEND,
                sock_call::SENDTO,
                true,
                &a,
            );
            s.udp_datagram(
                pid,
                cg,
                sock + 2,
                client,
                sock_dir::RECV,
                sock_call::RECVFROM,
                true,
                &a,
            );
            s.exit(pid, cg, "curl", 0);
        }
        s.batch
    }
}
