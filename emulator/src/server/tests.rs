//! The socket edge over real loopback connections: plain TCP, TLS, the body limit, the
//! source whitelist, and stopping.

use super::*;
use crate::auth::sign_for_test;
use crate::EmulatorConfig;
use crate::Secret;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "a917ab6a2367b536f8e5a6e2977e06f4";
const CHANNEL: &str = "1234567890";

fn emulator() -> Emulator {
    Emulator::new(EmulatorConfig::new(CHANNEL, Secret::new(SECRET)))
}

/// A signed HTTP/1.1 request with `Connection: close`, as raw bytes.
fn signed_request(method: &str, path: &str, query: &str, body: &str) -> Vec<u8> {
    let nonce = "3a4ea6a1-3bd4-4c9a-9a06-0d3c2c8e0f51";
    let payload = if method == "GET" { query } else { body };
    let signature = sign_for_test(SECRET.as_bytes(), path, payload.as_bytes(), nonce);
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    format!(
        "{method} {target} HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         X-LINE-ChannelId: {CHANNEL}\r\nX-LINE-Authorization-Nonce: {nonce}\r\n\
         X-LINE-Authorization: {signature}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> (String, Value) {
    stream.write_all(request).await.expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let body = serde_json::from_str(body).expect("a JSON body");
    (head.to_string(), body)
}

async fn start(
    emulator: Emulator,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    (address, tokio::spawn(emulator.serve(listener, tls)))
}

#[tokio::test]
async fn serves_a_signed_call_over_tcp() {
    let emulator = emulator();
    let (address, server) = start(emulator.clone(), None).await;
    let stream = TcpStream::connect(address).await.expect("connect");
    let request = signed_request(
        "GET",
        "/v3/payments/requests/2021121600698709710/check",
        "",
        "",
    );
    let (head, body) = exchange(stream, &request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body["returnCode"], "1150");
    assert_eq!(emulator.calls(), 1);
    server.abort();
}

#[tokio::test]
async fn oversized_bodies_are_413_and_counted() {
    let emulator = emulator();
    let (address, server) = start(emulator.clone(), None).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /v3/payments/request HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    // The server answers once it has read past the limit; it may close before
    // reading the rest, so write errors are expected and ignored.
    let _ = stream.write_all(&vec![b' '; MAX_BODY_BYTES + 1]).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(emulator.calls(), 1);
    server.abort();
}

#[tokio::test]
async fn serves_over_tls_and_survives_a_failed_handshake() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("self-signed certificate");
    let certificate = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .expect("server certificate");
    let (address, server) = start(emulator(), Some(Arc::new(server_config))).await;

    // A client that speaks plain HTTP to the TLS port fails its handshake...
    let mut plain = TcpStream::connect(address).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut ignored = Vec::new();
    let _ = plain.read_to_end(&mut ignored).await;

    // ...and the server still serves the next, proper TLS client.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).expect("trust the test certificate");
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(address).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let body = r#"{"amount":100,"currency":"TWD"}"#;
    let request = signed_request("POST", "/v3/payments/2021121600698709710/confirm", "", body);
    let (head, answer) = exchange(tls, &request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(answer["returnCode"], "1150");
    server.abort();
}

#[tokio::test]
async fn a_whitelist_refuses_other_sources_before_checking_anything() {
    let mut config = EmulatorConfig::new(CHANNEL, Secret::new(SECRET));
    config.allow_sources = vec!["127.0.0.2/32".parse().expect("a range")];
    let emulator = Emulator::new(config);
    let (address, server) = start(emulator.clone(), None).await;
    let request = signed_request(
        "GET",
        "/v3/payments/requests/2021121600698709710/check",
        "",
        "",
    );

    // From 127.0.0.1: refused, whatever the (valid) signature says.
    let stream = TcpStream::connect(address).await.expect("connect");
    let (head, body) = exchange(stream, &request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body["returnCode"], "1106");
    assert!(
        body["returnMessage"]
            .as_str()
            .is_some_and(|m| m.contains("[127.0.0.1] is not allowed")),
        "{body}"
    );

    // From 127.0.0.2: served (1150: no such transaction, so the call was checked).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("an address"))
        .expect("bind 127.0.0.2");
    let stream = socket.connect(address).await.expect("connect");
    let (_, body) = exchange(stream, &request).await;
    assert_eq!(body["returnCode"], "1150");
    assert_eq!(emulator.calls(), 2);
    server.abort();
}

#[tokio::test]
async fn aborting_serve_closes_the_port() {
    let (address, server) = start(emulator(), None).await;
    server.abort();
    let _ = server.await;
    assert!(TcpStream::connect(address).await.is_err());
}

/// A signed v3 request made in-process; its `info`.
fn reserve(emulator: &Emulator, order_id: &str, redirect: serde_json::Value) -> Value {
    let body = serde_json::json!({
        "amount": 100, "currency": "TWD", "orderId": order_id,
        "packages": [{"id": "p", "amount": 100,
                      "products": [{"name": "tea", "quantity": 1, "price": 100}]}],
        "redirectUrls": redirect,
    })
    .to_string();
    let path = "/v3/payments/request";
    let nonce = "nonce-serve-pages";
    let mut headers = http::HeaderMap::new();
    headers.insert("X-LINE-ChannelId", http::HeaderValue::from_static(CHANNEL));
    headers.insert(
        "X-LINE-Authorization-Nonce",
        http::HeaderValue::from_static(nonce),
    );
    let signature = sign_for_test(SECRET.as_bytes(), path, body.as_bytes(), nonce);
    headers.insert(
        "X-LINE-Authorization",
        http::HeaderValue::from_str(&signature).expect("Base64"),
    );
    let response = emulator.handle(&http::Method::POST, path, None, &headers, body.as_bytes());
    let answer: Value = serde_json::from_slice(response.body()).expect("JSON");
    assert_eq!(answer["returnCode"], "0000", "{answer}");
    answer["info"].clone()
}

/// Waits (bounded) until `paymentUrl.web` points at `base`.
async fn wait_for_page_base(emulator: &Emulator, base: &str) {
    for _ in 0..500 {
        if emulator.page_base() == base {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "paymentUrl.web points at {}, not {base}",
        emulator.page_base()
    );
}

/// Raw HTTP/1.1 on a new connection; the whole response as text.
async fn raw(address: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.expect("read");
    String::from_utf8(bytes).expect("UTF-8")
}

#[tokio::test]
async fn serve_pages_puts_the_page_of_a_tls_emulator_on_plain_http() {
    let emulator = emulator();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("self-signed certificate");
    let certificate = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certificate], key)
    .expect("server certificate");
    let (api_address, api_server) = start(emulator.clone(), Some(Arc::new(server_config))).await;
    wait_for_page_base(&emulator, &format!("https://{api_address}")).await;
    let pages = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let page_address = pages.local_addr().expect("address");
    let page_server = tokio::spawn(emulator.clone().serve_pages(pages));
    // The dedicated page listener is where paymentUrl.web points from now on, and the
    // API listener never takes it back.
    let expected = format!("http://{page_address}");
    wait_for_page_base(&emulator, &expected).await;
    emulator.set_page_base(format!("https://{api_address}"), false);
    assert_eq!(emulator.page_base(), expected);

    let info = reserve(
        &emulator,
        "pages-1",
        serde_json::json!({"confirmUrl": "http://127.0.0.1:1/c", "cancelUrl": "http://127.0.0.1:1/x"}),
    );
    let web = info["paymentUrl"]["web"].as_str().expect("a URL");
    let path = web.strip_prefix(&expected).expect("on the page listener");
    let page = raw(
        page_address,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("id=\"approve\""), "{page}");
    // Only the emulator's own paths are served there.
    let api = raw(
        page_address,
        "GET /v3/payments?transactionId=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(api.starts_with("HTTP/1.1 404"), "{api}");
    page_server.abort();
    api_server.abort();
}

#[tokio::test]
async fn confirm_url_type_server_makes_the_emulator_call_confirm_url() {
    let emulator = emulator();
    let shop = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let shop_address = shop.local_addr().expect("address");
    let info = reserve(
        &emulator,
        "server-1",
        serde_json::json!({
            "confirmUrl": format!("http://{shop_address}/confirm?cart=9"),
            "confirmUrlType": "SERVER",
            "cancelUrl": format!("http://{shop_address}/cancel"),
        }),
    );
    let web = info["paymentUrl"]["web"].as_str().expect("a URL");
    let path = web
        .strip_prefix(crate::UNSERVED_PAGE_BASE)
        .expect("not served: the unserved base");
    let view = emulator
        .page_view(path.trim_start_matches(crate::page::PATH))
        .expect("the page");
    let form = format!("token={}&method=BALANCE&action=approve", view.token);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let response = emulator.handle(&http::Method::POST, path, None, &headers, form.as_bytes());
    assert_eq!(response.status(), StatusCode::OK);

    // The shop's server receives LINE Pay's GET, with the ids in the query.
    let accepted = tokio::time::timeout(Duration::from_secs(20), shop.accept())
        .await
        .expect("the emulator called confirmUrl in time")
        .expect("accept");
    let mut stream = accepted.0;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte))
            .await
            .expect("a request head in time")
            .expect("read");
        if read == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let id = info["transactionId"].as_u64().expect("an id");
    assert!(
        head.starts_with(&format!(
            "GET /confirm?cart=9&transactionId={id}&orderId=server-1 HTTP/1.1"
        )),
        "{head}"
    );
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
}
