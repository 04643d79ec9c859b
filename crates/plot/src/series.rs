//! From runs to the series each chart draws. Pure, so every chart's numbers are
//! tested without drawing anything.

use crate::load::Run;
use std::collections::BTreeMap;

/// A named line or point set.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// Text drawn beside each point (same length as `points`), e.g. its concurrency.
    pub point_labels: Vec<String>,
    /// Palette slot; series sharing one (a concurrency's median and P99) share a colour.
    pub color: Option<usize>,
    /// Each point's 95% confidence interval (low, high) over repeated runs, where it has one
    /// (empty, or as long as `points`).
    pub errors: Vec<Option<(f64, f64)>>,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line through many points, without markers (distributions, timelines).
    Line,
    LineWithMarkers,
    DashedWithMarkers,
    GreyPoints,
    /// An SLA frontier: a line with markers, `width` pixels wide. Looser thresholds are drawn
    /// first and wider, so a stricter frontier with the same values shows inside a looser one's
    /// stroke instead of hiding it, and no colours mix.
    Frontier {
        width: u32,
    },
    /// No points: a legend entry saying what a solid (or dashed) line means on this chart.
    Key {
        dashed: bool,
    },
}

impl Style {
    /// Whether a series of this style is in the legend even without points.
    pub fn listed_when_empty(self) -> bool {
        matches!(self, Self::Frontier { .. } | Self::Key { .. })
    }
}

/// One panel of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Ticks at exactly these x values (the ISLs), when set.
    pub x_ticks: Option<Vec<f64>>,
    /// Series drawn against a second y axis on the right.
    pub secondary: Option<Secondary>,
}

/// A right-hand y axis and what is drawn against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Secondary {
    pub y_label: String,
    pub series: Vec<Series>,
}

fn line(label: String, points: Vec<(f64, f64)>, style: Style) -> Series {
    Series {
        label,
        points,
        style,
        point_labels: Vec::new(),
        errors: Vec::new(),
        color: None,
    }
}

/// Distinct sorted ISLs.
fn isls(runs: &[Run]) -> Vec<f64> {
    let mut v: Vec<u64> = runs.iter().map(|r| r.isl).collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter().map(|x| x as f64).collect()
}

/// One line per concurrency (and TP when several are mixed): `value` against ISL.
pub fn per_concurrency(
    runs: &[Run],
    value: impl Fn(&Run) -> Option<f64>,
    style: Style,
    suffix: &str,
) -> Vec<Series> {
    let mixed_tp = runs
        .iter()
        .map(|r| r.tp)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        > 1;
    type Point = ((f64, f64), Option<(f64, f64)>);
    let mut groups: BTreeMap<(u64, u32), Vec<Point>> = BTreeMap::new();
    for r in runs {
        // Repeated runs: the mean of their values, with its interval.
        let point = match repeat_interval(r, &value) {
            Some(i) => Some((i.mean, Some((i.low, i.high)))),
            None => value(r).map(|v| (v, None)),
        };
        if let Some((v, error)) = point.filter(|(v, _)| v.is_finite()) {
            groups
                .entry((r.conc, r.tp))
                .or_default()
                .push(((r.isl as f64, v), error));
        }
    }
    // Colour by concurrency (and TP), so a concurrency keeps its colour across series.
    let mut keys: Vec<(u64, u32)> = runs.iter().map(|r| (r.conc, r.tp)).collect();
    keys.sort_unstable();
    keys.dedup();
    groups
        .into_iter()
        .map(|((conc, tp), mut pts)| {
            pts.sort_by(|a, b| a.0 .0.total_cmp(&b.0 .0));
            let label = if mixed_tp {
                format!("conc {conc} tp{tp}{suffix}")
            } else {
                format!("conc {conc}{suffix}")
            };
            let (points, errors): (Vec<_>, Vec<_>) = pts.into_iter().unzip();
            let mut s = line(label, points, style);
            if errors.iter().any(Option::is_some) {
                s.errors = errors;
            }
            s.color = keys.iter().position(|k| *k == (conc, tp));
            s
        })
        .collect()
}

/// `value`'s 95% interval over `run`'s repeats, when it stands for two or more.
fn repeat_interval(
    run: &Run,
    value: &impl Fn(&Run) -> Option<f64>,
) -> Option<bench_result::repeats::Interval> {
    let values: Option<Vec<f64>> = run.repeats.iter().map(value).collect();
    bench_result::repeats::Interval::of(&values?)
}

