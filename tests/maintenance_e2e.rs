//! Day-2 life of a gateway in the lab, with the operator in the loop and
//! the router watched: cordon, drain, the exclude label, and a successor
//! that crashes right after it took over. The promise under test: routes
//! leave a node only when someone asks, and then gracefully.
//!
//! These share the lab's nodes 1–3 with the other end-to-end tests, so
//! they run one at a time (`.config/nextest.toml`, group `lab-nodes`).

mod support;

use std::time::{Duration, Instant};

use nonstop_lab::capture::Capture;
use nonstop_lab::router::Tally;
use nonstop_lab::testing::{Lab, OPERATOR_NS, Watch, eventually};
use serde_json::Value;
use support::{
    NODES, PREFIXES, REAL_AGENT, Setup, hitless_roll, leader, operator_pid, uplink, uplinks,
};

const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const GRACEFUL_SHUTDOWN: &str = "65535:0";

/// Puts a node back however the test ends: uncordoned, not excluded.
struct Restore(Lab, &'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&["uncordon", self.1]);
        let _ = self.0.kubectl(&["label", "node", self.1, &format!("{EXCLUDE}-")]);
    }
}

fn node_status(s: &Setup, node: &str) -> Value {
    let status = s.status();
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["node"] == node)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the gateway's status gives `node` this maintenance state.
fn wait_maintenance(s: &Setup, node: &str, want: Option<&str>) {
    eventually(Duration::from_secs(30), &format!("{node}'s maintenance {want:?}"), || {
        let n = node_status(s, node);
        if n["maintenance"].as_str() == want { Ok(()) } else { Err(n.to_string()) }
    });
}

/// The gateway's pods on `node` that are not being deleted: its agent, or
/// one about to start. (A deleted pod's object can outlive its agent by a
/// minute while the kubelet cleans up.)
fn pods_on(s: &Setup, node: &str) -> Result<Vec<String>, String> {
    let text = s.ns.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("nonstop.dev/gateway=edge,nonstop.dev/node={node}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' ').filter(|(_, deleted)| deleted.is_empty()))
        .map(|(name, _)| name.to_string())
        .collect())
}

/// The router's view of taking `node` out, from its `received` stream
/// position `from` on: each prefix re-announced with GRACEFUL_SHUTDOWN, then
/// gone from its table (the agent's Cease ends the session) no sooner than
/// `drain` seconds later (the router stamps paths in whole seconds). Returns
/// the stream position once the routes are gone.
fn assert_withdrawn_gracefully(s: &Setup, node: &str, from: usize, drain: u64) -> usize {
    let hop = uplink(node);
    let shut_at = eventually(Duration::from_secs(30), "GRACEFUL_SHUTDOWN re-announcements", || {
        let received = s.router.received()?;
        let mut ages = Vec::new();
        for prefix in PREFIXES {
            let shut = received[from.min(received.len())..].iter().find(|r| {
                r.neighbor == hop
                    && r.prefix == prefix
                    && !r.withdrawal
                    && r.communities.iter().any(|c| c == GRACEFUL_SHUTDOWN)
            });
            match shut {
                Some(r) => ages.push(r.age.unwrap_or(0)),
                None => return Err(format!("{prefix} not yet: {received:?}")),
            }
        }
        Ok(ages.into_iter().min().unwrap_or(0))
    });
    eventually(Duration::from_secs(30), &format!("{node}'s routes gone"), || {
        let routes = s.router.routes()?;
        let left: Vec<_> =
            PREFIXES.iter().filter(|p| routes.get(**p).is_some_and(|h| h.contains(&hop))).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?} still via {hop}")) }
    });
    let gone_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(
        gone_at + 1 >= shut_at + drain,
        "{node}'s routes went {}s after GRACEFUL_SHUTDOWN, drainSeconds is {drain}",
        gone_at.saturating_sub(shut_at)
    );
    s.router.received().unwrap().len()
}

