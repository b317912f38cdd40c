//! The rollout history: each rollout of a gateway as a `BgpGatewayRollout`
//! object, and the one under way (or the last one) summed up in the
//! gateway's status.
//!
//! ```text
//!   BgpGateway edge ── status.lastRollout {number: 3, result, …}
//!   BgpGatewayRollout edge-1, edge-2, edge-3 ── one per rollout: from → to,
//!       started, finished, result, who triggered it, retries, and every
//!       node's upgrade (strategy, pause, result, reason)
//! ```
//!
//! Why objects and not a list in the status: a rollout of 1,000 nodes
//! records 1,000 node upgrades (about 120 KB); ten of them in the status
//! would near etcd's 1.5 MB object limit, and every status write (one per
//! node step) would send them all to every watcher of the gateway. A
//! rollout object is written only when one of its nodes finishes, nobody
//! watches it, and the last `spec.upgrade.historyLimit` are kept; the
//! garbage collector removes them with their gateway.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::UpgradeRecord;

/// The annotation that retries a failed rollout without editing the spec:
/// any new value (`kubectl nonstop retry` writes the time).
pub const RETRY_ANNOTATION: &str = "nonstop.dev/retry";

/// A time as the API server keeps it: whole seconds (RFC 3339 without a
/// fraction). What is compared with a stored time must be cut the same
/// way, or it never compares equal and is written again and again.
pub fn stored(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

/// A rollout summed up: what it rolled from and to, when, how it ended and
/// who started it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// 1 for the gateway's first rollout, then one more for each; its
    /// record is the BgpGatewayRollout `<gateway>-<number>`.
    pub number: u32,
    /// The revision every node ran before (none for the first rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    pub to_revision: String,
    pub image: String,
    pub started: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    pub result: RolloutResult,
    /// Why it failed (the node and its failure), while it is Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The field manager that last changed the spec, as the API server
    /// recorded it (`kubectl-client-side-apply`, `helm`, …), and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    /// Each retry of the rollout after a failure, oldest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub retries: Vec<Retry>,
}

/// How a rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutResult {
    Progressing,
    /// Every node runs the new revision.
    Succeeded,
    /// Stopped on a node's failure; a retry or a new spec resumes.
    Failed,
    /// A newer spec replaced it before it finished.
    Superseded,
}

/// A retry of a failed rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    pub time: Time,
    /// The field manager that set the retry annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The failure it retried after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// The record of one rollout of a gateway, written by the operator.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nonstop.dev",
    version = "v1alpha1",
    kind = "BgpGatewayRollout",
    plural = "bgpgatewayrollouts",
    shortname = "bgprollout",
    namespaced,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gateway"}"#,
    printcolumn = r#"{"name":"Number","type":"integer","jsonPath":".spec.rollout.number"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.rollout.image"}"#,
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".spec.rollout.result"}"#,
    printcolumn = r#"{"name":"Started","type":"date","jsonPath":".spec.rollout.started"}"#,
    printcolumn = r#"{"name":"Finished","type":"date","jsonPath":".spec.rollout.finished"}"#,
    printcolumn = r#"{"name":"Trigger","type":"string","jsonPath":".spec.rollout.triggeredBy","priority":1}"#,
    doc = "One rollout of a BgpGateway, with every node's upgrade: written by the operator, read with `kubectl nonstop history`."
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// The BgpGateway rolled.
    pub gateway: String,
    pub rollout: Rollout,
    /// Each node's upgrade in this rollout, in the order they finished; a
    /// node retried appears once per attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub nodes: Vec<NodeUpgrade>,
}

/// One node's upgrade within a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpgrade {
    pub node: String,
    #[serde(flatten)]
    pub upgrade: UpgradeRecord,
}

impl NodeUpgrade {
    /// `record` of `node`, its time cut to whole seconds as it is stored.
    pub fn of(node: &str, record: &UpgradeRecord) -> NodeUpgrade {
        let upgrade = UpgradeRecord { time: stored(record.time.0), ..record.clone() };
        NodeUpgrade { node: node.into(), upgrade }
    }
}
