//! The API's HTTP server: hands every accepted connection to hyper's HTTP/1 connection driver,
//! configured so that idle or slow clients cannot hold the controller. Open connections are
//! capped (over the cap a new connection is closed at once, so the process never runs out of
//! descriptors or memory), and hyper's header-read timeout closes a connection that has not sent
//! a whole request head in time — the first request's and, on keep-alive, every later one's, so
//! it reaps idle connections too. Per-request timeouts and limits are tower layers in
//! [`crate::api::router`]. This module decides nothing about requests.
//!
//! Why not `axum::serve`: axum 0.8 builds hyper-util's auto (HTTP/1 + HTTP/2) builder without a
//! timer, so hyper's header-read timeout never runs, and its version detection reads the first
//! bytes with no timeout at all; it also has no connection cap. HTTP/1 only here: every client
//! of this API (the CLI, curl, CI, Alertmanager, Prometheus) speaks it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How the server protects itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; over it, new connections are closed right after `accept`.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after it opened (or after
    /// its previous answer) is closed.
    pub header_read_timeout: Duration,
}

/// The cap when the descriptor limit allows it: far above any honest use of this API (a few
/// operators, CI jobs, Alertmanager, Prometheus), low enough to bound memory (~25 kB each).
pub const MAX_CONNECTIONS: usize = 4096;
/// Descriptors left for everything else the controller opens (store, Docker, ssh, probes).
const RESERVED_DESCRIPTORS: u64 = 256;
/// Generous for any real client on any network; a slowloris is gone after this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's per-connection buffer cap (its default is ~400 kB: 4,096 idle connections could pin
/// 1.6 GB). A request head of this API is a few hundred bytes; bodies and answers stream through
/// in chunks of this size. hyper's minimum is 8 kB.
const MAX_BUF: usize = 32 * 1024;
/// How long open connections get to finish their request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Limits {
    /// The limits for a process that may hold `descriptors` open files: the connection cap
    /// leaves [`RESERVED_DESCRIPTORS`] for the rest of the controller.
    pub fn for_descriptors(descriptors: u64) -> Limits {
        let room = descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(64);
        Limits {
            max_connections: MAX_CONNECTIONS.min(usize::try_from(room).unwrap_or(usize::MAX)),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Connections the kernel completes and queues before the server accepts them. mio's default
/// (128, the standard library's) overflows in a burst of connects, and then the kernel drops
/// SYNs — every later client, `/healthz` included, waits out a 1 s retransmission (seen here:
/// 13 stalls of 1 s while 2,000 connections opened). Linux caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// Binds the API's listening socket with a backlog fit for a burst of connections.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Raises this process's soft open-file limit to its hard limit (a connection flood then meets
/// the cap, not `EMFILE`) and returns the soft limit in force afterwards.
pub fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting and gives open connections
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let shed = Arc::new(AtomicU64::new(0));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUF)
        .keep_alive(true);
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = ?limits.header_read_timeout,
        "API server limits"
    );
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE/ENOMEM: wait for connections to close rather than spin.
                tracing::error!(error = %e, "API accept failed; retrying in 100 ms");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closing at once (rather than leaving it in the kernel's backlog) keeps the
            // backlog short, so a new request is accepted as soon as a slot frees up.
            let n = shed.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    shed = n + 1,
                    "API connection cap reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = served {
                // Header-read timeouts and clients that hang up land here: routine.
                tracing::debug!(error = %e, "API connection ended");
            }
        });
    }
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest_of_the_controller() {
        assert_eq!(Limits::for_descriptors(1_048_576).max_connections, 4096);
        assert_eq!(Limits::for_descriptors(20_000).max_connections, 4096);
        assert_eq!(Limits::for_descriptors(1024).max_connections, 768);
        assert_eq!(Limits::for_descriptors(100).max_connections, 64);
    }
}
