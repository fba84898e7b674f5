//! The store behaves the same over SQLite and PostgreSQL: each case runs its one body against a
//! fresh SQLite file and a fresh private PostgreSQL cluster. Then what only PostgreSQL has: two
//! controllers on one database, a server that goes away and comes back, and a URL whose
//! password the config loader refuses.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use rollwatch::config::Config;
use rollwatch::lease::{Fence, Lease, LeaseBackend};
use rollwatch::store::{
    CanaryStart, CanaryState, DeployRecord, EventFilter, RollbackIntent, RollbackOutcome,
    RollbackState, Sample, StepRecord, Store, StoreLocation, Trigger, Weights, WINDOWS_KEPT,
};
use rollwatch::tag::Tag;
use rollwatch::target::{Env, TargetId};
use rollwatch::traffic::Slot;
use rollwatch::verdict::{Control, Halt};

mod harness;
use harness::postgres::PgCluster;

/// One backend under test: where it is, so a case can open it again.
#[derive(Clone)]
struct Backend {
    location: StoreLocation,
}

impl Backend {
    async fn open(&self) -> Store {
        Store::connect(&self.location, None)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.location))
    }
}

/// Runs `body` against a fresh SQLite file, then against a fresh PostgreSQL cluster.
async fn for_each_backend<F, Fut>(body: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    body(Backend {
        location: StoreLocation::Sqlite(dir.path().join("s.db")),
    })
    .await;
    let pg = PgCluster::start();
    body(Backend {
        location: StoreLocation::Postgres(pg.url()),
    })
    .await;
}

fn target() -> TargetId {
    target_of(Env::Staging, "backend")
}

fn target_of(env: Env, role: &str) -> TargetId {
    TargetId {
        env,
        role: role.into(),
    }
}

fn intent(to: &str, fence: &Fence) -> RollbackIntent {
    RollbackIntent {
        target: target(),
        trigger: Trigger::Manual,
        reason: "operator".into(),
        from_tag: Some("v1.1.0".into()),
        from_image: None,
        to_tag: Tag::parse(to).unwrap(),
        dry_run: false,
        fence: fence.clone(),
    }
}

/// Takes the lease as `holder` (for 10 minutes) and returns its fence; epoch 0 on SQLite.
async fn lease(store: &Store, holder: &str) -> Fence {
    let epoch = store
        .acquire(holder, "http://x", Duration::from_secs(600))
        .await
        .expect("acquire")
        .expect("the lease is free");
    Fence {
        holder: holder.into(),
        epoch,
    }
}

/// A rollback intent to v1.0.0 under `fence`, written: its record's id.
async fn begin(store: &Store, fence: &Fence) -> i64 {
    store.begin_rollback(intent("v1.0.0", fence)).await.unwrap()
}

fn outcome(state: RollbackState) -> RollbackOutcome {
    RollbackOutcome {
        state,
        to_digest: None,
        steps: Vec::new(),
        output: String::new(),
        error: None,
    }
}

