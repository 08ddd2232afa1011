//! The running `egress.expect_ip` check: which public address do calls really leave
//! from? LINE Pay refuses production calls from any address not in its whitelist, and a
//! NAT gateway or proxy change can move that address without any config change here.
//!
//! [`ExpectIpCheck`] asks the configured echo service once at start-up and again every
//! [`EXPECT_IP_RECHECK_INTERVAL`], through the same egress path as LINE Pay calls
//! ([`crate::upstream::EchoClient`]); it logs each outcome and keeps the last one in an
//! [`EgressStatus`]. Its watch loop hands the status's readiness to the caller, which
//! the runtime stores as the `egress_ip` check that `/readyz` answers from. `/readyz` itself
//! never asks the echo service. Only a mismatch is reported as not ready; what is
//! expected and where to ask is policy, validated in [`crate::egress`].

use crate::config::UpstreamConfig;
use crate::egress::{EgressConfig, ExpectIpConfig};
use crate::error::ProxyError;
use crate::upstream::{EchoClient, EchoError, UpstreamBuildError};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often [`ExpectIpCheck::watch`] asks again: often enough to notice a NAT gateway
/// change within minutes, rarely enough for any public echo service.
pub(crate) const EXPECT_IP_RECHECK_INTERVAL: Duration = Duration::from_secs(300);
/// The largest echo answer read: an address is a few dozen bytes.
const MAX_ECHO_BYTES: usize = 1024;

/// The outcome of the last `expect_ip` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpectIpState {
    /// No check has finished yet (or `expect_ip` is not configured).
    NotChecked,
    /// The echo service saw the expected address.
    Match,
    /// The echo service saw another address: LINE Pay will refuse production calls.
    Mismatch,
    /// The echo service could not be asked (down, timeout, unreadable answer).
    Failed,
}

/// One finished check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpectIpReport {
    pub(crate) state: ExpectIpState,
    pub(crate) expected: IpAddr,
    /// What the echo service answered, when it answered an address.
    pub(crate) observed: Option<IpAddr>,
    /// One sentence for logs and `/readyz`.
    pub(crate) detail: String,
}

/// The last `expect_ip` result. Reading it never blocks on the network. The admin
/// listener does not read it: [`ExpectIpCheck::watch`] hands [`EgressStatus::readiness`]
/// on, and the runtime stores that as `/readyz`'s `egress_ip` check.
#[derive(Debug, Default)]
pub(crate) struct EgressStatus {
    /// `None` until the first check finished; its state is the current state.
    last: Mutex<Option<ExpectIpReport>>,
}

impl EgressStatus {
    pub(crate) fn state(&self) -> ExpectIpState {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(ExpectIpState::NotChecked, |report| report.state)
    }

    pub(crate) fn last_report(&self) -> Option<ExpectIpReport> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// For `/readyz` (`Readiness::set_check("egress_ip", ..)`): only a mismatch fails.
    /// A failed echo service is a third party's outage and must not take payments
    /// down; it is logged as a warning instead.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        match self.last_report() {
            Some(report) if report.state == ExpectIpState::Mismatch => Err(report.detail),
            _ => Ok(()),
        }
    }

    fn record(&self, report: ExpectIpReport) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
    }
}

/// Asks the configured echo service for the public egress address, through the same
/// egress path as LINE Pay calls (bind address, proxy and its credentials) but without
/// the DNS pin (the echo host is not LINE Pay), signing or allowlist. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ExpectIpCheck {
    inner: Arc<CheckInner>,
}

struct CheckInner {
    config: ExpectIpConfig,
    client: EchoClient,
    status: EgressStatus,
    /// One check at a time: a `run` that starts while another is asking waits for it
    /// to finish, then asks again itself.
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ExpectIpCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpectIpCheck")
            .field("config", &self.inner.config)
            .field("state", &self.inner.status.state())
            .finish_non_exhaustive()
    }
}

impl ExpectIpCheck {
    /// `None` when `egress.expect_ip` is not configured.
    pub(crate) fn new(
        egress: &EgressConfig,
        upstream: &UpstreamConfig,
    ) -> Result<Option<ExpectIpCheck>, UpstreamBuildError> {
        let Some(config) = egress.expect_ip.clone() else {
            return Ok(None);
        };
        let client = EchoClient::new(egress, upstream.ca_file.as_deref(), config.timeout)?;
        Ok(Some(ExpectIpCheck {
            inner: Arc::new(CheckInner {
                config,
                client,
                status: EgressStatus::default(),
                running: tokio::sync::Mutex::new(()),
            }),
        }))
    }

    /// Builds the check and runs it once (bounded by `expect_ip.timeout`): what start-up
    /// does. A mismatch or a failure is logged, never fatal. `None` when not configured.
    pub(crate) async fn at_start_up(
        egress: &EgressConfig,
        upstream: &UpstreamConfig,
    ) -> Result<Option<ExpectIpCheck>, UpstreamBuildError> {
        let check = ExpectIpCheck::new(egress, upstream)?;
        if let Some(check) = &check {
            check.run().await;
        }
        Ok(check)
    }

    /// Asks the echo service now, logs the outcome and records it.
    pub(crate) async fn run(&self) -> ExpectIpReport {
        let _running = self.inner.running.lock().await;
        self.run_locked().await
    }

