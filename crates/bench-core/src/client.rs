//! Sending one streaming request and recording what arrives.
//!
//! Timestamps: `sent` is taken just before the request is written. Each network read is stamped
//! before any parsing, and every event decoded from it gets that stamp: on Linux, the kernel's
//! record of when the bytes arrived (`socket`), so a busy client does not make events
//! late; otherwise the moment the read returned. Headers (HTTP 200) arrive before prefill ends on
//! real servers, so nothing is measured at the headers.
//!
//! Connections ([`crate::transport`], over TLS for `https://`): HTTP/1.1 keep-alive with
//! `TCP_NODELAY`, an unbounded idle pool (warm-up requests leave connections open so measured
//! requests do not pay for set-up), one wake-up per read in the request's own task, and no proxy
//! (a proxy would sit inside every measured latency). The standard stack (`standard`)
//! is the other choice: the same requests, records and outcomes, stamped when its body stream
//! yields.

use crate::record::{EventTokens, FailureReason, RequestRecord, StreamMarks, TokenCountSource};
use crate::request::RequestPlan;
use crate::standard::Standard;
use crate::stream::{classify, excerpt, ApiKind, SseDecoder, StreamEvent};
use crate::tokenizer::PromptTokenizer;
use crate::transport::{Flow, ReadStats, Transport, TransportError};
use bench_result::settings::TransportKind;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Why a client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not an http:// or https:// URL with a host")]
    UnsupportedUrl(String),
    #[error("TLS set-up: {0}")]
    Tls(std::io::Error),
}

/// The longest event a stream may send: one token's event is a few hundred bytes, so a server
/// sending more without ending it (no blank line, or a line without end) is broken, and the
/// request fails rather than the client's memory growing.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Generated text kept per request (it is only re-tokenized when the server sends no usage).
const MAX_TEXT_BYTES: usize = 4 << 20;

/// How long a request may take: in all, and between any two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, from send to its last byte.
    pub total: Duration,
    /// Silence on the connection: no bytes for this long ends the request.
    pub idle: Option<Duration>,
}

/// The HTTP stack a client sends through.
#[derive(Debug)]
enum Wire {
    Native(Transport),
    Standard(Standard),
}

/// A reusable client for one endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    wire: Arc<Wire>,
    api: ApiKind,
    api_key: Option<String>,
    timeout: Duration,
    reads: Option<ReadObserver>,
}

/// Told of every event carrying output the client read, after it stamped its arrival: a server
/// in the same process that waits for its client (the simulator's stepped clock).
#[derive(Clone)]
pub struct ReadObserver(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ReadObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadObserver")
    }
}

