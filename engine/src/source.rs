//! The one interface every backend implements: batches of raw event-abi records plus
//! counters. The engine never learns which backend it reads.

use std::sync::Arc;
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
///
/// Serialized into capture files (bincode, which is not self-describing): `filtered` is
/// written only when it is not 0, and a counters frame that ends before it (every file
/// written before the field existed) reads as 0. So old files stay readable, and a new
/// file that filtered nothing has exactly the bytes an old reader expects. That relies on
/// the counters being the last thing in their frame (`capture::Frame::Counters`): keep
/// them last in any fixed-layout encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceCounters {
    /// Records the kernel side could not deliver (buffer full), per CPU.
    pub lost_per_cpu: Vec<u64>,
    /// Records the source itself found unreadable and skipped (e.g. a ring it had to
    /// resynchronise); records that reach the engine are validated there as well.
    pub malformed: u64,
    /// Records the kernel dropped on purpose because their cgroup is in the ignore set
    /// ([`CgroupFilter`]), summed over CPUs. Not a loss: nobody wanted them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub filtered: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<'de> serde::Deserialize<'de> for SourceCounters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        const FIELDS: &[&str] = &["lost_per_cpu", "malformed", "filtered"];
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SourceCounters;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("source counters")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SourceCounters, A::Error> {
                let lost_per_cpu = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let malformed = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                // A fixed-layout format (bincode) has no way to say "no more fields" but
                // the end of the input: a frame written before `filtered` existed, or with
                // nothing filtered, ends here. Anything else left over is still rejected
                // by the caller's trailing-bytes check.
                let filtered = seq.next_element().ok().flatten().unwrap_or(0);
                Ok(SourceCounters {
                    lost_per_cpu,
                    malformed,
                    filtered,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SourceCounters, A::Error> {
                let (mut lost_per_cpu, mut malformed, mut filtered) = (None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "lost_per_cpu" => lost_per_cpu = Some(map.next_value()?),
                        "malformed" => malformed = Some(map.next_value()?),
                        "filtered" => filtered = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(SourceCounters {
                    lost_per_cpu: lost_per_cpu
                        .ok_or_else(|| A::Error::missing_field("lost_per_cpu"))?,
                    malformed: malformed.ok_or_else(|| A::Error::missing_field("malformed"))?,
                    filtered: filtered.unwrap_or(0),
                })
            }
        }
        d.deserialize_struct("SourceCounters", FIELDS, V)
    }
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
    use bincode::Options as _;

    /// The capture files' encoding (capture.rs).
    fn wire() -> impl bincode::Options + Copy {
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_little_endian()
            .reject_trailing_bytes()
    }

    /// `SourceCounters` as it was before `filtered` existed.
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct OldCounters {
        lost_per_cpu: Vec<u64>,
        malformed: u64,
    }

    #[test]
    fn counters_written_before_filtered_existed_read_as_zero_filtered() {
        let old = wire()
            .serialize(&OldCounters {
                lost_per_cpu: vec![1, 2],
                malformed: 3,
            })
            .unwrap();
        let read: SourceCounters = wire().deserialize(&old).unwrap();
        assert_eq!(
            read,
            SourceCounters {
                lost_per_cpu: vec![1, 2],
                malformed: 3,
                filtered: 0
            }
        );
    }

    #[test]
    fn counters_with_nothing_filtered_have_the_old_bytes() {
        let new = SourceCounters {
            lost_per_cpu: vec![4],
            malformed: 5,
            filtered: 0,
        };
        let bytes = wire().serialize(&new).unwrap();
        let old: OldCounters = wire().deserialize(&bytes).unwrap();
        assert_eq!(
            old,
            OldCounters {
                lost_per_cpu: vec![4],
                malformed: 5
            }
        );
        assert_eq!(wire().deserialize::<SourceCounters>(&bytes).unwrap(), new);
    }

    #[test]
    fn filtered_round_trips_and_garbage_after_it_is_rejected() {
        let c = SourceCounters {
            lost_per_cpu: vec![0, 7],
            malformed: 1,
            filtered: 123_456,
        };
        let mut bytes = wire().serialize(&c).unwrap();
        assert_eq!(bytes.len(), 8 + 16 + 8 + 8);
        assert_eq!(wire().deserialize::<SourceCounters>(&bytes).unwrap(), c);
        // A partial `filtered` (3 bytes) is not silently read as 0.
        bytes.truncate(bytes.len() - 5);
        assert!(wire().deserialize::<SourceCounters>(&bytes).is_err());
        // Nor is a missing `malformed`.
        assert!(
            wire()
                .deserialize::<SourceCounters>(&bytes[..8 + 16])
                .is_err()
        );
    }

    #[test]
    fn self_describing_formats_default_filtered_too() {
        let c: SourceCounters =
            serde_json::from_str(r#"{"lost_per_cpu":[1],"malformed":2}"#).unwrap();
        assert_eq!(c.filtered, 0);
        let c: SourceCounters =
            serde_json::from_str(r#"{"lost_per_cpu":[],"malformed":0,"filtered":9}"#).unwrap();
        assert_eq!(c.filtered, 9);
        assert!(serde_json::from_str::<SourceCounters>(r#"{"malformed":0}"#).is_err());
    }

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
