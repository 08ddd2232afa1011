//! The per-client state behind the `per_client` limit: a governor state store holding
//! one GCRA bucket per client, bounded to `max_clients` named clients.
//!
//! governor's own keyed store grows with every new key, and the key here is a header
//! the app sets: without a bound, a caller could grow the sidecar's memory at will. So
//! this store caps the named clients, sends new ones to a shared overflow bucket when
//! full, keys long values by their digest, and tells admission (`limit/mod.rs`) when a
//! sweep of refilled buckets is due.

use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Client header values longer than this are keyed by their SHA-256, so that the memory
/// held per client stays small whatever the app sends.
const MAX_KEY_BYTES: usize = 64;

/// Which client bucket a call draws from. Deliberately no `Debug`: the value is the
/// app's, and never goes into a log or an error.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum ClientKey {
    /// No header, or an empty one: all such calls share one bucket.
    Anonymous,
    Named(Box<[u8]>),
    /// A value longer than [`MAX_KEY_BYTES`], by its SHA-256.
    Digest([u8; 32]),
    /// New clients while `max_clients` buckets are live: they share this one.
    Overflow,
}

impl ClientKey {
    pub(super) fn from_headers(headers: &HeaderMap, header: &HeaderName) -> ClientKey {
        match headers.get(header) {
            None => ClientKey::Anonymous,
            Some(value) if value.is_empty() => ClientKey::Anonymous,
            Some(value) if value.len() <= MAX_KEY_BYTES => {
                ClientKey::Named(value.as_bytes().into())
            }
            Some(value) => ClientKey::Digest(Sha256::digest(value.as_bytes()).into()),
        }
    }

    fn is_shared(&self) -> bool {
        matches!(self, ClientKey::Anonymous | ClientKey::Overflow)
    }
}

/// The GCRA state (governor's "theoretical arrival time") of each client, at most
/// `max_clients` named ones plus the two shared buckets. One mutex: each call holds it
/// for one hash lookup.
struct ClientStore {
    max_clients: usize,
    buckets: Mutex<HashMap<ClientKey, Nanos>>,
    /// Set when a new client had to share the overflow bucket: time to sweep.
    full: AtomicBool,
}

impl ClientStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Nanos>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn named_count(buckets: &HashMap<ClientKey, Nanos>) -> usize {
    let shared = [ClientKey::Anonymous, ClientKey::Overflow]
        .iter()
        .filter(|key| buckets.contains_key(key))
        .count();
    buckets.len().saturating_sub(shared)
}

/// Shared so that [`Limits`](super::Limits) can see `full` while governor owns the store.
#[derive(Clone)]
pub(super) struct SharedClientStore(Arc<ClientStore>);

impl SharedClientStore {
    pub(super) fn new(max_clients: usize) -> SharedClientStore {
        SharedClientStore(Arc::new(ClientStore {
            max_clients,
            buckets: Mutex::new(HashMap::new()),
            full: AtomicBool::new(false),
        }))
    }

    /// A new client had to share the overflow bucket since the last sweep.
    pub(super) fn is_full(&self) -> bool {
        self.0.full.load(Ordering::Relaxed)
    }
}

impl StateStore for SharedClientStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let store = &self.0;
        let mut buckets = store.lock();
        if let Some(state) = buckets.get_mut(key) {
            let (outcome, next) = f(Some(*state))?;
            *state = next;
            return Ok(outcome);
        }
        let key = if key.is_shared() || named_count(&buckets) < store.max_clients {
            key.clone()
        } else {
            store.full.store(true, Ordering::Relaxed);
            ClientKey::Overflow
        };
        let (outcome, next) = f(buckets.get(&key).copied())?;
        buckets.insert(key, next);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for SharedClientStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let store = &self.0;
        let mut buckets = store.lock();
        // A bucket whose arrival time has passed is full again: the same as a new one.
        buckets.retain(|_, state| *state > drop_below);
        if named_count(&buckets) < store.max_clients {
            store.full.store(false, Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The store is driven through admission, as in production: governor owns it and
    //! calls it only from `check_key` and `retain_recent`.
    use super::*;
    use crate::limit::tests::{call, client, limits, refused, route, REQUEST};
    use std::time::Duration;

    #[tokio::test]
    async fn clients_are_keyed_by_header_and_anonymous_calls_share_a_bucket() {
        let (limits, _clock) =
            limits("limits:\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 2}\n");
        let request = route("POST", REQUEST);
        let (shop_a, shop_b) = (client("shop-a"), client("shop-b"));
        call(&limits, &request, &shop_a).await.unwrap();
        call(&limits, &request, &shop_a).await.unwrap();
        let refusal = call(&limits, &request, &shop_a).await.unwrap_err();
        // The error names the limit, never the app's header value.
        assert!(!refusal.to_string().contains("shop-a"), "{refusal}");
        assert_eq!(refused(Err(refusal)), ("client".to_owned(), 60));

        call(&limits, &request, &shop_b).await.unwrap();
        call(&limits, &request, &shop_b).await.unwrap();
        refused(call(&limits, &request, &shop_b).await);

        // No header and an empty header are the same anonymous client.
        call(&limits, &request, &HeaderMap::new()).await.unwrap();
        call(&limits, &request, &client("")).await.unwrap();
        refused(call(&limits, &request, &HeaderMap::new()).await);
    }

    #[tokio::test]
    async fn long_client_values_are_keyed_by_digest() {
        let (limits, _clock) =
            limits("limits:\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 1}\n");
        let request = route("POST", REQUEST);
        let (long_a, long_b) = ("a".repeat(500), "b".repeat(500));
        call(&limits, &request, &client(&long_a)).await.unwrap();
        call(&limits, &request, &client(&long_b)).await.unwrap();
        refused(call(&limits, &request, &client(&long_a)).await);
        let clients = limits.clients.as_ref().unwrap();
        assert!(clients.store.0.lock().keys().all(|key| match key {
            ClientKey::Named(value) => value.len() <= MAX_KEY_BYTES,
            _ => true,
        }));
    }

    #[tokio::test]
    async fn client_buckets_are_bounded_and_forgotten_once_refilled() {
        let (limits, clock) = limits(
            "limits:\n  per_client: {header: X-Merchant-Client, rate: 1/s, burst: 1, max_clients: 2}\n",
        );
        let request = route("POST", REQUEST);
        let store = || limits.clients.as_ref().unwrap().store.clone();
        call(&limits, &request, &client("a")).await.unwrap();
        call(&limits, &request, &client("b")).await.unwrap();
        // Both slots taken: c and d share the overflow bucket.
        call(&limits, &request, &client("c")).await.unwrap();
        refused(call(&limits, &request, &client("d")).await);
        assert_eq!(store().len(), 3, "a, b and overflow");
        assert!(store().0.full.load(Ordering::Relaxed));

        // Two seconds later every bucket has refilled; the next new client sweeps them.
        clock.advance(Duration::from_secs(2));
        call(&limits, &request, &client("e")).await.unwrap();
        call(&limits, &request, &client("f")).await.unwrap();
        refused(call(&limits, &request, &client("f")).await);
        let live = store().len();
        assert!(live <= 2 + 2, "{live} buckets for max_clients 2");
        assert!(store()
            .0
            .lock()
            .contains_key(&ClientKey::Named(b"f".as_slice().into())));
    }
}
