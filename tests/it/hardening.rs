//! What a hostile neighbour, a stalled client or a broken upstream could do (issue #11),
//! each reproduced through real sockets against the real binary: every test here failed
//! before its fix.

use crate::util::{
    binary_command, child_exit, eventually, eventually_within, metric, send_raw, Call, Cli,
    RawUpstream, Sidecar, TempFile, Upstream, CHANNEL_ID, CHANNEL_SECRET, WAIT_LIMIT,
};
use std::net::SocketAddr;

/// For waits behind a deliberately heavy load (stalled pipelines of large answers).
const SLOW_WAIT: Duration = Duration::from_secs(60);
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `source` (another loopback address: another client) with a tiny
/// receive buffer, so a peer's answers fill it fast.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind a loopback source address");
    socket.connect(addr).await.expect("connect")
}

/// Writes `bytes` in the background and never reads: a client that pipelines and then
/// stops reading. Returns the stream's read half so it stays open.
fn pipeline_and_never_read(stream: TcpStream, bytes: Vec<u8>) -> tokio::net::tcp::OwnedReadHalf {
    let (reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(WAIT_LIMIT, writer.write_all(&bytes)).await;
        // Keep the write half (no FIN) for as long as the test may run.
        tokio::time::sleep(WAIT_LIMIT).await;
        drop(writer);
    });
    reader
}

