//! `nonstop-demo`: the whole point in under a minute, on this machine.
//! Brings the lab up, installs the operator with the Helm chart, declares a
//! BgpGateway on 3 nodes facing the lab router (gobgpd), bumps its image,
//! and reports what the router saw: per node the handoff pause, and at the
//! router the session resets, withdrawals and UPDATEs during the upgrade.
//!
//! `--quick` runs only the agent-level upgrade, without Kubernetes (`quick`);
//! `--svg FILE` also draws the rollout as the router saw it (`picture`).
//!
//! `script/demo` builds the binaries (the images hold the release build)
//! and runs this with their paths.

mod picture;
mod quick;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use nonstop_lab::router::{Router, Tally};
use nonstop_lab::testing::Lab;
use serde_json::Value;

/// The live-upgrade demo in the lab cluster.
#[derive(Debug, Parser)]
#[command(name = "nonstop-demo", about)]
struct Cli {
    /// Only the agent-level upgrade: two agents and gobgpd, no Kubernetes.
    #[arg(long)]
    quick: bool,
    /// The `lab` binary.
    #[arg(long, required_unless_present = "quick")]
    lab: Option<PathBuf>,
    /// The nonstop-agent binary (for --quick).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// The release binaries the images are built from.
    #[arg(long, required_unless_present = "quick")]
    binaries: Option<PathBuf>,
    /// The repository (chart, CRDs).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Also draw the rollout as the router saw it, as SVG, to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
}

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const PREFIXES: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/24"];
const NS: &str = "nonstop-demo";

