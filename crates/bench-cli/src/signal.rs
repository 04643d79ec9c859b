//! SIGINT and SIGTERM: the first one stops the run gracefully (Slurm sends TERM at the time
//! limit); the result is still written and the process exits 130 or 143.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Which signal stopped the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// 128 + the signal number, as shells report it.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }
}

/// Remembers the first signal received.
#[derive(Debug, Clone)]
pub struct Signals {
    got: Arc<AtomicU8>,
}

impl Signals {
    pub fn received(&self) -> Option<Signal> {
        match self.got.load(Ordering::SeqCst) {
            1 => Some(Signal::Interrupt),
            2 => Some(Signal::Terminate),
            _ => None,
        }
    }
}

/// Cancels `stop` on the first SIGINT or SIGTERM.
pub fn listen(stop: CancellationToken) -> Signals {
    let got = Arc::new(AtomicU8::new(0));
    let mark = Arc::clone(&got);
    tokio::spawn(async move {
        let which = wait().await;
        mark.store(which, Ordering::SeqCst);
        eprintln!("signal received: stopping, writing what was measured");
        stop.cancel();
    });
    Signals { got }
}

#[cfg(unix)]
async fn wait() -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 1,
        _ = term.recv() => 2,
    }
}

#[cfg(not(unix))]
async fn wait() -> u8 {
    let _ = tokio::signal::ctrl_c().await;
    1
}

/// What ends a run early: the first SIGINT or SIGTERM, or whoever holds the token cancelling it
/// (a test, or a program that runs benchmarks in-process).
#[derive(Debug, Clone)]
pub struct Stop {
    token: CancellationToken,
    signals: Option<Signals>,
}

impl Stop {
    /// Stops on the first SIGINT or SIGTERM. Must be called inside a Tokio runtime.
    pub fn on_signals() -> Self {
        let token = CancellationToken::new();
        let signals = listen(token.clone());
        Self {
            token,
            signals: Some(signals),
        }
    }

    /// Stops when `token` is cancelled; no signal handler is installed.
    pub fn by(token: CancellationToken) -> Self {
        Self {
            token,
            signals: None,
        }
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The signal that stopped the run; a cancelled token counts as SIGINT.
    pub fn received(&self) -> Option<Signal> {
        match &self.signals {
            Some(s) => s.received(),
            None => self.token.is_cancelled().then_some(Signal::Interrupt),
        }
    }
}
