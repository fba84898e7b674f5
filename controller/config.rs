//! The TOML configuration, parsed once into typed values and validated at load. Nothing after
//! `Config::load` re-reads or re-checks a string: a bad file is refused here, naming the file, the
//! line and the field, before anything is touched.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::docker::DockerEndpoint;
use crate::tag::Tag;
use crate::target::{Env, Selector, TargetId};

/// The file read when neither `--config` nor `ROLLWATCH_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "rollwatch.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source} (pass another with --config or ROLLWATCH_CONFIG)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}\n    | {line_text}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        line_text: String,
    },
    #[error("{path}: {message}")]
    Semantic { path: PathBuf, message: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or `<embedded demo config>`), for messages.
    pub source: PathBuf,
    pub controller: ControllerConfig,
    pub fallback_tags: FallbackTags,
    pub targets: Vec<TargetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// SQLite file holding rollback records and known-good tags; relative to the config file.
    #[serde(default = "default_store")]
    pub store: PathBuf,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Decide and record "would roll back" without acting, for every target.
    #[serde(default)]
    pub dry_run: bool,
    /// Environment variable holding the API bearer token. Mutating endpoints are refused (401)
    /// while it is unset or empty.
    #[serde(default = "default_token_env")]
    pub api_token_env: String,
    /// Whether reads (`GET /api/v1/...`) need the token too.
    #[serde(default)]
    pub api_reads_need_token: bool,
    /// An Alertmanager alert rolls a target back only if it deployed within this window.
    #[serde(default = "default_alert_window", with = "humantime_serde")]
    pub alert_window: Duration,
    /// Generic JSON webhook called on every rollback event (incident record included).
    pub webhook_url: Option<Url>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackTags {
    #[serde(default = "default_staging_tag")]
    pub staging: Tag,
    #[serde(default = "default_production_tag")]
    pub production: Tag,
}

