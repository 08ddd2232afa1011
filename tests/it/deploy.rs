//! The shipped deployment files agree with the binary and with each other.
//!
//! Every fact is read from the files themselves (the Kubernetes manifests, the
//! Dockerfile, the systemd unit, the example configs), never written down twice here:
//! a port, a path or a name changed in one file and not in the other fails a test. What
//! only the binary can judge (does it accept this config, these flags?) is asked of the
//! real binary with `check`, which validates without starting.

use crate::util::{Cli, TempFile, CHANNEL_SECRET};
use linepay_sidecar::config::{
    parse_duration, DEFAULT_ADMIN_LISTEN, DEFAULT_DRAIN_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Kubernetes: reading the manifests.

/// One YAML document of one file under deploy/kubernetes.
struct Manifest {
    file: String,
    doc: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every document of every YAML file in deploy/kubernetes; each must parse and have a
/// kind, an apiVersion and a name.
fn manifests() -> Vec<Manifest> {
    let dir = repo_path("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml" || extension == "yml")
        })
        .collect();
    files.sort();
    let mut manifests = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {file}: {error}"));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|error| panic!("{file} is not valid YAML: {error}"));
        assert!(!docs.is_empty(), "{file} holds no YAML document");
        for doc in docs {
            let manifest = Manifest {
                file: file.clone(),
                doc,
            };
            assert!(
                !manifest.kind().is_empty() && manifest.doc["apiVersion"].is_string(),
                "{file}: a document without kind or apiVersion"
            );
            if manifest.kind() != "Kustomization" {
                assert!(
                    !manifest.name().is_empty(),
                    "{file}: a document without a name"
                );
            }
            manifests.push(manifest);
        }
    }
    manifests
}

/// The one manifest of this kind (and name, when given).
fn only<'a>(manifests: &'a [Manifest], kind: &str, name: Option<&str>) -> &'a Manifest {
    let found: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind() == kind && name.is_none_or(|name| m.name() == name))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} {} in deploy/kubernetes, found {}",
        name.unwrap_or(""),
        found.len()
    );
    found[0]
}

fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {value}"))
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// The value of `--flag VALUE` or `--flag=VALUE` in a container's args.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let with_equals = format!("{flag}=");
    args.iter().enumerate().find_map(|(at, arg)| {
        if arg == flag {
            args.get(at + 1).cloned()
        } else {
            arg.strip_prefix(&with_equals).map(str::to_owned)
        }
    })
}

/// A duration in the config's syntax (`25s`), parsed by the binary's own parser.
fn duration(text: &str) -> Duration {
    parse_duration(text).unwrap_or_else(|problem| panic!("{problem}"))
}

/// The example deployment, seen the way the sidecar binary sees it.
struct Pod<'a> {
    manifests: &'a [Manifest],
    deployment: &'a Manifest,
    spec: &'a Value,
    sidecar: &'a Value,
    args: Vec<String>,
    /// The value of `--config`.
    config_path: String,
    /// The ConfigMap's file at `config_path`, parsed.
    config: Value,
    /// The same file, as it is written.
    config_text: String,
    /// Where the admin endpoints listen: `--admin-listen`, else `admin.listen`, else
    /// the default.
    admin: SocketAddr,
}

impl<'a> Pod<'a> {
    fn new(manifests: &'a [Manifest]) -> Pod<'a> {
        let deployment = only(manifests, "Deployment", None);
        let spec = &deployment.doc["spec"]["template"]["spec"];
        let is_sidecar = |container: &&Value| container["name"] == "linepay-sidecar";
        assert!(
            !spec["containers"]
                .as_array()
                .is_some_and(|containers| containers.iter().any(|c| is_sidecar(&c))),
            "the sidecar must be an init container (native sidecar), not in `containers`"
        );
        let sidecar = array(&spec["initContainers"], "initContainers")
            .iter()
            .find(is_sidecar)
            .unwrap_or_else(|| panic!("no init container named linepay-sidecar"));
        let args: Vec<String> = array(&sidecar["args"], "the sidecar's args")
            .iter()
            .map(|arg| text(arg, "an arg").to_owned())
            .collect();
        let config_path = flag_value(&args, "--config")
            .unwrap_or_else(|| panic!("the sidecar's args have no --config: {args:?}"));

        let (volume, file) = volume_holding(spec, sidecar, &config_path);
        let map_name = text(
            &volume["configMap"]["name"],
            "the --config volume's configMap.name",
        );
        let config_map = only(manifests, "ConfigMap", Some(map_name));
        let config_text = config_map.doc["data"][file.as_str()]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "ConfigMap {map_name} has no data key `{file}`, which --config {config_path} reads"
                )
            })
            .to_owned();
        let config: Value = serde_saphyr::from_str(&config_text)
            .unwrap_or_else(|error| panic!("ConfigMap {map_name}/{file} is not YAML: {error}"));

        // Flag, then file, then the binary's default: the precedence of the binary.
        let admin = flag_value(&args, "--admin-listen")
            .or_else(|| config["admin"]["listen"].as_str().map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned());
        let admin: SocketAddr = admin
            .parse()
            .unwrap_or_else(|_| panic!("admin address `{admin}` is not an address"));
        Pod {
            manifests,
            deployment,
            spec,
            sidecar,
            args,
            config_path,
            config,
            config_text,
            admin,
        }
    }

    /// The proxy address: `--listen`, else the ConfigMap's `listen`, else the default.
    fn listen(&self) -> SocketAddr {
        let listen = flag_value(&self.args, "--listen")
            .or_else(|| self.config["listen"].as_str().map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        listen
            .parse()
            .unwrap_or_else(|_| panic!("listen `{listen}` is not an address"))
    }

    /// A container port: a number, or the name of one of the sidecar's ports.
    fn sidecar_port(&self, port: &Value) -> u16 {
        if let Some(number) = port.as_u64() {
            return u16::try_from(number).unwrap_or_else(|_| panic!("port {number} too large"));
        }
        let name = text(port, "a port");
        let declared = array(&self.sidecar["ports"], "the sidecar's ports")
            .iter()
            .find(|declared| declared["name"] == name)
            .unwrap_or_else(|| panic!("the sidecar declares no port named `{name}`"));
        let number = declared["containerPort"]
            .as_u64()
            .unwrap_or_else(|| panic!("port `{name}` has no containerPort number"));
        u16::try_from(number).unwrap_or_else(|_| panic!("port {number} too large"))
    }
}

