//! Reading what a merchant sends: JSON bodies and query strings turned into typed
//! inputs, with LINE Pay's refusals for what it would not accept.
//!
//! Kept apart from the ledger so the business rules see only well-formed values:
//! `2102` for bodies that are not JSON (or carry keys LINE Pay does not know),
//! `2101` for missing or ill-typed parameters, `1178` for a currency the channel does
//! not take, `1124` for amounts that do not add up.
//! Amounts are whole positive numbers that fit an i64, so refunds can be written as
//! negatives and sums are checked, never wrapped.

use crate::reply::{Refusal, ReturnCode};
use crate::route::Version;
use serde_json::{Map, Value};

/// The top-level keys `/v3/payments/request` accepts; any other key is `2102`.
const REQUEST_KEYS: [&str; 6] = [
    "amount",
    "currency",
    "orderId",
    "packages",
    "redirectUrls",
    "options",
];

/// More than this many ids in one details query is `1177`.
pub(crate) const MAX_QUERY_IDS: usize = 100;

/// A merchant channel's one currency. LINE Pay's current documentation lists TWD, THB
/// and USD; JPY is the Japanese service's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Currency {
    #[default]
    Twd,
    Jpy,
    Thb,
    Usd,
}

impl std::str::FromStr for Currency {
    type Err = String;

    fn from_str(text: &str) -> Result<Currency, String> {
        Currency::parse(text)
            .ok_or_else(|| format!("`{text}` is not a LINE Pay currency: TWD, JPY, THB or USD"))
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Currency {
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Twd => "TWD",
            Currency::Jpy => "JPY",
            Currency::Thb => "THB",
            Currency::Usd => "USD",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        match code {
            "TWD" => Some(Currency::Twd),
            "JPY" => Some(Currency::Jpy),
            "THB" => Some(Currency::Thb),
            "USD" => Some(Currency::Usd),
            _ => None,
        }
    }
}

/// A payment reservation (`request`), from either API generation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PaymentRequest {
    pub amount: i64,
    pub currency: Currency,
    pub order_id: String,
    pub product_name: String,
    /// v3 `packages` as sent, echoed by payment details; v2 has none.
    pub packages: Option<Value>,
    /// `false` makes confirm authorise only; capture or void must follow.
    pub capture: bool,
    pub preapproved: bool,
    /// Where the buyer's browser goes back to from the payment page.
    pub redirect: Redirect,
}

/// `redirectUrls` (v3, v4) or the flat `confirmUrl`, `confirmUrlType` and `cancelUrl`
/// (v2): the only places the payment page ever sends a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Redirect {
    pub confirm_url: String,
    pub confirm_url_type: ConfirmUrlType,
    /// Optional in v2; required in v3 and v4.
    pub cancel_url: Option<String>,
}

/// How LINE Pay returns to the shop after the buyer approves (`confirmUrlType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ConfirmUrlType {
    /// The buyer's browser is sent to confirmUrl (the default).
    #[default]
    Client,
    /// LINE Pay's server calls confirmUrl; the browser stays on LINE Pay's page.
    Server,
    /// Nobody is sent anywhere: the shop polls the status check.
    None,
}

fn confirm_url_type(value: Option<&Value>, name: &str) -> Result<ConfirmUrlType, Refusal> {
    match value.map(Value::as_str) {
        None | Some(Some("CLIENT")) => Ok(ConfirmUrlType::Client),
        Some(Some("SERVER")) => Ok(ConfirmUrlType::Server),
        Some(Some("NONE")) => Ok(ConfirmUrlType::None),
        Some(_) => Err(Refusal::parameter(format!(
            "{name} must be CLIENT, SERVER or NONE."
        ))),
    }
}

/// The `{amount, currency}` body of confirm and capture, its currency already checked
/// against the channel's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AmountCheck {
    pub amount: i64,
}

/// An offline payment: the fields of `oneTimeKeys/pay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OneTimeKeyPayment {
    pub product_name: String,
    pub amount: i64,
    pub currency: Currency,
    pub order_id: String,
    pub one_time_key: String,
    pub capture: bool,
}

/// An automatic payment with a regKey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PreapprovedPayment {
    pub product_name: String,
    pub amount: i64,
    pub currency: Currency,
    pub order_id: String,
    pub capture: bool,
}

/// `GET /v3/payments` (and the v2 authorisation list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DetailsQuery {
    pub transaction_ids: Vec<u64>,
    pub order_ids: Vec<String>,
    pub fields: Fields,
}

