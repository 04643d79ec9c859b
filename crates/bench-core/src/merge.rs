//! One run measured by several client processes at once (a sweep's `srun` tasks, on one machine
//! or many), merged into one report.
//!
//! Each client writes a [`ClientPart`]: its records with every instant as seconds from its own
//! first send (its monotonic clock), and the wall-clock time of that first send. [`merge`] puts the
//! parts on one timeline by those wall-clock times and computes every figure from the union of
//! the records exactly as one process would: percentiles over every request (never averages of
//! the clients' percentiles), throughput over the merged window, from the earliest first send to
//! the latest end of any client, and failures summed by reason.
//!
//! Clocks: a request's own durations (TTFT, TPOT, ITL, E2EL) are measured on one machine's
//! monotonic clock and do not depend on the others. Only where each client's requests sit on the
//! common timeline comes from the wall clocks, assumed in step (NTP keeps machines of one cluster
//! within about a millisecond): an offset between two clocks moves one client's requests as a
//! whole, so it can stretch or shrink the merged window, and the throughputs over it, by at most
//! that offset. `clients.start_skew_ms` says how far apart the clients' first sends were.

use crate::config::RunConfig;
use crate::record::{EventTokens, FailureReason, RequestRecord, StreamMarks, TokenCountSource};
use crate::report::RunReport;
use bench_result::sections::{
    ClientSection, ClientShare, Clients, PromptLengths, ServerSection, SystemInfo, Warmup,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One client's share of a run, portable to the process that merges.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientPart {
    /// Which client, from 0.
    pub client: u32,
    /// Unix time, in seconds, of this part's time origin: its first send.
    pub origin_unix_s: f64,
    pub records: Vec<PortableRecord>,
    pub not_sent: u64,
    pub interrupted: bool,
    pub prompt_stats: PromptLengths,
    pub warmup: Option<Warmup>,
    pub client_section: ClientSection,
    pub server: ServerSection,
    pub system: SystemInfo,
}

/// A [`RequestRecord`] with its instants as seconds from the part's origin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortableRecord {
    pub index: usize,
    pub request_id: String,
    pub scheduled_s: Option<f64>,
    pub sent_s: f64,
    pub events_s: Vec<f64>,
    pub multi_token_events: u32,
    pub event_tokens: EventTokens,
    pub ended_s: f64,
    pub input_tokens: u64,
    pub server_prompt_tokens: Option<u64>,
    pub output_tokens: u64,
    pub token_source: TokenCountSource,
    pub requested_output_tokens: u64,
    pub stream: StreamMarks,
    pub outcome: Result<(), FailureReason>,
}

impl ClientPart {
    /// Client `client`'s part of `report`.
    pub fn of(report: &RunReport, client: u32) -> Self {
        let origin = report
            .records
            .iter()
            .map(|r| r.scheduled.map_or(r.sent, |s| s.min(r.sent)))
            .min()
            .unwrap_or_else(Instant::now);
        let origin_unix_s = wall_clock_of(origin);
        let at = |t: Instant| t.saturating_duration_since(origin).as_secs_f64();
        Self {
            client,
            origin_unix_s,
            records: report
                .records
                .iter()
                .map(|r| PortableRecord {
                    index: r.index,
                    request_id: r.request_id.clone(),
                    scheduled_s: r.scheduled.map(at),
                    sent_s: at(r.sent),
                    events_s: r.output_events.iter().map(|t| at(*t)).collect(),
                    multi_token_events: r.multi_token_events,
                    event_tokens: r.event_tokens.clone(),
                    ended_s: at(r.ended),
                    input_tokens: r.input_tokens,
                    server_prompt_tokens: r.server_prompt_tokens,
                    output_tokens: r.output_tokens,
                    token_source: r.token_source,
                    requested_output_tokens: r.requested_output_tokens,
                    stream: r.stream,
                    outcome: r.outcome.clone(),
                })
                .collect(),
            not_sent: report.not_sent as u64,
            interrupted: report.interrupted,
            prompt_stats: report.prompt_stats.clone(),
            warmup: report.warmup,
            client_section: report.client.clone(),
            server: report.server.clone(),
            system: report.system.clone(),
        }
    }
}

