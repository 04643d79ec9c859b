//! Exact prompt lengths with the real 128k tokenizer, reproducibility and BOS accounting.

use crate::support::{tokenizer, tokenizer_dir};
use bench_core::prompt::{build, PromptRole, PromptSource, PromptSpec};
use bench_core::tokenizer::PromptTokenizer;
use std::collections::HashSet;

fn spec(input_len: u64, range_ratio: f64, prefix_len: u64, seed: u64) -> PromptSpec {
    PromptSpec {
        input_len,
        range_ratio,
        prefix_len,
        seed,
        seed_origin: bench_core::prompt::SeedOrigin::Given(seed),
    }
}

/// Re-encodes every prompt in full, independently of what the builder claims.
fn assert_exact(tok: &PromptTokenizer, prompts: &[bench_core::prompt::Prompt]) {
    for (i, p) in prompts.iter().enumerate() {
        let counted = tok.count_prompt_tokens(&p.text).expect("encodes") as u64;
        assert_eq!(
            counted, p.target,
            "prompt {i} counts {counted}, target {}",
            p.target
        );
        assert_eq!(p.tokens, p.target);
    }
}

#[test]
fn short_prompts_are_exact_with_a_range_ratio() {
    let tok = tokenizer();
    let (prompts, stats) =
        build(&tok, &spec(200, 0.5, 0, 1), PromptRole::Measured, 48).expect("builds");
    assert_exact(&tok, &prompts);
    assert_eq!(stats.missed, 0);
    assert!(prompts.iter().all(|p| (100..=300).contains(&p.target)));
    let distinct: HashSet<u64> = prompts.iter().map(|p| p.target).collect();
    assert!(
        distinct.len() > 10,
        "lengths should vary with the range ratio"
    );
}

#[test]
fn long_assembled_prompts_are_exact() {
    let tok = tokenizer();
    let (prompts, stats) =
        build(&tok, &spec(6000, 0.2, 0, 9), PromptRole::Measured, 24).expect("builds");
    assert_exact(&tok, &prompts);
    assert_eq!(stats.verified_by_reencoding, 24);
    assert_eq!((stats.missed, stats.max_abs_miss), (0, 0));
}

#[test]
fn a_shared_source_builds_each_role_as_its_own_build_does() {
    let tok = tokenizer();
    // Assembled from the pool with a shared prefix, and built one by one.
    for spec in [spec(3000, 0.2, 64, 11), spec(300, 0.2, 0, 11)] {
        let source = PromptSource::new(&tok, &spec).expect("builds the shared parts");
        for (role, count) in [(PromptRole::Measured, 10), (PromptRole::Warmup, 3)] {
            let (shared, stats) = source.build(role, count).expect("builds");
            let (alone, _) = build(&tok, &spec, role, count).expect("builds");
            assert_eq!(shared, alone, "{role:?} prompts of {spec:?}");
            assert_exact(&tok, &shared);
            assert_eq!(stats.count, count as u64);
        }
        assert!(source
            .build(PromptRole::Warmup, 0)
            .expect("builds")
            .0
            .is_empty());
    }
}

#[test]
fn same_seed_same_prompts_and_every_prompt_differs() {
    let tok = tokenizer();
    let a = build(&tok, &spec(3000, 0.0, 0, 5), PromptRole::Measured, 12)
        .expect("builds")
        .0;
    let b = build(&tok, &spec(3000, 0.0, 0, 5), PromptRole::Measured, 12)
        .expect("builds")
        .0;
    let c = build(&tok, &spec(3000, 0.0, 0, 6), PromptRole::Measured, 12)
        .expect("builds")
        .0;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let texts: HashSet<&str> = a.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(texts.len(), a.len());
    // Warm-up prompts come from the same distribution but are never measured prompts.
    let w = build(&tok, &spec(3000, 0.0, 0, 5), PromptRole::Warmup, 12)
        .expect("builds")
        .0;
    assert!(w.iter().all(|p| !texts.contains(p.text.as_str())));
    // Distinct from the first characters on, so no prefix cache can serve one from another.
    let heads: HashSet<String> = a
        .iter()
        .map(|p| p.text.chars().take(40).collect())
        .collect();
    assert_eq!(heads.len(), a.len());
}

#[test]
fn shared_prefix_is_the_same_text_at_the_start_of_every_prompt() {
    let tok = tokenizer();
    let (prompts, _) =
        build(&tok, &spec(300, 0.0, 64, 2), PromptRole::Measured, 6).expect("builds");
    assert_exact(&tok, &prompts);
    assert!(prompts.iter().all(|p| p.target == 364));
    let prefix = tok
        .decode(&tok.encode(&prompts[0].text).expect("encodes")[..60])
        .expect("decodes");
    assert!(prompts.iter().all(|p| p.text.starts_with(&prefix)));
}

/// A copy of the fixture whose post-processor adds a BOS token, as Llama tokenizers do.
fn bos_tokenizer(dir: &std::path::Path, via_config: bool) -> PromptTokenizer {
    let raw = std::fs::read(tokenizer_dir().join("tokenizer.json.gz")).expect("fixture");
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut json)
        .expect("gunzip");
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("json");
    if via_config {
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"add_bos_token": true}"#,
        )
        .expect("write");
    } else {
        v["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<｜begin▁of▁sentence｜>": {"id": "<｜begin▁of▁sentence｜>", "ids": [0], "tokens": ["<｜begin▁of▁sentence｜>"]}}
        });
    }
    std::fs::write(dir.join("tokenizer.json"), v.to_string()).expect("write");
    PromptTokenizer::from_path(dir).expect("loads")
}

#[test]
fn a_bos_token_the_server_adds_is_counted() {
    for via_config in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let tok = bos_tokenizer(dir.path(), via_config);
        assert_eq!(tok.special_tokens(), 1, "via config: {via_config}");
        let (prompts, _) =
            build(&tok, &spec(150, 0.0, 0, 3), PromptRole::Measured, 4).expect("builds");
        for p in &prompts {
            // The server counts the body plus BOS: 150 in all.
            assert_eq!(tok.encode(&p.text).expect("encodes").len() + 1, 150);
        }
    }
    assert_eq!(tokenizer().special_tokens(), 0);
}

#[test]
fn special_tokens_are_never_drawn() {
    let tok = tokenizer();
    let ids = tok.regular_ids();
    assert!(ids.len() > 127_000 && ids.len() <= 128_000, "{}", ids.len());
    for special in ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"] {
        let id = tok
            .token_id(special)
            .expect("a special token of the fixture");
        assert!(
            ids.binary_search(&id).is_err(),
            "{special} ({id}) must not be drawn"
        );
    }
}
