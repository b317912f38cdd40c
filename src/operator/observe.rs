//! Observing a gateway's world for the planner: nodes and the gateway's
//! pods (from the watch caches), missing Secrets (API server, only when an
//! agent may start), and each node's active agent (`GET /status`
//! on the node's admin port — the handoff passes that listener on, so it
//! always reaches whichever agent is active).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use nonstop_agent::speaker::status::{AgentStatus, HandoffResult, HandoffRole, Role};

use super::cache::AgentAnswers;
use super::coexist;
use super::nodes::{Fit, fit};
use super::plan::{AgentView, NodeView, Observed, Phase, PodView};
use super::render::{self, GATEWAY_LABEL, NODE_LABEL, REVISION_LABEL};
use crate::api::{BgpGateway, CheckState, PeerState};

/// How long a node's agent has to answer; a slow one counts as silent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Agents asked at the same time.
const AGENTS_AT_ONCE: usize = 64;

/// The watch caches the reconciler reads instead of listing.
#[derive(Debug, Clone)]
pub struct Caches {
    pub nodes: Store<Node>,
    /// Pods with the gateway label, in every namespace.
    pub pods: Store<Pod>,
    /// Every gateway, to tell which of two that want one node's port keeps it.
    pub gateways: Store<BgpGateway>,
}

impl Caches {
    /// Whether the caches hold a full listing, waiting up to `limit` for
    /// it. Until then an empty cache means "not read yet", not "no nodes"
    /// or "no pods": a new leader planning from it would decommission every
    /// node it cannot see yet.
    pub async fn synced(&self, limit: Duration) -> bool {
        let both = async {
            self.nodes.wait_until_ready().await.is_ok()
                && self.pods.wait_until_ready().await.is_ok()
                && self.gateways.wait_until_ready().await.is_ok()
        };
        tokio::time::timeout(limit, both).await.unwrap_or(false)
    }
}

/// A gateway's nodes and pods as the watch caches hold them.
#[derive(Debug, Clone, Default)]
pub struct Cached {
    pub nodes: Vec<NodeView>,
    /// Each node's InternalIP, where its agent's admin port is.
    pub addresses: BTreeMap<String, IpAddr>,
    pub pods: Vec<PodView>,
    /// Nodes where another gateway keeps a port this one needs, with why.
    pub conflicts: BTreeMap<String, String>,
}

impl Cached {
    pub fn of(caches: &Caches, gw: &BgpGateway) -> Cached {
        let namespace = gw.namespace().unwrap_or_default();
        let label = render::label_value(&gw.name_any());
        let cached_nodes = caches.nodes.state();
        let mut pods: Vec<PodView> = caches
            .pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|p| p.labels().get(GATEWAY_LABEL) == Some(&label))
            .filter_map(|p| pod_view(p))
            .collect();
        // A watch cache has no order; the planner walks nodes by name (the
        // order a LIST gives, and the order a rollout takes the nodes in).
        let named: Vec<&str> = super::per_node::named_annotations(&gw.spec).collect();
        let mut nodes: Vec<NodeView> = cached_nodes.iter().map(|n| node_view(n, &named)).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        let conflicts = conflicts(caches, gw, &nodes, &pods);
        Cached {
            nodes,
            addresses: cached_nodes
                .iter()
                .filter_map(|n| Some((n.name_any(), internal_ip(n)?)))
                .collect(),
            pods,
            conflicts,
        }
    }

    /// Whether this reconcile may start an agent: a node the gateway
    /// serves has no live pod at `revision` yet. Only then are the
    /// ConfigMap and the Secrets a new agent needs looked at, so a
    /// gateway at rest costs no API request.
    pub fn might_start(&self, gw: &BgpGateway, revision: &str) -> bool {
        self.nodes.iter().filter(|n| fit(gw, n) == Fit::Serve).any(|n| {
            !self.pods.iter().any(|p| p.node == n.name && p.revision == revision && !p.deleting)
        })
    }
}

