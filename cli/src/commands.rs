//! The subcommands.

use crate::args::{Args, CaptureArgs, Command};
use crate::backend;
use crate::cgroup::StatCgroup;
use crate::render;
use anyhow::{Context, Result, bail};
use crossbeam_channel::RecvTimeoutError;
use ksight_engine::attribution::{Attributor, attribute};
use ksight_engine::capture::{CaptureHeader, CaptureWriter, ReplaySource};
use ksight_engine::names::HostNames;
use ksight_engine::pipeline::{Message, Readers};
use ksight_engine::{Engine, EventSource, Poll, RawBatch, Scope, Snapshot, monotonic_ns};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub fn run(args: Args) -> Result<u8> {
    match args.command {
        Command::Detect { json } => detect(json),
        Command::Stat {
            capture,
            json,
            output,
            command,
        } => stat(&capture, json, output.as_deref(), &command),
        Command::Record {
            capture,
            output,
            duration,
            json,
        } => record(&capture, &output, duration, json),
        Command::Replay { file, json } => replay(&file, json),
        Command::Verify { device, json } => crate::verify::verify(device.as_deref(), json),
        Command::Workload { args } => {
            crate::workload::run(&args);
            Ok(0)
        }
        Command::Agent(args) => crate::agent::run(&args.config),
        Command::Install(args) => crate::install::run(&args),
        Command::Top {
            capture,
            batch,
            iterations,
            delay,
            json,
            connect,
        } => {
            if !batch {
                return crate::tui::run(&capture, connect.as_deref(), delay);
            }
            if let Some(path) = connect {
                return crate::agent::client::top_batch(&path, iterations, delay, json);
            }
            top_batch(&capture, iterations, delay, json)
        }
    }
}

fn detect(json: bool) -> Result<u8> {
    let report = ksight_backend_ebpf::detect();
    let ebpf = render::ebpf_blocker(&report);
    let kmod = ksight_backend_kmod::probe().err().map(|e| e.to_string());
    let (backend, reason) = match (&ebpf, &kmod) {
        (None, _) => (
            "ebpf",
            "eBPF programs load and attach on this kernel".to_string(),
        ),
        (Some(ebpf), None) => (
            "kmod",
            format!("eBPF cannot run ({ebpf}); the ksight module is loaded"),
        ),
        (Some(ebpf), Some(kmod)) => ("none", format!("ebpf: {ebpf}; kmod: {kmod}")),
    };
    if json {
        let value = serde_json::json!({
            "backend": backend,
            "reason": reason,
            "ebpf": report,
            "kmod": { "available": kmod.is_none(), "reason": kmod },
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!(
            "{}",
            render::detect(&report, backend, &reason, kmod.as_deref())
        );
    }
    Ok(if backend == "none" { 1 } else { 0 })
}

/// Feeds one reader message to the engine (and to a capture file, when recording).
fn handle(
    engine: &mut Engine,
    message: Message,
    mut record: Option<&mut CaptureWriter<std::io::BufWriter<std::fs::File>>>,
) -> Result<()> {
    match message {
        Message::Batch { batch, .. } => {
            if let Some(w) = record.as_mut() {
                w.write_batch(&batch)?;
            }
            engine.ingest(&batch);
        }
        Message::Counters { counters, .. } => {
            if let Some(w) = record.as_mut() {
                w.write_counters(&counters)?;
            }
            engine.set_counters(counters);
        }
        Message::Finished { .. } => {}
        Message::Failed { error, .. } => return Err(error.into()),
    }
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM end a capture cleanly instead of killing it.
fn stop_on_interrupt() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
}

fn print_snapshot(
    snapshot: &Snapshot,
    json: bool,
    notes: &[String],
    out: &mut dyn Write,
) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(snapshot)?)?;
    } else {
        write!(out, "{}", render::snapshot(snapshot, notes))?;
    }
    out.flush()?;
    Ok(())
}

