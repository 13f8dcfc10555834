//! Reader threads → bounded channel → the one aggregating thread. A full channel makes the
//! readers wait, the kernel buffers fill, and the backend counts what it drops: drops are
//! reported, never hidden behind unbounded memory.

use crate::source::{EventSource, Poll, RawBatch, SourceCounters, SourceError};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub enum Message {
    Batch {
        source: usize,
        batch: RawBatch,
    },
    Counters {
        source: usize,
        counters: SourceCounters,
    },
    /// The source has nothing more (end of a replay).
    Finished {
        source: usize,
    },
    Failed {
        source: usize,
        error: SourceError,
    },
}

pub struct Readers {
    rx: Receiver<Message>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Box<dyn EventSource>>>,
}

const POLL_TIMEOUT: Duration = Duration::from_millis(50);
const CHANNEL_BATCHES: usize = 256;

impl Readers {
    /// One thread per source.
    pub fn spawn(sources: Vec<Box<dyn EventSource>>) -> Self {
        let (tx, rx) = bounded(CHANNEL_BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let handles = sources
            .into_iter()
            .enumerate()
            .map(|(index, source)| {
                let (tx, stop) = (tx.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("ksight-read-{}", source.name()))
                    .spawn(move || read_loop(index, source, tx, stop))
                    .expect("spawn reader thread")
            })
            .collect();
        Self { rx, stop, handles }
    }

    pub fn receiver(&self) -> &Receiver<Message> {
        &self.rx
    }

    /// Asks readers to drain what is ready and stop. Messages keep arriving on the
    /// receiver until every reader has sent its last counters; then the sources come back.
    pub fn stop(self, mut on_message: impl FnMut(Message)) -> Vec<Box<dyn EventSource>> {
        self.stop.store(true, Ordering::SeqCst);
        let Readers { rx, handles, .. } = self;
        let mut sources = Vec::new();
        for handle in handles {
            // Keep draining so a reader blocked on a full channel can finish.
            while !handle.is_finished() {
                if let Ok(m) = rx.recv_timeout(Duration::from_millis(10)) {
                    on_message(m);
                }
            }
            sources.push(handle.join().expect("reader thread panicked"));
        }
        while let Ok(m) = rx.try_recv() {
            on_message(m);
        }
        sources
    }
}

fn read_loop(
    index: usize,
    mut source: Box<dyn EventSource>,
    tx: Sender<Message>,
    stop: Arc<AtomicBool>,
) -> Box<dyn EventSource> {
    let mut last_counters = SourceCounters::default();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let mut batch = RawBatch::new();
        let timeout = if stopping {
            Duration::ZERO
        } else {
            POLL_TIMEOUT
        };
        let result = source.poll(&mut batch, timeout);
        // Counters first: the first message tells the engine (and a recording) how many
        // CPU streams there are before any of their records arrive.
        let counters = source.counters();
        if counters != last_counters {
            last_counters = counters.clone();
            if tx
                .send(Message::Counters {
                    source: index,
                    counters,
                })
                .is_err()
            {
                break;
            }
        }
        if !batch.is_void()
            && tx
                .send(Message::Batch {
                    source: index,
                    batch,
                })
                .is_err()
        {
            break;
        }
        match result {
            Ok(Poll::Ready) if !stopping => {}
            Ok(Poll::Ready) => break,
            Ok(Poll::Finished) => {
                let _ = tx.send(Message::Finished { source: index });
                break;
            }
            Err(error) => {
                let _ = tx.send(Message::Failed {
                    source: index,
                    error,
                });
                break;
            }
        }
    }
    source
}
