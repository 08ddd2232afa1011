//! The emulator's memory of payments and regKeys, and LINE Pay's rules for moving a
//! payment through its states.
//!
//! ```text
//!            buyer approves (at once, or on the payment page: `buyer-waits`, --wait-for-buyer)
//! request ──▶ Requested ──confirm──▶ Captured ──refund──▶ (partly or fully refunded)
//!              │  │  │                ▲
//!              │  │  └─confirm (capture=false)─▶ Authorized ──void──▶ Voided
//!              │  │                   └──capture (≤ authorised)──┘  │
//!              │  └─ buyer cancels ─▶ Cancelled      (7 days) ──────┴─▶ AuthorizationExpired
//!              └──── 20 minutes ───▶ Expired         buyer fails ─▶ Failed
//! one-time key pay ─▶ Captured, or Authorized with capture=false (the offline API;
//!                    each key pays once, within five minutes)
//! ```
//! Every payment and regKey belongs to the channel whose call created it
//! ([`ChannelKey`]): a call of another channel finds neither (`1150`, `1190`), and an
//! orderId is unique within its channel only, as at LINE Pay where each merchant
//! numbers its own orders. Transaction ids come from one sequence, so they never repeat
//! across channels; one-time keys are the buyer's, not a channel's.
//!
//! Time-driven changes (a reservation's 20 minutes, an authorisation's and a regKey's
//! lifetime) are applied when a payment is next looked at, from the `now` each method
//! is given: the emulator's clock, which a test moves forward. Inputs arrive already
//! validated (`input.rs`); every method is plain data in, [`Outcome`] out, no I/O.

use crate::clock;
use crate::input::{
    AmountCheck, Currency, DetailsQuery, OneTimeKeyPayment, PaymentRequest, PreapprovedPayment,
    Redirect,
};
use crate::reply::{Answer, Outcome, Refusal, ReturnCode};
use crate::Lifetimes;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// Which of the emulator's channels a payment or regKey belongs to: the channel's
/// position in the emulator's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ChannelKey(pub(crate) usize);

#[derive(Debug)]
pub(crate) struct Ledger {
    payments: HashMap<u64, Payment>,
    /// (channel, orderId) → transactionId; LINE Pay refuses an orderId the channel has
    /// used (1172).
    order_ids: HashMap<(ChannelKey, String), u64>,
    /// refundTransactionId → the payment it refunds, so details can find refunds too.
    refunds: HashMap<u64, u64>,
    reg_keys: HashMap<String, RegKey>,
    /// transactionReserveId (the payment page's address) → the reservation.
    pages: HashMap<String, u64>,
    /// Every one-time key that paid or was shown: keys are single use and live five
    /// minutes from when a POS first presents them.
    one_time_keys: HashMap<String, SeenKey>,
    ids: TransactionIds,
    lifetimes: Lifetimes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Requested,
    /// The buyer cancelled on LINE Pay's page (a rehearsal control).
    Cancelled,
    /// The reservation was not confirmed within its lifetime (20 minutes).
    Expired,
    /// The payment failed at LINE Pay (a rehearsal control).
    Failed,
    Authorized,
    /// Authorised but neither captured nor voided within the authorisation lifetime.
    AuthorizationExpired,
    Captured,
    Voided,
}

/// What the emulated buyer has done with a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Buyer {
    Approved,
    /// Not yet: the status check answers 0000 and confirm 1169.
    Waiting,
}

/// What a buyer does on the emulated LINE Pay page: the `buyer` control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuyerAction {
    Approve,
    Cancel,
    Fail,
}

/// The orderId convention that keeps a reservation waiting for the buyer.
pub(crate) const BUYER_WAITS: &str = "buyer-waits";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Balance,
    /// Automatic (preapproved) payments need a card at LINE Pay.
    CreditCard,
}

#[derive(Debug)]
struct Payment {
    /// The channel that created it, the only one that sees it.
    channel: ChannelKey,
    transaction_id: u64,
    order_id: String,
    /// The requested (and authorised) amount.
    amount: i64,
    /// What was captured: the whole amount, or less after a partial capture.
    captured: i64,
    currency: Currency,
    product_name: String,
    packages: Option<Value>,
    /// `false`: confirm only authorises; capture or void must follow.
    capture: bool,
    /// A PREAPPROVED reservation issues a regKey at confirm.
    preapproved: bool,
    method: Method,
    status: Status,
    buyer: Buyer,
    requested_at: u64,
    authorized_at: Option<u64>,
    /// When the payment was requested, then when it was confirmed.
    transaction_date: String,
    refunds: Vec<Refund>,
    /// A reservation's payment page: its address and the token its form must carry.
    page: Option<PageKeys>,
}

#[derive(Debug)]
struct PageKeys {
    redirect: Redirect,
    /// Sent in the page's form and required back with every action (anti-CSRF).
    token: String,
}

impl Payment {
    /// Applies what time alone changes.
    fn settle(&mut self, now: u64, lifetimes: &Lifetimes) {
        match self.status {
            Status::Requested
                if now
                    >= self
                        .requested_at
                        .saturating_add(lifetimes.reservation_micros()) =>
            {
                self.status = Status::Expired;
            }
            Status::Authorized
                if self
                    .authorization_expires(lifetimes)
                    .is_some_and(|expiry| now >= expiry) =>
            {
                self.status = Status::AuthorizationExpired;
            }
            _ => {}
        }
    }

