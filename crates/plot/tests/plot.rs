//! The plotter on real files from all three producers, and on awkward folders.

use assert_cmd::Command;
use plot::{load, PlotArgs};
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn fixtures(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/results")
        .join(sub)
}

fn args(dir: &Path, output: &Path, kind: plot::Kind) -> PlotArgs {
    PlotArgs {
        results_dir: dir.to_path_buf(),
        glob: "*_tp*_isl*_osl*_conc*.json".into(),
        output: Some(output.to_path_buf()),
        title: None,
        kind,
        ttft_slas: vec![0.5, 1.0, 2.0, 5.0, 10.0],
        tpot_slas: vec![50.0, 75.0, 100.0, 200.0],
        width: 900,
        height: 400,
        baseline: None,
    }
}

/// Decodes a PNG and returns its size and how many pixels are not white.
fn png_ink(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("png exists"),
    ));
    let mut reader = decoder.read_info().expect("valid png");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let ink = buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| px.iter().take(3).any(|c| *c < 200))
        .count();
    (info.width, info.height, ink)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

fn key(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("fixture has no {k}"))
}

/// Files the Python script wrote against a real vLLM (testdata/results/FOREIGN.md).
#[test]
fn python_files_in_seconds_become_milliseconds() {
    let (runs, warnings) =
        load::load_dir(&fixtures("python"), "*_tp*_isl*_osl*_conc*.json").expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(runs.len(), 3);
    for r in &runs {
        let v = json(&r.file);
        assert_eq!((r.tp, r.isl, r.osl), (1, 512, 32));
        assert_eq!(r.conc, v["max_concurrency"].as_u64().expect("concurrency"));
        assert_eq!(r.median_ttft_ms, Some(key(&v, "median_ttft") * 1e3));
        assert_eq!(r.p99_tpot_ms, Some(key(&v, "p99_tpot") * 1e3));
        assert_eq!(
            r.total_throughput,
            key(&v, "input_throughput") + key(&v, "output_throughput"),
            "no total key: input + output"
        );
    }
}

/// Files `vllm bench serve` wrote against a real vLLM: milliseconds, and no input throughput.
#[test]
fn vllm_and_inferperf_files_read_milliseconds_directly() {
    let (vllm, warnings) = load::load_dir(&fixtures("vllm"), "*.json").expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(vllm.len(), 3);
    for r in &vllm {
        let v = json(&r.file);
        assert_eq!(r.median_ttft_ms, Some(key(&v, "median_ttft_ms")));
        assert_eq!(r.total_throughput, key(&v, "total_token_throughput"));
        let derived = key(&v, "total_input_tokens") / key(&v, "duration");
        assert!((r.input_throughput - derived).abs() < 1e-9);
    }
    let (ours, _) = load::load_dir(&fixtures("inferperf"), "*.json").expect("loads");
    assert_eq!(ours.len(), 2);
    assert!(ours.iter().all(|r| r.sim_time_scale == Some(20.0)));
}

#[test]
fn every_chart_renders_a_png_of_the_requested_size_with_ink() {
    let out = tempfile::tempdir().expect("tempdir");
    for (sub, kind) in [
        ("python", plot::Kind::Throughput),
        ("vllm", plot::Kind::Sla),
        ("inferperf", plot::Kind::All),
    ] {
        let written = plot::run(&args(
            &fixtures(sub),
            &out.path().join(format!("{sub}.png")),
            kind,
        ))
        .expect("renders");
        for path in written {
            let (w, h, ink) = png_ink(&path);
            assert_eq!(h, 400, "{}", path.display());
            assert!(w == 900, "{}: width {w}", path.display());
            assert!(
                ink > 2000,
                "{} looks blank ({ink} dark pixels)",
                path.display()
            );
        }
    }
    assert!(out.path().join("inferperf_pareto.png").is_file());
    assert!(out.path().join("inferperf_latency.png").is_file());
}

#[test]
fn svg_output_by_extension() {
    let out = tempfile::tempdir().expect("tempdir");
    let path = out.path().join("chart.svg");
    plot::run(&args(&fixtures("vllm"), &path, plot::Kind::Latency)).expect("renders");
    let text = std::fs::read_to_string(&path).expect("svg");
    assert!(text.starts_with("<svg") && text.contains("Time to first token"));
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).expect("write");
}

