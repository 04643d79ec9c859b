//! Progress on stderr: a bar on a terminal, a plain line every few seconds in a log file (a Slurm
//! job's output), nothing when disabled.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on stderr, in the process's one [`bars`].
    Bar,
    Lines,
    Off,
}

impl ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise; `Off` when `disabled`.
    pub fn detect(disabled: bool) -> Self {
        match (disabled, std::io::stderr().is_terminal()) {
            (true, _) => Self::Off,
            (false, true) => Self::Bar,
            (false, false) => Self::Lines,
        }
    }
}

/// The process's one set of progress bars: every bar is drawn in it, so a line printed with
/// [`say`] goes above them instead of through them.
pub fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Prints `line` on stderr above any progress bars (as a plain line when there are none).
pub fn say(line: &str) {
    let b = bars();
    if b.is_hidden() || b.println(line).is_err() {
        eprintln!("{line}");
    }
}

/// Gap between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// A cheap, clonable progress counter for one phase.
#[derive(Clone, Debug)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    label: String,
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    started: Instant,
    bar: Option<ProgressBar>,
    lines: bool,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    pub fn new(label: &str, total: usize, mode: &ProgressMode) -> Self {
        let bar = (*mode == ProgressMode::Bar).then(|| {
            let bar = bars().add(ProgressBar::new(total as u64));
            let style = ProgressStyle::with_template(
                "{prefix:>8} {bar:40.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        let started = Instant::now();
        let lines = matches!(mode, ProgressMode::Lines);
        if lines {
            eprintln!("{label}: 0/{total} requests");
        }
        Self {
            inner: Arc::new(Inner {
                label: label.to_string(),
                total,
                done: AtomicUsize::new(0),
                failed: AtomicUsize::new(0),
                started,
                bar,
                lines,
                last_line: std::sync::Mutex::new(started),
            }),
        }
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Self {
        Self::new("", 0, &ProgressMode::Off)
    }

    /// One request ended.
    pub fn inc(&self, success: bool) {
        let i = &self.inner;
        let done = i.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !success {
            let failed = i.failed.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(bar) = &i.bar {
                bar.set_message(format!("{failed} failed"));
            }
        }
        if let Some(bar) = &i.bar {
            bar.inc(1);
        }
        if i.lines {
            let mut last = i.last_line.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= LINE_EVERY || done == i.total {
                *last = Instant::now();
                eprintln!("{}", self.line(done));
            }
        }
    }

    fn line(&self, done: usize) -> String {
        let i = &self.inner;
        let elapsed = i.started.elapsed().as_secs_f64();
        let pct = 100.0 * done as f64 / i.total.max(1) as f64;
        let eta = if done > 0 {
            elapsed / done as f64 * (i.total - done.min(i.total)) as f64
        } else {
            0.0
        };
        format!(
            "{}: {done}/{} requests ({pct:.0}%), {} failed, elapsed {elapsed:.0}s, eta {eta:.0}s",
            i.label,
            i.total,
            i.failed.load(Ordering::Relaxed)
        )
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}
