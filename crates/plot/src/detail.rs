//! Charts drawn from the per-request files beside the results (`x.requests.jsonl`,
//! `bench_result::requests`): the distribution of TTFT and TPOT per concurrency, and one run's
//! timeline. Pure, like [`crate::series`]: lines in, panels out.
//!
//! Times are converted to the modelled deployment's for runs against a sped-up simulator, as the
//! result figures are ([`crate::load`]).

use crate::load::Run;
use crate::series::{Panel, Secondary, Series, Style};
use bench_result::requests::RequestLine;

/// A run and its requests, times in the modelled deployment's milliseconds and seconds.
#[derive(Debug, Clone)]
pub struct Detailed {
    pub run: Run,
    pub requests: Vec<RequestLine>,
}

/// Most points a distribution line is drawn with (evenly spaced ranks; the extremes kept).
pub const CDF_POINTS: usize = 400;

/// Reads `run`'s per-request file; a sped-up simulator's times are scaled back.
pub fn read(run: &Run) -> Result<Detailed, String> {
    let path = bench_result::requests::path_for(&run.file);
    let mut requests = bench_result::requests::read(&path).map_err(|e| match e {
        bench_result::requests::RequestsError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            format!(
                "{}: no per-request file beside it ({} is written by inferperf's bench and sweep)",
                run.file.display(),
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            )
        }
        other => other.to_string(),
    })?;
    if let Some(scale) = run.sim_time_scale {
        for r in &mut requests {
            scale_times(r, scale);
        }
    }
    Ok(Detailed {
        run: run.clone(),
        requests,
    })
}

fn scale_times(r: &mut RequestLine, scale: f64) {
    r.sent_s *= scale;
    r.end_s *= scale;
    for v in [
        &mut r.queue_ms,
        &mut r.ttft_ms,
        &mut r.tpot_ms,
        &mut r.e2el_ms,
    ]
    .into_iter()
    .flatten()
    {
        *v *= scale;
    }
    for t in r.event_ms.iter_mut().flatten() {
        *t *= scale;
    }
}

/// The empirical distribution of `values`: (value, share of requests at or below it), at most
/// [`CDF_POINTS`] points.
pub fn cdf(values: &mut [f64]) -> Vec<(f64, f64)> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let step = (n as f64 / CDF_POINTS as f64).max(1.0);
    let mut ranks: Vec<usize> = (0..)
        .map(|i| (i as f64 * step) as usize)
        .take_while(|i| *i < n)
        .collect();
    if ranks.last() != Some(&(n - 1)) {
        ranks.push(n - 1);
    }
    ranks
        .into_iter()
        .map(|i| (values[i], (i + 1) as f64 / n as f64))
        .collect()
}

/// The distribution chart of runs at one ISL: TTFT and TPOT, one line per concurrency.
pub fn distributions(runs: &[Detailed]) -> Vec<Panel> {
    let panel = |name: &str, value: fn(&RequestLine) -> Option<f64>| {
        let mut series: Vec<Series> = runs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut values: Vec<f64> = d
                    .requests
                    .iter()
                    .filter(|r| r.ok)
                    .filter_map(value)
                    .filter(|v| v.is_finite())
                    .collect();
                Series {
                    label: format!("conc {} ({} requests)", d.run.conc, values.len()),
                    points: cdf(&mut values),
                    style: Style::Line,
                    point_labels: Vec::new(),
                    errors: Vec::new(),
                    color: Some(i),
                }
            })
            .collect();
        let unit = crate::series::scale_to_seconds_past(&mut series, |p| &mut p.0);
        Panel {
            title: format!("{name} distribution"),
            x_label: format!("{name} ({unit})"),
            y_label: "Share of completed requests at or below".into(),
            series,
            x_ticks: None,
            secondary: None,
        }
    };
    vec![panel("TTFT", |r| r.ttft_ms), panel("TPOT", |r| r.tpot_ms)]
}

