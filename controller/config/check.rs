//! Values that parse but are refused, and where in the file they are written.
//!
//! serde checks types; these checks refuse values of the right type that would quietly turn a
//! safety off (a zero probe timeout fails every probe, `failures = 0` calls every deploy
//! regressed, an infinite factor means no regression can ever be shown) or overflow the `i64`
//! millisecond arithmetic of the watcher (`now_ms + grace_ms`: humantime accepts durations up to
//! ~584 billion years). They run on the typed config, so they stay plain functions with unit
//! tests; the error is then located by looking the key up in the text (`value_span`).

use super::*;

/// Longest `grace`, `bake`, `cooldown` or `alert_window` accepted: a window of more than a
/// month is a typo, not a policy, and this keeps every window far from `i64` overflow.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest timeout or probe interval accepted: a watcher waiting longer than an hour for one
/// answer looks alive while it watches nothing.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Most ssh connection retries: each may wait `connect_timeout`, and a rollback waits for all.
pub const MAX_SSH_RETRIES: u32 = 10;

/// Largest practical-effect factor: at 100x an error ratio can only regress from a baseline
/// below 1%; above it the metric judge would quietly never roll back.
pub const MAX_FACTOR: f64 = 100.0;

/// One step of the TOML path to a key: a table key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// A value that parses but is refused: the TOML path of its key, and why, with what to use.
#[derive(Debug)]
pub(super) struct Refusal {
    path: Vec<Seg>,
    message: String,
    /// A secret the refused value holds, masked in the quoted line (a password in a URL).
    secret: Option<String>,
}

impl Refusal {
    /// The refusal as the user reads it: `file:line:column: targets[0].health.timeout: ...`.
    pub(super) fn located(self, source: &Path, text: &str) -> ConfigError {
        let span = value_span(text, &self.path);
        let message = format!("{}: {}", field_name(&self.path), self.message);
        let mut e = located(source, text, span, message);
        if let (ConfigError::Invalid { line_text, .. }, Some(secret)) = (&mut e, &self.secret) {
            *line_text = line_text.replace(secret.as_str(), "***");
        }
        e
    }

    fn new(path: &[Seg], message: impl Into<String>) -> Refusal {
        Refusal {
            path: path.to_vec(),
            message: message.into(),
            secret: None,
        }
    }

    /// The same refusal, its path taken as relative to `outer`.
    fn under(self, outer: &[Seg]) -> Refusal {
        let mut path = outer.to_vec();
        path.extend(self.path);
        Refusal { path, ..self }
    }
}

/// Which ceiling a duration has.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Timeouts and intervals: [`MAX_WAIT`].
    Wait,
    /// Grace, bake, cooldown and alert windows: [`MAX_WINDOW`].
    Window,
}

impl Limit {
    fn max(self) -> Duration {
        match self {
            Limit::Wait => MAX_WAIT,
            Limit::Window => MAX_WINDOW,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Limit::Wait => "timeout or interval",
            Limit::Window => "window",
        }
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A duration that may be zero, at most its limit.
fn at_most(path: &[Seg], value: Duration, limit: Limit) -> Result<(), Refusal> {
    if value > limit.max() {
        return Err(Refusal::new(
            path,
            format!(
                "{} is longer than {}, the longest {} accepted; use a shorter one",
                human(value),
                human(limit.max()),
                limit.noun()
            ),
        ));
    }
    Ok(())
}

/// A duration that must be above zero: `zero` says what zero would do; `default` is offered.
fn above_zero(
    path: &[Seg],
    value: Duration,
    limit: Limit,
    zero: &str,
    default: Duration,
) -> Result<(), Refusal> {
    if value.is_zero() {
        return Err(Refusal::new(
            path,
            format!(
                "{} {zero}; use a duration above zero (default {})",
                human(value),
                human(default)
            ),
        ));
    }
    at_most(path, value, limit)
}

/// A float as TOML writes it, so `nan` and `inf` read back as the user typed them.
fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        x.to_string()
    }
}

