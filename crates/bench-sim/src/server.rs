//! HTTP routes: the OpenAI-compatible API, health, models and metrics.
//!
//! [`app`] builds the router, so tests can call it without a socket; [`crate::Simulator`] serves
//! it on a real one.

use crate::engine::{Engine, EngineStats, Request};
use crate::order::{AnnouncedOrder, Turn};
use crate::prom::Histograms;
use crate::reply::Reply;
use crate::truth::{RequestTruth, TruthLog};
use crate::wire::{self, Api, ChatRequest, CompletionRequest, EventWriter, PromptInput};
use crate::SimConfig;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
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
    /// Prompts announced ahead ([`crate::SimHandle::pretokenize`]), by `prompt_key`: their
    /// token count and their positions in [`AppState::order`]; each position is used once.
    pub known_prompts: Mutex<HashMap<(usize, u64), Known>>,
    /// The order announced requests are handed to the engine in.
    pub order: AnnouncedOrder,
    /// The token counts of the last announcement's prompts, by `prompt_key`: an announcement
    /// that repeats them (a run of the same requests again) counts only the prompts it adds.
    pub last_counts: Mutex<HashMap<(usize, u64), u64>>,
}

/// An announced prompt: its tokens, and where each request sending it stands in the announced
/// order (a prompt announced twice has two places).
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub tokens: u64,
    pub positions: VecDeque<u64>,
}

/// A prompt's identity for [`AppState::known_prompts`]: its length and a 64-bit hash.
pub(crate) fn prompt_key(text: &str) -> (usize, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    (text.len(), h.finish())
}

impl AppState {
    /// What happened at wall instant `wall`, on the engine's clock: the same instant, or on a
    /// stepped clock the modelled instant of the window open then.
    pub fn clock(&self, wall: Instant) -> Instant {
        self.stepped().map_or(wall, |c| c.modelled(wall))
    }

    /// The stepped clock the engine runs on, if it does ([`crate::stepped`]).
    pub fn stepped(&self) -> Option<&Arc<crate::stepped::SteppedClock>> {
        self.stats.stepped.get()
    }

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

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
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
    /// Usage on every token event too (`stream_options.continuous_usage_stats`).
    continuous_usage: bool,
    ignore_eos: bool,
}

/// `stream_options.include_usage`, false when absent.
fn wants_usage(options: Option<&wire::StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage).unwrap_or(false)
}

/// `stream_options.continuous_usage_stats`, false when absent.
fn wants_continuous_usage(options: Option<&wire::StreamOptions>) -> bool {
    options
        .and_then(|o| o.continuous_usage_stats)
        .unwrap_or(false)
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
        continuous_usage: wants_continuous_usage(req.stream_options.as_ref()),
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
    let text = chat_text(&req);
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
        continuous_usage: wants_continuous_usage(req.stream_options.as_ref()),
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    serve(s, job).await
}

