//! The `bench-sim` command: its flags, their validation into a [`SimConfig`], and the serve loop
//! (the server-info file written once ready and removed at the end, SIGINT and SIGTERM). The
//! binary's `main` only calls [`main`].

use crate::fault::Faults;
use crate::timing::{self, Timing, PRESETS};
use crate::{SimConfig, Simulator};
use anyhow::Context;
use clap::Parser;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// An OpenAI-compatible server that simulates vLLM's timing under load (no GPU, no model).
#[derive(Debug, Parser)]
#[command(name = "bench-sim", version, about)]
pub struct Cli {
    /// Address or host name to listen on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Model name requests must use (as vLLM's --served-model-name).
    #[arg(long, default_value = "default")]
    served_model_name: String,
    /// Longest prompt plus output, in tokens.
    #[arg(long, default_value_t = 65_536)]
    max_model_len: u64,
    /// Timing preset: minimax-m2-tp4, minimax-m2-tp8, small-tp1 or fixed.
    #[arg(long, default_value = "minimax-m2-tp4")]
    preset: String,
    /// Override the preset's tensor-parallel size (scales the step's compute).
    #[arg(long)]
    tp: Option<u32>,
    /// With --preset fixed: time to first token in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    ttft_ms: f64,
    /// With --preset fixed: gap between tokens in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    itl_ms: f64,
    /// Run the schedule this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Seed for faults and simulated end-of-sequence.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// tokenizer.json (or folder, or .json.gz) to count prompt tokens exactly; without it they
    /// are estimated at 4 bytes per token.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Write http://HOST:PORT to this file once ready; removed on exit.
    #[arg(long)]
    server_info: Option<PathBuf>,
    /// Append every request's timeline to this JSONL file.
    #[arg(long)]
    truth_jsonl: Option<PathBuf>,
    /// Answer /health with 503 for this many seconds after start.
    #[arg(long, default_value_t = 0.0)]
    slow_start_s: f64,
    /// Cut every stream and go down after this many seconds (a scripted restart).
    #[arg(long)]
    restart_after_s: Option<f64>,
    /// How long a scripted restart keeps the server down, in seconds.
    #[arg(long, default_value_t = 2.0)]
    restart_downtime_s: f64,
    /// Fault rate: reply HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    fault_http_500: f64,
    /// Fault rate: an error event mid-stream.
    #[arg(long, default_value_t = 0.0)]
    fault_error_event: f64,
    /// Fault rate: cut the connection mid-stream.
    #[arg(long, default_value_t = 0.0)]
    fault_cut: f64,
    /// Fault rate: one malformed event mid-stream.
    #[arg(long, default_value_t = 0.0)]
    fault_malformed: f64,
    /// Fault rate: stall once mid-stream for --stall-s seconds.
    #[arg(long, default_value_t = 0.0)]
    fault_stall: f64,
    /// Length of a stall, in seconds.
    #[arg(long, default_value_t = 5.0)]
    stall_s: f64,
    /// Fault rate: no usage event.
    #[arg(long, default_value_t = 0.0)]
    fault_no_usage: f64,
    /// Fault rate: several tokens per event (--tokens-per-event).
    #[arg(long, default_value_t = 0.0)]
    fault_multi_token: f64,
    /// Tokens per event when grouping.
    #[arg(long, default_value_t = 2)]
    tokens_per_event: u32,
    /// Without ignore_eos: the chance a request stops early.
    #[arg(long, default_value_t = 0.5)]
    early_eos: f64,
    /// Liberty rate: the last token's event carries no finish_reason.
    #[arg(long, default_value_t = 0.0)]
    liberty_no_finish_reason: f64,
    /// Liberty rate: stop early even under ignore_eos (silently shortened output).
    #[arg(long, default_value_t = 0.0)]
    liberty_shorten: f64,
    /// Liberty rate: one more token event after [DONE].
    #[arg(long, default_value_t = 0.0)]
    liberty_event_after_done: f64,
    /// Liberty rate: usage.prompt_tokens one more than counted.
    #[arg(long, default_value_t = 0.0)]
    liberty_prompt_miscount: f64,
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v >= 0.0,
        "{flag}: must be 0 or more seconds, got {v}"
    );
    Ok(Duration::from_secs_f64(v))
}

fn rate(flag: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "{flag}: a rate must be in [0, 1], got {v}"
    );
    Ok(v)
}