/// A number that must be finite and `within` its range; `allowed` describes the range.
fn number(
    path: &[Seg],
    value: f64,
    within: bool,
    allowed: &str,
    default: f64,
) -> Result<(), Refusal> {
    let problem = if !value.is_finite() {
        "is not a finite number"
    } else if !within {
        "is out of range"
    } else {
        return Ok(());
    };
    Err(Refusal::new(
        path,
        format!(
            "{} {problem}; use {allowed} (default {default})",
            toml_float(value)
        ),
    ))
}

/// Every check of the parsed config; the first refusal wins, in file order where it matters.
/// A PostgreSQL URL must parse and must not carry a password: the config file is readable by
/// more people than the store should be, and the URL is printed in messages.
fn check_store(controller: &ControllerConfig) -> Result<(), Refusal> {
    let path = [Seg::Key("controller"), Seg::Key("store")];
    let StoreLocation::Postgres(url) = &controller.store else {
        return Ok(());
    };
    if controller.store.has_password() {
        let mut refusal = Refusal::new(
            &path,
            format!(
                "the URL carries a password, which would sit in the config file and in messages; remove it from the URL and put it in the environment variable {} (named by controller.store_password_env)",
                controller.store_password_env
            ),
        );
        // The quoted line must not repeat it (logs, terminals): mask the user part's password,
        // or everything after the `?` that holds `password=`.
        refusal.secret = match url::Url::parse(url) {
            Ok(u) => u
                .password()
                .map(str::to_string)
                .or_else(|| u.query().map(str::to_string)),
            Err(_) => None,
        };
        return Err(refusal);
    }
    if let Err(e) = url.parse::<postgres::Config>() {
        return Err(Refusal::new(
            &path,
            format!("{url:?} is not a PostgreSQL URL ({e}); write it as postgres://user@host:port/database"),
        ));
    }
    check_lease(controller)
}

