//! Prometheus metrics: every metric is defined here and registered in one registry.
//!
//! Labels are bounded on purpose: routes are allowlist templates (or `unmatched`), API
//! families are the built-in families' names (or `custom`, `unmatched`), LINE
//! Pay's `returnCode` is one of the codes the reference lists (or `other` / `none`), and
//! error codes are the sidecar's fixed set. Nothing an app or LINE Pay sends can grow a
//! label set without limit.
//!
//! Every counter whose label values are a fixed set starts with all of them at 0: an
//! alert on `increase(...)` needs a series that exists before the first event, or it
//! never sees that first event. On Linux the registry also carries the standard
//! `process_*` metrics (memory, open fds against their limit, CPU), which a dashboard
//! compares with the pod's limits.

mod series;

pub(crate) use self::series::ChannelSeries;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Route label for calls that matched no allowlist template; also their `family` label
/// when the path is in no built-in family either.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";
/// `return_code` label when the answer had no `returnCode` (a sidecar refusal, a non-JSON
/// answer).
pub(crate) const NO_RETURN_CODE: &str = "none";
/// `return_code` label for a code outside the reference's table.
pub(crate) const OTHER_RETURN_CODE: &str = "other";

/// The return codes of the reference table (`linepay-api.md`, after its correction):
/// each gets its own label value. 1110 (credit card unusable) and 1133 (invalid
/// one-time key, offline) are in LINE Pay's own lists for the v2 and offline APIs; codes
/// in no list (2103-2106) are not here and count as `other`. 1900-1999 share one label,
/// [`TEMPORARY_ERROR_BUCKET`].
const KNOWN_RETURN_CODES: &[&str] = &[
    "0000", "0110", "0121", "0122", "0123", "1101", "1102", "1104", "1105", "1106", "1110", "1124",
    "1133", "1141", "1142", "1145", "1150", "1152", "1153", "1154", "1155", "1159", "1163", "1164",
    "1165", "1169", "1170", "1172", "1177", "1178", "1179", "1180", "1183", "1184", "1190", "1193",
    "1194", "1197", "1198", "1199", "1280", "1281", "1282", "1283", "1284", "1285", "1286", "1287",
    "1288", "1289", "1290", "1291", "1292", "1293", "1294", "1295", "1296", "1297", "1298", "2042",
    "2101", "2102", "9000",
];

/// The one `return_code` label of LINE Pay's temporary errors 1900-1999 ("190X" in its
/// documentation: try again later, after checking the payment's details).
pub(crate) const TEMPORARY_ERROR_BUCKET: &str = "190X";

/// Every `code` of `linepay_sidecar_refusals_total`: the stable codes of
/// [`crate::error::Code`], in the order of its table.
fn refusal_codes() -> impl Iterator<Item = &'static str> {
    crate::error::Code::ALL.iter().map(|code| code.as_str())
}

/// The `operation` label of `linepay_sidecar_money_guard_failures_total`: a failed step,
/// a call not sent because its claim ran out of time to send (`send_window`), a claim
/// refused because the shared state lost its records (`data_lost`).
pub(crate) const MONEY_GUARD_OPERATIONS: &[&str] = &[
    "claim",
    "await",
    "complete",
    "takeover",
    "sweep",
    "send_window",
    "data_lost",
];
/// Every `operation` of `linepay_sidecar_journal_failures_total`.
pub(crate) const JOURNAL_OPERATIONS: &[&str] =
    &["intent", "outcome", "read", "prune", "order", "probe"];

/// Every `answer` of `linepay_sidecar_admin_calls_total`: `ok` or a refusal's code.
pub(crate) const CALLS_ANSWERS: &[&str] = &[
    "ok",
    "invalid_calls_query",
    "calls_forbidden",
    "calls_off",
    "journal_off",
    "calls_busy",
    "journal_unavailable",
    "internal",
];

