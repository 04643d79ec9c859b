//! Random-token prompts of exact length.
//!
//! Each prompt is built from token ids drawn uniformly from the tokenizer's regular vocabulary,
//! decoded to text, then re-encoded and repaired until the text is exactly the target length *as
//! the server will count it* (special tokens the server adds included). Every prompt has its own
//! random stream derived from `(seed, index)`, so prompts differ from one another (a server's
//! prefix cache cannot serve one from another), the set is reproducible from the seed, and the
//! result does not depend on how many threads build it.
//!
//! Lengths: prompt i targets `prefix_len + L_i` tokens, where `L_i` is drawn uniformly from the
//! integers in `[L (1 - r), L (1 + r)]` (as vLLM's random dataset, `--random-range-ratio r`).
//! The shared prefix is the same text at the start of every prompt (`--random-prefix-len`).
//!
//! Repair: re-encoding decoded random ids rarely gives the same count (byte-level BPE merges
//! neighbours, invalid UTF-8 becomes U+FFFD). Each round encodes the text; too long, it keeps the
//! first n of those tokens; too short, it appends fresh random ids; then decodes again. Canonical
//! token sequences are stable under decode/encode except near the cut, so this converges in a few
//! rounds. A prompt still off after [`MAX_REPAIR_ROUNDS`] keeps its closest text and is counted
//! as a miss in [`PromptStats`].
//!
//! Speed: re-encoding a 14,000-token prompt costs ~35 ms with a 128k byte-level BPE tokenizer
//! (pre-tokenization alone is ~0.9 us/token), so long prompts are *assembled* instead: a seeded
//! pool of canonical segments (random ids, decoded and re-encoded once) is shared by every set of
//! one spec ([`PromptSource`]); a prompt is a fresh random head (which makes it unique), pool
//! segments in random order, and a fresh tail repaired to the exact remaining count. Every junction
//! is checked by re-encoding the text around it (the pieces must tokenize the same apart and
//! together), so the total is the sum of the parts. A sample of assembled prompts (all of them for
//! small sets) is then re-encoded in full; if any is off, the whole set is rebuilt the slow way, so
//! the length guarantee never rests on the shortcut alone.

use crate::tokenizer::{PromptTokenizer, TokenizerError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Rounds of decode/encode repair before a prompt is accepted as it is.
pub const MAX_REPAIR_ROUNDS: usize = 12;

/// Which prompts to build.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSpec {
    /// `L`: mean random length in tokens (server count, prefix excluded).
    pub input_len: u64,
    /// `r` in [0, 1).
    pub range_ratio: f64,
    /// Tokens of shared prefix at the start of every prompt.
    pub prefix_len: u64,
    /// The seed these prompts come from: the same seed and spec build the same prompts.
    pub seed: u64,
    /// Where `seed` came from.
    pub seed_origin: SeedOrigin,
}

/// Where a run's prompt seed came from: drawn for the run, or given.
///
/// A server's prefix cache keeps prompts it has seen; prompts that repeat an earlier run's are
/// served from it and make TTFT and prefill throughput look better than they are. So by default
/// every run draws a fresh seed, and a sweep derives each cell's (and each attempt's) seed from
/// its own: no two runs share a prompt prefix unless `--random-prefix-len` asks for one. A
/// given `--seed` reproduces a run exactly, prefix cache and all.
pub use bench_result::settings::SeedOrigin;

/// What a user should know before sending prompts from a given seed; nothing for a fresh one.
pub fn seed_caution(origin: SeedOrigin) -> Option<String> {
    match origin {
        SeedOrigin::Random => None,
        SeedOrigin::Given(s) => Some(format!(
            "--seed {s}: these prompts repeat those of any earlier run with the same seed and \
             lengths; a server that served them may answer from its prefix cache and show a \
             shorter TTFT (leave --seed out for fresh prompts; the result's server section \
             says whether the cache was hit)"
        )),
    }
}

/// A seed no earlier run used (to within 2^-64), from the operating system's randomness.
pub fn fresh_seed() -> u64 {
    rand::random()
}

/// A seed for one part of a larger run (a sweep's cell and attempt), mixed from `base` and the
/// part's coordinates with SplitMix64's finalizer: distinct parts get unrelated seeds.
pub fn derive_seed(base: u64, parts: &[u64]) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    parts.iter().fold(mix(base), |acc, p| {
        mix(acc ^ p.wrapping_add(0x9e37_79b9_7f4a_7c15))
    })
}

