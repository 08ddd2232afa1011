//! The `linepay-emulator` binary, started as a user would: it announces its address,
//! takes the channel from the environment (or the demo channel), and checks each
//! signature with that secret. Calls are signed here the plain LINE Pay way.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHANNEL_ID: &str = "2000000001";
const CHANNEL_SECRET: &str = "a917ab6a2367b536f8e5a6e2977e06f4";
/// An unknown transaction: a call that passes the signature check is answered 1150.
const CHECK_PATH: &str = "/v3/payments/requests/2021121600698709710/check";
const WAIT_LIMIT: Duration = Duration::from_secs(20);

fn emulator_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_linepay-emulator"));
    command
        .env_remove("LINEPAY_CHANNEL_ID")
        .env_remove("LINEPAY_CHANNEL_SECRET");
    command
}

/// A running `linepay-emulator`; killed on drop.
struct Running {
    addr: SocketAddr,
    child: Child,
    /// Its stderr (the log) until EOF, when started with [`Running::start_logged`].
    log: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(command: Command) -> Running {
        Running::spawn(command, false)
    }

    /// Started with its log kept: read it with [`Running::stop_and_read_log`].
    fn start_logged(command: Command) -> Running {
        Running::spawn(command, true)
    }

    /// Kills the emulator and returns everything it logged.
    fn stop_and_read_log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    }

    fn spawn(mut command: Command, logged: bool) -> Running {
        command
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(if logged {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start linepay-emulator: {error}"));
        let log = child.stderr.take().map(|mut stderr| {
            // Ends at EOF: the kill in stop_and_read_log (or drop) guarantees it.
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            })
        });
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            panic!("the emulator's stdout is not captured");
        };
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
        };
        loop {
            let line = received
                .recv_timeout(WAIT_LIMIT)
                .unwrap_or_else(|error| panic!("the emulator did not announce its port: {error}"));
            if let Some(addr) = line
                .strip_prefix(linepay_emulator::cli::ANNOUNCE)
                .and_then(|addr| addr.trim().parse().ok())
            {
                running.addr = addr;
                return running;
            }
        }
    }

    /// `GET CHECK_PATH` signed with `channel_id` and `secret`: the answer's returnCode.
    fn signed_check(&self, channel_id: &str, secret: &str) -> String {
        let body = self.signed_check_answer(channel_id, secret);
        body["returnCode"]
            .as_str()
            .unwrap_or_else(|| panic!("no returnCode: {body}"))
            .to_owned()
    }

    /// `GET CHECK_PATH` signed with `channel_id` and `secret`: the JSON answer.
    fn signed_check_answer(&self, channel_id: &str, secret: &str) -> serde_json::Value {
        let nonce = "3a4ea6a1-3bd4-4c9a-9a06-0d3c2c8e0f51";
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|error| panic!("HMAC key: {error}"));
        // GET without a query: the payload is empty.
        mac.update(format!("{secret}{CHECK_PATH}{nonce}").as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        let request = format!(
            "GET {CHECK_PATH} HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\
             X-LINE-ChannelId: {channel_id}\r\nX-LINE-Authorization-Nonce: {nonce}\r\n\
             X-LINE-Authorization: {signature}\r\n\r\n"
        );
        let mut stream = TcpStream::connect(self.addr)
            .unwrap_or_else(|error| panic!("connect to {}: {error}", self.addr));
        let _ = stream.set_read_timeout(Some(WAIT_LIMIT));
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|error| panic!("write: {error}"));
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|error| panic!("read: {error}"));
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head: {response}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap_or_else(|error| panic!("{error}: {body}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn checks_signatures_with_the_channel_from_the_environment() {
    let mut command = emulator_command();
    command
        .env("LINEPAY_CHANNEL_ID", CHANNEL_ID)
        .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET);
    let emulator = Running::start(command);

    assert_eq!(emulator.signed_check(CHANNEL_ID, CHANNEL_SECRET), "1150");
    assert_eq!(
        emulator.signed_check(CHANNEL_ID, linepay_emulator::DEMO_CHANNEL_SECRET),
        "1106"
    );
}

#[test]
fn without_a_secret_in_the_environment_it_takes_the_demo_secret() {
    let mut command = emulator_command();
    command.args(["--channel-id", CHANNEL_ID]);
    let emulator = Running::start(command);

    assert_eq!(
        emulator.signed_check(CHANNEL_ID, linepay_emulator::DEMO_CHANNEL_SECRET),
        "1150"
    );
    assert_eq!(emulator.signed_check(CHANNEL_ID, CHANNEL_SECRET), "1106");
}

