//! The `plot` command: a folder of result files in, PNG or SVG charts out.
//!
//! [`load`] reads files from inferperf, the Python sweep script and `vllm bench serve` into one
//! shape; [`shape`] turns runs into series (pure functions); [`render`] draws them.

pub mod load;
pub mod render;
pub mod shape;

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
    /// Every chart, each beside the output name.
    All,
}

/// `plot`: turn a results folder into charts.
#[derive(Debug, Clone, Parser)]
#[command(name = "plot", version, about, long_about = None)]
pub struct PlotArgs {
    /// Folder of result files.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// File pattern inside the folder.
    #[arg(long, default_value = "*_tp*_isl*_osl*_conc*.json")]
    pub glob: String,
    /// Output file; .svg for SVG, otherwise PNG.
    #[arg(long, default_value = "throughput.png")]
    pub output: PathBuf,
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
    /// Image width in pixels.
    #[arg(long, default_value_t = 1600)]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 650)]
    pub height: u32,
}

/// Draws the chart(s) and returns the files written.
pub fn run(args: &PlotArgs) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        args.width >= 200 && args.height >= 150,
        "--width/--height: at least 200 x 150 pixels"
    );
    for (flag, v) in [
        ("--ttft-slas", &args.ttft_slas),
        ("--tpot-slas", &args.tpot_slas),
    ] {
        anyhow::ensure!(
            v.iter().all(|x| x.is_finite() && *x > 0.0),
            "{flag}: thresholds must be numbers above 0"
        );
    }
    let (runs, warnings) =
        load::load_dir(&args.results_dir, &args.glob).map_err(anyhow::Error::msg)?;
    for w in &warnings {
        eprintln!("warning: skipped {w}");
    }
    anyhow::ensure!(
        !runs.is_empty(),
        "no usable result files in {} matching `{}`",
        args.results_dir.display(),
        args.glob
    );
    let title = args.title.clone().unwrap_or_else(|| default_title(&runs));
    let kinds: Vec<Kind> = match args.kind {
        Kind::All => vec![Kind::Throughput, Kind::Sla, Kind::Pareto, Kind::Latency],
        k => vec![k],
    };
    let mut written = Vec::new();
    for kind in kinds {
        let path = if args.kind == Kind::All {
            beside(&args.output, kind)
        } else {
            args.output.clone()
        };
        let panels = match kind {
            Kind::Throughput => shape::throughput(&runs),
            Kind::Sla => shape::sla(&runs, &args.ttft_slas, &args.tpot_slas),
            Kind::Pareto => shape::pareto(&runs),
            Kind::Latency | Kind::All => shape::latency(&runs),
        };
        let size = if kind == Kind::Pareto {
            (args.width * 5 / 8, args.height)
        } else {
            (args.width, args.height)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--output: cannot create {}", dir.display()))?;
        }
        render::render(&path, &title, &panels, size)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("drawing {}", path.display()))?;
        eprintln!("wrote {} ({} runs)", path.display(), runs.len());
        written.push(path);
    }
    Ok(written)
}

/// `out.png` -> `out_sla.png` etc. for `--kind all`.
fn beside(output: &Path, kind: Kind) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "chart".into());
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    let name = format!("{stem}_{}.{ext}", format!("{kind:?}").to_lowercase());
    output.with_file_name(name)
}

/// "<run name> (OSL N)" from the file names.
fn default_title(runs: &[load::Run]) -> String {
    let names: std::collections::BTreeSet<String> = runs
        .iter()
        .filter_map(|r| r.file.file_name())
        .filter_map(|n| n.to_string_lossy().split("_tp").next().map(str::to_string))
        .collect();
    let osls: std::collections::BTreeSet<u64> = runs.iter().map(|r| r.osl).collect();
    let osl = osls
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/");
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
    format!(
        "{} (OSL {osl}){sim}{late}",
        names.into_iter().collect::<Vec<_>>().join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, kept: Option<bool>) -> load::Run {
        load::Run {
            file: format!("{name}_tp4_isl1024_osl128_conc4.json").into(),
            tp: 4,
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
        }
    }

    #[test]
    fn a_title_says_when_the_simulator_fell_behind() {
        let clean = default_title(&[run("sim", Some(true)), run("sim", Some(true))]);
        assert_eq!(clean, "sim (OSL 128) - simulator, shown in modelled time");
        let late = default_title(&[run("sim", Some(true)), run("sim", Some(false))]);
        assert!(
            late.ends_with("1 of 2 runs fell behind the model's schedule"),
            "{late}"
        );
        assert_eq!(default_title(&[run("m", None)]), "m (OSL 128)");
    }
}
