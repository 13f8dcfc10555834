//! Decode → reorder → aggregate, fed by batches from any number of sources.

use crate::aggregate::{Aggregator, Scope};
use crate::decode::decode;
use crate::names::Names;
use crate::reorder::Reorder;
use crate::snapshot::Snapshot;
use crate::source::{RawBatch, SourceCounters};

/// How long an event waits for older events from other CPUs before it is aggregated.
pub const DEFAULT_REORDER_WINDOW_NS: u64 = 20_000_000;
/// How long a live capture waits, with no newer event arriving, before it aggregates
/// what it holds anyway.
pub const IDLE_FLUSH_NS: u64 = 250_000_000;

pub struct Engine {
    backend: String,
    reorder: Reorder,
    aggregator: Aggregator,
    window_ns: u64,
    newest_ts: u64,
    counters: SourceCounters,
    /// Lost events per CPU already reported at the last interval reset.
    lost_at_reset: Vec<u64>,
    pub malformed: u64,
    malformed_at_reset: u64,
    pub records: u64,
    records_at_reset: u64,
}

impl Engine {
    pub fn new(backend: &str, scope: Option<Scope>) -> Self {
        Self {
            backend: backend.to_string(),
            reorder: Reorder::new(),
            aggregator: scope.map_or_else(Aggregator::new, Aggregator::scoped),
            window_ns: DEFAULT_REORDER_WINDOW_NS,
            newest_ts: 0,
            counters: SourceCounters::default(),
            lost_at_reset: Vec::new(),
            malformed: 0,
            malformed_at_reset: 0,
            records: 0,
            records_at_reset: 0,
        }
    }

    pub fn with_window(mut self, window_ns: u64) -> Self {
        self.window_ns = window_ns;
        self
    }

    /// Decodes a batch; malformed records are counted and skipped.
    pub fn ingest(&mut self, batch: &RawBatch) {
        for bytes in batch.iter() {
            match decode(bytes) {
                Ok(event) => {
                    self.records += 1;
                    self.newest_ts = self.newest_ts.max(event.ts_ns());
                    self.reorder.push(event);
                }
                Err(_) => self.malformed += 1,
            }
        }
    }

    /// Aggregates events older than the reorder window, measured from the newest event
    /// seen. Per-CPU buffers are drained together, so what was stamped before the newest
    /// record read was already buffered when it was read; the wall clock (`now_ns`, live
    /// captures) only moves the watermark once the stream has been quiet for
    /// [`IDLE_FLUSH_NS`]. Measuring from the wall clock alone let a slow drain (a loaded
    /// or emulated machine) release a close before the open that preceded it.
    pub fn advance(&mut self, now_ns: Option<u64>) {
        let mut watermark = self.newest_ts.saturating_sub(self.window_ns);
        if let Some(now) = now_ns {
            watermark = watermark.max(now.saturating_sub(IDLE_FLUSH_NS));
        }
        let agg = &mut self.aggregator;
        self.reorder.release(watermark, |e| agg.apply(&e));
    }

    /// Aggregates everything still waiting (end of capture).
    pub fn flush(&mut self) {
        let agg = &mut self.aggregator;
        self.reorder.flush(|e| agg.apply(&e));
    }

    pub fn set_counters(&mut self, counters: SourceCounters) {
        self.counters = counters;
    }

    pub fn counters(&self) -> &SourceCounters {
        &self.counters
    }

    /// Drops, from now on, the events of these cgroups (see [`crate::decode::Event::owner_cgroup`]).
    pub fn set_ignored_cgroups(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.aggregator.set_ignored(ids);
    }

    /// Events dropped by [`Self::set_ignored_cgroups`] since start.
    pub fn ignored_events(&self) -> u64 {
        self.aggregator.ignored_events
    }

    pub fn late_events(&self) -> u64 {
        self.reorder.late
    }

    pub fn snapshot(&self, names: &dyn Names) -> Snapshot {
        let lost: Vec<u64> = self
            .counters
            .lost_per_cpu
            .iter()
            .enumerate()
            .map(|(cpu, n)| n.saturating_sub(self.lost_at_reset.get(cpu).copied().unwrap_or(0)))
            .collect();
        let mut snapshot = self.aggregator.snapshot(
            &self.backend,
            lost.iter().sum(),
            (self.malformed + self.counters.malformed).saturating_sub(self.malformed_at_reset),
            names,
        );
        snapshot.lost_events_per_cpu = lost;
        snapshot.events = self.records - self.records_at_reset;
        snapshot
    }

    /// See [`Aggregator::forget_finished`]: bounded memory for a consumer that never resets.
    pub fn forget_finished(&mut self) {
        self.aggregator.forget_finished();
    }

    /// See [`Aggregator::forget_cgroups`].
    pub fn forget_cgroups(&mut self, ids: &[u64]) {
        self.aggregator.forget_cgroups(ids);
    }

    /// Starts a new interval (top): counters restart, live state stays.
    pub fn reset_interval(&mut self) {
        self.aggregator.reset_interval();
        self.lost_at_reset = self.counters.lost_per_cpu.clone();
        self.malformed_at_reset = self.malformed + self.counters.malformed;
        self.records_at_reset = self.records;
    }
}

/// CLOCK_MONOTONIC now, in the clock event timestamps use.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
