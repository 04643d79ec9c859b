//! The sweep summary: every cell's status, key figures and file, as JSON and CSV beside the
//! result files (rewritten after each cell, atomically).

use crate::cell::Cell;
use serde::Serialize;
use std::path::Path;

/// What happened to a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Ran and completed every prompt.
    Done,
    /// A finished file with the same configuration was already there.
    Skipped,
    /// Did not complete every prompt after every retry.
    Failed,
    /// Stopped by a signal.
    Interrupted,
}

/// One summary row.
#[derive(Debug, Clone, Serialize)]
pub struct CellRow {
    pub input_len: u64,
    pub output_len: u64,
    pub concurrency: u64,
    pub status: CellStatus,
    pub completed: u64,
    pub failed: u64,
    pub input_throughput: f64,
    pub output_throughput: f64,
    pub median_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    pub median_tpot_ms: f64,
    pub p99_tpot_ms: f64,
    /// The result said the client, not the server, may have been the limit.
    pub client_bound: bool,
    pub seconds: f64,
    pub file: String,
}

impl CellRow {
    pub fn empty(cell: &Cell, status: CellStatus) -> Self {
        Self {
            input_len: cell.input_len,
            output_len: cell.output_len,
            concurrency: cell.concurrency,
            status,
            completed: 0,
            failed: 0,
            input_throughput: 0.0,
            output_throughput: 0.0,
            median_ttft_ms: 0.0,
            p99_ttft_ms: 0.0,
            median_tpot_ms: 0.0,
            p99_tpot_ms: 0.0,
            client_bound: false,
            seconds: 0.0,
            file: String::new(),
        }
    }

    /// A row filled from the result file at `path`.
    pub fn from_file(cell: &Cell, path: &Path, status: CellStatus, seconds: f64) -> Self {
        let mut row = Self::empty(cell, status);
        row.seconds = seconds;
        row.file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let v: serde_json::Value = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        row.completed = v["completed"].as_u64().unwrap_or(0);
        row.failed = v["failed"].as_u64().unwrap_or(0);
        row.input_throughput = f("input_throughput");
        row.output_throughput = f("output_throughput");
        row.median_ttft_ms = f("median_ttft_ms");
        row.p99_ttft_ms = f("p99_ttft_ms");
        row.median_tpot_ms = f("median_tpot_ms");
        row.p99_tpot_ms = f("p99_tpot_ms");
        row.client_bound = v["client"]["client_bound"].as_bool().unwrap_or(false);
        row
    }

    pub fn describe(&self) -> String {
        format!(
            "{:?}: {} completed, {} failed, {:.0} output tok/s, median TTFT {:.0} ms, median TPOT {:.1} ms{}{}",
            self.status, self.completed, self.failed, self.output_throughput, self.median_ttft_ms,
            self.median_tpot_ms,
            if self.client_bound { " (client-bound: see the result's warnings)" } else { "" },
            if self.file.is_empty() { String::new() } else { format!(" -> {}", self.file) }
        )
    }
}

/// Writes `sweep_summary.json` and `sweep_summary.csv` in `dir`.
pub fn write(dir: &Path, rows: &[CellRow]) -> std::io::Result<()> {
    let json = serde_json::json!({"cells": rows});
    bench_core::result::write_atomic(&dir.join("sweep_summary.json"), &json)?;
    let mut csv = String::from(
        "input_len,output_len,concurrency,status,completed,failed,input_throughput,output_throughput,median_ttft_ms,p99_ttft_ms,median_tpot_ms,p99_tpot_ms,client_bound,seconds,file\n",
    );
    for r in rows {
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{:.1},{}\n",
            r.input_len,
            r.output_len,
            r.concurrency,
            status,
            r.completed,
            r.failed,
            r.input_throughput,
            r.output_throughput,
            r.median_ttft_ms,
            r.p99_ttft_ms,
            r.median_tpot_ms,
            r.p99_tpot_ms,
            r.client_bound,
            r.seconds,
            r.file
        ));
    }
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), csv)?;
    tmp.persist(dir.join("sweep_summary.csv"))
        .map_err(|e| e.error)?;
    Ok(())
}
