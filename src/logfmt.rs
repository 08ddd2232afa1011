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

use linepay_sidecar::logtext::{debug_decimal, with_scratch, FLOAT_TEXT, SCRATCH_KEPT};
use std::cell::Cell;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields`' output without its per-field colour painting (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct PlainFields;

thread_local! {
    /// Fields written on their own (spans' fields, and lines not written by `logline`).
    static FIELDS: Cell<String> = const { Cell::new(String::new()) };
}

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        with_scratch(
            &FIELDS,
            |text| text.capacity() <= SCRATCH_KEPT,
            |text| {
                text.clear();
                let result = write_fields(text, fields);
                writer.write_str(text).and(result)
            },
        )
    }
}

/// Appends what [`PlainFields`] writes for `fields` without colours to `line`.
///
/// Into a `String` rather than through `Writer`: `Writer` passes every piece through two
/// dynamic `fmt::Write` calls, and a field has four or five pieces; on the per-call line
/// those calls were about 2,300 of its ~6,400 instructions.
pub(crate) fn write_fields<R: RecordFields>(line: &mut String, fields: R) -> fmt::Result {
    let mut visitor = PlainVisitor::new(line);
    fields.record(&mut visitor);
    visitor.result
}

struct PlainVisitor<'a> {
    line: &'a mut String,
    is_empty: bool,
    /// The first `Debug` failure; the fields after it are not written (as `DefaultFields`).
    result: fmt::Result,
}

impl<'a> PlainVisitor<'a> {
    fn new(line: &'a mut String) -> Self {
        PlainVisitor {
            line,
            is_empty: true,
            result: Ok(()),
        }
    }

    fn pad(&mut self) {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.line.push(' ');
        }
    }

    /// `name=`, with the raw identifier's `r#` left out as `DefaultFields` does.
    fn put_name(&mut self, name: &str) {
        self.line.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.line.push('=');
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else if plain_ascii(value) && !name.starts_with("log.") {
            // What `Debug` writes for such a string, without the formatting machinery:
            // the per-call line has five of them.
            self.pad();
            self.put_name(name);
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
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
            self.line.push_str(&text);
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
        self.result = match name {
            "message" => write!(Escaping(&mut *self.line), "{value:?}"),
            name => {
                self.put_name(name);
                write!(self.line, "{value:?}")
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
        self.put_name(name);
        self.line.push_str(text);
    }
}

/// Printable ASCII that `Debug` writes as it is (no `"` or `\\` to escape).
fn plain_ascii(value: &str) -> bool {
    plain_bytes(value.as_bytes())
}

/// [`plain_ascii`] over bytes.
fn plain_bytes(bytes: &[u8]) -> bool {
    all_words(bytes, plain_word)
}

/// Whether `test` holds for all of `bytes`, read eight at a time in a `u64` (the last
/// eight overlapping the ones before), shorter strings in one word padded with `a` (which
/// passes both tests here), without stopping at the first word that fails. The per-call
/// line's strings are nearly all plain and most are under 20 bytes, where a byte loop
/// (what the compiler made of a byte-wise test after its vector part) cost ~350
/// instructions per line.
fn all_words(bytes: &[u8], test: impl Fn(u64) -> bool) -> bool {
    let length = bytes.len();
    match length {
        0 => true,
        // First, middle and last cover up to three bytes.
        1..4 => test(u64::from_le_bytes([
            bytes[0],
            bytes[length / 2],
            bytes[length - 1],
            b'a',
            b'a',
            b'a',
            b'a',
            b'a',
        ])),
        4..8 => {
            let mut halves = [0; 8];
            halves[..4].copy_from_slice(&bytes[..4]);
            halves[4..].copy_from_slice(&bytes[length - 4..]);
            test(u64::from_le_bytes(halves))
        }
        _ => {
            let (words, _) = bytes.as_chunks::<8>();
            let all = words
                .iter()
                .fold(true, |all, eight| all & test(u64::from_le_bytes(*eight)));
            let last = bytes.last_chunk::<8>();
            all & last.is_some_and(|eight| test(u64::from_le_bytes(*eight)))
        }
    }
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH: u64 = ONES << 7;

/// The high bit of each byte of `word` that is not printable ASCII (`' '` to `'~'`), and
/// maybe of some bytes after it: the bit tricks `hasless` and `hasmore` of "Bit
/// Twiddling Hacks", exact about whether there is such a byte.
fn outside_printable(word: u64) -> u64 {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let from_delete = (word.wrapping_add(ONES) | word) & HIGH;
    below_space | from_delete
}

/// Whether all eight bytes of `word` are printable ASCII.
fn printable_word(word: u64) -> bool {
    outside_printable(word) == 0
}

/// Whether all eight bytes of `word` are printable ASCII other than `"` and `\\`
/// (`haszero` of "Bit Twiddling Hacks", exact about whether some byte is one of them).
fn plain_word(word: u64) -> bool {
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    outside_printable(word) | quote | backslash == 0
}

/// Whether `text` may hold a character [`Escaping`] escapes: one of its five ASCII
/// controls, or the byte `0xC2` that starts the UTF-8 of every C1 control (U+0080-U+009F;
/// also of U+00A0-U+00BF, which are written as they are). Printable ASCII, as messages
/// nearly always are, is told eight bytes at a time; the rest byte by byte.
fn may_need_escaping(text: &str) -> bool {
    !all_words(text.as_bytes(), printable_word)
        && text.bytes().fold(false, |found, b| {
            found | matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2)
        })
}

/// `tracing-subscriber`'s escaping of terminal control characters in messages (ESC, BEL,
/// BS, FF, DEL and the C1 controls), as in its `fmt::format::escape`.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !may_need_escaping(s) {
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
            let mut visitor = PlainVisitor::new(&mut text);
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
        formatted_with(plain, events)
    }

    fn formatted_with(plain: bool, events: fn()) -> String {
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

    /// Strings around each length where [`plain_bytes`] changes how it reads them (one
    /// padded word, two halves, words with an overlapping last one), each with a byte or
    /// character that needs quoting or escaping (or looks as if it might) at its start,
    /// middle and end.
    fn string_cases() -> Vec<String> {
        let specials = [
            "\"", "\\", "\t", "\n", "\0", "\x1b", "\x7f", " ", "é", "\u{85}", "\u{9f}", "\u{a0}",
            "Â", "🦀",
        ];
        let mut cases = vec![String::new()];
        for length in [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33] {
            cases.push("a".repeat(length));
            for special in specials {
                for at in [0, length / 2, length - 1] {
                    let mut case = "a".repeat(length - 1);
                    case.insert_str(at, special);
                    cases.push(case);
                }
            }
        }
        cases
    }

    fn string_events() {
        for case in string_cases() {
            let case = case.as_str();
            tracing::info!(value = case, other = "plain", "{case}");
            tracing::info!(message = case, after = case);
            tracing::info!(opt = Some(case), none = None::<&str>, shown = %case);
        }
    }

    #[test]
    fn strings_with_and_without_quoting_as_default_fields_writes_them() {
        let default = formatted_with(false, string_events);
        // Messages with a newline span two lines: the events are counted by their level.
        assert_eq!(
            default.matches(" INFO ").count(),
            3 * string_cases().len(),
            "{default}"
        );
        assert!(
            default.contains(" value=\"\" other=\"plain\"\n"),
            "{default}"
        );
        assert!(default.contains("value=\"a\\\"\" "), "{default}");
        assert!(default.contains("\\u{85}"), "{default}");
        assert_eq!(formatted_with(true, string_events), default);
    }

    #[test]
    fn word_tests_agree_with_byte_by_byte_tests() {
        // No allocation per case: these tests also run beside tests/alloc.rs's count.
        let plain_byte = |b: &u8| (b' '..=b'~').contains(b) && *b != b'"' && *b != b'\\';
        let printable_byte = |b: &u8| (b' '..=b'~').contains(b);
        let check = |bytes: &[u8]| {
            let expected = bytes.iter().all(plain_byte);
            assert_eq!(plain_bytes(bytes), expected, "{bytes:?}");
            let printable = bytes.iter().all(printable_byte);
            assert_eq!(all_words(bytes, printable_word), printable, "{bytes:?}");
        };
        let edges = [
            0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x41, 0x5b, 0x5c, 0x5d, 0x7e, 0x7f, 0x80,
            0xc2, 0xfe, 0xff,
        ];
        for length in 0..=40 {
            let base = [b'a'; 40];
            assert!(plain_bytes(&base[..length]), "{length}");
            for at in 0..length {
                for byte in 0..=255u8 {
                    let mut bytes = base;
                    bytes[at] = byte;
                    check(&bytes[..length]);
                }
                // Pairs, for a carry or borrow from one byte into the next.
                for (&first, &second) in edges.iter().zip(edges.iter().rev()) {
                    for next in at + 1..length {
                        let mut bytes = base;
                        bytes[at] = first;
                        bytes[next] = second;
                        check(&bytes[..length]);
                    }
                }
            }
        }
    }

    #[test]
    fn messages_are_escaped_only_where_they_need_it() {
        for case in string_cases() {
            let mut ours = String::new();
            write!(Escaping(&mut ours), "{case}").unwrap();
            let mut theirs = String::new();
            for c in case.chars() {
                match c {
                    '\x1b' => theirs.push_str("\\x1b"),
                    '\x07' => theirs.push_str("\\x07"),
                    '\x08' => theirs.push_str("\\x08"),
                    '\x0c' => theirs.push_str("\\x0c"),
                    '\x7f' => theirs.push_str("\\x7f"),
                    '\u{80}'..='\u{9f}' => theirs.extend(c.escape_unicode()),
                    c => theirs.push(c),
                }
            }
            assert_eq!(ours, theirs, "{case:?}");
            assert_eq!(
                may_need_escaping(&case),
                case.contains(|c| c == '\x1b'
                    || c == '\x07'
                    || c == '\x08'
                    || c == '\x0c'
                    || c == '\x7f'
                    || ('\u{80}'..='\u{bf}').contains(&c)),
                "{case:?}"
            );
        }
    }

    fn edge_events() {
        let specials = [
            "\r",
            "\x07",
            "\x08",
            "\x0c",
            "\u{80}",
            "\u{bf}",
            "\u{c0}",
            "\u{2028}",
            "\u{feff}",
            "\u{10ffff}",
            "'",
            "\u{1}",
            "\x1f",
            "{",
            "}",
            "=",
        ];
        for special in specials {
            for length in [7, 8, 9, 15, 16, 17] {
                for at in [0, 6, 7, 8, length - 1] {
                    let mut case = "a".repeat(length - 1);
                    case.insert_str(at.min(length - 1), special);
                    let case = case.as_str();
                    tracing::info!(value = case, shown = %case, dbg = ?case, "m{case}");
                }
            }
        }
        for float in [
            5e-324,
            f64::MIN_POSITIVE,
            1e-4,
            0.000_099_99,
            9_999_999_999_999_998.0,
            1e16,
            1e21,
            -1e21,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.1 + 0.2,
            100.0,
            1e14,
            123_456_789_012.345,
            99_999_999_999.999,
            0.001,
            0.0015,
            1.0005,
            -0.125,
        ] {
            tracing::info!(float, f32 = float as f32, message = float);
        }
        tracing::info!(
            a = i64::MAX,
            b = i64::MIN,
            c = u64::MAX,
            d = 0u64,
            e = -1i64,
            f = true
        );
        tracing::info!(a = i128::MIN, b = u128::MAX);
        let huge = "q\"".repeat(40_000);
        tracing::info!(huge = huge.as_str(), "{huge}");
        tracing::info!(after = "short");
        let outer = tracing::info_span!("outer", q = "a\"b", n = 1u8, m = %"x y");
        let _o = outer.enter();
        let inner = tracing::info_span!("inner", empty = "", t = "\t");
        let _i = inner.enter();
        inner.record("t", "late");
        tracing::warn!(r#type = "x", "nested");
    }

    #[test]
    fn edge_strings_numbers_and_spans_as_default_fields_writes_them() {
        let default = formatted_with(false, edge_events);
        let ours = formatted_with(true, edge_events);
        for (a, b) in ours.lines().zip(default.lines()) {
            assert_eq!(a, b);
        }
        assert_eq!(ours, default);
    }
}
