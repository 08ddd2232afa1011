//! The fast path of pre-validation: one streaming pass over the body's bytes that says
//! "this body has no finding" without building a tree (issue 20).
//!
//! Nearly every body an app sends passes. For those, [`passes`] reads the body once with
//! `serde_json`'s parser through typed `Visitor`s that check each value against its
//! [`Kind`] as it is read: no tree, no key or string copied, no `Vec` (a float amount's
//! decimals are read through its text, the one allocation left). It answers only
//! `true` (sure: no finding) or `false` (a finding, or anything it does not decide by
//! itself: a key sent twice, an unknown key, a value of the wrong type, JSON that does
//! not parse). On `false`, the walk over the borrowed tree (`schema`) runs as before and
//! writes the findings, so every message, path and order is the walk's.
//!
//! The one rule: `passes` may say `false` for a clean body (then the walk finds nothing,
//! at the walk's cost), never `true` for a body with a finding. Debug builds check it on
//! every call (`schema::check`), so the whole test suite runs both.
//!
//! What it mirrors from the walk: a field that is absent or `null` is missing; the
//! body's `currency` sets the decimal places every amount may have (known only at the
//! end: amounts are tallied as read); the package sums (`Check::PackageSums`) from each
//! package's `amount`, `userFee` and `products[].quantity × price`, and the body's
//! `amount` against the packages and `options.shipping.feeAmount`.

use super::schema::{Check, Decimal, Field, Hundredths, Kind, Min, Table, CURRENCIES};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::fmt;

/// Whether `body` surely has no finding against `table` (see the module doc).
pub(super) fn passes(table: &Table, body: &[u8]) -> bool {
    // The request path has checked the body is UTF-8; reading it as a `str` spares
    // serde_json a UTF-8 check of every string it meets (most of its time on a body
    // of short strings, by callgrind).
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let mut tally = Tally::default();
    let mut reader = serde_json::Deserializer::from_str(text);
    let seed = Value {
        kind: &Kind::Object(&[]),
        fields: Some(table.fields),
        root: true,
        tally: &mut tally,
    };
    let Ok(Seen::Object(root)) = seed.deserialize(&mut reader) else {
        return false;
    };
    if reader.end().is_err() {
        return false;
    }
    let scale_holds = match tally.scale {
        Some(0) => tally.most_places == 0 && !tally.any_float,
        Some(places) => tally.most_places <= places,
        None => true,
    };
    scale_holds && (!table.checks.contains(&Check::PackageSums) || sums_hold(&root))
}

/// The walk's `package_sums`, on what was tallied.
fn sums_hold(root: &Facts) -> bool {
    let Some(packages) = root.packages else {
        return true;
    };
    if packages.mismatch {
        return false;
    }
    let total = match root.shipping_fee {
        None => packages.total,
        Some(fee) => packages.total.zip(fee).map(|(total, fee)| total + fee),
    };
    match (root.amount.flatten(), total) {
        (Some(amount), Some(total)) => amount == total,
        _ => true,
    }
}

/// What the whole body tells, gathered as it is read.
#[derive(Default)]
struct Tally {
    /// The decimal places of the body's `currency`.
    scale: Option<u32>,
    /// The most decimal places of any amount, and whether one was written as a float.
    most_places: u32,
    any_float: bool,
}

/// What one value was, as far as the sums need it.
enum Seen {
    /// `null`: the same as absent for a member.
    Null,
    /// An amount, in exact hundredths when it has any.
    Amount(Option<Hundredths>),
    Count(u64),
    /// The decimal places of a currency LINE Pay takes.
    Currency(u32),
    Object(Facts),
    Array(Items),
    Other,
}

/// The members of an object the sums read (`None`: absent or `null`).
#[derive(Default, Clone, Copy)]
struct Facts {
    amount: Option<Option<Hundredths>>,
    user_fee: Option<Option<Hundredths>>,
    quantity: Option<u64>,
    price: Option<Option<Hundredths>>,
    fee_amount: Option<Option<Hundredths>>,
    /// `products`: Σ quantity × price, when every product has both.
    products: Option<Option<Hundredths>>,
    /// `shipping.feeAmount` (on `options`), or `options.shipping.feeAmount` (on the body).
    shipping_fee: Option<Option<Hundredths>>,
    packages: Option<Packages>,
}

/// An array's items read as products and as packages (only the member's name says
/// which it is).
#[derive(Clone, Copy)]
struct Items {
    /// Σ quantity × price of the items.
    product_sum: Option<Hundredths>,
    packages: Packages,
}

/// Σ (amount + userFee) of the items, and whether one's amount is not its products' sum.
#[derive(Clone, Copy)]
struct Packages {
    total: Option<Hundredths>,
    mismatch: bool,
}

impl Items {
    fn new() -> Items {
        Items {
            product_sum: Some(0),
            packages: Packages {
                total: Some(0),
                mismatch: false,
            },
        }
    }

    fn add(&mut self, item: &Facts) {
        self.product_sum = self.product_sum.and_then(|sum| {
            let quantity = item.quantity?;
            let price = item.price.flatten()?;
            sum.checked_add(price.checked_mul(Hundredths::from(quantity))?)
        });
        let amount = item.amount.flatten();
        let fee = item.user_fee.unwrap_or(Some(0));
        self.packages.total = match (self.packages.total, amount, fee) {
            (Some(total), Some(amount), Some(fee)) => total.checked_add(amount + fee),
            _ => None,
        };
        if let (Some(amount), Some(sum)) = (amount, item.products.flatten()) {
            self.packages.mismatch |= amount != sum;
        }
    }
}