/// Which part of the request set a prompt belongs to; each has its own random streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptRole {
    Measured,
    Warmup,
}

/// One prompt ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    /// Tokens the server will count (verified by re-encoding).
    pub tokens: u64,
    /// What it was meant to be.
    pub target: u64,
}

/// Length figures for a built set (the result file's `prompt_lengths`).
pub type PromptStats = bench_result::sections::PromptLengths;

/// Builds `count` prompts for `role`. Runs on every core (rayon). To build more than one role
/// from the same spec, [`PromptSource`] builds what they share once.
pub fn build(
    tokenizer: &PromptTokenizer,
    spec: &PromptSpec,
    role: PromptRole,
    count: usize,
) -> Result<(Vec<Prompt>, PromptStats), TokenizerError> {
    if count == 0 {
        return Ok((Vec::new(), PromptStats::default()));
    }
    PromptSource::new(tokenizer, spec)?.build(role, count)
}

/// What every prompt of one spec is made from, whatever its role: the shared prefix and, for
/// long prompts, the seeded segment pool they are assembled from (~0.5 s on two cores, as long
/// as building 16 prompts of 8,192 tokens). A run's measured and warm-up sets share it.
#[derive(Debug)]
pub struct PromptSource<'a> {
    tokenizer: &'a PromptTokenizer,
    spec: &'a PromptSpec,
    prefix: Vec<u32>,
    /// Empty when the spec's prompts are too short to assemble.
    pool: Vec<Segment>,
    prefix_segment: Option<Segment>,
    /// How long building the shared parts took.
    setup: Duration,
}

impl<'a> PromptSource<'a> {
    /// Builds the parts `spec`'s prompts share. Runs on every core (rayon).
    pub fn new(
        tokenizer: &'a PromptTokenizer,
        spec: &'a PromptSpec,
    ) -> Result<Self, TokenizerError> {
        let started = Instant::now();
        let prefix = prefix_ids(tokenizer, spec);
        let (_, high) = length_bounds(spec.input_len, spec.range_ratio);
        let pool = if high as usize >= ASSEMBLE_MIN_TOKENS {
            segment_pool(tokenizer, spec.seed)?
        } else {
            Vec::new()
        };
        let prefix_segment = if pool.is_empty() || prefix.is_empty() {
            None
        } else {
            Some(exact_segment(
                tokenizer,
                prefix.clone(),
                &mut pool_rng(spec.seed, 4),
            )?)
        };
        Ok(Self {
            tokenizer,
            spec,
            prefix,
            pool,
            prefix_segment,
            setup: started.elapsed(),
        })
    }

    /// Builds `count` prompts for `role`: the same prompts as [`build`]. Their stats' build
    /// time includes building the shared parts. Runs on every core (rayon).
    pub fn build(
        &self,
        role: PromptRole,
        count: usize,
    ) -> Result<(Vec<Prompt>, PromptStats), TokenizerError> {
        if count == 0 {
            return Ok((Vec::new(), PromptStats::default()));
        }
        let started = Instant::now();
        let (tokenizer, spec) = (self.tokenizer, self.spec);
        let assemble = !self.pool.is_empty();
        let build_all = |fast: bool| {
            (0..count)
                .into_par_iter()
                .map(|i| {
                    let mut rng = prompt_rng(spec.seed, role, i as u64);
                    let target =
                        spec.prefix_len + draw_len(&mut rng, spec.input_len, spec.range_ratio);
                    if fast {
                        if let Some(p) = assemble_one(
                            tokenizer,
                            self.prefix_segment.as_ref(),
                            &self.pool,
                            target,
                            &mut rng,
                        )? {
                            return Ok(p);
                        }
                    }
                    build_one(tokenizer, &self.prefix, target, &mut rng)
                })
                .collect::<Result<Vec<_>, TokenizerError>>()
        };
        let mut prompts = build_all(assemble)?;
        let mut verified = prompts.len();
        if assemble {
            let sample = verification_sample(prompts.len());
            verified = sample.len();
            let all_exact = sample
                .par_iter()
                .map(|&i| {
                    let p = &prompts[i];
                    Ok(tokenizer.count_prompt_tokens(&p.text)? as u64 == p.tokens)
                })
                .collect::<Result<Vec<bool>, TokenizerError>>()?
                .into_iter()
                .all(|ok| ok);
            if !all_exact {
                tracing::warn!("assembled prompts failed verification; rebuilding them one by one");
                prompts = build_all(false)?;
                verified = prompts.len();
            }
        }
        let mut stats = stats_of(&prompts, self.setup + started.elapsed());
        stats.verified_by_reencoding = verified as u64;
        Ok((prompts, stats))
    }
}

