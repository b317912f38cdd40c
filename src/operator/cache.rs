//! What the operator knows of the cluster between API calls: watch caches
//! (reflector stores) of the nodes and of the gateways' pods, which
//! gateways a node event concerns, and what the operator has written but
//! the caches may not show yet.
//!
//! ```text
//!   watch Node ──strip images, managedFields──▶ store ──relevant change?──▶ gateways it concerns
//!   watch Pod (gateway label) ───────────────▶ store ──owner──────────────▶ its gateway
//!   reconcile ── reads both stores: no LIST per reconcile
//!             ── remembers pods it created/deleted until the store shows them
//! ```
//!
//! A watch cache lags the API server by a moment. A reconcile that runs
//! before its own last pod create shows up would see the node as empty and
//! start a second one beside it (beyond `maxNodesInFlight`), so the
//! reconciler waits for its [`Expectations`] first — the same guard
//! Kubernetes' own ReplicaSet controller uses.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tracing::warn;

use super::observe::pod_view;
use super::per_node;
use super::plan::{AgentView, PodView};
use super::render::{GATEWAY_LABEL, label_value};
use crate::api::BgpGateway;

/// What of a node the operator acts on: its labels and taints (which
/// gateways select it), its `nonstop.dev/` annotations and those peers take
/// their addresses from, cordon, readiness and address. Changes to anything
/// else — the kubelet's heartbeats, images, capacity, other controllers'
/// annotations — wake no gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeFingerprint {
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    taints: Vec<(String, String, String)>,
    unschedulable: bool,
    ready: bool,
    address: Option<String>,
}

impl NodeFingerprint {
    /// `named`: the annotations some gateway's peers take their addresses
    /// from ([`named_annotations`]).
    pub fn of(node: &Node, named: &BTreeSet<String>) -> NodeFingerprint {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        NodeFingerprint {
            labels: node.labels().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: node
                .annotations()
                .iter()
                .filter(|(k, _)| k.starts_with("nonstop.dev/") || named.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .map(|t| (t.key.clone(), t.value.clone().unwrap_or_default(), t.effect.clone()))
                .collect(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            address: status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone()),
        }
    }
}

/// Passes on a node event only when what the operator acts on changed
/// (or the node appeared or went).
#[derive(Debug, Default)]
pub struct NodeChanges {
    seen: HashMap<String, NodeFingerprint>,
}

impl NodeChanges {
    /// Whether `node`, as it is now, differs from the last time seen.
    /// A gateway that comes to name an annotation reads the nodes when it
    /// is reconciled; the next change of that annotation wakes it here.
    pub fn applied(&mut self, node: &Node, named: &BTreeSet<String>) -> bool {
        let print = NodeFingerprint::of(node, named);
        self.seen.insert(node.name_any(), print.clone()).as_ref() != Some(&print)
    }

    /// A node was deleted: always a change.
    pub fn deleted(&mut self, node: &Node) -> bool {
        self.seen.remove(&node.name_any());
        true
    }
}

/// The node annotations the gateways' peers take their addresses from.
pub fn named_annotations(gateways: &[Arc<BgpGateway>]) -> BTreeSet<String> {
    gateways.iter().flat_map(|g| per_node::named_annotations(&g.spec)).map(String::from).collect()
}

/// Drops what the operator never reads from a cached node: the image list
/// (often the largest part of a Node) and the managed fields.
pub fn slim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

/// Drops what the operator never reads from a cached gateway pod: all of
/// its spec but the node, all of its status but the phase, conditions and
/// container states, and the managed fields. A thousand pods cost a
/// fraction of what they did whole.
pub fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        *spec = PodSpec { node_name: spec.node_name.take(), ..Default::default() };
    }
    if let Some(status) = pod.status.as_mut() {
        *status = PodStatus {
            phase: status.phase.take(),
            conditions: status.conditions.take(),
            container_statuses: status.container_statuses.take(),
            ..Default::default()
        };
    }
}

/// How long the reconciler waits for the watch to show its own writes
/// before it stops waiting (and says so): a watch that lags this much is
/// broken, and the next reconcile must not stall forever on it.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The pods a gateway's last reconciles created or deleted that its pod
/// cache may not show yet.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug)]
struct Pending {
    /// Names of pods created.
    created: Vec<String>,
    /// Uids of pods deleted.
    deleted: Vec<String>,
    since: Instant,
}

impl Expectations {
    pub fn created(&self, gateway: &str, pod: &str) {
        self.with(gateway, |p| p.created.push(pod.into()));
    }

    pub fn deleted(&self, gateway: &str, uid: &str) {
        self.with(gateway, |p| p.deleted.push(uid.into()));
    }

    fn with(&self, gateway: &str, f: impl FnOnce(&mut Pending)) {
        let mut all = self.pending.lock().expect("expectations lock");
        let pending = all.entry(gateway.into()).or_insert_with(|| Pending {
            created: Vec::new(),
            deleted: Vec::new(),
            since: Instant::now(),
        });
        f(pending);
    }

