//! The proxy listener, one per core: each worker thread runs its own single-threaded
//! tokio runtime with its own listening socket (`SO_REUSEPORT`, so the kernel spreads
//! new connections across them) and its own upstream pool.
//!
//! Why: a call then never changes thread. The app's connection, the proxy phases and
//! the pooled connection to LINE Pay all live on one thread, as in nginx's and
//! pingora's workers; with one shared work-stealing runtime every call woke another
//! thread at least once (the pooled upstream connection's task, the stolen connection
//! task), and those wake-ups and context switches, not the work, were the largest cost
//! in the profile (benches/README.md).
//!
//! Channels with their own `listen`: each worker also holds one socket of each such
//! address and runs an accept loop on it, on the same runtime and pool, so a call on a
//! channel's port stays on one thread too; the connection cap is shared by them all.
//! Each call carries which listener it came on ([`Listener`]), for channel selection.
//!
//! What stays the same: each worker runs the one accept loop ([`super::accept::serve`])
//! with the same rules, a connection cap shared by all of them, the same task tracker
//! (so `Tasks::join` still waits for every connection) and the same drain token; a
//! panic in a worker's loop is a listener panic, which stops the sidecar. The control
//! tasks (admin port, reloader, probes, signals) stay on the main runtime.

use super::accept::{self, AcceptRules, Capacity, Drained};
use super::meter::{CallPhase, Metered, Refusal};
use super::tasks::{Role, Tasks};
use crate::channel::Listener;
use crate::proxy::Proxy;
use crate::server;
use crate::upstream;
use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

/// The kernel's backlog per listening socket (what `tokio::net::TcpListener::bind` uses).
const BACKLOG: i32 = 1024;

/// Binds one listening socket per worker to `address`, all in one `SO_REUSEPORT` group.
///
/// `SO_REUSEPORT` would also let a second sidecar of the same user bind the same port
/// and silently take half the connections; so the address is first bound once without
/// it, which fails as a plain bind does ("address in use") when anything listens there,
/// and, for port 0, picks the port the group then takes.
pub(crate) fn bind(
    address: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let address = {
        let probe = socket(address, false)?;
        probe.bind(&address.into())?;
        probe
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("the bound address is not an IP socket"))?
    };
    (0..workers.max(1))
        .map(|_| {
            let socket = socket(address, true)?;
            socket.bind(&address.into())?;
            socket.listen(BACKLOG)?;
            Ok(socket.into())
        })
        .collect()
}

fn socket(address: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    // As every listener on Unix: a restart may bind while old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    Ok(socket)
}

/// Binds every address (`workers` sockets each, see [`bind`]) and deals them out: one
/// socket of each address per worker, with the listener it is.
pub(crate) fn bind_all(
    addresses: &[(SocketAddr, Listener)],
    workers: usize,
) -> Result<Vec<WorkerSockets>, (SocketAddr, std::io::Error)> {
    let mut per_worker: Vec<WorkerSockets> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    for (address, listener) in addresses {
        let sockets = bind(*address, workers).map_err(|error| (*address, error))?;
        for (worker, socket) in per_worker.iter_mut().zip(sockets) {
            worker.push((socket, listener.clone()));
        }
    }
    Ok(per_worker)
}

/// One worker's listening sockets, each with the listener it is.
pub(crate) type WorkerSockets = Vec<(std::net::TcpListener, Listener)>;

