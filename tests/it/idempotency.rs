//! An `Idempotency-Key` is bound to its call (channel, method, path and body), and its
//! stored answer is sealed to that call: through the real binary, against the ledger
//! double (tests/it/util/ledger.rs), with the journal file opened by the test itself
//! (rusqlite) where a row is tampered with or written in the old schema.

use crate::util::ledger::{Behaviour, Ledger};
use crate::util::{
    eventually, remove_journal_sidecars, Call, RunningSidecar, Sidecar, TempFile, CHANNEL_ID,
};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};
use std::time::Duration;

const TX_A: &str = "2021121600698709720";
const TX_B: &str = "2021121600698709721";

fn refund_path(tx: &str) -> String {
    format!("/v3/payments/{tx}/refund")
}

fn keyed(path: &str, body: &'static str, key: &str) -> Call {
    Call::post(path, body).header("Idempotency-Key", key)
}

async fn start(ledger: &Ledger, journal: &TempFile) -> RunningSidecar {
    Sidecar::new()
        .upstream(&ledger.url)
        .journal_at(journal.path_str())
        .start()
        .await
}

async fn stop(mut sidecar: RunningSidecar) {
    sidecar.signal("TERM");
    sidecar
        .wait_exit(Duration::from_secs(20))
        .expect("the sidecar stops on SIGTERM");
}

#[tokio::test]
async fn a_key_used_on_another_transaction_is_refused_and_never_sent() {
    let ledger = Ledger::start().await;
    ledger.paid(TX_A);
    ledger.paid(TX_B);
    let sidecar = Sidecar::new().upstream(&ledger.url).start().await;

    let first = keyed(&refund_path(TX_A), "{}", "refund-K")
        .send(sidecar.addr)
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.return_code().as_deref(), Some("0000"));

    // Same key, same body `{}`, another transaction: LINE Pay never saw B's refund, so
    // A's `0000` must not be replayed for it.
    let other = keyed(&refund_path(TX_B), "{}", "refund-K")
        .send(sidecar.addr)
        .await;
    other.assert_sidecar_error(422, "idempotency_key_reused");
    assert!(
        !other.text().contains("refundTransactionId"),
        "{}",
        other.text()
    );
    assert_eq!(ledger.count("POST", &refund_path(TX_A)), 1);
    assert_eq!(ledger.count("POST", &refund_path(TX_B)), 0);

    // The key still replays for its own call, byte for byte.
    let again = keyed(&refund_path(TX_A), "{}", "refund-K")
        .send(sidecar.addr)
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "the stored answer, byte for byte");
    assert_eq!(ledger.count("POST", &refund_path(TX_A)), 1);
    assert_eq!(
        ledger.requests().len(),
        1,
        "exactly one call reached LINE Pay"
    );
}

#[tokio::test]
async fn a_captures_key_sent_on_a_confirm_of_another_transaction_is_refused() {
    let ledger = Ledger::start().await;
    ledger.authorized(TX_A);
    let sidecar = Sidecar::new().upstream(&ledger.url).start().await;
    let body = r#"{"amount":100,"currency":"TWD"}"#;
    let capture = format!("/v3/payments/authorizations/{TX_A}/capture");
    let confirm = format!("/v3/payments/{TX_B}/confirm");

    let captured = keyed(&capture, body, "order-9").send(sidecar.addr).await;
    assert_eq!(captured.status, 200, "{}", captured.text());
    let crossed = keyed(&confirm, body, "order-9").send(sidecar.addr).await;
    crossed.assert_sidecar_error(422, "idempotency_key_reused");
    assert_eq!(ledger.count("POST", &confirm), 0, "the confirm was sent");
    // The capture's own path on the confirm's route is another call too.
    let same_tx_other_route = keyed(&format!("/v3/payments/{TX_A}/confirm"), body, "order-9")
        .send(sidecar.addr)
        .await;
    same_tx_other_route.assert_sidecar_error(422, "idempotency_key_reused");
    assert_eq!(
        ledger.requests().len(),
        1,
        "only the capture reached LINE Pay"
    );
}

