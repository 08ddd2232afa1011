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
        (Some(file), _) => read_secret(file, problems.file(), read_file, SECRET_FILE_KEY, true),
        (None, Some(value)) => Ok((
            Secret::from_file_contents(value.into_bytes()),
            ENV_CHANNEL_SECRET.to_owned(),
        )),
        (None, None) => Err(format!(
            "no channel secret: set {ENV_CHANNEL_SECRET}, {ENV_CHANNEL_SECRET_FILE}, --channel-secret-file or credentials.channel_secret_file"
        )),
    };
    let secret = secret.map_err(|problem| problems.push(problem)).ok();

    let devices = DeviceHeaders {
        profile_id: &raw.merchant_device_profile_id,
        device_type: &raw.merchant_device_type,
    };
    let secret_file = secret_file.map(|file| file.value.clone());
    assemble(
        channel_id,
        secret,
        secret_file,
        devices,
        &|field| format!("credentials.{field}"),
        problems,
        before,
    )
}

/// The optional device headers of a channel, as written.
struct DeviceHeaders<'a> {
    profile_id: &'a Option<Setting<String>>,
    device_type: &'a Option<Setting<String>>,
}

/// Checks the device headers (`key` names a field as the file does) and puts the
/// credentials together when nothing since `before` was a problem.
fn assemble(
    channel_id: Option<HeaderValue>,
    secret: Option<(Secret, String)>,
    secret_file: Option<PathBuf>,
    devices: DeviceHeaders<'_>,
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems,
    before: usize,
) -> Option<Credentials> {
    let mut optional_header = |value: &Option<Setting<String>>, field: &str| {
        value
            .as_ref()
            .and_then(|v| problems.check(v, &key(field), header_value(field, &v.value)))
    };
    let merchant_device_profile_id =
        optional_header(devices.profile_id, "merchant_device_profile_id");
    let merchant_device_type = optional_header(devices.device_type, "merchant_device_type");
    match (channel_id, secret) {
        (Some(channel_id), Some((channel_secret, secret_source))) if problems.len() == before => {
            Some(Credentials {
                channel_id,
                channel_secret,
                secret_source,
                secret_file,
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

/// `key`: the key that names the file (`credentials.channel_secret_file` or a
/// channel's); `legacy`: whether the `credentials:` variables and flag could win over it
/// (said in the message when the file cannot be read).
fn read_secret(
    file: &Setting<PathBuf>,
    config_file: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    key: &str,
    legacy: bool,
) -> Result<(Secret, String), String> {
    let path = &file.value;
    let source = match &file.origin {
        Origin::File { .. } => key.to_owned(),
        other => other.describe(config_file),
    };
    // In messages, a key set in the file is named with its line.
    let at = file.origin.prefix(config_file, key);
    let contents = read_file(path).map_err(|error| {
        // Say what would win over a file the user may not have meant to use.
        let hint = match &file.origin {
            _ if !legacy => String::new(),
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

/// `LINEPAY_SIDECAR_CHANNELS_<NAME>_<KEY>`: the variable that sets `key` of channel
/// `name` (the name in capitals, `-` as `_`), as every other key's variable is named.
pub(super) fn channel_env(name: &str, key: &str) -> String {
    super::keys::env_name(&format!("channels.{name}.{key}"))
}

/// One `channels.<name>` entry's credentials: its id, its secret from its own file (its
/// variable winning over the key), and its device headers. Nothing is shared with
/// `credentials:` or another channel: a channel signs with its own secret only.
pub(super) fn validate_channel(
    name: &str,
    raw: &super::raw::RawChannel,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<Credentials> {
    let before = problems.len();
    let key = |field: &str| format!("channels.{name}.{field}");
    if let Some(secret) = &raw.channel_secret {
        problems.at(
            &secret.origin,
            &key("channel_secret"),
            format!(
                "the secret is never read from the YAML; mount it as a file and set {} (or {})",
                key("channel_secret_file"),
                channel_env(name, "channel_secret_file")
            ),
        );
    }
    let id_variable = channel_env(name, "channel_id");
    let channel_id = match (env(&id_variable), &raw.channel_id) {
        (Some(id), _) => problems.check(
            &Setting::new(id.clone(), Origin::Env(id_variable.clone())),
            &key("channel_id"),
            header_value("the channel id", id.trim()),
        ),
        (None, Some(id)) => problems.check(
            id,
            &key("channel_id"),
            header_value("the channel id", id.value.trim()),
        ),
        (None, None) => {
            problems.push(format!(
                "channel `{name}` has no channel id: set {} or {id_variable}",
                key("channel_id")
            ));
            None
        }
    };
    let file_variable = channel_env(name, "channel_secret_file");
    let secret_file = match env(&file_variable) {
        Some(path) => Some(Setting::new(
            PathBuf::from(path),
            Origin::Env(file_variable),
        )),
        None => raw.channel_secret_file.clone(),
    };
    let secret = match &secret_file {
        Some(file) => read_secret(
            file,
            problems.file(),
            read_file,
            &key("channel_secret_file"),
            false,
        ),
        None => Err(format!(
            "channel `{name}` has no channel secret: set {} or {}",
            key("channel_secret_file"),
            channel_env(name, "channel_secret_file")
        )),
    };
    let secret = secret.map_err(|problem| problems.push(problem)).ok();
    let devices = DeviceHeaders {
        profile_id: &raw.merchant_device_profile_id,
        device_type: &raw.merchant_device_type,
    };
    let secret_file = secret_file.map(|file| file.value);
    assemble(
        channel_id,
        secret,
        secret_file,
        devices,
        &key,
        problems,
        before,
    )
}
