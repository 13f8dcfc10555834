//! Real servers for the request tests, run INSIDE the captured `sh -c` script so that they
//! are descendants of the captured command and their side of every exchange is in scope.
//!
//! Each server's `prepare()` writes its configuration (and, where it needs one, its data
//! directory) into a [`TempDir`] before capture starts; the server then hands back shell
//! snippets: `start()` runs it in
//! the background on 127.0.0.1 with a port that was free a moment ago and returns once it
//! is ready, `stop()` stops it and waits for it. Readiness is read from
//! `/proc/net/tcp{,6}` (something listens on the port) or from the server's own pid file,
//! never by talking to the server: waiting adds no request to what the tests count.
//!
//! A script is [`PRELUDE`], then starts, the workload and stops. The prelude sets `-eu`,
//! so a workload step that fails fails the script (and the test, which checks the exit
//! status); on any exit it stops whatever server is still running.
//!
//! A server whose program is not installed fails the test with the Debian package to
//! install (`cargo xtask test` installs them all).

use crate::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Shell functions the snippets use; every script starts with it.
pub const PRELUDE: &str = r#"set -eu
ks_pids=""
# On any exit, stop the servers still running (a failed step leaves none behind).
ks_cleanup() {
    for p in $ks_pids; do kill "$p" 2>/dev/null || true; done
    for p in $ks_pids; do wait "$p" 2>/dev/null || true; done
}
trap ks_cleanup EXIT
# ks_wait_port PORT NAME LOG PID: until a socket listens on 127.0.0.1:PORT (or on a
# v4-mapped or wildcard IPv6 address), read from /proc so that waiting sends nothing; the
# server (PID) exiting meanwhile fails at once, with its log.
ks_wait_port() {
    ks_hex=$(printf '%04X' "$1")
    ks_i=0
    until grep -qE "^ *[0-9]+: [0-9A-F]+:$ks_hex [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6; do
        if ! kill -0 "$4" 2>/dev/null; then
            echo "$2 exited before it listened on port $1; its log ($3):" >&2
            cat "$3" >&2 || true
            exit 1
        fi
        ks_i=$((ks_i + 1))
        if [ "$ks_i" -gt 300 ]; then
            echo "$2 did not listen on port $1 within 30 s; its log ($3):" >&2
            cat "$3" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
}
# ks_stop PID SIGNAL NAME: the server must still be running; stop it and wait for it.
ks_stop() {
    if ! kill -0 "$1" 2>/dev/null; then
        echo "$3 (pid $1) exited before the end of the test" >&2
        exit 1
    fi
    kill "-$2" "$1"
    wait "$1" || true
    ks_left=""
    for p in $ks_pids; do [ "$p" = "$1" ] || ks_left="$ks_left $p"; done
    ks_pids=$ks_left
}
"#;

/// A script from [`PRELUDE`] and the given steps, one after the other.
pub fn script(steps: &[&str]) -> String {
    let mut s = PRELUDE.to_string();
    for step in steps {
        s.push_str(step);
        s.push('\n');
    }
    s
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The path of `program` (a name looked up on PATH, or an absolute path); a missing one
/// fails the test with the Debian package that provides it.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let found = if program.contains('/') {
        Path::new(program).exists().then(|| PathBuf::from(program))
    } else {
        // PATH, then the sbin directories a non-login root shell may lack.
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    };
    found.unwrap_or_else(|| {
        panic!(
            "{program} is not installed: `apt-get install {package}` (Debian), or run the \
             suite through `cargo xtask test`, which installs it"
        )
    })
}

/// Debian's python3, never a pyenv or virtualenv one that cannot see Debian's modules.
pub const PYTHON: &str = "/usr/bin/python3";

/// Debian's python3 with `module` importable, else the test fails naming `package`.
pub fn require_python_module(module: &str, package: &str) {
    require_program(PYTHON, "python3");
    let ok = Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{PYTHON} cannot import {module}: `apt-get install {package}` (Debian), or run the \
         suite through `cargo xtask test`, which installs it"
    );
}

/// `text` into `dir/name`; its path as a string for a script.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_str().expect("UTF-8 temp path").to_string()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// nginx

