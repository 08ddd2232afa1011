//! The command line: `sign`, `check`, and what the running sidecar prints.

use crate::util::{
    eventually, remove_journal_sidecars, start_emulator, Call, Cli, Sidecar, TempFile, CHANNEL_ID,
    CHANNEL_SECRET,
};
use std::path::PathBuf;

/// The reference vector from linepay-api.md.
const VECTOR_SECRET: &str = "a917ab6a2367b536f8e5a6e2977e06f4";
const VECTOR_BODY: &str = r#"{"amount":100,"currency":"TWD"}"#;
const VECTOR_NONCE: &str = "6f1ba1c9-8f3f-4b9a-9b3e-0d2c1a6b5e77";
const VECTOR_SIGNATURE: &str = "07cnOfuso3B3HFlVXKMM4vlF0/yprYM8TmAKhG7ZROM=";

/// `sign` of this body file for `/v3/payments/request`, with the reference vector's nonce
/// and secret and channel `1234567890`.
fn sign_with_the_vector_secret(body: &TempFile) -> Cli {
    Cli::new()
        .arg("sign")
        .arg("--path")
        .arg("/v3/payments/request")
        .arg("--body-file")
        .arg(body.path_str())
        .arg("--nonce")
        .arg(VECTOR_NONCE)
        .arg("--channel-id")
        .arg("1234567890")
        .env("LINEPAY_CHANNEL_SECRET", VECTOR_SECRET)
}

#[test]
fn sign_prints_the_reference_signature_and_never_the_secret() {
    let body = TempFile::with_contents("body.json", VECTOR_BODY.as_bytes());

    let output = sign_with_the_vector_secret(&body).run();

    assert!(output.status.success(), "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert!(
        lines.contains(&format!("X-LINE-Authorization: {VECTOR_SIGNATURE}").as_str()),
        "{output:?}"
    );
    assert!(
        lines.contains(&format!("X-LINE-Authorization-Nonce: {VECTOR_NONCE}").as_str()),
        "{output:?}"
    );
    assert!(
        lines.contains(&"X-LINE-ChannelId: 1234567890"),
        "{output:?}"
    );
    assert!(!output.stdout.contains(VECTOR_SECRET), "secret on stdout");
    assert!(!output.stderr.contains(VECTOR_SECRET), "secret on stderr");
}

#[test]
fn sign_signs_the_body_file_byte_for_byte() {
    // A trailing newline is part of the body: the signature must change with it.
    let body = TempFile::with_contents("body-nl.json", format!("{VECTOR_BODY}\n").as_bytes());

    let output = sign_with_the_vector_secret(&body).run();

    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stdout.contains("X-LINE-Authorization: "),
        "{output:?}"
    );
    assert!(!output.stdout.contains(VECTOR_SIGNATURE), "{output:?}");
}

#[test]
fn check_names_the_line_and_key_of_a_bad_yaml() {
    let config = TempFile::with_contents(
        "bad.yaml",
        b"listen: 127.0.0.1:0\nupstream:\n  url: http://127.0.0.1:9\n  conect_timeout: 5s\n",
    );

    let output = Cli::check_config(config.path_str())
        .env("LINEPAY_CHANNEL_ID", CHANNEL_ID)
        .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
        .run();

    assert!(!output.status.success(), "{output:?}");
    assert!(output.stderr.contains("conect_timeout"), "{output:?}");
    assert!(
        output.stderr.contains("line 4") || output.stderr.contains(":4:"),
        "the error must name line 4: {output:?}"
    );
}

#[test]
fn check_refuses_a_secret_written_in_the_yaml_without_echoing_it() {
    let config = TempFile::with_contents(
        "secret.yaml",
        format!(
            "upstream:\n  url: http://127.0.0.1:9\ncredentials:\n  channel_id: \"{CHANNEL_ID}\"\n  channel_secret: \"{CHANNEL_SECRET}\"\n"
        )
        .as_bytes(),
    );

    let output = Cli::check_config(config.path_str())
        .env("LINEPAY_CHANNEL_SECRET", "the-env-secret-is-fine")
        .run();

    assert!(!output.status.success(), "{output:?}");
    assert!(output.stderr.contains("channel_secret"), "{output:?}");
    assert!(
        output.stderr.contains(":5"),
        "the error must name line 5: {output:?}"
    );
    assert!(
        !output.stderr.contains(CHANNEL_SECRET),
        "secret echoed: {output:?}"
    );
    assert!(
        !output.stdout.contains(CHANNEL_SECRET),
        "secret echoed: {output:?}"
    );
}

#[test]
fn check_accepts_a_good_config() {
    let config = TempFile::with_contents(
        "good.yaml",
        format!("listen: 127.0.0.1:0\nupstream:\n  url: http://127.0.0.1:9\ncredentials:\n  channel_id: \"{CHANNEL_ID}\"\n")
            .as_bytes(),
    );

    let output = Cli::check_config(config.path_str())
        .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
        .run();

    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.contains("configuration OK"), "{output:?}");
    assert!(!output.stdout.contains(CHANNEL_SECRET), "{output:?}");
    assert!(!output.stderr.contains(CHANNEL_SECRET), "{output:?}");
}

