//! `sweep --campaign FILE`: many server configurations, each a serve job and a sweep job on Slurm.
//!
//! Each configuration of the campaign file ([`mod@file`]) becomes a serve job (serve.sbatch with the
//! configuration's model, topology and flags) and a sweep job (sweep.sbatch) that starts once the
//! serve job has, waits for the server, runs the configuration's matrix into
//! `<results_dir>/<campaign>/<config>/`, and stops its server when it ends. Slurm schedules: a
//! serve job waits for the one `max_servers` places before it to end (`afterany`), so no more
//! than that many servers run at once. Submitting again skips finished configurations and ones
//! whose jobs are still queued or running; the sweep itself skips finished cells. The job ids are
//! kept in `campaign-jobs.json` for `--status` and `--cancel`, and every action that is not a dry
//! run writes the campaign summary (`campaign.csv`, `campaign.json`).

pub mod file;
pub mod slurm;

use crate::cell::{self, Existing};
use crate::{cell_config, plan, Plan, SweepArgs};
use anyhow::Context;
use bench_cli::UsageError;
use file::{CampaignFile, ConfigTable};
use serde::{Deserialize, Serialize};
use slurm::{Env, JobRef, Submission};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `sweep --campaign` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Submit,
    /// Print the sbatch command of every job it would submit; submit nothing, write nothing.
    DryRun,
    Status,
    Cancel,
}

/// One configuration, ready to submit.
struct Config {
    table: ConfigTable,
    /// `<results_dir>/<campaign>/<config>`.
    dir: PathBuf,
    /// The sweep's flags beyond what sweep.sbatch's variables set.
    sweep_args: Vec<String>,
    /// Client processes per cell (`CLIENTS`, the job's srun tasks).
    clients: u64,
    plan: Plan,
}

impl Config {
    fn server_info(&self) -> PathBuf {
        self.dir.join("server_info.txt")
    }

    /// Cells whose finished file is there, measured with this configuration's settings.
    fn cells_done(&self) -> usize {
        let url = &self.plan.base.base_url;
        self.plan
            .cells
            .iter()
            .filter(|c| {
                let path = cell::done_path(&self.dir, c, &self.plan.name, self.plan.base.tp);
                let expected = cell_config(&self.plan.base, c, url, 0).settings();
                cell::existing(&path, c, &expected) == Existing::Finished
            })
            .count()
    }
}

/// The jobs submitted for one configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Jobs {
    serve: String,
    sweep: String,
}

/// `campaign-jobs.json`: each configuration's latest jobs.
type Record = BTreeMap<String, Jobs>;

/// One line of the campaign summary.
#[derive(Debug, Clone, Serialize)]
struct StatusRow {
    config: String,
    /// finished, running, queued (or another state Slurm gives a live job, lower-case),
    /// partial, ended unfinished, not started.
    status: String,
    cells_done: usize,
    cells_planned: usize,
    gpus: u32,
    nodes: u32,
    tp: u32,
    pp: u32,
    dp: u32,
    expert_parallel: bool,
    model: String,
    serve_job: String,
    serve_state: String,
    sweep_job: String,
    sweep_state: String,
    results: String,
}

/// Runs `action` on the campaign in `path`.
pub fn run(path: &Path, action: Action) -> anyhow::Result<()> {
    let campaign = Campaign::load(path)?;
    match action {
        Action::Submit | Action::DryRun => campaign.submit(action == Action::DryRun),
        Action::Status => campaign.status().map(|_| ()),
        Action::Cancel => campaign.cancel(),
    }
}

struct Campaign {
    /// The campaign file, absolute: the sweep jobs refresh the summary from it.
    path: PathBuf,
    file: CampaignFile,
    /// `<results_dir>/<campaign>`, absolute.
    root: PathBuf,
    /// The folder of serve.sbatch and sweep.sbatch, absolute.
    scripts: PathBuf,
    configs: Vec<Config>,
}

/// A usage error about the campaign file.
fn bad(path: &Path, message: impl std::fmt::Display) -> UsageError {
    UsageError {
        flag: "--campaign",
        message: format!("{}: {message}", path.display()),
    }
}

impl Campaign {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let file = CampaignFile::read(path).map_err(|e| UsageError {
            flag: "--campaign",
            message: e.to_string(),
        })?;
        let here = std::env::current_dir().context("the current folder")?;
        let root = here.join(&file.results_dir).join(&file.name);
        let configs = file
            .configs
            .iter()
            .map(|table| prepare(path, &root, &file, table))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            path: here.join(path),
            scripts: here.join(&file.scripts),
            file,
            root,
            configs,
        })
    }
}

