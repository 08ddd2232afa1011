//! The `journal:` section into a typed [`JournalConfig`].

use super::raw::RawJournal;
use super::setting::Problems;
use super::{
    default_journal_path, duration, flag, number, JournalConfig, DEFAULT_JOURNAL_MAX_AGE,
    DEFAULT_JOURNAL_MAX_CALLS, DEFAULT_RECONCILE_TIMEOUT,
};
use std::time::Duration;

/// The longest a reconciliation may take: it holds a drain and an app's answer.
const MAX_RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn validate(
    raw: &RawJournal,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> JournalConfig {
    // Without a state directory the path stays empty, and opening the journal at start
    // fails naming journal.path (never a file in the working directory).
    let path = match &raw.path {
        Some(setting) => setting.value.clone(),
        None => default_journal_path(env).unwrap_or_default(),
    };
    if raw
        .path
        .as_ref()
        .is_some_and(|setting| setting.value.as_os_str().is_empty())
    {
        problems.about(&raw.path, "journal.path", "must name a file");
    }
    let max_age = raw
        .max_age
        .as_ref()
        .map_or(DEFAULT_JOURNAL_MAX_AGE, |setting| setting.value.0);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::default_journal_path;
    use std::path::PathBuf;

    fn path_with(pairs: &[(&str, &str)]) -> Option<PathBuf> {
        default_journal_path(&|key: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_default_journal_is_in_a_state_directory_never_the_working_directory() {
        let all = [
            ("STATE_DIRECTORY", "/var/lib/linepay-sidecar:/var/lib/other"),
            ("XDG_STATE_HOME", "/home/shop/.state"),
            ("HOME", "/home/shop"),
        ];
        assert_eq!(
            path_with(&all),
            Some("/var/lib/linepay-sidecar/journal.sqlite3".into())
        );
        assert_eq!(
            path_with(&all[1..]),
            Some("/home/shop/.state/linepay-sidecar/journal.sqlite3".into())
        );
        assert_eq!(
            path_with(&all[2..]),
            Some("/home/shop/.local/state/linepay-sidecar/journal.sqlite3".into())
        );
        // Relative values are the working directory in disguise: skipped.
        assert_eq!(
            path_with(&[
                ("STATE_DIRECTORY", "state"),
                ("XDG_STATE_HOME", "./s"),
                ("HOME", "/home/shop")
            ]),
            Some("/home/shop/.local/state/linepay-sidecar/journal.sqlite3".into())
        );
        assert_eq!(path_with(&[("HOME", "")]), None);
    }
}
