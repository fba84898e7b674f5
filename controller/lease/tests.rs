//! The lease's state machine against a fake lease row that keeps the database's rules (expiry
//! on its own clock, the epoch growing on every change of hands), on tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::store::StoreError;

#[derive(Default)]
struct FakeRow {
    row: Mutex<Option<(LeaseHolder, Instant)>>,
    down: std::sync::atomic::AtomicBool,
}

impl FakeRow {
    fn unreachable() -> StoreError {
        StoreError::Corrupt("database down (fake)".into())
    }
}

impl LeaseBackend for FakeRow {
    fn acquire<'a>(
        &'a self,
        holder: &'a str,
        address: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(FakeRow::unreachable());
            }
            let now = Instant::now();
            let mut row = self.row.lock().unwrap();
            let epoch = match row.as_ref() {
                Some((h, exp)) if h.holder == holder && *exp > now => h.epoch,
                Some((_, exp)) if *exp > now => return Ok(None),
                Some((h, _)) => h.epoch + 1,
                None => 1,
            };
            *row = Some((
                LeaseHolder {
                    holder: holder.into(),
                    address: address.into(),
                    epoch,
                },
                now + ttl,
            ));
            Ok(Some(epoch))
        })
    }

    fn release<'a>(&'a self, holder: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut row = self.row.lock().unwrap();
            if let Some((h, exp)) = row.as_mut() {
                if h.holder == holder {
                    *exp = Instant::now();
                }
            }
            Ok(())
        })
    }

    fn holder(&self) -> BoxFuture<'_, Result<Option<LeaseHolder>, StoreError>> {
        Box::pin(async move {
            let now = Instant::now();
            let row = self.row.lock().unwrap();
            Ok(row
                .as_ref()
                .filter(|(_, exp)| *exp > now)
                .map(|(h, _)| h.clone()))
        })
    }
}

const TTL: Duration = Duration::from_secs(5);

fn instance(name: &str) -> (Arc<StoreLease>, Arc<LeaseSeries>) {
    let series = Arc::new(LeaseSeries::new("postgres", false));
    let lease = StoreLease::new(
        name.into(),
        format!("http://{name}:9860"),
        LeaseTiming::from_ttl(TTL),
        series.clone(),
    );
    (lease, series)
}

/// A takeover hook that counts its calls and remembers the fences it was given.
fn counting() -> (Arc<OnTakeover>, Arc<Mutex<Vec<Fence>>>, Arc<AtomicUsize>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, c) = (seen.clone(), calls.clone());
    let hook: OnTakeover = Box::new(move |fence| {
        s.lock().unwrap().push(fence);
        c.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    });
    (Arc::new(hook), seen, calls)
}