/// The size of `/big.bin`, served from both HTTP/1 ports.
pub const BIG_FILE: usize = 1 << 20;
/// The content of `/hello.txt`.
pub const HELLO: &str = "hello\n";

/// nginx with a master and one worker, its pid file and logs in its temp dir:
/// - `plain`: HTTP/1.1 with `sendfile off` (bodies go through write calls);
/// - `sendfile`: the same files with `sendfile on` (file bodies leave by `sendfile`);
/// - `h2`: cleartext HTTP/2 (prior knowledge), `listen … http2`.
///
/// Every port serves `/hello.txt`, `/big.bin` (1 MiB), a 404 for anything else, and
/// `/items/…` answered by `return 200 "item\n"` (any method). `plain` also has `/up`,
/// proxied to a closed port: 502.
///
/// The access log has one line per request: `port connection requests_on_it method
/// "uri" status "host" bytes_sent request_length` (`$bytes_sent` and `$request_length`
/// are what nginx wrote and read for the request, headers included).
pub struct Nginx {
    pub dir: TempDir,
    pub plain: u16,
    pub sendfile: u16,
    pub h2: u16,
    /// Nothing listens here: `/up` on `plain` is proxied to it.
    pub closed: u16,
    bin: PathBuf,
}

/// One line of nginx's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLine {
    pub port: u16,
    /// nginx's connection serial number.
    pub connection: u64,
    /// The request's number on its connection (1, 2, …).
    pub connection_requests: u64,
    pub method: String,
    pub uri: String,
    pub status: u16,
    pub host: String,
    pub bytes_sent: u64,
    pub request_length: u64,
}

