//! The campaign file (TOML): configurations, each a server to start and a sweep to run against it.
//!
//! ```toml
//! name = "minimax"              # results land in <results_dir>/minimax/<config>/
//! max_servers = 2               # servers running at once [1]
//!
//! [slurm]                       # every job's sbatch settings (all optional)
//! partition = "gpu"
//! serve_args = ["--time=4:00:00"]
//!
//! [sweep]                       # the matrix every configuration gets
//! input_lens = [1024, 8192]
//! concurrency = [4, 16, 64]
//! output_len = 1024
//! args = ["--tokenizer", "/models/MiniMax-M2.1"]
//!
//! [[config]]
//! name = "tp4"
//! model = "MiniMaxAI/MiniMax-M2.1"
//! tp = 4
//!
//! [[config]]
//! name = "tp8"
//! model = "MiniMaxAI/MiniMax-M2.1"
//! tp = 8
//! sweep = { concurrency = [16, 64, 256] }
//! ```
//!
//! docs/campaigns.md lists every key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignFile {
    /// The campaign's name: its folder under `results_dir`, and its jobs' name prefix.
    pub name: String,
    /// Where campaigns' folders go (default: results).
    #[serde(default = "default_results_dir")]
    pub results_dir: PathBuf,
    /// Servers running at once: a configuration's serve job waits for the one this many places
    /// before it to end (default: 1).
    #[serde(default = "one")]
    pub max_servers: u32,
    /// Folder holding serve.sbatch and sweep.sbatch (default: slurm).
    #[serde(default = "default_scripts")]
    pub scripts: PathBuf,
    /// The first configuration's server port; each next one takes the next port, so servers that
    /// share a node do not collide (default: 8000).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The container image every serve job runs in, unless its configuration names one
    /// (default: serve.sbatch's).
    pub container_image: Option<String>,
    #[serde(default)]
    pub slurm: SlurmTable,
    #[serde(default)]
    pub sweep: SweepTable,
    #[serde(default, rename = "config")]
    pub configs: Vec<ConfigTable>,
}

/// `[slurm]`: sbatch settings for every job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmTable {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// For the serve jobs, instead of `partition`.
    pub serve_partition: Option<String>,
    /// For the sweep jobs, instead of `partition`.
    pub sweep_partition: Option<String>,
    /// Extra sbatch flags for every serve job.
    #[serde(default)]
    pub serve_args: Vec<String>,
    /// Extra sbatch flags for every sweep job.
    #[serde(default)]
    pub sweep_args: Vec<String>,
    /// The sweep binary the sweep jobs run (default: the one submitting).
    pub sweep_bin: Option<PathBuf>,
}

/// `[sweep]` (and a configuration's `sweep`): the matrix and extra sweep flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepTable {
    pub input_lens: Option<Vec<u64>>,
    pub concurrency: Option<Vec<u64>>,
    pub output_len: Option<u64>,
    pub prompts_per_concurrency: Option<u64>,
    pub min_prompts: Option<u64>,
    pub warmups_per_concurrency: Option<u64>,
    pub num_runs: Option<u64>,
    /// Client processes that drive every cell together (the sweep job's srun tasks; give
    /// `--nodes` in `[slurm] sweep_args` to spread them over nodes).
    pub clients: Option<u64>,
    /// Extra sweep flags, one word each (e.g. `["--tokenizer", "/models/tok"]`); a
    /// configuration's are added after the shared ones.
    #[serde(default)]
    pub args: Vec<String>,
}

impl SweepTable {
    /// This table with `over`'s keys winning, and both tables' args.
    pub fn overridden_by(&self, over: &Self) -> Self {
        Self {
            input_lens: over.input_lens.clone().or_else(|| self.input_lens.clone()),
            concurrency: over
                .concurrency
                .clone()
                .or_else(|| self.concurrency.clone()),
            output_len: over.output_len.or(self.output_len),
            prompts_per_concurrency: over
                .prompts_per_concurrency
                .or(self.prompts_per_concurrency),
            min_prompts: over.min_prompts.or(self.min_prompts),
            warmups_per_concurrency: over
                .warmups_per_concurrency
                .or(self.warmups_per_concurrency),
            num_runs: over.num_runs.or(self.num_runs),
            clients: over.clients.or(self.clients),
            args: self.args.iter().chain(&over.args).cloned().collect(),
        }
    }

    /// The matrix as sweep flags.
    pub fn flags(&self) -> Vec<String> {
        let list = |v: &[u64]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = Vec::new();
        let mut add = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                out.extend([flag.to_string(), v]);
            }
        };
        add("--input-lens", self.input_lens.as_deref().map(list));
        add("--concurrency", self.concurrency.as_deref().map(list));
        add("--output-len", self.output_len.map(|v| v.to_string()));
        add(
            "--prompts-per-concurrency",
            self.prompts_per_concurrency.map(|v| v.to_string()),
        );
        add("--min-prompts", self.min_prompts.map(|v| v.to_string()));
        add(
            "--warmups-per-concurrency",
            self.warmups_per_concurrency.map(|v| v.to_string()),
        );
        add("--num-runs", self.num_runs.map(|v| v.to_string()));
        out.extend(self.args.iter().cloned());
        out
    }
}

