//! Operating the real binary: Prometheus metrics, readiness, hot reload, graceful drain
//! and the per-call log line.

use crate::util::{
    eventually, eventually_within, metric, naive_signature, raw_json_number, start_emulator, Call,
    RunningSidecar, Sidecar, Upstream, CHANNEL_ID, CHANNEL_SECRET, WAIT_LIMIT,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORDER: &str = r#"{"amount":100,"currency":"TWD","orderId":"ORDER","packages":[{"id":"p1","amount":100,"products":[{"name":"Tea","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}"#;

fn order(order_id: &str) -> String {
    ORDER.replace("ORDER", order_id)
}

/// Polls `/readyz` until it answers `status` (bounded); returns the body.
async fn wait_for_readyz(sidecar: &RunningSidecar, status: u16) -> String {
    eventually(&format!("/readyz answers {status}"), || async {
        let reply = Call::get("/readyz").send(sidecar.admin_addr).await;
        if reply.status == status {
            Ok(reply.text())
        } else {
            Err(format!("{} {}", reply.status, reply.text()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_each_call_by_route_status_and_return_code() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;

    for order_id in ["metrics-1", "metrics-2"] {
        let reply = Call::post("/v3/payments/request", order(order_id))
            .send(sidecar.addr)
            .await;
        assert_eq!(
            reply.return_code().as_deref(),
            Some("0000"),
            "{}",
            reply.text()
        );
    }
    let unknown = Call::post(
        "/v3/payments/1234567890123456789/confirm",
        r#"{"amount":100,"currency":"TWD"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(
        unknown.return_code().as_deref(),
        Some("1150"),
        "{}",
        unknown.text()
    );
    assert_eq!(Call::get("/v3/admin").send(sidecar.addr).await.status, 403);
    let bad_json = Call::post("/v3/payments/request", "{oops")
        .send(sidecar.addr)
        .await;
    assert_eq!(bad_json.status, 400);

    let text = sidecar.scrape().await;
    let expect = |series: &str, value: f64| {
        assert_eq!(metric(&text, series), Some(value), "{series}\n{text}");
    };
    expect(
        r#"linepay_sidecar_requests_total{family="online_v3",method="POST",return_code="0000",route="/v3/payments/request",status="200"}"#,
        2.0,
    );
    expect(
        r#"linepay_sidecar_requests_total{family="online_v3",method="POST",return_code="1150",route="/v3/payments/{transactionId}/confirm",status="200"}"#,
        1.0,
    );
    expect(
        r#"linepay_sidecar_requests_total{family="unmatched",method="GET",return_code="none",route="unmatched",status="403"}"#,
        1.0,
    );
    expect(
        r#"linepay_sidecar_requests_total{family="online_v3",method="POST",return_code="none",route="/v3/payments/request",status="400"}"#,
        1.0,
    );
    expect(
        r#"linepay_sidecar_refusals_total{code="path_not_allowed"}"#,
        1.0,
    );
    expect(
        r#"linepay_sidecar_refusals_total{code="invalid_json"}"#,
        1.0,
    );
    expect(
        r#"linepay_sidecar_upstream_duration_seconds_count{route="/v3/payments/request"}"#,
        2.0,
    );
    expect(
        r#"linepay_sidecar_upstream_duration_seconds_count{route="/v3/payments/{transactionId}/confirm"}"#,
        1.0,
    );
    expect("linepay_sidecar_signing_duration_seconds_count", 3.0);
    expect("linepay_sidecar_in_flight_requests", 0.0);
    expect(
        &format!(
            r#"linepay_sidecar_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    assert_eq!(
        emulator.calls(),
        3,
        "only the three allowed, valid calls went out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_are_counted_by_kind() {
    let sidecar = Sidecar::new()
        .upstream(crate::util::closed_port_url().await)
        .start()
        .await;
    let reply = Call::post("/v3/payments/request", order("down"))
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.error_code().as_deref(), Some("upstream_unreachable"));
    let text = sidecar.scrape().await;
    assert_eq!(
        metric(
            &text,
            r#"linepay_sidecar_upstream_errors_total{kind="connect"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_port_serves_health_and_never_forwards() {
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000"}"#)
        .start()
        .await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    assert_eq!(
        Call::get("/healthz").send(sidecar.admin_addr).await.status,
        200
    );
    let posted = Call::post("/v3/payments/request", order("admin"))
        .send(sidecar.admin_addr)
        .await;
    assert_eq!(posted.status, 405);
    let fetched = Call::get("/v3/payments?transactionId=1")
        .send(sidecar.admin_addr)
        .await;
    assert_eq!(fetched.status, 404);
    assert_eq!(upstream.count(), 0, "the admin port reached the upstream");
}

/// Readiness is this pod's: by default a LINE Pay that cannot be reached leaves
/// `/readyz` at 200, and only the gauge (and a log line) says so. (Before the
/// default of `admin.ready_requires_upstream` became `false`, this pod left its Service.)
#[tokio::test(flavor = "multi_thread")]
async fn readiness_ignores_an_unreachable_upstream_by_default() {
    let sidecar = Sidecar::new()
        .upstream(crate::util::closed_port_url().await)
        .config_yaml("probe.yaml", "admin:\n  probe_interval: 100ms\n")
        .start()
        .await;
    sidecar
        .wait_for_metric("linepay_sidecar_upstream_up", 0.0)
        .await;
    crate::util::eventually("a failed upstream probe in the log", || async {
        let stderr = sidecar.stderr_so_far();
        if stderr.contains("upstream probe failed") {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
    let readyz = Call::get("/readyz").send(sidecar.admin_addr).await;
    assert_eq!((readyz.status, readyz.text().as_str()), (200, "ready\n"));
}

/// The opt-in: `admin.ready_requires_upstream: true` waits for a good probe and fails
/// while LINE Pay is away, naming the upstream error.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_can_be_told_to_require_the_upstream() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new()
        .upstream(emulator.url())
        .config_yaml(
            "probe.yaml",
            "admin:\n  probe_interval: 100ms\n  ready_requires_upstream: true\n",
        )
        .start()
        .await;
    assert_eq!(wait_for_readyz(&sidecar, 200).await, "ready\n");

    drop(emulator);
    let body = wait_for_readyz(&sidecar, 503).await;
    assert!(body.contains("upstream: upstream_unreachable"), "{body}");
    assert_eq!(
        Call::get("/healthz").send(sidecar.admin_addr).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_allowlist_and_a_bad_file_keeps_the_old_one() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let only_request = "reload:\n  watch_interval: 0s\nroutes:\n  allow:\n    - {method: POST, path: /v3/payments/request}\n";
    let mut sidecar = Sidecar::new()
        .upstream(emulator.url())
        .config_yaml("reload.yaml", only_request)
        .start()
        .await;
    let config = sidecar.config_file().path.clone();
    let details = || Call::get("/v3/payments?transactionId=1234567890123456789");
    assert_eq!(details().send(sidecar.addr).await.status, 403);

    let with_details = format!("{only_request}    - {{method: GET, path: /v3/payments}}\n");
    std::fs::write(&config, with_details).expect("rewrite config");
    sidecar.signal("HUP");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="success"}"#,
            1.0,
        )
        .await;
    let reply = details().send(sidecar.addr).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.return_code().as_deref(), Some("1150"));

    std::fs::write(&config, "routes:\n  allow: [\n").expect("break config");
    sidecar.signal("HUP");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="failure"}"#,
            1.0,
        )
        .await;
    assert_eq!(
        details().send(sidecar.addr).await.status,
        200,
        "old config kept"
    );
    let output = sidecar.stop();
    assert!(
        output.stderr.contains("configuration reload failed"),
        "{output}"
    );
    assert!(
        output.stderr.contains(&*config.to_string_lossy()),
        "{output}"
    );
}

/// A Kubernetes-style secret volume: `channel-secret` → `..data/channel-secret`, with
/// `..data` a symlink swapped atomically to a new directory on update.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn new(secret: &str) -> SecretVolume {
        // One directory per volume: tests that run side by side must not share one.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "linepay-sidecar-it-{}-secret-volume-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create secret volume");
        let mut volume = SecretVolume { dir, generation: 0 };
        volume.publish(secret);
        std::os::unix::fs::symlink("..data/channel-secret", volume.dir.join("channel-secret"))
            .expect("link channel-secret");
        volume
    }

    /// What the kubelet does: write a new timestamped directory, then rename a fresh
    /// `..data` symlink over the old one.
    fn publish(&mut self, secret: &str) {
        self.generation += 1;
        let generation = format!("..2026_11_23_{}", self.generation);
        std::fs::create_dir_all(self.dir.join(&generation)).expect("create generation");
        std::fs::write(self.dir.join(&generation).join("channel-secret"), secret)
            .expect("write secret");
        let staging = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(&generation, &staging).expect("link ..data_tmp");
        std::fs::rename(&staging, self.dir.join("..data")).expect("swap ..data");
    }

    fn secret_path(&self) -> PathBuf {
        self.dir.join("channel-secret")
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The channel secret read from `volume`, which is watched for changes every 100 ms.
fn secret_file_yaml(volume: &SecretVolume) -> String {
    format!(
        "reload:\n  watch_interval: 100ms\ncredentials:\n  channel_secret_file: {}\n",
        volume.secret_path().display()
    )
}

fn signature_verifies(secret: &str, recorded: &crate::util::Recorded) -> bool {
    let nonce = recorded.single("x-line-authorization-nonce");
    naive_signature(secret, recorded.path(), &recorded.body, &nonce)
        == recorded.single("x-line-authorization")
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_secret_signs_the_next_call_while_an_in_flight_call_keeps_the_old() {
    const OLD: &str = "old-secret-3f9a1c";
    const NEW: &str = "new-secret-8d2e7b";
    let mut volume = SecretVolume::new(OLD);
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000"}"#)
        .start()
        .await;
    let sidecar = Sidecar::new()
        .without_env("LINEPAY_CHANNEL_SECRET")
        .upstream(upstream.url())
        .config_yaml("rotate.yaml", secret_file_yaml(&volume))
        .start()
        .await;

    // A slow app: headers and half the body now, the rest after the rotation.
    let slow_body = order("in-flight");
    let (first_half, second_half) = slow_body.split_at(slow_body.len() / 2);
    let mut slow = tokio::net::TcpStream::connect(sidecar.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v3/payments/request HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first_half}",
        slow_body.len()
    );
    slow.write_all(head.as_bytes()).await.expect("send head");
    sidecar
        .wait_for_metric("linepay_sidecar_in_flight_requests", 1.0)
        .await;

    volume.publish(NEW);
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="success"}"#,
            1.0,
        )
        .await;
    let next = Call::post("/v3/payments/request", order("after-rotation"))
        .send(sidecar.addr)
        .await;
    assert_eq!(next.status, 200, "{}", next.text());

    slow.write_all(second_half.as_bytes())
        .await
        .expect("send rest");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT_LIMIT, slow.read_to_end(&mut answer))
        .await
        .expect("in-flight call answered in time")
        .expect("read answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let by_order = |order_id: &str| {
        requests
            .iter()
            .find(|r| String::from_utf8_lossy(&r.body).contains(order_id))
            .unwrap_or_else(|| panic!("no call for {order_id}"))
            .clone()
    };
    let after = by_order("after-rotation");
    assert!(
        signature_verifies(NEW, &after),
        "next call not signed with the new secret"
    );
    assert!(!signature_verifies(OLD, &after));
    let in_flight = by_order("in-flight");
    assert!(
        signature_verifies(OLD, &in_flight),
        "in-flight call not signed with the secret it started with"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_call_in_flight_and_refuses_new_connections() {
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000","slow":true}"#)
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let mut sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let addr = sidecar.addr;
    let in_flight = tokio::spawn(async move {
        Call::post("/v3/payments/request", order("draining"))
            .send(addr)
            .await
    });
    sidecar
        .wait_for_metric("linepay_sidecar_in_flight_requests", 1.0)
        .await;

    sidecar.signal("TERM");
    let readyz = wait_for_readyz(&sidecar, 503).await;
    assert!(readyz.contains("draining"), "{readyz}");
    eventually_within(
        Duration::from_secs(5),
        "new connections are refused",
        || async {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => Err("a new connection was accepted"),
                Err(_) => Ok(()),
            }
        },
    )
    .await;

    let reply = tokio::time::timeout(WAIT_LIMIT, in_flight)
        .await
        .expect("in-flight call finished in time")
        .expect("in-flight task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), r#"{"returnCode":"0000","slow":true}"#);
    let status = sidecar
        .wait_exit(Duration::from_secs(10))
        .expect("sidecar exits after draining");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_call_logs_one_json_line_with_its_ids_and_no_secret() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let mut sidecar = Sidecar::new()
        .upstream(emulator.url())
        .arg("--log-format")
        .arg("json")
        .start()
        .await;
    let reply = Call::post("/v3/payments/request", order("log-order-1"))
        .header("X-Request-Id", "req-abc-123")
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.header("x-request-id"), Some("req-abc-123"));
    let transaction_id = raw_json_number(&reply.text(), "transactionId").expect("transactionId");
    let generated = Call::post("/v3/payments/request", "{oops")
        .send(sidecar.addr)
        .await;
    let generated_id = generated
        .header("x-request-id")
        .expect("a generated id")
        .to_owned();
    assert_eq!(generated_id.len(), 32, "{generated_id}");

    let output = sidecar.stop();
    assert!(!output.stderr.contains(CHANNEL_SECRET), "{output}");
    let lines: Vec<serde_json::Value> = output
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let call_line = |request_id: &str| {
        let found: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|line| line["fields"]["request_id"] == request_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one line per call for {request_id}: {output}"
        );
        found[0]["fields"].clone()
    };
    let forwarded = call_line("req-abc-123");
    assert_eq!(forwarded["message"], "call forwarded");
    assert_eq!(forwarded["route"], "/v3/payments/request");
    assert_eq!(forwarded["status"], 200);
    assert_eq!(forwarded["return_code"], "0000");
    assert_eq!(forwarded["order_id"], "log-order-1");
    assert_eq!(forwarded["transaction_id"], transaction_id.as_str());
    assert!(forwarded["upstream_ms"].as_f64().is_some(), "{forwarded}");
    assert!(forwarded.get("signature").is_none());
    let refused = call_line(&generated_id);
    assert_eq!(refused["message"], "call refused");
    assert_eq!(refused["code"], "invalid_json");
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_rotation_keeps_the_warm_upstream_connection() {
    let mut volume = SecretVolume::new("first-secret-1a2b");
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000"}"#)
        .start()
        .await;
    let sidecar = Sidecar::new()
        .without_env("LINEPAY_CHANNEL_SECRET")
        .upstream(upstream.url())
        .config_yaml("keep-pool.yaml", secret_file_yaml(&volume))
        .start()
        .await;
    // One pool per proxy worker: enough calls (each on its own app connection) that
    // every worker has opened its warm upstream connection.
    for n in 0..16 {
        let before = Call::post("/v3/payments/request", order(&format!("pool-a{n}")))
            .send(sidecar.addr)
            .await;
        assert_eq!(before.status, 200);
    }
    let warm: std::collections::HashSet<_> =
        upstream.requests().iter().map(|seen| seen.peer).collect();

    volume.publish("second-secret-3c4d");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="success"}"#,
            1.0,
        )
        .await;
    for n in 0..6 {
        let after = Call::post("/v3/payments/request", order(&format!("pool-b{n}")))
            .send(sidecar.addr)
            .await;
        assert_eq!(after.status, 200);
    }

    let requests = upstream.requests();
    assert_eq!(requests.len(), 22);
    for seen in &requests[16..] {
        assert!(signature_verifies("second-secret-3c4d", seen));
        assert!(
            warm.contains(&seen.peer),
            "the reload opened a new upstream connection instead of reusing the warm ones"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_rate_limit_buckets_unless_the_limits_change() {
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000"}"#)
        .start()
        .await;
    let limits = "reload:\n  watch_interval: 0s\nlimits:\n  global: {rate: 1/h, burst: 1}\n";
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml("keep-buckets.yaml", limits)
        .start()
        .await;
    let config = sidecar.config_file().path.clone();
    let call = || Call::post("/v3/payments/request", order("bucket"));
    assert_eq!(call().send(sidecar.addr).await.status, 200);
    assert_eq!(call().send(sidecar.addr).await.status, 429);

    // Another key changes, the limits do not: the empty bucket stays empty.
    std::fs::write(&config, format!("{limits}request:\n  body_timeout: 9s\n")).expect("rewrite");
    sidecar.signal("HUP");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="success"}"#,
            1.0,
        )
        .await;
    assert_eq!(
        call().send(sidecar.addr).await.status,
        429,
        "a reload refilled the bucket"
    );

    // The limits change: new buckets, full.
    std::fs::write(&config, limits.replace("burst: 1", "burst: 2")).expect("rewrite");
    sidecar.signal("HUP");
    sidecar
        .wait_for_metric(
            r#"linepay_sidecar_config_reloads_total{result="success"}"#,
            2.0,
        )
        .await;
    assert_eq!(call().send(sidecar.addr).await.status, 200);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_port_closes_connections_past_its_cap_and_recovers() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    // 64 idle connections hold every admin slot (the header timeout is 5 s).
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(
            tokio::net::TcpStream::connect(sidecar.admin_addr)
                .await
                .expect("connect"),
        );
    }
    // Each held connection is accepted in turn; the one past the cap is closed unread.
    crate::util::eventually("the 65th admin connection closed at once", || async {
        match raw_admin_get(&sidecar, "/healthz").await {
            Ok(answer) if answer.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(held);
    crate::util::eventually(
        "/healthz answers again once the held connections close",
        || async {
            let answer = raw_admin_get(&sidecar, "/healthz").await?;
            if answer.starts_with("HTTP/1.1 200") {
                Ok(())
            } else {
                Err(answer)
            }
        },
    )
    .await;
}

/// One GET on a fresh admin connection; an error (not a panic) when it is refused or
/// closed unanswered, for use inside `eventually`.
async fn raw_admin_get(
    sidecar: &crate::util::RunningSidecar,
    path: &str,
) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(sidecar.admin_addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer within 2 s".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
