//! `sweep --simulate`: the built-in engine simulator as the server, for a first run with no GPU.
//!
//! The simulator runs in-process on 127.0.0.1:0 with a timing preset and counts prompt tokens
//! with the same tokenizer as the client: the DeepSeek-V4 one that ships inside the binary, so
//! the demo needs no files. When the matrix is not given, a smaller one keeps the demo short.
//!
//! **The demo shows the model, not the machine.** By default the simulator runs on its stepped
//! clock (`--sim-clock stepped`, [`bench_sim::stepped`]): after each engine step it waits for this
//! client to read every token and send what its closed loop owes (each cell's warm-up and
//! measured phases are announced to it, [`Simulated::announce`]), and the client maps its stamps
//! to the modelled instants of the simulator's windows ([`Simulated::server_clock`]). The figures
//! are then the model's whatever the machine takes, so nothing below applies: no calibration, no
//! pace, no cell run again.
//!
//! On the wall clock (`--sim-clock wall`) the simulator runs its schedule faster than
//! real time, and every cost that does not scale (the HTTP round trip, waking threads: a few
//! tenths of a millisecond per request) is multiplied by the time scale when the figures are
//! converted back to the modelled deployment's time. So the demo measures that cost first
//! ([`Simulated::calibrate`]: a few requests one at a time, the client's TTFT against the
//! simulator's own, with prompts of the matrix's shortest input length), and runs each cell
//! ([`Simulated::pace`]) as fast as keeps it under [`OVERHEAD_SHARE`] of the cell's modelled
//! TTFT, up to `--sim-time-scale`: the lone TTFT of its shortest prompt, or the median a cell
//! of the same input length measured at a lower concurrency when that is longer. With more
//! than one stream, the closed loop's turnaround, measured too, must stay within half the
//! engine's shortest step (a lone stream's next request finds the engine idle, so its
//! turnaround cannot change the schedule: `joins_a_running_batch`). Each
//! cell's result records its own scale, and the charts convert each file back with its own. A
//! cell in which the simulator still fell behind its schedule, in which the client's
//! turnaround was too slow for the scale, or whose own per-request cost took twice its share of
//! the cell's median TTFT, is run again at the scale its measurements allow (usually once; a
//! rerun late again runs again the same way, down to real time:
//! [`Simulated::slow_down_if_late`]); later cells pace themselves by the largest per-request
//! cost measured and by the latest turnaround of more than one stream (a P99, which one noisy
//! spell of the machine would otherwise hold down for the rest of the sweep). Prompts are
//! announced before they are sent, so the simulator counts them ahead
//! ([`SimHandle::pretokenize`]) instead of while the request waits.

use crate::cell::Cell;
use crate::SweepArgs;
use anyhow::Context;
use bench_core::judge::ScheduleMiss;
use bench_core::RunConfig;
use bench_sim::timing::Timing;
use bench_sim::{SimConfig, SimHandle, Simulator};
use std::sync::Arc;
use std::sync::Mutex;

/// The gzip-compressed tokenizer the demo builds prompts with (MIT, see its NOTICE.md).
const TOKENIZER_GZ: &[u8] =
    include_bytes!("../../../testdata/tokenizers/deepseek-v4/tokenizer.json.gz");

/// The fastest the wall clock runs the demo, unless `--sim-time-scale` says otherwise.
const DEMO_MAX_SCALE: f64 = 20.0;

/// The demo's prompt seed, unless `--seed` gives another.
const DEMO_SEED: u64 = 0;

/// The demo's measured prompts per cell and concurrency, unless `--prompts-per-concurrency`
/// gives another.
const DEMO_PROMPTS_PER_CONCURRENCY: i64 = 5;

/// The share of a cell's shortest modelled TTFT that the machine's unscaled per-request cost
/// may take once multiplied by the time scale.
pub const OVERHEAD_SHARE: f64 = 0.015;

/// How far below the engine's shortest step (wall time at the chosen scale) a cell paces the
/// client's turnaround plus the simulator's event lateness: half of it.
const TURNAROUND_MARGIN: f64 = 2.0;

/// Tokens each demo warm-up request asks for, unless `--warmup-output-len` gives another: the
/// warm-up opens connections, and decoding 128 tokens took a seventh of the demo's modelled time.
const DEMO_WARMUP_OUTPUT_LEN: i64 = 1;

/// A running demo simulator, its pace, and the files it needs.
#[derive(Debug)]
pub struct Simulated {
    handle: SimHandle,
    timing: Timing,
    /// The fastest the user allows (`--sim-time-scale`).
    max_scale: f64,
    /// The scale for a cell run again because it fell behind.
    retry_scale: Mutex<Option<f64>>,
    /// What the machine was measured to take (see [`Measured`]).
    measured: Mutex<Measured>,
    /// The modelled median TTFT of each finished cell, by input length and concurrency.
    medians: Mutex<Vec<(u64, u64, f64)>>,
    _tokenizer_dir: Option<tempfile::TempDir>,
}

