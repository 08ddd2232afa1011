//! `/calls` and the journal's health on the admin port, through the real binary: who may
//! read the journal, the cap on lookups, the order a transaction was requested with,
//! readiness while the journal cannot be written, and a journal found emptied.

use crate::util::ledger::Ledger;
use crate::util::{
    eventually, raw_json_number, remove_journal_sidecars, start_emulator, Call, Cli, Reply,
    Sidecar, TempFile, CHANNEL_ID, CHANNEL_SECRET,
};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const TX: &str = "2021121600698709710";

fn calls_of(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `/readyz` until it answers `status`; its last body (the reason when not ready).
async fn readyz_becomes(admin: SocketAddr, status: u16, what: &str) -> String {
    eventually(what, || async {
        let reply = Call::get("/readyz").send(admin).await;
        if reply.status == status {
            Ok(reply.text())
        } else {
            Err(reply.text())
        }
    })
    .await
}

// Issue 22.2: an online confirm and refund name no order; the order the transaction was
// requested with is filled in, so "what happened to order X" has an answer.
#[tokio::test(flavor = "multi_thread")]
async fn after_the_quick_start_the_order_lists_its_confirm_and_refund() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;
    let request = r#"{"amount":100,"currency":"TWD","orderId":"order-1","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}"#;
    let reserved = Call::post("/v3/payments/request", request)
        .send(sidecar.addr)
        .await;
    assert_eq!(
        reserved.return_code().as_deref(),
        Some("0000"),
        "{}",
        reserved.text()
    );
    let tx = raw_json_number(&reserved.text(), "transactionId").expect("transactionId");
    let confirm = Call::post(
        &format!("/v3/payments/{tx}/confirm"),
        r#"{"amount":100,"currency":"TWD"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(
        confirm.return_code().as_deref(),
        Some("0000"),
        "{}",
        confirm.text()
    );
    let refund = Call::post(
        &format!("/v3/payments/{tx}/refund"),
        r#"{"refundAmount":40}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(
        refund.return_code().as_deref(),
        Some("0000"),
        "{}",
        refund.text()
    );

    let calls = calls_of(
        &Call::get("/calls?orderId=order-1")
            .send(sidecar.admin_addr)
            .await,
    );
    let operations: Vec<&str> = calls
        .iter()
        .map(|call| call["operation"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(operations, ["refund", "confirm"], "{calls:?}");
    for call in &calls {
        assert_eq!(call["transaction_id"], tx.as_str());
        assert_eq!(call["order_id"], "order-1");
        assert_eq!(call["return_code"], "0000");
    }
    // Another order's lookup finds none of them.
    let other = calls_of(
        &Call::get("/calls?orderId=order-2")
            .send(sidecar.admin_addr)
            .await,
    );
    assert!(other.is_empty(), "{other:?}");
}

// Issue 17.6: a pod's admin listener is on the pod IP for the kubelet and Prometheus;
// `/calls` (ids, amounts, idempotency keys) stays with loopback peers. A peer on another
// address is refused by the same check (`admin::calls` unit tests, with a TEST-NET peer):
// this suite sends traffic to loopback only, never to the host's own network address.
#[tokio::test]
async fn on_a_pod_wide_admin_listener_calls_answers_loopback_peers_and_can_be_turned_off() {
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let start = |access: Option<&'static str>| {
        let sidecar = Sidecar::new()
            .upstream(&ledger.url)
            .admin_listen("0.0.0.0:0");
        match access {
            Some(access) => sidecar.arg("--admin-calls").arg(access),
            None => sidecar,
        }
        .start()
    };
    let sidecar = start(None).await;
    let refund = Call::post(
        &format!("/v3/payments/{TX}/refund"),
        r#"{"refundAmount":10}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    let port = sidecar.admin_addr.port();
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    // Loopback (kubectl port-forward, exec) reads it, from any 127/8 address.
    let listed = Call::get(&format!("/calls?transactionId={TX}"))
        .from(IpAddr::from([127, 0, 0, 9]))
        .send(loopback)
        .await;
    assert_eq!(calls_of(&listed).len(), 1);
    let ready = Call::get("/readyz").send(loopback).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    drop(sidecar);

    // `admin.calls: any` keeps it open on the admin listener; `off` closes it.
    let open = start(Some("any")).await;
    let port = open.admin_addr.port();
    let listed = Call::get("/calls")
        .from(IpAddr::from([127, 0, 0, 9]))
        .send(SocketAddr::from(([127, 0, 0, 1], port)))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    drop(open);
    let off = start(Some("off")).await;
    let port = off.admin_addr.port();
    let closed = Call::get("/calls")
        .send(SocketAddr::from(([127, 0, 0, 1], port)))
        .await;
    assert_eq!(closed.status, 404, "{}", closed.text());
    assert_eq!(closed.error_code().as_deref(), Some("calls_off"));
}

/// Adds `count` finished calls and `pending` calls without an outcome to a journal, in
/// one transaction (as a bulk load would).
fn add_rows(journal: &std::path::Path, count: usize, pending: usize) {
    let mut connection = rusqlite::Connection::open(journal).expect("open the journal");
    connection
        .busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let batch = connection.transaction().expect("transaction");
    {
        let mut insert = batch
            .prepare(
                "INSERT INTO calls (request_id, started_at, route, method, operation, channel_id, \
                 order_id, transaction_id, amount, currency, body_hash, outcome, status) \
                 VALUES (?1, 1, '/v3/payments/{transactionId}/confirm', 'POST', 'confirm', 'c', \
                 ?2, ?3, '100', 'TWD', 'h', ?4, 200)",
            )
            .expect("prepare");
        for n in 0..count + pending {
            let outcome = (n < count).then_some("answered");
            insert
                .execute(rusqlite::params![
                    format!("bulk-{n}"),
                    format!("order-bulk-{n}"),
                    format!("{}", 9_000_000_000_000_000_000u64 + n as u64),
                    outcome,
                ])
                .expect("insert");
        }
    }
    batch.commit().expect("commit");
}

// Issue 17.4/17.5: lookups are capped (past it: 429 calls_busy at once) and run on the
// admin's own read connections: a burst never holds a money call.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_lookups_is_capped_and_never_holds_a_money_call() {
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    let sidecar = Sidecar::new()
        .upstream(&ledger.url)
        .journal_at(journal.path_str())
        .start()
        .await;
    add_rows(&journal.path, 2000, 2000);
    let admin = sidecar.admin_addr;
    let mut busy_seen = false;
    let mut refunded = false;
    // Bounded: at most 10 bursts of 32 lookups from 8 loopback peers (4 connections each,
    // under the admin port's 8 per peer), one refund during the first.
    for round in 0..10 {
        let burst: Vec<_> = (0..32u8)
            .map(|n| {
                tokio::spawn(
                    Call::get("/calls?pending=true&limit=1000")
                        .from(IpAddr::from([127, 0, 0, 10 + n % 8]))
                        .send(admin),
                )
            })
            .collect();
        if round == 0 {
            let refund = Call::post(
                &format!("/v3/payments/{TX}/refund"),
                r#"{"refundAmount":10}"#,
            )
            .send(sidecar.addr)
            .await;
            assert_eq!(refund.status, 200, "{}", refund.text());
            refunded = true;
        }
        for lookup in burst {
            let reply = lookup.await.expect("lookup task");
            match reply.status {
                200 => assert_eq!(calls_of(&reply).len(), 1000),
                429 => {
                    assert_eq!(reply.error_code().as_deref(), Some("calls_busy"));
                    assert_eq!(reply.header("retry-after"), Some("1"));
                    busy_seen = true;
                }
                other => panic!("{other}: {}", reply.text()),
            }
        }
        if busy_seen && refunded {
            break;
        }
    }
    assert!(busy_seen, "32 lookups at once never met the cap of 4");
    // The refund is on record, found by its transaction among the bulk rows.
    let calls = calls_of(
        &Call::get(&format!("/calls?transactionId={TX}"))
            .send(admin)
            .await,
    );
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["operation"], "refund");
    let bad = Call::get("/calls?limit=5000").send(admin).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_code().as_deref(), Some("invalid_calls_query"));
    let scrape = sidecar.scrape().await;
    for answer in ["ok", "calls_busy", "invalid_calls_query"] {
        let series = format!(r#"linepay_sidecar_admin_calls_total{{answer="{answer}"}}"#);
        let count = crate::util::metric(&scrape, &series).unwrap_or(0.0);
        assert!(count >= 1.0, "{series} is {count}");
    }
    drop(sidecar);
    remove_journal_sidecars(&journal.path);
}

