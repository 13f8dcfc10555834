//! Decode → reorder → aggregate, fed by batches from any number of sources.

use crate::aggregate::{Aggregator, Scope};
use crate::decode::{decode, record_kind};
use crate::names::Names;
use crate::reorder::Reorder;
use crate::snapshot::Snapshot;
use crate::source::{RawBatch, SourceCounters};

pub struct Engine {
    backend: String,
    reorder: Reorder,
    aggregator: Aggregator,
    /// See [`Engine::keep_kinds`].
    wanted: Option<Box<dyn Fn(u16) -> bool + Send>>,
    counters: SourceCounters,
    /// Lost events per CPU already reported at the last interval reset.
    lost_at_reset: Vec<u64>,
    pub malformed: u64,
    malformed_at_reset: u64,
    pub records: u64,
    records_at_reset: u64,
    late_at_reset: u64,
}

impl Engine {
    pub fn new(backend: &str, scope: Option<Scope>) -> Self {
        Self {
            backend: backend.to_string(),
            reorder: Reorder::new(),
            aggregator: scope.map_or_else(Aggregator::new, Aggregator::scoped),
            wanted: None,
            counters: SourceCounters::default(),
            lost_at_reset: Vec::new(),
            malformed: 0,
            malformed_at_reset: 0,
            records: 0,
            records_at_reset: 0,
            late_at_reset: 0,
        }
    }

    /// Decodes a batch (malformed records are counted and skipped) and takes its
    /// completeness mark.
    pub fn ingest(&mut self, batch: &RawBatch) {
        for bytes in batch.iter() {
            if let Some(wanted) = &self.wanted
                && let Some(kind) = record_kind(bytes)
                && !wanted(kind)
            {
                continue;
            }
            match decode(bytes) {
                Ok(event) => {
                    self.records += 1;
                    self.reorder.push(event);
                }
                Err(_) => self.malformed += 1,
            }
        }
        if let Some(ts) = batch.complete_before() {
            self.reorder.mark_complete(ts);
        }
    }

    /// Drops, before decoding, the records whose kind `wanted` refuses (signals the user
    /// turned off); `None` keeps every kind. Records too short to name a kind are kept,
    /// so they are counted as malformed.
    pub fn keep_kinds(&mut self, wanted: Option<Box<dyn Fn(u16) -> bool + Send>>) {
        self.wanted = wanted;
    }

    /// Aggregates every event that no missing one can precede: the exact per-CPU merge
    /// of [`crate::reorder`], which needs neither a window nor the wall clock.
    pub fn advance(&mut self) {
        let agg = &mut self.aggregator;
        self.reorder.release(|e| agg.apply(&e));
    }

    /// Aggregates everything still waiting (end of capture).
    pub fn flush(&mut self) {
        let agg = &mut self.aggregator;
        self.reorder.flush(|e| agg.apply(&e));
    }

    pub fn set_counters(&mut self, counters: SourceCounters) {
        // The source's per-CPU counters say how many CPU streams to wait for.
        self.reorder.set_cpus(counters.lost_per_cpu.len());
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

    /// Events that arrived after newer ones had been aggregated (see [`crate::reorder`]).
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
        snapshot.late_events = self.reorder.late - self.late_at_reset;
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
        self.late_at_reset = self.reorder.late;
    }
}

pub use ksight_source::monotonic_ns;
