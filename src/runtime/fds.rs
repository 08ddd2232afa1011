//! File descriptors: at start the sidecar makes sure it may open as many as its caps
//! allow, so the connection cap (`503 overloaded`) is reached before the descriptor
//! limit (where accept fails and the app gets no answer at all).
//!
//! What it needs: one per app connection (`request.max_connections`), one per upstream
//! connection (at most one per call in flight, plus the idle pool), the admin port's
//! cap, and a reserve for listeners, the runtime, files read on reload and DNS. The soft
//! `RLIMIT_NOFILE` is raised to that (never above the hard limit, which only root may
//! raise); when the hard limit is too low the sidecar refuses to start and says what to
//! change.

use crate::admin::MAX_ADMIN_CONNECTIONS;
use crate::config::Config;
use rlimit::Resource;

/// Listeners, the runtime's own descriptors (epoll, eventfd, signals), stdio, files read
/// on reload, DNS sockets and the `egress.expect_ip` check.
const RESERVE: u64 = 64;

/// Why the descriptor limit cannot be made to fit.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("request.max_connections {max_connections} needs {needed} file descriptors, but the hard limit (RLIMIT_NOFILE) is {hard}: raise it (systemd: LimitNOFILE={needed} or more; a shell: `ulimit -Hn {needed}`; Docker: --ulimit nofile={needed}:{needed}) or lower request.max_connections")]
    HardLimitTooLow {
        max_connections: usize,
        needed: u64,
        hard: u64,
    },
    #[error("cannot read or raise RLIMIT_NOFILE: {0}")]
    System(std::io::Error),
}

/// Descriptors a configuration needs at most.
pub(crate) fn needed(config: &Config) -> u64 {
    let connections = config.request.max_connections as u64;
    // Each call in flight holds at most one upstream connection; idle ones stay pooled.
    let upstream = connections + config.upstream.pool_max_idle_per_host as u64;
    connections + upstream + MAX_ADMIN_CONNECTIONS as u64 + RESERVE
}

/// Raises the soft limit to what `config` needs; returns the soft limit in force.
pub(crate) fn ensure(config: &Config) -> Result<u64, FdLimitError> {
    let needed = needed(config);
    let (soft, hard) = Resource::NOFILE.get().map_err(FdLimitError::System)?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        return Err(FdLimitError::HardLimitTooLow {
            max_connections: config.request.max_connections,
            needed,
            hard,
        });
    }
    Resource::NOFILE
        .set(needed, hard)
        .map_err(FdLimitError::System)?;
    tracing::info!(
        from = soft,
        to = needed,
        hard,
        "raised the soft file-descriptor limit (RLIMIT_NOFILE) to what request.max_connections needs"
    );
    Ok(needed)
}
