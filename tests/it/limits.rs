//! Rate limits through the real binary: refusals are 429 `rate_limited` with a
//! `Retry-After`, name the limit that refused, and never reach the upstream.
//!
//! Buckets here refill slowly (`1/m`), so nothing refills while a test runs and the
//! counts are exact; only the queue tests depend on time, with generous bounds.

use crate::util::{Call, Cli, Reply, RunningSidecar, Sidecar, TempFile, Upstream};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const REQUEST: &str = "/v3/payments/request";
const REFUND: &str = "/v3/payments/2021121600698709710/refund";
const CONFIRM: &str = "/v3/payments/2021121600698709710/confirm";
const DETAILS: &str = "/v3/payments?transactionId=2021121600698709710";

/// The app's calls being handled right now, queued ones included.
const IN_FLIGHT: &str = "linepay_sidecar_in_flight_requests";

/// A sidecar in front of `upstream` with this `limits:` section.
async fn sidecar_with_limits(upstream: &Upstream, limits: &str) -> RunningSidecar {
    Sidecar::new()
        .upstream(upstream.url())
        .config_yaml("limits.yaml", limits)
        .start()
        .await
}

async fn post(sidecar: &RunningSidecar, path: &str) -> Reply {
    Call::post(path, r#"{"amount":1,"currency":"TWD"}"#)
        .send(sidecar.addr)
        .await
}

async fn post_as(sidecar: &RunningSidecar, client: &str) -> Reply {
    Call::post(REQUEST, r#"{"amount":1,"currency":"TWD"}"#)
        .header("X-Merchant-Client", client)
        .send(sidecar.addr)
        .await
}

#[track_caller]
fn assert_admitted(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.sidecar_error(), None, "{}", reply.text());
}

/// Checks a rate-limit refusal naming `limit`; returns its `Retry-After` in seconds.
#[track_caller]
fn assert_rate_limited(reply: &Reply, limit: &str) -> u64 {
    reply.assert_sidecar_error(429, "rate_limited");
    assert_eq!(reply.retry_safe(), Some(true), "{}", reply.text());
    let message = reply.error_message().unwrap_or_default();
    assert!(
        message.contains(&format!("the {limit} rate limit")),
        "message should name `{limit}`: {message}"
    );
    let retry_after = reply
        .header("retry-after")
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no whole-second Retry-After: {:?}", reply.headers));
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    retry_after
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_beyond_the_global_limit_gets_429_and_never_reaches_upstream() {
    let upstream = Upstream::recording().start().await;
    let sidecar =
        sidecar_with_limits(&upstream, "limits:\n  global: {rate: 1/m, burst: 3}\n").await;

    // The global bucket is shared by every route.
    assert_admitted(&post(&sidecar, REQUEST).await);
    assert_admitted(&post(&sidecar, CONFIRM).await);
    assert_admitted(&Call::get(DETAILS).send(sidecar.addr).await);
    for path in [REQUEST, REFUND, CONFIRM] {
        let retry_after = assert_rate_limited(&post(&sidecar, path).await, "global");
        // The next token comes a minute after the first call; this test takes seconds.
        assert!(
            (30..=60).contains(&retry_after),
            "Retry-After {retry_after}"
        );
    }
    let refused = assert_rate_limited(&Call::get(DETAILS).send(sidecar.addr).await, "global");
    assert!(refused <= 60, "Retry-After {refused}");

    assert_eq!(
        upstream.count(),
        3,
        "only the admitted calls reach upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_route_limits_are_independent() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_with_limits(
        &upstream,
        r#"
limits:
  routes:
    "POST /v3/payments/{transactionId}/refund": {rate: 1/m, burst: 2}
    "POST /v3/payments/{transactionId}/confirm":
      rate: 1/m
      burst: 1
"#,
    )
    .await;

    assert_admitted(&post(&sidecar, REFUND).await);
    assert_admitted(&post(&sidecar, REFUND).await);
    let retry_after = assert_rate_limited(
        &post(&sidecar, REFUND).await,
        "route POST /v3/payments/{transactionId}/refund",
    );
    assert!(retry_after <= 60, "Retry-After {retry_after}");

    // Refund's empty bucket leaves confirm's untouched, and request has no limit.
    assert_admitted(&post(&sidecar, CONFIRM).await);
    assert_rate_limited(
        &post(&sidecar, CONFIRM).await,
        "route POST /v3/payments/{transactionId}/confirm",
    );
    for _ in 0..5 {
        assert_admitted(&post(&sidecar, REQUEST).await);
    }

    let requests = upstream.requests();
    let refunds = requests.iter().filter(|r| r.path() == REFUND).count();
    let confirms = requests.iter().filter(|r| r.path() == CONFIRM).count();
    assert_eq!((refunds, confirms, requests.len()), (2, 1, 8));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_client_limits_are_keyed_by_the_header() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_with_limits(
        &upstream,
        "limits:\n  per_client:\n    header: X-Merchant-Client\n    rate: 1/m\n    burst: 2\n",
    )
    .await;

    assert_admitted(&post_as(&sidecar, "shop-a").await);
    assert_admitted(&post_as(&sidecar, "shop-a").await);
    let refused = post_as(&sidecar, "shop-a").await;
    assert_rate_limited(&refused, "client");
    assert!(
        !refused.text().contains("shop-a"),
        "the client's header value is echoed: {}",
        refused.text()
    );

    // Another client has its own bucket.
    assert_admitted(&post_as(&sidecar, "shop-b").await);
    assert_admitted(&post_as(&sidecar, "shop-b").await);
    assert_rate_limited(&post_as(&sidecar, "shop-b").await, "client");

    // Calls without the header share one anonymous bucket.
    assert_admitted(&post(&sidecar, REQUEST).await);
    assert_admitted(&post(&sidecar, REQUEST).await);
    assert_rate_limited(&post(&sidecar, REQUEST).await, "client");

    assert_eq!(upstream.count(), 6);
    for request in upstream.requests() {
        assert!(
            request.all("x-merchant-client").is_empty(),
            "the client label is the sidecar's, not LINE Pay's: {:?}",
            request.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_call_waits_for_its_token_then_succeeds() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_with_limits(
        &upstream,
        "limits:\n  global: {rate: 2/s, burst: 1}\n  queue: {max_wait: 2s}\n",
    )
    .await;

    let started = Instant::now();
    assert_admitted(&post(&sidecar, REQUEST).await);
    let second_sent = Instant::now();
    let second = post(&sidecar, REQUEST).await;
    let total = started.elapsed();

    assert_admitted(&second);
    // The second token comes 500 ms after the first call was admitted; measured from
    // before the first call, so a slow first call cannot shorten the bound.
    assert!(
        total >= Duration::from_millis(450),
        "second call admitted after {total:?}, before its token"
    );
    assert!(
        second_sent.elapsed() < Duration::from_secs(5),
        "second call took {:?}",
        second_sent.elapsed()
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_refuses_at_once_when_the_wait_exceeds_max_wait() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_with_limits(
        &upstream,
        "limits:\n  global: {rate: 1/m, burst: 1}\n  queue: {max_wait: 2s}\n",
    )
    .await;

    assert_admitted(&post(&sidecar, REQUEST).await);
    let sent = Instant::now();
    let reply = post(&sidecar, REQUEST).await;
    let elapsed = sent.elapsed();

    let retry_after = assert_rate_limited(&reply, "global");
    assert!(retry_after > 2, "Retry-After {retry_after}");
    // Waiting would have taken max_wait (2 s) at least.
    assert!(elapsed < Duration::from_millis(1900), "waited {elapsed:?}");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_is_bounded_in_length() {
    let upstream = Upstream::recording().start().await;
    // One token every 3 s, and room for one waiting call.
    let sidecar = sidecar_with_limits(
        &upstream,
        "limits:\n  global: {rate: 20/m, burst: 1}\n  queue: {max_wait: 5s, max_queued: 1}\n",
    )
    .await;

    assert_admitted(&post(&sidecar, REQUEST).await);
    let (second, third) = tokio::join!(post(&sidecar, REQUEST), post(&sidecar, REQUEST));

    // One of the two waited for the next token; the other found the queue full.
    let (waited, refused) = if second.status == 200 {
        (second, third)
    } else {
        (third, second)
    };
    assert_admitted(&waited);
    assert_rate_limited(&refused, "global");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn app_that_disconnects_while_queued_frees_its_slot_and_is_never_sent() {
    let upstream = Upstream::recording().start().await;
    // One token every 2 s, and room for one waiting call.
    let sidecar = sidecar_with_limits(
        &upstream,
        "limits:\n  global: {rate: 30/m, burst: 1}\n  queue: {max_wait: 5s, max_queued: 1}\n",
    )
    .await;
    assert_admitted(&post(&sidecar, REQUEST).await);

    // A whole call that then waits in the queue, and an app that gives up on it.
    let body = r#"{"amount":1,"currency":"TWD"}"#;
    let mut abandoned = TcpStream::connect(sidecar.addr)
        .await
        .unwrap_or_else(|error| panic!("cannot connect: {error}"));
    let request = format!(
        "POST {REQUEST} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        sidecar.addr,
        body.len()
    );
    abandoned
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|error| panic!("cannot send: {error}"));
    // In flight with no token for 2 s: the call is waiting in the queue.
    sidecar.wait_for_metric(IN_FLIGHT, 1.0).await;
    drop(abandoned);
    // Nothing in flight: the call has ended (dropped, or sent: the count below tells).
    sidecar.wait_for_metric(IN_FLIGHT, 0.0).await;

    // The slot is free again (a full queue would refuse at once), and the token the
    // abandoned call waited for goes to this one.
    assert_admitted(&post(&sidecar, REQUEST).await);
    assert_eq!(upstream.count(), 2, "the abandoned call was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_mode_admits_everything_and_logs_what_it_would_refuse() {
    let upstream = Upstream::recording().start().await;
    let mut sidecar = sidecar_with_limits(
        &upstream,
        "limits:\n  shadow: true\n  global: {rate: 1/m, burst: 1}\n",
    )
    .await;

    for _ in 0..4 {
        assert_admitted(&post(&sidecar, REQUEST).await);
    }
    assert_eq!(upstream.count(), 4);
    let metrics = sidecar.scrape().await;
    assert!(
        metrics.contains(r#"linepay_sidecar_rate_limited_shadow_total{limit="global"} 3"#),
        "{metrics}"
    );
    // Nothing was refused: every rate_limited_total series (they exist from start-up,
    // at 0) is still 0.
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("linepay_sidecar_rate_limited_total{"))
        .filter(|line| !line.ends_with(" 0"))
        .collect();
    assert!(refused.is_empty(), "{refused:?}\n{metrics}");

    let output = sidecar.stop();
    let warnings = output
        .stderr
        .lines()
        .filter(|line| line.contains("would be rate limited") && line.contains("global"))
        .count();
    assert_eq!(warnings, 3, "{output}");
}

/// Runs `check --config` on `yaml`; returns stderr, asserting that the check failed.
fn check_fails(yaml: &str) -> String {
    let config = TempFile::with_contents("bad-limits.yaml", yaml.as_bytes());
    let output = Cli::check_config(config.path_str())
        .env("LINEPAY_CHANNEL_ID", "1234567890")
        .env("LINEPAY_CHANNEL_SECRET", "not-a-real-secret")
        .run();
    assert!(!output.status.success(), "{output:?}");
    output.stderr
}

#[test]
fn bad_limits_stop_start_up_with_file_and_line() {
    let stderr = check_fails("limits:\n  global:\n    rate: 50\n");
    assert!(stderr.contains("50/s"), "{stderr}");
    assert!(stderr.contains(".yaml:3: rate:"), "{stderr}");

    let stderr = check_fails(
        "limits:\n  global: {rate: 5/s}\n  routes:\n    \"POST /v3/payments/123/refund\": {rate: 1/s}\n",
    );
    assert!(stderr.contains("bad-limits.yaml:4"), "{stderr}");
    assert!(
        stderr.contains("did you mean `POST /v3/payments/{transactionId}/refund`"),
        "{stderr}"
    );
}
