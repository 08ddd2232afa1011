//! The emulator's own control API, under `/__emulator/`: what a test or a merchant's
//! CI uses to move the emulator's clock, line up faults and act as the buyer. It is
//! not a LINE Pay path (so a sidecar's allowlist never forwards to it) and takes no
//! credentials: the emulator is a test double, reachable only where it is started.
//!
//! | method | path | body | does |
//! | --- | --- | --- | --- |
//! | GET | `/__emulator/clock` | | `{"now": RFC 3339, "offset": "21m"}` |
//! | POST | `/__emulator/clock` | `{"advance": "21m"}` | moves the clock forward |
//! | GET | `/__emulator/faults` | | `{"faults": [rules still waiting]}` |
//! | POST | `/__emulator/faults` | a rule (below) | adds it |
//! | DELETE | `/__emulator/faults` | | clears every rule |
//! | POST | `/__emulator/payments/{transactionId}/buyer` | `{"action": "approve"\|"cancel"\|"fail"}` | acts as the buyer |
//! | POST | `/__emulator/oneTimeKeys` | `{"pays": "balance"\|"card", "digits": 12\|18\|19}` | a fresh one-time key, valid five minutes |
//! | GET | `/__emulator/channels` | | `{"channels": [{"channelId", "currency", "requireDeviceHeaders"}]}`, never a secret |
//! | POST | `/__emulator/channels/{channelId}/secret` | `{"secret": "..."}` | replaces that channel's secret (a rotation at LINE Pay); the answer never shows it |
//!
//! A fault rule: `{"route": "confirm", "kind": "drop", "stage": "after", "times": 1}`,
//! `kind` one of `delay` (with `"delay": "5s"`), `drop`, `status` (with
//! `"status": 503`), `returnCode` (with `"returnCode": "9000"`); `stage` `before`
//! (default) or `after`; `times` default 1; optional `"orderId"`. Errors are HTTP 400
//! (404 for an unknown path) with `{"error": "...", "message": "..."}`.

use crate::fault::{FaultKind, FaultRule, FaultStage};
use crate::ledger::BuyerAction;
use crate::{reply, Emulator, Secret};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

/// The prefix of every control path.
pub(crate) const PREFIX: &str = "/__emulator";

/// Answers a control call; `path` starts with [`PREFIX`].
pub(crate) fn handle(
    emulator: &Emulator,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Response<Bytes> {
    let rest = path.strip_prefix(PREFIX).unwrap_or(path);
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let answer = match (method, segments.as_slice()) {
        (&Method::GET, ["clock"]) => Ok(clock(emulator)),
        (&Method::POST, ["clock"]) => advance(emulator, body),
        (&Method::GET, ["faults"]) => Ok(faults(emulator)),
        (&Method::POST, ["faults"]) => add_fault(emulator, body),
        (&Method::DELETE, ["faults"]) => {
            emulator.clear_faults();
            Ok(faults(emulator))
        }
        (&Method::POST, ["payments", id, "buyer"]) => buyer(emulator, id, body),
        (&Method::POST, ["oneTimeKeys"]) => one_time_key(emulator, body),
        (&Method::GET, ["channels"]) => Ok(channels(emulator)),
        (&Method::POST, ["channels", channel_id, "secret"]) => {
            rotate_secret(emulator, channel_id, body)
        }
        _ => {
            return reply::control(
                StatusCode::NOT_FOUND,
                &json!({
                    "error": "not_found",
                    "message": format!(
                        "the emulator's control API has no {method} {path}; see docs/emulator.md"
                    ),
                }),
            )
        }
    };
    match answer {
        Ok(body) => {
            tracing::info!(%method, path, "emulator: control call");
            reply::control(StatusCode::OK, &body)
        }
        Err(message) => {
            tracing::info!(%method, path, %message, "emulator: control call refused");
            reply::control(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_control_call", "message": message}),
            )
        }
    }
}

fn clock(emulator: &Emulator) -> Value {
    json!({
        "now": emulator.now_rfc3339(),
        "offset": humantime::format_duration(emulator.clock_offset()).to_string(),
    })
}

fn advance(emulator: &Emulator, body: &[u8]) -> Result<Value, String> {
    let object = object(body, &["advance"])?;
    let by = object
        .get("advance")
        .and_then(Value::as_str)
        .ok_or("`advance` is required: a duration such as \"21m\", \"7days\" or \"90s\"")?;
    let by = humantime::parse_duration(by)
        .map_err(|error| format!("`advance`: {error}; write a duration such as \"21m\""))?;
    emulator.advance_clock(by);
    Ok(clock(emulator))
}

fn faults(emulator: &Emulator) -> Value {
    json!({ "faults": emulator.pending_faults() })
}

fn add_fault(emulator: &Emulator, body: &[u8]) -> Result<Value, String> {
    let object = object(
        body,
        &[
            "route",
            "kind",
            "stage",
            "times",
            "orderId",
            "delay",
            "status",
            "returnCode",
        ],
    )?;
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let route = text("route").ok_or("`route` is required: an endpoint name or \"*\"")?;
    let kind = match text("kind") {
        Some("delay") => {
            let delay = text("delay").ok_or("kind `delay` needs `delay`, such as \"5s\"")?;
            FaultKind::Delay(
                humantime::parse_duration(delay).map_err(|error| {
                    format!("`delay`: {error}; write a duration such as \"5s\"")
                })?,
            )
        }
        Some("drop") => FaultKind::Drop,
        Some("status") => FaultKind::HttpStatus(
            object
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|status| u16::try_from(status).ok())
                .ok_or("kind `status` needs `status`, a number such as 503")?,
        ),
        Some("returnCode") => FaultKind::ReturnCode(
            text("returnCode")
                .ok_or("kind `returnCode` needs `returnCode`, a string such as \"9000\"")?
                .to_owned(),
        ),
        _ => return Err("`kind` must be \"delay\", \"drop\", \"status\" or \"returnCode\"".into()),
    };
    let stage = match object.get("stage") {
        None => FaultStage::Before,
        Some(Value::String(stage)) if stage == "before" => FaultStage::Before,
        Some(Value::String(stage)) if stage == "after" => FaultStage::After,
        Some(_) => return Err("`stage` must be \"before\" or \"after\"".into()),
    };
    let times = match object.get("times") {
        None => 1,
        Some(times) => times
            .as_u64()
            .and_then(|times| u32::try_from(times).ok())
            .ok_or("`times` must be a whole number")?,
    };
    let order_id = match object.get("orderId") {
        None => None,
        Some(Value::String(order_id)) => Some(order_id.clone()),
        Some(_) => return Err("`orderId` must be a string".into()),
    };
    emulator
        .add_fault(FaultRule {
            route: route.to_owned(),
            kind,
            stage,
            times,
            order_id,
        })
        .map_err(|error| error.to_string())?;
    Ok(faults(emulator))
}

