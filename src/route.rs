//! The allowlist: which method + path templates may reach LINE Pay.
//!
//! Policy only, no I/O. A path is first checked for anything that two parsers could read
//! differently (`..`, `.` segments, percent-encoding, empty segments, backslashes, `;`
//! parameters, control bytes); such a path is refused outright rather than normalised,
//! because a lenient normalisation is exactly what lets `/v3/payments/%2e%2e/x` slip past
//! one layer and mean something else to the next. Only then is it matched, segment by
//! segment, against the templates.

use std::fmt;
use std::time::Duration;

/// One allowed call, e.g. `POST /v3/payments/{transactionId}/refund`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: http::Method,
    pub template: String,
    /// `METHOD template`, computed once: it is compared on every rate-limited call.
    id: String,
    segments: Vec<Segment>,
    /// v2 legacy calls carry the secret in a header instead of an HMAC.
    pub legacy_v2: bool,
    pub timeouts: RouteTimeouts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTimeouts {
    pub connect: Duration,
    pub read: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{0}` must start with `/`")]
    NotAbsolute(String),
    #[error("`{0}` has an empty, `.` or `..` segment")]
    BadSegment(String),
    #[error("`{0}` has a segment with characters outside A-Z a-z 0-9 - _")]
    BadCharacter(String),
    #[error("`{0}` has a `{{` without a matching `}}` or a parameter with no name")]
    BadParam(String),
}

/// Why a request path cannot be matched at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// A `.` or `..` segment, raw or percent-encoded.
    DotSegment,
    /// Any `%`: LINE Pay paths never need percent-encoding, and decoding is where
    /// encoded dots and slashes hide.
    PercentEncoding,
    /// `//`, a trailing `/`, `\`, `;`, or a byte outside printable ASCII.
    Ambiguous,
}

impl PathProblem {
    pub fn describe(self) -> &'static str {
        match self {
            PathProblem::DotSegment => "the path has a `.` or `..` segment",
            PathProblem::PercentEncoding => "the path is percent-encoded",
            PathProblem::Ambiguous => {
                "the path has an empty segment, a backslash, a `;` or a non-printable byte"
            }
        }
    }
}

/// The outcome of matching a method and path against the allowlist.
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a> {
    Allowed(&'a Route),
    /// The path is a known template, but not for this method.
    WrongMethod {
        allowed: Vec<http::Method>,
    },
    Unknown,
    Refused(PathProblem),
}

impl Route {
    pub fn new(
        method: http::Method,
        template: &str,
        timeouts: RouteTimeouts,
    ) -> Result<Route, TemplateError> {
        let segments = parse_template(template)?;
        Ok(Route {
            id: format!("{method} {template}"),
            legacy_v2: template.starts_with("/v2/"),
            method,
            template: template.to_owned(),
            segments,
            timeouts,
        })
    }

    /// The id used in config keys (`routes.timeouts`, `limits.routes`) and the
    /// rate-limit name: `POST /v3/payments/request`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The value of `{name}` in a path this route matched, e.g. the transactionId.
    pub fn param<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        // The path's first segment is the empty one before the leading `/`.
        self.segments
            .iter()
            .zip(path.split('/').skip(1))
            .find(|(segment, _)| matches!(segment, Segment::Param(param) if param == name))
            .map(|(_, value)| value)
    }

    fn matches_path(&self, path_segments: &[&str]) -> bool {
        self.segments.len() == path_segments.len()
            && self
                .segments
                .iter()
                .zip(path_segments)
                .all(|(template, actual)| match template {
                    Segment::Literal(literal) => literal == actual,
                    Segment::Param(_) => is_plain_segment(actual),
                })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

fn parse_template(template: &str) -> Result<Vec<Segment>, TemplateError> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err(TemplateError::NotAbsolute(template.to_owned()));
    };
    rest.split('/')
        .map(|segment| {
            if let Some(inner) = segment.strip_prefix('{') {
                let name = inner
                    .strip_suffix('}')
                    .ok_or_else(|| TemplateError::BadParam(template.to_owned()))?;
                if name.is_empty() || !is_plain_segment(name) {
                    return Err(TemplateError::BadParam(template.to_owned()));
                }
                Ok(Segment::Param(name.to_owned()))
            } else if segment.is_empty() || segment == "." || segment == ".." {
                Err(TemplateError::BadSegment(template.to_owned()))
            } else if segment.contains(['{', '}']) {
                Err(TemplateError::BadParam(template.to_owned()))
            } else if !is_plain_segment(segment) {
                Err(TemplateError::BadCharacter(template.to_owned()))
            } else {
                Ok(Segment::Literal(segment.to_owned()))
            }
        })
        .collect()
}