impl FallbackTags {
    pub fn for_env(&self, env: Env) -> &Tag {
        match env {
            Env::Staging => &self.staging,
            Env::Production => &self.production,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub env: Env,
    pub role: String,
    #[serde(default)]
    pub docker: DockerEndpoint,
    pub selector: Selector,
    pub health: HealthConfig,
    #[serde(default)]
    pub watch: WatchConfig,
    /// Error metrics judged during the watch window, besides `/health`.
    pub metrics: Option<MetricsConfig>,
    pub executor: ExecutorConfig,
    /// Overrides `controller.dry_run` for this target only.
    pub dry_run: Option<bool>,
}

impl TargetConfig {
    pub fn id(&self) -> TargetId {
        TargetId {
            env: self.env,
            role: self.role.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub url: HealthUrl,
    /// One probe's deadline.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a rollback waits for `/health` to answer ok before it is declared failed.
    #[serde(default = "default_rollback_validation", with = "humantime_serde")]
    pub validation_timeout: Duration,
}

/// The watch window after each deploy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Time between health probes and container checks.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Consecutive failed probes, after the grace, that make a deploy regressed.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Start-up time during which failed probes do not count.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace: Duration,
    /// How long a deploy must stay healthy to become known-good.
    #[serde(default = "default_bake", with = "humantime_serde")]
    pub bake: Duration,
    /// After a rollback, no automatic rollback of this target for this long.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            interval: default_interval(),
            failures: default_failures(),
            grace: default_grace(),
            bake: default_bake(),
            cooldown: default_cooldown(),
        }
    }
}

impl WatchConfig {
    pub fn policy(&self) -> crate::verdict::Policy {
        crate::verdict::Policy {
            failures: self.failures,
            grace_ms: self.grace.as_millis() as i64,
            bake_ms: self.bake.as_millis() as i64,
            cooldown_ms: self.cooldown.as_millis() as i64,
        }
    }
}

/// Where a target's error metrics come from, and how strict the judgement is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub source: MetricsKind,
    /// One read's deadline; a slower source is down (inconclusive), never a reason to roll back.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Bound on the false-rollback rate of the error-ratio test, however long it watches.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Requests the candidate must have served before any metric verdict.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Practical effect: the candidate's error ratio must be at least this many times the baseline's...
    #[serde(default = "default_error_factor")]
    pub error_ratio_factor: f64,
    /// ...and at least this much higher in absolute terms (0.005 = half a percentage point).
    #[serde(default = "default_error_increase")]
    pub error_ratio_increase: f64,
    /// Latency: the candidate's median interval mean must be this many times the baseline's...
    #[serde(default = "default_latency_factor")]
    pub latency_factor: f64,
    /// ...and this much slower.
    #[serde(default = "default_latency_increase", with = "humantime_serde")]
    pub latency_increase: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum MetricsKind {
    /// The service's own `/metrics`, one URL per container; counters are summed.
    Scrape {
        urls: Vec<Url>,
        /// Selector of the request counter, e.g. `http_requests_total`.
        requests: String,
        /// Selector of the error counter, e.g. `http_requests_total{code=~"5.."}`.
        errors: String,
        /// Base name of the latency histogram (its `_sum` and `_count` are read).
        latency_histogram: Option<String>,
        /// A metric whose label names the version an endpoint serves (e.g. `build_info`); with
        /// it, endpoints still on the old version during a canary or host-by-host rollout are
        /// the side-by-side baseline.
        version_metric: Option<String>,
        /// The label of `version_metric` holding the version; default `version`.
        version_label: Option<String>,
    },
    /// A Prometheus server; each query must return one cumulative number (use `sum(...)`).
    Prometheus {
        url: Url,
        requests: String,
        errors: String,
        latency_sum: Option<String>,
        latency_count: Option<String>,
        /// Environment variable holding the `Authorization` header value, if the server needs one.
        auth_header_env: Option<String>,
    },
}

impl MetricsConfig {
    pub fn policy(&self) -> crate::analysis::MetricPolicy {
        crate::analysis::MetricPolicy {
            alpha: self.alpha,
            min_requests: self.min_requests as f64,
            error_ratio_factor: self.error_ratio_factor,
            error_ratio_increase: self.error_ratio_increase,
            latency_factor: self.latency_factor,
            latency_increase_s: self.latency_increase.as_secs_f64(),
        }
    }
}

fn default_alpha() -> f64 {
    0.01
}
fn default_min_requests() -> u64 {
    100
}
fn default_error_factor() -> f64 {
    1.5
}
fn default_error_increase() -> f64 {
    0.005
}
fn default_latency_factor() -> f64 {
    1.5
}
fn default_latency_increase() -> Duration {
    Duration::from_millis(100)
}

/// A health URL; only http and https can be probed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HealthUrl(pub Url);

impl TryFrom<String> for HealthUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let url = Url::parse(&s).map_err(|e| format!("invalid health url {s:?}: {e}"))?;
        match url.scheme() {
            "http" | "https" => Ok(HealthUrl(url)),
            other => Err(format!(
                "health url {s:?} has scheme {other:?}; use http or https"
            )),
        }
    }
}

// One value per target, parsed once: the size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ExecutorConfig {
    Compose(ComposeExecutorConfig),
    Docker(DockerExecutorConfig),
}

impl ExecutorConfig {
    /// The image repository (no tag) the target runs, used to check a tag exists before acting.
    pub fn image_repository(&self, role: &str) -> String {
        match self {
            ExecutorConfig::Compose(c) => c
                .image
                .clone()
                .unwrap_or_else(|| format!("{}/{role}", c.registry)),
            ExecutorConfig::Docker(d) => d.image.clone(),
        }
    }
}

