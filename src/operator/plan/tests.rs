//! The planner, situation by situation: what it does, and the one thing it
//! must never do (delete the pod of a node's active agent outside a
//! decommission).

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::{BgpGateway, BgpGatewaySpec, BgpGatewayStatus};

pub(super) const OLD: &str = "aaaaaaaaaa";
pub(super) const NEW: &str = "bbbbbbbbbb";

pub(super) fn t(s: i64) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_800_000_000 + s)
}

pub(super) fn gateway(strategy: &str, extra: &str) -> BgpGateway {
    let yaml = format!(
        "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata: {{name: edge, namespace: ns, uid: u1, generation: 2}}\n\
         spec:\n  image: nonstop-agent:v2\n  asn: 65001\n  nodeSelector: {{gw: edge}}\n  peers: [{{address: 10.99.0.1, asn: 65000}}]\n\
         upgrade: {{strategy: {strategy}, handoffTimeoutSeconds: 60 {extra}}}\n"
    )
    .replace("upgrade:", "  upgrade:");
    let gw: BgpGateway = serde_yaml_ng::from_str(&yaml).unwrap();
    let _: &BgpGatewaySpec = &gw.spec;
    gw
}

pub(super) fn node(name: &str) -> NodeView {
    NodeView {
        name: name.into(),
        labels: [("gw".to_string(), "edge".to_string())].into(),
        taints: vec![],
        unschedulable: false,
        ready: true,
        ..Default::default()
    }
}

pub(super) fn pod(node: &str, revision: &str, created: i64) -> PodView {
    PodView {
        name: format!("edge-{node}-{revision}"),
        uid: Some(format!("uid-{node}-{revision}")),
        node: node.into(),
        revision: revision.into(),
        created: t(created),
        deleting: false,
        phase: Phase::Running,
        ready: false,
        failure: None,
        stopped: false,
        node_labels: None,
        node_addresses: None,
    }
}

pub(super) fn agent(pod: &PodView) -> AgentView {
    AgentView {
        pod: Some(pod.name.clone()),
        version: "0.1.0".into(),
        active: true,
        established: 1,
        advertised: 2,
        all_advertised: true,
        handoff_pause_ms: Some(3.4),
        handoff_at_ms: None,
        peers: vec![],
        checks_failing: vec![],
        not_run: None,
    }
}

/// Three nodes serving at OLD, healthy.
pub(super) fn serving(nodes: &[&str]) -> Observed {
    let pods: Vec<PodView> = nodes.iter().map(|n| pod(n, OLD, 0)).collect();
    Observed {
        nodes: nodes.iter().map(|n| node(n)).collect(),
        agents: pods.iter().map(|p| (p.node.clone(), agent(p))).collect(),
        pods,
        missing_secrets: vec![],
        conflicts: Default::default(),
        has_finalizer: true,
    }
}

pub(super) fn run(gw: &BgpGateway, revision: &str, observed: &Observed, now: i64) -> Plan {
    plan(&Input { gateway: gw, revision, observed, now: t(now) })
}

pub(super) fn actions(plan: &Plan) -> Vec<Action> {
    plan.steps.iter().map(|s| s.action.clone()).collect()
}

pub(super) fn create(node: &str, revision: &str) -> Action {
    Action::CreatePod { node: node.into(), revision: revision.into() }
}

pub(super) fn delete(node: &str, revision: &str) -> Action {
    Action::DeletePod { node: node.into(), pod: format!("edge-{node}-{revision}") }
}

