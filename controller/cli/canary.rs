//! `rollwatch deploy` (what a canary target's CI job calls instead of `up -d`) and
//! `rollwatch promote|abort` (a person steering a canary). All go through the running
//! controller: it owns the target's slots and weights, one deploy at a time.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use super::{api_base, controller, fmt_time, Refused};
use crate::config::{Config, Strategy};
use crate::tag::Tag;
use crate::target::TargetId;

/// How often the deploy's progress is read while it runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub struct DeployArgs {
    pub tag: Tag,
    pub commit_sha: Option<String>,
    pub pipeline_url: Option<String>,
    pub timeout: Duration,
}

/// The API token, or a refusal naming the variable.
fn token(config: &Config) -> Result<String, Refused> {
    std::env::var(&config.controller.api_token_env).map_err(|_| {
        Refused(format!(
            "set {} to the controller's API token",
            config.controller.api_token_env
        ))
    })
}

fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .context("building the API client")
}

/// A canary target of this config, or a refusal saying what to use instead.
fn canary_target<'a>(
    config: &'a Config,
    id: &TargetId,
) -> Result<&'a crate::config::TargetConfig, Refused> {
    let t = config
        .target(id)
        .ok_or_else(|| Refused(format!("no target {id} in {}", config.source.display())))?;
    if t.strategy != Strategy::Canary {
        return Err(Refused(format!(
            "{id} uses strategy \"replace\": deploy it with `docker compose up -d` as before (rollwatch sees the new version and watches it); `rollwatch deploy` is for strategy = \"canary\""
        )));
    }
    Ok(t)
}

/// Exit 0 promoted, 1 aborted or failed, 2 refused (nothing changed), 3 still running when
/// `--timeout` ran out (the controller carries on).
pub async fn deploy(config: &Config, id: &TargetId, args: DeployArgs) -> anyhow::Result<ExitCode> {
    canary_target(config, id)?;
    let token = token(config)?;
    let base = api_base(config);
    let body = json!({
        "env": id.env.as_str(), "role": id.role, "tag": args.tag.to_string(),
        "strategy": "canary", "commit_sha": args.commit_sha, "pipeline_url": args.pipeline_url,
    });
    tell!(
        "deploying {} to {id} as a canary through the controller at {base}",
        args.tag
    );
    let http = client(args.timeout + Duration::from_secs(30))?;
    let url = format!("{base}/api/v1/deploys");
    let started = Instant::now();
    // Only this deploy's record is shown, not an earlier one of the same tag.
    let earlier = newest(&http, &base, id, &token)
        .await
        .and_then(|r| r["id"].as_i64());
    let mut shown = Progress {
        after: earlier,
        ..Progress::default()
    };
    let post = {
        let (http, token) = (http.clone(), token.clone());
        tokio::spawn(async move {
            controller::send_retrying_busy(|| http.post(&url).bearer_auth(&token).json(&body)).await
        })
    };
    let mut post = post;
    let answer = loop {
        tokio::select! {
            r = &mut post => break r.context("the deploy request")?,
            _ = tokio::time::sleep(PROGRESS_EVERY) => {
                if let Some(r) = newest(&http, &base, id, &token).await {
                    shown.show(&r, &args.tag);
                }
                if started.elapsed() >= args.timeout {
                    errln!("the deploy still runs after {}; follow it with `rollwatch history {} {}`", humantime::format_duration(args.timeout), id.env, id.role);
                    return Ok(ExitCode::from(3));
                }
            }
        }
    };
    let resp = match answer {
        Ok(r) => r,
        // Nothing listens: nothing was asked, so nothing changed.
        Err(e) if e.is_connect() => {
            return Err(Refused(format!(
                "controller not reachable at {base} ({e}); is `rollwatch run` running? Nothing was changed"
            ))
            .into())
        }
        Err(e) => return Err(e).context(format!("calling the controller at {base}")),
    };
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or_default();
    match status.as_u16() {
        200 => {
            shown.show(&v, &args.tag);
            Ok(finished(&v))
        }
        202 => {
            // Still running at the API's wait: follow the record.
            let n = v["id"].as_i64().unwrap_or(0);
            loop {
                if let Some(r) = newest(&http, &base, id, &token).await {
                    shown.show(&r, &args.tag);
                    if r["id"].as_i64() == Some(n) && !is_running(&r) {
                        return Ok(finished(&r));
                    }
                }
                if started.elapsed() >= args.timeout {
                    errln!(
                        "the deploy still runs after {}",
                        humantime::format_duration(args.timeout)
                    );
                    return Ok(ExitCode::from(3));
                }
                tokio::time::sleep(PROGRESS_EVERY).await;
            }
        }
        400 | 401 | 404 | 409 => Err(Refused(format!(
            "{}: {}",
            status,
            v["error"].as_str().unwrap_or("refused")
        ))
        .into()),
        _ => anyhow::bail!(
            "the controller answered {status}: {}",
            v["error"].as_str().unwrap_or("")
        ),
    }
}