#[test]
fn cordon_changes_nothing_at_the_router_and_a_cordoned_node_still_upgrades() {
    let s = Setup::new("e2e-cordon");
    s.serving_v1("Handoff");
    let _restore = Restore(s.lab.clone(), "node-2");
    let before = Tally::of(&s.router, &uplinks());
    let watch = Watch::start(s.router.clone(), &PREFIXES, &uplinks(), NODES.len());
    let capture = Capture::start(s.lab.dir(), "cordon").unwrap().hearing(&uplinks());

    s.lab.kubectl(&["cordon", "node-2"]).unwrap();
    wait_maintenance(&s, "node-2", Some("Cordoned"));
    assert_eq!(s.status()["ready"], "3/3");
    // An upgrade meanwhile hands off on the cordoned node too.
    hitless_roll(&s, "nonstop-agent:v2");
    s.lab.kubectl(&["uncordon", "node-2"]).unwrap();
    wait_maintenance(&s, "node-2", None);

    let misses = watch.finish();
    assert!(misses.is_empty(), "routes missing at the router: {misses:?}");
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.is_empty(), "the router saw across cordon, upgrade, uncordon: {seen:?}");
    assert_calm(capture, &uplinks());
}

/// The wire at the router, read by tshark, agrees: BGP flowed, and there
/// was no NOTIFICATION, no FIN or RST and no withdrawal on `addresses`.
fn assert_calm(capture: Capture, addresses: &[String]) {
    let wire = capture.finish().on(addresses).unwrap();
    assert!(wire.bgp_messages > 0, "the capture saw no BGP at all: {wire:?}");
    assert!(wire.is_calm(), "the capture at the router saw: {wire:?}");
}

