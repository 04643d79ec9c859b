//! The run's configuration as the result file echoes it (`config`): everything a run was told,
//! never the API key. `sweep` compares it to decide whether a finished cell was measured as asked
//! ([`RunSettings::differences`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which OpenAI-compatible API requests went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    Completions,
    Chat,
}

/// The route and its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointEcho {
    pub path: String,
    pub api: ApiKind,
}

/// When requests were sent: all at once (`"inf"`), or this many per second on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Infinite,
    PerSecond(f64),
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Infinite => s.serialize_str("inf"),
            Self::PerSecond(r) => s.serialize_f64(*r),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s.eq_ignore_ascii_case("inf") => Ok(Self::Infinite),
            Value::Number(n) => n
                .as_f64()
                .filter(|r| r.is_finite())
                .map(Self::PerSecond)
                .ok_or_else(|| serde::de::Error::custom("a request rate must be finite")),
            other => Err(serde::de::Error::custom(format!(
                "a request rate is a number or \"inf\", not {other}"
            ))),
        }
    }
}

/// Where the prompts' seed came from: drawn for this run, or given (`--seed`, kept here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedOrigin {
    Random,
    Given(u64),
}

/// Which prompts were built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptEcho {
    pub input_len: u64,
    pub range_ratio: f64,
    pub prefix_len: u64,
    /// The seed these prompts came from: the same seed and lengths build them again.
    pub seed: u64,
    #[serde(default = "random_origin")]
    pub seed_origin: SeedOrigin,
}

fn random_origin() -> SeedOrigin {
    SeedOrigin::Random
}

/// How requests went over the wire: the project's own HTTP/1.1 transport, whose events carry the
/// kernel's arrival times, or the standard stack (`reqwest` and `eventsource-stream`: HTTP/2 over
/// TLS where the server offers it, proxies from the environment), whose events are stamped when
/// the body stream yields their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    #[default]
    Native,
    Standard,
}

/// Service-level objectives for goodput, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SloEcho {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

/// The server a run measured, where the run was told: its configuration's name (in a campaign)
/// and its topology. Per-GPU figures divide by `gpus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The configuration's name, e.g. a campaign's `[[config]]` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GPUs the whole server uses (every node, every replica).
    pub gpus: u32,
    pub nodes: u32,
    /// Pipeline-parallel size.
    pub pp: u32,
    /// Data-parallel size (engine replicas).
    pub dp: u32,
    /// Experts spread over the GPUs (expert parallelism) rather than split by tensor parallelism.
    pub expert_parallel: bool,
}

/// Everything a run was told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub model: String,
    pub tokenizer: String,
    pub base_url: String,
    pub endpoint: EndpointEcho,
    pub prompt: PromptEcho,
    pub output_len: u64,
    pub num_prompts: u64,
    pub num_warmups: u64,
    /// `max_tokens` per warm-up request, when given (`--warmup-output-len`); absent, they
    /// asked for `output_len`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_output_len: Option<u64>,
    pub max_concurrency: Option<u64>,
    pub request_rate: Rate,
    pub burstiness: f64,
    pub ignore_eos: bool,
    /// Usage was asked for on every event; files written before the choice did not.
    #[serde(default)]
    pub continuous_usage_stats: bool,
    pub goodput: SloEcho,
    pub percentiles: Vec<f64>,
    pub save_detailed: bool,
    /// Seconds.
    pub request_timeout: f64,
    /// Seconds of silence after which a request is given up on; `None`: only the total limit.
    #[serde(default)]
    pub idle_timeout: Option<f64>,
    /// Seconds requests in flight may finish after an interrupt.
    pub interrupt_grace: f64,
    pub tp: u32,
    /// The server's configuration and topology, when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    pub metadata: Vec<(String, String)>,
    #[serde(default)]
    pub ca_cert: Option<String>,
    /// Seconds between scrapes of the server's `/metrics`; `None`: not scraped.
    #[serde(default)]
    pub server_metrics_interval: Option<f64>,
    /// Files written before there was a choice were measured on the native transport.
    #[serde(default)]
    pub transport: TransportKind,
}

/// Settings that do not change what is measured: where the server is and how it was reached,
/// how often it was watched, and what was merely reported.
const NOT_MEASURED: &[&str] = &[
    "/base_url",
    "/ca_cert",
    "/server_metrics_interval",
    "/save_detailed",
    "/percentiles",
    "/interrupt_grace",
    "/request_timeout",
    "/idle_timeout",
];

impl RunSettings {
    /// The settings that differ between `self` and `other` and change what is measured, as JSON
    /// pointers (`/prompt/range_ratio`) with both values. Derived from the whole echo, so a new
    /// setting is compared without anyone listing it; left out are `NOT_MEASURED`, the seed
    /// (each run and cell derives its own) and, when either run drew its seed, where the seed
    /// came from (any fresh seed measures the same thing).
    pub fn differences(&self, other: &Self) -> Vec<Difference> {
        let (a, b) = (to_value(self), to_value(other));
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        let random = self.prompt.seed_origin == SeedOrigin::Random
            || other.prompt.seed_origin == SeedOrigin::Random;
        out.retain(|d| {
            // The seed itself is derived per run and cell; where it came from is the setting.
            !NOT_MEASURED.contains(&d.setting.as_str())
                && d.setting != "/prompt/seed"
                && !(random && d.setting.starts_with("/prompt/seed_origin"))
        });
        out
    }
}

fn to_value(s: &RunSettings) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// One setting that differs: where, and its two values.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub setting: String,
    pub was: Value,
    pub now: Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.setting.trim_start_matches('/').replace('/', ".");
        write!(f, "{name} was {} and is now {}", self.was, self.now)
    }
}

fn diff(at: &str, a: &Value, b: &Value, out: &mut Vec<Difference>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                let path = format!("{at}/{k}");
                diff(
                    &path,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(Difference {
            setting: at.to_string(),
            was: a.clone(),
            now: b.clone(),
        }),
        _ => {}
    }
}
