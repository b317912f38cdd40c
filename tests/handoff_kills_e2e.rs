//! The handoff's kill matrix with the operator in the loop: during an
//! image bump on a node, SIGKILL the new agent, or separately the old one,
//! stopped at each step of the handoff. Whatever the step, the node ends
//! with exactly one pod and one active agent serving every session, and
//! the router never loses a route (live, or kept under Graceful Restart).
//!
//! Each round uses one node alone (one rollout step) and its own image: the
//! plain agent with `NONSTOP_TEST_HANDOFF_STOP_AT` set the first time the
//! pod runs it, so the agent stops itself at that step and the test kills
//! it; the kubelet's restart then runs it plainly. Nodes 1–3 run rounds at
//! the same time, each with a gateway of its own. Shares the lab's nodes
//! with the other end-to-end tests (nextest group `lab-nodes`).

mod support;

use std::time::Duration;

use nonstop_lab::capture::Capture;
use nonstop_lab::router::Tally;
use nonstop_lab::testing::{Watch, eventually};
use serde_json::Value;
use support::{PREFIXES, REAL_AGENT, Setup, uplink};

const STEPS: [&str; 10] = [
    "new:welcome",
    "new:listeners",
    "new:sessions",
    "new:commit",
    "old:welcome",
    "old:listeners",
    "old:sessions",
    "old:done",
    "old:commit",
    "old:retire",
];

/// An image that runs the agent stopped at `step` the first time a pod
/// runs it as `run`, and plainly afterwards.
fn stopping_image(s: &Setup, step: &str) -> String {
    let tag = format!("nonstop-agent:stop-{}", step.replace(':', "-"));
    // Not `exec`: as PID 1 of its container the agent could not stop
    // itself (init ignores SIGSTOP from its own namespace). The shell is
    // PID 1 and passes SIGTERM on.
    let script = format!(
        r#"#!/bin/sh
marker=/var/run/nonstop/stopped-once-$NONSTOP_POD
if [ "$1" != run ] || [ -e "$marker" ]; then exec {REAL_AGENT} "$@"; fi
touch "$marker"
export NONSTOP_TEST_HANDOFF_STOP_AT={step}
{REAL_AGENT} "$@" &
child=$!
trap 'kill -TERM $child' TERM
status=0
while kill -0 $child 2>/dev/null; do wait $child; status=$?; done
exit $status
"#
    );
    support::wrap_agent(&s.lab, &tag, &script)
}

/// The pid of the agent stopped (state T) at `step`.
fn stopped_at(step: &str) -> Option<i32> {
    let want = format!("NONSTOP_TEST_HANDOFF_STOP_AT={step}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        if !environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            return None;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
        (state == "T").then_some(pid)
    })
}

/// One node's share of the matrix: its own gateway, selecting that node
/// alone, so three rounds run at once on nodes 1–3 and never meet (each
/// has its own pods, session and hop at the router).
struct Lane<'a> {
    s: &'a Setup,
    node: &'static str,
    gateway: String,
    hop: Vec<String>,
}

