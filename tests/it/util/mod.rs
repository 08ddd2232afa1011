//! The integration harness: builders that start real things on loopback sockets, so each
//! test reads as a few lines of behaviour.
//!
//! - [`Sidecar`]: the real `linepay-sidecar` binary, port learned from its announce line,
//!   killed on drop.
//! - [`Upstream`]: a recording HTTP upstream (every request kept byte for byte, with the
//!   peer address of the connection it came on), optionally slow; [`RawUpstream`]
//!   answers fixed bytes (garbage, a cut-off response); [`EchoServer`] answers with the
//!   caller's address, as a public-IP echo service does.
//! - [`ConnectProxy`]: an HTTP CONNECT forward proxy that records every tunnel.
//! - [`start_emulator`] / [`EmulatorSetup`]: the crate's LINE Pay emulator in this
//!   process, plain or TLS, on a chosen loopback address, with an IP whitelist;
//!   [`EmulatorProcess`]: the binary's `emulator` subcommand. The only file that touches
//!   the emulator's API.
//! - [`Call`] / [`send_raw`]: an HTTP/1.1 client for normal calls and for raw bytes that
//!   a URI type would normalise or refuse.
//! - [`TestPki`]: a private CA and a `localhost` leaf certificate (rcgen).
//! - [`Browser`]: headless chromium over WebDriver (chromedriver), for the payment page.
//! - [`channels`]: a config with a `channels:` map, a secret file per channel, and the
//!   emulator serving the same channels (issue 19).
//! - [`Cli`]: runs a subcommand of the binary to completion, bounded in time.
//! - [`RedisServer`]: Debian's redis-server on a free loopback port, stopped, restarted
//!   on the same port, removed on drop.
//! - [`naive_signature`]: the upstream's own signature check, written the plain way.
//! - [`eventually`]: the one way to wait for background work, by polling what it changes.
//!
//! Every wait is bounded: a helper that times out panics with what it saw.

#![allow(dead_code)] // Not every test file uses every helper.

mod browser;
pub mod channels;
mod cli;
mod client;
mod connect_proxy;
mod emulator;
pub mod ledger;
mod redis_server;
mod sidecar;
mod tls;
mod upstream;
mod wait;

pub use browser::{artefact_path, Browser, CHROMIUM};
pub use cli::{Cli, CliOutput};
pub use client::{send_raw, send_raw_in_two, Call, Reply};
pub use connect_proxy::{ConnectProxy, Tunnelled};
pub use emulator::{start_emulator, EmulatorProcess, EmulatorSetup, RunningEmulator};
pub use redis_server::RedisServer;
pub use sidecar::{metric, remove_journal_sidecars, RunningSidecar, Sidecar};
pub use tls::TestPki;
pub use upstream::{closed_port_url, EchoServer, RawUpstream, Recorded, Upstream};
pub use wait::{child_exit, eventually, eventually_within};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The channel every test sidecar signs for.
pub const CHANNEL_ID: &str = "1657002468";
/// Distinctive, so that finding it in any output is never a coincidence.
pub const CHANNEL_SECRET: &str = "it-secret-7c1e9a53b2d04f68a1c3e5f7";

/// The longest any single wait in the harness may take before the test fails.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// The real `linepay-sidecar` binary, with stdin closed and none of the machine's
/// variables that could change what it does (`LINEPAY_*`, `RUST_LOG`, and
/// `NOTIFY_SOCKET`, so a test run under systemd never notifies its manager): each test
/// sets what it needs explicitly.
pub fn binary_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_linepay-sidecar"));
    command.stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LINEPAY_")
            || key == "RUST_LOG"
            || key == "NOTIFY_SOCKET"
        {
            command.env_remove(key);
        }
    }
    command
}

/// The v3 signature the way an upstream would check it, sharing no code with the
/// sidecar: one concatenated message, one HMAC, Base64. The secret is bytes, so any
/// key (binary ones included) can be checked.
pub fn naive_signature(
    secret: impl AsRef<[u8]>,
    path: &str,
    payload: &[u8],
    nonce: &str,
) -> String {
    let secret = secret.as_ref();
    let mut message = Vec::new();
    message.extend_from_slice(secret);
    message.extend_from_slice(path.as_bytes());
    message.extend_from_slice(payload);
    message.extend_from_slice(nonce.as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&message);
    BASE64.encode(mac.finalize().into_bytes())
}

/// The raw text of a JSON number member (`"key": 1234...`) as it appears on the wire,
/// without parsing it (a 19-digit transaction id must never pass through an f64).
pub fn raw_json_number(text: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let start = text.find(&quoted)? + quoted.len();
    let rest = text[start..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// A file under the system temp directory, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn with_contents(name: &str, contents: &[u8]) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "linepay-sidecar-it-{}-{unique}-{name}",
            std::process::id()
        ));
        if let Err(error) = std::fs::write(&path, contents) {
            panic!("cannot write {}: {error}", path.display());
        }
        TempFile { path }
    }

    pub fn path_str(&self) -> &str {
        self.path
            .to_str()
            .unwrap_or_else(|| panic!("temp path {} is not UTF-8", self.path.display()))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn naive_signature_matches_the_reference_vector() {
    // The reference vector of linepay-api.md, so the verifier itself is known good.
    assert_eq!(
        naive_signature(
            "a917ab6a2367b536f8e5a6e2977e06f4",
            "/v3/payments/request",
            br#"{"amount":100,"currency":"TWD"}"#,
            "6f1ba1c9-8f3f-4b9a-9b3e-0d2c1a6b5e77",
        ),
        "07cnOfuso3B3HFlVXKMM4vlF0/yprYM8TmAKhG7ZROM="
    );
}

#[test]
fn raw_json_number_keeps_every_digit() {
    let text = r#"{"info":{"transactionId" : 2025061512345678901,"x":1}}"#;
    assert_eq!(
        raw_json_number(text, "transactionId").as_deref(),
        Some("2025061512345678901")
    );
    assert_eq!(raw_json_number(text, "missing"), None);
}
