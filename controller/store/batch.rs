//! Metric baselines from every watcher, written together. Each target with an error-metrics
//! source saves its baseline every 30 rounds; at 1,000 targets that is 33 transactions a second,
//! each synced to disk, all on the store's one connection. Batched, it is one transaction a
//! second. A baseline is a cache of what the metrics said (a lost save costs at most the last
//! 30 rounds of it, the same as a crash between two saves), so a save may wait a second and a
//! full queue may drop one — unlike rollback intents and events, which are written before the
//! watcher goes on. The rounds of watch windows ([`Sample`], one per watching target a second)
//! are written the same way, in the same transaction rhythm.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Sample, Store};
use crate::target::TargetId;

/// How long saves gather before they are written together.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Saves waiting at most; more are dropped until the next flush.
const QUEUE: usize = 8192;

type Save = (TargetId, String, String);

enum Write {
    Baseline(Save),
    Sample(Sample),
}

/// The watchers' handle: neither [`StoreWriter::save`] nor [`StoreWriter::sample`] waits.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Write>,
}

impl StoreWriter {
    /// Starts the writer; it writes what is queued once more when `shutdown` fires, then ends.
    pub fn start(
        store: Store,
        shutdown: CancellationToken,
    ) -> (StoreWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(store, rx, shutdown));
        (StoreWriter { tx }, task)
    }

    /// Queues `target`'s baseline measured on `tag` (JSON); a later save of the same target in
    /// the same batch replaces it.
    pub fn save(&self, target: TargetId, tag: String, evidence: String) {
        let save = Write::Baseline((target, tag, evidence));
        if self.tx.try_send(save).is_err() {
            tracing::warn!(
                "store queue full; this baseline save is dropped (the next comes 30 rounds later)"
            );
        }
    }

    /// Queues one round of a watch window; dropped when the queue is full (a gap in a chart).
    pub fn sample(&self, sample: Sample) {
        if self.tx.try_send(Write::Sample(sample)).is_err() {
            tracing::debug!("store queue full; a watch-window sample is dropped");
        }
    }
}

/// What the next flush writes.
#[derive(Default)]
struct Pending {
    baselines: HashMap<TargetId, (String, String)>,
    samples: Vec<Sample>,
}

impl Pending {
    fn add(&mut self, write: Write) {
        match write {
            Write::Baseline((target, tag, evidence)) => {
                self.baselines.insert(target, (tag, evidence));
            }
            Write::Sample(s) => self.samples.push(s),
        }
    }

    async fn flush(&mut self, store: &Store) {
        if !self.baselines.is_empty() {
            let batch: Vec<Save> = self
                .baselines
                .drain()
                .map(|(t, (tag, e))| (t, tag, e))
                .collect();
            let n = batch.len();
            if let Err(e) = store.save_baselines(batch).await {
                tracing::warn!(error = %e, saves = n, "cannot save metric baselines");
            }
        }
        if !self.samples.is_empty() {
            let batch = std::mem::take(&mut self.samples);
            let n = batch.len();
            if let Err(e) = store.save_samples(batch).await {
                tracing::warn!(error = %e, samples = n, "cannot save watch-window samples");
            }
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Write>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = Pending::default();
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
            Some(write) = rx.recv() => {
                pending.add(write);
                continue;
            }
        };
        while let Ok(write) = rx.try_recv() {
            pending.add(write);
        }
        pending.flush(&store).await;
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
        let (writer, task) = StoreWriter::start(store.clone(), shutdown.clone());
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
