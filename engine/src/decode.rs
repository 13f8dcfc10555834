//! Raw event-abi bytes → typed events. Every record is validated (known kind, header size
//! equal to the frame length and allowed for the kind by `event_abi::size_ok`; for socket
//! I/O, a payload length that fits the record) before it is trusted.

use core::mem::size_of;
use event_abi::zerocopy::{FromBytes, Immutable, IntoBytes};
use event_abi::{
    BlockEvent, EventHeader, ExecEvent, ExitEvent, ForkEvent, SockIoEvent, TcpEvent, TcpStateEvent,
    kind, record_size, size_ok, sock_io_size,
};

/// A socket I/O record: its fixed part and the payload bytes it carried (one allocation,
/// none without payload; the variant is no larger than a TCP state record).
#[derive(Clone, Debug, Default)]
pub struct SockIo {
    pub event: SockIoEvent,
    /// `event.payload_len` bytes (the padding is not kept).
    pub payload: Box<[u8]>,
}

/// A decoded record. Exec records are large and rare, so they live on the heap to keep the
/// enum (and the reorder buffer) small.
#[derive(Clone, Debug)]
pub enum Event {
    Exec(Box<ExecEvent>),
    Fork(ForkEvent),
    Exit(ExitEvent),
    TcpState(TcpStateEvent),
    /// Retransmit or reset; `header.kind` says which.
    Tcp(TcpEvent),
    /// Queue, issue or complete; `header.kind` says which.
    Block(BlockEvent),
    /// A completed send or receive call on a socket; its payload is on the heap.
    SockIo(SockIo),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec(e) => &e.header,
            Event::Fork(e) => &e.header,
            Event::Exit(e) => &e.header,
            Event::TcpState(e) => &e.header,
            Event::Tcp(e) => &e.header,
            Event::Block(e) => &e.header,
            Event::SockIo(e) => &e.event.header,
        }
    }

    pub fn ts_ns(&self) -> u64 {
        self.header().ts_ns
    }

    /// The cgroup an event is attributed to, and filtered by: the task's for process
    /// events and queued block requests, the socket's for TCP (which may run in softirq,
    /// where the current task is unrelated). None for block issue/complete, which run in
    /// whatever context completes the request and are matched to their queue record.
    /// The kernel-side filter of both backends uses the same rule.
    pub fn owner_cgroup(&self) -> Option<u64> {
        match self {
            Event::Exec(e) => Some(e.header.cgroup_id),
            Event::Fork(e) => Some(e.header.cgroup_id),
            Event::Exit(e) => Some(e.header.cgroup_id),
            Event::TcpState(e) => Some(e.sock_cgroup_id),
            Event::Tcp(e) => Some(e.sock_cgroup_id),
            Event::Block(e) => (e.header.kind == kind::BLOCK_QUEUE).then_some(e.header.cgroup_id),
            // The calling task's, as the kernel-side filter checks it before copying.
            Event::SockIo(e) => Some(e.event.header.cgroup_id),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {} byte header", size_of::<EventHeader>())]
    TooShort { len: usize },
    #[error(
        "record kind {kind} is unknown to ABI {}.{}",
        event_abi::ABI_VERSION_MAJOR,
        event_abi::ABI_VERSION_MINOR
    )]
    UnknownKind { kind: u16 },
    #[error(
        "record kind {kind}: header says {header_size} bytes, frame has {frame_len}, kind needs {expected}"
    )]
    BadSize {
        kind: u16,
        header_size: u16,
        frame_len: usize,
        expected: usize,
    },
    #[error("socket I/O record of {size} bytes cannot carry {payload_len} payload bytes")]
    BadPayload { size: usize, payload_len: u16 },
}

/// Reads a whole record from `bytes` (a copy: batch buffers carry no alignment promise).
/// `decode` has checked the length against the kind, so this cannot fail.
fn read<T: FromBytes>(bytes: &[u8], header: &EventHeader) -> Result<T, DecodeError> {
    T::read_from_bytes(bytes).map_err(|_| DecodeError::BadSize {
        kind: header.kind,
        header_size: header.size,
        frame_len: bytes.len(),
        expected: size_of::<T>(),
    })
}

