//! The simulated part of the scale bench: Node objects with no machine
//! behind them, a stand-in kubelet that runs their pods on paper, and a
//! stand-in agent on each node's address that answers `GET /status` the
//! way a real agent answers after a completed handoff.
//!
//! What is real: the API server, etcd, the scheduler (it binds every pod),
//! the operator binary and every request it makes. What is not: no
//! container starts, no BGP session exists; the stand-in agent reports the
//! newest running pod on its node as the active speaker with its one
//! session Established, which is what the operator waits for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use nonstop_agent::http::hyper::StatusCode;
use nonstop_agent::http::{self, Answer, Handler, Limits};
use nonstop_agent::speaker::status::{
    AgentRef, AgentStatus, HandoffReport, HandoffResult, HandoffRole, PeerStatus, Role,
};
use serde_json::json;

/// Every simulated node carries this label (and is deleted by it).
pub const SIMULATED: &str = "nonstop.dev/scale-bench";
/// The rack label the bench's small gateways select on.
pub const RACK: &str = "nonstop.dev/scale-rack";
pub const ADMIN_PORT: u16 = 19179;
const PREFIX: &str = "scale-";

/// Node `i`'s name and address (127.1.0.0/16, on loopback).
pub fn node(i: usize) -> (String, Ipv4Addr) {
    (format!("{PREFIX}{i:04}"), Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Creates `count` Ready nodes, `racks` racks of them.
pub async fn create(client: &Client, count: usize, racks: usize) -> Result<(), String> {
    let api = Api::<Node>::all(client.clone());
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let (name, ip) = node(i);
                let labels = BTreeMap::from([
                    (SIMULATED.to_string(), "true".to_string()),
                    (RACK.to_string(), format!("rack-{}", i % racks)),
                    ("kubernetes.io/hostname".to_string(), name.clone()),
                ]);
                let object = Node {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(format!("creating node {name}: {e}")),
                }
                let status = json!({ "status": ready_status(ip) });
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .map_err(|e| format!("node {name} status: {e}"))?;
                // The API server taints a new node not-ready (admission);
                // the node lifecycle controller, paused for the bench,
                // would lift it once the node reports Ready.
                let untaint = json!({"spec": {"taints": null}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(untaint))
                    .await
                    .map_err(|e| format!("node {name} taints: {e}"))?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn ready_status(ip: Ipv4Addr) -> NodeStatus {
    let room = BTreeMap::from([
        ("cpu".to_string(), Quantity("64".into())),
        ("memory".to_string(), Quantity("256Gi".into())),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    NodeStatus {
        addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: ip.to_string() }]),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            last_heartbeat_time: Some(Time(Timestamp::now())),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        }]),
        capacity: Some(room.clone()),
        allocatable: Some(room),
        ..Default::default()
    }
}

/// Deletes every simulated node.
pub async fn delete_all(client: &Client) -> Result<(), String> {
    Api::<Node>::all(client.clone())
        .delete_collection(
            &DeleteParams::default(),
            &kube::api::ListParams::default().labels(SIMULATED),
        )
        .await
        .map_err(|e| format!("deleting the simulated nodes: {e}"))?;
    Ok(())
}

/// A gateway pod as the stand-in kubelet ran it.
#[derive(Debug, Clone)]
struct Running {
    name: String,
    gateway: String,
    created: Timestamp,
}

/// The pods running on each simulated node.
#[derive(Debug, Default, Clone)]
pub struct Kubelet {
    running: Arc<Mutex<HashMap<String, Vec<Running>>>>,
}

