//! The operator at scale: `nonstop-operator` (this build's release binary)
//! against the lab's real API server with 1,000 simulated nodes (see
//! `nodes.rs` for what is simulated and what is not).
//!
//! ```text
//!   phase 1  10 gateways × 100 nodes: converge, 60 s at rest, all 10 upgraded at once
//!   phase 2  1 gateway × 1,000 nodes: a full rollout with maxNodesInFlight 50, 10, 1
//! ```
//!
//! Reported from the operator's own metrics (it counts every request its
//! client sends) and /proc: API requests per reconcile, per node upgraded
//! and per minute at rest, reconcile latency p50/p99, peak memory, and each
//! rollout's time.
//!
//! Run: `script/bench-operator` (brings the lab up if it is down).
//! `NONSTOP_SCALE_NODES`, `NONSTOP_SCALE_IN_FLIGHT` (e.g. "50,10"),
//! `NONSTOP_SCALE_IDLE_SECONDS` change the sizes.

mod nodes;
mod operator;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use nonstop::api::BgpGateway;
use nonstop_lab::{controlplane, lab_dir, process};
use serde_json::json;

use operator::{Operator, Sample};

const NAMESPACE: &str = "nonstop-scale";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // Interrupted, the bench still cleans up (the guards' Drop): the
    // paused controller-manager, the simulated nodes, the lab's operator.
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let result = tokio::select! {
        result = run() => result,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        _ = terminate.recv() => Err("terminated".into()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let count: usize = env_or("NONSTOP_SCALE_NODES", 1000);
    let racks: usize = 10;
    let idle = Duration::from_secs(env_or("NONSTOP_SCALE_IDLE_SECONDS", 60));
    let in_flight: Vec<u32> = std::env::var("NONSTOP_SCALE_IN_FLIGHT")
        .unwrap_or_else(|_| "50,10,1".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let dir = lab_dir();
    controlplane::ready(&dir).map_err(|e| format!("the lab is not up (script/lab up): {e}"))?;
    let kubeconfig = controlplane::kubeconfig(&dir);
    let client = client(&kubeconfig).await?;

    let _quiet = Quiet::begin(&client, &dir).await?;
    say(&format!("{count} simulated nodes in {racks} racks"));
    nodes::create(&client, count, racks).await?;
    let kubelet = nodes::Kubelet::default();
    kubelet.serve_agents(count).await?;
    tokio::spawn(kubelet.clone().run(client.clone()));
    ensure_namespace(&client).await?;
    ensure_crd(&client).await?;

    let operator = Operator::start(&kubeconfig)?;
    operator.wait_ready().await?;
    let gateways = Api::<BgpGateway>::namespaced(client.clone(), NAMESPACE);
    let mut report = Vec::new();

    // Phase 1: 10 gateways of 100 nodes.
    let per_rack = count / racks;
    let names: Vec<String> = (0..racks).map(|r| format!("rack-{r}")).collect();
    let before = operator.sample().await?;
    let started = Instant::now();
    for name in &names {
        apply(&gateways, name, &[(nodes::RACK, name)], "scale/agent:1", 10).await?;
    }
    wait_rolled(&gateways, &names, per_rack, "scale/agent:1").await?;
    let converged = operator.sample().await?;
    report.push(row(
        &format!("{racks} gateways × {per_rack} nodes: start"),
        started,
        &before,
        &converged,
        count,
    ));

    let rest = operator.sample().await?;
    say(&format!("at rest for {} s", idle.as_secs()));
    tokio::time::sleep(idle).await;
    let rested = operator.sample().await?;
    report.push(row(
        &format!("at rest, {} s", idle.as_secs()),
        Instant::now() - idle,
        &rest,
        &rested,
        0,
    ));

    let started = Instant::now();
    for name in &names {
        apply(&gateways, name, &[(nodes::RACK, name)], "scale/agent:2", 10).await?;
    }
    wait_rolled(&gateways, &names, per_rack, "scale/agent:2").await?;
    let upgraded = operator.sample().await?;
    report.push(row(
        &format!("{racks} gateways upgraded at once (10 in flight each)"),
        started,
        &rested,
        &upgraded,
        count,
    ));
    delete_gateways(&gateways, &names).await?;

    // Phase 2: one gateway over every node.
    let all = vec!["all".to_string()];
    let before = operator.sample().await?;
    let started = Instant::now();
    apply(&gateways, "all", &[(nodes::SIMULATED, "true")], "scale/agent:1", 50).await?;
    wait_rolled(&gateways, &all, count, "scale/agent:1").await?;
    let mut last = operator.sample().await?;
    report.push(row(
        &format!("1 gateway × {count} nodes: start (50 in flight)"),
        started,
        &before,
        &last,
        count,
    ));
    for (i, m) in in_flight.iter().enumerate() {
        let image = format!("scale/agent:{}", i + 2);
        let started = Instant::now();
        apply(&gateways, "all", &[(nodes::SIMULATED, "true")], &image, *m).await?;
        wait_rolled(&gateways, &all, count, &image).await?;
        let now = operator.sample().await?;
        report.push(row(
            &format!("1 gateway × {count} nodes: rollout, {m} in flight"),
            started,
            &last,
            &now,
            count,
        ));
        last = now;
    }
    delete_gateways(&gateways, &all).await?;

    println!();
    println!("{}", operator::HEADER);
    for line in &report {
        println!("{line}");
    }
    println!("peak RSS of the operator: {:.1} MB", operator.peak_rss_mb());
    Ok(())
}

fn say(what: &str) {
    eprintln!("==> {what}");
}

fn row(what: &str, started: Instant, from: &Sample, to: &Sample, nodes: usize) -> String {
    operator::row(what, started.elapsed(), from, to, nodes)
}

async fn client(kubeconfig: &std::path::Path) -> Result<Client, String> {
    let file = Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// The bench's namespace and its `default` ServiceAccount, which pods need
/// and which the paused controller-manager would otherwise create.
async fn ensure_namespace(client: &Client) -> Result<(), String> {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("namespace {NAMESPACE}: {e}")),
    }
    let api =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), NAMESPACE);
    let sa = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(format!("service account {NAMESPACE}/default: {e}")),
    }
}

