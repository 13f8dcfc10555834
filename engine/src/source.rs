//! The one interface every backend implements: batches of raw event-abi records plus
//! counters. The engine never learns which backend it reads.

use std::time::Duration;

/// Raw records, each kept whole with its own length so that a record whose header lies
/// about its size is detected instead of derailing the ones after it.
#[derive(Clone, Debug, Default)]
pub struct RawBatch {
    bytes: Vec<u8>,
    ends: Vec<u32>,
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
        Some(Self { bytes, ends })
    }

    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        (self.bytes, self.ends)
    }
}

/// Counters a source keeps about itself; all cumulative since the source started.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceCounters {
    /// Records the kernel side could not deliver (buffer full), per CPU.
    pub lost_per_cpu: Vec<u64>,
    /// Records the source itself found unreadable and skipped (e.g. a ring it had to
    /// resynchronise); records that reach the engine are validated there as well.
    pub malformed: u64,
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
}
