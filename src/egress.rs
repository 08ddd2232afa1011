//! Egress policy: the source address, forward proxy and upstream IPs that LINE Pay calls
//! leave through, so that they come from the one address in LINE Pay's IP whitelist and
//! go only where the operator said.
//!
//! Pure data here; the `egress:` section is read and checked by `crate::config`, the
//! mechanism is in [`crate::upstream`] (its connection stack) and the running check in
//! [`crate::expect_ip`]:
//! - [`EgressConfig`] is what the connection stack dials by;
//! - whether this host holds the `bind_address` is I/O, so the runtime checks it
//!   (`crate::runtime`'s preflight) whenever it builds the upstream client;
//! - [`ExpectIpConfig`] says which public address calls must leave from and which echo
//!   service to ask; [`crate::expect_ip::ExpectIpCheck`] does the asking.
//!
//! The three patterns combine: a bound source address is used for every connection the
//! sidecar opens (to LINE Pay, or to the proxy); a proxy carries the TLS connection to
//! LINE Pay end to end through an HTTP CONNECT tunnel; a pin replaces DNS for the
//! upstream host only (and, through a proxy, becomes the CONNECT target), while SNI and
//! the certificate check keep the host name of `upstream.url`.

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::HeaderValue;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------
// Validated settings.

/// Validated egress settings; the default sends calls the host's default way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EgressConfig {
    /// Every upstream (or proxy) connection is bound to this source address, and only
    /// addresses of its family are dialled.
    pub(crate) bind_address: Option<IpAddr>,
    pub(crate) proxy: Option<ProxyConfig>,
    /// When not empty, the upstream host resolves to these addresses only, in order.
    pub(crate) pin: Vec<IpAddr>,
    pub(crate) expect_ip: Option<ExpectIpConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyConfig {
    /// `http://host:port` of the CONNECT proxy (never with credentials in it).
    pub(crate) url: http::Uri,
    pub(crate) auth: Option<ProxyAuth>,
}

/// Proxy credentials: `user:password`, redacted in every printout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyAuth {
    credentials: Secret,
    /// Where they came from, for the start-up log (never the value).
    pub(crate) source: String,
    /// The file they were read from, watched for rotation like the channel secret.
    pub(crate) file: PathBuf,
}

impl ProxyAuth {
    /// Credentials read from `file`; `source` says where the file was named.
    pub(crate) fn new(credentials: Secret, source: String, file: PathBuf) -> Self {
        ProxyAuth {
            credentials,
            source,
            file,
        }
    }

    /// The `Proxy-Authorization: Basic ...` value, marked sensitive.
    pub(crate) fn header_value(&self) -> Option<HeaderValue> {
        let encoded = Zeroizing::new(format!(
            "Basic {}",
            BASE64.encode(self.credentials.expose())
        ));
        let mut value = HeaderValue::from_str(&encoded).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpectIpConfig {
    /// The address registered in LINE Pay's whitelist.
    pub(crate) address: IpAddr,
    /// Answers the caller's public address as plain text (`203.0.113.7\n`).
    pub(crate) echo_url: http::Uri,
    pub(crate) timeout: Duration,
}
