//! `channels:` and `default_channel`: the LINE Pay channels (merchants) the sidecar signs
//! as. Each channel is validated into a [`ChannelConfig`] of its own: its credentials,
//! its allowlist (its `apis`, else `routes.apis`), its upstream URL (else
//! `upstream.url`), its own `listen` and bucket. Without `channels:`, the old
//! `credentials:` block is one channel named [`LEGACY_CHANNEL`].
//!
//! Rules: `credentials:` (or its variables and flags) and `channels:` together are
//! refused, so a secret can never sign for a channel it was not written for; a name is
//! 1 to 32 of `a-z`, `0-9`, `_`, `-` (it is a metrics label and a header value); two
//! channels never share an id, a listen address or a variable name.

use super::credentials::{self, channel_env, ENV_CHANNEL_SECRET, ENV_CHANNEL_SECRET_FILE};
use super::raw::{RawChannel, RawConfig};
use super::routes;
use super::setting::{Problems, Setting};
use super::urls::check_upstream_url;
use super::{ChannelConfig, UpstreamConfig};
use crate::route::Allowlist;
use std::net::SocketAddr;
use std::path::Path;

/// The name of the one channel a `credentials:` block describes.
pub const LEGACY_CHANNEL: &str = "default";
/// The longest channel name.
pub const MAX_NAME_LEN: usize = 32;

/// Whether `name` may name a channel: 1 to 32 of `a-z`, `0-9`, `_`, `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether any `credentials:` key is set, from the file, a variable or a flag, or the
/// secret is in `LINEPAY_CHANNEL_SECRET`: what `channels:` cannot be combined with.
fn credentials_named(raw: &RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let c = &raw.credentials;
    let origins = [
        c.channel_id
            .as_ref()
            .map(|s| ("credentials.channel_id", &s.origin)),
        c.channel_secret_file
            .as_ref()
            .map(|s| ("credentials.channel_secret_file", &s.origin)),
        c.merchant_device_profile_id
            .as_ref()
            .map(|s| ("credentials.merchant_device_profile_id", &s.origin)),
        c.merchant_device_type
            .as_ref()
            .map(|s| ("credentials.merchant_device_type", &s.origin)),
    ];
    if let Some((key, origin)) = origins.into_iter().flatten().next() {
        return Some(match origin {
            super::setting::Origin::File { line } => format!("{key} (line {line})"),
            other => format!("{key} (set by {})", other.describe("")),
        });
    }
    env(ENV_CHANNEL_SECRET).map(|_| ENV_CHANNEL_SECRET.to_owned())
}

/// The channels of a configuration that has `channels:`; `None` when it has none (the
/// caller then makes the legacy one). `top` is the top-level upstream, `listen` and
/// `admin` the other listeners (a channel's own `listen` must differ from both).
#[allow(clippy::too_many_arguments)]
pub(super) fn validate(
    raw: &RawConfig,
    top: &UpstreamConfig,
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<Vec<ChannelConfig>> {
    if raw.channels.is_empty() {
        return None;
    }
    if let Some(named) = credentials_named(raw, env) {
        problems.push(format!(
            "channels: and credentials: are both set ({named}): with channels:, each channel names its own id and secret file; move the credentials into a channel (or drop channels: to keep the single channel); {ENV_CHANNEL_SECRET}, {ENV_CHANNEL_SECRET_FILE}, --channel-id and --channel-secret-file belong to credentials: only"
        ));
    }
    let mut channels = Vec::new();
    let mut variables: Vec<(String, &str)> = Vec::new();
    let mut listens: Vec<(SocketAddr, &str)> = Vec::new();
    for (name, entry) in &raw.channels {
        let before = problems.len();
        if !valid_name(name) {
            problems.at_origin(
                &entry.origin,
                format!("channels: `{name}` is not a channel name: 1 to {MAX_NAME_LEN} characters of a-z, 0-9, `_` and `-`"),
            );
            continue;
        }
        let variable = channel_env(name, "");
        if let Some((_, other)) = variables.iter().find(|(v, _)| *v == variable) {
            problems.at_origin(
                &entry.origin,
                format!("channels: `{name}` and `{other}` have the same variables ({variable}...): rename one"),
            );
        }
        variables.push((variable, name));
        let channel = channel(name, &entry.value, raw, top, env, read_file, problems);
        if let Some(address) = channel.as_ref().and_then(|c| c.listen) {
            let clash = listens
                .iter()
                .find(|(other, _)| same_port(*other, address))
                .map(|(_, other)| format!("channel `{other}`'s listen"))
                .or_else(|| {
                    listen
                        .filter(|top| same_port(*top, address))
                        .map(|_| "listen".to_owned())
                })
                .or_else(|| {
                    admin
                        .filter(|a| same_port(*a, address))
                        .map(|_| "admin.listen".to_owned())
                });
            if let Some(clash) = clash {
                problems.about(
                    &entry.value.listen,
                    &format!("channels.{name}.listen"),
                    format!("{address} shares its port with {clash}: each listener needs its own"),
                );
            }
            listens.push((address, name));
        }
        if let (Some(channel), true) = (channel, problems.len() == before) {
            channels.push(channel);
        }
    }
    let mut ids: Vec<(&str, &str)> = Vec::new();
    for channel in &channels {
        let id = channel.credentials.channel_id.to_str().unwrap_or_default();
        if let Some((_, other)) = ids.iter().find(|(other_id, _)| *other_id == id) {
            problems.push(format!(
                "channels `{other}` and `{}` have the same channel_id: one LINE Pay channel is one entry",
                channel.name
            ));
        }
        ids.push((id, &channel.name));
    }
    Some(channels)
}

/// Two listen addresses that cannot both be bound (port 0 picks a free one each time).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.port() != 0
}

