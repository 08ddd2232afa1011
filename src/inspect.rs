//! Reads a few fields out of JSON bodies for logs and metrics without parsing them:
//! `returnCode` from LINE Pay's answer, `orderId` from the app's request,
//! `transactionId` from either.
//!
//! A byte scan, not a parser: the pass-through must not pay for a full JSON parse of
//! every answer, and the result only labels a metric or a log line. The scan looks for
//! the first `"key"` followed by optional white space, `:`, optional white space and a
//! string or a run of digits; anything else is "absent". Values are capped in length and
//! restricted to printable ASCII so that a log line cannot be forged through them.

const MAX_VALUE_LEN: usize = 100;

/// The first string value of `key`, e.g. `returnCode` → `0000`.
pub fn string_field<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let rest = after_key(body, key)?;
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
    if rest.get(end) != Some(&b'"') {
        // An escape inside the value: not worth decoding for a log field.
        return None;
    }
    printable(&rest[..end])
}

/// The first number value of `key` (digits only), or its string value, e.g.
/// `transactionId` → `2021121600698709710`, kept exact as text.
pub fn id_field<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let rest = after_key(body, key)?;
    if rest.first() == Some(&b'"') {
        return string_field(body, key);
    }
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    printable(&rest[..end])
}

fn after_key<'a>(body: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let needle_len = key.len() + 2;
    let mut from = 0;
    while from + needle_len <= body.len() {
        let window = &body[from..];
        let found = window.windows(needle_len).position(|w| {
            w[0] == b'"' && w[needle_len - 1] == b'"' && &w[1..needle_len - 1] == key.as_bytes()
        })?;
        let rest = trim_start(&window[found + needle_len..]);
        if let Some(value) = rest.strip_prefix(b":") {
            return Some(trim_start(value));
        }
        // The key text appeared as a value, not a key: keep looking.
        from += found + needle_len;
    }
    None
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn printable(value: &[u8]) -> Option<&str> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return None;
    }
    if !value.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// The `orderId` of a GET query (`transactionId=…&orderId=…`), first occurrence.
pub fn query_field<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| printable(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_return_code_from_line_pay_answers() {
        let body = br#"{"returnCode":"0000","returnMessage":"Success.","info":{"transactionId":2021121600698709710}}"#;
        assert_eq!(string_field(body, "returnCode"), Some("0000"));
        assert_eq!(id_field(body, "transactionId"), Some("2021121600698709710"));
        let spaced = br#"{ "returnCode" : "1106" , "returnMessage": "Header information error."}"#;
        assert_eq!(string_field(spaced, "returnCode"), Some("1106"));
    }

    #[test]
    fn absent_or_odd_values_are_none() {
        assert_eq!(string_field(b"not json", "returnCode"), None);
        assert_eq!(string_field(br#"{"returnCode":1}"#, "returnCode"), None);
        assert_eq!(
            string_field(br#"{"returnCode":"a\"b"}"#, "returnCode"),
            None
        );
        assert_eq!(
            string_field(br#"{"returnCode":"line1\nline2"}"#, "returnCode"),
            None
        );
        assert_eq!(string_field(br#"{"returnCode":""#, "returnCode"), None);
        assert_eq!(id_field(br#"{"transactionId":}"#, "transactionId"), None);
        let long = format!(r#"{{"orderId":"{}"}}"#, "x".repeat(500));
        assert_eq!(string_field(long.as_bytes(), "orderId"), None);
    }

    #[test]
    fn a_key_that_appears_as_a_value_first_is_skipped() {
        let body = br#"{"note":"orderId","orderId":"A-1"}"#;
        assert_eq!(string_field(body, "orderId"), Some("A-1"));
    }

    #[test]
    fn query_fields() {
        assert_eq!(
            query_field("transactionId=1&orderId=A-1", "orderId"),
            Some("A-1")
        );
        assert_eq!(query_field("transactionId=1", "orderId"), None);
    }

    #[test]
    fn printable_values_are_bounded_in_length_and_alphabet() {
        let field = |value: &str| {
            let body = format!(r#"{{"orderId":"{value}"}}"#);
            string_field(body.as_bytes(), "orderId").map(str::to_owned)
        };
        let longest = "x".repeat(MAX_VALUE_LEN);
        assert_eq!(field(&longest).as_deref(), Some(longest.as_str()));
        assert_eq!(field(&"x".repeat(MAX_VALUE_LEN + 1)), None);
        assert_eq!(field("a b").as_deref(), Some("a b"));
        assert_eq!(field("!~").as_deref(), Some("!~"));
        assert_eq!(field(""), None);
        for unprintable in ["a\tb", "a\u{7f}b", "caf\u{e9}", "a\u{1}b"] {
            assert_eq!(field(unprintable), None, "{unprintable:?}");
        }
    }

    #[test]
    fn a_key_that_first_appears_as_a_value_is_still_found() {
        let body = br#"{"note":"returnCode","returnCode":"0000"}"#;
        assert_eq!(string_field(body, "returnCode"), Some("0000"));
        assert_eq!(string_field(br#"{"x":1,"returnCode""#, "returnCode"), None);
        assert_eq!(string_field(br#""returnCode""#, "returnCode"), None);
        assert_eq!(
            id_field(br#"{"transactionId":123}"#, "transactionId"),
            Some("123")
        );
        assert_eq!(
            id_field(br#"{"transactionId":"RK-1"}"#, "transactionId"),
            Some("RK-1")
        );
    }
}
