//! The `credentials:` section: the channel id, and the channel secret from a file or
//! the environment (never from the YAML).

use super::raw::RawCredentials;
use super::setting::{Origin, Problems, Setting};
use crate::config::Credentials;
use crate::secret::Secret;
use http::HeaderValue;
use std::path::{Path, PathBuf};

pub const ENV_CHANNEL_ID: &str = "LINEPAY_CHANNEL_ID";
pub const ENV_CHANNEL_SECRET: &str = "LINEPAY_CHANNEL_SECRET";
pub const ENV_CHANNEL_SECRET_FILE: &str = "LINEPAY_CHANNEL_SECRET_FILE";

const SECRET_FILE_KEY: &str = "credentials.channel_secret_file";

pub(super) fn validate(
    raw: &RawCredentials,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<Credentials> {
    let before = problems.len();
    if let Some(secret) = &raw.channel_secret {
        problems.at(
            &secret.origin,
            "credentials.channel_secret",
            format!("the secret is never read from the YAML; mount it as a file and set credentials.channel_secret_file, or set {ENV_CHANNEL_SECRET}"),
        );
    }

    let channel_id = match &raw.channel_id {
        None => {
            problems.push(format!(
                "no channel id: set {ENV_CHANNEL_ID}, --channel-id or credentials.channel_id"
            ));
            None
        }
        Some(id) => problems.check(
            id,
            "credentials.channel_id",
            header_value("the channel id", id.value.trim()),
        ),
    };

    // The secret itself is no key, so its one rule is here: the flag naming a file wins,
    // then the secret in the environment, then a file named by the variable or the key.
    let env_secret = env(ENV_CHANNEL_SECRET);
    let secret_file = raw
        .channel_secret_file
        .as_ref()
        .filter(|file| matches!(file.origin, Origin::Flag(_)) || env_secret.is_none());
    let secret = match (secret_file, env_secret) {
        (Some(file), _) => read_secret(file, problems.file(), read_file),
        (None, Some(value)) => Ok((
            Secret::from_file_contents(value.into_bytes()),
            ENV_CHANNEL_SECRET.to_owned(),
        )),
        (None, None) => Err(format!(
            "no channel secret: set {ENV_CHANNEL_SECRET}, {ENV_CHANNEL_SECRET_FILE}, --channel-secret-file or credentials.channel_secret_file"
        )),
    };
    let secret = secret.map_err(|problem| problems.push(problem)).ok();

    let mut optional_header = |value: &Option<Setting<String>>, key: &str| {
        value.as_ref().and_then(|v| {
            problems.check(
                v,
                &format!("credentials.{key}"),
                header_value(key, &v.value),
            )
        })
    };
    let merchant_device_profile_id = optional_header(
        &raw.merchant_device_profile_id,
        "merchant_device_profile_id",
    );
    let merchant_device_type = optional_header(&raw.merchant_device_type, "merchant_device_type");

    match (channel_id, secret) {
        (Some(channel_id), Some((channel_secret, secret_source))) if problems.len() == before => {
            Some(Credentials {
                channel_id,
                channel_secret,
                secret_source,
                secret_file: secret_file.map(|file| file.value.clone()),
                merchant_device_profile_id,
                merchant_device_type,
            })
        }
        _ => None,
    }
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, String> {
    if value.is_empty() {
        return Err(format!("{name} is empty"));
    }
    HeaderValue::from_str(value)
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| format!("{name} must be printable ASCII without spaces"))
}

fn read_secret(
    file: &Setting<PathBuf>,
    config_file: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<(Secret, String), String> {
    let path = &file.value;
    let source = match &file.origin {
        Origin::File { .. } => SECRET_FILE_KEY.to_owned(),
        other => other.describe(config_file),
    };
    // In messages, a key set in the file is named with its line.
    let at = file.origin.prefix(config_file, SECRET_FILE_KEY);
    let contents = read_file(path).map_err(|error| {
        // Say what would win over a file the user may not have meant to use.
        let hint = match &file.origin {
            Origin::File { .. } => format!(
                " ({ENV_CHANNEL_SECRET}, {ENV_CHANNEL_SECRET_FILE} or --channel-secret-file, when set, win over this key)"
            ),
            Origin::Env(_) => format!(
                " ({ENV_CHANNEL_SECRET} or --channel-secret-file, when set, win over this)"
            ),
            Origin::Flag(_) => String::new(),
        };
        format!("{at}: cannot read {}: {error}{hint}", path.display())
    })?;
    let secret = Secret::from_file_contents(contents);
    if secret.is_empty() {
        return Err(format!("{at}: {} is empty", path.display()));
    }
    Ok((secret, format!("{source} ({})", path.display())))
}