/// `[[config]]`: one server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigTable {
    /// Its folder and file-name prefix: letters, digits, `-`, `.` and `_`.
    pub name: String,
    /// The model vLLM serves (with `tp`), unless `serve_cmd` is given.
    pub model: Option<String>,
    /// The name requests use (default: model).
    pub served_model_name: Option<String>,
    /// Tensor-parallel size.
    pub tp: Option<u32>,
    /// Pipeline-parallel size (default: 1).
    pub pp: Option<u32>,
    /// Data-parallel size (default: 1).
    pub dp: Option<u32>,
    #[serde(default)]
    pub expert_parallel: bool,
    /// GPUs over all nodes (default: tp x pp x dp).
    pub gpus: Option<u32>,
    /// Nodes (default: 1).
    pub nodes: Option<u32>,
    /// Container image for the server (default: the campaign's, else serve.sbatch's).
    pub container_image: Option<String>,
    /// Flags added to `vllm serve`.
    pub serve_args: Option<String>,
    /// The whole server command instead of `vllm serve` (it must listen on `$PORT`).
    pub serve_cmd: Option<String>,
    /// Extra sbatch flags for this configuration's serve job.
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// Environment for the server (e.g. `VLLM_*` settings).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// This configuration's sweep: keys here win over `[sweep]`'s.
    #[serde(default)]
    pub sweep: SweepTable,
}

fn default_results_dir() -> PathBuf {
    "results".into()
}
fn default_scripts() -> PathBuf {
    "slurm".into()
}
fn one() -> u32 {
    1
}
fn default_port() -> u16 {
    8000
}

/// What is wrong with a campaign file, naming the file and where in it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

