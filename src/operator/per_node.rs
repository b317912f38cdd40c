//! What each node's agent is told of its node: the labels its peers are
//! chosen by (`peers[].nodeSelector`: a top-of-rack router per rack), and
//! the node's own router ID and source addresses, from its annotations.
//! Pure.
//!
//! ```text
//!   node labels ──the keys the selectors name──▶ pod annotation nonstop.dev/node-labels (JSON)
//!                                                  │ downward API file, kept current by the kubelet
//!                                                  ▼
//!                                  agent --node-labels-file: runs the peers its node matches
//! ```
//!
//! The agent decides from the labels, so a node moved to another rack
//! moves its sessions without a new pod: the operator rewrites the
//! annotation ([`stale`]) and the agent follows. Only the labels a selector
//! names are passed, so other label changes touch no pod. A gateway
//! without selectors gets neither the annotation nor the file.
//!
//! A node's [`ROUTER_ID`] and [`LOCAL_ADDRESS`] annotations are read when
//! its agent's pod is made (the next rollout after a change): a router ID
//! is not something a running session can change. A value that does not
//! parse is ignored, and the gateway gets a Warning Event saying so.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::plan::{NodeView, PodView};
use crate::api::BgpGatewaySpec;

/// The pod annotation with the node's labels that the peers' selectors name.
pub const ANNOTATION: &str = "nonstop.dev/node-labels";
/// Where the agent reads that annotation (a downward API volume).
pub const DIR: &str = "/etc/nonstop/node";
pub const FILE: &str = "labels";

/// A node's own BGP identifier (an IPv4 address; an IPv6 one is hashed to
/// 32 bits as the node's address would be), over `spec.routerId` and the
/// node's address.
pub const ROUTER_ID: &str = "nonstop.dev/router-id";
/// A node's own source addresses, comma-separated, one per family at most:
/// for the sessions of peers that set no `localAddress`.
pub const LOCAL_ADDRESS: &str = "nonstop.dev/local-address";

/// What an agent pod carries of its node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The labels its peers are chosen by ([`annotation`]).
    pub labels: Option<String>,
    pub router_id: Option<IpAddr>,
    pub local_addresses: Vec<IpAddr>,
    /// Annotations that were ignored, and why.
    pub problems: Vec<String>,
}

/// What the agent on `node` is told, for a gateway of `spec`.
pub fn facts(spec: &BgpGatewaySpec, node: &NodeView) -> Facts {
    let mut facts = Facts { labels: annotation(spec, &node.labels), ..Facts::default() };
    let ignored = |key: &str, value: &str, why: String| {
        format!("node {}: annotation {key}={value:?} ignored: {why}", node.name)
    };
    if let Some(value) = node.annotations.get(ROUTER_ID) {
        match value.trim().parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => facts.router_id = Some(ip),
            Ok(ip) => {
                facts.problems.push(ignored(ROUTER_ID, value, format!("{ip} is no identifier")))
            }
            Err(_) => facts.problems.push(ignored(ROUTER_ID, value, "not an IP address".into())),
        }
    }
    if let Some(value) = node.annotations.get(LOCAL_ADDRESS) {
        let mut addresses = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                    addresses.clear();
                    facts.problems.push(ignored(
                        LOCAL_ADDRESS,
                        value,
                        format!("{ip} cannot be a source"),
                    ));
                    break;
                }
                Ok(ip) if addresses.iter().any(|a: &IpAddr| a.is_ipv4() == ip.is_ipv4()) => {
                    addresses.clear();
                    facts.problems.push(ignored(
                        LOCAL_ADDRESS,
                        value,
                        "two addresses of one family".into(),
                    ));
                    break;
                }
                Ok(ip) => addresses.push(ip),
                Err(_) => {
                    addresses.clear();
                    facts.problems.push(ignored(
                        LOCAL_ADDRESS,
                        value,
                        format!("{part:?} is not an IP address"),
                    ));
                    break;
                }
            }
        }
        facts.local_addresses = addresses;
    }
    facts
}

