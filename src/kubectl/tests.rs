//! What `kubectl nonstop` prints, from objects as the API server returns them.

use super::*;

fn gateway(status: &str) -> BgpGateway {
    let yaml = format!(
        "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata: {{name: edge, namespace: prod}}\n\
         spec: {{image: 'nonstop-agent:v4', asn: 65001, peers: [{{address: 10.99.0.1, asn: 65000}}]}}\n\
         status: {status}\n"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

const DEGRADED: &str = r#"
  rollout: Degraded 0/2
  ready: 2/2
  sessions: 1/2
  image: nonstop-agent:v4
  updateRevision: dddddddddd
  conditions:
  - {type: Ready, status: "False", reason: NodesNotReady, message: "node-2: 0/1 sessions Established", lastTransitionTime: "2026-12-03T10:00:00Z"}
  - {type: Degraded, status: "True", reason: UpgradeFailed, message: "node node-1: edge-node-1-dddddddddd failed: handoff refused", lastTransitionTime: "2026-12-03T10:00:00Z"}
  lastRollout: {number: 3, fromImage: "nonstop-agent:v2", toRevision: dddddddddd, image: "nonstop-agent:v4", started: "2026-12-03T10:00:00Z", finished: "2026-12-03T10:00:09Z", result: Failed, reason: "handoff refused", triggeredBy: kubectl-client-side-apply}
  nodes:
  - {node: node-1, pod: edge-node-1-bbbbbbbbbb, revision: bbbbbbbbbb, sessions: {established: 1, configured: 1}, routesAdvertised: 2,
     lastUpgrade: {mode: Handoff, result: RolledBack, time: "2026-12-03T10:00:09Z", reason: handoff refused},
     peers: [{peer: 10.99.0.1, state: Established, establishedSince: "2026-12-03T09:00:00Z", routesReceived: 1, routesAdvertised: 2}]}
  - {node: node-2, sessions: {established: 0, configured: 1}, routesAdvertised: 0,
     peers: [{peer: 10.99.0.1, state: Active, lastError: "connection refused", lastReset: "received NOTIFICATION 6/2 (administrative shutdown)"}]}
  - {node: node-3, sessions: {established: 1, configured: 1}, routesAdvertised: 2}
"#;

#[test]
fn status_says_what_failed_and_how_to_resume() {
    let text = status(&gateway(DEGRADED));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "BgpGateway prod/edge");
    assert!(lines[1].contains("False (2/2 nodes, 1/2 sessions): node-2: 0/1"), "{text}");
    assert!(
        text.contains("Degraded:  node node-1: edge-node-1-dddddddddd failed: handoff refused")
    );
    assert!(text.contains("`kubectl nonstop retry edge` resumes it"), "{text}");
    assert!(text.contains("#3 nonstop-agent:v2 -> nonstop-agent:v4: Failed in 9 s"), "{text}");
    let node_2 = lines.iter().find(|l| l.starts_with("node-2")).unwrap();
    assert!(node_2.ends_with("10.99.0.1 Active"), "{node_2}");
    // The columns line up: each header starts where its cells do.
    let header = lines.iter().find(|l| l.starts_with("NODE")).unwrap();
    let at = header.find("SESSIONS").unwrap();
    let node_1 = lines.iter().find(|l| l.starts_with("node-1")).unwrap();
    assert_eq!(&node_1[at..at + 3], "1/1", "{text}");
    assert_eq!(nothing_to_retry(&gateway(DEGRADED)), None);
}

#[test]
fn a_healthy_gateway_has_nothing_to_retry() {
    let healthy = r#"{rollout: Complete, conditions: [{type: Degraded, status: "False", reason: AsExpected, message: "no rollout has failed at this revision", lastTransitionTime: "2026-12-03T10:00:00Z"}]}"#;
    let why = nothing_to_retry(&gateway(healthy)).expect("refused");
    assert_eq!(why, "edge has no failed rollout to retry (rollout: Complete)");
}

#[test]
fn peers_lists_each_session_with_its_routes_and_why_one_is_down() {
    let now = Time("2026-12-03T10:01:05Z".parse().unwrap());
    let text = peers(&gateway(DEGRADED), &now);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert_eq!(
        lines,
        [
            "NODE    PEER       STATE            UP FOR    RECEIVED  ADVERTISED  LAST ERROR",
            "node-1  10.99.0.1  Established      01:01:05  1         2",
            "node-2  10.99.0.1  Active           -         0         0           connection refused; last reset: received NOTIFICATION 6/2 (administrative shutdown)",
            "node-3  -          1/1 Established                                  not listed: the status lists 256 sessions at most",
        ],
        "{text}"
    );
}

#[test]
fn history_lists_each_rollout_its_retries_and_every_node_attempt() {
    let record = |yaml: &str| -> BgpGatewayRollout {
        let text = format!(
            "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGatewayRollout\nmetadata: {{name: x, namespace: prod}}\nspec: {yaml}\n"
        );
        serde_yaml_ng::from_str(&text).unwrap()
    };
    let second = record(
        r#"{gateway: edge, rollout: {number: 2, fromImage: "nonstop-agent:v1", toRevision: b, image: "nonstop-agent:v2", started: "2026-12-03T10:00:00Z", finished: "2026-12-03T10:00:41Z", result: Succeeded, triggeredBy: kubectl-client-side-apply,
             retries: [{time: "2026-12-03T10:00:20Z", by: kubectl-nonstop, after: "node node-1: handoff refused"}]},
            nodes: [{node: node-1, mode: Handoff, result: RolledBack, time: "2026-12-03T10:00:09Z", reason: handoff refused},
                    {node: node-1, mode: Handoff, result: Succeeded, pauseMs: 4, time: "2026-12-03T10:00:25Z"}]}"#,
    );
    let first = record(
        r#"{gateway: edge, rollout: {number: 1, toRevision: a, image: "nonstop-agent:v1", started: "2026-12-03T09:00:00Z", finished: "2026-12-03T09:00:05Z", result: Succeeded}}"#,
    );
    let text = history("edge", &[second, first]);
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert!(blocks[0].starts_with("#1 none -> nonstop-agent:v1: Succeeded in 5 s"), "{text}");
    assert!(blocks[0].contains("no node upgraded"));
    assert!(blocks[1].starts_with("#2 nonstop-agent:v1 -> nonstop-agent:v2: Succeeded in 41 s"));
    assert!(blocks[1].contains(", by kubectl-client-side-apply"));
    assert!(blocks[1].contains(
        "retried at 2026-12-03T10:00:20Z by kubectl-nonstop after: node node-1: handoff refused"
    ));
    let attempts: Vec<&str> = blocks[1].lines().filter(|l| l.starts_with("  node-1")).collect();
    assert_eq!(attempts.len(), 2, "{text}");
    assert!(attempts[0].contains("RolledBack") && attempts[0].ends_with("handoff refused"));
    assert!(attempts[1].contains("Succeeded") && attempts[1].contains("4 ms"));
    assert_eq!(history("edge", &[]), "no rollout of edge on record\n");
}
