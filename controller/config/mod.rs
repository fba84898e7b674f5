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
use crate::store::StoreLocation;
use crate::tag::Tag;
use crate::target::{Env, Selector, TargetId};

/// The file read when neither `--config` nor `ROLLWATCH_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "rollwatch.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is part of the one sentence and deliberately not a `#[source]`: the CLI
    /// prints error chains, which would say it twice.
    #[error(
        "cannot read config file {}: {}; pass the right file with --config or ROLLWATCH_CONFIG",
        path.display(),
        read_cause(error)
    )]
    Read {
        path: PathBuf,
        error: std::io::Error,
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

/// Why a config file could not be read, in words: the OS text without its "(os error 2)".
fn read_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "no such file".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "it is a directory".into(),
        ErrorKind::InvalidData => "it is not UTF-8 text".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
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
    /// Where rollback records and known-good tags live: an SQLite file (relative to the config
    /// file), or `postgres://user@host:port/database` for several controllers sharing one store.
    #[serde(default = "default_store")]
    pub store: StoreLocation,
    /// Environment variable holding the PostgreSQL password (a URL with a password is refused:
    /// it would sit in the config file and in every message that names the store).
    #[serde(default = "default_store_password_env")]
    pub store_password_env: String,
    /// This instance's name in the lease and in its metrics (PostgreSQL store); the lease
    /// holder is `<instance>:<pid>.<random>`, unique even when two share a name. The host name
    /// by default.
    #[serde(default)]
    pub instance: Option<String>,
    /// How long a leader's lease lasts without a renewal (PostgreSQL store). A dead leader is
    /// replaced within about this plus a fifth of it; renewals go every fifth.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// The API address followers name in their 503 answers; `http://<listen>` by default
    /// (set it when `listen` is `0.0.0.0` or behind a proxy).
    #[serde(default)]
    pub advertise_url: Option<Url>,
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
    /// How new versions reach users: `replace` (default) or `canary` (needs `[targets.canary]`).
    #[serde(default)]
    pub strategy: Strategy,
    pub canary: Option<CanaryConfig>,
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
            // Five rounds: long enough for a restarting daemon or registry to come back.
            refusal_backoff_ms: 5 * self.interval.as_millis() as i64,
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

/// Read through [`tagged::SourceTable`], so that toml locates each key (`kind` picks the variant).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "tagged::SourceTable")]
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
    /// A Prometheus server; each query names cumulative counters, usually with an outer `sum`,
    /// which rollwatch evaluates per series so one instance's counter reset stays its own.
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

/// Read through [`tagged::ExecutorTable`], so that toml locates each key (`kind` picks the variant).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "tagged::ExecutorTable")]
// One per target, parsed once: boxing the compose variant would only add noise at every use.
#[allow(clippy::large_enum_variant)]
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
    /// The longest one step (compose detection, pull, up, the `.env` write; locally or through
    /// ssh, retries included) may take; at this deadline its whole process group is killed and
    /// the rollback fails naming the step. A pull of a large image is the slowest honest step.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    pub step_timeout: Duration,
}

/// `executor.step_timeout` when unset: long enough for a slow pull of a large image, short
/// enough that a hung registry or host is noticed within one on-call glance.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5 * 60);

fn default_step_timeout() -> Duration {
    DEFAULT_STEP_TIMEOUT
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
    /// Also sets ssh's keep-alive: `ServerAliveInterval` is this many seconds and
    /// `ServerAliveCountMax` 3, so a host that stops answering mid-command is given up on after
    /// about three times this, before `executor.step_timeout` when that is longer.
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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

fn default_store() -> StoreLocation {
    StoreLocation::Sqlite(PathBuf::from("rollwatch.db"))
}
fn default_store_password_env() -> String {
    "ROLLWATCH_STORE_PASSWORD".into()
}
pub(crate) fn default_lease_ttl() -> Duration {
    Duration::from_secs(5)
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

impl ControllerConfig {
    /// The configured instance name, else the host name, else `rollwatch`.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "rollwatch".into())
        })
    }

    /// The PostgreSQL password from the variable named by `store_password_env`; `None` when it
    /// is unset or empty (trust or peer authentication needs none).
    pub fn store_password(&self) -> Option<String> {
        std::env::var(&self.store_password_env)
            .ok()
            .filter(|p| !p.is_empty())
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            store: default_store(),
            store_password_env: default_store_password_env(),
            instance: None,
            lease_ttl: default_lease_ttl(),
            advertise_url: None,
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
    targets: Vec<TargetConfig>,
}

