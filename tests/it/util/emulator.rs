//! The LINE Pay emulator (crate `linepay-emulator`), served in the test process on a
//! loopback port.

use linepay_emulator::{Emulator, EmulatorConfig, Secret};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running emulator; stops when dropped.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    emulator: Emulator,
    task: JoinHandle<std::io::Result<()>>,
    tls: bool,
}

/// Starts an emulator that accepts `channel_id` and `channel_secret`, over TLS when a
/// server config is given.
pub async fn start_emulator(
    channel_id: &str,
    channel_secret: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> RunningEmulator {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("cannot bind the emulator: {error}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("emulator has no address: {error}"));
    let emulator = Emulator::new(EmulatorConfig::new(channel_id, Secret::new(channel_secret)));
    let is_tls = tls.is_some();
    let task = tokio::spawn(emulator.clone().serve(listener, tls));
    RunningEmulator {
        addr,
        emulator,
        task,
        tls: is_tls,
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
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
