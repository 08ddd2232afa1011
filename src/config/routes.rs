//! The `routes:` section: the allowlist (the built-in API families of `routes.apis`,
//! plus or instead of `routes.allow`) with each route's timeouts.
//!
//! Which families are on: `routes.apis` when set; else none when `routes.allow` is set
//! (a custom table replaces the built-in ones, as it always has); else
//! [`ApiFamily::DEFAULT`]. `routes.v2_legacy: true` adds `online_v2` in every case.

use super::raw::{NameList, RawRoute, RawRoutes, RawUpstream};
use super::setting::{Problems, Setting};
use super::DEFAULT_CONNECT_TIMEOUT;
use crate::route::{Allowlist, ApiFamily, Route, RouteTimeouts};
use std::time::Duration;

/// The read timeout of a `routes.allow` entry that names none.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) fn validate(
    raw: &RawRoutes,
    upstream: &RawUpstream,
    problems: &mut Problems,
) -> Option<Allowlist> {
    let before = problems.len();
    let families = top_families(raw, problems);
    build(raw, families, upstream, problems, true).filter(|_| problems.len() == before)
}

/// The families `routes.apis` (and `routes.v2_legacy`) turn on.
pub(super) fn top_families(raw: &RawRoutes, problems: &mut Problems) -> Vec<ApiFamily> {
    let families = match &raw.apis {
        Some(list) => families(list, problems),
        None if raw.allow.is_some() => Vec::new(),
        None => ApiFamily::DEFAULT.to_vec(),
    };
    with_v2_legacy(raw, families)
}

/// A channel's families: its own `apis` when set (plus `online_v2` under
/// `routes.v2_legacy`), else those of `routes.apis`.
pub(super) fn channel_families(
    raw: &RawRoutes,
    apis: Option<&Setting<NameList>>,
    problems: &mut Problems,
) -> Vec<ApiFamily> {
    match apis {
        Some(list) => with_v2_legacy(raw, families(list, problems)),
        None => {
            // Reported once, by the top level.
            let mut quiet = Problems::new(problems.file());
            top_families(raw, &mut quiet)
        }
    }
}

fn with_v2_legacy(raw: &RawRoutes, mut families: Vec<ApiFamily>) -> Vec<ApiFamily> {
    if raw.v2_legacy.as_ref().is_some_and(|v2| v2.value) && !families.contains(&ApiFamily::OnlineV2)
    {
        families.push(ApiFamily::OnlineV2);
    }
    families
}

/// The allowlist of `families` plus `routes.allow`, with `routes.timeouts` applied.
/// `strict`: a `routes.timeouts` key naming a route outside these families is a
/// problem (the top level); a channel's allowlist skips it (another channel has it).
pub(super) fn build(
    raw: &RawRoutes,
    families: Vec<ApiFamily>,
    upstream: &RawUpstream,
    problems: &mut Problems,
    strict: bool,
) -> Option<Allowlist> {
    let before = problems.len();
    let connect_default = upstream
        .connect_timeout
        .as_ref()
        .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.value.0);
    let read_override = upstream.read_timeout.as_ref().map(|d| d.value.0);
    let mut routes = Vec::new();

    if let Some(entries) = &raw.allow {
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
                Ok(route) => {
                    if let Some(family) = built_in_family(&families, &route) {
                        problems.at(
                                origin,
                                "routes.allow",
                                format!("`{}` is already allowed by the {family} API family (routes.apis); remove one of the two", route.id()),
                            );
                    }
                    routes.push(route);
                }
                Err(error) => problems.at(origin, "routes.allow", error),
            }
        }
    }
    let mut allowlist = Allowlist::with_families(routes, &families, connect_default, read_override);
    let routes = allowlist.routes_mut();

    for (id, entry) in &raw.timeouts {
        let Some(route) = routes.iter_mut().find(|r| r.id() == *id) else {
            if !strict {
                continue;
            }
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

    for route in routes.iter() {
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
        problems.push("no route is allowed (routes.apis and routes.allow are both empty): nothing could be forwarded");
    }
    (problems.len() == before).then_some(allowlist)
}

/// `routes.apis`: each name a family, each once; an unknown name is refused with the
/// list of valid ones.
fn families(list: &Setting<NameList>, problems: &mut Problems) -> Vec<ApiFamily> {
    let mut families = Vec::new();
    for entry in &list.value {
        let name = entry.value.trim();
        match ApiFamily::from_name(name) {
            Some(family) if families.contains(&family) => problems.at(
                &entry.origin,
                "routes.apis",
                format!("`{name}` is listed twice"),
            ),
            Some(family) => families.push(family),
            None => problems.at(
                &entry.origin,
                "routes.apis",
                format!(
                    "`{name}` is not an API family; the families are {}",
                    ApiFamily::all_names()
                ),
            ),
        }
    }
    families
}

/// The enabled family whose built-in table already has `route`'s method and template.
fn built_in_family(families: &[ApiFamily], route: &Route) -> Option<ApiFamily> {
    families.iter().copied().find(|family| {
        family.table().iter().any(|(method, template, _)| {
            *method == route.method.as_str() && *template == route.template
        })
    })
}
