//! inferperf's measurement library: everything between a validated configuration and a result
//! file, with no command-line parsing.
//!
//! Measurement is kept apart from analysis. [`client`] and `driver` produce
//! [`record::RequestRecord`]s of raw instants, token counts and outcomes; [`metrics`] and
//! [`stats`] are pure functions over records; [`result`] turns a [`report::RunReport`] into the result
//! file. [`stream`] (SSE decoding and event classification) and [`prompt`] (exact-length random
//! prompts) are pure too, so each is tested without a network.

// Internals public only for the integration and fuzz tests, which drive them directly.
#[doc(hidden)]
pub mod chunked;
pub mod client;
mod clock;
pub mod config;
pub mod console;
mod driver;
pub mod exposition;
pub mod judge;
pub mod merge;
pub mod metrics;
pub mod open_files;
pub mod overhead;
pub mod progress;
pub mod prompt;
pub mod record;
pub mod report;
mod request;
pub mod result;
pub mod run;
pub mod server_metrics;
mod socket;
mod standard;
pub mod stats;
pub mod steady;
pub mod stream;
pub mod tls;
pub mod tokenizer;
#[doc(hidden)]
pub mod transport;

pub use config::{Endpoint, RequestRate, RunConfig, Slo};
pub use report::RunReport;
pub use run::{execute, execute_gated, load_tokenizer, prepare, Gates, RunError, ServerClock};
pub use socket::CONVERSION_ERROR;
