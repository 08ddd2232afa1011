//! Name resolution for the upstream connector: the system resolver, time-boxed, and
//! typed errors so a failed lookup is told apart from a refused connection.
//!
//! `egress.pin` is applied here (no DNS at all for the upstream host, no answer for any
//! other name), and so is the family filter of `egress.bind_address` (a socket bound to
//! an IPv4 address cannot dial an IPv6 one, and must not fall back to an unbound one).

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A name lookup failure, typed so that it can be told apart from a refused connection.
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup failed: {0}")]
pub(super) struct DnsError(pub(super) String);

/// The system resolver, time-boxed, with its failures wrapped in [`DnsError`]; with
/// `egress.pin`, no DNS at all for the upstream host and no answer for any other name;
/// with `egress.bind_address`, only addresses of its IP version.
#[derive(Clone)]
pub(super) struct Resolver {
    system: GaiResolver,
    timeout: Duration,
    pinned: Option<Arc<PinnedHost>>,
    /// `Some(true)`: IPv4 only; `Some(false)`: IPv6 only.
    ipv4_only: Option<bool>,
}

/// The one host name the pin answers for, and its addresses (in order).
struct PinnedHost {
    host: String,
    addresses: Vec<IpAddr>,
}

impl PinnedHost {
    fn answers_for(&self, name: &str) -> bool {
        let bare = |text: &str| text.trim_end_matches('.').to_ascii_lowercase();
        bare(name) == bare(&self.host)
    }
}

impl Resolver {
    pub(super) fn new(timeout: Duration) -> Self {
        Resolver {
            system: GaiResolver::new(),
            timeout,
            pinned: None,
            ipv4_only: None,
        }
    }

    /// Resolves `host` to exactly `addresses` (the port comes from the URL), without
    /// DNS, and refuses every other name.
    pub(super) fn pinned(mut self, host: &str, addresses: &[IpAddr]) -> Self {
        self.pinned = Some(Arc::new(PinnedHost {
            host: host.to_owned(),
            addresses: addresses.to_vec(),
        }));
        self
    }

    /// Keeps only addresses of the same IP version as `bind_address` (when set).
    pub(super) fn only_family_of(mut self, bind_address: Option<IpAddr>) -> Self {
        self.ipv4_only = bind_address.map(|address| address.is_ipv4());
        self
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DnsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let mut system = self.system.clone();
        let timeout = self.timeout;
        let pinned = self.pinned.clone();
        let ipv4_only = self.ipv4_only;
        Box::pin(async move {
            let mut addresses: Vec<SocketAddr> = match pinned {
                Some(pin) if pin.answers_for(name.as_str()) => pin
                    .addresses
                    .iter()
                    .map(|address| SocketAddr::new(*address, 0))
                    .collect(),
                Some(pin) => {
                    return Err(DnsError(format!(
                    "`{}` is not the pinned upstream host `{}`: egress.pin resolves only that name",
                    name.as_str(),
                    pin.host
                )))
                }
                None => {
                    let lookup = tower_service::Service::call(&mut system, name.clone());
                    tokio::time::timeout(timeout, lookup)
                        .await
                        .map_err(|_| DnsError(format!("no answer within {timeout:?}")))?
                        .map_err(|error| DnsError(error.to_string()))?
                        .collect()
                }
            };
            if let Some(ipv4) = ipv4_only {
                addresses.retain(|address| address.is_ipv4() == ipv4);
                if addresses.is_empty() {
                    let version = if ipv4 { "IPv4" } else { "IPv6" };
                    return Err(DnsError(format!(
                        "`{}` has no {version} address, and egress.bind_address is {version}",
                        name.as_str()
                    )));
                }
            }
            if addresses.is_empty() {
                return Err(DnsError("no address".to_owned()));
            }
            Ok(addresses.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn resolve(resolver: &mut Resolver, name: &str) -> Result<Vec<SocketAddr>, DnsError> {
        let name: Name = name.parse().map_err(|_| DnsError("bad name".into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| DnsError(error.to_string()))?;
        runtime
            .block_on(tower_service::Service::call(resolver, name))
            .map(Iterator::collect)
    }

    #[test]
    fn pinned_resolver_answers_only_the_pinned_addresses_for_only_the_upstream_host() {
        let pinned: Vec<IpAddr> = vec![
            "127.0.0.3".parse().expect("ip"),
            "127.0.0.4".parse().expect("ip"),
        ];
        let mut resolver = Resolver::new(T).pinned("api-pay.test.invalid", &pinned);
        let answer = resolve(&mut resolver, "API-PAY.test.invalid.").expect("pinned");
        let ips: Vec<IpAddr> = answer.iter().map(SocketAddr::ip).collect();
        assert_eq!(ips, pinned);
        // Port 0: the connector puts the URL's port on each address.
        assert!(answer.iter().all(|address| address.port() == 0));
        let refused = resolve(&mut resolver, "localhost").expect_err("not the pinned host");
        assert!(refused.to_string().contains("egress.pin"), "{refused}");
    }

    #[test]
    fn bind_family_drops_addresses_a_bound_socket_cannot_reach() {
        let pinned: Vec<IpAddr> =
            vec!["::1".parse().expect("ip"), "127.0.0.3".parse().expect("ip")];
        let mut v4 = Resolver::new(T)
            .pinned("h.test", &pinned)
            .only_family_of(Some("127.0.0.2".parse().expect("ip")));
        let answer = resolve(&mut v4, "h.test").expect("an IPv4 address");
        assert_eq!(answer, vec![SocketAddr::from(([127, 0, 0, 3], 0))]);
        let mut v6_only = Resolver::new(T)
            .pinned("h.test", &pinned[..1])
            .only_family_of(Some("127.0.0.2".parse().expect("ip")));
        let error = resolve(&mut v6_only, "h.test").expect_err("no IPv4 address");
        assert!(error.to_string().contains("no IPv4 address"), "{error}");
    }
}
