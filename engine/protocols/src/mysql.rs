//! MySQL (and MariaDB) classic protocol.
//!
//! Packets are a 3-byte little-endian length, a sequence id and the payload; a payload of
//! 0xffffff bytes continues in the next packet. The handshake (greeting, handshake
//! response, authentication exchanges up to the server's OK or ERR) yields nothing; an SSL
//! request, compression or a binlog dump turns the connection opaque.
//!
//! Each command (a client packet with sequence id 0) is one request: `COM_QUERY` by its
//! statement's verb ([`crate::sql::verb`]), `COM_STMT_PREPARE` as `PREPARE` (the statement's
//! verb is kept by the id in the server's answer), `COM_STMT_EXECUTE` by its prepared
//! statement's verb, `COM_PING` as `PING`, `COM_INIT_DB` as `USE`, the other commands with a
//! response as [`OTHER`]; `COM_QUIT`, `COM_STMT_CLOSE` and `COM_STMT_SEND_LONG_DATA` have no
//! response and yield nothing. The response is complete at the command's final packet: OK,
//! ERR (its error number as `code`), or the end of its last result set (result sets are
//! skipped by packet length, unseen bytes included).
//!
//! Framing lost (a packet header among unseen bytes, or packets that do not fit the
//! protocol) counts one malformed stream. Every request emitted still gets exactly one
//! response: those whose responses can no longer be followed get a plain (non-error)
//! response at once. The requests resynchronise at the start of a later call that starts
//! with a plausible command, and the responses at the start of the first call after it.

use crate::sql::{self, Fed, Frames, Framing, Link, PREFIX_MAX, Session, Step};
use crate::{Dir, MAX_PENDING, Message, OTHER, Output, Parser, Role};
use std::collections::{HashMap, VecDeque};

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_STATISTICS: u8 = 0x09;
const COM_PROCESS_INFO: u8 = 0x0a;
const COM_DEBUG: u8 = 0x0d;
const COM_PING: u8 = 0x0e;
const COM_CHANGE_USER: u8 = 0x11;
const COM_BINLOG_DUMP: u8 = 0x12;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1a;
const COM_SET_OPTION: u8 = 0x1b;
const COM_STMT_FETCH: u8 = 0x1c;
const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
const COM_RESET_CONNECTION: u8 = 0x1f;

const CLIENT_COMPRESS: u32 = 0x20;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
const CLIENT_ZSTD_COMPRESSION: u32 = 1 << 26;
const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// A packet of this length continues in the next one.
const MAX_PACKET: u32 = 0xff_ffff;
/// Columns a result set may have.
const MAX_COLUMNS: u64 = 4096;
/// Fewest bytes of a copy taken as cut by the snaplen (detection).
const MIN_CUT: usize = 128;
/// Prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 1024;
/// Commands awaiting their responses (the protocol does not pipeline; clients rarely do).
const MAX_QUEUE: usize = 64;

fn u24(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A length-encoded integer: its value and its size.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let n = match *b.first()? {
        v @ 0..=0xfa => return Some((u64::from(v), 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(1..1 + n)?;
    let v = bytes.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x));
    Some((v, 1 + n))
}

/// Whether `data`, the first payload seen on a connection in direction `dir`, is this
/// protocol; if so, which end the socket is.
///
/// The server's greeting (received: client; sent: server), or, on a connection met
/// mid-stream, whole command packets with sequence id 0 (sent: client; received: server).
pub fn detect(dir: Dir, data: &[u8]) -> Option<Role> {
    if greeting(data) {
        return Some(match dir {
            Dir::Recv => Role::Client,
            Dir::Send => Role::Server,
        });
    }
    if commands(data, None) {
        return Some(match dir {
            Dir::Send => Role::Client,
            Dir::Recv => Role::Server,
        });
    }
    None
}

/// A server greeting, protocol version 10, alone in the call.
fn greeting(data: &[u8]) -> bool {
    if data.len() < 4 + 20 {
        return false;
    }
    let len = u24(data) as usize;
    if data[3] != 0 || !(20..=1024).contains(&len) || data.len() > 4 + len {
        return false;
    }
    let p = &data[4..];
    if p[0] != 10 {
        return false;
    }
    let Some(nul) = p[1..].iter().take(64).position(|&b| b == 0) else {
        return false;
    };
    let version = &p[1..1 + nul];
    if version.is_empty()
        || !version[0].is_ascii_digit()
        || !version.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return false;
    }
    // Connection id, 8 bytes of auth data, a zero filler, then the capability flags.
    let filler = 1 + nul + 1 + 4 + 8;
    len >= filler + 3 && p.get(filler).is_none_or(|&b| b == 0)
}

/// Whole command packets with sequence id 0, each plausible, ending with the call's bytes
/// (`unseen` known) or, when not known, with the copied bytes or in a statement's text
/// (in a copy long enough to have been cut by the snaplen).
fn commands(data: &[u8], unseen: Option<u64>) -> bool {
    let total = data.len() as u64 + unseen.unwrap_or(0);
    let mut i = 0usize;
    for _ in 0..16 {
        let Some(h) = data.get(i..i + 5) else {
            return false;
        };
        let len = u24(h);
        if h[3] != 0 || len == 0 || len >= MAX_PACKET {
            return false;
        }
        let end = i as u64 + 4 + u64::from(len);
        let body = &data[i + 5..data.len().min(end as usize)];
        if !command_plausible(h[4], len, body) {
            return false;
        }
        if end == total {
            return true;
        }
        if end > data.len() as u64 {
            // The packet runs past the copy: its statement text was checked.
            return (unseen.is_some() && end < total)
                || (unseen.is_none()
                    && matches!(h[4], COM_QUERY | COM_STMT_PREPARE)
                    && data.len() >= MIN_CUT);
        }
        if end > total {
            return false;
        }
        i = end as usize;
    }
    false
}

/// A command byte and its payload's length and seen bytes (after the command byte) that
/// make sense together.
fn command_plausible(cmd: u8, len: u32, body: &[u8]) -> bool {
    match cmd {
        COM_QUERY => sql::looks_like_sql(query_text(body, None)),
        COM_STMT_PREPARE => sql::looks_like_sql(body),
        COM_STMT_EXECUTE => {
            // Statement id, flags, iteration count 1.
            len >= 10
                && body.get(4).is_none_or(|&f| f <= 0x0f)
                && body
                    .get(5..9)
                    .is_none_or(|c| c.len() < 4 || c == [1, 0, 0, 0])
        }
        COM_PING | COM_QUIT | COM_STATISTICS | COM_RESET_CONNECTION | COM_DEBUG
        | COM_PROCESS_INFO => len == 1,
        COM_INIT_DB => (2..=257).contains(&len) && body.iter().all(|b| b.is_ascii_graphic()),
        COM_STMT_CLOSE | COM_STMT_RESET => len == 5,
        COM_SET_OPTION => {
            len == 3 && body.get(1).is_none_or(|&b| b == 0) && body.first().is_none_or(|&b| b <= 1)
        }
        COM_STMT_FETCH => len == 9,
        _ => false,
    }
}

