//! Logging to standard error, which systemd hands to the journal. Under the journal each
//! line carries its syslog priority as a `<N>` prefix (journald's `SyslogLevelPrefix`);
//! on a terminal it reads `ksight agent: warning: …`.

use super::config::LogLevel;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn log(level: LogLevel, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let line = if journal {
        let priority = match level {
            LogLevel::Error => 3,
            LogLevel::Warn => 4,
            LogLevel::Info => 6,
            LogLevel::Debug => 7,
        };
        format!("<{priority}>{args}\n")
    } else {
        let word = match level {
            LogLevel::Error => "error: ",
            LogLevel::Warn => "warning: ",
            LogLevel::Info => "",
            LogLevel::Debug => "debug: ",
        };
        format!("ksight agent: {word}{args}\n")
    };
    // One write per line, so lines of different threads never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

macro_rules! error {
    ($($t:tt)*) => { $crate::agent::log::log($crate::agent::config::LogLevel::Error, format_args!($($t)*)) };
}
macro_rules! warning {
    ($($t:tt)*) => { $crate::agent::log::log($crate::agent::config::LogLevel::Warn, format_args!($($t)*)) };
}
macro_rules! info {
    ($($t:tt)*) => { $crate::agent::log::log($crate::agent::config::LogLevel::Info, format_args!($($t)*)) };
}
macro_rules! debug {
    ($($t:tt)*) => { $crate::agent::log::log($crate::agent::config::LogLevel::Debug, format_args!($($t)*)) };
}
pub(crate) use {debug, error, info, warning};
