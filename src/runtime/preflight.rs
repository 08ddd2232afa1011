//! The start-up check of the bound source address: I/O, so it lives in the runtime, not
//! in the egress policy. It runs whenever the upstream client is built: at start-up, in
//! `check`, and on a reload that changes the client's settings.

use crate::egress::EgressConfig;
use std::net::IpAddr;

/// Why `egress.bind_address` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error("egress.bind_address {address} is not assigned to any interface on this host; LINE Pay's whitelist accepts calls only from the registered address, so the sidecar will not start: assign {address} to an interface (e.g. `ip addr add {address}/32 dev eth0`), or set egress.bind_address / --egress-bind-address to an address this host holds (`ip -brief addr`)")]
    NotOnThisHost { address: IpAddr },
    #[error("egress.bind_address {address}: a socket cannot be bound to it ({reason})")]
    CannotBind { address: IpAddr, reason: String },
}

/// Refuses a `bind_address` that no interface of this host holds: every call would fail
/// to connect, and LINE Pay's whitelist would refuse any other source anyway.
/// Binding a socket is the check (no packet is sent).
pub(crate) fn preflight(config: &EgressConfig) -> Result<(), PreflightError> {
    let Some(address) = config.bind_address else {
        return Ok(());
    };
    match std::net::UdpSocket::bind((address, 0)) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => {
            Err(PreflightError::NotOnThisHost { address })
        }
        Err(error) => Err(PreflightError::CannotBind {
            address,
            reason: error.to_string(),
        }),
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
        let error = preflight(&config).unwrap_err().to_string();
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
