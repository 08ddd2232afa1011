//! Which of the app's request headers travel on to LINE Pay: an allowlist, not a
//! denylist.
//!
//! A signed call carries only what LINE Pay uses. From the app that is `Accept`,
//! `Accept-Language` and `User-Agent`; the sidecar sets `Content-Type`, the request id
//! and its own `X-LINE-*` headers itself. Everything else is dropped, so a header nobody
//! thought of (`X-HTTP-Method-Override`, `X-Original-URL`, `True-Client-IP`, `Via`,
//! `Content-Encoding`, `Sec-WebSocket-Key`, ...) can never reach LINE Pay, and the app's
//! network stays unrevealed.
//!
//! `request.forward_headers` can only add names to the list, and never a name the
//! built-in safety stands on ([`check_extra`]): credentials, hop-by-hop and framing
//! headers, `Host`, the client-identity headers, method or URL overrides, and every
//! `X-LINE-*`.

use http::header::{self, HeaderMap, HeaderName};

/// The app's headers that always travel on. Names, not strings: this list is walked on
/// every call, and a string would be parsed into a name each time.
pub(crate) const BUILT_IN: [HeaderName; 3] =
    [header::ACCEPT, header::ACCEPT_LANGUAGE, header::USER_AGENT];

/// Headers that describe one hop, never the call (RFC 9110 §7.6.1), plus the
/// non-standard ones that proxies still see: never forwarded to LINE Pay, and removed
/// from its answer.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Names no configuration can forward besides [`HOP_BY_HOP`]: the sidecar sets them,
/// or they carry credentials, reveal the app's network, or would make LINE Pay (or a
/// proxy in front of it) read the call as another one.
const NEVER: &[&str] = &[
    // Framing: the sidecar's own connection decides.
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "expect",
    // LINE Pay's answer must come back uncompressed: the sidecar reads its returnCode.
    "accept-encoding",
    // Credentials the app should not hold or pass on.
    "authorization",
    "cookie",
    // The app's network.
    "forwarded",
    "via",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    // Another method or target than the one signed.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
    // The request id is the sidecar's (a sane one from the app is kept, see proxy).
    "x-request-id",
    // The app's instructions to the sidecar itself (its journal), not LINE Pay's.
    "idempotency-key",
];

/// Prefixes no configuration can forward: LINE Pay's own headers (the sidecar signs
/// and sets them), the forwarding family, and WebSocket handshakes.
/// `x-linepay-` is the sidecar's own family (`X-LinePay-Ids-As-Strings`, the marker of
/// its errors): an instruction to the sidecar, never to LINE Pay.
const NEVER_PREFIXES: &[&str] = &[
    "x-line-",
    "x-linepay-",
    "x-forwarded-",
    "sec-websocket-",
    "proxy-",
];

/// Whether `name` (lower case) is one no configuration may forward.
pub(crate) fn is_never_forwarded(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
        || NEVER.contains(&name)
        || NEVER_PREFIXES
            .iter()
            .any(|prefix| starts_with_folded(name, prefix))
}

/// A `request.forward_headers` entry, checked: a valid header name that the built-in
/// safety does not stand on.
pub(crate) fn check_extra(text: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("`{text}` is not a header name"))?;
    if is_never_forwarded(name.as_str()) {
        return Err(format!(
            "`{name}` is never forwarded to LINE Pay (credentials, hop-by-hop, the app's network, overrides and X-LINE-* are the sidecar's to decide)"
        ));
    }
    Ok(name)
}

/// The app's headers that travel on: the built-in names and `extra`, minus any that
/// the request's own `Connection` header declares hop-by-hop.
pub(crate) fn forwardable(incoming: &HeaderMap, extra: &[HeaderName]) -> HeaderMap {
    let named_by_connection = connection_named(incoming);
    let mut headers = HeaderMap::with_capacity(BUILT_IN.len() + extra.len() + 6);
    // The built-in names are checked against the safety lists by a test, not per call.
    let built_in = BUILT_IN.iter().map(|name| (name, false));
    // An extra is checked again here, so a name that slipped past the configuration
    // still cannot travel.
    let allowed = built_in.chain(extra.iter().map(|name| (name, true)));
    for (name, check) in allowed {
        if named_by_connection.contains(name) || (check && is_never_forwarded(name.as_str())) {
            continue;
        }
        for value in incoming.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Headers that the `Connection` header declares hop-by-hop; read before anything is
/// removed, since removing `Connection` first would lose the list.
///
/// Names already in [`HOP_BY_HOP`] are left out: both callers drop those anyway, and
/// the usual `Connection: keep-alive` then costs no name parsed and no `Vec` allocated.
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name)))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

