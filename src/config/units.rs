//! Units a configuration value is written in, each parsed in one place for the YAML
//! file, the flags and the environment alike: durations (`5s`, `250ms`), rates (`50/s`).

use super::setting::{defer_value_problem, StandIn};
use crate::limit::Rate;
use serde::{Deserialize, Deserializer};
use std::num::NonZeroU32;
use std::time::Duration;

/// The longest duration any setting accepts: nothing here needs longer, and far larger
/// values overflow clock arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The longest retention `journal.max_age` accepts: its default is 30 days, so it is
/// written in days, not bounded by [`MAX_DURATION`]. Ten years of milliseconds are far
/// from overflowing the journal's `i64` cut-off arithmetic.
pub const MAX_RETENTION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// The largest count per period: far beyond any LINE Pay quota, and small enough that
/// governor's arithmetic (nanoseconds in a `u64`) cannot overflow.
pub(crate) const MAX_RATE_COUNT: u32 = 1_000_000;

/// A duration written as `5s`, `250ms`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // Read past a bad duration so the rest of the file is checked too; the problem
        // is reported with its key and line (`setting::claim_pending`).
        Ok(parse_duration(&text)
            .map(ConfigDuration)
            .unwrap_or_else(|problem| {
                defer_value_problem(problem, StandIn::Unset);
                ConfigDuration(Duration::from_secs(1))
            }))
    }
}

/// A retention period written as `30d`, `720h` or `90 days`: a duration up to
/// [`MAX_RETENTION`] (`journal.max_age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigRetention(pub(crate) Duration);

impl<'de> Deserialize<'de> for ConfigRetention {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // As for `ConfigDuration`: read past a bad value, report it with its key and line.
        Ok(parse_retention(&text)
            .map(ConfigRetention)
            .unwrap_or_else(|problem| {
                defer_value_problem(problem, StandIn::Unset);
                ConfigRetention(Duration::from_secs(1))
            }))
    }
}

/// Parses `5s`, `250ms`, `2m`, `1h` (and humantime's longer forms such as `1m 30s`).
/// A bare number is refused because its unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_at_most(text, MAX_DURATION, "24h")
}

/// Parses a retention period: a duration as [`parse_duration`] reads it, in days too
/// (`30d`), up to [`MAX_RETENTION`].
pub(crate) fn parse_retention(text: &str) -> Result<Duration, String> {
    parse_duration_at_most(text, MAX_RETENTION, "3650d")
}

fn parse_duration_at_most(text: &str, max: Duration, max_text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty duration: write one such as 5s or 250ms".to_owned());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` needs a unit: ms, s, m or h (e.g. {text}s)"
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|error| match error {
        humantime::DurationError::UnknownUnit { .. } => {
            format!("`{text}` has an unknown unit: use ms, s, m or h")
        }
        humantime::DurationError::NumberOverflow => {
            format!("`{text}` is longer than the {max_text} this setting can take")
        }
        _ => format!("`{text}` is not a duration such as 5s or 250ms"),
    })?;
    if duration > max {
        return Err(format!(
            "`{text}` is longer than the {max_text} this setting can take"
        ));
    }
    Ok(duration)
}

/// A rate written `50/s`, `20/m` or `100/h`, as the YAML gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigRate(pub(crate) Rate);

impl<'de> Deserialize<'de> for ConfigRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(parse_rate(&text).map(ConfigRate).unwrap_or_else(|problem| {
            // 1/s: a valid rate, so its bucket raises no problem of its own.
            defer_value_problem(problem, StandIn::Keep);
            ConfigRate(Rate {
                count: NonZeroU32::MIN,
                period: Duration::from_secs(1),
            })
        }))
    }
}

/// Parses `50/s`, `20/m`, `100/h`. A bare number is refused: per second and per minute
/// are both plausible, and guessing wrong is a factor of 60.
pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
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
    if count.get() > MAX_RATE_COUNT {
        return Err(format!(
            "rate `{text}` is above {MAX_RATE_COUNT} per period; remove the limit instead"
        ));
    }
    Ok(Rate { count, period })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
    fn retention_is_written_in_days_up_to_ten_years() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(parse_retention("30d").unwrap(), 30 * day);
        assert_eq!(parse_retention("720h").unwrap(), 30 * day);
        assert_eq!(parse_retention("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_retention("3650d").unwrap(), MAX_RETENTION);
        assert!(parse_retention("3651d").unwrap_err().contains("3650d"));
        assert!(parse_retention("30").unwrap_err().contains("needs a unit"));
        // Every other duration keeps its 24h bound.
        assert!(parse_duration("30d").unwrap_err().contains("24h"));
    }
}
