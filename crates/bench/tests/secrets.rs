//! The API key never leaves the request it authorizes: not into the result file, the
//! `--save-events` file, the summary, the progress lines, the log (at its most verbose) or an
//! error message, even when a server echoes it back in its error replies.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use support::{tokenizer_dir, Sim};

const KEY: &str = "sk-inferperf-test-9f2c4e71d0b8a5";

/// A server that answers every request 401 with the bearer token it was sent in its error
/// message, as some proxies do. Returns its URL; it serves until the test process ends.
fn echoing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_echo(stream));
        }
    });
    url
}

fn serve_echo(stream: std::net::TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut auth = String::new();
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("authorization:") {
                auth = line["authorization:".len()..].trim().to_string();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let reply = serde_json::json!({
            "error": {"message": format!("Incorrect API key provided: {auth}")}
        })
        .to_string();
        let head = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(reply.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// Runs `bench` against `url` over each transport with the key in `OPENAI_API_KEY` and the log
/// at its most verbose; returns the exit codes and everything it printed and wrote.
fn run_with_key(url: &str, dir: &Path) -> (Vec<Option<i32>>, String) {
    let mut codes = Vec::new();
    let mut everything = String::new();
    for transport in ["native", "standard"] {
        let (code, output) = run_over(transport, url, &dir.join(transport));
        codes.push(code);
        everything += &output;
    }
    (codes, everything)
}

fn run_over(transport: &str, url: &str, dir: &Path) -> (Option<i32>, String) {
    std::fs::create_dir_all(dir).expect("a folder per transport");
    let result = dir.join("run.json");
    let events = dir.join("events.jsonl");
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("bench"))
        .args(["--model", "sim-model", "--tokenizer", &tokenizer_dir()])
        .args(["--base-url", url])
        .args(["--random-input-len", "32", "--random-output-len", "4"])
        .args(["--num-prompts", "4", "--transport", transport])
        .arg("--result-filepath")
        .arg(&result)
        .arg("--save-events")
        .arg(&events)
        .env("OPENAI_API_KEY", KEY)
        .env("RUST_LOG", "trace")
        .output()
        .expect("bench runs");
    let mut everything = String::from_utf8_lossy(&output.stdout).into_owned();
    everything += &String::from_utf8_lossy(&output.stderr);
    for file in [&result, &events] {
        everything += &std::fs::read_to_string(file).unwrap_or_default();
    }
    (output.status.code(), everything)
}

#[test]
fn the_key_is_in_no_file_log_or_message() {
    let sim = Sim::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, everything) = run_with_key(&sim.url(), dir.path());
    assert_eq!(code, [Some(0); 2], "{everything}");
    assert!(everything.contains("\"completed\""), "the result was read");
    assert!(!everything.contains(KEY), "the key leaked:\n{everything}");
}

#[test]
fn a_server_that_echoes_the_key_does_not_make_it_leak() {
    let url = echoing_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, everything) = run_with_key(&url, dir.path());
    assert_eq!(code, [Some(1); 2], "every request fails: {everything}");
    // The server's message still reaches the user, with the key masked.
    assert!(
        everything.contains("Incorrect API key provided: Bearer [API key]"),
        "the server's message is reported:\n{everything}"
    );
    assert!(!everything.contains(KEY), "the key leaked:\n{everything}");
}
