//! The emulator's memory of payments and regKeys, and LINE Pay's rules for moving a
//! payment through its states.
//!
//! ```text
//! request ──▶ Requested ──confirm──▶ Captured ──refund──▶ (partly or fully refunded)
//!                 │                    ▲
//!                 └─confirm (capture=false)─▶ Authorized ──void──▶ Voided
//!                                      └───────capture───────┘
//! ```
//! The emulated user approves every payment the moment it is requested, so a
//! reservation is immediately confirmable. Inputs arrive already validated
//! (`input.rs`); every method is plain data in, [`Outcome`] out, no I/O and no clock.

use crate::clock;
use crate::input::{AmountCheck, Currency, DetailsQuery, PaymentRequest, PreapprovedPayment};
use crate::reply::{Answer, Outcome, Refusal, ReturnCode};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

#[derive(Debug)]
pub(crate) struct Ledger {
    payments: HashMap<u64, Payment>,
    /// orderId → transactionId; LINE Pay refuses an orderId it has seen (1172).
    order_ids: HashMap<String, u64>,
    /// refundTransactionId → the payment it refunds, so details can find refunds too.
    refunds: HashMap<u64, u64>,
    reg_keys: HashMap<String, RegKey>,
    ids: TransactionIds,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Requested,
    Authorized,
    Captured,
    Voided,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Balance,
    /// Automatic (preapproved) payments need a card at LINE Pay.
    CreditCard,
}

#[derive(Debug)]
struct Payment {
    transaction_id: u64,
    order_id: String,
    amount: i64,
    currency: Currency,
    product_name: String,
    packages: Option<Value>,
    /// `false`: confirm only authorises; capture or void must follow.
    capture: bool,
    /// A PREAPPROVED reservation issues a regKey at confirm.
    preapproved: bool,
    method: Method,
    status: Status,
    /// When the payment was requested, then when it was confirmed.
    transaction_date: String,
    refunds: Vec<Refund>,
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
    expired: bool,
}

impl Ledger {
    /// An empty ledger whose transaction ids start from the date and time of `now`
    /// (microseconds since the epoch).
    pub(crate) fn new(now: u64) -> Self {
        Ledger {
            payments: HashMap::new(),
            order_ids: HashMap::new(),
            refunds: HashMap::new(),
            reg_keys: HashMap::new(),
            ids: TransactionIds::new(now),
        }
    }

    /// Reserves a payment. The answer carries the new 19-digit transaction id as a
    /// JSON number, as LINE Pay sends it.
    pub(crate) fn request(&mut self, request: PaymentRequest, now: u64) -> Outcome {
        if self.order_ids.contains_key(&request.order_id) {
            return Err(duplicate_order());
        }
        let transaction_id = self.ids.issue();
        let reserve_id = format!("{:032x}", random());
        self.order_ids
            .insert(request.order_id.clone(), transaction_id);
        self.payments.insert(
            transaction_id,
            Payment {
                transaction_id,
                order_id: request.order_id,
                amount: request.amount,
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
                transaction_date: clock::iso8601(now),
                refunds: Vec::new(),
            },
        );
        Ok(Answer::success(json!({
            "paymentUrl": {
                // There is no payment page: the emulated user has already approved.
                "web": format!(
                    "https://linepay-emulator.invalid/web/payment/wait?transactionReserveId={reserve_id}"
                ),
                "app": format!("line://pay/payment/{reserve_id}"),
            },
            "transactionId": transaction_id,
            "paymentAccessToken": format!("{:012}", random() % 1_000_000_000_000),
        })))
    }

    /// Completes a reservation: pays it, or only authorises it when it was requested
    /// with `capture: false`. A PREAPPROVED reservation answers with a new regKey.
    pub(crate) fn confirm(
        &mut self,
        transaction_id: u64,
        check: &AmountCheck,
        now: u64,
    ) -> Outcome {
        let payment = self
            .payments
            .get_mut(&transaction_id)
            .ok_or_else(not_found)?;
        if payment.status != Status::Requested {
            return Err(Refusal::new(
                ReturnCode::DuplicateOrder,
                "confirm was already called for this transaction; read the payment details \
                 instead of confirming again.",
            ));
        }
        check_amount(payment, check)?;
        payment.status = if payment.capture {
            Status::Captured
        } else {
            Status::Authorized
        };
        payment.transaction_date = clock::iso8601(now);
        let mut info = json!({
            "orderId": payment.order_id,
            "transactionId": payment.transaction_id,
            "payInfo": pay_info(payment.method, payment.amount),
        });
        if payment.preapproved {
            let reg_key = self.issue_reg_key();
            info["regKey"] = Value::String(reg_key);
        }
        Ok(Answer::success(info))
    }

