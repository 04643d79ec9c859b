//! The result file: one [`ResultFile`] per run, written atomically.
//!
//! It is a superset of three vocabularies (docs/result-format.md lists every key):
//! - the Python sweep script's keys, times in **seconds** (`median_ttft`, `p99_tpot`, ...);
//! - `vllm bench serve`'s keys, times in **milliseconds** (`mean_ttft_ms`, `p99_itl_ms`, ...) and,
//!   with `--save-detailed`, its per-request arrays (`ttfts` and `itls` in seconds, as vLLM);
//! - inferperf's own: schema version, tool version, the configuration echoed back (never the API
//!   key), interactivity, failures by reason, prompt-length checks, the client's overhead and the
//!   server's own view.
//!
//! The model is `bench_result`'s, the one every reader uses too.

use crate::metrics::RunMetrics;
use crate::record::FailureReason;
use crate::report::RunReport;
use crate::stats::Distribution;
use bench_result::requests::RequestLine;
use bench_result::sections::{Distributions, OutputCounts, PerGpu, SteadyWindow, Summary, Tool};
pub use bench_result::{percentile_label, ResultFile, SCHEMA_VERSION};
use bench_result::{Metric, Stat};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Builds the whole result.
pub fn to_file(report: &RunReport) -> ResultFile {
    let mut f = ResultFile::default();
    python_keys(&mut f, report);
    vllm_keys(&mut f, report);
    own_keys(&mut f, report);
    sim_keys(&mut f, report);
    if report.config.save_detailed {
        detailed(&mut f, report);
    }
    metadata_keys(&mut f, report);
    f
}

/// The result as JSON (what [`write_atomic`] writes).
pub fn to_json(report: &RunReport) -> Value {
    serde_json::to_value(to_file(report)).unwrap_or(Value::Null)
}

fn python_keys(f: &mut ResultFile, r: &RunReport) {
    let c = &r.config;
    let m = &r.metrics;
    let s = |ms: f64| ms / 1e3;
    let p99 = |d: &Distribution| s(d.percentile(99.0).unwrap_or(0.0));
    f.date = Some(r.started_at.format("%Y%m%d-%H%M%S").to_string());
    f.model_id = Some(c.model.clone());
    f.tokenizer_id = Some(c.tokenizer.clone());
    f.num_prompts = Some(c.num_prompts as u64);
    f.request_rate = Some(c.request_rate.echo());
    f.burstiness = Some(c.burstiness);
    f.max_concurrency = c.max_concurrency.map(|n| n.get() as u64);
    f.duration = Some(m.duration.as_secs_f64());
    f.completed = Some(m.completed as u64);
    f.good_completed = Some(m.good_completed as u64);
    f.total_input_tokens = Some(m.total_input_tokens);
    f.total_output_tokens = Some(m.total_output_tokens);
    f.request_throughput = Some(m.request_throughput);
    f.request_goodput = Some(m.request_goodput);
    f.input_throughput = Some(m.input_throughput);
    f.output_throughput = Some(m.output_throughput);
    f.median_ttft = Some(s(m.ttft_ms.median));
    f.p99_ttft = Some(p99(&m.ttft_ms));
    f.median_e2el = Some(s(m.e2el_ms.median));
    f.p99_e2el = Some(p99(&m.e2el_ms));
    f.median_tpot = Some(s(m.tpot_ms.median));
    f.p99_tpot = Some(p99(&m.tpot_ms));
}

fn vllm_keys(f: &mut ResultFile, r: &RunReport) {
    let m = &r.metrics;
    f.failed = Some(m.failed as u64);
    f.total_token_throughput = Some(m.total_token_throughput);
    f.max_output_tokens_per_s = Some(m.max_output_tokens_per_s);
    f.max_concurrent_requests = Some(m.max_concurrent_requests as u64);
    for (metric, d) in [
        (Metric::Ttft, &m.ttft_ms),
        (Metric::Tpot, &m.tpot_ms),
        (Metric::Itl, &m.itl_ms),
        (Metric::E2el, &m.e2el_ms),
    ] {
        f.set_latency_ms(metric, Stat::Mean, d.mean);
        f.set_latency_ms(metric, Stat::Median, d.median);
        f.set_latency_ms(metric, Stat::Std, d.std);
        for &q in &r.config.percentiles {
            let v = d.percentile(q).unwrap_or(0.0);
            f.set_latency_ms(metric, Stat::Percentile(q), v);
        }
    }
}

