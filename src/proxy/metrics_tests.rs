//! `record_metrics` keeps the handles of a matched route's series (`metrics::ChannelSeries`)
//! instead of looking them up by label on every call: `/metrics` must read exactly as
//! it did when every call looked its series up by label.

#![allow(clippy::unwrap_used)]

use super::channel_signing::{proxy_with, Configured};
use super::*;
use crate::limit::{LimitError, LimitName, Refusal};
use crate::upstream::UpstreamError;

fn two_channels() -> Proxy {
    let channel = |name: &str, id: &str| Configured {
        name: name.into(),
        id: id.into(),
        secret: format!("secret-of-{name}"),
    };
    proxy_with(&[channel("web", "1111111111"), channel("pos", "2222222222")])
}

/// What `record_metrics` did before it kept handles: every series looked up by label.
fn record_by_labels(
    metrics: &Metrics,
    call: &CallRecord<'_>,
    route: &str,
    family: &str,
    method: &Method,
    status: http::StatusCode,
    return_code: Option<&str>,
) {
    let code = metrics::return_code_label(return_code);
    let status_label = metrics::status_label(&status);
    metrics
        .requests
        .with_label_values(&[route, family, method_label(method), status_label, code])
        .inc();
    if let Some(channel) = call.channel {
        metrics
            .channel_requests
            .with_label_values(&[&channel.name, channel.environment, status_label, code])
            .inc();
    }
    if let Some(elapsed) = call.upstream_elapsed {
        metrics
            .upstream_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
    if let Some(error) = &call.error {
        metrics.refusals.with_label_values(&[error.code()]).inc();
        if let Some(kind) = error.upstream_kind() {
            metrics.upstream_errors.with_label_values(&[kind]).inc();
            if let Some(channel) = call.channel {
                metrics
                    .channel_upstream_errors
                    .with_label_values(&[&*channel.name, kind])
                    .inc();
            }
        }
        if let ProxyError::RateLimited(refusal) = error {
            metrics
                .rate_limited
                .with_label_values(&[refusal.limit.label()])
                .inc();
        }
    }
}

/// One call as `answer` hands it to `record_metrics`.
struct Answered<'a> {
    call: CallRecord<'a>,
    method: Method,
    status: u16,
    return_code: Option<&'static str>,
}

fn calls<'a>(proxy: &'a Proxy, foreign: &'a Route) -> Vec<Answered<'a>> {
    let named = |name: &str| {
        proxy
            .channels()
            .iter()
            .find(|channel| &*channel.name == name)
            .unwrap()
    };
    let (web, pos) = (named("web"), named("pos"));
    let route = |channel: &'a Channel, method: Method, template: &str| {
        channel
            .config
            .allowlist
            .routes()
            .iter()
            .find(|route| route.method == method && route.template == template)
            .unwrap()
    };
    let request = |channel| route(channel, Method::POST, "/v3/payments/request");
    let confirm = |channel| {
        route(
            channel,
            Method::POST,
            "/v3/payments/{transactionId}/confirm",
        )
    };
    let details = |channel| route(channel, Method::GET, "/v3/payments");
    let ms = std::time::Duration::from_millis;
    let answered = |channel: Option<&'a Channel>,
                    route: Option<&'a Route>,
                    method: Method,
                    status: u16,
                    return_code: Option<&'static str>,
                    upstream: Option<u64>,
                    error: Option<ProxyError>| Answered {
        call: CallRecord {
            channel,
            route,
            upstream_elapsed: upstream.map(ms),
            error,
            ..CallRecord::default()
        },
        method,
        status,
        return_code,
    };
    let mut calls = Vec::new();
    for _ in 0..3 {
        // Forwarded: the same label sets again and again, and new ones among them.
        for (channel, code, upstream) in [
            (web, Some("0000"), 3),
            (web, Some("0000"), 7),
            (pos, Some("0000"), 30),
            (web, Some("1106"), 120),
            (pos, Some("1907"), 2),
            (web, Some("7777"), 600),
            (web, None, 1),
        ] {
            calls.push(answered(
                Some(channel),
                Some(request(channel)),
                Method::POST,
                200,
                code,
                Some(upstream),
                None,
            ));
        }
        calls.push(answered(
            Some(web),
            Some(confirm(web)),
            Method::POST,
            200,
            Some("1150"),
            Some(40),
            None,
        ));
        calls.push(answered(
            Some(pos),
            Some(details(pos)),
            Method::GET,
            500,
            None,
            Some(11),
            None,
        ));
        // Refused with a route (a bad parameter): no upstream time.
        calls.push(answered(
            Some(web),
            Some(confirm(web)),
            Method::POST,
            400,
            None,
            None,
            Some(ProxyError::InvalidPathParameter {
                name: "transactionId".into(),
                rule: "digits",
            }),
        ));
        // The upstream failed after the call was sent.
        calls.push(answered(
            Some(pos),
            Some(request(pos)),
            Method::POST,
            504,
            None,
            Some(20_000),
            Some(ProxyError::Upstream(UpstreamError::ReadTimeout(ms(20_000)))),
        ));
        // Refused before any route: no channel, no route, a family that is disabled.
        calls.push(answered(
            None,
            None,
            Method::POST,
            400,
            None,
            None,
            Some(ProxyError::UnknownChannel),
        ));
        calls.push(answered(
            Some(web),
            None,
            Method::DELETE,
            403,
            None,
            None,
            Some(ProxyError::PathNotAllowed {
                method: "DELETE".into(),
                path: "/x".into(),
            }),
        ));
        let mut disabled = answered(
            Some(pos),
            None,
            Method::POST,
            403,
            None,
            None,
            Some(ProxyError::ApiFamilyDisabled {
                route: "POST /v4/payments/request".into(),
                family: "online_v4",
                line: String::new(),
            }),
        );
        disabled.call.family = Some("online_v4");
        calls.push(disabled);
        calls.push(answered(
            Some(web),
            Some(request(web)),
            Method::POST,
            429,
            None,
            None,
            Some(ProxyError::RateLimited(LimitError {
                limit: LimitName::Global,
                retry_after: ms(1000),
                reason: Refusal::NoQueue,
            })),
        ));
        // A route that is not one of the channel's (another snapshot's), and a method
        // that is not the route's: looked up by label.
        calls.push(answered(
            Some(web),
            Some(foreign),
            Method::POST,
            200,
            Some("0000"),
            Some(5),
            None,
        ));
        calls.push(answered(
            Some(pos),
            Some(details(pos)),
            Method::HEAD,
            200,
            Some("0000"),
            Some(6),
            None,
        ));
    }
    calls
}

