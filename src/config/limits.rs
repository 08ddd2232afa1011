//! The `limits:` section, checked against the allowlist into a typed
//! [`LimitsConfig`]. Every bound on a rate, a burst or the queue is checked here, so the
//! running limiters can trust their input (governor's arithmetic cannot overflow within
//! these bounds).

use super::raw::{RawBucket, RawLimits};
use super::setting::{Origin, Problems, Setting};
use crate::limit::{
    Bucket, ClientLimit, LimitsConfig, PollingConfig, QueueConfig, RouteLimit,
    DEFAULT_CHECK_STATUS_INTERVAL, DEFAULT_CHECK_STATUS_MAX_TRACKED,
};
use crate::route::{Allowlist, Match};
use http::{HeaderName, Method};
use std::num::NonZeroUsize;
use std::time::Duration;

/// Clients tracked at most, unless `per_client.max_clients` says otherwise.
const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Calls waiting at most, unless `queue.max_queued` says otherwise.
const DEFAULT_MAX_QUEUED: usize = 100;
const MAX_CLIENTS: usize = 1_000_000;
/// A queued call holds an app connection open; past a minute the app's own HTTP timeout
/// would usually have given up on it already.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);

pub(super) fn validate(
    raw: &RawLimits,
    allowlist: &Allowlist,
    problems: &mut Problems,
) -> Option<LimitsConfig> {
    let before = problems.len();

    let global = raw
        .global
        .as_ref()
        .and_then(|entry| bucket(&entry.value, &entry.origin, "limits.global", problems));

    let mut routes = Vec::new();
    for (id, entry) in &raw.routes {
        let Some(route) = allowlist.routes().iter().find(|r| r.id() == *id) else {
            problems.at(
                &entry.origin,
                "limits.routes",
                format!(
                    "`{id}` is not an allowed route; {}",
                    suggest_route(id, allowlist)
                ),
            );
            continue;
        };
        if let Some(bucket) = bucket(
            &entry.value,
            &entry.origin,
            &format!("limits.routes.\"{id}\""),
            problems,
        ) {
            routes.push(RouteLimit {
                method: route.method.clone(),
                template: route.template.clone(),
                bucket,
            });
        }
    }

    let per_client = raw.per_client.as_ref().and_then(|entry| {
        let origin = &entry.origin;
        let raw = &entry.value;
        let here = problems.len();
        let header = match &raw.header {
            None => {
                problems.at(origin, "limits.per_client", "`header` is missing");
                None
            }
            Some(header) => problems.check(
                header,
                "limits.per_client.header",
                HeaderName::from_bytes(header.value.trim().as_bytes()).map_err(|_| {
                    format!(
                        "`{}` is not a header name such as X-Merchant-Client",
                        header.value
                    )
                }),
            ),
        };
        let bucket = bucket_of(&raw.rate, &raw.burst, origin, "limits.per_client", problems);
        let max_clients = raw
            .max_clients
            .as_ref()
            .map_or(DEFAULT_MAX_CLIENTS, |n| n.value);
        if max_clients > MAX_CLIENTS {
            problems.at(
                origin,
                "limits.per_client.max_clients",
                format!("{max_clients} is above {MAX_CLIENTS}"),
            );
        }
        let max_clients = NonZeroUsize::new(max_clients).or_else(|| {
            problems.at(
                origin,
                "limits.per_client.max_clients",
                "must be at least 1",
            );
            None
        });
        match (header, bucket, max_clients) {
            (Some(header), Some(bucket), Some(max_clients)) if problems.len() == here => {
                Some(ClientLimit {
                    header,
                    bucket,
                    max_clients,
                })
            }
            _ => None,
        }
    });

    let queue = raw.queue.as_ref().and_then(|entry| {
        let origin = &entry.origin;
        let Some(max_wait) = &entry.value.max_wait else {
            problems.at(origin, "limits.queue", "`max_wait` is missing");
            return None;
        };
        let max_wait = max_wait.value.0;
        let mut ok = true;
        if max_wait.is_zero() {
            problems.at(
                origin,
                "limits.queue.max_wait",
                "must be above 0; remove `queue` to refuse at once",
            );
            ok = false;
        } else if max_wait > MAX_QUEUE_WAIT {
            problems.at(
                origin,
                "limits.queue.max_wait",
                format!(
                    "is above {}s: a queued call holds the app's connection, and the app's own timeout is usually shorter",
                    MAX_QUEUE_WAIT.as_secs()
                ),
            );
            ok = false;
        }
        let max_queued = entry
            .value
            .max_queued
            .as_ref()
            .map_or(DEFAULT_MAX_QUEUED, |n| n.value);
        let max_queued = NonZeroUsize::new(max_queued).or_else(|| {
            problems.at(
                origin,
                "limits.queue.max_queued",
                "must be at least 1; remove `queue` to refuse at once",
            );
            None
        });
        match max_queued {
            Some(max_queued) if ok => Some(QueueConfig {
                max_wait,
                max_queued,
            }),
            _ => None,
        }
    });

    let min_interval = raw
        .check_status_interval
        .as_ref()
        .map_or(DEFAULT_CHECK_STATUS_INTERVAL, |interval| interval.value.0);
    if min_interval > MAX_QUEUE_WAIT {
        if let Some(interval) = &raw.check_status_interval {
            problems.at(
                &interval.origin,
                "limits.check_status_interval",
                format!(
                    "is above {}s: LINE Pay asks for 1s, and a reserved payment expires after 20 minutes",
                    MAX_QUEUE_WAIT.as_secs()
                ),
            );
        }
    }
    let max_tracked = raw
        .check_status_max_tracked
        .as_ref()
        .map_or(DEFAULT_CHECK_STATUS_MAX_TRACKED, |n| n.value);
    let max_tracked = match NonZeroUsize::new(max_tracked) {
        Some(n) if n.get() <= MAX_CLIENTS => Some(n),
        _ => {
            if let Some(setting) = &raw.check_status_max_tracked {
                problems.at(
                    &setting.origin,
                    "limits.check_status_max_tracked",
                    format!("must be between 1 and {MAX_CLIENTS}"),
                );
            }
            None
        }
    };
    let polling = PollingConfig {
        min_interval,
        max_tracked: max_tracked.unwrap_or(NonZeroUsize::MIN),
    };

    (problems.len() == before).then(|| LimitsConfig {
        polling,
        shadow: raw.shadow.as_ref().is_some_and(|shadow| shadow.value),
        global,
        routes,
        per_client,
        queue,
    })
}