#[tokio::test]
async fn rollback_intent_then_outcome_round_trips_and_survives_a_reopen() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        let fence = lease(&store, "a").await;
        let id = begin(&store, &fence).await;
        let before = store.rollbacks(Some(target()), 10).await.unwrap();
        assert_eq!(before[0].state, RollbackState::Intent);
        assert_eq!(store.unfinished_rollbacks().await.unwrap().len(), 1);
        store.set_rollback_logs(id, "boom".into()).await.unwrap();
        let step = StepRecord {
            name: "pull".into(),
            started_at_ms: 1,
            duration_ms: 5,
            ok: true,
            detail: String::new(),
        };
        store
            .finish_fenced(
                id,
                RollbackOutcome {
                    state: RollbackState::Succeeded,
                    to_digest: Some("sha256:abc".into()),
                    steps: vec![step.clone()],
                    output: "pulled".into(),
                    error: None,
                },
                fence,
            )
            .await
            .unwrap();
        drop(store);
        // Reopen: what was acknowledged is stored.
        let store = b.open().await;
        let after = store.rollbacks(None, usize::MAX).await.unwrap();
        assert_eq!(after.len(), 1);
        let r = &after[0];
        assert_eq!(r.state, RollbackState::Succeeded);
        assert_eq!(r.steps, vec![step]);
        assert_eq!(r.to_digest.as_deref(), Some("sha256:abc"));
        assert_eq!((r.logs.as_str(), r.dry_run), ("boom", false));
        assert!(r.finished_at_ms.is_some());
        assert_eq!(store.rollback(id).await.unwrap().unwrap().id, id);
        assert!(store.rollback(id + 100).await.unwrap().is_none());
        assert!(store.unfinished_rollbacks().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn last_known_good_skips_the_failing_tag_and_bad_tags() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        assert_eq!(store.last_known_good(target(), None).await.unwrap(), None);
        for tag in ["v1.0.0", "v1.1.0", "v1.2.0"] {
            store
                .record_known_good(target(), Tag::parse(tag).unwrap(), Some(format!("d-{tag}")))
                .await
                .unwrap();
        }
        let newest = store.last_known_good(target(), None).await.unwrap();
        assert_eq!(newest.unwrap().as_str(), "v1.2.0");
        let other = store
            .last_known_good(target(), Some("v1.2.0".into()))
            .await
            .unwrap();
        assert_eq!(other.unwrap().as_str(), "v1.1.0");
        store
            .mark_bad(target(), "v1.1.0".into(), "regressed".into())
            .await
            .unwrap();
        assert!(store.is_bad(target(), "v1.1.0".into()).await.unwrap());
        assert!(!store.is_bad(target(), "v1.0.0".into()).await.unwrap());
        let skipping = store
            .last_known_good(target(), Some("v1.2.0".into()))
            .await
            .unwrap();
        assert_eq!(skipping.unwrap().as_str(), "v1.0.0");
        let tags = store.known_good_tags(target()).await.unwrap();
        assert_eq!(tags.len(), 3);
        assert!(tags
            .iter()
            .any(|(t, d, _)| t == "v1.0.0" && d.as_deref() == Some("d-v1.0.0")));
    })
    .await;
}

#[tokio::test]
async fn events_filter_and_order() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        let other = target_of(Env::Production, "frontend");
        let mut ids = Vec::new();
        for i in 0..5 {
            let t = if i % 2 == 0 { target() } else { other.clone() };
            let tag = (i == 0).then(|| "v1".to_string());
            ids.push(
                store
                    .record_event(t, "deploy", tag, format!("m{i}"))
                    .await
                    .unwrap(),
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let all = store.events(None, None, None, 100).await.unwrap();
        let msgs: Vec<&str> = all.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["m4", "m3", "m2", "m1", "m0"]);
        assert_eq!(all[4].tag.as_deref(), Some("v1"));
        assert_eq!(all[3].target, other);
        let mine = store.events(Some(target()), None, None, 100).await.unwrap();
        let msgs: Vec<&str> = mine.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["m4", "m2", "m0"]);
        let between = store
            .events(None, Some(ids[0]), Some(ids[4]), 100)
            .await
            .unwrap();
        assert_eq!(between.len(), 3);
        let stream = store
            .events_matching(EventFilter {
                after_id: Some(ids[1]),
                oldest_first: true,
                limit: 2,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        let msgs: Vec<&str> = stream.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["m2", "m3"]);
        let future = store
            .events_matching(EventFilter {
                from_ms: Some(i64::MAX - 1),
                limit: usize::MAX,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert!(future.is_empty());
    })
    .await;
}

#[tokio::test]
async fn control_round_trips_with_its_event() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        assert_eq!(store.control(target()).await.unwrap(), Control::default());
        let held = Control {
            paused: true,
            halted: Some(Halt {
                tag: "v2".into(),
                reason: "validation failed".into(),
            }),
            last_rollback_ms: Some(1_700_000_000_000),
            refusals: 3,
            retry_at_ms: None,
        };
        store
            .record_event_with_control(
                target(),
                "paused",
                None,
                "by operator".into(),
                Some(held.clone()),
            )
            .await
            .unwrap();
        assert_eq!(store.control(target()).await.unwrap(), held);
        let released = Control {
            retry_at_ms: Some(5),
            ..Control::default()
        };
        store
            .record_event_with_control(target(), "resumed", None, "".into(), Some(released.clone()))
            .await
            .unwrap();
        assert_eq!(store.control(target()).await.unwrap(), released);
        assert_eq!(store.events(None, None, None, 10).await.unwrap().len(), 2);
    })
    .await;
}

