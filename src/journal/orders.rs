//! The orderId each requested transaction was asked with, written to the journal's
//! `orders` table in batches rather than one SQLite write per call (issue 20).
//!
//! Before, every successful `POST …/payments/request` handed one `INSERT` to a blocking
//! thread (`spawn_blocking`) and waited for it before answering: a cross-thread hand-off
//! per call (two thread wake-ups, the futex calls `strace -c -f` counted), plus SQLite's
//! own locking and WAL write per call, on the busiest route of a payment flow.
//!
//! Now a call only queues its pair (a `Vec` push under a mutex held for nanoseconds); the
//! first pair of a batch schedules one write [`BATCH_DELAY`] later, which writes every pair
//! queued by then in one transaction on the journal's side connection. What reads the
//! table is the insert of a money call's intent (an online confirm or refund names no
//! order: its row takes the one its transaction was requested with), so before each
//! intent is written the queue is flushed ([`Orders::flush`]): the row finds its orderId
//! exactly as before. At a stop the queue is flushed after the calls have drained
//! (`Desk::settle`).
//!
//! What changed: a pair reaches the journal's WAL up to [`BATCH_DELAY`] after the answer
//! rather than before it. The table was never fsynced on its own (`synchronous=NORMAL`,
//! durable with the next money call's commit, see `SideWriter`); a process killed
//! (SIGKILL, OOM) within those milliseconds now also loses the pairs of that batch, and
//! a later confirm of such a transaction is journaled without its orderId (still with
//! its transactionId). Money calls themselves are untouched: intent on disk before
//! sending, outcome before answering.

use super::store::{now_ms, push_order_key, SideWriter, StoreError};
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// How long the first pair of a batch waits for others before the batch is written.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(10);

/// The queue of `(transactionId, orderId)` pairs not written yet.
pub(crate) struct Orders {
    side: Arc<SideWriter>,
    queue: Mutex<Queue>,
    /// The batch taken from the queue and being written. Held while a batch is taken
    /// and written, so that a flush waits for a batch already being written: after
    /// [`Orders::flush`] every pair queued before it is in the table. Its buffers are
    /// swapped with the queue's, batch after batch: once both have grown to a batch's
    /// size, queuing a pair allocates nothing.
    writing: Mutex<Batch>,
    /// Pairs queued and not yet committed (a flush with nothing to write costs nothing).
    unwritten: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    batch: Batch,
    /// A write is scheduled and has not taken the queue yet.
    scheduled: bool,
}

/// The most text a batch's buffer keeps between batches (a batch of 10 ms at 20,000
/// requested payments a second is ~200 pairs of ~60 bytes).
const KEPT_TEXT_BYTES: usize = 64 * 1024;

/// `(key, orderId)` pairs, their text back to back in one buffer: two allocations per
/// pair (the key, the orderId) were two of the few left on a requested payment.
#[derive(Default)]
pub(crate) struct Batch {
    text: String,
    /// Per pair, where its key ends and where its orderId ends in `text`.
    ends: Vec<(usize, usize)>,
}

impl Batch {
    /// Adds the pair of a transaction of channel `channel_id`, keyed as
    /// [`super::store::order_key`] keys it.
    fn push(&mut self, channel_id: &str, transaction_id: &str, order_id: &str) {
        push_order_key(&mut self.text, channel_id, transaction_id);
        let key_end = self.text.len();
        self.text.push_str(order_id);
        self.ends.push((key_end, self.text.len()));
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key and orderId of the `index`th pair.
    pub(crate) fn pair(&self, index: usize) -> (&str, &str) {
        let start = match index.checked_sub(1) {
            Some(before) => self.ends[before].1,
            None => 0,
        };
        let (key_end, end) = self.ends[index];
        (&self.text[start..key_end], &self.text[key_end..end])
    }

    /// Empties it, keeping its buffers unless a burst (or a long SQLite stall) grew them
    /// past what a usual batch needs: a process beside every app pod gives that back.
    fn clear(&mut self) {
        if self.text.capacity() > KEPT_TEXT_BYTES {
            *self = Batch::default();
            return;
        }
        self.text.clear();
        self.ends.clear();
    }
}

impl Orders {
    pub(crate) fn new(side: Arc<SideWriter>) -> Orders {
        Orders {
            side,
            queue: Mutex::default(),
            writing: Mutex::default(),
            unwritten: AtomicUsize::new(0),
        }
    }

