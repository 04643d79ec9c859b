//! What the `bench` binary's tests share: the test tokenizer and a simulator to run against.
#![allow(dead_code)] // Each test file uses a part of it.

use bench_sim::{SimConfig, SimHandle, Simulator};
use std::path::PathBuf;
use std::time::Duration;

pub fn tokenizer_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tokenizers/deepseek-v4")
        .display()
        .to_string()
}

/// A simulator on its own runtime thread, so the binary under test can talk to it.
pub struct Sim {
    pub handle: Option<SimHandle>,
    runtime: tokio::runtime::Runtime,
}

impl Sim {
    pub fn start(tweak: impl FnOnce(&mut SimConfig)) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut cfg = SimConfig::preset("sim-model", "fixed").expect("preset");
        cfg.timing = bench_sim::timing::Timing::Fixed {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(2),
        };
        tweak(&mut cfg);
        let handle = runtime
            .block_on(Simulator::start(cfg, "127.0.0.1:0".parse().expect("addr")))
            .expect("simulator starts");
        Self {
            handle: Some(handle),
            runtime,
        }
    }

    pub fn url(&self) -> String {
        self.handle.as_ref().map(SimHandle::url).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.runtime.block_on(h.stop());
        }
    }
}
