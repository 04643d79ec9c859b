//! `--transport standard` goes through the proxy the environment names (`HTTP_PROXY`), except for
//! hosts in `NO_PROXY`; the native transport never does (a proxy would sit inside every measured
//! latency).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use support::{tokenizer_dir, Sim};

/// A forward HTTP proxy on 127.0.0.1:0 that sends everything to the origin its first request
/// names. Returns its URL and the first request line of every connection it took.
fn forward_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || relay(client, &log));
        }
    });
    (url, seen)
}

/// Reads the request head, connects to the origin in its absolute URI, and relays both ways.
fn relay(client: TcpStream, log: &Mutex<Vec<String>>) {
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let request_line = head.lines().next().unwrap_or_default().to_string();
    log.lock().expect("not poisoned").push(request_line.clone());
    // "POST http://host:port/path HTTP/1.1": the origin is host:port.
    let origin = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|uri| uri.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let Ok(mut upstream) = TcpStream::connect(&origin) else {
        return;
    };
    let (Ok(mut up_read), Ok(mut client_write)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    if upstream.write_all(head.as_bytes()).is_err() {
        return;
    }
    std::thread::spawn(move || std::io::copy(&mut reader, &mut upstream));
    let _ = std::io::copy(&mut up_read, &mut client_write);
}

/// Runs 4 requests through `bench --transport <transport>` with the environment `env`; returns
/// how many completed.
fn run(url: &str, transport: &str, env: &[(&str, &str)]) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let result = dir.path().join("run.json");
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("bench"))
        .args(["--model", "sim-model", "--tokenizer", &tokenizer_dir()])
        .args(["--base-url", url, "--transport", transport])
        .args(["--random-input-len", "32", "--random-output-len", "4"])
        .args(["--num-prompts", "4", "--no-server-metrics"])
        .arg("--result-filepath")
        .arg(&result)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .envs(env.iter().copied())
        .output()
        .expect("bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{transport}: {stderr}");
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result).expect("a result")).expect("JSON");
    assert_eq!(value["client"]["transport"], transport);
    value["completed"].as_u64().expect("a count")
}

#[test]
fn the_standard_transport_honours_http_proxy_and_no_proxy() {
    let sim = Sim::start(|_| {});
    let (proxy, seen) = forward_proxy();
    let connections = || seen.lock().expect("not poisoned").len();

    assert_eq!(run(&sim.url(), "standard", &[("HTTP_PROXY", &proxy)]), 4);
    let through = seen.lock().expect("not poisoned").clone();
    let target = format!("POST {}/v1/completions HTTP/1.1", sim.url());
    assert!(
        !through.is_empty() && through.iter().all(|l| *l == target),
        "requests went through the proxy as {target}: {through:?}"
    );

    let before = connections();
    let host = sim.url().replace("http://", "");
    let host = host.split(':').next().unwrap_or_default().to_string();
    let env = [("HTTP_PROXY", proxy.as_str()), ("NO_PROXY", host.as_str())];
    assert_eq!(run(&sim.url(), "standard", &env), 4);
    assert_eq!(connections(), before, "NO_PROXY={host} bypasses the proxy");

    assert_eq!(run(&sim.url(), "native", &[("HTTP_PROXY", &proxy)]), 4);
    assert_eq!(
        connections(),
        before,
        "the native transport never uses a proxy"
    );
}
