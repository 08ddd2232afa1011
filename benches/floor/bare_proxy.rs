//! The bench's floor: a bare HTTP/1.1 forwarding proxy on the same stack as the sidecar
//! (hyper's server and client connections, one single-threaded tokio runtime per core
//! with its own `SO_REUSEPORT` socket), doing nothing a sidecar must do: no allowlist, no
//! JSON check, no signing (three fixed headers stand in for the sidecar's), no log line,
//! no metrics, no journal, no limits, no timeouts.
//!
//! `scripts/bench-compare.sh` runs it beside nginx and the sidecar, so each run says how
//! much of the sidecar's CPU per call is the HTTP stack itself (the floor) and how much is
//! the sidecar's own work (issue 20). Not a product: each app connection gets its own
//! upstream connection, opened when the app connects, and any error closes both.
//!
//!     cargo build --release --example bare-proxy
//!     target/release/examples/bare-proxy LISTEN_ADDR UPSTREAM_ADDR [WORKERS]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare-proxy LISTEN_ADDR UPSTREAM_ADDR [WORKERS]");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR is ip:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM_ADDR is ip:port");
    let workers = args
        .next()
        .map(|n| n.parse().expect("WORKERS is a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    println!("bare-proxy listening on http://{listen}");
    for thread in threads {
        let _ = thread.join();
    }
}

fn worker(listen: SocketAddr, upstream: SocketAddr) {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(listen),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket.set_nonblocking(true).expect("non-blocking");
    socket.bind(&listen.into()).expect("bind LISTEN_ADDR");
    socket.listen(1024).expect("listen");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let listener =
            tokio::net::TcpListener::from_std(socket.into()).expect("listener on the runtime");
        while let Ok((app, _)) = listener.accept().await {
            tokio::task::spawn_local(async move {
                let _ = connection(app, upstream).await;
            });
        }
    });
}

async fn connection(
    app: tokio::net::TcpStream,
    upstream: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    app.set_nodelay(true)?;
    let line_pay = tokio::net::TcpStream::connect(upstream).await?;
    line_pay.set_nodelay(true)?;
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(line_pay)).await?;
    tokio::task::spawn_local(driver);
    let sender = Rc::new(RefCell::new(sender));
    let service = service_fn(move |request| forward(sender.clone(), request));
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(app), service)
        .await?;
    Ok(())
}

async fn forward(
    sender: Rc<RefCell<SendRequest<Full<Bytes>>>>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut forwarded = hyper::Request::new(Full::new(body));
    *forwarded.method_mut() = parts.method;
    *forwarded.uri_mut() = parts.uri;
    let headers = forwarded.headers_mut();
    for (name, value) in [
        ("host", "127.0.0.1"),
        ("content-type", "application/json"),
        ("x-line-channelid", "1234567890"),
        (
            "x-line-authorization-nonce",
            "00000000-0000-4000-8000-000000000000",
        ),
        (
            "x-line-authorization",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    ] {
        headers.insert(name, hyper::header::HeaderValue::from_static(value));
    }
    // One call at a time per connection (HTTP/1.1 without pipelining), so the borrow
    // never overlaps another call's.
    let answer = sender.borrow_mut().send_request(forwarded);
    let (parts, body) = answer.await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(hyper::Response::from_parts(parts, Full::new(body)))
}
