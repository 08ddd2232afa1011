//! The payment page behind `paymentUrl.web`: what a buyer's browser opens between the
//! shop's `request` and its `confirmUrl`, so a shop can test its pages, not only its
//! server calls.
//!
//! `GET {PATH}{transactionReserveId}` shows the order (amount, currency, packages,
//! products) with Approve and Cancel, and a choice of payment method where the
//! reservation allows one. The form posts back to the same address; an action is
//! taken only by POST, only with the payment's own token (so another site cannot
//! make a visitor's browser approve or cancel: CSRF), and only while the reservation
//! is open. The browser is then sent (303) to the reservation's own `confirmUrl` with
//! `transactionId` and `orderId` added to its query, or to its `cancelUrl`: never to
//! an address taken from the request to the page, so it is no open redirect.
//!
//! Plain HTML, no script, no external asset; every text the merchant sent is escaped.
//! The page is under `/__emulator/`, so it is no LINE Pay path (the sidecar never
//! forwards to it) and, like the control API, not behind the IP whitelist: the
//! whitelist is about the shop's servers, the page is for its buyers' browsers.

use crate::input::{query_pairs, ConfirmUrlType};
use crate::ledger::{Method, PageAction, PageExit, PageRefusal, PageState, PageView};
use crate::Emulator;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;
use std::fmt::Write as _;

/// Where the pages live: `{PATH}{transactionReserveId}`.
pub(crate) const PATH: &str = "/__emulator/pay/";

/// Answers a GET (the page) or a POST (the buyer's action) under [`PATH`].
pub(crate) fn handle(
    emulator: &Emulator,
    method: &http::Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Bytes> {
    let reserve_id = path.strip_prefix(PATH).unwrap_or_default();
    match *method {
        http::Method::GET | http::Method::HEAD => match emulator.page_view(reserve_id) {
            Some(view) => html(StatusCode::OK, &page(reserve_id, &view)),
            None => not_found(),
        },
        http::Method::POST => act(emulator, reserve_id, headers, body),
        _ => {
            let mut response = message_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
                "The payment page takes GET (to show it) and POST (its form) only.",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            response
        }
    }
}

/// A form post: `token`, `action` (`approve` or `cancel`) and, to approve, `method`.
fn act(emulator: &Emulator, reserve_id: &str, headers: &HeaderMap, body: &[u8]) -> Response<Bytes> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| {
            value
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let fields = std::str::from_utf8(body)
        .ok()
        .filter(|_| is_form)
        .and_then(|body| query_pairs(Some(body)).ok());
    let Some(fields) = fields else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Not a form",
            "Send the payment page's own form (application/x-www-form-urlencoded).",
        );
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let action = match (field("action"), field("method")) {
        (Some("cancel"), _) => PageAction::Cancel,
        (Some("approve"), Some("BALANCE")) => PageAction::Approve(Method::Balance),
        (Some("approve"), Some("CREDIT_CARD")) => PageAction::Approve(Method::CreditCard),
        // One method offered: the form has no choice to send.
        (Some("approve"), None) => match emulator.page_view(reserve_id) {
            Some(view) if view.methods.len() == 1 => PageAction::Approve(view.methods[0]),
            _ => return method_not_offered(),
        },
        _ => {
            return message_page(
                StatusCode::BAD_REQUEST,
                "Unknown action",
                "The form's action must be approve or cancel.",
            )
        }
    };
    let token = field("token").unwrap_or_default();
    match emulator.page_action(reserve_id, token, action) {
        Ok(exit) => leave(emulator, exit),
        Err(PageRefusal::NotFound) => not_found(),
        Err(PageRefusal::BadToken) => message_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form does not belong to this payment page. Open the payment page again \
             from the shop.",
        ),
        Err(PageRefusal::Closed(state)) => {
            message_page(StatusCode::CONFLICT, "Nothing to do", closed_text(state))
        }
        Err(PageRefusal::MethodNotOffered) => method_not_offered(),
    }
}

