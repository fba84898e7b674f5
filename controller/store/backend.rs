//! The one open connection behind a [`Store`](super::Store): an SQLite file, or a PostgreSQL
//! server reached again whenever its connection was lost. It hands the store's methods a
//! [`Db`] (a connection, or one transaction) and never interprets what they store.

use std::path::Path;
use std::time::Duration;

use super::db::{Db, PgDb, SqliteDb};
use super::{schema, StoreError, StoreLocation};

/// How long a PostgreSQL connect may take before the store call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalives: a server host gone without a FIN (or a frozen server) is given up after
/// 15 s idle plus 3 unanswered probes 5 s apart, so a call blocked reading fails in about 30 s;
/// statement_timeout cannot do that, the server enforces it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// Sent data unacknowledged this long fails the connection (Linux `TCP_USER_TIMEOUT`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Every statement has a deadline: a blocked lock or a hung server fails the call, it does not
/// hold a watcher (and the store's one connection) forever. A session idle inside a
/// transaction (its process frozen by SIGSTOP between two statements) is ended by the server
/// after 5 s, so its row locks (the lease row's `FOR SHARE`) cannot stall a takeover.
const STATEMENT_TIMEOUT: &str =
    "-c statement_timeout=10000 -c idle_in_transaction_session_timeout=5000";

pub(super) enum Backend {
    Sqlite(rusqlite::Connection),
    // Boxed: the client and its config are five times the size of an SQLite connection.
    Postgres(Box<PgBackend>),
}

impl Backend {
    /// Runs `f` on the connection; with `tx`, inside one transaction committed when `f`
    /// returns `Ok` and rolled back when it returns `Err`.
    pub(super) fn run<T>(
        &mut self,
        tx: bool,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            Backend::Sqlite(conn) => {
                if !tx {
                    return f(&mut SqliteDb(conn));
                }
                let t = conn.transaction()?;
                let out = f(&mut SqliteDb(&t))?;
                t.commit()?;
                Ok(out)
            }
            Backend::Postgres(pg) => pg.run(tx, f),
        }
    }
}

/// A PostgreSQL server and the client connected to it, if one is.
pub(super) struct PgBackend {
    config: postgres::Config,
    /// `host:port`, for messages (the URL carries no password: the config loader refuses one).
    at: String,
    client: Option<postgres::Client>,
}

impl PgBackend {
    /// Reads the URL; connects only on first use (see [`PgBackend::client`]).
    pub(super) fn new(url: &str, password: Option<String>) -> Result<PgBackend, StoreError> {
        let bad = |detail: String| StoreError::BadUrl {
            url: url.to_string(),
            detail,
        };
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| bad(e.to_string()))?;
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let at = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5432)
        );
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .options(STATEMENT_TIMEOUT)
            .application_name("rollwatch");
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            config.password(p);
        }
        Ok(PgBackend {
            config,
            at,
            client: None,
        })
    }

    /// The connected client: the last one while it is open, else a new connection (with the
    /// schema brought up to date), so a restarted server is used again without a restart of
    /// rollwatch.
    pub(super) fn client(&mut self) -> Result<&mut postgres::Client, StoreError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        match &mut self.client {
            Some(c) => Ok(c),
            slot @ None => {
                // Loopback or a trusted network: NoTls. A server elsewhere belongs behind a
                // tunnel or a local pooler until TLS is configurable here.
                let mut client =
                    self.config
                        .connect(postgres::NoTls)
                        .map_err(|e| StoreError::Unreachable {
                            at: self.at.clone(),
                            detail: super::pg_detail(&e),
                        })?;
                schema::migrate_pg(&mut client, &self.at)?;
                Ok(slot.insert(client))
            }
        }
    }

    fn run<T>(
        &mut self,
        tx: bool,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let at = self.at.clone();
        let client = self.client()?;
        let out = if tx {
            match client.transaction() {
                Ok(mut t) => match f(&mut PgDb(&mut t)) {
                    Ok(v) => t.commit().map(|()| v).map_err(StoreError::from),
                    // Dropping `t` rolls it back.
                    Err(e) => Err(e),
                },
                Err(e) => Err(e.into()),
            }
        } else {
            f(&mut PgDb(client))
        };
        if client.is_closed() {
            // The server went away mid-call: say so, and connect afresh next time.
            self.client = None;
            return out.map_err(|e| StoreError::Lost {
                at,
                detail: e.to_string(),
            });
        }
        out
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // The sync client closes through its own runtime's `block_on`, which panics when the
        // last `Store` clone is dropped on an async task: close it on a plain thread then.
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

/// Opens the SQLite file at `path` in WAL mode with `synchronous=FULL` and migrates it.
pub(super) fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let open_err = StoreError::opening(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
    }
    let mut conn = rusqlite::Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    schema::migrate(&mut conn, path)?;
    Ok(conn)
}

/// The backend of `location`; a PostgreSQL server is connected (and migrated) right away, so
/// a wrong URL or a stopped server is reported at start, not at the first rollback.
pub(super) fn connect(
    location: &StoreLocation,
    password: Option<String>,
) -> Result<Backend, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Backend::Sqlite(open_sqlite(path)?)),
        StoreLocation::Postgres(url) => {
            let mut pg = PgBackend::new(url, password)?;
            pg.client()?;
            Ok(Backend::Postgres(Box::new(pg)))
        }
    }
}
