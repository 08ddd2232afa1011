//! Which channel a call is made as, through the real binary and recording upstreams (one
//! per channel): the shared port picks by `X-LinePay-Channel`, a channel's own port is
//! that channel, refusals never reach LINE Pay, and each channel's calls carry its own
//! id, device headers and signature only. (The flows against the emulator are in
//! `channels.rs`.)

use crate::util::{metric, naive_signature, Call, Cli, Recorded, Sidecar, TempFile, Upstream};

const WEB_ID: &str = "1000000001";
const POS_ID: &str = "2000000002";
const WEB_SECRET: &str = "web-channel-secret-0123456789ab";
const POS_SECRET: &str = "pos-channel-secret-ba9876543210";

struct Setup {
    web_secret: TempFile,
    pos_secret: TempFile,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            web_secret: TempFile::with_contents("web-secret", WEB_SECRET.as_bytes()),
            pos_secret: TempFile::with_contents("pos-secret", format!("{POS_SECRET}\n").as_bytes()),
        }
    }

    /// web: online, on the shared port only; pos: offline v4, its own port, device
    /// headers and a bucket of 2 calls a minute. No `default_channel`.
    fn yaml(&self, web_upstream: &str, pos_upstream: &str, default: Option<&str>) -> String {
        let default = default.map_or(String::new(), |name| format!("default_channel: {name}\n"));
        format!(
            r#"{default}reload:
  watch_interval: 0s
routes:
  apis: [online_v3, online_v4]
channels:
  web:
    channel_id: "{WEB_ID}"
    channel_secret_file: {web}
    upstream: {{ url: "{web_upstream}" }}
  pos:
    channel_id: "{POS_ID}"
    channel_secret_file: {pos}
    apis: [offline_v4]
    upstream: {{ url: "{pos_upstream}" }}
    listen: 127.0.0.1:0
    merchant_device_profile_id: POS-0001
    merchant_device_type: POS
    limits: {{ channel: 2/m }}
"#,
            web = self.web_secret.path_str(),
            pos = self.pos_secret.path_str(),
        )
    }
}