/// Which parts of a payment the details query asked for (`fields=TRANSACTION,ORDER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    pub transaction: bool,
    pub order: bool,
}

pub(crate) fn payment_request(
    version: Version,
    body: &[u8],
    channel: Currency,
) -> Result<PaymentRequest, Refusal> {
    let object = json_object(body)?;
    match version {
        Version::V3 | Version::V4 => payment_request_v3(&object, channel),
        Version::V2 => payment_request_v2(&object, channel),
    }
}

fn payment_request_v3(
    object: &Map<String, Value>,
    channel: Currency,
) -> Result<PaymentRequest, Refusal> {
    if let Some(key) = object
        .keys()
        .find(|key| !REQUEST_KEYS.contains(&key.as_str()))
    {
        return Err(Refusal::json(format!(
            "unknown field `{}`; the request body takes only {}.",
            shorten(key),
            REQUEST_KEYS.join(", ")
        )));
    }
    let amount = amount(object, "amount", Version::V3)?;
    let currency = currency(object, "currency", channel)?;
    let order_id = order_id(object)?;

    let redirect = object
        .get("redirectUrls")
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::parameter("redirectUrls must be an object."))?;
    let url = |key: &str| {
        text(redirect, key).map_err(|_| {
            Refusal::parameter(format!("redirectUrls.{key} must be a non-empty string."))
        })
    };
    let redirect = Redirect {
        confirm_url: url("confirmUrl")?,
        cancel_url: Some(url("cancelUrl")?),
        confirm_url_type: confirm_url_type(
            redirect.get("confirmUrlType"),
            "redirectUrls.confirmUrlType",
        )?,
    };

    let packages = object
        .get("packages")
        .and_then(Value::as_array)
        .filter(|packages| !packages.is_empty())
        .ok_or_else(|| Refusal::parameter("packages must be a non-empty array."))?;
    let mut total: i64 = 0;
    let mut product_name = None;
    for (index, package) in packages.iter().enumerate() {
        let (charged, first_product) = package_total(index, package)?;
        total = total
            .checked_add(charged)
            .ok_or_else(|| Refusal::parameter("the sum of package amounts overflows."))?;
        product_name = product_name.or(first_product);
    }

    let options = object.get("options");
    if options.is_some_and(|options| !options.is_object()) {
        return Err(Refusal::parameter("options must be an object."));
    }
    let payment = options.and_then(|options| options.get("payment"));
    if payment.is_some_and(|payment| !payment.is_object()) {
        return Err(Refusal::parameter("options.payment must be an object."));
    }
    if let Some(fee) = options
        .and_then(|options| options.get("shipping"))
        .and_then(|shipping| shipping.get("feeAmount"))
    {
        let fee = non_negative(fee).ok_or_else(|| {
            Refusal::parameter("options.shipping.feeAmount must be a whole number ≥ 0.")
        })?;
        total = total
            .checked_add(fee)
            .ok_or_else(|| Refusal::parameter("the sum of package amounts overflows."))?;
    }
    if total != amount {
        return Err(Refusal::new(
            ReturnCode::AmountInfoError,
            format!(
                "amount ({amount}) must equal the sum of packages[].amount + packages[].userFee \
             + options.shipping.feeAmount ({total})."
            ),
        ));
    }

    let capture = match payment.and_then(|payment| payment.get("capture")) {
        None => true,
        Some(Value::Bool(capture)) => *capture,
        Some(_) => {
            return Err(Refusal::parameter(
                "options.payment.capture must be a boolean.",
            ))
        }
    };
    let preapproved = pay_type(
        payment.and_then(|payment| payment.get("payType")),
        "options.payment.payType",
    )?;

    Ok(PaymentRequest {
        amount,
        currency,
        order_id,
        product_name: product_name.unwrap_or_default(),
        packages: Some(Value::Array(packages.clone())),
        capture,
        preapproved,
        redirect,
    })
}

