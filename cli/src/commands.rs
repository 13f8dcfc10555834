//! The subcommands.

use crate::args::{Args, CaptureArgs, Command};
use crate::backend;
use crate::cgroup::StatCgroup;
use crate::render;
use anyhow::{Context, Result, bail};
use ksight_attribution::{Attributor, attribute};
use ksight_engine::capture::{CaptureHeader, CaptureWriter, ReplaySource};
use ksight_engine::names::HostNames;
use ksight_engine::{Capture, Engine, Pumped, Scope, Snapshot};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
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
        Command::Workload { args } => Ok(match ksight_testkit::workload::run(&args) {
            Ok(()) => 0,
            Err(usage) => {
                eprintln!("{usage}");
                2
            }
        }),
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

/// An `Instant` no capture reaches.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
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
    let mut child = crate::cgroup::spawn_in(command, cgroup.as_ref())?;
    let mut scope = Scope::default();
    scope.pids.insert(child.id());
    if let Some(cg) = &cgroup {
        scope.cgroups.insert(cg.id);
    }
    let mut capture = Capture::single(opened.source, Engine::new(&backend_name, Some(scope)));
    let status = capture
        .pump_while_running(&mut child)?
        .expect("no stop flag: stat waits for its command");
    // Everything the command did was stamped before its exit was reaped.
    let done = capture.finish()?;
    let engine = &done.engines[0];
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
    let writer = CaptureWriter::create(output, header)?;
    let mut capture = Capture::single(opened.source, Engine::new(&backend_name, None))
        .recording(writer)
        .stop_on_signals()?;
    // Until the duration, Ctrl-C or SIGTERM.
    capture.pump(duration.map_or(far_future(), |d| Instant::now() + d))?;
    let done = capture.finish()?;
    let engine = &done.engines[0];
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
    let source = ReplaySource::open(file)?;
    let engine = Engine::new(&source.header().backend.clone(), None);
    let mut capture = Capture::single(Box::new(source), engine);
    // Until the end of the file.
    capture.pump(far_future())?;
    let done = capture.finish()?;
    let engine = &done.engines[0];
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
    let mut capture =
        Capture::single(opened.source, Engine::new(&backend_name, None)).stop_on_signals()?;
    let names = HostNames { live: true };
    let mut attributor = Attributor::host();
    let mut done = 0u64;
    let mut stdout = std::io::stdout().lock();
    while iterations.is_none_or(|n| done < n) {
        let deadline = Instant::now() + Duration::from_secs_f64(delay);
        if capture.pump(deadline)? == Pumped::Stopped {
            break;
        }
        let engine = capture.engine_mut();
        let mut snapshot = engine.snapshot(&names);
        attribute(&mut snapshot, &mut attributor);
        print_snapshot(&snapshot, json, &opened.fidelity_notes, &mut stdout)?;
        engine.reset_interval();
        done += 1;
    }
    drop(capture);
    Ok(0)
}