/// Whether the peer has closed the connection (read returns 0 or fails), waiting at most
/// `limit`; whatever it sent first is discarded.
async fn closed_within(reader: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> bool {
    let drain = async {
        let mut chunk = vec![0u8; 65536];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}

// Finding 1: one client held all 64 admin slots forever (pipelining without reading, or
// idle connections reopened as they closed), so /healthz failed every probe.
#[tokio::test]
async fn admin_probes_get_through_while_another_client_holds_every_slot_it_can() {
    let sidecar = Sidecar::new().start().await;
    let admin = sidecar.admin_addr;
    let scrapes: Vec<u8> = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2000);
    // The attacker, from 127.0.0.2: 64 connections, half pipelining scrapes it never
    // reads, half idle; each reopened as soon as it closes, for the whole test.
    let attacker = tokio::spawn(async move {
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            while held.len() < 64 {
                let stream = connect_from("127.0.0.2", admin).await;
                let bytes = if held.len() % 2 == 0 {
                    scrapes.clone()
                } else {
                    Vec::new()
                };
                held.push(pipeline_and_never_read(stream, bytes));
            }
            // Reopen whatever the sidecar closed.
            let mut open = Vec::new();
            for mut reader in held.drain(..) {
                if !closed_within(&mut reader, Duration::from_millis(1)).await {
                    open.push(reader);
                }
            }
            held = open;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // How many the sidecar really keeps open: a closed one reads EOF at once.
        let mut still_open = 0;
        for mut reader in held {
            if !closed_within(&mut reader, Duration::from_millis(300)).await {
                still_open += 1;
            }
        }
        still_open
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        let probe = tokio::time::timeout(Duration::from_secs(2), async {
            let mut stream = TcpStream::connect(admin).await?;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        })
        .await;
        let answer = match probe {
            Ok(Ok(answer)) => String::from_utf8_lossy(&answer).into_owned(),
            other => panic!("probe failed while another client held admin slots: {other:?}"),
        };
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "probe answered {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = attacker.await.expect("attacker");
    assert!(held <= 8, "one client held {held} admin connections");
}

// Finding 2: proxy connections held by clients that stop reading were never freed; with
// every slot taken the sidecar answered `503 overloaded` forever.
#[tokio::test]
async fn proxy_connections_that_stop_reading_are_cut_after_the_write_timeout() {
    // Answers large enough that a few of them fill any socket buffer.
    let upstream = Upstream::recording()
        .respond_with(200, vec![b'x'; 512 * 1024])
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        // A write timeout long enough that the cap is seen before the cut even on a
        // loaded machine (at 3 s the cut sometimes came first, and with the slots free
        // again the cap was never reached), short enough that the cut comes well within
        // the wait below.
        .config_yaml(
            "stalled.yaml",
            "request:\n  max_connections: 4\n  write_timeout: 10s\n",
        )
        .start()
        .await;
    // One order per stalled connection: LINE Pay seeing all four means each holds a slot
    // (a connection over the cap is answered 503 and never forwarded).
    let target = |n: usize| format!("/v3/payments?orderId=stalled{n}");
    let mut stalled = Vec::new();
    for n in 0..4 {
        let call = format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", target(n)).repeat(64);
        let stream = connect_from("127.0.0.1", sidecar.addr).await;
        stalled.push(pipeline_and_never_read(stream, call.into_bytes()));
    }
    // Probing earlier raced them: a probe could take a slot first, leaving a stalled
    // connection refused and the cap never reached.
    eventually("every stalled connection holds a slot", || async {
        let seen: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
        match (0..4).find(|n| !seen.contains(&target(*n))) {
            None => Ok(()),
            Some(n) => Err(format!("no call of connection {n} forwarded yet")),
        }
    })
    .await;
    // While they hold every slot, a fifth connection is refused, visibly (finding 8).
    // Generous bounds: 4 connections each pipelining 64 calls with 512 KiB answers keep
    // a 2-core machine busy; what is proved is that the cap answers and the cut comes.
    let refused = eventually_within(SLOW_WAIT, "the cap is reached", || async {
        let reply = Call::get("/v3/payments?orderId=o2")
            .send(sidecar.addr)
            .await;
        if reply.status == 503 {
            Ok(reply)
        } else {
            Err(reply.status)
        }
    })
    .await;
    refused.assert_sidecar_error(503, "overloaded");
    let request_id = refused
        .header("x-request-id")
        .unwrap_or_else(|| panic!("503 overloaded has no X-Request-Id"))
        .to_owned();
    // Then the write timeout frees the slots and calls are served again.
    eventually_within(SLOW_WAIT, "the stalled connections are cut", || async {
        let reply = Call::get("/v3/payments?orderId=o3")
            .send(sidecar.addr)
            .await;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(reply.status)
        }
    })
    .await;
    for reader in &mut stalled {
        assert!(
            closed_within(reader, WAIT_LIMIT).await,
            "a stalled connection is still open"
        );
    }
    let scrape = sidecar.scrape().await;
    let overloaded = metric(
        &scrape,
        r#"linepay_sidecar_refusals_total{code="overloaded"}"#,
    );
    assert!(
        overloaded.is_some_and(|n| n >= 1.0),
        "overloaded not counted:\n{scrape}"
    );
    let log = sidecar.stderr_so_far();
    assert!(
        log.lines()
            .any(|line| line.contains(&request_id) && line.contains("overloaded")),
        "no log line for the overloaded call {request_id}:\n{log}"
    );
}

/// A head of about `head_bytes` for a POST that declares a 64 KiB body.
fn big_head(head_bytes: usize) -> Vec<u8> {
    let mut head = b"POST /v3/payments/request HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n".to_vec();
    let mut index = 0;
    while head.len() < head_bytes {
        head.extend_from_slice(format!("X-Pad-{index}: {}\r\n", "a".repeat(4000)).as_bytes());
        index += 1;
    }
    head.extend_from_slice(b"\r\n");
    head
}

// Finding 3: memory had no ceiling: every connection could hold a large head and most of
// a large body. Now what calls buffer is charged to one budget, and a call that does not
// fit is refused at once with `503 overloaded` (counted, logged, with its request id).
#[tokio::test]
async fn calls_past_the_memory_budget_are_refused_before_they_are_buffered() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml(
            "budget.yaml",
            "request:\n  max_buffered_bytes: 300000\n  body_timeout: 30s\n",
        )
        .start()
        .await;
    // Three calls of ~10 KB head + a declared 64 KiB body (~75 KB each) that send only
    // part of their body and stall: they fit in 300,000 bytes.
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(sidecar.addr).await.expect("connect");
        let mut bytes = big_head(10_000);
        bytes.extend_from_slice(&[b' '; 30_000]);
        stream.write_all(&bytes).await.expect("write");
        holders.push(stream);
    }
    // Let the sidecar read the three heads before the fourth comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fourth = big_head(10_000);
    fourth.extend_from_slice(&[b' '; 30_000]);
    let reply = send_raw(sidecar.addr, fourth).await;
    reply.assert_sidecar_error(503, "overloaded");
    assert_eq!(reply.header("connection"), Some("close"));
    let request_id = reply
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on 503 overloaded"))
        .to_owned();
    assert!(
        reply.text().contains("request.max_buffered_bytes"),
        "{}",
        reply.text()
    );
    // The holders go away: their charges are given back and calls fit again.
    drop(holders);
    eventually("the budget is free again", || async {
        let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
            .send(sidecar.addr)
            .await;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(reply.text())
        }
    })
    .await;
    assert_eq!(
        upstream.count(),
        1,
        "only the last call reached the upstream"
    );
    // The line is written before the answer; the harness reads the pipe on its own.
    eventually("the refusal is logged with its request id", || async {
        let log = sidecar.stderr_so_far();
        match log
            .lines()
            .any(|line| line.contains(&request_id) && line.contains("overloaded"))
        {
            true => Ok(()),
            false => Err(format!("no log line for {request_id}:\n{log}")),
        }
    })
    .await;
}

