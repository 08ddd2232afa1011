//! The channel secret the emulator checks signatures with, kept out of printouts.
//!
//! The emulator's own small type rather than the sidecar's `Secret`: this crate does not
//! depend on the sidecar. `Debug` prints a placeholder (an [`EmulatorConfig`] is
//! `Debug`) and the bytes are wiped on drop; comparing secrets is not needed here, the
//! verifier compares signatures in constant time instead.
//!
//! [`EmulatorConfig`]: crate::EmulatorConfig

use std::fmt;
use zeroize::Zeroizing;

#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(Zeroizing::new(bytes.into()))
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = Secret::new("a917ab6a2367b536f8e5a6e2977e06f4");
        let shown = format!("{secret:?} {secret:#?} {:?}", Some(&secret));
        assert!(!shown.contains("a917"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