impl Nginx {
    pub fn prepare() -> Self {
        let bin = require_program("nginx", "nginx");
        let dir = TempDir::new("nginx");
        let d = path_str(&dir.path).to_string();
        std::fs::create_dir_all(dir.path.join("www")).unwrap();
        std::fs::create_dir_all(dir.path.join("tmp")).unwrap();
        std::fs::write(dir.path.join("www/hello.txt"), HELLO).unwrap();
        // Not all one byte: a parser that looks into the body finds no false framing
        // by accident more easily with varied bytes.
        let big: Vec<u8> = (0..BIG_FILE).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path.join("www/big.bin"), big).unwrap();
        let (plain, sendfile, h2, closed) = (free_port(), free_port(), free_port(), free_port());
        let common = format!(
            "root {d}/www;
        location /items/ {{ return 200 \"item\\n\"; }}"
        );
        let conf = format!(
            "daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format ks '$server_port $connection $connection_requests $request_method \"$request_uri\" $status \"$http_host\" $bytes_sent $request_length';
    access_log {d}/access.log ks;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 10000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{plain};
        sendfile off;
        {common}
        location /up {{ proxy_pass http://127.0.0.1:{closed}; }}
    }}
    server {{
        listen 127.0.0.1:{sendfile};
        sendfile on;
        {common}
    }}
    server {{
        listen 127.0.0.1:{h2} http2;
        sendfile off;
        {common}
    }}
}}
"
        );
        write_file(&dir.path, "nginx.conf", &conf);
        let nginx = Self {
            dir,
            plain,
            sendfile,
            h2,
            closed,
            bin,
        };
        // The configuration is checked here, where a mistake is plain to see.
        run_ok(
            Command::new(&nginx.bin)
                .args(["-t", "-q", "-p"])
                .arg(format!("{d}/"))
                .arg("-e")
                .arg(format!("{d}/error.log"))
                .arg("-c")
                .arg(format!("{d}/nginx.conf")),
            "nginx -t",
        );
        nginx
    }

    pub fn url(&self, port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn start(&self) -> String {
        let d = path_str(&self.dir.path);
        format!(
            "{bin} -p {d}/ -e {d}/error.log -c {d}/nginx.conf >{d}/stdout.log 2>&1 &
ks_nginx=$!; ks_pids=\"$ks_pids $ks_nginx\"
ks_wait_port {p} nginx {d}/error.log $ks_nginx
ks_wait_port {s} nginx {d}/error.log $ks_nginx
ks_wait_port {h} nginx {d}/error.log $ks_nginx",
            bin = self.bin.display(),
            p = self.plain,
            s = self.sendfile,
            h = self.h2,
        )
    }

    /// Fast shutdown (TERM); the clients are done by then.
    pub fn stop(&self) -> String {
        "ks_stop $ks_nginx TERM nginx".to_string()
    }

    pub fn access_log(&self) -> Vec<AccessLine> {
        let path = self.dir.path.join("access.log");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .map(|line| {
                let quoted: Vec<&str> = line.split('"').collect();
                assert_eq!(quoted.len(), 5, "access log line: {line}");
                let head: Vec<&str> = quoted[0].split_whitespace().collect();
                let status_part: Vec<&str> = quoted[2].split_whitespace().collect();
                let tail: Vec<&str> = quoted[4].split_whitespace().collect();
                let n = |s: &str| -> u64 {
                    s.parse()
                        .unwrap_or_else(|_| panic!("access log line: {line}"))
                };
                AccessLine {
                    port: n(head[0]) as u16,
                    connection: n(head[1]),
                    connection_requests: n(head[2]),
                    method: head[3].to_string(),
                    uri: quoted[1].to_string(),
                    status: n(status_part[0]) as u16,
                    host: quoted[3].to_string(),
                    bytes_sent: n(tail[0]),
                    request_length: n(tail[1]),
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// gRPC

/// A gRPC server of Debian's python3-grpcio with a generic handler on raw bytes (no
/// protobuf): `/ksight.Test/Ok` answers `ok:` + the request, `/ksight.Test/Fail` aborts with
/// NOT_FOUND (5). grpcio listens on an IPv6 socket bound to ::ffff:127.0.0.1 (its accepted
/// sockets carry v4-mapped addresses). The client is nghttp ([`GrpcServer::nghttp`]).
pub struct GrpcServer {
    pub dir: TempDir,
    pub port: u16,
}

const GRPC_SERVER: &str = r#"import sys, grpc
from concurrent import futures

def ok(request, context):
    return b"ok:" + request

def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

class Handler(grpc.GenericRpcHandler):
    def service(self, details):
        if details.method == "/ksight.Test/Ok":
            return grpc.unary_unary_rpc_method_handler(ok)
        if details.method == "/ksight.Test/Fail":
            return grpc.unary_unary_rpc_method_handler(fail)
        return None

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[Handler()])
if server.add_insecure_port("127.0.0.1:%s" % sys.argv[1]) == 0:
    raise SystemExit("cannot bind port %s" % sys.argv[1])
server.start()
server.wait_for_termination()
"#;

/// The request message nghttp posts: one gRPC length-prefixed message (flag 0, a 4-byte
/// big-endian length, the bytes; the server's handlers take raw bytes).
pub const GRPC_MESSAGE: &[u8] = b"\x00\x00\x00\x00\x04ping";

impl GrpcServer {
    pub fn prepare() -> Self {
        require_python_module("grpc", "python3-grpcio");
        let dir = TempDir::new("grpc");
        write_file(&dir.path, "grpc_server.py", GRPC_SERVER);
        std::fs::write(dir.path.join("message.bin"), GRPC_MESSAGE).expect("write message.bin");
        Self {
            dir,
            port: free_port(),
        }
    }

    pub fn start(&self) -> String {
        let d = path_str(&self.dir.path);
        format!(
            "{PYTHON} {d}/grpc_server.py {p} >{d}/server.log 2>&1 &
ks_grpc=$!; ks_pids=\"$ks_pids $ks_grpc\"
ks_wait_port {p} grpc-server {d}/server.log $ks_grpc",
            p = self.port
        )
    }

    /// A client step: one `nghttp` connection POSTing [`GRPC_MESSAGE`] as a gRPC call to
    /// each of `methods` (distinct: nghttp drops a URI it was given already), its verbose
    /// output (headers and trailers received, bodies discarded) appended to `out`.
    pub fn nghttp(&self, nghttp: &Path, methods: &[&str], out: &str) -> String {
        let d = path_str(&self.dir.path);
        let uris: Vec<String> = methods
            .iter()
            .map(|m| format!("'http://127.0.0.1:{}{m}'", self.port))
            .collect();
        format!(
            "{} -nv -H ':method: POST' -H 'content-type: application/grpc' -H 'te: trailers' \
             -d {d}/message.bin {} >>{out}",
            nghttp.display(),
            uris.join(" ")
        )
    }

    pub fn stop(&self) -> String {
        "ks_stop $ks_grpc TERM grpc-server".to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Redis

/// redis-server without persistence, its log in its temp dir.
pub struct Redis {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    pub cli: PathBuf,
}

impl Redis {
    pub fn prepare() -> Self {
        let bin = require_program("redis-server", "redis-server");
        let cli = require_program("redis-cli", "redis-tools");
        Self {
            dir: TempDir::new("redis"),
            port: free_port(),
            bin,
            cli,
        }
    }

    pub fn start(&self) -> String {
        let d = path_str(&self.dir.path);
        format!(
            "{bin} --port {p} --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
             --dir {d} --logfile {d}/redis.log &
ks_redis=$!; ks_pids=\"$ks_pids $ks_redis\"
ks_wait_port {p} redis-server {d}/redis.log $ks_redis",
            bin = self.bin.display(),
            p = self.port
        )
    }

    /// `redis-cli -p PORT ARGS` (one connection per invocation).
    pub fn cli(&self, args: &str) -> String {
        format!("{} -p {} {args}", self.cli.display(), self.port)
    }

    pub fn stop(&self) -> String {
        "ks_stop $ks_redis TERM redis-server".to_string()
    }
}

// ---------------------------------------------------------------------------------------
// MariaDB

/// mariadbd on a data directory made by `mariadb-install-db` in its temp dir (made before
/// capture: installing runs a bootstrap server with no network). Root has no password
/// (`--auth-root-authentication-method=normal`), and a TCP client from 127.0.0.1 is
/// root@localhost. `--skip-ssl`: the greeting offers no TLS, so no client switches to it.
/// The general log (`general.log`) lists every command the server ran.
pub struct Mariadb {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    pub client: PathBuf,
}

impl Mariadb {
    pub fn prepare() -> Self {
        let bin = require_program("mariadbd", "mariadb-server");
        let install = require_program("mariadb-install-db", "mariadb-server");
        let client = require_program("mariadb", "mariadb-client");
        let dir = TempDir::new("mariadb");
        run_ok(
            Command::new(install)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", path_str(&dir.path.join("data"))))
                .args([
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--innodb-log-file-size=8M",
                ]),
            "mariadb-install-db",
        );
        Self {
            dir,
            port: free_port(),
            bin,
            client,
        }
    }

    pub fn start(&self) -> String {
        let d = path_str(&self.dir.path);
        format!(
            "{bin} --no-defaults --datadir={d}/data --user=root --bind-address=127.0.0.1 \
             --port={p} --socket={d}/mysqld.sock --pid-file={d}/mysqld.pid --skip-ssl \
             --skip-log-bin --innodb-log-file-size=8M --general-log=1 \
             --general-log-file={d}/general.log --log-error={d}/error.log >{d}/stdout.log 2>&1 &
ks_mariadb=$!; ks_pids=\"$ks_pids $ks_mariadb\"
ks_wait_port {p} mariadbd {d}/error.log $ks_mariadb",
            bin = self.bin.display(),
            p = self.port
        )
    }

    /// The `mariadb` client over TCP as root; `args` follow (e.g. `-e "…"`).
    pub fn client(&self, args: &str) -> String {
        format!(
            "{} --no-defaults -h 127.0.0.1 -P {} -u root --connect-timeout=10 {args}",
            self.client.display(),
            self.port
        )
    }

    pub fn stop(&self) -> String {
        "ks_stop $ks_mariadb TERM mariadbd".to_string()
    }

    /// The general log's entries: (connection id, command, argument), e.g.
    /// `(5, "Query", "SELECT 1")`, `(5, "Connect", "root@localhost on  using TCP/IP")`.
    pub fn general_log(&self) -> Vec<(u64, String, String)> {
        let path = self.dir.path.join("general.log");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut entries: Vec<(u64, String, String)> = Vec::new();
        for line in text.lines() {
            // An entry: [time] TAB(s) id command TAB argument, where the field of the id
            // and the command is "   5 Query" or "   7 Close stmt". Any other line continues
            // the previous entry's argument (a statement of several lines), or is the
            // header written at start.
            let fields: Vec<&str> = line.split('\t').collect();
            let entry = fields.iter().enumerate().find_map(|(i, f)| {
                let (id, command) = f.trim().split_once(' ')?;
                let id: u64 = id.parse().ok()?;
                command
                    .starts_with(|c: char| c.is_ascii_alphabetic())
                    .then(|| (i, id, command.trim().to_string()))
            });
            match entry {
                Some((i, id, command)) => {
                    entries.push((id, command, fields[i + 1..].join("\t")));
                }
                None => {
                    if let Some(last) = entries.last_mut() {
                        last.2.push('\n');
                        last.2.push_str(line);
                    }
                }
            }
        }
        entries
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// Debian's PostgreSQL server programs: `/usr/lib/postgresql/<newest>/bin` (not on PATH).
pub fn postgres_bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            e.path()
                .join("bin/postgres")
                .exists()
                .then(|| (version, e.path().join("bin")))
        })
        .max();
    newest.map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no /usr/lib/postgresql/<version>/bin/postgres: `apt-get install postgresql` \
             (Debian), or run the suite through `cargo xtask test`, which installs it"
        )
    })
}

/// A PostgreSQL cluster of its own, made by `initdb` as the `postgres` user in its temp dir
/// before capture, run by `setpriv` as that user (postgres refuses root): TCP on
/// 127.0.0.1 only, no Unix socket, trust authentication, `ssl` off (initdb's default: a
/// client's SSLRequest is answered `N`), every statement logged (`server.log`).
pub struct Postgres {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    setpriv: PathBuf,
}

impl Postgres {
    pub fn prepare() -> Self {
        let bin = postgres_bin_dir();
        let setpriv = require_program("setpriv", "util-linux");
        let dir = TempDir::new("postgres");
        let cluster = dir.path.join("pg");
        std::fs::create_dir_all(&cluster).unwrap();
        run_ok(
            Command::new("chown").arg("postgres:postgres").arg(&cluster),
            "chown the cluster's directory to postgres (the user Debian's postgresql makes)",
        );
        run_ok(
            Command::new(&setpriv)
                .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                .arg(bin.join("initdb"))
                .arg("-D")
                .arg(cluster.join("data"))
                .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
                .arg("--locale=C"),
            "initdb",
        );
        Self {
            dir,
            port: free_port(),
            bin,
            setpriv,
        }
    }

    fn data(&self) -> String {
        path_str(&self.dir.path.join("pg/data")).to_string()
    }

    pub fn start(&self) -> String {
        let d = path_str(&self.dir.path);
        let data = self.data();
        format!(
            "{setpriv} --reuid=postgres --regid=postgres --init-groups {bin}/postgres -D {data} \
             -c listen_addresses=127.0.0.1 -c port={p} -c unix_socket_directories= \
             -c log_statement=all -c fsync=off >{d}/server.log 2>&1 &
ks_postgres=$!; ks_pids=\"$ks_pids $ks_postgres\"
ks_wait_port {p} postgres {d}/server.log $ks_postgres
ks_i=0
until [ \"$(sed -n 8p {data}/postmaster.pid 2>/dev/null | tr -d ' ')\" = ready ]; do
    ks_i=$((ks_i + 1))
    if [ \"$ks_i\" -gt 300 ] || ! kill -0 $ks_postgres 2>/dev/null; then
        echo 'postgres did not get ready' >&2; cat {d}/server.log >&2; exit 1
    fi
    sleep 0.1
done",
            bin = self.bin.display(),
            setpriv = self.setpriv.display(),
            p = self.port
        )
    }

    /// `psql` over TCP as postgres, no psqlrc; `args` follow (e.g. `-c "…"`).
    pub fn psql(&self, args: &str) -> String {
        format!(
            "{}/psql -X -q -h 127.0.0.1 -p {} -U postgres -d postgres {args}",
            self.bin.display(),
            self.port
        )
    }

    /// Fast shutdown (INT): the server disconnects any client left and exits.
    pub fn stop(&self) -> String {
        "ks_stop $ks_postgres INT postgres".to_string()
    }

    /// The server's log (every statement under `log_statement=all`).
    pub fn log(&self) -> String {
        let path = self.dir.path.join("server.log");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}