impl Config {
    /// Reads and validates `path`; relative paths inside are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
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
    ///
    /// Type errors come located from toml itself; values that parse but would disable a safety
    /// check (see [`check_config`]) are located afterwards by looking their key up in the text.
    pub fn parse(text: &str, source: &Path, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let field = e.span().and_then(|span| field_at(text, span.start));
            let message = match field {
                Some(field) => format!("{field}: {}", e.message()),
                None => e.message().to_string(),
            };
            located(source, text, e.span(), message)
        })?;
        let mut targets = raw.targets;
        check_config(&raw.controller, &targets).map_err(|r| r.located(source, text))?;
        for t in &mut targets {
            t.selector.slots = t.strategy == Strategy::Canary;
            if let ExecutorConfig::Compose(c) = &mut t.executor {
                if let Some(d) = c.dir.as_mut().filter(|d| d.is_relative()) {
                    *d = base.join(&*d);
                }
                for h in &mut c.also {
                    if h.dir.is_relative() {
                        h.dir = base.join(&h.dir);
                    }
                }
            }
        }
        let mut controller = raw.controller;
        crate::secrets::mark(&controller.api_token_env);
        crate::secrets::mark(&controller.store_password_env);
        for t in &targets {
            if let Some(MetricsKind::Prometheus {
                auth_header_env: Some(name),
                ..
            }) = t.metrics.as_ref().map(|m| &m.source)
            {
                crate::secrets::mark(name);
            }
        }
        if let StoreLocation::Sqlite(path) = &mut controller.store {
            if path.is_relative() {
                *path = base.join(&*path);
            }
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

/// A role as records, metrics and URLs carry it: lowercase letters, digits and `-`, at most 63.
pub fn is_role_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

mod canary;
mod check;
#[cfg(test)]
mod props;
mod tagged;

pub use canary::{watch_warnings, CanaryConfig, Strategy, TrafficConfig};
use check::{check_config, field_at};
pub use check::{MAX_FACTOR, MAX_SSH_RETRIES, MAX_WAIT, MAX_WINDOW};

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

    #[test]
    fn a_canary_target_is_refused_on_a_postgresql_store() {
        let canary = format!(
            "{GOOD}strategy = \"canary\"\n[targets.canary]\nports = [18081, 18082]\ntraffic = {{ kind = \"haproxy\", socket = \"/run/haproxy.sock\", backend = \"be\", servers = [\"blue\", \"green\"] }}\n"
        );
        parse(&canary).expect("fine on SQLite");
        let shared = canary.replace(
            "store = \"state/rollwatch.db\"",
            "store = \"postgres://rw@127.0.0.1:5432/rw\"",
        );
        let (_, e) = error_of(&shared);
        assert!(
            e.contains("targets[0].strategy") && e.contains("not supported on a PostgreSQL store"),
            "{e}"
        );
    }

    #[test]
    fn a_canary_strategy_needs_its_settings_and_checks_them() {
        let canary = |body: &str| format!("{GOOD}strategy = \"canary\"\n{body}");
        let table = |extra: &str| {
            format!(
                "[targets.canary]\nports = [18081, 18082]\ntraffic = {{ kind = \"haproxy\", socket = \"/run/haproxy.sock\", backend = \"be\", servers = [\"blue\", \"green\"] }}\n{extra}"
            )
        };
        let c = parse(&canary(&table(""))).expect("valid canary settings");
        let t = &c.targets[0];
        // The default bake (5m) ends before 3 steps of 1m and the 10m hold.
        let warned = watch_warnings(&c.targets);
        assert!(
            warned.len() == 1 && warned[0].contains("watch.bake = \"13m\""),
            "{warned:?}"
        );
        let long = parse(&canary(&table("")).replace(
            "strategy = \"canary\"",
            "strategy = \"canary\"\nwatch = { bake = \"13m\" }",
        ))
        .expect("valid");
        assert!(watch_warnings(&long.targets).is_empty());
        assert_eq!(t.strategy, Strategy::Canary);
        assert_eq!(
            t.canary.as_ref().map(|c| c.port_var.as_str()),
            Some("APP_PORT")
        );
        let (_, e) = error_of(&canary(
            &table("").replace("[18081, 18082]", "[18081, 18081]"),
        ));
        assert!(e.contains("two distinct, non-zero ports"), "{e}");
        let (_, e) = error_of(&canary(&table("port_var = \"APP PORT\"\n")));
        assert!(e.contains("not a variable name"), "{e}");
        let no_dir = canary(&table("")).replace("dir = \"/opt/shop/staging/backend\", ", "");
        let (_, e) = error_of(&no_dir);
        assert!(e.contains("needs executor.dir"), "{e}");
        let defaults: CanaryConfig = toml::from_str(&table("").replace("[targets.canary]\n", ""))
            .expect("canary settings alone");
        assert_eq!(
            (defaults.steps.as_slice(), defaults.hold.as_secs()),
            ([10, 50, 100].as_slice(), 600)
        );
        let (_, e) = error_of(&canary(""));
        assert!(e.contains("needs a [targets.canary] table"), "{e}");
        let (_, e) = error_of(&format!("{GOOD}{}", table("")));
        assert!(e.contains("strategy is \"replace\""), "{e}");
        for (steps, why) in [
            ("[50, 10, 100]", "increasing"),
            ("[10, 50]", "last step of 100"),
            ("[0, 100]", "from 1"),
        ] {
            let (_, e) = error_of(&canary(&table(&format!("steps = {steps}\n"))));
            assert!(e.contains("steps") && e.contains(why), "{steps}: {e}");
        }
        let (_, e) = error_of(&canary(&table("step_min = \"100ms\"\n")));
        assert!(e.contains("shorter than the watch interval"), "{e}");
        let relative = table("").replace("/run/haproxy.sock", "haproxy.sock");
        let (_, e) = error_of(&canary(&relative));
        assert!(e.contains("not an absolute path"), "{e}");
        let same = table("").replace("\"green\"", "\"blue\"");
        let (_, e) = error_of(&canary(&same));
        assert!(e.contains("two distinct servers"), "{e}");
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
            StoreLocation::Sqlite(PathBuf::from("/etc/rw/state/rollwatch.db"))
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
        let c = parse(include_str!("../../examples/rollwatch.toml")).unwrap();
        assert_eq!(c.targets.len(), 2);
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let (line, _) = error_of("[controller]\nstore = \n");
        assert_eq!(line, 2);
    }

    /// Every key with a checked range, each on its own line, so a test can change one value and
    /// check that the error points at it.
    const FULL: &str = r#"
[controller]
alert_window = "30m"

[[targets]]
env = "staging"
role = "backend"
selector = { compose_project = "shop-staging-backend", compose_service = "backend" }
health = { url = "http://127.0.0.1:8080/health", timeout = "1s", validation_timeout = "60s" }

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
source = { kind = "scrape", urls = ["http://127.0.0.1:8080/metrics"], requests = "http_requests_total", errors = "http_requests_total" }

[targets.executor]
kind = "compose"
dir = "/opt/shop/staging/backend"
registry = "127.0.0.1:5000/shop"
host = "deploy@db1"

[targets.executor.ssh]
port = 22
connect_timeout = "10s"
retries = 2
"#;

    /// `FULL` with `old` (which must occur once) replaced by `new`.
    fn full_with(old: &str, new: &str) -> String {
        assert_eq!(FULL.matches(old).count(), 1, "{old:?} must occur once");
        FULL.replace(old, new)
    }

    /// Asserts that `text` is refused with `field: ...says...`, located at `value` on its line.
    fn assert_refused(text: &str, field: &str, value: &str, says: &str) {
        match parse(text) {
            Err(e @ ConfigError::Invalid { .. }) => {
                let shown = e.to_string();
                let ConfigError::Invalid {
                    column,
                    message,
                    line_text,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert!(
                    message.starts_with(&format!("{field}: ")),
                    "names the field {field}: {shown}"
                );
                assert!(message.contains(says), "says {says:?}: {shown}");
                let at: String = line_text.chars().skip(column - 1).collect();
                assert!(at.starts_with(value), "points at {value:?}: {shown}");
            }
            other => panic!("expected {field} to be refused, got {other:?}"),
        }
    }

    #[test]
    fn full_config_is_valid() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.targets[0].watch.bake, Duration::from_secs(300));
    }

    #[test]
    fn zero_timeouts_and_intervals_are_refused_at_their_value() {
        for (old, new, field) in [
            (
                "timeout = \"1s\"",
                "timeout = \"0s\"",
                "targets[0].health.timeout",
            ),
            (
                "validation_timeout = \"60s\"",
                "validation_timeout = \"0s\"",
                "targets[0].health.validation_timeout",
            ),
            (
                "interval = \"1s\"",
                "interval = \"0s\"",
                "targets[0].watch.interval",
            ),
            ("bake = \"5m\"", "bake = \"0s\"", "targets[0].watch.bake"),
            (
                "timeout = \"2s\"",
                "timeout = \"0ms\"",
                "targets[0].metrics.timeout",
            ),
            (
                "alert_window = \"30m\"",
                "alert_window = \"0s\"",
                "controller.alert_window",
            ),
        ] {
            let value = &new[new.find('"').unwrap()..];
            assert_refused(
                &full_with(old, new),
                field,
                value,
                "use a duration above zero",
            );
        }
    }

    #[test]
    fn zero_grace_and_cooldown_are_allowed() {
        let text = full_with("grace = \"5s\"", "grace = \"0s\"")
            .replace("cooldown = \"10m\"", "cooldown = \"0s\"");
        let c = parse(&text).unwrap();
        assert!(c.targets[0].watch.grace.is_zero() && c.targets[0].watch.cooldown.is_zero());
    }

    #[test]
    fn durations_beyond_the_ceiling_are_refused_before_they_can_overflow() {
        // 500 million years fits humantime's u64 seconds but wraps `as_millis() as i64`.
        assert_refused(
            &full_with("bake = \"5m\"", "bake = \"500000000years\""),
            "targets[0].watch.bake",
            "\"500000000years\"",
            "the longest window accepted",
        );
        assert_refused(
            &full_with("cooldown = \"10m\"", "cooldown = \"31days\""),
            "targets[0].watch.cooldown",
            "\"31days\"",
            "30days",
        );
        assert_refused(
            &full_with("timeout = \"1s\"", "timeout = \"2h\""),
            "targets[0].health.timeout",
            "\"2h\"",
            "the longest timeout or interval accepted",
        );
        assert_refused(
            &full_with("alert_window = \"30m\"", "alert_window = \"1000years\""),
            "controller.alert_window",
            "\"1000years\"",
            "longer than 30days",
        );
        let at_ceiling = full_with("cooldown = \"10m\"", "cooldown = \"30days\"");
        assert_eq!(
            parse(&at_ceiling).unwrap().targets[0].watch.cooldown,
            MAX_WINDOW
        );
        // Every accepted window survives the millisecond arithmetic of the watcher.
        assert!(i64::try_from(MAX_WINDOW.as_millis()).unwrap() < i64::MAX / 4);
    }

    #[test]
    fn nan_infinite_and_out_of_range_numbers_are_refused() {
        for (old, new, field, says) in [
            (
                "alpha = 0.01",
                "alpha = nan",
                "targets[0].metrics.alpha",
                "nan is not a finite number",
            ),
            (
                "alpha = 0.01",
                "alpha = 0.5",
                "targets[0].metrics.alpha",
                "out of range",
            ),
            (
                "alpha = 0.01",
                "alpha = -0.01",
                "targets[0].metrics.alpha",
                "out of range",
            ),
            (
                "alpha = 0.01",
                "alpha = 0.0",
                "targets[0].metrics.alpha",
                "above 0",
            ),
            (
                "error_ratio_factor = 1.5",
                "error_ratio_factor = inf",
                "targets[0].metrics.error_ratio_factor",
                "inf is not a finite number",
            ),
            (
                "error_ratio_factor = 1.5",
                "error_ratio_factor = 0.5",
                "targets[0].metrics.error_ratio_factor",
                "from 1 to 100",
            ),
            (
                "error_ratio_increase = 0.005",
                "error_ratio_increase = -0.01",
                "targets[0].metrics.error_ratio_increase",
                "out of range",
            ),
            (
                "error_ratio_increase = 0.005",
                "error_ratio_increase = 1.0",
                "targets[0].metrics.error_ratio_increase",
                "out of range",
            ),
            (
                "latency_factor = 1.5",
                "latency_factor = -inf",
                "targets[0].metrics.latency_factor",
                "-inf is not a finite number",
            ),
            (
                "latency_factor = 1.5",
                "latency_factor = 1000.0",
                "targets[0].metrics.latency_factor",
                "out of range",
            ),
        ] {
            let value = &new[new.find("= ").unwrap() + 2..];
            assert_refused(&full_with(old, new), field, value, says);
        }
    }

    #[test]
    fn zero_counts_are_refused() {
        assert_refused(
            &full_with("failures = 3", "failures = 0"),
            "targets[0].watch.failures",
            "0",
            "without a single failed probe",
        );
        assert_refused(
            &full_with("min_requests = 100", "min_requests = 0"),
            "targets[0].metrics.min_requests",
            "0",
            "served no request",
        );
    }

    #[test]
    fn grace_not_shorter_than_bake_is_refused() {
        assert_refused(
            &full_with("grace = \"5s\"", "grace = \"5m\""),
            "targets[0].watch.bake",
            "\"5m\"",
            "make bake longer than grace",
        );
    }

    #[test]
    fn ssh_settings_that_cannot_bound_a_connection_are_refused() {
        assert_refused(
            &full_with("port = 22", "port = 0"),
            "targets[0].executor.ssh.port",
            "0",
            "not a port",
        );
        assert_refused(
            &full_with("connect_timeout = \"10s\"", "connect_timeout = \"0s\""),
            "targets[0].executor.ssh.connect_timeout",
            "\"0s\"",
            "at least 1s",
        );
        assert_refused(
            &full_with("connect_timeout = \"10s\"", "connect_timeout = \"500ms\""),
            "targets[0].executor.ssh.connect_timeout",
            "\"500ms\"",
            "whole seconds",
        );
        assert_refused(
            &full_with("retries = 2", "retries = 4294967295"),
            "targets[0].executor.ssh.retries",
            "4294967295",
            "use 0 to 10",
        );
    }

    #[test]
    fn empty_target_list_is_refused() {
        match parse("[controller]\nstore = \"x.db\"\n") {
            Err(ConfigError::Invalid { line, message, .. }) => {
                assert_eq!(line, 1);
                assert!(message.starts_with("targets: no target"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_refused(
            "targets = []\n[controller]\nstore = \"x.db\"\n",
            "targets",
            "[]",
            "add a [[targets]] table",
        );
    }

    #[test]
    fn a_defaulted_key_points_at_its_table() {
        // bake defaults to 5m; grace 10m is refused at the watch table that lacks bake.
        let text = GOOD.replace("health = {", "watch = { grace = \"10m\" }\nhealth = {");
        assert_refused(
            &text,
            "targets[0].watch.bake",
            "{ grace",
            "longer than grace",
        );
    }

    #[test]
    fn refusal_shows_file_line_column_field_and_line() {
        let text = GOOD.replace("timeout = \"1s\"", "timeout = \"0s\"");
        let shown = parse(&text).unwrap_err().to_string();
        assert!(
            shown.starts_with("rw.toml:9:60: targets[0].health.timeout: 0s leaves a probe no time"),
            "{shown}"
        );
        assert!(
            shown.ends_with(
                "\n    | health = { url = \"http://127.0.0.1:8080/health\", timeout = \"0s\" }"
            ),
            "{shown}"
        );
    }

    #[test]
    fn missing_file_says_its_cause_once() {
        let err = Config::load(Path::new("/nonexistent/rollwatch.toml")).unwrap_err();
        assert!(
            std::error::Error::source(&err).is_none(),
            "no chained repeat"
        );
        assert_eq!(
            err.to_string(),
            "cannot read config file /nonexistent/rollwatch.toml: no such file; pass the right file with --config or ROLLWATCH_CONFIG"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(": it is a directory;"), "{err}");
    }

    #[test]
    fn type_errors_name_their_field() {
        let (_, msg) = error_of(&GOOD.replace("\"staging\"", "\"prod\""));
        assert!(
            msg.starts_with("targets[0].env: unknown variant `prod`"),
            "{msg}"
        );
        let (_, msg) = error_of(&GOOD.replace("timeout = \"1s\"", "timeout = \"soon\""));
        assert!(msg.starts_with("targets[0].health.timeout: "), "{msg}");
        let (line, msg) =
            error_of(&FULL.replace("bake = \"5m\"", "bake = \"99999999999999999999years\""));
        assert_eq!(line, 15);
        assert!(msg.starts_with("targets[0].watch.bake: "), "{msg}");
        let (_, msg) =
            error_of(&GOOD.replace("\"backend\" }", "\"backend\", labels = { \"a.b\" = 1 } }"));
        assert!(
            msg.starts_with("targets[0].selector.labels.\"a.b\": "),
            "{msg}"
        );
    }
}