/// `prlimit --nofile=SOFT:HARD linepay-sidecar ARGS...`, environment as the harness's.
fn with_nofile(soft: u64, hard: u64, args: &[&str]) -> std::process::Command {
    let binary = binary_command();
    let mut command = std::process::Command::new("prlimit");
    command
        .arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(binary.get_program())
        .args(args)
        .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
        .stdin(std::process::Stdio::null());
    for (key, value) in binary.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
}

/// The soft `Max open files` of a running process.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or_else(|| panic!("no Max open files in {limits}"))
}

// Finding 4: under a soft limit of 1024 (systemd's default) descriptors ran out before
// `request.max_connections`: accept failed and calls got no answer at all.
#[tokio::test]
async fn the_soft_descriptor_limit_is_raised_to_what_the_caps_need() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .wrapped_in(&["prlimit", "--nofile=256:4096", "--"])
        .start()
        .await;
    // 1024 app + 1024 + 64 upstream (the idle pool) + 64 admin + 64 reserve.
    let soft = soft_nofile(sidecar.pid());
    assert!(soft >= 2240, "soft limit still {soft}");
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn a_hard_descriptor_limit_below_the_caps_stops_the_start_naming_the_fix() {
    let mut child = with_nofile(
        256,
        512,
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--channel-id",
            "1",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("prlimit runs");
    let Some(status) = child_exit(&mut child, WAIT_LIMIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the sidecar kept running under a hard limit of 512");
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        !status.success(),
        "started with a hard limit of 512:\n{stderr}"
    );
    assert!(
        stderr.contains("request.max_connections 1024 needs 2240 file descriptors")
            && stderr.contains("LimitNOFILE"),
        "{stderr}"
    );
}

// Finding 5: the 64 KiB header limit held only for slow senders. hyper checks its read
// buffer against `max_buf_size` only while a head is incomplete, and one read may fill
// the buffer's whole spare capacity (about twice the limit), so a ~100 KiB head that is
// already waiting in the socket was parsed and forwarded. Here it waits behind a slow
// first call on the same connection.
#[tokio::test]
async fn a_head_over_64_kib_waiting_in_the_socket_is_refused_and_never_forwarded() {
    let upstream = Upstream::recording()
        .delay(Duration::from_millis(500))
        .start()
        .await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let mut request = b"GET /v3/payments?orderId=o1 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let mut big = big_head(100 * 1024);
    // The POST declares 64 KiB: send a body that matches, so nothing waits to be read.
    let frame = r#"{"amount":1,"pad":""}"#;
    let body = frame.replace(r#""""#, &format!("\"{}\"", "b".repeat(65536 - frame.len())));
    assert_eq!(body.len(), 65536);
    big.extend_from_slice(body.as_bytes());
    request.extend_from_slice(&big);
    let mut stream = TcpStream::connect(sidecar.addr).await.expect("connect");
    stream.write_all(&request).await.expect("one write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT_LIMIT, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let second = answer
        .match_indices("HTTP/1.1 ")
        .nth(1)
        .map(|(at, _)| &answer[at..])
        .unwrap_or_else(|| panic!("no second answer: {answer:?}"));
    assert!(second.starts_with("HTTP/1.1 431"), "answered {second:?}");
    assert_eq!(upstream.count(), 1, "a 100 KiB head was forwarded");
}

// Finding 6: headers were filtered by a denylist, so overrides, client addresses and
// encodings reached LINE Pay on a validly signed call.
#[tokio::test]
async fn only_allowlisted_headers_reach_line_pay() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let mut call = Call::post("/v3/payments/request", r#"{"amount":1}"#);
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/v3/payments/1/refund"),
        ("X-Rewrite-URL", "/v3/payments/1/refund"),
        ("True-Client-IP", "10.1.2.3"),
        ("X-Client-IP", "10.1.2.3"),
        ("X-Real-IP", "10.1.2.3"),
        ("X-Forwarded-For", "10.1.2.3"),
        ("X-Forwarded-Host", "shop.internal"),
        ("Forwarded", "for=10.1.2.3"),
        ("Via", "1.1 shop-gateway"),
        ("Content-Encoding", "gzip"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Cookie", "session=1"),
        ("Authorization", "Bearer app-token"),
        ("X-LINE-ChannelId", "999"),
        ("X_LINE_Authorization", "forged"),
        ("X-Internal-Debug", "1"),
        ("Accept", "application/json"),
        ("Accept-Language", "zh-TW"),
        ("User-Agent", "shop/1.0"),
    ] {
        call = call.header(name, value);
    }
    let reply = call.send(sidecar.addr).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let request = upstream.only_request();
    let mut names: Vec<&str> = request.headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "accept-language",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "x-line-authorization",
            "x-line-authorization-nonce",
            "x-line-channelid",
            "x-request-id",
        ]
    );
    assert_eq!(request.single("user-agent"), "shop/1.0");
    assert_eq!(request.single("x-line-channelid"), CHANNEL_ID);
}

#[tokio::test]
async fn forward_headers_adds_names_to_the_allowlist() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml(
            "forward.yaml",
            "request:\n  forward_headers: [X-Shop-Trace]\n",
        )
        .start()
        .await;
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .header("X-Shop-Trace", "t-1")
        .header("X-Shop-Other", "o")
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let request = upstream.only_request();
    assert_eq!(request.single("x-shop-trace"), "t-1");
    assert!(request.all("x-shop-other").is_empty());
}