/// This build's CRD, applied and established.
async fn ensure_crd(client: &Client) -> Result<(), String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = BgpGateway::crd();
    let name = crd.name_any();
    // Created, not server-side applied: the lab's 1.20 API server does not
    // know the CEL rules' field and refuses them in an apply (a create
    // drops them, as `kubectl apply` does there).
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("the CRD: {e}")),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = api.get(&name).await.map_err(|e| e.to_string())?;
        let conditions = got.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions.iter().any(|c| c.type_ == "Established" && c.status == "True") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the CRD was not established within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply(
    gateways: &Api<BgpGateway>,
    name: &str,
    selector: &[(&str, &str)],
    image: &str,
    in_flight: u32,
) -> Result<(), String> {
    let selector: serde_json::Map<String, serde_json::Value> =
        selector.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let gateway = json!({
        "apiVersion": "nonstop.dev/v1alpha1",
        "kind": "BgpGateway",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "image": image,
            "asn": 65001,
            "routerId": "10.0.0.1",
            "adminPort": nodes::ADMIN_PORT,
            "nodeSelector": selector,
            "peers": [{"address": "10.255.0.1", "asn": 65000}],
            "announce": [{"prefix": "198.51.100.0/24"}],
            "upgrade": {"maxNodesInFlight": in_flight},
        },
    });
    let params = PatchParams::apply("scale-bench").force();
    gateways
        .patch(name, &params, &Patch::Apply(gateway))
        .await
        .map_err(|e| format!("gateway {name}: {e}"))?;
    Ok(())
}

