//! Every bad input `sweep` can be given, one row each (docs/reliability.md lists them): flags
//! and matrix files exit 2 before anything runs, a server-info file that never holds a URL
//! exits 1 naming what it holds; the message names the problem, and no cell file is written.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn tokenizer_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tokenizers/deepseek-v4")
        .display()
        .to_string()
}

/// One bad input: flags that replace the good ones, the exit code, what the message says.
struct Row {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    says: Vec<String>,
}

fn row(name: &'static str, args: &[&str], code: i32, says: &[&str]) -> Row {
    Row {
        name,
        args: args.iter().map(|a| (*a).to_string()).collect(),
        code,
        says: says.iter().map(|a| (*a).to_string()).collect(),
    }
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path.display().to_string()
}

#[rustfmt::skip] // A table: one row per line.
fn rows(dir: &Path) -> Vec<Row> {
    let broken = write(dir, "broken.toml", b"input_lens = [");
    let wrong_type = write(dir, "wrong-type.toml", b"input_lens = \"1024\"\n");
    let unknown = write(dir, "unknown.toml", b"input_len = [1024]\n");
    let zero = write(dir, "zero.toml", b"concurrency = [0]\n");
    let junk = write(dir, "junk.txt", b"\xff\xfe\x00\x01binary");
    let words = write(dir, "words.txt", b"node12 port 8000\n");
    let empty = write(dir, "empty.txt", b"  \n");
    let folder = dir.display().to_string();
    vec![
        row("ISL not a number", &["--input-lens", "64,abc"], 2, &["--input-lens", "`abc`"]),
        row("ISL list empty", &["--input-lens", ""], 2, &["--input-lens", "at least one value"]),
        row("ISL 0", &["--input-lens", "0"], 2, &["--input-lens", "at least 1"]),
        row("ISL negative", &["--input-lens", "-64"], 2, &["--input-lens", "-64"]),
        row("ISL no model has", &["--input-lens", "100000000"], 2, &["--input-lens", "at most 4194304"]),
        row("concurrency 0", &["--concurrency", "0"], 2, &["--concurrency", "at least 1"]),
        row("concurrency negative", &["--concurrency", "-4"], 2, &["--concurrency", "-4"]),
        row("OSL 0", &["--output-len", "0"], 2, &["--output-len", "at least 1"]),
        row("cells too big to hold", &["--input-lens", "1000000", "--concurrency", "1000"], 2, &["--prompts-per-concurrency", "GiB in memory"]),
        row("TP negative", &["--tp", "-4"], 2, &["--tp", "-4"]),
        row("wait not a duration", &["--wait-timeout", "5x"], 2, &["--wait-timeout", "`5x`"]),
        row("existing policy unknown", &["--existing", "overwrite"], 2, &["--existing", "overwrite"]),
        row("URL without a scheme", &["--base-url", "localhost:8000"], 2, &["--base-url", "http:// or https://"]),
        row("matrix file missing", &["--config", "/nonexistent/m.toml"], 2, &["--config", "/nonexistent/m.toml"]),
        row("matrix file broken", &["--config", &broken], 2, &["--config", "broken.toml", "line 1"]),
        row("matrix value of the wrong type", &["--config", &wrong_type], 2, &["--config", "wrong-type.toml", "expected a sequence"]),
        row("matrix key unknown", &["--config", &unknown], 2, &["--config", "unknown field `input_len`"]),
        row("matrix value 0", &["--config", &zero], 2, &["--config", "zero.toml: `concurrency` must be at least 1, got 0"]),
        row("tokenizer missing", &["--tokenizer", "/nonexistent/tok"], 2, &["--tokenizer", "/nonexistent/tok"]),
        row("no clients", &["--clients", "0"], 2, &["--clients", "at least 1, got 0"]),
        row("clients without an index", &["--clients", "2", "--concurrency", "2", "--clients-id", "x"], 2, &["--client-index", "SLURM_PROCID"]),
        row("client index out of range", &["--clients", "2", "--concurrency", "2", "--client-index", "2", "--clients-id", "x"], 2, &["--client-index", "2 is not one of the 2 clients' numbers"]),
        row("clients without an id", &["--clients", "2", "--concurrency", "2", "--client-index", "0"], 2, &["--clients-id", "an id the clients share"]),
        row("clients id not a name", &["--clients", "2", "--concurrency", "2", "--client-index", "0", "--clients-id", "a/b"], 2, &["--clients-id", "`a/b`"]),
        row("more clients than slots", &["--clients", "4", "--concurrency", "2", "--client-index", "0", "--clients-id", "x"], 2, &["--clients", "a cell's concurrency is 2"]),
        row("server-info not text", &["--server-info", &junk], 1, &["--server-info", "junk.txt", "are not text"]),
        row("server-info not a URL", &["--server-info", &words], 1, &["--server-info", "`node12 port 8000` is not"]),
        row("server-info a folder", &["--server-info", &folder], 1, &["--server-info", "is a folder"]),
        row("server-info stays empty", &["--server-info", &empty, "--wait-timeout", "1s"], 1, &["--server-info", "stayed empty for 1 s"]),
        row("server-info never appears", &["--server-info", "/nonexistent/info.txt", "--wait-timeout", "1s"], 1, &["--server-info", "no file appeared within 1 s"]),
    ]
}

#[test]
fn every_bad_input_is_named_with_its_exit_code_and_no_cell_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let results = dir.path().join("results");
    for r in rows(dir.path()) {
        let by_file = r.args.iter().any(|a| a == "--server-info");
        let by_matrix_file = r.args.iter().any(|a| a == "--config");
        let mut good = vec![
            ("--tokenizer", tokenizer_dir()),
            ("--results-dir", results.display().to_string()),
        ];
        if !by_matrix_file {
            good.push(("--input-lens", "16".into()));
            good.push(("--concurrency", "1".into()));
        }
        if !by_file {
            good.push(("--base-url", "http://127.0.0.1:9".into()));
        }
        let mut cmd = Command::cargo_bin("sweep").expect("binary");
        for (flag, value) in &good {
            if !r.args.iter().any(|a| a == flag) {
                cmd.args([flag, value.as_str()]);
            }
        }
        let output = cmd
            .args(&r.args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("SLURM_PROCID")
            .env_remove("SLURM_JOB_ID")
            .output()
            .expect("sweep runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(r.code), "{}: {stderr}", r.name);
        let last = stderr
            .lines()
            .rfind(|l| l.starts_with("error: "))
            .unwrap_or_default();
        for s in &r.says {
            assert!(
                stderr.contains(s.as_str()),
                "{}: no `{s}` in: {stderr}",
                r.name
            );
        }
        assert!(!last.is_empty(), "{}: no error line: {stderr}", r.name);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", r.name);
        let cells = std::fs::read_dir(&results)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(cells, 0, "{}: a cell file was written", r.name);
    }
}
