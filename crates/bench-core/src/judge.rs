//! What a run's figures and the server's own counters say about the run's trustworthiness: the
//! thresholds, stated once, and the warnings they raise.
//!
//! Client checks ([`client`]): the client **may have been the limit** when its reads waited more
//! than [`LAG_LIMIT_MS`] at P99 (or, without kernel stamps, its runtime woke that late), when it
//! used more than [`CPU_LIMIT_SHARE`] of its cores, or when it sent requests more than
//! [`SEND_LAG_LIMIT_MS`] behind a rate schedule at P99 (`client_bound`); and events read
//! together with the next one of their stream past [`SHARED_READ_SHARE`] are a caveat.
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
use crate::stats::Distribution;
use crate::stream::ApiKind;
use crate::transport::ReadStats;
use bench_result::sections::{ClientSection, ServerSection, SimSchedule, Timestamps};
use bench_result::settings::TransportKind;

/// Reads waiting, or a runtime waking, later than this at P99 mean the client fell behind.
pub const LAG_LIMIT_MS: f64 = 5.0;
/// Output events sharing a read above this share are worth a caveat.
pub const SHARED_READ_SHARE: f64 = 0.01;
/// CPU use above this share of the cores means the client ran out of CPU.
pub const CPU_LIMIT_SHARE: f64 = 0.85;
/// Sends later than this behind the arrival schedule at P99 mean the client fell behind.
pub const SEND_LAG_LIMIT_MS: f64 = 10.0;

/// What the measured phase cost the client, as the OS and the client's own probes saw it.
#[derive(Debug)]
pub struct ClientCost<'a> {
    pub cpu_seconds: Option<f64>,
    pub wall_seconds: f64,
    /// How late a timer on the client's runtime woke, ms.
    pub lag: &'a Distribution,
    pub reads: &'a ReadStats,
    pub transport: TransportKind,
}

/// The client section: its cost, where its timestamps came from, and its warnings.
pub fn client(cost: &ClientCost<'_>, m: &RunMetrics) -> ClientSection {
    let cores = crate::report::cores();
    let reads = cost.reads;
    let timestamps = match (reads.kernel_stamped, reads.read_stamped) {
        (0, _) => Timestamps::Read,
        (_, 0) => Timestamps::Kernel,
        _ => Timestamps::Mixed,
    };
    let kernel_reads = Some(reads).filter(|r| r.kernel_stamped > 0);
    let wait_ms = |q: f64| kernel_reads.map(|r| r.waited_ns.value_at_quantile(q) as f64 / 1e6);
    let utilization = cost.cpu_seconds.map(|c| {
        if cost.wall_seconds > 0.0 {
            c / cost.wall_seconds
        } else {
            0.0
        }
    });
    let lag_p99 = cost.lag.percentile(99.0).unwrap_or(0.0);
    let mut warnings = bound_warnings(
        wait_ms(0.99).filter(|_| timestamps == Timestamps::Kernel),
        (lag_p99, cost.lag.max),
        cost.transport,
        utilization.map(|u| (u, cores)),
        m,
    );
    // Everything above means the client may have been the limit; what follows is a caveat.
    let client_bound = !warnings.is_empty();
    let shared = m.events_sharing_a_read as f64 / m.output_events.max(1) as f64;
    if shared > SHARED_READ_SHARE {
        warnings.push(format!(
            "{:.1}% of output events were read together with the next one of their stream and \
             carry its arrival time: either the server sent them together (the times are right), \
             or the client fell behind (see client.read_wait_*) and the ITLs around them read too \
             short and too long",
            shared * 100.0
        ));
    }
    let events = m.output_events as f64;
    ClientSection {
        cpu_seconds: cost.cpu_seconds,
        cpu_utilization: utilization,
        cores: cores as u64,
        cpu_seconds_per_100k_events: cost
            .cpu_seconds
            .filter(|_| events > 0.0)
            .map(|c| c / events * 1e5),
        peak_rss_bytes: crate::overhead::peak_rss_bytes(),
        runtime_lag_p50_ms: cost.lag.median,
        runtime_lag_p99_ms: lag_p99,
        runtime_lag_max_ms: cost.lag.max,
        transport: cost.transport,
        timestamps,
        read_wait_p50_ms: wait_ms(0.5),
        read_wait_p99_ms: wait_ms(0.99),
        read_wait_max_ms: kernel_reads.map(|r| r.waited_ns.max() as f64 / 1e6),
        client_bound,
        warnings,
    }
}