fn bucket(raw: &RawBucket, origin: &Origin, key: &str, problems: &mut Problems) -> Option<Bucket> {
    bucket_of(&raw.rate, &raw.burst, origin, key, problems)
}

fn bucket_of(
    rate: &Option<Setting<super::units::ConfigRate>>,
    burst: &Option<Setting<u32>>,
    origin: &Origin,
    key: &str,
    problems: &mut Problems,
) -> Option<Bucket> {
    let Some(rate) = rate else {
        problems.at(origin, key, "`rate` is missing (e.g. rate: 50/s)");
        return None;
    };
    Bucket::new(rate.value.0, burst.as_ref().map(|burst| burst.value))
        .map_err(|problem| problems.at(origin, key, problem))
        .ok()
}

/// The next step for a route key that names no allowed route.
fn suggest_route(id: &str, allowlist: &Allowlist) -> String {
    let routes = allowlist.routes();
    let suggestion = routes
        .iter()
        .find(|route| route.id().eq_ignore_ascii_case(id))
        .map(|route| route.id().to_owned())
        .or_else(|| {
            // A concrete call (`POST /v3/payments/123/refund`) names its template.
            let (method, path) = id.split_once(' ')?;
            let method = Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes()).ok()?;
            match allowlist.find(&method, path.trim()) {
                Match::Allowed(route) => Some(route.id().to_owned()),
                _ => None,
            }
        });
    match suggestion {
        Some(route) => format!("did you mean `{route}`?"),
        None => "write it as METHOD and template, e.g. `POST /v3/payments/{transactionId}/refund`"
            .to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{DEFAULT_MAX_CLIENTS, DEFAULT_MAX_QUEUED};
    use crate::limit::{LimitsConfig, QueueConfig};
    use crate::route::{family_routes, Allowlist, ApiFamily};
    use std::num::NonZeroUsize;
    use std::time::Duration;

    fn allowlist() -> Allowlist {
        Allowlist::new(family_routes(
            ApiFamily::OnlineV3,
            Duration::from_secs(5),
            None,
        ))
    }

    fn check(yaml: &str) -> Result<LimitsConfig, Vec<String>> {
        crate::config::limits_from_yaml(yaml, &allowlist())
    }

    fn config(yaml: &str) -> LimitsConfig {
        check(yaml).unwrap_or_else(|problems| panic!("{}", problems.join("\n")))
    }

    fn problems(yaml: &str) -> String {
        match check(yaml) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(problems) => problems.join("\n"),
        }
    }

    #[test]
    fn bare_number_rate_is_refused_with_its_line_and_a_suggestion() {
        let error = problems("limits:\n  global:\n    rate: 50\n");
        assert!(error.contains("50/s"), "{error}");
        assert!(error.contains("sidecar.yaml:3: rate:"), "{error}");
    }

    #[test]
    fn burst_defaults_to_the_count_per_period() {
        let limits = config(
            "limits:\n  global: {rate: 50/s}\n  routes:\n    \"POST /v3/payments/{transactionId}/refund\": {rate: 5/m, burst: 10}\n",
        );
        let global = limits.global.unwrap();
        assert_eq!(global.burst().get(), 50);
        assert_eq!(limits.routes.len(), 1);
        assert_eq!(
            limits.routes[0].template,
            "/v3/payments/{transactionId}/refund"
        );
        assert_eq!(limits.routes[0].bucket.burst().get(), 10);
        assert!(!limits.shadow);
        assert_eq!(limits.queue, None);
    }

    #[test]
    fn no_limits_section_means_no_limits() {
        assert_eq!(config(""), LimitsConfig::default());
        assert_eq!(config("limits: {}\n"), LimitsConfig::default());
    }

    #[test]
    fn zero_burst_is_refused_with_file_and_line() {
        let error = problems("limits:\n  shadow: true\n  global: {rate: 5/s, burst: 0}\n");
        assert!(error.contains("sidecar.yaml:3"), "{error}");
        assert!(
            error.contains("limits.global") && error.contains("burst"),
            "{error}"
        );
    }

    #[test]
    fn route_key_must_be_on_the_allowlist() {
        let error = problems(
            "limits:\n  routes:\n    \"POST /v3/nope\": {rate: 1/s}\n    \"POST /v3/payments/123/refund\":\n      rate: 1/s\n",
        );
        assert!(
            error.contains("sidecar.yaml:3") && error.contains("POST /v3/nope"),
            "{error}"
        );
        assert!(error.contains("sidecar.yaml:5"), "{error}");
        // A concrete path names the template to write instead.
        assert!(
            error.contains("did you mean `POST /v3/payments/{transactionId}/refund`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_in_limits_are_refused() {
        let error = problems("limits:\n  globl: {rate: 1/s}\n");
        assert!(error.contains("globl"), "{error}");
        let error = problems("limits:\n  global: {rate: 1/s, brust: 2}\n");
        assert!(error.contains("brust"), "{error}");
    }

    #[test]
    fn per_client_settings_are_checked() {
        let limits = config(
            "limits:\n  per_client:\n    header: X-Merchant-Client\n    rate: 10/s\n    burst: 20\n",
        );
        let client = limits.per_client.unwrap();
        assert_eq!(client.header, "x-merchant-client");
        assert_eq!(client.max_clients.get(), DEFAULT_MAX_CLIENTS);
        assert_eq!(client.bucket.burst().get(), 20);

        let error = problems(
            "limits:\n  per_client:\n    header: \"X Merchant\"\n    rate: 10/s\n    max_clients: 0\n",
        );
        assert!(
            error.contains("sidecar.yaml:3") && error.contains("header name"),
            "{error}"
        );
        assert!(
            error.contains("limits.per_client.max_clients: must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn queue_settings_are_checked() {
        let limits = config("limits:\n  queue:\n    max_wait: 2s\n");
        assert_eq!(
            limits.queue,
            Some(QueueConfig {
                max_wait: Duration::from_secs(2),
                max_queued: NonZeroUsize::new(DEFAULT_MAX_QUEUED).unwrap(),
            })
        );
        let error = problems("limits:\n  queue: {max_wait: 0s, max_queued: 0}\n");
        assert!(
            error.contains("limits.queue.max_wait: must be above 0"),
            "{error}"
        );
        assert!(
            error.contains("limits.queue.max_queued: must be at least 1"),
            "{error}"
        );
        assert!(problems("limits:\n  queue: {max_wait: 5m}\n").contains("above 60s"));
        assert!(problems("limits:\n  queue: {max_queued: 5}\n").contains("max_wait"));
    }

    #[test]
    fn shipped_example_limits_section_is_valid_when_uncommented() {
        let example = include_str!("../../config/sidecar.yaml");
        let start = example.find("# limits:").unwrap();
        let yaml: String = example[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or("")))
            .collect();
        let limits = config(&yaml);
        assert!(
            limits.global.is_some() && limits.per_client.is_some(),
            "{yaml}"
        );
        assert_eq!(limits.routes.len(), 1);
        assert_eq!(limits.queue.unwrap().max_wait, Duration::from_secs(2));
    }
}
