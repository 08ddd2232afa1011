//! The app's side: an HTTP/1.1 client, one fresh TCP connection per call.
//!
//! [`Call`] sends an ordinary request through hyper's client connection. [`send_raw`]
//! writes bytes exactly as given (absolute-form targets, `CONNECT`, paths a URI type
//! would normalise) and parses the answer itself, Content-Length or chunked.

use super::WAIT_LIMIT;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer a test reads.
const MAX_REPLY_BYTES: usize = 4 << 20;

/// An answer as the app receives it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("answer is not JSON ({error}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The `x-linepay-sidecar-error` header: present only on the sidecar's own answers.
    pub fn sidecar_error(&self) -> Option<&str> {
        self.header("x-linepay-sidecar-error")
    }

    /// `error.code` of the sidecar's JSON error body.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .pointer("/error/code")?
            .as_str()
            .map(str::to_owned)
    }

    /// `error.retry_safe` of the sidecar's JSON error body: whether the app may send the
    /// call again (nothing, or nothing LINE Pay could have acted on, left the sidecar).
    pub fn retry_safe(&self) -> Option<bool> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .pointer("/error/retry_safe")?
            .as_bool()
    }

    /// `error.message` of the sidecar's JSON error body.
    pub fn error_message(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .pointer("/error/message")?
            .as_str()
            .map(str::to_owned)
    }

    /// Asserts that this is the sidecar's own error answer: `status`, and `code` both in
    /// the `x-linepay-sidecar-error` header and as the body's `error.code`.
    #[track_caller]
    pub fn assert_sidecar_error(&self, status: u16, code: &str) {
        self.check_sidecar_error("", status, code);
    }

    /// [`Reply::assert_sidecar_error`] for one case of a table: a failure names the case
    /// (`case "double slash": expected 400 ambiguous_path, got 403: ...`).
    #[track_caller]
    pub fn assert_case_sidecar_error(&self, case: &str, status: u16, code: &str) {
        self.check_sidecar_error(&format!("case {case:?}: "), status, code);
    }

    #[track_caller]
    fn check_sidecar_error(&self, prefix: &str, status: u16, code: &str) {
        assert!(
            self.status == status,
            "{prefix}expected {status} {code}, got {}: {}",
            self.status,
            self.text()
        );
        assert_eq!(
            self.sidecar_error(),
            Some(code),
            "{prefix}x-linepay-sidecar-error header: {}",
            self.text()
        );
        assert_eq!(
            self.error_code().as_deref(),
            Some(code),
            "{prefix}error.code in the body: {}",
            self.text()
        );
    }

    /// LINE Pay's `returnCode`.
    pub fn return_code(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .get("returnCode")?
            .as_str()
            .map(str::to_owned)
    }
}

/// Builder for one call: `Call::post("/v3/payments/request", body).header(..).send(addr)`.
pub struct Call {
    method: Method,
    target: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// The local address the connection leaves from (`None`: the system's choice).
    source: Option<std::net::IpAddr>,
    /// How long to wait for the whole answer.
    limit: Duration,
}

impl Call {
    pub fn new(method: Method, target: &str) -> Call {
        Call {
            method,
            target: target.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            source: None,
            limit: WAIT_LIMIT,
        }
    }

    /// Waits this long for the answer instead of [`WAIT_LIMIT`]: for a call the sidecar
    /// answers only after LINE Pay's processing limit (a money call reconciled after 20 s
    /// or more).
    pub fn within(mut self, limit: Duration) -> Call {
        self.limit = limit;
        self
    }

    /// Connects from `source` (e.g. `127.0.0.7`, another loopback peer, or one of the
    /// host's own non-loopback addresses).
    pub fn from(mut self, source: std::net::IpAddr) -> Call {
        self.source = Some(source);
        self
    }

    /// A POST with `Content-Type: application/json` and these exact body bytes.
    pub fn post(target: &str, body: impl Into<Bytes>) -> Call {
        Call::new(Method::POST, target)
            .header("content-type", "application/json")
            .body(body)
    }

    pub fn get(target: &str) -> Call {
        Call::new(Method::GET, target)
    }

    /// Appends a header (repeat a name to send it twice). A `host` header given here
    /// replaces the default one.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|error| panic!("bad header name {name}: {error}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|error| panic!("bad header value {value}: {error}"));
        self.headers.push((name, value));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = body.into();
        self
    }

    /// Sends the call on a new connection and reads the whole answer (bounded in time).
    pub async fn send(self, addr: SocketAddr) -> Reply {
        let limit = self.limit;
        let exchange = async {
            let stream = match self.source {
                None => TcpStream::connect(addr).await?,
                Some(source) => {
                    let socket = match source {
                        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                    };
                    socket.bind(SocketAddr::new(source, 0))?;
                    socket.connect(addr).await?
                }
            };
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(connection);
            let mut request = Request::new(Full::new(self.body));
            *request.method_mut() = self.method;
            *request.uri_mut() = self
                .target
                .parse()
                .unwrap_or_else(|error| panic!("bad target {}: {error}", self.target));
            let headers = request.headers_mut();
            if !self
                .headers
                .iter()
                .any(|(name, _)| name == http::header::HOST)
            {
                headers.insert(
                    http::header::HOST,
                    HeaderValue::from_str(&addr.to_string())
                        .unwrap_or_else(|_| unreachable!("an address is a valid header")),
                );
            }
            for (name, value) in self.headers {
                headers.append(name, value);
            }
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            driver.abort();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => panic!("call to {addr} failed: {error}"),
            Err(_) => panic!("no answer from {addr} within {limit:?}"),
        }
    }
}

