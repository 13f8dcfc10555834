//! What the agent reads about itself: its own CPU time and resident memory.

use ksight_export::prometheus::OwnUsage;

/// CPU seconds (user + system) and resident bytes of this process.
pub fn own_usage() -> OwnUsage {
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let cpu_ticks = field(14) + field(15);
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    OwnUsage {
        cpu_seconds: cpu_ticks as f64 / ticks.max(1) as f64,
        resident_bytes: resident_pages * page.max(1) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_is_plausible() {
        let u = own_usage();
        assert!(u.resident_bytes > 100_000, "{u:?}");
        assert!(u.cpu_seconds >= 0.0 && u.cpu_seconds < 1e6, "{u:?}");
    }
}