/// The volume mounted (as a directory) at the parent of `path` in `container`, and the
/// file name `path` has inside it.
fn volume_holding<'a>(spec: &'a Value, container: &Value, path: &str) -> (&'a Value, String) {
    let (directory, file) = path
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("`{path}` is not an absolute path"));
    let mount = array(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|mount| mount["mountPath"].as_str() == Some(directory))
        .unwrap_or_else(|| panic!("no volume is mounted at {directory}, where {path} must be"));
    assert!(
        mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
        "{directory} is mounted with subPath: such a mount never sees an update of the ConfigMap or Secret"
    );
    assert_eq!(
        mount["readOnly"], true,
        "{directory} must be mounted read-only"
    );
    let name = text(&mount["name"], "a volumeMount name");
    let volume = array(&spec["volumes"], "volumes")
        .iter()
        .find(|volume| volume["name"] == name)
        .unwrap_or_else(|| panic!("the pod has no volume `{name}`"));
    let source = if volume["configMap"].is_object() {
        &volume["configMap"]
    } else {
        &volume["secret"]
    };
    assert!(
        source.get("items").is_none(),
        "volume `{name}` remaps keys with `items`; this test expects each key as a file of its name"
    );
    assert_ne!(
        source["optional"], true,
        "volume `{name}` must not be optional: the sidecar cannot run without it"
    );
    (volume, file.to_owned())
}

// ---------------------------------------------------------------------------------------
// Kubernetes: the tests.

#[test]
fn every_manifest_parses_and_the_kustomization_lists_all_but_the_secret_example() {
    let manifests = manifests();
    let kustomization = only(&manifests, "Kustomization", None);
    let listed: BTreeSet<String> = array(&kustomization.doc["resources"], "resources")
        .iter()
        .map(|resource| text(resource, "a resource").to_owned())
        .collect();
    let files: BTreeSet<String> = manifests
        .iter()
        .map(|manifest| manifest.file.clone())
        .filter(|file| file != &kustomization.file)
        .collect();
    for file in &listed {
        assert!(
            files.contains(file),
            "kustomization lists {file}, which does not exist"
        );
    }
    for file in &files {
        let example = file.ends_with(".example.yaml");
        assert_eq!(
            listed.contains(file),
            !example,
            "{file}: every manifest but the *.example.yaml ones must be a kustomize resource \
             (an example Secret applied by `kubectl apply -k` would overwrite the real one)"
        );
    }
}

#[test]
fn the_sidecar_is_a_native_sidecar_that_the_app_reaches_over_loopback() {
    let manifests = manifests();
    let pod = Pod::new(&manifests);
    assert_eq!(
        pod.sidecar["restartPolicy"], "Always",
        "an init container with restartPolicy Always is a native sidecar: up before the app, down after it"
    );
    assert!(
        pod.sidecar.get("command").is_none(),
        "use args, so the image's ENTRYPOINT (the binary) runs"
    );

    let listen = pod.listen();
    assert!(
        listen.ip().is_loopback(),
        "listen {listen}: the proxy must stay on loopback, or anything in the cluster could have calls signed"
    );
    let app = array(&pod.spec["containers"], "containers")
        .iter()
        .find(|container| {
            container["env"]
                .as_array()
                .is_some_and(|env| env.iter().any(|var| var["name"] == "LINEPAY_SIDECAR_URL"))
        })
        .unwrap_or_else(|| panic!("no app container has LINEPAY_SIDECAR_URL"));
    let url = array(&app["env"], "env")
        .iter()
        .find(|var| var["name"] == "LINEPAY_SIDECAR_URL")
        .map(|var| text(&var["value"], "LINEPAY_SIDECAR_URL").to_owned())
        .unwrap_or_default();
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}", listen.port()),
        "the app's LINEPAY_SIDECAR_URL must be the sidecar's listen address"
    );
}

