//! Topologies beyond one router for every node, in the lab, watched at the
//! routers and on the wire.
//!
//! A rack-style topology: two routers, each peering only with its own
//! rack's nodes, and one gateway spec for all of them — each peer names its
//! rack with `nodeSelector`.
//!
//! ```text
//!   lab router 10.99.0.1 AS 65000 ◀── node-1, node-2   (rack a)
//!   rack b's   10.99.0.2 AS 65002 ◀── node-3           (rack b)
//! ```
//!
//! Each rack's router has the prefixes from its own nodes and from no
//! other (one node has its own router ID, from its annotation); an image bump withdraws nothing and shows neither router a
//! NOTIFICATION, FIN or RST; a node relabelled into the other rack moves
//! its session there with the same pod, and the rack it left is drained
//! and let go, not left holding stale routes.
//!
//! A router per node without a peer per rack: one peer whose address each
//! node takes from its own annotation (`addressFrom`); a node re-annotated
//! moves its session the same way.
//!
//! A router per node found by the node itself: one peer at each node's
//! default gateway (`addressFrom.defaultGateway`); a node whose default
//! route changes moves its session the same way.
//!
//! An IPv6 gateway: sessions over IPv6 only (the router at fd99::1, each
//! node at fd99::i:2), IPv6 prefixes, a dual-stack listener (`::`); it
//! converges and upgrades hitlessly just the same.

mod support;

use std::time::{Duration, Instant};

use nonstop_lab::capture::Capture;
use nonstop_lab::rack::Rack;
use nonstop_lab::router::{Router, Tally};
use nonstop_lab::testing::{Lab, Watch, eventually};
use support::{NODES, PREFIXES, Setup, uplink, uplinks};

const RACK_LABEL: &str = "nonstop.dev/e2e-rack";
const ROUTER_ID: &str = "nonstop.dev/router-id";
/// The node annotation that names each node's own router.
const TOR: &str = "nonstop.dev/e2e-tor";

/// Rack b's router; it also knows node-2, which starts in rack a.
fn rack_b() -> Rack {
    Rack {
        name: "rack-b".into(),
        address: "10.99.0.2".into(),
        asn: 65002,
        router_id: "10.99.0.2".into(),
        api: 50052,
        nodes: vec![2, 3],
    }
}

/// A test's own router, and the rack labels: when the test ends, however
/// it ends, its gateway goes first and the router waits (a while) until
/// every session with it has ended, so the next test finds the nodes'
/// ports free; then the router stops and the labels come off.
struct OwnRouter {
    lab: Lab,
    namespace: String,
    rack: Rack,
    router: Router,
}

impl Drop for OwnRouter {
    fn drop(&mut self) {
        let _ =
            self.lab.kubectl(&["-n", &self.namespace, "delete", "bgpgw", "--all", "--wait=false"]);
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline
            && self.router.sessions().is_ok_and(|all| all.iter().any(|s| s.established))
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.rack.stop(self.lab.dir());
        for node in NODES {
            let _ = self.lab.kubectl(&["label", "node", node, &format!("{RACK_LABEL}-")]);
            let _ = self.lab.kubectl(&["annotate", "node", node, &format!("{ROUTER_ID}-")]);
            let _ = self.lab.kubectl(&["annotate", "node", node, &format!("{TOR}-")]);
        }
    }
}

fn own_router(s: &Setup, rack: Rack) -> (Router, OwnRouter) {
    let router = rack.start(s.lab.dir()).unwrap();
    let guard = OwnRouter {
        lab: s.lab.clone(),
        namespace: s.ns.name.clone(),
        rack,
        router: router.clone(),
    };
    (router, guard)
}

