//! The agent's unix-socket protocol: one request, one reply, then the connection closes.
//!
//! Every message is a frame: a 12-byte header — magic `KSGT`, protocol version (u16 LE),
//! message kind (u16 LE), payload length (u32 LE) — then the payload. A client sends a
//! [`kind::SNAPSHOT_REQUEST`] with an empty payload; the agent answers with a
//! [`kind::SNAPSHOT`] whose payload is the snapshot in that version's wire type, in
//! bincode, or a [`kind::ERROR`] whose payload is a UTF-8 message (e.g. an unsupported
//! version).
//!
//! Versioning: what a reader of version N gets is said by N alone. The payload of a
//! version-N snapshot is exactly the bincode of `vN::AgentSnapshot` — a wire type of its
//! own, frozen with its version, with no trailing bytes and no optional tail. The
//! [`AgentSnapshot`] the agent and `top` work with holds the `--json` contract
//! ([`Snapshot`]) and converts to and from the wire at the edges ([`serve`], [`request`]),
//! so a field added to the JSON contract changes nothing on the socket until a new
//! version carries it. The agent answers a request of each version in [`SUPPORTED`] in
//! that version (so older clients keep working); any other version gets an error naming
//! the versions it speaks. A client asks in [`VERSION`] and reads only that; [`fetch`]
//! asks an agent that does not speak it again in the version its error came in, when this
//! build speaks that one too (so a newer `top` reads an older agent).
//!
//! Version 3 adds the socket I/O signal (live connection bytes, UDP flows, DNS rows, the
//! signal's counters) and `late_events`; version 2 clients get neither. Version 4 adds the
//! requests parsed from socket payload (HTTP/gRPC, Redis, MySQL, PostgreSQL rows,
//! connections per protocol and the parsers' health, the service map's edges); clients of
//! versions 2 and 3 get none of it.

pub mod v2;
pub mod v3;
pub mod v4;

use bincode::Options;
use ksight_engine::snapshot::Snapshot;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const MAGIC: [u8; 4] = *b"KSGT";
/// The version this build's clients ask for: the newest it speaks.
pub const VERSION: u16 = 4;
/// The versions this build's agent answers in.
pub const SUPPORTED: &[u16] = &[2, 3, 4];
pub const HEADER_LEN: usize = 12;
/// Requests are tiny; anything larger is garbage.
pub const MAX_REQUEST_BYTES: u32 = 4096;
/// A client refuses replies larger than this.
pub const MAX_REPLY_BYTES: u32 = 512 << 20;

pub mod kind {
    pub const SNAPSHOT_REQUEST: u16 = 1;
    pub const SNAPSHOT: u16 = 2;
    pub const ERROR: u16 = 3;
}

/// What the agent serves: its cumulative aggregates and how it captures them. Not itself
/// on the wire: [`serve`] and [`request`] convert it to and from the version spoken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentSnapshot {
    pub agent_version: String,
    pub backend: String,
    pub backend_reason: String,
    /// One line per signal that is not fully observed (as `ksight stat` prints them).
    pub fidelity_notes: Vec<String>,
    /// Cumulative since the agent started. Lists hold live processes and open connections
    /// plus those that finished during the agent's last tick.
    pub snapshot: Snapshot,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("socket I/O")]
    Io(#[from] io::Error),
    #[error("not a ksight agent frame (bad magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("protocol version {got} is not supported (this ksight speaks versions {SUPPORTED:?})")]
    Version { got: u16 },
    #[error("unexpected message kind {got} (expected {expected})")]
    Kind { got: u16, expected: u16 },
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("undecodable snapshot")]
    Decode(#[from] bincode::Error),
    #[error("the agent answered: {0}")]
    Agent(String),
    /// The agent refused the version asked for, answering in its own.
    #[error("the agent speaks protocol version {speaks}: {message}")]
    OtherVersion { speaks: u16, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u16,
    pub kind: u16,
    pub len: u32,
}

/// Writes one frame of `version`.
pub fn write_frame(w: &mut impl Write, version: u16, kind: u16, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload over 4 GiB"))?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&version.to_le_bytes());
    header[6..8].copy_from_slice(&kind.to_le_bytes());
    header[8..12].copy_from_slice(&len.to_le_bytes());
    w.write_all(&header)?;
    w.write_all(payload)?;
    w.flush()
}

/// Reads a frame header; checks the magic and the size limit, not the version (the
/// caller decides how to answer another version).
pub fn read_header(r: &mut impl Read, max_len: u32) -> Result<FrameHeader, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let magic: [u8; 4] = header[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(ProtocolError::BadMagic(magic));
    }
    let h = FrameHeader {
        version: u16::from_le_bytes([header[4], header[5]]),
        kind: u16::from_le_bytes([header[6], header[7]]),
        len: u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")),
    };
    if h.len > max_len {
        return Err(ProtocolError::TooLarge {
            len: h.len,
            max: max_len,
        });
    }
    Ok(h)
}