#[test]
fn probes_and_scrapes_target_the_admin_port_the_sidecar_is_given() {
    let manifests = manifests();
    let pod = Pod::new(&manifests);
    assert!(
        pod.admin.ip().is_unspecified(),
        "admin address {}: the kubelet probes and Prometheus scrapes over the pod IP, so it must listen on all interfaces",
        pod.admin
    );
    assert_ne!(
        pod.admin.port(),
        pod.listen().port(),
        "admin and proxy need two ports"
    );

    for (probe, paths) in [
        ("livenessProbe", &["/healthz"][..]),
        ("readinessProbe", &["/readyz"][..]),
        // /healthz: the app starts once the proxy listens, even while LINE Pay is down.
        ("startupProbe", &["/healthz"][..]),
    ] {
        let get = &pod.sidecar[probe]["httpGet"];
        assert!(get.is_object(), "the sidecar has no {probe} with httpGet");
        assert_eq!(
            pod.sidecar_port(&get["port"]),
            pod.admin.port(),
            "{probe} must probe the admin port"
        );
        let path = text(&get["path"], probe);
        assert!(
            paths.contains(&path),
            "{probe} probes {path}, expected one of {paths:?}"
        );
    }

    let annotations = &pod.deployment.doc["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(
        annotations["prometheus.io/port"],
        pod.admin.port().to_string(),
        "the prometheus.io/port annotation must be the admin port"
    );

    // ServiceMonitor → Service (by labels) → port (by name) → the pods (by selector).
    let monitor = only(pod.manifests, "ServiceMonitor", None);
    let selector = &monitor.doc["spec"]["selector"]["matchLabels"];
    let service = pod
        .manifests
        .iter()
        .find(|m| {
            m.kind() == "Service"
                && selector.as_object().is_some_and(|labels| {
                    labels
                        .iter()
                        .all(|(key, value)| &m.doc["metadata"]["labels"][key] == value)
                })
        })
        .unwrap_or_else(|| panic!("no Service matches the ServiceMonitor's selector {selector}"));
    let pod_labels = &pod.deployment.doc["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service.doc["spec"]["selector"]
        .as_object()
        .unwrap_or_else(|| panic!("Service {} has no selector", service.name()))
    {
        assert_eq!(
            &pod_labels[key],
            value,
            "Service {} does not select the Deployment's pods",
            service.name()
        );
    }
    let endpoints = array(
        &monitor.doc["spec"]["endpoints"],
        "ServiceMonitor endpoints",
    );
    assert!(!endpoints.is_empty(), "the ServiceMonitor has no endpoints");
    for endpoint in endpoints {
        assert_eq!(endpoint["path"], "/metrics");
        let port_name = text(&endpoint["port"], "endpoint port");
        let port = array(&service.doc["spec"]["ports"], "Service ports")
            .iter()
            .find(|port| port["name"] == port_name)
            .unwrap_or_else(|| panic!("Service {} has no port named {port_name}", service.name()));
        assert_eq!(
            pod.sidecar_port(&port["targetPort"]),
            pod.admin.port(),
            "the scraped Service port must lead to the admin port"
        );
    }
}

#[test]
fn config_and_secret_are_mounted_where_the_sidecar_looks_for_them() {
    let manifests = manifests();
    let pod = Pod::new(&manifests);
    // Pod::new found the ConfigMap file at --config's path, mounted without subPath.
    assert!(
        pod.config_path.starts_with('/'),
        "--config must be absolute"
    );

    let secret_file = text(
        &pod.config["credentials"]["channel_secret_file"],
        "credentials.channel_secret_file",
    );
    let (volume, key) = volume_holding(pod.spec, pod.sidecar, secret_file);
    let secret_name = text(
        &volume["secret"]["secretName"],
        "the secret volume's secretName",
    );
    let secret = only(pod.manifests, "Secret", Some(secret_name));
    assert!(
        secret.doc["stringData"].get(&key).is_some() || secret.doc["data"].get(&key).is_some(),
        "Secret {secret_name} has no key `{key}`, which credentials.channel_secret_file reads"
    );

    // Only the sidecar may see the secret.
    let secret_volume = text(&volume["name"], "volume name");
    for container in array(&pod.spec["containers"], "containers") {
        let name = container["name"].as_str().unwrap_or_default();
        let mounts = container["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !mounts.iter().any(|mount| mount["name"] == secret_volume),
            "container {name} mounts the channel secret"
        );
        let env = container["env"].as_array().cloned().unwrap_or_default();
        assert!(
            !env.iter()
                .any(|var| var["valueFrom"]["secretKeyRef"]["name"] == secret_name),
            "container {name} reads the channel secret into its environment"
        );
        let env_from = container["envFrom"].as_array().cloned().unwrap_or_default();
        assert!(
            !env_from
                .iter()
                .any(|from| from["secretRef"]["name"] == secret_name),
            "container {name} reads the channel secret into its environment"
        );
    }
}

#[test]
fn the_configmap_config_and_the_container_args_pass_the_binarys_check() {
    let manifests = manifests();
    let pod = Pod::new(&manifests);
    // The container's own args, minus --config (the temp copy replaces it), so that a
    // flag the binary does not know fails here rather than in a crash-looping pod.
    let mut extra = Vec::new();
    let mut args = pod.args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            args.next();
        } else if !arg.starts_with("--config=") {
            extra.push(arg.clone());
        }
    }
    let config = TempFile::with_contents("sidecar.yaml", pod.config_text.as_bytes());
    let mut cli =
        Cli::check_config(config.path_str()).env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET);
    for arg in extra {
        cli = cli.arg(arg);
    }
    let output = cli.run();
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.contains("configuration OK"), "{output:?}");
}

