//! How long `plot` takes for a folder of 25 result files (5 input lengths x 5 concurrencies),
//! every chart kind: the median of 7 rounds, each kind drawn to PNG and to SVG.
//!
//!   cargo run --release -p plot --example render_speed
//!
//! The files are copies of a real inferperf result with their figures scaled per cell, so the
//! charts have the shape of a real sweep.

use std::path::Path;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let template: serde_json::Value = serde_json::from_slice(&std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/results/inferperf/sim_tp4_isl1024_osl128_conc4.json"),
    )?)?;
    for (i, isl) in [1024u64, 2048, 4096, 8192, 16384].into_iter().enumerate() {
        for (j, conc) in [1u64, 2, 4, 8, 16].into_iter().enumerate() {
            let mut v = template.clone();
            let scale = (1.0 + i as f64) * (1.0 + j as f64).sqrt();
            for key in [
                "input_throughput",
                "output_throughput",
                "total_token_throughput",
            ] {
                if let Some(x) = v[key].as_f64() {
                    v[key] = (x * scale).into();
                }
            }
            v["config"]["prompt"]["input_len"] = isl.into();
            v["config"]["max_concurrency"] = conc.into();
            let name = format!("speed_tp4_isl{isl}_osl128_conc{conc}.json");
            std::fs::write(dir.path().join(name), serde_json::to_vec(&v)?)?;
        }
    }
    let out = dir.path().join("charts");
    for ext in ["png", "svg"] {
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let started = Instant::now();
                let options = plot::Options {
                    results_dir: dir.path().to_path_buf(),
                    output: Some(out.join(format!("chart.{ext}"))),
                    kind: plot::Kind::All,
                    ..plot::Options::default()
                };
                plot::draw(&options).map(|_| started.elapsed())
            })
            .collect::<anyhow::Result<_>>()?;
        times.sort();
        println!(
            "25 files, 4 charts, {ext}: median {:.0} ms (min {:.0}, max {:.0}) over 7 rounds",
            times[3].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[6].as_secs_f64() * 1e3
        );
    }
    Ok(())
}