impl Client {
    /// For `url` over `transport`; `ca_cert` adds CA certificates (PEM) trusted for `https://`.
    pub fn new(
        url: &reqwest::Url,
        api: ApiKind,
        api_key: Option<String>,
        timeouts: Timeouts,
        ca_cert: Option<&std::path::Path>,
        transport: TransportKind,
    ) -> Result<Self, ClientError> {
        let unsupported = || ClientError::UnsupportedUrl(url.to_string());
        let wire = match transport {
            TransportKind::Native => {
                let tls = if url.scheme() == "https" {
                    Some(crate::tls::client_config(ca_cert).map_err(ClientError::Tls)?)
                } else {
                    None
                };
                let native = Transport::with_tls(url, tls)
                    .ok_or_else(unsupported)?
                    .with_idle_timeout(timeouts.idle);
                Wire::Native(native)
            }
            TransportKind::Standard => {
                if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
                    return Err(unsupported());
                }
                let standard =
                    Standard::new(url.clone(), ca_cert, timeouts.idle).map_err(ClientError::Tls)?;
                Wire::Standard(standard)
            }
        };
        Ok(Self {
            wire: Arc::new(wire),
            api,
            api_key,
            timeout: timeouts.total,
            reads: None,
        })
    }

    /// Tells `observer` of every output event read from now on.
    #[must_use]
    pub fn observed_by(mut self, observer: ReadObserver) -> Self {
        self.reads = Some(observer);
        self
    }

    /// How reads were stamped since the last call.
    pub fn take_read_stats(&self) -> ReadStats {
        match &*self.wire {
            Wire::Native(t) => t.take_read_stats(),
            Wire::Standard(s) => s.take_read_stats(),
        }
    }

    /// Sends `plan` and streams the reply to its end, a failure, the timeout or `abort`.
    ///
    /// `tokenizer` counts output tokens when the server sends no usage.
    pub async fn send(
        &self,
        plan: &RequestPlan,
        scheduled: Option<Instant>,
        tokenizer: Option<&PromptTokenizer>,
        abort: &CancellationToken,
    ) -> RequestRecord {
        let mut state = StreamState::new(self.api, plan.max_tokens);
        state.reads = self.reads.clone();
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + self.timeout);
        let exchange = self.exchange(plan, &mut state);
        let outcome = tokio::select! {
            biased;
            () = abort.cancelled() => Err(FailureReason::Interrupted),
            r = tokio::time::timeout_at(deadline, exchange) => {
                r.unwrap_or(Err(FailureReason::Timeout(self.timeout)))
            }
        };
        let ended = Instant::now();
        let outcome = match &self.api_key {
            Some(key) => outcome.map_err(|f| f.redacted(key)),
            None => outcome,
        };
        state.into_record(plan, scheduled, sent, ended, outcome, tokenizer)
    }

    /// Posts the request and feeds the reply to `state` until the stream ends or fails.
    async fn exchange(
        &self,
        plan: &RequestPlan,
        state: &mut StreamState,
    ) -> Result<(), FailureReason> {
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers = vec![("x-request-id", plan.request_id.as_str())];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let mut decoder = SseDecoder::new();
        let status = match &*self.wire {
            Wire::Native(native) => {
                native
                    .post(&headers, &plan.body, |bytes, arrived| {
                        decoder.feed(bytes, |frame| {
                            state.on_event(classify(frame, state.api), arrived);
                        });
                        if decoder.pending_bytes() > MAX_EVENT_BYTES
                            && state.failure.is_none()
                            && !state.done
                        {
                            let too_long = TransportError::EventTooLong(MAX_EVENT_BYTES);
                            state.failure = Some(FailureReason::Malformed(too_long.to_string()));
                        }
                        state.flow()
                    })
                    .await
            }
            Wire::Standard(standard) => {
                let body = plan.body.clone();
                standard
                    .post(&headers, body, MAX_EVENT_BYTES, |frame, arrived| {
                        state.on_event(classify(frame, state.api), arrived);
                        state.flow()
                    })
                    .await
            }
        };
        match status {
            Err(TransportError::Connect(e)) => return Err(FailureReason::Connect(chain(&e))),
            Err(TransportError::Idle(d)) => return Err(FailureReason::IdleTimeout(d)),
            // The server took the connection and dropped it unanswered: its reply was cut.
            Err(e @ TransportError::ClosedBeforeHead(_)) => {
                return Err(FailureReason::StreamCut(e.to_string()))
            }
            Err(e @ TransportError::EventTooLong(_)) if state.failure.is_none() && !state.done => {
                return Err(FailureReason::Malformed(e.to_string()))
            }
            Err(TransportError::Malformed(m)) => {
                return Err(FailureReason::Malformed(format!(
                    "malformed HTTP response: {m}"
                )))
            }
            // Lost after the head: keep what a body handler decided first (e.g. an error event).
            Err(e @ (TransportError::Io(_) | TransportError::Closed))
                if state.failure.is_none() && !state.done =>
            {
                return Err(FailureReason::StreamCut(e.to_string()))
            }
            Err(_) => {}
            Ok(s) if s.code != 200 => {
                return Err(FailureReason::HttpStatus {
                    status: s.code,
                    message: error_message(&s.error_body),
                })
            }
            Ok(_) => {}
        }
        conclude(state, &mut decoder)
    }
}