/// The statement text of a `COM_QUERY` payload (after the command byte): past the query
/// attributes when the client sends them (`CLIENT_QUERY_ATTRIBUTES`; `None`: unknown, and
/// taken from the first byte, text never starting with a control byte).
fn query_text(body: &[u8], attrs: Option<bool>) -> &[u8] {
    let attrs = attrs.unwrap_or_else(|| {
        body.first()
            .is_some_and(|&b| b < 0x20 && !b.is_ascii_whitespace())
    });
    if !attrs {
        return body;
    }
    skip_attributes(body).unwrap_or(&[])
}

/// Past a `COM_QUERY`'s parameter count, parameter set count and parameters.
fn skip_attributes(b: &[u8]) -> Option<&[u8]> {
    let (n, a) = lenenc(b)?;
    let (_sets, s) = lenenc(b.get(a..)?)?;
    let mut i = a + s;
    if n > 0 {
        let n = usize::try_from(n).ok().filter(|&n| n <= 64)?;
        let nulls = b.get(i..i + n.div_ceil(8))?;
        i += n.div_ceil(8);
        // new_params_bind_flag: the types and names follow.
        if *b.get(i)? != 1 {
            return None;
        }
        i += 1;
        let mut types = [0u8; 64];
        for t in types.iter_mut().take(n) {
            *t = *b.get(i)?;
            i += 2;
            let (name, k) = lenenc(b.get(i..)?)?;
            i = i.checked_add(k)?.checked_add(usize::try_from(name).ok()?)?;
        }
        for (k, &t) in types.iter().take(n).enumerate() {
            if nulls[k / 8] & (1 << (k % 8)) != 0 {
                continue;
            }
            let size = match t {
                0x06 => 0,
                0x01 => 1,
                0x02 | 0x0d => 2,
                0x03 | 0x04 | 0x09 => 4,
                0x05 | 0x08 => 8,
                0x07 | 0x0a | 0x0b | 0x0c => 1 + usize::from(*b.get(i)?),
                _ => {
                    let (len, k) = lenenc(b.get(i..)?)?;
                    k.checked_add(usize::try_from(len).ok()?)?
                }
            };
            i = i.checked_add(size)?;
        }
    }
    b.get(i..)
}

/// What a command's response looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// After the handshake response: authentication exchanges up to OK or ERR.
    Handshake,
    /// `COM_CHANGE_USER`: authentication again.
    Auth,
    /// OK, ERR, LOCAL INFILE, or result sets.
    Result,
    /// `COM_STMT_PREPARE_OK` and its parameter and column definitions, or ERR; the verb of
    /// the statement being prepared.
    Prepare(&'static str),
    /// One packet.
    Single,
    /// `COM_FIELD_LIST`: column definitions up to EOF, or ERR.
    FieldList,
    /// `COM_STMT_FETCH`: rows up to EOF, or ERR.
    Rows,
}

#[derive(Debug)]
struct Pending {
    expect: Expect,
    /// A request was emitted: its response must be.
    emit: bool,
    /// Sequence id of the response's first packet.
    seq: u8,
    /// Responses resume at the start of the first call after this command.
    realign: bool,
}

/// After a run of column definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Rows,
    /// A prepared statement's parameters; its columns follow.
    Params {
        cols: u16,
    },
    Cols,
}

/// Where the front command's response is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rs {
    /// Its first packet, or the first of its next result.
    Start,
    Defs {
        left: u64,
        then: Then,
    },
    /// Definitions done: an EOF follows unless `CLIENT_DEPRECATE_EOF`.
    AfterDefs(Then),
    Rows,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hs {
    /// Waiting for the server's greeting.
    Greeting,
    /// Waiting for the client's handshake response.
    Response,
    Done,
}

#[derive(Debug)]
struct State {
    role: Role,
    link: Link,
    hs: Hs,
    server_caps: u32,
    /// `CLIENT_DEPRECATE_EOF`, when known (the handshake was seen, or a result set told).
    deprecate_eof: Option<bool>,
    /// `CLIENT_QUERY_ATTRIBUTES`, when known.
    attrs: Option<bool>,
    stmts: HashMap<u32, &'static str>,
    /// The verb of the statement prepared last (MariaDB executes statement id -1 as it).
    last_prepared: Option<&'static str>,
    queue: VecDeque<Pending>,
    /// Requests emitted and not yet answered.
    emitted: usize,
    rs: Rs,
    /// The next response packet is the first of the front command's response.
    fresh: bool,
    /// Sequence id the next response packet must have (`None`: not checked).
    exp: Option<u8>,
    /// A trailing EOF may follow the last response (prepare with `CLIENT_DEPRECATE_EOF`
    /// unknown), with this sequence id.
    stray_eof: Option<u8>,
    req_cont: bool,
    /// The command being continued pushed the queue's last entry.
    req_cont_item: bool,
    resp_cont: bool,
    /// The client is sending a LOCAL INFILE's content.
    infile: bool,
}

/// MySQL parser for one connection.
pub struct MysqlParser {
    req: Frames,
    resp: Frames,
    st: State,
}

impl MysqlParser {
    pub fn new(role: Role) -> Self {
        Self {
            req: Frames::new(false),
            resp: Frames::new(false),
            st: State {
                role,
                link: Link::default(),
                hs: Hs::Done,
                server_caps: 0,
                deprecate_eof: None,
                attrs: None,
                stmts: HashMap::new(),
                last_prepared: None,
                queue: VecDeque::new(),
                emitted: 0,
                rs: Rs::Start,
                fresh: true,
                exp: None,
                stray_eof: None,
                req_cont: false,
                req_cont_item: false,
                resp_cont: false,
                infile: false,
            },
        }
    }
}

impl Parser for MysqlParser {
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

    /// A greeting starts at the handshake.
    fn opens(&mut self, req: bool, data: &[u8]) -> bool {
        let opens = !req && greeting(data);
        if opens {
            self.hs = Hs::Greeting;
        }
        opens
    }

    fn requests_start(data: &[u8], unseen: u64) -> bool {
        commands(data, Some(unseen))
    }

    fn realigned(&mut self, req: bool) {
        if req {
            self.req_cont = false;
            self.infile = false;
        } else {
            self.rs = Rs::Start;
            self.fresh = true;
            self.exp = None;
            self.stray_eof = None;
            self.resp_cont = false;
        }
    }

