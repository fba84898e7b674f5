//! One view of a Docker endpoint's containers, shared by every target on that engine. Listing
//! per target made the engine work as hard as rollwatch (1,000 targets: 1,000 listings a
//! second, dockerd at 22.6% of a core); here the engine is listed once per watch interval while
//! its event stream is down, and while the stream is up only after an event said something
//! changed, plus a reconciling listing every [`RECONCILE`]. Targets filter the shared list by
//! their selector in memory.
//!
//! A failed listing is shared too: with a hung engine, targets must not each wait out the
//! listing deadline one after another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::docker::{ContainerInfo, DockerClient, DockerEndpoint};
use crate::target::Selector;

/// While the event stream is up, the longest a listing is trusted without an event: a safety net
/// for an event the engine never sent, not the way changes are seen.
pub const RECONCILE: Duration = Duration::from_secs(10);

/// The shared view of one endpoint.
pub struct EngineView {
    endpoint: DockerEndpoint,
    max_age: Duration,
    /// Bumped by every container event: a listing from an older generation is stale.
    generation: AtomicU64,
    /// The endpoint's event stream is connected, so every change bumps `generation`.
    events_live: AtomicBool,
    /// The last listing. Every round of every target reads it, so it sits behind a plain lock
    /// held only to clone an `Arc`, never across a call to the engine.
    last: std::sync::Mutex<Option<Listing>>,
    /// Held while listing, so concurrent askers wait for one listing instead of each making one.
    lister: Arc<Mutex<Lister>>,
    /// The connected client, for the rarer calls a watcher makes itself (image digests).
    client: std::sync::Mutex<Option<DockerClient>>,
}

#[derive(Default)]
struct Lister {
    client: Option<DockerClient>,
    /// Successful listings so far, to number them.
    listings: u64,
}

/// What the last listing is worth to a reader now.
enum Freshness {
    /// Use it: nothing changed since, or it failed less than an interval ago.
    Fresh(Result<Arc<Snapshot>, String>),
    /// Nothing changed since (the event stream says so), it is only older than [`RECONCILE`]:
    /// use it while one background listing reconciles.
    Aged(Arc<Snapshot>),
    /// An event changed the engine, or there is no listing: wait for a new one.
    Stale,
}

/// The listing a reader last saw ([`EngineView::with_containers`]); none at first.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListingId(Option<u64>);

struct Listing {
    at: Instant,
    generation: u64,
    result: Result<Arc<Snapshot>, String>,
}

