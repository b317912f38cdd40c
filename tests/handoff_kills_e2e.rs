//! The handoff's kill matrix with the operator in the loop: during an
//! image bump on a node, SIGKILL the new agent, or separately the old one,
//! stopped at each step of the handoff. Whatever the step, the node ends
//! with exactly one pod and one active agent serving every session, and
//! the router never loses a route (live, or kept under Graceful Restart).
//!
//! Each round uses node-1 alone (one rollout step), its own images: the
//! plain agent with `NONSTOP_TEST_HANDOFF_STOP_AT` set the first time the
//! pod runs it, so the agent stops itself at that step and the test kills
//! it; the kubelet's restart then runs it plainly. Shares the lab's nodes
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

fn node1(s: &Setup) -> Value {
    s.status()["nodes"].as_array().and_then(|n| n.first().cloned()).unwrap_or(Value::Null)
}

/// The node has one pod, and its agent is the active one with the session up.
fn settled(s: &Setup) -> Result<String, String> {
    let pods = s.pod_images()?;
    let node = node1(s);
    let one = pods.len() == 1
        && node["pod"].as_str() == Some(pods[0].0.as_str())
        && node["sessions"]["established"] == 1;
    if one { Ok(pods[0].1.clone()) } else { Err(format!("pods {pods:?}; node {node}")) }
}

#[test]
fn killing_either_agent_at_any_handoff_step_leaves_one_agent_and_every_route() {
    let s = Setup::new("e2e-kills");
    // node-1 only: each round is one node's upgrade.
    for node in ["node-2", "node-3"] {
        s.lab.kubectl(&["label", "node", node, "nonstop.dev/e2e-"]).unwrap();
    }
    let hop = vec![uplink("node-1")];
    let mut outcomes = Vec::new();
    for step in STEPS {
        let stopping = stopping_image(&s, step);
        let (from, to) = if step.starts_with("old:") {
            (stopping.clone(), "nonstop-agent:v2".to_string())
        } else {
            ("nonstop-agent:v1".to_string(), stopping.clone())
        };
        let gateway = s.gateway(&from, "Handoff").replace("drainSeconds: 2", "drainSeconds: 1");
        s.ns.apply(&gateway).unwrap();
        eventually(Duration::from_secs(90), &format!("{step}: node-1 serving {from}"), || {
            match settled(&s)? {
                image if image == from => Ok(()),
                image => Err(image),
            }
        });
        s.wait_routes_from(&["node-1"], Duration::from_secs(30));

        let before = Tally::of(&s.router, &hop);
        let watch = Watch::start(s.router.clone(), &PREFIXES, &hop, 1);
        let capture =
            Capture::start(s.lab.dir(), &format!("kill-{}", step.replace(':', "-"))).unwrap();
        s.set_image(&to);
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
                let first = settled(&s)?;
                std::thread::sleep(Duration::from_secs(1));
                let second = settled(&s)?;
                if first == second { Ok(second) } else { Err(format!("{first} then {second}")) }
            });
        s.wait_routes_from(&["node-1"], Duration::from_secs(30));
        let misses = watch.finish();
        assert!(misses.is_empty(), "{step}: routes missing at the router: {misses:?}");
        let seen = Tally::of(&s.router, &hop).since(&before);
        assert!(seen.withdrawals.is_empty(), "{step}: the router withdrew: {seen:?}");
        // On the wire: a killed agent's connection may close (FIN/RST), but
        // no NOTIFICATION and no withdrawal cross.
        let wire = capture.finish().on(&hop).unwrap();
        assert!(wire.notifications.is_empty() && wire.withdrawals.is_empty(), "{step}: {wire:?}");
        let record = node1(&s)["lastUpgrade"].clone();
        eprintln!(
            "{step}: node-1 ends on {image}; upgrade {}; session downs at the router {}; \
             FIN/RST on the wire {}",
            record["result"],
            seen.downs.len(),
            wire.fin_or_rst.len()
        );
        outcomes.push((step, image));

        // Generous: a real kubelet removes a pod some seconds after its
        // process ended, and CI runs everything on 2 cores.
        s.ns.kubectl(&["delete", "bgpgw", "edge", "--wait=true", "--timeout=180s"]).unwrap();
        eventually(Duration::from_secs(120), "the round's pods gone", || {
            let pods = s.pod_images()?;
            if pods.is_empty() { Ok(()) } else { Err(format!("{pods:?}")) }
        });
    }
    eprintln!("outcomes: {outcomes:?}");
}
