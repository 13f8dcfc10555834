//! The one capture loop: sources → reader threads → engines (decode → per-CPU merge →
//! aggregate), optionally recorded to a capture file, with one rule for draining on stop.
//! `stat`, `record`, `replay`, `top`, the agent, `verify` and the VM guest tool all
//! drive their captures through it; they differ only in what they do between pumps.

use std::fs::File;
use std::io::BufWriter;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::capture::{CaptureError, CaptureWriter};
use crate::engine::{Engine, monotonic_ns};
use crate::pipeline::{Message, Readers};
use crate::source::{EventSource, RawBatch, SourceError};

/// How long a stop waits for every source to be drained up to the stop (a completeness
/// mark at or past it) before it takes what has arrived. A live source marks every poll
/// (at most 50 ms apart); the bound only matters for a source that cannot keep up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Record(#[from] CaptureError),
    #[error("the event reader threads stopped")]
    ReadersGone,
    #[error("waiting for the command: {0}")]
    Wait(#[source] std::io::Error),
}

/// What [`Capture::pump`] ended on.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// The deadline passed.
    Deadline,
    /// The stop flag is set (a signal, or the caller).
    Stopped,
    /// Every source has finished (the end of a replay).
    Finished,
}

/// Sees every batch (source index, records) before its engine does.
pub type Tap = Box<dyn FnMut(usize, &RawBatch) + Send>;

/// What [`Capture::finish`] hands back.
pub struct Finished {
    pub engines: Vec<Engine>,
    /// The sources, still open (dropping them detaches the probes).
    pub sources: Vec<Box<dyn EventSource>>,
    /// The moment the stop began (CLOCK_MONOTONIC ns): every record stamped before it
    /// was aggregated, unless `drained` is false.
    pub stopped_at_ns: u64,
    /// Whether every source confirmed, within [`DRAIN_TIMEOUT`], that it had delivered
    /// everything stamped before the stop.
    pub drained: bool,
}

/// A running capture: one engine per source.
pub struct Capture {
    readers: Option<Readers>,
    engines: Vec<Engine>,
    recorder: Option<CaptureWriter<BufWriter<File>>>,
    tap: Option<Tap>,
    /// Per source: the newest completeness mark, and whether it finished.
    marks: Vec<u64>,
    finished: Vec<bool>,
    stop: Arc<AtomicBool>,
}

