//! `--kind compare`: a campaign's configurations side by side.
//!
//! A campaign's folder holds one folder per configuration (`<campaign>/<config>/`, as
//! `sweep --campaign` writes them). Three charts compare them, every throughput per GPU (each
//! file's declared deployment's GPUs, else its TP), so configurations of different sizes compare
//! fairly:
//! - the frontier: total tok/s per GPU against interactivity, one Pareto frontier per
//!   configuration, one panel per input length;
//! - the SLA view: per configuration, the best prefill (within P99 TTFT thresholds) and decode
//!   (within P99 TPOT thresholds) per GPU against ISL, one column per configuration, each row on
//!   one scale;
//! - prefill and decode throughput per GPU against ISL, one line per concurrency, one column
//!   per configuration, each row on one scale.

use crate::load::{self, Run};
use crate::series::{self, Panel, Series, Style};
use std::path::Path;

/// One configuration's runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Its name (the files' declared deployment name, else its folder's) and size.
    pub label: String,
    pub runs: Vec<Run>,
}

/// Each configuration folder in `dir` with usable result files matching `pattern`, in name
/// order; the files skipped, with why.
pub fn load(dir: &Path, pattern: &str) -> Result<(Vec<Config>, Vec<String>), String> {
    let mut folders: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("--results-dir {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    let mut configs = Vec::new();
    let mut warnings = Vec::new();
    for folder in folders {
        let (runs, skipped) = load::load_dir(&folder, pattern)?;
        warnings.extend(skipped);
        if runs.is_empty() {
            continue;
        }
        let runs = load::merge_repeats(runs);
        let folder_name = folder
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let name = runs[0].deployment.clone().unwrap_or(folder_name);
        configs.push(Config {
            label: format!("{name}: {}", size(&runs)),
            runs,
        });
    }
    Ok((configs, warnings))
}

/// "8 GPUs, TP 8" (ranges when the runs disagree).
fn size(runs: &[Run]) -> String {
    let span = |v: Vec<u32>| {
        let (lo, hi) = (v.iter().min(), v.iter().max());
        match (lo, hi) {
            (Some(a), Some(b)) if a == b => a.to_string(),
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => "?".into(),
        }
    };
    let gpus = span(runs.iter().map(|r| r.gpus).collect());
    let tp = span(runs.iter().map(|r| r.tp).collect());
    let s = if gpus == "1" { "" } else { "s" };
    format!("{gpus} GPU{s}, TP {tp}")
}

fn per_gpu_total(r: &Run) -> f64 {
    r.total_throughput / f64::from(r.gpus.max(1))
}

/// The points no other point beats on both interactivity and throughput per GPU, by rising
/// interactivity, each with its concurrency.
pub fn pareto_frontier(runs: &[&Run]) -> Vec<((f64, f64), u64)> {
    let mut pts: Vec<((f64, f64), u64)> = runs
        .iter()
        .filter_map(|r| Some(((r.interactivity()?, per_gpu_total(r)), r.conc)))
        .filter(|((x, y), _)| x.is_finite() && y.is_finite())
        .collect();
    // From the most interactive down, a point stays when it gives more throughput than every
    // more interactive one.
    pts.sort_by(|a, b| b.0 .0.total_cmp(&a.0 .0));
    let mut best = f64::NEG_INFINITY;
    let mut out: Vec<((f64, f64), u64)> = pts
        .into_iter()
        .filter(|((_, y), _)| {
            let keep = *y > best;
            best = best.max(*y);
            keep
        })
        .collect();
    out.reverse();
    out
}

/// Total throughput per GPU against interactivity: one panel per input length, one frontier
/// per configuration.
pub fn frontier(configs: &[Config]) -> Vec<Panel> {
    let mut isls: Vec<u64> = configs
        .iter()
        .flat_map(|c| c.runs.iter().map(|r| r.isl))
        .collect();
    isls.sort_unstable();
    isls.dedup();
    isls.iter()
        .map(|&isl| {
            let series = configs
                .iter()
                .enumerate()
                .map(|(slot, c)| {
                    let at: Vec<&Run> = c.runs.iter().filter(|r| r.isl == isl).collect();
                    let front = pareto_frontier(&at);
                    Series {
                        label: c.label.clone(),
                        points: front.iter().map(|(p, _)| *p).collect(),
                        style: Style::LineWithMarkers,
                        point_labels: front.iter().map(|(_, c)| format!("c{c}")).collect(),
                        errors: Vec::new(),
                        color: Some(slot),
                    }
                })
                .collect();
            Panel {
                title: format!("ISL {isl}: frontier per configuration"),
                x_label: "Interactivity (tok/s/user)".into(),
                y_label: "Total tok/s per GPU".into(),
                series,
                x_ticks: None,
                secondary: None,
            }
        })
        .collect()
}

/// Two rows of one panel per configuration: `row(runs)` gives a configuration's prefill and
/// decode panels, titled here with the configuration.
fn side_by_side(configs: &[Config], row: impl Fn(&[Run]) -> Vec<Panel>) -> Vec<Panel> {
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for c in configs {
        let mut panels = row(&c.runs).into_iter();
        for (out, panel) in [&mut prefill, &mut decode].into_iter().zip(&mut panels) {
            out.push(Panel {
                title: format!("{}: {}", c.label, panel.title),
                ..panel
            });
        }
    }
    prefill.extend(decode);
    prefill
}

/// The SLA view per configuration: prefill within TTFT thresholds above, decode within TPOT
/// thresholds below, a column per configuration.
pub fn sla(configs: &[Config], ttft_limits_s: &[f64], tpot_limits_ms: &[f64]) -> Vec<Panel> {
    side_by_side(configs, |runs| {
        series::sla(runs, ttft_limits_s, tpot_limits_ms)
    })
}

/// Prefill and decode throughput per GPU against ISL, one line per concurrency: prefill above,
/// decode below, a column per configuration.
pub fn throughput(configs: &[Config]) -> Vec<Panel> {
    // A concurrency keeps its colour across the configurations.
    let mut all: Vec<u64> = configs
        .iter()
        .flat_map(|c| c.runs.iter().map(|r| r.conc))
        .collect();
    all.sort_unstable();
    all.dedup();
    side_by_side(configs, |runs| {
        // The slots series::throughput gives: by (concurrency, TP) among these runs.
        let mut local: Vec<(u64, u32)> = runs.iter().map(|r| (r.conc, r.tp)).collect();
        local.sort_unstable();
        local.dedup();
        let global = |slot: Option<usize>| {
            let conc = local.get(slot?)?.0;
            all.iter().position(|c| *c == conc)
        };
        let per_gpu: Vec<Run> = runs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.divide_throughputs(f64::from(r.gpus.max(1)));
                r
            })
            .collect();
        series::throughput(&per_gpu)
            .into_iter()
            .map(|mut p| {
                for s in &mut p.series {
                    s.color = global(s.color);
                }
                p
            })
            .map(|p| Panel {
                y_label: p
                    .y_label
                    .replace(
                        "Input tok/s, all GPUs (input tokens / run duration)",
                        "Input tok/s per GPU",
                    )
                    .replace("Output tok/s, all GPUs", "Output tok/s per GPU"),
                ..p
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conc: u64, gpus: u32, total: f64, tpot_ms: f64) -> Run {
        Run {
            file: format!("c_tp{gpus}_isl64_osl8_conc{conc}.json").into(),
            name: "c".into(),
            model: None,
            tp: gpus,
            gpus,
            deployment: None,
            isl: 64,
            osl: 8,
            conc,
            input_throughput: total / 2.0,
            output_throughput: total / 2.0,
            total_throughput: total,
            median_ttft_ms: Some(10.0),
            p99_ttft_ms: Some(20.0),
            median_tpot_ms: Some(tpot_ms),
            p99_tpot_ms: Some(tpot_ms * 2.0),
            sim_time_scale: None,
            sim_kept_schedule: None,
            repeats: Vec::new(),
        }
    }

    #[test]
    fn the_frontier_keeps_points_no_other_beats_per_gpu() {
        // Interactivity 1000/tpot: 100, 50, 40, 25 tok/s/user.
        let runs = [
            run(1, 4, 400.0, 10.0),
            run(2, 4, 800.0, 20.0),
            // Less interactive than conc 2 and no more throughput: dominated.
            run(3, 4, 760.0, 25.0),
            run(8, 4, 2000.0, 40.0),
        ];
        let refs: Vec<&Run> = runs.iter().collect();
        let front = pareto_frontier(&refs);
        assert_eq!(
            front,
            vec![((25.0, 500.0), 8), ((50.0, 200.0), 2), ((100.0, 100.0), 1)]
        );
    }

    fn tp4() -> Config {
        Config {
            label: "tp4".into(),
            runs: vec![run(4, 4, 4000.0, 20.0)],
        }
    }

    #[test]
    fn configurations_of_different_sizes_are_compared_per_gpu() {
        let small = tp4();
        let big = Config {
            label: "tp8".into(),
            runs: vec![run(4, 8, 6000.0, 20.0)],
        };
        let panels = frontier(&[small.clone(), big.clone()]);
        assert_eq!(panels.len(), 1);
        let ys: Vec<f64> = panels[0].series.iter().map(|s| s.points[0].1).collect();
        assert_eq!(ys, [1000.0, 750.0]);
        let rows = throughput(&[small, big]);
        assert_eq!(rows.len(), 4, "prefill row then decode row, a column each");
        assert!(
            rows[0].title.starts_with("tp4: Prefill"),
            "{}",
            rows[0].title
        );
        assert!(
            rows[3].title.starts_with("tp8: Decode"),
            "{}",
            rows[3].title
        );
        assert_eq!(rows[1].series[0].points, vec![(64.0, 375.0)]);
        assert_eq!(rows[1].y_label, "Input tok/s per GPU");
        // Concurrency 4 has one colour in both columns, whatever else each measured.
        let other = Config {
            label: "tp8".into(),
            runs: vec![run(2, 8, 1.0, 20.0), run(4, 8, 6000.0, 20.0)],
        };
        let rows = throughput(&[tp4(), other]);
        let colour_of_conc4 = |panel: &Panel| {
            panel
                .series
                .iter()
                .find(|s| s.label == "conc 4")
                .and_then(|s| s.color)
        };
        assert_eq!(colour_of_conc4(&rows[0]), colour_of_conc4(&rows[1]));
        assert_eq!(colour_of_conc4(&rows[0]), Some(1));
    }
}
