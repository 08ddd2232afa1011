//! A buyer's round trip in a real headless browser (chromium over WebDriver): a tiny
//! shop page → `request` through the real sidecar binary → the emulator's payment page
//! (`paymentUrl.web`) → Approve → the shop's confirm handler → `confirm` through the
//! sidecar; and the Cancel path, and a payment left until it expired.
//!
//! The shop is a few lines of hyper in this process; it calls the sidecar with plain
//! JSON, as a shop's server does. A failing test leaves a screenshot of the browser in
//! `target/tmp/browser-artefacts/<test>.png`. Without chromium the tests are skipped
//! with a notice, except under CI (`CI=true`), where they fail (see util/browser.rs).

use crate::util::{
    artefact_path, eventually, Browser, Call, EmulatorSetup, RunningEmulator, RunningSidecar,
    Sidecar, CHANNEL_ID, CHANNEL_SECRET,
};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What every order costs.
const AMOUNT: i64 = 300;

/// The shop: `/checkout?order=ID` reserves a payment through the sidecar and sends the
/// browser to LINE Pay's page; `/confirm` (LINE Pay sends the browser back there)
/// confirms through the sidecar and shows the returnCode; `/cancel` says so.
struct Shop {
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// orderId → transactionId (all 19 digits, as text), as a shop stores them.
    orders: Orders,
}

type Orders = Arc<Mutex<HashMap<String, String>>>;