#[test]
fn the_sidecar_container_is_hardened_and_bounded() {
    let manifests = manifests();
    let pod = Pod::new(&manifests);
    let context = &pod.sidecar["securityContext"];
    let pod_context = &pod.spec["securityContext"];
    let run_as_non_root = if context["runAsNonRoot"].is_null() {
        &pod_context["runAsNonRoot"]
    } else {
        &context["runAsNonRoot"]
    };
    assert_eq!(run_as_non_root, true, "runAsNonRoot");
    assert_ne!(context["runAsUser"], 0, "runAsUser 0 is root");
    assert_eq!(
        context["readOnlyRootFilesystem"], true,
        "readOnlyRootFilesystem"
    );
    assert_eq!(
        context["allowPrivilegeEscalation"], false,
        "allowPrivilegeEscalation"
    );
    assert_ne!(context["privileged"], true, "privileged");
    let dropped = array(&context["capabilities"]["drop"], "capabilities.drop");
    assert!(
        dropped.iter().any(|cap| cap == "ALL"),
        "capabilities must drop ALL"
    );
    assert!(
        context["capabilities"]["add"].is_null(),
        "the sidecar needs no capability (its ports are above 1024)"
    );

    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !pod.sidecar["resources"][bound][resource].is_null(),
                "the sidecar has no resources.{bound}.{resource}"
            );
        }
    }

    let drain = pod.config["shutdown"]["drain_timeout"]
        .as_str()
        .map_or(DEFAULT_DRAIN_TIMEOUT, duration);
    let grace = pod.spec["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(
        Duration::from_secs(grace) > drain,
        "terminationGracePeriodSeconds {grace} must exceed the drain timeout {drain:?}, or the kubelet kills calls in flight"
    );
    assert!(
        Duration::from_secs(grace) >= LONGEST_MONEY_CALL,
        "terminationGracePeriodSeconds {grace} must cover a capture in flight ({LONGEST_MONEY_CALL:?})"
    );
}

// ---------------------------------------------------------------------------------------
// The container image.

/// The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let (instruction, arguments) = pending.split_once(' ').unwrap_or((&pending, ""));
        instructions.push((
            instruction.to_ascii_uppercase(),
            arguments.trim().to_owned(),
        ));
        pending.clear();
    }
    instructions
}

/// The words of an exec-form (`["a", "b"]`) instruction.
fn exec_form(arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments)
        .unwrap_or_else(|error| panic!("`{arguments}` is not exec form (a JSON list): {error}"))
}

fn version_numbers(version: &str) -> Vec<u64> {
    version
        .split('.')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("bad version {version}"))
        })
        .collect()
}

#[test]
fn the_image_is_multi_stage_non_root_and_exposes_what_the_manifests_use() {
    let instructions = dockerfile();
    let all = |name: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(instruction, _)| instruction == name)
            .map(|(_, arguments)| arguments.as_str())
            .collect()
    };
    assert!(
        all("FROM").len() >= 2,
        "a multi-stage build: a build stage and a small final stage"
    );
    assert!(
        all("COPY").iter().any(|copy| copy.starts_with("--from=")),
        "the final stage must copy the binary from the build stage"
    );

    let user = all("USER")
        .last()
        .map(|user| user.to_string())
        .unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default();
    let uid: u32 = uid.parse().unwrap_or_else(|_| {
        panic!("USER `{user}` must be numeric: Kubernetes cannot check runAsNonRoot against a name")
    });
    assert_ne!(uid, 0, "the image must not run as root");

    let exposed: BTreeSet<u16> = all("EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .map(|port| port.trim_end_matches("/tcp").parse().unwrap_or(0))
        .collect();
    let manifests = manifests();
    let pod = Pod::new(&manifests);
    for (what, port) in [("proxy", pod.listen().port()), ("admin", pod.admin.port())] {
        assert!(
            exposed.contains(&port),
            "EXPOSE lacks the {what} port {port}: {exposed:?}"
        );
    }

    // The Deployment passes args only, so the ENTRYPOINT must be the binary, and the
    // image's default --config must be where the manifests mount the ConfigMap.
    let entrypoint = exec_form(all("ENTRYPOINT").last().copied().unwrap_or_default());
    assert!(
        entrypoint.len() == 1 && entrypoint[0].ends_with("/linepay-sidecar"),
        "ENTRYPOINT must be the binary alone, got {entrypoint:?}"
    );
    assert!(
        all("COPY")
            .iter()
            .any(|copy| copy.starts_with("--from=") && copy.ends_with(&entrypoint[0])),
        "no COPY --from puts the binary at {}",
        entrypoint[0]
    );
    let cmd = exec_form(all("CMD").last().copied().unwrap_or_default());
    assert_eq!(
        flag_value(&cmd, "--config").as_deref(),
        Some(pod.config_path.as_str()),
        "the image's default --config must be the path the manifests use"
    );

    // The toolchain the image builds with is at least the crate's rust-version.
    let rust_version = all("ARG")
        .iter()
        .find_map(|arg| arg.strip_prefix("RUST_VERSION="))
        .unwrap_or_else(|| panic!("no ARG RUST_VERSION= default"));
    let manifest = read("Cargo.toml");
    let floor = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|version| version.trim_matches('"'))
        .unwrap_or_else(|| panic!("Cargo.toml has no rust-version"));
    assert!(
        version_numbers(rust_version) >= version_numbers(floor),
        "the image builds with Rust {rust_version}, below the crate's rust-version {floor}"
    );
}

