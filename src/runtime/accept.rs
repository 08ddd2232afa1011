//! The one accept loop, shared by the proxy and the admin listener: a cap on concurrent
//! connections, one tracked task per connection, and a drain on stop.
//!
//! What a connection serves is passed in (a function from the accepted socket to a
//! hyper connection), so the proxy and the admin port differ only in that function and
//! in what happens past the cap. On stop the listener is closed at once (new
//! connections are refused, not queued in the kernel's backlog), idle keep-alive
//! connections are closed, requests in flight finish up to the drain deadline, and
//! whatever is still open then is told to stop and dropped, except a connection whose
//! money call is in flight (it holds a [`Hold`]): that one finishes its call, bounded
//! by `held_limit` (the longest read timeout plus the reconciliation).
//!
//!
//! Every connection's socket has a write deadline ([`WriteDeadline`]): a peer that stops
//! reading its answers is cut after `write_timeout` instead of holding its slot. A
//! listener may also cap the connections of one peer address (`max_per_peer`), so that
//! one client cannot take every slot (the admin port, where probes must get through).

use super::deadline::WriteDeadline;
use super::tasks::{Role, Tasks};
use crate::journal::{Hold, Holds};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long to wait after a failed accept (out of file descriptors and the like)
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One listener's rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptRules {
    /// For logs and task names: `proxy` or `admin`.
    pub(crate) name: &'static str,
    pub(crate) max_connections: usize,
    pub(crate) when_full: WhenFull,
    /// How long calls in flight may finish after the stop.
    pub(crate) drain_timeout: Duration,
    /// How long a held connection (a money call in flight) may run past the deadline.
    pub(crate) held_limit: Duration,
    /// How long a write to the peer may stay blocked before the connection is cut.
    pub(crate) write_timeout: Duration,
    /// Connections from one peer address at most (`None`: no such cap). Past it, a
    /// connection is closed at once, unread.
    pub(crate) max_per_peer: Option<usize>,
}

/// The sockets the connection function is handed.
pub(crate) type Socket = TokioIo<WriteDeadline<TcpStream>>;

/// What a connection past the cap gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Closed at once, unread, so it cannot hold a file descriptor.
    Close,
    /// Served as [`Capacity::Over`]: it can answer once (e.g. `503 overloaded`) and
    /// close, rather than wait unseen.
    Answer,
}

/// Whether an accepted connection is within the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capacity {
    Within,
    Over,
}

/// How a listener ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every call in flight finished.
    Complete,
    /// The drain deadline passed with this many connections still open.
    DeadlinePassed { open_connections: usize },
}

/// Accepts until `stop` is cancelled, then drains for at most `rules.drain_timeout`.
pub(crate) async fn serve<C>(
    listener: TcpListener,
    rules: AcceptRules,
    stop: CancellationToken,
    tasks: Tasks,
    connection: impl Fn(Socket, Capacity, Hold) -> C,
) -> Drained
where
    C: GracefulConnection + Send + 'static,
    C::Error: Display + Send,
{
    let permits = Arc::new(Semaphore::new(rules.max_connections));
    serve_with_permits(listener, rules, permits, stop, tasks, connection).await
}

/// [`serve`] with a connection cap shared with other accept loops (one per proxy
/// worker): `permits` holds `rules.max_connections` permits for all of them together.
pub(crate) async fn serve_with_permits<C>(
    listener: TcpListener,
    rules: AcceptRules,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: Tasks,
    connection: impl Fn(Socket, Capacity, Hold) -> C,
) -> Drained
where
    C: GracefulConnection + Send + 'static,
    C::Error: Display + Send,
{
    let name = rules.name;
    let graceful = GracefulShutdown::new();
    // Cancelled when the drain deadline passes: connections still open are dropped.
    let cut = CancellationToken::new();
    let holds = Holds::default();
    let peers = PeerCounts::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Some(peer_slot) = peers.enter(peer.ip(), rules.max_per_peer) else {
            tracing::debug!(listener = name, %peer, "connection closed: too many from this peer");
            drop(stream);
            continue;
        };
        let permit = permits.clone().try_acquire_owned().ok();
        let capacity = match (&permit, rules.when_full) {
            (Some(_), _) => Capacity::Within,
            (None, WhenFull::Answer) => Capacity::Over,
            (None, WhenFull::Close) => {
                drop(stream);
                continue;
            }
        };
        // An answer is written at once (head and body in one `writev`): no Nagle delay
        // on the peer's side of a keep-alive connection (the upstream side sets it too).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(listener = name, %error, "cannot set TCP_NODELAY");
        }
        let hold = holds.connection();
        let socket = TokioIo::new(WriteDeadline::new(stream, rules.write_timeout));
        let connection = graceful.watch(connection(socket, capacity, hold.clone()));
        let cut = cut.clone();
        let held_limit = rules.held_limit;
        tasks.spawn("connection", Role::Worker, async move {
            let report = |result: Result<(), C::Error>| if let Err(error) = result {
                tracing::debug!(listener = name, %peer, %error, "connection ended with an error");
            };
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = &mut connection => report(result),
                () = cut.cancelled() => if hold.busy() {
                    // A money call in flight is never cut: it ends with its own timeout.
                    if let Ok(result) = tokio::time::timeout(held_limit, connection).await {
                        report(result);
                    }
                },
            }
            drop(permit);
            drop(peer_slot);
        });
    }

    // Closing the listener now makes new connections fail fast instead of queueing.
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        listener = name,
        open_connections = open,
        drain_timeout_s = rules.drain_timeout.as_secs_f64(),
        "draining"
    );
    let deadline = tokio::time::Instant::now() + rules.drain_timeout;
    let mut shutdown = std::pin::pin!(graceful.shutdown());
    match tokio::time::timeout_at(deadline, &mut shutdown).await {
        Ok(()) => Drained::Complete,
        Err(_) => {
            let held = holds.count();
            cut.cancel();
            if held > 0 {
                tracing::info!(
                    listener = name,
                    money_calls = held,
                    "drain deadline passed; money calls in flight finish first"
                );
                let _ = tokio::time::timeout(rules.held_limit, &mut shutdown).await;
            }
            Drained::DeadlinePassed {
                open_connections: open,
            }
        }
    }
}

/// Open connections per peer address, for `max_per_peer`.
#[derive(Default, Clone)]
struct PeerCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl PeerCounts {
    /// A slot for one more connection from `peer`, or `None` past `max`.
    fn enter(&self, peer: IpAddr, max: Option<usize>) -> Option<PeerSlot> {
        let Some(max) = max else {
            return Some(PeerSlot(None));
        };
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(peer).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot(Some((self.clone(), peer))))
    }
}

/// Held for the life of one connection; frees its peer's slot on drop.
struct PeerSlot(Option<(PeerCounts, IpAddr)>);

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some((counts, peer)) = self.0.take() {
            let mut counts = counts.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
