//! The text log's line: the same bytes as `tracing-subscriber`'s default `Format<Full>`
//! with its `SystemTime` timer when colours are off, written with fewer steps.
//!
//! `Format<Full>` writes the timestamp, level and target each through `write!` and
//! `Display` (the date is recomputed from the epoch on every line); on the per-call
//! `call forwarded` line that was about 4,000 of its ~10,000 instructions
//! (`scripts/bench-instructions.sh`, callgrind). Here the timestamp's date and time of day
//! are kept per thread for the current second and only the microseconds are written per
//! line, and the level and target are copied as they are: about 650. Spans and fields are written as
//! `Format<Full>` writes them. Coloured output (a terminal), events from the `log` crate
//! (their target and location are carried in fields) and clocks outside years 1970-9999
//! go through `Format<Full>` itself. A test below formats the same events with both and
//! compares the bytes.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime as SystemTimer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
// From year 10000 `tracing-subscriber` writes `+` and more digits: those instants (never
// met) go through its own timer.
use linepay_sidecar::logtext::{put_digits, second_prefix, SecondPrefix, YEAR_10000};

/// `Format<Full>`'s line without its per-line date arithmetic (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct PlainFormat {
    full: Format<Full, SystemTimer>,
}

impl<S, N> FormatEvent<S, N> for PlainFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() || event.is_log() {
            return self.full.format_event(ctx, writer, event);
        }
        match Stamp::now() {
            Some(stamp) => writer.write_str(stamp.text(&mut [0; 27]))?,
            // `Format<Full>` writes `<unknown time>` only when the timer fails, which its
            // `SystemTime` never does.
            None => {
                tracing_subscriber::fmt::time::FormatTime::format_time(&SystemTimer, &mut writer)?
            }
        }
        let meta = event.metadata();
        writer.write_char(' ')?;
        writer.write_str(level_label(meta.level()))?;
        writer.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        writer.write_char('{')?;
                        writer.write_str(fields)?;
                        writer.write_char('}')?;
                    }
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// `Format<Full>`'s level column, as its `FmtLevel` pads it without colours.
fn level_label(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        _ => "ERROR",
    }
}

/// The last second formatted on this thread and its prefix.
type CachedSecond = (u64, SecondPrefix);

thread_local! {
    static SECOND: Cell<CachedSecond> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// One line's wall-clock time, split as `tracing-subscriber`'s `DateTime` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    seconds: u64,
    micros: u32,
}

impl Stamp {
    /// Now, or `None` before the epoch or from year 10000 on.
    fn now() -> Option<Stamp> {
        Stamp::at(SystemTime::now())
    }

