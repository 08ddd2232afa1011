//! Validation of whole files: precedence, messages with their origin, the shipped examples.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::route::{ApiFamily, Signing, ONLINE_V2_ROUTES, ONLINE_V3_ROUTES, ONLINE_V4_ROUTES};

fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |key| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    }
}

const ENV: &[(&str, &str)] = &[
    (ENV_CHANNEL_ID, "1234567890"),
    (ENV_CHANNEL_SECRET, "s3cr3t-value"),
    // The journal's default directory is under it.
    ("HOME", "/home/shop"),
];

fn no_files(path: &Path) -> std::io::Result<Vec<u8>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    ))
}

fn check(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let raw = from_yaml_str(yaml).map_err(|e| ConfigError::one(e.in_file("sidecar.yaml")))?;
    validate(raw, "sidecar.yaml", &Overrides::default(), env, &no_files)
}

#[test]
fn defaults_with_only_env_credentials() {
    let config = check("", &env_with(ENV)).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        config.journal.path,
        PathBuf::from("/home/shop/.local/state/linepay-sidecar/journal.sqlite3")
    );
    assert_eq!(config.admin.calls, CallsAccess::Loopback);
    assert_eq!(
        config.upstream.url.to_string(),
        "https://sandbox-api-pay.line.me/"
    );
    assert_eq!(config.request.max_body_bytes, 65536);
    assert_eq!(config.credentials.channel_id, "1234567890");
    assert_eq!(config.credentials.channel_secret.expose(), b"s3cr3t-value");
    assert_eq!(
        config.allowlist.routes().len(),
        ONLINE_V3_ROUTES.len() + ONLINE_V4_ROUTES.len()
    );
    assert_eq!(config.allowlist.families(), &ApiFamily::DEFAULT);
    let confirm = config
        .allowlist
        .routes()
        .iter()
        .find(|r| r.template.ends_with("/confirm"))
        .unwrap();
    assert_eq!(confirm.timeouts.read, Duration::from_secs(40));
    assert_eq!(confirm.timeouts.connect, Duration::from_secs(5));
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let error = check(
        "listen: 127.0.0.1:9000\nupstrem:\n  url: https://x\n",
        &env_with(ENV),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("upstrem"), "{error}");
    assert!(error.contains("line 2") || error.contains(":2:"), "{error}");
}

#[test]
fn nested_unknown_key_is_rejected() {
    let error = check(
        "upstream:\n  url: https://x\n  timeout: 5s\n",
        &env_with(ENV),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("timeout"), "{error}");
    assert!(error.contains("line 3") || error.contains(":3:"), "{error}");
}

