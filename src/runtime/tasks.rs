//! Every task the sidecar runs, in one place: one [`CancellationToken`] tells them all
//! to stop, one [`TaskTracker`] joins them, and a task that panics is noticed.
//!
//! A task is told to stop, never aborted: each long-lived loop waits on the token at
//! its waiting points and returns, so work it has begun (a reload, a drain) finishes.
//! A panic is caught at the task's edge and logged at ERROR; when the task is one of
//! the listeners, [`Tasks::failed`] completes, so the runtime shuts down and the
//! process exits non-zero instead of running on without its port.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a panic in a task means for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// An accept loop: without it a port is dead, so its panic stops the process.
    Listener,
    /// Background work (reloader, probes, one connection): its panic is logged and
    /// the rest keeps serving.
    Worker,
}

/// Cheap to clone: every clone spawns into the same tracker and sees the same token.
#[derive(Clone)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    /// Cancelled when a listener task panicked.
    failed: CancellationToken,
    /// The name of the first listener task that panicked.
    failure: Arc<Mutex<Option<&'static str>>>,
}

impl Tasks {
    pub(crate) fn new() -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            failed: CancellationToken::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// The token every task watches; cancelled by [`Tasks::join`].
    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Spawns `future` as a tracked task named `name`. The handle yields `None` when
    /// the task panicked (already logged).
    pub(crate) fn spawn<F>(
        &self,
        name: &'static str,
        role: Role,
        future: F,
    ) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            match (CatchUnwind {
                inner: Box::pin(future),
            })
            .await
            {
                Ok(output) => Some(output),
                Err(payload) => {
                    this.panicked(name, role, &*payload);
                    None
                }
            }
        })
    }

    /// Completes when a listener task has panicked.
    pub(crate) async fn failed(&self) {
        self.failed.cancelled().await;
    }

    /// The listener task that panicked, if one did.
    pub(crate) fn failure(&self) -> Option<&'static str> {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells every task to stop and waits for all of them, for at most `limit`; `false`
    /// (after an ERROR line) when some did not stop in time.
    pub(crate) async fn join(&self, limit: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        match tokio::time::timeout(limit, self.tracker.wait()).await {
            Ok(()) => true,
            Err(_) => {
                tracing::error!(
                    tasks = self.tracker.len(),
                    limit_s = limit.as_secs_f64(),
                    "tasks did not stop in time; they are cut when the process exits"
                );
                false
            }
        }
    }

    fn panicked(&self, name: &'static str, role: Role, payload: &(dyn Any + Send)) {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        match role {
            Role::Listener => {
                tracing::error!(
                    task = name,
                    panic = message,
                    "task panicked: the listener is gone, the sidecar shuts down"
                );
                self.failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(name);
                self.failed.cancel();
            }
            Role::Worker => tracing::error!(task = name, panic = message, "task panicked"),
        }
    }
}

/// Runs a future and turns a panic in its `poll` into an `Err` with the panic's payload,
/// so the task's end is reported instead of vanishing into a `JoinError` nobody reads.
struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        // A future that panicked is never polled again (it is dropped with the task),
        // so no broken state is observed: the unwind-safety assertion holds.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_panic_is_noticed_and_named() {
        let tasks = Tasks::new();
        let handle = tasks.spawn("proxy listener", Role::Listener, async {
            panic!("accept loop broke");
        });
        assert!(matches!(handle.await, Ok(None)));
        tokio::time::timeout(Duration::from_secs(5), tasks.failed())
            .await
            .unwrap_or_else(|_| panic!("the failure was not signalled"));
        assert_eq!(tasks.failure(), Some("proxy listener"));
    }

    #[tokio::test]
    async fn a_worker_panic_is_logged_but_stops_nothing() {
        let tasks = Tasks::new();
        let handle = tasks.spawn("probe", Role::Worker, async {
            panic!("probe broke");
        });
        assert!(matches!(handle.await, Ok(None)));
        assert_eq!(tasks.failure(), None);
        assert!(!tasks.stop_token().is_cancelled());
    }

    #[tokio::test]
    async fn join_tells_every_task_to_stop_and_waits_for_it() {
        let tasks = Tasks::new();
        let stop = tasks.stop_token();
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = finished.clone();
        tasks.spawn("loop", Role::Worker, async move {
            stop.cancelled().await;
            // Work begun after the request to stop still finishes before the join ends.
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(tasks.join(Duration::from_secs(5)).await);
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    }
}
