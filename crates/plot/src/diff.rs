//! Two result sets side by side: per cell (TP, ISL, OSL, concurrency) measured in both, which
//! headline figures differ beyond their 95% intervals over repeated runs
//! (`bench_result::repeats`). The question asked before and after every server change.

use crate::load::Run;
use bench_result::repeats::Interval;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What the two sets say of one figure in one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The intervals do not overlap.
    Differs,
    /// They overlap: the runs' own spread explains the difference.
    WithinNoise,
    /// A side has fewer than two runs of the cell: there is no interval to judge by.
    NoInterval,
}

/// One figure of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// (TP, ISL, OSL, concurrency).
    pub cell: (u32, u64, u64, u64),
    pub figure: &'static str,
    pub baseline: f64,
    pub candidate: f64,
    pub baseline_interval: Option<Interval>,
    pub candidate_interval: Option<Interval>,
    pub verdict: Verdict,
}

impl Row {
    /// Candidate against baseline, in percent.
    pub fn change(&self) -> f64 {
        if self.baseline == 0.0 {
            0.0
        } else {
            (self.candidate / self.baseline - 1.0) * 100.0
        }
    }
}

type Figure = (&'static str, fn(&Run) -> Option<f64>);

/// The figures compared, with their units (in the modelled deployment's time for the simulator).
pub const FIGURES: [Figure; 6] = [
    ("input tok/s", |r| Some(r.input_throughput)),
    ("output tok/s", |r| Some(r.output_throughput)),
    ("median TTFT (ms)", |r| r.median_ttft_ms),
    ("P99 TTFT (ms)", |r| r.p99_ttft_ms),
    ("median TPOT (ms)", |r| r.median_tpot_ms),
    ("P99 TPOT (ms)", |r| r.p99_tpot_ms),
];

/// The runs of each cell.
fn cells(runs: &[Run]) -> BTreeMap<(u32, u64, u64, u64), Vec<&Run>> {
    let mut out: BTreeMap<_, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        out.entry((r.tp, r.isl, r.osl, r.conc)).or_default().push(r);
    }
    out
}

/// Every figure of every cell measured in both sets, in cell order.
pub fn compare(baseline: &[Run], candidate: &[Run]) -> Vec<Row> {
    let (a, b) = (cells(baseline), cells(candidate));
    let mut rows = Vec::new();
    for (cell, base_runs) in &a {
        let Some(cand_runs) = b.get(cell) else {
            continue;
        };
        for (figure, value) in FIGURES {
            let values =
                |runs: &[&Run]| -> Option<Vec<f64>> { runs.iter().map(|r| value(r)).collect() };
            let (Some(bv), Some(cv)) = (values(base_runs), values(cand_runs)) else {
                continue;
            };
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let (bi, ci) = (Interval::of(&bv), Interval::of(&cv));
            let verdict = match (&bi, &ci) {
                (Some(x), Some(y)) if x.differs_from(y) => Verdict::Differs,
                (Some(_), Some(_)) => Verdict::WithinNoise,
                _ => Verdict::NoInterval,
            };
            rows.push(Row {
                cell: *cell,
                figure,
                baseline: mean(&bv),
                candidate: mean(&cv),
                baseline_interval: bi,
                candidate_interval: ci,
                verdict,
            });
        }
    }
    rows
}

/// The comparison as a table to read.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<26} {:<18} {:>22} {:>22} {:>8}  verdict\n",
        "cell", "figure", "baseline (95% CI)", "candidate (95% CI)", "change"
    );
    let side = |mean: f64, i: &Option<Interval>| match i {
        Some(i) => format!("{mean:.1} ±{:.1}", (i.high - i.low) / 2.0),
        None => format!("{mean:.1} (1 run)"),
    };
    for r in rows {
        let (tp, isl, osl, conc) = r.cell;
        let verdict = match r.verdict {
            Verdict::Differs => "DIFFERS",
            Verdict::WithinNoise => "within noise",
            Verdict::NoInterval => "no interval (needs 2+ runs a side)",
        };
        let _ = writeln!(
            out,
            "{:<26} {:<18} {:>22} {:>22} {:>+7.1}%  {verdict}",
            format!("tp{tp} isl{isl} osl{osl} conc{conc}"),
            r.figure,
            side(r.baseline, &r.baseline_interval),
            side(r.candidate, &r.candidate_interval),
            r.change()
        );
    }
    out
}

/// The comparison as CSV.
pub fn csv(rows: &[Row]) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bound = |i: &Option<Interval>, f: fn(&Interval) -> f64| i.as_ref().map(f);
    w.write_record([
        "tp",
        "isl",
        "osl",
        "concurrency",
        "figure",
        "baseline",
        "baseline_low",
        "baseline_high",
        "candidate",
        "candidate_low",
        "candidate_high",
        "change_percent",
        "verdict",
    ])
    .map_err(|e| e.to_string())?;
    for r in rows {
        let (tp, isl, osl, conc) = r.cell;
        let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
        let verdict = match r.verdict {
            Verdict::Differs => "differs",
            Verdict::WithinNoise => "within_noise",
            Verdict::NoInterval => "no_interval",
        };
        w.write_record([
            tp.to_string(),
            isl.to_string(),
            osl.to_string(),
            conc.to_string(),
            r.figure.to_string(),
            r.baseline.to_string(),
            opt(bound(&r.baseline_interval, |i| i.low)),
            opt(bound(&r.baseline_interval, |i| i.high)),
            r.candidate.to_string(),
            opt(bound(&r.candidate_interval, |i| i.low)),
            opt(bound(&r.candidate_interval, |i| i.high)),
            format!("{:.3}", r.change()),
            verdict.to_string(),
        ])
        .map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}
