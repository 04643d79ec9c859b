//! TLS over a stamped socket, so `https://` servers are timed like `http://` ones.
//!
//! rustls runs as a plain state machine on the bytes `StampedStream` reads: each read's
//! ciphertext goes in, and the plaintext it completes comes out carrying that read's arrival time.
//! A TLS record split across reads is stamped by the read that completed it, the moment its last
//! byte arrived. Certificates are checked against the Mozilla root set (`webpki-roots`), as
//! reqwest does, plus any CA the run names (`--ca-cert`).

use crate::socket::{Arrival, StampedStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The client configuration: Mozilla's roots, plus the CA certificates in `ca_cert` (PEM) when
/// given; HTTP/1.1 by ALPN.
pub fn client_config(ca_cert: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        for cert in extra_roots(path)? {
            roots.add(cert).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a usable CA certificate: {e}", path.display()),
                )
            })?;
        }
    }
    with_roots(roots)
}

/// A `reqwest` client builder for the same server: Mozilla's roots, plus the CA certificates in
/// `ca_cert` (PEM) when given, read through [`extra_roots`] so a bad file is named alike.
pub fn http_client(ca_cert: Option<&Path>) -> io::Result<reqwest::ClientBuilder> {
    let mut http = reqwest::Client::builder();
    if let Some(path) = ca_cert {
        for cert in extra_roots(path)? {
            let cert = reqwest::Certificate::from_der(&cert).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a usable CA certificate: {e}", path.display()),
                )
            })?;
            http = http.add_root_certificate(cert);
        }
    }
    Ok(http)
}

/// The certificates in a PEM file; an error names the file when it has none.
pub fn extra_roots(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: cannot read PEM certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// A client configuration trusting `roots`, HTTP/1.1 by ALPN.
pub fn with_roots(roots: rustls::RootCertStore) -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS session on a stamped TCP connection.
#[derive(Debug)]
pub struct TlsStream {
    tcp: StampedStream,
    session: ClientConnection,
    /// Plaintext of the last read, handed out at once.
    plain: Vec<u8>,
    /// The server closed the session (`close_notify`).
    closed: bool,
}

impl TlsStream {
    /// What the connection holds right now; a session the server closed is gone.
    pub fn peek_state(&self) -> crate::socket::PeerState {
        if self.closed {
            crate::socket::PeerState::Gone
        } else {
            self.tcp.peek_state()
        }
    }

    /// Connects to `authority` and completes the handshake for `host`.
    pub async fn connect(
        authority: &str,
        host: &str,
        config: Arc<ClientConfig>,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .to_owned();
        let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut stream = Self {
            tcp: StampedStream::connect(authority).await?,
            session,
            plain: Vec::new(),
            closed: false,
        };
        while stream.session.is_handshaking() {
            stream.flush().await?;
            if stream.session.wants_read() {
                let Self {
                    tcp,
                    session,
                    plain,
                    ..
                } = &mut stream;
                let ended = tcp
                    .read_with(|bytes, _| {
                        Ok::<_, io::Error>(bytes.is_empty() || absorb(session, bytes, plain)?)
                    })
                    .await??;
                if ended {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        stream.flush().await?;
        Ok(stream)
    }

    /// Sends whatever the session has to send.
    async fn flush(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            let mut out = Vec::new();
            self.session.write_tls(&mut out)?;
            self.tcp.write_all(&[&out]).await?;
        }
        Ok(())
    }

    /// Writes every byte of `parts`, encrypted, in order.
    pub async fn write_all(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            self.session.writer().write_all(part)?;
        }
        self.flush().await
    }

    /// Reads until plaintext arrives (or the session ends) and hands it (empty at the end) and
    /// the arrival of the read that completed it to `take`.
    pub async fn read_with<R>(
        &mut self,
        mut take: impl FnMut(&[u8], Arrival) -> R,
    ) -> io::Result<R> {
        loop {
            if self.closed {
                return Ok(take(&[], Arrival::read_now()));
            }
            let Self {
                tcp,
                session,
                plain,
                closed,
            } = self;
            let outcome = tcp
                .read_with(|bytes, arrival| -> io::Result<Option<R>> {
                    if bytes.is_empty() {
                        return Ok(Some(take(&[], arrival)));
                    }
                    plain.clear();
                    *closed |= absorb(session, bytes, plain)?;
                    Ok((!plain.is_empty() || *closed).then(|| take(plain, arrival)))
                })
                .await??;
            // The session may owe the server a reply (a key update, an alert).
            self.flush().await?;
            if let Some(result) = outcome {
                return Ok(result);
            }
        }
    }
}

/// Feeds one read's ciphertext to the session and moves the plaintext it completes into
/// `plain`; `true` once the server closed the session.
fn absorb(
    session: &mut ClientConnection,
    mut bytes: &[u8],
    plain: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut closed = false;
    while !bytes.is_empty() {
        session.read_tls(&mut bytes)?;
        session
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        closed |= drain(session, plain)?;
    }
    Ok(closed)
}

/// Moves the plaintext the session has into `plain`; `true` once the server closed the session.
fn drain(session: &mut ClientConnection, plain: &mut Vec<u8>) -> io::Result<bool> {
    // Reads straight into `plain`. "Would block" means all there is has been taken, and
    // `read_to_end` keeps what it appended before returning it.
    match session.reader().read_to_end(plain) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}
