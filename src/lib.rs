//! linepay-sidecar: a localhost reverse proxy that signs LINE Pay API calls.
//!
//! # Layout
//! The modules in the order a call travels through them:
//! - [`config`]: YAML + environment + flags, validated into one typed `Config`.
//! - [`secret`]: the channel secret, redacted in every printout.
//! - [`route`]: the allowlist of method + path templates, strict path matching.
//! - [`proxy`]: the request path: route → limit → read body → sign → forward → respond.
//! - [`limit`]: rate limits, checked before the body is read.
//! - [`sign`]: LINE Pay v3 HMAC signing, pure and streamed.
//! - [`upstream`]: the egress client: rustls, pooled keep-alive connections, timeouts.
//! - [`egress`]: source address, forward proxy and DNS pinning for LINE Pay's IP whitelist.
//! - [`error`]: the sidecar's own refusals, each with a status and a stable code.
//! - [`server`]: the listener: accepts connections and hands each call to `proxy`.
//! - [`emulator`]: an in-memory LINE Pay used by `demo` and by the tests.

pub mod config;
pub mod egress;
pub mod emulator;
pub mod error;
pub mod limit;
pub mod proxy;
pub mod route;
pub mod secret;
pub mod server;
pub mod sign;
pub mod upstream;