/// Ends a stream: flushes a last event left without its blank line, then decides the outcome.
fn conclude(state: &mut StreamState, decoder: &mut SseDecoder) -> Result<(), FailureReason> {
    if !state.done && state.failure.is_none() {
        let arrived = Instant::now();
        decoder.finish(|frame| state.on_event(classify(frame, state.api), arrived));
    }
    match state.failure.take() {
        Some(f) => Err(f),
        None if state.events.is_empty() => Err(FailureReason::NoOutput),
        None if !state.done && !state.finished => Err(FailureReason::StreamCut(
            "connection closed before [DONE] or a finish_reason".into(),
        )),
        None => Ok(()),
    }
}

/// What has arrived so far on one stream.
struct StreamState {
    api: ApiKind,
    events: Vec<Instant>,
    /// Tokens per event when every event named its token ids.
    event_tokens: Option<u64>,
    /// Each output event's tokens where the server said (token ids, or the growth of a usage
    /// sent with every event); `per_event_known` false once an event said neither.
    per_event: Vec<u32>,
    per_event_known: bool,
    /// Where each output event's text ends in `text`; `text_whole` false once text was dropped.
    text_ends: Vec<usize>,
    text_whole: bool,
    text: String,
    usage_completion: Option<u64>,
    usage_prompt: Option<u64>,
    finished: bool,
    done: bool,
    /// Events that came after `[DONE]`.
    events_after_done: u32,
    failure: Option<FailureReason>,
    reads: Option<ReadObserver>,
}

impl StreamState {
    fn new(api: ApiKind, max_tokens: u64) -> Self {
        Self {
            api,
            events: Vec::with_capacity(max_tokens.min(1 << 16) as usize),
            event_tokens: Some(0),
            per_event: Vec::new(),
            per_event_known: true,
            text_ends: Vec::new(),
            text_whole: true,
            text: String::new(),
            usage_completion: None,
            usage_prompt: None,
            finished: false,
            done: false,
            events_after_done: 0,
            failure: None,
            reads: None,
        }
    }

    fn on_event(
        &mut self,
        event: Result<StreamEvent<'_>, crate::stream::MalformedEvent>,
        arrived: Instant,
    ) {
        if self.done {
            // A server that goes on after its end: counted, never measured.
            self.events_after_done = self.events_after_done.saturating_add(1);
            return;
        }
        if self.failure.is_some() {
            return;
        }
        match event {
            Err(e) => self.failure = Some(FailureReason::Malformed(e.to_string())),
            Ok(StreamEvent::Output {
                text,
                tokens,
                finished,
                usage,
            }) => {
                self.events.push(arrived);
                if let Some(observer) = &self.reads {
                    (observer.0)();
                }
                if self.text.len() + text.len() <= MAX_TEXT_BYTES {
                    self.text.push_str(&text);
                } else {
                    self.text_whole = false;
                }
                self.text_ends.push(self.text.len());
                let before = self.usage_completion.unwrap_or(0);
                let grown = usage
                    .and_then(|u| u.completion_tokens)
                    .map(|c| c.saturating_sub(before));
                match tokens.map(u64::from).or(grown) {
                    Some(n) => self.per_event.push(u32::try_from(n).unwrap_or(u32::MAX)),
                    None => self.per_event_known = false,
                }
                match tokens {
                    Some(n) => self.event_tokens = self.event_tokens.map(|t| t + u64::from(n)),
                    None => self.event_tokens = None,
                }
                self.finished |= finished;
                self.take_usage(usage);
            }
            Ok(StreamEvent::Finish { usage }) => {
                self.finished = true;
                self.take_usage(usage);
            }
            Ok(StreamEvent::Usage(u)) => self.take_usage(Some(u)),
            Ok(StreamEvent::Error(message)) => {
                self.failure = Some(FailureReason::ServerError(message));
            }
            Ok(StreamEvent::Done) => self.done = true,
            Ok(StreamEvent::Other) => {}
        }
    }

