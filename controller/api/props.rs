//! Property tests of the order bodies on bad input at volume (issue 18): CI deploys and manual
//! rollbacks as arbitrary bytes under any `Content-Type`, arbitrary JSON, and valid bodies with
//! one value replaced (wrong types, huge and odd strings), one key removed or an unknown key
//! added. Nothing panics; every refusal is a 4xx whose message names the field at fault, or,
//! for a body that is not JSON at all, where it stops being JSON.

use super::*;
use crate::props_util::{clear, damaged, json};
use proptest::prelude::*;
use serde_json::{json as j, Value};

const KEYS: &[&str] = &[
    "env",
    "role",
    "tag",
    "commit_sha",
    "pipeline_url",
    "strategy",
    "reason",
];

/// A refusal of an order: a 4xx with a sentence, not a dump.
fn clear_refusal(e: ApiError) -> Result<String, TestCaseError> {
    let (status, message) = e.describe();
    prop_assert!(status.is_client_error(), "{} for {}", status, message);
    clear(&message)?;
    Ok(message)
}

/// A body that is JSON but not this order's: the message names the field at fault or, when
/// the body is not an object of fields at all, says where and what it is.
fn names_the_fault(message: &str) -> Result<(), TestCaseError> {
    let field = KEYS.iter().any(|k| message.contains(k));
    let position = message.contains(" at line ") && message.contains(" column ");
    prop_assert!(
        field || position || message.contains("required"),
        "names no field and no position: {}",
        message
    );
    Ok(())
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(b"application/json".to_vec())),
        Just(Some(
            b"application/merge-patch+json; charset=utf-8".to_vec()
        )),
        Just(Some(b"text/plain".to_vec())),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

fn a_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9.-]{0,12}",
        "[0-9a-f]{40}",
        (0usize..3000).prop_map(|n| "a".repeat(n)),
        (0usize..1000).prop_map(|n| "é".repeat(n)),
    ]
}

fn deploy_body() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("staging".to_string()), a_string()],
        prop_oneof![Just("backend".to_string()), a_string()],
        prop_oneof![Just("v1.2.3".to_string()), a_string()],
        proptest::option::of(a_string()),
        proptest::option::of(a_string()),
        proptest::option::of(prop_oneof![Just("canary".to_string()), a_string()]),
    )
        .prop_map(|(env, role, tag, sha, url, strategy)| {
            let mut v = j!({"env": env, "role": role, "tag": tag});
            for (k, x) in [
                ("commit_sha", sha),
                ("pipeline_url", url),
                ("strategy", strategy),
            ] {
                if let Some(x) = x {
                    v[k] = Value::String(x);
                }
            }
            v
        })
}

fn rollback_body() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(a_string()),
        proptest::option::of(a_string()),
    )
        .prop_map(|(tag, reason)| {
            let mut v = j!({});
            for (k, x) in [("tag", tag), ("reason", reason)] {
                if let Some(x) = x {
                    v[k] = Value::String(x);
                }
            }
            v
        })
}

/// A deploy as the handler reads it up to the target lookup, and then its tag and SHA.
fn deploy(content_type: Option<&[u8]>, body: &[u8]) -> Result<(), TestCaseError> {
    match parse_order::<DeployBody>(content_type, body) {
        Ok(None) => {
            prop_assert!(body.iter().all(u8::is_ascii_whitespace));
            clear_refusal(BodyError::Missing.into())?;
        }
        Ok(Some(order)) => {
            if let Err(e) = order.checked_tag() {
                let message = clear_refusal(e)?;
                prop_assert!(
                    message.contains("tag") || message.contains("commit_sha"),
                    "{}",
                    message
                );
            }
        }
        Err(e) => {
            let malformed = matches!(e, BodyError::Malformed(_));
            let message = clear_refusal(e.into())?;
            if malformed {
                names_the_fault(&message)?;
            }
        }
    }
    Ok(())
}

fn rollback(content_type: Option<&[u8]>, body: &[u8]) -> Result<(), TestCaseError> {
    match rollback_order(content_type, body) {
        Ok(_) => {}
        Err(e) => {
            let message = clear_refusal(e)?;
            if message.starts_with("the body is not valid JSON") {
                names_the_fault(&message)?;
            }
        }
    }
    Ok(())
}