/// One run over time: requests in flight (and, in rate mode, waiting for a slot) and output
/// tokens per second, in `bins` intervals from the first send to the last end.
pub fn timeline(d: &Detailed, bins: usize) -> Vec<Panel> {
    let reqs = &d.requests;
    let end = reqs.iter().map(|r| r.end_s).fold(0.0, f64::max);
    let bins = bins.max(1);
    let width = if end > 0.0 { end / bins as f64 } else { 1.0 };
    let mut tokens = vec![0.0; bins];
    let mut spread = false;
    for r in reqs.iter().filter(|r| r.ok) {
        for t in token_times(r, &mut spread) {
            let bin = ((t / width) as usize).min(bins - 1);
            tokens[bin] += 1.0;
        }
    }
    let rate: Vec<(f64, f64)> = tokens
        .iter()
        .enumerate()
        .map(|(i, n)| ((i as f64 + 0.5) * width, n / width))
        .collect();
    let mut series = vec![mean_open(
        "requests in flight (mean per interval)",
        reqs.iter().map(|r| (r.sent_s, r.end_s)),
        (width, bins),
        0,
    )];
    if reqs.iter().any(|r| r.queue_ms.is_some_and(|q| q > 0.0)) {
        series.push(mean_open(
            "waiting for a slot (mean per interval)",
            reqs.iter()
                .map(|r| (r.sent_s - r.queue_ms.unwrap_or(0.0) / 1e3, r.sent_s)),
            (width, bins),
            2,
        ));
    }
    let how = if spread {
        ", tokens spread over each decode"
    } else {
        ""
    };
    vec![Panel {
        title: format!(
            "ISL {}, concurrency {}: {} requests",
            d.run.isl,
            d.run.conc,
            reqs.len()
        ),
        x_label: "Time from the first send (s)".into(),
        y_label: "Requests".into(),
        series,
        x_ticks: None,
        secondary: Some(Secondary {
            y_label: format!("Output tok/s (per {}{how})", short_seconds(width)),
            series: vec![Series {
                label: "output tok/s".into(),
                points: rate,
                style: Style::Line,
                point_labels: Vec::new(),
                errors: Vec::new(),
                color: Some(1),
            }],
        }),
    }]
}

/// The arrival of each output token, s from the first send: each event's time when the file has
/// them (a multi-token event's tokens all at its time), else spread evenly from the first token
/// to the end (and `spread` is set).
fn token_times(r: &RequestLine, spread: &mut bool) -> Vec<f64> {
    let n = r.output_tokens as usize;
    match (&r.event_ms, r.ttft_ms) {
        (Some(events), _) if !events.is_empty() => {
            let per_event = n as f64 / events.len() as f64;
            let mut out = Vec::with_capacity(n);
            let mut owed = 0.0;
            for t in events {
                owed += per_event;
                while owed >= 1.0 - 1e-9 {
                    out.push(r.sent_s + t / 1e3);
                    owed -= 1.0;
                }
            }
            out
        }
        (_, Some(ttft)) if n > 0 => {
            *spread = true;
            let first = r.sent_s + ttft / 1e3;
            let gap = if n > 1 {
                (r.end_s - first).max(0.0) / (n - 1) as f64
            } else {
                0.0
            };
            (0..n).map(|i| first + gap * i as f64).collect()
        }
        _ => Vec::new(),
    }
}

/// How many of `spans` (start, end) are open on average over each of `bins` intervals of
/// `width` seconds from 0: a closed loop's momentary gaps between a request's end and the next
/// send average out instead of drawing a comb.
fn mean_open(
    label: &str,
    spans: impl Iterator<Item = (f64, f64)>,
    (width, bins): (f64, usize),
    color: usize,
) -> Series {
    let mut open_seconds = vec![0.0; bins];
    for (a, b) in spans {
        let (a, b) = (a.max(0.0), b.max(a));
        let first = ((a / width) as usize).min(bins - 1);
        let last = ((b / width) as usize).min(bins - 1);
        for (i, slot) in open_seconds
            .iter_mut()
            .enumerate()
            .take(last + 1)
            .skip(first)
        {
            let (lo, hi) = (i as f64 * width, (i + 1) as f64 * width);
            *slot += (b.min(hi) - a.max(lo)).max(0.0);
        }
    }
    Series {
        label: label.into(),
        points: open_seconds
            .iter()
            .enumerate()
            .map(|(i, t)| ((i as f64 + 0.5) * width, t / width))
            .collect(),
        style: Style::Line,
        point_labels: Vec::new(),
        errors: Vec::new(),
        color: Some(color),
    }
}

