//! Services of type LoadBalancer at run time: one watch each of Services,
//! BgpAddressPools and BgpGateways; after any change, one pass over all of
//! them that assigns addresses ([`super::ipam`]) and writes only what
//! changed: each Service's `status.loadBalancer.ingress` and its
//! `nonstop.dev/AddressAssigned` condition, an Event when either moves, and
//! each pool's status; then each gateway's agents get the addresses they
//! announce ([`super::publish`]).
//!
//! The pass is level-triggered: it reads the whole picture and makes the
//! cluster match it, so a missed event or a failed write is mended by the
//! next pass (within [`RETRY`] after a failure).

use std::collections::BTreeMap;
use std::future::ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::endpoints::{self, ReadyNodes};
use super::ipam::{self, Claim, Outcome, Pool, Usage};
use super::publish::{self, Publisher, Served};
use crate::api::pool::{ASSIGNED_CONDITION, AddressBlock, BgpAddressPool, BgpAddressPoolStatus};
use crate::api::{BgpGateway, LoadBalancerStatus};

/// After a failed write, the next pass comes this soon.
const RETRY: Duration = Duration::from_secs(5);
/// A pass even when nothing was heard, in case a watch missed something.
const RESYNC: Duration = Duration::from_secs(300);
/// EndpointSlices not listed after this long: said in the log, once.
const SLICES_LATE: Duration = Duration::from_secs(30);

/// Runs the passes until the process ends. `nodes` is the controller's
/// cache of the nodes (where each gateway's agents are).
pub async fn run(client: Client, recorder: Recorder, nodes: Store<Node>) {
    let wake = Arc::new(Notify::new());
    let services = follow(Api::<Service>::all(client.clone()), (), &wake);
    let pools = follow(Api::<BgpAddressPool>::all(client.clone()), (), &wake);
    let gateways = follow(Api::<BgpGateway>::all(client.clone()), (), &wake);
    let slices = follow_endpoint_slices(&client, &wake).await;
    for ready in [services.wait_until_ready().await.is_ok(), pools.wait_until_ready().await.is_ok()]
    {
        if !ready {
            warn!("load balancer: a watch ended before its first list");
            return;
        }
    }
    let _ = gateways.wait_until_ready().await;
    info!("load balancer: watching Services, EndpointSlices and BgpAddressPools");
    let mut pass = Pass { client, recorder, nodes, publisher: Publisher::default() };
    let started = Instant::now();
    let mut told = false;
    loop {
        // Until the EndpointSlices are listed, which nodes serve a `Local`
        // Service is not known; addresses are assigned all the same.
        let listed = slices.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok());
        if !listed && !told && started.elapsed() >= SLICES_LATE {
            warn!(
                "load balancer: EndpointSlices not listed after {} s: nothing is published \
                 to the gateways while a Service with externalTrafficPolicy: Local waits \
                 for them (can the operator list and watch discovery.k8s.io endpointslices?)",
                SLICES_LATE.as_secs()
            );
            told = true;
        }
        let ready = listed.then(|| endpoints::ready_nodes(slices.state().iter().map(|s| &**s)));
        let clean =
            pass.run(&services.state(), &pools.state(), &gateways.state(), ready.as_ref()).await;
        let wait = if clean && listed { RESYNC } else { RETRY };
        let _ = tokio::time::timeout(wait, wake.notified()).await;
    }
}

/// A cached watch of every object of `api`, which wakes the passes on
/// each change.
fn follow<K>(api: Api<K>, kind: K::DynamicType, wake: &Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let writer = reflector::store::Writer::new(kind);
    let store = writer.as_reader();
    let wake = wake.clone();
    let events = reflector(writer, watcher(api, Default::default()))
        .default_backoff()
        .touched_objects()
        .for_each(move |_| {
            wake.notify_one();
            ready(())
        });
    tokio::spawn(events);
    store
}

/// A cached watch of every EndpointSlice, in the version the API server
/// serves (`v1` from Kubernetes 1.21, `v1beta1` before), as JSON objects.
async fn follow_endpoint_slices(client: &Client, wake: &Arc<Notify>) -> Store<DynamicObject> {
    let served = client.list_api_group_resources("discovery.k8s.io/v1").await;
    let version = if served.is_ok_and(|r| r.resources.iter().any(|r| r.name == "endpointslices")) {
        "v1"
    } else {
        "v1beta1"
    };
    let gvk = GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "endpointslices");
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    info!(version, "load balancer: following EndpointSlices");
    follow(api, resource, wake)
}

struct Pass {
    client: Client,
    recorder: Recorder,
    nodes: Store<Node>,
    publisher: Publisher,
}

