//! A strict JSON reader for the fast pass (`stream`): a cursor over the body's bytes
//! with one function per piece of RFC 8259's grammar, no allocation, strings handed out
//! as borrowed slices of the body.
//!
//! Every function answers `None` for anything it does not accept, and the fast pass
//! then answers `false` (the slow path decides). So the reader may refuse JSON that
//! `serde_json` reads, never the reverse: that is what lets the proxy skip its own JSON
//! check (`serde_json::from_str::<IgnoredAny>`) for a body the fast pass passes. Where
//! it is stricter than that check: a lone or unpaired UTF-16 surrogate escape (`\ud800`,
//! which `IgnoredAny` skips but a decoded string refuses), a number past f64's range
//! (`1e400`, which `IgnoredAny` skips but the walk's tree refuses), and nesting deeper
//! than [`MAX_DEPTH`] inside a free-form object (`IgnoredAny` has no limit there; the
//! walk's parser stops at 128). Each of those is a body the walk cannot read, which it
//! reports as a finding: so the fast pass must not pass them either.

/// Deepest nesting [`Cursor::skip_value`] follows; the members of a free-form object are
/// a level or two deep in any real body.
pub(super) const MAX_DEPTH: u32 = 64;

/// A string's content as sent (between its quotes, escapes not decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Text<'a> {
    pub(super) raw: &'a [u8],
    /// Holds a backslash escape: `raw` is not the decoded text.
    pub(super) escaped: bool,
    /// Characters of the decoded text (a surrogate pair is one).
    pub(super) chars: usize,
}

/// A number's text, valid by the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Number<'a> {
    pub(super) raw: &'a [u8],
    /// The value of a number written as digits alone (no sign, point or exponent) when
    /// it fits a `u64`: what `serde_json` reads as a `u64` too.
    pub(super) whole: Option<u64>,
}

/// What a byte is to a string's scan: 0 for the plain bytes that need no look.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const BACKSLASH: u8 = 2;
const CONTROL: u8 = 3;
const NON_ASCII: u8 = 4;

