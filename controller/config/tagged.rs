//! The two tables chosen by a `kind` key, `[targets.executor]` and `[targets.metrics] source`,
//! read as plain structs holding every kind's keys and then turned into their enums.
//!
//! serde reads an internally tagged enum (`#[serde(tag = "kind")]`) from a buffered copy of
//! the table, without toml's positions: a wrongly typed key inside such a table was refused as
//! `targets[0].metrics.source: invalid type: integer `0`, expected a string` at the table's
//! header, naming neither the key nor its line, and a bad URL only as `relative URL without a
//! base`. Read as a struct, toml locates every key itself; what depends on the kind (which keys
//! it allows or needs) is refused by the conversion, at the table, naming the key.

use super::*;

/// The `kind` of an executor.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ExecutorKind {
    Compose,
    Docker,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecutorTable {
    kind: ExecutorKind,
    dir: Option<PathBuf>,
    project: Option<String>,
    env_file: Option<String>,
    registry: Option<String>,
    image: Option<String>,
    compose_command: Option<ComposeCommand>,
    host: Option<SshDestination>,
    also: Option<Vec<ExtraHost>>,
    ssh: Option<SshConfig>,
    #[serde(default, with = "humantime_serde::option")]
    step_timeout: Option<Duration>,
}

/// Refuses the first of `given` (key, present) that `kind` has no use for, as serde would.
fn only(kind: &str, given: &[(&str, bool)], expected: &str) -> Result<(), String> {
    match given.iter().find(|(_, present)| *present) {
        Some((key, _)) => Err(format!(
            "unknown field `{key}` for kind = \"{kind}\", expected {expected}"
        )),
        None => Ok(()),
    }
}

impl TryFrom<ExecutorTable> for ExecutorConfig {
    type Error = String;
    fn try_from(t: ExecutorTable) -> Result<Self, String> {
        match t.kind {
            ExecutorKind::Compose => Ok(ExecutorConfig::Compose(ComposeExecutorConfig {
                dir: t.dir,
                project: t.project,
                env_file: t.env_file.unwrap_or_else(default_env_file),
                registry: t.registry.ok_or("missing field `registry`")?,
                image: t.image,
                compose_command: t.compose_command.unwrap_or_default(),
                host: t.host,
                also: t.also.unwrap_or_default(),
                ssh: t.ssh.unwrap_or_default(),
                step_timeout: t.step_timeout.unwrap_or_else(default_step_timeout),
            })),
            ExecutorKind::Docker => {
                only(
                    "docker",
                    &[
                        ("dir", t.dir.is_some()),
                        ("project", t.project.is_some()),
                        ("env_file", t.env_file.is_some()),
                        ("registry", t.registry.is_some()),
                        ("compose_command", t.compose_command.is_some()),
                        ("host", t.host.is_some()),
                        ("also", t.also.is_some()),
                        ("ssh", t.ssh.is_some()),
                        ("step_timeout", t.step_timeout.is_some()),
                    ],
                    "`image`",
                )?;
                Ok(ExecutorConfig::Docker(DockerExecutorConfig {
                    image: t.image.ok_or("missing field `image`")?,
                }))
            }
        }
    }
}

/// The `kind` of a metrics source.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SourceKind {
    Scrape,
    Prometheus,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceTable {
    kind: SourceKind,
    urls: Option<Vec<Url>>,
    url: Option<Url>,
    requests: String,
    errors: String,
    latency_histogram: Option<String>,
    version_metric: Option<String>,
    version_label: Option<String>,
    latency_sum: Option<String>,
    latency_count: Option<String>,
    auth_header_env: Option<String>,
}

