//! Reading result files from any of the three producers into one shape, through the typed
//! result model (`bench_result`).
//!
//! A run's parameters (name, TP, ISL, OSL, concurrency) come from inside the file when it says
//! them (inferperf's echo of its configuration), else from the file name
//! (`<name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json`), as the Python plotter did for its own
//! files and `vllm bench serve`'s. Latencies are read in milliseconds: vLLM's `_ms` keys where
//! they exist, else the Python script's keys in seconds.

use bench_result::{CellName, Metric, ResultFile, Stat};
use std::path::{Path, PathBuf};

/// One run's figures, in tok/s and milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub file: PathBuf,
    /// The run's name: the sweep's name in the file name, else the model's.
    pub name: String,
    /// The model served, when the file says (`config.model`, or `model_id`).
    pub model: Option<String>,
    pub tp: u32,
    /// GPUs the server used: the file's declared deployment's, else `tp`. Per-GPU figures divide
    /// by it.
    pub gpus: u32,
    /// The server configuration's name, when the file declares one (`config.deployment.name`).
    pub deployment: Option<String>,
    pub isl: u64,
    pub osl: u64,
    pub conc: u64,
    pub input_throughput: f64,
    pub output_throughput: f64,
    pub total_throughput: f64,
    pub median_ttft_ms: Option<f64>,
    pub p99_ttft_ms: Option<f64>,
    pub median_tpot_ms: Option<f64>,
    pub p99_tpot_ms: Option<f64>,
    /// Set for runs against the built-in simulator sped up by this factor; the figures above are
    /// already converted back to the modelled deployment's time.
    pub sim_time_scale: Option<f64>,
    /// For runs against the simulator: whether it kept its schedule (its figures are the
    /// model's); `Some(false)` is said on the chart.
    pub sim_kept_schedule: Option<bool>,
    /// When this stands for repeated runs of one cell ([`merge_repeats`]): each of them. Its own
    /// figures are then their means.
    pub repeats: Vec<Run>,
}

impl Run {
    /// Tokens per second per user: 1000 / median TPOT.
    pub fn interactivity(&self) -> Option<f64> {
        self.median_tpot_ms.filter(|t| *t > 0.0).map(|t| 1000.0 / t)
    }
}

/// A finite, non-negative figure.
fn usable(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite() && *x >= 0.0)
}

/// A run's parameters: from inside the file when it echoes its configuration, else from its
/// name.
fn parameters(file: &ResultFile, path: &Path) -> Result<CellName, String> {
    let from_name = path
        .file_name()
        .and_then(|n| CellName::parse(&n.to_string_lossy()));
    let Some(config) = &file.config else {
        return from_name.ok_or_else(|| {
            format!(
                "{}: the file does not say its ISL, OSL and concurrency, and its name is not \
                 <name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json",
                path.display()
            )
        });
    };
    let name = match &from_name {
        Some(n) => n.name.clone(),
        None => config.model.clone(),
    };
    Ok(CellName {
        run: from_name.as_ref().map_or(1, |n| n.run),
        name,
        tp: file.tp.unwrap_or(config.tp).max(1),
        isl: config.prompt.input_len,
        osl: config.output_len,
        // Without a cap, every prompt may be in flight at once.
        conc: config.max_concurrency.unwrap_or(config.num_prompts),
    })
}

/// Reads one file; `Err` says what was wrong (file and key).
pub fn read(path: &Path) -> Result<Run, String> {
    let file = bench_result::read(path).map_err(|e| e.to_string())?;
    let p = parameters(&file, path)?;
    let input_throughput = usable(file.input_throughput()).ok_or_else(|| {
        format!(
            "{}: no usable `input_throughput`, nor `total_input_tokens` and `duration` to derive it",
            path.display()
        )
    })?;
    let output_throughput = usable(file.output_throughput)
        .ok_or_else(|| format!("{}: no usable `output_throughput`", path.display()))?;
    let latency = |metric, stat| usable(file.latency_ms(metric, stat));
    let deployment = file.config.as_ref().and_then(|c| c.deployment.as_ref());
    let run = Run {
        file: path.to_path_buf(),
        name: p.name,
        model: file
            .config
            .as_ref()
            .map(|c| c.model.clone())
            .or_else(|| file.model_id.clone())
            .filter(|m| !m.is_empty()),
        tp: p.tp.max(1),
        gpus: deployment.map_or(p.tp, |d| d.gpus).max(1),
        deployment: deployment.and_then(|d| d.name.clone()),
        isl: p.isl,
        osl: p.osl,
        conc: p.conc,
        input_throughput,
        output_throughput,
        total_throughput: usable(file.total_throughput())
            .unwrap_or(input_throughput + output_throughput),
        median_ttft_ms: latency(Metric::Ttft, Stat::Median),
        p99_ttft_ms: latency(Metric::Ttft, Stat::Percentile(99.0)),
        median_tpot_ms: latency(Metric::Tpot, Stat::Median),
        p99_tpot_ms: latency(Metric::Tpot, Stat::Percentile(99.0)),
        sim_time_scale: None,
        sim_kept_schedule: file.sim_kept_schedule,
        repeats: Vec::new(),
    };
    Ok(match sim_time_scale(&file) {
        Some(scale) => run.in_modelled_time(scale),
        None => run,
    })
}

/// The simulator's speed-up (1 when it ran in real time), when the run was against it.
fn sim_time_scale(file: &ResultFile) -> Option<f64> {
    file.sim_time_scale.filter(|s| s.is_finite() && *s > 0.0)
}