    /// When an authorisation (capture=false) lapses, once there is one.
    fn authorization_expires(&self, lifetimes: &Lifetimes) -> Option<u64> {
        self.authorized_at
            .filter(|_| !self.capture)
            .map(|at| at.saturating_add(lifetimes.authorization_micros()))
    }

    fn refunded(&self) -> i64 {
        self.refunds.iter().map(|refund| refund.amount).sum()
    }

    /// What `payInfo` shows: the captured amount once captured.
    fn paid_amount(&self) -> i64 {
        if self.status == Status::Captured {
            self.captured
        } else {
            self.amount
        }
    }

    /// Confirmed at some point: listed by details and userInfo.
    fn confirmed(&self) -> bool {
        matches!(
            self.status,
            Status::Authorized | Status::AuthorizationExpired | Status::Captured | Status::Voided
        )
    }
}

#[derive(Debug)]
struct Refund {
    transaction_id: u64,
    amount: i64,
    date: String,
    /// Whether it returned the whole payment at once (PAYMENT_REFUND) or not
    /// (PARTIAL_REFUND).
    whole: bool,
}

#[derive(Debug)]
struct RegKey {
    /// The channel whose confirm issued it, the only one that may use it.
    channel: ChannelKey,
    expired: bool,
    /// Issued or last paid with; the key lapses a lifetime after this.
    last_used: u64,
}

impl Ledger {
    /// An empty ledger whose transaction ids start from the date and time of `now`
    /// (microseconds since the epoch).
    pub(crate) fn new(now: u64, lifetimes: Lifetimes) -> Self {
        Ledger {
            payments: HashMap::new(),
            order_ids: HashMap::new(),
            refunds: HashMap::new(),
            reg_keys: HashMap::new(),
            pages: HashMap::new(),
            one_time_keys: HashMap::new(),
            ids: TransactionIds::new(now),
            lifetimes,
        }
    }

    /// The orderId of a payment (or of the payment a refund id belongs to).
    /// Only `channel`'s: another channel's payment has no orderId for it.
    pub(crate) fn order_of(&self, channel: ChannelKey, transaction_id: u64) -> Option<&str> {
        let id = self.refunds.get(&transaction_id).unwrap_or(&transaction_id);
        self.payments
            .get(id)
            .filter(|payment| payment.channel == channel)
            .map(|payment| payment.order_id.as_str())
    }

    /// Reserves a payment. The answer carries the new 19-digit transaction id as a
    /// JSON number, as LINE Pay sends it.
    /// `page_base` is where the emulator serves its payment page (`http://ADDR`);
    /// with `every_buyer_waits`, no reservation is approved without the page.
    pub(crate) fn request(
        &mut self,
        channel: ChannelKey,
        request: PaymentRequest,
        page_base: &str,
        every_buyer_waits: bool,
        now: u64,
    ) -> Outcome {
        if self.order_used(channel, &request.order_id) {
            return Err(duplicate_order());
        }
        let transaction_id = self.ids.issue();
        let reserve_id = format!("{:032x}", random());
        let buyer = if every_buyer_waits || request.order_id.contains(BUYER_WAITS) {
            Buyer::Waiting
        } else {
            Buyer::Approved
        };
        self.order_ids
            .insert((channel, request.order_id.clone()), transaction_id);
        self.payments.insert(
            transaction_id,
            Payment {
                channel,
                transaction_id,
                order_id: request.order_id,
                amount: request.amount,
                captured: 0,
                currency: request.currency,
                product_name: request.product_name,
                packages: request.packages,
                capture: request.capture,
                preapproved: request.preapproved,
                method: if request.preapproved {
                    Method::CreditCard
                } else {
                    Method::Balance
                },
                status: Status::Requested,
                buyer,
                requested_at: now,
                authorized_at: None,
                transaction_date: clock::iso8601(now),
                refunds: Vec::new(),
                page: Some(PageKeys {
                    redirect: request.redirect,
                    token: format!("{:032x}", random()),
                }),
            },
        );
        self.pages.insert(reserve_id.clone(), transaction_id);
        Ok(Answer::success(json!({
            "paymentUrl": {
                // The emulator's own page (page.rs); the app URL is not emulated.
                "web": format!("{page_base}{}{reserve_id}", crate::page::PATH),
                "app": format!("line://pay/payment/{reserve_id}"),
            },
            "transactionId": transaction_id,
            "paymentAccessToken": format!("{:012}", random() % 1_000_000_000_000),
        })))
    }

    /// What the buyer does on LINE Pay's page, for a reservation not yet confirmed.
    pub(crate) fn buyer(
        &mut self,
        transaction_id: u64,
        action: BuyerAction,
        now: u64,
    ) -> Result<(), String> {
        let payment = self
            .any_payment(transaction_id, now)
            .map_err(|_| format!("no payment {transaction_id}"))?;
        if payment.status != Status::Requested {
            return Err(format!(
                "payment {transaction_id} is {}: the buyer acts only on a reservation \
                 that is neither confirmed, cancelled nor expired",
                status_name(payment.status)
            ));
        }
        match action {
            BuyerAction::Approve => payment.buyer = Buyer::Approved,
            BuyerAction::Cancel => payment.status = Status::Cancelled,
            BuyerAction::Fail => payment.status = Status::Failed,
        }
        Ok(())
    }

