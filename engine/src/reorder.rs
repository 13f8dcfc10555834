//! Per-CPU streams interleave out of timestamp order. Stateful matching (exec before exit,
//! queue before complete, connect before close) needs them in order, so events wait here
//! and leave in an exact merge of the per-CPU streams.
//!
//! Each CPU's stream arrives in order (a probe runs to completion on its CPU before the
//! next one starts there), so once every CPU has been heard from up to time T, nothing
//! older than T can still arrive. Two things tell how far a CPU has been heard from:
//! - its own newest event (a busy CPU);
//! - a *completeness mark* from the source: "every record stamped before T has been
//!   delivered" — a source sets one when a drain that started at T emptied every buffer
//!   (an idle CPU says nothing, so without the mark it would hold the others back).
//!
//! No wall clock and no window: on any interleaving of per-CPU streams that are each in
//! order, the output is the same. The one thing a mark cannot cover is a record that was
//! stamped before T but was still being written when its buffer was found empty; it
//! arrives after its time was released and is counted in [`Reorder::late`], never
//! dropped. Memory is bounded by [`MAX_PENDING`]: past it the oldest events leave before
//! their time (a CPU that stopped being heard from) and anything older arriving after
//! them is counted as late.

use crate::decode::Event;

/// Events held at most; beyond it the oldest are released early.
pub const MAX_PENDING: usize = 1 << 18;
/// CPU numbers at or above this count as the last one, so a corrupt CPU field cannot
/// allocate without bound. Linux's NR_CPUS is at most 8192.
const MAX_CPUS: usize = 8192;

#[derive(Default)]
pub struct Reorder {
    /// Held events in arrival order until a release sorts them.
    pending: Vec<Event>,
    /// Whether `pending` is known to be in release order (timestamp, then CPU).
    sorted: bool,
    /// The release-order key of the last event in `pending`.
    last_key: (u64, u32),
    /// Per CPU: the timestamp of the newest event it delivered.
    newest: Vec<u64>,
    /// CPUs the source says exist (its per-CPU counters); CPUs seen in events add to it.
    known_cpus: usize,
    /// Every record stamped before this has been delivered (the source's latest mark).
    complete_before: u64,
    /// Events released out of order: they arrived after newer events had been released.
    pub late: u64,
    released_up_to: u64,
}

/// Release order: by timestamp, equal timestamps by CPU; within one CPU, arrival order
/// (the sort is stable).
#[inline]
fn key(e: &Event) -> (u64, u32) {
    (e.ts_ns(), e.header().cpu)
}

impl Reorder {
    pub fn new() -> Self {
        Self {
            sorted: true,
            ..Self::default()
        }
    }

    /// The number of CPUs the source has (possible CPUs); until every one of them is
    /// heard from or a completeness mark arrives, nothing is released early.
    pub fn set_cpus(&mut self, cpus: usize) {
        self.known_cpus = self.known_cpus.max(cpus.min(MAX_CPUS));
    }

    #[inline]
    pub fn push(&mut self, event: Event) {
        let key = key(&event);
        let cpu = (key.1 as usize).min(MAX_CPUS - 1);
        if cpu >= self.newest.len() {
            self.newest.resize(cpu + 1, 0);
        }
        self.newest[cpu] = self.newest[cpu].max(key.0);
        self.sorted &= self.pending.is_empty() || self.last_key <= key;
        self.last_key = key;
        self.pending.push(event);
    }

