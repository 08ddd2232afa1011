//! The `demo` and `emulator` subcommands, present only with the `demo` feature (on by
//! default): the sidecar in front of the embedded LINE Pay emulator, or the emulator
//! alone. A module of the binary (src/main.rs), not of the library: a build without the
//! feature compiles neither this file nor the `linepay-emulator` crate.

use crate::{
    init_logs, init_logs_filtered, process_env, LogFormat, LogLevel, ENV_LOG, ENV_LOG_LEVEL,
    LOG_LEVEL_HELP,
};
use anyhow::Result;
use clap::Args;
use linepay_emulator::cli::{self as emulator_cli, EmulatorArgs};
use linepay_emulator::{EmulatorConfig, Secret, DEMO_CHANNEL_ID, DEMO_CHANNEL_SECRET};
use linepay_sidecar::config::{self, Overrides};
use linepay_sidecar::reload::ConfigSource;
use linepay_sidecar::runtime::{self, shutdown_signal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Every payment waits for the buyer on the emulator's payment page (open
    /// info.paymentUrl.web in a browser); without it the demo approves at once.
    #[arg(long)]
    wait_for_buyer: bool,
    /// The demo's call journal (`journal.path`; also LINEPAY_SIDECAR_JOURNAL_PATH), kept
    /// when the demo stops. Unset: a file in the temporary directory, deleted on exit.
    #[arg(long, value_name = "FILE")]
    journal_path: Option<PathBuf>,
    /// Keep the temporary journal when the demo stops (to read it with `calls`).
    #[arg(long)]
    keep_journal: bool,
}

/// The demo's journal: where it is, and whether it outlives the demo.
struct DemoJournal {
    path: PathBuf,
    keep: bool,
}

