//! The summary table printed after a run, laid out like `vllm bench serve`'s so the two can be
//! read side by side, plus failures by reason and any warnings.

use crate::report::RunReport;
use crate::result::percentile_label;
use crate::stats::Distribution;
use bench_result::sections::Timestamps;
use bench_result::settings::TransportKind;
use std::fmt::Write;

const WIDTH: usize = 50;

/// The table as text; when no request completed, only the failures (a table of zeros would
/// stand above the cause).
pub fn table(r: &RunReport) -> String {
    let m = &r.metrics;
    let mut out = String::new();
    if m.completed == 0 {
        let _ = writeln!(
            out,
            "No request completed ({} failed, {} not sent):",
            m.failed, r.not_sent
        );
        for (group, g) in &m.failures {
            let _ = writeln!(out, "  {group:<20} {:>6}  e.g. {}", g.count, g.example);
        }
        return out;
    }
    let title = if r.interrupted {
        " Serving Benchmark Result (INTERRUPTED) "
    } else {
        " Serving Benchmark Result "
    };
    let _ = writeln!(out, "{title:=^WIDTH$}");
    totals(&mut out, r);
    latencies(&mut out, r);
    steady_state(&mut out, r);
    integrity(&mut out, r);
    client(&mut out, r);
    server(&mut out, r);
    if !m.failures.is_empty() {
        let _ = writeln!(out, "{:-^WIDTH$}", "Failures by reason");
        for (group, g) in &m.failures {
            let _ = writeln!(out, "{group:<20} {:>6}  e.g. {}", g.count, g.example);
        }
    }
    let _ = writeln!(out, "{}", "=".repeat(WIDTH));
    out
}

/// The latency sections: vLLM's four, the per-token gaps when events carried several tokens,
/// and the queue time in rate mode.
fn latencies(out: &mut String, r: &RunReport) {
    let m = &r.metrics;
    section(
        out,
        "Time to First Token",
        "TTFT",
        &m.ttft_ms,
        &r.config.percentiles,
    );
    section(
        out,
        "Time per Output Token (excl. 1st token)",
        "TPOT",
        &m.tpot_ms,
        &r.config.percentiles,
    );
    section(
        out,
        "Inter-token Latency",
        "ITL",
        &m.itl_ms,
        &r.config.percentiles,
    );
    if let Some(gaps) = m
        .itl_per_token_ms
        .as_ref()
        .filter(|_| m.multi_token_events > 0)
    {
        // Events carried several tokens: the gap per token beside the gap per event.
        section(
            out,
            &format!(
                "Per-token gap ({:.1}% of events multi-token)",
                100.0 * m.multi_token_events as f64 / m.events_with_token_counts.max(1) as f64
            ),
            "gap/token",
            gaps,
            &r.config.percentiles,
        );
    }
    section(
        out,
        "End-to-end Latency",
        "E2EL",
        &m.e2el_ms,
        &r.config.percentiles,
    );
    if let Some(queue) = &m.send_lag_ms {
        // Rate mode: the time from a request's scheduled arrival to its send, kept apart from
        // the latencies above, which start at the send.
        section(
            out,
            "Queue time (arrival to send)",
            "queue",
            queue,
            &r.config.percentiles,
        );
    }
}

/// The run's counts and throughputs, one row each.
fn totals(out: &mut String, r: &RunReport) {
    let m = &r.metrics;
    let row = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "{k:<40} {v:<10}");
    };
    row(out, "Successful requests:", m.completed.to_string());
    row(out, "Failed requests:", m.failed.to_string());
    if r.not_sent > 0 {
        row(
            out,
            "Requests not sent (interrupted):",
            r.not_sent.to_string(),
        );
    }
    let conc = r
        .config
        .max_concurrency
        .map_or("unlimited".into(), |n| n.to_string());
    row(out, "Maximum request concurrency:", conc);
    row(
        out,
        "Benchmark duration (s):",
        format!("{:.2}", m.duration.as_secs_f64()),
    );
    row(out, "Total input tokens:", m.total_input_tokens.to_string());
    row(
        out,
        "Total generated tokens:",
        m.total_output_tokens.to_string(),
    );
    row(
        out,
        "Request throughput (req/s):",
        format!("{:.2}", m.request_throughput),
    );
    if !r.config.goodput.is_empty() {
        row(
            out,
            "Request goodput (req/s):",
            format!("{:.2}", m.request_goodput),
        );
    }
    row(
        out,
        "Output token throughput (tok/s):",
        format!("{:.2}", m.output_throughput),
    );
    row(
        out,
        "Peak output token throughput (tok/s):",
        format!("{:.2}", m.max_output_tokens_per_s),
    );
    row(
        out,
        "Peak concurrent requests:",
        m.peak_concurrency.to_string(),
    );
    row(
        out,
        "Total token throughput (tok/s):",
        format!("{:.2}", m.total_token_throughput),
    );
    row(
        out,
        "Interactivity (tok/s/user):",
        format!("{:.2}", m.interactivity),
    );
}

