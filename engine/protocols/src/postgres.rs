//! PostgreSQL frontend/backend protocol 3.
//!
//! Startup (`StartupMessage`, `SSLRequest`, `GSSENCRequest`, `CancelRequest`: a length and
//! a code, no type byte) then typed messages: a type byte and a 4-byte length that counts
//! itself. An `SSLRequest` or `GSSENCRequest` the server accepts (`S`, `G`) turns the
//! connection opaque; refused (`N`), startup goes on in clear. Authentication and the
//! other startup messages up to the first `ReadyForQuery` yield nothing.
//!
//! Requests:
//! - A simple `Query` is one request, whatever number of statements it holds, by its first
//!   statement's verb ([`crate::sql::verb`]); its response is complete at `ReadyForQuery`,
//!   an error when an `ErrorResponse` came before (its SQLSTATE as `code`). COPY data in
//!   either direction is skipped by length within it. A `FunctionCall` is one request
//!   ([`OTHER`]) answered likewise.
//! - Extended protocol: `Parse` keeps its statement's verb by name (the unnamed statement
//!   too; at most 1024 names), `Bind` a portal's statement; each `Execute` is one request by
//!   its portal's statement's verb ([`OTHER`] when not seen), complete at `CommandComplete`,
//!   `EmptyQueryResponse`, `PortalSuspended` or `ErrorResponse`. After an error the server
//!   skips the batch's remaining messages up to `Sync`: its remaining `Execute`s are given a
//!   response at once, as errors without a code, so that each request has exactly one
//!   response. An error from a `Parse` or `Bind` is the response of the `Execute` that
//!   follows it. `Parse`, `Bind`, `Describe`, `Close`, `Sync` and `Flush` are not requests.
//!
//! Framing lost (a message header among unseen bytes, or a message that does not fit the
//! protocol) counts one malformed stream; the requests waiting get a plain (non-error)
//! response at once when it is the responses' framing. The requests resynchronise at the
//! start of a later call that starts with a plausible `Query`, `Parse` or `Bind`, the
//! responses at the start of the first call after it.

use crate::sql::{self, Fed, Frames, Framing, Link, PREFIX_MAX, Session, Step};
use crate::{Dir, MAX_PENDING, Message, OTHER, Output, Parser, Role};
use std::collections::{HashMap, VecDeque};

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Startup packets the server accepts are at most this long.
const MAX_STARTUP: u32 = 10_000;
/// Messages the server accepts are at most 1 GiB.
const MAX_MESSAGE: u32 = 1 << 30;
/// Prepared statement names remembered per connection.
const MAX_STATEMENTS: usize = 1024;
/// Named portals remembered per connection.
const MAX_PORTALS: usize = 64;
/// Longest statement or portal name remembered.
const MAX_NAME: usize = 256;
/// Fewest bytes of a copy taken as cut by the snaplen (detection).
const MIN_CUT: usize = 128;
/// Requests and syncs awaiting their responses (pipelining).
const MAX_QUEUE: usize = 1024;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Whether `data`, the first payload seen on a connection in direction `dir`, is this
/// protocol; if so, which end the socket is.
///
/// A startup packet (`StartupMessage` 3.x, `SSLRequest`, `GSSENCRequest`, `CancelRequest`)
/// or, on a connection met mid-stream, whole frontend messages starting with a `Query`,
/// `Parse` or `Bind` whose statement text reads as SQL (or a batch ending in `Sync`):
/// sent, client; received, server.
pub fn detect(dir: Dir, data: &[u8]) -> Option<Role> {
    if startup_packet(data) || frontend(data, None) {
        return Some(match dir {
            Dir::Send => Role::Client,
            Dir::Recv => Role::Server,
        });
    }
    None
}

/// A startup packet, alone in the call (possibly cut by the copy).
fn startup_packet(data: &[u8]) -> bool {
    if data.len() < 8 {
        return false;
    }
    let len = be32(data);
    match be32(&data[4..]) {
        SSL_REQUEST | GSSENC_REQUEST => len == 8 && data.len() == 8,
        CANCEL_REQUEST => len == 16 && data.len() == 16,
        code if code >> 16 == 3 && code & 0xffff <= 2 => {
            (9..=MAX_STARTUP).contains(&len)
                && data.len() > 8
                && data.len() <= len as usize
                && (data[8].is_ascii_lowercase() || data[8] == b'_')
                && (data.len() < len as usize || data[len as usize - 1] == 0)
        }
        _ => false,
    }
}

/// Frontend message lengths that make sense for their type.
fn frontend_len_ok(t: u8, len: u32) -> bool {
    (4..=MAX_MESSAGE).contains(&len)
        && match t {
            b'S' | b'H' | b'X' | b'c' => len == 4,
            b'Q' => len >= 5,
            b'P' => len >= 8,
            b'B' => len >= 12,
            b'E' => len >= 9,
            b'D' | b'C' => len >= 6,
            b'F' => len >= 10,
            b'd' | b'f' | b'p' => true,
            _ => false,
        }
}

/// Backend message lengths that make sense for their type.
fn backend_len_ok(t: u8, len: u32) -> bool {
    (4..=MAX_MESSAGE).contains(&len)
        && match t {
            b'Z' => len == 5,
            b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => len == 4,
            b'R' => len >= 8,
            b'K' => (12..=264).contains(&len),
            b'S' => len >= 6,
            b'C' | b'E' | b'N' => len >= 5,
            b'T' | b'D' | b't' => len >= 6,
            b'G' | b'H' | b'W' | b'd' | b'A' | b'V' | b'v' => true,
            _ => false,
        }
}

