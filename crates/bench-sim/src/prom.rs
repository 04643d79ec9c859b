//! `GET /metrics`: Prometheus text with the vLLM gauges, counters and histograms a dashboard or a
//! scraper expects, under vLLM's names and labels (`engine`, `model_name`).

use crate::server::AppState;
use crate::truth::{RequestTruth, TruthOutcome};
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// vLLM's bucket bounds (seconds).
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// A cumulative histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b:?}\"}} {c}.0");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}.0",
            self.count
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}.0", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
    }
}

/// The latency histograms, fed from each finished request's truth.
#[derive(Debug, Clone)]
pub struct Histograms {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    success: u64,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            success: 0,
        }
    }
}

impl Histograms {
    pub fn observe(&mut self, t: &RequestTruth) {
        if let Some(first) = t.token_due.first() {
            self.ttft.observe((*first - t.arrival).as_secs_f64());
        }
        for w in t.token_due.windows(2) {
            self.itl.observe((w[1] - w[0]).as_secs_f64());
        }
        if t.outcome == TruthOutcome::Completed {
            self.success += 1;
            if let Some(last) = t.token_due.last() {
                self.e2e.observe((*last - t.arrival).as_secs_f64());
            }
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, kind: &str, labels: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {v:?}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {v:?}");
    }
}

/// vLLM's engine gauges and counters: (name, help, type), in its words.
const ENGINE_GAUGES: [(&str, &str, &str); 5] = [
    (
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        "gauge",
    ),
    (
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        "gauge",
    ),
    (
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        "gauge",
    ),
    (
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        "counter",
    ),
    (
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        "counter",
    ),
];

/// The whole exposition.
pub fn render(s: &AppState) -> String {
    let labels = format!("engine=\"0\",model_name=\"{}\"", s.config.served_model_name);
    let st = &s.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let capacity = load(&st.kv_capacity_tokens);
    let kv_usage = if capacity > 0.0 {
        load(&st.kv_used_tokens) / capacity
    } else {
        0.0
    };
    let engine = [
        load(&st.running),
        load(&st.waiting),
        kv_usage,
        load(&st.prompt_tokens_total),
        load(&st.generation_tokens_total),
    ];
    let mut out = String::new();
    for ((name, help, kind), value) in ENGINE_GAUGES.into_iter().zip(engine) {
        gauge(&mut out, name, help, kind, &labels, value);
    }
    if let Ok(h) = s.histograms.lock() {
        let _ = writeln!(
            out,
            "# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter\nvllm:request_success_total{{engine=\"0\",finished_reason=\"length\",model_name=\"{}\"}} {}.0",
            s.config.served_model_name, h.success
        );
        for (histogram, name, help) in [
            (
                &h.ttft,
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
            ),
            (
                &h.itl,
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
            ),
            (
                &h.e2e,
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
            ),
        ] {
            histogram.render(&mut out, name, help, &labels);
        }
    }
    schedule(&mut out, &st.report(), st.time_scale());
    out
}

/// The simulator's own schedule keeping (see [`crate::lateness`]), under `inferperf_sim:` names.
fn schedule(out: &mut String, r: &crate::engine::ScheduleReport, time_scale: f64) {
    gauge(
        out,
        "inferperf_sim:time_scale",
        "How many times faster than real time the schedule runs.",
        "gauge",
        "",
        time_scale,
    );
    for (snap, what, help) in [
        (
            &r.steps,
            "step",
            "Engine steps' ends after their planned end",
        ),
        (
            &r.events,
            "event",
            "Token events handed to the connection after their token was due",
        ),
    ] {
        lateness(
            out,
            &format!("inferperf_sim:{what}_lateness_seconds"),
            help,
            snap,
        );
        gauge(
            out,
            &format!("inferperf_sim:late_{what}s_total"),
            &format!("{help}, by more than {} s.", snap.tolerance_seconds),
            "counter",
            "",
            snap.late as f64,
        );
        gauge(
            out,
            &format!("inferperf_sim:{what}_lateness_max_seconds"),
            &format!("{help}: the largest since start."),
            "gauge",
            "",
            snap.max_seconds,
        );
    }
    for (name, help, v) in schedule_counters(r) {
        gauge(out, name, help, "counter", "", v);
    }
}

/// The schedule's counters: (name, help, value).
fn schedule_counters(r: &crate::engine::ScheduleReport) -> Vec<(&'static str, &'static str, f64)> {
    let mut counters = vec![
        (
            "inferperf_sim:schedule_lost_seconds_total",
            "Wall time the schedule lost restarting late steps: modelled time that never happened.",
            r.lost_seconds,
        ),
        (
            "inferperf_sim:prompts_counted_total",
            "Prompts counted with the tokenizer while their request waited.",
            r.prompts_counted as f64,
        ),
        (
            "inferperf_sim:prompt_counting_seconds_total",
            "Wall time spent counting prompts while their request waited.",
            r.prompt_counting_seconds,
        ),
        (
            "inferperf_sim:prompts_known_total",
            "Prompts whose token count was known ahead (pretokenized).",
            r.prompts_known as f64,
        ),
    ];
    if let Some(s) = r.stepped {
        counters.push((
            "inferperf_sim:stepped_windows_total",
            "Windows of the stepped clock: the engine waited for its client after each step.",
            s.windows as f64,
        ));
        counters.push((
            "inferperf_sim:stepped_window_timeouts_total",
            "Windows of the stepped clock that went on without what the client owed.",
            s.timeouts as f64,
        ));
    }
    if let Some(t) = r.engine_thread {
        counters.push((
            "inferperf_sim:engine_thread_cpu_seconds_total",
            "CPU time of the batching engine's thread.",
            t.cpu_seconds,
        ));
        counters.push((
            "inferperf_sim:engine_thread_runqueue_wait_seconds_total",
            "Time the batching engine's thread was ready to run but waited for a core.",
            t.runqueue_wait_seconds,
        ));
    }
    counters
}

fn lateness(out: &mut String, name: &str, help: &str, s: &crate::lateness::LatenessSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, n) in crate::lateness::BUCKETS_S.iter().zip(&s.buckets) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound:?}\"}} {cumulative}.0");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}.0", s.count);
    let _ = writeln!(out, "{name}_count {}.0", s.count);
    let _ = writeln!(out, "{name}_sum {:?}", s.sum_seconds);
}
