//! The `plot` command: a folder of result files in, PNG or SVG charts out.
//!
//! [`load`] reads files from inferperf, the Python sweep script and `vllm bench serve` into one
//! shape; [`series`] turns runs into series (pure functions); [`render`] draws them.

pub mod compare;
pub mod detail;
pub mod diff;
pub mod load;
pub mod render;
pub mod series;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use std::path::{Path, PathBuf};

/// Which chart to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Prefill and decode throughput against token position, one line per concurrency.
    Throughput,
    /// Per-GPU throughput within P99 TTFT and TPOT thresholds.
    Sla,
    /// Total throughput per GPU against interactivity, one curve per ISL.
    Pareto,
    /// Median and P99 TTFT and TPOT against ISL.
    Latency,
    /// The distribution of TTFT and TPOT, one line per concurrency: one chart per ISL, from
    /// the per-request files beside the results.
    Cdf,
    /// One run over time: requests in flight (and waiting for a slot) and output tok/s: one
    /// chart per result file matched, from the per-request file beside it.
    Timeline,
    /// The four charts drawn from the results' figures (throughput, sla, pareto, latency), each
    /// beside the output name.
    All,
    /// Not a chart: per cell measured in both --baseline and --results-dir, which figures
    /// differ beyond their 95% intervals over repeated runs (a table; CSV with --output).
    Diff,
    /// A campaign's configurations side by side (--results-dir is the campaign's folder, one
    /// folder per configuration): per-GPU frontiers, SLA views and prefill/decode throughput.
    Compare,
}

/// `plot`: turn a results folder into charts.
#[derive(Debug, Clone, Parser)]
#[command(name = "plot", version, about, long_about = None)]
pub struct PlotArgs {
    /// Folder of result files (inferperf's, the Python script's, `vllm bench serve`'s).
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// File pattern inside the folder.
    #[arg(long, default_value = "*.json")]
    pub glob: String,
    /// Output file (.svg for SVG, PNG otherwise, whatever the extension), or a folder to write
    /// each chart into under its kind's name [default: KIND.png, e.g. throughput.png].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Chart title [default: from the run names in the files].
    #[arg(long)]
    pub title: Option<String>,
    /// Which chart.
    #[arg(long, value_enum, default_value_t = Kind::Throughput)]
    pub kind: Kind,
    /// P99 TTFT thresholds for the SLA chart, in seconds.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,5,10")]
    pub ttft_slas: Vec<f64>,
    /// P99 TPOT thresholds for the SLA chart, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "50,75,100,200")]
    pub tpot_slas: Vec<f64>,
    /// Image width in pixels (200 to 8192).
    #[arg(long, default_value_t = 1600)]
    pub width: u32,
    /// Image height in pixels (150 to 8192).
    #[arg(long, default_value_t = 650)]
    pub height: u32,
    /// With --kind diff: the result folder to compare --results-dir against.
    #[arg(long, value_name = "DIR")]
    pub baseline: Option<PathBuf>,
}

/// What to draw, as plain values: what [`draw`] takes from the command line or from a program
/// (`sweep --simulate` draws its demo's charts this way).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub results_dir: PathBuf,
    pub glob: String,
    /// A file, a folder, or `None` for `<kind>.png` here (see [`PlotArgs::output`]).
    pub output: Option<PathBuf>,
    pub title: Option<String>,
    pub kind: Kind,
    /// P99 TTFT thresholds, seconds.
    pub ttft_slas: Vec<f64>,
    /// P99 TPOT thresholds, milliseconds.
    pub tpot_slas: Vec<f64>,
    pub width: u32,
    pub height: u32,
    /// The folder `--kind diff` compares against.
    pub baseline: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            results_dir: "results".into(),
            glob: "*.json".into(),
            output: None,
            title: None,
            kind: Kind::Throughput,
            ttft_slas: vec![0.5, 1.0, 2.0, 5.0, 10.0],
            tpot_slas: vec![50.0, 75.0, 100.0, 200.0],
            width: 1600,
            height: 650,
            baseline: None,
        }
    }
}

