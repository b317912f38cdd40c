//! The reconciler: observe, [`plan`](super::plan::plan), apply the steps,
//! write the status, publish an Event for each step and failure.
//!
//! Every write is safe to repeat: pods and ConfigMaps have deterministic
//! names (create → AlreadyExists is fine), deletes carry the pod's uid as a
//! precondition (a pod of the same name created since is not touched), and
//! the status is written whole. So a reconcile cut short — the operator
//! killed, the leader lost — is simply done again by the next one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::cache::{AgentAnswers, Expectations, Versions};
use super::leader::Leadership;
use super::metrics::Metrics;
use super::observe::{Cached, Caches, observe};
use super::per_node;
use super::plan::{Action, Input, Observed, Related, Step, plan};
use super::policy::Policy;
use super::render;
use crate::api::{BgpGateway, BgpGatewayStatus};

pub const FINALIZER: &str = "nonstop.dev/decommission";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The image of gateways that leave `spec.image` out (`--agent-image`).
    pub agent_image: Option<String>,
    /// Passed to the agents' pods (`NONSTOP_LOG_FORMAT`).
    pub log_format: nonstop_agent::LogFormat,
    /// Asked before every write: a replica that lost the lead writes nothing.
    pub leadership: Leadership,
    /// What cluster admins allow (the operator's --allowed-* flags).
    pub policy: Policy,
    /// The nodes and gateway pods, as the watches keep them.
    pub caches: Caches,
    /// Pod writes the caches may not show yet.
    pub expectations: Expectations,
    /// Each gateway's version last read or written.
    pub versions: Versions,
    /// Each node's last agent answer.
    pub answers: AgentAnswers,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("the gateway's spec: {0}")]
    Spec(String),
    #[error("the cluster's policy: {0}")]
    Policy(String),
    #[error("not the leader (the lease was not renewed in time): writing nothing")]
    NotLeader,
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api(_) => "api",
            Error::Spec(_) => "spec",
            Error::Policy(_) => "policy",
            Error::NotLeader => "not_leader",
        }
    }
}

impl Context {
    /// Before each write: only a leader within its renew deadline writes.
    fn may_write(&self) -> Result<(), Error> {
        if self.leadership.held() { Ok(()) } else { Err(Error::NotLeader) }
    }
}

/// How long a reconcile waits for the watch caches' first full listing.
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(10);

