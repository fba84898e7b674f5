//! A store written by an older rollwatch opens under this one with everything in it intact, and
//! a store written by a newer one is refused.
//!
//! `tests/fixtures/store-unversioned.db` was written by rollwatch at commit 2984500 (before
//! schema versions) with `make_fixture` below, then committed; it must never be regenerated with
//! a newer build, or it stops testing the upgrade.

use rollwatch::store::{RollbackIntent, RollbackOutcome, RollbackState, StepRecord, Store, Trigger};
use rollwatch::tag::Tag;
use rollwatch::target::{Env, TargetId};

const FIXTURE: &str = "tests/fixtures/store-unversioned.db";

fn target() -> TargetId {
    TargetId {
        env: Env::Production,
        role: "backend".into(),
    }
}

fn tag(t: &str) -> Tag {
    Tag::parse(t).expect("tag")
}

#[tokio::test]
#[ignore = "writes the fixture; run only on the commit named in the module doc"]
async fn make_fixture() {
    let _ = std::fs::remove_file(FIXTURE);
    let store = Store::open(std::path::Path::new(FIXTURE)).expect("open");
    store
        .record_known_good(target(), tag("v1.0.0"), Some("sha256:aaaa".into()))
        .await
        .expect("known-good");
    store
        .record_known_good(target(), tag("v1.1.0"), Some("sha256:bbbb".into()))
        .await
        .expect("known-good");
    store
        .record_event(target(), "deploy", Some("v1.2.0".into()), "deploy v1.2.0 seen".into())
        .await
        .expect("event");
    store
        .record_event(target(), "regressed", Some("v1.2.0".into()), "5xx 20%".into())
        .await
        .expect("event");
    let id = store
        .begin_rollback(RollbackIntent {
            target: target(),
            trigger: Trigger::ErrorRatio,
            reason: "errors 20%".into(),
            from_tag: Some("v1.2.0".into()),
            from_image: Some("127.0.0.1:5000/shop/backend:v1.2.0".into()),
            to_tag: tag("v1.1.0"),
            dry_run: false,
        })
        .await
        .expect("intent");
    store
        .finish_rollback(
            id,
            RollbackOutcome {
                state: RollbackState::Succeeded,
                to_digest: Some("sha256:bbbb".into()),
                steps: vec![StepRecord {
                    name: "pull".into(),
                    started_at_ms: 1_700_000_000_000,
                    duration_ms: 600,
                    ok: true,
                    detail: "127.0.0.1:5000/shop/backend:v1.1.0".into(),
                }],
                output: "Pulling backend ... done".into(),
                error: None,
            },
        )
        .await
        .expect("finish");
    // Checkpoint the WAL into the file, so the fixture is one self-contained file.
    drop(store);
}
