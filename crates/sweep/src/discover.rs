//! Finding the server: a fixed `--base-url`, or the URL a serve job writes to a server-info file,
//! then `/health` until it answers. Everything waits with a timeout and says what it waits for.

use bench_core::config::BaseUrl;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The server's topology as its serve job wrote it beside the server-info file
/// (`<server-info>.topology.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub gpus: u32,
    pub nodes: u32,
    pub tp: u32,
    pub pp: u32,
    pub dp: u32,
    pub expert_parallel: bool,
}

/// `<server-info>.topology.json`.
pub fn topology_path(server_info: &Path) -> PathBuf {
    let mut name = server_info.as_os_str().to_owned();
    name.push(".topology.json");
    PathBuf::from(name)
}

/// The topology the serve job wrote beside `server_info`, if it wrote one; `Err` says what is
/// wrong with the file.
pub fn read_topology(server_info: &Path) -> Result<Option<Topology>, String> {
    let path = topology_path(server_info);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let t: Topology = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a server topology ({e})", path.display()))?;
    if [t.gpus, t.nodes, t.tp, t.pp, t.dp].contains(&0) {
        return Err(format!("{}: a size of 0", path.display()));
    }
    Ok(Some(t))
}

/// Where the server's URL comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Fixed(BaseUrl),
    ServerInfo(PathBuf),
}

/// Why no healthy server was found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("--server-info {path}: no file appeared within {}", secs(*waited))]
    NoFile { path: PathBuf, waited: Duration },
    #[error("--server-info {path}: the file stayed empty for {} (the serve job writes the server's URL into it once the server is up)", secs(*waited))]
    EmptyFile { path: PathBuf, waited: Duration },
    #[error("nothing is listening at {url} (connection refused for {}): is the server up, and is --base-url right? (without --base-url, sweep waits for a serve job's --server-info file)", secs(*waited))]
    Refused { url: String, waited: Duration },
    #[error(
        "--server-info {path}: {problem}; the serve job writes one line such as http://node12:8000"
    )]
    Malformed {
        path: PathBuf,
        problem: BadServerInfo,
    },
    #[error("--server-info {path} is a folder; give the file the serve job writes its URL into")]
    Folder { path: PathBuf },
    #[error("{url}/health did not answer 200 within {} (last: {last})", secs(*waited))]
    Unhealthy {
        url: String,
        waited: Duration,
        last: String,
    },
    #[error("stopped while waiting for the server")]
    Stopped,
}

/// `90 s`, `1 h 30 min`: a wait as a user reads it.
fn secs(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{:.0} s", d.as_secs_f64()),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// With a fixed URL, how long "connection refused" is waited out (a server restarting) before it
/// is an error, nothing being about to appear there: 15 polls, between 5 and 30 seconds.
fn refused_grace(poll: Duration) -> Duration {
    (poll * 15).clamp(Duration::from_secs(5), Duration::from_secs(30))
}

/// Polls until a server answers `/health`.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub source: Source,
    pub timeout: Duration,
    pub poll: Duration,
    http: reqwest::Client,
}

impl Discovery {
    /// Polls `source`; `ca_cert` (the run's `--ca-cert`) is also trusted for `https://` servers.
    pub fn new(source: Source, timeout: Duration, ca_cert: Option<&Path>) -> std::io::Result<Self> {
        let http = bench_core::tls::http_client(ca_cert)?
            .timeout(Duration::from_secs(5))
            .no_proxy();
        Ok(Self {
            source,
            timeout,
            poll: Duration::from_secs(2),
            http: http.build().map_err(std::io::Error::other)?,
        })
    }

