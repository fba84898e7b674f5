//! Property tests of the config loader on bad input at volume (issue 18): arbitrary text and
//! bytes, and a valid file with one key's value replaced (wrong types, negative, zero and huge
//! durations, bad URLs, empty names, arbitrary strings and numbers), one key removed or an
//! unknown key added. Nothing panics, and every refusal names the file, a line and column
//! inside the text, and the field that was changed (or, for a rule between two keys, the
//! other key, at its own line).

use std::path::Path;

use super::{Config, ConfigError};
use crate::props_util::clear;
use proptest::prelude::*;

/// Every key of a target with a compose executor over ssh and scrape metrics, one per line so
/// a test can change one line and know where the refusal must point.
const TEMPLATE: &str = r#"[controller]
store = "state/rollwatch.db"
listen = "127.0.0.1:9860"
dry_run = false
api_token_env = "ROLLWATCH_API_TOKEN"
api_reads_need_token = false
alert_window = "30m"
webhook_url = "http://127.0.0.1:9999/hook"

[fallback_tags]
staging = "develop"
production = "main"

[[targets]]
env = "staging"
role = "backend"
docker = "unix:///var/run/docker.sock"
dry_run = false
strategy = "replace"

[targets.selector]
compose_project = "shop-staging-backend"
compose_service = "backend"

[targets.health]
url = "http://127.0.0.1:8080/health"
timeout = "1s"
validation_timeout = "60s"

[targets.watch]
interval = "1s"
failures = 3
grace = "5s"
bake = "5m"
cooldown = "10m"

[targets.metrics]
timeout = "2s"
alpha = 0.01
min_requests = 100
error_ratio_factor = 1.5
error_ratio_increase = 0.005
latency_factor = 1.5
latency_increase = "100ms"

[targets.metrics.source]
kind = "scrape"
urls = ["http://127.0.0.1:8080/metrics"]
requests = "http_requests_total"
errors = 'http_requests_total{code=~"5.."}'
latency_histogram = "http_request_duration_seconds"

[targets.executor]
kind = "compose"
dir = "/opt/shop/staging/backend"
project = "shop-staging-backend"
env_file = ".env"
registry = "127.0.0.1:5000/shop"
compose_command = "auto"
host = "deploy@db1"
step_timeout = "5m"

[targets.executor.ssh]
port = 22
identity_file = "/etc/rollwatch/id_ed25519"
host_key_checking = "strict"
connect_timeout = "10s"
retries = 2
"#;

/// Keys whose refusal may be put at another key: a rule between the two is located at the one
/// the rule is about (bake must be longer than grace; a relative dir is refused because of host;
/// the executor's or source's `kind` decides which keys exist, so their table is pointed at).
const RELATED: &[(&str, &[&str])] = &[
    ("grace", &["bake"]),
    ("bake", &["grace"]),
    ("host", &["dir"]),
    ("kind", &["executor", "source"]),
    ("compose_project", &["selector"]),
    ("compose_service", &["selector"]),
];

/// A key line of the template: its line number (1-based), the TOML path of its table, its key.
#[derive(Debug, Clone)]
struct KeyLine {
    line: usize,
    table: String,
    key: String,
}

fn key_lines() -> Vec<KeyLine> {
    let mut table = String::new();
    let mut out = Vec::new();
    for (i, text) in TEMPLATE.lines().enumerate() {
        if let Some(h) = text.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            table = format!("{h}[0]");
        } else if let Some(h) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            table = h.replacen("targets", "targets[0]", 1);
        } else if let Some((key, _)) = text.split_once(" = ") {
            out.push(KeyLine {
                line: i + 1,
                table: table.clone(),
                key: key.to_string(),
            });
        }
    }
    out
}

/// The line (1-based) a key is written on, for the keys of `RELATED`.
fn lines_of(name: &str) -> Vec<usize> {
    let mut out: Vec<usize> = key_lines()
        .into_iter()
        .filter(|k| k.key == name)
        .map(|k| k.line)
        .collect();
    out.extend(
        TEMPLATE
            .lines()
            .enumerate()
            .filter(|(_, t)| t.starts_with('[') && t.trim_end_matches(']').ends_with(name))
            .map(|(i, _)| i + 1),
    );
    out
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("rw.toml"), Path::new("/etc/rw"))
}

