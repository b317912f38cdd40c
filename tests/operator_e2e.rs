//! The operator end to end, in the lab cluster: the operator installed by
//! the Helm chart (2 replicas, its own ServiceAccount and ClusterRole, the
//! chart's image pointing at this build), the agents as the pods it makes, facing the lab
//! router (gobgpd, AS 65000). What is checked is what a network engineer
//! would look at: the router's table, its session and route events, and
//! `kubectl get bgpgw`.
//!
//! The tests share the lab's nodes 1–3 and its router, so they run one at
//! a time (`.config/nextest.toml`, group `lab-nodes`).

mod support;

use std::process::Command;
use std::time::Duration;

use nonstop_lab::capture::Capture;
use nonstop_lab::router::{RouteEvent, Tally};
use nonstop_lab::testing::{Lab, OPERATOR_NS, Watch, eventually, release_binaries};
use support::{
    NODES, PREFIXES, Setup, bin_dir, hitless_roll, leader, operator_pid, uplink, uplinks,
};

#[test]
fn image_bumps_roll_hitlessly_and_a_refused_handoff_stops_the_rollout() {
    let s = Setup::new("e2e-roll");
    let status = s.serving_v1("Handoff");
    assert_eq!(status["sessions"], "3/3", "{status}");
    let line = s.ns.kubectl(&["get", "bgpgw", "edge", "--no-headers"]).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&words[..3], ["edge", "65001", "3/3"], "{line}");
    assert!(words.contains(&"Complete") && words.contains(&"nonstop-agent:v1"), "{line}");
    let first = status["currentRevision"].as_str().unwrap().to_string();
    // On a real node: the agent's container in node-1's containerd, and its
    // status through the kubelet (`kubectl exec`, no flags needed).
    let pods = s.pod_images().unwrap();
    let (pod, _) = pods.iter().find(|(p, _)| p.contains("node-1")).unwrap();
    let id = eventually(Duration::from_secs(30), "the agent's container ID", || {
        let id = s.ns.get(&format!("pod/{pod}"), "{.status.containerStatuses[0].containerID}")?;
        id.strip_prefix("containerd://").map(String::from).ok_or(id)
    });
    let ctr = s.lab.lab(&["node", "exec", "node-1", "ctr", "containers", "ls", "-q"]).unwrap();
    assert!(ctr.lines().any(|l| l == id), "{id} not among node-1's containers: {ctr}");
    let agent = s.ns.kubectl(&["exec", pod, "--", "nonstop-agent", "status"]).unwrap();
    let agent: serde_json::Value = serde_json::from_str(&agent).unwrap();
    assert_eq!(agent["pod"], pod.as_str(), "{agent}");
    assert_eq!(agent["role"], "active", "{agent}");
    let log = s.ns.kubectl(&["logs", pod]).unwrap();
    assert!(log.contains("nonstop-agent running"), "kubectl logs {pod}: {log}");

    // v1 → v2 → v1 → v2, each node handing over in place; an independent
    // capture at the router sees no NOTIFICATION, FIN/RST or withdrawal.
    let capture = Capture::start(s.lab.dir(), "three-bumps").unwrap().hearing(&uplinks());
    let status = hitless_roll(&s, "nonstop-agent:v2");
    assert_ne!(status["currentRevision"], first.as_str());
    for node in status["nodes"].as_array().unwrap() {
        let record = &node["lastUpgrade"];
        assert_eq!(record["result"], "Succeeded", "{node}");
        assert!(record["pauseMs"].as_u64().is_some(), "each node's handoff pause: {node}");
    }
    // The leader's metrics saw the three handoffs (pauses from the agents' reports).
    let metrics = leader_metrics(&s.lab);
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nonstop_operator_handoff_pause_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(count >= 3, "handoff pauses in the leader's metrics: {metrics}");
    assert!(
        metrics.contains("nonstop_operator_rollout_steps_total{reason=\"Retire\"}"),
        "{metrics}"
    );
    let build = format!(
        "nonstop_build_info{{component=\"operator\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&build), "{metrics}");
    assert!(metrics.contains("application/openmetrics-text"), "the content type: {metrics}");
    let status = hitless_roll(&s, "nonstop-agent:v1");
    assert_eq!(status["currentRevision"], first.as_str(), "back to the first revision");
    hitless_roll(&s, "nonstop-agent:v2");
    let wire = capture.finish().on(&uplinks()).unwrap();
    assert!(wire.bgp_messages > 0, "the capture saw no BGP at all: {wire:?}");
    assert!(wire.is_calm(), "the capture at the router saw, in 3 image bumps: {wire:?}");
    eprintln!("3 image bumps on 3 nodes, at the router's wire: {wire:?}");

    // v3 is refused by the running agent: the first node rolls back, the
    // rollout stops as Degraded, nothing moves at the router.
    let before = Tally::of(&s.router, &uplinks());
    s.set_image("nonstop-agent:v3");
    let status = eventually(Duration::from_secs(90), "Degraded", || {
        let status = s.status();
        let degraded = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Degraded" && c["status"] == "True");
        if degraded { Ok(status) } else { Err(status.to_string()) }
    });
    let degraded =
        status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap();
    let message = degraded["message"].as_str().unwrap();
    assert!(message.contains("node-1") && message.contains("refused"), "{message}");
    let events = s.events();
    let warned = events["items"].as_array().into_iter().flatten().any(|e| {
        e["reason"] == "UpgradeFailed"
            && e["note"]
                .as_str()
                .or_else(|| e["message"].as_str())
                .is_some_and(|m| m.contains("refused"))
    });
    assert!(warned, "an UpgradeFailed Event naming the reason: {events}");
    eventually(Duration::from_secs(30), "the v3 pod gone, v2 everywhere", || {
        let images = s.pod_images()?;
        let v2 = images.len() == 3 && images.iter().all(|(_, i)| i == "nonstop-agent:v2");
        if v2 { Ok(()) } else { Err(format!("{images:?}")) }
    });
    assert!(s.status()["rollout"].as_str().unwrap().starts_with("Degraded"));
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.is_empty(), "the router saw: {seen:?}");
    s.wait_routes_from(&NODES, Duration::from_secs(5));

    // A fixed image resumes the rollout.
    hitless_roll(&s, "nonstop-agent:v1");
}

