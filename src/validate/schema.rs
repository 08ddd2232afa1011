//! The rule language and the walker that checks a parsed body against it.
//!
//! The body is read into a [`Node`] tree that borrows from its bytes, and a finding's
//! JSON path is only written out when the finding is reported ([`Path`]): a body that
//! passes costs the parse, a handful of `Vec`s and no string copies.
//!
//! A route's rules are a [`Table`]: the fields of its body ([`Field`], each with a
//! [`Kind`]) and the arithmetic LINE Pay checks on it ([`Check`]). The walker reports
//! every problem it finds as a [`Finding`] (a JSON path, a [`Rule`], and the LINE Pay
//! `returnCode` that LINE Pay would have answered), up to [`MAX_FINDINGS`]; it never
//! stops at the first one, so `warn` mode logs the whole picture.

use super::node::{member, Node};
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;

/// An object's members as [`Node`] holds them.
type Members<'a> = [(Cow<'a, str>, Node<'a>)];

/// More findings than this in one body are not listed (one is enough to refuse).
pub(crate) const MAX_FINDINGS: usize = 8;

/// A key the app sent, quoted in a message and a log line, is cut to this many
/// characters and stripped of anything but printable ASCII.
const MAX_QUOTED_KEY: usize = 40;

/// What a field may hold.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A JSON object with exactly these members (any other member: 2102).
    Object(&'static [Field]),
    /// A JSON object whose members are not checked: documented as free-form, or not
    /// documented member by member in the reference (e.g. `options.account`).
    OpenObject,
    /// A JSON array of items of one kind, with at least `min` items.
    Array { item: &'static Kind, min: usize },
    /// A string of at most `max` characters (LINE Pay's documented "length").
    Text { max: usize },
    /// One of a documented set of strings.
    OneOf(&'static [&'static str]),
    /// The ISO 4217 code of a currency LINE Pay takes; another is `1178`.
    Currency,
    /// A money amount: a JSON number, whole for TWD and JPY, at most 2 decimals for THB
    /// and USD (`1124` otherwise), at least `min`.
    Amount(Min),
    /// A whole number above 0 (a product's `quantity`).
    Count,
    /// `true` or `false`.
    Flag,
}

/// The smallest value an [`Kind::Amount`] may hold, and the code LINE Pay answers below it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Min {
    /// Above 0; `code` is what LINE Pay answers otherwise (1183 for a payment amount).
    Positive(&'static str),
    /// 0 or more (prices, fees, package amounts).
    Zero,
}

/// One member of an object.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) required: bool,
    pub(crate) kind: Kind,
}

/// A required member. A required string must also be non-empty.
pub(crate) const fn required(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        required: true,
        kind,
    }
}

/// An optional member.
pub(crate) const fn optional(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        required: false,
        kind,
    }
}

/// Arithmetic LINE Pay checks across fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// `packages[].amount` = Σ `products[].quantity × price` in each package, and
    /// `amount` = Σ (`packages[].amount` + `userFee`) + `options.shipping.feeAmount`.
    PackageSums,
}

/// Whether the route's body may be left empty (LINE Pay signs an empty POST body as the
/// empty string: void, expire, a full refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    Required,
    MayBeEmpty,
}

/// The rules of one route.
#[derive(Debug)]
pub(crate) struct Table {
    /// The route's template after its version prefix, e.g. `payments/request`.
    pub(crate) key: &'static str,
    /// The bounded `route_family` label of the findings metric.
    pub(crate) family: &'static str,
    pub(crate) body: Body,
    pub(crate) fields: &'static [Field],
    pub(crate) checks: &'static [Check],
    /// Where the rules come from, for the docs and the reader.
    pub(crate) reference: &'static str,
}

/// The kind of problem: the `rule` label of the findings metric and the words of the
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Rule {
    NotObject,
    UnknownField,
    Required,
    Type,
    Length,
    Value,
    Currency,
    WholeAmount,
    Scale,
    Minimum,
    PackageSum,
    AmountSum,
}

