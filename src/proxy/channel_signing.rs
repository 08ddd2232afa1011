//! The property of issue 19: for any call and any two configured channels, the call is
//! signed with the selected channel's secret only, and carries that channel's id. The
//! expected signature is computed here with `hmac` and `sha2` directly, never with
//! `crate::sign`.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::channel::{Channel, Listener, CHANNEL_HEADER};
use crate::config::{from_yaml_str, validate, Overrides};
use crate::limit::Limits;
use crate::upstream::ClientSettings;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use std::path::Path;

/// One channel as the test configures it.
#[derive(Debug, Clone)]
pub(super) struct Configured {
    pub(super) name: String,
    pub(super) id: String,
    pub(super) secret: String,
}

/// A snapshot serving `channels` (both on loopback upstreams that are never called).
pub(super) fn proxy_with(channels: &[Configured]) -> Proxy {
    let mut yaml = String::from("routes:\n  apis: [online_v3, online_v2]\nchannels:\n");
    for channel in channels {
        yaml.push_str(&format!(
            "  {}:\n    channel_id: \"{}\"\n    channel_secret_file: /secrets/{}\n    upstream: {{ url: \"http://127.0.0.1:9\" }}\n",
            channel.name, channel.id, channel.name
        ));
    }
    let secrets = channels.to_vec();
    let read = move |path: &Path| -> std::io::Result<Vec<u8>> {
        secrets
            .iter()
            .find(|c| path == Path::new(&format!("/secrets/{}", c.name)))
            .map(|c| c.secret.clone().into_bytes())
            .ok_or_else(|| std::io::Error::other("no such secret"))
    };
    let home = |key: &str| (key == "HOME").then(|| "/home/test".to_owned());
    let config = validate(
        from_yaml_str(&yaml).unwrap(),
        "test.yaml",
        &Overrides::default(),
        &home,
        &read,
    )
    .unwrap();
    let built: Vec<Channel> = config
        .channels
        .iter()
        .map(|channel| {
            let settings = ClientSettings::for_channel(&config, channel);
            let upstream = Arc::new(Upstream::new(settings).unwrap());
            Channel::new(channel.clone(), upstream, None)
        })
        .collect();
    let upstream = built[0].upstream.clone();
    let limits = Arc::new(Limits::new(&config.limits, None));
    let budget = Budget::new(config.request.max_buffered_bytes);
    Proxy::new(
        config,
        built,
        upstream,
        limits,
        Arc::new(Metrics::new()),
        Arc::new(Desk::disabled()),
        budget,
    )
}

