//! The `egress:` section: source address, forward proxy, DNS pin and the `expect_ip`
//! check, validated into the policy type [`EgressConfig`].

use super::raw::{RawEgress, RawExpectIp, RawProxy};
use super::setting::{Origin, Problems, Setting};
use super::urls::{check_echo_url, check_proxy_url};
use crate::egress::{EgressConfig, ExpectIpConfig, ProxyAuth, ProxyConfig};
use crate::secret::Secret;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Where the proxy credentials (`user:password`) may come from besides the YAML key.
pub const ENV_EGRESS_PROXY_AUTH_FILE: &str = "LINEPAY_EGRESS_PROXY_AUTH_FILE";
const DEFAULT_EXPECT_IP_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn validate(
    raw: &RawEgress,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<EgressConfig> {
    let before = problems.len();

    let bind_address = raw.bind_address.as_ref().and_then(|text| {
        problems.check(
            text,
            "egress.bind_address",
            parse_ip(&text.value).and_then(check_bind_address),
        )
    });
    let proxy = raw
        .proxy
        .as_ref()
        .and_then(|section| proxy(section, read_file, problems));
    let pin = raw
        .pin
        .as_ref()
        .map(|list| pin(list, problems))
        .unwrap_or_default();
    let expect_ip = raw
        .expect_ip
        .as_ref()
        .and_then(|section| expect_ip(section, problems));

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

    (problems.len() == before).then_some(EgressConfig {
        bind_address,
        proxy,
        pin,
        expect_ip,
    })
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

fn proxy(
    section: &Setting<RawProxy>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    problems: &mut Problems,
) -> Option<ProxyConfig> {
    let before = problems.len();
    let raw = &section.value;
    let url = match &raw.url {
        Some(url) => problems.check(url, "egress.proxy.url", check_proxy_url(&url.value)),
        None => {
            match (&section.origin, &raw.auth_file) {
                // Only credentials were given, by a flag or variable: no proxy to use them.
                (Origin::Env(_) | Origin::Flag(_), Some(auth)) => {
                    let source = auth.origin.describe(problems.file());
                    problems.push(format!(
                        "{source} is set but no egress proxy is configured: set egress.proxy.url or --egress-proxy, or remove {source}"
                    ));
                }
                _ => problems.at(
                    &section.origin,
                    "egress.proxy",
                    "`url` is missing (http://host:port of the CONNECT proxy)",
                ),
            }
            None
        }
    };
    let auth = raw.auth_file.as_ref().and_then(|file| {
        read_proxy_auth(file, problems.file(), read_file)
            .map_err(|p| problems.push(p))
            .ok()
    });
    match url {
        Some(url) if problems.len() == before => Some(ProxyConfig { url, auth }),
        _ => None,
    }
}

fn read_proxy_auth(
    file: &Setting<std::path::PathBuf>,
    config_file: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<ProxyAuth, String> {
    let path = &file.value;
    let source = match &file.origin {
        Origin::File { .. } => "egress.proxy.auth_file".to_owned(),
        other => other.describe(config_file),
    };
    let at = file.origin.prefix(config_file, "egress.proxy.auth_file");
    let contents = read_file(path)
        .map_err(|error| format!("{at}: cannot read {}: {error}", path.display()))?;
    let credentials = Secret::from_file_contents(contents);
    let bytes = credentials.expose();
    let user_length = bytes.iter().position(|b| *b == b':');
    // Never quote the contents: they are a password.
    if !matches!(user_length, Some(1..)) || bytes.iter().any(u8::is_ascii_control) {
        return Err(format!(
            "{at}: {} must hold one line `user:password` (a non-empty user, a colon, the password)",
            path.display()
        ));
    }
    Ok(ProxyAuth::new(
        credentials,
        format!("{source} ({})", path.display()),
        path.to_path_buf(),
    ))
}

fn pin(list: &Setting<Vec<Setting<String>>>, problems: &mut Problems) -> Vec<IpAddr> {
    if list.value.is_empty() {
        problems.at(
            &list.origin,
            "egress.pin",
            "is empty: list LINE Pay's addresses, or remove the key to use DNS",
        );
    }
    let mut pinned: Vec<IpAddr> = list
        .value
        .iter()
        .filter_map(|entry| {
            problems.check(
                entry,
                "egress.pin",
                parse_ip(&entry.value).and_then(check_pinned),
            )
        })
        .collect();
    // Order matters (the first address is tried first); repeats add nothing.
    let mut seen = Vec::with_capacity(pinned.len());
    pinned.retain(|address| {
        let fresh = !seen.contains(address);
        seen.push(*address);
        fresh
    });
    pinned
}

fn expect_ip(section: &Setting<RawExpectIp>, problems: &mut Problems) -> Option<ExpectIpConfig> {
    let before = problems.len();
    let raw = &section.value;
    let mut required = |value: &Option<Setting<String>>, key: &str| {
        if value.is_none() {
            problems.at(
                &section.origin,
                "egress.expect_ip",
                format!("`{key}` is missing"),
            );
        }
    };
    required(&raw.address, "address");
    required(&raw.echo_url, "echo_url");
    let address = raw.address.as_ref().and_then(|address| {
        problems.check(
            address,
            "egress.expect_ip.address",
            parse_ip(&address.value),
        )
    });
    let echo_url = raw.echo_url.as_ref().and_then(|url| {
        problems.check(url, "egress.expect_ip.echo_url", check_echo_url(&url.value))
    });
    let timeout = raw
        .timeout
        .as_ref()
        .map_or(DEFAULT_EXPECT_IP_TIMEOUT, |d| d.value.0);
    if timeout.is_zero() {
        problems.about(&raw.timeout, "egress.expect_ip.timeout", "must be above 0");
    }
    match (address, echo_url) {
        (Some(address), Some(echo_url)) if problems.len() == before => Some(ExpectIpConfig {
            address,
            echo_url,
            timeout,
        }),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{from_yaml_str, Overrides};
    use crate::egress::EgressConfig;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn no_files(path: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found", path.display()),
        ))
    }

    fn check_with(
        yaml: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<EgressConfig, String> {
        let raw = from_yaml_str(yaml).map_err(|e| e.in_file("sidecar.yaml"))?;
        let (raw, mut problems) = crate::config::layered(raw, overrides, env);
        match validate(&raw.egress, read_file, &mut problems) {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(problems.into_list().join("\n")),
        }
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
        let overrides = Overrides::default()
            .with("egress.bind_address", "127.0.0.2")
            .with("egress.pin", "127.0.0.3")
            .with("egress.proxy.url", "http://127.0.0.1:3128");
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
        assert!(
            crate::config::urls::check_proxy_url("https://10.0.0.5:3128")
                .unwrap_err()
                .contains("end to end")
        );
        assert!(crate::config::urls::check_proxy_url("socks5://10.0.0.5:1080").is_err());
        assert!(crate::config::urls::check_proxy_url("http://10.0.0.5:3128/path").is_err());
        assert!(crate::config::urls::check_proxy_url("10.0.0.5:3128").is_err());
        assert_eq!(
            crate::config::urls::check_proxy_url("http://proxy.internal")
                .unwrap()
                .to_string(),
            "http://proxy.internal:80/"
        );
        assert_eq!(
            crate::config::urls::check_proxy_url("http://[::1]:3128")
                .unwrap()
                .to_string(),
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
        let overrides = Overrides::default().with("egress.proxy.url", "http://127.0.0.1:3128");
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
        let overrides = Overrides::default()
            .with("egress.proxy.url", "http://127.0.0.1:3128")
            .with("egress.proxy.auth_file", "/run/p");
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
