//! What a platform team loads beside the binary agrees with the binary and with the
//! other deploy files: the alert rules and the dashboard ask only for metrics the real
//! binary exports, the gauges behind them move with what they report, the
//! NetworkPolicy opens what the pod uses and nothing wider, the compose file keeps the
//! proxy on loopback.
//!
//! Where the ecosystem's own tool exists (`promtool`), it judges the files. A
//! developer without it gets a printed notice and the rest of the test; under CI
//! (`CI` set), .ci/run installs every tool, so a missing one fails.

use crate::util::{metric, Call, EchoServer, RunningSidecar, Sidecar, TempFile, Upstream};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_saphyr::from_str(&read(relative))
        .unwrap_or_else(|error| panic!("{relative} is not YAML: {error}"))
}

/// Whether `tool` can run here. Absent: a notice on stderr and `false`, except under
/// CI, where .ci/run installed it and its absence is a failure.
fn tool_available(tool: &str, check: &str) -> bool {
    let runs = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed, but CI must run {check}: .ci/run installs it"
        );
        // Straight to stderr: eprintln! output of a passing test is captured.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {check}: {tool} is not installed (CI installs it; apt-get install prometheus)"
        );
    }
    runs
}

/// Runs `tool args...`, feeding `stdin`; panics with its output unless it succeeds.
fn run_tool(tool: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {tool}: {error}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .unwrap_or_else(|error| panic!("cannot feed {tool}: {error}"));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{tool} did not finish: {error}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}\n{printed}",
        output.status
    );
    printed
}

// ---------------------------------------------------------------------------------------
// The binary's /metrics.

/// A sidecar that has answered one call through a recording upstream, so that the
/// series created by a call (requests, upstream latency) exist, and its scrape.
async fn scraped_after_one_call() -> (RunningSidecar, Upstream, String) {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let scrape = sidecar.scrape().await;
    (sidecar, upstream, scrape)
}

