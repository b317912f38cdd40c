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
//!               ──new failed/timed out──▶ DeletePod(new), Degraded  only while old serves
//!               ──new failed, old retired─▶ keep new, Failed, Degraded  kubelet restarts it
//!   node cordoned, agent running ───────▶ nothing; upgraded in place  routes stay
//!   node cordoned, no agent (drained) ──▶ nothing until uncordoned    routes stay withdrawn
//!   node excluded, or no longer selected ▶ DeletePod                 agent decommissions
//! ```
//!
//! Which nodes count, and how cordon and the exclude label read, is
//! [`super::nodes`]; the status the plan reports is [`report`].
//!
//! One rule above all: the pod whose agent is a node's active speaker is
//! deleted only to decommission that node (scale-in, gateway deleted,
//! Recreate). The active agent is what the node's admin port says; when it
//! does not answer, the pod whose readiness probe passes (the probe asks the
//! same question from inside the pod).

use std::collections::BTreeMap;
use std::time::Duration;

mod report;
use report::{health, status};

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::nodes::{EXCLUDE_LABEL, Fit, fit};
use crate::api::{
    BgpGateway, BgpGatewayStatus, ConditionType, Maintenance, Strategy, UpgradeRecord,
    UpgradeResult,
};

/// A node as the planner needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Its Ready condition is True: its kubelet reports in.
    pub ready: bool,
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

impl PodView {
    /// Its agent has exited for good: a terminal phase, which the kubelet
    /// reports once every container has stopped.
    pub fn ended(&self) -> bool {
        matches!(self.phase, Phase::Succeeded | Phase::Failed)
    }
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

/// The node slot, as the planner sees it.
struct Slot<'a> {
    node: &'a str,
    /// Pods not being deleted and not ended.
    live: Vec<&'a PodView>,
    /// Pods whose agent exited for good.
    ended: Vec<&'a PodView>,
    /// Pods being deleted whose agent still runs. One whose agent has
    /// exited holds nothing on the node (not the BGP port, not a session)
    /// though its object may stay a while.
    going: Vec<&'a PodView>,
    agent: Option<&'a AgentView>,
    /// The pod whose agent is the node's active speaker.
    active: Option<&'a str>,
    /// Sessions the spec configures: what Established must reach. Not the
    /// agent's own count, which is 0 for a moment after it starts.
    want: u32,
    /// The node is cordoned: no agent starts here from nothing.
    cordoned: bool,
    /// The node's kubelet reports in. Without it nothing started or
    /// deleted there happens: its upgrade waits, and the rollout goes on
    /// with the other nodes.
    node_ready: bool,
}