/// What the machine adds that a time scale magnifies (wall ms).
#[derive(Debug, Default, Clone, Copy)]
struct Measured {
    /// The per-request cost that does not scale, the client's mean TTFT minus the simulator's:
    /// the largest measured (a mean, steady from run to run; it sets the figures' accuracy).
    overhead_ms: f64,
    /// The client's turnaround plus the simulator's event lateness (P99s) in a closed loop: the
    /// latest measured (a tail, which follows the machine's load as it comes and goes).
    turnaround_ms: f64,
}

impl Measured {
    /// Takes in one run's measures: the largest per-request cost, the latest turnaround.
    fn update(&mut self, overhead_ms: Option<f64>, turnaround_ms: Option<f64>) {
        self.overhead_ms = self.overhead_ms.max(overhead_ms.unwrap_or(0.0));
        if let Some(t) = turnaround_ms {
            self.turnaround_ms = t;
        }
    }
}

impl Simulated {
    /// Whether the simulator runs on its stepped clock (`--sim-clock stepped`).
    pub fn stepped(&self) -> bool {
        self.handle.stepped().is_some()
    }

    /// When `stop` fires, tells the stepped clock that the closed loop is over: the requests
    /// still streaming finish at once instead of waiting for ones the stopped client will not
    /// send.
    pub fn release_on(&self, stop: tokio_util::sync::CancellationToken) {
        if let Some(clock) = self.handle.stepped() {
            let clock = Arc::clone(clock);
            tokio::spawn(async move {
                stop.cancelled().await;
                clock.end_loop();
            });
        }
    }

    /// The simulator's stepped clock as the client's run sees it: told of every event read, and
    /// mapping the run's stamps to modelled time; `None` on the wall clock.
    pub fn server_clock(&self) -> Option<bench_core::ServerClock> {
        let clock = Arc::clone(self.handle.stepped()?);
        let reads = Arc::clone(&clock);
        Some(bench_core::ServerClock {
            reads: bench_core::client::ReadObserver(Arc::new(move || reads.event_read())),
            map: Arc::new(move |t| clock.modelled(t)),
        })
    }

