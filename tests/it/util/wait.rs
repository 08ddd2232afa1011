//! Bounded waits: the one way a test waits for something the sidecar does in the
//! background (a reload, a drain, a gauge), and for a child process to exit.
//!
//! Each wait polls an observable condition, never a fixed sleep, and panics after its
//! limit with what it saw last, so a failure says what never happened.

use super::WAIT_LIMIT;
use std::fmt::Display;
use std::future::Future;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long to wait between two looks.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` until it gives `Ok`, for at most [`WAIT_LIMIT`]; returns that value.
///
/// `check` answers `Err(what it saw)` while the condition does not hold yet; the last
/// such answer is in the panic message, after `what` (the condition, in words).
pub async fn eventually<T, E, F, Fut>(what: &str, check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    eventually_within(WAIT_LIMIT, what, check).await
}

/// [`eventually`] with a tighter limit, where how soon is part of the behaviour.
pub async fn eventually_within<T, E, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // A look that hangs is bounded too.
        let seen = match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => seen.to_string(),
            Err(_) => "(the last look did not finish)".to_owned(),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            panic!("{what}: not within {limit:?}; last seen: {seen}");
        }
        // One last look at the deadline itself, however short the limit.
        tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
    }
}

/// Waits (bounded, blocking) for `child` to exit by itself; `None` if it still runs
/// after `limit` (it is left running: the caller decides whether to kill it).
pub fn child_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return None,
            Err(error) => panic!("cannot wait for a child process: {error}"),
        }
    }
}

#[tokio::test]
async fn eventually_returns_the_first_value_that_holds() {
    let mut looks = 0;
    let value = eventually("the third look", || {
        looks += 1;
        let look = looks;
        async move {
            if look >= 3 {
                Ok(look)
            } else {
                Err(look)
            }
        }
    })
    .await;
    assert_eq!(value, 3);
}

#[tokio::test]
#[should_panic(expected = "the gauge reaches 1: not within 200ms; last seen: 0")]
async fn eventually_panics_with_what_it_saw_last() {
    eventually_within(
        Duration::from_millis(200),
        "the gauge reaches 1",
        || async { Err::<(), _>(0) },
    )
    .await;
}