impl Pass {
    /// One pass; false if a write failed.
    async fn run(
        &mut self,
        services: &[Arc<Service>],
        pools: &[Arc<BgpAddressPool>],
        gateways: &[Arc<BgpGateway>],
        ready: Option<&ReadyNodes>,
    ) -> bool {
        let unclassed = gateways.iter().any(|g| g.spec.load_balancer.unclassed);
        let (usable, problems) = usable_pools(pools);
        let mut ours: Vec<&Arc<Service>> =
            services.iter().filter(|s| ipam::is_ours(s, unclassed)).collect();
        ours.sort_by_key(|s| (s.metadata.creation_timestamp.clone(), s.namespace(), s.name_any()));
        let claims: Vec<Result<Claim, ipam::Refusal>> = ours.iter().map(|s| Claim::of(s)).collect();
        let valid: Vec<Claim> = claims.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
        let mut assigned = ipam::assign(&usable, &valid).into_iter();
        let outcomes: Vec<Outcome> = claims
            .into_iter()
            .map(|c| match c {
                Ok(_) => assigned.next().expect("one outcome per valid claim"),
                Err(refusal) => Err(refusal),
            })
            .collect();

        let mut clean = true;
        let mut served = Vec::new();
        // A `Local` Service whose endpoints are not known yet: publishing
        // now would withdraw it from every node, so nothing is published.
        let mut undecided = false;
        for (service, outcome) in ours.iter().zip(&outcomes) {
            let (communities, problem) = publish::service_communities(service);
            clean &= self.write_service(service, Some(outcome), problem.as_deref()).await;
            let spec = service.spec.as_ref();
            let local = (spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"))
                .then(|| {
                    let at = (service.namespace().unwrap_or_default(), service.name_any());
                    undecided |= ready.is_none() && outcome.is_ok();
                    ready.and_then(|r| r.get(&at).cloned()).unwrap_or_default()
                });
            served.push(Served { outcome, communities, local });
        }
        for service in services.iter().filter(|s| !ipam::is_ours(s, unclassed)) {
            if our_condition(service).is_some() {
                clean &= self.write_service(service, None, None).await;
            }
        }
        if !undecided {
            let (published, statuses) =
                self.publisher.publish(&self.client, gateways, pools, &served, &self.nodes).await;
            clean &= published;
            for (gateway, status) in gateways.iter().zip(statuses) {
                clean &= self.write_gateway(gateway, status).await;
            }
        }
        let usage = ipam::usage(&usable, &outcomes);
        for pool in pools {
            let name = pool.name_any();
            let status = pool_status(
                usage.get(&name).copied().unwrap_or_default(),
                problems.get(&name),
                pool.metadata.generation,
                pool.status.as_ref(),
            );
            if pool.status.as_ref() != Some(&status) {
                let api = Api::<BgpAddressPool>::all(self.client.clone());
                let patch = Patch::Merge(json!({ "status": status }));
                if let Err(e) = api.patch_status(&name, &PatchParams::default(), &patch).await {
                    warn!("load balancer: cannot write the status of BgpAddressPool {name}: {e}");
                    clean = false;
                }
            }
        }
        clean
    }

    /// Writes a gateway's `status.loadBalancer` when it changed (None: the
    /// gateway announces no Services, and the field goes). False if the
    /// write failed.
    async fn write_gateway(
        &self,
        gateway: &BgpGateway,
        status: Option<LoadBalancerStatus>,
    ) -> bool {
        let now = gateway.status.as_ref().and_then(|s| s.load_balancer.as_ref());
        if now == status.as_ref() {
            return true;
        }
        let (namespace, name) = (gateway.namespace().unwrap_or_default(), gateway.name_any());
        let api = Api::<BgpGateway>::namespaced(self.client.clone(), &namespace);
        // A merge patch of this field alone: the reconciler writes the rest.
        let patch = Patch::Merge(json!({"status": {"loadBalancer": status}}));
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &patch).await {
            warn!("load balancer: cannot write the status of BgpGateway {namespace}/{name}: {e}");
            return false;
        }
        true
    }

    /// Makes one Service's status say `outcome` (None: the Service is no
    /// longer nonstop's, so its address and condition go), with `problem`
    /// (an annotation it ignores) in the message. False if the write failed.
    async fn write_service(
        &self,
        service: &Service,
        outcome: Option<&Outcome>,
        problem: Option<&str>,
    ) -> bool {
        let Some(patch) = status_patch(service, outcome, problem) else { return true };
        let (namespace, name) = (service.namespace().unwrap_or_default(), service.name_any());
        let api = Api::<Service>::namespaced(self.client.clone(), &namespace);
        if let Err(e) =
            api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch)).await
        {
            warn!("load balancer: cannot write the status of Service {namespace}/{name}: {e}");
            return false;
        }
        let (warning, reason, note) = match outcome {
            Some(Ok(addresses)) => {
                (problem.is_some(), "AddressAssigned", describe(addresses, problem))
            }
            Some(Err(refusal)) => (true, refusal.reason(), refusal.to_string()),
            None => (false, "AddressReleased", "the Service is no longer nonstop's".into()),
        };
        info!("load balancer: Service {namespace}/{name}: {reason}: {note}");
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "AssignAddress".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &service.object_ref(&())).await {
            warn!("could not publish an Event: {e}");
        }
        true
    }
}

