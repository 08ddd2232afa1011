//! The text log's field formatter: the same bytes as `tracing-subscriber`'s
//! `DefaultFields` when colours are off, written with fewer steps.
//!
//! `DefaultFields` paints every field name and `=` through `nu_ansi_term` even when colours
//! are off (an empty style, still formatted through two `Display` layers per field); on
//! the per-call `call forwarded` line (eleven fields) that was about 6,000 of the
//! sidecar's ~95,000 instructions per call (`scripts/bench-instructions.sh`, callgrind).
//! Here a field is `name=` written as plain text, then the value's `Debug`, exactly as
//! `DefaultFields` writes it without colours: strings quoted and escaped by `Debug`, the
//! message escaped for terminal control characters as `tracing-subscriber` does, `r#`
//! prefixes stripped, `log.*` fields skipped. Errors (rare) and coloured output (a
//! terminal) go through `DefaultFields` itself. A test below formats the same events with
//! both and compares the bytes.
//!
//! Numbers and booleans, which `DefaultFields` writes through `Debug` and `core::fmt`,
//! are written here as the same text directly: integers with `itoa`, and floats such as
//! the line's `upstream_ms` and `elapsed_ms` by `logtext::debug_decimal` when they have
//! the few digits millisecond figures have (others through `Debug`): on the per-call
//! line each of its two floats went from ~900 instructions to ~580.

use linepay_sidecar::logtext::{debug_decimal, FLOAT_TEXT};
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields`' output without its per-field colour painting (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = PlainVisitor::new(writer);
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl<'a> PlainVisitor<'a> {
    fn new(writer: Writer<'a>) -> Self {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }

    fn pad(&mut self) {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.put(" ");
        }
    }

    /// Writes `text` unless an earlier write failed.
    fn put(&mut self, text: &str) {
        if self.result.is_ok() {
            self.result = self.writer.write_str(text);
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else if plain_ascii(value) && !field.name().starts_with("log.") {
            // What `Debug` writes for such a string, without the formatting machinery:
            // the per-call line has five of them.
            self.pad();
            if self.result.is_ok() {
                let name = field.name();
                self.put(name.strip_prefix("r#").unwrap_or(name));
                self.put("=\"");
                self.put(value);
                self.put("\"");
            }
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        // Rare (errors with their sources): `DefaultFields`' own formatting, into a
        // scratch string, so that the bytes stay its own.
        let mut text = String::new();
        let mut visitor = DefaultVisitor::new(Writer::new(&mut text), true);
        visitor.record_error(field, value);
        self.result = visitor.finish();
        if self.result.is_ok() && !text.is_empty() {
            self.pad();
            self.put(&text);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_plain(field, itoa::Buffer::new().format(value), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_plain(field, itoa::Buffer::new().format(value), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_plain(field, if value { "true" } else { "false" }, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let mut text = [0u8; FLOAT_TEXT];
        match debug_decimal(value, &mut text) {
            Some(decimal) => self.record_plain(field, decimal, &value),
            None => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.pad();
        if self.result.is_err() {
            return;
        }
        self.result = match name {
            "message" => write!(Escaping(&mut self.writer), "{value:?}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.writer
                    .write_str(name)
                    .and_then(|()| self.writer.write_char('='))
                    .and_then(|()| write!(self.writer, "{value:?}"))
            }
        };
    }
}

impl PlainVisitor<'_> {
    /// `name=text`, where `text` is what `value`'s `Debug` writes: numbers and booleans
    /// without the formatting machinery (the per-call line has four of them).
    fn record_plain(&mut self, field: &Field, text: &str, value: &dyn fmt::Debug) {
        let name = field.name();
        if name == "message" {
            return self.record_debug(field, value);
        }
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.pad();
        self.put(name.strip_prefix("r#").unwrap_or(name));
        self.put("=");
        self.put(text);
    }
}

/// Printable ASCII that `Debug` writes as it is (no `"` or `\\` to escape).
///
/// Every byte is tested, without stopping at the first that fails: a loop the compiler
/// turns into vector instructions (the per-call line's strings are nearly all plain).
fn plain_ascii(value: &str) -> bool {
    value.bytes().fold(true, |plain, b| {
        plain & (b' '..=b'~').contains(&b) & (b != b'"') & (b != b'\\')
    })
}

