//! The journal file: one SQLite table of calls, written before a call is sent and after
//! its outcome is known, each write on disk (`synchronous=FULL`) before it returns.
//!
//! WAL mode: readers (the admin port's `/calls`, `linepay-sidecar calls` in another
//! process) never block the sidecar's writes and see every committed row. Blocking
//! calls: the async side runs them with `spawn_blocking`.
//!
//! Every read is one indexed lookup: a filter picks its index (transaction, order,
//! request id, or the partial index of calls without an outcome), never a scan of the
//! table; a unit test reads SQLite's query plans to hold that.
//!
//! Beside the journal, a marker file (`<journal>-held-calls`) is written with the first
//! call it records (before that call is sent), and names the highest call id the journal
//! is known to have held (rewritten at open, at each prune and by the write probe when
//! that grew). A journal found missing, empty, without its `calls` table or with fewer
//! calls than the marker names (a copy without its `-wal`, an older backup) was lost,
//! and the sidecar refuses to start on it. The highest id survives pruning in the
//! `high_water` table, never pruned: pruning may delete every finished call.
//!
//! The journal's file (device and inode) is remembered at open: when the path no longer
//! leads to it (deleted or replaced while the sidecar runs), every call written would be
//! lost at the next start, so money calls are refused and the write probe fails.

use super::orders::Batch;
use crate::money::CallFacts;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
CREATE INDEX IF NOT EXISTS calls_pending ON calls(id) WHERE outcome IS NULL;
-- transaction_id is `<channel_id> <transactionId>` (see `order_key`): a transaction id is
-- unique only within its channel. Rows written before channels were named hold the bare
-- id; they are no longer matched, and age out with max_age.
CREATE TABLE IF NOT EXISTS orders (
    transaction_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS orders_recorded ON orders(recorded_at);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    written_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS high_water (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_call_id INTEGER NOT NULL
);
";

/// The marker's name beside the journal, after SQLite's own `-wal` and `-shm`.
const MARKER_SUFFIX: &str = "-held-calls";
const MARKER_TEXT: &str = "linepay-sidecar: the call journal beside this file held calls.\n\
If that journal is missing, empty, or holds fewer calls than said below, it was lost:\n\
restore it (with its -wal file) from a backup. Delete this file only to start a new,\n\
empty journal on purpose.\n";
/// The marker's line naming the highest call id the journal held (absent in markers
/// written before it was).
const MARKER_HIGH_WATER: &str = "highest call id: ";
/// A read connection's page cache: `/calls` pages are small and indexed, so a few
/// hundred KiB per connection is plenty (SQLite's default is 2 MiB).
const READ_CACHE_KIB: i64 = 256;
/// How long the side connection (order ids, the write probe) waits for the write lock:
/// short, so that a journal someone else holds locked shows in `/readyz` quickly.
const SIDE_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
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

impl StoreError {
    fn new(path: &Path, error: rusqlite::Error) -> StoreError {
        StoreError {
            path: path.display().to_string(),
            error,
        }
    }

    /// What went wrong, without the path (for `/readyz`, which names no file).
    pub fn cause(&self) -> String {
        self.error.to_string()
    }

    /// A failure of ours, not SQLite's, told in SQLite's error type so every caller keeps
    /// one error to handle.
    pub(super) fn refused(path: &Path, message: String) -> StoreError {
        StoreError::new(
            path,
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(message),
            ),
        )
    }
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
    /// The file opened for writing (`None` for a reader).
    file: Option<FileId>,
    /// Whether the marker exists: the first intent writes it otherwise.
    marked: AtomicBool,
}