    /// The front command's response is complete.
    fn complete(&mut self, error: bool, code: Option<Box<str>>, out: &mut Output) {
        sql::answer(&mut self.queue, &mut self.emitted, error, code, out);
        self.rs = Rs::Start;
        self.fresh = true;
        self.exp = None;
    }

    fn responses_gone(&mut self) {
        self.resp_cont = false;
        self.stray_eof = None;
    }

    fn requests(&mut self, f: &mut Frames, data: &[u8], unseen: u64, out: &mut Output) -> Fed {
        f.feed(data, unseen, &mut Req { s: self, out })
    }

    fn responses(&mut self, f: &mut Frames, data: &[u8], unseen: u64, out: &mut Output) -> Fed {
        f.feed(data, unseen, &mut Resp { s: self, out })
    }
}

struct Req<'a> {
    s: &'a mut State,
    out: &'a mut Output,
}

impl Framing for Req<'_> {
    fn header_len(&mut self) -> usize {
        4
    }

    fn header(&mut self, h: &[u8]) -> Option<(u64, usize)> {
        let s = &*self.s;
        let want = if s.req_cont || s.infile {
            0
        } else {
            match s.hs {
                Hs::Greeting => 0,
                Hs::Response => 4,
                Hs::Done if h[3] == 0 => PREFIX_MAX,
                Hs::Done => 0,
            }
        };
        Some((u64::from(u24(h)), want))
    }

    fn message(&mut self, h: &[u8], p: &[u8], cut: bool) -> Step {
        let s = &mut *self.s;
        let len = u24(h);
        let seq = h[3];
        let cont = len == MAX_PACKET;
        if s.req_cont {
            s.req_cont = cont;
            if s.req_cont_item
                && let Some(last) = s.queue.back_mut()
            {
                last.seq = seq.wrapping_add(1);
            }
            return Step::Go;
        }
        if s.infile {
            // The file's content, up to an empty packet.
            s.infile = len != 0;
            return Step::Go;
        }
        s.req_cont = cont;
        s.req_cont_item = false;
        match s.hs {
            Hs::Greeting => Step::Go,
            Hs::Response if seq == 1 => s.handshake_response(len, p),
            Hs::Response => Step::Go,
            Hs::Done if seq == 0 => s.command(p, cut, self.out),
            Hs::Done => Step::Go,
        }
    }
}

struct Resp<'a> {
    s: &'a mut State,
    out: &'a mut Output,
}

impl Framing for Resp<'_> {
    fn header_len(&mut self) -> usize {
        4
    }

    fn header(&mut self, h: &[u8]) -> Option<(u64, usize)> {
        let want = match self.s.rs {
            _ if self.s.resp_cont => 0,
            Rs::Defs { .. } => 4,
            _ => 32,
        };
        Some((u64::from(u24(h)), want))
    }

    fn message(&mut self, h: &[u8], p: &[u8], cut: bool) -> Step {
        self.s.response(u24(h), h[3], p, cut, self.out)
    }
}

