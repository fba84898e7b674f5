//! Against a fake engine on loopback whose container listing can be held back, as a stalled
//! dockerd holds it: who waits for a listing and who is served the last one.

use std::sync::atomic::AtomicUsize;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::*;

/// A fake engine: answers `/version`, and `/containers/json` with an empty list once `open`
/// is true. Returns the view on it, the listings asked for, and the gate.
async fn engine() -> (Arc<EngineView>, Arc<AtomicUsize>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(AtomicUsize::new(0));
    let (gate, open) = watch::channel(true);
    let counter = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (counter, mut open) = (counter.clone(), open.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let request = String::from_utf8_lossy(&head[..end]).to_string();
                    head.drain(..end + 4);
                    let body = if request.contains("/containers/json") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = open.wait_for(|o| *o).await;
                        "[]"
                    } else {
                        r#"{"ApiVersion":"1.45","Version":"27.0.0"}"#
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let view = EngineView::new(
        DockerEndpoint::Tcp(format!("127.0.0.1:{port}")),
        Duration::from_secs(1),
    );
    (view, asked, gate)
}

/// The id of the listing a fresh reader is served, within a deadline (a reader that waits for
/// a held-back listing fails here instead of hanging the test).
async fn served(view: &Arc<EngineView>) -> u64 {
    let (mut seen, all) = (ListingId::default(), Selector::default());
    let read = view.with_containers(&all, &mut seen, |_| ());
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the reader waited for the held-back listing")
        .expect("listing");
    seen.0.expect("a listing id")
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Makes the last listing older than the reconcile period.
fn age(view: &EngineView) {
    let mut last = lock(&view.last);
    let listing = last.as_mut().expect("a listing");
    listing.at = Instant::now()
        .checked_sub(RECONCILE + Duration::from_secs(1))
        .expect("uptime");
}

#[tokio::test]
async fn a_reconciling_listing_runs_beside_the_rounds_and_only_once() {
    let (view, asked, gate) = engine().await;
    view.set_events_live(true);
    assert_eq!(served(&view).await, 1);
    age(&view);
    gate.send_replace(false);
    // The engine holds the reconcile back; every reader meanwhile gets listing 1 at once.
    let readers: Vec<_> = (0..50)
        .map(|_| {
            let view = view.clone();
            tokio::spawn(async move { served(&view).await })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), 1);
    }
    until("the reconcile asked the engine", || {
        asked.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "one reconcile, not one per reader"
    );
    gate.send_replace(true);
    until(
        "the reconcile landed",
        || matches!(view.freshness(), Freshness::Fresh(Ok(ref s)) if s.id == 2),
    )
    .await;
    assert_eq!(served(&view).await, 2);
}

#[tokio::test]
async fn after_an_event_readers_wait_for_one_new_listing() {
    let (view, asked, gate) = engine().await;
    view.set_events_live(true);
    assert_eq!(served(&view).await, 1);
    gate.send_replace(false);
    view.invalidate();
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let view = view.clone();
            tokio::spawn(async move {
                let mut seen = ListingId::default();
                view.with_containers(&Selector::default(), &mut seen, |_| ())
                    .await
                    .expect("listing");
                seen.0
            })
        })
        .collect();
    until("a reader asked the engine", || {
        asked.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        readers.iter().all(|r| !r.is_finished()),
        "a reader was served the listing from before the event"
    );
    gate.send_replace(true);
    for r in readers {
        assert_eq!(r.await.unwrap(), Some(2));
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "one listing for all readers"
    );
}

#[tokio::test]
async fn without_events_the_listing_is_renewed_every_interval() {
    let (view, asked, _gate) = engine().await;
    assert_eq!(served(&view).await, 1);
    assert_eq!(served(&view).await, 1, "younger than the interval");
    lock(&view.last).as_mut().expect("a listing").at = Instant::now()
        .checked_sub(Duration::from_secs(2))
        .expect("uptime");
    assert_eq!(
        served(&view).await,
        2,
        "older than the interval: listed again"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}