/// One package: returns what it adds to the total (`amount + userFee`) and the name of
/// its first product. Its own amount must be the sum of quantity × price.
fn package_total(index: usize, package: &Value) -> Result<(i64, Option<String>), Refusal> {
    let at = |field: &str| format!("packages[{index}].{field}");
    let package = package
        .as_object()
        .ok_or_else(|| Refusal::parameter(format!("packages[{index}] must be an object.")))?;
    text(package, "id")
        .map_err(|_| Refusal::parameter(format!("{} must be a non-empty string.", at("id"))))?;
    let amount = package
        .get("amount")
        .and_then(non_negative)
        .ok_or_else(|| {
            Refusal::parameter(format!("{} must be a whole number ≥ 0.", at("amount")))
        })?;
    let user_fee = match package.get("userFee") {
        None => 0,
        Some(fee) => non_negative(fee).ok_or_else(|| {
            Refusal::parameter(format!("{} must be a whole number ≥ 0.", at("userFee")))
        })?,
    };
    let products = package
        .get("products")
        .and_then(Value::as_array)
        .filter(|products| !products.is_empty())
        .ok_or_else(|| {
            Refusal::parameter(format!("{} must be a non-empty array.", at("products")))
        })?;

    let mut sum: i64 = 0;
    for (number, product) in products.iter().enumerate() {
        let field = |name: &str| format!("packages[{index}].products[{number}].{name}");
        let product = product.as_object().ok_or_else(|| {
            Refusal::parameter(format!(
                "packages[{index}].products[{number}] must be an object."
            ))
        })?;
        text(product, "name").map_err(|_| {
            Refusal::parameter(format!("{} must be a non-empty string.", field("name")))
        })?;
        let quantity = product
            .get("quantity")
            .and_then(non_negative)
            .filter(|quantity| *quantity > 0)
            .ok_or_else(|| {
                Refusal::parameter(format!("{} must be a whole number > 0.", field("quantity")))
            })?;
        let price = product.get("price").and_then(non_negative).ok_or_else(|| {
            Refusal::parameter(format!("{} must be a whole number ≥ 0.", field("price")))
        })?;
        sum = quantity
            .checked_mul(price)
            .and_then(|line| sum.checked_add(line))
            .ok_or_else(|| Refusal::parameter(format!("{} overflows.", at("products"))))?;
    }
    if sum != amount {
        return Err(Refusal::new(
            ReturnCode::AmountInfoError,
            format!(
                "{} ({amount}) must equal the sum of products[].quantity × price ({sum}).",
                at("amount")
            ),
        ));
    }
    let total = amount
        .checked_add(user_fee)
        .ok_or_else(|| Refusal::parameter(format!("{} overflows.", at("userFee"))))?;
    let first_name = products
        .first()
        .and_then(|product| product.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((total, first_name))
}

/// The flat v2 reservation body. Unknown keys pass: v2 has many optional fields
/// (`mid`, `langCd`, `extras`, ...) and no documented 2102 rule.
fn payment_request_v2(
    object: &Map<String, Value>,
    channel: Currency,
) -> Result<PaymentRequest, Refusal> {
    let product_name = text(object, "productName")?;
    let amount = amount(object, "amount", Version::V2)?;
    let currency = currency(object, "currency", channel)?;
    let redirect = Redirect {
        confirm_url: text(object, "confirmUrl")?,
        confirm_url_type: confirm_url_type(object.get("confirmUrlType"), "confirmUrlType")?,
        cancel_url: match object.get("cancelUrl") {
            None => None,
            Some(_) => Some(text(object, "cancelUrl")?),
        },
    };
    let order_id = order_id(object)?;
    let capture = match object.get("capture") {
        None => true,
        Some(value) => {
            flag(value).ok_or_else(|| Refusal::parameter("capture must be true or false."))?
        }
    };
    let preapproved = pay_type(object.get("payType"), "payType")?;
    Ok(PaymentRequest {
        amount,
        currency,
        order_id,
        product_name,
        packages: None,
        capture,
        preapproved,
        redirect,
    })
}

/// The `{amount, currency}` of confirm: a positive amount in the channel's currency.
pub(crate) fn amount_check(
    version: Version,
    body: &[u8],
    channel: Currency,
) -> Result<AmountCheck, Refusal> {
    let object = json_object(body)?;
    let amount = amount(&object, "amount", version)?;
    currency(&object, "currency", channel)?;
    Ok(AmountCheck { amount })
}

/// The `{amount, currency}` of capture. The amount may be anything whole: the ledger
/// answers `1183` for ≤ 0 and `1184` above the authorised amount.
pub(crate) fn capture_amount(
    version: Version,
    body: &[u8],
    channel: Currency,
) -> Result<AmountCheck, Refusal> {
    let object = json_object(body)?;
    let value = object
        .get("amount")
        .ok_or_else(|| Refusal::parameter("amount is required."))?;
    let amount = match (value, version) {
        (Value::String(digits), Version::V2) => digits.parse::<i64>().ok(),
        _ => value.as_i64(),
    }
    .ok_or_else(|| Refusal::parameter("amount must be a whole number."))?;
    currency(&object, "currency", channel)?;
    Ok(AmountCheck { amount })
}

/// An offline payment with the buyer's one-time key (`oneTimeKeys/pay`).
pub(crate) fn one_time_key_payment(
    version: Version,
    body: &[u8],
    channel: Currency,
) -> Result<OneTimeKeyPayment, Refusal> {
    let object = json_object(body)?;
    let product_name = text(&object, "productName")?;
    let amount = amount(&object, "amount", version)?;
    let currency = currency(&object, "currency", channel)?;
    let order_id = order_id(&object)?;
    let one_time_key = match object.get("oneTimeKey") {
        Some(Value::String(key)) => key.clone(),
        // Scanners hand over digits; a client may send them as a number.
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err(Refusal::parameter("oneTimeKey must be a string of digits.")),
    };
    // 12 digits (TH, global), 18 (TW), 19 (JP).
    if !matches!(one_time_key.len(), 12 | 18 | 19)
        || !one_time_key.bytes().all(|byte| byte.is_ascii_digit())
    {
        return Err(Refusal::parameter(
            "oneTimeKey must be the 12, 18 or 19 digits read from the buyer's barcode.",
        ));
    }
    let capture = match object.get("capture") {
        None => true,
        Some(value) => {
            flag(value).ok_or_else(|| Refusal::parameter("capture must be true or false."))?
        }
    };
    Ok(OneTimeKeyPayment {
        product_name,
        amount,
        currency,
        order_id,
        one_time_key,
        capture,
    })
}

/// The refund amount; `None` (empty body, `{}`, or no `refundAmount`) refunds the rest.
pub(crate) fn refund(version: Version, body: &[u8]) -> Result<Option<i64>, Refusal> {
    let object = optional_json_object(body)?;
    match object.get("refundAmount") {
        None | Some(Value::Null) => Ok(None),
        Some(_) => amount(&object, "refundAmount", version).map(Some),
    }
}

/// Void and expire take no parameters, but a body that is sent must still be JSON.
pub(crate) fn no_parameters(body: &[u8]) -> Result<(), Refusal> {
    optional_json_object(body).map(|_| ())
}

pub(crate) fn preapproved_payment(
    version: Version,
    body: &[u8],
    channel: Currency,
) -> Result<PreapprovedPayment, Refusal> {
    let object = json_object(body)?;
    let product_name = text(&object, "productName")?;
    let amount = amount(&object, "amount", version)?;
    let currency = currency(&object, "currency", channel)?;
    let order_id = order_id(&object)?;
    let capture = match object.get("capture") {
        None => true,
        Some(value) => {
            flag(value).ok_or_else(|| Refusal::parameter("capture must be true or false."))?
        }
    };
    Ok(PreapprovedPayment {
        product_name,
        amount,
        currency,
        order_id,
        capture,
    })
}

/// `GET /v3|v4/payments` and the authorisation list: `transactionId` and `orderId`
/// repeated (`transactionId=1&transactionId=2`) or in PHP's array form
/// (`transactionId[0]=1`, `transactionId[]=1`, percent-encoded or not), at most 100
/// ids in total; `fields` is `ALL` (the default), `TRANSACTION` or `ORDER`.
pub(crate) fn details_query(query: Option<&str>) -> Result<DetailsQuery, Refusal> {
    let mut transaction_ids = Vec::new();
    let mut order_ids = Vec::new();
    let mut fields = None;
    for (key, value) in query_pairs(query)? {
        match array_base(&key) {
            "transactionId" => transaction_ids.push(value),
            "orderId" => order_ids.push(value),
            "fields" if key == "fields" => fields = Some(parse_fields(&value)?),
            // LINE Pay ignores parameters it does not use in a query.
            _ => {}
        }
    }
    if transaction_ids.len() + order_ids.len() > MAX_QUERY_IDS {
        return Err(Refusal::new(
            ReturnCode::TooManyTransactions,
            "ask for at most 100 transactionId and orderId values in total per call.",
        ));
    }
    if transaction_ids.is_empty() && order_ids.is_empty() {
        return Err(Refusal::parameter("transactionId or orderId is required."));
    }
    let transaction_ids = transaction_ids
        .iter()
        .map(|id| {
            id.parse::<u64>()
                .ok()
                .filter(|_| id.bytes().all(|byte| byte.is_ascii_digit()))
                .ok_or_else(|| Refusal::parameter("transactionId must be a number."))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if order_ids.iter().any(String::is_empty) {
        return Err(Refusal::parameter("orderId must not be empty."));
    }
    Ok(DetailsQuery {
        transaction_ids,
        order_ids,
        fields: fields.unwrap_or(Fields {
            transaction: true,
            order: true,
        }),
    })
}

/// `name` for the keys `name`, `name[]` and `name[N]` (PHP's `http_build_query`).
fn array_base(key: &str) -> &str {
    match key.split_once('[') {
        Some((base, index))
            if index
                .strip_suffix(']')
                .is_some_and(|index| index.bytes().all(|byte| byte.is_ascii_digit())) =>
        {
            base
        }
        _ => key,
    }
}

/// The regKey check takes `creditCardAuth=true|false`; anything else is `2101`.
pub(crate) fn reg_key_check_query(query: Option<&str>) -> Result<(), Refusal> {
    for (key, value) in query_pairs(query)? {
        if key == "creditCardAuth" && value != "true" && value != "false" {
            return Err(Refusal::parameter("creditCardAuth must be true or false."));
        }
    }
    Ok(())
}

fn parse_fields(value: &str) -> Result<Fields, Refusal> {
    let mut fields = Fields {
        transaction: false,
        order: false,
    };
    for field in value.split(',') {
        match field {
            "ALL" => {
                fields.transaction = true;
                fields.order = true;
            }
            "TRANSACTION" => fields.transaction = true,
            "ORDER" => fields.order = true,
            _ => {
                return Err(Refusal::parameter(
                    "fields must be ALL, TRANSACTION or ORDER.",
                ))
            }
        }
    }
    Ok(fields)
}

/// Parses a body that must be a JSON object. Bytes that are not UTF-8 JSON are 2102.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Refusal::json("the body must be a JSON object.")),
        Err(_) => Err(Refusal::json("the body is not valid JSON.")),
    }
}

/// Like [`json_object`], but an empty (or all-blank) body counts as `{}`: void,
/// expire and refund are often sent without a body.
fn optional_json_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Map::new())
    } else {
        json_object(body)
    }
}

