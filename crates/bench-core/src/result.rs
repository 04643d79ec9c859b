//! The result file: one JSON object per run, written atomically.
//!
//! It is a superset of three vocabularies (docs/result-format.md lists every key):
//! - the Python sweep script's keys, times in **seconds** (`median_ttft`, `p99_tpot`, ...);
//! - `vllm bench serve`'s keys, times in **milliseconds** (`mean_ttft_ms`, `p99_itl_ms`, ...) and,
//!   with `--save-detailed`, its per-request arrays (`ttfts` and `itls` in seconds, as vLLM);
//! - inferperf's own: schema version, tool version, the configuration echoed back (never the API
//!   key), interactivity, failures by reason, prompt-length checks and the client's overhead.

use crate::metrics::RunMetrics;
use crate::run::RunReport;
use crate::stats::Distribution;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

/// Version of the layout below; bumped when a key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// `vllm bench serve`'s percentile label: `99` for 99.0, `99.9` otherwise.
pub fn percentile_label(q: f64) -> String {
    if q.fract() == 0.0 {
        format!("{}", q as i64)
    } else {
        format!("{q}")
    }
}

/// Builds the whole result object.
pub fn to_json(report: &RunReport) -> Value {
    let mut out = Map::new();
    python_keys(&mut out, report);
    vllm_keys(&mut out, report);
    own_keys(&mut out, report);
    if report.config.save_detailed {
        detailed(&mut out, report);
    }
    for (k, v) in &report.config.metadata {
        if k == "tp" {
            // Declared tp is already the integer `tp` key (validated to agree).
            continue;
        }
        if out.contains_key(k) {
            tracing::warn!("--metadata {k}=... not written at top level: the key is already a result key; it is kept under \"metadata\"");
        } else {
            out.insert(k.clone(), Value::String(v.clone()));
        }
    }
    Value::Object(out)
}

fn python_keys(out: &mut Map<String, Value>, r: &RunReport) {
    let c = &r.config;
    let m = &r.metrics;
    let s = |ms: f64| ms / 1e3;
    let p99 = |d: &Distribution| s(d.percentile(99.0).unwrap_or(0.0));
    let fields = [
        (
            "date",
            json!(r.started_at.format("%Y%m%d-%H%M%S").to_string()),
        ),
        ("model_id", json!(c.model)),
        ("tokenizer_id", json!(c.tokenizer)),
        ("num_prompts", json!(c.num_prompts)),
        ("request_rate", json!(c.request_rate)),
        ("burstiness", json!(c.burstiness)),
        ("max_concurrency", json!(c.max_concurrency.map(|n| n.get()))),
        ("duration", json!(m.duration.as_secs_f64())),
        ("completed", json!(m.completed)),
        ("good_completed", json!(m.good_completed)),
        ("total_input_tokens", json!(m.total_input_tokens)),
        ("total_output_tokens", json!(m.total_output_tokens)),
        ("request_throughput", json!(m.request_throughput)),
        ("request_goodput", json!(m.request_goodput)),
        ("input_throughput", json!(m.input_throughput)),
        ("output_throughput", json!(m.output_throughput)),
        ("median_ttft", json!(s(m.ttft_ms.median))),
        ("p99_ttft", json!(p99(&m.ttft_ms))),
        ("median_e2el", json!(s(m.e2el_ms.median))),
        ("p99_e2el", json!(p99(&m.e2el_ms))),
        ("median_tpot", json!(s(m.tpot_ms.median))),
        ("p99_tpot", json!(p99(&m.tpot_ms))),
    ];
    out.extend(fields.map(|(k, v)| (k.to_string(), v)));
}

fn vllm_keys(out: &mut Map<String, Value>, r: &RunReport) {
    let m = &r.metrics;
    out.insert("failed".into(), json!(m.failed));
    out.insert(
        "total_token_throughput".into(),
        json!(m.total_token_throughput),
    );
    out.insert(
        "max_output_tokens_per_s".into(),
        json!(m.max_output_tokens_per_s),
    );
    out.insert(
        "max_concurrent_requests".into(),
        json!(m.max_concurrent_requests),
    );
    for (name, d) in [
        ("ttft", &m.ttft_ms),
        ("tpot", &m.tpot_ms),
        ("itl", &m.itl_ms),
        ("e2el", &m.e2el_ms),
    ] {
        out.insert(format!("mean_{name}_ms"), json!(d.mean));
        out.insert(format!("median_{name}_ms"), json!(d.median));
        out.insert(format!("std_{name}_ms"), json!(d.std));
        for &q in &r.config.percentiles {
            let v = d.percentile(q).unwrap_or(0.0);
            out.insert(format!("p{}_{name}_ms", percentile_label(q)), json!(v));
        }
    }
}

