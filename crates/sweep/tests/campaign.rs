//! `sweep --campaign` without a cluster: the dry run, and campaigns refused before anything is
//! submitted. (`tests/slurm.rs` runs a campaign on a real Slurm.)

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A campaign of two configurations in `dir`, with `extra` appended to the second.
fn campaign(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("c.toml");
    let text = format!(
        r#"
name = "cmp"
scripts = "{slurm}"
port = 9000
[slurm]
partition = "gpu"
[sweep]
input_lens = [1024, 8192]
concurrency = [4, 16]
output_len = 256
args = ["--tokenizer", "/models/tok"]
[[config]]
name = "tp4"
model = "org/Model"
tp = 4
[[config]]
name = "dp2-ep"
model = "org/Model"
tp = 4
dp = 2
expert_parallel = true
nodes = 2
serve_args = "--max-num-seqs 512"
{extra}
"#,
        slurm = repo().join("slurm").display()
    );
    std::fs::write(&path, text).expect("write");
    path
}

fn sweep(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("sweep").expect("binary");
    cmd.current_dir(dir);
    cmd
}

#[test]
fn a_dry_run_prints_each_job_and_submits_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = campaign(dir.path(), "sweep = { concurrency = [32], clients = 2 }");
    // No sbatch on the PATH: a dry run must not need one.
    let out = sweep(dir.path())
        .env("PATH", "/nonexistent")
        .args(["--campaign", &file.display().to_string(), "--dry-run"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let results = dir.path().join("results/cmp");
    let serve = lines[2];
    assert!(serve.starts_with("serve_dp2_ep=$(env "), "{serve}");
    for part in [
        "TP=4 PP=1 DP=2 EP=1 GPUS=8 NODES=2 PORT=9001",
        "'EXTRA_SERVE_ARGS=--max-num-seqs 512'",
        "--partition=gpu --nodes=2 --gres=gpu:4",
        // max_servers is 1: the second server waits for the first to end.
        "--dependency=afterany:${serve_tp4}",
        &format!("--output={}/dp2-ep/logs/serve-%j.out", results.display()),
    ] {
        assert!(serve.contains(part), "`{part}` not in {serve}");
    }
    let sweep_line = lines[3];
    for part in [
        "SERVE_JOB_ID=${serve_dp2_ep}",
        // Two client processes: the job's two srun tasks.
        "CLIENTS=2",
        "--ntasks=2",
        "--dependency=after:${serve_dp2_ep}",
        &format!("RESULTS_DIR={}/dp2-ep", results.display()),
        // The configuration's concurrency wins; its deployment is recorded in every file.
        "'SWEEP_ARGS=--input-lens 1024,8192 --concurrency 32 --output-len 256 --tokenizer \
         /models/tok --deployment dp2-ep --gpus 8 --nodes 2 --pp 1 --dp 2 --expert-parallel'",
    ] {
        assert!(sweep_line.contains(part), "`{part}` not in {sweep_line}");
    }
    assert!(lines[1].contains("CLIENTS=1") && !lines[1].contains("--ntasks"));
    assert!(stderr.contains("2 configurations would be submitted; nothing was"));
    assert!(
        !dir.path().join("results").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn a_campaign_the_sweep_would_refuse_is_refused_before_anything_is_submitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (extra, says) in [
        (
            "sweep = { args = [\"--frobnicate\"] }",
            "`dp2-ep`: its sweep flags: error: unexpected argument '--frobnicate'",
        ),
        (
            "sweep = { concurrency = [0] }",
            "`dp2-ep`: its sweep: --concurrency: must be at least 1",
        ),
        (
            "gpus = 4",
            "`dp2-ep`: gpus = 4 is fewer than tp x pp x dp = 8",
        ),
        ("sweep = { args = [\"--simulate\"] }", "have no place"),
        (
            "sweep = { clients = 8 }",
            "`dp2-ep`: its sweep: --clients: 8 clients, but a cell's concurrency is 4",
        ),
    ] {
        let file = campaign(dir.path(), extra);
        let out = sweep(dir.path())
            .env("PATH", "/nonexistent")
            .args(["--campaign", &file.display().to_string()])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains(says), "{extra}: {stderr}");
        assert!(stderr.contains("c.toml"), "the file is named: {stderr}");
        assert!(!dir.path().join("results").exists());
    }
    // Flags for the sweeps belong in the file.
    let file = campaign(dir.path(), "");
    let out = sweep(dir.path())
        .args([
            "--campaign",
            &file.display().to_string(),
            "--concurrency",
            "4",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    // Without Slurm, submitting says so.
    let out = sweep(dir.path())
        .env("PATH", "/nonexistent")
        .args(["--campaign", &file.display().to_string()])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot run sbatch"), "{stderr}");
}

#[test]
fn the_documented_campaign_is_a_valid_one() {
    let doc = std::fs::read_to_string(repo().join("docs/campaigns.md")).expect("docs");
    let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("its end");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("minimax.toml");
    std::fs::write(&file, &doc[start..end]).expect("write");
    // From the repository's root, where `scripts = "slurm"` points.
    let out = sweep(&repo())
        .env("PATH", "/nonexistent")
        .args(["--campaign", &file.display().to_string(), "--dry-run"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        8,
        "4 configurations, 2 jobs each: {stdout}"
    );
    assert!(
        stdout.contains("--dependency=afterany:${serve_tp4}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VLLM_ALL2ALL_BACKEND=deepep_low_latency"),
        "{stdout}"
    );
}