impl Store {
    /// The orderId remembered for `transaction_id` (tests of `super::orders`).
    #[cfg(test)]
    pub(crate) fn order_of(&self, transaction_id: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT order_id FROM orders WHERE transaction_id = ?1",
                [transaction_id],
                |row| row.get(0),
            )
            .optional()
        })
    }

    /// How many orderIds are remembered (tests of `super::orders`).
    #[cfg(test)]
    pub(crate) fn count_orders(&self) -> i64 {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM orders", [], |row| row.get(0)))
            .expect("the orders table reads")
    }

    /// When `key`'s orderId was recorded (tests of `super::orders`).
    #[cfg(test)]
    pub(crate) fn order_recorded_at(&self, key: &str) -> i64 {
        self.with(|c| {
            c.query_row(
                "SELECT recorded_at FROM orders WHERE transaction_id = ?1",
                [key],
                |row| row.get(0),
            )
        })
        .expect("the orders table reads")
    }

    /// Opens (creating if needed) the journal for writing. Refuses a journal that is
    /// missing or empty while its marker says it held calls.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if path.as_os_str().is_empty() {
            // SQLite would open a temporary database, lost at exit.
            return Err(StoreError::refused(
                path,
                "journal.path is not set and there is no state directory for its default \
                 (STATE_DIRECTORY, XDG_STATE_HOME or HOME): set journal.path"
                    .to_owned(),
            ));
        }
        check_not_lost(path)?;
        if let Some(warning) = std::env::current_dir()
            .ok()
            .and_then(|cwd| old_default_left_behind(path, &cwd))
        {
            tracing::warn!("{warning}");
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                create_private_dir(parent).map_err(|error| {
                    StoreError::refused(
                        path,
                        format!("cannot create {}: {error}", parent.display()),
                    )
                })?;
            }
        }
        let connection = connect(path, Duration::from_secs(5), "FULL")?;
        let file = FileId::of(path)?;
        check_holds_marked_calls(&connection, path)?;
        // FULL: each commit is fsynced before it returns, so an intent is on disk before
        // the call is sent.
        connection
            .execute_batch(SCHEMA)
            .map_err(|error| StoreError::new(path, error))?;
        add_missing_columns(&connection).map_err(|error| StoreError::new(path, error))?;
        mark_if_held(&connection, path)?;
        Ok(Store {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            file: Some(file),
            marked: AtomicBool::new(marker_path(path).exists()),
        })
    }

    /// Opens an existing journal to read it, from this process or another one, while
    /// the sidecar runs or not. Its page cache is small ([`READ_CACHE_KIB`]): the admin
    /// port keeps a few of these open.
    pub fn open_to_read(path: &Path) -> Result<Store, StoreError> {
        let error = |error| StoreError::new(path, error);
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
        connection
            .pragma_update(None, "cache_size", -READ_CACHE_KIB)
            .map_err(error)?;
        Ok(Store {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            file: None,
            marked: AtomicBool::new(true),
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

    /// Records a call before it is sent. Refused when the journal's path no longer leads
    /// to the file opened (the row would be lost at the next start). The first call
    /// also writes the marker, in the same transaction: no call is sent unmarked.
    pub(crate) fn record_intent(&self, intent: &Intent) -> Result<i64, StoreError> {
        if let Some(file) = &self.file {
            file.check(&self.path)?;
        }
        if self.marked.load(Ordering::Acquire) {
            return self.with(|c| insert_intent(c, intent));
        }
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another first call marked it while this one waited for the connection.
        if self.marked.load(Ordering::Acquire) {
            return insert_intent(&connection, intent)
                .map_err(|error| StoreError::new(&self.path, error));
        }
        let error = |error| StoreError::new(&self.path, error);
        let transaction = connection.unchecked_transaction().map_err(error)?;
        let id = insert_intent(&transaction, intent).map_err(error)?;
        // Written before the commit, so it names the calls before this one: a commit that
        // fails leaves no marker ahead of the journal. The transaction is rolled back
        // (dropped) when the marker cannot be written.
        write_marker(&self.path, id - 1)?;
        transaction.commit().map_err(error)?;
        self.marked.store(true, Ordering::Release);
        // And now this one, when it can (the write probe catches up otherwise); still
        // under the connection's lock, so no other first call writes the marker meanwhile.
        if let Err(error) = write_marker(&self.path, id) {
            tracing::warn!(%error, "the journal's marker was not brought up to date");
        }
        drop(connection);
        Ok(id)
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

    /// The calls `filter` selects, newest first, at most its limit (100 when 0).
    pub fn query(&self, filter: &Filter) -> Result<Vec<CallRow>, StoreError> {
        let (sql, values) = select(filter);
        self.with(|c| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(values), call_row)?;
            rows.collect()
        })
    }

    /// The same calls as [`Store::query`], written as `{"calls":[…]}` JSON into `out`
    /// row by row as SQLite yields them (no list of rows is held); returns the count.
    pub fn write_json(&self, filter: &Filter, out: &mut Vec<u8>) -> Result<usize, StoreError> {
        let (sql, values) = select(filter);
        self.with(|c| {
            let mut statement = c.prepare_cached(&sql)?;
            let mut rows = statement.query(rusqlite::params_from_iter(values))?;
            out.extend_from_slice(b"{\"calls\":[");
            let mut count = 0;
            while let Some(row) = rows.next()? {
                if count > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &call_row(row)?)
                    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
                count += 1;
            }
            out.extend_from_slice(b"]}");
            Ok(count)
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
        let deleted = self.with(|c| {
            // The highest id first: it outlives the rows pruned (all of them, maybe).
            if let Some(high) = journal_high_water(c)?.filter(|high| *high > 0) {
                c.execute(
                    "INSERT OR REPLACE INTO high_water (id, last_call_id) VALUES (1, ?1)",
                    [high],
                )?;
            }
            let aged = c.execute(
                "DELETE FROM calls WHERE outcome IS NOT NULL AND started_at < ?1",
                [cutoff],
            )?;
            let over = c.execute(
                "DELETE FROM calls WHERE outcome IS NOT NULL AND id NOT IN \
                 (SELECT id FROM calls ORDER BY id DESC LIMIT ?1)",
                [keep],
            )?;
            // The order ids of requested transactions age out with the calls.
            c.execute("DELETE FROM orders WHERE recorded_at < ?1", [cutoff])?;
            c.execute(
                "DELETE FROM orders WHERE transaction_id IN (SELECT transaction_id FROM orders \
                 ORDER BY recorded_at DESC LIMIT -1 OFFSET ?1)",
                [keep],
            )?;
            Ok(aged + over)
        })?;
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        mark_if_held(&connection, &self.path)?;
        Ok(deleted)
    }
}

/// The `orders` key of a transaction: its channel id, a space, its id (a channel id is
/// printable ASCII without spaces, so two channels' keys never meet).
pub(super) fn order_key(channel_id: &str, transaction_id: &str) -> String {
    // Built by hand, not `format!`: one exact allocation.
    let mut key = String::with_capacity(channel_id.len() + 1 + transaction_id.len());
    push_order_key(&mut key, channel_id, transaction_id);
    key
}

/// Appends [`order_key`]'s key to `text` (the queue of `super::orders` keeps its keys
/// in one buffer).
pub(super) fn push_order_key(text: &mut String, channel_id: &str, transaction_id: &str) {
    text.push_str(channel_id);
    text.push(' ');
    text.push_str(transaction_id);
}

/// How many rows each of [`SideWriter`]'s `orders` inserts writes: a batch is written
/// with as many of the largest as fit, then one of each smaller size its remainder
/// needs (every size below the largest is used at most once). One statement per row
/// cost SQLite a statement's set-up, step and reset per row (issue 20).
const ORDER_ROWS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// The insert of `rows` orders; `?1` is the batch's time, shared by its rows.
fn insert_orders_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR REPLACE INTO orders (transaction_id, order_id, recorded_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(?{}, ?{}, ?1)", 2 + 2 * row, 3 + 2 * row));
    }
    sql
}

/// Inserts `intent`'s row; returns its id.
fn insert_intent(c: &Connection, intent: &Intent) -> rusqlite::Result<i64> {
    // A call without an orderId of its own (an online confirm, refund, ...) gets the
    // one its transaction was requested with, when `/payments/request` was seen.
    // Its id follows the highest ever held, even when pruning deleted every call (SQLite
    // would start again from 1): the marker's check relies on ids that never go back.
    c.execute(
        "INSERT INTO calls (id, request_id, started_at, route, method, operation, channel_id, \
         order_id, transaction_id, amount, currency, refund_amount, idempotency_key, body_hash, \
         key_binding) VALUES (1 + MAX(COALESCE((SELECT MAX(id) FROM calls), 0), \
         COALESCE((SELECT last_call_id FROM high_water WHERE id = 1), 0)), ?1, ?2, ?3, ?4, ?5, ?6, \
         COALESCE(?7, (SELECT order_id FROM orders WHERE transaction_id = ?15)), \
         ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
            intent
                .facts
                .transaction_id
                .as_deref()
                .map(|transaction_id| order_key(&intent.channel_id, transaction_id)),
        ],
    )?;
    Ok(c.last_insert_rowid())
}