    /// What a reader of the result files must know, when the simulator ran faster than real
    /// time.
    pub fn note(&self) -> Option<&'static str> {
        if self.stepped() {
            return Some(
                "note: these results come from the built-in simulator on its stepped clock \
                 (sim_clock in each file): their times are the modelled deployment's, whatever \
                 this machine took",
            );
        }
        (self.max_scale > 1.0).then_some(
            "note: these results come from the built-in simulator running faster than real time \
             (sim_time_scale in each file): their latencies are that many times shorter and \
             their throughputs that many times higher than the modelled deployment's; the charts \
             show modelled time",
        )
    }

    /// Measures the per-request cost the time scale would magnify: 16 requests one at a time
    /// with prompts of the matrix's shortest input length (`input_len`; the cost grows with
    /// the request), the client's mean TTFT minus the simulator's own (both in wall time), and
    /// the closed loop's turnaround.
    pub async fn calibrate(
        &self,
        base: &RunConfig,
        input_len: u64,
        tokenizer: &Arc<bench_core::tokenizer::PromptTokenizer>,
    ) -> anyhow::Result<()> {
        if self.stepped() {
            // Nothing the machine takes shows in modelled time.
            return Ok(());
        }
        let mut c = base.clone();
        c.prompt.input_len = input_len;
        c.output_len = 2;
        c.num_prompts = 16;
        c.num_warmups = 2;
        c.max_concurrency = std::num::NonZeroUsize::new(1);
        c.save_detailed = false;
        let prepared = bench_core::prepare(&c, Arc::clone(tokenizer)).await?;
        self.announce(&prepared, 1).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let report = bench_core::execute(
            &c,
            &prepared,
            &stop,
            bench_core::progress::ProgressMode::Off,
        )
        .await?;
        self.learn(&report);
        let measured = self.measured();
        eprintln!(
            "the client and this machine add {:.2} ms to every request, which a time scale \
             multiplies, and turn the closed loop around in {:.2} ms (P99): each cell runs as \
             fast as keeps the first under {}% of its modelled TTFT and the second under half \
             the engine's shortest step (at most {}x)",
            measured.overhead_ms,
            measured.turnaround_ms,
            OVERHEAD_SHARE * 100.0,
            self.max_scale
        );
        Ok(())
    }

    /// Keeps the largest per-request cost and the latest turnaround measured, from a run
    /// against the simulator.
    fn learn(&self, report: &bench_core::RunReport) {
        if let Ok(mut m) = self.measured.lock() {
            m.update(overhead_of(report), turnaround_of(report));
        }
    }

    /// [`Simulated::learn`] from a cell's run: a lone stream's turnaround is kept out, as it
    /// did not pace the cell (see [`joins_a_running_batch`]) and its P99 of a few gaps is their
    /// largest, one stall of the machine's.
    fn learn_from(&self, cell: &Cell, report: &bench_core::RunReport) {
        if let Ok(mut m) = self.measured.lock() {
            let turnaround = turnaround_of(report).filter(|_| joins_a_running_batch(cell));
            m.update(overhead_of(report), turnaround);
        }
    }

    fn measured(&self) -> Measured {
        self.measured.lock().map(|m| *m).unwrap_or_default()
    }

    /// The engine's shortest step, modelled ms.
    fn shortest_step_ms(&self) -> f64 {
        self.timing.shortest_step().as_secs_f64() * 1e3
    }

    /// The modelled median TTFT of the finished cell with `cell`'s input length and the
    /// largest concurrency below its own, if one ran.
    fn median_below(&self, cell: &Cell) -> Option<f64> {
        let medians = self.medians.lock().ok()?;
        medians
            .iter()
            .filter(|(isl, conc, _)| *isl == cell.input_len && *conc < cell.concurrency)
            .max_by_key(|(_, conc, _)| *conc)
            .map(|(_, _, ttft)| *ttft)
    }

    /// Sets the time scale for `cell` (see the module doc) and returns it; `None` on the
    /// stepped clock, which has none.
    pub fn pace(&self, cell: &Cell, range_ratio: f64) -> Option<f64> {
        if self.stepped() {
            return None;
        }
        let shortest = (cell.input_len as f64 * (1.0 - range_ratio))
            .floor()
            .max(1.0) as u64;
        let lone_ms = self.timing.lone_ttft(shortest).as_secs_f64() * 1e3;
        // More requests at once only add queueing: the median TTFT measured at a lower
        // concurrency is one this cell's reaches (its own check below catches it when not).
        let ttft_ms = self.median_below(cell).map_or(lone_ms, |m| m.max(lone_ms));
        let measured = self.measured();
        let mut scale = scale_for(ttft_ms, measured.overhead_ms, self.max_scale);
        if joins_a_running_batch(cell) {
            scale = scale.min(turnaround_allows(
                self.shortest_step_ms(),
                measured.turnaround_ms,
                self.max_scale,
            ));
        }
        if let Some(retry) = self.retry_scale.lock().ok().and_then(|mut r| r.take()) {
            scale = scale.min(retry);
        }
        self.handle.set_time_scale(scale);
        Some(scale)
    }

    /// Lets the simulator count the cell's prompts before they are sent (see
    /// [`SimHandle::pretokenize`]): at a time scale, counting them on arrival would be slow. On
    /// the stepped clock, also what the closed loop of `concurrency` streams will send: the
    /// warm-up, then the measured requests.
    pub async fn announce(&self, prepared: &bench_core::run::Prepared, concurrency: usize) {
        let bodies: Vec<&[u8]> = prepared
            .warmups
            .iter()
            .chain(prepared.measured.iter())
            .map(|p| p.body.as_ref())
            .collect();
        let announced = self.handle.pretokenize(&bodies).await;
        if announced.known < bodies.len() {
            // Requests out of the announced order have no place in a phase.
            if self.stepped() {
                eprintln!(
                    "  warning: the simulator could not count this cell's prompts ahead, so its \
                     stepped clock does not know the closed loop: a request sent late may join a \
                     later step than the model's"
                );
            }
            return;
        }
        let phase = |requests: usize| bench_sim::stepped::Phase {
            requests: requests as u64,
            concurrency: concurrency as u64,
        };
        self.handle.closed_loop(&[
            phase(prepared.warmups.len()),
            phase(prepared.measured.len()),
        ]);
    }

    /// When the simulator fell behind its schedule during `report`'s run (see
    /// `bench_core::judge`), the closed loop turned around too slowly for the scale
    /// (`Simulated::turnaround_too_slow`), or the machine's per-request cost was larger than the
    /// scale was chosen for (`overhead_too_large`), says so and has the cell run again at the
    /// scale what was measured allows (`retry_scale`; later cells keep their own pace, from what
    /// was measured: a machine's rare stall costs a share of a cell that a slower run makes
    /// smaller); `None` when it kept up, or when it already ran in real time (the result
    /// then carries the warning). A cell that kept up records its median TTFT, which paces the
    /// cells after it at the same input length.
    pub fn slow_down_if_late(&self, cell: &Cell, report: &bench_core::RunReport) -> Option<String> {
        if self.stepped() {
            // No pace to lower: what the machine took is not in the figures (a window that went
            // on without the client is a warning of the result's own).
            return None;
        }
        self.learn_from(cell, report);
        let view = report.server.view.as_ref()?;
        let sim = view.sim.as_ref()?;
        let scale = self.handle.time_scale();
        // The cell's own median TTFT, modelled.
        let ttft_ms = report.metrics.ttft_ms.median * scale;
        let duration_s = report.metrics.duration.as_secs_f64();
        let misses: Vec<_> = bench_core::judge::sim_schedule(sim, duration_s).collect();
        let mut late: Vec<String> = misses.iter().map(ToString::to_string).collect();
        let mut fits: Vec<f64> = misses.iter().map(scale_that_meets).collect();
        if let Some((why, fit)) = self.turnaround_too_slow(cell, report, sim) {
            late.push(why);
            fits.push(fit);
        }
        let too_large =
            overhead_of(report).and_then(|m| overhead_too_large(m, scale, ttft_ms, self.max_scale));
        let overhead_fits = too_large.as_ref().map(|(_, fits)| *fits);
        late.extend(too_large.map(|(why, _)| why));
        if late.is_empty() || scale <= 1.0 {
            if let Ok(mut m) = self.medians.lock() {
                m.push((cell.input_len, cell.concurrency, ttft_ms));
            }
            return None;
        }
        let slower = retry_scale(scale, &fits, overhead_fits);
        if let Ok(mut r) = self.retry_scale.lock() {
            *r = Some(slower);
        }
        Some(format!(
            "the simulator could not keep {scale:.1}x on this machine ({}): running this cell \
             again at {slower:.1}x",
            late.join("; ")
        ))
    }

    /// In a closed loop, the request a step's last token triggers must reach the simulator
    /// before the step after next begins, as it does in real time, or it joins a later step and
    /// the schedule is the machine's: the client's turnaround plus the simulator's event
    /// lateness (their P99s, wall time) must stay under the engine's shortest step at this
    /// scale. When not, why, and the scale at which it would have ([`turnaround_allows`]);
    /// never for a lone stream ([`joins_a_running_batch`]).
    fn turnaround_too_slow(
        &self,
        cell: &Cell,
        report: &bench_core::RunReport,
        sim: &bench_core::server_metrics::SimSchedule,
    ) -> Option<(String, f64)> {
        if !joins_a_running_batch(cell) {
            return None;
        }
        let (turnaround, lateness) = turnaround_parts(report)?;
        let budget = self.shortest_step_ms() / sim.time_scale;
        (turnaround + lateness > budget).then(|| {
            (
                format!(
                    "the client sent the next request {turnaround:.2} ms after one ended, and \
                     the simulator handed tokens over {lateness:.2} ms late (P99s): more than \
                     its shortest step at {}x ({budget:.2} ms), so requests may join later steps \
                     than in real time",
                    sim.time_scale
                ),
                turnaround_allows(
                    self.shortest_step_ms(),
                    turnaround + lateness,
                    self.max_scale,
                ),
            )
        })
    }

    pub async fn stop(self) {
        self.handle.stop().await;
    }
}