#[test]
fn the_other_replica_finishes_a_rollout_when_the_leader_is_killed() {
    let s = Setup::new("e2e-leader");
    s.serving_v1("Handoff");

    let before = Tally::of(&s.router, &uplinks());
    let watch = Watch::start(s.router.clone(), &PREFIXES, &uplinks(), NODES.len());
    s.set_image("nonstop-agent:v2");
    // Mid-rollout: once the first node is on v2.
    s.wait_first_node_on("nonstop-agent:v2");
    let killed = leader(&s.lab).unwrap();
    let pid = operator_pid(&killed).expect("the leader's process");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // The pod goes too, or the kubelet would restart the process in it
    // under the same name.
    s.lab
        .kubectl(&["-n", OPERATOR_NS, "delete", "pod", &killed, "--grace-period=0", "--force"])
        .unwrap();
    eventually(Duration::from_secs(60), "another replica to lead", || {
        let now = leader(&s.lab)?;
        if now != killed { Ok(now) } else { Err(now) }
    });
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    let misses = watch.finish();
    assert!(misses.is_empty(), "a node was without routes: {misses:?}");
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.is_empty(), "the router saw: {seen:?}");
    let pods = s.pod_images().unwrap();
    assert_eq!(pods.len(), 3, "no duplicate pods: {pods:?}");
}

