//! The sweep summary: every cell in the results folder (this sweep's and any earlier one's),
//! with its status, key figures and file, as JSON and CSV beside the result files (rewritten
//! atomically after each cell).
//!
//! A figure the file does not have (a cell stopped during its warm-up, a failed one) is empty,
//! never a false zero.

use crate::cell::Cell;
use bench_result::{Metric, ResultFile, Stat};
use serde::Serialize;
use std::path::Path;

/// What happened to a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Ran and completed every prompt.
    Done,
    /// A finished file measured with the same settings was already there.
    Skipped,
    /// Did not complete every prompt after every retry.
    Failed,
    /// Stopped by a signal.
    Interrupted,
    /// A finished file in the folder that this sweep did not ask for (another sweep's).
    Earlier,
}

impl CellStatus {
    fn word(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Earlier => "earlier",
        }
    }
}

/// One summary row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellRow {
    pub name: String,
    pub input_len: u64,
    pub output_len: u64,
    pub concurrency: u64,
    /// Which of the cell's repeated runs (1 for the first or only one).
    pub run: u32,
    pub status: CellStatus,
    pub completed: Option<u64>,
    pub failed: Option<u64>,
    pub input_throughput: Option<f64>,
    pub output_throughput: Option<f64>,
    pub median_ttft_ms: Option<f64>,
    pub p99_ttft_ms: Option<f64>,
    pub median_tpot_ms: Option<f64>,
    pub p99_tpot_ms: Option<f64>,
    /// The result said the client, not the server, may have been the limit.
    pub client_bound: Option<bool>,
    /// Against the built-in simulator: its time scale, and whether it kept its schedule.
    pub sim_time_scale: Option<f64>,
    pub sim_kept_schedule: Option<bool>,
    pub seconds: Option<f64>,
    pub file: String,
}

impl CellRow {
    /// A row with no figures (the cell produced no file).
    pub fn empty(name: &str, cell: &Cell, status: CellStatus) -> Self {
        Self {
            name: name.to_string(),
            input_len: cell.input_len,
            output_len: cell.output_len,
            concurrency: cell.concurrency,
            run: cell.run,
            status,
            completed: None,
            failed: None,
            input_throughput: None,
            output_throughput: None,
            median_ttft_ms: None,
            p99_ttft_ms: None,
            median_tpot_ms: None,
            p99_tpot_ms: None,
            client_bound: None,
            sim_time_scale: None,
            sim_kept_schedule: None,
            seconds: None,
            file: String::new(),
        }
    }

    /// A row filled from the result file at `path` (figures it lacks stay empty).
    pub fn from_file(name: &str, cell: &Cell, path: &Path, status: CellStatus) -> Self {
        let mut row = Self::empty(name, cell, status);
        row.file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok(f) = bench_result::read(path) {
            row.fill(&f);
        }
        row
    }

    fn fill(&mut self, f: &ResultFile) {
        self.completed = f.completed;
        self.failed = f.failed;
        // A run that completed nothing has no figures, only zeros.
        if f.completed.unwrap_or(0) > 0 {
            self.input_throughput = f.input_throughput();
            self.output_throughput = f.output_throughput;
            self.median_ttft_ms = f.latency_ms(Metric::Ttft, Stat::Median);
            self.p99_ttft_ms = f.latency_ms(Metric::Ttft, Stat::Percentile(99.0));
            self.median_tpot_ms = f.latency_ms(Metric::Tpot, Stat::Median);
            self.p99_tpot_ms = f.latency_ms(Metric::Tpot, Stat::Percentile(99.0));
        }
        self.client_bound = f.client.as_ref().map(|c| c.client_bound);
        self.sim_time_scale = f.sim_time_scale;
        self.sim_kept_schedule = f.sim_kept_schedule;
    }

