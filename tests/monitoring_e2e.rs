//! Monitoring checked against a real Prometheus (Debian's): it finds the
//! operator and the agents in the lab cluster with the relabeling of the
//! chart's own PodMonitor, loads the
//! chart's rules (their `for` shortened to seconds), and then, after an
//! upgrade, a refused upgrade and a session shut down at the router, answers every
//! query of the chart's Grafana dashboard and fires and resolves the alerts
//! those failures should fire.
//!
//! Debian builds Prometheus without Kubernetes service discovery, so the
//! test stands in for it: every second it lists the cluster's pods and
//! writes them, with the `__meta_kubernetes_pod_*` labels Kubernetes SD
//! gives a pod (its IP, ready, phase, labels, annotations, container
//! ports), to a file Prometheus discovers them from. Everything after
//! discovery — relabeling, scraping, rules, alerts, queries — is
//! Prometheus' own.
//!
//! Shares the lab's nodes with the other end-to-end tests (nextest group
//! `lab-nodes`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nonstop_lab::testing::{Lab, OPERATOR_NS, eventually};
use serde_json::Value;
use support::{NODES, Setup};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A Prometheus process with its own config and storage, on loopback.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    fn start(config: &str, rules: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("nonstop-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package; script/test installs it)");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let prometheus = Prometheus { child, dir, port, runtime };
        eventually(Duration::from_secs(30), "Prometheus ready", || prometheus.get("/-/ready"));
        prometheus
    }

    fn get(&self, path: &str) -> Result<String, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        self.runtime
            .block_on(nonstop_agent::http::get_tcp(addr, path, Duration::from_secs(5)))
            .map_err(|e| format!("{e}; log:\n{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
    }

    /// The instant vector `query` evaluates to.
    fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let body = self.get(&format!("/api/v1/query?query={}", encode(query)))?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{query}: {answer}"));
        }
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts firing now, by name.
    fn firing(&self) -> Result<Vec<Value>, String> {
        let answer: Value =
            serde_json::from_str(&self.get("/api/v1/alerts")?).map_err(|e| e.to_string())?;
        let alerts = answer["data"]["alerts"].as_array().cloned().unwrap_or_default();
        Ok(alerts.into_iter().filter(|a| a["state"] == "firing").collect())
    }

    fn wait_firing(&self, alert: &str, labels: &[(&str, &str)], firing: bool) {
        let what = format!("{alert} {labels:?} {}", if firing { "firing" } else { "resolved" });
        eventually(Duration::from_secs(90), &what, || {
            let alerts = self.firing()?;
            let found = alerts.iter().any(|a| {
                a["labels"]["alertname"] == alert
                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
            });
            let names: Vec<_> = alerts.iter().map(|a| a["labels"].to_string()).collect();
            if found == firing { Ok(()) } else { Err(names.join("; ")) }
        });
    }
}

