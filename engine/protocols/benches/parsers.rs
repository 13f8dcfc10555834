//! Parser throughput: requests per second through `Conn::feed` (detection, the protocol's
//! parser, request/response pairing), one core, one connection per iteration.
//!
//! Each stream is built once, shaped like what the kernel side records: one call per
//! write or read as a client library and server make them, each cut to the default
//! snaplen of 512 bytes (the rest passed as `unseen`), the connection seen from its first
//! byte (handshake, preface or startup included). An iteration feeds one connection's
//! calls to a fresh [`Conn`]; the throughput is in parsed request/response pairs. Before
//! measuring, each stream is checked to yield exactly its exchanges with no parser
//! counter raised, so a parser that silently stops pairing cannot look fast.
//!
//! `cargo bench -p ksight-protocols --bench parsers`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ksight_protocols::{Conn, Counters, Dir, Exchange, Protocol, Role};
use std::hint::black_box;
use std::time::Duration;

/// The default snaplen: bytes of a call's payload the kernel side copies.
const SNAPLEN: usize = 512;
/// Requests per connection (per iteration).
const REQUESTS: usize = 1000;

/// One connection's calls: direction as seen from the traced socket, copied bytes, bytes
/// past the snaplen.
struct Stream {
    name: &'static str,
    protocol: Protocol,
    role: Role,
    calls: Vec<(Dir, Vec<u8>, u64)>,
    exchanges: u64,
    bytes: u64,
}

impl Stream {
    fn new(name: &'static str, protocol: Protocol, role: Role) -> Self {
        Self {
            name,
            protocol,
            role,
            calls: Vec::new(),
            exchanges: 0,
            bytes: 0,
        }
    }

    /// One system call moving `bytes` in `dir`, cut at the snaplen.
    fn call(&mut self, dir: Dir, bytes: &[u8]) {
        let seen = bytes.len().min(SNAPLEN);
        self.bytes += bytes.len() as u64;
        self.calls
            .push((dir, bytes[..seen].to_vec(), (bytes.len() - seen) as u64));
    }

    /// Feeds every call to a fresh connection: exchanges completed.
    fn run(&self, done: &mut Vec<Exchange>, counters: &mut Counters) -> Conn {
        let mut conn = Conn::new();
        for (k, (dir, data, unseen)) in self.calls.iter().enumerate() {
            conn.feed(
                1_000_000 + k as u64 * 20_000,
                *dir,
                data,
                *unseen,
                done,
                counters,
            );
        }
        conn
    }

    /// The stream parses as built: its protocol and role, every exchange, nothing counted
    /// as malformed, mid-stream, unmatched or unanswered.
    fn check(&self) {
        let (mut done, mut counters) = (Vec::new(), Counters::default());
        let mut conn = self.run(&mut done, &mut counters);
        conn.close(&mut counters);
        let (protocol, role) = conn.protocol().expect("protocol detected");
        assert_eq!(
            (protocol, role),
            (
                if self.protocol == Protocol::Grpc {
                    Protocol::Http2
                } else {
                    self.protocol
                },
                self.role
            ),
            "{}",
            self.name
        );
        assert_eq!(done.len() as u64, self.exchanges, "{}", self.name);
        assert!(done.iter().all(|e| e.protocol == self.protocol && !e.error));
        assert_eq!(counters, Counters::default(), "{}", self.name);
        let cut = self.calls.iter().filter(|c| c.2 > 0).count();
        eprintln!(
            "{}: {} calls ({} cut at the snaplen), {} bytes, {} exchanges, {:.0} bytes per exchange",
            self.name,
            self.calls.len(),
            cut,
            self.bytes,
            self.exchanges,
            self.bytes as f64 / self.exchanges as f64
        );
    }
}

/// The side of a socket that receives requests sees them as `Recv`, a client as `Send`.
fn dirs(role: Role) -> (Dir, Dir) {
    match role {
        Role::Server => (Dir::Recv, Dir::Send),
        Role::Client => (Dir::Send, Dir::Recv),
    }
}

