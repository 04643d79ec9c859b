//! Repeated runs of one configuration: each headline figure as a mean with a confidence interval
//! over the runs, and whether two sets of runs differ beyond their intervals.
//!
//! The interval is Student's t over the runs' values: a run is the independent unit (the server's
//! state, the batch's phase, the prompts drawn), while requests within a run share all of it, so
//! resampling requests would understate how much a run can differ from the next. With n runs,
//! `mean ± t(0.975, n - 1) x s / sqrt(n)`, s the sample standard deviation (n - 1 in the
//! denominator). Two runs at least are needed.

use crate::{Metric, ResultFile, Stat};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The confidence of every interval here.
pub const CONFIDENCE: f64 = 0.95;

/// One figure over repeated runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub runs: u64,
    pub mean: f64,
    /// The 95% confidence interval of the mean.
    pub low: f64,
    pub high: f64,
    /// Sample standard deviation over mean (0 when the mean is 0).
    pub cv: f64,
}

impl Interval {
    /// The interval of `values` (one per run); `None` for fewer than two or any not finite.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n < 2 || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .ok()?
            .inverse_cdf(0.5 + CONFIDENCE / 2.0);
        let half = t * sd / (n as f64).sqrt();
        Some(Self {
            runs: n as u64,
            mean,
            low: mean - half,
            high: mean + half,
            cv: if mean == 0.0 { 0.0 } else { sd / mean.abs() },
        })
    }

    /// Whether `other`'s interval lies wholly above or below this one: a difference the runs'
    /// own spread does not explain.
    pub fn differs_from(&self, other: &Self) -> bool {
        self.high < other.low || other.high < self.low
    }
}

/// A headline figure of a run, as the result files of every producer give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Figure {
    InputThroughput,
    OutputThroughput,
    MedianTtft,
    P99Ttft,
    MedianTpot,
    P99Tpot,
    MedianItl,
    MedianE2el,
}

impl Figure {
    pub const ALL: [Self; 8] = [
        Self::InputThroughput,
        Self::OutputThroughput,
        Self::MedianTtft,
        Self::P99Ttft,
        Self::MedianTpot,
        Self::P99Tpot,
        Self::MedianItl,
        Self::MedianE2el,
    ];

    /// Its name, with its unit.
    pub fn name(self) -> &'static str {
        match self {
            Self::InputThroughput => "input tok/s",
            Self::OutputThroughput => "output tok/s",
            Self::MedianTtft => "median TTFT (ms)",
            Self::P99Ttft => "P99 TTFT (ms)",
            Self::MedianTpot => "median TPOT (ms)",
            Self::P99Tpot => "P99 TPOT (ms)",
            Self::MedianItl => "median ITL (ms)",
            Self::MedianE2el => "median E2EL (ms)",
        }
    }

    /// Its value in `file` (throughputs in tok/s, latencies in ms), as measured.
    pub fn of(self, file: &ResultFile) -> Option<f64> {
        let latency = |m, s| file.latency_ms(m, s);
        match self {
            Self::InputThroughput => file.input_throughput(),
            Self::OutputThroughput => file.output_throughput,
            Self::MedianTtft => latency(Metric::Ttft, Stat::Median),
            Self::P99Ttft => latency(Metric::Ttft, Stat::Percentile(99.0)),
            Self::MedianTpot => latency(Metric::Tpot, Stat::Median),
            Self::P99Tpot => latency(Metric::Tpot, Stat::Percentile(99.0)),
            Self::MedianItl => latency(Metric::Itl, Stat::Median),
            Self::MedianE2el => latency(Metric::E2el, Stat::Median),
        }
    }
}

/// The file that sums up repeated runs, beside the first run's result: `x.json` ->
/// `x.repeats.json`.
pub fn path_for(first: &std::path::Path) -> std::path::PathBuf {
    crate::beside(first, ".repeats.json")
}

/// What `x.repeats.json` holds: the runs' files, how the intervals were computed, and each
/// headline figure's interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatsFile {
    /// The runs' result files (names, beside this file).
    pub runs: Vec<String>,
    /// `student_t`: Student's t over the runs' values (docs/metrics.md says why).
    pub method: String,
    pub confidence: f64,
    /// Figure name (with its unit) to interval.
    pub figures: std::collections::BTreeMap<String, Interval>,
}

impl RepeatsFile {
    /// Writes the summary to `path`, whole or not at all.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        crate::atomic::write_json(path, self)
    }

    /// The summary of `runs`, (file name, result) each.
    pub fn of(runs: &[(String, ResultFile)]) -> Self {
        let files: Vec<ResultFile> = runs.iter().map(|(_, f)| f.clone()).collect();
        Self {
            runs: runs.iter().map(|(n, _)| n.clone()).collect(),
            method: "student_t".into(),
            confidence: CONFIDENCE,
            figures: intervals(&files)
                .into_iter()
                .map(|(f, i)| (f.name().to_string(), i))
                .collect(),
        }
    }
}

/// Every figure's interval over `files`, the runs of one configuration; figures some run lacks
/// are left out.
pub fn intervals(files: &[ResultFile]) -> Vec<(Figure, Interval)> {
    Figure::ALL
        .iter()
        .filter_map(|&f| {
            let values: Option<Vec<f64>> = files.iter().map(|file| f.of(file)).collect();
            Some((f, Interval::of(&values?)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_students_t_over_the_runs() {
        // Mean 10, sample sd 1 over 4 runs: t(0.975, 3) = 3.182446, half-width 1.591223.
        let i = Interval::of(&[9.0, 10.0, 11.0, 10.0]).expect("an interval");
        let sd = (2.0f64 / 3.0).sqrt();
        let half = 3.182_446_305_284_263 * sd / 2.0;
        assert!((i.mean - 10.0).abs() < 1e-12);
        assert!((i.high - i.low - 2.0 * half).abs() < 1e-6, "{i:?}");
        assert!((i.cv - sd / 10.0).abs() < 1e-12);
        // Two runs: t(0.975, 1) = 12.706.
        let two = Interval::of(&[1.0, 3.0]).expect("an interval");
        assert!(
            (two.high - two.mean - 12.706_204_736).abs() < 1e-6,
            "{two:?}"
        );
        assert!(Interval::of(&[1.0]).is_none());
        assert!(Interval::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn only_intervals_apart_differ() {
        let a = Interval::of(&[10.0, 10.2, 9.8]).expect("a");
        let overlapping = Interval::of(&[10.1, 10.3, 9.9]).expect("b");
        let apart = Interval::of(&[12.0, 12.1, 11.9]).expect("c");
        assert!(!a.differs_from(&overlapping));
        assert!(a.differs_from(&apart) && apart.differs_from(&a));
    }
}
