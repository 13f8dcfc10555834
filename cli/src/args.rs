//! Every flag, defined once; help comes from here.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ksight",
    version,
    about = "Transparent monitoring of Linux hosts from kernel tracepoints"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report what this kernel supports and which backend would run, signal by signal.
    Detect {
        #[arg(long)]
        json: bool,
    },
    /// Run a command under capture and print the metrics of it and its descendants.
    Stat {
        #[command(flatten)]
        capture: CaptureArgs,
        /// Print the metrics as JSON (the documented contract).
        #[arg(long)]
        json: bool,
        /// Write the metrics to this file instead of standard error.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Capture host-wide events into a file for `ksight replay`.
    Record {
        #[command(flatten)]
        capture: CaptureArgs,
        /// Capture file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Stop after this long (e.g. 10s, 500ms, 2m); without it, stop on Ctrl-C.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Print the aggregates of what was recorded as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Aggregate a capture file exactly as the live run did.
    Replay {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run a built-in workload under both backends at once (eBPF and the kernel module)
    /// and report whether they agree, record by record and metric by metric.
    Verify {
        /// A block device the workload may write and read with O_DIRECT (e.g. a loop
        /// device); without it the workload does no block I/O.
        #[arg(long)]
        device: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The built-in workload `verify` runs (its activity is fixed by its arguments).
    #[command(hide = true, disable_help_flag = true)]
    Workload {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run as a daemon: capture host-wide, serve Prometheus metrics and snapshots.
    Agent(crate::agent::AgentArgs),
    /// Prepare this host for the agent: choose eBPF or build and load the module (DKMS),
    /// write the choice into the configuration, enable and start the service.
    Install(crate::install::InstallArgs),
    /// Host-wide snapshots, one per interval.
    Top {
        #[command(flatten)]
        capture: CaptureArgs,
        /// Print snapshots as text or JSON lines instead of the interactive view.
        #[arg(long)]
        batch: bool,
        /// Stop after N snapshots.
        #[arg(short = 'n', long)]
        iterations: Option<u64>,
        /// Seconds between snapshots.
        #[arg(short, long, default_value_t = 1.0)]
        delay: f64,
        #[arg(long)]
        json: bool,
        /// Show what a running `ksight agent` serves on this unix socket instead of
        /// capturing.
        #[arg(long, value_name = "PATH")]
        connect: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Kernel backend: eBPF programs or the ksight kernel module.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// eBPF transport: BPF ring buffer or per-CPU perf event array.
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto)]
    pub transport: TransportChoice,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Ebpf,
    Kmod,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    Auto,
    Ringbuf,
    Perf,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}' (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("duration '{text}' must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("3").unwrap().as_secs(), 3);
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn stat_needs_a_command() {
        let err = Args::try_parse_from(["ksight", "stat"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let ok = Args::try_parse_from(["ksight", "stat", "--json", "--", "ls", "-l"]).unwrap();
        match ok.command {
            Command::Stat { command, json, .. } => {
                assert!(json);
                assert_eq!(command, ["ls", "-l"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
