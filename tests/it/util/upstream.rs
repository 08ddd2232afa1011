//! Upstreams that live in the test process, on loopback sockets.
//!
//! [`Upstream`] is a real HTTP/1.1 server (hyper) that records every request it gets:
//! method, the request target exactly as received, every header (duplicates kept), the
//! exact body bytes and the peer address of the connection it came on. It answers with
//! a fixed response, optionally after a delay, or a target's own answer when one is set.
//!
//! [`RawUpstream`] speaks no HTTP at all: it reads a request head and writes fixed bytes
//! back, then closes; for answers no HTTP library would produce.
//!
//! [`EchoServer`] answers every request with the address it came from, as the public-IP
//! echo service behind `egress.expect_ip` does, and keeps each request head.

use super::WAIT_LIMIT;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The request target as it arrived (path and raw query).
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The sidecar's end of the TCP connection this request came on.
    pub peer: SocketAddr,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect()
    }

    /// The one value of a header; panics when it is absent or repeated.
    pub fn single(&self, name: &str) -> String {
        let values = self.all(name);
        assert_eq!(
            values.len(),
            1,
            "upstream expected exactly one `{name}` header, got {values:?}"
        );
        values.into_iter().next().unwrap_or_default()
    }
}

/// Builder: `Upstream::recording().respond_with(200, body).delay(d).start().await`.
pub struct UpstreamBuilder {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    delay: Duration,
    /// Answers to particular request targets (exact path and query as received).
    targets: Vec<TargetAnswer>,
}

/// The answer to one exact request target, after its own delay.
struct TargetAnswer {
    target: String,
    status: StatusCode,
    body: Bytes,
    delay: Duration,
}

impl UpstreamBuilder {
    /// Answer requests for exactly `target` (path and query as they arrive, encoding and
    /// all) with this status and body after `delay`, whatever the default answer is.
    pub fn answer_target(
        mut self,
        target: &str,
        status: u16,
        body: impl Into<Bytes>,
        delay: Duration,
    ) -> UpstreamBuilder {
        self.targets.push(TargetAnswer {
            target: target.to_owned(),
            status: StatusCode::from_u16(status)
                .unwrap_or_else(|error| panic!("bad status {status}: {error}")),
            body: body.into(),
            delay,
        });
        self
    }

    /// Answer with this status and body (instead of a LINE Pay `0000`).
    pub fn respond_with(mut self, status: u16, body: impl Into<Bytes>) -> UpstreamBuilder {
        self.status = StatusCode::from_u16(status)
            .unwrap_or_else(|error| panic!("bad status {status}: {error}"));
        self.body = body.into();
        self
    }

    /// Adds (or, for `content-type`, replaces) a response header.
    pub fn header(mut self, name: &str, value: &str) -> UpstreamBuilder {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|error| panic!("bad header name {name}: {error}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|error| panic!("bad header value {value}: {error}"));
        self.headers.retain(|(existing, _)| {
            !(existing == http::header::CONTENT_TYPE && name == http::header::CONTENT_TYPE)
        });
        self.headers.push((name, value));
        self
    }

    /// Answer only after this long (the request is recorded on arrival).
    pub fn delay(mut self, delay: Duration) -> UpstreamBuilder {
        self.delay = delay;
        self
    }

    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the upstream: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("upstream has no address: {error}"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(self);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                // An accept error ends the upstream (its test then fails) rather than spin.
                let Ok((stream, peer)) = listener.accept().await else {
                    break;
                };
                let answer = answer.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let answer = answer.clone();
                            let recorded = recorded.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|collected| collected.to_bytes())
                                    .unwrap_or_default();
                                let target = parts
                                    .uri
                                    .path_and_query()
                                    .map_or_else(|| parts.uri.to_string(), |pq| pq.to_string());
                                let own = answer.targets.iter().find(|t| t.target == target);
                                lock(&recorded).push(Recorded {
                                    method: parts.method,
                                    target,
                                    headers: parts.headers,
                                    body,
                                    peer,
                                });
                                let (status, body, delay) = match own {
                                    Some(own) => (own.status, own.body.clone(), own.delay),
                                    None => (answer.status, answer.body.clone(), answer.delay),
                                };
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                let mut response = Response::new(Full::new(body));
                                *response.status_mut() = status;
                                for (name, value) in &answer.headers {
                                    response.headers_mut().append(name.clone(), value.clone());
                                }
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            requests,
            task,
        }
    }
}

/// A recording upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Answers `200 {"returnCode":"0000",...}` as `application/json` unless told otherwise.
    pub fn recording() -> UpstreamBuilder {
        UpstreamBuilder {
            status: StatusCode::OK,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from_static(br#"{"returnCode":"0000","returnMessage":"Success."}"#),
            delay: Duration::ZERO,
            targets: Vec::new(),
        }
    }

    /// `http://127.0.0.1:PORT`, for `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.requests).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.requests).len()
    }

    /// The only request received; panics when there were none or several.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one request upstream, got {}: {:?}",
            requests.len(),
            requests.iter().map(|r| &r.target).collect::<Vec<_>>()
        );
        requests
            .into_iter()
            .next()
            .unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream that answers every connection with fixed bytes and then closes it.
pub struct RawUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// Reads the request head (and whatever body came with it), writes `answer`, closes.
    pub async fn answering(answer: &'static [u8]) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the raw upstream: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("raw upstream has no address: {error}"));
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    break;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let read_head = async {
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 1 << 20 {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&chunk[..n]),
                            }
                        }
                    };
                    let _ = tokio::time::timeout(WAIT_LIMIT, read_head).await;
                    let _ = stream.write_all(answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        RawUpstream {
            addr,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers every request with the address of the connection it came on, as text, and
/// keeps each request head; stops (with every connection) when dropped.
pub struct EchoServer {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<(IpAddr, String)>>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the echo server: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("echo server has no address: {error}"));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, peer)) = listener.accept().await else {
                    break;
                };
                let seen = seen.clone();
                connections.spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match stream.read(&mut chunk).await {
                            Ok(n @ 1..) => head.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    lock(&seen).push((peer.ip(), String::from_utf8_lossy(&head).into_owned()));
                    let body = format!("{}\n", peer.ip());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        EchoServer { addr, heads, task }
    }

    /// Each request's source address and head, in arrival order.
    pub fn heads(&self) -> Vec<(IpAddr, String)> {
        lock(&self.heads).clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback URL on which nothing listens: a port that was bound, then released.
pub async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("cannot bind: {error}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("no address: {error}"));
    drop(listener);
    format!("http://{addr}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
