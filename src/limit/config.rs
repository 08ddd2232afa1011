//! The `limits:` section: its raw YAML shape, and `validate`, which turns it into a typed
//! [`LimitsConfig`] or a list of problems, each with its file:line.
//!
//! Kept apart from admission (`limit/mod.rs`) because it is pure: it knows the
//! allowlist and the YAML, never a clock or a bucket's state. Every bound on a rate, a
//! burst or the queue is checked here, so the running limiters can trust their input
//! (governor's arithmetic cannot overflow within these bounds).

use crate::config::ConfigDuration;
use crate::route::{Allowlist, Match};
use governor::Quota;
use http::{HeaderName, Method};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// Clients tracked at most, unless `per_client.max_clients` says otherwise.
const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Calls waiting at most, unless `queue.max_queued` says otherwise.
const DEFAULT_MAX_QUEUED: usize = 100;

/// The largest count per period and the largest burst: far beyond any LINE Pay quota,
/// and small enough that governor's arithmetic (nanoseconds in a `u64`) cannot overflow.
const MAX_COUNT: u32 = 1_000_000;
const MAX_BURST: u32 = 1_000_000;
const MAX_CLIENTS: usize = 1_000_000;
/// A queued call holds an app connection open; past a minute the app's own HTTP timeout
/// would usually have given up on it already.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Raw shape of the `limits:` section.

/// The `limits:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Count and log what would be refused, refuse nothing.
    #[serde(default)]
    shadow: bool,
    global: Option<Spanned<RawBucket>>,
    /// Keyed by route id, e.g. `POST /v3/payments/{transactionId}/refund`.
    #[serde(default)]
    routes: BTreeMap<String, Spanned<RawBucket>>,
    per_client: Option<Spanned<RawClientLimit>>,
    queue: Option<Spanned<RawQueue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    rate: Rate,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientLimit {
    header: String,
    rate: Rate,
    burst: Option<u32>,
    max_clients: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    max_wait: ConfigDuration,
    max_queued: Option<usize>,
}

/// A rate written `50/s`, `20/m` or `100/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rate(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            3600 => "h",
            60 => "m",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Parses `50/s`, `20/m`, `100/h`. A bare number is refused: per second and per minute
/// are both plausible, and guessing wrong is a factor of 60.
fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    let Some((count, unit)) = text.split_once('/') else {
        return Err(if text.parse::<u64>().is_ok() {
            format!("rate `{text}` needs a period: write {text}/s, {text}/m or {text}/h")
        } else {
            format!("`{text}` is not a rate such as 50/s, 20/m or 100/h")
        });
    };
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate such as 50/s, 20/m or 100/h"))?;
    let period = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => {
            return Err(format!(
                "rate `{text}` has an unknown period: use /s, /m or /h"
            ))
        }
    };
    let Some(count) = NonZeroU32::new(count) else {
        return Err(format!(
            "rate `{text}` allows nothing; use at least 1, or remove the limit"
        ));
    };
    if count.get() > MAX_COUNT {
        return Err(format!(
            "rate `{text}` is above {MAX_COUNT} per period; remove the limit instead"
        ));
    }
    Ok(Rate { count, period })
}

// ---------------------------------------------------------------------------------------
// Validated limits.

/// Validated limits; the default is no limit at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    pub shadow: bool,
    pub global: Option<Bucket>,
    pub routes: Vec<RouteLimit>,
    pub per_client: Option<ClientLimit>,
    pub queue: Option<QueueConfig>,
}

/// One bucket's shape: refills at `rate`, holds at most `burst` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    rate: Rate,
    burst: NonZeroU32,
    quota: Quota,
}

