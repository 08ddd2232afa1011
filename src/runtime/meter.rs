//! What a proxy connection's reads hold in memory, charged to the memory budget
//! ([`crate::budget`]) as it grows, and a request head that does not fit refused
//! before hyper buffers it (issue #17).
//!
//! hyper reads a request head into one buffer that starts at 8 KiB and grows as the
//! head does, up to `max_buf_size` (64 KiB) and, since one read may fill all of the
//! buffer's spare room, to about twice that; the buffer keeps its size for the rest of
//! the connection. A call's own charge (`crate::proxy`) covers its parsed head and its
//! declared body, not this buffer: before, 1,000 connections sending 60 KB heads held
//! ~120 MiB that no charge counted (docs/hardening.md, "Memory under the attack").
//!
//! The model: before each read outside a call, hyper's buffer holds at most the bytes
//! read since the last answer plus the room it offers for this read. Past
//! [`FREE_READ_BYTES`] (what every connection has, small heads included: part of the
//! fixed cost of a connection, not of the budget) that is charged, at the highest it
//! reached, for the life of the connection. Reads during a call (its body) are covered
//! by the call's charge.
//!
//! A growth that does not fit refuses the head before its bytes are read:
//! - on a connection that has not started a call yet, the sidecar's `503 overloaded`
//!   answer (built by the proxy: JSON, request id, log line, counted) is written at
//!   once and the connection is closed;
//! - on a keep-alive connection between calls, where an answer written here could
//!   overtake the previous call's, the connection is closed unanswered (logged).

use super::deadline::WriteDeadline;
use crate::budget::{Budget, Charge};
use bytes::Bytes;
use http::{Method, Response};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The read buffer every connection may hold without a charge: hyper's first buffer
/// (8 KiB) and one doubling, so calls with ordinary heads (a few hundred bytes) never
/// touch the budget.
pub(crate) const FREE_READ_BYTES: usize = 16 * 1024;

/// The refusal's answer, asked for once, when a head does not fit; given the request's
/// method when its first word was one.
pub(crate) type Refusal =
    Box<dyn FnOnce(Option<Method>) -> Pin<Box<dyn Future<Output = Response<Bytes>> + Send>> + Send>;

/// Bytes kept from the start of a connection, to name the refused call's method.
const METHOD_BYTES: usize = 8;

/// Shared by a connection's socket and its service: whether a call is running.
#[derive(Debug, Default)]
pub(crate) struct CallPhase {
    /// A call has started on this connection (its head was handed to the service).
    started: AtomicBool,
    /// From a call's start until its answer starts going out.
    in_call: AtomicBool,
}

impl CallPhase {
    /// Called by the service when hyper hands it a request.
    pub(crate) fn call_started(&self) {
        self.started.store(true, Ordering::Release);
        self.in_call.store(true, Ordering::Release);
    }
}

enum State {
    Reading,
    /// The head did not fit: the answer is being built.
    Refusing(Pin<Box<dyn Future<Output = Response<Bytes>> + Send>>),
    /// ... and written.
    Writing {
        answer: Bytes,
        written: usize,
    },
    /// Written (or given up on): every read fails from now on.
    Refused,
}

/// The proxy's socket, metered (see the module's doc).
pub(crate) struct Metered {
    inner: WriteDeadline<TcpStream>,
    phase: Arc<CallPhase>,
    charge: Charge,
    /// Bytes read since the last answer started (the head in progress, and whatever a
    /// client pipelined after it).
    read_since_answer: usize,
    refusal: Option<Refusal>,
    /// The connection's first bytes (its first request's method).
    first_bytes: ([u8; METHOD_BYTES], usize),
    state: State,
}

impl Metered {
    pub(crate) fn new(
        inner: WriteDeadline<TcpStream>,
        budget: &Arc<Budget>,
        phase: Arc<CallPhase>,
        refusal: Refusal,
    ) -> Metered {
        Metered {
            inner,
            phase,
            charge: budget.nothing(),
            read_since_answer: 0,
            refusal: Some(refusal),
            first_bytes: ([0; METHOD_BYTES], 0),
            state: State::Reading,
        }
    }

