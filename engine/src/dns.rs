//! A strict, allocation-light DNS message parser: the header and the first question, which
//! is all the DNS view needs (who asked what, and how it was answered). No input makes it
//! panic or loop: every read is bounds-checked, names are at most 255 bytes, and a
//! compression pointer must point before the previous one's target, so a chain of them
//! strictly moves backwards through the message and ends.

use core::fmt::Write as _;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Longest name in wire form (RFC 1035 3.1).
const MAX_NAME: usize = 255;
/// More compression jumps than this in one name is hostile (the backwards rule already
/// bounds them by the message length).
const MAX_JUMPS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The bytes end before the header and first question do (a cut-off message: over
    /// TCP, more may follow).
    Truncated,
    /// Not a DNS message this parser accepts.
    Malformed,
}

/// The header and first question of a message; the question's name was written to the
/// caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub id: u16,
    /// A response (QR = 1).
    pub response: bool,
    pub opcode: u8,
    /// The header's 4-bit RCODE.
    pub rcode: u8,
    /// The header's flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the first question.
    pub question_end: usize,
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, Error> {
    match msg.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(Error::Truncated),
    }
}

/// Reads the name at `pos`, appending its presentation form (lower case, `\DDD` and `\.`
/// escapes, "." for the root) to `out` when given. Returns the offset just past the name
/// where it is written (past its first pointer, if it has one).
pub fn read_name(msg: &[u8], mut pos: usize, mut out: Option<&mut String>) -> Result<usize, Error> {
    let mut end = None;
    let mut wire_len = 1usize;
    let mut jumps = 0usize;
    // Pointers must go strictly backwards past every earlier target.
    let mut limit = pos;
    let mut first = true;
    loop {
        let len = *msg.get(pos).ok_or(Error::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    if let Some(o) = out.as_deref_mut()
                        && first
                    {
                        o.push('.');
                    }
                    return Ok(end.unwrap_or(pos + 1));
                }
                let len = usize::from(len);
                wire_len += len + 1;
                if wire_len > MAX_NAME {
                    return Err(Error::Malformed);
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(Error::Truncated)?;
                if let Some(o) = out.as_deref_mut() {
                    if !first {
                        o.push('.');
                    }
                    push_label(o, label);
                }
                first = false;
                pos += 1 + len;
            }
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or(Error::Truncated)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                jumps += 1;
                if target >= limit || jumps > MAX_JUMPS {
                    return Err(Error::Malformed);
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            // 0x40 (extended label types) and 0x80 are obsolete or reserved.
            _ => return Err(Error::Malformed),
        }
    }
}

fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x21..=0x7e => out.push(b.to_ascii_lowercase() as char),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
}

/// Parses the header and the first question. `qname` is cleared and gets the question's
/// name. Bytes after the question are not looked at (they may be cut off by the snaplen).
pub fn parse(msg: &[u8], qname: &mut String) -> Result<Parsed, Error> {
    qname.clear();
    if msg.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    let flags = u16_at(msg, 2)?;
    let qdcount = u16_at(msg, 4)?;
    if qdcount == 0 {
        // Nothing to attribute it to (e.g. a NOTIMP answer without question).
        return Err(Error::Malformed);
    }
    let name_end = read_name(msg, HEADER_LEN, Some(qname))?;
    let qtype = u16_at(msg, name_end)?;
    let qclass = u16_at(msg, name_end + 2)?;
    Ok(Parsed {
        id: u16_at(msg, 0)?,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: (flags & 0xf) as u8,
        flags,
        qdcount,
        ancount: u16_at(msg, 6)?,
        nscount: u16_at(msg, 8)?,
        arcount: u16_at(msg, 10)?,
        qtype,
        qclass,
        question_end: name_end + 4,
    })
}

/// Most records per section a message on a port other than 53 may claim and still be
/// taken for DNS.
const PLAUSIBLE_RECORDS: u16 = 64;

