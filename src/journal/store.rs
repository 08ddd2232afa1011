//! The journal file: one SQLite table of calls, written before a call is sent and after
//! its outcome is known, each write on disk (`synchronous=FULL`) before it returns.
//!
//! WAL mode: readers (the admin port's `/calls`, `linepay-sidecar calls` in another
//! process) never block the sidecar's writes and see every committed row. Blocking
//! calls: the async side runs them with `spawn_blocking`.

use crate::money::CallFacts;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    operation TEXT,
    channel_id TEXT NOT NULL,
    order_id TEXT,
    transaction_id TEXT,
    amount TEXT,
    currency TEXT,
    refund_amount TEXT,
    idempotency_key TEXT,
    body_hash TEXT NOT NULL,
    finished_at INTEGER,
    outcome TEXT,
    status INTEGER,
    return_code TEXT,
    failure TEXT,
    client_gone INTEGER NOT NULL DEFAULT 0,
    reconciled_state TEXT,
    reconciled_reason TEXT,
    reconciled_at INTEGER,
    answer BLOB,
    key_binding TEXT
);
CREATE INDEX IF NOT EXISTS calls_transaction ON calls(transaction_id);
CREATE INDEX IF NOT EXISTS calls_order ON calls(order_id);
CREATE INDEX IF NOT EXISTS calls_request ON calls(request_id);
CREATE INDEX IF NOT EXISTS calls_key ON calls(channel_id, idempotency_key);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
";

/// Columns added since the first schema, each with its type: a journal file written by
/// an older sidecar gets them (`ALTER TABLE … ADD COLUMN`, NULL in its rows) when it is
/// opened for writing. `key_binding`: what a row's idempotency key is bound to
/// (`super::binding`); NULL in rows stored before it was.
const ADDED_COLUMNS: [(&str, &str); 1] = [("key_binding", "TEXT")];

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {error}")]
pub struct StoreError {
    path: String,
    error: rusqlite::Error,
}

/// A call about to be sent.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub(crate) request_id: String,
    pub(crate) started_at: i64,
    pub(crate) route: String,
    pub(crate) method: String,
    pub(crate) operation: Option<&'static str>,
    pub(crate) channel_id: String,
    pub(crate) facts: CallFacts,
    pub(crate) idempotency_key: Option<String>,
    /// [`super::binding::KeyUse::digest`], for a keyed call.
    pub(crate) key_binding: Option<String>,
}

/// How a call ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub(crate) finished_at: i64,
    /// `answered` (LINE Pay answered), `uncertain` (sent, no certain answer),
    /// `not_sent`, `interrupted` (the process stopped during the call).
    pub(crate) outcome: &'static str,
    pub(crate) status: Option<u16>,
    pub(crate) return_code: Option<String>,
    pub(crate) failure: Option<&'static str>,
    pub(crate) client_gone: bool,
    pub(crate) reconciled: Option<(&'static str, String)>,
    pub(crate) answer: Option<Vec<u8>>,
}

/// One row as read back (never the sealed answer).
#[derive(Debug, Clone, Serialize)]
pub struct CallRow {
    pub id: i64,
    pub request_id: String,
    pub started_at: i64,
    pub route: String,
    pub method: String,
    pub operation: Option<String>,
    pub channel_id: String,
    #[serde(flatten)]
    pub facts: CallFacts,
    pub idempotency_key: Option<String>,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
    pub status: Option<u16>,
    pub return_code: Option<String>,
    pub failure: Option<String>,
    pub client_gone: bool,
    pub reconciled_state: Option<String>,
    pub reconciled_reason: Option<String>,
    pub reconciled_at: Option<i64>,
}

/// The latest call with one idempotency key.
#[derive(Debug, Clone)]
pub(crate) struct KeyedCall {
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) facts: CallFacts,
    /// NULL in rows stored before bindings were.
    pub(crate) key_binding: Option<String>,
    pub(crate) outcome: Option<String>,
    pub(crate) status: Option<u16>,
    pub(crate) reconciled_state: Option<String>,
    pub(crate) answer: Option<Vec<u8>>,
}