#[test]
fn secret_in_yaml_is_refused_without_echoing_it() {
    let error = check(
        "credentials:\n  channel_id: \"1\"\n  channel_secret: hunter2hunter2\n",
        &env_with(ENV),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("channel_secret_file"), "{error}");
    assert!(error.contains("sidecar.yaml:3"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn parse_errors_never_quote_neighbouring_lines() {
    let yaml = "upstream:\n  connect_timeout: 5\ncredentials:\n  channel_secret: hunter2hunter2\n";
    let error = check(yaml, &env_with(ENV)).unwrap_err().to_string();
    assert!(
        error.contains("sidecar.yaml:2: connect_timeout:"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn every_unit_rate_and_key_problem_of_a_file_is_reported_at_once() {
    let yaml = "\
upstrem: {}
upstream:
  connect_timeout: 5
  read_timeout: 3x
limits:
  global:
    rate: 50
  bogus: 1
request:
  max_body_bytes: 0
";
    let error = check(yaml, &env_with(ENV)).unwrap_err();
    let expected = [
        "sidecar.yaml:1: unknown key `upstrem`",
        "sidecar.yaml:3: connect_timeout: `5` needs a unit",
        "sidecar.yaml:4: read_timeout: `3x` has an unknown unit",
        "sidecar.yaml:7: rate: rate `50` needs a period",
        "sidecar.yaml:8: unknown key `bogus`",
        "sidecar.yaml:10: request.max_body_bytes: must be above 0",
    ];
    for problem in expected {
        assert!(
            error
                .problems
                .iter()
                .any(|found| found.starts_with(problem)),
            "{problem} is missing from:\n{error}"
        );
    }
    // A value that did not parse is unset, not replaced by a stand-in that could raise
    // problems of its own (a 1 s connect timeout against a read timeout, say).
    assert!(
        !error
            .problems
            .iter()
            .any(|found| found.contains("shorter than") || found.contains("is missing")),
        "{error}"
    );
    assert_eq!(error.problems.len(), expected.len(), "{error}");
}

#[test]
fn every_problem_from_a_file_starts_with_file_and_line() {
    let yaml = "\
credentials:
  channel_id: \"1\"
  channel_secret_file: /run/missing-secret
request:
  max_body_bytes: 0
  write_timeout: 0s
upstream:
  max_response_bytes: 0
admin:
  probe_interval: 0s
journal:
  max_calls: 0
";
    let error = check(yaml, &env_with(&[])).unwrap_err();
    let mut lines: Vec<u64> = error
        .problems
        .iter()
        .map(|problem| {
            let line = problem
                .strip_prefix("sidecar.yaml:")
                .and_then(|rest| rest.split_once(": "))
                .and_then(|(line, _)| line.parse().ok());
            line.unwrap_or_else(|| panic!("no file:line: prefix on {problem}\n(all: {error})"))
        })
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, [3, 5, 6, 8, 10, 12], "{error}");
    let syntax = check("listen: [\n", &env_with(ENV))
        .unwrap_err()
        .to_string();
    assert!(syntax.starts_with("sidecar.yaml:"), "{syntax}");
}

#[test]
fn plain_http_only_to_loopback() {
    assert!(check_upstream_url("http://127.0.0.1:9000").is_ok());
    assert!(check_upstream_url("http://127.0.0.2:9000").is_ok());
    assert!(check_upstream_url("http://[::1]:9000").is_ok());
    assert!(check_upstream_url("http://localhost:9000").is_ok());
    assert!(check_upstream_url("https://api-pay.line.me").is_ok());
    let error = check_upstream_url("http://api-pay.line.me").unwrap_err();
    assert!(error.contains("https://"), "{error}");
    assert!(check_upstream_url("http://10.0.0.1").is_err());
    assert!(check_upstream_url("ftp://127.0.0.1").is_err());
    assert!(check_upstream_url("https://api-pay.line.me/v3").is_err());
}

#[test]
fn missing_credentials_are_all_reported() {
    let error = check("", &env_with(&[("HOME", "/home/shop")])).unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
    assert!(error.to_string().contains(ENV_CHANNEL_ID));
    assert!(error.to_string().contains(ENV_CHANNEL_SECRET));
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let raw =
        from_yaml_str("credentials:\n  channel_id: \"42\"\n  channel_secret_file: /run/secret\n")
            .unwrap();
    let home = env_with(&[("HOME", "/home/shop")]);
    let config = validate(raw, "f", &Overrides::default(), &home, &|_| {
        Ok(b"from-file\n".to_vec())
    })
    .unwrap();
    assert_eq!(config.credentials.channel_secret.expose(), b"from-file");
    assert!(config.credentials.secret_source.contains("/run/secret"));
}

#[test]
fn flags_override_the_file() {
    let raw = from_yaml_str("listen: 127.0.0.1:1\nupstream:\n  url: https://a.example\n").unwrap();
    let overrides = Overrides::default()
        .with("listen", "127.0.0.1:2")
        .with("upstream.url", "https://b.example")
        .with("upstream.connect_timeout", "1s")
        .with("upstream.read_timeout", "3s");
    let config = validate(raw, "f", &overrides, &env_with(ENV), &no_files).unwrap();
    assert_eq!(config.listen.port(), 2);
    assert_eq!(config.upstream.url.host(), Some("b.example"));
    assert!(config
        .allowlist
        .routes()
        .iter()
        .all(|r| r.timeouts.read == Duration::from_secs(3)));
}

#[test]
fn per_route_timeouts_and_custom_allowlist() {
    let yaml = r#"
routes:
  v2_legacy: true
  allow:
    - method: POST
      path: /v3/payments/request
      read_timeout: 7s
    - method: GET
      path: /v3/payments
  timeouts:
    "GET /v3/payments":
      connect_timeout: 250ms
"#;
    let config = check(yaml, &env_with(ENV)).unwrap();
    let routes = config.allowlist.routes();
    // `routes.allow` replaces the default families; `v2_legacy` still adds online v2.
    assert_eq!(routes.len(), 2 + ONLINE_V2_ROUTES.len());
    assert_eq!(routes[0].timeouts.read, Duration::from_secs(7));
    assert_eq!(routes[1].timeouts.connect, Duration::from_millis(250));
    assert_eq!(routes[0].family_label(), "custom");
    assert_eq!(config.allowlist.families(), &[ApiFamily::OnlineV2]);
    assert!(routes
        .iter()
        .filter(|r| r.template.starts_with("/v2/"))
        .all(|r| r.signing == Signing::ChannelSecret && r.family == Some(ApiFamily::OnlineV2)));
}

#[test]
fn routes_apis_picks_the_families() {
    let yaml = "routes:\n  apis: [online_v4, offline_v4]\n";
    let config = check(yaml, &env_with(ENV)).unwrap();
    assert_eq!(
        config.allowlist.families(),
        &[ApiFamily::OnlineV4, ApiFamily::OfflineV4]
    );
    assert!(config
        .allowlist
        .routes()
        .iter()
        .all(|r| r.template.starts_with("/v4/")));
    let pay = config
        .allowlist
        .routes()
        .iter()
        .find(|r| r.id() == "POST /v4/payments/oneTimeKeys/pay")
        .unwrap();
    assert_eq!(pay.timeouts.read, Duration::from_secs(40));
}

#[test]
fn routes_apis_comes_from_a_flag_or_a_variable_too() {
    let raw = from_yaml_str("routes:\n  apis: [online_v3]\n").unwrap();
    let flags = Overrides::default().set(
        "routes.apis",
        "apis",
        vec!["online_v3".into(), "user_info".into()],
    );
    let config = validate(raw, "sidecar.yaml", &flags, &env_with(ENV), &no_files).unwrap();
    assert_eq!(
        config.allowlist.families(),
        &[ApiFamily::OnlineV3, ApiFamily::UserInfo]
    );
    const VARIABLE: &[(&str, &str)] = &[
        (ENV_CHANNEL_ID, "1234567890"),
        (ENV_CHANNEL_SECRET, "s3cr3t-value"),
        ("LINEPAY_SIDECAR_ROUTES_APIS", "offline_v2, offline_v4"),
        ("HOME", "/home/shop"),
    ];
    let config = check("", &env_with(VARIABLE)).unwrap();
    assert_eq!(
        config.allowlist.families(),
        &[ApiFamily::OfflineV4, ApiFamily::OfflineV2]
    );
}

#[test]
fn unknown_or_repeated_families_are_refused_with_the_valid_names() {
    let error = check(
        "routes:\n  apis:\n    - online_v3\n    - offline_v3\n    - online_v3\n",
        &env_with(ENV),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("sidecar.yaml:4: routes.apis: `offline_v3` is not an API family; the families are online_v3, online_v4, user_info, offline_v4, offline_v2, online_v2"),
        "{error}"
    );
    assert!(
        error.contains("sidecar.yaml:5: routes.apis: `online_v3` is listed twice"),
        "{error}"
    );
}

#[test]
fn no_family_and_no_custom_route_is_refused() {
    let error = check("routes:\n  apis: []\n", &env_with(ENV))
        .unwrap_err()
        .to_string();
    assert!(error.contains("nothing could be forwarded"), "{error}");
}

#[test]
fn a_custom_route_that_a_family_already_allows_is_refused() {
    let yaml = "routes:\n  apis: [online_v3]\n  allow:\n    - method: POST\n      path: /v3/payments/request\n";
    let error = check(yaml, &env_with(ENV)).unwrap_err().to_string();
    assert!(
        error
            .contains("`POST /v3/payments/request` is already allowed by the online_v3 API family"),
        "{error}"
    );
    // Without `routes.apis`, `routes.allow` replaces the families: no conflict.
    let yaml = "routes:\n  allow:\n    - method: POST\n      path: /v3/payments/request\n";
    assert_eq!(
        check(yaml, &env_with(ENV))
            .unwrap()
            .allowlist
            .routes()
            .len(),
        1
    );
}

#[test]
fn timeouts_for_unknown_route_are_refused() {
    let yaml = "routes:\n  timeouts:\n    \"POST /v3/nope\":\n      read_timeout: 1s\n";
    let error = check(yaml, &env_with(ENV)).unwrap_err().to_string();
    assert!(error.contains("POST /v3/nope"), "{error}");
    assert!(error.contains("sidecar.yaml:4"), "{error}");
}

#[test]
fn shipped_example_configs_are_valid() {
    for (name, text) in [
        (
            "config/sidecar.yaml",
            include_str!("../../config/sidecar.yaml"),
        ),
        (
            "config/minimal.yaml",
            include_str!("../../config/minimal.yaml"),
        ),
    ] {
        let raw = from_yaml_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let home = env_with(&[("HOME", "/home/shop")]);
        let config = validate(raw, name, &Overrides::default(), &home, &|_| {
            Ok(b"mounted-secret\n".to_vec())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.credentials.channel_id, "1234567890", "{name}");
        assert_eq!(
            config.credentials.channel_secret.expose(),
            b"mounted-secret"
        );
    }
}

/// `journal.max_age` defaults to 30 days, so it can be written in days: the 24h bound of
/// every other duration does not apply to it.
#[test]
fn journal_max_age_is_written_in_days() {
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(check("", &env_with(ENV)).unwrap().journal.max_age, 30 * day);
    for (text, days) in [("30d", 30), ("90d", 90), ("3650d", 3650)] {
        let yaml = format!("journal:\n  max_age: {text}\n");
        let config = check(&yaml, &env_with(ENV)).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(config.journal.max_age, days * day, "{text}");
    }
    let error = check("journal:\n  max_age: 3651d\n", &env_with(ENV))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sidecar.yaml:2") && error.contains("max_age") && error.contains("3650d"),
        "{error}"
    );
    // Every other duration keeps its 24h bound.
    let error = check("journal:\n  reconcile_timeout: 2d\n", &env_with(ENV))
        .unwrap_err()
        .to_string();
    assert!(error.contains("24h"), "{error}");
}

#[test]
fn limits_that_would_overflow_are_refused() {
    assert!(parse_duration("25h").unwrap_err().contains("24h"));
    assert!(parse_duration("99999999999999999h").is_err());
    let error = check(
        "request:\n  max_connections: 4611686018427387904\n",
        &env_with(ENV),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("max_connections"), "{error}");
    let error = check(
        "upstream:\n  connect_timeout: 30s\n  read_timeout: 20s\n",
        &env_with(ENV),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("shorter than read_timeout"), "{error}");
}

#[test]
fn upstream_credentials_are_refused_without_echoing_them() {
    let error = check_upstream_url("https://user:hunter2@api-pay.line.me").unwrap_err();
    assert!(error.contains("credentials"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn bad_addresses_are_named_with_their_lines() {
    let error = check(
        "listen: nope\nadmin:\n  listen: also-nope\n",
        &env_with(ENV),
    )
    .unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
    assert!(
        error.problems[0].starts_with("sidecar.yaml:1: listen: `nope`"),
        "{error}"
    );
    assert!(
        error.problems[1].starts_with("sidecar.yaml:3: admin.listen: `also-nope`"),
        "{error}"
    );
    let error = check("listen: 127.0.0.1:9464\n", &env_with(ENV)).unwrap_err();
    assert!(error.to_string().contains("share a port"), "{error}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("5").unwrap_err().contains("unit"));
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
    let error = check("upstream:\n  connect_timeout: 5\n", &env_with(ENV))
        .unwrap_err()
        .to_string();
    assert!(error.contains("unit"), "{error}");
}

#[test]
fn bad_method_and_template_are_reported_together() {
    let yaml = "routes:\n  allow:\n    - {method: DELETE, path: /v3/x}\n    - {method: GET, path: /v3/../x}\n";
    let error = check(yaml, &env_with(ENV)).unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file() {
    let file = "upstream:\n  url: https://file.example\n  read_timeout: 30s\n";
    let env = |key: &str| match key {
        "LINEPAY_SIDECAR_UPSTREAM_URL" => Some("https://env.example".to_owned()),
        "LINEPAY_SIDECAR_UPSTREAM_READ_TIMEOUT" => Some("25s".to_owned()),
        ENV_CHANNEL_ID => Some("1".to_owned()),
        ENV_CHANNEL_SECRET => Some("s".to_owned()),
        "HOME" => Some("/home/shop".to_owned()),
        _ => None,
    };
    let raw = from_yaml_str(file).unwrap();
    let from_env = validate(raw, "f", &Overrides::default(), &env, &no_files).unwrap();
    assert_eq!(from_env.upstream.url.host(), Some("env.example"));
    assert!(from_env
        .allowlist
        .routes()
        .iter()
        .all(|r| r.timeouts.read == Duration::from_secs(25)));

    let raw = from_yaml_str(file).unwrap();
    let flags = Overrides::default().with("upstream.url", "https://flag.example");
    let from_flag = validate(raw, "f", &flags, &env, &no_files).unwrap();
    assert_eq!(from_flag.upstream.url.host(), Some("flag.example"));
    // A key the flag did not set keeps the variable's value.
    assert!(from_flag
        .allowlist
        .routes()
        .iter()
        .all(|r| r.timeouts.read == Duration::from_secs(25)));

    let raw = from_yaml_str(file).unwrap();
    let from_file = validate(raw, "f", &Overrides::default(), &env_with(ENV), &no_files).unwrap();
    assert_eq!(from_file.upstream.url.host(), Some("file.example"));
}

#[test]
fn a_bad_value_names_the_variable_or_flag_it_came_from() {
    let env = |key: &str| match key {
        "LINEPAY_SIDECAR_SHUTDOWN_DRAIN_TIMEOUT" => Some("25".to_owned()),
        ENV_CHANNEL_ID => Some("1".to_owned()),
        ENV_CHANNEL_SECRET => Some("s".to_owned()),
        _ => None,
    };
    let error = validate(
        from_yaml_str("").unwrap(),
        "f",
        &Overrides::default().with("listen", "nope"),
        &env,
        &no_files,
    )
    .unwrap_err();
    assert!(
        error.problems.iter().any(
            |p| p.starts_with("LINEPAY_SIDECAR_SHUTDOWN_DRAIN_TIMEOUT: ") && p.contains("unit")
        ),
        "{error}"
    );
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.starts_with("--listen: `nope` is not an address")),
        "{error}"
    );
}

#[test]
fn every_flag_and_variable_names_one_key() {
    let keys = keys();
    let flagged: Vec<&KeyDoc> = keys.iter().filter(|key| key.flag().is_some()).collect();
    assert!(flagged.len() >= 15, "{flagged:?}");
    let mut names: Vec<String> = flagged
        .iter()
        .flat_map(|key| {
            let flag = key.flag.unwrap();
            std::iter::once(flag.long.to_owned())
                .chain(flag.aliases.iter().map(|a| (*a).to_owned()))
                .chain(key.env())
        })
        .collect();
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "a flag or variable is used twice");
    // The variables that predate LINEPAY_SIDECAR_* keep working.
    let env_of = |path: &str| keys.iter().find(|k| k.path == path).unwrap().env();
    assert_eq!(
        env_of("credentials.channel_id").as_deref(),
        Some(ENV_CHANNEL_ID)
    );
    assert_eq!(
        env_of("credentials.channel_secret_file").as_deref(),
        Some(ENV_CHANNEL_SECRET_FILE)
    );
    assert_eq!(
        env_of("upstream.url").as_deref(),
        Some("LINEPAY_SIDECAR_UPSTREAM_URL")
    );
}

#[test]
fn prevalidation_response_and_check_status_keys_have_safe_defaults() {
    use crate::validate::Mode;
    let config = check("", &env_with(ENV)).unwrap();
    assert_eq!(config.prevalidation.mode, Mode::Warn);
    assert!(config.prevalidation.routes.is_empty());
    assert!(!config.response.ids_as_strings);
    assert_eq!(config.limits.polling.min_interval, Duration::from_secs(1));
    let config = check(
        "prevalidation:\n  mode: Enforce\n  routes:\n    \"/payments/{id}/refund\": {mode: off}\nresponse:\n  ids_as_strings: true\nlimits:\n  check_status_interval: 0s\n",
        &env_with(ENV),
    )
    .unwrap();
    assert_eq!(config.prevalidation.mode, Mode::Enforce);
    assert_eq!(
        config
            .prevalidation
            .routes
            .get("payments/{transactionId}/refund"),
        Some(&Mode::Off)
    );
    assert!(config.response.ids_as_strings);
    assert!(config.limits.polling.min_interval.is_zero());
}

#[test]
fn bad_prevalidation_and_check_status_keys_are_named_with_their_lines() {
    let error = check(
        "prevalidation:\n  mode: strict\n  routes:\n    \"payments/nope\": {mode: warn}\n    \"payments/request\": {mode: loud}\nlimits:\n  check_status_interval: 2m\n  check_status_max_tracked: 0\n",
        &env_with(ENV),
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "sidecar.yaml:2",
        "`strict` is not off, warn or enforce",
        "`payments/nope` has no rules",
        "payments/request, payments/{transactionId}/confirm",
        "`loud` is not off, warn or enforce",
        "limits.check_status_interval",
        "limits.check_status_max_tracked: must be between 1",
    ] {
        assert!(error.contains(expected), "{expected:?} not in:\n{error}");
    }
}

#[test]
fn without_a_state_directory_the_journal_path_is_left_empty_never_relative() {
    const BARE: &[(&str, &str)] = &[
        (ENV_CHANNEL_ID, "1234567890"),
        (ENV_CHANNEL_SECRET, "s3cr3t-value"),
    ];
    // Opening it fails at start (journal::store), naming journal.path.
    assert_eq!(
        check("", &env_with(BARE)).unwrap().journal.path,
        PathBuf::new()
    );
    let given = check("journal:\n  path: /srv/j.sqlite3\n", &env_with(BARE)).unwrap();
    assert_eq!(given.journal.path, PathBuf::from("/srv/j.sqlite3"));
}

#[test]
fn admin_calls_is_loopback_any_or_off() {
    let config = check("admin:\n  calls: any\n", &env_with(ENV)).unwrap();
    assert_eq!(config.admin.calls, CallsAccess::Any);
    let config = check("admin:\n  calls: \"off\"\n", &env_with(ENV)).unwrap();
    assert_eq!(config.admin.calls, CallsAccess::Off);
    let problems = check("admin:\n  calls: everyone\n", &env_with(ENV))
        .unwrap_err()
        .to_string();
    assert!(
        problems.contains("admin.calls: must be loopback, any or off"),
        "{problems}"
    );
}
