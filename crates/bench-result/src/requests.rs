//! The per-request file beside a result: one JSON line per measured request, in the order they
//! were sent (docs/result-format.md, "Per-request file").
//!
//! `results/x.json` has its requests in `results/x.requests.jsonl` ([`path_for`]). Times are
//! seconds from the run's first send (`sent_s`, `end_s`) or milliseconds of the request's own
//! (`queue_ms`, `ttft_ms`, ...), all as measured: a run against a time-scaled simulator is that
//! many times faster (its result says by how much, `sim_time_scale`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One measured request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestLine {
    /// Position in the measured request list.
    pub index: u64,
    /// The `x-request-id` it was sent with.
    pub request_id: String,
    pub ok: bool,
    /// A failure's reason group (`http_500`, `stream_cut`, ...), as in the result's `failures`.
    pub reason: Option<String>,
    /// A failure's message.
    pub error: Option<String>,
    /// Sent, seconds from the run's first send.
    pub sent_s: f64,
    /// In rate mode, how long after its scheduled arrival it was sent: the wait for a slot under
    /// the concurrency limit, plus any lateness of the client.
    pub queue_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
    /// Ended (last event, or the failure), seconds from the run's first send.
    pub end_s: f64,
    pub input_tokens: u64,
    /// `usage.prompt_tokens`, when the server sent it.
    pub server_prompt_tokens: Option<u64>,
    pub output_tokens: u64,
    /// Events that carried output, and those known to carry more than one token.
    pub events: u64,
    pub multi_token_events: u64,
    /// Each output event's arrival, ms from the send (written with `--save-detailed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_ms: Option<Vec<f64>>,
}

/// The per-request file of the result file at `result`: `x.json` -> `x.requests.jsonl`.
pub fn path_for(result: &Path) -> PathBuf {
    crate::beside(result, ".requests.jsonl")
}

/// Why a per-request file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line}: {source}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// The lines to write, one JSON object each.
pub fn to_jsonl(lines: &[RequestLine]) -> String {
    let mut out = String::with_capacity(lines.len() * 320);
    for l in lines {
        if let Ok(json) = serde_json::to_string(l) {
            out.push_str(&json);
            out.push('\n');
        }
    }
    out
}

/// Reads a per-request file; a line that is not a request is an error naming it.
pub fn read(path: &Path) -> Result<Vec<RequestLine>, RequestsError> {
    let text = std::fs::read_to_string(path).map_err(|source| RequestsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| RequestsError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_sits_beside_its_result_and_reads_back() {
        assert_eq!(
            path_for(Path::new("results/m_tp4_isl1024_osl128_conc8.json")),
            Path::new("results/m_tp4_isl1024_osl128_conc8.requests.jsonl")
        );
        let lines = vec![
            RequestLine {
                index: 0,
                request_id: "inferperf-m0".into(),
                ok: true,
                sent_s: 0.0,
                ttft_ms: Some(12.5),
                end_s: 0.2,
                output_tokens: 3,
                events: 3,
                event_ms: Some(vec![12.5, 20.0, 30.0]),
                ..RequestLine::default()
            },
            RequestLine {
                index: 1,
                ok: false,
                reason: Some("http_500".into()),
                error: Some("HTTP 500: boom".into()),
                ..RequestLine::default()
            },
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.requests.jsonl");
        std::fs::write(&path, to_jsonl(&lines)).expect("written");
        assert_eq!(read(&path).expect("reads"), lines);
        std::fs::write(&path, "{\"index\": 0}\nnot json\n").expect("written");
        let err = read(&path).expect_err("a bad line").to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
