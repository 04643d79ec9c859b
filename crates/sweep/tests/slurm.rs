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

/// The folder holding this build's binaries, with bench-sim built if this run did not build it.
fn bin_dir() -> PathBuf {
    let sweep = assert_cmd::cargo::cargo_bin("sweep");
    let dir = sweep
        .parent()
        .expect("binaries have a folder")
        .to_path_buf();
    if !dir.join("bench-sim").is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "bench-sim", "--bin", "bench-sim"])
            .current_dir(repo())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building bench-sim failed");
    }
    dir
}

#[test]
#[ignore = "needs slurm-wlm and munge: scripts/test or just slurm-test"]
fn the_two_job_workflow_runs_on_a_real_slurm() {
    let out = Command::new("bash")
        .arg(repo().join("slurm/test/e2e.sh"))
        .arg(bin_dir())
        .output()
        .expect("e2e.sh runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && log.contains("e2e: PASS"), "{log}");
}

#[test]
#[ignore = "needs shellcheck: scripts/test or just slurm-test"]
fn every_shell_script_passes_shellcheck() {
    let scripts: Vec<PathBuf> = ["slurm", "slurm/test", ".ci", "scripts", "conformance"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo().join(d)).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_shell(p))
        .collect();
    assert!(scripts.len() >= 6, "{scripts:?}");
    let out = Command::new("shellcheck")
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
