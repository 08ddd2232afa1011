//! Arbitrary input against the pure parts the request path and start-up rely on: none
//! may panic, and what they accept must be as narrow as they claim.

use linepay_sidecar::config::{self, from_yaml_str, Overrides};
use linepay_sidecar::inspect;
use linepay_sidecar::route::{table_routes, Allowlist, Match, V2_ROUTES, V3_ROUTES};
use proptest::prelude::*;
use std::time::Duration;

fn every_route() -> Allowlist {
    let connect = Duration::from_secs(5);
    let mut routes = table_routes(V3_ROUTES, connect, None);
    routes.extend(table_routes(V2_ROUTES, connect, None));
    Allowlist::new(routes)
}

/// Paths built from the pieces that allowlist bypasses are made of.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("v3".to_owned()),
        Just("v2".to_owned()),
        Just("payments".to_owned()),
        Just("request".to_owned()),
        Just("confirm".to_owned()),
        Just("2021121600698709710".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%2f".to_owned()),
        Just("".to_owned()),
        Just("a;b".to_owned()),
        Just("a\\b".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,4}",
    ];
    proptest::collection::vec(piece, 0..7).prop_map(|pieces| format!("/{}", pieces.join("/")))
}

/// Real templates with each `{parameter}` filled by a tricky piece, sometimes with a
/// tricky suffix: most are close to a real call, many are allowed.
fn near_real_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("2021121600698709710".to_owned()),
        Just("RK9A8B7C6D5E".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("".to_owned()),
        Just("a/b".to_owned()),
        "[ -~]{0,6}",
    ];
    let suffix = prop_oneof![
        3 => Just(String::new()),
        1 => Just("/".to_owned()),
        1 => Just("/..".to_owned()),
        1 => Just("%2f".to_owned()),
        1 => Just(";x".to_owned()),
    ];
    (0..V3_ROUTES.len() + V2_ROUTES.len(), piece, suffix).prop_map(|(index, piece, suffix)| {
        let (_, template, _) = V3_ROUTES
            .iter()
            .chain(V2_ROUTES)
            .nth(index)
            .expect("index in range");
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
        format!("{}{suffix}", filled.join("/"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_near_real_path_is_allowed_only_when_plain(path in near_real_path(), post in any::<bool>()) {
        let allowlist = every_route();
        let method = if post { http::Method::POST } else { http::Method::GET };
        let plain = path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b))
            && !path.contains("//")
            && !path.ends_with('/');
        match allowlist.find(&method, &path) {
            Match::Allowed(route) => {
                prop_assert!(plain, "allowed a path that is not plain: {path}");
                prop_assert_eq!(path.split('/').count(), route.template.split('/').count());
            }
            Match::Refused(_) => prop_assert!(!plain, "refused a plain path: {path}"),
            Match::WrongMethod { .. } | Match::Unknown => {}
        }
    }

    #[test]
    fn an_allowed_path_is_plain_and_matches_its_template(path in tricky_path(), post in any::<bool>()) {
        let allowlist = every_route();
        let method = if post { http::Method::POST } else { http::Method::GET };
        if let Match::Allowed(route) = allowlist.find(&method, &path) {
            prop_assert!(!path.contains(".."), "{path}");
            prop_assert!(!path.contains('%'), "{path}");
            prop_assert!(!path.contains("//"), "{path}");
            prop_assert!(!path.ends_with('/'), "{path}");
            prop_assert!(path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b)), "{path}");
            let template_segments = route.template.split('/').count();
            prop_assert_eq!(path.split('/').count(), template_segments, "{} vs {}", path, route.template);
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
