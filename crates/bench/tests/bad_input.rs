//! Every bad input `bench` can be given, one row each (docs/reliability.md lists them): the
//! message names the problem and the flag, the exit code is 2, nothing is sent and no result
//! file is written.

mod support;

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;
use support::tokenizer_dir;

/// One bad input: the flags that replace the good ones, and what the message must say.
struct Row {
    name: &'static str,
    args: Vec<String>,
    says: &'static [&'static str],
}

fn row(name: &'static str, args: &[&str], says: &'static [&'static str]) -> Row {
    Row {
        name,
        args: args.iter().map(|a| (*a).to_string()).collect(),
        says,
    }
}

/// Files the rows point at, in `dir`.
fn fixtures(dir: &Path) -> (String, String, String, String) {
    let empty = dir.join("empty.json");
    std::fs::write(&empty, "").expect("write");
    let not_tokenizer = dir.join("result.json");
    std::fs::write(&not_tokenizer, r#"{"date": "x", "completed": 3}"#).expect("write");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a certificate").expect("write");
    let file = dir.join("a-file");
    std::fs::write(&file, "x").expect("write");
    let s = |p: std::path::PathBuf| p.display().to_string();
    (s(empty), s(not_tokenizer), s(text), s(file))
}

#[rustfmt::skip] // A table: one row per line.
fn rows(dir: &Path) -> Vec<Row> {
    let (empty, not_tokenizer, text, file) = fixtures(dir);
    let under_file = format!("{file}/r.json");
    let folder = dir.display().to_string();
    // The rows' strings must outlive the `row` calls: leak them, this is a test.
    let s = |v: String| -> &'static str { Box::leak(v.into_boxed_str()) };
    vec![
        row("URL without a scheme", &["--base-url", "localhost:8000"], &["--base-url", "http:// or https://"]),
        row("URL of another scheme", &["--base-url", "ftp://host"], &["--base-url", "`ftp://host`"]),
        row("URL without a host", &["--base-url", "http://"], &["--base-url"]),
        row("no prompts", &["--num-prompts", "0"], &["--num-prompts", "at least 1, got 0"]),
        row("prompts not a number", &["--num-prompts", "ten"], &["--num-prompts", "'ten'"]),
        row("prompts past 64 bits", &["--num-prompts", "99999999999999999999"], &["--num-prompts", "too large"]),
        row("negative length", &["--random-input-len", "-64"], &["--random-input-len", "got -64"]),
        row("length no model has", &["--random-input-len", "100000000"], &["--random-input-len", "at most 4194304"]),
        row("output no model has", &["--random-output-len", "5000000"], &["--random-output-len", "at most 4194304"]),
        row("prompts too many to hold", &["--num-prompts", "100000", "--random-input-len", "100000"], &["--num-prompts", "GiB in memory"]),
        row("warm-up of no tokens", &["--warmup-output-len", "0"], &["--warmup-output-len", "at least 1, got 0"]),
        row("negative prefix", &["--random-prefix-len", "-1"], &["--random-prefix-len", "negative"]),
        row("range ratio of 1 or more", &["--random-range-ratio", "1.5"], &["--random-range-ratio", "[0, 1)"]),
        row("no concurrency", &["--max-concurrency", "0"], &["--max-concurrency"]),
        row("negative rate", &["--request-rate", "-1"], &["--request-rate", "`-1`"]),
        row("rate not a number", &["--request-rate", "fast"], &["--request-rate", "`fast`"]),
        row("rate NaN", &["--request-rate", "nan"], &["--request-rate", "`nan`"]),
        row("burstiness 0", &["--burstiness", "0"], &["--burstiness", "above 0"]),
        row("unknown endpoint", &["--endpoint", "/v1/embeddings"], &["--endpoint", "/v1/completions or /v1/chat/completions"]),
        row("metadata without =", &["--metadata", "novalue"], &["--metadata", "KEY=VALUE"]),
        row("duration not a duration", &["--idle-timeout", "5x"], &["--idle-timeout", "`5x`"]),
        row("tokenizer that does not exist", &["--tokenizer", "/nonexistent/tok.json"], &["--tokenizer", "/nonexistent/tok.json"]),
        row("tokenizer file empty", &["--tokenizer", s(empty)], &["--tokenizer", "empty.json is not a valid tokenizer.json: empty"]),
        row("tokenizer not a tokenizer", &["--tokenizer", s(not_tokenizer)], &["--tokenizer", "not a Hugging Face tokenizer.json"]),
        row("tokenizer not JSON", &["--tokenizer", s(text.clone())], &["--tokenizer", "not JSON"]),
        row("CA file missing", &["--ca-cert", "/nonexistent/ca.pem"], &["--ca-cert", "/nonexistent/ca.pem"]),
        row("CA file not PEM", &["--ca-cert", s(text)], &["--ca-cert", "holds no PEM certificate"]),
        row("result path a folder", &["--result-filepath", s(folder.clone())], &["--result-filepath", "is a folder"]),
        row("result path under a file", &["--result-filepath", s(under_file)], &["--result-filepath", "cannot write"]),
        row("events path a folder", &["--save-events", s(folder)], &["--save-events", "is a folder"]),
        row("unknown flag", &["--random-input-length", "64"], &["--random-input-length"]),
        row("fewer GPUs than ranks", &["--tp", "4", "--dp", "2", "--gpus", "4"], &["--gpus", "4 is fewer than tp x pp x dp = 4 x 1 x 2 = 8"]),
        row("more nodes than GPUs", &["--tp", "2", "--nodes", "4"], &["--nodes", "4 nodes for 2 GPUs"]),
        row("no pipeline stages", &["--pp", "0"], &["--pp", "at least 1, got 0"]),
        row("empty deployment name", &["--deployment", " "], &["--deployment", "must not be empty"]),
    ]
}

#[test]
fn every_bad_input_is_named_with_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out").join("r.json");
    for r in rows(dir.path()) {
        let good = [
            ("--base-url", "http://127.0.0.1:9".to_string()),
            ("--tokenizer", tokenizer_dir()),
            ("--num-prompts", "2".into()),
            ("--random-input-len", "16".into()),
            ("--random-output-len", "2".into()),
            ("--result-filepath", out.display().to_string()),
        ];
        let mut cmd = Command::cargo_bin("bench").expect("binary");
        // Good values for every flag the row does not give.
        for (flag, value) in &good {
            if !r.args.iter().any(|a| a == flag) {
                cmd.args([flag, value.as_str()]);
            }
        }
        cmd.args(&r.args).env_remove("OPENAI_API_KEY");
        let mut says = predicate::str::starts_with("error: ").boxed();
        for s in r.says {
            says = says.and(predicate::str::contains(*s)).boxed();
        }
        let assert = cmd.assert();
        let output = assert.get_output().clone();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{}: {stderr}", r.name);
        assert!(
            says.eval(&stderr),
            "{}: the message misses {:?}: {stderr}",
            r.name,
            r.says
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", r.name);
        assert!(!out.exists(), "{}: a result file was written", r.name);
    }
}
