//! Service addresses at the router: how long from a change of a Service of
//! type LoadBalancer to the UPDATE at the lab router, and what 1,000 of them
//! on one gateway take. Runs in the lab like the end-to-end tests (the
//! operator installed by its chart, a gateway on nodes 1–3 announcing
//! Service addresses, gobgpd in front).
//!
//! ```text
//!   phase 1  one Service at a time: created → its /32 via all 3 nodes; deleted → withdrawn from all 3
//!            an endpoint of an externalTrafficPolicy: Local Service ready on node-1 → via node-1;
//!            not ready → withdrawn
//!   phase 2  1,000 Services applied at once → all 1,000 via all 3 nodes
//!   phase 3  phase 1 again, beside the 1,000
//! ```
//!
//! The time runs from `kubectl create`/`delete`/`apply` returning to the
//! router's table showing the change (polled every 20 ms): assignment, the
//! Service's status, the publication to the agents and BGP together. The
//! endpoint rows change the EndpointSlice itself (a Service without a
//! selector, whose slice the bench writes as the EndpointSlice controller
//! would), so they time the slice's change to the UPDATE, not a pod's start.
//!
//! Run: `cargo bench -p nonstop --bench announce` with the lab up
//! (`script/lab up`). `NONSTOP_BENCH_SAMPLES` (30) and
//! `NONSTOP_BENCH_SERVICES` (1000) change the sizes.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{NODES, Setup, operator_pid, uplink};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The address of Service `i`: in 10.200.0.0/21, which the pool holds.
fn address(i: usize) -> String {
    format!("10.200.{}.{}", i / 250, i % 250 + 1)
}

fn service_yaml(ns: &str, name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{nonstop.dev/e2e: {ns}}}\n  \
         annotations: {{nonstop.dev/load-balancer-ips: \"{ip}\"}}\nspec:\n  type: LoadBalancer\n  \
         ports: [{{port: 80}}]\n"
    )
}

/// Waits until `check` holds of the router's table; the time it took.
fn until(
    s: &Setup,
    limit: Duration,
    mut check: impl FnMut(&nonstop_lab::router::Routes) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(routes) = s.router.routes()
            && check(&routes)
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "the router did not get there within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "  {what:<34} p50 {:>6.0} ms   p99 {:>6.0} ms   max {:>6.0} ms   ({} samples)",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap().as_secs_f64() * 1000.0,
        times.len()
    );
}

/// One Service at a time, `samples` times: created, then deleted.
fn latencies(s: &Setup, samples: usize, first: usize) {
    let every: Vec<String> = NODES.iter().map(|n| uplink(n)).collect();
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for k in 0..samples {
        let i = first + k;
        let (name, ip) = (format!("lat-{i}"), address(i));
        let prefix = format!("{ip}/32");
        s.ns.apply(&service_yaml(&s.ns.name, &name, &ip)).unwrap();
        added.push(until(s, Duration::from_secs(30), |r| r.get(&prefix) == Some(&every)));
        s.ns.kubectl(&["delete", "service", &name, "--wait=false"]).unwrap();
        removed.push(until(s, Duration::from_secs(30), |r| !r.contains_key(&prefix)));
    }
    report("Service created → announced", added);
    report("Service deleted → withdrawn", removed);
}

