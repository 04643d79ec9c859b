//! Server-sent events: splitting a byte stream into events and classifying each one.
//!
//! Both halves are pure so they can be tested against raw captures of a real server.
//!
//! [`SseDecoder`] turns arbitrary network chunks into complete SSE events. It keeps one growing
//! buffer and hands out slices of it, so a stream of single-line `data:` events costs no
//! allocation per event once the buffer has grown. The caller timestamps a chunk when the read
//! returns, *before* feeding it, so the time an event is stamped with never includes parsing.
//!
//! [`classify`] decides what an event's payload means for the metrics (see docs/metrics.md):
//! - `/v1/completions`: any event with a non-empty `choices` array is output, even with empty
//!   `text` (a token that decodes to nothing on its own is still a token);
//! - `/v1/chat/completions`: any event with `choices` is output except the role announcement
//!   (a `delta` with `role` and no text) and a bare terminator (an empty `delta` that only carries
//!   `finish_reason`); `delta.reasoning_content`, `delta.reasoning` and `tool_calls` count;
//! - a usage-only event (`"choices": []`) and `[DONE]` never are.

use serde::Deserialize;
use std::borrow::Cow;

/// Which OpenAI-compatible API the stream comes from.
pub use bench_result::settings::ApiKind;

/// One complete SSE event: its optional `event:` name and its (joined) `data:` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseFrame<'a> {
    pub event: Option<&'a [u8]>,
    pub data: &'a [u8],
}

/// Incremental SSE parser over network chunks (WHATWG "event stream interpretation", the parts an
/// inference server uses: `data:`, `event:`, comments, CRLF or LF line ends).
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Next byte of `buf` not yet scanned for a line end.
    pos: usize,
    /// `data:` payload ranges of the event being assembled, as offsets into `buf`.
    data: Vec<(usize, usize)>,
    event: Option<(usize, usize)>,
    /// Scratch space to join a multi-line `data:` payload.
    joined: Vec<u8>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk and calls `on_event` for every event it completes, in order.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseFrame<'_>)) {
        self.buf.extend_from_slice(chunk);
        let mut event_start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
            let line_start = self.pos;
            let mut line_end = line_start + nl;
            self.pos = line_end + 1;
            if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            let line = &self.buf[line_start..line_end];
            if line.is_empty() {
                self.dispatch(&mut on_event);
                event_start = self.pos;
            } else if let Some(value) = field(line, b"data") {
                self.data.push((line_end - value.len(), line_end));
            } else if let Some(value) = field(line, b"event") {
                self.event = Some((line_end - value.len(), line_end));
            }
            // Comments (":...") and other fields (id, retry) carry nothing we measure.
        }
        self.compact(event_start);
    }

    /// Ends the stream: an event left without its closing blank line is still delivered, since
    /// some servers close the connection right after the last `data:` line.
    pub fn finish(&mut self, mut on_event: impl FnMut(SseFrame<'_>)) {
        if self.pos < self.buf.len() {
            // A last line without a newline at all.
            let line_start = self.pos;
            let line_end = self.buf.len();
            self.pos = line_end;
            if let Some(value) = field(&self.buf[line_start..line_end], b"data") {
                self.data.push((line_end - value.len(), line_end));
            }
        }
        self.dispatch(&mut on_event);
        self.buf.clear();
        self.pos = 0;
    }

    /// Bytes received but not yet part of a complete event.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseFrame<'_>)) {
        if self.data.is_empty() {
            self.event = None;
            return;
        }
        let event = self.event.take().map(|(s, e)| &self.buf[s..e]);
        let data = if let [(s, e)] = self.data[..] {
            &self.buf[s..e]
        } else {
            self.joined.clear();
            for (i, &(s, e)) in self.data.iter().enumerate() {
                if i > 0 {
                    self.joined.push(b'\n');
                }
                self.joined.extend_from_slice(&self.buf[s..e]);
            }
            &self.joined[..]
        };
        on_event(SseFrame { event, data });
        self.data.clear();
    }

    /// Drops the bytes of events already delivered, keeping offsets of the pending one valid.
    fn compact(&mut self, consumed: usize) {
        if consumed == 0 {
            return;
        }
        if consumed == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..consumed);
        }
        self.pos -= consumed;
        for r in &mut self.data {
            r.0 -= consumed;
            r.1 -= consumed;
        }
        if let Some(r) = &mut self.event {
            r.0 -= consumed;
            r.1 -= consumed;
        }
    }
}

