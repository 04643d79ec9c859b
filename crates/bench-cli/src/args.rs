//! The flags of a run, named as the Python `benchmark_serving_random.py` script names them, and
//! their validation into a [`RunConfig`].
//!
//! [`CommonArgs`] are the flags that apply to every run of a sweep too; [`Shape`] holds the ones
//! `bench` takes as flags and a sweep sets per cell.

// Flag docs are `--help` text, where `<host>` is a placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use bench_core::config::Deployment;
use bench_core::config::{BaseUrl, TransportKind};
use bench_core::config::{Endpoint, RequestRate, RunConfig, Slo};
use bench_core::prompt::{PromptSpec, SeedOrigin};
use clap::Args;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// A flag value that cannot be used, with the flag's name in the message.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct UsageError {
    pub flag: &'static str,
    pub message: String,
}

fn usage(flag: &'static str, message: impl Into<String>) -> UsageError {
    UsageError {
        flag,
        message: message.into(),
    }
}

/// Flags shared by `bench` and `sweep`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Model name sent in every request (as the server serves it).
    #[arg(long, default_value = "default")]
    pub model: String,

    /// Tokenizer for building prompts: a tokenizer.json (or .json.gz), a folder holding one, or a
    /// Hugging Face model id from the local cache (HF_HOME, HF_HUB_CACHE; downloaded unless
    /// HF_HUB_OFFLINE=1). Defaults to --model.
    #[arg(long)]
    pub tokenizer: Option<String>,

    /// Server root URL [default: http://<host>:<port>].
    #[arg(long)]
    pub base_url: Option<String>,

    /// Server host, used when --base-url is not given [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,

    /// Server port, used when --base-url is not given [default: 8000].
    #[arg(long)]
    pub port: Option<u16>,

    /// API route: /v1/completions or /v1/chat/completions.
    #[arg(long, default_value = "/v1/completions")]
    pub endpoint: String,

    /// Prompt lengths are drawn uniformly from [L*(1-r), L*(1+r)]; r in [0, 1).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub random_range_ratio: f64,

    /// Tokens of shared prefix at the start of every prompt (added to the input length).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub random_prefix_len: i64,

    /// Requests per second ("inf": all at once). Poisson arrivals, or gamma with --burstiness.
    #[arg(long, default_value = "inf", allow_negative_numbers = true)]
    pub request_rate: String,

    /// Gamma shape of arrival gaps: 1 is Poisson, below 1 burstier, above 1 steadier.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub burstiness: f64,

    /// Seed for prompts and arrivals: the same seed gives the same requests, so a server that
    /// served them before may answer from its prefix cache [default: a fresh seed every run,
    /// recorded in the result]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Ask the server to ignore end-of-sequence so every request generates the full length.
    #[arg(long)]
    pub ignore_eos: bool,

    /// Ask for usage on every event (vLLM's stream_options.continuous_usage_stats), so events
    /// that carry several tokens (speculative decoding, stream intervals) are counted exactly
    /// for per-token gaps; without it they come from token ids or the tokenizer.
    #[arg(long)]
    pub continuous_usage_stats: bool,

    /// Tokens each warm-up request asks for: warm-up requests open connections and warm the
    /// server, and nothing of them is measured, so fewer tokens make the warm-up shorter
    /// [default: the measured requests' output length]
    #[arg(long, value_name = "TOKENS", allow_negative_numbers = true)]
    pub warmup_output_len: Option<i64>,

    /// SLOs for goodput in milliseconds, e.g. --goodput ttft:2000 tpot:50 e2el:10000.
    #[arg(long, num_args = 1.., value_name = "METRIC:MS")]
    pub goodput: Vec<String>,

    /// KEY=VALUE pairs written into the result file as top-level keys.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,

    /// No progress output.
    #[arg(long)]
    pub disable_tqdm: bool,

    /// Percentiles to report, comma-separated.
    #[arg(long, alias = "metric-percentiles", default_value = "50,90,95,99")]
    pub percentiles: String,

    /// Write per-request arrays (input_lens, output_lens, ttfts, itls, errors) to the result.
    #[arg(long)]
    pub save_detailed: bool,

    /// Give up on one request after this long in all (seconds, or e.g. "90s", "30m").
    #[arg(long, default_value = "30m")]
    pub request_timeout: String,

    /// Give up on one request when nothing arrives for this long ("off": only
    /// --request-timeout); its failure reason is idle_timeout.
    #[arg(long, default_value = "10m")]
    pub idle_timeout: String,

    /// For https:// servers: also trust the CA certificates in this PEM file (a private CA).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Tensor-parallel size of the server, for per-GPU figures [default: --metadata tp=N, else 1].
    #[arg(long, allow_negative_numbers = true)]
    pub tp: Option<i64>,

    #[command(flatten)]
    pub deployment: DeploymentArgs,

    /// How often to scrape the server's /metrics while the run goes on (also at its start and
    /// end): its own token counts, prefix-cache hits and latencies go into the result.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub server_metrics_interval: String,

    /// Do not scrape the server's /metrics.
    #[arg(long)]
    pub no_server_metrics: bool,

    /// The HTTP stack requests go over (docs/performance.md compares the two).
    #[arg(long, value_enum, default_value_t = Transport::Native)]
    pub transport: Transport,
}