/// The throughput chart: prefill (input tok/s) and decode (output tok/s) against ISL.
pub fn throughput(runs: &[Run]) -> Vec<Panel> {
    let ticks = Some(isls(runs));
    vec![
        Panel {
            title: "Prefill".into(),
            x_label: "Token Position (ISL)".into(),
            y_label: "Input tok/s, all GPUs (input tokens / run duration)".into(),
            series: per_concurrency(
                runs,
                |r| Some(r.input_throughput),
                Style::LineWithMarkers,
                "",
            ),
            x_ticks: ticks.clone(),
            secondary: None,
        },
        Panel {
            title: "Decode".into(),
            x_label: "Token Position (ISL)".into(),
            y_label: "Output tok/s, all GPUs".into(),
            series: per_concurrency(
                runs,
                |r| Some(r.output_throughput),
                Style::LineWithMarkers,
                "",
            ),
            x_ticks: ticks,
            secondary: None,
        },
    ]
}

/// The latency chart: median (solid) and P99 (dashed) TTFT and TPOT against ISL.
pub fn latency(runs: &[Run]) -> Vec<Panel> {
    let ticks = Some(isls(runs));
    let both = |median: fn(&Run) -> Option<f64>, p99: fn(&Run) -> Option<f64>| {
        let mut s = per_concurrency(runs, median, Style::LineWithMarkers, " median");
        s.extend(per_concurrency(runs, p99, Style::DashedWithMarkers, " P99"));
        s
    };
    let (ttft, ttft_unit) = in_seconds_past(both(|r| r.median_ttft_ms, |r| r.p99_ttft_ms));
    let (tpot, tpot_unit) = in_seconds_past(both(|r| r.median_tpot_ms, |r| r.p99_tpot_ms));
    vec![
        Panel {
            title: "Time to first token".into(),
            x_label: "Token Position (ISL)".into(),
            y_label: format!("TTFT ({ttft_unit}); solid median, dashed P99"),
            series: ttft,
            x_ticks: ticks.clone(),
            secondary: None,
        },
        Panel {
            title: "Time per output token".into(),
            x_label: "Token Position (ISL)".into(),
            y_label: format!("TPOT ({tpot_unit}); solid median, dashed P99"),
            series: tpot,
            x_ticks: ticks,
            secondary: None,
        },
    ]
}

/// Latencies above this many milliseconds are drawn in seconds.
pub const SECONDS_PAST_MS: f64 = 10_000.0;

/// `series` in milliseconds, or in seconds when any value passes [`SECONDS_PAST_MS`] (an axis of
/// 30,000 ms reads worse than 30 s); returns the unit.
fn in_seconds_past(mut series: Vec<Series>) -> (Vec<Series>, &'static str) {
    let unit = scale_to_seconds_past(&mut series, |p| &mut p.1);
    (series, unit)
}

/// The coordinate `axis` picks of every point in milliseconds, or in seconds when any passes
/// [`SECONDS_PAST_MS`]; returns the unit.
pub fn scale_to_seconds_past(
    series: &mut [Series],
    axis: fn(&mut (f64, f64)) -> &mut f64,
) -> &'static str {
    let max = series
        .iter_mut()
        .flat_map(|s| s.points.iter_mut().map(|p| *axis(p)))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if max <= SECONDS_PAST_MS {
        return "ms";
    }
    for s in series.iter_mut() {
        for p in &mut s.points {
            *axis(p) /= 1e3;
        }
        // Intervals are of the values, on the value axis.
        for (low, high) in s.errors.iter_mut().flatten() {
            *low /= 1e3;
            *high /= 1e3;
        }
    }
    "s"
}

/// For each ISL, the best `value` among runs whose `latency` is at most `limit`.
pub fn frontier(
    runs: &[Run],
    limit: f64,
    value: impl Fn(&Run) -> f64,
    latency: impl Fn(&Run) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut best: BTreeMap<u64, f64> = BTreeMap::new();
    for r in runs {
        if latency(r).is_some_and(|l| l <= limit) {
            let v = value(r);
            if v.is_finite() {
                let e = best.entry(r.isl).or_insert(v);
                *e = e.max(v);
            }
        }
    }
    best.into_iter().map(|(isl, v)| (isl as f64, v)).collect()
}

