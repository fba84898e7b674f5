//! Commands for pipelines and people choosing a tag: `rollwatch tags` (what could we roll back
//! to?) and `rollwatch wait` (the `smoke:<env>` job: did rollwatch promote or roll back?).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{api_base, api_client, fmt_time, Refused};
use crate::config::Config;
use crate::registry::RegistryClient;
use crate::store::Store;
use crate::tag::{display_order, Tag, TagKind};
use crate::target::TargetId;

/// Known-good history with pipelines and commits, then the registry's tags in display order.
pub async fn tags(config: &Config, id: &TargetId) -> anyhow::Result<ExitCode> {
    let target = config
        .target(id)
        .ok_or_else(|| Refused(format!("no target {id} in {}", config.source.display())))?;
    let repository = target.executor.image_repository(&target.role);
    let store =
        Store::connect(&config.controller.store, config.controller.store_password()).await?;
    let fallback = config.fallback_tags.for_env(id.env);
    outln!("{id}: image {repository}, fallback tag {fallback}")?;

    let known = store.known_good_tags(id.clone()).await?;
    outln!("\nknown-good (newest first; a rollback without a tag picks the first that is not running):")?;
    if known.is_empty() {
        outln!("  none yet: a rollback without a tag uses the fallback {fallback}")?;
    }
    for (tag, digest, at) in &known {
        let bad = if store.is_bad(id.clone(), tag.clone()).await? {
            "  [marked bad]"
        } else {
            ""
        };
        let ci = match store.deploy_of(id.clone(), tag.clone()).await? {
            Some(d) => format!(
                "  commit {} pipeline {}",
                d.commit_sha.as_deref().unwrap_or("-"),
                d.pipeline_url.as_deref().unwrap_or("-")
            ),
            None => String::new(),
        };
        outln!(
            "  {tag:<14} promoted {}  {}{ci}{bad}",
            fmt_time(*at),
            digest.as_deref().unwrap_or("digest unknown")
        )?;
    }

    let registry =
        RegistryClient::new(Duration::from_secs(10)).context("building the registry client")?;
    let listed = registry.list_tags(&repository).await?;
    let (valid, odd): (Vec<_>, Vec<_>) = listed
        .iter()
        .map(|t| (t, Tag::parse(t)))
        .partition(|(_, p)| p.is_ok());
    let tags = display_order(valid.into_iter().filter_map(|(_, p)| p.ok()).collect());
    outln!("\nregistry tags ({}):", tags.len())?;
    for t in &tags {
        let note = match t.kind() {
            TagKind::Semver { .. } => String::new(),
            TagKind::BranchSlug if t == fallback => "  (fallback for this env)".into(),
            TagKind::BranchSlug => "  (branch)".into(),
            TagKind::CommitSha => match store.deploy_by_commit(id.clone(), t.to_string()).await? {
                Some(d) => format!(
                    "  (commit; pipeline {})",
                    d.pipeline_url.as_deref().unwrap_or("unknown")
                ),
                None => "  (commit; pipeline unknown)".into(),
            },
        };
        outln!("  {t}{note}")?;
    }
    for (raw, _) in odd {
        outln!("  {raw}  (not a tag rollwatch accepts)")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for rollwatch's verdict on `tag` (or on whatever deploy comes next): exit 0 when it is
/// promoted, 1 when it regressed or was rolled back, 3 on timeout.
pub async fn wait(
    config: &Config,
    id: &TargetId,
    tag: Option<Tag>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let url = format!(
        "{}/api/v1/events?env={}&role={}&limit=200",
        api_base(config),
        id.env,
        id.role
    );
    let client = api_client()?;
    let started = Instant::now();
    let token = std::env::var(&config.controller.api_token_env).ok();
    let wanted = tag.as_ref().map(|t| t.to_string());
    tell!(
        "waiting for rollwatch's verdict on {id}{}",
        wanted
            .as_deref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default()
    );
    let mut last_seen = 0i64;
    loop {
        let mut req = client.get(&url);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let events: Vec<serde_json::Value> = match req.send().await {
            Ok(r) if r.status().is_success() => r.json().await.context("reading events")?,
            Ok(r) => anyhow::bail!("{url} answered {}", r.status()),
            Err(e) => {
                errln!("controller not reachable yet ({e}); retrying");
                Vec::new()
            }
        };
        // Newest first: the latest word on the tag decides.
        for e in &events {
            let (kind, etag) = (e["kind"].as_str().unwrap_or(""), e["tag"].as_str());
            let id_num = e["id"].as_i64().unwrap_or(0);
            let about_it = match &wanted {
                Some(w) => etag == Some(w.as_str()),
                None => id_num > last_seen && last_seen > 0,
            };
            if !about_it {
                continue;
            }
            let msg = e["message"].as_str().unwrap_or("");
            match kind {
                "promoted" => {
                    tell!("promoted: {msg}");
                    return Ok(ExitCode::SUCCESS);
                }
                "regressed"
                | "rollback_failed"
                | "would_roll_back"
                | "withheld"
                | "canary_aborted"
                | "canary_failed"
                | "canary_flipped_back" => {
                    tell!("{kind}: {msg}");
                    return Ok(ExitCode::from(1));
                }
                _ => {}
            }
        }
        if last_seen == 0 {
            last_seen = events
                .first()
                .and_then(|e| e["id"].as_i64())
                .unwrap_or(0)
                .max(1);
        }
        if started.elapsed() >= timeout {
            errln!("no verdict within {}", humantime::format_duration(timeout));
            return Ok(ExitCode::from(3));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
