//! `sweep --simulate`: the built-in engine simulator as the server, for a first run with no GPU.
//!
//! The simulator runs in-process on 127.0.0.1:0 with a timing preset, `--sim-time-scale` times
//! faster than real time, and counts prompt tokens with the same tokenizer as the client. The
//! tokenizer is the DeepSeek-V4 one that ships inside the binary, so the demo needs no files. When
//! the matrix is not given, a smaller one keeps the demo to a minute or two.

use crate::SweepArgs;
use anyhow::Context;
use bench_sim::{SimConfig, SimHandle, Simulator};

/// The gzip-compressed tokenizer the demo builds prompts with (MIT, see its NOTICE.md).
const TOKENIZER_GZ: &[u8] =
    include_bytes!("../../../testdata/tokenizers/deepseek-v4/tokenizer.json.gz");

/// A running demo simulator and the files it needs.
#[derive(Debug)]
pub struct Simulated {
    handle: SimHandle,
    time_scale: f64,
    _tokenizer_dir: tempfile::TempDir,
}

impl Simulated {
    pub fn note(&self) -> String {
        format!(
            "note: these results come from the built-in simulator running {}x faster than real time: latencies are {}x shorter and throughputs {}x higher than the modelled deployment's (recorded as sim_time_scale in each file)",
            self.time_scale, self.time_scale, self.time_scale
        )
    }

    /// Lets the simulator count the cell's prompts before they are sent (see
    /// [`SimHandle::pretokenize`]): at a time scale, counting them on arrival would be slow.
    pub async fn announce(&self, prepared: &bench_core::run::Prepared) {
        let bodies: Vec<&[u8]> = prepared
            .warmups
            .iter()
            .chain(prepared.measured.iter())
            .map(|p| p.body.as_ref())
            .collect();
        self.handle.pretokenize(&bodies).await;
    }

    pub async fn stop(self) {
        self.handle.stop().await;
    }
}

/// Starts the simulator and points `args` at it, filling demo defaults the user did not set.
pub async fn start(args: &mut SweepArgs) -> anyhow::Result<Simulated> {
    anyhow::ensure!(
        args.common.base_url.is_none(),
        "--simulate starts its own server: drop --base-url"
    );
    anyhow::ensure!(
        args.sim_time_scale.is_finite() && args.sim_time_scale > 0.0,
        "--sim-time-scale: must be above 0"
    );
    let dir = tempfile::tempdir().context("creating a folder for the demo tokenizer")?;
    let tok_path = dir.path().join("tokenizer.json.gz");
    std::fs::write(&tok_path, TOKENIZER_GZ).context("writing the demo tokenizer")?;
    let model = if args.common.model == "default" {
        "sim-model".to_string()
    } else {
        args.common.model.clone()
    };
    let mut config = SimConfig::preset(&model, &args.sim_preset).with_context(|| {
        format!(
            "--sim-preset: unknown preset `{}`; use one of {}",
            args.sim_preset,
            bench_sim::timing::PRESETS.join(", ")
        )
    })?;
    config.time_scale = args.sim_time_scale;
    config.tokenizer = Some(tok_path.clone());
    let tp = match &config.timing {
        bench_sim::timing::Timing::Batching(p) => p.tp,
        bench_sim::timing::Timing::Fixed { .. } => 1,
    };
    let handle = Simulator::start(config, "127.0.0.1:0".parse()?).await?;
    eprintln!(
        "started the built-in simulator at {} (preset {}, {}x real time)",
        handle.url(),
        args.sim_preset,
        args.sim_time_scale
    );
    let c = &mut args.common;
    c.base_url = Some(handle.url());
    c.model = model;
    if c.tokenizer.is_none() {
        c.tokenizer = Some(tok_path.display().to_string());
    }
    if c.tp.is_none() && !c.metadata.iter().any(|m| m.starts_with("tp=")) {
        c.tp = Some(tp);
    }
    c.metadata
        .push(format!("sim_time_scale={}", args.sim_time_scale));
    c.metadata.push(format!("sim_preset={}", args.sim_preset));
    let m = &mut args.matrix;
    if m.config.is_none() {
        m.input_lens.get_or_insert_with(|| "1024,4096,8192".into());
        m.concurrency.get_or_insert_with(|| "1,4,16".into());
        m.prompts_per_concurrency.get_or_insert(8);
    }
    if args.name.is_none() {
        args.name = Some("sim".into());
    }
    Ok(Simulated {
        handle,
        time_scale: args.sim_time_scale,
        _tokenizer_dir: dir,
    })
}