    /// What the payment page at `reserve_id` shows, `None` if there is no such page.
    pub(crate) fn page(&mut self, reserve_id: &str, now: u64) -> Option<PageView> {
        let id = *self.pages.get(reserve_id)?;
        let payment = self.any_payment(id, now).ok()?;
        let keys = payment.page.as_ref()?;
        Some(PageView {
            order_id: payment.order_id.clone(),
            amount: payment.amount,
            currency: payment.currency,
            product_name: payment.product_name.clone(),
            packages: payment.packages.clone(),
            state: page_state(payment.status),
            token: keys.token.clone(),
            methods: methods_offered(payment.preapproved),
            confirm_url_type: keys.redirect.confirm_url_type,
        })
    }

    /// The buyer's action on the payment page: accepted only with the page's own
    /// token, while the reservation is open (neither confirmed, cancelled, failed
    /// nor expired). Approving chooses the payment method confirm will report.
    pub(crate) fn page_action(
        &mut self,
        reserve_id: &str,
        token: &str,
        action: PageAction,
        now: u64,
    ) -> Result<PageExit, PageRefusal> {
        let id = *self.pages.get(reserve_id).ok_or(PageRefusal::NotFound)?;
        let payment = self
            .any_payment(id, now)
            .map_err(|_| PageRefusal::NotFound)?;
        let keys = payment.page.as_ref().ok_or(PageRefusal::NotFound)?;
        let token_matches: bool =
            subtle::ConstantTimeEq::ct_eq(keys.token.as_bytes(), token.as_bytes()).into();
        if !token_matches {
            return Err(PageRefusal::BadToken);
        }
        let state = page_state(payment.status);
        if state != PageState::Open {
            return Err(PageRefusal::Closed(state));
        }
        let redirect = keys.redirect.clone();
        match action {
            PageAction::Approve(method) => {
                if !methods_offered(payment.preapproved).contains(&method) {
                    return Err(PageRefusal::MethodNotOffered);
                }
                payment.method = method;
                payment.buyer = Buyer::Approved;
                Ok(PageExit::Approved {
                    redirect,
                    transaction_id: payment.transaction_id,
                    order_id: payment.order_id.clone(),
                })
            }
            PageAction::Cancel => {
                payment.status = Status::Cancelled;
                Ok(PageExit::Cancelled { redirect })
            }
        }
    }

    /// Completes a reservation: pays it, or only authorises it when it was requested
    /// with `capture: false`. A PREAPPROVED reservation answers with a new regKey.
    pub(crate) fn confirm(
        &mut self,
        channel: ChannelKey,
        transaction_id: u64,
        check: &AmountCheck,
        now: u64,
    ) -> Outcome {
        let lifetimes = self.lifetimes;
        let payment = self.payment(channel, transaction_id, now)?;
        match (payment.status, payment.buyer) {
            (Status::Requested, Buyer::Approved) => {}
            (Status::Requested, Buyer::Waiting) => {
                return Err(Refusal::new(
                    ReturnCode::UserMustAuthenticate,
                    "the buyer has not approved the payment yet; confirm after the buyer \
                     returns to confirmUrl.",
                ))
            }
            (Status::Expired | Status::Cancelled, _) => {
                return Err(Refusal::new(
                    ReturnCode::DeadlinePassed,
                    "the reservation was cancelled or not confirmed within 20 minutes; \
                     request a new payment.",
                ))
            }
            (Status::Failed, _) => {
                return Err(Refusal::new(
                    ReturnCode::StatusNotAllowed,
                    "the payment failed; request a new payment.",
                ))
            }
            _ => {
                return Err(Refusal::new(
                    ReturnCode::DuplicateOrder,
                    "confirm was already called for this transaction; read the payment \
                     details instead of confirming again.",
                ))
            }
        }
        if check.amount != payment.amount {
            return Err(Refusal::new(
                ReturnCode::AmountMismatch,
                format!(
                    "{} was sent; the payment was requested for {}.",
                    check.amount, payment.amount
                ),
            ));
        }
        if payment.capture {
            payment.status = Status::Captured;
            payment.captured = payment.amount;
        } else {
            payment.status = Status::Authorized;
        }
        payment.authorized_at = Some(now);
        payment.transaction_date = clock::iso8601(now);
        let mut info = json!({
            "orderId": payment.order_id,
            "transactionId": payment.transaction_id,
            "payInfo": pay_info(payment.method, payment.amount),
        });
        if let Some(expiry) = payment.authorization_expires(&lifetimes) {
            info["authorizationExpireDate"] = clock::iso8601(expiry).into();
        }
        if payment.preapproved {
            let reg_key = self.issue_reg_key(channel, now);
            info["regKey"] = Value::String(reg_key);
        }
        Ok(Answer::success(info))
    }

    /// Captures an authorised payment, all of it or less (the rest is released).
    pub(crate) fn capture(
        &mut self,
        channel: ChannelKey,
        transaction_id: u64,
        check: &AmountCheck,
        now: u64,
    ) -> Outcome {
        let payment = self.authorized(channel, transaction_id, "captured", now)?;
        if check.amount <= 0 {
            return Err(Refusal::new(
                ReturnCode::AmountBelowMinimum,
                format!(
                    "the capture amount must be above 0; {} was sent.",
                    check.amount
                ),
            ));
        }
        if check.amount > payment.amount {
            return Err(Refusal::new(
                ReturnCode::AmountAboveMaximum,
                format!(
                    "{} is more than the {} authorised.",
                    check.amount, payment.amount
                ),
            ));
        }
        payment.status = Status::Captured;
        payment.captured = check.amount;
        payment.transaction_date = clock::iso8601(now);
        Ok(Answer::success(json!({
            "orderId": payment.order_id,
            "transactionId": payment.transaction_id,
            "payInfo": pay_info(payment.method, payment.captured),
        })))
    }

