//! Egress policy: the source address, forward proxy and upstream IPs that LINE Pay calls
//! leave through, so that they come from the one address in LINE Pay's IP whitelist and
//! go only where the operator said.
//!
//! Policy lives here; the mechanism is in [`crate::upstream`] (its connection stack)
//! and the running check in [`crate::expect_ip`]:
//! - [`validate`] turns the `egress:` section, its flags and the proxy credentials into
//!   an [`EgressConfig`], collecting every problem with its line;
//! - whether this host holds the `bind_address` is I/O, so the runtime checks it
//!   ([`crate::runtime`]'s preflight) whenever it builds the upstream client;
//! - [`ExpectIpConfig`] says which public address calls must leave from and which echo
//!   service to ask; [`crate::expect_ip::ExpectIpCheck`] does the asking.
//!
//! The three patterns combine: a bound source address is used for every connection the
//! sidecar opens (to LINE Pay, or to the proxy); a proxy carries the TLS connection to
//! LINE Pay end to end through an HTTP CONNECT tunnel; a pin replaces DNS for the
//! upstream host only (and, through a proxy, becomes the CONNECT target), while SNI and
//! the certificate check keep the host name of `upstream.url`.

use crate::config::{is_loopback_host, refuse_credentials, ConfigDuration, Overrides};
use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::HeaderValue;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Where the proxy credentials (`user:password`) may come from besides the YAML key.
pub const ENV_EGRESS_PROXY_AUTH_FILE: &str = "LINEPAY_EGRESS_PROXY_AUTH_FILE";
pub const DEFAULT_EXPECT_IP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Raw shape of the `egress:` section.

/// The `egress:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    /// Source IP of every upstream connection (`--egress-bind-address`).
    pub bind_address: Option<Spanned<String>>,
    /// HTTP CONNECT forward proxy that owns the registered address.
    pub proxy: Option<Spanned<RawProxy>>,
    /// The only IPs the upstream host may resolve to (`--egress-pin`, repeatable).
    pub pin: Option<Spanned<Vec<Spanned<String>>>>,
    /// Learn the public egress address from an echo service and compare.
    pub expect_ip: Option<Spanned<RawExpectIp>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// `http://host:port` (`--egress-proxy`).
    pub url: Option<Spanned<String>>,
    /// File holding `user:password` for `Proxy-Authorization: Basic`.
    pub auth_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpectIp {
    pub address: Spanned<String>,
    pub echo_url: Spanned<String>,
    pub timeout: Option<ConfigDuration>,
}

// ---------------------------------------------------------------------------------------
// Validated settings.

/// Validated egress settings; the default sends calls the host's default way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressConfig {
    /// Every upstream (or proxy) connection is bound to this source address, and only
    /// addresses of its family are dialled.
    pub bind_address: Option<IpAddr>,
    pub proxy: Option<ProxyConfig>,
    /// When not empty, the upstream host resolves to these addresses only, in order.
    pub pin: Vec<IpAddr>,
    pub expect_ip: Option<ExpectIpConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `http://host:port` of the CONNECT proxy (never with credentials in it).
    pub url: http::Uri,
    pub auth: Option<ProxyAuth>,
}

/// Proxy credentials: `user:password`, redacted in every printout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    credentials: Secret,
    /// Where they came from, for the start-up log (never the value).
    pub source: String,
    /// The file they were read from, watched for rotation like the channel secret.
    pub file: PathBuf,
}

impl ProxyAuth {
    /// The `Proxy-Authorization: Basic ...` value, marked sensitive.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let encoded = Zeroizing::new(format!(
            "Basic {}",
            BASE64.encode(self.credentials.expose())
        ));
        let mut value = HeaderValue::from_str(&encoded).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectIpConfig {
    /// The address registered in LINE Pay's whitelist.
    pub address: IpAddr,
    /// Answers the caller's public address as plain text (`203.0.113.7\n`).
    pub echo_url: http::Uri,
    pub timeout: Duration,
}

