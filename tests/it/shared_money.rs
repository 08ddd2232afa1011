//! Money-call guards shared by several sidecars on one real Redis (`state.backend:
//! redis`, docs/money-calls.md "Several sidecars"): two sidecar processes ("pods"), each
//! with its own journal, against the ledger double. A key used on one pod replays on the
//! other; one money call per transaction across pods; a call whose pod is killed is
//! held until its lease ends, then checked with LINE Pay, never sent blindly again;
//! Redis down refuses money calls unsent, and its return shares them again.

use crate::util::ledger::{Behaviour, Ledger};
use crate::util::{
    eventually, eventually_within, metric, Call, RedisServer, RunningSidecar, Sidecar, TempFile,
};
use serde_json::Value;
use std::time::Duration;

const TX: &str = "2021121600698709720";

fn refund_path(tx: &str) -> String {
    format!("/v3/payments/{tx}/refund")
}

/// A sidecar of the "Deployment": the ledger upstream, the shared Redis under `prefix`
/// (each test its own), its own journal.
fn pod(ledger: &Ledger, redis: &RedisServer, prefix: &str) -> Sidecar {
    Sidecar::new()
        .upstream(&ledger.url)
        .env("LINEPAY_SIDECAR_STATE_BACKEND", "redis")
        .env("LINEPAY_SIDECAR_STATE_REDIS_URL", redis.url())
        .env("LINEPAY_SIDECAR_STATE_REDIS_KEY_PREFIX", prefix)
        // Loopback Redis on a machine shared with other builds: a generous bound.
        .env("LINEPAY_SIDECAR_STATE_REDIS_COMMAND_TIMEOUT", "500ms")
}

/// Waits until the pod's Redis connection is up (it connects in the background).
async fn connected(pod: &RunningSidecar) {
    eventually("the sidecar is connected to Redis", || async {
        let scrape = pod.scrape().await;
        match metric(&scrape, "linepay_sidecar_state_up") {
            Some(up) if up >= 1.0 => Ok(()),
            other => Err(format!("linepay_sidecar_state_up {other:?}")),
        }
    })
    .await;
}