impl Rule {
    /// Every rule, for the metric's pre-created series.
    pub(crate) const ALL: [Rule; 12] = [
        Rule::NotObject,
        Rule::UnknownField,
        Rule::Required,
        Rule::Type,
        Rule::Length,
        Rule::Value,
        Rule::Currency,
        Rule::WholeAmount,
        Rule::Scale,
        Rule::Minimum,
        Rule::PackageSum,
        Rule::AmountSum,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Rule::NotObject => "not_object",
            Rule::UnknownField => "unknown_field",
            Rule::Required => "required",
            Rule::Type => "type",
            Rule::Length => "length",
            Rule::Value => "value",
            Rule::Currency => "currency",
            Rule::WholeAmount => "whole_amount",
            Rule::Scale => "scale",
            Rule::Minimum => "minimum",
            Rule::PackageSum => "package_sum",
            Rule::AmountSum => "amount_sum",
        }
    }
}

/// One problem: where, which rule, what exactly, and what LINE Pay would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// `$.packages[0].products[1].quantity`.
    pub(crate) path: String,
    pub(crate) rule: Rule,
    /// The rule in words, e.g. `not a LINE Pay field`.
    pub(crate) detail: String,
    /// The `returnCode` LINE Pay would answer, e.g. `2102`.
    pub(crate) code: &'static str,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (LINE Pay would answer {})",
            self.path, self.detail, self.code
        )
    }
}

const JSON_FORMAT: &str = "2102";
const PARAMETER: &str = "2101";
const AMOUNT_INFO: &str = "1124";
const CURRENCY: &str = "1178";

/// The currencies LINE Pay takes (TWD, THB and USD in the current documentation; JPY in
/// the older one and the Japanese service), with their decimal places (ISO 4217).
pub(super) const CURRENCIES: &[(&str, u32)] = &[("TWD", 0), ("JPY", 0), ("THB", 2), ("USD", 2)];

/// An amount in hundredths, exact: every currency LINE Pay takes has at most two
/// decimal places, so sums are compared in integers, never in floating point.
pub(super) type Hundredths = i128;

/// Checks `body` against `table`.
pub(crate) fn check(table: &Table, body: &[u8]) -> Vec<Finding> {
    let mut walk = Walk::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        if table.body == Body::Required {
            walk.push(
                &Path::Root,
                Rule::Required,
                "the body is empty; this call takes a JSON object".to_owned(),
                PARAMETER,
            );
        }
        return walk.findings;
    }
    let value: Node = match serde_json::from_slice(body) {
        Ok(value) => value,
        // The request path has refused what is not JSON (invalid_json) before the walk,
        // by `IgnoredAny`, which neither decodes strings nor sizes numbers: a lone
        // surrogate escape, a number past f64 (`1e400`) or nesting past serde_json's
        // limit still gets here. None of them can be checked, so none may go unnamed:
        // in `enforce` mode an unreadable body must be refused, not passed unread.
        Err(error) => {
            walk.push(
                &Path::Root,
                Rule::Type,
                format!("not JSON the rules can read ({error})"),
                JSON_FORMAT,
            );
            return walk.findings;
        }
    };
    let Node::Object(object) = &value else {
        walk.push(
            &Path::Root,
            Rule::NotObject,
            "the body must be a JSON object".to_owned(),
            JSON_FORMAT,
        );
        return walk.findings;
    };
    walk.scale = match member(object, "currency").and_then(Node::as_str) {
        Some(code) => CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(_, places)| *places),
        None => None,
    };
    walk.object(&Path::Root, object, table.fields);
    for check in table.checks {
        match check {
            Check::PackageSums => walk.package_sums(object),
        }
    }
    walk.findings
}

/// `$.packages`, the parent of the package sums' findings.
const PACKAGES: Path<'static> = Path::Member(&Path::Root, "packages");

#[derive(Default)]
struct Walk {
    findings: Vec<Finding>,
    /// The decimal places of the body's currency, when it is one LINE Pay takes.
    scale: Option<u32>,
}

/// Where a value sits, written out (`$.packages[0].amount`) only for a finding.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Member(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => "$".to_owned(),
            Path::Member(parent, key) => member_path(&parent.render(), key),
            Path::Index(parent, index) => format!("{}[{index}]", parent.render()),
        }
    }
}