impl DemoJournal {
    /// `--journal-path`, else `LINEPAY_SIDECAR_JOURNAL_PATH`, through the sidecar's own
    /// precedence; a path given either way is kept. Else a temporary file, per process.
    fn choose(args: &DemoArgs) -> Result<Self> {
        let mut overrides = Overrides::default();
        if let Some(path) = &args.journal_path {
            overrides = overrides.with("journal.path", path.to_string_lossy());
        }
        let location = ConfigSource {
            path: None,
            overrides,
            env: Box::new(process_env),
        }
        .journal_location()
        .map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))?;
        Ok(match location.set_by {
            Some(_) => DemoJournal {
                path: location.path,
                keep: true,
            },
            None => DemoJournal {
                path: std::env::temp_dir().join(format!(
                    "linepay-sidecar-demo-journal-{}.sqlite3",
                    std::process::id()
                )),
                keep: args.keep_journal,
            },
        })
    }

    /// The journal and SQLite's files beside it, unless it is to be kept.
    fn remove_unless_kept(&self) {
        if self.keep {
            return;
        }
        for suffix in ["", "-wal", "-shm", "-held-calls"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `--log-level` of the `emulator` subcommand: the filter variables it reads, in the
/// order [`emulator`] tries them.
const EMULATOR_LOG_LEVEL_HELP: &str = "Least severe level logged; LINEPAY_EMULATOR_LOG, else LINEPAY_SIDECAR_LOG (a full filter such as `info,hyper=debug`), wins when set";

/// The emulator's own flags (shared with the `linepay-emulator` binary) plus the
/// sidecar's log format.
#[derive(Args)]
pub(crate) struct EmulatorCommand {
    #[command(flatten)]
    emulator: EmulatorArgs,
    #[arg(long, value_enum, env = "LINEPAY_SIDECAR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[arg(long, value_enum, env = ENV_LOG_LEVEL, default_value_t = LogLevel::Info, help = EMULATOR_LOG_LEVEL_HELP)]
    log_level: LogLevel,
}

pub(crate) async fn emulator(args: EmulatorCommand) -> Result<()> {
    // LINEPAY_EMULATOR_LOG filters the emulator whichever binary runs it.
    init_logs_filtered(
        args.log_format,
        args.log_level,
        &[emulator_cli::ENV_LOG, ENV_LOG],
    );
    let secret = process_env(config::ENV_CHANNEL_SECRET);
    emulator_cli::run(args.emulator, secret, shutdown_signal()).await?;
    Ok(())
}

pub(crate) async fn demo(args: DemoArgs) -> Result<()> {
    init_logs(args.log_format, args.log_level);
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (emulator_addr, emulator_task) = emulator_cli::spawn(
        loopback,
        EmulatorConfig {
            wait_for_buyer: args.wait_for_buyer,
            ..EmulatorConfig::new(DEMO_CHANNEL_ID, Secret::new(DEMO_CHANNEL_SECRET))
        },
    )
    .await?;
    let journal = DemoJournal::choose(&args)?;
    let source = ConfigSource {
        path: None,
        overrides: Overrides::default()
            .with("listen", args.listen.to_string())
            .with("upstream.url", format!("http://{emulator_addr}"))
            .with("admin.listen", args.admin_listen.to_string())
            .with("journal.path", journal.path.to_string_lossy()),
        env: Box::new(|key: &str| match key {
            config::ENV_CHANNEL_ID => Some(DEMO_CHANNEL_ID.to_owned()),
            config::ENV_CHANNEL_SECRET => Some(DEMO_CHANNEL_SECRET.to_owned()),
            _ => None,
        }),
    };
    eprintln!(
        "{}",
        demo_walkthrough(&Walkthrough {
            base: &format!("http://{}", args.listen),
            admin: args.admin_listen,
            emulator: emulator_addr,
            journal: &journal.path,
            keep_journal: journal.keep,
            wait_for_buyer: args.wait_for_buyer,
        })
    );
    let result = runtime::run(source).await;
    emulator_task.abort();
    journal.remove_unless_kept();
    result?;
    Ok(())
}

/// What the demo tells a newcomer at start.
struct Walkthrough<'a> {
    base: &'a str,
    admin: SocketAddr,
    emulator: SocketAddr,
    journal: &'a Path,
    keep_journal: bool,
    wait_for_buyer: bool,
}

fn demo_walkthrough(demo: &Walkthrough<'_>) -> String {
    let Walkthrough {
        base,
        admin,
        emulator,
        journal,
        keep_journal,
        wait_for_buyer,
    } = demo;
    let page = if *wait_for_buyer {
        "Every payment waits for you on the emulator's payment page: open the request's
info.paymentUrl.web in a browser on this machine and Approve (confirm answers 1169
until then). The browser then goes to confirmUrl with transactionId and orderId in its
query (shop.example does not exist: read them from the address bar) and confirm works."
    } else {
        "The emulated buyer approves at once. To try the payment page a buyer sees, restart
with --wait-for-buyer (or put buyer-waits in an orderId) and open the request's
info.paymentUrl.web in a browser on this machine."
    };
    let journal = journal.display();
    let journal_fate = if *keep_journal {
        "kept when the demo stops"
    } else {
        "deleted when the demo stops; keep it with --keep-journal or --journal-path FILE"
    };
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

{page}

The admin port http://{admin} serves /metrics, /healthz, /readyz and /calls (the call
journal, to loopback peers), e.g. the confirm and refund of order-1:
  curl -s "http://{admin}/calls?orderId=order-1"
The emulator (LINE Pay's stand-in) is http://{emulator}; its controls (docs/emulator.md):
  curl -s http://{emulator}/__emulator/clock                          # its clock; POST {{"advance":"21m"}}
  curl -s -X POST http://{emulator}/__emulator/faults -d '{{"route":"confirm","kind":"drop","stage":"after"}}'
  # an orderId containing buyer-waits waits for the buyer until this (or "cancel"):
  curl -s -X POST http://{emulator}/__emulator/payments/$TX/buyer -d '{{"action":"approve"}}'
The call journal is {journal} ({journal_fate}):
  linepay-sidecar calls --journal {journal}

Stop with Ctrl-C.
"#
    )
}
