//! What the operator reports about a gateway: standard conditions, the
//! revisions being rolled between, and one entry per node slot.
//!
//! The summary strings (`ready`, `sessions`, `rollout`) exist for
//! `kubectl get bgpgw`, which can only print fields, not compute them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Strategy;
use super::history::Rollout;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpGatewayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded` (see [`ConditionType`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The revision every node ran when the last rollout completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision the spec asks for; differs from `currentRevision` while rolling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The agent image of `updateRevision`: `spec.image`, or the operator's
    /// agent image when the spec leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// "ready/selected" nodes, e.g. "3/3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// "established/configured" sessions over all nodes, e.g. "6/6".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<String>,
    /// Complete, "Progressing n/m", Paused or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// One entry per selected node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<NodeStatus>,
    /// The rollout under way, or the last one. Every rollout, with each
    /// node's upgrade, is the BgpGatewayRollout `<gateway>-<number>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollout: Option<Rollout>,
    /// The last value of the `nonstop.dev/retry` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry: Option<String>,
    /// Services' addresses this gateway announces (`spec.loadBalancer`),
    /// written by the operator's address pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerStatus>,
}

/// Where the gateway's Service addresses stand.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    /// Service addresses announced by at least one node of the gateway.
    pub addresses: u32,
    /// "current/running" nodes: whose running agent has taken the current
    /// set of addresses, of the nodes with a running agent, e.g. "3/3".
    pub published: String,
    /// Why a node has not taken it (at most 8, by node name), e.g.
    /// "node-2: connecting to 10.0.0.12:9179: connection refused".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub problems: Vec<String>,
}

/// The gateway's condition types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Every selected node has an active agent with every session Established,
    /// and an address for each peer it should dial.
    Ready,
    /// A rollout is under way.
    Progressing,
    /// A rollout stopped on a failure; the reason says which node and why.
    Degraded,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
        }
    }
}

/// A node slot: the agent serving one node for this gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    /// The pod whose agent is the node's active speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Version of the active agent (empty while no agent is active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_agent: Option<String>,
    #[serde(default)]
    pub sessions: SessionCounts,
    /// Prefixes advertised to every Established peer.
    #[serde(default)]
    pub routes_advertised: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<UpgradeRecord>,
    /// Set while the node is in maintenance: what that means for its routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// The sessions of the active agent, as it reported them: state, since
    /// when Established, routes, and why a session is down. Bounded: at most
    /// 8 per node and 256 over the gateway, sessions that are down first
    /// (then by node name), so that the ones a person looks for are never
    /// the ones left out; `sessions` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub peers: Vec<PeerState>,
    /// The active agent's checked announcements that it does not announce
    /// as configured: draining, withdrawn, or not probed yet. Bounded: at
    /// most 8 per node and 256 over the gateway (by node name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub checks_failing: Vec<CheckState>,
}

/// A checked announcement of a node's active agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckState {
    #[schemars(length(max = 49))]
    pub prefix: String,
    /// `draining` (sent with GRACEFUL_SHUTDOWN, to be withdrawn), `down`
    /// (withdrawn) or `unknown` (not probed yet).
    #[schemars(length(max = 16))]
    pub verdict: String,
    /// Since when (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// What the last probe saw, cut to 160 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 200))]
    pub detail: String,
}

/// A session of a node's active agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerState {
    /// The peer's address.
    pub peer: String,
    /// Its RFC 4271 state: Established, or Idle, Connect, Active, OpenSent,
    /// OpenConfirm while it is down.
    pub state: String,
    /// When the session was Established (whole seconds); absent while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_since: Option<Time>,
    /// Routes from the peer kept after the import policy (stale ones too).
    #[serde(default)]
    pub routes_received: u64,
    /// Routes sent to the peer.
    #[serde(default)]
    pub routes_advertised: u64,
    /// The agent's last error for the session (a NOTIFICATION received or
    /// sent, a refused connection, a hold timer), cut to 160 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why the session was last reset with a NOTIFICATION, when that is not
    /// the last error (the connections after it failed otherwise), cut to
    /// 160 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset: Option<String>,
}

impl PeerState {
    pub fn is_established(&self) -> bool {
        self.state == "Established"
    }
}

/// A node's maintenance state, as the gateway treats it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Maintenance {
    /// Cordoned, its agent still serving: nothing changes at the routers;
    /// a drain (eviction of the agent) would withdraw its routes.
    Cordoned,
    /// Cordoned and its agent gone (drained): its routes are withdrawn and
    /// no agent starts until the node is uncordoned.
    Drained,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`:
    /// its routes are withdrawn until the label is removed.
    Excluded,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCounts {
    pub established: u32,
    pub configured: u32,
}

/// How the last upgrade of a node went.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRecord {
    pub mode: Strategy,
    /// Milliseconds between the old agent's last read and the new agent's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<u64>,
    pub result: UpgradeResult,
    pub time: Time,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradeResult {
    Succeeded,
    /// The new agent failed or timed out; the old one kept serving.
    RolledBack,
    /// The new agent failed after the old one had retired: the kubelet
    /// restarts it in place and Graceful Restart keeps the routes meanwhile.
    Failed,
}