/// The server's configuration and topology, recorded in the result (`config.deployment`) so
/// per-GPU figures divide by its GPUs and campaigns compare configurations.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Deployment (recorded in the result)")]
pub struct DeploymentArgs {
    /// Name of the server's configuration, e.g. a campaign's `[[config]]` name.
    #[arg(long, value_name = "NAME")]
    pub deployment: Option<String>,
    /// GPUs the whole server uses, over every node and replica; per-GPU figures divide by it
    /// [default: tp x pp x dp].
    #[arg(long, allow_negative_numbers = true)]
    pub gpus: Option<i64>,
    /// Nodes the server runs on [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub nodes: Option<i64>,
    /// Pipeline-parallel size of the server [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub pp: Option<i64>,
    /// Data-parallel size of the server (engine replicas) [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub dp: Option<i64>,
    /// The server spreads experts over its GPUs (expert parallelism).
    #[arg(long)]
    pub expert_parallel: bool,
}

impl DeploymentArgs {
    /// The deployment, when any of its flags was given; `tp` is the run's tensor-parallel size.
    pub fn resolve(&self, tp: u32) -> Result<Option<Deployment>, UsageError> {
        let given = self.deployment.is_some()
            || self.gpus.is_some()
            || self.nodes.is_some()
            || self.pp.is_some()
            || self.dp.is_some()
            || self.expert_parallel;
        if !given {
            return Ok(None);
        }
        let size = |flag: &'static str, v: Option<i64>| -> Result<u32, UsageError> {
            match v {
                None => Ok(1),
                Some(n) => u32::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| usage(flag, format!("must be at least 1, got {n}"))),
            }
        };
        let (nodes, pp, dp) = (
            size("--nodes", self.nodes)?,
            size("--pp", self.pp)?,
            size("--dp", self.dp)?,
        );
        let ranks = u64::from(tp) * u64::from(pp) * u64::from(dp);
        let gpus = match self.gpus {
            None => u32::try_from(ranks)
                .map_err(|_| usage("--gpus", format!("tp x pp x dp = {ranks} is too large")))?,
            Some(_) => size("--gpus", self.gpus)?,
        };
        if u64::from(gpus) < ranks {
            return Err(usage(
                "--gpus",
                format!("{gpus} is fewer than tp x pp x dp = {tp} x {pp} x {dp} = {ranks}"),
            ));
        }
        if nodes > gpus {
            return Err(usage(
                "--nodes",
                format!("{nodes} nodes for {gpus} GPUs: every node runs at least one"),
            ));
        }
        if let Some(name) = &self.deployment {
            if name.trim().is_empty() {
                return Err(usage("--deployment", "must not be empty"));
            }
        }
        Ok(Some(Deployment {
            name: self.deployment.clone(),
            gpus,
            nodes,
            pp,
            dp,
            expert_parallel: self.expert_parallel,
        }))
    }
}