/// The nodes `gw` would start an agent on where another gateway keeps a
/// port it needs ([`coexist::yields`]).
fn conflicts(
    caches: &Caches,
    gw: &BgpGateway,
    nodes: &[NodeView],
    pods: &[PodView],
) -> BTreeMap<String, String> {
    let gateways = caches.gateways.state();
    if gateways.len() < 2 {
        return BTreeMap::new();
    }
    let all_pods = caches.pods.state();
    // Which gateways have a live agent pod on which node.
    let present: std::collections::HashSet<(String, String, String)> = all_pods
        .iter()
        .filter_map(|p| {
            let view = pod_view(p).filter(|v| !v.deleting && !v.ended())?;
            let gateway = p.labels().get(GATEWAY_LABEL)?.clone();
            Some((p.namespace().unwrap_or_default(), gateway, render::label_value(&view.node)))
        })
        .collect();
    let ours = |node: &str| pods.iter().any(|p| p.node == node && !p.deleting && !p.ended());
    nodes
        .iter()
        .filter(|n| matches!(fit(gw, n), Fit::Serve | Fit::Cordoned) && !ours(&n.name))
        .filter_map(|n| {
            let others: Vec<coexist::Neighbour<'_>> = gateways
                .iter()
                .map(|o| coexist::Neighbour {
                    gateway: o.as_ref(),
                    present: present.contains(&(
                        o.namespace().unwrap_or_default(),
                        render::label_value(&o.name_any()),
                        render::label_value(&n.name),
                    )),
                })
                .collect();
            Some((n.name.clone(), coexist::yields(gw, n, &others, false)?))
        })
        .collect()
}

/// Everything the planner needs: the cached nodes and pods, the missing
/// Secrets (only when an agent may start), and each node's active agent.
pub async fn observe(
    client: &Client,
    gw: &BgpGateway,
    answers: &AgentAnswers,
    cached: Cached,
    revision: &str,
    finalizer: &str,
) -> kube::Result<Observed> {
    let namespace = gw.namespace().unwrap_or_default();
    let mut missing_secrets = Vec::new();
    if cached.might_start(gw, revision) {
        let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
        for secret in render::secret_names(&gw.spec) {
            // Metadata only: the password never reaches the operator (the
            // API server sends a PartialObjectMetadata, no data).
            if secrets.get_metadata_opt(&secret).await?.is_none() {
                missing_secrets.push(secret);
            }
        }
    }
    let Cached { nodes, addresses, pods, conflicts } = cached;
    let agents = ask_agents(gw, &addresses, &nodes, &pods, answers).await;
    Ok(Observed {
        nodes,
        pods,
        agents,
        missing_secrets,
        conflicts,
        has_finalizer: gw.finalizers().iter().any(|f| f == finalizer),
    })
}

/// Each node's active agent, from its admin port: asked again where the
/// node's pods changed or its agent is not settled, reused elsewhere for a
/// while (see [`AgentAnswers`]); a bounded number asked at a time (a
/// thousand nodes must not take a thousand sockets at once).
async fn ask_agents(
    gw: &BgpGateway,
    addresses: &BTreeMap<String, IpAddr>,
    nodes: &[NodeView],
    pods: &[PodView],
    answers: &AgentAnswers,
) -> BTreeMap<String, AgentView> {
    let key = format!("{}/{}", gw.namespace().unwrap_or_default(), gw.name_any());
    let now = Instant::now();
    let mut agents = BTreeMap::new();
    let mut asked = Vec::new();
    let mut with_pods = Vec::new();
    for (node, ip) in addresses {
        let mine: Vec<&PodView> = pods.iter().filter(|p| &p.node == node).collect();
        if mine.is_empty() {
            continue;
        }
        with_pods.push(node.as_str());
        let want = nodes
            .iter()
            .find(|n| &n.name == node)
            .map_or(0, |n| super::per_node::sessions_on(&gw.spec, n));
        match answers.reuse(&key, node, &mine, want, now) {
            Some(view) => {
                agents.extend(view.map(|v| (node.clone(), v)));
            }
            None => asked.push((node.clone(), *ip, mine)),
        }
    }
    answers.keep_only(&key, &with_pods);
    let port = gw.spec.admin_port;
    let ips: Vec<IpAddr> = asked.iter().map(|(_, ip, _)| *ip).collect();
    let got: Vec<_> = stream::iter(ips)
        .map(move |ip| agent_status(ip, port))
        .buffered(AGENTS_AT_ONCE)
        .collect()
        .await;
    for ((node, _, mine), answer) in asked.into_iter().zip(got) {
        let view = answer.ok().map(|s| agent_view(&s));
        answers.record(&key, &node, &mine, view.clone(), now);
        agents.extend(view.map(|v| (node, v)));
    }
    agents
}

pub(crate) fn internal_ip(node: &Node) -> Option<IpAddr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses.iter().find(|a| a.type_ == "InternalIP")?.address.parse().ok()
}