/// Waits until each gateway's every node runs `image`'s revision and is
/// ready, printing progress.
async fn wait_rolled(
    gateways: &Api<BgpGateway>,
    names: &[String],
    per_gateway: usize,
    image: &str,
) -> Result<(), String> {
    let started = Instant::now();
    let limit = Duration::from_secs(3600);
    let mut said = Instant::now();
    loop {
        let list = gateways.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let mut done = 0;
        let mut nodes_at = 0;
        for gw in list.items.iter().filter(|g| names.contains(&g.name_any())) {
            let Some(status) = &gw.status else { continue };
            let at_revision = status.current_revision.is_some()
                && status.current_revision == status.update_revision
                && status.image.as_deref() == Some(image)
                && status.observed_generation == gw.metadata.generation;
            let ready = status.ready.as_deref() == Some(&format!("{per_gateway}/{per_gateway}"));
            if at_revision && ready {
                done += 1;
            }
            let revision = status.update_revision.as_deref();
            nodes_at += status
                .nodes
                .iter()
                .filter(|n| n.revision.as_deref() == revision && revision.is_some())
                .count();
        }
        if done == names.len() {
            say(&format!(
                "{image} on {} nodes in {:.1} s",
                names.len() * per_gateway,
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!("{image}: not rolled after {limit:?}"));
        }
        if said.elapsed() >= Duration::from_secs(10) {
            say(&format!(
                "{image}: {nodes_at}/{} nodes, {done}/{} gateways, {:.0} s",
                names.len() * per_gateway,
                names.len(),
                started.elapsed().as_secs_f64()
            ));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn delete_gateways(gateways: &Api<BgpGateway>, names: &[String]) -> Result<(), String> {
    for name in names {
        let _ = gateways.delete(name, &DeleteParams::default()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = gateways.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        if !left.items.iter().any(|g| names.contains(&g.name_any())) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the gateways were not gone after 10 min".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// While the bench runs: the lab's own operator is scaled to zero (it
/// would reconcile the bench's gateways too) and kube-controller-manager
/// is paused (its node lifecycle controller would mark the simulated
/// nodes, which have no kubelet renewing a Lease, NotReady after 20 s).
/// Both come back, and the simulated nodes go, when the bench ends.
struct Quiet {
    client: Client,
    controller_manager: Option<u32>,
    operators: Vec<(String, String, i32)>,
}

impl Quiet {
    async fn begin(client: &Client, dir: &std::path::Path) -> Result<Quiet, String> {
        let deployments = Api::<Deployment>::all(client.clone());
        let found = deployments
            .list(&ListParams::default().labels("app.kubernetes.io/name=nonstop-operator"))
            .await
            .map_err(|e| e.to_string())?;
        let mut operators = Vec::new();
        for d in found.items {
            let (ns, name) = (d.namespace().unwrap_or_default(), d.name_any());
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            say(&format!("scaling the lab's operator {ns}/{name} to 0 for the bench"));
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": 0}})),
                )
                .await
                .map_err(|e| e.to_string())?;
            operators.push((ns, name, replicas));
        }
        let controller_manager = process::running(dir, "kube-controller-manager");
        if let Some(pid) = controller_manager {
            signal(pid, "STOP");
        }
        Ok(Quiet { client: client.clone(), controller_manager, operators })
    }
}

fn signal(pid: u32, which: &str) {
    let _ =
        std::process::Command::new("kill").args([&format!("-{which}"), &pid.to_string()]).status();
}

impl Drop for Quiet {
    fn drop(&mut self) {
        let client = self.client.clone();
        let operators = std::mem::take(&mut self.operators);
        // Drop cannot await: the clean-up runs on its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                if let Err(e) = nodes::delete_all(&client).await {
                    eprintln!("{e}");
                }
                // Gateways left by a bench cut short: their operator is gone.
                let gateways = Api::<BgpGateway>::namespaced(client.clone(), NAMESPACE);
                for gw in
                    gateways.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default()
                {
                    let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                    let _ = gateways.patch(&gw.name_any(), &PatchParams::default(), &patch).await;
                    let _ = gateways.delete(&gw.name_any(), &DeleteParams::default()).await;
                }
                let pods =
                    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), NAMESPACE);
                let force = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                let _ = pods.delete_collection(&force, &ListParams::default()).await;
                for (ns, name, replicas) in operators {
                    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
                    let _ = Api::<Deployment>::namespaced(client.clone(), &ns)
                        .patch(&name, &PatchParams::default(), &patch)
                        .await;
                }
            });
        })
        .join();
        if let Some(pid) = self.controller_manager {
            signal(pid, "CONT");
        }
    }
}
