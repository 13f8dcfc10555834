//! `ksight top --batch --connect PATH`: the agent's aggregates, fetched from its socket,
//! without loading a second set of probes.

use anyhow::{Context, Result, bail};
use ksight_export::interval::Intervals;
use ksight_export::protocol::{self, AgentSnapshot};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Prints what the agent saw in each interval of `delay` seconds, `iterations` times (or
/// until interrupted), as `top --batch` does with a capture of its own: text, or one JSON
/// snapshot per line. The agent serves cumulative snapshots, so the first request only
/// primes; each interval is the difference from the previous one
/// ([`ksight_export::interval`]).
pub fn top_batch(path: &Path, iterations: Option<u64>, delay: f64, json: bool) -> Result<u8> {
    if !(delay.is_finite() && delay >= 0.05) {
        bail!("--delay {delay}: must be at least 0.05 seconds");
    }
    let delay = Duration::from_secs_f64(delay);
    let fetch = || {
        protocol::fetch(path, TIMEOUT)
            .with_context(|| format!("asking the agent at {}", path.display()))
    };
    let mut intervals = Intervals::default();
    let mut asked = Instant::now();
    intervals.push(asked, fetch()?.snapshot);
    let mut stdout = std::io::stdout().lock();
    let mut done = 0u64;
    while iterations.is_none_or(|n| done < n) {
        std::thread::sleep(delay.saturating_sub(asked.elapsed()));
        asked = Instant::now();
        let AgentSnapshot {
            agent_version,
            backend,
            backend_reason,
            fidelity_notes,
            snapshot,
        } = fetch()?;
        let (_, snapshot) = intervals
            .push(asked, snapshot)
            .expect("primed by the first request");
        if json {
            writeln!(stdout, "{}", serde_json::to_string(&snapshot)?)?;
        } else {
            writeln!(
                stdout,
                "agent {agent_version} at {}: {backend} backend ({backend_reason})",
                path.display(),
            )?;
            write!(
                stdout,
                "{}",
                crate::render::snapshot(&snapshot, &fidelity_notes)
            )?;
        }
        stdout.flush()?;
        done += 1;
    }
    Ok(0)
}
