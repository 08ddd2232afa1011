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

use super::store::{now_ms, SideWriter, StoreError};
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
    /// Held while a batch is taken and written, so that a flush waits for a batch
    /// already being written: after [`Orders::flush`] every pair queued before it is in
    /// the table.
    writing: Mutex<()>,
    /// Pairs queued and not yet committed (a flush with nothing to write costs nothing).
    unwritten: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    pairs: Vec<(String, String)>,
    /// A write is scheduled and has not taken the queue yet.
    scheduled: bool,
}

impl Orders {
    pub(crate) fn new(side: Arc<SideWriter>) -> Orders {
        Orders {
            side,
            queue: Mutex::default(),
            writing: Mutex::new(()),
            unwritten: AtomicUsize::new(0),
        }
    }

    /// Queues a pair; the first of a batch schedules its write (a task of `tasks`, on the
    /// current runtime) [`BATCH_DELAY`] from now.
    pub(crate) fn remember(
        self: &Arc<Self>,
        transaction_id: String,
        order_id: String,
        tasks: &TaskTracker,
        metrics: &Arc<Metrics>,
    ) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        let schedule = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.pairs.push((transaction_id, order_id));
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if schedule {
            let (orders, metrics) = (self.clone(), metrics.clone());
            tasks.spawn(async move {
                tokio::time::sleep(BATCH_DELAY).await;
                orders.write_off_thread(&metrics).await;
            });
        }
    }

    /// Writes every pair queued so far, waiting for a batch being written; nothing to do
    /// (no thread involved) when every pair is already written.
    pub(crate) async fn flush(self: &Arc<Self>, metrics: &Metrics) {
        if self.unwritten.load(Ordering::Acquire) == 0 {
            return;
        }
        self.write_off_thread(metrics).await;
    }

    async fn write_off_thread(self: &Arc<Self>, metrics: &Metrics) {
        let orders = self.clone();
        match tokio::task::spawn_blocking(move || orders.write_queued()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => super::journal_failed(metrics, "order", &error),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // The runtime is shutting down: the final flush writes what is left.
            Err(_) => {}
        }
    }

    /// Takes the queue and writes it in one transaction (blocking: SQLite). A failed
    /// batch is dropped, as a failed single write was: logged and counted by the caller.
    pub(crate) fn write_queued(&self) -> Result<(), StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let pairs = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.scheduled = false;
            std::mem::take(&mut queue.pairs)
        };
        if pairs.is_empty() {
            return Ok(());
        }
        let written = self.side.remember_orders(&pairs, now_ms());
        self.unwritten.fetch_sub(pairs.len(), Ordering::AcqRel);
        written
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::journal::store::Store;

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

    #[tokio::test]
    async fn a_batch_is_written_after_the_delay_and_a_flush_writes_at_once() {
        let (_dir, orders, store) = orders();
        let (tasks, metrics) = (TaskTracker::new(), Arc::new(Metrics::new()));
        orders.remember("1".into(), "order-1".into(), &tasks, &metrics);
        orders.remember("2".into(), "order-2".into(), &tasks, &metrics);
        assert_eq!(
            store.order_of("1").unwrap(),
            None,
            "queued, not written yet"
        );
        tasks.close();
        tasks.wait().await;
        assert_eq!(store.order_of("1").unwrap().as_deref(), Some("order-1"));
        assert_eq!(store.order_of("2").unwrap().as_deref(), Some("order-2"));
        assert_eq!(orders.unwritten.load(Ordering::Acquire), 0);

        // A flush (what a money call does before its intent) does not wait for the delay.
        let tasks = TaskTracker::new();
        orders.remember("3".into(), "order-3".into(), &tasks, &metrics);
        orders.flush(&metrics).await;
        assert_eq!(store.order_of("3").unwrap().as_deref(), Some("order-3"));
        // The scheduled write then finds nothing left.
        tasks.close();
        tasks.wait().await;
        assert_eq!(orders.unwritten.load(Ordering::Acquire), 0);
        // A later pair schedules a new batch.
        let tasks = TaskTracker::new();
        orders.remember("4".into(), "order-4b".into(), &tasks, &metrics);
        tasks.close();
        tasks.wait().await;
        assert_eq!(store.order_of("4").unwrap().as_deref(), Some("order-4b"));
    }
}
