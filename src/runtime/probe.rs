//! The upstream probe: opens a connection to the upstream every `admin.probe_interval`
//! (through the same egress path as calls, without sending any request) and records
//! whether it worked in the `linepay_sidecar_upstream_up` gauge, and for `/readyz` when
//! `admin.ready_requires_upstream` asks for it (answered from memory).

use crate::admin::Readiness;
use crate::error::ProxyError;
use crate::journal::Desk;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one readiness probe of the upstream may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes until `stop` is cancelled (a probe in progress is dropped: it is a question,
/// not work).
pub(crate) async fn probe_upstream(
    proxy: Arc<ArcSwap<Proxy>>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let snapshot = proxy.load_full();
        let result = tokio::select! {
            result = snapshot.upstream().probe(PROBE_TIMEOUT) => result,
            () = stop.cancelled() => return,
        };
        let result = result.map_err(|error| {
            format!(
                "{} ({})",
                ProxyError::from(error).code(),
                snapshot.upstream().base()
            )
        });
        if let Err(reason) = &result {
            tracing::warn!(%reason, "upstream probe failed");
        }
        metrics.upstream_up.set(i64::from(result.is_ok()));
        let admin = &snapshot.config().admin;
        // Kept either way; counted against readiness only when configured so (a reload
        // may turn that on or off: it applies from this probe).
        readiness.set_requires_upstream(admin.ready_requires_upstream);
        readiness.set_upstream(result);
        let interval = admin.probe_interval;
        drop(snapshot);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// How often the journal's write probe runs.
pub(crate) const JOURNAL_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Writes one small row to the journal every [`JOURNAL_PROBE_INTERVAL`] until `stop`:
/// while that fails (a full or read-only disk, a file someone else holds locked, a file
/// deleted or replaced since the start: see `Store::record_intent`), every
/// money call would be refused (`503 journal_unavailable`), so `/readyz` fails with
/// `journal: cannot be written (…)`, and turns ready again with the first write that
/// works. Nothing to do when the journal is off.
pub(crate) async fn probe_journal(
    desk: Arc<Desk>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut was_ok = true;
    loop {
        let result = tokio::select! {
            result = desk.probe_journal() => result,
            () = stop.cancelled() => return,
        };
        let Some(result) = result else { return };
        match (&result, was_ok) {
            (Err(reason), _) => {
                metrics.journal_failures.with_label_values(&["probe"]).inc();
                if was_ok {
                    tracing::error!(%reason, "the journal cannot be written: not ready, money calls are refused");
                }
            }
            (Ok(()), false) => tracing::info!("the journal can be written again: ready"),
            (Ok(()), true) => {}
        }
        was_ok = result.is_ok();
        readiness.set_check("journal", result);
        tokio::select! {
            () = tokio::time::sleep(JOURNAL_PROBE_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}
