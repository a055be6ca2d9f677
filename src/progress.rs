//! A progress line per portal on long runs, only when stderr is a terminal and logs are text:
//! cron and container logs never see it. Log lines are written through it so they do not
//! garble the bars.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static BARS: OnceLock<Option<MultiProgress>> = OnceLock::new();

/// Decide once, at start-up.
pub fn init(enabled: bool) {
    BARS.get_or_init(|| enabled.then(MultiProgress::new));
}

fn bars() -> Option<&'static MultiProgress> {
    BARS.get().and_then(Option::as_ref)
}

/// A spinner line for one portal, or nothing when progress is off.
pub fn portal(portal_id: &str) -> Option<ProgressBar> {
    let bar = bars()?.add(ProgressBar::new_spinner());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {msg}")
            .expect("a valid template"),
    );
    bar.set_prefix(portal_id.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// The writer for logs: straight to stderr, or around the bars when they are shown.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match bars() {
            Some(m) => m.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