fn hmac_base64(secret: &str, path: &str, payload: &[u8], nonce: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(secret.as_bytes());
    mac.update(path.as_bytes());
    mac.update(payload);
    mac.update(nonce.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A call an app could send: which route, and its query or body.
#[derive(Debug, Clone)]
enum AppCall {
    /// `GET /v3/payments?QUERY` (details): the query is signed.
    Details(String),
    /// `POST /v3/payments/{transactionId}/confirm` with a body: the body is signed.
    Confirm(u64, String),
    /// `POST /v2/payments/request`: v2 sends the secret itself.
    LegacyRequest(String),
}

fn app_call() -> impl Strategy<Value = AppCall> {
    prop_oneof![
        "[a-zA-Z0-9=&_.-]{0,80}".prop_map(AppCall::Details),
        (1u64..=9_999_999_999_999_999_999, "\\PC{0,200}")
            .prop_map(|(id, body)| AppCall::Confirm(id, body)),
        "\\PC{0,100}".prop_map(AppCall::LegacyRequest),
    ]
}

fn channel_pair() -> impl Strategy<Value = (Configured, Configured)> {
    (
        "[a-z][a-z0-9_-]{0,12}",
        "[a-z][a-z0-9_-]{0,12}",
        "[1-9][0-9]{9}",
        "[1-9][0-9]{9}",
        "[A-Za-z0-9]{8,64}",
        "[A-Za-z0-9]{8,64}",
    )
        .prop_filter("two distinct channels", |(a, b, ia, ib, sa, sb)| {
            a.replace('-', "_") != b.replace('-', "_") && ia != ib && sa != sb
        })
        .prop_map(|(a, b, ia, ib, sa, sb)| {
            (
                Configured {
                    name: a,
                    id: ia,
                    secret: sa,
                },
                Configured {
                    name: b,
                    id: ib,
                    secret: sb,
                },
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_call_is_signed_with_its_selected_channels_secret_only(
        (first, second) in channel_pair(),
        pick_second in any::<bool>(),
        by_port in any::<bool>(),
        call in app_call(),
    ) {
        let proxy = proxy_with(&[first.clone(), second.clone()]);
        let (selected, other) = match pick_second {
            true => (&second, &first),
            false => (&first, &second),
        };
        let (method, target, body) = match &call {
            AppCall::Details(query) => (Method::GET, format!("/v3/payments?{query}"), String::new()),
            AppCall::Confirm(id, body) => (Method::POST, format!("/v3/payments/{id}/confirm"), body.clone()),
            AppCall::LegacyRequest(body) => (Method::POST, "/v2/payments/request".to_owned(), body.clone()),
        };
        // On its own port a header naming the same channel changes nothing.
        let listener = match by_port {
            true => Listener(Some(selected.name.as_str().into())),
            false => Listener::default(),
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(&target)
            .header(CHANNEL_HEADER, selected.name.as_str())
            .body(())
            .unwrap();
        let channel = proxy.select(&request, &listener).unwrap();
        prop_assert_eq!(&*channel.name, selected.name.as_str());

        let (parts, ()) = request.into_parts();
        let route = match channel.config.allowlist.find(&parts.method, parts.uri.path()) {
            Match::Allowed(route) => route,
            _ => panic!("{target} is on the allowlist"),
        };
        let sent = proxy
            .build_request(channel, route, &parts, Bytes::from(body.clone()), false)
            .unwrap();
        let headers = sent.headers();
        prop_assert_eq!(headers[CHANNEL_ID].as_bytes(), selected.id.as_bytes());
        prop_assert!(headers.get(CHANNEL_HEADER).is_none());
        match call {
            AppCall::LegacyRequest(_) => {
                prop_assert_eq!(headers[CHANNEL_SECRET].as_bytes(), selected.secret.as_bytes());
                prop_assert!(headers.get(AUTHORIZATION).is_none());
            }
            AppCall::Details(_) | AppCall::Confirm(..) => {
                let nonce = headers[NONCE].to_str().unwrap();
                let payload = match method {
                    Method::GET => parts.uri.query().unwrap_or("").as_bytes(),
                    _ => body.as_bytes(),
                };
                let path = parts.uri.path();
                let signature = headers[AUTHORIZATION].to_str().unwrap();
                prop_assert_eq!(signature, hmac_base64(&selected.secret, path, payload, nonce));
                prop_assert_ne!(signature, hmac_base64(&other.secret, path, payload, nonce));
                prop_assert!(headers.get(CHANNEL_SECRET).is_none());
            }
        }
        let text = format!("{headers:?}");
        prop_assert!(!text.contains(&other.secret) && !text.contains(&other.id));
    }
}

#[test]
fn a_reconciliation_question_is_signed_as_the_rows_channel() {
    let web = Configured {
        name: "web".into(),
        id: "1000000001".into(),
        secret: "web-secret-0001".into(),
    };
    let pos = Configured {
        name: "pos".into(),
        id: "2000000002".into(),
        secret: "pos-secret-0002".into(),
    };
    let proxy = proxy_with(&[web.clone(), pos.clone()]);
    let path = "/v3/payments/requests/123/check";
    for channel in [&web, &pos] {
        let (_, request) = proxy
            .signed_get_for(&channel.id, path, Signing::Hmac)
            .unwrap();
        let headers = request.headers();
        assert_eq!(headers[CHANNEL_ID].as_bytes(), channel.id.as_bytes());
        let nonce = headers[NONCE].to_str().unwrap();
        assert_eq!(
            headers[AUTHORIZATION].to_str().unwrap(),
            hmac_base64(&channel.secret, path, b"", nonce)
        );
    }
    // A row of a channel no longer configured is never asked with another's secret.
    assert!(proxy
        .signed_get_for("3000000003", path, Signing::Hmac)
        .is_none());
}