async fn journal_calls(pod: &RunningSidecar, tx: &str) -> Vec<Value> {
    let reply = Call::get(&format!("/calls?transactionId={tx}"))
        .send(pod.admin_addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_key_used_on_pod_a_then_pod_b_is_sent_once_and_replayed_byte_for_byte() {
    let redis = RedisServer::start();
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let a = pod(&ledger, &redis, "replay").start().await;
    let b = pod(&ledger, &redis, "replay").start().await;
    connected(&a).await;
    connected(&b).await;
    let refund = |body: &'static str| {
        Call::post(&refund_path(TX), body).header("Idempotency-Key", "refund-k-1")
    };

    let first = refund(r#"{"refundAmount":10}"#).send(a.addr).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = refund(r#"{"refundAmount":10}"#).send(b.addr).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "pod A's answer, byte for byte");
    assert_eq!(ledger.count("POST", &refund_path(TX)), 1);
    // The same key with another body, on either pod: refused, never sent.
    for pod in [&a, &b] {
        let other = refund(r#"{"refundAmount":20}"#).send(pod.addr).await;
        other.assert_sidecar_error(422, "idempotency_key_reused");
    }
    assert_eq!(ledger.count("POST", &refund_path(TX)), 1);
    // What Redis holds is sealed: the answer's text is not in it.
    let keys: Vec<String> = redis.command("KEYS", &["replay:*:idem:*"]);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let answer: Vec<u8> = redis.command("HGET", &[&keys[0], "answer"]);
    assert!(!answer.is_empty());
    assert!(
        !answer.windows(4).any(|w| w == b"0000"),
        "the stored answer is not sealed"
    );
    let ttl: i64 = redis.command("PTTL", &[&keys[0]]);
    assert!(ttl > 23 * 3600 * 1000, "answer kept {ttl} ms");
}

/// 50 transactions, each refunded twice at once, once through each pod: exactly one
/// refund of each reaches LINE Pay; the other is refused `409 call_in_progress`, unsent.
#[tokio::test]
async fn fifty_pairs_of_concurrent_refunds_through_two_pods_send_exactly_one_each() {
    let redis = RedisServer::start();
    let ledger = Ledger::start().await;
    let txs: Vec<String> = (0..50).map(|i| format!("20211216006987{i:05}")).collect();
    for tx in &txs {
        ledger.paid(tx);
    }
    // Each refund is at LINE Pay long enough for its twin to arrive meanwhile.
    ledger.behave("refund", Behaviour::Slow(Duration::from_millis(700)));
    let a = pod(&ledger, &redis, "pairs").start().await;
    let b = pod(&ledger, &redis, "pairs").start().await;
    connected(&a).await;
    connected(&b).await;
    let mut calls = Vec::new();
    for tx in &txs {
        for addr in [a.addr, b.addr] {
            let call = Call::post(&refund_path(tx), r#"{"refundAmount":30}"#);
            calls.push(tokio::spawn(call.send(addr)));
        }
    }
    let mut answered = 0;
    for call in calls {
        let reply = call.await.expect("refund");
        match reply.status {
            200 => answered += 1,
            _ => {
                reply.assert_sidecar_error(409, "call_in_progress");
                assert_eq!(reply.retry_safe(), Some(true));
            }
        }
    }
    for tx in &txs {
        assert_eq!(
            ledger.count("POST", &refund_path(tx)),
            1,
            "transaction {tx} was refunded by both pods"
        );
    }
    assert_eq!(answered, 50);
}

/// Pod A is killed (`kill -9`) while LINE Pay still processes its keyed refund. Pod B's
/// retry with the same key is held (`409 call_in_progress`) while A's lease lives; once it
/// has ended, B takes the claim over, asks LINE Pay, finds the refund applied and says so
/// (`409 call_applied`): LINE Pay saw the refund once. B's journal shows the takeover.
#[tokio::test]
async fn a_keyed_refund_of_a_killed_pod_is_held_then_checked_by_the_other_pod_and_sent_once() {
    let redis = RedisServer::start();
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    // LINE Pay applies the refund 2 s after it arrives; pod A dies before that.
    ledger.behave("refund", Behaviour::Slow(Duration::from_secs(2)));
    let start = || {
        pod(&ledger, &redis, "takeover")
            .arg("--connect-timeout")
            .arg("500ms")
            .arg("--read-timeout")
            .arg("4s")
            .env("LINEPAY_SIDECAR_JOURNAL_RECONCILE_TIMEOUT", "2s")
            .start()
    };
    let refund = || {
        Call::post(&refund_path(TX), r#"{"refundAmount":30}"#)
            .header("Idempotency-Key", "refund-30-killed")
    };
    let mut a = start().await;
    let b = start().await;
    connected(&a).await;
    connected(&b).await;
    let cut = tokio::spawn(refund().send(a.addr));
    eventually("the refund reaches LINE Pay", || async {
        match ledger.count("POST", &refund_path(TX)) {
            0 => Err("not yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10)).expect("killed");
    cut.abort();

    // A's lease: 0.5 s connect + LINE Pay's 20 s refund limit + 1 s + 2 s check + 5 s.
    let held = refund().send(b.addr).await;
    held.assert_sidecar_error(409, "call_in_progress");
    assert_eq!(held.retry_safe(), Some(true));
    let other = Call::post(&refund_path(TX), r#"{"refundAmount":5}"#)
        .send(b.addr)
        .await;
    other.assert_sidecar_error(409, "call_in_progress");
    assert_eq!(ledger.count("POST", &refund_path(TX)), 1);

    let late = eventually_within(
        Duration::from_secs(60),
        "pod B checks the orphan",
        || async {
            let reply = refund().send(b.addr).await;
            assert_eq!(
                ledger.count("POST", &refund_path(TX)),
                1,
                "a retry reached LINE Pay, a second refund: {}",
                reply.text()
            );
            match reply.status {
                409 if reply.text().contains("call_in_progress") => Err("held".to_owned()),
                _ => Ok(reply),
            }
        },
    )
    .await;
    late.assert_sidecar_error(409, "call_applied");
    assert_eq!(late.retry_safe(), Some(false));
    // On record in B's journal, with the reconciled state; counted.
    let calls = journal_calls(&b, TX).await;
    let taken = calls
        .iter()
        .find(|call| call["idempotency_key"] == "refund-30-killed")
        .unwrap_or_else(|| panic!("no takeover in B's journal: {calls:?}"));
    assert_eq!(taken["outcome"], "interrupted", "{taken}");
    assert_eq!(taken["reconciled_state"], "applied", "{taken}");
    let scrape = b.scrape().await;
    let takeovers = metric(
        &scrape,
        r#"linepay_sidecar_lease_takeovers_total{by="request"}"#,
    )
    .unwrap_or(0.0)
        + metric(
            &scrape,
            r#"linepay_sidecar_lease_takeovers_total{by="sweeper"}"#,
        )
        .unwrap_or(0.0);
    assert_eq!(takeovers, 1.0, "{scrape}");
    // The transaction is free again for a new refund, through either pod.
    let next = Call::post(&refund_path(TX), r#"{"refundAmount":5}"#)
        .send(b.addr)
        .await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(ledger.count("POST", &refund_path(TX)), 2);
}

/// Redis stopped: a money call is refused `503 state_unavailable`, retry-safe, never
/// sent; a plain call still goes. Redis back (empty): money calls are guarded across
/// pods again, without a restart.
#[tokio::test]
async fn with_redis_down_money_calls_are_refused_unsent_and_shared_again_once_it_is_back() {
    let mut redis = RedisServer::start();
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let a = pod(&ledger, &redis, "down").start().await;
    connected(&a).await;
    redis.stop();
    let refused = Call::post(&refund_path(TX), r#"{"refundAmount":10}"#)
        .send(a.addr)
        .await;
    refused.assert_sidecar_error(503, "state_unavailable");
    assert_eq!(refused.retry_safe(), Some(true));
    let keyed = Call::post(&refund_path(TX), r#"{"refundAmount":10}"#)
        .header("Idempotency-Key", "down-1")
        .send(a.addr)
        .await;
    keyed.assert_sidecar_error(503, "state_unavailable");
    assert_eq!(
        ledger.count("POST", &refund_path(TX)),
        0,
        "sent without its guards"
    );
    let scrape = a.scrape().await;
    assert!(
        metric(
            &scrape,
            r#"linepay_sidecar_refusals_total{code="state_unavailable"}"#
        ) >= Some(2.0),
        "{scrape}"
    );
    assert!(
        metric(
            &scrape,
            r#"linepay_sidecar_money_guard_failures_total{operation="claim"}"#
        ) >= Some(2.0),
        "{scrape}"
    );

    redis.restart();
    let b = pod(&ledger, &redis, "down").start().await;
    connected(&a).await;
    connected(&b).await;
    ledger.behave("refund", Behaviour::Slow(Duration::from_millis(800)));
    let first = tokio::spawn(
        Call::post(&refund_path(TX), r#"{"refundAmount":10}"#)
            .header("Idempotency-Key", "back-1")
            .send(a.addr),
    );
    eventually("the refund reaches LINE Pay", || async {
        match ledger.count("POST", &refund_path(TX)) {
            0 => Err("not yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    // Shared again: pod B sees pod A's call in flight.
    let twin = Call::post(&refund_path(TX), r#"{"refundAmount":10}"#)
        .header("Idempotency-Key", "back-1")
        .send(b.addr)
        .await;
    twin.assert_sidecar_error(409, "call_in_progress");
    let first = first.await.expect("refund");
    assert_eq!(first.status, 200, "{}", first.text());
    let replay = Call::post(&refund_path(TX), r#"{"refundAmount":10}"#)
        .header("Idempotency-Key", "back-1")
        .send(b.addr)
        .await;
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.body, first.body);
    assert_eq!(ledger.count("POST", &refund_path(TX)), 1);
}

/// `state.redis.money_fallback: local`: with Redis down, money calls are admitted with
/// this pod's own guards (counted), and one money call per transaction still holds here.
#[tokio::test]
async fn money_fallback_local_admits_with_this_pods_guards_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let yaml = format!(
        "state:\n  backend: redis\n  redis:\n    url: {}\n    money_fallback: local\n",
        redis.url()
    );
    let a = pod(&ledger, &redis, "fallback")
        .config_yaml("fallback.yaml", yaml)
        .start()
        .await;
    connected(&a).await;
    redis.stop();
    ledger.behave("refund", Behaviour::Slow(Duration::from_millis(800)));
    let first = tokio::spawn(Call::post(&refund_path(TX), r#"{"refundAmount":10}"#).send(a.addr));
    eventually("the refund reaches LINE Pay", || async {
        match ledger.count("POST", &refund_path(TX)) {
            0 => Err("not yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    let twin = Call::post(&refund_path(TX), r#"{"refundAmount":10}"#)
        .send(a.addr)
        .await;
    twin.assert_sidecar_error(409, "call_in_progress");
    let first = first.await.expect("refund");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(ledger.count("POST", &refund_path(TX)), 1);
    let scrape = a.scrape().await;
    assert!(
        metric(&scrape, "linepay_sidecar_money_guard_fallbacks_total") >= Some(1.0),
        "{scrape}"
    );
}

/// No retry comes for the refund of a killed pod: once its lease has ended, the sweeper
/// (one pod at a time) takes the claim over, asks LINE Pay, records the reconciled state
/// in its journal and frees the transaction. LINE Pay saw the refund once.
#[tokio::test]
async fn the_sweeper_checks_and_records_the_refund_of_a_killed_pod_that_no_retry_asks_about() {
    let redis = RedisServer::start();
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    ledger.behave("refund", Behaviour::Slow(Duration::from_secs(2)));
    let start = || {
        pod(&ledger, &redis, "sweeper")
            .arg("--connect-timeout")
            .arg("500ms")
            .arg("--read-timeout")
            .arg("4s")
            .env("LINEPAY_SIDECAR_JOURNAL_RECONCILE_TIMEOUT", "2s")
            .start()
    };
    let mut a = start().await;
    let b = start().await;
    connected(&a).await;
    connected(&b).await;
    let cut = tokio::spawn(Call::post(&refund_path(TX), r#"{"refundAmount":30}"#).send(a.addr));
    eventually("the refund reaches LINE Pay", || async {
        match ledger.count("POST", &refund_path(TX)) {
            0 => Err("not yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10)).expect("killed");
    cut.abort();

    let swept = eventually_within(
        Duration::from_secs(60),
        "the sweeper checks the orphan",
        || async {
            let calls = journal_calls(&b, TX).await;
            match calls.first() {
                Some(call) if call["outcome"] == "interrupted" => Ok(call.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(swept["reconciled_state"], "applied", "{swept}");
    assert!(
        swept["reconciled_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("taken over")),
        "{swept}"
    );
    let scrape = b.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_sweeper_reconciliations_total{state="applied"}"#
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_lease_takeovers_total{by="sweeper"}"#
        ),
        Some(1.0)
    );
    // Nothing is left to sweep, and the transaction is free.
    let left: Vec<String> = redis.command("ZRANGE", &["sweeper:1657002468:claims", "0", "-1"]);
    assert!(left.is_empty(), "{left:?}");
    let next = Call::post(&refund_path(TX), r#"{"refundAmount":5}"#)
        .send(b.addr)
        .await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(ledger.count("POST", &refund_path(TX)), 2);
}

/// Pod A claims a keyed refund, then stalls before sending it (its journal write waits
/// on a lock, and the process is stopped meanwhile, as a frozen VM or a throttled
/// container would be) for longer than the claim leaves to send in. Once it runs again
/// it must not send: another pod may already have taken the claim over, found nothing at
/// LINE Pay and sent the refund itself. It answers `503 state_unavailable` (retry safe).
#[tokio::test]
async fn a_pod_that_stalled_past_its_claims_time_to_send_does_not_send() {
    let redis = RedisServer::start();
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    // The claim leaves reconcile_timeout + 5 s to send in: 6 s here.
    let a = pod(&ledger, &redis, "stall")
        .journal_at(journal.path_str())
        .config_yaml("sidecar.yaml", "journal:\n  reconcile_timeout: 1s\n")
        .start()
        .await;
    connected(&a).await;
    // A first call writes what a journal's first call writes (its marker), unhindered.
    let warm_tx = "2021121600698709721";
    ledger.paid(warm_tx);
    let warm = Call::post(&refund_path(warm_tx), r#"{"refundAmount":10}"#)
        .send(a.addr)
        .await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    // Someone holds the journal's write lock for 3 s: A's intent waits (busy timeout 5 s).
    let mut lock = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(3); \
             c.execute('COMMIT')",
            journal.path_str(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        use std::io::BufRead;
        let mut line = String::new();
        let stdout = lock.stdout.as_mut().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the lock is taken");
        assert_eq!(line.trim(), "locked");
    }
    let refund = Call::post(&refund_path(TX), r#"{"refundAmount":10}"#)
        .header("Idempotency-Key", "stalled-1")
        .within(Duration::from_secs(60));
    let call = tokio::spawn(refund.send(a.addr));
    // The claim is made, the intent waits on the lock: now the process is stopped.
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.signal("STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    a.signal("CONT");
    let reply = call.await.expect("refund");
    let _ = lock.wait();
    reply.assert_sidecar_error(503, "state_unavailable");
    assert_eq!(reply.retry_safe(), Some(true));
    assert_eq!(
        ledger.count("POST", &refund_path(TX)),
        0,
        "a stalled pod sent the refund after its claim's time to send"
    );
    let scrape = a.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_money_guard_failures_total{operation="send_window"}"#
        ),
        Some(1.0)
    );
}
