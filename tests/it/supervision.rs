//! How supervisors see the real binary: the `healthcheck` subcommand (a container's
//! `HEALTHCHECK`), the systemd readiness protocol (`Type=notify`), the exit codes of
//! every subcommand, and `--log-level`.

use crate::util::{
    closed_port_url, Cli, CliOutput, RunningSidecar, Sidecar, TempFile, Upstream, CHANNEL_ID,
    CHANNEL_SECRET, WAIT_LIMIT,
};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ORDER: &str = r#"{"amount":100,"currency":"TWD","orderId":"held","packages":[{"id":"p1","amount":100,"products":[{"name":"Tea","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}"#;

/// `linepay-sidecar healthcheck ARGS...`, run off the async workers.
async fn healthcheck(args: &[&str]) -> CliOutput {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        args.iter()
            .fold(Cli::new().arg("healthcheck"), |cli, arg| cli.arg(arg))
            .run()
    })
    .await
    .expect("healthcheck thread")
}

fn code(output: &CliOutput) -> Option<i32> {
    output.status.code()
}

/// A sidecar whose next call hangs in its upstream for `hold`, so that a SIGTERM leaves
/// it draining that long.
async fn sidecar_with_a_held_call(hold: Duration) -> (RunningSidecar, Upstream) {
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000"}"#)
        .delay(hold)
        .start()
        .await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let addr = sidecar.addr;
    tokio::spawn(async move {
        crate::util::Call::post("/v3/payments/request", ORDER)
            .send(addr)
            .await
    });
    sidecar
        .wait_for_metric("linepay_sidecar_in_flight_requests", 1.0)
        .await;
    (sidecar, upstream)
}

// ---------------------------------------------------------------------------------------
// healthcheck

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_exits_0_for_a_running_sidecar_and_1_once_its_port_is_closed() {
    let upstream = Upstream::recording().start().await;
    let mut sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let admin = sidecar.admin_addr.to_string();

    let alive = healthcheck(&["--admin-listen", &admin]).await;
    assert_eq!(code(&alive), Some(0), "{alive:?}");
    assert!(alive.stdout.contains("/healthz: 200 ok"), "{alive:?}");
    let ready = healthcheck(&["--admin-listen", &admin, "--ready"]).await;
    assert_eq!(code(&ready), Some(0), "{ready:?}");
    assert!(ready.stdout.contains("/readyz: 200 ready"), "{ready:?}");

    sidecar.stop();
    let gone = healthcheck(&["--admin-listen", &admin]).await;
    assert_eq!(code(&gone), Some(1), "{gone:?}");
    assert!(gone.stderr.contains("unhealthy"), "{gone:?}");
    assert!(gone.stdout.is_empty(), "{gone:?}");
}

/// The address comes from where the sidecar's comes from: the config file, the
/// `LINEPAY_SIDECAR_ADMIN_LISTEN` variable (which wins over the file), the flag.
#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_finds_the_admin_port_in_the_config_file_and_the_environment() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let admin = sidecar.admin_addr.to_string();
    let closed = closed_port_url().await.replace("http://", "");

    let file = TempFile::with_contents(
        "healthcheck.yaml",
        format!("admin:\n  listen: {admin}\n").as_bytes(),
    );
    let from_file = healthcheck(&["--config", file.path_str()]).await;
    assert_eq!(code(&from_file), Some(0), "{from_file:?}");

    let wrong_file = TempFile::with_contents(
        "healthcheck-wrong.yaml",
        format!("admin:\n  listen: {closed}\n").as_bytes(),
    );
    let env_wins = tokio::task::spawn_blocking({
        let admin = admin.clone();
        let path = wrong_file.path_str().to_owned();
        move || {
            Cli::new()
                .arg("healthcheck")
                .arg("--config")
                .arg(path)
                .env("LINEPAY_SIDECAR_ADMIN_LISTEN", admin)
                .run()
        }
    })
    .await
    .expect("healthcheck thread");
    assert_eq!(code(&env_wins), Some(0), "{env_wins:?}");
    let file_alone = healthcheck(&["--config", wrong_file.path_str()]).await;
    assert_eq!(code(&file_alone), Some(1), "{file_alone:?}");

    let no_port = healthcheck(&["--admin-listen", "127.0.0.1:0"]).await;
    assert_eq!(code(&no_port), Some(1), "{no_port:?}");
    assert!(no_port.stderr.contains("no fixed port"), "{no_port:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_ready_exits_1_while_the_sidecar_drains_and_healthz_stays_0() {
    let (sidecar, _upstream) = sidecar_with_a_held_call(Duration::from_secs(4)).await;
    let admin = sidecar.admin_addr.to_string();
    sidecar.signal("TERM");
    crate::util::eventually("healthcheck --ready fails while draining", || async {
        let output = healthcheck(&["--admin-listen", &admin, "--ready"]).await;
        if code(&output) == Some(1) && output.stderr.contains("draining") {
            Ok(())
        } else {
            Err(format!("{output:?}"))
        }
    })
    .await;
    // Alive while it drains: a supervisor must not kill it mid-drain.
    let alive = healthcheck(&["--admin-listen", &admin]).await;
    assert_eq!(code(&alive), Some(0), "{alive:?}");
}

