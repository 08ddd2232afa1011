//! The allowlist: which method + path templates may reach LINE Pay, grouped in API
//! families, each route with its family, its signing scheme and its timeouts.
//!
//! Policy only, no I/O. A path is first checked for anything that two parsers could read
//! differently (`..`, `.` segments, empty segments, backslashes, `;` parameters, control
//! bytes); such a path is refused outright rather than normalised, because a lenient
//! normalisation is exactly what lets `/v3/payments/%2e%2e/x` slip past one layer and
//! mean something else to the next. Only then is it matched, segment by segment, against
//! the templates, and each `{parameter}` checked against its rule ([`ParamKind`]).
//!
//! # Percent-encoding
//! A `%` is refused everywhere except inside a parameter declared as a merchant string
//! (the offline API's `{orderId}`, which is the merchant's own text and may need
//! encoding). There each `%XX` must be well formed, and the decoded value must be UTF-8
//! with no `/`, `\`, control character, and not be `.` or `..`: nothing that a server
//! decoding the segment could take for a separator or a step up.
//!
//! # Which form of the path is signed
//! The path exactly as the app sent it on the wire, percent-encoding and all, never a
//! decoded or re-encoded form: LINE Pay computes the HMAC over the request path it
//! receives, and the SDKs sign the same string they put on the request line. The sidecar
//! forwards those same bytes, so what is signed, what is sent and what LINE Pay checks
//! are one string. Decoding `order%2D1` to `order-1` (or re-encoding it differently)
//! before signing would make every such call fail with `1106`.

use percent_encoding::percent_decode_str;
use std::fmt;
use std::time::Duration;

/// A group of LINE Pay endpoints that is enabled or not as a whole (`routes.apis`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiFamily {
    /// The online API v3 (`/v3/payments/...`), HMAC-signed.
    OnlineV3,
    /// The online API v4: the v3 templates under `/v4`, HMAC-signed like v3.
    OnlineV4,
    /// `GET /v3|v4/payments/{transactionId}/userInfo`: the payer's personal data.
    UserInfo,
    /// The offline (POS) API v4, HMAC-signed.
    OfflineV4,
    /// The offline (POS) API v2: the secret itself in `X-LINE-ChannelSecret`.
    OfflineV2,
    /// The online API v2: the secret itself in `X-LINE-ChannelSecret`.
    OnlineV2,
}

/// How a call proves it comes from the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// `X-LINE-Authorization-Nonce` + `X-LINE-Authorization`: HMAC-SHA256 over secret,
    /// path, body or query, nonce (v3, v4, offline v4).
    Hmac,
    /// `X-LINE-ChannelSecret`: the secret itself, no signature (v2 online and offline).
    ChannelSecret,
}

/// One row of a built-in table: method, template, LINE Pay's read timeout in seconds.
pub type TableRoute = (&'static str, &'static str, u64);

impl ApiFamily {
    /// Every family, in the order `routes.apis` lists them in messages and docs.
    pub const ALL: [ApiFamily; 6] = [
        ApiFamily::OnlineV3,
        ApiFamily::OnlineV4,
        ApiFamily::UserInfo,
        ApiFamily::OfflineV4,
        ApiFamily::OfflineV2,
        ApiFamily::OnlineV2,
    ];

    /// The families on when `routes.apis` is not set (and `routes.allow` is not either):
    /// what a current online shop calls, on either SDK generation (v3 or v4), and nothing
    /// else: no personal data, no POS, no secret in a header.
    pub const DEFAULT: [ApiFamily; 2] = [ApiFamily::OnlineV3, ApiFamily::OnlineV4];

    /// The name written in `routes.apis`, the `family` metric label and log field.
    pub fn name(self) -> &'static str {
        match self {
            ApiFamily::OnlineV3 => "online_v3",
            ApiFamily::OnlineV4 => "online_v4",
            ApiFamily::UserInfo => "user_info",
            ApiFamily::OfflineV4 => "offline_v4",
            ApiFamily::OfflineV2 => "offline_v2",
            ApiFamily::OnlineV2 => "online_v2",
        }
    }

    /// The family named `name` in `routes.apis`.
    pub fn from_name(name: &str) -> Option<ApiFamily> {
        ApiFamily::ALL
            .into_iter()
            .find(|family| family.name() == name)
    }

    /// `online_v3, online_v4, ...`: for messages that list the valid names.
    pub fn all_names() -> String {
        ApiFamily::ALL.map(ApiFamily::name).join(", ")
    }

    pub fn signing(self) -> Signing {
        match self {
            ApiFamily::OfflineV2 | ApiFamily::OnlineV2 => Signing::ChannelSecret,
            ApiFamily::OnlineV3
            | ApiFamily::OnlineV4
            | ApiFamily::UserInfo
            | ApiFamily::OfflineV4 => Signing::Hmac,
        }
    }

    /// The family's built-in table.
    pub fn table(self) -> &'static [TableRoute] {
        match self {
            ApiFamily::OnlineV3 => ONLINE_V3_ROUTES,
            ApiFamily::OnlineV4 => ONLINE_V4_ROUTES,
            ApiFamily::UserInfo => USER_INFO_ROUTES,
            ApiFamily::OfflineV4 => OFFLINE_V4_ROUTES,
            ApiFamily::OfflineV2 => OFFLINE_V2_ROUTES,
            ApiFamily::OnlineV2 => ONLINE_V2_ROUTES,
        }
    }
}