/// The check a whole message on a port other than 53 must pass to be taken for DNS:
/// a standard query (opcode 0) with exactly one question of a known class and a non-zero
/// type, Z bit clear; a query has no answer or authority records, no RCODE and at most
/// two additional ones (EDNS, TSIG); a response at most [`PLAUSIBLE_RECORDS`] per
/// section; and every record parses and the last one ends exactly where the message does.
pub fn strict(msg: &[u8], p: &Parsed) -> bool {
    let z = p.flags & 0x0040 != 0;
    let counts_ok = if p.response {
        p.ancount <= PLAUSIBLE_RECORDS
            && p.nscount <= PLAUSIBLE_RECORDS
            && p.arcount <= PLAUSIBLE_RECORDS
            && p.rcode <= 10
    } else {
        p.ancount == 0 && p.nscount == 0 && p.arcount <= 2 && p.rcode == 0 && p.flags & 0x0200 == 0
    };
    if p.opcode != 0
        || z
        || p.qdcount != 1
        || !counts_ok
        || p.qtype == 0
        || !matches!(p.qclass, 1 | 3 | 4 | 255)
    {
        return false;
    }
    let mut pos = p.question_end;
    let records = usize::from(p.ancount) + usize::from(p.nscount) + usize::from(p.arcount);
    for _ in 0..records {
        let Ok(end) = read_name(msg, pos, None) else {
            return false;
        };
        let Ok(rdlen) = u16_at(msg, end + 8) else {
            return false;
        };
        pos = end + 10 + usize::from(rdlen);
        if pos > msg.len() {
            return false;
        }
    }
    pos == msg.len()
}

/// "A", "AAAA", … or "TYPE<n>" (RFC 3597).
pub fn qtype_name(t: u16) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        52 => "TLSA",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    name.to_string()
}

/// "NOERROR", "NXDOMAIN", … or "RCODE<n>".
pub fn rcode_name(r: u8) -> String {
    let name = match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{r}"),
    };
    name.to_string()
}

