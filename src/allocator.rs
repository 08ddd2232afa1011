//! The process's allocator: jemalloc, with its background thread on (issues #17, #20).
//!
//! Why not glibc's malloc: after a flood of 1,000 connections each holding ~120 KB
//! (scripts/memory-attack.py), glibc kept what the connections had used (its per-thread
//! arenas are trimmed only from their top, and the buffers freed last are rarely at
//! the top): RSS stayed at 35–89 MiB after every connection had closed, 3–9 × the idle
//! 10 MiB, and each round of the attack peaked higher than the one before.
//!
//! jemalloc gives freed pages back on its own clock (`dirty_decay_ms`), and its
//! background thread does that purging, so memory comes back even when the sidecar sits
//! idle after the flood (without it, jemalloc purges only as threads allocate). Both
//! are compiled in from `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`:
//! `background_thread:true,dirty_decay_ms:1000`; jemalloc's own default is 10 s, after
//! which RSS was still 1.3–2.3 × idle 12 s after the flood); the background thread is
//! also switched on at start in case a build went without that file. The figures,
//! before and after, are in docs/hardening.md ("Memory under the attack").
//!
//! Linux only (what the sidecar is built and deployed for); elsewhere the system
//! allocator stays. Safe code only: the control is `tikv_jemalloc_ctl`'s typed API.

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background purging thread; a failure is logged and the sidecar
/// runs on (memory is then purged as threads allocate).
pub(crate) fn return_freed_memory_in_the_background() {
    #[cfg(target_os = "linux")]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "cannot start the allocator's background thread; freed memory returns to the system only as calls allocate");
    }
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_options_of_cargo_config_are_compiled_in() {
        let options = tikv_jemalloc_ctl::config::malloc_conf::read().unwrap();
        assert!(options.contains("background_thread:true"), "{options}");
        assert!(options.contains("dirty_decay_ms:1000"), "{options}");
    }

    #[test]
    fn the_background_thread_runs() {
        super::return_freed_memory_in_the_background();
        assert!(tikv_jemalloc_ctl::background_thread::read().unwrap());
    }
}
