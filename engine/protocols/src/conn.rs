//! One connection's protocol: detected from its first payload, then parsed, with each
//! response paired with its request.

use crate::{Dir, Kind, Message, Output, Parser, Protocol, Role};
use std::collections::VecDeque;

/// Requests waiting for their response on one connection (pipelining, HTTP/2 streams);
/// past it the oldest is dropped and counted as unanswered.
pub const MAX_PENDING: usize = 256;

/// Calls with payload looked at before a connection is taken for none of the protocols.
const DETECT_CALLS: u8 = 8;

/// A request and its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub protocol: Protocol,
    pub role: Role,
    pub method: &'static str,
    pub path: Option<Box<str>>,
    pub host: Option<Box<str>>,
    pub status: u16,
    pub error: bool,
    pub code: Option<Box<str>>,
    /// From the first byte of the request (its call's time) to the response's call.
    pub latency_ns: u64,
}

/// What the connections' parsers counted besides exchanges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub malformed: u64,
    /// Framing lost on a call whose copy stopped at the snaplen: message boundaries hidden
    /// in the bytes not copied (a result set of many small rows), not a malformed stream.
    pub gaps: u64,
    pub mid_stream: u64,
    /// Responses with no request waiting (its call unseen, or the connection met mid-stream).
    pub unmatched_responses: u64,
    /// Requests that got no response: dropped past [`MAX_PENDING`] or left at close.
    pub unanswered: u64,
}

enum State {
    Detecting(u8),
    /// TLS: counted, its content out of reach.
    Opaque(Protocol, Role),
    Parsing {
        protocol: Protocol,
        role: Role,
        parser: Box<dyn Parser + Send>,
    },
    /// None of the protocols.
    Unknown,
}

pub struct Conn {
    state: State,
    /// Requests in order, with their time.
    pending: VecDeque<(Message, u64)>,
    out: Output,
}

impl Default for Conn {
    fn default() -> Self {
        Self::new()
    }
}

impl Conn {
    pub fn new() -> Self {
        Self {
            state: State::Detecting(0),
            pending: VecDeque::new(),
            out: Output::default(),
        }
    }

    /// The protocol and this end's role, once detected.
    pub fn protocol(&self) -> Option<(Protocol, Role)> {
        match &self.state {
            State::Opaque(p, r) => Some((*p, *r)),
            State::Parsing { protocol, role, .. } => Some((*protocol, *role)),
            State::Detecting(_) | State::Unknown => None,
        }
    }

    /// Still looking at first payloads.
    pub fn detecting(&self) -> bool {
        matches!(self.state, State::Detecting(_))
    }

    /// One call's bytes at event time `ts`: completed exchanges go to `done`.
    pub fn feed(
        &mut self,
        ts: u64,
        dir: Dir,
        data: &[u8],
        unseen: u64,
        done: &mut Vec<Exchange>,
        counters: &mut Counters,
    ) {
        if let State::Detecting(calls) = &mut self.state {
            if data.is_empty() {
                return;
            }
            match detect(dir, data) {
                Some(state) => self.state = state,
                None => {
                    *calls += 1;
                    if *calls >= DETECT_CALLS {
                        self.state = State::Unknown;
                    }
                    return;
                }
            }
        }
        let State::Parsing {
            protocol,
            role,
            parser,
        } = &mut self.state
        else {
            return;
        };
        let (protocol, role) = (*protocol, *role);
        parser.feed(dir, data, unseen, &mut self.out);
        let lost = std::mem::take(&mut self.out.malformed);
        if unseen > 0 {
            counters.gaps += lost;
        } else {
            counters.malformed += lost;
        }
        counters.mid_stream += std::mem::take(&mut self.out.mid_stream);
        for m in self.out.messages.drain(..) {
            match m.kind {
                Kind::Request => {
                    if self.pending.len() >= MAX_PENDING {
                        self.pending.pop_front();
                        counters.unanswered += 1;
                    }
                    self.pending.push_back((m, ts));
                }
                Kind::Response => {
                    let at = match m.stream {
                        None => (!self.pending.is_empty()).then_some(0),
                        Some(id) => self.pending.iter().position(|(r, _)| r.stream == Some(id)),
                    };
                    let Some((req, start)) = at.and_then(|i| self.pending.remove(i)) else {
                        counters.unmatched_responses += 1;
                        continue;
                    };
                    let grpc = req.grpc || m.grpc;
                    done.push(Exchange {
                        protocol: if grpc { Protocol::Grpc } else { protocol },
                        role,
                        method: req.method,
                        path: req.path,
                        host: req.host,
                        status: m.status,
                        error: m.error,
                        code: m.code,
                        latency_ns: ts.saturating_sub(start),
                    });
                }
            }
        }
    }

    /// The connection closed: requests still waiting are unanswered.
    pub fn close(&mut self, counters: &mut Counters) {
        counters.unanswered += self.pending.len() as u64;
        self.pending.clear();
    }
}

/// The first payload of a connection: which protocol, and which end this socket is.
fn detect(dir: Dir, data: &[u8]) -> Option<State> {
    if let Some(role) = crate::tls::detect(dir, data) {
        return Some(State::Opaque(Protocol::Tls, role));
    }
    let parsing = |protocol, role, parser: Box<dyn Parser + Send>| State::Parsing {
        protocol,
        role,
        parser,
    };
    // HTTP/2 before HTTP/1: its preface starts like a request line.
    if let Some((role, from_start)) = crate::http2::detect(dir, data) {
        let parser = crate::http2::Http2Parser::new(role, from_start);
        return Some(parsing(Protocol::Http2, role, Box::new(parser)));
    }
    if let Some(role) = crate::http1::detect(dir, data) {
        return Some(parsing(
            Protocol::Http1,
            role,
            Box::new(crate::http1::Http1Parser::new(role)),
        ));
    }
    if let Some(role) = crate::redis::detect(dir, data) {
        return Some(parsing(
            Protocol::Redis,
            role,
            Box::new(crate::redis::RedisParser::new(role)),
        ));
    }
    if let Some(role) = crate::postgres::detect(dir, data) {
        return Some(parsing(
            Protocol::Postgres,
            role,
            Box::new(crate::postgres::PostgresParser::new(role)),
        ));
    }
    if let Some(role) = crate::mysql::detect(dir, data) {
        return Some(parsing(
            Protocol::Mysql,
            role,
            Box::new(crate::mysql::MysqlParser::new(role)),
        ));
    }
    None
}
