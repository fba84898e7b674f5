//! Taking traffic back on a canary target, and finishing after a crash. A regression during
//! the hold flips all traffic to the held slot in one weight change (recorded as a rollback,
//! so incidents, metrics and the verdict core see it like any other); at start, a deploy a
//! crash interrupted is aborted, a hold is resumed or ended, a flip half-done is finished.

use std::time::{Duration, Instant};

use super::handle::Phase;
use super::record::Recorded;
use super::runner::CanaryRunner;
use crate::rollback::{RollbackError, RollbackRequest};
use crate::store::{
    now_ms, CanaryRecord, CanaryState, RollbackIntent, RollbackOutcome, RollbackRecord,
    RollbackState, StepRecord, StoreError,
};
use crate::tag::Tag;
use crate::traffic::{Slot, TrafficDriver};

/// How long the held slot's `/health` may take to answer after the flip.
const VALIDATE_WITHIN: Duration = Duration::from_secs(10);

fn step(name: &str, started: (Instant, i64), ok: bool, detail: String) -> StepRecord {
    StepRecord {
        name: name.into(),
        started_at_ms: started.1,
        duration_ms: i64::try_from(started.0.elapsed().as_millis()).unwrap_or(i64::MAX),
        ok,
        detail,
    }
}

fn begun() -> (Instant, i64) {
    (Instant::now(), now_ms())
}

