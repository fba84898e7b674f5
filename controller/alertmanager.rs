//! Rollback orders from Prometheus alerts. Alertmanager's webhook payload (version 4) is parsed
//! here and turned into plain actions by a pure function: a *firing* alert that opts in with
//! `rollwatch_action="rollback"` and names a configured `env` and `role` orders a rollback of that
//! target, if it deployed within the alert window. Everything else is answered and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::target::{Env, TargetId};

/// The opt-in label an alert rule must carry to be allowed to order a rollback.
pub const ACTION_LABEL: &str = "rollwatch_action";

#[derive(Debug, Deserialize)]
pub struct Payload {
    pub version: String,
    #[serde(rename = "groupKey", default)]
    pub group_key: String,
    #[serde(default)]
    pub status: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    /// One firing episode of one alert on one target: repeats of a notification carry the same
    /// key. The target is part of it because Alertmanager's fingerprint hashes only the labels
    /// it was given, and two targets' rules may well produce equal ones; an alert without a
    /// fingerprint is told apart by its labels, so such alerts never share a key.
    pub fn episode_key(&self, target: &TargetId) -> String {
        let alert = if self.fingerprint.is_empty() || self.fingerprint.len() > MAX_FINGERPRINT {
            // BTreeMap: the same labels always serialize the same way.
            let labels = serde_json::to_string(&self.labels).unwrap_or_default();
            format!(
                "labels:{}",
                hex_sha256(format!("{}|{labels}", self.fingerprint).as_bytes())
            )
        } else {
            self.fingerprint.clone()
        };
        let starts = truncate(&self.starts_at, MAX_STARTS_AT);
        format!("{target}#{alert}@{starts}")
    }
}

/// Longest fingerprint kept as is (Alertmanager's are 16 hex digits); longer ones are hashed.
const MAX_FINGERPRINT: usize = 64;
/// An RFC 3339 time is about 30 bytes; more is not a time and is cut.
const MAX_STARTS_AT: usize = 64;
/// The longest reason a rollback record gets from an alert's summary.
pub const MAX_REASON: usize = 1024;

fn hex_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What to do with one alert of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertAction {
    RollBack {
        target: TargetId,
        episode: String,
        reason: String,
    },
    /// Answered but not acted on, with why (resolved, not opted in, unknown target, ...).
    Ignore {
        why: String,
    },
    UnknownTarget {
        env: String,
        role: String,
    },
}

/// Parses the body; the error says what is wrong, for a 400 answer.
pub fn parse(body: &[u8]) -> Result<Payload, String> {
    // The path of a wrongly typed value is part of the message: `alerts[2].labels.env: ...`.
    let payload: Payload =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if payload.version != "4" {
        return Err(format!(
            "webhook payload version {:?} is not supported; Alertmanager sends version \"4\"",
            payload.version
        ));
    }
    Ok(payload)
}

