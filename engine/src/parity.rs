//! Comparing two captures of the same events: the proof that both backends produce the
//! same records and therefore the same metrics (`ksight verify`, the VM parity tests).
//!
//! Two levels: records (byte-identical but for the timestamp — and for socket I/O, the
//! call's duration, a difference of two timestamps — paired by content, payload
//! included), and
//! aggregates (every exact value equal; values derived from timestamps within the
//! measured skew between the two backends' probes plus histogram bucket precision).

use crate::decode::{decode, record_kind};
use crate::source::RawBatch;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Records of one source, keyed by their bytes with the timestamp zeroed.
#[derive(Default)]
pub struct RecordLog {
    by_key: HashMap<Vec<u8>, Vec<u64>>,
}

impl RecordLog {
    pub fn add(&mut self, batch: &RawBatch, from_ns: u64) {
        for r in batch.iter() {
            if decode(r).is_err() {
                continue;
            }
            let ts = u64::from_ne_bytes(r[..8].try_into().unwrap());
            if ts < from_ns {
                continue;
            }
            let mut key = r.to_vec();
            key[..8].fill(0);
            if record_kind(r) == Some(event_abi::kind::SOCK_IO) {
                // Timing, like the timestamp: the call's duration, and whether each
                // backend's table of entry times still held the call's entry.
                use event_abi::SockIoEvent;
                const AT: usize = core::mem::offset_of!(SockIoEvent, duration_ns);
                key[AT..AT + 8].fill(0);
                const FLAGS: usize = core::mem::offset_of!(SockIoEvent, flags);
                let flags = u16::from_ne_bytes([key[FLAGS], key[FLAGS + 1]])
                    & !event_abi::sock_flags::NO_ENTRY;
                key[FLAGS..FLAGS + 2].copy_from_slice(&flags.to_ne_bytes());
            }
            self.by_key.entry(key).or_default().push(ts);
        }
    }

    /// Each key's timestamps, sorted.
    fn sorted(&self) -> HashMap<&Vec<u8>, Vec<u64>> {
        self.by_key
            .iter()
            .map(|(k, v)| {
                let mut ts = v.clone();
                ts.sort_unstable();
                (k, ts)
            })
            .collect()
    }
}

/// Two stamps of the same content this close are one event seen by both backends: their
/// probes run one after the other in the same tracepoint call.
pub const PAIR_NS: u64 = 10_000_000;

/// How two record logs compare within a time window.
#[derive(Debug, Default)]
pub struct RecordComparison {
    /// Records present in both, byte-identical but for the timestamp.
    pub matched: u64,
    pub only_a: u64,
    pub only_b: u64,
    /// Largest timestamp difference between paired records, ns.
    pub skew_ns: u64,
    /// One line per kind of unmatched record.
    pub unmatched: Vec<String>,
}

/// Pairs the records of both logs by content, and within one content by time (stamps
/// at most [`PAIR_NS`] apart). A pair counts when either of its stamps lies in
/// `from..=to` — the two backends stamp an event microseconds apart, so an event at the
/// window's edge may have one stamp on each side — and a record without a partner
/// counts when its own stamp does.
pub fn compare_logs(
    a: &RecordLog,
    b: &RecordLog,
    names: (&str, &str),
    from: u64,
    to: u64,
) -> RecordComparison {
    let (sa, sb) = (a.sorted(), b.sorted());
    let inside = |t: u64| (from..=to).contains(&t);
    let (mut matched, mut only_a, mut only_b, mut skew) = (0u64, 0u64, 0u64, 0u64);
    let mut unmatched = Vec::new();
    let mut keys: Vec<&Vec<u8>> = sa.keys().chain(sb.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        let ta = sa.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let tb = sb.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let (mut i, mut j) = (0, 0);
        let (mut extra_a, mut extra_b) = (0u64, 0u64);
        while i < ta.len() || j < tb.len() {
            match (ta.get(i), tb.get(j)) {
                (Some(&x), Some(&y)) if x.abs_diff(y) <= PAIR_NS => {
                    if inside(x) || inside(y) {
                        matched += 1;
                        skew = skew.max(x.abs_diff(y));
                    }
                    (i, j) = (i + 1, j + 1);
                }
                (Some(&x), y) if y.is_none_or(|&y| x < y) => {
                    extra_a += u64::from(inside(x));
                    i += 1;
                }
                (_, Some(&y)) => {
                    extra_b += u64::from(inside(y));
                    j += 1;
                }
                _ => unreachable!("one side has a stamp left"),
            }
        }
        for (extra, only, name) in [
            (extra_a, &mut only_a, names.0),
            (extra_b, &mut only_b, names.1),
        ] {
            if extra > 0 {
                *only += extra;
                unmatched.push(format!(
                    "{name}-only kind {} x{extra}",
                    record_kind(k).unwrap_or(0)
                ));
            }
        }
    }
    RecordComparison {
        matched,
        only_a,
        only_b,
        skew_ns: skew,
        unmatched,
    }
}

