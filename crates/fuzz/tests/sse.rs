//! The SSE decoder against a plain model of the format, on real captures changed at random and
//! cut into random reads: the same events whatever the cuts, every event the model finds, and
//! no input that makes the decoder or the classifier panic.

use bench_core::stream::{classify, ApiKind, SseDecoder, SseFrame};
use fuzz::{corpus, cuts, mutated, pieces};
use proptest::prelude::*;

type Frame = (Option<Vec<u8>>, Vec<u8>);

fn owned(f: SseFrame<'_>) -> Frame {
    (f.event.map(<[u8]>::to_vec), f.data.to_vec())
}

/// The decoder fed `reads` one by one, then finished.
fn decode(reads: &[&[u8]]) -> Vec<Frame> {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    for r in reads {
        d.feed(r, |f| out.push(owned(f)));
    }
    d.finish(|f| out.push(owned(f)));
    out
}

/// The format as the decoder documents it, written the plain way: lines end at LF (a CR before
/// it is dropped); `data:` lines gather, joined by LF, and a blank line or the end of the stream
/// delivers them with the last `event:` name; an event without data delivers nothing; a last
/// line without its LF still counts if it is a `data:` line.
fn model(input: &[u8]) -> Vec<Frame> {
    fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
        let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
        Some(rest.strip_prefix(b" ").unwrap_or(rest))
    }
    let mut out = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    let mut event = None;
    let mut deliver = |data: &mut Vec<Vec<u8>>, event: &mut Option<Vec<u8>>| {
        if !data.is_empty() {
            out.push((event.take(), data.join(&b'\n')));
        }
        data.clear();
        *event = None;
    };
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let last = lines.pop().unwrap_or_default();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            deliver(&mut data, &mut event);
        } else if let Some(v) = field(line, b"data") {
            data.push(v.to_vec());
        } else if let Some(v) = field(line, b"event") {
            event = Some(v.to_vec());
        }
    }
    if let Some(v) = field(last, b"data") {
        data.push(v.to_vec());
    }
    deliver(&mut data, &mut event);
    out
}

/// The captured streams' bodies (after the HTTP head) and the hand-picked edge cases.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = corpus(&["crates/fuzz/corpus/sse"], &[".txt"]);
    for capture in corpus(
        &["testdata/transcripts"],
        &["stream.txt", "usage.txt", "ids.txt"],
    ) {
        let body = capture
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&capture[..], |p| &capture[p + 4..]);
        seeds.push(body.to_vec());
    }
    seeds
}

proptest! {
    #![proptest_config(fuzz::config(512))]

    #[test]
    fn the_decoder_agrees_with_the_model_whatever_the_reads(
        input in mutated(seeds()),
        cuts in cuts(),
    ) {
        let whole = decode(&[&input]);
        prop_assert_eq!(&whole, &model(&input));
        prop_assert_eq!(decode(&pieces(&input, &cuts)), whole);
    }

    #[test]
    fn no_event_makes_the_classifier_panic(input in mutated(seeds())) {
        for (event, data) in decode(&[&input]) {
            let frame = SseFrame { event: event.as_deref(), data: &data };
            for api in [ApiKind::Completions, ApiKind::Chat] {
                // Ok or a named malformation; a panic fails the test.
                if let Err(e) = classify(frame, api) {
                    prop_assert!(!e.reason.is_empty());
                }
            }
        }
    }
}
