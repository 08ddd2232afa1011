//! Fault rehearsal: a merchant asks the emulator to answer a given call badly, so its
//! recovery code meets, before production, what LINE Pay and the network do to it.
//!
//! A fault is one of: a delay, a dropped connection (no answer at all), an HTTP 5xx, or
//! a LINE Pay `returnCode` (`9000`, `1198`, `1901`, `1172`, `1280`...). Its stage says
//! whether the emulator applies the call first:
//! - `before` (the default): the call is not applied. LINE Pay never processed it;
//!   repeating it is safe.
//! - `after`: the call is applied, then the answer is late, lost or replaced. LINE Pay
//!   processed it, the app does not know: the uncertain outcome that payment code must
//!   resolve by reading payment details, never by repeating a confirm or refund.
//!
//! Two ways to ask, both bounded:
//! - a rule through the control API (`POST /__emulator/faults`) or
//!   [`Emulator::add_fault`](crate::Emulator::add_fault): for the next `times` calls of
//!   one endpoint (or `*`, any), optionally only for one orderId; each use consumes it;
//! - the orderId convention: an orderId ending in `fault-[<endpoint>-]<what>[-after]`
//!   rehearses `<what>` once on that endpoint for that order (without an endpoint, on
//!   the call that creates it: request, preapproved payment, one-time-key payment).
//!   `<what>` is four digits (a returnCode), three digits 500–599 (an HTTP status),
//!   `drop`, or `delay-<duration>` (`delay-3s`). So `order-7-fault-9000` gets 9000 on
//!   its request, and a retry with the same orderId goes through;
//!   `order-8-fault-confirm-drop-after` is confirmed, but the confirm's connection is
//!   closed without an answer.
//!
//! Faults act only on calls that reached the API with valid credentials and valid
//! input, and only through the HTTP server (they need a connection to delay or drop).

use crate::reply::ReturnCode;
use crate::route::ENDPOINT_NAMES;
use http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The longest delay a fault may ask for.
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(300);
/// The most calls one rule may cover.
pub const MAX_FAULT_TIMES: u32 = 1000;
/// The most rules waiting at once.
const MAX_PENDING_RULES: usize = 1000;
/// The orderId marker of the convention.
pub(crate) const CONVENTION: &str = "fault-";

/// What a rehearsed fault does to the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this much later.
    Delay(Duration),
    /// Close the connection without an answer.
    Drop,
    /// Answer this HTTP status (500–599) with an HTML page.
    HttpStatus(u16),
    /// Answer HTTP 200 with this returnCode: four digits, 1000 or more.
    ReturnCode(String),
}

/// Whether the call is applied before the fault acts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultStage {
    /// Not applied: LINE Pay never processed the call.
    #[default]
    Before,
    /// Applied, then the answer is late, lost or replaced.
    After,
}

impl FaultStage {
    fn as_str(self) -> &'static str {
        match self {
            FaultStage::Before => "before",
            FaultStage::After => "after",
        }
    }
}

/// A fault for the next `times` calls of `route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// An endpoint name (`request`, `confirm`, `capture`, `void`, `refund`, `details`,
    /// `check`, `userInfo`, `oneTimeKeyPay`, `orderRefund`, ...) or `*` for any call.
    pub route: String,
    pub kind: FaultKind,
    pub stage: FaultStage,
    pub times: u32,
    /// Only calls on the payment with this orderId.
    pub order_id: Option<String>,
}

/// Why a fault rule was refused; the message says what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultError(pub(crate) String);

/// A fault chosen for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub action: Action,
    pub stage: FaultStage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Delay(Duration),
    Drop,
    Status(StatusCode),
    Code(ReturnCode),
}

impl Action {
    /// For logs: what the fault does.
    pub(crate) fn describe(&self) -> String {
        match self {
            Action::Delay(delay) => format!("delay {}", humantime::format_duration(*delay)),
            Action::Drop => "drop the connection".to_owned(),
            Action::Status(status) => format!("HTTP {}", status.as_u16()),
            Action::Code(code) => format!("returnCode {}", code.code()),
        }
    }
}

#[derive(Debug)]
struct PendingRule {
    rule: FaultRule,
    fault: Fault,
    remaining: u32,
}

/// The faults waiting to happen.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<PendingRule>,
    /// (orderId, endpoint) pairs whose convention fault has happened.
    fired: HashSet<(String, &'static str)>,
}