/// A NUL-terminated string at the start of `b`, and what follows its NUL.
fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = b.iter().position(|&c| c == 0)?;
    Some((&b[..at], &b[at + 1..]))
}

fn printable(s: &[u8]) -> bool {
    s.iter().all(|b| (0x20..0x7f).contains(b))
}

/// Whole frontend messages from the call's start, each plausible; the first a `Query`,
/// `Parse` or `Bind`; SQL text seen, or a `Sync` or `Flush` ending a batch. With `unseen`
/// unknown (detection), the last message may run past the copy only with its SQL seen, in
/// a copy long enough to have been cut by the snaplen.
fn frontend(data: &[u8], unseen: Option<u64>) -> bool {
    let total = data.len() as u64 + unseen.unwrap_or(0);
    let (mut sql_seen, mut sync) = (false, false);
    let mut i = 0usize;
    let mut first = None;
    for n in 0..64 {
        if i as u64 == total {
            break;
        }
        let Some(h) = data.get(i..i + 5) else {
            // The next header is cut by the copy.
            if unseen.is_some() && n > 0 {
                break;
            }
            return false;
        };
        let (t, len) = (h[0], be32(&h[1..]));
        if !frontend_len_ok(t, len) || (n == 0 && !matches!(t, b'Q' | b'P' | b'B')) {
            return false;
        }
        first.get_or_insert(t);
        let end = i as u64 + 1 + u64::from(len);
        let whole = end <= data.len() as u64;
        let body = &data[i + 5..data.len().min(end as usize)];
        match t {
            b'Q' => {
                let text = if whole {
                    match body.split_last() {
                        Some((&0, text)) if !text.contains(&0) => text,
                        _ => return false,
                    }
                } else {
                    body
                };
                if !sql::looks_like_sql(text) {
                    return false;
                }
                sql_seen = true;
            }
            b'P' => {
                let Some((name, rest)) = cstr(body) else {
                    return false;
                };
                if !printable(name) {
                    return false;
                }
                sql_seen |= sql::looks_like_sql(rest);
                if whole {
                    // Query, NUL, parameter type count and types.
                    let Some((_, types)) = cstr(rest) else {
                        return false;
                    };
                    if types.len() < 2
                        || types.len()
                            != 2 + 4 * usize::from(u16::from_be_bytes([types[0], types[1]]))
                    {
                        return false;
                    }
                }
            }
            b'B' if whole => {
                let ok = cstr(body)
                    .and_then(|(portal, rest)| Some((portal, cstr(rest)?.0)))
                    .is_some_and(|(portal, stmt)| printable(portal) && printable(stmt));
                if !ok {
                    return false;
                }
            }
            b'E' if whole => match cstr(body) {
                Some((portal, rest)) if printable(portal) && rest.len() == 4 => {}
                _ => return false,
            },
            b'S' | b'H' => sync = true,
            b'D' | b'C' if !matches!(body.first(), None | Some(b'S' | b'P')) => return false,
            _ => {}
        }
        if end > data.len() as u64 {
            return match unseen {
                None => sql_seen && matches!(t, b'Q' | b'P') && data.len() >= MIN_CUT,
                Some(_) => end <= total && (sql_seen || sync),
            };
        }
        i = end as usize;
    }
    match first {
        Some(b'Q') => sql_seen,
        Some(_) => sql_seen || sync,
        None => false,
    }
}

