//! A socket whose writes must make progress: a peer that stops reading is cut.
//!
//! hyper bounds how long a client may take to send its request head
//! (`header_read_timeout`, which also runs while a keep-alive connection sits idle) but
//! has no bound on writing the answer. A client that pipelines requests and never reads
//! would otherwise hold its connection slot, and its buffers, forever. Here a write (or
//! flush) that stays blocked for `write_timeout` fails with `TimedOut`, which ends the
//! connection; any progress re-arms the timer, so a slow but live reader is served.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `T` with a write deadline (see the module's doc).
pub(crate) struct WriteDeadline<T> {
    inner: T,
    write_timeout: Duration,
    /// Armed while a write is blocked; `None` while writes make progress.
    blocked_since: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub(crate) fn new(inner: T, write_timeout: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            write_timeout,
            blocked_since: None,
        }
    }

    /// The wrapped stream (e.g. to ask a socket for its peer's address).
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// What a blocked write does: arm the timer on the first `Pending`, fail once it
    /// fires.
    fn on_pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let timeout = self.write_timeout;
        let timer = self
            .blocked_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn track<R>(
        &mut self,
        result: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => self.on_pending(cx),
            ready => {
                self.blocked_since = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.track(result, cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout() {
        let (near, _far) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(near, Duration::from_millis(50));
        let started = Instant::now();
        let error = io.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_served() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(near, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut chunk = [0u8; 64];
            while total < 1024 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                total += far.read(&mut chunk).await.unwrap();
            }
            total
        });
        io.write_all(&[1u8; 1024]).await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), 1024);
    }
}
