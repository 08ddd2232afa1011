//! linepay-sidecar: a localhost reverse proxy that signs LINE Pay API calls.
//!
//! # Layout
//! The modules in the order a call travels through them:
//! - [`config`]: YAML + environment + flags, validated into one typed `Config`.
//! - [`secret`]: the channel secret, redacted in every printout.
//! - [`route`]: the allowlist of method + path templates, strict path matching.
//! - `channel`: which LINE Pay channel a call is made as (its port, or the
//!   `X-LinePay-Channel` header), and that channel's signer, allowlist and upstream.
//! - [`proxy`]: the request path: route → limit → read body → sign → forward → respond.
//! - `budget`: the global budget of bytes calls hold in memory (`503 overloaded` past it).
//! - `forward`: which of the app's headers travel on to LINE Pay (an allowlist).
//! - [`money`]: which routes move money; how LINE Pay's records judge an uncertain call.
//! - [`journal`]: money calls on record: one per transaction at a time, idempotency
//!   keys, the intent and outcome on disk, reconciliation, the drain's hold.
//! - [`limit`]: rate limits and the check-status polling discipline, checked before the
//!   body is read.
//! - `state`: where guarantees shared by several sidecars of a channel live: this
//!   process (`local`) or one Redis (`redis`), with its client.
//! - [`validate`]: pre-validation of the body against LINE Pay's documented fields, after
//!   it is read and before it is signed.
//! - [`sign`]: LINE Pay v3 HMAC signing, pure and streamed.
//! - [`upstream`]: the egress client: rustls, pooled keep-alive connections, timeouts,
//!   and under it the connection stack (resolver, bound TCP, CONNECT tunnel, TLS).
//! - [`egress`]: the egress policy: source address, forward proxy and DNS pinning for
//!   LINE Pay's IP whitelist, validated.
//! - `expect_ip`: the running check that calls really leave from the whitelisted address.
//! - [`error`]: the sidecar's own refusals, each with a status and a stable code.
//! - [`ids`]: LINE Pay's 19-digit ids written as JSON strings in its answers, on request.
//! - [`inspect`]: reads returnCode, orderId and transactionId for logs and metrics.
//! - [`metrics`]: every Prometheus metric, registered in one place.
//! - `logtext`: numbers and dates as the binary's text log writes them.
//! - `server`: one proxy connection: HTTP/1.1, each call handed to `proxy`.
//! - [`reload`]: where the configuration comes from (file, flags, environment).
//! - `admin`: `/metrics`, `/healthz`, `/readyz` on their own port.
//! - [`runtime`]: the running process: signals, listeners (one accept loop), reloader,
//!   probes, the snapshot a reload may reuse, every task stopped and joined on shutdown.
//!
//! The LINE Pay emulator behind `demo` and the tests is a crate of its own
//! (`emulator/`, `linepay-emulator`), compiled in only with the `demo` feature.

pub(crate) mod admin;
pub(crate) mod budget;
pub(crate) mod channel;
pub mod config;
pub(crate) mod egress;
pub(crate) mod error;
pub(crate) mod expect_ip;
pub(crate) mod forward;
pub mod ids;
pub mod inspect;
pub mod journal;
pub(crate) mod limit;
#[doc(hidden)]
pub mod logtext;
pub(crate) mod metrics;
pub mod money;
pub(crate) mod proxy;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod secret;
pub(crate) mod server;
pub mod sign;
pub(crate) mod state;
pub(crate) mod throttle;
pub(crate) mod timer;
pub(crate) mod upstream;
pub mod validate;
