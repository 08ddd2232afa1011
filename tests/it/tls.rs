//! HTTPS to the upstream: a private CA is trusted only when given with
//! `--upstream-ca-file`, and the call still reaches LINE Pay signed.

use crate::util::{start_emulator, Call, Sidecar, TestPki, CHANNEL_ID, CHANNEL_SECRET};

fn payment_request(order_id: &str) -> String {
    format!(
        r#"{{"amount":100,"currency":"TWD","orderId":"{order_id}","packages":[{{"id":"p1","amount":100,"products":[{{"name":"Tea","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_with_private_ca_file_is_accepted() {
    let pki = TestPki::for_names(&["localhost"]);
    let emulator =
        start_emulator(CHANNEL_ID, CHANNEL_SECRET, Some(pki.server_config.clone())).await;
    let sidecar = Sidecar::new()
        .upstream(emulator.url())
        .trusting(&pki)
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", payment_request("tls-1"))
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.return_code().as_deref(),
        Some("0000"),
        "{}",
        reply.text()
    );
    assert_eq!(emulator.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_without_its_ca_is_502_tls() {
    let pki = TestPki::for_names(&["localhost"]);
    let emulator =
        start_emulator(CHANNEL_ID, CHANNEL_SECRET, Some(pki.server_config.clone())).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;

    let reply = Call::post("/v3/payments/request", payment_request("tls-2"))
        .send(sidecar.addr)
        .await;

    reply.assert_sidecar_error(502, "upstream_tls");
    assert_eq!(
        emulator.calls(),
        0,
        "nothing may be sent over an untrusted connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_with_a_certificate_for_another_name_is_502_tls() {
    // Trusted CA, wrong name: the CA file must not turn off host name checks.
    let pki = TestPki::for_names(&["api-pay.line.me"]);
    let emulator =
        start_emulator(CHANNEL_ID, CHANNEL_SECRET, Some(pki.server_config.clone())).await;
    let sidecar = Sidecar::new()
        .upstream(emulator.url())
        .trusting(&pki)
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", payment_request("tls-3"))
        .send(sidecar.addr)
        .await;

    reply.assert_sidecar_error(502, "upstream_tls");
    assert_eq!(emulator.calls(), 0);
}