impl Cli {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let mut timing = timing::preset(&self.preset).with_context(|| {
            format!(
                "--preset: unknown preset `{}`; use one of {}",
                self.preset,
                PRESETS.join(", ")
            )
        })?;
        match &mut timing {
            Timing::Batching(p) => {
                if let Some(tp) = self.tp {
                    anyhow::ensure!(tp > 0, "--tp: must be at least 1");
                    p.tp = tp;
                }
            }
            Timing::Fixed { ttft, itl } => {
                *ttft = Duration::from_secs_f64(self.ttft_ms.max(0.0) / 1e3);
                *itl = Duration::from_secs_f64(self.itl_ms.max(0.0) / 1e3);
            }
        }
        anyhow::ensure!(
            self.time_scale.is_finite() && self.time_scale > 0.0,
            "--time-scale: must be above 0, got {}",
            self.time_scale
        );
        Ok(SimConfig {
            served_model_name: self.served_model_name.clone(),
            max_model_len: self.max_model_len,
            timing,
            time_scale: self.time_scale,
            seed: self.seed,
            faults: Faults {
                http_500: rate("--fault-http-500", self.fault_http_500)?,
                error_event: rate("--fault-error-event", self.fault_error_event)?,
                cut: rate("--fault-cut", self.fault_cut)?,
                malformed: rate("--fault-malformed", self.fault_malformed)?,
                stall: rate("--fault-stall", self.fault_stall)?,
                stall_for: seconds("--stall-s", self.stall_s)?,
                no_usage: rate("--fault-no-usage", self.fault_no_usage)?,
                multi_token: rate("--fault-multi-token", self.fault_multi_token)?,
                tokens_per_event: self.tokens_per_event,
                early_eos: rate("--early-eos", self.early_eos)?,
                liberties: crate::fault::Liberties {
                    no_finish_reason: rate(
                        "--liberty-no-finish-reason",
                        self.liberty_no_finish_reason,
                    )?,
                    shorten: rate("--liberty-shorten", self.liberty_shorten)?,
                    event_after_done: rate(
                        "--liberty-event-after-done",
                        self.liberty_event_after_done,
                    )?,
                    prompt_miscount: rate(
                        "--liberty-prompt-miscount",
                        self.liberty_prompt_miscount,
                    )?,
                },
            },
            tokenizer: self.tokenizer.clone(),
            slow_start: seconds("--slow-start-s", self.slow_start_s)?,
            restart_after: self
                .restart_after_s
                .map(|s| seconds("--restart-after-s", s))
                .transpose()?,
            restart_downtime: seconds("--restart-downtime-s", self.restart_downtime_s)?,
            truth_jsonl: self.truth_jsonl.clone(),
            stepped_clock: false,
        })
    }
}

/// Parses the flags, serves until SIGINT or SIGTERM, and returns the exit code: 2 for a flag
/// that cannot be used, 1 when the server cannot start, 0 after a clean stop.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let checked = cli
        .config()
        .and_then(|c| Ok((c, resolve(&cli.host, cli.port)?)));
    let (config, addr) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(&cli, config, addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(cli: &Cli, config: SimConfig, addr: SocketAddr) -> anyhow::Result<()> {
    let slow_start = config.slow_start;
    let handle = Simulator::start(config, addr).await?;
    let url = advertised_url(addr, handle.addr.port());
    eprintln!(
        "bench-sim listening on {} (preset {}, time scale {})",
        handle.url(),
        cli.preset,
        cli.time_scale
    );
    let mut info_written = false;
    let ready = tokio::time::sleep(slow_start);
    tokio::pin!(ready);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut ready, if !info_written => {
                if let Some(path) = &cli.server_info {
                    write_server_info(path, &url)?;
                    eprintln!("ready: wrote {url} to {}", path.display());
                }
                info_written = true;
            }
            () = &mut signal => break,
        }
    }
    if let Some(path) = cli.server_info.as_ref().filter(|_| info_written) {
        let _ = std::fs::remove_file(path);
    }
    handle.stop().await;
    Ok(())
}

/// `--host` (an address or a name) and `--port` as the address to listen on.
fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("--host {host}: not an address or a name this machine resolves"))?
        .next()
        .with_context(|| format!("--host {host}: resolves to no address"))
}

/// The URL other machines should use: the host name when listening on every interface.
fn advertised_url(addr: SocketAddr, port: u16) -> String {
    let host = addr.ip();
    if host.is_unspecified() {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("http://{name}:{port}")
    } else {
        format!("http://{}", SocketAddr::new(host, port))
    }
}

/// Writes the URL atomically: a sweep polling the file never reads half of it.
fn write_server_info(path: &Path, url: &str) -> anyhow::Result<()> {
    bench_result::atomic::write(path, format!("{url}\n").as_bytes())
        .with_context(|| format!("writing --server-info {}", path.display()))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
