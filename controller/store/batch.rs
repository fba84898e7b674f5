//! Metric baselines from every watcher, written together. Each target with an error-metrics
//! source saves its baseline every 30 rounds; at 1,000 targets that is 33 transactions a second,
//! each synced to disk, all on the store's one connection. Batched, it is one transaction a
//! second. A baseline is a cache of what the metrics said (a lost save costs at most the last
//! 30 rounds of it, the same as a crash between two saves), so a save may wait a second and a
//! full queue may drop one — unlike rollback intents and events, which are written before the
//! watcher goes on.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::target::TargetId;

/// How long saves gather before they are written together.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Saves waiting at most; more are dropped until the next flush.
const QUEUE: usize = 8192;

type Save = (TargetId, String, String);

/// The watchers' handle: [`BaselineWriter::save`] never waits.
#[derive(Clone)]
pub struct BaselineWriter {
    tx: mpsc::Sender<Save>,
}

impl BaselineWriter {
    /// Starts the writer; it writes what is queued once more when `shutdown` fires, then ends.
    pub fn start(
        store: Store,
        shutdown: CancellationToken,
    ) -> (BaselineWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(store, rx, shutdown));
        (BaselineWriter { tx }, task)
    }

    /// Queues `target`'s baseline measured on `tag` (JSON); a later save of the same target in
    /// the same batch replaces it.
    pub fn save(&self, target: TargetId, tag: String, evidence: String) {
        if self.tx.try_send((target, tag, evidence)).is_err() {
            tracing::warn!(
                "baseline queue full; this save is dropped (the next comes 30 rounds later)"
            );
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Save>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: HashMap<TargetId, (String, String)> = HashMap::new();
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
            Some((target, tag, evidence)) = rx.recv() => {
                pending.insert(target, (tag, evidence));
                continue;
            }
        };
        while let Ok((target, tag, evidence)) = rx.try_recv() {
            pending.insert(target, (tag, evidence));
        }
        if !pending.is_empty() {
            let batch: Vec<Save> = pending.drain().map(|(t, (tag, e))| (t, tag, e)).collect();
            let n = batch.len();
            if let Err(e) = store.save_baselines(batch).await {
                tracing::warn!(error = %e, saves = n, "cannot save metric baselines");
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Env;

    #[tokio::test]
    async fn saves_are_written_together_latest_per_target_and_flushed_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let shutdown = CancellationToken::new();
        let (writer, task) = BaselineWriter::start(store.clone(), shutdown.clone());
        let id = |role: &str| TargetId {
            env: Env::Staging,
            role: role.into(),
        };
        writer.save(id("a"), "v1".into(), "{\"n\":1}".into());
        writer.save(id("a"), "v1".into(), "{\"n\":2}".into());
        writer.save(id("b"), "v7".into(), "{\"n\":3}".into());
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(
            store
                .baseline(id("a"), "v1".into())
                .await
                .unwrap()
                .as_deref(),
            Some("{\"n\":2}"),
            "the later save of a target wins"
        );
        assert_eq!(
            store
                .baseline(id("b"), "v7".into())
                .await
                .unwrap()
                .as_deref(),
            Some("{\"n\":3}")
        );
    }
}