fn buyer(emulator: &Emulator, id: &str, body: &[u8]) -> Result<Value, String> {
    let transaction_id: u64 = id
        .parse()
        .ok()
        .filter(|_| id.bytes().all(|byte| byte.is_ascii_digit()))
        .ok_or("the transactionId in the path must be digits")?;
    let object = object(body, &["action"])?;
    let action = match object.get("action").and_then(Value::as_str) {
        Some("approve") => BuyerAction::Approve,
        Some("cancel") => BuyerAction::Cancel,
        Some("fail") => BuyerAction::Fail,
        _ => return Err("`action` must be \"approve\", \"cancel\" or \"fail\"".into()),
    };
    emulator.buyer(transaction_id, action)?;
    Ok(json!({ "transactionId": transaction_id, "action": object["action"] }))
}

fn one_time_key(emulator: &Emulator, body: &[u8]) -> Result<Value, String> {
    let object = object(body, &["pays", "digits"])?;
    let by_card = match object.get("pays") {
        None => false,
        Some(Value::String(pays)) if pays == "balance" => false,
        Some(Value::String(pays)) if pays == "card" => true,
        Some(_) => return Err("`pays` must be \"balance\" or \"card\"".into()),
    };
    let digits = match object.get("digits") {
        None => 18,
        Some(digits) => digits
            .as_u64()
            .and_then(|digits| usize::try_from(digits).ok())
            .ok_or("`digits` must be 12, 18 or 19")?,
    };
    let (key, expires) = emulator.issue_one_time_key(by_card, digits)?;
    Ok(json!({ "oneTimeKey": key, "expiresAt": expires }))
}

/// The channels served, without their secrets.
fn channels(emulator: &Emulator) -> Value {
    let channels: Vec<Value> = emulator
        .channels()
        .iter()
        .map(|channel| {
            json!({
                "channelId": channel.channel_id,
                "currency": channel.currency.as_str(),
                "requireDeviceHeaders": channel.require_device_headers,
            })
        })
        .collect();
    json!({ "channels": channels })
}

/// A new secret for one channel; the answer is the channel list (no secret in it).
fn rotate_secret(emulator: &Emulator, channel_id: &str, body: &[u8]) -> Result<Value, String> {
    let object = object(body, &["secret"])?;
    let secret = object
        .get("secret")
        .and_then(Value::as_str)
        .filter(|secret| !secret.is_empty())
        .ok_or("`secret` is required: the channel's new secret, a non-empty string")?;
    emulator.set_channel_secret(channel_id, Secret::new(secret))?;
    Ok(channels(emulator))
}

/// A JSON object body with only the `allowed` keys.
fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, String> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        _ => return Err("the body must be a JSON object".into()),
    };
    if let Some(key) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(format!(
            "unknown key `{}`; this call takes {}",
            key.chars().take(40).collect::<String>(),
            allowed.join(", ")
        ));
    }
    Ok(object)
}
