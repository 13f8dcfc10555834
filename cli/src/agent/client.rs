//! `ksight top --batch --connect PATH`: the agent's aggregates, fetched from its socket,
//! without loading a second set of probes.

use anyhow::{Context, Result, bail};
use ksight_engine::export::protocol;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Prints the agent's cumulative snapshot every `delay` seconds, `iterations` times (or
/// until interrupted): text like `top --batch`, or one JSON snapshot per line.
pub fn top_batch(path: &Path, iterations: Option<u64>, delay: f64, json: bool) -> Result<u8> {
    if !(delay.is_finite() && delay >= 0.05) {
        bail!("--delay {delay}: must be at least 0.05 seconds");
    }
    let mut stdout = std::io::stdout().lock();
    let mut done = 0u64;
    while iterations.is_none_or(|n| done < n) {
        let started = Instant::now();
        let reply = protocol::fetch(path, TIMEOUT)
            .with_context(|| format!("asking the agent at {}", path.display()))?;
        if json {
            writeln!(stdout, "{}", serde_json::to_string(&reply.snapshot)?)?;
        } else {
            writeln!(
                stdout,
                "agent {} at {}: {} backend ({})",
                reply.agent_version,
                path.display(),
                reply.backend,
                reply.backend_reason
            )?;
            write!(
                stdout,
                "{}",
                crate::render::snapshot(&reply.snapshot, &reply.fidelity_notes)
            )?;
        }
        stdout.flush()?;
        done += 1;
        if iterations.is_none_or(|n| done < n) {
            std::thread::sleep(Duration::from_secs_f64(delay).saturating_sub(started.elapsed()));
        }
    }
    Ok(0)
}
