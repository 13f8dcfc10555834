//! The agent's logging: `tracing` events — ksight's own and those of the libraries it uses
//! (kube-runtime's watcher, say) — written to standard error, which systemd hands to the
//! journal. Plain lines, never colours. Under the journal (`JOURNAL_STREAM` set) each line
//! carries its syslog priority as a `<N>` prefix (journald's `SyslogLevelPrefix`); on a
//! terminal it reads `ksight agent: warning: …`. Events of other crates name their target.
//!
//! `log_level` applies to ksight and kube events; every other library logs warnings and
//! errors only, so `debug` does not drown the journal in HTTP/TLS chatter.

use super::config::LogLevel;
use std::fmt;
use std::sync::OnceLock;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::{Registry, prelude::*};

pub(crate) use tracing::{debug, error, info, warn as warning};

static RELOAD: OnceLock<reload::Handle<Targets, Registry>> = OnceLock::new();

fn filter(level: LogLevel) -> Targets {
    let level = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    };
    Targets::new()
        .with_default(LevelFilter::WARN.min(level))
        .with_target("ksight", level)
        .with_target("ksight_engine", level)
        .with_target("ksight_backend_ebpf", level)
        .with_target("ksight_backend_kmod", level)
        .with_target("kube", level)
        .with_target("kube_runtime", level)
        .with_target("kube_client", level)
}

/// Installs the subscriber at `level` (once; later calls only change the level).
pub fn set_level(level: LogLevel) {
    if let Some(handle) = RELOAD.get() {
        let _ = handle.reload(filter(level));
        return;
    }
    let (levels, handle) = reload::Layer::new(filter(level));
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .event_format(Line {
            journal: std::env::var_os("JOURNAL_STREAM").is_some(),
        });
    if tracing_subscriber::registry()
        .with(levels)
        .with(lines)
        .try_init()
        .is_ok()
    {
        let _ = RELOAD.set(handle);
    }
}

/// One line per event: priority or `ksight agent:` prefix, the target when it is not
/// ksight, the message and its fields.
struct Line {
    journal: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        if self.journal {
            let priority = match level {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                Level::DEBUG | Level::TRACE => 7,
            };
            write!(writer, "<{priority}>")?;
        } else {
            let word = match level {
                Level::ERROR => "error: ",
                Level::WARN => "warning: ",
                Level::INFO => "",
                Level::DEBUG | Level::TRACE => "debug: ",
            };
            write!(writer, "ksight agent: {word}")?;
        }
        let target = event.metadata().target();
        if !target.starts_with("ksight") {
            write!(writer, "{target}: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Lines as the journal and a terminal get them, levels filtered, and a library's
    /// event (kube-runtime's, as it names its target) passed through with its target.
    #[test]
    fn lines_for_the_journal_and_the_terminal() {
        let capture = |journal: bool, level: LogLevel| {
            let buffer = Buffer::default();
            let out = buffer.clone();
            let lines = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || out.clone())
                .event_format(Line { journal });
            let subscriber = tracing_subscriber::registry()
                .with(filter(level))
                .with(lines);
            tracing::subscriber::with_default(subscriber, || {
                error!("cannot listen on 127.0.0.1:1: in use");
                warning!(pods = 3, "slow");
                info!("running");
                debug!("details");
                tracing::warn!(target: "kube_runtime::watcher", "watch failed");
                tracing::info!(target: "hyper::client", "chatter");
            });
            String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
        };
        assert_eq!(
            capture(true, LogLevel::Info),
            "<3>cannot listen on 127.0.0.1:1: in use\n<4>slow pods=3\n<6>running\n\
             <4>kube_runtime::watcher: watch failed\n"
        );
        assert_eq!(
            capture(false, LogLevel::Debug),
            "ksight agent: error: cannot listen on 127.0.0.1:1: in use\n\
             ksight agent: warning: slow pods=3\nksight agent: running\n\
             ksight agent: debug: details\n\
             ksight agent: warning: kube_runtime::watcher: watch failed\n"
        );
        assert_eq!(
            capture(false, LogLevel::Error),
            "ksight agent: error: cannot listen on 127.0.0.1:1: in use\n"
        );
    }
}
