//! Stored answers, sealed: an idempotent replay needs LINE Pay's answer byte for byte,
//! and that answer may name the products bought. The journal file must not, so each
//! stored answer is encrypted and authenticated with ring's ChaCha20-Poly1305 (a vetted
//! AEAD; ring is already in the binary through rustls), under a key derived with
//! HKDF-SHA256 from the channel secret, with a fresh random 96-bit nonce per answer.
//!
//! The call the answer belongs to (channel, key, method, path and query, body hash:
//! [`KeyUse::framed`]) is its associated data: an answer copied into another row, or
//! opened for another call, fails authentication like an altered one.
//!
//! Blob: `[2][nonce: 12][ciphertext + tag: 16]`; the plaintext is
//! `[status: u16][content-type length: u16][content type][body]`. A blob of another
//! version (`1`: the HMAC construction used before) does not open.
//!
//! After a secret rotation the old answers no longer open either: the call is then
//! known to have been sent, but its answer cannot be replayed
//! (`idempotency_answer_unavailable`).

use super::binding::KeyUse;
use crate::secret::Secret;
use bytes::Bytes;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

const VERSION: u8 = 2;
/// HKDF's salt and info: a key of its own for this one purpose.
const SALT: &[u8] = b"linepay-sidecar journal answers";
const INFO: &[u8] = b"chacha20-poly1305 key, blob version 2";

/// One stored answer: what the app was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAnswer {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
}

/// The sealing key of one channel secret.
#[derive(Clone)]
pub(crate) struct Seal {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Seal {
    pub(crate) fn new(secret: &Secret) -> Seal {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret.expose());
        // Fails only for an output longer than 255 hashes; the key is 32 bytes.
        let okm = prk
            .expand(&[INFO], &CHACHA20_POLY1305)
            .unwrap_or_else(|_| unreachable!("HKDF-SHA256 yields a 32-byte key"));
        Seal {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            random: SystemRandom::new(),
        }
    }

    /// `None` only when the system's random source fails: the answer is then not
    /// stored, and a replay of its key is refused (`idempotency_answer_unavailable`).
    pub(crate) fn seal(&self, call: &KeyUse<'_>, answer: &StoredAnswer) -> Option<Vec<u8>> {
        let content_type = answer.content_type.as_deref().unwrap_or("").as_bytes();
        // A content type longer than 64 KiB (never seen) is stored as none.
        let type_len = u16::try_from(content_type.len()).unwrap_or(0);
        let content_type = &content_type[..usize::from(type_len)];
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = vec![VERSION];
        sealed.extend_from_slice(&nonce);
        let mut plain = Vec::new();
        plain.extend_from_slice(&answer.status.to_be_bytes());
        plain.extend_from_slice(&type_len.to_be_bytes());
        plain.extend_from_slice(content_type);
        plain.extend_from_slice(&answer.body);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(call)),
                &mut plain,
            )
            .ok()?;
        sealed.extend_from_slice(&plain);
        Some(sealed)
    }

    /// `None` when the blob is of another version, was sealed under another secret or
    /// for another call, or was altered.
    pub(crate) fn open(&self, call: &KeyUse<'_>, sealed: &[u8]) -> Option<StoredAnswer> {
        let (version, rest) = sealed.split_first()?;
        if *version != VERSION {
            return None;
        }
        let (nonce, ciphertext) = rest.split_first_chunk::<{ aead::NONCE_LEN }>()?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(associated_data(call)),
                &mut in_out,
            )
            .ok()?;
        decode(plain)
    }
}

/// The version, then the call: an answer opens only for the call it was sealed for.
fn associated_data(call: &KeyUse<'_>) -> Vec<u8> {
    let mut data = vec![VERSION];
    data.extend_from_slice(&call.framed());
    data
}