impl Kubelet {
    /// Watches the gateways' pods on simulated nodes and does what a
    /// kubelet would: a bound pod becomes Running and Ready; a deleted one
    /// is removed once "stopped" (the final delete with grace 0).
    pub async fn run(self, client: Client) {
        let pods = Api::<Pod>::all(client.clone());
        let config = watcher::Config::default().labels("nonstop.dev/gateway");
        let mut finished: HashSet<String> = HashSet::new();
        let mut events = std::pin::pin!(watcher(pods, config).default_backoff());
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(watcher::Event::Delete(p)) => {
                    self.stopped(&p);
                    continue;
                }
                _ => continue,
            };
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
            if !node.starts_with(PREFIX) {
                continue;
            }
            let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            let uid = pod.uid().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                self.stopped(&pod);
                if finished.insert(uid.clone()) {
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    tokio::spawn(async move { api.delete(&pod.name_any(), &params).await });
                }
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if phase.as_deref() != Some("Running") {
                tokio::spawn(start(api, pod.name_any()));
            } else {
                self.started(&node, &pod);
            }
        }
    }

    fn started(&self, node: &str, pod: &Pod) {
        let mut running = self.running.lock().unwrap();
        let on_node = running.entry(node.into()).or_default();
        if !on_node.iter().any(|r| r.name == pod.name_any()) {
            on_node.push(Running {
                name: pod.name_any(),
                gateway: pod.labels().get("nonstop.dev/gateway").cloned().unwrap_or_default(),
                created: pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or_else(Timestamp::now, |t| t.0),
            });
        }
    }

    fn stopped(&self, pod: &Pod) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if let Some(on_node) = self.running.lock().unwrap().get_mut(&node) {
            on_node.retain(|r| r.name != pod.name_any());
        }
    }

    /// The status the node's active agent would give: the newest running
    /// pod took over from the one before it.
    fn status(&self, node: &str) -> Option<AgentStatus> {
        let running = self.running.lock().unwrap();
        let newest = running.get(node)?.iter().max_by_key(|r| r.created)?.clone();
        let peer = PeerStatus {
            address: "10.255.0.1".into(),
            asn: 65000,
            state: nonstop_agent::session::State::Established,
            routes_advertised: 1,
            ..Default::default()
        };
        Some(AgentStatus {
            version: "scale".into(),
            pid: 1,
            pod: Some(newest.name.clone()),
            asn: 65001,
            router_id: "10.0.0.1".into(),
            listen: "0.0.0.0:179".into(),
            uptime_seconds: 1,
            routes_announced: 1,
            role: Role::Active,
            successor: None,
            bmp: Vec::new(),
            checks: Vec::new(),
            published: None,
            peers_not_run: vec![],
            last_handoff: Some(HandoffReport {
                role: HandoffRole::Successor,
                result: HandoffResult::Completed,
                reason: None,
                other: AgentRef { pid: 1, version: newest.gateway },
                sessions: 1,
                listeners: 1,
                state_bytes: 100,
                pause_ms: Some(1.0),
                at_ms: newest.created.as_millisecond() as u64,
            }),
            peers: vec![peer],
        })
    }

    /// A stand-in agent on each simulated node's address.
    pub async fn serve_agents(&self, count: usize) -> Result<(), String> {
        for i in 0..count {
            let (name, ip) = node(i);
            let addr = SocketAddr::new(IpAddr::V4(ip), ADMIN_PORT);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("stand-in agent on {addr}: {e}"))?;
            let kubelet = self.clone();
            let handler: Handler = Arc::new(move |call: http::Call| {
                match call.path.as_str() {
                    "/status" => match kubelet.status(&name) {
                        Some(status) => {
                            Answer::ok("application/json", serde_json::to_string(&status).unwrap())
                        }
                        None => Answer::text(StatusCode::SERVICE_UNAVAILABLE, "no agent runs\n"),
                    },
                    _ => Answer::text(StatusCode::NOT_FOUND, "not found\n"),
                }
                .now()
            });
            tokio::spawn(http::serve(listener, Limits::default(), handler));
        }
        Ok(())
    }
}

/// What a kubelet reports once the agent container runs and is ready.
async fn start(api: Api<Pod>, name: String) {
    let now = Timestamp::now();
    let status = json!({"status": {
        "phase": "Running",
        "startTime": now,
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [{
            "name": "agent", "ready": true, "restartCount": 0, "started": true,
            "image": "scale", "imageID": "scale",
            "state": {"running": {"startedAt": now}},
        }],
    }});
    let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await;
}