pub async fn reconcile(cached: Arc<BgpGateway>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    ctx.metrics.reconciles.inc();
    let started = Instant::now();
    let result = reconcile_once(cached, &ctx).await;
    ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_once(cached: Arc<BgpGateway>, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let key = format!("{namespace}/{name}");
    // A new leader's first reconciles can come before its node and pod
    // watches have listed everything.
    if !ctx.caches.synced(CACHE_SYNC_WAIT).await {
        info!(gateway = %key, "the node and pod caches are not filled yet: waiting");
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let gateways: Api<BgpGateway> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(mut gw) = current(&gateways, &cached, ctx, &key).await? else {
        ctx.metrics.gateway(&namespace, &name, None);
        return Ok(Requeue::await_change());
    };
    admit(&gateways, &mut gw, ctx).await?;

    let revision = render::revision(&gw.spec);
    let cached_pods = Cached::of(&ctx.caches, &gw);
    // The pod cache must show this operator's own last creates and deletes
    // before it is planned from (see `cache`); their watch events wake
    // the gateway again, the requeue is only a fallback.
    if !ctx.expectations.met(&key, &cached_pods.pods, Instant::now()) {
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    if gw.metadata.deletion_timestamp.is_none() && cached_pods.might_start(&gw, &revision) {
        ctx.may_write()?;
        ensure_config_map(&ctx.client, &gw, &revision).await?;
        ensure_api_secret(&ctx.client, &gw).await?;
    }
    let observed =
        observe(&ctx.client, &gw, &ctx.answers, cached_pods, &revision, FINALIZER).await?;
    let plan = plan(&Input {
        gateway: &gw,
        revision: &revision,
        observed: &observed,
        now: Timestamp::now(),
    });

    let reference = gw.object_ref(&());
    for step in &plan.steps {
        ctx.may_write()?;
        info!(gateway = %name, namespace = %namespace, reason = step.reason.as_str(), "{}", step.message);
        apply(ctx, &gw, &key, &observed, step).await?;
        ctx.metrics.step(step);
        let related = step.related(&gw);
        let (reason, message) = (step.reason.as_str(), &step.message);
        publish(&ctx.recorder, &reference, related.as_ref(), false, reason, message).await;
    }
    for note in &plan.notes {
        if note.warning {
            warn!(gateway = %name, namespace = %namespace, reason = note.reason.as_str(), "{}", note.message);
        }
        ctx.may_write()?;
        let (reason, message) = (note.reason.as_str(), &note.message);
        publish(&ctx.recorder, &reference, note.related.as_ref(), note.warning, reason, message)
            .await;
    }
    if gw.metadata.deletion_timestamp.is_none() {
        tell_node_labels(ctx, &gw, &observed).await?;
        // The record first: a status written without it would not tell
        // the next reconcile to write it again.
        ctx.may_write()?;
        super::rollouts::record(&ctx.client, &gw, &plan.status, plan.superseded.as_ref()).await?;
        write_status(ctx, &gateways, &gw, &key, plan.status).await?;
    } else {
        // Being decommissioned: its series go now, not at the last reconcile.
        ctx.metrics.gateway(&namespace, &name, None);
    }
    Ok(Requeue::requeue(plan.requeue))
}

/// The gateway as stored now. The status carries the rollout's memory
/// (Degraded, each node's last upgrade), so it is planned from the latest
/// version, not from a watch cache that may not have seen the operator's
/// last status write: the cached object serves when it is the very
/// version last read or written, else one GET. None: it is gone.
async fn current(
    gateways: &Api<BgpGateway>,
    cached: &BgpGateway,
    ctx: &Context,
    key: &str,
) -> Result<Option<BgpGateway>, Error> {
    if ctx.versions.current(key, cached.resource_version().as_deref()) {
        return Ok(Some(cached.clone()));
    }
    let got = gateways.get_opt(&cached.name_any()).await?;
    ctx.versions.saw(key, got.as_ref().and_then(|g| g.resource_version()).as_deref());
    if got.is_none() {
        ctx.expectations.forget(key);
    }
    Ok(got)
}

/// Fills in the default image, then refuses a spec the operator cannot
/// run: broken rules (old API servers skip CEL) or outside the cluster's
/// policy. Ready False says why; nothing on the nodes changes. A gateway
/// being deleted is always admitted: its nodes decommission whatever the
/// spec says.
async fn admit(
    gateways: &Api<BgpGateway>,
    gw: &mut BgpGateway,
    ctx: &Context,
) -> Result<(), Error> {
    let deleting = gw.metadata.deletion_timestamp.is_some();
    // A gateway without an image runs the operator's agent image, so a
    // `helm upgrade --set agent.image.tag=…` rolls it like an edit would.
    if gw.spec.image.is_empty() {
        match &ctx.agent_image {
            Some(image) => gw.spec.image = image.clone(),
            None if !deleting => {
                let message = "spec.image is left out and the operator has no default agent \
                               image (--agent-image, the chart's agent.image): set one of them";
                ctx.may_write()?;
                write_invalid(ctx, gateways, gw, "InvalidSpec", message).await?;
                return Err(Error::Spec(message.into()));
            }
            None => {}
        }
    }
    if deleting {
        return Ok(());
    }
    if let Err(problems) = gw.spec.validate() {
        let message = format!("the spec breaks these rules, fix them: {problems}");
        ctx.may_write()?;
        write_invalid(ctx, gateways, gw, "InvalidSpec", &message).await?;
        return Err(Error::Spec(message));
    }
    let namespace = gw.namespace().unwrap_or_default();
    let broken = ctx.policy.check(&namespace, &gw.spec.image, &gw.spec);
    if !broken.is_empty() {
        let message = format!(
            "refused by the operator's policy, nothing on the nodes changes: {}",
            broken.join("; ")
        );
        ctx.may_write()?;
        write_invalid(ctx, gateways, gw, "PolicyViolation", &message).await?;
        return Err(Error::Policy(message));
    }
    Ok(())
}

/// Records the handoff pauses the plan reports for the first time, and
/// writes the status when it changed.
async fn write_status(
    ctx: &Context,
    gateways: &Api<BgpGateway>,
    gw: &BgpGateway,
    key: &str,
    status: BgpGatewayStatus,
) -> Result<(), Error> {
    for node in &status.nodes {
        let before = gw.status.as_ref().and_then(|s| s.nodes.iter().find(|n| n.node == node.node));
        if let Some(record) = &node.last_upgrade
            && before.and_then(|b| b.last_upgrade.as_ref()) != Some(record)
            && let Some(ms) = record.pause_ms
        {
            ctx.metrics.pause.observe(ms as f64 / 1000.0);
        }
    }
    ctx.metrics.gateway(&gw.namespace().unwrap_or_default(), &gw.name_any(), Some(&status));
    // `loadBalancer` is the address pass's to write: compared as it is,
    // never written from here (this copy may be older than its last write).
    let mut status = status;
    status.load_balancer = gw.status.as_ref().and_then(|s| s.load_balancer.clone());
    if gw.status.as_ref() == Some(&status) {
        return Ok(());
    }
    ctx.may_write()?;
    let mut new = json!(status);
    let mut old = json!(gw.status);
    for side in [&mut new, &mut old] {
        if let Some(fields) = side.as_object_mut() {
            fields.remove("loadBalancer");
        }
    }
    drop_removed(&old, &mut new);
    let patch = Patch::Merge(json!({ "status": new }));
    let written = gateways.patch_status(&gw.name_any(), &PatchParams::default(), &patch).await?;
    ctx.versions.saw(key, written.resource_version().as_deref());
    Ok(())
}

/// Makes `new` a JSON merge patch (RFC 7386) from `old`: a key `new` no
/// longer has is set to null, or the server would keep its old value
/// (a failed rollout's reason outliving its retry). Lists are replaced
/// whole by a merge patch and need nothing.
pub fn drop_removed(old: &serde_json::Value, new: &mut serde_json::Value) {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) else { return };
    for (key, was) in old {
        match new.get_mut(key) {
            Some(now) => drop_removed(was, now),
            None => {
                new.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
}

pub fn error_policy(gw: Arc<BgpGateway>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.error(error.kind());
    warn!(gateway = %gw.name_any(), "reconcile failed: {error}");
    Requeue::requeue(match error {
        Error::Spec(_) | Error::Policy(_) => Duration::from_secs(60),
        Error::Api(_) | Error::NotLeader => Duration::from_secs(5),
    })
}

async fn apply(
    ctx: &Context,
    gw: &BgpGateway,
    key: &str,
    observed: &Observed,
    step: &Step,
) -> Result<(), Error> {
    let pods = &observed.pods;
    let namespace = gw.namespace().unwrap_or_default();
    let gateways: Api<BgpGateway> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    match &step.action {
        Action::AddFinalizer => {
            let mut finalizers = gw.finalizers().to_vec();
            finalizers.push(FINALIZER.into());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": gw.resource_version()}});
            let written = gateways
                .patch(&gw.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            ctx.versions.saw(key, written.resource_version().as_deref());
        }
        Action::RemoveFinalizer => {
            let finalizers: Vec<&String> =
                gw.finalizers().iter().filter(|f| *f != FINALIZER).collect();
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": gw.resource_version()}});
            gateways.patch(&gw.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        }
        Action::CreatePod { node, revision } => {
            let now = u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0);
            let facts = match observed.nodes.iter().find(|n| &n.name == node) {
                Some(view) => per_node::facts(&gw.spec, view),
                None => per_node::Facts {
                    labels: per_node::annotation(&gw.spec, &Default::default()),
                    addresses: per_node::addresses(&gw.spec, &Default::default()),
                    ..Default::default()
                },
            };
            for (reason, problem) in &facts.problems {
                warn!(gateway = %gw.name_any(), "{problem}");
                let reference = gw.object_ref(&());
                publish(&ctx.recorder, &reference, None, true, reason, problem).await;
            }
            let pod = render::pod(gw, node, revision, now, ctx.log_format, &facts);
            match pod_api.create(&PostParams::default(), &pod).await {
                Ok(_) => ctx.expectations.created(key, &pod.name_any()),
                Err(kube::Error::Api(e)) if e.code == 409 => {} // made by an earlier reconcile
                Err(e) => return Err(e.into()),
            }
        }
        Action::DeletePod { pod, .. } => {
            // Only the pod that was observed: a namesake created since is another pod.
            let uid = pods.iter().find(|p| &p.name == pod).and_then(|p| p.uid.clone());
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid, resource_version: None }),
                ..DeleteParams::default()
            };
            let expected = params.preconditions.as_ref().and_then(|p| p.uid.clone());
            match pod_api.delete(pod, &params).await {
                Ok(_) => {
                    if let Some(uid) = expected {
                        ctx.expectations.deleted(key, &uid);
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Rewrites the node labels and annotations of each agent pod whose node's
/// changed (peers chosen or addressed per node): the kubelet updates the
/// pod's files, and its agent chooses its peers again. No pod is replaced.
async fn tell_node_labels(
    ctx: &Context,
    gw: &BgpGateway,
    observed: &Observed,
) -> Result<(), Error> {
    let stale = per_node::stale(&gw.spec, &observed.nodes, &observed.pods);
    if stale.is_empty() {
        return Ok(());
    }
    ctx.may_write()?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &gw.namespace().unwrap_or_default());
    for (pod, annotations) in stale {
        info!(gateway = %gw.name_any(), pod = %pod, ?annotations, "telling the agent about its node");
        let patch = json!({"metadata": {"annotations": annotations}});
        match pods.patch(&pod, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue, // gone since it was observed
            Err(e) => return Err(e.into()),
        }
        // A node re-annotated without a usable address for a peer: said
        // now, as when its pod was made, not only in its agent's log.
        if !annotations.contains_key(per_node::ADDRESSES) {
            continue;
        }
        let node = observed.pods.iter().find(|p| p.name == pod).map(|p| p.node.as_str());
        let Some(node) = observed.nodes.iter().find(|n| Some(n.name.as_str()) == node) else {
            continue;
        };
        let facts = per_node::facts(&gw.spec, node);
        for (reason, problem) in
            facts.problems.iter().filter(|(r, _)| *r == per_node::NO_PEER_ADDRESS)
        {
            warn!(gateway = %gw.name_any(), "{problem}");
            publish(&ctx.recorder, &gw.object_ref(&()), None, true, reason, problem).await;
        }
    }
    Ok(())
}

/// The Secret with the token the operator publishes Service addresses with:
/// made once, with a random token, and kept (a new token would lock the
/// running agents out until they are replaced).
async fn ensure_api_secret(client: &Client, gw: &BgpGateway) -> Result<(), Error> {
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &gw.namespace().unwrap_or_default());
    let name = render::api_secret_name(gw);
    if api.get_metadata_opt(&name).await?.is_some() {
        return Ok(());
    }
    let token = super::publish::new_token();
    match api.create(&PostParams::default(), &render::api_secret(gw, &token)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The revision's ConfigMap. Its name carries the gateway's uid, so one
/// that exists was made by an earlier reconcile of this very gateway.
async fn ensure_config_map(client: &Client, gw: &BgpGateway, revision: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &gw.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), &render::config_map(gw, revision)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Ready False with `reason` and `message`; nothing else is touched.
async fn write_invalid(
    ctx: &Context,
    gateways: &Api<BgpGateway>,
    gw: &BgpGateway,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let mut status = gw.status.clone().unwrap_or_default();
    let already = status.conditions.iter().any(|c| c.reason == reason && c.message == message);
    if already {
        return Ok(());
    }
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Ready".into(),
        status: "False".into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: gw.metadata.generation,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    });
    ctx.metrics.gateway(&gw.namespace().unwrap_or_default(), &gw.name_any(), Some(&status));
    let patch = Patch::Merge(json!({ "status": status }));
    let written = gateways.patch_status(&gw.name_any(), &PatchParams::default(), &patch).await?;
    let key = format!("{}/{}", gw.namespace().unwrap_or_default(), gw.name_any());
    ctx.versions.saw(&key, written.resource_version().as_deref());
    Ok(())
}

async fn publish(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    related: Option<&Related>,
    warning: bool,
    reason: &str,
    message: &str,
) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: related.map(|r| k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(r.kind.into()),
            name: Some(r.name.clone()),
            namespace: reference.namespace.clone(),
            ..Default::default()
        }),
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        warn!("could not publish an Event: {e}");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::drop_removed;

    #[test]
    fn a_status_patch_clears_what_the_new_status_no_longer_has() {
        let cases = [
            // A retried rollout: its reason goes, its number stays.
            (
                json!({"lastRollout": {"number": 3, "reason": "refused", "result": "Failed"}}),
                json!({"lastRollout": {"number": 3, "result": "Progressing"}}),
                json!({"lastRollout": {"number": 3, "reason": null, "result": "Progressing"}}),
            ),
            // Lists are replaced whole: nothing to add.
            (
                json!({"nodes": [{"node": "n1", "maintenance": "Cordoned"}]}),
                json!({"nodes": [{"node": "n1"}]}),
                json!({"nodes": [{"node": "n1"}]}),
            ),
            // A whole field gone; nothing before at all.
            (
                json!({"image": "v1", "ready": "1/1"}),
                json!({"ready": "1/1"}),
                json!({"image": null, "ready": "1/1"}),
            ),
            (serde_json::Value::Null, json!({"ready": "0/0"}), json!({"ready": "0/0"})),
        ];
        for (old, mut new, want) in cases {
            drop_removed(&old, &mut new);
            assert_eq!(new, want, "from {old}");
        }
    }
}
