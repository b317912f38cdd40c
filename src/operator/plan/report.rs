//! The status a plan reports: each node slot (with its maintenance
//! state), the summary strings `kubectl get` prints, and the Ready,
//! Progressing and Degraded conditions, with an Event the first time a
//! condition turns bad.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{Input, Note, Reason, Related, Slot};
use crate::api::{
    BgpGatewayStatus, ConditionType, Maintenance, NodeStatus, SessionCounts, UpgradeRecord,
};
use crate::operator::nodes::EXCLUDE_LABEL;

/// Why a node is not healthy, for people.
pub(super) fn health(slot: &Slot) -> String {
    match slot.agent {
        None => "no agent answers on the node's admin port".into(),
        Some(a) if a.established < slot.want => {
            let mut text = format!("{}/{} sessions Established", a.established, slot.want);
            if let Some(down) = a.peers.iter().find(|p| !p.is_established()) {
                text += &format!(" ({} {}", down.peer, down.state);
                if let Some(error) = &down.last_error {
                    text += &format!(": {error}");
                }
                if let Some(reset) = &down.last_reset {
                    text += &format!("; last reset: {reset}");
                }
                text += ")";
            } else if let Some(why) = &a.not_run {
                text += &format!(" ({why})");
            }
            text
        }
        Some(a) if !a.all_advertised => {
            format!("{} prefixes advertised, not all announced ones", a.advertised)
        }
        Some(_) => "its agent is not the node's active speaker".into(),
    }
}

pub(super) fn status(
    input: &Input,
    all_slots: &[Slot],
    excluded: &[&str],
    records: &BTreeMap<String, UpgradeRecord>,
    degraded: Option<(Reason, String)>,
    before: &BgpGatewayStatus,
    notes: &mut Vec<Note>,
) -> BgpGatewayStatus {
    let Input { gateway: gw, revision, now, .. } = *input;
    // Drained nodes are out of service: the gateway waits for none of them.
    let slots: Vec<&Slot> = all_slots.iter().filter(|s| !s.drained()).collect();
    let total = slots.len();
    let healthy = slots.iter().filter(|s| s.ready()).count();
    // Rolled: the node's only pod is at the revision and its agent is the
    // active one (session health is the Ready condition's business).
    let at_revision = slots
        .iter()
        .filter(|s| {
            s.live.len() == 1
                && s.desired(revision).is_some_and(|p| s.active == Some(p.name.as_str()))
        })
        .count();
    let nodes = node_statuses(input, all_slots, excluded, records);
    let established: u32 = nodes.iter().map(|n| n.sessions.established).sum();
    let configured: u32 = all_slots.iter().map(|s| s.want).sum();
    let complete = total > 0 && at_revision == total;
    let rollout = match (complete, degraded.is_some(), gw.spec.upgrade.paused) {
        (true, _, _) => "Complete".to_string(),
        (_, true, _) => format!("Degraded {at_revision}/{total}"),
        (_, _, true) => format!("Paused {at_revision}/{total}"),
        _ => format!("Progressing {at_revision}/{total}"),
    };
    let (ready, ready_reason, ready_message) = readiness(input, &slots, &nodes, healthy);
    let mut conditions =
        Conditions { before, generation: gw.metadata.generation, now, all: Vec::new() };
    if conditions.set(ConditionType::Ready, ready, ready_reason, ready_message.clone())
        && !ready
        && total == 0
    {
        notes.push(Note::warning(ready_reason, ready_message.clone()));
    }
    let secrets_were =
        before.conditions.iter().any(|c| c.reason == Reason::SecretNotFound.as_str());
    let conflict_was =
        before.conditions.iter().any(|c| c.reason == Reason::ListenerConflict.as_str());
    if ready_reason == Reason::ListenerConflict && !conflict_was && total > 0 {
        notes.push(Note::warning(Reason::ListenerConflict, ready_message.clone()));
    }
    if !input.observed.missing_secrets.is_empty() && !secrets_were {
        notes.push(Note::warning(Reason::SecretNotFound, ready_message));
    }
    let rolling = if complete { Reason::RolloutComplete } else { Reason::Rolling };
    let progress = progress(revision, &slots, at_revision, total);
    conditions.set(ConditionType::Progressing, !complete, rolling, progress);
    let (deg_on, deg_reason, deg_message) = match &degraded {
        Some((r, m)) => (true, *r, m.clone()),
        None => (false, Reason::AsExpected, "no rollout has failed at this revision".to_string()),
    };
    conditions.set(ConditionType::Degraded, deg_on, deg_reason, deg_message);
    if complete
        && before.current_revision.as_deref() != Some(revision)
        && before.update_revision.is_some()
    {
        notes.push(completed(input));
    }

    BgpGatewayStatus {
        observed_generation: gw.metadata.generation,
        conditions: conditions.all,
        current_revision: if complete {
            Some(revision.to_string())
        } else {
            before.current_revision.clone()
        },
        update_revision: Some(revision.to_string()),
        image: Some(gw.spec.image.clone()).filter(|i| !i.is_empty()),
        ready: Some(format!("{healthy}/{total}")),
        sessions: Some(format!("{established}/{configured}")),
        rollout: Some(rollout),
        nodes,
        // The plan fills these in (`history`).
        last_rollout: None,
        observed_retry: None,
        // The address pass's own (`services`): carried over by write_status.
        load_balancer: None,
    }
}

