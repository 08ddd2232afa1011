//! Where values come from, and which wins: a flag over an environment variable over the
//! YAML file over the default. This is the one place that order is decided: the file is
//! read into the raw shape, then every key's environment variable is applied, then every
//! flag; the defaults fill what is still unset during validation.

use super::keys::{KeyDoc, Section};
use super::raw::RawConfig;
use super::setting::{Arity, Origin, Problems};

/// Values given as command-line flags, each naming the key it sets.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    flags: Vec<FlagValue>,
}

#[derive(Debug, Clone)]
struct FlagValue {
    key: String,
    flag: String,
    texts: Vec<String>,
}

impl Overrides {
    /// `key` set to `texts` by the flag `--flag` (the name is kept for messages).
    pub fn set(mut self, key: &str, flag: &str, texts: Vec<String>) -> Self {
        self.flags.retain(|existing| existing.key != key);
        self.flags.push(FlagValue {
            key: key.to_owned(),
            flag: format!("--{}", flag.trim_start_matches('-')),
            texts,
        });
        self
    }

    /// One value for `key` from its own flag.
    pub fn with(self, key: &str, value: impl Into<String>) -> Self {
        let flag = super::keys()
            .into_iter()
            .find(|doc| doc.path == key)
            .and_then(|doc| doc.flag())
            .unwrap_or(key)
            .to_owned();
        self.set(key, &flag, vec![value.into()])
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }
}

/// Applies the environment, then the flags, on top of the file.
pub(crate) fn layer(
    raw: &mut RawConfig,
    keys: &[KeyDoc],
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    for key in keys {
        let Some(name) = key.env() else { continue };
        let Some(text) = env(&name) else { continue };
        let texts = match key.arity {
            // A list in one variable: commas or spaces between the entries.
            Arity::Many => text
                .split([',', ' '])
                .filter(|part| !part.is_empty())
                .map(str::to_owned)
                .collect(),
            Arity::Switch | Arity::One => vec![text],
        };
        let origin = Origin::Env(name);
        if let Err(problem) = raw.set(&key.path, &texts, &origin) {
            problems.at(&origin, &key.path, problem);
        }
    }
    for value in &overrides.flags {
        let origin = Origin::Flag(value.flag.clone());
        if let Err(problem) = raw.set(&value.key, &value.texts, &origin) {
            problems.at(&origin, &value.key, problem);
        }
    }
}
