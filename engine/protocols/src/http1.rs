//! HTTP/1.0 and HTTP/1.1.
//!
//! Each direction is its own byte stream, parsed on its own: requests travel in the
//! role's request direction, responses the other way. A message is handed out when its
//! header block ends (a response's latency is the time to its first byte); its body is then
//! skipped by `Content-Length` or by the chunked coding's sizes, bytes never copied
//! (`unseen`) included, so that the next message is found where it starts.
//!
//! Framing (RFC 9112 §6):
//! - `Transfer-Encoding` whose last coding is `chunked` wins over `Content-Length`; any other
//!   transfer coding makes a response's body run to the close, and a request malformed.
//! - A `Content-Length` list of equal values (`5, 5`) is one length; differing values, in
//!   one field or in several, are malformed.
//! - Responses to `HEAD`, `1xx`, `204` and `304` have no body. A response with neither a
//!   length nor chunked runs until the close: that direction's later bytes are its body.
//!   A request with neither has no body.
//! - Interim `1xx` responses (`100 Continue`, `103 Early Hints`) are not handed out: the
//!   final response is. `101 Switching Protocols`, or a `2xx` to `CONNECT`, is handed out
//!   and ends HTTP/1 on the connection: both directions are then ignored.
//! - Header names are case-insensitive; obs-fold lines continue the previous field (they
//!   count for `Transfer-Encoding`); lines with no colon are ignored; blank lines before a
//!   message are skipped.
//!
//! Losing track, and finding it again:
//! - A header block is held across calls, [`MAX_HELD`] bytes of it at most (the partial
//!   line only is copied). One whose end was not seen — the rest of its call unseen past
//!   the snaplen, or the block longer than [`MAX_HELD`] — is handed out from what was seen
//!   (the start line, even cut short; `Host` if it came before the cut) and taken to end
//!   with that call: the next message is looked for at the start of a later call.
//! - What cannot be parsed (a start line that is not one, a bad chunk size, conflicting
//!   lengths) counts once in [`Output::malformed`]; the rest of that call and the calls
//!   after it are skipped until a call starts with a start line: as below, or a request
//!   line cut by the snaplen (a known method, then a target starting with `/`).
//! - Unseen bytes past a known body end (or past a message's start) are the next
//!   message(s), out of sight: the same resynchronisation, not counted as malformed.
//! - **Bodies that never come (the sendfile heuristic).** Servers such as nginx send a
//!   file's body with sendfile(2), which is not a socket call that ksight sees, so a
//!   `Content-Length` or chunked body may never appear. Whenever a body is still expected
//!   and a call *starts* with a complete, valid start line — a status line
//!   `HTTP/1.[01] DDD` (100–599) for responses, a request line with a known method, a
//!   target without spaces and `HTTP/1.[01]` for requests, ended by its LF within the
//!   call — the rest of the body is
//!   abandoned and the call parsed as a new message. A body that runs to the close is
//!   abandoned so only while a request is waiting for its response. (A body whose bytes at
//!   a call boundary happen to be such a line would be cut short: rare, and it costs one
//!   message.)
//!
//! Methods come from a fixed set ([`OTHER`] beyond it); targets become routes through
//! [`route::normalize`] (decoded lossily); `Host` is trimmed, lowercased and cut to 255
//! bytes.

use crate::{Dir, MAX_HELD, MAX_PENDING, Message, OTHER, Output, Parser, Role, route};
use std::collections::VecDeque;

/// Methods named as themselves; any other token is [`OTHER`].
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    // WebDAV
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
];
/// Longest method token taken for one.
const MAX_METHOD: usize = 20;
/// Longest `Host` kept, in bytes.
const MAX_HOST: usize = 255;
/// Longest chunk-size line (with its extensions).
const MAX_CHUNK_LINE: u32 = 4096;
/// A held partial line with more capacity than this is freed once used.
const KEEP_CAPACITY: usize = 1024;

/// Whether `data`, the first payload seen on a connection in direction `dir`, is this
/// protocol; if so, which end the socket is.
///
/// A request line (known method, target, `HTTP/1.0` or `HTTP/1.1`; or, when the call ends
/// inside the line, a known method and a target starting with `/`) is sent by the client;
/// a status line `HTTP/1.[01] DDD ` (a connection met mid-stream) by the server.
pub fn detect(dir: Dir, data: &[u8]) -> Option<Role> {
    let (sender, receiver) = if request_start(data, true) {
        (Role::Client, Role::Server)
    } else if status_start(data) {
        (Role::Server, Role::Client)
    } else {
        return None;
    };
    Some(match dir {
        Dir::Send => sender,
        Dir::Recv => receiver,
    })
}

pub struct Http1Parser {
    role: Role,
    req: Side,
    resp: Side,
    shared: Shared,
}

impl Http1Parser {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            req: Side::new(),
            resp: Side::new(),
            shared: Shared {
                waiting: VecDeque::new(),
                scratch: String::new(),
                opaque: false,
            },
        }
    }
}

impl Parser for Http1Parser {
    fn feed(&mut self, dir: Dir, data: &[u8], unseen: u64, out: &mut Output) {
        let Self {
            role,
            req,
            resp,
            shared,
        } = self;
        if shared.opaque {
            return;
        }
        if dir == role.request_dir() {
            req.feed(true, data, unseen, shared, out);
        } else {
            resp.feed(false, data, unseen, shared, out);
        }
    }
}

/// What a response's framing needs to know of its request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ReqKind {
    #[default]
    Plain,
    Head,
    Connect,
}

/// What both directions share.
struct Shared {
    /// Requests handed out and not yet answered, oldest first ([`MAX_PENDING`] at most).
    waiting: VecDeque<ReqKind>,
    /// HTTP/1 ended (protocol switched, tunnel): nothing more is parsed.
    opaque: bool,
    /// Where routes are built.
    scratch: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// In a header block (`Side::head` has what it said so far).
    Head,
    /// Body bytes still to skip.
    Body(u64),
    /// A chunk-size line: the size so far, hex digits seen, in the extensions (or past
    /// the size), bytes of the line.
    ChunkSize {
        size: u64,
        digits: u8,
        ext: bool,
        len: u32,
    },
    /// Chunk data still to skip.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields: bytes of the current line (CR aside) and of all of them.
    Trailers { line: u32, total: u32 },
    /// A response body that runs to the close.
    UntilClose,
    /// Lost: skip calls until one starts with a start line.
    Resync,
}

const CHUNK_SIZE: State = State::ChunkSize {
    size: 0,
    digits: 0,
    ext: false,
    len: 0,
};

/// One direction's stream.
struct Side {
    state: State,
    /// The partial line of a header block that a call ended in.
    held: Vec<u8>,
    head: Head,
}

/// What a header block said so far.
#[derive(Default)]
struct Head {
    /// The start line was parsed.
    started: bool,
    method: &'static str,
    kind: ReqKind,
    path: Option<Box<str>>,
    status: u16,
    host: Option<Box<str>>,
    length: Option<u64>,
    bad_length: bool,
    /// `Transfer-Encoding` present; `chunked` its last coding.
    te: bool,
    chunked: bool,
    /// The last field was `Transfer-Encoding` (for obs-fold).
    in_te: bool,
    /// Bytes of the block so far.
    size: usize,
}

