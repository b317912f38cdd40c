//! `nonstop-operator uninstall`: takes every BgpGateway down gracefully
//! before the operator goes (the Helm chart runs it as a pre-delete hook).
//! Each gateway is deleted and the running operator decommissions it —
//! GRACEFUL_SHUTDOWN, drain, withdraw — then releases its finalizer; this
//! waits until none is left, printing what it still waits for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, Config, ResourceExt};

use super::render::GATEWAY_LABEL;
use crate::api::BgpGateway;

/// Deletes every gateway in the cluster and waits, at most `timeout`, until
/// all are gone. Progress goes to stdout (the hook Job's log).
pub async fn run(timeout: Duration) -> Result<(), String> {
    let config = Config::infer().await.map_err(|e| format!("no Kubernetes config: {e}"))?;
    let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    let gateways = Api::<BgpGateway>::all(client.clone());
    let pods = Api::<Pod>::all(client.clone());
    let list = |api: Api<BgpGateway>| async move {
        api.list(&ListParams::default()).await.map_err(|e| format!("listing BgpGateways: {e}"))
    };

    let found = list(gateways.clone()).await?;
    if found.items.is_empty() {
        println!("no BgpGateway in the cluster: nothing to take down");
        return Ok(());
    }
    for gw in &found.items {
        let namespace = gw.namespace().unwrap_or_default();
        let name = gw.name_any();
        println!("deleting BgpGateway {namespace}/{name}: its nodes drain, then withdraw");
        let api = Api::<BgpGateway>::namespaced(client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("deleting BgpGateway {namespace}/{name}: {e}")),
        }
    }

    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    loop {
        let left = list(gateways.clone()).await?;
        if left.items.is_empty() {
            println!("every BgpGateway is gone: routes withdrawn, agent pods removed");
            return Ok(());
        }
        let agents = pods
            .list(&ListParams::default().labels(GATEWAY_LABEL))
            .await
            .map_err(|e| format!("listing agent pods: {e}"))?;
        let mut per_gateway: BTreeMap<(String, String), usize> = BTreeMap::new();
        for pod in &agents.items {
            let gateway = (pod.annotations().get(GATEWAY_LABEL))
                .or_else(|| pod.labels().get(GATEWAY_LABEL))
                .cloned()
                .unwrap_or_default();
            *per_gateway.entry((pod.namespace().unwrap_or_default(), gateway)).or_default() += 1;
        }
        let waiting: Vec<String> = left
            .items
            .iter()
            .map(|gw| {
                let key = (gw.namespace().unwrap_or_default(), gw.name_any());
                let pods = per_gateway.get(&key).copied().unwrap_or(0);
                format!("{}/{} ({pods} agent pod(s) left)", key.0, key.1)
            })
            .collect();
        let now = format!("waiting for {}", waiting.join(", "));
        if now != said {
            println!("{now}");
            said = now;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{said} after {} s; is the operator running? (`kubectl -n <ns> describe bgpgw`)",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