fn channel(
    name: &str,
    raw: &RawChannel,
    top_raw: &RawConfig,
    top: &UpstreamConfig,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<ChannelConfig> {
    let before = problems.len();
    let credentials = credentials::validate_channel(name, raw, env, read_file, problems);
    let allowlist = allowlist(name, raw, top_raw, problems);
    let url = match raw.upstream.as_ref().and_then(|u| u.value.url.as_ref()) {
        Some(url) => problems.check(
            url,
            &format!("channels.{name}.upstream.url"),
            check_upstream_url(&url.value),
        ),
        None => Some(top.url.clone()),
    };
    let listen = raw.listen.as_ref().and_then(|setting| {
        let text = setting.value.trim();
        problems.check(
            setting,
            &format!("channels.{name}.listen"),
            text.parse::<SocketAddr>()
                .map_err(|_| format!("`{text}` is not an address such as 127.0.0.1:8081")),
        )
    });
    let limit = raw.limits.as_ref().and_then(|limits| {
        let key = format!("channels.{name}.limits.channel");
        let Some(rate) = &limits.value.channel else {
            problems.at(
                &limits.origin,
                &key,
                "`channel` is missing (e.g. channel: 50/s)",
            );
            return None;
        };
        crate::limit::Bucket::new(
            rate.value.0,
            limits.value.burst.as_ref().map(|burst| burst.value),
        )
        .map_err(|problem| problems.at(&rate.origin, &key, problem))
        .ok()
    });
    match (credentials, allowlist, url) {
        (Some(credentials), Some(allowlist), Some(url)) if problems.len() == before => {
            Some(ChannelConfig {
                name: name.to_owned(),
                credentials,
                allowlist,
                upstream: UpstreamConfig { url, ..top.clone() },
                listen,
                limit,
            })
        }
        _ => None,
    }
}

/// The channel's allowlist: its `apis` (else `routes.apis`) with `routes.allow` and
/// `routes.timeouts`. Problems of `routes:` itself are the top level's to report.
fn allowlist(
    name: &str,
    raw: &RawChannel,
    top: &RawConfig,
    problems: &mut Problems,
) -> Option<Allowlist> {
    let before = problems.len();
    let families = routes::channel_families(&top.routes, raw.apis.as_ref(), problems);
    if problems.len() != before {
        return None;
    }
    let mut quiet = Problems::new(problems.file());
    let allowlist = routes::build(&top.routes, families, &top.upstream, &mut quiet, false);
    if allowlist.as_ref().is_none_or(|a| a.routes().is_empty()) {
        problems.about(
            &raw.apis,
            &format!("channels.{name}.apis"),
            "allows no route: nothing could be forwarded for this channel",
        );
        return None;
    }
    allowlist
}

/// `default_channel`, checked against the channels: the name of the channel a call on
/// the shared port gets when it names none. With one channel, that one.
pub(super) fn default_channel(
    setting: &Option<Setting<String>>,
    channels: &[ChannelConfig],
    problems: &mut Problems,
) -> Option<String> {
    match setting {
        Some(setting) => {
            let name = setting.value.trim();
            if channels.iter().any(|channel| channel.name == name) {
                Some(name.to_owned())
            } else {
                // The configured names are the operator's own file: naming them helps.
                let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
                problems.at(
                    &setting.origin,
                    "default_channel",
                    format!(
                        "`{name}` is not a configured channel; the channels are {}",
                        names.join(", ")
                    ),
                );
                None
            }
        }
        None => match channels {
            [only] => Some(only.name.clone()),
            _ => None,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_short_lowercase_words() {
        for good in ["web", "pos", "tw-shop_2", "a", &"x".repeat(32)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Web", "pos 1", "pös", "a.b", &"x".repeat(33), "a/b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn ports_clash_unless_zero() {
        let a: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let b: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let zero: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(same_port(a, b));
        assert!(!same_port(zero, zero));
        assert!(!same_port(a, "127.0.0.1:8082".parse().unwrap()));
    }
}
