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

mod checks;
mod history;
mod reason;
pub(crate) mod report;
use checks::{Gate, GateInput, Handoff, Stage};
pub use history::History;
pub use reason::Reason;
use report::{health, status};

use k8s_openapi::api::core::v1::Taint;
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
    /// Its `nonstop.dev/` annotations and those the gateway's peers take
    /// their addresses from (see [`super::per_node`]).
    pub annotations: BTreeMap<String, String>,
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
    /// The kubelet reports the agent container stopped: terminated, or
    /// waiting again after a run that ended.
    pub stopped: bool,
    /// The node labels it tells its agent (see [`super::per_node`]).
    pub node_labels: Option<String>,
    /// The node annotations it tells its agent (see [`super::per_node`]).
    pub node_addresses: Option<String>,
}

impl PodView {
    /// Its agent has exited for good: a terminal phase, which the kubelet
    /// reports once every container has stopped; or a pod being deleted
    /// whose agent has stopped, which the kubelet never starts again.
    /// (Kubelets before 1.22 can leave such a pod Running, its container
    /// "waiting", until its grace period ends: a minute and more of a
    /// gateway that cannot finish its deletion.)
    pub fn ended(&self) -> bool {
        matches!(self.phase, Phase::Succeeded | Phase::Failed) || (self.deleting && self.stopped)
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
    /// Prefixes advertised, summed over Established peers.
    pub advertised: u64,
    /// Every announced prefix reached every Established peer that can carry it.
    pub all_advertised: bool,
    /// The pause of the handoff that made it active, if it took over.
    pub handoff_pause_ms: Option<f64>,
    /// When that handoff happened (Unix ms).
    pub handoff_at_ms: Option<u64>,
    /// Its sessions, those down first (then by address).
    pub peers: Vec<crate::api::PeerState>,
    /// Its checked announcements not announced as configured (bounded).
    pub checks_failing: Vec<crate::api::CheckState>,
    /// Why it runs fewer sessions than the spec gives the node, as it
    /// says: the first peer it does not run, with why (no default route).
    pub not_run: Option<String>,
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
    /// Nodes where another gateway keeps a port this one needs: no agent
    /// starts there. By node, with why.
    pub conflicts: BTreeMap<String, String>,
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
    pub reason: Reason,
    pub message: String,
}

impl Step {
    /// The object the step is about, for its Event: the pod.
    pub fn related(&self, gateway: &BgpGateway) -> Option<Related> {
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
    pub reason: Reason,
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
    /// A rollout the spec replaced before it finished (its record is
    /// closed Superseded); the current one is `status.lastRollout`.
    pub superseded: Option<crate::api::history::Rollout>,
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
    /// Sessions the spec configures on this node (its peers, chosen by its
    /// labels): what Established must reach. Not the agent's own count,
    /// which is 0 for a moment after it starts.
    want: u32,
    /// Why peers the node should run have no address there
    /// ([`super::per_node::unaddressed`]): the node is not Ready until
    /// its annotations are fixed, though its rollout goes on.
    unaddressed: Vec<String>,
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
            unaddressed: Vec::new(),
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

    /// Healthy, and running every peer the spec means it to: what Ready
    /// counts. A peer without an address on the node is not something an
    /// upgrade waits for (no agent could dial it), so only this says it.
    fn ready(&self) -> bool {
        self.healthy() && self.unaddressed.is_empty()
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
    let Input { gateway: gw, revision, observed, .. } = *input;
    if gw.metadata.deletion_timestamp.is_some() {
        return deletion(input);
    }
    let before = gw.status.clone().unwrap_or_default();
    let mut draft = Draft::default();
    if !observed.has_finalizer {
        draft.steps.push(Step {
            action: Action::AddFinalizer,
            reason: Reason::Finalizer,
            message: "deleting the gateway will decommission its nodes first".into(),
        });
    }

    let fits: Vec<(&NodeView, Fit)> = observed
        .nodes
        .iter()
        .map(|n| match fit(gw, n) {
            Fit::Serve | Fit::Cordoned if observed.conflicts.contains_key(&n.name) => {
                (n, Fit::Conflicted)
            }
            f => (n, f),
        })
        .collect();
    let excluded: Vec<&str> =
        fits.iter().filter(|(_, f)| *f == Fit::Excluded).map(|(n, _)| n.name.as_str()).collect();
    decommission_unfit(input, &fits, &mut draft);

    let slots: Vec<Slot> = fits
        .iter()
        .filter(|(_, f)| matches!(f, Fit::Serve | Fit::Cordoned))
        .map(|(n, f)| {
            let want = super::per_node::sessions_on(&gw.spec, n);
            let mut slot = Slot::of(n, observed, want, *f == Fit::Cordoned);
            slot.unaddressed = super::per_node::unaddressed(&gw.spec, n);
            slot
        })
        .collect();
    let retry = history::new_retry(gw, &before);
    let mut memory = Memory::of(&before, revision, &slots, retry.is_some());
    let mut outdated = Vec::new();
    for slot in &slots {
        if advance(input, slot, &mut memory, &mut draft) {
            outdated.push(slot);
        }
        failed_after_takeover(input, slot, &mut memory, &mut draft);
    }
    let requeue = start_more(input, outdated, &memory, &mut draft);

    let Draft { steps, mut notes, .. } = draft;
    let degraded = memory.degraded.clone();
    let mut status =
        status(input, &slots, &excluded, &memory.records, degraded.clone(), &before, &mut notes);
    let History { current, superseded } =
        history::history(input, &before, &status, degraded.as_ref(), retry.as_ref());
    if let Some(retry) = &retry {
        notes.push(history::retried(&before, retry));
    }
    status.last_rollout = current;
    status.observed_retry = retry.map(|r| r.value).or(before.observed_retry);
    Plan { steps, notes, status, superseded, requeue }
}

fn age(now: Timestamp, pod: &PodView) -> Duration {
    Duration::from_millis(now.duration_since(pod.created).as_millis().max(0) as u64)
}

/// Moves one node's slot along its stage; true when it is outdated and
/// waits for the rollout to start it.
fn advance(input: &Input, slot: &Slot, memory: &mut Memory, draft: &mut Draft) -> bool {
    let Input { gateway: gw, revision, observed, now } = *input;
    let spec = &gw.spec;
    let node = slot.node;
    let timeout = Duration::from_secs(u64::from(spec.upgrade.handoff_timeout_seconds));
    // Pods whose agent exited for good: clean up once another pod serves;
    // a node left with none gets a new one below.
    for pod in &slot.ended {
        if slot.active.is_some_and(|a| a != pod.name) || slot.live.is_empty() {
            draft.steps.push(match handed_over(slot, pod) {
                Some(message) => delete(pod, Reason::Retire, message),
                None => delete(
                    pod,
                    Reason::Cleanup,
                    format!("node {node}: pod {} ended ({:?})", pod.name, pod.phase),
                ),
            });
        }
    }
    match checks::stage(slot, revision, spec.upgrade.strategy) {
        Stage::Vacating => draft.hold_in_flight(),
        Stage::Drained | Stage::Held(_) => {}
        Stage::Empty if !observed.missing_secrets.is_empty() => {}
        Stage::Empty => {
            draft.hold_in_flight();
            draft.steps.push(Step {
                action: Action::CreatePod { node: node.into(), revision: revision.into() },
                reason: Reason::Create,
                message: format!("node {node} has no agent: starting one at revision {revision}"),
            });
        }
        Stage::Outdated => return true,
        Stage::Stranded => draft.busy = true,
        Stage::Verifying(new) => {
            if !slot.healthy_at(revision) {
                // Not verified yet: no other node starts meanwhile.
                draft.hold_in_flight();
                if memory.upgrading(node, new) && age(now, new) > timeout {
                    memory.degrade(
                        Reason::NotHealthy,
                        format!(
                            "node {node}: the agent of {} is not healthy {} s after it started: {}",
                            new.name,
                            timeout.as_secs(),
                            health(slot)
                        ),
                    );
                }
            }
        }
        Stage::Beside { new, old } => {
            draft.hold_in_flight();
            let handoff = checks::handoff(slot, new, &old, age(now, new), timeout);
            beside(input, slot, new, &old, handoff, memory, draft);
        }
    }
    false
}

/// A new pod beside the old ones: retire them once it took over, roll it
/// back when it failed.
fn beside(
    input: &Input,
    slot: &Slot,
    new: &PodView,
    old: &[&PodView],
    handoff: Handoff,
    memory: &mut Memory,
    draft: &mut Draft,
) {
    let (spec, now, node) = (&input.gateway.spec, input.now, slot.node);
    match handoff {
        Handoff::TookOver { pause_ms } => {
            // The old agents retired (or, for GracefulRestart, stopped)
            // and hold nothing.
            for o in old {
                draft.steps.push(delete(o, Reason::Retire, retired(node, new, o, pause_ms)));
            }
            if !memory.upgrading(node, new) {
                let pause_ms = pause_ms.map(|p| p.round() as u64);
                memory.record(node, spec, UpgradeResult::Succeeded, pause_ms, None, now);
            }
        }
        Handoff::Failed(why) => {
            draft.steps.push(delete(
                new,
                Reason::RollBack,
                format!("node {node}: {} failed: {why}; the old agent keeps serving", new.name),
            ));
            let reason = Some(why.to_string());
            memory.record(node, spec, UpgradeResult::RolledBack, None, reason, now);
            let message = format!("node {node}: {} failed: {why}", new.name);
            if memory.degrade(Reason::UpgradeFailed, message) {
                draft.notes.push(Note {
                    warning: true,
                    reason: Reason::UpgradeFailed,
                    message: format!(
                        "node {node}: {} failed: {why}; rollout stopped (change the spec to resume)",
                        new.name
                    ),
                    related: Some(Related::pod(new.name.clone())),
                });
            }
        }
        Handoff::Waiting => {}
    }
}

fn retired(node: &str, new: &PodView, old: &PodView, pause_ms: Option<f64>) -> String {
    let pause = pause_ms.map(|p| format!(" (pause {p:.1} ms)")).unwrap_or_default();
    format!("node {node}: {} took over{pause}; {} retired", new.name, old.name)
}

/// The retirement of `ended` when only its end was seen: the node's active
/// agent took over by a handoff after `ended` started, and `ended` has
/// exited since. A real kubelet can report the old pod Succeeded before
/// any reconcile saw both pods beside each other.
fn handed_over(slot: &Slot, ended: &PodView) -> Option<String> {
    let agent = slot.agent?;
    let new = slot.live.iter().find(|p| slot.active == Some(p.name.as_str()))?;
    let at = i64::try_from(agent.handoff_at_ms?).ok()?;
    (ended.created < new.created && at >= new.created.as_millisecond())
        .then(|| retired(slot.node, new, ended, agent.handoff_pause_ms))
}

/// Starts upgrading more outdated nodes, as far as the rollout's gate and
/// `maxNodesInFlight` allow; returns when to look again.
fn start_more(input: &Input, outdated: Vec<&Slot>, memory: &Memory, draft: &mut Draft) -> Duration {
    let (spec, now) = (&input.gateway.spec, input.now);
    let mut requeue = if draft.busy || draft.in_flight > 0 { BUSY } else { IDLE };
    if outdated.is_empty() {
        return requeue;
    }
    let last_done = memory
        .records
        .values()
        .filter(|r| r.result == UpgradeResult::Succeeded)
        .map(|r| r.time.0)
        .max();
    let gate = checks::gate(&GateInput {
        degraded: memory.degraded.is_some(),
        paused: spec.upgrade.paused,
        missing_secrets: !input.observed.missing_secrets.is_empty(),
        last_done,
        pause: Duration::from_secs(u64::from(spec.upgrade.pause_seconds)),
        in_flight: draft.in_flight,
        now,
    });
    match gate {
        Gate::Stopped(_) => {}
        Gate::Pausing(left) => requeue = requeue.min(left.max(Duration::from_millis(100))),
        Gate::Open => {
            for slot in outdated {
                if draft.in_flight >= spec.upgrade.max_nodes_in_flight {
                    break;
                }
                draft.in_flight += 1;
                requeue = BUSY;
                start_upgrade(input, slot, draft);
            }
        }
    }
    requeue
}

/// What a plan has so far.
#[derive(Default)]
struct Draft {
    steps: Vec<Step>,
    notes: Vec<Note>,
    /// Something is under way: look again soon.
    busy: bool,
    /// Nodes mid-upgrade (or mid-start), against `maxNodesInFlight`.
    in_flight: u32,
}

impl Draft {
    fn hold_in_flight(&mut self) {
        self.busy = true;
        self.in_flight += 1;
    }
}

/// The rollout's memory, kept in the status: each node's last upgrade and
/// the failure that stopped the rollout at this revision, if one did.
struct Memory {
    records: BTreeMap<String, UpgradeRecord>,
    degraded: Option<(Reason, String)>,
}

impl Memory {
    fn of(before: &BgpGatewayStatus, revision: &str, slots: &[Slot], retried: bool) -> Memory {
        // Degraded holds for the revision it failed at; a new spec or a
        // retry resumes.
        let same_revision = before.update_revision.as_deref() == Some(revision) && !retried;
        let degraded = before
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Degraded.as_str() && c.status == "True")
            .filter(|_| same_revision)
            .map(|c| {
                // One of ours unless edited by hand; it stays a failure.
                (Reason::parse(&c.reason).unwrap_or(Reason::UpgradeFailed), c.message.clone())
            });
        let mut records: BTreeMap<String, UpgradeRecord> = before
            .nodes
            .iter()
            .filter_map(|n| n.last_upgrade.clone().map(|u| (n.node.clone(), u)))
            .collect();
        for slot in slots {
            // The agent's own report of its handoff, unless something newer
            // (a failure after it) is on record.
            if let Some(record) = handoff_record(slot)
                && records.get(slot.node).is_none_or(|r| r.time.0 <= record.time.0)
            {
                records.insert(slot.node.into(), record);
            }
        }
        Memory { records, degraded }
    }

    /// The node's pod at the revision replaced an older one (its upgrade is
    /// not verified until healthy) rather than starting a node from nothing.
    fn upgrading(&self, node: &str, new: &PodView) -> bool {
        self.records.get(node).is_some_and(|r| r.time.0 >= new.created)
    }

    fn record(
        &mut self,
        node: &str,
        spec: &crate::api::BgpGatewaySpec,
        result: UpgradeResult,
        pause_ms: Option<u64>,
        reason: Option<String>,
        now: Timestamp,
    ) {
        let record = UpgradeRecord {
            mode: spec.upgrade.strategy,
            pause_ms,
            result,
            time: crate::api::history::stored(now),
            reason,
        };
        self.records.insert(node.into(), record);
    }

    /// The first failure at a revision is the one the gateway reports;
    /// true if this one is it.
    fn degrade(&mut self, reason: Reason, message: String) -> bool {
        if self.degraded.is_some() {
            return false;
        }
        self.degraded = Some((reason, message));
        true
    }
}

/// Deleted: decommission every node, then let the gateway go.
fn deletion(input: &Input) -> Plan {
    let Input { gateway: gw, observed, .. } = *input;
    let mut steps = Vec::new();
    for pod in observed.pods.iter().filter(|p| !p.deleting) {
        steps.push(delete(
            pod,
            Reason::Decommission,
            format!(
                "gateway deleted: node {} withdraws its routes (graceful shutdown, drain {} s)",
                pod.node, gw.spec.shutdown.drain_seconds
            ),
        ));
    }
    // Withdrawn once every agent has exited: a pod object can outlive
    // its containers by a minute (the kubelet's cleanup), and the
    // garbage collector removes it with the gateway.
    if observed.pods.iter().all(PodView::ended) && observed.has_finalizer {
        steps.push(Step {
            action: Action::RemoveFinalizer,
            reason: Reason::Decommissioned,
            message: "every node withdrew its routes and its agent has exited".into(),
        });
    }
    let mut status = gw.status.clone().unwrap_or_default();
    status.rollout = Some("Deleting".into());
    Plan { steps, notes: Vec::new(), status, superseded: None, requeue: BUSY }
}

/// Scale-in and exclusion: the agent of a node the gateway no longer
/// serves decommissions.
fn decommission_unfit(input: &Input, fits: &[(&NodeView, Fit)], draft: &mut Draft) {
    let drain = input.gateway.spec.shutdown.drain_seconds;
    for pod in input.observed.pods.iter().filter(|p| !p.deleting) {
        let node = &pod.node;
        let fit = fits.iter().find(|(n, _)| n.name == *node).map(|(_, f)| *f);
        let (reason, message) = match fit {
            Some(Fit::Serve | Fit::Cordoned | Fit::Conflicted) => continue,
            Some(Fit::Excluded) => (
                Reason::Exclude,
                format!(
                    "node {node} is labelled {EXCLUDE_LABEL}: it withdraws its routes (graceful shutdown, drain {drain} s) until the label is removed"
                ),
            ),
            Some(Fit::NotSelected) | None => (
                Reason::Decommission,
                format!(
                    "node {node} no longer matches the gateway's nodeSelector/tolerations: it withdraws its routes (drain {drain} s)"
                ),
            ),
        };
        draft.steps.push(delete(pod, reason, message));
        draft.busy = true;
    }
}

/// A new agent that failed after the old one had let go: the node's
/// upgrade failed, though the node stays served (restarted in place).
fn failed_after_takeover(input: &Input, slot: &Slot, memory: &mut Memory, draft: &mut Draft) {
    let (revision, node) = (input.revision, slot.node);
    let Some(new) = slot.desired(revision).filter(|n| n.failure.is_some()) else { return };
    let old_serving =
        slot.live.iter().any(|p| p.revision != revision && slot.active == Some(p.name.as_str()));
    let recorded_failure =
        memory.records.get(node).is_some_and(|r| r.result != UpgradeResult::Succeeded);
    let replaced = memory.upgrading(node, new)
        || slot.live.iter().chain(&slot.ended).any(|p| p.revision != revision);
    if old_serving || recorded_failure || !replaced {
        return;
    }
    let why = new.failure.clone().unwrap_or_default();
    let reason = format!(
        "{why}, after the old agent had retired: restarted in place, Graceful Restart keeps the routes"
    );
    let spec = &input.gateway.spec;
    memory.record(node, spec, UpgradeResult::Failed, None, Some(reason), input.now);
    memory.degrade(
        Reason::UpgradeFailed,
        format!("node {node}: {} failed after taking over: {why}", new.name),
    );
    draft.notes.push(Note {
        warning: true,
        reason: Reason::UpgradeFailed,
        message: format!(
            "node {node}: {} failed after the old agent had retired ({why}); the kubelet restarts it in place and Graceful Restart keeps the routes; rollout stopped (change the spec to resume)",
            new.name
        ),
        related: Some(Related::pod(new.name.clone())),
    });
}

/// A node the gate let through starts its upgrade the spec's way.
fn start_upgrade(input: &Input, slot: &Slot, draft: &mut Draft) {
    let (spec, revision, node) = (&input.gateway.spec, input.revision, slot.node);
    let from = slot.live.iter().map(|p| p.revision.as_str()).collect::<Vec<_>>().join(",");
    match spec.upgrade.strategy {
        Strategy::Handoff | Strategy::GracefulRestart => draft.steps.push(Step {
            action: Action::CreatePod { node: node.into(), revision: revision.into() },
            reason: Reason::Upgrade,
            message: format!(
                "node {node}: {:?} from revision {from} to {revision}: new pod beside the old",
                spec.upgrade.strategy
            ),
        }),
        Strategy::Recreate => {
            for old in &slot.live {
                draft.steps.push(delete(old, Reason::Upgrade, format!(
                    "node {node}: Recreate from revision {from} to {revision}: the old agent withdraws first"
                )));
            }
        }
    }
}

fn delete(pod: &PodView, reason: Reason, message: String) -> Step {
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
        time: crate::api::history::stored(at),
        reason: None,
    })
}

#[cfg(test)]
mod checks_tests;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod tests;