/// `GET /metrics` from the leading replica (pods run on their node's address).
fn leader_metrics(lab: &Lab) -> String {
    let pod = leader(lab).unwrap();
    let ip = lab
        .kubectl(&["-n", OPERATOR_NS, "get", "pod", &pod, "-o", "jsonpath={.status.podIP}"])
        .unwrap();
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect((ip.as_str(), 9180)).expect("the operator's metrics port");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn unlabelling_a_node_and_deleting_the_gateway_withdraw_gracefully() {
    let s = Setup::new("e2e-scale");
    s.serving_v1("Handoff");

    s.lab.kubectl(&["label", "node", "node-3", "nonstop.dev/e2e-"]).unwrap();
    s.wait_routes_from(&NODES[..2], Duration::from_secs(30));
    eventually(Duration::from_secs(30), "node-3's pod gone", || {
        let pods = s.pod_images()?;
        if pods.len() == 2 { Ok(()) } else { Err(format!("{pods:?}")) }
    });
    assert_eq!(s.status()["ready"], "2/2");

    s.ns.kubectl(&["delete", "bgpgw", "edge", "--wait=false"]).unwrap();
    let started = std::time::Instant::now();
    let done = nonstop_lab::testing::wait_for(Duration::from_secs(60), || {
        let routes = s.router.routes()?;
        let left: Vec<_> = PREFIXES.iter().filter(|p| routes.contains_key(**p)).collect();
        // Every pod, those being deleted too, with its phase: what is left.
        let pods = s.ns.kubectl(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase} deleting={.metadata.deletionTimestamp}; {end}",
        ])?;
        let gateway = s.ns.kubectl(&[
            "get",
            "bgpgw",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} finalizers={.metadata.finalizers} rollout={.status.rollout}{end}",
        ])?;
        // A pod object outlives its agent until the kubelet has cleaned up.
        let live = s.pod_images()?;
        if left.is_empty() && gateway.trim().is_empty() && live.is_empty() {
            Ok(())
        } else {
            Err(format!("routes {left:?}; pods: {pods}; gateway: {gateway}"))
        }
    });
    if let Err(left) = done {
        let leader = leader(&s.lab).unwrap_or_default();
        let log = s.lab.lab(&["logs", &leader, "-n", OPERATOR_NS]).unwrap_or_default();
        let tail: Vec<&str> =
            log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "the gateway was not gone {:.0?} after its deletion: {left}\nthe leader {leader}'s last log lines:\n{}",
            started.elapsed(),
            tail.join("\n")
        );
    }
    eprintln!(
        "  waited {:.1} s for every route withdrawn and the gateway gone",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn graceful_restart_strategy_keeps_the_routes_at_the_router() {
    let s = Setup::new("e2e-gr");
    s.serving_v1("GracefulRestart");
    let before = Tally::of(&s.router, &uplinks());
    let watch = Watch::start(s.router.clone(), &PREFIXES, &uplinks(), NODES.len());
    s.set_image("nonstop-agent:v2");
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    let misses = watch.finish();
    assert!(misses.is_empty(), "routes left the router: {misses:?}");
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.withdrawals.is_empty(), "{seen:?}");
    // The sessions did go down (that is the strategy) and came back.
    assert_eq!(seen.downs.len(), 3, "one restart per node: {seen:?}");
}

#[test]
fn unsatisfiable_specs_say_what_to_fix() {
    let s = Setup::new("e2e-unsat");
    let gateway = s
        .gateway("nonstop-agent:v1", "Handoff")
        .replace("nodeSelector: {nonstop.dev/e2e:", "nodeSelector: {nonstop.dev/nowhere:");
    s.ns.apply(&gateway).unwrap();
    let message = s.wait_ready_reason("NoMatchingNodes");
    assert!(message.contains("spec.nodeSelector"), "{message}");

    let with_secret = s.gateway("nonstop-agent:v1", "Handoff").replace(
        "    families: [ipv4-unicast]\n",
        "    families: [ipv4-unicast]\n    passwordSecretRef: {name: bgp-passwords, key: router}\n",
    );
    s.ns.apply(&with_secret).unwrap();
    let message = s.wait_ready_reason("SecretNotFound");
    assert!(message.contains("bgp-passwords"), "{message}");
    assert!(s.pod_images().unwrap().is_empty(), "no pod before the Secret exists");

    // A rule this API server (1.20, no CEL) lets through: the operator
    // refuses it by name and touches nothing.
    let bad_timers = s
        .gateway("nonstop-agent:v1", "Handoff")
        .replace("    holdTime: 9\n", "    holdTime: 9\n    keepaliveTime: 9\n");
    s.ns.apply(&bad_timers).unwrap();
    let message = s.wait_ready_reason("InvalidSpec");
    assert!(message.contains("spec.peers[0].keepaliveTime"), "{message}");
    assert!(s.pod_images().unwrap().is_empty());
    // Such a gateway can still be deleted (its finalizer is let go).
    s.ns.kubectl(&["delete", "bgpgw", "edge", "--timeout=30s"]).unwrap();
}

