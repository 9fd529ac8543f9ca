//! Logging on stderr: `--log-format text` (default) or `json` (one JSON
//! object per line, tracing-subscriber's formatter, with the current span's
//! fields such as `execution_id`). Text has colours only on a terminal and
//! no timestamps when stderr is the systemd journal (`JOURNAL_STREAM`
//! names it; the journal stamps each line itself).
//!
//! `-v`/`-vv`/`RUST_LOG` choose what is logged, except inside a task
//! execution: task::execution runs each in a span `execution` whose field
//! `log_level` is the task's `log_level` (DataSync's OFF/BASIC/TRANSFER),
//! and [`TaskLevels`] lets that decide for the execution's own events —
//! `off` nothing at all, `basic` syncmount's INFO, WARN and ERROR events
//! (its start, end and errors) whatever `-v` says, `transfer` also the
//! per-object lines (target `syncmount::transfer`, written by the engine's
//! report). Outside an execution (a `sync`, a mount, the daemon itself)
//! `-v` alone decides, so `sync -v` shows the per-object lines too.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{fmt, EnvFilter, Registry};

use crate::config::LogLevel;
use crate::engine::report::TRANSFER_TARGET;
use crate::shared::Escaped;

pub use crate::shared::LOG_FORMAT_ENV;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The span task::execution runs each execution in, and its field naming
/// the task's log level.
const EXECUTION_SPAN: &str = "execution";
const LEVEL_FIELD: &str = "log_level";
/// Sets up the global subscriber.
pub fn init(verbose: u8, format: LogFormat) {
    // Set before any thread exists; children inherit the format.
    std::env::set_var(
        LOG_FORMAT_ENV,
        match format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
    );
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // Other crates only at error: the SDK warns about things users did on purpose.
    let env = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("syncmount={default},error")));
    let filter = TaskLevels { env };
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text if stderr_is_journal() => fmt::layer()
            .fmt_fields(EscapedFields)
            .without_time()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        // Colours only on a terminal: a detached mount or a daemon logs to a file.
        LogFormat::Text => fmt::layer()
            .fmt_fields(EscapedFields)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The fields of a text log line (the message too, and the spans'),
/// formatted as tracing-subscriber does and then shown through
/// [`Escaped`]: whatever a key holds, a line stays one line on stderr and
/// carries no terminal escape. (JSON lines escape control characters
/// themselves.)
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut plain = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut plain), fields)?;
        write!(writer, "{}", Escaped(&plain))
    }
}

/// Whether stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(given) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = given.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// The log level of an execution span, kept in its extensions.
#[derive(Clone, Copy, Debug)]
struct TaskLog(LogLevel);

struct LevelVisitor(Option<LogLevel>);

impl Visit for LevelVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == LEVEL_FIELD {
            self.0 = LogLevel::parse(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == LEVEL_FIELD {
            self.0 = LogLevel::parse(format!("{value:?}").trim_matches('"'));
        }
    }
}

/// Whether an event inside an execution whose task logs at `level` is
/// logged: Some(decision), or None to leave it to `-v`/`RUST_LOG`.
pub fn task_decides(level: LogLevel, meta: &Metadata<'_>) -> Option<bool> {
    if level == LogLevel::Off {
        return Some(false);
    }
    if meta.target() == TRANSFER_TARGET {
        return Some(level == LogLevel::Transfer);
    }
    (meta.target().starts_with("syncmount") && *meta.level() <= Level::INFO).then_some(true)
}

fn is_execution_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.name() == EXECUTION_SPAN && meta.target().starts_with("syncmount::task")
}

/// `-v`/`RUST_LOG` (the `env` filter), overruled inside executions by the
/// task's log level.
struct TaskLevels {
    env: EnvFilter,
}

impl TaskLevels {
    fn task_level<S>(cx: &Context<'_, S>) -> Option<LogLevel>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let current = cx.lookup_current()?;
        current
            .scope()
            .find_map(|span| span.extensions().get::<TaskLog>().map(|t| t.0))
    }
}

impl<S> Filter<S> for TaskLevels
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if is_execution_span(meta) {
            return true;
        }
        if meta.is_event() {
            if let Some(decided) = Self::task_level(cx).and_then(|l| task_decides(l, meta)) {
                return decided;
            }
        }
        Filter::<S>::enabled(&self.env, meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_execution_span(meta) {
            return Interest::always();
        }
        let env = Filter::<S>::callsite_enabled(&self.env, meta);
        if !meta.is_event() {
            return env;
        }
        // Whether it is logged depends on the execution it happens in.
        let ours = meta.target().starts_with("syncmount") && *meta.level() <= Level::INFO;
        if ours || !env.is_never() {
            Interest::sometimes()
        } else {
            env
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.env).map(|l| l.max(LevelFilter::INFO))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        if is_execution_span(attrs.metadata()) {
            let mut v = LevelVisitor(None);
            attrs.record(&mut v);
            if let (Some(level), Some(span)) = (v.0, cx.span(id)) {
                span.extensions_mut().insert(TaskLog(level));
            }
        }
        Filter::<S>::on_new_span(&self.env, attrs, id, cx)
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        Filter::<S>::on_record(&self.env, id, values, cx)
    }

    fn on_enter(&self, id: &Id, cx: Context<'_, S>) {
        Filter::<S>::on_enter(&self.env, id, cx)
    }

    fn on_exit(&self, id: &Id, cx: Context<'_, S>) {
        Filter::<S>::on_exit(&self.env, id, cx)
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        Filter::<S>::on_close(&self.env, id, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_level_decides_for_its_executions_events() {
        use tracing::callsite::Identifier;
        struct Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let meta = |target: &'static str, level: Level| {
            Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], Identifier(&CS)),
                tracing::metadata::Kind::EVENT,
            )
        };
        let object = meta(TRANSFER_TARGET, Level::INFO);
        let info = meta("syncmount::task::execution", Level::INFO);
        let debug = meta("syncmount::engine::run", Level::DEBUG);
        let sdk = meta("aws_smithy_runtime", Level::ERROR);
        assert_eq!(task_decides(LogLevel::Off, &info), Some(false));
        assert_eq!(task_decides(LogLevel::Off, &sdk), Some(false));
        assert_eq!(task_decides(LogLevel::Basic, &object), Some(false));
        assert_eq!(task_decides(LogLevel::Basic, &info), Some(true));
        assert_eq!(task_decides(LogLevel::Transfer, &object), Some(true));
        assert_eq!(
            task_decides(LogLevel::Transfer, &debug),
            None,
            "-vv decides"
        );
        assert_eq!(
            task_decides(LogLevel::Basic, &sdk),
            None,
            "RUST_LOG decides"
        );
    }
}
