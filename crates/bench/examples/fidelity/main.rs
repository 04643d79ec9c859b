//! The fidelity benchmark: how far `bench`'s numbers are from what the server actually did, and
//! what the client costs, at 1 to 2,000 concurrent streams.
//!
//! `just fidelity`, or:
//!   cargo build --release -p bench -p bench-sim
//!   cargo run --release -p bench --example fidelity -- [LEVELS] [--flood] [--runs N]
//!     [--transport standard]
//!
//! For each level it starts `bench-sim` (fixed timing: TTFT 50 ms, a token every 10 ms, 100 tokens)
//! and runs `bench` against it with every request at once and as many warm-up requests first (to
//! open the connections), each process pinned to its own core when `taskset` exists and at
//! niceness -10 when that is allowed (see `Placement`). Both log
//! CLOCK_MONOTONIC nanoseconds: the simulator when it handed each event to the connection, the
//! client the time it gave the event (`--save-events`). Requests are matched by `x-request-id`.
//!
//! Printed per level:
//! - TTFT error: client's first event time minus the simulator's first write (mean, P99);
//! - ITL error: |client gap - simulator gap| per event pair (mean, P99);
//! - TPOT: client's mean TPOT over the simulator's, as a ratio;
//! - client CPU seconds per 100,000 events, and the floor: the same for a minimal epoll reader of
//!   the same streams that parses nothing (run in this example's own process, pinned the same);
//! - peak RSS; read wait: P99 of how long arrived data waited for `bench` to read it (how late
//!   read-time stamps would have been); shared: the share of output events read together with the
//!   next one of their stream (and so timed by it); and the simulator's lateness against its own
//!   plan (P99 of write time minus due time): if the simulator fell behind, it wrote in bursts.
//!
//! `--flood` adds a run with no gaps (tokens as fast as the simulator writes them): the client's
//! ceiling in events per CPU-second. `--runs N` runs every level N times and prints medians (and
//! the client's CPU over the floor's as a ratio), with the worst ITL P99 error of the N.
//! `--floor-wake-us N` makes the floor reader sleep so that it wakes at most once every N
//! microseconds, reading every socket that became ready meanwhile: what batching the reads would
//! save (it changes nothing in `bench`). `--keep DIR` keeps the simulator's and the client's logs
//! and the result of every run whose ITL P99 error is over 1 ms, one folder per run.

use placement::Placement;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod floor;
mod placement;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, addr, streams, tokens, wake_us] = &args[..] {
        if mode == "--floor-reader" {
            let wake = Duration::from_micros(wake_us.parse()?);
            let per_100k = floor::run(addr.parse()?, streams.parse()?, tokens.parse()?, wake)?;
            println!("{per_100k}");
            return Ok(());
        }
    }
    let options = Options::parse(&args)?;
    let bins = bin_dir()?;
    let work = tempfile::tempdir()?;
    let pin = Placement::here();
    println!(
        "fidelity: bench (--transport {}) and bench-sim from {} ({}); {}",
        options.transport,
        bins.display(),
        pin.describe(),
        if options.runs > 1 {
            format!("medians of {} runs per level", options.runs)
        } else {
            "one run per level".into()
        }
    );
    print_header();
    for &n in &options.levels {
        let rows = (0..options.runs)
            .map(|_| level(&bins, work.path(), n, (50, 10, 100), &options, &pin))
            .collect::<Result<Vec<_>>>()?;
        print_level(n, &rows);
    }
    println!(
        "floor: a minimal epoll reader of the same streams that parses nothing; ratio: CPU over \
         floor; read wait: P99 of how long arrived data waited for bench to read it (how late \
         read-time stamps would be); shared: output events read together with the next of their \
         stream (timed by it); sim late: P99 of the simulator's writes against its own plan; \
         worst P99: the largest ITL P99 error of the runs; > 1 ms: runs whose ITL P99 error was \
         over 1 ms"
    );
    if !options.floor_wake.is_zero() {
        println!(
            "the floor reader slept so as to wake at most once every {} us",
            options.floor_wake.as_micros()
        );
    }
    if options.flood {
        let rows = (0..options.runs)
            .map(|_| level(&bins, work.path(), 100, (0, 0, 5000), &options, &pin))
            .collect::<Result<Vec<_>>>()?;
        let cpu = median(rows.iter().map(|r| r.cpu_per_100k).collect());
        let floor = median(rows.iter().map(|r| r.floor_per_100k).collect());
        println!(
            "flood: 100 streams x 5000 tokens with no gaps: {:.0} events per client CPU-second \
             ({cpu:.3} CPU s per 100k events; floor {floor:.3}, ratio {:.2}x)",
            1e5 / cpu.max(1e-9),
            cpu / floor
        );
    }
    Ok(())
}

