//! The process signals: `SIGTERM` and `SIGINT` ask for a drain and exit, `SIGHUP` for a
//! reload.
//!
//! All three handlers are installed first thing, before the configuration is read or
//! the `egress.expect_ip` check asks its echo service: a signal's default action kills
//! the process, so a `SIGHUP` sent by a config-management tool while the sidecar is
//! still starting must find a handler (it is then served as a reload once the reloader
//! runs; a `SIGTERM` then ends the start-up early).

use std::io;

#[cfg(unix)]
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The installed handlers. Nothing is lost between install and the first wait: a
/// signal that arrives in between is seen by the next wait.
pub(crate) struct Signals {
    /// `SIGTERM` and `SIGINT`: drain and exit.
    pub(crate) termination: Termination,
    /// `SIGHUP`: reload (handed to the reloader).
    pub(crate) hangups: Hangups,
}

impl Signals {
    pub(crate) fn install() -> io::Result<Signals> {
        Ok(Signals {
            termination: Termination::install()?,
            hangups: Hangups::install()?,
        })
    }
}

/// `SIGTERM` and `SIGINT`.
pub(crate) struct Termination {
    #[cfg(unix)]
    terminate: Signal,
    #[cfg(unix)]
    interrupt: Signal,
}

impl Termination {
    fn install() -> io::Result<Termination> {
        Ok(Termination {
            #[cfg(unix)]
            terminate: signal(SignalKind::terminate())?,
            #[cfg(unix)]
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes at the next `SIGTERM` or `SIGINT`.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}

/// `SIGHUP`s, each a request to reload (never on platforms without it).
pub(crate) struct Hangups {
    #[cfg(unix)]
    hangup: Signal,
}

impl Hangups {
    fn install() -> io::Result<Hangups> {
        Ok(Hangups {
            #[cfg(unix)]
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Completes at the next `SIGHUP`.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if self.hangup.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// Completes at the first `SIGTERM` or `SIGINT` after it is first polled: for the
/// commands that run something besides the sidecar (the emulator alone), which need no
/// reload and no early handlers.
pub async fn shutdown_signal() {
    match Termination::install() {
        Ok(mut termination) => termination.recv().await,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        }
    }
}
