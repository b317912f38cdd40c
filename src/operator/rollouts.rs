//! Keeps each rollout's `BgpGatewayRollout` (see [`crate::api::history`]):
//! created when the rollout starts, written again each time one of its
//! nodes finishes an upgrade or the rollout ends, and the oldest beyond
//! `spec.upgrade.historyLimit` deleted when a new one starts. Requests
//! only when something changed: one GET and one write per node finished.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tracing::info;

use super::render::{GATEWAY_LABEL, owner};
use crate::api::history::{BgpGatewayRollout, NodeUpgrade, Rollout, RolloutRecord};
use crate::api::{BgpGateway, BgpGatewayStatus};

/// The name of a gateway's rollout record.
pub fn name(gateway: &str, number: u32) -> String {
    format!("{gateway}-{number}")
}

/// Writes what changed between the status `before` and `after` to the
/// rollout records.
pub async fn record(
    client: &Client,
    gw: &BgpGateway,
    after: &BgpGatewayStatus,
    superseded: Option<&Rollout>,
) -> Result<(), kube::Error> {
    let api: Api<BgpGatewayRollout> =
        Api::namespaced(client.clone(), &gw.namespace().unwrap_or_default());
    let before = gw.status.clone().unwrap_or_default();
    if let Some(old) = superseded {
        write(&api, gw, old, &upgrades(&before, old)).await?;
    }
    let Some(current) = &after.last_rollout else { return Ok(()) };
    let finished = upgrades(after, current);
    let started = before.last_rollout.as_ref().is_none_or(|b| b.number != current.number);
    let changed =
        before.last_rollout.as_ref() != Some(current) || finished != upgrades(&before, current);
    if started || changed {
        write(&api, gw, current, &finished).await?;
    }
    if started {
        prune(&api, gw, current.number).await?;
    }
    Ok(())
}

/// The nodes' last upgrades that belong to `rollout`: since it started.
fn upgrades(status: &BgpGatewayStatus, rollout: &Rollout) -> Vec<NodeUpgrade> {
    let mut upgrades: Vec<NodeUpgrade> = status
        .nodes
        .iter()
        .filter_map(|n| n.last_upgrade.as_ref().map(|u| NodeUpgrade::of(&n.node, u)))
        .filter(|u| u.upgrade.time.0 >= rollout.started.0)
        .collect();
    upgrades.sort_by_key(|u| u.upgrade.time.0);
    upgrades
}

/// Adds `upgrades` to the record's nodes (each attempt once) and sets its
/// summary. A record left by an earlier gateway of the same name (deleted
/// and applied again) is taken over whole.
async fn write(
    api: &Api<BgpGatewayRollout>,
    gw: &BgpGateway,
    rollout: &Rollout,
    upgrades: &[NodeUpgrade],
) -> Result<(), kube::Error> {
    let name = name(&gw.name_any(), rollout.number);
    let existing = api.get_opt(&name).await?;
    let uid = gw.uid();
    let ours =
        |r: &BgpGatewayRollout| r.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref());
    let known = existing.as_ref().filter(|r| ours(r));
    let mut nodes = known.map(|r| r.spec.nodes.clone()).unwrap_or_default();
    merge(&mut nodes, upgrades);
    let spec = RolloutRecord { gateway: gw.name_any(), rollout: rollout.clone(), nodes };
    let unchanged = known.is_some_and(|r| r.spec == spec);
    match existing {
        Some(_) if unchanged => {}
        Some(mut found) => {
            found.spec = spec;
            found.metadata.owner_references = Some(vec![owner(gw)]);
            api.replace(&name, &PostParams::default(), &found).await?;
        }
        None => {
            let mut labels = std::collections::BTreeMap::new();
            labels.insert(GATEWAY_LABEL.to_string(), gw.name_any());
            let object = BgpGatewayRollout {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(labels),
                    owner_references: Some(vec![owner(gw)]),
                    ..ObjectMeta::default()
                },
                spec,
            };
            api.create(&PostParams::default(), &object).await?;
        }
    }
    Ok(())
}

/// Each node attempt once (by node and time), in the order they finished.
pub fn merge(nodes: &mut Vec<NodeUpgrade>, upgrades: &[NodeUpgrade]) {
    for upgrade in upgrades {
        match nodes
            .iter_mut()
            .find(|n| n.node == upgrade.node && n.upgrade.time == upgrade.upgrade.time)
        {
            Some(known) => *known = upgrade.clone(),
            None => nodes.push(upgrade.clone()),
        }
    }
    nodes.sort_by_key(|n| n.upgrade.time.0);
}

/// Deletes the gateway's records older than its last `historyLimit`.
async fn prune(
    api: &Api<BgpGatewayRollout>,
    gw: &BgpGateway,
    newest: u32,
) -> Result<(), kube::Error> {
    let keep = gw.spec.upgrade.history_limit.max(1);
    let selector = format!("{GATEWAY_LABEL}={}", gw.name_any());
    let records = api.list(&ListParams::default().labels(&selector)).await?;
    for record in records.items.iter().filter(|r| r.spec.rollout.number + keep <= newest) {
        info!(gateway = %gw.name_any(), record = %record.name_any(), "deleting a rollout record beyond historyLimit {keep}");
        match api.delete(&record.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