/// The names of the samples in a scrape (`name_bucket`, `name_sum`, ... included).
fn exported_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_passes_promtool_check_metrics() {
    let (_sidecar, _upstream, scrape) = scraped_after_one_call().await;
    if !tool_available("promtool", "promtool check metrics") {
        return;
    }
    // promtool exits non-zero on a lint problem (a counter without _total, a unit
    // missing from a name, ...) and names it.
    let printed = run_tool("promtool", &["check", "metrics"], Some(&scrape));
    assert!(printed.trim().is_empty(), "promtool: {printed}\n{scrape}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fixed_series_and_process_metrics_exist_before_the_first_call() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let scrape = sidecar.scrape().await;
    for series in [
        r#"linepay_sidecar_refusals_total{code="path_not_allowed"}"#,
        r#"linepay_sidecar_refusals_total{code="upstream_timeout"}"#,
        r#"linepay_sidecar_upstream_errors_total{kind="tls"}"#,
        r#"linepay_sidecar_upstream_errors_total{kind="timeout"}"#,
        r#"linepay_sidecar_rate_limited_total{limit="global"}"#,
        r#"linepay_sidecar_config_reloads_total{result="failure"}"#,
        "linepay_sidecar_expect_ip_mismatch",
    ] {
        assert_eq!(metric(&scrape, series), Some(0.0), "{series}\n{scrape}");
    }
    if cfg!(target_os = "linux") {
        let open = metric(&scrape, "process_open_fds").unwrap_or_default();
        let max = metric(&scrape, "process_max_fds").unwrap_or_default();
        assert!(open > 0.0 && max >= open, "fds {open} of {max}\n{scrape}");
        let resident = metric(&scrape, "process_resident_memory_bytes").unwrap_or_default();
        assert!(resident > 0.0, "{scrape}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_gauge_follows_the_probe_even_when_readiness_ignores_it() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml(
            "probe.yaml",
            "admin:\n  probe_interval: 100ms\n  ready_requires_upstream: false\n",
        )
        .start()
        .await;
    sidecar
        .wait_for_metric("linepay_sidecar_upstream_up", 1.0)
        .await;

    // LINE Pay goes away: the gauge says so, and the pod stays ready.
    drop(upstream);
    sidecar
        .wait_for_metric("linepay_sidecar_upstream_up", 0.0)
        .await;
    let readyz = Call::get("/readyz").send(sidecar.admin_addr).await;
    assert_eq!(readyz.status, 200, "{}", readyz.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_egress_address_mismatch_raises_its_gauge() {
    let echo = EchoServer::start().await;
    let upstream = Upstream::recording().start().await;
    // The echo server sees 127.0.0.1; the config expects another address.
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml(
            "expect-ip.yaml",
            format!(
                "egress:\n  expect_ip:\n    address: 127.0.0.9\n    echo_url: http://{}/ip\n    timeout: 3s\n",
                echo.addr
            ),
        )
        .start()
        .await;
    sidecar
        .wait_for_metric("linepay_sidecar_expect_ip_mismatch", 1.0)
        .await;
}

// ---------------------------------------------------------------------------------------
// PromQL: which metrics an expression reads.

/// Aggregation operators: followed by `by (...)`/`without (...)` or by `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords whose parenthesised list holds label names, not metrics.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// Skips from `open` at `chars[at]` to just past its matching `close`.
fn skip_past(chars: &[char], at: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut index = at;
    while index < chars.len() {
        if chars[index] == open {
            depth += 1;
        } else if chars[index] == close {
            depth -= 1;
            if depth == 0 {
                return index + 1;
            }
        }
        index += 1;
    }
    index
}

/// The metric names a PromQL expression (or a Grafana `label_values(metric, label)`
/// query) selects. Not a parser: enough of the lexical rules for the expressions this
/// repository ships, and tested below on the shapes they use.
fn metric_names(expression: &str) -> BTreeSet<String> {
    // Grafana's label_values(metric, label): the metric is the first argument.
    let expression = match expression.trim().strip_prefix("label_values(") {
        Some(arguments) => arguments
            .rsplit_once(',')
            .map_or(arguments, |(metric, _)| metric),
        None => expression,
    };
    let chars: Vec<char> = expression.chars().collect();
    let mut names = BTreeSet::new();
    let mut at = 0;
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while at < chars.len() {
        let c = chars[at];
        match c {
            '"' | '\'' | '`' => {
                at += 1;
                while at < chars.len() && chars[at] != c {
                    at += if chars[at] == '\\' { 2 } else { 1 };
                }
                at += 1;
            }
            '{' => at = skip_past(&chars, at, '{', '}'),
            '[' => at = skip_past(&chars, at, '[', ']'),
            // A Grafana variable: $name or ${name}.
            '$' => {
                at += 1;
                if chars.get(at) == Some(&'{') {
                    at = skip_past(&chars, at, '{', '}');
                } else {
                    while at < chars.len() && is_part(chars[at]) {
                        at += 1;
                    }
                }
            }
            // A number or a duration (0.99, 1e-6, 5m).
            _ if c.is_ascii_digit()
                || (c == '.' && chars.get(at + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while at < chars.len() && (chars[at].is_ascii_alphanumeric() || chars[at] == '.') {
                    at += 1;
                }
            }
            _ if is_start(c) => {
                let start = at;
                while at < chars.len() && is_part(chars[at]) {
                    at += 1;
                }
                let word: String = chars[start..at].iter().collect();
                let mut next = at;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) {
                    if called {
                        at = skip_past(&chars, next, '(', ')');
                    }
                } else if called
                    || AGGREGATIONS.contains(&word.as_str())
                    || KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                {
                    // A function, an aggregation or an operator.
                } else {
                    names.insert(word);
                }
            }
            _ => at += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_the_shapes_of_promql_this_repository_uses() {
    let names =
        |expression: &str| -> Vec<String> { metric_names(expression).into_iter().collect() };
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{instance=~"$instance", x="{y}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names(
            "sum without (route, method) (b_total) unless sum without (route) (b_total offset 5m)"
        ),
        ["b_total"]
    );
    assert_eq!(
        names("c / d > 0.8\nand on (instance, job) e_info"),
        ["c", "d", "e_info"]
    );
    assert_eq!(names("vector($memory_limit_bytes)"), Vec::<String>::new());
    assert_eq!(names("count by (version) (f{a=\"1\"}) > 1e-6"), ["f"]);
    assert_eq!(names("label_values(g_info, instance)"), ["g_info"]);
}

/// Every `expr` of every rule in deploy/prometheus/alerts.yaml, with the alert's name.
fn alert_expressions() -> Vec<(String, String)> {
    let rules = yaml("deploy/prometheus/alerts.yaml");
    let mut expressions = Vec::new();
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("?")
                .to_owned();
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("rule {name} has no expr"));
            expressions.push((format!("alert {name}"), expr.to_owned()));
        }
    }
    assert!(!expressions.is_empty(), "alerts.yaml holds no rule");
    expressions
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/linepay-sidecar.json"))
        .unwrap_or_else(|error| panic!("the dashboard is not JSON: {error}"))
}

/// Every query of the dashboard: panel targets (rows' nested panels too) and the
/// template variables of type `query`.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, into: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title}: a target without expr"));
                into.push((format!("panel {title}"), expr.to_owned()));
            }
            panels(&panel["panels"], into);
        }
    }
    let mut expressions = Vec::new();
    panels(&dashboard["panels"], &mut expressions);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = &variable["query"];
            let text = query["query"]
                .as_str()
                .or_else(|| query.as_str())
                .unwrap_or_else(|| panic!("variable {} has no query", variable["name"]));
            expressions.push((format!("variable {}", variable["name"]), text.to_owned()));
        }
    }
    expressions
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_alerts_and_the_dashboard_read_is_one_the_binary_exports() {
    let (_sidecar, _upstream, scrape) = scraped_after_one_call().await;
    let exported = exported_names(&scrape);
    let mut expressions = alert_expressions();
    let dashboard = dashboard();
    let panels = dashboard_expressions(&dashboard);
    assert!(
        panels.len() > 10,
        "the dashboard has few queries: {panels:?}"
    );
    expressions.extend(panels);
    for (place, expression) in expressions {
        let names = metric_names(&expression);
        assert!(
            !names.is_empty() || expression.contains("vector("),
            "{place}: no metric found in `{expression}`"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "{place} reads `{name}`, which the binary does not export:\n{expression}\n\nexported: {exported:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The alert rules, by promtool.

#[test]
fn promtool_checks_the_alert_rules_and_runs_their_unit_tests() {
    if !tool_available("promtool", "promtool check/test rules") {
        return;
    }
    let rules = repo_path("deploy/prometheus/alerts.yaml");
    let tests = repo_path("deploy/prometheus/alerts.test.yaml");
    let checked = run_tool(
        "promtool",
        &["check", "rules", &rules.to_string_lossy()],
        None,
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_tool(
        "promtool",
        &["test", "rules", &tests.to_string_lossy()],
        None,
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_a_severity() {
    let rules = yaml("deploy/prometheus/alerts.yaml");
    let tests = yaml("deploy/prometheus/alerts.test.yaml");
    let fired: BTreeSet<&str> = tests["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|case| case["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|check| {
            check["exp_alerts"]
                .as_array()
                .is_some_and(|alerts| !alerts.is_empty())
        })
        .filter_map(|check| check["alertname"].as_str())
        .collect();
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            assert!(
                fired.contains(name),
                "alert {name} has no test case in alerts.test.yaml where it fires"
            );
            assert!(
                ["critical", "warning", "info"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or_default()),
                "alert {name} needs labels.severity"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    rule["annotations"][annotation].is_string(),
                    "alert {name} needs annotations.{annotation}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The dashboard.

/// A Kubernetes quantity (`128Mi`, `500m`, `1`) as a number.
fn quantity(text: &str) -> f64 {
    let units = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("m", 0.001),
    ];
    for (suffix, factor) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            let number: f64 = number
                .parse()
                .unwrap_or_else(|_| panic!("bad quantity {text}"));
            return number * factor;
        }
    }
    text.parse()
        .unwrap_or_else(|_| panic!("bad quantity {text}"))
}

/// The sidecar container of deploy/kubernetes/deployment.yaml.
fn deployment_sidecar() -> Value {
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    deployment["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|container| container["name"] == "linepay-sidecar")
        .cloned()
        .unwrap_or_else(|| panic!("deployment.yaml has no linepay-sidecar init container"))
}

#[test]
fn the_dashboard_loads_anywhere_and_its_limits_default_to_the_deployments() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "linepay-sidecar");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("the dashboard has no variables"));
    let variable = |name: &str| -> &Value {
        variables
            .iter()
            .find(|variable| variable["name"] == name)
            .unwrap_or_else(|| panic!("the dashboard has no variable {name}"))
    };
    // No datasource uid baked in: every query goes through the picked datasource.
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64()),
            "panel id {} used twice",
            panel["id"]
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {title} must use the datasource variable"
            );
        }
    }

    let sidecar = deployment_sidecar();
    for (name, resource) in [("memory_limit_bytes", "memory"), ("cpu_limit_cores", "cpu")] {
        let limit = sidecar["resources"]["limits"][resource]
            .as_str()
            .map(quantity)
            .unwrap_or_else(|| panic!("deployment.yaml: no resources.limits.{resource}"));
        let default = variable(name)["query"]
            .as_str()
            .map(quantity)
            .unwrap_or_else(|| panic!("variable {name} has no default"));
        assert_eq!(
            default, limit,
            "the dashboard's {name} must default to deployment.yaml's limits.{resource}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The NetworkPolicy.

/// `(protocol, port)` pairs of a rule's `ports`; a rule without ports allows every
/// port, which the policy must never do.
fn rule_ports(rule: &Value, what: &str) -> BTreeSet<(String, u64)> {
    let ports = rule["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: a rule without ports opens every port"));
    ports
        .iter()
        .map(|port| {
            (
                port["protocol"].as_str().unwrap_or("TCP").to_owned(),
                port["port"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{what}: port {port} is not a number")),
            )
        })
        .collect()
}

fn admin_port(sidecar: &Value) -> u64 {
    sidecar["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|port| port["name"] == "admin")
        .and_then(|port| port["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("the sidecar declares no admin port"))
}

#[test]
fn the_network_policy_admits_only_prometheus_to_the_admin_port() {
    let policy = yaml("deploy/kubernetes/networkpolicy.yaml");
    assert_eq!(policy["kind"], "NetworkPolicy");
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap_or_else(|| panic!("the policy selects no pods by label"));
    for (key, value) in selector {
        assert_eq!(
            &pod_labels[key], value,
            "the policy does not select the shop pods"
        );
    }
    let types = &policy["spec"]["policyTypes"];
    assert!(
        types.as_array().is_some_and(|types| types.len() == 2
            && types.contains(&Value::from("Ingress"))
            && types.contains(&Value::from("Egress"))),
        "policyTypes must be Ingress and Egress: {types}"
    );

    let admin = admin_port(&deployment_sidecar());
    let ingress = policy["spec"]["ingress"]
        .as_array()
        .unwrap_or_else(|| panic!("the policy has no ingress rules"));
    let mut admin_rules = 0;
    for rule in ingress {
        let ports = rule_ports(rule, "ingress");
        if !ports.contains(&("TCP".to_owned(), admin)) {
            continue;
        }
        admin_rules += 1;
        let sources = rule["from"]
            .as_array()
            .unwrap_or_else(|| panic!("the admin port {admin} is open to every source"));
        for source in sources {
            assert!(
                source["ipBlock"].is_null()
                    && source["namespaceSelector"]["matchLabels"].is_object()
                    && source["podSelector"]["matchLabels"].is_object(),
                "the admin port admits {source}: only a namespace AND pod selector (Prometheus)"
            );
        }
    }
    assert_eq!(
        admin_rules, 1,
        "exactly one rule admits the admin port {admin}"
    );
}

#[test]
fn the_network_policy_lets_out_only_dns_and_https() {
    let policy = yaml("deploy/kubernetes/networkpolicy.yaml");
    let egress = policy["spec"]["egress"]
        .as_array()
        .unwrap_or_else(|| panic!("the policy has no egress rules"));
    let mut allowed = BTreeSet::new();
    for rule in egress {
        assert!(
            rule["to"].as_array().is_some_and(|to| !to.is_empty()),
            "an egress rule without `to` allows every destination: {rule}"
        );
        allowed.extend(rule_ports(rule, "egress"));
    }
    let expected: BTreeSet<(String, u64)> = [("UDP", 53), ("TCP", 53), ("TCP", 443)]
        .into_iter()
        .map(|(protocol, port)| (protocol.to_owned(), port))
        .collect();
    assert_eq!(allowed, expected, "egress: DNS over UDP and TCP, and HTTPS");
}

// ---------------------------------------------------------------------------------------
// docker compose.

#[test]
fn compose_runs_the_app_in_the_sidecars_network_namespace_with_the_proxy_on_loopback() {
    let compose = yaml("deploy/compose/docker-compose.yaml");
    let services = compose["services"]
        .as_object()
        .unwrap_or_else(|| panic!("docker-compose.yaml has no services"));
    let sidecar_name = services
        .iter()
        .find(|(_, service)| {
            service["build"]["dockerfile"]
                .as_str()
                .is_some_and(|file| file.ends_with("deploy/Dockerfile"))
        })
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| panic!("no service builds deploy/Dockerfile"));
    let sidecar = &services[&sidecar_name];
    let apps: Vec<&String> = services
        .iter()
        .filter(|(_, service)| {
            service["network_mode"].as_str() == Some(&format!("service:{sidecar_name}"))
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        !apps.is_empty(),
        "no service shares the sidecar's network namespace (network_mode: \"service:{sidecar_name}\")"
    );

    // The sidecar's own flags and the config it is given pass `check`, with the proxy on
    // loopback: the only way the app reaches it is the shared namespace.
    let command: Vec<String> = sidecar["command"]
        .as_array()
        .unwrap_or_else(|| panic!("the sidecar service has no command list"))
        .iter()
        .map(|word| word.as_str().unwrap_or_default().to_owned())
        .collect();
    let listen = command
        .iter()
        .position(|word| word == "--listen")
        .and_then(|at| command.get(at + 1))
        .unwrap_or_else(|| panic!("the sidecar service passes no --listen: {command:?}"));
    assert!(
        listen.starts_with("127.0.0.1:"),
        "--listen {listen}: the proxy must stay on loopback"
    );
    for app in &apps {
        let env = &services[app.as_str()]["environment"];
        let url = env["LINEPAY_SIDECAR_URL"].as_str().unwrap_or_default();
        assert_eq!(
            url,
            format!("http://{listen}"),
            "service {app}: LINEPAY_SIDECAR_URL must be the sidecar's --listen"
        );
    }
    // The proxy port is never published; the admin port only on the host's loopback,
    // for a local Prometheus.
    let listen_port = listen.rsplit(':').next().unwrap_or_default();
    // The admin address: the flag, else the variable (which `healthcheck` reads too);
    // the binary's loopback default would not reach the published port.
    let admin_variable = sidecar["environment"]["LINEPAY_SIDECAR_ADMIN_LISTEN"]
        .as_str()
        .map(str::to_owned);
    let admin_listen = command
        .iter()
        .position(|word| word == "--admin-listen")
        .and_then(|at| command.get(at + 1))
        .cloned()
        .or(admin_variable.clone())
        .unwrap_or_else(|| {
            panic!("the sidecar service sets no --admin-listen or LINEPAY_SIDECAR_ADMIN_LISTEN: {command:?}")
        });
    assert!(
        admin_listen.starts_with("0.0.0.0:"),
        "admin address {admin_listen}: the published port reaches the namespace's interface, not its loopback"
    );
    let admin_port = admin_listen.rsplit(':').next().unwrap_or_default();
    let mut admin_published = false;
    for published in sidecar["ports"].as_array().into_iter().flatten() {
        let published = published.as_str().unwrap_or_default();
        assert!(
            !published.ends_with(&format!(":{listen_port}")),
            "the proxy port must not be published: {published}"
        );
        if published.ends_with(&format!(":{admin_port}")) {
            admin_published = true;
            assert!(
                published.starts_with("127.0.0.1:"),
                "the admin port is published on every host interface: {published}"
            );
        }
    }
    assert!(
        admin_published,
        "the admin port {admin_port} is not published"
    );

    let mut cli = crate::util::Cli::new().arg("check");
    let config = TempFile::with_contents(
        "compose-sidecar.yaml",
        read("deploy/compose/config/sidecar.yaml").as_bytes(),
    );
    let mut words = command.iter();
    while let Some(word) = words.next() {
        if word == "--config" {
            words.next();
            cli = cli.arg("--config").arg(config.path_str());
        } else {
            cli = cli.arg(word);
        }
    }
    if let Some(admin) = &admin_variable {
        cli = cli.env("LINEPAY_SIDECAR_ADMIN_LISTEN", admin);
    }
    let output = cli
        .env("LINEPAY_CHANNEL_SECRET", crate::util::CHANNEL_SECRET)
        .run();
    assert!(output.status.success(), "{output:?}");

    // The app waits for the sidecar's healthcheck, which is the binary's own
    // subcommand in exec form (the image has no shell).
    for app in &apps {
        assert_eq!(
            services[app.as_str()]["depends_on"][&sidecar_name]["condition"].as_str(),
            Some("service_healthy"),
            "service {app} must wait for the sidecar's healthcheck"
        );
    }
    let test: Vec<&str> = sidecar["healthcheck"]["test"]
        .as_array()
        .unwrap_or_else(|| panic!("the sidecar service has no healthcheck test list"))
        .iter()
        .map(|word| word.as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        test.get(..3),
        Some(&["CMD", "/usr/local/bin/linepay-sidecar", "healthcheck"][..]),
        "the healthcheck must run the binary's healthcheck without a shell: {test:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The image.

#[test]
fn the_image_carries_oci_labels_and_a_stripped_binary() {
    let dockerfile = read("deploy/Dockerfile");
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.source",
    ] {
        assert!(
            dockerfile.contains(&format!("{label}=")),
            "the Dockerfile sets no {label}"
        );
    }
    let manifest = read("Cargo.toml");
    let field = |key: &str| -> String {
        manifest
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key} = ")))
            .map(|value| value.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("Cargo.toml has no {key}"))
    };
    assert!(
        dockerfile.contains(&format!(
            "org.opencontainers.image.licenses=\"{}\"",
            field("license")
        )),
        "the image's license label must be Cargo.toml's license"
    );
    assert!(
        dockerfile.contains(&format!("ARG VERSION={}", field("version"))),
        "ARG VERSION must default to Cargo.toml's version"
    );
    assert!(
        dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"),
        "the image's binary must be built stripped"
    );
    assert!(
        read("LICENSE").contains("Apache License\n                           Version 2.0"),
        "LICENSE must hold the Apache-2.0 text Cargo.toml names"
    );
}