enum Line {
    More,
    End,
    Bad,
}

impl Side {
    fn new() -> Self {
        Self {
            state: State::Idle,
            held: Vec::new(),
            head: Head::default(),
        }
    }

    /// One call's bytes.
    fn feed(&mut self, req: bool, data: &[u8], unseen: u64, sh: &mut Shared, out: &mut Output) {
        if !data.is_empty() {
            let in_body = match self.state {
                State::Idle | State::Head => false,
                State::UntilClose => !sh.waiting.is_empty(),
                _ => true,
            };
            // Resynchronisation, and the sendfile heuristic (see the module's doc).
            if in_body && message_start(data, unseen, req) {
                self.state = State::Idle;
            }
        }
        if self.state == State::Resync {
            return;
        }
        let mut pos = 0;
        while pos < data.len() {
            if sh.opaque {
                return;
            }
            match &mut self.state {
                State::Idle => match data[pos..].iter().position(|&b| b != b'\r' && b != b'\n') {
                    Some(i) => {
                        pos += i;
                        self.state = State::Head;
                        self.head = Head::default();
                    }
                    None => pos = data.len(),
                },
                State::Head => pos = self.head_bytes(req, data, pos, sh, out),
                State::Body(n) => {
                    let k = (*n).min((data.len() - pos) as u64);
                    pos += k as usize;
                    *n -= k;
                    if *n == 0 {
                        self.state = State::Idle;
                    }
                }
                State::ChunkData(n) => {
                    let k = (*n).min((data.len() - pos) as u64);
                    pos += k as usize;
                    *n -= k;
                    if *n == 0 {
                        self.state = State::ChunkEnd;
                    }
                }
                State::ChunkSize { .. } | State::ChunkEnd | State::Trailers { .. } => {
                    pos = self.chunk_bytes(data, pos, out)
                }
                State::UntilClose | State::Resync => pos = data.len(),
            }
        }
        if unseen > 0 && !sh.opaque {
            self.skip_unseen(req, unseen, sh, out);
        }
    }

    /// Bytes the call moved past its copy.
    fn skip_unseen(&mut self, req: bool, unseen: u64, sh: &mut Shared, out: &mut Output) {
        self.state = match self.state {
            State::Head => return self.give_up(req, true, sh, out),
            State::Body(n) if unseen < n => State::Body(n - unseen),
            State::Body(n) if unseen == n => State::Idle,
            State::ChunkData(n) if unseen < n => State::ChunkData(n - unseen),
            State::ChunkData(n) if unseen == n => State::ChunkEnd,
            State::UntilClose => State::UntilClose,
            // The start of a message, a chunk-size line or a trailer out of sight.
            _ => State::Resync,
        };
    }

    /// Header-block bytes from `pos`, one line at a time; where the block's state ends.
    fn head_bytes(
        &mut self,
        req: bool,
        data: &[u8],
        mut pos: usize,
        sh: &mut Shared,
        out: &mut Output,
    ) -> usize {
        loop {
            let rest = &data[pos..];
            let Some(i) = find_byte(rest, b'\n') else {
                if self.head.size + rest.len() > MAX_HELD {
                    self.give_up(req, false, sh, out);
                    return data.len();
                }
                self.head.size += rest.len();
                if !self.head.started && !start_prefix(&self.held, rest, req) {
                    self.bad(out);
                    return data.len();
                }
                hold(&mut self.held, rest);
                return data.len();
            };
            if self.head.size + i + 1 > MAX_HELD {
                if !self.head.started {
                    let room = MAX_HELD - self.held.len();
                    hold(&mut self.held, &rest[..i.min(room)]);
                }
                self.give_up(req, false, sh, out);
                return data.len();
            }
            self.head.size += i + 1;
            let line = if self.held.is_empty() {
                self.head.line(req, &rest[..i], &mut sh.scratch)
            } else {
                hold(&mut self.held, &rest[..i]);
                let held = std::mem::take(&mut self.held);
                let line = self.head.line(req, &held, &mut sh.scratch);
                self.held = reuse(held);
                line
            };
            pos += i + 1;
            match line {
                Line::More => {}
                Line::End => {
                    self.finish(req, true, sh, out);
                    return pos;
                }
                Line::Bad => {
                    self.bad(out);
                    return data.len();
                }
            }
        }
    }

    /// The header block will not be seen to its end: hand out what its start line said
    /// (`truncated`: the call's rest was unseen; otherwise it outgrew [`MAX_HELD`]).
    fn give_up(&mut self, req: bool, truncated: bool, sh: &mut Shared, out: &mut Output) {
        if !self.head.started {
            let line = self.held.strip_suffix(b"\r").unwrap_or(&self.held);
            let parsed = if req {
                partial_request_line(line).map(|(method, kind, target)| {
                    self.head.method = method;
                    self.head.kind = kind;
                    self.head.path = Some(path_of(target, &mut sh.scratch));
                })
            } else {
                partial_status_line(line).map(|status| self.head.status = status)
            };
            if parsed.is_none() {
                if !truncated {
                    out.malformed += 1;
                }
                self.state = State::Resync;
                self.head = Head::default();
                self.held = reuse(std::mem::take(&mut self.held));
                return;
            }
            self.head.started = true;
        }
        self.held = reuse(std::mem::take(&mut self.held));
        self.finish(req, false, sh, out);
    }

    /// Unparseable: counted once, skipped to a call that starts a message.
    fn bad(&mut self, out: &mut Output) {
        out.malformed += 1;
        self.state = State::Resync;
        self.head = Head::default();
        self.held = reuse(std::mem::take(&mut self.held));
    }

    /// A header block ended (`complete`) or was given up: its message out, and what follows.
    fn finish(&mut self, req: bool, complete: bool, sh: &mut Shared, out: &mut Output) {
        let h = std::mem::take(&mut self.head);
        let length = |out: &mut Output, none: State| {
            if h.bad_length {
                out.malformed += 1;
                return State::Resync;
            }
            match h.length {
                None => none,
                Some(0) => State::Idle,
                Some(n) => State::Body(n),
            }
        };
        self.state = if req {
            let mut m = Message::request(h.method);
            m.path = h.path;
            m.host = h.host;
            out.messages.push(m);
            if sh.waiting.len() >= MAX_PENDING {
                sh.waiting.pop_front();
            }
            sh.waiting.push_back(h.kind);
            if !complete {
                State::Resync
            } else if h.te {
                if h.chunked {
                    CHUNK_SIZE
                } else {
                    out.malformed += 1;
                    State::Resync
                }
            } else {
                length(out, State::Idle)
            }
        } else if h.status < 200 && h.status != 101 {
            // Interim: the final response follows.
            if complete { State::Idle } else { State::Resync }
        } else {
            let kind = sh.waiting.pop_front().unwrap_or_default();
            out.messages
                .push(Message::response(h.status, h.status >= 500));
            if h.status == 101 || (kind == ReqKind::Connect && (200..300).contains(&h.status)) {
                sh.opaque = true;
                State::Resync
            } else if !complete {
                State::Resync
            } else if kind == ReqKind::Head || h.status == 204 || h.status == 304 {
                State::Idle
            } else if h.te {
                if h.chunked {
                    CHUNK_SIZE
                } else {
                    State::UntilClose
                }
            } else {
                length(out, State::UntilClose)
            }
        };
    }

