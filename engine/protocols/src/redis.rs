//! Redis: RESP2 and RESP3, and inline commands, from each direction's copied bytes.
//!
//! Each direction is parsed incrementally as a stream of RESP values with a small stack of
//! aggregate frames (element counts are never preallocated; at most [`MAX_DEPTH`] levels,
//! deeper is malformed). Lines (type byte, header, CRLF) are read as they come; of a line
//! split over calls only its first `LINE_KEEP` (64) bytes are kept, which is all any decision
//! needs (a length, an error's first word, an inline command's name). Length and count
//! lines longer than `HEADER_MAX` (24) and text lines longer than [`MAX_HELD`] are malformed.
//! Bulk contents are skipped by count, `unseen` bytes included, so a 1 MB `SET` value costs
//! nothing and the next command is still found; their CRLF is checked where it was copied.
//!
//! Requests: each top-level array (`*n`, n > 0) is one command, named by its first element
//! (a bulk string looked up, case-insensitively, in [`COMMANDS`]: the Redis 7 command set;
//! container commands such as `CLIENT SETNAME` are their first word) and emitted as soon
//! as that element is complete (so its time is the command's first call). A line at top
//! level that does not start with `*` is an inline command (`PING\r\n`, `GET k\n`), as the
//! server reads it; blank lines, `*0` and `*-1` are ignored, as the server ignores them.
//! Commands inside `MULTI` … `EXEC` need nothing special: each gets its own reply
//! (`+QUEUED` or an error), `EXEC` an array.
//!
//! Responses: one per top-level reply, emitted at its header (time to first byte; a reply
//! cut short by the snaplen is still counted): `-` and RESP3 `!` errors carry their first
//! word as code when it is 1..=32 bytes of `[A-Z_]` (`ERR`, `WRONGTYPE`, `MOVED`, …). A
//! RESP3 attribute (`|`) precedes a reply and is not one; a push (`>`) is out of band and
//! not a response. RESP3 streamed strings (`$?` with `;` chunks) and aggregates (`*?`,
//! `%?`, `~?`, `>?` ended by `.`) are understood.
//!
//! Commands that do not get exactly one reply:
//! - `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE` under RESP2 put the connection in subscribe
//!   mode, where replies are confirmations and messages with no request to pair with. The
//!   command is not emitted; responses still owed to requests emitted before it are
//!   emitted, then nothing more in either direction (nothing is counted malformed: both
//!   directions are still parsed, silently) until the client sends `RESET` and its
//!   `+RESET` reply comes back: pairing resumes after it. `MONITOR` does the same (it is
//!   emitted and its `+OK` paired first). Under RESP3 (known once a reply of a RESP3-only
//!   type was seen, e.g. `HELLO 3`'s map) confirmations and messages are pushes: the
//!   (un)subscribe commands are not emitted and pairing goes on.
//! - `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `SUNSUBSCRIBE` outside subscribe mode under RESP2 get
//!   one reply per channel named (one if none): emitted that many times.
//! - `SYNC` and `PSYNC` turn the connection into a replication stream: the command is
//!   emitted and paired with its `+FULLRESYNC`/`+CONTINUE` line, then nothing more is
//!   parsed in the response direction and nothing emitted in the request direction.
//! - `CLIENT REPLY OFF|SKIP` is not followed (its suppressed replies leave requests
//!   unanswered).
//!
//! Framing lost (a header line in unseen bytes, a bad type byte or length, a missing CRLF,
//! a line too long, nesting too deep) is counted once in [`Output::malformed`]; the
//! direction then resynchronises at the start of a later call that looks like a value's
//! start (`*<digit>` for requests; any reply type byte for responses, only while a request
//! is waiting for its response). That call is parsed on probation: if it fails anywhere,
//! everything it produced is taken back and the direction stays lost (not counted again);
//! a response direction on probation emits no more responses than requests are waiting.
//!
//! Pairing across a loss ([`Conn`](crate::Conn) pairs in order and its waiting requests
//! cannot be dropped from here):
//! - Request direction lost: a command whose start was seen but not its name is emitted as
//!   [`OTHER`] (it will get a reply). Commands wholly in the lost bytes are not emitted;
//!   their replies, still parsed, find no request waiting and are counted unmatched by the
//!   connection, which realigns it as soon as its queue empties (a client that waits for
//!   its replies realigns at once).
//! - Response direction lost: a reply whose start was seen but not emitted is emitted, and
//!   then one response (status 0, no error, no code) for every request still waiting, at
//!   that call's time: their replies were most likely in the lost bytes. Leaving them
//!   waiting would shift every later pairing by as many; emitting too many only makes later
//!   replies unmatched until the queue empties. With no pipelining nothing is waiting when
//!   a long reply loses its framing, so pairing stays exact.

use crate::{Dir, MAX_HELD, MAX_PENDING, Message, OTHER, Output, Parser, Role};

/// Aggregate nesting beyond which a value is malformed.
pub const MAX_DEPTH: usize = 32;
/// Bytes kept of a line split over calls.
const LINE_KEEP: usize = 64;
/// Longest length or count line (type byte, sign, digits, CRLF): a longer one is malformed.
const HEADER_MAX: usize = 24;
/// Longest command name in [`COMMANDS`] taken from a bulk string, with room to spare.
const NAME_MAX: usize = 32;
/// Bytes captured of a command name or a blob error (a 32-byte code and its space).
const CAP: usize = NAME_MAX + 1;

/// Whether `data`, the first payload seen on a connection in direction `dir`, is this
/// protocol; if so, which end the socket is. A RESP array of bulk strings whose first is a
/// known command, or `PING\r\n` (no other inline command: `GET / HTTP/1.1` is HTTP).
pub fn detect(dir: Dir, data: &[u8]) -> Option<Role> {
    let role = match dir {
        Dir::Send => Role::Client,
        Dir::Recv => Role::Server,
    };
    if data.len() >= 6 && data[..6].eq_ignore_ascii_case(b"PING\r\n") {
        return Some(role);
    }
    let rest = data.strip_prefix(b"*")?;
    let (n, rest) = header_number(rest)?;
    if n == 0 {
        return None;
    }
    let rest = rest.strip_prefix(b"$")?;
    let (len, rest) = header_number(rest)?;
    if len == 0 || len > NAME_MAX || rest.len() < len + 2 || &rest[len..len + 2] != b"\r\n" {
        return None;
    }
    command(&rest[..len]).map(|_| role)
}

/// `<digits>\r\n` at the start of `data` (at most 10 digits): the number and what follows.
fn header_number(data: &[u8]) -> Option<(usize, &[u8])> {
    let digits = data
        .iter()
        .take(11)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 10 || data.get(digits..digits + 2) != Some(b"\r\n") {
        return None;
    }
    let n = data[..digits]
        .iter()
        .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
    Some((n, &data[digits + 2..]))
}

/// The command named `name` (any case), from [`COMMANDS`].
pub fn command(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() || name.len() > NAME_MAX {
        return None;
    }
    let mut upper = [0u8; NAME_MAX];
    for (u, b) in upper.iter_mut().zip(name) {
        *u = b.to_ascii_uppercase();
    }
    let upper = &upper[..name.len()];
    // Integer keys (one compare per step); whole names only among those that tie.
    let k = key(upper);
    let mut i = KEYS.binary_search(&k).ok()?;
    // Names sharing their first 16 bytes are adjacent: from the first of the run.
    while i > 0 && KEYS[i - 1] == k {
        i -= 1;
    }
    while i < KEYS.len() && KEYS[i] == k {
        if COMMANDS[i].as_bytes() == upper {
            return Some(COMMANDS[i]);
        }
        i += 1;
    }
    None
}

/// A name's first 16 bytes as a big-endian integer (zero-padded): ordered as the names.
const fn key(name: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < 16 && i < name.len() {
        bytes[i] = name[i];
        i += 1;
    }
    u128::from_be_bytes(bytes)
}

/// [`COMMANDS`]' keys.
static KEYS: [u128; COMMANDS.len()] = {
    let mut keys = [0u128; COMMANDS.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = key(COMMANDS[i].as_bytes());
        i += 1;
    }
    keys
};

/// A framing error: the direction loses its framing.
struct Bad;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameKind {
    /// An array, set, map or push with `left` elements (a map's keys and values both
    /// count) still to come.
    Agg,
    /// An attribute: like `Agg`, but it is not itself a value of its parent.
    Attr,
    /// A streamed aggregate (`*?`), ended by `.`.
    Streamed,
    /// A streamed string (`$?`): `;<len>` chunks, ended by `;0`.
    Chunks,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    left: u64,
    kind: FrameKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// At the start of a line, or in one.
    Line,
    /// In a bulk string's content of `len` bytes: `left` bytes of it and its CRLF to go.
    Bulk { left: u64, len: u64, capture: bool },
}

/// How responses are emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    Open,
    /// Subscribe (or monitor) mode: only `quota` more.
    Subscribed,
    /// After `SYNC`/`PSYNC`: `quota` more, then the response direction is off.
    Replication,
}

/// What both directions share: the pairing bookkeeping.
#[derive(Clone, Copy, Debug)]
struct Session {
    /// Requests emitted and not yet matched by a response (what the connection holds
    /// waiting, as far as this parser knows; at most [`MAX_PENDING`] like its queue).
    owed: u64,
    gate: Gate,
    /// Responses still to emit while the gate is not open.
    quota: u64,
    /// Requests are parsed but not emitted (subscribe, monitor, replication).
    req_silent: bool,
    /// The client sent `RESET` in subscribe mode: its `+RESET` ends the mode.
    reset_asked: bool,
    /// A RESP3 reply was seen.
    resp3: bool,
    /// The response direction is no longer parsed.
    resp_off: bool,
}

