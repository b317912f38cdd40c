//! What each node's agent is told of its node: the labels its peers are
//! chosen by (`peers[].nodeSelector`: a top-of-rack router per rack), the
//! annotations its peers take their addresses from (`peers[].addressFrom`:
//! each node's own top-of-rack router), and the node's own router ID and
//! source addresses, from its annotations. Pure.
//!
//! ```text
//!   node labels ──the keys the selectors name──▶ pod annotation nonstop.dev/node-labels (JSON)
//!   node annotations ──the keys addressFrom names──▶ nonstop.dev/node-annotations (JSON)
//!                                                  │ downward API files, kept current by the kubelet
//!                                                  ▼
//!        agent --node-labels-file, --node-annotations-file: runs the peers its node
//!        matches, each at its node's address
//! ```
//!
//! The agent decides from the files, so a node moved to another rack
//! moves its sessions without a new pod: the operator rewrites the pod's
//! annotations ([`stale`]) and the agent follows. Only the labels a selector
//! names and the annotations a peer names are passed, so other changes
//! touch no pod. A gateway that names none gets neither the pod
//! annotation nor the file.
//!
//! A node's [`ROUTER_ID`] and [`LOCAL_ADDRESS`] annotations are read when
//! its agent's pod is made (the next rollout after a change): a router ID
//! is not something a running session can change. A value that does not
//! parse is ignored, and the gateway gets a Warning Event saying so.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nonstop_agent::config::NodeFacts;
use nonstop_agent::config::node::choose;

use super::plan::{NodeView, PodView};
use crate::api::BgpGatewaySpec;

/// The pod annotation with the node's labels that the peers' selectors name.
pub const ANNOTATION: &str = "nonstop.dev/node-labels";
/// The pod annotation with the node's annotations that peers take their
/// address from.
pub const ADDRESSES: &str = "nonstop.dev/node-annotations";
/// Where the agent reads those pod annotations (a downward API volume).
pub const DIR: &str = "/etc/nonstop/node";
pub const FILE: &str = "labels";
pub const ADDRESSES_FILE: &str = "annotations";

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
    /// The annotations its peers take their addresses from ([`addresses`]).
    pub addresses: Option<String>,
    pub router_id: Option<IpAddr>,
    pub local_addresses: Vec<IpAddr>,
    /// What is wrong with the node's annotations: each with the reason of
    /// the Warning Event that says it.
    pub problems: Vec<(&'static str, String)>,
}

/// The reason of the Warning Event for a node annotation that is ignored.
pub const IGNORED: &str = "NodeAnnotationIgnored";
/// The reason of the Warning Event for a node without an address for a
/// peer that takes its address from the node.
pub const NO_PEER_ADDRESS: &str = "NoPeerAddress";

/// What the agent on `node` is told, for a gateway of `spec`.
pub fn facts(spec: &BgpGatewaySpec, node: &NodeView) -> Facts {
    let mut facts = Facts {
        labels: annotation(spec, &node.labels),
        addresses: addresses(spec, &node.annotations),
        ..Facts::default()
    };
    let ignored = |key: &str, value: &str, why: String| {
        (IGNORED, format!("node {}: annotation {key}={value:?} ignored: {why}", node.name))
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
        match source_addresses(value) {
            Ok(addresses) => facts.local_addresses = addresses,
            Err(why) => facts.problems.push(ignored(LOCAL_ADDRESS, value, why)),
        }
    }
    for problem in unaddressed(spec, node) {
        facts.problems.push((NO_PEER_ADDRESS, format!("node {}: {problem}", node.name)));
    }
    facts
}

/// Why each peer that runs on `node` but takes its address from the node
/// has none there (an annotation missing, empty or not an address): the
/// node runs no session for it, and is not Ready for the gateway.
pub fn unaddressed(spec: &BgpGatewaySpec, node: &NodeView) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in spec.peers.iter().enumerate().filter(|(_, p)| p.runs_on(&node.labels)) {
        let by_annotation = p.address_from.as_ref().filter(|f| f.node_annotation.is_some());
        if let Some(Err(why)) = by_annotation.map(|f| f.addresses(&node.annotations)) {
            out.push(format!("peers[{i}] has no address there: {why}"));
        }
    }
    out
}

/// The source addresses in a [`LOCAL_ADDRESS`] value: comma-separated, at
/// most one per family, each one a host can send from.
fn source_addresses(value: &str) -> Result<Vec<IpAddr>, String> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| format!("{part:?} is not an IP address"))?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!("{ip} cannot be a source"));
        }
        if addresses.iter().any(|a| a.is_ipv4() == ip.is_ipv4()) {
            return Err("two addresses of one family".into());
        }
        addresses.push(ip);
    }
    Ok(addresses)
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

