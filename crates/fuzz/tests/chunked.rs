//! The chunked decoder: any body, framed any legal way and read in any pieces, comes back
//! byte for byte; framing changed at random is decoded or refused, never a panic, and never
//! more body than bytes read.

use bench_core::chunked::ChunkedDecoder;
use fuzz::{cuts, mutated, pieces};
use proptest::prelude::*;

/// `body` in chunked framing: cut into chunks of `sizes` (cycled), sizes in hex of either case,
/// optionally with extensions, and a trailer section.
fn frame(body: &[u8], sizes: &[usize], upper: bool, ext: bool, trailers: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        i += 1;
        let size = if upper {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(size.as_bytes());
        if ext {
            out.extend_from_slice(b";name=value");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    for t in trailers {
        out.extend_from_slice(format!("x-{t}: 1\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Decodes `reads` in order: the body, whether the framing ended, or the first error.
fn decode(reads: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
    let mut d = ChunkedDecoder::default();
    let mut body = Vec::new();
    for r in reads {
        d.feed(r, |b| body.extend_from_slice(b))?;
    }
    Ok((body, d.is_done()))
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        frame(b"data: {\"a\":1}\n\n", &[5, 3], false, false, &[]),
        frame(&[0xff; 300], &[256, 44], true, true, &["a".into()]),
        b"0\r\n\r\n".to_vec(),
    ]
}

proptest! {
    #![proptest_config(fuzz::config(512))]

    #[test]
    fn any_body_comes_back_whatever_the_framing_and_reads(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in prop::collection::vec(1usize..700, 1..6),
        upper in any::<bool>(),
        ext in any::<bool>(),
        trailers in prop::collection::vec("[a-z]{1,8}", 0..3),
        cuts in cuts(),
    ) {
        let framed = frame(&body, &sizes, upper, ext, &trailers);
        prop_assert_eq!(decode(&pieces(&framed, &cuts)), Ok((body.clone(), true)));
        // What follows the end of the framing (the next response) is not body.
        let mut more = framed.clone();
        more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        prop_assert_eq!(decode(&[&more]), Ok((body, true)));
    }

    #[test]
    fn changed_framing_is_decoded_or_refused(input in mutated(seeds()), cuts in cuts()) {
        let whole = decode(&[&input]);
        if let Ok((body, _)) = &whole {
            prop_assert!(body.len() <= input.len());
        }
        // Refused or not, the reads' boundaries change nothing.
        prop_assert_eq!(decode(&pieces(&input, &cuts)), whole);
    }

    #[test]
    fn a_size_too_large_for_64_bits_is_refused(digits in "[1-9a-f][0-9a-f]{16,30}") {
        let line = format!("{digits}\r\n");
        prop_assert!(decode(&[line.as_bytes()]).is_err());
    }
}