/// Whether `cell`'s requests join a batch that is running when they arrive, so that the
/// closed loop's turnaround decides which step they join: not with one stream, whose next
/// request finds the engine idle and starts its step on arrival (`bench_sim::scheduler`) at any
/// scale. There the turnaround only adds its gap between requests (a millisecond in seconds of
/// decoding), so it neither paces nor reruns the cell.
fn joins_a_running_batch(cell: &Cell) -> bool {
    cell.concurrency > 1
}

/// The machine's per-request cost that does not scale, in a run against the simulator (wall
/// ms): the client's mean TTFT minus the simulator's own.
fn overhead_of(report: &bench_core::RunReport) -> Option<f64> {
    let server_ttft = report.server.view.as_ref()?.ttft_mean_ms?;
    let measured = report.metrics.ttft_ms.mean - server_ttft;
    (measured.is_finite() && report.metrics.completed > 0).then_some(measured)
}

/// The client's turnaround and the simulator's event lateness in a run (their P99s, wall ms;
/// the lateness 0 when the server did not report it), when the run had a closed loop to turn
/// around.
fn turnaround_parts(report: &bench_core::RunReport) -> Option<(f64, f64)> {
    let turnaround = report.metrics.turnaround_ms.as_ref()?.percentile(99.0)?;
    let lateness = report
        .server
        .view
        .as_ref()
        .and_then(|v| v.sim.as_ref())
        .and_then(|s| s.event_lateness_p99_ms)
        .unwrap_or(0.0);
    Some((turnaround, lateness))
}

/// The client's turnaround plus the simulator's event lateness in a run (their P99s, wall ms),
/// when the run had a closed loop to turn around.
fn turnaround_of(report: &bench_core::RunReport) -> Option<f64> {
    let (turnaround, lateness) = turnaround_parts(report)?;
    let sum = turnaround + lateness;
    sum.is_finite().then_some(sum)
}

/// The fastest scale, at most `max`, at which a turnaround of `turnaround_ms` (wall) stays
/// within [`TURNAROUND_MARGIN`] of the engine's shortest step (`step_ms`, modelled).
fn turnaround_allows(step_ms: f64, turnaround_ms: f64, max: f64) -> f64 {
    if turnaround_ms > 0.0 {
        round_scale((step_ms / (TURNAROUND_MARGIN * turnaround_ms)).min(max))
    } else {
        max
    }
}