/// An ErrorResponse's SQLSTATE (its `C` field).
fn sqlstate(mut p: &[u8]) -> Option<Box<str>> {
    while let Some((&field, rest)) = p.split_first() {
        if field == 0 {
            return None;
        }
        let (value, next) = cstr(rest)?;
        if field == b'C' {
            return (value.len() == 5 && value.iter().all(u8::is_ascii_alphanumeric))
                .then(|| String::from_utf8_lossy(value).into());
        }
        p = next;
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    /// The backend's startup messages, up to the first ReadyForQuery.
    Startup,
    /// One byte answering an SSLRequest.
    SslAnswer,
    /// One byte answering a GSSENCRequest.
    GssAnswer,
    /// A simple query or a function call: complete at ReadyForQuery.
    Query,
    /// Complete at CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse.
    Execute,
    /// Its ReadyForQuery.
    Sync,
}

#[derive(Debug)]
struct Pending {
    item: Item,
    /// A request was emitted: its response must be.
    emit: bool,
    /// Responses resume at the start of the first call after this message.
    realign: bool,
    /// A query's first error.
    error: bool,
    code: Option<Box<str>>,
}

#[derive(Debug)]
struct State {
    role: Role,
    link: Link,
    /// Frontend messages without a type byte (startup packets).
    untyped: bool,
    /// The frontend switched to TLS without waiting (an answer not seen).
    tls: bool,
    stmts: HashMap<Box<[u8]>, &'static str>,
    unnamed_stmt: Option<&'static str>,
    portals: HashMap<Box<[u8]>, &'static str>,
    unnamed_portal: Option<&'static str>,
    queue: VecDeque<Pending>,
    emitted: usize,
    /// An error in an extended batch: its `Execute`s fail up to its `Sync`.
    skip_to_sync: bool,
}

/// PostgreSQL parser for one connection.
pub struct PostgresParser {
    req: Frames,
    resp: Frames,
    st: State,
}

impl PostgresParser {
    pub fn new(role: Role) -> Self {
        Self {
            req: Frames::new(false),
            resp: Frames::new(false),
            st: State {
                role,
                link: Link::default(),
                untyped: false,
                tls: false,
                stmts: HashMap::new(),
                unnamed_stmt: None,
                portals: HashMap::new(),
                unnamed_portal: None,
                queue: VecDeque::new(),
                emitted: 0,
                skip_to_sync: false,
            },
        }
    }
}

impl Parser for PostgresParser {
    fn feed(&mut self, dir: Dir, data: &[u8], unseen: u64, out: &mut Output) {
        sql::drive(
            &mut self.req,
            &mut self.resp,
            &mut self.st,
            dir,
            data,
            unseen,
            out,
        );
    }
}

impl sql::Pending for Pending {
    fn emit(&self) -> bool {
        self.emit
    }
    fn realign(&self) -> bool {
        self.realign
    }
    fn unmark(&mut self) {
        self.realign = false;
    }
}

impl Session for State {
    type Pending = Pending;
    const MAX_QUEUE: usize = MAX_QUEUE;

    fn role(&self) -> Role {
        self.role
    }

    fn link(&mut self) -> &mut Link {
        &mut self.link
    }

    fn queue(&mut self) -> &mut VecDeque<Pending> {
        &mut self.queue
    }

    /// A startup packet starts at the beginning.
    fn opens(&mut self, req: bool, data: &[u8]) -> bool {
        self.untyped = req && startup_packet(data);
        self.untyped
    }

    fn requests_start(data: &[u8], unseen: u64) -> bool {
        frontend(data, Some(unseen))
    }

    fn realigned(&mut self, req: bool) {
        if req {
            self.untyped = false;
        } else {
            self.skip_to_sync = false;
        }
    }

    /// The front entry's response is complete.
    fn complete(&mut self, error: bool, code: Option<Box<str>>, out: &mut Output) {
        sql::answer(&mut self.queue, &mut self.emitted, error, code, out);
    }

    fn responses_gone(&mut self) {
        self.skip_to_sync = false;
    }

    fn requests(&mut self, f: &mut Frames, data: &[u8], unseen: u64, out: &mut Output) -> Fed {
        f.feed(data, unseen, &mut Front { s: self, out })
    }

    fn responses(&mut self, f: &mut Frames, data: &[u8], unseen: u64, out: &mut Output) -> Fed {
        f.feed(data, unseen, &mut Back { s: self, out })
    }
}

struct Front<'a> {
    s: &'a mut State,
    out: &'a mut Output,
}

impl Framing for Front<'_> {
    fn header_len(&mut self) -> usize {
        if self.s.untyped { 4 } else { 5 }
    }

    fn header(&mut self, h: &[u8]) -> Option<(u64, usize)> {
        if self.s.untyped {
            if h[0] == 0x16 && h[1] == 0x03 {
                // A TLS record: the client went on to TLS.
                self.s.tls = true;
                return Some((0, 0));
            }
            let len = be32(h);
            return (8..=MAX_STARTUP)
                .contains(&len)
                .then_some((u64::from(len - 4), 4));
        }
        let (t, len) = (h[0], be32(&h[1..]));
        if !frontend_len_ok(t, len) {
            return None;
        }
        let want = match t {
            b'Q' | b'P' => PREFIX_MAX,
            b'B' | b'E' | b'C' => 2 * MAX_NAME + 8,
            _ => 0,
        };
        Some((u64::from(len - 4), want))
    }

    fn message(&mut self, h: &[u8], p: &[u8], cut: bool) -> Step {
        let s = &mut *self.s;
        if s.tls {
            return Step::Stop;
        }
        if s.untyped {
            if p.len() < 4 {
                return Step::Lost;
            }
            match be32(p) {
                SSL_REQUEST => s.push(Item::SslAnswer, None, self.out),
                GSSENC_REQUEST => s.push(Item::GssAnswer, None, self.out),
                CANCEL_REQUEST => {}
                code if code >> 16 == 3 => {
                    s.untyped = false;
                    s.push(Item::Startup, None, self.out);
                }
                _ => return Step::Lost,
            }
            return Step::Go;
        }
        match h[0] {
            b'Q' => {
                let text = match p.split_last() {
                    Some((&0, text)) if !cut => text,
                    _ => p,
                };
                s.push(Item::Query, Some(sql::verb(text)), self.out);
            }
            b'F' => s.push(Item::Query, Some(OTHER), self.out),
            b'P' => {
                if let Some((name, query)) = cstr(p) {
                    let verb = sql::verb(query);
                    if name.is_empty() {
                        s.unnamed_stmt = Some(verb);
                    } else if name.len() <= MAX_NAME {
                        sql::bounded_insert(&mut s.stmts, MAX_STATEMENTS, name.into(), verb);
                    }
                }
            }
            b'B' => {
                if let Some((portal, rest)) = cstr(p) {
                    let verb = match cstr(rest) {
                        Some((b"", _)) => s.unnamed_stmt,
                        Some((stmt, _)) => s.stmts.get(stmt).copied(),
                        None => None,
                    }
                    .unwrap_or(OTHER);
                    if portal.is_empty() {
                        s.unnamed_portal = Some(verb);
                    } else if portal.len() <= MAX_NAME {
                        sql::bounded_insert(&mut s.portals, MAX_PORTALS, portal.into(), verb);
                    }
                }
            }
            b'E' => {
                let verb = match cstr(p) {
                    Some((b"", _)) => s.unnamed_portal,
                    Some((portal, _)) => s.portals.get(portal).copied(),
                    None => None,
                };
                s.push(Item::Execute, Some(verb.unwrap_or(OTHER)), self.out);
            }
            b'S' => s.push(Item::Sync, None, self.out),
            b'C' => {
                if let Some((&kind, rest)) = p.split_first()
                    && let Some((name, _)) = cstr(rest)
                {
                    match (kind, name) {
                        (b'S', b"") => s.unnamed_stmt = None,
                        (b'S', name) => _ = s.stmts.remove(name),
                        (b'P', b"") => s.unnamed_portal = None,
                        (b'P', name) => _ = s.portals.remove(name),
                        _ => {}
                    }
                }
            }
            // Describe, Flush, Terminate, copy data, passwords.
            _ => {}
        }
        Step::Go
    }
}

