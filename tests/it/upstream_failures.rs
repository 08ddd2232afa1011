//! When LINE Pay cannot be reached or answers badly: each failure is told apart by its
//! code, quickly, and says whether the call may have reached LINE Pay.

use crate::util::{closed_port_url, send_raw_in_two, Call, RawUpstream, Sidecar, Upstream};
use std::time::{Duration, Instant};

/// A generous bound for "fast": loaded CI machines are slow, a hung call takes 20 s.
const QUICKLY: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502_unreachable_quickly() {
    let sidecar = Sidecar::new()
        .upstream(closed_port_url().await)
        .start()
        .await;

    let started = Instant::now();
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    let elapsed = started.elapsed();

    reply.assert_sidecar_error(502, "upstream_unreachable");
    assert_eq!(
        reply.retry_safe(),
        Some(true),
        "nothing was sent, so it may be sent again"
    );
    assert!(elapsed < QUICKLY, "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_504_timeout_after_the_read_timeout() {
    let upstream = Upstream::recording()
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--connect-timeout")
        .arg("500ms")
        .arg("--read-timeout")
        .arg("1s")
        .start()
        .await;

    let started = Instant::now();
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    let elapsed = started.elapsed();

    reply.assert_sidecar_error(504, "upstream_timeout");
    assert!(
        elapsed >= Duration::from_secs(1),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "did not time out: {elapsed:?}"
    );
    // The call did reach LINE Pay, so the app must not be told to simply resend it.
    assert_eq!(upstream.count(), 1);
    assert_eq!(reply.retry_safe(), Some(false));
}

/// A call's body wait and LINE Pay's answer share one timer (`timer.rs`), moved to the
/// read timeout's deadline once the call is sent: each wait keeps its own deadline.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_timeout_counts_from_the_send_not_from_the_body_wait() {
    let request = |addr| {
        format!(
            "POST /v3/payments/request HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"amo"
        )
    };
    // Body deadline 1 s; the body takes 0.6 s, LINE Pay 1.5 s more: past the body's
    // deadline, within the read timeout's (3 s from the send).
    let upstream = Upstream::recording()
        .delay(Duration::from_millis(1_500))
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--connect-timeout")
        .arg("500ms")
        .arg("--read-timeout")
        .arg("3s")
        .config_yaml("body-timeout.yaml", "request:\n  body_timeout: 1s\n")
        .start()
        .await;
    let started = Instant::now();
    let reply = send_raw_in_two(
        sidecar.addr,
        request(sidecar.addr),
        Duration::from_millis(600),
        r#"unt":1}"#,
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(elapsed >= Duration::from_millis(2_000), "{elapsed:?}");
    assert_eq!(upstream.count(), 1);

    // Body deadline 10 s, read timeout 1 s: LINE Pay's silence is cut 1 s after the
    // send, as a read timeout, not at the body's deadline.
    let upstream = Upstream::recording()
        .delay(Duration::from_secs(8))
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--connect-timeout")
        .arg("500ms")
        .arg("--read-timeout")
        .arg("1s")
        .config_yaml("body-timeout.yaml", "request:\n  body_timeout: 10s\n")
        .start()
        .await;
    let started = Instant::now();
    let reply = send_raw_in_two(
        sidecar.addr,
        request(sidecar.addr),
        Duration::from_millis(300),
        r#"unt":1}"#,
    )
    .await;
    let elapsed = started.elapsed();
    reply.assert_sidecar_error(504, "upstream_timeout");
    assert!(elapsed >= Duration::from_millis(1_300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unresolvable_host_is_502_dns() {
    let sidecar = Sidecar::new()
        .upstream("https://nonexistent.invalid")
        .arg("--read-timeout")
        .arg("10s")
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;

    reply.assert_sidecar_error(502, "upstream_dns");
    assert_eq!(reply.retry_safe(), Some(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_answering_badly_is_502_protocol_and_none_of_it_is_passed_on() {
    // (case, what the upstream writes back, text of it that must not reach the app)
    let cases: [(&str, &'static [u8], &str); 3] = [
        (
            "garbage",
            b"this is not HTTP at all\r\n\r\n",
            "not HTTP",
        ),
        (
            // Half an answer is never passed on as if it were LINE Pay's.
            "closed mid-response",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"returnCode\":\"00",
            "returnCode",
        ),
        (
            "body shorter than its length, with an internal header",
            b"HTTP/1.1 200 OK\r\nX-Internal: db-host-17\r\nContent-Length: 99\r\n\r\nleaked-upstream-detail",
            "leaked-upstream-detail",
        ),
    ];
    for (case, answer, upstream_text) in cases {
        let upstream = RawUpstream::answering(answer).await;
        let sidecar = Sidecar::new().upstream(upstream.url()).start().await;

        let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
            .send(sidecar.addr)
            .await;

        reply.assert_case_sidecar_error(case, 502, "upstream_protocol");
        // The request was written before the bad answer came back: it may have been
        // processed, so the app must not simply send it again.
        assert_eq!(reply.retry_safe(), Some(false), "case {case:?}");
        assert!(
            upstream.connections() >= 1,
            "case {case:?}: never connected"
        );
        assert!(
            !reply.text().contains(upstream_text),
            "case {case:?}: upstream text echoed: {}",
            reply.text()
        );
        assert_eq!(reply.header("x-internal"), None, "case {case:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_handshake_that_stalls_is_a_connect_timeout_not_a_read_timeout() {
    // Accepts TCP, then never answers the ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let sidecar = Sidecar::new()
        .upstream(format!("https://localhost:{port}"))
        .arg("--connect-timeout")
        .arg("500ms")
        .arg("--read-timeout")
        .arg("10s")
        .start()
        .await;

    let started = Instant::now();
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    let elapsed = started.elapsed();
    holder.abort();

    reply.assert_sidecar_error(504, "upstream_connect_timeout");
    assert_eq!(reply.retry_safe(), Some(true), "nothing was sent");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

/// An upstream that answers each request on a kept-alive connection and then closes that
/// connection after a pause that varies from 0 to 4 ms, while the app's calls come back
/// to back: some calls find their idle connection already closed, some are sent on it
/// just as the close comes. Whatever the timing, no request reaches the upstream twice,
/// a call that was answered reached it exactly once, and a failure that says "retry
/// safe" never reached it.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_closing_idle_connections_as_they_are_reused_never_gets_a_request_twice() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the upstream");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("upstream address")
    );
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = seen.clone();
    let server = tokio::spawn(async move {
        let mut pause = 0u64;
        while let Ok((mut socket, _)) = listener.accept().await {
            pause = (pause + 1) % 5;
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, length) = loop {
                    if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
                        break (end + 4, length);
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                };
                while buffer.len() < head_end + length {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]);
                recorded.lock().expect("record").push(body.into_owned());
                let answer = br#"{"returnCode":"0000","returnMessage":"Success."}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    answer.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(answer).await;
                if pause > 0 {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                // Whatever came meanwhile is dropped unanswered, as a server closing an
                // idle connection does.
            });
        }
    });
    let sidecar = Sidecar::new().upstream(url).start().await;

    let calls = 60;
    let mut replies = Vec::new();
    for order in 0..calls {
        let body = format!(r#"{{"orderId":"race-{order}","amount":1}}"#);
        let reply = Call::post("/v3/payments/request", body)
            .send(sidecar.addr)
            .await;
        replies.push((format!("race-{order}"), reply));
    }
    server.abort();

    let seen = seen.lock().expect("records").clone();
    let mut times: HashMap<String, usize> = HashMap::new();
    for body in &seen {
        let order = body
            .split("\"orderId\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        *times.entry(order).or_default() += 1;
    }
    for (order, reply) in &replies {
        let sent = times.get(order).copied().unwrap_or(0);
        assert!(sent <= 1, "{order} reached the upstream {sent} times");
        match reply.status {
            200 => assert_eq!(sent, 1, "{order} answered without reaching the upstream"),
            _ => {
                reply.assert_case_sidecar_error(order, 502, "upstream_protocol");
                assert_eq!(reply.retry_safe(), Some(false), "{order}");
            }
        }
    }
    let answered = replies.iter().filter(|(_, r)| r.status == 200).count();
    // About two in three are answered here (the rest were written just as the upstream
    // closed); far fewer would mean the calls never found a warm connection to race.
    assert!(answered >= calls / 4, "only {answered} of {calls} answered");
}
