//! A real result file validates against the committed schema (docs/result-schema.json).

use crate::support::{config, fixed_sim, run};
use bench_core::result;

pub fn schema() -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/result-schema.json");
    serde_json::from_slice(&std::fs::read(&path).expect("schema file")).expect("schema is JSON")
}

/// A server's topology, so the `deployment` keys are checked too.
fn deployment() -> bench_core::config::Deployment {
    bench_core::config::Deployment {
        name: Some("dp2".into()),
        gpus: 8,
        nodes: 2,
        pp: 1,
        dp: 2,
        expert_parallel: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_files_match_the_schema_and_carry_every_key() {
    let sim = fixed_sim(5, 1, |c| c.faults.http_500 = 0.3).await;
    let mut c = config(&sim.url(), 10, 64, 8);
    c.save_detailed = true;
    // A limit, so the steady state is written too.
    c.max_concurrency = std::num::NonZeroUsize::new(4);
    c.percentiles = vec![50.0, 99.9];
    c.metadata = vec![
        ("tp".into(), "4".into()),
        ("median_ttft".into(), "clash".into()),
    ];
    c.api_key = Some("sk-never-written".into());
    c.deployment = Some(deployment());
    // A warm-up of its own length, so its key is checked too.
    c.num_warmups = 2;
    c.warmup_output_len = Some(1);
    let report = run(&c).await;
    let value = result::to_json(&report);

    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // Python keys in seconds, vLLM keys in milliseconds, the same figure.
    let s = value["median_ttft"].as_f64().expect("seconds");
    let ms = value["median_ttft_ms"].as_f64().expect("milliseconds");
    assert!((s * 1e3 - ms).abs() < 1e-9);
    assert!(
        value.get("p99.9_ttft_ms").is_some(),
        "requested percentiles get vLLM's labels"
    );
    assert_eq!(value["tp"], 1, "the run's own tp stays an integer");
    assert_eq!(value["config"]["deployment"]["gpus"], 8);
    assert_eq!(value["config"]["warmup_output_len"], 1);
    assert_ne!(
        value["median_ttft"], "clash",
        "metadata never overwrites a figure"
    );
    assert_eq!(value["metadata"]["median_ttft"], "clash");
    assert_eq!(value["input_lens"].as_array().map(Vec::len), Some(10));
    let text = value.to_string();
    assert!(
        !text.contains("sk-never-written"),
        "the API key is never written"
    );
    assert_eq!(
        value["completed"].as_u64().unwrap_or(0) + value["failed"].as_u64().unwrap_or(0),
        10
    );
    sim.stop().await;

    // The other direction: the file reads back into the model every reader uses, whole ...
    let path = std::path::Path::new("written.json");
    let back = bench_result::parse(value.to_string().as_bytes(), path).expect("reads back");
    assert_eq!(serde_json::to_value(&back).expect("serializes"), value);
    // ... and the schema names exactly the keys the model writes (a run against the simulator
    // with --save-detailed writes every optional one).
    let schema = schema();
    let documented: std::collections::BTreeSet<&String> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    let percentile = percentile_key();
    let written: std::collections::BTreeSet<&String> = value
        .as_object()
        .expect("an object")
        .keys()
        .filter(|k| !percentile(k))
        .filter(|k| documented.contains(k) || c.metadata.iter().all(|(m, _)| m != *k))
        .collect();
    // Written only when they have a value: step lateness needs batching steps (this simulator
    // runs fixed timing).
    let only_with_a_value = ["sim_step_lateness_p99_ms"];
    assert_eq!(
        documented
            .difference(&written)
            .filter(|k| !only_with_a_value.contains(&k.as_str()))
            .collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "documented but never written"
    );
    assert_eq!(
        written.difference(&documented).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "written but not documented"
    );
}

/// vLLM's percentile keys (`p99.9_itl_ms`), which the schema matches by pattern.
fn percentile_key() -> impl Fn(&str) -> bool {
    |k: &str| {
        let Some(rest) = k.strip_suffix("_ms") else {
            return false;
        };
        let Some((stat, metric)) = rest.rsplit_once('_') else {
            return false;
        };
        let percentile = stat
            .strip_prefix('p')
            .is_some_and(|q| !q.is_empty() && q.chars().all(|c| c.is_ascii_digit() || c == '.'));
        percentile && ["ttft", "tpot", "itl", "e2el"].contains(&metric)
    }
}
