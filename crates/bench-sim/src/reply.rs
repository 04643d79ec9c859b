//! One request's reply: the engine's timeline for it turned into SSE chunks as its tokens come due
//! (or, without streaming, one JSON body at the end), with its mid-stream faults applied. The
//! truth record is filed once, when the reply ends for whatever reason, including the client
//! going away (the reply is dropped).

use crate::engine::{Emit, FinishReason, Timeline};
use crate::fault::{MidStream, RequestFaults};
use crate::server::{json_response, AppState};
use crate::truth::{RequestTruth, SentEvent, TruthOutcome};
use crate::wire::{self, Api, EventWriter};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One request's reply: engine timeline in, SSE bytes out.
pub(crate) struct Reply {
    state: Arc<AppState>,
    timeline: Timeline,
    writer: EventWriter,
    faults: RequestFaults,
    include_usage: bool,
    /// Usage on every token event (vLLM's `continuous_usage_stats`).
    continuous_usage: bool,
    truth: Option<RequestTruth>,
    epoch: CancellationToken,
    tokens: u64,
    /// When the newest token was due: an event is due when its last token is.
    last_due: Option<Instant>,
    pending_tokens: u32,
    pending_text: String,
    word: usize,
    finished: bool,
}

type Chunk = Result<Bytes, std::io::Error>;

impl Reply {
    pub(crate) fn new(
        state: Arc<AppState>,
        timeline: Timeline,
        writer: EventWriter,
        faults: RequestFaults,
        truth: RequestTruth,
        include_usage: bool,
        continuous_usage: bool,
    ) -> Self {
        // A scripted restart cancels the epoch current when the request came in.
        let epoch = state.epoch.lock().map(|e| e.clone()).unwrap_or_default();
        Self {
            word: truth.id as usize,
            state,
            timeline,
            writer,
            faults,
            include_usage,
            continuous_usage,
            truth: Some(truth),
            epoch,
            tokens: 0,
            last_due: None,
            pending_tokens: 0,
            pending_text: String::new(),
            finished: false,
        }
    }

    /// The response: a body that streams the chunks, or one JSON body once every token is due.
    pub(crate) async fn respond(self, stream: bool) -> Response {
        if !stream {
            return self.collect_whole().await;
        }
        let body = futures_util::stream::unfold(self, |mut reply| async move {
            reply.next_chunk().await.map(|item| (item, reply))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }

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
            self.last_due = Some(due);
            if let Some(tr) = &mut self.truth {
                tr.token_due.push(due);
            }
            self.pending_tokens += 1;
            self.pending_text
                .push_str(wire::WORDS[self.word % wire::WORDS.len()]);
            self.word = self.word.wrapping_mul(31).wrapping_add(7);
            let chunk = if let Some(chunk) = self.mid_stream_fault().await {
                Some(chunk)
            } else if finish.is_none() && self.pending_tokens < self.faults.tokens_per_event {
                None
            } else {
                Some(Ok(self.token_chunk(finish)))
            };
            // After its event, if it has one, was counted handed over (see `crate::stepped`).
            if let Some(clock) = self.state.stepped() {
                clock.consumed.fetch_add(1, Ordering::SeqCst);
                if chunk.is_none() {
                    // No event for the client to read: nothing else would wake the engine.
                    clock.wake();
                }
            }
            if chunk.is_some() {
                return chunk;
            }
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
        let liberties = self.faults.liberties;
        let prompt = self.truth.as_ref().map_or(0, |t| t.prompt_tokens);
        match finish {
            // As vLLM: every token event carries the usage so far.
            _ if self.continuous_usage => {
                let finish = finish
                    .filter(|_| !liberties.no_finish_reason)
                    .map(FinishReason::as_str);
                let usage = wire::usage(prompt, self.tokens);
                out.push_str(&EventWriter::frame(&self.writer.token(
                    &text,
                    finish,
                    Some(usage),
                )));
            }
            None => self.writer.push_token_frame(&text, &mut out),
            Some(_) if liberties.no_finish_reason => self.writer.push_token_frame(&text, &mut out),
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
                let prompt = prompt + u64::from(liberties.prompt_miscount);
                out.push_str(&EventWriter::frame(
                    &self.writer.usage(wire::usage(prompt, self.tokens)),
                ));
            }
            out.push_str("data: [DONE]\n\n");
            if liberties.event_after_done {
                self.writer.push_token_frame("after", &mut out);
            }
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
        let at = self.state.clock(Instant::now());
        if tokens > 0 {
            if let Some(clock) = self.state.stepped() {
                clock.handed.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(due) = self.last_due {
                self.state
                    .stats
                    .events
                    .note(at.saturating_duration_since(due));
            }
        }
        if let Some(tr) = &mut self.truth {
            tr.events.push(SentEvent { at, tokens });
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

impl Drop for Reply {
    fn drop(&mut self) {
        // A stream dropped before its end: the client went away.
        self.close(TruthOutcome::ClientGone);
    }
}