impl fmt::Display for ApiFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `family` label of a call that matched a `routes.allow` entry.
pub const CUSTOM_FAMILY: &str = "custom";

/// One allowed call, e.g. `POST /v3/payments/{transactionId}/refund`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: http::Method,
    pub template: String,
    /// `METHOD template`, computed once: it is compared on every rate-limited call.
    id: String,
    segments: Vec<Segment>,
    /// The built-in family the route comes from; `None` for a `routes.allow` entry.
    pub family: Option<ApiFamily>,
    pub signing: Signing,
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
    Param { name: String, kind: ParamKind },
}

/// What a `{parameter}` may hold, decided by its name, in built-in and custom templates
/// alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// `{transactionId}`: 1 to 19 ASCII digits (LINE Pay's ids are 19-digit integers).
    TransactionId,
    /// `{regKey}`: 1 to 15 ASCII letters and digits (LINE Pay documents a 15-character
    /// key, e.g. `RK2AE3519XTFXHM`).
    RegKey,
    /// `{orderId}`: the merchant's own string, at most 100 characters, percent-encoding
    /// allowed inside the segment (see the module doc).
    MerchantString,
    /// Any other name: 1 to 100 ASCII letters, digits, `-` and `_`.
    Plain,
}

/// The most characters of an orderId (LINE Pay's documented maximum).
pub const MAX_ORDER_ID_CHARS: usize = 100;
/// The most bytes of an orderId segment on the wire: 100 characters of up to 4 UTF-8
/// bytes, each written as `%XX`. Anything longer is refused before it is decoded.
const MAX_ORDER_ID_WIRE_BYTES: usize = MAX_ORDER_ID_CHARS * 4 * 3;
const MAX_TRANSACTION_ID_DIGITS: usize = 19;
const MAX_REG_KEY_CHARS: usize = 15;
const MAX_PLAIN_PARAM_CHARS: usize = 100;

impl ParamKind {
    fn for_name(name: &str) -> ParamKind {
        match name {
            "transactionId" => ParamKind::TransactionId,
            "regKey" => ParamKind::RegKey,
            "orderId" => ParamKind::MerchantString,
            _ => ParamKind::Plain,
        }
    }

    /// The rule, as the refusal states it.
    fn rule(self) -> &'static str {
        match self {
            ParamKind::TransactionId => "must be 1 to 19 digits (a LINE Pay transaction id)",
            ParamKind::RegKey => "must be 1 to 15 letters and digits (a LINE Pay regKey)",
            ParamKind::MerchantString => "must be 1 to 100 characters",
            ParamKind::Plain => "must be 1 to 100 letters, digits, `-` or `_`",
        }
    }

    /// Checks one raw path segment; `Err` is the rule it breaks.
    fn check(self, raw: &str) -> Result<(), &'static str> {
        let bounded = |max: usize, allowed: fn(&u8) -> bool| {
            (!raw.is_empty() && raw.len() <= max && raw.bytes().all(|b| allowed(&b)))
                .then_some(())
                .ok_or(self.rule())
        };
        match self {
            ParamKind::TransactionId => bounded(MAX_TRANSACTION_ID_DIGITS, u8::is_ascii_digit),
            ParamKind::RegKey => bounded(MAX_REG_KEY_CHARS, u8::is_ascii_alphanumeric),
            ParamKind::Plain => bounded(MAX_PLAIN_PARAM_CHARS, |b| {
                b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'
            }),
            ParamKind::MerchantString => check_merchant_string(raw),
        }
    }
}

/// Characters a merchant string may carry as they are: RFC 3986's unreserved characters
/// and the sub-delimiters a path segment allows, except `;` (a path parameter to some
/// servers). Everything else must be percent-encoded.
fn is_raw_merchant_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&byte)
}

fn check_merchant_string(raw: &str) -> Result<(), &'static str> {
    if raw.is_empty() || raw.len() > MAX_ORDER_ID_WIRE_BYTES {
        return Err(ParamKind::MerchantString.rule());
    }
    let bytes = raw.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let well_formed = bytes
                    .get(index + 1..index + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
                if !well_formed {
                    return Err("has a `%` that is not followed by two hex digits");
                }
                index += 3;
            }
            byte if is_raw_merchant_byte(byte) => index += 1,
            _ => {
                return Err(
                    "has a character that must be percent-encoded (only letters, digits, `-._~!$&'()*+,=:@` and `%XX` may appear as they are)",
                )
            }
        }
    }
    let decoded: Vec<u8> = percent_decode_str(raw).collect();
    let text = std::str::from_utf8(&decoded).map_err(|_| "must decode to UTF-8 text")?;
    if text.chars().count() > MAX_ORDER_ID_CHARS {
        return Err(ParamKind::MerchantString.rule());
    }
    if text.contains(['/', '\\']) {
        return Err("must not decode to a `/` or `\\`");
    }
    if text == "." || text == ".." {
        return Err("must not decode to `.` or `..`");
    }
    if text.chars().any(char::is_control) {
        return Err("must not decode to a control character");
    }
    Ok(())
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
    /// A `.` or `..` segment.
    DotSegment,
    /// A `%` anywhere but inside a merchant-string parameter: LINE Pay's own paths never
    /// need percent-encoding, and decoding is where encoded dots and slashes hide.
    PercentEncoding,
    /// `//`, a trailing `/`, `\`, `;`, or a byte outside printable ASCII.
    Ambiguous,
}

