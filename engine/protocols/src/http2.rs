//! HTTP/2 (RFC 9113) and gRPC over it, from each direction's copied bytes.
//!
//! Each direction is a byte stream of frames: a 9-byte header (24-bit length, type, flags,
//! 31-bit stream id) and its payload. Bytes past a call's copy (`unseen`) are skipped by
//! count with the frame lengths, so a large DATA frame costs nothing; a frame *header*
//! falling in an unseen region loses the framing, counted once as malformed, and the
//! direction resynchronises at the start of a later call whose bytes are a plausible run of
//! whole frames (the same check as mid-stream detection).
//!
//! Header blocks (HEADERS or PUSH_PROMISE and their CONTINUATIONs, padding and priority
//! stripped) are assembled up to [`MAX_HELD`] bytes and decoded with HPACK (RFC 7541), one
//! decoder per direction whose dynamic table is bounded by the SETTINGS_HEADER_TABLE_SIZE
//! the *receiving* end advertised (sent in the other direction), at most [`TABLE_CAP`].
//! Every block is decoded, push promises and trailers included, to keep the table in step.
//! Huffman-coded strings are decoded first (`httlib-huffman`, table-driven), and the block
//! handed to `loona-hpack` with them raw: its own Huffman decoder is far too slow.
//!
//! When a direction's dynamic table is unknown (the connection met mid-stream, a header
//! block over the bound or partly unseen, framing lost), a block is decoded with a fresh,
//! empty table and used only if that succeeds. This is exact: entries a block adds sit at
//! the same indices in the real table, so a block that decodes this way references only the
//! static table, literals and its own additions; one referring to an older entry fails
//! (index out of bounds) and is counted in [`Output::mid_stream`], never guessed.
//!
//! Requests are the first HEADERS of a new (odd, increasing) stream in the request
//! direction; responses the stream's final HEADERS with `:status` (1xx skipped), or for
//! gRPC the trailers with `grpc-status` (or a trailers-only response). RST_STREAM on a
//! stream still waiting for its response gives an error response with status 0. Server
//! pushes (even streams) are decoded for HPACK only.

use crate::{Dir, MAX_HELD, Message, OTHER, Output, Parser, Role};
use loona_hpack::Decoder;
use std::collections::BTreeMap;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of the preface a first payload must hold to be taken for one.
const PREFACE_MIN: usize = 8;

/// SETTINGS_MAX_FRAME_SIZE's initial value and the largest a frame can be.
const DEFAULT_MAX_FRAME: u32 = 16_384;
const MAX_FRAME_LIMIT: u32 = (1 << 24) - 1;

/// SETTINGS_HEADER_TABLE_SIZE's initial value, and the largest dynamic table kept per
/// direction (a peer advertising more and its encoder using it loses the table).
const DEFAULT_TABLE: usize = 4096;
pub const TABLE_CAP: usize = 65_536;

/// Streams tracked at once (open ones waiting for their response); past it the oldest is
/// forgotten.
pub const MAX_STREAMS: usize = 1024;

/// Longest `:authority` kept, in bytes.
const MAX_HOST: usize = 255;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FrameHeader {
    len: u32,
    ty: u8,
    flags: u8,
    stream: u32,
    reserved: bool,
}

impl FrameHeader {
    fn parse(b: &[u8]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            ty: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
            reserved: b[5] & 0x80 != 0,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Payload bytes before a header block fragment (pad length, priority, promised id).
    fn fragment_prefix(&self) -> u32 {
        let pad = u32::from(self.has(PADDED));
        match self.ty {
            HEADERS => pad + if self.has(PRIORITY_FLAG) { 5 } else { 0 },
            PUSH_PROMISE => pad + 4,
            _ => 0,
        }
    }

    /// The rules a frame must keep for the framing to be trusted (RFC 9113 §6): a
    /// violation is a connection error, so it means the bytes are not where we think.
    /// Unknown types are allowed (extensions are skipped by length).
    fn valid(&self, max_len: u32) -> bool {
        if self.len > max_len {
            return false;
        }
        let on_stream = self.stream != 0;
        match self.ty {
            DATA => on_stream && self.len >= u32::from(self.has(PADDED)),
            HEADERS | PUSH_PROMISE => on_stream && self.len >= self.fragment_prefix(),
            CONTINUATION => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && !(self.has(ACK) && self.len != 0)
            }
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => true,
        }
    }

    /// Stricter, for bytes not known to be HTTP/2 framing (detection, resynchronisation):
    /// a known type, no undefined flag, the reserved bit clear.
    fn plausible(&self, max_len: u32) -> bool {
        let flags = match self.ty {
            DATA => END_STREAM | PADDED,
            HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
            SETTINGS | PING => ACK,
            PUSH_PROMISE => END_HEADERS | PADDED,
            CONTINUATION => END_HEADERS,
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
            _ => return false,
        };
        !self.reserved && self.flags & !flags == 0 && self.valid(max_len)
    }
}

/// What the first pseudo-header of a header block says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
    Request,
    Response,
}

/// What a run of plausible frames says about its sender.
#[derive(Default)]
struct Hint {
    request: bool,
    response: bool,
    push: bool,
}

/// Whether `data` starts with a plausible run of whole frames: at least one whole frame,
/// every header plausible, CONTINUATION only where a block is open, and the run ending
/// exactly at the end of `data` or with a plausible header whose frame goes past it.
fn plausible_frames(data: &[u8], max_len: u32) -> Option<Hint> {
    let mut hint = Hint::default();
    let mut off = 0usize;
    let mut whole = 0usize;
    let mut open_block: Option<u32> = None;
    loop {
        if off == data.len() {
            return (whole > 0).then_some(hint);
        }
        let rest = &data[off..];
        if rest.len() < 9 {
            return None;
        }
        let h = FrameHeader::parse(rest);
        if !h.plausible(max_len) {
            return None;
        }
        match open_block {
            Some(stream) if h.ty != CONTINUATION || h.stream != stream => return None,
            None if h.ty == CONTINUATION => return None,
            _ => {}
        }
        open_block = match h.ty {
            HEADERS | PUSH_PROMISE | CONTINUATION if !h.has(END_HEADERS) => Some(h.stream),
            _ => None,
        };
        let end = 9 + h.len as usize;
        let payload = &rest[9..end.min(rest.len())];
        match h.ty {
            HEADERS => match first_fragment(&h, payload).and_then(block_kind) {
                Some(BlockKind::Request) => hint.request = true,
                Some(BlockKind::Response) => hint.response = true,
                None => {}
            },
            PUSH_PROMISE => hint.push = true,
            _ => {}
        }
        if end > rest.len() {
            return (whole > 0).then_some(hint);
        }
        whole += 1;
        off += end;
    }
}

/// The header block fragment in the available part of a HEADERS or PUSH_PROMISE payload.
fn first_fragment<'a>(h: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    let pad = if h.has(PADDED) {
        *payload.first()? as usize
    } else {
        0
    };
    let start = h.fragment_prefix() as usize;
    let end = (h.len as usize).checked_sub(pad)?;
    if start > end {
        return None;
    }
    payload.get(start..end.min(payload.len()))
}

