//! The offline (POS) API's bodies under `/v4` (and `/v3` where a route table allows it),
//! one [`Table`] per route.
//!
//! Sources: LINE Pay's Offline API reference (`developers.line.biz/en/reference/
//! line-pay-offline/`, "Payment API Request Body": `productName` 4,000, `amount`,
//! `currency` 3, `orderId` 100, `oneTimeKey` 12 to 19 by country, `capture`, `extras`)
//! and the project's summary in `linepay-api.md` ("Online API v4, offline API, and the
//! other endpoints"). `extras` is documented as a set of optional settings that differ
//! by country, so its members are not checked ([`Kind::OpenObject`]).

use super::schema::{optional, required, Body, Field, Kind, Min, Table};

const PAYMENT_AMOUNT: Kind = Kind::Amount(Min::Positive("1183"));

/// `POST /v4/payments/oneTimeKeys/pay`.
pub(crate) const ONE_TIME_KEY_PAY: Table = Table {
    key: "payments/oneTimeKeys/pay",
    family: "offline_pay",
    body: Body::Required,
    fields: &[
        required("productName", Kind::Text { max: 4000 }),
        required("amount", PAYMENT_AMOUNT),
        required("currency", Kind::Currency),
        required("orderId", Kind::Text { max: 100 }),
        required("oneTimeKey", Kind::Text { max: 19 }),
        optional("capture", Kind::Flag),
        optional("extras", Kind::OpenObject),
    ],
    checks: &[],
    reference: "Offline API reference, Payment API request body",
};

const AMOUNT_AND_CURRENCY: &[Field] = &[
    required("amount", PAYMENT_AMOUNT),
    required("currency", Kind::Currency),
];

/// `POST /v4/payments/orders/{orderId}/capture`.
pub(crate) const ORDER_CAPTURE: Table = Table {
    key: "payments/orders/{orderId}/capture",
    family: "capture",
    body: Body::Required,
    fields: AMOUNT_AND_CURRENCY,
    checks: &[],
    reference: "Offline API reference, Capture API body",
};

/// `POST /v4/payments/orders/{orderId}/refund`: no body refunds the whole payment.
pub(crate) const ORDER_REFUND: Table = Table {
    key: "payments/orders/{orderId}/refund",
    family: "refund",
    body: Body::MayBeEmpty,
    fields: &[optional(
        "refundAmount",
        Kind::Amount(Min::Positive("2101")),
    )],
    checks: &[],
    reference: "Offline API reference, Refund API body",
};

/// `POST /v4/payments/orders/{orderId}/void`: no parameters.
pub(crate) const ORDER_VOID: Table = Table {
    key: "payments/orders/{orderId}/void",
    family: "void",
    body: Body::MayBeEmpty,
    fields: &[],
    checks: &[],
    reference: "Offline API reference, Void API (no body)",
};