/// PromQL as a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The chart's PodMonitor, rendered by Helm, as a Prometheus scrape job:
/// its selector and relabelings in Prometheus' own spelling, plus the
/// labels the prometheus-operator adds (namespace, pod).
fn agents_job(s: &Setup, pods_file: &Path) -> String {
    let chart = root().join("charts/nonstop");
    let text = s
        .lab
        .lab(&[
            "helm",
            "template",
            "nonstop",
            chart.to_str().unwrap(),
            "--set",
            "metrics.podMonitor.enabled=true",
        ])
        .unwrap();
    let monitor: Value = text
        .split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .find(|o| o["kind"] == "PodMonitor")
        .expect("the chart's PodMonitor");
    let mut relabel = Vec::new();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        relabel.push(serde_json::json!({
            "source_labels": [format!("__meta_kubernetes_pod_label_{}", meta_name(key))],
            "regex": value, "action": "keep",
        }));
    }
    for r in monitor["spec"]["podMetricsEndpoints"][0]["relabelings"].as_array().unwrap() {
        let mut rule = serde_json::Map::new();
        for (from, to) in [
            ("sourceLabels", "source_labels"),
            ("targetLabel", "target_label"),
            ("regex", "regex"),
            ("replacement", "replacement"),
            ("action", "action"),
        ] {
            if let Some(v) = r.get(from) {
                rule.insert(to.into(), v.clone());
            }
        }
        relabel.push(Value::Object(rule));
    }
    for (meta, label) in
        [("__meta_kubernetes_namespace", "namespace"), ("__meta_kubernetes_pod_name", "pod")]
    {
        relabel.push(serde_json::json!({"source_labels": [meta], "target_label": label}));
    }
    let job = serde_json::json!({
        "job_name": "nonstop-agents",
        "metrics_path": monitor["spec"]["podMetricsEndpoints"][0]["path"],
        "file_sd_configs": [{"files": [pods_file], "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    });
    serde_json::to_string(&job).unwrap()
}

/// The operator's metrics port on each replica, as the chart's
/// ServiceMonitor scrapes it.
fn operator_job(pods_file: &Path) -> String {
    let job = serde_json::json!({
        "job_name": "nonstop-operator",
        "file_sd_configs": [{"files": [pods_file], "refresh_interval": "1s"}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_namespace"], "regex": OPERATOR_NS, "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
             "regex": "nonstop-operator", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": "metrics", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    });
    serde_json::to_string(&job).unwrap()
}

/// A label name as Kubernetes SD spells it: anything else than letters
/// and digits becomes `_`.
fn meta_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// The target groups Kubernetes SD (role pod) would give for `pods` (a
/// `kubectl get pods -o json`): one target per container port, or one per
/// container without ports.
fn pod_targets(pods: &Value) -> Value {
    let mut groups = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let Some(ip) = pod["status"]["podIP"].as_str() else { continue };
        let meta = &pod["metadata"];
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let mut labels = serde_json::Map::new();
        let mut set = |k: String, v: &Value| {
            labels.insert(k, v.as_str().unwrap_or_default().into());
        };
        set("__meta_kubernetes_namespace".into(), &meta["namespace"]);
        set("__meta_kubernetes_pod_name".into(), &meta["name"]);
        set("__meta_kubernetes_pod_uid".into(), &meta["uid"]);
        set("__meta_kubernetes_pod_ip".into(), &ip.into());
        set("__meta_kubernetes_pod_phase".into(), &pod["status"]["phase"]);
        set("__meta_kubernetes_pod_ready".into(), &ready.to_string().into());
        for (kind, field) in [("label", "labels"), ("annotation", "annotations")] {
            for (k, v) in meta[field].as_object().into_iter().flatten() {
                set(format!("__meta_kubernetes_pod_{kind}_{}", meta_name(k)), v);
            }
        }
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let ports = container["ports"].as_array().cloned().unwrap_or_default();
            if ports.is_empty() {
                groups.push(serde_json::json!({"targets": [ip], "labels": labels}));
            }
            for port in ports {
                let mut labels = labels.clone();
                labels.insert(
                    "__meta_kubernetes_pod_container_port_name".into(),
                    port["name"].as_str().unwrap_or_default().into(),
                );
                let target = format!("{ip}:{}", port["containerPort"]);
                groups.push(serde_json::json!({"targets": [target], "labels": labels}));
            }
        }
    }
    Value::Array(groups)
}

/// Keeps `file` up to date with the cluster's pods, every second, until
/// dropped: the stand-in for Kubernetes SD.
struct Discovery {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Discovery {
    fn start(lab: &Lab, file: PathBuf) -> Discovery {
        let stop = Arc::new(AtomicBool::new(false));
        let (lab, flag) = (lab.clone(), stop.clone());
        let write = move || -> Result<(), String> {
            let pods: Value =
                serde_json::from_str(&lab.kubectl(&["get", "pods", "-A", "-o", "json"])?)
                    .map_err(|e| e.to_string())?;
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, pod_targets(&pods).to_string()).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &file).map_err(|e| e.to_string())
        };
        write().expect("the first listing of the pods");
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                if let Err(e) = write() {
                    eprintln!("discovery: {e}");
                }
            }
        });
        Discovery { stop, thread: Some(thread) }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The chart's rules with every `for` cut to 3 s, so that alerts fire
/// within a test.
fn rules_for_the_test() -> String {
    let rules =
        std::fs::read_to_string(root().join("charts/nonstop/files/prometheus-rules.yaml")).unwrap();
    let mut yaml: Value = serde_yaml_ng::from_str(&rules).unwrap();
    for group in yaml["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            if rule.get("for").is_some() {
                rule["for"] = "3s".into();
            }
        }
    }
    serde_yaml_ng::to_string(&yaml).unwrap()
}

