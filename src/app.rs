//! The running sidecar: binds the proxy and admin listeners, starts the reloader, the
//! upstream readiness probe and (when configured) the egress-address check, and drains on
//! shutdown.
//!
//! Lifecycle: load → build → check the egress address → bind both listeners → announce →
//! serve until the shutdown
//! future fires → `/readyz` turns not-ready at once → stop accepting → let calls in flight
//! finish up to `shutdown.drain_timeout` → return.

use crate::admin::{self, Readiness};
use crate::config::Config;
use crate::expect_ip::{ExpectIpCheck, EXPECT_IP_RECHECK_INTERVAL};
use crate::limit::Limits;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::{ConfigSource, Reloader};
use crate::server::{self, Drained};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long one readiness probe of the upstream may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{0}")]
    Config(String),
    #[error("{0}")]
    Upstream(String),
    #[error("cannot listen on {address}: {error}")]
    Bind {
        address: SocketAddr,
        error: std::io::Error,
    },
}

/// The addresses a started sidecar is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

/// Builds the proxy for one configuration: what a start and every reload do. On a
/// reload (`previous`), the upstream client is kept when nothing it is built from
/// changed, so a secret rotation does not drop the warm TLS connections to LINE Pay,
/// and the limiters are kept when the limits did not change, so a reload cannot refill
/// every bucket.
pub fn build_proxy(
    config: Config,
    metrics: Arc<Metrics>,
    previous: Option<&Proxy>,
) -> Result<Proxy, String> {
    let upstream = match previous.filter(|p| same_upstream(p.config(), &config)) {
        Some(previous) => previous.upstream().clone(),
        None => Arc::new(build_upstream(&config)?),
    };
    let limits = match previous.filter(|p| p.config().limits == config.limits) {
        Some(previous) => previous.limits().clone(),
        None => Arc::new(
            Limits::new(&config.limits).with_shadow_metric(metrics.rate_limited_shadow.clone()),
        ),
    };
    Ok(Proxy::new(config, upstream, limits, metrics))
}

/// Whether the upstream client built for `old` serves `new` unchanged. A CA file is
/// read when the client is built, so a configured one always means a rebuild.
fn same_upstream(old: &Config, new: &Config) -> bool {
    let connect_timeouts = |config: &Config| {
        let mut timeouts: Vec<Duration> = config
            .allowlist
            .routes()
            .iter()
            .map(|route| route.timeouts.connect)
            .collect();
        timeouts.sort();
        timeouts.dedup();
        timeouts
    };
    // expect_ip is not part of the client (and is restart-only): it is left out.
    old.upstream == new.upstream
        && new.upstream.ca_file.is_none()
        && old.egress.bind_address == new.egress.bind_address
        && old.egress.proxy == new.egress.proxy
        && old.egress.pin == new.egress.pin
        && connect_timeouts(old) == connect_timeouts(new)
}

pub fn build_upstream(config: &Config) -> Result<Upstream, String> {
    let connect_timeouts = config
        .allowlist
        .routes()
        .iter()
        .map(|route| route.timeouts.connect);
    Upstream::new(&config.upstream, &config.egress, connect_timeouts)
        .map_err(|error| format!("cannot set up the upstream client: {error}"))
}