/// The kind field of a raw record's header, without validating anything else; `None` for
/// a record too short to have one.
pub fn record_kind(bytes: &[u8]) -> Option<u16> {
    const AT: usize = core::mem::offset_of!(EventHeader, kind);
    bytes
        .get(AT..AT + 2)
        .map(|k| u16::from_ne_bytes([k[0], k[1]]))
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let Ok((header, _)) = EventHeader::read_from_prefix(bytes) else {
        return Err(DecodeError::TooShort { len: bytes.len() });
    };
    let expected =
        record_size(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    if !size_ok(header.kind, header.size.into()) || bytes.len() != usize::from(header.size) {
        return Err(DecodeError::BadSize {
            kind: header.kind,
            header_size: header.size,
            frame_len: bytes.len(),
            expected,
        });
    }
    let h = &header;
    Ok(match header.kind {
        kind::EXEC => Event::Exec(Box::new(read(bytes, h)?)),
        kind::FORK => Event::Fork(read(bytes, h)?),
        kind::EXIT => Event::Exit(read(bytes, h)?),
        kind::TCP_STATE => Event::TcpState(read(bytes, h)?),
        kind::TCP_RETRANSMIT | kind::TCP_RESET_SENT | kind::TCP_RESET_RECEIVED => {
            Event::Tcp(read(bytes, h)?)
        }
        kind::BLOCK_QUEUE | kind::BLOCK_ISSUE | kind::BLOCK_COMPLETE => {
            Event::Block(read(bytes, h)?)
        }
        kind::SOCK_IO => {
            let fixed = size_of::<SockIoEvent>();
            let event: SockIoEvent = read(&bytes[..fixed], h)?;
            let len = usize::from(event.payload_len);
            if len > bytes.len() - fixed {
                return Err(DecodeError::BadPayload {
                    size: bytes.len(),
                    payload_len: event.payload_len,
                });
            }
            let payload = bytes[fixed..fixed + len].into();
            Event::SockIo(SockIo { event, payload })
        }
        // record_size() accepted the kind, so it is one of the above.
        other => return Err(DecodeError::UnknownKind { kind: other }),
    })
}

/// The bytes of a record as a backend would emit them (tests, benchmarks, synthetic sources).
/// Only for types whose every byte is initialised: `IntoBytes` is derived only where there
/// is no padding.
pub fn encode<T: IntoBytes + Immutable>(record: &T) -> &[u8] {
    record.as_bytes()
}

/// The bytes of a socket I/O record with `payload` after its fixed part, zero-padded to
/// 8, as a backend emits it: sets `payload_len` and `header.size` to match.
pub fn encode_sock_io(event: &SockIoEvent, payload: &[u8]) -> Vec<u8> {
    let mut event = *event;
    let len = payload.len().min(event_abi::MAX_SNAPLEN);
    event.payload_len = len as u16;
    event.header.size = sock_io_size(len) as u16;
    let mut out = Vec::with_capacity(sock_io_size(len));
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(&payload[..len]);
    out.resize(sock_io_size(len), 0);
    out
}

/// A NUL-terminated kernel string field as text (lossy).
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u16, size: usize) -> EventHeader {
        EventHeader {
            ts_ns: 5,
            cgroup_id: 1,
            pid: 2,
            tid: 3,
            cpu: 0,
            kind,
            size: size as u16,
        }
    }

    #[test]
    fn decodes_a_fork() {
        let rec = ForkEvent {
            header: header(kind::FORK, size_of::<ForkEvent>()),
            parent_pid: 10,
            parent_tgid: 10,
            child_pid: 11,
            child_tgid: 11,
        };
        match decode(encode(&rec)).unwrap() {
            Event::Fork(f) => assert_eq!((f.child_pid, f.child_tgid, f.header.ts_ns), (11, 11, 5)),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(
            decode(&[0u8; 8]).unwrap_err(),
            DecodeError::TooShort { len: 8 }
        );
        let mut rec = ForkEvent {
            header: header(99, 48),
            ..Default::default()
        };
        assert_eq!(
            decode(encode(&rec)).unwrap_err(),
            DecodeError::UnknownKind { kind: 99 }
        );
        rec.header = header(kind::FORK, 40);
        assert!(matches!(
            decode(encode(&rec)),
            Err(DecodeError::BadSize {
                header_size: 40,
                ..
            })
        ));
        rec.header = header(kind::FORK, 48);
        assert!(matches!(
            decode(&encode(&rec)[..47]),
            Err(DecodeError::BadSize { frame_len: 47, .. })
        ));
    }

    fn sock_io(payload: &[u8]) -> Vec<u8> {
        let ev = SockIoEvent {
            header: header(kind::SOCK_IO, 0),
            sock_id: 0xabc,
            bytes: 100,
            direction: event_abi::sock_dir::SEND,
            protocol: 17,
            ..Default::default()
        };
        encode_sock_io(&ev, payload)
    }

    #[test]
    fn decodes_socket_io_with_its_payload() {
        for len in [0usize, 1, 7, 8, 9, 512, event_abi::MAX_SNAPLEN] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8 | 1).collect();
            let bytes = sock_io(&payload);
            assert_eq!(bytes.len(), 120 + len.next_multiple_of(8));
            let Event::SockIo(s) = decode(&bytes).unwrap() else {
                panic!("not socket I/O");
            };
            assert_eq!(
                (s.event.sock_id, s.event.bytes, &s.payload[..]),
                (0xabc, 100, payload.as_slice())
            );
            assert_eq!(Event::SockIo(s).owner_cgroup(), Some(1));
        }
        // The enum stays small: no larger than for a TCP state record.
        assert_eq!(size_of::<Event>(), size_of::<TcpStateEvent>() + 8);
    }

    #[test]
    fn rejects_bad_socket_io_records() {
        let good = sock_io(&[1, 2, 3]);
        // Not a multiple of 8, shorter than the fixed part, longer than the largest.
        for size in [
            125usize,
            112,
            event_abi::sock_io_size(event_abi::MAX_SNAPLEN) + 8,
        ] {
            let mut b = good.clone();
            b.resize(size, 0);
            b[30..32].copy_from_slice(&(size as u16).to_ne_bytes());
            assert!(
                matches!(
                    decode(&b),
                    Err(DecodeError::BadSize { .. } | DecodeError::TooShort { .. })
                ),
                "{size}"
            );
        }
        // Header size and frame disagree.
        assert!(matches!(
            decode(&good[..120]),
            Err(DecodeError::BadSize { .. })
        ));
        // A payload length past the record's end.
        let mut b = good.clone();
        let at = core::mem::offset_of!(SockIoEvent, payload_len);
        b[at..at + 2].copy_from_slice(&9u16.to_ne_bytes());
        assert_eq!(
            decode(&b).unwrap_err(),
            DecodeError::BadPayload {
                size: 128,
                payload_len: 9
            }
        );
        b[at..at + 2].copy_from_slice(&8u16.to_ne_bytes());
        assert!(decode(&b).is_ok());
    }
}