impl State {
    fn handshake_response(&mut self, len: u32, p: &[u8]) -> Step {
        let Some(mut caps) = u32le(p, 0) else {
            return Step::Lost;
        };
        if caps & CLIENT_SSL != 0 && len == 32 {
            // SSL request: TLS follows.
            return Step::Stop;
        }
        if self.server_caps != 0 {
            caps &= self.server_caps;
        }
        if caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION) != 0 {
            return Step::Stop;
        }
        self.deprecate_eof = Some(caps & CLIENT_DEPRECATE_EOF != 0);
        self.attrs = Some(caps & CLIENT_QUERY_ATTRIBUTES != 0);
        self.hs = Hs::Done;
        self.queue.push_back(Pending {
            expect: Expect::Handshake,
            emit: false,
            seq: 2,
            realign: false,
        });
        Step::Go
    }

    fn command(&mut self, p: &[u8], cut: bool, out: &mut Output) -> Step {
        let Some((&cmd, body)) = p.split_first() else {
            return Step::Lost;
        };
        let (method, expect) = match cmd {
            COM_QUERY => (sql::verb(query_text(body, self.attrs)), Expect::Result),
            COM_STMT_PREPARE => {
                let verb = sql::verb(body);
                self.last_prepared = Some(verb);
                ("PREPARE", Expect::Prepare(verb))
            }
            COM_STMT_EXECUTE => match u32le(body, 0) {
                // MariaDB: the statement prepared last, its answer possibly not yet seen.
                Some(u32::MAX) => (self.last_prepared.unwrap_or(OTHER), Expect::Result),
                Some(id) => (
                    self.stmts.get(&id).copied().unwrap_or(OTHER),
                    Expect::Result,
                ),
                None if cut => (OTHER, Expect::Result),
                None => return Step::Lost,
            },
            COM_STMT_CLOSE => {
                if let Some(id) = u32le(body, 0) {
                    self.stmts.remove(&id);
                }
                return Step::Go;
            }
            COM_STMT_SEND_LONG_DATA | COM_QUIT => return Step::Go,
            COM_PING => ("PING", Expect::Single),
            COM_INIT_DB => ("USE", Expect::Single),
            COM_FIELD_LIST => (OTHER, Expect::FieldList),
            COM_CHANGE_USER => (OTHER, Expect::Auth),
            COM_STMT_FETCH => (OTHER, Expect::Rows),
            COM_PROCESS_INFO => (OTHER, Expect::Result),
            COM_BINLOG_DUMP | COM_BINLOG_DUMP_GTID => return Step::Stop,
            0x05..=0x09
            | 0x0c
            | 0x0d
            | 0x15
            | COM_STMT_RESET
            | COM_SET_OPTION
            | COM_RESET_CONNECTION => (OTHER, Expect::Single),
            _ => return Step::Lost,
        };
        let emit = self.emitted < MAX_PENDING;
        if emit {
            out.messages.push(Message::request(method));
            self.emitted += 1;
        }
        let realign = self.link.mark(&self.queue);
        self.queue.push_back(Pending {
            expect,
            emit,
            seq: 1,
            realign,
        });
        self.req_cont_item = true;
        Step::Go
    }

    fn response(&mut self, len: u32, seq: u8, p: &[u8], cut: bool, out: &mut Output) -> Step {
        if self.resp_cont {
            self.resp_cont = len == MAX_PACKET;
            if let Some(e) = self.exp.as_mut() {
                *e = seq.wrapping_add(1);
            }
            return Step::Go;
        }
        self.resp_cont = len == MAX_PACKET;
        if self.hs == Hs::Greeting {
            if seq == 0 && p.first() == Some(&10) {
                self.server_caps = greeting_caps(p);
                self.hs = Hs::Response;
            }
            return Step::Go;
        }
        let Some(front) = self.queue.front() else {
            // Unsolicited (a server closing an idle connection), or a command not seen.
            return Step::Go;
        };
        let expect = front.expect;
        let expected = if self.fresh {
            match expect {
                Expect::Handshake | Expect::Auth => None,
                _ => Some(front.seq),
            }
        } else {
            self.exp
        };
        let b0 = p.first().copied();
        if let Some(e) = expected
            && e != seq
        {
            if self.fresh && self.stray_eof == Some(seq) && b0 == Some(0xfe) && len < 9 {
                // The EOF closing a prepared statement's definitions: EOFs are in use.
                self.stray_eof = None;
                self.deprecate_eof.get_or_insert(false);
                return Step::Go;
            }
            return Step::Lost;
        }
        self.stray_eof = None;
        self.fresh = false;
        // In step again: a later loss counts anew.
        self.link.resp_outage = false;
        if expected.is_some() {
            self.exp = Some(seq.wrapping_add(1));
        }
        let Some(b0) = b0 else {
            return match self.rs {
                Rs::Defs { .. } => self.defs(seq, p, cut, out),
                Rs::AfterDefs(_) | Rs::Rows if cut && len >= 9 => Step::Go,
                _ => Step::Lost,
            };
        };
        match self.rs {
            Rs::Start => self.first(expect, len, b0, p, out),
            Rs::Defs { .. } => self.defs(seq, p, cut, out),
            Rs::AfterDefs(then) => {
                if b0 == 0xfe && len < 9 && self.deprecate_eof != Some(true) {
                    self.deprecate_eof = Some(false);
                    match then {
                        Then::Rows if eof_status(p) & SERVER_STATUS_CURSOR_EXISTS != 0 => {
                            self.complete(false, None, out)
                        }
                        Then::Rows => self.rs = Rs::Rows,
                        Then::Params { cols } if cols > 0 => {
                            self.rs = Rs::Defs {
                                left: u64::from(cols),
                                then: Then::Cols,
                            }
                        }
                        Then::Params { .. } | Then::Cols => self.complete(false, None, out),
                    }
                    return Step::Go;
                }
                if b0 != 0xff {
                    self.deprecate_eof.get_or_insert(true);
                }
                match then {
                    Then::Rows => self.row(len, b0, p, out),
                    Then::Params { cols } if cols > 0 => {
                        self.rs = Rs::Defs {
                            left: u64::from(cols),
                            then: Then::Cols,
                        };
                        self.defs(seq, p, cut, out)
                    }
                    Then::Params { .. } | Then::Cols => Step::Lost,
                }
            }
            Rs::Rows => self.row(len, b0, p, out),
        }
    }

    /// The first packet of a response, or of its next result.
    fn first(&mut self, expect: Expect, len: u32, b0: u8, p: &[u8], out: &mut Output) -> Step {
        match expect {
            Expect::Handshake | Expect::Auth => {
                // More authentication data (0x01) or an auth switch (0xfe) continue.
                if b0 == 0x00 || b0 == 0xff {
                    self.complete(b0 == 0xff, err_code(p), out);
                }
            }
            Expect::Single => self.complete(b0 == 0xff, err_code(p), out),
            Expect::FieldList => match b0 {
                0xff => self.complete(true, err_code(p), out),
                0xfe if len < 9 => self.complete(false, None, out),
                _ => {}
            },
            Expect::Rows => return self.row(len, b0, p, out),
            Expect::Result => match b0 {
                0x00 => {
                    if ok_status(p) & SERVER_MORE_RESULTS_EXISTS == 0 {
                        self.complete(false, None, out);
                    }
                }
                0xff => self.complete(true, err_code(p), out),
                0xfe if len < 9 => self.complete(false, None, out),
                0xfb => {
                    // LOCAL INFILE: the client sends the file, then the server OK or ERR.
                    self.infile = true;
                    self.exp = None;
                }
                _ => {
                    let Some((cols, size)) = lenenc(p) else {
                        return Step::Lost;
                    };
                    if cols == 0 || cols > MAX_COLUMNS || len as usize > size + 1 {
                        return Step::Lost;
                    }
                    // CLIENT_OPTIONAL_RESULTSET_METADATA: a flag byte, 0 for no definitions.
                    self.rs = if len as usize == size + 1 && p.get(size) == Some(&0) {
                        Rs::AfterDefs(Then::Rows)
                    } else {
                        Rs::Defs {
                            left: cols,
                            then: Then::Rows,
                        }
                    };
                }
            },
            Expect::Prepare(verb) => match b0 {
                0x00 if len >= 12 => {
                    let (Some(id), Some(cols), Some(params)) =
                        (u32le(p, 1), u16le(p, 5), u16le(p, 7))
                    else {
                        return Step::Lost;
                    };
                    sql::bounded_insert(&mut self.stmts, MAX_STATEMENTS, id, verb);
                    let metadata = !(len >= 13 && p.get(12) == Some(&0));
                    if !metadata {
                        self.complete(false, None, out);
                    } else if params > 0 {
                        self.rs = Rs::Defs {
                            left: u64::from(params),
                            then: Then::Params { cols },
                        };
                    } else if cols > 0 {
                        self.rs = Rs::Defs {
                            left: u64::from(cols),
                            then: Then::Cols,
                        };
                    } else {
                        self.complete(false, None, out);
                    }
                }
                0xff => self.complete(true, err_code(p), out),
                _ => return Step::Lost,
            },
        }
        Step::Go
    }

    /// A column (or parameter) definition.
    fn defs(&mut self, seq: u8, p: &[u8], cut: bool, out: &mut Output) -> Step {
        let Rs::Defs { left, then } = self.rs else {
            return Step::Lost;
        };
        // Every definition starts with its catalog, "def".
        let catalog = b"\x03def";
        let n = p.len().min(4);
        if p[..n] != catalog[..n] || (n < 4 && !cut) {
            return Step::Lost;
        }
        if left > 1 {
            self.rs = Rs::Defs {
                left: left - 1,
                then,
            };
            return Step::Go;
        }
        match (then, self.deprecate_eof) {
            (Then::Rows, _) | (_, Some(false)) | (Then::Params { cols: 1.. }, None) => {
                self.rs = Rs::AfterDefs(then)
            }
            (Then::Params { cols }, Some(true)) if cols > 0 => {
                self.rs = Rs::Defs {
                    left: u64::from(cols),
                    then: Then::Cols,
                }
            }
            (_, Some(true)) => self.complete(false, None, out),
            (_, None) => {
                // No telling whether an EOF follows: complete, and pass it if it does.
                self.complete(false, None, out);
                self.stray_eof = Some(seq.wrapping_add(1));
            }
        }
        Step::Go
    }

    /// A row, or the end of the rows (EOF, OK with an EOF header, or ERR).
    fn row(&mut self, len: u32, b0: u8, p: &[u8], out: &mut Output) -> Step {
        match b0 {
            0xff => self.complete(true, err_code(p), out),
            0xfe if len < MAX_PACKET => {
                let eof = match self.deprecate_eof {
                    Some(d) => !d,
                    None => len == 5,
                };
                let status = if eof { eof_status(p) } else { ok_status(p) };
                if status & SERVER_MORE_RESULTS_EXISTS != 0 {
                    self.rs = Rs::Start;
                } else {
                    self.complete(false, None, out);
                }
            }
            _ => self.rs = Rs::Rows,
        }
        Step::Go
    }
}