/// Whether any peer of the gateway is chosen per node.
pub fn chosen_per_node(spec: &BgpGatewaySpec) -> bool {
    spec.peers.iter().any(|p| !p.node_selector.is_empty())
}

/// The annotation's value for a node with `labels`: its labels that some
/// selector names, as JSON (keys sorted, so equal sets compare equal as
/// text). None when no peer has a selector.
pub fn annotation(spec: &BgpGatewaySpec, labels: &BTreeMap<String, String>) -> Option<String> {
    if !chosen_per_node(spec) {
        return None;
    }
    let named: BTreeMap<&String, &String> = labels
        .iter()
        .filter(|(key, _)| spec.peers.iter().any(|p| p.node_selector.contains_key(*key)))
        .collect();
    Some(serde_json::to_string(&named).expect("labels serialise"))
}

/// The sessions a node's agent runs: its peers, as the agent chooses them.
pub fn sessions_on(spec: &BgpGatewaySpec, labels: &BTreeMap<String, String>) -> u32 {
    spec.peers.iter().filter(|p| p.runs_on(labels)).count() as u32
}

/// The gateway's pods whose annotation is behind their node's labels, each
/// with the value it should have. Pods being deleted or that have ended are
/// left alone; so are nodes the operator no longer sees.
pub fn stale(spec: &BgpGatewaySpec, nodes: &[NodeView], pods: &[PodView]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pod in pods.iter().filter(|p| !p.deleting && !p.ended()) {
        let Some(node) = nodes.iter().find(|n| n.name == pod.node) else { continue };
        let Some(want) = annotation(spec, &node.labels) else { continue };
        if pod.node_labels.as_deref() != Some(want.as_str()) {
            out.push((pod.name.clone(), want));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::plan::Phase;

    fn spec(selectors: &[&[(&str, &str)]]) -> BgpGatewaySpec {
        let peers: Vec<serde_json::Value> = selectors
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let selector: BTreeMap<&str, &str> = s.iter().copied().collect();
                serde_json::json!({"address": format!("192.0.2.{}", i + 1), "asn": 65000, "nodeSelector": selector})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"asn": 65001, "peers": peers})).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_node_is_told_the_labels_its_peers_are_chosen_by() {
        let racks = spec(&[&[("rack", "a")], &[("rack", "b"), ("tier", "edge")], &[]]);
        type Labelled<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Labelled, &str, u32)] = &[
            ("rack a", &[("rack", "a"), ("zone", "x")], r#"{"rack":"a"}"#, 2),
            (
                "rack b, edge",
                &[("tier", "edge"), ("rack", "b")],
                r#"{"rack":"b","tier":"edge"}"#,
                2,
            ),
            ("rack b, not edge", &[("rack", "b")], r#"{"rack":"b"}"#, 1),
            ("no rack", &[("zone", "x")], "{}", 1),
        ];
        for (case, node, want, sessions) in cases {
            assert_eq!(annotation(&racks, &labels(node)).as_deref(), Some(*want), "{case}");
            assert_eq!(sessions_on(&racks, &labels(node)), *sessions, "{case}");
        }
        let plain = spec(&[&[], &[]]);
        assert_eq!(annotation(&plain, &labels(&[("rack", "a")])), None);
        assert_eq!(sessions_on(&plain, &labels(&[])), 2);
    }

    /// A node's annotations as the agent is told them; a bad value is
    /// ignored whole, and said.
    #[test]
    fn a_nodes_own_router_id_and_source_addresses_come_from_its_annotations() {
        let plain = spec(&[&[]]);
        let node = |pairs: &[(&str, &str)]| NodeView {
            name: "n1".into(),
            annotations: labels(pairs),
            ..Default::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a [&'a str], &'a str);
        let cases: &[Case] = &[
            (&[], None, &[], ""),
            (&[(ROUTER_ID, "192.0.2.7")], Some("192.0.2.7"), &[], ""),
            (&[(ROUTER_ID, " 2001:db8::7 ")], Some("2001:db8::7"), &[], ""),
            (
                &[(ROUTER_ID, "rack-7")],
                None,
                &[],
                "nonstop.dev/router-id=\"rack-7\" ignored: not an IP address",
            ),
            (&[(ROUTER_ID, "0.0.0.0")], None, &[], "0.0.0.0 is no identifier"),
            (&[(LOCAL_ADDRESS, "192.0.2.7, 2001:db8::7")], None, &["192.0.2.7", "2001:db8::7"], ""),
            (&[(LOCAL_ADDRESS, "192.0.2.7,192.0.2.8")], None, &[], "two addresses of one family"),
            (&[(LOCAL_ADDRESS, "192.0.2.7,eth0")], None, &[], "\"eth0\" is not an IP address"),
            (&[(LOCAL_ADDRESS, "::")], None, &[], ":: cannot be a source"),
        ];
        for (annotations, router_id, local, problem) in cases {
            let got = facts(&plain, &node(annotations));
            assert_eq!(got.router_id, router_id.map(ip), "{annotations:?}");
            let want: Vec<IpAddr> = local.iter().map(|a| ip(a)).collect();
            assert_eq!(got.local_addresses, want, "{annotations:?}");
            match got.problems.as_slice() {
                [] => assert!(problem.is_empty(), "{annotations:?}: no problem said"),
                [said] => {
                    assert!(said.starts_with("node n1: ") && said.contains(problem), "{said}")
                }
                more => panic!("{more:?}"),
            }
        }
    }

    /// The example the README walks through: each rack's nodes run their
    /// own router's session and the route reflector's.
    #[test]
    fn the_racks_example_gives_each_node_its_racks_router() {
        let text = include_str!("../../examples/racks.yaml");
        let value: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        let gw = crate::api::BgpGateway::checked(value).unwrap();
        let rack =
            |r: &str| labels(&[("topology.example/rack", r), ("nonstop.dev/gateway", "edge")]);
        let peers_of = |r: &str| -> Vec<String> {
            gw.spec
                .peers
                .iter()
                .filter(|p| p.runs_on(&rack(r)))
                .map(|p| p.address.to_string())
                .collect()
        };
        assert_eq!(peers_of("a"), ["10.1.0.1", "10.255.255.1"]);
        assert_eq!(peers_of("b"), ["10.2.0.1", "10.255.255.1"]);
        assert_eq!(sessions_on(&gw.spec, &rack("a")), 2);
        assert_eq!(
            annotation(&gw.spec, &rack("b")).as_deref(),
            Some(r#"{"topology.example/rack":"b"}"#)
        );
    }

    #[test]
    fn pods_behind_their_nodes_labels_are_found_and_no_others() {
        let racks = spec(&[&[("rack", "a")], &[("rack", "b")]]);
        let node = |name: &str, rack: &str| NodeView {
            name: name.into(),
            labels: labels(&[("rack", rack), ("kubernetes.io/hostname", name)]),
            ..Default::default()
        };
        let nodes = [node("n1", "a"), node("n2", "b"), node("n3", "a")];
        let pod = |name: &str, on: &str, seen: Option<&str>| PodView {
            name: name.into(),
            uid: None,
            node: on.into(),
            revision: "r1".into(),
            created: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            deleting: false,
            phase: Phase::Running,
            ready: true,
            failure: None,
            stopped: false,
            node_labels: seen.map(String::from),
        };
        let pods = [
            pod("current", "n1", Some(r#"{"rack":"a"}"#)),
            pod("moved", "n2", Some(r#"{"rack":"a"}"#)),
            pod("made-before", "n3", None),
            PodView { deleting: true, ..pod("going", "n2", None) },
            PodView { phase: Phase::Succeeded, ..pod("retired", "n2", None) },
            pod("node-gone", "n9", None),
        ];
        assert_eq!(
            stale(&racks, &nodes, &pods),
            vec![
                ("moved".to_string(), r#"{"rack":"b"}"#.to_string()),
                ("made-before".to_string(), r#"{"rack":"a"}"#.to_string()),
            ]
        );
        assert!(stale(&spec(&[&[]]), &nodes, &pods).is_empty(), "no selectors, no annotation");
    }
}