fn own_keys(out: &mut Map<String, Value>, r: &RunReport) {
    let m = &r.metrics;
    let tp = f64::from(r.config.tp.max(1));
    let fields = [
        ("schema_version", json!(SCHEMA_VERSION)),
        (
            "tool",
            json!({"name": "inferperf", "version": env!("CARGO_PKG_VERSION")}),
        ),
        ("started_at", json!(r.started_at.to_rfc3339())),
        ("interrupted", json!(r.interrupted)),
        ("not_sent", json!(r.not_sent)),
        ("interactivity", json!(m.interactivity)),
        ("peak_concurrency", json!(m.peak_concurrency)),
        ("tp", json!(r.config.tp)),
        (
            "per_gpu",
            json!({
                "input_throughput": m.input_throughput / tp,
                "output_throughput": m.output_throughput / tp,
                "total_token_throughput": m.total_token_throughput / tp,
            }),
        ),
        ("failures", json!(m.failures)),
        (
            "output",
            json!({
                "events": m.output_events,
                "multi_token_events": m.multi_token_events,
                "events_sharing_a_read": m.events_sharing_a_read,
                "usage_fallbacks": m.usage_fallbacks,
                "short_outputs": m.short_outputs,
            }),
        ),
        ("prompt_lengths", json!(r.prompt_stats)),
        ("server_prompt_tokens", json!(m.prompt_check)),
        ("distributions_ms", distributions(m)),
        ("warmup", json!(r.warmup)),
        ("client", json!(r.client)),
        ("server", json!(r.server)),
        ("system", json!(r.system)),
        ("config", json!(r.config)),
        ("metadata", Value::Object(metadata(r))),
    ];
    out.extend(fields.map(|(k, v)| (k.to_string(), v)));
    sim_keys(out, r);
}

/// `sim_*`: how well the simulator kept its schedule, when the server was `bench-sim`.
fn sim_keys(out: &mut Map<String, Value>, r: &RunReport) {
    let Some(sim) = r.server.view.as_ref().and_then(|v| v.sim.as_ref()) else {
        return;
    };
    let duration = r.metrics.duration.as_secs_f64();
    let fields = [
        ("sim_time_scale", json!(sim.time_scale)),
        ("sim_steps", json!(sim.steps)),
        ("sim_late_steps", json!(sim.late_steps)),
        ("sim_step_lateness_p99_ms", json!(sim.step_lateness_p99_ms)),
        ("sim_events", json!(sim.events)),
        ("sim_late_events", json!(sim.late_events)),
        (
            "sim_event_lateness_p99_ms",
            json!(sim.event_lateness_p99_ms),
        ),
        (
            "sim_event_lateness_max_ms",
            json!(sim.event_lateness_max_ms),
        ),
        (
            "sim_time_lost_share",
            json!(crate::judge::sim_lost_share(sim, duration)),
        ),
        (
            "sim_kept_schedule",
            json!(crate::judge::sim_schedule(sim, duration).is_empty()),
        ),
    ];
    out.extend(fields.map(|(k, v)| (k.to_string(), v)));
}

fn metadata(r: &RunReport) -> Map<String, Value> {
    r.config
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// Every distribution in full, including min, max and count, keyed by percentile label.
fn distributions(m: &RunMetrics) -> Value {
    let one = |d: &Distribution| {
        let pct: Map<String, Value> = d
            .percentiles
            .iter()
            .map(|(q, v)| (format!("p{}", percentile_label(*q)), json!(v)))
            .collect();
        json!({"count": d.count, "mean": d.mean, "median": d.median, "std": d.std,
               "min": d.min, "max": d.max, "percentiles": pct})
    };
    json!({
        "ttft": one(&m.ttft_ms),
        "tpot": one(&m.tpot_ms),
        "itl": one(&m.itl_ms),
        "e2el": one(&m.e2el_ms),
        "send_lag": m.send_lag_ms.as_ref().map(one),
        "turnaround": m.turnaround_ms.as_ref().map(one),
    })
}

/// vLLM's per-request arrays (times in seconds, as vLLM writes them).
fn detailed(out: &mut Map<String, Value>, r: &RunReport) {
    let recs = &r.records;
    let secs = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    out.insert(
        "input_lens".into(),
        json!(recs.iter().map(|x| x.input_tokens).collect::<Vec<_>>()),
    );
    out.insert(
        "output_lens".into(),
        json!(recs.iter().map(|x| x.output_tokens).collect::<Vec<_>>()),
    );
    out.insert(
        "ttfts".into(),
        json!(recs.iter().map(|x| secs(x.ttft())).collect::<Vec<_>>()),
    );
    out.insert(
        "itls".into(),
        json!(recs
            .iter()
            .map(|x| x.itls().map(|d| d.as_secs_f64()).collect::<Vec<_>>())
            .collect::<Vec<_>>()),
    );
    out.insert(
        "errors".into(),
        json!(recs
            .iter()
            .map(|x| x
                .outcome
                .as_ref()
                .err()
                .map_or(String::new(), ToString::to_string))
            .collect::<Vec<_>>()),
    );
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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), out)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `value` to `path` atomically: a temporary file in the same folder, then a rename, so a
/// reader (or a resumed sweep) never sees half a file.
pub fn write_atomic(path: &Path, value: &Value) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".inferperf-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
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

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/r.json");
        write_atomic(&path, &json!({"a": 1})).expect("first write");
        write_atomic(&path, &json!({"a": 2})).expect("second write");
        let v: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(v["a"], 2);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .collect();
        assert_eq!(names.len(), 1);
    }
}
