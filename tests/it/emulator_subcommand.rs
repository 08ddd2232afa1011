//! `linepay-sidecar emulator` takes the flags the `linepay-emulator` binary takes
//! (emulator/tests/cli.rs tests that one): `--log-level`, and `LINEPAY_EMULATOR_LOG`, a
//! full filter that wins over it whichever binary runs the emulator.

use crate::util::{eventually, Call, EmulatorProcess};

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