impl Walk {
    fn push(&mut self, path: &Path<'_>, rule: Rule, detail: String, code: &'static str) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                path: path.render(),
                rule,
                detail,
                code,
            });
        }
    }

    fn object(&mut self, path: &Path<'_>, object: &Members<'_>, fields: &[Field]) {
        let known = |key: &str| fields.iter().any(|field| field.name == key);
        if !object.iter().all(|(key, _)| known(key)) {
            // Sorted, each once: the order serde_json's map gave them in.
            let mut unknown: Vec<&str> = object
                .iter()
                .map(|(key, _)| key.as_ref())
                .filter(|key| !known(key))
                .collect();
            unknown.sort_unstable();
            unknown.dedup();
            for key in unknown {
                self.push(
                    &Path::Member(path, key),
                    Rule::UnknownField,
                    "not a LINE Pay field".to_owned(),
                    JSON_FORMAT,
                );
            }
        }
        for field in fields {
            let here = Path::Member(path, field.name);
            match member(object, field.name) {
                None | Some(Node::Null) if field.required => {
                    self.push(&here, Rule::Required, "required".to_owned(), PARAMETER)
                }
                None | Some(Node::Null) => {}
                Some(value) => self.value(&here, value, &field.kind, field.required),
            }
        }
    }

    fn value(&mut self, path: &Path<'_>, value: &Node<'_>, kind: &Kind, required: bool) {
        match (kind, value) {
            (Kind::Object(fields), Node::Object(object)) => self.object(path, object, fields),
            (Kind::OpenObject, Node::Object(_)) => {}
            (Kind::Array { item, min }, Node::Array(items)) => {
                if items.len() < *min {
                    self.push(
                        path,
                        Rule::Required,
                        format!("must hold at least {min} item(s)"),
                        PARAMETER,
                    );
                }
                for (index, element) in items.iter().enumerate() {
                    self.value(&Path::Index(path, index), element, item, true);
                }
            }
            (Kind::Text { max }, Node::Text(text)) => {
                if required && text.is_empty() {
                    self.push(
                        path,
                        Rule::Required,
                        "must not be empty".to_owned(),
                        PARAMETER,
                    );
                } else if text.chars().count() > *max {
                    self.push(
                        path,
                        Rule::Length,
                        format!("longer than {max} characters"),
                        PARAMETER,
                    );
                }
            }
            (Kind::OneOf(allowed), Node::Text(text)) => {
                if !allowed.contains(&&**text) {
                    self.push(
                        path,
                        Rule::Value,
                        format!("must be one of {}", allowed.join(", ")),
                        PARAMETER,
                    );
                }
            }
            (Kind::Currency, Node::Text(code)) => {
                if !CURRENCIES.iter().any(|(known, _)| *known == &**code) {
                    self.push(
                        path,
                        Rule::Currency,
                        "not a currency LINE Pay takes (TWD, JPY, THB, USD)".to_owned(),
                        CURRENCY,
                    );
                }
            }
            (Kind::Amount(min), Node::Number(number)) => self.amount(path, number, *min),
            (Kind::Count, Node::Number(number)) => {
                if number.as_u64().is_none_or(|count| count == 0) {
                    self.push(
                        path,
                        Rule::Minimum,
                        "must be a whole number above 0".to_owned(),
                        PARAMETER,
                    );
                }
            }
            (Kind::Flag, Node::Bool(_)) => {}
            (kind, _) => self.push(
                path,
                Rule::Type,
                format!("must be {}", kind.expected()),
                PARAMETER,
            ),
        }
    }

    fn amount(&mut self, path: &Path<'_>, number: &Number, min: Min) {
        let Some(decimal) = Decimal::of(number) else {
            self.push(
                path,
                Rule::Type,
                "must be a plain decimal number (no exponent, within range)".to_owned(),
                PARAMETER,
            );
            return;
        };
        match self.scale {
            Some(0) if decimal.places > 0 || decimal.written_as_float => {
                self.push(
                    path,
                    Rule::WholeAmount,
                    "must be a whole number for this currency (no decimal point)".to_owned(),
                    AMOUNT_INFO,
                );
            }
            Some(places) if decimal.places > places => {
                self.push(
                    path,
                    Rule::Scale,
                    format!("has more than {places} decimal places"),
                    AMOUNT_INFO,
                );
            }
            _ => {}
        }
        match min {
            Min::Positive(code) if decimal.negative || decimal.is_zero() => {
                self.push(path, Rule::Minimum, "must be above 0".to_owned(), code)
            }
            Min::Zero if decimal.negative && !decimal.is_zero() => self.push(
                path,
                Rule::Minimum,
                "must not be negative".to_owned(),
                PARAMETER,
            ),
            _ => {}
        }
    }

    /// The request's arithmetic; any value that is not an exact amount was reported
    /// by the field rules already and makes its sum unknowable, so it is skipped.
    fn package_sums(&mut self, object: &Members<'_>) {
        let Some(packages) = member(object, "packages").and_then(Node::as_array) else {
            return;
        };
        let mut total: Option<Hundredths> = Some(0);
        for (index, package) in packages.iter().enumerate() {
            if !matches!(package, Node::Object(_)) {
                total = None;
                continue;
            }
            let amount = package.get("amount").and_then(hundredths);
            let fee = match package.get("userFee") {
                None | Some(Node::Null) => Some(0),
                Some(fee) => hundredths(fee),
            };
            total = match (total, amount, fee) {
                (Some(total), Some(amount), Some(fee)) => total.checked_add(amount + fee),
                _ => None,
            };
            let products = package.get("products").and_then(Node::as_array);
            let sum = products.and_then(|products| {
                products.iter().try_fold(0 as Hundredths, |sum, product| {
                    let quantity = product.get("quantity").and_then(Node::as_u64)?;
                    let price = product.get("price").and_then(hundredths)?;
                    sum.checked_add(price.checked_mul(Hundredths::from(quantity))?)
                })
            });
            if let (Some(amount), Some(sum)) = (amount, sum) {
                if amount != sum {
                    let package = Path::Index(&PACKAGES, index);
                    self.push(
                        &Path::Member(&package, "amount"),
                        Rule::PackageSum,
                        format!(
                            "{} is not the sum of products[].quantity × price ({})",
                            show(amount),
                            show(sum)
                        ),
                        AMOUNT_INFO,
                    );
                }
            }
        }
        let shipping = member(object, "options")
            .and_then(|options| options.get("shipping"))
            .and_then(|shipping| shipping.get("feeAmount"));
        let total = match shipping {
            None | Some(Node::Null) => total,
            Some(fee) => total.zip(hundredths(fee)).map(|(total, fee)| total + fee),
        };
        let amount = member(object, "amount").and_then(hundredths);
        if let (Some(amount), Some(total)) = (amount, total) {
            if amount != total {
                self.push(
                    &Path::Member(&Path::Root, "amount"),
                    Rule::AmountSum,
                    format!(
                        "{} is not the sum of packages[].amount + packages[].userFee + options.shipping.feeAmount ({})",
                        show(amount),
                        show(total)
                    ),
                    AMOUNT_INFO,
                );
            }
        }
    }
}