/// The runbook executor: `docker compose --env-file .env pull && up -d --remove-orphans`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeExecutorConfig {
    /// The deployment directory, `/opt/<app>/<env>/<role>` in the runbook. Unset: the
    /// directory and compose files compose recorded in the watched containers' labels.
    pub dir: Option<PathBuf>,
    /// The compose project passed as `-p` when neither the watched containers' labels nor the
    /// selector's `compose_project` name one (e.g. no container is left to read it from).
    pub project: Option<String>,
    #[serde(default = "default_env_file")]
    pub env_file: String,
    /// `CONTAINER_REGISTRY` as the compose file uses it, e.g. `registry.example.com/group/app`.
    pub registry: String,
    /// Image repository without tag; defaults to `<registry>/<role>`.
    pub image: Option<String>,
    #[serde(default)]
    pub compose_command: ComposeCommand,
    /// `user@host` to run the runbook on through ssh; unset runs it on this machine.
    pub host: Option<SshDestination>,
    /// Further hosts of the same target (several containers for one env/role): each runs the
    /// runbook in its own directory; all are rolled back, failures are reported per host.
    #[serde(default)]
    pub also: Vec<ExtraHost>,
    #[serde(default)]
    pub ssh: SshConfig,
}

/// Another host of a multi-host compose target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraHost {
    /// `user@host`; unset means this machine (a second compose project here).
    pub host: Option<SshDestination>,
    pub dir: PathBuf,
}

/// `[user@]host`, checked so it can never be read as an ssh option or carry shell syntax.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SshDestination(pub String);

impl TryFrom<String> for SshDestination {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && !s.starts_with('-')
            && s.matches('@').count() <= 1
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'));
        if ok {
            Ok(SshDestination(s))
        } else {
            Err(format!(
                "ssh host {s:?} is not [user@]hostname (letters, digits, '.', '-', '_')"
            ))
        }
    }
}

/// How rollwatch connects to deployment hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Private key; default: ssh's own choice (~/.ssh/id_*).
    pub identity_file: Option<PathBuf>,
    #[serde(default)]
    pub host_key_checking: HostKeyChecking,
    pub known_hosts_file: Option<PathBuf>,
    #[serde(default = "default_ssh_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Further attempts when the connection fails (never when the remote command failed).
    #[serde(default = "default_ssh_retries")]
    pub retries: u32,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            port: default_ssh_port(),
            identity_file: None,
            host_key_checking: HostKeyChecking::default(),
            known_hosts_file: None,
            connect_timeout: default_ssh_timeout(),
            retries: default_ssh_retries(),
        }
    }
}

/// `strict` refuses unknown hosts (the safe default), `accept-new` trusts a host on first
/// contact, `off` checks nothing (tests only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyChecking {
    #[default]
    Strict,
    AcceptNew,
    Off,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_ssh_retries() -> u32 {
    2
}

/// Which compose binary to run. `auto` tries `docker compose` first and falls back to
/// `docker-compose`, by running them rather than guessing from PATH.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeCommand {
    #[default]
    Auto,
    /// `docker compose` (v2 plugin).
    Plugin,
    /// `docker-compose` (v1, or v2's standalone binary).
    Standalone,
}

/// Recreates containers started without compose through the Docker API, image pinned by ID.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerExecutorConfig {
    /// Image repository without tag, e.g. `127.0.0.1:5000/shop/backend`.
    pub image: String,
}

