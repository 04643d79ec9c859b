//! What the simulator actually did, request by request: the oracle tests measure against.
//!
//! Each request's record holds its arrival, prefill start, every token's due time and every
//! event's hand-over to the connection (when the body stream yielded its bytes to the HTTP
//! server, the closest point to the socket this layer can see). Records are kept in memory for
//! in-process tests and, optionally, appended to a JSONL file (times in seconds since the
//! simulator started, and as CLOCK_MONOTONIC nanoseconds to set against another process's log).

use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// How a request ended on the simulator's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TruthOutcome {
    Completed,
    /// A fault was injected (its name).
    Fault(String),
    /// The client went away before the end.
    ClientGone,
    /// Cut by a scripted restart.
    Restarted,
    /// Answered with this HTTP status instead of a stream (not ready, unknown model, a prompt
    /// too long, an injected 500).
    Refused(u16),
}

/// One event handed to the connection.
#[derive(Debug, Clone, Copy)]
pub struct SentEvent {
    pub at: Instant,
    /// Output tokens the event carried (0 for role, usage and error events).
    pub tokens: u32,
}

/// One request's timeline.
#[derive(Debug, Clone)]
pub struct RequestTruth {
    pub id: u64,
    /// The client's `x-request-id`, when it sent one.
    pub request_id: Option<String>,
    pub api: &'static str,
    pub prompt_tokens: u64,
    pub max_tokens: u64,
    pub arrival: Instant,
    pub prefill_start: Option<Instant>,
    pub token_due: Vec<Instant>,
    pub events: Vec<SentEvent>,
    pub outcome: TruthOutcome,
    /// The fault the simulator injected into this request, if any (`http_500`, `error_event`,
    /// `cut`, `malformed`, `stall`): whatever the client then did, this is what it was given.
    pub fault: Option<&'static str>,
    /// Liberties taken with a stream that still completed (`no_finish_reason`, `shortened`,
    /// `event_after_done`, `prompt_miscount`, and `no_usage` when usage was asked for).
    pub liberties: Vec<&'static str>,
}

impl RequestTruth {
    /// A request just admitted with `(prompt, max)` tokens: nothing sent yet, and `ClientGone`
    /// until it is filed with another outcome.
    pub fn admitted(
        id: u64,
        request_id: Option<String>,
        api: &'static str,
        (prompt_tokens, max_tokens): (u64, u64),
        arrival: Instant,
    ) -> Self {
        let room = max_tokens.min(1 << 16) as usize;
        Self {
            id,
            request_id,
            api,
            prompt_tokens,
            max_tokens,
            arrival,
            prefill_start: None,
            token_due: Vec::with_capacity(room),
            events: Vec::with_capacity(room + 3),
            outcome: TruthOutcome::ClientGone,
            fault: None,
            liberties: Vec::new(),
        }
    }

    /// A request answered with `status` instead of a stream.
    pub fn refused(request_id: Option<String>, arrival: Instant, status: u16) -> Self {
        let mut t = Self::admitted(u64::MAX, request_id, "refused", (0, 0), arrival);
        t.outcome = TruthOutcome::Refused(status);
        t
    }

    /// Hand-over times of the events that carried output.
    pub fn output_sent(&self) -> impl Iterator<Item = Instant> + '_ {
        self.events.iter().filter(|e| e.tokens > 0).map(|e| e.at)
    }

    pub fn tokens_sent(&self) -> u64 {
        self.events.iter().map(|e| u64::from(e.tokens)).sum()
    }
}

/// All records, plus the optional JSONL sink.
#[derive(Debug)]
pub struct TruthLog {
    epoch: Instant,
    /// CLOCK_MONOTONIC at `epoch`, when readable.
    epoch_ns: Option<u64>,
    records: Mutex<Vec<RequestTruth>>,
    jsonl: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl TruthLog {
    pub fn new(epoch: Instant, jsonl: Option<std::fs::File>) -> Self {
        let epoch_ns = monotonic_ns()
            .map(|now| now - Instant::now().saturating_duration_since(epoch).as_nanos() as u64);
        Self {
            epoch,
            epoch_ns,
            records: Mutex::new(Vec::new()),
            jsonl: jsonl.map(|f| Mutex::new(std::io::BufWriter::new(f))),
        }
    }

    pub fn push(&self, t: RequestTruth) {
        if let Some(sink) = &self.jsonl {
            if let Ok(mut w) = sink.lock() {
                let line = self.to_json(&t);
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
        }
        if let Ok(mut r) = self.records.lock() {
            r.push(t);
        }
    }

    /// Every finished request so far.
    pub fn records(&self) -> Vec<RequestTruth> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn to_json(&self, t: &RequestTruth) -> serde_json::Value {
        let s = |i: Instant| i.saturating_duration_since(self.epoch).as_secs_f64();
        let ns = |i: Instant| {
            self.epoch_ns
                .map(|e| e + i.saturating_duration_since(self.epoch).as_nanos() as u64)
        };
        serde_json::json!({
            "id": t.id,
            "request_id": t.request_id,
            "arrival_ns": ns(t.arrival),
            "token_due_ns": t.token_due.iter().map(|i| ns(*i)).collect::<Vec<_>>(),
            "event_sent_ns": t.events.iter().map(|e| ns(e.at)).collect::<Vec<_>>(),
            "api": t.api,
            "prompt_tokens": t.prompt_tokens,
            "max_tokens": t.max_tokens,
            "arrival_s": s(t.arrival),
            "prefill_start_s": t.prefill_start.map(s),
            "token_due_s": t.token_due.iter().map(|i| s(*i)).collect::<Vec<_>>(),
            "event_sent_s": t.events.iter().map(|e| s(e.at)).collect::<Vec<_>>(),
            "event_tokens": t.events.iter().map(|e| e.tokens).collect::<Vec<_>>(),
            "outcome": t.outcome,
            "fault": t.fault,
            "liberties": t.liberties,
        })
    }
}

/// CLOCK_MONOTONIC in nanoseconds (what `Instant` reads on Linux).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn monotonic_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn monotonic_ns() -> Option<u64> {
    None
}
