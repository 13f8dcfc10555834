//! Application protocols parsed from the payload of socket calls.
//!
//! The kernel side copies up to a snaplen of each call's bytes; everything here works on
//! those copies, so both backends agree by construction. A connection's protocol is
//! detected from its first payload (never by port alone); its parser then turns each
//! direction's bytes into [`Message`]s, and [`Conn`] pairs requests with responses.
//!
//! Rules every parser keeps:
//! - Calls arrive in order per direction; a call may hold part of a message, several
//!   messages, or bytes past the snaplen that were never copied (`unseen`). What cannot be
//!   seen is skipped by count where the framing says how long it is, and otherwise the
//!   parser resynchronises at the start of a later call.
//! - Malformed or adversarial input is counted ([`Output::malformed`]) and skipped: no
//!   panic, no unbounded buffer (each parser holds at most [`MAX_HELD`] bytes of a partial
//!   message per direction).
//! - Names are bounded: methods, commands and statement verbs come from fixed sets
//!   ([`OTHER`] beyond them); paths are normalised by [`route::normalize`].

pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod route;
pub mod sql;
pub mod tls;

mod conn;
#[cfg(test)]
mod testing;
pub use conn::{Conn, Counters, Exchange, MAX_PENDING};

/// Bytes of a partial message a parser may hold per direction while waiting for the rest.
pub const MAX_HELD: usize = 8192;

/// The name given to a method, command or verb outside the known set.
pub const OTHER: &str = "OTHER";

/// Which way a call moved bytes, seen from the socket that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    Send,
    Recv,
}

/// Which end of the connection the socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    /// The direction in which this end sends requests (client) or receives them (server).
    pub fn request_dir(self) -> Dir {
        match self {
            Role::Client => Dir::Send,
            Role::Server => Dir::Recv,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
    Redis,
    Mysql,
    Postgres,
    Tls,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Redis => "redis",
            Protocol::Mysql => "mysql",
            Protocol::Postgres => "postgres",
            Protocol::Tls => "tls",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

/// One request or response as a parser saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    /// HTTP/2 stream id: the request and response are paired by it. `None`: in order.
    pub stream: Option<u32>,
    /// Request: HTTP method, Redis command, SQL statement verb (`SELECT`, …), or a MySQL or
    /// PostgreSQL command with no statement (`PING`, `QUIT`, …); from a fixed set.
    pub method: &'static str,
    /// Request: HTTP's request target as a route, normalised by the parser with
    /// [`route::normalize`].
    pub path: Option<Box<str>>,
    /// Request: HTTP/1 `Host`, HTTP/2 `:authority`.
    pub host: Option<Box<str>>,
    /// HTTP/2 request or response with `content-type: application/grpc…`.
    pub grpc: bool,
    /// Response: HTTP status; 0 for the others.
    pub status: u16,
    /// Response: an error (HTTP ≥ 500; `grpc-status` ≠ 0; a Redis error reply; MySQL ERR;
    /// PostgreSQL ErrorResponse).
    pub error: bool,
    /// Response: `grpc-status`, the MySQL error number, the PostgreSQL SQLSTATE or the
    /// Redis error's first word (`ERR`, `WRONGTYPE`, …), when there is one.
    pub code: Option<Box<str>>,
}

impl Message {
    pub fn request(method: &'static str) -> Self {
        Self {
            kind: Kind::Request,
            stream: None,
            method,
            path: None,
            host: None,
            grpc: false,
            status: 0,
            error: false,
            code: None,
        }
    }

    pub fn response(status: u16, error: bool) -> Self {
        Self {
            kind: Kind::Response,
            status,
            error,
            ..Self::request("")
        }
    }
}

/// What a parser hands back from one call's bytes.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Message>,
    /// Streams found malformed and skipped (each resynchronisation counts once).
    pub malformed: u64,
    /// Messages seen on a connection first met mid-stream that could not be parsed for
    /// want of its earlier bytes (HTTP/2 headers without the HPACK table, a response with no
    /// framing), counted instead of guessed.
    pub mid_stream: u64,
}

/// One protocol's parser for one connection.
pub trait Parser {
    /// Bytes of one call in direction `dir`. `data` is what was copied; `unseen` the bytes
    /// the call moved past it (beyond the snaplen, or all of them when the copy faulted).
    fn feed(&mut self, dir: Dir, data: &[u8], unseen: u64, out: &mut Output);
}
