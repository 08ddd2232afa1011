//! The process lifecycle through the real binary: signals that arrive while the sidecar
//! is still starting (reading its config, asking the `egress.expect_ip` echo service).

use crate::util::{binary_command, child_exit, Call, Sidecar, Upstream, CHANNEL_ID, WAIT_LIMIT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// An echo service for `egress.expect_ip` that answers `127.0.0.1` only when released:
/// it reports each request's arrival, so a test can act while the sidecar's first check
/// is waiting for the answer.
struct GatedEcho {
    addr: SocketAddr,
    arrived: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl GatedEcho {
    fn start() -> GatedEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo service");
        let addr = listener.local_addr().expect("echo address");
        let (arrived_tx, arrived) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        // Ends when the test's end of the channels is dropped (the next accept fails
        // to report) or the process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(n @ 1..) => head.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                if arrived_tx.send(()).is_err() || release_rx.recv_timeout(WAIT_LIMIT).is_err() {
                    break;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n127.0.0.1",
                );
            }
        });
        GatedEcho {
            addr,
            arrived,
            release,
        }
    }

    fn expect_ip_yaml(&self) -> String {
        format!(
            "egress:\n  expect_ip:\n    address: 127.0.0.1\n    echo_url: http://{}/ip\n    timeout: 10s\n",
            self.addr
        )
    }
}

fn send_signal(name: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_during_start_up_is_a_reload_not_a_kill() {
    let upstream = Upstream::recording().start().await;
    let echo = GatedEcho::start();
    let yaml = echo.expect_ip_yaml();
    let GatedEcho {
        arrived, release, ..
    } = echo;
    let mut sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml("sighup-at-start.yaml", yaml)
        .on_spawn(move |pid| {
            // SIGHUP while the first egress.expect_ip check waits for its answer (the
            // start-up work a reload request used to kill with exit 129), then let the
            // check finish.
            std::thread::spawn(move || {
                arrived
                    .recv_timeout(WAIT_LIMIT)
                    .expect("the sidecar asks the echo service while starting");
                send_signal("HUP", pid);
                let _ = release.send(());
            });
        })
        .start()
        .await;

    let reply = Call::get("/v3/payments?orderId=after-sighup")
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.count(), 1);
    // The SIGHUP was not lost either: it is served as a reload once the reloader runs.
    crate::util::eventually("the start-up SIGHUP is served as a reload", || async {
        let stderr = sidecar.stderr_so_far();
        if stderr.contains("configuration reloaded") && stderr.contains("SIGHUP") {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
    assert!(
        sidecar.wait_exit(Duration::from_millis(100)).is_none(),
        "the sidecar keeps running:\n{}",
        sidecar.stop()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_start_up_exits_cleanly_without_serving() {
    let echo = GatedEcho::start();
    let config = crate::util::TempFile::with_contents(
        "sigterm-at-start.yaml",
        echo.expect_ip_yaml().as_bytes(),
    );
    let journal = crate::util::TempFile::with_contents("journal.sqlite3", b"");
    let mut child = binary_command()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--channel-id", CHANNEL_ID, "--config", config.path_str()])
        .args(["--journal-path", journal.path_str()])
        .env("LINEPAY_CHANNEL_SECRET", crate::util::CHANNEL_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start linepay-sidecar");
    echo.arrived
        .recv_timeout(WAIT_LIMIT)
        .expect("the sidecar asks the echo service while starting");
    send_signal("TERM", child.id());
    // The echo service is never released: the start-up must end on the signal alone.
    let status = child_exit(&mut child, WAIT_LIMIT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the sidecar did not stop on SIGTERM during start-up")
    });
    assert!(status.success(), "exit status {status}");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout piped")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    assert!(
        !stdout.contains("listening on"),
        "a sidecar stopped during start-up never announces a port:\n{stdout}"
    );
    drop(echo.release);
}
