//! The rollout planner: from what is — the gateway, the nodes, its pods,
//! each node's active agent — and the time, what to do next and why.
//! Pure: the reconciler observes, calls [`plan`], applies the steps and
//! writes the status; tests call it with tables of situations.
//!
//! ```text
//!   node slot (one per selected node)
//!     no pod ───────────────────────────▶ CreatePod(R)
//!     old pod only ──(rollout allows)───▶ CreatePod(R) beside it   Handoff, GracefulRestart
//!                                     └─▶ DeletePod(old)            Recreate (decommission first)
//!     old + new ──new is active─────────▶ DeletePod(old)            it retired: exits at once
//!               ──new failed/timed out──▶ DeletePod(new), Degraded  old keeps serving
//!   node no longer selected ────────────▶ DeletePod                 agent decommissions
//! ```
//!
//! One rule above all: the pod whose agent is a node's active speaker is
//! deleted only to decommission that node (scale-in, gateway deleted,
//! Recreate). The active agent is what the node's admin port says; when it
//! does not answer, the pod whose readiness probe passes (the probe asks the
//! same question from inside the pod).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    BgpGateway, BgpGatewayStatus, ConditionType, NodeStatus, SessionCounts, Strategy,
    UpgradeRecord, UpgradeResult,
};

/// A node as the planner needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// Where a pod's life stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    /// Its agent exited 0 (retired, restarted or decommissioned) for good.
    Succeeded,
    Failed,
}

/// One of the gateway's pods.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    pub name: String,
    pub uid: Option<String>,
    pub node: String,
    pub revision: String,
    pub created: Timestamp,
    /// Being deleted: its agent is stopping.
    pub deleting: bool,
    pub phase: Phase,
    /// The readiness probe: this pod's agent is the node's active speaker.
    pub ready: bool,
    /// Why its agent failed (exit code and last words), once it has.
    pub failure: Option<String>,
}

/// A node's active agent, from `GET /status` on the node's admin port.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentView {
    pub pod: Option<String>,
    pub version: String,
    /// Active (not retired).
    pub active: bool,
    pub established: u32,
    pub configured: u32,
    /// Prefixes advertised, summed over Established peers.
    pub advertised: u64,
    /// Every announced prefix reached every Established peer that can carry it.
    pub all_advertised: bool,
    /// The pause of the handoff that made it active, if it took over.
    pub handoff_pause_ms: Option<f64>,
    /// When that handoff happened (Unix ms).
    pub handoff_at_ms: Option<u64>,
}

/// What was observed, all at once.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    /// By node; a node missing here did not answer.
    pub agents: BTreeMap<String, AgentView>,
    /// Secrets the peers name that do not exist.
    pub missing_secrets: Vec<String>,
    /// The gateway carries the operator's finalizer.
    pub has_finalizer: bool,
}

/// One thing to do on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AddFinalizer,
    RemoveFinalizer,
    CreatePod { node: String, revision: String },
    DeletePod { node: String, pod: String },
}

/// An action and why, which also becomes a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    /// CamelCase, for the Event's reason.
    pub reason: &'static str,
    pub message: String,
}

impl Step {
    /// The object the step is about, for its Event: the pod.
    pub fn related(&self, gateway: &str) -> Option<Related> {
        match &self.action {
            Action::CreatePod { node, revision } => {
                Some(Related::pod(super::render::pod_name(gateway, node, revision)))
            }
            Action::DeletePod { pod, .. } => Some(Related::pod(pod.clone())),
            Action::AddFinalizer | Action::RemoveFinalizer => None,
        }
    }
}

/// A Kubernetes Event with nothing to do (a failure, a finished rollout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    pub related: Option<Related>,
}

/// A second object an Event names (its `related`). Events with the same
/// reason about the same objects are counted as one series, so this is what
/// keeps "node-2 upgraded" from being folded into "node-1 upgraded".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    pub kind: &'static str,
    pub name: String,
}