#[test]
fn forward_headers_cannot_remove_the_built_in_safety() {
    let config = TempFile::with_contents(
        "forward-bad.yaml",
        b"upstream:\n  url: http://127.0.0.1:9\nrequest:\n  forward_headers: [X-Forwarded-For, Authorization, X-LINE-Authorization]\n",
    );
    let output = Cli::check_config(config.path_str())
        .env("LINEPAY_CHANNEL_ID", CHANNEL_ID)
        .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
        .run();
    assert!(!output.status.success(), "{output:?}");
    for name in ["x-forwarded-for", "authorization", "x-line-authorization"] {
        assert!(
            output
                .stderr
                .contains(&format!("`{name}` is never forwarded")),
            "{name} not named:\n{output:?}"
        );
    }
}

// Finding 7: odd upstream answers passed through: `101 Switching Protocols` as a
// success, 599/999 as metric labels, and headers of any size.
#[tokio::test]
async fn statuses_line_pay_never_sends_become_502_upstream_protocol() {
    for (answer, shown) in [
        (&b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..], "101"),
        (&b"HTTP/1.1 599 Odd\r\nContent-Length: 2\r\n\r\n{}"[..], "599"),
        (&b"HTTP/1.1 999 Odder\r\nContent-Length: 2\r\n\r\n{}"[..], "999"),
        (&b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"[..], "302"),
    ] {
        let upstream = RawUpstream::answering(answer).await;
        let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
        let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
            .send(sidecar.addr)
            .await;
        reply.assert_case_sidecar_error(shown, 502, "upstream_protocol");
        assert_eq!(reply.retry_safe(), Some(false), "{shown}: it was sent");
        let scrape = sidecar.scrape().await;
        assert!(
            !scrape.contains(&format!("status=\"{shown}\"")),
            "{shown} became a label:\n{scrape}"
        );
        assert!(upstream.connections() >= 1);
    }
}

