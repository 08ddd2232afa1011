//! `state.backend: redis` (docs/redis.md), against a real redis-server on loopback.

use crate::util::{eventually, Call, RedisServer, Sidecar, TempFile, Upstream};

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
        crate::util::metric(&sidecar.scrape().await, "linepay_sidecar_state_up"),
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