/// A Service with `externalTrafficPolicy: Local` and no selector, and its
/// EndpointSlice with one endpoint on node-1, ready or not, in the version
/// the API server serves (on 1.20 `v1beta1`, the node in `topology`).
fn local_service_yaml(s: &Setup, v1: bool, ip: &str, ready: bool) -> String {
    let (version, node) = if v1 {
        ("v1", "nodeName: node-1")
    } else {
        ("v1beta1", "topology: {kubernetes.io/hostname: node-1}")
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ep\n  labels: {{nonstop.dev/e2e: {ns}}}\n  \
         annotations: {{nonstop.dev/load-balancer-ips: \"{ip}\"}}\nspec:\n  type: LoadBalancer\n  \
         externalTrafficPolicy: Local\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/{version}\nkind: EndpointSlice\nmetadata:\n  name: ep-1\n  \
         labels: {{kubernetes.io/service-name: ep, endpointslice.kubernetes.io/managed-by: bench}}\n\
         addressType: IPv4\nports: [{{port: 80}}]\nendpoints:\n- addresses: [10.99.1.2]\n  \
         conditions: {{ready: {ready}}}\n  {node}\n",
        ns = s.ns.name
    )
}

/// An endpoint on node-1 made ready, then not, `samples` times.
fn endpoint_latencies(s: &Setup, samples: usize, ip: &str) {
    let prefix = format!("{ip}/32");
    let node_1 = vec![uplink("node-1")];
    let v1 = s.lab.kubectl(&["api-versions"]).unwrap().lines().any(|l| l == "discovery.k8s.io/v1");
    s.ns.apply(&local_service_yaml(s, v1, ip, false)).unwrap();
    until(s, Duration::from_secs(30), |r| !r.contains_key(&prefix));
    let (mut ready, mut unready) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        s.ns.apply(&local_service_yaml(s, v1, ip, true)).unwrap();
        ready.push(until(s, Duration::from_secs(30), |r| r.get(&prefix) == Some(&node_1)));
        s.ns.apply(&local_service_yaml(s, v1, ip, false)).unwrap();
        unready.push(until(s, Duration::from_secs(30), |r| !r.contains_key(&prefix)));
    }
    s.ns.kubectl(&["delete", "service", "ep", "--wait=false"]).unwrap();
    s.ns.kubectl(&["delete", "endpointslice", "ep-1", "--wait=false"]).unwrap();
    report("endpoint ready → announced", ready);
    report("endpoint not ready → withdrawn", unready);
}

fn rss_mb(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let samples = env_or("NONSTOP_BENCH_SAMPLES", 30);
    let count = env_or("NONSTOP_BENCH_SERVICES", 1000);
    // The lab's CLI beside this profile's binaries, where the tests' setup
    // looks for it (a bench builds only this package's own).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--release", "--locked", "-p", "nonstop-lab", "--bin", "lab"])
        .status()
        .expect("cargo");
    assert!(built.success(), "building the lab's CLI");
    let s = Setup::new("bench-lb");
    let pool = format!(
        "apiVersion: nonstop.dev/v1alpha1\nkind: BgpAddressPool\nmetadata: {{name: {ns}-pool}}\n\
         spec:\n  addresses: [10.200.0.0/21]\n  serviceSelector: {{matchLabels: {{nonstop.dev/e2e: {ns}}}}}\n",
        ns = s.ns.name
    );
    s.lab.kubectl_in(&["apply", "-f", "-"], Some(&pool)).unwrap();
    let gateway = s.gateway("nonstop-agent:v1", "Handoff")
        + "  loadBalancer: {unclassed: true, announce: true}\n";
    s.ns.apply(&gateway).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    s.wait_routes_from(&NODES, Duration::from_secs(30));
    println!("Service addresses at the lab router (gobgpd), gateway on {} nodes", NODES.len());

    println!("phase 1: one Service at a time");
    latencies(&s, samples, 2000 - samples);
    endpoint_latencies(&s, samples, &address(2000 - 2 * samples - 1));

    println!("phase 2: {count} Services at once");
    let docs: Vec<String> =
        (0..count).map(|i| service_yaml(&s.ns.name, &format!("svc-{i}"), &address(i))).collect();
    let started = Instant::now();
    s.ns.apply(&docs.join("---\n")).unwrap();
    let applied = started.elapsed();
    let every: Vec<String> = NODES.iter().map(|n| uplink(n)).collect();
    let all = until(&s, Duration::from_secs(600), |r| {
        (0..count).all(|i| r.get(&format!("{}/32", address(i))) == Some(&every))
    });
    println!(
        "  {count} Services: kubectl apply {:.1} s, then all at the router via every node {:.1} s later",
        applied.as_secs_f64(),
        all.as_secs_f64()
    );
    let leader = s.lab.operator_leader().unwrap_or_default();
    if let Some(pid) = operator_pid(&leader) {
        println!("  operator (leader) RSS with {count} Services: {:.1} MB", rss_mb(pid));
    }

    println!("phase 3: one Service at a time, beside the {count}");
    latencies(&s, samples, 2000 - 2 * samples);
    endpoint_latencies(&s, samples, &address(2000 - 2 * samples - 1));
}
