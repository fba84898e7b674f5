//! Deploy detection. Docker events only *wake* a target's watcher; the watcher then reconciles the
//! whole picture itself (level-triggered), so a missed or duplicated event costs nothing. After the
//! event stream breaks (daemon restart) and reconnects, every target is woken for a full reconcile.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::docker::{DockerClient, DockerEndpoint};
use crate::engine::EngineView;
use crate::target::{Selector, TargetId};

/// What the event stream tells a watcher: look again now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    pub target: TargetId,
    pub reason: String,
    /// Set for `die` events: a crash can be over (and the container restarted) before the next
    /// listing, so the event itself is evidence.
    pub death: Option<Death>,
}

/// A container of the target died: which, running what, with which exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    pub container: String,
    pub image: String,
    pub exit_code: i64,
}

/// Reads a `die` event's attributes (Docker puts `name`, `image` and `exitCode` beside the labels).
fn death_of(
    action: &str,
    attributes: &std::collections::BTreeMap<String, String>,
) -> Option<Death> {
    (action == "die").then(|| Death {
        container: attributes.get("name").cloned().unwrap_or_default(),
        image: attributes.get("image").cloned().unwrap_or_default(),
        exit_code: attributes
            .get("exitCode")
            .and_then(|c| c.parse().ok())
            .unwrap_or(-1),
    })
}

/// One target as the event router sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub target: TargetId,
    pub selector: Selector,
    pub wake: mpsc::Sender<Wake>,
}

/// Follows the container events of one Docker endpoint until `shutdown`, marking the engine's
/// shared view stale and waking the targets whose selector matches an event's labels.
/// Reconnects with back-off (0.25 s doubling to 5 s).
pub async fn follow_events(
    endpoint: DockerEndpoint,
    view: std::sync::Arc<EngineView>,
    subscribers: Vec<Subscriber>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    let mut connected_before = false;
    while !shutdown.is_cancelled() {
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = DockerClient::connect(&endpoint) => c,
        };
        match client {
            Ok(client) => {
                if connected_before {
                    tracing::info!(%endpoint, "docker event stream reconnected; reconciling all targets");
                }
                // Reconcile after (re)connecting: whatever happened while we were away is visible now.
                view.set_events_live(true);
                wake_all(&subscribers, "event stream (re)connected").await;
                connected_before = true;
                backoff = Duration::from_millis(250);
                let mut events = std::pin::pin!(client.container_events());
                loop {
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        item = events.next() => item,
                    };
                    match item {
                        Some(Ok((action, labels))) => {
                            view.invalidate();
                            for s in subscribers.iter().filter(|s| s.selector.matches(&labels)) {
                                let _ = s.wake.try_send(Wake {
                                    target: s.target.clone(),
                                    reason: format!("docker event {action}"),
                                    death: death_of(&action, &labels),
                                });
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(%endpoint, error = %e, "docker event stream broke");
                            view.set_events_live(false);
                            break;
                        }
                        None => {
                            tracing::warn!(%endpoint, "docker event stream ended");
                            view.set_events_live(false);
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "docker not reachable; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn wake_all(subscribers: &[Subscriber], reason: &str) {
    for s in subscribers {
        let _ = s.wake.try_send(Wake {
            death: None,
            target: s.target.clone(),
            reason: reason.to_string(),
        });
    }
}