/// An HPACK integer with an `n`-bit prefix at the start of `b`: its value and length.
fn hpack_int(b: &[u8], n: u8) -> Option<(usize, usize)> {
    let mask = (1usize << n) - 1;
    let mut v = usize::from(*b.first()?) & mask;
    if v < mask {
        return Some((v, 1));
    }
    for (i, &byte) in b.iter().enumerate().skip(1).take(4) {
        v += usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Skips an HPACK string literal at the start of `b`; its raw bytes and whether Huffman.
fn hpack_str(b: &[u8]) -> Option<(&[u8], bool, usize)> {
    let (len, n) = hpack_int(b, 7)?;
    let s = b.get(n..n.checked_add(len)?)?;
    Some((s, b[0] & 0x80 != 0, n + len))
}

fn huffman_decode(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    httlib_huffman::decode(s, out, httlib_huffman::DecoderSpeed::FiveBits).ok()
}

fn push_hpack_int(out: &mut Vec<u8>, mut v: usize, n: u8, flags: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `block` with its Huffman-coded string literals rewritten raw, into `out` (`tmp` is
/// scratch); the representations are otherwise copied as they are. `loona-hpack` then does
/// the table work: its own Huffman decoder builds a hash map per string (tens of µs each).
/// `None` when the block does not parse.
fn unhuffman(block: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let mut p = 0usize;
    while p < block.len() {
        let b = &block[p..];
        let first = b[0];
        let (prefix, literal) = match first {
            0x80..=0xff => (7, false),
            0x40..=0x7f => (6, true),
            0x20..=0x3f => (5, false),
            _ => (4, true),
        };
        let (index, n) = hpack_int(b, prefix)?;
        out.extend_from_slice(&b[..n]);
        p += n;
        if !literal {
            continue;
        }
        for _ in 0..if index == 0 { 2 } else { 1 } {
            let (s, huffman, len) = hpack_str(block.get(p..)?)?;
            if huffman {
                tmp.clear();
                huffman_decode(s, tmp)?;
                push_hpack_int(out, tmp.len(), 7, 0);
                out.extend_from_slice(tmp);
            } else {
                out.extend_from_slice(&block[p..p + len]);
            }
            p += len;
        }
    }
    Some(())
}

fn pseudo_kind(name: &[u8]) -> Option<BlockKind> {
    match name {
        b":method" | b":path" | b":scheme" | b":authority" | b":protocol" => {
            Some(BlockKind::Request)
        }
        b":status" => Some(BlockKind::Response),
        _ => None,
    }
}

/// Static table indices 1-7 are request pseudo-headers, 8-14 `:status`.
fn static_kind(index: usize) -> Option<BlockKind> {
    match index {
        1..=7 => Some(BlockKind::Request),
        8..=14 => Some(BlockKind::Response),
        _ => None,
    }
}

/// Request or response, from the first pseudo-header of a block fragment whose name can be
/// told without the dynamic table (pseudo-headers come first, RFC 9113 §8.3): fields named
/// from the dynamic table are skipped, a regular header name ends the search.
fn block_kind(frag: &[u8]) -> Option<BlockKind> {
    let mut p = 0usize;
    // A few dozen fields at most precede the pseudo-headers' end.
    for _ in 0..32 {
        let b = frag.get(p..)?;
        let first = *b.first()?;
        if first & 0x80 != 0 {
            let (index, n) = hpack_int(b, 7)?;
            if index >= 62 {
                p += n;
                continue;
            }
            return static_kind(index);
        }
        if first & 0xe0 == 0x20 {
            p += hpack_int(b, 5)?.1;
            continue;
        }
        let prefix = if first & 0x40 != 0 { 6 } else { 4 };
        let (index, mut n) = hpack_int(b, prefix)?;
        match index {
            0 => {
                let (name, huffman, _) = hpack_str(b.get(n..)?)?;
                let kind = if huffman {
                    let mut decoded = Vec::new();
                    huffman_decode(name, &mut decoded)?;
                    pseudo_kind(&decoded)
                } else {
                    pseudo_kind(name)
                };
                return kind;
            }
            1..=61 => return static_kind(index),
            _ => {}
        }
        n += hpack_str(b.get(n..)?)?.2;
        p += n;
    }
    None
}

/// Whether `data`, the first payload seen on a connection in direction `dir`, is HTTP/2;
/// if so, which end the socket is and whether the connection is seen from its start (the
/// client preface) rather than mid-stream.
///
/// Mid-stream, the payload must be a plausible run of whole frames (known types, no
/// undefined flag, lengths and stream ids as each type requires, at most 16384 bytes, a
/// whole frame ending where the data does or followed by another plausible header) holding a HEADERS frame whose first pseudo-header tells a request
/// from a response without the dynamic table, or a PUSH_PROMISE (sent by servers only).
pub fn detect(dir: Dir, data: &[u8]) -> Option<(Role, bool)> {
    let n = data.len().min(PREFACE.len());
    if n >= PREFACE_MIN && data[..n] == PREFACE[..n] {
        let role = match dir {
            Dir::Send => Role::Client,
            Dir::Recv => Role::Server,
        };
        return Some((role, true));
    }
    let hint = plausible_frames(data, DEFAULT_MAX_FRAME)?;
    let sender_is_client = match (hint.request, hint.response || hint.push) {
        (true, false) => true,
        (false, true) => false,
        _ => return None,
    };
    let role = match (dir, sender_is_client) {
        (Dir::Send, true) | (Dir::Recv, false) => Role::Client,
        (Dir::Send, false) | (Dir::Recv, true) => Role::Server,
    };
    Some((role, false))
}

fn method_name(v: &[u8]) -> &'static str {
    match v {
        b"GET" => "GET",
        b"HEAD" => "HEAD",
        b"POST" => "POST",
        b"PUT" => "PUT",
        b"DELETE" => "DELETE",
        b"CONNECT" => "CONNECT",
        b"OPTIONS" => "OPTIONS",
        b"TRACE" => "TRACE",
        b"PATCH" => "PATCH",
        _ => OTHER,
    }
}

fn host_name(v: &[u8]) -> Option<String> {
    let host: String = v
        .iter()
        .take(MAX_HOST)
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b.to_ascii_lowercase())
            } else {
                '?'
            }
        })
        .collect();
    (!host.is_empty()).then_some(host)
}

fn parse_status(v: &[u8]) -> Option<u16> {
    match v {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// `grpc-status`: a decimal code, `None` when it is not one.
fn parse_grpc_status(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The fields of a decoded header block this parser uses.
#[derive(Default)]
struct Fields {
    method: Option<&'static str>,
    path: Option<String>,
    authority: Option<String>,
    host: Option<String>,
    status: Option<u16>,
    grpc: bool,
    /// `grpc-status` present: its code if decimal.
    grpc_status: Option<Option<u32>>,
}

impl Fields {
    fn take(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" if self.method.is_none() => self.method = Some(method_name(value)),
            b":path" if self.path.is_none() => {
                self.path = Some(String::from_utf8_lossy(value).into_owned());
            }
            b":authority" if self.authority.is_none() => self.authority = host_name(value),
            b"host" if self.host.is_none() => self.host = host_name(value),
            b":status" if self.status.is_none() => self.status = parse_status(value),
            b"content-type" => {
                const GRPC: &[u8] = b"application/grpc";
                self.grpc =
                    value.len() >= GRPC.len() && value[..GRPC.len()].eq_ignore_ascii_case(GRPC);
            }
            b"grpc-status" if self.grpc_status.is_none() => {
                self.grpc_status = Some(parse_grpc_status(value));
            }
            _ => {}
        }
    }
}

/// A header block's outcome.
enum Block {
    Fields(Fields),
    /// Undecodable for want of the dynamic table: counted in `mid_stream`.
    Unknown,
    /// Undecodable with the table known: malformed, already counted.
    Bad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Client to server from the start: bytes of the preface matched so far.
    Preface(u8),
    Header,
    Payload,
    /// Framing lost (or not found yet mid-stream): waiting for a call that starts with
    /// plausible frames.
    Lost,
}

/// What is known of the limits the receiving end of a direction advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settings {
    /// None of its SETTINGS seen yet (it may have gone by before detection): the largest
    /// limits allowed. Before the receiver's SETTINGS arrives, a sender keeps to the initial
    /// values anyway, so being lenient here only matters when they went by unseen.
    Unseen,
    /// Followed from its first SETTINGS on.
    Known,
    /// Part of a SETTINGS went unseen: the largest limits allowed from then on.
    Unknown,
}

/// One direction's byte stream.
struct Half {
    framing: Framing,
    hdr: [u8; 9],
    hdr_len: u8,
    cur: FrameHeader,
    /// Payload bytes of `cur` consumed (seen or unseen).
    pos: u32,
    /// Header block fragment within `cur`'s payload, once its pad length is known.
    frag: Option<(u32, u32)>,
    /// A SETTINGS entry or GOAWAY's first bytes being collected.
    ctl: [u8; 6],
    ctl_len: u8,

    /// A header block being assembled, until END_HEADERS.
    block: Vec<u8>,
    /// The block with its strings raw, and scratch for one string.
    raw: Vec<u8>,
    tmp: Vec<u8>,
    block_open: bool,
    block_stream: u32,
    block_push: bool,
    block_end_stream: bool,
    /// Over [`MAX_HELD`], partly unseen or badly padded: the table is lost with it.
    block_bad: bool,

    decoder: Decoder<'static>,
    table_known: bool,

    /// Limits the receiving end advertised (in the other direction's SETTINGS).
    settings: Settings,
    max_frame: u32,
}

impl Half {
    fn new(framing: Framing, table_known: bool) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_CAP);
        Self {
            framing,
            hdr: [0; 9],
            hdr_len: 0,
            cur: FrameHeader::default(),
            pos: 0,
            frag: None,
            ctl: [0; 6],
            ctl_len: 0,
            block: Vec::new(),
            raw: Vec::new(),
            tmp: Vec::new(),
            block_open: false,
            block_stream: 0,
            block_push: false,
            block_end_stream: false,
            block_bad: false,
            decoder,
            table_known,
            settings: Settings::Unseen,
            max_frame: MAX_FRAME_LIMIT,
        }
    }

    fn close_block(&mut self) {
        self.block.clear();
        self.block_open = false;
        self.block_bad = false;
    }

    fn lose(&mut self, out: &mut Output) {
        out.malformed += 1;
        self.framing = Framing::Lost;
        self.table_known = false;
        self.close_block();
    }

    /// Frame length accepted when resynchronising.
    fn resync_limit(&self) -> u32 {
        match self.settings {
            Settings::Known => self.max_frame,
            Settings::Unseen | Settings::Unknown => DEFAULT_MAX_FRAME,
        }
    }

    /// The receiving end's SETTINGS (non-ACK) came: its first one replaces the lenient
    /// limits with the protocol's initial values before its entries apply.
    fn receiver_settings(&mut self) {
        if self.settings == Settings::Unseen {
            self.settings = Settings::Known;
            self.max_frame = DEFAULT_MAX_FRAME;
            self.decoder.set_max_allowed_table_size(DEFAULT_TABLE);
        }
    }

    fn receiver_setting(&mut self, id: u16, value: u32) {
        if self.settings != Settings::Known {
            return;
        }
        match id {
            SETTINGS_HEADER_TABLE_SIZE => {
                let allowed = (value as usize).min(TABLE_CAP);
                self.decoder.set_max_allowed_table_size(allowed);
            }
            SETTINGS_MAX_FRAME_SIZE => {
                self.max_frame = value.clamp(DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT);
            }
            _ => {}
        }
    }

    /// Part of the receiver's SETTINGS went unseen: back to the lenient limits.
    fn receiver_settings_unknown(&mut self) {
        self.settings = Settings::Unknown;
        self.max_frame = MAX_FRAME_LIMIT;
        self.decoder.set_max_allowed_table_size(TABLE_CAP);
    }

    fn decode_block(&mut self, out: &mut Output) -> Block {
        if self.block_bad {
            self.table_known = false;
            return Block::Unknown;
        }
        let mut fields = Fields::default();
        let parsed = unhuffman(&self.block, &mut self.raw, &mut self.tmp).is_some();
        let mut take = |n: &[u8], v: &[u8]| fields.take(n, v);
        if self.table_known {
            if parsed
                && self
                    .decoder
                    .decode_with_cb(&self.raw, |n, v| take(&n, &v))
                    .is_ok()
            {
                return Block::Fields(fields);
            }
            out.malformed += 1;
            self.table_known = false;
            Block::Bad
        } else {
            // A fresh table large enough that nothing this block adds is evicted before
            // the real table would evict it.
            let mut fresh = Decoder::new();
            fresh.set_max_table_size(TABLE_CAP);
            if parsed && fresh.decode_with_cb(&self.raw, |n, v| take(&n, &v)).is_ok() {
                return Block::Fields(fields);
            }
            Block::Unknown
        }
    }
}

