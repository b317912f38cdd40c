//! Addresses for Services of type LoadBalancer in the lab, as a user sees
//! them: `kubectl get svc` (EXTERNAL-IP), the Service's
//! `nonstop.dev/AddressAssigned` condition, its Events and `kubectl get
//! bgppool`; and, with a gateway that announces them, the lab router's
//! table, through an image bump. The lab's API server (1.20) predates
//! `loadBalancerClass`, so the gateway takes the Services without a class
//! (`loadBalancer.unclassed`).
//!
//! Shares the lab's API server with the other end-to-end tests (nextest
//! group `lab-nodes`).

mod support;

use std::time::Duration;

use nonstop_lab::testing::{Namespace, Watch, eventually};
use serde_json::Value;
use support::{NODES, Setup, hitless_roll, uplink, uplinks};

const LIMIT: Duration = Duration::from_secs(30);

/// The pool, cluster-scoped, deleted when the test ends however it ends.
struct Pool<'a> {
    ns: &'a Namespace,
    name: String,
}

impl<'a> Pool<'a> {
    fn apply(ns: &'a Namespace, addresses: &str) -> Pool<'a> {
        let pool = Pool { ns, name: format!("{}-pool", ns.name) };
        pool.set(addresses);
        pool
    }

    /// Applies the pool with these `spec.addresses`, for this namespace's Services.
    fn set(&self, addresses: &str) {
        let yaml = format!(
            "apiVersion: nonstop.dev/v1alpha1\nkind: BgpAddressPool\nmetadata: {{name: {}}}\n\
             spec:\n  addresses: [{addresses}]\n  serviceSelector: {{matchLabels: {{nonstop.dev/e2e: {}}}}}\n",
            self.name, self.ns.name
        );
        self.ns.lab.kubectl_in(&["apply", "-f", "-"], Some(&yaml)).unwrap();
    }

    fn status(&self) -> Value {
        let text = self.ns.lab.kubectl(&["get", "bgppool", &self.name, "-o", "json"]);
        serde_json::from_str::<Value>(&text.unwrap_or_default())
            .map(|v| v["status"].clone())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        let _ = self.ns.lab.kubectl(&["delete", "bgppool", &self.name, "--wait=false"]);
    }
}

/// A gateway on no node at all: only its `loadBalancer` part matters here.
fn gateway(unclassed: bool) -> String {
    format!(
        "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata: {{name: lb}}\nspec:\n  \
         nodeSelector: {{nonstop.dev/e2e: nowhere}}\n  asn: 65001\n  \
         peers: [{{address: 10.99.0.1, asn: 65000}}]\n  loadBalancer: {{unclassed: {unclassed}}}\n"
    )
}

fn service(ns: &Namespace, name: &str, asks: Option<&str>) {
    let annotation =
        asks.map_or(String::new(), |ip| format!("nonstop.dev/load-balancer-ips: \"{ip}\""));
    service_annotated(ns, name, &annotation);
}

/// A Service with these annotations (`key: value, …`, may be empty).
fn service_annotated(ns: &Namespace, name: &str, annotations: &str) {
    let annotation = if annotations.is_empty() {
        String::new()
    } else {
        format!("\n  annotations: {{{annotations}}}")
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{nonstop.dev/e2e: {}}}{annotation}\n\
         spec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n",
        ns.name
    );
    ns.apply(&yaml).unwrap();
}

/// The Service's addresses and its condition: (ingress IPs, status, reason, message).
fn assignment(ns: &Namespace, name: &str) -> Result<(String, String, String, String), String> {
    let text = ns.kubectl(&["get", "service", name, "-o", "json"])?;
    let svc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let ips: Vec<&str> = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|list| list.iter().filter_map(|i| i["ip"].as_str()).collect())
        .unwrap_or_default();
    let empty = Vec::new();
    let conditions = svc["status"]["conditions"].as_array().unwrap_or(&empty);
    let ours = conditions.iter().find(|c| c["type"] == "nonstop.dev/AddressAssigned");
    let field = |key: &str| ours.and_then(|c| c[key].as_str()).unwrap_or("").to_string();
    Ok((ips.join(","), field("status"), field("reason"), field("message")))
}