impl From<&PlotArgs> for Options {
    fn from(a: &PlotArgs) -> Self {
        Self {
            results_dir: a.results_dir.clone(),
            glob: a.glob.clone(),
            output: a.output.clone(),
            title: a.title.clone(),
            kind: a.kind,
            ttft_slas: a.ttft_slas.clone(),
            tpot_slas: a.tpot_slas.clone(),
            width: a.width,
            height: a.height,
            baseline: a.baseline.clone(),
        }
    }
}

/// A flag's value that cannot work: `plot` exits 2 for it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The largest side of a chart, in pixels.
pub const MAX_SIDE: u32 = 8_192;

/// Draws the chart(s) `args` ask for and returns the files written.
pub fn run(args: &PlotArgs) -> anyhow::Result<Vec<PathBuf>> {
    draw(&Options::from(args))
}

fn check(o: &Options) -> Result<(), UsageError> {
    if !(200..=MAX_SIDE).contains(&o.width) || !(150..=MAX_SIDE).contains(&o.height) {
        return Err(UsageError(format!(
            "--width/--height: from 200 x 150 to {MAX_SIDE} x {MAX_SIDE} pixels, got {} x {}",
            o.width, o.height
        )));
    }
    for (flag, v) in [("--ttft-slas", &o.ttft_slas), ("--tpot-slas", &o.tpot_slas)] {
        if !v.iter().all(|x| x.is_finite() && *x > 0.0) {
            return Err(UsageError(format!(
                "{flag}: thresholds must be numbers above 0"
            )));
        }
    }
    let dir = &o.results_dir;
    if !dir.exists() {
        return Err(UsageError(format!(
            "--results-dir {}: no such folder",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "--results-dir {}: a file, not a folder; give the folder that holds the result files",
            dir.display()
        )));
    }
    Ok(())
}

/// Draws the chart(s) and returns the files written.
pub fn draw(o: &Options) -> anyhow::Result<Vec<PathBuf>> {
    check(o)?;
    match o.kind {
        Kind::Diff => return diff_dirs(o),
        Kind::Compare => return compare_configs(o),
        _ => {}
    }
    let (runs, warnings) = load::load_dir(&o.results_dir, &o.glob).map_err(UsageError)?;
    for w in &warnings {
        eprintln!("warning: skipped {w}");
    }
    anyhow::ensure!(
        !runs.is_empty(),
        "no usable result files in {} matching `{}`",
        o.results_dir.display(),
        o.glob
    );
    let groups: std::collections::BTreeMap<Configuration, Vec<load::Run>> = configurations(runs)
        .into_iter()
        .map(|(config, runs)| (config, load::merge_repeats(runs)))
        .collect();
    if groups.len() > 1 {
        let names: Vec<&str> = groups.keys().map(|k| k.label.as_str()).collect();
        eprintln!(
            "note: {} configurations in {}: {}; each gets charts of its own",
            groups.len(),
            o.results_dir.display(),
            names.join("; ")
        );
    }
    let kinds: Vec<Kind> = match o.kind {
        Kind::All => vec![Kind::Throughput, Kind::Sla, Kind::Pareto, Kind::Latency],
        k => vec![k],
    };
    let mut written = Vec::new();
    for (config, runs) in &groups {
        let title = o
            .title
            .clone()
            .unwrap_or_else(|| default_title(runs, config.model.as_deref()));
        for &kind in &kinds {
            let mut path = output_path(o.output.as_deref(), o.kind, kind);
            if groups.len() > 1 {
                path = with_suffix(&path, &config.slug);
            }
            for chart in charts(o, kind, runs, &title, &path) {
                draw_one(o, &chart)?;
                written.push(chart.path);
            }
        }
    }
    anyhow::ensure!(
        !written.is_empty(),
        "no chart drawn: the --kind {} charts need the per-request files (x.requests.jsonl) \
         beside the result files, which inferperf's bench and sweep write",
        o.kind.name()
    );
    Ok(written)
}