impl Bucket {
    /// `burst` defaults to the rate's count per period.
    fn new(rate: Rate, burst: Option<u32>) -> Result<Bucket, String> {
        let burst = match burst {
            None => rate.count,
            Some(burst) if burst > MAX_BURST => {
                return Err(format!("burst {burst} is above {MAX_BURST}"))
            }
            Some(burst) => NonZeroU32::new(burst)
                .ok_or_else(|| "burst must be at least 1 (one call)".to_owned())?,
        };
        // Within these bounds governor's nanosecond arithmetic cannot overflow: at most
        // an hour between tokens times a million tokens of burst.
        if rate.period > Duration::from_secs(3600) {
            return Err(format!("rate {rate}: the period must be /s, /m or /h"));
        }
        // At most a million per second: the interval is at least a microsecond.
        let quota = Quota::with_period(rate.period / rate.count.get())
            .ok_or_else(|| format!("rate {rate} is too fast"))?
            .allow_burst(burst);
        Ok(Bucket { rate, burst, quota })
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The bucket as governor's `Quota`, for the running limiters.
    pub(super) fn quota(&self) -> Quota {
        self.quota
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    pub method: Method,
    pub template: String,
    pub bucket: Bucket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimit {
    /// The request header naming the client, e.g. `x-merchant-client`.
    pub header: HeaderName,
    pub bucket: Bucket,
    pub max_clients: NonZeroUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_wait: Duration,
    pub max_queued: NonZeroUsize,
}

/// Checks the `limits:` section against the allowlist, collecting every problem with its
/// file:line (`at` formats a line number).
pub fn validate(
    raw: &RawLimits,
    allowlist: &Allowlist,
    at: &dyn Fn(usize) -> String,
) -> Result<LimitsConfig, Vec<String>> {
    let mut problems = Vec::new();
    let line_of = |spanned_line: u64| at(usize::try_from(spanned_line).unwrap_or(usize::MAX));

    let global = raw.global.as_ref().and_then(|entry| {
        Bucket::new(entry.value.rate, entry.value.burst)
            .map_err(|problem| {
                problems.push(format!(
                    "{}: limits.global: {problem}",
                    line_of(entry.referenced.line())
                ))
            })
            .ok()
    });

    let mut routes = Vec::new();
    for (id, entry) in &raw.routes {
        let line = line_of(entry.referenced.line());
        let Some(route) = allowlist.routes().iter().find(|r| r.id() == *id) else {
            problems.push(format!(
                "{line}: limits.routes: `{id}` is not an allowed route; {}",
                suggest_route(id, allowlist)
            ));
            continue;
        };
        match Bucket::new(entry.value.rate, entry.value.burst) {
            Ok(bucket) => routes.push(RouteLimit {
                method: route.method.clone(),
                template: route.template.clone(),
                bucket,
            }),
            Err(problem) => problems.push(format!("{line}: limits.routes.\"{id}\": {problem}")),
        }
    }

    let per_client = raw.per_client.as_ref().and_then(|entry| {
        let line = line_of(entry.referenced.line());
        let raw = &entry.value;
        let before = problems.len();
        let header = HeaderName::from_bytes(raw.header.trim().as_bytes())
            .map_err(|_| {
                problems.push(format!(
                    "{line}: limits.per_client.header: `{}` is not a header name such as X-Merchant-Client",
                    raw.header
                ))
            })
            .ok();
        let bucket = Bucket::new(raw.rate, raw.burst)
            .map_err(|problem| problems.push(format!("{line}: limits.per_client: {problem}")))
            .ok();
        let max_clients = raw.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
        if max_clients > MAX_CLIENTS {
            problems.push(format!(
                "{line}: limits.per_client.max_clients: {max_clients} is above {MAX_CLIENTS}"
            ));
        }
        let max_clients = NonZeroUsize::new(max_clients).or_else(|| {
            problems.push(format!(
                "{line}: limits.per_client.max_clients must be at least 1"
            ));
            None
        });
        match (header, bucket, max_clients) {
            (Some(header), Some(bucket), Some(max_clients)) if problems.len() == before => {
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
        let line = line_of(entry.referenced.line());
        let max_wait = entry.value.max_wait.0;
        let mut ok = true;
        if max_wait.is_zero() {
            problems.push(format!(
                "{line}: limits.queue.max_wait must be above 0; remove `queue` to refuse at once"
            ));
            ok = false;
        } else if max_wait > MAX_QUEUE_WAIT {
            problems.push(format!(
                "{line}: limits.queue.max_wait is above {}s: a queued call holds the app's connection, and the app's own timeout is usually shorter",
                MAX_QUEUE_WAIT.as_secs()
            ));
            ok = false;
        }
        let max_queued =
            NonZeroUsize::new(entry.value.max_queued.unwrap_or(DEFAULT_MAX_QUEUED)).or_else(|| {
                problems.push(format!(
                    "{line}: limits.queue.max_queued must be at least 1; remove `queue` to refuse at once"
                ));
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

    if problems.is_empty() {
        Ok(LimitsConfig {
            shadow: raw.shadow,
            global,
            routes,
            per_client,
            queue,
        })
    } else {
        Err(problems)
    }
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
pub(super) mod tests {
    use super::*;
    use crate::route::{table_routes, V3_ROUTES};

    /// The shipped v3 routes: the allowlist every limits test is checked against.
    pub(in crate::limit) fn allowlist() -> Allowlist {
        Allowlist::new(table_routes(V3_ROUTES, Duration::from_secs(5), None))
    }

    fn check(yaml: &str) -> Result<LimitsConfig, Vec<String>> {
        let raw = crate::config::from_yaml_str(yaml).map_err(|e| vec![e])?;
        validate(&raw.limits, &allowlist(), &|line| {
            format!("sidecar.yaml:{line}")
        })
    }

    pub(in crate::limit) fn config(yaml: &str) -> LimitsConfig {
        check(yaml).unwrap_or_else(|problems| panic!("{}", problems.join("\n")))
    }

    fn problems(yaml: &str) -> String {
        match check(yaml) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(problems) => problems.join("\n"),
        }
    }

    #[test]
    fn rates_are_written_with_a_period() {
        let rate = parse_rate("50/s").unwrap();
        assert_eq!(
            (rate.count.get(), rate.period),
            (50, Duration::from_secs(1))
        );
        assert_eq!(
            parse_rate(" 20 / m ").unwrap().period,
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_rate("100/h").unwrap().period,
            Duration::from_secs(3600)
        );
        assert_eq!(parse_rate("100/h").unwrap().to_string(), "100/h");

        let bare = parse_rate("50").unwrap_err();
        assert!(bare.contains("50/s") && bare.contains("50/m"), "{bare}");
        assert!(parse_rate("50/d").unwrap_err().contains("/s, /m or /h"));
        assert!(parse_rate("0/s").unwrap_err().contains("at least 1"));
        assert!(parse_rate("-1/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("2000000/s").is_err());
    }

    #[test]
    fn bare_number_rate_is_refused_with_its_line_and_a_suggestion() {
        let error = problems("limits:\n  global:\n    rate: 50\n");
        assert!(error.contains("50/s"), "{error}");
        assert!(error.contains("line 3"), "{error}");
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
        assert!(error.contains("max_clients must be at least 1"), "{error}");
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
        assert!(error.contains("max_wait must be above 0"), "{error}");
        assert!(error.contains("max_queued must be at least 1"), "{error}");
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