    /// One line for the progress log.
    pub fn describe(&self) -> String {
        let mut out = self.status.word().to_string();
        if let (Some(c), Some(f)) = (self.completed, self.failed) {
            out.push_str(&format!(": {c} completed, {f} failed"));
        }
        if let Some(t) = self.output_throughput {
            out.push_str(&format!(", {t:.0} output tok/s"));
        }
        if let (Some(ttft), Some(tpot)) = (self.median_ttft_ms, self.median_tpot_ms) {
            out.push_str(&format!(
                ", median TTFT {ttft:.0} ms, median TPOT {tpot:.1} ms"
            ));
        }
        if self.client_bound == Some(true) {
            out.push_str(" (client-bound: see the result's warnings)");
        }
        if self.sim_kept_schedule == Some(false) {
            out.push_str(" (the simulator fell behind: see the result's warnings)");
        }
        if !self.file.is_empty() {
            out.push_str(&format!(" -> {}", self.file));
        }
        out
    }

    fn key(&self) -> (String, u64, u64, u64, u32) {
        (
            self.name.clone(),
            self.input_len,
            self.output_len,
            self.concurrency,
            self.run,
        )
    }
}

/// The rows of `dir`: this sweep's `rows`, then every other finished cell file there (named
/// `<name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json`) as `earlier`, in file-name order.
pub fn all_rows(dir: &Path, rows: &[CellRow]) -> Vec<CellRow> {
    let mut all = rows.to_vec();
    let ours: std::collections::BTreeSet<String> = rows.iter().map(|r| r.file.clone()).collect();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files {
        let Some(file) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let Some((name, cell)) = crate::cell::parse_file_name(&file) else {
            continue;
        };
        let row = CellRow::from_file(&name, &cell, &path, CellStatus::Earlier);
        if !ours.contains(&file) && !all.iter().any(|r| r.key() == row.key()) {
            all.push(row);
        }
    }
    all
}

/// Writes `sweep_summary.json` and `sweep_summary.csv` in `dir`: every cell of [`all_rows`].
pub fn write(dir: &Path, rows: &[CellRow]) -> std::io::Result<()> {
    let all = all_rows(dir, rows);
    let json = serde_json::json!({"cells": all});
    bench_result::atomic::write_json(&dir.join("sweep_summary.json"), &json)?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    for row in &all {
        csv.serialize(row).map_err(std::io::Error::other)?;
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    bench_result::atomic::write(&dir.join("sweep_summary.csv"), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(isl: u64, conc: u64) -> Cell {
        Cell {
            input_len: isl,
            output_len: 8,
            concurrency: conc,
            num_prompts: 4,
            num_warmups: 0,
            run: 1,
        }
    }

    #[test]
    fn the_summary_lists_every_cell_in_the_folder_and_leaves_missing_figures_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let earlier = dir.path().join("old_tp1_isl64_osl8_conc2.json");
        std::fs::write(
            &earlier,
            r#"{"completed": 4, "failed": 0, "output_throughput": 12.5, "median_ttft_ms": 30}"#,
        )
        .expect("write");
        let ours = vec![CellRow::empty(
            "new",
            &cell(128, 4),
            CellStatus::Interrupted,
        )];
        write(dir.path(), &ours).expect("writes");
        let csv = std::fs::read_to_string(dir.path().join("sweep_summary.csv")).expect("csv");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        assert!(lines[0].starts_with("name,input_len,output_len,concurrency,run,status,"));
        assert!(
            lines[1].starts_with("new,128,8,4,1,interrupted,,,"),
            "no figure is a false zero: {}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("old,64,8,2,1,earlier,4,0,,12.5,30"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn fields_with_commas_are_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut row = CellRow::empty("a,b", &cell(64, 1), CellStatus::Failed);
        row.file = "a,b_tp1_isl64_osl8_conc1.json".into();
        write(dir.path(), &[row]).expect("writes");
        let csv = std::fs::read_to_string(dir.path().join("sweep_summary.csv")).expect("csv");
        assert!(csv.contains("\"a,b\""), "{csv}");
    }
}