/// Every query of every panel of the chart's dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("charts/nonstop/files/dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap().to_string();
            queries.push((title, target["expr"].as_str().unwrap().to_string()));
        }
    }
    queries
}

#[test]
fn prometheus_scrapes_both_sides_answers_the_dashboard_and_fires_the_alerts() {
    let s = Setup::new("e2e-monitoring");
    s.serving_v1("Handoff");
    let pods_file = std::env::temp_dir().join(format!("nonstop-pods-{}.json", std::process::id()));
    let _discovery = Discovery::start(&s.lab, pods_file.clone());
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n  - {}\n  - {}\n",
        operator_job(&pods_file),
        agents_job(&s, &pods_file)
    );
    let prometheus = Prometheus::start(&config, &rules_for_the_test());
    let gateway = [("namespace", s.ns.name.as_str()), ("gateway", "edge")];

    // Every node's active agent, found through the pod annotation and
    // labelled with its gateway and node; both operator replicas.
    eventually(Duration::from_secs(60), "each node's agent scraped", || {
        let up = prometheus.query(r#"nonstop_bgp_session_established{gateway="edge"} == 1"#)?;
        let mut nodes: Vec<_> = up.iter().filter_map(|r| r["metric"]["node"].as_str()).collect();
        nodes.sort();
        if nodes == NODES { Ok(()) } else { Err(format!("{up:?}")) }
    });
    eventually(Duration::from_secs(60), "both operator replicas scraped", || {
        let up = prometheus.query(r#"up{job="nonstop-operator"} == 1"#)?;
        if up.len() == 2 { Ok(()) } else { Err(format!("{up:?}")) }
    });

    // node-1's session shut down at the router, then let up again (before
    // any upgrade: a session down just after one fails the upgrade).
    let uplink = support::uplink(NODES[0]);
    s.router.set_session_enabled(&uplink, false).unwrap();
    let node = [("gateway", "edge"), ("node", NODES[0])];
    prometheus.wait_firing("NonstopBgpSessionDown", &node, true);
    prometheus.wait_firing("NonstopGatewaySessionsMissing", &gateway, true);

    s.router.set_session_enabled(&uplink, true).unwrap();
    prometheus.wait_firing("NonstopBgpSessionDown", &node, false);
    prometheus.wait_firing("NonstopGatewaySessionsMissing", &gateway, false);

    // An upgrade: the dashboard shows it.
    s.set_image("nonstop-agent:v2");
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    // A refused upgrade: the rollout stops, Degraded.
    s.set_image("nonstop-agent:v3");
    prometheus.wait_firing("NonstopRolloutFailed", &gateway, true);
    // A fixed image resumes the rollout.
    s.set_image("nonstop-agent:v1");
    prometheus.wait_firing("NonstopRolloutFailed", &gateway, false);
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(120));

    // Every panel has something to show after all that.
    for (panel, query) in dashboard_queries() {
        eventually(Duration::from_secs(30), &format!("panel {panel:?}: {query}"), || {
            let result = prometheus.query(&query)?;
            if result.is_empty() { Err("no series".into()) } else { Ok(()) }
        });
    }

    // Nothing else fires, once the last rollout has ended (with `for` cut to
    // 3 s, NonstopRolloutStuck fires during every rollout). Reconcile errors
    // are left out: a single conflict keeps their 5-minute rate above 0.
    eventually(Duration::from_secs(30), "no alert left firing", || {
        let left: Vec<_> = prometheus
            .firing()?
            .into_iter()
            .filter(|a| a["labels"]["alertname"] != "NonstopOperatorReconcileErrors")
            .map(|a| a["labels"].to_string())
            .collect();
        if left.is_empty() { Ok(()) } else { Err(left.join("; ")) }
    });
}
