//! The `sweep` command: input lengths x concurrency levels at a fixed output length, one result
//! file per cell, resumable, and safe to interrupt.
//!
//! For each cell: check the server's health (re-reading the server-info file if it went away),
//! skip the cell if its file exists and is complete with the same configuration, otherwise run it
//! with `bench-core` and write its file atomically the moment it ends. A cell that did not
//! complete every prompt is kept as `*.attemptN.partial.json` (a name neither resume nor the
//! plotter counts) and retried after the server is healthy again, up to `--retries` times.
//! SIGINT/SIGTERM: the running cell is written, marked interrupted, and the process exits 130/143.

pub mod args;
pub mod campaign;
pub mod cell;
pub mod clients;
pub mod discover;
pub mod simulate;
pub mod summary;

pub use args::SweepArgs;

use anyhow::Context;
use bench_cli::signal::{Signal, Stop};
use bench_core::config::BaseUrl;
use bench_core::progress::{self, ProgressMode};
use bench_core::{result, RunConfig};
use cell::{Cell, Existing};
use discover::Discovery;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use summary::{CellRow, CellStatus};
use tokio_util::sync::CancellationToken;

/// How a sweep ended.
#[derive(Debug)]
pub struct SweepOutcome {
    pub rows: Vec<CellRow>,
    pub interrupted_by: Option<Signal>,
}

