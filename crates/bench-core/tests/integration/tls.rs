//! `https://` servers: the same transport over TLS, with kernel arrival times.
//!
//! A TLS-terminating proxy (tokio-rustls, the certificate in testdata/tls) sits in front of the
//! simulator, as an ingress would in front of vLLM.

use crate::support::{config, fixed_sim, run, shared_read_allowance_ms, testdata, truth_tpot_ms};
use bench_core::config::TransportKind;
use bench_core::transport::{Flow, Transport, TransportError};
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// Starts a TLS proxy to `upstream` (host:port) on 127.0.0.1:0 that offers HTTP/1.1 only;
/// returns its port.
async fn tls_proxy(upstream: String) -> u16 {
    tls_proxy_offering(upstream, &[b"http/1.1"], Arc::default()).await
}

/// As [`tls_proxy`], offering `protocols` by ALPN and noting each connection's choice in
/// `chosen` (the simulator speaks both HTTP/1.1 and HTTP/2).
async fn tls_proxy_offering(
    upstream: String,
    protocols: &[&[u8]],
    chosen: Arc<std::sync::Mutex<Vec<Option<Vec<u8>>>>>,
) -> u16 {
    let dir = testdata().join("tls");
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server configuration");
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            let chosen = Arc::clone(&chosen);
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut c) = chosen.lock() {
                    c.push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    port
}

/// A fixed-timing simulator (`ttft_ms`, `itl_ms`) behind a TLS proxy; returns it and the
/// proxy's port.
async fn proxied_sim(ttft_ms: u64, itl_ms: u64) -> (bench_sim::SimHandle, u16) {
    let sim = fixed_sim(ttft_ms, itl_ms, |_| {}).await;
    let port = tls_proxy(sim.url().trim_start_matches("http://").to_string()).await;
    (sim, port)
}

fn test_roots() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(testdata().join("tls/ca.pem"))
        .expect("ca.pem")
    {
        roots
            .add(cert.expect("CA certificate"))
            .expect("a usable root");
    }
    bench_core::tls::with_roots(roots).expect("client configuration")
}

const BODY: &[u8] = br#"{"model":"sim-model","prompt":"hello","max_tokens":12,"stream":true,"ignore_eos":true,"stream_options":{"include_usage":true}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_tls_carry_kernel_arrival_times() {
    let (sim, port) = proxied_sim(5, 2).await;
    let url =
        reqwest::Url::parse(&format!("https://localhost:{port}/v1/completions")).expect("URL");
    let transport = Transport::with_tls(&url, Some(test_roots())).expect("https transport");
    // Twice: the second request reuses the pooled TLS session.
    for _ in 0..2 {
        let mut body = Vec::new();
        let mut arrivals = Vec::new();
        let status = transport
            .post(&[], BODY, |bytes, at| {
                body.extend_from_slice(bytes);
                arrivals.push(at);
                Flow::Continue
            })
            .await
            .expect("a response");
        assert_eq!(status.code, 200);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches("\"text\"").count(), 12, "{text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
    }
    // Every read carried the kernel's stamp. How many reads there were is the machine's: a busy
    // one leaves more events for each read.
    let reads = transport.take_read_stats();
    if cfg!(target_os = "linux") {
        assert!(reads.kernel_stamped >= 2, "{reads:?}");
        assert_eq!(reads.read_stamped, 0, "{reads:?}");
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_connect_failure_that_says_so() {
    let (sim, port) = proxied_sim(5, 2).await;
    // Mozilla's roots do not include the test CA.
    let url =
        reqwest::Url::parse(&format!("https://localhost:{port}/v1/completions")).expect("URL");
    let transport = Transport::for_url(&url).expect("https");
    let err = transport
        .post(&[], BODY, |_, _| Flow::Continue)
        .await
        .expect_err("an untrusted server");
    match err {
        TransportError::Connect(e) => {
            assert!(e.to_string().to_lowercase().contains("certificate"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_a_server_with_a_private_ca() {
    let (sim, port) = proxied_sim(10, 5).await;
    let mut c = config(&format!("https://localhost:{port}"), 8, 32, 10);
    c.ca_cert = Some(testdata().join("tls/ca.pem"));
    c.max_concurrency = std::num::NonZeroUsize::new(4);
    c.num_warmups = 4;
    let report = run(&c).await;
    assert_eq!(report.metrics.completed, 8, "{:?}", report.metrics.failures);
    // TPOT follows what the simulator did, as measure.rs checks without TLS: within 0.5 ms of
    // its own hand-overs, plus one gap (5 ms over a request's 9) when events shared a read, which
    // the relay through the test's TLS proxy does when the machine holds it back.
    let truth = truth_tpot_ms(&report, &sim);
    let measured = report.metrics.tpot_ms.mean;
    let shared = shared_read_allowance_ms(&report, 5.0, 9.0);
    assert!(
        (measured - truth).abs() < 0.5 + shared,
        "TPOT {measured:.3} ms against the simulator's {truth:.3} ms ({} events shared a read)",
        report.metrics.events_sharing_a_read
    );
    if cfg!(target_os = "linux") {
        assert_eq!(
            report.client.timestamps,
            bench_result::sections::Timestamps::Kernel
        );
    }
    // Without the CA, every request fails to connect, and says why.
    c.ca_cert = None;
    let refused = run(&c).await;
    assert_eq!(refused.metrics.completed, 0);
    let connect = &refused.metrics.failures["connect"];
    assert!(
        connect.example.to_lowercase().contains("certificate"),
        "{}",
        connect.example
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_transport_speaks_http2_where_the_server_offers_it() {
    let sim = fixed_sim(10, 5, |_| {}).await;
    let upstream = sim.url().trim_start_matches("http://").to_string();
    for (transport, protocol) in [
        (TransportKind::Standard, &b"h2"[..]),
        (TransportKind::Native, &b"http/1.1"[..]),
    ] {
        let chosen = Arc::default();
        let offered: &[&[u8]] = &[b"h2", b"http/1.1"];
        let port = tls_proxy_offering(upstream.clone(), offered, Arc::clone(&chosen)).await;
        let mut c = config(&format!("https://localhost:{port}"), 16, 32, 10);
        c.ca_cert = Some(testdata().join("tls/ca.pem"));
        c.max_concurrency = std::num::NonZeroUsize::new(8);
        c.num_warmups = 8;
        c.transport = transport;
        // Only the run's own connections: the `/metrics` scraper is a reqwest client too.
        c.server_metrics_interval = None;
        let report = run(&c).await;
        assert_eq!(
            report.metrics.completed, 16,
            "{transport:?}: {:?}",
            report.metrics.failures
        );
        assert!(
            (report.metrics.tpot_ms.mean - 5.0).abs() < 0.5,
            "{transport:?}: TPOT {}",
            report.metrics.tpot_ms.mean
        );
        let chosen = chosen.lock().expect("not poisoned").clone();
        assert!(!chosen.is_empty());
        let names: Vec<String> = chosen
            .iter()
            .map(|p| String::from_utf8_lossy(p.as_deref().unwrap_or(b"none")).into_owned())
            .collect();
        assert!(
            chosen.iter().all(|p| p.as_deref() == Some(protocol)),
            "{transport:?} chose {names:?}"
        );
    }
    sim.stop().await;
}
