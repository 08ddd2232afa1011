//! One configured value and where it came from: a line of the YAML file, an environment
//! variable or a flag. Every problem message names that origin, so "sidecar.yaml:12:
//! upstream.url: ..." and "--upstream: ..." come from the same code.

use super::units::{
    parse_duration, parse_rate, parse_retention, ConfigDuration, ConfigRate, ConfigRetention,
};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;

/// Where a value came from. Lower in this list loses: a flag beats the environment,
/// which beats the file ([`super::sources`] applies them in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A line of the YAML file (the file's name is the problem collector's).
    File { line: u64 },
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, by its long name with the dashes (`--upstream`).
    Flag(String),
}

impl Origin {
    /// Where a value set by a flag or variable came from, as a user would write it.
    pub(crate) fn describe(&self, file: &str) -> String {
        match self {
            Origin::File { line } => format!("{file}:{line}"),
            Origin::Env(name) => name.clone(),
            Origin::Flag(name) => name.clone(),
        }
    }

    /// What a problem with `key`'s value starts with: `sidecar.yaml:12: upstream.url`,
    /// or the flag or variable alone (its name says which key it set).
    pub(crate) fn prefix(&self, file: &str, key: &str) -> String {
        match self {
            Origin::File { .. } => format!("{}: {key}", self.describe(file)),
            Origin::Env(_) | Origin::Flag(_) => self.describe(file),
        }
    }
}

/// A value with its origin. Deserialized from YAML it records the line; set from a flag
/// or variable it records that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) origin: Origin,
}

impl<T> Setting<T> {
    pub(crate) fn new(value: T, origin: Origin) -> Self {
        Setting { value, origin }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Setting<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<T>::deserialize(deserializer)?;
        Ok(Setting {
            value: spanned.value,
            origin: Origin::File {
                line: spanned.referenced.line(),
            },
        })
    }
}

/// How many values a flag takes, derived from the key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arity {
    /// A switch: present means true (`--v2-legacy`).
    Switch,
    /// One value.
    One,
    /// Repeatable (`--egress-pin A --egress-pin B`).
    Many,
}

/// A value that a flag or an environment variable can give as text. Each type parses
/// the way its YAML form does, with the same units and messages.
pub(crate) trait FromTexts: Sized {
    const ARITY: Arity;
    /// What `--help` shows for the value.
    const VALUE_NAME: &'static str;
    fn from_texts(texts: &[String], origin: &Origin) -> Result<Self, String>;
}

fn one(texts: &[String]) -> Result<&str, String> {
    match texts {
        [text] => Ok(text),
        _ => Err("takes exactly one value".to_owned()),
    }
}

impl FromTexts for String {
    const ARITY: Arity = Arity::One;
    const VALUE_NAME: &'static str = "TEXT";
    fn from_texts(texts: &[String], _: &Origin) -> Result<Self, String> {
        one(texts).map(str::to_owned)
    }
}

impl FromTexts for PathBuf {
    const ARITY: Arity = Arity::One;
    const VALUE_NAME: &'static str = "FILE";
    fn from_texts(texts: &[String], _: &Origin) -> Result<Self, String> {
        one(texts).map(PathBuf::from)
    }
}

impl FromTexts for bool {
    const ARITY: Arity = Arity::Switch;
    const VALUE_NAME: &'static str = "BOOL";
    fn from_texts(texts: &[String], _: &Origin) -> Result<Self, String> {
        match one(texts)?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            other => Err(format!("`{other}` is not true or false")),
        }
    }
}

/// Whole numbers (sizes, counts, bursts), parsed the same way whatever their width.
macro_rules! whole_number_from_texts {
    ($($number:ty),*) => {$(
        impl FromTexts for $number {
            const ARITY: Arity = Arity::One;
            const VALUE_NAME: &'static str = "NUMBER";
            fn from_texts(texts: &[String], _: &Origin) -> Result<Self, String> {
                let text = one(texts)?;
                text.trim()
                    .parse()
                    .map_err(|_| format!("`{text}` is not a whole number"))
            }
        }
    )*};
}

whole_number_from_texts!(usize, u32);

impl FromTexts for ConfigDuration {
    const ARITY: Arity = Arity::One;
    const VALUE_NAME: &'static str = "DURATION";
    fn from_texts(texts: &[String], _: &Origin) -> Result<Self, String> {
        parse_duration(one(texts)?).map(ConfigDuration)
    }
}

impl FromTexts for ConfigRetention {
    const ARITY: Arity = Arity::One;
    const VALUE_NAME: &'static str = "DURATION";
    fn from_texts(texts: &[String], _: &Origin) -> Result<Self, String> {
        parse_retention(one(texts)?).map(ConfigRetention)
    }
}

impl FromTexts for ConfigRate {
    const ARITY: Arity = Arity::One;
    const VALUE_NAME: &'static str = "RATE";
    fn from_texts(texts: &[String], _: &Origin) -> Result<Self, String> {
        parse_rate(one(texts)?).map(ConfigRate)
    }
}