/// The wall-clock time (Unix seconds) of the monotonic instant `t`: a wall-clock reading less how
/// long ago `t` was, from the tightest of a few bracketed readings (a reading the scheduler cut in
/// two would be off by the pause).
fn wall_clock_of(t: Instant) -> f64 {
    (0..5)
        .map(|_| {
            let before = Instant::now();
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let after = Instant::now();
            let mid = before + (after - before) / 2;
            (
                after - before,
                wall - mid.saturating_duration_since(t).as_secs_f64(),
            )
        })
        .min_by_key(|(bracket, _)| *bracket)
        .map_or(0.0, |(_, at)| at)
}

/// Why parts cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    #[error("no client parts to merge")]
    Empty,
    #[error("client {0} sent two parts")]
    Duplicate(u32),
    #[error("client {client}'s origin is not a time ({origin})")]
    BadOrigin { client: u32, origin: f64 },
}

/// The run the `parts` measured together, as one report. `config` is the whole run's (all
/// clients' prompts and concurrency); the server section is the first client's scrapes (the
/// server's counters saw every client's requests), judged against the merged figures.
pub fn merge(config: &RunConfig, parts: &[ClientPart]) -> Result<RunReport, MergeError> {
    let mut parts: Vec<&ClientPart> = parts.iter().collect();
    parts.sort_by_key(|p| p.client);
    if parts.is_empty() {
        return Err(MergeError::Empty);
    }
    if let Some(w) = parts.windows(2).find(|w| w[0].client == w[1].client) {
        return Err(MergeError::Duplicate(w[0].client));
    }
    if let Some(p) = parts.iter().find(|p| !p.origin_unix_s.is_finite()) {
        return Err(MergeError::BadOrigin {
            client: p.client,
            origin: p.origin_unix_s,
        });
    }
    let earliest = parts
        .iter()
        .map(|p| p.origin_unix_s)
        .fold(f64::INFINITY, f64::min);
    let base = Instant::now();
    let mut records = Vec::new();
    for p in &parts {
        let offset = p.origin_unix_s - earliest;
        let at = |s: f64| base + Duration::from_secs_f64((offset + s).max(0.0));
        records.extend(p.records.iter().map(|r| RequestRecord {
            // Numbered below, in the order sent on the common timeline.
            index: 0,
            request_id: r.request_id.clone(),
            scheduled: r.scheduled_s.map(at),
            sent: at(r.sent_s),
            output_events: r.events_s.iter().map(|s| at(*s)).collect(),
            multi_token_events: r.multi_token_events,
            event_tokens: r.event_tokens.clone(),
            ended: at(r.ended_s),
            input_tokens: r.input_tokens,
            server_prompt_tokens: r.server_prompt_tokens,
            output_tokens: r.output_tokens,
            token_source: r.token_source,
            requested_output_tokens: r.requested_output_tokens,
            stream: r.stream,
            outcome: r.outcome.clone(),
        }));
    }
    records.sort_by_key(|r| r.sent);
    for (i, r) in records.iter_mut().enumerate() {
        r.index = i;
    }
    let metrics = crate::run::figures(config, &records);
    let first = parts[0];
    // The server's counters over the first client's window saw every client's requests: they
    // are held against the merged figures, not that client's share.
    let mut server = first.server.clone();
    server.warnings = crate::judge::server(config, &server, &metrics);
    Ok(RunReport {
        config: config.clone(),
        started_at: chrono::DateTime::from(UNIX_EPOCH + Duration::from_secs_f64(earliest.max(0.0))),
        prompt_stats: prompt_stats(&parts),
        warmup: warmup(&parts),
        metrics,
        records,
        interrupted: parts.iter().any(|p| p.interrupted),
        not_sent: parts.iter().map(|p| p.not_sent as usize).sum(),
        client: client_section(&parts),
        server,
        served_models: None,
        system: first.system.clone(),
        clients: Some(clients(&parts, earliest)),
    })
}