fn read_payload(r: &mut impl Read, len: u32) -> Result<Vec<u8>, ProtocolError> {
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

/// The one bincode configuration of every version: fixed-width little-endian integers,
/// the whole payload and nothing after it, bounded.
fn codec() -> impl Options {
    bincode::options()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(u64::from(MAX_REPLY_BYTES))
}

/// The payload of a snapshot in `version` (one of [`SUPPORTED`]).
pub fn encode_snapshot(version: u16, snapshot: &AgentSnapshot) -> Result<Vec<u8>, ProtocolError> {
    match version {
        2 => Ok(codec().serialize(&v2::AgentSnapshot::from(snapshot))?),
        3 => Ok(codec().serialize(&v3::AgentSnapshot::from(snapshot))?),
        4 => Ok(codec().serialize(&v4::AgentSnapshot::from(snapshot))?),
        got => Err(ProtocolError::Version { got }),
    }
}

/// A snapshot from its payload in `version`.
pub fn decode_snapshot(version: u16, payload: &[u8]) -> Result<AgentSnapshot, ProtocolError> {
    match version {
        2 => Ok(codec().deserialize::<v2::AgentSnapshot>(payload)?.into()),
        3 => Ok(codec().deserialize::<v3::AgentSnapshot>(payload)?.into()),
        4 => Ok(codec().deserialize::<v4::AgentSnapshot>(payload)?.into()),
        got => Err(ProtocolError::Version { got }),
    }
}

/// Agent side: reads one request from `stream` and answers it with `snapshot`, in the
/// version the client asked for. Garbage, an unsupported version or a client that goes
/// away produce an error for the caller to log; nothing else is affected.
pub fn serve(
    stream: &mut (impl Read + Write),
    snapshot: &AgentSnapshot,
) -> Result<(), ProtocolError> {
    let h = read_header(stream, MAX_REQUEST_BYTES)?;
    if !SUPPORTED.contains(&h.version) {
        let message = refusal(h.version);
        write_frame(stream, VERSION, kind::ERROR, message.as_bytes())?;
        return Err(ProtocolError::Version { got: h.version });
    }
    read_payload(stream, h.len)?;
    if h.kind != kind::SNAPSHOT_REQUEST {
        let message = format!("unknown request kind {}", h.kind);
        write_frame(stream, h.version, kind::ERROR, message.as_bytes())?;
        return Err(ProtocolError::Kind {
            got: h.kind,
            expected: kind::SNAPSHOT_REQUEST,
        });
    }
    let payload = encode_snapshot(h.version, snapshot)?;
    write_frame(stream, h.version, kind::SNAPSHOT, &payload)?;
    Ok(())
}

/// The agent's answer to a request in a version it does not speak, naming those it does
/// (the frame carries the newest, which a client that speaks it asks again in).
fn refusal(version: u16) -> String {
    let (last, earlier) = SUPPORTED.split_last().expect("at least one version");
    let earlier: Vec<String> = earlier.iter().map(u16::to_string).collect();
    let speaks = if earlier.is_empty() {
        format!("version {last}")
    } else {
        format!("versions {} and {last}", earlier.join(", "))
    };
    format!("protocol version {version} is not supported (this agent speaks {speaks})")
}

/// Client side over any stream: asks in [`VERSION`], accepts a snapshot of that version
/// only.
pub fn request(stream: &mut (impl Read + Write)) -> Result<AgentSnapshot, ProtocolError> {
    request_in(stream, VERSION)
}

/// Client side: asks in `version` (one of [`SUPPORTED`]), accepts a snapshot of that
/// version only.
pub fn request_in(
    stream: &mut (impl Read + Write),
    version: u16,
) -> Result<AgentSnapshot, ProtocolError> {
    write_frame(stream, version, kind::SNAPSHOT_REQUEST, &[])?;
    let h = read_header(stream, MAX_REPLY_BYTES)?;
    let payload = read_payload(stream, h.len)?;
    if h.kind == kind::ERROR {
        let message = String::from_utf8_lossy(&payload).into_owned();
        return Err(if h.version != version {
            ProtocolError::OtherVersion {
                speaks: h.version,
                message,
            }
        } else {
            ProtocolError::Agent(message)
        });
    }
    if h.version != version {
        return Err(ProtocolError::Version { got: h.version });
    }
    if h.kind != kind::SNAPSHOT {
        return Err(ProtocolError::Kind {
            got: h.kind,
            expected: kind::SNAPSHOT,
        });
    }
    decode_snapshot(h.version, &payload)
}

/// Asks the agent listening on `path` for its snapshot, waiting at most `timeout` for
/// each read or write. An agent that answers in an older version this build speaks is
/// asked again in that version (one request per connection: a second connection).
pub fn fetch(path: &Path, timeout: Duration) -> Result<AgentSnapshot, ProtocolError> {
    let connect = || -> Result<UnixStream, ProtocolError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    };
    match request(&mut connect()?) {
        Err(ProtocolError::OtherVersion { speaks, .. })
            if speaks != VERSION && SUPPORTED.contains(&speaks) =>
        {
            request_in(&mut connect()?, speaks)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream whose reads come from one buffer and writes go to another.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn duplex(input: Vec<u8>) -> Duplex {
        Duplex {
            input: Cursor::new(input),
            output: Vec::new(),
        }
    }

    fn sample() -> AgentSnapshot {
        let mut snapshot = Snapshot {
            backend: "ebpf".into(),
            lost_events: 3,
            ..Default::default()
        };
        snapshot.process.exit_codes.insert("0".into(), 4);
        AgentSnapshot {
            agent_version: "0.1.0".into(),
            backend: "ebpf".into(),
            backend_reason: "eBPF programs load and attach".into(),
            fidelity_notes: vec!["tcp_close_stats degraded".into()],
            snapshot,
        }
    }

    /// An `AgentSnapshot` with every field of the v2 layout set (lists and maps of one).
    pub(super) fn full_sample() -> AgentSnapshot {
        use ksight_engine::snapshot::*;
        let labels = CgroupLabels {
            path: "/kubepods/pod1/c".into(),
            runtime: "containerd".into(),
            container_id: "ab12".into(),
            unit: "cri-containerd-ab12.scope".into(),
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "0f1c".into(),
            container: "web".into(),
            workload_kind: "Deployment".into(),
            workload: "web".into(),
            ignored: true,
            pending: true,
        };
        let cgroup = CgroupRow {
            cgroup_id: 77,
            execs: 1,
            forks: 2,
            exits: 3,
            tcp_connections: 4,
            tcp_bytes_sent: 5,
            tcp_bytes_received: 6,
            block_read_bytes: 7,
            block_write_bytes: 8,
            exit_codes: [("137".to_string(), 9)].into(),
            tcp_connects: 10,
            tcp_connect_failures: 11,
            tcp_accepts: 12,
            tcp_retransmits: 13,
            tcp_resets_sent: 14,
            tcp_resets_received: 15,
            block_reads: 16,
            block_writes: 17,
            attribution: Some(labels),
            ..Default::default()
        };
        let snapshot = Snapshot {
            backend: "kmod".into(),
            duration_s: 1.5,
            events: 100,
            lost_events: 3,
            lost_events_per_cpu: vec![1, 2],
            malformed_records: 4,
            // Not carried by protocol version 2: the round trip gives it back as 0.
            late_events: 0,
            process: ProcessSummary {
                execs: 5,
                forks: 6,
                threads: 7,
                exits: 8,
                exit_codes: [("0".to_string(), 4)].into(),
                processes: vec![ProcessRow {
                    pid: 42,
                    ppid: Some(1),
                    comm: "sh".into(),
                    filename: Some("/bin/sh".into()),
                    cgroup_id: 77,
                    execs: 1,
                    forks: 2,
                    exit_code: Some(-1),
                    tcp_bytes_sent: 3,
                    tcp_bytes_received: 4,
                    block_read_bytes: 5,
                    block_write_bytes: 6,
                }],
            },
            tcp: TcpSummary {
                connects: 1,
                connect_failures: 2,
                accepts: 3,
                closes: 4,
                retransmits: 5,
                resets_sent: 6,
                resets_received: 7,
                bytes_sent: 8,
                bytes_received: 9,
                connections: vec![ConnectionRow {
                    saddr: "127.0.0.1".into(),
                    sport: 40000,
                    daddr: "::1".into(),
                    dport: 80,
                    role: "active".into(),
                    pid: 42,
                    comm: "curl".into(),
                    cgroup_id: 77,
                    state: "CLOSE".into(),
                    bytes_sent: Some(10),
                    bytes_received: Some(11),
                    segs_in: Some(12),
                    segs_out: Some(13),
                    duration_us: 14,
                    retransmits: 15,
                    resets_sent: 16,
                    resets_received: 17,
                    srtt_us: Some(18),
                    ..Default::default()
                }],
                ..Default::default()
            },
            block: BlockSummary {
                devices: vec![DeviceRow {
                    dev: "7:0".into(),
                    name: "loop0".into(),
                    reads: 1,
                    writes: 2,
                    other: 3,
                    read_bytes: 4,
                    write_bytes: 5,
                    errors: 6,
                    latency_us: Latency {
                        count: 7,
                        p50: 8.5,
                        p99: 9.5,
                        max: 10.5,
                    },
                    latency_sum_ns: 11,
                    latency_buckets: vec![12, 13],
                }],
            },
            cgroups: vec![cgroup.clone()],
            containers: vec![CgroupRow {
                attribution: None,
                ..cgroup
            }],
            ..Default::default()
        };
        AgentSnapshot {
            agent_version: "0.1.0".into(),
            backend: "kmod".into(),
            backend_reason: "configured".into(),
            fidelity_notes: vec!["tcp_close_stats degraded".into()],
            snapshot,
        }
    }

    /// `full_sample` with every field version 3 adds set too.
    pub(super) fn full_sample_v3() -> AgentSnapshot {
        use ksight_engine::snapshot::*;
        let mut a = full_sample();
        let s = &mut a.snapshot;
        s.late_events = 19;
        s.tcp.byte_mismatches = 20;
        let c = &mut s.tcp.connections[0];
        (c.call_bytes_sent, c.call_bytes_received, c.since_start) = (Some(21), None, true);
        s.udp = UdpSummary {
            bytes_sent: 22,
            bytes_received: 23,
            datagrams_sent: 24,
            datagrams_received: 25,
            flows: vec![UdpFlowRow {
                saddr: "10.0.0.1".into(),
                sport: 5353,
                daddr: "10.0.0.2".into(),
                dport: 53,
                pid: 26,
                comm: "dig".into(),
                cgroup_id: 77,
                bytes_sent: 27,
                bytes_received: 28,
                datagrams_sent: 29,
                datagrams_received: 30,
            }],
            unlisted_datagrams: 31,
        };
        s.dns = DnsSummary {
            queries: vec![DnsRow {
                role: "client".into(),
                server: "10.0.0.2:53".into(),
                qname: "example.test".into(),
                qtype: "AAAA".into(),
                rcode: "NXDOMAIN".into(),
                count: 32,
                latency_us: Latency {
                    count: 33,
                    p50: 34.5,
                    p99: 35.5,
                    max: 36.5,
                },
                timeouts: 37,
                cgroup_id: 77,
                latency_sum_ns: 38,
                latency_buckets: vec![39, 40],
            }],
            malformed: 41,
            other_qnames: 42,
        };
        s.socket_io = SocketIoSummary {
            calls: 43,
            payload_bytes: 44,
            unreported_msgs: 45,
            payload_faults: 46,
        };
        for (i, row) in s.cgroups.iter_mut().chain(&mut s.containers).enumerate() {
            let n = 47 + 4 * i as u64;
            row.udp_bytes_sent = n;
            row.udp_bytes_received = n + 1;
            row.udp_datagrams_sent = n + 2;
            row.udp_datagrams_received = n + 3;
        }
        a
    }

    /// `full_sample_v3` with every field version 4 adds set too.
    pub(super) fn full_sample_v4() -> AgentSnapshot {
        use ksight_engine::snapshot::*;
        let mut a = full_sample_v3();
        let s = &mut a.snapshot;
        let latency = |n: f64| Latency {
            count: n as u64,
            p50: n + 0.5,
            p99: n + 1.5,
            max: n + 2.5,
        };
        s.http.requests = vec![HttpRow {
            protocol: "grpc".into(),
            role: "client".into(),
            method: "POST".into(),
            route: "/shop.Cart/Add".into(),
            status: 200,
            grpc_status: Some("14".into()),
            count: 60,
            errors: 61,
            latency_us: latency(62.0),
            peer: Some("10.0.0.3:50051".into()),
            host: Some("cart:50051".into()),
            cgroup_id: 77,
            latency_sum_ns: 63,
            latency_buckets: vec![64, 65],
        }];
        let command = |command: &str, n: u64| CommandRow {
            role: "server".into(),
            command: command.into(),
            count: n,
            errors: n + 1,
            error_codes: [(format!("E{n}"), n + 2)].into(),
            latency_us: latency((n + 3) as f64),
            peer: None,
            cgroup_id: 77,
            latency_sum_ns: n + 4,
            latency_buckets: vec![n + 5],
        };
        s.redis.commands = vec![command("GET", 70)];
        s.mysql.queries = vec![command("SELECT", 80)];
        s.postgres.queries = vec![command("INSERT", 90)];
        s.protocols = ProtocolsSummary {
            connections: vec![ProtocolConnectionRow {
                protocol: "tls".into(),
                role: "client".into(),
                cgroup_id: 77,
                connections: 100,
                bytes_sent: 101,
                bytes_received: 102,
            }],
            malformed: 103,
            framing_gaps: 120,
            mid_stream: 104,
            unmatched_responses: 105,
            unanswered: 106,
            other_routes: 107,
            unlisted_requests: 108,
            untracked_connections: 109,
        };
        s.edges = vec![EdgeRow {
            client_cgroup_id: 77,
            server: "[::1]:6379".into(),
            server_cgroup_id: Some(110),
            protocol: Some("redis".into()),
            connections: 111,
            requests: 112,
            errors: 113,
            bytes_sent: 114,
            bytes_received: 115,
            latency_us: latency(116.0),
            latency_sum_ns: 117,
            latency_buckets: vec![118, 119],
        }];
        a
    }

    fn request_bytes(version: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, version, kind, payload).unwrap();
        v
    }

    #[test]
    fn a_request_gets_the_snapshot_back() {
        let mut server = duplex(request_bytes(VERSION, kind::SNAPSHOT_REQUEST, &[]));
        serve(&mut server, &sample()).unwrap();
        // What the server wrote is what a client reads.
        let mut client = duplex(server.output);
        assert_eq!(request(&mut client).unwrap(), sample());
        assert_eq!(
            client.output,
            request_bytes(VERSION, kind::SNAPSHOT_REQUEST, &[])
        );
    }

    #[test]
    fn garbage_and_truncated_requests_are_refused_without_an_answer() {
        let mut s = duplex(b"GET / HTTP/1.1\r\n\r\n".to_vec());
        assert!(matches!(
            serve(&mut s, &sample()),
            Err(ProtocolError::BadMagic(_))
        ));
        assert!(s.output.is_empty());
        let whole = request_bytes(VERSION, kind::SNAPSHOT_REQUEST, &[]);
        let mut s = duplex(whole[..7].to_vec());
        assert!(matches!(
            serve(&mut s, &sample()),
            Err(ProtocolError::Io(_))
        ));
        assert!(s.output.is_empty());
        let mut huge = request_bytes(VERSION, kind::SNAPSHOT_REQUEST, &[]);
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut s = duplex(huge);
        assert!(matches!(
            serve(&mut s, &sample()),
            Err(ProtocolError::TooLarge { .. })
        ));
        // A payload shorter than announced.
        let mut short = request_bytes(VERSION, kind::SNAPSHOT_REQUEST, &[]);
        short[8..12].copy_from_slice(&100u32.to_le_bytes());
        short.extend_from_slice(&[0; 10]);
        let mut s = duplex(short);
        assert!(matches!(
            serve(&mut s, &sample()),
            Err(ProtocolError::Io(_))
        ));
        assert!(s.output.is_empty());
    }

    #[test]
    fn another_version_or_kind_gets_an_error_message() {
        let mut s = duplex(request_bytes(VERSION + 1, kind::SNAPSHOT_REQUEST, &[]));
        assert!(matches!(
            serve(&mut s, &sample()),
            Err(ProtocolError::Version { got }) if got == VERSION + 1
        ));
        let mut client = duplex(s.output);
        let err = request(&mut client).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("version {}", VERSION + 1)),
            "{err}"
        );
        let mut s = duplex(request_bytes(VERSION, 77, &[]));
        assert!(matches!(
            serve(&mut s, &sample()),
            Err(ProtocolError::Kind { got: 77, .. })
        ));
        let err = request(&mut duplex(s.output)).unwrap_err();
        assert!(err.to_string().contains("unknown request kind 77"), "{err}");
    }

    #[test]
    fn a_client_refuses_an_undecodable_reply() {
        let mut reply = Vec::new();
        write_frame(&mut reply, VERSION, kind::SNAPSHOT, &[0xff; 5]).unwrap();
        assert!(matches!(
            request(&mut duplex(reply)),
            Err(ProtocolError::Decode(_))
        ));
    }

    const V2_FIXTURE: &[u8] = include_bytes!("testdata/agent-snapshot-v2.bin");

    /// The bytes a version-2 agent sent before the wire type had its own types (written
    /// then from `full_sample`): the v2 layout may never change.
    #[test]
    fn version_2_is_pinned_byte_for_byte() {
        assert_eq!(encode_snapshot(2, &full_sample()).unwrap(), V2_FIXTURE);
        assert_eq!(decode_snapshot(2, V2_FIXTURE).unwrap(), full_sample());
    }

    const V3_FIXTURE: &[u8] = include_bytes!("testdata/agent-snapshot-v3.bin");

    /// Version 3's bytes, written once from `full_sample_v3`: its layout may never change.
    /// Version 2 leaves out everything version 3 added.
    #[test]
    fn version_3_is_pinned_and_carries_the_socket_signal() {
        let pinned = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/testdata/agent-snapshot-v3.bin"
        );
        if std::env::var_os("KSIGHT_PIN_PROTOCOL_V3").is_some() {
            std::fs::write(pinned, encode_snapshot(3, &full_sample_v3()).unwrap()).unwrap();
        }
        assert_eq!(encode_snapshot(3, &full_sample_v3()).unwrap(), V3_FIXTURE);
        assert_eq!(decode_snapshot(3, V3_FIXTURE).unwrap(), full_sample_v3());
        let v2 = encode_snapshot(2, &full_sample_v3()).unwrap();
        assert_eq!(v2, V2_FIXTURE);
        assert_eq!(decode_snapshot(2, &v2).unwrap(), full_sample());
    }

    const V4_FIXTURE: &[u8] = include_bytes!("testdata/agent-snapshot-v4.bin");

    /// Version 4's bytes, written once from `full_sample_v4`: its layout may never change.
    /// Versions 3 and 2 leave out everything version 4 added, byte for byte as before.
    #[test]
    fn version_4_is_pinned_and_carries_the_requests() {
        let pinned = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/testdata/agent-snapshot-v4.bin"
        );
        if std::env::var_os("KSIGHT_PIN_PROTOCOL_V4").is_some() {
            std::fs::write(pinned, encode_snapshot(4, &full_sample_v4()).unwrap()).unwrap();
        }
        assert_eq!(encode_snapshot(4, &full_sample_v4()).unwrap(), V4_FIXTURE);
        assert_eq!(decode_snapshot(4, V4_FIXTURE).unwrap(), full_sample_v4());
        let v3 = encode_snapshot(3, &full_sample_v4()).unwrap();
        assert_eq!(v3, V3_FIXTURE);
        assert_eq!(decode_snapshot(3, &v3).unwrap(), full_sample_v3());
        assert_eq!(encode_snapshot(2, &full_sample_v4()).unwrap(), V2_FIXTURE);
        // A version-3 client of this agent gets version 3.
        let mut server = duplex(request_bytes(3, kind::SNAPSHOT_REQUEST, &[]));
        serve(&mut server, &full_sample_v4()).unwrap();
        assert_eq!(
            request_in(&mut duplex(server.output), 3).unwrap(),
            full_sample_v3()
        );
    }

    /// A version-3 agent refuses this build's version-4 request in version 3: `fetch`
    /// asks again in 3. Versions nobody speaks get a message naming those the agent does.
    #[test]
    fn an_agent_of_version_3_is_asked_again_and_old_versions_are_told_why() {
        let mut reply = Vec::new();
        write_frame(
            &mut reply,
            3,
            kind::ERROR,
            b"protocol version 4 is not supported (this agent speaks version 2, 3)",
        )
        .unwrap();
        assert!(matches!(
            request(&mut duplex(reply)).unwrap_err(),
            ProtocolError::OtherVersion { speaks: 3, .. }
        ));
        let mut s = duplex(request_bytes(1, kind::SNAPSHOT_REQUEST, &[]));
        assert!(serve(&mut s, &sample()).is_err());
        let err = request_in(&mut duplex(s.output), 1).unwrap_err();
        assert!(
            matches!(&err, ProtocolError::OtherVersion { speaks: VERSION, message }
                if message == "protocol version 1 is not supported (this agent speaks versions 2, 3 and 4)"),
            "{err}"
        );
    }

    /// An agent that speaks only version 2 answers a version-3 request with an error in
    /// version 2: the client learns which version to ask in.
    #[test]
    fn an_older_agent_is_recognised_by_its_error() {
        let mut reply = Vec::new();
        write_frame(
            &mut reply,
            2,
            kind::ERROR,
            b"protocol version 3 is not supported (this agent speaks version 2)",
        )
        .unwrap();
        let err = request(&mut duplex(reply)).unwrap_err();
        assert!(
            matches!(&err, ProtocolError::OtherVersion { speaks: 2, message } if message.contains("speaks version 2")),
            "{err}"
        );
        let mut server = duplex(request_bytes(2, kind::SNAPSHOT_REQUEST, &[]));
        serve(&mut server, &full_sample_v3()).unwrap();
        assert_eq!(
            request_in(&mut duplex(server.output), 2).unwrap(),
            full_sample()
        );
    }

    #[test]
    fn trailing_or_missing_bytes_are_refused() {
        let mut longer = V2_FIXTURE.to_vec();
        longer.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode_snapshot(2, &longer),
            Err(ProtocolError::Decode(_))
        ));
        assert!(matches!(
            decode_snapshot(2, &V2_FIXTURE[..V2_FIXTURE.len() - 1]),
            Err(ProtocolError::Decode(_))
        ));
        // Through a whole frame, too.
        let mut reply = Vec::new();
        write_frame(&mut reply, 2, kind::SNAPSHOT, &longer).unwrap();
        assert!(matches!(
            request_in(&mut duplex(reply), 2),
            Err(ProtocolError::Decode(_))
        ));
    }

    #[test]
    fn the_agent_answers_in_each_supported_version_and_no_other() {
        assert!(SUPPORTED.contains(&VERSION));
        for &version in SUPPORTED {
            let mut server = duplex(request_bytes(version, kind::SNAPSHOT_REQUEST, &[]));
            serve(&mut server, &full_sample()).unwrap();
            let mut reply = Cursor::new(server.output);
            let h = read_header(&mut reply, MAX_REPLY_BYTES).unwrap();
            assert_eq!((h.version, h.kind), (version, kind::SNAPSHOT));
            let payload = read_payload(&mut reply, h.len).unwrap();
            assert_eq!(decode_snapshot(version, &payload).unwrap(), full_sample());
        }
        for version in [0, 1, VERSION + 1, u16::MAX] {
            if SUPPORTED.contains(&version) {
                continue;
            }
            assert!(matches!(
                encode_snapshot(version, &full_sample()),
                Err(ProtocolError::Version { got }) if got == version
            ));
            assert!(matches!(
                decode_snapshot(version, V2_FIXTURE),
                Err(ProtocolError::Version { got }) if got == version
            ));
        }
    }

    #[test]
    fn a_client_refuses_a_snapshot_of_another_version() {
        // A newer agent that answered in its own version instead of ours.
        let mut reply = Vec::new();
        write_frame(&mut reply, VERSION + 1, kind::SNAPSHOT, V2_FIXTURE).unwrap();
        assert!(matches!(
            request(&mut duplex(reply)),
            Err(ProtocolError::Version { got }) if got == VERSION + 1
        ));
        // And a reply of an unexpected kind.
        let mut reply = Vec::new();
        write_frame(&mut reply, VERSION, kind::SNAPSHOT_REQUEST, &[]).unwrap();
        assert!(matches!(
            request(&mut duplex(reply)),
            Err(ProtocolError::Kind {
                got: kind::SNAPSHOT_REQUEST,
                ..
            })
        ));
    }
}
