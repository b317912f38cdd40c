//! Which nodes a gateway serves, and what a node's maintenance state asks
//! of its speaker. Pure: the planner asks [`fit`] about each node.
//!
//! ```text
//!   node ──nodeSelector, user taints──▶ NotSelected   decommission (routes leave)
//!        ──exclude-from-external-load-balancers──▶ Excluded   decommission, start none
//!        ──cordoned (spec.unschedulable)──▶ Cordoned   keep and upgrade a running agent;
//!                                                       start none from nothing (drained)
//!        ──otherwise──▶ Serve
//! ```
//!
//! Like a DaemonSet, a gateway tolerates the taints Kubernetes puts on a
//! node by itself (not-ready, unreachable, pressure, cordon): they say
//! something about the node, not that its routes should go. Routes leave a
//! node only when someone asks: the node stops matching, it is labelled
//! [`EXCLUDE_LABEL`], or it is drained (`kubectl drain` cordons the node,
//! then evicts the agent pod; the evicted agent withdraws gracefully and,
//! while the node stays cordoned, no new one starts).

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::plan::NodeView;
use crate::api::BgpGateway;

/// The standard label that takes a node out of external load balancing
/// (it is what cloud load balancers and MetalLB honour too).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The taints Kubernetes adds by itself, with the effect a DaemonSet pod
/// tolerates each with. A gateway's pods carry these tolerations and the
/// planner ignores these taints.
pub const SYSTEM_TAINTS: [(&str, &str); 7] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ("node.kubernetes.io/network-unavailable", "NoSchedule"),
];

/// What a node is to a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It runs an agent of the gateway.
    Serve,
    /// Cordoned: a running agent keeps serving (and is upgraded in place);
    /// a node without one — its agent was evicted by a drain — stays
    /// without one until it is uncordoned.
    Cordoned,
    /// Labelled [`EXCLUDE_LABEL`]: its agent withdraws and none starts.
    Excluded,
    /// It does not match the node selector, or has a taint the gateway
    /// does not tolerate.
    NotSelected,
    /// Selected, but another gateway keeps a port there that this one
    /// needs ([`super::coexist`]): no agent starts. The planner decides it;
    /// [`fit`] never returns it.
    Conflicted,
}

/// What `gw` makes of `node`.
pub fn fit(gw: &BgpGateway, node: &NodeView) -> Fit {
    let labels = gw.spec.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v));
    let taints = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .filter(|t| !is_system(t))
        .all(|t| gw.spec.tolerations.iter().any(|tol| tolerates(tol, t)));
    if !(labels && taints) {
        Fit::NotSelected
    } else if node.labels.contains_key(EXCLUDE_LABEL) {
        Fit::Excluded
    } else if node.unschedulable {
        Fit::Cordoned
    } else {
        Fit::Serve
    }
}

/// Whether a node runs an agent of `gw` at all (serving or cordoned).
pub fn selects(gw: &BgpGateway, node: &NodeView) -> bool {
    matches!(fit(gw, node), Fit::Serve | Fit::Cordoned)
}

fn is_system(taint: &Taint) -> bool {
    SYSTEM_TAINTS.iter().any(|(key, _)| taint.key == *key)
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = tol.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key);
    let value = match tol.operator.as_deref() {
        Some("Exists") => true,
        _ => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect && key && value
}