// Issue 17.6: while the journal cannot be written every money call is refused, so the
// pod is not ready; ready again once it can be. The write failure here is real: another
// process holds the journal's write lock (an operator's `sqlite3` shell left inside a
// transaction does just that), so every write of the sidecar gets SQLITE_BUSY.
#[tokio::test]
async fn readyz_fails_while_the_journal_cannot_be_written_and_recovers() {
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    let sidecar = Sidecar::new()
        .upstream(&ledger.url)
        .journal_at(journal.path_str())
        .start()
        .await;
    readyz_becomes(sidecar.admin_addr, 200, "ready").await;

    let holder = rusqlite::Connection::open(&journal.path).expect("open the journal");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let reason = readyz_becomes(
        sidecar.admin_addr,
        503,
        "not ready while the journal is locked",
    )
    .await;
    assert!(
        reason.contains("journal: cannot be written (database is locked)"),
        "{reason}"
    );
    assert!(
        !reason.contains(journal.path_str()),
        "no file path in /readyz: {reason}"
    );
    let refused = Call::post(
        &format!("/v3/payments/{TX}/refund"),
        r#"{"refundAmount":10}"#,
    )
    .send(sidecar.addr)
    .await;
    refused.assert_sidecar_error(503, "journal_unavailable");
    assert_eq!(
        ledger.count("POST", &format!("/v3/payments/{TX}/refund")),
        0
    );

    holder
        .execute_batch("ROLLBACK")
        .expect("release the write lock");
    drop(holder);
    readyz_becomes(
        sidecar.admin_addr,
        200,
        "ready again once the journal can be written",
    )
    .await;
    let refund = Call::post(
        &format!("/v3/payments/{TX}/refund"),
        r#"{"refundAmount":10}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    let scrape = sidecar.scrape().await;
    assert!(
        scrape.contains(r#"linepay_sidecar_journal_failures_total{operation="probe"}"#),
        "{scrape}"
    );
    drop(sidecar);
    remove_journal_sidecars(&journal.path);
}

// Issue 17.6: a journal emptied to 0 bytes (or deleted) that held calls would start as a
// new journal, forgetting every idempotency key and pending call: refused instead.
#[tokio::test]
async fn a_journal_that_held_calls_and_was_emptied_stops_the_start() {
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    let marker = format!("{}-held-calls", journal.path_str());
    let start = || {
        Sidecar::new()
            .upstream(&ledger.url)
            .journal_at(journal.path_str())
            .start()
    };
    let mut first = start().await;
    let refund = Call::post(
        &format!("/v3/payments/{TX}/refund"),
        r#"{"refundAmount":10}"#,
    )
    .send(first.addr)
    .await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    eventually("the marker is written beside the journal", || async {
        if std::path::Path::new(&marker).exists() {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    first.signal("TERM");
    first.wait_exit(Duration::from_secs(20)).expect("stops");
    remove_journal_sidecars_but_the_marker(&journal.path);
    std::fs::write(&journal.path, b"").expect("truncate the journal");

    let refused = start_refused(&ledger.url, journal.path_str());
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("the journal is empty (0 bytes)")
            && refused.stderr.contains("-held-calls")
            && refused.stderr.contains("restore the journal"),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::metadata(&journal.path).map(|m| m.len()).ok(),
        Some(0)
    );

    // Deleting the marker is the deliberate way to start a new journal.
    std::fs::remove_file(&marker).expect("remove the marker");
    let second = start().await;
    let calls = calls_of(&Call::get("/calls").send(second.admin_addr).await);
    assert!(calls.is_empty(), "{calls:?}");
    drop(second);
    remove_journal_sidecars(&journal.path);
}

/// Runs the sidecar on `journal` to its exit (the harness's limit panics on a start
/// that is not refused).
fn start_refused(upstream: &str, journal: &str) -> crate::util::CliOutput {
    let mut cli = Cli::new();
    for arg in [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--channel-id",
        CHANNEL_ID,
        "--upstream",
        upstream,
        "--journal-path",
        journal,
    ] {
        cli = cli.arg(arg);
    }
    cli.env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET).run()
}

// A journal moved without its -wal after a kill -9 (its calls all in the -wal, the main
// file a bare header) started as a new one, and a retried keyed refund reached LINE Pay
// a second time; the first call of a run killed within the probe's 2 s left no marker
// at all. The marker is written with the first call, and such a journal refused.
#[tokio::test]
async fn a_journal_moved_without_its_wal_stops_the_start_and_no_refund_is_sent_twice() {
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    let refund_path = format!("/v3/payments/{TX}/refund");
    let start = || {
        Sidecar::new()
            .upstream(&ledger.url)
            .journal_at(journal.path_str())
            .start()
    };
    let refund = |addr| {
        Call::post(&refund_path, r#"{"refundAmount":10}"#)
            .header("Idempotency-Key", "K3")
            .send(addr)
    };
    let mut first = start().await;
    let done = refund(first.addr).await;
    assert_eq!(done.status, 200, "{}", done.text());
    // At once (no probe waited for): the marker was written before the call was sent.
    let marker = format!("{}-held-calls", journal.path_str());
    assert!(std::path::Path::new(&marker).exists(), "no marker");
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10)).expect("killed");
    let wal = format!("{}-wal", journal.path_str());
    let kept_wal = std::fs::read(&wal).expect("the calls are in the -wal");
    remove_journal_sidecars_but_the_marker(&journal.path);
    assert!(std::fs::metadata(&journal.path).is_ok_and(|m| m.len() > 0));

    let refused = start_refused(&ledger.url, journal.path_str());
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("has no calls table")
            && refused.stderr.contains("-held-calls")
            && refused.stderr.contains("together with its -wal file")
            && refused.stderr.contains("delete that marker"),
        "{refused:?}"
    );

    // Restored with its -wal, as the refusal says: the retry is answered from the journal.
    remove_journal_sidecars_but_the_marker(&journal.path);
    std::fs::write(&wal, kept_wal).expect("restore the -wal");
    let second = start().await;
    let retry = refund(second.addr).await;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(ledger.count("POST", &refund_path), 1, "sent once");
    drop(second);
    remove_journal_sidecars(&journal.path);
}

// A journal deleted while the sidecar ran went unnoticed: /readyz stayed ready and money
// calls were journaled into the unlinked file, lost at the next start.
#[tokio::test]
async fn a_journal_deleted_while_running_fails_readiness_and_refuses_money_calls() {
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    let refund_path = format!("/v3/payments/{TX}/refund");
    let sidecar = Sidecar::new()
        .upstream(&ledger.url)
        .journal_at(journal.path_str())
        .start()
        .await;
    let refund = |amount: u32, key: &'static str| {
        Call::post(&refund_path, format!(r#"{{"refundAmount":{amount}}}"#))
            .header("Idempotency-Key", key)
            .send(sidecar.addr)
    };
    let first = refund(1, "K6").await;
    assert_eq!(first.status, 200, "{}", first.text());
    readyz_becomes(sidecar.admin_addr, 200, "ready").await;

    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(format!("{}{suffix}", journal.path_str())).expect("delete");
    }
    // At once, before the probe has seen it: nothing is written to a file that is gone.
    let refused = refund(2, "K7").await;
    refused.assert_sidecar_error(503, "journal_unavailable");
    let reason = readyz_becomes(
        sidecar.admin_addr,
        503,
        "not ready once the journal is gone",
    )
    .await;
    assert!(
        reason.contains("the journal file was removed or replaced"),
        "{reason}"
    );
    assert!(!reason.contains(journal.path_str()), "no path: {reason}");
    refund(3, "K8")
        .await
        .assert_sidecar_error(503, "journal_unavailable");
    assert_eq!(ledger.count("POST", &refund_path), 1, "only the first");
    drop(sidecar);
    remove_journal_sidecars(&journal.path);
}

fn remove_journal_sidecars_but_the_marker(journal: &std::path::Path) {
    for suffix in ["-wal", "-shm"] {
        let mut name = journal.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

/// A tmpfs mounted for one test, unmounted on drop.
struct TinyTmpfs {
    dir: std::path::PathBuf,
}

impl TinyTmpfs {
    /// `None` where mounting is not permitted (not root, no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<TinyTmpfs> {
        let dir = std::env::temp_dir().join(format!(
            "linepay-sidecar-it-tmpfs-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if mounted {
            Some(TinyTmpfs { dir })
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// The same with a full disk, where the test may mount a file system (as root): the
// journal on a 2 MiB tmpfs, filled up by the test and emptied again. Where mounting is
// not permitted it says so and checks nothing (the lock test above always runs).
#[tokio::test]
async fn readyz_fails_while_the_journals_disk_is_full_and_recovers() {
    let Some(tmpfs) = TinyTmpfs::mount("2m") else {
        eprintln!("skipped: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    let ledger = Ledger::start().await;
    ledger.paid(TX);
    let journal = tmpfs.dir.join("journal.sqlite3");
    let sidecar = Sidecar::new()
        .upstream(&ledger.url)
        .journal_at(journal.to_str().expect("UTF-8 path"))
        .start()
        .await;
    readyz_becomes(sidecar.admin_addr, 200, "ready").await;
    // Fill the file system (bounded: 2 MiB in 4 KiB writes).
    let filler = tmpfs.dir.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("filler");
        for _ in 0..1024 {
            if file
                .write_all(&[0; 4096])
                .and_then(|()| file.flush())
                .is_err()
            {
                break;
            }
        }
    }
    let reason = readyz_becomes(sidecar.admin_addr, 503, "not ready while the disk is full").await;
    assert!(
        reason.contains("journal: cannot be written (database or disk is full)"),
        "{reason}"
    );
    let refused = Call::post(
        &format!("/v3/payments/{TX}/refund"),
        r#"{"refundAmount":10}"#,
    )
    .send(sidecar.addr)
    .await;
    refused.assert_sidecar_error(503, "journal_unavailable");
    std::fs::remove_file(&filler).expect("empty the disk");
    readyz_becomes(
        sidecar.admin_addr,
        200,
        "ready again once the disk has room",
    )
    .await;
    let refund = Call::post(
        &format!("/v3/payments/{TX}/refund"),
        r#"{"refundAmount":10}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    drop(sidecar);
}
