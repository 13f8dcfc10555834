//! Helpers shared by the parsers' tests: a seeded RNG, the fuzz step over recorded calls,
//! and the scripts of calls the SQL parsers' tests replay.

use crate::{Conn, Counters, Dir, Exchange, Kind, Message, Output, Parser, Protocol, Role};

/// xorshift64: small, seeded, the same on every run.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `n` random bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `buf` filled with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// One recorded call (`data`, `unseen`), maybe damaged: a byte overwritten, the tail
/// turned into unseen bytes, more unseen bytes, a prefix dropped or random bytes appended
/// (each one time in eight; else unchanged).
pub(crate) fn mutate(rng: &mut Rng, data: &[u8], unseen: u64) -> (Vec<u8>, u64) {
    let mut data = data.to_vec();
    let mut unseen = unseen;
    match rng.below(8) {
        0 if !data.is_empty() => {
            let at = rng.below(data.len());
            data[at] = rng.next() as u8;
        }
        1 if !data.is_empty() => {
            let at = rng.below(data.len());
            unseen += (data.len() - at) as u64;
            data.truncate(at);
        }
        2 => unseen += rng.next() % 70_000,
        3 if !data.is_empty() => {
            let at = rng.below(data.len());
            data.drain(..at);
        }
        4 => {
            for _ in 0..rng.next() % 40 {
                data.push(rng.next() as u8);
            }
        }
        _ => {}
    }
    (data, unseen)
}

/// One call's bytes fed as several calls split at random; `unseen` goes with the last.
pub(crate) fn feed_split(
    rng: &mut Rng,
    data: &[u8],
    unseen: u64,
    mut feed: impl FnMut(&[u8], u64),
) {
    let mut rest = data;
    while !rest.is_empty() && rng.next().is_multiple_of(3) {
        let at = rng.below(rest.len());
        feed(&rest[..at], 0);
        rest = &rest[at..];
    }
    feed(rest, unseen);
}

/// Who made a call in a script: the client or the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum D {
    C,
    S,
}

/// A conversation's calls: (who sent, bytes, unseen).
pub(crate) type Script = Vec<(D, Vec<u8>, u64)>;

/// The direction of a call by `d`, seen from the side `role`.
pub(crate) fn dir_of(d: D, role: Role) -> Dir {
    match (d, role) {
        (D::C, Role::Client) | (D::S, Role::Server) => Dir::Send,
        _ => Dir::Recv,
    }
}

/// `script` through parser `p` at `role`, `check` after each call.
pub(crate) fn run_parser<P: Parser>(
    mut p: P,
    role: Role,
    script: &Script,
    check: impl Fn(&P),
) -> (Vec<Message>, u64) {
    let mut out = Output::default();
    for (d, data, unseen) in script {
        p.feed(dir_of(*d, role), data, *unseen, &mut out);
        check(&p);
    }
    (out.messages, out.malformed)
}

/// `script` through a connection at `role`, which must detect `protocol`.
pub(crate) fn run_conn(
    protocol: Protocol,
    role: Role,
    script: &Script,
) -> (Vec<Exchange>, Counters) {
    let mut conn = Conn::new();
    let mut done = Vec::new();
    let mut c = Counters::default();
    for (k, (d, data, unseen)) in script.iter().enumerate() {
        conn.feed(
            1000 * (k as u64 + 1),
            dir_of(*d, role),
            data,
            *unseen,
            &mut done,
            &mut c,
        );
    }
    if !script.is_empty() {
        assert_eq!(conn.protocol(), Some((protocol, role)));
    }
    (done, c)
}

/// Each call of `script` mutated ([`mutate`]) and fed in random splits ([`feed_split`])
/// into `p` at `role`, `check` after each call; no response may come before its
/// request. Returns the requests and responses seen.
pub(crate) fn fuzz_script<P: Parser>(
    rng: &mut Rng,
    p: &mut P,
    role: Role,
    script: &[(D, Vec<u8>, u64)],
    check: impl Fn(&P),
) -> (usize, usize) {
    let mut out = Output::default();
    let (mut requests, mut responses) = (0usize, 0usize);
    for (d, data, unseen) in script {
        let (data, unseen) = mutate(rng, data, *unseen);
        let dir = dir_of(*d, role);
        feed_split(rng, &data, unseen, |b, u| p.feed(dir, b, u, &mut out));
        check(p);
        for m in out.messages.drain(..) {
            match m.kind {
                Kind::Request => requests += 1,
                Kind::Response => {
                    responses += 1;
                    assert!(responses <= requests, "a response before its request");
                }
            }
        }
    }
    (requests, responses)
}

/// Messages in short: `> METHOD`, `< ok` or `< ERR code`.
pub(crate) fn summary(ms: &[Message]) -> Vec<String> {
    ms.iter()
        .map(|m| match m.kind {
            Kind::Request => format!("> {}", m.method),
            Kind::Response => format!(
                "< {}{}",
                if m.error { "ERR " } else { "ok" },
                m.code.as_deref().unwrap_or("")
            ),
        })
        .collect()
}

/// A response's calls as a receiver reading with a big buffer sees them: each call
/// starts 100 bytes before a message that follows a big one, 512 bytes of it copied.
/// `len` is the whole length of the message at the start of its argument.
pub(crate) fn spread(rs: &[u8], len: impl Fn(&[u8]) -> usize) -> Vec<(Vec<u8>, u64)> {
    let mut cuts = vec![0];
    let mut at = 0;
    while at < rs.len() {
        let n = len(&rs[at..]);
        at += n;
        if n > 600 && at < rs.len() {
            cuts.push(at - 100);
        }
    }
    cuts.push(rs.len());
    cuts.windows(2)
        .map(|w| {
            let call = &rs[w[0]..w[1]];
            let seen = call.len().min(512);
            (call[..seen].to_vec(), (call.len() - seen) as u64)
        })
        .collect()
}

/// `iterations` parsers from `new`, each started with the request `start` sent, then fed
/// 20 calls of noise shaped like frames: up to five, each a header from `header` (given the
/// body's length) and a body of bytes from `likely` or random ones, in a random direction
/// with a few unseen bytes. `check` after each call; never more responses than requests.
pub(crate) fn random_frames<P: Parser>(
    rng: &mut Rng,
    iterations: usize,
    new: impl Fn() -> P,
    start: &[u8],
    header: impl Fn(&mut Rng, usize, &mut Vec<u8>),
    likely: &[u8],
    check: impl Fn(&P),
) {
    for _ in 0..iterations {
        let mut p = new();
        let mut out = Output::default();
        p.feed(Dir::Send, start, 0, &mut out);
        for _ in 0..20 {
            let mut buf = Vec::new();
            for _ in 0..rng.next() % 6 {
                let len = (rng.next() % 40) as usize;
                header(rng, len, &mut buf);
                for _ in 0..len {
                    let b = likely[rng.below(likely.len())];
                    buf.push(if rng.next().is_multiple_of(2) {
                        b
                    } else {
                        rng.next() as u8
                    });
                }
            }
            let dir = if rng.next().is_multiple_of(2) {
                Dir::Send
            } else {
                Dir::Recv
            };
            p.feed(dir, &buf, rng.next() % 3, &mut out);
            check(&p);
        }
        let reqs = out
            .messages
            .iter()
            .filter(|m| m.kind == Kind::Request)
            .count();
        assert!(out.messages.len() - reqs <= reqs);
    }
}
