//! The backend contract: the one interface every backend implements — batches of raw
//! event-abi records plus counters — and the typed fidelity each reports. A small crate
//! of its own, so a backend depends on it alone and never on the engine (nor on what the
//! engine pulls in: Kubernetes, TLS, an async runtime). The engine never learns which
//! backend it reads.

pub mod signals;

use std::sync::Arc;
use std::time::Duration;

/// Raw records, each kept whole with its own length so that a record whose header lies
/// about its size is detected instead of derailing the ones after it.
#[derive(Clone, Debug, Default)]
pub struct RawBatch {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    /// See [`RawBatch::mark_complete`].
    complete_before: Option<u64>,
}

impl RawBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.complete_before = None;
    }

    /// Says that every record stamped (CLOCK_MONOTONIC) before `ts_ns` is in this batch
    /// or an earlier one. A live source sets it when a drain that started at `ts_ns`
    /// found every buffer empty: it is what lets the engine release events while some
    /// CPUs are idle (the engine's per-CPU merge). Records still being written at that instant
    /// are the one exception; they arrive later and are counted as late.
    pub fn mark_complete(&mut self, ts_ns: u64) {
        self.complete_before = Some(self.complete_before.map_or(ts_ns, |t| t.max(ts_ns)));
    }

    /// The mark set by [`Self::mark_complete`], if any.
    pub fn complete_before(&self) -> Option<u64> {
        self.complete_before
    }

    /// Whether the batch carries nothing: no records and no mark.
    pub fn is_void(&self) -> bool {
        self.ends.is_empty() && self.complete_before.is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let record = &self.bytes[start..end as usize];
            start = end as usize;
            record
        })
    }

    /// Rebuilds a batch from its parts (capture files); `ends` must be non-decreasing and
    /// within `bytes`.
    pub fn from_parts(bytes: Vec<u8>, ends: Vec<u32>) -> Option<Self> {
        let mut prev = 0u32;
        for &end in &ends {
            if end < prev || end as usize > bytes.len() {
                return None;
            }
            prev = end;
        }
        Some(Self {
            bytes,
            ends,
            complete_before: None,
        })
    }

    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        (self.bytes, self.ends)
    }
}

/// Counters a source keeps about itself; all cumulative since the source started.
///
/// Capture files and the agent's socket protocol carry them in their current shape;
/// their version numbers say which shape a reader gets (see `capture::FORMAT_VERSION`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceCounters {
    /// Records the kernel side could not deliver (buffer full), per CPU.
    pub lost_per_cpu: Vec<u64>,
    /// Records the source itself found unreadable and skipped (e.g. a ring it had to
    /// resynchronise); records that reach the engine are validated there as well.
    pub malformed: u64,
    /// Records the kernel dropped on purpose because their cgroup is in the ignore set
    /// ([`CgroupFilter`]), summed over CPUs. Not a loss: nobody wanted them.
    pub filtered: u64,
}

impl SourceCounters {
    pub fn lost_total(&self) -> u64 {
        self.lost_per_cpu
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
    }
}

/// What polling a source produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Zero or more records were appended; call again.
    Ready,
    /// The source has no more records and never will (end of a replay file).
    Finished,
}

#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceError {
    pub source_name: String,
    pub message: String,
    #[source]
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// A producer of event-abi records: a kernel backend or a replay of a capture file.
pub trait EventSource: Send {
    /// Short name reported in outputs: "ebpf", "kmod", "replay".
    fn name(&self) -> &str;

    /// Waits at most `timeout` for records and appends what is ready to `out`.
    fn poll(&mut self, out: &mut RawBatch, timeout: Duration) -> Result<Poll, SourceError>;

    /// Cumulative counters, including lost events.
    fn counters(&self) -> SourceCounters;

    /// A handle to push an ignore set into the kernel, when the backend can. Default: None.
    ///
    /// The handle stays valid while the source is open and may be used from any thread
    /// while another one polls; once the source is dropped, `set_ignored` fails.
    fn cgroup_filter(&mut self) -> Option<Arc<dyn CgroupFilter>> {
        None
    }
}

/// Most cgroup ids an ignore set may hold (both backends).
pub const MAX_IGNORED_CGROUPS: usize = event_abi::filter::MAX_IGNORED_CGROUPS;

/// CLOCK_MONOTONIC now, in the clock event timestamps use (`bpf_ktime_get_ns()`,
/// `ktime_get_ns()`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Updates the set of cgroup ids whose events the kernel drops; usable from any thread.
///
/// What a kernel backend drops (the same in every backend, so that they stay comparable
/// record for record): exec, fork, exit and block-queue records whose header `cgroup_id`
/// is in the set; TCP state, retransmit and reset records whose `sock_cgroup_id` is in the
/// set; never block issue or complete records. Dropped records are counted in
/// [`SourceCounters::filtered`]. The set replaces the previous one (an empty set turns
/// filtering off) — at once in the module; id by id in eBPF, removals first, so while an
/// update runs an id leaving the set may pass early and one joining it late: the engine
/// drops those with the same set. Ids are cgroup v2 ids (the inode number of the cgroup's
/// directory): a container and its sub-cgroups are one id each, all to be listed.
pub trait CgroupFilter: Send + Sync {
    /// Replaces the ignore set. Duplicates are allowed; more than
    /// [`MAX_IGNORED_CGROUPS`] distinct ids is an error that leaves the set unchanged.
    fn set_ignored(&self, ids: &[u64]) -> Result<(), SourceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_have_no_filter_unless_they_say_so() {
        struct Nothing;
        impl EventSource for Nothing {
            fn name(&self) -> &str {
                "nothing"
            }
            fn poll(&mut self, _: &mut RawBatch, _: Duration) -> Result<Poll, SourceError> {
                Ok(Poll::Finished)
            }
            fn counters(&self) -> SourceCounters {
                SourceCounters::default()
            }
        }
        assert!(Nothing.cgroup_filter().is_none());
        assert_eq!(MAX_IGNORED_CGROUPS, 16384);
    }
}
