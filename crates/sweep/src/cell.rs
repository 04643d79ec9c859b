//! The sweep matrix: cells, their file names, and whether a cell's file already counts as done.

use bench_result::settings::RunSettings;
use std::path::{Path, PathBuf};

/// One ISL x concurrency point, and which of its repeated runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub input_len: u64,
    pub output_len: u64,
    pub concurrency: u64,
    pub num_prompts: u64,
    pub num_warmups: u64,
    /// 1 for the first (or only) run; the K-th repeat's file is `...conc<C>.run<K>.json`.
    pub run: u32,
}

/// The sweep's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub input_lens: Vec<u64>,
    pub concurrency: Vec<u64>,
    pub output_len: u64,
    pub prompts_per_concurrency: u64,
    /// Measured prompts per cell at least this many (`--min-prompts`).
    pub min_prompts: u64,
    pub warmups_per_concurrency: u64,
    /// Runs of each cell (`--num-runs`), each with its own prompts.
    pub runs: u32,
}

impl Matrix {
    /// Every cell, input length major (all concurrencies of the shortest input first), each
    /// cell's runs one after another.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &isl in &self.input_lens {
            for &c in &self.concurrency {
                for run in 1..=self.runs.max(1) {
                    cells.push(Cell {
                        input_len: isl,
                        output_len: self.output_len,
                        concurrency: c,
                        num_prompts: self
                            .prompts_per_concurrency
                            .saturating_mul(c)
                            .max(self.min_prompts),
                        num_warmups: self.warmups_per_concurrency.saturating_mul(c),
                        run,
                    });
                }
            }
        }
        cells
    }

    /// Refuses lengths no model has and cells whose prompts would not fit in memory, before
    /// the sweep waits for its server or measures its first cell.
    pub fn check_sizes(&self) -> Result<(), bench_cli::UsageError> {
        for &isl in &self.input_lens {
            bench_cli::args::check_tokens("--input-lens", isl)?;
        }
        bench_cli::args::check_tokens("--output-len", self.output_len)?;
        for cell in self.cells() {
            bench_cli::args::check_prompt_volume(
                "--prompts-per-concurrency",
                cell.input_len,
                cell.num_prompts,
                cell.num_warmups,
            )?;
        }
        Ok(())
    }
}

impl Cell {
    /// `<name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json` (`...conc<CONC>.run<K>.json` for the
    /// K-th run, K from 2).
    pub fn file_name(&self, name: &str, tp: u32) -> String {
        bench_result::CellName {
            name: name.to_string(),
            tp,
            isl: self.input_len,
            osl: self.output_len,
            conc: self.concurrency,
            run: self.run,
        }
        .file_name()
    }

    /// Where an incomplete attempt is kept: a name the plotter's pattern and resume ignore.
    pub fn partial_name(&self, name: &str, tp: u32, attempt: u32) -> String {
        let done = self.file_name(name, tp);
        let stem = done.trim_end_matches(".json");
        format!("{stem}.attempt{attempt}.partial.json")
    }

    /// The first attempt number from `attempt` on whose partial name is free in `dir`: a sweep
    /// resubmitted never writes over an earlier submission's partial file.
    pub fn free_partial(&self, dir: &Path, name: &str, tp: u32, attempt: u32) -> PathBuf {
        (attempt..)
            .map(|a| dir.join(self.partial_name(name, tp, a)))
            .find(|p| !p.exists())
            .unwrap_or_else(|| dir.join(self.partial_name(name, tp, attempt)))
    }
}

/// What a cell's finished-file name holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Existing {
    /// Nothing: the cell runs.
    Missing,
    /// A finished run of this cell with the same settings: the cell is skipped.
    Finished,
    /// A file that does not count as this cell done, and why, in words. It is never
    /// overwritten: it is moved aside or the new run is written beside it.
    Stale(String),
}

/// Whether `path` holds a finished run of `cell` measured with `expected` settings: every prompt
/// completed, not interrupted, and no setting that changes what is measured different
/// ([`RunSettings::differences`]).
pub fn existing(path: &Path, cell: &Cell, expected: &RunSettings) -> Existing {
    let file = match bench_result::read(path) {
        Ok(f) => f,
        Err(bench_result::ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Existing::Missing
        }
        Err(e) => return Existing::Stale(format!("it cannot be read ({e})")),
    };
    if file.interrupted == Some(true) {
        return Existing::Stale("it is a run that was interrupted".into());
    }
    let Some(settings) = &file.config else {
        return Existing::Stale(
            "it has no configuration to compare (it was not written by inferperf)".into(),
        );
    };
    let differences = settings.differences(expected);
    if !differences.is_empty() {
        let list: Vec<String> = differences.iter().map(ToString::to_string).collect();
        return Existing::Stale(format!(
            "it was measured with other settings: {}",
            list.join("; ")
        ));
    }
    let completed = file.completed.unwrap_or(0);
    if completed < cell.num_prompts {
        return Existing::Stale(format!(
            "only {completed} of its {} prompts completed",
            cell.num_prompts
        ));
    }
    Existing::Finished
}