/// The SLA view: per-GPU throughput against ISL, every run as a grey point, and per threshold
/// the best run that meets it (P99 TTFT for prefill, P99 TPOT for decode).
pub fn sla(runs: &[Run], ttft_limits_s: &[f64], tpot_limits_ms: &[f64]) -> Vec<Panel> {
    let ticks = Some(isls(runs));
    let per_gpu_in = |r: &Run| r.input_throughput / f64::from(r.gpus);
    let per_gpu_out = |r: &Run| r.output_throughput / f64::from(r.gpus);
    // Listed loosest first, each wider than the next stricter one, which is drawn over it.
    let mut prefill: Vec<Series> = ttft_limits_s
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &s)| {
            let pts = frontier(runs, s * 1e3, per_gpu_in, |r| r.p99_ttft_ms);
            let label = format!("P99 TTFT <= {}", seconds_label(s));
            frontier_series(label, pts, ttft_limits_s.len() - i)
        })
        .collect();
    prefill.push(line(
        "every run".into(),
        runs.iter().map(|r| (r.isl as f64, per_gpu_in(r))).collect(),
        Style::GreyPoints,
    ));
    let mut decode: Vec<Series> = tpot_limits_ms
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &ms)| {
            let pts = frontier(runs, ms, per_gpu_out, |r| r.p99_tpot_ms);
            let label = format!("P99 TPOT <= {ms} ms");
            frontier_series(label, pts, tpot_limits_ms.len() - i)
        })
        .collect();
    decode.push(line(
        "every run".into(),
        runs.iter()
            .map(|r| (r.isl as f64, per_gpu_out(r)))
            .collect(),
        Style::GreyPoints,
    ));
    vec![
        Panel {
            title: "Prefill within TTFT SLA".into(),
            x_label: "Token Position (ISL)".into(),
            y_label: "Input tok/s per GPU".into(),
            series: prefill,
            x_ticks: ticks.clone(),
            secondary: None,
        },
        Panel {
            title: "Decode within TPOT SLA".into(),
            x_label: "Token Position (ISL)".into(),
            y_label: "Output tok/s per GPU".into(),
            series: decode,
            x_ticks: ticks,
            secondary: None,
        },
    ]
}

/// One threshold's frontier; `rank` counts from the strictest (1). A threshold no run meets
/// says so in its label, and keeps its place in the legend.
fn frontier_series(label: String, points: Vec<(f64, f64)>, rank: usize) -> Series {
    let label = match points.len() {
        0 => format!("{label}: met by no run"),
        _ => label,
    };
    let width = 2 + 3 * (rank as u32 - 1);
    line(label, points, Style::Frontier { width })
}

fn seconds_label(s: f64) -> String {
    if s < 1.0 {
        format!("{} ms", (s * 1e3).round())
    } else {
        format!("{s} s")
    }
}