/// Transaction ids are digits and regKeys are alphanumeric; nothing LINE Pay issues
/// needs more than this, so a parameter may hold nothing more.
fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits a request path into segments, refusing anything ambiguous.
pub fn strict_segments(path: &str) -> Result<Vec<&str>, PathProblem> {
    if path.bytes().any(|b| b == b'%') {
        return Err(PathProblem::PercentEncoding);
    }
    if path
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'\\' || b == b';')
    {
        return Err(PathProblem::Ambiguous);
    }
    let rest = path.strip_prefix('/').ok_or(PathProblem::Ambiguous)?;
    if rest.is_empty() {
        // `/` is a plain path that no template matches.
        return Ok(Vec::new());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(PathProblem::DotSegment);
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(PathProblem::Ambiguous);
    }
    Ok(segments)
}

/// The compiled allowlist. Order matters only for readability: templates are disjoint
/// in the built-in tables, and the first match wins otherwise.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    routes: Vec<Route>,
}

impl Allowlist {
    pub fn new(routes: Vec<Route>) -> Self {
        Allowlist { routes }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn find(&self, method: &http::Method, path: &str) -> Match<'_> {
        let segments = match strict_segments(path) {
            Ok(segments) => segments,
            Err(problem) => return Match::Refused(problem),
        };
        let mut allowed = Vec::new();
        for route in self.routes.iter().filter(|r| r.matches_path(&segments)) {
            if route.method == method {
                return Match::Allowed(route);
            }
            allowed.push(route.method.clone());
        }
        if allowed.is_empty() {
            Match::Unknown
        } else {
            Match::WrongMethod { allowed }
        }
    }
}

/// The routes of a built-in table, each with its documented read timeout unless `read`
/// overrides them all. The tables are constants, checked by the tests below.
pub fn table_routes(
    table: &[(&str, &str, u64)],
    connect: Duration,
    read: Option<Duration>,
) -> Vec<Route> {
    table
        .iter()
        .filter_map(|(method, template, read_secs)| {
            let timeouts = RouteTimeouts {
                connect,
                read: read.unwrap_or(Duration::from_secs(*read_secs)),
            };
            Route::new(
                http::Method::from_bytes(method.as_bytes()).ok()?,
                template,
                timeouts,
            )
            .ok()
        })
        .collect()
}

/// LINE Pay's v3 online API (the reference's table), with LINE Pay's documented read
/// timeouts: 20 s in general, longer for the calls that move money at the card network.
pub const V3_ROUTES: &[(&str, &str, u64)] = &[
    ("POST", "/v3/payments/request", 20),
    ("POST", "/v3/payments/{transactionId}/confirm", 40),
    (
        "POST",
        "/v3/payments/authorizations/{transactionId}/capture",
        60,
    ),
    (
        "POST",
        "/v3/payments/authorizations/{transactionId}/void",
        20,
    ),
    ("POST", "/v3/payments/{transactionId}/refund", 20),
    ("GET", "/v3/payments", 20),
    ("GET", "/v3/payments/requests/{transactionId}/check", 20),
    ("POST", "/v3/payments/preapprovedPay/{regKey}/payment", 40),
    ("GET", "/v3/payments/preapprovedPay/{regKey}/check", 20),
    ("POST", "/v3/payments/preapprovedPay/{regKey}/expire", 20),
];