/// `--transport`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// HTTP/1.1, no proxy; on Linux every event is timed by when the kernel received it.
    Native,
    /// reqwest: HTTP/2 where an https:// server offers it, HTTP_PROXY, HTTPS_PROXY and NO_PROXY
    /// honoured, any OS; events are timed when its body stream yields them.
    Standard,
}

impl From<Transport> for TransportKind {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Native => Self::Native,
            Transport::Standard => Self::Standard,
        }
    }
}

/// The per-run numbers a sweep sets for each cell.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub input_len: i64,
    pub output_len: i64,
    pub num_prompts: i64,
    pub max_concurrency: Option<i64>,
    pub num_warmups: i64,
}

fn positive(flag: &'static str, v: i64) -> Result<u64, UsageError> {
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| usage(flag, format!("must be at least 1, got {v}")))
}

fn non_negative(flag: &'static str, v: i64) -> Result<u64, UsageError> {
    u64::try_from(v).map_err(|_| usage(flag, format!("must not be negative, got {v}")))
}

/// The longest prompt or output asked for: 4M tokens, longer than any model's context.
pub const MAX_TOKENS: u64 = 1 << 22;

/// All prompts of a run together, in tokens: 1G tokens is about 16 GiB of prompt text and
/// token ids in memory, past what a benchmark client should hold.
pub const MAX_PROMPT_TOKENS: u64 = 1 << 30;

fn tokens(flag: &'static str, v: i64, at_least: u64) -> Result<u64, UsageError> {
    let n = if at_least == 0 {
        non_negative(flag, v)?
    } else {
        positive(flag, v)?
    };
    check_tokens(flag, n)
}

/// Refuses a length in tokens above [`MAX_TOKENS`], naming `flag`.
pub fn check_tokens(flag: &'static str, n: u64) -> Result<u64, UsageError> {
    if n > MAX_TOKENS {
        return Err(usage(
            flag,
            format!("at most {MAX_TOKENS} tokens (longer than any model's context), got {n}"),
        ));
    }
    Ok(n)
}

/// Refuses a prompt set too large to hold in memory before any of it is built, naming `flag`
/// (the flag that sets the number of prompts).
pub fn check_prompt_volume(
    flag: &'static str,
    input_len: u64,
    prompts: u64,
    warmups: u64,
) -> Result<(), UsageError> {
    let total = input_len.saturating_mul(prompts.saturating_add(warmups));
    if total > MAX_PROMPT_TOKENS {
        return Err(usage(
            flag,
            format!(
                "{prompts} prompts (and {warmups} warm-ups) of {input_len} tokens are {total} \
                 tokens, about {} GiB in memory; at most {MAX_PROMPT_TOKENS} tokens per run",
                total / (1 << 26)
            ),
        ));
    }
    Ok(())
}

