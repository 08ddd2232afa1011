//! The LINE Pay emulator (crate `linepay-emulator`) for tests: served in the test process on a loopback
//! port ([`start_emulator`], [`EmulatorSetup`]), or run as the binary's `emulator`
//! subcommand ([`EmulatorProcess`]).
//!
//! Every use of the emulator's API in the tests is in this file, so that where the
//! emulator lives is written once.

use super::{binary_command, CHANNEL_ID, CHANNEL_SECRET, WAIT_LIMIT};
use linepay_emulator::{ChannelConfig, Emulator, EmulatorConfig, Secret};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running emulator; stops when dropped.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    emulator: Emulator,
    task: JoinHandle<std::io::Result<()>>,
    tls: bool,
}

/// Starts an emulator on 127.0.0.1 that accepts `channel_id` and `channel_secret`, over
/// TLS when a server config is given.
pub async fn start_emulator(
    channel_id: &str,
    channel_secret: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> RunningEmulator {
    let mut setup = EmulatorSetup::new(channel_id, channel_secret);
    setup.tls = tls;
    setup.start().await
}

/// Builder for an emulator with more than [`start_emulator`]'s choices:
/// `EmulatorSetup::new(id, secret).bind("127.0.0.3").allow_sources(&["127.0.0.2/32"]).start()`.
pub struct EmulatorSetup {
    channel_id: String,
    channel_secret: String,
    bind: IpAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    allow_sources: Vec<String>,
    wait_for_buyer: bool,
    /// Channels served besides the first (`channel_id`, `channel_secret`, TWD).
    more_channels: Vec<ChannelConfig>,
    /// Channel ids whose offline calls must carry device headers.
    device_headers_required: Vec<String>,
}

impl EmulatorSetup {
    /// Plain HTTP on 127.0.0.1, accepting calls from every source.
    pub fn new(channel_id: &str, channel_secret: &str) -> EmulatorSetup {
        EmulatorSetup {
            channel_id: channel_id.to_owned(),
            channel_secret: channel_secret.to_owned(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tls: None,
            allow_sources: Vec::new(),
            wait_for_buyer: false,
            more_channels: Vec::new(),
            device_headers_required: Vec::new(),
        }
    }

    /// Serves another channel at the same time, with its own id, secret and one
    /// currency (`TWD`, `THB`...): a call signed with one channel's secret under the
    /// other's id answers 1106, and neither sees the other's payments (1150).
    pub fn channel(
        mut self,
        channel_id: &str,
        channel_secret: &str,
        currency: &str,
    ) -> EmulatorSetup {
        self.more_channels.push(ChannelConfig {
            currency: currency
                .parse()
                .unwrap_or_else(|_| panic!("the emulator takes no {currency}")),
            ..ChannelConfig::new(channel_id, Secret::new(channel_secret))
        });
        self
    }

    /// Offline calls of the channel `channel_id` answer 1106 without
    /// `X-LINE-MerchantDeviceType` and `X-LINE-MerchantDeviceProfileId`.
    pub fn device_headers_required(mut self, channel_id: &str) -> EmulatorSetup {
        self.device_headers_required.push(channel_id.to_owned());
        self
    }

    /// Every payment waits for the buyer on the emulator's payment page.
    pub fn wait_for_buyer(mut self) -> EmulatorSetup {
        self.wait_for_buyer = true;
        self
    }

    /// Listens on this loopback address (127.0.0.0/8 is all local on Linux) instead.
    pub fn bind(mut self, address: &str) -> EmulatorSetup {
        self.bind = address
            .parse()
            .unwrap_or_else(|error| panic!("{address}: {error}"));
        self
    }

    /// Serves TLS with this server config.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> EmulatorSetup {
        self.tls = Some(config);
        self
    }

    /// The merchant center's IP whitelist: calls from any other source are refused as
    /// LINE Pay refuses them.
    pub fn allow_sources(mut self, ranges: &[&str]) -> EmulatorSetup {
        self.allow_sources = ranges.iter().map(|range| (*range).to_owned()).collect();
        self
    }

    pub async fn start(self) -> RunningEmulator {
        let listener = TcpListener::bind((self.bind, 0))
            .await
            .unwrap_or_else(|error| panic!("cannot bind the emulator on {}: {error}", self.bind));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("emulator has no address: {error}"));
        let requires_devices = |id: &str| self.device_headers_required.iter().any(|d| d == id);
        let more_channels = self
            .more_channels
            .iter()
            .map(|channel| ChannelConfig {
                require_device_headers: requires_devices(&channel.channel_id),
                ..channel.clone()
            })
            .collect();
        let emulator = Emulator::new(EmulatorConfig {
            allow_sources: self
                .allow_sources
                .iter()
                .map(|range| {
                    range
                        .parse()
                        .unwrap_or_else(|error| panic!("{range}: {error}"))
                })
                .collect(),
            wait_for_buyer: self.wait_for_buyer,
            require_device_headers: requires_devices(&self.channel_id),
            more_channels,
            ..EmulatorConfig::new(
                self.channel_id.clone(),
                Secret::new(self.channel_secret.clone()),
            )
        });
        let is_tls = self.tls.is_some();
        let task = tokio::spawn(emulator.clone().serve(listener, self.tls));
        RunningEmulator {
            addr,
            emulator,
            task,
            tls: is_tls,
        }
    }
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` when serving TLS (the name
    /// its certificate is for).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// How many calls the emulator has answered.
    pub fn calls(&self) -> u64 {
        self.emulator.calls()
    }

    /// Gives the channel `channel_id` a new secret at the emulated LINE Pay, as a
    /// merchant who rotates it does: only calls signed with it pass from now on.
    pub fn set_channel_secret(&self, channel_id: &str, secret: &str) {
        self.emulator
            .set_channel_secret(channel_id, Secret::new(secret))
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Moves the emulator's clock forward (reservations expire after 20 minutes).
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.emulator.advance_clock(by);
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `linepay-sidecar emulator ...` as a child process, for [`CHANNEL_ID`] and
/// [`CHANNEL_SECRET`]; killed on drop. Its log (stderr: one line per call, with the
/// nonce and signature it verified) is kept whole, see [`EmulatorProcess::log`].
pub struct EmulatorProcess {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
}

impl EmulatorProcess {
    /// Starts the subcommand with `args` and waits (bounded) for its announce line.
    pub fn start(args: &[&str]) -> EmulatorProcess {
        EmulatorProcess::start_with_env(args, &[])
    }

    /// [`EmulatorProcess::start`] with these variables set too.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> EmulatorProcess {
        let mut command = binary_command();
        command.envs(env.iter().copied());
        command
            .arg("emulator")
            .args(args)
            .env("LINEPAY_CHANNEL_ID", CHANNEL_ID)
            .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start the emulator: {error}"));
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            panic!("the emulator's stdout is not captured");
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut stderr) = child.stderr.take() {
            let log = log.clone();
            // Ends at EOF, which the kill on drop guarantees.
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                    lock(&log).extend_from_slice(&chunk[..n]);
                }
            });
        }
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = EmulatorProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
        };
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = received
                .recv_timeout(left)
                .unwrap_or_else(|error| panic!("the emulator did not announce its port: {error}"));
            if let Some(addr) = line
                .strip_prefix("linepay emulator listening on http://")
                .and_then(|addr| addr.trim().parse().ok())
            {
                process.addr = addr;
                return process;
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the emulator has logged so far (it keeps running).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&lock(&self.log)).into_owned()
    }
}

fn lock(buffer: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