    /// Whether the cached `pods` of `gateway` show every write expected of
    /// them (then they are forgotten), or the wait has run out.
    pub fn met(&self, gateway: &str, pods: &[PodView], now: Instant) -> bool {
        let mut all = self.pending.lock().expect("expectations lock");
        let Some(pending) = all.get_mut(gateway) else { return true };
        pending.created.retain(|name| !pods.iter().any(|p| &p.name == name));
        pending.deleted.retain(|uid| {
            pods.iter().any(|p| p.uid.as_deref() == Some(uid.as_str()) && !p.deleting)
        });
        let settled = pending.created.is_empty() && pending.deleted.is_empty();
        let late = now.duration_since(pending.since) >= EXPECTATION_TIMEOUT;
        if late && !settled {
            warn!(
                gateway,
                created = ?pending.created,
                deleted = ?pending.deleted,
                "the pod watch has not shown these writes after {EXPECTATION_TIMEOUT:?}; going on without them"
            );
        }
        if settled || late {
            all.remove(gateway);
            return true;
        }
        false
    }

    /// The gateway is gone: nothing to wait for.
    pub fn forget(&self, gateway: &str) {
        self.pending.lock().expect("expectations lock").remove(gateway);
    }
}

/// The resourceVersion of each gateway as the operator last read or wrote
/// it: when the watch cache holds that very version, the cached object is
/// current and the reconcile needs no GET.
#[derive(Debug, Default)]
pub struct Versions {
    known: Mutex<HashMap<String, String>>,
}

impl Versions {
    pub fn current(&self, gateway: &str, version: Option<&str>) -> bool {
        let known = self.known.lock().expect("versions lock");
        version.is_some() && known.get(gateway).map(String::as_str) == version
    }

    pub fn saw(&self, gateway: &str, version: Option<&str>) {
        let mut known = self.known.lock().expect("versions lock");
        match version {
            Some(v) => known.insert(gateway.into(), v.into()),
            None => known.remove(gateway),
        };
    }
}

/// The gateways a change of `node` concerns: those whose node selector
/// matches it (it may start or stop serving them) and those with a pod on
/// it (it may have stopped serving them). Not every gateway on every node
/// heartbeat: with 1,000 nodes that would be a reconcile storm.
pub fn concerned(
    node: &Node,
    gateways: &[Arc<BgpGateway>],
    pods: &[Arc<Pod>],
) -> Vec<ObjectRef<BgpGateway>> {
    let name = node.name_any();
    let labels = node.labels();
    let on_node: Vec<(String, &str)> = pods
        .iter()
        .filter(|p| pod_view(p).is_some_and(|v| v.node == name))
        .filter_map(|p| {
            Some((p.namespace().unwrap_or_default(), p.labels().get(GATEWAY_LABEL)?.as_str()))
        })
        .collect();
    gateways
        .iter()
        .filter(|gw| {
            let selected = gw.spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            let namespace = gw.namespace().unwrap_or_default();
            selected
                || on_node
                    .iter()
                    .any(|(ns, label)| *ns == namespace && *label == label_value(&gw.name_any()))
        })
        .map(|gw| ObjectRef::from_obj(&**gw))
        .collect()
}

/// How long a settled node's agent answer is reused before it is asked
/// again. A node whose pods change, or whose agent is not settled, is
/// asked on every reconcile.
pub const AGENT_REFRESH: Duration = Duration::from_secs(10);

/// The last answer of each node's agent, so that a rollout step asks the
/// nodes it concerns, not all of them: at 1,000 nodes, asking every agent
/// on every reconcile is most of a reconcile's time.
#[derive(Debug, Default)]
pub struct AgentAnswers {
    seen: Mutex<HashMap<(String, String), Answer>>,
}

#[derive(Debug, Clone)]
struct Answer {
    /// The node's pods when it answered.
    pods: Vec<PodPrint>,
    view: Option<AgentView>,
    at: Instant,
}

/// A pod's name, phase, readiness, deletion and agent stopped.
type PodPrint = (String, super::plan::Phase, bool, bool, bool);

/// What of a node's pods, changed, calls for asking its agent again.
fn pods_print(pods: &[&PodView]) -> Vec<PodPrint> {
    let mut print: Vec<_> =
        pods.iter().map(|p| (p.name.clone(), p.phase, p.ready, p.deleting, p.stopped)).collect();
    print.sort_by(|a, b| a.0.cmp(&b.0));
    print
}

impl AgentAnswers {
    /// The answer to reuse for `node`, if it may be: the node's pods are as
    /// they were, it has one pod, its agent is active and every session it
    /// wants is up (`want`), and the answer is recent.
    pub fn reuse(
        &self,
        gateway: &str,
        node: &str,
        pods: &[&PodView],
        want: u32,
        now: Instant,
    ) -> Option<Option<AgentView>> {
        let seen = self.seen.lock().expect("answers lock");
        let answer = seen.get(&(gateway.to_string(), node.to_string()))?;
        let settled = pods.len() == 1
            && answer.view.as_ref().is_some_and(|v| {
                v.active
                    && v.established >= want
                    && v.all_advertised
                    && v.pod.as_deref() == Some(pods[0].name.as_str())
            });
        let fresh = now.duration_since(answer.at) < AGENT_REFRESH;
        (settled && fresh && answer.pods == pods_print(pods)).then(|| answer.view.clone())
    }

    pub fn record(
        &self,
        gateway: &str,
        node: &str,
        pods: &[&PodView],
        view: Option<AgentView>,
        now: Instant,
    ) {
        let answer = Answer { pods: pods_print(pods), view, at: now };
        self.seen.lock().expect("answers lock").insert((gateway.into(), node.into()), answer);
    }

    /// Forgets a gateway's nodes that no longer have its pods.
    pub fn keep_only(&self, gateway: &str, nodes: &[&str]) {
        self.seen
            .lock()
            .expect("answers lock")
            .retain(|(g, n), _| g != gateway || nodes.contains(&n.as_str()));
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
