//! Everything one run produced ([`RunReport`]): the records, the figures, and what the client,
//! the server and the machine said about the run. [`crate::result`] turns it into the result
//! file; [`crate::console`] into the table printed after a run.

use crate::config::RunConfig;
use crate::metrics::RunMetrics;
use crate::prompt::PromptStats;
use crate::record::RequestRecord;
use bench_result::sections::{ClientSection, ServerSection, SystemInfo, Warmup};

/// Everything a run produced.
#[derive(Debug)]
pub struct RunReport {
    pub config: RunConfig,
    pub started_at: chrono::DateTime<chrono::Local>,
    pub prompt_stats: PromptStats,
    pub warmup: Option<Warmup>,
    pub metrics: RunMetrics,
    pub records: Vec<RequestRecord>,
    pub interrupted: bool,
    pub not_sent: usize,
    /// The client's own cost, and whether it may have been the limit.
    pub client: ClientSection,
    /// What the server's own `/metrics` said of the measured phase.
    pub server: ServerSection,
    /// The models the server serves, asked when requests failed with HTTP 404.
    pub served_models: Option<Vec<String>>,
    pub system: SystemInfo,
    /// Set when several clients measured the run together ([`crate::merge`]).
    pub clients: Option<bench_result::sections::Clients>,
}

/// The machine this process runs on.
pub fn system_info() -> SystemInfo {
    SystemInfo {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        cores: cores() as u64,
    }
}

/// Cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
