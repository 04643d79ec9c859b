//! Finding and loading the tokenizer that prompts are built with.
//!
//! `--tokenizer` names one of:
//! 1. a `tokenizer.json` file (optionally gzip-compressed, `.json.gz`);
//! 2. a folder holding one (and, beside it, an optional `tokenizer_config.json`);
//! 3. a Hugging Face model id (`org/name`), looked up in the local hub cache the way
//!    `huggingface_hub` lays it out: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//!    `~/.cache/huggingface/hub`, then `models--org--name/refs/main` names the snapshot. When the
//!    cache lacks it and `HF_HUB_OFFLINE` is not set, `hf-hub` downloads the files from
//!    `$HF_ENDPOINT` (default `https://huggingface.co`, token from `HF_TOKEN`) into that same
//!    layout.
//!
//! The server counts a prompt's tokens with the special tokens its tokenizer adds (a BOS token,
//! typically). [`PromptTokenizer::special_tokens`] is that number: what the tokenizer's
//! post-processor adds to an empty input, or 1 when `tokenizer_config.json` sets
//! `add_bos_token` and the post-processor adds nothing.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Why a tokenizer could not be loaded; callers show it against `--tokenizer`.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid tokenizer.json: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("folder {0} holds no tokenizer.json")]
    NoTokenizerInFolder(PathBuf),
    #[error("`{id}` is not in the Hugging Face cache at {cache} and HF_HUB_OFFLINE is set; download it first or pass a path")]
    NotCachedOffline { id: String, cache: PathBuf },
    #[error("downloading `{id}` from {url} failed: {message}")]
    Download {
        id: String,
        url: String,
        message: String,
    },
    #[error("`{0}` is neither an existing path nor a Hugging Face model id (org/name)")]
    NotFound(String),
    #[error("tokenizer has no regular (non-special) vocabulary to draw prompts from")]
    EmptyVocabulary,
    #[error("tokenizer failed: {0}")]
    Tokenize(String),
}

/// Where the hub cache lives and whether downloads are allowed, read from the environment.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub cache_dir: PathBuf,
    pub offline: bool,
    pub endpoint: String,
    pub token: Option<String>,
}

impl HubSettings {
    /// Reads `HF_HUB_CACHE`, `HF_HOME`, `HF_HUB_OFFLINE`, `HF_ENDPOINT` and `HF_TOKEN`.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The settings the variables `get` returns give, as `huggingface_hub` reads them: the
    /// cache is `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; an empty
    /// variable counts as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            var("HF_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache/huggingface")))
                .unwrap_or_else(|| PathBuf::from(".cache/huggingface"))
                .join("hub")
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Self {
            cache_dir,
            offline,
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            token: var("HF_TOKEN"),
        }
    }

    /// The snapshot folder of `id` in the cache, if `refs/main` points at one that exists.
    pub fn cached_snapshot(&self, id: &str) -> Option<PathBuf> {
        let repo = self.repo_dir(id);
        let rev = std::fs::read_to_string(repo.join("refs/main")).ok()?;
        let snapshot = repo.join("snapshots").join(rev.trim());
        snapshot
            .join("tokenizer.json")
            .is_file()
            .then_some(snapshot)
    }

    fn repo_dir(&self, id: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", id.replace('/', "--")))
    }
}

/// A loaded tokenizer plus what prompt building needs to know about it.
pub struct PromptTokenizer {
    inner: Tokenizer,
    special_tokens: usize,
    regular_ids: Vec<u32>,
    /// Where it was loaded from, for the result file.
    pub source: String,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("source", &self.source)
            .field("special_tokens", &self.special_tokens)
            .field("regular_vocab", &self.regular_ids.len())
            .finish()
    }
}

impl PromptTokenizer {
    /// Resolves `spec` as the module docs describe and loads it.
    pub async fn resolve(spec: &str, hub: &HubSettings) -> Result<Self, TokenizerError> {
        let path = Path::new(spec);
        if path.exists() {
            return Self::from_path(path);
        }
        if !looks_like_model_id(spec) {
            return Err(TokenizerError::NotFound(spec.to_string()));
        }
        if let Some(snapshot) = hub.cached_snapshot(spec) {
            return Self::from_path(&snapshot);
        }
        if hub.offline {
            return Err(TokenizerError::NotCachedOffline {
                id: spec.to_string(),
                cache: hub.cache_dir.clone(),
            });
        }
        let snapshot = download(spec, hub).await?;
        Self::from_path(&snapshot)
    }

