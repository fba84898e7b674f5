//! Who may act. Several rollwatch instances on one PostgreSQL store watch the same targets; one
//! of them, the leader, acts. Leadership is a lease row whose expiry is set and checked on the
//! database's clock, taken with a fencing epoch that grows with every change of hands. A rollback
//! carries the epoch it started under ([`Fence`]) and the store re-checks it before each step, so
//! a leader that was frozen past its lease (SIGSTOP, a VM pause, a long GC-like stall) and wakes
//! up while another leads is refused at its next step instead of racing the new leader.
//!
//! A session advisory lock would not do: a frozen process keeps its session, and with it the
//! lock, for as long as the TCP connection lives.
//!
//! With a SQLite store there is one instance ([`SoleInstance`], guarded by [`StoreLock`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::telemetry::LeaseSeries;

/// The right to act on deployments. Asked before every rollback and every order.
pub trait Lease: Send + Sync {
    /// Whether this instance's watchers and API may act now.
    fn is_leader(&self) -> bool;

    /// The token a rollback started now carries through every step; `None` when this instance
    /// does not hold the lease.
    fn fence(&self) -> Option<Fence>;

    /// A short description for logs and the status of withheld actions.
    fn describe(&self) -> String;

    /// The API address of the instance that leads, when known and not this one: followers name
    /// it in their 503 answers.
    fn leader_address(&self) -> Option<String>;
}

/// Who acts, under which epoch. Written into every rollback intent; re-checked against the
/// lease row before each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: i64,
}

impl Fence {
    /// The token of a sole instance (SQLite): nothing to check against.
    pub fn sole() -> Fence {
        Fence {
            holder: "sole".into(),
            epoch: 0,
        }
    }
}

/// One rollwatch for these targets: always the leader.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoleInstance;

impl Lease for SoleInstance {
    fn is_leader(&self) -> bool {
        true
    }

    fn fence(&self) -> Option<Fence> {
        Some(Fence::sole())
    }

    fn describe(&self) -> String {
        "sole instance".into()
    }

    fn leader_address(&self) -> Option<String> {
        None
    }
}

/// The lease row as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    pub address: String,
    pub epoch: i64,
}

/// Where the lease row lives (the PostgreSQL store); a fake in unit tests.
pub trait LeaseBackend: Send + Sync {
    /// Takes or renews the lease for `ttl` on the database's clock: `Some(epoch)` when held
    /// after the call (the epoch grows whenever the lease changes hands or lapsed), `None` when
    /// another holder's lease is still running.
    fn acquire<'a>(
        &'a self,
        holder: &'a str,
        address: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<i64>, crate::store::StoreError>>;

    /// Gives the lease up at once (a clean shutdown), so a follower need not wait it out.
    fn release<'a>(
        &'a self,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), crate::store::StoreError>>;

    /// Who holds the lease now, if anyone.
    fn holder(&self) -> BoxFuture<'_, Result<Option<LeaseHolder>, crate::store::StoreError>>;
}

/// How long a lease lasts and how often it is renewed. A dead leader's lease runs out within
/// `ttl`; a follower looks every `renew_every`, so it takes over within `ttl + renew_every`.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub renew_every: Duration,
}

impl LeaseTiming {
    pub fn from_ttl(ttl: Duration) -> LeaseTiming {
        LeaseTiming {
            ttl,
            renew_every: (ttl / 5).max(Duration::from_millis(100)),
        }
    }
}

/// What this instance knows of the lease.
#[derive(Debug, Default)]
struct View {
    epoch: Option<i64>,
    /// Local monotonic deadline of the lease: the renewal's send time plus the ttl, so it never
    /// outlives the database's expiry (which is counted from when the database saw it).
    valid_until: Option<Instant>,
    /// Set once everything unfinished from earlier epochs was taken up: until then the
    /// watchers wait, so a takeover never starts a second rollback beside the resumed one.
    acting: bool,
    leader: Option<LeaseHolder>,
}

/// The lease held in the store, for several instances on one PostgreSQL database.
pub struct StoreLease {
    holder: String,
    /// This instance's API address, written into the lease row for followers to name.
    address: Mutex<String>,
    timing: LeaseTiming,
    view: Mutex<View>,
    series: Arc<LeaseSeries>,
    /// Renewals failed in a row: the first is logged as an error, then one in 30 (about every
    /// 30 s at the default ttl), and the recovery once.
    failures: std::sync::atomic::AtomicU32,
    /// A renewal still waiting on the store (a frozen server): the next one is not queued
    /// behind it, so waiting threads never pile up.
    renewing: Arc<std::sync::atomic::AtomicBool>,
}