fn own_keys(f: &mut ResultFile, r: &RunReport) {
    let m = &r.metrics;
    let gpus = f64::from(r.config.gpus());
    f.schema_version = Some(SCHEMA_VERSION);
    f.tool = Some(Tool {
        name: "inferperf".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    });
    f.started_at = Some(r.started_at.to_rfc3339());
    f.interrupted = Some(r.interrupted);
    f.not_sent = Some(r.not_sent as u64);
    f.interactivity = Some(m.interactivity);
    f.peak_concurrency = Some(m.peak_concurrency as u64);
    f.tp = Some(r.config.tp);
    f.per_gpu = Some(PerGpu {
        input_throughput: m.input_throughput / gpus,
        output_throughput: m.output_throughput / gpus,
        total_token_throughput: m.total_token_throughput / gpus,
    });
    f.failures = Some(m.failures.clone());
    f.output = Some(OutputCounts {
        events: m.output_events,
        multi_token_events: m.multi_token_events,
        events_with_token_counts: m.events_with_token_counts,
        events_sharing_a_read: m.events_sharing_a_read,
        usage_fallbacks: m.usage_fallbacks as u64,
        short_outputs: m.short_outputs as u64,
    });
    f.integrity = Some(
        m.integrity
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect(),
    );
    f.prompt_lengths = Some(r.prompt_stats.clone());
    f.server_prompt_tokens = Some(m.prompt_check.clone());
    f.distributions_ms = Some(distributions(m));
    f.steady_state = m.steady_state.as_ref().map(steady_window);
    f.warmup = r.warmup;
    f.client = Some(r.client.clone());
    f.server = Some(r.server.clone());
    f.system = Some(r.system.clone());
    f.clients = r.clients.clone();
    f.config = Some(r.config.settings());
    f.metadata = Some(r.config.metadata.iter().cloned().collect());
}

/// `sim_*`: how well the simulator kept its schedule, when the server was `bench-sim`.
fn sim_keys(f: &mut ResultFile, r: &RunReport) {
    let Some(sim) = r.server.view.as_ref().and_then(|v| v.sim.as_ref()) else {
        return;
    };
    let duration = r.metrics.duration.as_secs_f64();
    f.sim_time_scale = Some(sim.time_scale);
    f.sim_steps = Some(sim.steps);
    f.sim_late_steps = Some(sim.late_steps);
    f.sim_step_lateness_p99_ms = sim.step_lateness_p99_ms;
    f.sim_events = Some(sim.events);
    f.sim_late_events = Some(sim.late_events);
    f.sim_event_lateness_p99_ms = sim.event_lateness_p99_ms;
    f.sim_event_lateness_max_ms = sim.event_lateness_max_ms;
    f.sim_time_lost_share = Some(crate::judge::sim_lost_share(sim, duration));
    f.sim_kept_schedule = Some(crate::judge::sim_schedule(sim, duration).next().is_none());
    if sim.stepped_windows.is_some() {
        f.sim_clock = Some("stepped".into());
        f.sim_stepped_timeouts = sim.stepped_timeouts;
    }
}