impl Kind {
    fn expected(&self) -> &'static str {
        match self {
            Kind::Object(_) | Kind::OpenObject => "an object",
            Kind::Array { .. } => "an array",
            Kind::Text { .. } | Kind::OneOf(_) | Kind::Currency => "a string",
            Kind::Amount(_) => "a number",
            Kind::Count => "a whole number above 0",
            Kind::Flag => "true or false",
        }
    }
}

/// A JSON number as the app wrote it, as far as serde_json keeps it: integers exactly;
/// other numbers through their shortest round-trip text (`1.5`, `100.0`), which has the
/// decimals the app wrote for any amount of up to 15 significant digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decimal {
    pub(super) hundredths: Option<Hundredths>,
    pub(super) places: u32,
    pub(super) negative: bool,
    /// Written with a decimal point or exponent (`100.0`), even if its value is whole.
    pub(super) written_as_float: bool,
}

impl Decimal {
    pub(super) fn of(number: &Number) -> Option<Decimal> {
        if let Some(whole) = number.as_i64() {
            return Some(Decimal {
                hundredths: Some(Hundredths::from(whole) * 100),
                places: 0,
                negative: whole < 0,
                written_as_float: false,
            });
        }
        if let Some(whole) = number.as_u64() {
            return Some(Decimal {
                hundredths: Some(Hundredths::from(whole) * 100),
                places: 0,
                negative: false,
                written_as_float: false,
            });
        }
        let text = number.to_string();
        if text.contains(['e', 'E']) {
            return None;
        }
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let fraction = fraction.trim_end_matches('0');
        let places = u32::try_from(fraction.len()).ok()?;
        let hundredths = if places <= 2 {
            let whole: Hundredths = whole.parse().ok()?;
            let cents: Hundredths = format!("{fraction:0<2}").parse().ok()?;
            let value = whole.checked_mul(100)?.checked_add(cents)?;
            Some(if negative { -value } else { value })
        } else {
            None
        };
        Some(Decimal {
            hundredths,
            places,
            negative,
            written_as_float: true,
        })
    }

