//! The `demo` and `emulator` subcommands, present only with the `demo` feature (on by
//! default): the sidecar in front of the embedded LINE Pay emulator, or the emulator
//! alone. A module of the binary (src/main.rs), not of the library: a build without the
//! feature compiles neither this file nor the `linepay-emulator` crate.

use crate::{init_logs, process_env, LogFormat, LogLevel, ENV_LOG_LEVEL, LOG_LEVEL_HELP};
use anyhow::Result;
use clap::Args;
use linepay_emulator::cli::{self as emulator_cli, EmulatorArgs};
use linepay_emulator::{EmulatorConfig, Secret, DEMO_CHANNEL_ID, DEMO_CHANNEL_SECRET};
use linepay_sidecar::config::{self, Overrides};
use linepay_sidecar::reload::ConfigSource;
use linepay_sidecar::runtime::{self, shutdown_signal};
use std::net::SocketAddr;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Address of the demo sidecar.
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Address of the demo's /metrics, /healthz, /readyz and /calls.
    #[arg(long, default_value = config::DEFAULT_ADMIN_LISTEN)]
    admin_listen: SocketAddr,
    #[arg(long, value_enum, env = "LINEPAY_SIDECAR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[arg(long, value_enum, env = ENV_LOG_LEVEL, default_value_t = LogLevel::Info, help = LOG_LEVEL_HELP)]
    log_level: LogLevel,
}

/// The emulator's own flags (shared with the `linepay-emulator` binary) plus the
/// sidecar's log format.
#[derive(Args)]
pub(crate) struct EmulatorCommand {
    #[command(flatten)]
    emulator: EmulatorArgs,
    #[arg(long, value_enum, env = "LINEPAY_SIDECAR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[arg(long, value_enum, env = ENV_LOG_LEVEL, default_value_t = LogLevel::Info, help = LOG_LEVEL_HELP)]
    log_level: LogLevel,
}

pub(crate) async fn emulator(args: EmulatorCommand) -> Result<()> {
    init_logs(args.log_format, args.log_level);
    let secret = process_env(config::ENV_CHANNEL_SECRET);
    emulator_cli::run(args.emulator, secret, shutdown_signal()).await?;
    Ok(())
}

pub(crate) async fn demo(args: DemoArgs) -> Result<()> {
    init_logs(args.log_format, args.log_level);
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (emulator_addr, emulator_task) = emulator_cli::spawn(
        loopback,
        EmulatorConfig::new(DEMO_CHANNEL_ID, Secret::new(DEMO_CHANNEL_SECRET)),
    )
    .await?;
    let journal = std::env::temp_dir().join(format!(
        "linepay-sidecar-demo-journal-{}.sqlite3",
        std::process::id()
    ));
    let source = ConfigSource {
        path: None,
        overrides: Overrides::default()
            .with("listen", args.listen.to_string())
            .with("upstream.url", format!("http://{emulator_addr}"))
            .with("admin.listen", args.admin_listen.to_string())
            // The demo's calls are play money: its journal lives and dies with it.
            .with("journal.path", journal.to_string_lossy()),
        env: Box::new(|key: &str| match key {
            config::ENV_CHANNEL_ID => Some(DEMO_CHANNEL_ID.to_owned()),
            config::ENV_CHANNEL_SECRET => Some(DEMO_CHANNEL_SECRET.to_owned()),
            _ => None,
        }),
    };
    let base = format!("http://{}", args.listen);
    let admin = format!("http://{}", args.admin_listen);
    eprintln!("{}", demo_walkthrough(&base, &admin));
    let result = runtime::run(source).await;
    emulator_task.abort();
    for suffix in ["", "-wal", "-shm", "-held-calls"] {
        let mut file = journal.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    result?;
    Ok(())
}

fn demo_walkthrough(base: &str, admin: &str) -> String {
    format!(
        r#"
The demo sidecar signs calls with a demo channel and forwards them to an embedded LINE Pay
emulator that checks every signature as LINE Pay does. Your app (or curl) sends plain JSON:

  curl -s {base}/v3/payments/request -d '{{"amount":100,"currency":"TWD","orderId":"order-1","packages":[{{"id":"p1","amount":100,"products":[{{"name":"Coffee","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}}}'
  # copy info.transactionId from the answer into TX:
  TX=...
  curl -s {base}/v3/payments/$TX/confirm -d '{{"amount":100,"currency":"TWD"}}'
  curl -s "{base}/v3/payments?transactionId=$TX"
  curl -s {base}/v3/payments/$TX/refund -d '{{"refundAmount":40}}'
  curl -s -i {base}/v3/admin          # refused by the allowlist: 403 path_not_allowed

The admin port serves /metrics, /healthz, /readyz and /calls (the call journal, to
loopback peers), e.g. the confirm and refund of order-1:

  curl -s "{admin}/calls?orderId=order-1"

Stop with Ctrl-C.
"#
    )
}
