//! The lab kubelet: one process for every lab node. It keeps the Node
//! objects Ready (`node`), watches the pods the scheduler binds to them and
//! runs each in a worker of its own (`pod`), whose containers are processes
//! in the node's network namespace with a mount namespace each
//! (`container`), probed as a kubelet would (`probe`). Images name binaries
//! through the lab's image table (`images`).
//!
//! It talks to the API with the lab's admin credentials; the pods get their
//! ServiceAccount's token, so RBAC applies to them as in a real cluster.

pub mod container;
pub mod images;
mod node;
mod pod;
mod probe;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::network::node_name;

/// An API time stamp (RFC 3339, seconds).
pub fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Where a container's output goes.
pub fn log_path(lab: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    lab.join("logs/pods").join(format!("{namespace}_{pod}_{container}.log"))
}

/// A client with the lab's admin kubeconfig.
pub async fn client(lab: &Path) -> Result<Client, String> {
    let path = crate::controlplane::kubeconfig(lab);
    let kc = kube::config::Kubeconfig::read_from(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Runs the kubelet for nodes 1..=`nodes` until killed.
pub async fn run(lab: PathBuf, nodes: usize) -> Result<(), String> {
    let client = client(&lab).await?;
    for i in 1..=nodes {
        node::register(&client, i)
            .await
            .map_err(|e| format!("registering {}: {e}", node_name(i)))?;
    }
    info!(nodes, "nodes registered");
    let hb = client.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            for i in 1..=nodes {
                if let Err(e) = node::heartbeat(&hb, i).await {
                    warn!(node = node_name(i), "heartbeat: {e}");
                }
            }
        }
    });

    let ours = |pod: &Pod| -> Option<usize> {
        let n = pod.spec.as_ref()?.node_name.as_deref()?;
        let i: usize = n.strip_prefix("node-")?.parse().ok()?;
        (1..=nodes).contains(&i).then_some(i)
    };
    let mut workers: HashMap<String, mpsc::Sender<pod::Update>> = HashMap::new();
    let mut seen_in_init: Vec<String> = Vec::new();
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!("pod watch: {e}");
                continue;
            }
        };
        let changed = |pod: Pod, workers: &mut HashMap<String, mpsc::Sender<pod::Update>>| {
            let Some(i) = ours(&pod) else { return };
            let Some(uid) = pod.metadata.uid.clone() else { return };
            let tx = workers.entry(uid).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(16);
                let w = pod::Worker::new(client.clone(), lab.clone(), pod.clone(), i);
                tokio::spawn(w.run(rx));
                tx
            });
            let _ = tx.try_send(pod::Update::Changed(Box::new(pod)));
        };
        match event {
            watcher::Event::Init => seen_in_init.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    seen_in_init.push(uid);
                }
                changed(pod, &mut workers);
            }
            watcher::Event::InitDone => {
                workers.retain(|uid, tx| {
                    let keep = seen_in_init.contains(uid);
                    if !keep {
                        let _ = tx.try_send(pod::Update::Gone);
                    }
                    keep
                });
            }
            watcher::Event::Apply(pod) => changed(pod, &mut workers),
            watcher::Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.remove(u)) {
                    let _ = tx.try_send(pod::Update::Gone);
                }
            }
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
    Err("the pod watch ended".into())
}