/// A key that exists only to be refused with a useful message (the channel secret in
/// the YAML): whatever it holds is never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Refused)
    }
}

impl FromTexts for Refused {
    const ARITY: Arity = Arity::One;
    const VALUE_NAME: &'static str = "-";
    fn from_texts(_: &[String], _: &Origin) -> Result<Self, String> {
        Err("is never set this way".to_owned())
    }
}

/// A list whose every entry keeps its own origin (a YAML line each, or the flag).
impl FromTexts for Vec<Setting<String>> {
    const ARITY: Arity = Arity::Many;
    const VALUE_NAME: &'static str = "VALUE";
    fn from_texts(texts: &[String], origin: &Origin) -> Result<Self, String> {
        Ok(texts
            .iter()
            .map(|text| Setting::new(text.clone(), origin.clone()))
            .collect())
    }
}

/// Problems found while turning the sources into a [`super::Config`]: every one is
/// collected (a user fixes them all in one go), each prefixed with its origin and key.
#[derive(Debug)]
pub(crate) struct Problems {
    file: String,
    list: Vec<String>,
}

impl Problems {
    /// `file` names the YAML file in `file:line` prefixes.
    pub(crate) fn new(file: &str) -> Self {
        Problems {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    /// A problem that belongs to no one value (two keys that disagree, say).
    pub(crate) fn push(&mut self, problem: impl Into<String>) {
        self.list.push(problem.into());
    }

    /// A problem with the value of `key` that came from `origin`.
    pub(crate) fn at(&mut self, origin: &Origin, key: &str, problem: impl fmt::Display) {
        let prefix = origin.prefix(&self.file, key);
        self.list.push(format!("{prefix}: {problem}"));
    }

    /// A problem with the value of `key`, named at its origin when it was set (a
    /// default that is wrong has none).
    pub(crate) fn about<T>(
        &mut self,
        setting: &Option<Setting<T>>,
        key: &str,
        problem: impl fmt::Display,
    ) {
        match setting {
            Some(setting) => self.at(&setting.origin, key, problem),
            None => self.list.push(format!("{key}: {problem}")),
        }
    }

    /// A problem at `origin` whose message already names what it is about.
    pub(crate) fn at_origin(&mut self, origin: &Origin, problem: impl fmt::Display) {
        self.list
            .push(format!("{}: {problem}", origin.describe(&self.file)));
    }

    /// Keeps an `Ok` value; records an `Err` against `key` at the setting's origin.
    pub(crate) fn check<T, U>(
        &mut self,
        setting: &Setting<U>,
        key: &str,
        result: Result<T, String>,
    ) -> Option<T> {
        result
            .map_err(|problem| self.at(&setting.origin, key, problem))
            .ok()
    }

    /// Keeps an `Ok` value; records each problem of an `Err` as it is.
    pub(crate) fn take<T>(&mut self, result: Result<T, Vec<String>>) -> Option<T> {
        result
            .map_err(|mut found| self.list.append(&mut found))
            .ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn into_list(self) -> Vec<String> {
        self.list
    }
}

// Problems the YAML reader finds but can read past (an unknown key, a duration without
// its unit, a rate without its period): serde stops at the first error, and a user should
// see every problem of the file at once. A value that does not parse leaves its problem
// in `PENDING` and a stand-in value; the section that asked for it unsets the key, adds
// the key and the line to the problem and moves it to `FOUND`, which `from_yaml_str` empties before and after reading.
thread_local! {
    static PENDING: RefCell<Option<(String, StandIn)>> = const { RefCell::new(None) };
    static FOUND: RefCell<Vec<(Origin, String)>> = const { RefCell::new(Vec::new()) };
}

/// What becomes of the stand-in value of a value that did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StandIn {
    /// Unset the key, as if absent: its default applies (a stand-in duration could
    /// contradict another key, a connect timeout against a read timeout).
    Unset,
    /// Keep it: unsetting would raise a problem of its own (a bucket without its rate).
    Keep,
}

/// A value's problem, for the key being read to claim (see [`claim_pending`]).
pub(crate) fn defer_value_problem(problem: String, stand_in: StandIn) {
    PENDING.with(|pending| *pending.borrow_mut() = Some((problem, stand_in)));
}

/// Files the problem the value of `key` (read at `line`) left, if any; true if the key
/// is to be unset.
pub(crate) fn claim_pending(key: &str, line: u64) -> bool {
    match PENDING.with(|pending| pending.borrow_mut().take()) {
        Some((problem, stand_in)) => {
            defer_problem(line, format!("{key}: {problem}"));
            stand_in == StandIn::Unset
        }
        None => false,
    }
}

/// A problem at `line` of the file being read.
pub(crate) fn defer_problem(line: u64, problem: String) {
    FOUND.with(|found| found.borrow_mut().push((Origin::File { line }, problem)));
}

/// Empties the problems found so far (before a file is read, and after, to keep them).
pub(crate) fn take_deferred() -> Vec<(Origin, String)> {
    PENDING.with(|pending| pending.borrow_mut().take());
    FOUND.with(|found| std::mem::take(&mut *found.borrow_mut()))
}