/// Runs the sidecar until `shutdown` completes and calls in flight have drained.
pub async fn run(
    source: ConfigSource,
    shutdown: impl Future<Output = ()>,
) -> Result<Drained, StartError> {
    let config = source
        .load()
        .map_err(|error| StartError::Config(error.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let listen = config.listen;
    let admin_listen = config.admin.listen;
    let drain_timeout = config.shutdown.drain_timeout;
    let secret_source = config.credentials.secret_source.clone();
    let proxy = build_proxy(config, metrics.clone(), None).map_err(StartError::Upstream)?;
    // egress.expect_ip: ask the echo service once before serving (bounded by its
    // timeout); a mismatch is logged loudly and fails /readyz, never the start.
    let expect_ip = ExpectIpCheck::at_start_up(&proxy.config().egress, &proxy.config().upstream)
        .await
        .map_err(|error| StartError::Upstream(format!("egress.expect_ip: {error}")))?;

    let listener = bind(listen).await?;
    let admin_listener = bind(admin_listen).await?;
    let bound = Bound {
        proxy: local_addr(&listener, listen),
        admin: local_addr(&admin_listener, admin_listen),
    };
    let upstream_base = proxy.upstream().base().clone();
    let routes = proxy.config().allowlist.routes().len();
    let proxy = Arc::new(ArcSwap::from_pointee(proxy));
    let readiness = Arc::new(Readiness::default());

    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        readiness.clone(),
    ));
    let probe_task = tokio::spawn(probe_upstream(
        proxy.clone(),
        readiness.clone(),
        metrics.clone(),
    ));
    let expect_ip_task = expect_ip.map(|check| {
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        tokio::spawn(check.watch(EXPECT_IP_RECHECK_INTERVAL, move |result| {
            // Only a mismatch is an Err here (see EgressStatus::readiness).
            metrics.expect_ip_mismatch.set(i64::from(result.is_err()));
            readiness.set_check("egress_ip", result)
        }))
    });
    let reloader = Arc::new(Reloader::new(
        source,
        proxy.clone(),
        metrics.clone(),
        Box::new(move |config, previous| build_proxy(config, metrics.clone(), Some(previous))),
    ));
    let reload_task = tokio::spawn(reloader.watch());

    tracing::info!(
        listen = %bound.proxy,
        admin_listen = %bound.admin,
        upstream = %upstream_base,
        routes,
        secret_source = %secret_source,
        "linepay-sidecar started"
    );
    // Tests and scripts wait for this exact line to learn the bound port.
    announce(&format!(
        "linepay-sidecar listening on http://{} (upstream {upstream_base})",
        bound.proxy
    ));
    announce(&format!(
        "linepay-sidecar admin on http://{} (/metrics /healthz /readyz)",
        bound.admin
    ));

    let draining = readiness.clone();
    let shutdown = async move {
        shutdown.await;
        draining.start_draining();
        tracing::info!("shutdown requested: no new connections, finishing calls in flight");
    };
    let drained = server::serve(listener, proxy, shutdown, drain_timeout).await;
    match &drained {
        Drained::Complete => tracing::info!("drained: every call in flight finished"),
        Drained::DeadlinePassed { open_connections } => tracing::warn!(
            open_connections,
            "drain deadline passed; remaining calls are cut"
        ),
    }
    reload_task.abort();
    probe_task.abort();
    if let Some(task) = expect_ip_task {
        task.abort();
    }
    admin_task.abort();
    Ok(drained)
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|error| StartError::Bind { address, error })
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// Opens a connection to the upstream every `admin.probe_interval` (through the same
/// egress path as calls, without sending any request) and records whether it worked,
/// so `/readyz` answers from memory.
async fn probe_upstream(
    proxy: Arc<ArcSwap<Proxy>>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
) {
    loop {
        let snapshot = proxy.load_full();
        let result = snapshot
            .upstream()
            .probe(PROBE_TIMEOUT)
            .await
            .map_err(|error| format!("{} ({})", error.code(), snapshot.upstream().base()));
        if let Err(reason) = &result {
            tracing::warn!(%reason, "upstream probe failed");
        }
        metrics.upstream_up.set(i64::from(result.is_ok()));
        let admin = &snapshot.config().admin;
        // Logged either way; counted against readiness only when configured so.
        readiness.set_upstream(if admin.ready_requires_upstream {
            result
        } else {
            Ok(())
        });
        let interval = admin.probe_interval;
        drop(snapshot);
        tokio::time::sleep(interval).await;
    }
}

/// One line on stdout, flushed: what scripts and tests wait for.
pub fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the sidecar.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
