//! The sections of inferperf's own keys (docs/result-format.md says what each figure means).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `tool`: who wrote the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// `per_gpu`: throughputs divided by the server's GPUs (`config.deployment.gpus` where declared,
/// else the tensor-parallel size).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerGpu {
    pub input_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
}

/// One reason requests failed for: how many, and the first message seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureGroup {
    pub count: u64,
    pub example: String,
}

/// `output`: how output arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputCounts {
    pub events: u64,
    pub multi_token_events: u64,
    /// Events whose token count is known (from token ids, per-event usage, one token per event,
    /// or the tokenizer): `multi_token_events` over this is the multi-token share.
    pub events_with_token_counts: u64,
    /// Output events read together with the next one of their stream, so stamped with its time.
    pub events_sharing_a_read: u64,
    pub usage_fallbacks: u64,
    /// Fewer tokens than asked despite `ignore_eos`.
    pub short_outputs: u64,
}

/// One entry of `integrity`: completed streams that broke a promise of the protocol, and the
/// first of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Violation {
    pub count: u64,
    /// The `x-request-id` of the first request (in sending order) that broke it.
    pub example_request_id: Option<String>,
}

/// `prompt_lengths`: the built prompts against their targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptLengths {
    pub count: u64,
    pub target_mean: f64,
    pub mean: f64,
    pub min: u64,
    pub max: u64,
    pub missed: u64,
    pub max_abs_miss: u64,
    pub verified_by_reencoding: u64,
    pub build_seconds: f64,
}

/// `server_prompt_tokens`: what the server said the prompts were, against the client's count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptCheck {
    pub reported: u64,
    pub mismatched: u64,
    pub max_abs_diff: u64,
    /// Mean of (server - client).
    pub mean_diff: f64,
}

/// One metric's samples summarised (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// `p<label>` (vLLM's percentile labels: `p99`, `p99.9`) to value.
    pub percentiles: BTreeMap<String, f64>,
}

/// `distributions_ms`: every latency in full.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Distributions {
    pub ttft: Summary,
    pub tpot: Summary,
    pub itl: Summary,
    /// Per-token gaps: an event of k tokens a gap g after the previous gives k gaps of g / k.
    #[serde(default)]
    pub itl_per_token: Option<Summary>,
    pub e2el: Summary,
    /// Lateness of sends against the arrival schedule (rate mode).
    pub send_lag: Option<Summary>,
    /// A closed loop's turnaround: a request's end to the next send into its slot.
    #[serde(default)]
    pub turnaround: Option<Summary>,
}

/// `steady_state`: the run's figures over the window in which the requests in flight stayed at
/// the concurrency limit (docs/metrics.md, "Steady state").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SteadyWindow {
    /// Requests in flight that count as at the limit: `max(1, floor(0.95 x limit))`.
    pub level: u64,
    /// The window's bounds, seconds from the run's first send.
    pub start_s: f64,
    pub end_s: f64,
    /// Share of the window with at least `level` requests in flight.
    pub held_share: f64,
    /// Completed requests sent and ended inside the window, and their share of all completed.
    pub requests: u64,
    pub request_share: f64,
    /// Enough requests inside to stand for the plateau (docs/metrics.md states the rule).
    pub trusted: bool,
    pub request_throughput: f64,
    pub input_throughput: f64,
    pub output_throughput: f64,
    pub interactivity: f64,
    pub ttft: Summary,
    pub tpot: Summary,
    pub itl: Summary,
    pub e2el: Summary,
}

/// `warmup`: the phase before the measured one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Warmup {
    pub requests: u64,
    pub completed: u64,
    pub failed: u64,
    pub seconds: f64,
}

/// Where event timestamps came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timestamps {
    /// The kernel's arrival time of each read's newest bytes.
    Kernel,
    /// When each read returned.
    #[default]
    Read,
    /// Some of each.
    Mixed,
}