impl Shop {
    async fn start(sidecar: SocketAddr) -> Shop {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the shop: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("shop address: {error}"));
        let orders = Orders::default();
        let kept = orders.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let orders = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let orders = orders.clone();
                        async move {
                            Ok::<_, Infallible>(shop_page(request, addr, sidecar, &orders).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Shop { addr, task, orders }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn shop_page(
    request: Request<Incoming>,
    shop: SocketAddr,
    sidecar: SocketAddr,
    orders: &Orders,
) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or_default().to_owned();
    let field = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    match request.uri().path() {
        "/checkout" => {
            let order = field("order");
            let body = json!({
                "amount": AMOUNT,
                "currency": "TWD",
                "orderId": order,
                "packages": [{
                    "id": "basket",
                    "amount": AMOUNT,
                    "name": "Tea & <cups>",
                    "products": [{"name": "Oolong <b>tea</b>", "quantity": 3, "price": 100}]
                }],
                "redirectUrls": {
                    "confirmUrl": format!("http://{shop}/confirm"),
                    "cancelUrl": format!("http://{shop}/cancel?order={order}"),
                }
            });
            let reply = Call::post("/v3/payments/request", body.to_string())
                .send(sidecar)
                .await;
            let answer = reply.json();
            // The id as its digits in the body: a JSON number above 2^53.
            if let Some(id) = answer["info"]["transactionId"].as_u64() {
                lock(orders).insert(order.clone(), id.to_string());
            }
            match answer["info"]["paymentUrl"]["web"].as_str() {
                Some(web) => redirect(web),
                None => html(
                    StatusCode::BAD_GATEWAY,
                    &format!("request failed: {answer}"),
                ),
            }
        }
        "/confirm" => {
            let id = field("transactionId");
            let answer = Call::post(
                &format!("/v3/payments/{id}/confirm"),
                json!({"amount": AMOUNT, "currency": "TWD"}).to_string(),
            )
            .send(sidecar)
            .await
            .json();
            html(
                StatusCode::OK,
                &format!(
                    "<p id=\"result\">order {} confirm {}</p>",
                    field("orderId"),
                    answer["returnCode"].as_str().unwrap_or("none")
                ),
            )
        }
        "/cancel" => html(
            StatusCode::OK,
            &format!("<p id=\"result\">order {} cancelled</p>", field("order")),
        ),
        _ => html(StatusCode::NOT_FOUND, "no such page"),
    }
}

fn redirect(to: &str) -> Response<Full<Bytes>> {
    let mut response = html(StatusCode::SEE_OTHER, "");
    if let Ok(location) = header::HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn html(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "<!doctype html><html lang=\"en\"><title>shop</title><body>{body}</body></html>"
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The emulator (every payment waits for the buyer), the real sidecar in front of it,
/// and the shop in front of the sidecar.
struct World {
    emulator: RunningEmulator,
    sidecar: RunningSidecar,
    shop: Shop,
}

impl World {
    async fn start() -> World {
        let emulator = EmulatorSetup::new(CHANNEL_ID, CHANNEL_SECRET)
            .wait_for_buyer()
            .start()
            .await;
        let sidecar = Sidecar::new().upstream(emulator.url()).start().await;
        let shop = Shop::start(sidecar.addr).await;
        World {
            emulator,
            sidecar,
            shop,
        }
    }

    /// The status check through the sidecar: its returnCode. The sidecar lets one
    /// transaction be polled about once a second (LINE Pay's rule), so a second look
    /// soon after the first waits its turn, as a shop's poller does.
    async fn status(&self, id: &str) -> String {
        let path = format!("/v3/payments/requests/{id}/check");
        eventually("a status check the sidecar lets through", || async {
            let reply = Call::get(&path).send(self.sidecar.addr).await;
            match reply.json()["returnCode"].as_str() {
                Some(code) => Ok(code.to_owned()),
                None => Err(format!("{} {}", reply.status, reply.text())),
            }
        })
        .await
    }

    async fn details(&self, id: &str) -> Value {
        Call::get(&format!("/v3/payments?transactionId={id}"))
            .send(self.sidecar.addr)
            .await
            .json()
    }

    async fn confirm(&self, id: &str) -> String {
        let answer = Call::post(
            &format!("/v3/payments/{id}/confirm"),
            json!({"amount": AMOUNT, "currency": "TWD"}).to_string(),
        )
        .send(self.sidecar.addr)
        .await
        .json();
        answer["returnCode"].as_str().unwrap_or("none").to_owned()
    }
}

/// A value of a URL's query, as sent (the tests' values need no decoding).
fn query_value(url: &str, name: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
}

/// Runs `scenario` with a browser; on failure, saves a screenshot as the test's
/// artefact before failing. Skips (see [`Browser::start`]) without chromium.
async fn with_browser<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(Arc<Browser>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let browser = Arc::new(browser);
    let outcome = tokio::spawn(scenario(browser.clone())).await;
    if let Err(failure) = outcome {
        let path = artefact_path(test);
        match browser.screenshot(&path).await {
            Ok(()) => eprintln!("{test}: screenshot of the browser at {}", path.display()),
            Err(error) => eprintln!("{test}: no screenshot: {error}"),
        }
        if let Ok(browser) = Arc::try_unwrap(browser) {
            browser.close().await;
        }
        std::panic::resume_unwind(failure.into_panic());
    }
    if let Ok(browser) = Arc::try_unwrap(browser) {
        browser.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_approves_on_the_payment_page_and_the_shop_confirms_through_the_sidecar() {
    with_browser("browser_approve", |browser| async move {
        let world = World::start().await;
        browser.goto(&world.shop.url("/checkout?order=web-1")).await;
        let page = browser
            .wait_for_url(&format!("http://{}/__emulator/pay/", world.emulator.addr))
            .await;

        // The order as the shop sent it, escaped; the keyboard starts on Approve.
        assert_eq!(browser.text("#amount").await, "300 TWD");
        let source = browser.source().await;
        assert!(
            source.contains("Oolong &lt;b&gt;tea&lt;/b&gt; × 3"),
            "{source}"
        );
        assert!(
            !browser.has("b").await,
            "merchant markup was rendered: {source}"
        );
        assert_eq!(browser.focused_id().await, "approve");

        browser.click("#method-credit-card").await;
        browser.click("#approve").await;
        let back = browser.wait_for_url(&world.shop.url("/confirm?")).await;
        let id = query_value(&back, "transactionId").unwrap_or_default();
        assert_eq!(id.len(), 19, "{back}");
        assert_eq!(query_value(&back, "orderId").as_deref(), Some("web-1"));
        assert_eq!(browser.text("#result").await, "order web-1 confirm 0000");

        assert_eq!(world.status(&id).await, "0123");
        let details = world.details(&id).await;
        assert_eq!(details["returnCode"], "0000", "{details}");
        assert_eq!(
            details["info"][0]["payInfo"][0]["method"], "CREDIT_CARD",
            "{details}"
        );
        // The page of a finished payment offers nothing more.
        browser.goto(&page).await;
        assert!(browser.text("#state").await.contains("already complete"));
        assert!(!browser.has("#approve").await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_cancels_on_the_payment_page_and_lands_on_the_shops_cancel_page() {
    with_browser("browser_cancel", |browser| async move {
        let world = World::start().await;
        browser.goto(&world.shop.url("/checkout?order=web-2")).await;
        browser
            .wait_for_url(&format!("http://{}/__emulator/pay/", world.emulator.addr))
            .await;
        let id = transaction_id_of(&world, "web-2");
        assert_eq!(world.status(&id).await, "0000", "waiting for the buyer");
        assert_eq!(world.confirm(&id).await, "1169", "not approved yet");

        browser.click("#cancel").await;
        browser.wait_for_url(&world.shop.url("/cancel?")).await;
        assert_eq!(browser.text("#result").await, "order web-2 cancelled");
        assert_eq!(world.status(&id).await, "0121");
        assert_eq!(world.confirm(&id).await, "1180");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_left_for_20_minutes_expires_and_its_page_says_so() {
    with_browser("browser_expired", |browser| async move {
        let world = World::start().await;
        browser.goto(&world.shop.url("/checkout?order=web-3")).await;
        let page = browser
            .wait_for_url(&format!("http://{}/__emulator/pay/", world.emulator.addr))
            .await;
        let id = transaction_id_of(&world, "web-3");
        world.emulator.advance_clock(Duration::from_secs(20 * 60));

        browser.goto(&page).await;
        let state = browser.text("#state").await;
        assert!(state.contains("has expired"), "{state}");
        assert!(!browser.has("#approve").await);
        assert_eq!(world.status(&id).await, "0121");
        assert_eq!(world.confirm(&id).await, "1180");
    })
    .await;
}

/// A reservation's transaction id, as the shop kept it from the request answer.
fn transaction_id_of(world: &World, order_id: &str) -> String {
    lock(&world.shop.orders)
        .get(order_id)
        .cloned()
        .unwrap_or_else(|| panic!("the shop has no reservation for {order_id}"))
}

fn lock(orders: &Orders) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    orders
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// examples/browser (a node shop tested with playwright-core in the same chromium)
/// passes against the real sidecar and the emulator: what docs/emulator.md (and
/// examples/README.md) tells a shop to run in its CI. Needs `npm ci` in examples/browser (.ci/run does it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playwright_example_passes_against_the_sidecar_and_the_emulator() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/browser");
    let installed = folder
        .join("node_modules/playwright-core/package.json")
        .exists();
    let chromium = std::path::Path::new(crate::util::CHROMIUM).exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !(installed && chromium && node) {
        let missing = "node, chromium and examples/browser/node_modules \
                       (apt-get install nodejs npm chromium; npm ci --prefix examples/browser)";
        assert!(
            !std::env::var("CI").is_ok_and(|value| value == "true"),
            "under CI the browser example must run: .ci/run installs {missing}"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED examples/browser: needs {missing}. CI runs it. ***\n"
        );
        return;
    }
    let emulator = EmulatorSetup::new(CHANNEL_ID, CHANNEL_SECRET)
        .wait_for_buyer()
        .start()
        .await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;
    let mut command = std::process::Command::new("node");
    command
        .args(["--test", "checkout.test.mjs"])
        .current_dir(&folder)
        .env("LINEPAY_SIDECAR_URL", sidecar.url())
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .stdin(std::process::Stdio::null());
    // Off the runtime: the sidecar and emulator keep serving while node runs.
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start node: {error}"));
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read = |stream: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut stream) = stream {
                    let _ = stream.read_to_string(&mut text);
                }
                text
            })
        };
        let out = read(stdout.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let err = read(stderr.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let status = crate::util::child_exit(&mut child, Duration::from_secs(90));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (
            status,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    })
    .await
    .unwrap_or_else(|error| panic!("the example's runner failed: {error}"));
    let (status, stdout, stderr) = output;
    assert!(
        status.is_some_and(|status| status.success()),
        "examples/browser failed ({status:?}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("# pass 2"), "{stdout}");
}