/// A configuration's sweep, parsed and planned exactly as its sweep job will: a flag the sweep
/// would refuse is refused now, naming the configuration.
fn prepare(
    path: &Path,
    root: &Path,
    file: &CampaignFile,
    table: &ConfigTable,
) -> Result<Config, UsageError> {
    let dir = root.join(&table.name);
    let sweep = file.sweep.overridden_by(&table.sweep);
    let mut sweep_args = sweep.flags();
    sweep_args.extend(deployment_flags(table));
    let mut argv: Vec<String> = ["sweep", "--results-dir"].map(String::from).to_vec();
    argv.push(dir.display().to_string());
    argv.extend([
        "--server-info".into(),
        dir.join("server_info.txt").display().to_string(),
        "--model".into(),
        table.served_name().to_string(),
        "--tp".into(),
        table.tp().to_string(),
        "--name".into(),
        table.name.clone(),
    ]);
    argv.extend(sweep_args.iter().cloned());
    let clients = sweep.clients.unwrap_or(1);
    if clients > 1 {
        // Checked as client 0 of the job's tasks will be.
        argv.extend(["--clients".into(), clients.to_string()]);
        argv.extend(["--client-index", "0", "--clients-id", "campaign"].map(String::from));
    }
    let in_config = |e: String| bad(path, format!("[[config]] `{}`: {e}", table.name));
    let args = SweepArgs::try_parse_from_iter(&argv).map_err(|e| {
        let first = e.to_string();
        in_config(format!(
            "its sweep flags: {}",
            first.lines().next().unwrap_or_default()
        ))
    })?;
    if args.simulate || args.dry_run || args.campaign.is_some() {
        return Err(in_config(
            "its sweep flags: --simulate, --dry-run and --campaign have no place in a \
             campaign's sweep args"
                .into(),
        ));
    }
    let plan = plan(&args).map_err(|e| in_config(format!("its sweep: {e:#}")))?;
    Ok(Config {
        table: table.clone(),
        dir,
        sweep_args,
        clients,
        plan,
    })
}

/// The sweep flags that record a configuration's name and topology in every result file.
fn deployment_flags(t: &ConfigTable) -> Vec<String> {
    let mut flags = vec![
        "--deployment".to_string(),
        t.name.clone(),
        "--gpus".into(),
        t.gpus().to_string(),
        "--nodes".into(),
        t.nodes().to_string(),
        "--pp".into(),
        t.pp.unwrap_or(1).to_string(),
        "--dp".into(),
        t.dp.unwrap_or(1).to_string(),
    ];
    if t.expert_parallel {
        flags.push("--expert-parallel".into());
    }
    flags
}

/// A shell variable name for a job: `serve_tp4`.
fn label(role: &str, config: &str) -> String {
    let safe: String = config
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{role}_{safe}")
}

impl Campaign {
    fn record_path(&self) -> PathBuf {
        self.root.join("campaign-jobs.json")
    }

