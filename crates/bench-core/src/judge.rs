//! What a run's figures and the server's own counters say about the run's trustworthiness: the
//! thresholds, stated once, and the warnings they raise.
//!
//! Server checks (from `/metrics`, [`crate::server_metrics`]):
//! - prompt tokens found in the prefix cache during the measured phase, when no shared prefix was
//!   asked for (more than [`PREFIX_HIT_SHARE`] of them): TTFT and prefill throughput are then
//!   better than for fresh prompts;
//! - the server's prompt and generation token counts against the client's, apart by more than
//!   [`COUNT_MISMATCH_SHARE`] (another client on the server, or a different count);
//! - counters that went backwards (a restart);
//! - for `bench-sim`, its schedule: the simulator **kept its schedule** when it lost at most
//!   [`SIM_LOST_SHARE`] of the run's time to late steps and handed token events over at most
//!   [`SIM_EVENT_P99_MODELLED_MS`] late at P99 in modelled time (wall lateness times the time
//!   scale). Past either, its figures are the machine's as much as the model's.

use crate::config::RunConfig;
use crate::metrics::RunMetrics;
use crate::run::ServerReport;
use crate::server_metrics::SimSchedule;
use crate::stream::ApiKind;

/// Prefix-cache hits above this share of the phase's prompt tokens are warned about.
pub const PREFIX_HIT_SHARE: f64 = 0.0;
/// Server and client token counts further apart than this share are warned about.
pub const COUNT_MISMATCH_SHARE: f64 = 0.01;
/// The simulator may lose at most this share of the run's duration to late steps.
pub const SIM_LOST_SHARE: f64 = 0.01;
/// The simulator's P99 event lateness, in modelled milliseconds, past which it fell behind.
pub const SIM_EVENT_P99_MODELLED_MS: f64 = 20.0;

/// Warnings from the server's own view of the run.
pub fn server(config: &RunConfig, server: &ServerReport, m: &RunMetrics) -> Vec<String> {
    let mut w = Vec::new();
    let Some(view) = &server.view else {
        return w;
    };
    if view.counters_reset {
        w.push(
            "the server's counters went backwards during the run (did it restart?): its own \
             figures are left out"
                .into(),
        );
        return w;
    }
    if let (Some(share), Some(hits), Some(queries)) = (
        view.prefix_cache_hit_share(),
        view.prefix_cache_hits,
        view.prefix_cache_queries,
    ) {
        if config.prompt.prefix_len == 0 && share > PREFIX_HIT_SHARE {
            w.push(format!(
                "the server found {hits:.0} of the measured phase's {queries:.0} prompt tokens \
                 ({:.1}%) in its prefix cache: TTFT and prefill throughput are better than for \
                 prompts it never saw (another client's requests, or prompts it was sent before \
                 with the same --seed)",
                share * 100.0
            ));
        }
    }
    let sent_prompt: u64 = m.sent_input_tokens;
    if config.endpoint.api == ApiKind::Completions {
        if let Some(server_prompt) = view.prompt_tokens {
            mismatch(&mut w, "prompt", server_prompt, sent_prompt as f64);
        }
    }
    if m.failed == 0 {
        if let Some(server_gen) = view.generation_tokens {
            mismatch(
                &mut w,
                "generated",
                server_gen,
                m.total_output_tokens as f64,
            );
        }
    }
    if let Some(sim) = &view.sim {
        w.extend(sim_schedule(sim, m.duration.as_secs_f64()));
    }
    w
}

fn mismatch(w: &mut Vec<String>, what: &str, server: f64, client: f64) {
    if client > 0.0 && ((server - client) / client).abs() > COUNT_MISMATCH_SHARE {
        w.push(format!(
            "the server counted {server:.0} {what} tokens during the measured phase, the client \
             {client:.0}: another client may be using the server, or it counts them differently"
        ));
    }
}

/// Whether the simulator kept its schedule over a phase of `duration_s`, and if not why.
pub fn sim_schedule(sim: &SimSchedule, duration_s: f64) -> Vec<String> {
    let mut w = Vec::new();
    let lost = sim_lost_share(sim, duration_s);
    if lost > SIM_LOST_SHARE {
        w.push(format!(
            "the simulator fell behind its schedule: {:.1}% of the run's modelled time was lost \
             to {:.0} late steps, so its figures are slower than its preset's (a busy machine, or \
             a time scale it cannot keep: lower --sim-time-scale)",
            lost * 100.0,
            sim.late_steps
        ));
    }
    if let Some(p99) = sim.event_lateness_p99_ms {
        let modelled = p99 * sim.time_scale;
        if modelled > SIM_EVENT_P99_MODELLED_MS {
            w.push(format!(
                "the simulator handed token events over {p99:.2} ms late at P99 ({modelled:.0} ms \
                 of modelled time at {}x): token timings are the machine's as much as the model's",
                sim.time_scale
            ));
        }
    }
    w
}

/// The share of `duration_s` the simulator lost to late steps.
pub fn sim_lost_share(sim: &SimSchedule, duration_s: f64) -> f64 {
    if duration_s > 0.0 {
        sim.lost_seconds / duration_s
    } else {
        0.0
    }
}

/// What to do about the run's failures, for the reasons a user can act on.
pub fn failures(report: &crate::RunReport) -> Vec<String> {
    let m = &report.metrics;
    let c = &report.config;
    let mut w = Vec::new();
    let example = |group: &str| m.failures.get(group).map(|g| g.example.as_str());
    if let Some(e) = example("http_404") {
        let served = match &report.served_models {
            Some(models) if !models.is_empty() => format!("it serves {}", models.join(", ")),
            _ => "its /v1/models lists what it serves".into(),
        };
        w.push(format!(
            "the server answered 404 ({e}): it does not serve `{}`; {served}: pass that name as \
             --model",
            c.model
        ));
    }
    if let Some(e) = example("http_400").filter(|e| is_too_long(e)) {
        w.push(format!(
            "the server refused prompts as longer than its context ({e}): lower \
             --random-input-len (or --random-range-ratio), or serve the model with a larger \
             --max-model-len"
        ));
    }
    if let Some(g) = m.failures.get("connect") {
        w.push(format!(
            "{} requests could not connect to {} ({}): is the server up and is the URL right?",
            g.count, c.base_url, g.example
        ));
    }
    if let Some(g) = m.failures.get("stream_cut") {
        w.push(format!(
            "the server cut {} streams before their end ({}): it may have crashed or restarted; \
             see its log",
            g.count, g.example
        ));
    }
    if m.failures.contains_key("timeout") {
        w.push(
            "requests ran past --request-timeout: raise it, or lower the load (--max-concurrency)"
                .into(),
        );
    }
    w
}

/// vLLM's and SGLang's words for a prompt over the context length.
fn is_too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("maximum context length")
        || m.contains("input tokens")
        || m.contains("too long")
        || m.contains("max_model_len")
}