/// The Event of a rollout that just completed, naming its ConfigMap.
fn completed(input: &Input) -> Note {
    Note {
        warning: false,
        reason: Reason::RolloutComplete,
        message: format!("every node runs revision {}", input.revision),
        related: Some(Related {
            kind: "ConfigMap",
            name: crate::operator::render::config_map_name(input.gateway, input.revision),
        }),
    }
}

/// One entry per node slot and per excluded node, by name.
fn node_statuses(
    input: &Input,
    all_slots: &[Slot],
    excluded: &[&str],
    records: &BTreeMap<String, UpgradeRecord>,
) -> Vec<NodeStatus> {
    let mut nodes: Vec<NodeStatus> = all_slots
        .iter()
        .map(|s| {
            let agent = s.agent;
            let pod = s.active.and_then(|a| s.live.iter().find(|p| p.name == a));
            NodeStatus {
                node: s.node.into(),
                pod: s.active.map(String::from),
                revision: pod.map(|p| p.revision.clone()),
                active_agent: agent.map(|a| a.version.clone()),
                sessions: SessionCounts {
                    established: agent.map_or(0, |a| a.established),
                    configured: s.want,
                },
                routes_advertised: agent.map_or(0, |a| a.advertised),
                last_upgrade: records.get(s.node).cloned(),
                maintenance: s.maintenance(),
                peers: agent.map(|a| a.peers.clone()).unwrap_or_default(),
                checks_failing: agent.map(|a| a.checks_failing.clone()).unwrap_or_default(),
            }
        })
        .collect();
    nodes.extend(excluded.iter().map(|node| {
        NodeStatus {
            node: (*node).into(),
            sessions: SessionCounts {
                established: 0,
                configured: input
                    .observed
                    .nodes
                    .iter()
                    .find(|n| n.name == *node)
                    .map_or(0, |n| super::super::per_node::sessions_on(&input.gateway.spec, n)),
            },
            last_upgrade: records.get(*node).cloned(),
            maintenance: Some(Maintenance::Excluded),
            ..Default::default()
        }
    }));
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    bound_peers(&mut nodes);
    let mut room = MAX_CHECKS;
    for node in &mut nodes {
        node.checks_failing.truncate(room);
        room -= node.checks_failing.len();
    }
    nodes
}

/// The status must stay far below etcd's object limit (1.5 MB) at 1,000
/// nodes: at most [`MAX_PEERS`] sessions are listed, those down on every
/// node first (by node name), then those up, from the first nodes. Each
/// node lists its sessions down first, so cutting its list keeps them.
fn bound_peers(nodes: &mut [NodeStatus]) {
    let down = |n: &NodeStatus| n.peers.iter().filter(|p| !p.is_established()).count();
    let mut room = MAX_PEERS;
    let mut keep: Vec<usize> = Vec::with_capacity(nodes.len());
    for node in nodes.iter() {
        let k = down(node).min(room);
        room -= k;
        keep.push(k);
    }
    for (node, k) in nodes.iter_mut().zip(keep) {
        let up = (node.peers.len() - k).min(if k == down(node) { room } else { 0 });
        room -= up;
        node.peers.truncate(k + up);
    }
}

/// Sessions listed in a gateway's status, over all its nodes; each node's
/// `sessions` still counts every one.
pub const MAX_PEERS: usize = 256;

/// Failing checks listed in a gateway's status, over all its nodes.
pub const MAX_CHECKS: usize = 256;

