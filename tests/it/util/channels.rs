//! Several LINE Pay channels behind one sidecar (issue 19): a config with a `channels:`
//! map, each channel's secret in a file of its own, and the emulator serving the same
//! channels.
//!
//! [`ChannelsConfig`] writes the YAML of the agreed schema (`channels.NAME.channel_id`,
//! `channel_secret_file`, `apis`, `listen`, device headers; `default_channel`) and
//! keeps the secret files for as long as it lives, so a test can rotate one
//! ([`ChannelsConfig::rotate_secret`]) before a reload. A channel's own port is
//! `127.0.0.1:0`, and `RunningSidecar::channel_addr` gives the bound one, from the
//! sidecar's announce line (no port picked ahead, so no race with other tests). [`WEB`] and [`POS`] are the two
//! channels of the issue: a web shop on the online API in TWD, and shop-floor
//! terminals on the offline API in THB.

use super::{EmulatorSetup, Sidecar, TempFile};

/// One channel: what the sidecar's config names, and what the emulator checks.
#[derive(Clone, Debug)]
pub struct ChannelSpec {
    /// The config's name for it (`X-LinePay-Channel`, the metrics label).
    pub name: &'static str,
    pub channel_id: &'static str,
    pub secret: &'static str,
    /// Its one currency at the emulated LINE Pay.
    pub currency: &'static str,
    /// `apis:` (empty: the key is left out, so the top level's apply).
    pub apis: &'static [&'static str],
    /// `merchant_device_profile_id` and `merchant_device_type`, when it has them; the
    /// emulator then requires device headers on its offline calls.
    pub device: Option<(&'static str, &'static str)>,
}

/// The web shop: online API v3, TWD.
pub const WEB: ChannelSpec = ChannelSpec {
    name: "web",
    channel_id: "1000000001",
    secret: "web-secret-it-5b1f0c2e9a7d4c38",
    currency: "TWD",
    apis: &["online_v3"],
    device: None,
};

/// The shop-floor terminals: offline API v4 with device headers, THB.
pub const POS: ChannelSpec = ChannelSpec {
    name: "pos",
    channel_id: "2000000002",
    secret: "pos-secret-it-d4e8a1b7c6f2903e",
    currency: "THB",
    apis: &["offline_v4"],
    device: Some(("TILL-07", "POS")),
};

impl ChannelSpec {
    /// The same channel allowed these API families instead.
    pub fn with_apis(self, apis: &'static [&'static str]) -> ChannelSpec {
        ChannelSpec { apis, ..self }
    }
}

/// An emulator serving `first` and `others` at once, each with its id, secret and
/// currency, device headers required where the channel sends them.
pub fn emulator_for(first: &ChannelSpec, others: &[&ChannelSpec]) -> EmulatorSetup {
    let mut setup = EmulatorSetup::new(first.channel_id, first.secret);
    if first.currency != "TWD" {
        panic!(
            "the first emulated channel is TWD; put {} later",
            first.name
        );
    }
    for channel in others {
        setup = setup.channel(channel.channel_id, channel.secret, channel.currency);
    }
    for channel in std::iter::once(first).chain(others.iter().copied()) {
        if channel.device.is_some() {
            setup = setup.device_headers_required(channel.channel_id);
        }
    }
    setup
}

/// A sidecar config with a `channels:` map; the secret files live as long as it does.
pub struct ChannelsConfig {
    /// Top-level YAML written before `channels:` (e.g. `reload:`), each line ending
    /// in a newline.
    top: String,
    default_channel: Option<&'static str>,
    /// Each channel, whether it has a port of its own, and its secret file.
    channels: Vec<(ChannelSpec, bool, TempFile)>,
}

impl ChannelsConfig {
    /// `top`: top-level YAML to put before `channels:` (may be empty). File watching
    /// is not turned off here: a test that reloads says how.
    pub fn new(top: &str) -> ChannelsConfig {
        ChannelsConfig {
            top: top.to_owned(),
            default_channel: None,
            channels: Vec::new(),
        }
    }