fn say(started: Instant, what: &str) {
    println!("==> [{:5.1}s] {what}", started.elapsed().as_secs_f64());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (&cli.agent, cli.quick) {
        (Some(agent), true) => quick::demo(agent),
        (None, true) => Err("--quick needs --agent".into()),
        (_, false) => demo(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for `check`, telling every 5 s what it still waits for.
fn wait<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    let mut told = Duration::ZERO;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= limit => {
                return Err(format!("{what}: not after {limit:?}: {e}"));
            }
            Err(e) => {
                if start.elapsed() >= told + Duration::from_secs(5) {
                    told = start.elapsed();
                    println!("    waiting for {what} ({:.0}s): {}", told.as_secs_f64(), short(&e));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

fn uplink(node: &str) -> String {
    format!("10.99.{}.2", node.trim_start_matches("node-"))
}

fn gateway(image: &str) -> String {
    format!(
        r#"apiVersion: nonstop.dev/v1alpha1
kind: BgpGateway
metadata: {{name: demo, namespace: {NS}}}
spec:
  image: {image}
  nodeSelector: {{nonstop.dev/demo: "yes"}}
  asn: 65001
  peers:
  - address: 10.99.0.1
    asn: 65000
    holdTime: 9
    connectRetryTime: 1
    families: [ipv4-unicast]
  announce: [{{prefix: "{}"}}, {{prefix: "{}"}}]
  upgrade: {{strategy: Handoff, handoffTimeoutSeconds: 30}}
  shutdown: {{drainSeconds: 2}}
"#,
        PREFIXES[0], PREFIXES[1]
    )
}

fn status(lab: &Lab) -> Value {
    let text = lab.kubectl(&["-n", NS, "get", "bgpgw", "demo", "-o", "json"]).unwrap_or_default();
    serde_json::from_str::<Value>(&text).map(|v| v["status"].clone()).unwrap_or(Value::Null)
}

/// (pod, image) of the gateway's pods not being deleted.
fn pods(lab: &Lab) -> Result<Vec<(String, String)>, String> {
    let text =
        lab.kubectl(&["-n", NS, "get", "pods", "-l", "nonstop.dev/gateway=demo", "-o", "json"])?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

fn complete(lab: &Lab, image: &str) -> Result<Value, String> {
    let s = status(lab);
    let pods = pods(lab)?;
    let done = s["rollout"] == "Complete"
        && s["ready"] == "3/3"
        && s["currentRevision"] == s["updateRevision"]
        && pods.len() == 3
        && pods.iter().all(|(_, i)| i == image);
    if done {
        Ok(s)
    } else {
        Err(format!("rollout {}, ready {}, pods {pods:?}", s["rollout"], s["ready"]))
    }
}

fn routes_line(router: &Router) -> String {
    let routes = router.routes().unwrap_or_default();
    PREFIXES
        .iter()
        .map(|p| {
            format!(
                "{p} via {}",
                routes.get(*p).map(|h| h.join(", ")).unwrap_or_else(|| "-".into())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn demo(cli: &Cli) -> Result<(), String> {
    let started = Instant::now();
    let repo =
        std::fs::canonicalize(&cli.repo).map_err(|e| format!("{}: {e}", cli.repo.display()))?;
    let given =
        |p: &Option<PathBuf>, what: &str| p.clone().ok_or_else(|| format!("--{what} is needed"));
    let (lab_binary, binaries) = (given(&cli.lab, "lab")?, given(&cli.binaries, "binaries")?);
    let lab = Lab { dir: nonstop_lab::lab_dir(), binary: lab_binary.clone() };
    say(
        started,
        "the lab: a real control plane, 4 nodes, gobgpd as the router in front (AS 65000)",
    );
    let status = Command::new(&lab_binary).args(["up"]).stdout(Stdio::inherit()).status();
    if !status.map_err(|e| e.to_string())?.success() {
        return Err("lab up failed".into());
    }

    say(
        started,
        "images: the Dockerfile built by buildah (this build), tagged nonstop-agent:v1 and :v2",
    );
    lab.build_images(&binaries, &["nonstop-agent:v1", "nonstop-agent:v2"])?;

    say(started, "helm install nonstop charts/nonstop -n nonstop-system (2 operator replicas)");
    lab.install_nonstop(&repo, &binaries)?;
    let _ = lab.kubectl(&["create", "namespace", NS]);

    // Start from v1 (a rerun rolls it back there first, the same way).
    say(started, "kubectl apply: a BgpGateway on node-1..3, announcing 2 prefixes, image v1");
    for node in NODES {
        lab.kubectl(&["label", "node", node, "nonstop.dev/demo=yes", "--overwrite"])?;
    }
    lab.kubectl_in(&["apply", "-f", "-"], Some(&gateway("nonstop-agent:v1")))?;
    wait(Duration::from_secs(120), "3 agents active, every session Established", || {
        complete(&lab, "nonstop-agent:v1")
    })?;
    let router = lab.router();
    let neighbors: Vec<String> = NODES.iter().map(|n| uplink(n)).collect();
    wait(Duration::from_secs(30), "the routes at the router", || {
        let routes = router.routes()?;
        let all = PREFIXES.iter().all(|p| routes.get(*p).is_some_and(|h| h.len() == 3));
        if all { Ok(()) } else { Err(format!("{routes:?}")) }
    })?;
    let before_routes = routes_line(&router);
    let before = Tally::of(&router, &neighbors);
    let before_pods = pods(&lab)?;

    say(started, "the upgrade: spec.image v1 → v2, one node at a time, each by a hitless handoff");
    let sampler = cli.svg.as_ref().map(|_| picture::Sampler::start(router.clone()));
    let bumped_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let rolled = Instant::now();
    lab.kubectl(&[
        "-n",
        NS,
        "patch",
        "bgpgw",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"nonstop-agent:v2"}}"#,
    ])?;
    let after_status =
        wait(Duration::from_secs(120), "every node on v2", || complete(&lab, "nonstop-agent:v2"))?;
    let rollout_secs = rolled.elapsed().as_secs_f64();
    let seen = Tally::of(&router, &neighbors).since(&before);
    let after_routes = routes_line(&router);
    let after_pods = pods(&lab)?;

    println!();
    println!("nonstop demo: image v1 → v2 on 3 nodes in {rollout_secs:.1} s");
    println!("  {:<8} {:<32} {:<32} handoff pause", "node", "pod before", "pod after");
    for node in NODES {
        let find = |pods: &[(String, String)]| {
            pods.iter()
                .find(|(p, _)| p.contains(&format!("-{node}-")))
                .map(|(p, _)| p.clone())
                .unwrap_or_default()
        };
        let record = after_status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["node"] == node)
            .map(|n| n["lastUpgrade"]["pauseMs"].clone())
            .unwrap_or(Value::Null);
        let pause = record.as_u64().map(|ms| format!("{ms} ms")).unwrap_or_else(|| "-".into());
        println!("  {node:<8} {:<32} {:<32} {pause}", find(&before_pods), find(&after_pods));
    }
    println!("  at the router ({}):", format!("{:?}", router.kind).to_lowercase());
    println!("    session resets:  {}", seen.downs.len());
    println!("    withdrawals:     {}", seen.withdrawals.len());
    println!("    UPDATEs from the gateway during the upgrade: {}", seen.announcements.len());
    println!("    routes before:   {before_routes}");
    println!("    routes after:    {after_routes}");
    if let (Some(path), Some(sampler)) = (&cli.svg, sampler) {
        let footer = format!(
            "at the router ({}): {} session resets, {} withdrawals, {} UPDATEs from the gateway; rolled in {rollout_secs:.1} s",
            format!("{:?}", router.kind).to_lowercase(),
            seen.downs.len(),
            seen.withdrawals.len(),
            seen.announcements.len()
        );
        picture::write(&lab, path, sampler.finish(), bumped_ms, footer)?;
        println!("  the picture: {}", path.display());
    }
    println!();
    println!(
        "Look around: eval \"$(script/lab env)\"; kubectl get bgpgw -n {NS}; kubectl get events -n {NS}"
    );
    say(started, "done");
    if seen.is_empty() && before_routes == after_routes {
        // Back to v1 for the next run is the user's to try:
        // kubectl -n nonstop-demo patch bgpgw demo --type=merge -p '{"spec":{"image":"nonstop-agent:v1"}}'
        Ok(())
    } else {
        Err("the router saw the upgrade (see above)".into())
    }
}
