//! Property tests of the PromQL answer reader on bad input at volume (issue 18): arbitrary
//! bytes and JSON, answers of the right shape carrying NaN, infinities, huge, negative and
//! non-numeric values, empty vectors and odd labels, and valid answers with one node replaced,
//! one key removed or the text damaged. Nothing panics; an accepted answer only ever gives
//! finite, non-negative counters (summed too); every refusal is a sentence naming the query.

use super::*;
use crate::props_util::{clear, damaged, json, odd_number_text, remove_key, replace_node};
use proptest::prelude::*;
use serde_json::{json as j, Value};

const QUERY: &str = r#"sum(http_requests_total{job="shop"})"#;

/// The names the reader looks for, so generated JSON reaches past its first checks.
const KEYS: &[&str] = &[
    "status",
    "data",
    "resultType",
    "result",
    "metric",
    "value",
    "values",
    "error",
    "errorType",
    "warnings",
    "job",
    "instance",
    "__name__",
];

/// A refusal of `promql_series`, alone and as the read error it becomes.
fn clear_refusal(message: &str) -> Result<(), TestCaseError> {
    clear(message)?;
    prop_assert!(
        message.starts_with("not JSON: ") || message.contains(&format!("{QUERY:?}")),
        "names neither the query nor JSON: {}",
        message
    );
    let shown = SourceError::Garbage {
        url: "http://127.0.0.1:9090/".into(),
        message: message.to_string(),
    }
    .to_string();
    clear(&shown)?;
    prop_assert!(shown.contains("127.0.0.1:9090"), "{}", shown);
    Ok(())
}

/// Reads `body` as the requests and the errors answer of two reads in a row: what is
/// accepted becomes finite, non-negative counters, or the read is refused clearly.
fn read_twice(body: &str) -> Result<(), TestCaseError> {
    let series = match promql_series(body, QUERY) {
        Ok(s) => s,
        Err(e) => return clear_refusal(&e),
    };
    for s in &series {
        prop_assert!(valid_counter(s.value), "{} accepted as {}", s.key, s.value);
    }
    let mut counters = Counters::default();
    for _ in 0..2 {
        let raw = Raw {
            requests: series.clone(),
            errors: series.clone(),
            latency: Some((series.clone(), series.clone())),
        };
        match counters.reading(&raw, None) {
            Ok(r) => {
                let (sum, count) = r.latency.unwrap_or_default();
                for v in [r.requests, r.errors, sum, count] {
                    prop_assert!(valid_counter(v), "a reading of {} from {}", v, body);
                }
            }
            Err(e) => {
                clear(&e)?;
                break;
            }
        }
    }
    Ok(())
}

fn labels() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        proptest::sample::select(&["job", "instance", "__name__", "code", ""][..])
            .prop_map(String::from),
        any::<String>(),
    ];
    let value = prop_oneof![
        any::<String>().prop_map(Value::String),
        json(KEYS),
        "[a-z:0-9]{0,8}".prop_map(Value::String),
    ];
    prop_oneof![
        proptest::collection::vec((name, value), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        json(KEYS),
    ]
}

/// A sample's `[time, "value"]`, its value at the edges of what parses.
fn sample() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        odd_number_text(),
        (0u64..1_000_000).prop_map(|n| n.to_string()),
        Just("1.7976931348623157e308".to_string()),
    ];
    prop_oneof![
        8 => (any::<f64>(), number.clone()).prop_map(|(t, v)| j!([t, v])),
        1 => (number.clone(), any::<f64>()).prop_map(|(v, t)| j!([v, t])),
        1 => number.prop_map(|v| j!([v])),
        1 => json(KEYS),
    ]
}

/// An answer of the right shape: a vector of series, or a scalar.
fn answer() -> impl Strategy<Value = Value> {
    let series =
        (labels(), sample()).prop_map(|(metric, value)| j!({"metric": metric, "value": value}));
    prop_oneof![
        4 => proptest::collection::vec(series, 0..6).prop_map(|result| {
            j!({"status": "success", "data": {"resultType": "vector", "result": result}})
        }),
        1 => sample().prop_map(|result| {
            j!({"status": "success", "data": {"resultType": "scalar", "result": result}})
        }),
        1 => (any::<String>(), json(KEYS)).prop_map(|(error, t)| {
            j!({"status": "error", "errorType": t, "error": error})
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_refused_clearly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        read_twice(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_json_is_refused_clearly(v in json(KEYS)) {
        read_twice(&v.to_string())?;
    }

    #[test]
    fn answers_of_the_right_shape_give_finite_counters_or_a_clear_refusal(v in answer()) {
        read_twice(&v.to_string())?;
    }

    /// The values that are counters are read as such; every other one refuses the answer.
    #[test]
    fn a_vector_is_refused_exactly_when_a_value_is_not_a_counter(values in proptest::collection::vec(odd_number_text(), 0..6)) {
        let result: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| j!({"metric": {"instance": format!("i{i}")}, "value": [1.5, v]}))
            .collect();
        let body = j!({"status": "success", "data": {"resultType": "vector", "result": result}});
        let counters = values.iter().all(|v| v.parse::<f64>().is_ok_and(valid_counter));
        match promql_series(&body.to_string(), QUERY) {
            Ok(s) => {
                prop_assert!(counters, "{:?} accepted", values);
                prop_assert_eq!(s.len(), values.len());
            }
            Err(e) => {
                prop_assert!(!counters, "{:?} refused: {}", values, e);
                prop_assert!(e.contains("not a counter value"), "{}", e);
                clear_refusal(&e)?;
            }
        }
    }

    #[test]
    fn a_valid_answer_with_a_node_replaced_is_read_or_refused_clearly(v in answer(), at in any::<usize>(), with in json(KEYS)) {
        let mut v = v;
        replace_node(&mut v, at, with);
        read_twice(&v.to_string())?;
    }

    #[test]
    fn a_valid_answer_with_a_key_removed_is_read_or_refused_clearly(v in answer(), at in any::<usize>()) {
        let mut v = v;
        remove_key(&mut v, at);
        read_twice(&v.to_string())?;
    }

    #[test]
    fn a_damaged_answer_is_read_or_refused_clearly(v in answer(), at in any::<usize>(), insert in any::<char>()) {
        for body in damaged(&v.to_string(), at, insert) {
            read_twice(&body)?;
        }
    }
}