pub(super) fn condition(plan: &Plan, kind: &str) -> (String, String, String) {
    let c = plan.status.conditions.iter().find(|c| c.type_ == kind).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// The pod of each node's active agent is never deleted by a rollout step.
fn assert_never_deletes_active(plan: &Plan, observed: &Observed) {
    for step in &plan.steps {
        if let Action::DeletePod { node, pod } = &step.action {
            let active = observed.agents.get(node).and_then(|a| a.pod.as_ref());
            assert!(
                active != Some(pod)
                    || step.reason == Reason::Decommission
                    || step.message.contains("Recreate"),
                "deleted the active pod {pod} ({}: {})",
                step.reason,
                step.message
            );
        }
    }
}

#[test]
fn a_new_gateway_gets_a_finalizer_and_one_pod_per_selected_node() {
    let gw = gateway("Handoff", "");
    let mut observed = Observed {
        nodes: vec![
            node("n1"),
            node("n2"),
            NodeView { name: "other".into(), ..Default::default() },
        ],
        ..Default::default()
    };
    let plan = run(&gw, NEW, &observed, 0);
    assert_eq!(
        actions(&plan),
        [Action::AddFinalizer, create("n1", NEW), create("n2", NEW)],
        "the unlabelled node gets nothing"
    );
    assert_eq!(plan.status.ready.as_deref(), Some("0/2"));
    assert_eq!(plan.requeue, BUSY);

    observed.has_finalizer = true;
    observed.nodes.clear();
    let plan = run(&gw, NEW, &observed, 0);
    let (status, reason, message) = condition(&plan, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NoMatchingNodes"));
    assert!(message.contains("spec.nodeSelector"), "{message}");
    assert!(plan.notes.iter().any(|n| n.warning && n.reason == Reason::NoMatchingNodes));
}

/// Another gateway keeps port 179 on n2: no agent starts there (it could
/// not bind), the others do, and Ready says which gateway and what to change.
#[test]
fn a_node_another_gateway_keeps_gets_no_agent_and_the_condition_says_why() {
    let gw = gateway("Handoff", "");
    let why = "n2: gateway net/edge binds port 179 (spec.listen) there too";
    let mut observed = Observed {
        nodes: vec![node("n1"), node("n2")],
        conflicts: [("n2".to_string(), why.to_string())].into(),
        has_finalizer: true,
        ..Default::default()
    };
    let plan = run(&gw, NEW, &observed, 0);
    assert_eq!(actions(&plan), [create("n1", NEW)]);
    assert_eq!(plan.status.ready.as_deref(), Some("0/1"));
    let (status, reason, message) = condition(&plan, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ListenerConflict"));
    assert!(message.contains(why) && message.contains("spec.listen"), "{message}");
    assert!(plan.notes.iter().any(|n| n.warning && n.reason == Reason::ListenerConflict));

    // Every selected node kept by others: not "no matching nodes".
    observed.nodes.remove(0);
    let plan = run(&gw, NEW, &observed, 0);
    assert!(actions(&plan).is_empty());
    assert_eq!(condition(&plan, "Ready").1, "ListenerConflict");
}

#[test]
fn a_missing_secret_stops_new_pods_and_says_what_to_create() {
    let gw = gateway("Handoff", "");
    let observed = Observed {
        nodes: vec![node("n1")],
        missing_secrets: vec!["bgp-passwords".into()],
        has_finalizer: true,
        ..Default::default()
    };
    let plan = run(&gw, NEW, &observed, 0);
    assert!(actions(&plan).is_empty());
    let (_, reason, message) = condition(&plan, "Ready");
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("bgp-passwords") && message.contains("namespace ns"), "{message}");
}

#[test]
fn an_image_bump_hands_off_one_node_at_a_time() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2", "n3"]);
    let plan = run(&gw, NEW, &observed, 100);
    assert_eq!(actions(&plan), [create("n1", NEW)], "one node at a time, in name order");
    assert_eq!(plan.status.rollout.as_deref(), Some("Progressing 0/3"));
    // Its Event names the new pod, so each node's Event stays its own.
    let related = plan.steps[0].related(&gw).unwrap();
    assert_eq!(
        (related.kind, related.name.as_str()),
        ("Pod", format!("edge-n1-{NEW}-u1").as_str())
    );

    // The new pod is there, its agent not yet active: wait.
    observed.pods.push(pod("n1", NEW, 101));
    let plan = run(&gw, NEW, &observed, 105);
    assert!(actions(&plan).is_empty(), "{:?}", plan.steps);
    assert_never_deletes_active(&plan, &observed);

    // The handoff happened: the node's admin port answers from the new pod.
    let new = observed.pods.last().unwrap().clone();
    observed.agents.insert("n1".into(), agent(&new));
    let plan = run(&gw, NEW, &observed, 106);
    assert_eq!(actions(&plan), [delete("n1", OLD)], "the retired pod goes; n2 waits");
    assert_eq!(plan.steps[0].related(&gw).unwrap().name, "edge-n1-aaaaaaaaaa");
    assert!(plan.steps[0].message.contains("pause 3.4 ms"), "{}", plan.steps[0].message);
    let record = plan.status.nodes[0].last_upgrade.clone().unwrap();
    assert_eq!((record.pause_ms, record.result), (Some(3), UpgradeResult::Succeeded));

    // Old pod deleted and gone, n1 healthy at NEW: next node.
    let mut gw = gw;
    gw.status = Some(plan.status.clone());
    observed.pods.retain(|p| p.name != "edge-n1-aaaaaaaaaa");
    let plan = run(&gw, NEW, &observed, 107);
    assert_eq!(actions(&plan), [create("n2", NEW)]);
    assert_eq!(plan.status.rollout.as_deref(), Some("Progressing 1/3"));
}

#[test]
fn max_nodes_in_flight_and_pause_between_nodes() {
    let gw = gateway("Handoff", ", maxNodesInFlight: 2");
    let observed = serving(&["n1", "n2", "n3"]);
    assert_eq!(actions(&run(&gw, NEW, &observed, 0)), [create("n1", NEW), create("n2", NEW)]);

    // n1 finished at t=100 with pauseSeconds 30: nothing new until t=130.
    let mut gw = gateway("Handoff", ", pauseSeconds: 30");
    let mut observed = serving(&["n1", "n2"]);
    observed.pods[0] = pod("n1", NEW, 90);
    observed.agents.insert("n1".into(), agent(&observed.pods[0]));
    let mut status = BgpGatewayStatus::default();
    status.nodes.push(crate::api::NodeStatus {
        node: "n1".into(),
        last_upgrade: Some(UpgradeRecord {
            mode: Strategy::Handoff,
            pause_ms: Some(2),
            result: UpgradeResult::Succeeded,
            time: Time(t(100)),
            reason: None,
        }),
        ..Default::default()
    });
    gw.status = Some(status);
    let plan = run(&gw, NEW, &observed, 110);
    assert!(actions(&plan).is_empty());
    assert_eq!(plan.requeue, Duration::from_secs(20), "looks again when the pause is over");
    assert_eq!(actions(&run(&gw, NEW, &observed, 131)), [create("n2", NEW)]);

    // paused: true stops between nodes.
    let gw = gateway("Handoff", ", paused: true");
    let plan = run(&gw, NEW, &serving(&["n1"]), 0);
    assert!(actions(&plan).is_empty());
    assert_eq!(plan.status.rollout.as_deref(), Some("Paused 0/1"));
}

#[test]
fn a_failed_handoff_rolls_the_node_back_and_stops_the_rollout() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    let mut new = pod("n1", NEW, 100);
    new.failure = Some(
        "agent exited with code 2: error: handoff refused: cannot carry graceful-restart".into(),
    );
    observed.pods.push(new);
    let plan = run(&gw, NEW, &observed, 101);
    assert_eq!(actions(&plan), [delete("n1", NEW)], "the new pod goes, the old one stays");
    assert_never_deletes_active(&plan, &observed);
    let (status, reason, message) = condition(&plan, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "UpgradeFailed"));
    assert!(
        message.contains("node n1") && message.contains("cannot carry graceful-restart"),
        "{message}"
    );
    assert!(plan.notes.iter().any(|n| n.warning && n.message.contains("handoff refused")));
    assert_eq!(plan.status.rollout.as_deref(), Some("Degraded 0/2"));

    // Next reconcile, same revision: stays stopped, n2 untouched.
    let mut gw = gw;
    gw.status = Some(plan.status.clone());
    observed.pods.pop();
    let plan = run(&gw, NEW, &observed, 102);
    assert!(actions(&plan).is_empty(), "{:?}", plan.steps);
    assert_eq!(condition(&plan, "Degraded").0, "True");
    assert!(plan.notes.is_empty(), "the failure is told once: {:?}", plan.notes);

    // A new spec (a fixed image) resumes.
    let plan = run(&gw, "cccccccccc", &observed, 103);
    assert_eq!(actions(&plan), [create("n1", "cccccccccc")]);
    assert_eq!(condition(&plan, "Degraded").0, "False");
}