/// The figures over the window at the concurrency limit, beside the whole run's.
fn steady_state(out: &mut String, r: &RunReport) {
    let Some(s) = &r.metrics.steady_state else {
        return;
    };
    let m = &r.metrics;
    let _ = writeln!(
        out,
        "{:-^WIDTH$}",
        format!(" Steady state ({}+ in flight) ", s.level)
    );
    let _ = writeln!(
        out,
        "{:<40} {:.2}-{:.2} ({:.0}% of it at the level)",
        "Window (s from first send):",
        s.start.as_secs_f64(),
        s.end.as_secs_f64(),
        s.held_share * 100.0
    );
    let trust = if s.trusted { "" } else { ", too few to trust" };
    let _ = writeln!(
        out,
        "{:<40} {} ({:.0}%{trust})",
        "Requests inside:",
        s.requests,
        s.request_share * 100.0
    );
    for (label, steady, whole) in [
        (
            "Output tok/s steady / whole:",
            s.output_throughput,
            m.output_throughput,
        ),
        (
            "Input tok/s steady / whole:",
            s.input_throughput,
            m.input_throughput,
        ),
        (
            "Median TTFT steady / whole (ms):",
            s.latency.ttft.median,
            m.ttft_ms.median,
        ),
        (
            "Median TPOT steady / whole (ms):",
            s.latency.tpot.median,
            m.tpot_ms.median,
        ),
    ] {
        let _ = writeln!(out, "{label:<40} {steady:.2} / {whole:.2}");
    }
}

/// Where the event times came from and what the client cost.
fn client(out: &mut String, r: &RunReport) {
    let c = &r.client;
    let _ = writeln!(out, "{:-^WIDTH$}", "Client");
    let (transport, read) = match c.transport {
        TransportKind::Native => ("native (HTTP/1.1)", "read return"),
        TransportKind::Standard => ("standard (reqwest)", "body stream yield"),
    };
    let source = match c.timestamps {
        Timestamps::Kernel => "kernel arrival",
        Timestamps::Mixed => "kernel arrival, some at read",
        Timestamps::Read => read,
    };
    let _ = writeln!(out, "{:<40} {transport}", "Transport:");
    let _ = writeln!(out, "{:<40} {source}", "Event timestamps:");
    if let Some(wait) = c.read_wait_p99_ms {
        let _ = writeln!(out, "{:<40} {wait:<10.2}", "P99 read wait (ms):");
    }
    if let Some(cpu) = c.cpu_seconds_per_100k_events {
        let _ = writeln!(out, "{:<40} {cpu:<10.2}", "CPU seconds per 100k events:");
    }
}

/// The server's own means beside the client's (the difference is the network and the HTTP front
/// end), and what it counted.
fn server(out: &mut String, r: &RunReport) {
    let Some(v) = &r.server.view else {
        return;
    };
    let m = &r.metrics;
    let _ = writeln!(out, "{:-^WIDTH$}", "Server's own view (/metrics)");
    for (what, server, client) in [
        ("TTFT", v.ttft_mean_ms, m.ttft_ms.mean),
        ("ITL", v.itl_mean_ms, m.itl_ms.mean),
        ("E2EL", v.e2el_mean_ms, m.e2el_ms.mean),
    ] {
        if let Some(s) = server {
            let label = format!("Mean {what} server / client (ms):");
            let _ = writeln!(out, "{label:<40} {s:.2} / {client:.2}");
        }
    }
    if let Some(share) = v.prefix_cache_hit_share() {
        let _ = writeln!(
            out,
            "{:<40} {:.2}%",
            "Prefix cache hits (prompt tokens):",
            share * 100.0
        );
    }
    if let Some(p) = v.preemptions {
        let _ = writeln!(out, "{:<40} {p:.0}", "Preemptions:");
    }
    if let Some(sim) = &v.sim {
        let lost = crate::judge::sim_lost_share(sim, m.duration.as_secs_f64());
        let _ = writeln!(
            out,
            "{:<40} {:.2}% lost, P99 event {:.2} ms",
            format!("Simulator schedule ({}x):", sim.time_scale),
            lost * 100.0,
            sim.event_lateness_p99_ms.unwrap_or(0.0)
        );
    }
}

