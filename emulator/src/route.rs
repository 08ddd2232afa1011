//! The emulator's map of the LINE Pay API: method + path → endpoint, for the online API
//! (v2, v3, v4), `userInfo` (v3, v4) and the offline (POS) API (v2, v4).
//!
//! Matching is strict (exact segments, no trailing slash, digits-only transaction ids)
//! so that a proxy which rewrites paths sloppily meets a 404 here, as it would at
//! LINE Pay, instead of a lucky match. The offline API carries the merchant's own
//! `orderId` in the path, possibly percent-encoded: it is decoded here, and a segment
//! that decodes to something no orderId can be (a `/`, `\`, `.` or `..`, a control
//! character, bytes that are not UTF-8) is not a route.

use http::Method;
use percent_encoding::percent_decode_str;

/// API generation: decides the authentication scheme and the request body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// `/v2/payments/...`: channel id and secret in clear headers, flat request body.
    V2,
    /// `/v3/payments/...`: HMAC-signed headers, `packages` request body.
    V3,
    /// `/v4/payments/...`: the v3 templates and signing under `/v4`, plus the offline
    /// API.
    V4,
}

impl Version {
    /// Whether calls are HMAC-signed (v3, v4) rather than carrying the secret (v2).
    pub(crate) fn signed(self) -> bool {
        !matches!(self, Version::V2)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Request,
    Confirm(u64),
    Capture(u64),
    Void(u64),
    Refund(u64),
    Details,
    /// The authorisation list (`GET /v2|v4/payments/authorizations`).
    Authorizations,
    Check(u64),
    UserInfo(u64),
    PreapprovedPayment(String),
    RegKeyCheck(String),
    RegKeyExpire(String),
    /// Offline: pay with the buyer's one-time (barcode) key.
    OneTimeKeyPay,
    /// Offline: calls on a payment named by the merchant's orderId.
    OrderCheck(String),
    OrderVoid(String),
    OrderCapture(String),
    OrderRefund(String),
}

/// Every endpoint's name, as fault rules and orderId conventions name them.
pub(crate) const ENDPOINT_NAMES: [&str; 17] = [
    "request",
    "confirm",
    "capture",
    "void",
    "refund",
    "details",
    "authorizations",
    "check",
    "userInfo",
    "preapprovedPay",
    "regKeyCheck",
    "regKeyExpire",
    "oneTimeKeyPay",
    "orderCheck",
    "orderVoid",
    "orderCapture",
    "orderRefund",
];

impl Endpoint {
    /// The endpoint's name in [`ENDPOINT_NAMES`].
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Endpoint::Request => "request",
            Endpoint::Confirm(_) => "confirm",
            Endpoint::Capture(_) => "capture",
            Endpoint::Void(_) => "void",
            Endpoint::Refund(_) => "refund",
            Endpoint::Details => "details",
            Endpoint::Authorizations => "authorizations",
            Endpoint::Check(_) => "check",
            Endpoint::UserInfo(_) => "userInfo",
            Endpoint::PreapprovedPayment(_) => "preapprovedPay",
            Endpoint::RegKeyCheck(_) => "regKeyCheck",
            Endpoint::RegKeyExpire(_) => "regKeyExpire",
            Endpoint::OneTimeKeyPay => "oneTimeKeyPay",
            Endpoint::OrderCheck(_) => "orderCheck",
            Endpoint::OrderVoid(_) => "orderVoid",
            Endpoint::OrderCapture(_) => "orderCapture",
            Endpoint::OrderRefund(_) => "orderRefund",
        }
    }

    /// Whether this is the offline (POS) API, whose calls carry device headers.
    pub(crate) fn offline(&self) -> bool {
        matches!(
            self,
            Endpoint::OneTimeKeyPay
                | Endpoint::OrderCheck(_)
                | Endpoint::OrderVoid(_)
                | Endpoint::OrderCapture(_)
                | Endpoint::OrderRefund(_)
                | Endpoint::Authorizations
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub version: Version,
    pub endpoint: Endpoint,
}

/// The endpoint a method and path name, or `None` when they are not in the API.
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    let (version, rest) = if let Some(rest) = path.strip_prefix("/v4/payments") {
        (Version::V4, rest)
    } else if let Some(rest) = path.strip_prefix("/v3/payments") {
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
    // The offline API and the authorisation list exist in v2 and v4, userInfo in v3
    // and v4.
    let offline = version != Version::V3;
    let user_info = version != Version::V2;
    let endpoint = match segments.as_slice() {
        [] if get => Endpoint::Details,
        ["request"] if post => Endpoint::Request,
        [id, "confirm"] if post => Endpoint::Confirm(transaction_id(id)?),
        [id, "refund"] if post => Endpoint::Refund(transaction_id(id)?),
        [id, "userInfo"] if get && user_info => Endpoint::UserInfo(transaction_id(id)?),
        ["authorizations"] if get && offline => Endpoint::Authorizations,
        ["authorizations", id, "capture"] if post => Endpoint::Capture(transaction_id(id)?),
        ["authorizations", id, "void"] if post => Endpoint::Void(transaction_id(id)?),
        ["requests", id, "check"] if get => Endpoint::Check(transaction_id(id)?),
        ["preapprovedPay", key, "payment"] if post => Endpoint::PreapprovedPayment(key.to_string()),
        ["preapprovedPay", key, "check"] if get => Endpoint::RegKeyCheck(key.to_string()),
        ["preapprovedPay", key, "expire"] if post => Endpoint::RegKeyExpire(key.to_string()),
        ["oneTimeKeys", "pay"] if post && offline => Endpoint::OneTimeKeyPay,
        ["orders", order, "check"] if get && offline => Endpoint::OrderCheck(order_id(order)?),
        ["orders", order, "void"] if post && offline => Endpoint::OrderVoid(order_id(order)?),
        ["orders", order, "capture"] if post && offline => Endpoint::OrderCapture(order_id(order)?),
        ["orders", order, "refund"] if post && offline => Endpoint::OrderRefund(order_id(order)?),
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

/// The longest orderId LINE Pay takes, in characters.
pub(crate) const MAX_ORDER_ID_CHARS: usize = 100;

/// The merchant's orderId from one path segment, percent-decoded. `None` for what
/// decodes to a path separator, a dot segment, a control character or bytes that
/// are not UTF-8, and for more than 100 characters.
pub(crate) fn order_id(segment: &str) -> Option<String> {
    let decoded = percent_decode_str(segment).decode_utf8().ok()?;
    let refused = decoded.is_empty()
        || decoded == "."
        || decoded == ".."
        || decoded.chars().count() > MAX_ORDER_ID_CHARS
        || decoded
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    (!refused).then(|| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: Version, endpoint: Endpoint) -> Option<Route> {
        Some(Route { version, endpoint })
    }

    #[test]
    fn every_online_endpoint_is_routed_in_v3_and_v4() {
        let id = 2021121600698709710;
        for (prefix, version) in [("/v3", Version::V3), ("/v4", Version::V4)] {
            let cases = [
                (Method::POST, "/payments/request", Endpoint::Request),
                (
                    Method::POST,
                    "/payments/2021121600698709710/confirm",
                    Endpoint::Confirm(id),
                ),
                (
                    Method::POST,
                    "/payments/authorizations/2021121600698709710/capture",
                    Endpoint::Capture(id),
                ),
                (
                    Method::POST,
                    "/payments/authorizations/2021121600698709710/void",
                    Endpoint::Void(id),
                ),
                (
                    Method::POST,
                    "/payments/2021121600698709710/refund",
                    Endpoint::Refund(id),
                ),
                (Method::GET, "/payments", Endpoint::Details),
                (
                    Method::GET,
                    "/payments/requests/2021121600698709710/check",
                    Endpoint::Check(id),
                ),
                (
                    Method::GET,
                    "/payments/2021121600698709710/userInfo",
                    Endpoint::UserInfo(id),
                ),
                (
                    Method::POST,
                    "/payments/preapprovedPay/RK9E5H1MZQ8ABCD/payment",
                    Endpoint::PreapprovedPayment("RK9E5H1MZQ8ABCD".into()),
                ),
                (
                    Method::GET,
                    "/payments/preapprovedPay/RK9E5H1MZQ8ABCD/check",
                    Endpoint::RegKeyCheck("RK9E5H1MZQ8ABCD".into()),
                ),
                (
                    Method::POST,
                    "/payments/preapprovedPay/RK9E5H1MZQ8ABCD/expire",
                    Endpoint::RegKeyExpire("RK9E5H1MZQ8ABCD".into()),
                ),
            ];
            for (method, path, endpoint) in cases {
                let path = format!("{prefix}{path}");
                assert_eq!(
                    route(&method, &path),
                    at(version, endpoint),
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn the_offline_api_is_routed_in_v2_and_v4_only() {
        for (prefix, version) in [("/v2", Version::V2), ("/v4", Version::V4)] {
            let cases = [
                (
                    Method::POST,
                    "/payments/oneTimeKeys/pay",
                    Endpoint::OneTimeKeyPay,
                ),
                (
                    Method::GET,
                    "/payments/orders/POS-1/check",
                    Endpoint::OrderCheck("POS-1".into()),
                ),
                (
                    Method::POST,
                    "/payments/orders/POS-1/void",
                    Endpoint::OrderVoid("POS-1".into()),
                ),
                (
                    Method::POST,
                    "/payments/orders/POS-1/capture",
                    Endpoint::OrderCapture("POS-1".into()),
                ),
                (
                    Method::POST,
                    "/payments/orders/POS-1/refund",
                    Endpoint::OrderRefund("POS-1".into()),
                ),
                (
                    Method::GET,
                    "/payments/authorizations",
                    Endpoint::Authorizations,
                ),
            ];
            for (method, path, endpoint) in cases {
                let path = format!("{prefix}{path}");
                assert_eq!(
                    route(&method, &path),
                    at(version, endpoint),
                    "{method} {path}"
                );
                assert_eq!(
                    route(&method, &path.replacen(prefix, "/v3", 1)),
                    None,
                    "{path}"
                );
            }
        }
        assert_eq!(route(&Method::GET, "/v2/payments/1/userInfo"), None);
    }

    #[test]
    fn offline_order_ids_are_percent_decoded_within_their_segment() {
        let route_of = |path: &str| route(&Method::GET, path).map(|route| route.endpoint);
        assert_eq!(
            route_of("/v4/payments/orders/A%20B%2B1%E6%B8%AC/check"),
            Some(Endpoint::OrderCheck("A B+1測".into()))
        );
        assert_eq!(
            route_of("/v4/payments/orders/a.b..c/check"),
            Some(Endpoint::OrderCheck("a.b..c".into()))
        );
        for refused in [
            "/v4/payments/orders/a%2Fb/check",
            "/v4/payments/orders/a%2fb/check",
            "/v4/payments/orders/a%5Cb/check",
            "/v4/payments/orders/./check",
            "/v4/payments/orders/%2E%2E/check",
            "/v4/payments/orders/%2e/check",
            "/v4/payments/orders/a%00b/check",
            "/v4/payments/orders/a%0Ab/check",
            "/v4/payments/orders/a%7Fb/check",
            "/v4/payments/orders/a%C2%85b/check",
            "/v4/payments/orders/%FF/check",
            "/v4/payments/orders/%E6%B8/check",
            "/v4/payments/orders/a/b/check",
        ] {
            assert_eq!(route_of(refused), None, "{refused}");
        }
        let longest = "x".repeat(100);
        assert!(route_of(&format!("/v4/payments/orders/{longest}/check")).is_some());
        assert!(route_of(&format!("/v4/payments/orders/{longest}x/check")).is_none());
        // 100 characters, not bytes: each 測 is three encoded bytes.
        let wide = "%E6%B8%AC".repeat(100);
        assert!(route_of(&format!("/v4/payments/orders/{wide}/check")).is_some());
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
            (Method::POST, "/v5/payments/request"),
            (Method::POST, "/v3/payments/preapprovedPay//payment"),
            (Method::GET, "/v3/payments/authorizations"),
            (Method::POST, "/v4/payments/1/userInfo"),
            (Method::GET, "/v4/payments/orders//check"),
            (Method::GET, "/"),
        ];
        for (method, path) in misses {
            assert_eq!(route(&method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn every_endpoint_name_is_listed() {
        let endpoints = [
            Endpoint::Request,
            Endpoint::Confirm(1),
            Endpoint::Capture(1),
            Endpoint::Void(1),
            Endpoint::Refund(1),
            Endpoint::Details,
            Endpoint::Authorizations,
            Endpoint::Check(1),
            Endpoint::UserInfo(1),
            Endpoint::PreapprovedPayment(String::new()),
            Endpoint::RegKeyCheck(String::new()),
            Endpoint::RegKeyExpire(String::new()),
            Endpoint::OneTimeKeyPay,
            Endpoint::OrderCheck(String::new()),
            Endpoint::OrderVoid(String::new()),
            Endpoint::OrderCapture(String::new()),
            Endpoint::OrderRefund(String::new()),
        ];
        let names: Vec<&str> = endpoints.iter().map(Endpoint::name).collect();
        assert_eq!(names, ENDPOINT_NAMES);
    }
}