/// The Ready condition: whether, why, and what to do about it.
fn readiness(
    input: &Input,
    slots: &[&Slot],
    nodes: &[NodeStatus],
    healthy: usize,
) -> (bool, Reason, String) {
    let Input { gateway: gw, observed, .. } = *input;
    let total = slots.len();
    let out_of_service: Vec<String> = nodes
        .iter()
        .filter_map(|n| match n.maintenance? {
            Maintenance::Drained => Some(format!("{} drained (cordoned, no agent)", n.node)),
            Maintenance::Excluded => Some(format!("{} excluded ({EXCLUDE_LABEL})", n.node)),
            Maintenance::Cordoned => None,
        })
        .collect();
    let (ready, reason, mut message) = if total == 0 && !out_of_service.is_empty() {
        (
            false,
            Reason::AllNodesInMaintenance,
            format!(
                "every selected node is out of service: {}; uncordon a node or remove the label to bring it back",
                out_of_service.join(", ")
            ),
        )
    } else if total == 0 && observed.conflicts.is_empty() {
        (
            false,
            Reason::NoMatchingNodes,
            format!(
                "no node matches nodeSelector {:?} with the given tolerations: label nodes or change spec.nodeSelector",
                gw.spec.node_selector
            ),
        )
    } else if !observed.missing_secrets.is_empty() {
        (
            false,
            Reason::SecretNotFound,
            format!(
                "Secret(s) {} named by spec.peers[].passwordSecretRef not found in namespace {}: create them",
                observed.missing_secrets.join(", "),
                gw.metadata.namespace.as_deref().unwrap_or("")
            ),
        )
    } else if !observed.conflicts.is_empty() {
        (
            false,
            Reason::ListenerConflict,
            format!(
                "no agent starts on {}: give this gateway another spec.listen (or none) and spec.adminPort, or a nodeSelector that leaves those nodes out",
                observed.conflicts.values().cloned().collect::<Vec<_>>().join("; ")
            ),
        )
    } else if healthy < total {
        let waiting: Vec<String> = slots
            .iter()
            .filter(|s| !s.ready())
            .map(|s| match s.healthy() {
                true => format!(
                    "{}: {}; annotate the node, or leave it out with the peer's nodeSelector",
                    s.node,
                    s.unaddressed.join("; ")
                ),
                false => format!("{}: {}", s.node, health(s)),
            })
            .collect();
        (
            false,
            Reason::NodesNotReady,
            format!("{healthy}/{total} nodes ready; {}", waiting.join("; ")),
        )
    } else {
        (
            true,
            Reason::AllNodesReady,
            format!("{total}/{total} nodes have an active agent with every session Established"),
        )
    };
    if total > 0 && !out_of_service.is_empty() {
        message += &format!("; out of service: {}", out_of_service.join(", "));
    }
    (ready, reason, message)
}

/// The Progressing message: how far, and which nodes' kubelets it waits for.
fn progress(revision: &str, slots: &[&Slot], at_revision: usize, total: usize) -> String {
    let away: Vec<&str> = slots
        .iter()
        .filter(|s| {
            !s.node_ready && s.desired(revision).is_none_or(|p| s.active != Some(p.name.as_str()))
        })
        .map(|s| s.node)
        .collect();
    let mut message = format!("{at_revision}/{total} nodes at revision {revision}");
    if !away.is_empty() {
        message += &format!(
            "; waiting for {}: not Ready (its kubelet does not report), its upgrade resumes when it is",
            away.join(", ")
        );
    }
    message
}

/// The conditions being written, each keeping its transition time while
/// its status stays.
struct Conditions<'a> {
    before: &'a BgpGatewayStatus,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
    all: Vec<Condition>,
}

impl Conditions<'_> {
    /// Sets one; true when its status changed.
    fn set(&mut self, kind: ConditionType, on: bool, reason: Reason, message: String) -> bool {
        let old = self.before.conditions.iter().find(|c| c.type_ == kind.as_str());
        let status = if on { "True" } else { "False" };
        let since = old
            .filter(|c| c.status == status)
            .map_or(Time(self.now), |c| c.last_transition_time.clone());
        self.all.push(Condition {
            type_: kind.as_str().into(),
            status: status.into(),
            reason: reason.as_str().into(),
            message,
            observed_generation: self.generation,
            last_transition_time: since,
        });
        old.is_none_or(|c| c.status != status)
    }
}

impl Note {
    fn warning(reason: Reason, message: String) -> Note {
        Note { warning: true, reason, message, related: None }
    }
}