// ---------------------------------------------------------------------------------------
// Validation.

/// Turns the `egress:` section plus its flags and environment into an [`EgressConfig`],
/// collecting every problem. `read_file` reads the proxy credentials file.
pub fn validate(
    raw: &RawEgress,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    at: &dyn Fn(usize) -> String,
) -> Result<EgressConfig, Vec<String>> {
    let mut problems = Vec::new();
    let line = |line: u64| at(line as usize);

    let bind_address = match (overrides.egress_bind_address, &raw.bind_address) {
        (Some(address), _) => check_bind_address(address)
            .map_err(|problem| problems.push(format!("--egress-bind-address: {problem}")))
            .ok(),
        (None, Some(text)) => parse_ip(&text.value)
            .and_then(check_bind_address)
            .map_err(|problem| {
                problems.push(format!(
                    "{}: egress.bind_address: {problem}",
                    line(text.referenced.line())
                ))
            })
            .ok(),
        (None, None) => None,
    };

    let proxy = proxy(raw, overrides, env, read_file, &line)
        .map_err(|mut found| problems.append(&mut found))
        .ok()
        .flatten();

    let pin = pin(raw, overrides, &line)
        .map_err(|mut found| problems.append(&mut found))
        .unwrap_or_default();

    let expect_ip = raw.expect_ip.as_ref().and_then(|spanned| {
        expect_ip(&spanned.value, &line)
            .map_err(|mut found| problems.append(&mut found))
            .ok()
    });

    // A socket bound to an IPv4 address cannot reach an IPv6 one: such a pin or proxy
    // would fail at every call, or (worse) be dialled from an unbound source.
    if let Some(bind) = bind_address {
        for address in pin.iter().filter(|address| !same_family(**address, bind)) {
            problems.push(format!(
                "egress.pin {address} and egress.bind_address {bind} are of different IP versions: a connection from {bind} cannot reach {address}"
            ));
        }
        if let Some(proxy_ip) = proxy.as_ref().and_then(|p| host_ip(&p.url)) {
            if !same_family(proxy_ip, bind) {
                problems.push(format!(
                    "egress.proxy.url {proxy_ip} and egress.bind_address {bind} are of different IP versions"
                ));
            }
        }
    }

    if problems.is_empty() {
        Ok(EgressConfig {
            bind_address,
            proxy,
            pin,
            expect_ip,
        })
    } else {
        Err(problems)
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address such as 203.0.113.7"))
}

fn check_bind_address(address: IpAddr) -> Result<IpAddr, String> {
    if address.is_unspecified() {
        return Err(format!(
            "{address} means any address; name the one registered in LINE Pay's whitelist"
        ));
    }
    if address.is_multicast() || address == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!(
            "{address} is not a unicast address a connection can come from"
        ));
    }
    Ok(address)
}

fn check_pinned(address: IpAddr) -> Result<IpAddr, String> {
    if address.is_unspecified() || address.is_multicast() {
        return Err(format!(
            "{address} is not an address LINE Pay can be reached at"
        ));
    }
    Ok(address)
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn host_ip(uri: &http::Uri) -> Option<IpAddr> {
    let host = uri.host()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// `http://host[:port]` with no credentials, path or query. The text is quoted in
/// errors only when it cannot hold a password.
pub fn check_proxy_url(text: &str) -> Result<http::Uri, String> {
    // Checked on the raw text first: a URL with credentials is never echoed back.
    let authority_part = text
        .split_once("://")
        .map_or(text, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    if authority_part.contains('@') {
        return Err(format!(
            "the URL carries credentials (user:password@), which would sit in clear in the file or the process list; put `user:password` in a file named by egress.proxy.auth_file, --egress-proxy-auth-file or {ENV_EGRESS_PROXY_AUTH_FILE}"
        ));
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL such as http://10.0.0.5:3128"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{text}`: TLS to the proxy itself is not supported; use http://host:port (the calls inside the CONNECT tunnel stay TLS to LINE Pay end to end)"
            ))
        }
        _ => return Err(format!("`{text}` must start with http://")),
    }
    let Some(host) = uri.host().filter(|host| !host.is_empty()) else {
        return Err(format!("`{text}` has no host"));
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!("`{text}` must be scheme, host and port only"));
    }
    let port = uri.port_u16().unwrap_or(80);
    let authority = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|_| format!("`{text}` is not a valid proxy URL"))
}

