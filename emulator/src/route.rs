//! The emulator's map of the LINE Pay online API: method + path → endpoint.
//!
//! Matching is strict (exact segments, no trailing slash, digits-only transaction ids)
//! so that a proxy which rewrites paths sloppily meets a 404 here, as it would at
//! LINE Pay, instead of a lucky match.

use http::Method;

/// API generation: decides the authentication scheme and the request body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// `/v2/payments/...`: channel id and secret in clear headers, flat request body.
    V2,
    /// `/v3/payments/...`: HMAC-signed headers, `packages` request body.
    V3,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Request,
    Confirm(u64),
    Capture(u64),
    Void(u64),
    Refund(u64),
    Details,
    /// v2 only: the authorisation list (`GET /v2/payments/authorizations`).
    Authorizations,
    Check(u64),
    PreapprovedPayment(String),
    RegKeyCheck(String),
    RegKeyExpire(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub version: Version,
    pub endpoint: Endpoint,
}

/// The endpoint a method and path name, or `None` when they are not in the API.
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    let (version, rest) = if let Some(rest) = path.strip_prefix("/v3/payments") {
        (Version::V3, rest)
    } else if let Some(rest) = path.strip_prefix("/v2/payments") {
        (Version::V2, rest)
    } else {
        return None;
    };
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        // `rest` must continue with '/', else "/v3/paymentsX" would match.
        rest.strip_prefix('/')?.split('/').collect()
    };
    if segments.iter().any(|segment| segment.is_empty()) {
        return None;
    }

    let get = method == Method::GET;
    let post = method == Method::POST;
    let endpoint = match segments.as_slice() {
        [] if get => Endpoint::Details,
        ["request"] if post => Endpoint::Request,
        [id, "confirm"] if post => Endpoint::Confirm(transaction_id(id)?),
        [id, "refund"] if post => Endpoint::Refund(transaction_id(id)?),
        ["authorizations"] if get && version == Version::V2 => Endpoint::Authorizations,
        ["authorizations", id, "capture"] if post => Endpoint::Capture(transaction_id(id)?),
        ["authorizations", id, "void"] if post => Endpoint::Void(transaction_id(id)?),
        ["requests", id, "check"] if get => Endpoint::Check(transaction_id(id)?),
        ["preapprovedPay", key, "payment"] if post => Endpoint::PreapprovedPayment(key.to_string()),
        ["preapprovedPay", key, "check"] if get => Endpoint::RegKeyCheck(key.to_string()),
        ["preapprovedPay", key, "expire"] if post => Endpoint::RegKeyExpire(key.to_string()),
        _ => return None,
    };
    Some(Route { version, endpoint })
}

/// A transaction id in a path: ASCII digits that fit a u64. Anything else is not an
/// API path (so "/v3/payments/abc/confirm" is a 404, not a lookup).
fn transaction_id(segment: &str) -> Option<u64> {
    if segment.is_empty() || !segment.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(endpoint: Endpoint) -> Option<Route> {
        Some(Route {
            version: Version::V3,
            endpoint,
        })
    }

    #[test]
    fn every_v3_online_endpoint_is_routed() {
        let id = 2021121600698709710;
        let cases = [
            (Method::POST, "/v3/payments/request", Endpoint::Request),
            (
                Method::POST,
                "/v3/payments/2021121600698709710/confirm",
                Endpoint::Confirm(id),
            ),
            (
                Method::POST,
                "/v3/payments/authorizations/2021121600698709710/capture",
                Endpoint::Capture(id),
            ),
            (
                Method::POST,
                "/v3/payments/authorizations/2021121600698709710/void",
                Endpoint::Void(id),
            ),
            (
                Method::POST,
                "/v3/payments/2021121600698709710/refund",
                Endpoint::Refund(id),
            ),
            (Method::GET, "/v3/payments", Endpoint::Details),
            (
                Method::GET,
                "/v3/payments/requests/2021121600698709710/check",
                Endpoint::Check(id),
            ),
            (
                Method::POST,
                "/v3/payments/preapprovedPay/RK9E5H1MZQ8ABCD/payment",
                Endpoint::PreapprovedPayment("RK9E5H1MZQ8ABCD".into()),
            ),
            (
                Method::GET,
                "/v3/payments/preapprovedPay/RK9E5H1MZQ8ABCD/check",
                Endpoint::RegKeyCheck("RK9E5H1MZQ8ABCD".into()),
            ),
            (
                Method::POST,
                "/v3/payments/preapprovedPay/RK9E5H1MZQ8ABCD/expire",
                Endpoint::RegKeyExpire("RK9E5H1MZQ8ABCD".into()),
            ),
        ];
        for (method, path, endpoint) in cases {
            assert_eq!(route(&method, path), v3(endpoint), "{method} {path}");
        }
    }

    #[test]
    fn v2_paths_route_with_their_version() {
        assert_eq!(
            route(&Method::POST, "/v2/payments/request"),
            Some(Route {
                version: Version::V2,
                endpoint: Endpoint::Request
            })
        );
        assert_eq!(
            route(&Method::GET, "/v2/payments/authorizations").map(|r| r.endpoint),
            Some(Endpoint::Authorizations)
        );
        // The authorisation list is a v2 API only.
        assert_eq!(route(&Method::GET, "/v3/payments/authorizations"), None);
    }

    #[test]
    fn near_misses_are_not_routes() {
        let misses = [
            (Method::GET, "/v3/payments/request"),
            (Method::POST, "/v3/payments"),
            (Method::POST, "/v3/payments/request/"),
            (Method::POST, "/v3/paymentsrequest"),
            (Method::POST, "/v3/payments//request"),
            (Method::POST, "/v3/payments/abc/confirm"),
            (Method::POST, "/v3/payments/-1/confirm"),
            (Method::POST, "/v3/payments/99999999999999999999999/confirm"),
            (Method::PUT, "/v3/payments/1/refund"),
            (Method::POST, "/v4/payments/request"),
            (Method::POST, "/v3/payments/preapprovedPay//payment"),
            (Method::GET, "/"),
        ];
        for (method, path) in misses {
            assert_eq!(route(&method, path), None, "{method} {path}");
        }
    }
}