/// The pools' usable parts, and what is wrong with each pool's spec (by
/// pool name, with the field's path). A pool whose selector cannot be read
/// is left out whole: which Services it is for is not known.
fn usable_pools(pools: &[Arc<BgpAddressPool>]) -> (Vec<Pool>, BTreeMap<String, Vec<String>>) {
    let mut usable = Vec::new();
    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pool in pools {
        let name = pool.name_any();
        let mut wrong = Vec::new();
        let mut blocks = Vec::new();
        for (i, text) in pool.spec.addresses.iter().enumerate() {
            match text.parse::<AddressBlock>() {
                Ok(block) => blocks.push(block),
                Err(e) => wrong.push(format!("spec.addresses[{i}]: {e}")),
            }
        }
        let selector = match pool.spec.service_selector.clone().map(Selector::try_from) {
            None => Ok(None),
            Some(Ok(selector)) => Ok(Some(selector)),
            Some(Err(e)) => Err(format!("spec.serviceSelector: {e}")),
        };
        match selector {
            Ok(selector) => usable.push(Pool {
                name: name.clone(),
                blocks,
                selector,
                auto_assign: pool.spec.auto_assign,
            }),
            Err(e) => wrong.push(e),
        }
        if !wrong.is_empty() {
            problems.insert(name, wrong);
        }
    }
    (usable, problems)
}

/// The addresses as the condition's message says them, and what the
/// Service asks for that is ignored.
fn describe(addresses: &[ipam::Address], problem: Option<&str>) -> String {
    let each: Vec<String> =
        addresses.iter().map(|a| format!("{} from BgpAddressPool {}", a.ip, a.pool)).collect();
    match problem {
        Some(problem) => format!("{}; {problem}", each.join(", ")),
        None => each.join(", "),
    }
}

/// The nonstop condition a Service carries now, if any.
fn our_condition(service: &Service) -> Option<&Condition> {
    service.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == ASSIGNED_CONDITION)
}

/// The strategic merge patch that makes the Service's status say `outcome`,
/// or None when it says so already. The condition list merges by type, so
/// conditions of others stay.
pub fn status_patch(
    service: &Service,
    outcome: Option<&Outcome>,
    problem: Option<&str>,
) -> Option<Value> {
    let current_ips: Vec<String> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| ingress.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    let current = our_condition(service);
    let Some(outcome) = outcome else {
        return Some(json!({"status": {
            "loadBalancer": {"ingress": null},
            "conditions": [{"type": ASSIGNED_CONDITION, "$patch": "delete"}],
        }}));
    };
    let (ips, status, reason, message): (Vec<String>, &str, &str, String) = match outcome {
        Ok(addresses) => (
            addresses.iter().map(|a| a.ip.to_string()).collect(),
            "True",
            "AddressAssigned",
            describe(addresses, problem),
        ),
        Err(refusal) => (Vec::new(), "False", refusal.reason(), refusal.to_string()),
    };
    let same_condition = current.is_some_and(|c| {
        c.status == status
            && c.reason == reason
            && c.message == message
            && c.observed_generation == service.metadata.generation
    });
    if ips == current_ips && same_condition {
        return None;
    }
    let since = match current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    Some(json!({"status": {
        "loadBalancer": {"ingress": if ingress.is_empty() { Value::Null } else { json!(ingress) }},
        "conditions": [Condition {
            type_: ASSIGNED_CONDITION.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: service.metadata.generation,
        }],
    }}))
}

/// What a pool's status should say.
fn pool_status(
    usage: Usage,
    problems: Option<&Vec<String>>,
    generation: Option<i64>,
    current: Option<&BgpAddressPoolStatus>,
) -> BgpAddressPoolStatus {
    let count = |(used, size): (u128, u128)| (size > 0).then(|| format!("{used}/{size}"));
    let (status, reason, message) = match problems {
        None => ("True", "Valid", "every entry is in use".to_string()),
        Some(problems) => ("False", "InvalidEntries", problems.join("; ")),
    };
    let old = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"));
    let since = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    BgpAddressPoolStatus {
        ipv4: count(usage.ipv4),
        ipv6: count(usage.ipv6),
        conditions: vec![Condition {
            type_: "Valid".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }],
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