/// The Pareto view: total throughput per GPU against interactivity, one curve per ISL, each point
/// labelled with its concurrency.
pub fn pareto(runs: &[Run]) -> Vec<Panel> {
    let mut by_isl: BTreeMap<u64, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_isl.entry(r.isl).or_default().push(r);
    }
    let ttft: Vec<Series> = by_isl
        .iter()
        .enumerate()
        .map(|(slot, (isl, rs))| {
            let mut pts: Vec<(f64, f64)> = rs
                .iter()
                .filter_map(|r| Some((r.interactivity()?, r.median_ttft_ms?)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: format!("ISL {isl} median TTFT"),
                points: pts,
                style: Style::DashedWithMarkers,
                point_labels: Vec::new(),
                errors: Vec::new(),
                color: Some(slot),
            }
        })
        .collect();
    let (ttft, ttft_unit) = in_seconds_past(ttft);
    let series = by_isl
        .into_iter()
        .enumerate()
        .map(|(slot, (isl, mut rs))| {
            rs.retain(|r| r.interactivity().is_some());
            rs.sort_by(|a, b| {
                a.interactivity()
                    .unwrap_or(0.0)
                    .total_cmp(&b.interactivity().unwrap_or(0.0))
            });
            Series {
                label: format!("ISL {isl}"),
                points: rs
                    .iter()
                    .map(|r| {
                        (
                            r.interactivity().unwrap_or(0.0),
                            r.total_throughput / f64::from(r.gpus),
                        )
                    })
                    .collect(),
                style: Style::LineWithMarkers,
                point_labels: rs.iter().map(|r| format!("c{}", r.conc)).collect(),
                errors: Vec::new(),
                color: Some(slot),
            }
        })
        .collect();
    let mut series: Vec<Series> = series;
    series.push(line(
        "solid: total tok/s per GPU".into(),
        Vec::new(),
        Style::Key { dashed: false },
    ));
    series.push(line(
        "dashed: median TTFT (right)".into(),
        Vec::new(),
        Style::Key { dashed: true },
    ));
    vec![Panel {
        title: "Throughput vs interactivity".into(),
        x_label: "Interactivity (tok/s/user)".into(),
        y_label: "Total tok/s per GPU, solid".into(),
        series,
        x_ticks: None,
        secondary: Some(Secondary {
            y_label: format!("Median TTFT ({ttft_unit}), dashed"),
            series: ttft,
        }),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        tp: u32,
        isl: u64,
        conc: u64,
        input: f64,
        output: f64,
        p99_ttft_ms: f64,
        p99_tpot_ms: f64,
    ) -> Run {
        Run {
            file: format!("r_tp{tp}_isl{isl}_osl128_conc{conc}.json").into(),
            name: "r".into(),
            model: None,
            tp,
            gpus: tp,
            deployment: None,
            isl,
            osl: 128,
            conc,
            input_throughput: input,
            output_throughput: output,
            total_throughput: input + output,
            median_ttft_ms: Some(p99_ttft_ms / 2.0),
            p99_ttft_ms: Some(p99_ttft_ms),
            median_tpot_ms: Some(p99_tpot_ms / 2.0),
            p99_tpot_ms: Some(p99_tpot_ms),
            sim_time_scale: None,
            sim_kept_schedule: None,
            repeats: Vec::new(),
        }
    }

    #[test]
    fn one_line_per_concurrency_sorted_by_isl() {
        let runs = vec![
            run(4, 2048, 8, 10.0, 1.0, 1.0, 1.0),
            run(4, 1024, 8, 20.0, 2.0, 1.0, 1.0),
            run(4, 1024, 4, 5.0, 3.0, 1.0, 1.0),
        ];
        let p = throughput(&runs);
        assert_eq!(p[0].series.len(), 2);
        assert_eq!(p[0].series[0].label, "conc 4");
        assert_eq!(p[0].series[1].points, vec![(1024.0, 20.0), (2048.0, 10.0)]);
        assert_eq!(p[1].series[1].points, vec![(1024.0, 2.0), (2048.0, 1.0)]);
        assert_eq!(p[0].x_ticks, Some(vec![1024.0, 2048.0]));
    }

    #[test]
    fn mixed_tp_values_get_their_own_lines() {
        let runs = vec![
            run(4, 1024, 8, 1.0, 1.0, 1.0, 1.0),
            run(8, 1024, 8, 2.0, 1.0, 1.0, 1.0),
        ];
        let labels: Vec<String> = throughput(&runs)[0]
            .series
            .iter()
            .map(|s| s.label.clone())
            .collect();
        assert_eq!(labels, vec!["conc 8 tp4", "conc 8 tp8"]);
    }

    #[test]
    fn frontier_takes_the_best_run_within_the_limit_per_gpu() {
        let runs = vec![
            run(4, 1024, 4, 4000.0, 400.0, 400.0, 30.0),
            run(4, 1024, 16, 16000.0, 1200.0, 1500.0, 80.0),
            run(4, 2048, 4, 8000.0, 300.0, 900.0, 40.0),
        ];
        let panels = sla(&runs, &[0.5, 2.0], &[50.0]);
        // Loosest band first. <= 2 s: both ISLs, the best of each, per GPU.
        assert_eq!(panels[0].series[0].label, "P99 TTFT <= 2 s");
        assert_eq!(
            panels[0].series[0].points,
            vec![(1024.0, 4000.0), (2048.0, 2000.0)]
        );
        // <= 500 ms: only the conc-4 run at ISL 1024 qualifies: 4000 tok/s / 4 GPUs.
        assert_eq!(panels[0].series[1].label, "P99 TTFT <= 500 ms");
        assert_eq!(panels[0].series[1].points, vec![(1024.0, 1000.0)]);
        assert_eq!(
            panels[1].series[0].points,
            vec![(1024.0, 100.0), (2048.0, 75.0)]
        );
        assert_eq!(
            panels[0].series[2].points.len(),
            3,
            "every run is a grey point"
        );
        assert_eq!(panels[0].series[2].style, Style::GreyPoints);
    }

    #[test]
    fn looser_frontiers_are_wider_and_a_threshold_no_run_meets_says_so() {
        let runs = vec![
            run(1, 1024, 4, 100.0, 10.0, 400.0, 30.0),
            run(1, 2048, 4, 200.0, 10.0, 900.0, 40.0),
        ];
        let panels = sla(&runs, &[0.1, 0.5, 2.0], &[50.0]);
        let widths: Vec<u32> = panels[0].series[..3]
            .iter()
            .map(|s| match s.style {
                Style::Frontier { width } => width,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(widths.windows(2).all(|w| w[0] > w[1]), "{widths:?}");
        // Equal frontiers (<= 2 s and <= 500 ms are met by the same runs at ISL 1024) stay apart
        // by width; 100 ms is met by none, and says so.
        assert_eq!(
            panels[0].series[2].label,
            "P99 TTFT <= 100 ms: met by no run"
        );
        assert!(panels[0].series[2].points.is_empty());
        assert_eq!(panels[0].series[1].points, vec![(1024.0, 100.0)]);
    }

    #[test]
    fn latencies_past_ten_seconds_are_drawn_in_seconds() {
        let quick = vec![run(1, 1024, 4, 1.0, 1.0, 900.0, 30.0)];
        let p = latency(&quick);
        assert!(p[0].y_label.starts_with("TTFT (ms)"), "{}", p[0].y_label);
        let slow = vec![
            run(1, 1024, 4, 1.0, 1.0, 900.0, 30.0),
            run(1, 8192, 4, 1.0, 1.0, 30_000.0, 30.0),
        ];
        let p = latency(&slow);
        assert!(p[0].y_label.starts_with("TTFT (s)"), "{}", p[0].y_label);
        let p99 = p[0]
            .series
            .iter()
            .find(|s| s.label.ends_with("P99"))
            .expect("a P99 line");
        assert_eq!(p99.points, vec![(1024.0, 0.9), (8192.0, 30.0)]);
        assert!(p[1].y_label.starts_with("TPOT (ms)"), "TPOT stays in ms");
    }

    #[test]
    fn pareto_divides_by_tp_and_labels_concurrency() {
        let runs = vec![
            run(2, 1024, 4, 100.0, 100.0, 1.0, 20.0),
            run(2, 1024, 16, 300.0, 100.0, 1.0, 40.0),
        ];
        let p = pareto(&runs);
        let s = &p[0].series[0];
        // Interactivity = 1000 / median TPOT (10 ms and 20 ms).
        assert_eq!(s.points, vec![(50.0, 200.0), (100.0, 100.0)]);
        assert_eq!(s.point_labels, vec!["c16", "c4"]);
        // TTFT on the secondary axis, in ms as the latency chart draws it, same colour as its
        // ISL's curve.
        let secondary = p[0].secondary.as_ref().expect("secondary axis");
        let ttft = &secondary.series[0];
        assert_eq!(ttft.points, vec![(50.0, 0.5), (100.0, 0.5)]);
        assert_eq!(ttft.color, s.color);
        assert_eq!(secondary.y_label, "Median TTFT (ms), dashed");
        // Past 10,000 ms, in seconds.
        let slow = vec![run(1, 1024, 4, 100.0, 100.0, 30_000.0, 20.0)];
        let secondary = pareto(&slow)[0].secondary.clone().expect("secondary axis");
        assert_eq!(secondary.series[0].points, vec![(100.0, 15.0)]);
        assert_eq!(secondary.y_label, "Median TTFT (s), dashed");
    }

    #[test]
    fn nan_and_missing_values_are_dropped_not_drawn() {
        let mut r = run(1, 1024, 4, f64::NAN, 1.0, 1.0, 1.0);
        r.p99_ttft_ms = None;
        let p = throughput(&[r.clone()]);
        assert!(p[0].series.is_empty() || p[0].series[0].points.is_empty());
        assert!(frontier(&[r], 1e9, |x| x.output_throughput, |x| x.p99_ttft_ms).is_empty());
    }
}