/// Waits until the Service has `ips` and a condition with `reason`; its message.
fn wait_assignment(ns: &Namespace, name: &str, ips: &str, reason: &str) -> String {
    eventually(LIMIT, &format!("Service {name}: [{ips}] {reason}"), || {
        let (have, _, why, message) = assignment(ns, name)?;
        if have == ips && why == reason {
            Ok(message)
        } else {
            Err(format!("[{have}] {why}: {message}"))
        }
    })
}

/// The Events about one object, as (type, reason, message).
fn events_of(ns: &Namespace, name: &str) -> Vec<(String, String, String)> {
    let text = ns.kubectl(&["get", "events", "-o", "json"]).unwrap_or_default();
    let events: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let empty = Vec::new();
    events["items"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("type"), s("reason"), s("message"))
        })
        .collect()
}

#[test]
fn load_balancer_services_get_addresses_from_a_pool_and_every_refusal_is_explained() {
    let s = Setup::new("e2e-lb");
    let ns = &s.ns;
    let pool = Pool::apply(ns, "203.0.113.200-203.0.113.201");
    ns.apply(&gateway(true)).unwrap();

    // The oldest Service gets the first address; one that asks for it by
    // name gets a reason instead, and the next one the address left.
    service(ns, "web", None);
    let message = wait_assignment(ns, "web", "203.0.113.200", "AddressAssigned");
    assert_eq!(message, format!("203.0.113.200 from BgpAddressPool {}", pool.name));
    let line = ns.kubectl(&["get", "service", "web", "--no-headers"]).unwrap();
    assert!(line.split_whitespace().nth(3) == Some("203.0.113.200"), "EXTERNAL-IP: {line}");
    service(ns, "api", Some("203.0.113.200"));
    let message = wait_assignment(ns, "api", "", "AddressInUse");
    assert_eq!(message, format!("203.0.113.200 is already assigned to Service {}/web", ns.name));
    service(ns, "cache", None);
    wait_assignment(ns, "cache", "203.0.113.201", "AddressAssigned");
    service(ns, "queue", None);
    let message = wait_assignment(ns, "queue", "", "AddressPoolExhausted");
    assert_eq!(message, format!("no free IPv4 address left in BgpAddressPool {}", pool.name));
    let (_, status, _, _) = assignment(ns, "queue").unwrap();
    assert_eq!(status, "False");
    eventually(LIMIT, "the pool's status: 2/2 IPv4 addresses used", || {
        let status = pool.status();
        if status["ipv4"] == "2/2" { Ok(()) } else { Err(status.to_string()) }
    });
    let line = ns.lab.kubectl(&["get", "bgppool", &pool.name, "--no-headers"]).unwrap();
    assert!(line.contains("2/2"), "kubectl get bgppool: {line}");

    // Each assignment and each refusal is an Event on its Service.
    let events = eventually(LIMIT, "Events on Services web, api and queue", || {
        let seen = [events_of(ns, "web"), events_of(ns, "api"), events_of(ns, "queue")];
        if seen.iter().all(|e| !e.is_empty()) { Ok(seen) } else { Err(format!("{seen:?}")) }
    });
    assert_eq!(events[0][0].0, "Normal", "{events:?}");
    assert_eq!(events[0][0].1, "AddressAssigned", "{events:?}");
    assert!(events[1].iter().any(|e| e.0 == "Warning" && e.1 == "AddressInUse"), "{events:?}");
    assert!(events[2].iter().any(|e| e.1 == "AddressPoolExhausted"), "{events:?}");

    // web goes: api gets the address it asked for; the others keep theirs.
    ns.kubectl(&["delete", "service", "web"]).unwrap();
    wait_assignment(ns, "api", "203.0.113.200", "AddressAssigned");
    wait_assignment(ns, "cache", "203.0.113.201", "AddressAssigned");
    wait_assignment(ns, "queue", "", "AddressPoolExhausted");

    // A pool entry the operator cannot read is named, and the rest is used.
    pool.set("203.0.113.200-203.0.113.201, 203.0.113.300/32, 203.0.113.202/32");
    wait_assignment(ns, "queue", "203.0.113.202", "AddressAssigned");
    let condition = eventually(LIMIT, "the pool's Valid condition", || {
        let status = pool.status();
        let valid = status["conditions"][0].clone();
        if valid["status"] == "False" { Ok(valid) } else { Err(status.to_string()) }
    });
    assert_eq!(
        condition["message"], "spec.addresses[1]: \"203.0.113.300\" is not an IP address",
        "{condition}"
    );

    // No gateway takes Services without a class any more: their addresses
    // and conditions go.
    ns.apply(&gateway(false)).unwrap();
    for name in ["api", "cache", "queue"] {
        eventually(LIMIT, &format!("Service {name} released"), || match assignment(ns, name)? {
            (ips, status, _, _) if ips.is_empty() && status.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        });
    }
    assert!(events_of(ns, "api").iter().any(|e| e.1 == "AddressReleased"));
}

