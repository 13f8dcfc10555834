//! The per-signal fidelity report: what this kernel lets the backend observe.
//!
//! The signals and their tracepoints come from `event_abi::kinds`; the verdicts are
//! `ksight_source::signals` values.

use ksight_source::signals::{Fidelity, Hooked, Signal, SignalStatus, combine};

use crate::resolve::{BtfOffsets, TCP_STATS_SLOTS, TpResolution, btf_field_name};

/// `outcomes`: every tracepoint's resolution and whether its program is attached (or, in
/// `detect`, would be).
pub(crate) fn compute(
    outcomes: &[(&TpResolution, Result<(), String>)],
    btf: &BtfOffsets,
) -> Vec<SignalStatus> {
    Signal::ALL
        .iter()
        .map(|&signal| {
            let close_stats = signal == Signal::TcpCloseStats;
            let hooks = signal.kinds().flat_map(|row| {
                outcomes
                    .iter()
                    .filter(move |(r, _)| r.def.kind() == row.kind)
            });
            let hooks = hooks.map(|(r, outcome)| {
                let hooked = match outcome {
                    // The close counters are their own signal: "tcp" is about the
                    // transitions themselves, and the counters' notes are the BTF's.
                    Ok(()) if close_stats => Hooked::Attached { notes: Vec::new() },
                    Ok(()) => Hooked::Attached {
                        notes: r.degraded.clone(),
                    },
                    Err(why) => Hooked::Missing(why.clone()),
                };
                (r.def.full_name(), hooked)
            });
            let mut status = combine(signal, hooks);
            if close_stats && status.status == Fidelity::Full {
                status.status = close_stats_status(btf);
            }
            status
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{MISSING, btf};
    use crate::resolve::TRACEPOINTS;
    use crate::tracefs::FormatError;

    fn resolution(i: usize, degraded: &[&str]) -> TpResolution {
        TpResolution {
            def: &TRACEPOINTS[i],
            format: Err(FormatError::Unreadable("test".into())),
            blocking: Vec::new(),
            degraded: degraded.iter().map(|s| s.to_string()).collect(),
            global: Vec::new(),
        }
    }

    #[test]
    fn every_signal_of_the_table_is_reported_with_its_tracepoints() {
        let rs: Vec<TpResolution> = (0..TRACEPOINTS.len())
            .map(|i| resolution(i, if i == 3 { &["x unavailable"] } else { &[] }))
            .collect();
        let mut outcomes: Vec<(&TpResolution, Result<(), String>)> =
            rs.iter().map(|r| (r, Ok(()))).collect();
        // tcp_receive_reset (kind 7) did not attach.
        outcomes[6].1 = Err("no such tracepoint".into());
        let btf = BtfOffsets {
            offsets: [MISSING; btf::LEN],
            errors: vec![Some("no BTF".into()); btf::LEN],
        };
        let got = compute(&outcomes, &btf);
        let names: Vec<&str> = got.iter().map(SignalStatus::name).collect();
        assert_eq!(
            names,
            [
                "process",
                "tcp",
                "tcp_close_stats",
                "tcp_retransmits",
                "tcp_resets",
                "block",
                "socket_io"
            ]
        );
        assert_eq!(got[0].status, Fidelity::Full);
        // Both of socket I/O's hooks: the exit that records and the entry that times.
        assert_eq!(
            got[6].tracepoints,
            ["raw_syscalls:sys_exit", "raw_syscalls:sys_enter"]
        );
        assert_eq!(got[6].status, Fidelity::Full);
        assert_eq!(
            got[0].tracepoints,
            [
                "sched:sched_process_exec",
                "sched:sched_process_fork",
                "sched:sched_process_exit"
            ]
        );
        assert_eq!(
            got[1].status,
            Fidelity::Degraded("sock:inet_sock_set_state: x unavailable".into())
        );
        assert!(
            matches!(&got[2].status, Fidelity::Unavailable(w) if w.contains("no tcp_sock counters"))
        );
        assert_eq!(
            got[4].status,
            Fidelity::Degraded("tcp:tcp_receive_reset: no such tracepoint".into())
        );
        assert_eq!(got[5].status, Fidelity::Full);
    }
}