/// Whether the request was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Req {
    /// Emitted: its response is wanted.
    Emitted,
    /// Seen but undecodable (counted): its response is not emitted.
    Lost,
    /// Opened before what was seen: its response is emitted, unmatched.
    Unseen,
}

#[derive(Clone, Copy, Debug)]
struct Stream {
    req: Req,
    grpc: bool,
    /// Final `:status`, 0 before it (or when undecodable).
    status: u16,
    /// The response was emitted or counted.
    done: bool,
}

pub struct Http2Parser {
    role: Role,
    /// Indexed by [`idx`].
    halves: [Half; 2],
    streams: BTreeMap<u32, Stream>,
    /// Highest stream id opened by a request (or seen in a response).
    max_stream: u32,
    /// Lowest stream id opened by a request seen; below it, streams were opened before
    /// what was seen (0 from the start of the connection).
    floor: u32,
}

fn idx(dir: Dir) -> usize {
    match dir {
        Dir::Send => 0,
        Dir::Recv => 1,
    }
}

impl Http2Parser {
    pub fn new(role: Role, from_start: bool) -> Self {
        let client_half = idx(role.request_dir());
        let halves = std::array::from_fn(|d| match (from_start, d == client_half) {
            (true, true) => Half::new(Framing::Preface(0), true),
            (true, false) => Half::new(Framing::Header, true),
            (false, _) => Half::new(Framing::Lost, false),
        });
        Self {
            role,
            halves,
            streams: BTreeMap::new(),
            max_stream: 0,
            floor: if from_start { 0 } else { u32::MAX },
        }
    }

    fn request_half(&self) -> usize {
        idx(self.role.request_dir())
    }

    fn on_header(&mut self, d: usize, out: &mut Output) {
        let half = &mut self.halves[d];
        let h = FrameHeader::parse(&half.hdr);
        // CONTINUATION follows an open header block, on its stream, and nothing else does.
        let in_sequence = if half.block_open {
            h.ty == CONTINUATION && h.stream == half.block_stream
        } else {
            h.ty != CONTINUATION
        };
        if !h.valid(half.max_frame) || !in_sequence {
            half.lose(out);
            return;
        }
        half.cur = h;
        half.pos = 0;
        half.ctl_len = 0;
        half.frag = None;
        match h.ty {
            HEADERS | PUSH_PROMISE => {
                half.close_block();
                half.block_open = true;
                half.block_stream = h.stream;
                half.block_push = h.ty == PUSH_PROMISE;
                half.block_end_stream = h.has(END_STREAM);
            }
            SETTINGS if !h.has(ACK) => self.halves[1 - d].receiver_settings(),
            _ => {}
        }
        let half = &mut self.halves[d];
        if matches!(h.ty, HEADERS | PUSH_PROMISE | CONTINUATION) && !h.has(PADDED) {
            half.frag = Some((h.fragment_prefix(), h.len));
        }
        if h.len == 0 {
            self.on_frame_end(d, out);
        } else {
            half.framing = Framing::Payload;
        }
    }

