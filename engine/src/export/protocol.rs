//! The agent's unix-socket protocol: one request, one reply, then the connection closes.
//!
//! Every message is a frame: a 12-byte header — magic `KSGT`, protocol version (u16 LE),
//! message kind (u16 LE), payload length (u32 LE) — then the payload. A client sends a
//! [`kind::SNAPSHOT_REQUEST`] with an empty payload; the agent answers with a
//! [`kind::SNAPSHOT`] whose payload is an [`AgentSnapshot`] in bincode, or a
//! [`kind::ERROR`] whose payload is a UTF-8 message (e.g. an unsupported version).
//!
//! Versioning: [`VERSION`] changes whenever the payload's layout does (bincode is not
//! self-describing, so any field added to [`Snapshot`] is such a change). The agent
//! answers a request of another version with an error naming both versions.

use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const MAGIC: [u8; 4] = *b"KSGT";
/// Version of the frames and of the [`AgentSnapshot`] layout.
pub const VERSION: u16 = 2;
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

/// What the agent serves: its cumulative aggregates and how it captures them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    #[error("protocol version {got} is not supported (this ksight speaks version {VERSION})")]
    Version { got: u16 },
    #[error("unexpected message kind {got} (expected {expected})")]
    Kind { got: u16, expected: u16 },
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("undecodable snapshot")]
    Decode(#[from] bincode::Error),
    #[error("the agent answered: {0}")]
    Agent(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u16,
    pub kind: u16,
    pub len: u32,
}

pub fn write_frame(w: &mut impl Write, kind: u16, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload over 4 GiB"))?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_le_bytes());
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

/// Agent side: reads one request from `stream` and answers it with `snapshot`.
/// Garbage, another version or a client that goes away produce an error for the caller
/// to log; nothing else is affected.
pub fn serve(
    stream: &mut (impl Read + Write),
    snapshot: &AgentSnapshot,
) -> Result<(), ProtocolError> {
    let h = read_header(stream, MAX_REQUEST_BYTES)?;
    if h.version != VERSION {
        let message = format!(
            "protocol version {} is not supported (this agent speaks version {VERSION})",
            h.version
        );
        write_frame(stream, kind::ERROR, message.as_bytes())?;
        return Err(ProtocolError::Version { got: h.version });
    }
    read_payload(stream, h.len)?;
    if h.kind != kind::SNAPSHOT_REQUEST {
        let message = format!("unknown request kind {}", h.kind);
        write_frame(stream, kind::ERROR, message.as_bytes())?;
        return Err(ProtocolError::Kind {
            got: h.kind,
            expected: kind::SNAPSHOT_REQUEST,
        });
    }
    let payload = bincode::serialize(snapshot)?;
    write_frame(stream, kind::SNAPSHOT, &payload)?;
    Ok(())
}

/// Client side over any stream.
pub fn request(stream: &mut (impl Read + Write)) -> Result<AgentSnapshot, ProtocolError> {
    write_frame(stream, kind::SNAPSHOT_REQUEST, &[])?;
    let h = read_header(stream, MAX_REPLY_BYTES)?;
    let payload = read_payload(stream, h.len)?;
    if h.kind == kind::ERROR {
        return Err(ProtocolError::Agent(
            String::from_utf8_lossy(&payload).into_owned(),
        ));
    }
    if h.version != VERSION {
        return Err(ProtocolError::Version { got: h.version });
    }
    if h.kind != kind::SNAPSHOT {
        return Err(ProtocolError::Kind {
            got: h.kind,
            expected: kind::SNAPSHOT,
        });
    }
    use bincode::Options;
    Ok(bincode::options()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(u64::from(MAX_REPLY_BYTES))
        .deserialize(&payload)?)
}

/// Asks the agent listening on `path` for its snapshot, waiting at most `timeout` for
/// each read or write.
pub fn fetch(path: &Path, timeout: Duration) -> Result<AgentSnapshot, ProtocolError> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    request(&mut stream)
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

    fn request_bytes(version: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, kind, payload).unwrap();
        v[4..6].copy_from_slice(&version.to_le_bytes());
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
        write_frame(&mut reply, kind::SNAPSHOT, &[0xff; 5]).unwrap();
        assert!(matches!(
            request(&mut duplex(reply)),
            Err(ProtocolError::Decode(_))
        ));
    }
}

#[cfg(test)]
mod layout {
    use super::*;
    use crate::snapshot::{CgroupRow, ConnectionRow, DeviceRow, ProcessRow};

    /// Every field path of an `AgentSnapshot`, with one element in each list and map.
    fn field_paths() -> Vec<String> {
        let mut s = AgentSnapshot::default();
        s.snapshot.process.processes.push(ProcessRow::default());
        s.snapshot.process.exit_codes.insert("0".into(), 1);
        s.snapshot.tcp.connections.push(ConnectionRow::default());
        s.snapshot.block.devices.push(DeviceRow::default());
        let mut cg = CgroupRow::default();
        cg.exit_codes.insert("0".into(), 1);
        cg.attribution = Some(Default::default());
        s.snapshot.containers.push(cg.clone());
        s.snapshot.cgroups.push(cg);
        fn walk(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        walk(v, format!("{path}.{k}"), out);
                    }
                }
                serde_json::Value::Array(a) => {
                    for v in a {
                        walk(v, format!("{path}[]"), out);
                    }
                }
                _ => out.push(path),
            }
        }
        let mut out = Vec::new();
        walk(&serde_json::to_value(&s).unwrap(), String::new(), &mut out);
        // JSON maps may or may not keep field order (serde_json's `preserve_order`).
        out.sort();
        out
    }

    /// bincode is not self-describing: a field added to or removed from the snapshot
    /// changes what clients of this version read. When this fails, bump [`VERSION`] and
    /// pin the new fingerprint (moving a field changes the layout too, unnoticed here).
    #[test]
    fn the_snapshot_layout_is_pinned_to_the_protocol_version() {
        let paths = field_paths().join("\n");
        // FNV-1a.
        let fingerprint = paths.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!(
            (VERSION, fingerprint),
            (2, PINNED_V2),
            "the AgentSnapshot layout changed: bump protocol::VERSION and pin {fingerprint:#x}; fields:\n{paths}"
        );
    }

    const PINNED_V2: u64 = 0x5fb7_854c_cc78_1371;
}