/// A positive whole amount. v2 also takes a string of digits: the v2 samples send
/// `"amount": "360"`.
fn amount(object: &Map<String, Value>, key: &str, version: Version) -> Result<i64, Refusal> {
    let value = object
        .get(key)
        .ok_or_else(|| Refusal::parameter(format!("{key} is required.")))?;
    let parsed = match (value, version) {
        (Value::String(digits), Version::V2)
            if digits.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            digits.parse::<i64>().ok()
        }
        _ => value.as_i64(),
    };
    parsed
        .filter(|amount| *amount > 0)
        .ok_or_else(|| Refusal::parameter(format!("{key} must be a whole number > 0.")))
}

fn non_negative(value: &Value) -> Option<i64> {
    value.as_i64().filter(|number| *number >= 0)
}

/// The currency of a call: it must be the channel's one currency (`1178` otherwise).
fn currency(
    object: &Map<String, Value>,
    key: &str,
    channel: Currency,
) -> Result<Currency, Refusal> {
    let code = text(object, key)?;
    if code == channel.as_str() {
        Ok(channel)
    } else {
        Err(Refusal::new(
            ReturnCode::UnsupportedCurrency,
            format!(
                "{} is not this channel's currency ({channel}).",
                shorten(&code)
            ),
        ))
    }
}

