//! The Redis client: one multiplexed connection (redis-rs), shared by every call of
//! every worker, reconnected in the background, each command bounded in time.
//!
//! # No command is ever sent twice
//! A command is written once. When the connection drops, the command in flight fails
//! (the caller sees [`StateError::Connection`], or [`StateError::Timeout`] when the
//! answer is late) and the connection is replaced **for the next commands only**: an
//! `INCR`, a claim or a GCRA step sent twice would be a double count or a stolen lease,
//! and after a lost answer nobody can tell whether the first one was applied. Client
//! libraries that replay queued commands after a reconnect by default (`fred`'s
//! reconnect policy) were set aside for that reason; redis-rs's `ConnectionManager`
//! does not replay either, but it reconnects on whatever runtime saw the failure (a
//! proxy worker's), so this client keeps its own reconnect task on the main runtime.
//! The one second send is `EVAL` after `EVALSHA` answered `NOSCRIPT`, which Redis
//! answers without running anything.
//!
//! # Slow or down
//! Each command waits at most `state.redis.command_timeout`. While there is no
//! connection, a command fails at once with [`StateError::Unavailable`] (no call waits
//! for a Redis that is known to be down) and one background task reconnects, backing off
//! up to a second between attempts. Several timeouts in a row replace the connection
//! too: a peer that vanished without a reset looks exactly like that.
//!
//! # Metrics
//! `linepay_sidecar_state_duration_seconds{operation}` (every answered command),
//! `linepay_sidecar_state_errors_total{kind}`, `linepay_sidecar_state_up`.

use super::RedisConfig;
use crate::throttle::Throttle;
use arc_swap::ArcSwapOption;
use prometheus::{HistogramVec, IntCounterVec, IntGauge};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, IntoConnectionInfo, PushInfo, PushKind,
    RedisError,
};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Timeouts in a row after which the connection is replaced.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 5;
/// The first pause between two connection attempts; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Connection failures are logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Every `kind` of `linepay_sidecar_state_errors_total`.
pub(crate) const ERROR_KINDS: &[&str] = &[
    "timeout",
    "unavailable",
    "connection",
    "server",
    "protocol",
    "data_lost",
];

/// The client's metrics, registered in `crate::metrics`.
#[derive(Clone)]
pub(crate) struct StateMetrics {
    /// By operation (a fixed name per call site: `limit`, ...).
    pub(crate) duration: HistogramVec,
    /// By [`StateError::kind`].
    pub(crate) errors: IntCounterVec,
    /// 1 while connected.
    pub(crate) up: IntGauge,
}

/// What went wrong with one Redis command. Every variant means "no answer to rely on":
/// what the caller does then is its own rule (docs/redis.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StateError {
    #[error("Redis did not answer within state.redis.command_timeout ({0:?})")]
    Timeout(Duration),
    #[error("no connection to Redis (reconnecting in the background)")]
    Unavailable,
    #[error("the connection to Redis failed: {0}")]
    Connection(String),
    /// An error answer: `NOAUTH`, `WRONGPASS`, `OOM`, `READONLY`, `BUSY`, a script error.
    #[error("Redis refused the command: {0}")]
    Server(String),
    #[error("Redis answered something unexpected: {0}")]
    Protocol(String),
    #[error("cannot set up the Redis client: {0}")]
    Setup(String),
    /// `NOSCRIPT`: `EVALSHA` of a script this Redis does not have (nothing ran);
    /// [`RedisClient::run_script`] sends it by its text then.
    #[error("Redis does not know the script (NOSCRIPT)")]
    NoScript,
    /// The money-call guards' records are gone (Redis restarted without its data, or a
    /// replica without them took over): claims are refused until every claim the lost
    /// records may have held has ended.
    #[error("Redis lost the shared money-call records (restarted without persistence, or failed over); money calls are refused for {0:?}")]
    DataLost(Duration),
}

