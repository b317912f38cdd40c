//! The rollout record, followed through a rollout: started with who
//! changed the spec, a node's failure, a retry by annotation, success; and
//! a rollout replaced by a newer spec.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use k8s_openapi::jiff::SignedDuration;
use serde_json::json;

use super::tests::{NEW, OLD, actions, condition, create, delete, gateway, pod, run, serving, t};
use super::*;
use crate::api::history::{NodeUpgrade, RETRY_ANNOTATION, RolloutResult};
use crate::operator::rollouts::merge;

fn managed(manager: &str, at: i64, fields: serde_json::Value) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Update".into()),
        time: Some(Time(t(at))),
        fields_v1: Some(FieldsV1(fields)),
        ..Default::default()
    }
}

/// A gateway at OLD on two nodes whose spec was last changed by `helm`.
fn rolled_by_helm() -> BgpGateway {
    let mut gw = gateway("Handoff", "");
    gw.metadata.managed_fields = Some(vec![
        managed("kubectl-client-side-apply", 10, json!({"f:spec": {"f:asn": {}}})),
        managed("nonstop-operator", 50, json!({"f:status": {}})),
        managed("helm", 40, json!({"f:spec": {"f:image": {}}})),
    ]);
    gw.status = Some(BgpGatewayStatus {
        current_revision: Some(OLD.into()),
        update_revision: Some(OLD.into()),
        image: Some("nonstop-agent:v1".into()),
        ..Default::default()
    });
    gw
}

#[test]
fn a_rollout_is_recorded_from_its_start_through_a_retry_to_its_end() {
    let mut gw = rolled_by_helm();
    let mut observed = serving(&["n1", "n2"]);

    // Started: numbered, from → to, who changed the spec last.
    let plan = run(&gw, NEW, &observed, 100);
    let rollout = plan.status.last_rollout.clone().unwrap();
    assert_eq!(rollout.number, 1);
    assert_eq!(rollout.from_revision.as_deref(), Some(OLD));
    assert_eq!(rollout.from_image.as_deref(), Some("nonstop-agent:v1"));
    assert_eq!((rollout.to_revision.as_str(), rollout.image.as_str()), (NEW, "nonstop-agent:v2"));
    assert_eq!((rollout.result, rollout.started.0), (RolloutResult::Progressing, t(100)));
    assert_eq!(rollout.triggered_by.as_deref(), Some("helm"), "the latest manager of the spec");
    gw.status = Some(plan.status);

    // n1's new agent fails while the old one serves: Failed, with why.
    let mut failed = pod("n1", NEW, 101);
    failed.failure = Some("agent exited with code 2: handoff refused".into());
    observed.pods.push(failed);
    let plan = run(&gw, NEW, &observed, 105);
    assert_eq!(actions(&plan), [delete("n1", NEW)]);
    let rollout = plan.status.last_rollout.clone().unwrap();
    assert_eq!(
        (rollout.result, rollout.finished.clone()),
        (RolloutResult::Failed, Some(Time(t(105))))
    );
    assert!(rollout.reason.as_deref().unwrap().contains("handoff refused"), "{rollout:?}");
    gw.status = Some(plan.status);
    observed.pods.pop();
    // It stays stopped, and the record with it.
    let plan = run(&gw, NEW, &observed, 110);
    assert!(actions(&plan).is_empty());
    assert_eq!(plan.status.last_rollout.as_ref().unwrap().result, RolloutResult::Failed);

    // The retry annotation, set by the kubectl plugin: the rollout resumes.
    gw.metadata.annotations =
        Some([(RETRY_ANNOTATION.to_string(), "2027-01-01T00:00:00Z".to_string())].into());
    let retry_fields =
        json!({"f:metadata": {"f:annotations": {format!("f:{RETRY_ANNOTATION}"): {}}}});
    gw.metadata.managed_fields.as_mut().unwrap().push(managed(
        "kubectl-nonstop",
        120,
        retry_fields,
    ));
    let plan = run(&gw, NEW, &observed, 120);
    assert_eq!(actions(&plan), [create("n1", NEW)], "n1 is tried again");
    assert_eq!(condition(&plan, "Degraded").0, "False");
    let rollout = plan.status.last_rollout.clone().unwrap();
    assert_eq!(
        (rollout.number, rollout.result, rollout.finished.clone()),
        (1, RolloutResult::Progressing, None)
    );
    assert_eq!(rollout.retries.len(), 1);
    let retry = &rollout.retries[0];
    assert_eq!((retry.time.0, retry.by.as_deref()), (t(120), Some("kubectl-nonstop")));
    assert!(retry.after.as_deref().unwrap().contains("handoff refused"), "{retry:?}");
    assert_eq!(plan.status.observed_retry.as_deref(), Some("2027-01-01T00:00:00Z"));
    let note = plan.notes.iter().find(|n| n.reason == Reason::Retry).expect("an Event");
    assert!(
        note.message.contains("by kubectl-nonstop") && note.message.contains("handoff refused")
    );
    gw.status = Some(plan.status);
    // Acted on once: the same value does not retry again.
    let plan = run(&gw, NEW, &observed, 121);
    assert!(plan.notes.iter().all(|n| n.reason != Reason::Retry));
    assert_eq!(plan.status.last_rollout.as_ref().unwrap().retries.len(), 1);

    // Every node at NEW: Succeeded.
    let observed = {
        let mut o = serving(&["n1", "n2"]);
        o.pods = ["n1", "n2"].map(|n| pod(n, NEW, 130)).to_vec();
        o.agents = o.pods.iter().map(|p| (p.node.clone(), super::tests::agent(p))).collect();
        o
    };
    let plan = run(&gw, NEW, &observed, 140);
    assert_eq!(plan.status.rollout.as_deref(), Some("Complete"));
    let rollout = plan.status.last_rollout.clone().unwrap();
    assert_eq!((rollout.result, rollout.finished), (RolloutResult::Succeeded, Some(Time(t(140)))));
    assert_eq!(rollout.retries.len(), 1, "the retry stays on record");
}

