//! The fast path of pre-validation: one streaming pass over the body's bytes that says
//! "this body has no finding" without building a tree (issue 20).
//!
//! Nearly every body an app sends passes. For those, [`passes`] reads the body once with
//! the strict byte reader of `scan`, checking each value against its [`Kind`] as it is
//! read: no tree, no key or string copied, no `Vec` (a number that is not plain digits
//! goes through `serde_json`'s own number parser and the walk's `Decimal`, so a float
//! amount reads exactly as the walk reads it; that is the one allocation left). It
//! answers only `true` (sure: no finding) or `false` (a finding, or anything it does not
//! decide by itself: a key sent twice, an unknown or escaped key, a value of the wrong
//! type, an escaped currency or enum value, JSON the reader does not accept). On `false`,
//! the walk over the borrowed tree (`schema`) runs as before and writes the findings, so
//! every message, path and order is the walk's.
//!
//! The one rule: `passes` may say `false` for a clean body (then the walk finds nothing,
//! at the walk's cost), never `true` for a body with a finding. Debug builds check it on
//! every call (`schema::check`), so the whole test suite runs both. And its `true` means
//! the body is JSON as `serde_json::from_str::<IgnoredAny>` reads it (the reader is at
//! least as strict, see `scan`), which lets the proxy skip that check.
//!
//! What it mirrors from the walk: a field that is absent or `null` is missing; the
//! body's `currency` sets the decimal places every amount may have (known only at the
//! end: amounts are tallied as read); the package sums (`Check::PackageSums`) from each
//! package's `amount`, `userFee` and `products[].quantity × price`, and the body's
//! `amount` against the packages and `options.shipping.feeAmount`.

use super::scan::{Cursor, Number};
use super::schema::{Check, Decimal, Field, Hundredths, Kind, Min, Table, CURRENCIES};

