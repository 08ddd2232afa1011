//! The route matcher's guards, through its public API, one rule a test: what a template
//! may declare and what a path parameter may hold. Written to kill the mutants that
//! survived issue #11's mutation run (`||` → `&&` in template parsing, the `-` and `_`
//! of plain segments); in a file of its own so that `src/route.rs` can change beside it.

use linepay_sidecar::route::{Allowlist, Match, Route, RouteTimeouts, TemplateError};
use std::time::Duration;

fn timeouts() -> RouteTimeouts {
    RouteTimeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(1),
    }
}

fn template(text: &str) -> Result<Route, TemplateError> {
    Route::new(http::Method::GET, text, timeouts())
}

#[test]
fn a_parameter_name_must_be_a_plain_nonempty_word() {
    for bad in [
        "/v3/{}/check",
        "/v3/{a b}/check",
        "/v3/{a.b}/check",
        "/v3/{a/check",
        "/v3/{a~b}/check",
        "/v3/{é}/check",
    ] {
        assert!(
            matches!(template(bad), Err(TemplateError::BadParam(_))),
            "{bad}: {:?}",
            template(bad).map(|r| r.template)
        );
    }
    assert!(template("/v3/{reg_Key-1}/check").is_ok());
}

#[test]
fn literal_segments_allow_letters_digits_dash_and_underscore_only() {
    assert!(template("/v3/pre-approved_Pay9/x").is_ok());
    for bad in ["/v3/a.b", "/v3/a~b", "/v3/a b", "/v3/a+b"] {
        assert!(
            matches!(template(bad), Err(TemplateError::BadCharacter(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        template("/v3/a}"),
        Err(TemplateError::BadParam(_))
    ));
    assert!(matches!(
        template("/v3//a"),
        Err(TemplateError::BadSegment(_))
    ));
    assert!(matches!(
        template("v3/a"),
        Err(TemplateError::NotAbsolute(_))
    ));
}

/// A parameter of a custom template (a name with no rule of its own, unlike
/// `transactionId`, `regKey` or `orderId`) holds letters, digits, `-` and `_`.
#[test]
fn a_path_parameter_holds_letters_digits_dash_and_underscore_only() {
    let list = Allowlist::new(vec![
        template("/v3/payments/custom/{ticket}/check").expect("template")
    ]);
    let find = |path: &str| list.find(&http::Method::GET, path);
    for good in ["RK9A8B7C6D5E", "RK-9", "RK_9", "-", "_"] {
        let path = format!("/v3/payments/custom/{good}/check");
        let Match::Allowed(route) = find(&path) else {
            panic!("{good} refused");
        };
        assert_eq!(route.param(&path, "ticket"), Some(good));
    }
    for bad in ["RK.9", "RK~9", "RK+9", "RK:9", "RK@9"] {
        let path = format!("/v3/payments/custom/{bad}/check");
        assert!(!matches!(find(&path), Match::Allowed(_)), "{bad} allowed");
    }
    // A regKey has its own, narrower rule: letters and digits.
    let list = Allowlist::new(vec![
        template("/v3/payments/preapprovedPay/{regKey}/check").expect("template")
    ]);
    let path = "/v3/payments/preapprovedPay/RK-9/check";
    assert!(!matches!(
        list.find(&http::Method::GET, path),
        Match::Allowed(_)
    ));
}
