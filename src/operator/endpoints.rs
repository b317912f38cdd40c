//! Which nodes hold a ready endpoint of each Service: what a gateway needs
//! for a Service with `externalTrafficPolicy: Local`, whose address only
//! those nodes announce. Read from EndpointSlices of either version the API
//! server serves (`discovery.k8s.io/v1` from 1.21, `v1beta1` before, where
//! an endpoint's node is in its `topology`), as JSON: the shape both share.

use std::collections::{BTreeSet, HashMap};

use kube::api::DynamicObject;

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// (namespace, Service) → the nodes with a ready endpoint of it.
pub type ReadyNodes = HashMap<(String, String), BTreeSet<String>>;

/// The ready nodes of every Service named by `slices` (EndpointSlices of
/// either version).
pub fn ready_nodes<'a>(slices: impl IntoIterator<Item = &'a DynamicObject>) -> ReadyNodes {
    let mut ready = ReadyNodes::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let nodes = ready.entry((namespace, service.clone())).or_default();
        for endpoint in slice.data["endpoints"].as_array().into_iter().flatten() {
            // Absent means ready (the API's own reading of an unknown state).
            if endpoint["conditions"]["ready"] == false {
                continue;
            }
            let node = endpoint["nodeName"]
                .as_str()
                .or_else(|| endpoint["topology"]["kubernetes.io/hostname"].as_str());
            if let Some(node) = node {
                nodes.insert(node.to_string());
            }
        }
    }
    ready
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn object(json: Value) -> DynamicObject {
        serde_json::from_value(json).expect("an EndpointSlice")
    }

    fn slice(service: &str, endpoints: Value) -> DynamicObject {
        object(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"namespace": "shop", "labels": {SERVICE_NAME_LABEL: service}},
            "endpoints": endpoints,
        }))
    }

    #[test]
    fn each_service_has_the_nodes_of_its_ready_endpoints() {
        let slices = [
            // v1: nodeName.
            slice(
                "web",
                json!([
                    {"addresses": ["10.1.1.5"], "conditions": {"ready": true}, "nodeName": "node-1"},
                    {"addresses": ["10.1.2.5"], "conditions": {"ready": false}, "nodeName": "node-2"},
                    {"addresses": ["10.1.3.5"], "conditions": {}, "nodeName": "node-3"},
                ]),
            ),
            // A second slice of the same Service: v1beta1, the node in topology.
            slice(
                "web",
                json!([
                    {"addresses": ["10.1.4.5"], "conditions": {"ready": true},
                     "topology": {"kubernetes.io/hostname": "node-4"}},
                ]),
            ),
            // No endpoint at all: known, with no node.
            slice("idle", json!(null)),
            // Not a Service's slice: left out.
            object(json!({"metadata": {"namespace": "shop"}, "endpoints": []})),
        ];
        let ready = ready_nodes(&slices);
        let nodes = |service: &str| -> Vec<&str> {
            ready[&("shop".to_string(), service.to_string())].iter().map(String::as_str).collect()
        };
        assert_eq!(nodes("web"), ["node-1", "node-3", "node-4"]);
        assert!(nodes("idle").is_empty());
        assert_eq!(ready.len(), 2);
    }
}