/// A node as the planner sees it for a gateway whose peers take their
/// addresses from the node annotations `named`.
fn node_view(node: &Node, named: &[&str]) -> NodeView {
    NodeView {
        name: node.name_any(),
        labels: node.labels().clone(),
        annotations: node
            .annotations()
            .iter()
            .filter(|(k, _)| k.starts_with("nonstop.dev/") || named.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        taints: node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default(),
        unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        ready: node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
    }
}

/// A pod of the gateway; None for one without the labels the operator sets.
pub fn pod_view(pod: &Pod) -> Option<PodView> {
    let labels = pod.labels();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .or_else(|| pod.annotations().get(NODE_LABEL).cloned())
        .or_else(|| labels.get(NODE_LABEL).cloned())?;
    let status = pod.status.clone().unwrap_or_default();
    let phase = match status.phase.as_deref() {
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        _ => Phase::Pending,
    };
    let ready =
        status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    Some(PodView {
        name: pod.name_any(),
        uid: pod.metadata.uid.clone(),
        node,
        revision: labels.get(REVISION_LABEL).cloned()?,
        created: pod.metadata.creation_timestamp.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        phase,
        ready,
        failure: failure(pod),
        stopped: agent_stopped(&status),
        node_labels: pod.annotations().get(super::per_node::ANNOTATION).cloned(),
        node_addresses: pod.annotations().get(super::per_node::ADDRESSES).cloned(),
    })
}

/// Whether the kubelet reports the agent container stopped: terminated
/// now, or waiting with a terminated run behind it. A container that
/// never ran is not stopped: it may yet start.
fn agent_stopped(status: &k8s_openapi::api::core::v1::PodStatus) -> bool {
    let Some(agent) = status.container_statuses.iter().flatten().find(|c| c.name == render::AGENT)
    else {
        return false;
    };
    let state = agent.state.as_ref();
    let terminated = state.is_some_and(|s| s.terminated.is_some());
    let waiting = state.is_some_and(|s| s.waiting.is_some());
    let ran = agent.last_state.as_ref().is_some_and(|s| s.terminated.is_some());
    terminated || (waiting && ran)
}

/// Why the agent container failed, in its own words where it left some.
fn failure(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let agent = statuses.iter().find(|c| c.name == render::AGENT)?;
    let said = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated| {
        let words = t.message.as_deref().map(str::trim).filter(|m| !m.is_empty());
        let last = words.and_then(|m| {
            m.lines().rev().find(|l| l.contains("error")).or_else(|| m.lines().last())
        });
        format!(
            "agent exited with code {}{}",
            t.exit_code,
            last.map(|l| format!(": {l}")).unwrap_or_default()
        )
    };
    let state = agent.state.as_ref();
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0) {
        return Some(said(t));
    }
    if let Some(t) =
        agent.last_state.as_ref().and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0)
    {
        return Some(said(t));
    }
    let waiting = state.and_then(|s| s.waiting.as_ref())?;
    let reason = waiting.reason.as_deref().unwrap_or("");
    matches!(
        reason,
        "ErrImagePull" | "ImagePullBackOff" | "CreateContainerConfigError" | "InvalidImageName"
    )
    .then(|| format!("{reason}: {}", waiting.message.as_deref().unwrap_or("")))
}

pub fn agent_view(status: &AgentStatus) -> AgentView {
    let up: Vec<_> = status
        .peers
        .iter()
        .filter(|p| p.state == nonstop_agent::session::State::Established)
        .collect();
    AgentView {
        pod: status.pod.clone(),
        version: status.version.clone(),
        active: status.role == Role::Active,
        established: up.len() as u32,
        advertised: up.iter().map(|p| p.routes_advertised as u64).sum(),
        all_advertised: up
            .iter()
            .all(|p| p.routes_advertised + p.routes_skipped.len() >= status.routes_announced),
        handoff_pause_ms: status
            .last_handoff
            .as_ref()
            .filter(|h| h.role == HandoffRole::Successor && h.result == HandoffResult::Completed)
            .and_then(|h| h.pause_ms),
        handoff_at_ms: status
            .last_handoff
            .as_ref()
            .filter(|h| h.role == HandoffRole::Successor && h.result == HandoffResult::Completed)
            .map(|h| h.at_ms),
        peers: peer_states(status),
        checks_failing: failing_checks(status),
        not_run: status.peers_not_run.first().map(|why| why.chars().take(200).collect()),
    }
}

