//! One definition per configuration key. [`config_section!`] turns a section's field list
//! into the serde struct the YAML is read into, the list of keys with their docs and flags
//! (which the CLI and the docs table are built from), and the setter a flag or an
//! environment variable goes through. Adding a key is one line in `raw.rs`, with its doc
//! comment and, if it has one, its flag.

use super::setting::{Arity, FromTexts, Origin, Setting};

/// A command-line flag that sets a key. Every such flag also reads an environment
/// variable: `env`, or `LINEPAY_SIDECAR_` and the key in capitals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlagSpec {
    pub(crate) long: &'static str,
    pub(crate) aliases: &'static [&'static str],
    pub(crate) env: Option<&'static str>,
}

/// One key as the docs and the CLI see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted path: `upstream.read_timeout`, `routes.allow[].path`,
    /// `limits.routes.<route>.rate`.
    pub path: String,
    /// The field's doc comment, one paragraph.
    pub doc: String,
    pub(crate) flag: Option<FlagSpec>,
    pub(crate) arity: Arity,
    pub(crate) value_name: &'static str,
}

impl KeyDoc {
    /// The flag's long name, without dashes.
    pub fn flag(&self) -> Option<&'static str> {
        self.flag.map(|flag| flag.long)
    }

    /// The flag's other names.
    pub fn aliases(&self) -> &'static [&'static str] {
        self.flag.map_or(&[], |flag| flag.aliases)
    }

    /// The environment variable that sets this key, for keys that have a flag.
    pub fn env(&self) -> Option<String> {
        let flag = self.flag?;
        Some(match flag.env {
            Some(name) => name.to_owned(),
            None => env_name(&self.path),
        })
    }
}