/// The v2 equivalents still found in old PHP integrations; allowed only when enabled.
pub const V2_ROUTES: &[(&str, &str, u64)] = &[
    ("POST", "/v2/payments/request", 20),
    ("POST", "/v2/payments/{transactionId}/confirm", 40),
    (
        "POST",
        "/v2/payments/authorizations/{transactionId}/capture",
        60,
    ),
    (
        "POST",
        "/v2/payments/authorizations/{transactionId}/void",
        20,
    ),
    ("POST", "/v2/payments/{transactionId}/refund", 20),
    ("GET", "/v2/payments", 20),
    ("GET", "/v2/payments/authorizations", 20),
    ("POST", "/v2/payments/preapprovedPay/{regKey}/payment", 40),
    ("GET", "/v2/payments/preapprovedPay/{regKey}/check", 20),
    ("POST", "/v2/payments/preapprovedPay/{regKey}/expire", 20),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table() -> Allowlist {
        Allowlist::new(table_routes(V3_ROUTES, Duration::from_secs(5), None))
    }

    #[test]
    fn built_in_tables_compile_whole() {
        for table in [V3_ROUTES, V2_ROUTES] {
            let routes = table_routes(table, Duration::from_secs(5), None);
            assert_eq!(routes.len(), table.len());
        }
    }

    fn allowed_template(list: &Allowlist, method: &str, path: &str) -> Option<String> {
        match list.find(&method.parse().unwrap(), path) {
            Match::Allowed(route) => Some(route.template.clone()),
            _ => None,
        }
    }

    #[test]
    fn every_reference_call_is_allowed() {
        let list = table();
        let cases = [
            ("POST", "/v3/payments/request", "/v3/payments/request"),
            (
                "POST",
                "/v3/payments/2021121600698709710/confirm",
                "/v3/payments/{transactionId}/confirm",
            ),
            (
                "POST",
                "/v3/payments/authorizations/2021121600698709710/capture",
                "/v3/payments/authorizations/{transactionId}/capture",
            ),
            ("GET", "/v3/payments", "/v3/payments"),
            (
                "GET",
                "/v3/payments/preapprovedPay/RK9A8B7C6D5E/check",
                "/v3/payments/preapprovedPay/{regKey}/check",
            ),
        ];
        for (method, path, template) in cases {
            assert_eq!(
                allowed_template(&list, method, path).as_deref(),
                Some(template),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn literal_segments_beat_parameters() {
        // `requests` must not be taken for a transactionId in `/v3/payments/{id}/confirm`.
        let list = table();
        assert_eq!(
            list.find(&http::Method::POST, "/v3/payments/requests/123/check"),
            Match::WrongMethod {
                allowed: vec![http::Method::GET]
            }
        );
    }

    #[test]
    fn known_path_wrong_method() {
        let list = table();
        assert_eq!(
            list.find(&http::Method::GET, "/v3/payments/request"),
            Match::WrongMethod {
                allowed: vec![http::Method::POST]
            }
        );
        assert_eq!(
            list.find(&http::Method::DELETE, "/v3/payments/1/refund"),
            Match::WrongMethod {
                allowed: vec![http::Method::POST]
            }
        );
    }

    #[test]
    fn unknown_paths() {
        let list = table();
        for path in [
            "/",
            "/v3",
            "/v3/payments/request/extra",
            "/v3/payments/1/2/confirm",
            "/v1/payments/request",
            "/v2/payments/request",
            "/admin",
        ] {
            assert_eq!(
                list.find(&http::Method::POST, path),
                Match::Unknown,
                "{path}"
            );
        }
    }

    #[test]
    fn ambiguous_paths_are_refused_not_normalised() {
        let list = table();
        let cases = [
            ("/v3/payments/../payments/request", PathProblem::DotSegment),
            ("/v3/./payments/request", PathProblem::DotSegment),
            ("/v3/payments/request/..", PathProblem::DotSegment),
            ("/v3/payments/%2e%2e/request", PathProblem::PercentEncoding),
            ("/v3/payments%2frequest", PathProblem::PercentEncoding),
            ("/v3/payments/%72equest", PathProblem::PercentEncoding),
            ("/v3//payments/request", PathProblem::Ambiguous),
            ("/v3/payments/request/", PathProblem::Ambiguous),
            ("/v3/payments\\request", PathProblem::Ambiguous),
            ("/v3/payments/request;x=1", PathProblem::Ambiguous),
            ("v3/payments/request", PathProblem::Ambiguous),
            ("/v3/payments/req\u{e9}st", PathProblem::Ambiguous),
        ];
        for (path, problem) in cases {
            assert_eq!(
                list.find(&http::Method::POST, path),
                Match::Refused(problem),
                "{path}"
            );
        }
    }

    #[test]
    fn parameters_hold_only_plain_characters() {
        let list = table();
        assert_eq!(
            list.find(&http::Method::POST, "/v3/payments/1.2/confirm"),
            Match::Unknown
        );
        assert_eq!(
            list.find(&http::Method::POST, "/v3/payments/a:b/confirm"),
            Match::Unknown
        );
    }

    #[test]
    fn bad_templates_are_rejected() {
        let t = RouteTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        };
        for bad in [
            "v3/x",
            "/v3//x",
            "/v3/../x",
            "/v3/{}/x",
            "/v3/{id/x",
            "/v3/a{id}",
            "/v3/a b",
        ] {
            assert!(Route::new(http::Method::GET, bad, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_are_read_back_from_the_path() {
        let list = table();
        let path = "/v3/payments/2021121600698709710/refund";
        let Match::Allowed(route) = list.find(&http::Method::POST, path) else {
            panic!("refund is allowed");
        };
        assert_eq!(
            route.param(path, "transactionId"),
            Some("2021121600698709710")
        );
        assert_eq!(route.param(path, "regKey"), None);
    }

    #[test]
    fn v2_routes_are_marked_legacy() {
        let t = RouteTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        };
        assert!(
            Route::new(http::Method::POST, "/v2/payments/request", t)
                .unwrap()
                .legacy_v2
        );
        assert!(
            !Route::new(http::Method::POST, "/v3/payments/request", t)
                .unwrap()
                .legacy_v2
        );
    }
}
