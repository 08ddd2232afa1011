//! The running sidecar: its lifecycle, its tasks and its signals.
//!
//! Lifecycle: install the signal handlers → load → build → check the egress address →
//! bind both listeners → announce (and tell systemd `READY=1`) → serve until
//! `SIGTERM`/`SIGINT` (or until a listener task dies) → `/readyz` turns not-ready at once
//! (systemd hears `STOPPING=1`) → stop accepting → let calls in flight finish up to
//! `shutdown.drain_timeout` → tell every other task to stop → join them all → return.
//!
//! The pieces, one idea per file:
//! - `signals`: `SIGTERM`, `SIGINT` and `SIGHUP`, installed before any start-up work;
//! - `tasks`: one cancellation token and task tracker; every task is told to stop and
//!   joined, and a task that panics is noticed;
//! - `accept`: the one accept loop (connection cap, drain) under the proxy and the
//!   admin listener; what a connection serves is `server`'s or `admin`'s;
//! - `workers`: the proxy listener, one per core: a thread with its own single-threaded
//!   runtime, its own `SO_REUSEPORT` socket and its own upstream pool each, so a call
//!   never changes thread; the control tasks stay on the main runtime;
//! - `snapshot`: builds the [`Proxy`] snapshot and decides what a reload may reuse, by
//!   comparing typed settings; the keys that change only on restart;
//! - `reload`: the reloader (`SIGHUP` and watched files);
//! - `probe`: the upstream probe (the `upstream_up` gauge; readiness only if asked);
//! - `preflight`: whether this host holds `egress.bind_address`;
//! - `notify`: the systemd readiness protocol (`READY=1`, `RELOADING=1`, `STOPPING=1`);
//! - `fds`: the file-descriptor limit raised to what the connection caps need;
//! - `deadline`: the sockets' write deadline (a peer that stops reading is cut);
//! - `meter`: a proxy connection's read buffer charged to the memory budget as a large
//!   head makes it grow; a head that does not fit is refused before it is read.

mod accept;
mod deadline;
mod fds;
mod meter;
mod notify;
mod preflight;
mod probe;
mod reload;
mod signals;
mod snapshot;
mod tasks;
mod workers;

pub use self::accept::Drained;
pub use self::fds::FdLimitError;
pub use self::preflight::PreflightError;
pub use self::signals::shutdown_signal;
pub use self::snapshot::{check_upstream, BuildError};
pub use crate::upstream::UpstreamBuildError;

use self::accept::{AcceptRules, WhenFull};
use self::notify::Notifier;
use self::reload::Reloader;
use self::signals::{Hangups, Signals, Termination};
use self::snapshot::{build_proxy, RestartOnly};
use self::tasks::{Role, Tasks};
use crate::admin::{
    self, Readiness, ADMIN_WRITE_TIMEOUT, MAX_ADMIN_CONNECTIONS, MAX_ADMIN_CONNECTIONS_PER_PEER,
};
use crate::channel::Listener;
use crate::config::ConfigError;
use crate::expect_ip::{ExpectIpCheck, EXPECT_IP_RECHECK_INTERVAL};
use crate::journal::{Checker, Claims, Desk, SharedGuards, StoreError};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::ConfigSource;
use crate::state::{MoneyFallback, SharedState, StateConfig};
use crate::upstream;
use arc_swap::ArcSwap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the admin listener's connections may take to finish after the proxy has
/// drained: probes and scrapes answer at once.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the tasks may take to stop once told to (each stops at its next waiting
/// point, so this is a safety bound, not a wait).
const JOIN_LIMIT: Duration = Duration::from_secs(10);

/// Why the sidecar did not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("invalid configuration:\n{0}")]
    Config(ConfigError),
    #[error("{0}")]
    FdLimit(FdLimitError),
    #[error("{0}")]
    Build(BuildError),
    #[error("egress.expect_ip: {0}")]
    ExpectIp(UpstreamBuildError),
    #[error("cannot listen on {address}: {error}")]
    Bind {
        address: SocketAddr,
        error: std::io::Error,
    },
    #[error(
        "cannot open the call journal (journal.path; journal.enabled: false turns it off): {0}"
    )]
    Journal(StoreError),
    #[error("{0} (state.redis)")]
    State(String),
    #[error("the {task} task panicked and the sidecar stopped (its log line says why)")]
    TaskPanicked { task: &'static str },
}