impl Related {
    fn pod(name: String) -> Related {
        Related { kind: "Pod", name }
    }
}

/// What to do, what to report, and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub notes: Vec<Note>,
    pub status: BgpGatewayStatus,
    pub requeue: Duration,
}

/// While something moves: look again soon. Otherwise to refresh the status.
pub const BUSY: Duration = Duration::from_secs(2);
pub const IDLE: Duration = Duration::from_secs(30);

/// Whether a node runs an agent of `gw`: its labels match the node
/// selector and the pod tolerates its NoSchedule/NoExecute taints.
pub fn selects(gw: &BgpGateway, node: &NodeView) -> bool {
    let labels = gw.spec.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v));
    let taints = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| gw.spec.tolerations.iter().any(|tol| tolerates(tol, t)));
    labels && taints
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = tol.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key);
    let value = match tol.operator.as_deref() {
        Some("Exists") => true,
        _ => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect && key && value
}

/// The node slot, as the planner sees it.
struct Slot<'a> {
    node: &'a str,
    /// Pods not being deleted and not ended.
    live: Vec<&'a PodView>,
    /// Pods whose agent exited for good.
    ended: Vec<&'a PodView>,
    /// Pods being deleted.
    going: Vec<&'a PodView>,
    agent: Option<&'a AgentView>,
    /// The pod whose agent is the node's active speaker.
    active: Option<&'a str>,
    /// Sessions the spec configures: what Established must reach. Not the
    /// agent's own count, which is 0 for a moment after it starts.
    want: u32,
}

impl<'a> Slot<'a> {
    fn of(node: &'a str, observed: &'a Observed, want: u32) -> Slot<'a> {
        let mine: Vec<&PodView> = observed.pods.iter().filter(|p| p.node == node).collect();
        let ended = |p: &&PodView| matches!(p.phase, Phase::Succeeded | Phase::Failed);
        let agent = observed.agents.get(node).filter(|a| a.active);
        let active = match agent {
            Some(a) => a.pod.as_deref(),
            None => mine.iter().find(|p| p.ready && !p.deleting).map(|p| p.name.as_str()),
        };
        Slot {
            node,
            live: mine.iter().copied().filter(|p| !p.deleting && !ended(p)).collect(),
            ended: mine.iter().copied().filter(|p| !p.deleting && ended(p)).collect(),
            going: mine.iter().copied().filter(|p| p.deleting).collect(),
            agent,
            active,
            want,
        }
    }

    fn desired(&self, revision: &str) -> Option<&'a PodView> {
        self.live.iter().copied().find(|p| p.revision == revision)
    }

    /// Its active agent runs in a pod at `revision`, every session is
    /// Established and every announced prefix advertised.
    fn healthy_at(&self, revision: &str) -> bool {
        let (Some(pod), Some(agent)) = (self.desired(revision), self.agent) else { return false };
        self.active == Some(pod.name.as_str())
            && agent.established >= self.want
            && agent.all_advertised
    }

    fn healthy(&self) -> bool {
        self.agent.is_some_and(|a| a.established >= self.want && a.all_advertised)
            && self.active.is_some()
    }
}

/// Everything the planner needs; `revision` is the spec's ([`super::render::revision`]).
#[derive(Debug)]
pub struct Input<'a> {
    pub gateway: &'a BgpGateway,
    pub revision: &'a str,
    pub observed: &'a Observed,
    pub now: Timestamp,
}