impl CommonArgs {
    /// Checks every flag and builds the run's configuration.
    pub fn to_config(&self, shape: Shape) -> Result<RunConfig, UsageError> {
        let endpoint = Endpoint::parse(&self.endpoint).ok_or_else(|| {
            usage(
                "--endpoint",
                format!(
                    "`{}` is not supported; use /v1/completions or /v1/chat/completions",
                    self.endpoint
                ),
            )
        })?;
        let base_url = self.base_url()?;
        let r = self.random_range_ratio;
        if !(0.0..1.0).contains(&r) {
            return Err(usage(
                "--random-range-ratio",
                format!("must be in [0, 1), got {r}"),
            ));
        }
        if !(self.burstiness.is_finite() && self.burstiness > 0.0) {
            return Err(usage(
                "--burstiness",
                format!("must be above 0, got {}", self.burstiness),
            ));
        }
        let metadata = parse_metadata(&self.metadata)?;
        let tp = self.tensor_parallel(&metadata)?;
        let max_concurrency = match shape.max_concurrency {
            None => None,
            Some(c) => Some(
                NonZeroUsize::new(positive("--max-concurrency", c)? as usize)
                    .ok_or_else(|| usage("--max-concurrency", "must be at least 1"))?,
            ),
        };
        let tokenizer = self.tokenizer.clone().unwrap_or_else(|| self.model.clone());
        let input_len = tokens("--random-input-len", shape.input_len, 1)?;
        let num_prompts = positive("--num-prompts", shape.num_prompts)?;
        let num_warmups = non_negative("--num-warmups", shape.num_warmups)?;
        check_prompt_volume("--num-prompts", input_len, num_prompts, num_warmups)?;
        Ok(RunConfig {
            model: self.model.clone(),
            tokenizer,
            base_url,
            endpoint,
            prompt: PromptSpec {
                input_len,
                range_ratio: r,
                prefix_len: tokens("--random-prefix-len", self.random_prefix_len, 0)?,
                seed: self.seed.unwrap_or_else(bench_core::prompt::fresh_seed),
                seed_origin: match self.seed {
                    Some(s) => SeedOrigin::Given(s),
                    None => SeedOrigin::Random,
                },
            },
            output_len: tokens("--random-output-len", shape.output_len, 1)?,
            num_prompts: num_prompts as usize,
            num_warmups: num_warmups as usize,
            warmup_output_len: self.warmup_output_len()?,
            max_concurrency,
            request_rate: parse_rate(&self.request_rate)?,
            burstiness: self.burstiness,
            ignore_eos: self.ignore_eos,
            continuous_usage_stats: self.continuous_usage_stats,
            goodput: parse_goodput(&self.goodput)?,
            percentiles: parse_percentiles(&self.percentiles)?,
            save_detailed: self.save_detailed,
            request_timeout: parse_duration("--request-timeout", &self.request_timeout)?,
            idle_timeout: self.idle_timeout()?,
            ca_cert: self.ca_cert.clone().map(check_ca_cert).transpose()?,
            server_metrics_interval: self.server_metrics_interval()?,
            interrupt_grace: Duration::from_secs(5),
            tp,
            deployment: self.deployment.resolve(tp)?,
            metadata,
            api_key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            transport: self.transport.into(),
            client: None,
        })
    }

    /// `--warmup-output-len`; `None` when not given.
    fn warmup_output_len(&self) -> Result<Option<u64>, UsageError> {
        self.warmup_output_len
            .map(|v| tokens("--warmup-output-len", v, 1))
            .transpose()
    }

    /// `--idle-timeout`; `None` when "off".
    fn idle_timeout(&self) -> Result<Option<Duration>, UsageError> {
        match self.idle_timeout.as_str() {
            "off" => Ok(None),
            s => parse_duration("--idle-timeout", s).map(Some),
        }
    }

    /// `--server-metrics-interval`, or `None` with `--no-server-metrics`.
    fn server_metrics_interval(&self) -> Result<Option<Duration>, UsageError> {
        if self.no_server_metrics {
            return Ok(None);
        }
        let every = parse_duration("--server-metrics-interval", &self.server_metrics_interval)?;
        if every < Duration::from_millis(100) {
            return Err(usage(
                "--server-metrics-interval",
                "must be at least 100ms; use --no-server-metrics to turn scraping off",
            ));
        }
        Ok(Some(every))
    }

    /// A tokenizer that cannot be had, as a usage error; when `--tokenizer` was not given,
    /// saying that `--model`'s value stood in for it.
    pub fn tokenizer_error(&self, e: &bench_core::RunError) -> UsageError {
        let message = match &self.tokenizer {
            Some(_) => e.to_string(),
            None => format!(
                "not given, so --model's value `{}` stood in for it, and {e}; pass --tokenizer \
                 (a tokenizer.json, a folder holding one, or a Hugging Face model id)",
                self.model
            ),
        };
        usage("--tokenizer", message)
    }

