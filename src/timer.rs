//! One timer for a call's two waits: for the app's body, then for LINE Pay's answer.
//!
//! `tokio::time::timeout` makes a new timer each time: it reads the clock, takes a
//! handle on the runtime's timer, enters the timer wheel when first polled and leaves it
//! when dropped. A call armed two, one after the other. Here one [`Sleep`] times both:
//! [`within`] runs a wait against it, and `Sleep::reset` moves it to the second wait's
//! deadline (a later one stays in the wheel where it is; tokio re-files it only if the
//! old deadline comes first). Each wait keeps its own deadline, taken when it starts,
//! exactly as with two timers.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::task::coop;
use tokio::time::Sleep;

/// `future`'s output, or `None` once `timer` has fired first. Polled as
/// `tokio::time::timeout` polls: the future first, so an output that is ready wins; and
/// a future that used up the task's scheduling budget does not keep the timer from being
/// checked.
///
/// Not an `async fn`: one taking the future by value would hold it twice in the call's
/// future (the argument, then its pinned copy), and hyper moves that future whole
/// (callgrind: +9,000 instructions a call in `memcpy`). The caller pins it in place.
pub(crate) fn within<'a, F: Future>(
    mut timer: Pin<&'a mut Sleep>,
    mut future: Pin<&'a mut F>,
) -> impl Future<Output = Option<F::Output>> + 'a {
    std::future::poll_fn(move |cx| {
        let had_budget = coop::has_budget_remaining();
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let fired = if had_budget && !coop::has_budget_remaining() {
            Pin::new(&mut coop::unconstrained(timer.as_mut())).poll(cx)
        } else {
            timer.as_mut().poll(cx)
        };
        fired.map(|()| None)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::time::Duration;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_later_second_deadline_is_the_one_that_counts() {
        let mut timer = pin!(tokio::time::sleep(30 * MS));
        let quick = pin!(async {
            tokio::time::sleep(5 * MS).await;
            1
        });
        let quick = within(timer.as_mut(), quick);
        assert_eq!(quick.await, Some(1));
        // The second wait's deadline, taken when it starts, past the first one.
        let second = Instant::now();
        timer.as_mut().reset(second + 150 * MS);
        assert_eq!(
            within(timer.as_mut(), pin!(std::future::pending::<()>())).await,
            None
        );
        assert!(second.elapsed() >= 150 * MS, "{:?}", second.elapsed());
    }

    #[tokio::test]
    async fn an_earlier_second_deadline_is_kept_too() {
        let mut timer = pin!(tokio::time::sleep(Duration::from_secs(10)));
        let quick = pin!(tokio::time::sleep(5 * MS));
        let quick = within(timer.as_mut(), quick);
        assert_eq!(quick.await, Some(()));
        let second = Instant::now();
        timer.as_mut().reset(second + 50 * MS);
        assert_eq!(
            within(timer.as_mut(), pin!(std::future::pending::<()>())).await,
            None
        );
        let waited = second.elapsed();
        assert!(
            waited >= 50 * MS && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_ready_output_wins_over_a_timer_that_has_fired() {
        let mut timer = pin!(tokio::time::sleep(5 * MS));
        tokio::time::sleep(20 * MS).await;
        assert_eq!(within(timer.as_mut(), pin!(async { 7 })).await, Some(7));
        assert_eq!(
            within(timer.as_mut(), pin!(std::future::pending::<()>())).await,
            None
        );
    }
}