/// Sends the browser back to the shop as the reservation asked.
fn leave(emulator: &Emulator, exit: PageExit) -> Response<Bytes> {
    match exit {
        PageExit::Approved {
            redirect,
            transaction_id,
            order_id,
        } => {
            let target = with_query(
                &redirect.confirm_url,
                &[
                    ("transactionId", &transaction_id.to_string()),
                    ("orderId", &order_id),
                ],
            );
            match redirect.confirm_url_type {
                ConfirmUrlType::Client => see_other(&target),
                ConfirmUrlType::Server => {
                    emulator.notify_confirm_url(target);
                    message_page(
                        StatusCode::OK,
                        "Payment approved",
                        "The payment is approved. LINE Pay tells the shop's server \
                         (confirmUrlType SERVER); go back to the shop.",
                    )
                }
                ConfirmUrlType::None => message_page(
                    StatusCode::OK,
                    "Payment approved",
                    "The payment is approved (confirmUrlType NONE: the shop checks the \
                     payment status itself); go back to the shop.",
                ),
            }
        }
        PageExit::Cancelled { redirect } => match &redirect.cancel_url {
            Some(url) => see_other(url),
            None => message_page(
                StatusCode::OK,
                "Payment cancelled",
                "The payment is cancelled. The shop gave no cancelUrl; go back to the shop.",
            ),
        },
    }
}

/// A 303 to one of the reservation's own URLs. Only `http` and `https` targets are
/// followed: anything else the merchant sent (`javascript:`, a relative path) is
/// shown, not followed.
fn see_other(target: &str) -> Response<Bytes> {
    let lower = target.to_ascii_lowercase();
    let web = lower.starts_with("http://") || lower.starts_with("https://");
    match HeaderValue::from_str(target) {
        Ok(location) if web => {
            let mut response = html(
                StatusCode::SEE_OTHER,
                &format!(
                    "<p>Back to the shop: <a href=\"{0}\">{0}</a></p>",
                    escape(target)
                ),
            );
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        _ => message_page(
            StatusCode::OK,
            "Cannot return to the shop",
            "The shop's redirect URL is not an absolute http or https URL, so the \
             emulator does not send the browser there. Fix redirectUrls in the request.",
        ),
    }
}

/// `url` with `pairs` added to its query (before any `#fragment`).
pub(crate) fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let mut out = base.to_owned();
    for (key, value) in pairs {
        let separator = if out.contains('?') {
            if out.ends_with('?') || out.ends_with('&') {
                ""
            } else {
                "&"
            }
        } else {
            "?"
        };
        let value = percent_encoding::utf8_percent_encode(value, QUERY_VALUE);
        let _ = write!(out, "{separator}{key}={value}");
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Everything but unreserved characters is encoded in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn method_not_offered() -> Response<Bytes> {
    message_page(
        StatusCode::BAD_REQUEST,
        "Choose a payment method",
        "Choose one of the payment methods the page offers.",
    )
}

fn not_found() -> Response<Bytes> {
    message_page(
        StatusCode::NOT_FOUND,
        "No such payment",
        "The emulator has no payment page at this address (it keeps payments in memory: \
         a restart forgets them).",
    )
}

fn closed_text(state: PageState) -> &'static str {
    match state {
        PageState::Open => "This payment is waiting for the buyer.",
        PageState::Cancelled => "This payment was cancelled. Go back to the shop to pay again.",
        PageState::Expired => {
            "This payment has expired: it was not completed within 20 minutes. Go back to \
             the shop to pay again."
        }
        PageState::Failed => "This payment failed. Go back to the shop to pay again.",
        PageState::Confirmed => "This payment is already complete.",
    }
}

fn method_label(method: Method) -> &'static str {
    match method {
        Method::Balance => "LINE Pay Money (balance)",
        Method::CreditCard => "Credit card ************1234",
    }
}

fn method_value(method: Method) -> &'static str {
    match method {
        Method::Balance => "BALANCE",
        Method::CreditCard => "CREDIT_CARD",
    }
}