impl StateError {
    /// The `kind` label (one of [`ERROR_KINDS`]).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            StateError::Timeout(_) => "timeout",
            StateError::Unavailable => "unavailable",
            StateError::Connection(_) => "connection",
            StateError::Server(_) | StateError::NoScript => "server",
            StateError::Protocol(_) | StateError::Setup(_) => "protocol",
            StateError::DataLost(_) => "data_lost",
        }
    }

    fn from_redis(error: &RedisError) -> StateError {
        if error.code() == Some("NOSCRIPT") {
            StateError::NoScript
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
        {
            StateError::Connection(error.to_string())
        } else if error.code().is_some() {
            StateError::Server(error.to_string())
        } else {
            StateError::Protocol(error.to_string())
        }
    }

    /// Whether the connection this came from is gone and must be replaced.
    fn loses_connection(&self) -> bool {
        matches!(self, StateError::Connection(_))
    }
}

/// One connection, numbered so that news of a disconnect reaches only its own.
struct Live {
    generation: u64,
    connection: MultiplexedConnection,
}

/// The shared client; cheap to clone.
#[derive(Clone)]
pub(crate) struct RedisClient(Arc<Inner>);

struct Inner {
    client: Client,
    connection_config: AsyncConnectionConfig,
    connection: ArcSwapOption<Live>,
    /// The generation of the next connection (which one a disconnect is about).
    next_generation: AtomicU64,
    /// Set while the reconnect task runs, so there is one at a time.
    connecting: AtomicBool,
    timeouts_in_a_row: AtomicU32,
    /// The main runtime: the connection's driver and the reconnect task live there, not
    /// on the proxy worker whose call noticed a failure.
    runtime: tokio::runtime::Handle,
    command_timeout: Duration,
    metrics: StateMetrics,
    log: Throttle,
}

impl RedisClient {
    /// A client for `config`; it connects in the background on the current runtime,
    /// which must outlive every call (the main runtime). Fails only on settings redis-rs
    /// refuses (the config has checked them already).
    pub(crate) fn start(
        config: &RedisConfig,
        metrics: StateMetrics,
    ) -> Result<RedisClient, StateError> {
        let setup = |error: RedisError| StateError::Setup(error.to_string());
        let mut info = config.url.as_str().into_connection_info().map_err(setup)?;
        if let Some(password) = &config.password {
            let password = std::str::from_utf8(password.expose())
                .map_err(|_| StateError::Setup("the password is not UTF-8".to_owned()))?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        // RESP3 (Redis 6 and later, every Valkey): redis-rs reports a connection's end
        // as a push only on RESP3, and that is what replaces a dead connection before a
        // call has to fail on it.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        info = info.set_redis_settings(settings);
        let client = match &config.ca_pem {
            Some(pem) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(info),
        }
        .map_err(setup)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StateError::Setup("no tokio runtime to connect on".to_owned()))?;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            // The caller's own timeout bounds every command (see `query`).
            .set_response_timeout(None);
        metrics.up.set(0);
        let client = RedisClient(Arc::new(Inner {
            client,
            connection_config,
            connection: ArcSwapOption::empty(),
            next_generation: AtomicU64::new(0),
            connecting: AtomicBool::new(false),
            timeouts_in_a_row: AtomicU32::new(0),
            runtime,
            command_timeout: config.command_timeout,
            metrics,
            log: Throttle::new(LOG_INTERVAL),
        }));
        client.reconnect(None);
        Ok(client)
    }