/// What to run: `[LEVELS] [--flood] [--runs N] [--floor-wake-us N] [--keep DIR]
/// [--transport native|standard]`.
struct Options {
    /// `bench --transport`.
    transport: String,
    levels: Vec<usize>,
    flood: bool,
    runs: usize,
    /// The floor reader wakes at most once per this interval (zero: whenever data arrives).
    floor_wake: Duration,
    /// Where to keep the logs of runs whose ITL P99 error is over 1 ms.
    keep: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            transport: "native".into(),
            levels: vec![1, 10, 100, 500, 1000, 2000],
            flood: false,
            runs: 1,
            floor_wake: Duration::ZERO,
            keep: None,
        };
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            match a.as_str() {
                "--flood" => options.flood = true,
                "--runs" => {
                    let n = rest.next().ok_or("--runs needs a count")?;
                    options.runs = n
                        .parse()
                        .map_err(|_| format!("--runs: `{n}` is not a count"))?;
                    options.runs = options.runs.max(1);
                }
                "--floor-wake-us" => {
                    let n = rest.next().ok_or("--floor-wake-us needs microseconds")?;
                    let us = n
                        .parse()
                        .map_err(|_| format!("--floor-wake-us: `{n}` is not microseconds"))?;
                    options.floor_wake = Duration::from_micros(us);
                }
                "--transport" => {
                    let t = rest.next().ok_or("--transport needs native or standard")?;
                    if !matches!(t.as_str(), "native" | "standard") {
                        return Err(format!("--transport: `{t}` is not native or standard").into());
                    }
                    options.transport.clone_from(t);
                }
                "--keep" => options.keep = Some(rest.next().ok_or("--keep needs a folder")?.into()),
                levels => {
                    options.levels = levels
                        .split(',')
                        .map(str::parse)
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|_| format!("`{levels}` is not a list of stream counts"))?;
                }
            }
        }
        Ok(options)
    }
}

fn print_header() {
    println!(
        "{:>7} | {:>9} {:>9} | {:>9} {:>9} | {:>9} | {:>10} {:>7} {:>6} | {:>7} | {:>10} {:>7} | {:>10} | {:>9} {:>7}",
        "streams",
        "TTFT err",
        "P99",
        "ITL err",
        "P99",
        "TPOT",
        "CPU s/100k",
        "floor",
        "ratio",
        "RSS MB",
        "read wait",
        "shared",
        "sim late",
        "worst P99",
        "> 1 ms"
    );
}

/// One level's medians over its runs, the worst ITL P99 error among them, and how many runs' P99
/// was over 1 ms.
fn print_level(n: usize, rows: &[Row]) {
    let m = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
    let worst = rows.iter().map(|r| r.itl_p99).fold(0.0, f64::max);
    let over = rows.iter().filter(|r| r.itl_p99 > 1.0).count();
    println!(
        "{:>7} | {:>7.3}ms {:>7.3}ms | {:>7.3}ms {:>7.3}ms | {:>8.4}x | {:>10.3} {:>7.3} {:>5.2}x | {:>7.1} | {:>10} {:>6.2}% | {:>8.3}ms | {:>7.3}ms {:>7}",
        n,
        m(|r| r.ttft_mean),
        m(|r| r.ttft_p99),
        m(|r| r.itl_mean),
        m(|r| r.itl_p99),
        m(|r| r.tpot_ratio),
        m(|r| r.cpu_per_100k),
        m(|r| r.floor_per_100k),
        m(|r| r.cpu_per_100k / r.floor_per_100k),
        m(|r| r.rss_mb),
        // Only kernel-stamped reads know how long their data waited.
        Some(m(|r| r.read_wait_p99))
            .filter(|w| w.is_finite())
            .map_or_else(|| "n/a".into(), |w| format!("{w:.3}ms")),
        m(|r| r.shared_pct),
        m(|r| r.sim_late_p99),
        worst,
        format!("{over}/{}", rows.len())
    );
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// target/release, where `cargo build --release` put the binaries.
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target folder")?
        .to_path_buf();
    for b in ["bench", "bench-sim"] {
        if !dir.join(b).is_file() {
            return Err(format!(
                "{} is missing: run cargo build --release -p bench -p bench-sim",
                dir.join(b).display()
            )
            .into());
        }
    }
    Ok(dir)
}

