//! Finding a tokenizer by Hugging Face model id: the local cache layout, offline mode, and a
//! download into the cache (from a local stand-in for the hub).

use crate::support::tokenizer_dir;
use axum::routing::get;
use bench_core::tokenizer::{HubSettings, PromptTokenizer, TokenizerError};
use std::path::Path;

fn settings(cache: &Path, offline: bool, endpoint: &str) -> HubSettings {
    HubSettings {
        cache_dir: cache.to_path_buf(),
        offline,
        endpoint: endpoint.to_string(),
        token: None,
    }
}

fn fixture_json() -> Vec<u8> {
    let raw = std::fs::read(tokenizer_dir().join("tokenizer.json.gz")).expect("fixture");
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
        .expect("gunzip");
    out
}

#[tokio::test]
async fn a_cached_model_id_resolves_to_its_snapshot() {
    let cache = tempfile::tempdir().expect("tempdir");
    let repo = cache.path().join("models--acme--tiny-model");
    let snap = repo.join("snapshots/abc123");
    std::fs::create_dir_all(&snap).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), "abc123").expect("write");
    std::fs::write(snap.join("tokenizer.json"), fixture_json()).expect("write");
    let tok = PromptTokenizer::resolve(
        "acme/tiny-model",
        &settings(cache.path(), true, "http://127.0.0.1:9"),
    )
    .await
    .expect("resolves from cache");
    assert!(tok.source.contains("snapshots/abc123"));
}

#[tokio::test]
async fn offline_mode_refuses_to_download() {
    let cache = tempfile::tempdir().expect("tempdir");
    let err = PromptTokenizer::resolve(
        "acme/absent",
        &settings(cache.path(), true, "http://127.0.0.1:9"),
    )
    .await
    .expect_err("not cached");
    assert!(
        matches!(err, TokenizerError::NotCachedOffline { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_HUB_OFFLINE"));
}

#[tokio::test]
async fn unknown_paths_and_bad_files_are_named() {
    let err = PromptTokenizer::resolve("./no/such/tokenizer.json", &HubSettings::from_env())
        .await
        .expect_err("missing");
    assert!(
        err.to_string().contains("./no/such/tokenizer.json"),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, "{not json").expect("write");
    let err = PromptTokenizer::from_path(&bad).expect_err("invalid");
    assert!(matches!(err, TokenizerError::Parse { .. }), "{err}");
}

/// The hub's answer to a file request: the file, or the byte range asked for (`Range:
/// bytes=a-b`, which is how downloads ask for a file's size and then its parts), with the
/// commit and the blob's etag.
fn hub_file(body: &[u8], headers: &axum::http::HeaderMap) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let meta = [("x-repo-commit", "feedbeef"), ("etag", "\"b10b\"")];
    match range {
        Some((from, to)) if from < body.len() => {
            let to = to.min(body.len() - 1);
            let content_range = format!("bytes {from}-{to}/{}", body.len());
            let part = body[from..=to].to_vec();
            (
                StatusCode::PARTIAL_CONTENT,
                meta,
                [(header::CONTENT_RANGE, content_range)],
                part,
            )
                .into_response()
        }
        _ => (meta, body.to_vec()).into_response(),
    }
}

#[tokio::test]
async fn a_missing_model_is_downloaded_into_the_cache_layout() {
    let body = std::sync::Arc::new(fixture_json());
    let app = axum::Router::new().route(
        "/acme/remote/resolve/main/tokenizer.json",
        get(move |headers: axum::http::HeaderMap| {
            let body = std::sync::Arc::clone(&body);
            async move { hub_file(&body, &headers) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cache = tempfile::tempdir().expect("tempdir");
    let hub = settings(cache.path(), false, &url);
    let tok = PromptTokenizer::resolve("acme/remote", &hub)
        .await
        .expect("downloads");
    assert!(tok.regular_ids().len() > 127_000);
    let repo = cache.path().join("models--acme--remote");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).expect("ref"),
        "feedbeef"
    );
    assert!(repo.join("snapshots/feedbeef/tokenizer.json").is_file());
    // Whole files only: the blob (and its lock), nothing left half-written beside it.
    let mut blobs: Vec<String> = std::fs::read_dir(repo.join("blobs"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    assert_eq!(blobs, ["b10b", "b10b.lock"]);
    assert_eq!(
        std::fs::read(repo.join("blobs/b10b")).expect("blob"),
        fixture_json()
    );
    // Now cached: offline resolution works too.
    let offline = settings(cache.path(), true, "http://127.0.0.1:9");
    assert!(PromptTokenizer::resolve("acme/remote", &offline)
        .await
        .is_ok());
}

#[tokio::test]
async fn a_model_the_hub_does_not_have_is_named_with_the_url_tried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
    let cache = tempfile::tempdir().expect("tempdir");
    let err = PromptTokenizer::resolve("acme/absent", &settings(cache.path(), false, &url))
        .await
        .expect_err("the hub answers 404");
    assert!(matches!(err, TokenizerError::Download { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{url}/acme/absent/resolve/main/tokenizer.json")),
        "{text}"
    );
    assert!(text.contains("404"), "{text}");
}