impl Session {
    fn subscribe(&mut self) {
        if self.gate == Gate::Open {
            self.gate = Gate::Subscribed;
            self.quota = self.owed;
        }
        self.req_silent = true;
        self.reset_asked = false;
    }

    fn request(&mut self, out: &mut Output, method: &'static str) {
        out.messages.push(Message::request(method));
        self.owed = (self.owed + 1).min(MAX_PENDING as u64);
    }

    /// A command was read: emitted, or not, as its kind and the connection's mode say.
    fn command(&mut self, out: &mut Output, method: &'static str, argc: u64) {
        if self.req_silent {
            if method == "RESET" && self.gate == Gate::Subscribed {
                self.req_silent = false;
                self.reset_asked = true;
            }
            return;
        }
        match method {
            "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" => {
                if !self.resp3 {
                    self.subscribe();
                }
            }
            "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "SUNSUBSCRIBE" => {
                if !self.resp3 {
                    for _ in 0..argc.saturating_sub(1).clamp(1, MAX_PENDING as u64) {
                        self.request(out, method);
                    }
                }
            }
            "MONITOR" => {
                self.request(out, method);
                self.subscribe();
            }
            "SYNC" | "PSYNC" => {
                self.request(out, method);
                self.gate = Gate::Replication;
                self.quota = self.owed;
                self.req_silent = true;
            }
            _ => self.request(out, method),
        }
    }

    /// A response, unless the gate (or a probation with nothing waiting) holds it back.
    fn response(&mut self, out: &mut Output, probation: bool, m: Message) {
        if probation && self.owed == 0 {
            return;
        }
        if self.gate != Gate::Open {
            if self.quota == 0 {
                return;
            }
            self.quota -= 1;
        }
        self.owed = self.owed.saturating_sub(1);
        out.messages.push(m);
        if self.gate == Gate::Replication && self.quota == 0 {
            self.resp_off = true;
        }
    }
}

/// One direction's parse state.
struct Side {
    /// The request direction (else the response one).
    req: bool,
    at: At,
    /// The first bytes of a line split over calls, and its length so far.
    line: [u8; LINE_KEEP],
    kept: usize,
    total: usize,
    last: u8,
    stack: Vec<Frame>,
    /// The captured start of a command name (request) or blob error (response), and the
    /// length of what it is captured from.
    cap: [u8; CAP],
    cap_len: usize,
    cap_want: u64,
    /// A top-level message began and was not emitted yet; its first byte.
    open: bool,
    open_type: u8,
    /// Request: the current command was emitted (its first element is complete); its
    /// element count.
    cmd_done: bool,
    argc: u64,
    /// Response: the current top-level reply is a blob error, emitted once complete.
    blob_err: bool,
    /// Framing lost: waiting for a call to resynchronise at.
    lost: bool,
    /// Parsing the call being tried for resynchronisation.
    probation: bool,
}

impl Side {
    fn new(req: bool) -> Self {
        Self {
            req,
            at: At::Line,
            line: [0; LINE_KEEP],
            kept: 0,
            total: 0,
            last: 0,
            stack: Vec::new(),
            cap: [0; CAP],
            cap_len: 0,
            cap_want: 0,
            open: false,
            open_type: 0,
            cmd_done: true,
            argc: 0,
            blob_err: false,
            lost: false,
            probation: false,
        }
    }

    /// Back to the start of a top-level value.
    fn reset(&mut self) {
        self.at = At::Line;
        self.kept = 0;
        self.total = 0;
        self.last = 0;
        self.stack.clear();
        self.cap_len = 0;
        self.cap_want = 0;
        self.open = false;
        self.open_type = 0;
        self.cmd_done = true;
        self.argc = 0;
        self.blob_err = false;
    }

    fn feed(&mut self, s: &mut Session, data: &[u8], unseen: u64, out: &mut Output) {
        if !self.req && s.resp_off {
            return;
        }
        if self.lost {
            if !self.resync_candidate(s, data) {
                return;
            }
            let (before, mark) = (*s, out.messages.len());
            self.reset();
            self.lost = false;
            self.probation = true;
            let parsed = self.parse(s, data, out);
            self.probation = false;
            if parsed.is_err() {
                *s = before;
                out.messages.truncate(mark);
                self.reset();
                self.lost = true;
                return;
            }
        } else if self.parse(s, data, out).is_err() {
            self.lose(s, out);
            return;
        }
        if unseen > 0 {
            self.skip_unseen(s, unseen, out);
        }
    }

    /// Whether a lost direction may try to resynchronise at the start of `data`.
    fn resync_candidate(&self, s: &Session, data: &[u8]) -> bool {
        if self.req {
            data.len() >= 2 && data[0] == b'*' && data[1].is_ascii_digit()
        } else {
            let waiting = s.owed > 0 || (s.gate == Gate::Subscribed && s.reset_asked);
            waiting
                && data
                    .first()
                    .is_some_and(|&b| is_type(b) && b != b'.' && b != b';')
        }
    }

    /// Bytes the call moved past its copy.
    fn skip_unseen(&mut self, s: &mut Session, unseen: u64, out: &mut Output) {
        if !self.req && s.resp_off {
            return;
        }
        match self.at {
            At::Bulk { left, len, capture } if unseen < left => {
                self.at = At::Bulk {
                    left: left - unseen,
                    len,
                    capture,
                };
            }
            At::Bulk { left, .. } => {
                self.at = At::Line;
                self.bulk_done(s, out);
                if unseen > left {
                    self.lose(s, out);
                }
            }
            At::Line => self.lose(s, out),
        }
    }

    /// Framing lost: counted, what was begun emitted, then wait to resynchronise.
    fn lose(&mut self, s: &mut Session, out: &mut Output) {
        out.malformed += 1;
        if self.open {
            if self.req {
                s.command(out, OTHER, 1);
            } else if !matches!(self.open_type, b'>' | b'|') {
                let error = self.blob_err || matches!(self.open_type, b'-' | b'!');
                let code = if self.blob_err { self.cap_code() } else { None };
                s.response(out, false, reply(error, code));
            }
        }
        if !self.req {
            for _ in 0..s.owed.min(MAX_PENDING as u64) {
                s.response(out, false, reply(false, None));
            }
            s.owed = 0;
        }
        self.reset();
        self.lost = true;
    }

