//! Issue 19's end-to-end proofs: one sidecar, several LINE Pay channels, through the
//! real binary and an emulator that serves the same channels and checks, for each
//! call, that it carries the id and the signature of one channel (else `1106`) and
//! touches only that channel's payments (else `1150`).
//!
//! - a web channel (online v3: request → confirm → refund) on one port and a POS
//!   channel (offline v4: one-time-key pay → order check → refund, with its device
//!   headers) on another both complete their flows, each port keeps to its channel's
//!   API families, refuses a header naming the other channel (400 `channel_mismatch`),
//!   and the metrics count each channel's answers;
//! - on the shared port, `X-LinePay-Channel` picks the channel (its id, secret and
//!   currency), and is never forwarded;
//! - a missing or unknown channel name is refused (400 `channel_required`,
//!   `unknown_channel`, naming no configured channel) and nothing reaches LINE Pay;
//!   `default_channel` serves calls without the header;
//! - one channel's rotated secret applies on reload (SIGHUP) while the other channel's
//!   calls keep answering `0000` throughout.
//!
//! Also: one single-channel sidecar per channel, both in front of the same two-channel
//! emulator (the set-up issue 19 replaces, which must keep working).

use crate::util::channels::{emulator_for, ChannelSpec, ChannelsConfig, POS, WEB};
use crate::util::{naive_signature, raw_json_number, Call, Reply, Sidecar, Upstream, WAIT_LIMIT};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The header that picks a channel on the shared port.
const CHANNEL_HEADER: &str = "X-LinePay-Channel";

fn code(reply: &Reply) -> String {
    reply
        .return_code()
        .unwrap_or_else(|| panic!("no returnCode: {} {}", reply.status, reply.text()))
}

/// A `/payments/request` body of 100 in `currency`.
fn order(order_id: &str, currency: &str) -> String {
    format!(
        r#"{{"amount":100,"currency":"{currency}","orderId":"{order_id}","packages":[{{"id":"p1","amount":100,"products":[{{"name":"Tea","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}}}"#
    )
}

/// An offline payment body of 180 in `currency` with a one-time key (each key pays
/// once at the emulator: every payment needs its own).
fn pos_payment(order_id: &str, one_time_key: &str, currency: &str) -> String {
    format!(
        r#"{{"productName":"Tea","amount":180,"currency":"{currency}","orderId":"{order_id}","oneTimeKey":"{one_time_key}","capture":true}}"#
    )
}

/// Reserves a web payment at `addr` (with the header when `channel` is given): the
/// answer's returnCode and transaction id (as the digits on the wire).
async fn web_request(
    addr: SocketAddr,
    channel: Option<&str>,
    order_id: &str,
) -> (String, Option<String>) {
    let mut call = Call::post("/v3/payments/request", order(order_id, WEB.currency));
    if let Some(name) = channel {
        call = call.header(CHANNEL_HEADER, name);
    }
    let reply = call.send(addr).await;
    (
        code(&reply),
        raw_json_number(&reply.text(), "transactionId"),
    )
}

/// The web shop's whole flow at `addr`: request → confirm → details → refund, online
/// v3, in TWD; every step `0000`. Returns the transaction id.
async fn web_flow(addr: SocketAddr, order_id: &str) -> String {
    let (reserved, transaction_id) = web_request(addr, None, order_id).await;
    assert_eq!(reserved, "0000", "request of {order_id}");
    let transaction_id = transaction_id.expect("the request answers a transactionId");
    let confirm = Call::post(
        &format!("/v3/payments/{transaction_id}/confirm"),
        r#"{"amount":100,"currency":"TWD"}"#,
    )
    .send(addr)
    .await;
    assert_eq!(code(&confirm), "0000", "confirm: {}", confirm.text());
    let details = Call::get(&format!("/v3/payments?transactionId={transaction_id}"))
        .send(addr)
        .await;
    assert_eq!(code(&details), "0000", "details: {}", details.text());
    assert_eq!(details.json()["info"][0]["currency"], "TWD");
    let refund = Call::post(
        &format!("/v3/payments/{transaction_id}/refund"),
        r#"{"refundAmount":40}"#,
    )
    .send(addr)
    .await;
    assert_eq!(code(&refund), "0000", "refund: {}", refund.text());
    transaction_id
}