#[test]
fn a_handoff_that_does_not_finish_in_time_is_rolled_back() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1"]);
    observed.pods.push(pod("n1", NEW, 100));
    assert!(actions(&run(&gw, NEW, &observed, 159)).is_empty());
    let plan = run(&gw, NEW, &observed, 161);
    assert_eq!(actions(&plan), [delete("n1", NEW)]);
    assert!(condition(&plan, "Degraded").2.contains("within handoffTimeoutSeconds (60 s)"));
}

#[test]
fn an_unanswering_agent_means_the_ready_pod_is_the_active_one() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1"]);
    observed.agents.clear();
    let mut new = pod("n1", NEW, 100);
    new.ready = true; // its probe says it is the node's active agent
    observed.pods.push(new);
    let plan = run(&gw, NEW, &observed, 101);
    assert_eq!(actions(&plan), [delete("n1", OLD)]);

    // Neither answers nor is ready: never delete, even after the timeout
    // the old pod stays.
    observed.pods[1].ready = false;
    let plan = run(&gw, NEW, &observed, 1000);
    assert!(!actions(&plan).contains(&delete("n1", OLD)));
}

#[test]
fn a_rollback_to_the_old_revision_mid_handoff_keeps_the_serving_pod() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1"]);
    observed.pods.push(pod("n1", NEW, 100));
    // The spec went back to OLD while n1's NEW pod was starting.
    let plan = run(&gw, OLD, &observed, 101);
    assert_eq!(actions(&plan), [delete("n1", NEW)], "OLD is active and desired: NEW goes");
}

