//! What an `Idempotency-Key` is bound to: the call it was first used on. A key names
//! one call (channel, method, path with its query, and body); the same key on any other
//! call is refused (`422 idempotency_key_reused`), never answered with the first call's
//! stored answer: a refund of transaction B must never be told "0000" because
//! transaction A's refund used the same key.
//!
//! The journal stores the binding's digest (`key_binding`) with the key, and the sealed
//! answer carries the binding itself as associated data ([`super::seal`]), so an answer
//! moved to another row does not open there.

use super::store::KeyedCall;
use crate::money::{self, CallFacts};

/// One use of a key: the call it comes with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyUse<'a> {
    pub(crate) channel_id: &'a str,
    pub(crate) key: &'a str,
    pub(crate) method: &'a str,
    /// The path and query as the app sent them: they name the transaction (or order).
    pub(crate) target: &'a str,
    /// The route template, compared only with rows stored before bindings were.
    pub(crate) template: &'a str,
    pub(crate) facts: &'a CallFacts,
}

impl KeyUse<'_> {
    /// The bound fields, each prefixed with its length: two different calls never frame
    /// alike (`"ab" + "c"` is not `"a" + "bc"`).
    pub(crate) fn framed(&self) -> Vec<u8> {
        let fields = [
            self.channel_id,
            self.key,
            self.method,
            self.target,
            &self.facts.body_hash,
        ];
        let mut framed = Vec::new();
        for field in fields {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(field.as_bytes());
        }
        framed
    }

    /// What the journal's `key_binding` column holds: lower-case hex SHA-256 of
    /// [`KeyUse::framed`].
    pub(crate) fn digest(&self) -> String {
        money::body_hash(&self.framed())
    }

    /// Whether `known` (the latest row with this channel and key) is this same call.
    /// A row stored before bindings were (`key_binding` NULL) recorded no path: its
    /// method, route template and facts (transaction, order, amounts, body hash) must
    /// all match, or the key counts as reused.
    pub(crate) fn is_call_of(&self, known: &KeyedCall) -> bool {
        match &known.key_binding {
            Some(stored) => *stored == self.digest(),
            None => {
                known.method == self.method
                    && known.route == self.template
                    && known.facts == *self.facts
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(transaction_id: &str, body: &[u8]) -> CallFacts {
        CallFacts::read(Some(transaction_id), None, body)
    }

    fn use_of<'a>(facts: &'a CallFacts, target: &'a str) -> KeyUse<'a> {
        KeyUse {
            channel_id: "1657002468",
            key: "k-1",
            method: "POST",
            target,
            template: "/v3/payments/{transactionId}/refund",
            facts,
        }
    }

    fn legacy_row(method: &str, route: &str, facts: CallFacts) -> KeyedCall {
        KeyedCall {
            method: method.into(),
            route: route.into(),
            facts,
            key_binding: None,
            outcome: Some("answered".into()),
            status: Some(200),
            reconciled_state: None,
            answer: None,
        }
    }

    #[test]
    fn every_bound_field_changes_the_digest() {
        let a = facts("1", b"{}");
        let b = facts("1", br#"{"refundAmount":1}"#);
        let base = use_of(&a, "/v3/payments/1/refund");
        let variants = [
            KeyUse {
                channel_id: "1657002469",
                ..base
            },
            KeyUse { key: "k-2", ..base },
            KeyUse {
                method: "PUT",
                ..base
            },
            KeyUse {
                target: "/v3/payments/2/refund",
                ..base
            },
            KeyUse {
                target: "/v3/payments/1/refund?x=1",
                ..base
            },
            KeyUse { facts: &b, ..base },
        ];
        let digest = base.digest();
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, base.digest(), "deterministic");
        for variant in variants {
            assert_ne!(variant.digest(), digest, "{variant:?}");
        }
        // The template is not bound: the target already names the route.
        let other_template = KeyUse {
            template: "/v3/payments/{id}/refund",
            ..base
        };
        assert_eq!(other_template.digest(), digest);
    }

    #[test]
    fn fields_are_framed_by_length_not_concatenated() {
        let f = facts("1", b"{}");
        let one = KeyUse {
            channel_id: "ab",
            key: "c",
            ..use_of(&f, "/t")
        };
        let other = KeyUse {
            channel_id: "a",
            key: "bc",
            ..use_of(&f, "/t")
        };
        assert_ne!(one.digest(), other.digest());
        let framed = one.framed();
        assert_eq!(&framed[..6], &[0, 0, 0, 2, b'a', b'b']);
        assert_eq!(&framed[6..11], &[0, 0, 0, 1, b'c']);
    }

    #[test]
    fn a_bound_row_matches_only_its_own_digest() {
        let a = facts("1", b"{}");
        let b = facts("2", b"{}");
        let first = use_of(&a, "/v3/payments/1/refund");
        let mut row = legacy_row("POST", first.template, a.clone());
        row.key_binding = Some(first.digest());
        assert!(first.is_call_of(&row));
        // Same body, same key, another transaction: not the same call.
        let other = use_of(&b, "/v3/payments/2/refund");
        assert!(!other.is_call_of(&row));
        // A bound row is judged by its digest alone, even when its facts agree.
        row.key_binding = Some("0".repeat(64));
        assert!(!first.is_call_of(&row));
    }

    #[test]
    fn a_row_stored_before_bindings_must_match_method_route_and_facts() {
        let a = facts("1", b"{}");
        let here = use_of(&a, "/v3/payments/1/refund");
        let template = here.template;
        assert!(here.is_call_of(&legacy_row("POST", template, a.clone())));
        assert!(!here.is_call_of(&legacy_row("PUT", template, a.clone())));
        assert!(!here.is_call_of(&legacy_row(
            "POST",
            "/v3/payments/{transactionId}/confirm",
            a.clone()
        )));
        assert!(!here.is_call_of(&legacy_row("POST", template, facts("2", b"{}"))));
        assert!(!here.is_call_of(&legacy_row(
            "POST",
            template,
            facts("1", br#"{"refundAmount":1}"#)
        )));
    }
}
