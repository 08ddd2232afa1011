//! Exact ids for JavaScript: LINE Pay's 19-digit ids (`transactionId`,
//! `refundTransactionId`, `originalTransactionId`) are above 2^53, so `JSON.parse`
//! rounds them silently and the next confirm or refund names a transaction that does not
//! exist, or another one. On request, the response filter writes them as JSON strings.
//!
//! A byte-level splice, not a re-serialisation: the scanner walks LINE Pay's answer once,
//! finds each number that is the value of one of those keys (or an element of an array
//! that is), and inserts a `"` before and after it. Every other byte, key order, white
//! space and escape stays as LINE Pay sent it. An answer that is not valid JSON is left
//! untouched. Policy only, no I/O.

use bytes::Bytes;

/// The keys whose number values become strings.
pub(crate) const ID_KEYS: &[&[u8]] = &[
    b"transactionId",
    b"refundTransactionId",
    b"originalTransactionId",
];

/// Deeper nesting than this is not scanned (serde_json refuses deeper input too).
const MAX_DEPTH: usize = 128;

/// The answer with every id number quoted; `None` when there is none to quote or the
/// body is not JSON (then it goes back as it came).
pub fn quote_ids(body: &[u8]) -> Option<Bytes> {
    let mut scanner = Scanner {
        bytes: body,
        at: 0,
        spans: Vec::new(),
    };
    scanner.whitespace();
    scanner.value(false, 0)?;
    scanner.whitespace();
    if scanner.at != body.len() || scanner.spans.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 2 * scanner.spans.len());
    let mut from = 0;
    for (start, end) in &scanner.spans {
        out.extend_from_slice(&body[from..*start]);
        out.push(b'"');
        out.extend_from_slice(&body[*start..*end]);
        out.push(b'"');
        from = *end;
    }
    out.extend_from_slice(&body[from..]);
    Some(Bytes::from(out))
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The byte ranges of the numbers to quote, in order.
    spans: Vec<(usize, usize)>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    /// One value; `is_id` when it is the value of an id key (or an element of one).
    fn value(&mut self, is_id: bool, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(is_id, depth),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                let whole = self.number()?;
                if is_id && whole {
                    self.spans.push((start, self.at));
                }
                Some(())
            }
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.eat(b'{')?;
        self.whitespace();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.whitespace();
            let key = self.string()?;
            let is_id = ID_KEYS.contains(&key);
            self.whitespace();
            self.eat(b':')?;
            self.whitespace();
            self.value(is_id, depth + 1)?;
            self.whitespace();
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    fn array(&mut self, is_id: bool, depth: usize) -> Option<()> {
        self.eat(b'[')?;
        self.whitespace();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.whitespace();
            self.value(is_id, depth + 1)?;
            self.whitespace();
            if self.eat(b',').is_none() {
                return self.eat(b']');
            }
        }
    }

    /// A string's raw bytes between its quotes (escapes not decoded: an id key has none).
    fn string(&mut self) -> Option<&[u8]> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => {
                    let end = self.at;
                    self.at += 1;
                    return self.bytes.get(start..end);
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A JSON number; returns whether it is a plain non-negative integer (the only kind
    /// quoted: an id is never negative, fractional or in exponent form).
    fn number(&mut self) -> Option<bool> {
        let mut whole = true;
        if self.eat(b'-').is_some() {
            whole = false;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            whole = false;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            whole = false;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(whole)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

/// Whether an app's `X-LinePay-Ids-As-Strings` header asks for the rewrite: `true` or
/// `1` turns it on, `false` or `0` off, anything else (or no header) leaves the
/// configured default.
pub(crate) fn requested(value: Option<&http::HeaderValue>, default: bool) -> bool {
    match value.map(|value| value.as_bytes().trim_ascii()) {
        Some(b"true" | b"1") => true,
        Some(b"false" | b"0") => false,
        _ => default,
    }
}

/// The header an app sends to ask for (or decline) the rewrite on one call.
// A `HeaderName`, not a `&str`: looked up on every call, and a `&str` is parsed each time.
pub(crate) const IDS_AS_STRINGS_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-linepay-ids-as-strings");

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn quoted(body: &str) -> String {
        String::from_utf8(quote_ids(body.as_bytes()).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn ids_become_strings_and_nothing_else_changes() {
        let answer = r#"{"returnCode":"0000","returnMessage":"Success.","info":{"transactionId":2021121600698709710,"paymentAccessToken":"187568751124","amount":100}}"#;
        assert_eq!(
            quoted(answer),
            r#"{"returnCode":"0000","returnMessage":"Success.","info":{"transactionId":"2021121600698709710","paymentAccessToken":"187568751124","amount":100}}"#
        );
    }

    #[test]
    fn every_id_key_anywhere_and_arrays_of_ids() {
        let answer = "{\"info\": [ {\"transactionId\" : 2021121600698709710,\n \"refundList\":[{\"refundTransactionId\":2021121600698709711}]},\
                      {\"originalTransactionId\":2021121600698709712, \"ids\":{\"transactionId\":[1, 2021121600698709713]}}]}";
        let expected = "{\"info\": [ {\"transactionId\" : \"2021121600698709710\",\n \"refundList\":[{\"refundTransactionId\":\"2021121600698709711\"}]},\
                      {\"originalTransactionId\":\"2021121600698709712\", \"ids\":{\"transactionId\":[\"1\", \"2021121600698709713\"]}}]}";
        assert_eq!(quoted(answer), expected);
    }

    #[test]
    fn strings_other_keys_and_odd_numbers_are_left_alone() {
        for body in [
            r#"{"transactionId":"2021121600698709710"}"#,
            r#"{"returnMessage":"transactionId: 2021121600698709710","amount":2021121600698709710}"#,
            r#"{"transactionId":-1,"refundTransactionId":1.5,"originalTransactionId":1e19}"#,
            r#"{"xtransactionId":1}"#,
            r#"{"transactionId":{"transactionIdx":5}}"#,
        ] {
            assert_eq!(quote_ids(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn escaped_quotes_in_strings_do_not_confuse_the_scan() {
        let answer = r#"{"returnMessage":"say \"transactionId\":1 \\","transactionId":12}"#;
        assert_eq!(
            quoted(answer),
            r#"{"returnMessage":"say \"transactionId\":1 \\","transactionId":"12"}"#
        );
    }

    #[test]
    fn invalid_json_is_never_touched() {
        for body in [
            &b"{\"transactionId\":1"[..],
            b"{\"transactionId\":1}}",
            b"transactionId=1",
            b"",
            b"{\"transactionId\":01}",
            b"{\"transactionId\":1,}",
            b"\xff{\"transactionId\":1}",
        ] {
            assert_eq!(quote_ids(body), None, "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(quote_ids(deep.as_bytes()), None);
    }

    #[test]
    fn the_header_turns_it_on_or_off_per_call() {
        let on = http::HeaderValue::from_static("true");
        let off = http::HeaderValue::from_static("0");
        let junk = http::HeaderValue::from_static("yes please");
        assert!(requested(Some(&on), false));
        assert!(!requested(Some(&off), true));
        assert!(requested(Some(&junk), true));
        assert!(!requested(None, false));
    }
}