/// Starts the node's kubelet again if a test stopped it.
struct KubeletBack(Lab, &'static str);

impl Drop for KubeletBack {
    fn drop(&mut self) {
        let _ = self.0.lab(&["node", "start", self.1]);
    }
}

fn node_ready(s: &Setup, node: &str) -> String {
    let path = "{.status.conditions[?(@.type==\"Ready\")].status}";
    s.lab.kubectl(&["get", "node", node, "-o", &format!("jsonpath={path}")]).unwrap_or_default()
}

/// A node whose kubelet stops (as when it crashes or its host hangs) goes
/// NotReady; its agent keeps running and serving, as on a real node. A
/// rollout meanwhile upgrades the other nodes, says it waits for that one,
/// and finishes it once the kubelet is back. Nothing is withdrawn anywhere.
#[test]
fn a_node_whose_kubelet_stops_mid_rollout_is_waited_for_and_converges() {
    let s = Setup::new("e2e-notready");
    s.serving_v1("Handoff");
    let watched = Watched::start(&s, "notready");
    let _back = KubeletBack(s.lab.clone(), "node-2");
    s.lab.lab(&["node", "stop-kubelet", "node-2"]).unwrap();
    // The node controller's grace period (the lab's 20 s) passes first.
    eventually(Duration::from_secs(90), "node-2 NotReady", || match node_ready(&s, "node-2") {
        r if r == "Unknown" || r == "False" => Ok(()),
        r => Err(r),
    });

    s.set_image("nonstop-agent:v2");
    let status =
        eventually(Duration::from_secs(120), "nodes 1 and 3 on v2, node-2 waited for", || {
            let images = s.pod_images()?;
            let on_v2 = |node: &str| {
                images
                    .iter()
                    .any(|(p, i)| p.contains(&format!("-{node}-")) && i == "nonstop-agent:v2")
            };
            let progressing = s
                .condition("Progressing")
                .and_then(|c| c["message"].as_str().map(String::from))
                .unwrap_or_default();
            let waits = progressing.contains("waiting for node-2: not Ready");
            if on_v2("node-1") && on_v2("node-3") && waits && !on_v2("node-2") {
                Ok(progressing)
            } else {
                Err(format!("{images:?}; {progressing}"))
            }
        });
    eprintln!("while node-2's kubelet is down: {status}");
    // node-2's agent still serves: its session and routes are at the router.
    s.wait_routes_from(&NODES, Duration::from_secs(5));

    s.lab.lab(&["node", "start", "node-2"]).unwrap();
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    assert_eq!(node_ready(&s, "node-2"), "True");
    watched.saw_nothing(&s);
}

#[test]
fn drain_withdraws_a_node_gracefully_until_it_is_uncordoned() {
    let s = Setup::new("e2e-drain");
    s.serving_v1("Handoff");
    let _restore = Restore(s.lab.clone(), "node-3");
    let others = vec![uplink("node-1"), uplink("node-2")];
    let before_others = Tally::of(&s.router, &others);
    let before = s.router.received().unwrap().len();
    let capture = Capture::start(s.lab.dir(), "drain").unwrap().hearing(&others);

    // The maintenance recipe from the README. The pod selector keeps the
    // drain to this test's gateway (other lab pods may live on node-3).
    let started = Instant::now();
    s.lab
        .kubectl(&[
            "drain",
            "node-3",
            "--ignore-daemonsets",
            "--pod-selector=nonstop.dev/gateway=edge",
            "--timeout=120s",
        ])
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "the drain waited for the agent's drain: {took:?}");
    let withdrawn = assert_withdrawn_gracefully(&s, "node-3", before, 2);
    s.wait_routes_from(&NODES[..2], Duration::from_secs(30));
    wait_maintenance(&s, "node-3", Some("Drained"));
    assert_eq!(s.status()["ready"], "2/2");

    // Stays withdrawn: no new agent, no announcement, for longer than the
    // operator's idle resync (30 s), so it has planned the drained node
    // again from scratch, not only on the eviction's events.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(35) {
        let pods = pods_on(&s, "node-3").unwrap();
        assert!(pods.is_empty(), "an agent came back on the drained node: {pods:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let after = s.router.received().unwrap();
    let flaps: Vec<_> =
        after[withdrawn..].iter().filter(|r| r.neighbor == uplink("node-3")).collect();
    assert!(flaps.is_empty(), "node-3 flapped while drained: {flaps:?}");

    s.lab.kubectl(&["uncordon", "node-3"]).unwrap();
    s.wait_routes_from(&NODES, Duration::from_secs(60));
    wait_maintenance(&s, "node-3", None);
    let seen = Tally::of(&s.router, &others).since(&before_others);
    assert!(seen.is_empty(), "the other nodes were touched: {seen:?}");
    // On the wire: node-3 ended its session with a NOTIFICATION (Cease),
    // withdrew nothing by UPDATE; the other nodes saw nothing at all.
    let recording = capture.finish();
    let wire = recording.on(&[uplink("node-3")]).unwrap();
    assert!(!wire.notifications.is_empty(), "node-3's Cease: {wire:?}");
    assert!(wire.withdrawals.is_empty(), "{wire:?}");
    let wire = recording.on(&others).unwrap();
    assert!(wire.bgp_messages > 0 && wire.is_calm(), "the other nodes on the wire: {wire:?}");
}

#[test]
fn the_exclude_label_withdraws_a_node_until_it_is_removed() {
    let s = Setup::new("e2e-exclude");
    s.serving_v1("Handoff");
    let _restore = Restore(s.lab.clone(), "node-3");
    let before = s.router.received().unwrap().len();
    let others = [uplink("node-1"), uplink("node-2")];
    let capture = Capture::start(s.lab.dir(), "exclude").unwrap().hearing(&others);

    s.lab.kubectl(&["label", "node", "node-3", &format!("{EXCLUDE}=true")]).unwrap();
    assert_withdrawn_gracefully(&s, "node-3", before, 2);
    s.wait_routes_from(&NODES[..2], Duration::from_secs(30));
    wait_maintenance(&s, "node-3", Some("Excluded"));
    eventually(Duration::from_secs(30), "node-3's pod deleted", || {
        let pods = pods_on(&s, "node-3")?;
        if pods.is_empty() { Ok(()) } else { Err(format!("{pods:?}")) }
    });
    let events = s.events();
    let told = events["items"].as_array().into_iter().flatten().any(|e| {
        let text = e["note"].as_str().or_else(|| e["message"].as_str());
        e["reason"] == "Exclude" && text.is_some_and(|m| m.contains("node-3"))
    });
    assert!(told, "an Exclude Event naming node-3: {events}");

    // Back in: a new agent starts once the old pod's agent has exited,
    // which the kubelet may report only when it removes the pod.
    s.lab.kubectl(&["label", "node", "node-3", &format!("{EXCLUDE}-")]).unwrap();
    s.wait_routes_from(&NODES, Duration::from_secs(90));
    wait_maintenance(&s, "node-3", None);
    let recording = capture.finish();
    let wire = recording.on(&[uplink("node-3")]).unwrap();
    assert!(!wire.notifications.is_empty() && wire.withdrawals.is_empty(), "node-3: {wire:?}");
    let wire = recording.on(&others).unwrap();
    assert!(wire.bgp_messages > 0 && wire.is_calm(), "the other nodes on the wire: {wire:?}");
}

/// An agent image that, the first time it runs as `run` on a node, takes
/// over, serves 0.3 s, then dies by SIGKILL (exit 137); afterwards it is
/// the plain agent.
fn crash_once_image(s: &Setup) -> String {
    support::wrap_agent(
        &s.lab,
        "nonstop-agent:crash-once",
        &format!(
            r#"#!/bin/sh
agent={REAL_AGENT}
marker=/var/run/nonstop/crashed-once-$NONSTOP_POD
if [ "$1" != run ] || [ -e "$marker" ]; then exec "$agent" "$@"; fi
touch "$marker"
"$agent" "$@" &
child=$!
until "$agent" ready --state-dir /var/run/nonstop --pod "$NONSTOP_POD" >/dev/null 2>&1; do
  kill -0 $child 2>/dev/null || exit 3
  sleep 0.05
done
sleep 0.3
kill -9 $child
exit 137
"#
        ),
    )
}

#[test]
fn a_successor_that_crashes_after_taking_over_is_restarted_in_place() {
    let s = Setup::new("e2e-crash");
    // pauseSeconds: a soak between nodes, so node-1's crash 0.3 s after its
    // takeover is seen before node-2 would start.
    let soaking = s
        .gateway("nonstop-agent:v1", "Handoff")
        .replace("handoffTimeoutSeconds: 30}", "handoffTimeoutSeconds: 30, pauseSeconds: 5}");
    assert!(soaking.contains("pauseSeconds: 5"), "{soaking}");
    s.ns.apply(&soaking).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    s.wait_routes_from(&NODES, Duration::from_secs(30));
    let image = crash_once_image(&s);
    let before = Tally::of(&s.router, &uplinks());
    // Graceful Restart keeps every path at the router through the crash.
    let watch = Watch::start(s.router.clone(), &PREFIXES, &uplinks(), NODES.len());
    let capture = Capture::start(s.lab.dir(), "crash").unwrap();
    s.set_image(&image);

    let record = eventually(Duration::from_secs(90), "node-1's upgrade recorded as Failed", || {
        let n = node_status(&s, "node-1");
        if n["lastUpgrade"]["result"] == "Failed" { Ok(n) } else { Err(n.to_string()) }
    });
    let reason = record["lastUpgrade"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("137"), "the failure's reason: {record}");
    // node-1 is served by the restarted new agent; the rollout stopped there.
    eventually(Duration::from_secs(60), "node-1 served by its restarted agent", || {
        let n = node_status(&s, "node-1");
        let pods = pods_on(&s, "node-1")?;
        let ok = pods.len() == 1
            && n["pod"].as_str() == Some(pods[0].as_str())
            && n["sessions"]["established"] == 1;
        if ok { Ok(()) } else { Err(format!("{n} pods {pods:?}")) }
    });
    let status = s.status();
    assert!(status["rollout"].as_str().unwrap_or("").starts_with("Degraded"), "{status}");
    let images = s.pod_images().unwrap();
    assert_eq!(images.len(), 3, "one pod per node: {images:?}");
    for (pod, image) in &images {
        let want =
            if pod.contains("node-1") { "nonstop-agent:crash-once" } else { "nonstop-agent:v1" };
        assert_eq!(image, want, "{pod}");
    }
    let misses = watch.finish();
    assert!(misses.is_empty(), "routes left the router: {misses:?}");
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.withdrawals.is_empty(), "the router withdrew: {seen:?}");
    // The crash closed node-1's connection (FIN/RST); nothing else moved.
    let wire = capture.finish().on(&uplinks()).unwrap();
    assert!(wire.notifications.is_empty() && wire.withdrawals.is_empty(), "{wire:?}");

    // Fixing the image resumes the rollout, hitlessly.
    hitless_roll(&s, "nonstop-agent:v2");
}

