//! `Transfer-Encoding: chunked` (RFC 9112 section 7.1), decoded incrementally: bytes go in as
//! reads deliver them, whatever the boundaries, and the body's data comes out without copies. A
//! line that lies wholly inside one read is parsed where it lies; only a line split across reads
//! is gathered. Size lines are parsed by `httparse`; chunk extensions and trailers are skipped.

/// One body's decoder: where it is in the framing, and a line split across reads.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    /// Decodes `input`, handing each run of body bytes to `out`. Returns an error for framing
    /// that is not chunked encoding.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), String> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => return Ok(()),
                ChunkState::Data(left) => {
                    let n = (left as usize).min(input.len());
                    out(&input[..n]);
                    input = &input[n..];
                    self.state = if left as usize == n {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let Some(nl) = memchr::memchr(b'\n', input) else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > 4096 {
                            return Err("chunk line too long".into());
                        }
                        return Ok(());
                    };
                    // A line wholly inside this read is parsed where it lies; only one split
                    // across reads is gathered.
                    self.state = if self.line.is_empty() {
                        next_state(self.state, &input[..=nl])?
                    } else {
                        self.line.extend_from_slice(&input[..=nl]);
                        let next = next_state(self.state, &self.line)?;
                        self.line.clear();
                        next
                    };
                    input = &input[nl + 1..];
                }
            }
        }
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// The state after a complete line (with its `\n`) read in `state`.
fn next_state(state: ChunkState, line: &[u8]) -> Result<ChunkState, String> {
    Ok(match state {
        ChunkState::Size => match httparse::parse_chunk_size(line) {
            Ok(httparse::Status::Complete((_, 0))) => ChunkState::Trailer,
            Ok(httparse::Status::Complete((_, size))) => ChunkState::Data(size),
            Ok(httparse::Status::Partial) | Err(httparse::InvalidChunkSize) => {
                let text = String::from_utf8_lossy(line);
                return Err(format!("bad chunk size line `{}`", text.trim_end()));
            }
        },
        ChunkState::DataEnd if is_blank(line) => ChunkState::Size,
        ChunkState::DataEnd => return Err("chunk data not followed by CRLF".into()),
        _ if is_blank(line) => ChunkState::Done,
        _ => ChunkState::Trailer,
    })
}

/// A line with nothing before its CRLF (or bare LF).
fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"\n" | b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.feed(p, |b| out.extend_from_slice(b))
                .expect("valid chunked body");
        }
        (out, d.is_done())
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(decode(&[body]), (b"hello, world".to_vec(), true));
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode(&bytes), (b"hello, world".to_vec(), true));
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(
                decode(&[a, b]),
                (b"hello, world".to_vec(), true),
                "split at {split}"
            );
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        let mut d = ChunkedDecoder::default();
        assert!(d.feed(b"zz\r\n", |_| {}).is_err());
        let mut d = ChunkedDecoder::default();
        assert!(d.feed(b"2\r\nabX\r\n", |_| {}).is_err());
    }
}