fn default_store() -> PathBuf {
    PathBuf::from("rollwatch.db")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9860))
}
fn default_staging_tag() -> Tag {
    Tag::parse(Env::Staging.default_fallback_tag()).unwrap_or_else(|_| unreachable!())
}
fn default_production_tag() -> Tag {
    Tag::parse(Env::Production.default_fallback_tag()).unwrap_or_else(|_| unreachable!())
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_rollback_validation() -> Duration {
    Duration::from_secs(60)
}
fn default_alert_window() -> Duration {
    Duration::from_secs(1800)
}
fn default_token_env() -> String {
    "ROLLWATCH_API_TOKEN".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_failures() -> u32 {
    3
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_bake() -> Duration {
    Duration::from_secs(300)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(600)
}
fn default_env_file() -> String {
    ".env".into()
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            store: default_store(),
            listen: default_listen(),
            dry_run: false,
            api_token_env: default_token_env(),
            api_reads_need_token: false,
            alert_window: default_alert_window(),
            webhook_url: None,
        }
    }
}

impl Default for FallbackTags {
    fn default() -> Self {
        FallbackTags {
            staging: default_staging_tag(),
            production: default_production_tag(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    controller: ControllerConfig,
    #[serde(default)]
    fallback_tags: FallbackTags,
    #[serde(default)]
    targets: Vec<toml::Spanned<TargetConfig>>,
}

impl Config {
    /// Reads and validates `path`; relative paths inside are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Anchor relative paths at the file's directory, made absolute so messages and the
        // compose working directory do not depend on where rollwatch was started.
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Config::parse(&text, path, &base)
    }

    /// Parses config text; `source` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, source: &Path, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| located(source, text, e.span(), e.message().to_string()))?;
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        for spanned in raw.targets {
            let span = spanned.span();
            let mut t = spanned.into_inner();
            let fail = |message: String| located(source, text, Some(span.clone()), message);
            if !is_role_name(&t.role) {
                return Err(fail(format!(
                    "targets.role {:?} is not a role name: use lowercase letters, digits and '-' (e.g. backend)",
                    t.role
                )));
            }
            if !seen.insert(t.id()) {
                return Err(fail(format!(
                    "target {} is configured twice; each env/role pair once",
                    t.id()
                )));
            }
            if t.watch.failures == 0 || t.watch.interval.is_zero() {
                return Err(fail(format!(
                    "target {}: watch.failures and watch.interval must be above zero",
                    t.id()
                )));
            }
            if let Some(m) = &t.metrics {
                if !(m.alpha > 0.0 && m.alpha < 0.5) {
                    return Err(fail(format!(
                        "target {}: metrics.alpha {} must be between 0 and 0.5",
                        t.id(),
                        m.alpha
                    )));
                }
                if m.error_ratio_factor < 1.0 || m.latency_factor < 1.0 {
                    return Err(fail(format!(
                        "target {}: metrics factors must be at least 1.0",
                        t.id()
                    )));
                }
                if let MetricsKind::Scrape {
                    urls,
                    requests,
                    errors,
                    ..
                } = &m.source
                {
                    if urls.is_empty() {
                        return Err(fail(format!(
                            "target {}: metrics.source.urls is empty",
                            t.id()
                        )));
                    }
                    for sel in [requests, errors] {
                        crate::metrics::Selector::parse(sel)
                            .map_err(|e| fail(format!("target {}: metrics.source: {e}", t.id())))?;
                    }
                }
            }
            if t.selector.required_labels().is_empty() {
                return Err(fail(format!(
                    "target {}: selector is empty; set compose_project/compose_service or labels, otherwise every container would match",
                    t.id()
                )));
            }
            let tid = t.id();
            if let ExecutorConfig::Compose(c) = &mut t.executor {
                let remote_relative = (c.host.is_some()
                    && c.dir.as_ref().is_some_and(|d| d.is_relative()))
                    || c.also
                        .iter()
                        .any(|h| h.host.is_some() && h.dir.is_relative());
                if remote_relative {
                    return Err(fail(format!(
                        "target {tid}: directories on remote hosts must be absolute paths"
                    )));
                }
                if let Some(d) = c.dir.as_mut().filter(|d| d.is_relative()) {
                    *d = base.join(&*d);
                }
                if let Some(p) = c.project.as_deref() {
                    if !crate::rollback::is_valid_project_name(p) {
                        return Err(fail(format!(
                            "target {tid}: executor.project {p:?} is not a compose project name: use lowercase letters, digits, '-' and '_', starting with a letter or digit"
                        )));
                    }
                }
                for h in &mut c.also {
                    if h.dir.is_relative() {
                        h.dir = base.join(&h.dir);
                    }
                }
                if c.env_file.contains('/') {
                    return Err(fail(format!(
                        "target {}: executor.env_file {:?} must be a file name inside executor.dir",
                        tid, c.env_file
                    )));
                }
            }
            targets.push(t);
        }
        let mut controller = raw.controller;
        if controller.store.is_relative() {
            controller.store = base.join(&controller.store);
        }
        Ok(Config {
            source: source.to_path_buf(),
            controller,
            fallback_tags: raw.fallback_tags,
            targets,
        })
    }

    pub fn target(&self, id: &TargetId) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.id() == *id)
    }

    pub fn is_dry_run(&self, target: &TargetConfig) -> bool {
        target.dry_run.unwrap_or(self.controller.dry_run)
    }
}

