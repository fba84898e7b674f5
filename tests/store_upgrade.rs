//! A store written by an older rollwatch opens under this one with everything in it intact, and
//! a store written by a newer one is refused.
//!
//! `tests/fixtures/store-unversioned.db` was written by rollwatch at commit 2984500 (before
//! schema versions) with the code now in `examples/store_fixture.rs`, then committed; it must
//! never be regenerated with a newer build, or it stops testing the upgrade.

use rollwatch::store::{RollbackState, Store, Trigger};
use rollwatch::target::{Env, TargetId};

const FIXTURE: &str = "tests/fixtures/store-unversioned.db";

fn target() -> TargetId {
    TargetId {
        env: Env::Production,
        role: "backend".into(),
    }
}

/// The fixture, copied where this test may change it.
fn copy_of_fixture(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("store.db");
    std::fs::copy(FIXTURE, &path).expect("copy the fixture");
    path
}

fn user_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("read user_version")
}

#[tokio::test]
async fn an_unversioned_store_migrates_with_everything_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = copy_of_fixture(dir.path());
    assert_eq!(
        user_version(&path),
        0,
        "the fixture predates schema versions"
    );
    let store = Store::open(&path).expect("an old store opens");
    let known: Vec<String> = store
        .known_good_tags(target())
        .await
        .expect("known-good")
        .into_iter()
        .map(|(t, d, _)| format!("{t} {}", d.unwrap_or_default()))
        .collect();
    assert_eq!(known, ["v1.1.0 sha256:bbbb", "v1.0.0 sha256:aaaa"]);
    let events = store
        .events(Some(target()), None, None, 10)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(
        kinds.contains(&"deploy") && kinds.contains(&"regressed"),
        "{kinds:?}"
    );
    let rollbacks = store
        .rollbacks(Some(target()), 10)
        .await
        .expect("rollbacks");
    assert_eq!(rollbacks.len(), 1);
    let r = &rollbacks[0];
    assert_eq!(
        (r.state, r.to_tag.as_str(), r.from_tag.as_deref(), r.trigger),
        (
            RollbackState::Succeeded,
            "v1.1.0",
            Some("v1.2.0"),
            Trigger::ErrorRatio
        )
    );
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.to_digest.as_deref(), Some("sha256:bbbb"));
    drop(store);
    assert!(user_version(&path) >= 1, "migrated to a versioned schema");
    // Opening again is a no-op.
    Store::open(&path).expect("opens again");
}

#[tokio::test]
async fn a_store_from_a_newer_rollwatch_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = copy_of_fixture(dir.path());
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch("PRAGMA user_version = 999"))
        .expect("pretend a newer rollwatch wrote it");
    let err = Store::open(&path).err().expect("refused").to_string();
    assert!(
        err.contains("schema version 999, written by a newer rollwatch")
            && err.contains("upgrade rollwatch"),
        "{err}"
    );
    assert_eq!(user_version(&path), 999);
    let rows: i64 = rusqlite::Connection::open(&path)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM rollbacks", [], |r| r.get(0)))
        .expect("count");
    assert_eq!(rows, 1, "nothing dropped");
}