/// One listing, indexed by compose project and service: most selectors name both, and scanning
/// every container for every target (1,000 targets × 200 containers a second) showed in profiles.
struct Snapshot {
    /// Which listing this is (counted per view), so a reader can tell it has seen it already.
    id: u64,
    all: Vec<ContainerInfo>,
    by_project: HashMap<String, Vec<usize>>,
    /// Project, then service: looked up by `&str` without building a key every round.
    by_service: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl Snapshot {
    fn new(id: u64, all: Vec<ContainerInfo>) -> Snapshot {
        let mut by_project: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_service: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        for (i, c) in all.iter().enumerate() {
            let Some(p) = &c.compose_project else {
                continue;
            };
            by_project.entry(p.clone()).or_default().push(i);
            if let Some(s) = c.labels.get("com.docker.compose.service") {
                by_service
                    .entry(p.clone())
                    .or_default()
                    .entry(s.clone())
                    .or_default()
                    .push(i);
            }
        }
        Snapshot {
            id,
            all,
            by_project,
            by_service,
        }
    }

    fn matching(&self, selector: &Selector) -> Vec<&ContainerInfo> {
        let project = selector
            .compose_project
            .as_ref()
            .filter(|_| !selector.slots);
        let candidates: Option<&Vec<usize>> = match (project, &selector.compose_service) {
            (Some(p), Some(s)) => self.by_service.get(p).and_then(|m| m.get(s)),
            (Some(p), None) => self.by_project.get(p),
            // No one project to look up (none, or a canary target's two slot projects).
            (None, _) => {
                return self
                    .all
                    .iter()
                    .filter(|c| selector.matches(&c.labels))
                    .collect()
            }
        };
        candidates
            .map(|ix| {
                ix.iter()
                    .map(|&i| &self.all[i])
                    .filter(|c| selector.matches(&c.labels))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl EngineView {
    /// `max_age`: the shortest watch interval of the targets on this engine.
    pub fn new(endpoint: DockerEndpoint, max_age: Duration) -> Arc<EngineView> {
        Arc::new(EngineView {
            endpoint,
            max_age,
            generation: AtomicU64::new(0),
            events_live: AtomicBool::new(false),
            last: std::sync::Mutex::new(None),
            lister: Arc::new(Mutex::new(Lister::default())),
            client: std::sync::Mutex::new(None),
        })
    }

    /// Something changed on the engine (a container event): the next ask lists again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// `read` applied to the containers matching `selector` (running or not, by name), borrowed
    /// from the shared listing, or `None` when the listing is the one the caller read last
    /// (`seen`, updated here): between container events a round copies nothing.
    pub async fn with_containers<R>(
        self: &Arc<Self>,
        selector: &Selector,
        seen: &mut ListingId,
        read: impl FnOnce(&[&ContainerInfo]) -> R,
    ) -> Result<Option<R>, String> {
        let snapshot = self.snapshot().await?;
        if seen.0 == Some(snapshot.id) {
            return Ok(None);
        }
        seen.0 = Some(snapshot.id);
        Ok(Some(read(&snapshot.matching(selector))))
    }

    /// The event stream (re)connected (`true`) or broke (`false`). Either way the next ask lists.
    pub fn set_events_live(&self, live: bool) {
        self.events_live.store(live, Ordering::Relaxed);
        self.invalidate();
    }

    /// A connected client, for the rarer calls a watcher makes itself (image digests).
    pub fn client(&self) -> Option<DockerClient> {
        lock(&self.client).clone()
    }

    /// The listing to read: the last one when it is still good, else a new one. Only a change
    /// the engine announced (or a failure, or no listing yet) makes the asker wait; the
    /// reconciling listing runs beside the rounds, so a slow engine (seen: `docker rm` of the
    /// bench's containers hung for minutes) delays no probe.
    async fn snapshot(self: &Arc<Self>) -> Result<Arc<Snapshot>, String> {
        match self.freshness() {
            Freshness::Fresh(result) => return result,
            Freshness::Aged(snapshot) => {
                self.reconcile_in_background();
                return Ok(snapshot);
            }
            Freshness::Stale => {}
        }
        let mut lister = self.lister.lock().await;
        // Another asker may have listed while this one waited for the lock.
        if let Freshness::Fresh(result) = self.freshness() {
            return result;
        }
        self.list(&mut lister).await
    }

    fn freshness(&self) -> Freshness {
        let last = lock(&self.last);
        let Some(last) = last.as_ref() else {
            return Freshness::Stale;
        };
        if last.generation != self.generation.load(Ordering::Relaxed) {
            return Freshness::Stale;
        }
        let age = last.at.elapsed();
        match &last.result {
            // A failed listing is retried every interval whatever the event stream says.
            Err(_) if age >= self.max_age => Freshness::Stale,
            Ok(_) if !self.events_live.load(Ordering::Relaxed) && age >= self.max_age => {
                Freshness::Stale
            }
            Ok(s) if age >= RECONCILE.max(self.max_age) => Freshness::Aged(s.clone()),
            result => Freshness::Fresh(result.clone()),
        }
    }

    /// One listing in a task of its own, unless one is running already.
    fn reconcile_in_background(self: &Arc<Self>) {
        let Ok(mut lister) = self.lister.clone().try_lock_owned() else {
            return;
        };
        let view = self.clone();
        tokio::spawn(async move {
            if !matches!(view.freshness(), Freshness::Fresh(_)) {
                let _ = view.list(&mut lister).await;
            }
        });
    }

    async fn list(&self, lister: &mut Lister) -> Result<Arc<Snapshot>, String> {
        // Read before listing: an event during the listing leaves it stale, as it should.
        let generation = self.generation.load(Ordering::Relaxed);
        let result = self.list_now(lister).await;
        *lock(&self.last) = Some(Listing {
            at: Instant::now(),
            generation,
            result: result.clone(),
        });
        result
    }

    async fn list_now(&self, lister: &mut Lister) -> Result<Arc<Snapshot>, String> {
        if lister.client.is_none() {
            let client = DockerClient::connect(&self.endpoint)
                .await
                .map_err(|e| e.to_string())?;
            *lock(&self.client) = Some(client.clone());
            lister.client = Some(client);
        }
        let Some(client) = &lister.client else {
            return Err("not connected".into());
        };
        match client.containers(&Selector::default(), true).await {
            Ok(list) => {
                lister.listings += 1;
                Ok(Arc::new(Snapshot::new(lister.listings, list)))
            }
            Err(e) => {
                // Reconnect next time: the engine may have restarted on another socket state.
                lister.client = None;
                *lock(&self.client) = None;
                Err(e.to_string())
            }
        }
    }
}

/// A lock only ever held to read or swap a value: a panic while holding it cannot leave that
/// value half-written, so a poisoned lock is still good.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
