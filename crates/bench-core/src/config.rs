//! A run's validated configuration.
//!
//! Binaries parse flags and build a [`RunConfig`]; by then every value has been checked, so the
//! library never sees a string where a number or an enum belongs.

use crate::prompt::PromptSpec;

use crate::stream::ApiKind;
use serde::Serialize;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Which OpenAI-compatible route requests go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub path: String,
    pub api: ApiKind,
}

impl Endpoint {
    /// The two supported routes; `None` for anything else.
    pub fn parse(path: &str) -> Option<Self> {
        let api = match path.trim_end_matches('/') {
            "/v1/completions" => ApiKind::Completions,
            "/v1/chat/completions" => ApiKind::Chat,
            _ => return None,
        };
        Some(Self {
            path: path.trim_end_matches('/').to_string(),
            api,
        })
    }
}

/// When requests are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestRate {
    /// All at once (subject to the concurrency limit).
    Infinite,
    /// Mean requests per second; gaps are gamma-distributed with the run's burstiness
    /// (burstiness 1 is a Poisson process).
    PerSecond(f64),
}

impl Serialize for RequestRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Infinite => s.serialize_str("inf"),
            Self::PerSecond(r) => s.serialize_f64(*r),
        }
    }
}

/// Service-level objectives for goodput, in milliseconds; a request is good when all given hold.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2el_ms.is_none()
    }
}

/// Everything one run needs.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Name sent as `model` in requests.
    pub model: String,
    /// `--tokenizer` as given (path or model id).
    pub tokenizer: String,
    /// Server root, e.g. `http://node12:8000`.
    pub base_url: String,
    pub endpoint: Endpoint,
    pub prompt: PromptSpec,
    /// `max_tokens` per request.
    pub output_len: u64,
    pub num_prompts: usize,
    pub num_warmups: usize,
    /// `None`: no limit.
    pub max_concurrency: Option<NonZeroUsize>,
    pub request_rate: RequestRate,
    pub burstiness: f64,
    pub ignore_eos: bool,
    pub goodput: Slo,
    pub percentiles: Vec<f64>,
    pub save_detailed: bool,
    #[serde(serialize_with = "seconds")]
    pub request_timeout: Duration,
    /// How long requests in flight may finish after an interrupt.
    #[serde(serialize_with = "seconds")]
    pub interrupt_grace: Duration,
    /// Tensor-parallel size the run declares, for per-GPU figures.
    pub tp: u32,
    /// `--metadata KEY=VALUE` pairs, in order.
    pub metadata: Vec<(String, String)>,
    /// Extra CA certificates (PEM) trusted for `https://` servers.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Scrape the server's `/metrics` at the start and end of the run and this often while it
    /// runs; `None`: never.
    #[serde(serialize_with = "optional_seconds")]
    pub server_metrics_interval: Option<Duration>,
    /// Bearer token; never serialized.
    #[serde(skip)]
    pub api_key: Option<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn optional_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// How often `/metrics` is scraped while a run goes on, unless told otherwise.
pub const SERVER_METRICS_INTERVAL: Duration = Duration::from_secs(5);

impl RunConfig {
    /// The full URL requests are posted to.
    pub fn url(&self) -> String {
        format!(
            "{}{}",
            self.base_url.trim_end_matches('/'),
            self.endpoint.path
        )
    }

    /// A configuration with common defaults, for tests and embedding; binaries set every field
    /// from flags.
    pub fn new(model: &str, tokenizer: &str, base_url: &str) -> Self {
        Self {
            model: model.to_string(),
            tokenizer: tokenizer.to_string(),
            base_url: base_url.to_string(),
            endpoint: Endpoint::parse("/v1/completions").unwrap_or(Endpoint {
                path: "/v1/completions".into(),
                api: ApiKind::Completions,
            }),
            prompt: PromptSpec {
                input_len: 1024,
                range_ratio: 0.0,
                prefix_len: 0,
                seed: crate::prompt::fresh_seed(),
                seed_origin: crate::prompt::SeedOrigin::Random,
            },
            output_len: 128,
            num_prompts: 100,
            num_warmups: 0,
            max_concurrency: None,
            request_rate: RequestRate::Infinite,
            burstiness: 1.0,
            ignore_eos: true,
            goodput: Slo::default(),
            percentiles: vec![50.0, 90.0, 95.0, 99.0],
            save_detailed: false,
            request_timeout: Duration::from_secs(1800),
            ca_cert: None,
            server_metrics_interval: Some(SERVER_METRICS_INTERVAL),
            interrupt_grace: Duration::from_secs(5),
            tp: 1,
            metadata: Vec::new(),
            api_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_urls() {
        assert_eq!(
            Endpoint::parse("/v1/chat/completions").map(|e| e.api),
            Some(ApiKind::Chat)
        );
        assert!(Endpoint::parse("/v1/embeddings").is_none());
        let c = RunConfig::new("m", "t", "http://h:8000/");
        assert_eq!(c.url(), "http://h:8000/v1/completions");
    }

    #[test]
    fn api_key_is_never_serialized() {
        let mut c = RunConfig::new("m", "t", "http://h");
        c.api_key = Some("sk-secret".into());
        let json = serde_json::to_string(&c).expect("serializes");
        assert!(!json.contains("sk-secret"));
        assert!(json.contains("\"request_rate\":\"inf\""));
    }
}