    /// Seen payload bytes of the current frame, at its offset `pos`.
    fn on_payload(&mut self, d: usize, bytes: &[u8], out: &mut Output) {
        let [send, recv] = &mut self.halves;
        let (half, other) = if d == 0 { (send, recv) } else { (recv, send) };
        let h = half.cur;
        match h.ty {
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                if half.frag.is_none() && half.pos == 0 {
                    // PADDED: the pad length is the first byte.
                    let start = h.fragment_prefix();
                    match h.len.checked_sub(u32::from(bytes[0])) {
                        Some(end) if end >= start => half.frag = Some((start, end)),
                        _ => {
                            out.malformed += 1;
                            half.block_bad = true;
                            half.frag = Some((0, 0));
                        }
                    }
                }
                let Some((start, end)) = half.frag else {
                    return;
                };
                let lo = start.max(half.pos);
                let hi = end.min(half.pos + bytes.len() as u32);
                if lo >= hi || half.block_bad {
                    return;
                }
                let piece = &bytes[(lo - half.pos) as usize..(hi - half.pos) as usize];
                if half.block.len() + piece.len() > MAX_HELD {
                    half.block_bad = true;
                    half.block.clear();
                } else {
                    half.block.extend_from_slice(piece);
                }
            }
            SETTINGS if !h.has(ACK) => {
                for &b in bytes {
                    half.ctl[usize::from(half.ctl_len)] = b;
                    half.ctl_len += 1;
                    if half.ctl_len == 6 {
                        half.ctl_len = 0;
                        let c = half.ctl;
                        let id = u16::from_be_bytes([c[0], c[1]]);
                        let value = u32::from_be_bytes([c[2], c[3], c[4], c[5]]);
                        other.receiver_setting(id, value);
                    }
                }
            }
            GOAWAY => {
                for &b in bytes
                    .iter()
                    .take(4usize.saturating_sub(usize::from(half.ctl_len)))
                {
                    half.ctl[usize::from(half.ctl_len)] = b;
                    half.ctl_len += 1;
                }
            }
            _ => {}
        }
    }

    /// `n` unseen payload bytes of the current frame, at its offset `pos`.
    fn on_payload_unseen(&mut self, d: usize, n: u32) {
        let half = &mut self.halves[d];
        let h = half.cur;
        match h.ty {
            HEADERS | PUSH_PROMISE | CONTINUATION => match half.frag {
                Some((start, end)) if half.pos + n <= start || half.pos >= end => {}
                _ => {
                    half.block_bad = true;
                    half.block.clear();
                }
            },
            SETTINGS if !h.has(ACK) => self.halves[1 - d].receiver_settings_unknown(),
            _ => {}
        }
    }

    fn on_frame_end(&mut self, d: usize, out: &mut Output) {
        let from_server = d != self.request_half();
        let half = &mut self.halves[d];
        half.framing = Framing::Header;
        let h = half.cur;
        let (c, collected) = (half.ctl, half.ctl_len);
        match h.ty {
            HEADERS | PUSH_PROMISE | CONTINUATION if h.has(END_HEADERS) => {
                self.complete_block(d, out)
            }
            DATA if h.has(END_STREAM) && from_server => self.response_ended(h.stream, out),
            RST_STREAM => self.reset(h.stream, out),
            GOAWAY if collected == 4 && from_server => {
                // Streams above the last one the server processed never will be.
                let last = u32::from_be_bytes([c[0], c[1], c[2], c[3]]) & 0x7fff_ffff;
                drop(self.streams.split_off(&last.saturating_add(1)));
            }
            _ => {}
        }
    }

    fn complete_block(&mut self, d: usize, out: &mut Output) {
        let half = &mut self.halves[d];
        let block = half.decode_block(out);
        let (stream, push, end_stream) =
            (half.block_stream, half.block_push, half.block_end_stream);
        half.close_block();
        if push {
            return;
        }
        if d == self.request_half() {
            self.on_request(stream, block, out);
        } else {
            self.on_response(stream, block, end_stream, out);
        }
    }

    fn track(&mut self, id: u32, stream: Stream) {
        if self.streams.len() >= MAX_STREAMS {
            self.streams.pop_first();
        }
        self.streams.insert(id, stream);
    }

    fn on_request(&mut self, id: u32, block: Block, out: &mut Output) {
        // Client streams are odd and opened in increasing order: anything else is trailers
        // (or an invalid stream).
        if id.is_multiple_of(2) || id <= self.max_stream {
            return;
        }
        // No :method: trailers of a stream opened before what was seen.
        if let Block::Fields(Fields { method: None, .. }) = block {
            return;
        }
        self.max_stream = id;
        self.floor = self.floor.min(id);
        let stream = |req, grpc| Stream {
            req,
            grpc,
            status: 0,
            done: false,
        };
        match block {
            Block::Fields(f) => {
                let method = f.method.unwrap_or(OTHER);
                out.messages.push(Message {
                    stream: Some(id),
                    path: f.path.map(|p| crate::route::normalize(&p).into_boxed_str()),
                    host: f.authority.or(f.host).map(String::into_boxed_str),
                    grpc: f.grpc,
                    ..Message::request(method)
                });
                self.track(id, stream(Req::Emitted, f.grpc));
            }
            Block::Unknown => {
                out.mid_stream += 1;
                self.track(id, stream(Req::Lost, false));
            }
            Block::Bad => self.track(id, stream(Req::Lost, false)),
        }
    }

    fn on_response(&mut self, id: u32, block: Block, end_stream: bool, out: &mut Output) {
        // Even streams are server pushes: decoded for HPACK only.
        if id.is_multiple_of(2) {
            return;
        }
        if !self.streams.contains_key(&id) {
            if id <= self.max_stream && id >= self.floor {
                // Finished, reset or forgotten.
                return;
            }
            // Its request went by before what was seen.
            self.max_stream = self.max_stream.max(id);
            let unseen = Stream {
                req: Req::Unseen,
                grpc: false,
                status: 0,
                done: false,
            };
            self.track(id, unseen);
        }
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.req != Req::Lost && !st.done {
            match block {
                Block::Fields(f) => respond(id, st, f, end_stream, out),
                Block::Unknown => {
                    out.mid_stream += 1;
                    st.done = true;
                }
                Block::Bad => st.done = true,
            }
        }
        if end_stream {
            self.streams.remove(&id);
        }
    }

    /// DATA with END_STREAM from the server.
    fn response_ended(&mut self, id: u32, out: &mut Output) {
        let Some(st) = self.streams.remove(&id) else {
            return;
        };
        // gRPC ending without trailers: failed, with no grpc-status.
        if st.req != Req::Lost && !st.done && st.grpc && st.status >= 200 {
            out.messages.push(grpc_response(id, st.status, None, true));
        }
    }

    fn reset(&mut self, id: u32, out: &mut Output) {
        let Some(st) = self.streams.remove(&id) else {
            return;
        };
        if st.req == Req::Emitted && !st.done {
            let mut m = Message::response(0, true);
            m.stream = Some(id);
            m.grpc = st.grpc;
            out.messages.push(m);
        }
    }
}

fn grpc_response(id: u32, status: u16, code: Option<u32>, error: bool) -> Message {
    Message {
        stream: Some(id),
        grpc: true,
        code: code.map(|c| c.to_string().into_boxed_str()),
        ..Message::response(status, error)
    }
}

/// A decoded response-side header block on a stream still waiting for its response.
fn respond(id: u32, st: &mut Stream, f: Fields, end_stream: bool, out: &mut Output) {
    st.grpc |= f.grpc;
    if let Some(status) = f.status {
        if status < 200 {
            // Interim (1xx).
            return;
        }
        st.status = status;
    }
    if let Some(code) = f.grpc_status {
        // Trailers, or a trailers-only response.
        let error = code != Some(0) || st.status >= 500;
        out.messages.push(grpc_response(id, st.status, code, error));
        st.done = true;
    } else if f.status.is_some() && !st.grpc {
        let mut m = Message::response(st.status, st.status >= 500);
        m.stream = Some(id);
        out.messages.push(m);
        st.done = true;
    } else if end_stream && st.grpc {
        // gRPC ending with no grpc-status is a failure (status 0 if its headers were not
        // seen).
        out.messages.push(grpc_response(id, st.status, None, true));
        st.done = true;
    }
}