    /// Chunk-size lines, the CRLF after chunk data, trailers; where their state ends.
    fn chunk_bytes(&mut self, data: &[u8], mut pos: usize, out: &mut Output) -> usize {
        let mut next = None;
        let mut bad = false;
        match &mut self.state {
            State::ChunkSize {
                size,
                digits,
                ext,
                len,
            } => {
                while pos < data.len() {
                    let b = data[pos];
                    pos += 1;
                    *len += 1;
                    if b == b'\n' {
                        if *digits == 0 {
                            bad = true;
                        } else if *size == 0 {
                            next = Some(State::Trailers { line: 0, total: 0 });
                        } else {
                            next = Some(State::ChunkData(*size));
                        }
                        break;
                    }
                    if *len > MAX_CHUNK_LINE {
                        bad = true;
                        break;
                    }
                    if *ext {
                        continue;
                    }
                    match hex_value(b) {
                        Some(v) if *size >> 60 == 0 => {
                            *size = *size << 4 | v;
                            *digits = digits.saturating_add(1);
                        }
                        Some(_) => {
                            bad = true;
                            break;
                        }
                        // Extensions, whitespace before them, the CR.
                        None if matches!(b, b';' | b' ' | b'\t' | b'\r') && *digits > 0 => {
                            *ext = true
                        }
                        None => {
                            bad = true;
                            break;
                        }
                    }
                }
            }
            State::ChunkEnd => {
                while pos < data.len() {
                    let b = data[pos];
                    pos += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => {
                            next = Some(CHUNK_SIZE);
                            break;
                        }
                        _ => {
                            bad = true;
                            break;
                        }
                    }
                }
            }
            State::Trailers { line, total } => {
                while pos < data.len() {
                    let b = data[pos];
                    pos += 1;
                    *total += 1;
                    match b {
                        b'\n' if *line == 0 => {
                            next = Some(State::Idle);
                            break;
                        }
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                    if *total as usize > MAX_HELD {
                        bad = true;
                        break;
                    }
                }
            }
            _ => return pos,
        }
        if bad {
            self.bad(out);
            return data.len();
        }
        if let Some(next) = next {
            self.state = next;
        }
        pos
    }
}

impl Head {
    /// One line of the block, without its LF.
    fn line(&mut self, req: bool, line: &[u8], scratch: &mut String) -> Line {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !self.started {
            self.started = true;
            if req {
                let Some((method, kind, target)) = request_line(line) else {
                    return Line::Bad;
                };
                self.method = method;
                self.kind = kind;
                self.path = Some(path_of(target, scratch));
            } else {
                let Some(status) = status_line(line) else {
                    return Line::Bad;
                };
                self.status = status;
            }
            return Line::More;
        }
        let Some(&first) = line.first() else {
            return Line::End;
        };
        if first == b' ' || first == b'\t' {
            // obs-fold: more of the previous field's value.
            if self.in_te {
                self.transfer_coding(line);
            }
            return Line::More;
        }
        self.in_te = false;
        // Only `Host`, `Content-Length` and `Transfer-Encoding` matter.
        if !matches!(first | 0x20, b'h' | b'c' | b't') {
            return Line::More;
        }
        let Some(colon) = find_byte(line, b':') else {
            return Line::More;
        };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        match name.len() {
            4 if self.host.is_none() && name.eq_ignore_ascii_case(b"host") => {
                self.host = host_of(value)
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => self.content_length(value),
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.in_te = true;
                self.transfer_coding(value);
            }
            _ => {}
        }
        Line::More
    }

    /// `Content-Length`: digits, or a list of equal ones; any other value, or one that
    /// differs from an earlier field's, is malformed.
    fn content_length(&mut self, value: &[u8]) {
        for part in value.split(|&b| b == b',') {
            let part = trim(part);
            let n = if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                None
            } else {
                Some(part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
            };
            match (n, self.length) {
                (None, _) => self.bad_length = true,
                (Some(n), Some(m)) if n != m => self.bad_length = true,
                (Some(n), _) => self.length = Some(n),
            }
        }
    }

