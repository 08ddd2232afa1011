//! The emulator's command line, shared by the `linepay-emulator` binary and by
//! `linepay-sidecar emulator` (the sidecar's `demo` feature), so both take the same
//! flags and print the same start-up line, which scripts and tests wait for.
//!
//! Each binary keeps its own logging set-up and shutdown signal; the channel secret is
//! read from the environment by the binary and handed in, never taken as a flag (a
//! flag shows in `ps`).

use crate::{
    Currency, Emulator, EmulatorConfig, Secret, SourceNet, DEMO_CHANNEL_ID, DEMO_CHANNEL_SECRET,
};
use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
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
    let config = EmulatorConfig {
        allow_sources: args.allow_source,
        currency: args.currency,
        require_device_headers: args.require_device_headers,
        wait_for_buyer: args.wait_for_buyer,
        ..EmulatorConfig::new(args.channel_id, Secret::new(secret))
    };
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