/// Any refusal: the file named, a position inside the text, a message in words.
fn clear_refusal(e: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    clear(&shown)?;
    match e {
        ConfigError::Invalid {
            line,
            column,
            message,
            ..
        } => {
            prop_assert!(shown.starts_with("rw.toml:"), "names the file: {}", shown);
            clear(message)?;
            let lines = text.split('\n').count();
            prop_assert!(
                *line >= 1 && *line <= lines && *column >= 1,
                "{}:{} is outside the text ({} lines): {}",
                line,
                column,
                lines,
                shown
            );
        }
        ConfigError::Semantic { .. } | ConfigError::Read { .. } => {
            prop_assert!(shown.contains("rw.toml"), "names the file: {}", shown)
        }
    }
    Ok(())
}

/// A refusal caused by the key at `k`: its message names the key (or a key it is checked
/// against) and its position is that key's line (or that other key's).
fn names_the_key(e: &ConfigError, text: &str, k: &KeyLine) -> Result<(), TestCaseError> {
    clear_refusal(e, text)?;
    let ConfigError::Invalid { line, message, .. } = e else {
        return Err(TestCaseError::fail(format!("not located: {e}")));
    };
    let related = RELATED
        .iter()
        .find(|(key, _)| *key == k.key)
        .map(|(_, r)| *r)
        .unwrap_or(&[]);
    let field = format!("{}.{}", k.table, k.key);
    let named = message.contains(&field)
        || message.contains(&format!("`{}`", k.key))
        || related.iter().any(|r| message.contains(r));
    prop_assert!(named, "does not name {}: {}", field, e);
    let mut lines = vec![k.line];
    lines.extend(related.iter().flat_map(|r| lines_of(r)));
    // A missing key is pointed at its table's header.
    lines.extend(lines_of(k.table.rsplit('.').next().unwrap_or("")));
    prop_assert!(
        lines.contains(line),
        "points at line {} rather than {:?}: {}",
        line,
        lines,
        e
    );
    Ok(())
}

/// A TOML value that no key of the template accepts.
fn wrong_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[1, 2]".to_string()),
        Just("{ x = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("[[]]".to_string()),
        Just("[{}]".to_string()),
    ]
}

