//! The Prometheus endpoint: `GET /metrics` on its own thread. A scrape only reads the view
//! the main loop last published, so scrapes are answered during reloads too.

use super::Shared;
use super::log::{debug, warning};
use anyhow::{Result, anyhow};
use ksight_export::prometheus;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct HttpServer {
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` now, so a port in use is an error at start, not a silent thread death.
    pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> Result<Self> {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            anyhow!(
                "cannot listen on {addr} for Prometheus scrapes: {e}; is another ksight agent or exporter \
                 running there? Change [prometheus] listen in the configuration"
            )
        })?;
        let server = Arc::new(server);
        let thread = {
            let server = server.clone();
            std::thread::Builder::new()
                .name("ksight-http".into())
                .spawn(move || serve(&server, &shared))?
        };
        Ok(Self {
            addr,
            server,
            thread: Some(thread),
        })
    }
}

fn serve(server: &tiny_http::Server, shared: &Shared) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("").to_string();
        let get = matches!(
            request.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let view = shared.published().view;
        // Before the backend is attached there is nothing true to say.
        let starting = view.meta.backend.is_empty();
        let response = if get && path == "/metrics" && starting {
            tiny_http::Response::from_string("ksight agent: starting (attaching the backend)\n")
                .with_status_code(503)
        } else if get && path == "/metrics" {
            let body = prometheus::encode(view, super::host::own_usage());
            let accept = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Accept"))
                .map(|h| h.value.as_str().to_string())
                .unwrap_or_default();
            let (body, content_type) = if prometheus::wants_openmetrics(&accept) {
                (body, prometheus::CONTENT_TYPE)
            } else {
                (
                    prometheus::to_text_format(&body),
                    prometheus::TEXT_CONTENT_TYPE,
                )
            };
            let content_type =
                tiny_http::Header::from_bytes("Content-Type", content_type).expect("valid header");
            tiny_http::Response::from_string(body).with_header(content_type)
        } else if get && path == "/" {
            tiny_http::Response::from_string("ksight agent: metrics are at /metrics\n")
        } else {
            tiny_http::Response::from_string("not found: metrics are at /metrics\n")
                .with_status_code(404)
        };
        if let Err(e) = request.respond(response) {
            debug!("answering a scrape: {e}");
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warning!("the HTTP thread panicked");
        }
    }
}