#[tokio::test]
async fn an_answer_swapped_between_rows_is_not_replayed_for_the_other_call() {
    let ledger = Ledger::start().await;
    ledger.paid(TX_A);
    ledger.paid(TX_B);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    let first = start(&ledger, &journal).await;
    let succeeded = keyed(&refund_path(TX_A), "{}", "k-ok")
        .send(first.addr)
        .await;
    assert_eq!(succeeded.return_code().as_deref(), Some("0000"));
    // LINE Pay answers B's refund with a failure (the ledger's `9000`).
    ledger.behave("refund", Behaviour::StallWithoutApplying(Duration::ZERO));
    let failed = keyed(&refund_path(TX_B), "{}", "k-failed")
        .send(first.addr)
        .await;
    assert_eq!(failed.status, 200, "{}", failed.text());
    assert_eq!(failed.return_code().as_deref(), Some("9000"));
    stop(first).await;

    // Someone with write access to the file swaps the two stored answers.
    {
        let file = Connection::open(&journal.path).expect("open the journal");
        let answer = |key: &str| -> Vec<u8> {
            file.query_row(
                "SELECT answer FROM calls WHERE idempotency_key = ?1",
                [key],
                |row| row.get(0),
            )
            .expect("a stored answer")
        };
        let (ok, bad) = (answer("k-ok"), answer("k-failed"));
        assert_ne!(ok, bad);
        for (key, blob) in [("k-ok", &bad), ("k-failed", &ok)] {
            let changed = file
                .execute(
                    "UPDATE calls SET answer = ?1 WHERE idempotency_key = ?2",
                    params![blob, key],
                )
                .expect("swap");
            assert_eq!(changed, 1);
        }
    }

    let second = start(&ledger, &journal).await;
    for (path, key) in [(refund_path(TX_B), "k-failed"), (refund_path(TX_A), "k-ok")] {
        let replay = keyed(&path, "{}", key).send(second.addr).await;
        replay.assert_sidecar_error(409, "idempotency_answer_unavailable");
        assert_eq!(replay.retry_safe(), Some(false));
        assert_eq!(replay.header("idempotent-replayed"), None);
        assert!(!replay.text().contains("0000"), "{key}: {}", replay.text());
        assert!(!replay.text().contains("9000"), "{key}: {}", replay.text());
    }
    assert_eq!(ledger.count("POST", &refund_path(TX_A)), 1);
    assert_eq!(ledger.count("POST", &refund_path(TX_B)), 1);
    drop(second);
    remove_journal_sidecars(&journal.path);
}

/// The table and a keyed row exactly as the sidecar wrote them at 6867889 (before
/// `key_binding`; the answer a version-1 blob of the HMAC construction).
const OLD_SCHEMA: &str = "CREATE TABLE calls (
    id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, started_at INTEGER NOT NULL,
    route TEXT NOT NULL, method TEXT NOT NULL, operation TEXT, channel_id TEXT NOT NULL,
    order_id TEXT, transaction_id TEXT, amount TEXT, currency TEXT, refund_amount TEXT,
    idempotency_key TEXT, body_hash TEXT NOT NULL, finished_at INTEGER, outcome TEXT,
    status INTEGER, return_code TEXT, failure TEXT, client_gone INTEGER NOT NULL DEFAULT 0,
    reconciled_state TEXT, reconciled_reason TEXT, reconciled_at INTEGER, answer BLOB);";