/// What makes runs comparable on one line: the same name, model, output length, and real or
/// simulated time. Runs that differ in any of them are never drawn as one configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Configuration {
    /// "name, OSL 128" (", simulated" for the simulator); "name (model), OSL 128" when runs of
    /// one name served different models.
    pub label: String,
    /// The same, for a file name: "name_osl128" ("_sim"; "name_model_osl128").
    pub slug: String,
    /// The model, where it tells runs of one name apart.
    pub model: Option<String>,
}

/// The runs of each configuration.
pub fn configurations(
    runs: Vec<load::Run>,
) -> std::collections::BTreeMap<Configuration, Vec<load::Run>> {
    use std::collections::{BTreeMap, BTreeSet};
    type Key = (String, u64, bool);
    let key = |r: &load::Run| -> Key { (r.name.clone(), r.osl, r.sim_time_scale.is_some()) };
    let mut models: BTreeMap<Key, BTreeSet<Option<String>>> = BTreeMap::new();
    for r in &runs {
        models.entry(key(r)).or_default().insert(r.model.clone());
    }
    let mut groups = BTreeMap::<Configuration, Vec<load::Run>>::new();
    for r in runs {
        let (name, osl, sim) = key(&r);
        // The model is named only where it tells runs of one name apart.
        let model = r
            .model
            .clone()
            .filter(|_| models.get(&key(&r)).is_some_and(|m| m.len() > 1))
            .unwrap_or_default();
        let (label_model, slug_model) = if model.is_empty() {
            (String::new(), String::new())
        } else {
            (format!(" ({model})"), format!("_{model}"))
        };
        let config = Configuration {
            model: Some(model.clone()).filter(|m| !m.is_empty()),
            label: format!(
                "{name}{label_model}, OSL {osl}{}",
                if sim { ", simulated" } else { "" }
            ),
            slug: format!(
                "{name}{slug_model}_osl{osl}{}",
                if sim { "_sim" } else { "" }
            )
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect(),
        };
        groups.entry(config).or_default().push(r);
    }
    groups
}

/// `dir/throughput.png` with `slug` -> `dir/throughput_<slug>.png`.
fn with_suffix(path: &Path, slug: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}_{slug}.{}", ext.to_string_lossy()),
        None => format!("{stem}_{slug}"),
    };
    path.with_file_name(name)
}

/// `--kind compare`: the frontier, SLA and throughput charts of a campaign's configurations,
/// `<output>_<chart>.png` (`compare_<chart>.png` here without --output).
fn compare_configs(o: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let (configs, warnings) = compare::load(&o.results_dir, &o.glob).map_err(UsageError)?;
    for w in &warnings {
        eprintln!("warning: skipped {w}");
    }
    anyhow::ensure!(
        !configs.is_empty(),
        "no configuration folder with usable result files in {}: --kind compare takes a \
         campaign's folder, which holds one folder per configuration",
        o.results_dir.display()
    );
    let campaign = o.title.clone().unwrap_or_else(|| {
        let name = o
            .results_dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let runs: Vec<load::Run> = configs.iter().flat_map(|c| c.runs.clone()).collect();
        format!(
            "Campaign {name}: {} configurations (OSL {}){}",
            configs.len(),
            osls(&runs),
            title_notes(&runs)
        )
    });
    let base = output_path(o.output.as_deref(), Kind::Compare, Kind::Compare);
    let charts = [
        ("frontier", compare::frontier(&configs), false),
        (
            "sla",
            compare::sla(&configs, &o.ttft_slas, &o.tpot_slas),
            true,
        ),
        ("throughput", compare::throughput(&configs), true),
    ];
    let mut written = Vec::new();
    for (slug, panels, by_configuration) in charts {
        let path = with_suffix(&base, slug);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--output: cannot create {}", dir.display()))?;
        }
        // The frontier: a row of input lengths. The others: a column per configuration, a row
        // per phase, each row on one scale.
        let grid = if by_configuration {
            render::Grid {
                columns: configs.len(),
                shared_y: true,
            }
        } else {
            render::Grid::row(panels.len())
        };
        let rows = panels.len().div_ceil(grid.columns).max(1) as u32;
        render::render_grid(
            &path,
            &campaign,
            &panels,
            grid,
            (o.width, (o.height * rows).min(MAX_SIDE)),
        )
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("drawing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
        written.push(path);
    }
    Ok(written)
}

