//! Requests of every protocol in one shape: HTTP/1, HTTP/2 and gRPC rows, and Redis, MySQL
//! and PostgreSQL commands. Shared by `stat`'s text and `top`'s Requests view, so both
//! name, order and label them alike.

use ksight_engine::Snapshot;
use ksight_engine::snapshot::{CommandRow, HttpRow, Latency};
use std::collections::BTreeMap;

/// One row of a snapshot's requests.
#[derive(Clone, Debug)]
pub struct Part<'a> {
    pub protocol: &'a str,
    pub role: &'a str,
    /// The HTTP method; empty for commands.
    pub method: &'a str,
    /// The HTTP route, or the command (statement verb).
    pub name: &'a str,
    /// HTTP: the status (`-` for none, a reset stream); gRPC: the `grpc-status`. Empty
    /// for commands, whose errors are by code in `error_codes`.
    pub status: String,
    pub count: u64,
    pub errors: u64,
    pub error_codes: Option<&'a BTreeMap<String, u64>>,
    pub latency: &'a Latency,
    pub buckets: &'a [u64],
    pub cgroup_id: u64,
}

/// Display order of protocols: HTTP (1 and 2), gRPC, Redis, MySQL, PostgreSQL, others.
pub fn protocol_rank(protocol: &str) -> u8 {
    match protocol {
        "http" | "http2" => 0,
        "grpc" => 1,
        "redis" => 2,
        "mysql" => 3,
        "postgres" => 4,
        _ => 5,
    }
}

fn http_status(r: &HttpRow) -> String {
    match (&r.grpc_status, r.status) {
        (Some(code), _) => code.clone(),
        (None, 0) => "-".into(),
        (None, status) => status.to_string(),
    }
}

fn http(r: &HttpRow) -> Part<'_> {
    Part {
        protocol: &r.protocol,
        role: &r.role,
        method: &r.method,
        name: &r.route,
        status: http_status(r),
        count: r.count,
        errors: r.errors,
        error_codes: None,
        latency: &r.latency_us,
        buckets: &r.latency_buckets,
        cgroup_id: r.cgroup_id,
    }
}

fn command<'a>(protocol: &'a str, r: &'a CommandRow) -> Part<'a> {
    Part {
        protocol,
        role: &r.role,
        method: "",
        name: &r.command,
        status: String::new(),
        count: r.count,
        errors: r.errors,
        error_codes: Some(&r.error_codes),
        latency: &r.latency_us,
        buckets: &r.latency_buckets,
        cgroup_id: r.cgroup_id,
    }
}

/// Every request row of `s`, HTTP first.
pub fn parts(s: &Snapshot) -> impl Iterator<Item = Part<'_>> {
    s.http
        .requests
        .iter()
        .map(http)
        .chain(s.redis.commands.iter().map(|r| command("redis", r)))
        .chain(s.mysql.queries.iter().map(|r| command("mysql", r)))
        .chain(s.postgres.queries.iter().map(|r| command("postgres", r)))
}

/// Counts by key, largest first (then by key), as `key×n` joined by spaces.
pub fn mix(counts: &BTreeMap<String, u64>) -> String {
    let mut by_count: Vec<(&String, &u64)> = counts.iter().filter(|(_, n)| **n > 0).collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    by_count
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_engine::snapshot::QuerySummary;

    #[test]
    fn every_protocol_in_one_shape() {
        let mut s = Snapshot::default();
        s.http.requests = vec![
            HttpRow {
                protocol: "http".into(),
                method: "GET".into(),
                route: "/a".into(),
                status: 200,
                ..Default::default()
            },
            HttpRow {
                protocol: "grpc".into(),
                status: 200,
                grpc_status: Some("14".into()),
                ..Default::default()
            },
            HttpRow {
                protocol: "http2".into(),
                ..Default::default()
            },
        ];
        s.postgres = QuerySummary {
            queries: vec![CommandRow {
                command: "SELECT".into(),
                ..Default::default()
            }],
        };
        let p: Vec<(&str, String, &str)> =
            parts(&s).map(|p| (p.protocol, p.status, p.name)).collect();
        assert_eq!(
            p,
            [
                ("http", "200".into(), "/a"),
                ("grpc", "14".into(), ""),
                ("http2", "-".into(), ""),
                ("postgres", "".into(), "SELECT"),
            ]
        );
        assert!(protocol_rank("http2") < protocol_rank("grpc"));
        assert!(protocol_rank("mysql") < protocol_rank("postgres"));
        let codes = [("1062".to_string(), 2), ("1213".into(), 5), ("x".into(), 0)].into();
        assert_eq!(mix(&codes), "1213×5 1062×2");
    }
}