/// The test's gateway at `image`: `peering` (its listen and peers, YAML
/// lines at the spec's indentation) and two prefixes, short timers.
fn gateway(s: &Setup, image: &str, peering: &str, prefixes: [&str; 2]) -> String {
    format!(
        r#"apiVersion: nonstop.dev/v1alpha1
kind: BgpGateway
metadata: {{name: edge}}
spec:
  image: {image}
  nodeSelector: {{nonstop.dev/e2e: {ns}}}
  asn: 65001
{peering}
  announce: [{{prefix: "{p0}"}}, {{prefix: "{p1}"}}]
  upgrade: {{handoffTimeoutSeconds: 30}}
  shutdown: {{drainSeconds: 2}}
"#,
        ns = s.ns.name,
        p0 = prefixes[0],
        p1 = prefixes[1],
    )
}

/// Each rack's top-of-rack router, for that rack's nodes only.
fn racks() -> String {
    let peer = |address: &str, asn: u32, rack: &str| {
        format!(
            "  - address: {address}\n    asn: {asn}\n    nodeSelector: {{{RACK_LABEL}: {rack}}}\n    \
             holdTime: 9\n    connectRetryTime: 1\n    families: [ipv4-unicast]\n"
        )
    };
    format!("  peers:\n{}{}", peer("10.99.0.1", 65000, "a"), peer("10.99.0.2", 65002, "b"))
}

/// One router at an IPv6 address; the listener takes both families.
const IPV6_PEERING: &str = "  listen: {address: \"::\"}\n  peers:\n  - address: \"fd99::1\"\n    \
    asn: 65003\n    holdTime: 9\n    connectRetryTime: 1\n    families: [ipv6-unicast]";

fn label_rack(lab: &Lab, node: &str, rack: &str) {
    lab.kubectl(&["label", "node", node, &format!("{RACK_LABEL}={rack}"), "--overwrite"]).unwrap();
}

/// Waits until `router` has every prefix via exactly `nodes`.
fn wait_routes(router: &Router, what: &str, nodes: &[&str], limit: Duration) {
    let want: Vec<String> = nodes.iter().map(|n| uplink(n)).collect();
    eventually(limit, &format!("{what}'s routes via {want:?}"), || {
        let routes = router.routes()?;
        let ok = PREFIXES.iter().all(|p| routes.get(*p).is_some_and(|hops| *hops == want));
        if ok { Ok(()) } else { Err(format!("{routes:?}")) }
    });
}

fn established(router: &Router, node: &str) -> bool {
    let hop = uplink(node);
    router.sessions().unwrap().iter().any(|s| s.neighbor == hop && s.established)
}

/// An image bump that rack a's router (the lab router, for `hops_a`) and
/// rack b's (for `hops_b`) see nothing of: no route missing at any poll,
/// nothing in their events, and on the wire no NOTIFICATION, FIN, RST or
/// withdrawal, with BGP heard from every node.
fn bump_unseen(s: &Setup, tor_b: &Router, hops_a: &[String], hops_b: &[String], name: &str) {
    let before_a = Tally::of(&s.router, hops_a);
    let before_b = Tally::of(tor_b, hops_b);
    let watch_a = Watch::start(s.router.clone(), &PREFIXES, hops_a, hops_a.len());
    let watch_b = Watch::start(tor_b.clone(), &PREFIXES, hops_b, hops_b.len());
    let capture = Capture::start(s.lab.dir(), name).unwrap().hearing(hops_a).hearing(hops_b);
    s.set_image("nonstop-agent:v2");
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    let wire = capture.finish().on(&uplinks()).unwrap();
    assert!(wire.is_calm() && wire.bgp_messages > 0, "on the wire during the rollout: {wire:?}");
    let (misses_a, misses_b) = (watch_a.finish(), watch_b.finish());
    assert!(misses_a.is_empty() && misses_b.is_empty(), "missing: {misses_a:?} {misses_b:?}");
    let seen_a = Tally::of(&s.router, hops_a).since(&before_a);
    let seen_b = Tally::of(tor_b, hops_b).since(&before_b);
    assert!(seen_a.is_empty() && seen_b.is_empty(), "the routers saw: {seen_a:?} {seen_b:?}");
}