#[test]
fn bad_files_are_skipped_by_name_and_an_empty_folder_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "a_tp1_isl100_osl10_conc1.json",
        r#"{"input_throughput": 10, "output_throughput": 1}"#,
    );
    write(
        dir.path(),
        "b_tp1_isl200_osl10_conc1.json",
        r#"{"output_throughput": 1}"#,
    );
    write(dir.path(), "c_tp1_isl300_osl10_conc1.json", "{broken");
    let (runs, warnings) = load::load_dir(dir.path(), "*_tp*_isl*_osl*_conc*.json").expect("loads");
    assert_eq!(runs.len(), 1);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("b_tp1") && w.contains("input_throughput")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("c_tp1") && w.contains("not JSON")),
        "{warnings:?}"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    Command::cargo_bin("plot")
        .expect("binary")
        .arg("--results-dir")
        .arg(empty.path())
        .arg("--output")
        .arg(empty.path().join("x.png"))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(empty.path().display().to_string())
                .and(predicate::str::contains("matching `*.json`")),
        );
}

#[test]
fn awkward_data_draws_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One point, a zero, a huge value, a NaN-producing null, and mixed TP.
    write(
        dir.path(),
        "x_tp4_isl1024_osl128_conc1.json",
        r#"{"input_throughput": 0, "output_throughput": 0, "median_tpot_ms": 0}"#,
    );
    write(
        dir.path(),
        "x_tp8_isl1024_osl128_conc2.json",
        r#"{"input_throughput": 1e12, "output_throughput": 5e9, "median_ttft_ms": null, "p99_ttft_ms": 1e9, "median_tpot_ms": 1e-9, "p99_tpot_ms": 1e-9}"#,
    );
    let out = tempfile::tempdir().expect("tempdir");
    let written = plot::run(&args(
        dir.path(),
        &out.path().join("odd.png"),
        plot::Kind::All,
    ))
    .expect("renders");
    assert_eq!(written.len(), 4);

    // Thousands of files.
    let many = tempfile::tempdir().expect("tempdir");
    for i in 0..2000u64 {
        let isl = 1024 * (1 + i % 20);
        let conc = 1 + i / 20;
        write(
            many.path(),
            &format!("m_tp4_isl{isl}_osl128_conc{conc}.json"),
            &format!(
                r#"{{"input_throughput": {}, "output_throughput": {}, "median_tpot_ms": {}, "p99_tpot_ms": {}, "p99_ttft_ms": {}}}"#,
                1000 + i,
                100 + i % 50,
                10 + i % 30,
                20 + i % 30,
                100 + i
            ),
        );
    }
    let written = plot::run(&args(
        many.path(),
        &out.path().join("many.png"),
        plot::Kind::Throughput,
    ))
    .expect("renders");
    let (_, _, ink) = png_ink(&written[0]);
    assert!(ink > 2000);
}

/// bench's own files say their ISL, OSL, concurrency and TP inside: they are read under any name.
#[test]
fn our_files_are_read_by_content_under_any_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = fixtures("inferperf").join("sim_tp4_isl1024_osl128_conc4.json");
    std::fs::copy(&original, dir.path().join("run.json")).expect("copy");
    let (runs, warnings) = load::load_dir(dir.path(), "*.json").expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    let by_name = load::read(&original).expect("reads");
    let [run] = &runs[..] else {
        panic!("one run: {runs:?}")
    };
    assert_eq!(
        (run.tp, run.isl, run.osl, run.conc),
        (by_name.tp, by_name.isl, by_name.osl, by_name.conc)
    );
    assert_eq!((run.isl, run.osl, run.conc, run.tp), (1024, 128, 4, 4));
    assert_eq!(
        run.name, "sim-model",
        "a file without a cell name is named by its model"
    );
}

/// A JSON file that is not a result says so and is skipped; the others are drawn.
#[test]
fn files_that_are_not_results_are_skipped_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixtures("vllm").join("vllmbench_tp1_isl512_osl32_conc2.json"),
        dir.path().join("vllmbench_tp1_isl512_osl32_conc2.json"),
    )
    .expect("copy");
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"model_max_length": 4096}"#,
    );
    write(dir.path(), "sweep_summary.json", r#"{"cells": []}"#);
    let (runs, warnings) = load::load_dir(dir.path(), "*.json").expect("loads");
    assert_eq!(runs.len(), 1);
    assert!(
        !warnings.iter().any(|w| w.contains("sweep_summary.json")),
        "the sweep's summary is not a run, and not worth a warning: {warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("tokenizer_config.json") && w.contains("does not say its ISL")),
        "{warnings:?}"
    );
}