    fn record(&self) -> anyhow::Result<Record> {
        let path = self.record_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}: not the campaign's job record; move it away to start the record afresh",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save_record(&self, record: &Record) -> anyhow::Result<()> {
        bench_result::atomic::write_json(&self.record_path(), record)
            .with_context(|| format!("writing {}", self.record_path().display()))
    }

    /// What Slurm says of the recorded jobs it still knows.
    fn states(record: &Record) -> anyhow::Result<BTreeMap<String, String>> {
        let ids: Vec<String> = record
            .values()
            .flat_map(|j| [j.serve.clone(), j.sweep.clone()])
            .collect();
        slurm::states(&ids).map_err(anyhow::Error::msg)
    }

    /// The sweep binary the jobs run, with both Slurm scripts checked to be there.
    fn sweep_bin(&self) -> anyhow::Result<PathBuf> {
        for script in ["serve.sbatch", "sweep.sbatch"] {
            anyhow::ensure!(
                self.scripts.join(script).is_file(),
                bad(
                    &self.path,
                    format!(
                        "no {script} in {}: run from the repository's root, or set `scripts` to \
                         the folder that holds the Slurm scripts",
                        self.scripts.display()
                    )
                )
            );
        }
        match &self.file.slurm.sweep_bin {
            Some(p) => Ok(std::env::current_dir()?.join(p)),
            None => std::env::current_exe().context("the sweep binary's path"),
        }
    }

    fn submit(&self, dry_run: bool) -> anyhow::Result<()> {
        let sweep_bin = self.sweep_bin()?;
        let mut record = self.record()?;
        let states = match Self::states(&record) {
            Ok(s) => s,
            Err(e) if dry_run => {
                eprintln!("note: cannot ask Slurm which jobs still run ({e})");
                BTreeMap::new()
            }
            Err(e) => return Err(e),
        };
        let alive = |id: &str| states.contains_key(id);
        // Servers already queued or running, in file order: new serve jobs queue behind them.
        let mut servers: Vec<JobRef> = self
            .configs
            .iter()
            .filter_map(|c| record.get(&c.table.name))
            .filter(|j| alive(&j.serve))
            .map(|j| JobRef::Id(j.serve.clone()))
            .collect();
        let cap = self.file.max_servers as usize;
        let mut submitted = 0;
        for (index, c) in self.configs.iter().enumerate() {
            let name = &c.table.name;
            let done = c.cells_done();
            if done == c.plan.cells.len() {
                eprintln!("{name}: finished ({done} cells): not submitted");
                continue;
            }
            if let Some(j) = record
                .get(name)
                .filter(|j| alive(&j.serve) || alive(&j.sweep))
            {
                eprintln!(
                    "{name}: jobs {} and {} are still queued or running: not submitted again",
                    j.serve, j.sweep
                );
                continue;
            }
            let after = servers
                .len()
                .checked_sub(cap)
                .map(|k| ("afterany", servers[k].clone()));
            let serve = self.serve_job(c, index, after);
            let serve_ref = if dry_run {
                println!("{}", serve.shell_line());
                let serve_ref = JobRef::Pending(serve.label.clone());
                println!("{}", self.sweep_job(c, &serve_ref, &sweep_bin).shell_line());
                serve_ref
            } else {
                let jobs = self.submit_config(c, done, &serve, &sweep_bin)?;
                let serve_ref = JobRef::Id(jobs.serve.clone());
                record.insert(name.clone(), jobs);
                self.save_record(&record)?;
                serve_ref
            };
            servers.push(serve_ref);
            submitted += 1;
        }
        if dry_run {
            eprintln!("dry run: {submitted} configurations would be submitted; nothing was");
            return Ok(());
        }
        eprintln!(
            "{submitted} configurations submitted, at most {cap} servers at once; \
             `sweep --campaign {} --status` shows where they are, `--cancel` stops them",
            self.path.display()
        );
        self.status().map(|_| ())
    }

    /// Submits `c`'s serve job, then its sweep job; `done` of its cells are finished.
    fn submit_config(
        &self,
        c: &Config,
        done: usize,
        serve: &Submission,
        sweep_bin: &Path,
    ) -> anyhow::Result<Jobs> {
        let logs = c.dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let serve_id = serve.submit().map_err(anyhow::Error::msg)?;
        let sweep = self.sweep_job(c, &JobRef::Id(serve_id.clone()), sweep_bin);
        let sweep_id = match sweep.submit() {
            Ok(id) => id,
            Err(e) => {
                // A server nobody will measure must not hold its GPUs.
                let cancelled = slurm::cancel(std::slice::from_ref(&serve_id));
                anyhow::bail!(
                    "{e}; its serve job {serve_id} {}",
                    match cancelled {
                        Ok(()) => "was cancelled".to_string(),
                        Err(c) => format!("could not be cancelled ({c}): scancel {serve_id}"),
                    }
                );
            }
        };
        eprintln!(
            "{}: serve job {serve_id}, sweep job {sweep_id}; {} of {} cells to run, results in {}",
            c.table.name,
            c.plan.cells.len() - done,
            c.plan.cells.len(),
            c.dir.display()
        );
        Ok(Jobs {
            serve: serve_id,
            sweep: sweep_id,
        })
    }

    fn serve_job(
        &self,
        c: &Config,
        index: usize,
        after: Option<(&'static str, JobRef)>,
    ) -> Submission {
        let t = &c.table;
        let text = |v: &str| Env::Text(v.to_string());
        let image = t
            .container_image
            .as_ref()
            .or(self.file.container_image.as_ref());
        let mut env = vec![
            (
                "SERVER_INFO_FILE".into(),
                text(&c.server_info().display().to_string()),
            ),
            (
                "MODEL".into(),
                text(t.model.as_deref().unwrap_or(t.served_name())),
            ),
            ("SERVED_MODEL_NAME".into(), text(t.served_name())),
            ("TP".into(), text(&t.tp().to_string())),
            ("PP".into(), text(&t.pp.unwrap_or(1).to_string())),
            ("DP".into(), text(&t.dp.unwrap_or(1).to_string())),
            ("EP".into(), text(if t.expert_parallel { "1" } else { "0" })),
            ("GPUS".into(), text(&t.gpus().to_string())),
            ("NODES".into(), text(&t.nodes().to_string())),
            (
                "PORT".into(),
                text(&(usize::from(self.file.port) + index).to_string()),
            ),
            (
                "CONTAINER_IMAGE".into(),
                image.map_or(Env::Unset, |i| text(i)),
            ),
            (
                "EXTRA_SERVE_ARGS".into(),
                text(t.serve_args.as_deref().unwrap_or("")),
            ),
            (
                "SERVE_CMD".into(),
                text(t.serve_cmd.as_deref().unwrap_or("")),
            ),
        ];
        env.extend(t.env.iter().map(|(k, v)| (k.clone(), text(v))));
        let per_node = t.gpus().div_ceil(t.nodes());
        let mut flags = self.common_flags(c, "serve", self.file.slurm.serve_partition.as_ref());
        flags.extend([
            format!("--nodes={}", t.nodes()),
            format!("--gres=gpu:{per_node}"),
        ]);
        flags.extend(self.file.slurm.serve_args.iter().cloned());
        flags.extend(t.sbatch_args.iter().cloned());
        Submission {
            label: label("serve", &t.name),
            env,
            flags,
            dependency: after,
            script: self.scripts.join("serve.sbatch"),
        }
    }

    fn sweep_job(&self, c: &Config, serve: &JobRef, sweep_bin: &Path) -> Submission {
        let t = &c.table;
        let text = |v: String| Env::Text(v);
        let env = vec![
            (
                "SERVER_INFO_FILE".into(),
                text(c.server_info().display().to_string()),
            ),
            ("RESULTS_DIR".into(), text(c.dir.display().to_string())),
            ("MODEL".into(), text(t.served_name().to_string())),
            ("TP".into(), text(t.tp().to_string())),
            ("NAME".into(), text(t.name.clone())),
            ("SWEEP_BIN".into(), text(sweep_bin.display().to_string())),
            ("SWEEP_ARGS".into(), text(c.sweep_args.join(" "))),
            ("SERVE_JOB_ID".into(), Env::Job(serve.clone())),
            (
                "CAMPAIGN_FILE".into(),
                text(self.path.display().to_string()),
            ),
            ("CONTAINER_IMAGE".into(), text(String::new())),
            ("CLIENTS".into(), text(c.clients.to_string())),
        ];
        let mut flags = self.common_flags(c, "sweep", self.file.slurm.sweep_partition.as_ref());
        if c.clients > 1 {
            flags.push(format!("--ntasks={}", c.clients));
        }
        // A serve job cancelled before it started leaves nothing to wait for.
        flags.push("--kill-on-invalid-dep=yes".into());
        flags.extend(self.file.slurm.sweep_args.iter().cloned());
        Submission {
            label: label("sweep", &t.name),
            env,
            flags,
            dependency: Some(("after", serve.clone())),
            script: self.scripts.join("sweep.sbatch"),
        }
    }

    fn common_flags(&self, c: &Config, role: &str, partition: Option<&String>) -> Vec<String> {
        let here = self
            .path
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf);
        let chdir = std::env::current_dir().unwrap_or(here);
        let mut flags = vec![
            format!("--chdir={}", chdir.display()),
            format!(
                "--job-name=inferperf-{}-{}-{role}",
                self.file.name, c.table.name
            ),
            format!("--output={}/logs/{role}-%j.out", c.dir.display()),
        ];
        if let Some(p) = partition.or(self.file.slurm.partition.as_ref()) {
            flags.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.file.slurm.account {
            flags.push(format!("--account={a}"));
        }
        flags
    }

    /// Prints every configuration's status and writes the campaign summary.
    fn status(&self) -> anyhow::Result<Vec<StatusRow>> {
        let record = self.record()?;
        let states = Self::states(&record).unwrap_or_else(|e| {
            eprintln!("note: cannot ask Slurm which jobs still run ({e})");
            BTreeMap::new()
        });
        let rows: Vec<StatusRow> = self
            .configs
            .iter()
            .map(|c| row(c, record.get(&c.table.name), &states))
            .collect();
        println!(
            "{:<20} {:<16} {:>11} {:>5} {:>5}  {:<12} {:<12}",
            "config", "status", "cells", "GPUs", "nodes", "serve job", "sweep job"
        );
        for r in &rows {
            println!(
                "{:<20} {:<16} {:>11} {:>5} {:>5}  {:<12} {:<12}",
                r.config,
                r.status,
                format!("{}/{}", r.cells_done, r.cells_planned),
                r.gpus,
                r.nodes,
                job_word(&r.serve_job, &r.serve_state),
                job_word(&r.sweep_job, &r.sweep_state),
            );
        }
        self.write_summary(&rows)?;
        Ok(rows)
    }

    fn write_summary(&self, rows: &[StatusRow]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let json = self.root.join("campaign.json");
        let value = serde_json::json!({ "campaign": self.file.name, "configs": rows });
        bench_result::atomic::write_json(&json, &value)
            .with_context(|| format!("writing {}", json.display()))?;
        let mut csv = csv::Writer::from_writer(Vec::new());
        for r in rows {
            csv.serialize(r).context("the campaign summary as CSV")?;
        }
        let bytes = csv.into_inner().context("the campaign summary as CSV")?;
        let path = self.root.join("campaign.csv");
        bench_result::atomic::write(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "campaign summary: {} and {}",
            path.display(),
            json.display()
        );
        Ok(())
    }

    fn cancel(&self) -> anyhow::Result<()> {
        let record = self.record()?;
        let states = Self::states(&record)?;
        // Sweeps first: a sweep outliving its server would wait for it in vain.
        let ids: Vec<String> = record
            .values()
            .map(|j| j.sweep.clone())
            .chain(record.values().map(|j| j.serve.clone()))
            .filter(|id| states.contains_key(id))
            .collect();
        if ids.is_empty() {
            eprintln!("no job of campaign {} is queued or running", self.file.name);
        } else {
            slurm::cancel(&ids).map_err(anyhow::Error::msg)?;
            eprintln!("cancelled: {}", ids.join(" "));
        }
        self.status().map(|_| ())
    }
}

