//! `sweep`'s flags: every `bench` flag that applies to all cells, plus the matrix, server
//! discovery, results and the embedded simulator.

use crate::cell::Matrix;
use crate::discover::Source;
use bench_cli::{CommonArgs, UsageError};
use clap::{Args, CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// `sweep`: run ISL x concurrency cells against an inference server, one result file per cell.
#[derive(Debug, Clone, Parser)]
#[command(name = "sweep", version, about, long_about = None)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub matrix: MatrixArgs,

    /// Print the cells and their file names, run nothing; with --campaign, print the sbatch
    /// command of every job it would submit, and submit nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Submit a campaign to Slurm: each `[[config]]` of this TOML file becomes a serve job and a
    /// sweep job, results in `<results_dir>/<name>/<config>/` (docs/campaigns.md). Finished
    /// configurations and ones still queued or running are not submitted again.
    #[arg(long, value_name = "FILE")]
    pub campaign: Option<PathBuf>,

    /// With --campaign: print each configuration's status and write the campaign summary.
    #[arg(long, requires = "campaign", conflicts_with_all = ["dry_run", "cancel"])]
    pub status: bool,

    /// With --campaign: cancel the campaign's queued and running jobs.
    #[arg(long, requires = "campaign", conflicts_with = "dry_run")]
    pub cancel: bool,

    /// File the serve job writes the server's URL to (used when --base-url is not given).
    #[arg(long, env = "SERVER_INFO_FILE", default_value = "server_info.txt")]
    pub server_info: PathBuf,

    /// How long to wait for the server-info file and for /health (e.g. 30m, 2h).
    #[arg(long, default_value = "1h")]
    pub wait_timeout: String,

    /// How often to look for the server-info file and poll /health while waiting.
    #[arg(long, default_value = "2s")]
    pub poll_interval: String,

    /// Folder for the result files and the sweep summary.
    #[arg(long, env = "RESULTS_DIR", default_value = "results")]
    pub results_dir: PathBuf,

    /// Run name at the start of every file name [default: the model's last path segment].
    #[arg(long)]
    pub name: Option<String>,

    /// Retries of a cell that did not complete every prompt.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,

    /// A cell's file already there that is not its finished run with these settings (other
    /// settings, interrupted, incomplete) is never overwritten: `aside` moves it into
    /// `<results-dir>/superseded/` and runs the cell; `beside` leaves it and writes this sweep
    /// under the next free run name (`<name>-2`, ...).
    #[arg(long, value_enum, default_value_t = ExistingPolicy::Aside)]
    pub existing: ExistingPolicy,

    /// Start the built-in engine simulator and sweep it: a demo, whose default matrix is input
    /// lengths 1024,4096,8192 x concurrency 1,4,16, 5 prompts per concurrency (at least 10 per
    /// cell) and 1 warm-up per concurrency.
    #[arg(long)]
    pub simulate: bool,

    /// With --simulate: the simulator's timing preset.
    #[arg(long, default_value = "minimax-m2-tp4")]
    pub sim_preset: String,

    /// With --simulate: the simulator's clock. `stepped`: after each engine step it waits for
    /// this client to read every token and send what its closed loop owes, so the figures are
    /// the model's on any machine, in the time the machine needs; `wall`: it follows the wall
    /// clock, up to --sim-time-scale times faster than real time.
    #[arg(long, value_enum, default_value_t = SimClock::Stepped)]
    pub sim_clock: SimClock,

    /// With --simulate --sim-clock wall: the fastest the simulated schedule may run, in
    /// multiples of real time; each cell runs as fast as this machine keeps the model's figures,
    /// up to this [default: 20].
    #[arg(long)]
    pub sim_time_scale: Option<f64>,

    /// Client processes that drive every cell together (a sweep job's srun tasks, on one
    /// machine or several): each sends its share of the cell's concurrency and prompts, and
    /// client 0 merges their records into the cell's file (docs/slurm.md, "Load beyond one
    /// client").
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub clients: i64,

    /// With --clients: which client this process is, from 0 [srun's task number].
    #[arg(long, env = "SLURM_PROCID", allow_negative_numbers = true)]
    pub client_index: Option<i64>,

    /// With --clients: an id every client of this sweep shares and no earlier one had, which
    /// keeps its barriers apart from an earlier submission's [the Slurm job and step].
    #[arg(long)]
    pub clients_id: Option<String>,
}