#[test]
fn each_rack_peers_with_its_own_router_upgrades_hitlessly_and_follows_a_relabel() {
    let s = Setup::new("e2e-racks");
    let (tor_b, _guard) = own_router(&s, rack_b());
    label_rack(&s.lab, "node-1", "a");
    label_rack(&s.lab, "node-2", "a");
    label_rack(&s.lab, "node-3", "b");
    // node-3 has a BGP identifier of its own (say, its loopback's).
    s.lab.kubectl(&["annotate", "node", "node-3", &format!("{ROUTER_ID}=10.99.33.3")]).unwrap();

    s.ns.apply(&gateway(&s, "nonstop-agent:v1", racks().trim_end(), PREFIXES)).unwrap();
    let status = s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    wait_routes(
        &s.router,
        "the lab router (rack a)",
        &["node-1", "node-2"],
        Duration::from_secs(30),
    );
    wait_routes(&tor_b, "rack b's router", &["node-3"], Duration::from_secs(30));
    // One session per node, each with its own rack's router only.
    assert_eq!(status["sessions"], "3/3", "{status}");
    assert!(!established(&s.router, "node-3"), "node-3 peers with rack a's router");
    assert!(!established(&tor_b, "node-2"), "node-2 peers with rack b's router");
    assert_eq!(tor_b.router_id_of(&uplink("node-3")).unwrap(), "10.99.33.3");
    assert_eq!(
        s.router.router_id_of(&uplink("node-1")).unwrap(),
        "10.98.1.1",
        "the node's address"
    );

    // An image bump: neither router sees anything.
    let (rack_a_hops, rack_b_hops) =
        (vec![uplink("node-1"), uplink("node-2")], vec![uplink("node-3")]);
    bump_unseen(&s, &tor_b, &rack_a_hops, &rack_b_hops, "racks");

    // node-2 moves to rack b: its routes move to rack b's router, and it
    // is the same pod (the agent follows its node's labels).
    let pods = s.pod_images().unwrap();
    let moved = Instant::now();
    label_rack(&s.lab, "node-2", "b");
    wait_routes(&tor_b, "rack b's router", &["node-2", "node-3"], Duration::from_secs(90));
    wait_routes(&s.router, "the lab router (rack a)", &["node-1"], Duration::from_secs(30));
    eprintln!("node-2's routes moved racks {:.1} s after its label", moved.elapsed().as_secs_f64());
    assert_eq!(s.pod_images().unwrap(), pods, "no pod was replaced");
    assert!(!established(&s.router, "node-2"), "node-2 still peers with rack a's router");
}

/// One peer for every node, at the address the node's annotation names:
/// a top-of-rack router per node without a peer per rack.
fn own_tor() -> String {
    format!(
        "  peers:\n  - addressFrom: {{nodeAnnotation: {TOR}}}\n    asn: 65000\n    holdTime: 9\n    \
         connectRetryTime: 1\n    families: [ipv4-unicast]"
    )
}

fn annotate_tor(lab: &Lab, node: &str, address: &str) {
    lab.kubectl(&["annotate", "node", node, &format!("{TOR}={address}"), "--overwrite"]).unwrap();
}

