//! The emulator's command line, shared by the `linepay-emulator` binary and by
//! `linepay-sidecar emulator` (the sidecar's `demo` feature), so both take the same
//! flags and print the same start-up line, which scripts and tests wait for.
//!
//! Each binary keeps its own logging set-up and shutdown signal; the channel secret is
//! read from the environment by the binary and handed in, never taken as a flag (a
//! flag shows in `ps`). Further channels (`--channel`, repeatable) name a file that
//! holds their secret, for the same reason.

use crate::{
    ChannelConfig, Currency, Emulator, EmulatorConfig, Secret, SourceNet, DEMO_CHANNEL_ID,
    DEMO_CHANNEL_SECRET,
};
use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::task::{JoinError, JoinHandle};

/// Where the channel id comes from when `--channel-id` is absent.
pub const ENV_CHANNEL_ID: &str = "LINEPAY_CHANNEL_ID";
/// Where the channel secret comes from; without it, the demo secret.
pub const ENV_CHANNEL_SECRET: &str = "LINEPAY_CHANNEL_SECRET";
/// A full log filter (`debug`, `info,hyper=debug`) for the emulator, whichever way it
/// is started; when set it wins over `--log-level`.
pub const ENV_LOG: &str = "LINEPAY_EMULATOR_LOG";
/// The start-up line, followed by the bound address.
pub const ANNOUNCE: &str = "linepay emulator listening on http://";

#[derive(clap::Args, Debug)]
pub struct EmulatorArgs {
    /// Address of the emulator.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Channel id it accepts; also LINEPAY_CHANNEL_ID (default: the demo channel).
    #[arg(long, env = ENV_CHANNEL_ID, default_value = DEMO_CHANNEL_ID)]
    pub channel_id: String,
    /// Answer only calls from this source range (IP/mask, repeatable), like LINE Pay's
    /// server IP whitelist; others get returnCode 1106. Default: every source.
    #[arg(long = "allow-source", value_name = "IP/MASK")]
    pub allow_source: Vec<SourceNet>,
    /// The channel's one currency (TWD, JPY, THB or USD); calls in another get
    /// returnCode 1178.
    #[arg(long, default_value_t = Currency::Twd)]
    pub currency: Currency,
    /// Refuse offline (POS) calls without X-LINE-MerchantDeviceType and
    /// X-LINE-MerchantDeviceProfileId (returnCode 1106), as a channel set to require
    /// them does.
    #[arg(long)]
    pub require_device_headers: bool,
    /// Every payment waits for the buyer on the emulator's payment page
    /// (paymentUrl.web); without it, only those whose orderId contains `buyer-waits`
    /// do, and the others are approved at once.
    #[arg(long)]
    pub wait_for_buyer: bool,
    /// Serve another channel besides the first (repeatable):
    /// `id=ID,secret-file=PATH[,currency=THB][,require-device-headers]`. Each channel
    /// sees only its own payments; a call signed with one channel's secret under
    /// another's id gets returnCode 1106.
    #[arg(long = "channel", value_name = "id=ID,secret-file=PATH,...", value_parser = ChannelParser)]
    pub channels: Vec<ChannelArg>,
}

/// One `--channel` value: another channel, its secret in a file (never on the command
/// line, which `ps` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelArg {
    pub channel_id: String,
    pub secret_file: PathBuf,
    pub currency: Currency,
    pub require_device_headers: bool,
}

/// Parses `--channel` without clap's usual echo of the value in its error, so that a
/// secret typed where a path belongs is not printed back.
#[derive(Clone, Copy, Debug)]
struct ChannelParser;

impl clap::builder::TypedValueParser for ChannelParser {
    type Value = ChannelArg;

    fn parse_ref(
        &self,
        command: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ChannelArg, clap::Error> {
        let refuse = |problem: String| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid --channel: {problem}\n"),
            )
            .with_cmd(command)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("it is not UTF-8".to_owned()))?;
        text.parse().map_err(refuse)
    }
}

/// The keys of a `--channel` value, for messages.
const CHANNEL_KEYS: &str =
    "id=ID, secret-file=PATH, currency=TWD|JPY|THB|USD, require-device-headers";

impl std::str::FromStr for ChannelArg {
    type Err = String;

    fn from_str(text: &str) -> Result<ChannelArg, String> {
        let mut channel_id = None;
        let mut secret_file = None;
        let mut currency = Currency::default();
        let mut require_device_headers = false;
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("id", id)) => channel_id = Some(channel_id_value(id)?),
                Some(("secret-file", "")) => return Err("secret-file= needs a path".into()),
                Some(("secret-file", path)) => secret_file = Some(PathBuf::from(path)),
                Some(("currency", code)) => currency = code.parse()?,
                None if part == "require-device-headers" => require_device_headers = true,
                // Only the key is shown: a value typed in the wrong place may be a secret.
                _ => {
                    let key = part.split_once('=').map_or(part, |(key, _)| key);
                    return Err(format!("`{key}` is not one of {CHANNEL_KEYS}"));
                }
            }
        }
        match (channel_id, secret_file) {
            (Some(channel_id), Some(secret_file)) => Ok(ChannelArg {
                channel_id,
                secret_file,
                currency,
                require_device_headers,
            }),
            _ => Err(format!(
                "a channel needs at least id=ID and secret-file=PATH (keys: {CHANNEL_KEYS})"
            )),
        }
    }
}

/// A channel id as it travels in `X-LINE-ChannelId`: printable ASCII, no spaces.
fn channel_id_value(id: &str) -> Result<String, String> {
    if !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "channel id `{id}` must be printable ASCII without spaces"
        ))
    }
}