/// The built-in simulator's clock (`--sim-clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimClock {
    /// Modelled time steps from one engine step to the next, waiting for the client between.
    Stepped,
    /// Modelled time follows the wall clock, scaled.
    Wall,
}

/// What to do with a cell's file that does not count as its finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExistingPolicy {
    /// Move it into `superseded/` and run the cell.
    Aside,
    /// Keep it, and write this sweep under the next free run name.
    Beside,
}

/// The matrix, from flags or a TOML file (flags win).
#[derive(Debug, Clone, Args)]
pub struct MatrixArgs {
    /// Input lengths in tokens, comma-separated [default: 1024,6144,10240,12288,14336].
    #[arg(long, allow_hyphen_values = true)]
    pub input_lens: Option<String>,
    /// Output length in tokens [default: 128].
    #[arg(long, allow_negative_numbers = true)]
    pub output_len: Option<i64>,
    /// Concurrency levels, comma-separated [default: 4,8,16,32,64].
    #[arg(long, allow_hyphen_values = true)]
    pub concurrency: Option<String>,
    /// Measured prompts per cell = this x concurrency [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    pub prompts_per_concurrency: Option<i64>,
    /// Measured prompts per cell at least this many, whatever the concurrency (10 gives every
    /// cell the completed requests its steady-state figures need) [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub min_prompts: Option<i64>,
    /// Warm-up requests per cell = this x concurrency [default: 2].
    #[arg(long, allow_negative_numbers = true)]
    pub warmups_per_concurrency: Option<i64>,
    /// Runs of each cell, each with its own prompts: the K-th is written as
    /// `...conc<CONC>.runK.json`, and plot draws their means with 95% intervals [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub num_runs: Option<i64>,
    /// TOML file with input_lens, concurrency, output_len, prompts_per_concurrency,
    /// min_prompts, warmups_per_concurrency and num_runs.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    input_lens: Option<Vec<u64>>,
    concurrency: Option<Vec<u64>>,
    output_len: Option<u64>,
    prompts_per_concurrency: Option<u64>,
    min_prompts: Option<u64>,
    warmups_per_concurrency: Option<u64>,
    num_runs: Option<u64>,
}

impl SweepArgs {
    /// The command with sweep defaults (range ratio 0.2) applied to the shared flags.
    pub fn command() -> clap::Command {
        let command = <Self as CommandFactory>::command();
        // A campaign's sweeps take their flags from its file: one given here would be ignored.
        let campaign_alone: Vec<clap::Id> = command
            .get_arguments()
            .map(|a| a.get_id().clone())
            .filter(|id| {
                ![
                    "campaign",
                    "dry_run",
                    "status",
                    "cancel",
                    // Set in a sweep job's environment, where it refreshes its campaign's status.
                    "server_info",
                    "results_dir",
                    "client_index",
                ]
                .contains(&id.as_str())
            })
            .collect();
        command
            .mut_arg("campaign", |a| a.conflicts_with_all(campaign_alone))
            .mut_arg("random_range_ratio", |a| a.default_value("0.2"))
            .mut_arg("ignore_eos", |a| {
                a.help("Always on in a sweep: every request generates the full output length")
            })
    }

    /// Parses the process's arguments, exiting with clap's message (code 2) when they are bad.
    pub fn parse_args() -> Self {
        Self::parse_from_iter(std::env::args_os())
    }

