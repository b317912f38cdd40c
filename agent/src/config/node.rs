//! What the agent knows of its node, and how that picks and addresses its
//! peers: a peer with a `nodeSelector` is run only on the nodes whose
//! labels match it (a top-of-rack router per rack); a peer with
//! `addressFrom` is dialled at the address (or addresses) a node annotation
//! or the node's default route gives each node (each node's own
//! top-of-rack router). Pure.
//!
//! ```text
//!   config peers ──┬─ nodeSelector ✗ node labels ────────────▶ not on this node
//!                  ├─ addressFrom: annotation or default route
//!                  │    missing or unusable ───────────────────▶ not on this node, noted
//!                  └─ the rest ──▶ one peer per address ──▶ the config this agent runs
//! ```
//!
//! The operator writes the labels the selectors name and the annotations
//! the peers name into the agent's pod; the kubelet keeps them as files,
//! which the agent reads again while it runs, so a node moved to another
//! rack moves its sessions without a new pod.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Peer};

/// A node's labels, as the agent learns them.
pub type NodeLabels = BTreeMap<String, String>;

/// The annotations of a node that peers take their address from.
pub type NodeAnnotations = BTreeMap<String, String>;

/// What the agent has been told of its node; None where it has not been
/// told (no file was passed, or no peer needs the node's routes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    pub labels: Option<NodeLabels>,
    pub annotations: Option<NodeAnnotations>,
    /// The node's default routes (its main routing table).
    pub default_routes: Option<Vec<DefaultRoute>>,
}

/// A default route of the node, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub family: IpFamily,
    /// Its metric: only the routes of the lowest one carry traffic.
    pub metric: u32,
    /// Its next hops (several for a multipath route); none for a route
    /// through a device only, or through a nexthop object.
    pub gateways: Vec<IpAddr>,
}

/// Where each node finds a neighbour's address: one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AddressFrom {
    /// A node annotation whose value is the neighbour's address for that
    /// node, or several, comma-separated (a session with each: a node wired
    /// to two top-of-rack routers). A node without it, or with a value that
    /// is no address, does not peer with it. The agent reads its node's
    /// annotations from `--node-annotations-file` (the operator passes
    /// them) and follows changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 317)))]
    pub node_annotation: Option<String>,
    /// The next hop of the node's default route in this family: its
    /// top-of-rack router, on a routed (L3) fabric. A multipath default
    /// route gives a session with each next hop. The agent reads its node's
    /// main routing table (it runs in the node's network) and follows
    /// changes; a node without such a route, or whose next hop is
    /// link-local, does not peer with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_gateway: Option<DefaultGateway>,
}

/// Which of the node's default routes gives the neighbour's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DefaultGateway {
    pub family: IpFamily,
}

/// An address family, as a default route has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> IpFamily {
        if ip.is_ipv4() { IpFamily::Ipv4 } else { IpFamily::Ipv6 }
    }

    /// As the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
        }
    }

    /// As people write it.
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        }
    }
}

impl AddressFrom {
    /// The addresses a node with `annotations` dials this neighbour at, or
    /// why it has none. Only for a neighbour named by an annotation.
    pub fn addresses(&self, annotations: &NodeAnnotations) -> Result<Vec<IpAddr>, String> {
        let Some(key) = &self.node_annotation else {
            return Err("its address comes from the node's routes".into());
        };
        let Some(value) = annotations.get(key) else {
            return Err(format!("the node has no annotation {key}"));
        };
        let mut addresses = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                    return Err(format!("annotation {key}={value:?}: {ip} cannot be dialled"));
                }
                Ok(ip) if !addresses.contains(&ip) => addresses.push(ip),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "annotation {key}={value:?}: {part:?} is not an IP address"
                    ));
                }
            }
        }
        if addresses.is_empty() {
            return Err(format!("annotation {key} is empty"));
        }
        Ok(addresses)
    }
}

