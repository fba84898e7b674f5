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
    /// Held while listing, so concurrent askers wait for one listing instead of each making one.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    client: Option<DockerClient>,
    last: Option<Listing>,
    /// Successful listings so far, to number them.
    listings: u64,
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
        let candidates: Option<&Vec<usize>> =
            match (&selector.compose_project, &selector.compose_service) {
                (Some(p), Some(s)) => self.by_service.get(p).and_then(|m| m.get(s)),
                (Some(p), None) => self.by_project.get(p),
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
            inner: Mutex::new(Inner::default()),
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
        &self,
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
    pub async fn client(&self) -> Option<DockerClient> {
        self.inner.lock().await.client.clone()
    }

    async fn snapshot(&self) -> Result<Arc<Snapshot>, String> {
        let mut inner = self.inner.lock().await;
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some(last) = &inner.last {
            // A failed listing is retried every interval whatever the event stream says.
            let max_age = if last.result.is_ok() && self.events_live.load(Ordering::Relaxed) {
                RECONCILE.max(self.max_age)
            } else {
                self.max_age
            };
            if last.generation == generation && last.at.elapsed() < max_age {
                return last.result.clone();
            }
        }
        let result = self.list(&mut inner).await;
        inner.last = Some(Listing {
            at: Instant::now(),
            generation,
            result: result.clone(),
        });
        result
    }

    async fn list(&self, inner: &mut Inner) -> Result<Arc<Snapshot>, String> {
        if inner.client.is_none() {
            let client = DockerClient::connect(&self.endpoint)
                .await
                .map_err(|e| e.to_string())?;
            inner.client = Some(client);
        }
        let Some(client) = &inner.client else {
            return Err("not connected".into());
        };
        match client.containers(&Selector::default(), true).await {
            Ok(list) => {
                inner.listings += 1;
                Ok(Arc::new(Snapshot::new(inner.listings, list)))
            }
            Err(e) => {
                // Reconnect next time: the engine may have restarted on another socket state.
                inner.client = None;
                Err(e.to_string())
            }
        }
    }
}