    pub fn parse_from_iter<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().get_matches_from(args);
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    pub fn try_parse_from_iter<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }

    /// `--clients`: `None` for one client; which of how many this process is, and the run's id.
    pub fn clients(
        &self,
        cells: &[crate::cell::Cell],
    ) -> Result<Option<crate::clients::Clients>, UsageError> {
        let count = at_least("--clients", self.clients, 1)?;
        if count == 1 {
            return Ok(None);
        }
        if self.simulate {
            return Err(usage(
                "--clients",
                "the built-in simulator serves one client; run bench-sim and point the clients at it".into(),
            ));
        }
        let count =
            u32::try_from(count).map_err(|_| usage("--clients", format!("{count} is too many")))?;
        let index = match self.client_index {
            Some(i) if (0..i64::from(count)).contains(&i) => i as u32,
            Some(i) => {
                return Err(usage(
                    "--client-index",
                    format!(
                        "{i} is not one of the {count} clients' numbers, 0 to {}",
                        count - 1
                    ),
                ))
            }
            None => return Err(usage(
                "--client-index",
                "which client this is: give it, or run the clients as srun tasks (SLURM_PROCID)"
                    .into(),
            )),
        };
        let run_id = match &self.clients_id {
            Some(id) => id.clone(),
            None => match (std::env::var("SLURM_JOB_ID"), std::env::var("SLURM_STEP_ID")) {
                (Ok(job), Ok(step)) => format!("{job}.{step}"),
                _ => {
                    return Err(usage(
                        "--clients-id",
                        "an id the clients share: give it, or run them as srun tasks (the job and step)".into(),
                    ))
                }
            },
        };
        if run_id.is_empty()
            || !run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(usage(
                "--clients-id",
                format!("`{run_id}`: use letters, digits, `-`, `.` and `_` (it names a folder)"),
            ));
        }
        if let Some(c) = cells.iter().find(|c| c.concurrency < u64::from(count)) {
            return Err(usage(
                "--clients",
                format!(
                    "{count} clients, but a cell's concurrency is {}: every client needs a slot of its own in every cell",
                    c.concurrency
                ),
            ));
        }
        Ok(Some(crate::clients::Clients {
            count,
            index,
            run_id,
        }))
    }

    /// The matrix: flags, else the TOML file, else the defaults.
    pub fn matrix(&self) -> Result<Matrix, UsageError> {
        let m = &self.matrix;
        let file = match &m.config {
            Some(path) => matrix_file(path)?,
            None => MatrixFile::default(),
        };
        let input_lens = match &m.input_lens {
            Some(s) => list("--input-lens", s)?,
            None => file
                .input_lens
                .unwrap_or_else(|| vec![1024, 6144, 10240, 12288, 14336]),
        };
        let concurrency = match &m.concurrency {
            Some(s) => list("--concurrency", s)?,
            None => file.concurrency.unwrap_or_else(|| vec![4, 8, 16, 32, 64]),
        };
        for (flag, key, given, values) in [
            (
                "--input-lens",
                "input_lens",
                m.input_lens.is_some(),
                &input_lens,
            ),
            (
                "--concurrency",
                "concurrency",
                m.concurrency.is_some(),
                &concurrency,
            ),
        ] {
            // A value from the matrix file is named with the file and its key.
            let in_file = |e: UsageError| match (&m.config, given) {
                (Some(path), false) => usage(
                    "--config",
                    format!("{}: `{key}` {}", path.display(), e.message),
                ),
                _ => e,
            };
            if values.is_empty() {
                return Err(in_file(usage(flag, "give at least one value".into())));
            }
            for v in values {
                at_least(flag, i64::try_from(*v).unwrap_or(i64::MAX), 1).map_err(in_file)?;
            }
        }
        let num = |flag: &'static str, given: Option<i64>, from_file: Option<u64>, default: u64| {
            given
                .or(from_file.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
                .map_or(Ok(default), |v| at_least(flag, v, 1))
        };
        let matrix = Matrix {
            input_lens,
            concurrency,
            output_len: num("--output-len", m.output_len, file.output_len, 128)?,
            prompts_per_concurrency: num(
                "--prompts-per-concurrency",
                m.prompts_per_concurrency,
                file.prompts_per_concurrency,
                10,
            )?,
            min_prompts: num("--min-prompts", m.min_prompts, file.min_prompts, 1)?,
            warmups_per_concurrency: match m.warmups_per_concurrency {
                Some(v) => at_least("--warmups-per-concurrency", v, 0)?,
                None => file.warmups_per_concurrency.unwrap_or(2),
            },
            runs: u32::try_from(num("--num-runs", m.num_runs, file.num_runs, 1)?)
                .ok()
                .filter(|n| *n <= 1000)
                .ok_or_else(|| usage("--num-runs", "at most 1000 runs".into()))?,
        };
        matrix.check_sizes()?;
        Ok(matrix)
    }

    /// Where the server's URL comes from: `--base-url`, or `--host`/`--port` when either is
    /// given, else the server-info file.
    pub fn source(&self) -> Result<Source, UsageError> {
        let c = &self.common;
        Ok(
            if c.base_url.is_some() || c.host.is_some() || c.port.is_some() {
                Source::Fixed(c.base_url()?)
            } else {
                Source::ServerInfo(self.server_info.clone())
            },
        )
    }

    pub fn poll_interval(&self) -> Result<Duration, UsageError> {
        bench_cli::parse_duration("--poll-interval", &self.poll_interval)
    }

    pub fn wait_timeout(&self) -> Result<Duration, UsageError> {
        bench_cli::parse_duration("--wait-timeout", &self.wait_timeout)
    }
}