/// How two snapshots compare, value by value.
pub struct Parity {
    /// A table of the summary values (and every value that is not exactly equal).
    pub table: String,
    pub compared: u64,
    pub exact: u64,
    pub tolerated: u64,
    pub different: Vec<String>,
}

/// Values derived from timestamps: each backend stamps an event at its own probe, so they
/// may differ by the skew between the two probes of one tracepoint (measured on the
/// records themselves). `count` is the number of latencies summed in the current object.
fn tolerance(path: &str, a: f64, b: f64, skew_ns: u64, count: u64) -> Option<f64> {
    let skew_us = skew_ns as f64 / 1000.0;
    // hdrhistogram with 3 significant figures: a bucket is 1/1000 of the value; the rows
    // of exchanges (DNS, requests, edges: `latency::LatencyStats`) keep 2 to stay small.
    let two_digits = [
        ".dns.",
        ".http.",
        ".redis.",
        ".mysql.",
        ".postgres.",
        ".edges[",
    ];
    let digits = if two_digits.iter().any(|p| path.starts_with(p)) {
        100.0
    } else {
        1000.0
    };
    let bucket = a.abs().max(b.abs()) / digits;
    let key = path.rsplit('.').next().unwrap_or(path);
    if path.contains(".latency_buckets[") {
        // A latency near a bucket bound may land on either side of it: per-bucket counts
        // may move, their total (the histogram's count) is compared exactly.
        Some(count as f64)
    } else if path.contains(".latency_us.") && key != "count" {
        // A queue->complete latency: each end may be off by the skew.
        Some(2.0 * skew_us + bucket + 1.0)
    } else if key == "duration_us" {
        Some(2.0 * skew_us + 1.0)
    } else if time_derived(key) {
        // A sum of `count` latencies in ns.
        Some(count.max(1) as f64 * (2.0 * skew_ns as f64 + 1.0))
    } else {
        None
    }
}

/// Keys whose values come from event timestamps rather than from event contents.
fn time_derived(key: &str) -> bool {
    matches!(
        key,
        "duration_us" | "latency_us" | "duration_s" | "latency_buckets"
    ) || (key.ends_with("_ns") && (key.contains("latency") || key.contains("duration")))
}

