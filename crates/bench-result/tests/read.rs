//! Every producer's real files load into the one model, and bad ones are named by their key.

use bench_result::settings::{RunSettings, SeedOrigin, TransportKind};
use bench_result::{parse, read, Metric, ReadError, ResultFile, Stat};
use std::path::{Path, PathBuf};

fn fixtures(sub: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/results")
        .join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}", dir.display());
    files
}

fn raw(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

#[test]
fn the_python_scripts_files_read_in_seconds_and_give_milliseconds() {
    for path in fixtures("python") {
        let r = read(&path).expect("loads");
        let v = raw(&path);
        assert!(!r.is_inferperf());
        let median = v["median_ttft"].as_f64().expect("seconds key");
        assert_eq!(r.latency_ms(Metric::Ttft, Stat::Median), Some(median * 1e3));
        let p99 = v["p99_tpot"].as_f64().expect("seconds key");
        assert_eq!(
            r.latency_ms(Metric::Tpot, Stat::Percentile(99.0)),
            Some(p99 * 1e3)
        );
        assert_eq!(
            r.latency_ms(Metric::Itl, Stat::Median),
            None,
            "the script has no ITL"
        );
        assert_eq!(r.input_throughput(), v["input_throughput"].as_f64());
    }
}

#[test]
fn vllm_bench_serve_files_read_in_milliseconds_and_derive_input_throughput() {
    for path in fixtures("vllm") {
        let r = read(&path).expect("loads");
        let v = raw(&path);
        assert_eq!(
            r.latency_ms(Metric::Itl, Stat::Percentile(99.0)),
            v["p99_itl_ms"].as_f64()
        );
        assert_eq!(
            r.latency_ms(Metric::Ttft, Stat::Mean),
            v["mean_ttft_ms"].as_f64()
        );
        assert!(v.get("input_throughput").is_none());
        let derived = v["total_input_tokens"].as_f64().expect("tokens")
            / v["duration"].as_f64().expect("duration");
        assert_eq!(r.input_throughput(), Some(derived));
        // vLLM's own extras are kept.
        assert!(r.extra.contains_key("backend"));
    }
}

#[test]
fn inferperf_files_read_back_whole() {
    for path in fixtures("inferperf") {
        let r = read(&path).expect("loads");
        assert!(r.is_inferperf(), "{}", path.display());
        let config = r.config.as_ref().expect("the configuration is echoed");
        assert_eq!(r.max_concurrency, config.max_concurrency);
        assert!(r.sim_time_scale.is_some());
    }
}

#[test]
fn a_key_of_the_wrong_type_is_named() {
    let path = Path::new("x_tp1_isl1_osl1_conc1.json");
    let err = parse(br#"{"completed": "eight", "duration": 2}"#, path).expect_err("wrong type");
    assert!(
        matches!(err, ReadError::BadKey { ref key, .. } if key == "completed"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("x_tp1_isl1_osl1_conc1.json: `completed`:"),
        "{err}"
    );
    let nested = parse(br#"{"config": {"model": 3}}"#, path).expect_err("wrong type");
    assert!(nested.to_string().contains("`config.model`"), "{nested}");
    assert!(matches!(
        parse(b"[1, 2]", path),
        Err(ReadError::NotAnObject { .. })
    ));
    assert!(matches!(
        parse(b"{trunc", path),
        Err(ReadError::NotJson { .. })
    ));
    // Old demo files wrote the time scale as a string.
    let old = parse(br#"{"sim_time_scale": "20"}"#, path).expect("loads");
    assert_eq!(old.sim_time_scale, Some(20.0));
}

/// The differences between two settings, as a sweep names them.
fn named(a: &RunSettings, b: &RunSettings) -> Vec<String> {
    a.differences(b).iter().map(ToString::to_string).collect()
}

#[test]
fn settings_differences_name_what_changes_the_measurement() {
    let path = fixtures("inferperf").remove(0);
    let r: ResultFile = read(&path).expect("loads");
    let a = r.config.expect("config");
    let mut b = a.clone();
    b.base_url = "http://elsewhere:8000".into();
    b.prompt.seed = a.prompt.seed.wrapping_add(1);
    assert!(
        a.differences(&b).is_empty(),
        "URL and seed do not change what is measured"
    );
    b.prompt.range_ratio = 0.5;
    b.ignore_eos = !a.ignore_eos;
    let diffs = named(&a, &b);
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    assert!(diffs.iter().any(|d| d.starts_with("ignore_eos was")));
    assert!(diffs
        .iter()
        .any(|d| d.starts_with("prompt.range_ratio was")));
    // The committed files predate the choice of transport: they were measured natively.
    assert_eq!(a.transport, TransportKind::Native);
    let mut standard = a.clone();
    standard.transport = TransportKind::Standard;
    assert_eq!(
        named(&a, &standard),
        ["transport was \"native\" and is now \"standard\""]
    );
    // The committed files predate a warm-up of its own length: it asked for output_len.
    assert_eq!(a.warmup_output_len, None);
    let mut short_warmup = a.clone();
    short_warmup.warmup_output_len = Some(1);
    assert_eq!(
        named(&a, &short_warmup),
        ["warmup_output_len was null and is now 1"]
    );
    let mut given = a.clone();
    given.prompt.seed_origin = SeedOrigin::Given(1);
    let mut other = a.clone();
    other.prompt.seed_origin = SeedOrigin::Given(2);
    assert_eq!(given.differences(&other).len(), 1, "two given seeds differ");
}
