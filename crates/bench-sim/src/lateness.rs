//! How late the simulator was against its own plan, counted without locks.
//!
//! A simulator that runs behind its schedule models a slower engine than its preset: what a client
//! measures is then the machine, not the model. Two instants are planned and can be missed:
//!
//! - a **step**'s end (the batching engine sleeps until it; waking late delays every token of
//!   the step, and a step more than [`STEP_TOLERANCE`] late restarts the schedule from the
//!   moment it woke, so that time is lost to the model for good);
//! - an **event**'s hand-over (the moment the reply gives a token's bytes to the connection,
//!   against the moment the token was due).
//!
//! Each is a [`Lateness`]: a count, the late ones, an exact maximum and sum, and cumulative
//! buckets that `/metrics` exports as a Prometheus histogram, so a client scraping it before and
//! after a run gets the run's own distribution from the difference of two scrapes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A step that ends later than this after its planned end counts as late, and the schedule
/// restarts from when it woke. Precise sleeps (the engine's own thread) wake within ~0.1 ms.
pub const STEP_TOLERANCE: Duration = Duration::from_millis(1);

/// An event handed over later than this after its token was due counts as late. Fixed timing
/// sleeps on the runtime's timer, whose resolution is 1 ms, so up to ~1 ms is the timer.
pub const EVENT_TOLERANCE: Duration = Duration::from_millis(2);

/// Upper bounds of the lateness buckets, in seconds (the last bucket is `+Inf`).
pub const BUCKETS_S: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
];

/// Lateness of one kind of planned instant.
#[derive(Debug)]
pub struct Lateness {
    tolerance: Duration,
    /// Non-cumulative counts per bucket; the last one is above every bound.
    buckets: [AtomicU64; BUCKETS_S.len() + 1],
    count: AtomicU64,
    late: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Lateness {
    pub fn new(tolerance: Duration) -> Self {
        Self {
            tolerance,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            late: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    /// Records one planned instant that happened `late` after its plan.
    pub fn note(&self, late: Duration) {
        let secs = late.as_secs_f64();
        let bucket = BUCKETS_S
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS_S.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if late > self.tolerance {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatenessSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LatenessSnapshot {
            count: load(&self.count),
            late: load(&self.late),
            sum_seconds: load(&self.sum_ns) as f64 / 1e9,
            max_seconds: load(&self.max_ns) as f64 / 1e9,
            buckets: self.buckets.iter().map(load).collect(),
            tolerance_seconds: self.tolerance.as_secs_f64(),
        }
    }
}

/// A [`Lateness`] read at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatenessSnapshot {
    pub count: u64,
    /// Instants later than the tolerance.
    pub late: u64,
    pub sum_seconds: f64,
    pub max_seconds: f64,
    /// Non-cumulative counts per bucket of [`BUCKETS_S`], then the overflow.
    pub buckets: Vec<u64>,
    pub tolerance_seconds: f64,
}

impl LatenessSnapshot {
    /// The `q`-quantile (0..=1), interpolated linearly inside its bucket (as Prometheus'
    /// `histogram_quantile`); `None` without observations. Exact to within one bucket.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { BUCKETS_S[i - 1] };
                let Some(&hi) = BUCKETS_S.get(i) else {
                    // Above the last bound: the largest value is the best estimate.
                    return Some(self.max_seconds);
                };
                let within = (rank - below as f64) / n as f64;
                return Some((lo + (hi - lo) * within).min(self.max_seconds));
            }
            below += n;
        }
        Some(self.max_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_late_ones_and_keeps_the_exact_maximum() {
        let l = Lateness::new(Duration::from_millis(2));
        for us in [10, 300, 1_500, 2_500, 40_000] {
            l.note(Duration::from_micros(us));
        }
        let s = l.snapshot();
        assert_eq!((s.count, s.late), (5, 2));
        assert!((s.max_seconds - 0.04).abs() < 1e-12);
        assert!((s.sum_seconds - 0.044_31).abs() < 1e-9);
        assert_eq!(s.buckets.iter().sum::<u64>(), 5);
        // 10 us falls in the first bucket, 40 ms in (20 ms, 50 ms].
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[9], 1);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket_and_never_exceed_the_maximum() {
        let l = Lateness::new(Duration::from_millis(2));
        for _ in 0..100 {
            l.note(Duration::from_micros(150));
        }
        let s = l.snapshot();
        // All in (0.1 ms, 0.2 ms]: the median interpolates to 0.15 ms, p99 is capped at the max.
        let median = s.quantile_seconds(0.5).expect("observations");
        assert!((median - 0.000_15).abs() < 1e-9, "{median}");
        assert!(s.quantile_seconds(0.99).expect("observations") <= 0.000_15 + 1e-12);
        let empty = Lateness::new(Duration::ZERO).snapshot();
        assert_eq!(empty.quantile_seconds(0.99), None);
        let l = Lateness::new(Duration::ZERO);
        l.note(Duration::from_secs(3));
        assert_eq!(l.snapshot().quantile_seconds(0.99), Some(3.0));
    }
}
