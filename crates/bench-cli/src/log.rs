//! Logging: the library's `tracing` warnings and errors reach the user on stderr, printed above
//! any progress bars instead of through them.
//!
//! The level comes from `RUST_LOG` (`warn` when it is not set). Each event is written through
//! `bench_core::progress::say`, which prints it above the bars on a terminal and as a plain line
//! elsewhere.

use std::io::Write;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber once; a second call (tests calling `main_with` twice) does nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AboveBars)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// A writer that hands each formatted event to the progress display.
#[derive(Debug, Clone, Copy)]
pub struct AboveBars;

/// One event's text, printed when the formatter is done with it.
#[derive(Debug, Default)]
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end();
        if !text.is_empty() {
            bench_core::progress::say(text);
        }
    }
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line::default()
    }
}
