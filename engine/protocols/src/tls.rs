//! TLS: recognised from its first handshake record so the connection is counted as TLS and
//! its (encrypted) content is left alone.
//!
//! A first payload is taken for TLS when it starts with a handshake record (content type
//! 22, record version 0x0301..=0x0304: a ClientHello's record often says 0x0301 whatever is
//! negotiated) of a sane length, holding a ClientHello or ServerHello whose length agrees
//! with the record and whose body starts with a plausible `legacy_version` and session id.
//! A ClientHello sent, or a ServerHello received, makes this end the client; the other two
//! the server (a ServerHello first: a connection met in the middle of its handshake).

use crate::{Dir, Role};

/// Largest record length: 2^14 bytes of plaintext plus the most expansion TLS 1.2 allows.
const MAX_RECORD: usize = (1 << 14) + 2048;
/// Bytes of a record header.
const RECORD_HEADER: usize = 5;
/// Bytes of a handshake message header (type and 24-bit length).
const HANDSHAKE_HEADER: usize = 4;
/// Handshake message types.
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// Smallest bodies: version, random, session id length, one cipher suite (a list of at
/// least one for the client), compression method(s).
const MIN_CLIENT_HELLO: usize = 2 + 32 + 1 + 2 + 2 + 1 + 1;
const MIN_SERVER_HELLO: usize = 2 + 32 + 1 + 2 + 1;
/// Largest hello taken as plausible (post-quantum key shares make them a few KiB; 24-bit
/// lengths beyond this are noise).
const MAX_HELLO: usize = 1 << 17;
/// A handshake message longer than its record continues in the next record; records that
/// fragment one are at least this long (the smallest `max_fragment_length`, RFC 6066).
const MIN_FRAGMENTING_RECORD: usize = 512;

/// Whether `data`, the first payload seen on a connection in direction `dir`, starts a TLS
/// handshake; if so, which end the socket is.
pub fn detect(dir: Dir, data: &[u8]) -> Option<Role> {
    if data.len() < RECORD_HEADER + HANDSHAKE_HEADER {
        return None;
    }
    if data[0] != 0x16 || data[1] != 0x03 || !(0x01..=0x04).contains(&data[2]) {
        return None;
    }
    let record = usize::from(u16::from_be_bytes([data[3], data[4]]));
    if !(HANDSHAKE_HEADER..=MAX_RECORD).contains(&record) {
        return None;
    }
    let kind = data[5];
    let length = usize::from(data[6]) << 16 | usize::from(data[7]) << 8 | usize::from(data[8]);
    let min = match kind {
        CLIENT_HELLO => MIN_CLIENT_HELLO,
        SERVER_HELLO => MIN_SERVER_HELLO,
        _ => return None,
    };
    if !(min..=MAX_HELLO).contains(&length) {
        return None;
    }
    // The message fits its record (other handshake messages may follow it there), or it is
    // fragmented over records and this one is of a size that fragments.
    if HANDSHAKE_HEADER + length > record && record < MIN_FRAGMENTING_RECORD {
        return None;
    }
    // The body, as far as it was copied: legacy_version 0x0300..=0x0304, then 32 random
    // bytes and a session id of at most 32 bytes.
    let body = &data[RECORD_HEADER + HANDSHAKE_HEADER..];
    if body.len() >= 2 && (body[0] != 0x03 || body[1] > 0x04) {
        return None;
    }
    if body.len() > 34 && body[34] > 32 {
        return None;
    }
    Some(match (kind, dir) {
        (CLIENT_HELLO, Dir::Send) | (SERVER_HELLO, Dir::Recv) => Role::Client,
        _ => Role::Server,
    })
}

