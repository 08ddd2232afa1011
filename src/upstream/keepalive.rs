//! Keep-alive connections to LINE Pay, one small stack of idle ones per proxy worker.
//!
//! Why not hyper-util's pooled `Client`: it is built for many hosts shared by many threads.
//! Per call it hashed its pool key with SipHash three times, checked a connection out of a
//! locked pool and back in, and boxed and moved its futures; callgrind put its
//! `send_request` at ~11,600 instructions per call (checkout ~3,300, return ~1,600, the
//! rest URI and header handling and memcpy of futures). Here every call goes to one host
//! from the worker thread it arrived on, so a worker's idle connections are a `Vec`: pop
//! one, send on it, push it back once its answer was read to the end. Measured before and
//! after this module (`scripts/bench-instructions.sh --calls 2000`): 144,561 -> 135,391
//! instructions per proxied call, `Upstream::send` inclusive 14,900 -> 4,700; and 8
//! fewer allocations per call (`tests/alloc.rs`: POST 47.4 -> 39.5, GET 28.0 -> 20.0).
//!
//! The money rule, never send a request twice: a request goes out again only when hyper
//! hands it back (the error of `try_send_request` carries the message), which it does only
//! while the connection's task has not yet taken it from the channel, so not a byte of it
//! was written; and only when the connection was an idle one (closed by the server while it
//! waited), as hyper-util did. Failures are told apart as hyper-util's were: only one to
//! open a connection says nothing was sent ([`SendError::Connect`]); every other one,
//! even a request handed back by a new connection, is an exchange that may have reached
//! LINE Pay.
//!
//! A connection goes back on the stack only after its answer was read to the end without an
//! error; any other end drops it, which closes it. At most `upstream.pool_max_idle_per_host`
//! wait per worker (one more is closed), and none longer than `upstream.pool_idle_timeout`:
//! an expired one is closed when a call finds it, or by a timer task while any wait.

use super::connector::Connector;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

type Sender = SendRequest<Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a call got no answer.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be opened: nothing was sent.
    Connect(BoxError),
    /// The exchange failed on an open connection: the request may have been written.
    Exchange(hyper::Error),
}

impl SendError {
    pub(super) fn error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            SendError::Connect(error) => &**error,
            SendError::Exchange(error) => error,
        }
    }
}

/// The idle connections of one upstream (and connect timeout), one stack per worker.
pub(super) struct KeepAlive {
    connector: Connector,
    /// `scheme://authority` of the upstream: what the connector dials.
    destination: Uri,
    host: HeaderValue,
    /// One per worker, and a last one for the calls made outside the workers (the main
    /// runtime's control tasks): a worker never takes a connection whose task runs on
    /// the main thread, which would carry each of its calls through that thread and make
    /// them wait whenever it is busy. Behind a lock because the outside stack may serve
    /// a multi-threaded runtime (the demo's); uncontended, two atomic operations a call.
    stacks: Box<[Arc<Mutex<Stack>>]>,
    idle_timeout: Duration,
    max_idle: usize,
    max_buf_size: usize,
}

#[derive(Default)]
struct Stack {
    /// Oldest first: pushed and popped at the end.
    idle: Vec<Idle>,
    /// A timer task is closing the expired ones.
    reaping: bool,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// A connection lent to one call, to hand back with [`KeepAlive::give_back`] once its
/// answer was read to the end.
pub(super) struct Lease {
    sender: Sender,
    stack: usize,
}

pub(super) struct Limits {
    pub(super) workers: usize,
    pub(super) idle_timeout: Duration,
    pub(super) max_idle: usize,
    pub(super) max_buf_size: usize,
}

impl KeepAlive {
    /// `None` when `destination` has no host to send in `Host`.
    pub(super) fn new(connector: Connector, destination: &Uri, limits: Limits) -> Option<Self> {
        Some(KeepAlive {
            connector,
            destination: destination.clone(),
            host: host_header(destination)?,
            stacks: (0..=limits.workers.max(1))
                .map(|_| Arc::default())
                .collect(),
            idle_timeout: limits.idle_timeout,
            max_idle: limits.max_idle,
            max_buf_size: limits.max_buf_size,
        })
    }