/// `tracing-subscriber`'s escaping of terminal control characters in messages (ESC, BEL,
/// BS, FF, DEL and the C1 controls), as in its `fmt::format::escape`.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let plain = |c: char| {
            !matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if s.chars().all(plain) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

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

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \x1b[31mfailed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn events() {
        let request_id = "abc\"def\\\u{7}";
        let none: Option<&str> = None;
        tracing::info!(
            request_id, method = %http::Method::POST, path = none, route = "/v3/payments/request",
            status = 200u16, return_code = Some("0000"), order_id = Some("注文-1 \"x\""),
            upstream_ms = Some(0.431), elapsed_ms = 1.5, "call forwarded"
        );
        tracing::warn!(
            code = "invalid_json",
            r#type = "x",
            flag = true,
            n = -3i64,
            "call refused"
        );
        tracing::info!("message with \x1b[2J escape and \u{85} C1 and {}", 42);
        let simple = std::io::Error::other("plain failure");
        let chained = Outer(std::io::Error::other("inner \u{9b} cause"));
        tracing::error!(error = &simple as &(dyn std::error::Error + 'static), "one");
        tracing::error!(
            error = &chained as &(dyn std::error::Error + 'static),
            after = 1u8,
            "two"
        );
        tracing::info!(log.target = "skipped", kept = "yes");
        tracing::info!(
            empty = "",
            spaced = " it's a b ~ ",
            quote = "a\"b",
            back = "a\\b",
            tab = "a\tb"
        );
        tracing::info!(only = 1u64);
        tracing::info!(
            big = u64::MAX,
            low = i64::MIN,
            no = false,
            tiny = 1e-7,
            huge = 1e300,
            nan = f64::NAN,
            neg = -0.0,
            ms = 12.345,
            message = 7u8
        );
        tracing::info!(log.line = 3u32, r#loop = 2i32, ratio = 0.5f32);
        // Longer than the visitor's pending text, alone and together.
        let long = "x".repeat(300);
        let half = "é".repeat(90);
        tracing::info!(
            long = long.as_str(),
            half = half.as_str(),
            quoted = format!("\"{half}\"").as_str(),
            n = 3u8,
            "{long}"
        );
        let span = tracing::info_span!("span", id = "s-1", n = 2u32);
        let _entered = span.enter();
        tracing::info!(inside = "span");
    }

    #[test]
    fn numbers_and_flags_as_debug_writes_them() {
        let floats = [0.431, -2.5, 1e-7, 1e300, f64::NAN, 1e15 + 0.3, -0.0];
        let integers = [0, 1, 9, 10, 65_535, u64::MAX];
        for (&float, &integer) in floats.iter().zip(integers.iter().cycle()) {
            let signed = -(integer as i64);
            let flag = integer % 2 == 0;
            let mut text = String::new();
            let mut visitor = PlainVisitor::new(Writer::new(&mut text));
            let fields = tracing::field::FieldSet::new(
                &["a", "b", "flag", "x"],
                tracing::callsite::Identifier(&CALLSITE),
            );
            let mut fields = fields.iter();
            visitor.record_u64(&fields.next().unwrap(), integer);
            visitor.record_i64(&fields.next().unwrap(), signed);
            visitor.record_bool(&fields.next().unwrap(), flag);
            visitor.record_f64(&fields.next().unwrap(), float);
            assert!(visitor.result.is_ok());
            assert_eq!(
                text,
                format!("a={integer:?} b={signed:?} flag={flag:?} x={float:?}")
            );
        }
    }

    struct NoCallsite;
    static CALLSITE: NoCallsite = NoCallsite;
    impl tracing::callsite::Callsite for NoCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("only the field set's identity is used")
        }
    }

    fn formatted(plain: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time();
        if plain {
            tracing::subscriber::with_default(builder.fmt_fields(PlainFields).finish(), events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn same_bytes_as_default_fields() {
        let default = formatted(false);
        assert_eq!(default.lines().count(), 12, "{default}");
        assert!(default.contains("big=18446744073709551615 low=-9223372036854775808 no=false tiny=1e-7 huge=1e300 nan=NaN neg=-0.0 ms=12.345 7\n"), "{default}");
        assert!(default.contains(" loop=2 ratio=0.5\n"), "{default}");
        assert!(default.contains("\\x1b"), "{default}");
        assert_eq!(formatted(true), default);
    }
}