/// Where charts go: `<kind>.png` by default, inside a folder given as --output, the exact
/// file for one chart whatever its extension (PNG unless .svg).
#[test]
fn charts_go_where_the_output_flag_says() {
    let results = fixtures("inferperf");
    let here = tempfile::tempdir().expect("tempdir");
    Command::cargo_bin("plot")
        .expect("binary")
        .current_dir(here.path())
        .arg("--results-dir")
        .arg(&results)
        .args(["--kind", "all"])
        .assert()
        .success();
    for kind in ["throughput", "sla", "pareto", "latency"] {
        assert!(
            here.path().join(format!("{kind}.png")).is_file(),
            "{kind}.png"
        );
    }
    let folder = here.path().join("charts");
    std::fs::create_dir(&folder).expect("mkdir");
    Command::cargo_bin("plot")
        .expect("binary")
        .arg("--results-dir")
        .arg(&results)
        .args(["--kind", "sla", "--output"])
        .arg(&folder)
        .assert()
        .success();
    assert!(folder.join("sla.png").is_file());
    let bare = here.path().join("chart");
    Command::cargo_bin("plot")
        .expect("binary")
        .arg("--results-dir")
        .arg(&results)
        .arg("--output")
        .arg(&bare)
        .assert()
        .success();
    let (w, _, ink) = png_ink(&bare);
    assert!(w == 1600 && ink > 2000, "a PNG named chart");
    let leftovers: Vec<_> = std::fs::read_dir(here.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Flag values that cannot work exit 2 and say why; nothing panics.
#[test]
fn bad_flag_values_exit_2_naming_the_flag() {
    let results = fixtures("inferperf");
    let out = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--results-dir", "/nonexistent/results"],
            "--results-dir /nonexistent/results: no such folder",
        ),
        (
            &["--width", "100000", "--height", "100000"],
            "--width/--height",
        ),
        (&["--width", "10"], "--width/--height"),
        (&["--ttft-slas", "0,-1"], "--ttft-slas"),
    ];
    for (flags, says) in cases {
        let mut cmd = Command::cargo_bin("plot").expect("binary");
        if !flags.contains(&"--results-dir") {
            cmd.arg("--results-dir").arg(&results);
        }
        cmd.args(flags)
            .arg("--output")
            .arg(out.path().join("c.png"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says).and(predicate::str::contains("panicked").not()));
    }
}

/// Result files a user may have in a folder that cannot be drawn: each is skipped with a line
/// naming the file and what is wrong, and the good ones are drawn.
#[test]
fn every_bad_result_file_is_skipped_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixtures("vllm").join("vllmbench_tp1_isl512_osl32_conc2.json"),
        dir.path().join("good_tp1_isl512_osl32_conc2.json"),
    )
    .expect("copy");
    let huge = format!("[{}0]", "0,".repeat(5_000_000));
    let rows: [(&str, &str, &str); 6] = [
        ("empty_tp1_isl1_osl1_conc1.json", "", "not JSON"),
        ("array_tp1_isl2_osl1_conc1.json", &huge, "not a result file"),
        (
            "text_tp1_isl3_osl1_conc1.json",
            r#"{"output_throughput": "fast", "input_throughput": 1}"#,
            "`output_throughput`",
        ),
        (
            "negative_tp1_isl4_osl1_conc1.json",
            r#"{"output_throughput": -5, "input_throughput": 1}"#,
            "no usable `output_throughput`",
        ),
        (
            "nothing_tp1_isl5_osl1_conc1.json",
            r#"{"completed": 3}"#,
            "no usable `input_throughput`",
        ),
        (
            "unnamed.json",
            r#"{"input_throughput": 1, "output_throughput": 1}"#,
            "does not say its ISL",
        ),
    ];
    for (name, body, _) in &rows {
        write(dir.path(), name, body);
    }
    let out = dir.path().join("chart.png");
    let assert = Command::cargo_bin("plot")
        .expect("binary")
        .arg("--results-dir")
        .arg(dir.path())
        .arg("--output")
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    for (name, _, says) in rows {
        let line = stderr
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not named: {stderr}"));
        assert!(
            line.starts_with("warning: skipped") && line.contains(says),
            "{line}"
        );
    }
    assert!(
        stderr.contains("wrote") && stderr.contains("(1 run)"),
        "{stderr}"
    );
    assert!(out.is_file());
}