/// The image's HEALTHCHECK, in exec form (distroless has no shell), runs the binary's
/// `healthcheck`: run here as written against a real sidecar, it exits 0; its own
/// timeout stays below Docker's.
#[tokio::test(flavor = "multi_thread")]
async fn the_images_healthcheck_is_the_binarys_own_and_passes_against_a_running_sidecar() {
    let instructions = dockerfile();
    let checks: Vec<&str> = instructions
        .iter()
        .filter(|(instruction, _)| instruction == "HEALTHCHECK")
        .map(|(_, arguments)| arguments.as_str())
        .collect();
    assert_eq!(checks.len(), 1, "one HEALTHCHECK: {checks:?}");
    let (options, command) = checks[0]
        .split_once("CMD ")
        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {}", checks[0]));
    let words = exec_form(command);
    let entrypoint = instructions
        .iter()
        .rev()
        .find(|(instruction, _)| instruction == "ENTRYPOINT")
        .map(|(_, arguments)| exec_form(arguments))
        .unwrap_or_default();
    assert_eq!(
        words.first(),
        entrypoint.first(),
        "the HEALTHCHECK must run the image's binary"
    );
    assert_eq!(
        words.get(1).map(String::as_str),
        Some("healthcheck"),
        "{words:?}"
    );
    let docker_timeout = options
        .split_whitespace()
        .find_map(|option| option.strip_prefix("--timeout="))
        .map(duration)
        .unwrap_or(Duration::from_secs(30));
    let own_timeout = flag_value(&words, "--timeout")
        .map(|text| duration(&text))
        .unwrap_or(Duration::from_secs(2));
    assert!(
        own_timeout < docker_timeout,
        "healthcheck --timeout {own_timeout:?} must stay below HEALTHCHECK --timeout {docker_timeout:?}"
    );

    // As written, plus the test sidecar's admin address through the variable the
    // Dockerfile tells users to set.
    let sidecar = crate::util::Sidecar::new()
        .upstream(crate::util::closed_port_url().await)
        .start()
        .await;
    let admin = sidecar.admin_addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        words[1..]
            .iter()
            .fold(Cli::new(), |cli, word| cli.arg(word))
            .env("LINEPAY_SIDECAR_ADMIN_LISTEN", admin)
            .run()
    })
    .await
    .expect("healthcheck thread");
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn the_docker_build_context_lets_through_exactly_what_the_build_copies() {
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        "start from nothing (`*`) so target/ and .git/ never enter the build context"
    );
    let allowed: BTreeSet<&str> = rules
        .iter()
        .filter_map(|rule| rule.strip_prefix('!'))
        .map(|rule| rule.trim_end_matches('/'))
        .collect();
    assert!(
        !allowed.contains("target"),
        "target/ must stay out of the context"
    );
    for (instruction, arguments) in dockerfile() {
        if instruction != "COPY" || arguments.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = arguments.split_whitespace().collect();
        for source in &words[..words.len().saturating_sub(1)] {
            assert!(
                allowed.contains(source.trim_end_matches('/')),
                "the Dockerfile copies {source}, which .dockerignore keeps out"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// systemd.

/// `key=value` lines of one section of a unit file (repeated keys kept, in order).
fn unit_section(unit: &str, section: &str) -> Vec<(String, String)> {
    let header = format!("[{section}]");
    let mut inside = false;
    let mut entries = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && !line.starts_with('#') && !line.starts_with(';') {
            if let Some((key, value)) = line.split_once('=') {
                entries.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    entries
}

/// A directory under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("linepay-sidecar-it-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A capture in flight (60 s read timeout + 5 s connect) plus its reconciliation (10 s):
/// what every stop grace period must cover (docs/money-calls.md).
const LONGEST_MONEY_CALL: Duration = Duration::from_secs(75);

const UNIT: &str = "deploy/systemd/linepay-sidecar.service";

#[test]
fn the_systemd_unit_is_hardened_and_passes_the_secret_as_a_credential() {
    let unit = read(UNIT);
    let service = unit_section(&unit, "Service");
    let get = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
            .collect()
    };
    let one = |key: &str| -> String {
        let values = get(key);
        assert_eq!(
            values.len(),
            1,
            "[Service] {key}= must be set once: {values:?}"
        );
        values[0].to_owned()
    };

    let dynamic = get("DynamicUser").contains(&"yes");
    let user = get("User");
    assert!(
        dynamic || user.iter().any(|user| *user != "root" && *user != "0"),
        "run as DynamicUser=yes or a dedicated User="
    );
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(matches!(
        one("ProtectHome").as_str(),
        "yes" | "read-only" | "tmpfs"
    ));
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("CapabilityBoundingSet"), "", "no capabilities at all");

    let credential = one("LoadCredential");
    let (credential_name, credential_source) = credential
        .split_once(':')
        .unwrap_or_else(|| panic!("LoadCredential={credential} is not NAME:PATH"));
    assert!(
        credential_source.starts_with('/'),
        "LoadCredential source must be absolute"
    );

    let exec_start = one("ExecStart");
    let words: Vec<String> = exec_start.split_whitespace().map(str::to_owned).collect();
    assert!(
        words[0].starts_with('/'),
        "ExecStart must name the binary by absolute path"
    );
    let secret_file = flag_value(&words, "--channel-secret-file")
        .unwrap_or_else(|| panic!("ExecStart passes no --channel-secret-file: {exec_start}"));
    assert!(
        secret_file == format!("${{CREDENTIALS_DIRECTORY}}/{credential_name}")
            || secret_file == format!("%d/{credential_name}"),
        "--channel-secret-file {secret_file} must be the `{credential_name}` credential of LoadCredential="
    );
    let config = flag_value(&words, "--config")
        .unwrap_or_else(|| panic!("ExecStart passes no --config: {exec_start}"));

    // Type=notify: the binary sends READY=1 once listening (tests/it/supervision.rs),
    // from its main process.
    assert_eq!(
        one("Type"),
        "notify",
        "units After= this one must wait for the port"
    );
    assert!(
        matches!(one("NotifyAccess").as_str(), "main" | "exec"),
        "NotifyAccess= main: only the sidecar's own process may say READY"
    );
    let files: usize = one("LimitNOFILE")
        .split(':')
        .next()
        .and_then(|soft| soft.parse().ok())
        .unwrap_or_else(|| panic!("LimitNOFILE= must be a number"));
    assert!(
        files > 2 * DEFAULT_MAX_CONNECTIONS,
        "LimitNOFILE={files}: each of {DEFAULT_MAX_CONNECTIONS} app connections may hold one to LINE Pay too"
    );

    let reload = one("ExecReload");
    assert!(
        reload.contains("kill") && reload.contains("-HUP") && reload.contains("$MAINPID"),
        "ExecReload must send SIGHUP to the sidecar: {reload}"
    );
    // Descriptors for request.max_connections (default 1024) app connections, as many
    // upstream ones, the pool and the admin port: the sidecar needs 2240 and, under
    // `SystemCallFilter=~@resources`, may not raise its own limit.
    let nofile: u64 = one("LimitNOFILE")
        .parse()
        .unwrap_or_else(|_| panic!("LimitNOFILE must be a number"));
    assert!(
        nofile >= 2240,
        "LimitNOFILE={nofile} is below what the default request.max_connections needs (2240)"
    );
    let stop = duration(&one("TimeoutStopSec"));
    assert!(
        stop > DEFAULT_DRAIN_TIMEOUT,
        "TimeoutStopSec {stop:?} must exceed the drain timeout, or systemd kills calls in flight"
    );
    assert!(
        stop >= LONGEST_MONEY_CALL,
        "TimeoutStopSec {stop:?} must cover a capture in flight ({LONGEST_MONEY_CALL:?})"
    );

    // The unit's own arguments, with its paths pointed at stand-ins, pass `check`:
    // the flags exist and the credential path resolves to a readable secret.
    let credentials = TempDir::new("credentials");
    let secret = credentials.0.join(credential_name);
    std::fs::write(&secret, format!("{CHANNEL_SECRET}\n"))
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", secret.display()));
    let config_copy =
        TempFile::with_contents("vm-sidecar.yaml", read("config/minimal.yaml").as_bytes());
    let mut cli = Cli::new().arg("check");
    for word in &words[1..] {
        let word = word
            .replace("${CREDENTIALS_DIRECTORY}", &credentials.0.to_string_lossy())
            .replace(&config, config_copy.path_str());
        cli = cli.arg(word);
    }
    let output = cli.run();
    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stdout.contains("--channel-secret-file"),
        "the secret must come from the credential: {output:?}"
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let analyze_exists = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !analyze_exists {
        // Straight to stderr: eprintln! output of a passing test is captured.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED systemd-analyze verify of {UNIT}: systemd-analyze is not installed (the other unit checks ran)"
        );
        return;
    }
    // verify insists that ExecStart's binary exists: point it at the one just built.
    let unit = read(UNIT);
    let binary = env!("CARGO_BIN_EXE_linepay-sidecar");
    let start = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .and_then(|command| command.split_whitespace().next())
        .unwrap_or_else(|| panic!("{UNIT} has no ExecStart="));
    let dir = TempDir::new("systemd");
    let copy = dir.0.join("linepay-sidecar.service");
    std::fs::write(
        &copy,
        unit.replace(
            &format!("ExecStart={start}"),
            &format!("ExecStart={binary}"),
        ),
    )
    .unwrap_or_else(|error| panic!("cannot write {}: {error}", copy.display()));

    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap_or_else(|error| panic!("cannot run systemd-analyze: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // An unknown key is only a warning ("Unknown key ..., ignoring") with exit 0: any
    // line about this unit counts as a failure.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("linepay-sidecar.service"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{stderr}",
        output.status
    );
}

// ---------------------------------------------------------------------------------------
// The example configs.

#[test]
fn the_example_configs_pass_check_with_the_secret_from_the_environment() {
    for file in ["config/sidecar.yaml", "config/minimal.yaml"] {
        let output = Cli::check_config(repo_path(file))
            .env("LINEPAY_CHANNEL_SECRET", CHANNEL_SECRET)
            .run();
        assert!(output.status.success(), "{file}: {output:?}");
        assert!(
            output.stdout.contains("configuration OK")
                && output.stdout.contains("LINEPAY_CHANNEL_SECRET"),
            "{file}: {output:?}"
        );
        assert!(
            !output.stdout.contains(CHANNEL_SECRET),
            "{file}: secret printed"
        );
    }
}

#[test]
fn the_example_configs_pass_check_with_the_secret_from_a_file_flag() {
    let secret =
        TempFile::with_contents("channel-secret", format!("{CHANNEL_SECRET}\n").as_bytes());
    for file in ["config/sidecar.yaml", "config/minimal.yaml"] {
        let output = Cli::check_config(repo_path(file))
            .arg("--channel-secret-file")
            .arg(secret.path_str())
            .run();
        assert!(output.status.success(), "{file}: {output:?}");
        assert!(
            output.stdout.contains("configuration OK")
                && output.stdout.contains("--channel-secret-file"),
            "{file}: {output:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The prose against the deploy files: a value the docs quote from a deploy file (a grace
// period, a file limit, a memory quantity, an alert name) is read from that file here,
// so changing one without the other fails.

/// Every page a reader takes values from: README.md, docs/, the examples' README, the
/// example configs, and the READMEs beside the deploy files.
fn prose_pages() -> Vec<(String, String)> {
    let mut names = vec![
        "README.md".to_owned(),
        "examples/README.md".to_owned(),
        "config/sidecar.yaml".to_owned(),
        "config/minimal.yaml".to_owned(),
        "deploy/README.md".to_owned(),
    ];
    for dir in ["docs", "deploy"] {
        let mut found = Vec::new();
        let mut stack = vec![repo_path(dir)];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
            for path in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|ext| ext == "md") {
                    let relative = path
                        .strip_prefix(repo_path(""))
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .into_owned();
                    found.push(relative);
                }
            }
        }
        found.sort();
        names.extend(found);
    }
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let text = read(&name);
            (name, text)
        })
        .collect()
}

/// The token after each `marker` in `text` (up to a space, backtick, quote, comma,
/// semicolon or closing bracket), with its line number; `marker` must not follow a
/// letter or digit (`TimeoutStopSec=` is not `XTimeoutStopSec=`).
fn values_after<'a>(text: &'a str, marker: &str) -> Vec<(usize, &'a str)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(at) = rest.find(marker) {
            let before = line[..offset + at].chars().next_back();
            let after = &rest[at + marker.len()..];
            let end = after
                .find(|c: char| c.is_whitespace() || "`'\",;)]".contains(c))
                .unwrap_or(after.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && end > 0 {
                found.push((number + 1, after[..end].trim_end_matches('.')));
            }
            offset += at + marker.len();
            rest = after;
        }
    }
    found
}

