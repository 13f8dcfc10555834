//! Per-CPU streams interleave out of timestamp order. Stateful matching (exec before exit,
//! queue before complete, connect before close) needs them in order, so events wait here
//! until the watermark says nothing older can still arrive.

use crate::decode::Event;

#[derive(Default)]
pub struct Reorder {
    pending: Vec<Event>,
    /// Whether `pending` is known to be sorted.
    sorted: bool,
    /// Events released out of order: they arrived after newer events had been released.
    pub late: u64,
    released_up_to: u64,
}

impl Reorder {
    pub fn new() -> Self {
        Self {
            sorted: true,
            ..Self::default()
        }
    }

    pub fn push(&mut self, event: Event) {
        if let Some(last) = self.pending.last() {
            self.sorted &= last.ts_ns() <= event.ts_ns();
        }
        self.pending.push(event);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Hands every event with a timestamp at or below `watermark` to `sink`, oldest first.
    pub fn release(&mut self, watermark: u64, mut sink: impl FnMut(Event)) {
        if self.pending.is_empty() {
            return;
        }
        if !self.sorted {
            // Stable: equal timestamps keep their arrival order. Nearly sorted input (the
            // common case) costs a linear pass.
            self.pending.sort_by_key(Event::ts_ns);
            self.sorted = true;
        }
        let cut = self.pending.partition_point(|e| e.ts_ns() <= watermark);
        for event in self.pending.drain(..cut) {
            let ts = event.ts_ns();
            if ts < self.released_up_to {
                self.late += 1;
            } else {
                self.released_up_to = ts;
            }
            sink(event);
        }
    }

    /// Releases everything (end of capture).
    pub fn flush(&mut self, sink: impl FnMut(Event)) {
        self.release(u64::MAX, sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_abi::{EventHeader, ForkEvent, kind};

    fn ev(ts: u64) -> Event {
        Event::Fork(ForkEvent {
            header: EventHeader {
                ts_ns: ts,
                kind: kind::FORK,
                size: 48,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn releases_in_order_up_to_watermark() {
        let mut r = Reorder::new();
        for ts in [5, 1, 9, 3, 7] {
            r.push(ev(ts));
        }
        let mut out = vec![];
        r.release(6, |e| out.push(e.ts_ns()));
        assert_eq!(out, [1, 3, 5]);
        r.push(ev(2)); // older than what was released: still delivered, counted as late
        r.flush(|e| out.push(e.ts_ns()));
        assert_eq!(out, [1, 3, 5, 2, 7, 9]);
        assert_eq!(r.late, 1);
    }
}