/// `--kind diff`: prints the comparison, and writes it as CSV to `--output` when given.
fn diff_dirs(o: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let Some(baseline) = &o.baseline else {
        return Err(UsageError(
            "--kind diff: give --baseline DIR, the results to compare --results-dir against".into(),
        )
        .into());
    };
    check(&Options {
        results_dir: baseline.clone(),
        ..o.clone()
    })
    .map_err(|e| UsageError(e.0.replace("--results-dir", "--baseline")))?;
    if let Some(out) = &o.output {
        if out.extension().is_none_or(|e| e != "csv") {
            return Err(UsageError(format!(
                "--output {}: the diff is written as CSV; give a .csv file",
                out.display()
            ))
            .into());
        }
    }
    let load = |dir: &Path| -> anyhow::Result<Vec<load::Run>> {
        let (runs, warnings) = load::load_dir(dir, &o.glob).map_err(UsageError)?;
        for w in &warnings {
            eprintln!("warning: skipped {w}");
        }
        anyhow::ensure!(
            !runs.is_empty(),
            "no usable result files in {} matching `{}`",
            dir.display(),
            o.glob
        );
        Ok(runs)
    };
    let rows = diff::compare(&load(baseline)?, &load(&o.results_dir)?);
    anyhow::ensure!(
        !rows.is_empty(),
        "no cell (TP, ISL, OSL, concurrency) was measured in both {} and {}",
        baseline.display(),
        o.results_dir.display()
    );
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(diff::table(&rows).as_bytes())?;
        stdout.flush()?;
    }
    let differ = rows
        .iter()
        .filter(|r| r.verdict == diff::Verdict::Differs)
        .count();
    eprintln!(
        "{differ} of {} figures differ beyond their 95% intervals",
        rows.len()
    );
    match &o.output {
        Some(out) => {
            let text = diff::csv(&rows).map_err(anyhow::Error::msg)?;
            bench_result::atomic::write(out, text.as_bytes())
                .with_context(|| format!("--output {}", out.display()))?;
            eprintln!("wrote {}", out.display());
            Ok(vec![out.clone()])
        }
        None => Ok(Vec::new()),
    }
}

/// One chart to draw: where, its title, its panels, and how many runs it shows.
struct Chart {
    path: PathBuf,
    title: String,
    panels: Vec<series::Panel>,
    runs: usize,
}

/// The charts of `kind` for one configuration's `runs`: one for the figures' kinds, one per
/// ISL for the distributions, one per run for timelines (runs without a per-request file are
/// skipped with a warning).
fn charts(o: &Options, kind: Kind, runs: &[load::Run], title: &str, path: &Path) -> Vec<Chart> {
    let one = |panels| {
        vec![Chart {
            path: path.to_path_buf(),
            title: title.to_string(),
            panels,
            runs: runs.len(),
        }]
    };
    match kind {
        Kind::Throughput => one(series::throughput(runs)),
        Kind::Sla => one(series::sla(runs, &o.ttft_slas, &o.tpot_slas)),
        Kind::Pareto => one(series::pareto(runs)),
        Kind::Latency | Kind::All | Kind::Diff | Kind::Compare => one(series::latency(runs)),
        Kind::Cdf => {
            let detailed = detailed(runs);
            let isls: std::collections::BTreeSet<u64> =
                detailed.iter().map(|d| d.run.isl).collect();
            isls.iter()
                .map(|&isl| {
                    let at: Vec<detail::Detailed> = detailed
                        .iter()
                        .filter(|d| d.run.isl == isl)
                        .cloned()
                        .collect();
                    Chart {
                        path: if isls.len() > 1 {
                            with_suffix(path, &format!("isl{isl}"))
                        } else {
                            path.to_path_buf()
                        },
                        title: format!("{title}, ISL {isl}"),
                        panels: detail::distributions(&at),
                        runs: at.len(),
                    }
                })
                .collect()
        }
        Kind::Timeline => detailed(&runs.iter().flat_map(each_run).cloned().collect::<Vec<_>>())
            .iter()
            .map(|d| Chart {
                path: if runs.len() > 1 {
                    let stem = d.run.file.file_stem().unwrap_or_default();
                    with_suffix(path, &stem.to_string_lossy())
                } else {
                    path.to_path_buf()
                },
                title: title.to_string(),
                panels: detail::timeline(d, TIMELINE_BINS),
                runs: 1,
            })
            .collect(),
    }
}