    /// Captures an authorised payment (requested with `capture: false`, confirmed).
    pub(crate) fn capture(&mut self, transaction_id: u64, check: &AmountCheck) -> Outcome {
        let payment = self.authorized(transaction_id, "captured")?;
        check_amount(payment, check)?;
        payment.status = Status::Captured;
        Ok(Answer::success(json!({
            "orderId": payment.order_id,
            "transactionId": payment.transaction_id,
            "payInfo": pay_info(payment.method, payment.amount),
        })))
    }

    /// Voids an authorised payment; it can then be neither captured nor refunded.
    pub(crate) fn void(&mut self, transaction_id: u64) -> Outcome {
        let payment = self.authorized(transaction_id, "voided")?;
        payment.status = Status::Voided;
        Ok(Answer::done())
    }

    /// Refunds `amount` of a paid payment, or what remains of it when `None`.
    pub(crate) fn refund(&mut self, transaction_id: u64, amount: Option<i64>, now: u64) -> Outcome {
        let payment = self
            .payments
            .get_mut(&transaction_id)
            .ok_or_else(not_found)?;
        if payment.status != Status::Captured {
            return Err(Refusal::new(
                ReturnCode::StatusNotAllowed,
                format!(
                    "only a paid (captured) payment can be refunded; this one is {}.",
                    status_name(payment.status)
                ),
            ));
        }
        let refunded: i64 = payment.refunds.iter().map(|refund| refund.amount).sum();
        let remaining = payment.amount - refunded;
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
        let refund_id = self.ids.issue();
        let date = clock::iso8601(now);
        payment.refunds.push(Refund {
            transaction_id: refund_id,
            amount,
            date: date.clone(),
            whole: amount == payment.amount,
        });
        self.refunds.insert(refund_id, transaction_id);
        Ok(Answer::success(json!({
            "refundTransactionId": refund_id,
            "refundTransactionDate": date,
        })))
    }

    /// Payment details by transaction id (payments and refunds) and by orderId.
    /// Reservations never confirmed are not payments yet, so they are not listed.
    /// With `authorizations_only` (the v2 authorisation list), only payments that went
    /// through authorisation are.
    pub(crate) fn details(&self, query: &DetailsQuery, authorizations_only: bool) -> Outcome {
        let listed = |payment: &&Payment| {
            payment.status != Status::Requested && (!authorizations_only || !payment.capture)
        };
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for id in &query.transaction_ids {
            if let Some(payment) = self.payments.get(id).filter(listed) {
                if seen.insert(*id) {
                    entries.push(payment_entry(payment, query));
                }
            } else if let Some(payment) = self
                .refunds
                .get(id)
                .and_then(|parent| self.payments.get(parent))
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
                .get(order_id)
                .and_then(|id| self.payments.get(id))
                .filter(listed);
            if let Some(payment) = payment.filter(|payment| seen.insert(payment.transaction_id)) {
                entries.push(payment_entry(payment, query));
            }
        }
        if entries.is_empty() {
            return Err(not_found());
        }
        Ok(Answer::success(Value::Array(entries)))
    }

    /// The payment status check: 0110 approved by the user but not confirmed,
    /// 0123 confirmed, 0121 voided. (0000 "waiting for the user" never happens: the
    /// emulated user approves at once.)
    pub(crate) fn check(&self, transaction_id: u64) -> Outcome {
        let payment = self.payments.get(&transaction_id).ok_or_else(not_found)?;
        Ok(Answer::status(match payment.status {
            Status::Requested => ReturnCode::UserAuthorized,
            Status::Authorized | Status::Captured => ReturnCode::Paid,
            Status::Voided => ReturnCode::Cancelled,
        }))
    }

