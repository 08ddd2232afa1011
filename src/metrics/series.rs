//! The handles of the series a forwarded call counts, kept per channel and route.
//!
//! `MetricVec::with_label_values` hashes every label value (FNV, byte by byte), looks
//! the hash up under a lock and clones the series' handle; a plain call did that three
//! times (`requests`, `channel_requests`, `upstream_duration`). What decides those
//! labels is already in hand: the channel, the route (its place in that channel's
//! allowlist), the status and the returnCode label. Keyed by these, a handle is found
//! with a comparison or two.
//!
//! A label set is resolved, and its series created, only when a call first uses it,
//! exactly as `with_label_values` did: `/metrics` shows the same series with the same
//! values (a test in `crate::proxy` compares the two).

use prometheus::{Histogram, IntCounter};
use std::sync::{OnceLock, PoisonError, RwLock};

use crate::route::Route;

/// One channel's handles, for the routes of its allowlist (see the module's doc).
pub(crate) struct ChannelSeries {
    /// `channel_requests`: by status and returnCode label.
    answers: Handles,
    /// One per route of the channel's allowlist, in its order.
    routes: Box<[RouteSeries]>,
}

#[derive(Default)]
pub(crate) struct RouteSeries {
    /// `requests`: by status and returnCode label (the method and family are the route's).
    answers: Handles,
    upstream_duration: OnceLock<Histogram>,
}

/// The counters of one family of series, by status (as `metrics::status_key` keys it:
/// one key per status label) and returnCode label. A handful per route in practice
/// (statuses times codes seen), so a list, searched in order.
#[derive(Default)]
struct Handles(RwLock<Vec<((u16, &'static str), IntCounter)>>);

impl Handles {
    /// Adds one to the series of `key`, resolved with `resolve` the first time.
    fn inc(&self, key: (u16, &'static str), resolve: impl FnOnce() -> IntCounter) {
        {
            let known = self.0.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, counter)) = known.iter().find(|(k, _)| *k == key) {
                counter.inc();
                return;
            }
        }
        let mut known = self.0.write().unwrap_or_else(PoisonError::into_inner);
        // Another call may have resolved it between the two locks.
        if let Some((_, counter)) = known.iter().find(|(k, _)| *k == key) {
            counter.inc();
            return;
        }
        let counter = resolve();
        counter.inc();
        known.push((key, counter));
    }
}

impl ChannelSeries {
    /// Empty handles for an allowlist of `routes` routes.
    pub(crate) fn new(routes: usize) -> ChannelSeries {
        ChannelSeries {
            answers: Handles::default(),
            routes: (0..routes).map(|_| RouteSeries::default()).collect(),
        }
    }

    /// Adds one to the channel's series of this status and returnCode label.
    pub(crate) fn count_answer(
        &self,
        status: u16,
        return_code: &'static str,
        resolve: impl FnOnce() -> IntCounter,
    ) {
        self.answers.inc((status, return_code), resolve);
    }

    /// The handles of `route`, when it is one of `routes` (the allowlist these handles
    /// were made for) by address; `None` for any other route, whose series are then
    /// looked up by label.
    pub(crate) fn route(&self, routes: &[Route], route: &Route) -> Option<&RouteSeries> {
        let size = std::mem::size_of::<Route>().max(1);
        let offset = (route as *const Route as usize).checked_sub(routes.as_ptr() as usize)?;
        let index = offset / size;
        routes
            .get(index)
            .filter(|candidate| std::ptr::eq(*candidate, route))?;
        self.routes.get(index)
    }
}

#[cfg(test)]
impl ChannelSeries {
    /// How many handles it keeps, the channel's and its routes' (tests).
    pub(crate) fn handles_kept(&self) -> usize {
        let len = |handles: &Handles| {
            handles
                .0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        };
        len(&self.answers)
            + self
                .routes
                .iter()
                .map(|route| len(&route.answers))
                .sum::<usize>()
    }
}

impl RouteSeries {
    /// Adds one to the route's series of this status and returnCode label.
    pub(crate) fn count_answer(
        &self,
        status: u16,
        return_code: &'static str,
        resolve: impl FnOnce() -> IntCounter,
    ) {
        self.answers.inc((status, return_code), resolve);
    }

    /// The route's `upstream_duration` histogram, resolved with `resolve` the first time.
    pub(crate) fn upstream_duration(&self, resolve: impl FnOnce() -> Histogram) -> &Histogram {
        self.upstream_duration.get_or_init(resolve)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::route::{family_routes, ApiFamily};
    use std::time::Duration;

    fn routes() -> Vec<Route> {
        family_routes(ApiFamily::OnlineV3, Duration::from_secs(5), None)
    }

    #[test]
    fn a_route_is_found_by_its_place_in_the_allowlist_only() {
        let routes = routes();
        assert!(routes.len() > 2);
        let series = ChannelSeries::new(routes.len());
        for (index, route) in routes.iter().enumerate() {
            let found = series.route(&routes, route).unwrap();
            assert!(std::ptr::eq(found, &series.routes[index]));
        }
        // An equal route elsewhere (another snapshot's, a reconciliation's) is not one
        // of these.
        let copy = routes[1].clone();
        assert!(series.route(&routes, &copy).is_none());
        let other = routes.clone();
        assert!(series.route(&routes, &other[0]).is_none());
        assert!(ChannelSeries::new(0).route(&[], &routes[0]).is_none());
    }

    #[test]
    fn a_label_set_is_resolved_once_and_each_set_counts_apart() {
        let vec = prometheus::IntCounterVec::new(
            prometheus::Opts::new("t", "t"),
            &["status", "return_code"],
        )
        .unwrap();
        let handles = Handles::default();
        let resolved = std::cell::Cell::new(0);
        let resolve = |status: &'static str, code: &'static str| {
            resolved.set(resolved.get() + 1);
            vec.with_label_values(&[status, code])
        };
        handles.inc((200, "0000"), || resolve("200", "0000"));
        handles.inc((200, "0000"), || resolve("200", "0000"));
        handles.inc((200, "1106"), || resolve("200", "1106"));
        handles.inc((400, "0000"), || resolve("400", "0000"));
        handles.inc((200, "0000"), || resolve("200", "0000"));
        assert_eq!(resolved.get(), 3);
        assert_eq!(vec.with_label_values(&["200", "0000"]).get(), 3);
        assert_eq!(vec.with_label_values(&["200", "1106"]).get(), 1);
        assert_eq!(vec.with_label_values(&["400", "0000"]).get(), 1);
    }
}
