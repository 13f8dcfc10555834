//! Collection: one thread that produces a `Sample` per interval, from this process's own
//! capture (live) or from a running agent (attached), and one thread that forwards terminal
//! input. Both send on the main loop's one event channel; neither touches UI state.

mod cgroups;

use crate::tui::event::{Control, Event, Sample, SourceStatus};
use anyhow::{Context, Result};
use cgroups::CgroupOwners;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use ksight_engine::names::HostNames;
use ksight_engine::{Capture, Snapshot};
use ksight_export::interval::Intervals;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The collection thread, and the way to talk to it.
pub struct Collector {
    control: Sender<Control>,
    handle: Option<JoinHandle<()>>,
}

impl Collector {
    pub fn set_interval(&self, interval: Duration) {
        let _ = self.control.send(Control::SetInterval(interval));
    }

    /// Asks collection to stop and waits for it (live: the readers detach the programs).
    pub fn stop(mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn spawn(name: &str, body: impl FnOnce(Receiver<Control>) + Send + 'static) -> Result<Collector> {
    let (control, rx) = unbounded();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(rx))
        .context("starting the collection thread")?;
    Ok(Collector {
        control,
        handle: Some(handle),
    })
}

/// Applies pending control messages; false once asked to stop.
fn poll_control(control: &Receiver<Control>, interval: &mut Duration) -> bool {
    while let Ok(c) = control.try_recv() {
        match c {
            Control::Stop => return false,
            Control::SetInterval(d) => *interval = d,
        }
    }
    true
}

/// Waits until `until` unless told to stop (or the main loop went away); false to stop.
fn sleep_until(control: &Receiver<Control>, interval: &mut Duration, until: Instant) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match control.recv_timeout(left) {
            Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
            Ok(Control::SetInterval(d)) => *interval = d,
            Err(RecvTimeoutError::Timeout) => return true,
        }
    }
}

/// Live mode: the reader threads of an opened backend feed an engine here; every interval
/// its snapshot goes to the main loop and its counters restart.
pub fn live(
    capture: Capture,
    interval: Duration,
    start: Instant,
    events: Sender<Event>,
) -> Result<Collector> {
    spawn("ksight-top-live", move |control| {
        live_loop(capture, interval, start, &events, &control)
    })
}

fn live_loop(
    mut capture: Capture,
    mut interval: Duration,
    start: Instant,
    events: &Sender<Event>,
    control: &Receiver<Control>,
) {
    let names = HostNames { live: true };
    let mut cgroup_owners = CgroupOwners::new();
    let mut last = Instant::now();
    'capture: loop {
        loop {
            if !poll_control(control, &mut interval) {
                break 'capture;
            }
            // Short pumps, so control messages (pause, interval) are seen promptly.
            let deadline = (last + interval).min(Instant::now() + Duration::from_millis(50));
            if let Err(error) = capture.pump(deadline) {
                let _ = events.send(Event::Source(SourceStatus::Failed(format!(
                    "{:#}",
                    anyhow::Error::from(error)
                ))));
                break 'capture;
            }
            if Instant::now() >= last + interval {
                break;
            }
        }
        let now = Instant::now();
        let engine = capture.engine_mut();
        let snapshot = engine.snapshot(&names);
        engine.reset_interval();
        let sample = Sample {
            cgroup_labels: cgroup_owners.new_labels(&snapshot),
            snapshot,
            interval: now - last,
            at: now - start,
        };
        last = now;
        if events.send(Event::Sample(Box::new(sample))).is_err() {
            break;
        }
    }
}

/// What one request to an agent brings back.
pub struct AgentReply {
    /// Cumulative since the agent started.
    pub snapshot: Snapshot,
    pub backend_reason: String,
    pub fidelity_notes: Vec<String>,
}

/// How long one request may wait on the agent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the agent at `path` for its snapshot: the one place that knows the agent's
/// protocol (`ksight_export::protocol`).
pub fn fetch_from_agent(path: &Path) -> Result<AgentReply> {
    // The path is on screen already; the error says what went wrong with it.
    let reply = ksight_export::protocol::fetch(path, AGENT_TIMEOUT)?;
    Ok(AgentReply {
        snapshot: reply.snapshot,
        backend_reason: reply.backend_reason,
        fidelity_notes: reply.fidelity_notes,
    })
}

/// Waits after the n-th failed attempt in a row: 250 ms doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(5));
    Duration::from_millis(ms.min(5000))
}

/// Attached mode: asks the agent for its cumulative snapshot every interval and sends the
/// difference from the previous one. When the agent goes away, says so and retries with
/// backoff; the first answer after that only primes the next difference.
pub fn attached(
    path: PathBuf,
    interval: Duration,
    start: Instant,
    events: Sender<Event>,
) -> Result<Collector> {
    spawn("ksight-top-attach", move |control| {
        attached_loop(&path, interval, start, &events, &control, fetch_from_agent)
    })
}

