//! Egress pinning for LINE Pay's IP whitelist: the source address upstream sees, a real
//! CONNECT proxy with TLS end to end through it, the DNS pin with the certificate still
//! checked against the host name, the emulator's own whitelist, and `expect_ip`.
//!
//! Only loopback addresses carry traffic (127.0.0.0/8 is all local on Linux);
//! 203.0.113.7 (TEST-NET-3) is used only where start-up must refuse it before any
//! connection is attempted.

use crate::util::{
    closed_port_url, eventually_within, start_emulator, Call, Cli, ConnectProxy, EchoServer,
    EmulatorProcess, EmulatorSetup, Reply, Sidecar, TempFile, TestPki, Tunnelled, Upstream,
    CHANNEL_ID, CHANNEL_SECRET,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const BOUND: &str = "127.0.0.2";
const PINNED: &str = "127.0.0.3";
/// A made-up host name that resolves nowhere (`.invalid` is reserved).
const MADE_UP_HOST: &str = "api-pay.test.invalid";

fn payment_request(order_id: &str) -> String {
    format!(
        r#"{{"amount":100,"currency":"TWD","orderId":"{order_id}","packages":[{{"id":"p1","amount":100,"products":[{{"name":"Tea","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}}}}"#
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|error| panic!("{text}: {error}"))
}

/// LINE Pay's `0000`, passed through; `case` names the call in a failure.
#[track_caller]
fn assert_line_pay_success(case: &str, reply: &Reply) {
    assert_eq!(reply.status, 200, "case {case:?}: {}", reply.text());
    assert_eq!(
        reply.sidecar_error(),
        None,
        "case {case:?}: {}",
        reply.text()
    );
    assert_eq!(
        reply.return_code().as_deref(),
        Some("0000"),
        "case {case:?}: {}",
        reply.text()
    );
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

// ---------------------------------------------------------------------------------------
// 1. egress.bind_address

#[tokio::test(flavor = "multi_thread")]
async fn bind_address_is_the_source_address_upstream_sees() {
    let upstream = Upstream::recording().start().await;
    let bound = Sidecar::new()
        .upstream(upstream.url())
        .arg("--egress-bind-address")
        .arg(BOUND)
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(bound.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.only_request().peer.ip(), ip(BOUND));

    // Without it, the same call comes from the default source (so the check above can fail).
    let default_upstream = Upstream::recording().start().await;
    let unbound = Sidecar::new()
        .upstream(default_upstream.url())
        .start()
        .await;
    Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(unbound.addr)
        .await;
    assert_eq!(default_upstream.only_request().peer.ip(), ip("127.0.0.1"));
}

#[test]
fn bind_address_not_on_this_host_stops_start_up_with_a_clear_error() {
    let journal = crate::util::TempFile::with_contents("journal.sqlite3", b"");
    for subcommand in [None, Some("check")] {
        let mut cli = Cli::new();
        if let Some(subcommand) = subcommand {
            cli = cli.arg(subcommand);
        }
        let output = cli
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--channel-id")
            .arg(CHANNEL_ID)
            .arg("--upstream")
            .arg("https://api-pay.line.me")
            .arg("--egress-bind-address")
            .arg("203.0.113.7")
            .arg("--journal-path")
            .arg(journal.path_str())
            .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
            .run();

        assert!(!output.status.success(), "{subcommand:?}: {output:?}");
        assert!(
            output.stderr.contains(
                "egress.bind_address 203.0.113.7 is not assigned to any interface on this host"
            ),
            "{subcommand:?}: {output:?}"
        );
        assert!(
            output.stderr.contains("whitelist"),
            "{subcommand:?}: {output:?}"
        );
        assert!(
            !output.stdout.contains("listening on"),
            "{subcommand:?}: {output:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. egress.proxy: a real HTTP CONNECT proxy (util::ConnectProxy).

#[tokio::test(flavor = "multi_thread")]
async fn calls_go_through_a_connect_proxy_with_tls_end_to_end_and_arrive_signed() {
    let pki = TestPki::for_names(&["localhost"]);
    let emulator =
        start_emulator(CHANNEL_ID, CHANNEL_SECRET, Some(pki.server_config.clone())).await;
    let proxy = ConnectProxy::start(Some(basic("egress-user", "pr0xy-pa55word"))).await;
    let auth_file = TempFile::with_contents("proxy-auth", b"egress-user:pr0xy-pa55word\n");
    let mut sidecar = Sidecar::new()
        .upstream(emulator.url())
        .trusting(&pki)
        .arg("--egress-proxy")
        .arg(proxy.url())
        .env("LINEPAY_EGRESS_PROXY_AUTH_FILE", auth_file.path_str())
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", payment_request("proxy-1"))
        .send(sidecar.addr)
        .await;

    // 0000 from the emulator: the signature it checked arrived intact.
    assert_line_pay_success("through the proxy", &reply);
    assert_eq!(emulator.calls(), 1);
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "nothing went through the proxy");
    let with_data: Vec<&Tunnelled> = tunnels
        .iter()
        .filter(|tunnel| !tunnel.client_bytes.is_empty())
        .collect();
    assert!(!with_data.is_empty(), "{tunnels:?}");
    for tunnel in &tunnels {
        assert_eq!(tunnel.target, format!("localhost:{}", emulator.addr.port()));
        assert_eq!(
            tunnel.authorization.as_deref(),
            Some(basic("egress-user", "pr0xy-pa55word").as_str())
        );
    }
    for tunnel in with_data {
        // A TLS handshake record, and nothing of the call in clear.
        assert_eq!(tunnel.client_bytes.first(), Some(&0x16), "{tunnel:?}");
        let clear = String::from_utf8_lossy(&tunnel.client_bytes).to_ascii_lowercase();
        assert!(!clear.contains("x-line-authorization"), "{clear}");
        assert!(!clear.contains("/v3/payments"), "{clear}");
    }
    let output = sidecar.stop();
    assert!(!output.stderr.contains("pr0xy-pa55word"), "{output}");
    assert!(!output.stdout.contains("pr0xy-pa55word"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_refusing_the_credentials_is_502_upstream_proxy_and_nothing_is_sent() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let proxy = ConnectProxy::start(Some(basic("egress-user", "right-password"))).await;
    let auth_file = TempFile::with_contents("proxy-auth-wrong", b"egress-user:wr0ng-pa55word");
    let mut sidecar = Sidecar::new()
        .upstream(emulator.url())
        .arg("--egress-proxy")
        .arg(proxy.url())
        .arg("--egress-proxy-auth-file")
        .arg(auth_file.path_str())
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", payment_request("proxy-2"))
        .send(sidecar.addr)
        .await;

    reply.assert_sidecar_error(502, "upstream_proxy");
    assert_eq!(reply.retry_safe(), Some(true));
    assert_eq!(emulator.calls(), 0);
    assert!(!proxy.tunnels().is_empty());
    let output = sidecar.stop();
    assert!(
        output.stderr.contains("proxy authorization required"),
        "{output}"
    );
    assert!(!output.stderr.contains("wr0ng-pa55word"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_that_is_down_is_502_upstream_proxy_quickly() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new()
        .upstream(emulator.url())
        .arg("--egress-proxy")
        .arg(closed_port_url().await)
        .start()
        .await;

    let started = Instant::now();
    let reply = Call::post("/v3/payments/request", payment_request("proxy-3"))
        .send(sidecar.addr)
        .await;

    reply.assert_sidecar_error(502, "upstream_proxy");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(emulator.calls(), 0);
}

// ---------------------------------------------------------------------------------------
// 3. egress.pin

#[tokio::test(flavor = "multi_thread")]
async fn pin_sends_the_call_to_the_pinned_ip_while_tls_checks_the_host_name() {
    let pki = TestPki::for_names(&[MADE_UP_HOST]);
    let upstream = EmulatorSetup::new(CHANNEL_ID, CHANNEL_SECRET)
        .bind(PINNED)
        .tls(pki.server_config.clone())
        .start()
        .await;
    let url = format!("https://{MADE_UP_HOST}:{}", upstream.addr.port());
    let pinned = Sidecar::new()
        .upstream(&url)
        .trusting(&pki)
        .arg("--egress-pin")
        .arg(PINNED)
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", payment_request("pin-1"))
        .send(pinned.addr)
        .await;

    assert_line_pay_success("pinned", &reply);
    assert_eq!(upstream.calls(), 1);

    // Without the pin the made-up name resolves nowhere: the pin did the routing.
    let unpinned = Sidecar::new().upstream(&url).trusting(&pki).start().await;
    let reply = Call::post("/v3/payments/request", payment_request("pin-2"))
        .send(unpinned.addr)
        .await;
    reply.assert_sidecar_error(502, "upstream_dns");

    // Pinned to the same IP under another name, the certificate no longer matches.
    let other_name = Sidecar::new()
        .upstream(format!(
            "https://other.test.invalid:{}",
            upstream.addr.port()
        ))
        .trusting(&pki)
        .arg("--egress-pin")
        .arg(PINNED)
        .start()
        .await;
    let reply = Call::post("/v3/payments/request", payment_request("pin-3"))
        .send(other_name.addr)
        .await;
    reply.assert_sidecar_error(502, "upstream_tls");
    assert_eq!(upstream.calls(), 1, "nothing sent without a verified name");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_proxy_the_pinned_ip_is_the_connect_target() {
    let pki = TestPki::for_names(&[MADE_UP_HOST]);
    let upstream = EmulatorSetup::new(CHANNEL_ID, CHANNEL_SECRET)
        .bind(PINNED)
        .tls(pki.server_config.clone())
        .start()
        .await;
    let proxy = ConnectProxy::start(None).await;
    let sidecar = Sidecar::new()
        .upstream(format!("https://{MADE_UP_HOST}:{}", upstream.addr.port()))
        .trusting(&pki)
        .arg("--egress-proxy")
        .arg(proxy.url())
        .arg("--egress-pin")
        .arg(PINNED)
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", payment_request("pin-proxy-1"))
        .send(sidecar.addr)
        .await;

    assert_line_pay_success("pinned, through a proxy", &reply);
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty());
    for tunnel in &tunnels {
        assert_eq!(tunnel.target, upstream.addr.to_string(), "{tunnels:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 4. The emulator's IP whitelist: rehearse LINE Pay's refusal locally.

#[tokio::test(flavor = "multi_thread")]
async fn emulator_whitelist_refuses_other_sources_as_line_pay_does() {
    // The same rehearsal for both ways to run the emulator.
    let in_process = EmulatorSetup::new(CHANNEL_ID, CHANNEL_SECRET)
        .allow_sources(&["127.0.0.2/32"])
        .start()
        .await;
    let command =
        EmulatorProcess::start(&["--listen", "127.0.0.1:0", "--allow-source", "127.0.0.2/32"]);

    for (case, url, order) in [
        ("in-process emulator", in_process.url(), "wl"),
        ("`emulator --allow-source` command", command.url(), "cli"),
    ] {
        let unregistered = Sidecar::new().upstream(&url).start().await;
        let reply = Call::post(
            "/v3/payments/request",
            payment_request(&format!("{order}-1")),
        )
        .send(unregistered.addr)
        .await;
        assert_eq!(reply.status, 200, "case {case:?}: {}", reply.text());
        assert_eq!(
            reply.sidecar_error(),
            None,
            "case {case:?}: LINE Pay's answer, passed through"
        );
        assert_eq!(
            reply.return_code().as_deref(),
            Some("1106"),
            "case {case:?}: {}",
            reply.text()
        );
        assert!(
            reply
                .text()
                .contains("Ip address [127.0.0.1] is not allowed to access this API"),
            "case {case:?}: {}",
            reply.text()
        );

        let registered = Sidecar::new()
            .upstream(&url)
            .arg("--egress-bind-address")
            .arg(BOUND)
            .start()
            .await;
        let reply = Call::post(
            "/v3/payments/request",
            payment_request(&format!("{order}-2")),
        )
        .send(registered.addr)
        .await;
        assert_line_pay_success(case, &reply);
    }
}

#[test]
fn emulator_refuses_an_ambiguous_allow_source() {
    let output = Cli::new()
        .arg("emulator")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--allow-source")
        .arg("127.0.0.2/24")
        .run();
    assert!(!output.status.success(), "{output:?}");
    assert!(output.stderr.contains("host bits"), "{output:?}");
    assert!(output.stderr.contains("127.0.0.0/24"), "{output:?}");
}

// ---------------------------------------------------------------------------------------
// 5. egress.expect_ip

/// Egress bound to [`BOUND`], expecting the echo server to see `address`.
fn expect_ip_yaml(address: &str, echo: &EchoServer) -> String {
    format!(
        "egress:\n  bind_address: {BOUND}\n  expect_ip:\n    address: {address}\n    echo_url: http://{}/ip\n    timeout: 3s\n",
        echo.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_ip_match_is_logged_at_start_up() {
    let echo = EchoServer::start().await;
    let upstream = Upstream::recording().start().await;
    let mut sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml("expect-ip.yaml", expect_ip_yaml(BOUND, &echo))
        .start()
        .await;

    let output = sidecar.stop();

    assert!(
        output.stderr.contains("public egress address matches"),
        "{output}"
    );
    assert!(!output.stderr.contains("MISMATCH"), "{output}");
    // Asked through the same egress path (the bound source), and unsigned.
    let heads = echo.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(heads[0].0, ip(BOUND));
    assert!(heads[0].1.starts_with("GET /ip HTTP/1.1"), "{heads:?}");
    assert!(
        !heads[0].1.to_ascii_lowercase().contains("x-line-"),
        "{heads:?}"
    );
    assert_eq!(upstream.count(), 0, "the check never goes to LINE Pay");
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_ip_mismatch_is_logged_loudly_and_fails_readyz_but_not_the_start() {
    let echo = EchoServer::start().await;
    let upstream = Upstream::recording().start().await;
    let mut sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml("expect-ip.yaml", expect_ip_yaml("127.0.0.9", &echo))
        .start()
        .await;

    // Started anyway: it still serves calls.
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let readyz = eventually_within(
        Duration::from_secs(5),
        "/readyz names the egress_ip check",
        || async {
            let reply = Call::get("/readyz").send(sidecar.admin_addr).await;
            if reply.text().contains("egress_ip") {
                Ok(reply)
            } else {
                Err(format!("{} {}", reply.status, reply.text()))
            }
        },
    )
    .await;
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert!(readyz.text().contains("egress_ip"), "{}", readyz.text());
    assert!(readyz.text().contains("127.0.0.2"), "{}", readyz.text());

    let output = sidecar.stop();
    let mismatch = output
        .stderr
        .lines()
        .find(|line| line.contains("EGRESS IP MISMATCH"))
        .unwrap_or_else(|| panic!("no mismatch line:\n{output}"));
    assert!(mismatch.contains("ERROR"), "{mismatch}");
    assert!(mismatch.contains("127.0.0.2"), "{mismatch}");
    assert!(mismatch.contains("127.0.0.9"), "{mismatch}");
    assert!(mismatch.contains("never fatal"), "{mismatch}");
}