/// Runs `plot` on `dir` with the charts going to `dir/charts/`; returns what it printed on
/// stderr and the chart files' names, sorted.
fn plot_into_folder(dir: &Path) -> (String, Vec<String>) {
    let out = dir.join("charts");
    let assert = Command::cargo_bin("plot")
        .expect("binary")
        .arg("--results-dir")
        .arg(dir)
        .arg("--output")
        .arg(format!("{}/", out.display()))
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let mut charts: Vec<String> = std::fs::read_dir(&out)
        .expect("charts")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    charts.sort();
    (stderr, charts)
}

/// A folder of two configurations (another OSL, simulated and real time) is never merged into
/// one line: each gets its own charts, and a line says so.
#[test]
fn a_mixed_folder_is_drawn_per_configuration_never_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["python", "inferperf"] {
        for entry in std::fs::read_dir(fixtures(sub))
            .expect("fixtures")
            .flatten()
        {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
    }
    let (stderr, charts) = plot_into_folder(dir.path());
    assert!(
        stderr.contains("note: 2 configurations")
            && stderr.contains("seedpy_vllm, OSL 32")
            && stderr.contains("sim, OSL 128, simulated"),
        "{stderr}"
    );
    assert_eq!(
        charts,
        vec![
            "throughput_seedpy_vllm_osl32.png",
            "throughput_sim_osl128_sim.png"
        ]
    );
    let (runs, _) = load::load_dir(dir.path(), "*.json").expect("loads");
    let groups = plot::configurations(runs);
    assert_eq!(
        groups.values().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 2]
    );
}

/// Runs of one sweep name that served two models (the name reused for another deployment) are
/// two configurations, told apart by the model in the note, the file names and the titles.
#[test]
fn one_name_with_two_models_is_two_configurations() {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixtures("inferperf"))
        .expect("fixtures")
        .flatten()
    {
        let mut v = json(&entry.path());
        std::fs::write(dir.path().join(entry.file_name()), v.to_string()).expect("copy");
        // The same cells at concurrency 8, against another model.
        v["config"]["model"] = "org/Other-7B".into();
        v["config"]["max_concurrency"] = 8.into();
        let name = entry
            .file_name()
            .to_string_lossy()
            .replace("conc4", "conc8");
        std::fs::write(dir.path().join(name), v.to_string()).expect("write");
    }
    let (stderr, charts) = plot_into_folder(dir.path());
    assert!(
        stderr.contains("note: 2 configurations")
            && stderr.contains("sim (org/Other-7B), OSL 128, simulated")
            && stderr.contains("sim (sim-model), OSL 128, simulated"),
        "{stderr}"
    );
    assert_eq!(
        charts,
        [
            "throughput_sim_org-Other-7B_osl128_sim.png",
            "throughput_sim_sim-model_osl128_sim.png"
        ]
    );
}

/// Every pixel colour of a PNG, counted.
fn colour_counts(path: &Path) -> std::collections::HashMap<(u8, u8, u8), usize> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("png exists"),
    ));
    let mut reader = decoder.read_info().expect("valid png");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let mut counts = std::collections::HashMap::new();
    for px in buf[..info.buffer_size()].chunks(channels) {
        *counts.entry((px[0], px[1], px[2])).or_insert(0) += 1;
    }
    counts
}

/// Per chart kind, what it draws: every axis names its unit, every series has a label, and the
/// colour of every series with points covers more pixels than its legend swatch can (at most
/// 20 x 8 = 160), so the series itself is visible in the plot area, not only in the legend.
#[test]
fn every_chart_kind_draws_each_legend_entry_visibly_with_units_on_every_axis() {
    let results = fixtures("python");
    let (runs, _) = load::load_dir(&results, "*.json").expect("loads");
    let out = tempfile::tempdir().expect("tempdir");
    let kinds = [
        (plot::Kind::Throughput, plot::series::throughput(&runs)),
        (
            plot::Kind::Sla,
            plot::series::sla(
                &runs,
                &[0.5, 1.0, 2.0, 5.0, 10.0],
                &[50.0, 75.0, 100.0, 200.0],
            ),
        ),
        (plot::Kind::Pareto, plot::series::pareto(&runs)),
        (plot::Kind::Latency, plot::series::latency(&runs)),
    ];
    for (kind, panels) in kinds {
        let path = out.path().join(format!("{}.png", kind.name()));
        plot::run(&args(&results, &path, kind)).expect("renders");
        let counts = colour_counts(&path);
        for panel in &panels {
            for label in [&panel.x_label, &panel.y_label] {
                assert!(
                    ["tok/s", "(ms", "(s", "ISL"]
                        .iter()
                        .any(|u| label.contains(u)),
                    "{}: axis `{label}` names no unit",
                    kind.name()
                );
            }
            let colours = plot::render::series_colors(panel);
            for (s, c) in panel.series.iter().zip(colours) {
                assert!(
                    !s.label.is_empty(),
                    "{}: a series without a label",
                    kind.name()
                );
                if s.points.is_empty() {
                    continue;
                }
                let n = counts.get(&(c.0, c.1, c.2)).copied().unwrap_or(0);
                assert!(
                    n > 200,
                    "{}: `{}` has {n} pixels of its colour: not visible",
                    kind.name(),
                    s.label
                );
            }
        }
    }
}

