//! The online API's bodies (v3 and v4 alike: LINE Pay's v4 takes the same bodies under
//! `/v4`), one [`Table`] per route.
//!
//! Sources: the request-body tables of LINE Pay's Online API v3 reference
//! (`pay.line.me/documents/online_v3_en.html`, and `developers-pay.line.me/online-api-v3/
//! request-payment` for the current text), the project's summary of them in
//! `linepay-api.md` ("Request body of /v3/payments/request", "Return codes worth
//! knowing"), and the typed bodies of the Node SDK `line-pay-merchant` (`src/line-pay-api/
//! request.ts`, `type.ts`, `pay-preapproved.ts`), which follow the same reference. The
//! lengths are the reference's "Length" column, in characters.
//!
//! `options.account` appears in the project's summary but is not documented member by
//! member in the sources above, so its members are not checked ([`Kind::OpenObject`]);
//! better to miss a typo there than to refuse a call LINE Pay accepts.

use super::schema::{optional, required, Body, Check, Field, Kind, Min, Table};

/// A payment amount: LINE Pay answers `1183` for one of 0 or less.
const PAYMENT_AMOUNT: Kind = Kind::Amount(Min::Positive("1183"));
/// A refund amount of 0 or less is a parameter error.
const REFUND_AMOUNT: Kind = Kind::Amount(Min::Positive("2101"));
const PRICE: Kind = Kind::Amount(Min::Zero);
const ORDER_ID: Kind = Kind::Text { max: 100 };
const URL: Kind = Kind::Text { max: 500 };

const PRODUCT: &[Field] = &[
    optional("id", Kind::Text { max: 50 }),
    required("name", Kind::Text { max: 4000 }),
    optional("imageUrl", URL),
    required("quantity", Kind::Count),
    required("price", PRICE),
    optional("originalPrice", PRICE),
];

const PACKAGE: &[Field] = &[
    required("id", Kind::Text { max: 50 }),
    required("amount", PRICE),
    optional("userFee", PRICE),
    optional("name", Kind::Text { max: 100 }),
    required(
        "products",
        Kind::Array {
            item: &Kind::Object(PRODUCT),
            min: 1,
        },
    ),
];

const REDIRECT_URLS: &[Field] = &[
    optional("appPackageName", Kind::Text { max: 4000 }),
    required("confirmUrl", URL),
    optional("confirmUrlType", Kind::OneOf(&["CLIENT", "SERVER", "NONE"])),
    required("cancelUrl", URL),
];

const PAYMENT: &[Field] = &[
    optional("capture", Kind::Flag),
    optional("payType", Kind::OneOf(&["NORMAL", "PREAPPROVED"])),
];

const DISPLAY: &[Field] = &[
    optional("locale", Kind::Text { max: 10 }),
    optional("checkConfirmUrlBrowser", Kind::Flag),
];

const RECIPIENT: &[Field] = &[
    optional("firstName", Kind::Text { max: 100 }),
    optional("lastName", Kind::Text { max: 100 }),
    optional("firstNameOptional", Kind::Text { max: 100 }),
    optional("lastNameOptional", Kind::Text { max: 100 }),
    optional("email", Kind::Text { max: 100 }),
    optional("phoneNo", Kind::Text { max: 30 }),
];

const ADDRESS: &[Field] = &[
    optional("country", Kind::Text { max: 2 }),
    optional("postalCode", Kind::Text { max: 20 }),
    optional("state", Kind::Text { max: 100 }),
    optional("city", Kind::Text { max: 100 }),
    optional("detail", Kind::Text { max: 300 }),
    optional("optional", Kind::Text { max: 300 }),
    optional("recipient", Kind::Object(RECIPIENT)),
];

const SHIPPING: &[Field] = &[
    optional(
        "type",
        Kind::OneOf(&["NO_SHIPPING", "FIXED_ADDRESS", "SHIPPING"]),
    ),
    optional("feeAmount", PRICE),
    optional("feeInquiryUrl", URL),
    optional("feeInquiryType", Kind::OneOf(&["CONDITION", "FIXED"])),
    optional("address", Kind::Object(ADDRESS)),
];

const ADD_FRIEND: &[Field] = &[
    optional("type", Kind::Text { max: 100 }),
    optional(
        "idList",
        Kind::Array {
            item: &Kind::Text { max: 100 },
            min: 0,
        },
    ),
];

