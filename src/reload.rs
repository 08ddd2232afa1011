//! Hot reload: the running configuration lives behind an `ArcSwap`; a reload builds a
//! whole new [`Proxy`] (allowlist, limits, timeouts, upstream, credentials) and swaps it
//! in, so each call sees one consistent snapshot and calls in flight finish on the one
//! they started with (a rotated secret applies from the next call).
//!
//! Triggers: `SIGHUP`, and a change in the content of the config file, the secret file,
//! the CA file or the egress proxy's credentials file. Content, not inode or mtime: Kubernetes updates mounted ConfigMaps
//! and Secrets by swapping a `..data` symlink, which an inode watch on the file misses
//! and a read through the path sees. A reload that fails keeps the old configuration
//! serving, logs every problem (file, line, key) and counts a failure.

use crate::config::{self, Config, ConfigError, Overrides};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Reads one environment variable (a parameter so that tests and the demo choose theirs).
pub type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where the configuration comes from: the same file, flags and environment every time.
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
    pub env: Box<Env>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        config::load(self.path.as_deref(), &self.overrides, &*self.env)
    }
}

/// Keys read once at start-up: a reload that changes them says so, since the running
/// process keeps the old values until it restarts.
fn warn_about_restart_only_keys(current: &Config, next: &Config) {
    let changed: Vec<&str> = [
        ("listen", current.listen != next.listen),
        ("admin.listen", current.admin.listen != next.admin.listen),
        (
            "request.max_connections",
            current.request.max_connections != next.request.max_connections,
        ),
        (
            "shutdown.drain_timeout",
            current.shutdown.drain_timeout != next.shutdown.drain_timeout,
        ),
        (
            "egress.expect_ip",
            current.egress.expect_ip != next.egress.expect_ip,
        ),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect();
    if !changed.is_empty() {
        tracing::warn!(
            keys = %changed.join(", "),
            "these keys change only on restart; the running values stay, the other keys were reloaded"
        );
    }
}

/// Builds the proxy for a configuration (the upstream client among other things).
pub type BuildProxy = dyn Fn(Config, &Proxy) -> Result<Proxy, String> + Send + Sync;

pub struct Reloader {
    source: ConfigSource,
    proxy: Arc<ArcSwap<Proxy>>,
    metrics: Arc<Metrics>,
    build: Box<BuildProxy>,
    /// What the watched files held at the last reload attempt.
    fingerprint: Mutex<Vec<u8>>,
}

impl Reloader {
    pub fn new(
        source: ConfigSource,
        proxy: Arc<ArcSwap<Proxy>>,
        metrics: Arc<Metrics>,
        build: Box<BuildProxy>,
    ) -> Reloader {
        let reloader = Reloader {
            source,
            proxy,
            metrics,
            build,
            fingerprint: Mutex::new(Vec::new()),
        };
        let current = reloader.fingerprint_now();
        *reloader.lock_fingerprint() = current;
        reloader
    }

    /// Loads, validates and swaps in a new configuration; `true` if it took effect.
    pub fn reload(&self, trigger: &str) -> bool {
        *self.lock_fingerprint() = self.fingerprint_now();
        let outcome = self
            .source
            .load()
            .map_err(|error| error.to_string())
            .and_then(|config| {
                let current = self.proxy.load_full();
                warn_about_restart_only_keys(current.config(), &config);
                (self.build)(config, &current)
            });
        match outcome {
            Ok(proxy) => {
                let routes = proxy.config().allowlist.routes().len();
                self.proxy.store(Arc::new(proxy));
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(trigger, routes, "configuration reloaded");
                true
            }
            Err(problems) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(
                    trigger,
                    %problems,
                    "configuration reload failed; the previous configuration keeps serving"
                );
                false
            }
        }
    }

    /// Reloads when a watched file's content changed since the last attempt.
    pub fn reload_if_changed(&self) -> Option<bool> {
        let now = self.fingerprint_now();
        if *self.lock_fingerprint() == now {
            return None;
        }
        Some(self.reload("file changed"))
    }

    /// Runs until the task is aborted: SIGHUP, and a look at the files every
    /// `reload.watch_interval` of the current configuration.
    pub async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let interval = self.proxy.load().config().reload.watch_interval;
            let tick = async {
                if interval.is_zero() {
                    std::future::pending::<()>().await;
                } else {
                    tokio::time::sleep(interval).await;
                }
            };
            #[cfg(unix)]
            let signal = async {
                match hangup.as_mut() {
                    Some(stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<()>();
            tokio::select! {
                () = signal => {
                    self.reload("SIGHUP");
                }
                () = tick => {
                    // Reading files blocks; keep it off the async workers.
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                }
            }
        }
    }

    /// A digest of every watched file's content (the secret's bytes never leave this
    /// function, only their hash).
    fn fingerprint_now(&self) -> Vec<u8> {
        let current = self.proxy.load();
        let config = current.config();
        let paths = [
            self.source.path.clone(),
            config.credentials.secret_file.clone(),
            config.upstream.ca_file.clone(),
            config
                .egress
                .proxy
                .as_ref()
                .and_then(|proxy| proxy.auth.as_ref())
                .map(|auth| auth.file.clone()),
        ];
        let mut digest = Sha256::new();
        for path in paths.iter().flatten() {
            digest.update(path.as_os_str().as_encoded_bytes());
            match std::fs::read(path).map(zeroize::Zeroizing::new) {
                Ok(contents) => {
                    digest.update(b"\x01");
                    digest.update(Sha256::digest(&contents));
                }
                Err(_) => digest.update(b"\x00"),
            }
        }
        digest.finalize().to_vec()
    }

    fn lock_fingerprint(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.fingerprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