    fn parse(&mut self, s: &mut Session, data: &[u8], out: &mut Output) -> Result<(), Bad> {
        let mut i = 0;
        while i < data.len() {
            if !self.req && s.resp_off {
                return Ok(());
            }
            match self.at {
                At::Bulk { left, len, capture } => {
                    let n = left.min((data.len() - i) as u64);
                    let chunk = &data[i..i + n as usize];
                    let pos = len + 2 - left;
                    if capture && pos < len && pos == self.cap_len as u64 {
                        let take = (len - pos).min(n).min((CAP - self.cap_len) as u64) as usize;
                        self.cap[self.cap_len..self.cap_len + take].copy_from_slice(&chunk[..take]);
                        self.cap_len += take;
                    }
                    for q in pos.max(len)..pos + n {
                        let want = if q == len { b'\r' } else { b'\n' };
                        if chunk[(q - pos) as usize] != want {
                            return Err(Bad);
                        }
                    }
                    i += n as usize;
                    if n == left {
                        self.at = At::Line;
                        self.bulk_done(s, out);
                    } else {
                        self.at = At::Bulk {
                            left: left - n,
                            len,
                            capture,
                        };
                    }
                }
                At::Line => {
                    let first = if self.total == 0 {
                        data[i]
                    } else {
                        self.line[0]
                    };
                    let inline = self.req && self.stack.is_empty() && first != b'*';
                    if self.total == 0 {
                        if self.stack.is_empty() {
                            self.open = true;
                            self.open_type = first;
                        }
                        if !inline && !is_type(first) {
                            return Err(Bad);
                        }
                    }
                    let limit = if inline || !is_header(first) {
                        MAX_HELD
                    } else {
                        HEADER_MAX
                    };
                    let rest = &data[i..];
                    let Some(k) = rest.iter().position(|&b| b == b'\n') else {
                        self.keep(rest);
                        if self.total > limit {
                            return Err(Bad);
                        }
                        return Ok(());
                    };
                    i += k + 1;
                    let piece = &rest[..k];
                    if self.total == 0 {
                        if k + 1 > limit {
                            return Err(Bad);
                        }
                        let cr = piece.last() == Some(&b'\r');
                        let body = &piece[..k - usize::from(cr)];
                        self.line_done(s, out, &body[..body.len().min(LINE_KEEP)], body.len(), cr)?;
                    } else {
                        self.keep(piece);
                        if self.total + 1 > limit {
                            return Err(Bad);
                        }
                        let cr = self.last == b'\r';
                        let len = self.total - usize::from(cr);
                        let kept = self.kept.min(len);
                        let mut buf = [0u8; LINE_KEEP];
                        buf[..kept].copy_from_slice(&self.line[..kept]);
                        self.kept = 0;
                        self.total = 0;
                        self.last = 0;
                        self.line_done(s, out, &buf[..kept], len, cr)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Part of a line: its first bytes kept, its length counted.
    fn keep(&mut self, piece: &[u8]) {
        let take = piece.len().min(LINE_KEEP - self.kept);
        self.line[self.kept..self.kept + take].copy_from_slice(&piece[..take]);
        self.kept += take;
        self.total = self.total.saturating_add(piece.len());
        if let Some(&b) = piece.last() {
            self.last = b;
        }
    }

    /// A whole line: `line` its first bytes (CR and LF stripped), `len` its length.
    fn line_done(
        &mut self,
        s: &mut Session,
        out: &mut Output,
        line: &[u8],
        len: usize,
        cr: bool,
    ) -> Result<(), Bad> {
        let depth0 = self.stack.is_empty();
        if self.req && depth0 && line.first() != Some(&b'*') {
            self.inline(s, out, line, len);
            return Ok(());
        }
        if !cr || line.is_empty() {
            return Err(Bad);
        }
        let complete = line.len() == len;
        let (t, rest) = (line[0], &line[1..]);
        // A reply at the top level (requests' top level is a command header or inline).
        let top = depth0 && !self.req;
        let frame = self.stack.last().map(|f| f.kind);
        if frame == Some(FrameKind::Chunks) || t == b';' {
            if frame != Some(FrameKind::Chunks) || t != b';' || !complete {
                return Err(Bad);
            }
            let n = int(rest)?;
            if n < 0 {
                return Err(Bad);
            }
            if n == 0 {
                self.stack.pop();
                self.value_done(s, out);
            } else {
                let n = n as u64;
                self.at = At::Bulk {
                    left: n + 2,
                    len: n,
                    capture: false,
                };
            }
            return Ok(());
        }
        match t {
            b'.' => {
                if frame != Some(FrameKind::Streamed) || !rest.is_empty() {
                    return Err(Bad);
                }
                self.stack.pop();
                self.value_done(s, out);
            }
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                if !simple_ok(t, rest, complete) {
                    return Err(Bad);
                }
                if top {
                    self.top_simple(s, out, t, rest, complete);
                }
                self.value_done(s, out);
            }
            b'$' | b'!' | b'=' => {
                if !complete {
                    return Err(Bad);
                }
                if t == b'$' && rest == b"?" {
                    self.push(FrameKind::Chunks, 0)?;
                    if top {
                        self.top_reply(s, out, t);
                    }
                    return Ok(());
                }
                let n = int(rest)?;
                if n == -1 && t == b'$' {
                    if top {
                        self.top_reply(s, out, t);
                    }
                    self.value_done(s, out);
                    return Ok(());
                }
                if n < 0 {
                    return Err(Bad);
                }
                let n = n as u64;
                let capture = if self.req {
                    self.stack.len() == 1 && !self.cmd_done && n <= NAME_MAX as u64
                } else {
                    top && t == b'!'
                };
                if capture {
                    self.cap_len = 0;
                    self.cap_want = n;
                }
                if top {
                    self.top_reply(s, out, t);
                }
                self.at = At::Bulk {
                    left: n + 2,
                    len: n,
                    capture,
                };
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if !complete {
                    return Err(Bad);
                }
                if self.req && depth0 {
                    // A command.
                    let n = int(rest)?;
                    if n <= 0 {
                        self.open = false;
                        return Ok(());
                    }
                    self.cmd_done = false;
                    self.argc = n as u64;
                    self.cap_len = 0;
                    self.cap_want = 0;
                    return self.push(FrameKind::Agg, n as u64);
                }
                if rest == b"?" && t != b'|' {
                    self.push(FrameKind::Streamed, 0)?;
                    if top {
                        self.top_reply(s, out, t);
                    }
                    return Ok(());
                }
                let n = int(rest)?;
                if n == -1 && t == b'*' {
                    if top {
                        self.top_reply(s, out, t);
                    }
                    self.value_done(s, out);
                    return Ok(());
                }
                if n < 0 {
                    return Err(Bad);
                }
                let n = n as u64;
                let count = if matches!(t, b'%' | b'|') { n * 2 } else { n };
                if count > 0 {
                    let kind = if t == b'|' {
                        FrameKind::Attr
                    } else {
                        FrameKind::Agg
                    };
                    self.push(kind, count)?;
                }
                if top {
                    self.top_reply(s, out, t);
                }
                if count == 0 && t != b'|' {
                    self.value_done(s, out);
                }
            }
            _ => return Err(Bad),
        }
        Ok(())
    }

    fn push(&mut self, kind: FrameKind, left: u64) -> Result<(), Bad> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Bad);
        }
        self.stack.push(Frame { left, kind });
        Ok(())
    }

    /// A bulk string's content and CRLF went by.
    fn bulk_done(&mut self, s: &mut Session, out: &mut Output) {
        if self.stack.last().map(|f| f.kind) == Some(FrameKind::Chunks) {
            return;
        }
        self.value_done(s, out);
    }

    /// A value is complete: count it in its aggregate, and so on up.
    fn value_done(&mut self, s: &mut Session, out: &mut Output) {
        loop {
            let depth = self.stack.len();
            if self.req && depth == 1 && !self.cmd_done {
                self.command(s, out);
            }
            let Some(frame) = self.stack.last_mut() else {
                self.top_done(s, out);
                return;
            };
            match frame.kind {
                FrameKind::Streamed | FrameKind::Chunks => return,
                FrameKind::Agg | FrameKind::Attr => {
                    frame.left = frame.left.saturating_sub(1);
                    if frame.left > 0 {
                        return;
                    }
                    let attribute = frame.kind == FrameKind::Attr;
                    self.stack.pop();
                    if attribute {
                        return;
                    }
                }
            }
        }
    }

    /// Request: the command's first element is complete; it names the command.
    fn command(&mut self, s: &mut Session, out: &mut Output) {
        self.cmd_done = true;
        self.open = false;
        let whole = self.cap_want > 0 && self.cap_len as u64 == self.cap_want;
        let name = if whole {
            command(&self.cap[..self.cap_len])
        } else {
            None
        };
        s.command(out, name.unwrap_or(OTHER), self.argc);
    }

    /// Request: an inline command (`line` is its first bytes, `len` its length).
    fn inline(&mut self, s: &mut Session, out: &mut Output, line: &[u8], len: usize) {
        self.open = false;
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        let Some(start) = line.iter().position(|b| !blank(b)) else {
            // A blank line: the server ignores it.
            return;
        };
        let end = line[start..]
            .iter()
            .position(blank)
            .map_or(line.len(), |e| start + e);
        // The word is whole unless it runs to the end of a line kept only in part.
        let name = if end < line.len() || line.len() == len {
            command(&line[start..end])
        } else {
            None
        };
        let argc = line.split(blank).filter(|w| !w.is_empty()).count() as u64;
        s.command(out, name.unwrap_or(OTHER), argc);
    }

    /// Response: a top-level value is complete.
    fn top_done(&mut self, s: &mut Session, out: &mut Output) {
        if self.blob_err {
            self.blob_err = false;
            let code = self.cap_code();
            s.response(out, self.probation, reply(true, code));
        }
        self.open = false;
    }

    /// Response: the header of a top-level reply (not a simple one).
    fn top_reply(&mut self, s: &mut Session, out: &mut Output, t: u8) {
        if matches!(
            t,
            b'_' | b',' | b'#' | b'(' | b'=' | b'!' | b'%' | b'~' | b'>' | b'|'
        ) {
            s.resp3 = true;
        }
        match t {
            b'|' | b'>' => self.open = false,
            b'!' => self.blob_err = true,
            _ => {
                self.open = false;
                s.response(out, self.probation, reply(false, None));
            }
        }
    }

    /// Response: a top-level simple reply (`+`, `-`, `:`, …).
    fn top_simple(
        &mut self,
        s: &mut Session,
        out: &mut Output,
        t: u8,
        rest: &[u8],
        complete: bool,
    ) {
        match t {
            b'-' => {
                self.open = false;
                s.response(out, self.probation, reply(true, error_code(rest, complete)));
            }
            b'+' if s.gate == Gate::Subscribed && s.reset_asked && complete && rest == b"RESET" => {
                self.open = false;
                s.gate = Gate::Open;
                s.quota = 0;
                s.reset_asked = false;
            }
            _ => self.top_reply(s, out, t),
        }
    }

    /// The code of a blob error from its captured start.
    fn cap_code(&self) -> Option<Box<str>> {
        error_code(
            &self.cap[..self.cap_len],
            self.cap_len as u64 == self.cap_want,
        )
    }
}

fn reply(error: bool, code: Option<Box<str>>) -> Message {
    Message {
        code,
        ..Message::response(0, error)
    }
}

/// An error's first word, when it is 1..=32 bytes of `[A-Z_]`. `complete`: `text` is all
/// of it (else a word running to its end may go on).
fn error_code(text: &[u8], complete: bool) -> Option<Box<str>> {
    let word = match text.iter().position(|&b| b == b' ') {
        Some(end) => &text[..end],
        None if complete => text,
        None => return None,
    };
    if word.is_empty()
        || word.len() > 32
        || !word.iter().all(|&b| b.is_ascii_uppercase() || b == b'_')
    {
        return None;
    }
    Some(
        word.iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into_boxed_str(),
    )
}

/// A RESP type byte.
fn is_type(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'('
            | b'='
            | b'!'
            | b'%'
            | b'~'
            | b'>'
            | b'|'
            | b'.'
            | b';'
    )
}

/// A type whose line is a length or count (short).
fn is_header(b: u8) -> bool {
    matches!(
        b,
        b'$' | b'*' | b'=' | b'!' | b'%' | b'~' | b'>' | b'|' | b'.' | b';' | b'_' | b'#'
    )
}

/// A simple value's text is valid for its type (`complete`: `rest` is all of it).
fn simple_ok(t: u8, rest: &[u8], complete: bool) -> bool {
    match t {
        b':' => complete && int(rest).is_ok(),
        b'_' => rest.is_empty(),
        b'#' => rest == b"t" || rest == b"f",
        b'(' => {
            let digits = rest.strip_prefix(b"-").unwrap_or(rest);
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
        }
        b',' => {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
        }
        _ => true,
    }
}

/// A RESP integer (`-?[0-9]{1,19}`, in range).
fn int(b: &[u8]) -> Result<i64, Bad> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(Bad);
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(Bad);
        }
        // 19 digits fit in a u64.
        v = v * 10 + u64::from(d - b'0');
    }
    if neg {
        0i64.checked_sub_unsigned(v).ok_or(Bad)
    } else {
        i64::try_from(v).map_err(|_| Bad)
    }
}