/// The text a chat request's prompt is counted from: every message's content, one per line.
fn chat_text(req: &ChatRequest) -> String {
    req.messages
        .iter()
        .map(|m| match &m.content {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prompt text a request body will be counted from, as its handler reads it; `None` for a
/// body that is neither API's or carries token ids.
pub(crate) fn prompt_text_of(body: &[u8]) -> Option<String> {
    if let Ok(req) = serde_json::from_slice::<CompletionRequest>(body) {
        return match req.prompt {
            PromptInput::Text(t) => Some(t),
            PromptInput::Texts(mut t) if t.len() == 1 => t.pop(),
            _ => None,
        };
    }
    serde_json::from_slice::<ChatRequest>(body)
        .ok()
        .map(|req| chat_text(&req))
}

/// The token count and the announced position of this request's prompt, when it was announced
/// ([`crate::SimHandle::pretokenize`]); takes that position.
fn take_known(s: &AppState, job: &Job) -> Option<(u64, u64)> {
    let text = job.prompt_text.as_deref()?;
    let mut known = s.known_prompts.lock().ok()?;
    if known.is_empty() {
        return None;
    }
    let key = prompt_key(text);
    let entry = known.get_mut(&key)?;
    let tokens = entry.tokens;
    let position = entry.positions.pop_front();
    if entry.positions.is_empty() {
        known.remove(&key);
    }
    Some((tokens, position?))
}

/// An announced request's prompt count and its turn in the announced order, waited for here;
/// nothing for a request that was not announced. It keeps its place whether it is then refused
/// or not, and the turn passes on when it is dropped, after the request was handed to the engine.
async fn announced<'a>(
    s: &'a AppState,
    job: &Job,
    arrival: Instant,
) -> (Option<u64>, Option<Turn<'a>>) {
    match take_known(s, job) {
        Some((tokens, position)) => (Some(tokens), Some(s.order.turn(position, arrival).await)),
        None => (None, None),
    }
}

/// Prompt tokens: exact with a tokenizer (known ahead, or counted now), else estimated at 4
/// bytes per token.
async fn count_prompt(s: &AppState, job: &mut Job, known: Option<u64>) -> u64 {
    if let Some(n) = job.prompt_ids {
        return n as u64;
    }
    let text = job.prompt_text.take().unwrap_or_default();
    let Some(tok) = &s.tokenizer else {
        return (text.len() as u64).div_ceil(4).max(1);
    };
    if let Some(n) = known {
        s.stats.prompts_known.fetch_add(1, Ordering::Relaxed);
        return n;
    }
    let tok = Arc::clone(tok);
    let started = Instant::now();
    let n = tokio::task::spawn_blocking(move || {
        tok.encode_fast(text.as_str(), true)
            .map_or(0, |e| e.len() as u64)
    })
    .await
    .unwrap_or(0);
    s.stats.note_counting(started.elapsed());
    n
}

/// Checks a request as vLLM does before it reaches the engine: ready, the served model, the
/// prompt within the context, `max_tokens` sensible. Returns the prompt's tokens and the tokens
/// to generate, or the error reply. `known` is the prompt's count when it was announced.
async fn admit(s: &AppState, job: &mut Job, known: Option<u64>) -> Result<(u64, u64), Response> {
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
    let prompt_tokens = count_prompt(s, job, known).await;
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
    let (known, turn) = announced(&s, &job, arrival).await;
    let (prompt_tokens, max_tokens) = match admit(&s, &mut job, known).await {
        Ok(sizes) => sizes,
        Err(refusal) => {
            let truth =
                RequestTruth::refused(job.request_id.take(), arrival, refusal.status().as_u16());
            s.truth.push(truth);
            return refusal;
        }
    };
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let faults = s
        .config
        .faults
        .decide(s.config.seed, id, max_tokens, job.ignore_eos);
    if faults.http_500 {
        let mut truth = RequestTruth::refused(job.request_id.take(), arrival, 500);
        truth.fault = Some("http_500");
        s.truth.push(truth);
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
        arrival: turn.as_ref().map_or(arrival, Turn::arrival),
        position: turn.as_ref().and_then(Turn::position),
    });
    drop(turn);
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
    let mut truth = RequestTruth::admitted(id, job.request_id.take(), api, sizes, s.clock(arrival));
    truth.fault = faults.mid.map(|m| match m {
        crate::fault::MidStream::ErrorEvent(_) => "error_event",
        crate::fault::MidStream::Cut(_) => "cut",
        crate::fault::MidStream::Malformed(_) => "malformed",
        crate::fault::MidStream::Stall(..) => "stall",
    });
    truth.liberties = faults.liberties.names();
    if faults.no_usage && job.include_usage {
        truth.liberties.push("no_usage");
    }
    let reply = Reply::new(
        s,
        timeline,
        writer,
        faults,
        truth,
        job.include_usage,
        job.continuous_usage,
    );
    reply.respond(job.stream).await
}