/// The terminals' whole flow at `addr`: one-time-key pay → order check → refund,
/// offline v4, in THB, with the device headers the emulated POS channel requires
/// (else `1106`); every step `0000`. Returns the transaction id.
async fn pos_flow(addr: SocketAddr, order_id: &str, one_time_key: &str) -> String {
    let paid = Call::post(
        "/v4/payments/oneTimeKeys/pay",
        pos_payment(order_id, one_time_key, POS.currency),
    )
    .send(addr)
    .await;
    assert_eq!(code(&paid), "0000", "pay: {}", paid.text());
    let transaction_id = raw_json_number(&paid.text(), "transactionId").expect("transactionId");
    let check = Call::get(&format!("/v4/payments/orders/{order_id}/check"))
        .send(addr)
        .await;
    assert_eq!(code(&check), "0000", "check: {}", check.text());
    assert_eq!(
        raw_json_number(&check.text(), "transactionId").as_deref(),
        Some(transaction_id.as_str()),
        "the check found the POS payment: {}",
        check.text()
    );
    assert_eq!(check.json()["info"]["currency"], "THB");
    let refund = Call::post(
        &format!("/v4/payments/orders/{order_id}/refund"),
        r#"{"refundAmount":80}"#,
    )
    .send(addr)
    .await;
    assert_eq!(code(&refund), "0000", "refund: {}", refund.text());
    transaction_id
}

/// Today's way, which must keep working: one single-channel sidecar per channel
/// (`credentials:`), both in front of one emulator serving both channels. It also
/// proves the flows above against the emulator with the released sidecar.
#[tokio::test(flavor = "multi_thread")]
async fn one_sidecar_per_channel_in_front_of_one_emulator_serving_both() {
    let emulator = emulator_for(&WEB, &[&POS]).start().await;
    let single = |channel: &ChannelSpec, yaml: &str| {
        Sidecar::new()
            .without_credentials()
            .arg("--channel-id")
            .arg(channel.channel_id)
            .env("LINEPAY_CHANNEL_SECRET", channel.secret)
            .upstream(emulator.url())
            .config_yaml(&format!("{}.yaml", channel.name), yaml)
    };
    let web = single(&WEB, "routes:\n  apis: [online_v3]\n").start().await;
    let pos = single(
        &POS,
        "routes:\n  apis: [offline_v4]\ncredentials:\n  merchant_device_profile_id: TILL-07\n  merchant_device_type: POS\n",
    )
    .start()
    .await;

    let web_transaction = web_flow(web.addr, "single-web-1").await;
    let pos_transaction = pos_flow(pos.addr, "single-till-1", "123456789012").await;
    assert_ne!(web_transaction, pos_transaction);

    // A sidecar given one channel's id with the other's secret: LINE Pay's 1106.
    let crossed = Sidecar::new()
        .without_credentials()
        .arg("--channel-id")
        .arg(WEB.channel_id)
        .env("LINEPAY_CHANNEL_SECRET", POS.secret)
        .upstream(emulator.url())
        .start()
        .await;
    let (reserved, _) = web_request(crossed.addr, None, "single-crossed-1").await;
    assert_eq!(reserved, "1106");
}

#[tokio::test(flavor = "multi_thread")]