    fn at(time: SystemTime) -> Option<Stamp> {
        let since = time.duration_since(UNIX_EPOCH).ok()?;
        (since.as_secs() < YEAR_10000).then(|| Stamp {
            seconds: since.as_secs(),
            micros: since.subsec_micros(),
        })
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as `DateTime`'s `Display` writes it.
    fn text(self, line: &mut [u8; 27]) -> &str {
        let prefix = SECOND.with(|cached| {
            let (second, prefix) = cached.get();
            if second == self.seconds {
                prefix
            } else {
                let prefix = second_prefix(self.seconds);
                cached.set((self.seconds, prefix));
                prefix
            }
        });
        line[..20].copy_from_slice(&prefix);
        put_digits(&mut line[20..26], self.micros);
        line[26] = b'Z';
        // Only ASCII digits and punctuation were written.
        std::str::from_utf8(line).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn stamp(seconds: u64, micros: u32) -> String {
        let mut text = String::new();
        let at = UNIX_EPOCH + Duration::new(seconds, micros * 1_000 + 999);
        text.push_str(Stamp::at(at).unwrap().text(&mut [0; 27]));
        text
    }

    #[test]
    fn timestamps_are_rfc_3339_utc_with_microseconds() {
        // Expected values from `date -u -d @<seconds> +%FT%T`.
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(stamp(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(stamp(4_107_542_400, 42), "2100-03-01T00:00:00.000042Z");
        assert_eq!(stamp(1_735_689_599, 500_000), "2024-12-31T23:59:59.500000Z");
        assert_eq!(stamp(1_709_164_800, 123_456), "2024-02-29T00:00:00.123456Z");
        assert_eq!(stamp(1_796_558_399, 7), "2026-12-06T11:59:59.000007Z");
        assert_eq!(stamp(YEAR_10000 - 1, 0), "9999-12-31T23:59:59.000000Z");
        assert_eq!(
            Stamp::at(UNIX_EPOCH + Duration::from_secs(YEAR_10000)),
            None
        );
        assert_eq!(Stamp::at(UNIX_EPOCH - Duration::from_secs(1)), None);
    }

    fn events() {
        tracing::info!(
            request_id = "r-1", method = %http::Method::POST, status = 200u16,
            upstream_ms = Some(0.431), elapsed_ms = 1.5, "call forwarded"
        );
        tracing::warn!(code = "invalid_json", "call refused");
        tracing::error!("an error");
        tracing::debug!(target: "other::target", n = 1u8, "debug");
        tracing::info!(
            target: "a::target::longer::than::the::head::has::room::for::in::one::piece::which::is::ninety::bytes",
            "long target"
        );
        tracing::trace!(quote = "a\"b\u{7}é", "trace");
        let outer = tracing::info_span!("outer", id = "s-1", n = 2u32);
        let _outer = outer.enter();
        let empty = tracing::info_span!("empty");
        let _empty = empty.enter();
        tracing::info!(inside = "span");
        drop(_empty);
        tracing::warn!("in one span \x1b[2J");
    }

    fn formatted(ours: bool, ansi: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(ansi)
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(crate::logfmt::PlainFields);
        if ours {
            let subscriber = builder.event_format(PlainFormat::default()).finish();
            tracing::subscriber::with_default(subscriber, events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// The line with its timestamp's digits (up to the first `Z`) as zeros: the two runs
    /// format different instants.
    fn without_time(line: &str) -> String {
        let end = line.find('Z').unwrap() + 1;
        let (time, rest) = line.split_at(end);
        let time: String = time
            .chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect();
        time + rest
    }

    #[test]
    fn same_bytes_as_format_full() {
        for ansi in [false, true] {
            let ours = formatted(true, ansi);
            let theirs = formatted(false, ansi);
            assert_eq!(theirs.lines().count(), 8, "{theirs}");
            assert_eq!(ours.lines().count(), 8, "{ours}");
            for (our, their) in ours.lines().zip(theirs.lines()) {
                assert_eq!(without_time(our), without_time(their));
            }
            if !ansi {
                for line in ours.lines() {
                    assert_eq!(&line[26..28], "Z ", "{line}");
                    assert_eq!(without_time(line)[..27], *"0000-00-00T00:00:00.000000Z");
                }
                assert!(theirs.contains("outer{id=\"s-1\" n=2}:empty: "), "{theirs}");
                assert!(theirs.contains(concat!(" INFO ", module_path!(), ": call forwarded request_id=\"r-1\" method=POST status=200 upstream_ms=0.431 elapsed_ms=1.5\n")), "{theirs}");
            }
        }
    }

    #[test]
    fn one_second_is_formatted_once_per_thread_and_reused() {
        let base = UNIX_EPOCH + Duration::from_secs(1_796_558_399);
        let first = Stamp::at(base).unwrap().text(&mut [0; 27]).to_owned();
        let second = Stamp::at(base + Duration::from_micros(250))
            .unwrap()
            .text(&mut [0; 27])
            .to_owned();
        assert_eq!(SECOND.with(Cell::get).0, 1_796_558_399);
        assert_eq!(first, "2026-12-06T11:59:59.000000Z");
        assert_eq!(second, "2026-12-06T11:59:59.000250Z");
        let next = Stamp::at(base + Duration::from_secs(1))
            .unwrap()
            .text(&mut [0; 27])
            .to_owned();
        assert_eq!(next, "2026-12-06T12:00:00.000000Z");
    }
}
