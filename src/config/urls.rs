//! URL rules, each once: the upstream (LINE Pay), the egress proxy and the `expect_ip`
//! echo service. A URL that carries credentials is refused without being quoted, since
//! the text before `@` would be a password.

use super::egress::ENV_EGRESS_PROXY_AUTH_FILE;
use std::net::IpAddr;

/// An upstream is `https://host[:port]`, or `http://` to a loopback address only (the
/// emulator and tests): a payment call never crosses a network in clear.
pub fn check_upstream_url(text: &str) -> Result<http::Uri, String> {
    refuse_credentials(text, "LINE Pay needs none, remove them")?;
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL such as https://api-pay.line.me"))?;
    let Some(host) = uri.host() else {
        return Err(format!("`{text}` has no host"));
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "`{text}` must be scheme and host only; the path comes from each call"
        ));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback_host(host) => {}
        Some("http") => {
            return Err(format!(
                "`{text}` is plain http to a non-loopback host; LINE Pay calls must use https:// (http:// is accepted only for 127.0.0.0/8, [::1] and localhost)"
            ))
        }
        _ => return Err(format!("`{text}` must start with https://")),
    }
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|_| format!("`{text}` is not a valid upstream URL"))
}

/// Refuses `user:password@` in a URL without quoting the URL, whose text before `@`
/// would be a password.
pub(crate) fn refuse_credentials(text: &str, advice: &str) -> Result<(), String> {
    if text.contains('@') {
        return Err(format!(
            "the URL carries credentials (user:password@); {advice}"
        ));
    }
    Ok(())
}

/// `localhost`, or an address in 127.0.0.0/8 or `[::1]`: where plain http is allowed.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `http://host[:port]` with no credentials, path or query. The text is quoted in
/// errors only when it cannot hold a password.
pub(crate) fn check_proxy_url(text: &str) -> Result<http::Uri, String> {
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

/// `https://...`, or `http://` to a loopback host (a local echo in tests): an answer
/// in clear could be forged on the way.
pub(crate) fn check_echo_url(text: &str) -> Result<http::Uri, String> {
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
