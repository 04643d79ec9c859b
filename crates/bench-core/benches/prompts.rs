//! Prompt building speed: 640 prompts of 14,000 tokens with the 128k-vocabulary fixture tokenizer,
//! the largest cell of the default sweep. Prints the median of several builds.
//!
//! `cargo bench -p bench-core --bench prompts` (set PROMPT_BENCH_RUNS to change the count).

use bench_core::prompt::{build, PromptRole, PromptSpec};
use bench_core::tokenizer::PromptTokenizer;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenizers/deepseek-v4");
    let tokenizer = PromptTokenizer::from_path(&dir)?;
    let runs: usize = std::env::var("PROMPT_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let spec = PromptSpec {
        input_len: 14_000,
        range_ratio: 0.0,
        prefix_len: 0,
        seed: 0,
        seed_origin: bench_core::prompt::SeedOrigin::Given(0),
    };
    let mut seconds = Vec::new();
    for run in 0..runs {
        let spec = PromptSpec {
            seed: run as u64,
            ..spec.clone()
        };
        let (prompts, stats) = build(&tokenizer, &spec, PromptRole::Measured, 640)?;
        assert_eq!(prompts.len(), 640);
        println!(
            "run {run}: {:.3} s, {} missed, {} verified by full re-encode",
            stats.build_seconds, stats.missed, stats.verified_by_reencoding
        );
        seconds.push(stats.build_seconds);
    }
    seconds.sort_by(f64::total_cmp);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "640 x 14000-token prompts: median {:.3} s over {runs} runs on {cores} cores (min {:.3}, max {:.3})",
        seconds[seconds.len() / 2],
        seconds[0],
        seconds[seconds.len() - 1]
    );
    Ok(())
}
