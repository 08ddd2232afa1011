//! Stored answers, sealed: an idempotent replay needs LINE Pay's answer byte for byte,
//! and that answer may name the products bought. The journal file must not, so each
//! stored answer is encrypted and authenticated with keys derived from the channel
//! secret (HMAC-SHA256 in counter mode for the key stream, HMAC-SHA256 over nonce and
//! ciphertext for the tag; a fresh random nonce per answer).
//!
//! After a secret rotation the old answers no longer open: the call is then known to
//! have been sent, but its answer cannot be replayed (`idempotency_answer_unavailable`).

use crate::secret::Secret;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
const BLOCK_LEN: usize = 32;

/// One stored answer: what the app was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAnswer {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
}

/// The two keys of one channel secret.
#[derive(Clone)]
pub(crate) struct Seal {
    stream: HmacSha256,
    tag: HmacSha256,
}

impl Seal {
    pub(crate) fn new(secret: &Secret) -> Seal {
        let derive = |label: &[u8]| {
            let mut mac = keyed(secret.expose());
            mac.update(label);
            mac.finalize().into_bytes()
        };
        Seal {
            stream: keyed(&derive(b"linepay-sidecar journal seal: stream")),
            tag: keyed(&derive(b"linepay-sidecar journal seal: tag")),
        }
    }

    pub(crate) fn seal(&self, answer: &StoredAnswer) -> Vec<u8> {
        let content_type = answer.content_type.as_deref().unwrap_or("").as_bytes();
        let mut plain = Vec::with_capacity(4 + content_type.len() + answer.body.len());
        plain.extend_from_slice(&answer.status.to_be_bytes());
        let type_len = u16::try_from(content_type.len()).unwrap_or(0);
        plain.extend_from_slice(&type_len.to_be_bytes());
        plain.extend_from_slice(&content_type[..usize::from(type_len)]);
        plain.extend_from_slice(&answer.body);

        let nonce: [u8; NONCE_LEN] = *uuid::Uuid::new_v4().as_bytes();
        self.apply_stream(&nonce, &mut plain);
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + plain.len() + TAG_LEN);
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&plain);
        let tag = self.tag_of(&sealed);
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// `None` when the blob was sealed under another secret or was altered.
    pub(crate) fn open(&self, sealed: &[u8]) -> Option<StoredAnswer> {
        if sealed.len() < 1 + NONCE_LEN + 4 + TAG_LEN || sealed[0] != VERSION {
            return None;
        }
        let (content, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        if !bool::from(self.tag_of(content).as_slice().ct_eq(tag)) {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = content[1..1 + NONCE_LEN].try_into().ok()?;
        let mut plain = content[1 + NONCE_LEN..].to_vec();
        self.apply_stream(&nonce, &mut plain);
        let status = u16::from_be_bytes([plain[0], plain[1]]);
        let type_len = usize::from(u16::from_be_bytes([plain[2], plain[3]]));
        let type_end = 4usize
            .checked_add(type_len)
            .filter(|end| *end <= plain.len())?;
        let content_type = std::str::from_utf8(&plain[4..type_end]).ok()?.to_owned();
        Some(StoredAnswer {
            status,
            content_type: (!content_type.is_empty()).then_some(content_type),
            body: Bytes::copy_from_slice(&plain[type_end..]),
        })
    }

    fn apply_stream(&self, nonce: &[u8; NONCE_LEN], data: &mut [u8]) {
        for (counter, chunk) in (0u64..).zip(data.chunks_mut(BLOCK_LEN)) {
            let mut mac = self.stream.clone();
            mac.update(nonce);
            mac.update(&counter.to_be_bytes());
            let block = mac.finalize().into_bytes();
            for (byte, key) in chunk.iter_mut().zip(block.iter()) {
                *byte ^= key;
            }
        }
    }

    fn tag_of(&self, content: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.tag.clone();
        mac.update(content);
        mac.finalize().into_bytes().into()
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer() -> StoredAnswer {
        StoredAnswer {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes::from_static(
                br#"{"returnCode":"0000","info":{"packages":[{"products":[{"name":"Secret Coffee"}]}]}}"#,
            ),
        }
    }

    #[test]
    fn a_sealed_answer_opens_byte_for_byte_and_hides_its_text() {
        let seal = Seal::new(&Secret::new("s1"));
        let sealed = seal.seal(&answer());
        assert!(!sealed.windows(6).any(|w| w == b"Secret"));
        assert_eq!(seal.open(&sealed), Some(answer()));
    }

    #[test]
    fn another_secret_or_a_flipped_bit_does_not_open() {
        let sealed = Seal::new(&Secret::new("s1")).seal(&answer());
        assert_eq!(Seal::new(&Secret::new("s2")).open(&sealed), None);
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert_eq!(Seal::new(&Secret::new("s1")).open(&altered), None);
        assert_eq!(Seal::new(&Secret::new("s1")).open(&sealed[..10]), None);
    }
}
