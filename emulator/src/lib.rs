//! An in-memory LINE Pay API (online v2, v3 and v4, `userInfo`, and the offline POS
//! API v2 and v4) for demos, tests and merchants' own CI.
//!
//! It is the upstream of `linepay-sidecar demo`, so a newcomer without a LINE Pay
//! account can run request → confirm → details → refund, and the real upstream of the
//! sidecar's integration tests; `linepay-emulator` (src/main.rs) runs it alone. It is a
//! crate of its own so that a production sidecar, built without the `demo` feature,
//! carries none of it; it does not depend on the sidecar, and checks credentials with
//! its own code ([`auth`]), as LINE Pay would, answering like LINE Pay: HTTP 200 with a
//! `returnCode` for every business outcome.
//!
//! A call travels: [`route`](route::route) (404 if not in the API) → [`auth`] (the
//! channel its `X-LINE-ChannelId` names, and that channel's secret, else 1106) →
//! [`input`] (2101/2102/1178/1124, in the channel's currency) → [`fault`] (a
//! rehearsed failure, if one was asked for) → [`ledger`] (state rules, on the
//! emulator's [`clock`], among the channel's own payments) → [`reply`] (the JSON
//! body). Several channels may be served at once ([`EmulatorConfig::more_channels`]). [`Emulator::serve`] (in `server.rs`) puts HTTP/1.1 and optional
//! TLS in front, refuses, before anything else, a call from a source outside the
//! optional IP whitelist ([`source`]), and carries out delays and dropped
//! connections. Paths under `/__emulator/` are the emulator's own [`control`] API
//! (clock, faults, buyer, one-time keys, channels) and the [`page`] behind `paymentUrl.web`,
//! where a browser approves or cancels; the whitelist does not cover them. [`cli`] is
//! the command line both binaries share.

mod auth;
pub mod cli;
mod clock;
mod control;
mod fault;
mod input;
mod keys;
mod ledger;
mod page;
mod reply;
mod route;
mod secret;
mod server;
mod source;

use bytes::Bytes;
use fault::{Action, Fault, Faults};
use http::{HeaderMap, Method, Response};
use input::{AmountCheck, DetailsQuery, OneTimeKeyPayment, PaymentRequest, PreapprovedPayment};
use ledger::{ChannelKey, Ledger};
use reply::{Outcome, Refusal};
use route::{Endpoint, Route};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

pub use fault::{FaultError, FaultKind, FaultRule, FaultStage, MAX_FAULT_DELAY, MAX_FAULT_TIMES};
pub use input::Currency;
pub use keys::{INSUFFICIENT_BALANCE, PAYS_BY_CARD, PAYS_FROM_BALANCE};
pub use ledger::BuyerAction;
pub use secret::Secret;
pub use source::SourceNet;

/// The channel of `linepay-sidecar demo` and the emulator's default. Not a real LINE Pay
/// channel.
pub const DEMO_CHANNEL_ID: &str = "1234567890";
pub const DEMO_CHANNEL_SECRET: &str = "demo-secret-not-a-real-linepay-channel";

/// The merchant channels the emulator accepts calls for, and how it behaves.
///
/// The first channel is this struct's own `channel_id`, `channel_secret`, `currency`
/// and `require_device_headers`; [`EmulatorConfig::more_channels`] adds others, served
/// at the same time (a web shop and its POS, brands, countries). A call is checked
/// against the channel its `X-LINE-ChannelId` names, and sees only that channel's
/// payments, orderIds and regKeys.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub channel_id: String,
    pub channel_secret: Secret,
    /// The server IP whitelist of LINE Pay's merchant center: when not empty, a call
    /// from any other source address is refused as LINE Pay refuses it. It applies to
    /// every channel (the source is checked before the request is read).
    pub allow_sources: Vec<SourceNet>,
    /// The first channel's one currency; a call in another answers `1178`.
    pub currency: Currency,
    /// Whether the first channel's offline calls must carry `X-LINE-MerchantDeviceType`
    /// and `X-LINE-MerchantDeviceProfileId` (a merchant setting at LINE Pay).
    pub require_device_headers: bool,
    /// Channels served besides the first, each with its own id, secret and currency.
    /// A channel whose id an earlier one already has is never reached
    /// ([`EmulatorConfig::duplicate_channel_id`] finds it; the command line refuses it).
    pub more_channels: Vec<ChannelConfig>,
    /// Every reservation waits for the buyer on the payment page (`--wait-for-buyer`);
    /// without it only those whose orderId contains `buyer-waits` do, and the others
    /// are approved at once.
    pub wait_for_buyer: bool,
    pub lifetimes: Lifetimes,
}