async fn a_web_channel_and_a_pos_channel_complete_their_flows_on_their_own_ports() {
    let emulator = emulator_for(&WEB, &[&POS]).start().await;
    let config = ChannelsConfig::new("")
        .channel_on_own_port(&WEB)
        .channel_on_own_port(&POS);
    let sidecar = config.sidecar().upstream(emulator.url()).start().await;
    let (web, pos) = (sidecar.channel_addr("web"), sidecar.channel_addr("pos"));

    let web_transaction = web_flow(web, "web-flow-1").await;
    let pos_transaction = pos_flow(pos, "till-7-0001", "123456789012").await;
    assert_ne!(web_transaction, pos_transaction);

    // Each port keeps to its channel's API families.
    let offline_on_web = Call::post(
        "/v4/payments/oneTimeKeys/pay",
        pos_payment("till-7-0002", "234567890123", POS.currency),
    )
    .send(web)
    .await;
    offline_on_web.assert_sidecar_error(403, "api_family_disabled");
    let online_on_pos = Call::post("/v3/payments/request", order("web-flow-2", "TWD"))
        .send(pos)
        .await;
    online_on_pos.assert_sidecar_error(403, "api_family_disabled");

    // On a channel's own port, a header naming the other channel is refused: which
    // secret the app meant is unknowable. Nothing reaches LINE Pay.
    let before = emulator.calls();
    let mismatch = Call::post("/v3/payments/request", order("web-flow-3", "TWD"))
        .header(CHANNEL_HEADER, "pos")
        .send(web)
        .await;
    mismatch.assert_sidecar_error(400, "channel_mismatch");
    assert_eq!(emulator.calls(), before, "a refused call reached LINE Pay");
    // Naming the port's own channel is fine.
    let named = Call::post("/v3/payments/request", order("web-flow-4", "TWD"))
        .header(CHANNEL_HEADER, "web")
        .send(web)
        .await;
    assert_eq!(code(&named), "0000", "{}", named.text());

    // The metrics tell the channels apart: web answered 0000 five times (request,
    // confirm, details, refund, the named request), pos three times.
    let scrape = sidecar.scrape().await;
    assert_eq!(channel_answers(&scrape, "web", "0000"), 5.0, "{scrape}");
    assert_eq!(channel_answers(&scrape, "pos", "0000"), 3.0, "{scrape}");
}