/// Each node pointed at its router by `point` (node-1 and node-2 at the
/// lab router, node-3 at rack b's, in the same AS, as leaves of one tier
/// often are), with one peer for all of them (`peering`): each router has
/// only its own nodes' routes, an image bump is unseen, and node-2 pointed
/// at rack b's router moves there with the same pod. Rack b's router, and
/// its guard.
fn each_node_at_its_router(
    s: &Setup,
    peering: &str,
    point: &dyn Fn(&str, &str),
    by: &str,
) -> (Router, OwnRouter) {
    let (tor_b, guard) = own_router(s, Rack { asn: 65000, ..rack_b() });
    point("node-1", "10.99.0.1");
    point("node-2", "10.99.0.1");
    point("node-3", "10.99.0.2");
    s.ns.apply(&gateway(s, "nonstop-agent:v1", peering, PREFIXES)).unwrap();
    let status = s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    wait_routes(&s.router, "the lab router", &["node-1", "node-2"], Duration::from_secs(30));
    wait_routes(&tor_b, "rack b's router", &["node-3"], Duration::from_secs(30));
    assert_eq!(status["sessions"], "3/3", "{status}");
    assert!(!established(&s.router, "node-3"), "node-3 peers with the lab router");

    let (hops_a, hops_b) = (vec![uplink("node-1"), uplink("node-2")], vec![uplink("node-3")]);
    bump_unseen(s, &tor_b, &hops_a, &hops_b, &s.ns.name);

    let pods = s.pod_images().unwrap();
    let moved = Instant::now();
    point("node-2", "10.99.0.2");
    wait_routes(&tor_b, "rack b's router", &["node-2", "node-3"], Duration::from_secs(90));
    wait_routes(&s.router, "the lab router", &["node-1"], Duration::from_secs(30));
    eprintln!("node-2's routes moved routers {:.1} s after {by}", moved.elapsed().as_secs_f64());
    assert_eq!(s.pod_images().unwrap(), pods, "no pod was replaced");
    assert!(!established(&s.router, "node-2"), "node-2 still peers with the lab router");
    (tor_b, guard)
}

/// Each node's router is the one its annotation names (here rack b's
/// shares the lab router's AS, as leaves of one tier often do): one peer
/// in the spec, a session per node with its own router, a hitless image
/// bump, and a node re-annotated moves its session with the same pod;
/// one annotated with no address peers with no router, and is said (an
/// Event, and Ready False until it is fixed).
#[test]
fn each_node_peers_with_the_router_its_annotation_names() {
    let s = Setup::new("e2e-tors");
    let point = |node: &str, router: &str| annotate_tor(&s.lab, node, router);
    let (tor_b, _guard) = each_node_at_its_router(&s, &own_tor(), &point, "its annotation");

    // An annotation that is no address: node-2 peers with no router, its
    // routes leave, and the gateway's Events say why.
    annotate_tor(&s.lab, "node-2", "tor-b");
    wait_routes(&tor_b, "rack b's router", &["node-3"], Duration::from_secs(60));
    eventually(Duration::from_secs(30), "a NoPeerAddress Event naming node-2", || {
        let events = s.events();
        let said = events["items"].as_array().into_iter().flatten().any(|e| {
            e["reason"] == "NoPeerAddress"
                && e["message"].as_str().is_some_and(|m| {
                    m.contains("node node-2") && m.contains("\"tor-b\" is not an IP address")
                })
        });
        if said { Ok(()) } else { Err(events.to_string()) }
    });
    assert!(!established(&s.router, "node-2"), "node-2 peers with the lab router");
    // ...and the gateway is not Ready while the annotation stays so.
    eventually(Duration::from_secs(30), "Ready False naming node-2's annotation", || {
        let ready = s.condition("Ready").unwrap_or_default();
        let message = ready["message"].as_str().unwrap_or_default();
        let said = ready["status"] == "False"
            && message.contains("node-2: peers[0] has no address there")
            && message.contains("\"tor-b\" is not an IP address");
        if said { Ok(()) } else { Err(ready.to_string()) }
    });

    // Fixed: node-2 is back at its router, and the gateway Ready.
    annotate_tor(&s.lab, "node-2", "10.99.0.2");
    wait_routes(&tor_b, "rack b's router", &["node-2", "node-3"], Duration::from_secs(60));
    s.wait_ready_reason("AllNodesReady");
}

/// One peer for every node, at the next hop of the node's default route.
fn at_default_gateway() -> String {
    "  peers:\n  - addressFrom: {defaultGateway: {family: ipv4}}\n    asn: 65000\n    \
     holdTime: 9\n    connectRetryTime: 1\n    families: [ipv4-unicast]"
        .into()
}

