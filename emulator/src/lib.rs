//! An in-memory LINE Pay online API (v3, and the legacy v2) for demos and tests.
//!
//! It is the upstream of `linepay-sidecar demo`, so a newcomer without a LINE Pay
//! account can run request → confirm → details → refund, and the real upstream of the
//! sidecar's integration tests; `linepay-emulator` (src/main.rs) runs it alone. It is a
//! crate of its own so that a production sidecar, built without the `demo` feature,
//! carries none of it; it does not depend on the sidecar, and checks credentials with
//! its own code ([`auth`]), as LINE Pay would, answering like LINE Pay: HTTP 200 with a
//! `returnCode` for every business outcome.
//!
//! A call travels: [`route`](route::route) (404 if not in the API) →
//! [`auth`] (1106) → [`input`] (2101/2102/1178) → [`ledger`] (state rules) →
//! [`reply`] (the JSON body). [`Emulator::serve`] (in `server.rs`) puts HTTP/1.1 and
//! optional TLS in front of [`Emulator::handle`], and refuses, before anything else, a
//! call from a source outside the optional IP whitelist ([`source`]). [`cli`] is the
//! command line both binaries share.

mod auth;
pub mod cli;
mod clock;
mod input;
mod ledger;
mod reply;
mod route;
mod secret;
mod server;
mod source;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use ledger::Ledger;
use reply::Outcome;
use route::{Endpoint, Route, Version};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use secret::Secret;
pub use source::SourceNet;

/// The channel of `linepay-sidecar demo` and the emulator's default. Not a real LINE Pay
/// channel.
pub const DEMO_CHANNEL_ID: &str = "1234567890";
pub const DEMO_CHANNEL_SECRET: &str = "demo-secret-not-a-real-linepay-channel";

/// The merchant channel the emulator accepts calls for.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub channel_id: String,
    pub channel_secret: Secret,
    /// The server IP whitelist of LINE Pay's merchant center: when not empty, a call
    /// from any other source address is refused as LINE Pay refuses it.
    pub allow_sources: Vec<SourceNet>,
}

impl EmulatorConfig {
    /// A channel, accepting calls from every source.
    pub fn new(channel_id: impl Into<String>, channel_secret: Secret) -> Self {
        EmulatorConfig {
            channel_id: channel_id.into(),
            channel_secret,
            allow_sources: Vec::new(),
        }
    }
}

/// A LINE Pay emulator. Clones share the same state.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

struct Shared {
    config: EmulatorConfig,
    /// Held only for the synchronous ledger call, never across an await.
    ledger: Mutex<Ledger>,
    calls: AtomicU64,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("channel_id", &self.shared.config.channel_id)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        Emulator {
            shared: Arc::new(Shared {
                config,
                ledger: Mutex::new(Ledger::new(clock::now())),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// Answers one call: method, path, raw query (without '?', `None` if absent),
    /// headers and the exact body bytes → a JSON response.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<Bytes> {
        self.count_call();
        let Some(route) = route::route(method, path) else {
            tracing::debug!(%method, path, "emulator: not a LINE Pay API path");
            return reply::not_found(method, path);
        };
        let outcome = self.answer(&route, method, path, query, headers, body);
        // Info level on purpose: `linepay-sidecar demo` shows each signed call as the
        // emulator received it. Never the v2 secret header.
        let received = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let (channel_id, nonce, signature) = (
            received("x-line-channelid"),
            received("x-line-authorization-nonce"),
            received("x-line-authorization"),
        );
        match &outcome {
            Ok(answer) => tracing::info!(
                %method, path, channel_id, nonce, signature,
                return_code = answer.code.code(),
                "emulator: signature verified, answered"
            ),
            Err(refusal) => tracing::info!(
                %method, path, channel_id, nonce, signature,
                return_code = refusal.code.code(),
                detail = %refusal.detail,
                "emulator: refused"
            ),
        }
        reply::business(route.version, &outcome)
    }

    /// Whether a connection from `address` may call (always, without a whitelist).
    pub fn source_allowed(&self, address: IpAddr) -> bool {
        let allowed = &self.shared.config.allow_sources;
        allowed.is_empty() || allowed.iter().any(|net| net.contains(address))
    }

    /// How many requests reached the emulator (any path, any outcome).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    fn count_call(&self) {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn answer(
        &self,
        route: &Route,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Outcome {
        let config = &self.shared.config;
        match route.version {
            Version::V3 => {
                // GET signs the raw query, POST the body: exactly the bytes received.
                let payload = if method == Method::GET {
                    query.unwrap_or("").as_bytes()
                } else {
                    body
                };
                auth::verify_v3(config, path, payload, headers)?;
            }
            Version::V2 => auth::verify_v2(config, headers)?,
        }

        let version = route.version;
        let now = clock::now();
        // Inputs are parsed before the lock is taken; the ledger call itself is short.
        match &route.endpoint {
            Endpoint::Request => {
                let request = input::payment_request(version, body)?;
                self.ledger().request(request, now)
            }
            Endpoint::Confirm(id) => {
                let check = input::amount_check(version, body)?;
                self.ledger().confirm(*id, &check, now)
            }
            Endpoint::Capture(id) => {
                let check = input::amount_check(version, body)?;
                self.ledger().capture(*id, &check)
            }
            Endpoint::Void(id) => {
                input::no_parameters(body)?;
                self.ledger().void(*id)
            }
            Endpoint::Refund(id) => {
                let amount = input::refund(version, body)?;
                self.ledger().refund(*id, amount, now)
            }
            Endpoint::Details => {
                let query = input::details_query(query)?;
                self.ledger().details(&query, false)
            }
            Endpoint::Authorizations => {
                let query = input::details_query(query)?;
                self.ledger().details(&query, true)
            }
            Endpoint::Check(id) => self.ledger().check(*id),
            Endpoint::PreapprovedPayment(reg_key) => {
                let payment = input::preapproved_payment(version, body)?;
                self.ledger().pay_preapproved(reg_key, payment, now)
            }
            Endpoint::RegKeyCheck(reg_key) => {
                input::reg_key_check_query(query)?;
                self.ledger().check_reg_key(reg_key)
            }
            Endpoint::RegKeyExpire(reg_key) => {
                input::no_parameters(body)?;
                self.ledger().expire_reg_key(reg_key)
            }
        }
    }

    /// The ledger; a poisoned lock (a panic elsewhere while holding it) still holds
    /// consistent data, since every ledger method checks before it mutates.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.shared
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