    /// Reports the current readiness ([`EgressStatus::readiness`]) to `report`, then
    /// asks again every `every`, until `stop` is cancelled: spawn it beside the admin
    /// listener. A check in progress at the stop is dropped (it is a question, not work).
    pub(crate) async fn watch(
        self,
        every: Duration,
        report: impl Fn(Result<(), String>) + Send,
        stop: CancellationToken,
    ) {
        loop {
            report(self.inner.status.readiness());
            tokio::select! {
                () = async {
                    tokio::time::sleep(every).await;
                    self.run().await;
                } => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn run_locked(&self) -> ExpectIpReport {
        let config = &self.inner.config;
        let answer = self
            .inner
            .client
            .get_text(&config.echo_url, MAX_ECHO_BYTES)
            .await
            .map_err(echo_failure);
        let report = judge(config, answer);
        log_report(config, &report);
        self.inner.status.record(report.clone());
        report
    }
}

/// Why the echo service could not be asked, on one line; a connection failure leads
/// with the stable code a LINE Pay call would be answered with (`upstream_dns`, ...).
fn echo_failure(error: EchoError) -> String {
    match error {
        EchoError::Connection { failure, detail } => {
            format!("{}: {detail}", ProxyError::from(failure).code())
        }
        other => other.to_string(),
    }
}

/// Compares the echo service's answer with the expected address.
fn judge(config: &ExpectIpConfig, answer: Result<String, String>) -> ExpectIpReport {
    let expected = config.address;
    let text = match answer {
        Ok(text) => text,
        Err(reason) => {
            return ExpectIpReport {
                state: ExpectIpState::Failed,
                expected,
                observed: None,
                detail: format!(
                    "the echo service {} could not be asked: {reason}",
                    config.echo_url
                ),
            }
        }
    };
    let Ok(observed) = text.trim().parse::<IpAddr>() else {
        return ExpectIpReport {
            state: ExpectIpState::Failed,
            expected,
            observed: None,
            detail: format!(
                "the echo service {} did not answer a plain IP address (it must answer e.g. `203.0.113.7`)",
                config.echo_url
            ),
        };
    };
    if observed.to_canonical() == expected.to_canonical() {
        ExpectIpReport {
            state: ExpectIpState::Match,
            expected,
            observed: Some(observed),
            detail: format!("calls leave from {observed}, the expected address"),
        }
    } else {
        ExpectIpReport {
            state: ExpectIpState::Mismatch,
            expected,
            observed: Some(observed),
            detail: format!(
                "calls leave from {observed}, not from {expected} (egress.expect_ip.address): LINE Pay will refuse production calls unless {observed} is in its whitelist"
            ),
        }
    }
}

fn log_report(config: &ExpectIpConfig, report: &ExpectIpReport) {
    let echo_url = &config.echo_url;
    let expected = report.expected;
    match report.state {
        ExpectIpState::Match => tracing::info!(
            %expected, %echo_url,
            "egress.expect_ip: public egress address matches: {}", report.detail
        ),
        ExpectIpState::Mismatch => tracing::error!(
            %expected,
            observed = %report.observed.map_or_else(String::new, |ip| ip.to_string()),
            %echo_url,
            "EGRESS IP MISMATCH (egress.expect_ip): {}. Fix the egress path (egress.bind_address, egress.proxy, the NAT gateway) or LINE Pay's whitelist. The sidecar keeps running: a mismatch is reported, never fatal",
            report.detail
        ),
        ExpectIpState::Failed | ExpectIpState::NotChecked => tracing::warn!(
            %expected, %echo_url,
            "egress.expect_ip: public egress address unknown: {}", report.detail
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn expect(address: &str) -> ExpectIpConfig {
        ExpectIpConfig {
            address: address.parse().unwrap(),
            echo_url: "https://echo.example/".parse().unwrap(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn echo_answers_are_judged() {
        let matched = judge(&expect("203.0.113.7"), Ok("203.0.113.7\n".into()));
        assert_eq!(matched.state, ExpectIpState::Match);
        let mapped = judge(&expect("203.0.113.7"), Ok("::ffff:203.0.113.7".into()));
        assert_eq!(mapped.state, ExpectIpState::Match);
        let other = judge(&expect("203.0.113.7"), Ok("198.51.100.4".into()));
        assert_eq!(other.state, ExpectIpState::Mismatch);
        assert!(other.detail.contains("198.51.100.4"), "{}", other.detail);
        let html = judge(&expect("203.0.113.7"), Ok("<html>".into()));
        assert_eq!(html.state, ExpectIpState::Failed);
        let down = judge(&expect("203.0.113.7"), Err("upstream_unreachable".into()));
        assert_eq!(down.state, ExpectIpState::Failed);
    }

    #[test]
    fn only_a_mismatch_makes_the_status_unready() {
        let status = EgressStatus::default();
        assert_eq!(status.state(), ExpectIpState::NotChecked);
        assert_eq!(status.readiness(), Ok(()));
        status.record(judge(&expect("203.0.113.7"), Err("down".into())));
        assert_eq!(status.state(), ExpectIpState::Failed);
        assert_eq!(status.readiness(), Ok(()));
        status.record(judge(&expect("203.0.113.7"), Ok("198.51.100.4".into())));
        assert_eq!(status.state(), ExpectIpState::Mismatch);
        assert!(status.readiness().unwrap_err().contains("198.51.100.4"));
        status.record(judge(&expect("203.0.113.7"), Ok("203.0.113.7".into())));
        assert_eq!(status.readiness(), Ok(()));
    }
}