impl PathProblem {
    pub fn describe(self) -> &'static str {
        match self {
            PathProblem::DotSegment => "the path has a `.` or `..` segment",
            PathProblem::PercentEncoding => {
                "the path is percent-encoded outside an orderId parameter"
            }
            PathProblem::Ambiguous => {
                "the path has an empty segment, a backslash, a `;` or a non-printable byte"
            }
        }
    }
}

/// A path parameter that breaks its rule; the value itself is never kept (it may be
/// huge, or a regKey that can charge a card).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    /// The parameter's name from the template, e.g. `transactionId`.
    pub name: String,
    /// The rule it breaks, e.g. `must be 1 to 19 digits (a LINE Pay transaction id)`.
    pub rule: &'static str,
}

/// The outcome of matching a method and path against the allowlist.
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a> {
    Allowed(&'a Route),
    /// The path is a known template, but not for this method.
    WrongMethod {
        allowed: Vec<http::Method>,
    },
    /// The path has the shape of `route`, but a parameter breaks its rule.
    BadParameter {
        route: &'a Route,
        problem: ParamProblem,
    },
    /// The path is a call of a built-in `family` that is not enabled; `route` is that
    /// family's route (not allowed).
    FamilyDisabled {
        route: &'a Route,
        family: ApiFamily,
    },
    Unknown,
    Refused(PathProblem),
}

impl Route {
    /// A `routes.allow` entry: HMAC-signed, unless its path is under `/v2/`, which sends
    /// the secret in `X-LINE-ChannelSecret` as LINE Pay's v2 API does.
    pub fn new(
        method: http::Method,
        template: &str,
        timeouts: RouteTimeouts,
    ) -> Result<Route, TemplateError> {
        let signing = if template.starts_with("/v2/") {
            Signing::ChannelSecret
        } else {
            Signing::Hmac
        };
        Route::build(method, template, timeouts, None, signing)
    }

    /// A route of a built-in family, signed the family's way.
    pub fn in_family(
        family: ApiFamily,
        method: http::Method,
        template: &str,
        timeouts: RouteTimeouts,
    ) -> Result<Route, TemplateError> {
        Route::build(method, template, timeouts, Some(family), family.signing())
    }

    fn build(
        method: http::Method,
        template: &str,
        timeouts: RouteTimeouts,
        family: Option<ApiFamily>,
        signing: Signing,
    ) -> Result<Route, TemplateError> {
        let segments = parse_template(template)?;
        Ok(Route {
            id: format!("{method} {template}"),
            method,
            template: template.to_owned(),
            segments,
            family,
            signing,
            timeouts,
        })
    }

    /// The id used in config keys (`routes.timeouts`, `limits.routes`) and the
    /// rate-limit name: `POST /v3/payments/request`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `family` metric label and log field: the family's name, or `custom`.
    pub fn family_label(&self) -> &'static str {
        self.family.map_or(CUSTOM_FAMILY, ApiFamily::name)
    }

    /// The value of `{name}` in a path this route matched, as sent (still
    /// percent-encoded), e.g. the transactionId.
    pub fn param<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        // The template is searched first: most routes (`/payments/request`) have no such
        // parameter, and their path is not split at all.
        let index = self.segments.iter().position(
            |segment| matches!(segment, Segment::Param { name: param, .. } if param == name),
        )?;
        // The path's first segment is the empty one before the leading `/`.
        path.split('/').nth(index + 1)
    }

    /// Same number of segments, and every literal equal: the path is a call of this
    /// template, whatever its parameters hold.
    fn matches_shape(&self, path_segments: &[&str]) -> bool {
        self.segments.len() == path_segments.len()
            && self
                .segments
                .iter()
                .zip(path_segments)
                .all(|(template, actual)| match template {
                    Segment::Literal(literal) => literal == actual,
                    Segment::Param { .. } => true,
                })
    }

    /// Whether every `%` of the path sits in a merchant-string parameter of this route.
    fn percent_only_in_merchant_strings(&self, path_segments: &[&str]) -> bool {
        self.segments
            .iter()
            .zip(path_segments)
            .all(|(template, actual)| match template {
                Segment::Param {
                    kind: ParamKind::MerchantString,
                    ..
                } => true,
                _ => !actual.contains('%'),
            })
    }

    /// The first parameter that breaks its rule, if any.
    fn check_params(&self, path_segments: &[&str]) -> Result<(), ParamProblem> {
        for (template, actual) in self.segments.iter().zip(path_segments) {
            if let Segment::Param { name, kind } = template {
                kind.check(actual).map_err(|rule| ParamProblem {
                    name: name.clone(),
                    rule,
                })?;
            }
        }
        Ok(())
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
                Ok(Segment::Param {
                    name: name.to_owned(),
                    kind: ParamKind::for_name(name),
                })
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

/// Literal segments and parameter names of a template: letters, digits, `-` and `_`.
fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits a request path into segments, refusing anything ambiguous. A `%` passes here:
/// whether it may stay depends on the template the path matches ([`Allowlist::find`]).
pub fn strict_segments(path: &str) -> Result<Vec<&str>, PathProblem> {
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

/// The compiled allowlist: the enabled routes, and the routes of the built-in families
/// that are not enabled (so that a call to one is told which config line enables it).
/// Order matters only for readability: templates are disjoint in the built-in tables,
/// and the first match wins otherwise.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    routes: Vec<Route>,
    families: Vec<ApiFamily>,
    disabled: Vec<Route>,
}

impl Allowlist {
    /// Exactly these routes, and no knowledge of the families.
    pub fn new(routes: Vec<Route>) -> Self {
        Allowlist {
            routes,
            families: Vec::new(),
            disabled: Vec::new(),
        }
    }

    /// `custom` routes (from `routes.allow`) plus the routes of `families`. The built-in
    /// routes of every other family are kept aside to name the family a refused call
    /// belongs to. A template listed by two enabled families (payment details, online
    /// and offline; `GET /v2/payments/authorizations`, online and offline v2) is kept
    /// once, under the first family in [`ApiFamily::ALL`] order.
    pub fn with_families(
        custom: Vec<Route>,
        families: &[ApiFamily],
        connect: Duration,
        read: Option<Duration>,
    ) -> Self {
        let mut families: Vec<ApiFamily> = families.to_vec();
        families.sort();
        families.dedup();
        let mut routes = custom;
        let mut disabled: Vec<Route> = Vec::new();
        for family in ApiFamily::ALL {
            for route in family_routes(family, connect, read) {
                if families.contains(&family) {
                    if !routes.iter().any(|r| r.id() == route.id()) {
                        routes.push(route);
                    }
                } else {
                    disabled.push(route);
                }
            }
        }
        disabled.retain(|route| !routes.iter().any(|r| r.id() == route.id()));
        Allowlist {
            routes,
            families,
            disabled,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn routes_mut(&mut self) -> &mut [Route] {
        &mut self.routes
    }

    /// The enabled built-in families, in [`ApiFamily::ALL`] order.
    pub fn families(&self) -> &[ApiFamily] {
        &self.families
    }

    /// `online_v3, online_v4`: the enabled families, for start-up and reload logs.
    pub fn family_names(&self) -> String {
        self.families
            .iter()
            .map(|family| family.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `routes.apis` line that enables `family` on top of what is enabled now.
    pub fn enabling_line(&self, family: ApiFamily) -> String {
        let names: Vec<&str> = ApiFamily::ALL
            .into_iter()
            .filter(|f| *f == family || self.families.contains(f))
            .map(ApiFamily::name)
            .collect();
        format!("routes.apis: [{}]", names.join(", "))
    }

    pub fn find(&self, method: &http::Method, path: &str) -> Match<'_> {
        let segments = match strict_segments(path) {
            Ok(segments) => segments,
            Err(problem) => return Match::Refused(problem),
        };
        let encoded = segments.iter().any(|s| s.contains('%'));
        // A route is a candidate when the path has its shape and any `%` sits in one of
        // its merchant-string parameters: everywhere else a `%` is refused as today.
        let candidate = |route: &&Route| {
            route.matches_shape(&segments)
                && (!encoded || route.percent_only_in_merchant_strings(&segments))
        };
        let mut allowed = Vec::new();
        let mut bad = None;
        for route in self.routes.iter().filter(candidate) {
            if route.method == method {
                match route.check_params(&segments) {
                    Ok(()) => return Match::Allowed(route),
                    Err(problem) => {
                        bad.get_or_insert((route, problem));
                    }
                }
            } else {
                allowed.push(route.method.clone());
            }
        }
        if let Some((route, problem)) = bad {
            return Match::BadParameter { route, problem };
        }
        if !allowed.is_empty() {
            return Match::WrongMethod { allowed };
        }
        let disabled = self.disabled.iter().filter(candidate);
        if let Some((route, family)) = disabled
            .filter_map(|route| Some((route, route.family?)))
            .next()
        {
            return Match::FamilyDisabled { route, family };
        }
        if encoded {
            return Match::Refused(PathProblem::PercentEncoding);
        }
        Match::Unknown
    }
}

/// The routes of one built-in family, each with LINE Pay's documented read timeout
/// unless `read` overrides them all.
pub fn family_routes(family: ApiFamily, connect: Duration, read: Option<Duration>) -> Vec<Route> {
    family
        .table()
        .iter()
        .filter_map(|(method, template, read_secs)| {
            let timeouts = RouteTimeouts {
                connect,
                read: read.unwrap_or(Duration::from_secs(*read_secs)),
            };
            Route::in_family(
                family,
                http::Method::from_bytes(method.as_bytes()).ok()?,
                template,
                timeouts,
            )
            .ok()
        })
        .collect()
}

/// LINE Pay's online API v3 (the reference's table), with LINE Pay's documented read
/// timeouts: 20 s in general, longer for the calls that move money at the card network.
pub const ONLINE_V3_ROUTES: &[TableRoute] = &[
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

/// LINE Pay's online API v4: the v3 table under `/v4`, same timeouts, same signing.
pub const ONLINE_V4_ROUTES: &[TableRoute] = &[
    ("POST", "/v4/payments/request", 20),
    ("POST", "/v4/payments/{transactionId}/confirm", 40),
    (
        "POST",
        "/v4/payments/authorizations/{transactionId}/capture",
        60,
    ),
    (
        "POST",
        "/v4/payments/authorizations/{transactionId}/void",
        20,
    ),
    ("POST", "/v4/payments/{transactionId}/refund", 20),
    ("GET", "/v4/payments", 20),
    ("GET", "/v4/payments/requests/{transactionId}/check", 20),
    ("POST", "/v4/payments/preapprovedPay/{regKey}/payment", 40),
    ("GET", "/v4/payments/preapprovedPay/{regKey}/check", 20),
    ("POST", "/v4/payments/preapprovedPay/{regKey}/expire", 20),
];

/// The payer's information for a transaction, v3 and v4.
pub const USER_INFO_ROUTES: &[TableRoute] = &[
    ("GET", "/v3/payments/{transactionId}/userInfo", 20),
    ("GET", "/v4/payments/{transactionId}/userInfo", 20),
];

/// The offline (POS) API v4. One-time-key pay waits at the card network: 40 s, as the
/// current documentation asks. Payment details (`GET /v4/payments`) is part of the
/// offline API too (the safe move after a timeout is to read them), shared with
/// online v4.
pub const OFFLINE_V4_ROUTES: &[TableRoute] = &[
    ("POST", "/v4/payments/oneTimeKeys/pay", 40),
    ("GET", "/v4/payments/orders/{orderId}/check", 20),
    ("POST", "/v4/payments/orders/{orderId}/void", 20),
    ("POST", "/v4/payments/orders/{orderId}/capture", 20),
    ("POST", "/v4/payments/orders/{orderId}/refund", 20),
    ("GET", "/v4/payments/authorizations", 20),
    ("GET", "/v4/payments", 20),
];

/// The offline (POS) API v2, still in older POS code; payment details shared with
/// online v2. Pay gets 40 s like v4's: the older
/// reference said 20 s, and a read timeout too short for the card network reports a
/// payment as failed that may have gone through.
pub const OFFLINE_V2_ROUTES: &[TableRoute] = &[
    ("POST", "/v2/payments/oneTimeKeys/pay", 40),
    ("GET", "/v2/payments/orders/{orderId}/check", 20),
    ("POST", "/v2/payments/orders/{orderId}/void", 20),
    ("POST", "/v2/payments/orders/{orderId}/capture", 20),
    ("POST", "/v2/payments/orders/{orderId}/refund", 20),
    ("GET", "/v2/payments/authorizations", 20),
    ("GET", "/v2/payments", 20),
];

/// The online API v2 still found in old PHP integrations (`routes.v2_legacy`).
pub const ONLINE_V2_ROUTES: &[TableRoute] = &[
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

    const CONNECT: Duration = Duration::from_secs(5);

    fn table() -> Allowlist {
        Allowlist::with_families(Vec::new(), &ApiFamily::DEFAULT, CONNECT, None)
    }

    fn everything() -> Allowlist {
        Allowlist::with_families(Vec::new(), &ApiFamily::ALL, CONNECT, None)
    }

    #[test]
    fn built_in_tables_compile_whole_and_carry_their_family_and_signing() {
        for family in ApiFamily::ALL {
            let routes = family_routes(family, CONNECT, None);
            assert_eq!(routes.len(), family.table().len(), "{family}");
            for route in routes {
                assert_eq!(route.family, Some(family));
                assert_eq!(route.family_label(), family.name());
                assert_eq!(route.signing, family.signing(), "{route}");
            }
            assert_eq!(ApiFamily::from_name(family.name()), Some(family));
        }
        assert_eq!(ApiFamily::from_name("online_v5"), None);
    }

    #[test]
    fn v2_families_send_the_secret_and_the_others_sign() {
        let signing = |family: ApiFamily| family.signing();
        assert_eq!(signing(ApiFamily::OnlineV2), Signing::ChannelSecret);
        assert_eq!(signing(ApiFamily::OfflineV2), Signing::ChannelSecret);
        for family in [
            ApiFamily::OnlineV3,
            ApiFamily::OnlineV4,
            ApiFamily::UserInfo,
            ApiFamily::OfflineV4,
        ] {
            assert_eq!(signing(family), Signing::Hmac, "{family}");
        }
    }

    #[test]
    fn v4_is_the_v3_table_under_v4_with_the_same_timeouts() {
        assert_eq!(ONLINE_V3_ROUTES.len(), ONLINE_V4_ROUTES.len());
        for ((m3, t3, s3), (m4, t4, s4)) in ONLINE_V3_ROUTES.iter().zip(ONLINE_V4_ROUTES) {
            assert_eq!(m3, m4);
            assert_eq!(t3.replacen("/v3/", "/v4/", 1), *t4);
            assert_eq!(s3, s4);
        }
    }

    /// The reference's read timeouts: request 20 s, confirm 40 s, capture 60 s,
    /// preapproved pay 40 s, offline one-time-key pay 40 s, the rest 20 s.
    #[test]
    fn each_route_has_the_documented_read_timeout() {
        let list = everything();
        for route in list.routes() {
            let t = route.template.as_str();
            let expected = if t.ends_with("/authorizations/{transactionId}/capture") {
                60
            } else if t.ends_with("/{transactionId}/confirm")
                || t.ends_with("/preapprovedPay/{regKey}/payment")
                || t.ends_with("/oneTimeKeys/pay")
            {
                40
            } else {
                20
            };
            assert_eq!(
                route.timeouts.read,
                Duration::from_secs(expected),
                "{route}"
            );
            assert_eq!(route.timeouts.connect, CONNECT, "{route}");
        }
        let read = Some(Duration::from_secs(7));
        for route in family_routes(ApiFamily::OfflineV4, CONNECT, read) {
            assert_eq!(route.timeouts.read, Duration::from_secs(7), "{route}");
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
        let list = everything();
        let cases = [
            ("POST", "/v3/payments/request", "/v3/payments/request"),
            ("POST", "/v4/payments/request", "/v4/payments/request"),
            (
                "POST",
                "/v4/payments/2021121600698709710/confirm",
                "/v4/payments/{transactionId}/confirm",
            ),
            (
                "POST",
                "/v3/payments/authorizations/2021121600698709710/capture",
                "/v3/payments/authorizations/{transactionId}/capture",
            ),
            ("GET", "/v3/payments", "/v3/payments"),
            (
                "GET",
                "/v3/payments/preapprovedPay/RK2AE3519XTFXHM/check",
                "/v3/payments/preapprovedPay/{regKey}/check",
            ),
            (
                "GET",
                "/v4/payments/2021121600698709710/userInfo",
                "/v4/payments/{transactionId}/userInfo",
            ),
            (
                "POST",
                "/v4/payments/oneTimeKeys/pay",
                "/v4/payments/oneTimeKeys/pay",
            ),
            (
                "GET",
                "/v4/payments/orders/POS-2024-0001/check",
                "/v4/payments/orders/{orderId}/check",
            ),
            (
                "POST",
                "/v2/payments/orders/POS-1/refund",
                "/v2/payments/orders/{orderId}/refund",
            ),
            (
                "GET",
                "/v2/payments/authorizations",
                "/v2/payments/authorizations",
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
    fn a_template_in_two_enabled_families_is_kept_once() {
        let list = Allowlist::with_families(
            Vec::new(),
            &[ApiFamily::OnlineV2, ApiFamily::OfflineV2],
            CONNECT,
            None,
        );
        let authorizations: Vec<&Route> = list
            .routes()
            .iter()
            .filter(|r| r.template == "/v2/payments/authorizations")
            .collect();
        assert_eq!(authorizations.len(), 1);
        assert_eq!(authorizations[0].family, Some(ApiFamily::OfflineV2));
        let online_only =
            Allowlist::with_families(Vec::new(), &[ApiFamily::OnlineV2], CONNECT, None);
        assert!(matches!(
            online_only.find(&http::Method::GET, "/v2/payments/authorizations"),
            Match::Allowed(route) if route.family == Some(ApiFamily::OnlineV2)
        ));
    }

    #[test]
    fn a_call_of_a_disabled_family_names_the_family_and_the_line_that_enables_it() {
        let list = table();
        for (method, path, family) in [
            ("POST", "/v4/payments/oneTimeKeys/pay", ApiFamily::OfflineV4),
            ("GET", "/v4/payments/orders/A-1/check", ApiFamily::OfflineV4),
            ("GET", "/v4/payments/authorizations", ApiFamily::OfflineV4),
            ("GET", "/v3/payments/1/userInfo", ApiFamily::UserInfo),
            ("POST", "/v2/payments/request", ApiFamily::OnlineV2),
            ("POST", "/v2/payments/oneTimeKeys/pay", ApiFamily::OfflineV2),
        ] {
            match list.find(&method.parse().unwrap(), path) {
                Match::FamilyDisabled {
                    route,
                    family: named,
                } => {
                    assert_eq!(named, family, "{path}");
                    assert_eq!(route.family, Some(family), "{path}");
                }
                other => panic!("{method} {path}: {other:?}"),
            }
        }
        assert_eq!(
            list.enabling_line(ApiFamily::OfflineV4),
            "routes.apis: [online_v3, online_v4, offline_v4]"
        );
        assert_eq!(
            Allowlist::new(Vec::new()).enabling_line(ApiFamily::UserInfo),
            "routes.apis: [user_info]"
        );
        // Still unknown: no family has it.
        assert_eq!(
            list.find(&http::Method::POST, "/v5/payments/request"),
            Match::Unknown
        );
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
        let list = everything();
        let cases = [
            ("/v3/payments/../payments/request", PathProblem::DotSegment),
            ("/v3/./payments/request", PathProblem::DotSegment),
            ("/v3/payments/request/..", PathProblem::DotSegment),
            ("/v4/payments/orders/../check", PathProblem::DotSegment),
            ("/v3/payments/%2e%2e/request", PathProblem::PercentEncoding),
            ("/v3/payments%2frequest", PathProblem::PercentEncoding),
            ("/v3/payments/%72equest", PathProblem::PercentEncoding),
            // `%` in a transactionId or a literal: refused as before, on every family.
            ("/v3/payments/%31/refund", PathProblem::PercentEncoding),
            (
                "/v4/payments/%6frders/A/check",
                PathProblem::PercentEncoding,
            ),
            (
                "/v4/payments/orders/A/ch%65ck",
                PathProblem::PercentEncoding,
            ),
            ("/v3//payments/request", PathProblem::Ambiguous),
            ("/v3/payments/request/", PathProblem::Ambiguous),
            ("/v3/payments\\request", PathProblem::Ambiguous),
            ("/v3/payments/request;x=1", PathProblem::Ambiguous),
            ("/v4/payments/orders/a;b/check", PathProblem::Ambiguous),
            ("v3/payments/request", PathProblem::Ambiguous),
            ("/v3/payments/req\u{e9}st", PathProblem::Ambiguous),
        ];
        for (path, problem) in cases {
            for method in [http::Method::POST, http::Method::GET] {
                assert_eq!(
                    list.find(&method, path),
                    Match::Refused(problem),
                    "{method} {path}"
                );
            }
        }
    }

    fn problem(list: &Allowlist, method: &str, path: &str) -> Option<ParamProblem> {
        match list.find(&method.parse().unwrap(), path) {
            Match::BadParameter { problem, .. } => Some(problem),
            _ => None,
        }
    }

    #[test]
    fn transaction_ids_are_1_to_19_digits() {
        let list = everything();
        let nineteen = "1".repeat(19);
        assert!(
            allowed_template(&list, "POST", &format!("/v3/payments/{nineteen}/refund")).is_some()
        );
        assert!(allowed_template(&list, "POST", "/v3/payments/7/refund").is_some());
        for bad in [
            "1".repeat(20),
            "9".repeat(5000),
            "12a".to_owned(),
            "-1".to_owned(),
            "1_2".to_owned(),
        ] {
            let found = problem(&list, "POST", &format!("/v4/payments/{bad}/confirm"))
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(found.name, "transactionId");
            assert!(found.rule.contains("1 to 19 digits"), "{}", found.rule);
        }
    }

    #[test]
    fn reg_keys_are_1_to_15_letters_and_digits() {
        let list = table();
        assert!(allowed_template(
            &list,
            "GET",
            "/v3/payments/preapprovedPay/RK2AE3519XTFXHM/check"
        )
        .is_some());
        for bad in ["RK2AE3519XTFXHMX", "RK-1", "RK_1"] {
            let found = problem(
                &list,
                "POST",
                &format!("/v4/payments/preapprovedPay/{bad}/expire"),
            )
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(found.name, "regKey", "{bad}");
        }
    }

    #[test]
    fn order_ids_may_be_percent_encoded_inside_their_segment() {
        let list = everything();
        for order in [
            "POS-2024-0001",
            "order%20A%2B1",
            "%E8%A8%82%E5%96%AE-42",
            "a.b",
            "~!$&'()*+,=:@",
            "%25",
            "...",
        ] {
            for path in [
                format!("/v4/payments/orders/{order}/check"),
                format!("/v2/payments/orders/{order}/void"),
            ] {
                let method = if path.ends_with("check") {
                    "GET"
                } else {
                    "POST"
                };
                assert!(
                    allowed_template(&list, method, &path).is_some(),
                    "{path}: {:?}",
                    list.find(&method.parse().unwrap(), &path)
                );
            }
        }
        let exactly_100 = format!("/v4/payments/orders/{}/check", "%E8%A8%82".repeat(100));
        assert!(allowed_template(&list, "GET", &exactly_100).is_some());
        // The longest segment on the wire: 100 four-byte characters, 1,200 bytes.
        let widest = "%F0%9F%8D%B5".repeat(100);
        assert_eq!(widest.len(), MAX_ORDER_ID_WIRE_BYTES);
        let widest = format!("/v4/payments/orders/{widest}/check");
        assert!(allowed_template(&list, "GET", &widest).is_some());
    }

    #[test]
    fn order_ids_that_decode_to_something_dangerous_are_refused() {
        let list = everything();
        for (order, rule) in [
            ("a%2Fb", "`/`"),
            ("a%2fb", "`/`"),
            ("%5C", "`\\`"),
            ("%2e", "`.` or `..`"),
            ("%2E%2e", "`.` or `..`"),
            (".%2e", "`.` or `..`"),
            ("a%00", "control"),
            ("a%0Ab", "control"),
            ("%7F", "control"),
            ("%C2%85", "control"),
            ("%FF", "UTF-8"),
            ("%C3", "UTF-8"),
            ("%E8%A8", "UTF-8"),
            ("a%2", "two hex digits"),
            ("a%zz", "two hex digits"),
            ("%", "two hex digits"),
            ("a\"b", "percent-encoded"),
            ("a<b", "percent-encoded"),
            ("a#b", "percent-encoded"),
        ] {
            let path = format!("/v4/payments/orders/{order}/refund");
            let found = problem(&list, "POST", &path)
                .unwrap_or_else(|| panic!("{path}: {:?}", list.find(&http::Method::POST, &path)));
            assert_eq!(found.name, "orderId", "{order}");
            assert!(found.rule.contains(rule), "{order}: {}", found.rule);
        }
        for too_long in [
            "a".repeat(101),
            "%41".repeat(101),
            "%E8%A8%82".repeat(101),
            "a".repeat(100_000),
        ] {
            let path = format!("/v4/payments/orders/{too_long}/check");
            let found = problem(&list, "GET", &path).unwrap_or_else(|| panic!("long accepted"));
            assert!(found.rule.contains("1 to 100 characters"), "{}", found.rule);
        }
    }

    #[test]
    fn custom_templates_use_the_same_rules_by_parameter_name() {
        let t = RouteTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(2),
        };
        let list = Allowlist::new(vec![
            Route::new(http::Method::POST, "/v3/x/{orderId}/y", t).unwrap(),
            Route::new(http::Method::POST, "/v3/z/{code}", t).unwrap(),
        ]);
        assert!(allowed_template(&list, "POST", "/v3/x/a%20b/y").is_some());
        assert_eq!(
            problem(&list, "POST", "/v3/x/%2F/y").map(|p| p.name),
            Some("orderId".to_owned())
        );
        assert!(allowed_template(&list, "POST", "/v3/z/a-b_c").is_some());
        assert_eq!(
            problem(&list, "POST", &format!("/v3/z/{}", "a".repeat(101))).map(|p| p.name),
            Some("code".to_owned())
        );
        assert_eq!(
            list.find(&http::Method::POST, "/v3/z/a%20b"),
            Match::Refused(PathProblem::PercentEncoding)
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
            "/v3/{a.b}",
            "/v3/{a%}",
        ] {
            assert!(Route::new(http::Method::GET, bad, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_words_hold_letters_digits_dash_and_underscore() {
        let t = RouteTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        };
        let route = Route::new(http::Method::GET, "/v3/pre-approved_Pay9/{reg_Key-1}", t)
            .expect("dash and underscore are plain");
        assert_eq!(
            route.param("/v3/pre-approved_Pay9/RK1", "reg_Key-1"),
            Some("RK1")
        );
        for (bad, error) in [
            ("/v3/{a.b}/x", TemplateError::BadParam("/v3/{a.b}/x".into())),
            ("/v3/{}/x", TemplateError::BadParam("/v3/{}/x".into())),
            ("/v3/a~b/x", TemplateError::BadCharacter("/v3/a~b/x".into())),
            // Each of the three is named as a bad segment, not as a bad character.
            ("/v3//x", TemplateError::BadSegment("/v3//x".into())),
            ("/v3/./x", TemplateError::BadSegment("/v3/./x".into())),
            ("/v3/../x", TemplateError::BadSegment("/v3/../x".into())),
        ] {
            assert_eq!(Route::new(http::Method::GET, bad, t), Err(error), "{bad}");
        }
    }

    #[test]
    fn names_and_descriptions_are_the_documented_texts() {
        assert_eq!(ApiFamily::UserInfo.to_string(), "user_info");
        let t = RouteTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        };
        let route = Route::new(http::Method::POST, "/v3/payments/request", t).unwrap();
        assert_eq!(route.to_string(), "POST /v3/payments/request");
        let list = Allowlist::with_families(
            Vec::new(),
            &[ApiFamily::OnlineV4, ApiFamily::OnlineV3],
            Duration::from_secs(1),
            None,
        );
        assert_eq!(list.family_names(), "online_v3, online_v4");
        assert_eq!(
            PathProblem::DotSegment.describe(),
            "the path has a `.` or `..` segment"
        );
        assert_eq!(
            PathProblem::PercentEncoding.describe(),
            "the path is percent-encoded outside an orderId parameter"
        );
        assert_eq!(
            PathProblem::Ambiguous.describe(),
            "the path has an empty segment, a backslash, a `;` or a non-printable byte"
        );
    }

    #[test]
    fn a_plain_parameter_refuses_every_other_character() {
        let t = RouteTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        };
        let list = Allowlist::new(vec![
            Route::new(http::Method::GET, "/v3/z/{code}", t).unwrap()
        ]);
        for good in ["a-b", "a_b", "-", "_", "Z9"] {
            assert!(
                allowed_template(&list, "GET", &format!("/v3/z/{good}")).is_some(),
                "{good}"
            );
        }
        for bad in ["a.b", "a~b", "a+b", "a:b", "a@b", "a!b"] {
            let found = problem(&list, "GET", &format!("/v3/z/{bad}"))
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(found.name, "code", "{bad}");
        }
    }

    #[test]
    fn an_order_id_longer_than_1200_bytes_is_refused_before_it_is_decoded() {
        // 1,203 bytes that would decode to invalid UTF-8: the length rule answers first.
        let list = everything();
        let path = format!("/v4/payments/orders/{}/check", "%FF".repeat(401));
        let found = problem(&list, "GET", &path).unwrap_or_else(|| panic!("accepted"));
        assert_eq!(found.rule, ParamKind::MerchantString.rule());
    }

    #[test]
    fn parameters_are_read_back_from_the_path() {
        let list = everything();
        let path = "/v3/payments/2021121600698709710/refund";
        let Match::Allowed(route) = list.find(&http::Method::POST, path) else {
            panic!("refund is allowed");
        };
        assert_eq!(
            route.param(path, "transactionId"),
            Some("2021121600698709710")
        );
        assert_eq!(route.param(path, "regKey"), None);
        let path = "/v4/payments/orders/a%20b/check";
        let Match::Allowed(route) = list.find(&http::Method::GET, path) else {
            panic!("check is allowed");
        };
        assert_eq!(route.param(path, "orderId"), Some("a%20b"));
        // A path shorter than its template has no value there; the segment at the
        // parameter's place is the value, whatever follows.
        assert_eq!(route.param("/v4/payments/orders", "orderId"), None);
        assert_eq!(route.param("/v4/payments/orders/", "orderId"), Some(""));
        assert_eq!(
            route.param("/v4/payments/orders/o-1", "orderId"),
            Some("o-1")
        );
        assert_eq!(
            route.param("/v4/payments/x/o-1/y/z", "orderId"),
            Some("o-1")
        );
        assert_eq!(route.param("v4/payments/orders/o-1", "orderId"), None);
        let path = "/v3/payments/request";
        let Match::Allowed(route) = list.find(&http::Method::POST, path) else {
            panic!("request is allowed");
        };
        assert_eq!(route.param(path, "transactionId"), None);
        assert_eq!(route.param(path, "orderId"), None);
    }

    #[test]
    fn custom_v2_routes_send_the_secret() {
        let t = RouteTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
        };
        let v2 = Route::new(http::Method::POST, "/v2/payments/request", t).unwrap();
        assert_eq!(v2.signing, Signing::ChannelSecret);
        assert_eq!(v2.family_label(), CUSTOM_FAMILY);
        let v3 = Route::new(http::Method::POST, "/v3/payments/request", t).unwrap();
        assert_eq!(v3.signing, Signing::Hmac);
    }
}
