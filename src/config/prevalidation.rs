//! The `prevalidation:` section: the default mode and the per-route modes, each route
//! named by a rule table's key (`payments/request`).

use super::raw::RawPrevalidation;
use super::setting::Problems;
use crate::validate::{self, Mode, PrevalidationConfig};

pub(super) fn validate(raw: &RawPrevalidation, problems: &mut Problems) -> PrevalidationConfig {
    let mut config = PrevalidationConfig::default();
    if let Some(mode) = &raw.mode {
        match Mode::parse(&mode.value) {
            Some(parsed) => config.mode = parsed,
            None => problems.at(
                &mode.origin,
                "prevalidation.mode",
                format!("`{}` is not off, warn or enforce", mode.value.trim()),
            ),
        }
    }
    for (key, entry) in &raw.routes {
        let Some(table) = validate::table_by_key(key.trim_start_matches('/')) else {
            let known: Vec<&str> = validate::TABLES.iter().map(|table| table.key).collect();
            problems.at(
                &entry.origin,
                "prevalidation.routes",
                format!(
                    "`{key}` has no rules; name a route by its template after the version: {}",
                    known.join(", ")
                ),
            );
            continue;
        };
        let Some(mode) = &entry.value.mode else {
            problems.at(
                &entry.origin,
                "prevalidation.routes",
                format!("`{key}` needs a `mode`"),
            );
            continue;
        };
        match Mode::parse(&mode.value) {
            Some(parsed) => {
                config.routes.insert(table.key.to_owned(), parsed);
            }
            None => problems.at(
                &mode.origin,
                "prevalidation.routes",
                format!("`{}` is not off, warn or enforce", mode.value.trim()),
            ),
        }
    }
    config
}