    /// The source's completeness mark: every record stamped before `ts` has been pushed.
    pub fn mark_complete(&mut self, ts: u64) {
        self.complete_before = self.complete_before.max(ts);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Up to where every CPU has been heard from.
    fn watermark(&self) -> u64 {
        let cpus = self.known_cpus.max(self.newest.len());
        let slowest = (0..cpus)
            .map(|c| self.newest.get(c).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        // Everything stamped before the mark is here: events at the mark may still come.
        slowest.max(self.complete_before.saturating_sub(1))
    }

    /// Hands every event that can no longer be preceded by a missing one to `sink`,
    /// oldest first (ties: by CPU, then arrival). Then, if more than [`MAX_PENDING`] are
    /// still held, the oldest of them too, until a quarter of the bound is free.
    pub fn release(&mut self, sink: impl FnMut(Event)) {
        self.sort();
        let watermark = self.watermark();
        let mut cut = self.pending.partition_point(|e| e.ts_ns() <= watermark);
        let keep = MAX_PENDING * 3 / 4;
        if self.pending.len() - cut > MAX_PENDING {
            cut = self.pending.len() - keep;
        }
        self.release_first(cut, sink);
    }

    /// Releases everything (end of capture).
    pub fn flush(&mut self, sink: impl FnMut(Event)) {
        self.sort();
        self.release_first(self.pending.len(), sink);
    }

    /// The held events in release order: an exact merge of the per-CPU streams, each of
    /// which arrived in order (a disordered one is sorted too). Nearly sorted input, the
    /// common case, costs a linear pass.
    fn sort(&mut self) {
        if !self.sorted {
            self.pending.sort_by_key(key);
            self.sorted = true;
            self.last_key = self.pending.last().map_or((0, 0), key);
        }
    }

    fn release_first(&mut self, n: usize, mut sink: impl FnMut(Event)) {
        for event in self.pending.drain(..n) {
            let ts = event.ts_ns();
            if ts < self.released_up_to {
                self.late += 1;
            } else {
                self.released_up_to = ts;
            }
            sink(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_abi::{EventHeader, ForkEvent, kind};

    fn ev(cpu: u32, ts: u64) -> Event {
        Event::Fork(ForkEvent {
            header: EventHeader {
                ts_ns: ts,
                cpu,
                kind: kind::FORK,
                size: 48,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn released(r: &mut Reorder) -> Vec<u64> {
        let mut out = vec![];
        r.release(|e| out.push(e.ts_ns()));
        out
    }

    #[test]
    fn a_cpu_not_heard_from_holds_the_others_back() {
        let mut r = Reorder::new();
        r.set_cpus(2);
        for ts in [1, 3, 5, 7] {
            r.push(ev(0, ts));
        }
        // CPU 1 has said nothing: CPU 0's events could still be preceded by its.
        assert!(released(&mut r).is_empty());
        r.push(ev(1, 4));
        assert_eq!(released(&mut r), [1, 3, 4]);
        r.push(ev(1, 6));
        assert_eq!(released(&mut r), [5, 6]);
        r.flush(|_| {});
        assert_eq!(r.late, 0);
    }

    #[test]
    fn a_completeness_mark_speaks_for_idle_cpus() {
        let mut r = Reorder::new();
        r.set_cpus(4);
        r.push(ev(2, 10));
        r.push(ev(2, 20));
        r.mark_complete(15);
        assert_eq!(released(&mut r), [10]);
        r.mark_complete(21);
        assert_eq!(released(&mut r), [20]);
        assert!(r.is_empty());
    }

    #[test]
    fn out_of_order_within_a_cpu_is_sorted_and_late_arrivals_are_counted() {
        let mut r = Reorder::new();
        r.set_cpus(2);
        for ts in [5, 1, 9, 3, 7] {
            r.push(ev(0, ts));
        }
        r.mark_complete(7);
        assert_eq!(released(&mut r), [1, 3, 5]);
        r.push(ev(0, 2)); // older than what was released: still delivered, counted as late
        let mut out = vec![];
        r.flush(|e| out.push(e.ts_ns()));
        assert_eq!(out, [2, 7, 9]);
        assert_eq!(r.late, 1);
    }

    #[test]
    fn equal_timestamps_leave_in_cpu_order_whatever_the_arrival() {
        let order = |first: u32| {
            let mut r = Reorder::new();
            r.push(ev(first, 5));
            r.push(ev(1 - first, 5));
            let mut out = vec![];
            r.flush(|e| out.push(e.header().cpu));
            out
        };
        assert_eq!(order(0), [0, 1]);
        assert_eq!(order(1), [0, 1]);
    }

    #[test]
    fn memory_is_bounded_when_a_cpu_goes_silent() {
        let mut r = Reorder::new();
        r.set_cpus(2);
        for ts in 0..(MAX_PENDING as u64 + 10) {
            r.push(ev(0, ts));
        }
        let out = released(&mut r);
        assert_eq!(out.len(), MAX_PENDING + 10 - MAX_PENDING * 3 / 4);
        assert!(out.windows(2).all(|w| w[0] < w[1]) && out[0] == 0);
        assert_eq!(r.len(), MAX_PENDING * 3 / 4);
        // CPU 1 finally speaks with something older than what left: late, not lost.
        r.push(ev(1, 1));
        let mut n = 0;
        r.flush(|_| n += 1);
        assert_eq!((n, r.late), (MAX_PENDING * 3 / 4 + 1, 1));
    }

    #[test]
    fn corrupt_cpu_numbers_share_one_queue() {
        let mut r = Reorder::new();
        r.push(ev(u32::MAX, 2));
        r.push(ev(9000, 1));
        assert_eq!(r.newest.len(), MAX_CPUS);
        let mut out = vec![];
        r.flush(|e| out.push(e.ts_ns()));
        assert_eq!(out, [1, 2]);
    }
}