/// The scale at which a run would have met the bound it missed (`miss`), with room to spare
/// (half of it): time lost to late steps shrinks in share as the scale falls, and event
/// lateness in wall time is the machine's, so it shrinks in modelled time.
fn scale_that_meets(miss: &ScheduleMiss) -> f64 {
    use bench_core::judge::{SIM_EVENT_P99_MODELLED_MS, SIM_LOST_SHARE};
    match *miss {
        ScheduleMiss::TimeLost {
            share, time_scale, ..
        } => time_scale * SIM_LOST_SHARE / share / 2.0,
        ScheduleMiss::EventsLate { p99_ms, .. } => SIM_EVENT_P99_MODELLED_MS / p99_ms / 2.0,
        // Only on the stepped clock, which is not paced: real time is the fallback.
        ScheduleMiss::WindowsTimedOut { .. } => 1.0,
    }
}

/// The scale to run a late cell again at, after it ran at `scale`: where only its per-request
/// cost was too large, the scale that cost allows (`overhead_fits`); otherwise at most half of
/// `scale`, and lower where what was measured asks for it (`fits`), so that one rerun suffices
/// instead of halving again and again. Never below real time.
fn retry_scale(scale: f64, fits: &[f64], overhead_fits: Option<f64>) -> f64 {
    let lowest = fits.iter().copied().fold(f64::INFINITY, f64::min);
    let slower = match overhead_fits {
        Some(o) if fits.is_empty() => o,
        Some(o) => (scale / 2.0).min(lowest).min(o),
        None => (scale / 2.0).min(lowest),
    };
    round_scale(slower)
}

/// A scale rounded down to a tenth, never below real time.
fn round_scale(scale: f64) -> f64 {
    ((scale * 10.0).floor() / 10.0).max(1.0)
}

/// When a per-request cost of `measured` wall ms, multiplied by `scale`, took more than twice
/// [`OVERHEAD_SHARE`] of the modelled TTFT `ttft_ms` (the cost grew past what the scale was
/// chosen for: a busier machine than at calibration, larger requests), why, and the scale at
/// which it would have fitted.
fn overhead_too_large(measured: f64, scale: f64, ttft_ms: f64, max: f64) -> Option<(String, f64)> {
    let magnified = measured * (scale - 1.0);
    (magnified > 2.0 * OVERHEAD_SHARE * ttft_ms).then(|| {
        (
            format!(
                "the client and this machine added {measured:.2} ms to each request, \
                 {magnified:.1} ms of modelled TTFT at {scale}x: over {:.0}% of the cell's \
                 median ({ttft_ms:.0} ms)",
                200.0 * OVERHEAD_SHARE
            ),
            scale_for(ttft_ms, measured, max),
        )
    })
}

/// The fastest scale, at most `max`, at which `overhead_ms` of unscaled cost stays under
/// [`OVERHEAD_SHARE`] of a modelled TTFT of `ttft_ms`: it shows as `overhead_ms * (scale - 1)`
/// more than it would in real time. Rounded down to a tenth; never below real time.
fn scale_for(ttft_ms: f64, overhead_ms: f64, max: f64) -> f64 {
    let fastest = if overhead_ms > 0.0 {
        1.0 + OVERHEAD_SHARE * ttft_ms / overhead_ms
    } else {
        max
    };
    round_scale(fastest.min(max))
}

/// The demo tokenizer as a file: in the user's cache folder (`INFERPERF_CACHE`, else
/// `XDG_CACHE_HOME/inferperf`, else `~/.cache/inferperf`), where its path stays the same from run
/// to run (the result records it, and resume compares it), else in a temporary folder.
fn demo_tokenizer() -> anyhow::Result<(Option<tempfile::TempDir>, std::path::PathBuf)> {
    let cache = std::env::var_os("INFERPERF_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| std::path::Path::new(&d).join("inferperf"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/inferperf"))
        });
    if let Some(dir) = cache {
        let path = dir.join("tokenizers/deepseek-v4/tokenizer.json.gz");
        let current = std::fs::read(&path).is_ok_and(|b| b == TOKENIZER_GZ);
        if current || bench_result::atomic::write(&path, TOKENIZER_GZ).is_ok() {
            return Ok((None, path));
        }
    }
    let dir = tempfile::tempdir().context("creating a folder for the demo tokenizer")?;
    let path = dir.path().join("tokenizer.json.gz");
    bench_result::atomic::write(&path, TOKENIZER_GZ).context("writing the demo tokenizer")?;
    Ok((Some(dir), path))
}

/// The clock the flags ask for: whether stepped, and the wall clock's fastest scale.
fn clock_of(args: &SweepArgs) -> anyhow::Result<(bool, f64)> {
    let stepped = args.sim_clock == crate::args::SimClock::Stepped;
    anyhow::ensure!(
        !(stepped && args.sim_time_scale.is_some()),
        "--sim-time-scale: the stepped clock has no time scale (it waits for the client after \
         every step); add --sim-clock wall to run on the wall clock, scaled"
    );
    let max_scale = args.sim_time_scale.unwrap_or(DEMO_MAX_SCALE);
    anyhow::ensure!(
        max_scale.is_finite() && max_scale > 0.0,
        "--sim-time-scale: must be above 0"
    );
    Ok((stepped, max_scale))
}

