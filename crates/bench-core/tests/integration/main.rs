//! bench-core's integration tests: one binary, one module per concern.

mod failures;
mod fault_matrix;
mod hostile;
mod integrity;
mod measure;
mod merge;
mod prompts;
mod schema;
mod steady;
mod stepped;
mod support;
mod tls;
mod token_gaps;
mod tokenizer_hub;
mod transcripts;
