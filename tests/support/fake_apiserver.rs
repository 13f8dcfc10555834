//! A fake Kubernetes API server on 127.0.0.1 for the watcher's tests: HTTP/1.1 with
//! keep-alive, std threads, no TLS. It speaks the part of the API a list+watch client
//! uses, shaped as the real one:
//! - `GET /api/v1/pods`, `/api/v1/namespaces`, `/api/v1/services`,
//!   `/apis/apps/v1/replicasets`, `/apis/batch/v1/jobs`,
//!   `/apis/discovery.k8s.io/v1/endpointslices`: a `<Kind>List` with
//!   `metadata.resourceVersion`, paged by `limit`/`continue`;
//!   `fieldSelector=spec.nodeName=<node>` filters pods.
//! - `?watch=true&resourceVersion=N`: a chunked stream of newline-delimited watch events
//!   (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` when `allowWatchBookmarks=true`,
//!   `ERROR`), ended after `timeoutSeconds`. A version older than the last compaction
//!   gets the real server's 410: an `ERROR` event with an `Expired` Status inside a 200
//!   stream, or (with [`FakeApiServer::set_gone_as_http`]) an HTTP 410 response.
//!   `sendInitialEvents=true` streams the objects, then the `k8s.io/initial-events-end`
//!   bookmark.
//! - `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` (list)
//!   or `as=PartialObjectMetadata` (watch): metadata-only objects.
//!
//! Tests script it: set and delete objects (with or without watch events), push
//! bookmarks, a 410 or a garbage line into open watches, make the next requests fail
//! (HTTP 500, a non-JSON body, a stalled response), and read back the requests received.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The resources served: (name in the path, API prefix, kind, apiVersion).
const RESOURCES: [(&str, &str, &str, &str); 6] = [
    ("pods", "/api/v1", "Pod", "v1"),
    ("namespaces", "/api/v1", "Namespace", "v1"),
    ("services", "/api/v1", "Service", "v1"),
    ("replicasets", "/apis/apps/v1", "ReplicaSet", "apps/v1"),
    ("jobs", "/apis/batch/v1", "Job", "batch/v1"),
    (
        "endpointslices",
        "/apis/discovery.k8s.io/v1",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
];

fn resource_info(resource: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    *RESOURCES
        .iter()
        .find(|r| r.0 == resource)
        .unwrap_or_else(|| panic!("fake API server serves no {resource:?}"))
}

/// A request as received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// Decoded query parameters.
    pub params: BTreeMap<String, String>,
    pub accept: String,
}

