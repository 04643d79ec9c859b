//! inferperf's measurement library.
pub mod prompt;
pub mod record;
pub mod stats;
pub mod stream;
pub mod tokenizer;
