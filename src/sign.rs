//! LINE Pay request signing: pure functions, no I/O.
//!
//! v3: `Base64(HMAC-SHA256(key = secret, message = secret + path + payload + nonce))`,
//! where payload is the exact body bytes of a POST or the exact query string (without
//! `?`) of a GET. The four parts are streamed into the HMAC one after another, so no
//! concatenated copy of the body is ever built, and the keyed HMAC state is computed once
//! per secret ([`Signer::new`]) and cloned per call, which saves two SHA-256 blocks on
//! every request.
//!
//! v2 (legacy): no signature; the secret travels in `X-LINE-ChannelSecret`.

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Length of a Base64-encoded 32-byte digest.
pub const SIGNATURE_LEN: usize = 44;

/// Signs v3 calls for one channel secret. Immutable once built: each call clones the
/// keyed state, so one `Signer` is shared by every request without locking.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
    secret: Secret,
}

impl Signer {
    pub fn new(secret: &Secret) -> Self {
        // HMAC accepts keys of any length, so this cannot fail; an empty secret is
        // refused earlier, by config validation.
        let keyed = <HmacSha256 as Mac>::new_from_slice(secret.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Signer {
            keyed,
            secret: secret.clone(),
        }
    }

    /// The Base64 signature of one call.
    pub fn signature(&self, path: &str, payload: &[u8], nonce: &str) -> String {
        let mut out = [0u8; SIGNATURE_LEN];
        let written = self.signature_into(path, payload, nonce, &mut out);
        // Base64 output is ASCII.
        String::from_utf8_lossy(&out[..written]).into_owned()
    }

    /// Writes the Base64 signature into `out` and returns its length (always 44), without
    /// allocating: the form the proxy uses on its hot path.
    pub fn signature_into(
        &self,
        path: &str,
        payload: &[u8],
        nonce: &str,
        out: &mut [u8; SIGNATURE_LEN],
    ) -> usize {
        let mut mac = self.keyed.clone();
        mac.update(self.secret.expose());
        mac.update(path.as_bytes());
        mac.update(payload);
        mac.update(nonce.as_bytes());
        let digest = mac.finalize().into_bytes();
        BASE64
            .encode_slice(digest, out)
            .unwrap_or_else(|_| unreachable!("44 bytes hold the Base64 of 32"))
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// A fresh nonce: UUID v4, as the LINE Pay SDKs use. Its 122 random bits come from
/// uuid's `fast-rng`: a user-space CSPRNG (ChaCha) per thread, seeded and periodically
/// reseeded from the OS, rather than one `getrandom(2)` system call per nonce.
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Length of a hyphenated UUID nonce.
pub const NONCE_LEN: usize = 36;

/// [`new_nonce`] written into `out`, without allocating: the proxy's hot path.
pub fn new_nonce_into(out: &mut [u8; NONCE_LEN]) -> &str {
    uuid::Uuid::new_v4().hyphenated().encode_lower(out)
}

/// What a v3 call signs as its payload: the body of a POST, the raw query of a GET.
pub fn payload<'a>(method: &http::Method, raw_query: Option<&'a str>, body: &'a [u8]) -> &'a [u8] {
    if method == http::Method::GET {
        raw_query.unwrap_or("").as_bytes()
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference's first vector; the full set runs in tests/it/sign_vectors.rs.
    #[test]
    fn reference_vector() {
        let signer = Signer::new(&Secret::new("a917ab6a2367b536f8e5a6e2977e06f4"));
        let sig = signer.signature(
            "/v3/payments/request",
            br#"{"amount":100,"currency":"TWD"}"#,
            "6f1ba1c9-8f3f-4b9a-9b3e-0d2c1a6b5e77",
        );
        assert_eq!(sig, "07cnOfuso3B3HFlVXKMM4vlF0/yprYM8TmAKhG7ZROM=");
    }

    #[test]
    fn get_signs_query_post_signs_body() {
        let m = http::Method::GET;
        assert_eq!(payload(&m, Some("a=1"), b"body"), b"a=1");
        assert_eq!(payload(&m, None, b"body"), b"");
        assert_eq!(payload(&http::Method::POST, Some("a=1"), b"body"), b"body");
    }

    #[test]
    fn nonces_are_uuid_v4_and_fresh() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).expect("nonce is a UUID");
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn nonce_into_is_a_fresh_uuid_v4_too() {
        let (mut a, mut b) = ([0u8; NONCE_LEN], [0u8; NONCE_LEN]);
        let (a, b) = (new_nonce_into(&mut a), new_nonce_into(&mut b));
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a).expect("nonce is a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a, parsed.hyphenated().to_string());
    }

    #[test]
    fn debug_redacts() {
        let signer = Signer::new(&Secret::new("topsecretvalue"));
        let shown = format!("{signer:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert_eq!(shown, "Signer { secret: Secret([redacted]), .. }");
    }
}