    /// An automatic payment with a regKey: paid at once, or authorised when
    /// `capture` is false.
    pub(crate) fn pay_preapproved(
        &mut self,
        reg_key: &str,
        payment: PreapprovedPayment,
        now: u64,
    ) -> Outcome {
        self.usable_reg_key(reg_key)?;
        if self.order_ids.contains_key(&payment.order_id) {
            return Err(duplicate_order());
        }
        let transaction_id = self.ids.issue();
        let date = clock::iso8601(now);
        self.order_ids
            .insert(payment.order_id.clone(), transaction_id);
        self.payments.insert(
            transaction_id,
            Payment {
                transaction_id,
                order_id: payment.order_id,
                amount: payment.amount,
                currency: payment.currency,
                product_name: payment.product_name,
                packages: None,
                capture: payment.capture,
                preapproved: false,
                method: Method::CreditCard,
                status: if payment.capture {
                    Status::Captured
                } else {
                    Status::Authorized
                },
                transaction_date: date.clone(),
                refunds: Vec::new(),
            },
        );
        Ok(Answer::success(json!({
            "transactionId": transaction_id,
            "transactionDate": date,
        })))
    }

    pub(crate) fn check_reg_key(&self, reg_key: &str) -> Outcome {
        self.usable_reg_key(reg_key)?;
        Ok(Answer::done())
    }

    pub(crate) fn expire_reg_key(&mut self, reg_key: &str) -> Outcome {
        self.usable_reg_key(reg_key)?;
        if let Some(key) = self.reg_keys.get_mut(reg_key) {
            key.expired = true;
        }
        Ok(Answer::done())
    }

    fn usable_reg_key(&self, reg_key: &str) -> Result<(), Refusal> {
        match self.reg_keys.get(reg_key) {
            None => Err(Refusal::new(
                ReturnCode::RegKeyNotFound,
                "no regKey with this value was issued to the channel.",
            )),
            Some(key) if key.expired => Err(Refusal::new(
                ReturnCode::RegKeyExpired,
                "the regKey was expired; ask the user to approve a new PREAPPROVED payment.",
            )),
            Some(_) => Ok(()),
        }
    }

    /// A payment in the Authorized state, or the refusal LINE Pay gives.
    fn authorized(&mut self, transaction_id: u64, action: &str) -> Result<&mut Payment, Refusal> {
        let payment = self
            .payments
            .get_mut(&transaction_id)
            .ok_or_else(not_found)?;
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

    /// A new 15-character regKey such as `RK9E5H1MZQ8ABCD`.
    fn issue_reg_key(&mut self) -> String {
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
                self.reg_keys.insert(key.clone(), RegKey { expired: false });
                return key;
            }
        }
    }
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

fn check_amount(payment: &Payment, check: &AmountCheck) -> Result<(), Refusal> {
    if check.amount != payment.amount || check.currency != payment.currency.as_str() {
        return Err(Refusal::new(
            ReturnCode::AmountMismatch,
            format!(
                "{} {} was sent; the payment was requested for {} {}.",
                check.amount,
                short(&check.currency),
                payment.amount,
                payment.currency.as_str()
            ),
        ));
    }
    Ok(())
}

fn short(text: &str) -> String {
    text.chars().take(8).collect()
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
        Status::Authorized => "authorised but not captured",
        Status::Captured => "paid",
        Status::Voided => "voided",
    }
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

fn payment_entry(payment: &Payment, query: &DetailsQuery) -> Value {
    let mut entry = Map::new();
    entry.insert("transactionId".into(), payment.transaction_id.into());
    entry.insert("orderId".into(), payment.order_id.clone().into());
    if query.fields.transaction {
        entry.insert(
            "transactionDate".into(),
            payment.transaction_date.clone().into(),
        );
        entry.insert("transactionType".into(), "PAYMENT".into());
        entry.insert("payInfo".into(), pay_info(payment.method, payment.amount));
        entry.insert("productName".into(), payment.product_name.clone().into());
        entry.insert("currency".into(), payment.currency.as_str().into());
        if !payment.capture {
            let pay_status = match payment.status {
                Status::Voided => "VOIDED_AUTHORIZATION",
                Status::Captured => "CAPTURE",
                Status::Requested | Status::Authorized => "AUTHORIZATION",
            };
            entry.insert("payStatus".into(), pay_status.into());
        }
        if !payment.refunds.is_empty() {
            let list = payment
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
                .collect();
            entry.insert("refundList".into(), Value::Array(list));
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
        let mut ledger = Ledger::new(NOW);
        let key = ledger.issue_reg_key();
        assert_eq!(key.len(), 15, "{key}");
        assert!(key.starts_with("RK"), "{key}");
        assert!(
            key.bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit()),
            "{key}"
        );
        assert_ne!(ledger.issue_reg_key(), key);
    }
}
