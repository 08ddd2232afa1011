//! The `journal:` section into a typed [`JournalConfig`].

use super::raw::RawJournal;
use super::setting::Problems;
use super::{
    duration, flag, number, JournalConfig, DEFAULT_JOURNAL_MAX_AGE, DEFAULT_JOURNAL_MAX_CALLS,
    DEFAULT_JOURNAL_PATH, DEFAULT_RECONCILE_TIMEOUT,
};
use std::path::PathBuf;
use std::time::Duration;

/// The longest a reconciliation may take: it holds a drain and an app's answer.
const MAX_RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn validate(raw: &RawJournal, problems: &mut Problems) -> JournalConfig {
    let path = raw
        .path
        .as_ref()
        .map_or_else(|| PathBuf::from(DEFAULT_JOURNAL_PATH), |s| s.value.clone());
    if path.as_os_str().is_empty() {
        problems.about(&raw.path, "journal.path", "must name a file");
    }
    let max_age = duration(&raw.max_age, DEFAULT_JOURNAL_MAX_AGE);
    if max_age.is_zero() {
        problems.about(&raw.max_age, "journal.max_age", "must be above 0");
    }
    let max_calls = number(&raw.max_calls, DEFAULT_JOURNAL_MAX_CALLS);
    if max_calls == 0 {
        problems.about(&raw.max_calls, "journal.max_calls", "must be above 0");
    }
    let reconcile_timeout = duration(&raw.reconcile_timeout, DEFAULT_RECONCILE_TIMEOUT);
    if reconcile_timeout.is_zero() || reconcile_timeout > MAX_RECONCILE_TIMEOUT {
        problems.about(
            &raw.reconcile_timeout,
            "journal.reconcile_timeout",
            "must be between 1ms and 60s",
        );
    }
    JournalConfig {
        enabled: flag(&raw.enabled, true),
        path,
        max_age,
        max_calls,
        reconcile: flag(&raw.reconcile, true),
        reconcile_timeout,
    }
}