/// Stops the pass: the walk decides.
fn undecided<E: de::Error>() -> E {
    E::custom("pre-validation: not decided by the fast pass")
}

/// One value of `kind` (`fields`: the members of the root object).
struct Value<'t> {
    kind: &'static Kind,
    fields: Option<&'static [Field]>,
    root: bool,
    tally: &'t mut Tally,
}

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = Seen;

    fn deserialize<D: de::Deserializer<'de>>(self, reader: D) -> Result<Seen, D::Error> {
        reader.deserialize_any(self)
    }
}

impl Value<'_> {
    fn amount<E: de::Error>(self, number: &Number, min: Min) -> Result<Seen, E> {
        let decimal = Decimal::of(number).ok_or_else(undecided)?;
        let below = match min {
            Min::Positive(_) => decimal.negative || decimal.is_zero(),
            Min::Zero => decimal.negative && !decimal.is_zero(),
        };
        if below {
            return Err(undecided());
        }
        self.tally.most_places = self.tally.most_places.max(decimal.places);
        self.tally.any_float |= decimal.written_as_float;
        Ok(Seen::Amount(decimal.hundredths))
    }

    fn number<E: de::Error>(self, number: Number) -> Result<Seen, E> {
        match self.kind {
            Kind::Amount(min) => self.amount(&number, *min),
            Kind::Count => match number.as_u64() {
                Some(count) if count > 0 => Ok(Seen::Count(count)),
                _ => Err(undecided()),
            },
            _ => Err(undecided()),
        }
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = Seen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the route's rules")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Seen, E> {
        Ok(Seen::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Seen, E> {
        Ok(Seen::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Seen, E> {
        match self.kind {
            Kind::Flag => Ok(Seen::Other),
            _ => Err(undecided()),
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Seen, E> {
        self.number(value.into())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Seen, E> {
        self.number(value.into())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Seen, E> {
        // As the tree reads it: a number that is not finite would be `null`.
        self.number(Number::from_f64(value).ok_or_else(undecided)?)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Seen, E> {
        match self.kind {
            Kind::Text { max } => {
                // Required strings must not be empty (a member's `required`, or an item).
                if text.is_empty() || text.chars().count() > *max {
                    // An empty optional string passes the walk; let the walk say so.
                    return Err(undecided());
                }
                Ok(Seen::Other)
            }
            Kind::OneOf(allowed) if allowed.contains(&text) => Ok(Seen::Other),
            Kind::Currency => CURRENCIES
                .iter()
                .find(|(known, _)| *known == text)
                .map(|(_, places)| Seen::Currency(*places))
                .ok_or_else(undecided),
            _ => Err(undecided()),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
        let fields: &'static [Field] = match (self.fields, self.kind) {
            (Some(fields), _) => fields,
            (None, Kind::Object(fields)) => fields,
            (None, Kind::OpenObject) => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Seen::Other);
            }
            _ => return Err(undecided()),
        };
        if fields.len() > 64 {
            return Err(undecided());
        }
        let mut present: u64 = 0;
        let mut facts = Facts::default();
        while let Some(index) = map.next_key_seed(Member(fields))? {
            let bit = 1u64 << index;
            if present & bit != 0 {
                // Sent twice: the walk takes the last one; let it.
                return Err(undecided());
            }
            present |= bit;
            let field = &fields[index];
            let seen = map.next_value_seed(Value {
                kind: &field.kind,
                fields: None,
                root: false,
                tally: self.tally,
            })?;
            match (field.name, seen) {
                (_, Seen::Null) if field.required => return Err(undecided()),
                (_, Seen::Null) => present &= !bit,
                ("amount", Seen::Amount(value)) => facts.amount = Some(value),
                ("userFee", Seen::Amount(value)) => facts.user_fee = Some(value),
                ("price", Seen::Amount(value)) => facts.price = Some(value),
                ("feeAmount", Seen::Amount(value)) => facts.fee_amount = Some(value),
                ("quantity", Seen::Count(count)) => facts.quantity = Some(count),
                ("currency", Seen::Currency(places)) if self.root => {
                    self.tally.scale = Some(places);
                }
                ("products", Seen::Array(items)) => facts.products = Some(items.product_sum),
                ("packages", Seen::Array(items)) => facts.packages = Some(items.packages),
                ("shipping", Seen::Object(shipping)) => facts.shipping_fee = shipping.fee_amount,
                ("options", Seen::Object(options)) => facts.shipping_fee = options.shipping_fee,
                _ => {}
            }
        }
        let missing = fields
            .iter()
            .enumerate()
            .any(|(index, field)| field.required && present & (1u64 << index) == 0);
        if missing {
            return Err(undecided());
        }
        Ok(Seen::Object(facts))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen, A::Error> {
        let Kind::Array { item, min } = self.kind else {
            return Err(undecided());
        };
        let mut items = Items::new();
        let mut count = 0;
        while let Some(seen) = seq.next_element_seed(Value {
            kind: item,
            fields: None,
            root: false,
            tally: self.tally,
        })? {
            count += 1;
            match seen {
                // An item is required: `null` is the wrong type.
                Seen::Null => return Err(undecided()),
                Seen::Object(facts) => items.add(&facts),
                _ => items.add(&Facts::default()),
            }
        }
        if count < *min {
            return Err(undecided());
        }
        Ok(Seen::Array(items))
    }
}

/// An object's key: the index of its field, or the end of the pass for an unknown one.
struct Member(&'static [Field]);

impl<'de> DeserializeSeed<'de> for Member {
    type Value = usize;

    fn deserialize<D: de::Deserializer<'de>>(self, reader: D) -> Result<usize, D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Member {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|field| field.name == key)
            .ok_or_else(undecided)
    }
}