    /// Loads a `tokenizer.json` (or `.json.gz`) file, or a folder holding one.
    pub fn from_path(path: &Path) -> Result<Self, TokenizerError> {
        let (file, config) = if path.is_dir() {
            let file = ["tokenizer.json", "tokenizer.json.gz"]
                .iter()
                .map(|n| path.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| TokenizerError::NoTokenizerInFolder(path.to_path_buf()))?;
            (file, path.join("tokenizer_config.json"))
        } else {
            let dir = path.parent().unwrap_or(Path::new("."));
            (path.to_path_buf(), dir.join("tokenizer_config.json"))
        };
        let bytes = read_maybe_gz(&file)?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| TokenizerError::Parse {
            path: file.clone(),
            message: parse_failure(&bytes, &e.to_string()),
        })?;
        let add_bos = read_add_bos(&config);
        Self::new(inner, add_bos, file.display().to_string())
    }

    fn new(inner: Tokenizer, config_add_bos: bool, source: String) -> Result<Self, TokenizerError> {
        let from_post_processor = inner
            .encode_fast("", true)
            .map_err(|e| TokenizerError::Tokenize(e.to_string()))?
            .len();
        let special_tokens = from_post_processor.max(usize::from(config_add_bos));
        let added: std::collections::HashSet<u32> =
            inner.get_added_tokens_decoder().keys().copied().collect();
        let mut regular_ids: Vec<u32> = inner
            .get_vocab(false)
            .into_values()
            .filter(|id| !added.contains(id))
            .collect();
        regular_ids.sort_unstable();
        if regular_ids.is_empty() {
            return Err(TokenizerError::EmptyVocabulary);
        }
        Ok(Self {
            inner,
            special_tokens,
            regular_ids,
            source,
        })
    }

    /// Tokens the server adds to every prompt (BOS and the like).
    pub fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    /// The ids prompts are drawn from: the vocabulary without special and added tokens.
    pub fn regular_ids(&self) -> &[u32] {
        &self.regular_ids
    }

    /// The id of `token`, special or not.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Tokenize(e.to_string()))
    }

    /// How many tokens the server will count for `text` sent as a completion prompt.
    pub fn count_prompt_tokens(&self, text: &str) -> Result<usize, TokenizerError> {
        Ok(self.encode(text)?.len() + self.special_tokens)
    }

    /// Text of `ids`, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Tokenize(e.to_string()))
    }
}

fn looks_like_model_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Why bytes are not a tokenizer, in words: JSON that is something else (a config, a result
/// file) is named as such, rather than reported as a syntax error deep inside it.
fn parse_failure(bytes: &[u8], message: &str) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return "empty (an interrupted download? delete it and fetch it again)".into();
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Err(e) => format!("not JSON ({e})"),
        Ok(v) if v.get("model").is_none() => {
            let keys: Vec<String> = v
                .as_object()
                .map(|o| o.keys().take(5).cloned().collect())
                .unwrap_or_default();
            format!(
                "JSON, but not a Hugging Face tokenizer.json (no \"model\" section; its keys: {})",
                keys.join(", ")
            )
        }
        Ok(_) => message.to_string(),
    }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    let read_err = |source| TokenizerError::Read {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(read_err)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(read_err)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// `add_bos_token` from `tokenizer_config.json`; absent or unreadable means false.
fn read_add_bos(config: &Path) -> bool {
    std::fs::read(config)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("add_bos_token").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// Downloads `tokenizer.json` (required) and `tokenizer_config.json` (optional) into the hub
/// cache with `hf-hub`, as `huggingface_hub` lays it out (blobs, a snapshot of links, `refs/main`),
/// and returns the snapshot folder. Each file is downloaded beside its blob and renamed into
/// place whole, so a download cut short never leaves a file later runs would read as cached.
async fn download(id: &str, hub: &HubSettings) -> Result<PathBuf, TokenizerError> {
    let base = hub.endpoint.trim_end_matches('/');
    let fail = |name: &str, message: String| TokenizerError::Download {
        id: id.to_string(),
        url: format!("{base}/{id}/resolve/main/{name}"),
        message,
    };
    let api = hf_hub::api::tokio::ApiBuilder::from_cache(hf_hub::Cache::new(hub.cache_dir.clone()))
        .with_endpoint(base.to_string())
        .with_token(hub.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| fail("tokenizer.json", e.to_string()))?;
    let repo = api.model(id.to_string());
    let tokenizer = repo
        .get("tokenizer.json")
        .await
        .map_err(|e| fail("tokenizer.json", e.to_string()))?;
    // Optional: a model without one adds no BOS token of its own.
    let _ = repo.get("tokenizer_config.json").await;
    tokenizer
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| fail("tokenizer.json", "no snapshot folder".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_recognised() {
        assert!(looks_like_model_id("MiniMaxAI/MiniMax-M2.1"));
        assert!(looks_like_model_id("gpt2"));
        assert!(!looks_like_model_id("/abs/path"));
        assert!(!looks_like_model_id("a/b/c"));
        assert!(!looks_like_model_id("../x"));
    }

    #[test]
    fn the_cache_is_hub_cache_then_hf_home_then_home_as_huggingface_hub_reads_them() {
        let settings = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
            HubSettings::from_vars(move |k| {
                vars.iter()
                    .find(|(name, _)| name == k)
                    .map(|(_, v)| v.clone())
            })
        };
        let all = [("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("HOME", "/u")];
        assert_eq!(settings(&all).cache_dir, PathBuf::from("/c"));
        assert_eq!(settings(&all[1..]).cache_dir, PathBuf::from("/h/hub"));
        assert_eq!(
            settings(&all[2..]).cache_dir,
            PathBuf::from("/u/.cache/huggingface/hub")
        );
        // An empty variable is unset, as in huggingface_hub.
        let empty = [("HF_HUB_CACHE", ""), ("HF_HOME", "/h")];
        assert_eq!(settings(&empty).cache_dir, PathBuf::from("/h/hub"));
        assert_eq!(
            settings(&all).repo_dir("org/m"),
            PathBuf::from("/c/models--org--m")
        );
        for (value, offline) in [
            ("1", true),
            ("TRUE", true),
            ("on", true),
            ("0", false),
            ("", false),
        ] {
            assert_eq!(
                settings(&[("HF_HUB_OFFLINE", value)]).offline,
                offline,
                "{value}"
            );
        }
        let s = settings(&[]);
        assert_eq!(
            (s.endpoint.as_str(), s.token),
            ("https://huggingface.co", None)
        );
        let s = settings(&[("HF_ENDPOINT", "http://mirror"), ("HF_TOKEN", "t")]);
        assert_eq!(
            (s.endpoint.as_str(), s.token.as_deref()),
            ("http://mirror", Some("t"))
        );
    }
}
