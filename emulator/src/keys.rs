//! The emulator's one-time keys: what a buyer's barcode (LINE Pay's "MyCode") pays
//! with in the offline API, deterministic so that a POS can rehearse every answer.
//!
//! A one-time key is 12 digits (Thailand, global), 18 (Taiwan) or 19 (Japan). Here:
//! - a key made of nines followed by four digits `CCCC` (`99999999CCCC`,
//!   `99999999999999CCCC`, `999999999999999CCCC`) is refused with returnCode `CCCC`:
//!   `999999991142` is "insufficient balance", `999999991282` a card error,
//!   `999999999000` an internal error;
//! - a key starting with `4` pays by credit card;
//! - every other key pays from the LINE Pay balance.
//!
//! Any key is single use and lives five minutes, as LINE Pay's do (the ledger keeps
//! track, `Ledger::spend_one_time_key`); the refusal keys pay nothing, so they keep
//! answering their code. `POST /__emulator/oneTimeKeys` issues fresh keys.

use crate::ledger::Method;
use crate::reply::ReturnCode;

/// What paying with a one-time key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyOutcome {
    Pays(Method),
    Refused(ReturnCode),
}

/// Test keys for the documentation and the tests: one that pays from the balance,
/// one by card, and one refused for insufficient balance.
pub const PAYS_FROM_BALANCE: &str = "123456789012";
pub const PAYS_BY_CARD: &str = "412345678901234567";
pub const INSUFFICIENT_BALANCE: &str = "999999991142";

/// The outcome of a key the input check has already found to be 12, 18 or 19 digits.
pub(crate) fn outcome(key: &str) -> KeyOutcome {
    let (nines, code) = key.split_at(key.len().saturating_sub(4));
    if !nines.is_empty() && nines.bytes().all(|byte| byte == b'9') {
        if let Some(code) = ReturnCode::parse_failure(code) {
            return KeyOutcome::Refused(code);
        }
    }
    if key.starts_with('4') {
        KeyOutcome::Pays(Method::CreditCard)
    } else {
        KeyOutcome::Pays(Method::Balance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_keys_do_what_the_documentation_says() {
        assert_eq!(
            outcome(PAYS_FROM_BALANCE),
            KeyOutcome::Pays(Method::Balance)
        );
        assert_eq!(outcome(PAYS_BY_CARD), KeyOutcome::Pays(Method::CreditCard));
        assert_eq!(
            outcome(INSUFFICIENT_BALANCE),
            KeyOutcome::Refused(ReturnCode::Other(1142))
        );
        assert_eq!(
            outcome("999999999999991282"),
            KeyOutcome::Refused(ReturnCode::Other(1282))
        );
        assert_eq!(
            outcome("9999999999999999000"),
            KeyOutcome::Refused(ReturnCode::Other(9000))
        );
        assert_eq!(
            outcome("999999991124"),
            KeyOutcome::Refused(ReturnCode::AmountInfoError)
        );
        // Nines then a code below 1000 (not a failure) pay like any key.
        assert_eq!(outcome("999999990123"), KeyOutcome::Pays(Method::Balance));
        assert_eq!(outcome("899999991142"), KeyOutcome::Pays(Method::Balance));
    }
}
