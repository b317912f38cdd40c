//! The lab's network: a namespace per node and one router in front of them.
//!
//! ```text
//!   root ns: bridge nslab0 10.98.0.1/16 (the API server)
//!      │ veth nsl-n<i> ── eth0 10.98.1.<i>/16      node-<i>  (InternalIP)
//!   lab-router ns                                     │
//!      up<i> 10.99.0.1 ◀── point to point ──▶ uplink 10.99.<i>.2
//! ```
//!
//! Every node reaches the router at the same address, 10.99.0.1 (AS 65000),
//! from its own 10.99.<i>.2, so one gateway spec (`peers: [{address:
//! 10.99.0.1, asn: 65000}]`, our AS 65001) fits every node. The router
//! forwards between uplinks too, so nodes reach each other's 10.99.<i>.2.
//! Each uplink has a second address, 10.99.<i>.3, whose session the router
//! (gobgpd) secures with TCP MD5 and GTSM.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::process::run;
use crate::{LabError, Result, io};

pub const ROUTER_NS: &str = "lab-router";
pub const ROUTER_ADDRESS: &str = "10.99.0.1";
pub const ROUTER_AS: u32 = 65000;
/// The AS the lab router expects the nodes' speakers to have.
pub const NODE_AS: u32 = 65001;

/// The BGP daemons the lab can put in front of the nodes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RouterKind {
    Gobgpd,
    Bird,
    Frr,
}

impl RouterKind {
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::Gobgpd => "gobgpd",
            RouterKind::Bird => "bird",
            RouterKind::Frr => "frr",
        }
    }
}

pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// The node's address on the lab bridge (its InternalIP).
pub fn node_ip(i: usize) -> String {
    format!("10.98.1.{i}")
}

/// The node's address facing the router (where BGP comes from).
pub fn uplink_ip(i: usize) -> String {
    format!("10.99.{i}.2")
}

/// The node's IPv6 address on its uplink, where a router at an IPv6
/// address is reached from ([`crate::rack`] adds it).
pub fn uplink_ipv6(i: usize) -> String {
    format!("fd99::{i}:2")
}

/// A second address on the node's uplink, for a session the router secures
/// (gobgpd: TCP MD5 with [`SECURED_PASSWORD`] and GTSM); a gateway uses it
/// with `localAddress`.
pub fn secured_ip(i: usize) -> String {
    format!("10.99.{i}.3")
}

/// The TCP MD5 password of the router's secured sessions.
pub const SECURED_PASSWORD: &str = "nonstop-lab-md5";

fn sh(args: &[&str]) -> Result<String> {
    run(&args.join(" "), Command::new(args[0]).args(&args[1..]))
}

fn exists_ns(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// The router namespace; idempotent.
pub fn router_ns() -> Result<()> {
    if exists_ns(ROUTER_NS) {
        return Ok(());
    }
    sh(&["ip", "netns", "add", ROUTER_NS])?;
    in_ns(ROUTER_NS, &["ip", "link", "set", "lo", "up"])?;
    in_ns(ROUTER_NS, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    Ok(())
}

/// Node `i`'s namespace, its link to the bridge and its link to the router;
/// idempotent.
pub fn node(i: usize, bridge: &str) -> Result<()> {
    if !(1..=250).contains(&i) {
        return Err(LabError::Failed(format!("node numbers go from 1 to 250, not {i}")));
    }
    let ns = node_name(i);
    if exists_ns(&ns) {
        return Ok(());
    }
    sh(&["ip", "netns", "add", &ns])?;
    in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
    // To the bridge: the API server and the other nodes' InternalIPs.
    let host_end = format!("nsl-n{i}");
    sh(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    sh(&["ip", "link", "set", &host_end, "master", bridge, "up"])?;
    in_ns(&ns, &["ip", "addr", "add", &format!("{}/16", node_ip(i)), "dev", "eth0"])?;
    in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
    // To the router: point to point, the router at the same address for all.
    let router_end = format!("up{i}");
    sh(&[
        "ip",
        "link",
        "add",
        &router_end,
        "netns",
        ROUTER_NS,
        "type",
        "veth",
        "peer",
        "name",
        "uplink",
        "netns",
        &ns,
    ])?;
    in_ns(&ns, &["ip", "addr", "add", &uplink_ip(i), "peer", ROUTER_ADDRESS, "dev", "uplink"])?;
    in_ns(&ns, &["ip", "link", "set", "uplink", "up"])?;
    in_ns(&ns, &["ip", "route", "add", "10.99.0.0/16", "via", ROUTER_ADDRESS])?;
    in_ns(
        ROUTER_NS,
        &["ip", "addr", "add", ROUTER_ADDRESS, "peer", &uplink_ip(i), "dev", &router_end],
    )?;
    in_ns(ROUTER_NS, &["ip", "link", "set", &router_end, "up"])?;
    let secured = secured_ip(i);
    in_ns(&ns, &["ip", "addr", "add", &format!("{secured}/32"), "dev", "uplink"])?;
    in_ns(ROUTER_NS, &["ip", "route", "add", &format!("{secured}/32"), "dev", &router_end])?;
    Ok(())
}

/// Routes to each node's pods (10.244.<i>.0/24 via the node's InternalIP)
/// from the host (the API server answers them) and from every other node
/// (the operator's pods reach the agents' admin ports); idempotent.
pub fn pod_routes(nodes: usize) -> Result<()> {
    for i in 1..=nodes {
        let (cidr, via) = (crate::node::pod_cidr(i), node_ip(i));
        sh(&["ip", "route", "replace", &cidr, "via", &via])?;
        for j in (1..=nodes).filter(|j| *j != i) {
            in_ns(&node_name(j), &["ip", "route", "replace", &cidr, "via", &via])?;
        }
    }
    Ok(())
}

/// Every lab namespace (nodes and router) that exists.
pub fn namespaces() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/var/run/netns") else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n == ROUTER_NS || n.strip_prefix("node-").is_some_and(|i| i.parse::<u32>().is_ok())
        })
        .collect();
    names.sort();
    names
}

