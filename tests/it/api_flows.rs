//! Issue #9's end-to-end proofs: whole payment flows of each API family through the real
//! binary, against the emulator as a separate process (`linepay-sidecar emulator`),
//! which checks every signature, device header and state as LINE Pay does.
//!
//! - a shop app written the way yidas/line-pay-sdk 4.x writes its calls (plain PHP curl,
//!   tests/data/yidas_v4_app.php): its own nonce and signature are replaced by the
//!   sidecar's, and request → confirm → details → capture or void → refund → userInfo
//!   answer `0000` on `/v4`; without `user_info` the last call gets the sidecar's 403
//!   naming the config line;
//! - an offline v4 POS flow with a test one-time key and a percent-encoded orderId;
//! - an offline v2 POS flow with the device headers a channel can require (and `1106`
//!   without them);
//! - rehearsed faults (`1901`, `1280`) reaching the app unchanged and counted.

use crate::examples::{runnable, PHP};
use crate::util::{
    child_exit, eventually, metric, naive_signature, raw_json_number, Call, EmulatorProcess, Reply,
    RunningSidecar, Sidecar, CHANNEL_ID, CHANNEL_SECRET,
};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The longest the PHP app may run before it is killed and the test fails.
const APP_LIMIT: Duration = Duration::from_secs(30);

/// What the PHP app signs with: it holds no real secret behind the sidecar.
const APP_SECRET: &str = "placeholder-the-sidecar-signs";

fn code(reply: &Reply) -> String {
    reply
        .return_code()
        .unwrap_or_else(|| panic!("no returnCode: {} {}", reply.status, reply.text()))
}

/// A sidecar in front of `emulator` with this YAML config.
async fn sidecar(emulator: &EmulatorProcess, name: &str, yaml: &str) -> RunningSidecar {
    Sidecar::new()
        .upstream(emulator.url())
        .config_yaml(name, yaml)
        .start()
        .await
}

struct AppRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl AppRun {
    /// The step lines (`request 0000`, `userInfo HTTP 403 {...}`), in order.
    fn steps(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| !line.starts_with("nonce "))
            .collect()
    }

    /// The nonces the app generated and sent, one per call.
    fn nonces(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix("nonce "))
            .collect()
    }
}

