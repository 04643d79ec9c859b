//! The Slurm workflow on a real one-node Slurm cluster, and shellcheck on every script.
//!
//! Both install what they need from Debian's packages when it is missing (slurm-wlm, munge, curl,
//! shellcheck; this needs root, as on CI). `INFERPERF_SKIP_SLURM=1` skips them on a machine where
//! that is impossible, and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn skipped(what: &str) -> bool {
    let skip = std::env::var("INFERPERF_SKIP_SLURM").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED {what}: INFERPERF_SKIP_SLURM=1");
    }
    skip
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

fn ensure_package(command: &str, package: &str) {
    if Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return;
    }
    let ok = Command::new("sh")
        .args(["-c", &format!("apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{command} is missing and `apt-get install {package}` failed (run as root, or set INFERPERF_SKIP_SLURM=1)");
}

#[test]
fn the_two_job_workflow_runs_on_a_real_slurm() {
    if skipped("the Slurm end-to-end test") {
        return;
    }
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
fn every_shell_script_passes_shellcheck() {
    if skipped("shellcheck") {
        return;
    }
    ensure_package("shellcheck", "shellcheck");
    let scripts: Vec<PathBuf> = ["slurm", "slurm/test", ".ci"]
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
