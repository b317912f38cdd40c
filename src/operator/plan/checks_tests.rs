//! The planner's checks, each with a table of the situations it reads.

use std::time::Duration;

use super::tests::{NEW, OLD, agent, node, pod, t};
use super::*;

/// Each node situation, read by the first check the planner makes.
#[test]
fn where_a_node_stands() {
    use checks::{Hold, Stage, stage};
    let deleting = |mut p: PodView, phase| {
        p.deleting = true;
        p.phase = phase;
        p
    };
    type Case = (&'static str, Vec<PodView>, bool, bool, Strategy, &'static str);
    let cases: Vec<Case> = vec![
        ("nothing", vec![], false, true, Strategy::Handoff, "Empty"),
        (
            "an agent going",
            vec![deleting(pod("n1", OLD, 0), Phase::Running)],
            false,
            true,
            Strategy::Handoff,
            "Vacating",
        ),
        (
            "a going pod whose agent exited",
            vec![deleting(pod("n1", OLD, 0), Phase::Succeeded)],
            false,
            true,
            Strategy::Handoff,
            "Empty",
        ),
        ("cordoned, nothing left", vec![], true, true, Strategy::Handoff, "Drained"),
        ("older revision", vec![pod("n1", OLD, 0)], false, true, Strategy::Handoff, "Outdated"),
        (
            "older, cordoned, Handoff",
            vec![pod("n1", OLD, 0)],
            true,
            true,
            Strategy::Handoff,
            "Outdated",
        ),
        (
            "older, cordoned, Recreate",
            vec![pod("n1", OLD, 0)],
            true,
            true,
            Strategy::Recreate,
            "Held(CordonedRecreate)",
        ),
        (
            "older, kubelet away",
            vec![pod("n1", OLD, 0)],
            false,
            false,
            Strategy::Handoff,
            "Held(KubeletAway)",
        ),
        ("new alone", vec![pod("n1", NEW, 0)], false, true, Strategy::Handoff, "Verifying"),
        (
            "new beside old",
            vec![pod("n1", OLD, 0), pod("n1", NEW, 5)],
            false,
            true,
            Strategy::Handoff,
            "Beside",
        ),
        (
            "new beside old, kubelet away",
            vec![pod("n1", OLD, 0), pod("n1", NEW, 5)],
            false,
            false,
            Strategy::Handoff,
            "Stranded",
        ),
    ];
    for (what, pods, cordoned, ready, strategy, want) in cases {
        let mut n1 = node("n1");
        n1.ready = ready;
        let observed = Observed { nodes: vec![n1], pods, ..Default::default() };
        let slot = Slot::of(&observed.nodes[0], &observed, 1, cordoned);
        let got = match stage(&slot, NEW, strategy) {
            Stage::Held(Hold::CordonedRecreate) => "Held(CordonedRecreate)",
            Stage::Held(Hold::KubeletAway) => "Held(KubeletAway)",
            Stage::Vacating => "Vacating",
            Stage::Drained => "Drained",
            Stage::Empty => "Empty",
            Stage::Outdated => "Outdated",
            Stage::Stranded => "Stranded",
            Stage::Verifying(_) => "Verifying",
            Stage::Beside { .. } => "Beside",
        };
        assert_eq!(got, want, "{what}");
    }
}

/// A handoff beside the old pod: took over, failed (only while the old
/// agent serves), or not yet.
#[test]
fn how_a_handoff_stands() {
    use checks::{Failure, Handoff, handoff};
    let timeout = Duration::from_secs(60);
    let (old, new) = (pod("n1", OLD, 0), pod("n1", NEW, 5));
    let exited = PodView { failure: Some("agent exited with code 2".into()), ..new.clone() };
    let cases: Vec<(&str, &PodView, Option<&PodView>, u64, Handoff)> = vec![
        ("the new agent is active", &new, Some(&new), 1, Handoff::TookOver { pause_ms: Some(3.4) }),
        ("the old one serves, the new one is young", &new, Some(&old), 1, Handoff::Waiting),
        (
            "the old one serves, the new one exited",
            &exited,
            Some(&old),
            1,
            Handoff::Failed(Failure::Exited("agent exited with code 2".into())),
        ),
        (
            "the old one serves past the timeout",
            &new,
            Some(&old),
            61,
            Handoff::Failed(Failure::TimedOut(timeout)),
        ),
        ("no admin port answers: nothing is known to serve", &exited, None, 61, Handoff::Waiting),
    ];
    for (what, candidate, active, age, want) in cases {
        let pods = vec![old.clone(), candidate.clone()];
        let observed = Observed {
            nodes: vec![node("n1")],
            agents: active.iter().map(|p| ("n1".to_string(), agent(p))).collect(),
            pods,
            ..Default::default()
        };
        let slot = Slot::of(&observed.nodes[0], &observed, 1, false);
        let got = handoff(&slot, candidate, &[&old], Duration::from_secs(age), timeout);
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(
        Failure::TimedOut(timeout).to_string(),
        "its agent did not become the active speaker within handoffTimeoutSeconds (60 s)"
    );
}

/// Whether the rollout may start another node.
#[test]
fn when_the_rollout_may_start_another_node() {
    use checks::{Gate, GateInput, Stop, gate};
    let pause = Duration::from_secs(30);
    let cases = [
        ((true, true, true, None, 0), Gate::Stopped(Stop::Degraded)),
        ((false, true, true, None, 0), Gate::Stopped(Stop::Paused)),
        ((false, false, true, None, 0), Gate::Stopped(Stop::MissingSecrets)),
        ((false, false, false, None, 0), Gate::Open),
        ((false, false, false, Some(-10), 0), Gate::Pausing(Duration::from_secs(20))),
        ((false, false, false, Some(-10), 1), Gate::Open),
        ((false, false, false, Some(-40), 0), Gate::Open),
    ];
    for ((degraded, paused, missing_secrets, done, in_flight), want) in cases {
        let input = GateInput {
            degraded,
            paused,
            missing_secrets,
            last_done: done.map(t),
            pause,
            in_flight,
            now: t(0),
        };
        assert_eq!(
            gate(&input),
            want,
            "{degraded} {paused} {missing_secrets} {done:?} {in_flight}"
        );
    }
}