/// HTTP/1.1 keep-alive, seen from the server: GETs of a browser-like client (~300 bytes of
/// headers, ids in the path for the route normaliser), each answered by a 200 with a small
/// JSON body in one write.
fn http1() -> Stream {
    let mut s = Stream::new("http1_keepalive_get", Protocol::Http1, Role::Server);
    let (req, resp) = dirs(s.role);
    let paths = [
        "/api/v1/users/{}/profile",
        "/api/v1/items/{}",
        "/static/app.{}.js",
    ];
    for k in 0..REQUESTS {
        let path = paths[k % paths.len()].replace("{}", &(10_000 + k * 7).to_string());
        let request = format!(
            "GET {path}?fields=name,email HTTP/1.1\r\n\
             Host: shop.example.com\r\n\
             User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
             Accept: application/json, text/plain, */*\r\n\
             Accept-Language: en-US,en;q=0.5\r\n\
             Accept-Encoding: gzip, deflate, br\r\n\
             Referer: https://shop.example.com/cart\r\n\
             Cookie: session=4f9c2a7be81d4c3f9a1b6e2d\r\n\
             Connection: keep-alive\r\n\r\n"
        );
        let body = format!(
            "{{\"id\":{},\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"plan\":\"pro\"}}\n",
            10_000 + k * 7
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\n\
             Server: nginx/1.22.1\r\n\
             Date: Tue, 02 Dec 2026 10:00:00 GMT\r\n\
             Content-Type: application/json\r\n\
             Content-Length: {}\r\n\
             Connection: keep-alive\r\n\
             Cache-Control: no-store\r\n\r\n{body}",
            body.len()
        );
        s.call(req, request.as_bytes());
        s.call(resp, response.as_bytes());
        s.exchanges += 1;
    }
    s
}

// HTTP/2 framing.
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend([ty, flags]);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A length-prefixed gRPC message of `n` bytes of protobuf.
fn grpc_message(n: usize, fill: u8) -> Vec<u8> {
    let mut m = vec![0];
    m.extend((n as u32).to_be_bytes());
    m.extend((0..n).map(|i| fill.wrapping_add(i as u8)));
    m
}

/// How a stream's header blocks are encoded.
#[derive(Clone, Copy)]
enum Hpack {
    /// loona-hpack's encoder, one per direction for the whole connection: headers repeated
    /// from earlier calls are indexed in the dynamic table (what grpc-go and others settle
    /// into); strings are not Huffman-coded.
    Indexed,
    /// No dynamic table, every value a Huffman-coded literal (an encoder with table size
    /// 0): every block decodes every string again.
    HuffmanLiterals,
}

/// An HPACK integer with an `n`-bit prefix under `flags`.
fn hpack_int(out: &mut Vec<u8>, mut v: usize, n: u8, flags: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn huffman_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut h = Vec::new();
    httlib_huffman::encode(s, &mut h).expect("huffman");
    hpack_int(out, h.len(), 7, 0x80);
    out.extend(h);
}

/// A block of literals without indexing, Huffman-coded: a static-table name where there
/// is one (RFC 7541 Appendix A), else a literal name.
fn huffman_block(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let index = match *name {
            b":authority" => 1,
            b":method" => 2,
            b":path" => 4,
            b":scheme" => 6,
            b":status" => 8,
            b"content-type" => 31,
            b"user-agent" => 58,
            _ => 0,
        };
        hpack_int(&mut out, index, 4, 0);
        if index == 0 {
            huffman_string(&mut out, name);
        }
        huffman_string(&mut out, value);
    }
    out
}

/// gRPC unary calls over one HTTP/2 connection, seen from the client: the preface and
/// SETTINGS exchange, then per call one write of HEADERS + DATA (END_STREAM) and one read
/// of the response's HEADERS, DATA and trailers; a connection WINDOW_UPDATE from the
/// server every 16 calls.
fn grpc(name: &'static str, hpack: Hpack) -> Stream {
    let mut s = Stream::new(name, Protocol::Grpc, Role::Client);
    let (req, resp) = dirs(s.role);
    let mut client = loona_hpack::Encoder::new();
    let mut server = loona_hpack::Encoder::new();
    let encode = |enc: &mut loona_hpack::Encoder, h: &[(&[u8], &[u8])]| match hpack {
        Hpack::Indexed => enc.encode(h.iter().copied()),
        Hpack::HuffmanLiterals => huffman_block(h),
    };

    let mut first = PREFACE.to_vec();
    // SETTINGS: ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 4 MiB; a connection WINDOW_UPDATE.
    let settings: Vec<u8> = [(0x2u16, 0u32), (0x4, 4 << 20)]
        .iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect();
    frame(&mut first, SETTINGS, 0, 0, &settings);
    frame(&mut first, WINDOW_UPDATE, 0, 0, &(4u32 << 20).to_be_bytes());
    s.call(req, &first);
    let mut hello = Vec::new();
    frame(&mut hello, SETTINGS, 0, 0, &[0, 5, 0, 0, 0x40, 0]); // MAX_FRAME_SIZE 16384
    frame(&mut hello, SETTINGS, ACK, 0, &[]);
    s.call(resp, &hello);
    let mut ack = Vec::new();
    frame(&mut ack, SETTINGS, ACK, 0, &[]);
    s.call(req, &ack);

    let methods = [
        "/shop.catalog.v1.CatalogService/GetItem",
        "/shop.catalog.v1.CatalogService/ListItems",
        "/shop.cart.v1.CartService/AddToCart",
    ];
    for k in 0..REQUESTS {
        let id = 1 + 2 * k as u32;
        let timeout = format!("{}m", 990 + k % 10);
        let mut call = Vec::new();
        let block = encode(
            &mut client,
            &[
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", methods[k % methods.len()].as_bytes()),
                (b":authority", b"catalog.shop.svc.cluster.local:50051"),
                (b"content-type", b"application/grpc"),
                (b"user-agent", b"grpc-go/1.64.0"),
                (b"te", b"trailers"),
                (b"grpc-timeout", timeout.as_bytes()),
            ],
        );
        frame(&mut call, HEADERS, END_HEADERS, id, &block);
        frame(&mut call, DATA, END_STREAM, id, &grpc_message(24, k as u8));
        s.call(req, &call);

        let mut reply = Vec::new();
        if k % 16 == 15 {
            frame(&mut reply, WINDOW_UPDATE, 0, 0, &1024u32.to_be_bytes());
        }
        let head = encode(
            &mut server,
            &[
                (b":status", b"200"),
                (b"content-type", b"application/grpc"),
                (b"grpc-accept-encoding", b"gzip"),
            ],
        );
        frame(&mut reply, HEADERS, END_HEADERS, id, &head);
        frame(&mut reply, DATA, 0, id, &grpc_message(120, k as u8));
        let trailers = encode(
            &mut server,
            &[(b"grpc-status", b"0"), (b"grpc-message", b"")],
        );
        frame(&mut reply, HEADERS, END_HEADERS | END_STREAM, id, &trailers);
        s.call(resp, &reply);
        s.exchanges += 1;
    }
    s
}

fn resp_bulk(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(format!("${}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
    out.extend(b"\r\n");
}

fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        resp_bulk(out, a);
    }
}

/// Redis SET and GET as redis-benchmark sends them (`key:` and a 12-digit number, 3-byte
/// values), seen from the server. `pipeline` commands per call: 1 is redis-benchmark's
/// default (one write, one read per command); 10 (5 SET, 5 GET, ~400 bytes) still fits the
/// snaplen.
fn redis(name: &'static str, pipeline: usize) -> Stream {
    let mut s = Stream::new(name, Protocol::Redis, Role::Server);
    let (req, resp) = dirs(s.role);
    let mut k = 0;
    while k < REQUESTS {
        let (mut commands, mut replies) = (Vec::new(), Vec::new());
        for _ in 0..pipeline.min(REQUESTS - k) {
            let key = format!("key:{:012}", k * 7919 % 100_000);
            if k % 2 == 0 {
                resp_command(&mut commands, &[b"SET", key.as_bytes(), b"xxx"]);
                replies.extend(b"+OK\r\n");
            } else {
                resp_command(&mut commands, &[b"GET", key.as_bytes()]);
                resp_bulk(&mut replies, b"xxx");
            }
            k += 1;
            s.exchanges += 1;
        }
        s.call(req, &commands);
        s.call(resp, &replies);
    }
    s
}

fn pg_msg(out: &mut Vec<u8>, t: u8, body: &[u8]) {
    out.push(t);
    out.extend((body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

/// PostgreSQL simple queries, seen from the client: startup and trust authentication,
/// then per request a `Query` and, in one read, RowDescription (3 columns), one DataRow,
/// CommandComplete and ReadyForQuery; every other request an UPDATE (CommandComplete and
/// ReadyForQuery).
fn postgres() -> Stream {
    let mut s = Stream::new("postgres_simple_query", Protocol::Postgres, Role::Client);
    let (req, resp) = dirs(s.role);
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0app\0database\0shop\0application_name\0psql\0\0");
    let mut startup = (body.len() as u32 + 4).to_be_bytes().to_vec();
    startup.extend(body);
    s.call(req, &startup);
    let mut reply = Vec::new();
    pg_msg(&mut reply, b'R', &0u32.to_be_bytes());
    for (k, v) in [
        ("server_version", "16.2"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
    ] {
        pg_msg(&mut reply, b'S', format!("{k}\0{v}\0").as_bytes());
    }
    pg_msg(&mut reply, b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]);
    pg_msg(&mut reply, b'Z', b"I");
    s.call(resp, &reply);

    let mut desc = 3u16.to_be_bytes().to_vec();
    for (name, oid) in [("id", 23u32), ("name", 25), ("price", 1700)] {
        desc.extend(format!("{name}\0").as_bytes());
        desc.extend([0, 0, 0x40, 0, 0, 1]);
        desc.extend(oid.to_be_bytes());
        desc.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    }
    for k in 0..REQUESTS {
        let id = 1000 + k * 13;
        let (sql, tag) = if k % 2 == 0 {
            (
                format!("SELECT id, name, price FROM items WHERE id = {id}"),
                "SELECT 1",
            )
        } else {
            (
                format!("UPDATE items SET stock = stock - 1 WHERE id = {id}"),
                "UPDATE 1",
            )
        };
        let mut q = Vec::new();
        pg_msg(&mut q, b'Q', format!("{sql}\0").as_bytes());
        s.call(req, &q);
        let mut r = Vec::new();
        if k % 2 == 0 {
            pg_msg(&mut r, b'T', &desc);
            let mut row = 3u16.to_be_bytes().to_vec();
            for v in [id.to_string(), "Widget, large".to_string(), "19.99".into()] {
                row.extend((v.len() as u32).to_be_bytes());
                row.extend(v.as_bytes());
            }
            pg_msg(&mut r, b'D', &row);
        }
        pg_msg(&mut r, b'C', format!("{tag}\0").as_bytes());
        pg_msg(&mut r, b'Z', b"I");
        s.call(resp, &r);
        s.exchanges += 1;
    }
    s
}

fn mysql_pkt(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend([len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
    out.extend_from_slice(payload);
}

/// MySQL `COM_QUERY` statements each answered by an OK packet, seen from the client:
/// the server's greeting, the handshake response and caching_sha2 fast authentication
/// first (CLIENT_DEPRECATE_EOF and protocol 4.1, as current connectors).
fn mysql() -> Stream {
    let mut s = Stream::new("mysql_com_query_ok", Protocol::Mysql, Role::Client);
    let (req, resp) = dirs(s.role);
    let server_caps = 0xffff_ffffu32;
    let mut g = vec![10];
    g.extend(b"8.0.36\0");
    g.extend([1, 0, 0, 0]);
    g.extend(b"abcdefgh\0");
    g.extend((server_caps as u16).to_le_bytes());
    g.push(0xff);
    g.extend(2u16.to_le_bytes());
    g.extend(((server_caps >> 16) as u16).to_le_bytes());
    g.push(21);
    g.extend([0; 10]);
    g.extend(b"ijklmnopqrst\0");
    g.extend(b"caching_sha2_password\0");
    let mut greeting = Vec::new();
    mysql_pkt(&mut greeting, 0, &g);
    s.call(resp, &greeting);

    // Long password, protocol 4.1, transactions, secure connection, plugin auth,
    // CLIENT_DEPRECATE_EOF.
    let caps: u32 = 0x0000_a685 | 0x0008_0000 | (1 << 24);
    let mut h = caps.to_le_bytes().to_vec();
    h.extend((1u32 << 24).to_le_bytes());
    h.push(255);
    h.extend([0; 23]);
    h.extend(b"app\0");
    h.push(32);
    h.extend([7; 32]);
    h.extend(b"caching_sha2_password\0");
    let mut hello = Vec::new();
    mysql_pkt(&mut hello, 1, &h);
    s.call(req, &hello);
    // Fast authentication succeeded, then OK.
    let mut auth = Vec::new();
    mysql_pkt(&mut auth, 2, &[0x01, 0x03]);
    mysql_pkt(&mut auth, 3, &[0, 0, 0, 2, 0, 0, 0]);
    s.call(resp, &auth);

    for k in 0..REQUESTS {
        let id = 1000 + k * 13;
        let sql = if k % 2 == 0 {
            format!("UPDATE items SET stock = stock - 1 WHERE id = {id}")
        } else {
            format!("INSERT INTO orders (item_id, qty, user_id) VALUES ({id}, 1, 42)")
        };
        let mut q = Vec::new();
        let mut p = vec![0x03]; // COM_QUERY
        p.extend(sql.as_bytes());
        mysql_pkt(&mut q, 0, &p);
        s.call(req, &q);
        // OK: 1 row affected, last insert id, SERVER_STATUS_AUTOCOMMIT, no warnings.
        let mut ok = Vec::new();
        mysql_pkt(&mut ok, 1, &[0, 1, (k % 2) as u8 * 7, 2, 0, 0, 0]);
        s.call(resp, &ok);
        s.exchanges += 1;
    }
    s
}

fn parsers(c: &mut Criterion) {
    let streams = [
        http1(),
        grpc("http2_grpc_unary", Hpack::Indexed),
        grpc("http2_grpc_unary_huffman_literals", Hpack::HuffmanLiterals),
        redis("redis_set_get", 1),
        redis("redis_set_get_pipelined10", 10),
        postgres(),
        mysql(),
    ];
    let mut group = c.benchmark_group("parsers");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    for s in &streams {
        s.check();
        group.throughput(Throughput::Elements(s.exchanges));
        group.bench_function(s.name, |b| {
            let mut done = Vec::with_capacity(REQUESTS);
            b.iter(|| {
                done.clear();
                let mut counters = Counters::default();
                let conn = s.run(&mut done, &mut counters);
                black_box((&conn, &done, counters));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