fn order_id(object: &Map<String, Value>) -> Result<String, Refusal> {
    let order_id = text(object, "orderId")?;
    // LINE Pay documents orderId as at most 100 characters.
    if order_id.chars().count() > crate::route::MAX_ORDER_ID_CHARS {
        return Err(Refusal::parameter(
            "orderId must be at most 100 characters.",
        ));
    }
    Ok(order_id)
}

/// A required non-empty string member.
fn text(object: &Map<String, Value>, key: &str) -> Result<String, Refusal> {
    match object.get(key) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        _ => Err(Refusal::parameter(format!(
            "{key} must be a non-empty string."
        ))),
    }
}

/// A boolean, or the strings "true"/"false" that the v2 samples send.
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) if text == "true" => Some(true),
        Value::String(text) if text == "false" => Some(false),
        _ => None,
    }
}

/// `payType`: NORMAL (default) or PREAPPROVED; returns whether it is PREAPPROVED.
fn pay_type(value: Option<&Value>, name: &str) -> Result<bool, Refusal> {
    match value.map(Value::as_str) {
        None | Some(Some("NORMAL")) => Ok(false),
        Some(Some("PREAPPROVED")) => Ok(true),
        Some(_) => Err(Refusal::parameter(format!(
            "{name} must be NORMAL or PREAPPROVED."
        ))),
    }
}