/// The agent's checked announcements not announced as configured, at most
/// [`PEERS_PER_NODE`], by prefix; since when in whole seconds.
fn failing_checks(status: &AgentStatus) -> Vec<CheckState> {
    status
        .checks
        .iter()
        .filter(|c| c.verdict != "up")
        .take(PEERS_PER_NODE)
        .map(|c| CheckState {
            prefix: c.prefix.clone(),
            verdict: c.verdict.clone(),
            since: Timestamp::from_second((c.since_ms / 1000) as i64)
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            detail: cut(&c.detail, LAST_ERROR_CHARS),
        })
        .collect()
}

/// The agent's sessions, those down first (then by address), at most
/// [`PEERS_PER_NODE`]; a session's time since Established in whole seconds
/// (so that the status is not rewritten every second), the last error of
/// one that is down cut to [`LAST_ERROR_CHARS`].
fn peer_states(status: &AgentStatus) -> Vec<PeerState> {
    use nonstop_agent::session::State;
    let mut peers: Vec<_> = status.peers.iter().collect();
    peers.sort_by_key(|p| (p.state == State::Established, p.address.parse::<IpAddr>().ok()));
    peers
        .iter()
        .take(PEERS_PER_NODE)
        .map(|p| {
            let up = p.state == State::Established;
            let since = p.established_since_ms.filter(|_| up).and_then(|ms| {
                Timestamp::from_second((ms / 1000) as i64)
                    .ok()
                    .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
            });
            PeerState {
                peer: p.address.clone(),
                state: p.state.as_str().into(),
                established_since: since,
                routes_received: p.routes_received as u64,
                routes_advertised: p.routes_advertised as u64,
                last_error: p
                    .last_error
                    .as_deref()
                    .filter(|_| !up)
                    .map(|e| cut(e, LAST_ERROR_CHARS)),
                last_reset: p
                    .last_reset
                    .as_deref()
                    .filter(|r| !up && Some(*r) != p.last_error.as_deref())
                    .map(|r| cut(r, LAST_ERROR_CHARS)),
            }
        })
        .collect()
}

/// Sessions listed per node in the gateway's status.
pub const PEERS_PER_NODE: usize = 8;
/// Characters of a session's last error kept in the gateway's status.
pub const LAST_ERROR_CHARS: usize = 160;