fn decode(plain: &[u8]) -> Option<StoredAnswer> {
    let (status, rest) = plain.split_first_chunk::<2>()?;
    let (type_len, rest) = rest.split_first_chunk::<2>()?;
    let (content_type, body) = rest.split_at_checked(usize::from(u16::from_be_bytes(*type_len)))?;
    let content_type = std::str::from_utf8(content_type).ok()?;
    Some(StoredAnswer {
        status: u16::from_be_bytes(*status),
        content_type: (!content_type.is_empty()).then(|| content_type.to_owned()),
        body: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::money::CallFacts;

    fn answer() -> StoredAnswer {
        StoredAnswer {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes::from_static(
                br#"{"returnCode":"0000","info":{"packages":[{"products":[{"name":"Secret Coffee"}]}]}}"#,
            ),
        }
    }

    fn facts(transaction_id: &str) -> CallFacts {
        CallFacts::read(Some(transaction_id), None, b"{}")
    }

    fn call<'a>(facts: &'a CallFacts, target: &'a str) -> KeyUse<'a> {
        KeyUse {
            channel_id: "1657002468",
            key: "k-1",
            method: "POST",
            target,
            template: "/v3/payments/{transactionId}/refund",
            facts,
        }
    }

    #[test]
    fn a_sealed_answer_opens_byte_for_byte_and_hides_its_text() {
        let f = facts("1");
        let here = call(&f, "/v3/payments/1/refund");
        let seal = Seal::new(&Secret::new("s1"));
        let sealed = seal.seal(&here, &answer()).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"Secret"));
        assert_eq!(sealed[0], VERSION);
        // version + nonce + status + type length + type + body + tag
        let a = answer();
        assert_eq!(
            sealed.len(),
            1 + 12 + 4 + a.content_type.unwrap().len() + a.body.len() + 16
        );
        assert_eq!(seal.open(&here, &sealed), Some(answer()));
    }

    #[test]
    fn an_answer_without_content_type_or_body_opens_as_it_was() {
        let f = facts("1");
        let here = call(&f, "/v3/payments/1/refund");
        let seal = Seal::new(&Secret::new("s1"));
        let bare = StoredAnswer {
            status: 504,
            content_type: None,
            body: Bytes::new(),
        };
        assert_eq!(
            seal.open(&here, &seal.seal(&here, &bare).unwrap()),
            Some(bare)
        );
    }

    #[test]
    fn each_answer_gets_a_fresh_nonce() {
        let f = facts("1");
        let here = call(&f, "/v3/payments/1/refund");
        let seal = Seal::new(&Secret::new("s1"));
        let one = seal.seal(&here, &answer()).unwrap();
        let two = seal.seal(&here, &answer()).unwrap();
        assert_ne!(one[1..13], two[1..13]);
        assert_ne!(one, two);
    }

    #[test]
    fn another_secret_or_a_flipped_bit_does_not_open() {
        let f = facts("1");
        let here = call(&f, "/v3/payments/1/refund");
        let sealed = Seal::new(&Secret::new("s1"))
            .seal(&here, &answer())
            .unwrap();
        let seal = Seal::new(&Secret::new("s1"));
        assert_eq!(Seal::new(&Secret::new("s2")).open(&here, &sealed), None);
        for at in [1, 13, sealed.len() - 1] {
            let mut altered = sealed.clone();
            altered[at] ^= 1;
            assert_eq!(seal.open(&here, &altered), None, "bit flipped at {at}");
        }
        assert_eq!(seal.open(&here, &sealed[..sealed.len() - 1]), None);
        assert_eq!(seal.open(&here, &sealed[..10]), None);
        assert_eq!(seal.open(&here, &[]), None);
    }

    #[test]
    fn an_answer_opens_only_for_the_call_it_was_sealed_for() {
        let (one, two) = (facts("1"), facts("2"));
        let seal = Seal::new(&Secret::new("s1"));
        let refund_one = call(&one, "/v3/payments/1/refund");
        let sealed = seal.seal(&refund_one, &answer()).unwrap();
        let others = [
            call(&two, "/v3/payments/2/refund"),
            KeyUse {
                key: "k-2",
                ..refund_one
            },
            KeyUse {
                channel_id: "1657002469",
                ..refund_one
            },
            KeyUse {
                target: "/v3/payments/authorizations/1/capture",
                ..refund_one
            },
        ];
        for other in others {
            assert_eq!(seal.open(&other, &sealed), None, "{other:?}");
        }
    }

    #[test]
    fn a_blob_of_another_version_does_not_open() {
        let f = facts("1");
        let here = call(&f, "/v3/payments/1/refund");
        let seal = Seal::new(&Secret::new("s1"));
        let mut sealed = seal.seal(&here, &answer()).unwrap();
        sealed[0] = 1;
        assert_eq!(seal.open(&here, &sealed), None);
    }

    #[test]
    fn decode_reads_every_field_and_refuses_short_or_bad_plaintext() {
        assert_eq!(
            decode(b"\x01\xf4\x00\x02ab{}"),
            Some(StoredAnswer {
                status: 500,
                content_type: Some("ab".into()),
                body: Bytes::from_static(b"{}"),
            })
        );
        assert_eq!(decode(b"\x00\xc8\x00\x00").unwrap().content_type, None);
        assert_eq!(decode(b"\x00\xc8\x00"), None);
        assert_eq!(decode(b"\x00"), None);
        assert_eq!(decode(b"\x00\xc8\x00\x03ab"), None);
        assert_eq!(decode(b"\x00\xc8\x00\x01\xff"), None);
    }
}
