//! Arbitrary input against the pure parts the request path and start-up rely on: none
//! may panic, and what they accept must be as narrow as they claim.

use linepay_sidecar::config::{self, from_yaml_str, Overrides};
use linepay_sidecar::inspect;
use linepay_sidecar::route::{Allowlist, ApiFamily, Match};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use std::time::Duration;

fn every_route() -> Allowlist {
    Allowlist::with_families(Vec::new(), &ApiFamily::ALL, Duration::from_secs(5), None)
}

/// Every built-in template, of every family.
fn every_template() -> Vec<&'static str> {
    ApiFamily::ALL
        .iter()
        .flat_map(|family| family.table().iter().map(|(_, template, _)| *template))
        .collect()
}

/// What an orderId segment may be, written independently of the matcher: well-formed
/// `%XX`, other bytes from the unreserved and sub-delimiter set, decoding to 1 to 100
/// UTF-8 characters with no `/`, `\`, control character, and not `.` or `..`.
fn order_id_is_safe(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if bytes[i].is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&bytes[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    let decoded: Vec<u8> = percent_decode_str(raw).collect();
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let chars = text.chars().count();
    (1..=100).contains(&chars)
        && !text.contains(['/', '\\'])
        && text != "."
        && text != ".."
        && !text.chars().any(char::is_control)
}

/// Whether `actual` is a value `template_segment` accepts, by the documented rules.
fn segment_fits(template_segment: &str, actual: &str) -> bool {
    match template_segment {
        "{transactionId}" => {
            (1..=19).contains(&actual.len()) && actual.bytes().all(|b| b.is_ascii_digit())
        }
        "{regKey}" => {
            (1..=15).contains(&actual.len()) && actual.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        "{orderId}" => order_id_is_safe(actual),
        literal => literal == actual,
    }
}

/// Paths built from the pieces that allowlist bypasses are made of.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("v3".to_owned()),
        Just("v4".to_owned()),
        Just("v2".to_owned()),
        Just("payments".to_owned()),
        Just("orders".to_owned()),
        Just("request".to_owned()),
        Just("confirm".to_owned()),
        Just("check".to_owned()),
        Just("2021121600698709710".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%2f".to_owned()),
        Just("%5C".to_owned()),
        Just("".to_owned()),
        Just("a;b".to_owned()),
        Just("a\\b".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,4}",
    ];
    proptest::collection::vec(piece, 0..7).prop_map(|pieces| format!("/{}", pieces.join("/")))
}

/// An orderId-shaped segment from arbitrary bytes: each byte written raw (when it is
/// printable ASCII), as `%XX` in either case, or as a stray `%`.
fn order_segment() -> impl Strategy<Value = String> {
    proptest::collection::vec((any::<u8>(), 0u8..5), 0..40).prop_map(|items| {
        items
            .iter()
            .map(|(byte, how)| match how {
                0 | 1 if byte.is_ascii_graphic() => (*byte as char).to_string(),
                2 => format!("%{byte:02x}"),
                3 if byte % 11 == 0 => "%".to_owned(),
                _ => format!("%{byte:02X}"),
            })
            .collect()
    })
}

/// Real templates with each `{parameter}` filled by a tricky piece, sometimes with a
/// tricky suffix: most are close to a real call, many are allowed.
fn near_real_path() -> impl Strategy<Value = (String, String)> {
    let piece = prop_oneof![
        Just("2021121600698709710".to_owned()),
        Just("20211216006987097100".to_owned()),
        Just("RK2AE3519XTFXHM".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("".to_owned()),
        Just("a/b".to_owned()),
        Just("A%2FB".to_owned()),
        Just("%E8%A8%82".to_owned()),
        "[ -~]{0,6}",
        order_segment(),
    ];
    let suffix = prop_oneof![
        3 => Just(String::new()),
        1 => Just("/".to_owned()),
        1 => Just("/..".to_owned()),
        1 => Just("%2f".to_owned()),
        1 => Just(";x".to_owned()),
    ];
    let templates = every_template();
    (0..templates.len(), piece, suffix).prop_map(move |(index, piece, suffix)| {
        let template = templates[index];
        let filled: Vec<String> = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    piece.clone()
                } else {
                    segment.to_owned()
                }
            })
            .collect();
        (template.to_owned(), format!("{}{suffix}", filled.join("/")))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// An allowed path fits its template segment by segment (each parameter by its own
    /// rule); a path that fits a template is allowed (for its method).
    #[test]
    fn a_near_real_path_is_allowed_exactly_when_every_segment_fits(
        (_template, path) in near_real_path(),
    ) {
        let allowlist = every_route();
        let fits = |template: &str| {
            let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
            t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| segment_fits(t, p))
        };
        for method in [http::Method::GET, http::Method::POST] {
            match allowlist.find(&method, &path) {
                Match::Allowed(route) => {
                    prop_assert!(fits(&route.template), "{} allowed as {}", path, route.template);
                    prop_assert_eq!(&route.method, &method);
                }
                _ => {
                    let accepted_elsewhere = every_template()
                        .into_iter()
                        .any(|t| fits(t) && allowlist.routes().iter().any(|r| r.template == t && r.method == method));
                    prop_assert!(!accepted_elsewhere, "{} {} refused although it fits", method, path);
                }
            }
        }
    }

    /// Arbitrary bytes in the offline orderId, raw or percent-encoded: the path is
    /// allowed exactly when the segment is safe, and an allowed path decodes to the same
    /// segments it was matched as (nothing that decodes to a separator or a dot segment
    /// is ever forwarded).
    #[test]
    fn an_order_id_is_forwarded_only_when_it_cannot_decode_to_a_separator(
        order in order_segment(),
        version in prop_oneof![Just("v2"), Just("v4")],
        action in prop_oneof![Just(("GET", "check")), Just(("POST", "void")), Just(("POST", "refund")), Just(("POST", "capture"))],
    ) {
        let allowlist = every_route();
        let (method, verb) = action;
        let path = format!("/{version}/payments/orders/{order}/{verb}");
        let found = allowlist.find(&method.parse().expect("method"), &path);
        let allowed = matches!(found, Match::Allowed(_));
        prop_assert_eq!(allowed, order_id_is_safe(&order), "{} -> {:?}", path, found);
        if allowed {
            let decoded = String::from_utf8(percent_decode_str(&path).collect()).expect("UTF-8");
            let segments: Vec<&str> = decoded.split('/').collect();
            prop_assert_eq!(segments.len(), path.split('/').count(), "{}", decoded);
            prop_assert!(segments.iter().skip(1).all(|s| !s.is_empty() && *s != "." && *s != ".." && !s.contains('\\')), "{}", decoded);
        }
    }

    #[test]
    fn an_allowed_path_is_plain_outside_order_ids_and_matches_its_template(path in tricky_path(), post in any::<bool>()) {
        let allowlist = every_route();
        let method = if post { http::Method::POST } else { http::Method::GET };
        if let Match::Allowed(route) = allowlist.find(&method, &path) {
            prop_assert!(!path.contains(".."), "{path}");
            prop_assert!(!path.contains("//"), "{path}");
            prop_assert!(!path.ends_with('/'), "{path}");
            let template: Vec<&str> = route.template.split('/').collect();
            let actual: Vec<&str> = path.split('/').collect();
            prop_assert_eq!(actual.len(), template.len(), "{} vs {}", path, route.template);
            for (t, a) in template.iter().zip(&actual) {
                prop_assert!(segment_fits(t, a), "{} in {} vs {}", a, path, route.template);
                if *t != "{orderId}" {
                    prop_assert!(!a.contains('%'), "{path}");
                }
            }
            prop_assert_eq!(&route.method, &method);
        }
    }

    #[test]
    fn inspect_never_panics_and_returns_printable_text(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for key in ["returnCode", "orderId", "transactionId"] {
            for value in [inspect::string_field(&body, key), inspect::id_field(&body, key)]
                .into_iter()
                .flatten()
            {
                prop_assert!(value.len() <= 100);
                prop_assert!(value.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
            }
        }
        if let Ok(text) = std::str::from_utf8(&body) {
            let _ = inspect::query_field(text, "orderId");
        }
    }

    #[test]
    fn config_parsing_never_panics(text in "\\PC{0,200}") {
        if let Ok(raw) = from_yaml_str(&text) {
            let _ = config::validate(raw, "fuzz.yaml", &Overrides::default(), &|_| None, &|_| {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            });
        }
        let _ = config::parse_duration(&text);
        let _ = config::check_upstream_url(&text);
    }

    #[test]
    fn config_shaped_yaml_never_panics(
        key in prop_oneof![Just("listen"), Just("upstream"), Just("routes"), Just("limits"), Just("egress"), Just("admin")],
        inner in prop_oneof![Just("url"), Just("allow"), Just("global"), Just("pin"), Just("listen"), Just("timeouts")],
        value in "[ -~]{0,40}",
    ) {
        let text = format!("{key}:\n  {inner}: {value}\n");
        if let Ok(raw) = from_yaml_str(&text) {
            let _ = config::validate(raw, "fuzz.yaml", &Overrides::default(), &|_| None, &|_| {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            });
        }
    }
}