struct Row {
    ttft_mean: f64,
    ttft_p99: f64,
    itl_mean: f64,
    itl_p99: f64,
    tpot_ratio: f64,
    cpu_per_100k: f64,
    floor_per_100k: f64,
    read_wait_p99: f64,
    shared_pct: f64,
    rss_mb: f64,
    sim_late_p99: f64,
}

/// One run at `streams` concurrent streams of `tokens` tokens, the first after `ttft` ms and the
/// rest every `itl` ms.
fn level(
    bins: &Path,
    work: &Path,
    streams: usize,
    (ttft, itl, tokens): (u64, u64, u64),
    options: &Options,
    pin: &Placement,
) -> Result<Row> {
    let info = work.join(format!("info-{streams}-{itl}"));
    let truth = work.join(format!("truth-{streams}-{itl}.jsonl"));
    let events = work.join(format!("events-{streams}-{itl}.jsonl"));
    let result = work.join(format!("result-{streams}-{itl}.json"));
    let tokenizer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenizers/deepseek-v4");
    let (mut sim, url) = start_sim(&bins.join("bench-sim"), &info, &truth, (ttft, itl), pin)?;
    let n = streams.to_string();
    let status = pin
        .command(0, &bins.join("bench"))
        .args([
            "--model",
            "m",
            "--base-url",
            &url,
            "--random-input-len",
            "128",
        ])
        .arg("--tokenizer")
        .arg(&tokenizer)
        .args([
            "--random-output-len",
            &tokens.to_string(),
            "--num-prompts",
            &n,
            "--max-concurrency",
            &n,
        ])
        .args([
            "--num-warmups",
            &n,
            "--ignore-eos",
            "--disable-tqdm",
            "--transport",
            &options.transport,
            "--result-filepath",
        ])
        .arg(&result)
        .arg("--save-events")
        .arg(&events)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    // The floor reader runs against the same simulator once bench is done; its requests carry no
    // request id, so the comparison below ignores them.
    let floor = pin
        .command(0, &std::env::current_exe()?)
        .arg("--floor-reader")
        .arg(url.trim_start_matches("http://"))
        .args([n.as_str(), &tokens.to_string()])
        .arg(options.floor_wake.as_micros().to_string())
        .stderr(Stdio::inherit())
        .output();
    Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status()?;
    sim.wait()?;
    if !status.success() {
        return Err(format!("bench failed at {streams} streams: {status}").into());
    }
    let floor = floor?;
    if !floor.status.success() {
        return Err(format!("the floor reader failed at {streams} streams").into());
    }
    let mut row = compare(&truth, &events, &result)?;
    row.floor_per_100k = String::from_utf8_lossy(&floor.stdout).trim().parse()?;
    if let Some(dir) = options.keep.as_deref().filter(|_| row.itl_p99 > 1.0) {
        keep(dir, streams, [&truth, &events, &result])?;
    }
    Ok(row)
}

/// Copies a run's logs into `dir`, under a name no earlier run took.
fn keep(dir: &Path, streams: usize, files: [&Path; 3]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let run = (1..)
        .find(|i| !dir.join(format!("{streams}-{i}")).exists())
        .unwrap_or(0);
    let to = dir.join(format!("{streams}-{run}"));
    std::fs::create_dir(&to)?;
    for f in files {
        std::fs::copy(f, to.join(f.file_name().ok_or("a log without a name")?))?;
    }
    eprintln!(
        "kept a run whose ITL P99 error was over 1 ms: {}",
        to.display()
    );
    Ok(())
}