impl Run {
    /// Undoes a simulator speed-up: latencies x scale, throughputs / scale.
    fn in_modelled_time(mut self, scale: f64) -> Self {
        self.divide_throughputs(scale);
        for l in [
            &mut self.median_ttft_ms,
            &mut self.p99_ttft_ms,
            &mut self.median_tpot_ms,
            &mut self.p99_tpot_ms,
        ]
        .into_iter()
        .flatten()
        {
            *l *= scale;
        }
        self.sim_time_scale = Some(scale);
        self
    }
}

impl Run {
    /// Every throughput, its repeats' too, divided by `by` (a time scale, a number of GPUs).
    pub fn divide_throughputs(&mut self, by: f64) {
        for t in [
            &mut self.input_throughput,
            &mut self.output_throughput,
            &mut self.total_throughput,
        ] {
            *t /= by;
        }
        for r in &mut self.repeats {
            r.divide_throughputs(by);
        }
    }
}

/// Every readable run matching `pattern` in `dir`; unreadable ones are reported in `warnings`.
pub fn load_dir(dir: &Path, pattern: &str) -> Result<(Vec<Run>, Vec<String>), String> {
    let full = dir.join(pattern);
    let paths =
        glob::glob(&full.to_string_lossy()).map_err(|e| format!("--glob `{pattern}`: {e}"))?;
    let mut runs = Vec::new();
    let mut warnings = Vec::new();
    for entry in paths {
        match entry {
            // An interrupted attempt, repeats summed up, or the sweep's own summary: not runs.
            Ok(p) if p.to_string_lossy().ends_with(".partial.json") => {}
            // Repeats summed up (intervals, no run's figures).
            Ok(p) if p.to_string_lossy().ends_with(".repeats.json") => {}
            Ok(p) if p.file_name().is_some_and(|n| n == "sweep_summary.json") => {}
            Ok(p) => match read(&p) {
                Ok(r) => runs.push(r),
                Err(w) => warnings.push(w),
            },
            Err(e) => warnings.push(e.to_string()),
        }
    }
    runs.sort_by_key(|r| (r.tp, r.isl, r.conc));
    Ok((runs, warnings))
}

/// Runs of one configuration that measured the same cell (TP, ISL, concurrency) are repeats:
/// each such set becomes one run whose figures are their means and whose `repeats` hold them
/// all, so a chart draws one point with its interval. Single runs pass through unchanged.
pub fn merge_repeats(runs: Vec<Run>) -> Vec<Run> {
    let mut cells: std::collections::BTreeMap<(u32, u64, u64), Vec<Run>> = Default::default();
    for r in runs {
        cells.entry((r.tp, r.isl, r.conc)).or_default().push(r);
    }
    cells
        .into_values()
        .map(|mut group| {
            if group.len() == 1 {
                return group.remove(0);
            }
            let n = group.len() as f64;
            let mean = |f: fn(&Run) -> f64| group.iter().map(f).sum::<f64>() / n;
            let mean_of = |f: fn(&Run) -> Option<f64>| {
                let v: Option<Vec<f64>> = group.iter().map(f).collect();
                v.map(|v| v.iter().sum::<f64>() / n)
            };
            Run {
                file: group[0].file.clone(),
                input_throughput: mean(|r| r.input_throughput),
                output_throughput: mean(|r| r.output_throughput),
                total_throughput: mean(|r| r.total_throughput),
                median_ttft_ms: mean_of(|r| r.median_ttft_ms),
                p99_ttft_ms: mean_of(|r| r.p99_ttft_ms),
                median_tpot_ms: mean_of(|r| r.median_tpot_ms),
                p99_tpot_ms: mean_of(|r| r.p99_tpot_ms),
                sim_kept_schedule: group
                    .iter()
                    .map(|r| r.sim_kept_schedule)
                    .reduce(|a, b| match (a, b) {
                        (Some(x), Some(y)) => Some(x && y),
                        (x, y) => x.or(y),
                    })
                    .flatten(),
                repeats: group.clone(),
                ..group[0].clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_runs_are_converted_back_to_modelled_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sim_tp4_isl1024_osl128_conc4.json");
        std::fs::write(&p, r#"{"input_throughput": 2000, "output_throughput": 400, "median_ttft_ms": 5, "median_tpot_ms": 1.5, "sim_time_scale": "20"}"#).expect("write");
        let r = read(&p).expect("readable");
        assert_eq!((r.input_throughput, r.output_throughput), (100.0, 20.0));
        assert_eq!(
            (r.median_ttft_ms, r.median_tpot_ms),
            (Some(100.0), Some(30.0))
        );
        assert_eq!(r.sim_time_scale, Some(20.0));
    }

    /// A simulator run in real time is still the simulator's: a demo cell that fell back to 1x
    /// belongs with the cells that ran faster.
    #[test]
    fn a_simulator_run_in_real_time_is_the_simulators_with_its_figures_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sim_tp4_isl1024_osl128_conc4.json");
        std::fs::write(&p, r#"{"input_throughput": 2000, "output_throughput": 400, "median_ttft_ms": 5, "median_tpot_ms": 1.5, "sim_time_scale": 1}"#).expect("write");
        let r = read(&p).expect("readable");
        assert_eq!(r.sim_time_scale, Some(1.0));
        assert_eq!((r.input_throughput, r.output_throughput), (2000.0, 400.0));
        assert_eq!((r.median_ttft_ms, r.median_tpot_ms), (Some(5.0), Some(1.5)));
    }
}