/// Whether `body` surely has no finding against `table` (see the module doc).
pub(super) fn passes(table: &Table, body: &[u8]) -> bool {
    let mut pass = Pass {
        cursor: Cursor::new(body),
        tally: Tally::default(),
    };
    let Some(root) = pass.root(table.fields) else {
        return false;
    };
    let tally = &pass.tally;
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

/// What one value other than an object or array of rules was, as far as the sums need
/// it (kept small: it is returned for every value).
enum Seen {
    /// `null`: the same as absent for a member.
    Null,
    /// An amount, in exact hundredths when it has any.
    Amount(Option<Hundredths>),
    Count(u64),
    /// The decimal places of a currency LINE Pay takes.
    Currency(u32),
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

/// The reader and what it has tallied so far. Every `None` stops the pass: the walk
/// decides.
struct Pass<'a> {
    cursor: Cursor<'a>,
    tally: Tally,
}

impl Pass<'_> {
    /// The body: one object of `fields`, then nothing but whitespace.
    fn root(&mut self, fields: &'static [Field]) -> Option<Facts> {
        if self.cursor.peek()? != b'{' {
            return None;
        }
        let mut facts = Facts::default();
        self.object(fields, true, &mut facts)?;
        self.cursor.at_end().then_some(facts)
    }

    /// One value of `kind`; an object or array of rules is read by the caller
    /// (`object`, `array`), which keeps what it needs of it.
    fn value(&mut self, kind: &'static Kind) -> Option<Seen> {
        match (self.cursor.peek()?, kind) {
            (b'n', _) => {
                self.cursor.literal(b"null")?;
                Some(Seen::Null)
            }
            (b't', Kind::Flag) => {
                self.cursor.literal(b"true")?;
                Some(Seen::Other)
            }
            (b'f', Kind::Flag) => {
                self.cursor.literal(b"false")?;
                Some(Seen::Other)
            }
            (b'"', _) => self.text(kind),
            (b'{', Kind::OpenObject) => {
                self.cursor.skip_value()?;
                Some(Seen::Other)
            }
            (b'-' | b'0'..=b'9', Kind::Amount(min)) => {
                let number = self.cursor.number()?;
                self.amount(number, *min)
            }
            (b'-' | b'0'..=b'9', Kind::Count) => match self.cursor.number()?.whole {
                // What `serde_json::Number::as_u64` answers: plain digits only.
                Some(count) if count > 0 => Some(Seen::Count(count)),
                _ => None,
            },
            _ => None,
        }
    }

    fn text(&mut self, kind: &Kind) -> Option<Seen> {
        let text = self.cursor.string()?;
        match kind {
            // Required strings must not be empty (a member's `required`, or an item);
            // an empty optional string passes the walk: let the walk say so.
            Kind::Text { max } if text.chars > 0 && text.chars <= *max => Some(Seen::Other),
            // An escaped value is compared decoded by the walk: let it.
            Kind::OneOf(allowed) if !text.escaped => allowed
                .iter()
                .any(|known| known.as_bytes() == text.raw)
                .then_some(Seen::Other),
            Kind::Currency if !text.escaped => CURRENCIES
                .iter()
                .find(|(known, _)| known.as_bytes() == text.raw)
                .map(|(_, places)| Seen::Currency(*places)),
            _ => None,
        }
    }

    fn amount(&mut self, number: Number<'_>, min: Min) -> Option<Seen> {
        let decimal = match number.whole {
            // What `Decimal::of` makes of the `u64` serde_json would read.
            Some(whole) => Decimal {
                hundredths: Some(Hundredths::from(whole) * 100),
                places: 0,
                negative: false,
                written_as_float: false,
            },
            // Anything else (`-5`, `-0`, `1.50`, `1e2`, past `u64`) is read by the
            // walk's own parser, so its value and its places are the walk's exactly.
            None => Decimal::of(&serde_json::from_slice(number.raw).ok()?)?,
        };
        let below = match min {
            Min::Positive(_) => decimal.negative || decimal.is_zero(),
            Min::Zero => decimal.negative && !decimal.is_zero(),
        };
        if below {
            return None;
        }
        self.tally.most_places = self.tally.most_places.max(decimal.places);
        self.tally.any_float |= decimal.written_as_float;
        Some(Seen::Amount(decimal.hundredths))
    }

    /// An object of `fields`, its `{` next; what the sums need of it goes to `facts`
    /// (filled in place: it is too big to return by value at every level).
    fn object(&mut self, fields: &'static [Field], root: bool, facts: &mut Facts) -> Option<()> {
        self.cursor.eat(b'{')?;
        if fields.len() > 64 {
            return None;
        }
        let mut present: u64 = 0;
        let mut next = 0;
        if !self.cursor.closes(b'}')? {
            loop {
                // Keys come in the order of the rules nearly always: the fields after the
                // last one are tried first. A key that is none of the fields, or is written
                // with an escape (the walk compares keys decoded), is the walk's.
                let is_key =
                    |cursor: &mut Cursor<'_>, field: &Field| cursor.is_key(field.name.as_bytes());
                let later = fields.get(next..).unwrap_or_default();
                let index = match later
                    .iter()
                    .position(|field| is_key(&mut self.cursor, field))
                {
                    Some(offset) => next + offset,
                    None => fields
                        .iter()
                        .position(|field| is_key(&mut self.cursor, field))?,
                };
                let field = &fields[index];
                self.cursor.take_key(field.name.len())?;
                next = index + 1;
                let bit = 1u64 << index;
                if present & bit != 0 {
                    // Sent twice: the walk takes the last one; let it.
                    return None;
                }
                present |= bit;
                let null = match &field.kind {
                    Kind::Object(inner) if self.cursor.peek()? == b'{' => {
                        let mut inner_facts = Facts::default();
                        self.object(inner, false, &mut inner_facts)?;
                        let inner = inner_facts;
                        match field.name {
                            "shipping" => facts.shipping_fee = inner.fee_amount,
                            "options" => facts.shipping_fee = inner.shipping_fee,
                            _ => {}
                        }
                        false
                    }
                    Kind::Array { item, min } if self.cursor.peek()? == b'[' => {
                        let items = self.array(item, *min)?;
                        match field.name {
                            "products" => facts.products = Some(items.product_sum),
                            "packages" => facts.packages = Some(items.packages),
                            _ => {}
                        }
                        false
                    }
                    kind => match self.value(kind)? {
                        Seen::Null => true,
                        Seen::Amount(value) => {
                            match field.name {
                                "amount" => facts.amount = Some(value),
                                "userFee" => facts.user_fee = Some(value),
                                "price" => facts.price = Some(value),
                                "feeAmount" => facts.fee_amount = Some(value),
                                _ => {}
                            }
                            false
                        }
                        Seen::Count(count) => {
                            if field.name == "quantity" {
                                facts.quantity = Some(count);
                            }
                            false
                        }
                        Seen::Currency(places) => {
                            if root && field.name == "currency" {
                                self.tally.scale = Some(places);
                            }
                            false
                        }
                        Seen::Other => false,
                    },
                };
                if null {
                    if field.required {
                        return None;
                    }
                    present &= !bit;
                }
                if !self.cursor.more(b'}')? {
                    break;
                }
            }
        }
        let missing = fields
            .iter()
            .enumerate()
            .any(|(index, field)| field.required && present & (1u64 << index) == 0);
        (!missing).then_some(())
    }

    /// An array of `item`s, at least `min`, its `[` next.
    fn array(&mut self, item: &'static Kind, min: usize) -> Option<Items> {
        self.cursor.eat(b'[')?;
        let mut items = Items::new();
        let mut count = 0;
        if !self.cursor.closes(b']')? {
            loop {
                match item {
                    Kind::Object(fields) if self.cursor.peek()? == b'{' => {
                        let mut facts = Facts::default();
                        self.object(fields, false, &mut facts)?;
                        items.add(&facts);
                    }
                    // An item is required: `null` is the wrong type.
                    _ => match self.value(item)? {
                        Seen::Null => return None,
                        _ => items.add(&Facts::default()),
                    },
                }
                count += 1;
                if !self.cursor.more(b']')? {
                    break;
                }
            }
        }
        (count >= min).then_some(items)
    }
}