    /// Charges what hyper's buffer may hold after a read that is offered `room` bytes;
    /// `false` when that does not fit.
    fn charge_for_read(&mut self, room: usize) -> bool {
        if self.phase.in_call.load(Ordering::Acquire) {
            return true;
        }
        let holds = self
            .read_since_answer
            .saturating_add(room)
            .saturating_sub(FREE_READ_BYTES);
        let growth = holds.saturating_sub(self.charge.bytes());
        growth == 0 || self.charge.grow(growth)
    }

    /// The head that did not fit: answered on a fresh connection, closed otherwise.
    fn refuse(&mut self) {
        match self.refusal.take() {
            Some(refusal) if !self.phase.started.load(Ordering::Acquire) => {
                let (bytes, len) = &self.first_bytes;
                self.state = State::Refusing(refusal(method(&bytes[..*len])));
            }
            _ => {
                tracing::warn!(
                    limit = self.charge.limit(),
                    "connection closed: its next request head does not fit in the memory budget (request.max_buffered_bytes)"
                );
                self.state = State::Refused;
            }
        }
    }

    /// Drives the refusal; `Ready` once there is nothing more to write.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            match &mut self.state {
                State::Reading => return Poll::Ready(over_budget()),
                State::Refusing(answer) => {
                    let answer = ready!(answer.as_mut().poll(cx));
                    self.state = State::Writing {
                        answer: wire_bytes(&answer),
                        written: 0,
                    };
                }
                State::Writing { answer, written } => {
                    if *written == answer.len() {
                        let flushed = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                        self.state = State::Refused;
                        if let Err(error) = flushed {
                            return Poll::Ready(error);
                        }
                        continue;
                    }
                    match ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..])) {
                        Ok(0) | Err(_) => self.state = State::Refused,
                        Ok(n) => *written += n,
                    }
                }
                State::Refused => return Poll::Ready(over_budget()),
            }
        }
    }
}

/// The method a head starts with, if its first word (before a space) is one.
fn method(start: &[u8]) -> Option<Method> {
    let word = start.split(|byte| *byte == b' ').next()?;
    (word.len() < start.len())
        .then(|| Method::from_bytes(word).ok())
        .flatten()
}

fn over_budget() -> io::Error {
    io::Error::other("the request head did not fit in the memory budget")
}

