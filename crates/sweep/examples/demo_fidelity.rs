//! Does the demo show its simulator's model on this machine? `just demo-fidelity`.
//!
//! Runs the `sweep --simulate` demo matrix once on the wall clock in real time (1x: the model's
//! own figures, and the client's real per-request cost) and then on each asked clock, on an idle
//! machine and with another process spinning on one core, and prints every cell's headline
//! figures (input and output tok/s, median TTFT and TPOT, all in modelled time) as their
//! difference from the 1x run, with the worst per column.
//!
//! ```text
//! cargo build --release -p sweep
//! cargo run --release -p sweep --example demo_fidelity -- [CLOCKS] [--reference DIR]
//! ```
//!
//! CLOCKS, comma-separated, defaults to `stepped` (the demo's default clock); a number is the
//! wall clock at most that many times faster than real time (`--sim-clock wall
//! --sim-time-scale N`). `--reference DIR` reuses a 1x run's result folder instead of running
//! one (it takes ~5 minutes). Each run's folder is printed, to open its charts.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// (input tok/s, output tok/s, median TTFT ms, median TPOT ms), modelled time.
type Figures = [f64; 4];
const COLUMNS: [&str; 4] = ["input tok/s", "output tok/s", "median TTFT", "median TPOT"];

/// The simulator's clock in a run.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Stepped,
    /// The wall clock, at most this many times faster than real time.
    Wall(f64),
}

impl Clock {
    fn parse(s: &str) -> Result<Self, String> {
        if s == "stepped" {
            return Ok(Self::Stepped);
        }
        s.parse::<f64>()
            .map(Self::Wall)
            .map_err(|e| format!("clock `{s}`: `stepped` or a time scale ({e})"))
    }

    fn label(self) -> String {
        match self {
            Self::Stepped => "stepped".into(),
            Self::Wall(scale) => format!("{scale}x"),
        }
    }

    fn args(self) -> Vec<String> {
        match self {
            Self::Stepped => vec!["--sim-clock".into(), "stepped".into()],
            Self::Wall(scale) => vec![
                "--sim-clock".into(),
                "wall".into(),
                "--sim-time-scale".into(),
                scale.to_string(),
            ],
        }
    }
}

fn main() -> Result<(), String> {
    let mut clocks = vec![Clock::Stepped];
    let mut reference = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reference" => reference = Some(PathBuf::from(args.next().ok_or("--reference DIR")?)),
            list => {
                clocks = list
                    .split(',')
                    .map(Clock::parse)
                    .collect::<Result<_, _>>()?
            }
        }
    }
    let sweep = sibling_binary("sweep")?;
    let work = std::env::temp_dir().join(format!("inferperf-demo-fidelity-{}", std::process::id()));
    let reference = match reference {
        Some(dir) => dir,
        None => run_demo(&sweep, &work.join("1x"), Clock::Wall(1.0), false)?,
    };
    let base = read_cells(&reference)?;
    println!("reference (1x): {}", reference.display());
    for &clock in &clocks {
        for loaded in [false, true] {
            let label = format!("{}{}", clock.label(), if loaded { "-loaded" } else { "" });
            let dir = run_demo(&sweep, &work.join(&label), clock, loaded)?;
            report(&label, &dir, &base, &read_cells(&dir)?);
        }
    }
    Ok(())
}

/// `target/release/sweep` beside this example's binary.
fn sibling_binary(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or("no target folder")?;
    let bin = dir.join(name);
    bin.is_file()
        .then_some(bin)
        .ok_or_else(|| format!("{name} is not built: cargo build --release -p {name}"))
}

/// Runs the demo into `dir`; with `loaded`, a process spins on one core meanwhile.
fn run_demo(sweep: &Path, dir: &Path, clock: Clock, loaded: bool) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(dir);
    let spinner = loaded.then(spin).transpose()?;
    let started = std::time::Instant::now();
    let label = clock.label();
    let out = Command::new(sweep)
        .args(["--simulate", "--disable-tqdm"])
        .args(clock.args())
        .arg("--results-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| e.to_string());
    if let Some(mut s) = spinner {
        let _ = s.kill();
        let _ = s.wait();
    }
    let out = out?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("sweep on {label} failed:\n{log}"));
    }
    for line in log
        .lines()
        .filter(|l| l.contains("warning") || l.contains("could not keep"))
    {
        eprintln!("  [{label}] {}", line.trim());
    }
    eprintln!(
        "ran the demo on {label}{} in {:.0} s",
        if loaded { " with one core loaded" } else { "" },
        started.elapsed().as_secs_f64()
    );
    Ok(dir.to_path_buf())
}

/// A process that keeps one core busy until killed.
fn spin() -> Result<Child, String> {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .map_err(|e| format!("cannot start the load: {e}"))
}

/// Every finished cell's figures in modelled time, by file name.
fn read_cells(dir: &Path) -> Result<BTreeMap<String, Figures>, String> {
    let mut cells = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("sim_tp") || name.contains(".attempt") || !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
        let scale = v["sim_time_scale"].as_f64().unwrap_or(1.0);
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  {name}: {:.1} in, {:.2} out tok/s, TTFT {:.1} ms, TPOT {:.2} ms (modelled)",
            f("input_throughput") / scale,
            f("output_throughput") / scale,
            f("median_ttft_ms") * scale,
            f("median_tpot_ms") * scale
        );
        cells.insert(
            name,
            [
                f("input_throughput") / scale,
                f("output_throughput") / scale,
                f("median_ttft_ms") * scale,
                f("median_tpot_ms") * scale,
            ],
        );
    }
    Ok(cells)
}

fn report(
    label: &str,
    dir: &Path,
    base: &BTreeMap<String, Figures>,
    run: &BTreeMap<String, Figures>,
) {
    println!("\n{label} ({}): difference from 1x", dir.display());
    println!(
        "{:<40} {:>12} {:>12} {:>12} {:>12}",
        "cell", COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3]
    );
    let mut worst = [0.0f64; 4];
    for (name, b) in base {
        let Some(r) = run.get(name) else {
            println!("{name:<40} missing");
            continue;
        };
        let d: Vec<f64> = (0..4).map(|i| (r[i] - b[i]) / b[i] * 100.0).collect();
        for i in 0..4 {
            worst[i] = worst[i].max(d[i].abs());
        }
        println!(
            "{:<40} {:>+11.1}% {:>+11.1}% {:>+11.1}% {:>+11.1}%",
            name.trim_end_matches(".json"),
            d[0],
            d[1],
            d[2],
            d[3]
        );
    }
    println!(
        "{:<40} {:>11.1}% {:>11.1}% {:>11.1}% {:>11.1}%",
        "worst |difference|", worst[0], worst[1], worst[2], worst[3]
    );
}
