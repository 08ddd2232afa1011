//! The merchant clients in examples/ (PHP, Python, Node), each run by its real
//! interpreter against the real sidecar binary in front of the emulator: request →
//! confirm → details → refund must each answer `0000`, and the refund repeated with
//! its `Idempotency-Key` must be replayed by the sidecar without reaching the emulator.
//!
//! The emulator refuses a wrong signature (1106) and an unknown transaction (1150), so
//! a pass proves that the client needed no secret and no signing code, and that it kept
//! all 19 digits of the transaction id (a rounded id is unknown to the emulator).
//!
//! These are the commands of examples/README.md's and docs/integrating.md's shell blocks
//! (run against a sidecar of their own instead of `cargo run -- demo &`), and the output
//! examples/README.md shows is compared with what each client prints.
//!
//! A missing interpreter fails the test under CI (`CI` set: .ci/run installs them) and
//! is skipped, loudly, elsewhere, so `cargo test` works on a machine without PHP.

use crate::util::{child_exit, start_emulator, Sidecar, CHANNEL_ID, CHANNEL_SECRET};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The longest one example may run before it is killed and the test fails.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(30);

const STEPS: [&str; 4] = ["request", "confirm", "details", "refund"];

/// How to run one example, and how to tell whether this machine can.
pub(crate) struct Example {
    program: &'static str,
    script: &'static str,
    /// Arguments that make `program` exit 0 only when it can run the example.
    probe: &'static [&'static str],
    /// What to install when the probe fails.
    install: &'static str,
}

pub(crate) const PHP: Example = Example {
    program: "php",
    script: "examples/php/round_trip.php",
    probe: &["-r", "exit(extension_loaded('curl') ? 0 : 1);"],
    install: "apt-get install php-cli php-curl",
};

const PYTHON: Example = Example {
    program: "python3",
    script: "examples/python/round_trip.py",
    probe: &[
        "-c",
        "import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)",
    ],
    install: "apt-get install python3",
};

const NODE: Example = Example {
    program: "node",
    script: "examples/node/round_trip.mjs",
    probe: &["-e", "process.exit(typeof fetch === 'function' ? 0 : 1)"],
    install: "Node.js 18 or newer (apt-get install nodejs)",
};

fn script_path(example: &Example) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(example.script)
}

/// Whether the example can run here; panics under CI when it cannot.
pub(crate) fn runnable(example: &Example) -> bool {
    let works = Command::new(example.program)
        .args(example.probe)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|value| !value.is_empty()) {
        panic!(
            "{} cannot run {} under CI: .ci/run must install it ({})",
            example.program, example.script, example.install
        );
    }
    // Straight to stderr, not eprintln!: the test harness captures eprintln! output of
    // passing tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {}: `{}` is missing or too old on this machine ({}). CI runs it. ***\n",
        example.script,
        example.program,
        example.install
    );
    false
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the example to completion with only `LINEPAY_SIDECAR_URL` among the
/// `LINEPAY_*` variables; kills it after [`EXAMPLE_LIMIT`].
fn run(example: &Example, sidecar_url: &str) -> Run {
    let mut command = Command::new(example.program);
    command
        .arg(script_path(example))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LINEPAY_") {
            command.env_remove(key);
        }
    }
    command.env("LINEPAY_SIDECAR_URL", sidecar_url);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", example.program));
    let capture = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = capture(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = capture(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );

    let status = child_exit(&mut child, EXAMPLE_LIMIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let run = Run {
        success: status.is_some_and(|status| status.success()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "{} did not finish within {EXAMPLE_LIMIT:?}:\n{}\n{}",
        example.script,
        run.stdout,
        run.stderr
    );
    run
}

/// Starts the emulator and the sidecar, runs the example, checks all four steps.
async fn round_trip(example: &'static Example) {
    if !runnable(example) {
        return;
    }
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;
    let url = sidecar.url();
    // The example blocks; the emulator keeps serving on the runtime's other threads.
    let run = tokio::task::spawn_blocking(move || run(example, &url))
        .await
        .unwrap_or_else(|error| panic!("the example's runner panicked: {error}"));

    let report = format!(
        "{}:\n--- stdout ---\n{}--- stderr ---\n{}",
        example.script, run.stdout, run.stderr
    );
    assert!(run.success, "the example failed: {report}");
    let step_lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| {
            STEPS
                .iter()
                .any(|step| line.starts_with(&format!("{step}:")))
        })
        .collect();
    let expected: Vec<String> = STEPS.iter().map(|step| format!("{step}: 0000")).collect();
    assert_eq!(
        step_lines
            .iter()
            .map(|line| line
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "))
            .collect::<Vec<_>>(),
        expected,
        "each step, in order, must answer 0000: {report}"
    );
    assert!(
        run.stdout.contains("replayed from the sidecar's journal"),
        "the repeated refund must be replayed: {report}"
    );
    assert_eq!(
        emulator.calls(),
        4,
        "the four calls (and not the replayed refund) must have reached the emulator: {report}"
    );
    assert_eq!(
        masked(&run.stdout),
        masked(&readme_sample_output()),
        "examples/README.md's sample output is not what the client prints: {report}"
    );
}

/// The sample output examples/README.md shows: its code block that starts `request:`.
fn readme_sample_output() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let mut blocks = text.split("```").skip(1).step_by(2);
    blocks
        .find_map(|block| {
            let body = block.split_once('\n').map_or("", |(_, body)| body);
            body.starts_with("request:").then(|| body.to_owned())
        })
        .unwrap_or_else(|| panic!("examples/README.md shows no sample output"))
}

/// Output lines with what changes from run to run masked: numbers, and a URL's query.
fn masked(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|line| {
            let line = line
                .split_once('?')
                .map_or(line.to_owned(), |(head, _)| format!("{head}?…"));
            // The emulator's payment page: its token is random per payment.
            let line = match line.split_once("/__emulator/pay/") {
                Some((head, _)) => format!("{head}/__emulator/pay/..."),
                None => line,
            };
            let mut out = String::new();
            for c in line.chars() {
                if c.is_ascii_digit() {
                    if !out.ends_with('#') {
                        out.push('#');
                    }
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn php_example_round_trip_answers_0000_at_every_step() {
    round_trip(&PHP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_example_round_trip_answers_0000_at_every_step() {
    round_trip(&PYTHON).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_example_round_trip_answers_0000_at_every_step() {
    round_trip(&NODE).await;
}

#[test]
fn examples_hold_no_secret_and_no_signing_code() {
    for example in [&PHP, &PYTHON, &NODE] {
        let path = script_path(example);
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
            .to_ascii_lowercase();
        for forbidden in [
            "hmac",
            "sha256",
            "x-line-",
            "channelsecret",
            "channel_secret",
        ] {
            assert!(
                !source.contains(forbidden),
                "{} mentions `{forbidden}`: the sidecar signs, the app must not",
                example.script
            );
        }
        assert!(
            source.contains("linepay_sidecar_url"),
            "{} must take the sidecar's URL from LINEPAY_SIDECAR_URL",
            example.script
        );
    }
}
