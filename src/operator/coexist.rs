//! Two gateways on one node: which of them may start an agent there when
//! both would bind the same port. Pure; [`super::observe`] asks it about
//! each node the gateway would start an agent on.
//!
//! ```text
//!   other gateway selects the node ──no──▶ no conflict
//!     │ yes
//!   a port both bind there (BGP listen, adminPort) ──no──▶ no conflict
//!     │ yes
//!   the other holds the node: it has an agent there and we have none,
//!   or it is older (creation time, then namespace/name)  ──▶ we yield
//! ```
//!
//! Yielding only ever means "start no agent here": an agent already
//! running is never taken down for it, so no route moves. The gateway that
//! yields reports it in its Ready condition (`ListenerConflict`) instead
//! of crash-looping on a port it cannot bind.

use std::net::{IpAddr, SocketAddr};

use kube::ResourceExt;

use super::nodes::{Fit, fit};
use super::plan::NodeView;
use crate::api::{BgpGateway, BgpGatewaySpec};

/// Another gateway as the conflict check sees it on one node.
#[derive(Debug, Clone, Copy)]
pub struct Neighbour<'a> {
    pub gateway: &'a BgpGateway,
    /// It has a live agent pod on the node.
    pub present: bool,
}

/// Why `gw` must not start an agent on `node`, naming the gateway that
/// keeps the node and the port both want; None when it may.
pub fn yields(
    gw: &BgpGateway,
    node: &NodeView,
    others: &[Neighbour<'_>],
    present: bool,
) -> Option<String> {
    others.iter().find_map(|other| {
        let o = other.gateway;
        if same(o, gw) || !matches!(fit(o, node), Fit::Serve | Fit::Cordoned) {
            return None;
        }
        let port = clash(&gw.spec, &o.spec)?;
        let theirs = (other.present && !present) || (other.present == present && older(o, gw));
        theirs.then(|| {
            format!(
                "{}: gateway {}/{} binds {port} there too",
                node.name,
                o.namespace().unwrap_or_default(),
                o.name_any()
            )
        })
    })
}

fn same(a: &BgpGateway, b: &BgpGateway) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

/// Created first; the same second, the first by namespace/name.
fn older(a: &BgpGateway, b: &BgpGateway) -> bool {
    let key = |g: &BgpGateway| {
        (g.metadata.creation_timestamp.as_ref().map(|t| t.0), g.namespace(), g.name_any())
    };
    key(a) < key(b)
}

/// The sockets a gateway's agent binds on its node: BGP, then admin.
fn sockets(spec: &BgpGatewaySpec) -> Vec<(&'static str, SocketAddr)> {
    let admin = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), spec.admin_port);
    let mut bound = vec![("adminPort", admin)];
    if let Some(listen) = spec.listen.socket_addr() {
        bound.insert(0, ("spec.listen", listen));
    }
    bound
}

/// A port both specs' agents would bind on one node, described; None
/// when they can run side by side.
pub fn clash(a: &BgpGatewaySpec, b: &BgpGatewaySpec) -> Option<String> {
    for (what_a, x) in sockets(a) {
        for (what_b, y) in sockets(b) {
            // The admin port listens on every address (or on the node's
            // own, which "every" covers): any other socket on its port clashes.
            let overlap = x.port() == y.port()
                && (what_a == "adminPort" || what_b == "adminPort" || overlaps(x.ip(), y.ip()));
            if overlap {
                return Some(if what_a == what_b {
                    format!("port {} ({what_a})", x.port())
                } else {
                    format!("port {} (its {what_b}, this gateway's {what_a})", x.port())
                });
            }
        }
    }
    None
}

