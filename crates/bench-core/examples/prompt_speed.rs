use bench_core::prompt::{build, PromptRole, PromptSpec};
use bench_core::tokenizer::PromptTokenizer;
fn main() {
    let t = PromptTokenizer::from_path(std::path::Path::new("testdata/tokenizers/deepseek-v4"))
        .unwrap();
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(640);
    let spec = PromptSpec {
        input_len: 14000,
        range_ratio: 0.0,
        prefix_len: 0,
        seed: 0,
    };
    let (_, stats) = build(&t, &spec, PromptRole::Measured, n).unwrap();
    println!("{stats:?}");
}