fn short_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sent: f64, ttft: f64, end: f64, tokens: u64) -> RequestLine {
        RequestLine {
            ok: true,
            sent_s: sent,
            ttft_ms: Some(ttft),
            tpot_ms: Some(10.0),
            end_s: end,
            output_tokens: tokens,
            events: tokens,
            ..RequestLine::default()
        }
    }

    #[test]
    fn a_distribution_rises_to_one_through_every_rank() {
        let mut v = vec![3.0, 1.0, 2.0, 4.0];
        assert_eq!(
            cdf(&mut v),
            [(1.0, 0.25), (2.0, 0.5), (3.0, 0.75), (4.0, 1.0)]
        );
        let mut many: Vec<f64> = (0..10_000).map(f64::from).collect();
        let pts = cdf(&mut many);
        assert!(pts.len() <= CDF_POINTS + 1);
        assert_eq!(pts.first(), Some(&(0.0, 1e-4)));
        assert_eq!(pts.last(), Some(&(9999.0, 1.0)));
        assert!(cdf(&mut []).is_empty());
    }

    #[test]
    fn in_flight_is_the_mean_over_each_interval() {
        // Two requests over 0-2 s and 1-3 s, in 1-second intervals: 1, 2, 1.
        let s = mean_open("x", [(0.0, 2.0), (1.0, 3.0)].into_iter(), (1.0, 3), 0);
        assert_eq!(s.points, [(0.5, 1.0), (1.5, 2.0), (2.5, 1.0)]);
        // Half an interval open counts a half.
        let s = mean_open("x", [(0.25, 0.75)].into_iter(), (1.0, 1), 0);
        assert_eq!(s.points, [(0.5, 0.5)]);
    }

    #[test]
    fn tokens_are_binned_from_events_or_spread_over_the_decode() {
        let mut with_events = line(1.0, 100.0, 1.3, 4);
        // Two events of two tokens each, at 100 and 300 ms.
        with_events.events = 2;
        with_events.event_ms = Some(vec![100.0, 300.0]);
        let mut spread = false;
        let t = token_times(&with_events, &mut spread);
        assert_eq!(t, [1.1, 1.1, 1.3, 1.3]);
        assert!(!spread);
        let t = token_times(&line(1.0, 100.0, 1.4, 4), &mut spread);
        assert!(spread);
        let expected = [1.1, 1.2, 1.3, 1.4];
        assert!(
            t.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-9),
            "{t:?}"
        );
        // The rate panel counts every token once.
        let run = crate::load::Run {
            file: "x.json".into(),
            name: "x".into(),
            model: None,
            tp: 1,
            gpus: 1,
            deployment: None,
            isl: 64,
            osl: 4,
            conc: 2,
            input_throughput: 0.0,
            output_throughput: 0.0,
            total_throughput: 0.0,
            median_ttft_ms: None,
            p99_ttft_ms: None,
            median_tpot_ms: None,
            p99_tpot_ms: None,
            sim_time_scale: None,
            sim_kept_schedule: None,
            repeats: Vec::new(),
        };
        let d = Detailed {
            run,
            requests: vec![with_events, line(0.0, 100.0, 1.4, 4)],
        };
        let panels = timeline(&d, 7);
        let rate = &panels[0].secondary.as_ref().expect("a rate axis").series[0];
        let width = 1.4 / 7.0;
        let total: f64 = rate.points.iter().map(|p| p.1 * width).sum();
        assert!((total - 8.0).abs() < 1e-9, "{total}");
        let axis = &panels[0].secondary.as_ref().expect("a rate axis").y_label;
        assert!(
            axis.contains("spread"),
            "one request had no event times: {axis}"
        );
    }
}
