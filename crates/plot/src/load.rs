//! Reading result files from any of the three producers into one shape.
//!
//! Parameters come from the file name (`*_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json`), as the
//! Python plotter did. Figures come from the keys, in milliseconds where vLLM's `_ms` keys exist
//! (inferperf and `vllm bench serve`), else from the Python script's keys in seconds.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run's figures, in tok/s and milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub file: PathBuf,
    pub tp: u32,
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
}

impl Run {
    /// Tokens per second per user: 1000 / median TPOT.
    pub fn interactivity(&self) -> Option<f64> {
        self.median_tpot_ms.filter(|t| *t > 0.0).map(|t| 1000.0 / t)
    }
}

/// `(tp, isl, osl, conc)` from a file name, if it follows the pattern.
pub fn parse_name(name: &str) -> Option<(u32, u64, u64, u64)> {
    let stem = name.strip_suffix(".json")?;
    let mut parts = stem.rsplitn(5, '_');
    let conc = parts.next()?.strip_prefix("conc")?.parse().ok()?;
    let osl = parts.next()?.strip_prefix("osl")?.parse().ok()?;
    let isl = parts.next()?.strip_prefix("isl")?.parse().ok()?;
    let tp = parts.next()?.strip_prefix("tp")?.parse().ok()?;
    Some((tp, isl, osl, conc))
}

/// A finite, non-negative number under `key`.
fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

/// A latency in ms: the `_ms` key, else the seconds key x 1000.
fn latency_ms(v: &Value, ms_key: &str, s_key: &str) -> Option<f64> {
    num(v, ms_key).or_else(|| num(v, s_key).map(|s| s * 1e3))
}

/// Reads one file; `Err` says what was wrong (file and key).
pub fn read(path: &Path) -> Result<Run, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tp, isl, osl, conc) = parse_name(&name).ok_or_else(|| {
        format!(
            "{}: name is not <name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json",
            path.display()
        )
    })?;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let need = |k: &str| num(&v, k).ok_or_else(|| format!("{}: no usable `{k}`", path.display()));
    // `vllm bench serve` writes no input throughput: it is total input tokens over the duration,
    // as the Python script defines it.
    let derived = match (num(&v, "total_input_tokens"), num(&v, "duration")) {
        (Some(tokens), Some(d)) if d > 0.0 => Some(tokens / d),
        _ => None,
    };
    let input_throughput = num(&v, "input_throughput").or(derived).ok_or_else(|| {
        format!(
            "{}: no usable `input_throughput`, nor `total_input_tokens` and `duration` to derive it",
            path.display()
        )
    })?;
    let output_throughput = need("output_throughput")?;
    let run = Run {
        file: path.to_path_buf(),
        tp: tp.max(1),
        isl,
        osl,
        conc,
        input_throughput,
        output_throughput,
        total_throughput: num(&v, "total_token_throughput")
            .unwrap_or(input_throughput + output_throughput),
        median_ttft_ms: latency_ms(&v, "median_ttft_ms", "median_ttft"),
        p99_ttft_ms: latency_ms(&v, "p99_ttft_ms", "p99_ttft"),
        median_tpot_ms: latency_ms(&v, "median_tpot_ms", "median_tpot"),
        p99_tpot_ms: latency_ms(&v, "p99_tpot_ms", "p99_tpot"),
        sim_time_scale: None,
        sim_kept_schedule: v.get("sim_kept_schedule").and_then(Value::as_bool),
    };
    Ok(match sim_time_scale(&v) {
        Some(scale) => run.in_modelled_time(scale),
        None => run,
    })
}

/// `sim_time_scale` as `sweep --simulate` records it (a string, like every metadata value).
fn sim_time_scale(v: &Value) -> Option<f64> {
    let raw = v.get("sim_time_scale")?;
    raw.as_f64()
        .or_else(|| raw.as_str().and_then(|s| s.parse().ok()))
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s != 1.0)
}

impl Run {
    /// Undoes a simulator speed-up: latencies x scale, throughputs / scale.
    fn in_modelled_time(mut self, scale: f64) -> Self {
        for t in [
            &mut self.input_throughput,
            &mut self.output_throughput,
            &mut self.total_throughput,
        ] {
            *t /= scale;
        }
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

/// Every readable run matching `pattern` in `dir`; unreadable ones are reported in `warnings`.
pub fn load_dir(dir: &Path, pattern: &str) -> Result<(Vec<Run>, Vec<String>), String> {
    let full = dir.join(pattern);
    let paths =
        glob::glob(&full.to_string_lossy()).map_err(|e| format!("--glob `{pattern}`: {e}"))?;
    let mut runs = Vec::new();
    let mut warnings = Vec::new();
    for entry in paths {
        match entry {
            Ok(p) if p.to_string_lossy().ends_with(".partial.json") => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_the_parameters() {
        assert_eq!(
            parse_name("minimax_m2_tp4_isl1024_osl128_conc8.json"),
            Some((4, 1024, 128, 8))
        );
        assert_eq!(
            parse_name("x_tp4_isl1024_osl128_conc8.attempt1.partial.json"),
            None
        );
        assert_eq!(parse_name("notes.json"), None);
    }

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
}