impl EmulatorConfig {
    /// A TWD channel, accepting calls from every source, without device headers.
    pub fn new(channel_id: impl Into<String>, channel_secret: Secret) -> Self {
        EmulatorConfig {
            channel_id: channel_id.into(),
            channel_secret,
            allow_sources: Vec::new(),
            currency: Currency::default(),
            require_device_headers: false,
            more_channels: Vec::new(),
            wait_for_buyer: false,
            lifetimes: Lifetimes::default(),
        }
    }

    /// Serves `channel` too.
    #[must_use]
    pub fn with_channel(mut self, channel: ChannelConfig) -> Self {
        self.more_channels.push(channel);
        self
    }

    /// Every channel served, the first one first.
    pub fn channels(&self) -> Vec<ChannelConfig> {
        let first = ChannelConfig {
            channel_id: self.channel_id.clone(),
            channel_secret: self.channel_secret.clone(),
            currency: self.currency,
            require_device_headers: self.require_device_headers,
        };
        std::iter::once(first)
            .chain(self.more_channels.iter().cloned())
            .collect()
    }

    /// A channel id given to two channels, if any: the second could never be called.
    pub fn duplicate_channel_id(&self) -> Option<String> {
        let channels = self.channels();
        channels.iter().enumerate().find_map(|(at, channel)| {
            channels[..at]
                .iter()
                .any(|earlier| earlier.channel_id == channel.channel_id)
                .then(|| channel.channel_id.clone())
        })
    }
}

/// One merchant channel at the emulated LINE Pay: what a call's credentials are
/// checked against, and the rules its calls follow.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    pub channel_id: String,
    pub channel_secret: Secret,
    /// The channel's one currency; a call in another answers `1178`.
    pub currency: Currency,
    /// Whether offline calls must carry `X-LINE-MerchantDeviceType` and
    /// `X-LINE-MerchantDeviceProfileId` (a merchant setting at LINE Pay).
    pub require_device_headers: bool,
}

impl ChannelConfig {
    /// A TWD channel without device headers.
    pub fn new(channel_id: impl Into<String>, channel_secret: Secret) -> Self {
        ChannelConfig {
            channel_id: channel_id.into(),
            channel_secret,
            currency: Currency::default(),
            require_device_headers: false,
        }
    }
}

/// How long things live at the emulated LINE Pay, on the emulator's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// A reservation the buyer does not complete (LINE Pay: 20 minutes); then the
    /// status check answers `0121` and confirm `1180`.
    pub reservation: Duration,
    /// An authorisation (capture=false) not captured or voided; then it shows as
    /// `EXPIRED_AUTHORIZATION`. LINE Pay's length depends on the payment method; the
    /// emulator takes 7 days.
    pub authorization: Duration,
    /// A regKey not used for this long expires (`1193`). LINE Pay: 180 days after
    /// its last use in production, about a day in the sandbox.
    pub reg_key: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            reservation: Duration::from_secs(20 * 60),
            authorization: Duration::from_secs(7 * 24 * 3600),
            reg_key: Duration::from_secs(180 * 24 * 3600),
        }
    }
}

impl Lifetimes {
    pub(crate) fn reservation_micros(&self) -> u64 {
        micros(self.reservation)
    }

    pub(crate) fn authorization_micros(&self) -> u64 {
        micros(self.authorization)
    }