    /// The URL of a healthy server, re-reading the server-info file while waiting (the server
    /// may come back on another node).
    pub async fn healthy(&self, stop: &CancellationToken) -> Result<BaseUrl, DiscoverError> {
        let start = Instant::now();
        let mut last;
        let mut next_log = Instant::now();
        let mut refused_since: Option<Instant> = None;
        loop {
            let url = match &self.source {
                Source::Fixed(u) => u.clone(),
                Source::ServerInfo(path) => match read_server_info(path) {
                    Ok(Some(u)) => u,
                    Ok(None) if start.elapsed() >= self.timeout => {
                        let waited = self.timeout;
                        return Err(if path.exists() {
                            DiscoverError::EmptyFile {
                                path: path.clone(),
                                waited,
                            }
                        } else {
                            DiscoverError::NoFile {
                                path: path.clone(),
                                waited,
                            }
                        });
                    }
                    Ok(None) => {
                        if Instant::now() >= next_log {
                            bench_core::progress::say(&format!(
                                "waiting for {} to hold the server's URL ({} so far)",
                                path.display(),
                                secs(start.elapsed())
                            ));
                            next_log = Instant::now() + Duration::from_secs(30);
                        }
                        self.sleep(stop).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match self.http.get(url.join("/health")).send().await {
                Ok(r) if r.status().is_success() => return Ok(url),
                Ok(r) => {
                    refused_since = None;
                    last = format!("HTTP {}", r.status());
                }
                Err(e) => {
                    last = reqwest_cause(&e);
                    let since = *refused_since.get_or_insert_with(Instant::now);
                    let fixed = matches!(self.source, Source::Fixed(_));
                    let grace = refused_grace(self.poll).min(self.timeout);
                    if fixed && e.is_connect() && since.elapsed() >= grace {
                        return Err(DiscoverError::Refused {
                            url: url.to_string(),
                            waited: since.elapsed(),
                        });
                    }
                }
            }
            if start.elapsed() >= self.timeout {
                return Err(DiscoverError::Unhealthy {
                    url: url.to_string(),
                    waited: self.timeout,
                    last,
                });
            }
            if Instant::now() >= next_log {
                bench_core::progress::say(&format!(
                    "waiting for {url}/health ({last}, {} so far)",
                    secs(start.elapsed())
                ));
                next_log = Instant::now() + Duration::from_secs(30);
            }
            self.sleep(stop).await?;
        }
    }

    /// One quick health check.
    pub async fn is_healthy(&self, url: &BaseUrl) -> bool {
        matches!(self.http.get(url.join("/health")).send().await, Ok(r) if r.status().is_success())
    }

    async fn sleep(&self, stop: &CancellationToken) -> Result<(), DiscoverError> {
        tokio::select! {
            () = tokio::time::sleep(self.poll) => Ok(()),
            () = stop.cancelled() => Err(DiscoverError::Stopped),
        }
    }
}

/// The innermost cause of a request error ("Connection refused (os error 111)"), not reqwest's
/// "error sending request for url (...)" wrapper.
fn reqwest_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

/// What is wrong with a server-info file's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadServerInfo {
    #[error("its first {bytes} bytes are not text")]
    NotText { bytes: usize },
    /// The first non-empty line, at most 120 characters, control characters escaped.
    #[error("`{0}` is not an http:// or https:// URL with a host")]
    NotAUrl(String),
}

/// How much of a server-info file is read: its URL is on the first line.
const SERVER_INFO_READ_LIMIT: u64 = 64 * 1024;

/// The URL in a server-info file: its first non-empty line. `None` while the file is absent or
/// still empty (being written).
pub fn read_server_info(path: &Path) -> Result<Option<BaseUrl>, DiscoverError> {
    use std::io::Read;
    if path.is_dir() {
        return Err(DiscoverError::Folder {
            path: path.to_path_buf(),
        });
    }
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    if file
        .take(SERVER_INFO_READ_LIMIT)
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Ok(None);
    }
    parse_server_info(&bytes).map_err(|problem| DiscoverError::Malformed {
        path: path.to_path_buf(),
        problem,
    })
}

/// The URL in a server-info file's contents: its first non-empty line, in the URL's normal
/// form (`HTTP://Node:8000/` is `http://node:8000`) and without a trailing `/`; `None` when
/// there is only white space. Text cut off mid-character at the end (a partial read) is fine.
pub fn parse_server_info(bytes: &[u8]) -> Result<Option<BaseUrl>, BadServerInfo> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        // Valid up to a character cut off by the end of the read.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return Err(BadServerInfo::NotText { bytes: bytes.len() }),
    };
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let not_a_url = || {
        let excerpt = line
            .chars()
            .take(120)
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        BadServerInfo::NotAUrl(excerpt)
    };
    let lower = line.get(..8).unwrap_or(line).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(not_a_url());
    }
    BaseUrl::parse(line).map(Some).map_err(|_| not_a_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serve_jobs_topology_is_read_beside_the_server_info_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = dir.path().join("server_info.txt");
        assert_eq!(read_topology(&info), Ok(None), "a serve job may write none");
        let path = topology_path(&info);
        assert!(path.ends_with("server_info.txt.topology.json"));
        std::fs::write(
            &path,
            r#"{"gpus": 16, "nodes": 2, "tp": 4, "pp": 1, "dp": 4, "expert_parallel": true}"#,
        )
        .expect("write");
        let t = read_topology(&info).expect("reads").expect("there");
        assert_eq!((t.gpus, t.nodes, t.dp, t.expert_parallel), (16, 2, 4, true));
        for (text, says) in [
            ("{\"gpus\": 4}", "not a server topology"),
            (
                r#"{"gpus": 0, "nodes": 1, "tp": 1, "pp": 1, "dp": 1, "expert_parallel": false}"#,
                "a size of 0",
            ),
        ] {
            std::fs::write(&path, text).expect("write");
            let e = read_topology(&info).expect_err(text);
            assert!(e.contains(says) && e.contains("topology.json"), "{e}");
        }
    }

    #[test]
    fn server_info_files_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("server_info.txt");
        assert!(matches!(read_server_info(&p), Ok(None)));
        std::fs::write(&p, "\n  http://node12:8000/ \n").expect("write");
        assert_eq!(
            read_server_info(&p).expect("valid").map(|u| u.to_string()),
            Some("http://node12:8000".into())
        );
        std::fs::write(&p, "node12 8000").expect("write");
        let err = read_server_info(&p).expect_err("malformed");
        assert!(err.to_string().contains("`node12 8000` is not"), "{err}");
        std::fs::write(&p, b"\xff\xfe\x00junk").expect("write");
        let err = read_server_info(&p).expect_err("not text");
        assert!(
            err.to_string().contains("first 7 bytes are not text"),
            "{err}"
        );
        std::fs::write(&p, "node\u{1b}[2J").expect("write");
        let err = read_server_info(&p).expect_err("control characters");
        assert!(err.to_string().contains("`node\\u{1b}[2J`"), "{err}");
        let err = read_server_info(dir.path()).expect_err("a folder");
        assert!(err.to_string().contains("is a folder"), "{err}");
    }

    /// A TLS server (the test certificate in testdata/tls) answering every request with 200.
    async fn tls_health_server() -> u16 {
        use rustls::pki_types::pem::PemObject;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tls");
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("server.pem"))
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key"))
            .expect("server.key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server configuration");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_health_checks_trust_the_runs_ca() {
        let url = format!("https://localhost:{}", tls_health_server().await);
        let url: BaseUrl = url.parse().expect("a base URL");
        let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tls/ca.pem");
        let source = || Source::Fixed(url.clone());
        let trusting = Discovery::new(source(), Duration::from_secs(5), Some(&ca)).expect("client");
        assert!(trusting.is_healthy(&url).await);
        let public = Discovery::new(source(), Duration::from_secs(5), None).expect("client");
        assert!(
            !public.is_healthy(&url).await,
            "an unknown CA must not pass"
        );
    }
}
