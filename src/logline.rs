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
//!
//! The line, fields included when the field formatter is `logfmt`'s, is written into a
//! per-thread `String` and handed to `tracing-subscriber` in one piece: through its
//! `Writer` each of the line's ~60 pieces took two dynamic calls. With the fields' own
//! fast paths, the per-call line went from ~6,400 instructions to ~4,000 (callgrind).

use crate::logfmt::{write_fields, PlainFields};
use std::any::Any;
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
use linepay_sidecar::logtext::{put_digits, second_prefix, with_scratch, SCRATCH_KEPT, YEAR_10000};

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
        // `Format<Full>` writes `<unknown time>` only when the timer fails, which its
        // `SystemTime` never does; the instants `Stamp` leaves out are its own.
        let Some(stamp) = Stamp::now() else {
            return self.full.format_event(ctx, writer, event);
        };
        with_scratch(
            &LINE,
            |line| line.text.capacity() <= SCRATCH_KEPT,
            |line| {
                line.text.clear();
                line.put_stamp(stamp);
                let result = line_after_stamp(&mut line.text, ctx, event);
                writer.write_str(&line.text).and(result)
            },
        )
    }
}

/// The line after its timestamp: level, spans, target, fields, newline.
fn line_after_stamp<S, N>(
    line: &mut String,
    ctx: &FmtContext<'_, S, N>,
    event: &Event<'_>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    line.push(' ');
    line.push_str(level_label(meta.level()));
    line.push(' ');
    if let Some(scope) = ctx.event_scope() {
        let mut seen = false;
        for span in scope.from_root() {
            line.push_str(span.metadata().name());
            seen = true;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                if !fields.is_empty() {
                    line.push('{');
                    line.push_str(fields);
                    line.push('}');
                }
            }
            line.push(':');
        }
        if seen {
            line.push(' ');
        }
    }
    line.push_str(meta.target());
    line.push_str(": ");
    // Our own field formatter writes into the line directly, not through `Writer`.
    match (ctx.field_format() as &dyn Any).downcast_ref::<PlainFields>() {
        Some(_) => write_fields(line, event)?,
        None => ctx.format_fields(Writer::new(line), event)?,
    }
    line.push('\n');
    Ok(())
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

/// A thread's line, written whole and then handed to `Writer` in one piece: `Writer`
/// passes every piece through two dynamic `fmt::Write` calls, and a line has about
/// sixty pieces.
#[derive(Default)]
struct LineBuffer {
    text: String,
    /// The second whose `YYYY-MM-DDTHH:MM:SS.` is in `prefix`, formatted once per second.
    second: Option<u64>,
    prefix: String,
}

thread_local! {
    static LINE: Cell<LineBuffer> = const {
        Cell::new(LineBuffer { text: String::new(), second: None, prefix: String::new() })
    };
}