/// The capability flags of a greeting's payload.
fn greeting_caps(p: &[u8]) -> u32 {
    let Some(nul) = p.iter().skip(1).position(|&b| b == 0) else {
        return 0;
    };
    let at = 1 + nul + 1 + 4 + 8 + 1;
    let low = u16le(p, at).unwrap_or(0);
    let high = u16le(p, at + 5).unwrap_or(0);
    u32::from(low) | u32::from(high) << 16
}

/// An ERR packet's error number.
fn err_code(p: &[u8]) -> Option<Box<str>> {
    if p.first() != Some(&0xff) {
        return None;
    }
    u16le(p, 1).map(|c| c.to_string().into_boxed_str())
}

/// An OK packet's status flags (0 when not seen).
fn ok_status(p: &[u8]) -> u16 {
    let status = || {
        let (_, a) = lenenc(p.get(1..)?)?;
        let (_, b) = lenenc(p.get(1 + a..)?)?;
        u16le(p, 1 + a + b)
    };
    status().unwrap_or(0)
}

/// An EOF packet's status flags (0 when not seen).
fn eof_status(p: &[u8]) -> u16 {
    u16le(p, 3).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, D, Rng, Script, summary};
    use crate::{Counters, Exchange, Kind, Protocol};

    const DEPRECATE: u32 = CLIENT_DEPRECATE_EOF;
    const BASE_CAPS: u32 = 0x0000_a685 | 0x0008_0000; // long password, protocol 41, secure conn, plugin auth…

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    fn greeting_pkt(server_caps: u32) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"8.0.36\0");
        p.extend_from_slice(&[1, 0, 0, 0]);
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        p.extend_from_slice(&(server_caps as u16).to_le_bytes());
        p.push(0xff);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((server_caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"caching_sha2_password\0");
        pkt(0, &p)
    }

    fn handshake_response(caps: u32) -> Vec<u8> {
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(255);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"root\0");
        p.push(32);
        p.extend_from_slice(&[7; 32]);
        p.extend_from_slice(b"caching_sha2_password\0");
        pkt(1, &p)
    }

    fn ok(seq: u8, status: u16) -> Vec<u8> {
        let mut p = vec![0, 1, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        pkt(seq, &p)
    }

    fn err(seq: u8, code: u16) -> Vec<u8> {
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.extend_from_slice(b"#42S02Table 'db.nope' doesn't exist");
        pkt(seq, &p)
    }

    fn eof(seq: u8, status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        pkt(seq, &p)
    }

    /// An OK packet with an EOF header, ending rows under CLIENT_DEPRECATE_EOF.
    fn ok_eof(seq: u8, status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        pkt(seq, &p)
    }

    fn coldef(seq: u8, name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "db", "t", "t", name, name] {
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
        p.extend_from_slice(&[0x0c, 0x21, 0, 0xff, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        pkt(seq, &p)
    }

    fn query(sql: &str) -> Vec<u8> {
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(sql.as_bytes());
        pkt(0, &p)
    }

    /// A result set: column count, definitions, [EOF], rows, end; `status` on the end.
    fn result_set(
        cols: usize,
        rows: &[Vec<u8>],
        deprecate: bool,
        status: u16,
        seq0: u8,
    ) -> (Vec<u8>, u8) {
        let mut v = pkt(seq0, &[cols as u8]);
        let mut seq = seq0 + 1;
        for c in 0..cols {
            v.extend(coldef(seq, &format!("c{c}")));
            seq += 1;
        }
        if !deprecate {
            v.extend(eof(seq, 0));
            seq += 1;
        }
        for r in rows {
            v.extend(pkt(seq, r));
            seq = seq.wrapping_add(1);
        }
        v.extend(if deprecate {
            ok_eof(seq, status)
        } else {
            eof(seq, status)
        });
        (v, seq.wrapping_add(1))
    }

    fn row(n: usize, fill: u8) -> Vec<u8> {
        let mut r = Vec::new();
        r.push(0xfc);
        r.extend_from_slice(&(n as u16).to_le_bytes());
        r.extend(std::iter::repeat_n(fill, n));
        r
    }

    /// A response's calls as a receiver reading with a big buffer sees them: each call
    /// starts 100 bytes before a packet that follows a big one, 512 bytes of it copied.
    fn spread(rs: &[u8]) -> Vec<(Vec<u8>, u64)> {
        testing::spread(rs, |b| u24(b) as usize + 4)
    }

    fn prepare_ok(seq: u8, id: u32, cols: u16, params: u16, deprecate: bool) -> Vec<u8> {
        let mut p = vec![0];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&cols.to_le_bytes());
        p.extend_from_slice(&params.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0]);
        let mut v = pkt(seq, &p);
        let mut s = seq + 1;
        for (n, then_eof) in [
            (params, params > 0 && !deprecate),
            (cols, cols > 0 && !deprecate),
        ] {
            for k in 0..n {
                v.extend(coldef(s, &format!("p{k}")));
                s += 1;
            }
            if then_eof {
                v.extend(eof(s, 0));
                s += 1;
            }
        }
        v
    }

    fn execute(id: u32) -> Vec<u8> {
        let mut p = vec![COM_STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&[0, 1, 0x08, 0, 42, 0, 0, 0, 0, 0, 0, 0]);
        pkt(0, &p)
    }

    fn run_parser(role: Role, script: &Script) -> (Vec<Message>, u64) {
        testing::run_parser(MysqlParser::new(role), role, script, check_bounds)
    }

    fn run_conn(role: Role, script: &Script) -> (Vec<Exchange>, Counters) {
        testing::run_conn(Protocol::Mysql, role, script)
    }

    fn check_bounds(p: &MysqlParser) {
        assert!(p.req.held() <= crate::MAX_HELD);
        assert!(p.resp.held() <= crate::MAX_HELD);
        assert!(p.st.queue.len() <= MAX_QUEUE);
        assert!(p.st.stmts.len() <= MAX_STATEMENTS);
        assert!(p.st.emitted <= MAX_PENDING);
    }

    fn handshake(caps: u32) -> Script {
        vec![
            (D::S, greeting_pkt(0xffff_ffff), 0),
            (D::C, handshake_response(caps), 0),
            (D::S, pkt(2, &[0x01, 0x04]), 0), // caching_sha2 full authentication
            (D::C, pkt(3, b"secret\0"), 0),
            (D::S, ok(4, 2), 0),
        ]
    }

    /// A whole session: handshake, a big SELECT over many calls with unseen bytes,
    /// an INSERT, a failing query, prepare + execute twice.
    fn session(deprecate: bool) -> (Script, Vec<&'static str>) {
        let mut s = handshake(BASE_CAPS | if deprecate { DEPRECATE } else { 0 });
        s.push((D::C, query("SELECT a, b FROM t"), 0));
        // Rows of 1000 bytes: 3 per call's copy, past it unseen.
        let rows: Vec<Vec<u8>> = (0..40).map(|k| row(1000, k as u8)).collect();
        let (rs, _) = result_set(2, &rows, deprecate, 2, 1);
        s.extend(spread(&rs).into_iter().map(|(d, u)| (D::S, d, u)));
        s.push((D::C, query("insert into t values (1)"), 0));
        s.push((D::S, ok(1, 2), 0));
        s.push((D::C, query("select * from nope"), 0));
        s.push((D::S, err(1, 1146), 0));
        let mut prep = vec![COM_STMT_PREPARE];
        prep.extend_from_slice(b"UPDATE t SET a = ? WHERE b = ?");
        s.push((D::C, pkt(0, &prep), 0));
        s.push((D::S, prepare_ok(1, 7, 0, 2, deprecate), 0));
        for _ in 0..2 {
            s.push((D::C, execute(7), 0));
            s.push((D::S, ok(1, 2), 0));
        }
        let mut close = vec![COM_STMT_CLOSE];
        close.extend_from_slice(&7u32.to_le_bytes());
        s.push((D::C, pkt(0, &close), 0));
        s.push((D::C, execute(7), 0));
        s.push((D::S, err(1, 1243), 0));
        s.push((D::C, pkt(0, &[COM_PING]), 0));
        s.push((D::S, ok(1, 2), 0));
        s.push((D::C, pkt(0, &[COM_QUIT]), 0));
        let want = vec![
            "> SELECT",
            "< ok",
            "> INSERT",
            "< ok",
            "> SELECT",
            "< ERR 1146",
            "> PREPARE",
            "< ok",
            "> UPDATE",
            "< ok",
            "> UPDATE",
            "< ok",
            "> OTHER",
            "< ERR 1243",
            "> PING",
            "< ok",
        ];
        (s, want)
    }

    #[test]
    fn mysql_session_both_eof_modes_and_roles() {
        for deprecate in [false, true] {
            let (script, want) = session(deprecate);
            for role in [Role::Client, Role::Server] {
                let (ms, malformed) = run_parser(role, &script);
                assert_eq!(summary(&ms), want, "deprecate {deprecate} {role:?}");
                assert_eq!(malformed, 0);
            }
        }
    }

    #[test]
    fn mysql_session_through_conn() {
        let (script, _) = session(true);
        let (done, c) = run_conn(Role::Client, &script);
        assert_eq!(c, Counters::default());
        let got: Vec<_> = done
            .iter()
            .map(|e| (e.method, e.error, e.code.as_deref(), e.latency_ns))
            .collect();
        // Handshake: 5 calls; the SELECT at call 6, its response over the calls up to the
        // INSERT's.
        let insert_at = script
            .iter()
            .position(|c| c.1 == query("insert into t values (1)"))
            .unwrap() as u64;
        assert_eq!(got[0], ("SELECT", false, None, (insert_at - 6) * 1000));
        assert_eq!(got[1], ("INSERT", false, None, 1000));
        assert_eq!(got[2], ("SELECT", true, Some("1146"), 1000));
        assert_eq!(got[3].0, "PREPARE");
        assert_eq!(got[4].0, "UPDATE");
        assert_eq!(got[5].0, "UPDATE");
        assert_eq!(got[6], (OTHER, true, Some("1243"), 1000));
        assert_eq!(got[7], ("PING", false, None, 1000));
        assert_eq!(got.len(), 8);
        assert!(
            done.iter()
                .all(|e| e.protocol == Protocol::Mysql && e.role == Role::Client)
        );
    }

    #[test]
    fn mysql_split_at_every_byte() {
        for deprecate in [false, true] {
            let (script, want) = session(deprecate);
            // Only calls with everything copied are split (a split moves the unseen bytes),
            // and not the first, which the connection detects the protocol from.
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
            // And the whole exchange byte by byte per direction run.
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
            let (ms, _) = run_parser(Role::Client, &s);
            assert_eq!(summary(&ms), want);
        }
    }

    #[test]
    fn mysql_ssl_request_stops() {
        let mut ssl = BASE_CAPS | CLIENT_SSL;
        ssl |= 0;
        let mut p = ssl.to_le_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 1, 33]);
        p.extend_from_slice(&[0; 23]);
        let script: Script = vec![
            (D::S, greeting_pkt(0xffff_ffff), 0),
            (D::C, pkt(1, &p), 0),
            (
                D::C,
                b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03".to_vec(),
                0,
            ),
            (D::C, query("SELECT 1"), 0),
            (D::S, ok(1, 2), 0),
        ];
        let (ms, malformed) = run_parser(Role::Client, &script);
        assert!(ms.is_empty());
        assert_eq!(malformed, 0);
        // Compression: opaque as well.
        let mut s = handshake(BASE_CAPS | CLIENT_COMPRESS);
        s.push((D::C, query("SELECT 1"), 0));
        assert!(run_parser(Role::Client, &s).0.is_empty());
    }

    #[test]
    fn mysql_auth_switch_and_failed_login() {
        let mut s = vec![
            (D::S, greeting_pkt(0xffff_ffff), 0),
            (D::C, handshake_response(BASE_CAPS), 0),
        ];
        let mut switch = vec![0xfe];
        switch.extend_from_slice(b"mysql_native_password\0abcdefghijklmnopqrst\0");
        s.push((D::S, pkt(2, &switch), 0));
        s.push((D::C, pkt(3, &[9; 20]), 0));
        s.push((D::S, err(4, 1045), 0));
        assert!(run_parser(Role::Client, &s).0.is_empty());
        // A fast auth success (0x01 0x03) then OK, then a query.
        let mut s = vec![
            (D::S, greeting_pkt(0xffff_ffff), 0),
            (D::C, handshake_response(BASE_CAPS), 0),
            (D::S, [pkt(2, &[1, 3]), ok(3, 2)].concat(), 0),
            (D::C, query("show databases"), 0),
        ];
        let (rs, _) = result_set(1, &[row(5, b'x')], false, 2, 1);
        s.push((D::S, rs, 0));
        assert_eq!(summary(&run_parser(Role::Client, &s).0), ["> SHOW", "< ok"]);
    }

    #[test]
    fn mysql_multi_results_and_infile() {
        let mut s = handshake(BASE_CAPS | DEPRECATE);
        s.push((D::C, query("CALL p()"), 0));
        let (a, next) = result_set(1, &[row(3, b'a')], true, 2 | SERVER_MORE_RESULTS_EXISTS, 1);
        let (b, next) = result_set(
            2,
            &[row(3, b'b'), row(4, b'c')],
            true,
            2 | SERVER_MORE_RESULTS_EXISTS,
            next,
        );
        s.push((D::S, [a, b, ok(next, 2)].concat(), 0));
        s.push((D::C, query("select 1; select 2"), 0));
        let (a, next) = result_set(1, &[row(1, b'1')], true, 2 | SERVER_MORE_RESULTS_EXISTS, 1);
        s.push((D::S, a, 0));
        s.push((D::S, err(next, 1064), 0));
        s.push((
            D::C,
            query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"),
            0,
        ));
        s.push((D::S, pkt(1, b"\xfb/tmp/x"), 0));
        // 300 packets of content: sequence ids wrap through 0.
        let mut content = Vec::new();
        for k in 0..300u32 {
            content.extend(pkt((2 + k) as u8, &[COM_QUERY, b'x', b'y']));
        }
        content.extend(pkt((302u32 % 256) as u8, &[]));
        s.push((D::C, content, 0));
        s.push((D::S, ok((303u32 % 256) as u8, 2), 0));
        s.push((D::C, pkt(0, &[COM_INIT_DB, b'd', b'b']), 0));
        s.push((D::S, ok(1, 2), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(
            summary(&ms),
            [
                "> CALL",
                "< ok",
                "> SELECT",
                "< ERR 1064",
                "> LOAD",
                "< ok",
                "> USE",
                "< ok"
            ]
        );
        assert_eq!(malformed, 0);
    }

    #[test]
    fn mysql_prepare_variants_mid_stream() {
        // Met mid-stream (no handshake): CLIENT_DEPRECATE_EOF unknown, learnt or passed.
        for deprecate in [false, true] {
            for (cols, params) in [(0u16, 0u16), (0, 2), (3, 0), (2, 1)] {
                let mut prep = vec![COM_STMT_PREPARE];
                prep.extend_from_slice(b"select a from t where b = ?");
                let mut s: Script = vec![(D::C, pkt(0, &prep), 0)];
                s.push((D::S, prepare_ok(1, 3, cols, params, deprecate), 0));
                s.push((D::C, execute(3), 0));
                let (rs, _) = result_set(1, &[row(2, b'r')], deprecate, 2, 1);
                s.push((D::S, rs, 0));
                s.push((D::C, query("DELETE FROM t"), 0));
                s.push((D::S, ok(1, 2), 0));
                let (ms, malformed) = run_parser(Role::Client, &s);
                assert_eq!(
                    summary(&ms),
                    ["> PREPARE", "< ok", "> SELECT", "< ok", "> DELETE", "< ok"],
                    "deprecate {deprecate} cols {cols} params {params}"
                );
                assert_eq!(malformed, 0);
                let (done, c) = run_conn(Role::Client, &s);
                assert_eq!(done.len(), 3);
                assert_eq!(c, Counters::default());
            }
        }
    }

    #[test]
    fn mysql_packets_past_16_mib() {
        let mut s = handshake(BASE_CAPS | DEPRECATE);
        // A 16 MiB INSERT: a full packet, mostly unseen, then its continuation.
        let mut first = vec![0xff, 0xff, 0xff, 0, COM_QUERY];
        first.extend_from_slice(b"INSERT INTO blobs VALUES ('");
        first.resize(512, b'x');
        s.push((D::C, first, (MAX_PACKET as u64 + 4) - 512));
        s.push((D::C, pkt(1, b"xxxxxxx')"), 0));
        s.push((D::S, ok(2, 2), 0));
        // A row of 16 MiB and more (its first byte 0xfe: an 8-byte length), then the end.
        s.push((D::C, query("SELECT data FROM blobs"), 0));
        let mut head = pkt(1, &[1]);
        head.extend(coldef(2, "data"));
        let mut big = vec![0xff, 0xff, 0xff, 3, 0xfe];
        big.extend_from_slice(&(20_000_000u64).to_le_bytes());
        big.resize(400, b'y');
        head.extend_from_slice(&big);
        let unseen = (MAX_PACKET as u64 + 4) - big.len() as u64;
        s.push((D::S, head, unseen));
        s.push((D::S, [pkt(4, &[b'y'; 100]), ok_eof(5, 2)].concat(), 0));
        s.push((D::C, pkt(0, &[COM_PING]), 0));
        s.push((D::S, ok(1, 2), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(
            summary(&ms),
            ["> INSERT", "< ok", "> SELECT", "< ok", "> PING", "< ok"]
        );
        assert_eq!(malformed, 0);
    }

    #[test]
    fn mysql_mariadb_execute_last_prepared() {
        let mut s = handshake(BASE_CAPS);
        let mut prep = vec![COM_STMT_PREPARE];
        prep.extend_from_slice(b"INSERT INTO t VALUES (?)");
        // Prepare and execute (id -1) pipelined in one call.
        s.push((D::C, [pkt(0, &prep), execute(u32::MAX)].concat(), 0));
        s.push((D::S, [prepare_ok(1, 9, 0, 1, false), ok(1, 2)].concat(), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(summary(&ms), ["> PREPARE", "> INSERT", "< ok", "< ok"]);
        assert_eq!(malformed, 0);
    }

    #[test]
    fn mysql_query_attributes() {
        let mut s = handshake(BASE_CAPS | CLIENT_QUERY_ATTRIBUTES | DEPRECATE);
        s.push((D::C, pkt(0, b"\x03\x00\x01SELECT 1"), 0));
        s.push((D::S, ok(1, 2), 0));
        // One attribute: a string named "trace".
        let mut q = vec![COM_QUERY, 1, 1, 0, 1, 0xfe, 0, 5];
        q.extend_from_slice(b"trace");
        q.push(3);
        q.extend_from_slice(b"abc");
        q.extend_from_slice(b"UPDATE t SET a = 1");
        s.push((D::C, pkt(0, &q), 0));
        s.push((D::S, ok(1, 2), 0));
        assert_eq!(
            summary(&run_parser(Role::Client, &s).0),
            ["> SELECT", "< ok", "> UPDATE", "< ok"]
        );
        // Mid-stream, unknown: told by the first byte.
        assert_eq!(query_text(b"\x00\x01SELECT 1", None), b"SELECT 1");
        assert_eq!(query_text(b"SELECT 1", None), b"SELECT 1");
        assert_eq!(query_text(b"\nSELECT 1", None), b"\nSELECT 1");
        // Attributes that do not add up: no text, no panic.
        assert_eq!(
            query_text(
                b"\x01\x01\x00\x01\xfe\x00\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xff",
                Some(true)
            ),
            b""
        );
        assert_eq!(
            query_text(b"\x01\x01\x00\x01\xfe\x00\x00\x00DELETE", Some(true)),
            b"DELETE"
        );
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let mut b = [0u8; 24];
            for v in b.iter_mut() {
                *v = [0, 1, 2, 0xfe, 0xfc, 0xff, 0x07][rng.below(7)];
            }
            let _ = query_text(&b, Some(true));
        }
    }

    #[test]
    fn mysql_lost_framing_resynchronises() {
        let mut s = handshake(BASE_CAPS);
        s.push((D::C, query("SELECT * FROM t"), 0));
        // Small rows: headers among the unseen bytes.
        let rows: Vec<Vec<u8>> = (0..500).map(|k| row(20, k as u8)).collect();
        let (rs, _) = result_set(1, &rows, false, 2, 1);
        s.push((D::S, rs[..512].to_vec(), (rs.len() - 512) as u64));
        s.push((D::C, query("UPDATE t SET a = 2"), 0));
        s.push((D::S, ok(1, 2), 0));
        s.push((D::C, query("select nope"), 0));
        s.push((D::S, err(1, 1054), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(
            summary(&ms),
            [
                "> SELECT",
                "< ok",
                "> UPDATE",
                "< ok",
                "> SELECT",
                "< ERR 1054"
            ]
        );
        assert_eq!(malformed, 1);
        let (done, c) = run_conn(Role::Client, &s);
        assert_eq!(done.len(), 3);
        assert_eq!((c.malformed, c.gaps), (0, 1));
        assert_eq!(c.unmatched_responses, 0);
        // In step again, a second loss counts anew.
        s.push((D::C, query("SELECT * FROM t"), 0));
        s.push((D::S, rs[..512].to_vec(), (rs.len() - 512) as u64));
        let (ms, malformed) = run_parser(Role::Client, &s);
        assert_eq!(ms.len(), 8);
        assert_eq!(malformed, 2);

        // Requests lost: a call with several commands, the copy cut; a later call resyncs.
        let mut s = handshake(BASE_CAPS);
        let mut many = Vec::new();
        for k in 0..50 {
            many.extend(query(&format!("insert into t values ({k})")));
        }
        s.push((D::C, many[..100].to_vec(), (many.len() - 100) as u64));
        let oks: Vec<u8> = (0..50).flat_map(|_| ok(1, 2)).collect();
        s.push((D::S, oks, 0));
        s.push((D::C, b"garbage that is not a command".to_vec(), 0));
        s.push((D::S, ok(1, 2), 0));
        s.push((D::C, query("select 2"), 0));
        s.push((D::S, err(1, 1146), 0));
        let (ms, malformed) = run_parser(Role::Client, &s);
        let sm = summary(&ms);
        assert_eq!(&sm[sm.len() - 2..], ["> SELECT", "< ERR 1146"]);
        assert_eq!(malformed, 1);
        let reqs = ms.iter().filter(|m| m.kind == Kind::Request).count();
        assert_eq!(reqs * 2, ms.len());
    }

    #[test]
    fn mysql_detect() {
        let g = greeting_pkt(0xffff_ffff);
        assert_eq!(detect(Dir::Recv, &g), Some(Role::Client));
        assert_eq!(detect(Dir::Send, &g), Some(Role::Server));
        let q = query("SELECT 1");
        assert_eq!(detect(Dir::Send, &q), Some(Role::Client));
        assert_eq!(detect(Dir::Recv, &q), Some(Role::Server));
        assert_eq!(detect(Dir::Send, &pkt(0, &[COM_PING])), Some(Role::Client));
        assert_eq!(detect(Dir::Send, &pkt(0, &[COM_QUIT])), Some(Role::Client));
        assert_eq!(detect(Dir::Send, &execute(1)), Some(Role::Client));
        let mut prep = vec![COM_STMT_PREPARE];
        prep.extend_from_slice(b"INSERT INTO t VALUES (?)");
        assert_eq!(detect(Dir::Send, &pkt(0, &prep)), Some(Role::Client));
        // A long query cut by the snaplen.
        let long = query(&format!("SELECT '{}'", "x".repeat(3000)));
        assert_eq!(detect(Dir::Send, &long[..512]), Some(Role::Client));
        // Close + execute in one call.
        let mut close = pkt(0, &[COM_STMT_CLOSE, 1, 0, 0, 0]);
        close.extend(execute(2));
        assert_eq!(detect(Dir::Send, &close), Some(Role::Client));

        let negatives: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"+PONG\r\n",
            b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03",
            b"\x16\x03\x01\x00\x16\x01\x00\x00\x12\x03\x03abcdefghijklmn",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00\x00",
            b"Q\x00\x00\x00\x0dSELECT 1\x00",
            b"",
            b"\x05\x00\x00\x00\x03",
            b"\x01\x00\x00\x01\x0e",
            b"\x02\x00\x00\x00\x0e\x00",
            b"\x0a\x00\x00\x00\x03not sql!!",
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
    }

    #[test]
    fn mysql_fuzz_no_panic_bounded() {
        let (base_a, _) = session(false);
        let (base_b, _) = session(true);
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for it in 0..20_000 {
            let base = if it % 2 == 0 { &base_a } else { &base_b };
            let skip_handshake = it % 5 == 0;
            let mut p = MysqlParser::new(if it % 3 == 0 {
                Role::Server
            } else {
                Role::Client
            });
            let role = p.st.role;
            let script = if skip_handshake {
                &base[5..]
            } else {
                &base[..]
            };
            let (requests, responses) =
                testing::fuzz_script(&mut rng, &mut p, role, script, check_bounds);
            assert!(requests - responses <= MAX_QUEUE + 1);
        }
    }

    #[test]
    fn mysql_random_streams_never_panic() {
        // A valid start to get past detection, then noise shaped like packets.
        testing::random_frames(
            &mut Rng(0xdead_beef_cafe_f00d),
            5_000,
            || MysqlParser::new(Role::Client),
            &query("SELECT 1"),
            |rng, len, buf| buf.extend_from_slice(&[len as u8, 0, 0, (rng.next() % 4) as u8]),
            &[0x00, 0xfe, 0xff, 0xfb, 0x03, 0x16, 0x17, b'd'],
            check_bounds,
        );
    }
}
