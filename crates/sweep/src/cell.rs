//! The sweep matrix: cells, their file names, and whether a cell's file already counts as done.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// One ISL x concurrency point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub input_len: u64,
    pub output_len: u64,
    pub concurrency: u64,
    pub num_prompts: u64,
    pub num_warmups: u64,
}

/// The sweep's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub input_lens: Vec<u64>,
    pub concurrency: Vec<u64>,
    pub output_len: u64,
    pub prompts_per_concurrency: u64,
    pub warmups_per_concurrency: u64,
}

impl Matrix {
    /// Every cell, input length major (all concurrencies of the shortest input first).
    pub fn cells(&self) -> Vec<Cell> {
        self.input_lens
            .iter()
            .flat_map(|&isl| {
                self.concurrency.iter().map(move |&c| Cell {
                    input_len: isl,
                    output_len: self.output_len,
                    concurrency: c,
                    num_prompts: self.prompts_per_concurrency * c,
                    num_warmups: self.warmups_per_concurrency * c,
                })
            })
            .collect()
    }
}

impl Cell {
    /// `<name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json`.
    pub fn file_name(&self, name: &str, tp: u32) -> String {
        format!(
            "{name}_tp{tp}_isl{}_osl{}_conc{}.json",
            self.input_len, self.output_len, self.concurrency
        )
    }

    /// Where an incomplete attempt is kept: a name the plotter's pattern and resume ignore.
    pub fn partial_name(&self, name: &str, tp: u32, attempt: u32) -> String {
        let done = self.file_name(name, tp);
        let stem = done.trim_end_matches(".json");
        format!("{stem}.attempt{attempt}.partial.json")
    }
}

/// Why an existing file does not count as this cell done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDone {
    Missing,
    Unreadable(String),
    Incomplete { completed: u64, wanted: u64 },
    Interrupted,
    DifferentConfig(&'static str),
}

/// The configuration values a finished file must echo to count as this cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected<'a> {
    pub model: &'a str,
    pub endpoint: &'a str,
    pub range_ratio: f64,
    /// The seed the sweep was given; `None` when it draws its own (any seed then does).
    pub seed: Option<u64>,
}

/// Whether `path` holds a finished run of `cell`: every prompt completed, not interrupted, and
/// the same configuration.
pub fn check_done(path: &Path, cell: &Cell, expected: &Expected<'_>) -> Result<(), NotDone> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NotDone::Missing),
        Err(e) => return Err(NotDone::Unreadable(e.to_string())),
    };
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| NotDone::Unreadable(e.to_string()))?;
    if v["interrupted"].as_bool().unwrap_or(false) {
        return Err(NotDone::Interrupted);
    }
    let c = &v["config"];
    let same = [
        (
            c["prompt"]["input_len"].as_u64() == Some(cell.input_len),
            "input length",
        ),
        (
            c["output_len"].as_u64() == Some(cell.output_len),
            "output length",
        ),
        (
            c["max_concurrency"].as_u64() == Some(cell.concurrency),
            "concurrency",
        ),
        (
            c["num_prompts"].as_u64() == Some(cell.num_prompts),
            "number of prompts",
        ),
        (c["model"].as_str() == Some(expected.model), "model"),
        (
            c["endpoint"]["path"].as_str() == Some(expected.endpoint),
            "endpoint",
        ),
        (
            c["prompt"]["range_ratio"].as_f64() == Some(expected.range_ratio),
            "range ratio",
        ),
        (
            expected
                .seed
                .is_none_or(|s| c["prompt"]["seed_origin"]["given"].as_u64() == Some(s)),
            "seed",
        ),
    ];
    if let Some((_, what)) = same.iter().find(|(ok, _)| !ok) {
        return Err(NotDone::DifferentConfig(what));
    }
    let completed = v["completed"].as_u64().unwrap_or(0);
    if completed < cell.num_prompts {
        return Err(NotDone::Incomplete {
            completed,
            wanted: cell.num_prompts,
        });
    }
    Ok(())
}

/// The path of `cell`'s finished file in `dir`.
pub fn done_path(dir: &Path, cell: &Cell, name: &str, tp: u32) -> PathBuf {
    dir.join(cell.file_name(name, tp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix() -> Matrix {
        Matrix {
            input_lens: vec![1024, 2048],
            concurrency: vec![4, 8],
            output_len: 128,
            prompts_per_concurrency: 10,
            warmups_per_concurrency: 2,
        }
    }

    #[test]
    fn cells_multiply_out_with_per_concurrency_counts() {
        let cells = matrix().cells();
        assert_eq!(cells.len(), 4);
        assert_eq!(
            cells[1],
            Cell {
                input_len: 1024,
                output_len: 128,
                concurrency: 8,
                num_prompts: 80,
                num_warmups: 16
            }
        );
        assert_eq!(
            cells[1].file_name("mm", 4),
            "mm_tp4_isl1024_osl128_conc8.json"
        );
        assert_eq!(
            cells[1].partial_name("mm", 4, 2),
            "mm_tp4_isl1024_osl128_conc8.attempt2.partial.json"
        );
    }

    #[test]
    fn only_complete_matching_files_count_as_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cell = matrix().cells()[0];
        let exp = Expected {
            model: "m",
            endpoint: "/v1/completions",
            range_ratio: 0.2,
            seed: None,
        };
        let path = dir.path().join("x.json");
        assert_eq!(check_done(&path, &cell, &exp), Err(NotDone::Missing));
        let file = |completed: u64, interrupted: bool, conc: u64| {
            serde_json::json!({"completed": completed, "interrupted": interrupted, "config": {
                "prompt": {"input_len": 1024, "range_ratio": 0.2, "seed": 0}, "output_len": 128,
                "max_concurrency": conc, "num_prompts": 40, "model": "m",
                "endpoint": {"path": "/v1/completions"}}})
        };
        std::fs::write(&path, file(40, false, 4).to_string()).expect("write");
        assert_eq!(check_done(&path, &cell, &exp), Ok(()));
        std::fs::write(&path, file(39, false, 4).to_string()).expect("write");
        assert_eq!(
            check_done(&path, &cell, &exp),
            Err(NotDone::Incomplete {
                completed: 39,
                wanted: 40
            })
        );
        std::fs::write(&path, file(40, true, 4).to_string()).expect("write");
        assert_eq!(check_done(&path, &cell, &exp), Err(NotDone::Interrupted));
        std::fs::write(&path, file(40, false, 8).to_string()).expect("write");
        assert_eq!(
            check_done(&path, &cell, &exp),
            Err(NotDone::DifferentConfig("concurrency"))
        );
        std::fs::write(&path, "{trunc").expect("write");
        assert!(matches!(
            check_done(&path, &cell, &exp),
            Err(NotDone::Unreadable(_))
        ));
    }
}
