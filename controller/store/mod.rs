//! The durable record: every rollback (written as an intent before the first side effect and
//! completed after validation) and every known-good tag with its digest. Either an SQLite file
//! in WAL mode with `synchronous=FULL` (one controller; a `kill -9` loses nothing that was
//! acknowledged), or a PostgreSQL database several controllers share. The methods write their
//! SQL once against [`db::Db`]; every call runs on tokio's blocking pool, never on the runtime.

mod backend;
mod batch;
mod canary;
pub mod db;
mod lease;
mod samples;
mod schema;

pub use batch::StoreWriter;
pub use canary::{CanaryRecord, CanaryStart, CanaryState, Weights};
pub use db::{Db, Dialect, Row, Value};
pub use samples::{Sample, MAX_SAMPLES_PER_WINDOW, POINTS_PER_BAKE, WINDOWS_KEPT};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::tag::Tag;
use crate::target::{Env, TargetId};
use crate::vals;
use crate::verdict::{Control, Halt};
use backend::Backend;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {source} (set controller.store to a writable file)")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {store} has schema version {found}, written by a newer rollwatch (this one knows up to {supported}); upgrade rollwatch, or point controller.store at another store")]
    TooNew {
        store: String,
        found: i64,
        supported: i64,
    },
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("PostgreSQL store query failed: {}", pg_detail(.0))]
    Postgres(#[from] postgres::Error),
    #[error("controller.store {url:?} is not a usable PostgreSQL URL: {detail}; write it as postgres://user@host:port/database")]
    BadUrl { url: String, detail: String },
    #[error("cannot reach PostgreSQL at {at}: {detail}; check controller.store, that the server runs, and the password in the variable named by controller.store_password_env")]
    Unreachable { at: String, detail: String },
    #[error("lost the connection to PostgreSQL at {at} ({detail}); the next store call connects again; check that the server runs")]
    Lost { at: String, detail: String },
    #[error("cannot bring the PostgreSQL store at {at} to schema version {}: {detail}; the database user needs CREATE on its schema", schema::CURRENT)]
    Migrate { at: String, detail: String },
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
    #[error("the store did not answer within {seconds} s (a frozen database server?); store calls fail at once until it answers again")]
    Stuck { seconds: u64 },
    /// The lease is not the caller's (any more): another instance leads. Nothing was written
    /// but the refusal.
    #[error("fenced: {why}")]
    Fenced { why: String },
    #[error("store task panicked or was cancelled")]
    Join,
}

/// A PostgreSQL error with its cause: the client's own text of a server error is only "db
/// error", the server's message and detail are in its source.
pub(crate) fn pg_detail(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Where the store lives: `controller.store`, either an SQLite file (relative to the config
/// file) or a `postgres://` / `postgresql://` URL without a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreLocation {
    /// A URL when it starts with `postgres://` or `postgresql://`, else a file path.
    pub fn parse(s: &str) -> StoreLocation {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            StoreLocation::Postgres(s.to_string())
        } else {
            StoreLocation::Sqlite(PathBuf::from(s))
        }
    }

    /// Whether a PostgreSQL URL carries a password (in its user part or as `?password=`).
    pub fn has_password(&self) -> bool {
        match self {
            StoreLocation::Sqlite(_) => false,
            StoreLocation::Postgres(url) => match url::Url::parse(url) {
                Ok(u) => u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password"),
                // Unparsable: treat `user:secret@` conservatively.
                Err(_) => url.split('@').next().is_some_and(|head| {
                    head.split_once("://")
                        .is_some_and(|(_, user)| user.contains(':'))
                }),
            },
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(url) => f.write_str(url),
        }
    }
}

impl<'de> Deserialize<'de> for StoreLocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StoreLocation, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom(
                "empty; give an SQLite file or a postgres://user@host:port/database URL",
            ));
        }
        Ok(StoreLocation::parse(&s))
    }
}

/// What ordered a rollback; bounded, so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Health,
    ErrorRatio,
    Latency,
    Alert,
}