/// The request was signed with `secret` (checked with an HMAC computed here) and with
/// no other channel's.
fn assert_signed_with(request: &Recorded, secret: &str, other: &str) {
    let nonce = request.single("x-line-authorization-nonce");
    let payload = match request.method {
        http::Method::GET => request.query().unwrap_or("").as_bytes().to_vec(),
        _ => request.body.to_vec(),
    };
    let signature = request.single("x-line-authorization");
    assert_eq!(
        signature,
        naive_signature(secret, request.path(), &payload, &nonce),
        "not signed with the channel's secret: {}",
        request.target
    );
    assert_ne!(
        signature,
        naive_signature(other, request.path(), &payload, &nonce)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_port_or_the_header_picks_the_channel_and_refusals_never_reach_line_pay() {
    let web_upstream = Upstream::recording().start().await;
    let pos_upstream = Upstream::recording().start().await;
    let setup = Setup::new();
    let sidecar = Sidecar::new()
        .without_credentials()
        .config_yaml(
            "channels.yaml",
            setup.yaml(&web_upstream.url(), &pos_upstream.url(), None),
        )
        .start()
        .await;
    let pos_port = sidecar.channel_addr("pos");
    assert_ne!(pos_port, sidecar.addr);

    // The shared port, named by the header: web's id, web's secret, web's upstream; the
    // header itself stays with the sidecar.
    let details = Call::get("/v3/payments?transactionId=1234567890123456789")
        .header("X-LinePay-Channel", "web")
        .send(sidecar.addr)
        .await;
    assert_eq!(details.status, 200, "{}", details.text());
    let sent = web_upstream.only_request();
    assert_eq!(sent.single("x-line-channelid"), WEB_ID);
    assert!(
        sent.all("x-linepay-channel").is_empty(),
        "the header was forwarded"
    );
    assert!(sent.all("x-line-merchantdevicetype").is_empty());
    assert_signed_with(&sent, WEB_SECRET, POS_SECRET);

    // No header and no default_channel; an unknown name; a repeated header: refused,
    // and the answer names no configured channel.
    let cases = [
        ("no header", vec![], 400, "channel_required"),
        ("unknown", vec!["shop"], 400, "unknown_channel"),
        ("repeated", vec!["web", "web"], 400, "unknown_channel"),
    ];
    for (case, names, status, code) in cases {
        let mut call = Call::get("/v3/payments?transactionId=1");
        for name in names {
            call = call.header("X-LinePay-Channel", name);
        }
        let refused = call.send(sidecar.addr).await;
        refused.assert_case_sidecar_error(case, status, code);
        let text = refused.text();
        assert!(
            !text.contains("pos") && !text.contains(POS_ID),
            "{case}: {text}"
        );
    }

    // The POS port is the POS channel: offline v4, its id, device headers and secret.
    let check = Call::get("/v4/payments/orders/pos-order-1/check")
        .send(pos_port)
        .await;
    assert_eq!(check.status, 200, "{}", check.text());
    let sent = pos_upstream.only_request();
    assert_eq!(sent.single("x-line-channelid"), POS_ID);
    assert_eq!(sent.single("x-line-merchantdeviceprofileid"), "POS-0001");
    assert_eq!(sent.single("x-line-merchantdevicetype"), "POS");
    assert_signed_with(&sent, POS_SECRET, WEB_SECRET);

    // Naming the same channel on its port is fine; naming another is refused.
    let same = Call::get("/v4/payments/orders/pos-order-2/check")
        .header("X-LinePay-Channel", "pos")
        .send(pos_port)
        .await;
    assert_eq!(same.status, 200, "{}", same.text());
    Call::get("/v4/payments/orders/pos-order-3/check")
        .header("X-LinePay-Channel", "web")
        .send(pos_port)
        .await
        .assert_sidecar_error(400, "channel_mismatch");

    // Each channel's allowlist: web has no offline family, pos no online one.
    Call::get("/v4/payments/orders/pos-order-4/check")
        .header("X-LinePay-Channel", "web")
        .send(sidecar.addr)
        .await
        .assert_sidecar_error(403, "api_family_disabled");
    Call::get("/v3/payments?transactionId=1")
        .send(pos_port)
        .await
        .assert_sidecar_error(403, "api_family_disabled");

    // pos's own bucket (2/m) is spent by its two calls; web's calls go on.
    let limited = Call::get("/v4/payments/orders/pos-order-5/check")
        .send(pos_port)
        .await;
    limited.assert_sidecar_error(429, "rate_limited");
    assert!(
        limited
            .error_message()
            .unwrap_or_default()
            .contains("channel"),
        "{}",
        limited.text()
    );
    let again = Call::get("/v3/payments?transactionId=2")
        .header("X-LinePay-Channel", "web")
        .send(sidecar.addr)
        .await;
    assert_eq!(again.status, 200, "{}", again.text());

    // Nothing refused reached either upstream.
    assert_eq!(web_upstream.count(), 2);
    assert_eq!(pos_upstream.count(), 2);

    let scrape = sidecar.scrape().await;
    let web_ok = r#"linepay_sidecar_channel_requests_total{channel="web",environment="other",return_code="0000",status="200"}"#;
    assert_eq!(metric(&scrape, web_ok), Some(2.0), "{scrape}");
    let pos_limited = r#"linepay_sidecar_rate_limited_total{limit="channel"}"#;
    assert_eq!(metric(&scrape, pos_limited), Some(1.0));
    let required = r#"linepay_sidecar_refusals_total{code="channel_required"}"#;
    assert_eq!(metric(&scrape, required), Some(1.0));
    let logs = sidecar.stderr_so_far();
    assert!(
        logs.contains("channel=web") || logs.contains(r#""channel":"web""#),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_default_channel_a_call_without_header_is_that_channels() {
    let web_upstream = Upstream::recording().start().await;
    let pos_upstream = Upstream::recording().start().await;
    let setup = Setup::new();
    let sidecar = Sidecar::new()
        .without_credentials()
        .config_yaml(
            "channels.yaml",
            setup.yaml(&web_upstream.url(), &pos_upstream.url(), Some("web")),
        )
        .start()
        .await;
    let answered = Call::get("/v3/payments?transactionId=1")
        .send(sidecar.addr)
        .await;
    assert_eq!(answered.status, 200, "{}", answered.text());
    let sent = web_upstream.only_request();
    assert_eq!(sent.single("x-line-channelid"), WEB_ID);
    assert_signed_with(&sent, WEB_SECRET, POS_SECRET);
    // The header still picks another channel on the shared port.
    let pos = Call::get("/v4/payments/orders/o-9/check")
        .header("X-LinePay-Channel", "pos")
        .send(sidecar.addr)
        .await;
    assert_eq!(pos.status, 200, "{}", pos.text());
    assert_eq!(
        pos_upstream.only_request().single("x-line-channelid"),
        POS_ID
    );
}

#[test]
fn check_prints_the_channels_and_refuses_credentials_beside_them() {
    let setup = Setup::new();
    let file = TempFile::with_contents(
        "channels.yaml",
        setup
            .yaml(
                "https://api-pay.line.me",
                "https://sandbox-api-pay.line.me",
                None,
            )
            .as_bytes(),
    );
    let checked = Cli::check_config(file.path_str()).run();
    assert!(checked.status.success(), "{}", checked.stderr);
    // The summary names no one channel's upstream, apis or secret as the sidecar's.
    let summary = checked.stdout.lines().next().unwrap_or_default();
    assert!(summary.ends_with(", 2 channels"), "{summary}");
    assert!(
        !summary.contains("upstream") && !summary.contains("secret"),
        "{summary}"
    );
    let web = format!("channel web: channel id {WEB_ID}, production (https://api-pay.line.me/), apis [online_v3, online_v4]");
    assert!(checked.stdout.contains(&web), "{}", checked.stdout);
    let pos = format!("channel pos: channel id {POS_ID}, sandbox (https://sandbox-api-pay.line.me/), apis [offline_v4], listen 127.0.0.1:0");
    assert!(checked.stdout.contains(&pos), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("no default_channel"),
        "{}",
        checked.stdout
    );
    assert!(!checked.stdout.contains(WEB_SECRET) && !checked.stderr.contains(POS_SECRET));

    let refused = Cli::check_config(file.path_str())
        .env("LINEPAY_CHANNEL_SECRET", "legacy")
        .run();
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains("channels: and credentials: are both set"),
        "{}",
        refused.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_channels_rotated_secret_applies_on_reload_and_adding_a_channel_needs_a_restart() {
    let web_upstream = Upstream::recording().start().await;
    let pos_upstream = Upstream::recording().start().await;
    let setup = Setup::new();
    let yaml = setup.yaml(&web_upstream.url(), &pos_upstream.url(), Some("web"));
    let mut sidecar = Sidecar::new()
        .without_credentials()
        .config_yaml("channels.yaml", &yaml)
        .start()
        .await;
    let web_call = || Call::get("/v3/payments?transactionId=1");
    assert_eq!(web_call().send(sidecar.addr).await.status, 200);
    assert_signed_with(&web_upstream.requests()[0], WEB_SECRET, POS_SECRET);

    // Rotate web's secret only.
    let rotated = "web-rotated-secret-fedcba987654";
    std::fs::write(&setup.web_secret.path, rotated).expect("rotate the secret");
    sidecar.signal("HUP");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="success"}"#,
            1.0,
        )
        .await;
    assert_eq!(web_call().send(sidecar.addr).await.status, 200);
    assert_signed_with(&web_upstream.requests()[1], rotated, WEB_SECRET);
    let pos_port = sidecar.channel_addr("pos");
    let pos = Call::get("/v4/payments/orders/o-1/check")
        .send(pos_port)
        .await;
    assert_eq!(pos.status, 200, "{}", pos.text());
    assert_signed_with(&pos_upstream.only_request(), POS_SECRET, rotated);

    // A new channel needs a restart: the reload is refused, the running one serves on.
    let added = format!(
        "{yaml}  tw:\n    channel_id: \"3000000003\"\n    channel_secret_file: {}\n",
        setup.pos_secret.path_str()
    );
    std::fs::write(&sidecar.config_file().path, added).expect("add a channel");
    sidecar.signal("HUP");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="failure"}"#,
            1.0,
        )
        .await;
    assert_eq!(web_call().send(sidecar.addr).await.status, 200);
    assert_signed_with(&web_upstream.requests()[2], rotated, WEB_SECRET);
    Call::get("/v3/payments?transactionId=1")
        .header("X-LinePay-Channel", "tw")
        .send(sidecar.addr)
        .await
        .assert_sidecar_error(400, "unknown_channel");
    let output = sidecar.stop();
    assert!(
        output
            .stderr
            .contains("the channels and their listeners change only on restart"),
        "{}",
        output.stderr
    );
    assert!(!output.stderr.contains(rotated) && !output.stderr.contains(WEB_SECRET));
}

/// Two online channels on the shared port, each on its own recording upstream.
fn two_online_channels(setup: &Setup, web: &str, app: &str) -> String {
    format!(
        r#"channels:
  web:
    channel_id: "{WEB_ID}"
    channel_secret_file: {}
    upstream: {{ url: "{web}" }}
  app:
    channel_id: "{POS_ID}"
    channel_secret_file: {}
    upstream: {{ url: "{app}" }}
"#,
        setup.web_secret.path_str(),
        setup.pos_secret.path_str(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn money_guards_and_idempotency_keys_are_per_channel() {
    let web_upstream = Upstream::recording().start().await;
    let app_upstream = Upstream::recording().start().await;
    let setup = Setup::new();
    let sidecar = Sidecar::new()
        .without_credentials()
        .config_yaml(
            "channels.yaml",
            two_online_channels(&setup, &web_upstream.url(), &app_upstream.url()),
        )
        .start()
        .await;
    let as_channel = |call: Call, name: &str| call.header("X-LinePay-Channel", name);
    let transaction = "1234567890123456789";

    let confirmed = as_channel(
        Call::post(
            &format!("/v3/payments/{transaction}/confirm"),
            r#"{"amount":100,"currency":"TWD"}"#,
        ),
        "web",
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());

    // web's transaction, refunded as app: refused before anything is sent.
    let refund = || {
        Call::post(
            &format!("/v3/payments/{transaction}/refund"),
            r#"{"refundAmount":10}"#,
        )
    };
    let refused = as_channel(refund(), "app").send(sidecar.addr).await;
    refused.assert_sidecar_error(409, "transaction_of_another_channel");
    assert_eq!(app_upstream.count(), 0);
    let refunded = as_channel(refund(), "web").send(sidecar.addr).await;
    assert_eq!(refunded.status, 200, "{}", refunded.text());
    assert_eq!(web_upstream.count(), 2);

    // One Idempotency-Key on two channels is two calls; repeated on one, a replay.
    let body = r#"{"amount":100,"currency":"TWD","orderId":"o-1","packages":[{"id":"p","amount":100,"products":[{"name":"Tea","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}}"#;
    let keyed = |name: &str| {
        as_channel(Call::post("/v3/payments/request", body), name).header("Idempotency-Key", "k-1")
    };
    assert_eq!(keyed("web").send(sidecar.addr).await.status, 200);
    assert_eq!(keyed("app").send(sidecar.addr).await.status, 200);
    assert_eq!(
        app_upstream.count(),
        1,
        "app's call was not a replay of web's"
    );
    let replayed = keyed("web").send(sidecar.addr).await;
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    assert_eq!(
        web_upstream.count(),
        3,
        "web's repeat was replayed, not sent"
    );
    let app_request = &app_upstream.requests()[0];
    assert_eq!(app_request.single("x-line-channelid"), POS_ID);
    assert_signed_with(app_request, POS_SECRET, WEB_SECRET);
}
