//! What the property tests of untrusted input (issue 18) share: generators of arbitrary and
//! near-valid JSON, and the check that a refusal is something a person can act on.

use proptest::prelude::*;
use serde_json::Value;

/// Fragments of `Debug` output: a refusal showing one is a dump of a value, not a sentence.
const DEBUG_MARKS: [&str; 8] = [
    "Error {",
    "Error(",
    "Some(",
    "None,",
    "Spanned",
    "{ message:",
    "{ kind:",
    "{ line:",
];

/// A refusal a person can act on: words, and no `Debug` dump of an error or an `Option`.
pub fn clear(shown: &str) -> Result<(), TestCaseError> {
    prop_assert!(!shown.trim().is_empty(), "an empty refusal");
    prop_assert!(
        shown.chars().any(char::is_alphabetic),
        "a refusal without a word: {:?}",
        shown
    );
    for mark in DEBUG_MARKS {
        prop_assert!(
            !shown.contains(mark),
            "a Debug dump ({:?}) in the refusal: {}",
            mark,
            shown
        );
    }
    Ok(())
}

/// Any JSON value, its object keys drawn from `keys` (the names the reader looks for) as often
/// as from arbitrary text, so that nested shapes the reader walks into are reached.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        odd_number_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(keys), inner), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(keys).prop_map(String::from),
        any::<String>(),
    ]
}

/// Text that numbers are read from, at its edges: NaN, infinities, huge, tiny, signs, junk.
pub fn odd_number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "NaN",
                "nan",
                "+Inf",
                "-Inf",
                "inf",
                "Infinity",
                "1e309",
                "-1e309",
                "1e-400",
                "-0",
                "0",
                "",
                " 1",
                "1 ",
                "0x10",
                "18446744073709551616",
                "-9223372036854775809",
                "1_000",
                "١",
            ][..]
        )
        .prop_map(String::from),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        "[-+0-9.eE]{0,12}",
    ]
}

/// `v` with its `at`-th node (depth first, `v` itself first) replaced by `with`.
pub fn replace_node(v: &mut Value, at: usize, with: Value) {
    fn walk(v: &mut Value, left: &mut usize, with: &mut Option<Value>) {
        if *left == 0 {
            if let Some(w) = with.take() {
                *v = w;
            }
            return;
        }
        *left -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, left, with)),
            Value::Object(o) => o.values_mut().for_each(|c| walk(c, left, with)),
            _ => {}
        }
    }
    let at = at % nodes(v);
    walk(v, &mut { at }, &mut Some(with));
}

/// `v` with the `at`-th key (depth first) of any of its objects removed; unchanged when it has
/// no object key.
pub fn remove_key(v: &mut Value, at: usize) {
    fn keys(v: &Value) -> usize {
        match v {
            Value::Array(a) => a.iter().map(keys).sum(),
            Value::Object(o) => o.len() + o.values().map(keys).sum::<usize>(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, left: &mut usize) -> bool {
        match v {
            Value::Array(a) => a.iter_mut().any(|c| walk(c, left)),
            Value::Object(o) => {
                if *left < o.len() {
                    let k = o.keys().nth(*left).cloned().unwrap_or_default();
                    o.remove(&k);
                    return true;
                }
                *left -= o.len();
                o.values_mut().any(|c| walk(c, left))
            }
            _ => false,
        }
    }
    let n = keys(v);
    if n > 0 {
        walk(v, &mut (at % n));
    }
}

fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(nodes).sum(),
        Value::Object(o) => o.values().map(nodes).sum(),
        _ => 0,
    }
}

/// `text` with `insert` put in at about `at`, and then cut there: a byte of damage, then a
/// truncated answer (what a dropped connection leaves).
pub fn damaged(text: &str, at: usize, insert: char) -> [String; 2] {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let mut inserted = text.to_string();
    inserted.insert(at, insert);
    [inserted, text[..at].to_string()]
}
