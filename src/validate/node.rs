//! The parsed body the rules walk: a light tree that borrows its keys and strings from
//! the request's bytes instead of a `serde_json::Value`, which copies every key and
//! string into its own `String` and every object into a `BTreeMap`.
//!
//! It is read by the same `serde_json` parser, so it accepts and refuses exactly what a
//! `Value` would (nesting limit, UTF-8, escapes, trailing bytes), and its numbers are the
//! same `serde_json::Number`s. Two things a `Value` did for free are kept by hand:
//! a key sent twice counts with its last value ([`member`]), and unknown keys are listed
//! in sorted order once each (`schema::Walk::object`).

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;

/// One JSON value; strings are borrowed unless they hold an escape.
#[derive(Debug, PartialEq)]
pub(super) enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Text(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// The members in the order sent, duplicates included.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// The value of `key` among `members`: the last one sent, as serde_json's map keeps it.
pub(super) fn member<'n, 'a>(
    members: &'n [(Cow<'a, str>, Node<'a>)],
    key: &str,
) -> Option<&'n Node<'a>> {
    members
        .iter()
        .rev()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)
}

impl<'a> Node<'a> {
    /// The member `key` of an object; `None` for anything else.
    pub(super) fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(members) => member(members, key),
            _ => None,
        }
    }

    pub(super) fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Text(text) => Some(text),
            _ => None,
        }
    }

    pub(super) fn as_u64(&self) -> Option<u64> {
        match self {
            Node::Number(number) => number.as_u64(),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: Error>(self, value: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E: Error>(self, value: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    /// As `Value` does: a number that is not finite would be `null`.
    fn visit_f64<E: Error>(self, value: f64) -> Result<Node<'de>, E> {
        Ok(Number::from_f64(value).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E: Error>(self, value: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Text(Cow::Borrowed(value)))
    }

    fn visit_str<E: Error>(self, value: &str) -> Result<Node<'de>, E> {
        Ok(Node::Text(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: Error>(self, value: String) -> Result<Node<'de>, E> {
        Ok(Node::Text(Cow::Owned(value)))
    }

    fn visit_unit<E: Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Node::Object(members))
    }
}

/// An object's key, borrowed unless it holds an escape (serde's own `Cow` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: Error>(self, value: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(value)))
    }

    fn visit_str<E: Error>(self, value: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: Error>(self, value: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn node(text: &str) -> Node<'_> {
        serde_json::from_str(text).unwrap()
    }

    /// Every JSON value reads as the `Value` it would have been, numbers included.
    fn same_as_value(node: &Node<'_>, value: &Value) -> bool {
        match (node, value) {
            (Node::Null, Value::Null) => true,
            (Node::Bool(a), Value::Bool(b)) => a == b,
            (Node::Number(a), Value::Number(b)) => a == b && a.to_string() == b.to_string(),
            (Node::Text(a), Value::String(b)) => a == b,
            (Node::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_as_value(a, b))
            }
            (Node::Object(members), Value::Object(map)) => {
                map.iter()
                    .all(|(key, b)| member(members, key).is_some_and(|a| same_as_value(a, b)))
                    && members
                        .iter()
                        .all(|(key, _)| map.contains_key(key.as_ref()))
            }
            _ => false,
        }
    }

    #[test]
    fn reads_every_value_as_serde_json_does() {
        let text = r#"{"a":[1,-2,18446744073709551615,-0,1.50,1e2,1e300,-9223372036854775808],
            "b\u0041":"x\"y","c":null,"d":true,"e":{"f":[]},"a":"last","é":"ü"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert!(same_as_value(&node(text), &value));
    }

    #[test]
    fn strings_and_keys_are_borrowed_unless_escaped() {
        let body = node(r#"{"plain":"text","esc\u0041ped":"a\nb"}"#);
        let Node::Object(members) = &body else {
            panic!("not an object: {body:?}")
        };
        assert!(matches!(members[0].0, Cow::Borrowed("plain")));
        assert!(matches!(members[0].1, Node::Text(Cow::Borrowed("text"))));
        assert!(matches!(&members[1].0, Cow::Owned(key) if key == "escAped"));
        assert!(matches!(&members[1].1, Node::Text(Cow::Owned(text)) if text == "a\nb"));
    }

    #[test]
    fn a_repeated_key_counts_with_its_last_value() {
        let body = node(r#"{"k":1,"other":0,"k":2}"#);
        assert_eq!(body.get("k").and_then(Node::as_u64), Some(2));
        assert_eq!(body.get("missing"), None);
        assert_eq!(node("[1]").get("k"), None);
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for bad in ["{\"a\":1", "[1] x", "\"\\ud800\"", "1e400", "{1:2}"] {
            assert!(serde_json::from_str::<Node>(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Node>(&deep).is_err());
        assert!(serde_json::from_str::<Value>(&deep).is_err());
    }
}