impl SweepOutcome {
    pub fn exit_code(&self) -> ExitCode {
        if let Some(sig) = self.interrupted_by {
            return ExitCode::from(sig.exit_code());
        }
        if self.rows.iter().any(|r| r.status == CellStatus::Failed) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// What every cell shares.
struct Plan {
    base: RunConfig,
    cells: Vec<Cell>,
    name: String,
    results_dir: PathBuf,
    retries: u32,
    existing: args::ExistingPolicy,
    progress: ProgressMode,
    /// With `--clients N`: which client this process is.
    clients: Option<clients::Clients>,
    /// How long a client waits for the others (`--wait-timeout`).
    wait_timeout: std::time::Duration,
}

/// Runs the sweep described by `args`, stopped early by SIGINT or SIGTERM.
pub async fn run(args: SweepArgs) -> anyhow::Result<SweepOutcome> {
    run_until(args, Stop::on_signals()).await
}

/// [`run`], stopped early by `stop`.
pub async fn run_until(args: SweepArgs, stop: Stop) -> anyhow::Result<SweepOutcome> {
    if let Some(file) = &args.campaign {
        let action = match (args.dry_run, args.status, args.cancel) {
            (true, _, _) => campaign::Action::DryRun,
            (_, true, _) => campaign::Action::Status,
            (_, _, true) => campaign::Action::Cancel,
            _ => campaign::Action::Submit,
        };
        campaign::run(file, action)?;
        return Ok(SweepOutcome {
            rows: Vec::new(),
            interrupted_by: stop.received(),
        });
    }
    let mut args = args;
    let simulated = if args.simulate {
        let sim = simulate::start(&mut args).await?;
        sim.release_on(stop.token().clone());
        Some(sim)
    } else {
        None
    };
    let plan = plan(&args)?;
    if args.dry_run {
        print_dry_run(&plan);
        return Ok(SweepOutcome {
            rows: Vec::new(),
            interrupted_by: stop.received(),
        });
    }
    std::fs::create_dir_all(&plan.results_dir).with_context(|| {
        format!(
            "--results-dir {}: cannot create it",
            plan.results_dir.display()
        )
    })?;
    check_writable(&plan.results_dir)?;
    if let Some(caution) =
        bench_core::prompt::seed_caution(plan.base.prompt.seed_origin).filter(|_| !args.simulate)
    {
        eprintln!("note: {caution}");
    }
    let Some(mut session) = Session::connect(plan, &args, stop.token().clone(), simulated).await?
    else {
        return Ok(SweepOutcome {
            rows: Vec::new(),
            interrupted_by: stop.received(),
        });
    };
    if session.plan.existing == args::ExistingPolicy::Beside {
        session.choose_name();
    }
    if let Some(sim) = &session.simulated {
        let shortest = session.plan.cells.iter().map(|c| c.input_len).min();
        let input_len = shortest.unwrap_or(session.plan.base.prompt.input_len);
        sim.calibrate(&session.plan.base, input_len, &session.tokenizer)
            .await
            .context("measuring what the machine adds to each request")?;
    }
    let rows = session.run_cells().await?;
    if let Some(sim) = session.simulated.take() {
        let note = sim.note();
        sim.stop().await;
        if !session.stop.is_cancelled() {
            draw_demo_charts(&session.plan.results_dir, &session.plan.name);
        }
        if let Some(note) = note {
            eprintln!("{note}");
        }
    }
    Ok(SweepOutcome {
        rows,
        interrupted_by: stop.received(),
    })
}

fn print_dry_run(plan: &Plan) {
    for c in &plan.cells {
        println!(
            "isl {:>6}  osl {:>5}  conc {:>4}  prompts {:>5}  warm-up {:>4}  {}",
            c.input_len,
            c.output_len,
            c.concurrency,
            c.num_prompts,
            c.num_warmups,
            plan.results_dir
                .join(c.file_name(&plan.name, plan.base.tp))
                .display()
        );
    }
}

/// A sweep under way: the plan, the server it found, and what every cell shares.
struct Session {
    plan: Plan,
    discovery: Discovery,
    url: BaseUrl,
    tokenizer: std::sync::Arc<bench_core::tokenizer::PromptTokenizer>,
    stop: CancellationToken,
    simulated: Option<simulate::Simulated>,
    bar: CellsBar,
}

impl Session {
    /// Waits for a healthy server and loads the tokenizer; `None` when a signal came meanwhile.
    async fn connect(
        plan: Plan,
        args: &SweepArgs,
        stop: CancellationToken,
        simulated: Option<simulate::Simulated>,
    ) -> anyhow::Result<Option<Self>> {
        let ca_cert = plan.base.ca_cert.as_deref();
        let mut discovery = Discovery::new(args.source()?, args.wait_timeout()?, ca_cert)
            .with_context(|| match ca_cert {
                Some(path) => format!("--ca-cert {}", path.display()),
                None => "building the health-check client".into(),
            })?;
        discovery.poll = args.poll_interval()?;
        // A tokenizer that cannot be had is found before waiting for the server, not after.
        let tokenizer = bench_core::load_tokenizer(&plan.base)
            .await
            .map_err(|e| args.common.tokenizer_error(&e))?;
        let url = match discovery.healthy(&stop).await {
            Ok(url) => url,
            Err(discover::DiscoverError::Stopped) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        eprintln!("server healthy at {url}");
        let mut plan = plan;
        if let discover::Source::ServerInfo(info) = args.source()? {
            take_topology(&mut plan.base, &info)?;
        }
        let bar = CellsBar::new(plan.progress, plan.cells.len());
        Ok(Some(Self {
            plan,
            discovery,
            url,
            tokenizer,
            stop,
            simulated,
            bar,
        }))
    }

    /// Every cell in order, the summary rewritten after each.
    async fn run_cells(&mut self) -> anyhow::Result<Vec<CellRow>> {
        let mut rows = Vec::new();
        let started = Instant::now();
        let cells = self.plan.cells.clone();
        for (i, cell) in cells.iter().enumerate() {
            if self.stop.is_cancelled() {
                break;
            }
            self.say(&cell_line(i, cells.len(), cell, started, &rows));
            let row = self.run_cell(cell).await?;
            self.say(&format!("  -> {}", row.describe()));
            self.bar.inc();
            rows.push(row);
            // With several clients, client 0 writes what the folder holds.
            if self.plan.clients.as_ref().is_some_and(|c| !c.is_merger()) {
                continue;
            }
            summary::write(&self.plan.results_dir, &rows).context("writing the sweep summary")?;
            if cell.run > 1 && cells.get(i + 1).is_none_or(|next| next.run == 1) {
                self.sum_up_repeats(cell);
            }
        }
        self.bar.finish();
        Ok(rows)
    }

    /// After a cell's last run: the intervals over its finished runs, beside the first one
    /// (`...conc<C>.repeats.json`), and a line with the output throughput's.
    fn sum_up_repeats(&self, last: &Cell) {
        let plan = &self.plan;
        let runs: Vec<(PathBuf, bench_result::ResultFile)> = (1..=last.run)
            .map(|run| {
                cell::done_path(
                    &plan.results_dir,
                    &Cell { run, ..*last },
                    &plan.name,
                    plan.base.tp,
                )
            })
            .filter_map(|p| bench_result::read(&p).ok().map(|f| (p, f)))
            .filter(|(_, f)| f.completed.unwrap_or(0) >= last.num_prompts)
            .collect();
        let Some((first, _)) = runs.first() else {
            return;
        };
        let named: Vec<(String, bench_result::ResultFile)> = runs
            .iter()
            .map(|(p, f)| {
                let name = p
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                (name, f.clone())
            })
            .collect();
        let summary = bench_result::repeats::RepeatsFile::of(&named);
        let path = bench_result::repeats::path_for(first);
        match (summary.write(&path), summary.figures.get("output tok/s")) {
            (Err(e), _) => self.say(&format!("  warning: cannot write {} ({e})", path.display())),
            (Ok(()), Some(i)) => self.say(&format!(
                "  {} runs: output tok/s {:.0} (95% interval {:.0} .. {:.0}, CV {:.1}%) -> {}",
                summary.runs.len(),
                i.mean,
                i.low,
                i.high,
                i.cv * 100.0,
                path.display()
            )),
            (Ok(()), None) => {}
        }
    }

    /// A line on stderr that does not tear the progress bars.
    fn say(&self, line: &str) {
        progress::say(line);
    }
}

/// On a terminal, a bar over the cells above each cell's requests bar; elsewhere nothing (each
/// cell has its lines).
struct CellsBar {
    bar: Option<indicatif::ProgressBar>,
}

impl CellsBar {
    fn new(mode: ProgressMode, cells: usize) -> Self {
        if mode != ProgressMode::Bar {
            return Self { bar: None };
        }
        let bar = progress::bars().add(indicatif::ProgressBar::new(cells as u64));
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>8} {bar:40.green/white} {pos}/{len} cells [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix("sweep");
        // Redraw on a timer: the bar changes once per cell, and must show meanwhile.
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        Self { bar: Some(bar) }
    }

    fn inc(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `--simulate` ends with every chart of the results, so a first run shows what a user gets.
fn draw_demo_charts(results_dir: &Path, name: &str) {
    let options = plot::Options {
        results_dir: results_dir.to_path_buf(),
        glob: format!("{}_tp*_isl*_osl*_conc*.json", glob::Pattern::escape(name)),
        output: Some(results_dir.join("charts").join(format!("{name}.png"))),
        kind: plot::Kind::All,
        width: 1400,
        height: 560,
        ..plot::Options::default()
    };
    if let Err(e) = plot::draw(&options) {
        eprintln!("warning: the demo charts could not be drawn: {e:#}");
    }
}

fn plan(args: &SweepArgs) -> anyhow::Result<Plan> {
    let matrix = args.matrix()?;
    let mut base = args.common.to_config(bench_cli::Shape {
        input_len: matrix.input_lens.first().copied().unwrap_or(1) as i64,
        output_len: matrix.output_len as i64,
        num_prompts: 1,
        max_concurrency: Some(1),
        num_warmups: 0,
    })?;
    base.ignore_eos = true;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&base.model));
    let cells = matrix.cells();
    let clients = args.clients(&cells)?;
    Ok(Plan {
        clients,
        wait_timeout: bench_cli::parse_duration("--wait-timeout", &args.wait_timeout)?,
        cells,
        name,
        results_dir: args.results_dir.clone(),
        retries: args.retries,
        existing: args.existing,
        progress: ProgressMode::detect(args.common.disable_tqdm),
        base,
    })
}

/// The model's last path segment, lower-case, as a file-name-safe run name.
fn default_name(model: &str) -> String {
    let last = model.rsplit('/').next().unwrap_or(model);
    last.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn check_writable(dir: &Path) -> anyhow::Result<()> {
    tempfile::Builder::new()
        .prefix(".inferperf-write-check")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| format!("--results-dir {}: cannot write there", dir.display()))
}

/// `YYYYMMDD-HHMMSS`, local time: when a file was set aside.
fn chrono_stamp() -> String {
    chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()
}

fn cell_line(i: usize, total: usize, cell: &Cell, started: Instant, rows: &[CellRow]) -> String {
    let ran: Vec<f64> = rows.iter().filter_map(|r| r.seconds).collect();
    let eta = if ran.is_empty() {
        String::from("eta unknown")
    } else {
        let per = ran.iter().sum::<f64>() / ran.len() as f64;
        format!("eta {:.0}s", per * (total - i) as f64)
    };
    let run = if cell.run > 1 {
        format!(" run {}", cell.run)
    } else {
        String::new()
    };
    format!(
        "cell {}/{}: isl {} osl {} conc {}{run} ({} prompts, {} warm-up); elapsed {:.0}s, {eta}",
        i + 1,
        total,
        cell.input_len,
        cell.output_len,
        cell.concurrency,
        cell.num_prompts,
        cell.num_warmups,
        started.elapsed().as_secs_f64()
    )
}

/// The run of `cell`'s `attempt`: its prompts' seed is derived from the sweep's and the cell's
/// coordinates, so no cell or attempt repeats another's prompts (a server's prefix cache would
/// serve them). The built-in simulator has no prefix cache: its attempts repeat the cell's
/// prompts (`attempt` 0), so a demo cell run again is the same cell.
fn cell_config(base: &RunConfig, cell: &Cell, url: &BaseUrl, attempt: u32) -> RunConfig {
    let mut c = base.clone();
    c.prompt.seed = bench_core::prompt::derive_seed(
        base.prompt.seed,
        &[
            cell.input_len,
            cell.output_len,
            cell.concurrency,
            u64::from(attempt),
        ],
    );
    // A repeat draws prompts of its own (the first run's are those of a sweep without repeats).
    if cell.run > 1 {
        c.prompt.seed = bench_core::prompt::derive_seed(c.prompt.seed, &[u64::from(cell.run)]);
    }
    c.base_url = url.clone();
    c.prompt.input_len = cell.input_len;
    c.output_len = cell.output_len;
    c.num_prompts = cell.num_prompts as usize;
    c.num_warmups = cell.num_warmups as usize;
    c.max_concurrency = std::num::NonZeroUsize::new(cell.concurrency as usize);
    c
}

/// How one attempt at a cell ended.
enum Attempt {
    /// Finished (or stopped): the cell's row.
    Ended(Box<CellRow>),
    /// Incomplete and kept as `partial`; may be retried.
    Incomplete { partial: PathBuf, seconds: f64 },
    /// The built-in simulator fell behind its schedule; it now runs slower, and the cell runs
    /// again (the late attempt is kept as a partial file) with the same requests, which are
    /// handed back.
    SimulatorLate(Box<bench_core::run::Prepared>),
}

impl Session {
    /// `cell` driven with the other clients (`--clients`): this client's share, then, for client
    /// 0, the merge of every client's part into the cell's file. Not retried: the clients would
    /// have to agree on it.
    async fn run_cell_together(
        &mut self,
        cell: &Cell,
        clients: &clients::Clients,
    ) -> anyhow::Result<CellRow> {
        let name = self.plan.name.clone();
        let done = cell::done_path(&self.plan.results_dir, cell, &name, self.plan.base.tp);
        // Client 0 alone moves files: the others would race it.
        if let Some(row) = self.finished_or_cleared(cell, &done, clients.is_merger())? {
            return Ok(row);
        }
        if !self.discovery.is_healthy(&self.url).await && !self.wait_for_server().await? {
            return Ok(CellRow::empty(&name, cell, CellStatus::Interrupted));
        }
        let share = clients.share(cell);
        let mut config = cell_config(&self.plan.base, &share, &self.url, 0);
        // Prompts of its own: no client's prompts are another's (prefix caching).
        config.prompt.seed =
            bench_core::prompt::derive_seed(config.prompt.seed, &[u64::from(clients.index) + 1]);
        config.client = Some(clients.index);
        let stem = done
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let dir = clients.dir(&self.plan.results_dir, &stem);
        let started = Instant::now();
        let prepared = bench_core::prepare(&config, std::sync::Arc::clone(&self.tokenizer)).await?;
        let gates = bench_core::Gates {
            before_measured: Some(Box::pin(clients.barrier(
                &dir,
                &self.stop,
                self.plan.wait_timeout,
            ))),
            after_measured: Some(Box::pin(clients.ended(
                &dir,
                &self.stop,
                self.plan.wait_timeout,
            ))),
            server_clock: None,
        };
        let report = match bench_core::execute_gated(
            &config,
            &prepared,
            &self.stop,
            self.plan.progress,
            gates,
        )
        .await
        {
            Ok(r) => r,
            // Stopped while waiting for the others: nothing of the cell was measured yet.
            Err(bench_core::RunError::Gate(_)) if self.stop.is_cancelled() => {
                return Ok(CellRow::empty(&name, cell, CellStatus::Interrupted))
            }
            Err(e) => return Err(e.into()),
        };
        clients
            .write_part(
                &dir,
                &bench_core::merge::ClientPart::of(&report, clients.index),
            )
            .with_context(|| format!("writing this client's part into {}", dir.display()))?;
        if !clients.is_merger() {
            // What the client says of itself; client 0 judges the merged run.
            for w in &report.client.warnings {
                self.say(&format!("  warning: {w}"));
            }
            return Ok(share_row(&name, cell, &share, &report, &dir));
        }
        let mut row = self.merge_parts(cell, clients, &dir, &done).await?;
        row.seconds = Some(started.elapsed().as_secs_f64());
        Ok(row)
    }

    /// Client 0's end of a cell: every client's part merged into the cell's file (`done`), or
    /// into a partial file when some part never came or a prompt did not complete.
    async fn merge_parts(
        &self,
        cell: &Cell,
        clients: &clients::Clients,
        dir: &Path,
        done: &Path,
    ) -> anyhow::Result<CellRow> {
        let name = self.plan.name.as_str();
        let (parts, missing) = clients
            .gather(dir, &self.stop, self.plan.wait_timeout)
            .await;
        let whole = cell_config(&self.plan.base, cell, &self.url, 0);
        let merged = bench_core::merge::merge(&whole, &parts)?;
        for w in bench_core::console::warnings(&merged) {
            self.say(&format!("  warning: {w}"));
        }
        let value = result::to_json(&merged);
        let complete = missing.is_none()
            && merged.not_sent == 0
            && merged.metrics.completed == cell.num_prompts as usize;
        let (path, status) = if complete {
            (done.to_path_buf(), CellStatus::Done)
        } else {
            let partial = cell.free_partial(&self.plan.results_dir, name, self.plan.base.tp, 1);
            let status = if merged.interrupted || self.stop.is_cancelled() {
                CellStatus::Interrupted
            } else {
                CellStatus::Failed
            };
            (partial, status)
        };
        write_run(&path, &value, &merged)?;
        if let Some(missing) = missing {
            self.say(&format!(
                "  the parts of clients {missing} never came; the others' are merged into {}",
                path.display()
            ));
        }
        Ok(CellRow::from_file(name, cell, &path, status))
    }

    /// Runs one cell (unless its finished file is there), retrying an incomplete attempt.
    async fn run_cell(&mut self, cell: &Cell) -> anyhow::Result<CellRow> {
        if let Some(clients) = self.plan.clients.clone() {
            return self.run_cell_together(cell, &clients).await;
        }
        let done = cell::done_path(
            &self.plan.results_dir,
            cell,
            &self.plan.name,
            self.plan.base.tp,
        );
        let name = self.plan.name.clone();
        if let Some(row) = self.finished_or_cleared(cell, &done, true)? {
            return Ok(row);
        }
        let mut attempt = 0;
        let mut again = None;
        loop {
            attempt += 1;
            if !self.discovery.is_healthy(&self.url).await {
                self.say(&format!(
                    "  server at {} is not healthy: waiting for it (re-reading the server-info file)",
                    self.url
                ));
                if !self.wait_for_server().await? {
                    return Ok(CellRow::empty(&name, cell, CellStatus::Interrupted));
                }
                self.say(&format!("  server healthy at {}", self.url));
            }
            let (partial, seconds) = match self.attempt(cell, &done, attempt, again.take()).await? {
                Attempt::Ended(row) => return Ok(*row),
                Attempt::Incomplete { partial, seconds } => (partial, seconds),
                Attempt::SimulatorLate(prepared) => {
                    again = Some(*prepared);
                    continue;
                }
            };
            let status = if attempt > self.plan.retries {
                CellStatus::Failed
            } else if !self.wait_for_server().await? {
                // A failed cell often means the server went away: wait for it before retrying.
                CellStatus::Interrupted
            } else {
                self.say(&format!("  retrying on the server healthy at {}", self.url));
                continue;
            };
            let mut row = CellRow::from_file(&name, cell, &partial, status);
            row.seconds = Some(seconds);
            return Ok(row);
        }
    }

    /// The skipped cell's row when `done` is its finished run; otherwise `None`, with a file that
    /// is not (another run's settings, incomplete, interrupted) moved aside when `may_move`.
    fn finished_or_cleared(
        &self,
        cell: &Cell,
        done: &Path,
        may_move: bool,
    ) -> anyhow::Result<Option<CellRow>> {
        match cell::existing(done, cell, &self.expected(cell)) {
            Existing::Finished => Ok(Some(CellRow::from_file(
                &self.plan.name,
                cell,
                done,
                CellStatus::Skipped,
            ))),
            Existing::Stale(why) if may_move => {
                let aside = self.set_aside(done)?;
                self.say(&format!(
                    "  {} is not this cell's finished run: {why}; it is kept as {}",
                    done.display(),
                    aside.display()
                ));
                Ok(None)
            }
            Existing::Stale(_) | Existing::Missing => Ok(None),
        }
    }

    /// `--existing beside`: the first of `<name>`, `<name>-2`, ... under which no cell's file is
    /// a run measured otherwise, so this sweep writes beside them and resumes its own.
    fn choose_name(&mut self) {
        let base = self.plan.name.clone();
        for n in 1u32.. {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            self.plan.name = name;
            let stale = self.plan.cells.iter().any(|c| {
                let done = cell::done_path(
                    &self.plan.results_dir,
                    c,
                    &self.plan.name,
                    self.plan.base.tp,
                );
                matches!(
                    cell::existing(&done, c, &self.expected(c)),
                    Existing::Stale(_)
                )
            });
            if !stale {
                if n > 1 {
                    eprintln!(
                        "files of `{base}` in {} were measured otherwise; this sweep writes its \
                         cells as `{}_...` beside them",
                        self.plan.results_dir.display(),
                        self.plan.name
                    );
                }
                return;
            }
        }
    }

    /// The settings `cell`'s finished file must have been measured with.
    fn expected(&self, cell: &Cell) -> bench_result::settings::RunSettings {
        cell_config(&self.plan.base, cell, &self.url, 0).settings()
    }

    /// Moves `path`, and its per-request file if it has one, into `superseded/` under a name
    /// that says when, and returns where the result went.
    fn set_aside(&self, path: &Path) -> anyhow::Result<PathBuf> {
        let dir = self.plan.results_dir.join("superseded");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let when = chrono_stamp();
        let target = (1..)
            .map(|n| match n {
                1 => dir.join(format!("{stem}.{when}.json")),
                n => dir.join(format!("{stem}.{when}-{n}.json")),
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| dir.join(format!("{stem}.{when}.json")));
        std::fs::rename(path, &target)
            .with_context(|| format!("moving {} to {}", path.display(), target.display()))?;
        let requests = bench_result::requests::path_for(path);
        if requests.exists() {
            let beside = bench_result::requests::path_for(&target);
            std::fs::rename(&requests, &beside).with_context(|| {
                format!("moving {} to {}", requests.display(), beside.display())
            })?;
        }
        Ok(target)
    }

    /// Waits for a healthy server (re-reading the server-info file); false when stopped.
    async fn wait_for_server(&mut self) -> anyhow::Result<bool> {
        match self.discovery.healthy(&self.stop).await {
            Ok(u) => {
                self.url = u;
                Ok(true)
            }
            Err(discover::DiscoverError::Stopped) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One run of `cell`, written as its finished file or as an attempt's partial file. `again`:
    /// the requests of the attempt before, when the built-in simulator ran it too fast (the
    /// simulator's attempts repeat the cell's prompts, see [`cell_config`]).
    async fn attempt(
        &self,
        cell: &Cell,
        done: &Path,
        attempt: u32,
        again: Option<bench_core::run::Prepared>,
    ) -> anyhow::Result<Attempt> {
        let plan = &self.plan;
        let salt = if self.simulated.is_some() { 0 } else { attempt };
        let config = cell_config(&plan.base, cell, &self.url, salt);
        let started = Instant::now();
        let prepared = match again {
            Some(p) => p,
            None => bench_core::prepare(&config, std::sync::Arc::clone(&self.tokenizer)).await?,
        };
        let mut gates = bench_core::Gates::default();
        if let Some(sim) = &self.simulated {
            let concurrency = config
                .max_concurrency
                .map_or(prepared.measured.len(), std::num::NonZeroUsize::get);
            sim.announce(&prepared, concurrency).await;
            if let Some(scale) = sim.pace(cell, plan.base.prompt.range_ratio) {
                self.say(&format!("  simulator at {scale}x real time"));
            }
            gates.server_clock = sim.server_clock();
        }
        let report =
            bench_core::execute_gated(&config, &prepared, &self.stop, plan.progress, gates).await?;
        let seconds = started.elapsed().as_secs_f64();
        let value = result::to_json(&report);
        // Every prompt completed, even if a signal came while the last ones finished.
        let complete =
            report.not_sent == 0 && report.metrics.completed == cell.num_prompts as usize;
        let slower = match &self.simulated {
            Some(sim) if complete => sim.slow_down_if_late(cell, &report),
            _ => None,
        };
        if slower.is_none() {
            for w in bench_core::console::warnings(&report) {
                self.say(&format!("  warning: {w}"));
            }
        }
        let name = plan.name.as_str();
        if let Some(line) = slower {
            let partial = cell.free_partial(&plan.results_dir, name, plan.base.tp, attempt);
            write_run(&partial, &value, &report)?;
            self.say(&format!(
                "  {line}; the late attempt is kept as {}",
                partial.display()
            ));
            return Ok(Attempt::SimulatorLate(Box::new(prepared)));
        }
        if complete {
            write_run(done, &value, &report)?;
            let mut row = CellRow::from_file(name, cell, done, CellStatus::Done);
            row.seconds = Some(seconds);
            return Ok(Attempt::Ended(Box::new(row)));
        }
        let partial = cell.free_partial(&plan.results_dir, name, plan.base.tp, attempt);
        write_run(&partial, &value, &report)?;
        if report.interrupted {
            let mut row = CellRow::from_file(name, cell, &partial, CellStatus::Interrupted);
            row.seconds = Some(seconds);
            return Ok(Attempt::Ended(Box::new(row)));
        }
        let reasons: Vec<&String> = report.metrics.failures.keys().collect();
        self.say(&format!(
            "  attempt {attempt}: {} of {} completed (failures: {}); kept as {}",
            report.metrics.completed,
            cell.num_prompts,
            reasons
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            partial.display()
        ));
        Ok(Attempt::Incomplete { partial, seconds })
    }
}

/// The topology the serve job wrote beside the server-info file becomes the run's deployment
/// (recorded in every result, per-GPU figures divided by its GPUs), unless the deployment flags
/// said it; a serve job at another TP than `--tp` is an error, not a mislabelled file.
fn take_topology(base: &mut RunConfig, info: &Path) -> anyhow::Result<()> {
    let Some(t) = discover::read_topology(info).map_err(anyhow::Error::msg)? else {
        return Ok(());
    };
    if t.tp != base.tp {
        return Err(bench_cli::UsageError {
            flag: "--tp",
            message: format!(
                "{}, but the serve job says its server runs at tp {} ({}): give --tp {}",
                base.tp,
                t.tp,
                discover::topology_path(info).display(),
                t.tp
            ),
        }
        .into());
    }
    match &base.deployment {
        Some(_) => eprintln!(
            "note: the deployment flags given win over the serve job's topology ({} GPUs, {} \
             node(s))",
            t.gpus, t.nodes
        ),
        None => {
            eprintln!(
                "server topology from its serve job: {} GPUs, {} node(s), tp {}, pp {}, dp {}{}",
                t.gpus,
                t.nodes,
                t.tp,
                t.pp,
                t.dp,
                if t.expert_parallel {
                    ", expert parallel"
                } else {
                    ""
                }
            );
            base.deployment = Some(bench_core::config::Deployment {
                name: None,
                gpus: t.gpus,
                nodes: t.nodes,
                pp: t.pp,
                dp: t.dp,
                expert_parallel: t.expert_parallel,
            });
        }
    }
    Ok(())
}

/// A client's row for its share of `cell` (client 0 writes the cell's).
fn share_row(
    name: &str,
    cell: &Cell,
    share: &Cell,
    report: &bench_core::RunReport,
    dir: &Path,
) -> CellRow {
    let status = if report.interrupted {
        CellStatus::Interrupted
    } else if report.not_sent == 0 && report.metrics.completed == share.num_prompts as usize {
        CellStatus::Done
    } else {
        CellStatus::Failed
    };
    let mut row = CellRow::empty(name, cell, status);
    row.completed = Some(report.metrics.completed as u64);
    row.failed = Some(report.metrics.failures.values().map(|g| g.count).sum());
    row.file = format!("{} (this client's share)", dir.display());
    row
}

/// Writes a run's result file, then its per-request file beside it.
fn write_run(
    path: &Path,
    value: &serde_json::Value,
    report: &bench_core::RunReport,
) -> anyhow::Result<()> {
    result::write_atomic(path, value).with_context(|| format!("writing {}", path.display()))?;
    result::write_requests(path, report)
        .with_context(|| format!("writing the per-request file beside {}", path.display()))?;
    Ok(())
}