#[test]
fn recreate_strategy_takes_one_node_out_at_a_time() {
    let s = Setup::new("e2e-recreate");
    s.serving_v1("Recreate");
    let before = Tally::of(&s.router, &uplinks());
    // Never more than one node (maxNodesInFlight 1) without its routes.
    let watch = Watch::start(s.router.clone(), &PREFIXES, &uplinks(), NODES.len() - 1);
    s.set_image("nonstop-agent:v2");
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    s.wait_routes_from(&NODES, Duration::from_secs(30));
    let misses = watch.finish();
    assert!(misses.is_empty(), "two nodes out at once: {misses:?}");
    // Each node's old agent decommissioned (GRACEFUL_SHUTDOWN re-announced,
    // drain, Cease: its session went down) before its new one started.
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    for node in NODES {
        let down = seen.downs.contains(&RouteEvent::SessionDown { neighbor: uplink(node) });
        assert!(down, "{node} was taken out: {seen:?}");
    }
    // The router's UPDATE stream is seen (the hitless tests' "no UPDATE at
    // all" rests on it): the re-announcements and the new sessions' routes.
    assert!(seen.announcements.len() >= 2 * NODES.len(), "{seen:?}");
}

/// The README's first command, as a user runs it: the report says the
/// router saw nothing.
#[test]
fn the_demo_reports_a_hitless_upgrade() {
    struct Cleanup(Lab);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.0.kubectl(&[
                "-n",
                "nonstop-demo",
                "delete",
                "bgpgw",
                "--all",
                "--timeout=60s",
            ]);
            for node in NODES {
                let _ = self.0.kubectl(&["label", "node", node, "nonstop.dev/demo-"]);
            }
        }
    }
    let lab = Lab::attach(bin_dir().join("lab").to_str().unwrap());
    let _cleanup = Cleanup(lab.clone());
    let release = release_binaries(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let picture = std::env::temp_dir().join(format!("nonstop-demo-{}.svg", std::process::id()));
    let out = Command::new(bin_dir().join("nonstop-demo"))
        .args(["--lab", bin_dir().join("lab").to_str().unwrap()])
        .args(["--binaries", release.to_str().unwrap()])
        .args(["--repo", env!("CARGO_MANIFEST_DIR")])
        .args(["--svg", picture.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "session resets:  0",
        "withdrawals:     0",
        "UPDATEs from the gateway during the upgrade: 0",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    for node in NODES {
        let row = report.lines().find(|l| l.trim_start().starts_with(node)).unwrap_or("");
        assert!(row.ends_with(" ms"), "{node}'s handoff pause: {report}");
    }
    // The picture (the README's, made the same way): every node green all
    // along, with its handoff marked and the router's count beneath.
    let svg = std::fs::read_to_string(&picture).unwrap();
    let _ = std::fs::remove_file(&picture);
    for node in NODES {
        assert!(svg.contains(&format!(">{node}</text>")), "{node}'s row: {svg}");
    }
    assert_eq!(svg.matches("handoff, pause ").count(), 3, "a mark per node: {svg}");
    assert!(!svg.contains("height=\"18\" fill=\"#d64545\""), "a prefix went missing: {svg}");
    assert!(svg.contains("0 session resets, 0 withdrawals, 0 UPDATEs from the gateway"));
}

/// TCP MD5 and GTSM on a real node, under the agent pod's security context
/// as runc enforces it (only NET_BIND_SERVICE, read-only root, seccomp
/// RuntimeDefault): node-1's gateway peers with the router's secured
/// neighbor (from 10.99.1.3, the password from a Secret, GTSM), and an
/// image bump hands that session over: the router's session stays up, the
/// capture sees no NOTIFICATION, reset or withdrawal.
#[test]
fn md5_and_gtsm_sessions_hand_off_on_a_real_node() {
    let s = Setup::new("e2e-md5");
    for node in ["node-2", "node-3"] {
        s.lab.kubectl(&["label", "node", node, "nonstop.dev/e2e-"]).unwrap();
    }
    let secured = "10.99.1.3".to_string();
    s.ns.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bgp-auth}}\nstringData: {{router: {}}}\n",
        nonstop_lab::network::SECURED_PASSWORD
    ))
    .unwrap();
    let gateway = |image: &str| {
        let plain = s.gateway(image, "Handoff");
        let peer = "  - address: 10.99.0.1\n    asn: 65000\n";
        assert!(plain.contains(peer), "{plain}");
        plain.replace(
            peer,
            &format!(
                "{peer}    localAddress: {secured}\n    ttlSecurity: true\n    \
                 passwordSecretRef: {{name: bgp-auth, key: router}}\n"
            ),
        )
    };
    let on = |image: &str| {
        eventually(Duration::from_secs(90), &format!("node-1 serving {image}"), || {
            let images = s.pod_images()?;
            let status = s.status();
            let done = images.len() == 1
                && images[0].1 == image
                && status["rollout"] == "Complete"
                && status["sessions"] == "1/1";
            if done { Ok(()) } else { Err(format!("{images:?} {status}")) }
        })
    };
    s.ns.apply(&gateway("nonstop-agent:v1")).unwrap();
    on("nonstop-agent:v1");
    let hop = vec![secured.clone()];
    eventually(Duration::from_secs(30), "the routes via the secured session", || {
        let routes = s.router.routes()?;
        let all = PREFIXES.iter().all(|p| routes.get(*p).is_some_and(|h| h.contains(&secured)));
        if all { Ok(()) } else { Err(format!("{routes:?}")) }
    });

    let before = Tally::of(&s.router, &hop);
    let watch = Watch::start(s.router.clone(), &PREFIXES, &hop, 1);
    let capture = Capture::start(s.lab.dir(), "md5-gtsm").unwrap().hearing(&hop);
    s.ns.apply(&gateway("nonstop-agent:v2")).unwrap();
    on("nonstop-agent:v2");
    let record = s.status()["nodes"][0]["lastUpgrade"].clone();
    assert_eq!(record["result"], "Succeeded", "{record}");
    assert_eq!(record["mode"], "Handoff", "{record}");
    let misses = watch.finish();
    assert!(misses.is_empty(), "routes missing at the router: {misses:?}");
    let seen = Tally::of(&s.router, &hop).since(&before);
    assert!(seen.is_empty(), "the router saw on the secured session: {seen:?}");
    let wire = capture.finish().on(&hop).unwrap();
    assert!(wire.bgp_messages > 0 && wire.is_calm(), "{wire:?}");
}