impl Faults {
    pub(crate) fn add(&mut self, rule: FaultRule) -> Result<(), FaultError> {
        if rule.route != "*" && !ENDPOINT_NAMES.contains(&rule.route.as_str()) {
            return Err(FaultError(format!(
                "route `{}` is not an endpoint; use `*` or one of {}",
                shorten(&rule.route),
                ENDPOINT_NAMES.join(", ")
            )));
        }
        if rule.times == 0 || rule.times > MAX_FAULT_TIMES {
            return Err(FaultError(format!(
                "times must be from 1 to {MAX_FAULT_TIMES}"
            )));
        }
        if self.rules.len() >= MAX_PENDING_RULES {
            return Err(FaultError(format!(
                "{MAX_PENDING_RULES} rules are already waiting; clear them with DELETE /__emulator/faults"
            )));
        }
        let action = match &rule.kind {
            FaultKind::Delay(delay) if *delay <= MAX_FAULT_DELAY => Action::Delay(*delay),
            FaultKind::Delay(_) => {
                return Err(FaultError(format!(
                    "delay must be at most {}",
                    humantime::format_duration(MAX_FAULT_DELAY)
                )))
            }
            FaultKind::Drop => Action::Drop,
            FaultKind::HttpStatus(status) => {
                Action::Status(server_error(*status).ok_or_else(|| {
                    FaultError("status must be an HTTP server error, 500 to 599".to_owned())
                })?)
            }
            FaultKind::ReturnCode(code) => {
                Action::Code(ReturnCode::parse_failure(code).ok_or_else(|| {
                    FaultError(
                        "returnCode must be four digits from 1000 to 9999, such as \"9000\""
                            .to_owned(),
                    )
                })?)
            }
        };
        let fault = Fault {
            action,
            stage: rule.stage,
        };
        self.rules.push(PendingRule {
            remaining: rule.times,
            rule,
            fault,
        });
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules still waiting, as the control API shows them.
    pub(crate) fn pending(&self) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|pending| {
                let mut shown = json!({
                    "route": pending.rule.route,
                    "stage": pending.rule.stage.as_str(),
                    "remaining": pending.remaining,
                });
                match &pending.rule.kind {
                    FaultKind::Delay(delay) => {
                        shown["kind"] = "delay".into();
                        shown["delay"] = humantime::format_duration(*delay).to_string().into();
                    }
                    FaultKind::Drop => shown["kind"] = "drop".into(),
                    FaultKind::HttpStatus(status) => {
                        shown["kind"] = "status".into();
                        shown["status"] = (*status).into();
                    }
                    FaultKind::ReturnCode(code) => {
                        shown["kind"] = "returnCode".into();
                        shown["returnCode"] = code.clone().into();
                    }
                }
                if let Some(order_id) = &pending.rule.order_id {
                    shown["orderId"] = order_id.clone().into();
                }
                shown
            })
            .collect();
        Value::Array(rules)
    }

    /// The fault for a call of `endpoint` on the payment `order_id` (if known), and
    /// whether this call creates that payment. A rule is used first (and consumed),
    /// then the orderId convention (once per order and endpoint).
    pub(crate) fn take(
        &mut self,
        endpoint: &'static str,
        creates_order: bool,
        order_id: Option<&str>,
    ) -> Option<Fault> {
        let matching = self.rules.iter().position(|pending| {
            (pending.rule.route == "*" || pending.rule.route == endpoint)
                && pending
                    .rule
                    .order_id
                    .as_deref()
                    .is_none_or(|wanted| Some(wanted) == order_id)
        });
        if let Some(index) = matching {
            let pending = &mut self.rules[index];
            let fault = pending.fault.clone();
            pending.remaining -= 1;
            if pending.remaining == 0 {
                self.rules.remove(index);
            }
            return Some(fault);
        }
        let order_id = order_id?;
        let fault = convention(order_id, endpoint, creates_order)?;
        self.fired
            .insert((order_id.to_owned(), endpoint))
            .then_some(fault)
    }
}

/// The fault an orderId asks for on `endpoint`, by the convention in the module
/// header; `None` if it asks for none there, or is not written as the convention.
pub(crate) fn convention(order_id: &str, endpoint: &str, creates_order: bool) -> Option<Fault> {
    // `fault-` at the start or after a non-alphanumeric character: `default-9000`
    // asks for nothing.
    let spec = order_id
        .rmatch_indices(CONVENTION)
        .find(|(at, _)| {
            order_id[..*at]
                .chars()
                .next_back()
                .is_none_or(|before| !before.is_alphanumeric())
        })
        .map(|(at, _)| &order_id[at + CONVENTION.len()..])?;
    let mut tokens: Vec<&str> = spec.split('-').collect();
    let target = tokens
        .first()
        .copied()
        .filter(|first| ENDPOINT_NAMES.contains(first));
    match target {
        Some(named) if named == endpoint => {
            tokens.remove(0);
        }
        Some(_) => return None,
        None if creates_order => {}
        None => return None,
    }
    let stage = if tokens.last() == Some(&"after") {
        tokens.pop();
        FaultStage::After
    } else {
        FaultStage::Before
    };
    let action = match tokens.as_slice() {
        ["drop"] => Action::Drop,
        ["delay", duration] => humantime::parse_duration(duration)
            .ok()
            .filter(|delay| *delay <= MAX_FAULT_DELAY)
            .map(Action::Delay)?,
        [digits] if digits.len() == 4 => Action::Code(ReturnCode::parse_failure(digits)?),
        [digits] if digits.len() == 3 && digits.bytes().all(|byte| byte.is_ascii_digit()) => {
            Action::Status(server_error(digits.parse().ok()?)?)
        }
        _ => return None,
    };
    Some(Fault { action, stage })
}