struct Back<'a> {
    s: &'a mut State,
    out: &'a mut Output,
}

impl Framing for Back<'_> {
    fn header_len(&mut self) -> usize {
        match self.s.queue.front().map(|p| p.item) {
            Some(Item::SslAnswer | Item::GssAnswer) => 1,
            _ => 5,
        }
    }

    fn header(&mut self, h: &[u8]) -> Option<(u64, usize)> {
        if h.len() == 1 {
            return Some((0, 0));
        }
        let (t, len) = (h[0], be32(&h[1..]));
        if !backend_len_ok(t, len) {
            return None;
        }
        Some((u64::from(len - 4), if t == b'E' { 1024 } else { 0 }))
    }

    fn message(&mut self, h: &[u8], p: &[u8], _cut: bool) -> Step {
        let s = &mut *self.s;
        let out = &mut *self.out;
        let front = s.queue.front().map(|p| p.item);
        if h.len() == 1 {
            return match (front, h[0]) {
                (Some(Item::SslAnswer), b'S') | (Some(Item::GssAnswer), b'G') => Step::Stop,
                (_, b'N') => {
                    s.queue.pop_front();
                    Step::Go
                }
                _ => Step::Lost,
            };
        }
        match h[0] {
            b'E' => {
                let code = sqlstate(p);
                match front {
                    Some(Item::Query) => {
                        if let Some(q) = s.queue.front_mut()
                            && !q.error
                        {
                            q.error = true;
                            q.code = code;
                        }
                    }
                    Some(Item::Execute) => {
                        s.complete(true, code, out);
                        s.skip_to_sync = true;
                        s.drain(out);
                    }
                    Some(Item::Startup) => {
                        s.queue.pop_front();
                    }
                    _ => {}
                }
            }
            b'Z' => {
                while let Some(front) = s.queue.front_mut() {
                    match front.item {
                        Item::Execute => {
                            let error = s.skip_to_sync;
                            s.complete(error, None, out);
                        }
                        Item::Query => {
                            let (error, code) = (front.error, front.code.take());
                            s.complete(error, code, out);
                            break;
                        }
                        Item::Sync | Item::Startup | Item::SslAnswer | Item::GssAnswer => {
                            s.queue.pop_front();
                            break;
                        }
                    }
                }
                s.skip_to_sync = false;
                s.link.resp_outage = false;
            }
            b'C' | b'I' | b's' if front == Some(Item::Execute) => {
                s.complete(false, None, out);
                s.link.resp_outage = false;
            }
            b'W' => {
                // Copy both ways (replication): a stream with no end.
                if matches!(front, Some(Item::Query | Item::Execute)) {
                    s.complete(false, None, out);
                }
                return Step::Stop;
            }
            _ => {}
        }
        Step::Go
    }
}

impl State {
    fn push(&mut self, item: Item, request: Option<&'static str>, out: &mut Output) {
        let emit = request.is_some() && self.emitted < MAX_PENDING;
        if let Some(method) = request.filter(|_| emit) {
            out.messages.push(Message::request(method));
            self.emitted += 1;
        }
        let realign = self.link.mark(&self.queue);
        self.queue.push_back(Pending {
            item,
            emit,
            realign,
            error: false,
            code: None,
        });
        if item == Item::Execute {
            self.drain(out);
        }
    }