#[tokio::test]
async fn a_key_stored_before_bindings_is_refused_clearly_never_replayed_elsewhere() {
    let ledger = Ledger::start().await;
    ledger.paid(TX_A);
    ledger.paid(TX_B);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    {
        let file = Connection::open(&journal.path).expect("create the old journal");
        file.execute_batch(OLD_SCHEMA).expect("old schema");
        let body_hash: String = Sha256::digest(b"{}")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut version_1 = vec![1u8];
        version_1.extend_from_slice(&[7u8; 16 + 4 + 40 + 32]);
        file.execute(
            "INSERT INTO calls (request_id, started_at, route, method, operation, channel_id, \
             transaction_id, idempotency_key, body_hash, finished_at, outcome, status, \
             return_code, answer) VALUES ('old-1', ?1, '/v3/payments/{transactionId}/refund', \
             'POST', 'refund', ?2, ?3, 'old-K', ?4, ?1, 'answered', 200, '0000', ?5)",
            params![
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0)),
                CHANNEL_ID,
                TX_A,
                body_hash,
                version_1
            ],
        )
        .expect("old row");
    }

    let sidecar = start(&ledger, &journal).await;
    // The same call: it was sent, its old answer cannot be read; never sent again.
    let same = keyed(&refund_path(TX_A), "{}", "old-K")
        .send(sidecar.addr)
        .await;
    same.assert_sidecar_error(409, "idempotency_answer_unavailable");
    // Another transaction with the old key: refused, not replayed, not sent.
    let other = keyed(&refund_path(TX_B), "{}", "old-K")
        .send(sidecar.addr)
        .await;
    other.assert_sidecar_error(422, "idempotency_key_reused");
    assert!(ledger.requests().is_empty(), "{:?}", ledger.requests());
    // The migrated file takes new keyed calls.
    let fresh = keyed(&refund_path(TX_B), "{}", "new-K")
        .send(sidecar.addr)
        .await;
    assert_eq!(
        fresh.return_code().as_deref(),
        Some("0000"),
        "{}",
        fresh.text()
    );
    drop(sidecar);
    let file = Connection::open(&journal.path).expect("reopen");
    let bound: Option<String> = file
        .query_row(
            "SELECT key_binding FROM calls WHERE idempotency_key = 'new-K'",
            [],
            |row| row.get(0),
        )
        .expect("the new row has a key_binding column");
    assert_eq!(bound.map(|b| b.len()), Some(64));
    drop(file);
    remove_journal_sidecars(&journal.path);
}

/// An app that hangs up while its call's intent is being written (another writer holds
/// the journal for 3 s; the app gives up after 1 s) leaves a call that was never sent:
/// it is recorded `not_sent` once the intent is written, and its key may be used again.
/// (At 779a0ab the row stayed without an outcome and every retry with the key got
/// `409 call_in_progress` until a restart.)
#[tokio::test]
async fn an_app_that_hangs_up_while_its_intent_is_written_leaves_its_key_usable() {
    let ledger = Ledger::start().await;
    ledger.paid(TX_A);
    let journal = TempFile::with_contents("journal.sqlite3", b"");
    let sidecar = start(&ledger, &journal).await;
    let path = journal.path.clone();
    let (locked, is_locked) = std::sync::mpsc::channel();
    // Within the journal's 5 s busy timeout: the intent is written once this commits.
    let holder = std::thread::spawn(move || {
        let file = Connection::open(&path).expect("open the journal");
        file.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        locked.send(()).expect("the test waits");
        std::thread::sleep(Duration::from_secs(3));
        file.execute_batch("COMMIT")
            .expect("release the write lock");
    });
    is_locked.recv().expect("the journal is locked");

    let gone = tokio::time::timeout(
        Duration::from_secs(1),
        keyed(&refund_path(TX_A), "{}", "k-gone").send(sidecar.addr),
    )
    .await;
    assert!(gone.is_err(), "answered while the journal was locked");
    tokio::task::spawn_blocking(move || holder.join().expect("the lock holder"))
        .await
        .expect("joined");

    // The key is free once the first call's `not_sent` is recorded: a retry is sent.
    let retry = eventually("a retry with the key is sent", || async {
        let reply = keyed(&refund_path(TX_A), "{}", "k-gone")
            .send(sidecar.addr)
            .await;
        match reply.status {
            200 => Ok(reply),
            _ => Err(reply.text()),
        }
    })
    .await;
    assert_eq!(
        retry.return_code().as_deref(),
        Some("0000"),
        "{}",
        retry.text()
    );
    assert_eq!(ledger.count("POST", &refund_path(TX_A)), 1);

    let calls = Call::get(&format!("/calls?transactionId={TX_A}"))
        .send(sidecar.admin_addr)
        .await;
    assert_eq!(calls.status, 200, "{}", calls.text());
    let mut outcomes: Vec<String> = calls.json()["calls"]
        .as_array()
        .expect("a list of calls")
        .iter()
        .map(|call| call["outcome"].as_str().unwrap_or("none").to_owned())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["answered", "not_sent"], "{}", calls.text());
    assert!(
        sidecar.stderr_so_far().contains("was never sent"),
        "the unsent call is logged: {}",
        sidecar.stderr_so_far()
    );
    stop(sidecar).await;
    remove_journal_sidecars(&journal.path);
}