    pub(super) fn is_zero(&self) -> bool {
        self.hundredths == Some(0)
    }
}

/// An amount in hundredths, when it is exact.
fn hundredths(value: &Node<'_>) -> Option<Hundredths> {
    match value {
        Node::Number(number) => Decimal::of(number)?.hundredths,
        _ => None,
    }
}

/// Hundredths written back as the app would: `150`, `1.5`, `1.05`.
fn show(value: Hundredths) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let value = value.unsigned_abs();
    match value % 100 {
        0 => format!("{sign}{}", value / 100),
        cents if cents % 10 == 0 => format!("{sign}{}.{}", value / 100, cents / 10),
        cents => format!("{sign}{}.{cents:02}", value / 100),
    }
}

/// `$.name`, or `$["odd key"]` for a key that is not a plain identifier; an app's key
/// is cut short and stripped to printable ASCII so a message or log line stays one line.
fn member_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= MAX_QUOTED_KEY
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        return format!("{parent}.{key}");
    }
    let mut quoted: String = key
        .chars()
        .take(MAX_QUOTED_KEY)
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if key.chars().count() > MAX_QUOTED_KEY {
        quoted.push_str("...");
    }
    format!("{parent}[\"{quoted}\"]")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn decimal(text: &str) -> Option<Decimal> {
        let value: Value = serde_json::from_str(text).unwrap();
        Decimal::of(value.as_number().unwrap())
    }

    #[test]
    fn decimals_keep_what_the_app_wrote() {
        let d = decimal("100").unwrap();
        assert_eq!(
            (d.hundredths, d.places, d.written_as_float),
            (Some(10000), 0, false)
        );
        let d = decimal("100.0").unwrap();
        assert_eq!(
            (d.hundredths, d.places, d.written_as_float),
            (Some(10000), 0, true)
        );
        let d = decimal("12.34").unwrap();
        assert_eq!((d.hundredths, d.places), (Some(1234), 2));
        let d = decimal("0.1").unwrap();
        assert_eq!((d.hundredths, d.places), (Some(10), 1));
        let d = decimal("1.005").unwrap();
        assert_eq!((d.hundredths, d.places), (None, 3));
        let d = decimal("-2.5").unwrap();
        assert_eq!((d.hundredths, d.negative), (Some(-250), true));
        assert_eq!(decimal("1e300"), None);
        assert_eq!(decimal("18446744073709551616000"), None);
        assert_eq!(
            decimal("18446744073709551615").unwrap().hundredths,
            Some(1_844_674_407_370_955_161_500)
        );
    }

    #[test]
    fn amounts_are_shown_as_written() {
        assert_eq!(show(15000), "150");
        assert_eq!(show(150), "1.5");
        assert_eq!(show(105), "1.05");
        assert_eq!(show(-250), "-2.5");
    }

    #[test]
    fn odd_keys_are_quoted_short_and_printable() {
        assert_eq!(member_path("$", "userId"), "$.userId");
        assert_eq!(member_path("$", "a b"), "$[\"a b\"]");
        assert_eq!(member_path("$", "x\ny\"z"), "$[\"x?y?z\"]");
        let long = "k".repeat(100);
        assert!(member_path("$", &long).ends_with("...\"]"));
        assert!(member_path("$", &long).len() < 60);
    }
}