/// The statement and its bound values for `filter`: only the conditions asked for, so
/// that SQLite can use the index of each (`(?1 IS NULL OR col = ?1)` would defeat them).
fn select(filter: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    let mut conditions = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    for (column, value) in [
        ("transaction_id", &filter.transaction_id),
        ("order_id", &filter.order_id),
        ("request_id", &filter.request_id),
    ] {
        if let Some(value) = value {
            values.push(value.clone().into());
            conditions.push(format!("{column} = ?{}", values.len()));
        }
    }
    if filter.pending {
        // The partial index `calls_pending` holds exactly these rows.
        conditions.push("outcome IS NULL".to_owned());
    }
    let limit = if filter.limit == 0 { 100 } else { filter.limit };
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    let filter = match conditions.is_empty() {
        true => String::new(),
        false => format!(" WHERE {}", conditions.join(" AND ")),
    };
    (
        format!(
            "SELECT {COLUMNS} FROM calls{filter} ORDER BY id DESC LIMIT ?{}",
            values.len()
        ),
        values,
    )
}

/// The marker file beside `journal`.
pub fn marker_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(MARKER_SUFFIX);
    PathBuf::from(name)
}

/// Refuses a journal that is missing or 0 bytes long while its marker says it held
/// calls: it was deleted or truncated, and a new one would forget every idempotency key
/// and every call still to reconcile. (Before SQLite opens, and so creates, it.)
fn check_not_lost(path: &Path) -> Result<(), StoreError> {
    let marker = marker_path(path);
    if !marker.exists() {
        return Ok(());
    }
    let state = match std::fs::metadata(path) {
        Ok(metadata) if metadata.len() > 0 => return Ok(()),
        Ok(_) => "empty (0 bytes)",
        Err(_) => "missing",
    };
    Err(StoreError::refused(
        path,
        format!(
            "the journal is {state}, but {} says it held calls: {RESTORE}",
            marker.display()
        ),
    ))
}

/// What to do about a journal that was lost.
const RESTORE: &str = "restore the journal together with its -wal file (a copy of the \
    main file alone misses the latest calls), or delete that marker to start a new, empty \
    journal on purpose";

/// Refuses a journal, opened but not yet given its schema, that holds fewer calls than
/// its marker says it held: no `calls` table (a main file whose rows were all still in
/// its `-wal`), or a highest call id below the marker's (a copy without its `-wal`, an
/// older backup). The idempotency keys and pending calls of the missing rows would be
/// forgotten: a retried refund would be sent again.
fn check_holds_marked_calls(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let marker = marker_path(path);
    let Some(marked) = read_marker(&marker) else {
        return Ok(());
    };
    let held = journal_high_water(connection).map_err(|error| StoreError::new(path, error))?;
    let state = match (held, marked) {
        (None, _) => "has no calls table".to_owned(),
        (Some(held), Some(marked)) if held < marked => {
            format!("holds calls up to id {held} only (the marker says {marked})")
        }
        _ => return Ok(()),
    };
    Err(StoreError::refused(
        path,
        format!(
            "the journal {state}, but {} says it held calls: {RESTORE}",
            marker.display()
        ),
    ))
}

/// The highest call id the journal ever held: its newest row's, or the one pruning kept
/// in `high_water` (0 when it never held a call); `None` without a `calls` table.
fn journal_high_water(connection: &Connection) -> rusqlite::Result<Option<i64>> {
    // Cached statements: the side connection asks this at every probe, the store after
    // every prune; SQLite re-prepares a cached statement itself if the schema changed.
    let (mut calls, mut high_water) = (false, false);
    {
        let mut tables = connection.prepare_cached(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name IN ('calls', 'high_water')",
        )?;
        let mut rows = tables.query([])?;
        while let Some(row) = rows.next()? {
            match row.get_ref(0)?.as_str()? {
                "calls" => calls = true,
                "high_water" => high_water = true,
                _ => {}
            }
        }
    }
    if !calls {
        return Ok(None);
    }
    let newest: i64 = connection
        .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM calls")?
        .query_row([], |row| row.get(0))?;
    let kept: i64 = match high_water {
        true => connection
            .prepare_cached("SELECT COALESCE(MAX(last_call_id), 0) FROM high_water")?
            .query_row([], |row| row.get(0))?,
        false => 0,
    };
    Ok(Some(newest.max(kept)))
}