/// `LINEPAY_SIDECAR_` + the key in capitals, dots as underscores.
pub(crate) fn env_name(path: &str) -> String {
    format!(
        "LINEPAY_SIDECAR_{}",
        path.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

/// A YAML section: its keys, and how a flag or variable sets one of them.
pub(crate) trait Section: Default {
    fn keys(prefix: &str, out: &mut Vec<KeyDoc>);
    /// Sets the key at `path` (relative to this section) from text.
    fn set(&mut self, path: &str, texts: &[String], origin: &Origin) -> Result<(), String>;
}

/// Splits `a.b.c` into `a` and `b.c`.
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    path.split_once('.').unwrap_or((path, ""))
}

/// Joins a doc comment's lines into one paragraph.
pub(crate) fn paragraph(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn value_key<T: FromTexts>(
    out: &mut Vec<KeyDoc>,
    path: String,
    doc: &[&str],
    flag: Option<FlagSpec>,
) {
    out.push(KeyDoc {
        path,
        doc: paragraph(doc),
        flag,
        arity: T::ARITY,
        value_name: T::VALUE_NAME,
    });
}

pub(crate) fn set_value<T: FromTexts>(
    slot: &mut Option<Setting<T>>,
    rest: &str,
    texts: &[String],
    origin: &Origin,
) -> Result<(), String> {
    if !rest.is_empty() {
        return Err("is not a section".to_owned());
    }
    *slot = Some(Setting::new(T::from_texts(texts, origin)?, origin.clone()));
    Ok(())
}

macro_rules! field_type {
    (value $t:ty) => { Option<$crate::config::setting::Setting<$t>> };
    (section $t:ty) => { $t };
    (optional $t:ty) => { Option<$crate::config::setting::Setting<$t>> };
    (list $t:ty) => { Option<$crate::config::setting::Setting<Vec<$crate::config::setting::Setting<$t>>>> };
    (map $t:ty) => { std::collections::BTreeMap<String, $crate::config::setting::Setting<$t>> };
    (named $t:ty) => { std::collections::BTreeMap<String, $crate::config::setting::Setting<$t>> };
}

macro_rules! flag_spec {
    () => {
        None
    };
    (flag $long:literal $(alias $alias:literal)* $(env $env:literal)?) => {
        Some($crate::config::keys::FlagSpec {
            long: $long,
            aliases: &[$($alias),*],
            env: flag_spec!(@env $($env)?),
        })
    };
    (@env) => { None };
    (@env $env:literal) => { Some($env) };
}

macro_rules! field_keys {
    (value $t:ty, $out:expr, $path:expr, $doc:expr, $flag:expr) => {
        $crate::config::keys::value_key::<$t>($out, $path, $doc, $flag)
    };
    (section $t:ty, $out:expr, $path:expr, $doc:expr, $flag:expr) => {
        <$t as $crate::config::keys::Section>::keys(&format!("{}.", $path), $out)
    };
    (optional $t:ty, $out:expr, $path:expr, $doc:expr, $flag:expr) => {
        <$t as $crate::config::keys::Section>::keys(&format!("{}.", $path), $out)
    };
    (list $t:ty, $out:expr, $path:expr, $doc:expr, $flag:expr) => {
        <$t as $crate::config::keys::Section>::keys(&format!("{}[].", $path), $out)
    };
    (map $t:ty, $out:expr, $path:expr, $doc:expr, $flag:expr) => {
        <$t as $crate::config::keys::Section>::keys(&format!("{}.<route>.", $path), $out)
    };
    (named $t:ty, $out:expr, $path:expr, $doc:expr, $flag:expr) => {
        <$t as $crate::config::keys::Section>::keys(&format!("{}.<name>.", $path), $out)
    };
}

macro_rules! field_set {
    (value $t:ty, $slot:expr, $rest:expr, $texts:expr, $origin:expr) => {
        $crate::config::keys::set_value::<$t>(&mut $slot, $rest, $texts, $origin)
    };
    (section $t:ty, $slot:expr, $rest:expr, $texts:expr, $origin:expr) => {
        $crate::config::keys::Section::set(&mut $slot, $rest, $texts, $origin)
    };
    (optional $t:ty, $slot:expr, $rest:expr, $texts:expr, $origin:expr) => {
        $crate::config::keys::Section::set(
            &mut $slot
                .get_or_insert_with(|| {
                    $crate::config::setting::Setting::new(<$t>::default(), $origin.clone())
                })
                .value,
            $rest,
            $texts,
            $origin,
        )
    };
    (list $t:ty, $slot:expr, $rest:expr, $texts:expr, $origin:expr) => {
        Err("is a list: set it in the YAML file".to_owned())
    };
    (map $t:ty, $slot:expr, $rest:expr, $texts:expr, $origin:expr) => {
        Err("is a map: set it in the YAML file".to_owned())
    };
    (named $t:ty, $slot:expr, $rest:expr, $texts:expr, $origin:expr) => {
        Err("is a map: set it in the YAML file".to_owned())
    };
}

/// Defines a YAML section. Each field is `name: kind<Type> [flag "long" alias "a" env
/// "VAR"]`, kind one of `value` (a scalar, `Option<Setting<T>>`), `section` (a nested
/// section, always present), `optional` (a nested section whose presence matters),
/// `list` (a YAML list of sections), `map` (a YAML map of sections keyed by route),
/// `named` (a YAML map of sections keyed by a name the user chooses, e.g. a channel's).
macro_rules! config_section {
    (
        $(#[doc = $sdoc:literal])*
        $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $kind:ident < $ty:ty > $([ $($spec:tt)* ])?
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Default)]
        pub(crate) struct $name {
            $(
                $(#[doc = $doc])*
                pub(crate) $field: field_type!($kind $ty),
            )*
        }

        // By hand rather than derived: an unknown key, or a value that does not parse,
        // is noted with its line and the reading goes on (see `setting::claim_pending`),
        // so every problem of the file is reported at once.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const KEYS: &[&str] = &[$(stringify!($field)),*];
                struct SectionVisitor;
                impl<'de> serde::de::Visitor<'de> for SectionVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a section with the keys {}", KEYS.join(", "))
                    }
                    fn visit_unit<E: serde::de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut section = $name::default();
                        while let Some(key) = map.next_key::<serde_saphyr::Spanned<String>>()? {
                            let line = key.referenced.line();
                            match key.value.as_str() {
                                $( stringify!($field) => {
                                    section.$field = map.next_value()?;
                                    // A value that did not parse is noted; its stand-in
                                    // must not cause problems of its own.
                                    if $crate::config::setting::claim_pending(stringify!($field), line) {
                                        section.$field = Default::default();
                                    }
                                } )*
                                other => {
                                    $crate::config::setting::defer_problem(line, format!(
                                        "unknown key `{other}`; this section has {}",
                                        KEYS.join(", ")
                                    ));
                                    map.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(section)
                    }
                }
                deserializer.deserialize_struct(stringify!($name), KEYS, SectionVisitor)
            }
        }

        impl $crate::config::keys::Section for $name {
            fn keys(prefix: &str, out: &mut Vec<$crate::config::keys::KeyDoc>) {
                $(
                    field_keys!(
                        $kind $ty,
                        out,
                        format!("{prefix}{}", stringify!($field)),
                        &[$($doc),*],
                        flag_spec!($($($spec)*)?)
                    );
                )*
            }

            fn set(
                &mut self,
                path: &str,
                texts: &[String],
                origin: &$crate::config::setting::Origin,
            ) -> Result<(), String> {
                let (head, rest) = $crate::config::keys::split_path(path);
                match head {
                    $( stringify!($field) => field_set!($kind $ty, self.$field, rest, texts, origin), )*
                    _ => Err(format!("has no key `{head}`")),
                }
            }
        }
    };
}
