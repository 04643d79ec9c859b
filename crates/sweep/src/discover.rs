//! Finding the server: a fixed `--base-url`, or the URL a serve job writes to a server-info file,
//! then `/health` until it answers. Everything waits with a timeout and says what it waits for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where the server's URL comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Fixed(String),
    ServerInfo(PathBuf),
}

/// Why no healthy server was found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("--server-info {path}: no file appeared within {waited:?}")]
    NoFile { path: PathBuf, waited: Duration },
    #[error("--server-info {path}: `{content}` is not an http(s) URL; the serve job writes e.g. http://node12:8000")]
    Malformed { path: PathBuf, content: String },
    #[error("{url}/health did not answer 200 within {waited:?} (last: {last})")]
    Unhealthy {
        url: String,
        waited: Duration,
        last: String,
    },
    #[error("stopped while waiting for the server")]
    Stopped,
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
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(std::io::Error::other)?
            {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            source,
            timeout,
            poll: Duration::from_secs(2),
            http: http.build().map_err(std::io::Error::other)?,
        })
    }

    /// The URL of a healthy server, re-reading the server-info file while waiting (the server
    /// may come back on another node).
    pub async fn healthy(&self, stop: &CancellationToken) -> Result<String, DiscoverError> {
        let start = Instant::now();
        let mut last;
        let mut next_log = Instant::now();
        loop {
            let url = match &self.source {
                Source::Fixed(u) => u.clone(),
                Source::ServerInfo(path) => match read_server_info(path) {
                    Ok(Some(u)) => u,
                    Ok(None) if start.elapsed() >= self.timeout => {
                        return Err(DiscoverError::NoFile {
                            path: path.clone(),
                            waited: self.timeout,
                        })
                    }
                    Ok(None) => {
                        if Instant::now() >= next_log {
                            eprintln!(
                                "waiting for {} to appear ({:.0}s so far)",
                                path.display(),
                                start.elapsed().as_secs_f64()
                            );
                            next_log = Instant::now() + Duration::from_secs(30);
                        }
                        self.sleep(stop).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match self.http.get(format!("{url}/health")).send().await {
                Ok(r) if r.status().is_success() => return Ok(url),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= self.timeout {
                return Err(DiscoverError::Unhealthy {
                    url,
                    waited: self.timeout,
                    last,
                });
            }
            if Instant::now() >= next_log {
                eprintln!(
                    "waiting for {url}/health ({last}, {:.0}s so far)",
                    start.elapsed().as_secs_f64()
                );
                next_log = Instant::now() + Duration::from_secs(30);
            }
            self.sleep(stop).await?;
        }
    }

    /// One quick health check.
    pub async fn is_healthy(&self, url: &str) -> bool {
        matches!(self.http.get(format!("{url}/health")).send().await, Ok(r) if r.status().is_success())
    }

    async fn sleep(&self, stop: &CancellationToken) -> Result<(), DiscoverError> {
        tokio::select! {
            () = tokio::time::sleep(self.poll) => Ok(()),
            () = stop.cancelled() => Err(DiscoverError::Stopped),
        }
    }
}

/// The URL in a server-info file: its first non-empty line. `None` while the file is absent or
/// still empty (being written).
pub fn read_server_info(path: &Path) -> Result<Option<String>, DiscoverError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let ok = reqwest::Url::parse(line)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .unwrap_or(false);
    if !ok {
        return Err(DiscoverError::Malformed {
            path: path.to_path_buf(),
            content: line.chars().take(120).collect(),
        });
    }
    Ok(Some(line.trim_end_matches('/').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_files_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("server_info.txt");
        assert!(matches!(read_server_info(&p), Ok(None)));
        std::fs::write(&p, "\n  http://node12:8000/ \n").expect("write");
        assert_eq!(
            read_server_info(&p).expect("valid"),
            Some("http://node12:8000".into())
        );
        std::fs::write(&p, "node12 8000").expect("write");
        let err = read_server_info(&p).expect_err("malformed");
        assert!(err.to_string().contains("node12 8000"), "{err}");
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