    /// Voids an authorised payment; it can then be neither captured nor refunded.
    /// A second void answers 1165.
    pub(crate) fn void(&mut self, channel: ChannelKey, transaction_id: u64, now: u64) -> Outcome {
        if self
            .payment(channel, transaction_id, now)
            .is_ok_and(|payment| payment.status == Status::Voided)
        {
            return Err(Refusal::new(
                ReturnCode::AlreadyRefunded,
                "the authorisation was already voided.",
            ));
        }
        let payment = self.authorized(channel, transaction_id, "voided", now)?;
        payment.status = Status::Voided;
        Ok(Answer::done())
    }

    /// Refunds `amount` of a paid payment, or what remains of it when `None`; never
    /// more than was captured.
    pub(crate) fn refund(
        &mut self,
        channel: ChannelKey,
        transaction_id: u64,
        amount: Option<i64>,
        now: u64,
    ) -> Outcome {
        let payment = self.payment(channel, transaction_id, now)?;
        if payment.status != Status::Captured {
            return Err(Refusal::new(
                ReturnCode::StatusNotAllowed,
                format!(
                    "only a paid (captured) payment can be refunded; this one is {}.",
                    status_name(payment.status)
                ),
            ));
        }
        let remaining = payment.captured - payment.refunded();
        if remaining <= 0 {
            return Err(Refusal::new(
                ReturnCode::AlreadyRefunded,
                "the payment has been refunded in full.",
            ));
        }
        let amount = amount.unwrap_or(remaining);
        if amount > remaining {
            // LINE Pay's code list names this case: 1164 "Exceeded refundable amount".
            return Err(Refusal::new(
                ReturnCode::RefundAmountExceeded,
                format!("refundAmount {amount} is more than the {remaining} left to refund."),
            ));
        }
        let whole = amount == payment.captured;
        let refund_id = self.ids.issue();
        let date = clock::iso8601(now);
        if let Some(payment) = self.payments.get_mut(&transaction_id) {
            payment.refunds.push(Refund {
                transaction_id: refund_id,
                amount,
                date: date.clone(),
                whole,
            });
        }
        self.refunds.insert(refund_id, transaction_id);
        Ok(Answer::success(json!({
            "refundTransactionId": refund_id,
            "refundTransactionDate": date,
        })))
    }

    /// Payment details by transaction id (payments and refunds) and by orderId.
    /// Reservations never confirmed are not payments yet, so they are not listed.
    /// With `authorizations_only` (the authorisation list), only payments that went
    /// through authorisation are.
    pub(crate) fn details(
        &mut self,
        channel: ChannelKey,
        query: &DetailsQuery,
        authorizations_only: bool,
        now: u64,
    ) -> Outcome {
        self.settle_all(now);
        // Another channel's payments (and so their refunds) are never listed.
        let listed = |payment: &&Payment| {
            payment.channel == channel
                && payment.confirmed()
                && (!authorizations_only || !payment.capture)
        };
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for id in &query.transaction_ids {
            if let Some(payment) = self.payments.get(id).filter(listed) {
                if seen.insert(*id) {
                    entries.push(payment_entry(payment, query, &self.lifetimes));
                }
            } else if let Some(payment) = self
                .refunds
                .get(id)
                .and_then(|parent| self.payments.get(parent))
                .filter(|payment| payment.channel == channel)
            {
                let refund = payment
                    .refunds
                    .iter()
                    .find(|refund| refund.transaction_id == *id);
                if let Some(refund) = refund.filter(|_| !authorizations_only && seen.insert(*id)) {
                    entries.push(refund_entry(payment, refund, query));
                }
            }
        }
        for order_id in &query.order_ids {
            let payment = self
                .order_ids
                .get(&(channel, order_id.clone()))
                .and_then(|id| self.payments.get(id))
                .filter(listed);
            if let Some(payment) = payment.filter(|payment| seen.insert(payment.transaction_id)) {
                entries.push(payment_entry(payment, query, &self.lifetimes));
            }
        }
        if entries.is_empty() {
            return Err(not_found());
        }
        Ok(Answer::success(Value::Array(entries)))
    }

    /// The payment status check: 0000 the buyer has not approved yet, 0110 approved
    /// but not confirmed, 0121 cancelled, expired (20 minutes) or voided, 0122 failed,
    /// 0123 confirmed.
    pub(crate) fn check(&mut self, channel: ChannelKey, transaction_id: u64, now: u64) -> Outcome {
        let payment = self.payment(channel, transaction_id, now)?;
        Ok(Answer::status(match (payment.status, payment.buyer) {
            (Status::Requested, Buyer::Waiting) => ReturnCode::Success,
            (Status::Requested, Buyer::Approved) => ReturnCode::UserAuthorized,
            (Status::Cancelled | Status::Expired | Status::Voided, _) => ReturnCode::Cancelled,
            (Status::Failed, _) => ReturnCode::Failed,
            (Status::Authorized | Status::AuthorizationExpired | Status::Captured, _) => {
                ReturnCode::Paid
            }
        }))
    }

