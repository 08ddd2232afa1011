//! The real sidecar binary as a child process, on 127.0.0.1 port 0.
//!
//! The port is learned from the one announce line on stdout (read with a timeout, never
//! guessed). Both output streams are captured whole for the life of the process, so a
//! test can look for leaks in everything the sidecar printed. The child is killed when
//! the guard drops, so a failing test never leaves a process behind.

use super::{
    binary_command, child_exit, eventually, Call, TempFile, TestPki, CHANNEL_ID, CHANNEL_SECRET,
    WAIT_LIMIT,
};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::mpsc;

const ANNOUNCE_PREFIX: &str = "linepay-sidecar listening on http://";

/// Builder: `Sidecar::new().upstream(url).arg("--read-timeout").arg("10s").start().await`.
///
/// Defaults: `--listen 127.0.0.1:0`, `--channel-id` [`CHANNEL_ID`], and
/// `LINEPAY_CHANNEL_SECRET` = [`CHANNEL_SECRET`]; `--upstream` only when given.
pub struct Sidecar {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// The `--config` file, handed to the running sidecar so it lives as long.
    config: Option<TempFile>,
    /// Called with the process id right after the spawn, before the announce line.
    on_spawn: Option<Box<dyn FnOnce(u32) + Send>>,
    /// The call journal of this sidecar alone (`LINEPAY_SIDECAR_JOURNAL_PATH`), unless
    /// the test names one with [`Sidecar::journal_at`].
    journal: Option<TempFile>,
    /// A program (and its arguments) that runs the binary, e.g. `prlimit ... --`.
    wrapper: Vec<OsString>,
}

impl Default for Sidecar {
    fn default() -> Self {
        Self::new()
    }
}