/// One table look per byte of a string instead of four comparisons.
static STRING_BYTE: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = match byte {
            0x00..=0x1f => CONTROL,
            0x22 => QUOTE,
            0x5c => BACKSLASH,
            0x80..=0xff => NON_ASCII,
            _ => PLAIN,
        };
        byte += 1;
    }
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` (little-endian) that is not [`PLAIN`]: a quote, a
/// backslash, a control byte or a non-ASCII one. Only the lowest set bit is exact (a
/// borrow may flag a byte above a flagged one), and only it is used.
fn special_bytes(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    (zero_in(quote) | zero_in(backslash) | below_space | word) & HIGHS
}

pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    /// Skips JSON whitespace (space, tab, line feed, carriage return: no other, no BOM)
    /// and answers the next byte, if any.
    pub(super) fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    /// Takes `byte` as the next byte after whitespace.
    pub(super) fn eat(&mut self, byte: u8) -> Option<()> {
        if self.peek()? == byte {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// Whether nothing but whitespace is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// After an object's or array's first member: `true` for a `,` (another member
    /// follows), `false` for the closing `close`.
    pub(super) fn more(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            byte if byte == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Takes `close` if it comes next (an empty object or array).
    pub(super) fn closes(&mut self, close: u8) -> Option<bool> {
        if self.peek()? == close {
            self.at += 1;
            Some(true)
        } else {
            Some(false)
        }
    }

    /// Takes the literal `word` (`null`, `true`, `false`) at the cursor; the byte after
    /// it is the caller's grammar.
    pub(super) fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        if self.bytes.get(self.at..end)? == word {
            self.at = end;
            Some(())
        } else {
            None
        }
    }

    /// A string, its opening quote at the cursor (after whitespace).
    #[inline]
    pub(super) fn string(&mut self) -> Option<Text<'a>> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        let end = start + self.plain_run(start);
        if self.bytes.get(end) == Some(&b'"') {
            // Nearly every string: printable ASCII only, nothing to decode.
            self.at = end + 1;
            let raw = &self.bytes[start..end];
            return Some(Text {
                raw,
                escaped: false,
                chars: raw.len(),
            });
        }
        self.string_rest(start, end)
    }

    /// Whether the next token (after whitespace) is the key `"name"` exactly, written
    /// without escapes. `name` must be plain printable ASCII (every field's name is):
    /// then bytes equal to it make a valid JSON string by themselves.
    #[inline]
    pub(super) fn is_key(&mut self, name: &[u8]) -> bool {
        let Some(b'"') = self.peek() else {
            return false;
        };
        let start = self.at + 1;
        let end = start + name.len();
        self.bytes.get(end) == Some(&b'"')
            && self
                .bytes
                .get(start..end)
                .is_some_and(|raw| same(name, raw))
    }

    /// Takes the key `is_key` has just found (`length` bytes between its quotes) and
    /// its `:`.
    #[inline]
    pub(super) fn take_key(&mut self, length: usize) -> Option<()> {
        self.at += length + 2;
        self.eat(b':')
    }

    /// How many [`PLAIN`] bytes there are from `start` on.
    #[inline]
    fn plain_run(&self, start: usize) -> usize {
        let mut at = start;
        // Eight bytes at a time: most of a body is strings.
        while let Some(chunk) = self.bytes.get(at..at + 8) {
            let Ok(word) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let special = special_bytes(u64::from_le_bytes(word));
            if special != 0 {
                return at - start + (special.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        while let Some(&byte) = self.bytes.get(at) {
            if STRING_BYTE[usize::from(byte)] != PLAIN {
                break;
            }
            at += 1;
        }
        at - start
    }

    /// The rest of a string that holds an escape or a non-ASCII byte (or is not closed),
    /// from `at`, its content starting at `start`.
    #[inline(never)]
    fn string_rest(&mut self, start: usize, mut at: usize) -> Option<Text<'a>> {
        let mut escaped = false;
        let mut non_ascii = false;
        // Bytes of the raw text that are not a character of their own: all but one of
        // each escape's.
        let mut folded = 0;
        loop {
            at += self.plain_run(at);
            let byte = *self.bytes.get(at)?;
            match STRING_BYTE[usize::from(byte)] {
                QUOTE => break,
                BACKSLASH => {
                    escaped = true;
                    let length = escape(self.bytes.get(at..)?)?;
                    folded += length - 1;
                    at += length;
                }
                NON_ASCII => {
                    non_ascii = true;
                    at += 1;
                }
                _ => return None,
            }
        }
        let raw = &self.bytes[start..at];
        self.at = at + 1;
        let chars = if non_ascii {
            // The body must be UTF-8, as `serde_json::from_str` takes only a `str`; out
            // of strings only ASCII is grammar, so checking each string's bytes checks
            // the whole body.
            std::str::from_utf8(raw).ok()?;
            raw.iter().filter(|&&byte| byte & 0xc0 != 0x80).count() - folded
        } else {
            raw.len() - folded
        };
        Some(Text {
            raw,
            escaped,
            chars,
        })
    }

    /// A number by RFC 8259's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    pub(super) fn number(&mut self) -> Option<Number<'a>> {
        self.peek()?;
        let start = self.at;
        let negative = self.bytes[start] == b'-';
        if negative {
            self.at += 1;
        }
        let mut whole: Option<u64> = Some(0);
        match self.bytes.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                let first = self.at;
                let mut value: u64 = 0;
                while let Some(&digit @ b'0'..=b'9') = self.bytes.get(self.at) {
                    value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
                    self.at += 1;
                }
                // Nineteen digits always fit; twenty may not.
                whole = if self.at - first < 20 {
                    Some(value)
                } else {
                    self.bytes[first..self.at]
                        .iter()
                        .try_fold(0u64, |value, digit| {
                            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
                        })
                };
            }
            _ => return None,
        }
        let mut plain = !negative;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            plain = false;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            plain = false;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            self.digits()?;
        }
        Some(Number {
            raw: &self.bytes[start..self.at],
            whole: whole.filter(|_| plain),
        })
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.bytes.get(self.at) {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }

    /// Any one JSON value, checked by the grammar and skipped; nesting deeper than
    /// [`MAX_DEPTH`] is refused.
    pub(super) fn skip_value(&mut self) -> Option<()> {
        // One bit per open container, 1 for an object: no stack to allocate.
        let mut objects: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value.
            match self.peek()? {
                b'{' | b'[' => {
                    let object = self.bytes[self.at] == b'{';
                    self.at += 1;
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    objects = objects << 1 | u64::from(object);
                    depth += 1;
                    let close = if object { b'}' } else { b']' };
                    if !self.closes(close)? {
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                    depth -= 1;
                    objects >>= 1;
                }
                b'"' => {
                    self.string()?;
                }
                b'n' => self.literal(b"null")?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                _ => {
                    let number = self.number()?;
                    if !fits_f64(number.raw) {
                        return None;
                    }
                }
            }
            // After a value: the rest of its containers.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let object = objects & 1 == 1;
                if self.more(if object { b'}' } else { b']' })? {
                    if object {
                        self.key()?;
                    }
                    break;
                }
                depth -= 1;
                objects >>= 1;
            }
        }
    }

    /// An object's key and its `:`.
    pub(super) fn key(&mut self) -> Option<Text<'a>> {
        let key = self.string()?;
        self.eat(b':')?;
        Some(key)
    }
}

/// Whether serde_json can size the number (`1e400` and `1` followed by 400 zeros it
/// cannot: `IgnoredAny` skips them, the walk's tree refuses them). Without an exponent,
/// 300 digits stay below f64's largest; only longer or exponent numbers, rare in a
/// free-form member, are handed to serde_json's own parser.
fn fits_f64(raw: &[u8]) -> bool {
    if raw.len() <= 300 && !raw.iter().any(|&byte| byte | 0x20 == b'e') {
        return true;
    }
    serde_json::from_slice::<serde_json::Number>(raw).is_ok()
}

/// `name == raw` for two slices of one length, by a word or two at a time rather than
/// a `memcmp` call or a byte loop: keys are a few bytes.
fn same(name: &[u8], raw: &[u8]) -> bool {
    let length = name.len();
    if length != raw.len() {
        return false;
    }
    // Two overlapping loads cover every length from the load's size to twice it.
    match length {
        8..=16 => word(name) == word(raw) && word(&name[length - 8..]) == word(&raw[length - 8..]),
        4..=7 => half(name) == half(raw) && half(&name[length - 4..]) == half(&raw[length - 4..]),
        _ => name == raw,
    }
}

fn word(bytes: &[u8]) -> Option<[u8; 8]> {
    bytes.get(..8)?.try_into().ok()
}

fn half(bytes: &[u8]) -> Option<[u8; 4]> {
    bytes.get(..4)?.try_into().ok()
}

/// The length of the escape at the start of `bytes` (`\n`, `\u00e9`, or a surrogate pair
/// `\ud83d\ude00` as one), `None` for one `serde_json` refuses or a lone surrogate.
fn escape(bytes: &[u8]) -> Option<usize> {
    match bytes.get(1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => match hex4(bytes.get(2..6)?)? {
            0xd800..=0xdbff => {
                if bytes.get(6..8)? != b"\\u" {
                    return None;
                }
                matches!(hex4(bytes.get(8..12)?)?, 0xdc00..=0xdfff).then_some(12)
            }
            0xdc00..=0xdfff => None,
            _ => Some(6),
        },
        _ => None,
    }
}

fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &digit| {
        let nibble = char::from(digit).to_digit(16)?;
        Some(value << 4 | nibble)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn string(text: &str) -> Option<Text<'_>> {
        let mut cursor = Cursor::new(text.as_bytes());
        let found = cursor.string()?;
        cursor.at_end().then_some(found)
    }

    fn number(text: &str) -> Option<Number<'_>> {
        let mut cursor = Cursor::new(text.as_bytes());
        let found = cursor.number()?;
        cursor.at_end().then_some(found)
    }

    fn skips(text: &[u8]) -> bool {
        let mut cursor = Cursor::new(text);
        cursor.skip_value().is_some() && cursor.at_end()
    }

    #[test]
    fn eight_plain_bytes_are_told_from_any_special_one() {
        let word = |bytes: &[u8; 8]| special_bytes(u64::from_le_bytes(*bytes));
        assert_eq!(word(b"abcdefgh"), 0);
        assert_eq!(word(b" !#[]~\x7f0"), 0);
        for special in [b'"', b'\\', 0x00, 0x01, 0x1f, 0x80, 0xc3, 0xff] {
            for at in 0..8 {
                let mut bytes = *b"abcdefgh";
                bytes[at] = special;
                let found = word(&bytes);
                assert_eq!(
                    found.trailing_zeros() / 8,
                    at as u32,
                    "{special:#x} at {at}"
                );
                // Whatever follows, the first special byte is found exactly.
                bytes[7] = 0;
                let found = word(&bytes);
                assert_eq!(
                    found.trailing_zeros() / 8,
                    at as u32,
                    "{special:#x} at {at}"
                );
            }
        }
        for plain in 0x20u8..0x80 {
            if plain != b'"' && plain != b'\\' {
                assert_eq!(word(&[plain; 8]), 0, "{plain:#x}");
            }
        }
    }

    #[test]
    fn strings_count_decoded_characters() {
        let plain = string(r#""abc""#).unwrap();
        assert_eq!(
            (plain.raw, plain.escaped, plain.chars),
            (&b"abc"[..], false, 3)
        );
        assert_eq!(string(r#""""#).unwrap().chars, 0);
        let escaped = string(r#""a\n\"\\\/\b\f\r\t\u00e9""#).unwrap();
        assert!(escaped.escaped);
        assert_eq!(escaped.chars, 10);
        assert_eq!(string(r#""\ud83d\ude00x""#).unwrap().chars, 2);
        assert_eq!(string("\"é日😀\"").unwrap().chars, 3);
        assert_eq!(string("\"é\\u0041\"").unwrap().chars, 2);
        assert_eq!(string(r#""\u0000""#).unwrap().chars, 1);
        assert_eq!(string(r#""\uABCD""#).unwrap().chars, 1);
    }

    #[test]
    fn strings_refuse_what_json_refuses_and_lone_surrogates() {
        for bad in [
            "\"abc",
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"\u{1f}\"",
            r#""\x""#,
            r#""\'""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\"#,
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\n""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#""\udfff\ud800""#,
            "abc",
            "'a'",
        ] {
            assert_eq!(string(bad), None, "{bad:?}");
        }
        // Not UTF-8 inside a string.
        let mut cursor = Cursor::new(b"\"a\xffb\"");
        assert_eq!(cursor.string(), None);
        let mut cursor = Cursor::new(b"\"\xe6\x97\"");
        assert_eq!(cursor.string(), None);
        // DEL and every printable byte are plain.
        assert_eq!(string("\"\u{7f}~ \"").unwrap().chars, 3);
    }

    #[test]
    fn a_key_is_found_only_as_written_whole() {
        let mut cursor = Cursor::new(br#" "amount" : 5"#);
        assert!(!cursor.is_key(b"amoun") && !cursor.is_key(b"amounts"));
        assert!(!cursor.is_key(b"currency"));
        assert!(cursor.is_key(b"amount"));
        assert!(cursor.take_key(6).is_some());
        assert!(cursor.number().is_some() && cursor.at_end());
        let long = format!("\"{}\":1", "k".repeat(30));
        assert!(Cursor::new(long.as_bytes()).is_key("k".repeat(30).as_bytes()));
        for other in [
            &br#""a\u0062":1"#[..],
            br#""a\"b":1"#,
            br#""ab\":1"#,
            br#"ab":1"#,
            br#""ab"#,
            b"",
        ] {
            assert!(!Cursor::new(other).is_key(b"ab"), "{other:?}");
        }
        // The quote and the colon are still the grammar's.
        let mut cursor = Cursor::new(br#""ab" 1"#);
        assert!(cursor.is_key(b"ab") && cursor.take_key(2).is_none());
    }

    #[test]
    fn keys_are_compared_whole_at_every_length() {
        for length in 0..40 {
            let name: Vec<u8> = (0..length).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same(&name, &name));
            for at in 0..length {
                let mut raw = name.clone();
                raw[at] = b'Z';
                assert!(!same(&name, &raw), "{length} at {at}");
            }
            let mut longer = name.clone();
            longer.push(b'Z');
            assert!(!same(&name, &longer));
            if length > 0 {
                assert!(!same(&name, &longer[1..]), "{length} shifted");
            }
        }
    }

    #[test]
    fn numbers_follow_the_grammar() {
        for good in [
            "0", "-0", "7", "-12", "1.5", "0.25", "1e5", "1E+5", "2e-3", "-0.0e0",
        ] {
            assert!(number(good).is_some(), "{good}");
        }
        for bad in [
            "-", "01", "-01", "00", "1.", ".5", "1e", "1e+", "1.e5", "+1", "--1", "0x1", "1_0",
            "Infinity", "NaN", "-a",
        ] {
            assert_eq!(number(bad), None, "{bad}");
        }
    }

    #[test]
    fn whole_numbers_are_read_only_when_written_as_plain_digits() {
        assert_eq!(number("0").unwrap().whole, Some(0));
        assert_eq!(number("250").unwrap().whole, Some(250));
        assert_eq!(
            number("18446744073709551615").unwrap().whole,
            Some(u64::MAX)
        );
        for text in ["18446744073709551616", "-5", "-0", "5.0", "5e0", "1.5"] {
            let found = number(text).unwrap();
            assert_eq!((found.raw, found.whole), (text.as_bytes(), None), "{text}");
        }
    }

    #[test]
    fn whitespace_is_the_four_json_bytes_only() {
        assert!(skips(b" \t\r\n{ \"a\" : [ 1 , 2 ] } \n"));
        for bad in [
            &b"\x0b1"[..],
            b"\x0c1",
            b"\xef\xbb\xbf1",
            b"\xc2\xa01",
            b"1\x00",
        ] {
            assert!(!skips(bad), "{bad:?}");
        }
    }

    #[test]
    fn literals_are_exact() {
        for good in ["null", "true", "false", "[null,true,false]"] {
            assert!(skips(good.as_bytes()), "{good}");
        }
        for bad in ["nul", "tru", "fals", "nulll", "True", "NULL", "truefalse"] {
            assert!(!skips(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn any_value_is_skipped_by_the_grammar() {
        for good in [
            r#"{}"#,
            r#"[]"#,
            r#"{"a":{"b":[1,{"c":"d"},[]],"e":null},"f":-1.5e3}"#,
            r#"[[[[]]],{}]"#,
            r#""s""#,
            "3",
        ] {
            assert!(skips(good.as_bytes()), "{good}");
        }
        for bad in [
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"[,1]"#,
            r#"{,}"#,
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{1:2}"#,
            r#"{"a":1 "b":2}"#,
            r#"[1 2]"#,
            r#"[1}"#,
            r#"{"a":1]"#,
            r#"{"a":[}"#,
            r#"[1]]"#,
            r#"["#,
            r#"{"a""#,
            "",
        ] {
            assert!(!skips(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn numbers_serde_json_cannot_size_are_refused_in_free_form_values() {
        let long = format!("[1{}]", "0".repeat(400));
        for bad in ["[1e400]", "[-1e309]", "{\"a\":[1E+999]}", long.as_str()] {
            assert!(!skips(bad.as_bytes()), "{bad}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(bad).is_ok(),
                "{bad}"
            );
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad}"
            );
        }
        let long = format!("[1{}]", "0".repeat(299));
        for good in [
            "[1e308]",
            "[1e-400]",
            "[0e999999]",
            "[-2.5e-3]",
            long.as_str(),
        ] {
            assert!(skips(good.as_bytes()), "{good}");
        }
        assert!(fits_f64(&[b'9'; 300]) && !fits_f64(&[b'9'; 310]));
    }

    #[test]
    fn nesting_is_bounded() {
        let depth = MAX_DEPTH as usize;
        let deepest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(skips(deepest.as_bytes()));
        let deeper = format!("{}{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
        assert!(!skips(deeper.as_bytes()));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        assert!(skips(objects.as_bytes()));
        let mixed = format!(
            "{}1{}",
            r#"[{"a":"#.repeat(depth / 2),
            "}]".repeat(depth / 2)
        );
        assert!(skips(mixed.as_bytes()));
    }

    #[test]
    fn what_the_grammar_accepts_serde_json_accepts() {
        let samples = [
            r#"{"a":[1,2,{"b":"\u00e9\ud83d\ude00"}],"c":true}"#,
            r#"[-0.5e-7, 0, "x\/y"]"#,
            "\"é\"",
        ];
        for sample in samples {
            assert!(skips(sample.as_bytes()), "{sample}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(sample).is_ok(),
                "{sample}"
            );
        }
    }
}
