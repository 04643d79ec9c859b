//! The Slurm workflow on a real one-node Slurm cluster, and shellcheck on every script.
//!
//! Both need programs from Debian's packages (slurm-wlm, munge, curl, shellcheck), so they are
//! opt-in: `scripts/test` (the whole suite) installs the packages when missing and runs them,
//! and `just slurm-test` runs them alone. A plain `cargo test` reports them as ignored.

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