#[test]
fn graceful_restart_and_recreate() {
    // GracefulRestart: the new pod beside the old one (it stops the old
    // agent in restart mode itself); then the ended old pod goes.
    let gw = gateway("GracefulRestart", "");
    let mut observed = serving(&["n1"]);
    assert_eq!(actions(&run(&gw, NEW, &observed, 0)), [create("n1", NEW)]);
    observed.pods[0].phase = Phase::Succeeded;
    observed.pods.push(pod("n1", NEW, 1));
    observed.agents.clear();
    assert!(actions(&run(&gw, NEW, &observed, 2)).is_empty(), "waits for the new agent");
    // A failing new agent after the old one stopped is not deleted: it is all there is.
    observed.pods[1].failure = Some("agent exited with code 2".into());
    let plan = run(&gw, NEW, &observed, 3);
    assert!(!actions(&plan).contains(&delete("n1", NEW)));
    observed.pods[1].failure = None;
    let new = observed.pods[1].clone();
    observed.agents.insert("n1".into(), agent(&new));
    assert_eq!(actions(&run(&gw, NEW, &observed, 4)), [delete("n1", OLD)]);

    // Recreate: decommission the old pod first, create when it is gone.
    let gw = gateway("Recreate", "");
    let mut observed = serving(&["n1", "n2"]);
    let plan = run(&gw, NEW, &observed, 0);
    assert_eq!(actions(&plan), [delete("n1", OLD)]);
    observed.pods[0].deleting = true;
    assert!(actions(&run(&gw, NEW, &observed, 1)).is_empty(), "n1 is going; n2 waits");
    // Its agent has exited: the node is free although the kubelet has
    // not removed the pod object yet.
    observed.agents.remove("n1");
    observed.pods[0].phase = Phase::Succeeded;
    assert_eq!(actions(&run(&gw, NEW, &observed, 2)), [create("n1", NEW)]);
    observed.pods.remove(0);
    assert_eq!(actions(&run(&gw, NEW, &observed, 3)), [create("n1", NEW)]);
}