fn is_running(r: &Value) -> bool {
    matches!(r["state"].as_str(), Some("starting" | "stepping"))
}

/// Prints how the deploy ended; its exit code.
fn finished(r: &Value) -> ExitCode {
    let state = r["state"].as_str().unwrap_or("?");
    tell!(
        "canary #{} of {} {state}: {}",
        r["id"],
        r["tag"].as_str().unwrap_or("?"),
        r["reason"].as_str().unwrap_or("")
    );
    match state {
        "holding" | "promoted" => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

async fn newest(http: &reqwest::Client, base: &str, id: &TargetId, token: &str) -> Option<Value> {
    let url = format!(
        "{base}/api/v1/canaries?env={}&role={}&limit=1",
        id.env, id.role
    );
    let list: Vec<Value> = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    list.into_iter().next()
}

/// The steps already printed, so each shows once.
#[derive(Default)]
struct Progress {
    /// The newest record before this deploy was asked for.
    after: Option<i64>,
    id: Option<i64>,
    steps: usize,
}

impl Progress {
    fn show(&mut self, r: &Value, tag: &Tag) {
        let id = r["id"].as_i64();
        if r["tag"].as_str() != Some(tag.as_str()) || id <= self.after {
            return;
        }
        if self.id != id {
            self.id = id;
            self.steps = 0;
            tell!(
                "  canary #{} started: {} beside {} in slot {}",
                id.unwrap_or(0),
                tag,
                r["from_tag"].as_str().unwrap_or("?"),
                r["slot"].as_str().unwrap_or("?")
            );
        }
        let steps = r["steps"].as_array().cloned().unwrap_or_default();
        for s in steps.iter().skip(self.steps) {
            tell!(
                "  {} {}% of the traffic on {tag}",
                fmt_time(s[1].as_i64().unwrap_or(0)),
                s[0]
            );
        }
        self.steps = steps.len();
    }
}

/// `rollwatch promote|abort`.
pub async fn steer(config: &Config, id: &TargetId, action: &str) -> anyhow::Result<ExitCode> {
    canary_target(config, id)?;
    let token = token(config)?;
    let base = api_base(config);
    let url = format!("{base}/api/v1/targets/{}/{}/{action}", id.env, id.role);
    let http = client(Duration::from_secs(11 * 60))?;
    let resp = controller::send_retrying_busy(|| http.post(&url).bearer_auth(&token))
        .await
        .with_context(|| {
            format!("controller not reachable at {base}; is `rollwatch run` running?")
        })?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        tell!("{id}: {}", v["status"].as_str().unwrap_or(action));
        return Ok(ExitCode::SUCCESS);
    }
    let why = v["error"].as_str().unwrap_or("refused");
    if status == reqwest::StatusCode::CONFLICT {
        return Err(Refused(format!("{action} {id}: {why}")).into());
    }
    anyhow::bail!("{action} {id}: {status}: {why}")
}