pub fn plan(input: &Input) -> Plan {
    let Input { gateway: gw, revision, observed, now } = *input;
    let spec = &gw.spec;
    let before = gw.status.clone().unwrap_or_default();
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let mut busy = false;

    // Deleted: decommission every node, then let the gateway go.
    if gw.metadata.deletion_timestamp.is_some() {
        for pod in observed.pods.iter().filter(|p| !p.deleting) {
            steps.push(delete(
                pod,
                "Decommission",
                format!(
                    "gateway deleted: node {} withdraws its routes (graceful shutdown, drain {} s)",
                    pod.node, spec.shutdown.drain_seconds
                ),
            ));
        }
        if observed.pods.is_empty() && observed.has_finalizer {
            steps.push(Step {
                action: Action::RemoveFinalizer,
                reason: "Decommissioned",
                message: "every node withdrew its routes and its pod is gone".into(),
            });
        }
        let mut status = before.clone();
        status.rollout = Some("Deleting".into());
        return Plan { steps, notes, status, requeue: BUSY };
    }
    if !observed.has_finalizer {
        steps.push(Step {
            action: Action::AddFinalizer,
            reason: "Finalizer",
            message: "deleting the gateway will decommission its nodes first".into(),
        });
    }

    let selected: Vec<&NodeView> = observed.nodes.iter().filter(|n| selects(gw, n)).collect();
    let selected_names: Vec<&str> = selected.iter().map(|n| n.name.as_str()).collect();

    // Scale-in: a node that no longer matches decommissions.
    for pod in observed.pods.iter().filter(|p| !p.deleting) {
        if !selected_names.contains(&pod.node.as_str()) {
            steps.push(delete(pod, "Decommission", format!(
                "node {} no longer matches the gateway's nodeSelector/tolerations: it withdraws its routes (drain {} s)",
                pod.node, spec.shutdown.drain_seconds
            )));
            busy = true;
        }
    }

    let want = spec.peers.len() as u32;
    let slots: Vec<Slot> = selected.iter().map(|n| Slot::of(&n.name, observed, want)).collect();
    let rollback_of_degraded = before.update_revision.as_deref() == Some(revision);
    let mut degraded: Option<(String, String)> = before
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Degraded.as_str() && c.status == "True")
        .filter(|_| rollback_of_degraded)
        .map(|c| (c.reason.clone(), c.message.clone()));
    let mut records: BTreeMap<String, UpgradeRecord> = before
        .nodes
        .iter()
        .filter_map(|n| n.last_upgrade.clone().map(|u| (n.node.clone(), u)))
        .collect();
    for slot in &slots {
        if let Some(record) = handoff_record(slot) {
            records.insert(slot.node.into(), record);
        }
    }
    let timeout = Duration::from_secs(u64::from(spec.upgrade.handoff_timeout_seconds));
    let age = |pod: &PodView| {
        Duration::from_millis(now.duration_since(pod.created).as_millis().max(0) as u64)
    };

    let mut in_flight = 0u32;
    let mut waiting_to_upgrade = Vec::new();
    for slot in &slots {
        let node = slot.node;
        // Pods whose agent exited for good: clean up once another pod
        // serves; a node left with none gets a new one below.
        for pod in &slot.ended {
            if slot.active.is_some_and(|a| a != pod.name) || slot.live.is_empty() {
                steps.push(delete(
                    pod,
                    "Cleanup",
                    format!("node {node}: pod {} ended ({:?})", pod.name, pod.phase),
                ));
            }
        }
        let desired = slot.desired(revision);
        let others: Vec<&PodView> =
            slot.live.iter().copied().filter(|p| p.revision != revision).collect();
        match (desired, others.is_empty()) {
            (None, true) => {
                if !slot.going.is_empty() {
                    // Recreate, or a decommission: wait until it is gone.
                    busy = true;
                    in_flight += 1;
                } else if observed.missing_secrets.is_empty() {
                    in_flight += 1;
                    steps.push(Step {
                        action: Action::CreatePod { node: node.into(), revision: revision.into() },
                        reason: "Create",
                        message: format!(
                            "node {node} has no agent: starting one at revision {revision}"
                        ),
                    });
                    busy = true;
                }
            }
            (None, false) => waiting_to_upgrade.push(slot),
            (Some(new), true) => {
                if !slot.healthy_at(revision) {
                    // Not verified yet: no other node starts meanwhile.
                    busy = true;
                    in_flight += 1;
                    if upgrading(&records, node, new) && age(new) > timeout && degraded.is_none() {
                        degraded = Some((
                            "NotHealthy".into(),
                            format!(
                                "node {node}: the agent of {} is not healthy {} s after it started: {}",
                                new.name,
                                timeout.as_secs(),
                                health(slot)
                            ),
                        ));
                    }
                }
            }
            (Some(new), false) => {
                busy = true;
                in_flight += 1;
                if slot.active == Some(new.name.as_str()) {
                    // The new agent took over: the old ones retired (or, for
                    // GracefulRestart, stopped) and hold nothing.
                    let pause = slot.agent.and_then(|a| a.handoff_pause_ms);
                    for old in &others {
                        steps.push(delete(
                            old,
                            "Retire",
                            format!(
                                "node {node}: {} took over{}; {} retired",
                                new.name,
                                pause.map(|p| format!(" (pause {p:.1} ms)")).unwrap_or_default(),
                                old.name
                            ),
                        ));
                    }
                    if !upgrading(&records, node, new) {
                        records.insert(
                            node.into(),
                            UpgradeRecord {
                                mode: spec.upgrade.strategy,
                                pause_ms: pause.map(|p| p.round() as u64),
                                result: UpgradeResult::Succeeded,
                                time: Time(now),
                            },
                        );
                    }
                } else {
                    let old_serving = others.iter().any(|o| slot.active == Some(o.name.as_str()));
                    let failed = new.failure.clone().or_else(|| {
                        (age(new) > timeout).then(|| format!(
                            "its agent did not become the active speaker within handoffTimeoutSeconds ({} s)",
                            timeout.as_secs()
                        ))
                    });
                    if let Some(why) = failed {
                        // Only while the old agent still serves: after a
                        // GracefulRestart stop the new one is all there is.
                        if old_serving || spec.upgrade.strategy == Strategy::Handoff {
                            steps.push(delete(
                                new,
                                "RollBack",
                                format!(
                                    "node {node}: {} failed: {why}; the old agent keeps serving",
                                    new.name
                                ),
                            ));
                            records.insert(
                                node.into(),
                                UpgradeRecord {
                                    mode: spec.upgrade.strategy,
                                    pause_ms: None,
                                    result: UpgradeResult::RolledBack,
                                    time: Time(now),
                                },
                            );
                        }
                        if degraded.is_none() {
                            degraded = Some((
                                "UpgradeFailed".into(),
                                format!("node {node}: {} failed: {why}", new.name),
                            ));
                            notes.push(Note { warning: true, reason: "UpgradeFailed", message: format!(
                                "node {node}: {} failed: {why}; rollout stopped (change the spec to resume)",
                                new.name
                            ), related: Some(Related::pod(new.name.clone())) });
                        }
                    }
                }
            }
        }
    }

    // Start upgrading more nodes, if the rollout may.
    let last_done =
        records.values().filter(|r| r.result == UpgradeResult::Succeeded).map(|r| r.time.0).max();
    let pause = Duration::from_secs(u64::from(spec.upgrade.pause_seconds));
    let pausing = last_done.and_then(|t| {
        let since = Duration::from_millis(now.duration_since(t).as_millis().max(0) as u64);
        (since < pause && in_flight == 0).then(|| pause - since)
    });
    let mut requeue = if busy || in_flight > 0 { BUSY } else { IDLE };
    if !waiting_to_upgrade.is_empty() {
        if degraded.is_some() || spec.upgrade.paused || !observed.missing_secrets.is_empty() {
            // Stopped: nothing new starts.
        } else if let Some(left) = pausing {
            requeue = requeue.min(left.max(Duration::from_millis(100)));
        } else {
            for slot in waiting_to_upgrade.iter() {
                if in_flight >= spec.upgrade.max_nodes_in_flight {
                    break;
                }
                in_flight += 1;
                requeue = BUSY;
                let from =
                    slot.live.iter().map(|p| p.revision.as_str()).collect::<Vec<_>>().join(",");
                let node = slot.node;
                match spec.upgrade.strategy {
                    Strategy::Handoff | Strategy::GracefulRestart => steps.push(Step {
                        action: Action::CreatePod { node: node.into(), revision: revision.into() },
                        reason: "Upgrade",
                        message: format!(
                            "node {node}: {:?} from revision {from} to {revision}: new pod beside the old",
                            spec.upgrade.strategy
                        ),
                    }),
                    Strategy::Recreate => {
                        for old in &slot.live {
                            steps.push(delete(old, "Upgrade", format!(
                                "node {node}: Recreate from revision {from} to {revision}: the old agent withdraws first"
                            )));
                        }
                    }
                }
            }
        }
    }

    let status = status(input, &slots, &records, degraded.clone(), &before, &mut notes);
    Plan { steps, notes, status, requeue }
}