/// Which calls to read back.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub transaction_id: Option<String>,
    pub order_id: Option<String>,
    pub request_id: Option<String>,
    /// Only calls without an outcome yet.
    pub pending: bool,
    pub limit: usize,
}

const COLUMNS: &str =
    "id, request_id, started_at, route, method, operation, channel_id, order_id, \
    transaction_id, amount, currency, refund_amount, idempotency_key, body_hash, finished_at, \
    outcome, status, return_code, failure, client_gone, reconciled_state, reconciled_reason, \
    reconciled_at";

pub struct Store {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the journal for writing.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let error = |error| StoreError {
            path: path.display().to_string(),
            error,
        };
        let connection = Connection::open(path).map_err(error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(error)?;
        // WAL: readers in other processes never block a write; FULL: each commit is
        // fsynced before it returns, so an intent is on disk before the call is sent.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(error)?;
        connection.execute_batch(SCHEMA).map_err(error)?;
        add_missing_columns(&connection).map_err(error)?;
        Ok(Store {
            path: path.to_owned(),
            connection: Mutex::new(connection),
        })
    }

    /// Opens an existing journal to read it, from this process or another one, while
    /// the sidecar runs or not.
    pub fn open_to_read(path: &Path) -> Result<Store, StoreError> {
        let error = |error| StoreError {
            path: path.display().to_string(),
            error,
        };
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(error)?;
        connection
            .pragma_update(None, "query_only", true)
            .map_err(error)?;
        Ok(Store {
            path: path.to_owned(),
            connection: Mutex::new(connection),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        work(&connection).map_err(|error| StoreError {
            path: self.path.display().to_string(),
            error,
        })
    }

    pub(crate) fn record_intent(&self, intent: &Intent) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO calls (request_id, started_at, route, method, operation, channel_id, \
                 order_id, transaction_id, amount, currency, refund_amount, idempotency_key, body_hash, \
                 key_binding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    intent.request_id,
                    intent.started_at,
                    intent.route,
                    intent.method,
                    intent.operation,
                    intent.channel_id,
                    intent.facts.order_id,
                    intent.facts.transaction_id,
                    intent.facts.amount,
                    intent.facts.currency,
                    intent.facts.refund_amount,
                    intent.idempotency_key,
                    intent.facts.body_hash,
                    intent.key_binding,
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub(crate) fn record_outcome(&self, id: i64, outcome: &Outcome) -> Result<(), StoreError> {
        let (state, reason) = match &outcome.reconciled {
            Some((state, reason)) => (Some(*state), Some(reason.as_str())),
            None => (None, None),
        };
        self.with(|c| {
            c.execute(
                "UPDATE calls SET finished_at = ?2, outcome = ?3, status = ?4, return_code = ?5, \
                 failure = ?6, client_gone = ?7, reconciled_state = ?8, reconciled_reason = ?9, \
                 reconciled_at = CASE WHEN ?8 IS NULL THEN NULL ELSE ?2 END, answer = ?10 WHERE id = ?1",
                params![
                    id,
                    outcome.finished_at,
                    outcome.outcome,
                    outcome.status,
                    outcome.return_code,
                    outcome.failure,
                    outcome.client_gone,
                    state,
                    reason,
                    outcome.answer,
                ],
            )
            .map(drop)
        })
    }

    /// Marks that the app hung up before it got the answer (the outcome is recorded
    /// before the app is answered, so this comes after).
    pub(crate) fn record_client_gone(&self, id: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("UPDATE calls SET client_gone = 1 WHERE id = ?1", [id])
                .map(drop)
        })
    }

    pub(crate) fn find_key(
        &self,
        channel_id: &str,
        key: &str,
    ) -> Result<Option<KeyedCall>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT method, route, order_id, transaction_id, amount, currency, refund_amount, \
                 body_hash, key_binding, outcome, status, reconciled_state, answer FROM calls \
                 WHERE channel_id = ?1 AND idempotency_key = ?2 ORDER BY id DESC LIMIT 1",
                params![channel_id, key],
                |row| {
                    Ok(KeyedCall {
                        method: row.get(0)?,
                        route: row.get(1)?,
                        facts: CallFacts {
                            order_id: row.get(2)?,
                            transaction_id: row.get(3)?,
                            amount: row.get(4)?,
                            currency: row.get(5)?,
                            refund_amount: row.get(6)?,
                            body_hash: row.get(7)?,
                        },
                        key_binding: row.get(8)?,
                        outcome: row.get(9)?,
                        status: row.get(10)?,
                        reconciled_state: row.get(11)?,
                        answer: row.get(12)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn query(&self, filter: &Filter) -> Result<Vec<CallRow>, StoreError> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {COLUMNS} FROM calls WHERE (?1 IS NULL OR transaction_id = ?1) \
                 AND (?2 IS NULL OR order_id = ?2) AND (?3 IS NULL OR request_id = ?3) \
                 AND (?4 = 0 OR outcome IS NULL) ORDER BY id DESC LIMIT ?5"
            ))?;
            let rows = statement.query_map(
                params![
                    filter.transaction_id,
                    filter.order_id,
                    filter.request_id,
                    filter.pending,
                    limit
                ],
                call_row,
            )?;
            rows.collect()
        })
    }

    /// Deletes finished calls older than `max_age` and, past `max_calls`, the oldest
    /// finished ones. Calls without an outcome are kept until they are reconciled.
    pub(crate) fn prune(
        &self,
        now_ms: i64,
        max_age: Duration,
        max_calls: usize,
    ) -> Result<usize, StoreError> {
        let cutoff = now_ms.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        let keep = i64::try_from(max_calls).unwrap_or(i64::MAX);
        self.with(|c| {
            let aged = c.execute(
                "DELETE FROM calls WHERE outcome IS NOT NULL AND started_at < ?1",
                [cutoff],
            )?;
            let over = c.execute(
                "DELETE FROM calls WHERE outcome IS NOT NULL AND id NOT IN \
                 (SELECT id FROM calls ORDER BY id DESC LIMIT ?1)",
                [keep],
            )?;
            Ok(aged + over)
        })
    }
}