    /// Queues the pair of a transaction of channel `channel_id`; the first of a batch
    /// schedules its write (a task of `tasks`, on the current runtime) [`BATCH_DELAY`]
    /// from now.
    pub(crate) fn remember(
        self: &Arc<Self>,
        channel_id: &str,
        transaction_id: &str,
        order_id: &str,
        tasks: &TaskTracker,
        metrics: &Arc<Metrics>,
    ) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        let schedule = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.batch.push(channel_id, transaction_id, order_id);
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if schedule {
            let (orders, metrics) = (self.clone(), metrics.clone());
            tasks.spawn(async move {
                tokio::time::sleep(BATCH_DELAY).await;
                // Not awaited: nothing here needs the result (the write logs and counts
                // its own failure), and awaiting it woke this worker's runtime again
                // for every batch. A flush, and the one at a stop, wait for this write
                // through `writing`; one never started (the runtime shutting down)
                // leaves its pairs queued for them.
                drop(tokio::task::spawn_blocking(move || {
                    orders.write_logged(&metrics);
                }));
            });
        }
    }

    /// Writes every pair queued so far, waiting for a batch being written; nothing to do
    /// (no thread involved) when every pair is already written.
    pub(crate) async fn flush(self: &Arc<Self>, metrics: &Metrics) {
        if self.unwritten.load(Ordering::Acquire) == 0 {
            return;
        }
        let orders = self.clone();
        settle(
            tokio::task::spawn_blocking(move || orders.write_queued()).await,
            metrics,
        );
    }

    /// [`Orders::write_queued`], its failure logged and counted.
    fn write_logged(&self, metrics: &Metrics) {
        if let Err(error) = self.write_queued() {
            super::journal_failed(metrics, "order", &error);
        }
    }

    /// Takes the queue and writes it in one transaction (blocking: SQLite). A failed
    /// batch is dropped, as a failed single write was: logged and counted by the caller.
    pub(crate) fn write_queued(&self) -> Result<(), StoreError> {
        let mut batch = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        // The last batch written (or whose write panicked: its pairs are dropped, as a
        // failed batch's are).
        batch.clear();
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.scheduled = false;
            std::mem::swap(&mut queue.batch, &mut *batch);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let written = self.side.remember_orders(&batch, now_ms());
        self.unwritten.fetch_sub(batch.len(), Ordering::AcqRel);
        written
    }
}