/// Parser for one Redis connection.
pub struct RedisParser {
    role: Role,
    req: Side,
    resp: Side,
    session: Session,
}

impl RedisParser {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            req: Side::new(true),
            resp: Side::new(false),
            session: Session {
                owed: 0,
                gate: Gate::Open,
                quota: 0,
                req_silent: false,
                reset_asked: false,
                resp3: false,
                resp_off: false,
            },
        }
    }
}

impl Parser for RedisParser {
    fn feed(&mut self, dir: Dir, data: &[u8], unseen: u64, out: &mut Output) {
        let side = if dir == self.role.request_dir() {
            &mut self.req
        } else {
            &mut self.resp
        };
        side.feed(&mut self.session, data, unseen, out);
    }
}

/// The Redis 7 command set (top-level names; container commands' subcommands are not
/// told apart), sorted by bytes for binary search.
pub const COMMANDS: &[&str] = &[
    "ACL",
    "APPEND",
    "ASKING",
    "AUTH",
    "BGREWRITEAOF",
    "BGSAVE",
    "BITCOUNT",
    "BITFIELD",
    "BITFIELD_RO",
    "BITOP",
    "BITPOS",
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZMPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "CLIENT",
    "CLUSTER",
    "COMMAND",
    "CONFIG",
    "COPY",
    "DBSIZE",
    "DEBUG",
    "DECR",
    "DECRBY",
    "DEL",
    "DISCARD",
    "DUMP",
    "ECHO",
    "EVAL",
    "EVALSHA",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXEC",
    "EXISTS",
    "EXPIRE",
    "EXPIREAT",
    "EXPIRETIME",
    "FAILOVER",
    "FCALL",
    "FCALL_RO",
    "FLUSHALL",
    "FLUSHDB",
    "FUNCTION",
    "GEOADD",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUS",
    "GEORADIUSBYMEMBER",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GEOSEARCHSTORE",
    "GET",
    "GETBIT",
    "GETDEL",
    "GETEX",
    "GETRANGE",
    "GETSET",
    "HDEL",
    "HELLO",
    "HEXISTS",
    "HEXPIRE",
    "HEXPIREAT",
    "HEXPIRETIME",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HMSET",
    "HPERSIST",
    "HPEXPIRE",
    "HPEXPIREAT",
    "HPEXPIRETIME",
    "HPTTL",
    "HRANDFIELD",
    "HSCAN",
    "HSET",
    "HSETNX",
    "HSTRLEN",
    "HTTL",
    "HVALS",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "INFO",
    "KEYS",
    "LASTSAVE",
    "LATENCY",
    "LCS",
    "LINDEX",
    "LINSERT",
    "LLEN",
    "LMOVE",
    "LMPOP",
    "LOLWUT",
    "LPOP",
    "LPOS",
    "LPUSH",
    "LPUSHX",
    "LRANGE",
    "LREM",
    "LSET",
    "LTRIM",
    "MEMORY",
    "MGET",
    "MIGRATE",
    "MODULE",
    "MONITOR",
    "MOVE",
    "MSET",
    "MSETNX",
    "MULTI",
    "OBJECT",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PEXPIRETIME",
    "PFADD",
    "PFCOUNT",
    "PFDEBUG",
    "PFMERGE",
    "PFSELFTEST",
    "PING",
    "PSETEX",
    "PSUBSCRIBE",
    "PSYNC",
    "PTTL",
    "PUBLISH",
    "PUBSUB",
    "PUNSUBSCRIBE",
    "QUIT",
    "RANDOMKEY",
    "READONLY",
    "READWRITE",
    "RENAME",
    "RENAMENX",
    "REPLCONF",
    "REPLICAOF",
    "RESET",
    "RESTORE",
    "RESTORE-ASKING",
    "ROLE",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SAVE",
    "SCAN",
    "SCARD",
    "SCRIPT",
    "SDIFF",
    "SDIFFSTORE",
    "SELECT",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SHUTDOWN",
    "SINTER",
    "SINTERCARD",
    "SINTERSTORE",
    "SISMEMBER",
    "SLAVEOF",
    "SLOWLOG",
    "SMEMBERS",
    "SMISMEMBER",
    "SMOVE",
    "SORT",
    "SORT_RO",
    "SPOP",
    "SPUBLISH",
    "SRANDMEMBER",
    "SREM",
    "SSCAN",
    "SSUBSCRIBE",
    "STRLEN",
    "SUBSCRIBE",
    "SUBSTR",
    "SUNION",
    "SUNIONSTORE",
    "SUNSUBSCRIBE",
    "SWAPDB",
    "SYNC",
    "TIME",
    "TOUCH",
    "TTL",
    "TYPE",
    "UNLINK",
    "UNSUBSCRIBE",
    "UNWATCH",
    "WAIT",
    "WAITAOF",
    "WATCH",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XGROUP",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREADGROUP",
    "XREVRANGE",
    "XSETID",
    "XTRIM",
    "ZADD",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTER",
    "ZINTERCARD",
    "ZINTERSTORE",
    "ZLEXCOUNT",
    "ZMPOP",
    "ZMSCORE",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANGESTORE",
    "ZRANK",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
    "ZUNIONSTORE",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Counters;
    use crate::testing::Rng;
    use crate::{Conn, Exchange, Kind, Protocol};

    /// RESP array of bulk strings.
    fn cmd(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    /// What a parser emitted, simplified: requests by method, responses by (error, code).
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Seen {
        requests: Vec<&'static str>,
        responses: Vec<(bool, Option<String>)>,
        malformed: u64,
    }

    impl Seen {
        fn add(&mut self, out: &mut Output) {
            for m in out.messages.drain(..) {
                match m.kind {
                    Kind::Request => self.requests.push(m.method),
                    Kind::Response => self.responses.push((m.error, m.code.map(String::from))),
                }
            }
            self.malformed += std::mem::take(&mut out.malformed);
        }
    }

    /// A client-side parser fed `(dir, data, unseen)` calls.
    fn run(calls: &[(Dir, &[u8], u64)]) -> Seen {
        let mut p = RedisParser::new(Role::Client);
        let mut out = Output::default();
        let mut seen = Seen::default();
        for &(dir, data, unseen) in calls {
            p.feed(dir, data, unseen, &mut out);
            seen.add(&mut out);
        }
        seen
    }

    fn ok() -> (bool, Option<String>) {
        (false, None)
    }

    fn err(code: &str) -> (bool, Option<String>) {
        (true, Some(code.to_string()))
    }

    /// Calls through a connection: `(ts, dir, data, unseen)`.
    fn conn(calls: &[(u64, Dir, &[u8], u64)]) -> (Conn, Vec<Exchange>, Counters) {
        let mut c = Conn::new();
        let mut done = Vec::new();
        let mut counters = Counters::default();
        for &(ts, dir, data, unseen) in calls {
            c.feed(ts, dir, data, unseen, &mut done, &mut counters);
        }
        (c, done, counters)
    }

    use Dir::{Recv, Send};

    #[test]
    fn redis_command_table() {
        assert!(COMMANDS.len() >= 240);
        assert!(
            COMMANDS
                .windows(2)
                .all(|w| w[0].as_bytes() < w[1].as_bytes()),
            "sorted, unique"
        );
        for c in COMMANDS {
            assert!(c.len() <= NAME_MAX);
            assert_eq!(command(c.as_bytes()), Some(*c));
            assert_eq!(command(c.to_ascii_lowercase().as_bytes()), Some(*c));
        }
        assert!(KEYS.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            command(b"georadiusbymember_ro"),
            Some("GEORADIUSBYMEMBER_RO")
        );
        assert_eq!(command(b"GEORADIUSBYMEMBER_"), None);
        assert_eq!(command(b"GEORADIUSBYMEMBE"), None);
        assert_eq!(command(b"get"), Some("GET"));
        assert_eq!(command(b"GeTeX"), Some("GETEX"));
        assert_eq!(command(b"FOO"), None);
        assert_eq!(command(b""), None);
        assert_eq!(command(&[b'A'; 40]), None);
    }

    #[test]
    fn redis_integers() {
        assert_eq!(int(b"0").ok(), Some(0));
        assert_eq!(int(b"-1").ok(), Some(-1));
        assert_eq!(int(b"9223372036854775807").ok(), Some(i64::MAX));
        assert_eq!(int(b"-9223372036854775808").ok(), Some(i64::MIN));
        for bad in [
            &b"9223372036854775808"[..],
            b"-9223372036854775809",
            b"99999999999999999999",
            b"",
            b"-",
            b"1a",
            b"+1",
        ] {
            assert!(int(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn redis_detect() {
        let set = cmd(&[b"SET", b"k", b"v"]);
        assert_eq!(detect(Send, &set), Some(Role::Client));
        assert_eq!(detect(Recv, &set), Some(Role::Server));
        assert_eq!(detect(Send, &cmd(&[b"hgetall", b"h"])), Some(Role::Client));
        assert_eq!(detect(Send, &cmd(&[b"PING"])), Some(Role::Client));
        assert_eq!(detect(Send, b"PING\r\n"), Some(Role::Client));
        assert_eq!(detect(Recv, b"ping\r\n"), Some(Role::Server));
        // Enough of the first command to see its name.
        assert_eq!(detect(Send, &set[..13]), Some(Role::Client));
    }

    #[test]
    fn redis_detect_negatives() {
        let mut tls = vec![
            0x16, 0x03, 0x01, 0x00, 0xf1, 0x01, 0x00, 0x00, 0xed, 0x03, 0x03,
        ];
        tls.extend([7u8; 40]);
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"GET /users/1 HTTP/1.0\r\n\r\n",
            b"SET / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00\x00",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            &tls,
            b"*3\r\n$3\r\nFOO\r\n$1\r\na\r\n",
            b"*0\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$3\r\nGE",
            b"*1\r\n$4\r\nGET\r\n",
            b"*x\r\n$3\r\nGET\r\n",
            b"+OK\r\n",
            b"-ERR no\r\n",
            b"GET key\r\n",
            b"PING",
            b"PINGPONG\r\n",
            b"",
        ];
        for c in cases {
            assert_eq!(detect(Send, c), None, "{:?}", String::from_utf8_lossy(c));
            assert_eq!(detect(Recv, c), None);
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for i in 0..10_000 {
            let mut buf = [0u8; 48];
            rng.fill(&mut buf);
            if i % 2 == 0 {
                buf[0] = b'*';
            }
            assert_eq!(detect(Send, &buf), None);
        }
    }

    #[test]
    fn redis_basic_exchange_through_conn() {
        let set = cmd(&[b"SET", b"greeting", b"hello"]);
        let get = cmd(&[b"GET", b"greeting"]);
        let incr = cmd(&[b"incr", b"counter"]);
        let del = cmd(&[b"DEL", b"greeting", b"counter"]);
        let (c, done, counters) = conn(&[
            (1000, Send, &set, 0),
            (1500, Recv, b"+OK\r\n", 0),
            (2000, Send, &get, 0),
            (2300, Recv, b"$5\r\nhello\r\n", 0),
            (3000, Send, &incr, 0),
            (3010, Recv, b":1\r\n", 0),
            (4000, Send, &del, 0),
            (4100, Recv, b":2\r\n", 0),
            (5000, Send, &get, 0),
            (5040, Recv, b"$-1\r\n", 0),
        ]);
        assert_eq!(c.protocol(), Some((Protocol::Redis, Role::Client)));
        let got: Vec<_> = done
            .iter()
            .map(|e| (e.method, e.error, e.latency_ns))
            .collect();
        assert_eq!(
            got,
            [
                ("SET", false, 500),
                ("GET", false, 300),
                ("INCR", false, 10),
                ("DEL", false, 100),
                ("GET", false, 40)
            ]
        );
        assert!(
            done.iter()
                .all(|e| e.protocol == Protocol::Redis && e.role == Role::Client && e.status == 0)
        );
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn redis_server_side() {
        // The server's socket: requests received, replies sent.
        let mut p = RedisParser::new(Role::Server);
        let mut out = Output::default();
        p.feed(Recv, &cmd(&[b"GET", b"k"]), 0, &mut out);
        p.feed(Send, b"$1\r\nv\r\n", 0, &mut out);
        let mut seen = Seen::default();
        seen.add(&mut out);
        assert_eq!(seen.requests, ["GET"]);
        assert_eq!(seen.responses, [ok()]);
    }

    #[test]
    fn redis_errors() {
        let seen = run(&[
            (Send, &cmd(&[b"LPUSH", b"s", b"x"]), 0),
            (
                Recv,
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                0,
            ),
            (Send, &cmd(&[b"FOO", b"bar"]), 0),
            (
                Recv,
                b"-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n",
                0,
            ),
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (Recv, b"-MOVED 3999 127.0.0.1:6381\r\n", 0),
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (Recv, b"-Error lowercase words are no code\r\n", 0),
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (Recv, b"-NOAUTH\r\n", 0),
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (
                Recv,
                b"-THIS_IS_A_VERY_LONG_ERROR_CODE_WORD_OVER_32 x\r\n",
                0,
            ),
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (Recv, b"!21\r\nSYNTAX invalid syntax\r\n", 0),
        ]);
        assert_eq!(
            seen.requests,
            ["LPUSH", OTHER, "GET", "GET", "GET", "GET", "GET"]
        );
        assert_eq!(
            seen.responses,
            [
                err("WRONGTYPE"),
                err("ERR"),
                err("MOVED"),
                (true, None),
                err("NOAUTH"),
                (true, None),
                err("SYNTAX")
            ]
        );
        assert_eq!(seen.malformed, 0);

        // Through a connection: error, code and pairing.
        let (_, done, counters) = conn(&[
            (10, Send, &cmd(&[b"HGET", b"s", b"f"]), 0),
            (25, Recv, b"-WRONGTYPE Operation against a key\r\n", 0),
        ]);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].method, done[0].error, done[0].code.as_deref()),
            ("HGET", true, Some("WRONGTYPE"))
        );
        assert_eq!(done[0].latency_ns, 15);
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn redis_pipelined() {
        let mut reqs = Vec::new();
        let mut replies = Vec::new();
        let mut want = Vec::new();
        for i in 0..100 {
            let key = format!("key:{i}");
            match i % 4 {
                0 => {
                    reqs.extend(cmd(&[b"SET", key.as_bytes(), b"some value\r\nwith CRLF"]));
                    replies.extend_from_slice(b"+OK\r\n");
                    want.push(("SET", ok()));
                }
                1 => {
                    reqs.extend(cmd(&[b"GET", key.as_bytes()]));
                    replies.extend_from_slice(b"$21\r\nsome value\r\nwith CRLF\r\n");
                    want.push(("GET", ok()));
                }
                2 => {
                    reqs.extend(cmd(&[b"INCR", key.as_bytes()]));
                    replies.extend_from_slice(b"-WRONGTYPE not an integer\r\n");
                    want.push(("INCR", err("WRONGTYPE")));
                }
                _ => {
                    reqs.extend(cmd(&[b"MGET", key.as_bytes(), b"a", b"b"]));
                    replies.extend_from_slice(b"*3\r\n$1\r\nx\r\n$-1\r\n$2\r\nyz\r\n");
                    want.push(("MGET", ok()));
                }
            }
        }
        // Replies in three calls split mid-token: inside a length, inside CRLF.
        let a = replies.iter().position(|&b| b == b'$').unwrap() + 2;
        let b = replies.len() / 2 + 1;
        let b = b + replies[b..].iter().position(|&x| x == b'\r').unwrap() + 1;
        let seen = run(&[
            (Send, &reqs, 0),
            (Recv, &replies[..a], 0),
            (Recv, &replies[a..b], 0),
            (Recv, &replies[b..], 0),
        ]);
        assert_eq!(seen.requests, want.iter().map(|w| w.0).collect::<Vec<_>>());
        assert_eq!(
            seen.responses,
            want.iter().map(|w| w.1.clone()).collect::<Vec<_>>()
        );
        assert_eq!(seen.malformed, 0);

        // Through a connection, each exchange pairs with its own command.
        let (_, done, counters) = conn(&[
            (100, Send, &reqs, 0),
            (200, Recv, &replies[..a], 0),
            (300, Recv, &replies[a..b], 0),
            (400, Recv, &replies[b..], 0),
        ]);
        assert_eq!(done.len(), 100);
        for (e, w) in done.iter().zip(&want) {
            assert_eq!((e.method, e.error), (w.0, w.1.0));
        }
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn redis_large_value_unseen() {
        // A 1 MB SET value: 512 bytes copied, the rest unseen, then the next command.
        let value = vec![b'x'; 1 << 20];
        let set = cmd(&[b"SET", b"big", &value]);
        let get = cmd(&[b"GET", b"small"]);
        let unseen = (set.len() - 512) as u64;
        let (_, done, counters) = conn(&[
            (10, Send, &set[..512], unseen),
            (20, Recv, b"+OK\r\n", 0),
            (30, Send, &get, 0),
            (35, Recv, b"$3\r\nabc\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| (e.method, e.latency_ns)).collect();
        assert_eq!(got, [("SET", 10), ("GET", 5)]);
        assert_eq!(counters, Counters::default());

        // The server's side: the value arrives over many reads, each 512 copied + unseen,
        // the last holding the value's end and the next command.
        let mut p = RedisParser::new(Role::Server);
        let mut out = Output::default();
        let mut stream = set.clone();
        stream.extend_from_slice(&get);
        let mut at = 0;
        while stream.len() - at > 65_536 {
            p.feed(Recv, &stream[at..at + 512], 65_536 - 512, &mut out);
            at += 65_536;
        }
        p.feed(Recv, &stream[at..], 0, &mut out);
        let mut seen = Seen::default();
        seen.add(&mut out);
        assert_eq!(seen.requests, ["SET", "GET"]);
        assert_eq!(seen.malformed, 0);

        // A big reply too: a 1 MB bulk, seen in part, then the next exchange.
        let mut reply = b"$1048576\r\n".to_vec();
        reply.extend_from_slice(&value);
        reply.extend_from_slice(b"\r\n");
        let (_, done, counters) = conn(&[
            (10, Send, &cmd(&[b"GET", b"big"]), 0),
            (20, Recv, &reply[..512], (reply.len() - 512) as u64),
            (30, Send, &get, 0),
            (40, Recv, b"$-1\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| (e.method, e.latency_ns)).collect();
        assert_eq!(got, [("GET", 10), ("GET", 10)]);
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn redis_resp3() {
        let hello_reply = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n\
            $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
            $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
        let seen = run(&[
            (Send, &cmd(&[b"HELLO", b"3"]), 0),
            (Recv, hello_reply, 0),
            (Send, &cmd(&[b"SMEMBERS", b"s"]), 0),
            (Recv, b"~3\r\n+a\r\n+b\r\n:7\r\n", 0),
            (Send, &cmd(&[b"HGETALL", b"h"]), 0),
            // An attribute, then the reply it describes; a push in between replies.
            (
                Recv,
                b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n",
                0,
            ),
            (Recv, b"%1\r\n+f\r\n+v\r\n", 0),
            (Recv, b">4\r\n+pubsub\r\n+message\r\n+chan\r\n+hi\r\n", 0),
            (Send, &cmd(&[b"EXISTS", b"a"]), 0),
            (Recv, b"#t\r\n", 0),
            (Send, &cmd(&[b"INCRBYFLOAT", b"f", b"1.5"]), 0),
            (Recv, b",3.5\r\n", 0),
            (Send, &cmd(&[b"GET", b"missing"]), 0),
            (Recv, b"_\r\n", 0),
            (Send, &cmd(&[b"DEBUG", b"PROTOCOL", b"bignum"]), 0),
            (Recv, b"(3492890328409238509324850943850943825024385\r\n", 0),
            (Send, &cmd(&[b"LOLWUT"]), 0),
            (Recv, b"=15\r\ntxt:Some string\r\n", 0),
            // Streamed string and streamed aggregate.
            (Send, &cmd(&[b"GET", b"s"]), 0),
            (
                Recv,
                b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n",
                0,
            ),
            (Send, &cmd(&[b"LRANGE", b"l", b"0", b"-1"]), 0),
            (Recv, b"*?\r\n:1\r\n*2\r\n:2\r\n:3\r\n.\r\n", 0),
            // A nested attribute does not count as an element.
            (Send, &cmd(&[b"MGET", b"a", b"b"]), 0),
            (Recv, b"*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n", 0),
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (Recv, b"!9\r\nERR oops!\r\n", 0),
        ]);
        assert_eq!(
            seen.requests,
            [
                "HELLO",
                "SMEMBERS",
                "HGETALL",
                "EXISTS",
                "INCRBYFLOAT",
                "GET",
                "DEBUG",
                "LOLWUT",
                "GET",
                "LRANGE",
                "MGET",
                "GET"
            ]
        );
        let mut want = vec![ok(); 11];
        want.push(err("ERR"));
        assert_eq!(seen.responses, want);
        assert_eq!(seen.malformed, 0);
    }

    #[test]
    fn redis_multi_exec() {
        let (_, done, counters) = conn(&[
            (1, Send, &cmd(&[b"MULTI"]), 0),
            (2, Recv, b"+OK\r\n", 0),
            (3, Send, &cmd(&[b"SET", b"a", b"1"]), 0),
            (4, Recv, b"+QUEUED\r\n", 0),
            (5, Send, &cmd(&[b"INCR", b"a"]), 0),
            (6, Recv, b"+QUEUED\r\n", 0),
            (7, Send, &cmd(&[b"LPUSH", b"a", b"x"]), 0),
            (8, Recv, b"+QUEUED\r\n", 0),
            (9, Send, &cmd(&[b"EXEC"]), 0),
            (
                10,
                Recv,
                b"*3\r\n+OK\r\n:2\r\n-WRONGTYPE Operation against a key\r\n",
                0,
            ),
            // Pipelined, with an error queuing (arity) and EXECABORT.
            (
                11,
                Send,
                &[
                    cmd(&[b"MULTI"]),
                    cmd(&[b"GET"]),
                    cmd(&[b"DEL", b"a"]),
                    cmd(&[b"EXEC"]),
                ]
                .concat(),
                0,
            ),
            (
                12,
                Recv,
                b"+OK\r\n-ERR wrong number of arguments for 'get' command\r\n+QUEUED\r\n",
                0,
            ),
            (
                13,
                Recv,
                b"-EXECABORT Transaction discarded because of previous errors.\r\n",
                0,
            ),
            (
                14,
                Send,
                &[cmd(&[b"MULTI"]), cmd(&[b"DISCARD"])].concat(),
                0,
            ),
            (15, Recv, b"+OK\r\n+OK\r\n", 0),
        ]);
        let got: Vec<_> = done
            .iter()
            .map(|e| (e.method, e.error, e.code.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("MULTI", false, None),
                ("SET", false, None),
                ("INCR", false, None),
                ("LPUSH", false, None),
                ("EXEC", false, None),
                ("MULTI", false, None),
                ("GET", true, Some("ERR")),
                ("DEL", false, None),
                ("EXEC", true, Some("EXECABORT")),
                ("MULTI", false, None),
                ("DISCARD", false, None),
            ]
        );
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn redis_subscribe_mode() {
        let sub_reply = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n";
        let message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n";
        let pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
        let (_, done, counters) = conn(&[
            // A reply still owed when SUBSCRIBE goes out is paired.
            (
                1,
                Send,
                &[
                    cmd(&[b"SELECT", b"1"]),
                    cmd(&[b"SUBSCRIBE", b"news", b"sport"]),
                ]
                .concat(),
                0,
            ),
            (2, Recv, b"+OK\r\n", 0),
            (3, Recv, sub_reply, 0),
            (4, Recv, message, 0),
            (5, Send, &cmd(&[b"PING"]), 0),
            (6, Recv, pong, 0),
            (7, Recv, message, 0),
            (8, Send, &cmd(&[b"PSUBSCRIBE", b"n*"]), 0),
            (9, Recv, b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n", 0),
            (
                10,
                Recv,
                b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\nx\r\n",
                0,
            ),
            // RESET leaves subscribe mode: pairing resumes after its reply.
            (
                11,
                Send,
                &[cmd(&[b"RESET"]), cmd(&[b"GET", b"k"])].concat(),
                0,
            ),
            (12, Recv, message, 0),
            (13, Recv, b"+RESET\r\n$1\r\nv\r\n", 0),
            (14, Send, &cmd(&[b"DEL", b"k"]), 0),
            (15, Recv, b":1\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| (e.method, e.latency_ns)).collect();
        assert_eq!(got, [("SELECT", 1), ("GET", 2), ("DEL", 1)]);
        assert_eq!(counters, Counters::default());

        // RESP3: confirmations and messages are pushes; other commands pair as usual.
        let (_, done, counters) = conn(&[
            (1, Send, &cmd(&[b"HELLO", b"3"]), 0),
            (2, Recv, b"%1\r\n$5\r\nproto\r\n:3\r\n", 0),
            (3, Send, &cmd(&[b"SUBSCRIBE", b"news"]), 0),
            (4, Recv, b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n", 0),
            (5, Send, &cmd(&[b"GET", b"k"]), 0),
            (
                6,
                Recv,
                b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n$1\r\nv\r\n",
                0,
            ),
            (7, Send, &cmd(&[b"UNSUBSCRIBE"]), 0),
            (
                8,
                Recv,
                b">3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n",
                0,
            ),
            (9, Send, &cmd(&[b"PING"]), 0),
            (10, Recv, b"+PONG\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| (e.method, e.latency_ns)).collect();
        assert_eq!(got, [("HELLO", 1), ("GET", 1), ("PING", 1)]);
        assert_eq!(counters, Counters::default());

        // UNSUBSCRIBE outside subscribe mode (RESP2): one reply per channel.
        let unsub = |ch: &[u8]| {
            let mut r = format!("*3\r\n$11\r\nunsubscribe\r\n${}\r\n", ch.len()).into_bytes();
            r.extend_from_slice(ch);
            r.extend_from_slice(b"\r\n:0\r\n");
            r
        };
        let (_, done, counters) = conn(&[
            (1, Send, &cmd(&[b"UNSUBSCRIBE", b"a", b"b"]), 0),
            (2, Recv, &[unsub(b"a"), unsub(b"b")].concat(), 0),
            (3, Send, &cmd(&[b"GET", b"k"]), 0),
            (4, Recv, b"$-1\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| e.method).collect();
        assert_eq!(got, ["UNSUBSCRIBE", "UNSUBSCRIBE", "GET"]);
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn redis_monitor_and_replication() {
        let (_, done, counters) = conn(&[
            (1, Send, &cmd(&[b"MONITOR"]), 0),
            (2, Recv, b"+OK\r\n", 0),
            (
                3,
                Recv,
                b"+1700000000.123456 [0 127.0.0.1:50000] \"GET\" \"k\"\r\n",
                0,
            ),
            (
                4,
                Recv,
                b"+1700000000.223456 [0 127.0.0.1:50000] \"SET\" \"k\" \"v\"\r\n",
                0,
            ),
            (5, Send, &cmd(&[b"RESET"]), 0),
            (6, Recv, b"+RESET\r\n", 0),
            (7, Send, &cmd(&[b"PING"]), 0),
            (8, Recv, b"+PONG\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| e.method).collect();
        assert_eq!(got, ["MONITOR", "PING"]);
        assert_eq!(counters, Counters::default());

        // A replica's connection: the RDB (no trailing CRLF) and the command stream that
        // follow PSYNC's reply are not parsed.
        let mut rdb =
            b"+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n$6\r\nREDIS0".to_vec();
        rdb.extend_from_slice(&cmd(&[b"SELECT", b"0"]));
        let (_, done, counters) = conn(&[
            (1, Send, &cmd(&[b"REPLCONF", b"listening-port", b"6380"]), 0),
            (2, Recv, b"+OK\r\n", 0),
            (3, Send, &cmd(&[b"PSYNC", b"?", b"-1"]), 0),
            (4, Recv, &rdb, 0),
            (5, Recv, &cmd(&[b"SET", b"k", b"v"]), 0),
            (6, Send, &cmd(&[b"REPLCONF", b"ACK", b"0"]), 0),
            (7, Recv, b"garbage\x00\xff", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| e.method).collect();
        assert_eq!(got, ["REPLCONF", "PSYNC"]);
        assert_eq!(counters, Counters::default());
    }

    #[test]
    fn redis_inline_commands() {
        let (c, done, counters) = conn(&[
            (1, Send, b"PING\r\n", 0),
            (2, Recv, b"+PONG\r\n", 0),
            (
                3,
                Send,
                b"set k v\r\nGET k\n\r\n  incr   n  \r\nNOSUCH x\r\n",
                0,
            ),
            (
                4,
                Recv,
                b"+OK\r\n$1\r\nv\r\n:1\r\n-ERR unknown command 'NOSUCH'\r\n",
                0,
            ),
        ]);
        assert_eq!(c.protocol(), Some((Protocol::Redis, Role::Client)));
        let got: Vec<_> = done.iter().map(|e| (e.method, e.error)).collect();
        assert_eq!(
            got,
            [
                ("PING", false),
                ("SET", false),
                ("GET", false),
                ("INCR", false),
                (OTHER, true)
            ]
        );
        assert_eq!(counters, Counters::default());
        // An HTTP request never starts a Redis connection.
        let (c, done, _) = conn(&[(1, Send, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0)]);
        assert_ne!(c.protocol().map(|p| p.0), Some(Protocol::Redis));
        assert!(done.is_empty());
    }

    #[test]
    fn redis_empty_arrays_ignored() {
        let seen = run(&[
            (Send, b"*0\r\n*-1\r\n", 0),
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (Recv, b"$1\r\nv\r\n", 0),
            // Replies with empty aggregates are replies.
            (Send, &cmd(&[b"KEYS", b"*"]), 0),
            (Recv, b"*0\r\n", 0),
            (Send, &cmd(&[b"BLPOP", b"l", b"1"]), 0),
            (Recv, b"*-1\r\n", 0),
        ]);
        assert_eq!(seen.requests, ["GET", "KEYS", "BLPOP"]);
        assert_eq!(seen.responses, [ok(), ok(), ok()]);
        assert_eq!(seen.malformed, 0);
    }

    /// The exchange split at every byte boundary, and fed one byte at a time.
    #[test]
    fn redis_every_split() {
        let reqs = [
            cmd(&[b"SET", b"k", b"v\r\n"]),
            b"PING\r\n".to_vec(),
            cmd(&[b"HGETALL", b"h"]),
            cmd(&[b"GET", b"k"]),
        ]
        .concat();
        let replies: &[u8] =
            b"+OK\r\n+PONG\r\n|1\r\n+a\r\n:1\r\n%1\r\n$1\r\nf\r\n*2\r\n:1\r\n,2.5\r\n-ERR x y\r\n";
        let want = Seen {
            requests: vec!["SET", "PING", "HGETALL", "GET"],
            responses: vec![ok(), ok(), ok(), err("ERR")],
            malformed: 0,
        };
        for cut in 0..=reqs.len().max(replies.len()) {
            let (r1, r2) = reqs.split_at(cut.min(reqs.len()));
            let (p1, p2) = replies.split_at(cut.min(replies.len()));
            let seen = run(&[(Send, r1, 0), (Send, r2, 0), (Recv, p1, 0), (Recv, p2, 0)]);
            assert_eq!(seen, want, "cut at {cut}");
        }
        let mut calls: Vec<(Dir, &[u8], u64)> = Vec::new();
        calls.extend(reqs.chunks(1).map(|c| (Send, c, 0)));
        calls.extend(replies.chunks(1).map(|c| (Recv, c, 0)));
        assert_eq!(run(&calls), want);
    }

    #[test]
    fn redis_framing_loss_request() {
        // A pipelined batch of which only the first 64 bytes were copied: the commands
        // wholly in the unseen bytes are not emitted; their replies find nothing waiting.
        let batch: Vec<u8> = (0..10)
            .flat_map(|i| cmd(&[b"INCR", format!("counter:{i}").as_bytes()]))
            .collect();
        let (_, done, counters) = conn(&[
            (1, Send, &batch[..64], (batch.len() - 64) as u64),
            (
                2,
                Recv,
                b":1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
                0,
            ),
            (3, Send, &cmd(&[b"GET", b"k"]), 0),
            (4, Recv, b"$1\r\nv\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| e.method).collect();
        // Two whole commands and the start of a third (its name cut short: OTHER).
        assert_eq!(got, ["INCR", "INCR", OTHER, "GET"]);
        assert_eq!((counters.malformed, counters.gaps), (0, 1));
        assert_eq!(counters.unmatched_responses, 7);
        assert_eq!(counters.unanswered, 0);

        // Garbage where a header is due: counted once, not again for calls that fail to
        // resynchronise, and the connection picks up at the next command.
        let seen = run(&[
            (Send, &cmd(&[b"GET", b"a"]), 0),
            (Send, b"*2\r\n$3\r\nGET\r\n#garbage\r\n", 0),
            (Send, b"more garbage", 0),
            (Send, b"*1\r\n$3\r\nGET\r\n", 0),
            (Send, b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n", 0),
        ]);
        assert_eq!(seen.requests, ["GET", "GET", "GET", "DEL"]);
        assert_eq!(seen.malformed, 1);
    }

    #[test]
    fn redis_framing_loss_response() {
        // Pipelined replies cut short by the snaplen: one response per request waiting,
        // so later exchanges pair right.
        let batch: Vec<u8> = (0..4)
            .flat_map(|i| cmd(&[b"GET", format!("k{i}").as_bytes()]))
            .collect();
        let mut replies = Vec::new();
        for _ in 0..4 {
            replies.extend_from_slice(b"$100\r\n");
            replies.extend_from_slice(&[b'v'; 100]);
            replies.extend_from_slice(b"\r\n");
        }
        let (_, done, counters) = conn(&[
            (1, Send, &batch, 0),
            (2, Recv, &replies[..150], (replies.len() - 150) as u64),
            (3, Send, &cmd(&[b"DEL", b"k"]), 0),
            (4, Recv, b":1\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| (e.method, e.latency_ns)).collect();
        assert_eq!(
            got,
            [("GET", 1), ("GET", 1), ("GET", 1), ("GET", 1), ("DEL", 1)]
        );
        assert_eq!((counters.malformed, counters.gaps), (0, 1));
        assert_eq!(counters.unmatched_responses, 0);

        // A long array reply truncated, not pipelined: nothing is waiting, exact pairing.
        let mut long = b"*1000\r\n".to_vec();
        for i in 0..1000 {
            long.extend(format!("$6\r\nit{i:04}\r\n").bytes());
        }
        let (_, done, counters) = conn(&[
            (1, Send, &cmd(&[b"LRANGE", b"l", b"0", b"-1"]), 0),
            (2, Recv, &long[..512], (long.len() - 512) as u64),
            // The server's next write goes on with the same reply: not a resync point
            // (nothing waiting), even though it starts at an element.
            (3, Recv, b"$6\r\nit0998\r\n$6\r\nit0999\r\n", 0),
            (4, Send, &cmd(&[b"GET", b"k"]), 0),
            (5, Recv, b"$1\r\nv\r\n", 0),
        ]);
        let got: Vec<_> = done.iter().map(|e| (e.method, e.latency_ns)).collect();
        assert_eq!(got, [("LRANGE", 1), ("GET", 1)]);
        assert_eq!((counters.malformed, counters.gaps), (0, 1));
        assert_eq!(counters.unmatched_responses, 0);

        // Bad bytes: counted once; a resync call that fails is taken back entirely.
        let seen = run(&[
            (Send, &cmd(&[b"GET", b"a"]), 0),
            (Recv, b"?what\r\n", 0),
            (Send, &cmd(&[b"GET", b"b"]), 0),
            (Recv, b"+OK\r\n$3\r\nabcde\r\n", 0),
            (Recv, b"$1\r\nb\r\n", 0),
        ]);
        assert_eq!(seen.requests, ["GET", "GET"]);
        assert_eq!(seen.responses, [ok(), ok()]);
        assert_eq!(seen.malformed, 1);
    }

    #[test]
    fn redis_bounds() {
        // Nesting deeper than MAX_DEPTH is malformed.
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        let seen = run(&[(Send, &cmd(&[b"GET", b"k"]), 0), (Recv, &deep, 0)]);
        assert_eq!(seen.responses.len(), 1, "the reply started: emitted");
        assert_eq!(seen.malformed, 1);
        // MAX_DEPTH levels are fine.
        let ok_deep = &deep[4..];
        let seen = run(&[(Send, &cmd(&[b"GET", b"k"]), 0), (Recv, ok_deep, 0)]);
        assert_eq!((seen.responses.len(), seen.malformed), (1, 0));

        // A huge count is not preallocated: the elements are counted as they come.
        let mut p = RedisParser::new(Role::Client);
        let mut out = Output::default();
        p.feed(Send, &cmd(&[b"LRANGE", b"l", b"0", b"-1"]), 0, &mut out);
        p.feed(Recv, b"*1000000\r\n", 0, &mut out);
        for _ in 0..1000 {
            p.feed(Recv, &b":1\r\n".repeat(1000), 0, &mut out);
        }
        assert!(p.resp.stack.capacity() <= MAX_DEPTH);
        p.feed(Send, &cmd(&[b"PING"]), 0, &mut out);
        p.feed(Recv, b"+PONG\r\n", 0, &mut out);
        let mut seen = Seen::default();
        seen.add(&mut out);
        assert_eq!(seen.requests, ["LRANGE", "PING"]);
        assert_eq!(seen.responses, [ok(), ok()]);
        assert_eq!(seen.malformed, 0);

        // Lines: a header line too long, a text line over MAX_HELD.
        let seen = run(&[
            (Send, &cmd(&[b"GET", b"k"]), 0),
            (Recv, b"$000000000000000000000000000001\r\n", 0),
        ]);
        assert_eq!(seen.malformed, 1);
        let mut long = b"+".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HELD + 1));
        let mut p = RedisParser::new(Role::Client);
        let mut out = Output::default();
        p.feed(Send, &cmd(&[b"GET", b"k"]), 0, &mut out);
        for piece in long.chunks(1000) {
            p.feed(Recv, piece, 0, &mut out);
            assert!(p.resp.kept <= LINE_KEEP);
        }
        assert_eq!(out.malformed, 1);
        // A text line under the bound is fine, whatever its length, split or not.
        let mut p = RedisParser::new(Role::Client);
        let mut out = Output::default();
        let mut line = b"-ERR ".to_vec();
        line.extend(std::iter::repeat_n(b'e', 5000));
        line.extend_from_slice(b"\r\n");
        p.feed(Send, &cmd(&[b"EVAL", b"x", b"0"]), 0, &mut out);
        p.feed(Recv, &line[..3000], 0, &mut out);
        p.feed(Recv, &line[3000..], 0, &mut out);
        assert_eq!(out.malformed, 0);
        assert_eq!(
            out.messages.last().map(|m| (m.error, m.code.as_deref())),
            Some((true, Some("ERR")))
        );
    }

    /// A random RESP value (any type) into `v`.
    fn gen_value(r: &mut Rng, v: &mut Vec<u8>, depth: u32) {
        let kinds = if depth >= 4 { 11 } else { 17 };
        match r.below(kinds) {
            0 => v.extend_from_slice(b"+OK\r\n"),
            1 => v.extend_from_slice(b"-ERR something\r\n"),
            2 => v.extend(format!(":{}\r\n", r.next() as i64).bytes()),
            3 | 4 => {
                let n = r.below(40);
                v.extend(format!("${n}\r\n").bytes());
                v.extend(r.bytes(n));
                v.extend_from_slice(b"\r\n");
            }
            5 => v.extend_from_slice(b"$-1\r\n"),
            6 => v.extend_from_slice(b"_\r\n"),
            7 => v.extend_from_slice(b",3.14\r\n"),
            8 => v.extend_from_slice(b"#f\r\n"),
            9 => v.extend_from_slice(b"(-12345678901234567890\r\n"),
            10 => v.extend_from_slice(b"=7\r\ntxt:abc\r\n"),
            11 | 12 => {
                let n = r.below(4);
                let t = [b'*', b'~', b'>'][r.below(3)];
                v.extend(format!("{}{n}\r\n", t as char).bytes());
                for _ in 0..n {
                    gen_value(r, v, depth + 1);
                }
            }
            13 => {
                let n = r.below(3);
                v.extend(format!("%{n}\r\n").bytes());
                for _ in 0..2 * n {
                    gen_value(r, v, depth + 1);
                }
            }
            14 => {
                v.extend_from_slice(b"|1\r\n+meta\r\n");
                gen_value(r, v, depth + 1);
                gen_value(r, v, depth + 1);
            }
            15 => {
                v.extend_from_slice(b"$?\r\n");
                for _ in 0..r.below(3) {
                    let n = 1 + r.below(10);
                    v.extend(format!(";{n}\r\n").bytes());
                    v.extend(r.bytes(n));
                    v.extend_from_slice(b"\r\n");
                }
                v.extend_from_slice(b";0\r\n");
            }
            _ => {
                v.extend_from_slice(b"*?\r\n");
                for _ in 0..r.below(3) {
                    gen_value(r, v, depth + 1);
                }
                v.extend_from_slice(b".\r\n");
            }
        }
    }

    /// A random top-level reply; whether it is a response (else a push) and an error.
    fn gen_reply(r: &mut Rng, v: &mut Vec<u8>) -> Option<bool> {
        match r.below(10) {
            0 => {
                // Out of band.
                v.extend_from_slice(b">2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n");
                None
            }
            1 => {
                v.extend_from_slice(b"-WRONGTYPE bad\r\n");
                Some(true)
            }
            2 => {
                v.extend_from_slice(b"!7\r\nERR bad\r\n");
                Some(true)
            }
            3 => {
                v.extend_from_slice(b"|1\r\n+a\r\n+b\r\n+OK\r\n");
                Some(false)
            }
            _ => loop {
                let start = v.len();
                gen_value(r, v, 0);
                match v[start] {
                    // Top-level attributes and pushes are generated above.
                    b'>' | b'|' => v.truncate(start),
                    b'-' | b'!' => return Some(true),
                    _ => return Some(false),
                }
            },
        }
    }

    const NAMES: &[&[u8]] = &[
        b"GET", b"set", b"HSET", b"LPUSH", b"ZADD", b"FOOBAR", b"XADD", b"EVAL",
    ];

    fn gen_command(r: &mut Rng, v: &mut Vec<u8>) -> &'static str {
        let name = NAMES[r.below(NAMES.len())];
        if r.below(8) == 0 {
            v.extend_from_slice(name);
            v.extend_from_slice(b" key 1\r\n");
        } else {
            let mut args: Vec<Vec<u8>> = vec![name.to_vec()];
            for _ in 0..r.below(4) {
                let n = r.below(60);
                args.push(r.bytes(n));
            }
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            v.extend(cmd(&refs));
        }
        command(name).unwrap_or(OTHER)
    }

    /// Random cut points of `len` bytes into calls.
    fn cuts(r: &mut Rng, len: usize) -> Vec<usize> {
        let mut c = vec![0];
        let mut at = 0;
        while at < len {
            at = (at + 1 + r.below(80)).min(len);
            c.push(at);
        }
        c
    }

    /// Valid streams, split anywhere: exactly the commands and replies generated.
    #[test]
    fn redis_random_valid_streams() {
        let mut r = Rng(0x1234_5678_9abc_def1);
        for _ in 0..3000 {
            let (mut reqs, mut replies) = (Vec::new(), Vec::new());
            let (mut want_req, mut want_resp) = (Vec::new(), Vec::new());
            for _ in 0..1 + r.below(8) {
                want_req.push(gen_command(&mut r, &mut reqs));
                loop {
                    if let Some(error) = gen_reply(&mut r, &mut replies) {
                        want_resp.push(error);
                        break;
                    }
                }
            }
            let mut p = RedisParser::new(Role::Client);
            let mut out = Output::default();
            let rc = cuts(&mut r, reqs.len());
            let pc = cuts(&mut r, replies.len());
            for w in rc.windows(2) {
                p.feed(Send, &reqs[w[0]..w[1]], 0, &mut out);
            }
            for w in pc.windows(2) {
                p.feed(Recv, &replies[w[0]..w[1]], 0, &mut out);
            }
            let mut seen = Seen::default();
            seen.add(&mut out);
            assert_eq!(seen.malformed, 0, "{:?}", String::from_utf8_lossy(&replies));
            assert_eq!(seen.requests, want_req);
            assert_eq!(
                seen.responses.iter().map(|x| x.0).collect::<Vec<_>>(),
                want_resp
            );
        }
    }

    /// Corrupted streams, random splits and unseen bytes: no panic, bounded state.
    #[test]
    fn redis_fuzz() {
        let mut r = Rng(0xdead_beef_cafe_f00d);
        let (mut messages, mut malformed, mut exchanges) = (0, 0, 0);
        for iter in 0..20_000 {
            let (mut reqs, mut replies) = (Vec::new(), Vec::new());
            for _ in 0..1 + r.below(6) {
                gen_command(&mut r, &mut reqs);
                gen_reply(&mut r, &mut replies);
            }
            for stream in [&mut reqs, &mut replies] {
                for _ in 0..r.below(4) {
                    if stream.is_empty() {
                        break;
                    }
                    let at = r.below(stream.len());
                    match r.below(4) {
                        0 => stream[at] = r.next() as u8,
                        1 => stream[at] = b"*$:+-\r\n%|>?;.0123456789"[r.below(23)],
                        2 => {
                            stream.remove(at);
                        }
                        _ => stream.insert(at, r.next() as u8),
                    }
                }
            }
            let role = if iter % 2 == 0 {
                Role::Client
            } else {
                Role::Server
            };
            let (req_dir, resp_dir) = (
                role.request_dir(),
                if role == Role::Client { Recv } else { Send },
            );
            let mut calls: Vec<(Dir, &[u8], u64)> = Vec::new();
            let (rc, pc) = (cuts(&mut r, reqs.len()), cuts(&mut r, replies.len()));
            let (mut a, mut b) = (rc.windows(2), pc.windows(2));
            loop {
                let w = if r.below(2) == 0 {
                    a.next().map(|w| (req_dir, &reqs, w))
                } else {
                    None
                };
                let w = w.or_else(|| b.next().map(|w| (resp_dir, &replies, w)));
                let w = w.or_else(|| a.next().map(|w| (req_dir, &reqs, w)));
                let Some((dir, s, w)) = w else { break };
                let piece = &s[w[0]..w[1]];
                // Some calls copied only in part.
                let copied = if r.below(5) == 0 {
                    r.below(piece.len() + 1)
                } else {
                    piece.len()
                };
                calls.push((dir, &piece[..copied], (piece.len() - copied) as u64));
            }
            let mut p = RedisParser::new(role);
            let mut out = Output::default();
            for &(dir, data, unseen) in &calls {
                p.feed(dir, data, unseen, &mut out);
                assert!(out.messages.len() <= data.len() + 2 * MAX_PENDING);
                messages += out.messages.len();
                malformed += std::mem::take(&mut out.malformed);
                out.messages.clear();
                for side in [&p.req, &p.resp] {
                    assert!(side.stack.len() <= MAX_DEPTH && side.stack.capacity() <= MAX_DEPTH);
                    assert!(side.kept <= LINE_KEEP && side.total <= MAX_HELD + 80);
                    assert!(side.cap_len <= CAP);
                }
                assert!(p.session.owed <= MAX_PENDING as u64);
            }
            // The same through a connection (detection included).
            let mut c = Conn::new();
            let (mut done, mut counters) = (Vec::new(), Counters::default());
            for (ts, &(dir, data, unseen)) in calls.iter().enumerate() {
                c.feed(ts as u64, dir, data, unseen, &mut done, &mut counters);
            }
            c.close(&mut counters);
            exchanges += done.len();
        }
        // Not vacuous: most of it parsed, much of it lost and found again.
        assert!(
            messages > 50_000 && malformed > 5_000 && exchanges > 5_000,
            "{messages} {malformed} {exchanges}"
        );
    }
}
