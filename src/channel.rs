//! Which LINE Pay channel a call is made as, and what that channel brings to the call.
//!
//! Selection ([`select`]) is pure: a call on a channel's own `listen` port is that
//! channel's; on the shared `listen` port, the header `X-LinePay-Channel: NAME` names it,
//! and without the header the `default_channel` (or the only channel) takes it. Never a
//! fallback past that: no header and no default is `400 channel_required`, a name that
//! is not configured `400 unknown_channel` (whose answer names no channel), and on a
//! channel's own port a header naming another channel `400 channel_mismatch` (the app
//! and the port disagree: which secret it meant is unknowable, so nothing is signed).
//! The header is the sidecar's: it is never forwarded to LINE Pay.
//!
//! A [`Channel`] is one channel's part of a configuration snapshot: its credentials and
//! signer (its secret only), its allowlist, its upstream client, its journal seal and
//! its bucket. The request path (`proxy.rs`) takes the selected one down every phase.

use crate::config::ChannelConfig;
use crate::error::ProxyError;
use crate::journal::Seal;
use crate::limit::ChannelLimiter;
use crate::metrics::ChannelSeries;
use crate::sign::Signer;
use crate::upstream::Upstream;
use http::{HeaderMap, HeaderName};
use std::sync::Arc;

/// The header that names a call's channel on the shared port.
pub(crate) const CHANNEL_HEADER: HeaderName = HeaderName::from_static("x-linepay-channel");

/// The listener a call arrived on, as a request extension: the shared `listen` (`None`)
/// or a channel's own (its name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listener(pub(crate) Option<Arc<str>>);

/// Why no channel was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The shared port, no header, no `default_channel`.
    Required,
    /// The header names no configured channel (or is repeated, or not text).
    Unknown,
    /// A channel's own port, and the header names another channel.
    Mismatch,
}

/// No channel selected: answered 400 before anything is read or signed. (Here, not in
/// `crate::error`, which the channel's journal seal already depends on.)
impl From<Refusal> for ProxyError {
    fn from(refusal: Refusal) -> ProxyError {
        match refusal {
            Refusal::Required => ProxyError::ChannelRequired,
            Refusal::Unknown => ProxyError::UnknownChannel,
            Refusal::Mismatch => ProxyError::ChannelMismatch,
        }
    }
}

/// The channel of a call: `names` are the configured channels in order; the answer is
/// an index into them.
pub(crate) fn select<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
    default: Option<&str>,
    listener: &Listener,
    headers: &HeaderMap,
) -> Result<usize, Refusal> {
    let position = |wanted: &str| names.clone().position(|name| name == wanted);
    let mut values = headers.get_all(CHANNEL_HEADER).iter();
    let named = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => Some(value.to_str().map_err(|_| Refusal::Unknown)?.trim()),
        // Two headers: which one the app meant is a guess.
        (Some(_), Some(_)) => return Err(Refusal::Unknown),
    };
    match (&listener.0, named) {
        (Some(own), None) => position(own).ok_or(Refusal::Unknown),
        (Some(own), Some(named)) if named == &**own => position(own).ok_or(Refusal::Unknown),
        (Some(_), Some(_)) => Err(Refusal::Mismatch),
        (None, Some(named)) => position(named).ok_or(Refusal::Unknown),
        (None, None) => default.and_then(position).ok_or(Refusal::Required),
    }
}

/// One channel's part of a snapshot.
pub(crate) struct Channel {
    /// The config's name: the `channel` label and log field.
    pub(crate) name: Arc<str>,
    pub(crate) config: ChannelConfig,
    /// Keyed with this channel's secret only.
    pub(crate) signer: Signer,
    /// Seals this channel's stored answers with keys derived from its secret.
    pub(crate) seal: Seal,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) limiter: Option<Arc<ChannelLimiter>>,
    /// `sandbox`, `production` or `other`.
    pub(crate) environment: &'static str,
    /// The metric series its calls count, kept once resolved.
    pub(crate) series: ChannelSeries,
}

impl Channel {
    pub(crate) fn new(
        config: ChannelConfig,
        upstream: Arc<Upstream>,
        limiter: Option<Arc<ChannelLimiter>>,
    ) -> Channel {
        Channel {
            name: config.name.as_str().into(),
            signer: Signer::new(&config.credentials.channel_secret),
            seal: Seal::new(&config.credentials.channel_secret),
            environment: config.environment(),
            series: ChannelSeries::new(config.allowlist.routes().len()),
            config,
            upstream,
            limiter,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NAMES: [&str; 3] = ["pos", "web", "tw"];

    fn pick(
        default: Option<&str>,
        listener: Option<&str>,
        header: &[&str],
    ) -> Result<usize, Refusal> {
        let mut headers = HeaderMap::new();
        for value in header {
            headers.append(CHANNEL_HEADER, value.parse().unwrap());
        }
        select(
            NAMES.iter().copied(),
            default,
            &Listener(listener.map(Arc::from)),
            &headers,
        )
    }

    #[test]
    fn the_shared_port_picks_by_header() {
        assert_eq!(pick(None, None, &["web"]), Ok(1));
        assert_eq!(pick(Some("pos"), None, &["tw"]), Ok(2));
        assert_eq!(pick(None, None, &[" web "]), Ok(1));
    }

    #[test]
    fn the_shared_port_without_header_needs_a_default() {
        assert_eq!(pick(None, None, &[]), Err(Refusal::Required));
        assert_eq!(pick(Some("web"), None, &[]), Ok(1));
        assert_eq!(pick(Some("gone"), None, &[]), Err(Refusal::Required));
    }

    #[test]
    fn an_unknown_repeated_or_differently_cased_name_is_refused() {
        assert_eq!(pick(Some("web"), None, &["shop"]), Err(Refusal::Unknown));
        assert_eq!(pick(Some("web"), None, &["WEB"]), Err(Refusal::Unknown));
        assert_eq!(pick(None, None, &["web", "web"]), Err(Refusal::Unknown));
        assert_eq!(pick(None, None, &[""]), Err(Refusal::Unknown));
        let mut headers = HeaderMap::new();
        headers.insert(
            CHANNEL_HEADER,
            http::HeaderValue::from_bytes(b"w\xffb").unwrap(),
        );
        let chosen = select(
            NAMES.iter().copied(),
            Some("web"),
            &Listener::default(),
            &headers,
        );
        assert_eq!(chosen, Err(Refusal::Unknown));
    }

    #[test]
    fn a_channel_port_is_its_channel_and_refuses_another_name() {
        assert_eq!(pick(None, Some("pos"), &[]), Ok(0));
        assert_eq!(pick(Some("web"), Some("pos"), &[]), Ok(0));
        assert_eq!(pick(None, Some("pos"), &["pos"]), Ok(0));
        assert_eq!(
            pick(Some("pos"), Some("pos"), &["web"]),
            Err(Refusal::Mismatch)
        );
        assert_eq!(pick(None, Some("pos"), &["nope"]), Err(Refusal::Mismatch));
        assert_eq!(
            pick(None, Some("pos"), &["pos", "pos"]),
            Err(Refusal::Unknown)
        );
    }
}