/// The value of `name:` in an SSE line, without the single optional leading space.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// Token counts a server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
}

/// What one event means for the measurement.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent<'a> {
    /// Generated output. `tokens` is known when the server names the token ids.
    Output {
        text: Cow<'a, str>,
        tokens: Option<u32>,
        finished: bool,
        usage: Option<Usage>,
    },
    /// Carries no output but ends the choice (`finish_reason` on an empty chat delta).
    Finish { usage: Option<Usage> },
    /// The usage-only event after the last token.
    Usage(Usage),
    /// An error reported inside the stream.
    Error(String),
    /// `data: [DONE]`.
    Done,
    /// Anything that is neither output nor an end: the chat role announcement, keep-alives.
    Other,
}

/// An event whose payload is not the JSON an OpenAI-compatible server sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {reason}: {excerpt}")]
pub struct MalformedEvent {
    pub reason: String,
    pub excerpt: String,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<FirstChoice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default, borrow)]
    error: Option<ErrorBody<'a>>,
    /// vLLM's older error shape: `{"object": "error", "message": ...}`.
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    token_ids: Option<Count>,
}

/// The first element of `choices` (streams carry one choice), read without allocating a list.
struct FirstChoice<'a>(Option<Choice<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<Choice<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = FirstChoice<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(FirstChoice(first))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

/// The length of a list (`token_ids`), counted without keeping it.
struct Count(u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut n = 0u32;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n = n.saturating_add(1);
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(Visit)
    }
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

/// Classifies one event's payload. `[DONE]` and JSON objects are understood; anything else is
/// malformed.
pub fn classify<'a>(frame: SseFrame<'a>, api: ApiKind) -> Result<StreamEvent<'a>, MalformedEvent> {
    let data = frame.data.trim_ascii();
    if data == b"[DONE]" {
        return Ok(StreamEvent::Done);
    }
    let chunk: Chunk<'a> = serde_json::from_slice(data).map_err(|e| malformed(&e, data))?;
    if let Some(err) = chunk.error {
        return Ok(StreamEvent::Error(
            err.message.map_or_else(|| excerpt(data), Cow::into_owned),
        ));
    }
    if frame.event == Some(b"error") || chunk.object.as_deref() == Some("error") {
        return Ok(StreamEvent::Error(
            chunk.message.map_or_else(|| excerpt(data), Cow::into_owned),
        ));
    }
    let Some(choice) = chunk.choices.and_then(|c| c.0) else {
        return Ok(chunk.usage.map_or(StreamEvent::Other, StreamEvent::Usage));
    };
    let finished = choice.finish_reason.is_some();
    let tokens = choice.token_ids.map(|ids| ids.0);
    let text = match api {
        ApiKind::Completions => choice.text.unwrap_or(Cow::Borrowed("")),
        ApiKind::Chat => {
            let Some(delta) = choice.delta else {
                return Ok(finish_or_other(finished, chunk.usage));
            };
            let has_output = delta.content.is_some()
                || delta.reasoning_content.is_some()
                || delta.reasoning.is_some()
                || delta.tool_calls.is_some();
            let role_only = delta.role.is_some()
                && [&delta.content, &delta.reasoning_content, &delta.reasoning]
                    .iter()
                    .all(|t| t.as_deref().is_none_or(str::is_empty))
                && delta.tool_calls.is_none();
            if role_only || !has_output {
                return Ok(finish_or_other(finished, chunk.usage));
            }
            let mut text = delta.content.unwrap_or(Cow::Borrowed(""));
            for extra in [delta.reasoning_content, delta.reasoning]
                .into_iter()
                .flatten()
            {
                text.to_mut().push_str(&extra);
            }
            text
        }
    };
    Ok(StreamEvent::Output {
        text,
        tokens,
        finished,
        usage: chunk.usage,
    })
}

