//! A run's validated configuration.
//!
//! Binaries parse flags and build a [`RunConfig`]; by then every value has been checked, so the
//! library never sees a string where a number or an enum belongs.

use crate::prompt::PromptSpec;
use crate::stream::ApiKind;
pub use bench_result::settings::{Deployment, TransportKind};
use bench_result::settings::{EndpointEcho, PromptEcho, Rate, RunSettings, SloEcho};
use std::num::NonZeroUsize;
use std::time::Duration;

/// A server's root URL, parsed once: `http://` or `https://` with a host, in its normal form and
/// without a trailing `/` (`HTTP://Node:8000/` is `http://node:8000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    url: reqwest::Url,
}

/// Why a string is not a server's root URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadUrl {
    #[error("`{raw}` is not a URL: {reason}")]
    Unparsable { raw: String, reason: String },
    #[error("`{0}` must be an http:// or https:// URL with a host")]
    NotHttp(String),
}

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<Self, BadUrl> {
        let url = reqwest::Url::parse(raw).map_err(|e| BadUrl::Unparsable {
            raw: raw.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(BadUrl::NotHttp(raw.to_string()));
        }
        Ok(Self { url })
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// `path` (e.g. `/v1/completions`) under this root, after any path the root has.
    pub fn join(&self, path: &str) -> reqwest::Url {
        let mut url = self.url.clone();
        let root = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{root}{path}"));
        url
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = BadUrl;
    fn from_str(s: &str) -> Result<Self, BadUrl> {
        Self::parse(s)
    }
}

/// Which OpenAI-compatible route requests go to.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl RequestRate {
    /// As the result file writes it.
    pub fn echo(self) -> Rate {
        match self {
            Self::Infinite => Rate::Infinite,
            Self::PerSecond(r) => Rate::PerSecond(r),
        }
    }
}

/// Service-level objectives for goodput, in milliseconds; a request is good when all given hold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
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
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Name sent as `model` in requests.
    pub model: String,
    /// `--tokenizer` as given (path or model id).
    pub tokenizer: String,
    /// Server root, e.g. `http://node12:8000`.
    pub base_url: BaseUrl,
    pub endpoint: Endpoint,
    pub prompt: PromptSpec,
    /// `max_tokens` per request.
    pub output_len: u64,
    pub num_prompts: usize,
    pub num_warmups: usize,
    /// `max_tokens` per warm-up request; `None`: [`RunConfig::output_len`]. Warm-up requests
    /// open connections and warm the server; nothing of them is measured.
    pub warmup_output_len: Option<u64>,
    /// `None`: no limit.
    pub max_concurrency: Option<NonZeroUsize>,
    pub request_rate: RequestRate,
    pub burstiness: f64,
    pub ignore_eos: bool,
    /// Ask for usage on every event (`stream_options.continuous_usage_stats`).
    pub continuous_usage_stats: bool,
    pub goodput: Slo,
    pub percentiles: Vec<f64>,
    pub save_detailed: bool,
    pub request_timeout: Duration,
    /// Give up on a request when nothing arrives for this long; `None`: only the total limit.
    pub idle_timeout: Option<Duration>,
    /// How long requests in flight may finish after an interrupt.
    pub interrupt_grace: Duration,
    /// Tensor-parallel size the run declares, for per-GPU figures.
    pub tp: u32,
    /// The server's configuration and topology, when declared: per-GPU figures divide by its
    /// GPUs.
    pub deployment: Option<Deployment>,
    /// `--metadata KEY=VALUE` pairs, in order.
    pub metadata: Vec<(String, String)>,
    /// Extra CA certificates (PEM) trusted for `https://` servers.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Scrape the server's `/metrics` at the start and end of the run and this often while it
    /// runs; `None`: never.
    pub server_metrics_interval: Option<Duration>,
    /// Bearer token; never in the result file or a log.
    pub api_key: Option<String>,
    /// Which HTTP stack carries the requests.
    pub transport: TransportKind,
    /// Set when this process is one of several clients measuring one run: its number, from 0.
    /// Request ids carry it (`inferperf-c1-m0`), so the server's logs and the merge tell the
    /// clients' requests apart.
    pub client: Option<u32>,
}

/// How long a request may stay silent before it is given up on, unless told otherwise: long
/// enough for a prompt queued behind thousands on a busy server to reach its first token.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often `/metrics` is scraped while a run goes on, unless told otherwise.
pub const SERVER_METRICS_INTERVAL: Duration = Duration::from_secs(5);

impl RunConfig {
    /// `max_tokens` per warm-up request.
    pub fn warmup_max_tokens(&self) -> u64 {
        self.warmup_output_len.unwrap_or(self.output_len)
    }

