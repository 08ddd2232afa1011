//! The systemd readiness protocol (`sd_notify`, `Type=notify`): one datagram to the
//! socket named by `$NOTIFY_SOCKET` per state change. `READY=1` once both listeners are
//! bound and served, `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` when the
//! drain starts. Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! Written with std's `UnixDatagram` (no `unsafe`, no crate): the protocol is one text
//! datagram. A message that cannot be sent is logged once at WARN and never stops the
//! sidecar: systemd would then time the start out, which says more than we could.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the service manager listens, if it does.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// A send failed already (logged once).
    failed: AtomicBool,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`: a path, or `@name` for a Linux abstract socket.
    pub(crate) fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|name| !name.is_empty()) else {
            return Notifier::default();
        };
        match Self::open(&name) {
            Ok(target) => Notifier {
                target: Some(target),
                failed: AtomicBool::new(false),
            },
            Err(error) => {
                tracing::warn!(
                    notify_socket = %name.to_string_lossy(),
                    %error,
                    "NOTIFY_SOCKET is set but unusable: systemd will not hear that the sidecar is ready"
                );
                Notifier::default()
            }
        }
    }

    fn open(name: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        let address = match name.as_encoded_bytes().strip_prefix(b"@") {
            #[cfg(target_os = "linux")]
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)?
            }
            #[cfg(not(target_os = "linux"))]
            Some(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "abstract sockets exist only on Linux",
                ))
            }
            None => SocketAddr::from_pathname(name)?,
        };
        Ok((UnixDatagram::unbound()?, address))
    }

    /// `READY=1` with a `STATUS=` line for `systemctl status`.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// `RELOADING=1`: a reload begins (followed by [`Notifier::ready`]).
    pub(crate) fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading the configuration\n");
    }

    /// `STOPPING=1`: the drain begins.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining calls in flight\n");
    }

    fn send(&self, message: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        // A local datagram: it is queued or refused at once, never waited on.
        if let Err(error) = socket.send_to_addr(message.as_bytes(), address) {
            if !self.failed.swap(true, Ordering::SeqCst) {
                tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier::default();
        notifier.ready("x");
        notifier.stopping();
        assert!(!notifier.failed.load(Ordering::SeqCst));
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("notify-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            target: Some(Notifier::open(path.as_os_str()).expect("open")),
            failed: AtomicBool::new(false),
        };
        notifier.reloading();
        notifier.ready("serving");
        let mut buffer = [0u8; 256];
        let n = receiver.recv(&mut buffer).expect("recv");
        assert!(buffer[..n].starts_with(b"RELOADING=1\n"));
        let n = receiver.recv(&mut buffer).expect("recv");
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=serving\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
