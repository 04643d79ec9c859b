//! The benchmark result file, typed: one model that inferperf writes and that every reader
//! (`sweep`'s resume and summary, `plot`) reads, whichever tool wrote the file.
//!
//! Three producers write these files, and one [`ResultFile`] reads them all:
//! - the Python `benchmark_serving_random.py` script: its keys, times in **seconds**
//!   (`median_ttft`), `--metadata` pairs at top level;
//! - `vllm bench serve`: its keys, times in **milliseconds** (`median_ttft_ms`,
//!   `p99.9_itl_ms`), no `input_throughput`;
//! - inferperf: a superset of both, plus its own sections ([`sections`], [`settings`]).
//!
//! Every key is optional when reading, so a file of any producer loads, and the accessors
//! ([`ResultFile::latency_ms`], [`ResultFile::input_throughput`]) hide where a figure comes from.
//! A key of the wrong type is an error naming it ([`ReadError`]). Keys the model does not name
//! (percentile labels, metadata pairs, another tool's extras) are kept in [`ResultFile::extra`],
//! in order. This crate needs no runtime, tokenizer or TLS: it is what a laptop's `plot` links.
//! [`atomic`] writes files as every writer here must: whole or not at all. [`requests`] is the
//! per-request file written beside each result.

pub mod atomic;
pub mod repeats;
pub mod requests;
pub mod sections;
pub mod settings;

/// The file beside `result` that shares its stem: `x.json` with `.requests.jsonl` ->
/// `x.requests.jsonl`.
pub fn beside(result: &Path, suffix: &str) -> PathBuf {
    let stem = result
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    result.with_file_name(format!("{stem}{suffix}"))
}

use sections::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use settings::{Rate, RunSettings};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of inferperf's layout; bumped when a key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// One result file, from any producer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResultFile {
    // The Python script's keys (times in seconds).
    pub date: Option<String>,
    pub model_id: Option<String>,
    pub tokenizer_id: Option<String>,
    pub num_prompts: Option<u64>,
    pub request_rate: Option<Rate>,
    pub burstiness: Option<f64>,
    pub max_concurrency: Option<u64>,
    /// Seconds: first measured send to last end.
    pub duration: Option<f64>,
    pub completed: Option<u64>,
    pub good_completed: Option<u64>,
    pub total_input_tokens: Option<u64>,
    pub total_output_tokens: Option<u64>,
    pub request_throughput: Option<f64>,
    pub request_goodput: Option<f64>,
    pub input_throughput: Option<f64>,
    pub output_throughput: Option<f64>,
    pub median_ttft: Option<f64>,
    pub p99_ttft: Option<f64>,
    pub median_e2el: Option<f64>,
    pub p99_e2el: Option<f64>,
    pub median_tpot: Option<f64>,
    pub p99_tpot: Option<f64>,

    // `vllm bench serve`'s keys (times in milliseconds; the per-metric ones are in `extra`).
    pub failed: Option<u64>,
    pub total_token_throughput: Option<f64>,
    pub max_output_tokens_per_s: Option<f64>,
    pub max_concurrent_requests: Option<u64>,

    // inferperf's own.
    pub schema_version: Option<u32>,
    pub tool: Option<Tool>,
    pub started_at: Option<String>,
    pub interrupted: Option<bool>,
    pub not_sent: Option<u64>,
    pub interactivity: Option<f64>,
    pub peak_concurrency: Option<u64>,
    pub tp: Option<u32>,
    pub per_gpu: Option<PerGpu>,
    pub failures: Option<BTreeMap<String, FailureGroup>>,
    pub output: Option<OutputCounts>,
    /// Completed streams that broke a promise of the protocol, by kind (`finish_reason_missing`,
    /// `usage_missing`, `prompt_tokens_mismatch`, `output_tokens_mismatch`, `events_after_done`).
    pub integrity: Option<BTreeMap<String, Violation>>,
    pub prompt_lengths: Option<PromptLengths>,
    pub server_prompt_tokens: Option<PromptCheck>,
    pub distributions_ms: Option<Distributions>,
    pub steady_state: Option<SteadyWindow>,
    /// Set when several client processes measured the run together and it was merged.
    pub clients: Option<Clients>,
    pub warmup: Option<Warmup>,
    pub client: Option<ClientSection>,
    pub server: Option<ServerSection>,
    pub system: Option<SystemInfo>,
    pub config: Option<RunSettings>,
    pub metadata: Option<BTreeMap<String, String>>,

    // Against `bench-sim`: how well it kept its schedule.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_string"
    )]
    pub sim_time_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_steps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_late_steps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_step_lateness_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_events: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_late_events: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_event_lateness_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_event_lateness_max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_time_lost_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_kept_schedule: Option<bool>,
    /// `stepped` when the simulator ran on its stepped clock: times are the model's, mapped from
    /// the client's stamps (`bench_sim::stepped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_clock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_stepped_timeouts: Option<f64>,

    // vLLM's per-request arrays (`--save-detailed`; `ttfts` and `itls` in seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_lens: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_lens: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfts: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub itls: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,

    /// Every other key, in order: vLLM's per-metric latency keys (`mean_ttft_ms`, `p99_itl_ms`),
    /// `--metadata` pairs at top level, and whatever another tool adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A latency figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Ttft,
    Tpot,
    Itl,
    E2el,
}