/// Runs the sidecar until `SIGTERM` or `SIGINT` and calls in flight have drained.
pub async fn run(source: ConfigSource) -> Result<Drained, RunError> {
    // Before anything else: until a handler is installed, a SIGHUP kills the process.
    let Signals {
        mut termination,
        hangups,
    } = Signals::install().map_err(RunError::Signals)?;
    let started = tokio::select! {
        started = start(source) => started?,
        () = termination.recv() => {
            tracing::info!("shutdown requested during start-up: nothing was serving yet");
            return Ok(Drained::Complete);
        }
    };
    serve(started, termination, hangups).await
}

/// A sidecar ready to serve: built, checked and bound, with no task running yet.
struct Started {
    source: ConfigSource,
    metrics: Arc<Metrics>,
    proxy: Proxy,
    desk: Arc<Desk>,
    /// The shared state (local, or the Redis client): started before the proxy, so its
    /// connection lives on this main runtime.
    state: SharedState,
    fixed: RestartOnly,
    expect_ip: Option<ExpectIpCheck>,
    /// One entry per proxy worker: its socket of the shared `listen`, then one of each
    /// channel's own `listen`.
    listeners: Vec<workers::WorkerSockets>,
    admin_listener: TcpListener,
}

/// With `state.backend: redis`, the desk's idempotency keys and transaction guards are
/// shared with the channel's other sidecars (docs/money-calls.md).
fn share_money_guards(desk: Desk, state: &SharedState, config: &StateConfig) -> Desk {
    match (state.redis(), config) {
        (Some(redis), StateConfig::Redis(settings)) => desk.share(SharedGuards {
            claims: Arc::new(Claims::new(redis.clone(), settings.answer_ttl)),
            fallback_local: settings.money_fallback == MoneyFallback::Local,
        }),
        _ => desk,
    }
}

async fn start(source: ConfigSource) -> Result<Started, RunError> {
    let config = source.load().map_err(RunError::Config)?;
    fds::ensure(&config).map_err(RunError::FdLimit)?;
    let metrics = Arc::new(Metrics::new());
    let fixed = RestartOnly::from_config(&config);
    let desk = Desk::open(&config.journal, &config.allowlist).map_err(RunError::Journal)?;
    let state = SharedState::start(
        &config.state,
        config.credentials.channel_id.to_str().unwrap_or_default(),
        metrics.state_metrics(),
    )
    .map_err(|error| RunError::State(error.to_string()))?;
    let desk = Arc::new(share_money_guards(desk, &state, &config.state));
    let proxy = build_proxy(config, metrics.clone(), desk.clone(), &state, None)
        .map_err(RunError::Build)?;
    // egress.expect_ip: ask the echo service once before serving (bounded by its
    // timeout); a mismatch is logged loudly and fails /readyz, never the start.
    let expect_ip = ExpectIpCheck::at_start_up(&proxy.config().egress, &proxy.config().upstream)
        .await
        .map_err(RunError::ExpectIp)?;
    let mut addresses = vec![(fixed.listen, Listener(None))];
    for channel in &proxy.config().channels {
        if let Some(address) = channel.listen {
            addresses.push((address, Listener(Some(channel.name.as_str().into()))));
        }
    }
    let listeners = workers::bind_all(&addresses, upstream::worker_count())
        .map_err(|(address, error)| RunError::Bind { address, error })?;
    let admin_listener = bind(fixed.admin_listen).await?;
    Ok(Started {
        source,
        metrics,
        proxy,
        desk,
        state,
        fixed,
        expect_ip,
        listeners,
        admin_listener,
    })
}