    /// Sends `command` once and reads its answer, within the command timeout. Counted
    /// under `operation` (a fixed name per call site).
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        operation: &'static str,
        command: &Cmd,
    ) -> Result<T, StateError> {
        let inner = &self.0;
        let Some(connection) = inner.connection.load_full() else {
            self.reconnect(None);
            return Err(self.failed(StateError::Unavailable));
        };
        let mut handle = connection.connection.clone();
        let started = Instant::now();
        let answer =
            tokio::time::timeout(inner.command_timeout, command.query_async::<T>(&mut handle))
                .await;
        match answer {
            Ok(Ok(value)) => {
                inner.timeouts_in_a_row.store(0, Ordering::Relaxed);
                inner
                    .metrics
                    .duration
                    .with_label_values(&[operation])
                    .observe(started.elapsed().as_secs_f64());
                Ok(value)
            }
            Ok(Err(error)) => {
                let error = StateError::from_redis(&error);
                if error.loses_connection() {
                    self.reconnect(Some(&connection));
                } else {
                    // Redis answered: the connection works.
                    inner.timeouts_in_a_row.store(0, Ordering::Relaxed);
                }
                Err(self.failed(error))
            }
            Err(_elapsed) => {
                let in_a_row = inner.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if in_a_row >= TIMEOUTS_BEFORE_RECONNECT {
                    self.reconnect(Some(&connection));
                }
                Err(self.failed(StateError::Timeout(inner.command_timeout)))
            }
        }
    }

    /// Runs a Lua script by its SHA1 (`EVALSHA`, one round trip); when this Redis does
    /// not know it yet (`NOSCRIPT`: nothing ran), by its text (`EVAL`, which also caches
    /// it for the next `EVALSHA`).
    pub(crate) async fn run_script<T: FromRedisValue>(
        &self,
        operation: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, StateError> {
        let by_hash = script.command("EVALSHA", &script.hash, keys, args);
        match self.query(operation, &by_hash).await {
            Err(StateError::NoScript) => {
                let by_text = script.command("EVAL", script.code, keys, args);
                self.query(operation, &by_text).await
            }
            other => other,
        }
    }

    /// Counts a failed command by kind (the guard that sent it logs what it did instead).
    fn failed(&self, error: StateError) -> StateError {
        if error == StateError::NoScript {
            // Expected once per script after a Redis restart; answered by `EVAL`.
            return error;
        }
        self.0
            .metrics
            .errors
            .with_label_values(&[error.kind()])
            .inc();
        error
    }

    /// Drops `broken` (when it is still the current connection) and starts the reconnect
    /// task unless it runs already.
    fn reconnect(&self, broken: Option<&Arc<Live>>) {
        let inner = &self.0;
        if let Some(broken) = broken {
            let previous = inner.connection.compare_and_swap(broken, None);
            let swapped = previous
                .as_ref()
                .is_some_and(|previous| Arc::ptr_eq(previous, broken));
            if swapped {
                inner.metrics.up.set(0);
                tracing::warn!("the connection to Redis failed; reconnecting");
            }
        }
        if inner.connection.load().is_some() || inner.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        inner
            .runtime
            .spawn(async move { this.connect_until_up().await });
    }

    async fn connect_until_up(self) {
        let inner = &self.0;
        let mut backoff = FIRST_BACKOFF;
        let mut failures: u64 = 0;
        loop {
            let generation = inner.next_generation.fetch_add(1, Ordering::Relaxed);
            // Told when the connection ends (Redis stopped, the network cut it), so it is
            // replaced at once rather than by the next command's failure.
            let config = inner
                .connection_config
                .clone()
                .set_push_sender(on_disconnect(Arc::downgrade(&self.0), generation));
            match inner
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(connection) => {
                    inner.timeouts_in_a_row.store(0, Ordering::Relaxed);
                    inner.connection.store(Some(Arc::new(Live {
                        generation,
                        connection,
                    })));
                    inner.metrics.up.set(1);
                    inner.connecting.store(false, Ordering::Release);
                    tracing::info!(
                        attempts = failures + 1,
                        "connected to Redis (state.redis.url)"
                    );
                    return;
                }
                Err(error) => {
                    failures += 1;
                    let error = StateError::from_redis(&error);
                    if let Some(suppressed) = inner.log.ready() {
                        tracing::warn!(
                            %error,
                            failed_attempts = failures,
                            suppressed,
                            "cannot connect to Redis (state.redis.url); retrying in the background"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// The push handler of connection `generation`: on its disconnect, drop it (if it is
/// still the current one) and reconnect.
fn on_disconnect(
    inner: Weak<Inner>,
    generation: u64,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        if push.kind != PushKind::Disconnection {
            return Ok(());
        }
        if let Some(inner) = inner.upgrade() {
            let client = RedisClient(inner);
            let current = client.0.connection.load_full();
            if let Some(current) = current.filter(|live| live.generation == generation) {
                client.reconnect(Some(&current));
            }
        }
        Ok(())
    }
}

/// A Lua script: its text and SHA1, computed once.
pub(crate) struct Script {
    code: &'static str,
    hash: String,
}

impl Script {
    pub(crate) fn new(code: &'static str) -> Script {
        Script {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    fn command(&self, verb: &str, head: &str, keys: &[&str], args: &[&[u8]]) -> Cmd {
        let mut command = redis::cmd(verb);
        command.arg(head).arg(keys.len());
        for key in keys {
            command.arg(*key);
        }
        for arg in args {
            command.arg(*arg);
        }
        command
    }
}
