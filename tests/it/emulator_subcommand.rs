//! `linepay-sidecar emulator` takes the flags the `linepay-emulator` binary takes
//! (emulator/tests/cli.rs tests that one): `--log-level`, and `LINEPAY_EMULATOR_LOG`, a
//! full filter that wins over it whichever binary runs the emulator; `--channel`, a
//! further channel with its secret in a file.

use crate::util::channels::POS;
use crate::util::{eventually, Call, Cli, EmulatorProcess, Sidecar, TempFile};

/// An unknown path is logged at debug level only.
const DEBUG_LINE: &str = "not a LINE Pay API path";

async fn log_after_a_debug_event(emulator: &EmulatorProcess) -> String {
    let reply = Call::get("/v3/not-an-api").send(emulator.addr).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    // An info line after it: once that is in the log, the debug line would be too.
    let clock = Call::get("/__emulator/clock").send(emulator.addr).await;
    assert_eq!(clock.status, 200, "{}", clock.text());
    eventually("the control call's log line", || async {
        let log = emulator.log();
        if log.contains("emulator: control call") {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subcommand_takes_log_level_and_linepay_emulator_log_wins() {
    let listen = ["--listen", "127.0.0.1:0"];

    let info = EmulatorProcess::start(&listen);
    let log = log_after_a_debug_event(&info).await;
    assert!(!log.contains(DEBUG_LINE), "{log}");

    let debug = EmulatorProcess::start(&[&listen[..], &["--log-level", "debug"]].concat());
    let log = log_after_a_debug_event(&debug).await;
    assert!(log.contains(DEBUG_LINE), "{log}");

    // The filter variable wins over the flag (and over the sidecar's own variable).
    let filtered = EmulatorProcess::start_with_env(
        &[&listen[..], &["--log-level", "info"]].concat(),
        &[
            ("LINEPAY_EMULATOR_LOG", "debug"),
            ("LINEPAY_SIDECAR_LOG", "info"),
        ],
    );
    let log = log_after_a_debug_event(&filtered).await;
    assert!(log.contains(DEBUG_LINE), "{log}");
}

/// `--help` says which variables win over `--log-level`, in the order they are read.
#[test]
fn the_subcommands_log_level_help_names_linepay_emulator_log_first() {
    let output = Cli::new().arg("emulator").arg("--help").run();
    assert!(output.status.success(), "{output:?}");
    let help = output
        .stdout
        .split("--log-level")
        .nth(1)
        .unwrap_or_default();
    let emulator = help.find("LINEPAY_EMULATOR_LOG");
    let sidecar = help.find("LINEPAY_SIDECAR_LOG ");
    assert!(
        emulator.is_some() && sidecar.is_some() && emulator < sidecar,
        "--log-level's help must name LINEPAY_EMULATOR_LOG, then LINEPAY_SIDECAR_LOG:\n{help}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subcommand_serves_a_further_channel_given_with_channel() {
    let secret = TempFile::with_contents(
        "subcommand-pos-secret",
        format!("{}\n", POS.secret).as_bytes(),
    );
    let channel = format!(
        "id={},secret-file={},currency={}",
        POS.channel_id,
        secret.path_str(),
        POS.currency
    );
    let emulator = EmulatorProcess::start(&["--listen", "127.0.0.1:0", "--channel", &channel]);
    let pos = Sidecar::new()
        .without_credentials()
        .arg("--channel-id")
        .arg(POS.channel_id)
        .env("LINEPAY_CHANNEL_SECRET", POS.secret)
        .upstream(emulator.url())
        .config_yaml("subcommand-pos.yaml", "routes:\n  apis: [offline_v4]\n")
        .start()
        .await;
    let pay = |order_id: &str, key: &str, currency: &str| {
        Call::post(
            "/v4/payments/oneTimeKeys/pay",
            format!(
                r#"{{"productName":"Tea","amount":180,"currency":"{currency}","orderId":"{order_id}","oneTimeKey":"{key}"}}"#
            ),
        )
        .send(pos.addr)
    };
    let paid = pay("subcommand-till-1", "123456789012", "THB").await;
    assert_eq!(
        paid.return_code().as_deref(),
        Some("0000"),
        "{}",
        paid.text()
    );
    let twd = pay("subcommand-till-2", "234567890123", "TWD").await;
    assert_eq!(twd.return_code().as_deref(), Some("1178"), "{}", twd.text());
    let log = emulator.log();
    assert!(
        log.contains("serving channel") && log.contains(POS.channel_id),
        "{log}"
    );
    assert!(!log.contains(POS.secret), "the log shows a secret: {log}");
}