/// A TOML value that some keys accept and others refuse.
fn odd_value() -> impl Strategy<Value = String> {
    let toml_string = |s: String| toml::Value::String(s).to_string();
    prop_oneof![
        // Durations: negative, zero, huge, fractional, without a unit, misspelt.
        proptest::sample::select(
            &[
                "\"-5s\"",
                "\"0s\"",
                "\"0\"",
                "\"5\"",
                "\"1ns\"",
                "\"1.5s\"",
                "\"99999999999999999999years\"",
                "\"584942417355years\"",
                "\"18446744073709551615s\"",
                "\"30days 1ns\"",
                "\"1h 1ns\"",
                "\"soon\"",
                "\"\"",
                "\" \"",
                "\"5 m\"",
                "\"5mins\"",
            ][..]
        )
        .prop_map(String::from),
        "[0-9]{1,22}(ns|us|ms|s|m|h|d|days|w|y|years|months)?".prop_map(toml_string),
        // URLs and names.
        proptest::sample::select(
            &[
                "\"not a url\"",
                "\"ftp://x/health\"",
                "\"http://\"",
                "\"http://[::1\"",
                "\"http://127.0.0.1:99999/\"",
                "\"unix://relative\"",
                "\"tcp://host\"",
                "\"ssh://-oProxyCommand=x\"",
                "\"-oProxyCommand=x\"",
                "\"a@b@c\"",
                "\"Backend\"",
                "\"prod\"",
                "\"..\"",
                "\"a/b\"",
                "\"with space\"",
                "\"h{\"",
                "\"x_sum\"",
                "\"canary\"",
                "\"docker\"",
            ][..]
        )
        .prop_map(String::from),
        any::<String>().prop_map(toml_string),
        // Numbers of every size and sign, and the floats TOML can spell.
        any::<i64>().prop_map(|i| i.to_string()),
        proptest::sample::select(
            &[
                "nan",
                "inf",
                "-inf",
                "-0.0",
                "1e308",
                "-1e308",
                "5e-324",
                "0.5",
                "100.0",
                "100.00001"
            ][..]
        )
        .prop_map(String::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[]".to_string()),
        Just("[\"\"]".to_string()),
    ]
}

/// The template with the value of key line `k` replaced.
fn with_value(k: &KeyLine, value: &str) -> String {
    let mut lines: Vec<String> = TEMPLATE.lines().map(String::from).collect();
    lines[k.line - 1] = format!("{} = {value}", k.key);
    lines.join("\n") + "\n"
}

fn pick(i: prop::sample::Index) -> KeyLine {
    let all = key_lines();
    all[i.index(all.len())].clone()
}

#[test]
fn the_template_is_valid() {
    let c = parse(TEMPLATE).unwrap();
    assert_eq!(c.targets.len(), 1);
    assert!(key_lines().len() > 40, "{}", key_lines().len());
    assert!(RELATED
        .iter()
        .flat_map(|(_, r)| *r)
        .all(|r| !lines_of(r).is_empty()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_is_refused_clearly(text in any::<String>()) {
        if let Err(e) = parse(&text) {
            clear_refusal(&e, &text)?;
        }
    }

    /// TOML-looking noise: headers, keys and values the loader knows, in any order.
    #[test]
    fn tomlish_noise_is_refused_clearly(
        lines in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(TEMPLATE.lines().map(String::from).collect::<Vec<_>>()),
                ("[a-z_]{1,12}", odd_value()).prop_map(|(k, v)| format!("{k} = {v}")),
                "\\[{1,2}[a-z_.]{0,20}\\]{0,2}",
                any::<String>(),
            ],
            0..24,
        )
    ) {
        let text = lines.join("\n");
        if let Err(e) = parse(&text) {
            clear_refusal(&e, &text)?;
        }
    }

    #[test]
    fn a_wrong_type_is_refused_naming_its_key(i in any::<prop::sample::Index>(), value in wrong_type()) {
        let k = pick(i);
        let text = with_value(&k, &value);
        match parse(&text) {
            Ok(_) => prop_assert!(false, "{} = {} accepted", k.key, value),
            Err(e) => names_the_key(&e, &text, &k)?,
        }
    }

    #[test]
    fn an_odd_value_is_accepted_or_refused_naming_its_key(i in any::<prop::sample::Index>(), value in odd_value()) {
        let k = pick(i);
        let text = with_value(&k, &value);
        if let Err(e) = parse(&text) {
            names_the_key(&e, &text, &k)?;
        }
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it(i in any::<prop::sample::Index>(), name in "zz_[a-z_]{0,8}", value in odd_value()) {
        let k = pick(i);
        let mut lines: Vec<String> = TEMPLATE.lines().map(String::from).collect();
        lines.insert(k.line, format!("{name} = {value}"));
        let text = lines.join("\n");
        match parse(&text) {
            Ok(_) => prop_assert!(false, "{} accepted in [{}]", name, k.table),
            Err(e) => {
                clear_refusal(&e, &text)?;
                let ConfigError::Invalid { line, message, .. } = &e else {
                    return Err(TestCaseError::fail(format!("not located: {e}")));
                };
                prop_assert!(message.contains(&name), "does not name {}: {}", name, e);
                prop_assert_eq!(*line, k.line + 1, "{}", e);
            }
        }
    }

    #[test]
    fn a_removed_key_is_defaulted_or_refused_naming_it(i in any::<prop::sample::Index>()) {
        let k = pick(i);
        let mut lines: Vec<String> = TEMPLATE.lines().map(String::from).collect();
        lines.remove(k.line - 1);
        let text = lines.join("\n");
        if let Err(e) = parse(&text) {
            clear_refusal(&e, &text)?;
            prop_assert!(e.to_string().contains(&k.key), "does not name {}: {}", k.key, e);
        }
    }

    #[test]
    fn a_damaged_file_is_refused_clearly(at in any::<usize>(), insert in any::<char>()) {
        for text in crate::props_util::damaged(TEMPLATE, at, insert) {
            if let Err(e) = parse(&text) {
                clear_refusal(&e, &text)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Bytes as a file holds them, through `Config::load`: not UTF-8 is said so.
    #[test]
    fn arbitrary_bytes_in_a_file_are_refused_clearly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("rw.toml");
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match Config::load(&path) {
            Ok(_) => {}
            Err(e @ ConfigError::Read { .. }) => {
                clear(&e.to_string())?;
                prop_assert!(std::str::from_utf8(&bytes).is_err(), "{}", e);
                prop_assert!(e.to_string().contains("not UTF-8"), "{}", e);
            }
            Err(e) => {
                let text = String::from_utf8_lossy(&bytes);
                clear(&e.to_string())?;
                prop_assert!(e.to_string().starts_with(&path.display().to_string()), "{}", e);
                if let ConfigError::Invalid { line, .. } = e {
                    prop_assert!(line >= 1 && line <= text.split('\n').count());
                }
            }
        }
    }
}