/// `--metadata` pairs also at top level, as the Python script wrote them, unless a key of the
/// result already has the name (`tp` is the result's own integer key, validated to agree).
fn metadata_keys(f: &mut ResultFile, r: &RunReport) {
    let taken = serde_json::to_value(&*f).unwrap_or(Value::Null);
    for (k, v) in &r.config.metadata {
        if k == "tp" {
            continue;
        }
        if taken.get(k).is_some() {
            tracing::warn!("--metadata {k}=... not written at top level: the key is already a result key; it is kept under \"metadata\"");
        } else {
            f.extra.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

fn summary(d: &Distribution) -> Summary {
    Summary {
        count: d.count as u64,
        mean: d.mean,
        median: d.median,
        std: d.std,
        min: d.min,
        max: d.max,
        percentiles: d
            .percentiles
            .iter()
            .map(|(q, v)| (format!("p{}", percentile_label(*q)), *v))
            .collect(),
    }
}

/// Every distribution in full, including min, max and count, keyed by percentile label.
fn distributions(m: &RunMetrics) -> Distributions {
    Distributions {
        ttft: summary(&m.ttft_ms),
        tpot: summary(&m.tpot_ms),
        itl: summary(&m.itl_ms),
        itl_per_token: m.itl_per_token_ms.as_ref().map(summary),
        e2el: summary(&m.e2el_ms),
        send_lag: m.send_lag_ms.as_ref().map(summary),
        turnaround: m.turnaround_ms.as_ref().map(summary),
    }
}

fn steady_window(s: &crate::steady::SteadyState) -> SteadyWindow {
    SteadyWindow {
        level: s.level as u64,
        start_s: s.start.as_secs_f64(),
        end_s: s.end.as_secs_f64(),
        held_share: s.held_share,
        requests: s.requests as u64,
        request_share: s.request_share,
        trusted: s.trusted,
        request_throughput: s.request_throughput,
        input_throughput: s.input_throughput,
        output_throughput: s.output_throughput,
        interactivity: s.latency.interactivity(),
        ttft: summary(&s.latency.ttft),
        tpot: summary(&s.latency.tpot),
        itl: summary(&s.latency.itl),
        e2el: summary(&s.latency.e2el),
    }
}

/// vLLM's per-request arrays (times in seconds, as vLLM writes them).
fn detailed(f: &mut ResultFile, r: &RunReport) {
    let recs = &r.records;
    let secs = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    f.input_lens = Some(recs.iter().map(|x| x.input_tokens).collect());
    f.output_lens = Some(recs.iter().map(|x| x.output_tokens).collect());
    f.ttfts = Some(recs.iter().map(|x| secs(x.ttft())).collect());
    f.itls = Some(
        recs.iter()
            .map(|x| x.itls().map(|d| d.as_secs_f64()).collect())
            .collect(),
    );
    f.errors = Some(
        recs.iter()
            .map(|x| {
                x.outcome
                    .as_ref()
                    .err()
                    .map_or(String::new(), ToString::to_string)
            })
            .collect(),
    );
}

/// The per-request lines of a run (`bench_result::requests`), in the order requests were sent;
/// each output event's time too when `--save-detailed` asked for it.
pub fn request_lines(report: &RunReport) -> Vec<RequestLine> {
    let records = &report.records;
    let Some(t0) = records.iter().map(|r| r.sent).min() else {
        return Vec::new();
    };
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut lines: Vec<RequestLine> = records
        .iter()
        .map(|r| RequestLine {
            index: r.index as u64,
            request_id: r.request_id.clone(),
            ok: r.is_success(),
            reason: r.outcome.as_ref().err().map(FailureReason::group),
            error: r.outcome.as_ref().err().map(ToString::to_string),
            sent_s: (r.sent - t0).as_secs_f64(),
            queue_ms: r.send_lag().map(ms),
            ttft_ms: r.ttft().filter(|_| r.is_success()).map(ms),
            tpot_ms: r.tpot().filter(|_| r.is_success()).map(ms),
            e2el_ms: r.e2el().filter(|_| r.is_success()).map(ms),
            end_s: (r.ended - t0).as_secs_f64(),
            input_tokens: r.input_tokens,
            server_prompt_tokens: r.server_prompt_tokens,
            output_tokens: r.output_tokens,
            events: r.output_events.len() as u64,
            multi_token_events: u64::from(r.multi_token_events),
            event_ms: report
                .config
                .save_detailed
                .then(|| r.output_events.iter().map(|t| ms(*t - r.sent)).collect()),
        })
        .collect();
    lines.sort_by(|a, b| a.sent_s.total_cmp(&b.sent_s).then(a.index.cmp(&b.index)));
    lines
}

/// Writes the per-request file beside the result file `result_path` (`x.requests.jsonl` beside
/// `x.json`), atomically, and returns its path.
pub fn write_requests(result_path: &Path, report: &RunReport) -> std::io::Result<PathBuf> {
    let path = bench_result::requests::path_for(result_path);
    let text = bench_result::requests::to_jsonl(&request_lines(report));
    bench_result::atomic::write(&path, text.as_bytes())?;
    Ok(path)
}

/// Writes one JSON line per measured request with its raw instants as CLOCK_MONOTONIC
/// nanoseconds (`send_ns`, `event_ns`, `end_ns`), to set against a server's own log.
pub fn write_events(path: &Path, records: &[crate::record::RequestRecord]) -> std::io::Result<()> {
    let clock = crate::clock::MonotonicClock::new().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "CLOCK_MONOTONIC is not available here",
        )
    })?;
    let mut out = String::new();
    for r in records {
        let line = json!({
            "request_id": r.request_id,
            "index": r.index,
            "ok": r.is_success(),
            "send_ns": clock.ns(r.sent),
            "event_ns": r.output_events.iter().map(|t| clock.ns(*t)).collect::<Vec<_>>(),
            "end_ns": clock.ns(r.ended),
            "output_tokens": r.output_tokens,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    bench_result::atomic::write(path, out.as_bytes())
}

/// Writes `value` to `path` atomically: a reader, or a resumed sweep, never sees half a file
/// (`bench_result::atomic`).
pub fn write_atomic(path: &Path, value: &Value) -> std::io::Result<()> {
    bench_result::atomic::write_json(path, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_match_vllm() {
        assert_eq!(percentile_label(99.0), "99");
        assert_eq!(percentile_label(99.9), "99.9");
        assert_eq!(percentile_label(50.0), "50");
    }
}
