//! The SSE decoder and classifier against raw replies captured from a real vLLM server.

use crate::support::testdata;
use bench_core::stream::{classify, ApiKind, SseDecoder, StreamEvent, Usage};

/// Counts of what a transcript's body holds.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    output_events: usize,
    empty_text_events: usize,
    token_ids: u64,
    finished: bool,
    usage: Option<Usage>,
    done: bool,
    other: usize,
}

/// Feeds a transcript's body (after the blank line that ends the headers) in `chunk`-byte reads.
fn replay(file: &str, api: ApiKind, chunk: usize) -> Seen {
    let raw = std::fs::read(testdata().join("transcripts").join(file)).expect("transcript");
    let text = String::from_utf8(raw).expect("utf-8");
    let body = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .expect("headers end")
        .1;
    let mut seen = Seen::default();
    let mut decoder = SseDecoder::new();
    let mut on = |f: bench_core::stream::SseFrame<'_>| match classify(f, api).expect("valid event")
    {
        StreamEvent::Output {
            text,
            tokens,
            finished,
            usage,
        } => {
            seen.output_events += 1;
            seen.empty_text_events += usize::from(text.is_empty());
            seen.token_ids += u64::from(tokens.unwrap_or(0));
            seen.finished |= finished;
            if usage.is_some() {
                seen.usage = usage;
            }
        }
        StreamEvent::Usage(u) => seen.usage = Some(u),
        StreamEvent::Done => seen.done = true,
        StreamEvent::Finish { .. } | StreamEvent::Other => seen.other += 1,
        StreamEvent::Error(e) => panic!("unexpected error event {e}"),
    };
    for piece in body.as_bytes().chunks(chunk) {
        decoder.feed(piece, &mut on);
    }
    decoder.finish(&mut on);
    seen
}

#[test]
fn completions_stream_with_usage() {
    for chunk in [1, 7, 4096] {
        let s = replay("vllm-completions-stream.txt", ApiKind::Completions, chunk);
        assert_eq!(s.output_events, 5, "chunk {chunk}");
        assert!(s.finished && s.done);
        assert_eq!(
            s.usage,
            Some(Usage {
                prompt_tokens: Some(5),
                completion_tokens: Some(8)
            })
        );
    }
}

#[test]
fn completions_stream_without_usage() {
    let s = replay(
        "vllm-completions-stream-no-usage.txt",
        ApiKind::Completions,
        64,
    );
    assert_eq!((s.output_events, s.usage, s.done), (4, None, true));
}

#[test]
fn token_ids_count_every_token_including_empty_text() {
    let s = replay(
        "vllm-completions-stream-256-token-ids.txt",
        ApiKind::Completions,
        300,
    );
    assert_eq!(s.token_ids, 256);
    assert_eq!(s.output_events, 256);
    assert_eq!(s.empty_text_events, 9);
}

#[test]
fn continuous_usage_keeps_the_last_figures() {
    let s = replay(
        "vllm-completions-stream-2prompts-continuous-usage.txt",
        ApiKind::Completions,
        50,
    );
    assert_eq!(s.output_events, 6);
    assert_eq!(
        s.usage,
        Some(Usage {
            prompt_tokens: Some(4),
            completion_tokens: Some(6)
        })
    );
}

#[test]
fn chat_role_announcement_is_not_a_token() {
    let s = replay("vllm-chat-stream.txt", ApiKind::Chat, 33);
    assert_eq!(s.output_events, 6);
    assert_eq!(s.other, 1);
    assert_eq!(
        s.usage,
        Some(Usage {
            prompt_tokens: Some(10),
            completion_tokens: Some(6)
        })
    );
}