fn proxy(
    raw: &RawEgress,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    line: &dyn Fn(u64) -> String,
) -> Result<Option<ProxyConfig>, Vec<String>> {
    let mut problems = Vec::new();
    let raw_proxy = raw.proxy.as_ref();
    let url = match (
        &overrides.egress_proxy,
        raw_proxy.and_then(|p| p.value.url.as_ref()),
    ) {
        (Some(url), _) => check_proxy_url(url)
            .map_err(|problem| problems.push(format!("--egress-proxy: {problem}")))
            .ok(),
        (None, Some(url)) => check_proxy_url(&url.value)
            .map_err(|problem| {
                problems.push(format!(
                    "{}: egress.proxy.url: {problem}",
                    line(url.referenced.line())
                ))
            })
            .ok(),
        (None, None) => {
            if let Some(section) = raw_proxy {
                problems.push(format!(
                    "{}: egress.proxy: `url` is missing (http://host:port of the CONNECT proxy)",
                    line(section.referenced.line())
                ));
            }
            None
        }
    };

    // Flags beat the environment, which beats the file, as for the channel secret.
    let auth_file = if let Some(path) = &overrides.egress_proxy_auth_file {
        Some((path.clone(), "--egress-proxy-auth-file".to_owned()))
    } else if let Some(path) = env(ENV_EGRESS_PROXY_AUTH_FILE) {
        Some((PathBuf::from(path), ENV_EGRESS_PROXY_AUTH_FILE.to_owned()))
    } else {
        raw_proxy
            .and_then(|p| p.value.auth_file.clone())
            .map(|path| (path, "egress.proxy.auth_file".to_owned()))
    };
    let auth = match auth_file {
        None => None,
        Some((_, source)) if overrides.egress_proxy.is_none() && raw_proxy.is_none() => {
            problems.push(format!(
                "{source} is set but no egress proxy is configured: set egress.proxy.url or --egress-proxy, or remove {source}"
            ));
            None
        }
        Some((path, source)) => read_proxy_auth(&path, &source, read_file)
            .map_err(|problem| problems.push(problem))
            .ok(),
    };

    match url {
        Some(url) if problems.is_empty() => Ok(Some(ProxyConfig { url, auth })),
        None if problems.is_empty() => Ok(None),
        _ => Err(problems),
    }
}