/// The cooldown is written with the record that starts it: a controller killed between the
/// record and its event must not come back without a cooldown.
#[tokio::test]
async fn a_succeeded_rollback_starts_the_cooldown_with_its_record_and_a_failed_one_does_not() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        let fence = lease(&store, "a").await;
        let failed = begin(&store, &fence).await;
        store
            .finish_fenced(failed, outcome(RollbackState::Failed), fence.clone())
            .await
            .unwrap();
        assert_eq!(store.control(target()).await.unwrap(), Control::default());

        let paused = Control {
            paused: true,
            refusals: 2,
            ..Control::default()
        };
        store
            .record_event_with_control(target(), "paused", None, "".into(), Some(paused.clone()))
            .await
            .unwrap();
        let id = begin(&store, &fence).await;
        store
            .finish_fenced(id, outcome(RollbackState::Succeeded), fence)
            .await
            .unwrap();
        let finished = store.rollback(id).await.unwrap().unwrap().finished_at_ms;
        let control = store.control(target()).await.unwrap();
        assert_eq!(control.last_rollback_ms, finished);
        assert!(finished.is_some());
        assert_eq!(
            (control.paused, control.refusals),
            (true, 2),
            "other guard rails kept"
        );
    })
    .await;
}

#[tokio::test]
async fn an_alert_episode_is_claimed_once_until_released() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        assert!(store
            .claim_alert_episode(target(), "e1".into())
            .await
            .unwrap());
        assert!(!store
            .claim_alert_episode(target(), "e1".into())
            .await
            .unwrap());
        assert!(store
            .claim_alert_episode(target(), "e2".into())
            .await
            .unwrap());
        store.release_alert_episode("e1".into()).await.unwrap();
        assert!(store
            .claim_alert_episode(target(), "e1".into())
            .await
            .unwrap());
    })
    .await;
}

#[tokio::test]
async fn baselines_replace_per_target_and_match_their_tag() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        let other = target_of(Env::Staging, "frontend");
        store
            .save_baselines(vec![
                (target(), "v1".into(), "{\"n\":1}".into()),
                (other.clone(), "v7".into(), "{\"n\":3}".into()),
            ])
            .await
            .unwrap();
        store
            .save_baselines(vec![(target(), "v2".into(), "{\"n\":2}".into())])
            .await
            .unwrap();
        assert_eq!(store.baseline(target(), "v1".into()).await.unwrap(), None);
        assert_eq!(
            store
                .baseline(target(), "v2".into())
                .await
                .unwrap()
                .as_deref(),
            Some("{\"n\":2}")
        );
        assert_eq!(
            store.baseline(other, "v7".into()).await.unwrap().as_deref(),
            Some("{\"n\":3}")
        );
    })
    .await;
}

#[tokio::test]
async fn deploys_are_found_by_tag_and_by_commit_newest_first() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        let deploy = |tag: &str, sha: Option<&str>, at_ms| DeployRecord {
            tag: tag.into(),
            commit_sha: sha.map(Into::into),
            pipeline_url: Some(format!("https://ci/{at_ms}")),
            at_ms,
        };
        store
            .register_deploy(target(), deploy("v1", Some("abc123"), 1))
            .await
            .unwrap();
        store
            .register_deploy(target(), deploy("v1", None, 2))
            .await
            .unwrap();
        let d = store
            .deploy_of(target(), "v1".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((d.at_ms, d.commit_sha), (2, None));
        let c = store
            .deploy_by_commit(target(), "abc123".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.pipeline_url.as_deref(), Some("https://ci/1"));
        assert!(store
            .deploy_of(target(), "v9".into())
            .await
            .unwrap()
            .is_none());
    })
    .await;
}

fn sample(role: &str, window_ms: i64, at_ms: i64) -> Sample {
    Sample {
        target: TargetId {
            env: Env::Staging,
            role: role.into(),
        },
        window_ms,
        tag: "v2".into(),
        at_ms,
        latency_ms: Some(3),
        probes: 2,
        failures: 0,
        candidate: Some((10.0, 1.5)),
        baseline: None,
    }
}