impl Parser for Http2Parser {
    fn feed(&mut self, dir: Dir, data: &[u8], unseen: u64, out: &mut Output) {
        let d = idx(dir);
        if self.halves[d].framing == Framing::Lost {
            let limit = self.halves[d].resync_limit();
            if data.is_empty() || plausible_frames(data, limit).is_none() {
                return;
            }
            let half = &mut self.halves[d];
            half.framing = Framing::Header;
            half.hdr_len = 0;
        }
        let mut rest = data;
        while !rest.is_empty() {
            let half = &mut self.halves[d];
            match half.framing {
                Framing::Preface(matched) => {
                    let m = usize::from(matched);
                    let take = (PREFACE.len() - m).min(rest.len());
                    if rest[..take] != PREFACE[m..m + take] {
                        half.lose(out);
                        return;
                    }
                    rest = &rest[take..];
                    half.framing = if m + take == PREFACE.len() {
                        Framing::Header
                    } else {
                        Framing::Preface((m + take) as u8)
                    };
                }
                Framing::Header => {
                    let have = usize::from(half.hdr_len);
                    let take = (9 - have).min(rest.len());
                    half.hdr[have..have + take].copy_from_slice(&rest[..take]);
                    half.hdr_len += take as u8;
                    rest = &rest[take..];
                    if half.hdr_len == 9 {
                        half.hdr_len = 0;
                        self.on_header(d, out);
                    }
                }
                Framing::Payload => {
                    let take = ((half.cur.len - half.pos) as usize).min(rest.len());
                    self.on_payload(d, &rest[..take], out);
                    rest = &rest[take..];
                    let half = &mut self.halves[d];
                    half.pos += take as u32;
                    if half.pos == half.cur.len {
                        self.on_frame_end(d, out);
                    }
                }
                Framing::Lost => return,
            }
        }
        if unseen == 0 {
            return;
        }
        let half = &mut self.halves[d];
        match half.framing {
            Framing::Payload => {
                let skip = u64::from(half.cur.len - half.pos).min(unseen) as u32;
                self.on_payload_unseen(d, skip);
                let half = &mut self.halves[d];
                half.pos += skip;
                if half.pos == half.cur.len {
                    self.on_frame_end(d, out);
                }
                let half = &mut self.halves[d];
                if unseen > u64::from(skip) && half.framing != Framing::Lost {
                    half.lose(out);
                }
            }
            Framing::Lost => {}
            // A frame header (or the preface) went by unseen.
            Framing::Preface(_) | Framing::Header => half.lose(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use crate::{Conn, Exchange, Kind, Protocol};

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([ty, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    fn frame_len(ty: u8, flags: u8, stream: u32, len: u32) -> Vec<u8> {
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([ty, flags]);
        f.extend(stream.to_be_bytes());
        f
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = entries
            .iter()
            .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
            .collect();
        frame(SETTINGS, 0, 0, &payload)
    }

    /// An HPACK integer with an `n`-bit prefix under `flags`.
    fn int(mut v: usize, n: u8, flags: u8) -> Vec<u8> {
        let max = (1usize << n) - 1;
        if v < max {
            return vec![flags | v as u8];
        }
        let mut out = vec![flags | max as u8];
        v -= max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
        out
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut out = int(s.len(), 7, 0);
        out.extend(s);
        out
    }

    fn indexed(i: usize) -> Vec<u8> {
        int(i, 7, 0x80)
    }

    /// Literal with incremental indexing, name from the table.
    fn lit_inc(name: usize, value: &str) -> Vec<u8> {
        let mut out = int(name, 6, 0x40);
        out.extend(string(value.as_bytes()));
        out
    }

    fn lit_inc_new(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![0x40];
        out.extend(string(name.as_bytes()));
        out.extend(string(value.as_bytes()));
        out
    }

    /// Literal without indexing, name from the table.
    fn lit(name: usize, value: &str) -> Vec<u8> {
        let mut out = int(name, 4, 0);
        out.extend(string(value.as_bytes()));
        out
    }

    fn size_update(n: usize) -> Vec<u8> {
        int(n, 5, 0x20)
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    /// A static-only request block: method, path, authority, scheme https.
    fn req_block(method: &str, path: &str, authority: &str) -> Vec<u8> {
        let m = match method {
            "GET" => indexed(2),
            "POST" => indexed(3),
            _ => lit(2, method),
        };
        cat(&[m, lit(4, path), lit(1, authority), indexed(7)])
    }

    fn status_block(status: u16) -> Vec<u8> {
        lit(8, &status.to_string())
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn run(p: &mut Http2Parser, calls: &[(Dir, &[u8], u64)]) -> Output {
        let mut out = Output::default();
        for (dir, data, unseen) in calls {
            p.feed(*dir, data, *unseen, &mut out);
        }
        out
    }

    fn request(id: u32, method: &'static str, path: &str, host: &str) -> Message {
        Message {
            stream: Some(id),
            path: Some(crate::route::normalize(path).into()),
            host: Some(host.into()),
            ..Message::request(method)
        }
    }

    fn response(id: u32, status: u16) -> Message {
        Message {
            stream: Some(id),
            ..Message::response(status, status >= 500)
        }
    }

    /// Both directions of a client's conversation: two interleaved streams.
    fn interleaved() -> (Vec<u8>, Vec<u8>) {
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[(0x3, 100)]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &req_block("GET", "/a", "A.Example"),
            ),
            frame(
                HEADERS,
                END_HEADERS,
                3,
                &req_block("POST", "/b", "b.example:8080"),
            ),
            frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]),
            frame(DATA, END_STREAM, 3, b"body"),
            frame(PING, 0, 0, &[1; 8]),
        ]);
        let recv = cat(&[
            settings(&[]),
            frame(SETTINGS, ACK, 0, &[]),
            frame(PING, ACK, 0, &[1; 8]),
            frame(HEADERS, END_HEADERS, 3, &status_block(201)),
            frame(HEADERS, END_HEADERS, 1, &indexed(13)),
            frame(DATA, END_STREAM, 3, b"created"),
            frame(DATA, PADDED, 1, &[2, b'x', 0, 0]),
            frame(DATA, END_STREAM, 1, b""),
            frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]),
        ]);
        (send, recv)
    }

    fn interleaved_expected() -> Vec<Message> {
        vec![
            request(1, "GET", "/a", "a.example"),
            request(3, "POST", "/b", "b.example:8080"),
            response(3, 201),
            response(1, 404),
        ]
    }

    #[test]
    fn preface_settings_and_interleaved_streams() {
        let (send, recv) = interleaved();
        assert_eq!(detect(Dir::Send, &send), Some((Role::Client, true)));
        assert_eq!(detect(Dir::Recv, &send), Some((Role::Server, true)));
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(&mut p, &[(Dir::Send, &send, 0), (Dir::Recv, &recv, 0)]);
        assert_eq!(out.messages, interleaved_expected());
        assert_eq!((out.malformed, out.mid_stream), (0, 0));
        assert!(p.streams.is_empty());

        // The server's side of the same conversation.
        let mut p = Http2Parser::new(Role::Server, true);
        let out = run(&mut p, &[(Dir::Recv, &send, 0), (Dir::Send, &recv, 0)]);
        assert_eq!(out.messages, interleaved_expected());
        assert_eq!((out.malformed, out.mid_stream), (0, 0));
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let (send, recv) = interleaved();
        let expected = interleaved_expected();
        for k in 0..=send.len() {
            let mut p = Http2Parser::new(Role::Client, true);
            let out = run(
                &mut p,
                &[
                    (Dir::Send, &send[..k], 0),
                    (Dir::Send, &send[k..], 0),
                    (Dir::Recv, &recv, 0),
                ],
            );
            assert_eq!(out.messages, expected, "send split at {k}");
            assert_eq!(out.malformed, 0);
        }
        for k in 0..=recv.len() {
            let mut p = Http2Parser::new(Role::Client, true);
            let out = run(
                &mut p,
                &[
                    (Dir::Send, &send, 0),
                    (Dir::Recv, &recv[..k], 0),
                    (Dir::Recv, &recv[k..], 0),
                ],
            );
            assert_eq!(out.messages, expected, "recv split at {k}");
            assert_eq!(out.malformed, 0);
        }
        // Byte by byte, the directions alternating.
        let mut p = Http2Parser::new(Role::Client, true);
        let mut out = Output::default();
        for b in &send {
            p.feed(Dir::Send, std::slice::from_ref(b), 0, &mut out);
        }
        for b in &recv {
            p.feed(Dir::Recv, std::slice::from_ref(b), 0, &mut out);
        }
        assert_eq!(out.messages, expected);
        assert_eq!(out.malformed, 0);
    }

