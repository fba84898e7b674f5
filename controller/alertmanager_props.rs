//! Property tests of the Alertmanager webhook body on bad input at volume (issue 18): arbitrary
//! bytes and JSON, and valid version-4 payloads with one node replaced, one key removed or the
//! text damaged, their strings arbitrary and huge. Nothing panics in `parse` or `plan`; every
//! refusal names the field at fault (or where the body stops being JSON); what is planned
//! stays within its bounds.

use super::*;
use crate::props_util::{clear, damaged, json, remove_key, replace_node};
use proptest::prelude::*;
use serde_json::{json as j, Value};

const KEYS: &[&str] = &[
    "version",
    "groupKey",
    "status",
    "alerts",
    "labels",
    "annotations",
    "startsAt",
    "fingerprint",
    "alertname",
    "env",
    "role",
    "summary",
    ACTION_LABEL,
];

/// The body through `parse` and, when accepted, `plan`: refusals clear, actions bounded.
fn webhook(body: &[u8]) -> Result<(), TestCaseError> {
    let payload = match parse(body) {
        Ok(p) => p,
        Err(e) => {
            clear(&e)?;
            let located = e.contains(" at line ") && e.contains(" column ");
            let named = KEYS.iter().any(|k| e.contains(k));
            prop_assert!(located || named, "names no field and no position: {}", e);
            return Ok(());
        }
    };
    prop_assert_eq!(&payload.version, "4");
    let actions = plan(&payload, |t| t.role.len() < 40, |t| t.role.len() % 2 == 0);
    prop_assert_eq!(actions.len(), payload.alerts.len());
    for a in actions {
        match a {
            AlertAction::RollBack {
                target,
                episode,
                reason,
            } => {
                prop_assert!(reason.len() <= MAX_REASON);
                prop_assert!(episode.starts_with(&target.to_string()));
                prop_assert!(
                    episode.len() <= target.to_string().len() + 1 + 71 + 1 + MAX_STARTS_AT
                );
            }
            AlertAction::Ignore { why } => clear(&why)?,
            AlertAction::UnknownTarget { .. } => {}
        }
    }
    Ok(())
}

fn a_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]{0,10}",
        (0usize..3000).prop_map(|n| "é".repeat(n)),
    ]
}

fn alert() -> impl Strategy<Value = Value> {
    let label = prop_oneof![
        proptest::sample::select(&["alertname", "env", "role", ACTION_LABEL, "severity"][..])
            .prop_map(String::from),
        any::<String>(),
    ];
    let value = prop_oneof![
        proptest::sample::select(
            &["staging", "production", "backend", "rollback", "HighErrors"][..]
        )
        .prop_map(String::from),
        a_string(),
    ];
    (
        prop_oneof![
            Just("firing".to_string()),
            Just("resolved".to_string()),
            a_string()
        ],
        proptest::collection::btree_map(label, value, 0..6),
        proptest::option::of(a_string()),
        a_string(),
        a_string(),
    )
        .prop_map(|(status, labels, summary, starts, fingerprint)| {
            j!({
                "status": status,
                "labels": labels,
                "annotations": summary.map(|s| j!({"summary": s})).unwrap_or(j!({})),
                "startsAt": starts,
                "fingerprint": fingerprint,
            })
        })
}

fn payload() -> impl Strategy<Value = Value> {
    (proptest::collection::vec(alert(), 0..5), a_string()).prop_map(|(alerts, group)| {
        j!({"version": "4", "groupKey": group, "status": "firing", "alerts": alerts})
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_refused_clearly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        webhook(&bytes)?;
    }

    #[test]
    fn arbitrary_json_is_refused_clearly(v in json(KEYS)) {
        webhook(v.to_string().as_bytes())?;
    }

    #[test]
    fn valid_payloads_are_planned_within_bounds(v in payload()) {
        let body = v.to_string();
        prop_assert!(parse(body.as_bytes()).is_ok(), "{}", body);
        webhook(body.as_bytes())?;
    }

    #[test]
    fn a_payload_with_a_node_replaced_is_planned_or_refused_naming_the_field(v in payload(), at in any::<usize>(), with in json(KEYS)) {
        let mut v = v;
        replace_node(&mut v, at, with);
        webhook(v.to_string().as_bytes())?;
    }

    /// A value of the wrong type anywhere is refused with its path: `alerts[1].labels.env: ...`.
    #[test]
    fn a_wrongly_typed_label_is_refused_with_its_path(v in payload(), i in any::<prop::sample::Index>(), with in prop_oneof![Just(j!(1)), Just(j!(null)), Just(j!([])), Just(j!({}))]) {
        let mut v = v;
        let Some(alerts) = v["alerts"].as_array_mut().filter(|a| !a.is_empty()) else {
            return Ok(());
        };
        let n = i.index(alerts.len());
        alerts[n]["labels"]["env"] = with;
        let e = parse(v.to_string().as_bytes()).unwrap_err();
        clear(&e)?;
        prop_assert!(e.contains(&format!("alerts[{n}].labels.env: ")), "{}", e);
    }

    #[test]
    fn a_payload_with_a_key_removed_is_planned_or_refused_naming_it(v in payload(), at in any::<usize>()) {
        let mut v = v;
        remove_key(&mut v, at);
        webhook(v.to_string().as_bytes())?;
    }

    #[test]
    fn a_damaged_payload_is_planned_or_refused_clearly(v in payload(), at in any::<usize>(), insert in any::<char>()) {
        for body in damaged(&v.to_string(), at, insert) {
            webhook(body.as_bytes())?;
        }
    }
}