impl LineBuffer {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as `DateTime`'s `Display` writes it.
    fn put_stamp(&mut self, stamp: Stamp) {
        if self.second != Some(stamp.seconds) {
            self.prefix.clear();
            self.prefix
                .extend(second_prefix(stamp.seconds).map(char::from));
            self.second = Some(stamp.seconds);
        }
        self.text.push_str(&self.prefix);
        let mut micros = [0; 6];
        put_digits(&mut micros, stamp.micros);
        for digit in micros {
            self.text.push(char::from(digit));
        }
        self.text.push('Z');
    }
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
        let mut line = LineBuffer::default();
        let at = UNIX_EPOCH + Duration::new(seconds, micros * 1_000 + 999);
        line.put_stamp(Stamp::at(at).unwrap());
        line.text
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
        let mut line = LineBuffer::default();
        let text = |line: &mut LineBuffer, at: SystemTime| {
            line.text.clear();
            line.put_stamp(Stamp::at(at).unwrap());
            line.text.clone()
        };
        let first = text(&mut line, base);
        assert_eq!(line.second, Some(1_796_558_399));
        assert_eq!(line.prefix, "2026-12-06T11:59:59.");
        // The same second's later lines take the kept prefix as it is.
        line.prefix = "kept-prefix.".to_owned();
        let second = text(&mut line, base + Duration::from_micros(250));
        assert_eq!(first, "2026-12-06T11:59:59.000000Z");
        assert_eq!(second, "kept-prefix.000250Z");
        let next = text(&mut line, base + Duration::from_secs(1));
        assert_eq!(next, "2026-12-06T12:00:00.000000Z");
        assert_eq!(line.second, Some(1_796_558_400));
    }

    /// A value whose `Debug` logs while its line is written (under `with_default`, as here,
    /// `tracing` drops that event; under the binary's global default it is dispatched at
    /// once: see `under_a_global_default_…`).
    struct Logs;
    impl fmt::Debug for Logs {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            tracing::warn!(inner = "x", depth = 2u8, "nested");
            f.write_str("logged")
        }
    }

    fn nested_events() {
        tracing::info!(request_id = "r-1", value = ?Logs, status = 200u16, "outer");
        let span = tracing::info_span!("span", id = ?Logs);
        let _entered = span.enter();
        tracing::info!(elapsed_ms = 0.5, "in span");
    }

    /// `PlainFormat` with `fields` against `Format<Full>` with the same.
    fn formatted_nested<N>(ours: bool, fields: N) -> String
    where
        N: for<'a> FormatFields<'a> + Send + Sync + 'static,
    {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(fields);
        if ours {
            let subscriber = builder.event_format(PlainFormat::default()).finish();
            tracing::subscriber::with_default(subscriber, nested_events);
        } else {
            tracing::subscriber::with_default(builder.finish(), nested_events);
        }
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn logging_values_and_other_field_formatters_as_format_full_writes_them() {
        let cases = [
            (
                formatted_nested(true, crate::logfmt::PlainFields),
                formatted_nested(false, crate::logfmt::PlainFields),
            ),
            (
                formatted_nested(true, tracing_subscriber::fmt::format::DefaultFields::new()),
                formatted_nested(false, tracing_subscriber::fmt::format::DefaultFields::new()),
            ),
        ];
        for (ours, theirs) in cases {
            assert_eq!(theirs.lines().count(), 2, "{theirs}");
            assert!(!theirs.contains("nested"), "{theirs}");
            assert!(
                theirs.contains(": outer request_id=\"r-1\" value=logged status=200\n"),
                "{theirs}"
            );
            assert!(theirs.contains(" INFO span{id=logged}: "), "{theirs}");
            assert_eq!(ours.lines().count(), 2, "{ours}");
            for (our, their) in ours.lines().zip(theirs.lines()) {
                assert_eq!(without_time(our), without_time(their));
            }
        }
    }

    /// A `Debug` that logs while its line is being written: under a global default (as
    /// the binary sets it, no scoped dispatcher) `tracing` dispatches that event at once.
    struct Reenters(u8);
    impl fmt::Debug for Reenters {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            tracing::warn!(inner = "x\"y", depth = self.0, "nested {}", self.0);
            if self.0 > 0 {
                tracing::warn!(deeper = ?Reenters(self.0 - 1));
            }
            f.write_str("logged")
        }
    }

    struct Panics;
    impl fmt::Debug for Panics {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("partial")?;
            panic!("while formatting")
        }
    }

    struct Fails;
    impl fmt::Debug for Fails {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("partial")?;
            Err(fmt::Error)
        }
    }

    fn global_default_events() {
        tracing::info!(bad = ?Fails, "failing");
        tracing::info!(after = "failure");
        tracing::info!(request_id = "r-1", value = ?Reenters(2), status = 200u16, "outer");
        let huge = "z".repeat(70_000);
        tracing::info!(huge = huge.as_str(), value = ?Reenters(0), "big");
        tracing::info!(after = "small");
        let caught = std::panic::catch_unwind(|| tracing::info!(p = ?Panics, "panicking"));
        assert!(caught.is_err());
        tracing::info!(after = "panic");
        let span = tracing::info_span!("span", id = ?Reenters(1));
        let _entered = span.enter();
        tracing::error!(elapsed_ms = 0.5, "in span");
    }

    /// Run in a child process (a global default is once per process): writes the lines
    /// to the file `REVIEW_CHILD` names, formatted by ours if `REVIEW_OURS` is set.
    #[test]
    fn global_default_child() {
        let Ok(path) = std::env::var("REVIEW_CHILD") else {
            return;
        };
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(crate::logfmt::PlainFields);
        if std::env::var_os("REVIEW_OURS").is_some() {
            builder.event_format(PlainFormat::default()).init();
        } else {
            builder.init();
        }
        global_default_events();
        std::fs::write(path, &*buffer.0.lock().unwrap()).unwrap();
    }

    fn formatted_under_global_default(ours: bool) -> String {
        let path = std::env::temp_dir().join(format!("review-{}-{ours}", std::process::id()));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "logline::tests::global_default_child",
                "--test-threads=1",
            ])
            .env("REVIEW_CHILD", &path);
        if ours {
            child.env("REVIEW_OURS", "1");
        }
        assert!(child.status().unwrap().success());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        text
    }

    #[test]
    fn under_a_global_default_nested_failed_and_huge_lines_as_format_full_writes_them() {
        let theirs = formatted_under_global_default(false);
        let ours = formatted_under_global_default(true);
        assert!(theirs.contains("nested 2"), "{theirs}");
        assert!(theirs.contains("Unable to format"), "{theirs}");
        assert_eq!(
            ours.lines().count(),
            theirs.lines().count(),
            "{ours}\n---\n{theirs}"
        );
        for (our, their) in ours.lines().zip(theirs.lines()) {
            if their.ends_with(" after=\"panic\"") {
                // `Format<Full>` leaves the panicked line's start in `tracing-subscriber`'s
                // buffer, where the next line is appended to it; ours is written whole
                // into its own buffer first, so the next line is clean.
                assert_eq!(their.matches(" INFO ").count(), 2, "{their}");
                assert_eq!(our.matches(" INFO ").count(), 1, "{our}");
                assert!(
                    without_time(our)
                        .ends_with(" INFO linepay_sidecar::logline::tests: after=\"panic\""),
                    "{our}"
                );
                continue;
            }
            if their.starts_with("Unable to format") {
                // The same, up to the callsite's address (each child process has its own).
                let upto = |line: &str| line.split("callsite:").next().unwrap().to_owned();
                assert_eq!(upto(our), upto(their));
                continue;
            }
            assert_eq!(without_time(our), without_time(their));
        }
    }
}
