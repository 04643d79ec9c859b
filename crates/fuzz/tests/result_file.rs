//! The result-file loader on real files of all three producers (ours, the Python script's and
//! `vllm bench serve`'s), changed at random: it reads them or refuses them with an error that
//! names the file, and, when one key holds a value of the wrong kind, names that key.

use bench_result::{parse, ReadError};
use fuzz::{corpus, mutated};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;

const DIRS: &[&str] = &[
    "testdata/results/inferperf",
    "testdata/results/python",
    "testdata/results/vllm",
];

fn seeds() -> Vec<Vec<u8>> {
    corpus(DIRS, &[".json"])
}

fn objects() -> Vec<serde_json::Map<String, Value>> {
    seeds()
        .iter()
        .map(|b| match serde_json::from_slice(b) {
            Ok(Value::Object(m)) => m,
            other => panic!("a corpus result file is not a JSON object: {other:?}"),
        })
        .collect()
}

/// Any JSON value, nested a little.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(fuzz::config(512))]

    #[test]
    fn changed_bytes_are_read_or_refused_naming_the_file(input in mutated(seeds())) {
        let path = Path::new("results/cell_tp4_isl1024_osl128_conc4.json");
        if let Err(e) = parse(&input, path) {
            prop_assert!(e.to_string().contains("cell_tp4_isl1024_osl128_conc4.json"), "{}", e);
        }
    }

    #[test]
    fn a_key_with_a_value_of_the_wrong_kind_is_named(
        file in prop::sample::select(objects()),
        which in any::<prop::sample::Index>(),
        value in json(),
    ) {
        let mut file = file;
        let key = file.keys().nth(which.index(file.len())).cloned().expect("a key");
        file.insert(key.clone(), value);
        let bytes = serde_json::to_vec(&Value::Object(file)).expect("serializes");
        match parse(&bytes, Path::new("r.json")) {
            Ok(_) => {}
            Err(ReadError::BadKey { key: named, .. }) => {
                prop_assert!(
                    named == key || named.starts_with(&format!("{key}.")) || named.starts_with(&format!("{key}[")),
                    "changed `{}`, error names `{}`", key, named
                );
            }
            Err(other) => prop_assert!(false, "changed `{}`: {}", key, other),
        }
    }

    #[test]
    fn what_is_read_is_written_back_the_same(file in prop::sample::select(seeds())) {
        let read = parse(&file, Path::new("r.json")).expect("a corpus file reads");
        let again = serde_json::to_vec(&read).expect("serializes");
        prop_assert_eq!(parse(&again, Path::new("r.json")).expect("reads back"), read);
    }
}
