//! The per-signal fidelity report: what this kernel lets the backend observe.

use event_abi::kind;

use crate::resolve::{BtfOffsets, TCP_STATS_SLOTS, TpResolution, btf_field_name};

/// How completely a signal is observed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Fidelity {
    Full,
    /// Observed, but some record fields are missing (they read 0), or some of the
    /// signal's tracepoints are not attached.
    Degraded(String),
    /// Not observed at all.
    Unavailable(String),
}

/// One signal, the tracepoints it comes from, and how well it is observed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignalStatus {
    /// "process", "tcp", "tcp_close_stats", "tcp_retransmits", "tcp_resets", "block".
    pub signal: &'static str,
    /// `category:name` of each tracepoint.
    pub tracepoints: Vec<String>,
    pub status: Fidelity,
}

/// Signals and the record kinds (hence tracepoints) that make them.
const SIGNALS: [(&str, &[u16]); 6] = [
    ("process", &[kind::EXEC, kind::FORK, kind::EXIT]),
    ("tcp", &[kind::TCP_STATE]),
    ("tcp_close_stats", &[kind::TCP_STATE]),
    ("tcp_retransmits", &[kind::TCP_RETRANSMIT]),
    (
        "tcp_resets",
        &[kind::TCP_RESET_SENT, kind::TCP_RESET_RECEIVED],
    ),
    (
        "block",
        &[kind::BLOCK_QUEUE, kind::BLOCK_ISSUE, kind::BLOCK_COMPLETE],
    ),
];

/// `outcomes`: every tracepoint's resolution and whether its program is attached (or, in
/// `detect`, would be).
pub(crate) fn compute(
    outcomes: &[(&TpResolution, Result<(), String>)],
    btf: &BtfOffsets,
) -> Vec<SignalStatus> {
    SIGNALS
        .iter()
        .map(|&(signal, kinds)| {
            let tps: Vec<_> = outcomes
                .iter()
                .filter(|(r, _)| kinds.contains(&r.def.kind))
                .collect();
            let tracepoints = tps.iter().map(|(r, _)| r.def.full_name()).collect();
            let mut problems = Vec::new();
            let mut attached = 0;
            for (r, outcome) in &tps {
                match outcome {
                    Ok(()) => {
                        attached += 1;
                        // The close counters are their own signal; "tcp" is about the
                        // transitions themselves.
                        if signal != "tcp_close_stats" {
                            for note in &r.degraded {
                                problems.push(format!("{}: {note}", r.def.full_name()));
                            }
                        }
                    }
                    Err(why) => problems.push(format!("{}: {why}", r.def.full_name())),
                }
            }
            let status = if attached == 0 {
                Fidelity::Unavailable(problems.join("; "))
            } else if signal == "tcp_close_stats" {
                close_stats_status(btf)
            } else if problems.is_empty() {
                Fidelity::Full
            } else {
                Fidelity::Degraded(problems.join("; "))
            };
            SignalStatus {
                signal,
                tracepoints,
                status,
            }
        })
        .collect()
}

fn close_stats_status(btf: &BtfOffsets) -> Fidelity {
    let missing: Vec<String> = TCP_STATS_SLOTS
        .iter()
        .filter(|&&s| !btf.ok(s))
        .map(|&s| {
            let why = btf.errors[s].as_deref().unwrap_or("unresolved");
            format!("{} ({why})", btf_field_name(s))
        })
        .collect();
    if missing.is_empty() {
        Fidelity::Full
    } else if missing.len() == TCP_STATS_SLOTS.len() {
        Fidelity::Unavailable(format!("no tcp_sock counters: {}", missing.join("; ")))
    } else {
        Fidelity::Degraded(format!("counters missing: {}", missing.join("; ")))
    }
}
