//! The planner's checks, one per question a rollout asks: where does this
//! node stand, did its new agent take over or fail, may the rollout start
//! another node. Each returns a decision with a typed reason; [`super::plan`]
//! turns the decisions into steps, notes and the rollout's memory.

use std::fmt;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{PodView, Slot, Strategy};

/// Where a node stands, from its pods and its agent.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stage<'a> {
    /// No agent, and one is still going (Recreate, a decommission): wait
    /// until it has exited.
    Vacating,
    /// Cordoned with no agent left (drained): stays withdrawn until
    /// uncordoned.
    Drained,
    /// No agent at all: start one at the spec's revision.
    Empty,
    /// Only older revisions run: the rollout may upgrade it.
    Outdated,
    /// Only older revisions run, and it may not be upgraded now.
    Held(Hold),
    /// Mid-upgrade on a node whose kubelet went away: nothing there can
    /// start or stop, so no timeout runs out; the other nodes go on.
    Stranded,
    /// The pod at the revision runs alone: its health is being verified.
    Verifying(&'a PodView),
    /// The pod at the revision runs beside older ones: a handoff under way.
    Beside { new: &'a PodView, old: Vec<&'a PodView> },
}

/// Why a node serving an older revision is not upgraded now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Recreate would start a speaker from nothing on a cordoned node.
    CordonedRecreate,
    /// Its kubelet does not report: nothing started there would run.
    KubeletAway,
}

pub(super) fn stage<'a>(slot: &Slot<'a>, revision: &str, strategy: Strategy) -> Stage<'a> {
    let old: Vec<&PodView> = slot.live.iter().copied().filter(|p| p.revision != revision).collect();
    match (slot.desired(revision), old.is_empty()) {
        (None, true) if !slot.going.is_empty() => Stage::Vacating,
        (None, true) if slot.cordoned => Stage::Drained,
        (None, true) => Stage::Empty,
        (None, false) if slot.cordoned && strategy == Strategy::Recreate => {
            Stage::Held(Hold::CordonedRecreate)
        }
        (None, false) if !slot.node_ready => Stage::Held(Hold::KubeletAway),
        (None, false) => Stage::Outdated,
        (Some(new), _) if !slot.node_ready && slot.active != Some(new.name.as_str()) => {
            Stage::Stranded
        }
        (Some(new), true) => Stage::Verifying(new),
        (Some(new), false) => Stage::Beside { new, old },
    }
}

/// Why a node's new agent failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// It exited: its exit code and last words, as the pod reports them.
    Exited(String),
    /// It did not become the active speaker within the handoff timeout.
    TimedOut(Duration),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exited(words) => f.write_str(words),
            Failure::TimedOut(limit) => write!(
                f,
                "its agent did not become the active speaker within handoffTimeoutSeconds ({} s)",
                limit.as_secs()
            ),
        }
    }
}

/// How a handoff beside the old pods stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Handoff {
    /// The new agent is the node's active speaker: the old ones retired.
    TookOver { pause_ms: Option<f64> },
    /// It failed while an old agent still serves: roll back.
    Failed(Failure),
    /// Neither yet (or it failed with no old agent left to fall back on:
    /// the kubelet restarts it and Graceful Restart covers the gap).
    Waiting,
}

pub(super) fn handoff(
    slot: &Slot,
    new: &PodView,
    old: &[&PodView],
    age: Duration,
    timeout: Duration,
) -> Handoff {
    if slot.active == Some(new.name.as_str()) {
        return Handoff::TookOver { pause_ms: slot.agent.and_then(|a| a.handoff_pause_ms) };
    }
    // Serving as its agent says on the node's admin port: a readiness probe
    // may still say so for a moment after the old agent handed over, and
    // rolling back on that would delete the one agent that can serve.
    let old_serving =
        slot.agent.is_some() && old.iter().any(|o| slot.active == Some(o.name.as_str()));
    let failure = match &new.failure {
        Some(words) => Some(Failure::Exited(words.clone())),
        None => (age > timeout).then_some(Failure::TimedOut(timeout)),
    };
    match failure {
        Some(failure) if old_serving => Handoff::Failed(failure),
        _ => Handoff::Waiting,
    }
}

/// Whether the rollout may start upgrading another node now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    Open,
    /// Nothing new starts until the spec changes or the blocker goes.
    Stopped(Stop),
    /// `pauseSeconds` after the last node finished: this much is left.
    Pausing(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// A node's upgrade failed at this revision.
    Degraded,
    /// `spec.upgrade.paused`.
    Paused,
    /// A Secret the peers name is missing: a new agent could not start.
    MissingSecrets,
}

pub(super) struct GateInput {
    pub degraded: bool,
    pub paused: bool,
    pub missing_secrets: bool,
    /// When the last node's upgrade succeeded.
    pub last_done: Option<Timestamp>,
    pub pause: Duration,
    pub in_flight: u32,
    pub now: Timestamp,
}

pub(super) fn gate(input: &GateInput) -> Gate {
    if input.degraded {
        return Gate::Stopped(Stop::Degraded);
    }
    if input.paused {
        return Gate::Stopped(Stop::Paused);
    }
    if input.missing_secrets {
        return Gate::Stopped(Stop::MissingSecrets);
    }
    let since =
        |t: Timestamp| Duration::from_millis(input.now.duration_since(t).as_millis().max(0) as u64);
    match input.last_done.map(since) {
        Some(since) if since < input.pause && input.in_flight == 0 => {
            Gate::Pausing(input.pause - since)
        }
        _ => Gate::Open,
    }
}