/// Prompts shorter than this are built one by one; longer ones are assembled from segments.
const ASSEMBLE_MIN_TOKENS: usize = 2048;
/// Tokens per pooled segment.
const SEGMENT_TOKENS: usize = 256;
/// Segments in the pool shared by one prompt set.
const POOL_SEGMENTS: usize = 512;
/// Fresh random tokens at the start of every assembled prompt; they make it unique.
const HEAD_TOKENS: usize = 48;
/// Candidates tried for one junction before the prompt falls back to the slow path.
const JUNCTION_TRIES: usize = 16;
/// Whole tokens on each side of a junction that are re-encoded to check it.
const EDGE_TOKENS: usize = 4;

/// A piece of prompt text and its canonical token ids (`encode(text) == ids`), with the text
/// of a few whole tokens at each edge that tokenize the same on their own (its stable edges).
#[derive(Debug, Clone)]
struct Segment {
    text: String,
    ids: Vec<u32>,
    /// Stable head window: (byte length, tokens), if one was found.
    head: Option<(usize, usize)>,
    /// Stable tail window: (byte offset where it starts, tokens), if one was found.
    tail: Option<(usize, usize)>,
}

impl Segment {
    fn new(
        tokenizer: &PromptTokenizer,
        text: String,
        ids: Vec<u32>,
    ) -> Result<Self, TokenizerError> {
        let mut seg = Self {
            text,
            ids,
            head: None,
            tail: None,
        };
        for m in EDGE_TOKENS..=EDGE_TOKENS * 2 {
            if m >= seg.ids.len() {
                break;
            }
            let piece = tokenizer.decode(&seg.ids[..m])?;
            if seg.text.starts_with(&piece) && tokenizer.encode(&piece)? == seg.ids[..m] {
                seg.head = Some((piece.len(), m));
                break;
            }
        }
        for m in EDGE_TOKENS..=EDGE_TOKENS * 2 {
            if m >= seg.ids.len() {
                break;
            }
            let piece = tokenizer.decode(&seg.ids[seg.ids.len() - m..])?;
            if seg.text.ends_with(&piece)
                && tokenizer.encode(&piece)? == seg.ids[seg.ids.len() - m..]
            {
                seg.tail = Some((seg.text.len() - piece.len(), m));
                break;
            }
        }
        Ok(seg)
    }
}

fn pool_rng(seed: u64, tag: u8) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[16] = tag;
    ChaCha8Rng::from_seed(key)
}

/// Random ids, decoded and re-encoded: the re-encoded ids are canonical for the text.
fn canonical_segment(tokenizer: &PromptTokenizer, ids: &[u32]) -> Result<Segment, TokenizerError> {
    let text = tokenizer.decode(ids)?;
    let ids = tokenizer.encode(&text)?;
    Segment::new(tokenizer, text, ids)
}

fn segment_pool(tokenizer: &PromptTokenizer, seed: u64) -> Result<Vec<Segment>, TokenizerError> {
    (0..POOL_SEGMENTS)
        .into_par_iter()
        .map(|i| {
            let mut rng = pool_rng(seed ^ ((i as u64 + 1) << 20), 5);
            let ids = random_ids(tokenizer.regular_ids(), SEGMENT_TOKENS, &mut rng);
            canonical_segment(tokenizer, &ids)
        })
        .filter(|s| s.as_ref().map_or(true, |s| !s.ids.is_empty()))
        .collect()
}

