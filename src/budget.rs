//! The global budget of bytes that calls hold in memory: request heads, request bodies
//! and LINE Pay's answers, all calls together (`request.max_buffered_bytes`).
//!
//! Per-call caps (`request.max_body_bytes`, `upstream.max_response_bytes`) bound one
//! call; this bounds their sum, so a thousand connections each sending a large head and
//! most of a large body cannot push the process past its memory limit. A call charges
//! what it will buffer *before* buffering it (its head, then the body its
//! `Content-Length` declares, then LINE Pay's answer chunk by chunk), and a charge that
//! does not fit is refused (`503 overloaded`) instead of allocated. Charges are freed
//! when the call ends. A proxy connection also charges hyper's read buffer as a large
//! head makes it grow, for as long as the connection lives (`runtime::meter`). Pure
//! bookkeeping: no I/O, no waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The shared budget; one per process.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged right now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// A charge of `bytes`, or `None` when they do not fit.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut charge = self.nothing();
        charge.grow(bytes).then_some(charge)
    }

    /// A charge of nothing yet, to [`Charge::grow`] later (a connection's read buffer).
    pub(crate) fn nothing(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes one call holds; given back on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// Adds `bytes` to this charge; `false` (and nothing added) when they do not fit.
    #[must_use]
    pub(crate) fn grow(&mut self, bytes: usize) -> bool {
        let fits = self.budget.reserve(bytes);
        if fits {
            self.bytes += bytes;
        }
        fits
    }

    /// Bytes this charge holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The budget's limit, for the refusal's message.
    pub(crate) fn limit(&self) -> usize {
        self.budget.limit
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_up_to_the_limit_and_are_given_back_on_drop() {
        let budget = Budget::new(100);
        let mut first = budget.charge(60).unwrap();
        assert_eq!(budget.used(), 60);
        assert!(budget.charge(41).is_none(), "60 + 41 > 100");
        assert_eq!(budget.used(), 60, "a refused charge takes nothing");
        let second = budget.charge(40).unwrap();
        assert_eq!(budget.used(), 100, "exactly the limit fits");
        assert!(!first.grow(1));
        drop(second);
        assert!(first.grow(40));
        assert_eq!(first.bytes(), 100);
        assert_eq!(first.limit(), 100, "the refusal names the real limit");
        drop(first);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.limit(), 100);
    }

    #[test]
    fn a_charge_of_nothing_grows_and_gives_back_what_it_grew() {
        let budget = Budget::new(100);
        let mut charge = budget.nothing();
        assert_eq!((charge.bytes(), budget.used()), (0, 0));
        assert!(charge.grow(70));
        assert!(!charge.grow(31));
        assert_eq!((charge.bytes(), budget.used()), (70, 70));
        drop(charge);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_charge_near_usize_max_is_refused_not_wrapped() {
        let budget = Budget::new(usize::MAX);
        let _held = budget.charge(10).unwrap();
        assert!(budget.charge(usize::MAX).is_none());
        assert_eq!(budget.used(), 10);
    }
}