#[test]
fn scale_in_and_deletion_decommission() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    observed.nodes[1].labels.clear();
    let plan = run(&gw, OLD, &observed, 0);
    assert_eq!(actions(&plan), [delete("n2", OLD)]);
    assert_eq!(plan.steps[0].reason, Reason::Decommission);
    assert_eq!(plan.status.ready.as_deref(), Some("1/1"));

    let mut gw = gw;
    gw.metadata.deletion_timestamp = Some(Time(t(0)));
    let observed = serving(&["n1", "n2"]);
    let plan = run(&gw, OLD, &observed, 0);
    assert_eq!(actions(&plan), [delete("n1", OLD), delete("n2", OLD)]);
    // The finalizer stays while any agent runs, even one whose pod is
    // already being deleted, and goes once each has exited.
    let mut stopping = observed.clone();
    stopping.pods.iter_mut().for_each(|p| p.deleting = true);
    stopping.pods[0].phase = Phase::Succeeded;
    assert!(actions(&run(&gw, OLD, &stopping, 1)).is_empty(), "n2's agent still runs");
    stopping.pods[1].phase = Phase::Failed;
    assert_eq!(actions(&run(&gw, OLD, &stopping, 2)), [Action::RemoveFinalizer]);
    let gone = Observed { has_finalizer: true, ..Default::default() };
    assert_eq!(actions(&run(&gw, OLD, &gone, 3)), [Action::RemoveFinalizer]);
}

#[test]
fn a_nodes_last_handoff_comes_from_its_agent_so_no_status_write_loses_it() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1"]);
    observed.pods[0] = pod("n1", NEW, 100);
    let mut a = agent(&observed.pods[0]);
    a.handoff_at_ms = Some(t(101).as_millisecond() as u64);
    observed.agents.insert("n1".into(), a);
    // The gateway's status says nothing about n1 (a lost write, a new leader).
    let plan = run(&gw, NEW, &observed, 200);
    let record = plan.status.nodes[0].last_upgrade.clone().expect("from the agent");
    assert_eq!(
        (record.mode, record.pause_ms, record.time),
        (Strategy::Handoff, Some(3), Time(t(101)))
    );
}

#[test]
fn a_handoff_seen_only_after_the_old_pod_ended_is_still_a_retirement() {
    // No reconcile saw both pods live: by the first one after the handoff,
    // the kubelet already reported the old pod Succeeded.
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1"]);
    observed.pods[0].phase = Phase::Succeeded;
    observed.pods.push(pod("n1", NEW, 100));
    let mut a = agent(&observed.pods[1]);
    a.handoff_at_ms = Some(t(101).as_millisecond() as u64);
    observed.agents.insert("n1".into(), a.clone());
    let plan = run(&gw, NEW, &observed, 102);
    assert_eq!(actions(&plan), [delete("n1", OLD)]);
    let step = &plan.steps[0];
    assert_eq!(step.reason, Reason::Retire, "{}", step.message);
    assert_eq!(
        step.message,
        "node n1: edge-n1-bbbbbbbbbb took over (pause 3.4 ms); edge-n1-aaaaaaaaaa retired"
    );

    // Without a handoff report (GracefulRestart, a crash), or a report
    // older than the active pod, an ended pod is only cleaned up.
    for handoff_at in [None, Some(t(50))] {
        let mut a = a.clone();
        a.handoff_at_ms = handoff_at.map(|t| t.as_millisecond() as u64);
        observed.agents.insert("n1".into(), a);
        let plan = run(&gw, NEW, &observed, 102);
        assert_eq!(actions(&plan), [delete("n1", OLD)]);
        assert_eq!(plan.steps[0].reason, Reason::Cleanup, "{handoff_at:?}");
    }
}

