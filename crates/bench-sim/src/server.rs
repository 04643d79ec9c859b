//! HTTP routes: the OpenAI-compatible API, health, models and metrics.
//!
//! [`app`] builds the router, so tests can call it without a socket; [`crate::Simulator`] serves
//! it on a real one.

use crate::engine::{Emit, Engine, EngineStats, FinishReason, Request, Timeline};
use crate::fault::{MidStream, RequestFaults};
use crate::prom::Histograms;
use crate::truth::{RequestTruth, SentEvent, TruthLog, TruthOutcome};
use crate::wire::{self, Api, ChatRequest, CompletionRequest, EventWriter, PromptInput};
use crate::SimConfig;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Shared by every handler.
pub struct AppState {
    pub config: SimConfig,
    pub engine: Engine,
    pub stats: Arc<EngineStats>,
    pub truth: Arc<TruthLog>,
    pub tokenizer: Option<Arc<tokenizers::Tokenizer>>,
    pub histograms: Mutex<Histograms>,
    pub next_id: AtomicU64,
    pub started: Instant,
    /// Cancelled to cut every open stream (a scripted restart); replaced after.
    pub epoch: Mutex<CancellationToken>,
    /// While `Some` and in the future, the server is "down" (restarting).
    pub down_until: Mutex<Option<Instant>>,
    pub requests_total: AtomicU64,
}

impl AppState {
    fn ready(&self) -> bool {
        let now = Instant::now();
        let started = now >= self.started + self.config.slow_start;
        let up = self
            .down_until
            .lock()
            .map(|d| d.is_none_or(|t| now >= t))
            .unwrap_or(true);
        started && up
    }
}

/// The router over shared state.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"}))
}

async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"detail": "Method Not Allowed"}),
    )
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.ready() {
        StatusCode::OK.into_response()
    } else {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"version": concat!("inferperf-sim-", env!("CARGO_PKG_VERSION"))}),
    )
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let created = unix_now();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{
            "id": s.config.served_model_name, "object": "model", "created": created,
            "owned_by": "vllm", "root": s.config.served_model_name, "parent": null,
            "max_model_len": s.config.max_model_len,
            "permission": []}]}),
    )
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let text = crate::prom::render(&s);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The parts of a request the simulation needs, whichever API it came on.
struct Job {
    api: Api,
    /// `x-request-id`, recorded in the truth so a client's log can be matched to it.
    request_id: Option<String>,
    model: Option<String>,
    prompt_text: Option<String>,
    prompt_ids: Option<usize>,
    max_tokens: Option<i64>,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
}