#[tokio::test]
async fn an_answer_with_oversized_headers_is_refused() {
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_vec();
    for index in 0..20 {
        answer.extend_from_slice(format!("X-Pad-{index}: {}\r\n", "p".repeat(4000)).as_bytes());
    }
    answer.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
    let upstream = RawUpstream::answering(answer.leak()).await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let code = reply.error_code().unwrap_or_default();
    assert!(
        code == "upstream_response_too_large" || code == "upstream_protocol",
        "{code}"
    );
    assert!(reply.headers.get("x-pad-0").is_none());
}

/// `VmRSS` or `VmHWM` (the peak) of a process, in MiB.
fn memory_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        / 1024.0
}

// Issue #17: the budget refused what it should, but the process held more than it
// counted (hyper's read buffers, grown by 60 KB heads) and kept it after the flood:
// 1,000 connections of 60 KB heads + 60 KB bodies peaked at 86–133 MiB and left 35–90 MiB
// behind with glibc's malloc. Now the read buffers are charged as they grow (a head that
// does not fit is refused before it is read) and jemalloc gives freed pages back.
// Bounded: the flood is sent in at most 30 s, and the memory must come back within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_heads_stays_inside_the_memory_limit_and_gives_memory_back() {
    const CONNECTIONS: usize = 1000;
    let sidecar = Sidecar::new().start().await;
    let pid = sidecar.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = memory_mib(pid, "VmRSS");

    let mut payload = big_head(60_000);
    payload.extend_from_slice(&[b' '; 60_000]);
    let payload = std::sync::Arc::new(payload);
    let mut flood = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let payload = payload.clone();
        let addr = sidecar.addr;
        flood.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            // A refused connection is closed before all of it is written: that is fine.
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.write_all(&payload)).await;
            Some(stream)
        }));
    }
    let mut streams = Vec::with_capacity(CONNECTIONS);
    for connection in flood {
        if let Some(stream) = connection.await.expect("flood task") {
            streams.push(stream);
        }
    }
    // What each connection got: a 503 overloaded, or nothing yet (held: its body is
    // incomplete).
    let (mut refused, mut held) = (0, 0);
    for stream in &mut streams {
        let mut answer = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut answer)).await {
            Ok(Ok(n)) if n > 0 => {
                let text = String::from_utf8_lossy(&answer[..n]);
                assert!(
                    text.starts_with("HTTP/1.1 503") && text.contains("\"code\":\"overloaded\""),
                    "{text}"
                );
                refused += 1;
            }
            Err(_) => held += 1,
            Ok(_) => {}
        }
    }
    let peak = memory_mib(pid, "VmHWM");
    drop(streams);
    assert!(refused > 0 && held > 0, "refused {refused}, held {held}");
    assert!(
        peak < 128.0,
        "peak RSS {peak:.1} MiB during the flood (idle {idle:.1} MiB): the deploy example's limit is 128 MiB"
    );
    let bound = 2.0 * idle + 4.0;
    eventually_within(
        Duration::from_secs(30),
        "memory comes back after the flood",
        || async {
            let now = memory_mib(pid, "VmRSS");
            match now < bound {
                true => Ok(()),
                false => Err(format!(
                    "RSS {now:.1} MiB after the flood closed; idle was {idle:.1} MiB"
                )),
            }
        },
    )
    .await;
    // And it still serves.
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    assert_ne!(reply.status, 503, "{}", reply.text());
}