/// The marker at `marker`, if there is one, with the highest call id it names (`None`
/// in a marker written before it named one, or that cannot be read: it still says the
/// journal held calls).
fn read_marker(marker: &Path) -> Option<Option<i64>> {
    match std::fs::read_to_string(marker) {
        Ok(text) => Some(text.lines().find_map(|line| {
            line.strip_prefix(MARKER_HIGH_WATER)
                .and_then(|id| id.trim().parse().ok())
        })),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(None),
    }
}

/// Writes the marker beside the journal at `path`, naming `high` as the highest call id
/// it held: a whole file or none (written aside, synced, renamed over the old one).
fn write_marker(path: &Path, high: i64) -> Result<(), StoreError> {
    use std::io::Write;
    let marker = marker_path(path);
    // A file aside of this write's own: two writers (a call's intent and the write
    // probe, on two connections) never rename each other's file away.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut aside = marker.as_os_str().to_owned();
    aside.push(format!(
        ".new.{}.{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let aside = PathBuf::from(aside);
    let written = std::fs::File::create(&aside)
        .and_then(|mut file| {
            file.write_all(format!("{MARKER_TEXT}{MARKER_HIGH_WATER}{high}\n").as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&aside, &marker));
    written.map_err(|error| {
        StoreError::refused(path, format!("cannot write {}: {error}", marker.display()))
    })
}

/// The journal file's identity: the device and inode its path led to when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    fn of(path: &Path) -> Result<FileId, StoreError> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .map(|metadata| FileId {
                device: metadata.dev(),
                inode: metadata.ino(),
            })
            .map_err(|error| StoreError::refused(path, format!("cannot read it: {error}")))
    }

    /// `Ok` while `path` still leads to this file. A journal deleted or replaced while
    /// the sidecar runs takes every call written since with it at the next start.
    fn check(&self, path: &Path) -> Result<(), StoreError> {
        match FileId::of(path) {
            Ok(now) if now == *self => Ok(()),
            _ => Err(StoreError::refused(
                path,
                "the journal file was removed or replaced since the sidecar opened it: \
                 calls written now would be lost; restore it, or restart the sidecar"
                    .to_owned(),
            )),
        }
    }
}

/// The journal's default path before it moved to a state directory: a file in the
/// working directory.
const OLD_DEFAULT_PATH: &str = "linepay-sidecar-journal.sqlite3";

/// A journal at the old default path in the working directory while this one is
/// elsewhere: an upgrade that relied on that default now starts on a new journal, and
/// the old one's idempotency keys and pending calls are not seen. Said loudly at start
/// (not refused: a `journal.path` set on purpose must start).
fn old_default_left_behind(path: &Path, cwd: &Path) -> Option<String> {
    let old = cwd.join(OLD_DEFAULT_PATH);
    let held = std::fs::metadata(&old).is_ok_and(|metadata| metadata.len() > 0);
    if !held || cwd.join(path) == old {
        return None;
    }
    Some(format!(
        "{} is a journal at the old default path (the working directory), but this sidecar \
         writes {}: its idempotency keys and unreconciled calls are not seen; move that file \
         (with its -wal and -shm) to this path, or set journal.path to it",
        old.display(),
        path.display()
    ))
}

/// Writes the marker once the journal holds a call, and again when the journal's highest
/// call id passed the marker's.
fn mark_if_held(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let high = journal_high_water(connection)
        .map_err(|error| StoreError::new(path, error))?
        .unwrap_or(0);
    if high == 0 {
        return Ok(());
    }
    match read_marker(&marker_path(path)) {
        Some(Some(marked)) if marked >= high => Ok(()),
        _ => write_marker(path, high),
    }
}

