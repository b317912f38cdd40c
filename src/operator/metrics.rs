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
//!   nonstop_operator_gateway_condition{namespace,gateway,condition}   (1 while True)
//!   nonstop_operator_gateway_sessions{namespace,gateway,state}   (established, configured)
//!   nonstop_operator_gateway_nodes{namespace,gateway,state}   (selected, ready, updated, maintenance)
//! ```
//!
//! The gateway series are read off the status the operator writes, so a
//! dashboard and `kubectl get bgpgw` never disagree; a deleted gateway's
//! series go with it.

use std::sync::Arc;

use nonstop_agent::http::hyper::StatusCode;
use nonstop_agent::http::{self, Answer, Limits};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::plan::Step;
use crate::api::{BgpGatewayStatus, ConditionType};

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

/// A gateway's condition series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub gateway: String,
    pub condition: &'static str,
}

/// A gateway's count of sessions or nodes in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub namespace: String,
    pub gateway: String,
    pub state: &'static str,
}

/// What the gateway series say, read off one status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayValues {
    /// Each condition type, 1 while its status is True.
    pub conditions: [(ConditionType, i64); 3],
    pub sessions: [(&'static str, i64); 2],
    pub nodes: [(&'static str, i64); 4],
}

impl GatewayValues {
    pub fn of(status: &BgpGatewayStatus) -> Self {
        let condition = |kind: ConditionType| {
            let on =
                status.conditions.iter().any(|c| c.type_ == kind.as_str() && c.status == "True");
            (kind, i64::from(on))
        };
        let sum = |f: fn(&crate::api::NodeStatus) -> u32| {
            status.nodes.iter().map(|n| i64::from(f(n))).sum::<i64>()
        };
        // `ready` is "ready/selected", as the plan counted them.
        let ready = status
            .ready
            .as_deref()
            .and_then(|r| r.split_once('/'))
            .and_then(|(ready, _)| ready.parse().ok())
            .unwrap_or(0);
        let updated = status
            .nodes
            .iter()
            .filter(|n| n.revision.is_some() && n.revision == status.update_revision)
            .count();
        let maintenance = status.nodes.iter().filter(|n| n.maintenance.is_some()).count();
        Self {
            conditions: [
                condition(ConditionType::Ready),
                condition(ConditionType::Progressing),
                condition(ConditionType::Degraded),
            ],
            sessions: [
                ("established", sum(|n| n.sessions.established)),
                ("configured", sum(|n| n.sessions.configured)),
            ],
            nodes: [
                ("selected", status.nodes.len() as i64),
                ("ready", ready),
                ("updated", updated as i64),
                ("maintenance", maintenance as i64),
            ],
        }
    }
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
    pub gateway_condition: Family<ConditionLabels, Gauge>,
    pub gateway_sessions: Family<StateLabels, Gauge>,
    pub gateway_nodes: Family<StateLabels, Gauge>,
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
            gateway_condition: Family::default(),
            gateway_sessions: Family::default(),
            gateway_nodes: Family::default(),
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
        prefix.register(
            "gateway_condition",
            "1 while the gateway's condition (Ready, Progressing, Degraded) is True",
            self.gateway_condition.clone(),
        );
        prefix.register(
            "gateway_sessions",
            "BGP sessions over the gateway's nodes: established and configured",
            self.gateway_sessions.clone(),
        );
        prefix.register(
            "gateway_nodes",
            "The gateway's nodes: selected, ready, updated (at the spec's revision), in maintenance",
            self.gateway_nodes.clone(),
        );
    }

    /// The gateway's series from the status just written; `None` when the
    /// gateway is gone, which removes them.
    pub fn gateway(&self, namespace: &str, gateway: &str, status: Option<&BgpGatewayStatus>) {
        let (namespace, gateway) = (namespace.to_string(), gateway.to_string());
        let empty = BgpGatewayStatus::default();
        let values = GatewayValues::of(status.unwrap_or(&empty));
        for (kind, on) in values.conditions {
            let labels = ConditionLabels {
                namespace: namespace.clone(),
                gateway: gateway.clone(),
                condition: kind.as_str(),
            };
            set_or_remove(&self.gateway_condition, &labels, status.map(|_| on));
        }
        let states = [
            (&self.gateway_sessions, &values.sessions[..]),
            (&self.gateway_nodes, &values.nodes[..]),
        ];
        for (family, counts) in states {
            for &(state, n) in counts {
                let labels =
                    StateLabels { namespace: namespace.clone(), gateway: gateway.clone(), state };
                set_or_remove(family, &labels, status.map(|_| n));
            }
        }
    }

    pub fn step(&self, step: &Step) {
        self.steps.get_or_create(&Reason { reason: step.reason.as_str().into() }).inc();
    }

    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&Kind { kind: kind.into() }).inc();
    }
}