fn is_role_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// Turns a byte span into `file:line:column` plus the offending line, so the user sees the field.
fn located(path: &Path, text: &str, span: Option<Range<usize>>, message: String) -> ConfigError {
    let start = span.map(|s| s.start.min(text.len())).unwrap_or(0);
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("").to_string();
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
        line_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[controller]
store = "state/rollwatch.db"

[[targets]]
env = "staging"
role = "backend"
selector = { compose_project = "shop-staging-backend", compose_service = "backend" }
health = { url = "http://127.0.0.1:8080/health", timeout = "1s" }
executor = { kind = "compose", dir = "/opt/shop/staging/backend", registry = "127.0.0.1:5000/shop" }
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("rw.toml"), Path::new("/etc/rw"))
    }

    fn error_of(text: &str) -> (usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line,
                message,
                line_text,
                ..
            }) => (line, format!("{message} | {line_text}")),
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    #[test]
    fn good_config_is_typed_and_defaulted() {
        let c = parse(GOOD).unwrap();
        let t = &c.targets[0];
        assert_eq!(t.id().to_string(), "staging/backend");
        assert_eq!(t.health.timeout, Duration::from_secs(1));
        assert_eq!(t.health.validation_timeout, Duration::from_secs(60));
        assert_eq!(
            c.controller.store,
            PathBuf::from("/etc/rw/state/rollwatch.db")
        );
        assert_eq!(c.fallback_tags.for_env(Env::Production).as_str(), "main");
        assert_eq!(
            t.executor.image_repository("backend"),
            "127.0.0.1:5000/shop/backend"
        );
        assert!(
            matches!(&t.executor, ExecutorConfig::Compose(c) if c.compose_command == ComposeCommand::Auto)
        );
    }

    #[test]
    fn unknown_env_names_line_and_value() {
        let (line, msg) = error_of(&GOOD.replace("\"staging\"", "\"prod\""));
        assert_eq!(line, 6);
        assert!(msg.contains("prod") && msg.contains("env"), "{msg}");
    }

    #[test]
    fn unknown_field_is_named() {
        let (line, msg) = error_of(&GOOD.replace(
            "role = \"backend\"",
            "role = \"backend\"\nhealth_url = \"x\"",
        ));
        assert_eq!(line, 8);
        assert!(msg.contains("health_url"), "{msg}");
    }

    #[test]
    fn bad_duration_and_url_are_refused() {
        let (_, msg) = error_of(&GOOD.replace("\"1s\"", "\"soon\""));
        assert!(msg.contains("soon") || msg.contains("timeout"), "{msg}");
        let (line, msg) = error_of(&GOOD.replace("http://127.0.0.1:8080/health", "ftp://x/health"));
        assert_eq!(line, 9);
        assert!(msg.contains("ftp"), "{msg}");
    }

    #[test]
    fn malformed_fallback_tag_is_refused() {
        let (line, msg) = error_of(&format!("[fallback_tags]\nstaging = \"Dev elop\"\n{GOOD}"));
        assert_eq!(line, 2);
        assert!(msg.contains("Dev elop"), "{msg}");
    }

    #[test]
    fn duplicate_target_is_refused() {
        let doubled = format!("{GOOD}{}", &GOOD[GOOD.find("[[targets]]").unwrap()..]);
        let (line, msg) = error_of(&doubled);
        assert!(msg.contains("configured twice"), "{msg}");
        assert!(line > 10, "points at the second target, got line {line}");
    }

    #[test]
    fn unknown_executor_kind_is_refused() {
        let (_, msg) = error_of(&GOOD.replace("kind = \"compose\"", "kind = \"kubectl\""));
        assert!(msg.contains("kubectl"), "{msg}");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let c = parse(include_str!("../examples/rollwatch.toml")).unwrap();
        assert_eq!(c.targets.len(), 2);
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let (line, _) = error_of("[controller]\nstore = \n");
        assert_eq!(line, 2);
    }
}
