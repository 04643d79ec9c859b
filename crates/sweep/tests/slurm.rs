//! The Slurm workflow and a campaign on a real one-node Slurm cluster, shellcheck on every script,
//! and serve.sbatch's commands for a server across nodes.
//!
//! The first three need programs from Debian's packages (slurm-wlm, munge, curl, shellcheck), so
//! they are opt-in: `scripts/test` (the whole suite) installs the packages when missing and runs
//! them, and `just slurm-test` runs them alone. A plain `cargo test` reports them as ignored. The
//! multi-node dry run needs only bash.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder holding this build's binaries, with bench-sim and plot built if this run did not
/// build them.
fn bin_dir() -> PathBuf {
    let sweep = assert_cmd::cargo::cargo_bin("sweep");
    let dir = sweep
        .parent()
        .expect("binaries have a folder")
        .to_path_buf();
    for package in ["bench-sim", "plot"] {
        if !dir.join(package).is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", package, "--bin", package])
                .current_dir(repo())
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building {package} failed");
        }
    }
    dir
}

/// Runs `slurm/test/<script>` with the binaries; it prints `<name>: PASS` when every check held.
fn run_script(script: &str, name: &str) {
    let out = Command::new("bash")
        .arg(repo().join("slurm/test").join(script))
        .arg(bin_dir())
        .output()
        .expect("the script runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && log.contains(&format!("{name}: PASS")),
        "{log}"
    );
}

#[test]
#[ignore = "needs slurm-wlm and munge: scripts/test or just slurm-test"]
fn the_two_job_workflow_runs_on_a_real_slurm() {
    run_script("e2e.sh", "e2e");
}

#[test]
#[ignore = "needs slurm-wlm and munge: scripts/test or just slurm-test"]
fn a_campaign_runs_its_configurations_one_server_at_a_time_on_a_real_slurm() {
    run_script("campaign.sh", "campaign");
}

#[test]
#[ignore = "needs shellcheck: scripts/test or just slurm-test"]
fn every_shell_script_passes_shellcheck() {
    // Named from the repository's root, as the `# shellcheck source=` directives name them.
    let scripts: Vec<PathBuf> = ["slurm", "slurm/test", ".ci", "scripts", "conformance"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(repo().join(d))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(move |e| Path::new(d).join(e.file_name()))
        })
        .filter(|p| repo().join(p).is_file() && is_shell(&repo().join(p)))
        .collect();
    assert!(scripts.len() >= 6, "{scripts:?}");
    let out = Command::new("shellcheck")
        .current_dir(repo())
        .args(&scripts)
        .output()
        .expect("shellcheck runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn is_shell(p: &Path) -> bool {
    std::fs::read_to_string(p)
        .is_ok_and(|t| t.starts_with("#!/usr/bin/env bash") || t.starts_with("#!/bin/bash"))
}

/// serve.sbatch with DRY_RUN=1 for a server over two nodes: each node's command, nothing run.
fn serve_dry_run(vars: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("slurm/serve.sbatch"))
        .env("DRY_RUN", "1")
        .env("NODES", "2")
        .env("NODE_HOSTS", "gpu-a gpu-b")
        .env("SERVER_HOST", "10.0.0.1")
        .env("CONTAINER_IMAGE", "vllm/vllm-openai:v0.12.0")
        .env("SERVER_INFO_FILE", "/nonexistent/info.txt")
        .envs(vars.iter().copied())
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_server_across_nodes_is_a_ray_cluster_or_data_parallel_engines_per_node() {
    let ray = serve_dry_run(&[("TP", "8"), ("PP", "2")]);
    let lines: Vec<&str> = ray.lines().collect();
    assert_eq!(lines.len(), 3, "{ray}");
    assert!(
        lines[1].starts_with(
            "worker 1 (gpu-b): srun --nodes=1 --ntasks=1 --overlap --nodelist=gpu-b \
             --container-image=vllm/vllm-openai:v0.12.0"
        ) && lines[1].ends_with("bash -c 'ray start --address=10.0.0.1:6379 --block'"),
        "{ray}"
    );
    let head = lines[2];
    assert!(head.starts_with("head (gpu-a): srun --nodes=1 --ntasks=1 --overlap --nodelist=gpu-a"));
    for part in [
        "ray start --head --port=6379 && until",
        ">= 2 )); do sleep 5; done && exec vllm serve",
        "--tensor-parallel-size 8 --pipeline-parallel-size 2",
        "--distributed-executor-backend ray",
    ] {
        assert!(head.contains(part), "`{part}` not in {head}");
    }

    let dp = serve_dry_run(&[("MULTI_NODE", "dp"), ("TP", "2"), ("DP", "4"), ("EP", "1")]);
    let lines: Vec<&str> = dp.lines().collect();
    assert_eq!(lines.len(), 3, "{dp}");
    for part in [
        "--data-parallel-size 4 --enable-expert-parallel",
        "--data-parallel-size-local 2 --data-parallel-address 10.0.0.1",
        "--headless --data-parallel-start-rank 2'",
    ] {
        assert!(lines[1].contains(part), "`{part}` not in {}", lines[1]);
    }
    assert!(!lines[2].contains("--headless"), "the head serves the API");

    // Engines that do not split over the nodes are refused, saying why.
    let out = Command::new("bash")
        .arg(repo().join("slurm/serve.sbatch"))
        .envs([
            ("DRY_RUN", "1"),
            ("NODES", "2"),
            ("NODE_HOSTS", "a b"),
            ("MULTI_NODE", "dp"),
            ("DP", "3"),
        ])
        .output()
        .expect("bash runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DP=3 does not split evenly over 2 nodes")
    );
}