#[test]
fn a_newer_spec_supersedes_a_rollout_under_way_and_starts_the_next() {
    let mut gw = rolled_by_helm();
    let observed = serving(&["n1", "n2"]);
    let plan = run(&gw, NEW, &observed, 100);
    assert_eq!(plan.superseded, None);
    gw.status = Some(plan.status);

    let plan = run(&gw, "cccccccccc", &observed, 110);
    let old = plan.superseded.clone().expect("the replaced one is closed");
    assert_eq!(
        (old.number, old.result, old.finished),
        (1, RolloutResult::Superseded, Some(Time(t(110))))
    );
    let next = plan.status.last_rollout.clone().unwrap();
    assert_eq!(
        (next.number, next.to_revision.as_str(), next.result),
        (2, "cccccccccc", RolloutResult::Progressing)
    );
    assert_eq!(next.from_revision.as_deref(), Some(OLD), "from what every node last ran");
}

#[test]
fn a_gateway_at_rest_from_before_rollout_records_starts_none_and_a_new_one_starts_at_one() {
    // At rest: nothing to record.
    let gw = rolled_by_helm();
    let plan = run(&gw, OLD, &serving(&["n1"]), 100);
    assert_eq!(plan.status.last_rollout, None);
    // A new gateway: its first rollout, from nothing.
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1"]);
    observed.pods.clear();
    observed.agents.clear();
    let rollout = run(&gw, NEW, &observed, 100).status.last_rollout.unwrap();
    assert_eq!((rollout.number, rollout.from_revision), (1, None));
    assert_eq!(rollout.triggered_by, None, "no managedFields: nobody to name");
}

#[test]
fn who_changed_a_field_is_the_latest_manager_that_owns_it() {
    let mut gw = gateway("Handoff", "");
    let cases: [(Vec<ManagedFieldsEntry>, Option<&str>); 4] = [
        (vec![], None),
        (vec![managed("nonstop-operator", 5, json!({"f:status": {}}))], None),
        (
            vec![
                managed("kubectl-edit", 30, json!({"f:spec": {}})),
                managed("helm", 20, json!({"f:spec": {}})),
            ],
            Some("kubectl-edit"),
        ),
        // Same second: the later entry.
        (
            vec![managed("a", 30, json!({"f:spec": {}})), managed("b", 30, json!({"f:spec": {}}))],
            Some("b"),
        ),
    ];
    for (entries, want) in cases {
        gw.metadata.managed_fields = Some(entries.clone());
        assert_eq!(history::changed_by(&gw, &["f:spec"]).as_deref(), want, "{entries:?}");
    }
}

#[test]
fn each_node_attempt_is_recorded_once_in_the_order_they_finished() {
    let record = |at: Timestamp, result: UpgradeResult| UpgradeRecord {
        mode: Strategy::Handoff,
        pause_ms: Some(3),
        result,
        time: Time(at),
        reason: None,
    };
    let upgrade =
        |node: &str, at: i64, result: UpgradeResult| NodeUpgrade::of(node, &record(t(at), result));
    let mut nodes = vec![upgrade("n1", 10, UpgradeResult::RolledBack)];
    // The same attempt again (a status write lost), then n1's retry and n2.
    merge(
        &mut nodes,
        &[
            upgrade("n1", 10, UpgradeResult::RolledBack),
            upgrade("n2", 30, UpgradeResult::Succeeded),
        ],
    );
    merge(&mut nodes, &[upgrade("n1", 20, UpgradeResult::Succeeded)]);
    // An agent's handoff time has milliseconds, the stored record whole
    // seconds: the same attempt, read back, is still the same attempt.
    let later_that_second = t(30) + SignedDuration::from_millis(730);
    merge(
        &mut nodes,
        &[NodeUpgrade::of("n2", &record(later_that_second, UpgradeResult::Succeeded))],
    );
    let seen: Vec<_> = nodes.iter().map(|n| (n.node.as_str(), n.upgrade.result)).collect();
    assert_eq!(
        seen,
        [
            ("n1", UpgradeResult::RolledBack),
            ("n1", UpgradeResult::Succeeded),
            ("n2", UpgradeResult::Succeeded)
        ]
    );
}