/// A rollout v1 → v2 under way, the router watched three ways from before
/// it began: its table polled, its own event logs, and a capture.
struct Watched {
    before: Tally,
    watch: Watch,
    capture: Capture,
}

impl Watched {
    /// The router's logs, its table every 200 ms and its wire, from now.
    fn start(s: &Setup, name: &str) -> Watched {
        Watched {
            before: Tally::of(&s.router, &uplinks()),
            watch: Watch::start(s.router.clone(), &PREFIXES, &uplinks(), NODES.len()),
            capture: Capture::start(s.lab.dir(), name).unwrap().hearing(&uplinks()),
        }
    }

    /// Serving v1, then the image bumped; returns once the first node is on v2.
    fn rolling_to_v2(s: &Setup, name: &str) -> Watched {
        s.serving_v1("Handoff");
        let watched = Watched::start(s, name);
        s.set_image("nonstop-agent:v2");
        s.wait_first_node_on("nonstop-agent:v2");
        watched
    }

    /// Every prefix via every node at every poll, no session down or
    /// UPDATE in the router's logs, nothing on the wire.
    fn saw_nothing(self, s: &Setup) {
        let misses = self.watch.finish();
        assert!(misses.is_empty(), "a node was without routes: {misses:?}");
        let seen = Tally::of(&s.router, &uplinks()).since(&self.before);
        assert!(seen.is_empty(), "the router saw: {seen:?}");
        assert_calm(self.capture, &uplinks());
    }
}