/// The proxy's own series, in the exposition's order (the `process_*` ones read /proc).
fn sidecar_series(metrics: &Metrics) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter(|line| line.starts_with("linepay_sidecar_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn kept_handles_count_exactly_what_lookups_by_label_counted() {
    let kept = two_channels();
    let looked_up = two_channels();
    let foreign = looked_up.channels()[0]
        .config
        .allowlist
        .routes()
        .iter()
        .find(|route| route.template == "/v3/payments/request")
        .unwrap()
        .clone();
    for (proxy, by_label) in [(&kept, false), (&looked_up, true)] {
        for answered in calls(proxy, &foreign) {
            let call = &answered.call;
            let route = call.route.map_or(UNMATCHED_ROUTE, |r| r.template.as_str());
            let family = call
                .family
                .or(call.route.map(Route::family_label))
                .unwrap_or(UNMATCHED_ROUTE);
            let status = http::StatusCode::from_u16(answered.status).unwrap();
            if by_label {
                record_by_labels(
                    proxy.metrics(),
                    call,
                    route,
                    family,
                    &answered.method,
                    status,
                    answered.return_code,
                );
            } else {
                proxy.record_metrics(
                    call,
                    route,
                    family,
                    &answered.method,
                    status,
                    answered.return_code,
                );
            }
        }
    }
    let expected = sidecar_series(looked_up.metrics());
    assert_eq!(sidecar_series(kept.metrics()), expected);
    // The comparison saw the series it is about.
    for series in [
        r#"linepay_sidecar_requests_total{family="online_v3",method="POST",return_code="0000",route="/v3/payments/request",status="200"} 12"#,
        r#"linepay_sidecar_channel_requests_total{channel="web",environment="other",return_code="0000",status="200"} 9"#,
        r#"linepay_sidecar_upstream_duration_seconds_count{route="/v3/payments/request"} 27"#,
        r#"linepay_sidecar_requests_total{family="online_v3",method="HEAD",return_code="0000",route="/v3/payments",status="200"} 3"#,
    ] {
        assert!(
            expected.iter().any(|line| line == series),
            "{series} missing:\n{expected:#?}"
        );
    }
}

/// Statuses without a label of their own all count as `other`: one handle for them all,
/// not one each (an upstream may send any of ~900).
#[test]
fn statuses_labelled_other_share_one_kept_handle() {
    let proxy = two_channels();
    let web = &proxy.channels()[0];
    let route = web
        .config
        .allowlist
        .routes()
        .iter()
        .find(|route| route.template == "/v3/payments/request")
        .unwrap();
    let call = CallRecord {
        channel: Some(web),
        route: Some(route),
        ..CallRecord::default()
    };
    let mut others = 0;
    for code in 100..=999 {
        let status = http::StatusCode::from_u16(code).unwrap();
        if metrics::status_label(&status) != "other" {
            continue;
        }
        others += 1;
        for _ in 0..2 {
            proxy.record_metrics(
                &call,
                &route.template,
                route.family_label(),
                &Method::POST,
                status,
                Some("0000"),
            );
        }
    }
    assert!(others > 800, "{others}");
    assert_eq!(
        web.series.handles_kept(),
        2,
        "the channel's and the route's"
    );
    let line = format!(
        r#"linepay_sidecar_requests_total{{family="online_v3",method="POST",return_code="0000",route="/v3/payments/request",status="other"}} {}"#,
        2 * others
    );
    assert!(
        sidecar_series(proxy.metrics()).contains(&line),
        "{line} missing"
    );
}