impl RecordedRequest {
    pub fn resource(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
    pub fn is_watch(&self) -> bool {
        self.params
            .get("watch")
            .is_some_and(|v| v == "true" || v == "1")
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    List,
    Watch,
    Any,
}

/// What a faulty response is.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An HTTP status with a Kubernetes Status body.
    Status(u16),
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// Headers never sent: the connection stays silent this long, then closes.
    Stall(Duration),
}

#[derive(Clone, Debug)]
enum Line {
    /// `{"type": .., "object": ..}`; object as stored (full).
    Event(&'static str, Value),
    Bookmark,
    Gone,
    Raw(String),
}

struct Entry {
    rv: u64,
    line: Line,
    /// Sent only to watches open when it was pushed (bookmarks, errors, garbage).
    live_only: bool,
}

#[derive(Default)]
struct Collection {
    /// By "namespace/name".
    objects: BTreeMap<String, Value>,
    log: Vec<Entry>,
    /// Watches and continue tokens from before this version get 410 Gone.
    compacted_rv: u64,
}

#[derive(Default)]
struct State {
    rv: u64,
    collections: HashMap<&'static str, Collection>,
    requests: Vec<RecordedRequest>,
    faults: Vec<(&'static str, On, Fault)>,
    gone_as_http: bool,
    /// Bumped to end every open watch.
    watch_epoch: u64,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakeApiServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept_thread: Option<JoinHandle<()>>,
}

/// A port with nothing listening on it (bound, then released): for "API server down".
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl FakeApiServer {
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Serves on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind fake API server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().unwrap();
        let mut state = State {
            rv: 100,
            ..State::default()
        };
        for (name, ..) in RESOURCES {
            state.collections.insert(name, Collection::default());
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_inner = inner.clone();
        let accept_thread = std::thread::spawn(move || {
            while !accept_inner.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let conn_inner = accept_inner.clone();
                        std::thread::spawn(move || serve_connection(stream, &conn_inner));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            inner,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn notify(&self) {
        self.inner.changed.notify_all();
    }

    /// Adds or replaces an object (keyed by namespace/name), as an ADDED or MODIFIED event.
    /// Its `metadata.resourceVersion` is set to a new version.
    pub fn apply(&self, resource: &str, object: Value) {
        self.put(resource, object, true);
    }

    /// Adds or replaces an object without any watch event, and compacts the history so
    /// that resuming a watch needs a relist (as when the watch gap outlived etcd's
    /// compaction window).
    pub fn apply_silently(&self, resource: &str, object: Value) {
        self.put(resource, object, false);
    }

    fn put(&self, resource: &str, mut object: Value, event: bool) {
        let (name, _, kind, api_version) = resource_info(resource);
        let mut s = self.inner.lock();
        s.rv += 1;
        let rv = s.rv;
        object["kind"] = json!(kind);
        object["apiVersion"] = json!(api_version);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&object);
        let c = s.collections.get_mut(name).unwrap();
        let existed = c.objects.insert(key, object.clone()).is_some();
        if event {
            let kind = if existed { "MODIFIED" } else { "ADDED" };
            c.log.push(Entry {
                rv,
                line: Line::Event(kind, object),
                live_only: false,
            });
        } else {
            c.compacted_rv = rv;
        }
        drop(s);
        self.notify();
    }

    /// Deletes an object with a DELETED event.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        self.remove(resource, namespace, name, true);
    }

    /// Deletes an object with no event, compacting the history (see
    /// [`Self::apply_silently`]): only a relist can tell.
    pub fn delete_silently(&self, resource: &str, namespace: &str, name: &str) {
        self.remove(resource, namespace, name, false);
    }

    fn remove(&self, resource: &str, namespace: &str, obj_name: &str, event: bool) {
        let (name, ..) = resource_info(resource);
        let mut s = self.inner.lock();
        s.rv += 1;
        let rv = s.rv;
        let c = s.collections.get_mut(name).unwrap();
        let Some(mut object) = c.objects.remove(&format!("{namespace}/{obj_name}")) else {
            panic!("fake API server has no {resource} {namespace}/{obj_name}");
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if event {
            c.log.push(Entry {
                rv,
                line: Line::Event("DELETED", object),
                live_only: false,
            });
        } else {
            c.compacted_rv = rv;
        }
        drop(s);
        self.notify();
    }

    /// A BOOKMARK (current resourceVersion) to the open watches that asked for bookmarks.
    pub fn bookmark(&self, resource: &str) {
        self.push_live(resource, Line::Bookmark);
    }

    /// A 410 Gone ERROR event into the open watches (which then end), the history
    /// compacted up to now: resuming from any earlier version is refused as well, while a
    /// new list's version (the current one) can be watched from, as on a real server.
    pub fn inject_gone(&self, resource: &str) {
        let (name, ..) = resource_info(resource);
        {
            let mut s = self.inner.lock();
            let rv = s.rv;
            // History up to now is compacted: open watches (started earlier) are told so,
            // and a list returns the current version, from which a watch may resume.
            s.collections.get_mut(name).unwrap().compacted_rv = rv;
        }
        self.push_live(resource, Line::Gone);
    }

    /// A raw line (e.g. not JSON) into the open watches.
    pub fn inject_line(&self, resource: &str, line: &str) {
        self.push_live(resource, Line::Raw(line.to_string()));
    }

    fn push_live(&self, resource: &str, line: Line) {
        let (name, ..) = resource_info(resource);
        let mut s = self.inner.lock();
        let rv = s.rv;
        s.collections.get_mut(name).unwrap().log.push(Entry {
            rv,
            line,
            live_only: true,
        });
        drop(s);
        self.notify();
    }

    /// Ends every open watch stream cleanly (as the server's timeout would).
    pub fn end_watches(&self) {
        self.inner.lock().watch_epoch += 1;
        self.notify();
    }

    /// Answer a too-old resourceVersion on a watch with an HTTP 410 instead of an ERROR
    /// event inside a 200 stream.
    pub fn set_gone_as_http(&self, yes: bool) {
        self.inner.lock().gone_as_http = yes;
    }

    /// The next request of this kind for `resource` gets `fault` (queued in order).
    pub fn fail_next(&self, resource: &str, on: On, fault: Fault) {
        let (name, ..) = resource_info(resource);
        self.inner.lock().faults.push((name, on, fault));
    }

    /// Faults queued and not yet served.
    pub fn pending_faults(&self) -> usize {
        self.inner.lock().faults.len()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    pub fn current_rv(&self) -> u64 {
        self.inner.lock().rv
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.notify();
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().expect("object without metadata.name")
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Reads one request head; None at EOF or on a broken connection.
fn read_request(
    reader: &mut BufReader<TcpStream>,
) -> Option<(String, String, HashMap<String, String>)> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if let Some(len) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        std::io::Read::read_exact(reader, &mut body).ok()?;
    }
    Some((method, target, headers))
}

fn respond(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        reason_phrase(code),
        body.len()
    )?;
    stream.flush()
}

fn serve_connection(stream: TcpStream, inner: &Inner) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    while !inner.stop.load(Ordering::SeqCst) {
        let Some((method, target, headers)) = read_request(&mut reader) else {
            return;
        };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let request = RecordedRequest {
            method,
            path: path.to_string(),
            query: query.to_string(),
            params,
            accept: headers.get("accept").cloned().unwrap_or_default(),
        };
        if handle(&mut stream, inner, request).is_err() {
            return;
        }
    }
}

/// Serves one request; Err closes the connection.
fn handle(stream: &mut TcpStream, inner: &Inner, req: RecordedRequest) -> std::io::Result<()> {
    let resource = RESOURCES
        .iter()
        .find(|(name, prefix, ..)| req.path == format!("{prefix}/{name}"))
        .map(|r| r.0);
    let fault = {
        let mut s = inner.lock();
        s.requests.push(req.clone());
        resource.and_then(|name| {
            let i = s.faults.iter().position(|(r, on, _)| {
                *r == name
                    && match on {
                        On::Any => true,
                        On::List => !req.is_watch(),
                        On::Watch => req.is_watch(),
                    }
            })?;
            Some(s.faults.remove(i).2)
        })
    };
    let Some(resource) = resource else {
        let body = status_body(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        return respond(stream, 404, &body.to_string());
    };
    if req.method != "GET" {
        let body = status_body(405, "MethodNotAllowed", "only GET is served");
        return respond(stream, 405, &body.to_string());
    }
    match fault {
        Some(Fault::Status(code)) => {
            let body = status_body(code, "InternalError", "injected failure");
            return respond(stream, code, &body.to_string());
        }
        Some(Fault::Garbage) => {
            return respond(stream, 200, "<html>this is not JSON</html>\n");
        }
        Some(Fault::Stall(d)) => {
            let until = Instant::now() + d;
            while Instant::now() < until && !inner.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(std::io::Error::other("stalled"));
        }
        None => {}
    }
    if req.is_watch() {
        watch(stream, inner, resource, &req)
    } else {
        list(stream, inner, resource, &req)
    }
}

/// Whether an object passes the request's field selector (only `spec.nodeName=` and
/// `metadata.name=` are understood; anything else is refused like the real server).
fn selector_matches(object: &Value, selector: Option<&str>) -> Result<bool, String> {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return Ok(true);
    };
    for term in selector.split(',') {
        let (field, want) = term
            .split_once('=')
            .ok_or_else(|| format!("unsupported field selector {term:?}"))?;
        let have = match field {
            "spec.nodeName" => object["spec"]["nodeName"].as_str(),
            "metadata.name" => object["metadata"]["name"].as_str(),
            _ => return Err(format!("field label not supported: {field}")),
        };
        if have.unwrap_or("") != want {
            return Ok(false);
        }
    }
    Ok(true)
}

fn metadata_only(accept: &str) -> bool {
    accept.contains("as=PartialObjectMetadata")
}

/// The object as sent: whole, or as a PartialObjectMetadata.
fn shape(object: &Value, meta_only: bool) -> Value {
    if meta_only {
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        })
    } else {
        object.clone()
    }
}

fn list(
    stream: &mut TcpStream,
    inner: &Inner,
    resource: &str,
    req: &RecordedRequest,
) -> std::io::Result<()> {
    let (_, _, kind, api_version) = resource_info(resource);
    let meta_only = metadata_only(&req.accept);
    let s = inner.lock();
    let c = &s.collections[resource];
    // continue token: "<list rv>/<offset>".
    let (list_rv, offset) = match req.param("continue").filter(|t| !t.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once('/')
                .and_then(|(rv, off)| Some((rv.parse::<u64>().ok()?, off.parse::<usize>().ok()?)));
            let Some((rv, off)) = parsed else {
                let body = status_body(400, "BadRequest", "invalid continue token");
                drop(s);
                return respond(stream, 400, &body.to_string());
            };
            if rv < c.compacted_rv {
                let body = status_body(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
                drop(s);
                return respond(stream, 410, &body.to_string());
            }
            (rv, off)
        }
        None => (s.rv, 0),
    };
    let mut items = Vec::new();
    for object in c.objects.values() {
        match selector_matches(object, req.param("fieldSelector")) {
            Ok(true) => items.push(shape(object, meta_only)),
            Ok(false) => {}
            Err(message) => {
                let body = status_body(400, "BadRequest", &message);
                drop(s);
                return respond(stream, 400, &body.to_string());
            }
        }
    }
    drop(s);
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items.get(offset.min(end)..end).unwrap_or(&[]).to_vec();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if end < items.len() {
        metadata["continue"] = json!(format!("{list_rv}/{end}"));
        metadata["remainingItemCount"] = json!(items.len() - end);
    }
    let body = if meta_only {
        json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": page,
        })
    } else {
        json!({
            "kind": format!("{kind}List"),
            "apiVersion": api_version,
            "metadata": metadata,
            "items": page,
        })
    };
    respond(stream, 200, &body.to_string())
}