/// Decides per alert. `is_target` says whether a target is configured; `deployed_recently`
/// whether it saw a deploy within the alert window.
pub fn plan(
    payload: &Payload,
    is_target: impl Fn(&TargetId) -> bool,
    deployed_recently: impl Fn(&TargetId) -> bool,
) -> Vec<AlertAction> {
    payload
        .alerts
        .iter()
        .map(|a| {
            let name = a
                .labels
                .get("alertname")
                .cloned()
                .unwrap_or_else(|| "alert".into());
            if a.status != "firing" {
                return AlertAction::Ignore {
                    why: format!("{name} is {}", a.status),
                };
            }
            if a.labels.get(ACTION_LABEL).map(String::as_str) != Some("rollback") {
                return AlertAction::Ignore {
                    why: format!("{name} does not carry {ACTION_LABEL}=\"rollback\""),
                };
            }
            let (Some(env), Some(role)) = (a.labels.get("env"), a.labels.get("role")) else {
                return AlertAction::Ignore {
                    why: format!("{name} has no env and role labels"),
                };
            };
            let Some(target) = Env::parse(env)
                .map(|env| TargetId {
                    env,
                    role: role.clone(),
                })
                .filter(|t| is_target(t))
            else {
                return AlertAction::UnknownTarget {
                    env: env.clone(),
                    role: role.clone(),
                };
            };
            if !deployed_recently(&target) {
                return AlertAction::Ignore {
                    why: format!(
                        "{target} did not deploy within the alert window; not rolled back"
                    ),
                };
            }
            let summary = a
                .annotations
                .get("summary")
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            AlertAction::RollBack {
                episode: a.episode_key(&target),
                target,
                reason: truncate(&format!("alert {name} firing{summary}"), MAX_REASON).to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "alertmanager_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(alerts: &str) -> Payload {
        parse(
            format!(r#"{{"version":"4","groupKey":"g","status":"firing","alerts":[{alerts}]}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    fn alert(status: &str, labels: &str) -> String {
        format!(
            r#"{{"status":"{status}","labels":{{{labels}}},"annotations":{{"summary":"5xx high"}},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"abc"}}"#
        )
    }

    const OPTED: &str = r#""alertname":"HighErrors","env":"staging","role":"backend","rollwatch_action":"rollback""#;

    #[test]
    fn firing_opted_in_alert_for_a_recent_deploy_rolls_back() {
        let p = payload(&alert("firing", OPTED));
        let a = plan(&p, |_| true, |_| true);
        assert!(
            matches!(&a[0], AlertAction::RollBack { target, reason, episode } if target.to_string() == "staging/backend" && reason.contains("HighErrors firing: 5xx high") && episode == "staging/backend#abc@2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn resolved_not_opted_in_old_deploy_and_unknown_target_are_not_acted_on() {
        assert!(matches!(
            plan(&payload(&alert("resolved", OPTED)), |_| true, |_| true)[0],
            AlertAction::Ignore { .. }
        ));
        let plain = r#""alertname":"HighErrors","env":"staging","role":"backend""#;
        assert!(matches!(
            plan(&payload(&alert("firing", plain)), |_| true, |_| true)[0],
            AlertAction::Ignore { .. }
        ));
        assert!(matches!(
            plan(&payload(&alert("firing", OPTED)), |_| true, |_| false)[0],
            AlertAction::Ignore { .. }
        ));
        assert!(matches!(
            plan(&payload(&alert("firing", OPTED)), |_| false, |_| true)[0],
            AlertAction::UnknownTarget { .. }
        ));
    }

    #[test]
    fn wrong_version_and_garbage_are_refused_with_a_reason() {
        assert!(parse(br#"{"version":"3","alerts":[]}"#)
            .unwrap_err()
            .contains("version"));
        assert!(parse(b"{not json")
            .unwrap_err()
            .contains("not an Alertmanager webhook payload"));
        assert!(parse(br#"{"version":"4"}"#).unwrap_err().contains("alerts"));
    }

    /// Seen writing the property tests (issue 18), which require refusals to name the field: in a
    /// payload of many alerts, a wrongly typed value was refused with a line and column only;
    /// its path is named now.
    #[test]
    fn a_wrongly_typed_value_is_refused_with_its_path() {
        let body = format!(
            r#"{{"version":"4","alerts":[{},{{"status":"firing","labels":{{"env":1}}}}]}}"#,
            alert("firing", OPTED)
        );
        let e = parse(body.as_bytes()).unwrap_err();
        assert!(
            e.starts_with("not an Alertmanager webhook payload: alerts[1].labels.env: invalid type: integer `1`"),
            "{e}"
        );
    }

    #[test]
    fn episode_keys_differ_per_target_and_per_alert_without_a_fingerprint() {
        let with = |labels: &str, fp: &str, starts: &str| {
            format!(
                r#"{{"status":"firing","labels":{{{labels}}},"startsAt":"{starts}","fingerprint":"{fp}"}}"#
            )
        };
        let staging =
            r#""alertname":"E","env":"staging","role":"backend","rollwatch_action":"rollback""#;
        let production =
            r#""alertname":"E","env":"production","role":"backend","rollwatch_action":"rollback""#;
        let p = payload(&[with(staging, "abc", "t0"), with(production, "abc", "t0")].join(","));
        let keys: Vec<_> = plan(&p, |_| true, |_| true)
            .into_iter()
            .map(|a| match a {
                AlertAction::RollBack { episode, .. } => episode,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1], "equal fingerprints on two targets");

        let other = r#""alertname":"Latency","env":"staging","role":"backend","rollwatch_action":"rollback""#;
        let bare = payload(
            &[
                with(staging, "", ""),
                with(other, "", ""),
                with(production, "", ""),
            ]
            .join(","),
        );
        let bare: Vec<_> = plan(&bare, |_| true, |_| true)
            .into_iter()
            .map(|a| match a {
                AlertAction::RollBack { episode, .. } => episode,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_ne!(
            bare[0], bare[1],
            "two alerts of one target without fingerprints"
        );
        assert_ne!(
            bare[0], bare[2],
            "one alert on two targets without fingerprints"
        );
        assert!(!bare.iter().any(|k| k.ends_with("#@")), "{bare:?}");
        // The same alert again: the same episode.
        let again = payload(&with(staging, "", ""));
        assert!(
            matches!(&plan(&again, |_| true, |_| true)[0], AlertAction::RollBack { episode, .. } if *episode == bare[0])
        );
    }

    #[test]
    fn a_huge_summary_is_cut_to_the_reason_limit() {
        let summary = "é".repeat(3000);
        let a = format!(
            r#"{{"status":"firing","labels":{{{OPTED}}},"annotations":{{"summary":"{summary}"}},"startsAt":"t","fingerprint":"f"}}"#
        );
        match &plan(&payload(&a), |_| true, |_| true)[0] {
            AlertAction::RollBack { reason, .. } => {
                assert!(reason.len() <= MAX_REASON && reason.len() > 1000)
            }
            other => panic!("{other:?}"),
        }
    }
}