    /// What the transport should do next.
    fn flow(&self) -> Flow {
        if self.failure.is_some() {
            Flow::Abort
        } else if self.done {
            Flow::Finished
        } else {
            Flow::Continue
        }
    }

    /// Tokens per event for a completed stream of `output_tokens`: as the server said them, one
    /// each when there are as many events as tokens, else the tokenizer's count of each event's
    /// text.
    fn event_tokens_for(
        &self,
        output_tokens: u64,
        tokenizer: Option<&PromptTokenizer>,
    ) -> EventTokens {
        let events = self.events.len();
        if self.per_event_known && self.per_event.len() == events && events > 0 {
            return EventTokens::Reported(self.per_event.clone());
        }
        if output_tokens == events as u64 {
            return EventTokens::OnePerEvent;
        }
        let Some(tok) = tokenizer.filter(|_| self.text_whole) else {
            return EventTokens::Unknown;
        };
        let mut start = 0;
        let mut counts = Vec::with_capacity(events);
        for &end in &self.text_ends {
            let piece = self.text.get(start..end).unwrap_or("");
            let n = tok.encode(piece).map_or(1, |ids| ids.len().max(1));
            counts.push(u32::try_from(n).unwrap_or(u32::MAX));
            start = end;
        }
        EventTokens::Tokenized(counts)
    }

    fn take_usage(&mut self, usage: Option<crate::stream::Usage>) {
        if let Some(u) = usage {
            self.usage_completion = u.completion_tokens.or(self.usage_completion);
            self.usage_prompt = u.prompt_tokens.or(self.usage_prompt);
        }
    }

    fn into_record(
        self,
        plan: &RequestPlan,
        scheduled: Option<Instant>,
        sent: Instant,
        ended: Instant,
        outcome: Result<(), FailureReason>,
        tokenizer: Option<&PromptTokenizer>,
    ) -> RequestRecord {
        let success = outcome.is_ok();
        let (output_tokens, token_source) = match (self.usage_completion, self.event_tokens) {
            _ if !success => (0, TokenCountSource::Usage),
            (Some(n), _) => (n, TokenCountSource::Usage),
            (None, Some(n)) if n > 0 => (n, TokenCountSource::EventTokenIds),
            (None, _) => {
                let counted = tokenizer
                    .and_then(|t| t.encode(&self.text).ok())
                    .map_or(self.events.len() as u64, |ids| ids.len() as u64);
                // A token that decodes to nothing still came as an event.
                (
                    counted.max(self.events.len() as u64),
                    TokenCountSource::Tokenized,
                )
            }
        };
        let event_tokens = if success {
            self.event_tokens_for(output_tokens, tokenizer)
        } else {
            EventTokens::Unknown
        };
        let multi_token_events = event_tokens.multi_token_events();
        RequestRecord {
            index: plan.index,
            request_id: plan.request_id.clone(),
            scheduled,
            sent,
            output_events: self.events,
            multi_token_events,
            event_tokens,
            ended,
            input_tokens: plan.input_tokens,
            server_prompt_tokens: self.usage_prompt,
            output_tokens,
            token_source,
            requested_output_tokens: plan.max_tokens,
            stream: StreamMarks {
                finish_reason: self.finished,
                usage: self.usage_completion.is_some() || self.usage_prompt.is_some(),
                events_after_done: self.events_after_done,
            },
            outcome,
        }
    }
}

/// The server's error message from a non-200 reply: `error.message` (OpenAI and vLLM),
/// `message` or `detail` when the body is JSON, else the body's first bytes.
fn error_message(body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = json.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    });
    field.unwrap_or_else(|| excerpt(body))
}

/// An error and its sources on one line, e.g. "error sending request: connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
