//! Polling discipline: LINE Pay asks for at least a second between check-status calls
//! (`GET /v3|v4/payments/requests/{transactionId}/check`, offline
//! `GET /v4/payments/orders/{orderId}/check`) for one transaction. A call that comes
//! sooner is refused here (429 with `Retry-After`), never forwarded.
//!
//! The state is one instant per transaction polled within the last interval, bounded to
//! `max_tracked` entries like the per-client buckets (`client_store.rs`): when full,
//! entries whose interval has passed are dropped (they would admit the next poll
//! anyway); when still full, a new transaction is admitted untracked rather than refused,
//! since refusing polls of a transaction the sidecar cannot remember would be a guess.
//! Long ids are kept by their SHA-256, so an entry stays small whatever the path holds.

use super::config::PollingConfig;
use governor::clock::Reference;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Keys longer than this are kept by their digest.
const MAX_KEY_BYTES: usize = 64;

#[derive(Clone, PartialEq, Eq, Hash)]
enum PollKey {
    Plain(Box<[u8]>),
    Digest([u8; 32]),
}

impl PollKey {
    fn new(key: &[u8]) -> PollKey {
        if key.len() <= MAX_KEY_BYTES {
            PollKey::Plain(key.into())
        } else {
            PollKey::Digest(Sha256::digest(key).into())
        }
    }
}

/// When each recently polled transaction was last polled.
pub(super) struct Polling<I> {
    min_interval: Duration,
    max_tracked: usize,
    last: Mutex<HashMap<PollKey, I>>,
}

impl<I: Reference> Polling<I> {
    pub(super) fn new(config: &PollingConfig) -> Option<Polling<I>> {
        (!config.min_interval.is_zero()).then(|| Polling {
            min_interval: config.min_interval,
            max_tracked: config.max_tracked.get(),
            last: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a poll of `key` at `now`, or says how long until the next one may go.
    /// A refused poll does not move the window: the app may poll once per interval.
    pub(super) fn check(&self, key: &[u8], now: I) -> Result<(), Duration> {
        let key = PollKey::new(key);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = last.get_mut(&key) {
            let elapsed = Duration::from(now.duration_since(*previous));
            if elapsed < self.min_interval {
                return Err(self.min_interval - elapsed);
            }
            *previous = now;
            return Ok(());
        }
        if last.len() >= self.max_tracked {
            let interval = self.min_interval;
            last.retain(|_, at| Duration::from(now.duration_since(*at)) < interval);
            if last.len() >= self.max_tracked {
                return Ok(());
            }
        }
        last.insert(key, now);
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The transaction a check-status path names: `requests/<id>` or `orders/<id>`, from
/// the path's last segments, for any route whose template ends in
/// `requests/{…}/check` or `orders/{…}/check`; `None` for every other route.
pub(super) fn check_status_key<'p>(template: &str, path: &'p str) -> Option<&'p str> {
    let mut template = template.rsplit('/');
    let (last, param, kind) = (template.next()?, template.next()?, template.next()?);
    let is_check = last == "check"
        && param.starts_with('{')
        && param.ends_with('}')
        && (kind == "requests" || kind == "orders");
    if !is_check {
        return None;
    }
    // `kind/<id>/check`: the last three segments of the path.
    let without_check = path.strip_suffix("/check")?;
    let start = without_check.rfind('/')?;
    let kind_start = without_check[..start].rfind('/')? + 1;
    Some(&path[kind_start..without_check.len()])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use governor::nanos::Nanos;
    use std::num::NonZeroUsize;

    fn polling(max_tracked: usize) -> Polling<Nanos> {
        Polling::new(&PollingConfig {
            min_interval: Duration::from_secs(1),
            max_tracked: NonZeroUsize::new(max_tracked).unwrap(),
        })
        .unwrap()
    }

    fn at(millis: u64) -> Nanos {
        Nanos::from(Duration::from_millis(millis))
    }

    #[test]
    fn a_second_poll_within_the_interval_is_refused_until_it_has_passed() {
        let polling = polling(10);
        assert_eq!(polling.check(b"requests/1", at(0)), Ok(()));
        assert_eq!(
            polling.check(b"requests/1", at(400)),
            Err(Duration::from_millis(600))
        );
        // The refusal did not move the window.
        assert_eq!(
            polling.check(b"requests/1", at(900)),
            Err(Duration::from_millis(100))
        );
        assert_eq!(polling.check(b"requests/1", at(1000)), Ok(()));
        // Another transaction has its own window.
        assert_eq!(polling.check(b"requests/2", at(1001)), Ok(()));
    }

    #[test]
    fn memory_is_bounded_and_a_full_store_admits_rather_than_guesses() {
        let polling = polling(2);
        polling.check(b"requests/1", at(0)).unwrap();
        polling.check(b"requests/2", at(0)).unwrap();
        // Full, and both windows still open: the third is admitted untracked.
        assert_eq!(polling.check(b"requests/3", at(10)), Ok(()));
        assert_eq!(polling.check(b"requests/3", at(20)), Ok(()));
        assert_eq!(polling.tracked(), 2);
        // Once the windows have passed, the sweep makes room.
        polling.check(b"requests/4", at(1500)).unwrap();
        assert!(polling.check(b"requests/4", at(1600)).is_err());
        assert!(polling.tracked() <= 2);
        let long = vec![b'x'; 500];
        polling.check(&long, at(5000)).unwrap();
        assert!(polling.check(&long, at(5001)).is_err());
    }

    #[test]
    fn zero_interval_turns_it_off() {
        let config = PollingConfig {
            min_interval: Duration::ZERO,
            max_tracked: NonZeroUsize::new(1).unwrap(),
        };
        assert!(Polling::<Nanos>::new(&config).is_none());
    }

    #[test]
    fn check_status_routes_are_recognised_by_their_template() {
        let online = "/v3/payments/requests/{transactionId}/check";
        assert_eq!(
            check_status_key(online, "/v3/payments/requests/2021121600698709710/check"),
            Some("requests/2021121600698709710")
        );
        let offline = "/v4/payments/orders/{orderId}/check";
        assert_eq!(
            check_status_key(offline, "/v4/payments/orders/pos-42/check"),
            Some("orders/pos-42")
        );
        for other in [
            "/v3/payments/preapprovedPay/{regKey}/check",
            "/v3/payments/{transactionId}/confirm",
            "/v3/payments",
        ] {
            assert_eq!(
                check_status_key(other, "/v3/payments/x/check"),
                None,
                "{other}"
            );
        }
    }
}
