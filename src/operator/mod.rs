//! The operator at run time: leader election, then a kube-runtime
//! controller that reconciles every BgpGateway (and looks again when one of
//! its pods or any node changes).
//!
//! ```text
//!   Lease ──leader──▶ Controller(BgpGateway) ◀── pods (owned), nodes
//!                        └─▶ reconcile: observe ─▶ plan ─▶ apply ─▶ status, Events
//! ```
//!
//! [`plan`] is the pure part; [`render`] the objects; [`observe`] and
//! [`reconcile`] the API and agent edges.

pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod render;
pub mod uninstall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Config};
use prometheus_client::registry::Registry;
use tracing::{error, info};

use crate::api::BgpGateway;
use leader::Elector;
use reconcile::{Context, error_policy, reconcile};

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace of the leader Lease (the operator's own).
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease and in Events (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics: SocketAddr,
    /// The image of gateways that leave `spec.image` out.
    pub agent_image: Option<String>,
    /// What cluster admins allow a gateway to be.
    pub policy: policy::Policy,
}

pub async fn run(options: Options) -> Result<(), String> {
    let config = Config::infer().await.map_err(|e| format!("no Kubernetes config: {e}"))?;
    let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;

    let metrics = metrics::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let listener = tokio::net::TcpListener::bind(options.metrics)
        .await
        .map_err(|e| format!("cannot listen on {} for metrics: {e}", options.metrics))?;
    tokio::spawn(metrics::serve(listener, Arc::new(registry)));

    let elector = Elector::new(
        Api::<Lease>::namespaced(client.clone(), &options.lease_namespace),
        &options.lease_name,
        &options.identity,
        options.lease_duration,
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        acquired = elector.acquire() => acquired.map_err(|e| format!("leader election: {e}"))?,
        _ = terminate.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    metrics.leader.set(1);

    let reporter = Reporter {
        controller: "nonstop-operator".into(),
        instance: Some(options.identity.clone()),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        agent_image: options.agent_image.clone(),
        leadership: elector.leadership(),
        policy: options.policy.clone(),
    });
    let gateways = Api::<BgpGateway>::all(client.clone());
    let controller = Controller::new(gateways, watcher::Config::default());
    let store = controller.store();
    let running = controller
        .owns(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(render::GATEWAY_LABEL),
        )
        // A node's labels or taints decide which gateways run on it.
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |_node: Node| {
                store.state().iter().map(|gw| ObjectRef::from_obj(&**gw)).collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    kube::runtime::controller::Error::ReconcilerFailed(..) => {}
                    other => error!("controller: {other}"),
                }
            }
        });

    tokio::select! {
        _ = running => Err("the controller stopped".into()),
        why = elector.keep() => Err(format!("no longer the leader: {why}")),
        _ = terminate.recv() => {
            info!("SIGTERM: giving the lead up");
            elector.release().await;
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => {
            elector.release().await;
            Ok(())
        }
    }
}
