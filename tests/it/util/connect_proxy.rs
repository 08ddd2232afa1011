//! An HTTP CONNECT forward proxy in the test process, on a loopback socket: what
//! `egress.proxy` points at.
//!
//! It reads one request head, refuses anything but `CONNECT` (405), checks Basic auth
//! when told to (407 otherwise), dials the target (502 when it cannot), then copies
//! bytes both ways. Every tunnel is recorded, with the first bytes the sidecar sent
//! through it, so a test can check that nothing of the call crossed in clear.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The largest request head the proxy reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How much of what the sidecar sends through one tunnel is kept.
const MAX_RECORDED_BYTES: usize = 64 * 1024;

/// One tunnel as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Tunnelled {
    /// The CONNECT target, `host:port`.
    pub target: String,
    pub authorization: Option<String>,
    /// The first bytes the sidecar sent through the tunnel.
    pub client_bytes: Vec<u8>,
}

/// A running proxy; stops (with every tunnel) when dropped.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<Tunnelled>>>,
    task: JoinHandle<()>,
}

impl ConnectProxy {
    /// Starts the proxy; with `required_authorization`, a CONNECT must carry exactly
    /// this `Proxy-Authorization` value.
    pub async fn start(required_authorization: Option<String>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the proxy: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("proxy has no address: {error}"));
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        let required = Arc::new(required_authorization);
        let task = tokio::spawn(async move {
            // Dropped with this task when the proxy is: every tunnel ends with it.
            let mut connections = JoinSet::new();
            loop {
                // An accept error ends the proxy (its test then fails) rather than spin.
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                connections.spawn(proxy_connection(client, required.clone(), seen.clone()));
            }
        });
        ConnectProxy {
            addr,
            tunnels,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, for `--egress-proxy`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every tunnel asked for so far (refused ones included), in order.
    pub fn tunnels(&self) -> Vec<Tunnelled> {
        lock(&self.tunnels).clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_connection(
    mut client: TcpStream,
    required: Arc<Option<String>>,
    tunnels: Arc<Mutex<Vec<Tunnelled>>>,
) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match client.read(&mut chunk).await {
            Ok(n @ 1..) if head.len() < MAX_HEAD_BYTES => head.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default().to_owned(),
    );
    if method != "CONNECT" {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    let index = {
        let mut tunnels = lock(&tunnels);
        tunnels.push(Tunnelled {
            target: target.clone(),
            authorization: authorization.clone(),
            client_bytes: Vec::new(),
        });
        tunnels.len() - 1
    };
    if let Some(required) = required.as_ref() {
        if authorization.as_deref() != Some(required) {
            let _ = client
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"egress\"\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
    }
    let Ok(upstream) = TcpStream::connect(target.as_str()).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let early = head[end..].to_vec();
    let sidecar_to_upstream = async {
        let mut forward = early;
        loop {
            if !forward.is_empty() {
                {
                    let mut tunnels = lock(&tunnels);
                    let seen = &mut tunnels[index].client_bytes;
                    let room = MAX_RECORDED_BYTES.saturating_sub(seen.len());
                    seen.extend_from_slice(&forward[..forward.len().min(room)]);
                }
                if upstream_write.write_all(&forward).await.is_err() {
                    break;
                }
            }
            let mut chunk = [0u8; 4096];
            match client_read.read(&mut chunk).await {
                Ok(n @ 1..) => forward = chunk[..n].to_vec(),
                _ => break,
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let upstream_to_sidecar = async {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(sidecar_to_upstream, upstream_to_sidecar);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
