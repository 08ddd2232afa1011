//! The channel secret, wrapped so that it cannot leak by accident.
//!
//! `Debug` and `Display` print a fixed placeholder, the bytes are wiped on drop, and
//! equality is constant-time. The only way to reach the bytes is [`Secret::expose`],
//! which makes every use easy to find in review.

use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What `Debug` and `Display` print instead of a secret.
pub const REDACTED: &str = "[redacted]";

#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(Zeroizing::new(bytes.into()))
    }

    /// Reads a secret mounted as a file (Kubernetes Secret, systemd credential).
    /// Trailing newlines and spaces are dropped: `echo secret > file` and editors add one,
    /// and no LINE Pay secret ends in white space.
    pub fn from_file_contents(contents: Vec<u8>) -> Self {
        let mut bytes = Zeroizing::new(contents);
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "a917ab6a2367b536f8e5a6e2977e06f4";

    #[test]
    fn debug_and_display_never_show_the_bytes() {
        // Every way a value gets printed: Debug, Display, pretty Debug, nested Debug.
        let wrapped = Secret::new(RAW);
        let shown = format!("{wrapped:?} {wrapped} {wrapped:#?} {:?}", Some(&wrapped));
        assert!(!shown.contains(RAW), "{shown}");
        assert!(!shown.contains("a917"), "{shown}");
        assert!(shown.contains(REDACTED));
        // Each form on its own, so a blank one cannot hide behind the others.
        assert_eq!(format!("{wrapped:?}"), "Secret([redacted])");
        assert_eq!(wrapped.to_string(), REDACTED);
    }

    #[test]
    fn emptiness_is_about_the_bytes() {
        assert!(Secret::new("").is_empty());
        assert!(Secret::from_file_contents(b" \n".to_vec()).is_empty());
        assert!(!Secret::new(RAW).is_empty());
    }

    #[test]
    fn file_contents_lose_trailing_newline_only() {
        let secret = Secret::from_file_contents(b" abc \r\n".to_vec());
        assert_eq!(secret.expose(), b" abc");
    }

    #[test]
    fn equality_compares_bytes() {
        assert_eq!(Secret::new("x"), Secret::new("x"));
        assert_ne!(Secret::new("x"), Secret::new("y"));
        assert_ne!(Secret::new("x"), Secret::new("xx"));
    }
}