fn write_chunk(stream: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(stream, "{:x}\r\n{data}\r\n", data.len())?;
    stream.flush()
}

fn watch(
    stream: &mut TcpStream,
    inner: &Inner,
    resource: &str,
    req: &RecordedRequest,
) -> std::io::Result<()> {
    let (_, _, kind, api_version) = resource_info(resource);
    let meta_only = metadata_only(&req.accept);
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let selector = req.param("fieldSelector").map(str::to_string);
    let initial_events = req.param("sendInitialEvents") == Some("true");
    let from_rv: u64 = req
        .param("resourceVersion")
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    let s = inner.lock();
    let epoch = s.watch_epoch;
    let gone_as_http = s.gone_as_http;
    let c = &s.collections[resource];
    let expired = !initial_events && from_rv != 0 && from_rv < c.compacted_rv;
    let gone_message = format!("too old resource version: {from_rv} ({})", c.compacted_rv);
    if expired && gone_as_http {
        drop(s);
        let body = status_body(410, "Expired", &gone_message);
        return respond(stream, 410, &body.to_string());
    }
    let mut cursor = c.log.len();
    let mut initial: Vec<String> = Vec::new();
    if initial_events {
        for object in c.objects.values() {
            if selector_matches(object, selector.as_deref()).unwrap_or(false) {
                initial
                    .push(json!({"type": "ADDED", "object": shape(object, meta_only)}).to_string());
            }
        }
        initial.push(
            json!({"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": s.rv.to_string(),
                             "annotations": {"k8s.io/initial-events-end": "true"}}
            }})
            .to_string(),
        );
    } else if !expired {
        // Replay what happened after from_rv (0: from now).
        if from_rv != 0 {
            cursor = c
                .log
                .iter()
                .position(|e| !e.live_only && e.rv > from_rv)
                .unwrap_or(c.log.len());
        }
    }
    let started_at = c.log.len();
    drop(s);

    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    stream.flush()?;
    if expired {
        let line = json!({"type": "ERROR", "object": status_body(410, "Expired", &gone_message)});
        write_chunk(stream, &format!("{line}\n"))?;
        return write_chunk(stream, "");
    }
    for line in initial {
        write_chunk(stream, &format!("{line}\n"))?;
    }
    loop {
        let mut out = Vec::new();
        let mut end = false;
        {
            let mut s = inner.lock();
            loop {
                let c = &s.collections[resource];
                if cursor < c.log.len()
                    || s.watch_epoch != epoch
                    || inner.stop.load(Ordering::SeqCst)
                    || Instant::now() >= deadline
                {
                    break;
                }
                s = inner
                    .changed
                    .wait_timeout(s, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if s.watch_epoch != epoch
                || inner.stop.load(Ordering::SeqCst)
                || Instant::now() >= deadline
            {
                end = true;
            }
            let current_rv = s.rv;
            let c = &s.collections[resource];
            while !end && cursor < c.log.len() {
                let e = &c.log[cursor];
                cursor += 1;
                if e.live_only && cursor - 1 < started_at {
                    continue;
                }
                match &e.line {
                    Line::Event(kind, object) => {
                        if selector_matches(object, selector.as_deref()).unwrap_or(false) {
                            out.push(
                                json!({"type": kind, "object": shape(object, meta_only)})
                                    .to_string(),
                            );
                        }
                    }
                    Line::Bookmark => {
                        if bookmarks {
                            out.push(
                                json!({"type": "BOOKMARK", "object": {
                                    "kind": kind, "apiVersion": api_version,
                                    "metadata": {"resourceVersion": current_rv.to_string()}
                                }})
                                .to_string(),
                            );
                        }
                    }
                    Line::Gone => {
                        let message =
                            format!("too old resource version: {from_rv} ({})", c.compacted_rv);
                        out.push(
                            json!({"type": "ERROR", "object": status_body(410, "Expired", &message)})
                                .to_string(),
                        );
                        end = true;
                    }
                    Line::Raw(raw) => out.push(raw.clone()),
                }
            }
        }
        for line in out {
            write_chunk(stream, &format!("{line}\n"))?;
        }
        if end {
            return write_chunk(stream, "");
        }
    }
}

/// A pod as the kubelet reports one that runs: owner, node, container statuses with
/// `containerd://<id>` ids.
pub struct PodBuilder {
    pod: Value,
}

impl PodBuilder {
    pub fn new(namespace: &str, name: &str, uid: &str, node: &str) -> Self {
        Self {
            pod: json!({
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid,
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                    "labels": {"app": name},
                    "annotations": {},
                },
                "spec": {
                    "nodeName": node,
                    "containers": [],
                    "restartPolicy": "Always",
                    "serviceAccountName": "default",
                },
                "status": {
                    "phase": "Running",
                    "hostIP": "10.0.0.1",
                    "podIP": "10.244.0.5",
                    "podIPs": [{"ip": "10.244.0.5"}],
                    "qosClass": "BestEffort",
                    "startTime": "2025-01-01T00:00:01Z",
                    "containerStatuses": [],
                },
            }),
        }
    }

    /// The controller ownerReference.
    pub fn owner(mut self, api_version: &str, kind: &str, name: &str) -> Self {
        self.pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "uid": format!("uid-{name}"),
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// `status.podIP` and `status.podIPs` (the default is 10.244.0.5).
    pub fn ip(mut self, ip: &str) -> Self {
        self.pod["status"]["podIP"] = json!(ip);
        self.pod["status"]["podIPs"] = json!([{"ip": ip}]);
        self
    }

    fn status(name: &str, id: Option<&str>, running: bool) -> Value {
        let mut s = json!({
            "name": name,
            "image": format!("registry.example/{name}:1"),
            "imageID": format!("registry.example/{name}@sha256:{}", "0".repeat(64)),
            "ready": running,
            "restartCount": 0,
            "started": running,
            "state": if running {
                json!({"running": {"startedAt": "2025-01-01T00:00:02Z"}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            },
        });
        if let Some(id) = id {
            s["containerID"] = json!(format!("containerd://{id}"));
        }
        s
    }

    /// A regular container; `id` None: not started yet.
    pub fn container(mut self, name: &str, id: Option<&str>) -> Self {
        self.pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "image": format!("registry.example/{name}:1")}));
        self.pod["status"]["containerStatuses"]
            .as_array_mut()
            .unwrap()
            .push(Self::status(name, id, id.is_some()));
        self
    }

    /// A completed init container.
    pub fn init_container(mut self, name: &str, id: &str) -> Self {
        let spec = &mut self.pod["spec"];
        if spec.get("initContainers").is_none() {
            spec["initContainers"] = json!([]);
        }
        spec["initContainers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "image": format!("registry.example/{name}:1")}));
        let status = &mut self.pod["status"];
        if status.get("initContainerStatuses").is_none() {
            status["initContainerStatuses"] = json!([]);
        }
        let mut s = Self::status(name, Some(id), false);
        s["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed",
            "containerID": format!("containerd://{id}")}});
        status["initContainerStatuses"]
            .as_array_mut()
            .unwrap()
            .push(s);
        self
    }

    /// An ephemeral (debug) container.
    pub fn ephemeral_container(mut self, name: &str, id: &str) -> Self {
        let spec = &mut self.pod["spec"];
        if spec.get("ephemeralContainers").is_none() {
            spec["ephemeralContainers"] = json!([]);
        }
        spec["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "image": "busybox", "targetContainerName": "app"}));
        let status = &mut self.pod["status"];
        if status.get("ephemeralContainerStatuses").is_none() {
            status["ephemeralContainerStatuses"] = json!([]);
        }
        status["ephemeralContainerStatuses"]
            .as_array_mut()
            .unwrap()
            .push(Self::status(name, Some(id), true));
        self
    }

    pub fn build(self) -> Value {
        self.pod
    }
}

