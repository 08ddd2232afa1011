//! The running sidecar: its lifecycle, its tasks and its signals.
//!
//! Lifecycle: install the signal handlers → load → build → check the egress address →
//! bind both listeners → announce → serve until `SIGTERM`/`SIGINT` (or until a listener
//! task dies) → `/readyz` turns not-ready at once → stop accepting → let calls in flight
//! finish up to `shutdown.drain_timeout` → tell every other task to stop → join them all
//! → return.
//!
//! The pieces, one idea per file:
//! - `signals`: `SIGTERM`, `SIGINT` and `SIGHUP`, installed before any start-up work;
//! - `tasks`: one cancellation token and task tracker; every task is told to stop and
//!   joined, and a task that panics is noticed;
//! - `accept`: the one accept loop (connection cap, drain) under the proxy and the
//!   admin listener; what a connection serves is `server`'s or `admin`'s;
//! - `snapshot`: builds the [`Proxy`] snapshot and decides what a reload may reuse, by
//!   comparing typed settings; the keys that change only on restart;
//! - `reload`: the reloader (`SIGHUP` and watched files);
//! - `probe`: the upstream readiness probe;
//! - `preflight`: whether this host holds `egress.bind_address`;
//! - `fds`: the file-descriptor limit raised to what the connection caps need;
//! - `deadline`: the sockets' write deadline (a peer that stops reading is cut).

mod accept;
mod deadline;
mod fds;
mod preflight;
mod probe;
mod reload;
mod signals;
mod snapshot;
mod tasks;

pub(crate) use self::accept::Capacity;
pub use self::accept::Drained;
pub use self::fds::FdLimitError;
pub use self::preflight::PreflightError;
pub use self::signals::shutdown_signal;
pub use self::snapshot::{check_upstream, BuildError};

use self::accept::{AcceptRules, WhenFull};
use self::reload::Reloader;
use self::signals::{Hangups, Signals, Termination};
use self::snapshot::{build_proxy, RestartOnly};
use self::tasks::{Role, Tasks};
use crate::admin::{
    self, Readiness, ADMIN_WRITE_TIMEOUT, MAX_ADMIN_CONNECTIONS, MAX_ADMIN_CONNECTIONS_PER_PEER,
};
use crate::config::ConfigError;
use crate::expect_ip::{ExpectIpCheck, EXPECT_IP_RECHECK_INTERVAL};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::ConfigSource;
use crate::server;
use crate::upstream::UpstreamBuildError;
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
    fixed: RestartOnly,
    expect_ip: Option<ExpectIpCheck>,
    listener: TcpListener,
    admin_listener: TcpListener,
}

async fn start(source: ConfigSource) -> Result<Started, RunError> {
    let config = source.load().map_err(RunError::Config)?;
    fds::ensure(&config).map_err(RunError::FdLimit)?;
    let metrics = Arc::new(Metrics::new());
    let fixed = RestartOnly::from_config(&config);
    let proxy = build_proxy(config, metrics.clone(), None).map_err(RunError::Build)?;
    // egress.expect_ip: ask the echo service once before serving (bounded by its
    // timeout); a mismatch is logged loudly and fails /readyz, never the start.
    let expect_ip = ExpectIpCheck::at_start_up(&proxy.config().egress, &proxy.config().upstream)
        .await
        .map_err(RunError::ExpectIp)?;
    let listener = bind(fixed.listen).await?;
    let admin_listener = bind(fixed.admin_listen).await?;
    Ok(Started {
        source,
        metrics,
        proxy,
        fixed,
        expect_ip,
        listener,
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
        fixed,
        expect_ip,
        listener,
        admin_listener,
    } = started;
    let proxy_addr = local_addr(&listener, fixed.listen);
    let admin_addr = local_addr(&admin_listener, fixed.admin_listen);
    let upstream_base = proxy.upstream().base().clone();
    let routes = proxy.config().allowlist.routes().len();
    let secret_source = proxy.config().credentials.secret_source.clone();
    let proxy = Arc::new(ArcSwap::from_pointee(proxy));
    let readiness = Arc::new(Readiness::default());

    let tasks = Tasks::new();
    let stop = tasks.stop_token();
    // The proxy listener stops first (on the signal); everything else, the admin
    // listener included, keeps going until it has drained, so /readyz says "draining".
    let drain = CancellationToken::new();
    let proxy_listener = {
        let proxy = proxy.clone();
        let rules = AcceptRules {
            name: "proxy",
            max_connections: fixed.max_connections,
            when_full: WhenFull::Answer,
            drain_timeout: fixed.drain_timeout,
            write_timeout: fixed.write_timeout,
            // The app is on loopback: every connection has the same peer.
            max_per_peer: None,
        };
        tasks.spawn(
            "proxy listener",
            Role::Listener,
            accept::serve(
                listener,
                rules,
                drain.clone(),
                tasks.clone(),
                move |io, capacity| {
                    server::connection(io, capacity == Capacity::Over, proxy.clone())
                },
            ),
        )
    };
    {
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        let rules = AcceptRules {
            name: "admin",
            max_connections: MAX_ADMIN_CONNECTIONS,
            when_full: WhenFull::Close,
            drain_timeout: ADMIN_DRAIN_TIMEOUT,
            write_timeout: ADMIN_WRITE_TIMEOUT,
            max_per_peer: Some(MAX_ADMIN_CONNECTIONS_PER_PEER),
        };
        tasks.spawn(
            "admin listener",
            Role::Listener,
            accept::serve(
                admin_listener,
                rules,
                stop.clone(),
                tasks.clone(),
                move |io, _| admin::connection(io, metrics.clone(), readiness.clone()),
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
    let reloader = Arc::new(Reloader::new(source, proxy.clone(), metrics.clone()));
    tasks.spawn(
        "reloader",
        Role::Worker,
        reloader.watch(hangups, stop.clone()),
    );

    tracing::info!(
        listen = %proxy_addr,
        admin_listen = %admin_addr,
        upstream = %upstream_base,
        routes,
        secret_source = %secret_source,
        "linepay-sidecar started"
    );
    // Tests and scripts wait for this exact line to learn the bound port.
    announce(&format!(
        "linepay-sidecar listening on http://{proxy_addr} (upstream {upstream_base})"
    ));
    announce(&format!(
        "linepay-sidecar admin on http://{admin_addr} (/metrics /healthz /readyz)"
    ));

    tokio::select! {
        () = termination.recv() => {
            tracing::info!("shutdown requested: no new connections, finishing calls in flight");
        }
        () = tasks.failed() => {}
    }
    readiness.start_draining();
    drain.cancel();
    // `None`: the proxy listener panicked (already logged; reported below).
    let drained = proxy_listener.await.ok().flatten();
    match &drained {
        Some(Drained::Complete) => tracing::info!("drained: every call in flight finished"),
        Some(Drained::DeadlinePassed { open_connections }) => tracing::warn!(
            open_connections,
            "drain deadline passed; remaining calls are cut"
        ),
        None => {}
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