/// `kubectl describe bgpgw` answers "which session is down and why" without
/// reaching into a node: a peer configured with the wrong AS is listed on
/// each node with the agent's reason, and once it is fixed each node lists
/// it Established, with its routes.
#[test]
fn describe_names_the_session_that_is_down_and_why() {
    let s = Setup::new("e2e-describe");
    let wrong_as = s.gateway("nonstop-agent:v1", "Handoff").replace(
        "  - address: 10.99.0.1\n    asn: 65000\n",
        "  - address: 10.99.0.1\n    asn: 65099\n",
    );
    assert_ne!(wrong_as, s.gateway("nonstop-agent:v1", "Handoff"), "the AS replaced");
    s.ns.apply(&wrong_as).unwrap();
    eventually(
        Duration::from_secs(90),
        "each node to list the session down with its reason",
        || {
            let status = s.status();
            let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
            let named = nodes.iter().filter(|n| {
                let down = &n["peers"][0];
                // The reset's reason stays, whatever the connections after
                // it met (gobgpd refuses them for a while after a NOTIFICATION).
                let why = [&down["lastError"], &down["lastReset"]];
                down["peer"] == "10.99.0.1"
                    && down["state"] != "Established"
                    && why.iter().any(|e| e.as_str().is_some_and(|e| e.contains("AS 65000")))
            });
            if nodes.len() == NODES.len() && named.count() == NODES.len() {
                Ok(())
            } else {
                Err(status["nodes"].to_string())
            }
        },
    );
    let described = s.ns.kubectl(&["describe", "bgpgw", "edge"]).unwrap();
    for text in ["Peers:", "10.99.0.1", "peer says AS 65000, configured AS 65099"] {
        assert!(described.contains(text), "no {text:?} in\n{described}");
    }
    let ready = s.condition("Ready").unwrap_or_default();
    assert!(ready["message"].as_str().is_some_and(|m| m.contains("10.99.0.1")), "{ready}");

    s.ns.apply(&s.gateway("nonstop-agent:v1", "Handoff")).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(120));
    eventually(Duration::from_secs(60), "every node's session listed Established", || {
        let status = s.status();
        let up = status["nodes"].as_array().is_some_and(|nodes| {
            nodes.len() == NODES.len()
                && nodes.iter().all(|n| {
                    let p = &n["peers"][0];
                    p["peer"] == "10.99.0.1"
                        && p["state"] == "Established"
                        && p["establishedSince"].is_string()
                        && p["routesAdvertised"] == PREFIXES.len()
                        && p["lastError"].is_null()
                })
        });
        if up && status["sessions"] == "3/3" { Ok(()) } else { Err(status.to_string()) }
    });
    let described = s.ns.kubectl(&["describe", "bgpgw", "edge"]).unwrap();
    assert!(described.contains("Established Since:"), "{described}");
    let advertised = described.lines().filter(|l| {
        l.trim_start().starts_with("Routes Advertised:") && l.trim_end().ends_with(" 2")
    });
    // Each node's own count, and each node's session's.
    assert_eq!(advertised.count(), 2 * NODES.len(), "{described}");
}

