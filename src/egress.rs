//! Egress policy: the source address, forward proxy and upstream IPs that LINE Pay calls
//! leave through, so that they come from the one address in LINE Pay's IP whitelist and
//! go only where the operator said.
//!
//! Pure data here; the `egress:` section is read and checked by `crate::config`, the
//! mechanism is in [`crate::upstream`] (its connection stack) and the running check in
//! [`crate::expect_ip`]:
//! - [`EgressConfig`] is what the connection stack dials by;
//! - [`preflight`] refuses a `bind_address` the host does not own (the upstream client
//!   runs it whenever it is built: at start-up, in `check`, and on a reload that
//!   changes the upstream or egress settings);
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
pub struct EgressConfig {
    /// Every upstream (or proxy) connection is bound to this source address, and only
    /// addresses of its family are dialled.
    pub bind_address: Option<IpAddr>,
    pub proxy: Option<ProxyConfig>,
    /// When not empty, the upstream host resolves to these addresses only, in order.
    pub pin: Vec<IpAddr>,
    pub expect_ip: Option<ExpectIpConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `http://host:port` of the CONNECT proxy (never with credentials in it).
    pub url: http::Uri,
    pub auth: Option<ProxyAuth>,
}

/// Proxy credentials: `user:password`, redacted in every printout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    credentials: Secret,
    /// Where they came from, for the start-up log (never the value).
    pub source: String,
    /// The file they were read from, watched for rotation like the channel secret.
    pub file: PathBuf,
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
    pub fn header_value(&self) -> Option<HeaderValue> {
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
pub struct ExpectIpConfig {
    /// The address registered in LINE Pay's whitelist.
    pub address: IpAddr,
    /// Answers the caller's public address as plain text (`203.0.113.7\n`).
    pub echo_url: http::Uri,
    pub timeout: Duration,
}

// ---------------------------------------------------------------------------------------
// Start-up check of the bound source address.

/// Refuses a `bind_address` that no interface of this host holds: every call would fail
/// to connect, and LINE Pay's whitelist would refuse any other source anyway.
/// Binding a socket is the check (no packet is sent).
pub fn preflight(config: &EgressConfig) -> Result<(), String> {
    let Some(address) = config.bind_address else {
        return Ok(());
    };
    match std::net::UdpSocket::bind((address, 0)) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => Err(format!(
            "egress.bind_address {address} is not assigned to any interface on this host; LINE Pay's whitelist accepts calls only from the registered address, so the sidecar will not start: assign {address} to an interface (e.g. `ip addr add {address}/32 dev eth0`), or set egress.bind_address / --egress-bind-address to an address this host holds (`ip -brief addr`)"
        )),
        Err(error) => Err(format!(
            "egress.bind_address {address}: a socket cannot be bound to it ({error})"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn preflight_refuses_an_address_this_host_does_not_hold() {
        let config = EgressConfig {
            bind_address: Some("203.0.113.7".parse().unwrap()),
            ..EgressConfig::default()
        };
        let error = preflight(&config).unwrap_err();
        assert!(
            error.contains("egress.bind_address 203.0.113.7 is not assigned to any interface"),
            "{error}"
        );
        assert!(error.contains("whitelist"), "{error}");
        let local = EgressConfig {
            bind_address: Some("127.0.0.2".parse().unwrap()),
            ..EgressConfig::default()
        };
        assert_eq!(preflight(&local), Ok(()));
        assert_eq!(preflight(&EgressConfig::default()), Ok(()));
    }
}