/// Points `node`'s default route at `router` through its uplink (`onlink`:
/// rack b's router is reached through the lab router, but it is only the
/// route's next hop the agent reads), or removes it.
fn default_route(node: &str, router: Option<&str>) {
    let args: Vec<&str> = match router {
        Some(via) => vec!["route", "replace", "default", "via", via, "dev", "uplink", "onlink"],
        None => vec!["route", "del", "default"],
    };
    let out = std::process::Command::new("ip").args(["-n", node]).args(&args).output().unwrap();
    assert!(
        out.status.success() || router.is_none(),
        "ip -n {node} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The nodes' default routes, removed when the test ends however it ends
/// (the lab's nodes have none of their own).
struct DefaultRoutes;

impl Drop for DefaultRoutes {
    fn drop(&mut self) {
        for node in NODES {
            default_route(node, None);
        }
    }
}

/// Each node's router is the next hop of its default route, as on a routed
/// fabric: one peer in the spec, a session per node with its own router, a
/// hitless image bump, a node whose default route changes moves its
/// session with the same pod, and one without a default route peers with
/// no router and is not Ready.
#[test]
fn each_node_peers_with_its_default_gateway_and_follows_the_route() {
    let s = Setup::new("e2e-gateways");
    let _routes = DefaultRoutes;
    let point = |node: &str, router: &str| default_route(node, Some(router));
    let (tor_b, _guard) =
        each_node_at_its_router(&s, &at_default_gateway(), &point, "its default route");

    // No default route: node-2 peers with no router, and is not Ready,
    // in its agent's words.
    default_route("node-2", None);
    wait_routes(&tor_b, "rack b's router", &["node-3"], Duration::from_secs(60));
    eventually(Duration::from_secs(30), "Ready False naming node-2 and why", || {
        let ready = s.condition("Ready").unwrap_or_default();
        let message = ready["message"].as_str().unwrap_or_default();
        let said = ready["status"] == "False"
            && message.contains(
                "node-2: 0/1 sessions Established (peers[0] is not run on this node: the node \
                 has no IPv4 default route)",
            );
        if said { Ok(()) } else { Err(ready.to_string()) }
    });
}

const V6_PREFIXES: [&str; 2] = ["2001:db8:100::/48", "2001:db8:200::/48"];

#[test]
fn an_ipv6_gateway_converges_and_upgrades_hitlessly() {
    let s = Setup::new("e2e-ipv6");
    let rack = Rack {
        name: "v6-router".into(),
        address: "fd99::1".into(),
        asn: 65003,
        router_id: "10.99.0.3".into(),
        api: 50053,
        nodes: vec![1, 2, 3],
    };
    let hops: Vec<String> = (1..=3).map(|i| rack.node_address(i)).collect();
    let (router, _guard) = own_router(&s, rack);

    s.ns.apply(&gateway(&s, "nonstop-agent:v1", IPV6_PEERING, V6_PREFIXES)).unwrap();
    let status = s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    assert_eq!(status["sessions"], "3/3", "{status}");
    eventually(Duration::from_secs(30), &format!("the IPv6 routes via {hops:?}"), || {
        let routes = router.routes()?;
        let ok = V6_PREFIXES.iter().all(|p| routes.get(*p).is_some_and(|h| *h == hops));
        if ok { Ok(()) } else { Err(format!("{routes:?}")) }
    });
    // Nothing over IPv4: the lab router hears from none of these nodes.
    for node in NODES {
        assert!(!established(&s.router, node), "{node} peers over IPv4");
    }

    let before = Tally::of(&router, &hops);
    let watch = Watch::start(router.clone(), &V6_PREFIXES, &hops, hops.len());
    let capture = Capture::start(s.lab.dir(), "ipv6").unwrap().hearing(&hops);
    s.set_image("nonstop-agent:v2");
    s.wait_complete("nonstop-agent:v2", Duration::from_secs(120));
    let wire = capture.finish().on(&hops).unwrap();
    assert!(wire.is_calm() && wire.bgp_messages > 0, "on the wire during the rollout: {wire:?}");
    let misses = watch.finish();
    assert!(misses.is_empty(), "IPv6 routes missing during the rollout: {misses:?}");
    let seen = Tally::of(&router, &hops).since(&before);
    assert!(seen.is_empty(), "the IPv6 router saw: {seen:?}");
}