impl Lane<'_> {
    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.s.ns.kubectl(args)
    }

    fn status(&self) -> Value {
        let text = self.kubectl(&["get", "bgpgw", &self.gateway, "-o", "json"]).unwrap_or_default();
        serde_json::from_str::<Value>(&text).map(|v| v["status"].clone()).unwrap_or(Value::Null)
    }

    fn node_status(&self) -> Value {
        self.status()["nodes"].as_array().and_then(|n| n.first().cloned()).unwrap_or(Value::Null)
    }

    /// (pod, image) of the lane's pods not being deleted.
    fn pods(&self) -> Result<Vec<(String, String)>, String> {
        self.s.pod_images_of(&self.gateway)
    }

    /// The node has one pod, and its agent is the active one with the session up.
    fn settled(&self) -> Result<String, String> {
        let pods = self.pods()?;
        let node = self.node_status();
        let one = pods.len() == 1
            && node["pod"].as_str() == Some(pods[0].0.as_str())
            && node["sessions"]["established"] == 1;
        if one { Ok(pods[0].1.clone()) } else { Err(format!("pods {pods:?}; node {node}")) }
    }

    /// The router has every prefix via this lane's node (other lanes' nodes
    /// may carry them too).
    fn wait_routes(&self) {
        eventually(
            Duration::from_secs(30),
            &format!("the router's routes via {:?}", self.hop),
            || {
                let routes = self.s.router.routes()?;
                let ok = PREFIXES
                    .iter()
                    .all(|p| routes.get(*p).is_some_and(|hops| hops.contains(&self.hop[0])));
                if ok { Ok(()) } else { Err(format!("{routes:?}")) }
            },
        );
    }

    fn gateway_yaml(&self, image: &str) -> String {
        let yaml = self
            .s
            .gateway(image, "Handoff")
            .replace("metadata: {name: edge}", &format!("metadata: {{name: {}}}", self.gateway))
            .replace(
                &format!("nodeSelector: {{nonstop.dev/e2e: {}}}", self.s.ns.name),
                &format!("nodeSelector: {{nonstop.dev/e2e-lane: {}}}", self.node),
            )
            .replace("drainSeconds: 2", "drainSeconds: 1");
        assert!(yaml.contains(&self.gateway) && yaml.contains("e2e-lane"), "{yaml}");
        yaml
    }

    /// What to read when a round fails: the lane's pods (those being
    /// deleted too) and each one's log, this run's and the last one's.
    fn diagnose(&self) -> String {
        let selector = format!("nonstop.dev/gateway={}", self.gateway);
        // Each pod's image and owner: a pod name alone does not say which
        // round, or which gateway of this name, made it.
        let columns = "custom-columns=NAME:.metadata.name,IMAGE:.spec.containers[0].image,\
                       PHASE:.status.phase,CREATED:.metadata.creationTimestamp,\
                       DELETED:.metadata.deletionTimestamp,OWNER:.metadata.ownerReferences[0].uid";
        let mut out = self
            .kubectl(&["get", "pods", "-l", &selector, "-o", columns])
            .unwrap_or_else(|e| e.to_string());
        let names =
            self.kubectl(&["get", "pods", "-l", &selector, "-o", "name"]).unwrap_or_default();
        for pod in names.lines() {
            for previous in ["--previous=false", "--previous=true"] {
                let log = self
                    .kubectl(&["logs", pod, previous, "--tail=60"])
                    .unwrap_or_else(|e| e.to_string());
                out += &format!("\n--- {pod} {previous}\n{log}");
            }
        }
        out
    }

    /// Runs `f`; if it panics, prints what [`Self::diagnose`] finds first.
    fn explained<T>(&self, f: impl FnOnce() -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(value) => value,
            Err(panic) => {
                eprintln!("{}: {} failed; its pods:\n{}", self.node, self.gateway, self.diagnose());
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// One round: the node on `from`, then bumped to `to`, the agent stopped
    /// at `step` killed; returns the image the node ends on.
    fn round(&self, step: &str, stopping: &str) -> String {
        self.explained(|| self.round_unexplained(step, stopping))
    }

    fn round_unexplained(&self, step: &str, stopping: &str) -> String {
        let (from, to) = if step.starts_with("old:") {
            (stopping.to_string(), "nonstop-agent:v2".to_string())
        } else {
            ("nonstop-agent:v1".to_string(), stopping.to_string())
        };
        self.s.ns.apply(&self.gateway_yaml(&from)).unwrap();
        eventually(
            Duration::from_secs(90),
            &format!("{step}: {} serving {from}", self.node),
            || match self.settled()? {
                image if image == from => Ok(()),
                image => Err(image),
            },
        );
        self.wait_routes();

        let before = Tally::of(&self.s.router, &self.hop);
        let watch = Watch::start(self.s.router.clone(), &PREFIXES, &self.hop, 1);
        let capture =
            Capture::start(self.s.lab.dir(), &format!("kill-{}", step.replace(':', "-"))).unwrap();
        let patch = format!(r#"{{"spec":{{"image":"{to}"}}}}"#);
        self.kubectl(&["patch", "bgpgw", &self.gateway, "--type=merge", "-p", &patch]).unwrap();
        let victim =
            eventually(Duration::from_secs(60), &format!("an agent stopped at {step}"), || {
                stopped_at(step).ok_or_else(|| "none yet".to_string())
            });
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(victim).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let image =
            eventually(Duration::from_secs(120), &format!("{step}: one agent again"), || {
                // Settled for good: the same answer twice, a second apart.
                let first = self.settled()?;
                std::thread::sleep(Duration::from_secs(1));
                let second = self.settled()?;
                if first == second { Ok(second) } else { Err(format!("{first} then {second}")) }
            });
        self.wait_routes();
        let misses = watch.finish();
        assert!(misses.is_empty(), "{step}: routes missing at the router: {misses:?}");
        let seen = Tally::of(&self.s.router, &self.hop).since(&before);
        assert!(seen.withdrawals.is_empty(), "{step}: the router withdrew: {seen:?}");
        // On the wire: a killed agent's connection may close (FIN/RST), but
        // no NOTIFICATION and no withdrawal cross.
        let wire = capture.finish().on(&self.hop).unwrap();
        assert!(wire.notifications.is_empty() && wire.withdrawals.is_empty(), "{step}: {wire:?}");
        let record = self.node_status()["lastUpgrade"].clone();
        eprintln!(
            "{step}: {} ends on {image}; upgrade {}; session downs at the router {}; \
             FIN/RST on the wire {}",
            self.node,
            record["result"],
            seen.downs.len(),
            wire.fin_or_rst.len()
        );

        // Generous: a real kubelet removes a pod some seconds after its
        // process ended, and CI runs everything on 2 cores.
        self.kubectl(&["delete", "bgpgw", &self.gateway, "--wait=true", "--timeout=180s"]).unwrap();
        eventually(Duration::from_secs(120), "the round's pods gone", || {
            let pods = self.pods()?;
            if pods.is_empty() { Ok(()) } else { Err(format!("{pods:?}")) }
        });
        image
    }
}

#[test]
fn killing_either_agent_at_any_handoff_step_leaves_one_agent_and_every_route() {
    let s = Setup::new("e2e-kills");
    // Every stopping image first: the lanes then only run pods.
    let images: Vec<(&str, String)> =
        STEPS.iter().map(|&step| (step, stopping_image(&s, step))).collect();
    let lanes: Vec<Lane> = ["node-1", "node-2", "node-3"]
        .into_iter()
        .enumerate()
        .map(|(i, node)| {
            s.lab
                .kubectl(&[
                    "label",
                    "node",
                    node,
                    &format!("nonstop.dev/e2e-lane={node}"),
                    "--overwrite",
                ])
                .unwrap();
            Lane { s: &s, node, gateway: format!("kills-{}", i + 1), hop: vec![uplink(node)] }
        })
        .collect();
    let outcomes: Vec<(String, String)> = std::thread::scope(|scope| {
        let running: Vec<_> = lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| {
                // Lane i takes steps i, i+3, i+6, …
                let mine: Vec<&(&str, String)> =
                    images.iter().skip(i).step_by(lanes.len()).collect();
                scope.spawn(move || {
                    mine.into_iter()
                        .map(|(step, stopping)| (step.to_string(), lane.round(step, stopping)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        running
            .into_iter()
            .flat_map(|r| r.join().expect("a lane failed (its panic is above)"))
            .collect()
    });
    for node in ["node-1", "node-2", "node-3"] {
        s.lab.kubectl(&["label", "node", node, "nonstop.dev/e2e-lane-"]).unwrap();
    }
    assert_eq!(outcomes.len(), STEPS.len());
    eprintln!("outcomes: {outcomes:?}");
}