/// The lease settings of several instances on one PostgreSQL store.
fn check_lease(controller: &ControllerConfig) -> Result<(), Refusal> {
    use Seg::Key;
    let ttl = controller.lease_ttl;
    if ttl < std::time::Duration::from_secs(2) || ttl > std::time::Duration::from_secs(300) {
        return Err(Refusal::new(
            &[Key("controller"), Key("lease_ttl")],
            format!(
                "{} is out of range: under 2s one slow reconnect to the database loses the lease, over 5m a dead leader leaves deploys unwatched that long; use 2s to 5m (default {})",
                humantime::format_duration(ttl),
                humantime::format_duration(super::default_lease_ttl())
            ),
        ));
    }
    if let Some(url) = &controller.advertise_url {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            let mut refusal = Refusal::new(
                &[Key("controller"), Key("advertise_url")],
                "is not an API address to give out: use http:// or https:// without a user or password (it is stored in the lease row and sent in followers' answers)",
            );
            refusal.secret = url.password().map(String::from);
            return Err(refusal);
        }
    } else if controller.listen.ip().is_unspecified() {
        return Err(Refusal::new(
            &[Key("controller"), Key("advertise_url")],
            format!(
                "controller.listen is {}, so followers would send clients to http://{}; set advertise_url to this instance's reachable address",
                controller.listen, controller.listen
            ),
        ));
    }
    if let Some(name) = &controller.instance {
        let fine = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !fine {
            return Err(Refusal::new(
                &[Key("controller"), Key("instance")],
                format!("{name:?} is not an instance name: use 1 to 64 letters, digits, '.', '_' or '-'"),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_config(
    controller: &ControllerConfig,
    targets: &[TargetConfig],
) -> Result<(), Refusal> {
    use Seg::{Index, Key};
    check_store(controller)?;
    above_zero(
        &[Key("controller"), Key("alert_window")],
        controller.alert_window,
        Limit::Window,
        "would let no alert ever roll a target back (to turn alert rollbacks off, drop the rollwatch_action label from the alert rules)",
        default_alert_window(),
    )?;
    if targets.is_empty() {
        return Err(Refusal::new(
            &[Key("targets")],
            "no target is configured, so rollwatch would watch nothing; add a [[targets]] table (see examples/rollwatch.toml)",
        ));
    }
    let mut seen = HashSet::new();
    for (i, t) in targets.iter().enumerate() {
        let at = [Key("targets"), Index(i)];
        if t.strategy == super::Strategy::Canary
            && matches!(controller.store, StoreLocation::Postgres(_))
        {
            return Err(Refusal::new(
                &[Key("targets"), Index(i), Key("strategy")],
                "canary targets are not supported on a PostgreSQL store yet (their weight changes are not fenced by the lease); use strategy = \"replace\" or a SQLite store",
            ));
        }
        check_target(t).map_err(|r| r.under(&at))?;
        if !seen.insert(t.id()) {
            return Err(Refusal::new(
                &[Key("targets"), Index(i), Key("role")],
                format!(
                    "target {} is configured twice; configure each env/role pair once",
                    t.id()
                ),
            ));
        }
    }
    Ok(())
}

/// One target's checks; paths are relative to the target's table.
fn check_target(t: &TargetConfig) -> Result<(), Refusal> {
    use Seg::Key;
    if !is_role_name(&t.role) {
        return Err(Refusal::new(
            &[Key("role")],
            format!(
                "{:?} is not a role name: use lowercase letters, digits and '-' (e.g. backend)",
                t.role
            ),
        ));
    }
    if t.selector.required_labels().is_empty() {
        return Err(Refusal::new(
            &[Key("selector")],
            "the selector is empty, so every container would match; set compose_project/compose_service or labels",
        ));
    }
    above_zero(
        &[Key("health"), Key("timeout")],
        t.health.timeout,
        Limit::Wait,
        "leaves a probe no time to answer, so every probe would fail and every deploy be rolled back",
        default_probe_timeout(),
    )?;
    above_zero(
        &[Key("health"), Key("validation_timeout")],
        t.health.validation_timeout,
        Limit::Wait,
        "would end every rollback in rollback_failed before /health could answer",
        default_rollback_validation(),
    )?;
    check_watch(&t.watch).map_err(|r| r.under(&[Key("watch")]))?;
    if let Some(m) = &t.metrics {
        check_metrics(m).map_err(|r| r.under(&[Key("metrics")]))?;
    }
    if let ExecutorConfig::Compose(c) = &t.executor {
        check_compose(c).map_err(|r| r.under(&[Key("executor")]))?;
    }
    check_strategy(t)
}

/// `strategy = "canary"` needs its settings, and settings without it would be ignored.
fn check_strategy(t: &TargetConfig) -> Result<(), Refusal> {
    use Seg::Key;
    match (t.strategy, &t.canary) {
        (Strategy::Replace, None) => Ok(()),
        (Strategy::Replace, Some(_)) => Err(Refusal::new(
            &[Key("canary")],
            "canary settings are given but strategy is \"replace\" (the default), so they would be ignored; set strategy = \"canary\" or remove [targets.canary]",
        )),
        (Strategy::Canary, None) => Err(Refusal::new(
            &[Key("strategy")],
            "\"canary\" needs a [targets.canary] table naming the load balancer and its two server slots (see the README's canary section)",
        )),
        (Strategy::Canary, Some(c)) => {
            check_canary(c, t.watch.interval).map_err(|r| r.under(&[Key("canary")]))?;
            check_canary_site(t)
        }
    }
}

/// The slots are compose projects started on this machine from the target's directory:
/// what that needs must be in the config, or the first deploy would fail half-way.
fn check_canary_site(t: &TargetConfig) -> Result<(), Refusal> {
    use Seg::Key;
    if t.selector.compose_project.is_none() {
        return Err(Refusal::new(
            &[Key("selector")],
            "a canary target needs selector.compose_project: its slots run as the projects <compose_project>-blue and <compose_project>-green",
        ));
    }
    let ExecutorConfig::Compose(x) = &t.executor else {
        return Err(Refusal::new(
            &[Key("executor")],
            "a canary target's slots are compose projects: use an executor of kind = \"compose\"",
        ));
    };
    if x.dir.is_none() {
        return Err(Refusal::new(
            &[Key("executor"), Key("dir")],
            "a canary target needs executor.dir: the directory whose compose file both slots are started from",
        ));
    }
    if x.host.is_some() || !x.also.is_empty() {
        return Err(Refusal::new(
            &[Key("executor"), Key("host")],
            "canary deploys run their slots on this machine only in this version; remove executor.host and executor.also, or use strategy = \"replace\"",
        ));
    }
    Ok(())
}

fn check_canary(c: &CanaryConfig, interval: Duration) -> Result<(), Refusal> {
    use Seg::Key;
    let steps_ok = !c.steps.is_empty()
        && c.steps.windows(2).all(|w| w[0] < w[1])
        && c.steps.first().is_some_and(|s| *s >= 1)
        && c.steps.last() == Some(&100);
    if !steps_ok {
        return Err(Refusal::new(
            &[Key("steps")],
            format!(
                "{:?}: give percents of traffic for the new version, increasing, from 1 up to a last step of 100 (e.g. [10, 50, 100])",
                c.steps
            ),
        ));
    }
    if c.step_min < interval {
        return Err(Refusal::new(
            &[Key("step_min")],
            format!(
                "{} is shorter than the watch interval {}: a step would end before the canary was read once; make it at least the interval",
                human(c.step_min),
                human(interval)
            ),
        ));
    }
    at_most(&[Key("step_min")], c.step_min, Limit::Window)?;
    at_most(&[Key("hold")], c.hold, Limit::Window)?;
    if c.ports[0] == 0 || c.ports[1] == 0 || c.ports[0] == c.ports[1] {
        return Err(Refusal::new(
            &[Key("ports")],
            format!(
                "{:?}: give two distinct, non-zero ports, blue's then green's (the balancer's servers point at them)",
                c.ports
            ),
        ));
    }
    if c.port_var.is_empty()
        || !c
            .port_var
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Refusal::new(
            &[Key("port_var")],
            format!(
                "{:?} is not a variable name: use letters, digits and _ (e.g. APP_PORT)",
                c.port_var
            ),
        ));
    }
    let TrafficConfig::Haproxy {
        socket,
        backend,
        servers,
    } = &c.traffic;
    if !socket.is_absolute() {
        return Err(Refusal::new(
            &[Key("traffic"), Key("socket")],
            format!(
                "{} is not an absolute path: give the `stats socket` path of haproxy.cfg",
                socket.display()
            ),
        ));
    }
    if backend.is_empty() || servers.iter().any(|s| s.is_empty()) || servers[0] == servers[1] {
        return Err(Refusal::new(
            &[Key("traffic"), Key("servers")],
            format!(
                "backend {backend:?} with servers {servers:?}: name the backend and its two distinct servers (blue slot first)"
            ),
        ));
    }
    Ok(())
}

/// The watch window. `grace = 0` (failed probes count at once) and `cooldown = 0` (no pause
/// between rollbacks; a rollback of a rollback is still refused) are allowed.
fn check_watch(w: &WatchConfig) -> Result<(), Refusal> {
    use Seg::Key;
    above_zero(
        &[Key("interval")],
        w.interval,
        Limit::Wait,
        "would probe in a busy loop",
        default_interval(),
    )?;
    if w.failures == 0 {
        return Err(Refusal::new(
            &[Key("failures")],
            format!(
                "0 would call every deploy regressed without a single failed probe; use 1 or more (default {})",
                default_failures()
            ),
        ));
    }
    at_most(&[Key("grace")], w.grace, Limit::Window)?;
    above_zero(
        &[Key("bake")],
        w.bake,
        Limit::Window,
        "would make a deploy known-good (a rollback target) before it was watched at all",
        default_bake(),
    )?;
    if w.grace >= w.bake {
        return Err(Refusal::new(
            &[Key("bake")],
            format!(
                "{} is not longer than grace {}: a deploy could become known-good while its failed probes still do not count; make bake longer than grace",
                human(w.bake),
                human(w.grace)
            ),
        ));
    }
    at_most(&[Key("cooldown")], w.cooldown, Limit::Window)
}

/// The metric judge: a source that can answer, a real false-rollback bound, and practical
/// effects that a regression can actually reach.
fn check_metrics(m: &MetricsConfig) -> Result<(), Refusal> {
    use Seg::Key;
    above_zero(
        &[Key("timeout")],
        m.timeout,
        Limit::Wait,
        "would time out every read, so metrics could never show a regression",
        default_probe_timeout(),
    )?;
    number(
        &[Key("alpha")],
        m.alpha,
        m.alpha > 0.0 && m.alpha < 0.5,
        "a false-rollback bound above 0 and below 0.5",
        default_alpha(),
    )?;
    if m.min_requests == 0 {
        return Err(Refusal::new(
            &[Key("min_requests")],
            format!(
                "0 would judge error ratios of a version that served no request; use 1 or more (default {})",
                default_min_requests()
            ),
        ));
    }
    let factor = |x: f64| (1.0..=MAX_FACTOR).contains(&x);
    number(
        &[Key("error_ratio_factor")],
        m.error_ratio_factor,
        factor(m.error_ratio_factor),
        "a factor from 1 to 100",
        default_error_factor(),
    )?;
    number(
        &[Key("error_ratio_increase")],
        m.error_ratio_increase,
        (0.0..1.0).contains(&m.error_ratio_increase),
        "an error-ratio difference from 0 up to (not including) 1",
        default_error_increase(),
    )?;
    number(
        &[Key("latency_factor")],
        m.latency_factor,
        factor(m.latency_factor),
        "a factor from 1 to 100",
        default_latency_factor(),
    )?;
    at_most(&[Key("latency_increase")], m.latency_increase, Limit::Wait)?;
    if let MetricsKind::Scrape {
        urls,
        requests,
        errors,
        ..
    } = &m.source
    {
        if urls.is_empty() {
            return Err(Refusal::new(
                &[Key("source"), Key("urls")],
                "no URL to scrape; list the service's /metrics URLs",
            ));
        }
        for (key, sel) in [("requests", requests), ("errors", errors)] {
            crate::metrics::Selector::parse(sel)
                .map_err(|e| Refusal::new(&[Key("source"), Key(key)], e.to_string()))?;
        }
    }
    check_latency(&m.source)
}

/// The latency source. A scrape reads `<latency_histogram>_sum` and `_count`, so the value must
/// be a histogram's base name (label matchers allowed, never `le`), not one of its series: a
/// wrong name would otherwise fail every read as "missing series" and silence the error-ratio
/// judgement with it. A Prometheus source needs both queries: one alone is quietly ignored.
fn check_latency(source: &MetricsKind) -> Result<(), Refusal> {
    use Seg::Key;
    match source {
        MetricsKind::Scrape {
            latency_histogram: Some(h),
            ..
        } => crate::metrics::Selector::histogram(h).map(drop).map_err(|e| {
            Refusal::new(&[Key("source"), Key("latency_histogram")], e.to_string())
        }),
        MetricsKind::Prometheus {
            latency_sum,
            latency_count,
            ..
        } => match (latency_sum, latency_count) {
            (Some(_), None) => Err(Refusal::new(
                &[Key("source"), Key("latency_sum")],
                "has no latency_count beside it: the mean latency needs both; add latency_count (e.g. 'sum(http_request_duration_seconds_count{job=\"x\"})') or remove latency_sum",
            )),
            (None, Some(_)) => Err(Refusal::new(
                &[Key("source"), Key("latency_count")],
                "has no latency_sum beside it: the mean latency needs both; add latency_sum (e.g. 'sum(http_request_duration_seconds_sum{job=\"x\"})') or remove latency_count",
            )),
            _ => Ok(()),
        },
        MetricsKind::Scrape { .. } => Ok(()),
    }
}

/// The compose executor: directories that mean the same on every host, and ssh settings that
/// bound every connection attempt.
fn check_compose(c: &ComposeExecutorConfig) -> Result<(), Refusal> {
    use Seg::{Index, Key};
    if let Some(dir) = c
        .dir
        .as_ref()
        .filter(|d| c.host.is_some() && d.is_relative())
    {
        return Err(Refusal::new(
            &[Key("dir")],
            format!(
                "{} is relative, but directories on remote hosts must be absolute paths",
                dir.display()
            ),
        ));
    }
    if let Some(p) = c.project.as_deref() {
        if !crate::rollback::is_valid_project_name(p) {
            return Err(Refusal::new(
                &[Key("project")],
                format!("{p:?} is not a compose project name: use lowercase letters, digits, '-' and '_', starting with a letter or digit"),
            ));
        }
    }
    above_zero(
        &[Key("step_timeout")],
        c.step_timeout,
        Limit::Wait,
        "would kill every rollback step before it started",
        default_step_timeout(),
    )?;
    for (j, h) in c.also.iter().enumerate() {
        if h.host.is_some() && h.dir.is_relative() {
            return Err(Refusal::new(
                &[Key("also"), Index(j), Key("dir")],
                format!(
                    "{} is relative, but directories on remote hosts must be absolute paths",
                    h.dir.display()
                ),
            ));
        }
    }
    if c.env_file.contains('/') {
        return Err(Refusal::new(
            &[Key("env_file")],
            format!("{:?} must be a file name inside executor.dir", c.env_file),
        ));
    }
    let ssh = [Key("ssh")];
    if c.ssh.port == 0 {
        return Err(Refusal::new(
            &[Key("port")],
            format!(
                "0 is not a port ssh can connect to; use 1 to 65535 (default {})",
                default_ssh_port()
            ),
        )
        .under(&ssh));
    }
    // ssh's ConnectTimeout counts whole seconds; below one second it would be rounded anyway.
    if c.ssh.connect_timeout < Duration::from_secs(1) {
        return Err(Refusal::new(
            &[Key("connect_timeout")],
            format!(
                "{} is too short: ssh counts ConnectTimeout in whole seconds; use at least 1s (default {})",
                human(c.ssh.connect_timeout),
                human(default_ssh_timeout())
            ),
        )
        .under(&ssh));
    }
    at_most(
        &[Key("connect_timeout")],
        c.ssh.connect_timeout,
        Limit::Wait,
    )
    .map_err(|r| r.under(&ssh))?;
    if c.ssh.retries > MAX_SSH_RETRIES {
        return Err(Refusal::new(
            &[Key("retries")],
            format!(
                "{} retries would hold a rollback for up to {} connection attempts; use 0 to {MAX_SSH_RETRIES} (default {})",
                c.ssh.retries,
                u64::from(c.ssh.retries) + 1,
                default_ssh_retries()
            ),
        )
        .under(&ssh));
    }
    Ok(())
}

/// `targets[0].health.timeout`: the path as a user would find it in the file.
fn field_name(path: &[Seg]) -> String {
    let mut name = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(k);
            }
            Seg::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// Where the value at `path` is written in `text`; when the key is absent (a default), where
/// its nearest enclosing value is, so the message still points into the right table. A second,
/// span-keeping parse rather than `toml::Spanned` on every field: the rest of the program keeps
/// reading plain `Duration`s and numbers, and new keys need no wrapper to be located.
fn value_span(text: &str, path: &[Seg]) -> Option<Range<usize>> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut span = 0..0;
    let mut here: Option<&toml::Spanned<toml::de::DeValue>> = None;
    for seg in path {
        let next = match (here, seg) {
            (None, Seg::Key(k)) => doc.get_ref().get(*k),
            (None, Seg::Index(_)) => None,
            (Some(v), Seg::Key(k)) => v.get_ref().get(*k),
            (Some(v), Seg::Index(i)) => v.get_ref().get(*i),
        };
        match next {
            Some(v) => {
                span = v.span();
                here = Some(v);
            }
            None => break,
        }
    }
    Some(span)
}

/// The TOML path of the innermost key or value written at byte `at` (`targets[0].env`), so
/// toml's own type errors name their field as the refusals do. Searched over the whole tree,
/// not by descending into spans: a `[table]` header's span covers only the header, not its
/// keys. `None` when the text does not even parse (a syntax error has no field).
pub(super) fn field_at(text: &str, at: usize) -> Option<String> {
    use toml::de::DeValue;
    type Node<'a, 'i> = &'a toml::Spanned<DeValue<'i>>;

    fn join(path: &str, key: &str) -> String {
        let bare = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let key = if bare {
            key.to_string()
        } else {
            format!("{key:?}")
        };
        if path.is_empty() {
            key
        } else {
            format!("{path}.{key}")
        }
    }

    /// Keeps the shortest span holding `at`; on a tie the deeper node, visited later.
    fn visit(
        node: Node,
        key_span: Option<Range<usize>>,
        path: String,
        at: usize,
        best: &mut Option<(usize, String)>,
    ) {
        for span in [Some(node.span()), key_span].into_iter().flatten() {
            let holds = span.contains(&at) || (span.is_empty() && span.start == at);
            if holds && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
                *best = Some((span.len(), path.clone()));
            }
        }
        match node.get_ref() {
            DeValue::Table(t) => {
                for (k, child) in t.iter() {
                    visit(child, Some(k.span()), join(&path, k.get_ref()), at, best);
                }
            }
            DeValue::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    visit(child, None, format!("{path}[{i}]"), at, best);
                }
            }
            _ => {}
        }
    }

    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut best = None;
    for (k, child) in doc.get_ref().iter() {
        visit(child, Some(k.span()), join("", k.get_ref()), at, &mut best);
    }
    best.map(|(_, path)| path)
}