async fn serve(
    started: Started,
    mut termination: Termination,
    hangups: Hangups,
) -> Result<Drained, RunError> {
    let Started {
        source,
        metrics,
        proxy,
        desk,
        state,
        fixed,
        expect_ip,
        listeners,
        admin_listener,
    } = started;
    let proxy_addr = listeners
        .first()
        .and_then(|sockets| sockets.first())
        .and_then(|(listener, _)| listener.local_addr().ok())
        .unwrap_or(fixed.listen);
    // Each channel's own port as bound (port 0 becomes a real one), for the announce.
    let channel_ports: Vec<(String, SocketAddr)> = listeners
        .first()
        .into_iter()
        .flatten()
        .filter_map(|(listener, tag)| {
            let name = tag.0.as_deref()?;
            Some((name.to_owned(), listener.local_addr().ok()?))
        })
        .collect();
    let workers = listeners.len();
    let admin_addr = local_addr(&admin_listener, fixed.admin_listen);
    let upstream_base = proxy.upstream().base().clone();
    let routes = proxy.config().allowlist.routes().len();
    let apis = proxy.config().allowlist.family_names();
    let secret_source = proxy.config().credentials.secret_source.clone();
    let requires_upstream = proxy.config().admin.ready_requires_upstream;
    let held_limit = held_limit(proxy.config());
    let proxy = Arc::new(ArcSwap::from_pointee(proxy));
    let readiness = Arc::new(Readiness::default());
    readiness.set_requires_upstream(requires_upstream);
    let notifier = Arc::new(Notifier::from_env());

    let tasks = Tasks::new();
    let stop = tasks.stop_token();
    // The proxy listener stops first (on the signal); everything else, the admin
    // listener included, keeps going until it has drained, so /readyz says "draining".
    let drain = CancellationToken::new();
    // One accept loop per worker thread, each on its own runtime (see `workers`).
    let proxy_listener = {
        let readiness = readiness.clone();
        let workers = workers::spawn(
            listeners,
            AcceptRules {
                name: "proxy",
                max_connections: fixed.max_connections,
                when_full: WhenFull::Answer,
                drain_timeout: fixed.drain_timeout,
                held_limit,
                write_timeout: fixed.write_timeout,
                // The app is on loopback: every connection has the same peer.
                max_per_peer: None,
            },
            drain.clone(),
            tasks.clone(),
            proxy.clone(),
        );
        // Bound, so connections already queue in the backlogs: listening from here
        // until every worker's accept loop has returned. (A worker that dies reports
        // `None`, which the drain below reports.)
        readiness.set_listening(true);
        tasks.spawn("proxy listener", Role::Listener, async move {
            let drained = workers.await;
            readiness.set_listening(false);
            drained
        })
    };
    {
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        let rules = AcceptRules {
            name: "admin",
            max_connections: MAX_ADMIN_CONNECTIONS,
            when_full: WhenFull::Close,
            drain_timeout: ADMIN_DRAIN_TIMEOUT,
            held_limit: ADMIN_DRAIN_TIMEOUT,
            write_timeout: ADMIN_WRITE_TIMEOUT,
            max_per_peer: Some(MAX_ADMIN_CONNECTIONS_PER_PEER),
        };
        let calls = Arc::new(admin::Calls::new(
            desk.store().map(|store| store.path().to_owned()),
            fixed.admin_calls,
        ));
        tasks.spawn(
            "admin listener",
            Role::Listener,
            accept::serve(
                admin_listener,
                rules,
                stop.clone(),
                tasks.clone(),
                move |io: accept::Socket, _, _| {
                    let peer = io.inner().get_ref().peer_addr().ok().map(|peer| peer.ip());
                    admin::connection(io, peer, metrics.clone(), readiness.clone(), calls.clone())
                },
            ),
        );
    }
    tasks.spawn(
        "upstream probe",
        Role::Worker,
        probe::probe_upstream(
            proxy.clone(),
            readiness.clone(),
            metrics.clone(),
            stop.clone(),
        ),
    );
    if let Some(check) = expect_ip {
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        tasks.spawn(
            "egress.expect_ip check",
            Role::Worker,
            check.watch(
                EXPECT_IP_RECHECK_INTERVAL,
                move |result| {
                    // Only a mismatch is an Err here (see EgressStatus::readiness).
                    metrics.expect_ip_mismatch.set(i64::from(result.is_err()));
                    readiness.set_check("egress_ip", result)
                },
                stop.clone(),
            ),
        );
    }
    {
        // Calls a stop interrupted (an intent without an outcome): ask LINE Pay now.
        // Each row is asked about as the channel it was recorded under (its secret, its
        // upstream), never as the current default.
        let snapshot = proxy.load_full();
        let desk = desk.clone();
        tasks.spawn("journal reconciliation", Role::Worker, async move {
            let metrics = snapshot.metrics().clone();
            let budget = snapshot.budget().clone();
            desk.reconcile_interrupted(
                budget,
                |channel_id, query, signing| snapshot.signed_get_for(channel_id, query, signing),
                metrics,
            )
            .await;
        });
    }
    tasks.spawn(
        "journal write probe",
        Role::Worker,
        probe::probe_journal(
            desk.clone(),
            readiness.clone(),
            metrics.clone(),
            stop.clone(),
        ),
    );
    tasks.spawn(
        "journal pruning",
        Role::Worker,
        desk.clone()
            .prune_periodically(metrics.clone(), stop.clone()),
    );
    if desk.claims().is_some() {
        // Claims of pods that are gone: one pod at a time checks and records them.
        let proxy = proxy.clone();
        tasks.spawn(
            "money-call sweeper",
            Role::Worker,
            desk.clone().sweep_periodically(
                move || {
                    let snapshot = proxy.load_full();
                    Checker {
                        upstream: snapshot.upstream().clone(),
                        budget: snapshot.budget().clone(),
                        // Shared state serves one channel per sidecar (config/state.rs
                        // refuses more), so the claims' channel is the snapshot's one.
                        ask: Arc::new(move |query, signing| {
                            let channel = snapshot.channels().first()?;
                            snapshot.signed_get(channel, query, signing)
                        }),
                    }
                },
                metrics.clone(),
                stop.clone(),
            ),
        );
    }
    let reloader = Arc::new(Reloader::new(
        source,
        proxy.clone(),
        metrics.clone(),
        notifier.clone(),
        state.clone(),
    ));
    tasks.spawn(
        "reloader",
        Role::Worker,
        reloader.watch(hangups, stop.clone()),
    );

    tracing::info!(
        state = state.name(),
        listen = %proxy_addr,
        admin_listen = %admin_addr,
        upstream = %upstream_base,
        routes,
        apis,
        workers,
        secret_source = %secret_source,
        "linepay-sidecar started"
    );
    for channel in &proxy.load().config().channels {
        let own = channel_ports
            .iter()
            .find(|(name, _)| *name == channel.name)
            .map(|(_, address)| *address);
        tracing::info!(
            channel = %channel.name,
            channel_id = channel.credentials.channel_id.to_str().unwrap_or("-"),
            environment = channel.environment(),
            upstream = %channel.upstream.url,
            apis = channel.allowlist.family_names(),
            listen = own.map(|address| address.to_string()),
            secret_source = %channel.credentials.secret_source,
            "channel"
        );
    }
    // A channel's own port, before the admin line (tests read up to that one).
    for (name, address) in &channel_ports {
        announce(&format!(
            "linepay-sidecar channel {name} listening on http://{address}"
        ));
    }
    // Tests and scripts wait for this exact line to learn the bound port.
    announce(&format!(
        "linepay-sidecar listening on http://{proxy_addr} (upstream {upstream_base})"
    ));
    announce(&format!(
        "linepay-sidecar admin on http://{admin_addr} (/metrics /healthz /readyz /calls)"
    ));
    // Both listeners are bound (connections queue in their backlogs until the accept
    // loops, already spawned, take them): a unit ordered After= this one may call now.
    notifier.ready(&format!("serving on {proxy_addr}, admin on {admin_addr}"));

    tokio::select! {
        () = termination.recv() => {
            tracing::info!("shutdown requested: no new connections, finishing calls in flight");
        }
        () = tasks.failed() => {}
    }
    readiness.start_draining();
    notifier.stopping();
    drain.cancel();
    // `None`: a proxy worker's listener panicked (already logged; reported below).
    let drained = proxy_listener.await.ok().flatten().flatten();
    match &drained {
        Some(Drained::Complete) => tracing::info!("drained: every call in flight finished"),
        Some(Drained::DeadlinePassed { open_connections }) => tracing::warn!(
            open_connections,
            "drain deadline passed; remaining calls are cut"
        ),
        None => {}
    }
    // Money calls whose app hung up run on in their own tasks: they finish first.
    if !desk.settle(held_limit).await {
        tracing::error!("money calls still running at exit; the next start reconciles them");
    }
    tasks.join(JOIN_LIMIT).await;
    match (tasks.failure(), drained) {
        (Some(task), _) => Err(RunError::TaskPanicked { task }),
        (None, Some(drained)) => Ok(drained),
        (None, None) => Err(RunError::TaskPanicked {
            task: "proxy listener",
        }),
    }
}

/// How long a money call may hold a connection past the drain deadline: the longest
/// read timeout of the allowlist, the reconciliation, and a margin to answer.
fn held_limit(config: &crate::config::Config) -> Duration {
    let longest_read = config
        .allowlist
        .routes()
        .iter()
        .map(|route| route.timeouts.connect + route.timeouts.read)
        .max()
        .unwrap_or_default();
    longest_read + config.journal.reconcile_timeout + Duration::from_secs(5)
}

async fn bind(address: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(address)
        .await
        .map_err(|error| RunError::Bind { address, error })
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// One line on stdout, flushed: what scripts and tests wait for.
pub fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the sidecar.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