fn read_proxy_auth(
    path: &Path,
    source: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<ProxyAuth, String> {
    let contents = read_file(path)
        .map_err(|error| format!("{source}: cannot read {}: {error}", path.display()))?;
    let credentials = Secret::from_file_contents(contents);
    let bytes = credentials.expose();
    let user_length = bytes.iter().position(|b| *b == b':');
    // Never quote the contents: they are a password.
    if !matches!(user_length, Some(1..)) || bytes.iter().any(u8::is_ascii_control) {
        return Err(format!(
            "{source}: {} must hold one line `user:password` (a non-empty user, a colon, the password)",
            path.display()
        ));
    }
    Ok(ProxyAuth {
        credentials,
        source: format!("{source} ({})", path.display()),
        file: path.to_path_buf(),
    })
}

fn pin(
    raw: &RawEgress,
    overrides: &Overrides,
    line: &dyn Fn(u64) -> String,
) -> Result<Vec<IpAddr>, Vec<String>> {
    let mut problems = Vec::new();
    let mut pinned = Vec::new();
    if !overrides.egress_pin.is_empty() {
        for address in &overrides.egress_pin {
            match check_pinned(*address) {
                Ok(address) => pinned.push(address),
                Err(problem) => problems.push(format!("--egress-pin: {problem}")),
            }
        }
    } else if let Some(list) = &raw.pin {
        if list.value.is_empty() {
            problems.push(format!(
                "{}: egress.pin is empty: list LINE Pay's addresses, or remove the key to use DNS",
                line(list.referenced.line())
            ));
        }
        for entry in &list.value {
            match parse_ip(&entry.value).and_then(check_pinned) {
                Ok(address) => pinned.push(address),
                Err(problem) => problems.push(format!(
                    "{}: egress.pin: {problem}",
                    line(entry.referenced.line())
                )),
            }
        }
    }
    // Order matters (the first address is tried first); repeats add nothing.
    let mut seen = Vec::with_capacity(pinned.len());
    pinned.retain(|address| {
        let fresh = !seen.contains(address);
        seen.push(*address);
        fresh
    });
    if problems.is_empty() {
        Ok(pinned)
    } else {
        Err(problems)
    }
}

fn expect_ip(
    raw: &RawExpectIp,
    line: &dyn Fn(u64) -> String,
) -> Result<ExpectIpConfig, Vec<String>> {
    let mut problems = Vec::new();
    let address = parse_ip(&raw.address.value)
        .map_err(|problem| {
            problems.push(format!(
                "{}: egress.expect_ip.address: {problem}",
                line(raw.address.referenced.line())
            ))
        })
        .ok();
    let echo_url = check_echo_url(&raw.echo_url.value)
        .map_err(|problem| {
            problems.push(format!(
                "{}: egress.expect_ip.echo_url: {problem}",
                line(raw.echo_url.referenced.line())
            ))
        })
        .ok();
    let timeout = raw.timeout.map_or(DEFAULT_EXPECT_IP_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        problems.push("egress.expect_ip.timeout must be above 0".to_owned());
    }
    match (address, echo_url) {
        (Some(address), Some(echo_url)) if problems.is_empty() => Ok(ExpectIpConfig {
            address,
            echo_url,
            timeout,
        }),
        _ => Err(problems),
    }
}

/// `https://...`, or `http://` to a loopback host (a local echo in tests): an answer
/// in clear could be forged on the way.
fn check_echo_url(text: &str) -> Result<http::Uri, String> {
    refuse_credentials(text, "use an echo service that needs none")?;
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL such as https://checkip.amazonaws.com"))?;
    let Some(host) = uri.host().filter(|host| !host.is_empty()) else {
        return Err(format!("`{text}` has no host"));
    };
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback_host(host) => Ok(uri),
        Some("http") => Err(format!(
            "`{text}` is plain http: an answer in clear can be forged on the way; use https:// (http:// is accepted only for loopback)"
        )),
        _ => Err(format!("`{text}` must start with https://")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::from_yaml_str;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn no_files(path: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found", path.display()),
        ))
    }

    fn at(line: usize) -> String {
        format!("sidecar.yaml:{line}")
    }

    fn check_with(
        yaml: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<EgressConfig, String> {
        let raw = from_yaml_str(yaml)?;
        validate(&raw.egress, overrides, env, read_file, &at).map_err(|p| p.join("\n"))
    }

    fn check(yaml: &str) -> Result<EgressConfig, String> {
        check_with(yaml, &Overrides::default(), &no_env, &no_files)
    }

    #[test]
    fn nothing_configured_is_the_default_route() {
        let config = check("").unwrap();
        assert_eq!(config.bind_address, None);
        assert!(config.proxy.is_none());
        assert!(config.pin.is_empty());
        assert!(config.expect_ip.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let yaml = r#"
egress:
  bind_address: 203.0.113.7
  proxy:
    url: http://10.0.0.5:3128
    auth_file: /run/secrets/proxy
  pin: [147.92.220.5, 147.92.220.6, 147.92.220.5]
  expect_ip:
    address: 203.0.113.7
    echo_url: https://checkip.amazonaws.com
    timeout: 2s
"#;
        let config = check_with(yaml, &Overrides::default(), &no_env, &|_| {
            Ok(b"user:pa:ss\n".to_vec())
        })
        .unwrap();
        assert_eq!(config.bind_address, Some("203.0.113.7".parse().unwrap()));
        let proxy = config.proxy.unwrap();
        assert_eq!(proxy.url.to_string(), "http://10.0.0.5:3128/");
        let auth = proxy.auth.unwrap();
        // base64("user:pa:ss"): the password may hold colons; the newline is dropped.
        assert_eq!(auth.header_value().unwrap(), "Basic dXNlcjpwYTpzcw==");
        assert!(auth.header_value().unwrap().is_sensitive());
        assert!(auth.source.contains("/run/secrets/proxy"));
        assert!(!format!("{auth:?}").contains("pa:ss"));
        assert_eq!(
            config.pin,
            vec![
                "147.92.220.5".parse::<IpAddr>().unwrap(),
                "147.92.220.6".parse().unwrap()
            ]
        );
        let expect = config.expect_ip.unwrap();
        assert_eq!(expect.timeout, Duration::from_secs(2));
        assert_eq!(expect.echo_url.host(), Some("checkip.amazonaws.com"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let yaml = "egress:\n  bind_address: 203.0.113.7\n  pin: [147.92.220.5]\n  proxy:\n    url: http://10.0.0.5:3128\n";
        let overrides = Overrides {
            egress_bind_address: Some("127.0.0.2".parse().unwrap()),
            egress_pin: vec!["127.0.0.3".parse().unwrap()],
            egress_proxy: Some("http://127.0.0.1:3128".into()),
            ..Overrides::default()
        };
        let config = check_with(yaml, &overrides, &no_env, &no_files).unwrap();
        assert_eq!(config.bind_address, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(config.pin, vec!["127.0.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(config.proxy.unwrap().url.host(), Some("127.0.0.1"));
    }

    #[test]
    fn proxy_url_with_credentials_is_refused_without_echoing_them() {
        let error =
            check("egress:\n  proxy:\n    url: http://bob:hunter2@10.0.0.5:3128\n").unwrap_err();
        assert!(error.contains("sidecar.yaml:3"), "{error}");
        assert!(error.contains("auth_file"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn proxy_url_must_be_plain_http_host_and_port() {
        assert!(check_proxy_url("https://10.0.0.5:3128")
            .unwrap_err()
            .contains("end to end"));
        assert!(check_proxy_url("socks5://10.0.0.5:1080").is_err());
        assert!(check_proxy_url("http://10.0.0.5:3128/path").is_err());
        assert!(check_proxy_url("10.0.0.5:3128").is_err());
        assert_eq!(
            check_proxy_url("http://proxy.internal")
                .unwrap()
                .to_string(),
            "http://proxy.internal:80/"
        );
        assert_eq!(
            check_proxy_url("http://[::1]:3128").unwrap().to_string(),
            "http://[::1]:3128/"
        );
    }

    #[test]
    fn proxy_section_without_url_is_refused() {
        let error = check("egress:\n  proxy:\n    auth_file: /run/x\n").unwrap_err();
        assert!(error.contains("url` is missing"), "{error}");
    }

    #[test]
    fn proxy_credentials_come_from_the_environment_too() {
        let env = |key: &str| {
            (key == ENV_EGRESS_PROXY_AUTH_FILE).then(|| "/run/secrets/env-proxy".to_owned())
        };
        let overrides = Overrides {
            egress_proxy: Some("http://127.0.0.1:3128".into()),
            ..Overrides::default()
        };
        let config = check_with("", &overrides, &env, &|path| {
            assert_eq!(path, Path::new("/run/secrets/env-proxy"));
            Ok(b"u:p".to_vec())
        })
        .unwrap();
        let auth = config.proxy.unwrap().auth.unwrap();
        assert!(auth.source.starts_with(ENV_EGRESS_PROXY_AUTH_FILE));
    }

    #[test]
    fn proxy_credentials_without_a_proxy_are_refused() {
        let env = |key: &str| (key == ENV_EGRESS_PROXY_AUTH_FILE).then(|| "/run/x".to_owned());
        let error =
            check_with("", &Overrides::default(), &env, &|_| Ok(b"u:p".to_vec())).unwrap_err();
        assert!(error.contains("no egress proxy"), "{error}");
    }

    #[test]
    fn malformed_proxy_credentials_are_refused_without_quoting_them() {
        let overrides = Overrides {
            egress_proxy: Some("http://127.0.0.1:3128".into()),
            egress_proxy_auth_file: Some("/run/p".into()),
            ..Overrides::default()
        };
        for contents in [
            &b"justapassword\n"[..],
            b":nouser",
            b"u:p\nsecond-line",
            b"",
        ] {
            let error =
                check_with("", &overrides, &no_env, &|_| Ok(contents.to_vec())).unwrap_err();
            assert!(error.contains("user:password"), "{error}");
            assert!(!error.contains("justapassword"), "{error}");
            assert!(!error.contains("second-line"), "{error}");
        }
    }

    #[test]
    fn bad_addresses_are_named_with_their_lines() {
        let yaml =
            "egress:\n  bind_address: 0.0.0.0\n  pin:\n    - 147.92.220.5\n    - api-pay.line.me\n";
        let error = check(yaml).unwrap_err();
        assert!(
            error.contains("sidecar.yaml:2: egress.bind_address"),
            "{error}"
        );
        assert!(error.contains("any address"), "{error}");
        assert!(error.contains("sidecar.yaml:5: egress.pin"), "{error}");
        assert!(error.contains("`api-pay.line.me`"), "{error}");
        assert!(check("egress:\n  pin: []\n").unwrap_err().contains("empty"));
        assert!(check("egress:\n  bind_address: 224.0.0.1\n").is_err());
    }

    #[test]
    fn families_of_bind_pin_and_proxy_must_agree() {
        let error =
            check("egress:\n  bind_address: 203.0.113.7\n  pin: [\"2001:db8::1\"]\n").unwrap_err();
        assert!(error.contains("different IP versions"), "{error}");
        let error = check(
            "egress:\n  bind_address: 203.0.113.7\n  proxy:\n    url: http://[2001:db8::5]:3128\n",
        )
        .unwrap_err();
        assert!(error.contains("egress.proxy.url"), "{error}");
    }

    #[test]
    fn expect_ip_needs_an_address_and_a_trustworthy_echo_url() {
        let error =
            check("egress:\n  expect_ip:\n    address: nope\n    echo_url: http://ifconfig.me\n")
                .unwrap_err();
        assert!(
            error.contains("sidecar.yaml:3: egress.expect_ip.address"),
            "{error}"
        );
        assert!(
            error.contains("sidecar.yaml:4: egress.expect_ip.echo_url"),
            "{error}"
        );
        let config = check(
            "egress:\n  expect_ip:\n    address: 127.0.0.1\n    echo_url: http://127.0.0.1:1/\n",
        )
        .unwrap();
        assert_eq!(config.expect_ip.unwrap().timeout, DEFAULT_EXPECT_IP_TIMEOUT);
        assert!(check("egress:\n  expect_ip:\n    address: 127.0.0.1\n")
            .unwrap_err()
            .contains("echo_url"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = check("egress:\n  proxy:\n    url: http://10.0.0.5:3128\n    password: x\n")
            .unwrap_err();
        assert!(error.contains("password"), "{error}");
    }
}