/// A ReplicaSet (or Job) controlled by `owner_kind/owner_name`, or by nothing.
pub fn owned_object(namespace: &str, name: &str, owner: Option<(&str, &str, &str)>) -> Value {
    let mut o = json!({
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "labels": {"app": name}},
        "spec": {},
        "status": {},
    });
    if let Some((api_version, kind, owner_name)) = owner {
        o["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": owner_name,
            "uid": format!("uid-{owner_name}"), "controller": true, "blockOwnerDeletion": true,
        }]);
    }
    o
}

/// A ClusterIP Service (`cluster_ip` "None": headless) with (name, port, targetPort)
/// ports, selecting `app=<name>`.
pub fn service(
    namespace: &str,
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, u16, u16)],
    annotations: &[(&str, &str)],
) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port, target)| {
            json!({"name": port_name, "port": port, "targetPort": target, "protocol": "TCP"})
        })
        .collect();
    json!({
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-svc-{name}"),
                     "annotations": annotations},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "selector": {"app": name},
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "ports": ports,
        },
        "status": {"loadBalancer": {}},
    })
}

/// An IPv4 EndpointSlice of Service `service` with (name, port) ports and (address, pod,
/// node) endpoints, as the EndpointSlice controller writes one.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[(&str, &str, &str)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port)| json!({"name": port_name, "port": port, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, pod, node)| {
            json!({
                "addresses": [address],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node,
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod,
                              "uid": format!("uid-{pod}")},
            })
        })
        .collect();
    json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-eps-{name}"),
            "generateName": format!("{service}-"),
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                 "uid": format!("uid-svc-{service}"), "controller": true,
                                 "blockOwnerDeletion": true}],
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

pub fn namespace(name: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "metadata": {"name": name, "uid": format!("uid-ns-{name}"),
                     "labels": {"kubernetes.io/metadata.name": name},
                     "annotations": annotations},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// A 64-hex-digit container id derived from a seed.
pub fn container_id(seed: u32) -> String {
    format!("{seed:08x}").repeat(8)
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