    /// Sends the request on an idle connection of `worker`'s stack (`None`: a thread
    /// outside the workers), or a new one.
    pub(super) async fn send(
        &self,
        worker: Option<usize>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        to_origin_form(&mut request, &self.host);
        let stack = self.stack_of(worker);
        loop {
            let (mut sender, reused) = match self.take_idle(stack) {
                Some(sender) => (sender, true),
                None => (
                    open(&self.connector, &self.destination, self.max_buf_size).await?,
                    false,
                ),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease { sender, stack })),
                Err(mut error) => match error.take_message() {
                    // Handed back: the connection task never took it, so none of it was
                    // written. Ends: each turn drops an idle connection or opens a new one.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Exchange(error.into_error())),
                },
            }
        }
    }

    /// Puts a connection whose answer was read to the end back on its stack.
    pub(super) fn give_back(&self, lease: Lease) {
        let Lease { mut sender, stack } = lease;
        let Some(stack) = self.stacks.get(stack) else {
            return;
        };
        let (idle_timeout, max_idle) = (self.idle_timeout, self.max_idle);
        if sender.is_ready() {
            push(stack, sender, idle_timeout, max_idle);
        } else if !sender.is_closed() && max_idle > 0 {
            // Its task has not yet seen the answer's end; wait for it off the call's path.
            let stack = stack.clone();
            tokio::spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(idle_timeout, sender.ready()).await {
                    push(&stack, sender, idle_timeout, max_idle);
                }
            });
        }
    }

    /// The last stack is the one outside the workers.
    fn stack_of(&self, worker: Option<usize>) -> usize {
        let workers = self.stacks.len() - 1;
        worker.map_or(workers, |worker| worker % workers)
    }

    fn take_idle(&self, stack: usize) -> Option<Sender> {
        let mut stack = lock(self.stacks.get(stack)?);
        while let Some(idle) = stack.idle.pop() {
            if idle.since.elapsed() >= self.idle_timeout {
                // The ones below waited longer still.
                stack.idle.clear();
                return None;
            }
            if idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
        None
    }

    /// How many connections wait on `worker`'s stack (for tests).
    #[cfg(test)]
    fn idle_count(&self, worker: usize) -> usize {
        lock(&self.stacks[self.stack_of(Some(worker))]).idle.len()
    }
}

/// Opens one connection through the connector (egress path, TLS, connect timeout) and
/// runs it on the current runtime, so it stays on the thread of the call that opened it.
pub(super) async fn open(
    connector: &Connector,
    destination: &Uri,
    max_buf_size: usize,
) -> Result<Sender, SendError> {
    let mut connector = connector.clone();
    let io = tower_service::Service::call(&mut connector, destination.clone())
        .await
        .map_err(SendError::Connect)?;
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(max_buf_size)
        .handshake(io)
        .await
        .map_err(SendError::Exchange)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection closed with an error");
        }
    });
    Ok(sender)
}

/// What hyper-util's client did to each request on a direct connection: `Host` from the
/// URI unless set, and the URI in origin form (`/path?query`).
pub(super) fn to_origin_form(request: &mut Request<Full<Bytes>>, host: &HeaderValue) {
    request
        .headers_mut()
        .entry(HOST)
        .or_insert_with(|| host.clone());
    let uri = request.uri_mut();
    // The proxy's own requests are built in origin form already: nothing to cut.
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    *uri = match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
}

/// `host`, or `host:port` when the port is not the scheme's default (as hyper-util sent).
pub(super) fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    let value = match (uri.port(), secure) {
        (Some(port), true) if port.as_u16() != 443 => format!("{host}:{port}"),
        (Some(port), false) if port.as_u16() != 80 => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

fn lock(stack: &Mutex<Stack>) -> MutexGuard<'_, Stack> {
    stack.lock().unwrap_or_else(PoisonError::into_inner)
}

fn push(stack: &Arc<Mutex<Stack>>, sender: Sender, idle_timeout: Duration, max_idle: usize) {
    let start_timer = {
        let mut guard = lock(stack);
        if guard.idle.len() >= max_idle {
            return;
        }
        guard.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
        !std::mem::replace(&mut guard.reaping, true)
    };
    // Outside the lock: a runtime that is shutting down drops the task at once, and
    // its `Reaping` takes the lock to lower the flag.
    if start_timer {
        let reaping = Reaping(Some(Arc::downgrade(stack)));
        tokio::spawn(reap(reaping, idle_timeout));
    }
}