/// Two addresses one port cannot be bound on at once: the same address,
/// or a wildcard that covers the other (`::` is dual-stack here, as the
/// agent binds it).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let covers = |w: IpAddr, o: IpAddr| w.is_unspecified() && (w.is_ipv6() || o.is_ipv4());
    a == b || covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Listen;

    fn gateway(
        name: &str,
        created: &str,
        selector: &str,
        listen: Listen,
        admin: u16,
    ) -> BgpGateway {
        let yaml = format!(
            "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata:\n  name: {name}\n  namespace: net\n  \
             creationTimestamp: \"{created}\"\nspec:\n  nodeSelector: {{{selector}}}\n  asn: 65001\n  \
             peers: [{{address: 192.0.2.1, asn: 65000}}]\n"
        );
        let mut gw: BgpGateway = serde_yaml_ng::from_str(&yaml).unwrap();
        gw.spec.listen = listen;
        gw.spec.admin_port = admin;
        gw
    }

    fn listen(address: &str, port: u16) -> Listen {
        Listen { enabled: true, address: address.parse().unwrap(), port }
    }

    fn off() -> Listen {
        Listen { enabled: false, ..Listen::default() }
    }

    fn node(rack: &str) -> NodeView {
        NodeView {
            name: "node-3".into(),
            labels: [("rack".to_string(), rack.to_string())].into(),
            ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn ports_clash_where_both_agents_would_bind_them() {
        // (name, one gateway's listen and adminPort, the other's, the clash)
        type Case = (&'static str, Listen, u16, Listen, u16, Option<&'static str>);
        let cases: &[Case] = &[
            (
                "both default",
                Listen::default(),
                9179,
                Listen::default(),
                9180,
                Some("port 179 (spec.listen)"),
            ),
            (
                "IPv4 wildcard and dual-stack wildcard",
                listen("0.0.0.0", 179),
                9179,
                listen("::", 179),
                9180,
                Some("port 179"),
            ),
            (
                "IPv4 wildcard and one IPv4 address",
                listen("0.0.0.0", 179),
                9179,
                listen("10.0.0.1", 179),
                9180,
                Some("port 179"),
            ),
            (
                "IPv4 wildcard and one IPv6 address",
                listen("0.0.0.0", 179),
                9179,
                listen("fd00::1", 179),
                9180,
                None,
            ),
            ("two addresses", listen("10.0.0.1", 179), 9179, listen("10.0.0.2", 179), 9180, None),
            ("another port", Listen::default(), 9179, listen("0.0.0.0", 1179), 9180, None),
            ("no listener", Listen::default(), 9179, off(), 9180, None),
            (
                "neither listens, same admin port",
                off(),
                9179,
                off(),
                9179,
                Some("port 9179 (adminPort)"),
            ),
            (
                "BGP on the other's admin port",
                listen("10.0.0.1", 9180),
                9179,
                Listen::default(),
                9180,
                Some("port 9180 (its adminPort, this gateway's spec.listen)"),
            ),
        ];
        for (name, la, aa, lb, ab, want) in cases {
            let a = gateway("a", "2026-01-01T00:00:00Z", "", la.clone(), *aa);
            let b = gateway("b", "2026-01-01T00:00:00Z", "", lb.clone(), *ab);
            let got = clash(&a.spec, &b.spec);
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some(w) => {
                    assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{name}: {got:?}")
                }
            }
            assert_eq!(got.is_some(), clash(&b.spec, &a.spec).is_some(), "{name}: symmetric");
        }
    }

    #[test]
    fn the_gateway_that_holds_the_node_keeps_it() {
        let old = gateway("old", "2026-01-01T00:00:00Z", "", Listen::default(), 9179);
        let new = gateway("new", "2026-02-01T00:00:00Z", "", Listen::default(), 9180);
        let moved = gateway("moved", "2026-02-01T00:00:00Z", "", listen("0.0.0.0", 1179), 9180);
        let elsewhere =
            gateway("elsewhere", "2025-01-01T00:00:00Z", "rack: b", Listen::default(), 9179);
        let n = node("a");
        // (who asks, present, the other, other present) → yields?
        let cases: &[(&str, &BgpGateway, bool, &BgpGateway, bool, bool)] = &[
            ("the newer, neither there yet", &new, false, &old, false, true),
            ("the older, neither there yet", &old, false, &new, false, false),
            ("the newer, the older there", &new, false, &old, true, true),
            ("the older, the newer already there", &old, false, &new, true, true),
            ("the newer, already there", &new, true, &old, false, false),
            ("both there: the newer", &new, true, &old, true, true),
            ("ports apart", &moved, false, &old, true, false),
            ("the other does not select the node", &new, false, &elsewhere, true, false),
            ("itself", &old, false, &old, true, false),
        ];
        for (name, gw, present, other, other_present, want) in cases {
            let others = [Neighbour { gateway: other, present: *other_present }];
            let got = yields(gw, &n, &others, *present);
            assert_eq!(got.is_some(), *want, "{name}: {got:?}");
            if let Some(why) = got {
                assert!(why.starts_with("node-3: gateway net/"), "{name}: {why}");
                assert!(why.contains("port 179"), "{name}: {why}");
            }
        }
    }
}
