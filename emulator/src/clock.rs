//! The emulator's clock: the system time plus an offset that a test or a merchant moves
//! forward ([`Clock::advance`]), so that the 20-minute reservation limit, authorisation
//! expiry and regKey expiry can be rehearsed without waiting. It never moves back.
//!
//! Times are plain microseconds since the Unix epoch, so the ledger's rules stay pure
//! functions of `now`; LINE Pay's UTC date strings (`2016-02-05T09:59:06Z`) are
//! humantime's RFC 3339 formatting, and the `YYYYMMDD` prefix of transaction ids is
//! read off that string.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second humantime formats (9999-12-31T23:59:59Z), in microseconds.
const LAST_FORMATTABLE: u64 = 253_402_300_799 * 1_000_000;

/// System time plus a forward-only offset, shared by every clone of an emulator.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_micros: AtomicU64,
}

impl Clock {
    /// Microseconds since the epoch on the emulator's clock.
    pub(crate) fn now(&self) -> u64 {
        system_now().saturating_add(self.offset_micros.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `by`; returns the total offset.
    pub(crate) fn advance(&self, by: Duration) -> Duration {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        let mut total = 0;
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .offset_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |offset| {
                total = offset.saturating_add(micros);
                Some(total)
            });
        Duration::from_micros(total)
    }

    /// How far the clock has been moved forward in total.
    pub(crate) fn offset(&self) -> Duration {
        Duration::from_micros(self.offset_micros.load(Ordering::Relaxed))
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DDThh:mm:ssZ` for a time in microseconds since the epoch (capped at the
/// end of year 9999, the last date the format can write).
pub(crate) fn iso8601(micros: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_micros(micros.min(LAST_FORMATTABLE));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The date as the number `YYYYMMDD`, capped at 9999-12-31 so it stays eight digits.
pub(crate) fn yyyymmdd(micros: u64) -> u64 {
    iso8601(micros)
        .bytes()
        .take(10)
        .filter(u8::is_ascii_digit)
        .fold(0, |number, digit| number * 10 + u64::from(digit - b'0'))
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
        assert_eq!(iso8601(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn id_prefix_is_the_eight_digit_date() {
        assert_eq!(yyyymmdd(1_798_675_200 * SECOND), 20_261_231);
        assert_eq!(yyyymmdd(0), 19_700_101);
        assert_eq!(yyyymmdd(u64::MAX), 99_991_231);
    }

    #[test]
    fn the_clock_only_moves_forward_by_what_it_is_told() {
        let clock = Clock::default();
        let before = clock.now();
        assert_eq!(
            clock.advance(Duration::from_secs(21 * 60)),
            Duration::from_secs(1260)
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(clock.offset(), Duration::from_secs(22 * 60));
        let moved = clock.now() - before;
        // 22 minutes, plus however long this test took to run (far less than a minute).
        assert!(
            (22 * 60 * SECOND..23 * 60 * SECOND).contains(&moved),
            "{moved}"
        );
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), u64::MAX);
    }
}
