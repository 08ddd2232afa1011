//! The `routes:` section: the allowlist (the built-in tables or `routes.allow`) with each
//! route's timeouts.

use super::raw::{RawRoute, RawRoutes, RawUpstream};
use super::setting::Problems;
use super::DEFAULT_CONNECT_TIMEOUT;
use crate::route::{table_routes, Allowlist, Route, RouteTimeouts, V2_ROUTES, V3_ROUTES};
use std::time::Duration;

/// The read timeout of a `routes.allow` entry that names none.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) fn validate(
    raw: &RawRoutes,
    upstream: &RawUpstream,
    problems: &mut Problems,
) -> Option<Allowlist> {
    let before = problems.len();
    let connect_default = upstream
        .connect_timeout
        .as_ref()
        .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.value.0);
    let read_override = upstream.read_timeout.as_ref().map(|d| d.value.0);
    let mut routes = Vec::new();

    match &raw.allow {
        None => routes.extend(table_routes(V3_ROUTES, connect_default, read_override)),
        Some(entries) => {
            for entry in &entries.value {
                let origin = &entry.origin;
                let RawRoute {
                    method,
                    path,
                    connect_timeout,
                    read_timeout,
                } = &entry.value;
                let (Some(method), Some(path)) = (method, path) else {
                    problems.at(
                        origin,
                        "routes.allow",
                        "each entry needs `method` and `path`",
                    );
                    continue;
                };
                let method = match method.value.to_ascii_uppercase().as_str() {
                    "GET" => http::Method::GET,
                    "POST" => http::Method::POST,
                    other => {
                        problems.at(
                            origin,
                            "routes.allow",
                            format!("method `{other}` is not used by LINE Pay; use GET or POST"),
                        );
                        continue;
                    }
                };
                let route_timeouts = RouteTimeouts {
                    connect: connect_timeout
                        .as_ref()
                        .map_or(connect_default, |d| d.value.0),
                    read: read_timeout
                        .as_ref()
                        .map(|d| d.value.0)
                        .or(read_override)
                        .unwrap_or(DEFAULT_READ_TIMEOUT),
                };
                match Route::new(method, &path.value, route_timeouts) {
                    Ok(route) => routes.push(route),
                    Err(error) => problems.at(origin, "routes.allow", error),
                }
            }
        }
    }
    if raw.v2_legacy.as_ref().is_some_and(|v2| v2.value) {
        routes.extend(table_routes(V2_ROUTES, connect_default, read_override));
    }

    for (id, entry) in &raw.timeouts {
        let Some(route) = routes.iter_mut().find(|r| r.id() == *id) else {
            problems.at(
                &entry.origin,
                "routes.timeouts",
                format!("`{id}` is not an allowed route; write it as METHOD and template, e.g. `POST /v3/payments/{{transactionId}}/confirm`"),
            );
            continue;
        };
        if let Some(connect) = &entry.value.connect_timeout {
            route.timeouts.connect = connect.value.0;
        }
        if let Some(read) = &entry.value.read_timeout {
            route.timeouts.read = read.value.0;
        }
    }

    for route in &routes {
        if route.timeouts.connect.is_zero() || route.timeouts.read.is_zero() {
            problems.push(format!("route {}: timeouts must be above 0", route.id()));
        } else if route.timeouts.connect >= route.timeouts.read {
            // Otherwise a connection that never opens would be reported as a read
            // timeout, which tells the app the call may have been processed.
            problems.push(format!(
                "route {}: connect_timeout ({:?}) must be shorter than read_timeout ({:?}); lower upstream.connect_timeout (--connect-timeout) with it",
                route.id(),
                route.timeouts.connect,
                route.timeouts.read
            ));
        }
    }
    let mut ids: Vec<&str> = routes.iter().map(Route::id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != routes.len() {
        problems.push("routes.allow: a route is listed twice");
    }
    if routes.is_empty() && problems.len() == before {
        problems.push("routes.allow is empty: nothing could be forwarded");
    }
    (problems.len() == before).then(|| Allowlist::new(routes))
}