impl DefaultGateway {
    /// The next hops of the node's default route of this family, or why
    /// there is none to dial: of the lowest metric (the ones in use), in
    /// the kernel's order, each once.
    pub fn addresses(&self, routes: &[DefaultRoute]) -> Result<Vec<IpAddr>, String> {
        let family = self.family.name();
        let ours: Vec<&DefaultRoute> = routes.iter().filter(|r| r.family == self.family).collect();
        let Some(metric) = ours.iter().map(|r| r.metric).min() else {
            return Err(format!("the node has no {family} default route"));
        };
        let mut addresses = Vec::new();
        for ip in ours.iter().filter(|r| r.metric == metric).flat_map(|r| &r.gateways) {
            let link_local = match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_unicast_link_local(),
            };
            if link_local {
                return Err(format!(
                    "its {family} default route's next hop {ip} is link-local, which a \
                     session cannot be dialled at here: name the router's address in a node \
                     annotation instead"
                ));
            }
            if !addresses.contains(ip) {
                addresses.push(*ip);
            }
        }
        if addresses.is_empty() {
            return Err(format!("the node's {family} default route has no next hop address"));
        }
        Ok(addresses)
    }
}

impl Peer {
    /// Whether a node with `labels` peers with this neighbour.
    pub fn runs_on(&self, labels: &NodeLabels) -> bool {
        self.node_selector.iter().all(|(key, value)| labels.get(key) == Some(value))
    }

    /// The neighbour as a person reads it: its address, or where each
    /// node finds it.
    pub fn named(&self) -> String {
        match &self.address_from {
            Some(AddressFrom { node_annotation: Some(key), .. }) => {
                format!("the address in node annotation {key}")
            }
            Some(AddressFrom { default_gateway: Some(gateway), .. }) => {
                format!("the node's {} default gateway", gateway.family.as_str())
            }
            _ => self.address.to_string(),
        }
    }

    /// Whether its address is the next hop of the node's default route.
    pub fn follows_default_route(&self) -> bool {
        self.address_from.as_ref().is_some_and(|f| f.default_gateway.is_some())
    }
}

impl Config {
    /// The config of the agent on the node it has been told of: its peers
    /// as [`choose`] picks and addresses them, with the notes of why some
    /// are not run.
    pub fn on_node(mut self, node: &NodeFacts) -> Result<(Config, Vec<String>), ConfigError> {
        let (chosen, notes) = choose(&self.peers, node)?;
        self.peers = chosen
            .into_iter()
            .map(|(i, address)| Peer { address, ..self.peers[i].clone() })
            .collect();
        Ok((self, notes))
    }
}

/// The peers a node runs: (index in the config's `peers`, address).
pub type Chosen = Vec<(usize, IpAddr)>;

/// The peers a node runs, each as (its index in `peers`, the address it is
/// dialled at): those whose `nodeSelector` the node matches, an
/// `addressFrom` peer once per address the node's annotation gives. Peers
/// the node has no usable address for are left out, each with a note
/// saying why. A peer that needs what the agent was not told (labels,
/// annotations) is an error: the agent cannot tell whether, or where, to
/// dial it.
pub fn choose(peers: &[Peer], node: &NodeFacts) -> Result<(Chosen, Vec<String>), ConfigError> {
    let mut notes = Vec::new();
    // The fixed ones first, so that an annotation naming a configured
    // neighbour cannot take its place.
    let mut chosen: Chosen = Vec::new();
    let mut addressed: Vec<(usize, IpAddr)> = Vec::new();
    for (index, p) in peers.iter().enumerate() {
        match &node.labels {
            Some(labels) if !p.runs_on(labels) => continue,
            None if !p.node_selector.is_empty() => {
                return Err(ConfigError::NodeUnknown {
                    index,
                    peer: p.named(),
                    needs: "has a nodeSelector",
                    facts: "labels",
                    flag: "--node-labels-file",
                });
            }
            _ => {}
        }
        let Some(from) = &p.address_from else {
            chosen.push((index, p.address));
            continue;
        };
        let found = match (&from.default_gateway, &node.annotations, &node.default_routes) {
            (Some(gateway), _, Some(routes)) => gateway.addresses(routes),
            (Some(_), _, None) => {
                return Err(ConfigError::NodeRoutes {
                    needs: format!("peers[{index}] ({}) takes its address from", p.named()),
                    message: "not read".into(),
                });
            }
            (None, Some(annotations), _) => from.addresses(annotations),
            (None, None, _) => {
                return Err(ConfigError::NodeUnknown {
                    index,
                    peer: p.named(),
                    needs: "takes its address from a node annotation",
                    facts: "annotations",
                    flag: "--node-annotations-file",
                });
            }
        };
        match found {
            Ok(addresses) => addressed.extend(addresses.into_iter().map(|a| (index, a))),
            Err(why) => notes.push(format!("peers[{index}] is not run on this node: {why}")),
        }
    }
    for (index, at) in addressed {
        if let Some((other, _)) = chosen.iter().find(|(_, a)| *a == at) {
            notes.push(format!(
                "peers[{index}] is not run at {at} on this node: peers[{other}] is there"
            ));
        } else if let Some(local) =
            peers[index].local_address.filter(|l| l.is_ipv4() != at.is_ipv4())
        {
            notes.push(format!(
                "peers[{index}] is not run at {at} on this node: its localAddress {local} \
                 is of the other family"
            ));
        } else {
            chosen.push((index, at));
        }
    }
    Ok((chosen, notes))
}

