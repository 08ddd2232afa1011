//! The key layout in Redis: `{prefix}:{channel_id}:{kind}:{part}:{part}...`.
//!
//! Every key starts with the prefix (several shops, or test runs, share one Redis) and the
//! channel id (LINE Pay's limits and a transaction's guards are per merchant channel, and
//! one sidecar may come to serve several channels without a key migration). A part that
//! comes from outside (an idempotency key, a route template) is written with `%` and `:`
//! percent-encoded, so no two different part lists make the same key.

use std::fmt::Write;

/// Where one channel's keys live: `{prefix}:{channel_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySpace {
    base: String,
}

impl KeySpace {
    pub(crate) fn new(prefix: &str, channel_id: &str) -> KeySpace {
        let mut base = String::with_capacity(prefix.len() + channel_id.len() + 1);
        push_part(&mut base, prefix);
        base.push(':');
        push_part(&mut base, channel_id);
        KeySpace { base }
    }

    /// `{prefix}:{channel_id}:{kind}:{parts...}`; `kind` names what the key holds
    /// (`limit`, `idem`, `lease`, ...).
    pub(crate) fn key(&self, kind: &str, parts: &[&str]) -> String {
        let length = parts.iter().map(|part| part.len() + 1).sum::<usize>();
        let mut key = String::with_capacity(self.base.len() + kind.len() + 1 + length);
        key.push_str(&self.base);
        key.push(':');
        push_part(&mut key, kind);
        for part in parts {
            key.push(':');
            push_part(&mut key, part);
        }
        key
    }
}

/// `part` with `%` and `:` percent-encoded (the separator stays unambiguous).
fn push_part(key: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' | ':' => {
                // Writing to a String cannot fail.
                let _ = write!(key, "%{:02X}", u32::from(c));
            }
            c => key.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeySpace;

    #[test]
    fn every_key_is_scoped_by_prefix_and_channel_and_parts_cannot_collide() {
        let keys = KeySpace::new("linepay-sidecar", "1657002468");
        assert_eq!(
            keys.key("limit", &["global"]),
            "linepay-sidecar:1657002468:limit:global"
        );
        assert_ne!(
            keys.key("idem", &["a:b", "c"]),
            keys.key("idem", &["a", "b:c"])
        );
        assert_eq!(
            keys.key("idem", &["50%:x"]),
            "linepay-sidecar:1657002468:idem:50%25%3Ax"
        );
        let other_channel = KeySpace::new("linepay-sidecar", "1657002469");
        assert_ne!(
            keys.key("limit", &["global"]),
            other_channel.key("limit", &["global"])
        );
        let shop_b = KeySpace::new("shop-b", "1657002468");
        assert_ne!(
            keys.key("limit", &["global"]),
            shop_b.key("limit", &["global"])
        );
    }
}