/// The annotations' value for a node with `annotations`: those some
/// peer's `addressFrom` names, as JSON (keys sorted). None when no peer
/// takes its address from its node.
pub fn addresses(spec: &BgpGatewaySpec, annotations: &BTreeMap<String, String>) -> Option<String> {
    let named: Vec<&str> = named_annotations(spec).collect();
    if named.is_empty() {
        return None;
    }
    let passed: BTreeMap<&String, &String> =
        annotations.iter().filter(|(key, _)| named.contains(&key.as_str())).collect();
    Some(serde_json::to_string(&passed).expect("annotations serialise"))
}

/// The node annotations the gateway's peers take their addresses from.
pub fn named_annotations(spec: &BgpGatewaySpec) -> impl Iterator<Item = &str> {
    spec.peers.iter().filter_map(|p| p.address_from.as_ref()?.node_annotation.as_deref())
}

/// The sessions a node's agent runs: its peers, as the agent chooses them,
/// one per address for a peer whose address comes from the node's
/// annotation. A peer at the node's default gateway counts as one: the
/// node's routes are the agent's to read, not the API's (a multipath
/// default route gives more, and a node without one, none).
pub fn sessions_on(spec: &BgpGatewaySpec, node: &NodeView) -> u32 {
    let (at_gateway, rest): (Vec<_>, Vec<_>) =
        spec.peers.iter().cloned().partition(|p| p.follows_default_route());
    let facts = NodeFacts {
        labels: Some(node.labels.clone()),
        annotations: Some(node.annotations.clone()),
        default_routes: None,
    };
    let chosen = choose(&rest, &facts).map_or(0, |(chosen, _)| chosen.len());
    (chosen + at_gateway.iter().filter(|p| p.runs_on(&node.labels)).count()) as u32
}