/// Intervals a timeline's token rate is counted in.
const TIMELINE_BINS: usize = 120;

/// The runs with their per-request files (repeats of a cell pooled into one); those without
/// one are named in a warning.
fn detailed(runs: &[load::Run]) -> Vec<detail::Detailed> {
    runs.iter()
        .filter_map(|r| {
            let mut pooled: Option<detail::Detailed> = None;
            for one in each_run(r) {
                match detail::read(one) {
                    Ok(d) => match &mut pooled {
                        Some(p) => p.requests.extend(d.requests),
                        None => pooled = Some(d),
                    },
                    Err(e) => eprintln!("warning: skipped {e}"),
                }
            }
            pooled
        })
        .collect()
}

/// The runs a run stands for: its repeats, or itself.
fn each_run(r: &load::Run) -> Vec<&load::Run> {
    if r.repeats.is_empty() {
        vec![r]
    } else {
        r.repeats.iter().collect()
    }
}

/// Draws one chart.
fn draw_one(o: &Options, chart: &Chart) -> anyhow::Result<()> {
    let path = &chart.path;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--output: cannot create {}", dir.display()))?;
    }
    render::render(path, &chart.title, &chart.panels, (o.width, o.height))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("drawing {}", path.display()))?;
    let s = if chart.runs == 1 { "" } else { "s" };
    eprintln!("wrote {} ({} run{s})", path.display(), chart.runs);
    Ok(())
}

/// Where chart `kind` goes: `<kind>.png` here without `--output`, inside it when it is a folder,
/// the file itself for one chart, and `<stem>_<kind>.<ext>` beside it for `--kind all`.
fn output_path(output: Option<&Path>, asked: Kind, kind: Kind) -> PathBuf {
    let own_name = PathBuf::from(format!("{}.png", kind.name()));
    match output {
        None => own_name,
        Some(dir) if dir.is_dir() || dir.as_os_str().to_string_lossy().ends_with('/') => {
            dir.join(own_name)
        }
        Some(file) if asked != Kind::All => file.to_path_buf(),
        Some(file) => {
            let stem = file
                .file_stem()
                .map_or_else(|| "chart".into(), |s| s.to_string_lossy().into_owned());
            let ext = file
                .extension()
                .map_or_else(|| "png".into(), |e| e.to_string_lossy().into_owned());
            file.with_file_name(format!("{stem}_{}.{ext}", kind.name()))
        }
    }
}

impl Kind {
    /// The kind as `--kind` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Sla => "sla",
            Self::Pareto => "pareto",
            Self::Latency => "latency",
            Self::Cdf => "cdf",
            Self::Timeline => "timeline",
            Self::All => "all",
            Self::Diff => "diff",
            Self::Compare => "compare",
        }
    }
}

/// "name (OSL 128)", with the model before the OSL when it tells this configuration apart.
fn default_title(runs: &[load::Run], model: Option<&str>) -> String {
    let names: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let model = model.map(|m| format!("{m}, ")).unwrap_or_default();
    format!(
        "{} ({model}OSL {}){}",
        names.into_iter().collect::<Vec<_>>().join(", "),
        osls(runs),
        title_notes(runs)
    )
}