/// Writes `request` exactly as given on a new connection and reads one answer.
///
/// The write runs beside the read, so an answer that comes before the whole request was
/// accepted (a refusal on a declared length) is still read; write errors after that
/// point are ignored, since the server may close without reading the rest.
pub async fn send_raw(addr: SocketAddr, request: impl Into<Vec<u8>>) -> Reply {
    let request = request.into();
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut reader, mut writer) = stream.into_split();
        let write = tokio::spawn(async move {
            let _ = writer.write_all(&request).await;
            // Keep the write half open (no FIN) until the answer has been read.
            writer
        });
        let reply = read_response(&mut reader).await;
        write.abort();
        reply
    };
    match tokio::time::timeout(WAIT_LIMIT, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => panic!("raw call to {addr} failed: {error}"),
        Err(_) => panic!("no raw answer from {addr} within {WAIT_LIMIT:?}"),
    }
}

/// [`send_raw`] in two writes `pause` apart: a request whose body comes slowly.
pub async fn send_raw_in_two(
    addr: SocketAddr,
    first: impl Into<Vec<u8>>,
    pause: Duration,
    rest: impl Into<Vec<u8>>,
) -> Reply {
    let (first, rest) = (first.into(), rest.into());
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut reader, mut writer) = stream.into_split();
        let write = tokio::spawn(async move {
            let _ = writer.write_all(&first).await;
            tokio::time::sleep(pause).await;
            let _ = writer.write_all(&rest).await;
            writer
        });
        let reply = read_response(&mut reader).await;
        write.abort();
        reply
    };
    match tokio::time::timeout(WAIT_LIMIT, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => panic!("raw call to {addr} failed: {error}"),
        Err(_) => panic!("no raw answer from {addr} within {WAIT_LIMIT:?}"),
    }
}

type ReadResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Reads one HTTP/1.1 response: head, then a Content-Length, chunked or close-delimited
/// body.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> ReadResult<Reply> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        if fill(stream, &mut buffer).await? == 0 {
            return Err(format!(
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&buffer)
            )
            .into());
        }
    };
    let head = std::str::from_utf8(&buffer[..head_end])?.to_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    let mut rest = buffer.split_off(head_end + 4);

    let chunked = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let body = if chunked {
        read_chunked(stream, rest).await?
    } else if let Some(length) = length {
        while rest.len() < length {
            if fill(stream, &mut rest).await? == 0 {
                return Err(format!("body cut short: {} of {length} bytes", rest.len()).into());
            }
        }
        rest.truncate(length);
        rest
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        while fill(stream, &mut rest).await? > 0 {}
        rest
    };
    Ok(Reply {
        status,
        headers,
        body: Bytes::from(body),
    })
}

async fn read_chunked(
    stream: &mut (impl AsyncReadExt + Unpin),
    mut pending: Vec<u8>,
) -> ReadResult<Vec<u8>> {
    let mut body = Vec::new();
    // Each pass consumes one chunk; MAX_REPLY_BYTES bounds how many there can be.
    for _ in 0..MAX_REPLY_BYTES {
        let line_end = loop {
            if let Some(at) = find(&pending, b"\r\n") {
                break at;
            }
            if fill(stream, &mut pending).await? == 0 {
                return Err("chunked body cut short in a size line".into());
            }
        };
        let size_text = std::str::from_utf8(&pending[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        pending.drain(..line_end + 2);
        if size == 0 {
            // Trailers (if any) up to the empty line; none are expected here.
            while find(&pending, b"\r\n").is_none() {
                if fill(stream, &mut pending).await? == 0 {
                    break;
                }
            }
            return Ok(body);
        }
        while pending.len() < size + 2 {
            if fill(stream, &mut pending).await? == 0 {
                return Err("chunked body cut short in a chunk".into());
            }
        }
        body.extend_from_slice(&pending[..size]);
        pending.drain(..size + 2);
    }
    Err("too many chunks".into())
}

/// Reads once more into `buffer`; returns how many bytes came (0 at EOF).
async fn fill(stream: &mut (impl AsyncReadExt + Unpin), buffer: &mut Vec<u8>) -> ReadResult<usize> {
    if buffer.len() > MAX_REPLY_BYTES {
        return Err(format!("answer larger than {MAX_REPLY_BYTES} bytes").into());
    }
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[tokio::test]
async fn raw_reader_parses_chunked_and_length_bodies() {
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n";
    let reply = read_response(&mut &chunked[..])
        .await
        .expect("chunked parses");
    assert_eq!((reply.status, &reply.body[..]), (200, &b"abcdefg"[..]));
    assert_eq!(reply.header("x-a"), Some("1"));

    let sized: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n\r\n{}trailing";
    let reply = read_response(&mut &sized[..]).await.expect("sized parses");
    assert_eq!((reply.status, &reply.body[..]), (413, &b"{}"[..]));

    let cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}";
    assert!(read_response(&mut &cut[..]).await.is_err());
}