    /// `--tp`, else a `tp=N` metadata pair (the old scripts declared it that way), else 1.
    fn tensor_parallel(&self, metadata: &[(String, String)]) -> Result<u32, UsageError> {
        let from_meta = metadata.iter().find(|(k, _)| k == "tp").map(|(_, v)| v);
        let meta_tp = match from_meta {
            Some(v) => Some(v.parse::<u32>().ok().filter(|t| *t > 0).ok_or_else(|| {
                usage(
                    "--metadata",
                    format!("tp={v} is not a tensor-parallel size of 1 or more"),
                )
            })?),
            None => None,
        };
        let tp = match self.tp {
            Some(t) => Some(
                u32::try_from(t)
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| usage("--tp", format!("must be at least 1, got {t}")))?,
            ),
            None => None,
        };
        match (tp, meta_tp) {
            (Some(a), Some(b)) if a != b => Err(usage(
                "--tp",
                format!("{a} disagrees with --metadata tp={b}"),
            )),
            (Some(a), _) => Ok(a),
            (None, b) => Ok(b.unwrap_or(1)),
        }
    }

    /// `--base-url`, else `http://<host>:<port>`, checked to be an http(s) URL.
    pub fn base_url(&self) -> Result<BaseUrl, UsageError> {
        let (flag, raw) = match &self.base_url {
            Some(u) => ("--base-url", u.clone()),
            None => (
                "--host",
                format!(
                    "http://{}:{}",
                    self.host.as_deref().unwrap_or("127.0.0.1"),
                    self.port.unwrap_or(8000)
                ),
            ),
        };
        BaseUrl::parse(&raw).map_err(|e| usage(flag, e.to_string()))
    }
}

fn parse_rate(s: &str) -> Result<RequestRate, UsageError> {
    if s.eq_ignore_ascii_case("inf") {
        return Ok(RequestRate::Infinite);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(RequestRate::PerSecond(r)),
        Ok(r) if r.is_infinite() && r > 0.0 => Ok(RequestRate::Infinite),
        _ => Err(usage(
            "--request-rate",
            format!("must be \"inf\" or a number above 0, got `{s}`"),
        )),
    }
}

fn parse_goodput(items: &[String]) -> Result<Slo, UsageError> {
    let mut slo = Slo::default();
    for item in items {
        let (name, value) = item.split_once(':').ok_or_else(|| {
            usage(
                "--goodput",
                format!("`{item}` is not METRIC:MS (e.g. ttft:2000)"),
            )
        })?;
        let ms: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                usage(
                    "--goodput",
                    format!("`{value}` in `{item}` is not a number of milliseconds above 0"),
                )
            })?;
        let slot = match name {
            "ttft" => &mut slo.ttft_ms,
            "tpot" => &mut slo.tpot_ms,
            "e2el" => &mut slo.e2el_ms,
            other => {
                return Err(usage(
                    "--goodput",
                    format!("unknown metric `{other}`; use ttft, tpot or e2el"),
                ))
            }
        };
        *slot = Some(ms);
    }
    Ok(slo)
}

fn parse_percentiles(s: &str) -> Result<Vec<f64>, UsageError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let q: f64 = part
            .parse()
            .ok()
            .filter(|q| (0.0..=100.0).contains(q) && *q > 0.0)
            .ok_or_else(|| {
                usage(
                    "--percentiles",
                    format!("`{part}` is not a number in (0, 100]"),
                )
            })?;
        if !out.contains(&q) {
            out.push(q);
        }
    }
    if out.is_empty() {
        return Err(usage("--percentiles", "give at least one, e.g. 50,90,99"));
    }
    Ok(out)
}

fn parse_metadata(items: &[String]) -> Result<Vec<(String, String)>, UsageError> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(usage("--metadata", format!("`{item}` is not KEY=VALUE"))),
        })
        .collect()
}

/// Seconds as a number, or a humantime duration ("90s", "30m", "1h").
pub fn parse_duration(flag: &'static str, s: &str) -> Result<Duration, UsageError> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs > 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(usage(flag, format!("must be above 0, got `{s}`")));
    }
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            usage(
                flag,
                format!("`{s}` is not a duration (e.g. 600, 90s, 30m)"),
            )
        })
}

/// `--ca-cert` must hold at least one PEM certificate.
fn check_ca_cert(path: PathBuf) -> Result<PathBuf, UsageError> {
    bench_core::tls::extra_roots(&path).map_err(|e| usage("--ca-cert", e.to_string()))?;
    Ok(path)
}