    pub(crate) fn reg_key_micros(&self) -> u64 {
        micros(self.reg_key)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A LINE Pay emulator. Clones share the same state.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

struct Shared {
    /// What applies to every channel (whitelist, buyer, lifetimes). Its channel fields
    /// are not read after start: `channels` is what calls are checked against.
    config: EmulatorConfig,
    /// Every channel, the first one first; the index is the channel's key in the
    /// ledger. A secret can be replaced ([`Emulator::set_channel_secret`]), never a
    /// channel added or removed, so an index stays valid.
    channels: RwLock<Vec<ChannelConfig>>,
    clock: clock::Clock,
    /// Held only for the synchronous ledger call, never across an await.
    ledger: Mutex<Ledger>,
    faults: Mutex<Faults>,
    calls: AtomicU64,
    /// `http://ADDR` of the payment pages, once the emulator serves somewhere.
    page_base: Mutex<Option<PageBase>>,
}

/// Where `paymentUrl.web` points.
#[derive(Clone, Debug)]
struct PageBase {
    url: String,
    /// Set by [`Emulator::serve_pages`]: a plain-HTTP listener of its own wins over
    /// the API's (TLS) one.
    dedicated: bool,
}

/// `paymentUrl.web`'s host while the emulator is not served (only [`Emulator::handle`]
/// is called): a name that resolves nowhere.
const UNSERVED_PAGE_BASE: &str = "http://linepay-emulator.invalid";

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channel_ids: Vec<String> = self
            .channels()
            .into_iter()
            .map(|channel| channel.channel_id)
            .collect();
        f.debug_struct("Emulator")
            .field("channel_ids", &channel_ids)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

/// A call that passed routing, credentials and input checks: what the ledger is asked.
#[derive(Debug)]
enum Parsed {
    Request(PaymentRequest),
    Confirm(u64, AmountCheck),
    Capture(u64, AmountCheck),
    Void(u64),
    Refund(u64, Option<i64>),
    Details(DetailsQuery),
    Authorizations(DetailsQuery),
    Check(u64),
    UserInfo(u64),
    Preapproved(String, PreapprovedPayment),
    RegKeyCheck(String),
    RegKeyExpire(String),
    OneTimeKey(OneTimeKeyPayment),
    OrderCheck(String),
    OrderVoid(String),
    OrderCapture(String, AmountCheck),
    OrderRefund(String, Option<i64>),
}

/// A call ready to apply, with the fault chosen for it, if any.
pub(crate) struct Call {
    route: Route,
    path: String,
    /// The channel whose credentials the call carried: its payments are the only ones
    /// it sees.
    channel: ChannelKey,
    parsed: Parsed,
    /// What the logs show of the credentials received (never the v2 secret).
    channel_id: String,
    nonce: String,
    signature: String,
    fault: Option<Fault>,
}

/// What [`Emulator::prepare`] decided.
pub(crate) enum Prepared {
    /// Answered without the ledger: a 404, a refusal, a control call.
    Answered(Response<Bytes>),
    Call(Box<Call>),
}

/// What the server does with a call.
pub(crate) enum Delivery {
    Respond(Response<Bytes>),
    /// Close the connection without an answer (a rehearsed fault).
    Drop,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        let clock = clock::Clock::default();
        let ledger = Ledger::new(clock.now(), config.lifetimes);
        let channels = config.channels();
        Emulator {
            shared: Arc::new(Shared {
                config,
                channels: RwLock::new(channels),
                clock,
                ledger: Mutex::new(ledger),
                faults: Mutex::new(Faults::default()),
                calls: AtomicU64::new(0),
                page_base: Mutex::new(None),
            }),
        }
    }

    /// Answers one call: method, path, raw query (without '?', `None` if absent),
    /// headers and the exact body bytes → a JSON response. Control paths
    /// (`/__emulator/...`) are answered too. Rehearsed faults act only through
    /// [`Emulator::serve`], which can delay and drop connections.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<Bytes> {
        match self.prepare(method, path, query, headers, body, false) {
            Prepared::Answered(response) => response,
            Prepared::Call(call) => self.apply(&call),
        }
    }

    /// Moves the emulator's clock forward (never back), as
    /// `POST /__emulator/clock {"advance": "21m"}` does; returns the total offset.
    pub fn advance_clock(&self, by: Duration) -> Duration {
        let total = self.shared.clock.advance(by);
        tracing::info!(
            advanced = %humantime::format_duration(by),
            offset = %humantime::format_duration(total),
            "emulator: clock moved forward"
        );
        total
    }

    /// How far the clock has been moved forward in total.
    pub fn clock_offset(&self) -> Duration {
        self.shared.clock.offset()
    }

    /// The emulator's time, as LINE Pay writes dates (`2026-05-09T07:29:33Z`).
    pub fn now_rfc3339(&self) -> String {
        clock::iso8601(self.shared.clock.now())
    }