/// The page of one reservation.
fn page(reserve_id: &str, view: &PageView) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Pay {amount} {currency}</h1>\n<section aria-labelledby=\"order\">\n\
         <h2 id=\"order\">Order <span id=\"order-id\">{order}</span></h2>\n\
         <p>Amount: <strong id=\"amount\">{amount} {currency}</strong></p>\n",
        amount = view.amount,
        currency = view.currency.as_str(),
        order = escape(&view.order_id),
    );
    order_lines(&mut body, view);
    body.push_str("</section>\n");
    if view.state != PageState::Open {
        let _ = writeln!(
            body,
            "<p id=\"state\" role=\"status\">{}</p>",
            closed_text(view.state)
        );
        return document(&format!("Pay {} {}", view.amount, view.currency), &body);
    }
    let _ = writeln!(
        body,
        "<form method=\"post\" action=\"{PATH}{reserve}\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">",
        reserve = escape(reserve_id),
        token = escape(&view.token),
    );
    if view.methods.len() > 1 {
        body.push_str("<fieldset>\n<legend>Payment method</legend>\n");
        for (index, method) in view.methods.iter().enumerate() {
            let value = method_value(*method);
            let id = format!("method-{}", value.to_ascii_lowercase().replace('_', "-"));
            let _ = writeln!(
                body,
                "<div><input type=\"radio\" name=\"method\" id=\"{id}\" value=\"{value}\"{checked}> \
                 <label for=\"{id}\">{label}</label></div>",
                checked = if index == 0 { " checked" } else { "" },
                label = method_label(*method),
            );
        }
        body.push_str("</fieldset>\n");
    } else if let Some(method) = view.methods.first() {
        let _ = writeln!(
            body,
            "<p>Payment method: {} (the only one this payment allows)</p>",
            method_label(*method)
        );
    }
    let after = match view.confirm_url_type {
        ConfirmUrlType::Client => "Approving takes you back to the shop.",
        ConfirmUrlType::Server => "Approving tells the shop's server (confirmUrlType SERVER).",
        ConfirmUrlType::None => "The shop checks the payment status itself (confirmUrlType NONE).",
    };
    let _ = writeln!(
        body,
        "<p>{after}</p>\n<div class=\"actions\">\n\
         <button type=\"submit\" id=\"approve\" name=\"action\" value=\"approve\" autofocus>Approve payment</button>\n\
         <button type=\"submit\" id=\"cancel\" name=\"action\" value=\"cancel\">Cancel</button>\n\
         </div>\n</form>"
    );
    document(&format!("Pay {} {}", view.amount, view.currency), &body)
}

/// The packages and their products (v3, v4), or the product name (v2).
fn order_lines(body: &mut String, view: &PageView) {
    let Some(Value::Array(packages)) = &view.packages else {
        let _ = writeln!(body, "<p>Product: {}</p>", escape(&view.product_name));
        return;
    };
    body.push_str("<ul class=\"packages\">\n");
    for package in packages {
        let text = |value: Option<&Value>| match value {
            Some(Value::String(text)) => escape(text),
            Some(Value::Number(number)) => number.to_string(),
            _ => String::new(),
        };
        let name = match package.get("name") {
            Some(Value::String(name)) if !name.is_empty() => escape(name),
            _ => text(package.get("id")),
        };
        let _ = writeln!(
            body,
            "<li>{name}: {} {}\n<ul>",
            text(package.get("amount")),
            view.currency.as_str()
        );
        for product in package
            .get("products")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                body,
                "<li class=\"product\">{} × {} at {} {}</li>",
                text(product.get("name")),
                text(product.get("quantity")),
                text(product.get("price")),
                view.currency.as_str()
            );
        }
        body.push_str("</ul></li>\n");
    }
    body.push_str("</ul>\n");
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response<Bytes> {
    html(
        status,
        &document(
            title,
            &format!(
                "<h1>{}</h1>\n<p id=\"state\" role=\"status\">{}</p>",
                escape(title),
                escape(text)
            ),
        ),
    )
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · LINE Pay emulator</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header><p class=\"banner\">LINE Pay emulator: a test double, no money moves.</p></header>\n\
         <main>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:1rem auto;padding:0 1rem;color:#111}\n\
.banner{background:#fff3cd;padding:.5rem;border:1px solid #c9a100}\n\
button{font-size:1rem;padding:.5rem 1rem;margin-right:.5rem}\n\
button:focus,input:focus{outline:3px solid #0b57d0;outline-offset:2px}\n\
#approve{background:#06c755;color:#000;border:1px solid #034}\n";

fn html(status: StatusCode, body: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script, no external asset, never framed (clickjacking), never cached (the
    // form carries the token), and no Referer leaks the page's address to the shop.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;