/// The warnings that mean the client may have been the limit. `lag_ms` is how late the
/// client's runtime woke, at P99 and at most: the probe wakes less often while the runtime is
/// behind, so its P99 under-weights the very spells in which events wait, and the warning gives
/// the largest lateness, once per wake-up a read takes on `transport`
/// ([`read_wake_ups`]), as what timestamps may be late by.
fn bound_warnings(
    kernel_wait_p99_ms: Option<f64>,
    (lag_p99_ms, lag_max_ms): (f64, f64),
    transport: TransportKind,
    utilization: Option<(f64, usize)>,
    m: &RunMetrics,
) -> Vec<String> {
    let mut w = Vec::new();
    match kernel_wait_p99_ms {
        Some(wait) if wait > LAG_LIMIT_MS => w.push(format!(
            "the client read arriving data {wait:.1} ms late at p99: event times are the kernel's \
             arrival times, but a stream whose events waited together shares the newest one's \
             time, and requests may have been sent late"
        )),
        Some(_) => {}
        None if lag_p99_ms > LAG_LIMIT_MS => w.push(format!(
            "the client's runtime woke {lag_p99_ms:.1} ms late at p99 and {lag_max_ms:.1} ms at \
             most: its timestamps may be late by up to {:.1} ms{}",
            lag_max_ms * f64::from(read_wake_ups(transport)),
            match read_wake_ups(transport) {
                1 => "",
                _ => " (each read on the standard transport takes two wake-ups)",
            }
        )),
        None => {}
    }
    if let Some((used, cores)) = utilization.filter(|(u, c)| *u > CPU_LIMIT_SHARE * *c as f64) {
        w.push(format!(
            "the client used {used:.2} of {cores} cores: it may have been the bottleneck"
        ));
    }
    let send_lag = m.send_lag_ms.as_ref().and_then(|l| l.percentile(99.0));
    if send_lag.is_some_and(|l| l > SEND_LAG_LIMIT_MS) {
        w.push(format!(
            "requests were sent more than {SEND_LAG_LIMIT_MS} ms behind the arrival schedule at p99"
        ));
    }
    w
}

/// How many times the client's runtime must wake for a read to reach the task that stamps it:
/// the native transport stamps in the task that reads the socket; the standard one when the body
/// stream yields what its connection task read (`crate::standard`).
pub fn read_wake_ups(transport: TransportKind) -> u32 {
    match transport {
        TransportKind::Native => 1,
        TransportKind::Standard => 2,
    }
}

/// Prefix-cache hits above this share of the phase's prompt tokens are warned about.
pub const PREFIX_HIT_SHARE: f64 = 0.0;
/// Server and client token counts further apart than this share are warned about.
pub const COUNT_MISMATCH_SHARE: f64 = 0.01;
/// The simulator may lose at most this share of the run's duration to late steps.
pub const SIM_LOST_SHARE: f64 = 0.01;
/// The simulator's P99 event lateness, in modelled milliseconds, past which it fell behind.
pub const SIM_EVENT_P99_MODELLED_MS: f64 = 20.0;

/// Warnings from the server's own view of the run.
pub fn server(config: &RunConfig, server: &ServerSection, m: &RunMetrics) -> Vec<String> {
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
    // Failed requests may or may not have reached the engine: counts compare only without them.
    if m.failed == 0 {
        let completions = config.endpoint.api == ApiKind::Completions;
        if let Some(server_prompt) = view.prompt_tokens.filter(|_| completions) {
            mismatch(&mut w, "prompt", server_prompt, m.sent_input_tokens as f64);
        }
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
        w.extend(sim_schedule(sim, m.duration.as_secs_f64()).map(|miss| miss.to_string()));
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

/// A bound the simulator's schedule missed over a phase, with what was measured against it;
/// `Display` says it to the user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleMiss {
    /// Late steps lost `share` of the phase's time, more than [`SIM_LOST_SHARE`].
    TimeLost {
        share: f64,
        late_steps: f64,
        time_scale: f64,
    },
    /// Token events were handed over `p99_ms` late at P99 (wall), more than
    /// [`SIM_EVENT_P99_MODELLED_MS`] once multiplied by `time_scale`.
    EventsLate { p99_ms: f64, time_scale: f64 },
    /// On a stepped clock, `count` windows went on without the events the client had not read
    /// or the requests its closed loop owed.
    WindowsTimedOut { count: f64 },
}

impl std::fmt::Display for ScheduleMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::TimeLost {
                share, late_steps, ..
            } => write!(
                f,
                "the simulator fell behind its schedule: {:.1}% of the run's modelled time was \
                 lost to {late_steps:.0} late steps, so its figures are slower than its preset's \
                 (a busy machine, or a time scale it cannot keep: lower --sim-time-scale)",
                share * 100.0
            ),
            Self::EventsLate { p99_ms, time_scale } => write!(
                f,
                "the simulator handed token events over {p99_ms:.2} ms late at P99 ({:.0} ms of \
                 modelled time at {time_scale}x): token timings are the machine's as much as the \
                 model's",
                p99_ms * time_scale
            ),
            Self::WindowsTimedOut { count } => write!(
                f,
                "the simulator's stepped clock went on {count:.0} times without the client (it \
                 had not read every token event, or not sent the requests it announced, in the \
                 seconds the simulator waits): what came later joined later steps than the \
                 model's"
            ),
        }
    }
}

