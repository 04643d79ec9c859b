//! The client's own cost, so every result can say whether the client or the server was the limit.
//!
//! - Runtime lag: a task asks to sleep [`PROBE_PERIOD`] over and over and records how late it
//!   wakes. When the client's threads are saturated, every stream's read is late by about as much,
//!   so this is the delay between data being readable and its events being timestamped.
//! - CPU time of the process (`getrusage`, to the microsecond) and its peak RSS (`/proc/self`,
//!   Linux; absent elsewhere).

use crate::stats::Distribution;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the lag probe wakes.
pub const PROBE_PERIOD: Duration = Duration::from_millis(5);

/// Samples runtime wake-up lateness until dropped or stopped.
#[derive(Debug)]
pub struct LagProbe {
    samples: Arc<Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LagProbe {
    pub fn start() -> Self {
        let samples = Arc::new(Mutex::new(Vec::with_capacity(4096)));
        let sink = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            loop {
                let asked = Instant::now();
                tokio::time::sleep(PROBE_PERIOD).await;
                let late = asked.elapsed().saturating_sub(PROBE_PERIOD);
                if let Ok(mut s) = sink.lock() {
                    s.push(late.as_secs_f64() * 1e3);
                }
            }
        });
        Self { samples, task }
    }

    /// Lateness in milliseconds (tokio's timer has 1 ms granularity, so up to ~1 ms is normal).
    pub fn stop(self) -> Distribution {
        self.task.abort();
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        Distribution::from_samples(&samples, &[50.0, 99.0])
    }
}

/// User plus system CPU time of this process (every thread) so far, to the microsecond.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn cpu_time() -> Option<Duration> {
    // SAFETY: rusage is plain data, and getrusage fills the one it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let micros = |t: libc::timeval| -> Option<u64> {
        Some(u64::try_from(t.tv_sec).ok()? * 1_000_000 + u64::try_from(t.tv_usec).ok()?)
    };
    Some(Duration::from_micros(
        micros(usage.ru_utime)? + micros(usage.ru_stime)?,
    ))
}

#[cfg(not(unix))]
pub fn cpu_time() -> Option<Duration> {
    None
}

/// Peak resident set size in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_are_plausible_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 1 << 20));
        }
        if cfg!(unix) {
            // Spin until the clock moves: it counts this thread's work, finer than a 10 ms tick.
            let start = cpu_time().expect("CPU time");
            let mut x = 0u64;
            while cpu_time().expect("CPU time") - start < Duration::from_micros(500) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let spent = cpu_time().expect("CPU time") - start;
            assert!(spent < Duration::from_millis(5), "{spent:?}");
        }
    }
}
