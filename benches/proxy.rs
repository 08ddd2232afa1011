//! Bounded load test of the real binary: `linepay-sidecar run` in front of
//! `linepay-sidecar emulator`, each its own process on loopback, driven from here.
//!
//! Two targets, same calls (`POST /v3/payments/request`, a ~430-byte JSON body with a
//! fresh `orderId` each time):
//! - `direct`: this generator signs each call itself (as an SDK would) and sends it
//!   straight to the emulator. The baseline: client + emulator.
//! - `sidecar`: the generator sends the unsigned call to the sidecar, which routes,
//!   reads, signs, logs and forwards it to the same emulator.
//!
//! The difference is what the sidecar hop costs. Every answer must be HTTP 200 with
//! `"returnCode":"0000"` (the emulator checks every signature as LINE Pay does), so the
//! run is also a correctness check under concurrency: any other answer fails it.
//!
//! Bounded: a fixed number of calls per (concurrency, target) step, each step capped in
//! wall-clock time. `cargo bench --bench proxy` runs the full load; without `--bench`
//! (as `cargo test --benches` runs it) it makes a few hundred calls as a smoke test.
//! Options after `--`: `--requests N` (per step), `--concurrency 1,8,64`,
//! `--prevalidation off|warn|enforce` (the sidecar's mode; default: its default, `warn`).
//!
//! Only the command line and the announce lines of the binary are relied on, so the
//! load test does not break when the library's internals move.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use linepay_sidecar::secret::Secret;
use linepay_sidecar::sign::{self, Signer, SIGNATURE_LEN};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_linepay-sidecar");
const CHANNEL: &str = "1234567890";
const SECRET: &str = "load-test-secret-not-a-real-channel";
const PATH: &str = "/v3/payments/request";

const EMULATOR_ANNOUNCE: &str = "linepay emulator listening on http://";
const SIDECAR_ANNOUNCE: &str = "linepay-sidecar listening on http://";
/// How long a child may take to print its announce line.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Calls per step before measuring, so connection pools are warm.
const WARM_UP_CALLS: usize = 200;
/// No step may run longer than this, whatever `--requests` says.
const STEP_TIME_CAP: Duration = Duration::from_secs(20);

struct Options {
    requests: usize,
    concurrency: Vec<usize>,
    /// Without `--bench`: a quick smoke run whose numbers are not meant to be read.
    smoke: bool,
    /// A positional filter naming another bench (`cargo bench -- sign/`): do nothing.
    filtered_out: bool,
    /// The sidecar's `--prevalidation` mode, to measure validation on against off.
    prevalidation: Option<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        requests: 20_000,
        concurrency: vec![1, 8, 64],
        smoke: true,
        filtered_out: false,
        prevalidation: None,
    };
    let mut explicit_requests = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => options.smoke = false,
            "--requests" => {
                let value = args.next().ok_or("--requests needs a number")?;
                options.requests = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--requests {value}: expected a positive number"))?;
                explicit_requests = true;
            }
            "--concurrency" => {
                let value = args
                    .next()
                    .ok_or("--concurrency needs a list such as 1,8")?;
                options.concurrency = value
                    .split(',')
                    .map(|n| n.trim().parse().ok().filter(|&n: &usize| n > 0))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!(
                        "--concurrency {value}: expected positive numbers such as 1,8,64"
                    ))?;
            }
            "--prevalidation" => {
                let mode = args.next().ok_or("--prevalidation needs off, warn or enforce")?;
                options.prevalidation = Some(mode);
            }
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "unknown option `{flag}`; options: --requests N, --concurrency 1,8,64, --prevalidation MODE"
                ))
            }
            filter => options.filtered_out = !"proxy/load".contains(filter),
        }
    }
    if options.smoke && !explicit_requests {
        options.requests = 300;
        options.concurrency = vec![1, 4];
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("proxy load test: {message}");
            return ExitCode::from(2);
        }
    };
    if options.filtered_out {
        return ExitCode::SUCCESS;
    }
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("proxy load test FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    let mut emulator = Process::start(
        "emulator",
        &[
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--channel-id",
            CHANNEL,
        ],
        EMULATOR_ANNOUNCE,
    )?;
    let upstream = format!("http://{}", emulator.addr);
    // Never the default journal in the working directory (the source tree); these
    // calls are not money calls, so the journal stays empty.
    let journal = std::env::temp_dir().join(format!(
        "linepay-sidecar-bench-proxy-{}.sqlite3",
        std::process::id()
    ));
    let journal_path = journal.to_string_lossy().into_owned();
    let mut sidecar_args = vec![
        "--listen",
        "127.0.0.1:0",
        // Never a fixed admin port: other tests may run beside this one.
        "--admin-listen",
        "127.0.0.1:0",
        "--channel-id",
        CHANNEL,
        "--upstream",
        &upstream,
        "--journal-path",
        &journal_path,
    ];
    if let Some(mode) = &options.prevalidation {
        sidecar_args.extend(["--prevalidation", mode.as_str()]);
    }
    let mut sidecar = Process::start("sidecar", &sidecar_args, SIDECAR_ANNOUNCE)?;

    // Two worker threads: the generator's share of a small machine; the children have
    // their own runtimes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start tokio: {error}"))?;
    if options.smoke {
        println!("proxy load test, smoke run (pass --bench for real numbers)");
    }
    println!(
        "| target | concurrency | calls | wall time | calls/s | p50 | p90 | p99 | max |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let sequence = AtomicUsize::new(0);
    for &concurrency in &options.concurrency {
        for target in [Target::Direct(emulator.addr), Target::Sidecar(sidecar.addr)] {
            let warm_up = WARM_UP_CALLS.min(options.requests);
            runtime.block_on(load(target, concurrency, warm_up, &sequence))?;
            let report =
                runtime.block_on(load(target, concurrency, options.requests, &sequence))?;
            println!("{}", report.row(target, concurrency));
        }
    }
    sidecar.still_running()?;
    emulator.still_running()?;
    drop(sidecar);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{journal_path}{suffix}"));
    }
    Ok(())
}

