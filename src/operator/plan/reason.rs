//! Why the planner acts or speaks: each step's and note's reason, and the
//! reasons of the gateway's conditions. One type, so an Event, a condition
//! and the `nonstop_operator_steps_total` label can only say what the
//! planner knows how to say.

use std::fmt;

/// A reason, CamelCase as Kubernetes writes Event and condition reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The finalizer that makes a deletion decommission first is added.
    Finalizer,
    /// A node without an agent gets one.
    Create,
    /// A node's upgrade starts.
    Upgrade,
    /// The old pod goes once the new agent took its sessions over.
    Retire,
    /// The new pod goes: it failed while the old agent still served.
    RollBack,
    /// A pod whose agent exited for good is removed.
    Cleanup,
    /// A node no longer selected withdraws its routes.
    Decommission,
    /// A node carrying the exclude label withdraws its routes.
    Exclude,
    /// Every agent of a deleted gateway has exited: the finalizer goes.
    Decommissioned,
    /// A node's upgrade failed (Degraded, and its Event).
    UpgradeFailed,
    /// A node's new agent was not healthy within the handoff timeout.
    NotHealthy,
    /// A failed rollout resumes: the `nonstop.dev/retry` annotation changed.
    Retry,
    /// Every node runs the spec's revision.
    RolloutComplete,
    /// Nodes are still being upgraded.
    Rolling,
    AllNodesReady,
    NodesNotReady,
    NoMatchingNodes,
    /// Every selected node is cordoned and drained, or excluded.
    AllNodesInMaintenance,
    SecretNotFound,
    /// Another gateway keeps a node, binding a port this one needs there.
    ListenerConflict,
    /// Nothing has failed (the Degraded condition's False reason).
    AsExpected,
}

impl Reason {
    pub const ALL: [Reason; 21] = [
        Reason::Finalizer,
        Reason::Create,
        Reason::Upgrade,
        Reason::Retire,
        Reason::RollBack,
        Reason::Cleanup,
        Reason::Decommission,
        Reason::Exclude,
        Reason::Decommissioned,
        Reason::UpgradeFailed,
        Reason::NotHealthy,
        Reason::Retry,
        Reason::RolloutComplete,
        Reason::Rolling,
        Reason::AllNodesReady,
        Reason::NodesNotReady,
        Reason::NoMatchingNodes,
        Reason::AllNodesInMaintenance,
        Reason::SecretNotFound,
        Reason::ListenerConflict,
        Reason::AsExpected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Finalizer => "Finalizer",
            Reason::Create => "Create",
            Reason::Upgrade => "Upgrade",
            Reason::Retire => "Retire",
            Reason::RollBack => "RollBack",
            Reason::Cleanup => "Cleanup",
            Reason::Decommission => "Decommission",
            Reason::Exclude => "Exclude",
            Reason::Decommissioned => "Decommissioned",
            Reason::UpgradeFailed => "UpgradeFailed",
            Reason::NotHealthy => "NotHealthy",
            Reason::Retry => "Retry",
            Reason::RolloutComplete => "RolloutComplete",
            Reason::Rolling => "Rolling",
            Reason::AllNodesReady => "AllNodesReady",
            Reason::NodesNotReady => "NodesNotReady",
            Reason::NoMatchingNodes => "NoMatchingNodes",
            Reason::AllNodesInMaintenance => "AllNodesInMaintenance",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::ListenerConflict => "ListenerConflict",
            Reason::AsExpected => "AsExpected",
        }
    }

    /// The reason a stored condition carries, if it is one of ours.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert_eq!(reason.to_string(), format!("{reason:?}"), "CamelCase as the variant");
        }
        assert_eq!(Reason::parse("Edited by hand"), None);
    }
}