/// Splits a raw query into decoded pairs (`+` is a space, `%XX` a byte).
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Refusal> {
    let Some(query) = query.filter(|query| !query.is_empty()) else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String, Refusal> {
    let bad = || Refusal::parameter("the query string is not valid percent-encoded UTF-8.");
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .ok_or_else(bad)?;
                decoded.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                index += 2;
            }
            other => decoded.push(other),
        }
        index += 1;
    }
    String::from_utf8(decoded).map_err(|_| bad())
}

/// Client text echoed in a message is cut short so a refusal stays one line.
fn shorten(text: &str) -> String {
    const LIMIT: usize = 40;
    if text.chars().count() <= LIMIT {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(LIMIT).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request_body() -> Value {
        json!({
            "amount": 250,
            "currency": "TWD",
            "orderId": "order-1",
            "packages": [{
                "id": "p1", "amount": 200, "userFee": 20, "name": "box",
                "products": [
                    {"name": "pen", "quantity": 2, "price": 50},
                    {"name": "ink", "quantity": 1, "price": 100}
                ]
            }],
            "redirectUrls": {"confirmUrl": "https://shop/confirm", "cancelUrl": "https://shop/cancel"},
            "options": {"shipping": {"feeAmount": 30}}
        })
    }

    fn parse_v3(body: &Value) -> Result<PaymentRequest, Refusal> {
        payment_request(Version::V3, body.to_string().as_bytes(), Currency::Twd)
    }

    fn code_of<T: std::fmt::Debug>(result: Result<T, Refusal>) -> ReturnCode {
        result.expect_err("input must be refused").code
    }

    #[test]
    fn a_full_v3_request_is_read() {
        let request = parse_v3(&request_body()).expect("valid request");
        assert_eq!(request.amount, 250);
        assert_eq!(request.currency, Currency::Twd);
        assert_eq!(request.order_id, "order-1");
        assert_eq!(request.product_name, "pen");
        assert!(request.capture);
        assert!(!request.preapproved);
    }

    #[test]
    fn amounts_that_do_not_add_up_are_1124() {
        let mut body = request_body();
        body["amount"] = json!(251);
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::AmountInfoError);

        let mut body = request_body();
        body["packages"][0]["products"][0]["price"] = json!(49);
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::AmountInfoError);
    }

    #[test]
    fn huge_and_odd_amounts_are_parameter_errors_not_panics() {
        for amount in [
            json!(0),
            json!(-5),
            json!(1.5),
            json!("250"),
            json!(u64::MAX),
            json!(1e300),
            json!(null),
        ] {
            let mut body = request_body();
            body["amount"] = amount.clone();
            assert_eq!(
                code_of(parse_v3(&body)),
                ReturnCode::ParameterError,
                "{amount}"
            );
        }
        let mut body = request_body();
        body["packages"][0]["products"][0]["quantity"] = json!(i64::MAX);
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::ParameterError);
        // Raw text too large for any number type.
        let raw = br#"{"amount":123456789012345678901234567890,"currency":"TWD"}"#;
        assert_eq!(
            code_of(payment_request(Version::V3, raw, Currency::Twd)),
            ReturnCode::ParameterError
        );
    }

    #[test]
    fn unknown_top_level_key_or_bad_json_is_2102() {
        let mut body = request_body();
        body["MerchantOrderNo"] = json!("x");
        let refusal = parse_v3(&body).expect_err("unknown key");
        assert_eq!(refusal.code, ReturnCode::JsonFormatError);
        assert!(
            refusal.detail.contains("MerchantOrderNo"),
            "{}",
            refusal.detail
        );

        for raw in [&b"{"[..], b"", b"[]", b"\xff\xfe{}", b"null"] {
            assert_eq!(
                code_of(payment_request(Version::V3, raw, Currency::Twd)),
                ReturnCode::JsonFormatError,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn missing_required_parameters_are_2101() {
        for pointer in ["amount", "currency", "orderId", "packages", "redirectUrls"] {
            let mut body = request_body();
            body.as_object_mut().map(|object| object.remove(pointer));
            assert_eq!(
                code_of(parse_v3(&body)),
                ReturnCode::ParameterError,
                "{pointer}"
            );
        }
        for key in ["confirmUrl", "cancelUrl"] {
            let mut body = request_body();
            body["redirectUrls"]
                .as_object_mut()
                .map(|object| object.remove(key));
            assert_eq!(
                code_of(parse_v3(&body)),
                ReturnCode::ParameterError,
                "{key}"
            );
        }
        let mut body = request_body();
        body["packages"] = json!([]);
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::ParameterError);
    }

    #[test]
    fn a_currency_other_than_the_channels_is_1178() {
        let mut body = request_body();
        for other in ["EUR", "JPY", "twd"] {
            body["currency"] = json!(other);
            assert_eq!(
                code_of(parse_v3(&body)),
                ReturnCode::UnsupportedCurrency,
                "{other}"
            );
        }
        body["currency"] = json!(978);
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::ParameterError);
        body["currency"] = json!("JPY");
        let jpy = payment_request(Version::V3, body.to_string().as_bytes(), Currency::Jpy);
        assert_eq!(jpy.map(|request| request.currency), Ok(Currency::Jpy));
        assert_eq!("THB".parse::<Currency>(), Ok(Currency::Thb));
        assert!("EUR".parse::<Currency>().is_err());
    }

    #[test]
    fn capture_takes_any_whole_amount_and_one_time_keys_are_digits() {
        let capture = |body: &str| capture_amount(Version::V3, body.as_bytes(), Currency::Twd);
        assert_eq!(
            capture(r#"{"amount":0,"currency":"TWD"}"#),
            Ok(AmountCheck { amount: 0 })
        );
        assert_eq!(
            capture(r#"{"amount":-5,"currency":"TWD"}"#),
            Ok(AmountCheck { amount: -5 })
        );
        assert_eq!(
            code_of(capture(r#"{"amount":1.5,"currency":"TWD"}"#)),
            ReturnCode::ParameterError
        );
        assert_eq!(
            code_of(capture(r#"{"amount":5,"currency":"USD"}"#)),
            ReturnCode::UnsupportedCurrency
        );

        let pay = |key: Value| {
            let body = json!({"productName": "tea", "amount": 10, "currency": "TWD",
                              "orderId": "pos-1", "oneTimeKey": key});
            one_time_key_payment(Version::V4, body.to_string().as_bytes(), Currency::Twd)
        };
        for good in [
            json!("123456789012"),
            json!("123456789012345678"),
            json!("1234567890123456789"),
            json!(123456789012_u64),
        ] {
            assert!(pay(good.clone()).is_ok(), "{good}");
        }
        for bad in [
            json!("12345678901"),
            json!("1234567890123"),
            json!("12345678901a"),
            json!(null),
            json!(""),
        ] {
            assert_eq!(
                code_of(pay(bad.clone())),
                ReturnCode::ParameterError,
                "{bad}"
            );
        }
    }

    #[test]
    fn payment_options_are_read() {
        let mut body = request_body();
        body["options"]["payment"] = json!({"capture": false, "payType": "PREAPPROVED"});
        let request = parse_v3(&body).expect("valid request");
        assert!(!request.capture);
        assert!(request.preapproved);

        body["options"]["payment"] = json!({"capture": "no"});
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::ParameterError);
        body["options"]["payment"] = json!({"payType": "SOMETIMES"});
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::ParameterError);
        body["options"]["payment"] = json!(true);
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::ParameterError);
        body["options"] = json!("capture=false");
        assert_eq!(code_of(parse_v3(&body)), ReturnCode::ParameterError);
    }

    #[test]
    fn v2_request_is_flat_and_takes_string_numbers() {
        let body = json!({
            "productName": "TEST 01", "amount": "360", "currency": "TWD",
            "confirmUrl": "https://shop/confirm", "orderId": "gdfgdf454",
            "capture": "false", "payType": "NORMAL", "confirmUrlType": "CLIENT"
        });
        let request = payment_request(Version::V2, body.to_string().as_bytes(), Currency::Twd)
            .expect("valid v2");
        assert_eq!(request.amount, 360);
        assert!(!request.capture);
        assert_eq!(request.product_name, "TEST 01");
        // v3 does not take amounts as strings.
        let confirm = br#"{"amount":"360","currency":"TWD"}"#;
        assert_eq!(
            amount_check(Version::V2, confirm, Currency::Twd).map(|check| check.amount),
            Ok(360)
        );
        assert_eq!(
            code_of(amount_check(Version::V3, confirm, Currency::Twd)),
            ReturnCode::ParameterError
        );
    }

    #[test]
    fn refund_body_is_optional() {
        assert_eq!(refund(Version::V3, b""), Ok(None));
        assert_eq!(refund(Version::V3, b"{}"), Ok(None));
        assert_eq!(refund(Version::V3, br#"{"refundAmount":30}"#), Ok(Some(30)));
        assert_eq!(
            code_of(refund(Version::V3, br#"{"refundAmount":0}"#)),
            ReturnCode::ParameterError
        );
        assert_eq!(
            code_of(refund(Version::V3, b"not json")),
            ReturnCode::JsonFormatError
        );
    }

    #[test]
    fn details_query_reads_repeated_ids_and_limits_them() {
        let query = "transactionId=2021121600698709710&transactionId=2021121600698709711&orderId=A%20B+C&fields=ORDER";
        let parsed = details_query(Some(query)).expect("valid query");
        assert_eq!(
            parsed.transaction_ids,
            vec![2021121600698709710, 2021121600698709711]
        );
        assert_eq!(parsed.order_ids, vec!["A B C".to_string()]);
        assert_eq!(
            parsed.fields,
            Fields {
                transaction: false,
                order: true
            }
        );

        let many = (0..101)
            .map(|n| format!("transactionId={n}"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(
            code_of(details_query(Some(&many))),
            ReturnCode::TooManyTransactions
        );
        // The cap is per call: 60 transaction ids and 41 orderIds are too many.
        let mixed = (0..101)
            .map(|n| {
                if n < 60 {
                    format!("transactionId={n}")
                } else {
                    format!("orderId=o{n}")
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(
            code_of(details_query(Some(&mixed))),
            ReturnCode::TooManyTransactions
        );
        let hundred = (0..100)
            .map(|n| format!("transactionId={n}"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(details_query(Some(&hundred)).is_ok());

        for bad in [
            None,
            Some(""),
            Some("transactionId=abc"),
            Some("orderId=%zz"),
            Some("orderId=%ff"),
            Some("transactionId=1&fields=EVERYTHING"),
            Some("transactionId=1&fields=all"),
        ] {
            assert_eq!(
                code_of(details_query(bad)),
                ReturnCode::ParameterError,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn details_query_takes_the_shapes_sdks_send() {
        let all = Fields {
            transaction: true,
            order: true,
        };
        let parsed = details_query(Some("transactionId=1&fields=ALL")).expect("ALL");
        assert_eq!(parsed.fields, all);
        assert_eq!(
            details_query(Some("transactionId=1")).map(|q| q.fields),
            Ok(all)
        );
        // PHP's http_build_query: transactionId%5B0%5D=1&transactionId%5B1%5D=2.
        let php = details_query(Some(
            "transactionId%5B0%5D=1&transactionId%5B1%5D=2&orderId%5B0%5D=a&orderId[]=b&fields=TRANSACTION",
        ))
        .expect("PHP arrays");
        assert_eq!(php.transaction_ids, vec![1, 2]);
        assert_eq!(php.order_ids, vec!["a".to_string(), "b".to_string()]);
        assert!(php.fields.transaction && !php.fields.order);
        // Not array keys: ignored, as LINE Pay ignores parameters it does not use.
        for ignored in [
            "transactionId[x]=1",
            "transactionIds=1",
            "transactionId[0=1",
        ] {
            assert_eq!(
                code_of(details_query(Some(ignored))),
                ReturnCode::ParameterError,
                "{ignored}"
            );
        }
    }

    #[test]
    fn reg_key_check_query_takes_a_boolean_card_check() {
        assert_eq!(reg_key_check_query(None), Ok(()));
        assert_eq!(reg_key_check_query(Some("creditCardAuth=true")), Ok(()));
        assert_eq!(
            code_of(reg_key_check_query(Some("creditCardAuth=yes"))),
            ReturnCode::ParameterError
        );
    }
}
