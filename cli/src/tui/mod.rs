//! `ksight top`: the interactive view. Laid out as bottom and bpftop are:
//!
//! - `app`: the state (model of what was seen, view, sort, filter, pause) and the only
//!   code that changes it, `App::handle`;
//! - `canvas`: drawing, a pure function of the state;
//! - `collection`: the thread that makes one `Sample` per interval (live capture or an
//!   agent) and the thread that forwards terminal input;
//! - `event`: what those threads send on the one channel the main loop reads;
//! - `rates`: the metric maths, pure and saturating;
//! - `requests`: every protocol's request rows in one shape (`stat` shows them too);
//! - `terminal`: taking the terminal over and always giving it back.

mod app;
mod canvas;
mod collection;
mod event;
// `stat`'s text formats and merges requests as the Requests view does.
pub(crate) mod fmt;
pub(crate) mod rates;
pub(crate) mod requests;
mod terminal;

use crate::args::CaptureArgs;
use crate::backend;
use anyhow::{Result, bail};
use app::{Action, App, Mode};
use collection::Collector;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use event::Event;
use ksight_engine::{Capture, Engine};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The shortest refresh interval accepted.
const MIN_DELAY_S: f64 = 0.1;

/// Runs the interactive view until the user quits. Capture errors that happen before the
/// screen is taken over (no privileges, no backend) are returned as usual; later ones are
/// shown in the view.
pub fn run(capture: &CaptureArgs, connect: Option<&Path>, delay: f64) -> Result<u8> {
    if !(delay.is_finite() && delay >= MIN_DELAY_S) {
        bail!("--delay {delay}: must be at least {MIN_DELAY_S} seconds");
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("ksight top needs a terminal; for output to a pipe or file use `ksight top --batch`");
    }
    let interval = Duration::from_secs_f64(delay);
    let start = Instant::now();
    let (tx, rx) = unbounded();
    let (mut app, collector) = match connect {
        Some(path) => {
            let app = App::new(Mode::Attached(path.to_path_buf()), interval);
            let collector = collection::attached(path.to_path_buf(), interval, start, tx.clone())?;
            (app, collector)
        }
        None => {
            let opened = backend::open(capture)?;
            let mut app = App::new(Mode::Live, interval);
            // The backend that runs says how it observes each signal and why it runs
            // (after a fallback: the module's report and eBPF's failure).
            app.signals = opened.signals;
            app.backend_reason = opened.reason;
            let name = opened.source.name().to_string();
            let capture = Capture::single(opened.source, Engine::new(&name, None));
            let collector = collection::live(capture, interval, start, tx.clone())?;
            (app, collector)
        }
    };
    let result = interact(&mut app, &rx, tx, &collector);
    // The terminal is already restored; tearing capture down may take a moment.
    collector.stop();
    result.map(|()| 0)
}

/// The main loop: the only place state changes. Draws after each batch of events.
fn interact(
    app: &mut App,
    rx: &Receiver<Event>,
    tx: Sender<Event>,
    collector: &Collector,
) -> Result<()> {
    terminal::catch_stop_signals();
    let mut guard = terminal::TerminalGuard::enter()?;
    let stop_input = Arc::new(AtomicBool::new(false));
    let input = collection::input(tx, stop_input.clone());
    let result = input.and_then(|_| {
        guard.terminal.draw(|f| canvas::draw(f, app))?;
        loop {
            if terminal::stop_requested() {
                return Ok(());
            }
            let first = match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            // Handle whatever else is queued, then draw once.
            for event in std::iter::once(first).chain(rx.try_iter()) {
                match app.handle(event) {
                    Action::Quit => return Ok(()),
                    Action::SetInterval(d) => collector.set_interval(d),
                    Action::None => {}
                }
            }
            guard.terminal.draw(|f| canvas::draw(f, app))?;
        }
    });
    stop_input.store(true, Ordering::SeqCst);
    drop(guard);
    result
}
