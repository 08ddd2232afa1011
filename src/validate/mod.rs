//! Pre-validation: the app's request body checked against LINE Pay's documented fields,
//! types, lengths and arithmetic before it is signed, so a mistake is named (JSON path,
//! rule, and the `returnCode` LINE Pay would answer) instead of costing a round trip and
//! a bare `2102`.
//!
//! Policy only, no I/O: the rules are data, one [`Table`] per route, in one file per API
//! family (`online.rs`, `offline.rs`); `schema.rs` holds the rule language and the walker.
//! A table is keyed by the route's template after its version prefix
//! (`payments/{transactionId}/confirm`), so one table serves `/v3` and `/v4`, and any
//! route an allowlist adds later with the same shape; parameter names are not compared
//! (`{orderId}` and `{id}` are the same segment).
//!
//! # Modes
//! Per route, `off`, `warn` or `enforce` ([`Mode`]). `enforce` refuses a body with a
//! finding (400 `invalid_request`, `crate::error`); `warn` forwards it byte for byte and
//! logs and counts the findings; `off` does not look at the body. A body without
//! findings is always forwarded byte for byte: validation reads, never rewrites.

#[cfg(test)]
mod differential;
mod node;
mod offline;
mod online;
mod scan;
mod schema;
mod stream;
#[cfg(test)]
mod structured;
#[cfg(test)]
mod tests;

pub(crate) use schema::{Finding, Rule, Table};

use std::collections::BTreeMap;
use std::fmt;

/// Every route's rules.
pub(crate) const TABLES: &[&Table] = &[
    &online::REQUEST,
    &online::CONFIRM,
    &online::CAPTURE,
    &online::VOID,
    &online::REFUND,
    &online::PREAPPROVED_PAY,
    &online::EXPIRE,
    &offline::ONE_TIME_KEY_PAY,
    &offline::ORDER_CAPTURE,
    &offline::ORDER_REFUND,
    &offline::ORDER_VOID,
];

/// What pre-validation does on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// The body is not looked at.
    Off,
    /// Findings are logged and counted; the call is forwarded as sent.
    #[default]
    Warn,
    /// A body with a finding is refused before it is signed; nothing reaches LINE Pay.
    Enforce,
}

impl Mode {
    pub(crate) fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Some(Mode::Off),
            "warn" => Some(Mode::Warn),
            "enforce" => Some(Mode::Enforce),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Warn => "warn",
            Mode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The typed `prevalidation:` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PrevalidationConfig {
    /// The mode of every route without its own.
    pub(crate) mode: Mode,
    /// Per-route modes, keyed by a table's key (`payments/request`).
    pub(crate) routes: BTreeMap<String, Mode>,
}

impl PrevalidationConfig {
    /// The mode and rules for a route template (`/v3/payments/request`); `None` when
    /// the route has no rules or its mode is `off`.
    pub(crate) fn for_template(&self, template: &str) -> Option<(Mode, &'static Table)> {
        let table = table_for(template)?;
        let mode = self.routes.get(table.key).copied().unwrap_or(self.mode);
        (mode != Mode::Off).then_some((mode, table))
    }
}

/// The table whose key is `template` after its `/v3/` or `/v4/` prefix.
pub(crate) fn table_for(template: &str) -> Option<&'static Table> {
    let rest = template
        .strip_prefix("/v3/")
        .or_else(|| template.strip_prefix("/v4/"))?;
    TABLES
        .iter()
        .copied()
        .find(|table| same_shape(table.key, rest))
}

/// The table with exactly this key, for the config's per-route modes.
pub(crate) fn table_by_key(key: &str) -> Option<&'static Table> {
    TABLES
        .iter()
        .copied()
        .find(|table| same_shape(table.key, key))
}

/// Segment by segment; a `{parameter}` matches a `{parameter}` of any name.
fn same_shape(key: &str, template: &str) -> bool {
    // Most templates are a key as written (`payments/request`): no segment to split.
    if key == template {
        return true;
    }
    let is_param = |segment: &str| segment.starts_with('{') && segment.ends_with('}');
    let mut left = key.split('/');
    let mut right = template.split('/');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (is_param(a) && is_param(b)) => {}
            _ => return false,
        }
    }
}

/// The findings of `body` against `table`; empty when it passes. A body the streaming
/// pass (`stream`) finds clean costs that pass alone; any other is walked as a tree,
/// which writes the findings.
pub(crate) fn check(table: &Table, body: &[u8]) -> Vec<Finding> {
    if passes(table, body) {
        return Vec::new();
    }
    schema::check(table, body)
}

/// Whether the streaming pass alone finds `body` clean against `table` (the proxy's fast
/// path). Its `true` also means `body` is one JSON value that `serde_json` reads as
/// `IgnoredAny` reads it: the pass reads every byte with a strict JSON reader (`scan`)
/// that accepts nothing `serde_json` refuses (UTF-8, escapes and surrogate pairs, control
/// bytes, the number grammar and numbers past f64, depth bounded well inside serde_json's,
/// nothing after the value), so the proxy need not parse the body a second time for its
/// own JSON check, and the walk could have built its tree.
/// Debug builds check every `true` against the walk, so the whole test suite runs both.
pub(crate) fn passes(table: &Table, body: &[u8]) -> bool {
    let passes = stream::passes(table, body);
    debug_assert!(
        !passes || schema::check(table, body).is_empty(),
        "pre-validation's fast pass passed a body the walk finds fault with"
    );
    passes
}

/// The findings of `body` by the tree walk alone: what [`check`] answers once
/// [`passes`] has said `false`.
pub(crate) fn walk(table: &Table, body: &[u8]) -> Vec<Finding> {
    schema::check(table, body)
}

/// What pre-validation finds in `body` for the route `template` (`/v3/payments/request`),
/// each finding as its message (`$.userId: not a LINE Pay field (LINE Pay would answer
/// 2102)`); `None` when the route has no rules. For the benches and for tools; the
/// request path uses [`check`].
pub fn findings(template: &str, body: &[u8]) -> Option<Vec<String>> {
    let table = table_for(template)?;
    Some(check(table, body).iter().map(Finding::to_string).collect())
}

/// [`findings`] by the tree walk alone, without the streaming pass first: the bench's
/// before/after in one run (`benches/validate.rs`).
#[doc(hidden)]
pub fn findings_by_walk(template: &str, body: &[u8]) -> Option<Vec<String>> {
    let table = table_for(template)?;
    Some(
        schema::check(table, body)
            .iter()
            .map(Finding::to_string)
            .collect(),
    )
}

/// The refusal message: the findings, `; `-separated.
pub(crate) fn describe(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(Finding::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every `route_family` label a finding can carry, for the metric's pre-created series.
pub(crate) fn families() -> Vec<&'static str> {
    let mut families: Vec<&'static str> = TABLES.iter().map(|table| table.family).collect();
    families.sort_unstable();
    families.dedup();
    families
}
