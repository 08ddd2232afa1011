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
    raw: &RawConfig,
    problems: &mut Problems,
) -> Option<String> {
    // The file's names, valid or not: a channel refused for its secret is reported
    // once, not again as an unknown default.
    let names: Vec<&str> = raw.channels.keys().map(String::as_str).collect();
    match setting {
        Some(setting) => {
            let name = setting.value.trim();
            if names.contains(&name) {
                Some(name.to_owned())
            } else {
                // The configured names are the operator's own file: naming them helps.
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
        None => match names.as_slice() {
            [only] => Some((*only).to_owned()),
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

/// Whole files with `channels:`, through [`super::validate`].
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod file_tests {
    use super::super::*;
    use crate::route::ApiFamily;

    const TWO: &str = r#"
listen: 127.0.0.1:8080
default_channel: web
routes:
  apis: [online_v3, online_v4]
channels:
  web:
    channel_id: "1000000001"
    channel_secret_file: /run/secrets/web
    upstream: { url: "http://127.0.0.1:9001" }
    listen: 127.0.0.1:8081
    limits: { channel: 50/s }
  pos:
    channel_id: "2000000002"
    channel_secret_file: /run/secrets/pos
    apis: [offline_v4]
    merchant_device_profile_id: POS-0001
    merchant_device_type: POS
    listen: 127.0.0.1:8082
"#;

    fn home(key: &str) -> Option<String> {
        (key == "HOME").then(|| "/home/shop".to_owned())
    }

    fn secrets(path: &Path) -> std::io::Result<Vec<u8>> {
        match path.to_str() {
            Some("/run/secrets/web") => Ok(b"web-secret\n".to_vec()),
            Some("/run/secrets/pos") => Ok(b"pos-secret".to_vec()),
            Some("/run/secrets/other") => Ok(b"other-secret".to_vec()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "missing")),
        }
    }

    fn load(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<String>> {
        let raw = from_yaml_str(yaml).map_err(|e| vec![e.in_file("sidecar.yaml")])?;
        validate(raw, "sidecar.yaml", &Overrides::default(), env, &secrets)
            .map_err(|error| error.problems)
    }

    fn one_problem(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
        let problems = load(yaml, env).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems[0].clone()
    }

    #[test]
    fn shared_state_on_redis_is_refused_with_several_channels() {
        let with_redis =
            format!("{TWO}state:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:6379\n");
        let problem = one_problem(&with_redis, &home);
        assert!(
            problem.contains("state.backend: redis serves one channel"),
            "{problem}"
        );
        // One channel on Redis is served.
        let one = "upstream: { url: \"http://127.0.0.1:9001\" }\nchannels:\n  web:\n    channel_id: \"1000000001\"\n    channel_secret_file: /run/secrets/web\nstate:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:6379\n";
        assert!(load(one, &home).is_ok());
    }

    #[test]
    fn each_channel_has_its_own_credentials_apis_upstream_and_port() {
        let config = load(TWO, &home).unwrap();
        let names: Vec<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pos", "web"]);
        let (pos, web) = (&config.channels[0], &config.channels[1]);
        assert_eq!(web.credentials.channel_id, "1000000001");
        assert_eq!(web.credentials.channel_secret.expose(), b"web-secret");
        assert_eq!(pos.credentials.channel_secret.expose(), b"pos-secret");
        assert_eq!(
            web.allowlist.families(),
            [ApiFamily::OnlineV3, ApiFamily::OnlineV4]
        );
        assert_eq!(pos.allowlist.families(), [ApiFamily::OfflineV4]);
        assert_eq!(web.upstream.url.to_string(), "http://127.0.0.1:9001/");
        assert_eq!(web.environment(), "other");
        // What a channel leaves out comes from the top level.
        assert_eq!(
            pos.upstream.url.to_string(),
            "https://sandbox-api-pay.line.me/"
        );
        assert_eq!(pos.environment(), "sandbox");
        assert_eq!(
            pos.upstream.max_response_bytes,
            config.upstream.max_response_bytes
        );
        assert_eq!(
            pos.credentials.merchant_device_type.as_ref().unwrap(),
            "POS"
        );
        assert!(web.credentials.merchant_device_type.is_none());
        assert_eq!(web.listen, Some("127.0.0.1:8081".parse().unwrap()));
        assert!(web.limit.is_some() && pos.limit.is_none());
        assert_eq!(config.default_channel.as_deref(), Some("web"));
        // The primary channel is the default one; the union of families is checked.
        assert_eq!(config.credentials.channel_id, "1000000001");
        assert_eq!(
            config.allowlist.families(),
            [
                ApiFamily::OnlineV3,
                ApiFamily::OnlineV4,
                ApiFamily::OfflineV4
            ]
        );
        assert!(web
            .credentials
            .secret_source
            .contains("channels.web.channel_secret_file"));
    }

    #[test]
    fn the_old_credentials_block_is_one_channel_named_default() {
        let yaml = "credentials:\n  channel_id: \"42\"\n  channel_secret_file: /run/secrets/web\n";
        let config = load(yaml, &home).unwrap();
        assert_eq!(config.channels.len(), 1);
        let channel = &config.channels[0];
        assert_eq!(channel.name, LEGACY_CHANNEL);
        assert_eq!(channel.credentials.channel_id, "42");
        assert_eq!(channel.credentials.channel_secret.expose(), b"web-secret");
        assert_eq!(channel.allowlist.families(), config.allowlist.families());
        assert_eq!(channel.upstream, config.upstream);
        assert_eq!(config.default_channel.as_deref(), Some(LEGACY_CHANNEL));
        assert!(channel.listen.is_none());
    }

    #[test]
    fn credentials_and_channels_together_are_refused() {
        let yaml = format!("credentials:\n  channel_id: \"42\"\n{TWO}");
        let problem = one_problem(&yaml, &home);
        assert!(
            problem.contains("channels: and credentials: are both set"),
            "{problem}"
        );
        assert!(
            problem.contains("credentials.channel_id (line 2)"),
            "{problem}"
        );
        // The legacy secret variable too: it would sign for no channel in particular.
        let env = |key: &str| match key {
            "LINEPAY_CHANNEL_SECRET" => Some("x".to_owned()),
            other => home(other),
        };
        let problem = one_problem(TWO, &env);
        assert!(problem.contains("LINEPAY_CHANNEL_SECRET"), "{problem}");
        assert!(
            !problem.contains("web-secret")
                && !problem.contains('x'.to_string().repeat(2).as_str())
        );
    }

    #[test]
    fn a_channel_secret_file_and_id_come_from_its_variables() {
        let env = |key: &str| match key {
            "LINEPAY_SIDECAR_CHANNELS_WEB_CHANNEL_SECRET_FILE" => {
                Some("/run/secrets/other".to_owned())
            }
            "LINEPAY_SIDECAR_CHANNELS_POS_CHANNEL_ID" => Some("3000000003".to_owned()),
            other => home(other),
        };
        let config = load(TWO, &env).unwrap();
        let (pos, web) = (&config.channels[0], &config.channels[1]);
        assert_eq!(web.credentials.channel_secret.expose(), b"other-secret");
        assert!(web
            .credentials
            .secret_source
            .contains("LINEPAY_SIDECAR_CHANNELS_WEB_CHANNEL_SECRET_FILE"));
        assert_eq!(pos.credentials.channel_id, "3000000003");
        assert_eq!(pos.credentials.channel_secret.expose(), b"pos-secret");
    }

    #[test]
    fn a_channel_without_secret_or_with_one_in_the_yaml_is_refused() {
        let yaml = "channels:\n  web:\n    channel_id: \"1\"\n";
        let problem = one_problem(yaml, &home);
        assert!(
            problem.contains("channel `web` has no channel secret"),
            "{problem}"
        );
        assert!(problem.contains("LINEPAY_SIDECAR_CHANNELS_WEB_CHANNEL_SECRET_FILE"));
        let yaml = "channels:\n  web:\n    channel_id: \"1\"\n    channel_secret: hunter2hunter2\n    channel_secret_file: /run/secrets/web\n";
        let problem = one_problem(yaml, &home);
        assert!(
            problem.starts_with("sidecar.yaml:4: channels.web.channel_secret"),
            "{problem}"
        );
        assert!(!problem.contains("hunter2"), "{problem}");
        let yaml =
            "channels:\n  web:\n    channel_id: \"1\"\n    channel_secret_file: /run/missing\n";
        let problem = one_problem(yaml, &home);
        assert!(
            problem.contains("channels.web.channel_secret_file: cannot read /run/missing"),
            "{problem}"
        );
    }

    #[test]
    fn bad_names_ids_ports_and_defaults_are_refused() {
        let bad_name =
            "channels:\n  Web:\n    channel_id: \"1\"\n    channel_secret_file: /run/secrets/web\n";
        assert!(one_problem(bad_name, &home).contains("`Web` is not a channel name"));

        let same_id = TWO.replace("2000000002", "1000000001");
        assert!(one_problem(&same_id, &home).contains("have the same channel_id"));

        let same_port = TWO.replace("127.0.0.1:8082", "127.0.0.1:8081");
        let problem = one_problem(&same_port, &home);
        assert!(
            problem.contains("shares its port with channel `pos`'s listen")
                || problem.contains("shares its port with channel"),
            "{problem}"
        );
        let shared = TWO.replace("127.0.0.1:8082", "127.0.0.1:8080");
        assert!(one_problem(&shared, &home)
            .contains("channels.pos.listen: 127.0.0.1:8080 shares its port with listen"));

        let unknown_default = TWO.replace("default_channel: web", "default_channel: shop");
        let problem = one_problem(&unknown_default, &home);
        assert!(
            problem.contains("`shop` is not a configured channel; the channels are pos, web"),
            "{problem}"
        );

        let env_clash = "channels:\n  a-b:\n    channel_id: \"1\"\n    channel_secret_file: /run/secrets/web\n  a_b:\n    channel_id: \"2\"\n    channel_secret_file: /run/secrets/pos\n";
        assert!(one_problem(env_clash, &home).contains("have the same variables"));

        let bad_apis = TWO.replace("apis: [offline_v4]", "apis: [offline_v9]");
        assert!(one_problem(&bad_apis, &home).contains("`offline_v9` is not an API family"));
        let no_apis = TWO.replace("apis: [offline_v4]", "apis: []");
        assert!(one_problem(&no_apis, &home).contains("channels.pos.apis: allows no route"));

        let bad_url = TWO.replace("http://127.0.0.1:9001", "http://example.com");
        assert!(one_problem(&bad_url, &home).contains("channels.web.upstream.url"));

        let legacy_default = "default_channel: web\ncredentials:\n  channel_id: \"1\"\n  channel_secret_file: /run/secrets/web\n";
        assert!(one_problem(legacy_default, &home).contains("without channels:, the one channel"));
    }

    #[test]
    fn without_default_channel_several_channels_have_none_and_one_is_its_own() {
        let config = load(&TWO.replace("default_channel: web\n", ""), &home).unwrap();
        assert!(config.default_channel.is_none());
        // The primary is then the first by name.
        assert_eq!(config.credentials.channel_id, "2000000002");
        let one =
            "channels:\n  web:\n    channel_id: \"1\"\n    channel_secret_file: /run/secrets/web\n";
        let config = load(one, &home).unwrap();
        assert_eq!(config.default_channel.as_deref(), Some("web"));
    }

    #[test]
    fn a_route_timeout_for_another_channels_route_is_not_a_problem() {
        let yaml = format!(
            "{TWO}  \nupstream:\n  read_timeout: 30s\n"
        )
        .replace(
            "routes:\n  apis: [online_v3, online_v4]\n",
            "routes:\n  apis: [online_v3, online_v4]\n  timeouts:\n    \"POST /v4/payments/oneTimeKeys/pay\": {read_timeout: 60s}\n",
        );
        let config = load(&yaml, &home).unwrap();
        let pos = &config.channels[0];
        let pay = pos
            .allowlist
            .routes()
            .iter()
            .find(|r| r.template == "/v4/payments/oneTimeKeys/pay")
            .unwrap();
        assert_eq!(pay.timeouts.read, std::time::Duration::from_secs(60));
    }
}

/// The shipped example of several channels passes validation.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod example_tests {
    use super::super::*;

    #[test]
    fn the_channels_example_is_valid() {
        let raw = from_yaml_str(include_str!("../../config/channels.yaml")).unwrap();
        let home = |key: &str| (key == "HOME").then(|| "/home/shop".to_owned());
        let config = validate(
            raw,
            "config/channels.yaml",
            &Overrides::default(),
            &home,
            &|_| Ok(b"a-secret".to_vec()),
        )
        .unwrap();
        let names: Vec<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pos", "web"]);
        assert!(config
            .channels
            .iter()
            .all(|c| c.environment() == "production"));
        assert_eq!(config.default_channel.as_deref(), Some("web"));
    }
}
