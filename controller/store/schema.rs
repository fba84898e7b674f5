//! The store's schema and its versions. `PRAGMA user_version` holds the version a store file is
//! at; [`migrate`] brings an older file up, one transaction per step, and refuses a file written
//! by a newer rollwatch (it could hold data this one would misread or drop).
//!
//! A PostgreSQL store has its own DDL of the same tables ([`PG_STEPS`]), its version in the
//! `schema_version` table, and migrates under a transaction-scoped advisory lock, so two
//! instances starting at once do not both create the tables.
//!
//! Version 0 is every store from before versions existed: the tables of [`BASE`], with or
//! without the columns added later. Adding to the schema: append a step to [`STEPS`]; never edit
//! a step that has shipped.

use std::path::Path;

use rusqlite::Connection;

use super::{pg_detail, StoreError};

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
    Step {
        version: 4,
        apply: v4_rollback_epoch,
    },
];

/// The version a store is at once opened by this build.
pub const CURRENT: i64 = 4;

/// Version 4: the fencing epoch each rollback record was written under (0: before epochs, or
/// a single instance that never held a lease).
fn v4_rollback_epoch(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE rollbacks ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;")
}

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
            store: path.display().to_string(),
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

/// The PostgreSQL schema, by the version each step brings a database to. PostgreSQL support
/// began at version 3, so its first step is the whole version-3 schema: BIGINT for every integer
/// (the store's milliseconds and ids are `i64`), DOUBLE PRECISION for REAL, BOOLEAN for flags.
/// `known_good.seq` stands in for SQLite's `rowid` as the tie-break of equal promotion times.
const PG_STEPS: &[(i64, &str)] = &[
    (
        3,
        "CREATE TABLE rollbacks (
            id BIGSERIAL PRIMARY KEY,
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            trigger TEXT NOT NULL,
            reason TEXT NOT NULL,
            from_tag TEXT,
            from_image TEXT,
            to_tag TEXT NOT NULL,
            to_digest TEXT,
            state TEXT NOT NULL,
            started_at_ms BIGINT NOT NULL,
            finished_at_ms BIGINT,
            steps TEXT NOT NULL DEFAULT '[]',
            output TEXT NOT NULL DEFAULT '',
            error TEXT,
            logs TEXT NOT NULL DEFAULT '',
            dry_run BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE INDEX rollbacks_by_target ON rollbacks (env, role, id);
        CREATE TABLE events (
            id BIGSERIAL PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            kind TEXT NOT NULL,
            tag TEXT,
            message TEXT NOT NULL
        );
        CREATE TABLE bad_tags (
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            tag TEXT NOT NULL,
            reason TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            PRIMARY KEY (env, role, tag)
        );
        CREATE TABLE deploys (
            id BIGSERIAL PRIMARY KEY,
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            tag TEXT NOT NULL,
            commit_sha TEXT,
            pipeline_url TEXT,
            at_ms BIGINT NOT NULL
        );
        CREATE TABLE alert_episodes (
            episode TEXT PRIMARY KEY,
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            at_ms BIGINT NOT NULL
        );
        CREATE TABLE baselines (
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            tag TEXT NOT NULL,
            evidence TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            PRIMARY KEY (env, role)
        );
        CREATE TABLE target_control (
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            paused BOOLEAN NOT NULL,
            halted_tag TEXT,
            halted_reason TEXT,
            last_rollback_ms BIGINT,
            refusals BIGINT NOT NULL,
            retry_at_ms BIGINT,
            updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (env, role)
        );
        CREATE TABLE known_good (
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            tag TEXT NOT NULL,
            digest TEXT,
            promoted_at_ms BIGINT NOT NULL,
            seq BIGSERIAL NOT NULL,
            PRIMARY KEY (env, role, tag)
        );
        CREATE TABLE samples (
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            window_ms BIGINT NOT NULL,
            tag TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            latency_ms BIGINT,
            probes BIGINT NOT NULL,
            failures BIGINT NOT NULL,
            cand_requests DOUBLE PRECISION,
            cand_errors DOUBLE PRECISION,
            base_requests DOUBLE PRECISION,
            base_errors DOUBLE PRECISION
        );
        CREATE INDEX samples_by_window ON samples (env, role, window_ms, at_ms);
        CREATE TABLE canaries (
            id BIGSERIAL PRIMARY KEY,
            env TEXT NOT NULL,
            role TEXT NOT NULL,
            tag TEXT NOT NULL,
            from_tag TEXT,
            slot TEXT NOT NULL,
            state TEXT NOT NULL,
            blue BIGINT NOT NULL,
            green BIGINT NOT NULL,
            applied BOOLEAN NOT NULL,
            steps TEXT NOT NULL DEFAULT '[]',
            reason TEXT NOT NULL DEFAULT '',
            started_ms BIGINT NOT NULL,
            ended_ms BIGINT,
            hold_until_ms BIGINT,
            commit_sha TEXT,
            pipeline_url TEXT
        );
        CREATE INDEX canaries_by_target ON canaries (env, role, id);",
    ),
    (
        // The rollback epoch, as in SQLite's version 4, and the leader lease (PostgreSQL only:
        // several instances share one database; an SQLite store has one controller, by file lock).
        4,
        "ALTER TABLE rollbacks ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
        CREATE TABLE leader_lease (
            id SMALLINT PRIMARY KEY CHECK (id = 1),
            holder TEXT NOT NULL,
            address TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        );",
    ),
];

/// The key of the advisory lock migrations hold ("rollwatch" in ASCII, truncated): constant
/// across versions, so an old and a new instance starting together also take turns.
const PG_MIGRATION_LOCK: i64 = 0x726f_6c6c_7761_7463;

/// Brings the PostgreSQL database at `at` to [`CURRENT`], or refuses it when it is newer. One
/// transaction holding [`PG_MIGRATION_LOCK`]: a second instance waits, then finds it done.
pub fn migrate_pg(client: &mut postgres::Client, at: &str) -> Result<(), StoreError> {
    let fail = |e: postgres::Error| StoreError::Migrate {
        at: at.to_string(),
        detail: pg_detail(&e),
    };
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATION_LOCK])
        .map_err(fail)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            id SMALLINT PRIMARY KEY CHECK (id = 1),
            version BIGINT NOT NULL
        )",
    )
    .map_err(fail)?;
    let found: i64 = tx
        .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])
        .map_err(fail)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(fail)?
        .unwrap_or(0);
    if found > CURRENT {
        return Err(StoreError::TooNew {
            store: format!("PostgreSQL at {at}"),
            found,
            supported: CURRENT,
        });
    }
    for (version, ddl) in PG_STEPS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(ddl).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[version],
        )
        .map_err(fail)?;
        if found > 0 {
            tracing::info!(at, from = found, to = version, "store schema migrated");
        }
    }
    tx.commit().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_in_order_up_to_current() {
        let versions: Vec<i64> = STEPS.iter().map(|s| s.version).collect();
        assert_eq!(versions, (1..=CURRENT).collect::<Vec<_>>());
        let pg: Vec<i64> = PG_STEPS.iter().map(|s| s.0).collect();
        assert_eq!(pg, (3..=CURRENT).collect::<Vec<_>>());
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
