//! The `state:` section into a typed [`StateConfig`]: the backend, and how to reach Redis.
//! The password comes from a file only: a password in the YAML or in the URL is refused
//! (without quoting the URL, whose text before `@` would be the password).

use super::duration;
use super::raw::RawState;
use super::setting::{Problems, Setting};
use crate::secret::Secret;
use crate::state::{
    MoneyFallback, RedisConfig, Share, StateConfig, DEFAULT_ANSWER_TTL, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FALLBACK_SHARE, DEFAULT_KEY_PREFIX,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest `state.redis.command_timeout`: a call held longer than this by its shared
/// state has lost more than a fallback saves.
const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest `state.redis.answer_ttl`.
const MIN_ANSWER_TTL: Duration = Duration::from_secs(60);

pub(super) fn validate(
    raw: &RawState,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> StateConfig {
    let redis = &raw.redis;
    let backend = raw.backend.as_ref().map_or("local", |b| b.value.trim());
    match backend {
        "local" => {
            if let Some(url) = &redis.url {
                problems.at(
                    &url.origin,
                    "state.redis.url",
                    "is set but state.backend is local: set state.backend: redis to use it",
                );
            }
            return StateConfig::Local;
        }
        "redis" => {}
        other => {
            problems.about(
                &raw.backend,
                "state.backend",
                format!("must be local or redis, not {other:?}"),
            );
            return StateConfig::Local;
        }
    }

    let url = match &redis.url {
        None => {
            problems.about(
                &raw.backend,
                "state.backend",
                "is redis but state.redis.url is not set",
            );
            String::new()
        }
        Some(url) => problems
            .check(url, "state.redis.url", check_redis_url(url.value.trim()))
            .unwrap_or_default(),
    };
    let password = redis
        .password_file
        .as_ref()
        .and_then(|file| read_secret_file(file, "state.redis.password_file", read_file, problems));
    let ca_pem = redis
        .ca_file
        .as_ref()
        .and_then(|file| read_plain_file(file, "state.redis.ca_file", read_file, problems));
    if ca_pem.is_some() && !url.starts_with("rediss://") {
        problems.about(
            &redis.ca_file,
            "state.redis.ca_file",
            "is for rediss:// (TLS); state.redis.url is not",
        );
    }
    let key_prefix = match &redis.key_prefix {
        None => DEFAULT_KEY_PREFIX.to_owned(),
        Some(prefix) => problems
            .check(
                prefix,
                "state.redis.key_prefix",
                check_key_prefix(&prefix.value),
            )
            .unwrap_or_default(),
    };
    let command_timeout = duration(&redis.command_timeout, DEFAULT_COMMAND_TIMEOUT);
    if command_timeout.is_zero() || command_timeout > MAX_COMMAND_TIMEOUT {
        problems.about(
            &redis.command_timeout,
            "state.redis.command_timeout",
            "must be between 1ms and 1s",
        );
    }
    let connect_timeout = duration(&redis.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    if connect_timeout.is_zero() || connect_timeout > MAX_CONNECT_TIMEOUT {
        problems.about(
            &redis.connect_timeout,
            "state.redis.connect_timeout",
            "must be between 1ms and 30s",
        );
    }
    let fallback_share = match &redis.fallback_share {
        None => DEFAULT_FALLBACK_SHARE,
        Some(share) => problems
            .check(
                share,
                "state.redis.fallback_share",
                Share::parse(&share.value).ok_or_else(|| {
                    format!(
                        "`{}` is not a share above 0 and at most 1, such as 0.5 or 50%",
                        share.value
                    )
                }),
            )
            .unwrap_or(DEFAULT_FALLBACK_SHARE),
    };
    let answer_ttl = duration(&redis.answer_ttl, DEFAULT_ANSWER_TTL);
    if answer_ttl < MIN_ANSWER_TTL {
        problems.about(
            &redis.answer_ttl,
            "state.redis.answer_ttl",
            "must be at least 1m: a key's answer must outlive the app's retries",
        );
    }
    let money_fallback = match &redis.money_fallback {
        None => MoneyFallback::default(),
        Some(fallback) => problems
            .check(
                fallback,
                "state.redis.money_fallback",
                MoneyFallback::parse(fallback.value.trim())
                    .ok_or_else(|| format!("must be refuse or local, not {:?}", fallback.value)),
            )
            .unwrap_or_default(),
    };
    StateConfig::Redis(RedisConfig {
        url,
        password,
        ca_pem,
        ca_file: redis.ca_file.as_ref().map(|file| file.value.clone()),
        key_prefix,
        command_timeout,
        connect_timeout,
        fallback_share,
        answer_ttl,
        money_fallback,
    })
}

/// `redis://` or `rediss://`, a host, no password; a user name (Redis ACL) and a
/// database number are allowed.
pub(crate) fn check_redis_url(text: &str) -> Result<String, String> {
    let url = redis::parse_redis_url(text).ok_or_else(|| {
        "is not a URL such as redis://redis:6379 or rediss://redis:6380".to_owned()
    })?;
    if url.password().is_some() {
        return Err(
            "carries a password (user:password@); put the password in a file and set state.redis.password_file"
                .to_owned(),
        );
    }
    match url.scheme() {
        "redis" | "rediss" => {}
        other => {
            return Err(format!(
                "must start with redis:// or rediss://, not {other}://"
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment (they would set client options the sidecar does not check)".to_owned());
    }
    let database = url.path().trim_start_matches('/');
    if !database.is_empty() && database.parse::<u16>().is_err() {
        return Err(format!("`/{database}` is not a database number"));
    }
    Ok(url.to_string())
}

/// Printable ASCII without spaces, braces (cluster hash tags) or `:` at the end.
fn check_key_prefix(prefix: &str) -> Result<String, String> {
    let valid = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if valid {
        Ok(prefix.to_owned())
    } else {
        Err("must be 1 to 64 printable ASCII characters without spaces or braces".to_owned())
    }
}

fn read_plain_file(
    file: &Setting<PathBuf>,
    key: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<Vec<u8>> {
    let contents = read_file(&file.value)
        .map_err(|error| format!("cannot read {}: {error}", file.value.display()));
    problems.check(file, key, contents)
}

fn read_secret_file(
    file: &Setting<PathBuf>,
    key: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<Secret> {
    let secret = read_plain_file(file, key, read_file, problems).map(Secret::from_file_contents)?;
    if secret.is_empty() {
        problems.at(
            &file.origin,
            key,
            format!("{} is empty", file.value.display()),
        );
        return None;
    }
    if std::str::from_utf8(secret.expose()).is_err() {
        problems.at(
            &file.origin,
            key,
            format!("{} is not UTF-8 text", file.value.display()),
        );
        return None;
    }
    Some(secret)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::check_redis_url;

    #[test]
    fn a_redis_url_never_carries_a_password_and_the_refusal_never_quotes_it() {
        assert!(check_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_redis_url("rediss://redis.shop.svc:6380/2").is_ok());
        assert!(check_redis_url("redis://sidecar@redis:6379").is_ok());
        let refused = check_redis_url("redis://sidecar:hunter2@redis:6379").unwrap_err();
        assert!(refused.contains("password_file"), "{refused}");
        assert!(!refused.contains("hunter2"), "{refused}");
        let refused = check_redis_url("redis://:hunter2@redis:6379").unwrap_err();
        assert!(!refused.contains("hunter2"), "{refused}");
        for wrong in [
            "http://redis:6379",
            "redis://",
            "redis://redis:6379/x",
            "redis://redis:6379/?protocol=resp3",
            "redis",
        ] {
            assert!(check_redis_url(wrong).is_err(), "{wrong}");
        }
    }
}
