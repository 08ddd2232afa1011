//! Calendar arithmetic for the emulator: LINE Pay's UTC date strings
//! (`2016-02-05T09:59:06Z`) and the `YYYYMMDD` prefix of its transaction ids.
//!
//! The ledger takes times as plain numbers so its tests are deterministic; only
//! [`now`] reads the system clock. No date crate: one well-known algorithm suffices.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DDThh:mm:ssZ` for a time in microseconds since the epoch.
pub(crate) fn iso8601(micros: u64) -> String {
    let seconds = micros / 1_000_000;
    let (year, month, day) = civil_date(seconds / 86_400);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The date as the number `YYYYMMDD`, capped at 9999-12-31 so it stays eight digits.
pub(crate) fn yyyymmdd(micros: u64) -> u64 {
    let (year, month, day) = civil_date(micros / 1_000_000 / 86_400);
    (year * 10_000 + month * 100 + day).min(99_991_231)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn dates_match_line_pay_samples() {
        // The v2 details sample: "transactionDate": "2016-02-05T09:59:06Z".
        assert_eq!(iso8601(1_454_666_346 * SECOND), "2016-02-05T09:59:06Z");
        assert_eq!(
            iso8601(951_868_799 * SECOND + 999_999),
            "2000-02-29T23:59:59Z"
        );
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn id_prefix_is_the_eight_digit_date() {
        assert_eq!(yyyymmdd(1_798_675_200 * SECOND), 20_261_231);
        assert_eq!(yyyymmdd(0), 19_700_101);
        assert_eq!(yyyymmdd(u64::MAX), 99_991_231);
    }
}