/// A port that accepts the connection and never answers: the check ends at its
/// `--timeout`, unhealthy, instead of hanging the container runtime's probe.
#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_gives_up_at_its_timeout() {
    // Bound and listening (the kernel completes the handshake), never accepted.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = silent.local_addr().expect("address").to_string();
    let started = Instant::now();
    let output = healthcheck(&["--admin-listen", &address, "--timeout", "300ms"]).await;
    let took = started.elapsed();
    assert_eq!(code(&output), Some(1), "{output:?}");
    assert!(
        output.stderr.contains("no answer within 300ms"),
        "{output:?}"
    );
    assert!(took < WAIT_LIMIT, "took {took:?}");
    drop(silent);
}

// ---------------------------------------------------------------------------------------
// systemd Type=notify

/// A datagram socket standing in for systemd's, in a directory of its own.
struct NotifySocket {
    dir: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "linepay-notify-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("notify dir");
        let socket = UnixDatagram::bind(dir.join("notify")).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(WAIT_LIMIT))
            .expect("read timeout");
        NotifySocket { dir, socket }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("notify")
    }

    /// The next message (blocking, bounded by the harness's wait limit).
    fn next(&self) -> String {
        let mut buffer = [0u8; 1024];
        let n = self
            .socket
            .recv(&mut buffer)
            .unwrap_or_else(|error| panic!("no sd_notify message within {WAIT_LIMIT:?}: {error}"));
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The addresses in `STATUS=serving on A, admin on B`.
fn served_addresses(message: &str) -> Vec<SocketAddr> {
    message
        .lines()
        .find_map(|line| line.strip_prefix("STATUS=serving on "))
        .map(|status| {
            status
                .split(", admin on ")
                .filter_map(|address| address.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_once_both_ports_accept_then_reloading_and_stopping() {
    let notify = std::sync::Arc::new(NotifySocket::bind());
    // The test's side of READY=1 runs on its own thread from before the spawn: the
    // moment the message arrives, both ports it names must already take connections.
    let at_ready = std::thread::spawn({
        let notify = notify.clone();
        move || {
            let message = notify.next();
            let connects: Vec<(SocketAddr, bool)> = served_addresses(&message)
                .into_iter()
                .map(|address| {
                    let accepted =
                        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
                            .is_ok();
                    (address, accepted)
                })
                .collect();
            (message, connects)
        }
    });
    let upstream = Upstream::recording().start().await;
    let mut sidecar = Sidecar::new()
        .upstream(upstream.url())
        .env("NOTIFY_SOCKET", notify.path())
        .start()
        .await;
    let (ready, connects) = tokio::task::spawn_blocking(move || at_ready.join())
        .await
        .expect("join")
        .expect("the READY=1 thread");
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert_eq!(
        connects,
        vec![(sidecar.addr, true), (sidecar.admin_addr, true)],
        "at READY=1 both listeners accept: {ready:?}"
    );

    sidecar.signal("HUP");
    let next = |notify: std::sync::Arc<NotifySocket>| async move {
        tokio::task::spawn_blocking(move || notify.next())
            .await
            .expect("recv thread")
    };
    let reloading = next(notify.clone()).await;
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    let reloaded = next(notify.clone()).await;
    assert!(reloaded.starts_with("READY=1\n"), "{reloaded:?}");

    sidecar.signal("TERM");
    let stopping = next(notify.clone()).await;
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    let status = sidecar
        .wait_exit(Duration::from_secs(10))
        .expect("exits after STOPPING=1");
    assert!(status.success(), "{status}");
}

/// A NOTIFY_SOCKET nobody listens on is logged, never a reason to stop serving.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_notify_socket_does_not_stop_the_sidecar() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .env("NOTIFY_SOCKET", "/nonexistent/linepay-notify")
        .start()
        .await;
    let health = crate::util::Call::get("/healthz")
        .send(sidecar.admin_addr)
        .await;
    assert_eq!(health.status, 200);
    crate::util::eventually("the failed notification in the log", || async {
        let stderr = sidecar.stderr_so_far();
        if stderr.contains("cannot notify systemd") {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Exit codes (docs/operating.md, "Exit codes")

fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let cli = args.iter().fold(Cli::new(), |cli, arg| cli.arg(arg));
    env.iter()
        .fold(cli, |cli, (key, value)| cli.env(key, value))
        .run()
}

#[test]
fn exit_code_0_for_help_version_and_a_valid_check() {
    for args in [&["--help"][..], &["--version"], &["healthcheck", "--help"]] {
        let output = run_cli(args, &[]);
        assert_eq!(code(&output), Some(0), "{args:?}: {output:?}");
    }
    let check = run_cli(
        &["check", "--channel-id", CHANNEL_ID],
        &[("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)],
    );
    assert_eq!(code(&check), Some(0), "{check:?}");
}

#[test]
fn exit_code_1_for_a_configuration_the_binary_refuses() {
    // No secret anywhere: a config error, for `check` and for a run alike.
    for args in [
        &["check", "--channel-id", CHANNEL_ID][..],
        &["--channel-id", CHANNEL_ID],
    ] {
        let output = run_cli(args, &[]);
        assert_eq!(code(&output), Some(1), "{args:?}: {output:?}");
        assert!(
            output.stderr.contains("invalid configuration"),
            "{args:?}: {output:?}"
        );
    }
    // A key's value given as a flag is checked with the configuration, not by the
    // command-line parser: 1, with the key named.
    let bad_address = run_cli(
        &["check", "--channel-id", CHANNEL_ID, "--listen", "nowhere"],
        &[("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)],
    );
    assert_eq!(code(&bad_address), Some(1), "{bad_address:?}");
    assert!(bad_address.stderr.contains("listen"), "{bad_address:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_1_when_a_port_cannot_be_bound() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "--channel-id",
                CHANNEL_ID,
                "--listen",
                &address,
                "--admin-listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:9",
            ],
            &[("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)],
        )
    })
    .await
    .expect("run thread");
    assert_eq!(code(&output), Some(1), "{output:?}");
    assert!(output.stderr.contains("cannot listen on"), "{output:?}");
    drop(taken);
}

#[test]
fn exit_code_2_for_a_command_line_that_does_not_parse() {
    for args in [
        &["--no-such-flag"][..],
        &["no-such-subcommand"],
        &["--log-level", "loud"],
        &["check", "--log-format", "xml"],
        &["healthcheck", "--timeout", "soon"],
        &["sign"],
    ] {
        let output = run_cli(args, &[]);
        assert_eq!(code(&output), Some(2), "{args:?}: {output:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_0_after_sigterm_and_a_drain() {
    let (mut sidecar, _upstream) = sidecar_with_a_held_call(Duration::from_millis(500)).await;
    sidecar.signal("TERM");
    let status = sidecar.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{status}");
}

// ---------------------------------------------------------------------------------------
// --log-level

#[tokio::test(flavor = "multi_thread")]
async fn log_level_warn_hides_the_info_lines_and_the_full_filter_wins() {
    let upstream = Upstream::recording().start().await;
    let mut quiet = Sidecar::new()
        .upstream(upstream.url())
        .arg("--log-level")
        .arg("warn")
        .start()
        .await;
    let quiet_log = quiet.stop().stderr;
    assert!(
        !quiet_log.contains("linepay-sidecar started"),
        "{quiet_log}"
    );

    let mut by_variable = Sidecar::new()
        .upstream(upstream.url())
        .env("LINEPAY_SIDECAR_LOG_LEVEL", "warn")
        .start()
        .await;
    let variable_log = by_variable.stop().stderr;
    assert!(
        !variable_log.contains("linepay-sidecar started"),
        "{variable_log}"
    );

    // LINEPAY_SIDECAR_LOG is the full filter: it wins over --log-level.
    let mut filtered = Sidecar::new()
        .upstream(upstream.url())
        .arg("--log-level")
        .arg("error")
        .env("LINEPAY_SIDECAR_LOG", "info")
        .start()
        .await;
    let filtered_log = filtered.stop().stderr;
    assert!(
        filtered_log.contains("linepay-sidecar started"),
        "{filtered_log}"
    );
}