    /// The payer of a confirmed payment. LINE Pay's documentation names the API but
    /// this emulator does not know its fields: it answers the transaction id and a
    /// stable made-up `userId`, never a real person's data.
    pub(crate) fn user_info(
        &mut self,
        channel: ChannelKey,
        transaction_id: u64,
        now: u64,
    ) -> Outcome {
        let payment = self.payment(channel, transaction_id, now)?;
        if !payment.confirmed() {
            return Err(Refusal::new(
                ReturnCode::StatusNotAllowed,
                "the payment is not confirmed; the payer is known after confirm.",
            ));
        }
        Ok(Answer::success(json!({
            "transactionId": payment.transaction_id,
            "userId": format!("U{:032x}", u128::from(payment.transaction_id).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        })))
    }

    /// An automatic payment with a regKey: paid at once, or authorised when
    /// `capture` is false.
    pub(crate) fn pay_preapproved(
        &mut self,
        channel: ChannelKey,
        reg_key: &str,
        payment: PreapprovedPayment,
        now: u64,
    ) -> Outcome {
        self.usable_reg_key(channel, reg_key, now)?;
        if self.order_used(channel, &payment.order_id) {
            return Err(duplicate_order());
        }
        if let Some(key) = self.reg_keys.get_mut(reg_key) {
            key.last_used = now;
        }
        let (transaction_id, date) = self.record_direct_payment(
            channel,
            DirectPayment {
                order_id: payment.order_id,
                amount: payment.amount,
                currency: payment.currency,
                product_name: payment.product_name,
                capture: payment.capture,
                method: Method::CreditCard,
            },
            now,
        );
        Ok(Answer::success(json!({
            "transactionId": transaction_id,
            "transactionDate": date,
        })))
    }

    /// An offline payment with a one-time key that pays with `method` (the test keys
    /// that refuse are answered before the ledger is asked).
    pub(crate) fn pay_one_time_key(
        &mut self,
        channel: ChannelKey,
        payment: OneTimeKeyPayment,
        method: Method,
        now: u64,
    ) -> Outcome {
        // A retried payment (same orderId) hears 1172 before anything about its key:
        // that is what tells the POS to check the order rather than pay again.
        if self.order_used(channel, &payment.order_id) {
            return Err(duplicate_order());
        }
        self.spend_one_time_key(&payment.one_time_key, now)?;
        let order_id = payment.order_id.clone();
        let amount = payment.amount;
        let (transaction_id, date) = self.record_direct_payment(
            channel,
            DirectPayment {
                order_id: payment.order_id,
                amount: payment.amount,
                currency: payment.currency,
                product_name: payment.product_name,
                capture: payment.capture,
                method,
            },
            now,
        );
        let mut info = json!({
            "transactionId": transaction_id,
            "orderId": order_id,
            "transactionDate": date,
            "payInfo": pay_info(method, amount),
        });
        if let Some(expiry) = self
            .payments
            .get(&transaction_id)
            .and_then(|payment| payment.authorization_expires(&self.lifetimes))
        {
            info["authorizationExpireDate"] = clock::iso8601(expiry).into();
        }
        Ok(Answer::success(info))
    }

    /// A fresh one-time key, as the buyer's LINE app shows one: `digits` long (12,
    /// 18 or 19), paying by card (it starts with `4`) or from the balance, valid five
    /// minutes from `now`. Returns the key and when it expires.
    pub(crate) fn issue_one_time_key(
        &mut self,
        by_card: bool,
        digits: usize,
        now: u64,
    ) -> (String, u64) {
        loop {
            let mut bits = random();
            // Balance keys start with 1-3 or 5-8: never `4` (card), never `9` (the
            // refusal test keys).
            const FIRST: &[u8] = b"1235678";
            let first = if by_card {
                '4'
            } else {
                char::from(FIRST[(bits % 7) as usize])
            };
            bits /= 7;
            let mut key = String::from(first);
            for _ in 1..digits {
                key.push(char::from(b'0' + (bits % 10) as u8));
                bits /= 10;
            }
            if !self.one_time_keys.contains_key(&key) {
                self.one_time_keys.insert(
                    key.clone(),
                    SeenKey {
                        first_seen: now,
                        spent: false,
                    },
                );
                return (key, now.saturating_add(ONE_TIME_KEY_LIFETIME_MICROS));
            }
        }
    }

    /// Uses up a one-time key: refused when it already paid, or when it was first
    /// presented more than [`ONE_TIME_KEY_LIFETIME_MICROS`] ago.
    fn spend_one_time_key(&mut self, key: &str, now: u64) -> Result<(), Refusal> {
        let seen = self.one_time_keys.entry(key.to_owned()).or_insert(SeenKey {
            first_seen: now,
            spent: false,
        });
        if seen.spent {
            return Err(Refusal::new(
                ONE_TIME_KEY_REFUSED,
                "this oneTimeKey has already paid; a key is single use: ask the buyer to \
                 show a new code.",
            ));
        }
        if now >= seen.first_seen.saturating_add(ONE_TIME_KEY_LIFETIME_MICROS) {
            return Err(Refusal::new(
                ONE_TIME_KEY_REFUSED,
                "this oneTimeKey has expired (valid five minutes): ask the buyer to show \
                 a new code.",
            ));
        }
        seen.spent = true;
        Ok(())
    }

    /// The offline status check of the payment with this orderId.
    pub(crate) fn order_check(&mut self, channel: ChannelKey, order_id: &str, now: u64) -> Outcome {
        let id = self.transaction_of(channel, order_id)?;
        let lifetimes = self.lifetimes;
        let payment = self.payment(channel, id, now)?;
        let mut info = Map::new();
        info.insert("orderId".into(), payment.order_id.clone().into());
        info.insert("transactionId".into(), payment.transaction_id.into());
        info.insert(
            "transactionDate".into(),
            payment.transaction_date.clone().into(),
        );
        info.insert("transactionType".into(), "PAYMENT".into());
        info.insert("payStatus".into(), pay_status(payment).into());
        info.insert("productName".into(), payment.product_name.clone().into());
        info.insert("currency".into(), payment.currency.as_str().into());
        info.insert(
            "payInfo".into(),
            pay_info(payment.method, payment.paid_amount()),
        );
        if let Some(expiry) = payment.authorization_expires(&lifetimes) {
            info.insert(
                "authorizationExpireDate".into(),
                clock::iso8601(expiry).into(),
            );
        }
        if !payment.refunds.is_empty() {
            info.insert("refundList".into(), refund_list(payment));
        }
        Ok(Answer::success(Value::Object(info)))
    }

    /// The transaction id of the channel's payment with this orderId (1150 if none).
    pub(crate) fn transaction_of(
        &self,
        channel: ChannelKey,
        order_id: &str,
    ) -> Result<u64, Refusal> {
        let key = (channel, order_id.to_owned());
        self.order_ids.get(&key).copied().ok_or_else(|| {
            Refusal::new(
                ReturnCode::TransactionNotFound,
                "no payment with this orderId is known to the channel.",
            )
        })
    }

    pub(crate) fn check_reg_key(
        &mut self,
        channel: ChannelKey,
        reg_key: &str,
        now: u64,
    ) -> Outcome {
        self.usable_reg_key(channel, reg_key, now)?;
        Ok(Answer::done())
    }

    pub(crate) fn expire_reg_key(
        &mut self,
        channel: ChannelKey,
        reg_key: &str,
        now: u64,
    ) -> Outcome {
        self.usable_reg_key(channel, reg_key, now)?;
        if let Some(key) = self.reg_keys.get_mut(reg_key) {
            key.expired = true;
        }
        Ok(Answer::done())
    }

    fn usable_reg_key(
        &mut self,
        channel: ChannelKey,
        reg_key: &str,
        now: u64,
    ) -> Result<(), Refusal> {
        let lifetime = self.lifetimes.reg_key_micros();
        let own = self
            .reg_keys
            .get_mut(reg_key)
            .filter(|key| key.channel == channel);
        match own {
            None => Err(Refusal::new(
                ReturnCode::RegKeyNotFound,
                "no regKey with this value was issued to the channel.",
            )),
            Some(key) if key.expired || now >= key.last_used.saturating_add(lifetime) => {
                key.expired = true;
                Err(Refusal::new(
                    ReturnCode::RegKeyExpired,
                    "the regKey has expired; ask the user to approve a new PREAPPROVED payment.",
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// A payment of `channel`, with what time has changed about it applied; another
    /// channel's payment is not found, as if it did not exist.
    fn payment(
        &mut self,
        channel: ChannelKey,
        transaction_id: u64,
        now: u64,
    ) -> Result<&mut Payment, Refusal> {
        let payment = self
            .payments
            .get_mut(&transaction_id)
            .filter(|payment| payment.channel == channel)
            .ok_or_else(not_found)?;
        payment.settle(now, &self.lifetimes);
        Ok(payment)
    }

    /// A payment of any channel: for the buyer and the payment page, which are not
    /// calls of a merchant.
    fn any_payment(&mut self, transaction_id: u64, now: u64) -> Result<&mut Payment, Refusal> {
        let payment = self
            .payments
            .get_mut(&transaction_id)
            .ok_or_else(not_found)?;
        payment.settle(now, &self.lifetimes);
        Ok(payment)
    }

    /// Whether `channel` has used `order_id` already.
    fn order_used(&self, channel: ChannelKey, order_id: &str) -> bool {
        self.order_ids.contains_key(&(channel, order_id.to_owned()))
    }

    fn settle_all(&mut self, now: u64) {
        for payment in self.payments.values_mut() {
            payment.settle(now, &self.lifetimes);
        }
    }

    /// A payment in the Authorized state, or the refusal LINE Pay gives.
    fn authorized(
        &mut self,
        channel: ChannelKey,
        transaction_id: u64,
        action: &str,
        now: u64,
    ) -> Result<&mut Payment, Refusal> {
        let payment = self.payment(channel, transaction_id, now)?;
        if payment.status != Status::Authorized {
            return Err(Refusal::new(
                ReturnCode::StatusNotAllowed,
                format!(
                    "only an authorised payment (capture=false, confirmed) can be {action}; \
                     this one is {}.",
                    status_name(payment.status)
                ),
            ));
        }
        Ok(payment)
    }

    /// Records a payment made without a reservation (preapproved, one-time key):
    /// paid at once, or authorised when `capture` is false.
    fn record_direct_payment(
        &mut self,
        channel: ChannelKey,
        payment: DirectPayment,
        now: u64,
    ) -> (u64, String) {
        let transaction_id = self.ids.issue();
        let date = clock::iso8601(now);
        self.order_ids
            .insert((channel, payment.order_id.clone()), transaction_id);
        self.payments.insert(
            transaction_id,
            Payment {
                channel,
                transaction_id,
                order_id: payment.order_id,
                amount: payment.amount,
                captured: if payment.capture { payment.amount } else { 0 },
                currency: payment.currency,
                product_name: payment.product_name,
                packages: None,
                capture: payment.capture,
                preapproved: false,
                method: payment.method,
                status: if payment.capture {
                    Status::Captured
                } else {
                    Status::Authorized
                },
                buyer: Buyer::Approved,
                requested_at: now,
                authorized_at: Some(now),
                transaction_date: date.clone(),
                refunds: Vec::new(),
                page: None,
            },
        );
        (transaction_id, date)
    }

    /// A new 15-character regKey such as `RK9E5H1MZQ8ABCD`.
    fn issue_reg_key(&mut self, channel: ChannelKey, now: u64) -> String {
        const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        loop {
            let mut bits = random();
            let mut key = String::from("RK");
            for _ in 0..13 {
                key.push(char::from(ALPHABET[(bits % 36) as usize]));
                bits /= 36;
            }
            // 36^13 keys: a collision is all but impossible, but cheap to rule out.
            if !self.reg_keys.contains_key(&key) {
                self.reg_keys.insert(
                    key.clone(),
                    RegKey {
                        channel,
                        expired: false,
                        last_used: now,
                    },
                );
                return key;
            }
        }
    }
}

/// What the payment page shows.
#[derive(Debug)]
pub(crate) struct PageView {
    pub order_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub product_name: String,
    /// v3/v4 `packages` as the merchant sent them (v2 has only `product_name`).
    pub packages: Option<Value>,
    pub state: PageState,
    pub token: String,
    /// The methods the buyer may choose from (one when there is no choice).
    pub methods: &'static [Method],
    pub confirm_url_type: crate::input::ConfirmUrlType,
}

/// A reservation as the payment page sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageState {
    /// The buyer may approve or cancel (the emulator may already have approved it at
    /// once; approving again only chooses the method).
    Open,
    Cancelled,
    Expired,
    Failed,
    /// Confirm was called: the page has nothing left to do.
    Confirmed,
}

/// What the buyer asks on the payment page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageAction {
    Approve(Method),
    Cancel,
}

/// Where the browser goes after an accepted action.
#[derive(Debug)]
pub(crate) enum PageExit {
    Approved {
        redirect: Redirect,
        transaction_id: u64,
        order_id: String,
    },
    Cancelled {
        redirect: Redirect,
    },
}

/// Why a page action was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageRefusal {
    NotFound,
    /// The form did not carry this payment's token (a forged or stale form).
    BadToken,
    Closed(PageState),
    MethodNotOffered,
}

fn page_state(status: Status) -> PageState {
    match status {
        Status::Requested => PageState::Open,
        Status::Cancelled => PageState::Cancelled,
        Status::Expired => PageState::Expired,
        Status::Failed => PageState::Failed,
        Status::Authorized | Status::AuthorizationExpired | Status::Captured | Status::Voided => {
            PageState::Confirmed
        }
    }
}

/// A PREAPPROVED reservation registers a card for later automatic payments, so the
/// card is the only choice; a NORMAL one may be paid from the balance or by card.
fn methods_offered(preapproved: bool) -> &'static [Method] {
    if preapproved {
        &[Method::CreditCard]
    } else {
        &[Method::Balance, Method::CreditCard]
    }
}

/// A one-time key the emulator has seen.
#[derive(Debug)]
struct SeenKey {
    first_seen: u64,
    spent: bool,
}

/// LINE Pay: "oneTimeKey is valid for 5 minutes from the time when LINE Pay User
/// confirms QR/Bar code" (offline API reference).
const ONE_TIME_KEY_LIFETIME_MICROS: u64 = 5 * 60 * 1_000_000;

/// What a spent or expired one-time key answers. LINE Pay's references name no code
/// for it; the emulator answers the parameter error.
const ONE_TIME_KEY_REFUSED: ReturnCode = ReturnCode::ParameterError;

struct DirectPayment {
    order_id: String,
    amount: i64,
    currency: Currency,
    product_name: String,
    capture: bool,
    method: Method,
}

/// 19-digit ids shaped like LINE Pay's: `YYYYMMDD` then an 11-digit counter that
/// starts at a time-derived offset, so ids differ between runs and never repeat
/// within one ledger (refund ids come from the same sequence).
#[derive(Debug)]
struct TransactionIds {
    prefix: u64,
    next: u64,
}

const COUNTER_SPAN: u64 = 100_000_000_000;

impl TransactionIds {
    fn new(now: u64) -> Self {
        TransactionIds {
            prefix: clock::yyyymmdd(now) * COUNTER_SPAN,
            next: now % COUNTER_SPAN,
        }
    }

    fn issue(&mut self) -> u64 {
        let id = self.prefix + self.next % COUNTER_SPAN;
        self.next = self.next.wrapping_add(1);
        id
    }
}

fn random() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

fn not_found() -> Refusal {
    Refusal::new(
        ReturnCode::TransactionNotFound,
        "no transaction with this id is known to the channel.",
    )
}

fn duplicate_order() -> Refusal {
    Refusal::new(
        ReturnCode::DuplicateOrder,
        "this orderId was already used; every request needs a new orderId.",
    )
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Requested => "requested but not confirmed",
        Status::Cancelled => "cancelled by the buyer",
        Status::Expired => "expired (not confirmed within its lifetime)",
        Status::Failed => "failed",
        Status::Authorized => "authorised but not captured",
        Status::AuthorizationExpired => "an expired authorisation",
        Status::Captured => "paid",
        Status::Voided => "voided",
    }
}

/// `payStatus` of an authorisation in details and the authorisation list, and of
/// any payment in the offline status check.
fn pay_status(payment: &Payment) -> &'static str {
    match payment.status {
        Status::Voided => "VOIDED_AUTHORIZATION",
        Status::AuthorizationExpired => "EXPIRED_AUTHORIZATION",
        Status::Captured if payment.capture => "COMPLETE",
        Status::Captured => "CAPTURE",
        Status::Authorized => "AUTHORIZATION",
        Status::Failed => "FAIL",
        Status::Requested | Status::Cancelled | Status::Expired => "CANCEL",
    }
}

