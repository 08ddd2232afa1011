//! Numbers and dates as the text log writes them, without `core::fmt`, and the per-thread
//! buffer a line is written into: the parts of the binary's log formatters (`logline`,
//! `logfmt`) that can be tested on their own
//! (their tests are too heavy to run beside `tests/alloc.rs`'s allocation count, which
//! compiles the formatters in).

use std::cell::Cell;
use std::thread::LocalKey;

/// `YYYY-MM-DDTHH:MM:SS.`: the part of an RFC 3339 timestamp that changes once a second.
pub type SecondPrefix = [u8; 20];

/// The first second of year 10000: [`second_prefix`] takes the seconds before it.
pub const YEAR_10000: u64 = 253_402_300_800;

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch, before year 10000 (proleptic
/// Gregorian calendar, UTC, no leap seconds: what `DateTime` computes).
pub fn second_prefix(seconds: u64) -> SecondPrefix {
    let days = seconds / 86_400;
    let of_day = (seconds % 86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut prefix = *b"0000-00-00T00:00:00.";
    put_digits(&mut prefix[0..4], year);
    put_digits(&mut prefix[5..7], month);
    put_digits(&mut prefix[8..10], day);
    put_digits(&mut prefix[11..13], of_day / 3_600);
    put_digits(&mut prefix[14..16], of_day / 60 % 60);
    put_digits(&mut prefix[17..19], of_day % 60);
    prefix
}

/// Year, month and day of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    // Counted from 0000-03-01, so that the leap day ends each 400-year era's years.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// `value`'s last `out.len()` decimal digits, zero-padded.
pub fn put_digits(out: &mut [u8], mut value: u32) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Capacity past which a line buffer is dropped after use instead of kept for the next
/// line: one huge line (an error's long chain) does not pin its memory on the thread.
pub const SCRATCH_KEPT: usize = 64 * 1024;

/// Runs `write` with this thread's buffer from `key`, then puts the buffer back for the
/// next line unless `keep` says it grew too large.
///
/// The buffer is taken out of its cell for the time rather than borrowed: a line written
/// while the cell is empty (another line of this thread under way, or the thread's
/// locals being destroyed, `key`'s before a logging destructor's) gets a fresh buffer,
/// never a panic.
pub fn with_scratch<B: Default, T>(
    key: &'static LocalKey<Cell<B>>,
    keep: impl FnOnce(&B) -> bool,
    write: impl FnOnce(&mut B) -> T,
) -> T {
    let mut buffer = key.try_with(Cell::take).unwrap_or_default();
    let result = write(&mut buffer);
    if keep(&buffer) {
        // Fails only while the thread's locals are being destroyed: the buffer goes too.
        let _ = key.try_with(|cell| cell.set(buffer));
    }
    result
}

/// Room for `debug_decimal`'s text: a sign, at most 14 digits, a point, and up to 17
/// zeros around them (`0.0000…`, `1000….0`).
pub const FLOAT_TEXT: usize = 40;

/// Fewer significant digits than this: where a decimal can never be a tie between two
/// doubles (a midpoint between neighbouring doubles below 1e16 needs 16 or more).
const FLOAT_DIGITS: f64 = 1e14;

/// Powers of ten exact as `f64` (up to 1e22): the fractional digits tried.
const POWERS_OF_TEN: [f64; 18] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17,
];

/// What `Debug` writes for `value` when it is written in positional notation (zero, and
/// magnitudes from 1e-4 up to 1e16) with fewer than 15 significant digits, as
/// millisecond figures are: the shortest decimal that reads back as `value`, with at
/// least one digit after the point. `None` for the rest (exponent notation, NaN,
/// infinities, long decimals), which `Debug` itself writes.
///
/// The shortest decimal is found by fractional digits `d` = 0, 1, 2…: the only decimal
/// with `d` fractional digits that can read back as `value` is `n = round(value × 10^d)`
/// (the product's rounding and `value`'s own stay far below half a unit of `n` while
/// `n < 1e14`), and it reads back as `value` exactly when `n / 10^d == value` (both exact
/// operands, one correctly rounded division: what parsing the decimal gives). The first
/// `d` that reads back has the fewest digits, and it is alone at that `d`, which is what
/// `core`'s shortest-digit formatting picks.
pub fn debug_decimal(value: f64, text: &mut [u8; FLOAT_TEXT]) -> Option<&str> {
    let magnitude = value.abs();
    if !magnitude.is_finite() || (magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude)) {
        return None;
    }
    let reads_back = |(d, &power): (usize, &f64)| {
        let scaled = (magnitude * power).round();
        (scaled < FLOAT_DIGITS && scaled / power == magnitude).then_some((scaled as u64, d))
    };
    // Millisecond figures have at most three fractional digits: tried first. A decimal with
    // fewer that reads back is this one without trailing zeros (times a power of ten it
    // is a decimal with three that reads back, so it is `n` at d = 3), so dropping them
    // gives the shortest, one search step instead of four.
    let (digits, fractional) = match reads_back((3, &POWERS_OF_TEN[3])) {
        Some((mut digits, mut fractional)) => {
            while fractional > 0 && digits % 10 == 0 {
                digits /= 10;
                fractional -= 1;
            }
            (digits, fractional)
        }
        None => POWERS_OF_TEN.iter().enumerate().find_map(reads_back)?,
    };
    let mut itoa = itoa::Buffer::new();
    let digits = itoa.format(digits).as_bytes();
    let mut length = 0;
    let mut put = |bytes: &[u8]| -> Option<()> {
        text.get_mut(length..length + bytes.len())?
            .copy_from_slice(bytes);
        length += bytes.len();
        Some(())
    };
    if value.is_sign_negative() {
        put(b"-")?;
    }
    if fractional == 0 {
        put(digits)?;
        put(b".0")?;
    } else if digits.len() > fractional {
        let point = digits.len() - fractional;
        put(&digits[..point])?;
        put(b".")?;
        put(&digits[point..])?;
    } else {
        put(b"0.")?;
        for _ in digits.len()..fractional {
            put(b"0")?;
        }
        put(digits)?;
    }
    std::str::from_utf8(&text[..length]).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn prefix(seconds: u64) -> String {
        String::from_utf8(second_prefix(seconds).to_vec()).unwrap()
    }

    #[test]
    fn second_prefixes_are_rfc_3339_utc() {
        // Expected values from `date -u -d @<seconds> +%FT%T`.
        assert_eq!(prefix(0), "1970-01-01T00:00:00.");
        assert_eq!(prefix(951_782_400), "2000-02-29T00:00:00.");
        assert_eq!(prefix(4_107_542_400), "2100-03-01T00:00:00.");
        assert_eq!(prefix(1_735_689_599), "2024-12-31T23:59:59.");
        assert_eq!(prefix(YEAR_10000 - 1), "9999-12-31T23:59:59.");
        let mut digits = [0u8; 6];
        put_digits(&mut digits, 42);
        assert_eq!(&digits, b"000042");
        put_digits(&mut digits[..2], 1_234);
        assert_eq!(&digits, b"340042");
    }

    #[test]
    fn date_and_time_of_every_day_agree_with_httpdate() {
        // Another implementation of the same calendar, one instant on each day of 1970-2400
        // at a time of day that moves with the day.
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        for day in 0..157_000u64 {
            let seconds = day * 86_400 + (day * 7_919) % 86_400;
            let ours = String::from_utf8(second_prefix(seconds).to_vec()).unwrap() + "000000Z";
            let theirs = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds));
            // "Sun, 06 Nov 1994 08:49:37 GMT"
            let month = months.iter().position(|m| *m == &theirs[8..11]).unwrap() + 1;
            let expected = format!(
                "{}-{month:02}-{}T{}.000000Z",
                &theirs[12..16],
                &theirs[5..7],
                &theirs[17..25]
            );
            assert_eq!(ours, expected, "{seconds}");
        }
    }

    #[test]
    fn a_scratch_buffer_is_kept_for_the_next_use_unless_too_large() {
        thread_local! {
            static TEXT: Cell<String> = const { Cell::new(String::new()) };
        }
        let keep = |text: &String| text.capacity() <= 100;
        with_scratch(&TEXT, keep, |text| text.push_str("first"));
        let seen = with_scratch(&TEXT, keep, |text| {
            // Used again while out of its cell: a fresh buffer, dropped as too large.
            let inner = with_scratch(&TEXT, keep, |inner| {
                let seen = inner.clone();
                inner.push_str(&"x".repeat(200));
                seen
            });
            assert_eq!(inner, "");
            let seen = text.clone();
            text.push_str(" second");
            seen
        });
        assert_eq!(seen, "first");
        with_scratch(&TEXT, keep, |text| {
            assert_eq!(text, "first second");
            text.push_str(&"y".repeat(200));
        });
        assert_eq!(with_scratch(&TEXT, keep, |text| text.clone()), "");
    }

    fn float_text(value: f64) -> Option<String> {
        let mut text = [0u8; FLOAT_TEXT];
        debug_decimal(value, &mut text).map(str::to_owned)
    }

    /// `debug_decimal` writes `Debug`'s bytes, or leaves the value to `Debug`.
    fn check_float(value: f64) {
        let debug = format!("{value:?}");
        match float_text(value) {
            Some(text) => assert_eq!(text, debug, "{:#x}", value.to_bits()),
            None => assert!(
                !value.is_finite()
                    || debug.contains('e')
                    || debug
                        .trim_start_matches(['-', '0', '.'])
                        .bytes()
                        .filter(u8::is_ascii_digit)
                        .count()
                        >= 15,
                "{debug} left to Debug"
            ),
        }
    }

    #[test]
    fn floats_as_debug_writes_them() {
        let edges = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            1.5,
            0.1,
            0.2 + 0.1,
            0.431,
            1e-4,
            1e16,
            9_999_999_999_999_998.0,
            1234567890123456.7,
            0.000_123_456_789_012_345_67,
            100.0,
            1e15,
            123.456,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::EPSILON,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            5e-324,
        ];
        for value in edges {
            check_float(value);
            check_float(-value);
            check_float(f64::from_bits(value.to_bits() + 1));
            check_float(f64::from_bits(value.to_bits().saturating_sub(1)));
        }
        assert_eq!(float_text(1e-4).as_deref(), Some("0.0001"));
        assert_eq!(float_text(1e16), None);
        assert_eq!(float_text(1e15), None);
        assert_eq!(float_text(100_000_000_000_001.0), None);
        assert_eq!(
            float_text(99_999_999_999_999.0).as_deref(),
            Some("99999999999999.0")
        );
        assert_eq!(
            float_text(9_999_999_999_999.0).as_deref(),
            Some("9999999999999.0")
        );
        assert_eq!(float_text(-0.000_123_4).as_deref(), Some("-0.0001234"));
        assert_eq!(float_text(1_000.0).as_deref(), Some("1000.0"));
        assert_eq!(float_text(0.431).as_deref(), Some("0.431"));
        // Every millisecond figure `milliseconds` makes up to ~17 minutes, then a sweep
        // of bit patterns across the decimal range.
        for micros in 0..1_000_000u64 {
            let value = (micros as f64).round() / 1e3;
            check_float(value);
        }
        let mut bits: u64 = 0x3f1a_36e2_eb1c_432d; // 1e-4
        while bits < 0x4341_c379_37e0_8000 {
            // 1e16
            check_float(f64::from_bits(bits));
            bits += 0x0000_01f3_a1b5_9c47;
        }
    }

    proptest::proptest! {
        #[test]
        fn any_float_as_debug_writes_it(bits: u64) {
            check_float(f64::from_bits(bits));
        }

        #[test]
        fn short_decimals_as_debug_writes_them(digits in 0u64..200_000_000_000_000, fractional in 0u32..22) {
            let value: f64 = format!("{digits}e-{fractional}").parse().unwrap();
            check_float(value);
            check_float(-value);
            check_float(f64::from_bits(value.to_bits() + 1));
        }
    }

    #[test]
    fn decimals_of_many_values_as_debug_writes_them() {
        let mut text = [0u8; FLOAT_TEXT];
        let mut check = |value: f64| {
            if let Some(ours) = debug_decimal(value, &mut text) {
                assert_eq!(ours, format!("{value:?}"), "{:e}", value);
            }
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..100_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            check(f64::from_bits(state));
            check(k as f64 / 1000.0);
            check(k as f64 * 0.001);
            check((state % 100_000_000_000_000) as f64 / 1000.0);
            check((state % 1_000_000_000) as f64 / 1e7);
            check((state % 10_000) as f64 * 1e-8);
            check(-((state % 1_000_000) as f64 / 1e3) * 1e12);
            let f = f64::from_bits(state) % 1e6;
            if f.is_finite() {
                check((f * 1000.0).round() / 1000.0);
                check(f);
            }
        }
    }
}