fn call_row(row: &Row<'_>) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        id: row.get(0)?,
        request_id: row.get(1)?,
        started_at: row.get(2)?,
        route: row.get(3)?,
        method: row.get(4)?,
        operation: row.get(5)?,
        channel_id: row.get(6)?,
        facts: CallFacts {
            order_id: row.get(7)?,
            transaction_id: row.get(8)?,
            amount: row.get(9)?,
            currency: row.get(10)?,
            refund_amount: row.get(11)?,
            body_hash: row.get(13)?,
        },
        idempotency_key: row.get(12)?,
        finished_at: row.get(14)?,
        outcome: row.get(15)?,
        status: row.get(16)?,
        return_code: row.get(17)?,
        failure: row.get(18)?,
        client_gone: row.get(19)?,
        reconciled_state: row.get(20)?,
        reconciled_reason: row.get(21)?,
        reconciled_at: row.get(22)?,
    })
}

/// Adds the [`ADDED_COLUMNS`] an older journal file lacks.
fn add_missing_columns(connection: &Connection) -> rusqlite::Result<()> {
    let present: Vec<String> = connection
        .prepare("SELECT name FROM pragma_table_info('calls')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, kind) in ADDED_COLUMNS {
        if !present.iter().any(|column| column == name) {
            connection.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn intent(key: Option<&str>) -> Intent {
        Intent {
            request_id: "r1".into(),
            started_at: 1_000,
            route: "/v3/payments/{transactionId}/refund".into(),
            method: "POST".into(),
            operation: Some("refund"),
            channel_id: "c".into(),
            facts: CallFacts {
                order_id: None,
                transaction_id: Some("42".into()),
                amount: None,
                currency: None,
                refund_amount: Some("10".into()),
                body_hash: "h".into(),
            },
            idempotency_key: key.map(str::to_owned),
            key_binding: key.map(|k| format!("binding of {k}")),
        }
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("journal-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The table as the sidecar created it before `key_binding` (6867889).
    const FIRST_SCHEMA: &str = "CREATE TABLE calls (
        id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, started_at INTEGER NOT NULL,
        route TEXT NOT NULL, method TEXT NOT NULL, operation TEXT, channel_id TEXT NOT NULL,
        order_id TEXT, transaction_id TEXT, amount TEXT, currency TEXT, refund_amount TEXT,
        idempotency_key TEXT, body_hash TEXT NOT NULL, finished_at INTEGER, outcome TEXT,
        status INTEGER, return_code TEXT, failure TEXT, client_gone INTEGER NOT NULL DEFAULT 0,
        reconciled_state TEXT, reconciled_reason TEXT, reconciled_at INTEGER, answer BLOB);";

    #[test]
    fn a_journal_of_the_first_schema_gains_key_binding_and_keeps_its_rows() {
        let dir = scratch();
        let path = dir.join("old.sqlite3");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(FIRST_SCHEMA).unwrap();
            old.execute(
                "INSERT INTO calls (request_id, started_at, route, method, channel_id, \
                 transaction_id, refund_amount, idempotency_key, body_hash, outcome, status, answer) \
                 VALUES ('r0', 1, '/v3/payments/{transactionId}/refund', 'POST', 'c', '42', '10', \
                 'old-key', 'h', 'answered', 200, x'01')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.find_key("c", "old-key").unwrap().unwrap();
        assert_eq!(old.key_binding, None);
        assert_eq!(old.method, "POST");
        assert_eq!(old.route, "/v3/payments/{transactionId}/refund");
        assert_eq!(old.facts.transaction_id.as_deref(), Some("42"));
        assert_eq!(old.facts.refund_amount.as_deref(), Some("10"));
        assert_eq!(old.facts.body_hash, "h");
        assert_eq!(old.answer.as_deref(), Some(&[1u8][..]));
        // New rows carry their binding in the migrated file.
        store.record_intent(&intent(Some("k"))).unwrap();
        let new = store.find_key("c", "k").unwrap().unwrap();
        assert_eq!(new.key_binding.as_deref(), Some("binding of k"));
        assert_eq!(store.query(&Filter::default()).unwrap().len(), 2);
        drop(store);
        // Opening it again finds nothing more to add.
        let again = Store::open(&path).unwrap();
        assert_eq!(again.query(&Filter::default()).unwrap().len(), 2);
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_intent_then_its_outcome_read_back_and_pruned() {
        let dir = scratch();
        let store = Store::open(&dir.join("j.sqlite3")).unwrap();
        let id = store.record_intent(&intent(Some("k"))).unwrap();
        let pending = Filter {
            pending: true,
            ..Filter::default()
        };
        assert_eq!(store.query(&pending).unwrap().len(), 1);
        store
            .record_outcome(
                id,
                &Outcome {
                    finished_at: 2_000,
                    outcome: "answered",
                    status: Some(200),
                    return_code: Some("0000".into()),
                    ..Outcome::default()
                },
            )
            .unwrap();
        assert!(store.query(&pending).unwrap().is_empty());
        let by_tx = Filter {
            transaction_id: Some("42".into()),
            ..Filter::default()
        };
        let rows = store.query(&by_tx).unwrap();
        assert_eq!(rows[0].return_code.as_deref(), Some("0000"));
        // The facts are flattened into the row's JSON (`/calls`, `calls`), as before.
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["transaction_id"], "42");
        assert_eq!(json["refund_amount"], "10");
        assert_eq!(json["body_hash"], "h");
        assert_eq!(json["idempotency_key"], "k");
        assert!(json.get("facts").is_none(), "{json}");
        // The binding stays in the file: /calls does not print it.
        assert!(json.get("key_binding").is_none(), "{json}");
        assert_eq!(store.find_key("c", "k").unwrap().unwrap().status, Some(200));
        assert!(store.find_key("other channel", "k").unwrap().is_none());
        // A pending call survives any pruning; a finished one ages out.
        store.record_intent(&intent(None)).unwrap();
        assert_eq!(
            store.prune(10_000, Duration::from_millis(1), 100).unwrap(),
            1
        );
        assert_eq!(store.query(&Filter::default()).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