    /// After an error in an extended batch, its `Execute`s up to `Sync` are skipped by the
    /// server: each gets its (error) response now.
    fn drain(&mut self, out: &mut Output) {
        while self.skip_to_sync
            && let Some(p) = self.queue.front()
            && p.item == Item::Execute
            && !p.realign
        {
            self.complete(true, None, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, D, Rng, Script, dir_of, summary};
    use crate::{Counters, Exchange, Kind, Protocol};

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn startup() -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0database\0shop\0application_name\0psql\0\0");
        let mut v = (body.len() as u32 + 4).to_be_bytes().to_vec();
        v.extend(body);
        v
    }

    fn ssl_request() -> Vec<u8> {
        [8u32.to_be_bytes(), SSL_REQUEST.to_be_bytes()].concat()
    }

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        msg(b'R', &[&code.to_be_bytes()[..], extra].concat())
    }

    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }

    fn startup_reply() -> Vec<u8> {
        [
            auth(0, b""),
            msg(b'S', b"server_version\x0016.2\0"),
            msg(b'S', b"client_encoding\0UTF8\0"),
            msg(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]),
            ready(),
        ]
        .concat()
    }

    fn q(sql: &str) -> Vec<u8> {
        msg(b'Q', &[sql.as_bytes(), b"\0"].concat())
    }

    fn row_desc(cols: usize) -> Vec<u8> {
        let mut b = (cols as u16).to_be_bytes().to_vec();
        for c in 0..cols {
            b.extend_from_slice(format!("col{c}\0").as_bytes());
            b.extend_from_slice(&[
                0, 0, 0x40, 0, 0, 1, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
            ]);
        }
        msg(b'T', &b)
    }

    fn data_row(n: usize, fill: u8) -> Vec<u8> {
        let mut b = 1u16.to_be_bytes().to_vec();
        b.extend_from_slice(&(n as u32).to_be_bytes());
        b.extend(std::iter::repeat_n(fill, n));
        msg(b'D', &b)
    }

    fn complete_tag(tag: &str) -> Vec<u8> {
        msg(b'C', &[tag.as_bytes(), b"\0"].concat())
    }

    fn error(code: &str) -> Vec<u8> {
        msg(
            b'E',
            format!("SERROR\0VERROR\0C{code}\0Mrelation \"nope\" does not exist\0P15\0Fparse_relation.c\0L1392\0\0")
                .as_bytes(),
        )
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        msg(
            b'P',
            &[
                name.as_bytes(),
                b"\0",
                sql.as_bytes(),
                b"\0",
                &[0, 1, 0, 0, 0, 23],
            ]
            .concat(),
        )
    }

    fn bind(portal: &str, stmt: &str) -> Vec<u8> {
        msg(
            b'B',
            &[
                portal.as_bytes(),
                b"\0",
                stmt.as_bytes(),
                b"\0",
                &[0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2', 0, 0],
            ]
            .concat(),
        )
    }

    fn describe_portal(portal: &str) -> Vec<u8> {
        msg(b'D', &[b"P", portal.as_bytes(), b"\0"].concat())
    }

    fn execute(portal: &str) -> Vec<u8> {
        msg(b'E', &[portal.as_bytes(), b"\0", &[0, 0, 0, 0]].concat())
    }

    fn sync() -> Vec<u8> {
        msg(b'S', b"")
    }

    fn check_bounds(p: &PostgresParser) {
        assert!(p.req.held() <= crate::MAX_HELD);
        assert!(p.resp.held() <= crate::MAX_HELD);
        assert!(p.st.queue.len() <= MAX_QUEUE);
        assert!(p.st.stmts.len() <= MAX_STATEMENTS);
        assert!(p.st.portals.len() <= MAX_PORTALS);
        assert!(p.st.emitted <= MAX_PENDING);
    }

    fn run_parser(role: Role, script: &Script) -> (Vec<Message>, u64) {
        testing::run_parser(PostgresParser::new(role), role, script, check_bounds)
    }

    fn run_conn(role: Role, script: &Script) -> (Vec<Exchange>, Counters) {
        testing::run_conn(Protocol::Postgres, role, script)
    }

    /// A response's calls as a receiver reading with a big buffer sees them: each call
    /// starts 100 bytes before a message that follows a big one, 512 bytes of it copied.
    fn spread(rs: &[u8]) -> Vec<(Vec<u8>, u64)> {
        testing::spread(rs, |b| be32(&b[1..]) as usize + 1)
    }

    /// A whole session: startup, simple and extended queries, a failing statement.
    fn session() -> (Script, Vec<&'static str>) {
        let mut s: Script = vec![
            (D::C, startup(), 0),
            (D::S, auth(10, b"SCRAM-SHA-256\0\0"), 0),
            (
                D::C,
                msg(
                    b'p',
                    b"SCRAM-SHA-256\0\0\0\0\x20n,,n=,r=abcdefghijklmnopqrstuvwx",
                ),
                0,
            ),
            (D::S, auth(11, b"r=abc,s=salt,i=4096"), 0),
            (D::C, msg(b'p', b"c=biws,r=abc,p=proof"), 0),
            (D::S, [auth(12, b"v=verifier"), startup_reply()].concat(), 0),
            (D::C, q("SELECT * FROM items"), 0),
        ];
        let mut rs = row_desc(3);
        for k in 0..30 {
            rs.extend(data_row(1500, k as u8));
        }
        rs.extend(complete_tag("SELECT 30"));
        rs.extend(ready());
        s.extend(spread(&rs).into_iter().map(|(d, u)| (D::S, d, u)));
        // A failing statement.
        s.push((D::C, q("select * from nope"), 0));
        s.push((D::S, [error("42P01"), ready()].concat(), 0));
        // Extended: a named statement, then the unnamed one.
        s.push((
            D::C,
            [
                parse("s1", "UPDATE items SET n = $1"),
                bind("", "s1"),
                describe_portal(""),
                execute(""),
                sync(),
            ]
            .concat(),
            0,
        ));
        s.push((
            D::S,
            [
                msg(b'1', b""),
                msg(b'2', b""),
                msg(b'n', b""),
                complete_tag("UPDATE 1"),
                ready(),
            ]
            .concat(),
            0,
        ));
        s.push((
            D::C,
            [
                parse("", "insert into items values ($1)"),
                bind("", ""),
                execute(""),
                sync(),
            ]
            .concat(),
            0,
        ));
        s.push((
            D::S,
            [
                msg(b'1', b""),
                msg(b'2', b""),
                complete_tag("INSERT 0 1"),
                ready(),
            ]
            .concat(),
            0,
        ));
        // The named statement again, bound to a named portal, run in two steps.
        s.push((
            D::C,
            [bind("p1", "s1"), execute("p1"), execute("p1"), sync()].concat(),
            0,
        ));
        s.push((
            D::S,
            [
                msg(b'2', b""),
                msg(b's', b""),
                complete_tag("UPDATE 1"),
                ready(),
            ]
            .concat(),
            0,
        ));
        // A pipelined batch with an error in the middle.
        s.push((
            D::C,
            [
                parse("", "DELETE FROM a"),
                bind("", ""),
                execute(""),
                parse("", "DELETE FROM nope"),
                bind("", ""),
                execute(""),
                parse("", "SELECT 1"),
                bind("", ""),
                execute(""),
                sync(),
            ]
            .concat(),
            0,
        ));
        s.push((
            D::S,
            [
                msg(b'1', b""),
                msg(b'2', b""),
                complete_tag("DELETE 3"),
                error("42P01"),
                ready(),
            ]
            .concat(),
            0,
        ));
        // Two statements in one query: one request.
        s.push((D::C, q("BEGIN; UPDATE t SET a = 1"), 0));
        s.push((
            D::S,
            [
                complete_tag("BEGIN"),
                complete_tag("UPDATE 1"),
                msg(b'Z', b"T"),
            ]
            .concat(),
            0,
        ));
        // Empty query.
        s.push((D::C, q(""), 0));
        s.push((D::S, [msg(b'I', b""), ready()].concat(), 0));
        s.push((D::C, msg(b'X', b""), 0));
        let want = vec![
            "> SELECT",
            "< ok",
            "> SELECT",
            "< ERR 42P01",
            "> UPDATE",
            "< ok",
            "> INSERT",
            "< ok",
            "> UPDATE",
            "> UPDATE",
            "< ok",
            "< ok",
            "> DELETE",
            "> DELETE",
            "> SELECT",
            "< ok",
            "< ERR 42P01",
            "< ERR ",
            "> BEGIN",
            "< ok",
            "> OTHER",
            "< ok",
        ];
        (s, want)
    }

    #[test]
    fn postgres_session_both_roles() {
        let (script, want) = session();
        for role in [Role::Client, Role::Server] {
            let (ms, malformed) = run_parser(role, &script);
            assert_eq!(summary(&ms), want, "{role:?}");
            assert_eq!(malformed, 0);
        }
    }

    #[test]
    fn postgres_session_through_conn() {
        let (script, _) = session();
        let (done, c) = run_conn(Role::Client, &script);
        assert_eq!(c, Counters::default());
        let got: Vec<_> = done
            .iter()
            .map(|e| (e.method, e.error, e.code.as_deref(), e.latency_ns))
            .collect();
        let failing = script
            .iter()
            .position(|c| c.1 == q("select * from nope"))
            .unwrap() as u64;
        // The SELECT at call 7, its last response call just before the failing one.
        assert_eq!(got[0], ("SELECT", false, None, (failing - 7) * 1000));
        assert_eq!(got[1], ("SELECT", true, Some("42P01"), 1000));
        assert_eq!(got[2], ("UPDATE", false, None, 1000));
        assert_eq!(got[3], ("INSERT", false, None, 1000));
        assert_eq!(got[4], ("UPDATE", false, None, 1000));
        assert_eq!(got[5], ("UPDATE", false, None, 1000));
        assert_eq!(got[6], ("DELETE", false, None, 1000));
        assert_eq!(got[7], ("DELETE", true, Some("42P01"), 1000));
        assert_eq!(got[8], ("SELECT", true, None, 1000));
        assert_eq!(got[9], ("BEGIN", false, None, 1000));
        assert_eq!(got[10], (OTHER, false, None, 1000));
        assert_eq!(got.len(), 11);
        assert!(
            done.iter()
                .all(|e| e.protocol == Protocol::Postgres && e.role == Role::Client)
        );
    }

    #[test]
    fn postgres_split_at_every_byte() {
        let (script, want) = session();
        for k in 1..script.len() {
            if script[k].2 != 0 {
                continue;
            }
            for at in 0..=script[k].1.len() {
                let mut s = script.clone();
                let (d, data, _) = s.remove(k);
                s.insert(k, (d, data[at..].to_vec(), 0));
                s.insert(k, (d, data[..at].to_vec(), 0));
                let (ms, malformed) = run_parser(Role::Client, &s);
                assert_eq!(summary(&ms), want, "call {k} split at {at}");
                assert_eq!(malformed, 0);
            }
        }
        let mut s = Script::new();
        for (k, (d, data, unseen)) in script.iter().enumerate() {
            if *unseen != 0 || k == 0 {
                s.push((*d, data.clone(), *unseen));
                continue;
            }
            for b in data {
                s.push((*d, vec![*b], 0));
            }
        }
        assert_eq!(summary(&run_parser(Role::Client, &s).0), want);
    }

    #[test]
    fn postgres_ssl_request() {
        // Accepted: TLS follows, nothing more.
        let s: Script = vec![
            (D::C, ssl_request(), 0),
            (D::S, b"S".to_vec(), 0),
            (
                D::C,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
                0,
            ),
            (D::C, q("SELECT 1"), 0),
            (D::S, [complete_tag("SELECT 1"), ready()].concat(), 0),
        ];
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert!(ms.is_empty());
        assert_eq!(malformed, 0);
        // The client hello before the answer was seen.
        let s: Script = vec![
            (D::C, ssl_request(), 0),
            (D::C, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc".to_vec(), 0),
        ];
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert!(ms.is_empty());
        assert_eq!(malformed, 0);
        // Refused: startup goes on in clear.
        let mut s: Script = vec![
            (D::C, ssl_request(), 0),
            (D::S, b"N".to_vec(), 0),
            (D::C, startup(), 0),
            (D::S, auth(3, b""), 0),
        ];
        s.push((D::C, msg(b'p', b"secret\0"), 0));
        s.push((D::S, startup_reply(), 0));
        s.push((D::C, q("show server_version"), 0));
        s.push((
            D::S,
            [
                row_desc(1),
                data_row(4, b'1'),
                complete_tag("SHOW"),
                ready(),
            ]
            .concat(),
            0,
        ));
        let (ms, malformed) = run_parser(Role::Server, &s);
        assert_eq!(summary(&ms), ["> SHOW", "< ok"]);
        assert_eq!(malformed, 0);
        let (done, c) = run_conn(Role::Server, &s);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].latency_ns, 1000);
        assert_eq!(c, Counters::default());
        // A failed login: the startup ends at the error.
        let s: Script = vec![
            (D::C, startup(), 0),
            (D::S, error("28P01"), 0),
            (D::C, q("SELECT 1"), 0),
            (D::S, [complete_tag("SELECT 1"), ready()].concat(), 0),
        ];
        assert_eq!(
            summary(&run_parser(Role::Client, &s).0),
            ["> SELECT", "< ok"]
        );
        // Cancel request: nothing.
        let cancel = [
            16u32.to_be_bytes(),
            CANCEL_REQUEST.to_be_bytes(),
            [0, 0, 1, 2],
            [3, 4, 5, 6],
        ]
        .concat();
        assert_eq!(detect(Dir::Send, &cancel), Some(Role::Client));
        assert!(
            run_parser(Role::Client, &vec![(D::C, cancel, 0)])
                .0
                .is_empty()
        );
    }

    #[test]
    fn postgres_copy_in_and_out() {
        let mut s: Script = vec![(D::C, startup(), 0), (D::S, startup_reply(), 0)];
        s.push((D::C, q("COPY t FROM STDIN"), 0));
        s.push((D::S, msg(b'G', &[0, 0, 1, 0, 0]), 0));
        let big = msg(b'd', &vec![b'x'; 100_000]);
        s.push((D::C, big[..512].to_vec(), (big.len() - 512) as u64));
        s.push((D::C, [msg(b'd', b"1\t2\n"), msg(b'c', b"")].concat(), 0));
        s.push((D::S, [complete_tag("COPY 2"), ready()].concat(), 0));
        s.push((D::C, q("copy t to stdout"), 0));
        let mut out = msg(b'H', &[0, 0, 1, 0, 0]);
        for _ in 0..3 {
            out.extend(msg(b'd', &vec![b'y'; 3000]));
        }
        out.extend(msg(b'c', b""));
        out.extend(complete_tag("COPY 3"));
        out.extend(ready());
        s.extend(spread(&out).into_iter().map(|(d, u)| (D::S, d, u)));
        s.push((D::C, q("select 1"), 0));
        s.push((D::S, [complete_tag("SELECT 1"), ready()].concat(), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(
            summary(&ms),
            ["> COPY", "< ok", "> COPY", "< ok", "> SELECT", "< ok"]
        );
        assert_eq!(malformed, 0);
    }

    #[test]
    fn postgres_mid_stream_and_lost_framing() {
        // Met mid-stream at an extended batch for a statement not seen: OTHER.
        let s: Script = vec![
            (
                D::C,
                [bind("", "stmtcache_1"), execute(""), sync()].concat(),
                0,
            ),
            (
                D::S,
                [msg(b'2', b""), complete_tag("SELECT 1"), ready()].concat(),
                0,
            ),
            (D::C, q("UPDATE t SET a = 1"), 0),
            (D::S, [complete_tag("UPDATE 1"), ready()].concat(), 0),
        ];
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(summary(&ms), ["> OTHER", "< ok", "> UPDATE", "< ok"]);
        assert_eq!(malformed, 0);
        let (done, c) = run_conn(Role::Client, &s);
        assert_eq!(done.len(), 2);
        assert_eq!(c, Counters::default());

        // Small rows: headers among unseen bytes. The query gets its response at once.
        let mut s: Script = vec![
            (D::C, startup(), 0),
            (D::S, startup_reply(), 0),
            (D::C, q("select * from t"), 0),
        ];
        let mut rs = row_desc(1);
        for k in 0..400 {
            rs.extend(data_row(10, k as u8));
        }
        rs.extend(complete_tag("SELECT 400"));
        rs.extend(ready());
        s.push((D::S, rs[..512].to_vec(), (rs.len() - 512) as u64));
        s.push((D::C, q("delete from t"), 0));
        s.push((D::S, [complete_tag("DELETE 400"), ready()].concat(), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(summary(&ms), ["> SELECT", "< ok", "> DELETE", "< ok"]);
        assert_eq!(malformed, 1);
        let (done, c) = run_conn(Role::Client, &s);
        assert_eq!(done.len(), 2);
        assert_eq!((c.malformed, c.gaps), (0, 1));
        assert_eq!(c.unmatched_responses, 0);

        // Requests lost: a long pipelined batch cut by the copy.
        let mut s: Script = vec![(D::C, startup(), 0), (D::S, startup_reply(), 0)];
        let mut batch = Vec::new();
        for k in 0..40 {
            batch.extend(
                [
                    parse("", &format!("insert into t values ({k})")),
                    bind("", ""),
                    execute(""),
                ]
                .concat(),
            );
        }
        batch.extend(sync());
        s.push((D::C, batch[..512].to_vec(), (batch.len() - 512) as u64));
        let mut answers = Vec::new();
        for _ in 0..40 {
            answers.extend([msg(b'1', b""), msg(b'2', b""), complete_tag("INSERT 0 1")].concat());
        }
        answers.extend(ready());
        s.push((D::S, answers, 0));
        s.push((D::C, b"\x00\x01garbage".to_vec(), 0));
        s.push((D::C, q("select 2"), 0));
        s.push((D::S, [error("42703"), ready()].concat(), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        let sm = summary(&ms);
        assert_eq!(&sm[sm.len() - 2..], ["> SELECT", "< ERR 42703"]);
        assert_eq!(malformed, 1);
        let reqs = ms.iter().filter(|m| m.kind == Kind::Request).count();
        assert_eq!(reqs * 2, ms.len());
        assert!(reqs > 3);
    }

    #[test]
    fn postgres_statement_names_bounded_and_closed() {
        let mut s: Script = vec![(D::C, startup(), 0), (D::S, startup_reply(), 0)];
        for k in 0..3000 {
            s.push((
                D::C,
                [parse(&format!("s{k}"), "SELECT 1"), sync()].concat(),
                0,
            ));
            s.push((D::S, [msg(b'1', b""), ready()].concat(), 0));
        }
        // Closed: executing it again is OTHER.
        s.push((
            D::C,
            [
                parse("x", "DELETE FROM t"),
                bind("", "x"),
                execute(""),
                sync(),
            ]
            .concat(),
            0,
        ));
        s.push((
            D::S,
            [
                msg(b'1', b""),
                msg(b'2', b""),
                complete_tag("DELETE 0"),
                ready(),
            ]
            .concat(),
            0,
        ));
        s.push((
            D::C,
            [msg(b'C', b"Sx\0"), bind("", "x"), execute(""), sync()].concat(),
            0,
        ));
        s.push((D::S, [msg(b'3', b""), error("26000"), ready()].concat(), 0));
        let mut p = PostgresParser::new(Role::Client);
        let mut out = Output::default();
        for (d, data, unseen) in &s {
            p.feed(dir_of(*d, Role::Client), data, *unseen, &mut out);
            check_bounds(&p);
        }
        assert_eq!(
            summary(&out.messages),
            ["> DELETE", "< ok", "> OTHER", "< ERR 26000"]
        );
    }

    #[test]
    fn postgres_detect() {
        assert_eq!(detect(Dir::Send, &startup()), Some(Role::Client));
        assert_eq!(detect(Dir::Recv, &startup()), Some(Role::Server));
        assert_eq!(detect(Dir::Send, &ssl_request()), Some(Role::Client));
        assert_eq!(
            detect(
                Dir::Recv,
                &[8u32.to_be_bytes(), GSSENC_REQUEST.to_be_bytes()].concat()
            ),
            Some(Role::Server)
        );
        assert_eq!(detect(Dir::Send, &q("SELECT 1")), Some(Role::Client));
        assert_eq!(detect(Dir::Recv, &q("select 1")), Some(Role::Server));
        let ext = [
            parse("", "SELECT $1"),
            bind("", ""),
            describe_portal(""),
            execute(""),
            sync(),
        ]
        .concat();
        assert_eq!(detect(Dir::Send, &ext), Some(Role::Client));
        let cached = [bind("", "s7"), execute(""), sync()].concat();
        assert_eq!(detect(Dir::Send, &cached), Some(Role::Client));
        let long = q(&format!("SELECT '{}'", "x".repeat(3000)));
        assert_eq!(detect(Dir::Send, &long[..512]), Some(Role::Client));

        let negatives: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"+OK\r\n",
            b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03",
            b"\x0f\x00\x00\x00\x03SELECT 1 FROM t",
            b"\x51\x00\x00\x00\x03SELECT 1 FROM t",
            b"Q\x00\x00\x00\x0dNOT SQL!\x00",
            b"Q\x00\x00\x00\x0dSELECT 1",
            b"Q\x00\x00\x00\x0dSELECT 1\x00trailing",
            b"S\x00\x00\x00\x04",
            b"X\x00\x00\x00\x04",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f\x00",
            b"",
            b"Q",
        ];
        for n in negatives {
            assert_eq!(detect(Dir::Send, n), None, "{n:?}");
            assert_eq!(detect(Dir::Recv, n), None, "{n:?}");
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut buf = [0u8; 64];
            rng.fill(&mut buf);
            let n = (rng.0 >> 40) as usize % 65;
            assert_eq!(detect(Dir::Send, &buf[..n]), None);
        }
        assert_eq!(
            sqlstate(b"SERROR\0C42P01\0Mx\0\0").as_deref(),
            Some("42P01")
        );
        assert_eq!(sqlstate(b"SERROR\0C42P"), None);
        assert_eq!(sqlstate(b"SERROR\0Mx\0\0"), None);
    }

    #[test]
    fn postgres_fuzz_no_panic_bounded() {
        let (base, _) = session();
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for it in 0..20_000 {
            let skip_startup = it % 5 == 0;
            let role = if it % 3 == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let mut p = PostgresParser::new(role);
            let script = if skip_startup { &base[6..] } else { &base[..] };
            let (requests, responses) =
                testing::fuzz_script(&mut rng, &mut p, role, script, check_bounds);
            assert!(requests - responses <= MAX_QUEUE);
        }
    }

    #[test]
    fn postgres_random_streams_never_panic() {
        let types = b"QPBESDCHXFdcfpRKSZTDCENI123nts";
        testing::random_frames(
            &mut Rng(0xdead_beef_cafe_f00d),
            5_000,
            || PostgresParser::new(Role::Client),
            &q("SELECT 1"),
            |rng, len, buf| {
                buf.push(types[rng.below(types.len())]);
                buf.extend_from_slice(&(len as u32 + 4).to_be_bytes());
            },
            &[0, b'C', b'4', b'S', b'P'],
            check_bounds,
        );
    }
}