impl TryFrom<SourceTable> for MetricsKind {
    type Error = String;
    fn try_from(t: SourceTable) -> Result<Self, String> {
        match t.kind {
            SourceKind::Scrape => {
                only(
                    "scrape",
                    &[
                        ("url", t.url.is_some()),
                        ("latency_sum", t.latency_sum.is_some()),
                        ("latency_count", t.latency_count.is_some()),
                        ("auth_header_env", t.auth_header_env.is_some()),
                    ],
                    "one of `urls`, `requests`, `errors`, `latency_histogram`, `version_metric`, `version_label`",
                )?;
                Ok(MetricsKind::Scrape {
                    urls: t.urls.ok_or("missing field `urls`")?,
                    requests: t.requests,
                    errors: t.errors,
                    latency_histogram: t.latency_histogram,
                    version_metric: t.version_metric,
                    version_label: t.version_label,
                })
            }
            SourceKind::Prometheus => {
                only(
                    "prometheus",
                    &[
                        ("urls", t.urls.is_some()),
                        ("latency_histogram", t.latency_histogram.is_some()),
                        ("version_metric", t.version_metric.is_some()),
                        ("version_label", t.version_label.is_some()),
                    ],
                    "one of `url`, `requests`, `errors`, `latency_sum`, `latency_count`, `auth_header_env`",
                )?;
                Ok(MetricsKind::Prometheus {
                    url: t.url.ok_or("missing field `url`")?,
                    requests: t.requests,
                    errors: t.errors,
                    latency_sum: t.latency_sum,
                    latency_count: t.latency_count,
                    auth_header_env: t.auth_header_env,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = r#"
[[targets]]
env = "staging"
role = "backend"
selector = { compose_project = "shop-staging-backend", compose_service = "backend" }
health = { url = "http://127.0.0.1:8080/health" }
"#;

    fn refusal(text: &str) -> (usize, String) {
        match Config::parse(text, Path::new("rw.toml"), Path::new("/etc/rw")) {
            Err(ConfigError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected a located refusal, got {other:?}"),
        }
    }

    /// Found by the property tests (issue 18): inside a table chosen by `kind`, a wrongly typed
    /// key or a bad URL was refused at the table's header without naming the key.
    #[test]
    fn a_bad_key_in_a_kind_table_is_named_at_its_line() {
        let scrape = format!(
            "{TARGET}executor = {{ kind = \"compose\", registry = \"127.0.0.1:5000/shop\" }}\n[targets.metrics.source]\nkind = \"scrape\"\nurls = [\"http://127.0.0.1:8080/metrics\"]\nrequests = 0\nerrors = \"e\"\n"
        );
        let (line, message) = refusal(&scrape);
        assert_eq!(line, 11, "{message}");
        assert!(
            message.starts_with("targets[0].metrics.source.requests: invalid type: integer `0`"),
            "{message}"
        );
        let (line, message) = refusal(
            &scrape
                .replace("requests = 0", "requests = \"r\"")
                .replace("\"http://127.0.0.1:8080/metrics\"", "\"not a url\""),
        );
        assert_eq!(line, 10, "{message}");
        assert!(
            message.starts_with("targets[0].metrics.source.urls"),
            "{message}"
        );
        let executor = format!(
            "{TARGET}[targets.executor]\nkind = \"compose\"\nregistry = \"127.0.0.1:5000/shop\"\n[targets.executor.ssh]\nport = \"22\"\n"
        );
        let (line, message) = refusal(&executor);
        assert_eq!(line, 11, "{message}");
        assert!(
            message.starts_with("targets[0].executor.ssh.port: "),
            "{message}"
        );
    }

    #[test]
    fn keys_of_another_kind_and_missing_keys_are_refused_naming_them() {
        let with = |executor: &str| format!("{TARGET}executor = {executor}\n");
        let (_, m) = refusal(&with(
            "{ kind = \"docker\", image = \"r/x\", dir = \"/x\" }",
        ));
        assert!(
            m.contains("unknown field `dir` for kind = \"docker\""),
            "{m}"
        );
        let (_, m) = refusal(&with("{ kind = \"docker\" }"));
        assert!(m.contains("missing field `image`"), "{m}");
        let (_, m) = refusal(&with("{ kind = \"compose\" }"));
        assert!(m.contains("missing field `registry`"), "{m}");
        let (_, m) = refusal(&with("{ kind = \"kubectl\" }"));
        assert!(
            m.starts_with("targets[0].executor.kind: unknown variant `kubectl`"),
            "{m}"
        );
        let docker = with("{ kind = \"docker\", image = \"127.0.0.1:5000/shop/backend\" }");
        let c = Config::parse(&docker, Path::new("rw.toml"), Path::new("/")).unwrap();
        assert!(
            matches!(&c.targets[0].executor, ExecutorConfig::Docker(d) if d.image.ends_with("backend"))
        );
        let prom = format!(
            "{docker}[targets.metrics]\nsource = {{ kind = \"prometheus\", url = \"http://p:9090\", urls = [], requests = \"r\", errors = \"e\" }}\n"
        );
        let (_, m) = refusal(&prom);
        assert!(
            m.contains("unknown field `urls` for kind = \"prometheus\""),
            "{m}"
        );
        let (_, m) = refusal(&prom.replace("url = \"http://p:9090\", urls = [], ", ""));
        assert!(m.contains("missing field `url`"), "{m}");
    }
}