fn job_word(id: &str, state: &str) -> String {
    match (id, state) {
        ("", _) => "-".into(),
        (id, "") => id.into(),
        (id, s) => format!("{id} {}", s.to_lowercase()),
    }
}

fn row(c: &Config, jobs: Option<&Jobs>, states: &BTreeMap<String, String>) -> StatusRow {
    let t = &c.table;
    let (done, planned) = (c.cells_done(), c.plan.cells.len());
    let state = |id: Option<&String>| {
        id.and_then(|id| states.get(id))
            .cloned()
            .unwrap_or_default()
    };
    let (serve_state, sweep_state) = (state(jobs.map(|j| &j.serve)), state(jobs.map(|j| &j.sweep)));
    let live = [&serve_state, &sweep_state];
    let status = if done == planned {
        "finished".to_string()
    } else if live
        .iter()
        .any(|s| ["RUNNING", "CONFIGURING", "COMPLETING"].contains(&s.as_str()))
    {
        "running".into()
    } else if live.iter().any(|s| *s == "PENDING") {
        "queued".into()
    } else if let Some(other) = live.iter().find(|s| !s.is_empty()) {
        // Suspended, held for requeueing, ...: as Slurm says it.
        other.to_lowercase()
    } else if jobs.is_some() {
        "ended unfinished".into()
    } else if done > 0 {
        "partial".into()
    } else {
        "not started".into()
    };
    StatusRow {
        config: t.name.clone(),
        status,
        cells_done: done,
        cells_planned: planned,
        gpus: t.gpus(),
        nodes: t.nodes(),
        tp: t.tp(),
        pp: t.pp.unwrap_or(1),
        dp: t.dp.unwrap_or(1),
        expert_parallel: t.expert_parallel,
        model: t.served_name().into(),
        serve_job: jobs.map(|j| j.serve.clone()).unwrap_or_default(),
        serve_state,
        sweep_job: jobs.map(|j| j.sweep.clone()).unwrap_or_default(),
        sweep_state,
        results: c.dir.display().to_string(),
    }
}