/// Decodes `ids`, re-encodes, and repairs until the text encodes to exactly `n` tokens: too
/// long keeps the first `n` of the re-encoded ids, too short appends fresh random ids. Returns the
/// closest text found and its canonical ids (`encode(text)`), exact unless every round missed.
fn repair(
    tokenizer: &PromptTokenizer,
    mut ids: Vec<u32>,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(String, Vec<u32>), TokenizerError> {
    let mut best: Option<(usize, String, Vec<u32>)> = None;
    for _ in 0..MAX_REPAIR_ROUNDS {
        let text = tokenizer.decode(&ids)?;
        let mut encoded = tokenizer.encode(&text)?;
        let miss = encoded.len().abs_diff(n);
        if miss == 0 {
            return Ok((text, encoded));
        }
        if best.as_ref().is_none_or(|b| miss < b.0) {
            best = Some((miss, text, encoded.clone()));
        }
        if encoded.len() > n {
            encoded.truncate(n);
        } else {
            let more = random_ids(tokenizer.regular_ids(), n - encoded.len(), rng);
            encoded.extend(more);
        }
        ids = encoded;
    }
    let (_, text, ids) =
        best.ok_or_else(|| TokenizerError::Tokenize("no repair round ran".into()))?;
    Ok((text, ids))
}

/// A segment of exactly `ids.len()` tokens when repair succeeds (callers check).
fn exact_segment(
    tokenizer: &PromptTokenizer,
    ids: Vec<u32>,
    rng: &mut ChaCha8Rng,
) -> Result<Segment, TokenizerError> {
    let n = ids.len();
    let (text, ids) = repair(tokenizer, ids, n, rng)?;
    Segment::new(tokenizer, text, ids)
}

/// True when `left` then `right` tokenize as `left.ids` then `right.ids`: the stable windows on
/// either side of the junction, re-encoded together, must give both windows' ids back unchanged.
fn joins_cleanly(
    tokenizer: &PromptTokenizer,
    left: &Segment,
    right: &Segment,
) -> Result<bool, TokenizerError> {
    let (Some((tail_at, tail_tokens)), Some((head_len, head_tokens))) = (left.tail, right.head)
    else {
        return Ok(false);
    };
    let joint = tokenizer.encode(&format!(
        "{}{}",
        &left.text[tail_at..],
        &right.text[..head_len]
    ))?;
    let expected = left.ids[left.ids.len() - tail_tokens..]
        .iter()
        .chain(&right.ids[..head_tokens]);
    Ok(joint.len() == tail_tokens + head_tokens && joint.iter().eq(expected))
}

/// Assembles one prompt of `target` server-counted tokens, or `None` when a junction would not
/// join cleanly (the caller then builds it the slow way).
fn assemble_one(
    tokenizer: &PromptTokenizer,
    prefix: Option<&Segment>,
    pool: &[Segment],
    target: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Option<Prompt>, TokenizerError> {
    let specials = tokenizer.special_tokens() as u64;
    let body = target.saturating_sub(specials).max(1) as usize;
    let vocab = tokenizer.regular_ids();
    let mut acc = Assembly {
        text: String::with_capacity(body * 8),
        count: 0,
        last: None,
    };
    if let Some(p) = prefix {
        acc.push(p.clone());
    }
    // Head (fresh, makes the prompt unique), pooled middle, fresh tail of the exact remainder.
    let head_len = HEAD_TOKENS.min(body.saturating_sub(acc.count));
    if !acc.place(tokenizer, || {
        exact_segment(tokenizer, random_ids(vocab, head_len, rng), rng)
            .map(|s| (s.ids.len() == head_len).then_some(s))
    })? {
        return Ok(None);
    }
    while body.saturating_sub(acc.count) > SEGMENT_TOKENS * 2 {
        let pick = || Ok(Some(pool[rng.random_range(0..pool.len())].clone()));
        if !acc.place(tokenizer, pick)? {
            return Ok(None);
        }
    }
    let tail_len = body - acc.count;
    if !acc.place(tokenizer, || {
        exact_segment(tokenizer, random_ids(vocab, tail_len, rng), rng)
            .map(|s| (s.ids.len() == tail_len).then_some(s))
    })? {
        return Ok(None);
    }
    Ok(Some(Prompt {
        text: acc.text,
        tokens: acc.count as u64 + specials,
        target,
    }))
}

/// A prompt being assembled from segments.
struct Assembly {
    text: String,
    count: usize,
    last: Option<Segment>,
}

impl Assembly {
    fn push(&mut self, seg: Segment) {
        self.text.push_str(&seg.text);
        self.count += seg.ids.len();
        self.last = Some(seg);
    }

    /// Tries up to [`JUNCTION_TRIES`] candidates and appends the first that joins cleanly.
    fn place(
        &mut self,
        tokenizer: &PromptTokenizer,
        mut candidate: impl FnMut() -> Result<Option<Segment>, TokenizerError>,
    ) -> Result<bool, TokenizerError> {
        for _ in 0..JUNCTION_TRIES {
            let Some(seg) = candidate()? else { continue };
            let clean = match &self.last {
                Some(left) => joins_cleanly(tokenizer, left, &seg)?,
                None => true,
            };
            if clean {
                self.push(seg);
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Which assembled prompts get a full re-encode: all of a small set, else an even spread of 32.
fn verification_sample(n: usize) -> Vec<usize> {
    const SAMPLE: usize = 32;
    if n <= SAMPLE * 2 {
        return (0..n).collect();
    }
    (0..SAMPLE).map(|k| k * n / SAMPLE).collect()
}

/// The integers in `[L (1 - r), L (1 + r)]`, at least 1.
pub fn length_bounds(input_len: u64, range_ratio: f64) -> (u64, u64) {
    let l = input_len as f64;
    let low = (l * (1.0 - range_ratio)).ceil().max(1.0) as u64;
    let high = ((l * (1.0 + range_ratio)).floor() as u64).max(low);
    (low, high)
}

fn draw_len(rng: &mut ChaCha8Rng, input_len: u64, range_ratio: f64) -> u64 {
    let (low, high) = length_bounds(input_len, range_ratio);
    rng.random_range(low..=high)
}

/// A random stream unique to `(seed, role, index)`.
fn prompt_rng(seed: u64, role: PromptRole, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16] = match role {
        PromptRole::Measured => 1,
        PromptRole::Warmup => 2,
    };
    ChaCha8Rng::from_seed(key)
}

fn prefix_ids(tokenizer: &PromptTokenizer, spec: &PromptSpec) -> Vec<u32> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&spec.seed.to_le_bytes());
    key[16] = 3;
    let mut rng = ChaCha8Rng::from_seed(key);
    random_ids(tokenizer.regular_ids(), spec.prefix_len as usize, &mut rng)
}

fn random_ids(vocab: &[u32], n: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    (0..n)
        .map(|_| vocab[rng.random_range(0..vocab.len())])
        .collect()
}

/// Builds one prompt of `target` server-counted tokens whose text starts with the prefix's text.
fn build_one(
    tokenizer: &PromptTokenizer,
    prefix: &[u32],
    target: u64,
    rng: &mut ChaCha8Rng,
) -> Result<Prompt, TokenizerError> {
    let specials = tokenizer.special_tokens() as u64;
    // The body is what we encode; the server adds `specials` on top.
    let body = target.saturating_sub(specials).max(1) as usize;
    let mut ids = prefix.to_vec();
    ids.truncate(body);
    let fill = body - ids.len();
    ids.extend(random_ids(tokenizer.regular_ids(), fill, rng));
    let (text, ids) = repair(tokenizer, ids, body, rng)?;
    Ok(Prompt {
        text,
        tokens: ids.len() as u64 + specials,
        target,
    })
}

fn stats_of(prompts: &[Prompt], took: Duration) -> PromptStats {
    if prompts.is_empty() {
        return PromptStats::default();
    }
    let n = prompts.len() as f64;
    PromptStats {
        count: prompts.len() as u64,
        target_mean: prompts.iter().map(|p| p.target as f64).sum::<f64>() / n,
        mean: prompts.iter().map(|p| p.tokens as f64).sum::<f64>() / n,
        min: prompts.iter().map(|p| p.tokens).min().unwrap_or(0),
        max: prompts.iter().map(|p| p.tokens).max().unwrap_or(0),
        missed: prompts.iter().filter(|p| p.tokens != p.target).count() as u64,
        max_abs_miss: prompts
            .iter()
            .map(|p| p.tokens.abs_diff(p.target))
            .max()
            .unwrap_or(0),
        verified_by_reencoding: prompts.len() as u64,
        build_seconds: took.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bounds_are_the_integers_inside_the_interval() {
        assert_eq!(length_bounds(1000, 0.0), (1000, 1000));
        assert_eq!(length_bounds(1000, 0.2), (800, 1200));
        assert_eq!(length_bounds(10, 0.25), (8, 12));
        assert_eq!(length_bounds(1, 0.99), (1, 1));
    }

    #[test]
    fn random_streams_differ_by_index_and_role() {
        let draw = |role, i| prompt_rng(7, role, i).random::<u64>();
        assert_ne!(draw(PromptRole::Measured, 0), draw(PromptRole::Measured, 1));
        assert_ne!(draw(PromptRole::Measured, 0), draw(PromptRole::Warmup, 0));
        assert_eq!(draw(PromptRole::Warmup, 3), draw(PromptRole::Warmup, 3));
    }
}