/// A write connection in WAL mode with `synchronous` as given.
fn connect(path: &Path, busy: Duration, synchronous: &str) -> Result<Connection, StoreError> {
    let error = |error| StoreError::new(path, error);
    let connection = Connection::open(path).map_err(error)?;
    connection.busy_timeout(busy).map_err(error)?;
    // WAL: readers in other processes never block a write.
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(error)?;
    connection
        .pragma_update(None, "synchronous", synchronous)
        .map_err(error)?;
    Ok(connection)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The journal's second write connection, for what needs no fsync of its own: the
/// orderId each requested transaction was asked with, and the write probe behind
/// `/readyz`. `synchronous=NORMAL` in WAL mode: a commit appends to the WAL without an
/// fsync, and becomes durable with the next money call's fsynced commit (the same WAL),
/// at the latest before that call is sent.
pub(crate) struct SideWriter {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// The file this connection opened.
    file: FileId,
    /// [`insert_orders_sql`] of each of [`ORDER_ROWS`]: the statement cache's keys.
    insert_orders: [String; ORDER_ROWS.len()],
}

impl SideWriter {
    /// Opens the side connection of a journal [`Store::open`] has created.
    pub(crate) fn open(path: &Path) -> Result<SideWriter, StoreError> {
        let connection = connect(path, SIDE_BUSY_TIMEOUT, "NORMAL")?;
        Ok(SideWriter {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            file: FileId::of(path)?,
            insert_orders: ORDER_ROWS.map(insert_orders_sql),
        })
    }

    fn with<T>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        work(&connection).map_err(|error| StoreError::new(&self.path, error))
    }

    /// Remembers which orderId a transaction of channel `channel_id` was requested with.
    #[cfg(test)]
    pub(crate) fn remember_order(
        &self,
        channel_id: &str,
        transaction_id: &str,
        order_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let key = order_key(channel_id, transaction_id);
        self.with(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO orders (transaction_id, order_id, recorded_at) \
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, order_id, now_ms])
            .map(drop)
        })
    }

    /// Remembers a batch of `(key, orderId)` pairs in one transaction (`super::orders`);
    /// each key is its transaction's [`order_key`]. Pairs are inserted in order, so a
    /// key queued twice keeps its last orderId.
    pub(crate) fn remember_orders(&self, batch: &Batch, now_ms: i64) -> Result<(), StoreError> {
        self.with(|c| {
            let transaction = c.unchecked_transaction()?;
            let mut next = 0;
            for (rows, sql) in ORDER_ROWS.into_iter().zip(&self.insert_orders) {
                while batch.len() - next >= rows {
                    let mut insert = transaction.prepare_cached(sql)?;
                    insert.raw_bind_parameter(1, now_ms)?;
                    for row in 0..rows {
                        let (key, order_id) = batch.pair(next + row);
                        insert.raw_bind_parameter(2 + 2 * row, key)?;
                        insert.raw_bind_parameter(3 + 2 * row, order_id)?;
                    }
                    insert.raw_execute()?;
                    next += rows;
                }
            }
            transaction.commit()
        })
    }

    /// Writes one small row: `Ok` when the journal can be written now, and its path still
    /// leads to the file opened. Also keeps the marker up to date.
    pub(crate) fn probe(&self, now_ms: i64) -> Result<(), StoreError> {
        self.file.check(&self.path)?;
        self.with(|c| {
            c.prepare_cached("INSERT OR REPLACE INTO health (id, written_at) VALUES (1, ?1)")?
                .execute([now_ms])
                .map(drop)
        })?;
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        mark_if_held(&connection, &self.path)
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

    #[test]
    fn an_order_key_is_the_channel_id_a_space_and_the_transaction_id() {
        assert_eq!(
            order_key("1234567890", "2025010112345678901"),
            "1234567890 2025010112345678901"
        );
        assert_eq!(order_key("c", ""), "c ");
        assert_eq!(order_key("", "42"), " 42");
    }

    #[test]
    fn the_high_water_is_the_newest_call_or_the_pruned_one_whichever_is_higher() {
        let c = Connection::open_in_memory().unwrap();
        let high = |c: &Connection| journal_high_water(c).unwrap();
        c.execute_batch("CREATE TABLE other (id INTEGER)").unwrap();
        assert_eq!(high(&c), None, "no calls table: not a journal yet");
        c.execute_batch("CREATE TABLE high_water (id INTEGER PRIMARY KEY, last_call_id INTEGER)")
            .unwrap();
        c.execute_batch("INSERT INTO high_water VALUES (1, 9)")
            .unwrap();
        assert_eq!(high(&c), None, "high_water alone is not a journal");
        c.execute_batch("CREATE TABLE calls (id INTEGER PRIMARY KEY)")
            .unwrap();
        assert_eq!(high(&c), Some(9), "every call pruned: the kept id");
        c.execute_batch("INSERT INTO calls VALUES (5)").unwrap();
        assert_eq!(high(&c), Some(9));
        c.execute_batch("INSERT INTO calls VALUES (12)").unwrap();
        assert_eq!(high(&c), Some(12), "a newer call than the kept id");
        c.execute_batch("DROP TABLE high_water").unwrap();
        assert_eq!(high(&c), Some(12), "no high_water table (an older journal)");
        c.execute_batch("DELETE FROM calls").unwrap();
        assert_eq!(high(&c), Some(0), "never held a call");
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

    /// SQLite's plan for `filter`'s statement, one line per step.
    fn plan(store: &Store, filter: &Filter) -> String {
        let (sql, values) = select(filter);
        store
            .with(|c| {
                let mut statement = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
                    row.get::<_, String>(3)
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap()
            .join("\n")
    }

    #[test]
    fn every_filter_is_one_indexed_lookup_never_a_scan() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        drop(Store::open(&path).unwrap());
        // The admin port's connection: read only, opened after the writer made the schema,
        // with a small page cache (a negative cache_size is KiB, a positive one pages).
        let store = Store::open_to_read(&path).unwrap();
        let cache: i64 = store
            .with(|c| c.query_row("PRAGMA cache_size", [], |row| row.get(0)))
            .unwrap();
        assert_eq!(cache, -READ_CACHE_KIB);
        assert!(
            store.with(|c| c.execute("DELETE FROM calls", [])).is_err(),
            "read only"
        );
        let one = |f: fn(&mut Filter)| {
            let mut filter = Filter::default();
            f(&mut filter);
            plan(&store, &filter)
        };
        for (filter, index) in [
            (
                one(|f| f.transaction_id = Some("42".into())),
                "calls_transaction",
            ),
            (one(|f| f.order_id = Some("order-1".into())), "calls_order"),
            (one(|f| f.request_id = Some("r1".into())), "calls_request"),
            (one(|f| f.pending = true), "calls_pending"),
        ] {
            assert!(
                filter.contains(&format!("USING INDEX {index}"))
                    || filter.contains(&format!("USING COVERING INDEX {index}")),
                "{index}: {filter}"
            );
            assert!(
                !filter.contains("TEMP B-TREE"),
                "sorted in memory: {filter}"
            );
        }
        // Two filters still use an index; none reads the newest rows by rowid.
        let both = one(|f| {
            f.order_id = Some("order-1".into());
            f.pending = true;
        });
        assert!(both.contains("INDEX"), "{both}");
        assert_eq!(one(|_| {}), "SCAN calls");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_filter_binds_its_values_and_its_limit() {
        let (sql, values) = select(&Filter {
            order_id: Some("o' OR 1=1".into()),
            pending: true,
            limit: 7,
            ..Filter::default()
        });
        assert!(
            sql.ends_with("WHERE order_id = ?1 AND outcome IS NULL ORDER BY id DESC LIMIT ?2"),
            "{sql}"
        );
        assert_eq!(values, vec!["o' OR 1=1".to_owned().into(), 7_i64.into()]);
        let (sql, values) = select(&Filter::default());
        assert!(
            sql.ends_with("FROM calls ORDER BY id DESC LIMIT ?1"),
            "{sql}"
        );
        assert_eq!(values, vec![100_i64.into()]);
    }

    #[test]
    fn a_confirm_gets_the_order_its_transaction_was_requested_with() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let store = Store::open(&path).unwrap();
        let side = SideWriter::open(&path).unwrap();
        side.remember_order("c", "42", "order-1", 1_000).unwrap();
        store.record_intent(&intent(None)).unwrap();
        // The same transaction id under another channel is another transaction.
        let mut elsewhere = intent(None);
        elsewhere.channel_id = "d".into();
        store.record_intent(&elsewhere).unwrap();
        let mut own = intent(None);
        own.facts.order_id = Some("its own".into());
        store.record_intent(&own).unwrap();
        let mut other = intent(None);
        other.facts.transaction_id = Some("43".into());
        store.record_intent(&other).unwrap();
        let by_order = |order: &str| {
            store
                .query(&Filter {
                    order_id: Some(order.into()),
                    ..Filter::default()
                })
                .unwrap()
        };
        assert_eq!(by_order("order-1").len(), 1, "the order filled in");
        assert_eq!(by_order("its own").len(), 1, "a call's own orderId wins");
        let mut out = Vec::new();
        assert_eq!(
            store
                .write_json(
                    &Filter {
                        transaction_id: Some("43".into()),
                        ..Filter::default()
                    },
                    &mut out
                )
                .unwrap(),
            1
        );
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["calls"][0]["order_id"], serde_json::Value::Null);
        assert_eq!(json["calls"][0]["transaction_id"], "43");
        // Order ids age out with the calls.
        store.prune(10_000, Duration::from_millis(1), 100).unwrap();
        let left: i64 = store
            .with(|c| c.query_row("SELECT COUNT(*) FROM orders", [], |row| row.get(0)))
            .unwrap();
        assert_eq!(left, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_that_held_calls_and_went_missing_or_empty_is_refused() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let store = Store::open(&path).unwrap();
        assert!(!marker_path(&path).exists(), "no call yet, no marker");
        let side = SideWriter::open(&path).unwrap();
        side.probe(1).unwrap();
        assert!(!marker_path(&path).exists());
        store.record_intent(&intent(None)).unwrap();
        assert!(
            marker_path(&path).exists(),
            "the first intent marks the journal"
        );
        side.probe(2).unwrap();
        drop((store, side));
        // Reopened as it is: fine.
        drop(Store::open(&path).unwrap());
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        std::fs::write(&path, b"").unwrap();
        let refused = Store::open(&path).err().unwrap().to_string();
        assert!(
            refused.contains("empty (0 bytes)") && refused.contains("-held-calls"),
            "{refused}"
        );
        std::fs::remove_file(&path).unwrap();
        let refused = Store::open(&path).err().unwrap().to_string();
        assert!(refused.contains("missing"), "{refused}");
        assert!(!path.exists(), "nothing created in its place");
        // Deleting the marker is the way to start over on purpose.
        std::fs::remove_file(marker_path(&path)).unwrap();
        drop(Store::open(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Copies the journal's main file alone (as a move that forgot its `-wal` would) and
    /// its marker into a new directory; returns the copy's path.
    fn copy_without_wal(path: &Path) -> PathBuf {
        let dir = scratch();
        let copy = dir.join("j.sqlite3");
        std::fs::copy(path, &copy).unwrap();
        std::fs::copy(marker_path(path), marker_path(&copy)).unwrap();
        copy
    }

    #[test]
    fn the_first_intent_writes_the_marker_before_its_call_is_sent_or_is_refused() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let store = Store::open(&path).unwrap();
        assert_eq!(read_marker(&marker_path(&path)), None);
        assert_eq!(store.record_intent(&intent(None)).unwrap(), 1);
        assert_eq!(read_marker(&marker_path(&path)), Some(Some(1)));
        assert!(std::fs::read_to_string(marker_path(&path))
            .unwrap()
            .contains("with its -wal file"));
        // No marker can be written: the intent is refused and leaves no row.
        let other = dir.join("k.sqlite3");
        let store = Store::open(&other).unwrap();
        // A directory (not empty) where the marker goes: it cannot be renamed over.
        std::fs::create_dir(marker_path(&other)).unwrap();
        std::fs::write(marker_path(&other).join("x"), b"").unwrap();
        let refused = store
            .record_intent(&intent(None))
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("cannot write"), "{refused}");
        assert!(store.query(&Filter::default()).unwrap().is_empty());
        assert!(marker_path(&other).is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Concurrent first calls of a fresh journal: every intent is written (each marker
    /// write has a file aside of its own, and a call that waited for the first one's
    /// transaction finds the journal marked).
    #[test]
    fn concurrent_first_intents_are_all_written() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let store = std::sync::Arc::new(Store::open(&path).unwrap());
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || store.record_intent(&intent(None)))
            })
            .collect();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
        assert_eq!(store.query(&Filter::default()).unwrap().len(), 16);
        assert!(read_marker(&marker_path(&path)).unwrap().unwrap() >= 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_without_its_wal_is_refused() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        // A first run killed after its first call: the main file has no calls table.
        let store = Store::open(&path).unwrap();
        store.record_intent(&intent(Some("k"))).unwrap();
        let copy = copy_without_wal(&path);
        let refused = Store::open(&copy).err().unwrap().to_string();
        assert!(
            refused.contains("has no calls table")
                && refused.contains("-held-calls")
                && refused.contains("together with its -wal file")
                && refused.contains("delete that marker"),
            "{refused}"
        );
        // Calls 1 and 2 in the main file (a clean stop checkpoints), call 3 in the -wal.
        store.record_intent(&intent(None)).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(read_marker(&marker_path(&path)), Some(Some(2)), "at open");
        assert_eq!(store.record_intent(&intent(None)).unwrap(), 3);
        // The marker exists: the write probe (every 2 s) brings it up to date.
        assert_eq!(read_marker(&marker_path(&path)), Some(Some(2)));
        SideWriter::open(&path).unwrap().probe(1).unwrap();
        assert_eq!(read_marker(&marker_path(&path)), Some(Some(3)));
        let copy = copy_without_wal(&path);
        let refused = Store::open(&copy).err().unwrap().to_string();
        assert!(
            refused.contains("holds calls up to id 2 only (the marker says 3)"),
            "{refused}"
        );
        // Deleting the marker starts on that journal on purpose; the journal itself,
        // with its -wal, opens.
        std::fs::remove_file(marker_path(&copy)).unwrap();
        drop(Store::open(&copy).unwrap());
        drop(store);
        drop(Store::open(&path).unwrap());
        // A marker written before it named an id still asks for a calls table.
        let copy = copy_without_wal(&path);
        std::fs::write(marker_path(&copy), MARKER_TEXT).unwrap();
        drop(Store::open(&copy).unwrap());
        assert_eq!(read_marker(&marker_path(&copy)), Some(Some(3)), "rewritten");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pruning_every_call_is_no_loss_and_ids_never_go_back() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let store = Store::open(&path).unwrap();
        for _ in 0..2 {
            let id = store.record_intent(&intent(None)).unwrap();
            store
                .record_outcome(
                    id,
                    &Outcome {
                        finished_at: 2_000,
                        outcome: "answered",
                        ..Outcome::default()
                    },
                )
                .unwrap();
        }
        assert_eq!(store.prune(10_000, Duration::from_millis(1), 0).unwrap(), 2);
        assert!(store.query(&Filter::default()).unwrap().is_empty());
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.record_intent(&intent(None)).unwrap(), 3);
        drop(store);
        drop(Store::open(&path).unwrap());
        assert_eq!(read_marker(&marker_path(&path)), Some(Some(3)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_removed_or_replaced_while_open_is_neither_probed_nor_written() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let store = Store::open(&path).unwrap();
        let side = SideWriter::open(&path).unwrap();
        store.record_intent(&intent(None)).unwrap();
        side.probe(1).unwrap();
        for replaced in [false, true] {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            if replaced {
                drop(Store::open_to_read(&path).err());
                std::fs::write(&path, b"SQLite format 3\0").unwrap();
            }
            let gone = side.probe(2).err().unwrap().cause();
            assert!(
                gone.contains("the journal file was removed or replaced"),
                "{gone}"
            );
            assert!(!gone.contains("j.sqlite3"), "no path: {gone}");
            let refused = store.record_intent(&intent(None)).err().unwrap().cause();
            assert_eq!(refused, gone);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_left_at_the_old_default_path_is_never_silently_replaced() {
        let cwd = scratch();
        let elsewhere = cwd.join("state/journal.sqlite3");
        assert!(
            old_default_left_behind(&elsewhere, &cwd).is_none(),
            "nothing there"
        );
        std::fs::write(cwd.join(OLD_DEFAULT_PATH), b"").unwrap();
        assert!(
            old_default_left_behind(&elsewhere, &cwd).is_none(),
            "0 bytes: no journal"
        );
        std::fs::write(cwd.join(OLD_DEFAULT_PATH), b"SQLite format 3\0").unwrap();
        let warning = old_default_left_behind(&elsewhere, &cwd).unwrap();
        assert!(
            warning.contains("old default path") && warning.contains("set journal.path"),
            "{warning}"
        );
        // Named on purpose, relative or absolute: fine.
        assert!(old_default_left_behind(Path::new(OLD_DEFAULT_PATH), &cwd).is_none());
        assert!(old_default_left_behind(&cwd.join(OLD_DEFAULT_PATH), &cwd).is_none());
        std::fs::remove_dir_all(&cwd).unwrap();
    }

    #[test]
    fn an_unset_path_is_refused_rather_than_a_temporary_database() {
        let refused = Store::open(Path::new("")).err().unwrap().to_string();
        assert!(refused.contains("set journal.path"), "{refused}");
    }

    #[test]
    fn a_journal_at_start_with_calls_is_marked_and_its_directory_made() {
        let dir = scratch();
        let path = dir.join("state/linepay-sidecar/j.sqlite3");
        let store = Store::open(&path).unwrap();
        store.record_intent(&intent(None)).unwrap();
        drop(store);
        drop(Store::open(&path).unwrap());
        assert!(marker_path(&path).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_probe_fails_while_another_connection_holds_the_write_lock() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        drop(Store::open(&path).unwrap());
        let side = SideWriter::open(&path).unwrap();
        side.probe(1).unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let busy = side.probe(2).err().unwrap();
        assert!(busy.cause().contains("locked"), "{busy}");
        holder.execute_batch("ROLLBACK").unwrap();
        side.probe(3).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_pages_separate_their_rows_and_order_ids_are_pruned_by_count() {
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let store = Store::open(&path).unwrap();
        for _ in 0..3 {
            store.record_intent(&intent(None)).unwrap();
        }
        let mut out = Vec::new();
        let all = Filter::default();
        assert_eq!(store.write_json(&all, &mut out).unwrap(), 3);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let ids: Vec<i64> = json["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [3, 2, 1], "newest first");
        let mut empty = Vec::new();
        let none = Filter {
            request_id: Some("nobody".into()),
            ..Filter::default()
        };
        assert_eq!(store.write_json(&none, &mut empty).unwrap(), 0);
        assert_eq!(empty, b"{\"calls\":[]}");
        let side = SideWriter::open(&path).unwrap();
        for (n, tx) in ["1", "2", "3"].iter().enumerate() {
            side.remember_order("c", tx, "o", 5_000 + i64::try_from(n).unwrap())
                .unwrap();
        }
        store.prune(5_000, Duration::from_secs(1), 2).unwrap();
        let kept: Vec<String> = store
            .with(|c| {
                let mut statement =
                    c.prepare("SELECT transaction_id FROM orders ORDER BY transaction_id")?;
                let rows = statement.query_map([], |row| row.get(0))?;
                rows.collect()
            })
            .unwrap();
        assert_eq!(kept, ["c 2", "c 3"], "the newest max_calls order ids stay");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A worker's runtime ends (the drain) with its batch's write scheduled and never
    /// started: the stop's settle writes those pairs.
    #[tokio::test]
    async fn the_stop_writes_the_orders_whose_batch_never_ran() {
        use crate::journal::Desk;
        use crate::metrics::Metrics;
        let dir = scratch();
        let mut settings = Desk::disabled().settings.clone();
        settings.enabled = true;
        settings.path = dir.join("j.sqlite3");
        settings.max_calls = 100;
        settings.max_age = Duration::from_secs(3600);
        let desk = std::sync::Arc::new(
            Desk::open(&settings, &crate::route::Allowlist::new(Vec::new())).unwrap(),
        );
        let metrics = std::sync::Arc::new(Metrics::new());
        let (worker_desk, worker_metrics) = (desk.clone(), metrics.clone());
        std::thread::spawn(move || {
            let worker = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            worker.block_on(async {
                for n in 0..5 {
                    worker_desk
                        .remember_order("c", &n.to_string(), &format!("order-{n}"), &worker_metrics)
                        .await;
                }
            });
            // Dropped before the batch's delay: its scheduled write is cancelled.
            drop(worker);
        })
        .join()
        .unwrap();
        let store = desk.store().unwrap();
        assert_eq!(store.order_of("c 0").unwrap(), None, "not written yet");
        assert!(desk.settle(Duration::from_secs(5)).await);
        for n in 0..5 {
            assert_eq!(
                store.order_of(&format!("c {n}")).unwrap(),
                Some(format!("order-{n}"))
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_desk_records_orders_and_probes_writes_and_counts_failures() {
        use crate::journal::Desk;
        use crate::metrics::Metrics;
        let dir = scratch();
        let path = dir.join("j.sqlite3");
        let mut settings = Desk::disabled().settings.clone();
        assert_eq!(Desk::disabled().probe_journal().await, None, "journal off");
        settings.enabled = true;
        settings.path = path.clone();
        settings.max_calls = 100;
        settings.max_age = Duration::from_secs(3600);
        let desk = Desk::open(&settings, &crate::route::Allowlist::new(Vec::new())).unwrap();
        let metrics = std::sync::Arc::new(Metrics::new());
        assert_eq!(desk.probe_journal().await, Some(Ok(())));
        desk.remember_order("c", "42", "order-1", &metrics).await;
        // Queued; written before any intent (what `Desk::admit` does first).
        desk.flush_orders(&metrics).await;
        let store = desk.store().unwrap();
        store.record_intent(&intent(None)).unwrap();
        let rows = store
            .query(&Filter {
                order_id: Some("order-1".into()),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(rows.len(), 1);

        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let refused = desk.probe_journal().await.unwrap().unwrap_err();
        assert!(
            refused.starts_with("cannot be written (") && refused.contains("locked"),
            "{refused}"
        );
        assert!(!refused.contains("j.sqlite3"), "no path: {refused}");
        desk.remember_order("c", "43", "order-2", &metrics).await;
        desk.flush_orders(&metrics).await;
        assert!(
            metrics
                .render()
                .contains("linepay_sidecar_journal_failures_total{operation=\"order\"} 1"),
            "{}",
            metrics.render()
        );
        holder.execute_batch("ROLLBACK").unwrap();
        assert_eq!(desk.probe_journal().await, Some(Ok(())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