/// `stream_options.include_usage`, false when absent.
fn wants_usage(options: Option<&wire::StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage).unwrap_or(false)
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, &wire::invalid_body(&e.to_string()))
        }
    };
    let (prompt_text, prompt_ids) = match req.prompt {
        PromptInput::Text(t) => (Some(t), None),
        PromptInput::Texts(mut t) if t.len() == 1 => (t.pop(), None),
        PromptInput::Ids(ids) => (None, Some(ids.len())),
        PromptInput::IdBatches(b) if b.len() == 1 => (None, b.first().map(Vec::len)),
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &wire::error_body(
                    "the simulator serves one prompt per request",
                    "BadRequestError",
                    Some("prompt"),
                    400,
                ),
            )
        }
    };
    let include_usage = wants_usage(req.stream_options.as_ref());
    let job = Job {
        api: Api::Completions,
        request_id: request_id(&headers),
        model: req.model,
        prompt_text,
        prompt_ids,
        max_tokens: req.max_tokens.or(Some(16)),
        stream: req.stream.unwrap_or(false),
        include_usage,
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    serve(s, job).await
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, &wire::invalid_body(&e.to_string()))
        }
    };
    let text: String = req
        .messages
        .iter()
        .map(|m| match &m.content {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let include_usage = wants_usage(req.stream_options.as_ref());
    let job = Job {
        api: Api::Chat,
        request_id: request_id(&headers),
        model: req.model,
        prompt_text: Some(text),
        prompt_ids: None,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        stream: req.stream.unwrap_or(false),
        include_usage,
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    serve(s, job).await
}

/// Prompt tokens: exact with a tokenizer, else estimated at 4 bytes per token.
async fn count_prompt(s: &AppState, job: &mut Job) -> u64 {
    if let Some(n) = job.prompt_ids {
        return n as u64;
    }
    let text = job.prompt_text.take().unwrap_or_default();
    match &s.tokenizer {
        Some(tok) => {
            let tok = Arc::clone(tok);
            tokio::task::spawn_blocking(move || {
                tok.encode_fast(text.as_str(), true)
                    .map_or(0, |e| e.len() as u64)
            })
            .await
            .unwrap_or(0)
        }
        None => (text.len() as u64).div_ceil(4).max(1),
    }
}

/// Checks a request as vLLM does before it reaches the engine: ready, the served model, the
/// prompt within the context, `max_tokens` sensible. Returns the prompt's tokens and the tokens
/// to generate, or the error reply.
async fn admit(s: &AppState, job: &mut Job) -> Result<(u64, u64), Response> {
    if !s.ready() {
        return Err(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &wire::error_body(
                "The server is starting up or restarting.",
                "ServiceUnavailableError",
                None,
                503,
            ),
        ));
    }
    let served = &s.config.served_model_name;
    if let Some(m) = job.model.as_deref().filter(|m| m != served) {
        return Err(json_response(
            StatusCode::NOT_FOUND,
            &wire::unknown_model(m, served),
        ));
    }
    let prompt_tokens = count_prompt(s, job).await;
    let max_len = s.config.max_model_len;
    if prompt_tokens >= max_len {
        return Err(json_response(
            StatusCode::BAD_REQUEST,
            &wire::prompt_too_long(prompt_tokens, max_len),
        ));
    }
    let max_tokens = match job.max_tokens {
        Some(m) if m < 1 => {
            return Err(json_response(
                StatusCode::BAD_REQUEST,
                &wire::max_tokens_too_small(m),
            ))
        }
        Some(m) if m as u64 > max_len => {
            return Err(json_response(
                StatusCode::BAD_REQUEST,
                &wire::max_tokens_too_large(m, max_len),
            ))
        }
        // vLLM clamps a prompt + max_tokens over the limit silently (see the transcripts).
        Some(m) => (m as u64).min(max_len - prompt_tokens),
        None => max_len - prompt_tokens,
    };
    Ok((prompt_tokens, max_tokens))
}

async fn serve(s: Arc<AppState>, mut job: Job) -> Response {
    // Arrival is before tokenizing the prompt: that work is part of the server's latency.
    let arrival = Instant::now();
    s.requests_total.fetch_add(1, Ordering::Relaxed);
    let (prompt_tokens, max_tokens) = match admit(&s, &mut job).await {
        Ok(sizes) => sizes,
        Err(refusal) => return refusal,
    };
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let faults = s
        .config
        .faults
        .decide(s.config.seed, id, max_tokens, job.ignore_eos);
    if faults.http_500 {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &wire::error_body(
                "Simulated internal server error",
                "InternalServerError",
                None,
                500,
            ),
        );
    }
    let timeline = s.engine.admit(Request {
        prompt_tokens,
        max_tokens,
        eos_after: faults.eos_after,
        arrival,
    });
    let prefix = if job.api == Api::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    let writer = EventWriter::new(
        job.api,
        format!("{prefix}-{id:016x}"),
        unix_now(),
        s.config.served_model_name.clone(),
        concat!("inferperf-sim-", env!("CARGO_PKG_VERSION")).into(),
    );
    let api = if job.api == Api::Chat {
        "chat"
    } else {
        "completions"
    };
    let sizes = (prompt_tokens, max_tokens);
    let truth = RequestTruth::admitted(id, job.request_id.take(), api, sizes, arrival);
    let epoch = s.epoch.lock().map(|e| e.clone()).unwrap_or_default();
    let stream = TokenStream {
        state: Arc::clone(&s),
        timeline,
        writer,
        faults,
        include_usage: job.include_usage,
        truth: Some(truth),
        epoch,
        tokens: 0,
        pending_tokens: 0,
        pending_text: String::new(),
        word: id as usize,
        finished: false,
    };
    if job.stream {
        let body = futures_util::stream::unfold(stream, |mut st| async move {
            st.next_chunk().await.map(|item| (item, st))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    } else {
        stream.collect_whole().await
    }
}

/// One request's streamed reply: engine timeline in, SSE bytes out.
struct TokenStream {
    state: Arc<AppState>,
    timeline: Timeline,
    writer: EventWriter,
    faults: RequestFaults,
    include_usage: bool,
    truth: Option<RequestTruth>,
    epoch: CancellationToken,
    tokens: u64,
    pending_tokens: u32,
    pending_text: String,
    word: usize,
    finished: bool,
}

type Chunk = Result<Bytes, std::io::Error>;

impl TokenStream {
    /// The next chunk to write, `None` at the end.
    async fn next_chunk(&mut self) -> Option<Chunk> {
        if self.finished {
            return None;
        }
        loop {
            let emit = tokio::select! {
                e = self.timeline.next() => e,
                () = self.epoch.cancelled() => {
                    return Some(self.abort(TruthOutcome::Restarted, "restart"));
                }
            };
            let Some(emit) = emit else {
                // The engine dropped the sequence (it was shut down).
                return Some(self.abort(TruthOutcome::Fault("engine_gone".into()), "engine gone"));
            };
            let (due, finish) = match emit {
                Emit::PrefillStart(t) => {
                    if let Some(tr) = &mut self.truth {
                        tr.prefill_start = Some(t);
                    }
                    continue;
                }
                Emit::Token(due, finish) => (due, finish),
            };
            self.tokens += 1;
            if let Some(tr) = &mut self.truth {
                tr.token_due.push(due);
            }
            self.pending_tokens += 1;
            self.pending_text
                .push_str(wire::WORDS[self.word % wire::WORDS.len()]);
            self.word = self.word.wrapping_mul(31).wrapping_add(7);
            if let Some(chunk) = self.mid_stream_fault().await {
                return Some(chunk);
            }
            if finish.is_none() && self.pending_tokens < self.faults.tokens_per_event {
                continue;
            }
            return Some(Ok(self.token_chunk(finish)));
        }
    }

    /// Applies a mid-stream fault due at this token, if any.
    async fn mid_stream_fault(&mut self) -> Option<Chunk> {
        match self.faults.mid {
            Some(MidStream::Cut(after)) if self.tokens == after => Some(self.abort(
                TruthOutcome::Fault("cut".into()),
                "simulated connection cut",
            )),
            Some(MidStream::ErrorEvent(after)) if self.tokens == after => {
                self.finished = true;
                let err = wire::error_body(
                    "Simulated error during generation",
                    "InternalServerError",
                    None,
                    500,
                );
                let text = format!("{}data: [DONE]\n\n", EventWriter::frame(&err));
                self.record_event(0);
                self.close(TruthOutcome::Fault("error_event".into()));
                Some(Ok(Bytes::from(text)))
            }
            Some(MidStream::Malformed(after)) if self.tokens == after => {
                self.faults.mid = None;
                self.record_event(0);
                // Not valid JSON; the stream goes on afterwards.
                if let Some(tr) = &mut self.truth {
                    tr.outcome = TruthOutcome::Fault("malformed".into());
                }
                Some(Ok(Bytes::from_static(
                    b"data: {\"choices\": [{\"text\": \"x\"\n\n",
                )))
            }
            Some(MidStream::Stall(after, wait)) if self.tokens == after => {
                self.faults.mid = None;
                tokio::time::sleep(wait).await;
                None
            }
            _ => None,
        }
    }

    fn token_chunk(&mut self, finish: Option<FinishReason>) -> Bytes {
        let mut out = String::new();
        if self.tokens == u64::from(self.pending_tokens) && self.writer.api == Api::Chat {
            out.push_str(&EventWriter::frame(&self.writer.role()));
        }
        let text = std::mem::take(&mut self.pending_text);
        match finish {
            None => self.writer.push_token_frame(&text, &mut out),
            Some(f) => out.push_str(&EventWriter::frame(&self.writer.token(
                &text,
                Some(f.as_str()),
                None,
            ))),
        }
        let tokens = std::mem::take(&mut self.pending_tokens);
        if finish.is_some() {
            self.finished = true;
            if self.include_usage && !self.faults.no_usage {
                let prompt = self.truth.as_ref().map_or(0, |t| t.prompt_tokens);
                out.push_str(&EventWriter::frame(
                    &self.writer.usage(wire::usage(prompt, self.tokens)),
                ));
            }
            out.push_str("data: [DONE]\n\n");
        }
        self.record_event(tokens);
        if finish.is_some() {
            let outcome = match &self.truth {
                Some(t) if t.outcome != TruthOutcome::ClientGone => t.outcome.clone(),
                _ => TruthOutcome::Completed,
            };
            self.close(outcome);
        }
        Bytes::from(out)
    }

    fn record_event(&mut self, tokens: u32) {
        if let Some(tr) = &mut self.truth {
            tr.events.push(SentEvent {
                at: Instant::now(),
                tokens,
            });
        }
    }

    fn abort(&mut self, outcome: TruthOutcome, why: &str) -> Chunk {
        self.finished = true;
        self.close(outcome);
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            why.to_string(),
        ))
    }

    /// Files the truth record (once).
    fn close(&mut self, outcome: TruthOutcome) {
        if let Some(mut t) = self.truth.take() {
            t.outcome = outcome;
            if let Ok(mut h) = self.state.histograms.lock() {
                h.observe(&t);
            }
            self.state.truth.push(t);
        }
    }

    /// Non-streaming: wait for every token, then answer in one JSON body.
    async fn collect_whole(mut self) -> Response {
        let mut text = String::new();
        let mut reason = FinishReason::Length;
        while let Some(emit) = self.timeline.next().await {
            if let Emit::Token(due, finish) = emit {
                self.tokens += 1;
                if let Some(tr) = &mut self.truth {
                    tr.token_due.push(due);
                }
                text.push_str(wire::WORDS[self.word % wire::WORDS.len()]);
                self.word = self.word.wrapping_mul(31).wrapping_add(7);
                if let Some(r) = finish {
                    reason = r;
                    break;
                }
            }
        }
        let prompt = self.truth.as_ref().map_or(0, |t| t.prompt_tokens);
        let body = self
            .writer
            .complete(&text, reason.as_str(), wire::usage(prompt, self.tokens));
        let tokens = self.tokens as u32;
        self.record_event(tokens);
        self.close(TruthOutcome::Completed);
        json_response(StatusCode::OK, &body)
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        // A stream dropped before its end: the client went away.
        self.close(TruthOutcome::ClientGone);
    }
}