/// Called with the new fence each time this instance takes the lease under a new epoch: it
/// resumes what earlier leaders left unfinished. Leadership is reported to the watchers only
/// after it returns.
pub type OnTakeover = Box<dyn Fn(Fence) -> BoxFuture<'static, ()> + Send + Sync>;

impl StoreLease {
    pub fn new(
        holder: String,
        address: String,
        timing: LeaseTiming,
        series: Arc<LeaseSeries>,
    ) -> Arc<StoreLease> {
        Arc::new(StoreLease {
            holder,
            address: Mutex::new(address),
            timing,
            view: Mutex::new(View::default()),
            series,
            failures: Default::default(),
            renewing: Default::default(),
        })
    }

    /// The address once the API listens (its port may have been chosen by the system).
    pub fn set_address(&self, address: String) {
        *self.address.lock().unwrap_or_else(|p| p.into_inner()) = address;
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn valid_now(view: &View) -> bool {
        view.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// Renews (or tries to take) the lease every `renew_every` until `shutdown`, then gives it
    /// up. Never returns early: a database that is down only means "not the leader" until it
    /// is back.
    pub async fn run(
        self: Arc<Self>,
        backend: Arc<dyn LeaseBackend>,
        on_takeover: OnTakeover,
        shutdown: CancellationToken,
    ) {
        let on_takeover = Arc::new(on_takeover);
        loop {
            self.renew_once(&backend, &on_takeover).await;
            self.publish();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.timing.renew_every) => {}
            }
        }
        if self.view().epoch.is_some() {
            let deadline = self.timing.renew_every.max(Duration::from_secs(1));
            match tokio::time::timeout(deadline, backend.release(&self.holder)).await {
                Ok(Ok(())) => tracing::info!(holder = %self.holder, "lease released"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot release the lease; it runs out by itself")
                }
                Err(_) => tracing::warn!("releasing the lease timed out; it runs out by itself"),
            }
        }
        *self.view() = View::default();
        self.publish();
    }

    /// One renewal. Public for tests that drive the lease step by step.
    pub async fn renew_once(
        self: &Arc<Self>,
        backend: &Arc<dyn LeaseBackend>,
        on_takeover: &Arc<OnTakeover>,
    ) {
        let sent = Instant::now();
        let deadline = (self.timing.ttl / 2).max(Duration::from_millis(200));
        let address = self
            .address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let answer = self.acquire(backend, address, deadline).await;
        use std::sync::atomic::Ordering::Relaxed;
        let failed_before = match &answer {
            Ok(Ok(_)) => self.failures.swap(0, Relaxed),
            _ => self.failures.fetch_add(1, Relaxed),
        };
        let say_failure = failed_before % 30 == 0;
        if matches!(answer, Ok(Ok(_))) && failed_before > 0 {
            tracing::warn!(
                failed = failed_before,
                "the store answers again; renewing the lease"
            );
        }
        match answer {
            Ok(Ok(Some(epoch))) => {
                self.series.store_up(true);
                let new_epoch = {
                    let mut v = self.view();
                    v.valid_until = Some(sent + self.timing.ttl);
                    v.leader = None;
                    let new = v.epoch != Some(epoch);
                    if new {
                        v.epoch = Some(epoch);
                        v.acting = false;
                    }
                    new
                };
                if new_epoch {
                    tracing::warn!(holder = %self.holder, epoch, "took the lease: this instance leads; resuming what was left unfinished");
                    let fence = Fence {
                        holder: self.holder.clone(),
                        epoch,
                    };
                    // Resumes run on their own task: renewals must go on while a resumed
                    // rollback pulls and starts containers.
                    let takeover = on_takeover(fence);
                    let me = self.clone();
                    tokio::spawn(async move {
                        takeover.await;
                        me.acting_under(epoch);
                    });
                }
            }
            Ok(Ok(None)) => {
                self.series.store_up(true);
                let was = {
                    let mut v = self.view();
                    let was = v.epoch.take();
                    v.valid_until = None;
                    v.acting = false;
                    was
                };
                if let Some(epoch) = was {
                    tracing::error!(holder = %self.holder, epoch, "lost the lease to another instance: acting stops");
                }
                let leader = tokio::time::timeout(deadline, backend.holder()).await;
                if let Ok(Ok(leader)) = leader {
                    self.view().leader = leader;
                }
            }
            Ok(Err(e)) => {
                self.series.store_up(false);
                if say_failure {
                    tracing::error!(error = %e, failed = failed_before + 1, "cannot renew the lease: the store is unreachable; this instance stops acting when the lease runs out");
                }
            }
            Err(_) => {
                self.series.store_up(false);
                if say_failure {
                    tracing::error!(within = ?deadline, failed = failed_before + 1, "the lease renewal timed out; this instance stops acting when the lease runs out");
                }
            }
        }
    }

