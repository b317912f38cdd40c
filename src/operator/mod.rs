//! The operator at run time: leader election, then a kube-runtime
//! controller that reconciles every BgpGateway (and looks again when one of
//! its pods changes, or a node it selects or runs on changes in a way that
//! matters to it); beside it, the address assignment for Services of type
//! LoadBalancer ([`services`], [`ipam`]).
//!
//! ```text
//!   Lease ──leader──▶ Controller(BgpGateway) ◀── pods (owned), nodes ─┐
//!                        └─▶ reconcile: observe ─▶ plan ─▶ apply       │ one watch each,
//!                              ▲                     ─▶ status, Events │ cached
//!                              └────────── node and pod caches ◀───────┘
//!   Lease ──leader──▶ services: Services, pools, gateways ─▶ ipam ─▶ Service status, Events
//! ```
//!
//! [`plan`] is the pure part; [`render`] the objects; [`observe`] and
//! [`reconcile`] the API and agent edges.

pub mod cache;
pub mod coexist;
pub mod endpoints;
pub mod ipam;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod observe;
pub mod per_node;
pub mod plan;
pub mod policy;
pub mod publish;
pub mod reconcile;
pub mod render;
pub mod requests;
pub mod rollouts;
pub mod services;
pub mod uninstall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::client::ClientBuilder;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, Config};
use prometheus_client::registry::Registry;
use tracing::{debug, error, info};

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
    /// The operator's log format, which the agents it starts use too.
    pub log_format: nonstop_agent::LogFormat,
    /// What cluster admins allow a gateway to be.
    pub policy: policy::Policy,
}

pub async fn run(options: Options) -> Result<(), String> {
    let config = Config::infer().await.map_err(|e| format!("no Kubernetes config: {e}"))?;
    let metrics = metrics::Metrics::default();
    let client = ClientBuilder::try_from(config)
        .map_err(|e| format!("Kubernetes client: {e}"))?
        .with_layer(&requests::CountRequests { counters: metrics.requests.clone() })
        .build();

    let mut registry = Registry::default();
    metrics.register(&mut registry);
    nonstop_agent::speaker::status::register_build_info(&mut registry, "operator");
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
    let controller =
        Controller::new(Api::<BgpGateway>::all(client.clone()), watcher::Config::default());
    let (nodes, node_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        metrics,
        agent_image: options.agent_image.clone(),
        log_format: options.log_format,
        leadership: elector.leadership(),
        policy: options.policy.clone(),
        caches: observe::Caches { nodes, pods, gateways: controller.store() },
        expectations: cache::Expectations::default(),
        versions: cache::Versions::default(),
        answers: cache::AgentAnswers::default(),
    });
    let nodes = context.caches.nodes.clone();
    let running = run_controller(controller, &client, context, node_writer, pod_writer);
    let recorder = Recorder::new(client.clone(), reporter);
    let load_balancer = services::run(client.clone(), recorder, nodes);

    tokio::select! {
        _ = running => Err("the controller stopped".into()),
        _ = load_balancer => Err("the load balancer's watches stopped".into()),
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

/// The controller over every BgpGateway, fed by one watch of the gateway
/// pods (their owner reconciles) and one of the nodes (the gateways a
/// relevant change concerns); both watches fill the caches the reconciler
/// reads.
fn run_controller(
    controller: Controller<BgpGateway>,
    client: &Client,
    context: Arc<Context>,
    node_writer: reflector::store::Writer<Node>,
    pod_writer: reflector::store::Writer<Pod>,
) -> impl std::future::Future<Output = ()> {
    let gateways = controller.store();
    let pods = context.caches.pods.clone();
    let pod_events = reflector(
        pod_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(render::GATEWAY_LABEL),
        )
        .modify(cache::slim_pod),
    )
    .default_backoff()
    .touched_objects();
    let mut changes = cache::NodeChanges::default();
    let named_by = gateways.clone();
    let node_events = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .modify(cache::slim_node),
    )
    .default_backoff()
    // Only what the operator acts on: a kubelet's heartbeats wake nothing.
    .filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                let named = cache::named_annotations(&named_by.state());
                changes.applied(&node, &named).then_some(Ok(node))
            }
            Ok(watcher::Event::Delete(node)) => changes.deleted(&node).then_some(Ok(node)),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(changed)
    });
    controller
        .owns_stream(pod_events)
        .watches_stream(node_events, move |node: Node| {
            cache::concerned(&node, &gateways.state(), &pods.state())
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    kube::runtime::controller::Error::ReconcilerFailed(..) => {}
                    // A requeue that fell due after its gateway was deleted:
                    // nothing is left to do, nothing went wrong.
                    kube::runtime::controller::Error::ObjectNotFound(gone) => {
                        debug!("controller: {gone} is gone, its requeue is dropped")
                    }
                    other => error!("controller: {other}"),
                }
            }
        })
}
