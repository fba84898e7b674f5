//! Writes the store behind `tests/fixtures/store-unversioned.db`: known-good tags, events and a
//! finished rollback, through the store's own API. Run it only to make a fixture of the schema of
//! the commit it runs at (that fixture was made at 2984500, before schema versions); a fixture
//! written by a newer build no longer tests the upgrade from an older one.

use rollwatch::store::{
    RollbackIntent, RollbackOutcome, RollbackState, StepRecord, Store, Trigger,
};
use rollwatch::tag::Tag;
use rollwatch::target::{Env, TargetId};

fn target() -> TargetId {
    TargetId {
        env: Env::Production,
        role: "backend".into(),
    }
}

fn tag(t: &str) -> Tag {
    Tag::parse(t).expect("tag")
}

#[tokio::main]
async fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: cargo run --example store_fixture -- <new-store.db>");
        std::process::exit(2);
    };
    let store = Store::open(std::path::Path::new(&path)).expect("open");
    store
        .record_known_good(target(), tag("v1.0.0"), Some("sha256:aaaa".into()))
        .await
        .expect("known-good");
    store
        .record_known_good(target(), tag("v1.1.0"), Some("sha256:bbbb".into()))
        .await
        .expect("known-good");
    store
        .record_event(
            target(),
            "deploy",
            Some("v1.2.0".into()),
            "deploy v1.2.0 seen".into(),
        )
        .await
        .expect("event");
    store
        .record_event(
            target(),
            "regressed",
            Some("v1.2.0".into()),
            "5xx 20%".into(),
        )
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
            fence: rollwatch::lease::Fence::sole(),
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