#[cfg(test)]
mod latency_tests {
    use super::*;

    const TARGET: &str = r#"
[[targets]]
env = "staging"
role = "backend"
selector = { compose_project = "shop-staging-backend", compose_service = "backend" }
health = { url = "http://127.0.0.1:8080/health" }
executor = { kind = "compose", dir = "/opt/shop/staging/backend", registry = "127.0.0.1:5000/shop" }

[targets.metrics]
"#;

    fn load(source: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{TARGET}source = {source}\n"),
            Path::new("rw.toml"),
            Path::new("/etc/rw"),
        )
        .map_err(|e| e.to_string())
    }

    fn scrape(histogram: &str) -> String {
        format!(
            r#"{{ kind = "scrape", urls = ["http://127.0.0.1:8080/metrics"], requests = "http_requests_total", errors = 'http_requests_total{{code=~"5.."}}', latency_histogram = '{histogram}' }}"#
        )
    }

    #[test]
    fn latency_histogram_must_be_a_base_name() {
        for good in [
            "http_request_duration_seconds",
            r#"http_request_duration_seconds{route="/"}"#,
        ] {
            assert!(load(&scrape(good)).is_ok(), "{good}");
        }
        for (bad, says) in [
            (
                "http_request_duration_seconds_sum",
                "give the histogram's base name (http_request_duration_seconds)",
            ),
            ("http_request_duration_seconds_bucket", "base name"),
            (r#"h{le="0.5"}"#, "only the _bucket series have an le label"),
            ("http request seconds", "not a metric name"),
            ("h{route=", "unbalanced braces"),
        ] {
            let e = load(&scrape(bad)).unwrap_err();
            assert!(
                e.contains("source.latency_histogram")
                    && e.contains(says)
                    && e.contains("rw.toml:10:"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn prometheus_latency_needs_both_queries() {
        let prom = |extra: &str| {
            format!(
                r#"{{ kind = "prometheus", url = "http://127.0.0.1:9090", requests = "sum(r)", errors = "sum(e)"{extra} }}"#
            )
        };
        assert!(load(&prom("")).is_ok());
        assert!(load(&prom(
            r#", latency_sum = "sum(s)", latency_count = "sum(c)""#
        ))
        .is_ok());
        let e = load(&prom(r#", latency_sum = "sum(s)""#)).unwrap_err();
        assert!(
            e.contains("source.latency_sum") && e.contains("latency_count"),
            "{e}"
        );
        let e = load(&prom(r#", latency_count = "sum(c)""#)).unwrap_err();
        assert!(
            e.contains("source.latency_count") && e.contains("latency_sum"),
            "{e}"
        );
    }
}
