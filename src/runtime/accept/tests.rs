//! The accept loop on real loopback sockets: drain, cap, deadline, join.

#![allow(clippy::unwrap_used)]

use super::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use std::convert::Infallible;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connection whose every call answers `ok` after `delay`.
fn slow(
    io: Socket,
    delay: Duration,
) -> impl GracefulConnection<Error = hyper::Error> + Send + 'static {
    let service = service_fn(move |_| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    builder.serve_connection(io, service)
}

fn rules(max_connections: usize, drain_timeout: Duration) -> AcceptRules {
    AcceptRules {
        name: "test",
        max_connections,
        when_full: WhenFull::Close,
        drain_timeout,
        held_limit: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_per_peer: None,
    }
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Sends one GET and returns the stream, the answer still to be read.
async fn send_get(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn a_stop_refuses_new_connections_and_lets_the_call_in_flight_finish() {
    let (listener, addr) = listener().await;
    let tasks = Tasks::new();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve(
        listener,
        rules(4, Duration::from_secs(5)),
        stop.clone(),
        tasks.clone(),
        move |io, _, _| slow(io, Duration::from_millis(300)),
    ));
    let mut in_flight = send_get(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    assert_eq!(serving.await.unwrap(), Drained::Complete);
    assert!(TcpStream::connect(addr).await.is_err());
    assert!(tasks.join(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn past_the_cap_a_connection_is_closed_unread() {
    let (listener, addr) = listener().await;
    let tasks = Tasks::new();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve(
        listener,
        rules(1, Duration::from_secs(5)),
        stop.clone(),
        tasks.clone(),
        move |io, _, _| slow(io, Duration::from_millis(300)),
    ));
    let mut held = send_get(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut refused = send_get(addr).await;
    let mut answer = Vec::new();
    // Closed (or reset) without a byte of answer.
    let _ = refused.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let mut first = String::new();
    held.read_to_string(&mut first).await.ok();
    stop.cancel();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(serving.await.unwrap(), Drained::Complete);
    assert!(tasks.join(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn the_drain_deadline_cuts_what_is_still_open_and_every_task_is_joined() {
    let (listener, addr) = listener().await;
    let tasks = Tasks::new();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve(
        listener,
        rules(4, Duration::from_millis(100)),
        stop.clone(),
        tasks.clone(),
        move |io, _, _| slow(io, Duration::from_secs(60)),
    ));
    let mut stuck = send_get(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    assert_eq!(
        serving.await.unwrap(),
        Drained::DeadlinePassed {
            open_connections: 1
        }
    );
    // The connection task was told to stop: the join ends long before the call would.
    assert!(tasks.join(Duration::from_secs(5)).await);
    let mut answer = Vec::new();
    let _ = stuck.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}