/// Starts the simulator and points `args` at it, filling demo defaults the user did not set.
pub async fn start(args: &mut SweepArgs) -> anyhow::Result<Simulated> {
    anyhow::ensure!(
        args.common.base_url.is_none(),
        "--simulate starts its own server: drop --base-url"
    );
    let (stepped, max_scale) = clock_of(args)?;
    let (dir, tok_path) = demo_tokenizer()?;
    let model = if args.common.model == "default" {
        "sim-model".to_string()
    } else {
        args.common.model.clone()
    };
    let mut config = SimConfig::preset(&model, &args.sim_preset).with_context(|| {
        format!(
            "--sim-preset: unknown preset `{}`; use one of {}",
            args.sim_preset,
            bench_sim::timing::PRESETS.join(", ")
        )
    })?;
    config.time_scale = max_scale;
    config.stepped_clock = stepped;
    config.tokenizer = Some(tok_path.clone());
    let timing = config.timing.clone();
    let tp = match &config.timing {
        bench_sim::timing::Timing::Batching(p) => p.tp,
        bench_sim::timing::Timing::Fixed { .. } => 1,
    };
    let handle = Simulator::start(config, "127.0.0.1:0".parse()?).await?;
    let clock = if handle.stepped().is_some() {
        "on its stepped clock".to_string()
    } else {
        format!("up to {max_scale}x real time")
    };
    eprintln!(
        "started the built-in simulator at {} (preset {}, {clock})",
        handle.url(),
        args.sim_preset,
    );
    let c = &mut args.common;
    c.base_url = Some(handle.url());
    c.model = model;
    if c.tokenizer.is_none() {
        c.tokenizer = Some(tok_path.display().to_string());
    }
    if c.tp.is_none() && !c.metadata.iter().any(|m| m.starts_with("tp=")) {
        c.tp = Some(i64::from(tp));
    }
    c.metadata.push(format!("sim_preset={}", args.sim_preset));
    // The simulator has no prefix cache, so the demo may repeat its prompts: the same seed every
    // time makes the same charts every time.
    if c.seed.is_none() {
        c.seed = Some(DEMO_SEED);
    }
    let m = &mut args.matrix;
    if m.config.is_none() {
        m.input_lens.get_or_insert_with(|| "1024,4096,8192".into());
        m.concurrency.get_or_insert_with(|| "1,4,16".into());
        // The simulator's requests of one cell are alike (lengths drawn from one range, no
        // prefix cache, no graphs to capture), so half a sweep's prompts give the same curves
        // as long as every cell keeps the 10 its steady state needs, and one warm-up request
        // per stream opens its connection, for which one token is enough.
        m.prompts_per_concurrency
            .get_or_insert(DEMO_PROMPTS_PER_CONCURRENCY);
        m.min_prompts
            .get_or_insert(bench_core::steady::MIN_REQUESTS as i64);
        m.warmups_per_concurrency.get_or_insert(1);
        c.warmup_output_len.get_or_insert(DEMO_WARMUP_OUTPUT_LEN);
    }
    if args.name.is_none() {
        args.name = Some("sim".into());
    }
    Ok(Simulated {
        handle,
        timing,
        max_scale,
        retry_scale: Mutex::new(None),
        measured: Mutex::new(Measured::default()),
        medians: Mutex::new(Vec::new()),
        _tokenizer_dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's pace around a simulator of the demo's preset on port 0, at most 20x, nothing
    /// measured yet.
    async fn demo_at_most_20x() -> Simulated {
        let config =
            SimConfig::preset("m", "minimax-m2-tp4").expect("the demo's preset is a preset");
        let timing = config.timing.clone();
        let handle = Simulator::start(config, "127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("the simulator starts");
        Simulated {
            handle,
            timing,
            max_scale: 20.0,
            retry_scale: Mutex::new(None),
            measured: Mutex::new(Measured::default()),
            medians: Mutex::new(Vec::new()),
            _tokenizer_dir: None,
        }
    }

    #[test]
    fn the_scale_keeps_the_magnified_overhead_under_its_share() {
        // 0.3 ms on a 70 ms TTFT: 1.5% of 70 is 1.05 ms, reached at 1 + 1.05 / 0.3 = 4.5x.
        assert_eq!(scale_for(70.0, 0.3, 20.0), 4.5);
        let magnified = 0.3 * (4.5 - 1.0);
        assert!(magnified <= OVERHEAD_SHARE * 70.0 + 1e-12);
        // Long TTFTs run at the most allowed; a huge overhead never slows below real time.
        assert_eq!(scale_for(1000.0, 0.3, 20.0), 20.0);
        assert_eq!(scale_for(10.0, 50.0, 20.0), 1.0);
        assert_eq!(scale_for(70.0, 0.0, 8.0), 8.0);
    }

    #[test]
    fn a_cell_whose_cost_outgrew_its_scale_runs_again_at_the_scale_that_cost_allows() {
        // Calibrated at ~0.15 ms, a 179 ms TTFT ran at 15.3x; the cell itself measured 0.57 ms:
        // 8.2 ms of modelled TTFT, over 3% of 179.
        let (why, fits) = overhead_too_large(0.57, 15.3, 179.0, 20.0).expect("too large");
        assert!(why.contains("0.57 ms") && why.contains("over 3%"), "{why}");
        assert_eq!(fits, scale_for(179.0, 0.57, 20.0));
        assert_eq!(fits, 5.7);
        assert!(0.57 * (fits - 1.0) <= OVERHEAD_SHARE * 179.0);
        // What calibration expected fits; so does twice it (the margin before a rerun).
        assert!(overhead_too_large(0.15, 15.3, 179.0, 20.0).is_none());
        assert!(overhead_too_large(0.37, 15.3, 179.0, 20.0).is_none());
        // In real time nothing is magnified.
        assert!(overhead_too_large(5.0, 1.0, 179.0, 20.0).is_none());
    }

    #[test]
    fn a_late_cell_runs_again_once_at_the_scale_its_measurements_allow() {
        // Only the per-request cost was too large: the scale that cost allows, even above half.
        assert_eq!(retry_scale(10.0, &[], Some(7.3)), 7.3);
        // The schedule was late: at most half, lower when a bound asks for it, never below 1x.
        assert_eq!(retry_scale(10.0, &[8.0], None), 5.0);
        assert_eq!(retry_scale(20.0, &[2.34], Some(9.0)), 2.3);
        assert_eq!(retry_scale(20.0, &[6.0, 12.0], Some(4.0)), 4.0);
        assert_eq!(retry_scale(1.5, &[0.2], None), 1.0);
    }

    #[test]
    fn the_schedule_bounds_a_run_missed_name_the_scales_that_meet_them_with_room() {
        let sim = bench_core::server_metrics::SimSchedule {
            time_scale: 20.0,
            steps: 1000.0,
            late_steps: 40.0,
            step_lateness_p99_ms: Some(3.0),
            events: 20_000.0,
            late_events: 500.0,
            event_lateness_p99_ms: Some(2.0),
            event_lateness_max_ms: Some(9.0),
            lost_seconds: 0.4,
            prompts_counted: 0.0,
            prompt_counting_mean_ms: None,
            stepped_windows: None,
            stepped_timeouts: None,
        };
        // 0.4 s lost of 10 s is 4% against 1%: a quarter of the scale, halved for room.
        // 2 ms late at P99 is 40 modelled ms at 20x against 20: 10x, halved for room.
        let misses: Vec<ScheduleMiss> = bench_core::judge::sim_schedule(&sim, 10.0).collect();
        let fits: Vec<f64> = misses.iter().map(scale_that_meets).collect();
        assert_eq!(fits, vec![2.5, 5.0]);
        let kept = bench_core::server_metrics::SimSchedule {
            lost_seconds: 0.05,
            event_lateness_p99_ms: Some(0.5),
            ..sim.clone()
        };
        assert_eq!(bench_core::judge::sim_schedule(&kept, 10.0).count(), 0);
    }

    #[test]
    fn the_turnaround_stays_within_half_the_shortest_step() {
        // A 24 ms step and 0.4 ms of turnaround: 24 / (2 * 0.4) = 30x, capped at 20.
        assert_eq!(turnaround_allows(24.0, 0.4, 20.0), 20.0);
        assert_eq!(turnaround_allows(24.0, 1.5, 20.0), 8.0);
        assert_eq!(turnaround_allows(24.0, 0.0, 20.0), 20.0);
        assert_eq!(turnaround_allows(24.0, 50.0, 20.0), 1.0);
    }

    #[tokio::test]
    async fn a_cell_paces_by_the_median_ttft_its_input_length_reached_at_a_lower_concurrency() {
        let sim = demo_at_most_20x().await;
        sim.measured.lock().expect("not poisoned").overhead_ms = 0.5;
        let cell = |input_len, concurrency| Cell {
            input_len,
            output_len: 128,
            concurrency,
            num_prompts: 10 * concurrency,
            num_warmups: 2 * concurrency,
            run: 1,
        };
        let lone = sim.timing.lone_ttft(819).as_secs_f64() * 1e3;
        let alone = scale_for(lone, 0.5, 20.0);
        assert_eq!(
            sim.pace(&cell(1024, 4), 0.2).expect("paced"),
            alone,
            "nothing measured yet"
        );
        sim.medians.lock().expect("not poisoned").extend([
            (1024, 1, 2.0 * lone),
            (1024, 4, 6.0 * lone),
            (4096, 4, 60.0 * lone),
        ]);
        // The largest concurrency below the cell's, at its own input length.
        assert_eq!(
            sim.pace(&cell(1024, 16), 0.2).expect("paced"),
            scale_for(6.0 * lone, 0.5, 20.0)
        );
        assert_eq!(
            sim.pace(&cell(1024, 4), 0.2).expect("paced"),
            scale_for(2.0 * lone, 0.5, 20.0)
        );
        assert_eq!(sim.pace(&cell(1024, 1), 0.2).expect("paced"), alone);
        assert_eq!(sim.handle.time_scale(), alone);
        // A measured median below the lone TTFT does not slow the cell down.
        sim.medians
            .lock()
            .expect("not poisoned")
            .push((1024, 2, 0.5 * lone));
        assert_eq!(sim.pace(&cell(1024, 4), 0.2).expect("paced"), alone);
        // The closed loop's turnaround caps the scale: half the shortest step.
        let step = sim.shortest_step_ms();
        sim.measured.lock().expect("not poisoned").turnaround_ms = step / 6.0;
        assert_eq!(sim.pace(&cell(1024, 16), 0.2).expect("paced"), 3.0);
        // A lone stream's next request finds the engine idle: its turnaround does not pace it.
        assert_eq!(sim.pace(&cell(1024, 1), 0.2).expect("paced"), alone);
        // A rerun's scale holds for the next cell only.
        *sim.retry_scale.lock().expect("not poisoned") = Some(1.5);
        assert_eq!(sim.pace(&cell(1024, 16), 0.2).expect("paced"), 1.5);
        assert_eq!(sim.pace(&cell(1024, 16), 0.2).expect("paced"), 3.0);
        sim.stop().await;
    }

    #[tokio::test]
    async fn a_slow_turnaround_reruns_a_cell_of_many_streams_and_never_a_lone_stream() {
        let sim = demo_at_most_20x().await;
        sim.handle.set_time_scale(20.0);
        let dir = tempfile::tempdir().expect("a temp dir");
        let tok = dir.path().join("tokenizer.json.gz");
        std::fs::write(&tok, TOKENIZER_GZ).expect("writing the tokenizer");
        let url = sim.handle.url().parse().expect("the simulator's URL");
        let mut config = RunConfig::new("m", &tok.display().to_string(), url);
        config.prompt.input_len = 64;
        config.output_len = 4;
        config.num_prompts = 3;
        config.max_concurrency = std::num::NonZeroUsize::new(1);
        let tokenizer = bench_core::load_tokenizer(&config)
            .await
            .expect("the demo tokenizer loads");
        let prepared = bench_core::prepare(&config, tokenizer)
            .await
            .expect("prompts");
        let stop = tokio_util::sync::CancellationToken::new();
        let mut report = bench_core::execute(
            &config,
            &prepared,
            &stop,
            bench_core::progress::ProgressMode::Off,
        )
        .await
        .expect("a run");
        let schedule = report
            .server
            .view
            .as_ref()
            .and_then(|v| v.sim.clone())
            .expect("the simulator reports its schedule");
        // A turnaround of a second is over any step at any scale.
        report.metrics.turnaround_ms = Some(bench_core::stats::Distribution::from_samples(
            &[1000.0, 1000.0],
            &[50.0, 99.0],
        ));
        let cell = |concurrency| Cell {
            input_len: 64,
            output_len: 4,
            concurrency,
            num_prompts: 3,
            num_warmups: 0,
            run: 1,
        };
        let (why, fits) = sim
            .turnaround_too_slow(&cell(4), &report, &schedule)
            .expect("four streams' requests join later steps");
        assert!(why.contains("1000.00 ms after one ended"), "{why}");
        assert_eq!(fits, 1.0);
        assert!(sim
            .turnaround_too_slow(&cell(1), &report, &schedule)
            .is_none());
        // Nor does a lone stream's turnaround pace the cells after it.
        sim.learn_from(&cell(1), &report);
        assert!(sim.measured().turnaround_ms < 1000.0);
        sim.learn_from(&cell(4), &report);
        assert!(sim.measured().turnaround_ms >= 1000.0);
        sim.stop().await;
    }

    #[test]
    fn the_largest_per_request_cost_and_the_latest_turnaround_pace_the_next_cell() {
        let mut m = Measured::default();
        m.update(Some(0.3), Some(0.7));
        // A noisy spell: both grow.
        m.update(Some(0.5), Some(8.2));
        assert_eq!((m.overhead_ms, m.turnaround_ms), (0.5, 8.2));
        // It passed: the turnaround follows the machine, the cost stays the largest.
        m.update(Some(0.35), Some(0.9));
        assert_eq!((m.overhead_ms, m.turnaround_ms), (0.5, 0.9));
        // A run without a closed loop to measure leaves the turnaround as it was.
        m.update(None, None);
        assert_eq!((m.overhead_ms, m.turnaround_ms), (0.5, 0.9));
    }
}
