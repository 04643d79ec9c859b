//! What the client observed for one request: raw instants, token counts and the outcome.
//!
//! Records keep `Instant`s exactly as taken; every duration is derived by a method, so the
//! metrics code can never mix up which clock reading a figure came from.

use std::time::{Duration, Instant};

/// Why a request did not complete. Callers group failures by [`FailureReason::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum FailureReason {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("HTTP {status}: {message}")]
    HttpStatus { status: u16, message: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("nothing arrived for {0:?}")]
    IdleTimeout(Duration),
    #[error("stream cut before its end: {0}")]
    StreamCut(String),
    #[error("{0}")]
    Malformed(String),
    #[error("server error event: {0}")]
    ServerError(String),
    #[error("stream ended without any output")]
    NoOutput,
    #[error("interrupted before it finished")]
    Interrupted,
}

impl FailureReason {
    /// A stable short name for grouping and for result files.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::HttpStatus { .. } => "http_status",
            Self::Timeout(_) => "timeout",
            Self::IdleTimeout(_) => "idle_timeout",
            Self::StreamCut(_) => "stream_cut",
            Self::Malformed(_) => "malformed_event",
            Self::ServerError(_) => "server_error_event",
            Self::NoOutput => "no_output",
            Self::Interrupted => "interrupted",
        }
    }

    /// Grouping key: the kind plus, for HTTP errors, the status, so `http_500` and `http_429`
    /// are counted apart.
    pub fn group(&self) -> String {
        match self {
            Self::HttpStatus { status, .. } => format!("http_{status}"),
            other => other.kind().to_string(),
        }
    }

    /// The same failure with every occurrence of `secret` in its text replaced by `[API key]`:
    /// a server or proxy that echoes the key in an error must not put it into result files,
    /// logs or messages.
    #[must_use]
    pub fn redacted(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let clean = |text: String| text.replace(secret, "[API key]");
        match self {
            Self::Connect(t) => Self::Connect(clean(t)),
            Self::HttpStatus { status, message } => Self::HttpStatus {
                status,
                message: clean(message),
            },
            Self::StreamCut(t) => Self::StreamCut(clean(t)),
            Self::Malformed(t) => Self::Malformed(clean(t)),
            Self::ServerError(t) => Self::ServerError(clean(t)),
            other @ (Self::Timeout(_)
            | Self::IdleTimeout(_)
            | Self::NoOutput
            | Self::Interrupted) => other,
        }
    }
}

/// Where a completed request's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenCountSource {
    /// `usage.completion_tokens` from the server.
    Usage,
    /// No usage, but every event named its `token_ids`.
    EventTokenIds,
    /// The server sent no usage: the generated text was tokenized by the client.
    Tokenized,
}

/// How many tokens each output event carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventTokens {
    /// As many tokens as events: one each.
    OnePerEvent,
    /// Said by the server: each event's token ids, or the growth of the usage it sent with every
    /// event (`continuous_usage_stats`).
    Reported(Vec<u32>),
    /// Counted by the tokenizer from each event's text (the server said neither): a close
    /// estimate, as a token's text may split differently on its own.
    Tokenized(Vec<u32>),
    /// Not known (a failed request, or more tokens than events and nothing to count them by).
    #[default]
    Unknown,
}

impl EventTokens {
    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Unknown)
    }

    /// Each event's count where the events carried different numbers of tokens; `None` when one
    /// each or not known.
    fn per_event(&self) -> Option<&[u32]> {
        match self {
            Self::Reported(c) | Self::Tokenized(c) => Some(c),
            Self::OnePerEvent | Self::Unknown => None,
        }
    }

    /// Events that carried more than one token.
    pub fn multi_token_events(&self) -> u32 {
        self.per_event()
            .map_or(0, |c| c.iter().filter(|n| **n > 1).count() as u32)
    }
}

/// What a stream said about itself beyond its tokens: the promises of the protocol a completed
/// stream may still have broken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamMarks {
    /// An event carried a `finish_reason`.
    pub finish_reason: bool,
    /// The server sent usage.
    pub usage: bool,
    /// Events that came after `[DONE]`.
    pub events_after_done: u32,
}

/// One request's observations.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Position in the measured request list.
    pub index: usize,
    /// The `x-request-id` it was sent with.
    pub request_id: String,
    /// When the arrival schedule wanted it sent (rate mode only).
    pub scheduled: Option<Instant>,
    /// Handed to the HTTP client.
    pub sent: Instant,
    /// Arrival of each event that carried output, in order.
    pub output_events: Vec<Instant>,
    /// Events known ([`EventTokens`]) to carry more than one token.
    pub multi_token_events: u32,
    /// Tokens per output event, where known.
    pub event_tokens: EventTokens,
    /// When the request ended, successfully or not.
    pub ended: Instant,
    /// The prompt's length as the client built it.
    pub input_tokens: u64,
    /// `usage.prompt_tokens` when the server reported it.
    pub server_prompt_tokens: Option<u64>,
    /// Output tokens (see `token_source`); 0 for failures.
    pub output_tokens: u64,
    pub token_source: TokenCountSource,
    /// `max_tokens` that was asked for.
    pub requested_output_tokens: u64,
    pub stream: StreamMarks,
    pub outcome: Result<(), FailureReason>,
}