impl ChannelArg {
    /// The channel, its secret read from its file (trailing whitespace, such as the
    /// newline `echo` leaves, is not part of it).
    pub fn load(&self) -> Result<ChannelConfig, CliError> {
        let unreadable = |source| CliError::SecretFile {
            channel_id: self.channel_id.clone(),
            path: self.secret_file.clone(),
            source,
        };
        let mut bytes = std::fs::read(&self.secret_file).map_err(unreadable)?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(unreadable(io::Error::new(
                io::ErrorKind::InvalidData,
                "the file is empty",
            )));
        }
        Ok(ChannelConfig {
            currency: self.currency,
            require_device_headers: self.require_device_headers,
            ..ChannelConfig::new(self.channel_id.clone(), Secret::new(bytes))
        })
    }
}

/// Why the emulator could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot listen on {address}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("listener has no address")]
    NoAddress(#[source] io::Error),
    #[error("channel {channel_id}: cannot read its secret from {}", path.display())]
    SecretFile {
        channel_id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("channel id {0} is given to two channels; each channel needs its own id")]
    DuplicateChannel(String),
    #[error("emulator task failed")]
    Task(#[source] JoinError),
    #[error("emulator failed")]
    Serve(#[source] io::Error),
}

/// Binds `listen` and serves `config` there on a task of its own (plain HTTP); returns
/// the bound address and the task, which serves until aborted.
pub async fn spawn(
    listen: SocketAddr,
    config: EmulatorConfig,
) -> Result<(SocketAddr, JoinHandle<io::Result<()>>), CliError> {
    if let Some(channel_id) = config.duplicate_channel_id() {
        return Err(CliError::DuplicateChannel(channel_id));
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| CliError::Listen {
            address: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(CliError::NoAddress)?;
    let emulator = Emulator::new(config);
    Ok((local, tokio::spawn(emulator.serve(listener, None))))
}

/// The `emulator` command: serves until `shutdown` completes. `channel_secret` is the
/// value of [`ENV_CHANNEL_SECRET`], if set and not empty.
pub async fn run(
    args: EmulatorArgs,
    channel_secret: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let secret = channel_secret.unwrap_or_else(|| {
        tracing::info!("LINEPAY_CHANNEL_SECRET is unset: the emulator uses the demo secret");
        DEMO_CHANNEL_SECRET.to_owned()
    });
    if !args.allow_source.is_empty() {
        let ranges: Vec<String> = args.allow_source.iter().map(ToString::to_string).collect();
        tracing::info!(
            allow_sources = %ranges.join(", "),
            "emulator: IP whitelist on: calls from other sources get returnCode 1106"
        );
    }
    let more_channels = args
        .channels
        .iter()
        .map(ChannelArg::load)
        .collect::<Result<Vec<_>, _>>()?;
    let config = EmulatorConfig {
        allow_sources: args.allow_source,
        currency: args.currency,
        require_device_headers: args.require_device_headers,
        more_channels,
        wait_for_buyer: args.wait_for_buyer,
        ..EmulatorConfig::new(args.channel_id, Secret::new(secret))
    };
    if !config.more_channels.is_empty() {
        for channel in config.channels() {
            tracing::info!(
                channel_id = %channel.channel_id,
                currency = %channel.currency,
                require_device_headers = channel.require_device_headers,
                "emulator: serving channel"
            );
        }
    }
    let wait_for_buyer = config.wait_for_buyer;
    let (local, task) = spawn(args.listen, config).await?;
    announce(&format!("{ANNOUNCE}{local}"));
    if wait_for_buyer {
        tracing::info!(
            "emulator: every payment waits for the buyer on its page (info.paymentUrl.web, \
             http://{local}/__emulator/pay/...)"
        );
    }
    tokio::select! {
        result = task => result.map_err(CliError::Task)?.map_err(CliError::Serve)?,
        () = shutdown => {}
    }
    Ok(())
}

/// One line on stdout, flushed: what scripts and tests wait for.
fn announce(line: &str) {
    let mut stdout = io::stdout().lock();
    // A closed stdout must not stop the emulator.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_value_names_its_id_secret_file_currency_and_devices() {
        let parsed: ChannelArg =
            "id=2000000002,secret-file=/run/secrets/pos,currency=THB,require-device-headers"
                .parse()
                .expect("a valid value");
        assert_eq!(
            parsed,
            ChannelArg {
                channel_id: "2000000002".into(),
                secret_file: "/run/secrets/pos".into(),
                currency: Currency::Thb,
                require_device_headers: true,
            }
        );
        let plain: ChannelArg = "secret-file=/s,id=7".parse().expect("any order");
        assert_eq!(
            (plain.currency, plain.require_device_headers),
            (Currency::Twd, false)
        );
    }

    #[test]
    fn a_channel_value_without_its_id_or_file_or_with_another_key_is_refused() {
        for (value, mentions) in [
            ("id=7", "id=ID and secret-file=PATH"),
            ("secret-file=/s", "id=ID and secret-file=PATH"),
            ("id=7,secret-file=", "needs a path"),
            ("id=,secret-file=/s", "printable ASCII"),
            ("id=7 8,secret-file=/s", "printable ASCII"),
            ("id=7,secret-file=/s,currency=EUR", "TWD, JPY, THB or USD"),
            ("id=7,secret-file=/s,device", "`device`"),
        ] {
            let error = value.parse::<ChannelArg>().expect_err(value);
            assert!(error.contains(mentions), "{value}: {error}");
        }
        // A value put under a wrong key is not repeated: it may be a secret.
        let error = "id=7,secret=hunter2-secret"
            .parse::<ChannelArg>()
            .expect_err("no such key");
        assert!(error.contains("`secret`"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