/// Every client's prompts: counts and misses summed, the mean weighted, the extremes of all.
fn prompt_stats(parts: &[&ClientPart]) -> PromptLengths {
    let all: Vec<&PromptLengths> = parts.iter().map(|p| &p.prompt_stats).collect();
    let count: u64 = all.iter().map(|s| s.count).sum();
    let weighted = |f: fn(&PromptLengths) -> f64| {
        if count == 0 {
            0.0
        } else {
            all.iter().map(|s| f(s) * s.count as f64).sum::<f64>() / count as f64
        }
    };
    PromptLengths {
        count,
        target_mean: weighted(|s| s.target_mean),
        mean: weighted(|s| s.mean),
        min: all.iter().map(|s| s.min).min().unwrap_or(0),
        max: all.iter().map(|s| s.max).max().unwrap_or(0),
        missed: all.iter().map(|s| s.missed).sum(),
        max_abs_miss: all.iter().map(|s| s.max_abs_miss).max().unwrap_or(0),
        verified_by_reencoding: all.iter().map(|s| s.verified_by_reencoding).sum(),
        build_seconds: all.iter().map(|s| s.build_seconds).fold(0.0, f64::max),
    }
}

/// Every client's warm-up: requests summed, the longest one's seconds.
fn warmup(parts: &[&ClientPart]) -> Option<Warmup> {
    parts.iter().filter_map(|p| p.warmup).reduce(|a, b| Warmup {
        requests: a.requests + b.requests,
        completed: a.completed + b.completed,
        failed: a.failed + b.failed,
        seconds: a.seconds.max(b.seconds),
    })
}

/// The clients' cost: CPU summed; the worst lag and read wait; client-bound when any was, each
/// client's warnings named with it.
fn client_section(parts: &[&ClientPart]) -> ClientSection {
    let each: Vec<&ClientSection> = parts.iter().map(|p| &p.client_section).collect();
    let worst = |f: fn(&ClientSection) -> f64| each.iter().map(|c| f(c)).fold(0.0, f64::max);
    let worst_of =
        |f: fn(&ClientSection) -> Option<f64>| each.iter().filter_map(|c| f(c)).reduce(f64::max);
    let first = each[0];
    ClientSection {
        cpu_seconds: each.iter().map(|c| c.cpu_seconds).sum(),
        cpu_utilization: worst_of(|c| c.cpu_utilization),
        cores: first.cores,
        cpu_seconds_per_100k_events: worst_of(|c| c.cpu_seconds_per_100k_events),
        peak_rss_bytes: each.iter().filter_map(|c| c.peak_rss_bytes).max(),
        runtime_lag_p50_ms: worst(|c| c.runtime_lag_p50_ms),
        runtime_lag_p99_ms: worst(|c| c.runtime_lag_p99_ms),
        runtime_lag_max_ms: worst(|c| c.runtime_lag_max_ms),
        transport: first.transport,
        timestamps: first.timestamps,
        read_wait_p50_ms: worst_of(|c| c.read_wait_p50_ms),
        read_wait_p99_ms: worst_of(|c| c.read_wait_p99_ms),
        read_wait_max_ms: worst_of(|c| c.read_wait_max_ms),
        client_bound: each.iter().any(|c| c.client_bound),
        warnings: parts
            .iter()
            .flat_map(|p| {
                p.client_section
                    .warnings
                    .iter()
                    .map(move |w| format!("client {}: {w}", p.client))
            })
            .collect(),
    }
}

fn clients(parts: &[&ClientPart], earliest: f64) -> Clients {
    let each: Vec<ClientShare> = parts
        .iter()
        .map(|p| ClientShare {
            client: p.client,
            hostname: p.system.hostname.clone(),
            requests: p.records.len() as u64,
            completed: p.records.iter().filter(|r| r.outcome.is_ok()).count() as u64,
            first_send_ms: (p.origin_unix_s - earliest) * 1e3,
            span_s: p.records.iter().map(|r| r.ended_s).fold(0.0, f64::max),
            client_bound: p.client_section.client_bound,
        })
        .collect();
    Clients {
        count: parts.len() as u32,
        start_skew_ms: each.iter().map(|c| c.first_send_ms).fold(0.0, f64::max),
        each,
    }
}