/// Whether `data` starts with a TLS 1.2/1.3 application-data record header (content type
/// 23, version 0x0303, a length that fits an encrypted record: at least an AEAD tag and at
/// most 2^14 + 2048 bytes). Not used for detection (any end may send one, so it says nothing
/// of the role); a hint that a connection met mid-stream is TLS.
pub fn looks_like_record(data: &[u8]) -> bool {
    if data.len() < RECORD_HEADER || data[0] != 0x17 || data[1] != 0x03 || data[2] != 0x03 {
        return false;
    }
    let length = usize::from(u16::from_be_bytes([data[3], data[4]]));
    (17..=MAX_RECORD).contains(&length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// A handshake message in a record: `record_version` minor, type, body.
    fn record(minor: u8, kind: u8, body: &[u8]) -> Vec<u8> {
        let hs = body.len() + 4;
        let mut r = vec![0x16, 0x03, minor, (hs >> 8) as u8, hs as u8, kind];
        r.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        r.extend_from_slice(body);
        r
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut e = kind.to_be_bytes().to_vec();
        e.extend_from_slice(&(data.len() as u16).to_be_bytes());
        e.extend_from_slice(data);
        e
    }

    /// A TLS 1.3 ClientHello as a browser sends it: SNI, supported_versions, key_share.
    fn client_hello(host: &str) -> Vec<u8> {
        let mut b = vec![0x03, 0x03];
        b.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
        b.push(32);
        b.extend((0..32u8).map(|i| i ^ 0x5a));
        let suites: [u16; 5] = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f];
        b.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for s in suites {
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.extend_from_slice(&[1, 0]);
        let mut ext = Vec::new();
        let mut sni = ((host.len() + 3) as u16).to_be_bytes().to_vec();
        sni.push(0);
        sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
        sni.extend_from_slice(host.as_bytes());
        ext.extend(extension(0x0000, &sni));
        ext.extend(extension(0x002b, &[4, 0x03, 0x04, 0x03, 0x03]));
        let mut share = vec![0x00, 0x24, 0x00, 0x1d, 0x00, 0x20];
        share.extend([0x42u8; 32]);
        ext.extend(extension(0x0033, &share));
        b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        b.extend(ext);
        record(0x01, CLIENT_HELLO, &b)
    }

    /// A TLS 1.2 ServerHello followed, in the same record, by the start of a Certificate.
    fn server_hello() -> Vec<u8> {
        let mut b = vec![0x03, 0x03];
        b.extend([0x99u8; 32]);
        b.push(0);
        b.extend_from_slice(&[0xc0, 0x2f, 0x00]);
        let ext = extension(0xff01, &[0]);
        b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        b.extend(ext);
        let mut r = record(0x03, SERVER_HELLO, &b);
        // Certificate (type 11) with 3 bytes of body in the same record.
        r.extend_from_slice(&[11, 0, 0, 3, 0, 0, 0]);
        let len = r.len() - 5;
        r[3..5].copy_from_slice(&(len as u16).to_be_bytes());
        r
    }

    #[test]
    fn tls_client_hello_roles() {
        let ch = client_hello("example.com");
        assert_eq!(detect(Dir::Send, &ch), Some(Role::Client));
        assert_eq!(detect(Dir::Recv, &ch), Some(Role::Server));
        // Only the first bytes copied (a small snaplen): still enough.
        assert_eq!(detect(Dir::Send, &ch[..9]), Some(Role::Client));
        assert_eq!(detect(Dir::Send, &ch[..40]), Some(Role::Client));
        // Record versions 0x0301..=0x0304.
        for minor in 1..=4 {
            let mut c = ch.clone();
            c[2] = minor;
            assert_eq!(detect(Dir::Send, &c), Some(Role::Client), "minor {minor}");
        }
    }

    #[test]
    fn tls_server_hello_roles() {
        let sh = server_hello();
        assert_eq!(detect(Dir::Recv, &sh), Some(Role::Client));
        assert_eq!(detect(Dir::Send, &sh), Some(Role::Server));
    }

    #[test]
    fn tls_fragmented_client_hello() {
        // A 20 KB ClientHello over two records: the first is full size.
        let mut ch = client_hello("example.com");
        let body_len = 20_000usize;
        ch[6..9].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
        ch[3..5].copy_from_slice(&(1u16 << 14).to_be_bytes());
        assert_eq!(detect(Dir::Send, &ch), Some(Role::Client));
        // But a small record can't fragment a large message.
        ch[3..5].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(detect(Dir::Send, &ch), None);
    }

    #[test]
    fn tls_negatives() {
        let ch = client_hello("example.com");
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut c = ch.clone();
            f(&mut c);
            detect(Dir::Send, &c)
        };
        assert_eq!(bad(&|c| c[0] = 0x17), None, "application data");
        assert_eq!(bad(&|c| c[1] = 0x02), None, "major version");
        assert_eq!(bad(&|c| c[2] = 0x00), None, "SSL 3 record");
        assert_eq!(bad(&|c| c[2] = 0x05), None, "unknown minor");
        assert_eq!(
            bad(&|c| c[3..5].copy_from_slice(&[0x48, 0x01])),
            None,
            "record too long"
        );
        assert_eq!(
            bad(&|c| c[3..5].copy_from_slice(&[0, 3])),
            None,
            "record too short"
        );
        assert_eq!(bad(&|c| c[5] = 11), None, "certificate first");
        assert_eq!(
            bad(&|c| c[6..9].copy_from_slice(&[0, 0, 10])),
            None,
            "hello too short"
        );
        assert_eq!(
            bad(&|c| c[6..9].copy_from_slice(&[0, 0x0f, 0])),
            None,
            "longer than record"
        );
        assert_eq!(bad(&|c| c[9] = 0x04), None, "legacy_version");
        assert_eq!(bad(&|c| c[10] = 0x09), None, "legacy_version minor");
        assert_eq!(bad(&|c| c[43] = 33), None, "session id length");
        assert_eq!(detect(Dir::Send, &ch[..8]), None, "too short to tell");
        assert_eq!(detect(Dir::Send, b""), None);
        for other in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"+OK\r\n",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00\x00",
        ] {
            assert_eq!(detect(Dir::Send, other), None);
            assert_eq!(detect(Dir::Recv, other), None);
        }
        // Random bytes: a few xorshift streams, even with the first byte forced to 0x16.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..20_000 {
            let mut buf = [0u8; 64];
            rng.fill(&mut buf);
            if i % 2 == 0 {
                buf[0] = 0x16;
            }
            if i % 4 == 0 {
                buf[1] = 0x03;
            }
            // What passes must at least be a hello in a handshake record.
            if detect(Dir::Send, &buf).is_some() {
                assert!(buf[0] == 0x16 && buf[1] == 3 && (buf[5] == 1 || buf[5] == 2));
            }
        }
    }

    #[test]
    fn tls_application_data_record() {
        assert!(looks_like_record(&[0x17, 0x03, 0x03, 0x00, 0x45, 1, 2, 3]));
        assert!(!looks_like_record(&[0x17, 0x03, 0x03, 0x00, 0x05]));
        assert!(!looks_like_record(&[0x17, 0x03, 0x01, 0x00, 0x45]));
        assert!(!looks_like_record(&[0x16, 0x03, 0x03, 0x00, 0x45]));
        assert!(!looks_like_record(&[0x17, 0x03, 0x03, 0x48, 0x01]));
        assert!(!looks_like_record(&[0x17, 0x03]));
        assert!(!looks_like_record(b"GET / HTTP/1.1\r\n"));
    }
}