/// The bounds the simulator's schedule missed over a phase of `duration_s`: none when it kept
/// it.
pub fn sim_schedule(sim: &SimSchedule, duration_s: f64) -> impl Iterator<Item = ScheduleMiss> {
    let share = sim_lost_share(sim, duration_s);
    let lost = (share > SIM_LOST_SHARE).then_some(ScheduleMiss::TimeLost {
        share,
        late_steps: sim.late_steps,
        time_scale: sim.time_scale,
    });
    let late = sim
        .event_lateness_p99_ms
        .filter(|p99| p99 * sim.time_scale > SIM_EVENT_P99_MODELLED_MS)
        .map(|p99_ms| ScheduleMiss::EventsLate {
            p99_ms,
            time_scale: sim.time_scale,
        });
    let cut = sim
        .stepped_timeouts
        .filter(|n| *n > 0.0)
        .map(|count| ScheduleMiss::WindowsTimedOut { count });
    lost.into_iter().chain(late).chain(cut)
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
pub fn failures(report: &crate::report::RunReport) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_misses_each_bound_it_passes_and_says_by_how_much() {
        let missed = SimSchedule {
            time_scale: 20.0,
            late_steps: 40.0,
            lost_seconds: 0.4,
            event_lateness_p99_ms: Some(2.0),
            ..SimSchedule::default()
        };
        let misses: Vec<ScheduleMiss> = sim_schedule(&missed, 10.0).collect();
        assert_eq!(
            misses,
            [
                ScheduleMiss::TimeLost {
                    share: 0.04,
                    late_steps: 40.0,
                    time_scale: 20.0
                },
                ScheduleMiss::EventsLate {
                    p99_ms: 2.0,
                    time_scale: 20.0
                }
            ]
        );
        let said: Vec<String> = misses.iter().map(ToString::to_string).collect();
        assert!(said[0].contains("4.0% of the run's modelled time was lost to 40 late steps"));
        assert!(said[1].contains("2.00 ms late at P99 (40 ms of modelled time at 20x)"));
        // Just inside both bounds: 1% of the time lost, 20 modelled ms at P99.
        let kept = SimSchedule {
            lost_seconds: 0.1,
            event_lateness_p99_ms: Some(1.0),
            ..missed
        };
        assert_eq!(sim_schedule(&kept, 10.0).count(), 0);
    }

    #[test]
    fn a_runtime_that_woke_late_is_warned_of_with_its_largest_lateness() {
        let m = crate::metrics::compute(&[], &[50.0, 99.0], &crate::config::Slo::default(), true);
        // 200 wake-ups: 195 on time, 4 at 8 ms and one at 40 ms (a spell the probe saw once).
        let samples: Vec<f64> = (0..200)
            .map(|i| match i {
                0 => 40.0,
                1..=4 => 8.0,
                _ => 0.5,
            })
            .collect();
        let lag = Distribution::from_samples(&samples, &[50.0, 99.0]);
        let reads = ReadStats::default();
        let cost = ClientCost {
            cpu_seconds: None,
            wall_seconds: 1.0,
            lag: &lag,
            reads: &reads,
            transport: TransportKind::Standard,
        };
        let section = client(&cost, &m);
        assert!(section.client_bound, "{:?}", section.warnings);
        assert_eq!(section.runtime_lag_max_ms, 40.0);
        let said = &section.warnings[0];
        assert!(
            said.contains("8.0 ms late at p99 and 40.0 ms at most")
                && said.contains("late by up to 80.0 ms (each read on the standard transport"),
            "{said}"
        );
        let native = ClientCost {
            transport: TransportKind::Native,
            ..cost
        };
        let said = &client(&native, &m).warnings[0];
        assert!(said.ends_with("may be late by up to 40.0 ms"), "{said}");
        // Woken on time, nothing is said.
        let calm = Distribution::from_samples(&[0.5; 200], &[50.0, 99.0]);
        let cost = ClientCost { lag: &calm, ..cost };
        assert!(client(&cost, &m).warnings.is_empty());
    }
}