    #[test]
    fn large_data_frame_mostly_unseen() {
        const MB: u32 = 1 << 20;
        // The client allows the server frames of up to 16 MiB.
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[(SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_LIMIT)]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &req_block("GET", "/big", "h"),
            ),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                3,
                &req_block("GET", "/next", "h"),
            ),
        ]);
        let first = cat(&[
            settings(&[]),
            frame(HEADERS, END_HEADERS, 1, &indexed(8)),
            frame_len(DATA, END_STREAM, 1, MB),
            vec![0xab; 512],
        ]);
        let copied = &first[..512];
        let unseen = (first.len() - 512) as u64 + u64::from(MB) - 512;
        let next = cat(&[
            frame(HEADERS, END_HEADERS, 3, &indexed(14)),
            frame(DATA, END_STREAM, 3, b"oops"),
        ]);
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(
            &mut p,
            &[
                (Dir::Send, &send, 0),
                (Dir::Recv, copied, unseen),
                (Dir::Recv, &next, 0),
            ],
        );
        assert_eq!(
            out.messages,
            vec![
                request(1, "GET", "/big", "h"),
                request(3, "GET", "/next", "h"),
                response(1, 200),
                response(3, 500)
            ]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 0));

        // The same frame is too large when the client kept the default maximum: it is the
        // client's SETTINGS that bound what the server sends.
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &req_block("GET", "/big", "h"),
            ),
        ]);
        let server = cat(&[
            settings(&[(SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_LIMIT)]),
            frame(HEADERS, END_HEADERS, 1, &indexed(8)),
            frame_len(DATA, 0, 1, MB),
        ]);
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(
            &mut p,
            &[(Dir::Send, &send, 0), (Dir::Recv, &server, u64::from(MB))],
        );
        assert_eq!(out.messages.len(), 2);
        assert_eq!(out.malformed, 1);
    }

    #[test]
    fn dynamic_table_across_requests() {
        // RFC 7541 C.4: three requests, Huffman-coded, the later ones indexing the first's
        // :authority from the dynamic table.
        let blocks = [
            hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            hex("8286 84be 5886 a8eb 1064 9cbf"),
            hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        ];
        let mut send = cat(&[PREFACE.to_vec(), settings(&[])]);
        for (i, b) in blocks.iter().enumerate() {
            send.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                2 * i as u32 + 1,
                b,
            ));
        }
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(&mut p, &[(Dir::Send, &send, 0)]);
        assert_eq!(
            out.messages,
            vec![
                request(1, "GET", "/", "www.example.com"),
                request(3, "GET", "/", "www.example.com"),
                request(5, "GET", "/index.html", "www.example.com"),
            ]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 0));

        // Met mid-stream, the second and third cannot be decoded: counted, not guessed.
        let mut p = Http2Parser::new(Role::Client, false);
        let out = run(&mut p, &[(Dir::Send, &send[24..], 0)]);
        assert_eq!(
            out.messages,
            vec![request(1, "GET", "/", "www.example.com")]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 2));
    }

    /// RFC 7541 C.4 (requests) and C.6.1 (a response), Huffman-coded.
    fn rfc_blocks() -> [Vec<u8>; 4] {
        [
            hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            hex("8286 84be 5886 a8eb 1064 9cbf"),
            hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
            hex(
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ),
        ]
    }

    #[test]
    fn huffman_strings_decoded_as_the_crate_does() {
        let decode = |d: &mut Decoder, b: &[u8]| {
            let mut fields = Vec::new();
            d.decode_with_cb(b, |n, v| fields.push((n.into_owned(), v.into_owned())))
                .ok()
                .map(|()| fields)
        };
        let (mut raw, mut tmp) = (Vec::new(), Vec::new());
        let (mut a, mut b) = (Decoder::new(), Decoder::new());
        for block in rfc_blocks() {
            unhuffman(&block, &mut raw, &mut tmp).unwrap();
            assert!(raw.len() > block.len());
            let fields = decode(&mut a, &block).unwrap();
            assert_eq!(decode(&mut b, &raw), Some(fields));
        }
        // Corrupted blocks: whatever the crate decodes, the rewritten block decodes alike.
        let mut rng = Rng(0x5555_aaaa_1234_9876);
        let blocks = rfc_blocks();
        for _ in 0..1000 {
            let mut block = blocks[rng.below(blocks.len())].clone();
            for _ in 0..rng.below(3) + 1 {
                let i = rng.below(block.len());
                block[i] ^= 1 << rng.below(8);
            }
            let (mut a, mut b) = (Decoder::new(), Decoder::new());
            if let Some(fields) = decode(&mut a, &block) {
                unhuffman(&block, &mut raw, &mut tmp).unwrap();
                assert_eq!(decode(&mut b, &raw), Some(fields), "{block:?}");
            }
        }
    }

    #[test]
    fn header_block_partly_unseen_loses_the_table() {
        let big = "v".repeat(600);
        let first = cat(&[
            indexed(2),
            lit(4, "/first"),
            lit_inc(1, "api.example"),
            indexed(7),
            lit_inc_new("x-big", &big),
        ]);
        let head = cat(&[
            PREFACE.to_vec(),
            settings(&[]),
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &first),
        ]);
        // Stream 3 names its authority from the dynamic table (index 63: api.example);
        // stream 5 uses the static table and literals only.
        let rest = cat(&[
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                3,
                &cat(&[indexed(2), lit(4, "/second"), indexed(63), indexed(7)]),
            ),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                5,
                &req_block("GET", "/static", "five.example"),
            ),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                7,
                &cat(&[indexed(3), indexed(62)]),
            ),
        ]);
        let recv = cat(&[
            settings(&[]),
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &indexed(8)),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &indexed(8)),
            frame(HEADERS, END_HEADERS | END_STREAM, 5, &indexed(13)),
            frame(HEADERS, END_HEADERS | END_STREAM, 7, &indexed(8)),
        ]);
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(
            &mut p,
            &[
                (Dir::Send, &head[..512], (head.len() - 512) as u64),
                (Dir::Send, &rest, 0),
                (Dir::Recv, &recv, 0),
            ],
        );
        assert_eq!(
            out.messages,
            vec![
                request(5, "GET", "/static", "five.example"),
                response(5, 404)
            ]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 3));
        assert!(p.streams.is_empty());
    }

    fn grpc_conversation() -> (Vec<u8>, Vec<u8>) {
        let mut client = loona_hpack::Encoder::new();
        let mut server = loona_hpack::Encoder::new();
        let mut req = |path: &str| {
            client.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", path.as_bytes()),
                (b":authority", b"grpc.example:50051"),
                (b"content-type", b"application/grpc+proto"),
                (b"te", b"trailers"),
                (b"grpc-timeout", b"1S"),
            ])
        };
        let (r1, r3, r5) = (
            req("/pkg.Svc/Ok"),
            req("/pkg.Svc/NotFound"),
            req("/pkg.Svc/Down"),
        );
        let message = [0u8, 0, 0, 0, 2, 8, 1];
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[(0x2, 0)]),
            frame(HEADERS, END_HEADERS, 1, &r1),
            frame(DATA, END_STREAM, 1, &message),
            frame(HEADERS, END_HEADERS, 3, &r3),
            frame(DATA, END_STREAM, 3, &message),
            frame(HEADERS, END_HEADERS, 5, &r5),
            frame(DATA, END_STREAM, 5, &message),
        ]);
        let mut block = |h: &[(&[u8], &[u8])]| server.encode(h.iter().copied());
        let h200: &[(&[u8], &[u8])] =
            &[(b":status", b"200"), (b"content-type", b"application/grpc")];
        let recv = cat(&[
            settings(&[]),
            frame(HEADERS, END_HEADERS, 1, &block(h200)),
            frame(DATA, 0, 1, &message),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &block(&[(b"grpc-status", b"0"), (b"grpc-message", b"")]),
            ),
            frame(HEADERS, END_HEADERS, 3, &block(h200)),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                3,
                &block(&[(b"grpc-status", b"5"), (b"grpc-message", b"no such thing")]),
            ),
            // Trailers-only.
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                5,
                &block(&[
                    (b":status", b"200"),
                    (b"content-type", b"application/grpc"),
                    (b"grpc-status", b"14"),
                ]),
            ),
        ]);
        (send, recv)
    }

    fn conn_run(calls: &[(Dir, &[u8], u64)]) -> (Conn, Vec<Exchange>, crate::conn::Counters) {
        let mut conn = Conn::new();
        let mut done = Vec::new();
        let mut counters = Default::default();
        for (ts, (dir, data, unseen)) in calls.iter().enumerate() {
            conn.feed(
                ts as u64 * 10,
                *dir,
                data,
                *unseen,
                &mut done,
                &mut counters,
            );
        }
        (conn, done, counters)
    }

    #[test]
    fn grpc_unary_calls_through_conn() {
        let (send, recv) = grpc_conversation();
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(&mut p, &[(Dir::Send, &send, 0), (Dir::Recv, &recv, 0)]);
        let responses: Vec<_> = out
            .messages
            .iter()
            .filter(|m| m.kind == Kind::Response)
            .collect();
        let codes: Vec<_> = responses
            .iter()
            .map(|m| (m.stream, m.status, m.error, m.code.as_deref(), m.grpc))
            .collect();
        assert_eq!(
            codes,
            vec![
                (Some(1), 200, false, Some("0"), true),
                (Some(3), 200, true, Some("5"), true),
                (Some(5), 200, true, Some("14"), true),
            ]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 0));

        let (conn, done, counters) = conn_run(&[(Dir::Send, &send, 0), (Dir::Recv, &recv, 0)]);
        assert_eq!(conn.protocol(), Some((Protocol::Http2, Role::Client)));
        let got: Vec<_> = done
            .iter()
            .map(|e| {
                (
                    e.protocol,
                    e.method,
                    e.path.clone(),
                    e.host.as_deref(),
                    e.status,
                    e.error,
                    e.code.as_deref(),
                )
            })
            .collect();
        let host = Some("grpc.example:50051");
        let path = |p: &str| Some(crate::route::normalize(p).into_boxed_str());
        assert_eq!(
            got,
            vec![
                (
                    Protocol::Grpc,
                    "POST",
                    path("/pkg.Svc/Ok"),
                    host,
                    200,
                    false,
                    Some("0")
                ),
                (
                    Protocol::Grpc,
                    "POST",
                    path("/pkg.Svc/NotFound"),
                    host,
                    200,
                    true,
                    Some("5")
                ),
                (
                    Protocol::Grpc,
                    "POST",
                    path("/pkg.Svc/Down"),
                    host,
                    200,
                    true,
                    Some("14")
                ),
            ]
        );
        assert_eq!(counters, Default::default());
    }

    #[test]
    fn conn_pairs_by_stream() {
        let (send, recv) = interleaved();
        let (_, done, counters) = conn_run(&[(Dir::Send, &send, 0), (Dir::Recv, &recv, 0)]);
        let got: Vec<_> = done
            .iter()
            .map(|e| (e.protocol, e.method, e.path.clone(), e.status, e.latency_ns))
            .collect();
        let path = |p: &str| Some(crate::route::normalize(p).into_boxed_str());
        assert_eq!(
            got,
            vec![
                (Protocol::Http2, "POST", path("/b"), 201, 10),
                (Protocol::Http2, "GET", path("/a"), 404, 10)
            ]
        );
        assert_eq!(counters, Default::default());
    }

    #[test]
    fn rst_stream_fails_the_pending_request() {
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &req_block("GET", "/slow", "h"),
            ),
            frame(
                HEADERS,
                END_HEADERS,
                3,
                &cat(&[
                    indexed(3),
                    lit(4, "/pkg.Svc/M"),
                    lit(1, "h"),
                    lit(31, "application/grpc"),
                ]),
            ),
            // The client gives up on stream 1.
            frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]),
        ]);
        let recv = cat(&[
            settings(&[]),
            frame(
                HEADERS,
                END_HEADERS,
                3,
                &cat(&[indexed(8), lit(31, "application/grpc")]),
            ),
            frame(DATA, 0, 3, b"partial"),
            frame(RST_STREAM, 0, 3, &[0, 0, 0, 2]),
            // Late frames on the reset stream change nothing.
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &indexed(8)),
        ]);
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(&mut p, &[(Dir::Send, &send, 0), (Dir::Recv, &recv, 0)]);
        let responses: Vec<_> = out
            .messages
            .iter()
            .filter(|m| m.kind == Kind::Response)
            .map(|m| (m.stream, m.status, m.error, m.grpc, m.code.as_deref()))
            .collect();
        assert_eq!(
            responses,
            vec![
                (Some(1), 0, true, false, None),
                (Some(3), 0, true, true, None)
            ]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 0));
        assert!(p.streams.is_empty());
    }

    #[test]
    fn interim_responses_and_grpc_without_trailers() {
        let send = cat(&[
            PREFACE.to_vec(),
            frame(HEADERS, END_HEADERS, 1, &req_block("PUT", "/up", "h")),
            frame(
                HEADERS,
                END_HEADERS,
                3,
                &cat(&[indexed(3), lit(4, "/S/M"), lit(31, "application/grpc")]),
            ),
            // Request trailers on stream 1: not a new request.
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &lit_inc_new("x-checksum", "1"),
            ),
        ]);
        let recv = cat(&[
            frame(HEADERS, END_HEADERS, 1, &status_block(100)),
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &status_block(204)),
            frame(
                HEADERS,
                END_HEADERS,
                3,
                &cat(&[indexed(8), lit(31, "application/grpc")]),
            ),
            // gRPC ending without trailers.
            frame(DATA, END_STREAM, 3, b""),
        ]);
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(&mut p, &[(Dir::Send, &send, 0), (Dir::Recv, &recv, 0)]);
        let got: Vec<_> = out
            .messages
            .iter()
            .map(|m| (m.kind, m.stream, m.method, m.status, m.error, m.grpc))
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::Request, Some(1), "PUT", 0, false, false),
                (Kind::Request, Some(3), "POST", 0, false, true),
                (Kind::Response, Some(1), "", 204, false, false),
                (Kind::Response, Some(3), "", 200, true, true),
            ]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 0));
    }

    #[test]
    fn continuation_padding_priority_and_push_promise() {
        let block = req_block("DELETE", "/items/7", "h.example");
        let (a, b) = block.split_at(3);
        let mut headers = vec![3]; // pad length
        headers.extend([0x80, 0, 0, 1, 16]); // exclusive dependency on stream 1, weight
        headers.extend(a);
        headers.extend([0; 3]);
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[]),
            frame(HEADERS, PADDED | PRIORITY_FLAG | END_STREAM, 1, &headers),
            frame(CONTINUATION, 0, 1, &b[..2]),
            frame(CONTINUATION, END_HEADERS, 1, &b[2..]),
            frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16]),
        ]);
        // The server pushes, adding an entry to its table, then answers with it.
        let mut promise = vec![1]; // pad length
        promise.extend(2u32.to_be_bytes());
        promise.extend(cat(&[
            indexed(2),
            lit(4, "/style.css"),
            lit_inc_new("x-srv", "a"),
        ]));
        promise.push(0);
        let recv = cat(&[
            settings(&[]),
            frame(PUSH_PROMISE, END_HEADERS | PADDED, 1, &promise),
            frame(HEADERS, END_HEADERS, 1, &cat(&[indexed(13), indexed(62)])),
            frame(HEADERS, END_HEADERS | END_STREAM, 2, &indexed(8)),
            frame(DATA, END_STREAM, 1, b""),
        ]);
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(&mut p, &[(Dir::Send, &send, 0), (Dir::Recv, &recv, 0)]);
        assert_eq!(
            out.messages,
            vec![
                request(1, "DELETE", "/items/7", "h.example"),
                response(1, 404)
            ]
        );
        assert_eq!((out.malformed, out.mid_stream), (0, 0));

        // A CONTINUATION out of sequence loses the framing.
        let mut p = Http2Parser::new(Role::Client, true);
        let bad = cat(&[
            PREFACE.to_vec(),
            frame(HEADERS, 0, 1, a),
            frame(DATA, 0, 1, b"x"),
        ]);
        let out = run(&mut p, &[(Dir::Send, &bad, 0)]);
        assert_eq!((out.messages.len(), out.malformed), (0, 1));
    }

    #[test]
    fn table_size_follows_the_receivers_settings() {
        // The client allows the server's encoder 1024 bytes, the server the client's 8192.
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[(SETTINGS_HEADER_TABLE_SIZE, 1024)]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &cat(&[size_update(8192), req_block("GET", "/1", "h")]),
            ),
        ]);
        let recv_ok = cat(&[
            settings(&[(SETTINGS_HEADER_TABLE_SIZE, 8192)]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &cat(&[size_update(1024), indexed(8)]),
            ),
        ]);
        let recv_bad = cat(&[
            settings(&[(SETTINGS_HEADER_TABLE_SIZE, 8192)]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &cat(&[size_update(8192), indexed(8)]),
            ),
        ]);
        // At the client: the server's SETTINGS arrive before the client's encoder uses them.
        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(
            &mut p,
            &[
                (Dir::Recv, &recv_ok[..15], 0),
                (Dir::Send, &send, 0),
                (Dir::Recv, &recv_ok[15..], 0),
            ],
        );
        assert_eq!(
            out.messages,
            vec![request(1, "GET", "/1", "h"), response(1, 200)]
        );
        assert_eq!(out.malformed, 0);

        let mut p = Http2Parser::new(Role::Client, true);
        let out = run(
            &mut p,
            &[
                (Dir::Recv, &recv_bad[..15], 0),
                (Dir::Send, &send, 0),
                (Dir::Recv, &recv_bad[15..], 0),
            ],
        );
        assert_eq!(out.messages, vec![request(1, "GET", "/1", "h")]);
        assert_eq!(out.malformed, 1);
    }

    #[test]
    fn framing_lost_then_resynchronised() {
        let send = cat(&[
            PREFACE.to_vec(),
            settings(&[]),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &req_block("GET", "/1", "h"),
            ),
        ]);
        let mut p = Http2Parser::new(Role::Client, true);
        let mut out = Output::default();
        p.feed(Dir::Send, &send, 0, &mut out);
        // A call whose bytes after the first frame went unseen: the next header is lost.
        let h3 = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &req_block("GET", "/3", "h"),
        );
        p.feed(Dir::Send, &h3, 40, &mut out);
        assert_eq!(out.malformed, 1);
        // Bytes that are not frames change nothing and count nothing more.
        p.feed(
            Dir::Send,
            b"\x00\x00\x10\x00garbage and more garbage",
            0,
            &mut out,
        );
        p.feed(Dir::Send, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, &mut out);
        // A partial header at the end of a call.
        p.feed(Dir::Send, &h3[..5], 0, &mut out);
        assert_eq!(out.malformed, 1);
        assert_eq!(out.messages.len(), 2);
        // A call of whole frames resynchronises; the table is unknown from then on.
        let next = cat(&[
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                9,
                &req_block("GET", "/9", "h"),
            ),
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                11,
                &cat(&[indexed(2), indexed(62)]),
            ),
        ]);
        p.feed(Dir::Send, &next, 0, &mut out);
        assert_eq!(out.messages.last(), Some(&request(9, "GET", "/9", "h")));
        assert_eq!((out.malformed, out.mid_stream), (1, 1));
    }

    #[test]
    fn mid_stream_connection_through_conn() {
        // The connection was open before capture: stream 7's request uses literals only,
        // stream 9's indexes an unknown table.
        let send = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            7,
            &cat(&[indexed(2), lit(4, "/seven"), lit(1, "m.example")]),
        );
        let send9 = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            9,
            &cat(&[indexed(2), indexed(62)]),
        );
        // The first receive starts inside a DATA frame.
        let garbage = [0x17u8, 0x03, 0x03, 0, 1, 0xff, 0xee];
        let recv = cat(&[
            frame(HEADERS, END_HEADERS | END_STREAM, 7, &indexed(8)),
            frame(HEADERS, END_HEADERS, 9, &indexed(8)),
            frame(DATA, END_STREAM, 9, b"x"),
            frame(HEADERS, END_HEADERS | END_STREAM, 5, &indexed(14)),
        ]);
        let (conn, done, counters) = conn_run(&[
            (Dir::Send, &send, 0),
            (Dir::Recv, &garbage, 0),
            (Dir::Send, &send9, 0),
            (Dir::Recv, &recv, 0),
        ]);
        assert_eq!(conn.protocol(), Some((Protocol::Http2, Role::Client)));
        let got: Vec<_> = done
            .iter()
            .map(|e| (e.method, e.path.as_deref(), e.host.as_deref(), e.status))
            .collect();
        let seven = crate::route::normalize("/seven");
        assert_eq!(
            got,
            vec![("GET", Some(seven.as_str()), Some("m.example"), 200)]
        );
        assert_eq!(counters.malformed, 0);
        assert_eq!(counters.mid_stream, 1);
        // Stream 5 opened before capture: its response has no request.
        assert_eq!(counters.unmatched_responses, 1);
    }

    #[test]
    fn detection_mid_stream() {
        let get = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            5,
            &cat(&[indexed(65), indexed(2), lit(4, "/")]),
        );
        assert_eq!(detect(Dir::Send, &get), Some((Role::Client, false)));
        assert_eq!(detect(Dir::Recv, &get), Some((Role::Server, false)));
        let resp = cat(&[
            frame(HEADERS, END_HEADERS, 5, &indexed(8)),
            frame(DATA, 0, 5, b"hello"),
        ]);
        assert_eq!(detect(Dir::Send, &resp), Some((Role::Server, false)));
        assert_eq!(detect(Dir::Recv, &resp), Some((Role::Client, false)));
        // A whole frame then the header of a frame going past the copy.
        let mut partial = resp.clone();
        partial.extend(frame_len(DATA, 0, 5, 1000));
        partial.extend([0; 100]);
        assert_eq!(detect(Dir::Recv, &partial), Some((Role::Client, false)));
        // A Huffman-coded literal name.
        let huff = frame(
            HEADERS,
            END_HEADERS,
            1,
            &hex("0085 b9 49 53 39 e4 83 47 45 54"),
        );
        let _ = detect(Dir::Send, &huff);

        let no: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"+OK\r\n",
            b"-ERR unknown command\r\n",
            &[
                0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 1, 2, 3,
            ],
            &[0x17, 0x03, 0x03, 0x00, 0x20, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9],
            &[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f],
            &[0, 0, 0, 0x54, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0],
            &[0x4a, 0, 0, 0, 0x0a, b'8', b'.', b'0', 0],
            // Frames without a HEADERS to tell the roles.
            &settings(&[(3, 100)]),
            &frame(DATA, 0, 1, b"data"),
            // A single frame header whose frame goes past the data.
            &frame_len(HEADERS, END_HEADERS, 1, 100),
            // A HEADERS frame not ending where the data does.
            &cat(&[frame(HEADERS, END_HEADERS, 1, &indexed(8)), vec![0xff; 4]]),
            // A CONTINUATION first.
            &frame(CONTINUATION, END_HEADERS, 1, &indexed(8)),
            // Undefined flags.
            &frame(HEADERS, END_HEADERS | 0x40, 1, &indexed(8)),
            // Both a request and a response sent.
            &cat(&[get.clone(), resp.clone()]),
        ];
        for (i, data) in no.iter().enumerate() {
            assert_eq!(detect(Dir::Send, data), None, "case {i}");
            assert_eq!(detect(Dir::Recv, data), None, "case {i}");
        }

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(200) + 1;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert_eq!(detect(Dir::Send, &data), None, "{data:?}");
        }
    }

    #[test]
    fn fuzz_never_panics_and_stays_bounded() {
        let (send, recv) = interleaved();
        let (gsend, grecv) = grpc_conversation();
        let big = cat(&[
            frame(
                HEADERS,
                END_HEADERS,
                1,
                &cat(&[indexed(8), lit_inc_new("x", &"y".repeat(300))]),
            ),
            frame_len(DATA, END_STREAM, 1, 5000),
        ]);
        let rfc = rfc_blocks();
        let hsend = cat(&[
            PREFACE.to_vec(),
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &rfc[0]),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &rfc[1]),
            frame(HEADERS, END_HEADERS | END_STREAM, 5, &rfc[2]),
        ]);
        let hrecv = cat(&[
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &rfc[3]),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &rfc[3]),
            frame(HEADERS, END_HEADERS | END_STREAM, 5, &indexed(8)),
        ]);
        let templates: [(&[u8], &[u8]); 4] = [
            (&send, &recv),
            (&gsend, &grecv),
            (&send, &big),
            (&hsend, &hrecv),
        ];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..20_000 {
            let (s, r) = templates[rng.below(templates.len())];
            let role = if rng.below(2) == 0 {
                Role::Client
            } else {
                Role::Server
            };
            let mut p = Http2Parser::new(role, rng.below(4) != 0);
            let mut out = Output::default();
            let mut bytes = [s.to_vec(), r.to_vec()];
            for b in &mut bytes {
                for _ in 0..rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] = match rng.below(3) {
                        0 => rng.next() as u8,
                        1 => b[i] ^ (1 << rng.below(8)),
                        _ => 0xff,
                    };
                }
                if rng.below(8) == 0 {
                    let cut = rng.below(b.len());
                    b.truncate(cut);
                }
            }
            let mut at = [0usize; 2];
            while at[0] < bytes[0].len() || at[1] < bytes[1].len() {
                let d = rng.below(2);
                let left = bytes[d].len() - at[d];
                if left == 0 {
                    continue;
                }
                let n = rng.below(left.min(700)) + 1;
                let (copied, unseen) = if rng.below(6) == 0 {
                    let c = rng.below(n + 1);
                    (
                        c,
                        (n - c) as u64
                            + if rng.below(4) == 0 {
                                rng.next() % 2_000_000
                            } else {
                                0
                            },
                    )
                } else {
                    (n, 0)
                };
                let dir = if d == 0 { Dir::Send } else { Dir::Recv };
                p.feed(dir, &bytes[d][at[d]..at[d] + copied], unseen, &mut out);
                at[d] += n;
                assert!(p.streams.len() <= MAX_STREAMS);
                assert!(p.halves.iter().all(|h| h.block.len() <= MAX_HELD));
            }
            assert!(out.messages.len() <= 16);
            for m in &out.messages {
                assert!(m.host.as_ref().is_none_or(|h| h.len() <= MAX_HOST));
            }
        }

        // Many streams never answered stay bounded.
        let mut p = Http2Parser::new(Role::Client, true);
        let mut out = Output::default();
        p.feed(Dir::Send, PREFACE, 0, &mut out);
        for i in 0..3000u32 {
            let f = frame(HEADERS, END_HEADERS, 2 * i + 1, &req_block("GET", "/", "h"));
            p.feed(Dir::Send, &f, 0, &mut out);
        }
        assert_eq!(p.streams.len(), MAX_STREAMS);
        assert_eq!(out.messages.len(), 3000);
    }
}