/// A child process of the binary, killed when dropped.
struct Process {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// The tail of its stderr, for the message when it fails.
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Process {
    fn start(name: &'static str, args: &[&str], announce: &str) -> Result<Process, String> {
        let mut child = Command::new(BINARY)
            .args(args)
            // Nothing from the caller's environment (LINEPAY_*, a config file) leaks in.
            .env_clear()
            .env("LINEPAY_CHANNEL_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {BINARY} ({name}): {error}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr.clone();
            std::thread::spawn(move || keep_tail(pipe, &tail));
        }
        let (lines_tx, lines) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            // Reads to EOF so a chatty child never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line);
                }
            });
        }
        let mut process = Process {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).map_err(|_| {
                format!(
                    "{name} did not announce its address within {START_LIMIT:?}; stderr:\n{}",
                    process.stderr_tail()
                )
            })?;
            let addr = line
                .strip_prefix(announce)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok());
            if let Some(addr) = addr {
                process.addr = addr;
                return Ok(process);
            }
        }
    }

    fn still_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited during the load test ({status}); stderr:\n{}",
                self.name,
                self.stderr_tail()
            )),
            Err(error) => Err(format!("cannot check on {}: {error}", self.name)),
        }
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&tail).into_owned()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drains `pipe`, keeping its last few kilobytes.
fn keep_tail(mut pipe: impl Read, tail: &Mutex<Vec<u8>>) {
    const KEEP: usize = 8 * 1024;
    let mut buffer = [0u8; 4096];
    while let Ok(read) = pipe.read(&mut buffer) {
        if read == 0 {
            break;
        }
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        tail.extend_from_slice(&buffer[..read]);
        let excess = tail.len().saturating_sub(KEEP);
        tail.drain(..excess);
    }
}

/// Where the calls go, and so whether the generator must sign them itself.
#[derive(Clone, Copy)]
enum Target {
    Direct(SocketAddr),
    Sidecar(SocketAddr),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct(_) => "direct",
            Target::Sidecar(_) => "sidecar",
        }
    }

    fn addr(self) -> SocketAddr {
        match self {
            Target::Direct(addr) | Target::Sidecar(addr) => addr,
        }
    }
}