    /// The most requests this run can have in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_concurrency
            .map_or(self.num_prompts, std::num::NonZeroUsize::get)
    }

    /// What the result file echoes: every setting but the API key.
    pub fn settings(&self) -> RunSettings {
        RunSettings {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            base_url: self.base_url.to_string(),
            endpoint: EndpointEcho {
                path: self.endpoint.path.clone(),
                api: self.endpoint.api,
            },
            prompt: PromptEcho {
                input_len: self.prompt.input_len,
                range_ratio: self.prompt.range_ratio,
                prefix_len: self.prompt.prefix_len,
                seed: self.prompt.seed,
                seed_origin: self.prompt.seed_origin,
            },
            output_len: self.output_len,
            num_prompts: self.num_prompts as u64,
            num_warmups: self.num_warmups as u64,
            warmup_output_len: self.warmup_output_len,
            max_concurrency: self.max_concurrency.map(|n| n.get() as u64),
            request_rate: self.request_rate.echo(),
            burstiness: self.burstiness,
            ignore_eos: self.ignore_eos,
            continuous_usage_stats: self.continuous_usage_stats,
            goodput: SloEcho {
                ttft_ms: self.goodput.ttft_ms,
                tpot_ms: self.goodput.tpot_ms,
                e2el_ms: self.goodput.e2el_ms,
            },
            percentiles: self.percentiles.clone(),
            save_detailed: self.save_detailed,
            request_timeout: self.request_timeout.as_secs_f64(),
            idle_timeout: self.idle_timeout.map(|d| d.as_secs_f64()),
            interrupt_grace: self.interrupt_grace.as_secs_f64(),
            tp: self.tp,
            deployment: self.deployment.clone(),
            metadata: self.metadata.clone(),
            ca_cert: self.ca_cert.as_ref().map(|p| p.display().to_string()),
            server_metrics_interval: self.server_metrics_interval.map(|d| d.as_secs_f64()),
            transport: self.transport,
        }
    }

    /// GPUs the server uses: the declared deployment's, else the tensor-parallel size.
    pub fn gpus(&self) -> u32 {
        self.deployment.as_ref().map_or(self.tp, |d| d.gpus).max(1)
    }

    /// The full URL requests are posted to.
    pub fn url(&self) -> reqwest::Url {
        self.base_url.join(&self.endpoint.path)
    }

    /// A configuration with common defaults, for tests and embedding; binaries set every field
    /// from flags.
    pub fn new(model: &str, tokenizer: &str, base_url: BaseUrl) -> Self {
        Self {
            model: model.to_string(),
            tokenizer: tokenizer.to_string(),
            base_url,
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
            warmup_output_len: None,
            max_concurrency: None,
            request_rate: RequestRate::Infinite,
            burstiness: 1.0,
            ignore_eos: true,
            continuous_usage_stats: false,
            goodput: Slo::default(),
            percentiles: vec![50.0, 90.0, 95.0, 99.0],
            save_detailed: false,
            request_timeout: Duration::from_secs(1800),
            idle_timeout: Some(IDLE_TIMEOUT),
            ca_cert: None,
            server_metrics_interval: Some(SERVER_METRICS_INTERVAL),
            interrupt_grace: Duration::from_secs(5),
            tp: 1,
            deployment: None,
            metadata: Vec::new(),
            api_key: None,
            transport: TransportKind::Native,
            client: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> BaseUrl {
        BaseUrl::parse(raw).expect("a base URL")
    }

    #[test]
    fn endpoints_and_urls() {
        assert_eq!(
            Endpoint::parse("/v1/chat/completions").map(|e| e.api),
            Some(ApiKind::Chat)
        );
        assert!(Endpoint::parse("/v1/embeddings").is_none());
        let c = RunConfig::new("m", "t", url("HTTP://H:8000/"));
        assert_eq!(c.url().as_str(), "http://h:8000/v1/completions");
        assert_eq!(c.base_url.as_str(), "http://h:8000");
        let behind = RunConfig::new("m", "t", url("https://gw.example/serve/"));
        assert_eq!(
            behind.url().as_str(),
            "https://gw.example/serve/v1/completions"
        );
        assert!(matches!(
            BaseUrl::parse("node12:8000"),
            Err(BadUrl::NotHttp(_))
        ));
        assert!(matches!(
            BaseUrl::parse("http//node12"),
            Err(BadUrl::Unparsable { .. })
        ));
    }

    #[test]
    fn the_echo_never_holds_the_api_key() {
        let mut c = RunConfig::new("m", "t", url("http://h"));
        c.api_key = Some("sk-secret".into());
        let json = serde_json::to_string(&c.settings()).expect("serializes");
        assert!(!json.contains("sk-secret"));
        assert!(json.contains("\"request_rate\":\"inf\""));
    }
}