/// The node's pod at `revision` replaced an older one (its upgrade is not
/// verified until healthy) rather than starting a node from nothing.
fn upgrading(records: &BTreeMap<String, UpgradeRecord>, node: &str, new: &PodView) -> bool {
    records.get(node).is_some_and(|r| r.time.0 >= new.created)
}

fn delete(pod: &PodView, reason: &'static str, message: String) -> Step {
    Step {
        action: Action::DeletePod { node: pod.node.clone(), pod: pod.name.clone() },
        reason,
        message,
    }
}

/// A node's last upgrade as its active agent tells it: the handoff that
/// made it active. Read fresh each time, so no status write can lose it.
fn handoff_record(slot: &Slot) -> Option<UpgradeRecord> {
    let agent = slot.agent?;
    let at = Timestamp::from_millisecond(i64::try_from(agent.handoff_at_ms?).ok()?).ok()?;
    Some(UpgradeRecord {
        mode: Strategy::Handoff,
        pause_ms: agent.handoff_pause_ms.map(|p| p.round() as u64),
        result: UpgradeResult::Succeeded,
        time: Time(at),
    })
}

/// Why a node is not healthy, for people.
fn health(slot: &Slot) -> String {
    match slot.agent {
        None => "no agent answers on the node's admin port".into(),
        Some(a) if a.established < slot.want => {
            format!("{}/{} sessions Established", a.established, slot.want)
        }
        Some(a) if !a.all_advertised => {
            format!("{} prefixes advertised, not all announced ones", a.advertised)
        }
        Some(_) => "its agent is not the node's active speaker".into(),
    }
}

