//! Helpers for the conformance tests: what inferperf claims about another tool, checked against
//! that tool running.
//!
//! The tests (`tests/vllm.rs`) are `#[ignore]`d: they need a real vLLM server, which
//! `conformance/run.sh` installs, starts and stops, passing its address in the environment:
//!
//! | variable | what |
//! | --- | --- |
//! | `INFERPERF_VLLM_URL` | the server's root, `http://127.0.0.1:PORT` |
//! | `INFERPERF_VLLM_MODEL` | its served model name |
//! | `INFERPERF_VLLM_MODEL_DIR` | the model folder (its tokenizer, for `vllm bench serve`) |
//! | `INFERPERF_VLLM_BIN` | the `vllm` command of that installation |
//!
//! The judge of what the server received is the server's own `/metrics`, never the client.

use bench_core::exposition::{self, Exposition};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The vLLM server under test.
#[derive(Debug, Clone)]
pub struct Vllm {
    pub url: String,
    pub model: String,
    pub model_dir: PathBuf,
    pub bin: PathBuf,
}

impl Vllm {
    /// From the environment `conformance/run.sh` sets; panics with how to run the tests.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: run the conformance tests with conformance/run.sh")
            })
        };
        Self {
            url: var("INFERPERF_VLLM_URL"),
            model: var("INFERPERF_VLLM_MODEL"),
            model_dir: PathBuf::from(var("INFERPERF_VLLM_MODEL_DIR")),
            bin: PathBuf::from(var("INFERPERF_VLLM_BIN")),
        }
    }

    /// The server's `/metrics` now.
    pub fn metrics(&self) -> Counters {
        let url = format!("{}/metrics", self.url);
        let out = Command::new("curl")
            .args(["-fsS", &url])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "GET {url} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        Counters(exposition::parse(&text).expect("vLLM's /metrics is Prometheus text"))
    }
}

/// A `/metrics` page, read for the counters the tests judge by.
#[derive(Debug, Clone)]
pub struct Counters(pub Exposition);

impl Counters {
    pub fn get(&self, name: &str) -> f64 {
        self.0
            .sum(name)
            .unwrap_or_else(|| panic!("vLLM's /metrics has no {name}"))
    }

    /// `later - self` for counter `name`.
    pub fn delta(&self, later: &Counters, name: &str) -> f64 {
        later.get(name) - self.get(name)
    }
}

/// The test tokenizer folder (the one the served model carries).
pub fn tokenizer_dir() -> PathBuf {
    repo().join("testdata/tokenizers/deepseek-v4")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A project binary (built by `conformance/run.sh` before the tests).
pub fn binary(name: &str) -> Command {
    Command::new(assert_cmd::cargo::cargo_bin(name))
}

/// Runs a command and returns its output, with stderr echoed for the test log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A result file, parsed.
pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A number at `pointer` (`/server/prompt_tokens`), or a panic naming it.
pub fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer}"))
}

/// A TCP proxy in front of a server that can be made to go away: every open connection is cut
/// and new ones are refused, as when the server process dies.
#[derive(Debug)]
pub struct CutProxy {
    pub url: String,
    gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    /// Forwards `127.0.0.1:<free port>` to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let gone = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&gone);
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let flag = Arc::clone(&flag);
                    std::thread::spawn(move || pump(&mut from, &mut to, &flag));
                }
            }
        });
        Self { url, gone }
    }

    /// Cuts every connection now and refuses new ones.
    pub fn cut(&self) {
        self.gone.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = std::net::TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Copies `from` to `to` until either ends or the proxy is cut (checked between reads).
fn pump(
    from: &mut std::net::TcpStream,
    to: &mut std::net::TcpStream,
    gone: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    let _ = from.set_read_timeout(Some(std::time::Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if gone.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
