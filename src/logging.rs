//! Structured logs with `tracing`: `RUST_LOG` sets verbosity (default
//! `info`), `CHUMP_LOG_FORMAT=json` gives JSON lines. Logs go to stderr.
//!
//! Lines are written by a thread of their own (`tracing-appender`'s
//! non-blocking writer), buffered and flushed whenever its queue runs dry:
//! a check logging a line costs a copy into that queue, not a `write` to
//! stderr on a runtime thread, and a burst of lines is one `write`. No
//! line is dropped (a full queue makes the logging thread wait); the
//! [`LogGuard`] that [`init`] returns flushes what is queued when dropped,
//! so `main` holds it to the end.

use std::io::{BufWriter, Stderr};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines queued for the writer thread at most before logging waits.
const QUEUED_LINES: usize = 16_384;

/// Keeps the writer thread; dropping it writes out what is still queued.
#[must_use = "logs queued when the guard is dropped are written then; hold it until exit"]
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Installs the global subscriber. A second call keeps the first one's
/// subscriber (and its guard does nothing).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("chump-log")
        .finish(stderr_buffered());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    LogGuard { _writer: guard }
}

/// stderr behind a buffer: the writer thread flushes it each time its queue
/// is empty, so lines reach stderr in batches but never wait for more.
fn stderr_buffered() -> BufWriter<Stderr> {
    BufWriter::with_capacity(64 * 1024, std::io::stderr())
}
