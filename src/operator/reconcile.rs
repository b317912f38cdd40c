//! The reconciler: observe, [`plan`](super::plan::plan), apply the steps,
//! write the status, publish an Event for each step and failure.
//!
//! Every write is safe to repeat: pods and ConfigMaps have deterministic
//! names (create → AlreadyExists is fine), deletes carry the pod's uid as a
//! precondition (a pod of the same name created since is not touched), and
//! the status is written whole. So a reconcile cut short — the operator
//! killed, the leader lost — is simply done again by the next one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::leader::Leadership;
use super::metrics::Metrics;
use super::observe::observe;
use super::plan::{Action, Input, Related, Step, plan};
use super::policy::Policy;
use super::render;
use crate::api::BgpGateway;

pub const FINALIZER: &str = "nonstop.dev/decommission";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The image of gateways that leave `spec.image` out (`--agent-image`).
    pub agent_image: Option<String>,
    /// Asked before every write: a replica that lost the lead writes nothing.
    pub leadership: Leadership,
    /// What cluster admins allow (the operator's --allowed-* flags).
    pub policy: Policy,
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

pub async fn reconcile(cached: Arc<BgpGateway>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    ctx.metrics.reconciles.inc();
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let gateways: Api<BgpGateway> = Api::namespaced(ctx.client.clone(), &namespace);
    // The status carries the rollout's memory (Degraded, each node's last
    // upgrade): plan from the object as stored now, not from the watch
    // cache, which may not have seen our last status write yet.
    let Some(mut gw) = gateways.get_opt(&name).await? else { return Ok(Requeue::await_change()) };
    let reference = gw.object_ref(&());
    // A gateway without an image runs the operator's agent image, so a
    // `helm upgrade --set agent.image.tag=…` rolls it like an edit would.
    if gw.spec.image.is_empty() {
        match &ctx.agent_image {
            Some(image) => gw.spec.image = image.clone(),
            None if gw.metadata.deletion_timestamp.is_none() => {
                let message = "spec.image is left out and the operator has no default agent \
                               image (--agent-image, the chart's agent.image): set one of them";
                ctx.may_write()?;
                write_invalid(&gateways, &gw, "InvalidSpec", message).await?;
                return Err(Error::Spec(message.into()));
            }
            None => {}
        }
    }

    // A spec the API server let through (old servers skip CEL) but the
    // operator's own rules refuse: say so, touch nothing. Unless it is being
    // deleted: its nodes decommission whatever the spec says.
    if gw.metadata.deletion_timestamp.is_none()
        && let Err(problems) = gw.spec.validate()
    {
        let message = format!("the spec breaks these rules, fix them: {problems}");
        ctx.may_write()?;
        write_invalid(&gateways, &gw, "InvalidSpec", &message).await?;
        return Err(Error::Spec(message));
    }
    // Outside what the cluster admins allow: refused the same way.
    let broken = ctx.policy.check(&namespace, &gw.spec.image, &gw.spec);
    if gw.metadata.deletion_timestamp.is_none() && !broken.is_empty() {
        let message = format!(
            "refused by the operator's policy, nothing on the nodes changes: {}",
            broken.join("; ")
        );
        ctx.may_write()?;
        write_invalid(&gateways, &gw, "PolicyViolation", &message).await?;
        return Err(Error::Policy(message));
    }

    let revision = render::revision(&gw.spec);
    if gw.metadata.deletion_timestamp.is_none() {
        ctx.may_write()?;
        ensure_config_map(&ctx.client, &gw, &revision).await?;
    }
    let observed = observe(&ctx.client, &gw, FINALIZER).await?;
    let plan = plan(&Input {
        gateway: &gw,
        revision: &revision,
        observed: &observed,
        now: Timestamp::now(),
    });

    for step in &plan.steps {
        ctx.may_write()?;
        info!(gateway = %name, namespace = %namespace, reason = step.reason.as_str(), "{}", step.message);
        apply(&ctx, &gw, &observed.pods, step).await?;
        ctx.metrics.step(step);
        let related = step.related(&name);
        publish(
            &ctx.recorder,
            &reference,
            related.as_ref(),
            false,
            step.reason.as_str(),
            &step.message,
        )
        .await;
    }
    for note in &plan.notes {
        if note.warning {
            warn!(gateway = %name, namespace = %namespace, reason = note.reason.as_str(), "{}", note.message);
        }
        let related = note.related.as_ref();
        ctx.may_write()?;
        publish(
            &ctx.recorder,
            &reference,
            related,
            note.warning,
            note.reason.as_str(),
            &note.message,
        )
        .await;
    }
    if gw.metadata.deletion_timestamp.is_none() {
        for node in &plan.status.nodes {
            let before =
                gw.status.as_ref().and_then(|s| s.nodes.iter().find(|n| n.node == node.node));
            if let Some(record) = &node.last_upgrade
                && before.and_then(|b| b.last_upgrade.as_ref()) != Some(record)
                && let Some(ms) = record.pause_ms
            {
                ctx.metrics.pause.observe(ms as f64 / 1000.0);
            }
        }
        if gw.status.as_ref() != Some(&plan.status) {
            ctx.may_write()?;
            gateways
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": plan.status })),
                )
                .await?;
        }
    }
    Ok(Requeue::requeue(plan.requeue))
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
    pods: &[super::plan::PodView],
    step: &Step,
) -> Result<(), Error> {
    let namespace = gw.namespace().unwrap_or_default();
    let gateways: Api<BgpGateway> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    match &step.action {
        Action::AddFinalizer => {
            let mut finalizers = gw.finalizers().to_vec();
            finalizers.push(FINALIZER.into());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": gw.resource_version()}});
            gateways.patch(&gw.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        }
        Action::RemoveFinalizer => {
            let finalizers: Vec<&String> =
                gw.finalizers().iter().filter(|f| *f != FINALIZER).collect();
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": gw.resource_version()}});
            gateways.patch(&gw.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        }
        Action::CreatePod { node, revision } => {
            let now = u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0);
            let pod = render::pod(gw, node, revision, now);
            match pod_api.create(&PostParams::default(), &pod).await {
                Ok(_) => {}
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
            match pod_api.delete(pod, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

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
    gateways
        .patch_status(
            &gw.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
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