/// Every `kind` of `linepay_sidecar_upstream_errors_total` (`ProxyError::upstream_kind`).
const UPSTREAM_ERROR_KINDS: &[&str] = &[
    "dns",
    "connect",
    "connect_timeout",
    "tls",
    "proxy",
    "timeout",
    "protocol",
    "response_too_large",
];

/// The `limit` values of the rate-limit counters that exist whatever the config says.
/// A per-route limit is labelled `route METHOD /path` from the config: its series
/// appears with its first refusal.
const FIXED_RATE_LIMITS: &[&str] = &["global", "client", "check_status", "channel"];

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    /// Calls answered per channel (a name from the config: bounded), with the channel's
    /// environment; beside `requests`, whose labels dashboards and alerts already use.
    pub(crate) channel_requests: IntCounterVec,
    /// Failed calls to LINE Pay per channel, by kind.
    pub(crate) channel_upstream_errors: IntCounterVec,
    pub(crate) upstream_duration: HistogramVec,
    pub(crate) signing_duration: Histogram,
    pub(crate) in_flight: IntGauge,
    pub(crate) rate_limited: IntCounterVec,
    pub(crate) rate_limited_shadow: IntCounterVec,
    pub(crate) refusals: IntCounterVec,
    /// Pre-validation findings by route family and rule, in `warn` and `enforce` mode.
    pub(crate) prevalidation_findings: IntCounterVec,
    pub(crate) upstream_errors: IntCounterVec,
    pub(crate) config_reloads: IntCounterVec,
    pub(crate) build_info: IntGaugeVec,
    /// 1 when the last upstream probe opened a connection to LINE Pay, else 0. Set
    /// whatever `admin.ready_requires_upstream` says: LINE Pay's health is watched here
    /// and alerted on, even when readiness ignores it.
    pub(crate) upstream_up: IntGauge,
    /// 1 while the last `egress.expect_ip` check saw another public address than the
    /// configured one, else 0. A mismatch gauge rather than an "ok" one, so that a
    /// sidecar without `expect_ip` (or whose echo service is down) reads 0 and never
    /// looks like an alarm.
    pub(crate) expect_ip_mismatch: IntGauge,
    /// Money calls whose app hung up before the answer, by route; the call still
    /// finished upstream and its outcome is in the journal.
    pub(crate) client_gone: IntCounterVec,
    /// Uncertain money calls, by what LINE Pay's records said (applied, not_applied,
    /// unknown).
    pub(crate) reconciliations: IntCounterVec,
    pub(crate) idempotent_replays: IntCounter,
    pub(crate) journal_failures: IntCounterVec,
    /// The shared money-call guards (`state.backend: redis`): Redis steps that failed,
    /// by operation; calls admitted by this pod's guards alone meanwhile
    /// (`state.redis.money_fallback: local`); claims taken over after their owner's
    /// lease ended, by who found them (`request`, `sweeper`); the sweeper's checks, by
    /// reconciled state.
    pub(crate) money_guard_failures: IntCounterVec,
    pub(crate) money_guard_fallbacks: IntCounter,
    pub(crate) lease_takeovers: IntCounterVec,
    pub(crate) sweeper_reconciliations: IntCounterVec,
    /// `GET /calls` on the admin port, by answer (`ok` or the refusal's code).
    pub(crate) calls_lookups: IntCounterVec,
    /// Redis commands answered, by operation (`state.backend: redis`).
    pub(crate) state_duration: HistogramVec,
    /// Redis commands without a usable answer, by kind.
    pub(crate) state_errors: IntCounterVec,
    /// 1 while the Redis connection is up; 0 without one (and with `state.backend: local`).
    pub(crate) state_up: IntGauge,
    /// Calls whose shared rate limit was decided by the local fallback because Redis
    /// could not answer, by limit.
    pub(crate) rate_limit_fallbacks: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_requests_total",
                    "Calls answered, by route template, API family, method, HTTP status and LINE Pay returnCode.",
                ),
                &["route", "family", "method", "status", "return_code"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            channel_requests: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_channel_requests_total",
                    "Calls answered, by channel (a name from the config), its environment (sandbox, production, other), HTTP status and LINE Pay returnCode.",
                ),
                &["channel", "environment", "status", "return_code"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            channel_upstream_errors: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_channel_upstream_errors_total",
                    "Failed calls to LINE Pay, by channel and kind (the kinds of linepay_sidecar_upstream_errors_total).",
                ),
                &["channel", "kind"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "linepay_sidecar_upstream_duration_seconds",
                    "Time from sending a call to LINE Pay to having its whole answer, by route.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
                    60.0,
                ]),
                &["route"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            signing_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "linepay_sidecar_signing_duration_seconds",
                    "Time to compute one request signature.",
                )
                .buckets(vec![1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3]),
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            in_flight: IntGauge::new(
                "linepay_sidecar_in_flight_requests",
                "Calls being handled right now.",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_rate_limited_total",
                    "Calls refused by a rate limit, by limit.",
                ),
                &["limit"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            rate_limited_shadow: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_rate_limited_shadow_total",
                    "Calls a rate limit would have refused, admitted because limits.shadow is on, by limit.",
                ),
                &["limit"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            refusals: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_refusals_total",
                    "Calls answered with the sidecar's own error, by error code.",
                ),
                &["code"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            prevalidation_findings: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_prevalidation_findings_total",
                    "Problems pre-validation found in request bodies (refused in enforce mode, forwarded in warn mode), by route family and rule.",
                ),
                &["route_family", "rule"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_upstream_errors_total",
                    format!("Failed calls to LINE Pay, by kind ({}).", UPSTREAM_ERROR_KINDS.join(", ")),
                ),
                &["kind"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_config_reloads_total",
                    "Configuration reloads, by result (success, failure).",
                ),
                &["result"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            build_info: IntGaugeVec::new(
                Opts::new(
                    "linepay_sidecar_build_info",
                    "Always 1; the version label says which build is running.",
                ),
                &["version"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            upstream_up: IntGauge::new(
                "linepay_sidecar_upstream_up",
                "1 when the last upstream probe (every admin.probe_interval) reached LINE Pay, 0 when it failed or has not run yet.",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            expect_ip_mismatch: IntGauge::new(
                "linepay_sidecar_expect_ip_mismatch",
                "1 while the last egress.expect_ip check saw a public address other than the expected one, else 0.",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            client_gone: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_client_gone_total",
                    "Money calls that finished at LINE Pay after the app had hung up, by route (the outcome is in the journal).",
                ),
                &["route"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            reconciliations: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_reconciliations_total",
                    "Uncertain money calls checked against LINE Pay's records, by state (applied, not_applied, unknown).",
                ),
                &["state"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            idempotent_replays: IntCounter::new(
                "linepay_sidecar_idempotent_replays_total",
                "Calls answered from the journal for a repeated Idempotency-Key, without calling LINE Pay.",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            journal_failures: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_journal_failures_total",
                    // The help lists the label values the series are created with, so the two agree.
                    format!("Journal reads and writes that failed, by operation ({}).", JOURNAL_OPERATIONS.join(", ")),
                ),
                &["operation"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            money_guard_failures: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_money_guard_failures_total",
                    format!("Shared money-call guard steps on Redis that failed or timed out, or a call they kept from being sent, by operation ({}).", MONEY_GUARD_OPERATIONS.join(", ")),
                ),
                &["operation"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            money_guard_fallbacks: IntCounter::new(
                "linepay_sidecar_money_guard_fallbacks_total",
                "Money calls admitted with this sidecar's own guards while Redis could not answer (state.redis.money_fallback: local).",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            lease_takeovers: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_lease_takeovers_total",
                    "Shared claims taken over after their owner's lease ended without an outcome, by who found them (request, sweeper).",
                ),
                &["by"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            sweeper_reconciliations: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_sweeper_reconciliations_total",
                    "Orphaned shared claims the sweeper checked against LINE Pay's records, by state (applied, not_applied, unknown).",
                ),
                &["state"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            calls_lookups: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_admin_calls_total",
                    format!(
                        "GET /calls on the admin port, by answer ({}).",
                        CALLS_ANSWERS.join(", ")
                    ),
                ),
                &["answer"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            state_duration: HistogramVec::new(
                HistogramOpts::new(
                    "linepay_sidecar_state_duration_seconds",
                    "Time from sending a command to Redis to its answer, by operation.",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                ]),
                &["operation"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            state_errors: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_state_errors_total",
                    format!("Redis commands without a usable answer, by kind ({}).", crate::state::ERROR_KINDS.join(", ")),
                ),
                &["kind"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            state_up: IntGauge::new(
                "linepay_sidecar_state_up",
                "1 while the connection to Redis (state.backend: redis) is up, else 0.",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            rate_limit_fallbacks: IntCounterVec::new(
                Opts::new(
                    "linepay_sidecar_rate_limit_fallback_total",
                    "Calls whose shared rate limit was decided by the local fallback limiter because Redis could not answer, by limit.",
                ),
                &["limit"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.create_fixed_series();
        metrics.register_all();
        metrics
    }

    /// Every series whose labels come from a fixed set, at 0, so dashboards see 0
    /// rather than nothing and `increase()` sees the first event.
    fn create_fixed_series(&self) {
        for result in ["success", "failure"] {
            self.config_reloads.with_label_values(&[result]);
        }
        for code in refusal_codes() {
            self.refusals.with_label_values(&[code]);
        }
        for kind in UPSTREAM_ERROR_KINDS {
            self.upstream_errors.with_label_values(&[kind]);
        }
        for family in crate::validate::families() {
            for rule in crate::validate::Rule::ALL {
                self.prevalidation_findings
                    .with_label_values(&[family, rule.label()]);
            }
        }
        for limit in FIXED_RATE_LIMITS {
            self.rate_limited.with_label_values(&[limit]);
            self.rate_limited_shadow.with_label_values(&[limit]);
        }
        for state in crate::money::ReconciledState::ALL {
            self.reconciliations.with_label_values(&[state.as_str()]);
        }
        for operation in JOURNAL_OPERATIONS {
            self.journal_failures.with_label_values(&[operation]);
        }
        for answer in CALLS_ANSWERS {
            self.calls_lookups.with_label_values(&[answer]);
        }
        for kind in crate::state::ERROR_KINDS {
            self.state_errors.with_label_values(&[kind]);
        }
        // Only the global and route buckets are shared; a route's series appears with its
        // first fallback, as its refusals' do.
        self.rate_limit_fallbacks.with_label_values(&["global"]);
        for operation in MONEY_GUARD_OPERATIONS {
            self.money_guard_failures.with_label_values(&[operation]);
        }
        for by in ["request", "sweeper"] {
            self.lease_takeovers.with_label_values(&[by]);
        }
        for state in crate::money::ReconciledState::ALL {
            self.sweeper_reconciliations
                .with_label_values(&[state.as_str()]);
        }
    }

    /// The Redis client's handles on its metrics.
    pub(crate) fn state_metrics(&self) -> crate::state::StateMetrics {
        crate::state::StateMetrics {
            duration: self.state_duration.clone(),
            errors: self.state_errors.clone(),
            up: self.state_up.clone(),
        }
    }

    /// The `client_gone` series of each money route of an allowlist, at 0 (the routes
    /// come from the configuration, so they are created when a proxy is built).
    /// A channel's upstream-error series at 0 (channels come from the configuration).
    pub(crate) fn create_channel_series(&self, channel: &str) {
        for kind in UPSTREAM_ERROR_KINDS {
            self.channel_upstream_errors
                .with_label_values(&[channel, kind]);
        }
    }

    pub(crate) fn create_route_series<'a>(&self, money_routes: impl Iterator<Item = &'a str>) {
        for route in money_routes {
            self.client_gone.with_label_values(&[route]);
        }
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 24] = [
            Box::new(self.requests.clone()),
            Box::new(self.channel_requests.clone()),
            Box::new(self.channel_upstream_errors.clone()),
            Box::new(self.upstream_duration.clone()),
            Box::new(self.signing_duration.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.rate_limited.clone()),
            Box::new(self.rate_limited_shadow.clone()),
            Box::new(self.refusals.clone()),
            Box::new(self.prevalidation_findings.clone()),
            Box::new(self.upstream_errors.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.upstream_up.clone()),
            Box::new(self.expect_ip_mismatch.clone()),
            Box::new(self.client_gone.clone()),
            Box::new(self.reconciliations.clone()),
            Box::new(self.idempotent_replays.clone()),
            Box::new(self.journal_failures.clone()),
            Box::new(self.calls_lookups.clone()),
            Box::new(self.state_duration.clone()),
            Box::new(self.state_errors.clone()),
            Box::new(self.state_up.clone()),
            Box::new(self.rate_limit_fallbacks.clone()),
        ];
        let money_guards: [Box<dyn prometheus::core::Collector>; 4] = [
            Box::new(self.money_guard_failures.clone()),
            Box::new(self.money_guard_fallbacks.clone()),
            Box::new(self.lease_takeovers.clone()),
            Box::new(self.sweeper_reconciliations.clone()),
        ];
        for collector in collectors.into_iter().chain(money_guards) {
            // Names are distinct constants, so registration cannot collide.
            if let Err(error) = self.registry.register(collector) {
                tracing::error!(%error, "metric registration failed");
            }
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        // process_max_fds, ...: read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        if let Err(error) = self.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(%error, "process metric registration failed");
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metric encoding failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The bounded label for an answer's HTTP status: the registered codes (every status
/// the sidecar answers with is one: the upstream client refuses others), else `other`.
pub(crate) fn status_label(status: &http::StatusCode) -> &str {
    if status.canonical_reason().is_some() {
        status.as_str()
    } else {
        "other"
    }
}

/// The status as the handles kept per channel and route (`ChannelSeries`) tell them
/// apart: one key per [`status_label`], so that a status without a label of its own
/// (any of the ~900 an upstream may send) does not add a handle of its own.
pub(crate) fn status_key(status: &http::StatusCode) -> u16 {
    if status.canonical_reason().is_some() {
        status.as_u16()
    } else {
        0
    }
}

/// The bounded label for a LINE Pay `returnCode`.
pub(crate) fn return_code_label(code: Option<&str>) -> &'static str {
    match code {
        None => NO_RETURN_CODE,
        Some(code)
            if code.len() == 4
                && code.starts_with("19")
                && code.bytes().all(|b| b.is_ascii_digit()) =>
        {
            TEMPORARY_ERROR_BUCKET
        }
        Some(code) => KNOWN_RETURN_CODES
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or(OTHER_RETURN_CODE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn status_keys_part_statuses_exactly_as_their_labels_do() {
        let statuses: Vec<http::StatusCode> = (100..=999)
            .map(|code| http::StatusCode::from_u16(code).unwrap_or_default())
            .collect();
        for a in &statuses {
            for b in &statuses {
                assert_eq!(
                    status_key(a) == status_key(b),
                    status_label(a) == status_label(b),
                    "{a} {b}"
                );
            }
        }
    }

    #[test]
    fn status_labels_are_bounded() {
        let label = |code| {
            let status = http::StatusCode::from_u16(code).unwrap_or_default();
            status_label(&status).to_owned()
        };
        assert_eq!(label(200), "200");
        assert_eq!(label(503), "503");
        assert_eq!(label(599), "other");
        assert_eq!(label(999), "other");
    }

    #[test]
    fn return_code_labels_are_bounded() {
        assert_eq!(return_code_label(Some("0000")), "0000");
        assert_eq!(return_code_label(Some("1106")), "1106");
        assert_eq!(return_code_label(Some("7777")), OTHER_RETURN_CODE);
        assert_eq!(return_code_label(Some("1197")), "1197");
        assert_eq!(return_code_label(Some("1298")), "1298");
        assert_eq!(return_code_label(Some("2042")), "2042");
        for code in ["1900", "1907", "1999"] {
            assert_eq!(
                return_code_label(Some(code)),
                TEMPORARY_ERROR_BUCKET,
                "{code}"
            );
        }
        for code in ["2103", "2106", "1299", "190", "19000", "19x1", "1800"] {
            assert_eq!(return_code_label(Some(code)), OTHER_RETURN_CODE, "{code}");
        }
        assert_eq!(return_code_label(Some("x\ny")), OTHER_RETURN_CODE);
        assert_eq!(return_code_label(None), NO_RETURN_CODE);
    }

    #[test]
    fn render_names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["/v3/payments/request", "online_v3", "POST", "200", "0000"])
            .inc();
        let text = metrics.render();
        assert!(text.contains(
            r#"linepay_sidecar_requests_total{family="online_v3",method="POST",return_code="0000",route="/v3/payments/request",status="200"} 1"#
        ), "{text}");
        assert!(text.contains(&format!(
            r#"linepay_sidecar_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains(r#"linepay_sidecar_config_reloads_total{result="failure"} 0"#));
    }

    #[test]
    fn counters_with_fixed_labels_start_at_zero_before_any_event() {
        let text = Metrics::new().render();
        for code in refusal_codes() {
            let series = format!(r#"linepay_sidecar_refusals_total{{code="{code}"}} 0"#);
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for kind in UPSTREAM_ERROR_KINDS {
            let series = format!(r#"linepay_sidecar_upstream_errors_total{{kind="{kind}"}} 0"#);
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for limit in FIXED_RATE_LIMITS {
            for name in [
                "linepay_sidecar_rate_limited_total",
                "linepay_sidecar_rate_limited_shadow_total",
            ] {
                let series = format!(r#"{name}{{limit="{limit}"}} 0"#);
                assert!(text.contains(&series), "{series} missing:\n{text}");
            }
        }
        let series = r#"linepay_sidecar_prevalidation_findings_total{route_family="request",rule="unknown_field"} 0"#;
        assert!(text.contains(series), "{series} missing:\n{text}");
        assert!(text.contains("\nlinepay_sidecar_upstream_up 0\n"), "{text}");
        assert!(
            text.contains("\nlinepay_sidecar_expect_ip_mismatch 0\n"),
            "{text}"
        );
    }

    /// The pre-created label values are exactly the codes and kinds the errors carry:
    /// a new error code missing here would have no series until its first event.
    #[test]
    fn fixed_label_values_are_every_error_code_and_kind() {
        use crate::error::ProxyError;
        use crate::limit::{LimitError, LimitName, Refusal};
        use crate::upstream::UpstreamError;
        use std::time::Duration;
        let every_error = [
            ProxyError::PathNotAllowed {
                method: String::new(),
                path: String::new(),
            },
            ProxyError::MethodNotAllowed {
                path: String::new(),
                allowed: String::new(),
            },
            ProxyError::ApiFamilyDisabled {
                route: String::new(),
                family: "",
                line: String::new(),
            },
            ProxyError::InvalidPathParameter {
                name: String::new(),
                rule: "",
            },
            ProxyError::ConnectRefused,
            ProxyError::AmbiguousPath(""),
            ProxyError::InvalidTarget,
            ProxyError::BodyTooLarge { limit: 0 },
            ProxyError::BodyTimeout(Duration::ZERO),
            ProxyError::BodyRead,
            ProxyError::InvalidJson(String::new()),
            ProxyError::UnexpectedBody(String::new()),
            ProxyError::UnexpectedQuery,
            ProxyError::InvalidRequest(String::new()),
            ProxyError::RateLimited(LimitError {
                limit: LimitName::Global,
                retry_after: Duration::ZERO,
                reason: Refusal::NoQueue,
            }),
            ProxyError::HeadersTooLarge { limit: 0 },
            ProxyError::Overloaded,
            ProxyError::OverBudget { limit: 0 },
            ProxyError::Upstream(UpstreamError::Dns),
            ProxyError::Upstream(UpstreamError::ConnectTimeout(Duration::ZERO)),
            ProxyError::Upstream(UpstreamError::Unreachable),
            ProxyError::Upstream(UpstreamError::Tls),
            ProxyError::Upstream(UpstreamError::Proxy),
            ProxyError::Upstream(UpstreamError::ReadTimeout(Duration::ZERO)),
            ProxyError::Upstream(UpstreamError::Protocol),
            ProxyError::Upstream(UpstreamError::ResponseTooLarge { limit: 0 }),
            ProxyError::Upstream(UpstreamError::ResponseHeadersTooLarge { limit: 0 }),
            ProxyError::Upstream(UpstreamError::UnexpectedStatus(0)),
            ProxyError::Upstream(UpstreamError::OverBudget { limit: 0 }),
            ProxyError::Upstream(UpstreamError::NoPool),
            ProxyError::Internal,
            ProxyError::CallInProgress,
            ProxyError::AwaitingCheck {
                retry_after_secs: 1,
            },
            ProxyError::CallApplied,
            ProxyError::CallOutcomeUnknown,
            ProxyError::IdempotencyKeyReused,
            ProxyError::IdempotencyAnswerUnavailable,
            ProxyError::IdempotencyUnavailable,
            ProxyError::InvalidIdempotencyKey,
            ProxyError::JournalUnavailable,
            ProxyError::StateUnavailable,
            ProxyError::ChannelRequired,
            ProxyError::UnknownChannel,
            ProxyError::ChannelMismatch,
            ProxyError::TransactionOfAnotherChannel,
        ];
        let codes: BTreeSet<&str> = every_error.iter().map(ProxyError::code).collect();
        let kinds: BTreeSet<&str> = every_error
            .iter()
            .filter_map(ProxyError::upstream_kind)
            .collect();
        assert_eq!(codes, refusal_codes().collect());
        assert_eq!(kinds, UPSTREAM_ERROR_KINDS.iter().copied().collect());
    }

    /// A `# HELP` that lists a label's values ("by kind (dns, connect, …)") lists exactly
    /// the values the metric's series carry: the list once lagged two values behind.
    #[test]
    fn help_texts_list_exactly_the_label_values_exported() {
        let text = Metrics::new().render();
        let mut checked = BTreeSet::new();
        for help in text.lines().filter_map(|line| line.strip_prefix("# HELP ")) {
            let Some((name, words)) = help.split_once(' ') else {
                panic!("a HELP line without its text: {help}")
            };
            let Some((_, listed)) = words.rsplit_once(" by ") else {
                continue;
            };
            let Some((label, values)) = listed.split_once(" (") else {
                continue;
            };
            if label.contains(' ') {
                continue;
            }
            let listed: BTreeSet<&str> = values.trim_end_matches(").").split(", ").collect();
            let marker = format!("{label}=\"");
            let exported: BTreeSet<&str> = text
                .lines()
                .filter(|line| line.starts_with(&format!("{name}{{")))
                .filter_map(|line| {
                    let value = &line[line.find(&marker)? + marker.len()..];
                    Some(&value[..value.find('"')?])
                })
                .collect();
            assert_eq!(listed, exported, "{name}");
            checked.insert(name);
        }
        for name in [
            "linepay_sidecar_upstream_errors_total",
            "linepay_sidecar_journal_failures_total",
            "linepay_sidecar_money_guard_failures_total",
            "linepay_sidecar_state_errors_total",
            "linepay_sidecar_admin_calls_total",
        ] {
            assert!(checked.contains(name), "{name} not checked: {checked:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported_on_linux() {
        let text = Metrics::new().render();
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
    }
}
