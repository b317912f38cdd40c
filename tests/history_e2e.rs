//! The rollout history end to end, as an operator team would check it in
//! the lab: two rollouts, then one that fails on node-1 and is retried
//! with `kubectl nonstop retry` without touching the spec; `kubectl
//! nonstop history` lists all of them with each node's pause, the
//! failure's reason and the retry, and `kubectl get bgprollout` shows one
//! record per rollout.

mod support;

use std::process::Command;
use std::time::Duration;

use nonstop_lab::testing::eventually;
use support::{NODES, REAL_AGENT, Setup, wrap_agent};

/// `kubectl nonstop ARGS…` in the test's namespace, as kubectl would run
/// the plugin: the binary on its own, with the lab's kubeconfig.
fn plugin(s: &Setup, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-nonstop"))
        .env("KUBECONFIG", s.lab.kubeconfig())
        .args(["-n", &s.ns.name])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() { Ok(text) } else { Err(String::from_utf8_lossy(&out.stderr).into()) }
}

#[test]
fn history_lists_every_rollout_with_pauses_the_failure_and_its_retry() {
    let s = Setup::new("e2e-history");
    // v4: node-1's first agent at v4 cannot hand over (the state schema of
    // a future version), every later one can: a failure a retry fixes.
    let script = format!(
        "#!/bin/sh\nmarker=\"$NONSTOP_STATE_DIR/.refused-once\"\n\
         case \"$NONSTOP_POD\" in *node-1*) [ -e \"$marker\" ] || {{ touch \"$marker\"; export NONSTOP_TEST_STATE_SCHEMA=99; }};; esac\n\
         exec {REAL_AGENT} \"$@\"\n"
    );
    wrap_agent(&s.lab, "nonstop-agent:v4", &script);
    s.serving_v1("Handoff");
    s.set_image("nonstop-agent:v2");
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));

    // Nothing failed: nothing to retry, and the plugin says so.
    let refused = plugin(&s, &["retry", "edge"]).expect_err("refused");
    assert!(refused.contains("edge has no failed rollout to retry"), "{refused}");

    s.set_image("nonstop-agent:v4");
    let failed = eventually(Duration::from_secs(90), "rollout #3 Failed", || {
        let last = &s.status()["lastRollout"];
        if last["number"] == 3 && last["result"] == "Failed" {
            Ok(last.clone())
        } else {
            Err(last.to_string())
        }
    });
    let reason = failed["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("node node-1"), "the failure names its node: {reason}");
    let status = plugin(&s, &["status", "edge"]).unwrap();
    assert!(status.contains("kubectl nonstop retry edge"), "{status}");

    let retried = plugin(&s, &["retry", "edge"]).unwrap();
    assert!(retried.contains("retrying the failed rollout"), "{retried}");
    s.wait_complete("nonstop-agent:v4", Duration::from_secs(120));
    eventually(Duration::from_secs(30), "rollout #3 Succeeded", || {
        let last = &s.status()["lastRollout"];
        if last["result"] == "Succeeded" { Ok(()) } else { Err(last.to_string()) }
    });

    let history = plugin(&s, &["history", "edge"]).unwrap();
    eprintln!("kubectl nonstop history edge:\n{history}");
    let blocks: Vec<&str> = history.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), 3, "install, v2 and v4: {history}");
    assert!(blocks[0].starts_with("#1 none -> nonstop-agent:v1: Succeeded"), "{history}");
    assert!(blocks[1].starts_with("#2 nonstop-agent:v1 -> nonstop-agent:v2: Succeeded"));
    assert!(blocks[2].starts_with("#3 nonstop-agent:v2 -> nonstop-agent:v4: Succeeded"));
    for block in &blocks[..] {
        assert!(block.lines().next().unwrap().contains(", by kubectl"), "who: {block}");
    }
    // Every node's handoff in #2 and #3 with its pause.
    for block in &blocks[1..] {
        for node in NODES {
            let handed = block
                .lines()
                .filter(|l| l.trim_start().starts_with(node) && l.contains("Succeeded"))
                .collect::<Vec<_>>();
            assert_eq!(handed.len(), 1, "{node} once Succeeded: {block}");
            assert!(handed[0].contains(" ms"), "{node}'s pause: {}", handed[0]);
        }
    }
    // #3: node-1 rolled back with the reason, then the retry by the plugin.
    let rolled_back: Vec<&str> = blocks[2].lines().filter(|l| l.contains("RolledBack")).collect();
    assert_eq!(rolled_back.len(), 1, "{}", blocks[2]);
    assert!(rolled_back[0].trim_start().starts_with("node-1"), "{}", rolled_back[0]);
    assert!(rolled_back[0].contains("refused"), "the reason: {}", rolled_back[0]);
    assert!(!blocks[2].contains("\n  failed:"), "it succeeded after the retry: {}", blocks[2]);
    let retry_line = blocks[2].lines().find(|l| l.contains("retried at")).expect("the retry");
    assert!(retry_line.contains("by kubectl-nonstop after: node node-1"), "{retry_line}");

    // One record per rollout, as kubectl lists them.
    let names = s.ns.kubectl(&["get", "bgprollout", "-o", "name"]).unwrap();
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bgpgatewayrollout.nonstop.dev/edge-1",
            "bgpgatewayrollout.nonstop.dev/edge-2",
            "bgpgatewayrollout.nonstop.dev/edge-3"
        ]
    );
}