impl Trigger {
    /// The watcher's own verdicts (as opposed to orders from people and alerts).
    pub fn is_verdict(self) -> bool {
        matches!(
            self,
            Trigger::Health | Trigger::ErrorRatio | Trigger::Latency
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Health => "health",
            Trigger::ErrorRatio => "error_ratio",
            Trigger::Latency => "latency",
            Trigger::Alert => "alert",
        }
    }

    fn parse(s: &str) -> Option<Trigger> {
        [
            Trigger::Manual,
            Trigger::Health,
            Trigger::ErrorRatio,
            Trigger::Latency,
            Trigger::Alert,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// Where a rollback record stands. `Intent` on disk after a crash means "resume or verify".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackState {
    Intent,
    Succeeded,
    Failed,
    DryRun,
}

impl RollbackState {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackState::Intent => "intent",
            RollbackState::Succeeded => "succeeded",
            RollbackState::Failed => "failed",
            RollbackState::DryRun => "dry_run",
        }
    }

    fn parse(s: &str) -> Option<RollbackState> {
        [
            RollbackState::Intent,
            RollbackState::Succeeded,
            RollbackState::Failed,
            RollbackState::DryRun,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// One timed step of a rollback (`pull`, `up`, `validate`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub ok: bool,
    pub detail: String,
}

/// What is known before the first side effect.
#[derive(Debug, Clone)]
pub struct RollbackIntent {
    pub target: TargetId,
    pub trigger: Trigger,
    pub reason: String,
    pub from_tag: Option<String>,
    pub from_image: Option<String>,
    pub to_tag: Tag,
    /// A dry run's intent: never executed, not even when resumed after a crash.
    pub dry_run: bool,
    /// Who writes it, under which epoch ([`crate::lease::Fence::sole`] on a SQLite store).
    pub fence: crate::lease::Fence,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackRecord {
    pub id: i64,
    pub target: TargetId,
    pub trigger: Trigger,
    pub reason: String,
    pub from_tag: Option<String>,
    pub from_image: Option<String>,
    pub to_tag: String,
    pub to_digest: Option<String>,
    pub state: RollbackState,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub steps: Vec<StepRecord>,
    pub output: String,
    pub error: Option<String>,
    /// The last log lines of the containers being rolled back, captured before the rollback.
    pub logs: String,
    pub dry_run: bool,
}

/// How a rollback ended, written once.
#[derive(Debug, Clone)]
pub struct RollbackOutcome {
    pub state: RollbackState,
    pub to_digest: Option<String>,
    pub steps: Vec<StepRecord>,
    pub output: String,
    pub error: Option<String>,
}

/// Milliseconds since the Unix epoch: the store's one time format.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The store's handle; clones share one connection.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Mutex<Backend>>,
    /// Several instances on one store: the writes that decide something (events, known-good
    /// tags, bad tags, baselines, samples, deploys) are made by the lease holder alone. A
    /// follower's watchers judge the same evidence and keep their view in memory; writing it
    /// too would double every event and race the leader's guard rails.
    gate: Option<Arc<dyn crate::lease::Lease>>,
    /// How long a caller waits for a PostgreSQL call. A server process that is frozen while
    /// its host still answers TCP is not noticed by keepalives; the call's thread stays blocked,
    /// but its caller is told, and later calls fail at once (`stuck`) instead of queueing more
    /// blocked threads behind it, until a call returns.
    deadline: Option<std::time::Duration>,
    stuck: Arc<std::sync::atomic::AtomicBool>,
}

/// The default [`Store::deadline`] of a PostgreSQL store: above the statement timeout (10 s),
/// so only a server that does not answer at all meets it.
const PG_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

impl StoreError {
    /// Maps an SQLite error met while opening (or migrating) the store at `path`.
    fn opening(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Store {
    /// Opens (creating and migrating) the SQLite store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::from_backend(Backend::Sqlite(backend::open_sqlite(
            path,
        )?)))
    }

    /// Opens the store at `location`. A PostgreSQL server is connected and migrated now (on the
    /// blocking pool), with `password` when given (the URL never carries one).
    pub async fn connect(
        location: &StoreLocation,
        password: Option<String>,
    ) -> Result<Store, StoreError> {
        let location = location.clone();
        let postgres = matches!(location, StoreLocation::Postgres(_));
        let backend = tokio::task::spawn_blocking(move || backend::connect(&location, password))
            .await
            .map_err(|_| StoreError::Join)??;
        let store = Store::from_backend(backend);
        Ok(match postgres {
            true => store.with_call_deadline(PG_CALL_DEADLINE),
            false => store,
        })
    }

    /// Callers wait at most `deadline` for a store call (see [`Store::deadline`]).
    pub fn with_call_deadline(mut self, deadline: std::time::Duration) -> Store {
        self.deadline = Some(deadline);
        self
    }

    fn from_backend(backend: Backend) -> Store {
        Store {
            backend: Arc::new(Mutex::new(backend)),
            gate: None,
            deadline: None,
            stuck: Arc::default(),
        }
    }

    /// This store, with its deciding writes skipped while `lease` is not held.
    pub fn gated_by(mut self, lease: Arc<dyn crate::lease::Lease>) -> Store {
        self.gate = Some(lease);
        self
    }

    /// Whether a deciding write is this instance's to make. The fence, not `is_leader`: a
    /// takeover records the rollbacks it resumes before the watchers may act.
    pub(super) fn may_decide(&self) -> bool {
        self.gate.as_ref().is_none_or(|l| l.fence().is_some())
    }

    /// Runs `f` on the store's connection on the blocking pool.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(false, f).await
    }

    /// Runs `f` in one transaction on the blocking pool: committed when `f` returns `Ok`,
    /// rolled back when it returns `Err`.
    pub async fn with_tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(true, f).await
    }

    async fn run<T: Send + 'static>(
        &self,
        tx: bool,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.stuck.load(SeqCst) {
            return Err(StoreError::Stuck {
                seconds: self.deadline.map_or(0, |d| d.as_secs()),
            });
        }
        let (backend, stuck) = (self.backend.clone(), self.stuck.clone());
        let call = tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another store call panicked; the connection is fine
            // (an open transaction was rolled back when it was dropped).
            let mut guard = backend.lock().unwrap_or_else(|p| p.into_inner());
            let result = guard.run(tx, f);
            stuck.store(false, SeqCst);
            result
        });
        let Some(deadline) = self.deadline else {
            return call.await.map_err(|_| StoreError::Join)?;
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(done) => done.map_err(|_| StoreError::Join)?,
            Err(_) => {
                self.stuck.store(true, SeqCst);
                Err(StoreError::Stuck {
                    seconds: deadline.as_secs(),
                })
            }
        }
    }

    /// Writes the intent; returns its id. Must happen before any side effect of the rollback.
    /// Refused with [`StoreError::Fenced`] unless `intent.fence` holds the lease, checked in
    /// the same transaction; the record carries the fence's epoch.
    pub async fn begin_rollback(&self, intent: RollbackIntent) -> Result<i64, StoreError> {
        self.with_tx(move |db| {
            Store::fenced_write(db, &intent.fence, |db| {
                let row = db.query_opt(
                    "INSERT INTO rollbacks (env, role, trigger, reason, from_tag, from_image, to_tag, state, started_at_ms, dry_run, epoch)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'intent', ?8, ?9, ?10) RETURNING id",
                    vals![
                        intent.target.env.as_str(),
                        intent.target.role,
                        intent.trigger.as_str(),
                        intent.reason,
                        intent.from_tag,
                        intent.from_image,
                        intent.to_tag.as_str(),
                        now_ms(),
                        intent.dry_run,
                        intent.fence.epoch
                    ],
                )?;
                returned_id(row)
            })
        })
        .await
    }

    /// Attaches the failing containers' last log lines to a rollback (the incident's evidence).
    pub async fn set_rollback_logs(&self, id: i64, logs: String) -> Result<(), StoreError> {
        self.with(move |db| {
            db.execute(
                "UPDATE rollbacks SET logs = ?1 WHERE id = ?2",
                vals![logs, id],
            )?;
            Ok(())
        })
        .await
    }

    /// Writes a canary flip back's outcome (canary targets run on a SQLite store only; their
    /// watcher keeps its own cooldown).
    pub async fn finish_rollback(
        &self,
        id: i64,
        outcome: RollbackOutcome,
    ) -> Result<(), StoreError> {
        self.finish_record(id, outcome, crate::lease::Fence::sole(), false)
            .await
    }

    /// Writes a rollback's outcome, once: refused with [`StoreError::Fenced`] unless `fence`
    /// holds the lease and the record is still an intent of its epoch (a newer leader that
    /// took the record over finishes it). A success starts the target's cooldown in the same
    /// transaction: a controller killed right after it must not forget the cooldown on restart.
    pub async fn finish_fenced(
        &self,
        id: i64,
        outcome: RollbackOutcome,
        fence: crate::lease::Fence,
    ) -> Result<(), StoreError> {
        self.finish_record(id, outcome, fence, true).await
    }

    async fn finish_record(
        &self,
        id: i64,
        outcome: RollbackOutcome,
        fence: crate::lease::Fence,
        starts_cooldown: bool,
    ) -> Result<(), StoreError> {
        let starts_cooldown = starts_cooldown && outcome.state == RollbackState::Succeeded;
        let steps = serde_json::to_string(&outcome.steps)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with_tx(move |db| {
            Store::fenced_write(db, &fence, |db| {
                let n = db.execute(
                    "UPDATE rollbacks SET state = ?1, to_digest = ?2, steps = ?3, output = ?4, error = ?5,
                     finished_at_ms = ?6 WHERE id = ?7 AND (?8 = 0 OR (epoch = ?8 AND state = 'intent'))",
                    vals![outcome.state.as_str(), outcome.to_digest, steps, outcome.output, outcome.error, now_ms(), id, fence.epoch],
                )?;
                if n == 0 {
                    return Err(StoreError::Fenced {
                        why: format!("rollback #{id} is finished or was taken up by a newer epoch than {}", fence.epoch),
                    });
                }
                if starts_cooldown {
                    start_cooldown(db, id)?;
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn rollback(&self, id: i64) -> Result<Option<RollbackRecord>, StoreError> {
        self.with(move |db| {
            db.query_opt(&format!("{SELECT_ROLLBACK} WHERE id = ?1"), vals![id])?
                .map(|r| row_to_record(&r))
                .transpose()
        })
        .await
    }

    /// Newest first; all targets when `target` is `None`.
    pub async fn rollbacks(
        &self,
        target: Option<TargetId>,
        limit: usize,
    ) -> Result<Vec<RollbackRecord>, StoreError> {
        self.with(move |db| newest_rows(db, SELECT_ROLLBACK, target.as_ref(), limit, row_to_record))
            .await
    }

    pub async fn record_known_good(
        &self,
        target: TargetId,
        tag: Tag,
        digest: Option<String>,
    ) -> Result<(), StoreError> {
        if !self.may_decide() {
            return Ok(());
        }
        self.with(move |db| {
            db.execute(
                "INSERT INTO known_good (env, role, tag, digest, promoted_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (env, role, tag) DO UPDATE SET digest = excluded.digest, promoted_at_ms = excluded.promoted_at_ms",
                vals![target.env.as_str(), target.role, tag.as_str(), digest, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// The newest known-good tag of `target` other than `except` (the failing one).
    pub async fn last_known_good(
        &self,
        target: TargetId,
        except: Option<String>,
    ) -> Result<Option<Tag>, StoreError> {
        self.with(move |db| {
            // Two tags promoted in the same millisecond: the later written wins, by SQLite's
            // `rowid` or PostgreSQL's `seq` (upserts keep both).
            let sql = match db.dialect() {
                Dialect::Sqlite => {
                    "SELECT tag FROM known_good k WHERE env = ?1 AND role = ?2 AND (CAST(?3 AS TEXT) IS NULL OR tag != ?3)
                       AND NOT EXISTS (SELECT 1 FROM bad_tags b WHERE b.env = k.env AND b.role = k.role AND b.tag = k.tag)
                     ORDER BY promoted_at_ms DESC, rowid DESC LIMIT 1"
                }
                Dialect::Postgres => {
                    "SELECT tag FROM known_good k WHERE env = ?1 AND role = ?2 AND (CAST(?3 AS TEXT) IS NULL OR tag != ?3)
                       AND NOT EXISTS (SELECT 1 FROM bad_tags b WHERE b.env = k.env AND b.role = k.role AND b.tag = k.tag)
                     ORDER BY promoted_at_ms DESC, seq DESC LIMIT 1"
                }
            };
            let tag: Option<String> = db
                .query_opt(sql, vals![target.env.as_str(), target.role, except])?
                .map(|r| r.get(0))
                .transpose()?;
            tag.map(|t| Tag::parse(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
        .await
    }
}

/// The id an `INSERT ... RETURNING id` gave back.
fn returned_id(row: Option<Row>) -> Result<i64, StoreError> {
    row.ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?
        .get(0)
}

/// A `LIMIT` bound: `usize::MAX` ("all") would not fit the databases' signed integers.
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The `env` and `role` parameters of an optional target filter (`NULL`: every target), for
/// the `CAST(?1 AS TEXT) IS NULL OR env = ?1` form the listing queries share.
fn target_params(target: Option<&TargetId>) -> (Value, Value) {
    match target {
        Some(t) => (t.env.as_str().into(), t.role.as_str().into()),
        None => (Value::Null, Value::Null),
    }
}

/// The newest `limit` rows of `select` (a `SELECT … FROM` a table with `id`, `env` and `role`),
/// of `target` or of every target when it is `None`.
pub(super) fn newest_rows<T>(
    db: &mut dyn Db,
    select: &str,
    target: Option<&TargetId>,
    limit: usize,
    to: fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let (env, role) = target_params(target);
    db.query(
        &format!(
            "{select} WHERE (CAST(?1 AS TEXT) IS NULL OR env = ?1) AND (CAST(?2 AS TEXT) IS NULL OR role = ?2)
             ORDER BY id DESC LIMIT ?3"
        ),
        vals![env, role, limit_of(limit)],
    )?
    .iter()
    .map(to)
    .collect()
}

/// Sets the cooldown clock of rollback `id`'s target to the record's end, keeping its other
/// guard rails (the watcher writes the same moment again with the event it reports).
fn start_cooldown(db: &mut dyn Db, id: i64) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO target_control (env, role, paused, last_rollback_ms, refusals, updated_at_ms)
         SELECT env, role, ?2, finished_at_ms, 0, finished_at_ms FROM rollbacks WHERE id = ?1
         ON CONFLICT (env, role) DO UPDATE SET last_rollback_ms = excluded.last_rollback_ms,
           updated_at_ms = excluded.updated_at_ms",
        vals![id, false],
    )?;
    Ok(())
}

fn write_control(
    db: &mut dyn Db,
    target: &TargetId,
    control: &Control,
    now: i64,
) -> Result<(), StoreError> {
    let (halted_tag, halted_reason) = match &control.halted {
        Some(h) => (Some(h.tag.as_str()), Some(h.reason.as_str())),
        None => (None, None),
    };
    db.execute(
        "INSERT INTO target_control (env, role, paused, halted_tag, halted_reason, last_rollback_ms, refusals, retry_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (env, role) DO UPDATE SET paused = excluded.paused, halted_tag = excluded.halted_tag,
           halted_reason = excluded.halted_reason, last_rollback_ms = excluded.last_rollback_ms,
           refusals = excluded.refusals, retry_at_ms = excluded.retry_at_ms, updated_at_ms = excluded.updated_at_ms",
        vals![
            target.env.as_str(),
            &target.role,
            control.paused,
            halted_tag,
            halted_reason,
            control.last_rollback_ms,
            control.refusals,
            control.retry_at_ms,
            now
        ],
    )?;
    Ok(())
}

const SELECT_ROLLBACK: &str = "SELECT id, env, role, trigger, reason, from_tag, from_image, to_tag,
    to_digest, state, started_at_ms, finished_at_ms, steps, output, error, logs, dry_run FROM rollbacks";

/// Something that happened to a target, for `rollwatch history` and `GET /api/v1/events`.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub at_ms: i64,
    pub target: TargetId,
    /// `deploy`, `promoted`, `regressed`, `rollback`, `rollback_failed`, `withheld`, ...
    pub kind: String,
    pub tag: Option<String>,
    pub message: String,
}

/// Which events [`Store::events_matching`] reads: ids strictly between `after_id` and
/// `before_id`, times within `from_ms..=to_ms`, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub target: Option<TargetId>,
    pub after_id: Option<i64>,
    pub before_id: Option<i64>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Oldest first (a stream catching up); else newest first (a page of the timeline).
    pub oldest_first: bool,
    pub limit: usize,
}

/// A deploy as CI registered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRecord {
    pub tag: String,
    pub commit_sha: Option<String>,
    pub pipeline_url: Option<String>,
    pub at_ms: i64,
}

impl Store {
    pub async fn record_event(
        &self,
        target: TargetId,
        kind: &str,
        tag: Option<String>,
        message: String,
    ) -> Result<i64, StoreError> {
        self.record_event_with_control(target, kind, tag, message, None)
            .await
    }

    /// Records an event and, when given, the target's new guard-rail state in one transaction:
    /// after a crash the history never says "paused" while the control row says otherwise.
    pub async fn record_event_with_control(
        &self,
        target: TargetId,
        kind: &str,
        tag: Option<String>,
        message: String,
        control: Option<Control>,
    ) -> Result<i64, StoreError> {
        let kind = kind.to_string();
        if !self.may_decide() {
            return Ok(0);
        }
        self.with_tx(move |db| {
            let now = now_ms();
            let row = db.query_opt(
                "INSERT INTO events (at_ms, env, role, kind, tag, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 RETURNING id",
                vals![now, target.env.as_str(), &target.role, kind, tag, message],
            )?;
            let id = returned_id(row)?;
            if let Some(control) = control {
                write_control(db, &target, &control, now)?;
            }
            Ok(id)
        })
        .await
    }

    /// The target's guard rails as last written; the default (nothing held) for a new target.
    pub async fn control(&self, target: TargetId) -> Result<Control, StoreError> {
        self.with(move |db| {
            let Some(r) = db.query_opt(
                "SELECT paused, halted_tag, halted_reason, last_rollback_ms, refusals, retry_at_ms
                 FROM target_control WHERE env = ?1 AND role = ?2",
                vals![target.env.as_str(), target.role],
            )?
            else {
                return Ok(Control::default());
            };
            let halted_tag: Option<String> = r.get(1)?;
            let halted_reason: Option<String> = r.get(2)?;
            Ok(Control {
                paused: r.get(0)?,
                halted: halted_tag.map(|tag| Halt {
                    tag,
                    reason: halted_reason.unwrap_or_default(),
                }),
                last_rollback_ms: r.get(3)?,
                refusals: r.get(4)?,
                retry_at_ms: r.get(5)?,
            })
        })
        .await
    }

    /// Newest first; only ids above `after` when given (for polling).
    /// Events of `target` (all with `None`) with ids in (`after`, `before`), newest first.
    pub async fn events(
        &self,
        target: Option<TargetId>,
        after: Option<i64>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.events_matching(EventFilter {
            target,
            after_id: after,
            before_id: before,
            limit,
            ..EventFilter::default()
        })
        .await
    }

    pub async fn events_matching(&self, f: EventFilter) -> Result<Vec<EventRecord>, StoreError> {
        self.with(move |db| {
            let (env, role) = target_params(f.target.as_ref());
            // Two statements, not an interpolated order: the SQL stays constant text.
            let sql = if f.oldest_first {
                "SELECT id, at_ms, env, role, kind, tag, message FROM events
                 WHERE (CAST(?1 AS TEXT) IS NULL OR env = ?1) AND (CAST(?2 AS TEXT) IS NULL OR role = ?2) AND id > ?3
                   AND id < ?4 AND at_ms >= ?5 AND at_ms <= ?6
                 ORDER BY id ASC LIMIT ?7"
            } else {
                "SELECT id, at_ms, env, role, kind, tag, message FROM events
                 WHERE (CAST(?1 AS TEXT) IS NULL OR env = ?1) AND (CAST(?2 AS TEXT) IS NULL OR role = ?2) AND id > ?3
                   AND id < ?4 AND at_ms >= ?5 AND at_ms <= ?6
                 ORDER BY id DESC LIMIT ?7"
            };
            let bounds = vals![
                env,
                role,
                f.after_id.unwrap_or(0),
                f.before_id.unwrap_or(i64::MAX),
                f.from_ms.unwrap_or(i64::MIN),
                f.to_ms.unwrap_or(i64::MAX),
                limit_of(f.limit)
            ];
            db.query(sql, bounds)?
                .iter()
                .map(|r| {
                    let env: String = r.get(2)?;
                    Ok(EventRecord {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        target: TargetId {
                            env: Env::parse(&env)
                                .ok_or_else(|| StoreError::Corrupt(format!("env {env:?}")))?,
                            role: r.get(3)?,
                        },
                        kind: r.get(4)?,
                        tag: r.get(5)?,
                        message: r.get(6)?,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn mark_bad(
        &self,
        target: TargetId,
        tag: String,
        reason: String,
    ) -> Result<(), StoreError> {
        if !self.may_decide() {
            return Ok(());
        }
        self.with(move |db| {
            db.execute(
                "INSERT INTO bad_tags (env, role, tag, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (env, role, tag) DO UPDATE SET reason = excluded.reason, at_ms = excluded.at_ms",
                vals![target.env.as_str(), target.role, tag, reason, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn is_bad(&self, target: TargetId, tag: String) -> Result<bool, StoreError> {
        self.with(move |db| {
            let found = db.query_opt(
                "SELECT 1 FROM bad_tags WHERE env = ?1 AND role = ?2 AND tag = ?3",
                vals![target.env.as_str(), target.role, tag],
            )?;
            Ok(found.is_some())
        })
        .await
    }

    pub async fn register_deploy(
        &self,
        target: TargetId,
        deploy: DeployRecord,
    ) -> Result<(), StoreError> {
        if !self.may_decide() {
            return Ok(());
        }
        self.with(move |db| {
            db.execute(
                "INSERT INTO deploys (env, role, tag, commit_sha, pipeline_url, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                vals![target.env.as_str(), target.role, deploy.tag, deploy.commit_sha, deploy.pipeline_url, deploy.at_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// The newest CI registration of `tag` on `target`.
    pub async fn deploy_of(
        &self,
        target: TargetId,
        tag: String,
    ) -> Result<Option<DeployRecord>, StoreError> {
        self.with(move |db| {
            db.query_opt(
                "SELECT tag, commit_sha, pipeline_url, at_ms FROM deploys WHERE env = ?1 AND role = ?2 AND tag = ?3
                 ORDER BY id DESC LIMIT 1",
                vals![target.env.as_str(), target.role, tag],
            )?
            .map(|r| row_to_deploy(&r))
            .transpose()
        })
        .await
    }

    /// The newest CI registration whose commit is `sha` (a SHA tag's pipeline).
    pub async fn deploy_by_commit(
        &self,
        target: TargetId,
        sha: String,
    ) -> Result<Option<DeployRecord>, StoreError> {
        self.with(move |db| {
            db.query_opt(
                "SELECT tag, commit_sha, pipeline_url, at_ms FROM deploys WHERE env = ?1 AND role = ?2
                 AND (commit_sha = ?3 OR tag = ?3) ORDER BY id DESC LIMIT 1",
                vals![target.env.as_str(), target.role, sha],
            )?
            .map(|r| row_to_deploy(&r))
            .transpose()
        })
        .await
    }

    /// The known-good tag `target` would roll back to, for status output.
    pub async fn known_good_tags(
        &self,
        target: TargetId,
    ) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
        self.with(move |db| {
            db.query(
                "SELECT tag, digest, promoted_at_ms FROM known_good WHERE env = ?1 AND role = ?2 ORDER BY promoted_at_ms DESC",
                vals![target.env.as_str(), target.role],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .collect()
        })
        .await
    }

    /// Records that an alert episode ordered a rollback; `false` when it was already recorded
    /// (a repeated notification), so each firing episode acts at most once. `ON CONFLICT DO
    /// NOTHING` in both dialects: of two instances claiming at once, exactly one inserts.
    pub async fn claim_alert_episode(
        &self,
        target: TargetId,
        episode: String,
    ) -> Result<bool, StoreError> {
        self.with(move |db| {
            let n = db.execute(
                "INSERT INTO alert_episodes (episode, env, role, at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (episode) DO NOTHING",
                vals![episode, target.env.as_str(), target.role, now_ms()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Gives an alert episode back when its order never reached the watcher, so that
    /// Alertmanager's next notification of it orders the rollback again.
    pub async fn release_alert_episode(&self, episode: String) -> Result<(), StoreError> {
        self.with(move |db| {
            db.execute(
                "DELETE FROM alert_episodes WHERE episode = ?1",
                vals![episode],
            )?;
            Ok(())
        })
        .await
    }

    /// Saves metric baselines (target, tag measured on, JSON), each replacing the target's
    /// previous one, in one transaction: one sync to disk for the whole batch.
    pub async fn save_baselines(
        &self,
        batch: Vec<(TargetId, String, String)>,
    ) -> Result<(), StoreError> {
        if !self.may_decide() {
            return Ok(());
        }
        self.with_tx(move |db| {
            for (target, tag, evidence) in batch {
                db.execute(
                    "INSERT INTO baselines (env, role, tag, evidence, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (env, role) DO UPDATE SET tag = excluded.tag, evidence = excluded.evidence, at_ms = excluded.at_ms",
                    vals![target.env.as_str(), target.role, tag, evidence, now_ms()],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The saved baseline of `target`, if it was measured on `tag`.
    pub async fn baseline(
        &self,
        target: TargetId,
        tag: String,
    ) -> Result<Option<String>, StoreError> {
        self.with(move |db| {
            db.query_opt(
                "SELECT evidence FROM baselines WHERE env = ?1 AND role = ?2 AND tag = ?3",
                vals![target.env.as_str(), target.role, tag],
            )?
            .map(|r| r.get(0))
            .transpose()
        })
        .await
    }

    /// Rollbacks whose intent was written but whose outcome never was: a crash mid-rollback.
    pub async fn unfinished_rollbacks(&self) -> Result<Vec<RollbackRecord>, StoreError> {
        self.with(|db| {
            db.query(
                &format!("{SELECT_ROLLBACK} WHERE state = 'intent' ORDER BY id"),
                &[],
            )?
            .iter()
            .map(row_to_record)
            .collect()
        })
        .await
    }
}

fn row_to_deploy(r: &Row) -> Result<DeployRecord, StoreError> {
    Ok(DeployRecord {
        tag: r.get(0)?,
        commit_sha: r.get(1)?,
        pipeline_url: r.get(2)?,
        at_ms: r.get(3)?,
    })
}

fn row_to_record(r: &Row) -> Result<RollbackRecord, StoreError> {
    let env: String = r.get(1)?;
    let trigger: String = r.get(3)?;
    let state: String = r.get(9)?;
    let steps: String = r.get(12)?;
    Ok(RollbackRecord {
        id: r.get(0)?,
        target: TargetId {
            env: Env::parse(&env).ok_or_else(|| StoreError::Corrupt(format!("env {env:?}")))?,
            role: r.get(2)?,
        },
        trigger: Trigger::parse(&trigger)
            .ok_or_else(|| StoreError::Corrupt(format!("trigger {trigger:?}")))?,
        reason: r.get(4)?,
        from_tag: r.get(5)?,
        from_image: r.get(6)?,
        to_tag: r.get(7)?,
        to_digest: r.get(8)?,
        state: RollbackState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
        started_at_ms: r.get(10)?,
        finished_at_ms: r.get(11)?,
        steps: serde_json::from_str(&steps)
            .map_err(|e| StoreError::Corrupt(format!("steps: {e}")))?,
        output: r.get(13)?,
        error: r.get(14)?,
        logs: r.get(15)?,
        dry_run: r.get(16)?,
    })
}
