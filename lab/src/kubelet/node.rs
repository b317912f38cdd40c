//! The lab's nodes as the API sees them: a Node object per node namespace
//! (addresses, capacity, labels) kept Ready by a status heartbeat and a
//! Lease in `kube-node-lease`, as a kubelet does.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::network::{node_ip, node_name};

const MANAGER: &str = "lab-kubelet";

/// Creates node `i` (or takes it over) with its labels and addresses.
pub async fn register(client: &Client, i: usize) -> Result<(), kube::Error> {
    let name = node_name(i);
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nonstop.dev/lab-node": i.to_string(),
            },
        },
    });
    nodes.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&node)).await?;
    heartbeat(client, i).await
}

/// Node status (Ready, addresses, capacity) and the node's Lease, renewed.
pub async fn heartbeat(client: &Client, i: usize) -> Result<(), kube::Error> {
    let name = node_name(i);
    let now = Timestamp::now();
    let stamp = super::time(now);
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
    };
    // lastTransitionTime moves only when a condition changes.
    let previous = nodes.get_status(&name).await.ok();
    let since = |t: &str| {
        previous
            .as_ref()
            .and_then(|n| {
                n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t).cloned()
            })
            .filter(|c| c.status == if t == "Ready" { "True" } else { "False" })
            .and_then(|c| c.last_transition_time)
            .map(|t| super::time(t.0))
            .unwrap_or_else(|| stamp.clone())
    };
    let mut conditions = vec![
        ready("Ready", "True", "KubeletReady", "lab kubelet is posting ready status"),
        ready("MemoryPressure", "False", "KubeletHasSufficientMemory", "lab node"),
        ready("DiskPressure", "False", "KubeletHasNoDiskPressure", "lab node"),
        ready("PIDPressure", "False", "KubeletHasSufficientPID", "lab node"),
    ];
    for c in &mut conditions {
        let t = c["type"].as_str().unwrap_or_default().to_string();
        c["lastTransitionTime"] = json!(since(&t));
    }
    let capacity = json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"});
    let status = json!({
        "status": {
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": node_ip(i)},
                {"type": "Hostname", "address": name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("lab-{i}"), "systemUUID": format!("lab-{i}"), "bootID": "lab",
                "kernelVersion": "lab", "osImage": "nonstop lab node", "containerRuntimeVersion": "lab://1",
                "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": MicroTime(now)},
    });
    leases.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&lease)).await?;
    Ok(())
}