#[test]
fn without_a_channel_id_it_takes_the_demo_channel() {
    let emulator = Running::start(emulator_command());

    let demo_secret = linepay_emulator::DEMO_CHANNEL_SECRET;
    let demo_channel = linepay_emulator::DEMO_CHANNEL_ID;
    assert_eq!(emulator.signed_check(demo_channel, demo_secret), "1150");
    assert_eq!(emulator.signed_check(CHANNEL_ID, demo_secret), "1106");
}

#[test]
fn an_allow_source_list_refuses_other_sources() {
    let mut command = emulator_command();
    command.args(["--allow-source", "127.0.0.2/32"]);
    let emulator = Running::start(command);

    // A valid call from 127.0.0.1, refused for its source alone.
    let answer = emulator.signed_check_answer(
        linepay_emulator::DEMO_CHANNEL_ID,
        linepay_emulator::DEMO_CHANNEL_SECRET,
    );
    assert_eq!(answer["returnCode"], "1106", "{answer}");
    assert!(
        answer["returnMessage"]
            .as_str()
            .is_some_and(|message| message.contains("[127.0.0.1] is not allowed")),
        "{answer}"
    );
}

#[test]
fn an_ambiguous_allow_source_is_refused_at_start() {
    let Output { status, stderr, .. } = emulator_command()
        .args(["--listen", "127.0.0.1:0", "--allow-source", "127.0.0.2/24"])
        .output()
        .unwrap_or_else(|error| panic!("cannot run linepay-emulator: {error}"));
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("host bits"), "{stderr}");
    assert!(stderr.contains("127.0.0.0/24"), "{stderr}");
}

impl Running {
    /// Sends raw HTTP/1.1 (with `Connection: close`) and returns the head and body.
    fn exchange(&self, request: &str) -> (String, serde_json::Value) {
        let mut stream = TcpStream::connect(self.addr)
            .unwrap_or_else(|error| panic!("connect to {}: {error}", self.addr));
        let _ = stream.set_read_timeout(Some(WAIT_LIMIT));
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|error| panic!("write: {error}"));
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|error| panic!("read: {error}"));
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head: {response}"));
        let body = serde_json::from_str(body).unwrap_or_else(|error| panic!("{error}: {body}"));
        (head.to_owned(), body)
    }

    /// A v2 offline payment with the demo channel's clear credentials.
    fn v2_pay(&self, order_id: &str, currency: &str, device: bool) -> String {
        let body = format!(
            r#"{{"productName":"tea","amount":100,"currency":"{currency}","orderId":"{order_id}","oneTimeKey":"{}"}}"#,
            linepay_emulator::PAYS_FROM_BALANCE
        );
        let device = if device {
            "X-LINE-MerchantDeviceType: POS\r\nX-LINE-MerchantDeviceProfileId: till-1\r\n"
        } else {
            ""
        };
        let (_, answer) = self.exchange(&format!(
            "POST /v2/payments/oneTimeKeys/pay HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             X-LINE-ChannelId: {}\r\nX-LINE-ChannelSecret: {}\r\n{device}\r\n{body}",
            body.len(),
            linepay_emulator::DEMO_CHANNEL_ID,
            linepay_emulator::DEMO_CHANNEL_SECRET,
        ));
        answer["returnCode"].as_str().unwrap_or("<none>").to_owned()
    }
}