fn finish_or_other<'a>(finished: bool, usage: Option<Usage>) -> StreamEvent<'a> {
    if finished {
        StreamEvent::Finish { usage }
    } else {
        StreamEvent::Other
    }
}

fn malformed(e: &serde_json::Error, data: &[u8]) -> MalformedEvent {
    MalformedEvent {
        reason: e.to_string(),
        excerpt: excerpt(data),
    }
}

/// The first 200 bytes of a payload, for error messages.
pub fn excerpt(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, |f| {
                out.push((f.event.map(<[u8]>::to_vec), f.data.to_vec()))
            });
        }
        d.finish(|f| out.push((f.event.map(<[u8]>::to_vec), f.data.to_vec())));
        out
    }

    #[test]
    fn events_split_across_chunks_are_reassembled() {
        let got = frames(&[b"data: {\"a\"", b":1}\r\n", b"\r\ndata: [DO", b"NE]\n\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"{\"a\":1}");
        assert_eq!(got[1].1, b"[DONE]");
    }

    #[test]
    fn multi_line_data_is_joined_and_comments_skipped() {
        let got = frames(&[b": keep-alive\n\nevent: error\ndata: line1\ndata:line2\n\n"]);
        assert_eq!(
            got,
            vec![(Some(b"error".to_vec()), b"line1\nline2".to_vec())]
        );
    }

    #[test]
    fn trailing_event_without_blank_line_is_delivered_at_end() {
        assert_eq!(frames(&[b"data: [DONE]"])[0].1, b"[DONE]");
        assert_eq!(frames(&[b"data: x\n"])[0].1, b"x");
    }

    #[test]
    fn one_byte_chunks_give_the_same_events() {
        let text = b"data: {\"x\":1}\n\ndata: {\"y\":2}\n\n";
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(frames(&bytes), frames(&[text]));
    }

    fn classify_str(s: &str, api: ApiKind) -> StreamEvent<'_> {
        classify(
            SseFrame {
                event: None,
                data: s.as_bytes(),
            },
            api,
        )
        .expect("valid event")
    }

    #[test]
    fn empty_completion_text_is_still_a_token() {
        let e = classify_str(
            r#"{"choices":[{"index":0,"text":"","finish_reason":null}]}"#,
            ApiKind::Completions,
        );
        assert!(matches!(e, StreamEvent::Output { ref text, .. } if text.is_empty()));
    }

    #[test]
    fn chat_role_announcement_and_empty_terminator_are_not_output() {
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(classify_str(role, ApiKind::Chat), StreamEvent::Other);
        let end = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(
            classify_str(end, ApiKind::Chat),
            StreamEvent::Finish { usage: None }
        );
        let reasoning = r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#;
        assert!(matches!(
            classify_str(reasoning, ApiKind::Chat),
            StreamEvent::Output { ref text, .. } if text == "hm"
        ));
    }

    #[test]
    fn usage_error_and_malformed_events() {
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":8}}"#;
        assert_eq!(
            classify_str(usage, ApiKind::Completions),
            StreamEvent::Usage(Usage {
                prompt_tokens: Some(5),
                completion_tokens: Some(8)
            })
        );
        let err = r#"{"error":{"message":"boom","type":"InternalServerError","code":500}}"#;
        assert_eq!(
            classify_str(err, ApiKind::Completions),
            StreamEvent::Error("boom".into())
        );
        let old = r#"{"object":"error","message":"old style","code":400}"#;
        assert_eq!(
            classify_str(old, ApiKind::Chat),
            StreamEvent::Error("old style".into())
        );
        let bad = classify(
            SseFrame {
                event: None,
                data: b"{\"choices\": [",
            },
            ApiKind::Completions,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn token_ids_give_tokens_per_event() {
        let e = classify_str(
            r#"{"choices":[{"text":"ab","token_ids":[1,2],"finish_reason":"length"}]}"#,
            ApiKind::Completions,
        );
        assert!(matches!(
            e,
            StreamEvent::Output {
                tokens: Some(2),
                finished: true,
                ..
            }
        ));
    }
}