impl Sidecar {
    pub fn new() -> Sidecar {
        Sidecar {
            args: vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                // Never the default 0.0.0.0:9464: tests run side by side.
                "--admin-listen".into(),
                "127.0.0.1:0".into(),
                "--channel-id".into(),
                CHANNEL_ID.into(),
            ],
            env: vec![("LINEPAY_CHANNEL_SECRET".into(), CHANNEL_SECRET.into())],
            config: None,
            on_spawn: None,
            journal: None,
            wrapper: Vec::new(),
        }
        .with_own_journal()
    }

    /// `linepay-sidecar demo` on free loopback ports, with no variable of the tests'
    /// own (no channel, no journal: the demo brings its own).
    pub fn demo() -> Sidecar {
        Sidecar {
            args: vec![
                "demo".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--admin-listen".into(),
                "127.0.0.1:0".into(),
            ],
            env: Vec::new(),
            config: None,
            on_spawn: None,
            journal: None,
            wrapper: Vec::new(),
        }
    }

    fn with_own_journal(mut self) -> Sidecar {
        // An empty file is an empty SQLite database.
        let journal = TempFile::with_contents("journal.sqlite3", b"");
        self = self.env("LINEPAY_SIDECAR_JOURNAL_PATH", journal.path_str());
        self.journal = Some(journal);
        self
    }

    /// Uses the journal at `path` (kept by the test, e.g. across a restart).
    pub fn journal_at(mut self, path: &str) -> Sidecar {
        self.env
            .retain(|(name, _)| name != "LINEPAY_SIDECAR_JOURNAL_PATH");
        self.journal = None;
        self.env("LINEPAY_SIDECAR_JOURNAL_PATH", path)
    }

    /// Replaces the default `--admin-listen 127.0.0.1:0`, e.g. with a pod's `0.0.0.0:0`.
    pub fn admin_listen(mut self, address: &str) -> Sidecar {
        if let Some(at) = self.args.iter().position(|arg| arg == "--admin-listen") {
            self.args[at + 1] = address.into();
        }
        self
    }

    pub fn upstream(self, url: impl Into<OsString>) -> Sidecar {
        self.arg("--upstream").arg(url)
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Sidecar {
        self.args.push(arg.into());
        self
    }

    /// `--config` with this YAML, written to a temp file `name` that lives as long as the
    /// running sidecar (see [`RunningSidecar::config_file`]).
    pub fn config_yaml(mut self, name: &str, yaml: impl AsRef<[u8]>) -> Sidecar {
        assert!(self.config.is_none(), "config_yaml given twice");
        let file = TempFile::with_contents(name, yaml.as_ref());
        self = self.arg("--config").arg(file.path_str());
        self.config = Some(file);
        self
    }

    /// `--upstream-ca-file` with the CA of `pki`, so its certificates are trusted.
    pub fn trusting(self, pki: &TestPki) -> Sidecar {
        self.arg("--upstream-ca-file").arg(pki.ca_file.path_str())
    }

    /// Without the default channel (`--channel-id`, `LINEPAY_CHANNEL_SECRET`): for a
    /// config with `channels:`, which refuses `credentials:` beside it.
    pub fn without_credentials(mut self) -> Sidecar {
        if let Some(at) = self.args.iter().position(|arg| arg == "--channel-id") {
            self.args.drain(at..(at + 2).min(self.args.len()));
        }
        self.without_env("LINEPAY_CHANNEL_SECRET")
    }

    /// Drops a default environment variable, e.g. the secret, to test another source.
    pub fn without_env(mut self, key: &str) -> Sidecar {
        self.env.retain(|(name, _)| name != key);
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Sidecar {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs `hook` with the process id as soon as the process exists, before it has
    /// announced its port: to act on a sidecar that is still starting.
    pub fn on_spawn(mut self, hook: impl FnOnce(u32) + Send + 'static) -> Sidecar {
        self.on_spawn = Some(Box::new(hook));
        self
    }

    /// Runs the binary under `wrapper` (a program that execs it, such as
    /// `prlimit --nofile=256:4096 --`), so the process id is still the sidecar's.
    pub fn wrapped_in(mut self, wrapper: &[&str]) -> Sidecar {
        self.wrapper = wrapper.iter().map(OsString::from).collect();
        self
    }

    /// Starts the binary and waits (bounded) for its announce line.
    pub async fn start(self) -> RunningSidecar {
        let mut command = binary_command();
        if let Some((program, arguments)) = self.wrapper.split_first() {
            let binary = command.get_program().to_owned();
            let mut wrapped = std::process::Command::new(program);
            wrapped.args(arguments).arg(binary).stdin(Stdio::null());
            for (key, value) in command.get_envs() {
                match value {
                    Some(value) => wrapped.env(key, value),
                    None => wrapped.env_remove(key),
                };
            }
            command = wrapped;
        }
        command
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start linepay-sidecar: {error}"));
        if let Some(hook) = self.on_spawn {
            hook(child.id());
        }

        let stdout_text = Arc::new(Mutex::new(Vec::new()));
        let stderr_text = Arc::new(Mutex::new(Vec::new()));
        let (announce_tx, mut announce_rx) = mpsc::unbounded_channel::<String>();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let captured = stdout_text.clone();
            readers.push(std::thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                // Ends at EOF, which the kill on drop guarantees.
                while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    lock(&captured).extend_from_slice(&line);
                    let _ = announce_tx.send(String::from_utf8_lossy(&line).into_owned());
                    line.clear();
                }
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(capture(stderr, stderr_text.clone()));
        }
        let mut running = RunningSidecar {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            stdout: stdout_text,
            stderr: stderr_text,
            readers,
            config: self.config,
            journal: self.journal,
            channel_addrs: Vec::new(),
        };

        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let line = match tokio::time::timeout_at(deadline, announce_rx.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    let output = running.stop();
                    panic!("linepay-sidecar exited without announcing its port:\n{output}");
                }
                Err(_) => {
                    let output = running.stop();
                    panic!("linepay-sidecar did not announce its port within {WAIT_LIMIT:?}:\n{output}");
                }
            };
            if let Some(addr) = parse_announce(&line) {
                running.addr = addr;
            }
            if let Some(channel) = parse_channel_announce(&line) {
                running.channel_addrs.push(channel);
            }
            if let Some(addr) = parse_admin_announce(&line) {
                running.admin_addr = addr;
                // The admin line is printed right after the proxy's.
                return running;
            }
        }
    }
}