impl RequestRecord {
    pub fn is_success(&self) -> bool {
        self.outcome.is_ok()
    }

    /// Time to first token.
    pub fn ttft(&self) -> Option<Duration> {
        self.output_events.first().map(|t| *t - self.sent)
    }

    /// End-to-end latency: send to the last output event.
    pub fn e2el(&self) -> Option<Duration> {
        self.output_events.last().map(|t| *t - self.sent)
    }

    /// Decode time per output token, first token excluded; defined for 2+ output tokens.
    pub fn tpot(&self) -> Option<Duration> {
        if self.output_tokens < 2 {
            return None;
        }
        let decode = self.e2el()? - self.ttft()?;
        Some(decode.div_f64((self.output_tokens - 1) as f64))
    }

    /// Gaps between successive output events.
    pub fn itls(&self) -> impl Iterator<Item = Duration> + '_ {
        self.output_events.windows(2).map(|w| w[1] - w[0])
    }

    /// Per-token gaps after the first event: an event that carried k tokens a gap g after the
    /// previous one gives k gaps of g / k. `None` when the tokens per event are not known.
    pub fn token_gaps(&self) -> Option<Vec<Duration>> {
        let counts = match &self.event_tokens {
            EventTokens::Unknown => return None,
            EventTokens::OnePerEvent => return Some(self.itls().collect()),
            known => known.per_event()?,
        };
        let mut gaps = Vec::with_capacity(self.output_events.len());
        for (gap, k) in self.itls().zip(counts.iter().skip(1)) {
            let k = (*k).max(1);
            gaps.extend(std::iter::repeat_n(gap / k, k as usize));
        }
        Some(gaps)
    }

    /// How late the send was against the arrival schedule.
    pub fn send_lag(&self) -> Option<Duration> {
        self.scheduled
            .map(|s| self.sent.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(events_ms: &[u64], output_tokens: u64) -> RequestRecord {
        let t0 = Instant::now();
        RequestRecord {
            index: 0,
            request_id: "inferperf-m0".into(),
            scheduled: None,
            sent: t0,
            output_events: events_ms
                .iter()
                .map(|ms| t0 + Duration::from_millis(*ms))
                .collect(),
            multi_token_events: 0,
            event_tokens: EventTokens::OnePerEvent,
            ended: t0 + Duration::from_millis(events_ms.last().copied().unwrap_or(0)),
            input_tokens: 10,
            server_prompt_tokens: None,
            output_tokens,
            token_source: TokenCountSource::Usage,
            requested_output_tokens: output_tokens,
            stream: StreamMarks::default(),
            outcome: Ok(()),
        }
    }

    #[test]
    fn durations_follow_the_definitions() {
        let r = record(&[50, 60, 70, 80], 4);
        assert_eq!(r.ttft(), Some(Duration::from_millis(50)));
        assert_eq!(r.e2el(), Some(Duration::from_millis(80)));
        assert_eq!(r.tpot(), Some(Duration::from_millis(10)));
        assert_eq!(r.itls().count(), 3);
    }

    #[test]
    fn tpot_divides_by_tokens_not_events() {
        // Two events carrying 5 tokens: 4 decode tokens over 40 ms.
        let r = record(&[50, 90], 5);
        assert_eq!(r.tpot(), Some(Duration::from_millis(10)));
        assert_eq!(record(&[50], 1).tpot(), None);
    }

    #[test]
    fn per_token_gaps_spread_an_events_gap_over_its_tokens() {
        // Events at 50, 60 (1 token), 90 (3 tokens): gaps 10 and 3 x 10.
        let mut r = record(&[50, 60, 90], 5);
        r.event_tokens = EventTokens::Reported(vec![1, 1, 3]);
        let ms: Vec<u128> = r
            .token_gaps()
            .expect("known")
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [10, 10, 10, 10]);
        r.event_tokens = EventTokens::Unknown;
        assert!(r.token_gaps().is_none());
    }

    #[test]
    fn failure_groups_keep_http_status_apart() {
        let a = FailureReason::HttpStatus {
            status: 500,
            message: "x".into(),
        };
        assert_eq!(a.group(), "http_500");
        assert_eq!(FailureReason::NoOutput.group(), "no_output");
    }
}