/// Some servers read `_` as `-` in header names, so `X_LINE_Authorization` counts as an
/// `X-LINE-*` header. (Names are already lower case.)
fn starts_with_folded(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(n, p)| n == p || (n == b'_' && p == b'-'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_the_allowlist_travels() {
        let incoming = headers(&[
            ("x-line-authorization", "forged"),
            ("x_line_channelid", "999"),
            ("authorization", "Bearer x"),
            ("host", "evil.example"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/v3/payments/1/refund"),
            ("true-client-ip", "10.0.0.1"),
            ("via", "1.1 app"),
            ("content-encoding", "gzip"),
            ("sec-websocket-key", "x"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-custom", "1"),
            ("accept", "application/json"),
            ("accept-language", "zh-TW"),
            ("accept-language", "en"),
            ("user-agent", "shop/1"),
        ]);
        let kept = forwardable(&incoming, &[]);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "accept-language", "user-agent"]);
        assert_eq!(kept.get_all("accept-language").iter().count(), 2);
    }

    #[test]
    fn extra_names_are_added_but_connection_named_ones_are_not() {
        let incoming = headers(&[
            ("x-shop-trace", "t1"),
            ("x-other", "o"),
            ("connection", "user-agent"),
            ("user-agent", "shop/1"),
        ]);
        let extra = [HeaderName::from_static("x-shop-trace")];
        let kept = forwardable(&incoming, &extra);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-shop-trace"]);
    }

    #[test]
    fn the_built_in_safety_cannot_be_configured_away() {
        for refused in [
            "Authorization",
            "X-LINE-Authorization",
            "x_line_channelsecret",
            "X-Forwarded-For",
            "Host",
            "Transfer-Encoding",
            "Proxy-Authorization",
            "Sec-WebSocket-Key",
            "X-HTTP-Method-Override",
            "True-Client-IP",
            "Accept-Encoding",
            "Idempotency-Key",
            "X-LinePay-Ids-As-Strings",
        ] {
            assert!(check_extra(refused).is_err(), "{refused} was accepted");
        }
        assert!(check_extra("bad name").is_err());
        assert_eq!(check_extra(" X-Shop-Trace ").unwrap(), "x-shop-trace");
        // An extra that slipped past the check is still not forwarded.
        let incoming = headers(&[("authorization", "Bearer x")]);
        let kept = forwardable(&incoming, &[header::AUTHORIZATION]);
        assert!(kept.is_empty());
    }

    #[test]
    fn the_built_in_names_pass_the_safety_they_skip_per_call() {
        for name in &BUILT_IN {
            assert!(!is_never_forwarded(name.as_str()), "{name}");
            assert_eq!(check_extra(name.as_str()).unwrap(), name);
        }
    }

    /// The list as it was before hop-by-hop names were skipped, for comparison.
    fn connection_named_unskipped(headers: &HeaderMap) -> Vec<HeaderName> {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect()
    }

    #[test]
    fn connection_named_leaves_out_only_hop_by_hop_names() {
        let cases: &[&[&str]] = &[
            &[],
            &["keep-alive"],
            &["Keep-Alive"],
            &["close"],
            &["keep-alive, x-hop"],
            &[" Upgrade ,X-Trace, te,, Transfer-Encoding"],
            &["keep-alive", "X-Shop-Trace, user-agent"],
            &["bad name, x-ok"],
            &["proxy-connection,PROXY-AUTHORIZATION,trailer,keep-alivex"],
        ];
        for values in cases {
            let mut map = HeaderMap::new();
            for value in *values {
                map.append(header::CONNECTION, HeaderValue::from_str(value).unwrap());
            }
            let expected: Vec<HeaderName> = connection_named_unskipped(&map)
                .into_iter()
                .filter(|name| !HOP_BY_HOP.contains(&name.as_str()))
                .collect();
            assert_eq!(connection_named(&map), expected, "{values:?}");
        }
        let mut map = HeaderMap::new();
        map.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Hop, close, TE"),
        );
        let named = connection_named(&map);
        let names: Vec<&str> = named.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-hop", "close"]);
    }

    #[test]
    fn folded_prefixes_match_underscores_only_where_a_dash_is() {
        assert!(starts_with_folded("x_line_a", "x-line-"));
        assert!(starts_with_folded("x-line-a", "x-line-"));
        assert!(!starts_with_folded("x-lin", "x-line-"));
        assert!(!starts_with_folded("xxline-a", "x-line-"));
        assert!(!starts_with_folded("x-linex", "x-line-"));
    }
}