/// A gateway deleted and applied again under the same name, while the old
/// one's ConfigMap of the same revision is still there (here left behind on
/// purpose; in life, not yet garbage-collected, and about to be), serves
/// from a ConfigMap it owns: one collected with its old owner left the new
/// pods waiting in ContainerCreating for good.
#[test]
fn a_gateway_applied_again_under_the_same_name_owns_its_config() {
    let s = Setup::new("e2e-again");
    s.serving_v1("Handoff");
    s.ns.kubectl(&["delete", "bgpgw", "edge", "--cascade=orphan", "--timeout=120s"]).unwrap();
    let left = s.ns.kubectl(&["get", "configmaps", "-o", "name"]).unwrap();
    assert!(left.contains("configmap/edge-"), "the old config left behind: {left}");

    s.ns.apply(&s.gateway("nonstop-agent:v1", "Handoff")).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(120));
    s.wait_routes_from(&NODES, Duration::from_secs(30));
    let uid = s.ns.get("bgpgw/edge", "{.metadata.uid}").unwrap();
    for (pod, _) in s.pod_images().unwrap() {
        let config =
            s.ns.get(&format!("pod/{pod}"), "{.spec.volumes[?(@.name=='config')].configMap.name}");
        let config = config.unwrap();
        let owner = s.ns.get(&format!("configmap/{config}"), "{.metadata.ownerReferences[0].uid}");
        assert_eq!(owner.unwrap().trim(), uid.trim(), "{pod} mounts {config}, the new gateway's");
    }
}