pub fn attached_loop(
    path: &Path,
    mut interval: Duration,
    start: Instant,
    events: &Sender<Event>,
    control: &Receiver<Control>,
    fetch: impl Fn(&Path) -> Result<AgentReply>,
) {
    let mut cgroup_owners = CgroupOwners::new();
    let mut intervals = Intervals::default();
    let mut failures = 0u32;
    let mut notes: Option<(String, Vec<String>)> = None;
    loop {
        let asked = Instant::now();
        let next = match fetch(path) {
            Ok(reply) => {
                failures = 0;
                let now = Instant::now();
                let info = (reply.backend_reason, reply.fidelity_notes);
                if notes.as_ref() != Some(&info) {
                    let _ = events.send(Event::AgentInfo {
                        backend_reason: info.0.clone(),
                        fidelity_notes: info.1.clone(),
                    });
                    notes = Some(info);
                }
                let sent = match intervals.push(now, reply.snapshot) {
                    Some((interval, snapshot)) => {
                        let sample = Sample {
                            cgroup_labels: cgroup_owners.new_labels(&snapshot),
                            snapshot,
                            interval,
                            at: now - start,
                        };
                        events.send(Event::Sample(Box::new(sample)))
                    }
                    None => events.send(Event::Source(SourceStatus::Connected)),
                };
                if sent.is_err() {
                    return;
                }
                asked + interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                intervals.reset();
                let retry_in = backoff(failures).min(interval.max(Duration::from_millis(250)));
                let status = SourceStatus::Reconnecting {
                    error: format!("{e:#}"),
                    attempt: failures,
                    retry_in,
                };
                if events.send(Event::Source(status)).is_err() {
                    return;
                }
                Instant::now() + retry_in
            }
        };
        if !sleep_until(control, &mut interval, next) {
            return;
        }
    }
}

/// Forwards key presses and resizes until `stop` is set or the terminal fails.
pub fn input(events: Sender<Event>, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    use crossterm::event::{self, Event as Term};
    std::thread::Builder::new()
        .name("ksight-top-input".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => break,
                }
                let forwarded = match event::read() {
                    Ok(Term::Key(key)) => events.send(Event::Key(key)),
                    Ok(Term::Resize(..)) => events.send(Event::Resize),
                    Ok(_) => Ok(()),
                    Err(_) => break,
                };
                if forwarded.is_err() {
                    break;
                }
            }
        })
        .context("starting the input thread")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn fetches_from_an_agent_socket() {
        use ksight_export::protocol::{AgentSnapshot, serve};
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("ksight-top-fetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let _ = std::fs::remove_file(&path);
        assert!(fetch_from_agent(&path).is_err(), "no agent yet");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            serve(
                &mut stream,
                &AgentSnapshot {
                    backend: "ebpf".into(),
                    backend_reason: "configured".into(),
                    fidelity_notes: vec!["block degraded".into()],
                    snapshot: Snapshot {
                        backend: "ebpf".into(),
                        events: 42,
                        ..Snapshot::default()
                    },
                    ..AgentSnapshot::default()
                },
            )
            .unwrap();
        });
        let reply = fetch_from_agent(&path).unwrap();
        server.join().unwrap();
        assert_eq!(reply.snapshot.events, 42);
        assert_eq!(reply.backend_reason, "configured");
        assert_eq!(reply.fidelity_notes, ["block degraded"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn attached_mode_reports_losses_and_recovers() {
        let (tx, rx) = unbounded();
        let (control_tx, control) = unbounded();
        let calls = Cell::new(0u32);
        // Answers, fails twice, answers twice; then the test stops it.
        let fetch = |_: &Path| -> Result<AgentReply> {
            let n = calls.get();
            calls.set(n + 1);
            if n == 1 || n == 2 {
                anyhow::bail!("connection refused");
            }
            if n >= 5 {
                let _ = control_tx.send(Control::Stop);
            }
            Ok(AgentReply {
                snapshot: Snapshot {
                    events: 10 * u64::from(n),
                    ..Snapshot::default()
                },
                backend_reason: "test".into(),
                fidelity_notes: vec![],
            })
        };
        attached_loop(
            Path::new("/nonexistent"),
            Duration::from_millis(10),
            Instant::now(),
            &tx,
            &control,
            fetch,
        );
        let got: Vec<Event> = rx.try_iter().collect();
        let kinds: Vec<String> = got
            .iter()
            .map(|e| match e {
                Event::Source(SourceStatus::Connected) => "connected".into(),
                Event::Source(SourceStatus::Reconnecting { attempt, .. }) => {
                    format!("retry{attempt}")
                }
                Event::Sample(s) => format!("sample{}", s.snapshot.events),
                Event::AgentInfo { .. } => "info".into(),
                other => format!("{other:?}"),
            })
            .collect();
        // After the outage the first answer primes; the next gives 40 - 30 events.
        assert_eq!(
            kinds,
            [
                "info",
                "connected",
                "retry1",
                "retry2",
                "connected",
                "sample10",
                "sample10"
            ]
        );
    }
}