/// The gateway's pods whose annotations are behind their node's labels or
/// annotations, each with the pod annotations to write. Pods being deleted
/// or that have ended are left alone; so are nodes the operator no longer
/// sees.
pub fn stale(
    spec: &BgpGatewaySpec,
    nodes: &[NodeView],
    pods: &[PodView],
) -> Vec<(String, BTreeMap<&'static str, String>)> {
    let mut out = Vec::new();
    for pod in pods.iter().filter(|p| !p.deleting && !p.ended()) {
        let Some(node) = nodes.iter().find(|n| n.name == pod.node) else { continue };
        let mut write = BTreeMap::new();
        let wanted = [
            (ANNOTATION, annotation(spec, &node.labels), &pod.node_labels),
            (ADDRESSES, addresses(spec, &node.annotations), &pod.node_addresses),
        ];
        for (key, want, has) in wanted {
            if let Some(want) = want
                && has.as_deref() != Some(want.as_str())
            {
                write.insert(key, want);
            }
        }
        if !write.is_empty() {
            out.push((pod.name.clone(), write));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::plan::Phase;

    fn spec_of(selectors: &[&[(&str, &str)]]) -> BgpGatewaySpec {
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

    /// A running pod on `node`, told nothing of it.
    fn running(name: &str, node: &str) -> PodView {
        PodView {
            name: name.into(),
            uid: None,
            node: node.into(),
            revision: "r1".into(),
            created: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            deleting: false,
            phase: Phase::Running,
            ready: true,
            failure: None,
            stopped: false,
            node_labels: None,
            node_addresses: None,
        }
    }

    fn labelled(pairs: &[(&str, &str)]) -> NodeView {
        NodeView { name: "n1".into(), labels: labels(pairs), ..Default::default() }
    }

    #[test]
    fn a_node_is_told_the_labels_its_peers_are_chosen_by() {
        let racks = spec_of(&[&[("rack", "a")], &[("rack", "b"), ("tier", "edge")], &[]]);
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
            assert_eq!(sessions_on(&racks, &labelled(node)), *sessions, "{case}");
        }
        let plain = spec_of(&[&[], &[]]);
        assert_eq!(annotation(&plain, &labels(&[("rack", "a")])), None);
        assert_eq!(sessions_on(&plain, &labelled(&[])), 2);
    }

    /// A node's annotations as the agent is told them; a bad value is
    /// ignored whole, and said.
    #[test]
    fn a_nodes_own_router_id_and_source_addresses_come_from_its_annotations() {
        let plain = spec_of(&[&[]]);
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
                [(IGNORED, said)] => {
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
        let node = NodeView { labels: rack("a"), ..Default::default() };
        assert_eq!(sessions_on(&gw.spec, &node), 2);
        assert_eq!(
            annotation(&gw.spec, &rack("b")).as_deref(),
            Some(r#"{"topology.example/rack":"b"}"#)
        );
    }

    #[test]
    fn pods_behind_their_nodes_labels_are_found_and_no_others() {
        let racks = spec_of(&[&[("rack", "a")], &[("rack", "b")]]);
        let node = |name: &str, rack: &str| NodeView {
            name: name.into(),
            labels: labels(&[("rack", rack), ("kubernetes.io/hostname", name)]),
            ..Default::default()
        };
        let nodes = [node("n1", "a"), node("n2", "b"), node("n3", "a")];
        let pod = |name: &str, on: &str, seen: Option<&str>| PodView {
            node_labels: seen.map(String::from),
            ..running(name, on)
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
                (
                    "moved".to_string(),
                    BTreeMap::from([(ANNOTATION, r#"{"rack":"b"}"#.to_string())])
                ),
                (
                    "made-before".to_string(),
                    BTreeMap::from([(ANNOTATION, r#"{"rack":"a"}"#.to_string())])
                ),
            ]
        );
        assert!(stale(&spec_of(&[&[]]), &nodes, &pods).is_empty(), "no selectors, no annotation");
    }

    /// A gateway whose peer takes its address from a node annotation: each
    /// node is told that annotation (and no other), runs one session per
    /// address in it, and a node without a usable one is said.
    #[test]
    fn a_node_is_told_the_annotation_its_peers_address_comes_from() {
        let spec: BgpGatewaySpec = serde_json::from_value(serde_json::json!({
            "asn": 65001,
            "peers": [
                {"address": "192.0.2.1", "asn": 65000},
                {"addressFrom": {"nodeAnnotation": "example.com/tor"}, "asn": 65000},
            ],
        }))
        .unwrap();
        let node = |pairs: &[(&str, &str)]| NodeView {
            name: "n1".into(),
            annotations: labels(pairs),
            ..Default::default()
        };
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u32, &'a str);
        let cases: &[Case] = &[
            (&[("example.com/tor", "10.1.0.1")], r#"{"example.com/tor":"10.1.0.1"}"#, 2, ""),
            (
                &[
                    ("example.com/tor", "10.1.0.1,10.1.1.1"),
                    ("other", "x"),
                    (ROUTER_ID, "10.9.9.9"),
                ],
                r#"{"example.com/tor":"10.1.0.1,10.1.1.1"}"#,
                3,
                "",
            ),
            (
                &[],
                "{}",
                1,
                "node n1: peers[1] has no address there: the node has no annotation example.com/tor",
            ),
            (
                &[("example.com/tor", "tor-1")],
                r#"{"example.com/tor":"tor-1"}"#,
                1,
                "\"tor-1\" is not an IP address",
            ),
        ];
        for (annotations, told, sessions, problem) in cases {
            let n = node(annotations);
            let facts = facts(&spec, &n);
            assert_eq!(facts.addresses.as_deref(), Some(*told), "{annotations:?}");
            assert_eq!(facts.labels, None, "no selectors, no labels");
            assert_eq!(sessions_on(&spec, &n), *sessions, "{annotations:?}");
            match facts.problems.as_slice() {
                [] => assert!(problem.is_empty(), "{annotations:?}: no problem said"),
                [(NO_PEER_ADDRESS, said)] => assert!(said.contains(problem), "{said}"),
                more => panic!("{more:?}"),
            }
        }
        assert_eq!(addresses(&spec_of(&[&[]]), &labels(&[("example.com/tor", "x")])), None);

        // A re-annotated node's pod is told again; its labels are not (none named).
        let nodes = [node(&[("example.com/tor", "10.1.1.1")])];
        let pod = PodView {
            node_addresses: Some(r#"{"example.com/tor":"10.1.0.1"}"#.into()),
            ..running("p1", "n1")
        };
        let want = BTreeMap::from([(ADDRESSES, r#"{"example.com/tor":"10.1.1.1"}"#.to_string())]);
        assert_eq!(
            stale(&spec, &nodes, std::slice::from_ref(&pod)),
            vec![("p1".to_string(), want)]
        );
        let current =
            PodView { node_addresses: Some(r#"{"example.com/tor":"10.1.1.1"}"#.into()), ..pod };
        assert!(stale(&spec, &nodes, &[current]).is_empty());
    }

    /// A peer at each node's default gateway: the node's routes are its
    /// agent's to read, so the operator counts one session for it where it
    /// runs, names no annotation and says no problem.
    #[test]
    fn a_peer_at_the_default_gateway_counts_once_where_it_runs() {
        let spec: BgpGatewaySpec = serde_json::from_value(serde_json::json!({
            "asn": 65001,
            "peers": [
                {"address": "192.0.2.1", "asn": 65000},
                {"addressFrom": {"defaultGateway": {"family": "ipv4"}}, "asn": 65000},
                {"addressFrom": {"defaultGateway": {"family": "ipv6"}}, "asn": 65000,
                 "nodeSelector": {"stack": "dual"}},
            ],
        }))
        .unwrap();
        assert_eq!(named_annotations(&spec).count(), 0);
        for (node_labels, sessions) in [(labels(&[]), 2), (labels(&[("stack", "dual")]), 3)] {
            let n = NodeView { name: "n1".into(), labels: node_labels, ..Default::default() };
            assert_eq!(sessions_on(&spec, &n), sessions, "{:?}", n.labels);
            assert_eq!(facts(&spec, &n).problems, vec![], "{:?}", n.labels);
            assert_eq!(facts(&spec, &n).addresses, None);
        }
    }
}
