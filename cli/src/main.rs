//! The `ksight` binary: argument parsing and glue. Exit codes: 0 success, 1 error,
//! 2 usage error; `stat` exits with its command's status.

mod agent;
mod args;
mod backend;
mod cgroup;
mod commands;
mod install;
mod render;
mod tui;
mod verify;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = args::Args::parse();
    match commands::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("ksight: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// A reader that went away (`ksight top --batch | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
