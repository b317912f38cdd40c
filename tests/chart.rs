//! The Helm chart as Helm's own engine renders it (`lab helm`): defaults,
//! every value set, wrong types refused by name, and RBAC kept equal to
//! `deploy/operator.yaml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn lab() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_nonstop-operator")).parent().unwrap().join("lab")
}

/// `lab helm ARGS…`: stdout, or stderr as the error.
fn helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(lab()).arg("helm").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every rendered object (NOTES.txt is not one).
fn render(extra: &[&str]) -> Vec<Value> {
    let chart = root().join("charts/nonstop");
    let mut args = vec!["template", "nonstop", chart.to_str().unwrap(), "-n", "nonstop-system"];
    args.extend_from_slice(extra);
    let text = helm(&args).unwrap();
    text.split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter(|v| v.get("kind").is_some())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// The value of a container's environment variable.
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    let vars = container["env"].as_array().expect("an env list");
    &vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no {name}"))["value"]
}

fn strings(list: &Value) -> Vec<&str> {
    list.as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default()
}

#[test]
fn the_chart_renders_its_defaults() {
    let objects = render(&[]);
    let deployment = find(&objects, "Deployment").expect("a Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "nonstop-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/nonstop-dev/nonstop:0.1.0");
    // Gateways without spec.image run the same image (it holds both binaries).
    assert_eq!(env(container, "NONSTOP_AGENT_IMAGE"), "ghcr.io/nonstop-dev/nonstop:0.1.0");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(pod["affinity"]["podAntiAffinity"].is_object(), "one replica per node");
    assert!(find(&objects, "Service").is_some(), "metrics Service on by default");
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(find(&objects, kind).is_none(), "{kind} off by default");
    }
    assert!(
        named(&objects, "ConfigMap", "nonstop-operator-dashboard").is_none(),
        "dashboard off by default"
    );
    let args = strings(&container["args"]);
    assert!(!args.iter().any(|a| a.starts_with("--allowed-")), "no policy by default: {args:?}");
    // The leader Lease belongs to the release, so uninstall removes it.
    assert!(named(&objects, "Lease", "nonstop-operator").is_some());
    // helm uninstall first takes every gateway down, with its own rights.
    let job = named(&objects, "Job", "nonstop-uninstall").expect("the uninstall hook");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    let hook = &job["spec"]["template"]["spec"];
    assert_eq!(hook["serviceAccountName"], "nonstop-uninstall");
    assert_eq!(strings(&hook["containers"][0]["args"]), ["uninstall", "--timeout-seconds=240"]);
    let role = named(&objects, "ClusterRole", "nonstop-nonstop-uninstall").unwrap();
    assert_eq!(role["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    assert_eq!(strings(&role["rules"][0]["verbs"]), ["list", "delete"]);
    let lint = helm(&["lint", root().join("charts/nonstop").to_str().unwrap()]).unwrap();
    assert!(lint.contains("\"errors\": []"), "{lint}");
}

#[test]
fn every_value_reaches_the_objects() {
    let file = root().join("charts/nonstop/ci/every-value.yaml");
    let objects = render(&["-f", file.to_str().unwrap()]);
    let deployment = find(&objects, "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/nonstop:9.9.9");
    assert_eq!(container["imagePullPolicy"], "Always");
    let args = strings(&container["args"]);
    assert!(
        args.contains(&"--metrics=0.0.0.0:9999") && args.contains(&"--lease-seconds=20"),
        "{args:?}"
    );
    for policy in [
        "--allowed-namespaces=edge,infra",
        "--allowed-images=registry.example/",
        "--allowed-prefixes=203.0.113.0/24,2001:db8::/32",
    ] {
        assert!(args.contains(&policy), "{policy}: {args:?}");
    }
    assert_eq!(env(container, "NONSTOP_LOG"), "nonstop=debug,info");
    assert_eq!(env(container, "NONSTOP_LOG_FORMAT"), "json");
    assert_eq!(env(container, "NONSTOP_AGENT_IMAGE"), "registry.example/nonstop-agent:9.9.8");
    let job = named(&objects, "Job", "nonstop-uninstall").unwrap();
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 630);
    let hook = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(strings(&hook["args"]), ["uninstall", "--timeout-seconds=600"]);
    assert_eq!(hook["image"], "registry.example/nonstop:9.9.9");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry-login");
    assert_eq!(pod["tolerations"][0]["key"], "node-role.kubernetes.io/control-plane");
    assert!(
        pod["affinity"]["nodeAffinity"].is_object() && pod["affinity"]["podAntiAffinity"].is_null()
    );
    assert_eq!(container["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(pod["securityContext"]["runAsUser"], 1000);
    assert!(find(&objects, "Service").is_none());
    let monitor = find(&objects, "ServiceMonitor").expect("ServiceMonitor when enabled");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");

    // The agents: the pod's address with the port from the annotation the
    // operator writes, and the gateway and node as labels.
    let agents = find(&objects, "PodMonitor").expect("PodMonitor when enabled");
    assert_eq!(strings(&agents["spec"]["namespaceSelector"]["matchNames"]), ["edge"]);
    assert_eq!(
        agents["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "nonstop-agent"
    );
    let endpoint = &agents["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["interval"], "20s");
    let ready = &endpoint["relabelings"][0];
    assert_eq!(
        (&ready["sourceLabels"][0], &ready["action"]),
        (&Value::from("__meta_kubernetes_pod_ready"), &Value::from("keep")),
        "only the node's active agent"
    );
    let address = &endpoint["relabelings"][1];
    assert_eq!(
        strings(&address["sourceLabels"]),
        ["__meta_kubernetes_pod_ip", "__meta_kubernetes_pod_annotation_nonstop_dev_admin_port"]
    );
    assert_eq!(address["targetLabel"], "__address__");

    // The PrometheusRule carries the rule file promtool tests, unchanged.
    let rule = find(&objects, "PrometheusRule").expect("PrometheusRule when enabled");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let file = std::fs::read_to_string(root().join("charts/nonstop/files/prometheus-rules.yaml"));
    let file: Value = serde_yaml_ng::from_str(&file.unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
    assert!(rule["spec"]["groups"].as_array().is_some_and(|g| !g.is_empty()));

    // The dashboard, for Grafana's sidecar, where it looks.
    let dashboard =
        named(&objects, "ConfigMap", "nonstop-operator-dashboard").expect("the dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "nonstop");
    let json: Value = serde_json::from_str(dashboard["data"]["nonstop.json"].as_str().unwrap())
        .expect("the dashboard is JSON");
    let file = std::fs::read_to_string(root().join("charts/nonstop/files/dashboard.json"));
    assert_eq!(json, serde_json::from_str::<Value>(&file.unwrap()).unwrap());
}

#[test]
fn wrong_values_are_refused_by_name() {
    let chart = root().join("charts/nonstop");
    let cases = [
        ("replicas=two", "/replicas", "want integer"),
        ("metrics.port=70000", "/metrics/port", "maximum"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy", ""),
        ("metrics.serviceMonitor.interval=soon", "/metrics/serviceMonitor/interval", ""),
        ("replica=2", "replica", "additional"),
        ("uninstall.timeoutSeconds=soon", "/uninstall/timeoutSeconds", "want integer"),
        ("agent.image.tag=2", "/agent/image/tag", "want string"),
        ("policy.prefixes={203.0.113.0}", "/policy/prefixes/0", ""),
        ("logFormat=logfmt", "/logFormat", ""),
    ];
    for (set, path, why) in cases {
        let err = helm(&["template", "t", chart.to_str().unwrap(), "--set", set]).unwrap_err();
        assert!(err.contains(path) && err.contains(why), "--set {set}: {err}");
    }
}

#[test]
fn the_charts_rbac_is_the_plain_manifests_rbac() {
    let rules = |objects: &[Value]| {
        named(objects, "ClusterRole", "nonstop-nonstop-operator")
            .or_else(|| named(objects, "ClusterRole", "nonstop-operator"))
            .unwrap()["rules"]
            .clone()
    };
    let text = std::fs::read_to_string(root().join("deploy/operator.yaml")).unwrap();
    let plain: Vec<Value> =
        text.split("\n---").filter_map(|d| serde_yaml_ng::from_str(d).ok()).collect();
    assert_eq!(rules(&render(&[])), rules(&plain));
    let lease = |objects: &[Value]| find(objects, "Role").unwrap()["rules"].clone();
    assert_eq!(lease(&render(&[])), lease(&plain));
}

#[test]
fn uninstall_can_leave_the_gateways() {
    let objects = render(&["--set", "uninstall.removeGateways=false"]);
    assert!(find(&objects, "Job").is_none());
    assert!(named(&objects, "ClusterRole", "nonstop-nonstop-uninstall").is_none());
}