fn set_or_remove<L>(family: &Family<L, Gauge>, labels: &L, value: Option<i64>)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    match value {
        Some(v) => {
            family.get_or_create(labels).set(v);
        }
        None => {
            family.remove(labels);
        }
    }
}

/// Serves `/metrics` and `/healthz` until the process ends.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let handler = Arc::new(move |call: http::Call| {
        match call.path.as_str() {
            "/metrics" => {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                // What prometheus_client writes is OpenMetrics (`# EOF`, the
                // info type); labelled as Prometheus' older text format, a
                // scrape of `nonstop_build_info` failed to parse.
                Answer::ok("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
            }
            "/healthz" => Answer::ok("text/plain", "ok\n".into()),
            _ => Answer::text(StatusCode::NOT_FOUND, "not found\n"),
        }
        .now()
    });
    http::serve(listener, Limits::default(), handler).await;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::api::{Maintenance, NodeStatus, SessionCounts};

    fn node(name: &str, revision: &str, sessions: (u32, u32)) -> NodeStatus {
        NodeStatus {
            node: name.into(),
            revision: Some(revision.into()),
            sessions: SessionCounts { established: sessions.0, configured: sessions.1 },
            ..NodeStatus::default()
        }
    }

    fn condition(kind: &str, status: &str) -> Condition {
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }
    }

    #[test]
    fn gateway_series_read_the_status() {
        let rolling = BgpGatewayStatus {
            conditions: vec![
                condition("Ready", "False"),
                condition("Progressing", "True"),
                condition("Degraded", "False"),
            ],
            update_revision: Some("new".into()),
            ready: Some("2/3".into()),
            nodes: vec![
                node("a", "new", (2, 2)),
                node("b", "old", (2, 2)),
                NodeStatus { maintenance: Some(Maintenance::Cordoned), ..node("c", "old", (0, 2)) },
            ],
            ..BgpGatewayStatus::default()
        };
        let cases = [
            (
                "rolling, one node cordoned",
                rolling,
                [0, 1, 0],
                [("established", 4), ("configured", 6)],
                [("selected", 3), ("ready", 2), ("updated", 1), ("maintenance", 1)],
            ),
            (
                "no status yet",
                BgpGatewayStatus::default(),
                [0, 0, 0],
                [("established", 0), ("configured", 0)],
                [("selected", 0), ("ready", 0), ("updated", 0), ("maintenance", 0)],
            ),
        ];
        for (case, status, conditions, sessions, nodes) in cases {
            let values = GatewayValues::of(&status);
            assert_eq!(values.conditions.map(|(_, on)| on), conditions, "{case}");
            assert_eq!(values.sessions, sessions, "{case}");
            assert_eq!(values.nodes, nodes, "{case}");
        }
    }

    #[test]
    fn a_deleted_gateway_takes_its_series_along() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let render = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        let status = BgpGatewayStatus {
            conditions: vec![condition("Ready", "True")],
            nodes: vec![node("a", "r1", (1, 2))],
            ..BgpGatewayStatus::default()
        };
        metrics.gateway("edge-ns", "edge", Some(&status));
        let text = render(&registry);
        for line in [
            r#"nonstop_operator_gateway_condition{namespace="edge-ns",gateway="edge",condition="Ready"} 1"#,
            r#"nonstop_operator_gateway_condition{namespace="edge-ns",gateway="edge",condition="Degraded"} 0"#,
            r#"nonstop_operator_gateway_sessions{namespace="edge-ns",gateway="edge",state="established"} 1"#,
            r#"nonstop_operator_gateway_nodes{namespace="edge-ns",gateway="edge",state="selected"} 1"#,
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
        metrics.gateway("edge-ns", "edge", None);
        assert!(!render(&registry).contains("gateway=\"edge\""), "series left after delete");
    }
}
