//! `bench`'s flags: every flag a run shares with `sweep` ([`CommonArgs`]), plus the shape of
//! the one run, named as the Python `benchmark_serving_random.py` script names them.

use bench_cli::{CommonArgs, Shape};
use clap::Parser;
use std::path::PathBuf;

/// `bench`: one benchmark run against an OpenAI-compatible server.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench", version, about, long_about = None)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Mean prompt length in tokens, as the server counts them.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true)]
    pub random_input_len: i64,

    /// Output tokens per request (max_tokens).
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    pub random_output_len: i64,

    /// Measured requests.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    pub num_prompts: i64,

    /// Most requests in flight at once [default: no limit].
    #[arg(long, allow_negative_numbers = true)]
    pub max_concurrency: Option<i64>,

    /// Warm-up requests before measuring, at the same concurrency, with their own prompts.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub num_warmups: i64,

    /// Where to write the result JSON [default: ./inferperf-YYYYMMDD-HHMMSS.json, the start time].
    #[arg(long)]
    pub result_filepath: Option<PathBuf>,

    /// Repeat the run this many times, each with its own prompts (so no run finds another's in
    /// a prefix cache): one result file per run (`NAME.run2.json`, ...; the first is NAME.json),
    /// then each headline figure as a mean with its 95% confidence interval over the runs.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub num_runs: i64,

    /// Also write every measured request's raw timestamps (CLOCK_MONOTONIC ns) as JSON lines, to
    /// set against a server's own log (the fidelity benchmark does).
    #[arg(long, value_name = "PATH")]
    pub save_events: Option<PathBuf>,
}

impl BenchArgs {
    pub fn shape(&self) -> Shape {
        Shape {
            input_len: self.random_input_len,
            output_len: self.random_output_len,
            num_prompts: self.num_prompts,
            max_concurrency: self.max_concurrency,
            num_warmups: self.num_warmups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bench_cli::UsageError;
    use bench_core::config::{RequestRate, RunConfig};
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<RunConfig, UsageError> {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        let a = BenchArgs::try_parse_from(all).expect("clap accepts it");
        a.common.to_config(a.shape())
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&["--model", "m"]).expect("valid");
        assert_eq!(c.tokenizer, "m");
        assert_eq!(c.base_url.as_str(), "http://127.0.0.1:8000");
        assert_eq!(c.request_rate, RequestRate::Infinite);
        assert_eq!(c.percentiles, vec![50.0, 90.0, 95.0, 99.0]);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--random-input-len", "-5"], "--random-input-len"),
            (&["--random-output-len", "0"], "--random-output-len"),
            (&["--random-range-ratio", "1"], "--random-range-ratio"),
            (&["--random-range-ratio", "-0.1"], "--random-range-ratio"),
            (&["--max-concurrency", "0"], "--max-concurrency"),
            (&["--base-url", "not a url"], "--base-url"),
            (&["--base-url", "ftp://x"], "--base-url"),
            (&["--endpoint", "/v1/embeddings"], "--endpoint"),
            (&["--request-rate", "fast"], "--request-rate"),
            (&["--request-rate", "-1"], "--request-rate"),
            (&["--goodput", "ttft=5"], "--goodput"),
            (&["--goodput", "latency:5"], "--goodput"),
            (&["--metadata", "novalue"], "--metadata"),
            (&["--percentiles", "50,101"], "--percentiles"),
            (&["--request-timeout", "soon"], "--request-timeout"),
            (&["--burstiness", "0"], "--burstiness"),
            (&["--num-warmups", "-1"], "--num-warmups"),
        ];
        for (args, flag) in cases {
            let err = parse(args).expect_err("must be refused");
            assert_eq!(err.flag, *flag, "{args:?}: {err}");
        }
    }

    #[test]
    fn goodput_metadata_and_rates_parse() {
        let c = parse(&[
            "--goodput",
            "ttft:500",
            "tpot:50",
            "--metadata",
            "tp=4",
            "note=a=b",
            "--request-rate",
            "2.5",
            "--request-timeout",
            "90s",
        ])
        .expect("valid");
        assert_eq!(c.goodput.ttft_ms, Some(500.0));
        assert_eq!(c.goodput.tpot_ms, Some(50.0));
        assert_eq!(c.goodput.e2el_ms, None);
        assert_eq!(c.metadata[1], ("note".to_string(), "a=b".to_string()));
        assert_eq!(c.request_rate, RequestRate::PerSecond(2.5));
        assert_eq!(c.request_timeout, Duration::from_secs(90));
        assert_eq!(c.tp, 4, "tp comes from metadata when --tp is not given");
        assert_eq!(
            parse(&["--tp", "8", "--metadata", "tp=4"])
                .expect_err("conflict")
                .flag,
            "--tp"
        );
        assert_eq!(parse(&["--tp", "0"]).expect_err("zero").flag, "--tp");
    }
}