fn section(out: &mut String, title: &str, short: &str, d: &Distribution, percentiles: &[f64]) {
    let _ = writeln!(out, "{:-^WIDTH$}", title);
    let _ = writeln!(
        out,
        "{:<40} {:<10.2}",
        format!("Mean {short} (ms):"),
        d.mean
    );
    let _ = writeln!(
        out,
        "{:<40} {:<10.2}",
        format!("Median {short} (ms):"),
        d.median
    );
    for &q in percentiles.iter().filter(|q| **q != 50.0) {
        let v = d.percentile(q).unwrap_or(0.0);
        let label = format!("P{} {short} (ms):", percentile_label(q));
        let _ = writeln!(out, "{label:<40} {v:<10.2}");
    }
}

/// Lines worth a reader's attention: prompt misses, server count mismatches, fallbacks, a busy
/// client.
pub fn warnings(r: &RunReport) -> Vec<String> {
    let m = &r.metrics;
    let mut w = Vec::new();
    if r.prompt_stats.missed > 0 {
        w.push(format!(
            "{} prompts missed their target length (at most by {} tokens)",
            r.prompt_stats.missed, r.prompt_stats.max_abs_miss
        ));
    }
    w.extend(integrity_warnings(r));
    if let Some(s) = m.steady_state.as_ref().filter(|s| !s.trusted) {
        w.push(format!(
            "the steady state holds {} completed requests, fewer than the {} its figures need to stand for the plateau (at least 10, and at least the concurrency): send more prompts (10 x the concurrency or more)",
            s.requests,
            crate::steady::MIN_REQUESTS.max(r.config.max_concurrency.map_or(0, |n| n.get()))
        ));
    }
    w.extend(r.client.warnings.iter().cloned());
    w.extend(r.server.warnings.iter().cloned());
    w.extend(crate::judge::failures(r));
    w
}

/// One line per kind of broken promise, with what it means and one request that broke it.
fn integrity_warnings(r: &RunReport) -> Vec<String> {
    let m = &r.metrics;
    let mut w = Vec::new();
    for (kind, v) in m.integrity.iter().filter(|(_, v)| v.count > 0) {
        let what = match *kind {
            "finish_reason_missing" => "ended without any finish_reason (only [DONE] said the stream was over)".to_string(),
            "usage_missing" => "had no usage from the server: their output tokens were counted by the client's tokenizer".to_string(),
            "prompt_tokens_mismatch" => format!(
                "were counted a different prompt length by the server (mean difference {:+.1} tokens, max {})",
                m.prompt_check.mean_diff, m.prompt_check.max_abs_diff
            ),
            "output_tokens_mismatch" => "produced another number of output tokens than asked despite ignore_eos (the server may cap prompt + output at its max model length, or shorten output)".to_string(),
            "events_after_done" => "sent events after [DONE] (not measured)".to_string(),
            other => other.to_string(),
        };
        let example = v
            .example_request_id
            .as_deref()
            .map(|id| format!(", e.g. request {id}"))
            .unwrap_or_default();
        w.push(format!(
            "{} of {} completed requests {what}{example}",
            v.count, m.completed
        ));
    }
    w
}

/// The table's section on broken promises, when any was broken.
fn integrity(out: &mut String, r: &RunReport) {
    let broken: Vec<_> = r
        .metrics
        .integrity
        .iter()
        .filter(|(_, v)| v.count > 0)
        .collect();
    if broken.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{:-^WIDTH$}",
        " Stream integrity (completed requests) "
    );
    for (kind, v) in broken {
        let example = v.example_request_id.as_deref().unwrap_or("");
        let _ = writeln!(out, "{kind:<24} {:>6}  e.g. {example}", v.count);
    }
}