/// A node's labels or annotations from the text of their file: a JSON
/// object of strings, as the operator writes it into the pod (an empty
/// file, which a pod shows for an annotation not yet written, is none).
pub fn parse_node_map(text: &str, path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(text).map_err(|e| ConfigError::NodeFile {
        path: path.to_owned(),
        message: format!("not a JSON object of names and values: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("gw.yaml")).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn addresses(config: &Config) -> Vec<String> {
        config.peers.iter().map(|p| p.address.to_string()).collect()
    }

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    /// Which peers an agent runs on a node: those whose every selector
    /// label the node has with the same value; a peer without a selector
    /// everywhere.
    #[test]
    fn a_node_runs_the_peers_its_labels_select() {
        let config = parse(
            "asn: 65001\npeers:\n\
            - {address: 192.0.2.1, asn: 65000}\n\
            - {address: 192.0.2.2, asn: 65000, nodeSelector: {rack: a}}\n\
            - {address: 192.0.2.3, asn: 65000, nodeSelector: {rack: b, tier: edge}}\n",
        );
        let cases: &[(&str, Pairs, &[&str])] = &[
            ("no labels", &[], &["192.0.2.1"]),
            ("rack a", &[("rack", "a")], &["192.0.2.1", "192.0.2.2"]),
            ("rack b without the tier", &[("rack", "b")], &["192.0.2.1"]),
            ("rack b on the edge", &[("rack", "b"), ("tier", "edge")], &["192.0.2.1", "192.0.2.3"]),
            ("values are compared whole", &[("rack", "ab"), ("tier", "edge")], &["192.0.2.1"]),
            (
                "other labels do not matter",
                &[("rack", "a"), ("zone", "x")],
                &["192.0.2.1", "192.0.2.2"],
            ),
        ];
        for (case, labels, want) in cases {
            let node = NodeFacts { labels: Some(map(labels)), ..Default::default() };
            let (on_node, notes) = config.clone().on_node(&node).unwrap();
            assert_eq!(addresses(&on_node), *want, "{case}");
            assert!(notes.is_empty(), "{case}: {notes:?}");
        }
        // Without labels an agent cannot tell: it says which peer needs them.
        let err = config.clone().on_node(&NodeFacts::default()).unwrap_err().to_string();
        assert!(
            err.contains("peers[1] (192.0.2.2)") && err.contains("--node-labels-file"),
            "{err}"
        );
        let plain = parse("asn: 65001\npeers:\n  - address: 192.0.2.1\n    asn: 65000\n");
        assert_eq!(plain.clone().on_node(&NodeFacts::default()).unwrap(), (plain, vec![]));
    }

    /// A peer with `addressFrom` is dialled at each address its node's
    /// annotation gives; a node without a usable one does not run it, and
    /// the note says why.
    #[test]
    fn a_node_dials_a_peer_at_the_addresses_its_annotation_gives() {
        let config = parse(
            "asn: 65001\npeers:\n\
            - {address: 192.0.2.1, asn: 65000}\n\
            - {addressFrom: {nodeAnnotation: example.com/tor}, asn: 65000, holdTime: 9}\n",
        );
        const TOR: &str = "example.com/tor";
        let cases: &[(&str, Pairs, &[&str], &str)] = &[
            ("its own router", &[(TOR, "10.1.0.1")], &["192.0.2.1", "10.1.0.1"], ""),
            (
                "two routers",
                &[(TOR, " 10.1.0.1, 2001:db8::1 ")],
                &["192.0.2.1", "10.1.0.1", "2001:db8::1"],
                "",
            ),
            ("a router named twice", &[(TOR, "10.1.0.1,10.1.0.1")], &["192.0.2.1", "10.1.0.1"], ""),
            (
                "no annotation",
                &[("example.com/other", "10.1.0.1")],
                &["192.0.2.1"],
                "peers[1] is not run on this node: the node has no annotation example.com/tor",
            ),
            ("an empty one", &[(TOR, " ")], &["192.0.2.1"], "annotation example.com/tor is empty"),
            (
                "not an address",
                &[(TOR, "10.1.0.1,tor-7")],
                &["192.0.2.1"],
                "\"tor-7\" is not an IP address",
            ),
            ("no address at all", &[(TOR, "0.0.0.0")], &["192.0.2.1"], "0.0.0.0 cannot be dialled"),
            (
                "a configured peer's",
                &[(TOR, "192.0.2.1")],
                &["192.0.2.1"],
                "peers[1] is not run at 192.0.2.1 on this node: peers[0] is there",
            ),
        ];
        for (case, annotations, want, note) in cases {
            let node = NodeFacts { annotations: Some(map(annotations)), ..Default::default() };
            let (on_node, notes) = config.clone().on_node(&node).unwrap();
            assert_eq!(addresses(&on_node), *want, "{case}");
            match notes.as_slice() {
                [] => assert!(note.is_empty(), "{case}: no note"),
                [said] => assert!(!note.is_empty() && said.contains(note), "{case}: {said}"),
                more => panic!("{case}: {more:?}"),
            }
            // Each keeps the rest of its settings.
            assert!(on_node.peers.iter().skip(1).all(|p| p.hold_time == 9), "{case}");
        }
        let err = config.clone().on_node(&NodeFacts::default()).unwrap_err().to_string();
        assert_eq!(
            err,
            "peers[1] (the address in node annotation example.com/tor) takes its address from a \
             node annotation, but the agent does not know its node's annotations: pass \
             --node-annotations-file"
        );
    }

    /// A peer's source address must be of its address's family, whichever
    /// address the node's annotation gives.
    #[test]
    fn an_annotated_address_of_the_other_family_than_the_source_is_not_dialled() {
        let config = parse(
            "asn: 65001\npeers:\n\
            - {addressFrom: {nodeAnnotation: tor}, asn: 65000, localAddress: 10.1.0.2}\n",
        );
        let node = NodeFacts {
            annotations: Some(map(&[("tor", "10.1.0.1,2001:db8::1")])),
            ..Default::default()
        };
        let (on_node, notes) = config.on_node(&node).unwrap();
        assert_eq!(addresses(&on_node), ["10.1.0.1"]);
        assert_eq!(
            notes,
            [
                "peers[0] is not run at 2001:db8::1 on this node: its localAddress 10.1.0.2 is of the other family"
            ]
        );
    }

    /// A peer with `addressFrom.defaultGateway` is dialled at the next hops
    /// of the node's default route of its family that carries traffic
    /// (the lowest metric); a node without a usable one does not run it.
    #[test]
    fn a_node_dials_its_default_gateway() {
        let config = parse(
            "asn: 65001\npeers:\n\
            - {address: 192.0.2.1, asn: 65000}\n\
            - {addressFrom: {defaultGateway: {family: ipv4}}, asn: 65000, holdTime: 9}\n\
            - {addressFrom: {defaultGateway: {family: ipv6}}, asn: 65000}\n",
        );
        let route = |family, metric, gateways: &[&str]| DefaultRoute {
            family,
            metric,
            gateways: gateways.iter().map(|g| g.parse().unwrap()).collect(),
        };
        use IpFamily::{Ipv4, Ipv6};
        type Case<'a> = (&'a str, Vec<DefaultRoute>, &'a [&'a str], &'a [&'a str]);
        let cases: Vec<Case> = vec![
            (
                "one of each",
                vec![route(Ipv4, 0, &["10.1.0.1"]), route(Ipv6, 1024, &["2001:db8::1"])],
                &["192.0.2.1", "10.1.0.1", "2001:db8::1"],
                &[],
            ),
            (
                "multipath: both leaves",
                vec![route(Ipv4, 0, &["10.1.0.1", "10.2.0.1"]), route(Ipv6, 0, &["2001:db8::1"])],
                &["192.0.2.1", "10.1.0.1", "10.2.0.1", "2001:db8::1"],
                &[],
            ),
            (
                // IPv6 lists the paths of one multipath route as routes of
                // their own.
                "a lower metric wins, equal ones all count",
                vec![
                    route(Ipv4, 600, &["10.9.0.1"]),
                    route(Ipv4, 100, &["10.1.0.1"]),
                    route(Ipv6, 0, &["2001:db8::1"]),
                    route(Ipv6, 0, &["2001:db8::2", "2001:db8::1"]),
                ],
                &["192.0.2.1", "10.1.0.1", "2001:db8::1", "2001:db8::2"],
                &[],
            ),
            (
                "no routes",
                vec![],
                &["192.0.2.1"],
                &[
                    "peers[1] is not run on this node: the node has no IPv4 default route",
                    "peers[2] is not run on this node: the node has no IPv6 default route",
                ],
            ),
            (
                "through a device, and link-local",
                vec![route(Ipv4, 0, &[]), route(Ipv6, 0, &["fe80::1"])],
                &["192.0.2.1"],
                &[
                    "the node's IPv4 default route has no next hop address",
                    "next hop fe80::1 is link-local",
                ],
            ),
            (
                "a configured peer's",
                vec![route(Ipv4, 0, &["192.0.2.1"])],
                &["192.0.2.1"],
                &[
                    "peers[2] is not run on this node: the node has no IPv6 default route",
                    "peers[1] is not run at 192.0.2.1 on this node: peers[0] is there",
                ],
            ),
        ];
        for (case, routes, want, said) in cases {
            let node = NodeFacts { default_routes: Some(routes), ..Default::default() };
            let (on_node, notes) = config.clone().on_node(&node).unwrap();
            assert_eq!(addresses(&on_node), want, "{case}");
            assert_eq!(notes.len(), said.len(), "{case}: {notes:?}");
            for (note, said) in notes.iter().zip(said) {
                assert!(note.contains(said), "{case}: {note:?} does not say {said:?}");
            }
        }
        let err = config.on_node(&NodeFacts::default()).unwrap_err().to_string();
        assert_eq!(
            err,
            "the node's routes, which peers[1] (the node's ipv4 default gateway) takes its \
             address from: not read"
        );
    }

    #[test]
    fn node_files_are_a_json_object_and_an_empty_file_is_none() {
        let path = Path::new("/etc/nonstop/node/labels");
        assert_eq!(parse_node_map("", path).unwrap(), NodeLabels::new());
        assert_eq!(parse_node_map(" \n", path).unwrap(), NodeLabels::new());
        let labels = parse_node_map(r#"{"rack":"a","tier":""}"#, path).unwrap();
        assert_eq!(labels.get("rack").map(String::as_str), Some("a"));
        for bad in ["rack=a", "[\"rack\"]", r#"{"rack": 1}"#] {
            let err = parse_node_map(bad, path).unwrap_err().to_string();
            assert!(
                err.starts_with("node file /etc/nonstop/node/labels: not a JSON object"),
                "{bad}: {err}"
            );
        }
    }
}