/// `client`: the client's own cost, and whether it may have been the limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientSection {
    pub cpu_seconds: Option<f64>,
    /// CPU seconds per wall second; `cores` is the ceiling.
    pub cpu_utilization: Option<f64>,
    pub cores: u64,
    pub cpu_seconds_per_100k_events: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub runtime_lag_p50_ms: f64,
    pub runtime_lag_p99_ms: f64,
    pub runtime_lag_max_ms: f64,
    /// Which transport carried the requests (as `config.transport`), beside what it made of
    /// their timestamps.
    pub transport: crate::settings::TransportKind,
    pub timestamps: Timestamps,
    pub read_wait_p50_ms: Option<f64>,
    pub read_wait_p99_ms: Option<f64>,
    pub read_wait_max_ms: Option<f64>,
    pub client_bound: bool,
    pub warnings: Vec<String>,
}

/// `clients`: a run measured by several client processes at once and merged into this file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Clients {
    /// How many clients sent this run's requests.
    pub count: u32,
    /// The latest client's first send after the earliest's, by the machines' wall clocks.
    pub start_skew_ms: f64,
    pub each: Vec<ClientShare>,
}

/// One client's part of a merged run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientShare {
    pub client: u32,
    pub hostname: String,
    pub requests: u64,
    pub completed: u64,
    /// Its first send after the earliest client's, by the wall clocks.
    pub first_send_ms: f64,
    /// Its own last end after its own first send, on its own clock.
    pub span_s: f64,
    pub client_bound: bool,
}

/// `system`: the machine the client ran on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemInfo {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cores: u64,
}

/// Which server's metric names a `/metrics` page carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Vllm,
    Sglang,
    /// `bench-sim`: vLLM's names and its own schedule counters.
    InferperfSim,
    /// Prometheus text with none of those names.
    Unknown,
}

/// Gauge peaks over the scrapes taken while the measured phase ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Peaks {
    #[serde(rename = "peak_running")]
    pub running: Option<f64>,
    #[serde(rename = "peak_waiting")]
    pub waiting: Option<f64>,
    #[serde(rename = "peak_kv_cache_usage")]
    pub kv_cache_usage: Option<f64>,
}

/// The simulator's schedule over the phase (see `bench_sim::lateness`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimSchedule {
    pub time_scale: f64,
    pub steps: f64,
    pub late_steps: f64,
    pub step_lateness_p99_ms: Option<f64>,
    pub events: f64,
    pub late_events: f64,
    pub event_lateness_p99_ms: Option<f64>,
    /// Upper bound of the largest event lateness (exact when reached in this phase).
    pub event_lateness_max_ms: Option<f64>,
    /// Wall seconds of modelled time lost by restarting late steps.
    pub lost_seconds: f64,
    pub prompts_counted: f64,
    pub prompt_counting_mean_ms: Option<f64>,
    /// On a stepped clock (the engine waits for its in-process client after each step): its
    /// windows in the phase, and those that went on without what the client owed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stepped_windows: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stepped_timeouts: Option<f64>,
}

/// What the server counted over the measured phase, from its `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    pub kind: Option<ServerKind>,
    /// Successful scrapes: start, end and those in between.
    pub scrapes: u64,
    /// A counter went backwards (a restart): the deltas are left out.
    pub counters_reset: bool,
    pub prompt_tokens: Option<f64>,
    pub generation_tokens: Option<f64>,
    pub prefix_cache_queries: Option<f64>,
    pub prefix_cache_hits: Option<f64>,
    pub warmup_prefix_cache_hits: Option<f64>,
    pub preemptions: Option<f64>,
    pub requests: Option<f64>,
    #[serde(flatten)]
    pub peaks: Peaks,
    pub ttft_mean_ms: Option<f64>,
    pub itl_mean_ms: Option<f64>,
    pub e2el_mean_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimSchedule>,
}

impl ServerView {
    /// Share of the phase's prompt tokens the server found in its prefix cache.
    pub fn prefix_cache_hit_share(&self) -> Option<f64> {
        let (q, h) = (self.prefix_cache_queries?, self.prefix_cache_hits?);
        (q > 0.0).then(|| h / q)
    }
}

/// `server`: the server's view of the run, or why there is none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSection {
    #[serde(flatten)]
    pub view: Option<ServerView>,
    /// Why `/metrics` gave nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}