/// Arrays of objects are compared as sets keyed by their exact fields, so that rows in a
/// different order (events on different CPUs stamped microseconds apart) still pair up.
fn identity(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let exact: BTreeMap<&String, &Value> =
                m.iter().filter(|(k, _)| !time_derived(k)).collect();
            serde_json::to_string(&exact).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// Compares two snapshots (as JSON) of the same events from two sources named `names`.
pub fn compare_snapshots(a: &Value, b: &Value, names: (&str, &str), skew_ns: u64) -> Parity {
    let mut p = Parity {
        table: String::new(),
        compared: 0,
        exact: 0,
        tolerated: 0,
        different: Vec::new(),
    };
    p.table.push_str(&format!(
        "{:<44} {:>14} {:>14}  {}\n",
        "metric", names.0, names.1, ""
    ));
    walk("", a, b, names, skew_ns, 0, &mut p);
    p
}

fn walk(
    path: &str,
    a: &Value,
    b: &Value,
    names: (&str, &str),
    skew_ns: u64,
    count: u64,
    p: &mut Parity,
) {
    // Not aggregates of the compared events: which backend, how long its capture ran,
    // and how many records it delivered in all — each backend's capture begins and ends
    // at its own moment (attach, last drain), so these count different periods. The
    // records themselves are compared over the common window by `compare_logs`. Late
    // events say when each backend delivered, not what happened.
    if matches!(
        path,
        ".backend" | ".duration_s" | ".events" | ".late_events"
    ) {
        return;
    }
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            // Latencies summed in this object: its histogram's count.
            let count = ma
                .get("latency_us")
                .and_then(|l| l.get("count"))
                .and_then(Value::as_u64)
                .unwrap_or(count);
            let mut keys: Vec<&String> = ma.keys().chain(mb.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = format!("{path}.{k}");
                match (ma.get(k), mb.get(k)) {
                    (Some(x), Some(y)) => walk(&sub, x, y, names, skew_ns, count, p),
                    (x, y) => {
                        p.compared += 1;
                        p.different
                            .push(format!("{sub}: {} {x:?}, {} {y:?}", names.0, names.1));
                    }
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) => {
            if xa.len() != xb.len() {
                p.compared += 1;
                p.different.push(format!(
                    "{path}: {} has {} rows, {} {}",
                    names.0,
                    xa.len(),
                    names.1,
                    xb.len()
                ));
            }
            let mut sa: Vec<&Value> = xa.iter().collect();
            let mut sb: Vec<&Value> = xb.iter().collect();
            sa.sort_by_key(|v| identity(v));
            sb.sort_by_key(|v| identity(v));
            for (i, (x, y)) in sa.iter().zip(sb.iter()).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, names, skew_ns, count, p);
            }
        }
        _ => {
            p.compared += 1;
            let status = if a == b {
                p.exact += 1;
                "="
            } else if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64())
                && let Some(tol) = tolerance(path, x, y, skew_ns, count)
                && (x - y).abs() <= tol
            {
                p.tolerated += 1;
                "~"
            } else {
                p.different
                    .push(format!("{path}: {} {a}, {} {b}", names.0, names.1));
                "DIFFERENT"
            };
            // The table shows the summary rows; details are compared all the same.
            let summary = !path.contains("processes") && !path.contains("cgroups");
            if summary || status != "=" {
                p.table.push_str(&format!(
                    "{:<44} {:>14} {:>14}  {status}\n",
                    path.trim_start_matches('.'),
                    short(a),
                    short(b)
                ));
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.len() > 14 {
        format!("{}…", &s[..13])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;
    use crate::names::NoNames;
    use crate::synthetic::Synth;

    fn snapshot(latency_ns: u64, extra_exec: bool) -> Value {
        let mut s = Synth::new();
        s.exec(10, 1, 7, "/bin/true");
        if extra_exec {
            s.exec(11, 1, 7, "/bin/true");
        }
        s.block_io(
            10,
            7,
            7 << 20,
            0,
            4096,
            event_abi::block_op::WRITE,
            latency_ns,
        );
        let mut e = Engine::new("x", None);
        e.ingest(&s.batch);
        e.flush();
        serde_json::to_value(e.snapshot(&NoNames)).unwrap()
    }

    #[test]
    fn equal_counts_agree_and_timestamps_get_the_measured_skew() {
        let p = compare_snapshots(
            &snapshot(100_000, false),
            &snapshot(100_000, false),
            ("a", "b"),
            0,
        );
        assert!(
            p.different.is_empty() && p.tolerated == 0,
            "{:?}",
            p.different
        );
        // 30 µs apart with 20 µs of measured skew: within 2 × skew.
        let p = compare_snapshots(
            &snapshot(100_000, false),
            &snapshot(130_000, false),
            ("a", "b"),
            20_000,
        );
        assert!(p.different.is_empty(), "{:?}", p.different);
        assert!(p.tolerated > 0);
        // The same difference without skew is a difference.
        let p = compare_snapshots(
            &snapshot(100_000, false),
            &snapshot(130_000, false),
            ("a", "b"),
            0,
        );
        assert!(!p.different.is_empty());
    }

    #[test]
    fn records_pair_by_content_and_the_rest_is_named() {
        let (mut a, mut b) = (Synth::new(), Synth::new());
        a.exec(10, 1, 7, "/bin/true");
        b.ts += 300; // the other backend stamps the same event 300 ns later
        b.exec(10, 1, 7, "/bin/true");
        a.fork(10, 11, 7, false);
        b.exit(10, 7, "true", 0);
        let (mut la, mut lb) = (RecordLog::default(), RecordLog::default());
        la.add(&a.batch, 0);
        lb.add(&b.batch, 0);
        let c = compare_logs(&la, &lb, ("kmod", "ebpf"), 0, u64::MAX);
        assert_eq!((c.matched, c.only_a, c.only_b, c.skew_ns), (1, 1, 1, 300));
        let mut lines = c.unmatched.clone();
        lines.sort();
        assert_eq!(lines, ["ebpf-only kind 3 x1", "kmod-only kind 2 x1"]);
    }

    #[test]
    fn an_event_stamped_on_both_sides_of_the_window_edge_is_one_pair() {
        let (mut a, mut b) = (Synth::new(), Synth::new());
        a.exec(10, 1, 7, "/bin/true");
        b.ts += 300;
        b.exec(10, 1, 7, "/bin/true");
        let edge = a.ts + 100; // a's stamp before the window, b's inside
        a.ts += 50_000_000;
        b.ts += 50_000_000;
        a.exec(10, 1, 7, "/bin/true"); // the same content again, much later: a second pair
        b.exec(10, 1, 7, "/bin/true");
        a.exec(12, 1, 7, "/bin/sh"); // only in a, inside
        let (mut la, mut lb) = (RecordLog::default(), RecordLog::default());
        la.add(&a.batch, 0);
        lb.add(&b.batch, 0);
        let c = compare_logs(&la, &lb, ("kmod", "ebpf"), edge, u64::MAX);
        assert_eq!((c.matched, c.only_a, c.only_b), (2, 1, 0));
        // Before the window's start and unpaired: not counted.
        let c = compare_logs(&la, &RecordLog::default(), ("kmod", "ebpf"), edge, u64::MAX);
        assert_eq!((c.matched, c.only_a), (0, 2));
    }

    #[test]
    fn socket_records_pair_despite_their_durations_but_not_their_payloads() {
        use event_abi::{SockIoEvent, sock_dir};
        let t = Synth::tuple(40000, 8080);
        let call = |s: &mut Synth, duration_ns: u64, payload: &[u8]| {
            let ev = SockIoEvent {
                sock_id: 1,
                bytes: 4,
                duration_ns,
                tuple: t,
                direction: sock_dir::SEND,
                protocol: 6,
                ..Default::default()
            };
            s.sock_io(10, 7, ev, payload);
        };
        let (mut a, mut b) = (Synth::new(), Synth::new());
        b.ts += 400;
        call(&mut a, 2000, b"ping");
        call(&mut b, 2350, b"ping");
        call(&mut a, 2000, b"ping");
        call(&mut b, 2000, b"pong");
        let (mut la, mut lb) = (RecordLog::default(), RecordLog::default());
        la.add(&a.batch, 0);
        lb.add(&b.batch, 0);
        let c = compare_logs(&la, &lb, ("kmod", "ebpf"), 0, u64::MAX);
        assert_eq!((c.matched, c.only_a, c.only_b), (1, 1, 1));
    }

    #[test]
    fn a_different_count_is_never_tolerated() {
        let p = compare_snapshots(
            &snapshot(100_000, false),
            &snapshot(100_000, true),
            ("a", "b"),
            1_000_000,
        );
        assert!(
            p.different.iter().any(|d| d.starts_with(".process.execs")),
            "{:?}",
            p.different
        );
    }
}
