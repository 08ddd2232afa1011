//! What the call journal costs: the real binary in front of the emulator, twice (journal
//! on, the default; journal off, `journal.enabled: false`), each driven the same way.
//!
//! One round = `POST /v3/payments/request` (not a money call) then
//! `POST /v3/payments/{transactionId}/confirm` (a money call: in-flight check, intent
//! fsynced, its own task, outcome fsynced) for the transaction just reserved. The two
//! calls are timed apart, so the table shows the journal's cost on the money route and
//! that the other route does not pay it.
//!
//! Bounded: `--rounds N` (default 2000; 100 without `--bench`, as `cargo test --benches`
//! runs it) per configuration and `--concurrency C` (default 8) workers, each step
//! capped at 60 s. The journal lives in the system temp directory (its file system
//! decides what an fsync costs: say which one with the numbers).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_linepay-sidecar");
const CHANNEL: &str = "1234567890";
const SECRET: &str = "money-bench-secret-not-a-real-channel";
const START_LIMIT: Duration = Duration::from_secs(10);
const STEP_TIME_CAP: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
    {
        // A filter naming another bench (`cargo bench -- sign/`).
        return ExitCode::SUCCESS;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = value("--rounds", if bench { 2000 } else { 100 });
    let concurrency = value("--concurrency", 8).max(1);
    match run(rounds, concurrency) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("money bench FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(rounds: usize, concurrency: usize) -> Result<(), String> {
    let emulator = Process::start(
        &[
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--channel-id",
            CHANNEL,
        ],
        "linepay emulator listening on http://",
    )?;
    let upstream = format!("http://{}", emulator.addr);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start tokio: {error}"))?;
    println!(
        "{rounds} rounds, concurrency {concurrency}, journal in {}\n\n\
         | journal | route | calls | p50 | p90 | p99 | rounds/s |\n| --- | --- | --- | --- | --- | --- | --- |",
        std::env::temp_dir().display()
    );
    let sequence = AtomicUsize::new(0);
    for journal_on in [false, true] {
        let dir = std::env::temp_dir().join(format!(
            "linepay-sidecar-bench-money-{}-{journal_on}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("sidecar.yaml");
        let yaml = format!(
            "journal:\n  enabled: {journal_on}\n  path: {}\n",
            dir.join("journal.sqlite3").display()
        );
        std::fs::write(&config, yaml).map_err(|e| format!("{}: {e}", config.display()))?;
        let config = config.to_string_lossy().into_owned();
        let sidecar = Process::start(
            &[
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--channel-id",
                CHANNEL,
                "--upstream",
                &upstream,
                "--config",
                &config,
            ],
            "linepay-sidecar listening on http://",
        )?;
        // Warm-up: pools and the journal file.
        runtime.block_on(load(sidecar.addr, concurrency, rounds / 10 + 1, &sequence))?;
        let (request, confirm, wall) =
            runtime.block_on(load(sidecar.addr, concurrency, rounds, &sequence))?;
        let label = if journal_on { "on" } else { "off" };
        for (route, latencies) in [("request", request), ("confirm", confirm)] {
            println!("{}", row(label, route, latencies, wall));
        }
        drop(sidecar);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn row(journal: &str, route: &str, mut latencies: Vec<Duration>, wall: Duration) -> String {
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        format!(
            "{} µs",
            latencies
                .get(index)
                .copied()
                .unwrap_or_default()
                .as_micros()
        )
    };
    format!(
        "| {journal} | {route} | {} | {} | {} | {} | {:.0} |",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        latencies.len() as f64 / wall.as_secs_f64()
    )
}

type Latencies = (Vec<Duration>, Vec<Duration>, Duration);

async fn load(
    sidecar: SocketAddr,
    concurrency: usize,
    rounds: usize,
    sequence: &AtomicUsize,
) -> Result<Latencies, String> {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let first = sequence.fetch_add(rounds, Ordering::Relaxed);
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, issued) = (client.clone(), issued.clone());
        workers.spawn(async move {
            let (mut requests, mut confirms) = (Vec::new(), Vec::new());
            loop {
                let index = issued.fetch_add(1, Ordering::Relaxed);
                if index >= rounds || started.elapsed() > STEP_TIME_CAP {
                    break;
                }
                let order = format!(
                    r#"{{"amount":100,"currency":"TWD","orderId":"money-bench-{}","packages":[{{"id":"p","amount":100,"products":[{{"name":"Coffee","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/c","cancelUrl":"https://shop.example/x"}}}}"#,
                    first + index
                );
                let sent = Instant::now();
                let answer = post(&client, sidecar, "/v3/payments/request", order).await?;
                requests.push(sent.elapsed());
                let transaction = linepay_sidecar::inspect::id_field(&answer, "transactionId")
                    .ok_or_else(|| "request: no transactionId".to_owned())?
                    .to_owned();
                let path = format!("/v3/payments/{transaction}/confirm");
                let sent = Instant::now();
                post(&client, sidecar, &path, r#"{"amount":100,"currency":"TWD"}"#.into()).await?;
                confirms.push(sent.elapsed());
            }
            Ok::<_, String>((requests, confirms))
        });
    }
    let (mut requests, mut confirms) = (Vec::new(), Vec::new());
    while let Some(joined) = workers.join_next().await {
        let (r, c) = joined.map_err(|error| format!("worker panicked: {error}"))??;
        requests.extend(r);
        confirms.extend(c);
    }
    Ok((requests, confirms, started.elapsed()))
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    sidecar: SocketAddr,
    path: &str,
    body: String,
) -> Result<Bytes, String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{sidecar}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| format!("{path}: {error}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("{path}: {error}"))?
        .to_bytes();
    let success = br#""returnCode":"0000""#;
    if status != StatusCode::OK || !body.windows(success.len()).any(|w| w == success) {
        return Err(format!(
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    fn start(args: &[&str], announce: &str) -> Result<Process, String> {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // One log line per call: not what is measured here.
            .stderr(Stdio::null())
            .env("LINEPAY_CHANNEL_SECRET", SECRET);
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start {BINARY}: {error}"))?;
        let (lines_tx, lines) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_LIMIT;
        let mut process = Process {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .map_err(|_| format!("{args:?} did not announce itself in time"))?;
            if let Some(addr) = line
                .strip_prefix(announce)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok())
            {
                process.addr = addr;
                return Ok(process);
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