impl<'a> Slot<'a> {
    fn of(node: &'a NodeView, observed: &'a Observed, want: u32, cordoned: bool) -> Slot<'a> {
        let (node_ready, node) = (node.ready, node.name.as_str());
        let mine: Vec<&PodView> = observed.pods.iter().filter(|p| p.node == node).collect();
        let ended = |p: &&PodView| p.ended();
        let agent = observed.agents.get(node).filter(|a| a.active);
        let active = match agent {
            Some(a) => a.pod.as_deref(),
            None => mine.iter().find(|p| p.ready && !p.deleting).map(|p| p.name.as_str()),
        };
        Slot {
            node,
            live: mine.iter().copied().filter(|p| !p.deleting && !ended(p)).collect(),
            ended: mine.iter().copied().filter(|p| !p.deleting && ended(p)).collect(),
            going: mine.iter().copied().filter(|p| p.deleting && !ended(p)).collect(),
            agent,
            active,
            want,
            cordoned,
            node_ready,
        }
    }

    /// Cordoned with no agent left (a drain evicted it): out of service
    /// until uncordoned, and not counted as a node the gateway waits for.
    fn drained(&self) -> bool {
        self.cordoned && self.live.is_empty() && self.going.is_empty()
    }

    fn maintenance(&self) -> Option<Maintenance> {
        match (self.cordoned, self.drained()) {
            (_, true) => Some(Maintenance::Drained),
            (true, false) => Some(Maintenance::Cordoned),
            (false, _) => None,
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
        // Withdrawn once every agent has exited: a pod object can outlive
        // its containers by a minute (the kubelet's cleanup), and the
        // garbage collector removes it with the gateway.
        if observed.pods.iter().all(PodView::ended) && observed.has_finalizer {
            steps.push(Step {
                action: Action::RemoveFinalizer,
                reason: "Decommissioned",
                message: "every node withdrew its routes and its agent has exited".into(),
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

    let fits: Vec<(&NodeView, Fit)> = observed.nodes.iter().map(|n| (n, fit(gw, n))).collect();
    let fit_of = |node: &str| fits.iter().find(|(n, _)| n.name == node).map(|(_, f)| *f);
    let excluded: Vec<&str> =
        fits.iter().filter(|(_, f)| *f == Fit::Excluded).map(|(n, _)| n.name.as_str()).collect();

    // Scale-in and exclusion: the node's agent decommissions.
    for pod in observed.pods.iter().filter(|p| !p.deleting) {
        let node = &pod.node;
        let drain = spec.shutdown.drain_seconds;
        let (reason, message) = match fit_of(node) {
            Some(Fit::Serve | Fit::Cordoned) => continue,
            Some(Fit::Excluded) => (
                "Exclude",
                format!(
                    "node {node} is labelled {EXCLUDE_LABEL}: it withdraws its routes (graceful shutdown, drain {drain} s) until the label is removed"
                ),
            ),
            Some(Fit::NotSelected) | None => (
                "Decommission",
                format!(
                    "node {node} no longer matches the gateway's nodeSelector/tolerations: it withdraws its routes (drain {drain} s)"
                ),
            ),
        };
        steps.push(delete(pod, reason, message));
        busy = true;
    }

    let want = spec.peers.len() as u32;
    let slots: Vec<Slot> = fits
        .iter()
        .filter(|(_, f)| matches!(f, Fit::Serve | Fit::Cordoned))
        .map(|(n, f)| Slot::of(n, observed, want, *f == Fit::Cordoned))
        .collect();
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
        // The agent's own report of its handoff, unless something newer
        // (a failure after it) is on record.
        if let Some(record) = handoff_record(slot)
            && records.get(slot.node).is_none_or(|r| r.time.0 <= record.time.0)
        {
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
                } else if slot.cordoned {
                    // Drained: its routes stay withdrawn until it is uncordoned.
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
            // Recreate would start a speaker from nothing: not on a cordoned node.
            (None, false) if slot.cordoned && spec.upgrade.strategy == Strategy::Recreate => {}
            // A node whose kubelet is away is not started on.
            (None, false) if !slot.node_ready => {}
            (None, false) => waiting_to_upgrade.push(slot),
            // Mid-upgrade on a node whose kubelet went away: nothing there
            // can start or stop, so no timeout runs out; the other nodes go on.
            (Some(new), _) if !slot.node_ready && slot.active != Some(new.name.as_str()) => {
                busy = true;
            }
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
                                reason: None,
                            },
                        );
                    }
                } else {
                    // Serving as its agent says on the node's admin port: a
                    // readiness probe may still say so for a moment after
                    // the old agent handed over, and rolling back on that
                    // would delete the one agent that can serve.
                    let old_serving = slot.agent.is_some()
                        && others.iter().any(|o| slot.active == Some(o.name.as_str()));
                    let failed = new.failure.clone().or_else(|| {
                        (age(new) > timeout).then(|| format!(
                            "its agent did not become the active speaker within handoffTimeoutSeconds ({} s)",
                            timeout.as_secs()
                        ))
                    });
                    // Only while an old agent still serves is the new pod
                    // deleted. Once the old one retired (or stopped for a
                    // GracefulRestart), the new one is all there is: the
                    // kubelet restarts it and Graceful Restart covers the gap.
                    if let Some(why) = failed.filter(|_| old_serving) {
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
                                reason: Some(why.clone()),
                            },
                        );
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
        // A new agent that failed after the old one had let go: the node's
        // upgrade failed, though the node stays served (restarted in place).
        if let Some(new) = desired.filter(|n| n.failure.is_some())
            && !slot
                .live
                .iter()
                .any(|p| p.revision != revision && slot.active == Some(p.name.as_str()))
            && records.get(node).is_none_or(|r| r.result == UpgradeResult::Succeeded)
            && (upgrading(&records, node, new)
                || slot.live.iter().chain(&slot.ended).any(|p| p.revision != revision))
        {
            let why = new.failure.clone().unwrap_or_default();
            records.insert(
                node.into(),
                UpgradeRecord {
                    mode: spec.upgrade.strategy,
                    pause_ms: None,
                    result: UpgradeResult::Failed,
                    time: Time(now),
                    reason: Some(format!(
                        "{why}, after the old agent had retired: restarted in place, Graceful Restart keeps the routes"
                    )),
                },
            );
            if degraded.is_none() {
                degraded = Some((
                    "UpgradeFailed".into(),
                    format!("node {node}: {} failed after taking over: {why}", new.name),
                ));
            }
            notes.push(Note {
                warning: true,
                reason: "UpgradeFailed",
                message: format!(
                    "node {node}: {} failed after the old agent had retired ({why}); the kubelet restarts it in place and Graceful Restart keeps the routes; rollout stopped (change the spec to resume)",
                    new.name
                ),
                related: Some(Related::pod(new.name.clone())),
            });
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

    let status = status(input, &slots, &excluded, &records, degraded.clone(), &before, &mut notes);
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
        reason: None,
    })
}

#[cfg(test)]
mod tests;