/// `check … | head -1`, `calls … | head`, `sign … | head -1`: a reader that stops early
/// ends the command quietly with success, never with a panic's exit code 101 (which
/// docs/operating.md calls a bug).
#[test]
fn a_reader_that_stops_early_is_not_a_crash() {
    let config = TempFile::with_contents(
        "good.yaml",
        format!("listen: 127.0.0.1:0\nupstream:\n  url: http://127.0.0.1:9\ncredentials:\n  channel_id: \"{CHANNEL_ID}\"\n")
            .as_bytes(),
    );
    let body = TempFile::with_contents("body.json", VECTOR_BODY.as_bytes());
    let commands = [
        (
            "check",
            Cli::check_config(config.path_str()).env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET),
        ),
        ("sign", sign_with_the_vector_secret(&body)),
    ];
    for (name, command) in commands {
        let output = command.stdout_closed().run();
        assert_eq!(output.status.code(), Some(0), "{name}: {output:?}");
        assert!(!output.stderr.contains("panicked"), "{name}: {output:?}");
        assert!(
            !output.stderr.contains(CHANNEL_SECRET),
            "{name}: {output:?}"
        );
        assert!(!output.stderr.contains(VECTOR_SECRET), "{name}: {output:?}");
    }
}

/// `calls --limit 0` is refused as `/calls?limit=0` is (it listed 100 rows before).
#[test]
fn calls_refuses_a_limit_of_zero() {
    let output = Cli::new()
        .arg("calls")
        .arg("--journal")
        .arg("/nonexistent/journal.sqlite3")
        .arg("--limit")
        .arg("0")
        .run();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        output.stderr.contains("--limit") && output.stderr.contains("1 or more"),
        "{output:?}"
    );
    assert!(output.stdout.is_empty(), "{output:?}");
}