/// The distribution and timeline charts from a sweep's own per-request files: every completed
/// request is on its line, the chart is drawn, and a folder without such files is named as such.
#[test]
fn distributions_and_timelines_come_from_the_per_request_files() {
    let results = fixtures("requests");
    let (runs, _) = load::load_dir(&results, "*.json").expect("loads");
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let d = plot::detail::read(run).expect("a per-request file beside it");
        let result = json(&run.file);
        assert_eq!(d.requests.len() as f64, key(&result, "completed"));
        let panels = plot::detail::distributions(std::slice::from_ref(&d));
        let ttft = &panels[0].series[0].points;
        // The distribution ends at the slowest request, at share 1.
        let slowest = result["distributions_ms"]["ttft"]["max"]
            .as_f64()
            .expect("max");
        assert_eq!(ttft.last().copied(), Some((slowest, 1.0)));
        assert!(ttft.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
    }
    let out = tempfile::tempdir().expect("tempdir");
    let cdf = plot::run(&args(
        &results,
        &out.path().join("cdf.png"),
        plot::Kind::Cdf,
    ))
    .expect("renders");
    assert_eq!(cdf, [out.path().join("cdf.png")], "one ISL, one chart");
    let timelines = plot::run(&args(
        &results,
        &out.path().join("timeline.png"),
        plot::Kind::Timeline,
    ))
    .expect("renders");
    assert_eq!(
        timelines,
        [
            out.path().join("timeline_demo_tp1_isl1024_osl64_conc4.png"),
            out.path()
                .join("timeline_demo_tp1_isl1024_osl64_conc16.png"),
        ],
        "one chart per run"
    );
    for path in cdf.iter().chain(&timelines) {
        let (w, h, ink) = png_ink(path);
        assert_eq!((w, h), (900, 400));
        assert!(ink > 2000, "{} looks blank", path.display());
    }
    // Files with no per-request file beside them: nothing to draw, and the error says why.
    Command::cargo_bin("plot")
        .expect("binary")
        .args(["--kind", "cdf", "--results-dir"])
        .arg(fixtures("python"))
        .arg("--output")
        .arg(out.path().join("none.png"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("no per-request file beside"))
        .stderr(predicate::str::contains("x.requests.jsonl"));
}

/// Repeats of a cell are one point with its interval, and two result sets are compared per cell
/// by their intervals: a real change differs, a set against itself is within noise, and single
/// runs have no interval to judge by.
#[test]
fn repeats_draw_intervals_and_two_sets_are_compared_by_them() {
    let baseline = fixtures("repeats/baseline");
    let candidate = fixtures("repeats/candidate");
    let (runs, warnings) = load::load_dir(&candidate, "*.json").expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(runs.len(), 6, "three runs of two cells");
    let merged = load::merge_repeats(runs.clone());
    assert_eq!(merged.len(), 2);
    assert!(merged.iter().all(|r| r.repeats.len() == 3 && r.name == "b"));
    let conc4: Vec<f64> = runs
        .iter()
        .filter(|r| r.conc == 4)
        .map(|r| r.output_throughput)
        .collect();
    let mean = conc4.iter().sum::<f64>() / 3.0;
    let m4 = merged.iter().find(|r| r.conc == 4).expect("conc 4");
    assert!((m4.output_throughput - mean).abs() < 1e-9);
    // The chart's point is that mean, with its interval.
    let panels = plot::series::throughput(&merged);
    let s = panels[1]
        .series
        .iter()
        .find(|s| s.label == "conc 4")
        .expect("a conc 4 line");
    let interval = bench_result::repeats::Interval::of(&conc4).expect("an interval");
    assert_eq!(s.errors, [Some((interval.low, interval.high))]);
    assert!((s.points[0].1 - mean).abs() < 1e-9);

    let rows = plot::diff::compare(
        &load::load_dir(&baseline, "*.json").expect("loads").0,
        &runs,
    );
    assert_eq!(rows.len(), 2 * plot::diff::FIGURES.len());
    let output = rows
        .iter()
        .find(|r| r.cell.3 == 8 && r.figure == "output tok/s")
        .expect("a row");
    assert_eq!(output.verdict, plot::diff::Verdict::Differs);
    assert!(
        output.change() > 10.0,
        "TP 2 decodes faster: {}",
        output.change()
    );
    let same = plot::diff::compare(&runs, &runs);
    assert!(same
        .iter()
        .all(|r| r.verdict == plot::diff::Verdict::WithinNoise));
    let (single, _) = load::load_dir(&fixtures("python"), "*.json").expect("loads");
    assert!(plot::diff::compare(&single, &single)
        .iter()
        .all(|r| r.verdict == plot::diff::Verdict::NoInterval));

    // The command: a table on stdout, CSV where --output says, a missing --baseline named.
    let out = tempfile::tempdir().expect("tempdir");
    let csv = out.path().join("diff.csv");
    Command::cargo_bin("plot")
        .expect("binary")
        .args(["--kind", "diff", "--baseline"])
        .arg(&baseline)
        .arg("--results-dir")
        .arg(&candidate)
        .arg("--output")
        .arg(&csv)
        .assert()
        .success()
        .stdout(predicate::str::contains("DIFFERS"))
        .stderr(predicate::str::contains("12 of 12 figures differ"));
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert_eq!(text.lines().count(), 13);
    Command::cargo_bin("plot")
        .expect("binary")
        .args(["--kind", "diff", "--results-dir"])
        .arg(&candidate)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--baseline"));
}

#[test]
fn a_campaigns_configurations_are_compared_per_gpu() {
    let campaign = fixtures("campaign");
    let out = tempfile::tempdir().expect("tempdir");
    let mut a = args(&campaign, &out.path().join("c.png"), plot::Kind::Compare);
    a.glob = "*.json".into();
    let written = plot::run(&a).expect("draws");
    let names: Vec<String> = written
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["c_frontier.png", "c_sla.png", "c_throughput.png"]);
    for (path, rows) in written.iter().zip([1, 2, 2]) {
        let (w, h, ink) = png_ink(path);
        assert_eq!((w, h), (900, 400 * rows), "{}", path.display());
        assert!(ink > 10_000, "{}: {ink} inked pixels", path.display());
    }
    // The frontier's points are the files' total throughput (in modelled time) over the GPUs
    // each declares.
    let (configs, skipped) = plot::compare::load(&campaign, "*.json").expect("loads");
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[1].label, "tp8: 8 GPUs, TP 8");
    let panels = plot::compare::frontier(&configs);
    assert_eq!(panels.len(), 2, "one panel per ISL");
    for (config, series) in configs.iter().zip(&panels[0].series) {
        for &(interactivity, per_gpu) in &series.points {
            let run = config
                .runs
                .iter()
                .find(|r| r.isl == 1024 && r.interactivity() == Some(interactivity))
                .expect("a point is a run");
            let file = json(&run.file);
            let gpus = file["config"]["deployment"]["gpus"].as_f64().expect("gpus");
            // The simulator ran 2x faster than modelled: in modelled time, half the rate.
            let scale = key(&file, "sim_time_scale");
            let total = key(&file, "total_token_throughput") / scale;
            assert!(
                (per_gpu - total / gpus).abs() < 1e-9 * total,
                "{per_gpu} vs {total} / {gpus}"
            );
        }
    }
    // The bigger configuration shows its per-GPU cost: at every concurrency measured, TP8 gives
    // less total throughput per GPU than TP4 on the simulator's model.
    for isl in [1024, 4096] {
        for conc in [1, 4, 16] {
            let per_gpu = |c: &plot::compare::Config| {
                let r = c
                    .runs
                    .iter()
                    .find(|r| r.isl == isl && r.conc == conc)
                    .expect("cell");
                r.total_throughput / f64::from(r.gpus)
            };
            assert!(
                per_gpu(&configs[1]) < per_gpu(&configs[0]),
                "isl {isl} conc {conc}"
            );
        }
    }
}

#[test]
fn compare_wants_a_campaigns_folder() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut a = args(
        &fixtures("inferperf"),
        &out.path().join("c.png"),
        plot::Kind::Compare,
    );
    a.glob = "*.json".into();
    let e = plot::run(&a).expect_err("a folder of results, not of configurations");
    assert!(
        e.to_string().contains("one folder per configuration"),
        "{e}"
    );
}