fn refund_list(payment: &Payment) -> Value {
    payment
        .refunds
        .iter()
        .map(|refund| {
            json!({
                "refundTransactionId": refund.transaction_id,
                "transactionType": refund_type(refund),
                // LINE Pay lists refunds as negative amounts.
                "refundAmount": -refund.amount,
                "refundTransactionDate": refund.date,
            })
        })
        .collect()
}

fn pay_info(method: Method, amount: i64) -> Value {
    let mut entry = Map::new();
    match method {
        Method::Balance => {
            entry.insert("method".into(), "BALANCE".into());
        }
        Method::CreditCard => {
            entry.insert("method".into(), "CREDIT_CARD".into());
            entry.insert("maskedCreditCardNumber".into(), "************1234".into());
        }
    }
    entry.insert("amount".into(), amount.into());
    Value::Array(vec![Value::Object(entry)])
}

fn payment_entry(payment: &Payment, query: &DetailsQuery, lifetimes: &Lifetimes) -> Value {
    let mut entry = Map::new();
    entry.insert("transactionId".into(), payment.transaction_id.into());
    entry.insert("orderId".into(), payment.order_id.clone().into());
    if query.fields.transaction {
        entry.insert(
            "transactionDate".into(),
            payment.transaction_date.clone().into(),
        );
        entry.insert("transactionType".into(), "PAYMENT".into());
        entry.insert(
            "payInfo".into(),
            pay_info(payment.method, payment.paid_amount()),
        );
        entry.insert("productName".into(), payment.product_name.clone().into());
        entry.insert("currency".into(), payment.currency.as_str().into());
        if !payment.capture {
            entry.insert("payStatus".into(), pay_status(payment).into());
            if let Some(expiry) = payment.authorization_expires(lifetimes) {
                entry.insert(
                    "authorizationExpireDate".into(),
                    clock::iso8601(expiry).into(),
                );
            }
        }
        if !payment.refunds.is_empty() {
            entry.insert("refundList".into(), refund_list(payment));
        }
    }
    if query.fields.order {
        if let Some(packages) = &payment.packages {
            entry.insert("packages".into(), packages.clone());
        }
    }
    Value::Object(entry)
}

