//! Hot reload: the running configuration lives behind an `ArcSwap`; a reload builds a
//! whole new [`Proxy`] (allowlist, limits, timeouts, upstream, credentials) and swaps it
//! in, so each call sees one consistent snapshot and calls in flight finish on the one
//! they started with (a rotated secret applies from the next call). What a reload may
//! reuse from the running snapshot is decided in [`super::snapshot`].
//!
//! Triggers: `SIGHUP`, and a change in the content of the config file, the secret file,
//! the CA file or the egress proxy's credentials file. Content, not inode or mtime:
//! Kubernetes updates mounted ConfigMaps and Secrets by swapping a `..data` symlink,
//! which an inode watch on the file misses and a read through the path sees. A reload
//! that fails keeps the old configuration serving, logs every problem (file, line, key)
//! and counts a failure.

use super::notify::Notifier;
use super::signals::Hangups;
use super::snapshot::{build_proxy, BuildError, RestartOnly};
use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::ConfigSource;
use crate::state::SharedState;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    Build(BuildError),
    #[error("the reload adds, removes or moves (its listen) a channel ({running} → {next}); the channels and their listeners change only on restart: restart the sidecar to apply it")]
    Channels { running: String, next: String },
}

/// `web (127.0.0.1:8081), pos`: the channels of a configuration, for the refusal.
fn channel_list(fixed: &RestartOnly) -> String {
    let names: Vec<String> = fixed
        .channels
        .iter()
        .map(|(name, listen)| match listen {
            Some(listen) => format!("{name} ({listen})"),
            None => name.clone(),
        })
        .collect();
    names.join(", ")
}

pub(crate) struct Reloader {
    source: ConfigSource,
    proxy: Arc<ArcSwap<Proxy>>,
    metrics: Arc<Metrics>,
    /// systemd hears `RELOADING=1` … `READY=1` around each reload.
    notifier: Arc<Notifier>,
    /// What the watched files held at the last reload attempt.
    fingerprint: Mutex<Vec<u8>>,
    /// The shared state of the process (restart-only), for limits a reload rebuilds.
    state: SharedState,
}

impl Reloader {
    pub(crate) fn new(
        source: ConfigSource,
        proxy: Arc<ArcSwap<Proxy>>,
        metrics: Arc<Metrics>,
        notifier: Arc<Notifier>,
        state: SharedState,
    ) -> Reloader {
        let reloader = Reloader {
            source,
            proxy,
            metrics,
            notifier,
            fingerprint: Mutex::new(Vec::new()),
            state,
        };
        let current = reloader.fingerprint_now();
        *reloader.lock_fingerprint() = current;
        reloader
    }

    /// Loads, validates and swaps in a new configuration; `true` if it took effect.
    pub(crate) fn reload(&self, trigger: &str) -> bool {
        self.notifier.reloading();
        let applied = self.try_reload(trigger);
        // READY=1 either way: a failed reload leaves the previous configuration serving.
        self.notifier.ready(if applied {
            "serving; configuration reloaded"
        } else {
            "serving; the last reload failed, the previous configuration keeps serving"
        });
        applied
    }

    fn try_reload(&self, trigger: &str) -> bool {
        *self.lock_fingerprint() = self.fingerprint_now();
        let outcome = self
            .source
            .load()
            .map_err(ReloadError::Config)
            .and_then(|config| {
                let current = self.proxy.load_full();
                let (running, next) = (
                    RestartOnly::from_config(current.config()),
                    RestartOnly::from_config(&config),
                );
                if running.channels_changed(&next) {
                    return Err(ReloadError::Channels {
                        running: channel_list(&running),
                        next: channel_list(&next),
                    });
                }
                running.warn_about_changes(&next);
                build_proxy(
                    config,
                    self.metrics.clone(),
                    current.desk().clone(),
                    &self.state,
                    Some(&current),
                )
                .map_err(ReloadError::Build)
            });
        match outcome {
            Ok(proxy) => {
                let routes = proxy.config().allowlist.routes().len();
                let apis = proxy.config().allowlist.family_names();
                self.proxy.store(Arc::new(proxy));
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(trigger, routes, apis, "configuration reloaded");
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
    pub(crate) fn reload_if_changed(&self) -> Option<bool> {
        let now = self.fingerprint_now();
        if *self.lock_fingerprint() == now {
            return None;
        }
        Some(self.reload("file changed"))
    }

    /// Runs until `stop` is cancelled: SIGHUP, and a look at the files every
    /// `reload.watch_interval` of the current configuration. A reload in progress at the
    /// stop finishes first.
    pub(crate) async fn watch(self: Arc<Self>, mut hangups: Hangups, stop: CancellationToken) {
        loop {
            let interval = self.proxy.load().config().reload.watch_interval;
            let tick = async {
                if interval.is_zero() {
                    std::future::pending::<()>().await;
                } else {
                    tokio::time::sleep(interval).await;
                }
            };
            tokio::select! {
                () = hangups.recv() => {
                    self.reload("SIGHUP");
                }
                () = tick => {
                    // Reading files blocks; keep it off the async workers.
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                }
                () = stop.cancelled() => return,
            }
        }
    }
    /// A digest of every watched file's content (the secret's bytes never leave this
    /// function, only their hash).
    fn fingerprint_now(&self) -> Vec<u8> {
        let current = self.proxy.load();
        let config = current.config();
        let channel_secrets = config
            .channels
            .iter()
            .map(|channel| channel.credentials.secret_file.clone());
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
        for path in paths.into_iter().chain(channel_secrets).flatten() {
            digest.update(path.as_os_str().as_encoded_bytes());
            match std::fs::read(&path).map(zeroize::Zeroizing::new) {
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