/// A gateway deleted and applied again under the same name, with the same
/// spec, serves every node at once, though the deleted one's pods are still
/// there: a real kubelet can take a minute to remove them (here a
/// finalizer holds them, as long as the test needs). With pod names shared
/// across the two, every create was refused as AlreadyExists until then and
/// the nodes had no agent; a rollout bumped meanwhile stood still.
#[test]
fn a_gateway_applied_again_serves_while_the_deleted_ones_pods_linger() {
    let s = Setup::new("e2e-linger");
    s.serving_v1("Handoff");
    let before: Vec<String> = s.pod_images().unwrap().into_iter().map(|(pod, _)| pod).collect();
    let held = Held::all(&s.ns, &before);
    s.ns.kubectl(&["delete", "bgpgw", "edge", "--wait=true", "--timeout=120s"]).unwrap();

    s.ns.apply(&s.gateway("nonstop-agent:v1", "Handoff")).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(60));
    s.wait_routes_from(&NODES, Duration::from_secs(30));
    let lingering = s.ns.get("pods", "{.items[?(@.metadata.deletionTimestamp)].metadata.name}");
    let lingering = lingering.unwrap();
    for pod in &before {
        assert!(lingering.contains(pod.as_str()), "{pod} was to linger: {lingering}");
    }
    let after: Vec<String> = s.pod_images().unwrap().into_iter().map(|(pod, _)| pod).collect();
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} then {after:?}");
    drop(held);
}

/// Pods kept after their deletion by a finalizer of the test's, released
/// when dropped, however the test ends.
struct Held<'a> {
    ns: &'a nonstop_lab::testing::Namespace,
    pods: Vec<String>,
}

const HOLD: &str = r#"{"metadata":{"finalizers":["nonstop.dev/e2e-hold"]}}"#;

impl<'a> Held<'a> {
    fn all(ns: &'a nonstop_lab::testing::Namespace, pods: &[String]) -> Self {
        for pod in pods {
            ns.kubectl(&["patch", "pod", pod, "--type=merge", "-p", HOLD]).unwrap();
        }
        Held { ns, pods: pods.to_vec() }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        for pod in &self.pods {
            let release = r#"{"metadata":{"finalizers":null}}"#;
            let _ = self.ns.kubectl(&["patch", "pod", pod, "--type=merge", "-p", release]);
        }
    }
}

