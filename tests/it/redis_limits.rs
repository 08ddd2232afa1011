//! `state.backend: redis` (docs/redis.md), against a real redis-server on loopback.

use crate::util::{
    eventually, metric, Call, RedisServer, Reply, RunningSidecar, Sidecar, TempFile, Upstream,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sidecar on `redis` with `extra` YAML, against `upstream`.
fn on_redis(redis_url: &str, upstream: &Upstream, extra: &str) -> Sidecar {
    Sidecar::new().upstream(upstream.url()).config_yaml(
        "sidecar.yaml",
        format!("state:\n  backend: redis\n  redis:\n    url: {redis_url}\n{extra}"),
    )
}

/// Connections in `CLIENT LIST` other than the one asking.
fn other_clients(list: &str) -> usize {
    list.lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .count()
}

#[tokio::test]
async fn a_sidecar_on_redis_connects_with_the_password_from_its_file_and_is_ready() {
    let redis = RedisServer::with_password("it-redis-password-5d2b");
    let password = TempFile::with_contents("redis-password", b"it-redis-password-5d2b\n");
    let upstream = Upstream::recording().start().await;
    let sidecar = on_redis(
        &redis.url(),
        &upstream,
        &format!("    password_file: {}\n", password.path_str()),
    )
    .start()
    .await;
    sidecar
        .wait_for_metric("linepay_sidecar_state_up", 1.0)
        .await;
    let ready = Call::get("/readyz").send(sidecar.admin_addr).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let clients: String = redis.command("CLIENT", &["LIST"]);
    assert!(other_clients(&clients) >= 1, "{clients}");
    assert!(
        !sidecar.stderr_so_far().contains("it-redis-password-5d2b"),
        "the password was logged"
    );
}

#[tokio::test]
async fn a_sidecar_starts_ready_while_redis_is_down_and_connects_when_it_comes_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let upstream = Upstream::recording().start().await;
    let sidecar = on_redis(&redis.url(), &upstream, "").start().await;
    let ready = Call::get("/readyz").send(sidecar.admin_addr).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        metric(&sidecar.scrape().await, "linepay_sidecar_state_up"),
        Some(0.0)
    );
    redis.restart();
    sidecar
        .wait_for_metric("linepay_sidecar_state_up", 1.0)
        .await;
    eventually("the sidecar's connection in CLIENT LIST", || async {
        let clients: String = redis.command("CLIENT", &["LIST"]);
        if other_clients(&clients) >= 1 {
            Ok(())
        } else {
            Err(clients)
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Shared rate limits.

const REQUEST: &str = "/v3/payments/request";
const FALLBACKS: &str = r#"linepay_sidecar_rate_limit_fallback_total{limit="global"}"#;
/// The global bucket's key for the harness's channel.
const GLOBAL_KEY: &str = "linepay-sidecar:1657002468:limit:global";

/// Two sidecars of one channel on `redis`, `global: 10/s, burst 10`. The command timeout
/// is 200 ms rather than the default 20 ms: this machine is shared and a debug build under
/// load can take longer than 20 ms to get an answer it would get in 1 ms alone, which
/// would make the shared path flake into the fallback.
async fn two_sidecars(
    redis: &RedisServer,
    upstream: &Upstream,
) -> (RunningSidecar, RunningSidecar) {
    // A route bucket too, wide open: the route's and the global bucket are one round trip.
    let extra = "    command_timeout: 200ms\n    fallback_share: 0.5\nlimits:\n  global: {rate: 10/s, burst: 10}\n  routes:\n    POST /v3/payments/request: {rate: 1000/s}\n";
    let a = on_redis(&redis.url(), upstream, extra).start().await;
    let b = on_redis(&redis.url(), upstream, extra).start().await;
    a.wait_for_metric("linepay_sidecar_state_up", 1.0).await;
    b.wait_for_metric("linepay_sidecar_state_up", 1.0).await;
    (a, b)
}

async fn post(sidecar: &RunningSidecar) -> Reply {
    Call::post(REQUEST, r#"{"amount":1,"currency":"TWD"}"#)
        .send(sidecar.addr)
        .await
}

/// A 429 `rate_limited` from the global limit, with a whole-second `Retry-After`.
#[track_caller]
fn assert_refused_by_global(reply: &Reply) {
    reply.assert_sidecar_error(429, "rate_limited");
    let message = reply.error_message().unwrap_or_default();
    assert!(message.contains("the global rate limit"), "{message}");
    let retry_after = reply
        .header("retry-after")
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no whole-second Retry-After: {:?}", reply.headers));
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
}

/// Calls from `workers` concurrent loops for `duration` (at most `max_calls` in all),
/// each loop alternating between the sidecars; every answer with the sidecar it came
/// from (0 or 1).
async fn drive(
    sidecars: [&RunningSidecar; 2],
    duration: Duration,
    max_calls: usize,
) -> Vec<(usize, Reply)> {
    let deadline = Instant::now() + duration;
    let sent = Arc::new(AtomicUsize::new(0));
    let addrs = [sidecars[0].addr, sidecars[1].addr];
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut replies = Vec::new();
                let mut turn = worker;
                while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max_calls
                {
                    let which = turn % 2;
                    turn += 1;
                    let reply = Call::post(REQUEST, r#"{"amount":1,"currency":"TWD"}"#)
                        .send(addrs[which])
                        .await;
                    replies.push((which, reply));
                }
                replies
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(
            worker
                .await
                .unwrap_or_else(|error| panic!("driver: {error}")),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sidecars_on_one_redis_share_the_global_limit() {
    let redis = RedisServer::start();
    let upstream = Upstream::recording().start().await;
    let (a, b) = two_sidecars(&redis, &upstream).await;

    let started = Instant::now();
    let replies = drive([&a, &b], Duration::from_secs(3), 10_000).await;
    let elapsed = started.elapsed();

    let admitted = replies
        .iter()
        .filter(|(_, reply)| reply.status == 200)
        .count();
    for (_, reply) in replies.iter().filter(|(_, reply)| reply.status != 200) {
        assert_refused_by_global(reply);
    }
    // What one bucket of burst 10 refilling at 10/s can give in `elapsed` (Redis's clock
    // runs within this window), plus one token for the refill that lands on the edge.
    let bound = 10 + (elapsed.as_secs_f64() * 10.0).ceil() as usize + 1;
    assert_eq!(
        upstream.count(),
        admitted,
        "every admitted call reached the upstream"
    );
    assert!(
        admitted <= bound,
        "{admitted} calls admitted in {elapsed:?} by two sidecars sharing 10/s burst 10 (at most {bound})"
    );
    // Per process, the local limiters would have admitted up to twice as many; shared,
    // the bucket was used (not just refused): well above one burst.
    assert!(admitted >= 25, "only {admitted} admitted in {elapsed:?}");
    // Both processes admitted and refused: the bucket is one, whichever pod asks.
    for which in [0, 1] {
        let theirs = || replies.iter().filter(move |(from, _)| *from == which);
        assert!(
            theirs().any(|(_, reply)| reply.status == 200),
            "sidecar {which} admitted none"
        );
        assert!(
            theirs().any(|(_, reply)| reply.status == 429),
            "sidecar {which} refused none"
        );
    }
    for sidecar in [&a, &b] {
        assert_eq!(metric(&sidecar.scrape().await, FALLBACKS), Some(0.0));
    }
    assert_eq!(redis.command::<i64>("EXISTS", &[GLOBAL_KEY]), 1);
    // One script run per call, route and global bucket together; the first call of each
    // sidecar adds two (its EVALSHA answered NOSCRIPT, then the EVAL).
    let runs = script_runs(&redis);
    assert!(
        (replies.len()..=replies.len() + 4).contains(&runs),
        "{runs} script runs for {} calls",
        replies.len()
    );
}

/// EVALSHA and EVAL commands Redis ran (INFO commandstats).
fn script_runs(redis: &RedisServer) -> usize {
    let stats: String = redis.command("INFO", &["commandstats"]);
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_the_limits_fall_back_locally_and_share_again_when_it_returns() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::recording().start().await;
    let (a, b) = two_sidecars(&redis, &upstream).await;
    assert_eq!(post(&a).await.status, 200);
    assert_eq!(redis.command::<i64>("EXISTS", &[GLOBAL_KEY]), 1);

    redis.stop();
    // Told by its connection, not by a failed call: b sends nothing meanwhile.
    b.wait_for_metric("linepay_sidecar_state_up", 0.0).await;
    // Each sidecar alone, at half the bucket: 5 of burst, 5/s.
    let before = upstream.count();
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..20 {
        let reply = post(&a).await;
        if reply.status != 200 {
            assert_refused_by_global(&reply);
            refused += 1;
        }
    }
    let admitted = upstream.count() - before;
    let bound = 5 + (started.elapsed().as_secs_f64() * 5.0).ceil() as usize + 1;
    assert!(
        admitted <= bound,
        "{admitted} admitted alone (at most {bound})"
    );
    assert!(
        refused > 0 && admitted >= 1,
        "admitted {admitted}, refused {refused}"
    );
    let fallbacks = metric(&a.scrape().await, FALLBACKS).unwrap_or_default();
    assert!(fallbacks >= 20.0, "fallbacks counted: {fallbacks}");
    let ready = Call::get("/readyz").send(a.admin_addr).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(
        a.stderr_so_far()
            .matches("state.redis.fallback_share")
            .count()
            <= 2,
        "the fallback is logged once per interval, not per call:\n{}",
        a.stderr_so_far()
    );

    redis.restart();
    a.wait_for_metric("linepay_sidecar_state_up", 1.0).await;
    b.wait_for_metric("linepay_sidecar_state_up", 1.0).await;
    // The restarted Redis has neither the script nor the bucket: EVALSHA's NOSCRIPT is
    // answered by EVAL, and the bucket is in Redis again, decided there.
    let counted_a = metric(&a.scrape().await, FALLBACKS).unwrap_or_default();
    let counted_b = metric(&b.scrape().await, FALLBACKS).unwrap_or_default();
    for sidecar in [&b, &a] {
        let reply = post(sidecar).await;
        assert!(
            reply.status == 200 || reply.status == 429,
            "{}",
            reply.text()
        );
    }
    assert_eq!(redis.command::<i64>("EXISTS", &[GLOBAL_KEY]), 1);
    // Neither fell back: b, idle through the outage, had replaced its dead connection
    // when it ended, not on this call.
    assert_eq!(metric(&a.scrape().await, FALLBACKS), Some(counted_a));
    assert_eq!(metric(&b.scrape().await, FALLBACKS), Some(counted_b));
}

#[test]
fn the_shared_redis_example_config_passes_check() {
    let password = TempFile::with_contents("redis-password", b"example-password\n");
    let ca = TempFile::with_contents("redis-ca.crt", b"-----BEGIN CERTIFICATE-----\n");
    let output = crate::util::Cli::check_config(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sidecar-redis.yaml"),
    )
    .env("LINEPAY_CHANNEL_SECRET", crate::util::CHANNEL_SECRET)
    .arg("--state-redis-password-file")
    .arg(password.path_str())
    .arg("--state-redis-ca-file")
    .arg(ca.path_str())
    .run();
    assert!(output.status.success(), "{output:?}");
    assert!(!format!("{output:?}").contains("example-password"));
}

#[test]
fn a_password_in_the_redis_url_is_refused_without_being_quoted() {
    let output = crate::util::Cli::new()
        .arg("check")
        .env("LINEPAY_CHANNEL_ID", crate::util::CHANNEL_ID)
        .env("LINEPAY_CHANNEL_SECRET", crate::util::CHANNEL_SECRET)
        .env("LINEPAY_SIDECAR_STATE_BACKEND", "redis")
        .env(
            "LINEPAY_SIDECAR_STATE_REDIS_URL",
            "redis://sidecar:hunter2-in-url@127.0.0.1:6379",
        )
        .run();
    assert!(!output.status.success(), "{output:?}");
    assert!(
        output.stderr.contains("LINEPAY_SIDECAR_STATE_REDIS_URL")
            && output.stderr.contains("state.redis.password_file"),
        "{output:?}"
    );
    assert!(!format!("{output:?}").contains("hunter2"), "{output:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_redis_holds_a_call_no_longer_than_the_command_timeout_and_the_limit_falls_back() {
    let redis = RedisServer::start();
    let upstream = Upstream::recording().start().await;
    let sidecar = on_redis(
        &redis.url(),
        &upstream,
        "    command_timeout: 50ms\nlimits:\n  global: {rate: 10/s, burst: 10}\n",
    )
    .start()
    .await;
    sidecar
        .wait_for_metric("linepay_sidecar_state_up", 1.0)
        .await;
    assert_eq!(post(&sidecar).await.status, 200);
    // Redis answers nobody for 2 s (the connection stays up: a slow Redis, not a down one).
    let _: String = redis.command("CLIENT", &["PAUSE", "2000", "ALL"]);
    let started = Instant::now();
    let reply = post(&sidecar).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        took < Duration::from_millis(1500),
        "the call waited {took:?} for Redis"
    );
    let scrape = sidecar.scrape().await;
    let timeouts = r#"linepay_sidecar_state_errors_total{kind="timeout"}"#;
    assert!(
        metric(&scrape, FALLBACKS).unwrap_or_default() >= 1.0,
        "{scrape}"
    );
    assert!(
        metric(&scrape, timeouts).unwrap_or_default() >= 1.0,
        "{scrape}"
    );
    // Redis answers again: a call is decided there, without falling back.
    let pong: String = redis.command("PING", &[]);
    assert_eq!(pong, "PONG");
    eventually("a call decided by Redis again", || async {
        let before = metric(&sidecar.scrape().await, FALLBACKS);
        let reply = post(&sidecar).await;
        let after = metric(&sidecar.scrape().await, FALLBACKS);
        if reply.status == 200 && before == after {
            Ok(())
        } else {
            Err(format!(
                "{} fallbacks {before:?} -> {after:?}",
                reply.status
            ))
        }
    })
    .await;
}