/// Starts one worker thread per entry; the returned future resolves when every
/// worker has drained (after `drain` is cancelled): `None` when a worker's accept loop
/// panicked or its thread could not start.
pub(crate) fn spawn(
    listeners: Vec<WorkerSockets>,
    rules: AcceptRules,
    drain: CancellationToken,
    tasks: Tasks,
    proxy: Arc<ArcSwap<Proxy>>,
) -> impl std::future::Future<Output = Option<Drained>> {
    let permits = Arc::new(Semaphore::new(rules.max_connections));
    let results: Vec<oneshot::Receiver<Option<Drained>>> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            let (sender, receiver) = oneshot::channel();
            let (drain, tasks, proxy, permits) =
                (drain.clone(), tasks.clone(), proxy.clone(), permits.clone());
            let started = std::thread::Builder::new()
                .name(format!("proxy-worker-{index}"))
                .spawn(move || {
                    let drained = run_worker(index, listener, rules, drain, tasks, proxy, permits);
                    let _ = sender.send(drained);
                });
            if let Err(error) = started {
                tracing::error!(%error, worker = index, "cannot start a proxy worker thread");
            }
            receiver
        })
        .collect();
    async move {
        let mut total = Some(Drained::Complete);
        for result in results {
            // A dropped sender: the thread died before it could report.
            total = combine(total, result.await.ok().flatten());
        }
        total
    }
}

/// Two accept loops' (or workers') drains as one: `None` if either failed.
fn combine(total: Option<Drained>, drained: Option<Drained>) -> Option<Drained> {
    match (total, drained) {
        (Some(Drained::Complete), Some(drained)) => Some(drained),
        (
            Some(Drained::DeadlinePassed {
                open_connections: a,
            }),
            Some(drained),
        ) => {
            let b = match drained {
                Drained::Complete => 0,
                Drained::DeadlinePassed { open_connections } => open_connections,
            };
            Some(Drained::DeadlinePassed {
                open_connections: a + b,
            })
        }
        _ => None,
    }
}

fn run_worker(
    index: usize,
    sockets: WorkerSockets,
    rules: AcceptRules,
    drain: CancellationToken,
    tasks: Tasks,
    proxy: Arc<ArcSwap<Proxy>>,
    permits: Arc<Semaphore>,
) -> Option<Drained> {
    upstream::enter_worker(index);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, worker = index, "cannot start a proxy worker's runtime");
            return None;
        }
    };
    let drained = runtime.block_on(async move {
        let mut loops = Vec::new();
        for (socket, tag) in sockets {
            let listener = match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, worker = index, "cannot register the proxy listener");
                    return None;
                }
            };
            let proxy = proxy.clone();
            loops.push(tasks.spawn(
                "proxy listener",
                Role::Listener,
                accept::serve_with_permits(
                    listener,
                    rules,
                    permits.clone(),
                    drain.clone(),
                    tasks.clone(),
                    move |io, capacity, hold| {
                        let phase = Arc::new(CallPhase::default());
                        let io = metered(io, &proxy, phase.clone());
                        let overloaded = capacity == Capacity::Over;
                        let call_started = move || phase.call_started();
                        server::connection(
                            io,
                            overloaded,
                            proxy.clone(),
                            hold,
                            tag.clone(),
                            call_started,
                        )
                    },
                ),
            ));
        }
        let mut total = Some(Drained::Complete);
        for accept_loop in loops {
            total = combine(total, accept_loop.await.ok().flatten());
        }
        total
    });
    // Dropping the runtime drops what is left on it (connections cut at the drain
    // deadline, idle upstream connections), so the task tracker sees them end.
    drop(runtime);
    drained
}

/// The socket with its reads charged to the process's memory budget (`meter`); a head
/// that does not fit gets the proxy's `503 overloaded`.
fn metered(
    io: accept::Socket,
    proxy: &Arc<ArcSwap<Proxy>>,
    phase: Arc<CallPhase>,
) -> TokioIo<Metered> {
    let budget = proxy.load().budget().clone();
    let proxy = proxy.clone();
    let refusal: Refusal = Box::new(move |method| {
        // The snapshot of the moment of the refusal, like any call's.
        let snapshot = proxy.load_full();
        Box::pin(async move { snapshot.refuse_unread_head(method).await })
    });
    TokioIo::new(Metered::new(io.into_inner(), &budget, phase, refusal))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_listens_on_the_same_port() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn an_address_in_use_is_refused_as_by_a_plain_bind() {
        // Another process's listener, even one in its own SO_REUSEPORT group, must make
        // start-up fail rather than share its port.
        let taken = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let address = taken[0].local_addr().unwrap();
        let error = bind(address, 2).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = bind(plain.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    }
}