    /// Lines up a rehearsed fault, as `POST /__emulator/faults` does.
    pub fn add_fault(&self, rule: FaultRule) -> Result<(), FaultError> {
        self.faults().add(rule)
    }

    /// Forgets every fault rule still waiting (orderId conventions stay in force).
    pub fn clear_faults(&self) {
        self.faults().clear();
    }

    /// The rules still waiting, as the control API lists them.
    pub fn pending_faults(&self) -> serde_json::Value {
        self.faults().pending()
    }

    /// Acts as the buyer on LINE Pay's page for a reservation not yet confirmed:
    /// approve one requested with an orderId containing `buyer-waits`, cancel it
    /// (status check `0121`), or make it fail (`0122`).
    pub fn buyer(&self, transaction_id: u64, action: BuyerAction) -> Result<(), String> {
        let now = self.shared.clock.now();
        self.ledger().buyer(transaction_id, action, now)
    }

    /// A fresh one-time key (12, 18 or 19 digits) that pays by card or from the
    /// balance, single use and valid five minutes on the emulator's clock, as
    /// `POST /__emulator/oneTimeKeys` issues; returns it and its expiry (RFC 3339).
    pub fn issue_one_time_key(
        &self,
        by_card: bool,
        digits: usize,
    ) -> Result<(String, String), String> {
        if !matches!(digits, 12 | 18 | 19) {
            return Err("a one-time key has 12, 18 or 19 digits".into());
        }
        let now = self.shared.clock.now();
        let (key, expires) = self.ledger().issue_one_time_key(by_card, digits, now);
        Ok((key, clock::iso8601(expires)))
    }

    /// What the payment page at `reserve_id` shows.
    pub(crate) fn page_view(&self, reserve_id: &str) -> Option<ledger::PageView> {
        let now = self.shared.clock.now();
        self.ledger().page(reserve_id, now)
    }

    /// The buyer's action on a payment page.
    pub(crate) fn page_action(
        &self,
        reserve_id: &str,
        token: &str,
        action: ledger::PageAction,
    ) -> Result<ledger::PageExit, ledger::PageRefusal> {
        let now = self.shared.clock.now();
        let exit = self.ledger().page_action(reserve_id, token, action, now);
        if let Ok(exit) = &exit {
            tracing::info!(outcome = ?page_outcome(exit), "emulator: the buyer acted on the payment page");
        }
        exit
    }

    /// The base URL of `paymentUrl.web` (`http://127.0.0.1:9090`).
    pub fn page_base(&self) -> String {
        lock(&self.shared.page_base)
            .as_ref()
            .map_or_else(|| UNSERVED_PAGE_BASE.to_owned(), |base| base.url.clone())
    }

    /// Records where the pages are served; a dedicated page listener is never
    /// replaced by the API listener.
    pub(crate) fn set_page_base(&self, url: String, dedicated: bool) {
        let mut base = lock(&self.shared.page_base);
        if dedicated || !base.as_ref().is_some_and(|base| base.dedicated) {
            *base = Some(PageBase { url, dedicated });
        }
    }

    /// Whether a connection from `address` may call (always, without a whitelist).
    pub fn source_allowed(&self, address: IpAddr) -> bool {
        let allowed = &self.shared.config.allow_sources;
        allowed.is_empty() || allowed.iter().any(|net| net.contains(address))
    }