/// The nodes the router reaches `prefix` through.
fn via(s: &Setup, prefix: &str) -> Result<Vec<String>, String> {
    Ok(s.router.routes()?.get(prefix).cloned().unwrap_or_default())
}

#[test]
fn a_service_address_is_announced_from_every_node_and_an_upgrade_withdraws_nothing() {
    let s = Setup::new("e2e-lbroute");
    let ns = &s.ns;
    let _pool = Pool::apply(ns, "203.0.113.210-203.0.113.211");
    let gateway = s.gateway("nonstop-agent:v1", "Handoff")
        + "  loadBalancer: {unclassed: true, announce: true, communities: ['65001:80']}\n";
    ns.apply(&gateway).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    s.wait_routes_from(&NODES, Duration::from_secs(30));

    // A Service gets an address, and the router a /32 via every node.
    service(ns, "web", None);
    wait_assignment(ns, "web", "203.0.113.210", "AddressAssigned");
    let prefix = "203.0.113.210/32";
    let every: Vec<String> = NODES.iter().map(|n| uplink(n)).collect();
    eventually(LIMIT, "the Service address via every node", || match via(&s, prefix)? {
        hops if hops == every => Ok(()),
        hops => Err(format!("via {hops:?}")),
    });

    // An image bump: the router sees nothing of it, the address included.
    let watch = Watch::start(s.router.clone(), &[prefix], &uplinks(), NODES.len());
    hitless_roll(&s, "nonstop-agent:v2");
    let misses = watch.finish();
    assert!(misses.is_empty(), "the Service address went missing in the rollout: {misses:?}");

    // A second Service, with a community of its own: announced without
    // replacing a pod, with the gateway's community and its own; the first
    // gone: withdrawn from every node.
    let pods = s.pod_images().unwrap();
    service_annotated(ns, "api", "nonstop.dev/bgp-communities: '65001:7'");
    eventually(LIMIT, "the second address via every node", || match via(&s, "203.0.113.211/32")? {
        hops if hops == every => Ok(()),
        hops => Err(format!("via {hops:?}")),
    });
    // The gateway's status says so: two addresses, every node's agent
    // holding them, its new pods included.
    eventually(LIMIT, "status.loadBalancer", || {
        let lb = s.status()["loadBalancer"].clone();
        let want = serde_json::json!({"addresses": 2, "published": "3/3"});
        if lb == want { Ok(()) } else { Err(lb.to_string()) }
    });
    let received = s.router.received().unwrap();
    for node in &every {
        let path = received
            .iter()
            .rev()
            .find(|r| r.prefix == "203.0.113.211/32" && &r.neighbor == node && !r.withdrawal);
        let mut communities = path.map(|p| p.communities.clone()).unwrap_or_default();
        communities.sort();
        assert_eq!(communities, ["65001:7", "65001:80"], "from {node}");
    }
    ns.kubectl(&["delete", "service", "web"]).unwrap();
    eventually(LIMIT, "the first address withdrawn", || match via(&s, prefix)? {
        hops if hops.is_empty() => Ok(()),
        hops => Err(format!("still via {hops:?}")),
    });
    assert_eq!(s.pod_images().unwrap(), pods, "a Service change replaced a pod");
}

/// Deletes what the example made and unlabels the nodes, however the test ends.
struct Example<'a>(&'a Setup);