#[test]
fn an_agent_that_just_started_is_not_healthy_before_its_sessions_are() {
    // Recreate: n1 came back at NEW, its agent answering but with no
    // peer in its status yet (0 of 0). n2 must wait.
    let gw = gateway("Recreate", "");
    let mut observed = serving(&["n1", "n2"]);
    observed.pods[0] = pod("n1", NEW, 100);
    let mut fresh = agent(&observed.pods[0]);
    (fresh.established, fresh.advertised) = (0, 0);
    observed.agents.insert("n1".into(), fresh);
    let plan = run(&gw, NEW, &observed, 101);
    assert!(actions(&plan).is_empty(), "n2 waits for n1's session: {:?}", plan.steps);
    assert_eq!(plan.status.nodes[0].sessions.configured, 1, "configured is what the spec says");
    assert!(condition(&plan, "Ready").2.contains("n1: 0/1 sessions Established"));
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint { key: key.into(), effect: effect.into(), value: None, time_added: None }
}

#[test]
fn taints_kubernetes_adds_by_itself_never_take_a_node_out() {
    let gw = gateway("Handoff", "");
    for (key, effect) in crate::operator::nodes::SYSTEM_TAINTS {
        let mut observed = serving(&["n1", "n2"]);
        observed.nodes[0].taints = vec![taint(key, effect)];
        observed.nodes[0].unschedulable = key.ends_with("unschedulable");
        let plan = run(&gw, OLD, &observed, 0);
        assert!(actions(&plan).is_empty(), "{key}: {:?}", plan.steps);
        assert_eq!(plan.status.ready.as_deref(), Some("2/2"), "{key}");
    }
    // A taint of the user's own that the gateway does not tolerate does.
    let mut observed = serving(&["n1", "n2"]);
    observed.nodes[0].taints = vec![taint("edge", "NoSchedule")];
    let plan = run(&gw, OLD, &observed, 0);
    assert_eq!(actions(&plan), [delete("n1", OLD)]);
    assert_eq!(plan.steps[0].reason, Reason::Decommission);
}

#[test]
fn a_cordoned_node_keeps_its_agent_and_is_upgraded_in_place() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    observed.nodes[0].unschedulable = true;
    let plan = run(&gw, OLD, &observed, 0);
    assert!(actions(&plan).is_empty(), "cordon changes nothing: {:?}", plan.steps);
    assert_eq!(plan.status.nodes[0].maintenance, Some(Maintenance::Cordoned));
    assert_eq!(plan.status.ready.as_deref(), Some("2/2"));
    assert_eq!(condition(&plan, "Ready").0, "True");
    // An image bump hands off on the cordoned node like anywhere else.
    assert_eq!(actions(&run(&gw, NEW, &observed, 1)), [create("n1", NEW)]);
    // Recreate would start a speaker from nothing there: that node waits.
    let gw = gateway("Recreate", "");
    assert_eq!(actions(&run(&gw, NEW, &observed, 1)), [delete("n2", OLD)]);
}

#[test]
fn a_drained_node_stays_withdrawn_until_uncordoned() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    // kubectl drain: cordon, then evict the agent pod (it decommissions).
    observed.nodes[0].unschedulable = true;
    observed.pods[0].deleting = true;
    observed.agents.remove("n1");
    let plan = run(&gw, OLD, &observed, 0);
    assert!(actions(&plan).is_empty(), "{:?}", plan.steps);
    // Gone: no new agent, the node is out of service, the rest is Ready.
    observed.pods.remove(0);
    for now in [1, 60, 600] {
        let plan = run(&gw, OLD, &observed, now);
        assert!(actions(&plan).is_empty(), "no recreate while drained: {:?}", plan.steps);
        assert_eq!(plan.status.nodes[0].maintenance, Some(Maintenance::Drained));
        assert_eq!(plan.status.ready.as_deref(), Some("1/1"));
        assert_eq!(plan.status.rollout.as_deref(), Some("Complete"));
        let (ready, _, message) = condition(&plan, "Ready");
        assert_eq!(ready, "True");
        assert!(message.contains("n1 drained"), "{message}");
    }
    // An image bump meanwhile rolls the serving node only.
    assert_eq!(actions(&run(&gw, NEW, &observed, 700)), [create("n2", NEW)]);
    // Every node drained: not Ready, and it says why.
    let mut all = observed.clone();
    all.nodes[1].unschedulable = true;
    all.pods.clear();
    let (ready, reason, message) = condition(&run(&gw, OLD, &all, 800), "Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "AllNodesInMaintenance"));
    assert!(message.contains("uncordon"), "{message}");
    // Uncordoned: it gets its agent back.
    observed.nodes[0].unschedulable = false;
    assert_eq!(actions(&run(&gw, OLD, &observed, 900)), [create("n1", OLD)]);
}

