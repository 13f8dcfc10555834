//! Every flag, defined once; help comes from here.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

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
        /// Stop after this long (e.g. 10s, 500ms, 2m, 1h30m; a bare number is seconds);
        /// without it, stop on Ctrl-C.
        #[arg(long, value_parser = positive_duration)]
        duration: Option<Duration>,
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
        /// Time between snapshots (e.g. 1, 0.5, 500ms, 2s; a bare number is seconds).
        #[arg(short, long, default_value = "1", value_parser = delay_seconds)]
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
    /// Payload bytes copied from each socket send/receive call (for DNS), 1..=4096.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SNAPLEN, value_parser = snaplen)]
    pub snaplen: u32,
    /// Record kinds to capture (bit `1 << kind`); None: all. Not a flag: the agent sets it
    /// from its signal switches.
    #[arg(skip)]
    pub kinds: Option<u32>,
}

impl CaptureArgs {
    /// A capture with `backend` and `transport` and every other setting at its default.
    pub fn new(backend: BackendChoice, transport: TransportChoice) -> Self {
        Self {
            backend,
            transport,
            snaplen: DEFAULT_SNAPLEN,
            kinds: None,
        }
    }
}

pub const DEFAULT_SNAPLEN: u32 = event_abi::DEFAULT_SNAPLEN as u32;
pub const MAX_SNAPLEN: u32 = event_abi::MAX_SNAPLEN as u32;

/// Why a snaplen is refused, or None; one wording for `--snaplen` and the agent's
/// `snaplen` key.
pub fn snaplen_error(n: i64) -> Option<String> {
    (!(1..=i64::from(MAX_SNAPLEN)).contains(&n)).then(|| {
        format!("{n} is out of range 1..={MAX_SNAPLEN} (payload bytes copied per socket call)")
    })
}

/// `--snaplen`.
fn snaplen(text: &str) -> Result<u32, String> {
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("\"{text}\" is not a number of bytes"))?;
    match snaplen_error(n) {
        Some(e) => Err(e),
        None => Ok(n as u32),
    }
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

/// The one duration grammar of ksight, on the command line and in the configuration file:
/// a number with a unit — `500ms`, `1.5s`, `30s`, `5m`, `2h`, `7d`, or several, `1h 30m`
/// (humantime's grammar: also `us`, `min`, `sec`, `hour`, `day`, `w`) — or a bare number,
/// which is seconds (as in systemd's time spans). Zero is a duration; whether a setting
/// allows it is that setting's range.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let seconds = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().any(|c| c.is_ascii_digit());
    let parsed = if seconds {
        humantime::parse_duration(&format!("{text}s"))
    } else {
        humantime::parse_duration(text)
    };
    parsed.map_err(|e| {
        format!(
            "\"{text}\" is not a duration like \"500ms\", \"30s\", \"5m\", \"1h\" or \"7d\", or a number of seconds ({e})"
        )
    })
}

/// A duration of more than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("\"{}\" must be more than zero", text.trim())),
        d => Ok(d),
    }
}

/// `--delay`, in seconds.
fn delay_seconds(text: &str) -> Result<f64, String> {
    positive_duration(text).map(|d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("3").unwrap().as_secs(), 3);
        assert_eq!(parse_duration("0.25").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("1h 30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration(".").is_err());
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("0").is_err());
        assert_eq!(delay_seconds("500ms").unwrap(), 0.5);
        let e = parse_duration("10x").unwrap_err();
        assert!(e.starts_with("\"10x\" is not a duration"), "{e}");
    }

    #[test]
    fn snaplen_on_every_capture_command() {
        let snaplen_of = |args: &[&str]| -> Result<u32, String> {
            match Args::try_parse_from(args) {
                Ok(Args {
                    command:
                        Command::Stat { capture, .. }
                        | Command::Record { capture, .. }
                        | Command::Top { capture, .. },
                }) => Ok(capture.snaplen),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(snaplen_of(&["ksight", "top", "--batch"]), Ok(512));
        assert_eq!(
            snaplen_of(&["ksight", "top", "--snaplen", "4096"]),
            Ok(4096)
        );
        assert_eq!(
            snaplen_of(&["ksight", "record", "-o", "f", "--snaplen", "1"]),
            Ok(1)
        );
        assert_eq!(
            snaplen_of(&["ksight", "stat", "--snaplen", "64", "--", "true"]),
            Ok(64)
        );
        for bad in ["0", "4097", "lots"] {
            let e = snaplen_of(&["ksight", "top", "--snaplen", bad]).unwrap_err();
            assert!(e.contains("--snaplen <BYTES>"), "{e}");
            assert!(
                e.contains("out of range 1..=4096") || e.contains("not a number of bytes"),
                "{e}"
            );
        }
        let err = Args::try_parse_from(["ksight", "top", "--snaplen", "0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
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