/// The answer as HTTP/1.1 bytes, closing the connection.
fn wire_bytes(response: &Response<Bytes>) -> Bytes {
    let status = response.status();
    let mut wire = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        if name == http::header::CONTENT_LENGTH || name == http::header::CONNECTION {
            continue;
        }
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            response.body().len()
        )
        .as_bytes(),
    );
    wire.extend_from_slice(response.body());
    Bytes::from(wire)
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if matches!(this.state, State::Reading) && !this.charge_for_read(buf.remaining()) {
            this.refuse();
        }
        if !matches!(this.state, State::Reading) {
            return this.poll_refusal(cx).map(Err);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        let (first, kept) = &mut this.first_bytes;
        if *kept < METHOD_BYTES {
            let more = (METHOD_BYTES - *kept).min(read);
            first[*kept..*kept + more].copy_from_slice(&buf.filled()[before..before + more]);
            *kept += more;
        }
        if !this.phase.in_call.load(Ordering::Acquire) {
            this.read_since_answer = this.read_since_answer.saturating_add(read);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.answer_started();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.answer_started();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Metered {
    /// An answer is going out: the call is over, and what is read next is a new head.
    fn answer_started(&mut self) {
        self.phase.in_call.store(false, Ordering::Release);
        self.read_since_answer = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_method_is_the_first_word_when_it_ended() {
        assert_eq!(method(b"POST /v3"), Some(Method::POST));
        assert_eq!(method(b"GET /"), Some(Method::GET));
        assert_eq!(
            method(b"POSTPOST"),
            None,
            "a word not ended yet is not named"
        );
        assert_eq!(method(b""), None);
        assert_eq!(method(b"P(ST /"), None, "not a token");
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A metered server side and the client's end of one loopback connection.
    async fn pair(budget: &Arc<Budget>, phase: Arc<CallPhase>) -> (Metered, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let refusal: Refusal = Box::new(|method| {
            Box::pin(async move {
                let mut answer = Response::new(Bytes::from(format!("{method:?}")));
                *answer.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                answer
            })
        });
        let inner = WriteDeadline::new(server, std::time::Duration::from_secs(5));
        (Metered::new(inner, budget, phase, refusal), client)
    }

    /// One read as hyper does it: into a buffer offering `room` bytes.
    async fn read(meter: &mut Metered, room: usize) -> io::Result<usize> {
        let mut buffer = vec![0u8; room];
        meter.read(&mut buffer).await
    }

    #[tokio::test]
    async fn a_growing_head_is_charged_and_refused_with_the_answer_once_it_does_not_fit() {
        let budget = Budget::new(100 * 1024);
        let (mut meter, mut client) = pair(&budget, Arc::default()).await;
        client.write_all(&[b'x'; 8192]).await.unwrap();
        client.write_all(b"POST /v3 ").await.unwrap();
        // hyper's first buffer: free.
        assert_eq!(read(&mut meter, 8192).await.unwrap(), 8192);
        assert_eq!(budget.used(), 0);
        // 8 KiB read + 56 KiB offered: 48 KiB past the free part.
        assert_eq!(read(&mut meter, 56 * 1024).await.unwrap(), 9);
        assert_eq!(budget.used(), 48 * 1024);
        // 200 KiB more offered does not fit: nothing is read, the answer goes out.
        let error = read(&mut meter, 200 * 1024).await.unwrap_err();
        assert!(error.to_string().contains("memory budget"), "{error}");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\nNone"),
            "the first word was not a method: {answer}"
        );
        assert!(
            read(&mut meter, 10).await.is_err(),
            "every read fails afterwards"
        );
        drop(meter);
        assert_eq!(budget.used(), 0, "the charge goes with the connection");
    }

    #[tokio::test]
    async fn the_refusal_names_the_method_and_a_call_in_progress_is_never_refused() {
        let budget = Budget::new(20 * 1024);
        let phase = Arc::new(CallPhase::default());
        let (mut meter, mut client) = pair(&budget, phase.clone()).await;
        client
            .write_all(b"POST /v3/payments HTTP/1.1\r\n")
            .await
            .unwrap();
        assert!(read(&mut meter, 8192).await.unwrap() > 0);
        // A call's body is charged by the call: reads then take nothing here.
        phase.call_started();
        client.write_all(&[b' '; 100]).await.unwrap();
        assert_eq!(read(&mut meter, 64 * 1024).await.unwrap(), 100);
        assert_eq!(budget.used(), 0);
        // Its answer goes out; the next head is a keep-alive one: over the budget, the
        // connection is closed unanswered (an answer here could overtake the first).
        meter
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        assert!(read(&mut meter, 64 * 1024).await.is_err());
        drop(meter);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");

        let (mut meter, mut client) = pair(&budget, Arc::default()).await;
        client
            .write_all(b"POST /v3/payments HTTP/1.1\r\n")
            .await
            .unwrap();
        assert!(read(&mut meter, 8192).await.unwrap() > 0);
        assert!(read(&mut meter, 64 * 1024).await.is_err());
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("Some(POST)"), "{answer}");
    }

    #[test]
    fn the_wire_answer_has_its_headers_length_and_closes() {
        let mut response = Response::new(Bytes::from_static(b"{\"error\":{}}"));
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("keep-alive"),
        );
        let wire = wire_bytes(&response);
        assert_eq!(
            &wire[..],
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"error\":{}}"
        );
    }
}