/// What a flush does with its write's end: a failed write is logged and counted, a panic
/// in it goes on up (as it would have on the caller's thread), and a write the runtime
/// cancelled at its shutdown leaves its pairs to the final flush.
fn settle(written: Result<Result<(), StoreError>, tokio::task::JoinError>, metrics: &Metrics) {
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => super::journal_failed(metrics, "order", &error),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::journal::store::{order_key, Store};

    fn orders() -> (tempdir::Dir, Arc<Orders>, Store) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("journal.sqlite3");
        let store = Store::open(&path).unwrap();
        let side = Arc::new(SideWriter::open(&path).unwrap());
        (dir, Arc::new(Orders::new(side)), store)
    }

    mod tempdir {
        pub(super) struct Dir {
            pub(super) path: std::path::PathBuf,
        }
        impl Dir {
            pub(super) fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "orders-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn a_batch_keeps_its_buffers_unless_a_burst_grew_them_past_the_limit() {
        let mut batch = Batch::default();
        batch.push("c", "1", "order-1");
        let (text, ends) = (batch.text.capacity(), batch.ends.capacity());
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!((batch.text.capacity(), batch.ends.capacity()), (text, ends));

        // A batch of a busy 10 ms (some hundred pairs) keeps its buffers too.
        let order = "o".repeat(100);
        while batch.text.len() <= 16 * 1024 {
            batch.push("c", "1", &order);
        }
        let (text, ends) = (batch.text.capacity(), batch.ends.capacity());
        batch.clear();
        assert_eq!((batch.text.capacity(), batch.ends.capacity()), (text, ends));

        // Exactly the limit is still kept: only a buffer grown past it is given back.
        let mut at_limit = Batch {
            text: String::with_capacity(KEPT_TEXT_BYTES),
            ends: Vec::with_capacity(8),
        };
        at_limit.push("c", "1", "order-1");
        at_limit.clear();
        assert!(at_limit.is_empty());
        assert_eq!(at_limit.text.capacity(), KEPT_TEXT_BYTES);
        assert_eq!(at_limit.ends.capacity(), 8);

        while batch.text.len() <= KEPT_TEXT_BYTES {
            batch.push("c", "1", &order);
        }
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!((batch.text.capacity(), batch.ends.capacity()), (0, 0));
        // Refilled after the reset, it reads as before.
        batch.push("c", "2", "order-2");
        assert_eq!(batch.pair(0), (order_key("c", "2").as_str(), "order-2"));
    }

    #[tokio::test]
    async fn a_flush_counts_a_failed_write_passes_a_panic_on_and_lets_a_cancelled_one_be() {
        let metrics = Metrics::new();
        settle(Ok(Ok(())), &metrics);
        assert_eq!(failures(&metrics), 0);
        let path = std::path::Path::new("journal.sqlite3");
        settle(Ok(Err(StoreError::refused(path, "full".into()))), &metrics);
        assert_eq!(failures(&metrics), 1, "a failed write is counted");

        let cancelled = tokio::spawn(std::future::pending::<Result<(), StoreError>>());
        cancelled.abort();
        settle(cancelled.await, &metrics);
        assert_eq!(failures(&metrics), 1, "a cancelled write is not a failure");

        let panicked = tokio::task::spawn_blocking(|| -> Result<(), StoreError> {
            std::panic::panic_any("the write panicked")
        })
        .await;
        let passed_on =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| settle(panicked, &metrics)))
                .expect_err("a panic in the write goes on up");
        assert_eq!(
            passed_on.downcast_ref::<&str>(),
            Some(&"the write panicked")
        );
        assert_eq!(failures(&metrics), 1);
    }

    /// Waits for the scheduled write, which nothing awaits.
    async fn written(orders: &Orders) {
        for _ in 0..5_000 {
            if orders.unwritten.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the scheduled write did not happen");
    }

    fn failures(metrics: &Metrics) -> u64 {
        metrics.journal_failures.with_label_values(&["order"]).get()
    }

    #[tokio::test]
    async fn a_batch_is_written_after_the_delay_and_a_flush_writes_at_once() {
        let (_dir, orders, store) = orders();
        let (tasks, metrics) = (TaskTracker::new(), Arc::new(Metrics::new()));
        orders.remember("c", "1", "order-1", &tasks, &metrics);
        orders.remember("c", "2", "order-2", &tasks, &metrics);
        assert_eq!(
            store.order_of("c 1").unwrap(),
            None,
            "queued, not written yet"
        );
        tasks.close();
        tasks.wait().await;
        written(&orders).await;
        assert_eq!(store.order_of("c 1").unwrap().as_deref(), Some("order-1"));
        assert_eq!(store.order_of("c 2").unwrap().as_deref(), Some("order-2"));

        // A flush (what a money call does before its intent) does not wait for the delay.
        let tasks = TaskTracker::new();
        orders.remember("c", "3", "order-3", &tasks, &metrics);
        orders.flush(&metrics).await;
        assert_eq!(orders.unwritten.load(Ordering::Acquire), 0);
        assert_eq!(store.order_of("c 3").unwrap().as_deref(), Some("order-3"));
        // The scheduled write then finds nothing left.
        tasks.close();
        tasks.wait().await;
        // A later pair schedules a new batch; a key queued again takes its new orderId,
        // and a batch already written is not written again over it.
        let tasks = TaskTracker::new();
        orders.remember("c", "1", "order-1b", &tasks, &metrics);
        orders.remember("d", "1", "order-d1", &tasks, &metrics);
        tasks.close();
        tasks.wait().await;
        written(&orders).await;
        let tasks = TaskTracker::new();
        orders.remember("c", "4", "order-4", &tasks, &metrics);
        tasks.close();
        tasks.wait().await;
        written(&orders).await;
        assert_eq!(store.order_of("c 1").unwrap().as_deref(), Some("order-1b"));
        assert_eq!(store.order_of("d 1").unwrap().as_deref(), Some("order-d1"));
        assert_eq!(store.order_of("c 4").unwrap().as_deref(), Some("order-4"));
        orders.flush(&metrics).await;
        assert_eq!(orders.unwritten.load(Ordering::Acquire), 0);
        assert_eq!(failures(&metrics), 0);
    }

    #[test]
    fn a_batch_keeps_each_pair_keyed_as_the_journal_reads_it() {
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        batch.push("1234", "2025", "order-1");
        batch.push("", "", "");
        batch.push("99", "7", "o");
        assert_eq!(batch.len(), 3);
        assert!(!batch.is_empty());
        assert_eq!(
            batch.pair(0),
            (order_key("1234", "2025").as_str(), "order-1")
        );
        assert_eq!(batch.pair(1), (" ", ""));
        assert_eq!(batch.pair(2), ("99 7", "o"));
        batch.clear();
        assert!(batch.is_empty());
        batch.push("5", "6", "x");
        assert_eq!(batch.pair(0), ("5 6", "x"));
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn batches_of_every_size_are_written_whole_with_the_last_orderid_of_a_key() {
        let (_dir, orders, store) = orders();
        let mut first = 0;
        // Every remainder below the largest insert, once with and once without it.
        for size in (0..=33).chain([64, 65, 66, 70, 95]) {
            let mut batch = Batch::default();
            for n in first..first + size {
                batch.push("c", &n.to_string(), &format!("order-{n}"));
            }
            orders
                .side
                .remember_orders(&batch, 7_000 + size as i64)
                .unwrap();
            for n in first..first + size {
                assert_eq!(
                    store.order_of(&format!("c {n}")).unwrap(),
                    Some(format!("order-{n}")),
                    "batch of {size}"
                );
            }
            assert_eq!(
                store.order_of(&format!("c {}", first + size)).unwrap(),
                None
            );
            first += size;
        }
        assert_eq!(store.count_orders(), i64::from(first));
        assert_eq!(store.order_recorded_at("c 0"), 7_001);
        assert_eq!(store.order_recorded_at(&format!("c {}", first - 1)), 7_095);
        // A key twice in one batch, within one insert and across two.
        let mut batch = Batch::default();
        for n in 0..40 {
            batch.push("d", &(n % 3).to_string(), &format!("order-{n}"));
        }
        batch.push("d", "0", "last");
        orders.side.remember_orders(&batch, 8_000).unwrap();
        assert_eq!(store.order_of("d 0").unwrap().as_deref(), Some("last"));
        assert_eq!(store.order_of("d 1").unwrap().as_deref(), Some("order-37"));
        assert_eq!(store.order_of("d 2").unwrap().as_deref(), Some("order-38"));
        assert_eq!(store.order_recorded_at("d 0"), 8_000);
        assert_eq!(store.count_orders(), i64::from(first + 3));
    }

    /// Calls on many threads queue pairs while scheduled batches are written off the
    /// runtime (not awaited): after each call's own flush its pair, and every pair it
    /// saw queued before, is in the table with its own orderId.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn after_a_flush_every_pair_queued_before_it_is_written_under_load() {
        let (_dir, orders, store) = orders();
        let store = Arc::new(store);
        let (tasks, metrics) = (TaskTracker::new(), Arc::new(Metrics::new()));
        let mut calls = Vec::new();
        for call in 0..8 {
            let (orders, store, tasks, metrics) = (
                orders.clone(),
                store.clone(),
                tasks.clone(),
                metrics.clone(),
            );
            calls.push(tokio::spawn(async move {
                for n in 0..60 {
                    let id = format!("{call}-{n}");
                    orders.remember("c", &id, &format!("order-{id}"), &tasks, &metrics);
                    if n % 3 == 0 {
                        tokio::time::sleep(Duration::from_millis(n % 7)).await;
                    }
                    if n % 4 == 0 {
                        orders.flush(&metrics).await;
                        for before in 0..=n {
                            let id = format!("{call}-{before}");
                            assert_eq!(
                                store.order_of(&format!("c {id}")).unwrap(),
                                Some(format!("order-{id}")),
                                "flushed after {call}-{n}"
                            );
                        }
                    }
                }
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
        orders.flush(&metrics).await;
        assert_eq!(store.count_orders(), 8 * 60);
        tasks.close();
        tasks.wait().await;
        written(&orders).await;
        assert_eq!(failures(&metrics), 0);
    }

    #[tokio::test]
    async fn a_failed_scheduled_batch_is_dropped_logged_and_counted() {
        let (dir, orders, _store) = orders();
        let (tasks, metrics) = (TaskTracker::new(), Arc::new(Metrics::new()));
        rusqlite::Connection::open(dir.path.join("journal.sqlite3"))
            .unwrap()
            .execute_batch("DROP TABLE orders")
            .unwrap();
        orders.remember("c", "1", "order-1", &tasks, &metrics);
        orders.remember("c", "2", "order-2", &tasks, &metrics);
        tasks.close();
        tasks.wait().await;
        written(&orders).await;
        assert_eq!(failures(&metrics), 1, "one batch, one failure");
        assert!(orders.queue.lock().unwrap().batch.is_empty());
    }
}