/// The runs' output lengths: "128", or "128/1024".
fn osls(runs: &[load::Run]) -> String {
    let osls: std::collections::BTreeSet<u64> = runs.iter().map(|r| r.osl).collect();
    osls.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

/// What a title must say of the runs: simulated, fell behind the model, means of repeats.
fn title_notes(runs: &[load::Run]) -> String {
    let sim = if runs.iter().any(|r| r.sim_time_scale.is_some()) {
        " - simulator, shown in modelled time"
    } else {
        ""
    };
    let late = runs
        .iter()
        .filter(|r| r.sim_kept_schedule == Some(false))
        .count();
    let late = match late {
        0 => String::new(),
        n => format!(
            " - {n} of {} runs fell behind the model's schedule",
            runs.len()
        ),
    };
    let repeats = match runs.iter().map(|r| r.repeats.len()).max() {
        Some(n) if n > 1 => format!(" - means of {n} runs, bars 95% intervals"),
        _ => String::new(),
    };
    format!("{sim}{late}{repeats}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, kept: Option<bool>) -> load::Run {
        load::Run {
            file: format!("{name}_tp4_isl1024_osl128_conc4.json").into(),
            name: name.into(),
            model: Some("m".into()),
            tp: 4,
            gpus: 4,
            deployment: None,
            isl: 1024,
            osl: 128,
            conc: 4,
            input_throughput: 1.0,
            output_throughput: 1.0,
            total_throughput: 2.0,
            median_ttft_ms: None,
            p99_ttft_ms: None,
            median_tpot_ms: None,
            p99_tpot_ms: None,
            sim_time_scale: kept.map(|_| 5.0),
            sim_kept_schedule: kept,
            repeats: Vec::new(),
        }
    }

    #[test]
    fn a_title_says_when_the_simulator_fell_behind() {
        let clean = default_title(&[run("sim", Some(true)), run("sim", Some(true))], None);
        assert_eq!(clean, "sim (OSL 128) - simulator, shown in modelled time");
        let late = default_title(&[run("sim", Some(true)), run("sim", Some(false))], None);
        assert!(
            late.ends_with("1 of 2 runs fell behind the model's schedule"),
            "{late}"
        );
        assert_eq!(default_title(&[run("m", None)], None), "m (OSL 128)");
        assert_eq!(
            default_title(&[run("sweep", None)], Some("org/Other-7B")),
            "sweep (org/Other-7B, OSL 128)"
        );
    }

    /// A demo whose busy machine ran one cell in real time draws that cell with the others.
    #[test]
    fn simulator_runs_at_any_scale_are_one_configuration() {
        let mut real_time = run("sim", Some(true));
        real_time.sim_time_scale = Some(1.0);
        real_time.conc = 16;
        let groups = configurations(vec![run("sim", Some(true)), real_time]);
        let labels: Vec<(&str, usize)> = groups
            .iter()
            .map(|(c, r)| (c.label.as_str(), r.len()))
            .collect();
        assert_eq!(labels, [("sim, OSL 128, simulated", 2)]);
    }

    #[test]
    fn runs_of_one_name_that_served_other_models_are_told_apart() {
        let mut other = run("sweep", None);
        other.model = Some("org/Other-7B".into());
        let groups = configurations(vec![run("sweep", None), other, run("sweep", None)]);
        let labels: Vec<(&str, &str, usize)> = groups
            .iter()
            .map(|(c, r)| (c.label.as_str(), c.slug.as_str(), r.len()))
            .collect();
        assert_eq!(
            labels,
            [
                ("sweep (m), OSL 128", "sweep_m_osl128", 2),
                (
                    "sweep (org/Other-7B), OSL 128",
                    "sweep_org-Other-7B_osl128",
                    1
                ),
            ]
        );
        // One model: the label stays as it was.
        let one = configurations(vec![run("sweep", None), run("sweep", None)]);
        assert_eq!(
            one.keys().map(|c| c.label.as_str()).collect::<Vec<_>>(),
            ["sweep, OSL 128"]
        );
    }
}
