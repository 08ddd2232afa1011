//! Every flow of the v3 online API table, through the real binary and the emulator:
//! what the examples and a merchant's own CI rehearse.

use crate::util::{
    raw_json_number, start_emulator, Call, Reply, Sidecar, CHANNEL_ID, CHANNEL_SECRET,
};
use std::net::SocketAddr;

fn request_body(order_id: &str, options: &str) -> String {
    format!(
        r#"{{"amount":300,"currency":"TWD","orderId":"{order_id}","packages":[{{"id":"p","amount":300,"products":[{{"name":"Beans","quantity":1,"price":300}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}},"options":{options}}}"#
    )
}

fn code(reply: &Reply) -> String {
    reply
        .return_code()
        .unwrap_or_else(|| panic!("no returnCode: {} {}", reply.status, reply.text()))
}

/// Reserves and confirms a payment; returns its transactionId and the confirm answer.
async fn reserve_and_confirm(addr: SocketAddr, order_id: &str, options: &str) -> (String, Reply) {
    let reserved = Call::post("/v3/payments/request", request_body(order_id, options))
        .send(addr)
        .await;
    assert_eq!(code(&reserved), "0000", "{}", reserved.text());
    let id = raw_json_number(&reserved.text(), "transactionId").expect("transactionId");
    let confirmed = Call::post(
        &format!("/v3/payments/{id}/confirm"),
        r#"{"amount":300,"currency":"TWD"}"#,
    )
    .send(addr)
    .await;
    assert_eq!(code(&confirmed), "0000", "{}", confirmed.text());
    (id, confirmed)
}

#[tokio::test(flavor = "multi_thread")]
async fn authorise_then_capture_or_void() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;
    let authorise_only = r#"{"payment":{"capture":false}}"#;

    let (captured, _) = reserve_and_confirm(sidecar.addr, "flow-capture", authorise_only).await;
    let status = Call::get(&format!("/v3/payments/requests/{captured}/check"))
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&status), "0123", "confirmed: {}", status.text());
    let capture = Call::post(
        &format!("/v3/payments/authorizations/{captured}/capture"),
        r#"{"amount":300,"currency":"TWD"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(code(&capture), "0000", "{}", capture.text());
    let refund = Call::post(&format!("/v3/payments/{captured}/refund"), "{}")
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&refund), "0000", "full refund: {}", refund.text());
    let again = Call::post(&format!("/v3/payments/{captured}/refund"), "{}")
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&again), "1165", "already refunded: {}", again.text());

    let (voided, _) = reserve_and_confirm(sidecar.addr, "flow-void", authorise_only).await;
    // Void takes an empty body, signed as the empty string.
    let void = Call::post(&format!("/v3/payments/authorizations/{voided}/void"), "")
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&void), "0000", "{}", void.text());
    let capture_after_void = Call::post(
        &format!("/v3/payments/authorizations/{voided}/capture"),
        r#"{"amount":300,"currency":"TWD"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(
        code(&capture_after_void),
        "1179",
        "{}",
        capture_after_void.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn preapproved_payment_with_a_reg_key_until_it_expires() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;

    let (_, confirmed) = reserve_and_confirm(
        sidecar.addr,
        "flow-preapproved",
        r#"{"payment":{"payType":"PREAPPROVED"}}"#,
    )
    .await;
    let reg_key = confirmed.json()["info"]["regKey"]
        .as_str()
        .unwrap_or_else(|| panic!("no regKey: {}", confirmed.text()))
        .to_owned();

    let check = |reg_key: String| async move {
        Call::get(&format!(
            "/v3/payments/preapprovedPay/{reg_key}/check?creditCardAuth=false"
        ))
        .send(sidecar.addr)
        .await
    };
    assert_eq!(code(&check(reg_key.clone()).await), "0000");
    let paid = Call::post(
        &format!("/v3/payments/preapprovedPay/{reg_key}/payment"),
        r#"{"productName":"Monthly beans","amount":300,"currency":"TWD","orderId":"flow-preapproved-2"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(code(&paid), "0000", "{}", paid.text());
    assert_eq!(
        raw_json_number(&paid.text(), "transactionId").map(|id| id.len()),
        Some(19),
        "{}",
        paid.text()
    );
    let expired = Call::post(&format!("/v3/payments/preapprovedPay/{reg_key}/expire"), "")
        .send(sidecar.addr)
        .await;
    assert_eq!(code(&expired), "0000", "{}", expired.text());
    assert_eq!(code(&check(reg_key).await), "1193", "expired regKey");
}

#[tokio::test(flavor = "multi_thread")]
async fn device_headers_come_from_config_and_the_app_cannot_override_them() {
    let upstream = crate::util::Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000"}"#)
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml(
            "device.yaml",
            "credentials:\n  merchant_device_profile_id: POS-0001\n  merchant_device_type: POS\n",
        )
        .start()
        .await;
    let reply = Call::post("/v3/payments/request", request_body("flow-device", "{}"))
        .header("X-LINE-MerchantDeviceProfileId", "FORGED")
        .header("X-LINE-MerchantDeviceType", "FORGED")
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let received = upstream.only_request();
    assert_eq!(
        received.single("x-line-merchantdeviceprofileid"),
        "POS-0001"
    );
    assert_eq!(received.single("x-line-merchantdevicetype"), "POS");
}