impl Drop for Example<'_> {
    fn drop(&mut self) {
        let lab = &self.0.lab;
        let _ = lab.kubectl(&["delete", "-f", EXAMPLE, "--wait=false"]);
        for node in NODES {
            let _ = lab.kubectl(&["label", "node", node, "nonstop.dev/gateway-"]);
        }
    }
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/load-balancer.yaml");

#[test]
fn the_load_balancer_example_works_as_written() {
    let s = Setup::new("e2e-lbexample");
    let _cleanup = Example(&s);
    for node in NODES {
        s.lab.kubectl(&["label", "node", node, "nonstop.dev/gateway=edge", "--overwrite"]).unwrap();
    }
    // What a run before this one left (a gateway still being deleted).
    s.lab.kubectl(&["delete", "-f", EXAMPLE, "--ignore-not-found", "--wait=true"]).unwrap();
    s.lab.kubectl(&["apply", "-f", EXAMPLE]).unwrap();
    // The pool serves every Service without a class: one another test left
    // behind (its namespace still being deleted) may hold .65, so any
    // address of the pool will do.
    let ip = eventually(Duration::from_secs(60), "Service web's EXTERNAL-IP", || {
        let line = s.lab.kubectl(&["-n", "default", "get", "service", "web", "--no-headers"])?;
        match line.split_whitespace().nth(3) {
            Some(ip) if ip.starts_with("203.0.113.") => Ok(ip.to_string()),
            _ => Err(line),
        }
    });
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!((65..=78).contains(&last), "{ip} is not of the pool 203.0.113.64/28");
    let every: Vec<String> = NODES.iter().map(|n| uplink(n)).collect();
    let prefix = format!("{ip}/32");
    eventually(Duration::from_secs(90), &format!("{prefix} via every node"), || {
        match via(&s, &prefix)? {
            hops if hops == every => Ok(()),
            hops => Err(format!("via {hops:?}")),
        }
    });
}

/// A backend of Service `web` pinned to `node`: a Deployment of one pod
/// (the lab's tools image, on the node's network).
fn backend(ns: &Namespace, node: &str, replicas: u32) {
    ns.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{node}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web, at: {node}}}}}
  template:
    metadata: {{labels: {{app: web, at: {node}}}}}
    spec:
      hostNetwork: true
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: main, image: lab/tools:1, command: ["sh", "-c", "exec sleep 100000"]}}
"#
    ))
    .unwrap();
}

#[test]
fn a_local_service_is_announced_only_from_nodes_with_a_ready_endpoint() {
    let s = Setup::new("e2e-lblocal");
    let ns = &s.ns;
    let _pool = Pool::apply(ns, "203.0.113.220/32");
    let gateway = s.gateway("nonstop-agent:v1", "Handoff")
        + "  loadBalancer: {unclassed: true, announce: true}\n";
    ns.apply(&gateway).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    ns.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {{nonstop.dev/e2e: {}}}\n\
         spec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {{app: web}}\n  \
         ports: [{{port: 80}}]\n",
        ns.name
    ))
    .unwrap();
    wait_assignment(ns, "web", "203.0.113.220", "AddressAssigned");
    let prefix = "203.0.113.220/32";
    let wait_via = |nodes: &[&str], what: &str| {
        let want: Vec<String> = nodes.iter().map(|n| uplink(n)).collect();
        eventually(Duration::from_secs(60), what, || match via(&s, prefix)? {
            hops if hops == want => Ok(()),
            hops => Err(format!("via {hops:?}")),
        });
    };
    // No endpoint yet: no node announces it.
    assert_eq!(via(&s, prefix).unwrap(), Vec::<String>::new());
    backend(ns, "node-1", 1);
    wait_via(&["node-1"], "the address via node-1, where its endpoint is");
    backend(ns, "node-2", 1);
    wait_via(&["node-1", "node-2"], "via node-1 and node-2");
    // Scaled down on node-1: its next hop goes, node-2's stays.
    backend(ns, "node-1", 0);
    wait_via(&["node-2"], "via node-2 alone");
    backend(ns, "node-2", 0);
    wait_via(&[], "withdrawn with its last endpoint");
}