fn usage(flag: &'static str, message: String) -> UsageError {
    UsageError { flag, message }
}

fn at_least(flag: &'static str, v: i64, min: i64) -> Result<u64, UsageError> {
    u64::try_from(v)
        .ok()
        .filter(|_| v >= min)
        .ok_or_else(|| usage(flag, format!("must be at least {min}, got {v}")))
}

fn matrix_file(path: &std::path::Path) -> Result<MatrixFile, UsageError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(
            "--config",
            format!("{}: cannot read it ({e})", path.display()),
        )
    })?;
    toml::from_str(&text).map_err(|e| {
        usage(
            "--config",
            format!("{}: not a valid matrix file ({e})", path.display()),
        )
    })
}

fn list(flag: &'static str, s: &str) -> Result<Vec<u64>, UsageError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<i64>() {
            Ok(v) => at_least(flag, v, 1),
            Err(_) => Err(usage(flag, format!("`{p}` is not a whole number"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> SweepArgs {
        let mut all = vec!["sweep"];
        all.extend_from_slice(args);
        SweepArgs::try_parse_from_iter(all).expect("valid flags")
    }

    #[test]
    fn defaults_match_the_old_sweep_script() {
        let a = parse(&[]);
        let m = a.matrix().expect("matrix");
        assert_eq!(m.input_lens, vec![1024, 6144, 10240, 12288, 14336]);
        assert_eq!(m.concurrency, vec![4, 8, 16, 32, 64]);
        assert_eq!(
            (
                m.output_len,
                m.prompts_per_concurrency,
                m.min_prompts,
                m.warmups_per_concurrency
            ),
            (128, 10, 1, 2)
        );
        assert_eq!(a.common.random_range_ratio, 0.2);
    }

    #[test]
    fn a_toml_file_sets_the_matrix_and_flags_override_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "input_lens = [100, 200]\nconcurrency = [2]\noutput_len = 16\n",
        )
        .expect("write");
        let p = path.display().to_string();
        let m = parse(&["--config", &p]).matrix().expect("matrix");
        assert_eq!(
            (m.input_lens, m.concurrency, m.output_len),
            (vec![100, 200], vec![2], 16)
        );
        let m = parse(&["--config", &p, "--concurrency", "1,3"])
            .matrix()
            .expect("matrix");
        assert_eq!(m.concurrency, vec![1, 3]);
        std::fs::write(&path, "min_prompts = 12\nprompts_per_concurrency = 3\n").expect("write");
        let m = parse(&["--config", &p]).matrix().expect("matrix");
        assert_eq!((m.prompts_per_concurrency, m.min_prompts), (3, 12));
        let m = parse(&["--config", &p, "--min-prompts", "4"])
            .matrix()
            .expect("matrix");
        assert_eq!(m.min_prompts, 4);
        let err = parse(&["--min-prompts", "0"]).matrix().expect_err("zero");
        assert!(err.to_string().contains("--min-prompts"), "{err}");
        std::fs::write(&path, "input_len = [1]\n").expect("write");
        let err = parse(&["--config", &p]).matrix().expect_err("unknown key");
        assert!(err.to_string().contains("input_len"), "{err}");
    }

    #[test]
    fn bad_lists_name_their_flag() {
        let err = parse(&["--input-lens", "1024,abc"])
            .matrix()
            .expect_err("bad");
        assert!(err.to_string().contains("--input-lens"));
        let err = parse(&["--concurrency", "0"]).matrix().expect_err("zero");
        assert!(err.to_string().contains("--concurrency"));
        let err = parse(&["--input-lens", "-64"])
            .matrix()
            .expect_err("negative");
        assert_eq!(err.to_string(), "--input-lens: must be at least 1, got -64");
        let err = parse(&["--output-len", "-5"])
            .matrix()
            .expect_err("negative");
        assert_eq!(err.to_string(), "--output-len: must be at least 1, got -5");
    }
}