impl std::fmt::Display for AppRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs tests/data/yidas_v4_app.php against `api_url` to completion (bounded).
async fn run_app(api_url: String, order_id: &str, flow: &str) -> AppRun {
    let order_id = order_id.to_owned();
    let flow = flow.to_owned();
    tokio::task::spawn_blocking(move || {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/yidas_v4_app.php");
        let mut command = Command::new("php");
        command
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LINEPAY_") {
                command.env_remove(key);
            }
        }
        command
            .env("LINEPAY_API_URL", api_url)
            .env("LINEPAY_CHANNEL_ID", CHANNEL_ID)
            .env("APP_CHANNEL_SECRET", APP_SECRET)
            .env("ORDER_ID", order_id)
            .env("FLOW", flow);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start php: {error}"));
        let capture = |stream: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut stream) = stream {
                    let _ = stream.read_to_end(&mut bytes);
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = capture(child.stdout.take().map(|s| Box::new(s) as _));
        let stderr = capture(child.stderr.take().map(|s| Box::new(s) as _));
        let status = child_exit(&mut child, APP_LIMIT);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let run = AppRun {
            success: status.is_some_and(|status| status.success()),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        assert!(
            status.is_some(),
            "the PHP app did not finish within {APP_LIMIT:?}:\n{run}"
        );
        run
    })
    .await
    .unwrap_or_else(|error| panic!("the PHP runner panicked: {error}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_yidas_4_style_php_app_runs_every_online_v4_step_through_the_sidecar() {
    if !runnable(&PHP) {
        return;
    }
    let emulator = EmulatorProcess::start(&["--listen", "127.0.0.1:0"]);

    // The app's own headers are wrong for this channel (it signs with a placeholder):
    // straight to the emulator, its first call is refused.
    let direct = run_app(emulator.url(), "yidas-direct", "capture").await;
    assert_eq!(
        direct.steps(),
        ["request 1106"],
        "the app's own signature must not be valid, or this test proves nothing:\n{direct}"
    );

    let sidecar = sidecar(
        &emulator,
        "yidas.yaml",
        "routes:\n  apis: [online_v3, online_v4, user_info]\n",
    )
    .await;
    let captured = run_app(sidecar.url(), "yidas-capture", "capture").await;
    assert!(captured.success, "{captured}");
    assert_eq!(
        captured.steps(),
        [
            "request 0000",
            "confirm 0000",
            "details 0000",
            "capture 0000",
            "refund 0000",
            "userInfo 0000"
        ],
        "{captured}"
    );
    let voided = run_app(sidecar.url(), "yidas-void", "void").await;
    assert!(voided.success, "{voided}");
    assert_eq!(
        voided.steps(),
        [
            "request 0000",
            "confirm 0000",
            "details 0000",
            "void 0000",
            "userInfo 0000"
        ],
        "{voided}"
    );

    // The nonces are the SDK's (an ISO 8601 date and a uniqid), and none reached the
    // emulator: the sidecar replaced every one (and the signature over it).
    let nonces: Vec<&str> = captured
        .nonces()
        .into_iter()
        .chain(voided.nonces())
        .collect();
    assert_eq!(nonces.len(), 11, "{captured}\n{voided}");
    let log = wait_for_log(&emulator, "signature verified", 11).await;
    for nonce in &nonces {
        let date = nonce
            .get(..25)
            .unwrap_or_else(|| panic!("short nonce {nonce}"));
        assert!(
            date.as_bytes()[4] == b'-' && date.as_bytes()[10] == b'T' && date.contains(':'),
            "not yidas' date('c') nonce: {nonce}"
        );
        assert!(
            !log.contains(nonce),
            "the app's nonce {nonce} reached the emulator:\n{log}"
        );
    }

    // The default families leave userInfo off: every other step still works, and the
    // refusal names the line that enables it.
    let default_families = Sidecar::new().upstream(emulator.url()).start().await;
    let refused = run_app(default_families.url(), "yidas-no-user-info", "capture").await;
    assert!(!refused.success, "{refused}");
    let steps = refused.steps();
    assert_eq!(
        steps[..5],
        [
            "request 0000",
            "confirm 0000",
            "details 0000",
            "capture 0000",
            "refund 0000"
        ],
        "{refused}"
    );
    let last = steps
        .get(5)
        .and_then(|line| line.strip_prefix("userInfo HTTP 403 "))
        .unwrap_or_else(|| panic!("userInfo must be the sidecar's 403:\n{refused}"));
    let error: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|error| panic!("{error}: {last}"));
    assert_eq!(error["error"]["code"], "api_family_disabled", "{last}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("routes.apis: [online_v3, online_v4, user_info]"),
        "the refusal must name the config line: {message}"
    );
    // Nothing forwarded: the emulator saw the five other calls, and only the two
    // userInfo calls of the flows above.
    let log = wait_for_log(&emulator, "signature verified", 16).await;
    assert_eq!(
        log.matches(r#"endpoint="userInfo""#).count(),
        2,
        "the refused userInfo must not reach the emulator:\n{log}"
    );
}

/// Waits (bounded) until the emulator has logged `needle` `count` times (its log is read
/// from a pipe, so a line may arrive just after the answer); returns the log.
async fn wait_for_log(emulator: &EmulatorProcess, needle: &str, count: usize) -> String {
    eventually(
        &format!("{count} × `{needle}` in the emulator's log"),
        || async {
            let log = emulator.log();
            match log.matches(needle).count() {
                seen if seen == count => Ok(log),
                _ => Err(log),
            }
        },
    )
    .await
}

/// An offline payment body.
fn pos_payment(order_id: &str, one_time_key: &str, capture: bool) -> String {
    format!(
        r#"{{"productName":"Tea","amount":180,"currency":"TWD","orderId":"{order_id}","oneTimeKey":"{one_time_key}","capture":{capture}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_v4_pos_flow_pays_with_a_test_key_checks_an_encoded_order_and_refunds() {
    let emulator = EmulatorProcess::start(&["--listen", "127.0.0.1:0"]);
    let sidecar = sidecar(&emulator, "pos-v4.yaml", "routes:\n  apis: [offline_v4]\n").await;
    // A merchant's own orderId with a space, a `+`, a `#` and Chinese characters: the
    // POS percent-encodes it in the path, the sidecar signs and forwards it as received.
    let order_id = "POS 7+訂單#42";
    let encoded = "POS%207%2B%E8%A8%82%E5%96%AE%2342";

    let paid = Call::post(
        "/v4/payments/oneTimeKeys/pay",
        pos_payment(order_id, "123456789012", true),
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(code(&paid), "0000", "{}", paid.text());
    let transaction_id = raw_json_number(&paid.text(), "transactionId").expect("transactionId");

    let check = Call::get(&format!("/v4/payments/orders/{encoded}/check"))
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&check), "0000", "{}", check.text());
    assert_eq!(
        raw_json_number(&check.text(), "transactionId").as_deref(),
        Some(transaction_id.as_str()),
        "the check found the paid order: {}",
        check.text()
    );
    assert_eq!(
        check.json()["info"]["orderId"],
        order_id,
        "{}",
        check.text()
    );

    let refund = Call::post(
        &format!("/v4/payments/orders/{encoded}/refund"),
        r#"{"refundAmount":80}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(code(&refund), "0000", "{}", refund.text());
    let rest = Call::post(&format!("/v4/payments/orders/{encoded}/refund"), "")
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&rest), "0000", "the rest: {}", rest.text());
    let again = Call::post(&format!("/v4/payments/orders/{encoded}/refund"), "")
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&again), "1165", "all refunded: {}", again.text());

    // The path the emulator verified is the encoded one the POS sent.
    wait_for_log(
        &emulator,
        &format!(r#"path="/v4/payments/orders/{encoded}/check""#),
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_v2_pos_flow_sends_the_device_headers_the_channel_requires() {
    let emulator = EmulatorProcess::start(&["--listen", "127.0.0.1:0", "--require-device-headers"]);
    let with_device = sidecar(
        &emulator,
        "pos-v2.yaml",
        "routes:\n  apis: [offline_v2]\n\
         credentials:\n  merchant_device_profile_id: TILL-03\n  merchant_device_type: POS\n",
    )
    .await;

    let paid = Call::post(
        "/v2/payments/oneTimeKeys/pay",
        pos_payment("pos-v2-paid", "412345678901234567", true),
    )
    .send(with_device.addr)
    .await;
    assert_eq!(code(&paid), "0000", "{}", paid.text());
    let check = Call::get("/v2/payments/orders/pos-v2-paid/check")
        .send(with_device.addr)
        .await;
    assert_eq!(code(&check), "0000", "{}", check.text());
    let refund = Call::post("/v2/payments/orders/pos-v2-paid/refund", "{}")
        .send(with_device.addr)
        .await;
    assert_eq!(code(&refund), "0000", "{}", refund.text());

    let authorised = Call::post(
        "/v2/payments/oneTimeKeys/pay",
        pos_payment("pos-v2-authorised", "123456789012", false),
    )
    .send(with_device.addr)
    .await;
    assert_eq!(code(&authorised), "0000", "{}", authorised.text());
    let void = Call::post("/v2/payments/orders/pos-v2-authorised/void", "")
        .send(with_device.addr)
        .await;
    assert_eq!(code(&void), "0000", "{}", void.text());
    let check = Call::get("/v2/payments/orders/pos-v2-authorised/check")
        .send(with_device.addr)
        .await;
    assert_eq!(code(&check), "0000", "{}", check.text());
    assert_eq!(
        check.json()["info"]["payStatus"],
        "VOIDED_AUTHORIZATION",
        "{}",
        check.text()
    );

    // The same sidecar without the device headers: the channel refuses every call.
    let without_device = sidecar(
        &emulator,
        "pos-v2-bare.yaml",
        "routes:\n  apis: [offline_v2]\n",
    )
    .await;
    let refused = Call::post(
        "/v2/payments/oneTimeKeys/pay",
        pos_payment("pos-v2-bare", "123456789012", true),
    )
    .send(without_device.addr)
    .await;
    assert_eq!(refused.status, 200, "LINE Pay's answer: {}", refused.text());
    assert_eq!(code(&refused), "1106", "{}", refused.text());
    let check = Call::get("/v2/payments/orders/pos-v2-paid/check")
        .send(without_device.addr)
        .await;
    assert_eq!(code(&check), "1106", "{}", check.text());
}

/// Asks the emulator's control API for a fault on the next call of `route`.
async fn add_fault(emulator: &EmulatorProcess, rule: &str) {
    let reply = Call::post("/__emulator/faults", rule.to_owned())
        .send(emulator.addr)
        .await;
    assert_eq!(reply.status, 200, "{rule}: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn rehearsed_return_codes_reach_the_app_unchanged_and_are_counted() {
    let emulator = EmulatorProcess::start(&["--listen", "127.0.0.1:0"]);
    let sidecar = sidecar(&emulator, "faults.yaml", "routes:\n  apis: [online_v4]\n").await;
    let request = r#"{"amount":300,"currency":"TWD","orderId":"fault-flow","packages":[{"id":"p","amount":300,"products":[{"name":"Beans","quantity":1,"price":300}]}],"redirectUrls":{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}}"#;

    // A temporary error on the request, twice: once as the emulator answers it to a
    // direct call, once through the sidecar, byte for byte the same. Nothing is
    // reserved, so the same orderId goes through on the retry.
    add_fault(
        &emulator,
        r#"{"route":"request","kind":"returnCode","returnCode":"1901","times":2}"#,
    )
    .await;
    let nonce = "direct-call-nonce-1";
    let direct = Call::post("/v4/payments/request", request)
        .header("X-LINE-ChannelId", CHANNEL_ID)
        .header("X-LINE-Authorization-Nonce", nonce)
        .header(
            "X-LINE-Authorization",
            &naive_signature(
                CHANNEL_SECRET,
                "/v4/payments/request",
                request.as_bytes(),
                nonce,
            ),
        )
        .send(emulator.addr)
        .await;
    assert_eq!(code(&direct), "1901", "{}", direct.text());
    let temporary = Call::post("/v4/payments/request", request)
        .send(sidecar.addr)
        .await;
    assert_eq!(temporary.status, 200, "{}", temporary.text());
    assert_eq!(temporary.sidecar_error(), None, "{}", temporary.text());
    assert_eq!(code(&temporary), "1901", "{}", temporary.text());
    assert_eq!(
        temporary.text(),
        direct.text(),
        "the emulator's answer, unchanged"
    );
    let retried = Call::post("/v4/payments/request", request)
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&retried), "0000", "{}", retried.text());
    let id = raw_json_number(&retried.text(), "transactionId").expect("transactionId");

    // A card error on confirm.
    add_fault(
        &emulator,
        r#"{"route":"confirm","kind":"returnCode","returnCode":"1280"}"#,
    )
    .await;
    let declined = Call::post(
        &format!("/v4/payments/{id}/confirm"),
        r#"{"amount":300,"currency":"TWD"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(declined.status, 200, "{}", declined.text());
    assert_eq!(code(&declined), "1280", "{}", declined.text());
    assert!(
        declined.json()["returnMessage"].is_string(),
        "{}",
        declined.text()
    );

    let scrape = sidecar.scrape().await;
    let series = |route: &str, return_code: &str| {
        format!(
            r#"linepay_sidecar_requests_total{{family="online_v4",method="POST",return_code="{return_code}",route="{route}",status="200"}}"#
        )
    };
    assert_eq!(
        metric(&scrape, &series("/v4/payments/request", "190X")),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        metric(&scrape, &series("/v4/payments/request", "0000")),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        metric(
            &scrape,
            &series("/v4/payments/{transactionId}/confirm", "1280")
        ),
        Some(1.0),
        "{scrape}"
    );
    // Both faults were consumed: the emulator has none left waiting.
    let waiting = Call::get("/__emulator/faults").send(emulator.addr).await;
    assert_eq!(
        waiting.json()["faults"],
        serde_json::json!([]),
        "{}",
        waiting.text()
    );
}
