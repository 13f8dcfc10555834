//! Typed fidelity: how completely a backend observes each signal, as data.
//!
//! Both backends report one [`SignalStatus`] per signal of `event_abi::kinds::SIGNALS`
//! (eBPF from what resolved and attached, the module from the probes it registered);
//! `detect`, the agent's `ksight_signal_status`, `top`'s Health view and the notes printed
//! under a snapshot all read these values. Rendering them is the last step, never parsed
//! back.

pub use event_abi::kinds::{Family, Signal};

/// How completely a signal is observed. (Serialized as before: `"Full"`,
/// `{"Degraded": "why"}`, `{"Unavailable": "why"}`.)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Fidelity {
    Full,
    /// Observed, but some record fields are missing (they read 0), or some of the
    /// signal's tracepoints are not attached.
    Degraded(String),
    /// Not observed at all.
    Unavailable(String),
}

impl Fidelity {
    /// The mode alone, without the reason.
    pub fn mode(&self) -> Mode {
        match self {
            Fidelity::Full => Mode::Full,
            Fidelity::Degraded(_) => Mode::Degraded,
            Fidelity::Unavailable(_) => Mode::Unavailable,
        }
    }

    /// Why it is not full, if it is not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Fidelity::Full => None,
            Fidelity::Degraded(why) | Fidelity::Unavailable(why) => Some(why),
        }
    }
}

/// A signal's mode as exported (`ksight_signal_status{mode=...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Full,
    Degraded,
    Unavailable,
    /// Turned off by the configuration.
    Disabled,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Full,
        Mode::Degraded,
        Mode::Unavailable,
        Mode::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Degraded => "degraded",
            Mode::Unavailable => "unavailable",
            Mode::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

fn signal_name<S: serde::Serializer>(signal: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(signal.name())
}

/// One signal, the tracepoints it comes from, and how well it is observed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignalStatus {
    /// Serialized as its name ("process", "tcp", "tcp_close_stats", ...).
    #[serde(serialize_with = "signal_name")]
    pub signal: Signal,
    /// `category:name` of each tracepoint.
    pub tracepoints: Vec<String>,
    pub status: Fidelity,
}

impl SignalStatus {
    /// The signal's name as reports spell it.
    pub fn name(&self) -> &'static str {
        self.signal.name()
    }

    /// One line for people: `tcp_close_stats  degraded: why`.
    pub fn line(&self) -> String {
        match &self.status {
            Fidelity::Full => format!("{:<16} full", self.signal),
            Fidelity::Degraded(why) => format!("{:<16} degraded: {why}", self.signal),
            Fidelity::Unavailable(why) => format!("{:<16} unavailable: {why}", self.signal),
        }
    }
}

/// What became of one tracepoint of a signal in a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hooked {
    /// Attached; the notes say which record fields read 0 on this kernel.
    Attached { notes: Vec<String> },
    /// Not attached, and why.
    Missing(String),
}

/// A signal's status from what became of each of its tracepoints (in the order of
/// `signal.kinds()`): unavailable when none is attached, degraded when one is missing or
/// has notes, full otherwise. Each problem is prefixed with its tracepoint.
pub fn combine(
    signal: Signal,
    tracepoints: impl IntoIterator<Item = (String, Hooked)>,
) -> SignalStatus {
    let mut names = Vec::new();
    let mut problems = Vec::new();
    let mut attached = 0;
    for (tp, hooked) in tracepoints {
        match hooked {
            Hooked::Attached { notes } => {
                attached += 1;
                problems.extend(notes.into_iter().map(|n| format!("{tp}: {n}")));
            }
            Hooked::Missing(why) => problems.push(format!("{tp}: {why}")),
        }
        names.push(tp);
    }
    let status = if attached == 0 {
        Fidelity::Unavailable(problems.join("; "))
    } else if problems.is_empty() {
        Fidelity::Full
    } else {
        Fidelity::Degraded(problems.join("; "))
    };
    SignalStatus {
        signal,
        tracepoints: names,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_reports_missing_and_degraded_tracepoints() {
        let full = combine(
            Signal::Process,
            [("sched:a".to_string(), Hooked::Attached { notes: vec![] })],
        );
        assert_eq!(full.status, Fidelity::Full);
        let partial = combine(
            Signal::TcpResets,
            [
                ("tcp:x".to_string(), Hooked::Attached { notes: vec![] }),
                ("tcp:y".to_string(), Hooked::Missing("not found".into())),
            ],
        );
        assert_eq!(
            partial.status,
            Fidelity::Degraded("tcp:y: not found".into())
        );
        assert_eq!(partial.tracepoints, ["tcp:x", "tcp:y"]);
        let none = combine(
            Signal::Block,
            [("block:z".to_string(), Hooked::Missing("gone".into()))],
        );
        assert_eq!(none.status, Fidelity::Unavailable("block:z: gone".into()));
        assert_eq!(none.line(), "block            unavailable: block:z: gone");
    }

    #[test]
    fn json_keeps_its_shape() {
        let s = SignalStatus {
            signal: Signal::TcpCloseStats,
            tracepoints: vec!["sock:inet_sock_set_state".into()],
            status: Fidelity::Degraded("no BTF".into()),
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"signal":"tcp_close_stats","tracepoints":["sock:inet_sock_set_state"],"status":{"Degraded":"no BTF"}}"#
        );
    }
}