/// A valid body's `key` set to `with`: refused naming `key`, unless `with` is a string (which
/// only the caps and the tag check may refuse) or null for an optional field.
fn replaced_is_refused_naming_it(
    rollback_body: bool,
    body: &Value,
    key: &str,
    with: Value,
) -> Result<(), TestCaseError> {
    let optional = rollback_body || matches!(key, "commit_sha" | "pipeline_url" | "strategy");
    let acceptable = with.is_string() || (optional && with.is_null());
    let mut v = body.clone();
    v[key] = with;
    let text = v.to_string();
    let e = if rollback_body {
        rollback(None, text.as_bytes())?;
        rollback_order(None, text.as_bytes()).err()
    } else {
        deploy(None, text.as_bytes())?;
        parse_order::<DeployBody>(None, text.as_bytes())
            .err()
            .map(ApiError::from)
    };
    if !acceptable {
        let message = match e {
            Some(e) => clear_refusal(e)?,
            None => return Err(TestCaseError::fail(format!("{key} = {text} accepted"))),
        };
        prop_assert!(
            message.contains(&format!("{key}: ")),
            "does not name {}: {}",
            key,
            message
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_refused_clearly(ct in content_type(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        deploy(ct.as_deref(), &body)?;
        rollback(ct.as_deref(), &body)?;
    }

    #[test]
    fn arbitrary_json_is_refused_clearly(ct in content_type(), v in json(KEYS)) {
        let body = v.to_string();
        deploy(ct.as_deref(), body.as_bytes())?;
        rollback(ct.as_deref(), body.as_bytes())?;
    }

    #[test]
    fn odd_strings_in_valid_bodies_are_accepted_or_refused_naming_the_field(d in deploy_body(), r in rollback_body()) {
        deploy(None, d.to_string().as_bytes())?;
        rollback(None, r.to_string().as_bytes())?;
    }

    #[test]
    fn a_wrong_type_is_refused_naming_its_field(
        d in deploy_body(),
        r in rollback_body(),
        key in proptest::sample::select(KEYS),
        with in json(KEYS),
    ) {
        if matches!(key, "tag" | "reason") {
            replaced_is_refused_naming_it(true, &r, key, with.clone())?;
        }
        if key != "reason" {
            replaced_is_refused_naming_it(false, &d, key, with)?;
        }
    }

    #[test]
    fn an_unknown_or_missing_field_is_refused_naming_it(d in deploy_body(), r in rollback_body(), name in "[a-z_]{1,12}", drop in proptest::sample::select(&["env", "role", "tag"][..])) {
        if !KEYS.contains(&name.as_str()) {
            for v in [&d, &r] {
                let mut v = v.clone();
                v[name.as_str()] = j!(1);
                let e = parse_order::<RollbackBody>(None, v.to_string().as_bytes()).err();
                let e = e.map(|e| e.to_string()).unwrap_or_default();
                let e2 = parse_order::<DeployBody>(None, v.to_string().as_bytes()).err();
                let e2 = e2.map(|e| e.to_string()).unwrap_or_default();
                for e in [e, e2] {
                    clear(&e)?;
                    prop_assert!(e.contains("unknown field") || e.contains("missing field"), "{}", e);
                }
            }
        }
        let mut v = d;
        if let Some(o) = v.as_object_mut() {
            o.remove(drop);
        }
        let e = parse_order::<DeployBody>(None, v.to_string().as_bytes()).unwrap_err().to_string();
        clear(&e)?;
        prop_assert!(e.contains(&format!("missing field `{drop}`")), "{}", e);
    }

    #[test]
    fn a_damaged_body_is_refused_clearly(d in deploy_body(), r in rollback_body(), at in any::<usize>(), insert in any::<char>()) {
        for body in damaged(&d.to_string(), at, insert) {
            deploy(None, body.as_bytes())?;
        }
        for body in damaged(&r.to_string(), at, insert) {
            rollback(None, body.as_bytes())?;
        }
    }
}