    /// Marks the lease as acting once a takeover's resumes are done, if the epoch is still ours.
    fn acting_under(&self, epoch: i64) {
        let mut v = self.view();
        if v.epoch == Some(epoch) {
            v.acting = true;
            tracing::info!(
                epoch,
                "unfinished work taken up; watchers act under this epoch"
            );
        }
        drop(v);
        self.publish();
    }

    /// One acquire on its own task, awaited at most `deadline`. While the previous one still
    /// waits on the store, none is sent and this one times out like it.
    async fn acquire(
        &self,
        backend: &Arc<dyn LeaseBackend>,
        address: String,
        deadline: Duration,
    ) -> Result<Result<Option<i64>, crate::store::StoreError>, tokio::time::error::Elapsed> {
        use std::sync::atomic::Ordering::SeqCst;
        let (backend, holder, ttl) = (backend.clone(), self.holder.clone(), self.timing.ttl);
        let renewing = self.renewing.clone();
        let task = (!renewing.swap(true, SeqCst)).then(|| {
            tokio::spawn(async move {
                let answer = backend.acquire(&holder, &address, ttl).await;
                renewing.store(false, SeqCst);
                answer
            })
        });
        tokio::time::timeout(deadline, async move {
            match task {
                Some(t) => t.await.unwrap_or(Err(crate::store::StoreError::Join)),
                None => std::future::pending().await,
            }
        })
        .await
    }

    fn publish(&self) {
        let v = self.view();
        let leading = v.acting && v.epoch.is_some() && Self::valid_now(&v);
        self.series.set(leading, v.epoch.unwrap_or(0));
    }
}

impl Lease for StoreLease {
    fn is_leader(&self) -> bool {
        let v = self.view();
        v.acting && v.epoch.is_some() && Self::valid_now(&v)
    }

    fn fence(&self) -> Option<Fence> {
        let v = self.view();
        let epoch = v.epoch.filter(|_| Self::valid_now(&v))?;
        Some(Fence {
            holder: self.holder.clone(),
            epoch,
        })
    }

    fn describe(&self) -> String {
        let v = self.view();
        match (&v.epoch, &v.leader) {
            (Some(e), _) if Self::valid_now(&v) => {
                format!("{} leads under epoch {e}", self.holder)
            }
            (_, Some(l)) => format!(
                "{} follows; {} leads under epoch {} at {}",
                self.holder, l.holder, l.epoch, l.address
            ),
            _ => format!(
                "{} holds no lease (the store may be unreachable)",
                self.holder
            ),
        }
    }

    fn leader_address(&self) -> Option<String> {
        let v = self.view();
        v.leader.as_ref().map(|l| l.address.clone())
    }
}

/// One `rollwatch run` per store: the second one started on the same store refuses, instead
/// of two controllers acting on the same targets (two rollbacks of one failure). An advisory
/// lock on `<store>.lock`, held while the process lives and released by the kernel when it
/// dies, `kill -9` included, so a crash never leaves a stale lock behind.
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another rollwatch controller{holder} runs on store {store}: two would act on the same targets; stop it first, or give this one its own controller.store")]
    Held { store: String, holder: String },
    #[error("cannot lock {path}: {source} (set controller.store to a writable place)")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StoreLock {
    pub fn acquire(store: &std::path::Path) -> Result<StoreLock, LockError> {
        use std::io::{Read, Seek, Write};
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        let path = std::path::PathBuf::from(name);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    store: store.display().to_string(),
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message the next one prints.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests;
