//! The store's schema and its versions. `PRAGMA user_version` holds the version a store file is
//! at; [`migrate`] brings an older file up, one transaction per step, and refuses a file written
//! by a newer rollwatch (it could hold data this one would misread or drop).
//!
//! Version 0 is every store from before versions existed: the tables of [`BASE`], with or
//! without the columns added later. Adding to the schema: append a step to [`STEPS`]; never edit
//! a step that has shipped.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// One schema step: the version it brings a store to, and the SQL (or code) that does it.
struct Step {
    version: i64,
    apply: fn(&rusqlite::Transaction) -> rusqlite::Result<()>,
}

const STEPS: &[Step] = &[
    Step {
        version: 1,
        apply: v1_base_tables,
    },
    Step {
        version: 2,
        apply: v2_samples,
    },
    Step {
        version: 3,
        apply: v3_canaries,
    },
];

/// The version a store is at once opened by this build.
pub const CURRENT: i64 = 3;

/// Version 3: canary deploys, each weight change written as an intent before it is made.
fn v3_canaries(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS canaries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            tag TEXT NOT NULL,
            from_tag TEXT,
            slot TEXT NOT NULL,
            state TEXT NOT NULL,
            blue INTEGER NOT NULL,
            green INTEGER NOT NULL,
            applied INTEGER NOT NULL,
            steps TEXT NOT NULL DEFAULT '[]',
            reason TEXT NOT NULL DEFAULT '',
            started_ms INTEGER NOT NULL,
            ended_ms INTEGER,
            hold_until_ms INTEGER,
            commit_sha TEXT,
            pipeline_url TEXT
        );
        CREATE INDEX IF NOT EXISTS canaries_by_target ON canaries (env, role, id);",
    )
}

/// Version 2: what each round of a watch window saw, for the status page's evidence charts.
fn v2_samples(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS samples (
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            window_ms INTEGER NOT NULL,
            tag TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            latency_ms INTEGER,
            probes INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            cand_requests REAL,
            cand_errors REAL,
            base_requests REAL,
            base_errors REAL
        );
        CREATE INDEX IF NOT EXISTS samples_by_window ON samples (env, role, window_ms, at_ms);",
    )
}

const BASE: &str = "
CREATE TABLE IF NOT EXISTS rollbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    trigger TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_tag TEXT,
    from_image TEXT,
    to_tag TEXT NOT NULL,
    to_digest TEXT,
    state TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    steps TEXT NOT NULL DEFAULT '[]',
    output TEXT NOT NULL DEFAULT '',
    error TEXT
);
CREATE INDEX IF NOT EXISTS rollbacks_by_target ON rollbacks (env, role, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    tag TEXT,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bad_tags (
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    tag TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (env, role, tag)
);
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    tag TEXT NOT NULL,
    commit_sha TEXT,
    pipeline_url TEXT,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_episodes (
    episode TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS baselines (
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    tag TEXT NOT NULL,
    evidence TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (env, role)
);
CREATE TABLE IF NOT EXISTS target_control (
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    paused INTEGER NOT NULL,
    halted_tag TEXT,
    halted_reason TEXT,
    last_rollback_ms INTEGER,
    refusals INTEGER NOT NULL,
    retry_at_ms INTEGER,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (env, role)
);
CREATE TABLE IF NOT EXISTS known_good (
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT,
    promoted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (env, role, tag)
);
";

/// Version 1: every table of the unversioned schema (created if missing) and the two columns
/// added to `rollbacks` before versions existed (added if missing).
fn v1_base_tables(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(BASE)?;
    for (name, column) in [
        ("logs", "logs TEXT NOT NULL DEFAULT ''"),
        ("dry_run", "dry_run INTEGER NOT NULL DEFAULT 0"),
    ] {
        let present: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('rollbacks') WHERE name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if !present {
            tx.execute(&format!("ALTER TABLE rollbacks ADD COLUMN {column}"), [])?;
        }
    }
    Ok(())
}

/// Brings the store at `path` to [`CURRENT`], or refuses it when it is newer.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = StoreError::opening(path);
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    if found > CURRENT {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: CURRENT,
        });
    }
    // A new file has no tables yet: creating them is not worth a log line, upgrading one is.
    let existing: bool = conn
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'rollbacks'",
            [],
            |r| r.get(0),
        )
        .map_err(open_err)?;
    for step in STEPS.iter().filter(|s| s.version > found) {
        let tx = conn.transaction().map_err(open_err)?;
        (step.apply)(&tx).map_err(open_err)?;
        // `user_version` takes no bound parameter; the version is a constant of this file.
        tx.execute_batch(&format!("PRAGMA user_version = {}", step.version))
            .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
        if existing {
            tracing::info!(path = %path.display(), from = found, to = step.version, "store schema migrated");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_in_order_up_to_current() {
        let versions: Vec<i64> = STEPS.iter().map(|s| s.version).collect();
        assert_eq!(versions, (1..=CURRENT).collect::<Vec<_>>());
    }

    #[test]
    fn a_version_1_store_gains_the_later_tables_and_keeps_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        v1_base_tables(&tx).unwrap();
        tx.execute_batch("PRAGMA user_version = 1").unwrap();
        tx.execute(
            "INSERT INTO events (at_ms, env, role, kind, message) VALUES (1, 'staging', 'backend', 'deploy', 'kept')",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
        migrate(&mut conn, &path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
        for table in ["samples", "canaries"] {
            let rows: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, 0, "{table}");
        }
        let kept: String = conn
            .query_row("SELECT message FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, "kept");
    }

    #[test]
    fn a_fresh_store_is_at_the_current_version_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
        migrate(&mut conn, &path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", CURRENT + 1))
            .unwrap();
        let e = migrate(&mut conn, &path).unwrap_err().to_string();
        assert!(e.contains("written by a newer rollwatch"), "{e}");
    }
}