    /// `Transfer-Encoding` codings (or a folded continuation): the last one decides.
    fn transfer_coding(&mut self, value: &[u8]) {
        for coding in value.split(|&b| b == b',') {
            let coding = coding.split(|&b| b == b';').next().unwrap_or_default();
            let coding = trim(coding);
            if !coding.is_empty() {
                self.te = true;
                self.chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        }
    }
}

/// A request line: the method's name, its kind, the target.
fn request_line(line: &[u8]) -> Option<(&'static str, ReqKind, &[u8])> {
    let sp1 = find_byte(line, b' ')?;
    let (method, kind) = method_of(&line[..sp1])?;
    // A target with raw spaces (broken clients) runs to the last space.
    let sp2 = line.iter().rposition(|&b| b == b' ')?;
    if sp2 <= sp1 || !version(&line[sp2 + 1..]) {
        return None;
    }
    let target = trim(&line[sp1 + 1..sp2]);
    if target.is_empty() || target.iter().any(|&b| is_control(b)) {
        return None;
    }
    Some((method, kind, target))
}

/// The start of a request line whose end was not seen: method and target so far.
fn partial_request_line(line: &[u8]) -> Option<(&'static str, ReqKind, &[u8])> {
    let sp1 = find_byte(line, b' ')?;
    let (method, kind) = method_of(&line[..sp1])?;
    let target = &line[sp1 + 1..];
    let target = &target[..find_byte(target, b' ').unwrap_or(target.len())];
    (!target.is_empty() && !target.iter().any(|&b| is_control(b))).then_some((method, kind, target))
}

/// A status line's status: `HTTP/1.x DDD[ reason]`.
fn status_line(line: &[u8]) -> Option<u16> {
    let status = partial_status_line(line)?;
    if line.len() > 12
        && (line[12] != b' ' || line[13..].iter().any(|&b| is_control(b) && b != b'\t'))
    {
        return None;
    }
    Some(status)
}

/// The status of a status line that may be cut after its code.
fn partial_status_line(line: &[u8]) -> Option<u16> {
    if line.len() < 12 || !version(&line[..8]) || line[8] != b' ' {
        return None;
    }
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return None;
    }
    Some(code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0')))
}

fn version(v: &[u8]) -> bool {
    v.len() == 8 && v.starts_with(b"HTTP/1.") && matches!(v[7], b'0' | b'1')
}

/// A method token: uppercase letters, `-`, `_`.
fn method_token(tok: &[u8]) -> bool {
    !tok.is_empty()
        && tok.len() <= MAX_METHOD
        && tok
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

fn method_of(tok: &[u8]) -> Option<(&'static str, ReqKind)> {
    if !method_token(tok) {
        return None;
    }
    let name = METHODS
        .iter()
        .copied()
        .find(|m| m.as_bytes() == tok)
        .unwrap_or(OTHER);
    let kind = match name {
        "HEAD" => ReqKind::Head,
        "CONNECT" => ReqKind::Connect,
        _ => ReqKind::Plain,
    };
    Some((name, kind))
}

/// Whether the first line so far (`held` then `more`, no LF yet) can still be a start line.
fn start_prefix(held: &[u8], more: &[u8], req: bool) -> bool {
    // The first bytes decide (a method token and its space; `HTTP/1.x DDD`).
    let mut first = [0u8; MAX_METHOD + 4];
    let n = held.len().min(first.len());
    first[..n].copy_from_slice(&held[..n]);
    let m = more.len().min(first.len() - n);
    first[n..n + m].copy_from_slice(&more[..m]);
    let first = &first[..n + m];
    let ok = if req {
        match find_byte(first, b' ') {
            Some(sp) => method_token(&first[..sp]),
            None => first.len() <= MAX_METHOD && method_token(first),
        }
    } else {
        first.iter().take(13).enumerate().all(|(i, &b)| match i {
            0..=6 => b == b"HTTP/1."[i],
            7 => matches!(b, b'0' | b'1'),
            8 => b == b' ',
            9..=11 => b.is_ascii_digit(),
            _ => b == b' ' || b == b'\r',
        })
    };
    ok && !more
        .iter()
        .any(|&b| is_control(b) && b != b'\r' && b != b'\t')
}

/// Whether `data` starts with a request line: a known method, a target (no spaces) and the
/// version, ended by its LF; or, when the line runs past `data` (`cut`), a known method and a target
/// starting with `/`.
fn request_start(data: &[u8], cut: bool) -> bool {
    let window = &data[..data.len().min(MAX_HELD)];
    match find_byte(window, b'\n') {
        Some(i) => {
            let line = &data[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // Strict: a known method and a target without spaces.
            matches!(request_line(line), Some((m, _, target)) if m != OTHER && find_byte(target, b' ').is_none())
        }
        None if cut => {
            let Some(sp) = find_byte(data, b' ') else {
                return false;
            };
            let target = &data[sp + 1..];
            // After the target, a prefix of the version (or nothing yet).
            let version_ok = match target.iter().rposition(|&b| b == b' ') {
                Some(i) => {
                    let v = &target[i + 1..];
                    v.len() <= 8 && (b"HTTP/1.0".starts_with(v) || b"HTTP/1.1".starts_with(v))
                }
                None => true,
            };
            matches!(method_of(&data[..sp]), Some((m, _)) if m != OTHER)
                && target.first() == Some(&b'/')
                && !target.iter().any(|&b| is_control(b))
                && version_ok
        }
        None => false,
    }
}

/// Whether `data` starts with `HTTP/1.[01] DDD ` (100–599).
fn status_start(data: &[u8]) -> bool {
    data.len() >= 13
        && data[12] == b' '
        && matches!(partial_status_line(&data[..12]), Some(100..=599))
}

/// Whether a call that starts with `data` (and moved `unseen` bytes more) starts a
/// message: a complete start line, or (requests) one cut by the snaplen.
fn message_start(data: &[u8], unseen: u64, req: bool) -> bool {
    // Body bytes are mostly turned away by their first bytes, before looking for a line end.
    if req {
        return data.first().is_some_and(u8::is_ascii_uppercase) && request_start(data, unseen > 0);
    }
    if !data.starts_with(b"HTTP/1.") {
        return false;
    }
    let window = &data[..data.len().min(MAX_HELD)];
    let Some(i) = find_byte(window, b'\n') else {
        return false;
    };
    let line = &data[..i];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    matches!(status_line(line), Some(100..=599))
}

/// The route of a target (decoded lossily), built in `scratch`.
fn path_of(target: &[u8], scratch: &mut String) -> Box<str> {
    match std::str::from_utf8(target) {
        Ok(target) => route::normalize_into(target, scratch),
        Err(_) => route::normalize_into(&String::from_utf8_lossy(target), scratch),
    }
    Box::from(scratch.as_str())
}

/// `Host`: lowercased, control characters replaced, at most [`MAX_HOST`] bytes.
fn host_of(value: &[u8]) -> Option<Box<str>> {
    if value.is_empty() {
        return None;
    }
    let value = &value[..value.len().min(MAX_HOST)];
    if value.iter().all(|&b| b.is_ascii() && !is_control(b)) {
        let mut host = Box::<[u8]>::from(value);
        host.make_ascii_lowercase();
        // ASCII: UTF-8 as it is.
        return String::from_utf8(host.into_vec())
            .ok()
            .map(String::into_boxed_str);
    }
    let mut host: String = String::from_utf8_lossy(value)
        .chars()
        .map(|c| {
            if c.is_ascii_control() {
                '\u{fffd}'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if host.len() > MAX_HOST {
        let mut end = MAX_HOST;
        while !host.is_char_boundary(end) {
            end -= 1;
        }
        host.truncate(end);
    }
    Some(host.into_boxed_str())
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Without leading and trailing spaces and tabs.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Appends to a held partial line, its capacity never past [`MAX_HELD`] (the caller keeps
/// its length within it).
fn hold(held: &mut Vec<u8>, bytes: &[u8]) {
    let need = held.len() + bytes.len();
    if need > held.capacity() {
        let cap = need.max((held.capacity() * 2).clamp(64, MAX_HELD));
        held.reserve_exact(cap - held.len());
    }
    held.extend_from_slice(bytes);
}

/// A used held buffer, emptied; freed when it grew large.
fn reuse(mut held: Vec<u8>) -> Vec<u8> {
    if held.capacity() > KEEP_CAPACITY {
        return Vec::new();
    }
    held.clear();
    held
}

/// The first `needle` in `hay`, eight bytes at a time.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The lowest zero byte of x is flagged exactly (borrows only run upwards).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use crate::{Conn, Counters, Exchange, Protocol};

    const RECV: Dir = Dir::Recv;
    const SEND: Dir = Dir::Send;

    /// Requests as (method, path, host).
    fn requests(out: &Output) -> Vec<(&'static str, String, Option<String>)> {
        out.messages
            .iter()
            .filter(|m| m.kind == crate::Kind::Request)
            .map(|m| {
                (
                    m.method,
                    m.path.as_deref().unwrap_or("").to_string(),
                    m.host.as_deref().map(str::to_string),
                )
            })
            .collect()
    }

    fn statuses(out: &Output) -> Vec<u16> {
        out.messages
            .iter()
            .filter(|m| m.kind == crate::Kind::Response)
            .map(|m| m.status)
            .collect()
    }

    /// A server's parser fed `calls`, each (dir, data, unseen).
    fn server(calls: &[(Dir, &[u8], u64)]) -> Output {
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Output::default();
        for &(dir, data, unseen) in calls {
            p.feed(dir, data, unseen, &mut out);
            check_bounds(&p);
        }
        out
    }

    /// One write of `bytes` as ksight sees it with `snaplen`: the copy and the rest unseen.
    fn snap(bytes: &[u8], snaplen: usize) -> (&[u8], u64) {
        let n = bytes.len().min(snaplen);
        (&bytes[..n], (bytes.len() - n) as u64)
    }

    fn check_bounds(p: &Http1Parser) {
        for side in [&p.req, &p.resp] {
            assert!(side.held.len() <= MAX_HELD);
            assert!(side.held.capacity() <= MAX_HELD, "{}", side.held.capacity());
            assert!(side.head.size <= MAX_HELD);
        }
        assert!(p.shared.waiting.len() <= MAX_PENDING);
    }

    fn get(path: &str) -> (&'static str, String, Option<String>) {
        ("GET", path.to_string(), Some("example.com".to_string()))
    }

    #[test]
    fn find_byte_agrees_with_position() {
        let hay: Vec<u8> = (0..200u32).map(|i| (i * 7 % 13) as u8 + b'a').collect();
        for start in 0..40 {
            for needle in [b'a', b'e', b'm', b'z', 0x80] {
                let h = &hay[start..];
                assert_eq!(find_byte(h, needle), h.iter().position(|&b| b == needle));
            }
        }
        assert_eq!(find_byte(b"", b'\n'), None);
        assert_eq!(
            find_byte(b"\xff\xff\xff\xff\xff\xff\xff\xff\n", b'\n'),
            Some(8)
        );
        assert_eq!(find_byte(b"\x0b\x0b\x0a\x0a", b'\n'), Some(2));
    }

    #[test]
    fn detects() {
        type Case<'a> = (&'a [u8], Option<(Role, Role)>);
        let cases: &[Case] = &[
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                Some((Role::Client, Role::Server)),
            ),
            (
                b"POST /api/v1/items?x=1 HTTP/1.0\r\n",
                Some((Role::Client, Role::Server)),
            ),
            (
                b"OPTIONS * HTTP/1.1\r\n\r\n",
                Some((Role::Client, Role::Server)),
            ),
            (
                b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
                Some((Role::Client, Role::Server)),
            ),
            (
                b"PROPFIND /dav HTTP/1.1\n\n",
                Some((Role::Client, Role::Server)),
            ),
            // Cut by the snaplen inside the target.
            (
                b"GET /a/very/long/path/cut/by/the/snap",
                Some((Role::Client, Role::Server)),
            ),
            (b"HTTP/1.1 200 OK\r\n", Some((Role::Server, Role::Client))),
            (b"HTTP/1.0 404 ", Some((Role::Server, Role::Client))),
            // Not HTTP/1.
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
            (b"GET / HTTP/2.0\r\n", None),
            // The line's end not in the call: what there is must fit.
            (b"GET / HTTP/1.1", Some((Role::Client, Role::Server))),
            (b"GET / HTTP/1.", Some((Role::Client, Role::Server))),
            (b"GET / FOO", None),
            (b"GET / HTTP/1.1x", None),
            (b"GET key\r\n", None),
            (b"FOO / HTTP/1.1\r\n", None),
            (b"get / HTTP/1.1\r\n", None),
            (b"GET  HTTP/1.1\r\n", None),
            (b"HTTP/1.1 200\r\n", None),
            (b"HTTP/1.1 099 x", None),
            (b"HTTP/1.1 600 x", None),
            (b"HTTP/2 200 ", None),
            (b"*3\r\n$3\r\nSET\r\n", None),
            (b"\x16\x03\x01\x02\x00\x01", None),
            (b"", None),
        ];
        for (data, want) in cases {
            let got = (detect(Dir::Send, data), detect(Dir::Recv, data));
            let want = want.map_or((None, None), |(s, r)| (Some(s), Some(r)));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn keep_alive() {
        let out = server(&[
            (RECV, b"GET /users/42 HTTP/1.1\r\nHost: Example.COM \r\n\r\n", 0),
            (SEND, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0),
            (RECV, b"POST /users HTTP/1.1\r\nhost: example.com\r\ncontent-length: 3\r\n\r\nabc", 0),
            (SEND, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 0),
            (RECV, b"DELETE /users/42?force=1 HTTP/1.1\r\nHost:example.com\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 0),
            (RECV, b"BREW /pot HTTP/1.1\r\nHost: example.com\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 418 Teapot\r\ncontent-length: 2\r\n\r\nhi", 0),
        ]);
        assert_eq!(
            requests(&out),
            [
                get("/users/*"),
                ("POST", "/users".into(), Some("example.com".into())),
                ("DELETE", "/users/*".into(), Some("example.com".into())),
                (OTHER, "/pot".into(), Some("example.com".into())),
            ]
        );
        assert_eq!(statuses(&out), [200, 201, 503, 418]);
        let errors: Vec<bool> = out
            .messages
            .iter()
            .filter(|m| m.status > 0)
            .map(|m| m.error)
            .collect();
        assert_eq!(errors, [false, false, true, false]);
        assert_eq!(out.malformed, 0);
    }

    /// Requests on a stream: GET, POST with a body, a chunked POST with extensions and
    /// trailers, a GET after blank lines.
    const REQUESTS: &[u8] = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n\
        POST /b/7 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nGET / HTTP/\
        PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: example.com\r\n\r\n\
        4;name=value\r\nWiki\r\n5 ; x\r\npedia\r\nA\r\n in\r\nchunk\r\n0\r\nExpires: never\r\n\r\n\
        \r\nGET /d HTTP/1.0\nHost: example.com\n\n";

    /// Responses on a stream: chunked, a length, 304 with a length, a 204, then one with
    /// uppercase hex chunk sizes.
    const RESPONSES: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n\
        HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope\
        HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n\
        HTTP/1.1 204 No Content\r\n\r\n\
        HTTP/1.1 500 Oops\r\ntransfer-encoding: CHUNKED\r\n\r\nF\r\n0123456789abcde\r\n0\r\n\r\n";

    fn want_requests() -> Vec<(&'static str, String, Option<String>)> {
        vec![
            get("/a"),
            ("POST", "/b/*".into(), Some("example.com".into())),
            ("PUT", "/c".into(), Some("example.com".into())),
            get("/d"),
        ]
    }

    #[test]
    fn pipelined_in_one_call() {
        let out = server(&[(RECV, REQUESTS, 0), (SEND, RESPONSES, 0)]);
        assert_eq!(requests(&out), want_requests());
        assert_eq!(statuses(&out), [200, 404, 304, 204, 500]);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn split_at_every_point() {
        for i in 0..=REQUESTS.len() {
            let out = server(&[(RECV, &REQUESTS[..i], 0), (RECV, &REQUESTS[i..], 0)]);
            assert_eq!(requests(&out), want_requests(), "split at {i}");
            assert_eq!(out.malformed, 0);
        }
        for i in (0..=RESPONSES.len()).step_by(2) {
            for j in (i..=RESPONSES.len()).step_by(3) {
                let out = server(&[
                    (SEND, &RESPONSES[..i], 0),
                    (SEND, &RESPONSES[i..j], 0),
                    (SEND, &RESPONSES[j..], 0),
                ]);
                assert_eq!(
                    statuses(&out),
                    [200, 404, 304, 204, 500],
                    "splits at {i}, {j}"
                );
                assert_eq!(out.malformed, 0);
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Output::default();
        for &b in REQUESTS {
            p.feed(RECV, &[b], 0, &mut out);
            check_bounds(&p);
        }
        for &b in RESPONSES {
            p.feed(SEND, &[b], 0, &mut out);
        }
        assert_eq!(requests(&out), want_requests());
        assert_eq!(statuses(&out), [200, 404, 304, 204, 500]);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn chunks_across_calls_and_gaps() {
        // A chunk's data partly unseen, its end and the next size in later calls.
        let out = server(&[
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\nabc",
                4096 - 3,
            ),
            (SEND, b"\r", 0),
            (SEND, b"\n8;ext=\"", 0),
            (SEND, b"q\"\r\n12345678\r\n", 0),
            (SEND, b"0\r\nTrailer: x\r", 0),
            (
                SEND,
                b"\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                0,
            ),
        ]);
        assert_eq!(statuses(&out), [200, 201]);
        assert_eq!(out.malformed, 0);

        // One large write of many chunks: the sizes beyond the copy are out of sight, so the
        // next response is found at the next call's start.
        let mut body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..100 {
            body.extend_from_slice(b"400\r\n");
            body.extend_from_slice(&[b'x'; 0x400]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let (data, unseen) = snap(&body, 512);
        let out = server(&[
            (SEND, data, unseen),
            (
                SEND,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                0,
            ),
        ]);
        assert_eq!(statuses(&out), [200, 404]);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn megabyte_body_past_the_snaplen() {
        let mut p = Http1Parser::new(Role::Client);
        let mut out = Output::default();
        p.feed(
            SEND,
            b"GET /big HTTP/1.1\r\nHost: example.com\r\n\r\n",
            0,
            &mut out,
        );
        p.feed(
            SEND,
            b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n",
            0,
            &mut out,
        );
        // 1 MB body; inside each call's copy, bytes spelled like a response, so that
        // parsing body bytes would show.
        let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        let body_start = response.len();
        response.resize(body_start + (1 << 20), b'.');
        let fake = b"HTTP/1.1 500 x\r\n\r\n";
        for call in (0..response.len()).step_by(65536) {
            let at = (call + 100).max(body_start);
            if let Some(bytes) = response.get_mut(at..at + fake.len()) {
                bytes.copy_from_slice(fake);
            }
        }
        // Received in calls of 64 KiB: 512 bytes copied of each.
        for call in response.chunks(65536) {
            let (data, unseen) = snap(call, 512);
            p.feed(RECV, data, unseen, &mut out);
            check_bounds(&p);
        }
        p.feed(
            RECV,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!",
            0,
            &mut out,
        );
        assert_eq!(statuses(&out), [200, 404]);
        assert_eq!(out.malformed, 0);
        assert_eq!(p.resp.state, State::Idle);
    }

    #[test]
    fn large_body_skipped_by_count() {
        // A body whose calls, unseen past 512 bytes, end exactly where the next response
        // starts in a call of its own; and one that ends inside a call.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Output::default();
        p.feed(RECV, b"GET /a HTTP/1.1\r\n\r\n", 0, &mut out);
        p.feed(SEND, head, 0, &mut out);
        p.feed(SEND, &[b'x'; 512], 60000 - 512, &mut out);
        p.feed(SEND, &[b'y'; 512], 40000 - 512 - 10, &mut out);
        let mut tail = vec![b'z'; 10];
        tail.extend_from_slice(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        p.feed(SEND, &tail, 0, &mut out);
        assert_eq!(statuses(&out), [200, 202]);
        // Unseen past the body: the next message is out of sight; resync at a call start.
        p.feed(
            SEND,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            5000,
            &mut out,
        );
        p.feed(SEND, b"tail of the unseen message", 0, &mut out);
        p.feed(SEND, b"HTTP/1.1 203 OK\r\n\r\n", 0, &mut out);
        assert_eq!(statuses(&out), [200, 202, 200, 203]);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn sendfile_gap() {
        // nginx: headers by writev, the file by sendfile (never seen), next response.
        let out = server(&[
            (
                RECV,
                b"GET /file.bin HTTP/1.1\r\nHost: example.com\r\n\r\n",
                0,
            ),
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n",
                0,
            ),
            (RECV, b"GET /other HTTP/1.1\r\nHost: example.com\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0),
            // A chunked response whose chunks went by sendfile.
            (RECV, b"GET /c HTTP/1.1\r\nHost: example.com\r\n\r\n", 0),
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n",
                0,
            ),
            (RECV, b"GET /d HTTP/1.1\r\nHost: example.com\r\n\r\n", 0),
            (
                SEND,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                0,
            ),
        ]);
        assert_eq!(
            requests(&out),
            [get("/file.bin"), get("/other"), get("/c"), get("/d")]
        );
        assert_eq!(statuses(&out), [200, 200, 200, 404]);
        assert_eq!(out.malformed, 0);

        // Requests too: a client's body that the socket layer never showed.
        let out = server(&[
            (
                RECV,
                b"PUT /up HTTP/1.1\r\nContent-Length: 900000\r\n\r\n",
                0,
            ),
            (RECV, b"GET /after HTTP/1.1\r\nHost: example.com\r\n\r\n", 0),
        ]);
        assert_eq!(requests(&out).len(), 2);
        assert_eq!(requests(&out)[1], get("/after"));

        // Only a complete status line counts; body bytes that merely look alike do not.
        let out = server(&[
            (SEND, b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 200 but no line end, body bytes", 0),
            (SEND, b"HTTP/1.1 201 Created\r\n\r\n", 0),
        ]);
        assert_eq!(statuses(&out), [200, 201]);
    }

    #[test]
    fn until_close() {
        // No length: the body runs to the close, whatever it holds...
        let out = server(&[
            (RECV, b"GET /old HTTP/1.0\r\n\r\n", 0),
            (
                SEND,
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody",
                0,
            ),
            (SEND, b"HTTP/1.1 200 OK\r\n\r\n", 0),
            (SEND, b"more body", 1_000_000),
        ]);
        assert_eq!(statuses(&out), [200]);
        // ...unless a request is waiting, and a call starts with a status line.
        let out = server(&[
            (RECV, b"GET /a HTTP/1.1\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 200 OK\r\n\r\nbody", 0),
            (RECV, b"GET /b HTTP/1.1\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 201 OK\r\n\r\n", 0),
        ]);
        assert_eq!(statuses(&out), [200, 201]);
        // A transfer coding other than chunked runs to the close too.
        let out = server(&[(SEND, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 0)]);
        assert_eq!(statuses(&out), [200]);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn head_204_304() {
        let out = server(&[
            (
                RECV,
                b"HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\nHEAD /h2 HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
                0,
            ),
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n\
                  HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n\
                  HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
                0,
            ),
        ]);
        let methods: Vec<_> = requests(&out).iter().map(|r| r.0).collect();
        assert_eq!(methods, ["HEAD", "GET", "HEAD", "GET"]);
        assert_eq!(statuses(&out), [200, 204, 200, 304]);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn continue_100() {
        let mut conn = Conn::new();
        let mut done = Vec::new();
        let mut counters = Counters::default();
        let calls: &[(u64, Dir, &[u8])] = &[
            (100, SEND, b"POST /upload HTTP/1.1\r\nHost: files\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
            (200, RECV, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (300, SEND, b"hello"),
            (400, RECV, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
            // The server refuses before the body: the client never sends it.
            (500, SEND, b"PUT /big HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99999\r\n\r\n"),
            (600, RECV, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n"),
            (700, SEND, b"GET /x HTTP/1.1\r\n\r\n"),
            (750, RECV, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ];
        for &(ts, dir, data) in calls {
            conn.feed(ts, dir, data, 0, &mut done, &mut counters);
        }
        let got: Vec<_> = done
            .iter()
            .map(|e| (e.method, e.path.as_deref().unwrap(), e.status, e.latency_ns))
            .collect();
        assert_eq!(
            got,
            [
                ("POST", "/upload", 201, 300),
                ("PUT", "/big", 413, 100),
                ("GET", "/x", 200, 50)
            ]
        );
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn truncated_headers() {
        // A browser-like request larger than the snaplen: emitted from what was seen.
        let mut big =
            b"GET /app/users/123/profile?tab=1 HTTP/1.1\r\nHost: App.Example.com\r\nCookie: "
                .to_vec();
        big.extend_from_slice(&[b'c'; 2000]);
        big.extend_from_slice(b"\r\nContent-Length: 5\r\n\r\nhello");
        let (data, unseen) = snap(&big, 512);
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Output::default();
        p.feed(RECV, data, unseen, &mut out);
        p.feed(
            RECV,
            b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n",
            0,
            &mut out,
        );
        // A request whose line itself is cut: the target so far.
        p.feed(RECV, b"GET /search/abc/12", 3000, &mut out);
        // A call that does not start a message after a cut one: skipped, not malformed.
        p.feed(RECV, b"body bytes of the cut request", 0, &mut out);
        p.feed(
            RECV,
            b"POST /last HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            0,
            &mut out,
        );
        assert_eq!(
            requests(&out),
            [
                (
                    "GET",
                    "/app/users/*/profile".into(),
                    Some("app.example.com".into())
                ),
                get("/next"),
                ("GET", "/search/abc/*".into(), None),
                ("POST", "/last".into(), None),
            ]
        );
        // Responses: the status line is enough.
        p.feed(
            SEND,
            b"HTTP/1.1 200 OK\r\nServer: x\r\nSet-Cookie: aaaa",
            10_000,
            &mut out,
        );
        p.feed(
            SEND,
            b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
            0,
            &mut out,
        );
        p.feed(SEND, b"HTTP/1.1 50", 1000, &mut out);
        p.feed(SEND, b"HTTP/1.1 404 Not Found\r\n\r\n", 0, &mut out);
        assert_eq!(statuses(&out), [200, 301, 404]);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn header_block_past_max_held() {
        // Split into small calls, longer than MAX_HELD: handed out from its start line.
        let mut big = b"GET /huge HTTP/1.1\r\nHost: example.com\r\n".to_vec();
        for i in 0..400 {
            big.extend_from_slice(format!("X-Header-{i}: some value here\r\n").as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert!(big.len() > MAX_HELD);
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Output::default();
        for call in big.chunks(100) {
            p.feed(RECV, call, 0, &mut out);
            check_bounds(&p);
        }
        p.feed(
            RECV,
            b"GET /then HTTP/1.1\r\nHost: example.com\r\n\r\n",
            0,
            &mut out,
        );
        assert_eq!(requests(&out), [get("/huge"), get("/then")]);
        assert_eq!(out.malformed, 0);

        // A single line past MAX_HELD, byte by byte: bounded, then given up.
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Output::default();
        p.feed(RECV, b"GET /", 0, &mut out);
        for _ in 0..MAX_HELD + 100 {
            p.feed(RECV, b"a", 0, &mut out);
            check_bounds(&p);
        }
        p.feed(RECV, b"GET /ok HTTP/1.1\r\n\r\n", 0, &mut out);
        assert_eq!(requests(&out).len(), 2);
        assert_eq!(requests(&out)[0].1, "/*");
        assert_eq!(requests(&out)[1].1, "/ok");
    }

    #[test]
    fn garbage_then_recovery() {
        let out = server(&[
            (RECV, b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n", 0),
            (RECV, b"\x00\x01\x02garbage\xff\xfe", 0),
            (RECV, b"more garbage\r\n\r\n", 0),
            (RECV, b"GET but not a request line\r\n", 0),
            (RECV, b"GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                0,
            ),
            (SEND, b"12\r\nnot what it seems\r\n", 0),
            (
                SEND,
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
                0,
            ),
        ]);
        assert_eq!(requests(&out), [get("/a"), get("/b")]);
        assert_eq!(statuses(&out), [200, 200, 202]);
        assert_eq!(out.malformed, 2); // once per resynchronisation
        // Garbage after a message in the same call.
        let out = server(&[
            (RECV, b"GET /a HTTP/1.1\r\n\r\n\x16\x03\x01 tls?", 0),
            (RECV, b"GET /b HTTP/1.1\r\n\r\n", 0),
        ]);
        assert_eq!(requests(&out).len(), 2);
        assert_eq!(out.malformed, 1);
        // A partial first line is judged before its end arrives.
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Output::default();
        p.feed(SEND, b"HTTP/1.1 2", 0, &mut out);
        assert_eq!(p.resp.state, State::Head);
        p.feed(SEND, b"x", 0, &mut out);
        assert_eq!((p.resp.state, out.malformed), (State::Resync, 1));
        p.feed(RECV, b"G3T", 0, &mut out);
        assert_eq!((p.req.state, out.malformed), (State::Resync, 2));
    }

    #[test]
    fn lengths_and_codings() {
        // Conflicting lengths: malformed.
        let out = server(&[
            (
                RECV,
                b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                0,
            ),
            (RECV, b"GET /b HTTP/1.1\r\n\r\n", 0),
        ]);
        assert_eq!(requests(&out).len(), 2);
        assert_eq!(out.malformed, 1);
        // Equal lengths, listed: fine. Chunked wins over the length. Folded coding.
        let out = server(&[
            (
                RECV,
                b"POST /a HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc\
                  POST /b HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n\
                  POST /c HTTP/1.1\r\nTransfer-Encoding: gzip,\r\n  chunked\r\nX-Folded: a\r\n\tb\r\n\r\n1\r\nz\r\n0\r\n\r\n\
                  GET /d HTTP/1.1\r\n\r\n",
                0,
            ),
            // A request with a coding other than chunked cannot be framed.
            (RECV, b"POST /e HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxyz", 0),
            (RECV, b"GET /f HTTP/1.1\r\n\r\n", 0),
            // Bad length values.
            (RECV, b"POST /g HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 0),
            (RECV, b"POST /h HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 0),
            (RECV, b"GET /i HTTP/1.1\r\n\r\n", 0),
        ]);
        let paths: Vec<_> = requests(&out).into_iter().map(|r| r.1).collect();
        assert_eq!(
            paths,
            ["/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h", "/i"]
        );
        assert_eq!(out.malformed, 3);
        // Chunk sizes: overflow and junk are malformed.
        let out = server(&[
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
                0,
            ),
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n",
                0,
            ),
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
                0,
            ),
            (
                SEND,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
                0,
            ),
        ]);
        assert_eq!(statuses(&out), [200, 200, 200, 200]);
        assert_eq!(out.malformed, 3);
    }

    #[test]
    fn hosts_and_targets() {
        let mut long_host = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        long_host.extend_from_slice(&[b'H'; 300]);
        long_host.extend_from_slice(b"\r\nHost: second\r\n\r\n");
        let out = server(&[
            (RECV, &long_host, 0),
            (RECV, b"GET http://Example.com:8080/v1/items/0123456789abcdef01?x HTTP/1.1\r\nHOST:  Example.com:8080\t\r\n\r\n", 0),
            (RECV, b"OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n", 0),
            (RECV, b"GET /caf\xc3\xa9/\xff\xfe HTTP/1.1\r\nHost: h\xffst\r\n\r\n", 0),
            (RECV, b"GET /with space/1 HTTP/1.1\r\n\r\n", 0),
        ]);
        let got = requests(&out);
        assert_eq!(got[0].2.as_deref(), Some("h".repeat(255).as_str()));
        assert_eq!(
            got[1],
            ("GET", "/v1/items/*".into(), Some("example.com:8080".into()))
        );
        assert_eq!(got[2], ("OPTIONS", "*".into(), None));
        assert_eq!(
            got[3],
            (
                "GET",
                "/caf\u{e9}/\u{fffd}\u{fffd}".into(),
                Some("h\u{fffd}st".into())
            )
        );
        assert_eq!(got[4].1, "/with space/*");
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn upgrade_and_tunnel() {
        let out = server(&[
            (
                RECV,
                b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                0,
            ),
            (
                SEND,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
                0,
            ),
            (RECV, b"\x81\x85\x00\x00\x00\x00hello", 0),
            (SEND, b"HTTP/1.1 200 OK\r\n\r\n", 0),
        ]);
        assert_eq!(statuses(&out), [101]);
        assert_eq!(out.malformed, 0);
        let out = server(&[
            (
                RECV,
                b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
                0,
            ),
            (SEND, b"HTTP/1.1 200 Connection established\r\n\r\n", 0),
            (RECV, b"\x16\x03\x01\x00\x05hello", 0),
            (SEND, b"\x16\x03\x03\x00\x05hello", 0),
        ]);
        assert_eq!(requests(&out)[0].1, "db.internal:5432");
        assert_eq!(statuses(&out), [200]);
        assert_eq!(out.malformed, 0);
        // A refused CONNECT stays HTTP.
        let out = server(&[
            (RECV, b"CONNECT a:1 HTTP/1.1\r\n\r\n", 0),
            (
                SEND,
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
                0,
            ),
            (RECV, b"GET / HTTP/1.1\r\n\r\n", 0),
            (SEND, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
        ]);
        assert_eq!(statuses(&out), [403, 200]);
    }

    /// Through the connection: detected, parsed, paired, with latency.
    #[test]
    fn exchanges_through_conn() {
        let mut conn = Conn::new();
        let mut done: Vec<Exchange> = Vec::new();
        let mut counters = Counters::default();
        // A client: pipelined requests, then responses split and with a gap.
        conn.feed(
            1_000,
            SEND,
            b"GET /users/42 HTTP/1.1\r\nHost: API.example.com\r\n\r\nHEAD /health HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            0,
            &mut done,
            &mut counters,
        );
        assert_eq!(conn.protocol(), Some((Protocol::Http1, Role::Client)));
        conn.feed(
            1_600,
            RECV,
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Len",
            0,
            &mut done,
            &mut counters,
        );
        conn.feed(
            1_700,
            RECV,
            b"gth: 100000\r\n\r\n",
            0,
            &mut done,
            &mut counters,
        );
        conn.feed(1_800, RECV, &[b'x'; 512], 99_488, &mut done, &mut counters);
        conn.feed(
            2_000,
            RECV,
            b"HTTP/1.1 200 OK\r\nContent-Length: 77\r\n\r\n",
            0,
            &mut done,
            &mut counters,
        );
        conn.feed(
            3_000,
            SEND,
            b"POST /items HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 2\r\n\r\n{}",
            0,
            &mut done,
            &mut counters,
        );
        conn.feed(
            3_250,
            RECV,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            0,
            &mut done,
            &mut counters,
        );
        let host = Some("api.example.com".into());
        let ex = |method, path: &str, status, error, latency_ns| Exchange {
            protocol: Protocol::Http1,
            role: Role::Client,
            method,
            path: Some(path.into()),
            host: host.clone(),
            status,
            error,
            code: None,
            latency_ns,
        };
        assert_eq!(
            done,
            [
                ex("GET", "/users/*", 503, true, 700),
                ex("HEAD", "/health", 200, false, 1_000),
                ex("POST", "/items", 201, false, 250),
            ]
        );
        assert_eq!(counters, Counters::default());

        // A server met mid-stream: its first payload a response.
        let mut conn = Conn::new();
        let mut done = Vec::new();
        let mut counters = Counters::default();
        conn.feed(
            10,
            SEND,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            0,
            &mut done,
            &mut counters,
        );
        assert_eq!(conn.protocol(), Some((Protocol::Http1, Role::Server)));
        conn.feed(
            20,
            RECV,
            b"GET /a HTTP/1.1\r\n\r\n",
            0,
            &mut done,
            &mut counters,
        );
        conn.feed(
            25,
            SEND,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            0,
            &mut done,
            &mut counters,
        );
        assert_eq!(counters.unmatched_responses, 1);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].role, done[0].status, done[0].latency_ns),
            (Role::Server, 404, 5)
        );
    }

    /// Random streams of HTTP pieces and random bytes, random splits and unseen counts:
    /// no panic, bounded state.
    #[test]
    fn fuzz() {
        const PIECES: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"POST /a/1 HTTP/1.0\r\n",
            b"HEAD /h HTTP/1.1\r\n",
            b"CONNECT h:1 HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 101 Switching\r\n",
            b"HTTP/1.0 304 x\r\n",
            b"HTTP/1.1 204 x\r\n",
            b"Host: example.com\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: 4096\r\n",
            b"Content-Length: 18446744073709551615\r\n",
            b"Content-Length: 1, 2\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b" folded\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"5\r\nhello\r\n",
            b"0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b"3;ext\r\n",
            b"Trailer: x\r\n",
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut messages = 0usize;
        for iteration in 0..20_000 {
            let mut stream = Vec::new();
            for _ in 0..rng.below(24) {
                if rng.below(4) == 0 {
                    for _ in 0..rng.below(64) {
                        stream.push(rng.next() as u8);
                    }
                } else {
                    stream.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                }
            }
            let role = if rng.below(2) == 0 {
                Role::Client
            } else {
                Role::Server
            };
            let mut p = Http1Parser::new(role);
            let mut conn = Conn::new();
            let (mut done, mut counters) = (Vec::new(), Counters::default());
            let mut out = Output::default();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(200));
                let (call, tail) = rest.split_at(n);
                rest = tail;
                let dir = if rng.below(2) == 0 { SEND } else { RECV };
                let unseen = match rng.below(8) {
                    0 => rng.next() % 10_000,
                    1 => u64::MAX - rng.next() % 2,
                    _ => 0,
                };
                p.feed(dir, call, unseen, &mut out);
                check_bounds(&p);
                if iteration % 4 == 0 {
                    conn.feed(
                        iteration as u64,
                        dir,
                        call,
                        unseen,
                        &mut done,
                        &mut counters,
                    );
                }
            }
            messages += out.messages.len();
            conn.close(&mut counters);
        }
        assert!(messages > 1000, "{messages}");
    }
}