impl Metric {
    pub const ALL: [Self; 4] = [Self::Ttft, Self::Tpot, Self::Itl, Self::E2el];

    pub fn key(self) -> &'static str {
        match self {
            Self::Ttft => "ttft",
            Self::Tpot => "tpot",
            Self::Itl => "itl",
            Self::E2el => "e2el",
        }
    }
}

/// Which statistic of a latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Mean,
    Median,
    Std,
    /// A percentile in [0, 100].
    Percentile(f64),
}

/// vLLM's percentile label: `99` for 99.0, `99.9` otherwise.
pub fn percentile_label(q: f64) -> String {
    if q.fract() == 0.0 {
        format!("{}", q as i64)
    } else {
        format!("{q}")
    }
}

impl Stat {
    /// The `<stat>` part of vLLM's `<stat>_<metric>_ms` key.
    pub fn key(self) -> String {
        match self {
            Self::Mean => "mean".into(),
            Self::Median => "median".into(),
            Self::Std => "std".into(),
            Self::Percentile(q) => format!("p{}", percentile_label(q)),
        }
    }
}

impl ResultFile {
    /// `stat` of `metric` in milliseconds: vLLM's `_ms` key, else the Python script's seconds
    /// key (it has medians and P99s), else none.
    pub fn latency_ms(&self, metric: Metric, stat: Stat) -> Option<f64> {
        let key = format!("{}_{}_ms", stat.key(), metric.key());
        if let Some(v) = self.extra.get(&key).and_then(Value::as_f64) {
            return Some(v);
        }
        let seconds = match (metric, stat) {
            (Metric::Ttft, Stat::Median) => self.median_ttft,
            (Metric::Ttft, Stat::Percentile(99.0)) => self.p99_ttft,
            (Metric::Tpot, Stat::Median) => self.median_tpot,
            (Metric::Tpot, Stat::Percentile(99.0)) => self.p99_tpot,
            (Metric::E2el, Stat::Median) => self.median_e2el,
            (Metric::E2el, Stat::Percentile(99.0)) => self.p99_e2el,
            _ => None,
        };
        seconds.map(|s| s * 1e3)
    }

    /// Sets vLLM's `<stat>_<metric>_ms` key.
    pub fn set_latency_ms(&mut self, metric: Metric, stat: Stat, value: f64) {
        let key = format!("{}_{}_ms", stat.key(), metric.key());
        self.extra.insert(key, Value::from(value));
    }

    /// Input tokens per second: the key, else total input tokens over the duration (the Python
    /// script's definition; `vllm bench serve` writes no such key).
    pub fn input_throughput(&self) -> Option<f64> {
        self.input_throughput.or_else(|| {
            let (tokens, d) = (self.total_input_tokens?, self.duration?);
            (d > 0.0).then(|| tokens as f64 / d)
        })
    }

    /// Input plus output tokens per second: the key, else the sum.
    pub fn total_throughput(&self) -> Option<f64> {
        self.total_token_throughput
            .or_else(|| Some(self.input_throughput()? + self.output_throughput?))
    }