/// A `/v3/payments/request` body like a shop sends: one package, two products.
fn body(order: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"amount":300,"currency":"TWD","orderId":"load-{order}","packages":[{{"id":"pkg-1","amount":300,"name":"商店","products":[{{"id":"p1","name":"測試商品","imageUrl":"https://shop.example/p1.png","quantity":2,"price":100}},{{"id":"p2","name":"Coffee beans 250g","imageUrl":"https://shop.example/p2.png","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}}}"#
    ))
}

struct Report {
    latencies: Vec<Duration>,
    wall: Duration,
    capped: bool,
}

impl Report {
    fn row(&self, target: Target, concurrency: usize) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let at = |quantile: f64| {
            let index = ((sorted.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
            micros(sorted.get(index).copied().unwrap_or_default())
        };
        let calls = sorted.len();
        format!(
            "| {} | {concurrency} | {calls}{} | {:.2} s | {:.0} | {} | {} | {} | {} |",
            target.name(),
            if self.capped { " (time cap)" } else { "" },
            self.wall.as_secs_f64(),
            calls as f64 / self.wall.as_secs_f64(),
            at(0.50),
            at(0.90),
            at(0.99),
            at(1.0),
        )
    }
}

fn micros(duration: Duration) -> String {
    format!("{} µs", duration.as_micros())
}

/// Sends `calls` calls from `concurrency` workers over one fresh keep-alive pool.
async fn load(
    target: Target,
    concurrency: usize,
    calls: usize,
    sequence: &AtomicUsize,
) -> Result<Report, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let signer = Arc::new(Signer::new(&Secret::new(SECRET)));
    let issued = Arc::new(AtomicUsize::new(0));
    // orderIds are unique across steps: the emulator refuses a repeated one (1172).
    let first_order = sequence.fetch_add(calls, Ordering::Relaxed);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, signer, issued) = (client.clone(), signer.clone(), issued.clone());
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(calls / concurrency + 1);
            let mut capped = false;
            loop {
                let index = issued.fetch_add(1, Ordering::Relaxed);
                if index >= calls {
                    break;
                }
                if started.elapsed() > STEP_TIME_CAP {
                    capped = true;
                    break;
                }
                let request = request(target, &signer, body(first_order + index))?;
                let sent = Instant::now();
                let response = client
                    .request(request)
                    .await
                    .map_err(|error| format!("{}: call failed: {error}", target.name()))?;
                let status = response.status();
                let answer = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|error| format!("{}: reading the answer: {error}", target.name()))?
                    .to_bytes();
                latencies.push(sent.elapsed());
                check_answer(target, status, &answer)?;
            }
            Ok::<_, String>((latencies, capped))
        });
    }
    let mut report = Report {
        latencies: Vec::with_capacity(calls),
        wall: Duration::ZERO,
        capped: false,
    };
    while let Some(joined) = workers.join_next().await {
        let (latencies, capped) = joined.map_err(|error| format!("worker panicked: {error}"))??;
        report.latencies.extend(latencies);
        report.capped |= capped;
    }
    report.wall = started.elapsed();
    Ok(report)
}

fn request(target: Target, signer: &Signer, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{PATH}", target.addr()))
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Target::Direct(_) = target {
        // What an SDK does for itself; the sidecar target sends none of this.
        let nonce = sign::new_nonce();
        let mut signature = [0u8; SIGNATURE_LEN];
        signer.signature_into(PATH, &body, &nonce, &mut signature);
        request = request
            .header("X-LINE-ChannelId", CHANNEL)
            .header("X-LINE-Authorization-Nonce", nonce)
            .header(
                "X-LINE-Authorization",
                HeaderValue::from_bytes(&signature)
                    .map_err(|error| format!("signature header: {error}"))?,
            );
    }
    request
        .body(Full::new(body))
        .map_err(|error| format!("building the request: {error}"))
}

fn check_answer(target: Target, status: StatusCode, answer: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(answer);
    if status != StatusCode::OK || !text.contains(r#""returnCode":"0000""#) {
        return Err(format!(
            "{}: answered {status} {}",
            target.name(),
            text.chars().take(300).collect::<String>()
        ));
    }
    Ok(())
}