/// The run name and cell of a finished file name (`<name>_tp<TP>_isl<ISL>_osl<OSL>_conc<CONC>.json`);
/// its prompt counts are not in the name.
pub fn parse_file_name(file_name: &str) -> Option<(String, Cell)> {
    let n = bench_result::CellName::parse(file_name)?;
    let cell = Cell {
        input_len: n.isl,
        output_len: n.osl,
        concurrency: n.conc,
        num_prompts: 0,
        num_warmups: 0,
        run: n.run,
    };
    Some((n.name, cell))
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
            min_prompts: 1,
            warmups_per_concurrency: 2,
            runs: 1,
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
                num_warmups: 16,
                run: 1,
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
    fn a_floor_on_prompts_lifts_only_the_cells_below_it() {
        let cells = Matrix {
            concurrency: vec![1, 4, 16],
            prompts_per_concurrency: 5,
            min_prompts: 10,
            ..matrix()
        }
        .cells();
        let prompts: Vec<(u64, u64, u64)> = cells[..3]
            .iter()
            .map(|c| (c.concurrency, c.num_prompts, c.num_warmups))
            .collect();
        assert_eq!(prompts, [(1, 10, 2), (4, 20, 8), (16, 80, 32)]);
    }

    #[test]
    fn repeated_runs_follow_each_other_with_names_of_their_own() {
        let cells = Matrix {
            runs: 3,
            ..matrix()
        }
        .cells();
        assert_eq!(cells.len(), 12);
        let first: Vec<(u64, u32)> = cells[..3].iter().map(|c| (c.concurrency, c.run)).collect();
        assert_eq!(first, [(4, 1), (4, 2), (4, 3)]);
        assert_eq!(
            cells[0].file_name("mm", 4),
            "mm_tp4_isl1024_osl128_conc4.json"
        );
        assert_eq!(
            cells[2].file_name("mm", 4),
            "mm_tp4_isl1024_osl128_conc4.run3.json"
        );
        assert_eq!(
            cells[2].partial_name("mm", 4, 1),
            "mm_tp4_isl1024_osl128_conc4.run3.attempt1.partial.json"
        );
        let (name, back) = parse_file_name(&cells[2].file_name("mm", 4)).expect("parses back");
        assert_eq!((name.as_str(), back.run, back.concurrency), ("mm", 3, 4));
    }

    fn settings() -> RunSettings {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/results/inferperf/sim_tp4_isl1024_osl128_conc4.json");
        bench_result::read(&path)
            .expect("fixture")
            .config
            .expect("config")
    }

    #[test]
    fn only_complete_files_measured_alike_count_as_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected = settings();
        let cell = Cell {
            input_len: expected.prompt.input_len,
            output_len: expected.output_len,
            concurrency: expected.max_concurrency.unwrap_or(1),
            num_prompts: expected.num_prompts,
            num_warmups: expected.num_warmups,
            run: 1,
        };
        let path = dir.path().join("x.json");
        assert_eq!(existing(&path, &cell, &expected), Existing::Missing);
        let write = |completed: u64, interrupted: bool, config: &RunSettings| {
            let v = serde_json::json!({"completed": completed, "interrupted": interrupted,
                "config": config});
            std::fs::write(&path, v.to_string()).expect("write");
        };
        write(cell.num_prompts, false, &expected);
        assert_eq!(existing(&path, &cell, &expected), Existing::Finished);
        write(cell.num_prompts - 1, false, &expected);
        assert!(
            matches!(existing(&path, &cell, &expected), Existing::Stale(w) if w.contains("prompts completed"))
        );
        write(cell.num_prompts, true, &expected);
        assert!(
            matches!(existing(&path, &cell, &expected), Existing::Stale(w) if w.contains("interrupted"))
        );
        let mut other = expected.clone();
        other.ignore_eos = !other.ignore_eos;
        other.burstiness = 0.5;
        write(cell.num_prompts, false, &other);
        let Existing::Stale(why) = existing(&path, &cell, &expected) else {
            panic!("other settings are not this cell's run");
        };
        assert!(
            why.contains("ignore_eos was") && why.contains("burstiness was 0.5"),
            "{why}"
        );
        // Another server is another measurement, even with the same name and TP.
        let deployment = |gpus| bench_result::settings::Deployment {
            name: Some("tp4".into()),
            gpus,
            nodes: 1,
            pp: 1,
            dp: gpus / 4,
            expert_parallel: false,
        };
        let (mut four, mut eight) = (expected.clone(), expected.clone());
        four.deployment = Some(deployment(4));
        eight.deployment = Some(deployment(8));
        write(cell.num_prompts, false, &eight);
        let Existing::Stale(why) = existing(&path, &cell, &four) else {
            panic!("a file of another deployment is not this cell's run");
        };
        assert!(why.contains("deployment.gpus was 8 and is now 4"), "{why}");
        write(cell.num_prompts, false, &expected);
        assert!(
            matches!(existing(&path, &cell, &four), Existing::Stale(w) if w.contains("deployment was null")),
            "a file that declared no deployment is not one of a declared deployment"
        );
        std::fs::write(&path, "{trunc").expect("write");
        assert!(
            matches!(existing(&path, &cell, &expected), Existing::Stale(w) if w.contains("cannot be read"))
        );
    }

    #[test]
    fn partial_files_of_earlier_submissions_are_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cell = matrix().cells()[0];
        let first = cell.free_partial(dir.path(), "mm", 4, 1);
        std::fs::write(&first, "{}").expect("write");
        let next = cell.free_partial(dir.path(), "mm", 4, 1);
        assert_ne!(first, next);
        assert!(next.ends_with("mm_tp4_isl1024_osl128_conc4.attempt2.partial.json"));
    }
}
