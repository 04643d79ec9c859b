//! The simulator's own wire types: what it accepts and the exact shapes it sends back, copied from
//! a real vLLM server's replies (testdata/transcripts). Nothing here is shared with the client,
//! so one serde mistake cannot hide on both sides.

use serde::Deserialize;
use serde_json::{json, Value};

/// `prompt` of a completion request: text, token ids, or a one-element batch of either.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdBatches(Vec<Vec<u32>>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    #[serde(default)]
    pub return_token_ids: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// vLLM's error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: u16) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// The 404 for a model name that is not served.
pub fn unknown_model(asked: &str, served: &str) -> Value {
    error_body(
        &format!("The model `{asked}` does not exist. Valid aliases: {served}."),
        "NotFoundError",
        Some("model"),
        404,
    )
}

/// The 400 for `max_tokens` above the model's length limit.
pub fn max_tokens_too_large(max_tokens: i64, max_model_len: u64) -> Value {
    error_body(
        &format!("max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})"),
        "BadRequestError",
        Some("max_tokens"),
        400,
    )
}

/// The 400 for `max_tokens` below 1.
pub fn max_tokens_too_small(max_tokens: i64) -> Value {
    error_body(
        &format!("max_tokens must be at least 1, got {max_tokens}. (parameter=max_tokens, value={max_tokens})"),
        "BadRequestError",
        Some("max_tokens"),
        400,
    )
}

/// The 400 for a prompt longer than the model's limit on its own.
pub fn prompt_too_long(prompt_tokens: u64, max_model_len: u64) -> Value {
    error_body(
        &format!("This model's maximum context length is {max_model_len} tokens. However, your prompt contains {prompt_tokens} input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={prompt_tokens})"),
        "BadRequestError",
        Some("input_tokens"),
        400,
    )
}

/// The 400 for a body that is not valid JSON for the route.
pub fn invalid_body(detail: &str) -> Value {
    error_body(
        &format!("1 validation error:\n  {{'type': 'json_invalid', 'msg': 'JSON decode error', 'ctx': {{'error': '{detail}'}}}}"),
        "Bad Request",
        Some("body"),
        400,
    )
}

/// Shapes of streamed events for one request.
#[derive(Debug, Clone)]
pub struct EventWriter {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub fingerprint: String,
    /// A plain token event rendered once around its text: `data: {...` and `...}\n\n`.
    token_frame: (String, String),
}

/// Stands for the text while a token event's frame is rendered once.
const TEXT_MARK: &str = "\u{1}inferperf-text\u{1}";

impl EventWriter {
    pub fn new(api: Api, id: String, created: u64, model: String, fingerprint: String) -> Self {
        let mut w = Self {
            api,
            id,
            created,
            model,
            fingerprint,
            token_frame: (String::new(), String::new()),
        };
        let whole = Self::frame(&w.token(TEXT_MARK, None, None));
        let mark = serde_json::to_string(TEXT_MARK).unwrap_or_default();
        if let Some((before, after)) = whole.split_once(&mark) {
            w.token_frame = (before.to_string(), after.to_string());
        }
        w
    }

    /// Appends the frame of a plain token event (no finish, no usage) carrying `text`: the same
    /// bytes as `frame(&token(text, None, None))`, without building a JSON value per token.
    pub fn push_token_frame(&self, text: &str, out: &mut String) {
        let (before, after) = &self.token_frame;
        if before.is_empty() {
            out.push_str(&Self::frame(&self.token(text, None, None)));
            return;
        }
        out.push_str(before);
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
        out.push_str(after);
    }

    /// `data: {...}\n\n` for one SSE event.
    pub fn frame(value: &Value) -> String {
        format!("data: {value}\n\n")
    }

    /// The chat role announcement that precedes the first token.
    pub fn role(&self) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model,
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": null, "finish_reason": null}],
               "prompt_token_ids": null, "prompt_text": null})
    }

    /// One event carrying `text`; `finish` on the last.
    pub fn token(&self, text: &str, finish: Option<&str>, usage: Option<Value>) -> Value {
        let mut v = match self.api {
            Api::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish,
                             "stop_reason": null, "prompt_token_ids": null, "token_ids": null}]}),
            Api::Chat => json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": {"content": text}, "logprobs": null,
                             "finish_reason": finish, "token_ids": null}]}),
        };
        if finish.is_some() && self.api == Api::Chat {
            v["choices"][0]["stop_reason"] = Value::Null;
        }
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    /// The usage-only event after the last token.
    pub fn usage(&self, usage: Value) -> Value {
        let object = match self.api {
            Api::Completions => "text_completion",
            Api::Chat => "chat.completion.chunk",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
               "choices": [], "usage": usage, "system_fingerprint": self.fingerprint})
    }

    /// The whole reply of a non-streaming request.
    pub fn complete(&self, text: &str, finish: &str, usage: Value) -> Value {
        match self.api {
            Api::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish,
                             "stop_reason": null, "token_ids": null, "prompt_logprobs": null,
                             "prompt_token_ids": null}],
                "service_tier": null, "system_fingerprint": self.fingerprint, "usage": usage}),
            Api::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": text, "refusal": null,
                                         "reasoning": null},
                             "logprobs": null, "finish_reason": finish, "stop_reason": null}],
                "service_tier": null, "system_fingerprint": self.fingerprint, "usage": usage}),
        }
    }
}

/// `{"prompt_tokens", "total_tokens", "completion_tokens"}` in vLLM's key order.
pub fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion})
}

/// Words the simulator "generates"; each is one token.
pub const WORDS: &[&str] = &[
    " the", " of", " and", " to", " in", " model", " token", " serve", " batch", " cache", " GPU",
    " latency", " through", "put", " 42", ",", ".", " prefill", " decode", " stream",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prerendered_token_frame_is_byte_identical() {
        for api in [Api::Completions, Api::Chat] {
            let w = EventWriter::new(
                api,
                "cmpl-7".into(),
                42,
                "a \"quoted\" model".into(),
                "fp".into(),
            );
            for text in ["", " the", "\"q\"\n\\", "成像", "\u{0}"] {
                let mut fast = String::new();
                w.push_token_frame(text, &mut fast);
                assert_eq!(
                    fast,
                    EventWriter::frame(&w.token(text, None, None)),
                    "{api:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn shapes_match_the_vllm_transcripts() {
        let w = EventWriter::new(
            Api::Completions,
            "cmpl-1".into(),
            1,
            "m".into(),
            "fp".into(),
        );
        let t = w.token("x", None, None);
        assert_eq!(t["choices"][0]["text"], "x");
        assert!(t["choices"][0]["finish_reason"].is_null());
        let u = w.usage(usage(5, 8));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 13);
        let chat = EventWriter {
            api: Api::Chat,
            ..w
        };
        assert_eq!(chat.role()["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            chat.token("y", Some("length"), None)["choices"][0]["finish_reason"],
            "length"
        );
        let e = unknown_model("gpt-4", "tiny-llama");
        assert_eq!(
            e["error"]["message"],
            "The model `gpt-4` does not exist. Valid aliases: tiny-llama."
        );
    }
}