impl Capture {
    /// Starts one reader thread per source; source `i` feeds `engines[i]`.
    pub fn start(sources: Vec<Box<dyn EventSource>>, engines: Vec<Engine>) -> Self {
        assert_eq!(sources.len(), engines.len(), "one engine per source");
        let n = sources.len();
        Self {
            readers: Some(Readers::spawn(sources)),
            engines,
            recorder: None,
            tap: None,
            marks: vec![0; n],
            finished: vec![false; n],
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// One source, one engine.
    pub fn single(source: Box<dyn EventSource>, engine: Engine) -> Self {
        Self::start(vec![source], vec![engine])
    }

    /// Writes everything the (single) source delivers to a capture file as well.
    pub fn recording(mut self, writer: CaptureWriter<BufWriter<File>>) -> Self {
        self.recorder = Some(writer);
        self
    }

    /// Shows every batch to `tap` as well (e.g. to compare records across backends).
    pub fn tapped(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Makes SIGINT and SIGTERM set the stop flag instead of killing the process.
    pub fn stop_on_signals(self) -> std::io::Result<Self> {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, self.stop.clone())?;
        }
        Ok(self)
    }

    /// The flag that ends [`Self::pump`] with [`Pumped::Stopped`].
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn engine(&self) -> &Engine {
        &self.engines[0]
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engines[0]
    }

    /// Feeds the engines until `until`, the stop flag, or the end of every source, and
    /// aggregates what can be.
    pub fn pump(&mut self, until: Instant) -> Result<Pumped, DriverError> {
        loop {
            if self.stopped() {
                return Ok(Pumped::Stopped);
            }
            if self.finished.iter().all(|&f| f) {
                return Ok(Pumped::Finished);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Pumped::Deadline);
            }
            let rx = self.readers.as_ref().expect("running").receiver().clone();
            match rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(message) => {
                    self.handle(message)?;
                    // Take whatever else is queued before aggregating.
                    while let Ok(message) = rx.try_recv() {
                        self.handle(message)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(DriverError::ReadersGone),
            }
            for engine in &mut self.engines {
                engine.advance();
            }
        }
    }

    /// Feeds the engines while `child` runs; its exit status once it has exited (the
    /// stop flag ends the wait early with `None`).
    pub fn pump_while_running(
        &mut self,
        child: &mut std::process::Child,
    ) -> Result<Option<std::process::ExitStatus>, DriverError> {
        loop {
            let pumped = self.pump(Instant::now() + Duration::from_millis(20))?;
            if let Some(status) = child.try_wait().map_err(DriverError::Wait)? {
                return Ok(Some(status));
            }
            if pumped == Pumped::Stopped {
                return Ok(None);
            }
        }
    }

    fn handle(&mut self, message: Message) -> Result<(), DriverError> {
        match message {
            Message::Batch { source, batch } => {
                if let Some(w) = &mut self.recorder {
                    w.write_batch(&batch)?;
                }
                if let Some(tap) = &mut self.tap {
                    tap(source, &batch);
                }
                if let Some(ts) = batch.complete_before() {
                    self.marks[source] = self.marks[source].max(ts);
                }
                self.engines[source].ingest(&batch);
            }
            Message::Counters { source, counters } => {
                if let Some(w) = &mut self.recorder {
                    w.write_counters(&counters)?;
                }
                self.engines[source].set_counters(counters);
            }
            Message::Finished { source } => self.finished[source] = true,
            Message::Failed { error, .. } => return Err(error.into()),
        }
        Ok(())
    }

    /// The drain rule, the same for every command: everything stamped before this call
    /// is aggregated. Waits (at most [`DRAIN_TIMEOUT`]) until every live source has
    /// drained its buffers past this moment, stops the readers (each polls once more),
    /// aggregates every event still held, and closes the capture file.
    pub fn finish(mut self) -> Result<Finished, DriverError> {
        let stop_at = monotonic_ns();
        let give_up = Instant::now() + DRAIN_TIMEOUT;
        let mut failure = None;
        while Instant::now() < give_up
            && (0..self.marks.len()).any(|i| !self.finished[i] && self.marks[i] < stop_at)
        {
            let rx = self.readers.as_ref().expect("running").receiver().clone();
            match rx.recv_timeout(Duration::from_millis(10)) {
                Ok(message) => {
                    if let Err(e) = self.handle(message) {
                        failure = Some(e);
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let readers = self.readers.take().expect("running");
        let sources = readers.stop(|message| {
            if let Err(e) = self.handle(message) {
                failure.get_or_insert(e);
            }
        });
        if let Some(w) = self.recorder.take() {
            w.finish()?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for engine in &mut self.engines {
            engine.flush();
        }
        let drained = (0..self.marks.len()).all(|i| self.finished[i] || self.marks[i] >= stop_at);
        Ok(Finished {
            engines: std::mem::take(&mut self.engines),
            sources,
            stopped_at_ns: stop_at,
            drained,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Dropped without `finish` (an error on the way): stop the reader threads.
        if let Some(readers) = self.readers.take() {
            readers.stop(|_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Poll, SourceCounters};
    use crate::synthetic;

    /// A source that delivers its records in one batch, then marks itself complete
    /// up to "now" on every poll, like a live backend that has gone idle.
    struct Live {
        records: Vec<Vec<u8>>,
        polls: u64,
    }

    impl EventSource for Live {
        fn name(&self) -> &str {
            "live"
        }
        fn poll(&mut self, out: &mut RawBatch, timeout: Duration) -> Result<Poll, SourceError> {
            let started = monotonic_ns();
            self.polls += 1;
            for r in self.records.drain(..) {
                out.push(&r);
            }
            out.mark_complete(started);
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
            Ok(Poll::Ready)
        }
        fn counters(&self) -> SourceCounters {
            SourceCounters {
                lost_per_cpu: vec![0; 2],
                ..Default::default()
            }
        }
    }

    #[test]
    fn finish_aggregates_everything_the_source_delivered() {
        let stream: Vec<Vec<u8>> = synthetic::Synth::host_mix(20)
            .iter()
            .map(<[u8]>::to_vec)
            .collect();
        let n = stream.len() as u64;
        let source = Live {
            records: stream,
            polls: 0,
        };
        let mut capture = Capture::single(Box::new(source), Engine::new("live", None));
        assert_eq!(
            capture
                .pump(Instant::now() + Duration::from_millis(100))
                .unwrap(),
            Pumped::Deadline
        );
        let done = capture.finish().unwrap();
        assert!(done.drained);
        assert_eq!(done.engines[0].records, n);
        assert_eq!(done.engines[0].late_events(), 0);
    }

    #[test]
    fn the_stop_flag_ends_a_pump() {
        let source = Live {
            records: vec![],
            polls: 0,
        };
        let mut capture = Capture::single(Box::new(source), Engine::new("live", None));
        capture.stop_flag().store(true, Ordering::SeqCst);
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(capture.pump(far).unwrap(), Pumped::Stopped);
        capture.finish().unwrap();
    }
}