/// Builds DNS messages (tests, synthetic streams).
pub mod build {
    /// A message with one question: `flags` as in the header (0x0100 = a query with RD;
    /// 0x8180 | rcode = an answer), `answers` A records of 4 bytes each, compressed to
    /// the question's name.
    pub fn message(id: u16, flags: u16, qname: &str, qtype: u16, answers: u16) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&answers.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        for label in qname.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        for i in 0..answers {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&60u32.to_be_bytes());
            m.extend_from_slice(&4u16.to_be_bytes());
            m.extend_from_slice(&[10, 0, 0, i as u8]);
        }
        m
    }

    pub fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
        message(id, 0x0100, qname, qtype, 0)
    }

    pub fn answer(id: u16, qname: &str, qtype: u16, rcode: u8) -> Vec<u8> {
        let answers = u16::from(rcode == 0 && qtype == 1);
        message(id, 0x8180 | u16::from(rcode), qname, qtype, answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_and_its_answer() {
        let mut name = String::new();
        let q = build::query(0x1234, "Example.COM", 28);
        let p = parse(&q, &mut name).unwrap();
        assert_eq!(name, "example.com");
        assert_eq!(
            (p.id, p.response, p.opcode, p.rcode, p.qtype, p.qclass),
            (0x1234, false, 0, 0, 28, 1)
        );
        assert_eq!(p.question_end, q.len());
        assert!(strict(&q, &p));
        let a = build::answer(0x1234, "example.com", 1, 0);
        let p = parse(&a, &mut name).unwrap();
        assert_eq!(
            (p.response, p.rcode, p.ancount, name.as_str()),
            (true, 0, 1, "example.com")
        );
        assert!(strict(&a, &p));
        let nx = build::answer(7, "nope.example", 1, 3);
        let p = parse(&nx, &mut name).unwrap();
        assert_eq!(rcode_name(p.rcode), "NXDOMAIN");
        assert_eq!(
            (qtype_name(28).as_str(), qtype_name(4242).as_str()),
            ("AAAA", "TYPE4242")
        );
    }

    #[test]
    fn the_root_and_odd_bytes_have_a_presentation_form() {
        let mut name = String::new();
        let mut q = build::query(1, "", 2);
        parse(&q, &mut name).unwrap();
        assert_eq!(name, ".");
        q = build::query(1, "x", 1);
        q[13] = b'.';
        parse(&q, &mut name).unwrap();
        assert_eq!(name, "\\.");
        q[13] = 0;
        parse(&q, &mut name).unwrap();
        assert_eq!(name, "\\000");
    }

    #[test]
    fn truncated_messages_say_so() {
        let mut name = String::new();
        let q = build::query(9, "a.example.org", 1);
        for cut in 0..q.len() {
            assert_eq!(
                parse(&q[..cut], &mut name),
                Err(Error::Truncated),
                "cut at {cut}"
            );
        }
        assert!(parse(&q, &mut name).is_ok());
        // The answer's records may be cut off: header and question are enough.
        let a = build::answer(9, "a.example.org", 1, 0);
        let p = parse(&a[..q.len()], &mut name).unwrap();
        assert!(p.response && !strict(&a[..q.len() + 3], &p));
    }

    #[test]
    fn compression_loops_and_forward_pointers_are_malformed() {
        let mut name = String::new();
        let mut m = build::query(1, "", 1);
        // The question's name points at itself.
        m[12] = 0xc0;
        m.insert(13, 12);
        assert_eq!(parse(&m, &mut name), Err(Error::Malformed));
        // Two labels and a pointer back to the first: a cycle.
        let mut m = build::query(1, "ab", 1);
        m.truncate(12);
        m.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&m, &mut name), Err(Error::Malformed));
        // Forward pointer.
        let mut m = build::query(1, "", 1);
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 20, 0, 1, 0, 1, 0, 0, 0]);
        assert_eq!(parse(&m, &mut name), Err(Error::Malformed));
        // A valid backward chain in an answer's records parses under `strict`.
        let a = build::answer(3, "x.y", 1, 0);
        let p = parse(&a, &mut name).unwrap();
        assert!(strict(&a, &p));
        // Reserved label types.
        let mut m = build::query(1, "x", 1);
        m[12] = 0x41;
        assert_eq!(parse(&m, &mut name), Err(Error::Malformed));
    }

    #[test]
    fn long_names_are_malformed() {
        let mut name = String::new();
        let label = "a".repeat(63);
        let long = [label.as_str(); 5].join(".");
        assert_eq!(
            parse(&build::query(1, &long, 1), &mut name),
            Err(Error::Malformed)
        );
        let ok = [label.as_str(); 3].join(".");
        assert!(parse(&build::query(1, &ok, 1), &mut name).is_ok());
    }

    #[test]
    fn strict_refuses_what_is_not_plainly_dns() {
        let mut name = String::new();
        let q = build::query(1, "example.com", 1);
        let p = parse(&q, &mut name).unwrap();
        // Trailing garbage, a second question, an update opcode, answers in a query.
        let mut longer = q.clone();
        longer.push(0);
        assert!(!strict(&longer, &p));
        for (at, value) in [(5, 2u8), (2, 0x29), (7, 1), (3, 0x40)] {
            let mut m = q.clone();
            m[at] = value;
            let ok = parse(&m, &mut name).is_ok_and(|p| strict(&m, &p));
            assert!(!ok, "byte {at} = {value:#x}");
        }
        // An HTTP request is not DNS.
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(
            parse(http, &mut name)
                .ok()
                .is_none_or(|p| !strict(http, &p))
        );
    }

    /// Random bytes, and random mutations of real messages: never a panic, and a name
    /// never longer than the bounds allow.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut name = String::new();
        let seeds = [
            build::query(1, "www.example.com", 1),
            build::answer(1, "www.example.com", 1, 0),
        ];
        for i in 0..200_000u32 {
            let mut m: Vec<u8> = if i % 2 == 0 {
                (0..(next() % 80) as usize).map(|_| next() as u8).collect()
            } else {
                let mut m = seeds[(i / 2) as usize % 2].clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % m.len();
                    m[at] = next() as u8;
                }
                m.truncate((next() as usize) % (m.len() + 1));
                m
            };
            if i % 7 == 0 {
                // Pointers everywhere.
                for b in m.iter_mut().skip(12).step_by(2) {
                    *b |= 0xc0;
                }
            }
            if let Ok(p) = parse(&m, &mut name) {
                assert!(name.len() <= 4 * MAX_NAME);
                assert!(p.question_end <= m.len());
                let _ = strict(&m, &p);
            }
        }
    }
}