/// `text`, or its first `max` characters and an ellipsis.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// `GET /status` from the agent on `ip:port`.
pub async fn agent_status(ip: IpAddr, port: u16) -> Result<AgentStatus, String> {
    let body = nonstop_agent::http::get_tcp((ip, port).into(), "/status", AGENT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("status does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use nonstop_agent::session::State;
    use nonstop_agent::speaker::status::PeerStatus;

    use super::*;

    fn agent(peers: &[(&str, State, Option<&str>)]) -> AgentStatus {
        AgentStatus {
            version: "0.1.0".into(),
            pid: 1,
            pod: None,
            asn: 65001,
            router_id: "10.99.1.2".into(),
            listen: "0.0.0.0:179".into(),
            uptime_seconds: 1,
            routes_announced: 1,
            role: Role::Active,
            successor: None,
            last_handoff: None,
            bmp: vec![],
            checks: vec![],
            published: None,
            peers_not_run: vec![],
            peers: peers
                .iter()
                .map(|(address, state, error)| PeerStatus {
                    address: (*address).into(),
                    state: *state,
                    last_error: error.map(String::from),
                    last_reset: Some("refused the OPEN: peer says AS 65000".into()),
                    ..PeerStatus::default()
                })
                .collect(),
        }
    }

    #[test]
    fn the_sessions_are_listed_down_first_bounded_and_cut() {
        use State::*;
        let long = "x".repeat(500);
        // (case, the agent's status, the sessions listed: peer, state, error)
        type Case<'a> = (&'a str, AgentStatus, Vec<(&'a str, &'a str, Option<String>)>);
        let nine: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}")).collect();
        let mut many: Vec<(&str, State, Option<&str>)> =
            nine.iter().map(|a| (a.as_str(), Connect, None)).collect();
        many[0].2 = Some(&long);
        let cases: Vec<Case> = vec![
            (
                "up, its old error not shown",
                agent(&[("10.0.0.1", Established, Some("old error"))]),
                vec![("10.0.0.1", "Established", None)],
            ),
            (
                "down first, by address, not by text",
                agent(&[
                    ("10.0.0.10", Active, None),
                    ("10.0.0.9", Idle, Some("hold timer expired")),
                    ("10.0.0.1", Established, None),
                ]),
                vec![
                    ("10.0.0.9", "Idle", Some("hold timer expired".into())),
                    ("10.0.0.10", "Active", None),
                    ("10.0.0.1", "Established", None),
                ],
            ),
            (
                "at most eight, errors cut",
                agent(&many),
                std::iter::once((
                    "10.0.0.1",
                    "Connect",
                    Some(format!("{}…", "x".repeat(LAST_ERROR_CHARS))),
                ))
                .chain(nine[1..8].iter().map(|a| (a.as_str(), "Connect", None)))
                .collect(),
            ),
        ];
        for (case, status, want) in cases {
            let got: Vec<_> = agent_view(&status)
                .peers
                .into_iter()
                .map(|d| {
                    // The reset shows for a session down, where it differs
                    // from the last error.
                    let reset =
                        (!d.is_established()).then_some("refused the OPEN: peer says AS 65000");
                    assert_eq!(d.last_reset.as_deref(), reset, "{case}");
                    (d.peer, d.state, d.last_error)
                })
                .collect();
            let want: Vec<_> =
                want.into_iter().map(|(p, s, e)| (p.to_string(), s.to_string(), e)).collect();
            assert_eq!(got, want, "{case}");
        }
    }
    #[test]
    fn a_pod_being_deleted_has_ended_once_its_agent_has_stopped() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
            ContainerStatus, PodStatus,
        };
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let exited = |code: i32, reason: &str| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // (case, phase, deleting, state, last state, ended)
        type Case<'a> = (&'a str, &'a str, bool, ContainerState, Option<ContainerState>, bool);
        let cases: Vec<Case> = vec![
            ("serving", "Running", false, running.clone(), None, false),
            ("being deleted, still draining", "Running", true, running.clone(), None, false),
            ("terminal phase", "Succeeded", true, exited(0, "Completed"), None, true),
            ("exited, phase not updated yet", "Running", true, exited(0, "Completed"), None, true),
            // What a 1.20 kubelet reports for a pod deleted while its
            // container exits, until the grace period runs out.
            (
                "exited, the kubelet lost the container",
                "Running",
                true,
                waiting.clone(),
                Some(exited(137, "ContainerStatusUnknown")),
                true,
            ),
            ("being deleted before it ever ran", "Pending", true, waiting.clone(), None, false),
            // Not being deleted: restartPolicy OnFailure starts it again.
            (
                "restarting after a crash",
                "Running",
                false,
                waiting,
                Some(exited(2, "Error")),
                false,
            ),
        ];
        for (case, phase, deleting, state, last, ended) in cases {
            let mut pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "edge-node-1-r1",
                    "labels": {GATEWAY_LABEL: "edge", REVISION_LABEL: "r1", NODE_LABEL: "node-1"},
                },
            }))
            .unwrap();
            if deleting {
                pod.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
            }
            pod.status = Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: render::AGENT.into(),
                    state: Some(state),
                    last_state: last,
                    ..Default::default()
                }]),
                ..Default::default()
            });
            let view = pod_view(&pod).expect("a gateway pod");
            assert_eq!(view.ended(), ended, "{case}");
        }
    }
    #[test]
    fn only_checks_not_announced_as_configured_are_listed_bounded_and_cut() {
        use nonstop_agent::speaker::status::CheckStatus;
        let check = |prefix: String, verdict: &str, detail: String| CheckStatus {
            prefix,
            verdict: verdict.into(),
            since_ms: 1_795_000_000_999,
            detail,
        };
        let mut status = agent(&[]);
        status.checks = vec![
            check("192.0.2.1/32".into(), "up", "HTTP 200".into()),
            check("192.0.2.2/32".into(), "draining", "HTTP 503, not 200".into()),
            check("192.0.2.3/32".into(), "unknown", String::new()),
        ];
        status
            .checks
            .extend((10..20).map(|i| check(format!("192.0.2.{i}/32"), "down", "x".repeat(500))));
        let listed = agent_view(&status).checks_failing;
        let got: Vec<(&str, &str)> =
            listed.iter().map(|c| (c.prefix.as_str(), c.verdict.as_str())).collect();
        assert_eq!(
            got[..3],
            [("192.0.2.2/32", "draining"), ("192.0.2.3/32", "unknown"), ("192.0.2.10/32", "down")]
        );
        assert_eq!(listed.len(), PEERS_PER_NODE, "at most eight per node");
        assert_eq!(listed[2].detail, format!("{}…", "x".repeat(LAST_ERROR_CHARS)));
        assert_eq!(
            listed[0].since.as_ref().map(|t| t.0.as_second()),
            Some(1_795_000_000),
            "whole seconds"
        );
    }
}