    /// Every channel served, the first one first.
    pub fn channels(&self) -> Vec<ChannelConfig> {
        self.shared
            .channels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the secret of the channel `channel_id`, as a merchant who issues a new
    /// secret at LINE Pay does: from now on only calls signed (or, v2, sent) with the
    /// new secret pass; every other channel is untouched. Its payments stay its own.
    pub fn set_channel_secret(&self, channel_id: &str, secret: Secret) -> Result<(), String> {
        let mut channels = self
            .shared
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let channel = channels
            .iter_mut()
            .find(|channel| channel.channel_id == channel_id)
            .ok_or_else(|| format!("the emulator serves no channel {channel_id}"))?;
        channel.channel_secret = secret;
        tracing::info!(channel_id, "emulator: the channel's secret was replaced");
        Ok(())
    }

    /// How many requests reached the emulator (any path, any outcome).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    fn count_call(&self) {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Serves one call with its rehearsed fault, if any: what `serve` sends back.
    pub(crate) async fn deliver(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Delivery {
        let call = match self.prepare(method, path, query, headers, body, true) {
            Prepared::Answered(response) => return Delivery::Respond(response),
            Prepared::Call(call) => call,
        };
        let Some(fault) = call.fault.clone() else {
            return Delivery::Respond(self.apply(&call));
        };
        tracing::info!(
            %method, path,
            endpoint = call.route.endpoint.name(),
            fault = %fault.action.describe(),
            stage = ?fault.stage,
            "emulator: rehearsing a fault"
        );
        let applied = match fault.stage {
            FaultStage::Before => None,
            FaultStage::After => Some(self.apply(&call)),
        };
        match fault.action {
            Action::Delay(delay) => {
                tokio::time::sleep(delay).await;
                Delivery::Respond(applied.unwrap_or_else(|| self.apply(&call)))
            }
            Action::Drop => Delivery::Drop,
            Action::Status(status) => Delivery::Respond(reply::http_fault(status)),
            Action::Code(code) => Delivery::Respond(reply::business(
                call.route.version,
                &Err(Refusal::new(code, "(a fault rehearsed by the emulator)")),
            )),
        }
    }

    /// Routes, checks credentials and input, and picks the fault (when `with_faults`):
    /// everything short of changing the ledger.
    fn prepare(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        with_faults: bool,
    ) -> Prepared {
        self.count_call();
        if path.starts_with(page::PATH) {
            return Prepared::Answered(page::handle(self, method, path, headers, body));
        }
        if is_own_path(path) {
            return Prepared::Answered(control::handle(self, method, path, body));
        }
        let Some(route) = route::route(method, path) else {
            tracing::debug!(%method, path, "emulator: not a LINE Pay API path");
            return Prepared::Answered(reply::not_found(method, path));
        };
        let received = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let (channel_id, nonce, signature) = (
            received("x-line-channelid"),
            received("x-line-authorization-nonce"),
            received("x-line-authorization"),
        );
        let (channel, parsed) = match self.check(&route, method, path, query, headers, body) {
            Ok(checked) => checked,
            Err(refusal) => {
                tracing::info!(
                    %method, path, channel_id, nonce, signature,
                    return_code = %refusal.code.code(),
                    detail = %refusal.detail,
                    "emulator: refused"
                );
                return Prepared::Answered(reply::business(route.version, &Err(refusal)));
            }
        };
        let fault = if with_faults {
            self.fault_for(&route.endpoint, channel, &parsed)
        } else {
            None
        };
        Prepared::Call(Box::new(Call {
            route,
            path: path.to_owned(),
            channel,
            parsed,
            channel_id,
            nonce,
            signature,
            fault,
        }))
    }

    /// Credentials, device headers and input: LINE Pay's refusals before any state.
    /// Returns the channel the credentials are those of, with the parsed call.
    fn check(
        &self,
        route: &Route,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(ChannelKey, Parsed), Refusal> {
        // Held for this synchronous check only; a secret rotation waits that long.
        let channels = self
            .shared
            .channels
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let at = auth::channel_of(&channels, headers)?;
        let channel = &channels[at];
        let version = route.version;
        if version.signed() {
            // GET signs the raw query, POST the body: exactly the bytes received, and
            // the path as received (percent-encoded orderIds stay encoded).
            let payload = if method == Method::GET {
                query.unwrap_or("").as_bytes()
            } else {
                body
            };
            auth::verify_v3(channel, path, payload, headers)?;
        } else {
            auth::verify_v2(channel, headers)?;
        }
        if channel.require_device_headers && route.endpoint.offline() {
            auth::verify_device(headers)?;
        }
        let currency = channel.currency;
        drop(channels);
        let parsed = match &route.endpoint {
            Endpoint::Request => Parsed::Request(input::payment_request(version, body, currency)?),
            Endpoint::Confirm(id) => {
                Parsed::Confirm(*id, input::amount_check(version, body, currency)?)
            }
            Endpoint::Capture(id) => {
                Parsed::Capture(*id, input::capture_amount(version, body, currency)?)
            }
            Endpoint::Void(id) => {
                input::no_parameters(body)?;
                Parsed::Void(*id)
            }
            Endpoint::Refund(id) => Parsed::Refund(*id, input::refund(version, body)?),
            Endpoint::Details => Parsed::Details(input::details_query(query)?),
            Endpoint::Authorizations => Parsed::Authorizations(input::details_query(query)?),
            Endpoint::Check(id) => Parsed::Check(*id),
            Endpoint::UserInfo(id) => Parsed::UserInfo(*id),
            Endpoint::PreapprovedPayment(reg_key) => Parsed::Preapproved(
                reg_key.clone(),
                input::preapproved_payment(version, body, currency)?,
            ),
            Endpoint::RegKeyCheck(reg_key) => {
                input::reg_key_check_query(query)?;
                Parsed::RegKeyCheck(reg_key.clone())
            }
            Endpoint::RegKeyExpire(reg_key) => {
                input::no_parameters(body)?;
                Parsed::RegKeyExpire(reg_key.clone())
            }
            Endpoint::OneTimeKeyPay => {
                Parsed::OneTimeKey(input::one_time_key_payment(version, body, currency)?)
            }
            Endpoint::OrderCheck(order_id) => Parsed::OrderCheck(order_id.clone()),
            Endpoint::OrderVoid(order_id) => {
                input::no_parameters(body)?;
                Parsed::OrderVoid(order_id.clone())
            }
            Endpoint::OrderCapture(order_id) => Parsed::OrderCapture(
                order_id.clone(),
                input::capture_amount(version, body, currency)?,
            ),
            Endpoint::OrderRefund(order_id) => {
                Parsed::OrderRefund(order_id.clone(), input::refund(version, body)?)
            }
        };
        Ok((ChannelKey(at), parsed))
    }

    /// The fault asked for on this call, by a rule or by its payment's orderId.
    /// The orderId is looked up in the caller's channel only.
    fn fault_for(
        &self,
        endpoint: &Endpoint,
        channel: ChannelKey,
        parsed: &Parsed,
    ) -> Option<Fault> {
        let by_id = |id: &u64| self.ledger().order_of(channel, *id).map(str::to_owned);
        let (order_id, creates) = match parsed {
            Parsed::Request(request) => (Some(request.order_id.clone()), true),
            Parsed::Preapproved(_, payment) => (Some(payment.order_id.clone()), true),
            Parsed::OneTimeKey(payment) => (Some(payment.order_id.clone()), true),
            Parsed::Confirm(id, _)
            | Parsed::Capture(id, _)
            | Parsed::Void(id)
            | Parsed::Refund(id, _)
            | Parsed::Check(id)
            | Parsed::UserInfo(id) => (by_id(id), false),
            Parsed::Details(query) | Parsed::Authorizations(query) => (
                query
                    .order_ids
                    .first()
                    .cloned()
                    .or_else(|| query.transaction_ids.first().and_then(by_id)),
                false,
            ),
            Parsed::OrderCheck(order_id)
            | Parsed::OrderVoid(order_id)
            | Parsed::OrderCapture(order_id, _)
            | Parsed::OrderRefund(order_id, _) => (Some(order_id.clone()), false),
            Parsed::RegKeyCheck(_) | Parsed::RegKeyExpire(_) => (None, false),
        };
        self.faults()
            .take(endpoint.name(), creates, order_id.as_deref())
    }

    /// Applies a call to the ledger and answers it.
    fn apply(&self, call: &Call) -> Response<Bytes> {
        let mut outcome = self.outcome(call.channel, &call.parsed);
        if adds_payment_provider(&call.route) {
            if let Ok(reply::Answer {
                info: Some(info), ..
            }) = &mut outcome
            {
                add_payment_provider(info);
            }
        }
        let (path, channel_id, nonce, signature) =
            (&call.path, &call.channel_id, &call.nonce, &call.signature);
        let endpoint = call.route.endpoint.name();
        // Info level on purpose: `linepay-sidecar demo` shows each signed call as the
        // emulator received it. Never the v2 secret header.
        match &outcome {
            Ok(answer) => tracing::info!(
                endpoint, path, channel_id, nonce, signature,
                return_code = %answer.code.code(),
                "emulator: signature verified, answered"
            ),
            Err(refusal) => tracing::info!(
                endpoint, path, channel_id, nonce, signature,
                return_code = %refusal.code.code(),
                detail = %refusal.detail,
                "emulator: refused"
            ),
        }
        reply::business(call.route.version, &outcome)
    }

    /// What the ledger says to `parsed`, a call of `channel`.
    fn outcome(&self, channel: ChannelKey, parsed: &Parsed) -> Outcome {
        let now = self.shared.clock.now();
        let mut ledger = self.ledger();
        match parsed {
            Parsed::Request(request) => ledger.request(
                channel,
                request.clone(),
                &self.page_base(),
                self.shared.config.wait_for_buyer,
                now,
            ),
            Parsed::Confirm(id, check) => ledger.confirm(channel, *id, check, now),
            Parsed::Capture(id, check) => ledger.capture(channel, *id, check, now),
            Parsed::Void(id) => ledger.void(channel, *id, now),
            Parsed::Refund(id, amount) => ledger.refund(channel, *id, *amount, now),
            Parsed::Details(query) => ledger.details(channel, query, false, now),
            Parsed::Authorizations(query) => ledger.details(channel, query, true, now),
            Parsed::Check(id) => ledger.check(channel, *id, now),
            Parsed::UserInfo(id) => ledger.user_info(channel, *id, now),
            Parsed::Preapproved(reg_key, payment) => {
                ledger.pay_preapproved(channel, reg_key, payment.clone(), now)
            }
            Parsed::RegKeyCheck(reg_key) => ledger.check_reg_key(channel, reg_key, now),
            Parsed::RegKeyExpire(reg_key) => ledger.expire_reg_key(channel, reg_key, now),
            Parsed::OneTimeKey(payment) => match keys::outcome(&payment.one_time_key) {
                keys::KeyOutcome::Refused(code) => Err(Refusal::new(
                    code,
                    "(the emulator's test one-time key for this answer)",
                )),
                keys::KeyOutcome::Pays(method) => {
                    ledger.pay_one_time_key(channel, payment.clone(), method, now)
                }
            },
            Parsed::OrderCheck(order_id) => ledger.order_check(channel, order_id, now),
            Parsed::OrderVoid(order_id) => {
                let id = ledger.transaction_of(channel, order_id)?;
                ledger.void(channel, id, now)
            }
            Parsed::OrderCapture(order_id, check) => {
                let id = ledger.transaction_of(channel, order_id)?;
                ledger.capture(channel, id, check, now)
            }
            Parsed::OrderRefund(order_id, amount) => {
                let id = ledger.transaction_of(channel, order_id)?;
                ledger.refund(channel, id, *amount, now)
            }
        }
    }

    /// The ledger; a poisoned lock (a panic elsewhere while holding it) still holds
    /// consistent data, since every ledger method checks before it mutates.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.shared
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.shared.faults)
    }
}

/// The emulator's own paths (control API, payment pages), which are not LINE Pay's.
pub(crate) fn is_own_path(path: &str) -> bool {
    path == control::PREFIX || path.starts_with("/__emulator/")
}

/// Online API v4 names the payment provider (Taiwan's payment-institution rules) in
/// the answers of confirm, capture, payment details and preapproved pay.
fn adds_payment_provider(route: &Route) -> bool {
    route.version == route::Version::V4
        && matches!(
            route.endpoint,
            Endpoint::Confirm(_)
                | Endpoint::Capture(_)
                | Endpoint::Details
                | Endpoint::PreapprovedPayment(_)
        )
}

/// The emulator's `info.paymentProvider`: LINE Pay answers `TSP` or `EPI` by the
/// merchant's contract; the emulator always answers this one.
pub const PAYMENT_PROVIDER: &str = "TSP";

fn add_payment_provider(info: &mut serde_json::Value) {
    match info {
        serde_json::Value::Object(object) => {
            object.insert("paymentProvider".into(), PAYMENT_PROVIDER.into());
        }
        serde_json::Value::Array(entries) => entries.iter_mut().for_each(add_payment_provider),
        _ => {}
    }
}

/// A lock that a panic elsewhere did not make unusable (the data is plain values).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn page_outcome(exit: &ledger::PageExit) -> String {
    match exit {
        ledger::PageExit::Approved { transaction_id, .. } => {
            format!("approved transaction {transaction_id}")
        }
        ledger::PageExit::Cancelled { .. } => "cancelled".to_owned(),
    }
}

#[cfg(test)]
mod tests;