/// How many nodes exist.
pub fn nodes() -> usize {
    namespaces().iter().filter(|n| n.starts_with("node-")).count()
}

/// Removes every lab namespace and the veths with them.
pub fn remove() {
    for ns in namespaces() {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
}

/// The router daemon's config for `nodes` nodes: passive towards every
/// node's uplink address, Graceful Restart and LLGR helper, all routes
/// accepted and none sent.
pub fn router_config(kind: RouterKind, nodes: usize, dir: &Path) -> String {
    let peers: Vec<String> = (1..=nodes).map(uplink_ip).collect();
    match kind {
        RouterKind::Gobgpd => {
            let mut c = format!(
                "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{ROUTER_ADDRESS}\"\n  port = 179\n  local-address-list = [\"{ROUTER_ADDRESS}\"]\n"
            );
            for p in peers {
                c += &gobgpd_neighbor(&p, NODE_AS, ROUTER_ADDRESS);
            }
            // The secured sessions: TCP MD5 and GTSM (only TTL 255 accepted).
            for i in 1..=nodes {
                c += &format!(
                    "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {NODE_AS}\n    \
                     auth-password = \"{SECURED_PASSWORD}\"\n  \
                     [neighbors.transport.config]\n    passive-mode = true\n    local-address = \"{ROUTER_ADDRESS}\"\n  \
                     [neighbors.timers.config]\n    connect-retry = 5\n    hold-time = 9\n    keepalive-interval = 3\n  \
                     [neighbors.ttl-security.config]\n    enabled = true\n    ttl-min = 255\n  \
                     [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n    helper-only = true\n  \
                     [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n    \
                     [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n",
                    secured_ip(i)
                );
            }
            c
        }
        RouterKind::Bird => {
            let mut c = format!(
                "router id {ROUTER_ADDRESS};\nlog \"{}\" all;\nprotocol device {{}}\n",
                dir.join("router-events.log").display()
            );
            for (i, p) in peers.iter().enumerate() {
                c += &format!(
                    "protocol bgp node{} {{ local {ROUTER_ADDRESS} as {ROUTER_AS}; neighbor {p} as {NODE_AS}; passive on; \
                     hold time 9; keepalive time 3; graceful restart on; long lived graceful restart on; \
                     debug {{ states, routes }}; ipv4 {{ import all; export none; }}; }}\n",
                    i + 1
                );
            }
            c
        }
        RouterKind::Frr => {
            let mut c = format!(
                "frr defaults traditional\nhostname lab-router\nlog file {}\nlog timestamp precision 3\n\
                 debug bgp updates in\n!\nrouter bgp {ROUTER_AS}\n bgp router-id {ROUTER_ADDRESS}\n \
                 no bgp ebgp-requires-policy\n bgp log-neighbor-changes\n bgp graceful-restart\n \
                 bgp long-lived-graceful-restart stale-time 3600\n",
                dir.join("router-events.log").display()
            );
            for p in &peers {
                c += &format!(
                    " neighbor {p} remote-as {NODE_AS}\n neighbor {p} passive\n neighbor {p} timers 3 9\n \
                     neighbor {p} update-source {ROUTER_ADDRESS}\n"
                );
            }
            c += " address-family ipv4 unicast\n";
            for p in &peers {
                c += &format!("  neighbor {p} activate\n");
            }
            c += " exit-address-family\n!\n";
            c
        }
    }
}

/// A gobgpd `[[neighbors]]` stanza for a node's session: passive, short
/// timers, Graceful Restart and LLGR helper, unicast of the peer address's
/// family.
pub fn gobgpd_neighbor(peer: &str, peer_as: u32, local: &str) -> String {
    let family = if peer.contains(':') { "ipv6-unicast" } else { "ipv4-unicast" };
    format!(
        "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{peer}\"\n    peer-as = {peer_as}\n  \
         [neighbors.transport.config]\n    passive-mode = true\n    local-address = \"{local}\"\n  \
         [neighbors.timers.config]\n    connect-retry = 5\n    hold-time = 9\n    keepalive-interval = 3\n  \
         [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n    helper-only = true\n    \
         notification-enabled = true\n    long-lived-enabled = true\n  \
         [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n    \
         [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n    \
         [neighbors.afi-safis.long-lived-graceful-restart.config]\n      enabled = true\n      restart-time = 3600\n"
    )
}

/// Writes a file, saying which one failed.
pub fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}