/// The calls `channel` answered with `return_code`, summed over the other labels of
/// `linepay_sidecar_channel_requests_total`.
fn channel_answers(scrape: &str, channel: &str, return_code: &str) -> f64 {
    let (channel, return_code) = (
        format!("channel=\"{channel}\""),
        format!("return_code=\"{return_code}\""),
    );
    scrape
        .lines()
        .filter(|line| {
            line.starts_with("linepay_sidecar_channel_requests_total{")
                && line.contains(&channel)
                && line.contains(&return_code)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]

async fn on_the_shared_port_the_header_picks_the_channel() {
    // Both channels take both families here, so only the header tells them apart;
    // the emulator tells which channel signed by its currency: web is TWD, pos THB.
    let web = WEB.with_apis(&["online_v3", "offline_v4"]);
    let pos = POS.with_apis(&["online_v3", "offline_v4"]);
    let emulator = emulator_for(&web, &[&pos]).start().await;
    let config = ChannelsConfig::new("").channel(&web).channel(&pos);
    let sidecar = config.sidecar().upstream(emulator.url()).start().await;

    let request = |name: &'static str, order_id: &'static str, currency: &'static str| {
        Call::post("/v3/payments/request", order(order_id, currency))
            .header(CHANNEL_HEADER, name)
            .send(sidecar.addr)
    };
    // Signed as the named channel (its id and secret, else 1106), held to its
    // currency (else 1178).
    assert_eq!(code(&request("web", "shared-1", "TWD").await), "0000");
    assert_eq!(code(&request("pos", "shared-2", "THB").await), "0000");
    assert_eq!(code(&request("web", "shared-3", "THB").await), "1178");
    assert_eq!(code(&request("pos", "shared-4", "TWD").await), "1178");

    let paid = Call::post(
        "/v4/payments/oneTimeKeys/pay",
        pos_payment("shared-till-1", "345678901234", "THB"),
    )
    .header(CHANNEL_HEADER, "pos")
    .send(sidecar.addr)
    .await;
    assert_eq!(code(&paid), "0000", "{}", paid.text());

    // A web payment is the web channel's: confirmed under the POS channel it is not
    // (the sidecar refuses it from its journal, 409 transaction_of_another_channel, or
    // LINE Pay answers 1150), and that mistaken call must not lock the web channel out
    // of its own payment: the web channel then confirms it.
    let (reserved, transaction_id) = web_request(sidecar.addr, Some("web"), "shared-5").await;
    assert_eq!(reserved, "0000");
    let transaction_id = transaction_id.expect("transactionId");
    let confirm = |name: &'static str, currency: &'static str| {
        Call::post(
            &format!("/v3/payments/{transaction_id}/confirm"),
            format!(r#"{{"amount":100,"currency":"{currency}"}}"#),
        )
        .header(CHANNEL_HEADER, name)
        .send(sidecar.addr)
    };
    let crossed = confirm("pos", "THB").await;
    assert!(
        crossed.return_code().as_deref() != Some("0000"),
        "the POS channel confirmed a web payment: {} {}",
        crossed.status,
        crossed.text()
    );
    let own = confirm("web", "TWD").await;
    assert_eq!(code(&own), "0000", "{}", own.text());
}

#[tokio::test(flavor = "multi_thread")]

async fn the_channel_header_is_never_forwarded_and_only_that_channels_secret_signs() {
    let upstream = Upstream::recording().start().await;
    let config = ChannelsConfig::new("").channel(&WEB).channel(&POS);
    let sidecar = config.sidecar().upstream(upstream.url()).start().await;

    let web = Call::post("/v3/payments/request", order("signed-web", "TWD"))
        .header(CHANNEL_HEADER, "web")
        .send(sidecar.addr)
        .await;
    assert_eq!(web.status, 200, "{}", web.text());
    let pos = Call::get("/v4/payments/orders/till-7-0009/check")
        .header(CHANNEL_HEADER, "pos")
        .send(sidecar.addr)
        .await;
    assert_eq!(pos.status, 200, "{}", pos.text());

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for (request, channel, other) in [(&requests[0], &WEB, &POS), (&requests[1], &POS, &WEB)] {
        assert!(
            request.all("x-linepay-channel").is_empty(),
            "the header was forwarded: {request:?}"
        );
        assert_eq!(request.single("x-line-channelid"), channel.channel_id);
        // POST signs the body, GET the (empty) query.
        let payload: &[u8] = if request.method == http::Method::GET {
            b""
        } else {
            &request.body
        };
        let nonce = request.single("x-line-authorization-nonce");
        let signature = request.single("x-line-authorization");
        assert_eq!(
            signature,
            naive_signature(channel.secret, request.path(), payload, &nonce),
            "{} not signed with its own secret",
            channel.name
        );
        assert_ne!(
            signature,
            naive_signature(other.secret, request.path(), payload, &nonce),
            "{} signed with the other channel's secret",
            channel.name
        );
        // Each channel's device headers, and only its own.
        let device = channel
            .device
            .map(|(profile, kind)| (profile.to_owned(), kind.to_owned()));
        let sent = (
            request.all("x-line-merchantdeviceprofileid"),
            request.all("x-line-merchantdevicetype"),
        );
        match device {
            Some((profile, kind)) => assert_eq!(sent, (vec![profile], vec![kind])),
            None => assert_eq!(sent, (Vec::new(), Vec::new())),
        }
    }
}

/// The words of `text` (runs of `[a-z0-9_-]`, lowercased): to look for a channel's
/// name without matching it inside another word.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `linepay_sidecar_refusals_total` count of `code`, whatever other labels the
/// series has (a `channel` label, for one).
fn refusals(scrape: &str, code: &str) -> f64 {
    let label = format!("code=\"{code}\"");
    scrape
        .lines()
        .filter(|line| line.starts_with("linepay_sidecar_refusals_total{") && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]

async fn a_missing_or_unknown_channel_name_is_refused_and_never_forwarded() {
    let upstream = Upstream::recording().start().await;
    let config = ChannelsConfig::new("").channel(&WEB).channel(&POS);
    let sidecar = config.sidecar().upstream(upstream.url()).start().await;

    let request = || Call::post("/v3/payments/request", order("unnamed-1", "TWD"));
    let missing = request().send(sidecar.addr).await;
    missing.assert_sidecar_error(400, "channel_required");
    let unknown = request()
        .header(CHANNEL_HEADER, "nosuch")
        .send(sidecar.addr)
        .await;
    unknown.assert_sidecar_error(400, "unknown_channel");
    let wrong_case = request()
        .header(CHANNEL_HEADER, "WEB")
        .send(sidecar.addr)
        .await;
    wrong_case.assert_sidecar_error(400, "unknown_channel");
    // A refusal names no configured channel (nor its id): a caller learns nothing
    // by guessing.
    for reply in [&missing, &unknown, &wrong_case] {
        let text = reply.text();
        let words = words(&text);
        for hidden in [WEB.name, POS.name, WEB.channel_id, POS.channel_id] {
            assert!(
                !words.iter().any(|word| word == hidden),
                "`{hidden}` in {text}"
            );
        }
    }
    assert_eq!(upstream.count(), 0, "a refused call reached LINE Pay");

    // The same call with a name goes through: the upstream did listen.
    let named = request()
        .header(CHANNEL_HEADER, "web")
        .send(sidecar.addr)
        .await;
    assert_eq!(named.status, 200, "{}", named.text());
    assert_eq!(upstream.count(), 1);

    let scrape = sidecar.scrape().await;
    assert_eq!(refusals(&scrape, "channel_required"), 1.0, "{scrape}");
    assert_eq!(refusals(&scrape, "unknown_channel"), 2.0, "{scrape}");
}

#[tokio::test(flavor = "multi_thread")]

async fn default_channel_serves_calls_without_the_header() {
    let upstream = Upstream::recording().start().await;
    let config = ChannelsConfig::new("")
        .default_channel("pos")
        .channel(&WEB.with_apis(&["online_v3", "offline_v4"]))
        .channel(&POS);
    let sidecar = config.sidecar().upstream(upstream.url()).start().await;

    let reply = Call::get("/v4/payments/orders/till-7-0010/check")
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let named = Call::get("/v4/payments/orders/till-7-0011/check")
        .header(CHANNEL_HEADER, "web")
        .send(sidecar.addr)
        .await;
    assert_eq!(named.status, 200, "{}", named.text());
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].single("x-line-channelid"), POS.channel_id);
    assert_eq!(requests[1].single("x-line-channelid"), WEB.channel_id);
    // An unknown name is still refused: the default is not a fallback for a typo.
    let unknown = Call::get("/v4/payments/orders/till-7-0012/check")
        .header(CHANNEL_HEADER, "nosuch")
        .send(sidecar.addr)
        .await;
    unknown.assert_sidecar_error(400, "unknown_channel");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]

async fn one_channels_rotated_secret_applies_on_reload_while_the_other_keeps_answering() {
    const ROTATED: &str = "pos-secret-it-rotated-71c0e5a9";
    let emulator = emulator_for(&WEB, &[&POS]).start().await;
    // No file watching: the reload happens on SIGHUP, when the test says.
    let config = ChannelsConfig::new("reload:\n  watch_interval: 0s\n")
        .channel_on_own_port(&WEB)
        .channel_on_own_port(&POS);
    let sidecar = config.sidecar().upstream(emulator.url()).start().await;
    let (web, pos) = (sidecar.channel_addr("web"), sidecar.channel_addr("pos"));
    // Fresh one-time keys, one per payment (12 digits, paid from the balance).
    let pos_pay = |n: u32| {
        Call::post(
            "/v4/payments/oneTimeKeys/pay",
            pos_payment(&format!("rotate-till-{n}"), &format!("2{n:011}"), "THB"),
        )
        .send(pos)
    };
    assert_eq!(code(&pos_pay(1).await), "0000");

    // The web shop keeps calling through the rotation; every answer must be 0000.
    let stop = Arc::new(AtomicBool::new(false));
    let web_calls = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut codes = Vec::new();
            let deadline = tokio::time::Instant::now() + WAIT_LIMIT * 2;
            // Bounded in count and time, whatever the rest of the test does.
            for n in 0..400 {
                if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() >= deadline {
                    break;
                }
                let reply = Call::post(
                    "/v3/payments/request",
                    order(&format!("rotate-web-{n}"), "TWD"),
                )
                .send(web)
                .await;
                codes.push(
                    reply
                        .return_code()
                        .unwrap_or_else(|| format!("HTTP {} {}", reply.status, reply.text())),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            codes
        }
    });

    // The merchant issues a new POS secret at LINE Pay: the sidecar still signs with
    // the old one until it reloads.
    emulator.set_channel_secret(POS.channel_id, ROTATED);
    assert_eq!(code(&pos_pay(2).await), "1106", "the old secret is refused");

    config.rotate_secret("pos", ROTATED);
    sidecar.signal("HUP");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="success"}"#,
            1.0,
        )
        .await;
    let after = pos_pay(3).await;
    assert_eq!(code(&after), "0000", "the new secret: {}", after.text());

    stop.store(true, Ordering::Relaxed);
    let codes = web_calls.await.expect("the web calls ran");
    assert!(
        !codes.is_empty(),
        "no web call was made during the rotation"
    );
    assert!(
        codes.iter().all(|code| code == "0000"),
        "a web call did not answer 0000 during the POS rotation: {codes:?}"
    );
    let (code, _) = web_request(web, None, "rotate-web-after").await;
    assert_eq!(code, "0000");
}
