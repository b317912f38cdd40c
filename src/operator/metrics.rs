//! The operator's Prometheus metrics and the small HTTP door that serves
//! them (`/metrics`) with a liveness answer (`/healthz`).
//!
//! ```text
//!   nonstop_operator_reconciles_total
//!   nonstop_operator_reconcile_duration_seconds   (histogram)
//!   nonstop_operator_reconcile_errors_total{kind}
//!   nonstop_operator_api_requests_total{verb,resource}   (what it asks of the API server)
//!   nonstop_operator_rollout_steps_total{reason}
//!   nonstop_operator_handoff_pause_seconds   (histogram, from agents' reports)
//!   nonstop_operator_leader                  (1 on the replica that leads)
//! ```

use std::sync::Arc;

use nonstop_agent::http::hyper::{Method, StatusCode};
use nonstop_agent::http::{self, Answer, Limits};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::plan::Step;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    pub verb: &'static str,
    pub resource: String,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_seconds: Histogram,
    pub requests: Family<Request, Counter>,
    pub errors: Family<Kind, Counter>,
    pub steps: Family<Reason, Counter>,
    pub pause: Histogram,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            // 1 ms … ~40 s, fine enough to read a p99 from.
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 1.5, 27)),
            requests: Family::default(),
            errors: Family::default(),
            steps: Family::default(),
            // 0.5 ms … ~4 s
            pause: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            leader: Gauge::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let prefix = registry.sub_registry_with_prefix("nonstop_operator");
        prefix.register("reconciles", "Reconciles of BgpGateways", self.reconciles.clone());
        prefix.register(
            "reconcile_duration_seconds",
            "How long each reconcile took, agents' answers included",
            self.reconcile_seconds.clone(),
        );
        prefix.register(
            "api_requests",
            "Requests to the Kubernetes API server, by verb and resource (a watch counts when it opens)",
            self.requests.clone(),
        );
        prefix.register("reconcile_errors", "Failed reconciles by kind", self.errors.clone());
        prefix.register("rollout_steps", "Actions taken, by reason", self.steps.clone());
        prefix.register(
            "handoff_pause_seconds",
            "Handoff pauses reported by agents after a node's upgrade",
            self.pause.clone(),
        );
        prefix.register("leader", "1 on the replica holding the leader Lease", self.leader.clone());
    }

    pub fn step(&self, step: &Step) {
        self.steps.get_or_create(&Reason { reason: step.reason.as_str().into() }).inc();
    }

    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&Kind { kind: kind.into() }).inc();
    }
}

/// Serves `/metrics` and `/healthz` until the process ends.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let handler = Arc::new(move |_: &Method, path: &str| match path {
        "/metrics" => {
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
            // What prometheus_client writes is OpenMetrics (`# EOF`, the info
            // type); labelled as Prometheus' older text format, a scrape of
            // `nonstop_build_info` failed to parse.
            Answer::ok("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
        }
        "/healthz" => Answer::ok("text/plain", "ok\n".into()),
        _ => Answer::text(StatusCode::NOT_FOUND, "not found\n"),
    });
    http::serve(listener, Limits::default(), handler).await;
}
