//! A real Redis: Debian's `/usr/bin/redis-server` on a free loopback port, with no
//! persistence (`--save '' --appendonly no`) in a temporary directory of its own. It can
//! be stopped and started again on the same port (what a Redis restart looks like to the
//! sidecars), and it is killed and its directory removed on drop.
//!
//! Redis cannot listen on port 0 and tell which port it got, so a free port is found by
//! binding one and releasing it; if another process takes it in between, the start fails
//! and is tried again on another port.

use super::WAIT_LIMIT;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// Starts on a port someone else took first, tried again at most this often.
const START_ATTEMPTS: usize = 5;

pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    password: Option<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A Redis without a password, answering `PING`.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// A Redis that requires `AUTH password` (`requirepass`).
    pub fn with_password(password: &str) -> RedisServer {
        RedisServer::start_with(Some(password.to_owned()))
    }

    fn start_with(password: Option<String>) -> RedisServer {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "linepay-sidecar-it-{}-{}-redis",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
        let mut server = RedisServer {
            port: 0,
            dir,
            password,
            child: None,
        };
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!(
            "redis-server did not start on a free port in {START_ATTEMPTS} attempts; its log:\n{}",
            server.log()
        );
    }

    /// `redis://127.0.0.1:PORT` (never with the password: the sidecar reads it from a
    /// file).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (`SIGKILL`: no goodbye to its clients, as when a node is lost)
    /// and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (nothing was persisted), and waits until
    /// it answers.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + WAIT_LIMIT;
        // The port may linger for a moment after the kill; another process taking it
        // meanwhile fails the test with the log.
        while !self.spawn_and_wait() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one command against the server (a test's look at what the sidecars stored).
    pub fn command<T: redis::FromRedisValue>(&self, name: &str, args: &[&str]) -> T {
        let mut connection = self
            .connection()
            .unwrap_or_else(|error| panic!("cannot connect to redis on {}: {error}", self.port));
        let mut command = redis::cmd(name);
        for arg in args {
            command.arg(*arg);
        }
        command
            .query(&mut connection)
            .unwrap_or_else(|error| panic!("redis {name} {args:?}: {error}"))
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
        if let Some(password) = &self.password {
            redis::cmd("AUTH").arg(password).exec(&mut connection)?;
        }
        Ok(connection)
    }

    /// Spawns the server on `self.port` and waits for a `PING`; `false` when it exited
    /// (the port was taken) or never answered.
    fn spawn_and_wait(&mut self) -> bool {
        let mut command = Command::new(REDIS_SERVER);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {REDIS_SERVER}: {error}"));
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            let answered = self
                .connection()
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            // Still running after the answer: the answer was ours, not from another
            // Redis that had the port first.
            if answered.is_ok() && matches!(child.try_wait(), Ok(None)) {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("cannot find a free loopback port: {error}"))
}