fn status(
    input: &Input,
    slots: &[Slot],
    records: &BTreeMap<String, UpgradeRecord>,
    degraded: Option<(String, String)>,
    before: &BgpGatewayStatus,
    notes: &mut Vec<Note>,
) -> BgpGatewayStatus {
    let Input { gateway: gw, revision, observed, now } = *input;
    let total = slots.len();
    let healthy = slots.iter().filter(|s| s.healthy()).count();
    // Rolled: the node's only pod is at the revision and its agent is the
    // active one (session health is the Ready condition's business).
    let at_revision = slots
        .iter()
        .filter(|s| {
            s.live.len() == 1
                && s.desired(revision).is_some_and(|p| s.active == Some(p.name.as_str()))
        })
        .count();
    let (mut established, mut configured) = (0, 0);
    let nodes: Vec<NodeStatus> = slots
        .iter()
        .map(|s| {
            let agent = s.agent;
            established += agent.map_or(0, |a| a.established);
            configured += gw.spec.peers.len() as u32;
            let pod = s.active.and_then(|a| s.live.iter().find(|p| p.name == a));
            NodeStatus {
                node: s.node.into(),
                pod: s.active.map(String::from),
                revision: pod.map(|p| p.revision.clone()),
                active_agent: agent.map(|a| a.version.clone()),
                sessions: SessionCounts {
                    established: agent.map_or(0, |a| a.established),
                    configured: gw.spec.peers.len() as u32,
                },
                routes_advertised: agent.map_or(0, |a| a.advertised),
                last_upgrade: handoff_record(s).or_else(|| records.get(s.node).cloned()),
            }
        })
        .collect();
    let complete = total > 0 && at_revision == total;
    let rollout = if complete {
        "Complete".to_string()
    } else if degraded.is_some() {
        format!("Degraded {at_revision}/{total}")
    } else if gw.spec.upgrade.paused {
        format!("Paused {at_revision}/{total}")
    } else {
        format!("Progressing {at_revision}/{total}")
    };

    let (ready, ready_reason, ready_message) = if total == 0 {
        (
            false,
            "NoMatchingNodes",
            format!(
                "no node matches nodeSelector {:?} with the given tolerations: label nodes or change spec.nodeSelector",
                gw.spec.node_selector
            ),
        )
    } else if !observed.missing_secrets.is_empty() {
        (
            false,
            "SecretNotFound",
            format!(
                "Secret(s) {} named by spec.peers[].passwordSecretRef not found in namespace {}: create them",
                observed.missing_secrets.join(", "),
                gw.metadata.namespace.as_deref().unwrap_or("")
            ),
        )
    } else if healthy < total {
        let waiting: Vec<String> = slots
            .iter()
            .filter(|s| !s.healthy())
            .map(|s| format!("{}: {}", s.node, health(s)))
            .collect();
        (false, "NodesNotReady", format!("{healthy}/{total} nodes ready; {}", waiting.join("; ")))
    } else {
        (
            true,
            "AllNodesReady",
            format!("{total}/{total} nodes have an active agent with every session Established"),
        )
    };
    let generation = gw.metadata.generation;
    let mut conditions = Vec::new();
    let mut set = |kind: ConditionType, on: bool, reason: &str, message: String| {
        let old = before.conditions.iter().find(|c| c.type_ == kind.as_str());
        let status = if on { "True" } else { "False" };
        let since = old
            .filter(|c| c.status == status)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        conditions.push(Condition {
            type_: kind.as_str().into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        });
        old.is_none_or(|c| c.status != status)
    };
    if set(ConditionType::Ready, ready, ready_reason, ready_message.clone()) && !ready && total == 0
    {
        notes.push(Note {
            warning: true,
            reason: ready_reason,
            message: ready_message.clone(),
            related: None,
        });
    }
    if !observed.missing_secrets.is_empty() {
        let was = before.conditions.iter().any(|c| c.reason == "SecretNotFound");
        if !was {
            notes.push(Note {
                warning: true,
                reason: "SecretNotFound",
                message: ready_message,
                related: None,
            });
        }
    }
    let progressing = !complete;
    set(
        ConditionType::Progressing,
        progressing,
        if complete { "RolloutComplete" } else { "Rolling" },
        format!("{at_revision}/{total} nodes at revision {revision}"),
    );
    let (deg_on, deg_reason, deg_message) = match &degraded {
        Some((r, m)) => (true, r.clone(), m.clone()),
        None => {
            (false, "AsExpected".to_string(), "no rollout has failed at this revision".to_string())
        }
    };
    set(ConditionType::Degraded, deg_on, &deg_reason, deg_message);
    if complete
        && before.current_revision.as_deref() != Some(revision)
        && before.update_revision.is_some()
    {
        notes.push(Note {
            warning: false,
            reason: "RolloutComplete",
            message: format!("every node runs revision {revision}"),
            related: Some(Related {
                kind: "ConfigMap",
                name: super::render::config_map_name(&kube::ResourceExt::name_any(gw), revision),
            }),
        });
    }

    BgpGatewayStatus {
        observed_generation: generation,
        conditions,
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
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