#[tokio::test]
async fn a_target_keeps_its_newest_sample_windows_and_others_are_untouched() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        let other = sample("frontend", 1, 1);
        store.save_samples(vec![other.clone()]).await.unwrap();
        for w in 0..WINDOWS_KEPT + 5 {
            let window = 1000 + w * 100;
            let rounds = vec![
                sample("backend", window, window + 1),
                sample("backend", window, window + 2),
            ];
            store.save_samples(rounds).await.unwrap();
        }
        let id = other.target.clone();
        assert_eq!(store.samples(id, 1).await.unwrap(), vec![other]);
        let backend = sample("backend", 0, 0).target;
        let oldest_kept = 1000 + 5 * 100;
        assert!(store
            .samples(backend.clone(), oldest_kept - 100)
            .await
            .unwrap()
            .is_empty());
        let kept = store.samples(backend.clone(), oldest_kept).await.unwrap();
        assert_eq!(
            kept.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            [oldest_kept + 1, oldest_kept + 2]
        );
        let at = oldest_kept + 150;
        assert_eq!(
            store.window_at(backend.clone(), at, None).await.unwrap(),
            Some(oldest_kept + 100)
        );
        assert_eq!(
            store
                .window_at(backend.clone(), at, Some("v9".into()))
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.window_at(backend, 10, None).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn a_canary_weight_change_is_meant_then_applied_and_steps_accumulate() {
    for_each_backend(|b| async move {
        let store = b.open().await;
        let start = CanaryStart {
            target: target(),
            tag: "v1.0.1".into(),
            from_tag: Some("v1.0.0".into()),
            slot: Slot::Green,
            weights: Weights {
                blue: 100,
                green: 0,
            },
            commit_sha: None,
            pipeline_url: None,
        };
        let id = store.begin_canary(start).await.unwrap();
        let r = store.canary(id).await.unwrap().unwrap();
        assert_eq!(
            (r.state, r.applied, r.slot),
            (CanaryState::Starting, true, Slot::Green)
        );
        let w = Weights {
            blue: 90,
            green: 10,
        };
        store.canary_weights_meant(id, w).await.unwrap();
        store.canary_step(id, 10, 5).await.unwrap();
        let r = store.canary(id).await.unwrap().unwrap();
        assert_eq!(
            (r.weights, r.applied, r.state),
            (w, false, CanaryState::Stepping)
        );
        store.canary_weights_applied(id).await.unwrap();
        store.canary_step(id, 50, 9).await.unwrap();
        let r = store.unfinished_canary(target()).await.unwrap().unwrap();
        assert!(r.applied);
        assert_eq!(r.steps, vec![(10, 5), (50, 9)]);
        store
            .canary_state(id, CanaryState::Aborted, "bad".into(), None)
            .await
            .unwrap();
        let r = store.canary(id).await.unwrap().unwrap();
        assert_eq!(r.state, CanaryState::Aborted);
        assert!(r.ended_ms.is_some());
        assert!(store.unfinished_canary(target()).await.unwrap().is_none());
        assert_eq!(store.canaries(None, 10).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn two_stores_on_one_database_claim_an_alert_episode_exactly_once() {
    let pg = PgCluster::start();
    let location = StoreLocation::Postgres(pg.url());
    // Both connect (and migrate) at once: the advisory lock makes them take turns.
    let (a, b) = tokio::join!(
        Store::connect(&location, None),
        Store::connect(&location, None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for round in 0..20 {
        let episode = format!("e{round}");
        let (x, y) = tokio::join!(
            a.claim_alert_episode(target(), episode.clone()),
            b.claim_alert_episode(target(), episode)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(
            x ^ y,
            "round {round}: exactly one claim wins, got {x} and {y}"
        );
    }
}

#[tokio::test]
async fn the_store_works_again_after_postgres_restarts() {
    let mut pg = PgCluster::start();
    let store = Store::connect(&StoreLocation::Postgres(pg.url()), None)
        .await
        .unwrap();
    store
        .record_event(target(), "deploy", None, "before".into())
        .await
        .unwrap();
    pg.stop();
    for _ in 0..3 {
        let e = store
            .record_event(target(), "deploy", None, "while down".into())
            .await
            .expect_err("no server");
        let msg = e.to_string();
        assert!(msg.contains("PostgreSQL"), "{msg}");
    }
    pg.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store
            .record_event(target(), "deploy", None, "after".into())
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store never came back: {e}\n{}", pg.log()),
        }
    }
    let msgs: Vec<String> = store
        .events(None, None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(msgs, ["after", "before"]);
}

#[tokio::test]
async fn a_stopped_server_is_reported_at_connect_with_what_to_check() {
    let mut pg = PgCluster::start();
    let url = pg.url();
    pg.stop();
    let e = Store::connect(&StoreLocation::Postgres(url), None)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("cannot reach PostgreSQL at 127.0.0.1:") && e.contains("controller.store"),
        "{e}"
    );
}

const TARGET: &str = r#"
[[targets]]
env = "staging"
role = "backend"
selector = { compose_project = "shop-staging-backend", compose_service = "backend" }
health = { url = "http://127.0.0.1:8080/health", timeout = "1s" }
executor = { kind = "compose", dir = "/opt/shop/staging/backend", registry = "127.0.0.1:5000/shop" }
"#;

fn load(store: &str) -> Result<Config, String> {
    let text = format!("[controller]\nstore = \"{store}\"\n{TARGET}");
    Config::parse(&text, Path::new("rw.toml"), Path::new("/etc/rw")).map_err(|e| e.to_string())
}

#[test]
fn the_config_takes_a_path_or_a_url_and_refuses_a_password_in_the_url() {
    let c = load("state/rw.db").unwrap();
    assert_eq!(
        c.controller.store,
        StoreLocation::Sqlite("/etc/rw/state/rw.db".into())
    );
    assert_eq!(c.controller.store_password_env, "ROLLWATCH_STORE_PASSWORD");
    let url = "postgresql://rollwatch@db.internal:5433/rollwatch";
    let c = load(url).unwrap();
    assert_eq!(c.controller.store, StoreLocation::Postgres(url.into()));
    assert_eq!(c.controller.store.to_string(), url);
    for with_password in [
        "postgres://rollwatch:hunter2@127.0.0.1:5432/rollwatch",
        "postgres://rollwatch@127.0.0.1:5432/rollwatch?password=hunter2",
    ] {
        let e = load(with_password).expect_err("refused");
        assert!(
            e.contains("controller.store")
                && e.contains("password")
                && e.contains("ROLLWATCH_STORE_PASSWORD"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "the password is not repeated: {e}");
    }
}

#[test]
fn lease_settings_that_would_mislead_or_flap_are_refused_naming_the_key() {
    let pg = "postgres://rollwatch@127.0.0.1:5432/rollwatch";
    let with = |controller: &str| {
        let text = format!("[controller]\nstore = \"{pg}\"\n{controller}\n{TARGET}");
        Config::parse(&text, Path::new("rw.toml"), Path::new("/etc/rw")).map_err(|e| e.to_string())
    };
    for (line, key, says) in [
        ("lease_ttl = \"1s\"", "controller.lease_ttl", "use 2s to 5m"),
        (
            "lease_ttl = \"10m\"",
            "controller.lease_ttl",
            "use 2s to 5m",
        ),
        (
            "instance = \"a b\"",
            "controller.instance",
            "not an instance name",
        ),
        (
            "advertise_url = \"ftp://x:9860\"",
            "controller.advertise_url",
            "http:// or https://",
        ),
        (
            "advertise_url = \"http://u:secret@x:9860\"",
            "controller.advertise_url",
            "without a user or password",
        ),
        (
            "listen = \"0.0.0.0:9860\"",
            "controller.advertise_url",
            "set advertise_url",
        ),
    ] {
        let e = with(line).expect_err(line);
        assert!(e.contains(key) && e.contains(says), "{line}: {e}");
        assert!(!e.contains("secret"), "{e}");
    }
    let ok = with("listen = \"0.0.0.0:9860\"\nadvertise_url = \"https://ctl-a.internal:9860\"\nlease_ttl = \"3s\"\ninstance = \"ctl-a\"");
    let c = ok.expect("accepted");
    assert_eq!(c.controller.instance_name(), "ctl-a");
}

#[tokio::test]
async fn the_lease_changes_hands_only_when_it_lapses_or_is_released_and_each_change_is_an_epoch() {
    let pg = PgCluster::start();
    let store = Store::connect(&StoreLocation::Postgres(pg.url()), None)
        .await
        .unwrap();
    let ttl = Duration::from_secs(600);
    assert_eq!(store.acquire("a", "http://a", ttl).await.unwrap(), Some(1));
    assert_eq!(store.acquire("b", "http://b", ttl).await.unwrap(), None);
    let held = store.holder().await.unwrap().unwrap();
    assert_eq!(
        (held.holder.as_str(), held.address.as_str(), held.epoch),
        ("a", "http://a", 1)
    );
    assert_eq!(
        store.acquire("a", "http://a", ttl).await.unwrap(),
        Some(1),
        "a renewal keeps it"
    );
    store.release("a").await.unwrap();
    assert_eq!(store.holder().await.unwrap(), None);
    assert_eq!(
        store
            .acquire("b", "http://b", Duration::from_secs(1))
            .await
            .unwrap(),
        Some(2)
    );
    // b's lease runs out on the database's clock.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(store.acquire("a", "http://a", ttl).await.unwrap(), Some(3));
    // Even back to the same holder, a lapse is a new epoch.
    store.release("a").await.unwrap();
    assert_eq!(store.acquire("a", "http://a", ttl).await.unwrap(), Some(4));
}

#[tokio::test]
async fn a_stale_epoch_is_refused_at_every_fenced_write_and_the_refusal_is_recorded() {
    let pg = PgCluster::start();
    let store = Store::connect(&StoreLocation::Postgres(pg.url()), None)
        .await
        .unwrap();
    let a = lease(&store, "a").await;
    let id = begin(&store, &a).await;
    store
        .fence_step(id, a.clone(), "pull".into())
        .await
        .unwrap();

    store.release("a").await.unwrap();
    let b = lease(&store, "b").await;
    assert_eq!(b.epoch, 2);
    let e = store
        .fence_step(id, a.clone(), "up".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("epoch 1 of a is stale: b leads under epoch 2"),
        "{e}"
    );
    let fenced = store.events(None, None, None, 10).await.unwrap();
    assert!(
        fenced
            .iter()
            .any(|e| e.kind == "fenced" && e.message.contains("step up of rollback")),
        "{fenced:?}"
    );
    let e = store
        .begin_rollback(intent("v1.0.0", &a))
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("fenced:"), "{e}");
    assert_eq!(
        store.rollbacks(None, 10).await.unwrap().len(),
        1,
        "nothing written"
    );

    // b takes the record over; a can no longer finish it, b can, once.
    store.claim_rollback(id, b.clone()).await.unwrap();
    store.fence_step(id, b.clone(), "up".into()).await.unwrap();
    let e = store
        .finish_fenced(id, outcome(RollbackState::Failed), a.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("fenced:"), "{e}");
    store
        .finish_fenced(id, outcome(RollbackState::Succeeded), b.clone())
        .await
        .unwrap();
    let rec = store.rollback(id).await.unwrap().unwrap();
    assert_eq!(rec.state, RollbackState::Succeeded);
    assert!(
        store.claim_rollback(id, b.clone()).await.is_err(),
        "finished"
    );
    assert!(
        store
            .finish_fenced(id, outcome(RollbackState::Failed), b)
            .await
            .is_err(),
        "an outcome is written once"
    );
}

/// A lease that is held or not, for the write gate.
struct Holding(bool);

impl Lease for Holding {
    fn is_leader(&self) -> bool {
        self.0
    }
    fn fence(&self) -> Option<Fence> {
        self.0.then(Fence::sole)
    }
    fn describe(&self) -> String {
        "test".into()
    }
    fn leader_address(&self) -> Option<String> {
        None
    }
}

#[tokio::test]
async fn a_follower_writes_no_decision_and_the_leader_does() {
    for_each_backend(|b| async move {
        let base = b.open().await;
        let follower = base.clone().gated_by(std::sync::Arc::new(Holding(false)));
        follower
            .record_event(target(), "deploy", Some("v1.1.0".into()), "seen".into())
            .await
            .unwrap();
        follower
            .record_known_good(target(), Tag::parse("v1.1.0").unwrap(), None)
            .await
            .unwrap();
        follower
            .mark_bad(target(), "v1.1.0".into(), "bad".into())
            .await
            .unwrap();
        assert!(base.events(None, None, None, 10).await.unwrap().is_empty());
        assert!(base.known_good_tags(target()).await.unwrap().is_empty());
        assert!(!base.is_bad(target(), "v1.1.0".into()).await.unwrap());
        let leader = base.clone().gated_by(std::sync::Arc::new(Holding(true)));
        leader
            .record_event(target(), "deploy", Some("v1.1.0".into()), "seen".into())
            .await
            .unwrap();
        assert_eq!(base.events(None, None, None, 10).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_frozen_database_process_fails_calls_at_the_deadline_and_at_once_after_until_it_wakes() {
    let pg = PgCluster::start();
    let store = Store::connect(&StoreLocation::Postgres(pg.url()), None)
        .await
        .unwrap()
        .with_call_deadline(Duration::from_secs(2));
    // The server process of this store's connection, frozen: its host still answers TCP.
    let pid: i64 = store
        .with(|db| {
            db.query_opt("SELECT pg_backend_pid()::BIGINT", &[])?
                .unwrap()
                .get(0)
        })
        .await
        .unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let t = Instant::now();
    let e = store
        .events(None, None, None, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not answer within 2 s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let t = Instant::now();
    let e = store
        .events(None, None, None, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("fail at once"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "no second wait: {:?}",
        t.elapsed()
    );
    signal("-CONT");
    let back = Instant::now();
    loop {
        if store.events(None, None, None, 10).await.is_ok() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "answers again once awake"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