/// A second gateway selecting a node where the first already listens on
/// port 179 (and would be refused the port): it starts no agent there —
/// no crash loop — and its Ready condition names the gateway and the port;
/// moved out of the way (no listener, its own admin port) it starts. The
/// first gateway's routes at the router never move.
#[test]
fn a_second_gateway_on_a_node_yields_the_port_and_says_so() {
    let s = Setup::new("e2e-coexist");
    s.serving_v1("Handoff");
    let before = Tally::of(&s.router, &uplinks());
    let side = |listen: &str| {
        format!(
            r#"apiVersion: nonstop.dev/v1alpha1
kind: BgpGateway
metadata: {{name: side}}
spec:
  image: nonstop-agent:v1
  nodeSelector: {{nonstop.dev/e2e: {ns}, kubernetes.io/hostname: node-3}}
  asn: 65002
{listen}  peers:
  - address: 10.99.0.99
    asn: 65000
    connectRetryTime: 1
  announce: [{{prefix: "203.0.113.99/32"}}]
"#,
            ns = s.ns.name
        )
    };
    let status = || {
        let text = s.ns.kubectl(&["get", "bgpgw", "side", "-o", "json"]).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .map_or(serde_json::Value::Null, |v| v["status"].clone())
    };
    let ready = || {
        let status = status();
        let ready = status["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| (c["reason"].as_str().unwrap_or("").to_string(), c["message"].to_string()))
        });
        ready.ok_or_else(|| format!("no Ready condition: {status}"))
    };

    s.ns.apply(&side("")).unwrap();
    let message =
        eventually(Duration::from_secs(30), "side: ListenerConflict", || match ready()? {
            (reason, message) if reason == "ListenerConflict" => Ok(message),
            other => Err(format!("{other:?}")),
        });
    let edge = format!("node-3: gateway {}/edge binds port 179 (spec.listen)", s.ns.name);
    assert!(message.contains(&edge) && message.contains("spec.adminPort"), "{message}");
    // The reconcile that wrote the condition created no pod.
    assert!(s.pod_images_of("side").unwrap().is_empty(), "a pod that cannot bind its port");

    // Out of the first gateway's way: it starts, and its agent is active.
    s.ns.apply(&side("  listen: {enabled: false}\n  adminPort: 9279\n")).unwrap();
    eventually(Duration::from_secs(60), "side's agent active on node-3", || {
        let status = status();
        let node = &status["nodes"][0];
        let active = node["node"] == "node-3" && !node["activeAgent"].is_null();
        match ready()? {
            (reason, _) if active && reason != "ListenerConflict" => Ok(()),
            other => Err(format!("{other:?}; {status}")),
        }
    });
    assert_eq!(s.pod_images_of("side").unwrap().len(), 1);
    let gone = s.ns.kubectl(&["delete", "bgpgw", "side", "--timeout=60s"]);
    assert!(gone.is_ok(), "{gone:?}");
    s.wait_routes_from(&NODES, Duration::from_secs(10));
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.is_empty(), "the first gateway's routes moved: {seen:?}");
}

/// The BgpGateway CRD with fields this operator does not know, each with a
/// default the API server fills into every gateway it serves (CRDs applied
/// before the operator is upgraded, or an operator rolled back below
/// them); put back as it was when dropped, however the test ends.
struct NewerCrd<'a>(&'a Lab);

const CRD: &str = "bgpgateways.nonstop.dev";
const SPEC: &str = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties";
const NEWER_FIELDS: [&str; 2] = ["futureField", "peers/items/properties/futureField"];

impl<'a> NewerCrd<'a> {
    fn apply(lab: &'a Lab) -> Self {
        patch_fields(lab, |field| {
            format!(r#"{{"op":"add","path":"{SPEC}/{field}","value":{{"type":"string","default":"on"}}}}"#)
        })
        .unwrap();
        NewerCrd(lab)
    }
}

impl Drop for NewerCrd<'_> {
    fn drop(&mut self) {
        let _ =
            patch_fields(self.0, |field| format!(r#"{{"op":"remove","path":"{SPEC}/{field}"}}"#));
    }
}

/// One JSON patch of the CRD, an operation per newer field.
fn patch_fields(lab: &Lab, op: impl Fn(&str) -> String) -> Result<String, String> {
    let ops: Vec<String> = NEWER_FIELDS.iter().map(|field| op(field)).collect();
    lab.kubectl(&["patch", "crd", CRD, "--type=json", "-p", &format!("[{}]", ops.join(","))])
}

/// A newer CRD's defaulted fields, in every gateway the API server serves,
/// do not stop the operator: it passes over what it does not know, and an
/// image bump still rolls every node hitlessly.
#[test]
fn a_newer_crds_fields_do_not_stop_the_operator() {
    let s = Setup::new("e2e-newer-crd");
    s.serving_v1("Handoff");
    let _newer = NewerCrd::apply(&s.lab);
    eventually(Duration::from_secs(30), "the newer fields in the gateway served", || {
        let text = s.ns.kubectl(&["get", "bgpgw", "edge", "-o", "json"])?;
        let gateway: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let spec = &gateway["spec"];
        if spec["futureField"] == "on" && spec["peers"][0]["futureField"] == "on" {
            Ok(())
        } else {
            Err(spec.to_string())
        }
    });
    hitless_roll(&s, "nonstop-agent:v2");
}