    /// Written by inferperf (its own keys are there).
    pub fn is_inferperf(&self) -> bool {
        self.tool.as_ref().is_some_and(|t| t.name == "inferperf")
    }

    /// The server view, when the run scraped one.
    pub fn server_view(&self) -> Option<&ServerView> {
        self.server.as_ref()?.view.as_ref()
    }
}

/// Why a result file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: `{key}`: {message}", path.display())]
    BadKey {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{}: not a result file (a JSON object of results)", path.display())]
    NotAnObject { path: PathBuf },
}

impl ReadError {
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::NotJson { path, .. }
            | Self::BadKey { path, .. }
            | Self::NotAnObject { path } => path,
        }
    }
}

/// Reads the result file at `path`.
pub fn read(path: &Path) -> Result<ResultFile, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

/// Parses a result file's bytes; `path` names it in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<ResultFile, ReadError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| ReadError::NotJson {
        path: path.to_path_buf(),
        source,
    })?;
    if !value.is_object() {
        return Err(ReadError::NotAnObject {
            path: path.to_path_buf(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| ReadError::BadKey {
        path: path.to_path_buf(),
        key: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// `sim_time_scale` as a number, or as the string the first demo files wrote it as.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a number, found {other}"
        ))),
    }
}

/// The parts of a sweep cell's file name, `<name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json`, and
/// `...conc<CONC>.run<K>.json` for the K-th of repeated runs (K from 2; the first has no suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellName {
    pub name: String,
    pub tp: u32,
    pub isl: u64,
    pub osl: u64,
    pub conc: u64,
    /// Which of repeated runs: 1 for the first (or only) one.
    pub run: u32,
}

impl CellName {
    /// The parts of `file_name`, if it follows the pattern (an attempt's
    /// `.attemptN.partial.json` does not).
    pub fn parse(file_name: &str) -> Option<Self> {
        let stem = file_name.strip_suffix(".json")?;
        let (stem, run) = match stem.rsplit_once(".run") {
            Some((base, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => {
                (base, k.parse().ok().filter(|k| *k >= 2)?)
            }
            _ => (stem, 1),
        };
        let mut parts = stem.rsplitn(5, '_');
        let conc = parts.next()?.strip_prefix("conc")?.parse().ok()?;
        let osl = parts.next()?.strip_prefix("osl")?.parse().ok()?;
        let isl = parts.next()?.strip_prefix("isl")?.parse().ok()?;
        let tp = parts.next()?.strip_prefix("tp")?.parse().ok()?;
        let name = parts.next()?.to_string();
        (!name.is_empty()).then_some(Self {
            name,
            tp,
            isl,
            osl,
            conc,
            run,
        })
    }

    pub fn file_name(&self) -> String {
        let run = if self.run > 1 {
            format!(".run{}", self.run)
        } else {
            String::new()
        };
        format!(
            "{}_tp{}_isl{}_osl{}_conc{}{run}.json",
            self.name, self.tp, self.isl, self.osl, self.conc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_file_names_parse_back() {
        let n = CellName::parse("mini-max_v2_tp4_isl1024_osl128_conc16.json").expect("a cell");
        assert_eq!(
            (n.name.as_str(), n.tp, n.isl, n.osl, n.conc),
            ("mini-max_v2", 4, 1024, 128, 16)
        );
        assert_eq!(n.file_name(), "mini-max_v2_tp4_isl1024_osl128_conc16.json");
        assert_eq!(n.run, 1);
        let third = CellName::parse("m_tp4_isl1024_osl128_conc16.run3.json").expect("a repeat");
        assert_eq!((third.name.as_str(), third.conc, third.run), ("m", 16, 3));
        assert_eq!(third.file_name(), "m_tp4_isl1024_osl128_conc16.run3.json");
        assert!(CellName::parse("m_tp4_isl1_osl1_conc4.run1.json").is_none());
        assert!(CellName::parse("m_tp4_isl1_osl1_conc4.runway.json").is_none());
        assert!(CellName::parse("x_tp4_isl1_osl1_conc4.attempt1.partial.json").is_none());
        assert!(CellName::parse("_tp4_isl1_osl1_conc4.json").is_none());
        assert!(CellName::parse("run.json").is_none());
    }
}
