//! What travels on the TUI's one event channel, and what the main loop tells collection.

use crossterm::event::KeyEvent;
use ksight_attribution::CgroupLabels;
use ksight_engine::Snapshot;
use std::sync::Arc;
use std::time::Duration;

/// Everything the main loop reacts to arrives as one of these, on one channel.
#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    /// The terminal changed size; the next draw lays out for it.
    Resize,
    /// A finished interval from collection.
    Sample(Box<Sample>),
    /// Collection's source changed state (connected, lost, reconnecting, failed).
    Source(SourceStatus),
    /// Attached mode: how the agent captures (sent when it first answers or changes).
    AgentInfo {
        backend_reason: String,
        fidelity_notes: Vec<String>,
    },
}

/// One snapshot and the wall-clock facts needed to turn its counts into rates.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub snapshot: Snapshot,
    /// Wall time the snapshot's counters cover (since the previous interval reset).
    pub interval: Duration,
    /// When it was taken, on the TUI's clock (time since `ksight top` started).
    pub at: Duration,
    /// cgroup id → who owns it (the name is `CgroupLabels::display_name`), for ids seen
    /// for the first time or whose labels changed (a pod whose metadata arrived).
    pub cgroup_labels: Vec<(u64, Arc<CgroupLabels>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SourceStatus {
    /// Capturing (live) or receiving snapshots from the agent (attached).
    Connected,
    /// The agent cannot be reached; collection retries after `retry_in`.
    Reconnecting {
        error: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// Collection stopped for good (the event reader failed); the UI stays up to say so.
    Failed(String),
}

/// From the main loop to collection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    SetInterval(Duration),
    Stop,
}