/// The tolerations of an agent pod: the gateway's own, then the system
/// set, with no `tolerationSeconds` — an agent is never evicted because
/// its node is not ready or unreachable (its routers still hold its routes).
pub fn pod_tolerations(gw: &BgpGateway) -> Vec<Toleration> {
    let mut all = gw.spec.tolerations.clone();
    all.extend(SYSTEM_TAINTS.iter().map(|(key, effect)| Toleration {
        key: Some((*key).into()),
        operator: Some("Exists".into()),
        effect: Some((*effect).into()),
        ..Default::default()
    }));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(selector: &str, tolerations: &str) -> BgpGateway {
        let yaml = format!(
            "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata: {{name: edge, namespace: ns}}\n\
             spec:\n  image: i\n  asn: 65001\n  nodeSelector: {{{selector}}}\n  tolerations: [{tolerations}]\n  \
             peers: [{{address: 10.99.0.1, asn: 65000}}]\n"
        );
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint { key: key.into(), effect: effect.into(), value: None, time_added: None }
    }

    fn node(labels: &[(&str, &str)], taints: Vec<Taint>, unschedulable: bool) -> NodeView {
        NodeView {
            name: "n1".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            taints,
            unschedulable,
            ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn what_a_node_is_to_a_gateway() {
        let gw = gateway("gw: edge", "");
        let edge = [("gw", "edge")];
        let cases: Vec<(&str, NodeView, Fit)> = vec![
            ("matching labels", node(&edge, vec![], false), Fit::Serve),
            ("other labels", node(&[("gw", "core")], vec![], false), Fit::NotSelected),
            (
                "a user taint it does not tolerate",
                node(&edge, vec![taint("edge", "NoSchedule")], false),
                Fit::NotSelected,
            ),
            (
                "a PreferNoSchedule taint",
                node(&edge, vec![taint("x", "PreferNoSchedule")], false),
                Fit::Serve,
            ),
            (
                "kubectl cordon",
                node(&edge, vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")], true),
                Fit::Cordoned,
            ),
            (
                "kubelet stopped",
                node(
                    &edge,
                    vec![
                        taint("node.kubernetes.io/unreachable", "NoExecute"),
                        taint("node.kubernetes.io/unreachable", "NoSchedule"),
                    ],
                    false,
                ),
                Fit::Serve,
            ),
            (
                "node not ready",
                node(&edge, vec![taint("node.kubernetes.io/not-ready", "NoExecute")], false),
                Fit::Serve,
            ),
            (
                "memory pressure",
                node(&edge, vec![taint("node.kubernetes.io/memory-pressure", "NoSchedule")], false),
                Fit::Serve,
            ),
            (
                "disk pressure",
                node(&edge, vec![taint("node.kubernetes.io/disk-pressure", "NoSchedule")], false),
                Fit::Serve,
            ),
            (
                "pid pressure",
                node(&edge, vec![taint("node.kubernetes.io/pid-pressure", "NoSchedule")], false),
                Fit::Serve,
            ),
            (
                "network unavailable",
                node(
                    &edge,
                    vec![taint("node.kubernetes.io/network-unavailable", "NoSchedule")],
                    false,
                ),
                Fit::Serve,
            ),
            (
                "exclude label",
                node(&[("gw", "edge"), (EXCLUDE_LABEL, "")], vec![], false),
                Fit::Excluded,
            ),
            (
                "exclude label on a cordoned node",
                node(&[("gw", "edge"), (EXCLUDE_LABEL, "true")], vec![], true),
                Fit::Excluded,
            ),
            (
                "exclude label, not selected",
                node(&[(EXCLUDE_LABEL, "")], vec![], false),
                Fit::NotSelected,
            ),
        ];
        for (case, node, want) in cases {
            assert_eq!(fit(&gw, &node), want, "{case}");
        }
    }

    #[test]
    fn a_toleration_lets_a_user_taint_through() {
        let tainted = node(&[], vec![taint("edge", "NoSchedule")], false);
        assert_eq!(fit(&gateway("", ""), &tainted), Fit::NotSelected);
        assert_eq!(fit(&gateway("", "{key: edge, operator: Exists}"), &tainted), Fit::Serve);
        assert_eq!(fit(&gateway("", "{key: edge, value: a}"), &tainted), Fit::NotSelected);
        assert_eq!(fit(&gateway("", "{operator: Exists}"), &tainted), Fit::Serve);
    }

    #[test]
    fn pods_tolerate_what_a_daemonset_pod_does_forever() {
        let tolerations = pod_tolerations(&gateway("", "{key: edge, operator: Exists}"));
        assert_eq!(tolerations[0].key.as_deref(), Some("edge"), "the gateway's own come first");
        for (key, effect) in SYSTEM_TAINTS {
            let t = tolerations.iter().find(|t| t.key.as_deref() == Some(key)).unwrap();
            assert_eq!(
                (t.operator.as_deref(), t.effect.as_deref(), t.toleration_seconds),
                (Some("Exists"), Some(effect), None),
                "{key}"
            );
        }
    }
}