    /// Adds `channel`, served on the shared port (by its header) only.
    pub fn channel(self, channel: &ChannelSpec) -> ChannelsConfig {
        self.add(channel, false)
    }

    /// Adds `channel` with a port of its own (`listen: 127.0.0.1:0`);
    /// `RunningSidecar::channel_addr` says which one it got.
    pub fn channel_on_own_port(self, channel: &ChannelSpec) -> ChannelsConfig {
        self.add(channel, true)
    }

    fn add(mut self, channel: &ChannelSpec, listen: bool) -> ChannelsConfig {
        let file = TempFile::with_contents(
            &format!("{}-channel-secret", channel.name),
            channel.secret.as_bytes(),
        );
        self.channels.push((channel.clone(), listen, file));
        self
    }

    /// `default_channel: NAME`: calls on the shared port without the header go there.
    pub fn default_channel(mut self, name: &'static str) -> ChannelsConfig {
        self.default_channel = Some(name);
        self
    }

    /// Writes a new secret into the channel's secret file (the sidecar reads it on its
    /// next reload).
    pub fn rotate_secret(&self, name: &str, secret: &str) {
        let (_, _, file) = self
            .channels
            .iter()
            .find(|(channel, _, _)| channel.name == name)
            .unwrap_or_else(|| panic!("no channel {name}"));
        std::fs::write(&file.path, secret)
            .unwrap_or_else(|error| panic!("cannot rewrite {}: {error}", file.path.display()));
    }

    /// The config file's text.
    pub fn yaml(&self) -> String {
        let mut yaml = self.top.clone();
        if let Some(name) = self.default_channel {
            yaml.push_str(&format!("default_channel: {name}\n"));
        }
        yaml.push_str("channels:\n");
        for (channel, listen, file) in &self.channels {
            yaml.push_str(&format!(
                "  {}:\n    channel_id: \"{}\"\n    channel_secret_file: \"{}\"\n",
                channel.name,
                channel.channel_id,
                file.path_str()
            ));
            if !channel.apis.is_empty() {
                yaml.push_str(&format!("    apis: [{}]\n", channel.apis.join(", ")));
            }
            if let Some((profile, kind)) = channel.device {
                yaml.push_str(&format!(
                    "    merchant_device_profile_id: {profile}\n    merchant_device_type: {kind}\n"
                ));
            }
            if *listen {
                yaml.push_str("    listen: 127.0.0.1:0\n");
            }
        }
        yaml
    }

    /// The sidecar binary with this config and no channel of the harness's own
    /// (`--channel-id`, `LINEPAY_CHANNEL_SECRET`); the shared port is `--listen
    /// 127.0.0.1:0` as always.
    pub fn sidecar(&self) -> Sidecar {
        Sidecar::new()
            .without_credentials()
            .config_yaml("channels.yaml", self.yaml())
    }
}

#[test]
fn the_config_follows_the_agreed_schema() {
    let config = ChannelsConfig::new("reload:\n  watch_interval: 0s\n")
        .default_channel("web")
        .channel(&WEB)
        .channel_on_own_port(&POS);
    let yaml = config.yaml();
    let expected_start = "reload:\n  watch_interval: 0s\ndefault_channel: web\nchannels:\n  web:\n    channel_id: \"1000000001\"\n    channel_secret_file: \"";
    assert!(yaml.starts_with(expected_start), "{yaml}");
    assert!(yaml.contains("    apis: [online_v3]\n  pos:\n"), "{yaml}");
    assert!(
        yaml.ends_with(
            "    apis: [offline_v4]\n    merchant_device_profile_id: TILL-07\n    merchant_device_type: POS\n    listen: 127.0.0.1:0\n"
        ),
        "{yaml}"
    );
    // The secrets are in their files, never in the YAML.
    assert!(
        !yaml.contains(WEB.secret) && !yaml.contains(POS.secret),
        "{yaml}"
    );
    config.rotate_secret("pos", "rotated");
    let (_, _, file) = &config.channels[1];
    assert_eq!(
        std::fs::read_to_string(&file.path).ok().as_deref(),
        Some("rotated")
    );
}