/// Closes the connections that waited `idle_timeout`, until none wait (or the upstream is
/// dropped: a reload's old client). `reaping` is made before the task is spawned, so a
/// task dropped before it ever ran (its runtime shut down) lowers the flag too.
async fn reap(mut reaping: Reaping, idle_timeout: Duration) {
    let Some(stack) = reaping.0.clone() else {
        return;
    };
    loop {
        let next = {
            let Some(stack) = stack.upgrade() else { return };
            let mut stack = lock(&stack);
            let now = Instant::now();
            stack.idle.retain(|idle| {
                now.duration_since(idle.since) < idle_timeout && !idle.sender.is_closed()
            });
            match stack.idle.first() {
                Some(oldest) => oldest.since + idle_timeout,
                None => {
                    // Under the lock: the next push sees the flag down and starts a timer.
                    stack.reaping = false;
                    reaping.0 = None;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Lowers the stack's flag if its timer task is dropped (its runtime shut down), so the
/// next push starts another.
struct Reaping(Option<Weak<Mutex<Stack>>>);

impl Drop for Reaping {
    fn drop(&mut self) {
        if let Some(stack) = self.0.take().and_then(|stack| stack.upgrade()) {
            lock(&stack).reaping = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use crate::egress::EgressConfig;
    use crate::route::RouteTimeouts;
    use crate::upstream::connector::{connector, tls_config};
    use crate::upstream::{Upstream, UpstreamError};
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const CONNECT: Duration = Duration::from_secs(2);

    /// What the test upstream does with its n-th request (counted over all connections).
    #[derive(Clone, Copy)]
    enum Reply {
        /// `200` with a body of this many bytes, keeping the connection open.
        Answer(usize),
        /// Reads the request whole, then closes the connection without a word.
        HangUp,
    }

    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        /// Connections whose peer (the sidecar) closed them.
        closed: AtomicUsize,
        heads: Mutex<Vec<String>>,
    }

    struct Server {
        address: SocketAddr,
        seen: Arc<Seen>,
    }

    impl Server {
        fn connections(&self) -> usize {
            self.seen.connections.load(Ordering::SeqCst)
        }
        fn closed(&self) -> usize {
            self.seen.closed.load(Ordering::SeqCst)
        }
        fn heads(&self) -> Vec<String> {
            self.seen.heads.lock().unwrap().clone()
        }
        fn url(&self) -> String {
            format!("http://{}", self.address)
        }
    }

    /// A keep-alive HTTP/1.1 upstream following `replies` (then answering 2 bytes).
    async fn server(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let replies = Arc::new(replies);
        let state = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let (state, replies) = (state.clone(), replies.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let Some(head) = read_request(&mut socket, &mut buffer).await else {
                            state.closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        let index = {
                            let mut heads = state.heads.lock().unwrap();
                            heads.push(head);
                            heads.len() - 1
                        };
                        match replies.get(index).copied().unwrap_or(Reply::Answer(2)) {
                            Reply::Answer(length) => {
                                let answer = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n{}",
                                    "x".repeat(length)
                                );
                                socket.write_all(answer.as_bytes()).await.unwrap();
                            }
                            Reply::HangUp => return,
                        }
                    }
                });
            }
        });
        Server { address, seen }
    }

    /// One request's head (its body, by Content-Length, is read and dropped); `None` at EOF.
    pub(super) async fn read_request(
        socket: &mut tokio::net::TcpStream,
        buffer: &mut Vec<u8>,
    ) -> Option<String> {
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buffer.len() < end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..end + length);
        Some(head)
    }

    fn keepalive(server: &Server, idle_timeout: Duration, max_idle: usize) -> KeepAlive {
        plain_keepalive(&server.url(), 2, idle_timeout, max_idle)
    }

    /// A keep-alive client of `url` over plain TCP (no egress settings), as every test
    /// module here builds one.
    pub(super) fn plain_keepalive(
        url: &str,
        workers: usize,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> KeepAlive {
        let connector = connector(
            tls_config(None).unwrap(),
            CONNECT,
            &EgressConfig::default(),
            None,
        )
        .unwrap();
        let limits = Limits {
            workers,
            idle_timeout,
            max_idle,
            max_buf_size: 64 * 1024,
        };
        KeepAlive::new(connector, &url.parse().unwrap(), limits).unwrap()
    }

    fn request(server: &Server) -> Request<Full<Bytes>> {
        Request::post(format!("{}/v3/payments/request", server.url()))
            .body(Full::new(Bytes::from_static(b"{\"amount\":1}")))
            .unwrap()
    }

    /// One call read to the end, its connection handed back.
    async fn call(
        keepalive: &KeepAlive,
        server: &Server,
        worker: usize,
    ) -> Result<Bytes, SendError> {
        let (response, lease) = keepalive.send(Some(worker), request(server)).await?;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        keepalive.give_back(lease);
        Ok(body)
    }

    /// The proxy builds its requests in origin form; other callers (the echo client, tests)
    /// pass absolute URIs: both go out as the same `/path?query` with the upstream's `Host`.
    #[test]
    fn origin_form_is_kept_and_absolute_form_is_cut_to_it() {
        let host = HeaderValue::from_static("api-pay.line.me");
        let target = "/v3/payments?transactionId=1&orderId=a%20b";
        let mut absolute = Request::get(format!("https://api-pay.line.me{target}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let mut origin = Request::get(target).body(Full::new(Bytes::new())).unwrap();
        to_origin_form(&mut absolute, &host);
        to_origin_form(&mut origin, &host);
        for request in [&absolute, &origin] {
            assert_eq!(request.uri().to_string(), target);
            assert!(request.uri().scheme().is_none() && request.uri().authority().is_none());
            assert_eq!(request.headers()[HOST], "api-pay.line.me");
        }
        let mut root = Request::get("https://api-pay.line.me/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        to_origin_form(&mut root, &host);
        assert_eq!(root.uri().to_string(), "/");
    }

    #[tokio::test]
    async fn an_answer_read_to_the_end_leaves_its_connection_for_the_next_call_of_its_worker() {
        let server = server(vec![]).await;
        let keepalive = keepalive(&server, Duration::from_secs(60), 4);
        for _ in 0..3 {
            assert_eq!(call(&keepalive, &server, 0).await.unwrap(), "xx");
        }
        assert_eq!(server.connections(), 1);
        assert_eq!(keepalive.idle_count(0), 1);
        // Another worker's calls do not take it.
        call(&keepalive, &server, 1).await.unwrap();
        assert_eq!(server.connections(), 2);
        let heads = server.heads();
        assert_eq!(heads.len(), 4);
        // Origin form and Host, as hyper-util's client sent them.
        assert!(
            heads[0].starts_with("POST /v3/payments/request HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        let host = format!("host: {}\r\n", server.address);
        assert!(
            heads[0].to_ascii_lowercase().contains(&host),
            "{}",
            heads[0]
        );
    }

    #[tokio::test]
    async fn a_request_handed_back_unwritten_by_an_idle_connection_goes_once_on_a_new_one() {
        let server = server(vec![]).await;
        let keepalive = keepalive(&server, Duration::from_secs(60), 4);
        // An idle connection whose peer closes it before its task notices.
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (mut sender, connection) = http1::handshake(TokioIo::new(near)).await.unwrap();
        tokio::spawn(connection);
        sender.ready().await.unwrap();
        keepalive.give_back(Lease { sender, stack: 0 });
        assert_eq!(keepalive.idle_count(0), 1);
        far.shutdown().await.unwrap();

        assert_eq!(call(&keepalive, &server, 0).await.unwrap(), "xx");
        assert_eq!(server.heads().len(), 1);
        assert_eq!(server.connections(), 1);
        // Not a byte of it went to the closed connection.
        let mut written = Vec::new();
        far.read_to_end(&mut written).await.unwrap();
        assert!(written.is_empty(), "{}", String::from_utf8_lossy(&written));
    }

    #[tokio::test]
    async fn a_request_that_may_have_been_written_is_never_sent_again() {
        let server = server(vec![Reply::Answer(2), Reply::HangUp]).await;
        let keepalive = keepalive(&server, Duration::from_secs(60), 4);
        call(&keepalive, &server, 0).await.unwrap();
        // Sent on the warm connection, which then closes without an answer.
        let error = call(&keepalive, &server, 0).await.unwrap_err();
        assert!(matches!(error, SendError::Exchange(_)), "{error:?}");
        assert_eq!(server.heads().len(), 2);
        assert_eq!(server.connections(), 1);
        assert_eq!(keepalive.idle_count(0), 0);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_used_again() {
        let server = server(vec![Reply::Answer(2), Reply::HangUp, Reply::Answer(3)]).await;
        let keepalive = keepalive(&server, Duration::from_secs(60), 4);
        call(&keepalive, &server, 0).await.unwrap();
        let _ = call(&keepalive, &server, 0).await.unwrap_err();
        // A connection the server closed after answering, noticed while it waited.
        assert_eq!(call(&keepalive, &server, 0).await.unwrap(), "xxx");
        assert_eq!(server.connections(), 2);
        assert_eq!(server.heads().len(), 3);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let server = server(vec![]).await;
        let keepalive = keepalive(&server, Duration::from_millis(100), 4);
        call(&keepalive, &server, 0).await.unwrap();
        assert_eq!(keepalive.idle_count(0), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(keepalive.idle_count(0), 0);
        assert_eq!(server.closed(), 1);
        // And the next call opens a new one, whose timer closes it in turn.
        call(&keepalive, &server, 0).await.unwrap();
        assert_eq!(server.connections(), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(server.closed(), 2);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_wait_per_worker() {
        let server = server(vec![]).await;
        let keepalive = keepalive(&server, Duration::from_secs(60), 1);
        let (first, a) = keepalive.send(Some(0), request(&server)).await.unwrap();
        let (second, b) = keepalive.send(Some(0), request(&server)).await.unwrap();
        for (response, lease) in [(first, a), (second, b)] {
            response.into_body().collect().await.unwrap();
            keepalive.give_back(lease);
        }
        assert_eq!(keepalive.idle_count(0), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.closed(), 1);
        let none = keepalive_with(&server, 0);
        call(&none, &server, 0).await.unwrap();
        assert_eq!(none.idle_count(0), 0);
    }

    fn keepalive_with(server: &Server, max_idle: usize) -> KeepAlive {
        keepalive(server, Duration::from_secs(60), max_idle)
    }

    fn upstream(server: &Server, max_response_bytes: usize) -> Upstream {
        super::super::loopback_for_tests(&server.url(), CONNECT, max_response_bytes)
    }

    async fn send(
        upstream: &Upstream,
        server: &Server,
        read: Duration,
    ) -> Result<http::Response<Bytes>, UpstreamError> {
        let mut charge = Budget::new(1 << 20).nothing();
        let timeouts = RouteTimeouts {
            connect: CONNECT,
            read,
        };
        upstream.send(request(server), timeouts, &mut charge).await
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_not_read_to_the_end_is_not_used_again() {
        let server = server(vec![Reply::Answer(100), Reply::Answer(2), Reply::Answer(2)]).await;
        let upstream = upstream(&server, 16);
        let error = send(&upstream, &server, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(error, UpstreamError::ResponseTooLarge { limit: 16 });
        assert_eq!(
            send(&upstream, &server, Duration::from_secs(2))
                .await
                .unwrap()
                .into_body(),
            "xx"
        );
        send(&upstream, &server, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test]
    async fn a_connection_that_timed_out_is_closed() {
        // An upstream that reads the call and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = Server {
            address: listener.local_addr().unwrap(),
            seen: Arc::default(),
        };
        let accepted = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let upstream = upstream(&silent, 1024);
        let read = Duration::from_millis(200);
        let error = send(&upstream, &silent, read).await.unwrap_err();
        assert_eq!(error, UpstreamError::ReadTimeout(read));
        // The sidecar closed it: the upstream reads the request, then the end.
        let mut socket = accepted.await.unwrap().unwrap();
        let mut seen = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut seen));
        closed.await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&seen).starts_with("POST /v3/payments/request"));
    }
}

/// Adversarial tests: an upstream that writes exactly the bytes a test scripts, when it
/// scripts them, so each way an answer can end (or not) is checked against reuse.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod scripted {
    use super::*;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[derive(Clone)]
    enum Step {
        Write(Vec<u8>),
        Sleep(Duration),
        /// Closes with a reset (linger 0), as a crashed or impatient peer does.
        Reset,
    }

    fn write(bytes: &str) -> Step {
        Step::Write(bytes.as_bytes().to_vec())
    }

    fn answer(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    struct Scripted {
        address: SocketAddr,
        /// (connection index, request head) per request, in arrival order.
        seen: Arc<Mutex<Vec<(usize, String)>>>,
    }

    impl Scripted {
        fn seen(&self) -> Vec<(usize, String)> {
            self.seen.lock().unwrap().clone()
        }
        fn connections_used(&self) -> Vec<usize> {
            self.seen().into_iter().map(|(c, _)| c).collect()
        }
    }

    /// The n-th request (over all connections) gets `scripts[n]`, then `answer("ok")`.
    async fn scripted(scripts: Vec<Vec<Step>>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let scripts = Arc::new(scripts);
        let state = seen.clone();
        tokio::spawn(async move {
            let mut index = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                let connection = index;
                index += 1;
                let (state, scripts) = (state.clone(), scripts.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let Some(head) = super::tests::read_request(&mut socket, &mut buffer).await
                        else {
                            return;
                        };
                        let n = {
                            let mut seen = state.lock().unwrap();
                            seen.push((connection, head));
                            seen.len() - 1
                        };
                        let script = scripts
                            .get(n)
                            .cloned()
                            .unwrap_or_else(|| vec![write(&answer("ok"))]);
                        for step in script {
                            match step {
                                Step::Write(bytes) => {
                                    if socket.write_all(&bytes).await.is_err() {
                                        return;
                                    }
                                }
                                Step::Sleep(pause) => tokio::time::sleep(pause).await,
                                Step::Reset => {
                                    let socket = socket.into_std().unwrap();
                                    socket2::SockRef::from(&socket)
                                        .set_linger(Some(Duration::ZERO))
                                        .unwrap();
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Scripted { address, seen }
    }

    fn keepalive(server: &Scripted) -> KeepAlive {
        let url = format!("http://{}", server.address);
        super::tests::plain_keepalive(&url, 1, Duration::from_secs(60), 4)
    }

    fn request(server: &Scripted) -> Request<Full<Bytes>> {
        Request::post(format!("http://{}/v3/payments/request", server.address))
            .body(Full::new(Bytes::from_static(b"{\"amount\":1}")))
            .unwrap()
    }

    /// One call read to the end (its connection given back), as `Upstream::send` does.
    async fn call(keepalive: &KeepAlive, server: &Scripted) -> Result<Bytes, String> {
        let (response, lease) = keepalive
            .send(Some(0), request(server))
            .await
            .map_err(|e| format!("{e:?}"))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        keepalive.give_back(lease);
        Ok(body)
    }

    const SETTLE: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn an_answer_the_upstream_sends_unasked_on_an_idle_connection_is_never_the_next_calls() {
        let server = scripted(vec![vec![
            write(&answer("first")),
            Step::Sleep(Duration::from_millis(30)),
            write(&answer("WRONG")),
        ]])
        .await;
        let keepalive = keepalive(&server);
        assert_eq!(call(&keepalive, &server).await.unwrap(), "first");
        tokio::time::sleep(SETTLE).await;
        assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
        assert_eq!(server.connections_used(), vec![0, 1]);
    }

    #[tokio::test]
    async fn bytes_after_the_answer_in_the_same_write_close_the_connection() {
        let extra = format!("{}{}", answer("first"), answer("WRONG"));
        let server = scripted(vec![vec![write(&extra)]]).await;
        let keepalive = keepalive(&server);
        assert_eq!(call(&keepalive, &server).await.unwrap(), "first");
        // At once: no time for anything but what the first read brought.
        assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
        assert_eq!(server.connections_used(), vec![0, 1]);
    }

    #[tokio::test]
    async fn a_204_or_304_with_a_body_is_not_reused() {
        for status in ["204 No Content", "304 Not Modified"] {
            let extra = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\nWRONG");
            let server = scripted(vec![vec![write(&extra)]]).await;
            let keepalive = keepalive(&server);
            assert_eq!(call(&keepalive, &server).await.unwrap(), "");
            assert_eq!(call(&keepalive, &server).await.unwrap(), "ok", "{status}");
            assert_eq!(server.connections_used(), vec![0, 1], "{status}");
        }
    }

    #[tokio::test]
    async fn connection_close_and_http_1_0_answers_are_not_reused() {
        for first in [
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst",
            "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
        ] {
            // The upstream keeps its end open and would answer more.
            let server = scripted(vec![vec![write(first)]]).await;
            let keepalive = keepalive(&server);
            assert_eq!(call(&keepalive, &server).await.unwrap(), "first");
            assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
            assert_eq!(server.connections_used(), vec![0, 1], "{first}");
        }
    }

    #[tokio::test]
    async fn an_answer_delimited_by_the_close_is_read_whole_and_not_reused() {
        let server = scripted(vec![vec![
            write("HTTP/1.1 200 OK\r\n\r\nfir"),
            Step::Sleep(Duration::from_millis(20)),
            write("st"),
            Step::Reset,
        ]])
        .await;
        let keepalive = keepalive(&server);
        // A reset ends it: hyper reports the body as broken, so the call fails.
        let _ = call(&keepalive, &server).await;
        assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
        assert_eq!(server.connections_used(), vec![0, 1]);
    }

    #[tokio::test]
    async fn informational_answers_before_the_answer_leave_the_connection_in_step() {
        let server = scripted(vec![vec![
            write("HTTP/1.1 100 Continue\r\n\r\n"),
            Step::Sleep(Duration::from_millis(20)),
            write("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
            write(&answer("first")),
        ]])
        .await;
        let keepalive = keepalive(&server);
        assert_eq!(call(&keepalive, &server).await.unwrap(), "first");
        assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
        assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
        assert_eq!(server.connections_used(), vec![0, 0, 0]);
    }

    #[tokio::test]
    async fn a_chunked_answer_in_pieces_with_trailers_is_read_whole_then_reused() {
        let server = scripted(vec![vec![
            write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfir\r\n"),
            Step::Sleep(Duration::from_millis(20)),
            write("2\r\nst\r\n0\r\n"),
            Step::Sleep(Duration::from_millis(20)),
            write("X-Trailer: 1\r\n\r\n"),
        ]])
        .await;
        let keepalive = keepalive(&server);
        assert_eq!(call(&keepalive, &server).await.unwrap(), "first");
        assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
        assert_eq!(server.connections_used(), vec![0, 0]);
    }

    #[tokio::test]
    async fn a_read_timeout_mid_answer_never_leaves_its_rest_for_the_next_call() {
        use crate::budget::Budget;
        use crate::route::RouteTimeouts;
        use crate::upstream::UpstreamError;
        let late = format!("st12345{}", answer("WRONG"));
        let server = scripted(vec![vec![
            write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfir"),
            Step::Sleep(Duration::from_millis(300)),
            Step::Write(late.into_bytes()),
        ]])
        .await;
        let upstream = super::super::loopback_for_tests(
            &format!("http://{}", server.address),
            Duration::from_secs(2),
            1024,
        );
        let send = |read| {
            let timeouts = RouteTimeouts {
                connect: Duration::from_secs(2),
                read,
            };
            let request = request(&server);
            let upstream = &upstream;
            async move {
                let mut charge = Budget::new(1 << 20).nothing();
                upstream.send(request, timeouts, &mut charge).await
            }
        };
        let read = Duration::from_millis(100);
        assert_eq!(
            send(read).await.unwrap_err(),
            UpstreamError::ReadTimeout(read)
        );
        // Right away, and again once the rest has come.
        let answer = send(Duration::from_secs(2)).await.unwrap();
        assert_eq!(answer.into_body(), "ok");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let answer = send(Duration::from_secs(2)).await.unwrap();
        assert_eq!(answer.into_body(), "ok");
        assert_eq!(server.connections_used(), vec![0, 1, 1]);
    }

    /// A reload drops the old client: its idle connections close, and so does one whose
    /// task had not yet seen its answer end when it was given back.
    #[tokio::test]
    async fn dropping_the_client_closes_its_idle_connections_and_those_still_settling() {
        use hyper_util::rt::TokioIo;
        let server = scripted(vec![]).await;
        let keepalive = keepalive(&server);
        let (idle_near, mut idle_far) = tokio::io::duplex(4096);
        let (mut idle, connection) = http1::handshake(TokioIo::new(idle_near)).await.unwrap();
        tokio::spawn(connection);
        idle.ready().await.unwrap();
        keepalive.give_back(Lease {
            sender: idle,
            stack: 0,
        });
        // Not ready yet: its task has not run, so a waiter holds it.
        let (near, mut far) = tokio::io::duplex(4096);
        let (settling, connection) = http1::handshake(TokioIo::new(near)).await.unwrap();
        assert!(!settling.is_ready() && !settling.is_closed());
        keepalive.give_back(Lease {
            sender: settling,
            stack: 0,
        });
        assert_eq!(keepalive.idle_count(0), 1);
        drop(keepalive);
        tokio::spawn(connection);
        for far in [&mut idle_far, &mut far] {
            let mut written = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(2), far.read_to_end(&mut written));
            read.await.unwrap().unwrap();
            assert!(written.is_empty());
        }
    }

    /// A connection given back on a runtime that then shut down before its timer task
    /// ever ran must not leave the stack without a timer for good.
    #[test]
    fn a_timer_task_that_never_ran_does_not_stop_the_next_one() {
        use hyper_util::rt::TokioIo;
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let keepalive =
            super::tests::plain_keepalive("http://127.0.0.1:9", 1, Duration::from_millis(100), 4);
        async fn give_back_one(keepalive: &KeepAlive) -> tokio::io::DuplexStream {
            let (near, far) = tokio::io::duplex(4096);
            let (mut sender, connection) = http1::handshake(TokioIo::new(near)).await.unwrap();
            tokio::spawn(connection);
            sender.ready().await.unwrap();
            keepalive.give_back(Lease { sender, stack: 0 });
            far
        }
        // Returns as soon as it is given back: the timer task it spawned never runs.
        let first = runtime();
        let _far = first.block_on(give_back_one(&keepalive));
        drop(first);
        let second = runtime();
        second.block_on(async {
            let _far = give_back_one(&keepalive).await;
            assert_eq!(keepalive.idle_count(0), 2);
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(keepalive.idle_count(0), 0);
        });
    }

    #[tokio::test]
    async fn a_reset_while_idle_sends_the_next_call_on_a_new_connection_once() {
        let server = scripted(vec![vec![
            write(&answer("first")),
            Step::Sleep(Duration::from_millis(30)),
            Step::Reset,
        ]])
        .await;
        let keepalive = keepalive(&server);
        assert_eq!(call(&keepalive, &server).await.unwrap(), "first");
        tokio::time::sleep(SETTLE).await;
        assert_eq!(call(&keepalive, &server).await.unwrap(), "ok");
        assert_eq!(server.connections_used(), vec![0, 1]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod runtimes {
    use super::*;
    use crate::budget::Budget;
    use crate::route::RouteTimeouts;
    use crate::upstream::{enter_worker, Upstream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A keep-alive upstream on its own runtime (and threads), answering `ok` to every
    /// request and counting connections.
    fn upstream_elsewhere() -> (tokio::runtime::Runtime, String, Arc<AtomicUsize>) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Requests here have no body: a head is a request.
                        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            buffer.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if socket.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (runtime, url, connections)
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn get(upstream: &Upstream, url: &str) -> Result<Bytes, crate::upstream::UpstreamError> {
        let request = Request::get(format!("{url}/v3/payments?orderId=1"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let timeouts = RouteTimeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(2),
        };
        let mut charge = Budget::new(1 << 20).nothing();
        let answer = upstream.send(request, timeouts, &mut charge).await?;
        Ok(answer.into_body())
    }

    /// The control tasks (journal reconciliation, the money-call sweeper) call LINE Pay
    /// from the main runtime. A connection they open runs on the main thread; a worker
    /// that took it would send each of its calls through the main thread, and wait for
    /// it whenever it is busy (here: not running at all).
    #[test]
    fn a_connection_opened_outside_the_workers_never_carries_a_workers_call() {
        let (_server, url, connections) = upstream_elsewhere();
        let upstream = Arc::new(super::super::loopback_for_tests(
            &url,
            Duration::from_secs(2),
            1024,
        ));
        // This thread is no worker, as the main thread.
        let main = current_thread();
        assert_eq!(main.block_on(get(&upstream, &url)).unwrap(), "ok");
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        // The main runtime now runs nothing while worker 0 calls.
        let worker = {
            let (upstream, url) = (upstream.clone(), url.clone());
            std::thread::spawn(move || {
                enter_worker(0);
                let runtime = current_thread();
                let first = runtime.block_on(get(&upstream, &url));
                let second = runtime.block_on(get(&upstream, &url));
                (first, second)
            })
        };
        let (first, second) = worker.join().unwrap();
        assert_eq!(first.unwrap(), "ok");
        assert_eq!(second.unwrap(), "ok");
        // Worker 0 opened its own, and kept it.
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        // And the main thread's is still there for it.
        assert_eq!(main.block_on(get(&upstream, &url)).unwrap(), "ok");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