fn stat(
    capture: &CaptureArgs,
    json: bool,
    output: Option<&Path>,
    command: &[String],
) -> Result<u8> {
    let opened = backend::open(capture)?;
    let backend_name = opened.source.name().to_string();
    let cgroup = match StatCgroup::create() {
        Ok(cg) => Some(cg),
        Err(e) => {
            eprintln!("ksight: warning: {e:#}; attributing by process tree only");
            None
        }
    };
    let readers = Readers::spawn(vec![opened.source]);

    let mut child = crate::cgroup::spawn_in(command, cgroup.as_ref())?;
    let mut scope = Scope::default();
    scope.pids.insert(child.id());
    if let Some(cg) = &cgroup {
        scope.cgroups.insert(cg.id);
    }
    let mut engine = Engine::new(&backend_name, Some(scope));
    let rx = readers.receiver().clone();
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(m) => handle(&mut engine, m, None)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the event reader stopped"),
        }
        engine.advance(Some(monotonic_ns()));
        if let Some(status) = child.try_wait()? {
            break status;
        }
    };
    // The command's last events may still sit in the kernel buffers: keep reading briefly.
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        if let Ok(m) = rx.recv_timeout(Duration::from_millis(10)) {
            handle(&mut engine, m, None)?;
        }
    }
    let mut failure = None;
    readers.stop(|m| {
        if let Err(e) = handle(&mut engine, m, None) {
            failure.get_or_insert(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    engine.flush();
    let mut snapshot = engine.snapshot(&HostNames { live: true });
    attribute(&mut snapshot, &mut Attributor::host());
    match output {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("writing {}", path.display()))?;
            print_snapshot(&snapshot, json, &opened.fidelity_notes, &mut file)?;
        }
        None => print_snapshot(
            &snapshot,
            json,
            &opened.fidelity_notes,
            &mut std::io::stderr().lock(),
        )?,
    }
    if let Some(Err(e)) = cgroup.as_ref().map(StatCgroup::remove) {
        eprintln!("ksight: warning: {e:#}");
    }
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 1,
    })
}

fn record(
    capture: &CaptureArgs,
    output: &Path,
    duration: Option<Duration>,
    json: bool,
) -> Result<u8> {
    let opened = backend::open(capture)?;
    let backend_name = opened.source.name().to_string();
    let header = CaptureHeader::for_this_host(backend_name.clone());
    let mut writer = CaptureWriter::create(output, header)?;
    stop_on_interrupt();
    let readers = Readers::spawn(vec![opened.source]);
    let mut engine = Engine::new(&backend_name, None);
    let rx = readers.receiver().clone();
    let started = Instant::now();
    while !INTERRUPTED.load(Ordering::SeqCst) && duration.is_none_or(|d| started.elapsed() < d) {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => handle(&mut engine, m, Some(&mut writer))?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the event reader stopped"),
        }
        engine.advance(Some(monotonic_ns()));
    }
    let mut failure = None;
    readers.stop(|m| {
        if let Err(e) = handle(&mut engine, m, Some(&mut writer)) {
            failure.get_or_insert(e);
        }
    });
    writer.finish()?;
    if let Some(e) = failure {
        return Err(e);
    }
    engine.flush();
    // The same names a replay can give: from events only.
    let snapshot = engine.snapshot(&HostNames { live: false });
    print_snapshot(
        &snapshot,
        json,
        &opened.fidelity_notes,
        &mut std::io::stdout().lock(),
    )?;
    Ok(0)
}

fn replay(file: &Path, json: bool) -> Result<u8> {
    let mut source = ReplaySource::open(file)?;
    let mut engine = Engine::new(&source.header().backend.clone(), None);
    let mut batch = RawBatch::new();
    loop {
        batch.clear();
        let poll = source.poll(&mut batch, Duration::ZERO)?;
        engine.ingest(&batch);
        engine.advance(None);
        if poll == Poll::Finished {
            break;
        }
    }
    engine.set_counters(source.counters());
    engine.flush();
    let snapshot = engine.snapshot(&HostNames { live: false });
    print_snapshot(&snapshot, json, &[], &mut std::io::stdout().lock())?;
    Ok(0)
}

fn top_batch(capture: &CaptureArgs, iterations: Option<u64>, delay: f64, json: bool) -> Result<u8> {
    if !(delay.is_finite() && delay >= 0.05) {
        bail!("--delay {delay}: must be at least 0.05 seconds");
    }
    let opened = backend::open(capture)?;
    let backend_name = opened.source.name().to_string();
    stop_on_interrupt();
    let readers = Readers::spawn(vec![opened.source]);
    let mut engine = Engine::new(&backend_name, None);
    let rx = readers.receiver().clone();
    let names = HostNames { live: true };
    let mut attributor = Attributor::host();
    let mut done = 0u64;
    let mut stdout = std::io::stdout().lock();
    while !INTERRUPTED.load(Ordering::SeqCst) && iterations.is_none_or(|n| done < n) {
        let deadline = Instant::now() + Duration::from_secs_f64(delay);
        while Instant::now() < deadline && !INTERRUPTED.load(Ordering::SeqCst) {
            match rx.recv_timeout(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            ) {
                Ok(m) => handle(&mut engine, m, None)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("the event reader stopped"),
            }
            engine.advance(Some(monotonic_ns()));
        }
        let mut snapshot = engine.snapshot(&names);
        attribute(&mut snapshot, &mut attributor);
        print_snapshot(&snapshot, json, &opened.fidelity_notes, &mut stdout)?;
        engine.reset_interval();
        done += 1;
    }
    readers.stop(|_| {});
    Ok(0)
}