/// The operator's log lines that record a step it took (a write).
fn steps_logged(lab: &Lab, pod: &str) -> Vec<String> {
    let log = lab.lab(&["logs", pod, "-n", OPERATOR_NS]).unwrap_or_default();
    log.lines().filter(|l| l.contains(" reason=")).map(String::from).collect()
}

#[test]
fn a_leader_frozen_past_its_lease_writes_nothing_when_it_wakes() {
    let s = Setup::new("e2e-frozen");
    let watched = Watched::rolling_to_v2(&s, "frozen-leader");
    let frozen = leader(&s.lab).unwrap();
    let pid = rustix::process::Pid::from_raw(operator_pid(&frozen).expect("the leader")).unwrap();
    struct Thaw(rustix::process::Pid);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
        }
    }
    let thaw = Thaw(pid);
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    // The chart's lease is 15 s: the other replica leads once it lapses.
    let now = eventually(Duration::from_secs(60), "another replica to lead", || {
        let now = leader(&s.lab)?;
        if now != frozen { Ok(now) } else { Err(now) }
    });
    let written = steps_logged(&s.lab, &frozen);
    drop(thaw);
    // Awake, it finds its lead gone, stops acting and exits (the kubelet
    // restarts it as a follower) without writing anything more.
    eventually(Duration::from_secs(30), "the thawed replica to give up", || {
        let log = s.lab.lab(&["logs", &frozen, "-n", OPERATOR_NS])?;
        if log.contains("no longer the leader") { Ok(()) } else { Err("still acting".into()) }
    });
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    let after = steps_logged(&s.lab, &frozen);
    assert_eq!(after, written, "the replica that lost its lead wrote after waking");
    assert_eq!(leader(&s.lab).unwrap(), now, "the new leader keeps the lead");
    watched.saw_nothing(&s);
    assert_eq!(s.pod_images().unwrap().len(), 3, "no duplicate pods");
}

#[test]
fn a_gateway_outside_the_clusters_policy_is_refused_by_rule() {
    // The lab installs the operator with a policy: the lab's images, and
    // the documentation prefixes the tests announce.
    let s = Setup::new("e2e-policy");
    let foreign = s.gateway("registry.example/agent:v1", "Handoff");
    s.ns.apply(&foreign).unwrap();
    let message = s.wait_ready_reason("PolicyViolation");
    assert!(message.contains("image registry.example/agent:v1 is not allowed"), "{message}");
    assert!(message.contains("--allowed-images"), "{message}");
    assert!(s.pod_images().unwrap().is_empty(), "no agent for a refused gateway");

    let wider =
        s.gateway("nonstop-agent:v1", "Handoff").replace("198.51.100.0/24", "198.51.0.0/16");
    s.ns.apply(&wider).unwrap();
    let message = s.wait_ready_reason("PolicyViolation");
    assert!(message.contains("spec.announce[0].prefix 198.51.0.0/16 is outside"), "{message}");
    assert!(s.pod_images().unwrap().is_empty());

    // Within the policy it runs; a later change outside it touches nothing.
    s.serving_v1("Handoff");
    let before = Tally::of(&s.router, &uplinks());
    s.set_image("registry.example/agent:v2");
    s.wait_ready_reason("PolicyViolation");
    let images = s.pod_images().unwrap();
    assert!(images.iter().all(|(_, i)| i == "nonstop-agent:v1"), "{images:?}");
    s.wait_routes_from(&NODES, Duration::from_secs(5));
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.is_empty(), "the router saw: {seen:?}");
}

#[test]
fn a_rollout_goes_on_after_the_api_server_restarts_mid_way() {
    let s = Setup::new("e2e-apiserver");
    let watched = Watched::rolling_to_v2(&s, "api-server-restart");
    // The API server goes away mid-rollout and comes back (`lab up` starts
    // what is not running): agents keep serving meanwhile, and the
    // operator, once it can, finishes where the rollout stands.
    nonstop_lab::process::stop(s.lab.dir(), "kube-apiserver", Duration::from_secs(10));
    s.lab.lab(&["up"]).unwrap();
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(180));
    watched.saw_nothing(&s);
    assert_eq!(s.pod_images().unwrap().len(), 3, "no duplicate pods");
}