#[test]
fn the_exclude_label_withdraws_a_node_until_it_is_removed() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    let label = crate::operator::nodes::EXCLUDE_LABEL;
    observed.nodes[0].labels.insert(label.into(), "true".into());
    let plan = run(&gw, OLD, &observed, 0);
    assert_eq!(actions(&plan), [delete("n1", OLD)]);
    assert_eq!(plan.steps[0].reason, Reason::Exclude);
    assert!(plan.steps[0].message.contains("graceful shutdown"), "{}", plan.steps[0].message);
    observed.pods.remove(0);
    observed.agents.remove("n1");
    let plan = run(&gw, OLD, &observed, 5);
    assert!(actions(&plan).is_empty(), "{:?}", plan.steps);
    assert_eq!(plan.status.nodes[0].maintenance, Some(Maintenance::Excluded));
    assert_eq!(plan.status.ready.as_deref(), Some("1/1"));
    observed.nodes[0].labels.remove(label);
    assert_eq!(actions(&run(&gw, OLD, &observed, 10)), [create("n1", OLD)]);
}

#[test]
fn a_successor_that_fails_after_the_old_agent_retired_is_kept_and_recorded() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    // n1 handed over to NEW, whose agent then died (exit 137) before the
    // operator saw it active: nobody answers, the old pod retired.
    let mut new = pod("n1", NEW, 100);
    new.failure = Some("agent exited with code 137".into());
    observed.pods.push(new);
    observed.agents.remove("n1");
    let plan = run(&gw, NEW, &observed, 101);
    assert!(
        !actions(&plan).contains(&delete("n1", NEW)),
        "the only agent that can serve n1 stays: {:?}",
        plan.steps
    );
    assert!(!actions(&plan).contains(&delete("n1", OLD)), "{:?}", plan.steps);
    let record = plan.status.nodes[0].last_upgrade.clone().unwrap();
    assert_eq!(record.result, UpgradeResult::Failed);
    assert!(record.reason.as_deref().unwrap().contains("code 137"), "{record:?}");
    let (on, reason, message) = condition(&plan, "Degraded");
    assert_eq!((on.as_str(), reason.as_str()), ("True", "UpgradeFailed"));
    assert!(message.contains("node n1") && message.contains("137"), "{message}");
    assert_eq!(plan.notes.iter().filter(|n| n.reason == Reason::UpgradeFailed).count(), 1);

    // The kubelet restarted it; its agent is active (Graceful Restart):
    // the retired pod goes, the record stays Failed, n2 is not touched.
    let mut gw = gw;
    gw.status = Some(plan.status.clone());
    let new = observed.pods[2].clone();
    observed.agents.insert("n1".into(), agent(&new));
    let plan = run(&gw, NEW, &observed, 110);
    assert_eq!(actions(&plan), [delete("n1", OLD)]);
    assert_eq!(plan.status.nodes[0].last_upgrade.as_ref().unwrap().result, UpgradeResult::Failed);
    assert!(
        plan.notes.iter().all(|n| n.reason != Reason::UpgradeFailed),
        "told once: {:?}",
        plan.notes
    );
    gw.status = Some(plan.status.clone());
    observed.pods.remove(0);
    let plan = run(&gw, NEW, &observed, 120);
    assert!(actions(&plan).is_empty(), "the rollout stays stopped: {:?}", plan.steps);
    assert!(plan.status.rollout.as_deref().unwrap().starts_with("Degraded"));
}

