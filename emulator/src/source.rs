//! The emulator's server IP whitelist: `IP/mask` ranges, as LINE Pay's merchant center
//! takes them, so that a merchant can rehearse its egress set-up locally
//! (`linepay-emulator --allow-source 127.0.0.2/32`, or the same flags after
//! `linepay-sidecar emulator`).

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A range of source addresses: `203.0.113.7/32`, `198.51.100.0/24`, `2001:db8::/64`;
/// a bare address means just that address. The matching is the ipnet crate's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceNet(IpNet);

impl SourceNet {
    /// Whether `address` is in the range. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`,
    /// what a dual-stack listener reports) counts as its IPv4 address.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }
}

impl FromStr for SourceNet {
    type Err = String;

    fn from_str(text: &str) -> Result<SourceNet, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an address range such as 127.0.0.2/32"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take `+24`.
            Some(prefix) => prefix
                .bytes()
                .all(|byte| byte.is_ascii_digit())
                .then(|| prefix.parse::<u8>().ok())
                .flatten()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("`{text}`: the mask must be a number from 0 to {max}"))?,
        };
        let net = IpNet::new(network, prefix)
            .map_err(|_| format!("`{text}`: the mask must be a number from 0 to {max}"))?;
        // `10.0.0.5/24` is ambiguous (one address, or the /24?): say which was meant.
        let masked = net.trunc();
        if masked != net {
            return Err(format!(
                "`{text}` has host bits set: write {masked} for the range, or {network}/{max} for the one address"
            ));
        }
        Ok(SourceNet(net))
    }
}

impl fmt::Display for SourceNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(text: &str) -> SourceNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_slash_32_holds_one_address() {
        let only = net("127.0.0.2/32");
        assert!(only.contains(ip("127.0.0.2")));
        assert!(!only.contains(ip("127.0.0.1")));
        assert!(!only.contains(ip("127.0.0.3")));
        assert_eq!(net("127.0.0.2"), only);
    }

    #[test]
    fn a_slash_24_holds_its_range() {
        let range = net("198.51.100.0/24");
        assert!(range.contains(ip("198.51.100.0")));
        assert!(range.contains(ip("198.51.100.255")));
        assert!(!range.contains(ip("198.51.101.0")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.7")));
    }

    #[test]
    fn mapped_ipv6_peers_count_as_ipv4_and_families_never_mix() {
        assert!(net("127.0.0.2/32").contains(ip("::ffff:127.0.0.2")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::")));
        assert!(!net("::/0").contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_ranges_are_refused_with_what_to_write() {
        let error = "127.0.0.2/24".parse::<SourceNet>().unwrap_err();
        assert!(error.contains("127.0.0.0/24"), "{error}");
        assert!(error.contains("127.0.0.2/32"), "{error}");
        assert!("127.0.0.2/33".parse::<SourceNet>().is_err());
        assert!("localhost/32".parse::<SourceNet>().is_err());
        assert!("127.0.0.2/".parse::<SourceNet>().is_err());
        assert!("127.0.0.0/+8".parse::<SourceNet>().is_err());
        let error = "10.0.0.0/33".parse::<SourceNet>().unwrap_err();
        assert_eq!(
            error,
            "`10.0.0.0/33`: the mask must be a number from 0 to 32"
        );
        assert_eq!(net("2001:db8::/32").to_string(), "2001:db8::/32");
    }
}
