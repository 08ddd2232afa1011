//! The `healthcheck` subcommand: one `GET /healthz` (or `/readyz`) to a running sidecar's
//! admin port, for a container `HEALTHCHECK` in an image with no shell and no curl.
//!
//! A module of the binary, with no dependency beyond std: one HTTP/1.1 request on a
//! blocking TCP socket, every step bounded by the one deadline. Healthy means the admin
//! port answered `200`; anything else (refused, timed out, another status, garbage) is
//! unhealthy.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The most of the answer that is read: a status line and a short body.
const MAX_ANSWER_BYTES: usize = 4096;

/// What the admin port answered.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The body, trimmed (for `/readyz`, the reasons it is not ready).
    pub(crate) body: String,
}

/// The address to connect to for a listen address: a wildcard listener (`0.0.0.0`,
/// `[::]`) is reached on the loopback address of its family.
pub(crate) fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET path` on `address`, all of it within `timeout`.
pub(crate) fn get(address: SocketAddr, path: &str, timeout: Duration) -> Result<Answer, String> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("no answer within {}", humantime::format_duration(timeout)))
    };
    let mut stream = TcpStream::connect_timeout(&address, remaining()?)
        .map_err(|error| format!("cannot connect: {error}"))?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(|error| error.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: linepay-sidecar-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("cannot send the request: {error}"))?;

    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|error| error.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() >= MAX_ANSWER_BYTES {
                    break;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                ))
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("cannot read the answer: {error}")),
        }
    }
    parse(&answer)
}

/// `HTTP/1.x NNN ...` → the status, and the body after the blank line.
fn parse(answer: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(answer);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                status_line.chars().take(80).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned())
        .unwrap_or_default();
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        let at = |text: &str| target(text.parse().expect("address"));
        assert_eq!(at("0.0.0.0:9464"), "127.0.0.1:9464".parse().expect("a"));
        assert_eq!(at("[::]:9464"), "[::1]:9464".parse().expect("a"));
        assert_eq!(at("127.0.0.1:9464"), "127.0.0.1:9464".parse().expect("a"));
        assert_eq!(at("10.1.2.3:9"), "10.1.2.3:9".parse().expect("a"));
    }

    #[test]
    fn answers_are_read_strictly() {
        let answer = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready\ndraining: shutting down\n")
            .expect("parsed");
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body, "not ready\ndraining: shutting down");
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\n\r\nok\n").expect("ok").status,
            200
        );
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse(b"").is_err());
    }
}
