//! Fuzzing for the parsers that read what other programs wrote: the SSE decoder, the chunked
//! decoder, the result-file loader and the server-info parser (their tests are in `tests/`).
//!
//! Inputs are seeds from a corpus kept in the repository (real captures in `testdata/` and the
//! hand-picked edge cases in `corpus/`), changed by a few random [`Edit`]s, and fed to the parser
//! in random pieces. Proptest shrinks a failing input to a small one and keeps it in
//! `proptest-regressions/`, which is committed, so every failure found once is tried again by
//! every later run. The suite searches from a fixed seed, so it gives the same verdict every
//! time; `PROPTEST_CASES=100000 cargo test -p fuzz` searches longer, and `PROPTEST_RNG_SEED=<n>`
//! elsewhere.

use proptest::prelude::*;
use proptest::sample::Index;
use std::path::{Path, PathBuf};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file directly in the repository folders `dirs` whose name ends with one of `exts`,
/// read whole. Panics when there is none: a fuzz test without seeds would test nothing.
pub fn corpus(dirs: &[&str], exts: &[&str]) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for dir in dirs {
        let path = repo_root().join(dir);
        let entries = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("corpus folder {}: {e}", path.display()));
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.to_string_lossy();
                exts.iter().any(|ext| name.ends_with(ext))
            })
            .collect();
        files.sort();
        for file in files {
            seeds.push(std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
        }
    }
    assert!(!seeds.is_empty(), "no corpus files in {dirs:?}");
    seeds
}

/// The seed the suite searches from, so `cargo test` gives the same verdict on every run.
pub const SEED: u64 = 0x1f_e4_e5_f0;

/// Proptest's settings: `cases` cases from [`SEED`], unless `PROPTEST_CASES` or
/// `PROPTEST_RNG_SEED` ask for others (a longer search, or new inputs).
pub fn config(cases: u32) -> ProptestConfig {
    // Reads PROPTEST_CASES and PROPTEST_RNG_SEED.
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(SEED);
    }
    config
}

/// Byte sequences that matter to the formats fuzzed here, spliced in more often than chance.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"data:",
    b"data: ",
    b"event: error\n",
    b": ping\n",
    b"[DONE]",
    b"{",
    b"}",
    b"\"",
    b"null",
    b"-1",
    b"1e400",
    b"\xff\xfe",
    b"\xe4\xb8",
    b"0\r\n\r\n",
    b"ffffffffffffffffff\r\n",
    b";ext=1",
    b"http://",
    b" ",
];

/// One change to an input.
#[derive(Debug, Clone)]
pub enum Edit {
    FlipBit { at: Index, bit: u8 },
    Insert { at: Index, bytes: Vec<u8> },
    Delete { at: Index, len: usize },
    Duplicate { at: Index, len: usize },
    Truncate { at: Index },
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec);
    let bytes = prop_oneof![token, prop::collection::vec(any::<u8>(), 1..16)];
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::FlipBit { at, bit }),
        (any::<Index>(), bytes).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<Index>(), 1usize..64).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<Index>(), 1usize..64).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        any::<Index>().prop_map(|at| Edit::Truncate { at }),
    ]
}

/// `input` with `edits` applied in order.
pub fn apply(mut input: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = input.len();
        let pos = |at: &Index| if len == 0 { 0 } else { at.index(len) };
        match e {
            Edit::FlipBit { at, bit } if len > 0 => input[pos(at)] ^= 1 << bit,
            Edit::FlipBit { .. } => {}
            Edit::Insert { at, bytes } => {
                let p = pos(at);
                input.splice(p..p, bytes.iter().copied());
            }
            Edit::Delete { at, len: n } => {
                let p = pos(at);
                input.drain(p..(p + n).min(len));
            }
            Edit::Duplicate { at, len: n } => {
                let p = pos(at);
                let copy = input[p..(p + n).min(len)].to_vec();
                input.splice(p..p, copy);
            }
            Edit::Truncate { at } => input.truncate(pos(at)),
        }
    }
    input
}

/// A seed from `seeds` with zero to five edits: unchanged seeds stay in the mix, so the
/// properties are also checked on the real thing.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit(), 0..6),
    )
        .prop_map(|(seed, edits)| apply(seed, &edits))
}

/// Where to cut an input into pieces, as reads from a socket would.
pub fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..12)
}

/// `input` cut at `cuts` (positions in any order, repeats allowed: empty pieces are fine).
pub fn pieces<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for p in at {
        out.push(&input[start..p]);
        start = p;
    }
    out.push(&input[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    #[test]
    fn pieces_put_back_together_are_the_input() {
        let input = b"data: 1\n\ndata: 2\n\n";
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..200 {
            let c = cuts().new_tree(&mut runner).expect("cuts").current();
            assert_eq!(pieces(input, &c).concat(), input);
        }
    }

    #[test]
    fn edits_change_what_they_say() {
        let input = b"abcdef".to_vec();
        assert_eq!(
            apply(
                input.clone(),
                &[Edit::Truncate {
                    at: any_index(3, 6)
                }]
            ),
            b"abc"
        );
        assert_eq!(
            apply(
                input.clone(),
                &[Edit::Delete {
                    at: any_index(1, 6),
                    len: 2
                }]
            ),
            b"adef"
        );
        assert_eq!(
            apply(
                input,
                &[Edit::Insert {
                    at: any_index(0, 6),
                    bytes: b"xy".to_vec()
                }]
            ),
            b"xyabcdef"
        );
    }

    /// An `Index` that picks `want` out of `len`.
    fn any_index(want: usize, len: usize) -> Index {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        loop {
            let i = any::<Index>()
                .new_tree(&mut runner)
                .expect("index")
                .current();
            if i.index(len) == want {
                return i;
            }
        }
    }
}
