//! HTTPS to the upstream: a private CA is trusted only when given with
//! `--upstream-ca-file`, and the call still reaches LINE Pay signed.

use crate::util::{start_emulator, Call, Sidecar, TestPki, CHANNEL_ID, CHANNEL_SECRET};

fn payment_request(order_id: &str) -> String {
    format!(
        r#"{{"amount":100,"currency":"TWD","orderId":"{order_id}","packages":[{{"id":"p1","amount":100,"products":[{{"name":"Tea","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}}}}"#
    )
}

/// What the app gets back over one kind of HTTPS upstream.
enum Outcome {
    /// LINE Pay's `0000`: the emulator received the call and its signature checked.
    Signed,
    /// The sidecar's own 502 `upstream_tls`, with nothing sent to the emulator.
    RefusedTls,
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_is_trusted_only_with_its_ca_and_its_name() {
    // (case, the name the emulator's certificate is for, --upstream-ca-file given, outcome)
    let cases = [
        ("private CA file given", "localhost", true, Outcome::Signed),
        // Nothing may be sent over an untrusted connection.
        (
            "private CA not given",
            "localhost",
            false,
            Outcome::RefusedTls,
        ),
        // Trusted CA, wrong name: the CA file must not turn off host name checks.
        (
            "certificate for another name",
            "api-pay.line.me",
            true,
            Outcome::RefusedTls,
        ),
    ];
    for (number, (case, name, trusted, outcome)) in cases.into_iter().enumerate() {
        let pki = TestPki::for_names(&[name]);
        let emulator =
            start_emulator(CHANNEL_ID, CHANNEL_SECRET, Some(pki.server_config.clone())).await;
        let mut sidecar = Sidecar::new().upstream(emulator.url());
        if trusted {
            sidecar = sidecar.trusting(&pki);
        }
        let sidecar = sidecar.start().await;

        let order_id = format!("tls-{}", number + 1);
        let reply = Call::post("/v3/payments/request", payment_request(&order_id))
            .send(sidecar.addr)
            .await;

        match outcome {
            Outcome::Signed => {
                assert_eq!(reply.status, 200, "case {case:?}: {}", reply.text());
                assert_eq!(
                    reply.return_code().as_deref(),
                    Some("0000"),
                    "case {case:?}: {}",
                    reply.text()
                );
                assert_eq!(emulator.calls(), 1, "case {case:?}");
            }
            Outcome::RefusedTls => {
                reply.assert_case_sidecar_error(case, 502, "upstream_tls");
                assert_eq!(emulator.calls(), 0, "case {case:?}: sent anyway");
            }
        }
    }
}