/// `linepay-sidecar admin on http://127.0.0.1:PORT (/metrics ...)` → the address.
fn parse_admin_announce(line: &str) -> Option<SocketAddr> {
    line.trim_end()
        .strip_prefix("linepay-sidecar admin on http://")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// `linepay-sidecar listening on http://127.0.0.1:PORT (upstream ...)` → the address.
/// `linepay-sidecar channel NAME listening on http://127.0.0.1:PORT` → the name and address.
fn parse_channel_announce(line: &str) -> Option<(String, SocketAddr)> {
    let rest = line.strip_prefix("linepay-sidecar channel ")?;
    let (name, rest) = rest.split_once(' ')?;
    let addr = rest.trim_end().strip_prefix("listening on http://")?;
    Some((name.to_owned(), addr.parse().ok()?))
}

fn parse_announce(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix(ANNOUNCE_PREFIX)?;
    let (addr, upstream) = rest.split_once(' ')?;
    upstream
        .trim_end()
        .starts_with("(upstream ")
        .then_some(())?;
    addr.parse().ok()
}

/// The value of one exact series (`name{labels}`) in a `/metrics` scrape.
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn capture(mut stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            lock(&into).extend_from_slice(&chunk[..n]);
        }
    })
}

fn lock(buffer: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A started sidecar; killed on drop.
pub struct RunningSidecar {
    pub addr: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin_addr: SocketAddr,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    config: Option<TempFile>,
    journal: Option<TempFile>,
    /// Each channel's own port (`channels.<name>.listen`), as announced.
    channel_addrs: Vec<(String, SocketAddr)>,
}

/// Everything a stopped sidecar wrote.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

impl RunningSidecar {
    /// `http://127.0.0.1:PORT`.
    /// The port of channel `name`'s own `listen`; panics when it has none.
    pub fn channel_addr(&self, name: &str) -> SocketAddr {
        self.channel_addrs
            .iter()
            .find(|(channel, _)| channel == name)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| {
                panic!(
                    "channel `{name}` announced no port: {:?}",
                    self.channel_addrs
                )
            })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// The file given with [`Sidecar::config_yaml`], e.g. to rewrite it before a reload.
    pub fn config_file(&self) -> &TempFile {
        self.config
            .as_ref()
            .unwrap_or_else(|| panic!("this sidecar was started without config_yaml"))
    }

    /// The text of `GET /metrics` on the admin port (which must answer 200).
    pub async fn scrape(&self) -> String {
        let reply = Call::get("/metrics").send(self.admin_addr).await;
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.text());
        reply.text()
    }

    /// Polls `/metrics` until the series `name{labels}` has `value` (bounded), for the
    /// effects of background work.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        eventually(&format!("{series} reaches {value}"), || async {
            let text = self.scrape().await;
            match metric(&text, series) {
                Some(seen) if seen == value => Ok(()),
                _ => Err(text),
            }
        })
        .await
    }

    /// The process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`HUP`, `TERM`) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        child_exit(&mut self.child, limit)
    }

    /// What the process has written on stderr so far (it keeps running).
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Kills the process and returns all it printed on stdout and stderr.
    pub fn stop(&mut self) -> Output {
        self.kill();
        for reader in self.readers.drain(..) {
            // The pipes close with the process, so the readers end.
            let _ = reader.join();
        }
        Output {
            stdout: String::from_utf8_lossy(&lock(&self.stdout)).into_owned(),
            stderr: String::from_utf8_lossy(&lock(&self.stderr)).into_owned(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningSidecar {
    fn drop(&mut self) {
        self.kill();
        if let Some(journal) = &self.journal {
            remove_journal_sidecars(&journal.path);
        }
    }
}

/// Removes SQLite's `-wal` and `-shm` files beside a journal (a killed process leaves
/// them), and the sidecar's `-held-calls` marker.
pub fn remove_journal_sidecars(journal: &std::path::Path) {
    for suffix in ["-wal", "-shm", "-held-calls"] {
        let mut name = journal.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

#[test]
fn announce_line_is_parsed_strictly() {
    assert_eq!(
        parse_announce(
            "linepay-sidecar listening on http://127.0.0.1:4321 (upstream http://127.0.0.1:9/)\n"
        ),
        Some(SocketAddr::from(([127, 0, 0, 1], 4321)))
    );
    assert_eq!(parse_announce("linepay-sidecar started"), None);
    assert_eq!(
        parse_announce("linepay emulator listening on http://127.0.0.1:4321"),
        None
    );
}