/// Starts `bench-sim` with fixed timing (`ttft`, `itl` in ms) logging its truth to `truth`, and
/// returns it with its URL once it has written `info`.
fn start_sim(
    program: &Path,
    info: &Path,
    truth: &Path,
    (ttft, itl): (u64, u64),
    pin: &Placement,
) -> Result<(Child, String)> {
    let mut sim: Child = pin
        .command(1, program)
        .args([
            "--port",
            "0",
            "--preset",
            "fixed",
            "--served-model-name",
            "m",
        ])
        .args(["--ttft-ms", &ttft.to_string(), "--itl-ms", &itl.to_string()])
        .arg("--truth-jsonl")
        .arg(truth)
        .arg("--server-info")
        .arg(info)
        .stderr(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    while !info.is_file() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = sim.kill();
            return Err("bench-sim did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = std::fs::read_to_string(info)?.trim().to_string();
    Ok((sim, url))
}

fn lines(path: &Path) -> Result<Vec<Value>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?)
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn compare(truth: &Path, events: &Path, result: &Path) -> Result<Row> {
    let sim: HashMap<String, Value> = lines(truth)?
        .into_iter()
        .filter_map(|t| Some((t["request_id"].as_str()?.to_string(), t)))
        .collect();
    let (mut ttft_err, mut itl_err, mut late) = (Vec::new(), Vec::new(), Vec::new());
    let (mut client_decode, mut sim_decode) = (0.0, 0.0);
    for c in lines(events)? {
        let id = c["request_id"].as_str().ok_or("no request_id")?;
        let t = sim
            .get(id)
            .ok_or_else(|| format!("{id} is not in the simulator's log"))?;
        let read = u64s(&c["event_ns"]);
        // Output events only: the simulator logs 0-token events (role, usage) too.
        let tokens = u64s(&t["event_tokens"]);
        let written: Vec<u64> = u64s(&t["event_sent_ns"])
            .into_iter()
            .zip(&tokens)
            .filter(|(_, k)| **k > 0)
            .map(|(w, _)| w)
            .collect();
        if read.len() != written.len() || read.is_empty() {
            return Err(format!(
                "{id}: client read {} events, simulator wrote {}",
                read.len(),
                written.len()
            )
            .into());
        }
        ttft_err.push((read[0] as f64 - written[0] as f64) / 1e6);
        for i in 1..read.len() {
            let gap_c = read[i] as f64 - read[i - 1] as f64;
            let gap_s = written[i] as f64 - written[i - 1] as f64;
            itl_err.push((gap_c - gap_s).abs() / 1e6);
        }
        client_decode += (read[read.len() - 1] - read[0]) as f64;
        sim_decode += (written[written.len() - 1] - written[0]) as f64;
        for (w, d) in written.iter().zip(u64s(&t["token_due_ns"])) {
            late.push(w.saturating_sub(d) as f64 / 1e6);
        }
    }
    let r: Value = serde_json::from_slice(&std::fs::read(result)?)?;
    Ok(Row {
        ttft_mean: mean(&ttft_err),
        ttft_p99: p99(&mut ttft_err),
        itl_mean: mean(&itl_err),
        itl_p99: p99(&mut itl_err),
        tpot_ratio: if sim_decode > 0.0 {
            client_decode / sim_decode
        } else {
            1.0
        },
        cpu_per_100k: r["client"]["cpu_seconds_per_100k_events"]
            .as_f64()
            .unwrap_or(f64::NAN),
        floor_per_100k: f64::NAN,
        read_wait_p99: r["client"]["read_wait_p99_ms"].as_f64().unwrap_or(f64::NAN),
        shared_pct: r["output"]["events_sharing_a_read"]
            .as_f64()
            .unwrap_or(f64::NAN)
            / r["output"]["events"].as_f64().unwrap_or(f64::NAN)
            * 100.0,
        rss_mb: r["client"]["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
        sim_late_p99: p99(&mut late),
    })
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let h = 0.99 * (v.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (h - h.floor())
}