/// A systemd time span: a bare number is seconds.
fn systemd_span(value: &str) -> Option<Duration> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    parse_duration(value).ok()
}

#[test]
fn systemd_settings_quoted_in_the_docs_are_the_units() {
    let unit = read("deploy/systemd/linepay-sidecar.service");
    // [Service] only: the docs' `After=` and `Wants=` lines are the app's unit, ordered
    // after this one.
    let settings = unit_section(&unit, "Service");
    let keys: BTreeSet<&str> = settings.iter().map(|(key, _)| key.as_str()).collect();
    assert!(keys.contains("TimeoutStopSec") && keys.contains("LimitNOFILE"));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (page, text) in prose_pages() {
        for key in &keys {
            let values: Vec<&str> = settings
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect();
            // Values with spaces (ExecStart, filters) are quoted in part; not compared.
            if values
                .iter()
                .any(|value| value.contains(char::is_whitespace))
            {
                continue;
            }
            for (line, quoted) in values_after(&text, &format!("{key}=")) {
                checked += 1;
                let same = values.iter().any(|value| {
                    *value == quoted
                        || (key.ends_with("Sec")
                            && systemd_span(value).is_some()
                            && systemd_span(value) == systemd_span(quoted))
                });
                if !same {
                    wrong.push(format!(
                        "{page}:{line}: {key}={quoted}, the unit says {key}={}",
                        values.join(" / ")
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 3,
        "only {checked} systemd settings quoted: is the scan broken?"
    );
}

#[test]
fn grace_periods_quoted_in_the_docs_are_the_deploy_files() {
    let manifests = manifests();
    let deployment = only(&manifests, "Deployment", None);
    let kubernetes = deployment.doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("the Deployment sets terminationGracePeriodSeconds");
    let compose: Value =
        serde_saphyr::from_str(&read("deploy/compose/docker-compose.yaml")).expect("compose");
    let compose = text(
        &compose["services"]["sidecar"]["stop_grace_period"],
        "the sidecar's stop_grace_period",
    )
    .to_owned();
    let compose = parse_duration(&compose).expect("stop_grace_period is a duration");

    let mut checked = 0;
    let mut wrong = Vec::new();
    for (page, text) in prose_pages() {
        for (line, quoted) in values_after(&text, "terminationGracePeriodSeconds: ") {
            checked += 1;
            if quoted.parse::<u64>().ok() != Some(kubernetes) {
                wrong.push(format!(
                    "{page}:{line}: terminationGracePeriodSeconds: {quoted}, the Deployment says {kubernetes}"
                ));
            }
        }
        for (line, quoted) in values_after(&text, "stop_grace_period: ") {
            checked += 1;
            if parse_duration(quoted).ok() != Some(compose) {
                wrong.push(format!(
                    "{page}:{line}: stop_grace_period: {quoted}, the compose file says {compose:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 2,
        "only {checked} grace periods quoted: is the scan broken?"
    );
}

/// Every memory quantity the manifests set (requests and limits of every container).
fn manifest_memory_quantities(manifests: &[Manifest]) -> BTreeSet<String> {
    fn walk(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("memory", Value::String(quantity)) => {
                            out.insert(quantity.clone());
                        }
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for manifest in manifests {
        walk(&manifest.doc, &mut out);
    }
    out
}

#[test]
fn memory_quantities_quoted_in_the_docs_are_the_manifests() {
    let quantities = manifest_memory_quantities(&manifests());
    assert!(quantities.contains("128Mi"), "{quantities:?}");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (page, text) in prose_pages() {
        for (number, line) in text.lines().enumerate() {
            // `128Mi` or `128 Mi` (Kubernetes' unit), not `128 MiB` (a measurement).
            let words: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || "`'\"(),;:.".contains(c))
                .filter(|word| !word.is_empty())
                .collect();
            for (index, word) in words.iter().enumerate() {
                let quantity = if *word == "Mi" && index > 0 {
                    words[index - 1]
                } else if let Some(digits) = word.strip_suffix("Mi") {
                    digits
                } else {
                    continue;
                };
                if quantity.is_empty() || !quantity.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                checked += 1;
                if !quantities.contains(&format!("{quantity}Mi")) {
                    wrong.push(format!(
                        "{page}:{}: {quantity} Mi is set nowhere in deploy/kubernetes ({quantities:?})",
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 2,
        "only {checked} memory quantities quoted: is the scan broken?"
    );
}

#[test]
fn alert_names_in_the_docs_are_the_rules() {
    let rules = read("deploy/prometheus/alerts.yaml");
    let alerts: BTreeSet<String> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    // CamelCase names starting `LinePay` that are no alert: a Python SDK's class.
    let not_alerts = ["LinePayApi"];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (page, text) in prose_pages() {
        for (number, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("LinePay") {
                let before = line[..line.len() - rest.len() + at].chars().next_back();
                let word: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                rest = &rest[at + "LinePay".len()..];
                let camel = word[7..].starts_with(|c: char| c.is_ascii_uppercase());
                if !camel
                    || before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
                    || not_alerts.contains(&word.as_str())
                {
                    continue;
                }
                checked += 1;
                if !alerts.contains(&word) {
                    wrong.push(format!(
                        "{page}:{}: {word} is no alert of deploy/prometheus/alerts.yaml",
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 5,
        "only {checked} alert names quoted: is the scan broken?"
    );
}

/// The ports written `host:PORT` on a line of `text`, with the line number.
fn quoted_ports(text: &str) -> Vec<(usize, u16)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices(':') {
            let before = line[..at].chars().next_back();
            // An address (`127.0.0.1:`, `localhost:`) or a bare `:PORT`, not `http:`.
            if !before.is_some_and(|c| c.is_ascii_digit() || c == 't' || "` (".contains(c)) {
                continue;
            }
            let digits: String = line[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if (4..=5).contains(&digits.len()) {
                if let Ok(port) = digits.parse() {
                    found.push((number + 1, port));
                }
            }
        }
    }
    found
}

/// The deploy page and the deploy READMEs quote only the ports the image exposes (the
/// proxy's and the admin port), which are the binary's defaults.
#[test]
fn ports_quoted_by_the_deploy_docs_are_the_images() {
    let exposed: BTreeSet<u16> = dockerfile()
        .iter()
        .filter(|(instruction, _)| instruction == "EXPOSE")
        .flat_map(|(_, ports)| {
            ports
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|port| port.parse().unwrap_or_else(|_| panic!("EXPOSE {port}")))
        .collect();
    let defaults: BTreeSet<u16> = [DEFAULT_LISTEN, DEFAULT_ADMIN_LISTEN]
        .iter()
        .map(|address| address.parse::<SocketAddr>().expect("default").port())
        .collect();
    assert_eq!(
        exposed, defaults,
        "the image exposes other ports than the defaults"
    );
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (page, text) in prose_pages() {
        if page != "docs/deploying.md"
            && !(page.starts_with("deploy/") && page.ends_with("README.md"))
        {
            continue;
        }
        for (line, port) in quoted_ports(&text) {
            checked += 1;
            if !exposed.contains(&port) {
                wrong.push(format!(
                    "{page}:{line}: port {port}, not one the image exposes {exposed:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 10,
        "only {checked} ports quoted: is the scan broken?"
    );
}