#[test]
fn currency_device_header_and_clock_controls_work_from_the_command_line() {
    let mut command = emulator_command();
    command.args(["--currency", "JPY", "--require-device-headers"]);
    let emulator = Running::start(command);

    assert_eq!(emulator.v2_pay("cli-1", "JPY", false), "1106");
    assert_eq!(emulator.v2_pay("cli-1", "JPY", true), "0000");
    assert_eq!(emulator.v2_pay("cli-2", "TWD", true), "1178");

    let body = r#"{"advance":"21m"}"#;
    let (head, clock) = emulator.exchange(&format!(
        "POST /__emulator/clock HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(clock["offset"], "21m", "{clock}");
}

#[test]
fn an_unknown_currency_is_refused_at_start() {
    let Output { status, stderr, .. } = emulator_command()
        .args(["--listen", "127.0.0.1:0", "--currency", "EUR"])
        .output()
        .unwrap_or_else(|error| panic!("cannot run linepay-emulator: {error}"));
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("TWD, JPY, THB or USD"), "{stderr}");
}

/// `POST path` with a JSON body, no credentials: (status line and head, answer).
fn control_post(emulator: &Running, path: &str, body: &str) -> (String, serde_json::Value) {
    emulator.exchange(&format!(
        "POST {path} HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

#[test]
fn the_control_api_stays_open_to_every_source_under_an_allow_source_list() {
    let mut command = emulator_command();
    command.args(["--allow-source", "127.0.0.2/32"]);
    let emulator = Running::start(command);

    // The whitelist is LINE Pay's, for its API: a call from 127.0.0.1 is refused...
    let answer = emulator.signed_check_answer(
        linepay_emulator::DEMO_CHANNEL_ID,
        linepay_emulator::DEMO_CHANNEL_SECRET,
    );
    assert_eq!(answer["returnCode"], "1106", "{answer}");
    // ...but the control API, which the same test needs, is not behind it: the fault
    // is really registered (listed back), and the clock really moves.
    let (head, faults) = control_post(
        &emulator,
        "/__emulator/faults",
        r#"{"route":"check","kind":"returnCode","returnCode":"9000"}"#,
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(faults["faults"][0]["route"], "check", "{faults}");
    let (head, listed) = emulator
        .exchange("GET /__emulator/faults HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        listed["faults"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let (head, clock) = control_post(&emulator, "/__emulator/clock", r#"{"advance":"1m"}"#);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(clock["offset"], "1m", "{clock}");
}

#[test]
fn log_level_sets_what_is_logged_and_linepay_emulator_log_wins() {
    // An unknown path is logged at debug, a control call at info.
    let probe = |emulator: &Running| {
        let _ = emulator
            .exchange("GET /v3/not-an-api HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n");
        let _ = control_post(emulator, "/__emulator/clock", r#"{"advance":"1s"}"#);
    };
    let run = |args: &[&str], filter: Option<&str>| {
        let mut command = emulator_command();
        command.env_remove("LINEPAY_EMULATOR_LOG").args(args);
        if let Some(filter) = filter {
            command.env("LINEPAY_EMULATOR_LOG", filter);
        }
        let emulator = Running::start_logged(command);
        probe(&emulator);
        emulator.stop_and_read_log()
    };
    let debug_line = "not a LINE Pay API path";
    let info_line = "emulator: control call";

    let default = run(&[], None);
    assert!(default.contains(info_line), "{default}");
    assert!(!default.contains(debug_line), "{default}");

    let warn = run(&["--log-level", "warn"], None);
    assert!(!warn.contains(info_line), "{warn}");

    let debug = run(&["--log-level", "debug"], None);
    assert!(debug.contains(debug_line), "{debug}");

    let filtered = run(&["--log-level", "warn"], Some("debug"));
    assert!(filtered.contains(debug_line), "{filtered}");
}

/// The second channel of the multi-channel tests, its secret in a file.
const POS_ID: &str = "2000000002";
const POS_SECRET: &str = "pos-secret-d4e8a1b7c6f2903e";

/// A file under the temp directory, removed on drop.
struct SecretFile(std::path::PathBuf);

impl SecretFile {
    fn new(name: &str, contents: &str) -> SecretFile {
        let path = std::env::temp_dir().join(format!(
            "linepay-emulator-cli-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        SecretFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Running {
    /// A v4 one-time-key payment of 100 in `currency`, signed with `channel_id` and
    /// `secret`, with or without device headers: the answer's returnCode.
    fn signed_pay(
        &self,
        (channel_id, secret): (&str, &str),
        order_id: &str,
        currency: &str,
        device: bool,
    ) -> String {
        const PATH: &str = "/v4/payments/oneTimeKeys/pay";
        let body = format!(
            r#"{{"productName":"tea","amount":100,"currency":"{currency}","orderId":"{order_id}","oneTimeKey":"{}"}}"#,
            linepay_emulator::PAYS_FROM_BALANCE
        );
        let nonce = format!("nonce-{order_id}");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|error| panic!("HMAC key: {error}"));
        mac.update(format!("{secret}{PATH}{body}{nonce}").as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        let device = if device {
            "X-LINE-MerchantDeviceType: POS\r\nX-LINE-MerchantDeviceProfileId: till-1\r\n"
        } else {
            ""
        };
        let (_, answer) = self.exchange(&format!(
            "POST {PATH} HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             X-LINE-ChannelId: {channel_id}\r\nX-LINE-Authorization-Nonce: {nonce}\r\n\
             X-LINE-Authorization: {signature}\r\n{device}\r\n{body}",
            body.len()
        ));
        answer["returnCode"].as_str().unwrap_or("<none>").to_owned()
    }
}

#[test]
fn a_second_channel_from_the_command_line_has_its_own_secret_currency_and_devices() {
    // A trailing newline, as `echo` leaves it, is not part of the secret.
    let secret = SecretFile::new("pos-secret", &format!("{POS_SECRET}\n"));
    let mut command = emulator_command();
    command
        .env("LINEPAY_CHANNEL_ID", CHANNEL_ID)
        .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
        .arg("--channel")
        .arg(format!(
            "id={POS_ID},secret-file={},currency=THB,require-device-headers",
            secret.path()
        ));
    let emulator = Running::start_logged(command);

    let web = (CHANNEL_ID, CHANNEL_SECRET);
    let pos = (POS_ID, POS_SECRET);
    assert_eq!(emulator.signed_check(web.0, web.1), "1150");
    assert_eq!(emulator.signed_check(pos.0, pos.1), "1150");
    // One channel's secret under the other's id.
    assert_eq!(emulator.signed_check(POS_ID, CHANNEL_SECRET), "1106");
    assert_eq!(emulator.signed_check(CHANNEL_ID, POS_SECRET), "1106");

    // Each channel's own currency, and device headers only where asked for.
    assert_eq!(emulator.signed_pay(pos, "pos-1", "THB", true), "0000");
    assert_eq!(emulator.signed_pay(pos, "pos-2", "TWD", true), "1178");
    assert_eq!(emulator.signed_pay(pos, "pos-3", "THB", false), "1106");
    assert_eq!(emulator.signed_pay(web, "web-1", "THB", false), "1178");

    // The control API lists the channels, never a secret...
    let (head, listed) = emulator.exchange(
        "GET /__emulator/channels HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        listed,
        serde_json::json!({"channels": [
            {"channelId": CHANNEL_ID, "currency": "TWD", "requireDeviceHeaders": false},
            {"channelId": POS_ID, "currency": "THB", "requireDeviceHeaders": true},
        ]})
    );
    // ...and rotates one channel's secret, as a merchant does at LINE Pay.
    const ROTATED: &str = "pos-secret-rotated-71c0e5a9";
    let (head, answer) = control_post(
        &emulator,
        &format!("/__emulator/channels/{POS_ID}/secret"),
        &format!(r#"{{"secret":"{ROTATED}"}}"#),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!answer.to_string().contains(ROTATED), "{answer}");
    assert_eq!(emulator.signed_check(POS_ID, POS_SECRET), "1106");
    assert_eq!(emulator.signed_check(POS_ID, ROTATED), "1150");
    assert_eq!(emulator.signed_check(web.0, web.1), "1150", "web untouched");
    let (head, refused) = control_post(
        &emulator,
        "/__emulator/channels/3000000003/secret",
        r#"{"secret":"x"}"#,
    );
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("3000000003")),
        "{refused}"
    );
    let (head, _) = control_post(
        &emulator,
        &format!("/__emulator/channels/{POS_ID}/secret"),
        r#"{"secret":""}"#,
    );
    assert!(head.starts_with("HTTP/1.1 400"), "an empty secret: {head}");

    let log = emulator.stop_and_read_log();
    assert!(
        log.contains("serving channel") && log.contains(POS_ID) && log.contains("THB"),
        "{log}"
    );
    for secret in [POS_SECRET, ROTATED] {
        assert!(!log.contains(secret), "the log shows a secret: {log}");
    }
}

/// Runs the emulator with `args` and expects it to refuse to start: its stderr.
fn refused_at_start(args: &[&str]) -> String {
    let Output { status, stderr, .. } = emulator_command()
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run linepay-emulator: {error}"));
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(!status.success(), "started with {args:?}: {stderr}");
    stderr
}

#[test]
fn a_channel_that_cannot_be_served_is_refused_at_start() {
    let secret = SecretFile::new("refused-secret", POS_SECRET);
    let empty = SecretFile::new("empty-secret", "\n");
    let missing = format!("{}-missing", secret.path());

    let twice = format!(
        "id={},secret-file={}",
        linepay_emulator::DEMO_CHANNEL_ID,
        secret.path()
    );
    let stderr = refused_at_start(&["--channel", &twice]);
    assert!(stderr.contains("given to two channels"), "{stderr}");

    let stderr = refused_at_start(&["--channel", &format!("id={POS_ID},secret-file={missing}")]);
    assert!(stderr.contains("cannot read its secret"), "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");

    let stderr = refused_at_start(&[
        "--channel",
        &format!("id={POS_ID},secret-file={}", empty.path()),
    ]);
    assert!(stderr.contains("empty"), "{stderr}");

    let stderr = refused_at_start(&["--channel", &format!("id={POS_ID}")]);
    assert!(stderr.contains("id=ID and secret-file=PATH"), "{stderr}");

    let stderr = refused_at_start(&["--channel", &format!("id={POS_ID},secret={POS_SECRET}")]);
    assert!(
        stderr.contains("`secret`") && stderr.contains("secret-file=PATH"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(POS_SECRET),
        "a secret typed on the command line is echoed: {stderr}"
    );

    let stderr = refused_at_start(&[
        "--channel",
        &format!("id={POS_ID},secret-file={},currency=EUR", secret.path()),
    ]);
    assert!(stderr.contains("TWD, JPY, THB or USD"), "{stderr}");
}