#[test]
fn a_crash_after_the_retired_pod_was_deleted_still_fails_the_upgrade() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    observed.pods.push(pod("n1", NEW, 100));
    observed.agents.insert("n1".into(), agent(&observed.pods[2]));
    let plan = run(&gw, NEW, &observed, 101);
    assert_eq!(actions(&plan), [delete("n1", OLD)]);
    assert_eq!(
        plan.status.nodes[0].last_upgrade.as_ref().unwrap().result,
        UpgradeResult::Succeeded
    );
    let mut gw = gw;
    gw.status = Some(plan.status.clone());
    observed.pods.remove(0);
    // Then it crashed once; the kubelet restarted it.
    let new = observed.pods.iter_mut().find(|p| p.revision == NEW).unwrap();
    new.failure = Some("agent exited with code 137".into());
    let plan = run(&gw, NEW, &observed, 102);
    assert!(actions(&plan).is_empty(), "{:?}", plan.steps);
    assert_eq!(plan.status.nodes[0].last_upgrade.as_ref().unwrap().result, UpgradeResult::Failed);
    assert_eq!(condition(&plan, "Degraded").0, "True");
}

#[test]
fn a_failed_successor_is_rolled_back_only_while_the_old_agent_serves() {
    // The refused-handoff case (old active) rolls back; the same failure
    // with the old agent gone does not, under every strategy.
    for strategy in ["Handoff", "GracefulRestart"] {
        let gw = gateway(strategy, "");
        let mut observed = serving(&["n1"]);
        let mut new = pod("n1", NEW, 100);
        new.failure = Some("agent exited with code 2".into());
        observed.pods.push(new);
        assert_eq!(actions(&run(&gw, NEW, &observed, 101)), [delete("n1", NEW)], "{strategy}");
        observed.agents.clear();
        let plan = run(&gw, NEW, &observed, 102);
        assert!(actions(&plan).is_empty(), "{strategy}: {:?}", plan.steps);
        // Timed out with nobody serving: still never deleted.
        observed.pods[1].failure = None;
        let plan = run(&gw, NEW, &observed, 1000);
        assert!(actions(&plan).is_empty(), "{strategy}: {:?}", plan.steps);
    }
}

#[test]
fn a_node_whose_kubelet_is_away_is_skipped_and_waited_for() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2", "n3"]);
    // n1's kubelet stopped before the rollout: n2 goes first.
    observed.nodes[0].ready = false;
    let plan = run(&gw, NEW, &observed, 0);
    assert_eq!(actions(&plan), [create("n2", NEW)]);
    let (_, _, message) = condition(&plan, "Progressing");
    assert!(message.contains("waiting for n1: not Ready"), "{message}");

    // n2's kubelet stops mid-upgrade: its new pod never starts. No
    // timeout deletes anything there and n3 goes on.
    observed.nodes[0].ready = true;
    observed.nodes[1].ready = false;
    observed.pods.push(pod("n2", NEW, 1));
    let plan = run(&gw, NEW, &observed, 1000);
    assert_eq!(actions(&plan), [create("n1", NEW)], "{:?}", plan.steps);
    assert_eq!(condition(&plan, "Degraded").0, "False");
    assert_never_deletes_active(&plan, &observed);
    // Its kubelet is back and the new agent took over: it converges.
    observed.nodes[1].ready = true;
    let new = observed.pods.last().unwrap().clone();
    observed.agents.insert("n2".into(), agent(&new));
    let plan = run(&gw, NEW, &observed, 1001);
    assert!(actions(&plan).contains(&delete("n2", OLD)), "{:?}", plan.steps);
}

#[test]
fn a_stale_readiness_probe_never_rolls_back_the_agent_that_took_over() {
    // The new agent took over and died; nobody answers on the admin port,
    // and the old pod's probe still says Ready from before the handoff.
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1"]);
    observed.agents.clear();
    observed.pods[0].ready = true;
    let mut new = pod("n1", NEW, 100);
    new.failure = Some("agent exited with code 137".into());
    observed.pods.push(new);
    let plan = run(&gw, NEW, &observed, 101);
    assert!(!actions(&plan).contains(&delete("n1", NEW)), "{:?}", plan.steps);
    // The old agent answering as active is what a rollback needs.
    let old = observed.pods[0].clone();
    observed.agents.insert("n1".into(), agent(&old));
    assert_eq!(actions(&run(&gw, NEW, &observed, 102)), [delete("n1", NEW)]);
}