fn refund_entry(payment: &Payment, refund: &Refund, query: &DetailsQuery) -> Value {
    let mut entry = Map::new();
    entry.insert("transactionId".into(), refund.transaction_id.into());
    entry.insert("orderId".into(), payment.order_id.clone().into());
    if query.fields.transaction {
        entry.insert("transactionDate".into(), refund.date.clone().into());
        entry.insert("transactionType".into(), refund_type(refund).into());
        entry.insert("payInfo".into(), pay_info(payment.method, -refund.amount));
        entry.insert("productName".into(), payment.product_name.clone().into());
        entry.insert("currency".into(), payment.currency.as_str().into());
        entry.insert(
            "originalTransactionId".into(),
            payment.transaction_id.into(),
        );
    }
    Value::Object(entry)
}

fn refund_type(refund: &Refund) -> &'static str {
    if refund.whole {
        "PAYMENT_REFUND"
    } else {
        "PARTIAL_REFUND"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-31T00:00:00Z in microseconds.
    const NOW: u64 = 1_798_675_200_000_000;

    #[test]
    fn ids_are_19_digits_dated_and_unique() {
        let mut ids = TransactionIds::new(NOW);
        let issued: Vec<u64> = (0..1000).map(|_| ids.issue()).collect();
        for id in &issued {
            assert!(
                (1_000_000_000_000_000_000..10_000_000_000_000_000_000).contains(id),
                "{id}"
            );
            assert!(id.to_string().starts_with("20261231"), "{id}");
        }
        let unique: HashSet<_> = issued.iter().collect();
        assert_eq!(unique.len(), issued.len());
    }

    #[test]
    fn ids_stay_19_digits_at_the_counter_wrap_and_the_date_limits() {
        let mut ids = TransactionIds {
            prefix: 99_991_231 * COUNTER_SPAN,
            next: COUNTER_SPAN - 1,
        };
        assert_eq!(ids.issue(), 9_999_123_199_999_999_999);
        assert_eq!(ids.issue(), 9_999_123_100_000_000_000);
        let first = TransactionIds::new(0).issue();
        assert_eq!(first, 1_970_010_100_000_000_000);
        assert!(TransactionIds::new(u64::MAX).issue() < 10_000_000_000_000_000_000);
    }

    #[test]
    fn reg_keys_are_15_uppercase_alphanumerics() {
        let mut ledger = Ledger::new(NOW, Lifetimes::default());
        let key = ledger.issue_reg_key(ChannelKey(0), NOW);
        assert_eq!(key.len(), 15, "{key}");
        assert!(key.starts_with("RK"), "{key}");
        assert!(
            key.bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit()),
            "{key}"
        );
        assert_ne!(ledger.issue_reg_key(ChannelKey(0), NOW), key);
    }
}