/// A name safe in a folder, a file name and a job name.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl CampaignFile {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let error = |message: String| FileError {
            path: path.to_path_buf(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it ({e})")))?;
        let file: Self =
            toml::from_str(&text).map_err(|e| error(format!("not a valid campaign file: {e}")))?;
        file.check().map_err(error)?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        if !safe_name(&self.name) {
            return Err(format!(
                "name `{}`: use letters, digits, `-`, `.` and `_` (it names a folder and jobs)",
                self.name
            ));
        }
        if self.max_servers == 0 {
            return Err("max_servers: must be at least 1".into());
        }
        if self.configs.is_empty() {
            return Err("no [[config]] table: name at least one configuration".into());
        }
        let last_port = u32::from(self.port) + self.configs.len() as u32 - 1;
        if self.port == 0 || last_port > u32::from(u16::MAX) {
            return Err(format!(
                "port {}: each of the {} configurations takes the next port, which must stay \
                 within 1..65535",
                self.port,
                self.configs.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.configs {
            let at = |m: String| format!("[[config]] `{}`: {m}", c.name);
            if !safe_name(&c.name) {
                return Err(at(
                    "name: use letters, digits, `-`, `.` and `_` (it names a folder and files)"
                        .into(),
                ));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(at("a second configuration of that name".into()));
            }
            c.check().map_err(at)?;
        }
        for (key, args) in [
            ("slurm.serve_args", &self.slurm.serve_args),
            ("slurm.sweep_args", &self.slurm.sweep_args),
            ("sweep.args", &self.sweep.args),
        ] {
            one_word_each(key, args)?;
        }
        Ok(())
    }
}

impl ConfigTable {
    fn check(&self) -> Result<(), String> {
        match (&self.model, &self.serve_cmd, self.tp) {
            (_, Some(cmd), _) if cmd.trim().is_empty() => {
                return Err("serve_cmd: empty".into());
            }
            (Some(_), None, Some(_)) | (_, Some(_), _) => {}
            (None, None, _) => {
                return Err("give `model` with `tp`, or a whole `serve_cmd`".into());
            }
            (Some(_), None, None) => {
                return Err("`model` without `tp`: give the tensor-parallel size".into());
            }
        }
        if self.model.is_none() && self.served_model_name.is_none() {
            return Err(
                "serve_cmd without `model` or `served_model_name`: the sweep needs the name \
                 requests use"
                    .into(),
            );
        }
        for (key, v) in [
            ("tp", self.tp),
            ("pp", self.pp),
            ("dp", self.dp),
            ("gpus", self.gpus),
            ("nodes", self.nodes),
        ] {
            if v == Some(0) {
                return Err(format!("{key}: must be at least 1"));
            }
        }
        let ranks = self.tp() * self.pp.unwrap_or(1) * self.dp.unwrap_or(1);
        if self.gpus() < ranks {
            return Err(format!(
                "gpus = {} is fewer than tp x pp x dp = {ranks}",
                self.gpus()
            ));
        }
        if self.nodes() > self.gpus() {
            return Err(format!(
                "nodes = {} for {} GPUs: every node runs at least one",
                self.nodes(),
                self.gpus()
            ));
        }
        if let Some(k) = self.env.keys().find(|k| {
            k.is_empty()
                || k.starts_with(|c: char| c.is_ascii_digit())
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return Err(format!("env: `{k}` is not a variable name"));
        }
        one_word_each("sbatch_args", &self.sbatch_args)?;
        one_word_each("sweep.args", &self.sweep.args)
    }

    /// Tensor-parallel size (default: 1 with a serve_cmd).
    pub fn tp(&self) -> u32 {
        self.tp.unwrap_or(1)
    }

    /// GPUs over all nodes.
    pub fn gpus(&self) -> u32 {
        self.gpus
            .unwrap_or_else(|| self.tp() * self.pp.unwrap_or(1) * self.dp.unwrap_or(1))
    }

    pub fn nodes(&self) -> u32 {
        self.nodes.unwrap_or(1)
    }

    /// The name requests use.
    pub fn served_name(&self) -> &str {
        self.served_model_name
            .as_deref()
            .or(self.model.as_deref())
            .unwrap_or(&self.name)
    }
}

/// Flags pass to the jobs through variables split on whitespace: a word with a space would
/// arrive as two.
fn one_word_each(key: &str, args: &[String]) -> Result<(), String> {
    match args
        .iter()
        .find(|a| a.is_empty() || a.contains(char::is_whitespace))
    {
        Some(a) => Err(format!(
            "{key}: `{a}` is not one word; the jobs split these flags on whitespace, so give \
             each flag and each value as an item of its own, without spaces"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CampaignFile, String> {
        let file: CampaignFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.check()?;
        Ok(file)
    }

    const TWO: &str = r#"
        name = "c"
        [sweep]
        input_lens = [64]
        concurrency = [1, 2]
        output_len = 8
        min_prompts = 10
        [[config]]
        name = "tp4"
        model = "m"
        tp = 4
        [[config]]
        name = "dp2"
        model = "m"
        tp = 4
        dp = 2
        expert_parallel = true
        sweep = { concurrency = [8], min_prompts = 12, args = ["--seed", "3"] }
    "#;

    #[test]
    fn a_configurations_sweep_overrides_the_shared_one_key_by_key() {
        let file = parse(TWO).expect("valid");
        let dp2 = &file.configs[1];
        assert_eq!((dp2.gpus(), dp2.nodes(), dp2.tp()), (8, 1, 4));
        let sweep = file.sweep.overridden_by(&dp2.sweep);
        assert_eq!(
            sweep.flags(),
            [
                "--input-lens",
                "64",
                "--concurrency",
                "8",
                "--output-len",
                "8",
                "--min-prompts",
                "12",
                "--seed",
                "3"
            ]
        );
        assert_eq!(
            file.sweep.overridden_by(&file.configs[0].sweep).concurrency,
            Some(vec![1, 2])
        );
        assert_eq!(
            file.sweep.overridden_by(&file.configs[0].sweep).min_prompts,
            Some(10)
        );
    }

    #[test]
    fn bad_campaigns_are_refused_naming_the_configuration_and_key() {
        for (text, expected) in [
            ("name = \"c\"", "no [[config]]"),
            ("name = \"a b\"\n[[config]]\nname = \"x\"\nmodel = \"m\"\ntp = 1", "name `a b`"),
            ("name = \"c\"\n[[config]]\nname = \"x\"", "`x`: give `model` with `tp`"),
            ("name = \"c\"\n[[config]]\nname = \"x\"\nmodel = \"m\"", "`x`: `model` without `tp`"),
            (
                "name = \"c\"\n[[config]]\nname = \"x\"\nserve_cmd = \"run --port $PORT\"",
                "`x`: serve_cmd without `model`",
            ),
            (
                "name = \"c\"\n[[config]]\nname = \"x\"\nmodel = \"m\"\ntp = 4\ngpus = 2",
                "gpus = 2 is fewer than tp x pp x dp = 4",
            ),
            (
                "name = \"c\"\n[[config]]\nname = \"x\"\nmodel = \"m\"\ntp = 1\n[[config]]\nname = \"x\"\nmodel = \"m\"\ntp = 1",
                "`x`: a second configuration",
            ),
            (
                "name = \"c\"\n[sweep]\nargs = [\"--tokenizer /t\"]\n[[config]]\nname = \"x\"\nmodel = \"m\"\ntp = 1",
                "sweep.args: `--tokenizer /t` is not one word",
            ),
            (
                "name = \"c\"\n[[config]]\nname = \"x\"\nmodel = \"m\"\ntp = 1\nflavour = 2",
                "unknown field `flavour`",
            ),
            (
                "name = \"c\"\nmax_servers = 0\n[[config]]\nname = \"x\"\nmodel = \"m\"\ntp = 1",
                "max_servers: must be at least 1",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(expected), "{text}\n-> {e}");
        }
    }
}