pub(super) async fn flip_back(
    r: &mut CanaryRunner,
    request: RollbackRequest,
) -> Result<RollbackRecord, RollbackError> {
    let (target, driver, _, journal) = r.parts();
    let id = target.id();
    let store = journal.store.clone();
    let held = store
        .unfinished_canary(id.clone())
        .await?
        .filter(|c| c.state == CanaryState::Holding);
    let Some(held) = held else {
        // Nothing held: the known-good version starts in the idle slot and takes everything.
        return switch_back(r, request).await;
    };
    let (old, new) = (held.slot.other(), held.slot);
    if let Some(asked) = request
        .tag
        .as_ref()
        .filter(|t| held.from_tag.as_deref() != Some(t.as_str()))
    {
        return Err(RollbackError::Canary {
            target: id.clone(),
            why: format!(
                "during the hold a rollback goes back to the held {} by weight, not to {asked}; roll back without a tag, or deploy {asked} with `rollwatch deploy {} {} {asked}`",
                held.from_tag.as_deref().unwrap_or("version"),
                id.env,
                id.role
            ),
        });
    }
    let to_tag = held
        .from_tag
        .as_deref()
        .and_then(|t| Tag::parse(t).ok())
        .ok_or_else(|| RollbackError::Canary {
            target: id.clone(),
            why: format!(
                "canary #{} has no valid tag on record for the held slot",
                held.id
            ),
        })?;
    let rid = store
        .begin_rollback(RollbackIntent {
            target: id.clone(),
            trigger: request.trigger,
            reason: request.reason.clone(),
            from_tag: Some(held.tag.clone()),
            from_image: None,
            to_tag: to_tag.clone(),
            dry_run: request.dry_run,
            fence: crate::lease::Fence::sole(),
        })
        .await?;
    let mut steps = Vec::new();
    if request.dry_run {
        return finish(&store, rid, RollbackState::DryRun, steps, None).await;
    }
    let t = begun();
    let recorded = Recorded::new(driver, journal.clone(), held.id, held.weights);
    if let Err(e) = recorded.set_weights(&[(old, 100), (new, 0)]).await {
        let why = e.to_string();
        steps.push(step("flip weights", t, false, why.clone()));
        finish(&store, rid, RollbackState::Failed, steps, Some(why.clone())).await?;
        return Err(RollbackError::CanaryFailed {
            id: rid,
            target: id,
            why,
        });
    }
    let detail = format!("{} 100, {} 0", old.name(), new.name());
    steps.push(step("flip weights", t, true, detail));
    r.enter(Phase::Idle);
    // All traffic is on the old version now: say so before the slower clean-up.
    let journal = r.parts().3.clone();
    let reason = format!("flipped back to {to_tag}: {}", request.reason);
    store
        .canary_state(held.id, CanaryState::FlippedBack, reason.clone(), None)
        .await?;
    journal.series.canary_flipped_back();
    journal
        .event("canary_flipped_back", &held.tag, reason)
        .await;
    let site = r.slot_site().await;
    let t = begun();
    let health = match &site {
        Ok(site) => validate(r, site.port_of(old)).await,
        Err(e) => Err(e.clone()),
    };
    steps.push(step(
        "validate held slot",
        t,
        health.is_ok(),
        health.clone().err().unwrap_or_else(|| "/health ok".into()),
    ));
    // A hung version takes its stop timeout to go; it no longer gets any traffic meanwhile.
    let t = begun();
    let removed = match &site {
        Ok(site) => site
            .remove(r.parts().2, new)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    steps.push(step(
        "remove new slot",
        t,
        removed.is_ok(),
        removed.clone().err().unwrap_or_default(),
    ));
    match health {
        Ok(()) => finish(&store, rid, RollbackState::Succeeded, steps, None).await,
        Err(why) => {
            finish(&store, rid, RollbackState::Failed, steps, Some(why.clone())).await?;
            Err(RollbackError::CanaryFailed {
                id: rid,
                target: id,
                why: format!(
                    "all traffic is on {to_tag} again, but its /health did not answer ok: {why}"
                ),
            })
        }
    }
}

/// A rollback with no held slot: the known-good tag (or the one asked for) is started in the
/// idle slot, and once its /health and the balancer's check pass, takes all traffic in one
/// weight change; the bad slot is removed. Recorded as a rollback and as a canary deploy of
/// the good tag (its weight changes are intents like any other; a crash mid-way is aborted at
/// the next start, and the watcher judges again).
async fn switch_back(
    r: &mut CanaryRunner,
    request: RollbackRequest,
) -> Result<RollbackRecord, RollbackError> {
    let (target, driver, _, journal) = r.parts();
    let id = target.id();
    let store = journal.store.clone();
    let refused = |why: String| RollbackError::Canary {
        target: id.clone(),
        why,
    };
    let to_tag = match request.tag.clone() {
        Some(t) => t,
        None => store
            .last_known_good(id.clone(), request.failing_tag.clone())
            .await?
            .ok_or_else(|| refused("no known-good tag is on record to roll back to; roll back with `rollwatch deploy <env> <role> <tag>`".into()))?,
    };
    let [blue, green] = driver.read().await.map_err(|e| refused(e.to_string()))?;
    let live = if green.weight > blue.weight {
        Slot::Green
    } else {
        Slot::Blue
    };
    if let Ok(site) = r.slot_site().await {
        // A canary aborted meanwhile already put the traffic back on it.
        if r.tag_in(&site, live).await.as_deref() == Some(to_tag.as_str()) {
            return Err(refused(format!(
                "{to_tag} already takes all the traffic (slot {})",
                live.name()
            )));
        }
    }
    let weights = crate::store::Weights {
        blue: blue.weight,
        green: green.weight,
    };
    let rid = store
        .begin_rollback(RollbackIntent {
            target: id.clone(),
            trigger: request.trigger,
            reason: request.reason.clone(),
            from_tag: request.failing_tag.clone(),
            from_image: None,
            to_tag: to_tag.clone(),
            dry_run: request.dry_run,
            fence: crate::lease::Fence::sole(),
        })
        .await?;
    if request.dry_run {
        return finish(&store, rid, RollbackState::DryRun, Vec::new(), None).await;
    }
    let cid = store
        .begin_canary(crate::store::CanaryStart {
            target: id.clone(),
            tag: to_tag.to_string(),
            from_tag: request.failing_tag.clone(),
            slot: live.other(),
            weights,
            commit_sha: None,
            pipeline_url: None,
        })
        .await?;
    let (steps, outcome) = switch_steps(r, cid, live, weights, to_tag.as_str()).await;
    let (state, error, canary_state) = match &outcome {
        Ok(()) => (RollbackState::Succeeded, None, CanaryState::Promoted),
        Err(why) => (
            RollbackState::Failed,
            Some(why.clone()),
            CanaryState::Aborted,
        ),
    };
    let reason = match &outcome {
        Ok(()) => format!(
            "rollback to {to_tag}, all traffic at once: {}",
            request.reason
        ),
        Err(why) => format!("rollback to {to_tag} failed, traffic left on the live slot: {why}"),
    };
    store.canary_state(cid, canary_state, reason, None).await?;
    let record = finish(&store, rid, state, steps, error).await?;
    match outcome {
        Ok(()) => Ok(record),
        Err(why) => Err(RollbackError::CanaryFailed {
            id: rid,
            target: id,
            why,
        }),
    }
}

/// Start, wait, switch, remove: the steps of [`switch_back`], each recorded.
async fn switch_steps(
    r: &CanaryRunner,
    cid: i64,
    live: Slot,
    weights: crate::store::Weights,
    tag: &str,
) -> (Vec<StepRecord>, Result<(), String>) {
    let mut steps = Vec::new();
    let idle = live.other();
    let site = match r.slot_site().await {
        Ok(s) => s,
        Err(e) => return (steps, Err(e)),
    };
    let (_, driver, runner, journal) = r.parts();
    let t = begun();
    let started = site
        .start(runner, idle, tag)
        .await
        .map_err(|e| e.to_string());
    steps.push(step(
        "start slot",
        t,
        started.is_ok(),
        started.clone().err().unwrap_or_default(),
    ));
    let t = begun();
    let up = match started {
        Ok(()) => r.deployer_for(&site).until_up(idle).await,
        Err(e) => Err(e),
    };
    steps.push(step(
        "wait healthy",
        t,
        up.is_ok(),
        up.clone().err().unwrap_or_default(),
    ));
    if let Err(e) = up {
        let _ = site.remove(runner, idle).await;
        return (steps, Err(e));
    }
    let t = begun();
    let recorded = Recorded::new(driver, journal.clone(), cid, weights);
    let switched = recorded
        .set_weights(&[(idle, 100), (live, 0)])
        .await
        .map_err(|e| e.to_string());
    let detail = format!("{} 100, {} 0", idle.name(), live.name());
    steps.push(step(
        "switch weights",
        t,
        switched.is_ok(),
        switched.clone().err().unwrap_or(detail),
    ));
    if let Err(e) = switched {
        return (steps, Err(e));
    }
    let t = begun();
    let removed = site.remove(runner, live).await.map_err(|e| e.to_string());
    steps.push(step(
        "remove bad slot",
        t,
        removed.is_ok(),
        removed.err().unwrap_or_default(),
    ));
    (steps, Ok(()))
}

async fn validate(r: &CanaryRunner, port: u16) -> Result<(), String> {
    let path = super::site::health_path(r.parts().0);
    let url =
        url::Url::parse(&format!("http://127.0.0.1:{port}{path}")).map_err(|e| e.to_string())?;
    r.prober()
        .wait_healthy(
            &url,
            Duration::from_secs(2),
            Duration::from_millis(100),
            VALIDATE_WITHIN,
        )
        .await
        .map(|_| ())
        .map_err(|f| f.to_string())
}

async fn finish(
    store: &crate::store::Store,
    rid: i64,
    state: RollbackState,
    steps: Vec<StepRecord>,
    error: Option<String>,
) -> Result<RollbackRecord, RollbackError> {
    store
        .finish_rollback(
            rid,
            RollbackOutcome {
                state,
                to_digest: None,
                steps,
                output: String::new(),
                error,
            },
        )
        .await?;
    store.rollback(rid).await?.ok_or_else(|| {
        RollbackError::Store(StoreError::Corrupt(format!("rollback #{rid} vanished")))
    })
}

/// Finishes the target's unfinished canary deploy, if a crash left one.
pub(super) async fn recover(r: &mut CanaryRunner) -> Result<(), StoreError> {
    let (target, driver, _, journal) = r.parts();
    let id = target.id();
    let store = journal.store.clone();
    let Some(rec) = store.unfinished_canary(id.clone()).await? else {
        return finish_after_crash(r).await;
    };
    let recorded = Recorded::new(driver, journal.clone(), rec.id, rec.weights);
    if !rec.applied {
        // The balancer may not have the change last meant: make it so first.
        let w = rec.weights;
        if let Err(e) = recorded
            .set_weights(&[(Slot::Blue, w.blue), (Slot::Green, w.green)])
            .await
        {
            tracing::error!(target_id = %id, error = %e, "cannot re-apply the weights on record after a restart");
            return Ok(());
        }
    }
    // A rollback after the hold (a switch back) is a canary row of the good tag beside the
    // rollback's intent: finished forward when its switch was made, else undone.
    let switching = store
        .unfinished_rollbacks()
        .await?
        .iter()
        .any(|i| i.target == id && i.to_tag == rec.tag);
    match rec.state {
        CanaryState::Starting | CanaryState::Stepping
            if switching && rec.weights.of(rec.slot) == 100 =>
        {
            remove_slot(r, rec.slot.other()).await;
            let why = "rollback switch finished after a restart".to_string();
            store
                .canary_state(rec.id, CanaryState::Promoted, why, None)
                .await?;
            finish_flip_intents(r, Ok(())).await
        }
        CanaryState::Starting | CanaryState::Stepping => {
            let why = "rollwatch stopped during this deploy and aborted it when it started again";
            abort_unfinished(r, &rec, why).await?;
            let undone = "rollwatch stopped before this rollback moved any traffic; the watcher judges again";
            finish_flip_intents(r, Err(undone)).await
        }
        CanaryState::Holding if rec.weights.of(rec.slot) == 0 => {
            // A flip back was under way: it is finished.
            remove_slot(r, rec.slot).await;
            store
                .canary_state(
                    rec.id,
                    CanaryState::FlippedBack,
                    format!("{}; flip back finished after a restart", rec.reason),
                    None,
                )
                .await?;
            finish_flip_intents(r, Ok(())).await
        }
        CanaryState::Holding => {
            let until_ms = rec.hold_until_ms.unwrap_or(0);
            r.enter(Phase::Holding {
                id: rec.id,
                tag: rec.tag.clone(),
                until_ms,
            });
            let undone = "rollwatch stopped before the flip back changed any weight; the watcher judges again";
            finish_flip_intents(r, Err(undone)).await
        }
        _ => Ok(()),
    }
}

/// No deploy unfinished: a flip or switch back may still have finished its canary row and
/// not its rollback record, or left the slot it was removing.
async fn finish_after_crash(r: &CanaryRunner) -> Result<(), StoreError> {
    let store = &r.parts().3.store;
    let id = r.parts().0.id();
    if !store
        .unfinished_rollbacks()
        .await?
        .iter()
        .any(|i| i.target == id)
    {
        return Ok(());
    }
    let newest = store.canaries(Some(r.parts().0.id()), 1).await?;
    match newest.first().map(|c| (c.state, c.slot)) {
        Some((CanaryState::FlippedBack, slot)) => {
            remove_slot(r, slot).await;
            finish_flip_intents(r, Ok(())).await
        }
        Some((CanaryState::Promoted, slot)) => {
            // The other slot is the one a switch back was removing (or the hold stopped).
            remove_slot(r, slot.other()).await;
            finish_flip_intents(r, Ok(())).await
        }
        _ => {
            let undone = "rollwatch stopped before this rollback moved any traffic; the watcher judges again";
            finish_flip_intents(r, Err(undone)).await
        }
    }
}

/// A deploy stopped mid-way (`why`, completed by where it stood): all traffic back to the
/// slot it came from, the canary removed, the record aborted. Returns the reason written, or
/// `None` when the balancer could not be told (the record stays unfinished, for the next
/// start to try again).
pub(super) async fn abort_unfinished(
    r: &CanaryRunner,
    rec: &CanaryRecord,
    why: &str,
) -> Result<Option<String>, StoreError> {
    let (_, driver, _, journal) = r.parts();
    let journal = journal.clone();
    let live = rec.slot.other();
    let recorded = Recorded::new(driver, journal.clone(), rec.id, rec.weights);
    if let Err(e) = recorded.set_weights(&[(live, 100), (rec.slot, 0)]).await {
        tracing::error!(target_id = %journal.target, error = %e, "cannot move traffic back to the live slot; the next start of rollwatch tries again");
        return Ok(None);
    }
    remove_slot(r, rec.slot).await;
    let at = rec.steps.last().map_or(0, |s| s.0);
    let reason = format!(
        "{why} (the canary had {at}% of the traffic); aborted: all traffic back on {}, the canary's containers removed",
        rec.from_tag.as_deref().unwrap_or("the live slot")
    );
    journal
        .store
        .canary_state(rec.id, CanaryState::Aborted, reason.clone(), None)
        .await?;
    journal.series.canary_ended(false);
    journal
        .event("canary_aborted", &rec.tag, reason.clone())
        .await;
    Ok(Some(reason))
}

async fn remove_slot(r: &CanaryRunner, slot: Slot) {
    let removed = match r.slot_site().await {
        Ok(site) => site
            .remove(r.parts().2, slot)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = removed {
        tracing::error!(slot = slot.name(), error = %e, "cannot remove the slot's containers; remove them by hand");
    }
}

/// The rollbacks (flips and switches back) a crash left as intents: finished as succeeded
/// when the traffic was moved, else failed saying why.
async fn finish_flip_intents(r: &CanaryRunner, done: Result<(), &str>) -> Result<(), StoreError> {
    let journal = r.parts().3;
    let store = &journal.store;
    for rec in store.unfinished_rollbacks().await? {
        if rec.target != journal.target {
            continue;
        }
        let (state, error) = match done {
            Ok(()) => (RollbackState::Succeeded, None),
            Err(why) => (RollbackState::Failed, Some(why.to_string())),
        };
        let outcome = RollbackOutcome {
            state,
            to_digest: None,
            steps: rec.steps.clone(),
            output: String::new(),
            error,
        };
        store.finish_rollback(rec.id, outcome).await?;
    }
    Ok(())
}
