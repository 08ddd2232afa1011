//! The flags that mirror configuration keys, built from the key definitions in `raw.rs`:
//! each flag names the key it sets, so a key and its flag are one line.
//!
//! Clap is told nothing about environment variables here: `sources.rs` reads them for
//! every key, so the same precedence holds for a flag, a variable and a reload. `--help`
//! still names each flag's variable.

use super::keys;
use super::setting::Arity;
use super::Overrides;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Adds one flag per key that declares one.
pub fn add_flags(mut command: Command) -> Command {
    for key in keys() {
        let (Some(flag), Some(env)) = (key.flag, key.env()) else {
            continue;
        };
        let help = format!("{} (`{}`; also {env})", key.doc, key.path);
        let mut arg = Arg::new(key.path.clone())
            .long(flag.long)
            .visible_aliases(flag.aliases.iter().copied())
            .help(help)
            .value_name(key.value_name);
        arg = match key.arity {
            Arity::Switch => arg.action(ArgAction::SetTrue),
            Arity::One => arg.action(ArgAction::Set),
            Arity::Many => arg.action(ArgAction::Append),
        };
        command = command.arg(arg);
    }
    command
}

/// The values the flags added by [`add_flags`] were given on the command line.
pub fn overrides(matches: &ArgMatches) -> Overrides {
    let mut overrides = Overrides::default();
    for key in keys() {
        let Some(flag) = key.flag else { continue };
        let texts: Vec<String> = match key.arity {
            Arity::Switch => {
                if !matches!(matches.try_get_one::<bool>(&key.path), Ok(Some(true))) {
                    continue;
                }
                vec!["true".to_owned()]
            }
            Arity::One | Arity::Many => match matches.try_get_many::<String>(&key.path) {
                Ok(Some(values)) => values.cloned().collect(),
                _ => continue,
            },
        };
        overrides = overrides.set(&key.path, flag.long, texts);
    }
    overrides
}