#[test]
fn flags_can_be_spelled_like_their_config_keys() {
    let output = Cli::new()
        .arg("check")
        .arg("--upstream-url")
        .arg("http://127.0.0.1:9")
        .arg("--upstream-connect-timeout")
        .arg("1s")
        .arg("--upstream-read-timeout")
        .arg("2s")
        .arg("--routes-v2-legacy")
        .arg("--channel-id")
        .arg(CHANNEL_ID)
        .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
        .run();

    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stdout.contains("upstream http://127.0.0.1:9/"),
        "{output:?}"
    );
    assert!(
        output
            .stdout
            .contains("30 allowed routes (routes.apis: [online_v3, online_v4, online_v2])"),
        "v2 added to v3 and v4: {output:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn running_sidecar_never_prints_the_secret() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let mut sidecar = Sidecar::new()
        .upstream(emulator.url())
        .arg("--v2-legacy")
        .start()
        .await;

    let v3 = Call::post(
        "/v3/payments/request",
        r#"{"amount":100,"currency":"TWD","orderId":"leak-1","packages":[{"id":"p1","amount":100,"products":[{"name":"Tea","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(v3.return_code().as_deref(), Some("0000"), "{}", v3.text());
    let v2 = Call::post(
        "/v2/payments/request",
        r#"{"productName":"Tea","amount":100,"currency":"TWD","confirmUrl":"https://shop.example/c","orderId":"leak-2"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(v2.return_code().as_deref(), Some("0000"), "{}", v2.text());
    let refused = Call::post("/v3/admin", "{}").send(sidecar.addr).await;
    assert_eq!(refused.status, 403);
    let forged = Call::post("/v3/payments/request", "{}")
        .header("x-line-channelsecret", CHANNEL_SECRET)
        .send(sidecar.addr)
        .await;
    assert_eq!(
        forged.return_code().as_deref(),
        Some("2101"),
        "{}",
        forged.text()
    );

    let output = sidecar.stop();
    // The sidecar did log the calls (so there was output to leak into) ...
    assert!(output.stderr.contains("call forwarded"), "{output}");
    // ... and the secret is in none of it.
    assert!(!output.stdout.contains(CHANNEL_SECRET), "{output}");
    assert!(!output.stderr.contains(CHANNEL_SECRET), "{output}");
    for reply in [&v3, &v2, &refused, &forged] {
        assert!(!reply.text().contains(CHANNEL_SECRET), "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn running_sidecar_announces_its_proxy_then_admin_address() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let mut sidecar = Sidecar::new().upstream(emulator.url()).start().await;
    let (addr, admin_addr) = (sidecar.addr, sidecar.admin_addr);

    let output = sidecar.stop();

    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{output}");
    let expected = format!(
        "linepay-sidecar listening on http://{addr} (upstream {}",
        emulator.url()
    );
    assert!(lines[0].starts_with(&expected), "{output}");
    assert_eq!(
        lines[1],
        format!("linepay-sidecar admin on http://{admin_addr} (/metrics /healthz /readyz /calls)"),
        "{output}"
    );
    assert!(lines[0].ends_with(')'), "{output}");
}

/// `calls` finds the journal as the sidecar does: `--journal`, then
/// `LINEPAY_SIDECAR_JOURNAL_PATH`, then `journal.path` of `--config`, then the default;
/// where no journal is, it says which source named the path.
#[test]
fn calls_finds_the_journal_with_the_sidecars_precedence() {
    let config = TempFile::with_contents(
        "calls-journal.yaml",
        b"journal:\n  path: /nonexistent/from-file.sqlite3\n",
    );
    let calls = |flag: Option<&str>, env: Option<&str>, with_config: bool| {
        let mut cli = Cli::new().arg("calls");
        if let Some(path) = flag {
            cli = cli.arg("--journal").arg(path);
        }
        if with_config {
            cli = cli.arg("--config").arg(config.path_str());
        }
        if let Some(path) = env {
            cli = cli.env("LINEPAY_SIDECAR_JOURNAL_PATH", path);
        }
        let output = cli.run();
        assert!(!output.status.success(), "{output:?}");
        output.stderr
    };
    let stderr = calls(None, None, true);
    assert!(
        stderr.contains("no journal at /nonexistent/from-file.sqlite3 (from ")
            && stderr.contains("calls-journal.yaml:2)"),
        "{stderr}"
    );
    let stderr = calls(None, Some("/nonexistent/from-env.sqlite3"), true);
    assert!(
        stderr.contains(
            "no journal at /nonexistent/from-env.sqlite3 (from LINEPAY_SIDECAR_JOURNAL_PATH)"
        ),
        "{stderr}"
    );
    let stderr = calls(
        Some("/nonexistent/from-flag.sqlite3"),
        Some("/nonexistent/from-env.sqlite3"),
        true,
    );
    assert!(
        stderr.contains("no journal at /nonexistent/from-flag.sqlite3 (from --journal)"),
        "{stderr}"
    );
    // No source names it: the default, which may exist where the tests run.
    let output = Cli::new().arg("calls").run();
    assert!(
        output.status.success() || output.stderr.contains("(the default; give --journal"),
        "{output:?}"
    );
}

/// The journal path the demo announced (`The call journal is PATH (...)`), and the words
/// in parentheses after it.
fn demo_journal(stderr: &str) -> (PathBuf, String) {
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix("The call journal is "))
        .unwrap_or_else(|| panic!("the demo does not say where its journal is:\n{stderr}"));
    let (path, fate) = line
        .split_once(" (")
        .unwrap_or_else(|| panic!("no (fate) after the journal path: {line}"));
    (PathBuf::from(path), fate.trim_end_matches("):").to_owned())
}

/// The demo names its journal, its emulator and the emulator's controls; a journal of
/// its own choosing goes when it stops, unless `--keep-journal`; one named by
/// `--journal-path` or `LINEPAY_SIDECAR_JOURNAL_PATH` is kept.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_says_where_its_journal_is_and_keeps_it_when_asked() {
    let dir = std::env::temp_dir().join(format!("linepay-demo-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let named = dir.join("named.sqlite3");
    let named = named.to_string_lossy().into_owned();
    let cases: [(&str, Vec<&str>, Option<&str>, bool); 4] = [
        ("temporary", vec![], None, false),
        (
            "temporary, --keep-journal",
            vec!["--keep-journal"],
            None,
            true,
        ),
        ("--journal-path", vec!["--journal-path", &named], None, true),
        ("LINEPAY_SIDECAR_JOURNAL_PATH", vec![], Some(&named), true),
    ];
    for (case, args, env, kept) in cases {
        let _ = std::fs::remove_file(&named);
        let mut demo = Sidecar::demo().env("TMPDIR", &dir);
        for arg in args {
            demo = demo.arg(arg);
        }
        if let Some(path) = env {
            demo = demo.env("LINEPAY_SIDECAR_JOURNAL_PATH", path);
        }
        let mut running = demo.start().await;
        // Printed before the port is announced, but read by another thread.
        let stderr = eventually("the demo's walkthrough on stderr", || {
            let stderr = running.stderr_so_far();
            async move {
                if stderr.contains("Stop with Ctrl-C.") {
                    Ok(stderr)
                } else {
                    Err("not yet")
                }
            }
        })
        .await;
        let (journal, fate) = demo_journal(&stderr);
        assert!(
            journal.starts_with(&dir),
            "{case}: {journal:?} is not under {dir:?}"
        );
        assert!(
            journal.exists(),
            "{case}: no journal at {journal:?} while the demo runs"
        );
        assert_eq!(fate.starts_with("kept"), kept, "{case}: {fate}");
        assert!(
            stderr.contains("/__emulator/faults")
                && stderr.contains("The emulator (LINE Pay's stand-in) is http://127.0.0.1:"),
            "{case}: the demo does not show its emulator's controls:\n{stderr}"
        );
        running.signal("TERM");
        let status = running
            .wait_exit(std::time::Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{case}: the demo did not stop on SIGTERM"));
        assert!(status.success(), "{case}: {status:?}");
        assert_eq!(journal.exists(), kept, "{case}: {journal:?}");
        remove_journal_sidecars(&journal);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