const FAMILY_SERVICE: &[Field] = &[optional(
    "addFriends",
    Kind::Array {
        item: &Kind::Object(ADD_FRIEND),
        min: 0,
    },
)];

const EXTRA: &[Field] = &[
    optional("branchName", Kind::Text { max: 200 }),
    optional("branchId", Kind::Text { max: 200 }),
];

const OPTIONS: &[Field] = &[
    optional("payment", Kind::Object(PAYMENT)),
    optional("display", Kind::Object(DISPLAY)),
    optional("account", Kind::OpenObject),
    optional("shipping", Kind::Object(SHIPPING)),
    optional("familyService", Kind::Object(FAMILY_SERVICE)),
    optional("extra", Kind::Object(EXTRA)),
];

/// `POST /v3|v4/payments/request`.
pub(crate) const REQUEST: Table = Table {
    key: "payments/request",
    family: "request",
    body: Body::Required,
    fields: &[
        required("amount", PAYMENT_AMOUNT),
        required("currency", Kind::Currency),
        required("orderId", ORDER_ID),
        required(
            "packages",
            Kind::Array {
                item: &Kind::Object(PACKAGE),
                min: 1,
            },
        ),
        required("redirectUrls", Kind::Object(REDIRECT_URLS)),
        optional("options", Kind::Object(OPTIONS)),
    ],
    checks: &[Check::PackageSums],
    reference: "Online API v3 reference, Request API body; linepay-api.md \"Request body of /v3/payments/request\"",
};

/// `{amount, currency}`: confirm and capture.
const AMOUNT_AND_CURRENCY: &[Field] = &[
    required("amount", PAYMENT_AMOUNT),
    required("currency", Kind::Currency),
];

/// `POST /v3|v4/payments/{transactionId}/confirm`.
pub(crate) const CONFIRM: Table = Table {
    key: "payments/{transactionId}/confirm",
    family: "confirm",
    body: Body::Required,
    fields: AMOUNT_AND_CURRENCY,
    checks: &[],
    reference: "Online API v3 reference, Confirm API body",
};

/// `POST /v3|v4/payments/authorizations/{transactionId}/capture`.
pub(crate) const CAPTURE: Table = Table {
    key: "payments/authorizations/{transactionId}/capture",
    family: "capture",
    body: Body::Required,
    fields: AMOUNT_AND_CURRENCY,
    checks: &[],
    reference: "Online API v3 reference, Capture API body",
};

/// `POST /v3|v4/payments/authorizations/{transactionId}/void`: no parameters.
pub(crate) const VOID: Table = Table {
    key: "payments/authorizations/{transactionId}/void",
    family: "void",
    body: Body::MayBeEmpty,
    fields: &[],
    checks: &[],
    reference: "Online API v3 reference, Void API (no body)",
};

/// `POST /v3|v4/payments/{transactionId}/refund`: no body refunds the whole payment.
pub(crate) const REFUND: Table = Table {
    key: "payments/{transactionId}/refund",
    family: "refund",
    body: Body::MayBeEmpty,
    fields: &[optional("refundAmount", REFUND_AMOUNT)],
    checks: &[],
    reference: "Online API v3 reference, Refund API body",
};

/// `POST /v3|v4/payments/preapprovedPay/{regKey}/payment`.
pub(crate) const PREAPPROVED_PAY: Table = Table {
    key: "payments/preapprovedPay/{regKey}/payment",
    family: "preapproved",
    body: Body::Required,
    fields: &[
        required("productName", Kind::Text { max: 4000 }),
        required("amount", PAYMENT_AMOUNT),
        required("currency", Kind::Currency),
        required("orderId", ORDER_ID),
        optional("capture", Kind::Flag),
    ],
    checks: &[],
    reference:
        "Online API v3 reference, Pay Preapproved API body; line-pay-merchant pay-preapproved.ts",
};

/// `POST /v3|v4/payments/preapprovedPay/{regKey}/expire`: no parameters.
pub(crate) const EXPIRE: Table = Table {
    key: "payments/preapprovedPay/{regKey}/expire",
    family: "expire",
    body: Body::MayBeEmpty,
    fields: &[],
    checks: &[],
    reference: "Online API v3 reference, Expire regKey API (no body)",
};