fn server_error(status: u16) -> Option<StatusCode> {
    StatusCode::from_u16(status)
        .ok()
        .filter(StatusCode::is_server_error)
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(route: &str, kind: FaultKind, times: u32) -> FaultRule {
        FaultRule {
            route: route.to_owned(),
            kind,
            stage: FaultStage::Before,
            times,
            order_id: None,
        }
    }

    #[test]
    fn the_convention_reads_endpoint_what_and_stage() {
        let code = |digits: u16| Action::Code(ReturnCode::Other(digits));
        let cases = [
            (
                "o-1-fault-9000",
                "request",
                true,
                Some((code(9000), FaultStage::Before)),
            ),
            ("o-1-fault-9000", "confirm", false, None),
            (
                "o-1-fault-confirm-1198-after",
                "confirm",
                false,
                Some((code(1198), FaultStage::After)),
            ),
            ("o-1-fault-confirm-1198", "request", true, None),
            (
                "o-1-fault-refund-drop-after",
                "refund",
                false,
                Some((Action::Drop, FaultStage::After)),
            ),
            (
                "o-1-fault-503",
                "oneTimeKeyPay",
                true,
                Some((
                    Action::Status(StatusCode::SERVICE_UNAVAILABLE),
                    FaultStage::Before,
                )),
            ),
            (
                "o-1-fault-capture-delay-2s-after",
                "capture",
                false,
                Some((Action::Delay(Duration::from_secs(2)), FaultStage::After)),
            ),
            ("o-1-fault-404", "request", true, None),
            ("o-1-fault-0000", "request", true, None),
            ("o-1-fault-delay-1h", "request", true, None),
            ("o-1-fault-banana", "request", true, None),
            ("o-1-default-9000", "request", true, None),
            (
                "fault-9000",
                "request",
                true,
                Some((code(9000), FaultStage::Before)),
            ),
            (
                "o_fault-drop",
                "request",
                true,
                Some((Action::Drop, FaultStage::Before)),
            ),
        ];
        for (order_id, endpoint, creates, expected) in cases {
            let found =
                convention(order_id, endpoint, creates).map(|fault| (fault.action, fault.stage));
            assert_eq!(found, expected, "{order_id} on {endpoint}");
        }
    }

    #[test]
    fn a_convention_fault_happens_once_per_order_and_endpoint() {
        let mut faults = Faults::default();
        let order = Some("o-2-fault-9000");
        assert!(faults.take("request", true, order).is_some());
        assert!(faults.take("request", true, order).is_none());
        assert!(faults
            .take("request", true, Some("o-3-fault-9000"))
            .is_some());
    }

    #[test]
    fn rules_are_consumed_in_order_and_can_target_one_order() {
        let mut faults = Faults::default();
        faults
            .add(rule("confirm", FaultKind::Drop, 2))
            .expect("valid rule");
        faults
            .add(FaultRule {
                order_id: Some("only-this".into()),
                ..rule("refund", FaultKind::HttpStatus(502), 1)
            })
            .expect("valid rule");
        assert!(faults.take("request", true, None).is_none());
        assert_eq!(
            faults.take("confirm", false, None).map(|f| f.action),
            Some(Action::Drop)
        );
        assert!(faults.take("confirm", false, None).is_some());
        assert!(faults.take("confirm", false, None).is_none());
        assert!(faults.take("refund", false, Some("another")).is_none());
        assert!(faults.take("refund", false, Some("only-this")).is_some());
        assert_eq!(faults.pending(), json!([]));
    }

    #[test]
    fn bad_rules_are_refused_with_what_to_send() {
        let mut faults = Faults::default();
        let refused = [
            (rule("confirmm", FaultKind::Drop, 1), "not an endpoint"),
            (rule("confirm", FaultKind::Drop, 0), "times"),
            (rule("confirm", FaultKind::Drop, 1001), "times"),
            (rule("confirm", FaultKind::HttpStatus(404), 1), "500 to 599"),
            (
                rule("confirm", FaultKind::ReturnCode("0000".into()), 1),
                "four digits",
            ),
            (
                rule("confirm", FaultKind::ReturnCode("90000".into()), 1),
                "four digits",
            ),
            (
                rule("confirm", FaultKind::Delay(Duration::from_secs(301)), 1),
                "at most",
            ),
        ];
        for (rule, message) in refused {
            let error = faults.add(rule.clone()).expect_err("refused");
            assert!(error.to_string().contains(message), "{rule:?}: {error}");
        }
        assert!(faults.add(rule("*", FaultKind::Drop, 1000)).is_ok());
    }
}