/// Lets spawned takeover tasks run.
async fn settle() {
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_instance_leads_after_its_takeover_and_the_second_follows_naming_it() {
    let row: Arc<FakeRow> = Arc::default();
    let backend: Arc<dyn LeaseBackend> = row.clone();
    let (a, a_series) = instance("a");
    let (b, b_series) = instance("b");
    let (hook, seen, _) = counting();

    a.renew_once(&backend, &hook).await;
    assert_eq!(
        a.fence().map(|f| f.epoch),
        Some(1),
        "the fence is usable by the takeover"
    );
    settle().await;
    assert!(a.is_leader());
    a.publish();
    let mut out = String::new();
    a_series.render(&mut out);
    assert!(
        out.contains("rollwatch_leader{store=\"postgres\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("rollwatch_lease_epoch{store=\"postgres\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("rollwatch_role_info{store=\"postgres\",leader=\"true\"} 1"),
        "{out}"
    );

    b.renew_once(&backend, &hook).await;
    assert!(!b.is_leader());
    assert_eq!(b.fence(), None);
    assert_eq!(b.leader_address().as_deref(), Some("http://a:9860"));
    b.publish();
    let mut out = String::new();
    b_series.render(&mut out);
    assert!(
        out.contains("rollwatch_role_info{store=\"postgres\",leader=\"false\"} 1")
            && out.contains("rollwatch_leader{store=\"postgres\"} 0"),
        "{out}"
    );
    assert!(
        b.describe().contains("a leads under epoch 1"),
        "{}",
        b.describe()
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Fence {
            holder: "a".into(),
            epoch: 1
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn watchers_wait_until_the_takeover_has_resumed_what_was_left() {
    let row: Arc<FakeRow> = Arc::default();
    let backend: Arc<dyn LeaseBackend> = row.clone();
    let (a, _) = instance("a");
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let wait = Arc::new(Mutex::new(Some(wait)));
    let hook: OnTakeover = Box::new(move |_| {
        let wait = wait.lock().unwrap().take();
        Box::pin(async move {
            if let Some(w) = wait {
                let _ = w.await;
            }
        })
    });
    let hook = Arc::new(hook);
    a.renew_once(&backend, &hook).await;
    settle().await;
    assert!(!a.is_leader(), "not acting while the resume runs");
    assert!(
        a.fence().is_some(),
        "the resume itself is fenced under the new epoch"
    );
    let _ = release.send(());
    settle().await;
    assert!(a.is_leader());
}

#[tokio::test(start_paused = true)]
async fn a_frozen_leader_loses_its_fence_when_its_lease_runs_out_and_the_next_epoch_is_another() {
    let row: Arc<FakeRow> = Arc::default();
    let backend: Arc<dyn LeaseBackend> = row.clone();
    let (a, _) = instance("a");
    let (b, _) = instance("b");
    let (hook, seen, _) = counting();
    a.renew_once(&backend, &hook).await;
    settle().await;
    // a stops renewing (frozen): its own view expires with the ttl, before anyone else acts.
    tokio::time::advance(TTL + Duration::from_millis(1)).await;
    assert!(!a.is_leader());
    assert_eq!(a.fence(), None);
    b.renew_once(&backend, &hook).await;
    settle().await;
    assert!(b.is_leader());
    assert_eq!(b.fence().map(|f| f.epoch), Some(2));
    // a wakes up: its renewal is refused and it follows.
    a.renew_once(&backend, &hook).await;
    assert!(!a.is_leader());
    assert_eq!(a.leader_address().as_deref(), Some("http://b:9860"));
    let epochs: Vec<i64> = seen.lock().unwrap().iter().map(|f| f.epoch).collect();
    assert_eq!(epochs, vec![1, 2], "one takeover per epoch");
}

#[tokio::test(start_paused = true)]
async fn a_lost_database_stops_acting_at_lease_end_and_its_return_is_a_new_epoch() {
    let row: Arc<FakeRow> = Arc::default();
    let backend: Arc<dyn LeaseBackend> = row.clone();
    let (a, series) = instance("a");
    let (hook, _, calls) = counting();
    a.renew_once(&backend, &hook).await;
    settle().await;
    row.down.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    a.renew_once(&backend, &hook).await;
    assert!(a.is_leader(), "still inside the lease it was granted");
    let mut out = String::new();
    series.render(&mut out);
    assert!(
        out.contains("rollwatch_store_up{store=\"postgres\"} 0"),
        "{out}"
    );
    tokio::time::advance(TTL).await;
    assert!(
        !a.is_leader(),
        "the lease ran out while the database was away"
    );
    row.down.store(false, Ordering::SeqCst);
    a.renew_once(&backend, &hook).await;
    settle().await;
    assert!(a.is_leader());
    assert_eq!(
        a.fence().map(|f| f.epoch),
        Some(2),
        "a lapse is a new epoch"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "what was left is taken up again"
    );
}

#[tokio::test(start_paused = true)]
async fn renewals_within_the_lease_keep_the_epoch_and_do_not_take_over_again() {
    let row: Arc<FakeRow> = Arc::default();
    let backend: Arc<dyn LeaseBackend> = row.clone();
    let (a, _) = instance("a");
    let (hook, _, calls) = counting();
    for _ in 0..10 {
        a.renew_once(&backend, &hook).await;
        settle().await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(a.is_leader());
    assert_eq!(a.fence().map(|f| f.epoch), Some(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
